//! What the program does with a frame once a handler acts on it: the admission checks before
//! acting, and the DR rewrite and the way out.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{LocalMacKey, RealValue, TUN_NONE, reason};

use crate::{
    maps::{LOCAL_MACS, TX_PORTS},
    parse::{EthHdr, frame_len},
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

/// The DR rewrite and the way out: XDP_TX on the ingress interface, else a redirect. Destination
/// MAC = the real, source MAC = the outgoing interface; the IP packet is untouched so the real,
/// holding the VIP on its loopback, answers the client directly.
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
