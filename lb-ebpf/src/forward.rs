//! Forwarding decisions: is this frame service traffic, which real takes it (flow table,
//! persistence, Maglev, sorry server) and the DR rewrite (destination MAC = real, source MAC =
//! the outgoing interface; the IP packet is untouched so the real, holding the VIP on its loopback,
//! answers the client directly).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{
    Addr, CFG_F_NO_ALL_PORTS, FAMILY_V4, FAMILY_V6, FlowKey, FragKey, IPPROTO_FRAGMENT,
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, LocalMacKey, PersistKey, REAL_F_UP,
    RING_NONE, RealValue, SVC_F_SRC_HASH, ServiceValue, TUN_NONE, VipValue, event, flow_hash,
    reason,
};

use crate::{
    icmp, keys,
    maps::{
        CONFIG, FLOWS, FRAGS, LOCAL_MACS, PERSIST, REALS, RINGS, SERVICES, SYN_GUARD, TX_PORTS,
        VIPS,
    },
    parse::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, EthHdr, FragHdr, Ipv4Hdr,
        Ipv6Hdr, L4_V4, L4_V6, L4_V6_FRAG, TCP_HLEN, UDP_HLEN, frame_len, has_bytes, now_secs,
        ptr_at,
    },
    stats, tunnel,
};

/// What to do with a frame and why (the reason indexes the global counters).
pub struct Verdict {
    pub action: u32,
    pub reason: u32,
    /// The frame's length when the path already asked for it (a helper call), else 0.
    pub len: usize,
}

#[inline(always)]
pub const fn pass(reason: u32) -> Verdict {
    Verdict { action: xdp_action::XDP_PASS, reason, len: 0 }
}

#[inline(always)]
pub const fn drop(reason: u32) -> Verdict {
    Verdict { action: xdp_action::XDP_DROP, reason, len: 0 }
}

const TCP_FLAG_RST: u8 = 0x04;

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
            let frag = more.then(|| keys::frag(&src, &dst, u32::from(id), proto, FAMILY_V4));
            service::<L4_V4>(ctx, eth, src, dst, proto, FAMILY_V4, frag, ip_end)
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
            let frag = keys::frag(&src, &dst, id, inner, FAMILY_V6);
            service::<L4_V6_FRAG>(ctx, eth, src, dst, inner, FAMILY_V6, Some(frag), ip_end)
        }
        // Hop-by-hop, routing, destination options...: the kernel handles them.
        _ => not_handled(&dst, FAMILY_V6),
    }
}

/// The checks before the program acts on a frame (forwards or answers it): it must be addressed
/// to the ingress interface's own MAC, and its IP packet (ending at `ip_end`) must lie inside the
/// frame and hold the `need` bytes from the frame's start the path reads. Frames to other MACs are
/// the kernel's (a bridge floods them to every director); inconsistent ones are dropped. Returns
/// the frame's length.
#[inline(always)]
pub fn admit(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip_end: usize,
    need: usize,
) -> Result<usize, Verdict> {
    // SAFETY: the caller bounds-checked the Ethernet header; word reads, no byte copy.
    let (hi, lo) = unsafe {
        let p = eth as *const u8;
        ((p as *const u32).read_unaligned(), (p.add(4) as *const u16).read_unaligned())
    };
    // The group bit is the lowest bit of the first byte on the wire.
    if hi.to_ne_bytes()[0] & 1 != 0 {
        return Err(pass(if hi == u32::MAX && lo == u16::MAX {
            reason::PASS_MAC_BROADCAST
        } else {
            reason::PASS_MAC_MULTICAST
        }));
    }
    let key =
        LocalMacKey { ifindex: ctx.ingress_ifindex() as u32, mac_hi: hi, mac_lo: lo, _pad: 0 };
    // SAFETY: read-only lookup.
    if unsafe { LOCAL_MACS.get(&key) }.is_none() {
        return Err(pass(reason::PASS_MAC_OTHER_HOST));
    }
    let len = frame_len(ctx);
    if ip_end > len || ip_end < need {
        return Err(Verdict { len, ..drop(reason::DROP_MALFORMED) });
    }
    Ok(len)
}

