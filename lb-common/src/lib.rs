//! Types shared by the XDP program (`lb-ebpf`) and the agent (`lb`): map names, keys, values and
//! counter indexes. Everything here is `repr(C)` without implicit padding so both sides agree on the
//! byte layout; addresses and ports that come straight from packets stay in network byte order
//! ("raw" words: the packet's bytes read as a native `u32`/`u16`).
#![no_std]

/// Map names as they appear in the eBPF object (the agent looks maps up by these).
pub mod map_names {
    pub const SERVICES: &str = "LB_SERVICES";
    pub const VIPS: &str = "LB_VIPS";
    pub const RINGS: &str = "LB_RINGS";
    pub const REALS: &str = "LB_REALS";
    pub const TX_PORTS: &str = "LB_TX_PORTS";
    pub const FLOWS: &str = "LB_FLOWS";
    pub const PERSIST: &str = "LB_PERSIST";
    pub const FRAGS: &str = "LB_FRAGS";
    pub const CONFIG: &str = "LB_CONFIG";
    pub const SYN_GUARD: &str = "LB_SYN_GUARD";
    pub const GLOBAL_STATS: &str = "LB_GLOBAL_STATS";
    pub const EVENTS: &str = "LB_EVENTS";
    pub const REAL_STATS: &str = "LB_REAL_STATS";
    pub const SERVICE_STATS: &str = "LB_SERVICE_STATS";
    pub const LOCAL_MACS: &str = "LB_LOCAL_MACS";
    pub const NEW_FLOWS: &str = "LB_NEW_FLOWS";
    /// Per-CPU scratch of the program (never read by the agent).
    pub const FIB_SCRATCH: &str = "LB_FIB_SCRATCH";
    /// Per-CPU next hops of tunnelled reals, by real id (the program's cache of its FIB lookups).
    pub const TUN_NEXTHOPS: &str = "LB_TUN_NEXTHOPS";
    /// The "recent entry" filter of flow entries (`FlowRecent`, docs/fast-path.md).
    pub const FLOW_RECENT: &str = "LB_FLOW_RECENT";
}

/// Name of the XDP program function in the object.
pub const XDP_PROGRAM: &str = "lb_xdp";

/// Compile-time map sizes; the agent resizes them at load time from its config.
pub mod sizes {
    /// Virtual services (VIP, port, protocol).
    pub const MAX_SERVICES: u32 = 1024;
    /// Real-server slots; slot 0 is never used so that 0 can mean "none".
    pub const MAX_REALS: u32 = 4096;
    /// Total Maglev table entries across all services (every ring area of every service).
    pub const MAX_RING_ENTRIES: u32 = 1 << 20;
    /// Interfaces the program may be attached to or redirect to.
    pub const MAX_IFACES: u32 = 64;
    /// Established flows remembered (LRU).
    pub const FLOWS: u32 = 1 << 20;
    /// Clients remembered for persistence (LRU).
    pub const PERSIST: u32 = 1 << 16;
    /// Fragmented datagrams in flight (LRU).
    pub const FRAGS: u32 = 1 << 14;
    /// (interface, MAC) pairs frames may be addressed to.
    pub const LOCAL_MACS: u32 = 256;
    /// Bytes of the new-flow reports ring buffer (a power of two, pages): 256 KiB hold ~4600
    /// reports (48 bytes and an 8-byte header each) between two reads of the agent.
    pub const NEW_FLOWS_RING: u32 = 1 << 18;
    /// Cache lines of the "recent entry" filter (`FlowRecent`): 1 MiB, 262,144 slots. Small
    /// enough to stay cache- and TLB-friendly next to the 1M-entry flow table it spares.
    pub const FLOW_RECENT: u32 = 1 << 14;
}

/// Address families in keys.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// IP protocol numbers the fast path knows.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_ICMPV6: u8 = 58;

/// An address as four raw words; IPv4 uses the first word, the rest stay zero.
pub type Addr = [u32; 4];

/// Key of the services map: one entry per (VIP, port, protocol). Port 0 is an all-ports service,
/// looked up when no exact-port service matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ServiceKey {
    pub addr: Addr,
    /// Destination port, network byte order (as read from the packet).
    pub port_be: u16,
    pub proto: u8,
    pub family: u8,
}

/// Service flag: hash new flows on the (masked) client address only, so all of a client's
/// connections pick the same real (`sh`, persistence).
pub const SVC_F_SRC_HASH: u32 = 1;

/// Service flag: the rings map holds 16-bit entries, four per slot (`RingSlot`). The agent sets
/// it on every service of such a map, so the program reads the width with the value it already
/// has instead of looking it up.
pub const SVC_F_RING_U16: u32 = 2;

