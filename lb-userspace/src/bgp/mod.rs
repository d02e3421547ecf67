//! Announcing the ready VIPs over BGP (ECMP scale-out). lb speaks no BGP itself: it renders the
//! configuration of BIRD 2 ([`bird`]) and decides which VIPs to announce ([`readiness`]); both are
//! pure, so every rule is tested without a router.

pub mod bird;
pub mod readiness;
