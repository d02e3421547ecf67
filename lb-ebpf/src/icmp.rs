//! ICMP addressed to VIPs: echo requests are answered here (the reals cannot: they hold the VIP
//! only on their loopback, behind arp_ignore), and "fragmentation needed" / "packet too big"
//! errors about a flow go to the real that owns the flow, so path MTU discovery works for DR.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{
    Addr, FAMILY_V4, FAMILY_V6, FlowKey, IPPROTO_TCP, IPPROTO_UDP, VIP_F_ICMP_ECHO, reason,
};

use crate::{
    index, keys,
    lookup::{lookup_service, pick_new, usable_real, vip},
    maps::{CONFIG, FLOWS},
    parse::{
        EthHdr, ICMP_HLEN, IPV4_HLEN, IPV6_HLEN, IcmpHdr, Ipv4Hdr, Ipv6Hdr, L4_V4, L4_V6,
        csum_fold, csum_replace, now_secs, ptr_at,
    },
    verdict::{Verdict, admit, pass, send},
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMP_ECHO: u8 = 8;
const ICMPV6_PKT_TOOBIG: u8 = 2;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const REPLY_TTL: u8 = 64;

/// Where the quoted packet starts inside an ICMP error.
const INNER_V4: usize = L4_V4 + ICMP_HLEN;
const INNER_V6: usize = L4_V6 + ICMP_HLEN;

#[inline(always)]
pub fn v4(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
    dst: Addr,
    ip_end: usize,
) -> Verdict {
    let Some(vip) = vip(&dst, FAMILY_V4) else {
        return pass(reason::PASS_NOT_SERVICE);
    };
    let Some(icmp) = ptr_at::<IcmpHdr>(ctx, L4_V4) else {
        return pass(reason::PASS_MALFORMED);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let (kind, code) = unsafe { ((*icmp).kind, (*icmp).code) };
    match (kind, code) {
        (ICMP_ECHO, 0) if vip.flags & VIP_F_ICMP_ECHO != 0 => {
            match admit(ctx, eth, ip_end, L4_V4 + ICMP_HLEN) {
                Ok(len) => echo_reply_v4(eth, ip, icmp, len),
                Err(v) => v,
            }
        }
        (ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED) => too_big_v4(ctx, eth, ip_end),
        _ => pass(reason::PASS_ICMP),
    }
}

#[inline(always)]
pub fn v6(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: *mut Ipv6Hdr,
    dst: Addr,
    ip_end: usize,
) -> Verdict {
    let Some(vip) = vip(&dst, FAMILY_V6) else {
        return pass(reason::PASS_NOT_SERVICE);
    };
    let Some(icmp) = ptr_at::<IcmpHdr>(ctx, L4_V6) else {
        return pass(reason::PASS_MALFORMED);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let kind = unsafe { (*icmp).kind };
    match kind {
        ICMPV6_ECHO_REQUEST if vip.flags & VIP_F_ICMP_ECHO != 0 => {
            match admit(ctx, eth, ip_end, L4_V6 + ICMP_HLEN) {
                Ok(len) => echo_reply_v6(eth, ip, icmp, len),
                Err(v) => v,
            }
        }
        ICMPV6_PKT_TOOBIG => too_big_v6(ctx, eth, ip_end),
        // Neighbour discovery for the VIP and everything else: the kernel's.
        _ => pass(reason::PASS_ICMP),
    }
}

/// Swaps the Ethernet addresses so the frame goes back where it came from. Word moves, not a
/// byte-array temporary (which would compile to a memset call).
#[inline(always)]
fn swap_macs(eth: *mut EthHdr) {
    // SAFETY: the caller bounds-checked the 14-byte Ethernet header.
    unsafe {
        let p = eth as *mut u8;
        let d0 = (p as *const u32).read_unaligned();
        let d1 = (p.add(4) as *const u16).read_unaligned();
        let s0 = (p.add(6) as *const u32).read_unaligned();
        let s1 = (p.add(10) as *const u16).read_unaligned();
        (p as *mut u32).write_unaligned(s0);
        (p.add(4) as *mut u16).write_unaligned(s1);
        (p.add(6) as *mut u32).write_unaligned(d0);
        (p.add(10) as *mut u16).write_unaligned(d1);
    }
}

#[inline(always)]
fn echo_reply_v4(eth: *mut EthHdr, ip: *mut Ipv4Hdr, icmp: *mut IcmpHdr, len: usize) -> Verdict {
    swap_macs(eth);
    // SAFETY: both headers were bounds-checked by the caller.
    unsafe {
        let s = (*ip).saddr;
        (*ip).saddr = (*ip).daddr;
        (*ip).daddr = s;
        (*ip).ttl = REPLY_TTL;
        (*ip).check = 0;
        // Sum of the ten 16-bit words of the option-less header.
        let words = ip as *const u16;
        let mut sum = 0u32;
        sum += u32::from(words.read_unaligned());
        sum += u32::from(words.add(1).read_unaligned());
        sum += u32::from(words.add(2).read_unaligned());
        sum += u32::from(words.add(3).read_unaligned());
        sum += u32::from(words.add(4).read_unaligned());
        sum += u32::from(words.add(5).read_unaligned());
        sum += u32::from(words.add(6).read_unaligned());
        sum += u32::from(words.add(7).read_unaligned());
        sum += u32::from(words.add(8).read_unaligned());
        sum += u32::from(words.add(9).read_unaligned());
        (*ip).check = !csum_fold(sum);
        // Type 8 → 0 in the first word (type, code); the addresses are not in the ICMP sum.
        let old = u16::from_ne_bytes([ICMP_ECHO, (*icmp).code]);
        (*icmp).kind = ICMP_ECHO_REPLY;
        let new = u16::from_ne_bytes([ICMP_ECHO_REPLY, (*icmp).code]);
        (*icmp).checksum = csum_replace((*icmp).checksum, old, new);
    }
    Verdict { action: xdp_action::XDP_TX, reason: reason::TX_ICMP_ECHO, len }
}

#[inline(always)]
fn echo_reply_v6(eth: *mut EthHdr, ip: *mut Ipv6Hdr, icmp: *mut IcmpHdr, len: usize) -> Verdict {
    swap_macs(eth);
    // SAFETY: both headers were bounds-checked by the caller.
    unsafe {
        let s = (*ip).saddr;
        (*ip).saddr = (*ip).daddr;
        (*ip).daddr = s;
        (*ip).hop_limit = REPLY_TTL;
        // The pseudo-header sum does not change when source and destination swap.
        let old = u16::from_ne_bytes([ICMPV6_ECHO_REQUEST, (*icmp).code]);
        (*icmp).kind = ICMPV6_ECHO_REPLY;
        let new = u16::from_ne_bytes([ICMPV6_ECHO_REPLY, (*icmp).code]);
        (*icmp).checksum = csum_replace((*icmp).checksum, old, new);
    }
    Verdict { action: xdp_action::XDP_TX, reason: reason::TX_ICMP_ECHO, len }
}

/// Forwards an ICMP error about the flow `flow` (client → VIP direction) to the flow's real.
#[inline(always)]
fn to_flow_owner(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    flow: &FlowKey,
    vip_port_be: u16,
    ip_end: usize,
    need: usize,
) -> Verdict {
    let Some(svc) = lookup_service(&flow.dst, vip_port_be, flow.proto, flow.family) else {
        return pass(reason::PASS_ICMP);
    };
    let len = match admit(ctx, eth, ip_end, need) {
        Ok(len) => len,
        Err(v) => return v,
    };
    // SAFETY: read-only use of the flow entry.
    let bound =
        unsafe { FLOWS.get(flow) }.and_then(|b| Some((b.real, usable_real(b.real, b.generation)?)));
    let chosen = match bound {
        Some(found) => Some(found),
        None => {
            index::first(&CONFIG).and_then(|cfg| pick_new(svc, flow, cfg.hash_seed, now_secs()))
        }
    };
    match chosen {
        Some((id, real)) => send(ctx, eth, id, real, len, false, reason::TX_ICMP_TOO_BIG),
        None => Verdict { len, ..pass(reason::PASS_ICMP) },
    }
}

/// "Fragmentation needed" quoting a packet a real sent from the VIP to a client.
#[inline(always)]
fn too_big_v4(ctx: &XdpContext, eth: *mut EthHdr, ip_end: usize) -> Verdict {
    let Some(inner) = ptr_at::<Ipv4Hdr>(ctx, INNER_V4) else {
        return pass(reason::PASS_ICMP);
    };
    let Some(ports) = ptr_at::<u32>(ctx, INNER_V4 + IPV4_HLEN) else {
        return pass(reason::PASS_ICMP);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let (vihl, proto, saddr, daddr, ports) = unsafe {
        (
            (*inner).version_ihl,
            (*inner).protocol,
            (*inner).saddr,
            (*inner).daddr,
            ports.read_unaligned(),
        )
    };
    if vihl != 0x45 || (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
        return pass(reason::PASS_ICMP);
    }
    // The quoted packet went VIP:port → client:port; the flow is the other way round.
    let mut buf = keys::Buf::new();
    let (src, dst) = ([daddr, 0, 0, 0], [saddr, 0, 0, 0]);
    let flow = keys::flow(&mut buf, &src, &dst, ports.rotate_left(16), proto, FAMILY_V4);
    to_flow_owner(ctx, eth, flow, ports as u16, ip_end, INNER_V4 + IPV4_HLEN + 4)
}

/// "Packet too big" quoting a packet a real sent from the VIP to a client.
#[inline(always)]
fn too_big_v6(ctx: &XdpContext, eth: *mut EthHdr, ip_end: usize) -> Verdict {
    let Some(inner) = ptr_at::<Ipv6Hdr>(ctx, INNER_V6) else {
        return pass(reason::PASS_ICMP);
    };
    let Some(ports) = ptr_at::<u32>(ctx, INNER_V6 + IPV6_HLEN) else {
        return pass(reason::PASS_ICMP);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let (proto, saddr, daddr, ports) =
        unsafe { ((*inner).nexthdr, (*inner).saddr, (*inner).daddr, ports.read_unaligned()) };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return pass(reason::PASS_ICMP);
    }
    let mut buf = keys::Buf::new();
    let flow = keys::flow(&mut buf, &daddr, &saddr, ports.rotate_left(16), proto, FAMILY_V6);
    to_flow_owner(ctx, eth, flow, ports as u16, ip_end, INNER_V6 + IPV6_HLEN + 4)
}
