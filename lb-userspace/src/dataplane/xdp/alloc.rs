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

    pub fn alloc(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        if self.next >= self.limit {
            return None;
        }
        self.next += 1;
        Some(self.next - 1)
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

    #[test]
    fn ids_are_reused_and_bounded() {
        let mut a = IdAlloc::new(1, 4);
        assert_eq!((a.alloc(), a.alloc(), a.alloc(), a.alloc()), (Some(1), Some(2), Some(3), None));
        a.release(2);
        assert_eq!(a.alloc(), Some(2));
        assert_eq!(a.alloc(), None);
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
