//! Tunnel forwarding (L3 DSR): the client's IP packet, unchanged, inside an outer IPv4/IPv6
//! header to the real (IPIP / IPv6-in-IPv6 and the mixed pairs, GUE, GRE). The next hop comes
//! from the kernel's FIB on every packet (`bpf_fib_lookup`), so a route change applies to the
//! next packet; the same lookup checks the egress MTU, and a packet that would not fit is
//! answered with ICMP "fragmentation needed" / ICMPv6 "packet too big" naming the MTU that fits.
//!
//! Outer header: TTL/hop limit `TUN_TTL` (64); the inner packet's TOS / traffic class byte
//! (DSCP and ECN) copied; IPv4 with DF set and ID 0 (never fragmented); an IPv6 outer header
//! carries a flow-derived flow label, GUE a flow-derived UDP source port (`tun_entropy`), so the
//! real's NIC spreads flows over its queues. GUE's UDP checksum is 0 (RFC 6935 allows it for
//! tunnels over IPv6; the kernel's FOU receiver accepts it).

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        BPF_FIB_LOOKUP_SRC, bpf_fib_lookup as FibParams, xdp_action,
    },
    helpers::generated::{
        bpf_csum_diff, bpf_fib_lookup, bpf_redirect, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    },
    programs::XdpContext,
};
use lb_common::{
    Addr, FAMILY_V4, FAMILY_V6, RealValue, TUN_GRE, TUN_GUE, TUN_TTL, addr_fold, reason,
    tun_entropy, tun_overhead,
};

use crate::{
    maps::FIB_SCRATCH,
    parse::{
        ETH_HLEN, ETH_P_IP, ETH_P_IPV6, EthHdr, IPV4_HLEN, IPV6_HLEN, Ipv4Hdr, Ipv6Hdr, L4_V4,
        L4_V6, csum_fold, ptr_at,
    },
    stats,
    verdict::{Verdict, drop},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_GRE: u8 = 47;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const UDP_HLEN: usize = 8;
/// Bytes of the offending packet quoted after its IP header in ICMP errors (RFC 792's minimum).
const QUOTE_L4: usize = 8;
const ICMP_HLEN: usize = 8;

/// What the encapsulation needs to know about the inner packet.
struct Inner {
    v6: bool,
    /// TOS / traffic class byte.
    tos: u8,
    /// IPv4 with DF set (IPv6 is never fragmented on the path).
    df: bool,
    /// Length of the inner IP packet.
    len: u32,
    entropy: u32,
}

#[inline(always)]
fn inner(ctx: &XdpContext) -> Option<Inner> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds checked by `ptr_at`.
    if u16::from_be(unsafe { (*eth).ether_type }) == ETH_P_IPV6 {
        let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN)?;
        // The ports (or, for ICMP and fragments, whatever lies there) add per-flow entropy.
        let ports = ptr_at::<u32>(ctx, L4_V6).map_or(0, |p| unsafe { p.read_unaligned() });
        // SAFETY: bounds checked by `ptr_at`.
        let (vtc, plen, src, dst) =
            unsafe { (u32::from_be((*ip).vtc_flow), (*ip).payload_len, (*ip).saddr, (*ip).daddr) };
        Some(Inner {
            v6: true,
            tos: (vtc >> 20) as u8,
            df: true,
            len: u32::from(u16::from_be(plen)) + IPV6_HLEN as u32,
            entropy: tun_entropy(addr_fold(&src), addr_fold(&dst), ports),
        })
    } else {
        let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN)?;
        let ports = ptr_at::<u32>(ctx, L4_V4).map_or(0, |p| unsafe { p.read_unaligned() });
        // SAFETY: bounds checked by `ptr_at`.
        let (tos, tot_len, frag_off, s, d) =
            unsafe { ((*ip).tos, (*ip).tot_len, (*ip).frag_off, (*ip).saddr, (*ip).daddr) };
        Some(Inner {
            v6: false,
            tos,
            df: u16::from_be(frag_off) & 0x4000 != 0,
            len: u32::from(u16::from_be(tot_len)),
            entropy: tun_entropy(s, d, ports),
        })
    }
}

