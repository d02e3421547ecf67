//! Maps shared with the agent. Names and value types come from `lb-common`; sizes are defaults the
//! agent may override at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use lb_common::{Counter, IfaceValue, RealValue, ServiceKey, ServiceValue, reason, sizes};

/// (VIP, port, protocol) → service: the only lookup every IP packet pays for.
#[map(name = "LB_SERVICES")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::with_max_entries(sizes::MAX_SERVICES, 0);

/// Maglev tables of all services, back to back; entries are real ids.
#[map(name = "LB_RINGS")]
pub static RINGS: Array<u32> = Array::with_max_entries(sizes::MAX_RING_ENTRIES, 0);

/// Real id → where to send (MAC, interface, up flag).
#[map(name = "LB_REALS")]
pub static REALS: Array<RealValue> = Array::with_max_entries(sizes::MAX_REALS, 0);

/// Ingress ifindex → this director's MAC on it (the new source MAC).
#[map(name = "LB_IFACES")]
pub static IFACES: HashMap<u32, IfaceValue> = HashMap::with_max_entries(sizes::MAX_IFACES, 0);

/// Counters by verdict reason (`lb_common::reason`).
#[map(name = "LB_GLOBAL_STATS")]
pub static GLOBAL_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(reason::COUNT, 0);

/// Counters by real id: packets and bytes forwarded to it.
#[map(name = "LB_REAL_STATS")]
pub static REAL_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(sizes::MAX_REALS, 0);

/// Counters by service id: packets and bytes that hit the service.
#[map(name = "LB_SERVICE_STATS")]
pub static SERVICE_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(sizes::MAX_SERVICES, 0);
