//! Benchmark reference for the flow table: XDP programs that do nothing but write one entry into
//! an LRU hash map shaped like the flow table (`FlowKey` → `Binding`, sized by the benchmark to
//! the agent's default), then pass the frame. `cargo xtask bench` times them next to the trivial
//! program, so BENCHMARKS.md can say what the kernel's LRU map costs per new flow by itself,
//! whatever the rest of the fast path costs.
#![no_std]
#![no_main]

#[path = "../rt.rs"]
mod rt;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{Binding, FAMILY_V4, FlowKey, IPPROTO_TCP};

/// Same key and value as the flow table; the benchmark sets the size at load time.
#[map(name = "LB_FLOOR_FLOWS")]
static FLOWS: LruHashMap<FlowKey, Binding> = LruHashMap::with_max_entries(1024, 0);

/// Entry 0: keys this CPU has written, so each repetition of a test run writes a new key.
#[map(name = "LB_FLOOR_SEQ")]
static SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn key(n: u32) -> FlowKey {
    // A v4 flow as the fast path builds it: client address varies, VIP and ports fixed.
    FlowKey {
        src: [n.to_be(), 0, 0, 0],
        dst: [0x6402_00c0, 0, 0, 0],
        ports: 0x5000_409c,
        proto: IPPROTO_TCP,
        family: FAMILY_V4,
        _pad: 0,
    }
}

/// A new key on every run: the insert of a new flow (free-list pop, bucket lock, link).
#[xdp]
pub fn lb_floor_lru_insert(_ctx: XdpContext) -> u32 {
    if let Some(n) = SEQ.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        let seq = unsafe {
            *n = (*n).wrapping_add(1);
            *n
        };
        let b = Binding { real: 1, generation: 1, atime: seq, flags: 0 };
        let _ = FLOWS.insert(&key(seq), &b, 0);
    }
    xdp_action::XDP_PASS
}

/// The same key on every run: what a repeated SYN costs a program that inserts without looking
/// up first (Katran's benchmark method); the kernel still replaces the element.
#[xdp]
pub fn lb_floor_lru_update(_ctx: XdpContext) -> u32 {
    let b = Binding { real: 1, generation: 1, atime: 0, flags: 0 };
    let _ = FLOWS.insert(&key(0), &b, 0);
    xdp_action::XDP_PASS
}

/// A 16-byte IPv4 flow key (addresses, ports, protocol), for measuring what the key's size
/// costs the flow table's lookup against the 40-byte `FlowKey`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Key4 {
    src: u32,
    dst: u32,
    ports: u32,
    proto: u32,
}

/// A second `FLOWS` for the frame programs, so they start from an empty table as `FLOWS4` does.
#[map(name = "LB_FLOOR_FLOWS40")]
static FLOWS40: LruHashMap<FlowKey, Binding> = LruHashMap::with_max_entries(1024, 0);

/// As `FLOWS40`, keyed by `Key4`.
#[map(name = "LB_FLOOR_FLOWS4")]
static FLOWS4: LruHashMap<Key4, Binding> = LruHashMap::with_max_entries(1024, 0);

/// (source address, ports) of an IPv4 TCP frame without options, as they lie in it.
#[inline(always)]
fn frame_fields(ctx: &XdpContext) -> Option<(u32, u32)> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 38 > end {
        return None;
    }
    // SAFETY: bounds checked above; unaligned reads of the IPv4 source and the TCP ports.
    unsafe {
        Some((
            ((start + 26) as *const u32).read_unaligned(),
            ((start + 34) as *const u32).read_unaligned(),
        ))
    }
}

#[inline(always)]
fn frame_key(ctx: &XdpContext) -> Option<FlowKey> {
    let (src, ports) = frame_fields(ctx)?;
    Some(FlowKey {
        src: [src, 0, 0, 0],
        dst: [0x6402_00c0, 0, 0, 0],
        ports,
        proto: IPPROTO_TCP,
        family: FAMILY_V4,
        _pad: 0,
    })
}

#[inline(always)]
fn frame_key4(ctx: &XdpContext) -> Option<Key4> {
    let (src, ports) = frame_fields(ctx)?;
    Some(Key4 { src, dst: 0x6402_00c0, ports, proto: u32::from(IPPROTO_TCP) })
}

/// The frame's flow inserted into `FLOWS40` (40-byte key).
#[xdp]
pub fn lb_floor_frame_insert(ctx: XdpContext) -> u32 {
    let b = Binding { real: 1, generation: 1, atime: 0, flags: 0 };
    match frame_key(&ctx) {
        Some(k) if FLOWS40.insert(&k, &b, 0).is_ok() => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    }
}

/// The frame's flow looked up in `FLOWS40`: XDP_PASS on a hit, XDP_DROP on a miss.
#[xdp]
pub fn lb_floor_frame_lookup(ctx: XdpContext) -> u32 {
    match frame_key(&ctx) {
        // SAFETY: read-only use of the value.
        Some(k) if unsafe { FLOWS40.get(&k) }.is_some() => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    }
}

/// As `lb_floor_frame_insert`, into `FLOWS4` (16-byte key).
#[xdp]
pub fn lb_floor_frame_insert4(ctx: XdpContext) -> u32 {
    let b = Binding { real: 1, generation: 1, atime: 0, flags: 0 };
    match frame_key4(&ctx) {
        Some(k) if FLOWS4.insert(&k, &b, 0).is_ok() => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    }
}

/// As `lb_floor_frame_lookup`, in `FLOWS4` (16-byte key).
#[xdp]
pub fn lb_floor_frame_lookup4(ctx: XdpContext) -> u32 {
    match frame_key4(&ctx) {
        // SAFETY: read-only use of the value.
        Some(k) if unsafe { FLOWS4.get(&k) }.is_some() => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    }
}
