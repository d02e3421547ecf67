//! Health checks through the VIP (`through_vip`), as TC programs on the interfaces the checked
//! reals are reached by. A check's socket connects to the real's own address with a socket mark
//! from the reserved range (`lb_common::probe`); on egress a marked packet gets the VIP as its
//! destination (checksums updated, also for packets whose L4 checksum is left to the NIC) and,
//! for a tunnelled real, the real's tunnel header (outer destination = the real), so it reaches
//! the VIP on that real along the client traffic's path. The flow is remembered; on ingress a
//! reply from the VIP to it gets the real's address back as its source before the IP layer sees
//! it (no martian source, and the socket connected to the real accepts it), and an ICMP error
//! quoting it gets the real's address back as the quoted destination (and as its source when the
//! VIP sent it), so the kernel hands the error to the check's socket.
//!
//! A real given by its address of the other family than the VIP's: the check's packet is
//! translated into the VIP's family (from the target's `inner_src`) before the tunnel goes around
//! it, and the reply translated back into the real's (docs/tunnels.md); ICMP errors about such
//! a check are left as they are.
//!
//! A marked packet this program cannot send as asked (no target, options, another protocol) is
//! dropped: a check through the VIP must never silently check the real's own address. Offsets
//! are constants (IPv4 without options, IPv6 without extension headers), as in the XDP program.
#![no_std]
#![no_main]

#[path = "../rt.rs"]
mod rt;

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L4_GRE,
        BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_F_RECOMPUTE_CSUM,
        TC_ACT_OK, TC_ACT_SHOT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    helpers::generated::bpf_csum_diff,
    macros::{classifier, map},
    maps::{HashMap, LruHashMap},
    programs::TcContext,
};
use lb_common::{
    Addr, FAMILY_V4, FAMILY_V6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, TUN_GRE,
    TUN_GUE, TUN_NONE, TUN_TTL, addr_fold,
    probe::{MARK_BASE, MARK_MASK, MAX_FLOWS, MAX_TARGETS, ProbeFlow, ProbeFlowKey, ProbeTarget},
    tun_entropy, tun_overhead,
};

/// Mark → where the marked check goes.
#[map(name = "LB_PROBE_TARGETS")]
static TARGETS: HashMap<u32, ProbeTarget> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Probe connections → what their replies need.
#[map(name = "LB_PROBE_FLOWS")]
static FLOWS: LruHashMap<ProbeFlowKey, ProbeFlow> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const L4_V4: usize = ETH_HLEN + IPV4_HLEN;
const L4_V6: usize = ETH_HLEN + IPV6_HLEN;
/// Offsets in the IPv4 header.
const V4_CHECK: usize = ETH_HLEN + 10;
const V4_SRC: usize = ETH_HLEN + 12;
const V4_DST: usize = ETH_HLEN + 16;
/// Offsets in the IPv6 header.
const V6_SRC: usize = ETH_HLEN + 8;
const V6_DST: usize = ETH_HLEN + 24;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_GRE: u8 = 47;
const UDP_HLEN: u32 = 8;
/// ICMP and ICMPv6 errors: the checksum's offset, and where the quoted packet starts.
const ICMP_CSUM: usize = 2;
const ICMP_HLEN: usize = 8;
/// The checksum's offset in the UDP and in the TCP header.
const UDP_CSUM: usize = 6;
const TCP_CSUM: usize = 16;

/// Where the L4 checksum lies from the L4 header's start, and the helper flags for it (a UDP
/// checksum of 0 means none and stays 0).
#[inline(always)]
fn l4_csum(proto: u8) -> Option<(usize, u64)> {
    match proto {
        IPPROTO_TCP => Some((16, u64::from(BPF_F_PSEUDO_HDR))),
        IPPROTO_UDP => Some((6, u64::from(BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0))),
        _ => None,
    }
}

#[classifier]
pub fn lb_probe_egress(ctx: TcContext) -> i32 {
    // SAFETY: the context's socket buffer, valid while the program runs.
    let mark = unsafe { (*ctx.skb.skb).mark };
    // Everything but the checks through the VIP leaves here, without a map lookup.
    if mark & MARK_MASK != MARK_BASE {
        return TC_ACT_OK as i32;
    }
    match egress(&ctx, mark) {
        Some(()) => TC_ACT_OK as i32,
        None => TC_ACT_SHOT as i32,
    }
}

