//! Weighted Maglev lookup tables (Eisenbud et al., NSDI'16), built in userspace and copied into the
//! rings map. Pure and deterministic: the same backends, weights and seed give the same table on
//! every director, so a pair of directors picks the same real for a flow.

/// Table sizes offered to operators: primes, so every `skip` is coprime with the size.
pub const PRIMES: [u32; 10] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65537, 131071];

/// Default table size (the Maglev paper's); keep it > 100 × backends for ≤ 1 % imbalance.
pub const DEFAULT_SIZE: u32 = 65537;

/// One backend as the table builder sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend<'a> {
    /// Stable identity (e.g. "192.0.2.11:80"): decides the backend's permutation, so it must not
    /// depend on list order or on anything local to one director.
    pub name: &'a str,
    /// Relative weight; 0 keeps the backend out of the table.
    pub weight: u32,
    /// Value written into the table for this backend (the dataplane's real id).
    pub id: u32,
}

/// Builds a table of `size` entries (a prime) holding backend ids. Returns an empty vector when no
/// backend has a positive weight. Backends claim slots in rounds in proportion to their weight
/// (each round a backend's credit grows by weight/max_weight; it claims a slot per whole credit);
/// a claim takes the first free slot of the backend's permutation `(offset + j * skip) mod size`.
///
/// The result is a pure function of the backend set, `size` and `seed` (pinned by a golden test and
/// by a comparison with a straightforward reference implementation). Only the search for a free
/// slot is optimised: a bitmap of filled slots, several candidates tested per step once the table
/// fills up, and for the last few claims a direct computation over the remaining free slots.
pub fn build(backends: &[Backend<'_>], size: u32, seed: u64) -> Vec<u32> {
    let mut live: Vec<&Backend<'_>> = backends.iter().filter(|b| b.weight > 0).collect();
    // Backends take turns in name order, so the table depends on the set, not on list order.
    live.sort_by(|a, b| a.name.cmp(b.name));
    if live.is_empty() || size < 2 {
        return Vec::new();
    }
    // Slot numbers plus offsets below M must fit in a u32 (sizes in use are below 2^17).
    assert!(size <= 1 << 31, "Maglev table size {size} is too large");
    let m = u64::from(size);
    let mut filler = Filler {
        m: size,
        pos: Vec::with_capacity(live.len()),
        steps: Vec::with_capacity(live.len()),
        ids: live.iter().map(|b| b.id).collect(),
        filled: vec![0; (2 * size as usize).div_ceil(64)],
        table: vec![0; size as usize],
    };
    for b in &live {
        // Permutation of backend i: slot_j = (offset + j * skip) mod M.
        let offset = hash64(b.name.as_bytes(), seed) % m;
        let skip = hash64(b.name.as_bytes(), seed ^ 0x5bd1_e995_1234_5678) % (m - 1) + 1;
        filler.pos.push(offset as u32);
        let mut steps = [0u32; 17];
        for j in 1..17 {
            steps[j] = add_mod(steps[j - 1], skip as u32, size);
        }
        filler.steps.push(Steps(steps));
    }
    let weights: Vec<u64> = live.iter().map(|b| u64::from(b.weight)).collect();
    let mut turns = Turns::new(&weights);
    // How many candidates to test per step as the table fills: one while most slots are free
    // (the first one almost always is), more later so that a step rarely ends in a mispredicted
    // branch. The last `tail` claims scan the free slots instead (needs a prime size, so that every
    // skip has an inverse; other sizes keep probing to the end, as the reference does).
    let tail = if is_prime(size) { (size / 8).min(TAIL) } else { 0 };
    let last = size - tail;
    let mut done = 0;
    for (until, width) in [(size / 4, 1), (size / 4 * 3, 4), (size / 10 * 9, 8), (last, 16)] {
        let until = until.clamp(done, last);
        let count = until - done;
        match width {
            1 => filler.probe::<1>(&mut turns, count),
            4 => filler.probe::<4>(&mut turns, count),
            8 => filler.probe::<8>(&mut turns, count),
            _ => filler.probe::<16>(&mut turns, count),
        }
        done = until;
    }
    filler.scan_tail(&mut turns, tail);
    filler.table
}

/// Claims scanned directly over the free slots at the end of a build.
const TAIL: u32 = 128;
/// A backend's `j * skip mod M` for j = 0..=16: the offsets of the candidates tested in one step
/// and of the next step.
struct Steps([u32; 17]);

impl Steps {
    #[inline(always)]
    fn get(&self, j: usize) -> u32 {
        self.0[j]
    }
}

/// Order in which backends claim slots: the credit rounds of [`build`].
struct Turns<'a> {
    weights: &'a [u64],
    max: u64,
    credit: Vec<u64>,
    i: usize,
    /// All weights equal: every backend claims once per round, in order.
    uniform: bool,
}

