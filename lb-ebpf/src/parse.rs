//! Packet headers and bounds-checked access. Every read goes through `ptr_at`, which proves to the
//! verifier that the header lies inside the frame.

use aya_ebpf::programs::XdpContext;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const IPV4_HLEN: usize = 20;
pub const TCP_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network byte order.
    pub ether_type: u16,
}

/// IPv4 header without options (options are handed to the kernel, see `forward`).
#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    /// Flags and fragment offset, network byte order.
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    /// Addresses as raw network-order words (what `lb_common::flow_hash_v4` takes).
    pub saddr: u32,
    pub daddr: u32,
}

/// A pointer to a `T` at `offset` from the start of the frame, or `None` if it would run past the end.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// True when `N` bytes starting at `offset` are inside the frame.
#[inline(always)]
pub fn has_bytes<const N: usize>(ctx: &XdpContext, offset: usize) -> bool {
    ptr_at::<[u8; N]>(ctx, offset).is_some()
}

/// Length of the whole frame. A helper call, because `data_end - data` (pointer minus pointer) is
/// rejected by the verifier for agents without CAP_PERFMON.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    // SAFETY: `ctx.ctx` is the kernel-provided context of this invocation.
    unsafe { aya_ebpf::helpers::generated::bpf_xdp_get_buff_len(ctx.ctx) as usize }
}