#[classifier]
pub fn lb_probe_ingress(ctx: TcContext) -> i32 {
    // Nothing to do or not one of ours: the packet goes on untouched either way.
    let _ = ingress(&ctx);
    TC_ACT_OK as i32
}

#[inline(always)]
fn ether_type(ctx: &TcContext) -> Option<u16> {
    ctx.load::<u16>(12).ok().map(u16::from_be)
}

/// What the encapsulation needs of the check's packet.
struct Inner {
    v6: bool,
    tos: u8,
    /// Length of the IP packet.
    len: u32,
    /// The check's own source, of the real's family: the outer source without `tun_source`.
    outer_src: Addr,
    entropy: u32,
}

fn egress(ctx: &TcContext, mark: u32) -> Option<()> {
    // SAFETY: a plain map lookup; the value is copied out at once (a reload's update cannot
    // change it halfway through).
    let target: ProbeTarget = *unsafe { TARGETS.get(&mark) }?;
    let target = &target;
    // The check's socket is of the real's family.
    let v6 = match ether_type(ctx)? {
        ETH_P_IP if target.real_family == FAMILY_V4 => false,
        ETH_P_IPV6 if target.real_family == FAMILY_V6 => true,
        _ => return None,
    };
    let inner = match (v6, target.family == FAMILY_V6) {
        (false, false) => rewrite_dst_v4(ctx, target)?,
        (true, true) => rewrite_dst_v6(ctx, target)?,
        (false, true) => to_vip_family::<true>(ctx, target)?,
        (true, false) => to_vip_family::<false>(ctx, target)?,
    };
    if target.tun == TUN_NONE {
        return Some(());
    }
    if target.real_family == FAMILY_V6 {
        match target.tun {
            TUN_GUE => encap::<true, TUN_GUE>(ctx, target, &inner),
            TUN_GRE => encap::<true, TUN_GRE>(ctx, target, &inner),
            _ => encap::<true, 0>(ctx, target, &inner),
        }
    } else {
        match target.tun {
            TUN_GUE => encap::<false, TUN_GUE>(ctx, target, &inner),
            TUN_GRE => encap::<false, TUN_GRE>(ctx, target, &inner),
            _ => encap::<false, 0>(ctx, target, &inner),
        }
    }
}

/// REAL → VIP as the destination of an IPv4 check packet; the flow remembered.
#[inline(always)]
fn rewrite_dst_v4(ctx: &TcContext, target: &ProbeTarget) -> Option<Inner> {
    let [version_ihl, tos]: [u8; 2] = ctx.load(ETH_HLEN).ok()?;
    let len = u16::from_be(ctx.load::<u16>(ETH_HLEN + 2).ok()?);
    let proto: u8 = ctx.load(ETH_HLEN + 9).ok()?;
    let src: u32 = ctx.load(V4_SRC).ok()?;
    let dst: u32 = ctx.load(V4_DST).ok()?;
    let ports: u32 = ctx.load(L4_V4).ok()?;
    let (csum_at, flags) = l4_csum(proto)?;
    if version_ihl != 0x45 || dst != target.real[0] {
        return None;
    }
    let vip = target.vip[0];
    ctx.store(V4_DST, &vip, 0).ok()?;
    ctx.l3_csum_replace(V4_CHECK, u64::from(dst), u64::from(vip), 4).ok()?;
    ctx.l4_csum_replace(L4_V4 + csum_at, u64::from(dst), u64::from(vip), flags | 4).ok()?;
    let local = [src, 0, 0, 0];
    remember(&local, target, ports, proto, &local)?;
    Some(Inner {
        v6: false,
        tos,
        len: u32::from(len),
        outer_src: local,
        entropy: tun_entropy(src, vip, ports),
    })
}

