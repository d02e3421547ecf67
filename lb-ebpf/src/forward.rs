//! TCP/UDP service traffic and later fragments: which real takes the frame (flow table, else a
//! new pick from `lookup`), then the DR rewrite (`verdict::send`).

use aya_ebpf::programs::XdpContext;
use lb_common::{
    Addr, CFG_F_FLOW_SYNC, CFG_F_NO_FLOW_FILTER, CFG_F_NO_FLOW_STAMP, CFG_F_WINDOW_COVERS_TCP,
    CFG_F_WINDOW_COVERS_UDP, FlowKey, FlowReport, IPPROTO_TCP, RealValue, SVC_F_SRC_HASH,
    ServiceValue, event, flow_recent_clear, flow_recent_slot, reason,
};

use crate::{
    index, keys,
    lookup::{lookup_service, pick_new, touch_persist, usable_real, vip, window_picks},
    maps::{CONFIG, FLOW_RECENT, FLOWS, FRAGS, NEW_FLOWS, SYN_GUARD},
    parse::{EthHdr, TCP_HLEN, UDP_HLEN, has_bytes, now_secs, ptr_at},
    stats,
    verdict::{Verdict, admit, drop, pass, send},
};

const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_RST: u8 = 0x04;
const TCP_FLAG_ACK: u8 = 0x10;

/// TCP or UDP to a possible service, transport header at the constant offset `L4`.
#[inline(always)]
pub fn service<const L4: usize>(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    src: Addr,
    dst: Addr,
    proto: u8,
    family: u8,
    frag_id: Option<u32>,
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
    let mut buf = keys::Buf::new();
    let flow = keys::flow(&mut buf, &src, &dst, ports, proto, family);
    let Some((real_id, real, new_flow)) = choose(svc, flow, tcp_flags) else {
        stats::count_service(svc.id, len, false);
        return Verdict { len, ..drop(reason::DROP_NO_REAL) };
    };
    stats::count_service(svc.id, len, new_flow);
    // The first fragment of a datagram: its later fragments follow it.
    if let Some(id) = frag_id {
        let (mut kb, mut vb) = (keys::Buf::new(), keys::Buf::new());
        let key = keys::frag(&mut kb, &src, &dst, id, proto, family);
        let b = keys::binding(&mut vb, real_id, real.generation, now_secs());
        let _ = FRAGS.insert(key, b, 0);
        stats::event::<{ event::FRAG_TRACKED as usize }>();
    }
    send(ctx, eth, real_id, real, len, new_flow, reason::TX)
}

/// A non-first fragment: it carries no ports, so it follows its datagram's first fragment.
#[inline(always)]
pub fn later_fragment(
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
    let mut buf = keys::Buf::new();
    let key = keys::frag(&mut buf, &src, &dst, id, proto, family);
    // SAFETY: read-only use; the entry is replaced whole by a first fragment.
    let Some(b) = (unsafe { FRAGS.get(key) }) else {
        return Verdict { len, ..drop(reason::DROP_FRAG_UNKNOWN) };
    };
    let Some(real) = usable_real(b.real, b.generation) else {
        return Verdict { len, ..drop(reason::DROP_FRAG_UNKNOWN) };
    };
    stats::event::<{ event::FRAG_HIT as usize }>();
    send(ctx, eth, b.real, real, len, false, reason::TX)
}