impl<'a> Turns<'a> {
    fn new(weights: &'a [u64]) -> Self {
        let mut credit = vec![0; weights.len()];
        credit[0] = weights[0];
        let max = weights.iter().copied().max().unwrap_or(1);
        let uniform = weights.iter().all(|&w| w == max);
        Turns { weights, max, credit, i: 0, uniform }
    }

    /// The backend making the next claim. For each backend in turn, its credit grows by its
    /// weight; it claims once per `max` of credit.
    #[inline(always)]
    fn next(&mut self) -> usize {
        if self.uniform {
            let i = self.i;
            self.i = if i + 1 == self.weights.len() { 0 } else { i + 1 };
            return i;
        }
        loop {
            let i = self.i;
            if self.credit[i] >= self.max {
                self.credit[i] -= self.max;
                return i;
            }
            let j = if i + 1 == self.weights.len() { 0 } else { i + 1 };
            self.i = j;
            self.credit[j] += self.weights[j];
        }
    }
}

/// The table being filled.
struct Filler {
    m: u32,
    /// Each backend's next candidate slot.
    pos: Vec<u32>,
    steps: Vec<Steps>,
    ids: Vec<u32>,
    /// Filled slots, twice: bit `s` and bit `s + M` for slot `s`, so a candidate `pos + j * skip`
    /// (below 2M) is tested without reducing it modulo M.
    filled: Vec<u64>,
    table: Vec<u32>,
}

impl Filler {
    #[inline(always)]
    fn is_filled(filled: &[u64], bit: u32) -> bool {
        debug_assert!(((bit >> 6) as usize) < filled.len());
        // SAFETY: every bit tested is below 2M (a slot, or a slot plus an offset below M), and
        // `filled` holds 2M bits.
        (unsafe { *filled.get_unchecked((bit >> 6) as usize) } >> (bit & 63)) & 1 != 0
    }

    #[inline(always)]
    fn claim(&mut self, i: usize, slot: u32) {
        let m = self.m;
        let second = slot + m;
        self.filled[(slot >> 6) as usize] |= 1 << (slot & 63);
        self.filled[(second >> 6) as usize] |= 1 << (second & 63);
        self.table[slot as usize] = self.ids[i];
        self.pos[i] = add_mod(slot, self.steps[i].get(1), m);
    }

    /// `count` claims, testing `W` candidates of the claiming backend's permutation per step.
    #[inline(never)]
    fn probe<const W: usize>(&mut self, turns: &mut Turns<'_>, count: u32) {
        let m = self.m;
        for _ in 0..count {
            let i = turns.next();
            let (steps, filled) = (&self.steps[i], &self.filled[..]);
            let mut p = self.pos[i];
            let slot = if W == 1 {
                while Self::is_filled(filled, p) {
                    p = add_mod(p, steps.get(1), m);
                }
                p
            } else {
                loop {
                    let mut free = 0u32;
                    for j in 0..W {
                        free |= u32::from(!Self::is_filled(filled, p + steps.get(j))) << j;
                    }
                    if free != 0 {
                        break add_mod(p, steps.get(free.trailing_zeros() as usize), m);
                    }
                    p = add_mod(p, steps.get(W), m);
                }
            };
            self.claim(i, slot);
        }
    }

