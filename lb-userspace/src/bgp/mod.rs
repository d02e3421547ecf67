//! Announcing the ready VIPs over BGP (ECMP scale-out). lb speaks no BGP itself: it renders the
//! configuration of BIRD 2 ([`bird`]), decides which VIPs to announce ([`readiness`]), and runs
//! the speaker that announces them ([`speaker`]: BIRD, or routes for an external daemon);
//! [`agent`] ties them to the reconciler.

pub mod agent;
pub mod bird;
pub mod birdc;
pub mod readiness;
pub mod speaker;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, Weak},
};

use serde::{Deserialize, Serialize};

use crate::desired::Desired;

/// One service's fingerprint of what decides the pick of a real (`lb status`): directors that
/// must pick alike show the same one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FingerprintView {
    pub service: String,
    pub fingerprint: String,
}

/// Per service: the hash seed, table size, hashing mode, reals with weights and states in order,
/// and the Maglev table built from them.
pub fn fingerprints(desired: &Desired, hash_seed: u32) -> Vec<FingerprintView> {
    let mut memo = FINGERPRINTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let out: Vec<FingerprintView> = desired
        .services
        .iter()
        .map(|s| {
            let mut head = Vec::with_capacity(9 + 26 * s.reals.len());
            head.extend(hash_seed.to_le_bytes());
            head.extend(s.table_size.to_le_bytes());
            head.push(u8::from(s.source_hash));
            for r in &s.reals {
                let addr = match r.address {
                    IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                    IpAddr::V6(a) => a.octets(),
                };
                head.extend(addr);
                head.extend(r.port.to_le_bytes());
                head.extend(r.weight.to_le_bytes());
                head.extend(r.state.as_str().as_bytes());
            }
            // A table is immutable behind its Arc: while the memo's table is alive and the same
            // allocation, its bytes (and so the digest) are the same.
            let fingerprint = match memo.get(&head) {
                Some((ring, f)) if ring.upgrade().is_some_and(|r| Arc::ptr_eq(&r, &s.ring)) => {
                    f.clone()
                }
                _ => {
                    let f = fingerprint(&head, &s.ring);
                    memo.insert(head, (Arc::downgrade(&s.ring), f.clone()));
                    f
                }
            };
            FingerprintView { service: s.key.to_string(), fingerprint }
        })
        .collect();
    if memo.len() > 2 * out.len() + 64 {
        memo.retain(|_, (ring, _)| ring.strong_count() > 0);
    }
    out
}

/// Fingerprints computed before, by the bytes hashed ahead of the table: hashing every table on
/// each `lb status` / `lb backends` / scrape cost ~1 s at 1,000 services of M = 65537.
#[allow(clippy::type_complexity)]
static FINGERPRINTS: std::sync::LazyLock<Mutex<HashMap<Vec<u8>, (Weak<Vec<u32>>, String)>>> =
    std::sync::LazyLock::new(Default::default);

/// MD5 of `head` then the table's entries (little-endian), first 8 bytes in hex.
fn fingerprint(head: &[u8], ring: &[u32]) -> String {
    use md5::{Digest as _, Md5};
    let mut h = Md5::new();
    h.update(head);
    let bytes: Vec<u8> = ring.iter().flat_map(|slot| slot.to_le_bytes()).collect();
    h.update(&bytes);
    let digest = h.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod fingerprint_tests {
    use super::*;
    use crate::fixture;

    /// The digest as it was computed before the memo: piece by piece, entry by entry.
    fn reference(d: &Desired, seed: u32) -> Vec<String> {
        use md5::{Digest as _, Md5};
        d.services
            .iter()
            .map(|s| {
                let mut h = Md5::new();
                h.update(seed.to_le_bytes());
                h.update(s.table_size.to_le_bytes());
                h.update([u8::from(s.source_hash)]);
                for r in &s.reals {
                    let addr = match r.address {
                        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                        IpAddr::V6(a) => a.octets(),
                    };
                    h.update(addr);
                    h.update(r.port.to_le_bytes());
                    h.update(r.weight.to_le_bytes());
                    h.update(r.state.as_str().as_bytes());
                }
                for slot in s.ring.iter() {
                    h.update(slot.to_le_bytes());
                }
                h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
            })
            .collect()
    }

    /// Memoised fingerprints equal the piecewise digest, on a first call, a repeated call and
    /// after a table changes (a new table behind the same reals).
    #[test]
    fn memoised_fingerprints_equal_the_direct_digest() {
        let mut d = fixture::desired(fixture::xdp_services(251), Vec::new());
        let values = |d: &Desired| -> Vec<String> {
            fingerprints(d, 7).into_iter().map(|f| f.fingerprint).collect()
        };
        assert_eq!(values(&d), reference(&d, 7));
        assert_eq!(values(&d), reference(&d, 7), "memo hit");
        let before = values(&d);
        let mut ring = (*d.services[0].ring).clone();
        ring.reverse();
        d.services[0].ring = Arc::new(ring);
        assert_eq!(values(&d), reference(&d, 7));
        assert_ne!(values(&d)[0], before[0], "a changed table changes the fingerprint");
    }
}
