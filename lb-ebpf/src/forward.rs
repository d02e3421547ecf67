//! Forwarding decisions: is this frame service traffic, which real takes it, and the DR rewrite
//! (destination MAC = real, source MAC = this interface; the IP packet is untouched so the real,
//! holding the VIP on its loopback, answers the client directly).

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::programs::XdpContext;
use lb_common::{
    DEFAULT_HASH_SEED, FAMILY_V4, IPPROTO_TCP, IPPROTO_UDP, REAL_F_UP, RING_NONE, ServiceKey,
    flow_hash_v4, reason,
};

use crate::maps::{IFACES, REALS, RINGS, SERVICES};
use crate::parse::{
    ETH_HLEN, ETH_P_IP, EthHdr, IPV4_HLEN, Ipv4Hdr, TCP_HLEN, UDP_HLEN, frame_len, has_bytes,
    ptr_at,
};
use crate::stats;

/// What to do with a frame and why (the reason indexes the global counters).
pub struct Verdict {
    pub action: u32,
    pub reason: u32,
}

#[inline(always)]
const fn pass(reason: u32) -> Verdict {
    Verdict { action: xdp_action::XDP_PASS, reason }
}

#[inline(always)]
const fn drop(reason: u32) -> Verdict {
    Verdict { action: xdp_action::XDP_DROP, reason }
}

/// Classifies and, for service traffic, forwards one frame.
#[inline(always)]
pub fn process(ctx: &XdpContext) -> Verdict {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return pass(reason::PASS_MALFORMED);
    };
    // SAFETY: `ptr_at` checked the header is inside the frame.
    let ether_type = u16::from_be(unsafe { (*eth).ether_type });
    if ether_type != ETH_P_IP {
        // ARP, IPv6 (no IPv6 service can be configured yet), LLDP...: the kernel's business.
        return pass(reason::PASS_NOT_IP);
    }
    process_v4(ctx, eth)
}

#[inline(always)]
fn process_v4(ctx: &XdpContext, eth: *mut EthHdr) -> Verdict {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
        return pass(reason::PASS_MALFORMED);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let (version_ihl, proto, frag_off, saddr, daddr) = unsafe {
        ((*ip).version_ihl, (*ip).protocol, u16::from_be((*ip).frag_off), (*ip).saddr, (*ip).daddr)
    };
    if version_ihl >> 4 != 4 || version_ihl & 0x0f < 5 {
        return pass(reason::PASS_MALFORMED);
    }
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return pass(reason::PASS_NOT_SERVICE);
    }
    // Options (variable header length) and fragments are left to the kernel for now: a constant
    // L4 offset also keeps the program verifiable without CAP_PERFMON.
    if version_ihl & 0x0f != 5 || frag_off & 0x3fff != 0 {
        return pass(reason::PASS_UNSUPPORTED);
    }
    let l4 = ETH_HLEN + IPV4_HLEN;
    let Some(ports) = ptr_at::<u32>(ctx, l4) else {
        return pass(reason::PASS_MALFORMED);
    };
    // SAFETY: bounds checked by `ptr_at`. Source port in the low half on the wire's byte order.
    let ports = unsafe { ports.read_unaligned() };
    let dport_be = (ports >> 16) as u16;

    // Built from words: zeroing a byte array compiles to a memset loop the verifier rejects for
    // agents without CAP_PERFMON.
    // SAFETY: [u32; 4] and [u8; 16] have the same size and no invalid bit patterns.
    let addr: [u8; 16] = unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>([daddr, 0, 0, 0]) };
    let key = ServiceKey { addr, port_be: dport_be, proto, family: FAMILY_V4 };
    // SAFETY: the value is only read, and hash-map values are replaced, never modified in place.
    let Some(svc) = (unsafe { SERVICES.get(&key) }) else {
        return pass(reason::PASS_NOT_SERVICE);
    };
    let (svc_id, ring_offset, ring_size) = (svc.id, svc.ring_offset, svc.ring_size);

    // From here on the frame is service traffic: it is forwarded or dropped, never passed up.
    // Two constant-size checks, not one with a selected length: a pointer added to a selected
    // scalar is rejected by the verifier for agents without CAP_PERFMON.
    let complete = if proto == IPPROTO_TCP {
        has_bytes::<TCP_HLEN>(ctx, l4)
    } else {
        has_bytes::<UDP_HLEN>(ctx, l4)
    };
    if !complete {
        return drop(reason::DROP_MALFORMED);
    }
    let frame_len = frame_len(ctx);
    stats::count_service(svc_id, frame_len);

    let ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: read-only use of a map value the agent replaces whole.
    let Some(iface) = (unsafe { IFACES.get(&ifindex) }) else {
        return pass(reason::PASS_NO_IFACE);
    };
    if ring_size == 0 {
        return drop(reason::DROP_NO_REAL);
    }
    let slot = flow_hash_v4(saddr, daddr, ports, proto, DEFAULT_HASH_SEED) % ring_size;
    let Some(&real_id) = RINGS.get(ring_offset.wrapping_add(slot)) else {
        return drop(reason::DROP_NO_REAL);
    };
    if real_id == RING_NONE {
        return drop(reason::DROP_NO_REAL);
    }
    let Some(real) = REALS.get(real_id) else {
        return drop(reason::DROP_NO_REAL);
    };
    if real.flags & REAL_F_UP == 0 {
        return drop(reason::DROP_NO_REAL);
    }
    // SAFETY: the Ethernet header was bounds-checked above; byte copies avoid a memmove call the
    // verifier would reject.
    unsafe {
        core::ptr::copy_nonoverlapping(real.mac.as_ptr(), (*eth).dst.as_mut_ptr(), 6);
        core::ptr::copy_nonoverlapping(iface.mac.as_ptr(), (*eth).src.as_mut_ptr(), 6);
    }
    stats::count_real(real_id, frame_len);
    Verdict { action: xdp_action::XDP_TX, reason: reason::TX }
}