    /// The last `count` claims: with F slots left, probing would test about M/F candidates per
    /// claim, while the free slots can be listed once and the backend's first free one found by
    /// its position in the permutation: slot f is `(f - pos) * skip⁻¹ mod M` steps ahead.
    fn scan_tail(&mut self, turns: &mut Turns<'_>, count: u32) {
        if count == 0 {
            return;
        }
        let m = self.m;
        let mut free: Vec<u32> = Vec::with_capacity(count as usize);
        for slot in 0..m {
            if !Self::is_filled(&self.filled, slot) {
                free.push(slot);
            }
        }
        debug_assert_eq!(free.len(), count as usize);
        let modulus = Modulus::new(m);
        let mut inverse = vec![0u32; self.pos.len()];
        for _ in 0..count {
            let i = turns.next();
            if inverse[i] == 0 {
                inverse[i] = inverse_mod(self.steps[i].get(1), m);
            }
            let (inv, p) = (u64::from(inverse[i]), self.pos[i]);
            let (mut best, mut at) = (u32::MAX, 0);
            for (k, &f) in free.iter().enumerate() {
                let ahead = modulus.reduce(u64::from(sub_mod(f, p, m)) * inv);
                if ahead < best {
                    (best, at) = (ahead, k);
                }
            }
            let slot = free.swap_remove(at);
            self.claim(i, slot);
        }
    }
}

#[inline(always)]
fn add_mod(a: u32, b: u32, m: u32) -> u32 {
    let s = a + b;
    if s >= m { s - m } else { s }
}

#[inline(always)]
fn sub_mod(a: u32, b: u32, m: u32) -> u32 {
    if a >= b { a - b } else { a + m - b }
}

/// Barrett reduction modulo M for products of two residues (below M² < 2^64).
struct Modulus {
    m: u64,
    /// floor((2^64 - 1) / M)
    r: u64,
}

impl Modulus {
    fn new(m: u32) -> Self {
        Modulus { m: u64::from(m), r: u64::MAX / u64::from(m) }
    }

    #[inline(always)]
    fn reduce(&self, a: u64) -> u32 {
        // a·r/2^64 is above a/M - 1 for a < M², so q is floor(a / M) or one less.
        let q = ((u128::from(a) * u128::from(self.r)) >> 64) as u64;
        let r = a - q * self.m;
        (if r >= self.m { r - self.m } else { r }) as u32
    }
}

/// `a⁻¹ mod m` for `a` coprime with `m` (extended Euclid).
fn inverse_mod(a: u32, m: u32) -> u32 {
    let (mut t, mut next_t) = (0i64, 1i64);
    let (mut r, mut next_r) = (i64::from(m), i64::from(a));
    while next_r != 0 {
        let q = r / next_r;
        (t, next_t) = (next_t, t - q * next_t);
        (r, next_r) = (next_r, r - q * next_r);
    }
    debug_assert_eq!(r, 1, "{a} has no inverse modulo {m}");
    t.rem_euclid(i64::from(m)) as u32
}

