//! Tunnel forwarding (L3 DSR): the client's IP packet, unchanged, inside an outer IPv4/IPv6
//! header to the real (IPIP / IPv6-in-IPv6 and the mixed pairs, GUE, GRE). The next hop comes
//! from the kernel's FIB (`bpf_fib_lookup`): egress interface, MACs, the outer source when no
//! `tun_source` is set, and the path MTU. A lookup costs about as much as the rest of the
//! forwarding (IPv6 source selection more), so its result is kept per real in a per-CPU array
//! (`LB_TUN_NEXTHOPS`) for `TUN_NEXTHOP_LIFETIME_NS` (250 ms): a route, neighbour or MTU change
//! reaches the real's traffic within that. The age is read from the coarse clock, which moves
//! only on kernel ticks, so it is read once per tick (gated by `bpf_jiffies64`, which the
//! verifier inlines as one load). A failed lookup (no route, no neighbour) is never
//! kept. The cached hop is per real, not per packet: policy routing by TOS, flow label or ports
//! toward one real is not followed (the packet's TOS still goes into the outer header).
//! `CFG_F_TUN_FIB_EACH` looks the route up for every packet instead. A packet that would not fit
//! the path MTU is answered with ICMP "fragmentation needed" / ICMPv6 "packet too big" naming the
//! MTU that fits.
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
        bpf_csum_diff, bpf_fib_lookup, bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_redirect,
        bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    },
    programs::XdpContext,
};
use lb_common::{
    Addr, CFG_F_TUN_FIB_EACH, FAMILY_V4, FAMILY_V6, RealValue, TUN_GRE, TUN_GUE,
    TUN_NEXTHOP_LIFETIME_NS, TUN_TTL, TunNextHop, addr_fold, reason, tun_entropy, tun_overhead,
};

use crate::{
    index,
    maps::{CONFIG, FIB_SCRATCH, TUN_NEXTHOPS},
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
/// The largest MTU a lookup is asked about (`tot_len` is 16 bits).
const MTU_MAX: u16 = 0xffff;

/// `TunNextHop::dmac` and `smac` are read as one u64 and one u32 (see `encap`).
const _: () = assert!(
    core::mem::offset_of!(TunNextHop, dmac) % 8 == 0
        && core::mem::offset_of!(TunNextHop, smac) == core::mem::offset_of!(TunNextHop, dmac) + 6
);

/// What the encapsulation needs to know about the inner packet.
struct Inner {
    v6: bool,
    /// TOS / traffic class byte.
    tos: u8,
    /// IPv4 with DF set (IPv6 is never fragmented on the path).
    df: bool,
    /// Length of the inner IP packet.
    len: u32,
    /// [`entropy`] when the encapsulation uses it, else 0.
    entropy: u32,
}

#[inline(always)]
fn inner(ctx: &XdpContext) -> Option<Inner> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds checked by `ptr_at`.
    if u16::from_be(unsafe { (*eth).ether_type }) == ETH_P_IPV6 {
        let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN)?;
        // SAFETY: bounds checked by `ptr_at`.
        let (vtc, plen) = unsafe { (u32::from_be((*ip).vtc_flow), (*ip).payload_len) };
        Some(Inner {
            v6: true,
            tos: (vtc >> 20) as u8,
            df: true,
            len: u32::from(u16::from_be(plen)) + IPV6_HLEN as u32,
            entropy: 0,
        })
    } else {
        let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN)?;
        // SAFETY: bounds checked by `ptr_at`.
        let (tos, tot_len, frag_off) = unsafe { ((*ip).tos, (*ip).tot_len, (*ip).frag_off) };
        Some(Inner {
            v6: false,
            tos,
            df: u16::from_be(frag_off) & 0x4000 != 0,
            len: u32::from(u16::from_be(tot_len)),
            entropy: 0,
        })
    }
}

