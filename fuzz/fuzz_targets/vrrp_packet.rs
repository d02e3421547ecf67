//! The VRRP advert decoder on its own: `lb::vrrp::packet::parse`, `Expect::check` and
//! `Expect::decode` (see `lb_fuzz::exercise_vrrp` for the properties).
//!
//! Input: one flags byte, one TTL byte, then the VRRP message (the IP payload). Flags: bit 0 IPv6,
//! bit 1 unicast destination (else the multicast group), bit 2 a destination of the other family.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb::vrrp::packet::{IpMeta, MULTICAST_V4, MULTICAST_V6};
use lb_fuzz::exercise_vrrp;
use libfuzzer_sys::fuzz_target;

const SRC_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const PEER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const SRC_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xff, 0xfe00, 0xb);
const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

fuzz_target!(|data: &[u8]| {
    let [flags, ttl, msg @ ..] = data else { return };
    let v6 = flags & 1 != 0;
    let unicast = flags & 2 != 0;
    let other_family = flags & 4 != 0;
    let src = if v6 { IpAddr::V6(SRC_V6) } else { IpAddr::V4(SRC_V4) };
    let dst = match (v6 != other_family, unicast) {
        (false, false) => IpAddr::V4(MULTICAST_V4),
        (false, true) => IpAddr::V4(PEER_V4),
        (true, false) => IpAddr::V6(MULTICAST_V6),
        (true, true) => IpAddr::V6(PEER_V6),
    };
    exercise_vrrp(msg, &IpMeta { src, dst, ttl: *ttl });
});