/// REAL → VIP as the destination of an IPv6 check packet; the flow remembered.
#[inline(always)]
fn rewrite_dst_v6(ctx: &TcContext, target: &ProbeTarget) -> Option<Inner> {
    let vtc: u32 = u32::from_be(ctx.load(ETH_HLEN).ok()?);
    let plen = u16::from_be(ctx.load::<u16>(ETH_HLEN + 4).ok()?);
    let proto: u8 = ctx.load(ETH_HLEN + 6).ok()?;
    let src: Addr = ctx.load(V6_SRC).ok()?;
    let mut dst: Addr = ctx.load(V6_DST).ok()?;
    let ports: u32 = ctx.load(L4_V6).ok()?;
    let (csum_at, flags) = l4_csum(proto)?;
    if dst != target.real {
        return None;
    }
    let mut vip = target.vip;
    ctx.store(V6_DST, &vip, 0).ok()?;
    // SAFETY: two 16-byte arrays on this program's stack, sizes as passed.
    let diff = unsafe { bpf_csum_diff(dst.as_mut_ptr(), 16, vip.as_mut_ptr(), 16, 0) };
    ctx.l4_csum_replace(L4_V6 + csum_at, 0, diff as u64, flags).ok()?;
    remember(&src, target, ports, proto, &src)?;
    Some(Inner {
        v6: true,
        tos: (vtc >> 20) as u8,
        len: u32::from(plen) + IPV6_HLEN as u32,
        outer_src: src,
        entropy: tun_entropy(addr_fold(&src), addr_fold(&vip), ports),
    })
}

/// The flow as its replies show it (`local`, the VIP, in the VIP's family); `socket_src` the
/// check's own source (of the real's family: `local` itself unless translated). Not inlined: its
/// key and value stay off the callers' frames.
#[inline(never)]
fn remember(
    local: &Addr,
    target: &ProbeTarget,
    ports: u32,
    proto: u8,
    socket_src: &Addr,
) -> Option<()> {
    let family = target.family;
    let key = ProbeFlowKey { local: *local, vip: target.vip, ports, proto, family, _pad: 0 };
    let flow = ProbeFlow {
        real: target.real,
        local: *socket_src,
        real_family: target.real_family,
        _pad: 0,
        _pad2: 0,
    };
    FLOWS.insert(&key, &flow, 0).ok()
}

/// A check's packet [S_r → REAL] of the real's family as one of the VIP's (`TO_V6`) family
/// [`inner_src` → VIP]; the flow remembered under the translated addresses. Inlined: a struct
/// returned through the stack by a BPF-to-BPF call is read as uninitialised where the verifier
/// cannot tell which fields the callee wrote (refused without CAP_PERFMON).
#[inline(always)]
fn to_vip_family<const TO_V6: bool>(ctx: &TcContext, target: &ProbeTarget) -> Option<Inner> {
    let (socket_src, dst, ports): (Addr, Addr, u32) = if TO_V6 {
        let [s, d]: [u32; 2] = ctx.load(V4_SRC).ok()?;
        ([s, 0, 0, 0], [d, 0, 0, 0], ctx.load(L4_V4).ok()?)
    } else {
        (ctx.load(V6_SRC).ok()?, ctx.load(V6_DST).ok()?, ctx.load(L4_V6).ok()?)
    };
    if dst != target.real {
        return None;
    }
    let mut out = (0, 0, 0);
    translate::<TO_V6>(ctx, &target.inner_src, &target.vip, &mut out)?;
    let (len, tos, proto) = out;
    remember(&target.inner_src, target, ports, proto, &socket_src)?;
    let (src, vip) = (&target.inner_src, &target.vip);
    let entropy = if TO_V6 {
        tun_entropy(addr_fold(src), addr_fold(vip), ports)
    } else {
        tun_entropy(src[0], vip[0], ports)
    };
    Some(Inner { v6: TO_V6, tos, len, outer_src: socket_src, entropy })
}

