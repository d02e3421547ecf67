//! The one way Maglev tables reach the rings map (`LB_RINGS`). The map is a `BPF_F_MMAPABLE`
//! array: a table is written by mapping just its window of the map into the agent and storing
//! the entries that differ, a handful of syscalls per table instead of one map update per entry
//! (65,537 for a default table). If the kernel refuses the mapping, the table is written one
//! slot update at a time. A slot holds two entries (`lb_common::RingSlot`: entry `i` is half
//! `i & 1` of slot `i >> 1`), so in the map's memory entries lie 4 bytes apart, and a table that
//! starts or ends at an odd entry shares a slot with its neighbour.

use std::{
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
    sync::atomic::{Ordering, fence},
};

use aya::maps::{Array, Map};
use lb_common::{RingSlot, map_names};

use super::{DataplaneError, map_err};

/// Bytes per entry in the map's memory: two `u32` entries fill each 8-byte array value.
const STRIDE: usize = size_of::<u32>();

/// Writes `table` at entry `offset` of the rings map. `known` gives what the region held when
/// the caller last wrote it (entries equal to it are skipped on the per-slot path; the mapped
/// path compares with the map itself and never asks: the agent holds no copy of its tables).
/// Returns how many entries were written.
pub(super) fn write(
    map: &mut Map,
    offset: u32,
    table: &[u32],
    known: impl FnOnce() -> Option<Vec<u32>>,
) -> Result<u64, DataplaneError> {
    if table.is_empty() {
        return Ok(0);
    }
    if let Map::Array(data) = &*map
        && let Some(window) = Window::map(data.fd().as_fd().as_raw_fd(), offset, table.len())
    {
        return Ok(window.store(table));
    }
    write_each(map, offset, table, known().as_deref())
}

/// Calls `each` with entries `[offset, offset + count)` as the map holds them, read through a
/// mapping of just those pages; false (nothing read) when the map cannot be mapped.
pub(super) fn read(
    fd: BorrowedFd<'_>,
    offset: u32,
    count: usize,
    mut each: impl FnMut(u32),
) -> bool {
    if count == 0 {
        return true;
    }
    let Some(window) = Window::map(fd.as_raw_fd(), offset, count) else { return false };
    for i in 0..count {
        // SAFETY: entry i lies inside the mapping (`map` covered `count` entries), 4-byte
        // aligned. Volatile: the map's memory is shared with the kernel and the writer.
        each(unsafe { window.base.add(window.skip + i * STRIDE).cast::<u32>().read_volatile() });
    }
    true
}

/// One map update per slot holding an entry that differs from `known` (every entry when it is
/// `None`). A slot shared with a neighbouring region is read first and keeps the neighbour's
/// half: the agent is the map's only writer, and a reader sees that half unchanged either way.
fn write_each(
    map: &mut Map,
    offset: u32,
    table: &[u32],
    known: Option<&[u32]>,
) -> Result<u64, DataplaneError> {
    let mut rings: Array<_, RingSlot> =
        Array::try_from(&mut *map).map_err(map_err(map_names::RINGS))?;
    let end = u64::from(offset) + table.len() as u64;
    let mut written = 0;
    let mut slot = offset / 2;
    while u64::from(slot) * 2 < end {
        let first = u64::from(slot) * 2;
        let mut pair = if first < u64::from(offset) || first + 1 >= end {
            rings.get(&slot, 0).map_err(map_err(map_names::RINGS))?
        } else {
            [0; 2]
        };
        let mut changed = false;
        for (half, value) in pair.iter_mut().enumerate() {
            let Some(i) = (first + half as u64).checked_sub(u64::from(offset)) else { continue };
            let Some(&real) = table.get(i as usize) else { continue };
            if known.and_then(|k| k.get(i as usize)) != Some(&real) {
                written += 1;
                changed = true;
            }
            *value = real;
        }
        if changed {
            rings.set(slot, pair, 0).map_err(map_err(map_names::RINGS))?;
        }
        slot += 1;
    }
    Ok(written)
}

/// Part of the rings map mapped into this process (unmapped on drop).
struct Window {
    base: *mut u8,
    len: usize,
    /// Byte offset of the first wanted entry from `base`.
    skip: usize,
}