/// Looks `addr` up among the VIPs.
#[inline(always)]
pub fn vip(addr: &Addr, family: u8) -> Option<&'static VipValue> {
    // SAFETY: read-only use of a value the agent replaces whole.
    unsafe { VIPS.get(&keys::vip(addr, family)) }
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

/// Exact-port service, else the VIP's all-ports service (looked up only while the agent has not
/// said that there is none: most frames that miss are not for a VIP at all).
#[inline(always)]
pub fn lookup_service(
    dst: &Addr,
    port_be: u16,
    proto: u8,
    family: u8,
) -> Option<&'static ServiceValue> {
    // SAFETY: read-only use of values the agent replaces whole.
    unsafe {
        match SERVICES.get(&keys::service(dst, port_be, proto, family)) {
            Some(s) => Some(s),
            None if CONFIG.get(0).is_some_and(|c| c.flags & CFG_F_NO_ALL_PORTS != 0) => None,
            None => SERVICES.get(&keys::service(dst, 0, proto, family)),
        }
    }
}

/// TCP or UDP to a possible service, transport header at the constant offset `L4`.
#[inline(always)]
fn service<const L4: usize>(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    src: Addr,
    dst: Addr,
    proto: u8,
    family: u8,
    frag: Option<FragKey>,
    ip_end: usize,
) -> Verdict {
    let Some(ports) = ptr_at::<u32>(ctx, L4) else {
        return pass(reason::PASS_MALFORMED);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let ports = unsafe { ports.read_unaligned() };
    // Destination port: the second 16-bit field on the wire.
    let Some(svc) = lookup_service(&dst, (ports >> 16) as u16, proto, family) else {
        return pass(reason::PASS_NOT_SERVICE);
    };

    let need = L4 + if proto == IPPROTO_TCP { TCP_HLEN } else { UDP_HLEN };
    let len = match admit(ctx, eth, ip_end, need) {
        Ok(len) => len,
        Err(v) => return v,
    };
    // From here on the frame is service traffic: it is forwarded or dropped, never passed up.
    // Two constant-size checks, not one with a selected length: a pointer added to a selected
    // scalar is rejected by the verifier for agents without CAP_PERFMON.
    let tcp_flags = if proto == IPPROTO_TCP {
        match ptr_at::<[u8; TCP_HLEN]>(ctx, L4) {
            // SAFETY: bounds checked by `ptr_at`; byte 13 holds the TCP flags.
            Some(h) => unsafe { (*h)[13] },
            None => return drop(reason::DROP_MALFORMED),
        }
    } else {
        if !has_bytes::<UDP_HLEN>(ctx, L4) {
            return drop(reason::DROP_MALFORMED);
        }
        0
    };
    let flow = keys::flow(&src, &dst, ports, proto, family);
    let Some((real_id, real, new_flow)) = choose(svc, &flow, tcp_flags) else {
        stats::count_service(svc.id, len, false);
        return Verdict { len, ..drop(reason::DROP_NO_REAL) };
    };
    stats::count_service(svc.id, len, new_flow);
    if let Some(key) = frag {
        let b = keys::binding(real_id, real.generation, now_secs());
        let _ = FRAGS.insert(&key, &b, 0);
        stats::event(event::FRAG_TRACKED);
    }
    send(ctx, eth, real_id, real, len, new_flow, reason::TX)
}

/// A non-first fragment: it carries no ports, so it follows its datagram's first fragment.
#[inline(always)]
fn later_fragment(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    src: Addr,
    dst: Addr,
    id: u32,
    proto: u8,
    family: u8,
    ip_end: usize,
    need: usize,
) -> Verdict {
    if vip(&dst, family).is_none() {
        return pass(reason::PASS_NOT_SERVICE);
    }
    let len = match admit(ctx, eth, ip_end, need) {
        Ok(len) => len,
        Err(v) => return v,
    };
    let key = keys::frag(&src, &dst, id, proto, family);
    // SAFETY: read-only use; the entry is replaced whole by a first fragment.
    let Some(b) = (unsafe { FRAGS.get(&key) }) else {
        return Verdict { len, ..drop(reason::DROP_FRAG_UNKNOWN) };
    };
    let Some(real) = usable_real(b.real, b.generation) else {
        return Verdict { len, ..drop(reason::DROP_FRAG_UNKNOWN) };
    };
    stats::event(event::FRAG_HIT);
    send(ctx, eth, b.real, real, len, false, reason::TX)
}

/// The real `id` when it may receive packets and still is the real `generation` named.
#[inline(always)]
pub fn usable_real(id: u32, generation: u32) -> Option<&'static RealValue> {
    let real = REALS.get(id)?;
    (real.flags & REAL_F_UP != 0 && real.generation == generation).then_some(real)
}