/// The inner flow's entropy ([`tun_entropy`]). Read only by the encapsulations that use it
/// (an outer IPv6 flow label, GUE's source port): plain IPIP and GRE over IPv4 skip the reads
/// and the hash.
#[inline(always)]
fn entropy(ctx: &XdpContext, v6: bool) -> u32 {
    if v6 {
        let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN) else {
            return 0;
        };
        // The ports (or, for ICMP and fragments, whatever lies there) add per-flow entropy.
        let ports = ptr_at::<u32>(ctx, L4_V6).map_or(0, |p| unsafe { p.read_unaligned() });
        // SAFETY: bounds checked by `ptr_at`.
        let (src, dst) = unsafe { ((*ip).saddr, (*ip).daddr) };
        tun_entropy(addr_fold(&src), addr_fold(&dst), ports)
    } else {
        let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
            return 0;
        };
        let ports = ptr_at::<u32>(ctx, L4_V4).map_or(0, |p| unsafe { p.read_unaligned() });
        // SAFETY: bounds checked by `ptr_at`.
        let (s, d) = unsafe { ((*ip).saddr, (*ip).daddr) };
        tun_entropy(s, d, ports)
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
    let Some(mut inner) = inner(ctx) else {
        return Verdict { len, ..drop(reason::DROP_MALFORMED) };
    };
    // Once here, not in each encapsulation (the program is at the verifier's jump range).
    if real.tun_family == FAMILY_V6 || real.tun == TUN_GUE {
        inner.entropy = entropy(ctx, inner.v6);
    }
    // The kept next hop, looked at here once rather than in each encapsulation (the program is
    // at the verifier's jump range).
    let ingress = ctx.ingress_ifindex() as u32;
    let (Some(cfg), Some(hop)) = (index::first(&CONFIG), TUN_NEXTHOPS.get_ptr_mut(real_id)) else {
        return Verdict { len, ..drop(reason::DROP_TX_ERROR) };
    };
    // SAFETY: per-CPU value, used by this CPU only while the program runs.
    let hop = unsafe { &mut *hop };
    let each = cfg.flags & CFG_F_TUN_FIB_EACH != 0;
    let mut fresh =
        !each && hop.stamp != 0 && hop.generation == real.generation && hop.ingress == ingress;
    // `bpf_jiffies64` is inlined by the verifier (one load); the coarse clock is a helper call
    // and moves only on ticks, so it is read once per tick per real per CPU.
    // SAFETY: no preconditions.
    let tick = unsafe { bpf_jiffies64() } as u32;
    if fresh && hop.tick != tick {
        // SAFETY: no preconditions.
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        fresh = now.wrapping_sub(hop.stamp) < TUN_NEXTHOP_LIFETIME_NS;
        hop.tick = tick;
    }
    let h = Hop { hop, fresh, each, ingress };
    let v = if real.tun_family == FAMILY_V6 {
        match real.tun {
            TUN_GUE => encap::<true, TUN_GUE>(ctx, real, &inner, h, len),
            TUN_GRE => encap::<true, TUN_GRE>(ctx, real, &inner, h, len),
            _ => encap::<true, 0>(ctx, real, &inner, h, len),
        }
    } else {
        match real.tun {
            TUN_GUE => encap::<false, TUN_GUE>(ctx, real, &inner, h, len),
            TUN_GRE => encap::<false, TUN_GRE>(ctx, real, &inner, h, len),
            _ => encap::<false, 0>(ctx, real, &inner, h, len),
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

#[inline(always)]
fn fib_lookup(ctx: *mut aya_ebpf::bindings::xdp_md, p: &mut FibParams, flags: u32) -> u32 {
    // SAFETY: `p` is a fully initialised parameter block of the size passed.
    unsafe {
        bpf_fib_lookup(
            ctx as *mut _,
            p as *mut FibParams,
            core::mem::size_of::<FibParams>() as i32,
            flags,
        ) as u32
    }
}

/// The real's kept next hop and whether it may be used as it is.
struct Hop<'a> {
    hop: &'a mut TunNextHop,
    fresh: bool,
    each: bool,
    ingress: u32,
}

/// One encapsulation: outer IPv6 when `V6`, `KIND` GUE, GRE or (anything else) plain IP in IP.
#[inline(always)]
fn encap<const V6: bool, const KIND: u8>(
    ctx: &XdpContext,
    real: &RealValue,
    inner: &Inner,
    hop: Hop,
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
    let Hop { hop, fresh, each, ingress } = hop;
    if !fresh {
        let packet = u64::from(ingress)
            | u64::from(outer_len as u16) << 32
            | u64::from(inner.tos) << 48
            | u64::from(ip_proto) << 56;
        let sport = if KIND == TUN_GUE { u64::from(sport_be) } else { 0 };
        let more = u64::from(label) | sport << 20 | u64::from(V6) << 36 | u64::from(each) << 37;
        let why = refresh(ctx.ctx, real, hop, packet, more);
        if why != REFRESHED {
            return Verdict { len, ..drop(why) };
        }
    }
    if outer_len > hop.mtu {
        let fits = (hop.mtu as u16).saturating_sub(overhead as u16);
        return if inner.v6 {
            too_big_v6(ctx, len, fits)
        } else if inner.df {
            frag_needed_v4(ctx, len, fits)
        } else {
            Verdict { len, ..drop(reason::DROP_TUN_TOO_BIG) }
        };
    }
    let out = hop.ifindex;

    // SAFETY: helper on this program's own context; a negative delta grows the headroom.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(overhead as i32)) } != 0 {
        return Verdict { len, ..drop(reason::DROP_TX_ERROR) };
    }
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Verdict { len, ..drop(reason::DROP_TX_ERROR) };
    };
    // Both MACs in two loads and three stores: `dmac` and `smac` are 12 bytes in a row at an
    // 8-aligned offset of the map value (asserted at the top of this file).
    // SAFETY: bounds checked by `ptr_at`; the map value holds the 12 bytes read.
    unsafe {
        let macs = (&raw const hop.dmac).cast::<u8>();
        let e = eth.cast::<u8>();
        e.cast::<u64>().write(macs.cast::<u64>().read());
        e.add(8).cast::<u32>().write(macs.add(8).cast::<u32>().read());
        e.add(12).cast::<u16>().write(if V6 { ETH_P_IPV6 } else { ETH_P_IP }.to_be());
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
            // The FIB's choice when asked for one (BPF_FIB_LOOKUP_SRC), else `tun_src`.
            copy_addr(&raw mut (*ip).saddr, &hop.src);
            copy_addr(&raw mut (*ip).daddr, &real.tun_dst);
        }
    } else {
        let Some(ip) = ptr_at::<[u8; IPV4_HLEN]>(ctx, ETH_HLEN) else {
            return Verdict { len, ..drop(reason::DROP_TX_ERROR) };
        };
        // The header built in registers, summed there (no reads back from the packet) and
        // written in three stores. Words as they lie in memory (little-endian loads).
        let (src, dst) = (hop.src[0], real.tun_dst[0]);
        let tot_len = (outer_len as u16).to_be();
        // Version 4, IHL 5 | TOS, and TTL | protocol.
        let (w_ver, w_ttl) =
            (0x45 | u16::from(inner.tos) << 8, u16::from(TUN_TTL) | u16::from(ip_proto) << 8);
        // Flags: DF, fragment offset 0.
        let w_df = 0x4000u16.to_be();
        let sum = u32::from(w_ver)
            + u32::from(tot_len)
            + u32::from(w_df)
            + u32::from(w_ttl)
            + (src & 0xffff)
            + (src >> 16)
            + (dst & 0xffff)
            + (dst >> 16);
        let check = !csum_fold(sum);
        // Bytes 0-7: version/IHL, TOS, total length, ID 0, flags/fragment offset.
        let w0 = u64::from(w_ver) | u64::from(tot_len) << 16 | u64::from(w_df) << 48;
        // Bytes 8-15: TTL, protocol, checksum, source.
        let w1 = u64::from(w_ttl) | u64::from(check) << 16 | u64::from(src) << 32;
        let p = ip.cast::<u8>();
        // SAFETY: bounds checked by `ptr_at` (20 bytes).
        unsafe {
            p.cast::<u64>().write(w0);
            p.add(8).cast::<u64>().write(w1);
            p.add(16).cast::<u32>().write(dst);
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
    if out == ingress {
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

/// [`refresh`] wrote a usable answer into the hop (a pass reason: never a drop's).
const REFRESHED: u32 = reason::PASS_NOT_IP;

/// Looks the route to `real` up for this packet and writes the answer into `hop`: kept for
/// [`TUN_NEXTHOP_LIFETIME_NS`] unless `each` (looked up again for the next packet). A second
/// lookup, asking about the largest packet, learns the path MTU for the packets to come (the
/// FIB tells it only to a packet that does not fit). The packet, packed (a BPF call takes five
/// arguments): `packet` = ingress ifindex (bits 0-31), outer length (32-47), TOS (48-55), outer
/// protocol (56-63); `more` = flow label (0-19), GUE source port, network order (20-35), outer
/// IPv6 (36), `each` (37). Returns [`REFRESHED`] or the drop reason (no route, no neighbour:
/// never kept). A packet that does not fit gets the MTU in `hop.mtu`, and nothing is kept.
///
/// Not inlined: one copy for every encapsulation and every call site keeps the program's
/// jumps within the verifier's 16-bit range (without CAP_PERFMON the verifier adds
/// instructions).
#[inline(never)]
fn refresh(
    ctx: *mut aya_ebpf::bindings::xdp_md,
    real: &RealValue,
    hop: &mut TunNextHop,
    packet: u64,
    more: u64,
) -> u32 {
    // Per-CPU scratch: a parameter block on the stack would need zeroing, which LLVM turns into
    // a memset call the verifier rejects without CAP_PERFMON. Every input field the lookup
    // reads is written here.
    let Some(p) = index::per_cpu_first(&FIB_SCRATCH) else {
        return reason::DROP_TX_ERROR;
    };
    // SAFETY: per-CPU value, used by this CPU only while the program runs.
    let p = unsafe { &mut *p };
    let ingress = packet as u32;
    let outer_len = (packet >> 32) as u16;
    let tos = (packet >> 48) as u8;
    let ip_proto = (packet >> 56) as u8;
    let label = (more & 0x000f_ffff) as u32;
    let sport = (more >> 20) as u16;
    let v6 = more & (1 << 36) != 0;
    let each = more & (1 << 37) != 0;
    p.family = if v6 { AF_INET6 } else { AF_INET };
    p.l4_protocol = ip_proto;
    p.sport = sport;
    p.dport = if ip_proto == IPPROTO_UDP { real.tun_port_be } else { 0 };
    p.__bindgen_anon_1.tot_len = outer_len;
    p.ifindex = ingress;
    if v6 {
        p.__bindgen_anon_2.flowinfo = ((u32::from(tos) << 20) | label).to_be();
        copy_addr(&raw mut p.__bindgen_anon_3.ipv6_src, &real.tun_src);
        copy_addr(&raw mut p.__bindgen_anon_4.ipv6_dst, &real.tun_dst);
    } else {
        // The tos member is the first byte of a 4-byte union: clear the rest too.
        p.__bindgen_anon_2.flowinfo = 0;
        p.__bindgen_anon_2.tos = tos;
        p.__bindgen_anon_3.ipv4_src = real.tun_src[0];
        p.__bindgen_anon_4.ipv4_dst = real.tun_dst[0];
    }
    let flags = if is_zero(&real.tun_src) { BPF_FIB_LOOKUP_SRC } else { 0 };
    hop.stamp = 0;
    match fib_lookup(ctx, p, flags) {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        BPF_FIB_LKUP_RET_FRAG_NEEDED => {
            // SAFETY: the kernel wrote the path MTU over `tot_len` (a union).
            hop.mtu = u32::from(unsafe { p.__bindgen_anon_1.mtu_result });
            return REFRESHED;
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => return reason::DROP_TUN_NO_NEIGH,
        _ => return reason::DROP_TUN_NO_ROUTE,
    }
    hop.ifindex = p.ifindex;
    // SAFETY: byte copies between a map value and the per-CPU scratch; the union members of the
    // family asked about, written by the kernel.
    unsafe {
        core::ptr::copy_nonoverlapping(p.dmac.as_ptr(), hop.dmac.as_mut_ptr(), 6);
        core::ptr::copy_nonoverlapping(p.smac.as_ptr(), hop.smac.as_mut_ptr(), 6);
        if v6 {
            copy_addr(&raw mut hop.src, &p.__bindgen_anon_3.ipv6_src);
        } else {
            copy_addr(&raw mut hop.src, &[p.__bindgen_anon_3.ipv4_src, 0, 0, 0]);
        }
    }
    hop.mtu = u32::from(outer_len);
    if each {
        return REFRESHED;
    }
    // The path MTU: the largest packet either fits or is told the MTU. The lookup left the
    // chosen source in place and wrote the egress interface and the gateway over the input
    // interface and the destination: those go back.
    p.__bindgen_anon_1.tot_len = MTU_MAX;
    p.ifindex = ingress;
    if v6 {
        copy_addr(&raw mut p.__bindgen_anon_4.ipv6_dst, &real.tun_dst);
    } else {
        p.__bindgen_anon_4.ipv4_dst = real.tun_dst[0];
    }
    hop.mtu = match fib_lookup(ctx, p, 0) {
        BPF_FIB_LKUP_RET_SUCCESS => u32::from(MTU_MAX),
        // SAFETY: as above.
        BPF_FIB_LKUP_RET_FRAG_NEEDED => u32::from(unsafe { p.__bindgen_anon_1.mtu_result }),
        // The route changed between the two lookups: this packet only.
        _ => return REFRESHED,
    };
    hop.generation = real.generation;
    hop.ingress = ingress;
    // SAFETY: no preconditions.
    (hop.stamp, hop.tick) = unsafe { (bpf_ktime_get_coarse_ns(), bpf_jiffies64() as u32) };
    REFRESHED
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
