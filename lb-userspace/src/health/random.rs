//! Cheap unpredictable numbers for check jitter and probe ids, without a random-number crate:
//! std's `RandomState` is seeded from the OS and changes with every instance.

use std::{
    hash::{BuildHasher, Hasher, RandomState},
    time::{SystemTime, UNIX_EPOCH},
};

/// A fresh pseudo-random value. Not for cryptography: it only spreads checks in time and makes
/// probe ids hard to guess for someone who cannot see the traffic.
pub(crate) fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_differ() {
        let values: std::collections::HashSet<u64> = (0..100).map(|_| random_u64()).collect();
        assert!(values.len() > 95, "{} distinct of 100", values.len());
    }
}