/// The real for a frame of `flow`: its established binding if still valid, else a new pick that
/// is remembered (unless it is a RST or the SYN-flood guard says no). Returns (id, real, new flow).
///
/// TCP or UDP to a plain Maglev service (no persistence, no source hashing) without an entry
/// follows docs/fast-path.md: outside its service's table-change window the table alone decides
/// (no map write: every director and every later packet derive the same real); inside one a SYN
/// takes the active table's real and a later TCP segment or any UDP datagram (UDP has no SYN: it
/// may continue a flow) the anchor table's, the one it started under, and the flow is
/// remembered only where the two tables name different reals.
///
/// The lookup itself is skipped when the "recent entry" filter proves that the flow has no
/// entry to follow (docs/fast-path.md); an entry idle past its protocol's timeout is not
/// followed (the flow is one without an entry).
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
    let cfg = index::first(&CONFIG)?;
    let now = now_secs();
    let tcp = flow.proto == IPPROTO_TCP;
    // A plain Maglev service: the table alone may decide a flow without an entry.
    let plain = svc.persist_timeout == 0 && svc.flags & SVC_F_SRC_HASH == 0;
    // Both loaded: a pointer selected between two fields is rejected by the verifier for
    // agents without CAP_PERFMON.
    // SAFETY: plain loads of fields of the config value.
    let (tcp_timeout, udp_timeout) = unsafe {
        (core::ptr::read_volatile(&cfg.tcp_timeout), core::ptr::read_volatile(&cfg.udp_timeout))
    };
    // The flow's entry timeout: an entry idle longer is not followed.
    let timeout = if tcp { tcp_timeout } else { udp_timeout };
    let mut had_entry = false;
    // A window after a change that outlasts the entry timeout (docs/fast-path.md): a flow whose
    // anchor and active tables agree gets no entry there (the rule below).
    let covers = if tcp { CFG_F_WINDOW_COVERS_TCP } else { CFG_F_WINDOW_COVERS_UDP };
    let lean = svc.anchor_offset != svc.ring_offset && cfg.flags & covers != 0;
    // A filter slot older than the entry timeout proves that the flow has no entry to follow:
    // the cold flow-table lookup is skipped, outside a window and inside a lean one (where most
    // flows are not inserted). In other windows every flow is inserted, and the lookup is done:
    // its plain-load miss, overlapped with the slot's, brings the bucket into cache before the
    // insert locks it (skipped, a new flow measured ~100 ns dearer, BENCHMARKS.md). A SYN of a
    // persistent or source-hashed service reads its slot too, never skipping (timeout 0), and
    // the stamp before the insert finds the line in cache. The benchmark's control without
    // stamps never skips (unstamped slots prove nothing).
    let may_skip = plain
        && svc.ring_size != 0
        && (now > svc.window_end || lean)
        && cfg.flags & (CFG_F_NO_FLOW_FILTER | CFG_F_NO_FLOW_STAMP) == 0;
    let skip = (may_skip
        || tcp && tcp_flags & TCP_FLAG_SYN != 0 && cfg.flags & CFG_F_NO_FLOW_STAMP == 0)
        && no_live_entry(flow, now, if may_skip { timeout } else { 0 });
    if !skip && let Some(b) = FLOWS.get_ptr_mut(flow) {
        had_entry = true;
        // SAFETY: LRU map value; a concurrent update of atime by another CPU is harmless.
        let (real_id, generation, atime) = unsafe { ((*b).real, (*b).generation, (*b).atime) };
        match usable_real(real_id, generation) {
            Some(real) => {
                // Signed: an atime another CPU wrote a moment "ahead" is not ancient. A TCP
                // timeout of 0 never expires.
                let expired =
                    (timeout != 0 || !tcp) && now.wrapping_sub(atime) as i32 > timeout as i32;
                if expired {
                    stats::event::<{ event::FLOW_EXPIRED as usize }>();
                    // A flow idle that long is one without an entry (docs/fast-path.md).
                    had_entry = false;
                } else {
                    if atime != now {
                        // SAFETY: as above.
                        unsafe { (*b).atime = now };
                        mark_recent(flow, now);
                        if svc.persist_timeout != 0 {
                            touch_persist(svc, flow, now);
                        }
                    }
                    stats::event::<{ event::FLOW_HIT as usize }>();
                    return Some((real_id, real, false));
                }
            }
            None => stats::event::<{ event::FLOW_REPICK as usize }>(),
        }
    }
    // Without an entry (a RST never creates one, a stale entry is replaced as before).
    let mut stateless = false;
    let mut anchored = None;
    let mut picked = None;
    if !had_entry && plain && tcp_flags & TCP_FLAG_RST == 0 {
        if now > svc.window_end {
            stateless = svc.ring_size != 0;
        } else if svc.anchor_size != 0 {
            // Inside a window a packet without an entry goes where the anchor table sends it
            // (a SYN: the active table). After a change (the anchor is another table), where
            // both tables name the same real and the window outlasts the entry timeout, the
            // flow needs no entry: every later packet gets that real while an entry would have
            // been followed (a later change inside the window keeps the anchor and extends the
            // window, and the flow's next packet decides again). In the window of a service
            // going live (the anchor is the active table) every flow is remembered: its
            // entries are what flow sync shares with a peer whose table may differ.
            let syn = tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN;
            let (anchor, active) = window_picks(svc, flow, cfg.hash_seed);
            picked = active;
            match (anchor, active) {
                (Some((a, _)), Some((b, _))) if lean && a == b => stateless = true,
                // Started before the window under the anchor table (any UDP datagram may
                // have): it keeps that real while the real may take packets (a drained one
                // still does), and gets its entry now.
                (Some(_), _) if !syn => {
                    anchored = anchor;
                    stats::event::<{ event::FLOW_WINDOW_ANCHOR as usize }>();
                }
                (None, _) if !syn => stats::event::<{ event::FLOW_REPICK as usize }>(),
                _ => {}
            }
        }
    }
    // A UDP flow counts as new when it gets an entry (it cannot be told from a continuing
    // one); a TCP flow when it is not anchored.
    let new_flow = anchored.is_none() || !tcp;
    let (real_id, real) = match anchored.or(picked) {
        Some(p) => p,
        None => pick_new(svc, flow, cfg.hash_seed, now)?,
    };
    if stateless {
        // The table alone decides: no map write. A UDP datagram is counted
        // as a packet without an entry, never as a new flow (nothing tells a new one).
        if tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN {
            stats::event::<{ event::FLOW_NEW_STATELESS as usize }>();
            stats::event::<{ event::FLOW_NEW as usize }>();
            return Some((real_id, real, true));
        }
        stats::event::<{ event::FLOW_STATELESS_HIT as usize }>();
        return Some((real_id, real, false));
    }
    if tcp_flags & TCP_FLAG_RST != 0 {
        stats::event::<{ event::FLOW_RST_UNTRACKED as usize }>();
    } else if guard_allows(cfg.syn_threshold, now) {
        // The filter first: from the insert on, the entry may be followed on another CPU.
        if cfg.flags & CFG_F_NO_FLOW_STAMP == 0 {
            mark_recent(flow, now);
        }
        let mut vb = keys::Buf::new();
        let b = keys::binding(&mut vb, real_id, real.generation, now);
        let _ = FLOWS.insert(flow, b, 0);
        if cfg.flags & CFG_F_FLOW_SYNC != 0 {
            report_new_flow(flow, real_id, real.generation);
        }
    } else {
        stats::event::<{ event::FLOW_GUARD_SKIP as usize }>();
    }
    if new_flow {
        stats::event::<{ event::FLOW_NEW as usize }>();
    }
    Some((real_id, real, new_flow))
}

