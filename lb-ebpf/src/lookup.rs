//! The lookups both handlers share: VIPs, services, reals, and the pick of a real for a new flow
//! (persistence, Maglev, sorry server). `forward` and `icmp` are peers over this module.

use lb_common::{
    Addr, CFG_F_NO_ALL_PORTS, FlowKey, PersistKey, REAL_F_UP, RING_NONE, RealValue, SVC_F_SRC_HASH,
    ServiceValue, VipValue, event, flow_hash, ring_narrow, ring_place,
};

use crate::{
    index, keys,
    maps::{CONFIG, PERSIST, REALS, RINGS, SERVICES, VIPS},
    stats,
};

/// Looks `addr` up among the VIPs.
#[inline(always)]
pub fn vip(addr: &Addr, family: u8) -> Option<&'static VipValue> {
    // SAFETY: read-only use of a value the agent replaces whole.
    unsafe { VIPS.get(keys::vip(&mut keys::Buf::new(), addr, family)) }
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
        match SERVICES.get(keys::service(&mut keys::Buf::new(), dst, port_be, proto, family)) {
            Some(s) => Some(s),
            None if index::first(&CONFIG).is_some_and(|c| c.flags & CFG_F_NO_ALL_PORTS != 0) => {
                None
            }
            None => SERVICES.get(keys::service(&mut keys::Buf::new(), dst, 0, proto, family)),
        }
    }
}

/// The real `id` when it may receive packets and still is the real `generation` named.
#[inline(always)]
pub fn usable_real(id: u32, generation: u32) -> Option<&'static RealValue> {
    let real = REALS.get(id)?;
    (real.flags & REAL_F_UP != 0 && real.generation == generation).then_some(real)
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
        stats::event::<{ event::SORRY as usize }>();
        return Some((svc.sorry_real, real));
    }
    if svc.persist_timeout != 0 {
        let mut buf = keys::Buf::new();
        let key = persist_key(&mut buf, svc, flow);
        if let Some(b) = PERSIST.get_ptr_mut(key) {
            // SAFETY: LRU map value.
            let (id, generation, atime) = unsafe { ((*b).real, (*b).generation, (*b).atime) };
            if now.wrapping_sub(atime) <= svc.persist_timeout
                && let Some(real) = usable_real(id, generation)
            {
                // SAFETY: as above.
                unsafe { (*b).atime = now };
                stats::event::<{ event::PERSIST_HIT as usize }>();
                return Some((id, real));
            }
        }
        let (id, real) = ring_pick(svc, flow_hash(&key.src, &[0; 4], 0, flow.proto, seed))?;
        let mut vb = keys::Buf::new();
        let b = keys::binding(&mut vb, id, real.generation, now);
        let _ = PERSIST.insert(key, b, 0);
        return Some((id, real));
    }
    let hash = if svc.flags & SVC_F_SRC_HASH != 0 {
        flow_hash(&masked(&flow.src, &svc.persist_mask), &[0; 4], 0, flow.proto, seed)
    } else {
        flow_hash(&flow.src, &flow.dst, flow.ports, flow.proto, seed)
    };
    ring_pick(svc, hash)
}

/// For a plain Maglev service inside its window (docs/fast-path.md): (the real the anchor table
/// gave `flow`, when it may still receive packets; the active table's real). One hash for both.
/// The agent keeps the ids an anchor names from being given to other reals while it is in use.
#[inline(always)]
pub fn window_picks(
    svc: &ServiceValue,
    flow: &FlowKey,
    seed: u32,
) -> (Option<(u32, &'static RealValue)>, Option<(u32, &'static RealValue)>) {
    let hash = flow_hash(&flow.src, &flow.dst, flow.ports, flow.proto, seed);
    let anchor = hash.checked_rem(svc.anchor_size).and_then(|slot| {
        let id = ring_entry(svc, svc.anchor_offset.wrapping_add(slot))?;
        Some((id, usable_real_any(id)?))
    });
    (anchor, ring_pick(svc, hash))
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
    let id = ring_entry(svc, svc.ring_offset.wrapping_add(slot))?;
    Some((id, usable_real_any(id)?))
}

/// Ring entry `index` of `svc`'s rings map: four 16-bit entries per slot when the service says
/// so (`SVC_F_RING_U16`), else two 32-bit ones; a shift and a mask, no branch on the width.
#[inline(always)]
fn ring_entry(svc: &ServiceValue, index: u32) -> Option<u32> {
    let (slot, shift, mask) = ring_place(index, ring_narrow(svc.flags));
    let value = RINGS.get(slot)?;
    Some(((*value >> shift) & mask) as u32)
}

#[inline(always)]
fn masked(src: &Addr, mask: &Addr) -> Addr {
    [src[0] & mask[0], src[1] & mask[1], src[2] & mask[2], src[3] & mask[3]]
}

#[inline(always)]
fn persist_key<'a>(
    buf: &'a mut keys::Buf<PersistKey>,
    svc: &ServiceValue,
    flow: &FlowKey,
) -> &'a PersistKey {
    keys::persist(buf, svc.id, flow.family, &masked(&flow.src, &svc.persist_mask))
}

/// Keeps a persistent client's entry alive while its connections carry traffic.
#[inline(always)]
pub fn touch_persist(svc: &ServiceValue, flow: &FlowKey, now: u32) {
    if let Some(b) = PERSIST.get_ptr_mut(persist_key(&mut keys::Buf::new(), svc, flow)) {
        // SAFETY: LRU map value, plain store.
        unsafe { (*b).atime = now };
    }
}
