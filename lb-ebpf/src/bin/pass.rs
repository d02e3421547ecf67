//! The benchmark floor: an XDP program that passes every frame untouched. `cargo xtask bench`
//! times it with BPF_PROG_TEST_RUN next to the real program, so each row can be read as a
//! multiple of what any XDP program costs on this machine.
#![no_std]
#![no_main]

#[path = "../rt.rs"]
mod rt;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn lb_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