/// Value of the services map. The agent replaces the whole value to switch a service to a freshly
/// written ring half; a hash-map update is atomic for readers, so a packet sees either table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ServiceValue {
    /// Index into the per-service counters and part of persistence keys.
    pub id: u32,
    /// Bits of `SVC_F_*`.
    pub flags: u32,
    /// First entry of the active Maglev table in the rings map.
    pub ring_offset: u32,
    /// Entries in the table (a Maglev prime); 0 means no real takes new flows.
    pub ring_size: u32,
    /// Real id taking new flows when `ring_size` is 0 (the sorry server); 0 = drop.
    pub sorry_real: u32,
    /// Persistence timeout in seconds; 0 = no persistence.
    pub persist_timeout: u32,
    /// Mask applied to the client address for persistence and source hashing (raw words).
    pub persist_mask: Addr,
    /// The anchor table (docs/fast-path.md): the table in effect when the last quiet period
    /// ended. A TCP flow without an entry that continues inside the window follows it.
    /// `anchor_size` 0: no anchor (such a flow takes the active table and gets an entry).
    pub anchor_offset: u32,
    pub anchor_size: u32,
    /// Last second (the program's `now_secs`) of the window after the last table change. Until
    /// then every TCP flow gets an entry; after it a TCP flow of a plain Maglev service needs
    /// none (the table alone decides its real). 0 = no window.
    pub window_end: u32,
}

/// Key of the VIPs map: every address that has at least one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct VipKey {
    pub addr: Addr,
    pub family: u8,
    // Padding as integers, not byte arrays: zeroing a byte array compiles to a memset call that
    // the verifier rejects without CAP_PERFMON.
    pub _pad1: u8,
    pub _pad2: u16,
}

/// VIP flag: answer ICMP/ICMPv6 echo requests to this VIP from the fast path.
pub const VIP_F_ICMP_ECHO: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct VipValue {
    pub flags: u32,
}

/// Key of the local-MACs map: a destination MAC the program acts on when a frame arrives on
/// `ifindex` (the interface's own MAC). Frames to any other MAC (broadcast, multicast, another
/// host's, flooded by a bridge) are the kernel's: every director on the segment would otherwise
/// forward them. The MAC is kept as two raw words, so the program builds the key without a byte
/// copy (which compiles to a memcpy call the verifier rejects).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct LocalMacKey {
    pub ifindex: u32,
    /// MAC bytes 0..4 as they lie in the frame (raw word).
    pub mac_hi: u32,
    /// MAC bytes 4..6 as they lie in the frame (raw word).
    pub mac_lo: u16,
    pub _pad: u16,
}

impl LocalMacKey {
    pub const fn new(ifindex: u32, mac: [u8; 6]) -> Self {
        Self {
            ifindex,
            mac_hi: u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]),
            mac_lo: u16::from_ne_bytes([mac[4], mac[5]]),
            _pad: 0,
        }
    }
}

/// Ring entry value meaning "no real" (never written into a live table, checked defensively).
pub const RING_NONE: u32 = 0;

/// A slot of the rings map (`LB_RINGS`): consecutive ring entries, two `u32` or, when every
/// real id fits in 16 bits (`ring_entry_bytes`), four `u16` (`SVC_F_RING_U16`). An array map
/// stores every value in 8 bytes, so one entry per slot would waste most of the map's memory.
/// Entry `k` of a slot lies at byte `k * width` of it, which on the little-endian hosts XDP runs
/// on (the program is built for `bpfel`) is bit `8 * k * width` of the slot as a `u64`.
pub type RingSlot = u64;

/// Bytes per ring entry in a rings map for real ids below `max_reals`: 2 when every id fits in
/// 16 bits (half the map's memory, and half the bytes the agent writes), else 4.
pub const fn ring_entry_bytes(max_reals: u32) -> u32 {
    if max_reals <= 1 << 16 { 2 } else { 4 }
}

/// Slots of the rings map that hold `entries` ring entries of `entry_bytes` bytes each.
pub const fn ring_slots(entries: u32, entry_bytes: u32) -> u32 {
    entries.div_ceil(size_of::<RingSlot>() as u32 / entry_bytes)
}

/// 1 when a service's flags say its rings map holds 16-bit entries, else 0.
#[inline(always)]
pub const fn ring_narrow(svc_flags: u32) -> u32 {
    (svc_flags / SVC_F_RING_U16) & 1
}

/// Where ring entry `index` lies for entries of `32 >> narrow` bits (`narrow` 0 or 1): (slot,
/// right shift of the slot, mask). Branch-free: the program computes it for every pick.
#[inline(always)]
pub const fn ring_place(index: u32, narrow: u32) -> (u32, u32, u64) {
    let per_slot_log2 = 1 + narrow;
    let bits = 32 >> narrow;
    let lane = index & ((1 << per_slot_log2) - 1);
    (index >> per_slot_log2, lane * bits, u32::MAX as u64 >> (32 - bits))
}

/// Value of the reals map, indexed by real id (>= 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RealValue {
    /// The real server's MAC (resolved from the neighbour table by the agent).
    pub mac: [u8; 6],
    /// Bits of `REAL_F_*`.
    pub flags: u16,
    /// This director's MAC on `ifindex`, the frames' new source MAC. Kept here so that forwarding
    /// needs no interface lookup (a hash-map lookup per packet).
    pub src_mac: [u8; 6],
    pub _pad: u16,
    /// Interface the real is reachable on: XDP_TX when it is the ingress one, else a redirect.
    /// 0 only for a real that is not usable (unresolved).
    pub ifindex: u32,
    /// Changes whenever the slot is given to another real, so flow and persistence entries that
    /// name a recycled slot are recognised as stale.
    pub generation: u32,
    /// How frames reach the real: `TUN_NONE` (direct routing to `mac`) or an encapsulation
    /// (`TUN_IPIP`, `TUN_GUE`, `TUN_GRE`), routed by the kernel's FIB from the program (`mac`,
    /// `src_mac` and `ifindex` are then unused).
    pub tun: u8,
    /// Family of the outer header (the real's address family): `FAMILY_V4` or `FAMILY_V6`.
    pub tun_family: u8,
    /// GUE's UDP destination port, network byte order.
    pub tun_port_be: u16,
    /// The real's address: the outer destination (raw words).
    pub tun_dst: Addr,
    /// The outer source (raw words); all zero = the FIB's preferred source toward the real.
    pub tun_src: Addr,
}

