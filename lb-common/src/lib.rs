//! Types shared by the XDP program (`lb-ebpf`) and the agent (`lb`): map names, keys, values and
//! counter indexes. Everything here is `repr(C)` without implicit padding so both sides agree on the
//! byte layout; multi-byte fields that come straight from packets stay in network byte order.
#![no_std]

/// Map names as they appear in the eBPF object (the agent looks maps up by these).
pub mod map_names {
    pub const SERVICES: &str = "LB_SERVICES";
    pub const RINGS: &str = "LB_RINGS";
    pub const REALS: &str = "LB_REALS";
    pub const IFACES: &str = "LB_IFACES";
    pub const GLOBAL_STATS: &str = "LB_GLOBAL_STATS";
    pub const REAL_STATS: &str = "LB_REAL_STATS";
    pub const SERVICE_STATS: &str = "LB_SERVICE_STATS";
}

/// Name of the XDP program function in the object.
pub const XDP_PROGRAM: &str = "lb_xdp";

/// Compile-time map sizes; the agent resizes them at load time from its config where it matters.
pub mod sizes {
    /// Virtual services (VIP, port, protocol).
    pub const MAX_SERVICES: u32 = 1024;
    /// Real-server slots; slot 0 is never used so that 0 can mean "none".
    pub const MAX_REALS: u32 = 4096;
    /// Total Maglev table entries across all services (both halves of every double buffer).
    pub const MAX_RING_ENTRIES: u32 = 1 << 20;
    /// Interfaces the program may be attached to.
    pub const MAX_IFACES: u32 = 64;
}

/// Address families in [`ServiceKey::family`].
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// IP protocol numbers the fast path knows.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Key of the services map: one entry per (VIP, port, protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ServiceKey {
    /// VIP in network byte order; IPv4 uses the first 4 bytes, the rest stay zero.
    pub addr: [u8; 16],
    /// Destination port, network byte order (as read from the packet).
    pub port_be: u16,
    pub proto: u8,
    pub family: u8,
}

impl ServiceKey {
    /// Key for an IPv4 VIP given as network-order octets and a host-order port.
    pub const fn v4(addr: [u8; 4], port: u16, proto: u8) -> Self {
        let mut a = [0u8; 16];
        a[0] = addr[0];
        a[1] = addr[1];
        a[2] = addr[2];
        a[3] = addr[3];
        Self { addr: a, port_be: port.to_be(), proto, family: FAMILY_V4 }
    }
}

/// Value of the services map. The agent replaces the whole value to switch a service to a freshly
/// written ring half; a hash-map update is atomic for readers, so a packet sees either table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ServiceValue {
    /// Index into the per-service counters.
    pub id: u32,
    /// Reserved for service flags; zero today.
    pub flags: u32,
    /// First entry of the active Maglev table in the rings map.
    pub ring_offset: u32,
    /// Entries in the table (a Maglev prime); 0 means no real can take traffic: drop.
    pub ring_size: u32,
}

/// Ring entry value meaning "no real" (never written into a live table, checked defensively).
pub const RING_NONE: u32 = 0;

/// Value of the reals map, indexed by real id (>= 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RealValue {
    /// The real server's MAC (resolved from the neighbour table by the agent).
    pub mac: [u8; 6],
    /// Bits of `REAL_F_*`.
    pub flags: u16,
    /// Interface the real is reachable on; equal to the ingress interface for XDP_TX.
    pub ifindex: u32,
}

/// The real may receive packets. Cleared entries are skipped defensively.
pub const REAL_F_UP: u16 = 1;

/// Value of the interfaces map, keyed by ifindex: what the program needs to forward out of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct IfaceValue {
    /// Source MAC for frames the director sends on this interface.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// A packet and byte counter pair (per CPU in the maps; the agent sums CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Why the program returned what it returned: indexes into the global counters.
pub mod reason {
    /// Not IPv4/IPv6 (ARP, LLDP, ...): left to the kernel.
    pub const PASS_NOT_IP: u32 = 0;
    /// IP, but not addressed to a configured service (includes VRRP and the director's own traffic).
    pub const PASS_NOT_SERVICE: u32 = 1;
    /// Addressed to a VIP but in a form this path does not handle yet (IPv4 options, fragments, IPv6).
    pub const PASS_UNSUPPORTED: u32 = 2;
    /// Too short or inconsistent to tell whether it is service traffic: left to the kernel to drop.
    pub const PASS_MALFORMED: u32 = 3;
    /// Service traffic arriving on an interface the agent did not provision.
    pub const PASS_NO_IFACE: u32 = 4;
    /// Rewritten and sent back out (XDP_TX) towards a real.
    pub const TX: u32 = 5;
    /// Service traffic with no real able to take it.
    pub const DROP_NO_REAL: u32 = 6;
    /// Service traffic whose transport header is truncated.
    pub const DROP_MALFORMED: u32 = 7;
    /// Number of reasons (size of the global counters map).
    pub const COUNT: u32 = 8;

    /// Stable names for the counters (JSON keys and `lb status` rows).
    pub const NAMES: [&str; COUNT as usize] = [
        "pass_not_ip",
        "pass_not_service",
        "pass_unsupported",
        "pass_malformed",
        "pass_no_iface",
        "tx",
        "drop_no_real",
        "drop_malformed",
    ];
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all types are repr(C), Copy, and bytemuck's derive proves there is no padding.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::RealValue {}
    unsafe impl aya::Pod for super::IfaceValue {}
    unsafe impl aya::Pod for super::Counter {}
}

/// Flow hash used to pick a Maglev slot. It lives here so the agent and tests can predict the real
/// the XDP program picks for a packet. Inputs are the raw network-order words from the packet.
#[inline(always)]
pub fn flow_hash_v4(saddr: u32, daddr: u32, ports: u32, proto: u8, seed: u32) -> u32 {
    let mut h = seed ^ (proto as u32).wrapping_mul(0x9e37_79b9);
    h = mix(h, saddr);
    h = mix(h, daddr);
    h = mix(h, ports);
    fmix32(h ^ 12)
}

/// One murmur3 body round: mixes a 32-bit word into the state.
#[inline(always)]
const fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(0xcc9e_2d51).rotate_left(15).wrapping_mul(0x1b87_3593);
    (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

/// murmur3's finaliser: spreads every input bit over the output.
#[inline(always)]
const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Default seed for the flow hash; directors that pair up must use the same one.
pub const DEFAULT_HASH_SEED: u32 = 0x4c42_5331;
