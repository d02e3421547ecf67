//! Announcing the ready VIPs over BGP (ECMP scale-out). lb speaks no BGP itself: it renders the
//! configuration of BIRD 2 ([`bird`]), decides which VIPs to announce ([`readiness`]), and runs
//! the speaker that announces them ([`speaker`]: BIRD, or routes for an external daemon);
//! [`agent`] ties them to the reconciler.

pub mod agent;
pub mod bird;
pub mod birdc;
pub mod readiness;
pub mod speaker;

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
/// and the Maglev table built from them (MD5, first 8 bytes in hex). Memoised with each table
/// (`desired::Ring::fingerprint`): hashing every table on each `lb status` / `lb backends` /
/// scrape cost ~1 s at 1,000 services of M = 65537. `desired::PENDING` for a table the XDP
/// dataplane wrote and is still hashing (off the path to serving).
pub fn fingerprints(desired: &Desired, hash_seed: u32) -> Vec<FingerprintView> {
    desired
        .services
        .iter()
        .map(|s| FingerprintView {
            service: s.key.to_string(),
            fingerprint: s.ring.fingerprint(&crate::desired::pick_head(s, hash_seed)),
        })
        .collect()
}

#[cfg(test)]
mod fingerprint_tests {
    use std::net::IpAddr;

    use super::*;
    use crate::{desired::Ring, fixture};

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
                for slot in s.ring.entries() {
                    h.update(slot.to_le_bytes());
                }
                h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
            })
            .collect()
    }

    /// Memoised fingerprints equal the piecewise digest, on a first call, a repeated call, after
    /// a table changes (a new table behind the same reals), after the dataplane noted one for
    /// another head, and for a head that changes while its table does not.
    #[test]
    fn memoised_fingerprints_equal_the_direct_digest() {
        let mut d = fixture::desired(fixture::xdp_services(251), Vec::new());
        let values = |d: &Desired| -> Vec<String> {
            fingerprints(d, 7).into_iter().map(|f| f.fingerprint).collect()
        };
        assert_eq!(values(&d), reference(&d, 7));
        assert_eq!(values(&d), reference(&d, 7), "memo hit");
        let before = values(&d);
        let mut ring = d.services[0].ring.entries();
        ring.reverse();
        d.services[0].ring = Ring::fixed(ring);
        assert_eq!(values(&d), reference(&d, 7));
        assert_ne!(values(&d)[0], before[0], "a changed table changes the fingerprint");
        // A fingerprint noted for one seed (the dataplane's, as its hasher does) leaves
        // another seed its own.
        let head = crate::desired::pick_head(&d.services[1], 9);
        let (_, noted) = d.services[1].ring.entries_noting_fingerprint(&head);
        assert_eq!(noted, reference(&d, 9)[1]);
        assert_eq!(values(&d), reference(&d, 7));
        // A real's weight changes without changing the table (the fixture's table is given).
        d.services[2].reals[0].weight += 1;
        assert_eq!(values(&d), reference(&d, 7));
    }
}