/// Direct routing: the frame goes to the real's MAC unchanged.
pub const TUN_NONE: u8 = 0;
/// IP in IP, any family pair (IPv4/IPv6 in IPv4/IPv6: protocol 4 or 41 in the outer header).
pub const TUN_IPIP: u8 = 1;
/// GUE direct IP encapsulation (variant 1, RFC draft-ietf-intarea-gue): UDP whose payload is
/// the inner IP packet.
pub const TUN_GUE: u8 = 2;
/// GRE (RFC 2784) without key, checksum or sequence number.
pub const TUN_GRE: u8 = 3;

/// TTL / hop limit of outer headers.
pub const TUN_TTL: u8 = 64;

/// How long a cached FIB result for a tunnelled real is used before the next packet looks the
/// route up again (nanoseconds of `bpf_ktime_get_coarse_ns`): a route, neighbour or MTU change
/// reaches the real's traffic within this (the issue allows a second).
pub const TUN_NEXTHOP_LIFETIME_NS: u64 = 250_000_000;

/// A tunnelled real's next hop as the kernel's FIB gave it (`LB_TUN_NEXTHOPS`, per CPU, by real
/// id): filled by the first packet after [`TUN_NEXTHOP_LIFETIME_NS`], used by the others.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct TunNextHop {
    /// `bpf_ktime_get_coarse_ns` when filled; 0 = empty.
    pub stamp: u64,
    /// The real's generation when filled: a slot given to another real is looked up afresh.
    pub generation: u32,
    /// The ingress interface of the lookup (the FIB answers for a given input interface).
    pub ingress: u32,
    /// Egress interface.
    pub ifindex: u32,
    /// Path MTU toward the real (65535 when larger).
    pub mtu: u32,
    /// Next hop's MAC, then the egress interface's.
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// The outer source: `tun_src`, or the FIB's choice when that is all zero.
    pub src: Addr,
    /// Low 32 bits of `jiffies` when `stamp` was last found within the lifetime (or filled):
    /// the coarse clock moves only on ticks, so within that tick it is not read again.
    pub tick: u32,
}

/// Bytes an encapsulation adds in front of the inner IP packet (outer IP header included).
pub const fn tun_overhead(tun: u8, outer_family: u8) -> u32 {
    let ip = if outer_family == FAMILY_V6 { 40 } else { 20 };
    ip + match tun {
        TUN_GUE => 8,
        TUN_GRE => 4,
        _ => 0,
    }
}

/// What varies per flow in the outer header so that a real's NIC spreads tunnelled flows over
/// its receive queues: GUE's UDP source port (`0xc000 | low 14 bits`, the ephemeral range) and
/// an IPv6 outer header's flow label (low 20 bits, RFC 6438). Inputs are the inner addresses
/// folded to one raw word each (`addr_fold`; an IPv4 address is its word) and the ports word.
#[inline(always)]
pub fn tun_entropy(src: u32, dst: u32, ports: u32) -> u32 {
    fmix32(mix(mix(ports, src), dst))
}

/// An address's raw words XORed into one (entropy input, not an identity).
#[inline(always)]
pub const fn addr_fold(a: &Addr) -> u32 {
    a[0] ^ a[1] ^ a[2] ^ a[3]
}

/// The real may receive packets (existing flows; new ones only via the ring). Cleared for reals
/// that are down or unresolved: their flows are re-picked.
pub const REAL_F_UP: u16 = 1;

/// Key of the flow table: the client → VIP 5-tuple.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowKey {
    pub src: Addr,
    pub dst: Addr,
    /// Source and destination ports as they lie in the packet (raw word).
    pub ports: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: u16,
}

/// One value of the "recent entry" filter (`LB_FLOW_RECENT`, docs/fast-path.md): 16 slots of
/// seconds (the program's `now_secs`), one cache line. A slot holds at least the last use
/// (`atime`) of every flow entry (TCP or UDP) hashed to it ([`flow_recent_slot`]) that the
/// program may follow, so a slot older than a flow's entry timeout (TCP's, or UDP's) proves that
/// the flow has no live entry and its lookup can be skipped. The map is mappable, so its values
/// start on a page boundary: each value is exactly one cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowRecent {
    pub stamps: [u32; FLOW_RECENT_SLOTS as usize],
}

/// Slots per `FlowRecent` value.
pub const FLOW_RECENT_SLOTS: u32 = 16;

/// The filter slot of a flow: (index of the value, slot in it). Cheap and independent of the
/// hash seed, defined once so the agent stamps the slot the program reads.
#[inline(always)]
pub fn flow_recent_slot(key: &FlowKey) -> (u32, u32) {
    let h = fmix32(mix(
        mix(mix(key.ports, addr_fold(&key.src)), addr_fold(&key.dst)),
        key.proto as u32,
    ));
    let slot = h & (sizes::FLOW_RECENT * FLOW_RECENT_SLOTS - 1);
    (slot / FLOW_RECENT_SLOTS, slot % FLOW_RECENT_SLOTS)
}

