//! Announcing the ready VIPs over BGP (ECMP scale-out). lb speaks no BGP itself: it renders the
//! configuration of BIRD 2 ([`bird`]), decides which VIPs to announce ([`readiness`]), and runs
//! the speaker that announces them ([`speaker`]: BIRD, or routes for an external daemon);
//! [`agent`] ties them to the reconciler.

pub mod agent;
pub mod bird;
pub mod birdc;
pub mod readiness;
pub mod speaker;

use std::net::IpAddr;

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
    use md5::{Digest as _, Md5};
    desired
        .services
        .iter()
        .map(|s| {
            let mut h = Md5::new();
            h.update(hash_seed.to_le_bytes());
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
            let digest = h.finalize();
            FingerprintView {
                service: s.key.to_string(),
                fingerprint: digest.iter().take(8).map(|b| format!("{b:02x}")).collect(),
            }
        })
        .collect()
}
