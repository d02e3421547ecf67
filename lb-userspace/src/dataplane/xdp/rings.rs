//! The one way Maglev tables reach the rings map (`LB_RINGS`). The map is a `BPF_F_MMAPABLE`
//! array: a table is written by mapping just its window of the map into the agent and storing
//! the entries that differ, a handful of syscalls per table instead of one map update per entry
//! (65,537 for a default table). Maps pinned by an older build without the flag cannot be mapped;
//! they are written one update per entry, as before.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    sync::atomic::{Ordering, fence},
};

use aya::maps::{Array, Map};
use lb_common::map_names;

use super::{DataplaneError, map_err};

/// Bytes per entry in an array map's memory: the kernel rounds values up to 8 bytes.
const STRIDE: usize = 8;

/// Writes `table` at `offset` of the rings map. `known` gives what the region held when the
/// caller last wrote it (entries equal to it are skipped on the per-entry path; the mapped path
/// compares with the map itself and never asks: the agent holds no copy of its tables).
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

/// One map update per entry that differs from `known` (every entry when it is `None`).
fn write_each(
    map: &mut Map,
    offset: u32,
    table: &[u32],
    known: Option<&[u32]>,
) -> Result<u64, DataplaneError> {
    let mut rings: Array<_, u32> = Array::try_from(&mut *map).map_err(map_err(map_names::RINGS))?;
    let mut written = 0;
    for (i, &real) in table.iter().enumerate() {
        if known.and_then(|k| k.get(i)) != Some(&real) {
            rings.set(offset + i as u32, real, 0).map_err(map_err(map_names::RINGS))?;
            written += 1;
        }
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
            // array values are 8-byte aligned. Volatile: the XDP program reads the same memory.
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

    /// Entries per map in these tests: a few pages (512 entries of 8 bytes per 4 KiB page).
    const ENTRIES: u32 = 4 * 1021;

    fn read(map: &Map, offset: u32, len: usize) -> Vec<u32> {
        let rings: Array<_, u32> = Array::try_from(map).expect("array");
        (0..len as u32).map(|i| rings.get(&(offset + i), 0).expect("read")).collect()
    }

    fn table(len: usize, salt: u32) -> Vec<u32> {
        (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) ^ salt) % 11 + 1).collect()
    }

    /// The mapped writer leaves exactly what one update per entry leaves, wherever the region
    /// starts and ends (inside a page, across pages, at the map's end), writes only the entries
    /// that differ, and the loaded rings map is mappable (the fast path is the one taken).
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
        // (offset, length): half way in the map so the per-entry copy fits after it.
        let half = ENTRIES / 2;
        for (offset, len) in [(0, 251), (1, 509), (511, 2), (300, 1021), (half - 509, 509)] {
            let t = table(len, offset);
            let mapped = write(map, offset, &t, || None).expect("mapped write");
            let each = write_each(map, half + offset, &t, None).expect("per-entry write");
            assert_eq!(each, len as u64);
            assert_eq!(read(map, offset, len), t, "mapped at {offset}+{len}");
            assert_eq!(read(map, half + offset, len), t, "per entry at {}", half + offset);
            // Entries already equal are not counted as written: zeros (a fresh map) are skipped.
            assert!(mapped <= len as u64, "{mapped} of {len}");
            // A second table differing in a few entries: only those are written.
            let mut u = t.clone();
            for i in (0..len).step_by(97) {
                u[i] = 12;
            }
            let differ = t.iter().zip(&u).filter(|(a, b)| a != b).count() as u64;
            assert_eq!(write(map, offset, &u, || None).expect("rewrite"), differ);
            assert_eq!(write_each(map, half + offset, &u, Some(&t)).expect("rewrite"), differ);
            assert_eq!(read(map, offset, len), read(map, half + offset, len));
        }
        // The map's last entries: the window ends exactly at the map's end.
        let t = table(7, 3);
        write(map, ENTRIES - 7, &t, || None).expect("write at the end");
        assert_eq!(read(map, ENTRIES - 7, 7), t);
    }
}