/// Encapsulates the frame's IP packet towards the tunnelled real `real` and sends it out.
#[inline(always)]
pub fn send(
    ctx: &XdpContext,
    real_id: u32,
    real: &RealValue,
    len: usize,
    new_flow: bool,
    tx_reason: u32,
) -> Verdict {
    let Some(inner) = inner(ctx) else {
        return Verdict { len, ..drop(reason::DROP_MALFORMED) };
    };
    let v = if real.tun_family == FAMILY_V6 {
        match real.tun {
            TUN_GUE => encap::<true, TUN_GUE>(ctx, real, &inner, len),
            TUN_GRE => encap::<true, TUN_GRE>(ctx, real, &inner, len),
            _ => encap::<true, 0>(ctx, real, &inner, len),
        }
    } else {
        match real.tun {
            TUN_GUE => encap::<false, TUN_GUE>(ctx, real, &inner, len),
            TUN_GRE => encap::<false, TUN_GRE>(ctx, real, &inner, len),
            _ => encap::<false, 0>(ctx, real, &inner, len),
        }
    };
    if v.reason == reason::TX_TUNNEL {
        stats::count_real(real_id, len, new_flow);
        // ICMP errors forwarded to a flow's real keep their own reason.
        if tx_reason != reason::TX {
            return Verdict { reason: tx_reason, ..v };
        }
    }
    v
}

/// Copies an address word by word: an array assignment compiles to a memcpy call the verifier
/// rejects (pointer arithmetic between a map value and the packet).
#[inline(always)]
fn copy_addr(dst: *mut Addr, src: &Addr) {
    let d = dst as *mut u32;
    // SAFETY: `dst` points to four u32s the caller bounds-checked (packet) or owns (map value).
    unsafe {
        d.write_volatile(src[0]);
        d.add(1).write_volatile(src[1]);
        d.add(2).write_volatile(src[2]);
        d.add(3).write_volatile(src[3]);
    }
}

#[inline(always)]
fn is_zero(a: &Addr) -> bool {
    a[0] | a[1] | a[2] | a[3] == 0
}

