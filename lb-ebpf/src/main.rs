//! XDP direct-routing fast path. Split like Katran's balancer: packet parsing (`parse`), maps
//! (`maps`), classification (`classify`), two peer handlers (`forward` for TCP/UDP, `icmp`) over
//! shared lookups (`lookup`) and actions (`verdict`), and counters (`stats`); this file is only
//! the entry point.
#![no_std]
#![no_main]

mod classify;
mod forward;
mod icmp;
mod index;
mod keys;
mod lookup;
mod maps;
mod parse;
mod rt;
mod stats;
mod tunnel;
mod verdict;

use aya_ebpf::{macros::xdp, programs::XdpContext};

/// Entry point: every frame arriving on an interface the agent attached to.
#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let verdict = classify::process(&ctx);
    // Paths that forward already asked for the length (one helper call, not two).
    let len = if verdict.len != 0 { verdict.len } else { parse::frame_len(&ctx) };
    stats::count_global(verdict.reason, len);
    verdict.action
}