/// Turns the option-less IP packet after the Ethernet header into one of the other family
/// (IPv6 when `TO_V6`) from `src` to `dst`, the TCP/UDP segment in place: `bpf_skb_change_proto`,
/// the EtherType, a new IP header (TOS, TTL and length kept; IPv4: DF, ID 0) and the L4
/// checksum moved to the new pseudo-header (the protocol and length words are the same in both:
/// only the addresses count). Writes the new packet's length, its TOS and protocol to `out` (not
/// returned: see `to_vip_family`). Everything
/// is loaded before the first change; a fragment or a UDP packet without checksum (IPv6 needs
/// one) is refused. Not inlined (its load buffers stay off the callers' frames); the addresses
/// by pointer (a BPF call takes five registers).
#[inline(never)]
fn translate<const TO_V6: bool>(
    ctx: &TcContext,
    src: &Addr,
    dst: &Addr,
    out: &mut (u32, u8, u8),
) -> Option<()> {
    let (mut old_src, mut old_dst, tos, len, ttl, proto, csum_field) = if TO_V6 {
        let [version_ihl, tos]: [u8; 2] = ctx.load(ETH_HLEN).ok()?;
        let len = u16::from_be(ctx.load::<u16>(ETH_HLEN + 2).ok()?);
        let frag = u16::from_be(ctx.load::<u16>(ETH_HLEN + 6).ok()?);
        let [ttl, proto]: [u8; 2] = ctx.load(ETH_HLEN + 8).ok()?;
        let [s, d]: [u32; 2] = ctx.load(V4_SRC).ok()?;
        // Not a fragment (MF or an offset): the L4 header must be whole and the only one.
        if version_ihl != 0x45 || frag & 0x3fff != 0 || usize::from(len) < IPV4_HLEN {
            return None;
        }
        let (csum_at, _) = l4_csum(proto)?;
        let field: u16 = ctx.load(L4_V4 + csum_at).ok()?;
        ([s, 0, 0, 0], [d, 0, 0, 0], tos, u32::from(len) - IPV4_HLEN as u32, ttl, proto, field)
    } else {
        let vtc = u32::from_be(ctx.load(ETH_HLEN).ok()?);
        let plen = u16::from_be(ctx.load::<u16>(ETH_HLEN + 4).ok()?);
        let [proto, ttl]: [u8; 2] = ctx.load(ETH_HLEN + 6).ok()?;
        let s: Addr = ctx.load(V6_SRC).ok()?;
        let d: Addr = ctx.load(V6_DST).ok()?;
        if vtc >> 28 != 6 || u32::from(plen) > u32::from(u16::MAX) - IPV4_HLEN as u32 {
            return None;
        }
        let (csum_at, _) = l4_csum(proto)?;
        let field: u16 = ctx.load(L4_V6 + csum_at).ok()?;
        (s, d, (vtc >> 20) as u8, u32::from(plen), ttl, proto, field)
    };
    let (csum_at, flags) = l4_csum(proto)?;
    if proto == IPPROTO_UDP && csum_field == 0 {
        return None;
    }
    let (old_size, new_size) = if TO_V6 { (4, 16) } else { (16, 4) };
    // SAFETY: 16-byte arrays, on this program's stack or in a map value, sizes within them;
    // the helper only reads `to`.
    let diff = unsafe {
        let seed =
            bpf_csum_diff(old_src.as_mut_ptr(), old_size, src.as_ptr().cast_mut(), new_size, 0);
        bpf_csum_diff(
            old_dst.as_mut_ptr(),
            old_size,
            dst.as_ptr().cast_mut(),
            new_size,
            seed as u32,
        )
    };
    let l4_from = if TO_V6 { L4_V4 } else { L4_V6 };
    // With the pseudo-header flag: a CHECKSUM_PARTIAL field (the pseudo-header's sum) follows,
    // and a CHECKSUM_COMPLETE sum follows the field's change, as it follows the header's below.
    ctx.l4_csum_replace(l4_from + csum_at, 0, diff as u64, flags).ok()?;
    let (ether_type, ip_hlen) = if TO_V6 { (ETH_P_IPV6, IPV6_HLEN) } else { (ETH_P_IP, IPV4_HLEN) };
    ctx.change_proto(ether_type.to_be(), 0).ok()?;
    ctx.store(12, &ether_type.to_be(), 0).ok()?;
    let recompute = u64::from(BPF_F_RECOMPUTE_CSUM);
    if TO_V6 {
        // Field by field: no 40-byte header on the stack.
        let [len_hi, len_lo] = (len as u16).to_be_bytes();
        let first: [u32; 2] = [
            ((6u32 << 28) | (u32::from(tos) << 20)).to_be(),
            u32::from_ne_bytes([len_hi, len_lo, proto, ttl]),
        ];
        ctx.store(ETH_HLEN, &first, recompute).ok()?;
        ctx.store(V6_SRC, src, recompute).ok()?;
        ctx.store(V6_DST, dst, recompute).ok()?;
    } else {
        let mut ip = Ipv4Hdr {
            version_ihl: 0x45,
            tos,
            tot_len: ((len + IPV4_HLEN as u32) as u16).to_be(),
            id: 0,
            frag_off: 0x4000u16.to_be(),
            ttl,
            protocol: proto,
            check: 0,
            saddr: src[0],
            daddr: dst[0],
        };
        ip.check = ipv4_checksum(&ip);
        ctx.store(ETH_HLEN, &ip, recompute).ok()?;
    }
    *out = (len + ip_hlen as u32, tos, proto);
    Some(())
}