/// One encapsulation: outer IPv6 when `V6`, `KIND` GUE, GRE or (anything else) plain IP in IP.
#[inline(always)]
fn encap<const V6: bool, const KIND: u8>(
    ctx: &XdpContext,
    real: &RealValue,
    inner: &Inner,
    len: usize,
) -> Verdict {
    let ip_hlen = if V6 { IPV6_HLEN } else { IPV4_HLEN };
    let overhead = tun_overhead(KIND, if V6 { FAMILY_V6 } else { FAMILY_V4 }) as usize;
    let ip_proto = match KIND {
        TUN_GUE => IPPROTO_UDP,
        TUN_GRE => IPPROTO_GRE,
        _ if inner.v6 => IPPROTO_IPV6,
        _ => IPPROTO_IPIP,
    };
    let sport_be = ((inner.entropy as u16) | 0xc000).to_be();
    let label = inner.entropy & 0x000f_ffff;
    let outer_len = inner.len + overhead as u32;

    // Per-CPU scratch: a parameter block on the stack would need zeroing, which LLVM turns into
    // a memset call the verifier rejects without CAP_PERFMON. Every input field the lookup
    // reads is written below.
    let Some(p) = FIB_SCRATCH.get_ptr_mut(0) else {
        return Verdict { len, ..drop(reason::DROP_TX_ERROR) };
    };
    // SAFETY: per-CPU value, used by this CPU only while the program runs.
    let p = unsafe { &mut *p };
    p.family = if V6 { AF_INET6 } else { AF_INET };
    p.l4_protocol = ip_proto;
    p.sport = if KIND == TUN_GUE { sport_be } else { 0 };
    p.dport = if KIND == TUN_GUE { real.tun_port_be } else { 0 };
    p.__bindgen_anon_1.tot_len = outer_len as u16;
    p.ifindex = ctx.ingress_ifindex() as u32;
    if V6 {
        p.__bindgen_anon_2.flowinfo = ((u32::from(inner.tos) << 20) | label).to_be();
        copy_addr(&raw mut p.__bindgen_anon_3.ipv6_src, &real.tun_src);
        copy_addr(&raw mut p.__bindgen_anon_4.ipv6_dst, &real.tun_dst);
    } else {
        // The tos member is the first byte of a 4-byte union: clear the rest too.
        p.__bindgen_anon_2.flowinfo = 0;
        p.__bindgen_anon_2.tos = inner.tos;
        p.__bindgen_anon_3.ipv4_src = real.tun_src[0];
        p.__bindgen_anon_4.ipv4_dst = real.tun_dst[0];
    }
    let flags = if is_zero(&real.tun_src) { BPF_FIB_LOOKUP_SRC } else { 0 };
    // SAFETY: `p` is a fully initialised parameter block of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            p as *mut FibParams,
            core::mem::size_of::<FibParams>() as i32,
            flags,
        )
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        BPF_FIB_LKUP_RET_FRAG_NEEDED => {
            // SAFETY: the kernel wrote the egress MTU over `tot_len` (a union).
            let mtu = unsafe { p.__bindgen_anon_1.mtu_result };
            let fits = mtu.saturating_sub(overhead as u16);
            return if inner.v6 {
                too_big_v6(ctx, len, fits)
            } else if inner.df {
                frag_needed_v4(ctx, len, fits)
            } else {
                Verdict { len, ..drop(reason::DROP_TUN_TOO_BIG) }
            };
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => return Verdict { len, ..drop(reason::DROP_TUN_NO_NEIGH) },
        _ => return Verdict { len, ..drop(reason::DROP_TUN_NO_ROUTE) },
    }
    let out = p.ifindex;

    // SAFETY: helper on this program's own context; a negative delta grows the headroom.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(overhead as i32)) } != 0 {
        return Verdict { len, ..drop(reason::DROP_TX_ERROR) };
    }
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Verdict { len, ..drop(reason::DROP_TX_ERROR) };
    };
    // SAFETY: bounds checked by `ptr_at`; byte copies of 6 bytes inline (no memmove call).
    unsafe {
        core::ptr::copy_nonoverlapping(p.dmac.as_ptr(), (*eth).dst.as_mut_ptr(), 6);
        core::ptr::copy_nonoverlapping(p.smac.as_ptr(), (*eth).src.as_mut_ptr(), 6);
        (*eth).ether_type = if V6 { ETH_P_IPV6 } else { ETH_P_IP }.to_be();
    }
    if V6 {
        let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN) else {
            return Verdict { len, ..drop(reason::DROP_TX_ERROR) };
        };
        // SAFETY: bounds checked by `ptr_at`.
        unsafe {
            (*ip).vtc_flow = ((6u32 << 28) | (u32::from(inner.tos) << 20) | label).to_be();
            (*ip).payload_len = ((outer_len - IPV6_HLEN as u32) as u16).to_be();
            (*ip).nexthdr = ip_proto;
            (*ip).hop_limit = TUN_TTL;
            // The FIB filled the source in when asked to (BPF_FIB_LOOKUP_SRC), else it is ours.
            copy_addr(&raw mut (*ip).saddr, &p.__bindgen_anon_3.ipv6_src);
            copy_addr(&raw mut (*ip).daddr, &real.tun_dst);
        }
    } else {
        let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
            return Verdict { len, ..drop(reason::DROP_TX_ERROR) };
        };
        // SAFETY: bounds checked by `ptr_at`.
        unsafe {
            (*ip).version_ihl = 0x45;
            (*ip).tos = inner.tos;
            (*ip).tot_len = (outer_len as u16).to_be();
            (*ip).id = 0;
            (*ip).frag_off = 0x4000u16.to_be();
            (*ip).ttl = TUN_TTL;
            (*ip).protocol = ip_proto;
            (*ip).check = 0;
            (*ip).saddr = p.__bindgen_anon_3.ipv4_src;
            (*ip).daddr = real.tun_dst[0];
            (*ip).check = ipv4_checksum(ip);
        }
    }
    let l4 = ETH_HLEN + ip_hlen;
    if KIND == TUN_GUE {
        let Some(udp) = ptr_at::<[u16; 4]>(ctx, l4) else {
            return Verdict { len, ..drop(reason::DROP_TX_ERROR) };
        };
        // SAFETY: bounds checked by `ptr_at`.
        unsafe {
            (*udp)[0] = sport_be;
            (*udp)[1] = real.tun_port_be;
            (*udp)[2] = ((inner.len + UDP_HLEN as u32) as u16).to_be();
            (*udp)[3] = 0;
        }
    } else if KIND == TUN_GRE {
        let Some(gre) = ptr_at::<[u16; 2]>(ctx, l4) else {
            return Verdict { len, ..drop(reason::DROP_TX_ERROR) };
        };
        // SAFETY: bounds checked by `ptr_at`.
        unsafe {
            (*gre)[0] = 0;
            (*gre)[1] = if inner.v6 { ETH_P_IPV6 } else { ETH_P_IP }.to_be();
        }
    }
    if out == ctx.ingress_ifindex() as u32 {
        return Verdict { action: xdp_action::XDP_TX, reason: reason::TX_TUNNEL, len };
    }
    // SAFETY: plain helper call. A direct redirect, not the devmap: the FIB may pick any
    // interface, and a route change must not wait for the agent.
    match unsafe { bpf_redirect(out, 0) } as u32 {
        xdp_action::XDP_REDIRECT => {
            Verdict { action: xdp_action::XDP_REDIRECT, reason: reason::TX_TUNNEL, len }
        }
        _ => Verdict { len, ..drop(reason::DROP_TX_ERROR) },
    }
}