/// True when a filter slot stamped `stamp` proves that no entry hashed to it was used within
/// `timeout` (the flow's entry timeout) of `now`: older by more than the timeout and 2 s of
/// slack for the coarse clock of different CPUs. Compared as a signed difference, so a stamp a
/// CPU wrote a moment "ahead" of this one never reads as ancient. `timeout` 0: never.
#[inline(always)]
pub fn flow_recent_clear(stamp: u32, now: u32, timeout: u32) -> bool {
    timeout != 0 && (now.wrapping_sub(stamp) as i32) > timeout.saturating_add(2) as i32
}

/// Where an established flow (or a persistent client, or a fragmented datagram) goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Binding {
    pub real: u32,
    /// The real's generation when the binding was made.
    pub generation: u32,
    /// Last use, in seconds of the kernel's monotonic clock.
    pub atime: u32,
    /// Bits of `BINDING_F_*` (0 for what the program writes itself).
    pub flags: u32,
}

/// The flow entry was installed by the agent from a peer director's sync message (`lb flows`
/// shows it as `origin` `sync`); the program keeps the bit when it refreshes `atime`.
pub const BINDING_F_SYNC: u32 = 1;

/// Key of the persistence table: (service, masked client address).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct PersistKey {
    pub service: u32,
    pub family: u8,
    pub _pad1: u8,
    pub _pad2: u16,
    pub src: Addr,
}

/// Key of the fragment table: one fragmented datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FragKey {
    pub src: Addr,
    pub dst: Addr,
    /// IP identification (IPv4: 16 bits; IPv6 fragment header: 32 bits), raw.
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: u16,
}

/// Settings for the whole program (one entry in the config map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct GlobalConfig {
    pub hash_seed: u32,
    /// Seconds after which an idle UDP flow entry is not used any more (the flow is handled as
    /// one without an entry); 0 (a fresh map) = any older entry, and the filter is not used.
    pub udp_timeout: u32,
    /// New flows per second per CPU above which no flow entries are inserted; 0 = no limit.
    pub syn_threshold: u32,
    /// Bits of `CFG_F_*` (0, the value of a fresh map, keeps every lookup).
    pub flags: u32,
    /// Seconds after which an idle TCP flow entry is not used any more (the flow is handled as
    /// one without an entry); 0 = never, and the "recent entry" filter is not used.
    pub tcp_timeout: u32,
}

/// No service listens on all ports (port 0): a frame without an exact-port service is not service
/// traffic, so the program skips the second, all-ports lookup. The agent sets it only while no
/// all-ports service is in the services map (cleared before one is added, set after the last one
/// is removed).
pub const CFG_F_NO_ALL_PORTS: u32 = 1;

/// Flow sync is on: every new flow the program inserts into the flow table is reported to the
/// agent through the new-flows ring buffer (none while the SYN-flood guard keeps flows out).
pub const CFG_F_FLOW_SYNC: u32 = 2;

/// Tunnelled reals: look the route up for every packet instead of using `LB_TUN_NEXTHOPS` (the
/// behaviour before the cache; the benchmark's control rows and the tests that change routes
/// between two packets set it; the agent never does).
pub const CFG_F_TUN_FIB_EACH: u32 = 4;

/// Look flows up in the flow table even when the "recent entry" filter proves they have no
/// entry (the behaviour before the filter: the benchmark's control rows set it; the agent never
/// does).
pub const CFG_F_NO_FLOW_FILTER: u32 = 8;

/// Insert flow entries without stamping their "recent entry" filter slot, and never skip a
/// lookup on the filter (unstamped slots prove nothing). Only the benchmark's control rows set
/// it, to measure what the stamp costs an insert; the agent never does.
pub const CFG_F_NO_FLOW_STAMP: u32 = 16;

/// The window (`tcp_flow_timeout`) lasts at least as long as a TCP entry is followed (the
/// TCP entry timeout: the default 900 s, and longer windows). After a table change a TCP flow
/// whose anchor and active tables name the same real then gets no entry: the window keeps it
/// wherever an entry would have (docs/fast-path.md). Set by the agent.
pub const CFG_F_WINDOW_COVERS_TCP: u32 = 32;

/// As `CFG_F_WINDOW_COVERS_TCP`, for UDP: the window lasts at least `udp_flow_timeout` (not 0).
pub const CFG_F_WINDOW_COVERS_UDP: u32 = 64;

/// A new flow, as the program reports it to the agent for flow sync.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowReport {
    pub key: FlowKey,
    /// The real's slot and its generation, as in the flow entry.
    pub real: u32,
    pub generation: u32,
}

/// Per-CPU new-flow rate state of the SYN-flood guard.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SynGuard {
    pub second: u64,
    pub new_flows: u64,
}

/// Packets, bytes and new flows (per CPU in the maps; the agent sums CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
    /// Flows that started here (per-real and per-service counters; 0 in the global ones).
    pub new_flows: u64,
}

