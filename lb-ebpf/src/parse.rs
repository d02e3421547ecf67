//! Packet headers and bounds-checked access. Every read goes through `ptr_at`, which proves to the
//! verifier that the header lies inside the frame. Offsets are compile-time constants on every
//! path (IPv4 without options, IPv6 with at most a Fragment header): variable packet offsets are
//! rejected by the verifier for agents without CAP_PERFMON.

use aya_ebpf::programs::XdpContext;
use lb_common::Addr;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const FRAG_HLEN: usize = 8;
pub const ICMP_HLEN: usize = 8;
pub const TCP_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;

/// Where the transport header starts on each path.
pub const L4_V4: usize = ETH_HLEN + IPV4_HLEN;
pub const L4_V6: usize = ETH_HLEN + IPV6_HLEN;
pub const L4_V6_FRAG: usize = L4_V6 + FRAG_HLEN;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network byte order.
    pub ether_type: u16,
}

/// IPv4 header without options.
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
    pub saddr: u32,
    pub daddr: u32,
}

#[repr(C)]
pub struct Ipv6Hdr {
    pub vtc_flow: u32,
    pub payload_len: u16,
    pub nexthdr: u8,
    pub hop_limit: u8,
    pub saddr: Addr,
    pub daddr: Addr,
}

/// IPv6 Fragment extension header.
#[repr(C)]
pub struct FragHdr {
    pub nexthdr: u8,
    pub reserved: u8,
    /// Offset (13 bits) and M flag, network byte order.
    pub frag_off: u16,
    pub id: u32,
}

#[repr(C)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub checksum: u16,
    pub rest: u32,
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

/// Seconds of the kernel's monotonic clock (flow-table ages). The coarse clock (updated every
/// tick) is plenty for ages in seconds and is cheaper than reading the clock source, which under
/// a hypervisor is a paravirtual clock read on every packet.
#[inline(always)]
pub fn now_secs() -> u32 {
    // SAFETY: no preconditions.
    (unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns() } / 1_000_000_000) as u32
}

/// Folds a 32-bit one's-complement sum into 16 bits.
#[inline(always)]
pub fn csum_fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// RFC 1624 incremental update of a checksum when one 16-bit word changes from `old` to `new`
/// (all values as they lie in the packet).
#[inline(always)]
pub fn csum_replace(check: u16, old: u16, new: u16) -> u16 {
    let sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    // Eqn. 3 yields 0x0000 (-0) when the covered data is all zero (an all-zero ICMP echo), where
    // only 0xffff verifies; 0xffff verifies in every other case that gives 0 too.
    match !csum_fold(sum) {
        0 => 0xffff,
        c => c,
    }
}