/// Checksum of an option-less IPv4 header whose checksum field is 0.
#[inline(always)]
fn ipv4_checksum(ip: *const Ipv4Hdr) -> u16 {
    let words = ip as *const u16;
    let mut sum = 0u32;
    // SAFETY: the caller bounds-checked the 20-byte header.
    unsafe {
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
    }
    !csum_fold(sum)
}

/// The frame's MACs as words (destination, source), read before the headers move.
#[inline(always)]
fn macs(ctx: &XdpContext) -> Option<(u32, u16, u32, u16)> {
    let p = ptr_at::<EthHdr>(ctx, 0)? as *const u8;
    // SAFETY: bounds checked by `ptr_at`.
    unsafe {
        Some((
            (p as *const u32).read_unaligned(),
            (p.add(4) as *const u16).read_unaligned(),
            (p.add(6) as *const u32).read_unaligned(),
            (p.add(10) as *const u16).read_unaligned(),
        ))
    }
}

/// Writes an Ethernet header back to where the frame came from.
#[inline(always)]
fn eth_back(eth: *mut u8, (d0, d1, s0, s1): (u32, u16, u32, u16), ether_type: u16) {
    // SAFETY: the caller bounds-checked the 14-byte header.
    unsafe {
        (eth as *mut u32).write_unaligned(s0);
        (eth.add(4) as *mut u16).write_unaligned(s1);
        (eth.add(6) as *mut u32).write_unaligned(d0);
        (eth.add(10) as *mut u16).write_unaligned(d1);
        (eth.add(12) as *mut u16).write_unaligned(ether_type.to_be());
    }
}

/// Cuts the frame to `keep` bytes and makes `room` bytes of headroom.
#[inline(always)]
fn reshape(ctx: &XdpContext, len: usize, keep: usize, room: usize) -> bool {
    // SAFETY: helpers on this program's own context.
    unsafe {
        (len <= keep || bpf_xdp_adjust_tail(ctx.ctx, keep as i32 - len as i32) == 0)
            && bpf_xdp_adjust_head(ctx.ctx, -(room as i32)) == 0
    }
}

/// Sum of `N` bytes at `offset` (a multiple of 4), unfolded.
#[inline(always)]
fn sum_at<const N: usize>(ctx: &XdpContext, offset: usize, seed: u32) -> Option<u32> {
    let p = ptr_at::<[u8; N]>(ctx, offset)?;
    // SAFETY: the N bytes are inside the frame (checked by `ptr_at`).
    let s = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut u32, N as u32, seed) };
    Some(s as u32)
}