#[repr(C)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    protocol: u8,
    check: u16,
    saddr: u32,
    daddr: u32,
}

#[repr(C)]
struct Ipv6Hdr {
    vtc_flow: u32,
    payload_len: u16,
    nexthdr: u8,
    hop_limit: u8,
    saddr: Addr,
    daddr: Addr,
}

/// Checksum of an option-less IPv4 header whose checksum field is 0.
#[inline(always)]
fn ipv4_checksum(ip: &Ipv4Hdr) -> u16 {
    let words = (ip as *const Ipv4Hdr).cast::<u16>();
    let mut sum = 0u32;
    let mut i = 0;
    while i < 10 {
        // SAFETY: `ip` is 20 bytes: ten u16 words.
        sum += u32::from(unsafe { words.add(i).read_unaligned() });
        i += 1;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The real's tunnel around the (rewritten) check packet: outer IPv6 when `V6`, `KIND` GUE, GRE
/// or plain IP in IP; the same header fields as the XDP program's tunnel forwarding. The frame
/// keeps its MACs: the kernel routed it to the real's address, which is the outer destination.
#[inline(always)]
fn encap<const V6: bool, const KIND: u8>(
    ctx: &TcContext,
    target: &ProbeTarget,
    inner: &Inner,
) -> Option<()> {
    let outer_family = if V6 { FAMILY_V6 } else { FAMILY_V4 };
    let overhead = tun_overhead(KIND, outer_family);
    let ip_proto = match KIND {
        TUN_GUE => IPPROTO_UDP,
        TUN_GRE => IPPROTO_GRE,
        _ if inner.v6 => IPPROTO_IPV6,
        _ => IPPROTO_IPIP,
    };
    // The outer source: the configured one, else the check's own (of the real's family).
    let src = if target.tun_src != [0; 4] { target.tun_src } else { inner.outer_src };
    let l3 = if V6 { BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 } else { BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 };
    let l4 = match KIND {
        TUN_GUE => BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
        TUN_GRE => BPF_F_ADJ_ROOM_ENCAP_L4_GRE,
        _ => 0,
    };
    ctx.adjust_room(overhead as i32, BPF_ADJ_ROOM_MAC, u64::from(l3 | l4)).ok()?;
    let outer_len = inner.len + overhead;
    let ip_hlen = if V6 { IPV6_HLEN } else { IPV4_HLEN };
    if V6 {
        let label = inner.entropy & 0x000f_ffff;
        let ip = Ipv6Hdr {
            vtc_flow: ((6u32 << 28) | (u32::from(inner.tos) << 20) | label).to_be(),
            payload_len: ((outer_len - IPV6_HLEN as u32) as u16).to_be(),
            nexthdr: ip_proto,
            hop_limit: TUN_TTL,
            saddr: src,
            daddr: target.real,
        };
        ctx.store(ETH_HLEN, &ip, 0).ok()?;
    } else {
        let mut ip = Ipv4Hdr {
            version_ihl: 0x45,
            tos: inner.tos,
            tot_len: (outer_len as u16).to_be(),
            id: 0,
            frag_off: 0x4000u16.to_be(),
            ttl: TUN_TTL,
            protocol: ip_proto,
            check: 0,
            saddr: src[0],
            daddr: target.real[0],
        };
        ip.check = ipv4_checksum(&ip);
        ctx.store(ETH_HLEN, &ip, 0).ok()?;
    }
    if inner.v6 != V6 {
        let ether_type = if V6 { ETH_P_IPV6 } else { ETH_P_IP }.to_be();
        ctx.store(12, &ether_type, 0).ok()?;
    }
    let l4_at = ETH_HLEN + ip_hlen;
    if KIND == TUN_GUE {
        let sport = ((inner.entropy as u16) | 0xc000).to_be();
        let len = ((inner.len + UDP_HLEN) as u16).to_be();
        let udp: [u16; 4] = [sport, target.tun_port_be, len, 0];
        ctx.store(l4_at, &udp, 0).ok()?;
    } else if KIND == TUN_GRE {
        let gre: [u16; 2] = [0, if inner.v6 { ETH_P_IPV6 } else { ETH_P_IP }.to_be()];
        ctx.store(l4_at, &gre, 0).ok()?;
    }
    Some(())
}

/// A reply from the VIP to a remembered probe flow: the real's address as its source.
fn ingress(ctx: &TcContext) -> Option<()> {
    match ether_type(ctx)? {
        ETH_P_IP => {
            let version_ihl: u8 = ctx.load(ETH_HLEN).ok()?;
            let proto: u8 = ctx.load(ETH_HLEN + 9).ok()?;
            if version_ihl != 0x45 {
                return None;
            }
            if proto == IPPROTO_ICMP {
                return icmp_error_v4(ctx);
            }
            let (csum_at, flags) = l4_csum(proto)?;
            let src: u32 = ctx.load(V4_SRC).ok()?;
            let dst: u32 = ctx.load(V4_DST).ok()?;
            let ports: u32 = ctx.load(L4_V4).ok()?;
            let key = ProbeFlowKey {
                local: [dst, 0, 0, 0],
                vip: [src, 0, 0, 0],
                ports: ports.rotate_left(16),
                proto,
                family: FAMILY_V4,
                _pad: 0,
            };
            // SAFETY: a plain map lookup; the value is copied out at once.
            let flow = *unsafe { FLOWS.get(&key) }?;
            if flow.real_family != FAMILY_V4 {
                return from_vip_family::<true>(ctx, &flow);
            }
            let real = flow.real[0];
            ctx.store(V4_SRC, &real, 0).ok()?;
            ctx.l3_csum_replace(V4_CHECK, u64::from(src), u64::from(real), 4).ok()?;
            ctx.l4_csum_replace(L4_V4 + csum_at, u64::from(src), u64::from(real), flags | 4).ok()
        }
        ETH_P_IPV6 => {
            let proto: u8 = ctx.load(ETH_HLEN + 6).ok()?;
            if proto == IPPROTO_ICMPV6 {
                return icmp_error_v6(ctx);
            }
            let (csum_at, flags) = l4_csum(proto)?;
            let mut src: Addr = ctx.load(V6_SRC).ok()?;
            let dst: Addr = ctx.load(V6_DST).ok()?;
            let ports: u32 = ctx.load(L4_V6).ok()?;
            let key = ProbeFlowKey {
                local: dst,
                vip: src,
                ports: ports.rotate_left(16),
                proto,
                family: FAMILY_V6,
                _pad: 0,
            };
            // SAFETY: a plain map lookup; the value is copied out at once.
            let flow = *unsafe { FLOWS.get(&key) }?;
            if flow.real_family != FAMILY_V6 {
                return from_vip_family::<false>(ctx, &flow);
            }
            let mut real = flow.real;
            ctx.store(V6_SRC, &real, 0).ok()?;
            // SAFETY: two 16-byte arrays on this program's stack, sizes as passed.
            let diff = unsafe { bpf_csum_diff(src.as_mut_ptr(), 16, real.as_mut_ptr(), 16, 0) };
            // Without the pseudo-header flag: IPv6 has no header checksum to offset the address
            // change, so with it a NIC's CHECKSUM_COMPLETE sum would be adjusted for a change the
            // header already carries ("hw csum failure"). Unflagged, the address and the checksum
            // field change by opposite amounts and the running sum stays right; a CHECKSUM_PARTIAL
            // reply is trusted by the stack as it is.
            let flags = flags & !u64::from(BPF_F_PSEUDO_HDR);
            ctx.l4_csum_replace(L4_V6 + csum_at, 0, diff as u64, flags).ok()
        }
        _ => None,
    }
}

/// A reply [VIP → inner source] of a flow translated on egress, back into the real's family
/// (IPv6 when `TO_V6`) as [REAL → the check's own source], for the check's socket.
#[inline(never)]
fn from_vip_family<const TO_V6: bool>(ctx: &TcContext, flow: &ProbeFlow) -> Option<()> {
    translate::<TO_V6>(ctx, &flow.real, &flow.local, &mut (0, 0, 0))
}

/// The quoted TCP or UDP checksum at `at` (UDP's 0: none, stays 0; TCP's when quoted at all),
/// updated for the quoted destination's change `from` → `to` (a 4-byte word, or a checksum
/// difference when `size` is 0). No pseudo-header flag: the field lies inside the ICMP message,
/// whose own checksum the caller updates by the returned (old, new) field values.
#[inline(always)]
fn quoted_l4_csum(
    ctx: &TcContext,
    proto: u8,
    at: usize,
    (from, to, size): (u64, u64, u64),
) -> Option<(u16, u16)> {
    let Some(old) = ctx.load::<u16>(at).ok() else { return Some((0, 0)) };
    let flags = match proto {
        IPPROTO_UDP if old == 0 => return Some((0, 0)),
        IPPROTO_UDP => u64::from(BPF_F_MARK_MANGLED_0),
        IPPROTO_TCP => 0,
        _ => return Some((0, 0)),
    };
    ctx.l4_csum_replace(at, from, to, size | flags).ok()?;
    Some((old, ctx.load(at).ok()?))
}

/// An ICMP error (destination unreachable, time exceeded) quoting a remembered IPv4 probe flow:
/// the real's address as the quoted destination and, when the VIP sent it, as its source, so
/// the kernel matches it to the check's socket (connected to the real). Every load comes before
/// the first store: a truncated error is left untouched.
fn icmp_error_v4(ctx: &TcContext) -> Option<()> {
    const ICMP: usize = L4_V4;
    const Q: usize = ICMP + ICMP_HLEN;
    let icmp_type: u8 = ctx.load(ICMP).ok()?;
    let q_version_ihl: u8 = ctx.load(Q).ok()?;
    if !matches!(icmp_type, 3 | 11) || q_version_ihl != 0x45 {
        return None;
    }
    let q_proto: u8 = ctx.load(Q + 9).ok()?;
    let q_src: u32 = ctx.load(Q + 12).ok()?;
    let q_dst: u32 = ctx.load(Q + 16).ok()?;
    // The first 8 bytes of the quoted UDP header (ports and checksum) or TCP's ports.
    let ports: u32 = ctx.load(Q + IPV4_HLEN).ok()?;
    let l4_csum_at = Q + IPV4_HLEN + if q_proto == IPPROTO_TCP { TCP_CSUM } else { UDP_CSUM };
    // UDP's is within the 8 bytes every error quotes; TCP's only in a longer quote.
    if q_proto == IPPROTO_UDP {
        ctx.load::<u16>(l4_csum_at).ok()?;
    }
    let src: u32 = ctx.load(V4_SRC).ok()?;
    let key = ProbeFlowKey {
        local: [q_src, 0, 0, 0],
        vip: [q_dst, 0, 0, 0],
        ports,
        proto: q_proto,
        family: FAMILY_V4,
        _pad: 0,
    };
    // SAFETY: a plain map lookup; the value is copied out at once.
    let flow = *unsafe { FLOWS.get(&key) }?;
    // An error about a translated flow would need ICMP → ICMPv6 (not done): left as it is.
    if flow.real_family != FAMILY_V4 {
        return None;
    }
    let real = flow.real[0];
    // The quoted header's checksum follows its destination: its words still sum to zero, so the
    // ICMP checksum is unchanged by both.
    ctx.store(Q + 16, &real, 0).ok()?;
    ctx.l3_csum_replace(Q + 10, u64::from(q_dst), u64::from(real), 4).ok()?;
    let change = (u64::from(q_dst), u64::from(real), 4);
    let (old, new) = quoted_l4_csum(ctx, q_proto, l4_csum_at, change)?;
    if old != new {
        ctx.l4_csum_replace(ICMP + ICMP_CSUM, u64::from(old), u64::from(new), 2).ok()?;
    }
    // The ICMP checksum does not cover the outer header.
    if src == q_dst {
        ctx.store(V4_SRC, &real, 0).ok()?;
        ctx.l3_csum_replace(V4_CHECK, u64::from(src), u64::from(real), 4).ok()?;
    }
    Some(())
}

/// The same for an ICMPv6 error (destination unreachable, packet too big, time exceeded) quoting
/// a remembered IPv6 probe flow. The ICMPv6 checksum covers the quoted destination, the quoted
/// TCP/UDP checksum and, by its pseudo-header, the outer source. No pseudo-header flag on its
/// updates: with them the packet's bytes (IPv6 header included) sum as before, so a receive
/// checksum (CHECKSUM_COMPLETE, which IPv6 pulls the header from later) stays right untouched.
/// ICMP errors are built with full checksums, never left to the NIC (CHECKSUM_PARTIAL).
fn icmp_error_v6(ctx: &TcContext) -> Option<()> {
    const ICMP: usize = L4_V6;
    const Q: usize = ICMP + ICMP_HLEN;
    let icmp_type: u8 = ctx.load(ICMP).ok()?;
    let q_version: u8 = ctx.load(Q).ok()?;
    if !matches!(icmp_type, 1..=3) || q_version >> 4 != 6 {
        return None;
    }
    let q_proto: u8 = ctx.load(Q + 6).ok()?;
    let q_src: Addr = ctx.load(Q + 8).ok()?;
    let mut q_dst: Addr = ctx.load(Q + 24).ok()?;
    let ports: u32 = ctx.load(Q + IPV6_HLEN).ok()?;
    let l4_csum_at = Q + IPV6_HLEN + if q_proto == IPPROTO_TCP { TCP_CSUM } else { UDP_CSUM };
    if q_proto == IPPROTO_UDP {
        ctx.load::<u16>(l4_csum_at).ok()?;
    }
    let src: Addr = ctx.load(V6_SRC).ok()?;
    let key = ProbeFlowKey {
        local: q_src,
        vip: q_dst,
        ports,
        proto: q_proto,
        family: FAMILY_V6,
        _pad: 0,
    };
    // SAFETY: a plain map lookup; the value is copied out at once.
    let flow = *unsafe { FLOWS.get(&key) }?;
    if flow.real_family != FAMILY_V6 {
        return None;
    }
    let mut real = flow.real;
    // SAFETY: two 16-byte arrays on this program's stack, sizes as passed.
    let diff = unsafe { bpf_csum_diff(q_dst.as_mut_ptr(), 16, real.as_mut_ptr(), 16, 0) } as u64;
    ctx.store(Q + 24, &real, 0).ok()?;
    ctx.l4_csum_replace(ICMP + ICMP_CSUM, 0, diff, 0).ok()?;
    let (old, new) = quoted_l4_csum(ctx, q_proto, l4_csum_at, (0, diff, 0))?;
    if old != new {
        ctx.l4_csum_replace(ICMP + ICMP_CSUM, u64::from(old), u64::from(new), 2).ok()?;
    }
    if src == q_dst {
        ctx.store(V6_SRC, &real, 0).ok()?;
        ctx.l4_csum_replace(ICMP + ICMP_CSUM, 0, diff, 0).ok()?;
    }
    Some(())
}