/// Declares counter indexes and their stable names in one table, one line each:
/// `CONST = index => "name"`. Generates the constants, `COUNT` and `NAMES` (indexed by the
/// constants); the build fails unless the indexes are exactly `0..COUNT`, each once.
macro_rules! counter_indexes {
    ($( $(#[$doc:meta])* $konst:ident = $index:literal => $name:literal, )+) => {
        $( $(#[$doc])* pub const $konst: u32 = $index; )+

        /// Number of entries (the size of the counters map).
        pub const COUNT: u32 = [$($index),+].len() as u32;

        /// Stable names, indexed by the constants: JSON keys, `lb status` rows and metric label
        /// values (contracts: never rename one).
        pub const NAMES: [&str; COUNT as usize] = {
            let mut names = [""; COUNT as usize];
            $( names[$konst as usize] = $name; )+
            names
        };

        // An index past COUNT fails above; a repeated one leaves a hole here.
        const _: () = {
            let mut i = 0;
            while i < NAMES.len() {
                assert!(!NAMES[i].is_empty(), "counter indexes must be 0..COUNT, each once");
                i += 1;
            }
        };
    };
}

/// Why the program returned what it returned: indexes into the global counters. Every frame is
/// counted under exactly one reason.
pub mod reason {
    counter_indexes! {
        /// Not IPv4/IPv6 (ARP, LLDP, ...): left to the kernel.
        PASS_NOT_IP = 0 => "pass_not_ip",
        /// IP, but not addressed to a configured service (includes VRRP and the director's own
        /// traffic).
        PASS_NOT_SERVICE = 1 => "pass_not_service",
        /// Addressed to a VIP in a form this path hands to the kernel (IPv4 options, IPv6 extension
        /// headers other than Fragment).
        PASS_UNSUPPORTED = 2 => "pass_unsupported",
        /// Too short or inconsistent to tell whether it is service traffic: left to the kernel to
        /// drop.
        PASS_MALFORMED = 3 => "pass_malformed",
        /// Service traffic for a real without an outgoing interface (a guard: the agent never marks
        /// such a real usable).
        PASS_NO_IFACE = 4 => "pass_no_iface",
        /// ICMP to a VIP that is not an echo request (when answered) or a "too big" error: the
        /// kernel's.
        PASS_ICMP = 5 => "pass_icmp",
        /// Rewritten and sent back out of the ingress interface (XDP_TX) towards a real.
        TX = 6 => "tx",
        /// Rewritten and redirected to another interface towards a real.
        REDIRECT = 7 => "redirect",
        /// ICMP/ICMPv6 echo request to a VIP, answered from the fast path.
        TX_ICMP_ECHO = 8 => "tx_icmp_echo",
        /// ICMP "fragmentation needed" / ICMPv6 "packet too big" for a flow, sent to its real.
        TX_ICMP_TOO_BIG = 9 => "tx_icmp_too_big",
        /// Service traffic with no real able to take it (and no sorry server).
        DROP_NO_REAL = 10 => "drop_no_real",
        /// Service traffic (or an ICMP message the program would act on) whose transport header
        /// is truncated, or whose IP length disagrees with the frame (longer than the frame,
        /// shorter than the headers).
        DROP_MALFORMED = 11 => "drop_malformed",
        /// A non-first fragment of a datagram whose first fragment was not seen.
        DROP_FRAG_UNKNOWN = 12 => "drop_frag_unknown",
        /// Forwarding failed (redirect refused by the target interface).
        DROP_TX_ERROR = 13 => "drop_tx_error",
        /// 802.1Q / 802.1ad tagged: VLANs are served by attaching to the VLAN device, never on the
        /// parent (a forwarded frame would keep its tag, or lose it).
        PASS_VLAN = 14 => "pass_vlan",
        /// Would be acted on, but sent to the broadcast MAC.
        PASS_MAC_BROADCAST = 15 => "pass_mac_broadcast",
        /// Would be acted on, but sent to a multicast MAC.
        PASS_MAC_MULTICAST = 16 => "pass_mac_multicast",
        /// Would be acted on, but sent to a unicast MAC that is not the ingress interface's
        /// (another host's frame, flooded by a bridge or seen in promiscuous mode).
        PASS_MAC_OTHER_HOST = 17 => "pass_mac_other_host",
        /// Encapsulated towards a tunnelled real (sent out through the FIB's egress interface).
        TX_TUNNEL = 18 => "tx_tunnel",
        /// Answered with ICMP "fragmentation needed" (IPv4 with DF) or ICMPv6 "packet too big":
        /// encapsulated, the packet would exceed the egress MTU; the message names the MTU that
        /// fits.
        TX_TUN_TOO_BIG = 19 => "tx_tun_too_big",
        /// For a tunnelled real, but the FIB has no usable route to it (unreachable, blackhole,
        /// prohibited, forwarding disabled on the ingress interface, no source address): dropped.
        DROP_TUN_NO_ROUTE = 20 => "drop_tun_no_route",
        /// For a tunnelled real whose next hop has no neighbour entry yet: dropped.
        DROP_TUN_NO_NEIGH = 21 => "drop_tun_no_neigh",
        /// Too big for the tunnel and IPv4 without DF (the program cannot fragment): dropped.
        DROP_TUN_TOO_BIG = 22 => "drop_tun_too_big",
    }

    /// True for the reasons whose frames are passed to the kernel.
    pub const fn is_pass(reason: u32) -> bool {
        reason <= PASS_ICMP || (reason >= PASS_VLAN && reason <= PASS_MAC_OTHER_HOST)
    }
}

/// Things that happen to frames besides their verdict: indexes into the events counters.
pub mod event {
    counter_indexes! {
        /// A frame matched an established flow.
        FLOW_HIT = 0 => "flow_hit",
        /// A new flow was bound to a real.
        FLOW_NEW = 1 => "flow_new",
        /// A flow's real was down or gone: the flow was bound to another one.
        FLOW_REPICK = 2 => "flow_repick",
        /// A flow entry idle past its timeout (UDP: `udp_flow_timeout`; TCP: the TCP entry
        /// timeout) was not followed: the flow was handled as one without an entry.
        FLOW_EXPIRED = 3 => "flow_expired",
        /// The SYN-flood guard kept a new flow out of the flow table.
        FLOW_GUARD_SKIP = 4 => "flow_guard_skip",
        /// A TCP RST without an entry was forwarded without creating one.
        FLOW_RST_UNTRACKED = 5 => "flow_rst_untracked",
        /// A new flow followed its client's persistence entry.
        PERSIST_HIT = 6 => "persist_hit",
        /// A new flow went to the sorry server.
        SORRY = 7 => "sorry",
        /// A fragmented datagram's first fragment was tracked.
        FRAG_TRACKED = 8 => "frag_tracked",
        /// A later fragment followed its datagram's first fragment.
        FRAG_HIT = 9 => "frag_hit",
        /// Flow sync: a new flow was not reported to the agent, its ring buffer was full.
        FLOW_REPORT_DROP = 10 => "flow_report_drop",
        /// A new TCP flow (SYN) outside a table-change window: forwarded by the Maglev table
        /// alone, no flow entry written (also counted in `flow_new`).
        FLOW_NEW_STATELESS = 11 => "flow_new_stateless",
        /// A later packet of a TCP flow, or any UDP datagram (new or not: nothing tells), of a
        /// flow without an entry, outside a window: forwarded by the Maglev table alone (the
        /// table-derived counterpart of `flow_hit`).
        FLOW_STATELESS_HIT = 12 => "flow_stateless_hit",
        /// Inside a window, a flow without an entry (a TCP packet other than a SYN, any UDP
        /// datagram) followed the anchor table (the one it started under); its entry was
        /// written then.
        FLOW_WINDOW_ANCHOR = 13 => "flow_window_anchor",
        /// Outside a window, the "recent entry" filter proved that a TCP or UDP flow has no live
        /// entry: the flow-table lookup was skipped (docs/fast-path.md).
        FLOW_FILTER_SKIP = 14 => "flow_filter_skip",
    }
}

/// Health checks through the VIP (`through_vip`): the TC programs of the probe object
/// (`lb-probe`) and their maps. A check's socket carries a mark from the reserved range; the
/// egress program sends its packets to the VIP on that mark's real (rewritten destination, and
/// the real's tunnel for TUN) and remembers the flow; the ingress program gives the replies from
/// the VIP the real's address back, for the socket connected to it.
pub mod probe {
    use super::Addr;

    /// Name of the TC egress program in the probe object.
    pub const EGRESS_PROGRAM: &str = "lb_probe_egress";
    /// Name of the TC ingress program in the probe object.
    pub const INGRESS_PROGRAM: &str = "lb_probe_ingress";
    /// Mark → [`ProbeTarget`].
    pub const TARGETS_MAP: &str = "LB_PROBE_TARGETS";
    /// [`ProbeFlowKey`] → [`ProbeFlow`].
    pub const FLOWS_MAP: &str = "LB_PROBE_FLOWS";

    /// The reserved socket marks: `MARK_BASE` + 1 .. `MARK_BASE` + 0xffff, one per (service,
    /// real) with a check through the VIP. Packets with any other mark are not touched.
    pub const MARK_BASE: u32 = 0x4c42_0000;
    pub const MARK_MASK: u32 = 0xffff_0000;
    /// Most probe targets: the size of the mark range.
    pub const MAX_TARGETS: u32 = 0xffff;
    /// Probe connections remembered for their replies (LRU).
    pub const MAX_FLOWS: u32 = 1 << 14;

    /// Where a marked check's packets go: the VIP on the real `real`, directly (`tun` =
    /// `TUN_NONE`, the frame keeps the real's MAC) or through its tunnel.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    #[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
    pub struct ProbeTarget {
        /// The real's address: the check's destination before, the outer destination after.
        pub real: Addr,
        pub vip: Addr,
        /// Outer source of a tunnel; zero = the check's own source.
        pub tun_src: Addr,
        /// A real of the other family than the VIP's: the source of the check's packet once
        /// translated into the VIP's family (a director's address the real replies to). Zero
        /// for a real of the VIP's family (no translation).
        pub inner_src: Addr,
        /// `FAMILY_V4` / `FAMILY_V6` of the VIP (of the packet that reaches the real's VIP).
        pub family: u8,
        /// `FAMILY_V4` / `FAMILY_V6` of the real (of the check's socket and the outer header).
        pub real_family: u8,
        /// `TUN_NONE`, `TUN_IPIP`, `TUN_GUE`, `TUN_GRE`.
        pub tun: u8,
        pub _pad: u8,
        /// GUE destination port, network byte order.
        pub tun_port_be: u16,
        pub _pad2: u16,
    }

    /// A probe connection as its replies show it: (local address, VIP, ports as the egress
    /// packet carries them, protocol).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
    pub struct ProbeFlowKey {
        pub local: Addr,
        pub vip: Addr,
        /// Source port then destination port, raw (the packet's four bytes).
        pub ports: u32,
        pub proto: u8,
        pub family: u8,
        pub _pad: u16,
    }

    /// What a probe connection's replies need: the real's address (their source for the
    /// check's socket) and the socket's own address (their destination once translated back,
    /// for a real of the other family than the VIP).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    #[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
    pub struct ProbeFlow {
        pub real: Addr,
        /// The check's own source address, of the real's family (the key's `local` unless
        /// translated).
        pub local: Addr,
        /// `FAMILY_V4` / `FAMILY_V6` of the real.
        pub real_family: u8,
        /// Scalars, not an array: the eBPF side zeroes them with plain stores (a `[u8; 3]`
        /// becomes a memset loop the verifier refuses without CAP_PERFMON).
        pub _pad: u8,
        pub _pad2: u16,
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all types are repr(C), Copy, and bytemuck's derive proves there is no padding.
    unsafe impl aya::Pod for super::probe::ProbeTarget {}
    unsafe impl aya::Pod for super::probe::ProbeFlowKey {}
    unsafe impl aya::Pod for super::probe::ProbeFlow {}
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::VipValue {}
    unsafe impl aya::Pod for super::LocalMacKey {}
    unsafe impl aya::Pod for super::RealValue {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::Binding {}
    unsafe impl aya::Pod for super::PersistKey {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::GlobalConfig {}
    unsafe impl aya::Pod for super::SynGuard {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::FlowReport {}
    unsafe impl aya::Pod for super::FlowRecent {}
}

/// Flow hash used to pick a Maglev slot. It lives here so the agent and tests can predict the real
/// the XDP program picks for a packet. Inputs are raw words from the packet; IPv4 addresses use
/// the first word only.
#[inline(always)]
pub fn flow_hash(src: &Addr, dst: &Addr, ports: u32, proto: u8, seed: u32) -> u32 {
    let mut h = seed ^ (proto as u32).wrapping_mul(0x9e37_79b9);
    h = mix(h, src[0]);
    h = mix(h, src[1]);
    h = mix(h, src[2]);
    h = mix(h, src[3]);
    h = mix(h, dst[0]);
    h = mix(h, dst[1]);
    h = mix(h, dst[2]);
    h = mix(h, dst[3]);
    h = mix(h, ports);
    fmix32(h ^ 36)
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

/// Raw words of an IPv4 address given as octets.
pub const fn addr_v4(octets: [u8; 4]) -> Addr {
    [u32::from_ne_bytes(octets), 0, 0, 0]
}

/// Raw words of an IPv6 address given as octets.
pub const fn addr_v6(o: [u8; 16]) -> Addr {
    [
        u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
        u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
        u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
        u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
    ]
}

/// Raw-word mask keeping the first `prefix` bits of an address of `bits` bits (32 or 128).
pub const fn prefix_mask(prefix: u8, bits: u8) -> Addr {
    let mut out = [0u32; 4];
    let p = if prefix > bits { bits } else { prefix };
    let mut i = 0;
    while i < 4 {
        let start = (i as u32) * 32;
        let word_bits: u32 =
            if (p as u32) >= start + 32 { 32 } else { (p as u32).saturating_sub(start) };
        let be: u32 = if word_bits == 0 { 0 } else { u32::MAX << (32 - word_bits) };
        out[i] = u32::from_ne_bytes(be.to_be_bytes());
        i += 1;
    }
    out
}

/// The raw ports word for a flow given host-order ports.
pub const fn ports_word(sport: u16, dport: u16) -> u32 {
    let s = sport.to_be_bytes();
    let d = dport.to_be_bytes();
    u32::from_ne_bytes([s[0], s[1], d[0], d[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slot, shift and mask of ring entries in both widths, and the map sizes they imply.
    #[test]
    fn ring_entries_lie_where_the_agent_writes_them() {
        // (index, narrow, (slot, shift, mask))
        let cases = [
            (0, 0, (0, 0, 0xffff_ffff)),
            (1, 0, (0, 32, 0xffff_ffff)),
            (2, 0, (1, 0, 0xffff_ffff)),
            (131_073, 0, (65_536, 32, 0xffff_ffff)),
            (u32::MAX, 0, (u32::MAX >> 1, 32, 0xffff_ffff)),
            (0, 1, (0, 0, 0xffff)),
            (1, 1, (0, 16, 0xffff)),
            (3, 1, (0, 48, 0xffff)),
            (4, 1, (1, 0, 0xffff)),
            (262_146, 1, (65_536, 32, 0xffff)),
            (u32::MAX, 1, (u32::MAX >> 2, 48, 0xffff)),
        ];
        for (index, narrow, want) in cases {
            assert_eq!(ring_place(index, narrow), want, "entry {index}, narrow {narrow}");
        }
        assert_eq!(ring_narrow(SVC_F_RING_U16 | SVC_F_SRC_HASH), 1);
        assert_eq!(ring_narrow(SVC_F_SRC_HASH), 0);
        // (max_reals, entry bytes, slots for 65,537 × 4 entries)
        let sizes =
            [(64, 2, 65_537), (65_536, 2, 65_537), (65_537, 4, 131_074), (1 << 20, 4, 131_074)];
        for (max_reals, bytes, slots) in sizes {
            assert_eq!(ring_entry_bytes(max_reals), bytes, "max_reals {max_reals}");
            assert_eq!(ring_slots(4 * 65_537, bytes), slots, "max_reals {max_reals}");
        }
        assert_eq!(ring_slots(5, 2), 2, "a partial slot counts");
        assert_eq!(ring_slots(5, 4), 3, "a partial slot counts");
        // Entries stored at byte `i * width` (as the agent's mapped writes do) read back through
        // the slot arithmetic, ids up to the width's largest.
        for (narrow, width) in [(0u32, 4usize), (1, 2)] {
            let top = u32::MAX >> (16 * narrow);
            let ids: [u32; 37] =
                core::array::from_fn(|i| [1, 256, 300, top - 1, top][i % 5] ^ (i as u32 & 1));
            let mut bytes = [0u8; 37 * 4 + 8];
            for (i, &id) in ids.iter().enumerate() {
                bytes[i * width..(i + 1) * width].copy_from_slice(&id.to_le_bytes()[..width]);
            }
            for (i, &id) in ids.iter().enumerate() {
                let (slot, shift, mask) = ring_place(i as u32, narrow);
                let at = slot as usize * 8;
                let value = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
                assert_eq!(((value >> shift) & mask) as u32, id, "entry {i}, width {width}");
            }
        }
    }

    #[test]
    fn masks_keep_the_prefix() {
        assert_eq!(prefix_mask(24, 32), addr_v4([255, 255, 255, 0]));
        assert_eq!(prefix_mask(32, 32), addr_v4([255; 4]));
        assert_eq!(prefix_mask(0, 32), [0; 4]);
        let mut m = [0u8; 16];
        m[..8].copy_from_slice(&[0xff; 8]);
        assert_eq!(prefix_mask(64, 128), addr_v6(m));
        m[8] = 0x80;
        assert_eq!(prefix_mask(65, 128), addr_v6(m));
        assert_eq!(prefix_mask(128, 128), addr_v6([0xff; 16]));
    }

    /// The filter's age test: older than timeout + 2 s only, a stamp "ahead" of `now` (another
    /// CPU's clock, across the u32 wrap too) is never old, and timeout 0 never skips.
    #[test]
    fn recent_filter_clears_only_past_the_timeout_and_slack() {
        // (stamp, now, timeout, clear)
        let cases = [
            (0, 5, 900, false),
            (100, 1002, 900, false),
            (100, 1003, 900, true),
            (1001, 1000, 900, false),
            (u32::MAX, 3, 900, false),
            (u32::MAX - 1000, 3, 900, true),
            (0, 1_000_000, 0, false),
        ];
        for (stamp, now, timeout, clear) in cases {
            assert_eq!(flow_recent_clear(stamp, now, timeout), clear, "{stamp} {now} {timeout}");
        }
    }

    #[test]
    fn recent_slots_cover_the_map() {
        let mut seen = [false; FLOW_RECENT_SLOTS as usize];
        for port in 0..64u32 {
            let key = FlowKey {
                src: addr_v4([10, 0, 0, 1]),
                dst: [0; 4],
                ports: port,
                proto: 6,
                family: 4,
                _pad: 0,
            };
            let (index, slot) = flow_recent_slot(&key);
            assert!(index < sizes::FLOW_RECENT && slot < FLOW_RECENT_SLOTS);
            seen[slot as usize] = true;
        }
        assert!(seen.iter().filter(|s| **s).count() > 8, "slots spread: {seen:?}");
    }

    #[test]
    fn ports_word_is_the_wire_layout() {
        assert_eq!(ports_word(0x1234, 0x0050).to_ne_bytes(), [0x12, 0x34, 0x00, 0x50]);
    }

    /// The names are contracts (metric label values, JSON keys, CLI rows): the table must keep
    /// them byte for byte, at their indexes.
    #[test]
    fn counter_names_are_stable() {
        let cases: [(&[&str], &[&str]); 2] = [
            (
                &reason::NAMES,
                &[
                    "pass_not_ip",
                    "pass_not_service",
                    "pass_unsupported",
                    "pass_malformed",
                    "pass_no_iface",
                    "pass_icmp",
                    "tx",
                    "redirect",
                    "tx_icmp_echo",
                    "tx_icmp_too_big",
                    "drop_no_real",
                    "drop_malformed",
                    "drop_frag_unknown",
                    "drop_tx_error",
                    "pass_vlan",
                    "pass_mac_broadcast",
                    "pass_mac_multicast",
                    "pass_mac_other_host",
                    "tx_tunnel",
                    "tx_tun_too_big",
                    "drop_tun_no_route",
                    "drop_tun_no_neigh",
                    "drop_tun_too_big",
                ],
            ),
            (
                &event::NAMES,
                &[
                    "flow_hit",
                    "flow_new",
                    "flow_repick",
                    "flow_expired",
                    "flow_guard_skip",
                    "flow_rst_untracked",
                    "persist_hit",
                    "sorry",
                    "frag_tracked",
                    "frag_hit",
                    "flow_report_drop",
                    "flow_new_stateless",
                    "flow_stateless_hit",
                    "flow_window_anchor",
                    "flow_filter_skip",
                ],
            ),
        ];
        for (names, expected) in cases {
            assert_eq!(names, expected);
        }
        assert_eq!(reason::NAMES[reason::PASS_MAC_OTHER_HOST as usize], "pass_mac_other_host");
        assert_eq!(event::NAMES[event::FRAG_HIT as usize], "frag_hit");
        assert_eq!((reason::COUNT, event::COUNT), (23, 15));
    }
}
