//! Classifies a frame by its Ethernet and IP headers and hands it to its handler: `forward`
//! (TCP/UDP and fragments) or `icmp`; everything else is passed to the kernel.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    Addr, FAMILY_V4, FAMILY_V6, IPPROTO_FRAGMENT, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
    IPPROTO_UDP, reason,
};

use crate::{
    forward::{later_fragment, service},
    icmp,
    lookup::vip,
    parse::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, EthHdr, FragHdr, Ipv4Hdr,
        Ipv6Hdr, L4_V4, L4_V6, L4_V6_FRAG, ptr_at,
    },
    verdict::{Verdict, pass},
};

/// Classifies and, for service traffic, forwards one frame.
#[inline(always)]
pub fn process(ctx: &XdpContext) -> Verdict {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return pass(reason::PASS_MALFORMED);
    };
    // SAFETY: `ptr_at` checked the header is inside the frame.
    match u16::from_be(unsafe { (*eth).ether_type }) {
        ETH_P_IP => process_v4(ctx, eth),
        ETH_P_IPV6 => process_v6(ctx, eth),
        // A VIP on a VLAN is served by the program attached to the VLAN device, which sees the
        // frame untagged; a tagged frame here would leave with its tag (or without it).
        ETH_P_8021Q | ETH_P_8021AD => pass(reason::PASS_VLAN),
        // ARP, LLDP...: the kernel's business.
        _ => pass(reason::PASS_NOT_IP),
    }
}

#[inline(always)]
fn process_v4(ctx: &XdpContext, eth: *mut EthHdr) -> Verdict {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
        return pass(reason::PASS_MALFORMED);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let (version_ihl, tot_len, proto, frag_off, id, saddr, daddr) = unsafe {
        (
            (*ip).version_ihl,
            usize::from(u16::from_be((*ip).tot_len)),
            (*ip).protocol,
            u16::from_be((*ip).frag_off),
            (*ip).id,
            (*ip).saddr,
            (*ip).daddr,
        )
    };
    if version_ihl >> 4 != 4 || version_ihl & 0x0f < 5 {
        return pass(reason::PASS_MALFORMED);
    }
    if tot_len < usize::from(version_ihl & 0x0f) * 4 {
        return pass(reason::PASS_MALFORMED);
    }
    // Where the IP packet ends: checked against the frame's length before acting (`admit`).
    let ip_end = ETH_HLEN + tot_len;
    let src: Addr = [saddr, 0, 0, 0];
    let dst: Addr = [daddr, 0, 0, 0];
    if version_ihl & 0x0f != 5 {
        // IPv4 options: handed to the kernel (a variable L4 offset would also make the program
        // unverifiable without CAP_PERFMON). Rare in practice.
        return not_handled(&dst, FAMILY_V4);
    }
    let more = frag_off & 0x2000 != 0;
    let offset = frag_off & 0x1fff;
    if offset != 0 {
        return later_fragment(ctx, eth, src, dst, u32::from(id), proto, FAMILY_V4, ip_end, L4_V4);
    }
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let frag_id = more.then_some(u32::from(id));
            service::<L4_V4>(ctx, eth, src, dst, proto, FAMILY_V4, frag_id, ip_end)
        }
        IPPROTO_ICMP if !more => icmp::v4(ctx, eth, ip, dst, ip_end),
        _ => pass(reason::PASS_NOT_SERVICE),
    }
}

#[inline(always)]
fn process_v6(ctx: &XdpContext, eth: *mut EthHdr) -> Verdict {
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN) else {
        return pass(reason::PASS_MALFORMED);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let (vtc, payload_len, nexthdr, src, dst) = unsafe {
        (
            (*ip).vtc_flow,
            usize::from(u16::from_be((*ip).payload_len)),
            (*ip).nexthdr,
            (*ip).saddr,
            (*ip).daddr,
        )
    };
    // The version is the top nibble of the first byte on the wire.
    if vtc.to_ne_bytes()[0] >> 4 != 6 {
        return pass(reason::PASS_MALFORMED);
    }
    let ip_end = L4_V6 + payload_len;
    match nexthdr {
        IPPROTO_TCP | IPPROTO_UDP => {
            service::<L4_V6>(ctx, eth, src, dst, nexthdr, FAMILY_V6, None, ip_end)
        }
        IPPROTO_ICMPV6 => icmp::v6(ctx, eth, ip, dst, ip_end),
        IPPROTO_FRAGMENT => {
            let Some(fh) = ptr_at::<FragHdr>(ctx, L4_V6) else {
                return pass(reason::PASS_MALFORMED);
            };
            // SAFETY: bounds checked by `ptr_at`.
            let (inner, frag_off, id) =
                unsafe { ((*fh).nexthdr, u16::from_be((*fh).frag_off), (*fh).id) };
            if frag_off & 0xfff8 != 0 {
                return later_fragment(
                    ctx, eth, src, dst, id, inner, FAMILY_V6, ip_end, L4_V6_FRAG,
                );
            }
            if inner != IPPROTO_TCP && inner != IPPROTO_UDP {
                return not_handled(&dst, FAMILY_V6);
            }
            service::<L4_V6_FRAG>(ctx, eth, src, dst, inner, FAMILY_V6, Some(id), ip_end)
        }
        // Hop-by-hop, routing, destination options...: the kernel handles them.
        _ => not_handled(&dst, FAMILY_V6),
    }
}

/// A form this path hands to the kernel: counted as unsupported when it was for a VIP.
#[inline(always)]
fn not_handled(dst: &Addr, family: u8) -> Verdict {
    if vip(dst, family).is_some() {
        pass(reason::PASS_UNSUPPORTED)
    } else {
        pass(reason::PASS_NOT_SERVICE)
    }
}