/// The real for a frame of `flow`: its established binding if still valid, else a new pick that
/// is remembered (unless it is a RST or the SYN-flood guard says no). Returns (id, real, new flow).
///
/// SYNs are looked up too (Katran skips the lookup for them): a retransmitted SYN then follows
/// its entry, and the lookup's miss brings the flow's bucket into cache with a plain load, which
/// overlaps other misses. Without it the insert's bucket lock takes that miss alone: new flows on
/// cold memory measured ~90 ns slower (BENCHMARKS.md).
#[inline(always)]
fn choose(
    svc: &ServiceValue,
    flow: &FlowKey,
    tcp_flags: u8,
) -> Option<(u32, &'static RealValue, bool)> {
    let cfg = CONFIG.get(0)?;
    if let Some(b) = FLOWS.get_ptr_mut(flow) {
        // SAFETY: LRU map value; a concurrent update of atime by another CPU is harmless.
        let (real_id, generation, atime) = unsafe { ((*b).real, (*b).generation, (*b).atime) };
        match usable_real(real_id, generation) {
            Some(real) => {
                let now = now_secs();
                if flow.proto == IPPROTO_UDP && now.wrapping_sub(atime) > cfg.udp_timeout {
                    stats::event(event::FLOW_EXPIRED);
                } else {
                    if atime != now {
                        // SAFETY: as above.
                        unsafe { (*b).atime = now };
                        if svc.persist_timeout != 0 {
                            touch_persist(svc, flow, now);
                        }
                    }
                    stats::event(event::FLOW_HIT);
                    return Some((real_id, real, false));
                }
            }
            None => stats::event(event::FLOW_REPICK),
        }
    }
    let now = now_secs();
    let (real_id, real) = pick_new(svc, flow, cfg.hash_seed, now)?;
    if tcp_flags & TCP_FLAG_RST != 0 {
        stats::event(event::FLOW_RST_UNTRACKED);
    } else if guard_allows(cfg.syn_threshold, now) {
        let b = keys::binding(real_id, real.generation, now);
        let _ = FLOWS.insert(flow, &b, 0);
    } else {
        stats::event(event::FLOW_GUARD_SKIP);
    }
    stats::event(event::FLOW_NEW);
    Some((real_id, real, true))
}

/// True while this CPU's new flows in the current second stay under `threshold` (0 = no limit).
#[inline(always)]
fn guard_allows(threshold: u32, now: u32) -> bool {
    if threshold == 0 {
        return true;
    }
    let Some(g) = SYN_GUARD.get_ptr_mut(0) else { return true };
    // SAFETY: per-CPU value.
    unsafe {
        if (*g).second != u64::from(now) {
            (*g).second = u64::from(now);
            (*g).new_flows = 0;
        }
        (*g).new_flows += 1;
        (*g).new_flows <= u64::from(threshold)
    }
}

#[inline(always)]
fn masked(src: &Addr, mask: &Addr) -> Addr {
    [src[0] & mask[0], src[1] & mask[1], src[2] & mask[2], src[3] & mask[3]]
}

#[inline(always)]
fn persist_key(svc: &ServiceValue, flow: &FlowKey) -> PersistKey {
    keys::persist(svc.id, flow.family, &masked(&flow.src, &svc.persist_mask))
}

