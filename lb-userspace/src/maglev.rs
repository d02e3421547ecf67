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
/// (each round a backend's credit grows by weight/max_weight; it claims a slot per whole credit).
pub fn build(backends: &[Backend<'_>], size: u32, seed: u64) -> Vec<u32> {
    let mut live: Vec<&Backend<'_>> = backends.iter().filter(|b| b.weight > 0).collect();
    // Backends take turns in name order, so the table depends on the set, not on list order.
    live.sort_by(|a, b| a.name.cmp(b.name));
    if live.is_empty() || size < 2 {
        return Vec::new();
    }
    let m = u64::from(size);
    let max_weight = u64::from(live.iter().map(|b| b.weight).max().unwrap_or(1));
    // Permutation of backend i: slot_j = (offset + j * skip) mod M.
    let perms: Vec<(u64, u64)> = live
        .iter()
        .map(|b| {
            let offset = hash64(b.name.as_bytes(), seed) % m;
            let skip = hash64(b.name.as_bytes(), seed ^ 0x5bd1_e995_1234_5678) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    // Each backend's current candidate slot, advanced by `skip` (mod M) without a division.
    let mut pos: Vec<u64> = perms.iter().map(|&(offset, _)| offset).collect();
    let mut credit = vec![0u64; live.len()];
    let mut table = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    'rounds: loop {
        for (i, backend) in live.iter().enumerate() {
            credit[i] += u64::from(backend.weight);
            while credit[i] >= max_weight {
                credit[i] -= max_weight;
                let skip = perms[i].1;
                // Find this backend's next preferred slot that is still free.
                while table[pos[i] as usize] != u32::MAX {
                    pos[i] += skip;
                    if pos[i] >= m {
                        pos[i] -= m;
                    }
                }
                table[pos[i] as usize] = backend.id;
                pos[i] += skip;
                if pos[i] >= m {
                    pos[i] -= m;
                }
                filled += 1;
                if filled == m {
                    break 'rounds;
                }
            }
        }
    }
    table
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