impl Window {
    /// Maps the pages that hold entries `[offset, offset + count)`; `None` when the map cannot
    /// be mapped (not `BPF_F_MMAPABLE`, or the kernel refuses).
    fn map(fd: i32, offset: u32, count: usize) -> Option<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
        let start = offset as usize * STRIDE;
        let end = start + count * STRIDE;
        let first = start / page * page;
        let len = end.div_ceil(page) * page - first;
        // SAFETY: a fresh shared mapping of the map's memory at a page-aligned offset; the kernel
        // checks the range against the map's size. Nothing else aliases it in this process.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                libc::off_t::try_from(first).ok()?,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        Some(Self { base: base.cast(), len, skip: start - first })
    }

    /// Stores the entries that differ from what the map holds; returns how many.
    fn store(&self, table: &[u32]) -> u64 {
        let mut written = 0;
        for (i, &real) in table.iter().enumerate() {
            // SAFETY: entry i lies inside the mapping (`map` covered `table.len()` entries);
            // entries are 4-byte aligned halves of 8-byte values. Volatile: the XDP program
            // reads the same memory. A 4-byte store leaves the slot's other half untouched.
            unsafe {
                let slot = self.base.add(self.skip + i * STRIDE).cast::<u32>();
                if slot.read_volatile() != real {
                    slot.write_volatile(real);
                    written += 1;
                }
            }
        }
        // The table must be complete before the service value that points at it is replaced.
        fence(Ordering::SeqCst);
        written
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dataplane::xdp::{XdpDataplane, XdpLimits, XdpModeSetting},
        testutil::{private_netns, require_root},
    };

    /// Entries per map in these tests: a few pages (1,024 entries of 4 bytes per 4 KiB page).
    const ENTRIES: u32 = 4 * 1021;

    fn read(map: &Map, offset: u32, len: usize) -> Vec<u32> {
        let rings: Array<_, RingSlot> = Array::try_from(map).expect("array");
        (offset..offset + len as u32)
            .map(|e| rings.get(&(e / 2), 0).expect("read")[(e % 2) as usize])
            .collect()
    }

    fn table(len: usize, salt: u32) -> Vec<u32> {
        (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) ^ salt) % 11 + 1).collect()
    }

    /// The mapped writer leaves exactly what one update per slot leaves, wherever the region
    /// starts and ends (odd or even entry: a slot shared with the neighbour; inside a page,
    /// across pages, at the map's end), writes only the entries that differ, never changes an
    /// entry outside the region, and the loaded rings map is mappable (the fast path is taken).
    #[test]
    fn mapped_writes_equal_per_entry_writes() {
        if !require_root("rings map writes") {
            return;
        }
        private_netns();
        let limits =
            XdpLimits { max_services: 4, max_reals: 16, ring_entries: ENTRIES, flows: 1024 };
        let mut dp = XdpDataplane::load(XdpModeSetting::Generic, limits).expect("load");
        let map = dp.ebpf.map_mut(map_names::RINGS).expect("rings map");
        let Map::Array(data) = &*map else { panic!("LB_RINGS is not an array") };
        assert!(
            Window::map(data.fd().as_fd().as_raw_fd(), 0, 1).is_some(),
            "LB_RINGS cannot be mapped (BPF_F_MMAPABLE missing?)"
        );
        // Every entry non-zero, so a write spilling into a neighbour's half shows.
        let fill = vec![13; ENTRIES as usize];
        write_each(map, 0, &fill, None).expect("fill");
        // (offset, length) in the first half; the per-slot copy goes at `half + offset + shift`
        // (shift 0: the same parity, 1: the other).
        let half = ENTRIES / 2;
        let cases = [
            (0, 251, 0),
            (1, 509, 0),
            (1, 509, 1),
            (2, 1, 1),
            (3, 1, 0),
            (511, 2, 1),
            (1023, 2, 0),
            (1022, 3, 1),
            (300, 1021, 1),
            (half - 510, 509, 0),
        ];
        for (offset, len, shift) in cases {
            let other = half + offset + shift;
            let mut neighbours = vec![offset + len as u32, other - 1, other + len as u32];
            neighbours.extend(offset.checked_sub(1));
            let around =
                |map: &Map| neighbours.iter().map(|&e| read(map, e, 1)[0]).collect::<Vec<_>>();
            let before = around(map);
            let t = table(len, offset);
            let mapped = write(map, offset, &t, || None).expect("mapped write");
            let each = write_each(map, other, &t, None).expect("per-entry write");
            assert_eq!(each, len as u64);
            assert_eq!(read(map, offset, len), t, "mapped at {offset}+{len}");
            assert_eq!(read(map, other, len), t, "per entry at {other}+{len}");
            assert!(mapped <= len as u64, "{mapped} of {len}");
            // A second table differing in a few entries: only those are written.
            let mut u = t.clone();
            for i in (0..len).step_by(97) {
                u[i] = 12;
            }
            let differ = t.iter().zip(&u).filter(|(a, b)| a != b).count() as u64;
            assert_eq!(write(map, offset, &u, || None).expect("rewrite"), differ);
            assert_eq!(write_each(map, other, &u, Some(&t)).expect("rewrite"), differ);
            assert_eq!(read(map, offset, len), u, "mapped rewrite at {offset}+{len}");
            assert_eq!(read(map, other, len), u, "per-entry rewrite at {other}+{len}");
            // The neighbours' entries (sharing a slot when the region starts or ends odd).
            assert_eq!(around(map), before, "neighbours of {offset}+{len} / {other}+{len}");
        }
        // The map's last entries: the window ends exactly at the map's end, at an odd start and
        // an even one.
        for len in [7, 8] {
            let t = table(len, 3);
            write(map, ENTRIES - len as u32, &t, || None).expect("mapped write at the end");
            assert_eq!(read(map, ENTRIES - len as u32, len), t);
            let u = table(len, 5);
            write_each(map, ENTRIES - len as u32, &u, None).expect("per-entry write at the end");
            assert_eq!(read(map, ENTRIES - len as u32, len), u);
        }
    }
}