/// Keeps a persistent client's entry alive while its connections carry traffic.
#[inline(always)]
fn touch_persist(svc: &ServiceValue, flow: &FlowKey, now: u32) {
    if let Some(b) = PERSIST.get_ptr_mut(&persist_key(svc, flow)) {
        // SAFETY: LRU map value, plain store.
        unsafe { (*b).atime = now };
    }
}

/// A real for a new flow: the client's persistence entry, else the Maglev table, else the sorry
/// server when no real takes new flows.
#[inline(always)]
pub fn pick_new(
    svc: &ServiceValue,
    flow: &FlowKey,
    seed: u32,
    now: u32,
) -> Option<(u32, &'static RealValue)> {
    if svc.ring_size == 0 {
        let real = usable_real_any(svc.sorry_real)?;
        stats::event(event::SORRY);
        return Some((svc.sorry_real, real));
    }
    if svc.persist_timeout != 0 {
        let key = persist_key(svc, flow);
        if let Some(b) = PERSIST.get_ptr_mut(&key) {
            // SAFETY: LRU map value.
            let (id, generation, atime) = unsafe { ((*b).real, (*b).generation, (*b).atime) };
            if now.wrapping_sub(atime) <= svc.persist_timeout
                && let Some(real) = usable_real(id, generation)
            {
                // SAFETY: as above.
                unsafe { (*b).atime = now };
                stats::event(event::PERSIST_HIT);
                return Some((id, real));
            }
        }
        let (id, real) = ring_pick(svc, flow_hash(&key.src, &[0; 4], 0, flow.proto, seed))?;
        let b = keys::binding(id, real.generation, now);
        let _ = PERSIST.insert(&key, &b, 0);
        return Some((id, real));
    }
    let hash = if svc.flags & SVC_F_SRC_HASH != 0 {
        flow_hash(&masked(&flow.src, &svc.persist_mask), &[0; 4], 0, flow.proto, seed)
    } else {
        flow_hash(&flow.src, &flow.dst, flow.ports, flow.proto, seed)
    };
    ring_pick(svc, hash)
}

/// The real id `id` when it may receive packets, whatever its generation.
#[inline(always)]
fn usable_real_any(id: u32) -> Option<&'static RealValue> {
    if id == RING_NONE {
        return None;
    }
    let real = REALS.get(id)?;
    (real.flags & REAL_F_UP != 0).then_some(real)
}

/// The real in the service's Maglev slot for `hash`.
#[inline(always)]
fn ring_pick(svc: &ServiceValue, hash: u32) -> Option<(u32, &'static RealValue)> {
    let slot = hash.checked_rem(svc.ring_size)?;
    let id = *RINGS.get(svc.ring_offset.wrapping_add(slot))?;
    Some((id, usable_real_any(id)?))
}

/// The DR rewrite and the way out: XDP_TX on the ingress interface, else a redirect.
#[inline(always)]
pub fn send(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    real_id: u32,
    real: &RealValue,
    len: usize,
    new_flow: bool,
    tx_reason: u32,
) -> Verdict {
    if real.tun != TUN_NONE {
        return tunnel::send(ctx, real_id, real, len, new_flow, tx_reason);
    }
    let out = real.ifindex;
    if out == 0 {
        return pass(reason::PASS_NO_IFACE);
    }
    // SAFETY: the Ethernet header was bounds-checked by the caller's parse; byte copies avoid a
    // memmove call the verifier would reject.
    unsafe {
        core::ptr::copy_nonoverlapping(real.mac.as_ptr(), (*eth).dst.as_mut_ptr(), 6);
        core::ptr::copy_nonoverlapping(real.src_mac.as_ptr(), (*eth).src.as_mut_ptr(), 6);
    }
    stats::count_real(real_id, len, new_flow);
    if out == ctx.ingress_ifindex() as u32 {
        return Verdict { action: xdp_action::XDP_TX, reason: tx_reason, len };
    }
    match TX_PORTS.redirect(out, 0) {
        Ok(action) => Verdict { action, reason: reason::REDIRECT, len },
        Err(_) => Verdict { len, ..drop(reason::DROP_TX_ERROR) },
    }
}
