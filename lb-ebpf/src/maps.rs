//! Maps shared with the agent. Names and value types come from `lb-common`; sizes are defaults the
//! agent overrides at load time from its config.

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use lb_common::{
    Binding, Counter, FlowKey, FlowRecent, FragKey, GlobalConfig, LocalMacKey, PersistKey,
    RealValue, RingSlot, ServiceKey, ServiceValue, SynGuard, TunNextHop, VipKey, VipValue, event,
    reason, ring_slots, sizes,
};

/// (VIP, port, protocol) → service: the lookup every TCP/UDP packet pays for.
#[map(name = "LB_SERVICES")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::with_max_entries(sizes::MAX_SERVICES, 0);

/// Addresses that are VIPs (ICMP and later fragments carry no port).
#[map(name = "LB_VIPS")]
pub static VIPS: HashMap<VipKey, VipValue> = HashMap::with_max_entries(sizes::MAX_SERVICES, 0);

/// (ingress interface, MAC) pairs of frames the program may act on; the value is unused.
#[map(name = "LB_LOCAL_MACS")]
pub static LOCAL_MACS: HashMap<LocalMacKey, u32> = HashMap::with_max_entries(sizes::LOCAL_MACS, 0);

/// Maglev tables of all services, back to back; entries are real ids, two or four per slot
/// (`lb_common::RingSlot`; the agent sizes the map by the width). Mappable, so the agent writes
/// a table through memory instead of one map update per entry.
#[map(name = "LB_RINGS")]
pub static RINGS: Array<RingSlot> = Array::with_max_entries(
    ring_slots(sizes::MAX_RING_ENTRIES, 4),
    aya_ebpf::bindings::BPF_F_MMAPABLE,
);

/// Real id → where to send (MAC, interface, up flag, generation).
#[map(name = "LB_REALS")]
pub static REALS: Array<RealValue> = Array::with_max_entries(sizes::MAX_REALS, 0);

/// Interfaces frames may be redirected to (reals on another interface than the ingress one).
#[map(name = "LB_TX_PORTS")]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(sizes::MAX_IFACES, 0);

/// Established flows → real. A common LRU: with per-CPU lists (BPF_F_NO_COMMON_LRU) each CPU
/// could only use its share of the entries.
#[map(name = "LB_FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, Binding> = LruHashMap::with_max_entries(sizes::FLOWS, 0);

/// (service, masked client) → real, for persistent services.
#[map(name = "LB_PERSIST")]
pub static PERSIST: LruHashMap<PersistKey, Binding> =
    LruHashMap::with_max_entries(sizes::PERSIST, 0);

/// Fragmented datagrams in flight → the real their first fragment went to.
#[map(name = "LB_FRAGS")]
pub static FRAGS: LruHashMap<FragKey, Binding> = LruHashMap::with_max_entries(sizes::FRAGS, 0);

/// Program-wide settings written by the agent (entry 0).
#[map(name = "LB_CONFIG")]
pub static CONFIG: Array<GlobalConfig> = Array::with_max_entries(1, 0);

/// New-flow rate per CPU, for the SYN-flood guard.
#[map(name = "LB_SYN_GUARD")]
pub static SYN_GUARD: PerCpuArray<SynGuard> = PerCpuArray::with_max_entries(1, 0);

/// Counters by verdict reason (`lb_common::reason`).
#[map(name = "LB_GLOBAL_STATS")]
pub static GLOBAL_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(reason::COUNT, 0);

/// Event counters (`lb_common::event`).
#[map(name = "LB_EVENTS")]
pub static EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(event::COUNT, 0);

/// Counters by real id.
#[map(name = "LB_REAL_STATS")]
pub static REAL_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(sizes::MAX_REALS, 0);

/// Counters by service id.
#[map(name = "LB_SERVICE_STATS")]
pub static SERVICE_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(sizes::MAX_SERVICES, 0);

/// New flows reported to the agent for flow sync (`FlowReport`), while `CFG_F_FLOW_SYNC` is set.
#[map(name = "LB_NEW_FLOWS")]
pub static NEW_FLOWS: RingBuf = RingBuf::with_byte_size(sizes::NEW_FLOWS_RING, 0);
/// Per-CPU scratch for the FIB lookup parameters of tunnelled forwarding (see `tunnel`).
#[map(name = "LB_FIB_SCRATCH")]
pub static FIB_SCRATCH: PerCpuArray<aya_ebpf::bindings::bpf_fib_lookup> =
    PerCpuArray::with_max_entries(1, 0);
/// Tunnelled reals' next hops by real id, per CPU (no write shared between CPUs, no torn read);
/// see `tunnel`.
#[map(name = "LB_TUN_NEXTHOPS")]
pub static TUN_NEXTHOPS: PerCpuArray<TunNextHop> =
    PerCpuArray::with_max_entries(sizes::MAX_REALS, 0);

/// The "recent entry" filter of TCP flow entries (`lb_common::FlowRecent`): lets a TCP flow
/// outside a window skip the flow-table lookup. Mappable only for the alignment: each value is
/// one cache line.
#[map(name = "LB_FLOW_RECENT")]
pub static FLOW_RECENT: Array<FlowRecent> =
    Array::with_max_entries(sizes::FLOW_RECENT, aya_ebpf::bindings::BPF_F_MMAPABLE);
