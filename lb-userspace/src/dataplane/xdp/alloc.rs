//! Slot allocators for the XDP maps: ids for services and reals, regions of the rings map.
//! Pure bookkeeping, so the map-writing code stays about maps.

/// Hands out small integer ids in `[first, limit)`, reusing freed ones first.
#[derive(Debug)]
pub struct IdAlloc {
    next: u32,
    limit: u32,
    free: Vec<u32>,
}

impl IdAlloc {
    pub fn new(first: u32, limit: u32) -> Self {
        Self { next: first, limit, free: Vec::new() }
    }

    /// The allocator as it was when exactly `used` were handed out (adopting pinned state).
    pub fn from_used(first: u32, limit: u32, used: &[u32]) -> Self {
        let next = used.iter().map(|u| u + 1).max().unwrap_or(first).max(first);
        let free = (first..next).filter(|i| !used.contains(i)).collect();
        Self { next, limit, free }
    }

    /// An allocator that hands out `first` in this order, then ids from `next` on (tests: real
    /// ids of any size without allocating all below them). Every id of `first` is below `next`.
    #[cfg(test)]
    pub fn handing_out(first: &[u32], next: u32, limit: u32) -> Self {
        assert!(first.iter().all(|&id| id < next), "{first:?} not below {next}");
        Self { next, limit, free: first.iter().rev().copied().collect() }
    }

    /// An id, and whether it is handed out for the first time by this allocator (not a freed
    /// one): in maps created with it, its slots still hold zeros.
    pub fn alloc_telling_first(&mut self) -> Option<(u32, bool)> {
        if let Some(id) = self.free.pop() {
            return Some((id, false));
        }
        if self.next >= self.limit {
            return None;
        }
        self.next += 1;
        Some((self.next - 1, true))
    }

    pub fn release(&mut self, id: u32) {
        self.free.push(id);
    }
}

/// First-fit allocator of contiguous regions in `[0, capacity)`.
#[derive(Debug)]
pub struct RegionAlloc {
    /// Free regions (start, len), sorted by start, never adjacent.
    free: Vec<(u32, u32)>,
}

impl RegionAlloc {
    pub fn new(capacity: u32) -> Self {
        Self { free: vec![(0, capacity)] }
    }

    /// The allocator with the regions `used` (start, len) taken (adopting pinned state).
    pub fn from_used(capacity: u32, used: &[(u32, u32)]) -> Self {
        let mut r = Self::new(capacity);
        let mut sorted = used.to_vec();
        sorted.sort_unstable();
        let mut free = Vec::new();
        let mut at = 0;
        for (start, len) in sorted {
            if start > at {
                free.push((at, start - at));
            }
            at = at.max(start + len);
        }
        if at < capacity {
            free.push((at, capacity - at));
        }
        r.free = free;
        r
    }

    pub fn alloc(&mut self, len: u32) -> Option<u32> {
        let pos = self.free.iter().position(|&(_, l)| l >= len)?;
        let (start, l) = self.free[pos];
        if l == len {
            self.free.remove(pos);
        } else {
            self.free[pos] = (start + len, l - len);
        }
        Some(start)
    }

    pub fn release(&mut self, start: u32, len: u32) {
        let pos = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(pos, (start, len));
        // Merge with the following and the preceding region when they touch.
        if pos + 1 < self.free.len() && start + len == self.free[pos + 1].0 {
            self.free[pos].1 += self.free[pos + 1].1;
            self.free.remove(pos + 1);
        }
        if pos > 0 && self.free[pos - 1].0 + self.free[pos - 1].1 == start {
            self.free[pos - 1].1 += self.free[pos].1;
            self.free.remove(pos);
        }
    }

    /// Largest region that could be handed out now.
    pub fn largest(&self) -> u32 {
        self.free.iter().map(|&(_, l)| l).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl IdAlloc {
        fn alloc(&mut self) -> Option<u32> {
            self.alloc_telling_first().map(|(id, _)| id)
        }
    }

    #[test]
    fn first_hand_outs_are_told_from_reused_ids() {
        let mut ids = IdAlloc::new(1, 4);
        assert_eq!(ids.alloc_telling_first(), Some((1, true)));
        assert_eq!(ids.alloc_telling_first(), Some((2, true)));
        ids.release(1);
        assert_eq!(ids.alloc_telling_first(), Some((1, false)), "freed: its slots were used");
        assert_eq!(ids.alloc_telling_first(), Some((3, true)));
        assert_eq!(ids.alloc_telling_first(), None);
        // Adopted: the ids below the highest used may have been used and freed before.
        let mut adopted = IdAlloc::from_used(1, 8, &[3]);
        assert_eq!(adopted.alloc_telling_first().map(|(_, first)| first), Some(false));
    }

    #[test]
    fn ids_are_reused_and_bounded() {
        let mut a = IdAlloc::new(1, 4);
        assert_eq!((a.alloc(), a.alloc(), a.alloc(), a.alloc()), (Some(1), Some(2), Some(3), None));
        a.release(2);
        assert_eq!(a.alloc(), Some(2));
        assert_eq!(a.alloc(), None);
    }

    #[test]
    fn allocators_rebuilt_from_what_is_in_use() {
        let mut a = IdAlloc::from_used(1, 10, &[1, 2, 5]);
        let mut got: Vec<u32> = (0..6).filter_map(|_| a.alloc()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![3, 4, 6, 7, 8, 9]);
        let mut r = RegionAlloc::from_used(100, &[(10, 20), (50, 10)]);
        assert_eq!(r.alloc(10), Some(0));
        assert_eq!(r.alloc(20), Some(30));
        assert_eq!(r.alloc(40), Some(60));
        assert_eq!(r.alloc(1), None);
    }

    #[test]
    fn regions_fit_merge_and_exhaust() {
        let mut r = RegionAlloc::new(100);
        let a = r.alloc(40).expect("fits");
        let b = r.alloc(40).expect("fits");
        assert_eq!((a, b), (0, 40));
        assert_eq!(r.alloc(30), None, "only 20 left");
        r.release(a, 40);
        r.release(b, 40);
        // Everything merged back into one region.
        assert_eq!(r.largest(), 100);
        assert_eq!(r.alloc(100), Some(0));
    }
}