/// True when the "recent entry" filter proves that `flow` has no entry the program may follow
/// (counted): its slot is older than the flow's entry timeout `timeout`. Not inlined: the
/// program is at the verifier's jump-range limit without CAP_PERFMON, and one copy serves every
/// caller.
#[inline(never)]
fn no_live_entry(flow: &FlowKey, now: u32, timeout: u32) -> bool {
    let (index, slot) = flow_recent_slot(flow);
    let Some(v) = FLOW_RECENT.get(index) else { return false };
    let Some(stamp) = v.stamps.get(slot as usize) else { return false };
    // Volatile: with `timeout` 0 (a SYN's early read) the load would otherwise be dropped.
    // SAFETY: a plain 32-bit load from the array value.
    let stamp = unsafe { core::ptr::read_volatile(stamp) };
    let clear = flow_recent_clear(stamp, now, timeout);
    if clear {
        stats::event::<{ event::FLOW_FILTER_SKIP as usize }>();
    }
    clear
}

/// Keeps the filter invariant for an entry written or refreshed at `now`: its slot is at
/// least `now`. One store per slot and second at most. Not inlined, as `no_live_entry`.
#[inline(never)]
fn mark_recent(flow: &FlowKey, now: u32) {
    let (index, slot) = flow_recent_slot(flow);
    let Some(v) = FLOW_RECENT.get_ptr_mut(index) else { return };
    // SAFETY: array value; plain 32-bit loads and stores, a racing CPU writes its own `now`.
    unsafe {
        if let Some(stamp) = (*v).stamps.get_mut(slot as usize)
            && (now.wrapping_sub(*stamp) as i32) > 0
        {
            *stamp = now;
        }
    }
}

/// Flow sync: hands a new flow to the agent. A full ring buffer drops the report (counted); the
/// frame is forwarded either way.
#[inline(always)]
fn report_new_flow(flow: &FlowKey, real: u32, generation: u32) {
    match NEW_FLOWS.reserve::<FlowReport>(0) {
        Some(mut entry) => {
            keys::write_report(entry.as_mut_ptr(), flow, real, generation);
            entry.submit(0);
        }
        None => stats::event::<{ event::FLOW_REPORT_DROP as usize }>(),
    }
}

/// True while this CPU's new flows in the current second stay under `threshold` (0 = no limit).
#[inline(always)]
fn guard_allows(threshold: u32, now: u32) -> bool {
    if threshold == 0 {
        return true;
    }
    let Some(g) = index::per_cpu_first(&SYN_GUARD) else { return true };
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
