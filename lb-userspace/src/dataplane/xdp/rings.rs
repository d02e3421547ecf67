//! The one way Maglev tables reach the rings map (`LB_RINGS`). The map is a `BPF_F_MMAPABLE`
//! array: a table is written by mapping just its window of the map into the agent and storing
//! the entries that differ, a handful of syscalls per table instead of one map update per entry
//! (65,537 for a default table). If the kernel refuses the mapping, the table is written one
//! slot update at a time. A slot holds two `u32` entries, or four `u16` ones when every real id
//! fits in 16 bits ([`Width`], `lb_common::RingSlot`): in the map's memory entry `i` lies at
//! byte `i * width`, and a table that does not start or end on a slot boundary shares a slot
//! with its neighbour.

use std::{
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
    sync::atomic::{Ordering, fence},
};

use aya::maps::{Array, Map};
use lb_common::{RingSlot, SVC_F_RING_U16, map_names, ring_entry_bytes, ring_place};

use super::{DataplaneError, map_err};

/// How wide the rings map's entries are: decided by the largest real id when the map is made
/// (`lb_common::ring_entry_bytes`), told to the program by a service flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// Four entries per slot: every real id is below 65,536.
    U16,
    /// Two entries per slot.
    U32,
}

impl Width {
    /// The width for real ids below `max_reals`.
    pub fn for_reals(max_reals: u32) -> Self {
        if ring_entry_bytes(max_reals) == 2 { Self::U16 } else { Self::U32 }
    }

    /// Bytes per entry in the map's memory.
    pub fn bytes(self) -> usize {
        match self {
            Self::U16 => 2,
            Self::U32 => 4,
        }
    }

    /// The service flags the program reads the width from.
    pub fn svc_flags(self) -> u32 {
        match self {
            Self::U16 => SVC_F_RING_U16,
            Self::U32 => 0,
        }
    }

    fn narrow(self) -> u32 {
        lb_common::ring_narrow(self.svc_flags())
    }

    fn per_slot(self) -> u32 {
        (size_of::<RingSlot>() / self.bytes()) as u32
    }

    /// `slot` with entry `lane` set to `id` (ids checked to fit by `check`).
    fn with_entry(self, slot: RingSlot, lane: u32, id: u32) -> RingSlot {
        let (_, shift, mask) = ring_place(lane, self.narrow());
        (slot & !(mask << shift)) | ((u64::from(id) & mask) << shift)
    }

    /// Refuses a table naming a real id the width cannot hold (never happens while ids stay
    /// below the `max_reals` the width was chosen by; a truncated id would send flows to
    /// another real).
    fn check(self, table: &[u32]) -> Result<(), DataplaneError> {
        let max = u32::MAX >> (32 - 8 * self.bytes());
        // A plain maximum (vectorised), not a search that stops early: tables are 65,537 long.
        match table.iter().copied().max() {
            Some(id) if id > max => Err(DataplaneError::Exhausted {
                what: "ring entry width",
                detail: format!("real id {id} does not fit a {}-byte ring entry", self.bytes()),
            }),
            _ => Ok(()),
        }
    }
}

/// Writes `table` at entry `offset` of the rings map, entries `width` wide. `known` gives what
/// the region held when the caller last wrote it (entries equal to it are skipped on the
/// per-slot path; the mapped path compares with the map itself and never asks: the agent holds
/// no copy of its tables). Returns how many entries were written.
pub(super) fn write(
    map: &mut Map,
    width: Width,
    offset: u32,
    table: &[u32],
    known: impl FnOnce() -> Option<Vec<u32>>,
) -> Result<u64, DataplaneError> {
    if table.is_empty() {
        return Ok(0);
    }
    width.check(table)?;
    if let Map::Array(data) = &*map
        && let Some(window) = Window::map(data.fd().as_fd().as_raw_fd(), width, offset, table.len())
    {
        return Ok(window.store(table));
    }
    write_each(map, width, offset, table, known().as_deref())
}

/// Calls `each` with entries `[offset, offset + count)` as the map holds them, read through a
/// mapping of just those pages; false (nothing read) when the map cannot be mapped.
pub(super) fn read(
    fd: BorrowedFd<'_>,
    width: Width,
    offset: u32,
    count: usize,
    mut each: impl FnMut(u32),
) -> bool {
    if count == 0 {
        return true;
    }
    let Some(window) = Window::map(fd.as_raw_fd(), width, offset, count) else { return false };
    for i in 0..count {
        each(window.get(i));
    }
    true
}