fn is_prime(n: u32) -> bool {
    let n = u64::from(n);
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// Seeded 64-bit hash (FNV-1a folded through murmur3's 64-bit finaliser): stable across builds and
/// machines, unlike std's randomised hasher.
fn hash64(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(weights: &[u32]) -> Vec<(String, u32)> {
        weights.iter().enumerate().map(|(i, w)| (format!("192.0.2.{}:80", 10 + i), *w)).collect()
    }

    fn table(spec: &[(String, u32)], size: u32) -> Vec<u32> {
        let bs: Vec<Backend<'_>> = spec
            .iter()
            .enumerate()
            .map(|(i, (n, w))| Backend { name: n, weight: *w, id: i as u32 + 1 })
            .collect();
        build(&bs, size, 0)
    }

    fn shares(t: &[u32], n: usize) -> Vec<f64> {
        let mut c = vec![0usize; n + 1];
        for &id in t {
            c[id as usize] += 1;
        }
        c[1..].iter().map(|&x| x as f64 / t.len() as f64).collect()
    }

    #[test]
    fn every_slot_is_filled_with_a_live_backend() {
        let t = table(&backends(&[1, 0, 3]), 251);
        assert_eq!(t.len(), 251);
        assert!(t.iter().all(|&id| id == 1 || id == 3), "weight-0 backend must not appear");
    }

    #[test]
    fn no_live_backend_gives_an_empty_table() {
        assert!(table(&backends(&[0, 0]), 251).is_empty());
        assert!(table(&[], 251).is_empty());
    }

    #[test]
    fn shares_follow_weights_within_one_percent() {
        // Scenario table: weights, table size (> 100 × backends).
        let cases: &[(&[u32], u32)] = &[
            (&[1, 1, 1], 65537),
            (&[1, 2], 65537),
            (&[1, 2, 3, 4], 65537),
            (&[5, 1, 1, 1, 1, 1, 1, 1, 1, 1], 4093),
            (&[100, 1], 65537),
        ];
        for (weights, size) in cases {
            let t = table(&backends(weights), *size);
            let total: u32 = weights.iter().sum();
            for (i, share) in shares(&t, weights.len()).iter().enumerate() {
                let want = f64::from(weights[i]) / f64::from(total);
                assert!(
                    (share - want).abs() <= 0.01,
                    "weights {weights:?} M={size}: backend {i} share {share:.4}, want {want:.4}"
                );
            }
        }
    }

    #[test]
    fn same_input_gives_same_table_regardless_of_order() {
        let a = backends(&[1, 2, 3]);
        let mut b = a.clone();
        b.reverse();
        let ta = table(&a, 4093);
        // Map ids back to names so list order does not matter.
        let name_of = |spec: &[(String, u32)], t: &[u32]| -> Vec<String> {
            t.iter().map(|&id| spec[id as usize - 1].0.clone()).collect()
        };
        let same = name_of(&a, &ta) == name_of(&b, &table(&b, 4093));
        assert!(same, "table depends on the order backends are listed in");
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        for n in [5usize, 10, 50] {
            let all = backends(&vec![1; n]);
            let before = table(&all, 65537);
            let fewer: Vec<_> = all.iter().take(n - 1).cloned().collect();
            let after = table(&fewer, 65537);
            let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
            let frac = moved as f64 / before.len() as f64;
            let ideal = 1.0 / n as f64;
            // The removed backend's slots must move; Maglev keeps other movement small.
            assert!(
                frac >= ideal - 0.01 && frac <= ideal * 1.5 + 0.01,
                "N={n}: {frac:.4} of the table moved, ideal {ideal:.4}"
            );
        }
    }

    #[test]
    fn tables_are_stable_across_processes_and_builds() {
        // A golden digest: the table is a pure function of names, weights, size and seed, so it
        // must not change between runs, processes or machines (two directors must agree).
        let spec = backends(&[1, 2, 3]);
        let t = table(&spec, 251);
        let digest = t.iter().fold(0u64, |h, &id| h.wrapping_mul(31).wrapping_add(u64::from(id)));
        assert_eq!(&t[..12], GOLDEN_PREFIX, "first entries changed");
        assert_eq!(digest, GOLDEN_DIGEST, "table digest changed");
    }

    /// Recorded from this implementation; a change here breaks pairing with older directors.
    const GOLDEN_PREFIX: &[u32] = &[3, 2, 1, 2, 3, 2, 1, 2, 1, 2, 1, 2];
    const GOLDEN_DIGEST: u64 = 15923096521390191287;

    /// The straightforward builder `build` must agree with: one `%` per probe and the table
    /// itself as the "filled" marker (the implementation before the probe loop was optimised).
    fn reference_build(backends: &[Backend<'_>], size: u32, seed: u64) -> Vec<u32> {
        let mut live: Vec<&Backend<'_>> = backends.iter().filter(|b| b.weight > 0).collect();
        live.sort_by(|a, b| a.name.cmp(b.name));
        if live.is_empty() || size < 2 {
            return Vec::new();
        }
        let m = u64::from(size);
        let max_weight = u64::from(live.iter().map(|b| b.weight).max().unwrap_or(1));
        let perms: Vec<(u64, u64)> = live
            .iter()
            .map(|b| {
                let offset = hash64(b.name.as_bytes(), seed) % m;
                let skip = hash64(b.name.as_bytes(), seed ^ 0x5bd1_e995_1234_5678) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; live.len()];
        let mut credit = vec![0u64; live.len()];
        let mut table = vec![u32::MAX; size as usize];
        let mut filled = 0u64;
        'rounds: loop {
            for (i, backend) in live.iter().enumerate() {
                credit[i] += u64::from(backend.weight);
                while credit[i] >= max_weight {
                    credit[i] -= max_weight;
                    let (offset, skip) = perms[i];
                    let mut slot = (offset + next[i] * skip) % m;
                    while table[slot as usize] != u32::MAX {
                        next[i] += 1;
                        slot = (offset + next[i] * skip) % m;
                    }
                    table[slot as usize] = backend.id;
                    next[i] += 1;
                    filled += 1;
                    if filled == m {
                        break 'rounds;
                    }
                }
            }
        }
        table
    }

    /// xorshift64*: a fixed pseudo-random sequence for the comparison below.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    #[test]
    fn optimised_build_matches_the_reference_bit_for_bit() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut cases = 0;
        for round in 0..120 {
            let size = PRIMES[round % PRIMES.len()];
            // Mostly small sets, some up to 1000 backends; weights from equal to very skewed,
            // some zero (drained), ids in input order.
            let n = match round % 4 {
                0 => 1 + rng.below(4),
                1 => 1 + rng.below(40),
                2 => 1 + rng.below(300),
                _ => 1 + rng.below(1000),
            } as usize;
            let max_w = [1, 2, 10, 100, 65535, u64::from(u32::MAX)][round % 6];
            let names: Vec<String> = (0..n)
                .map(|_| {
                    format!(
                        "10.{}.{}.{}:{}",
                        rng.below(4),
                        rng.below(256),
                        rng.below(256),
                        80 + rng.below(3)
                    )
                })
                .collect();
            let backends: Vec<Backend<'_>> = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let weight = if rng.below(10) == 0 { 0 } else { 1 + rng.below(max_w) as u32 };
                    Backend { name, weight, id: i as u32 + 1 }
                })
                .collect();
            let seed = rng.below(u64::MAX);
            let want = reference_build(&backends, size, seed);
            let got = build(&backends, size, seed);
            assert!(
                got == want,
                "round {round}: M={size}, {n} backends, seed {seed:#x}: tables differ"
            );
            cases += 1;
        }
        // Sizes outside the offered primes, prime or not (the tail scan needs a prime).
        for size in [2, 3, 4, 97, 100, 1000, 1009, 4096] {
            let names: Vec<String> = (0..7).map(|i| format!("192.0.2.{i}:80")).collect();
            let backends: Vec<Backend<'_>> = names
                .iter()
                .enumerate()
                .map(|(i, name)| Backend { name, weight: 1 + i as u32 % 3, id: i as u32 })
                .collect();
            // Only sizes where every skip is coprime with M: otherwise the reference may never
            // finish either.
            let m = u64::from(size);
            let coprime = names.iter().all(|n| {
                let skip = hash64(n.as_bytes(), 7 ^ 0x5bd1_e995_1234_5678) % (m - 1) + 1;
                (1..=skip).rev().find(|&d| skip.is_multiple_of(d) && m.is_multiple_of(d)) == Some(1)
            });
            if coprime {
                assert_eq!(
                    build(&backends, size, 7),
                    reference_build(&backends, size, 7),
                    "M={size}"
                );
                cases += 1;
            }
        }
        assert!(cases >= 120);
    }

    #[test]
    fn barrett_reduction_and_inverses_are_exact() {
        for m in PRIMES {
            let modulus = Modulus::new(m);
            let mut rng = Rng(u64::from(m));
            for _ in 0..10_000 {
                let (a, b) = (rng.below(u64::from(m)), rng.below(u64::from(m)));
                assert_eq!(u64::from(modulus.reduce(a * b)), a * b % u64::from(m));
            }
            assert_eq!(modulus.reduce(u64::from(m - 1) * u64::from(m - 1)), 1);
            for a in [1, 2, m / 2, m - 1] {
                assert_eq!(u64::from(inverse_mod(a, m)) * u64::from(a) % u64::from(m), 1);
            }
        }
    }

    #[test]
    fn seed_changes_the_table() {
        let spec = backends(&[1, 1, 1]);
        let bs: Vec<Backend<'_>> = spec
            .iter()
            .enumerate()
            .map(|(i, (n, w))| Backend { name: n, weight: *w, id: i as u32 + 1 })
            .collect();
        assert_ne!(build(&bs, 251, 1), build(&bs, 251, 2));
    }
}