/// ICMP "fragmentation needed" with next-hop MTU `mtu` to the client of an IPv4 DF packet,
/// quoting its IP header and first 8 payload bytes; sent back where the packet came from.
#[inline(always)]
fn frag_needed_v4(ctx: &XdpContext, len: usize, mtu: u16) -> Verdict {
    const KEEP: usize = ETH_HLEN + IPV4_HLEN + QUOTE_L4;
    const ROOM: usize = IPV4_HLEN + ICMP_HLEN;
    const ICMP_LEN: usize = ICMP_HLEN + IPV4_HLEN + QUOTE_L4;
    let (Some(m), Some(ip)) = (macs(ctx), ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN)) else {
        return Verdict { len, ..drop(reason::DROP_MALFORMED) };
    };
    // SAFETY: bounds checked by `ptr_at`.
    let (client, vip) = unsafe { ((*ip).saddr, (*ip).daddr) };
    if len < KEEP || !reshape(ctx, len, KEEP, ROOM) {
        return Verdict { len, ..drop(reason::DROP_MALFORMED) };
    }
    let (Some(eth), Some(ip), Some(icmp)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN),
        ptr_at::<[u16; 4]>(ctx, ETH_HLEN + IPV4_HLEN),
    ) else {
        return Verdict { len, ..drop(reason::DROP_TX_ERROR) };
    };
    eth_back(eth as *mut u8, m, ETH_P_IP);
    // SAFETY: bounds checked by `ptr_at`.
    unsafe {
        (*ip).version_ihl = 0x45;
        (*ip).tos = 0;
        (*ip).tot_len = ((IPV4_HLEN + ICMP_LEN) as u16).to_be();
        (*ip).id = 0;
        (*ip).frag_off = 0;
        (*ip).ttl = TUN_TTL;
        (*ip).protocol = IPPROTO_ICMP;
        (*ip).check = 0;
        (*ip).saddr = vip;
        (*ip).daddr = client;
        (*ip).check = ipv4_checksum(ip);
        (*icmp)[0] = u16::from_ne_bytes([3, 4]);
        (*icmp)[1] = 0;
        (*icmp)[2] = 0;
        (*icmp)[3] = mtu.to_be();
    }
    let Some(sum) = sum_at::<ICMP_LEN>(ctx, ETH_HLEN + IPV4_HLEN, 0) else {
        return Verdict { len, ..drop(reason::DROP_TX_ERROR) };
    };
    // SAFETY: as above.
    unsafe { (*icmp)[1] = !csum_fold(sum) };
    Verdict { action: xdp_action::XDP_TX, reason: reason::TX_TUN_TOO_BIG, len }
}

/// ICMPv6 "packet too big" with MTU `mtu` to the client, quoting the IPv6 header and the first
/// 8 payload bytes; sent back where the packet came from.
#[inline(always)]
fn too_big_v6(ctx: &XdpContext, len: usize, mtu: u16) -> Verdict {
    const KEEP: usize = ETH_HLEN + IPV6_HLEN + QUOTE_L4;
    const ROOM: usize = IPV6_HLEN + ICMP_HLEN;
    const ICMP_LEN: usize = ICMP_HLEN + IPV6_HLEN + QUOTE_L4;
    let (Some(m), Some(ip)) = (macs(ctx), ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN)) else {
        return Verdict { len, ..drop(reason::DROP_MALFORMED) };
    };
    // SAFETY: bounds checked by `ptr_at`.
    let (client, vip) = unsafe { ((*ip).saddr, (*ip).daddr) };
    if len < KEEP || !reshape(ctx, len, KEEP, ROOM) {
        return Verdict { len, ..drop(reason::DROP_MALFORMED) };
    }
    let (Some(eth), Some(ip), Some(icmp)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN),
        ptr_at::<[u16; 4]>(ctx, ETH_HLEN + IPV6_HLEN),
    ) else {
        return Verdict { len, ..drop(reason::DROP_TX_ERROR) };
    };
    eth_back(eth as *mut u8, m, ETH_P_IPV6);
    // SAFETY: bounds checked by `ptr_at`.
    unsafe {
        (*ip).vtc_flow = (6u32 << 28).to_be();
        (*ip).payload_len = (ICMP_LEN as u16).to_be();
        (*ip).nexthdr = IPPROTO_ICMPV6;
        (*ip).hop_limit = TUN_TTL;
        copy_addr(&raw mut (*ip).saddr, &vip);
        copy_addr(&raw mut (*ip).daddr, &client);
        (*icmp)[0] = u16::from_ne_bytes([2, 0]);
        (*icmp)[1] = 0;
        (*icmp)[2] = 0;
        (*icmp)[3] = mtu.to_be();
    }
    // Pseudo-header: both addresses, the upper-layer length and the next header.
    let pseudo = u32::from(u16::from_ne_bytes([0, ICMP_LEN as u8]))
        + u32::from(u16::from_ne_bytes([0, IPPROTO_ICMPV6]));
    let Some(sum) = sum_at::<32>(ctx, ETH_HLEN + 8, pseudo)
        .and_then(|s| sum_at::<ICMP_LEN>(ctx, ETH_HLEN + IPV6_HLEN, s))
    else {
        return Verdict { len, ..drop(reason::DROP_TX_ERROR) };
    };
    // SAFETY: as above.
    unsafe { (*icmp)[1] = !csum_fold(sum) };
    Verdict { action: xdp_action::XDP_TX, reason: reason::TX_TUN_TOO_BIG, len }
}