/// One map update per slot holding an entry that differs from `known` (every entry when it is
/// `None`). A slot shared with a neighbouring region is read first and keeps the neighbour's
/// entries: the agent is the map's only writer, and a reader sees them unchanged either way.
fn write_each(
    map: &mut Map,
    width: Width,
    offset: u32,
    table: &[u32],
    known: Option<&[u32]>,
) -> Result<u64, DataplaneError> {
    let mut rings: Array<_, RingSlot> =
        Array::try_from(&mut *map).map_err(map_err(map_names::RINGS))?;
    let per = u64::from(width.per_slot());
    let end = u64::from(offset) + table.len() as u64;
    let mut written = 0;
    let mut slot = offset / width.per_slot();
    while u64::from(slot) * per < end {
        let first = u64::from(slot) * per;
        let mut value = if first < u64::from(offset) || first + per > end {
            rings.get(&slot, 0).map_err(map_err(map_names::RINGS))?
        } else {
            0
        };
        let mut changed = false;
        for lane in 0..width.per_slot() {
            let Some(i) = (first + u64::from(lane)).checked_sub(u64::from(offset)) else {
                continue;
            };
            let Some(&real) = table.get(i as usize) else { continue };
            if known.and_then(|k| k.get(i as usize)) != Some(&real) {
                written += 1;
                changed = true;
            }
            value = width.with_entry(value, lane, real);
        }
        if changed {
            rings.set(slot, value, 0).map_err(map_err(map_names::RINGS))?;
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
    width: Width,
}

impl Window {
    /// Maps the pages that hold entries `[offset, offset + count)`; `None` when the map cannot
    /// be mapped (not `BPF_F_MMAPABLE`, or the kernel refuses).
    fn map(fd: i32, width: Width, offset: u32, count: usize) -> Option<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
        let start = offset as usize * width.bytes();
        let end = start + count * width.bytes();
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
        Some(Self { base: base.cast(), len, skip: start - first, width })
    }

    /// Entry `i` of the window.
    fn get(&self, i: usize) -> u32 {
        // SAFETY: entry i lies inside the mapping (`map` covered the window's entries), aligned
        // to its width. Volatile: the map's memory is shared with the kernel and the writer.
        unsafe {
            let at = self.base.add(self.skip + i * self.width.bytes());
            match self.width {
                Width::U16 => u32::from(at.cast::<u16>().read_volatile()),
                Width::U32 => at.cast::<u32>().read_volatile(),
            }
        }
    }

    /// Stores the entries that differ from what the map holds; returns how many. The ids fit
    /// the width (`Width::check`).
    fn store(&self, table: &[u32]) -> u64 {
        let mut written = 0;
        for (i, &real) in table.iter().enumerate() {
            if self.get(i) == real {
                continue;
            }
            // SAFETY: as in `get`. A store of one entry's width leaves the slot's other entries
            // untouched (the XDP program reads the same memory).
            unsafe {
                let at = self.base.add(self.skip + i * self.width.bytes());
                match self.width {
                    Width::U16 => at.cast::<u16>().write_volatile(real as u16),
                    Width::U32 => at.cast::<u32>().write_volatile(real),
                }
            }
            written += 1;
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

    /// Entries per map in these tests: a few pages (1,024 or 2,048 entries per 4 KiB page).
    const ENTRIES: u32 = 8 * 1021;

    /// Entries as the program reads them: one slot lookup, then `ring_place`'s shift and mask.
    fn read(map: &Map, width: Width, offset: u32, len: usize) -> Vec<u32> {
        let rings: Array<_, RingSlot> = Array::try_from(map).expect("array");
        (offset..offset + len as u32)
            .map(|e| {
                let (slot, shift, mask) = ring_place(e, width.narrow());
                ((rings.get(&slot, 0).expect("read") >> shift) & mask) as u32
            })
            .collect()
    }

    /// Ids of all sizes the width holds, its largest included.
    fn table(width: Width, len: usize, salt: u32) -> Vec<u32> {
        let top = u32::MAX >> (32 - 8 * width.bytes());
        let ids = [1, 2, 255, 256, 300, 4097, top - 1, top, 65_535, 65_536, 70_001];
        let ids: Vec<u32> = ids.into_iter().filter(|&id| id <= top).collect();
        (0..len as u32)
            .map(|i| ids[((i.wrapping_mul(2_654_435_761) ^ salt) % ids.len() as u32) as usize])
            .collect()
    }

    /// In both widths the mapped writer leaves exactly what one update per slot leaves,
    /// wherever the region starts and ends (on a slot boundary or inside a slot shared with the
    /// neighbour; inside a page, across pages, at the map's end), writes only the entries that
    /// differ, never changes an entry outside the region, and the loaded rings map is mappable
    /// (the fast path is taken) and as large as the width needs. An id the width cannot hold is
    /// refused before anything is written.
    #[test]
    fn mapped_writes_equal_per_entry_writes() {
        if !require_root("rings map writes") {
            return;
        }
        private_netns();
        // (max_reals, width)
        for (max_reals, width) in [(16, Width::U16), (65_536, Width::U16), (65_537, Width::U32)] {
            assert_eq!(Width::for_reals(max_reals), width);
            let limits =
                XdpLimits { max_services: 4, max_reals, ring_entries: ENTRIES, flows: 1024 };
            let mut dp = XdpDataplane::load(XdpModeSetting::Generic, limits).expect("load");
            let map = dp.ebpf.map_mut(map_names::RINGS).expect("rings map");
            let Map::Array(data) = &*map else { panic!("LB_RINGS is not an array") };
            assert!(
                Window::map(data.fd().as_fd().as_raw_fd(), width, 0, 1).is_some(),
                "LB_RINGS cannot be mapped (BPF_F_MMAPABLE missing?)"
            );
            let info = data.info().expect("map info");
            assert_eq!(
                info.max_entries() as usize * 8,
                ENTRIES as usize * width.bytes(),
                "{width:?}: map size"
            );
            check_writes(map, width);
        }
    }

    fn check_writes(map: &mut Map, width: Width) {
        // Every entry non-zero, so a write spilling into a neighbour's entry shows.
        let fill = vec![13; ENTRIES as usize];
        write_each(map, width, 0, &fill, None).expect("fill");
        // (offset, length) in the first half; the per-slot copy goes at `half + offset + shift`
        // (shift 0: the same place in its slot, 1-3: another).
        let half = ENTRIES / 2;
        let cases = [
            (0, 251, 0),
            (1, 509, 0),
            (1, 509, 1),
            (2, 1, 1),
            (3, 1, 0),
            (3, 6, 2),
            (511, 2, 1),
            (1023, 2, 0),
            (1022, 3, 1),
            (2047, 3, 3),
            (300, 1021, 1),
            (300, 2500, 2),
            (half - 510, 509, 0),
        ];
        for (offset, len, shift) in cases {
            let other = half + offset + shift;
            let mut neighbours = vec![offset + len as u32, other - 1, other + len as u32];
            neighbours.extend(offset.checked_sub(1));
            let around = |map: &Map| {
                neighbours.iter().map(|&e| read(map, width, e, 1)[0]).collect::<Vec<_>>()
            };
            let before = around(map);
            let t = table(width, len, offset);
            let mapped = write(map, width, offset, &t, || None).expect("mapped write");
            let each = write_each(map, width, other, &t, None).expect("per-entry write");
            let at = format!("{width:?} {offset}+{len} / {other}+{len}");
            assert_eq!(each, len as u64, "{at}");
            assert_eq!(read(map, width, offset, len), t, "mapped at {at}");
            assert_eq!(read(map, width, other, len), t, "per entry at {at}");
            assert!(mapped <= len as u64, "{at}: {mapped} of {len}");
            // What the fingerprints read back through a mapping.
            let mut back = Vec::new();
            let Map::Array(data) = &*map else { panic!("LB_RINGS is not an array") };
            assert!(read_mapped(data.fd().as_fd(), width, offset, len, &mut back));
            assert_eq!(back, t, "read back at {at}");
            // A second table differing in a few entries: only those are written.
            let mut u = t.clone();
            for i in (0..len).step_by(97) {
                u[i] = 12;
            }
            let differ = t.iter().zip(&u).filter(|(a, b)| a != b).count() as u64;
            assert_eq!(write(map, width, offset, &u, || None).expect("rewrite"), differ, "{at}");
            assert_eq!(write_each(map, width, other, &u, Some(&t)).expect("rewrite"), differ);
            assert_eq!(read(map, width, offset, len), u, "mapped rewrite at {at}");
            assert_eq!(read(map, width, other, len), u, "per-entry rewrite at {at}");
            // The neighbours' entries (sharing a slot when the region starts or ends inside one).
            assert_eq!(around(map), before, "neighbours of {at}");
        }
        // The map's last entries: the window ends exactly at the map's end, starting on a slot
        // boundary or inside a slot.
        for len in [5, 7, 8] {
            let t = table(width, len, 3);
            write(map, width, ENTRIES - len as u32, &t, || None).expect("mapped write at the end");
            assert_eq!(read(map, width, ENTRIES - len as u32, len), t);
            let u = table(width, len, 5);
            write_each(map, width, ENTRIES - len as u32, &u, None).expect("per-entry at the end");
            assert_eq!(read(map, width, ENTRIES - len as u32, len), u);
        }
        // An id the width cannot hold: refused, nothing written.
        if width == Width::U16 {
            let before = read(map, width, 10, 3);
            let err = write(map, width, 10, &[5, 65_536, 5], || None).expect_err("too wide");
            assert!(err.to_string().contains("real id 65536"), "{err}");
            assert_eq!(read(map, width, 10, 3), before, "nothing written");
        }
    }

    fn read_mapped(
        fd: BorrowedFd<'_>,
        width: Width,
        offset: u32,
        len: usize,
        out: &mut Vec<u32>,
    ) -> bool {
        super::read(fd, width, offset, len, |id| out.push(id))
    }
}
