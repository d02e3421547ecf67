//! XDP implementation of the dataplane: loads the embedded `lb-xdp` program, keeps its maps equal
//! to the desired state and attaches it to the service interfaces.
//!
//! Table swaps are atomic for packets: each service owns three areas in the rings map; the agent
//! writes one that no packet reads and then replaces the service's map value to point at it. The
//! third area keeps the anchor table of a table-change window (docs/fast-path.md) while the
//! active table changes again.

mod alloc;
mod fingerprint;
#[cfg(test)]
mod fixtures;
pub mod flows;
mod pin;
mod rings;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMapHash, HashMap as BpfHashMap, Map, PerCpuArray, PerCpuValues},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use foldhash::{HashMap, HashMapExt as _, HashSet};
use lb_common::{
    self as common, GlobalConfig, LocalMacKey, REAL_F_UP, RealValue, SVC_F_SRC_HASH, ServiceKey,
    ServiceValue, VIP_F_ICMP_ECHO, VipKey, VipValue, event, map_names, reason, sizes,
};

pub use self::flows::FlowSource;
pub use self::pin::{DEFAULT_PIN_DIR, Pinning, choose_dir as choose_pin_dir, is_bpffs};
pub use self::rings::Width as RingWidth;
use self::{
    alloc::{IdAlloc, RegionAlloc},
    pin::{RealRecord, ServiceRecord, StateFile},
};
use super::{Attachment, Counter, Counters, Dataplane, DataplaneError, MapUsage, Status};
use crate::{
    config::{LbKind, Tunnel, VirtualServerKey},
    desired::{Desired, Globals, RealDesired, Ring, ServiceDesired},
    net::iface::{self, Interface},
};

/// The compiled XDP program, built by build.rs.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-xdp"));

/// How to attach: `auto` picks native XDP where the driver can do it properly, else generic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeSetting {
    #[default]
    Auto,
    Native,
    Generic,
}

/// Sizes of the maps, fixed at load time.
#[derive(Clone, Copy, Debug)]
pub struct XdpLimits {
    pub max_services: u32,
    pub max_reals: u32,
    pub ring_entries: u32,
    pub flows: u32,
}

impl XdpLimits {
    /// The width of ring entries: 16 bits when every real id fits in them.
    pub fn ring_width(&self) -> rings::Width {
        rings::Width::for_reals(self.max_reals)
    }

    /// Slots of the rings map (`lb_common::RingSlot`) holding `ring_entries` entries.
    pub fn ring_slots(&self) -> u32 {
        lb_common::ring_slots(self.ring_entries, self.ring_width().bytes() as u32)
    }
}

impl Default for XdpLimits {
    fn default() -> Self {
        Self {
            max_services: sizes::MAX_SERVICES,
            max_reals: sizes::MAX_REALS,
            ring_entries: sizes::MAX_RING_ENTRIES,
            flows: sizes::FLOWS,
        }
    }
}

/// A real as installed: its id in the maps and the value last written.
#[derive(Debug)]
struct RealSlot {
    id: u32,
    value: RealValue,
    /// The real may keep established flows (up, drained, or down with `inhibit_on_failure`),
    /// whether or not its slot is usable now (a standby service's reals have no interface yet):
    /// what a received sync entry is judged by.
    keeps_flows: bool,
}

/// Ring areas per service: the active table, the anchor of a window, and one to write into.
const AREAS: u32 = 3;

/// A service as installed.
#[derive(Debug)]
struct ServiceSlot {
    id: u32,
    /// Start of this service's `AREAS` ring areas, each `table_size` long.
    ring_base: u32,
    table_size: u32,
    /// What each area holds; `None` until written.
    areas: [Option<Table>; AREAS as usize],
    /// Per area, while it holds the table written last: a fingerprint job reading it back
    /// trusts what it read only if this is still there after (see `fingerprint`).
    written: [Option<fingerprint::AreaGuard>; AREAS as usize],
    /// Area the service value points at, if any table is live.
    active: Option<usize>,
    /// The services map has the entry: packets to the service are forwarded. A standby service
    /// (its VRRP instance is not MASTER) has its reals and table written but no entry, so taking
    /// over is one map update instead of a table's worth.
    published: bool,
    /// Ring regions (start, len) given up by a table-size change: each is freed once the new
    /// table is live and no window's anchor lies in it.
    retired: Vec<(u32, u32)>,
    /// As last written (or staged): the table, and the window with its anchor.
    value: ServiceValue,
    reals: HashMap<(IpAddr, u16), RealSlot>,
    sorry: Option<((IpAddr, u16), RealSlot)>,
}

/// A table as written into a ring area: the desired Maglev table (indexes into the service's
/// reals; what decides it, shared with the desired state, not its entries) and the real id of
/// each index. Entry `i` of the area is `ids[ring[i]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Table {
    ring: Ring,
    ids: Vec<u32>,
}

impl Table {
    fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The real ids, entry by entry, as the map holds them, from the ring's `indexes` (built
    /// here when not given).
    fn entries(&self, indexes: Option<Vec<u32>>) -> Vec<u32> {
        let indexes = indexes.unwrap_or_else(|| self.ring.entries());
        indexes.iter().map(|&i| self.ids.get(i as usize).copied().unwrap_or(0)).collect()
    }
}

/// Services whose tables an apply builds together (on every CPU) before writing them one by one:
/// bounds the tables held at once (64 × 256 KiB at M = 65537) while keeping the CPUs busy.
const BUILD_BATCH: usize = 64;

#[derive(Debug)]
struct Attached {
    name: String,
    link: LinkRef,
    mode: &'static str,
}

/// An attachment owned by the program (detached when dropped) or pinned (survives the agent).
#[derive(Debug)]
enum LinkRef {
    Owned(XdpLinkId),
    Pinned(aya::programs::links::PinnedLink),
}

/// A table built by `apply` ahead of its write: the ring, its entries (`None`: the ring holds its
/// table built ahead at start-up, unpacked when written) and the service's `pick_head`.
type Prebuilt = (Ring, Option<Vec<u32>>, Vec<u8>);

pub struct XdpDataplane {
    ebpf: Ebpf,
    mode: XdpModeSetting,
    program_id: u32,
    service_ids: IdAlloc,
    real_ids: IdAlloc,
    rings: RegionAlloc,
    services: HashMap<VirtualServerKey, ServiceSlot>,
    /// Interfaces frames may leave through (ifindex → this director's MAC on it): the devmap's
    /// ports, and the source MAC written into each real's slot.
    ifaces: BTreeMap<u32, [u8; 6]>,
    /// (attached interface, its MAC): the destination MACs the program acts on.
    local_macs: BTreeSet<LocalMacKey>,
    vips: HashMap<VipKey, VipValue>,
    globals: Option<Globals>,
    /// `GlobalConfig::flags` as last written.
    config_flags: Option<u32>,
    /// Flow sync is on: the program reports new flows (`CFG_F_FLOW_SYNC`).
    flow_sync: bool,
    /// Tunnelled reals' routes are looked up for every packet (`CFG_F_TUN_FIB_EACH`): the
    /// benchmark's control and tests only; the agent keeps the program's next-hop cache.
    tun_fib_each: bool,
    /// The benchmark's control: the program ignores the "recent entry" filter.
    no_flow_filter: bool,
    /// The benchmark's control: TCP inserts without their filter stamp.
    no_flow_stamp: bool,
    /// Bumped for every real slot handed out, so stale flow entries are recognised.
    next_generation: u32,
    /// Maglev table entries written since load (tests check that a takeover writes none).
    ring_writes: u64,
    /// Real ids freed while a window's anchor table may still name them: (id, last second of
    /// the window). Given out again only after it, so an anchor never names another real.
    quarantined: Vec<(u32, u32)>,
    /// The counter maps were created by this load: a slot never handed out before is zero and
    /// needs no reset (11,000 map updates spared at start-up for 1,000 services x 10 reals).
    fresh_counters: bool,
    /// Tables built ahead of their writes by `apply` (see `BUILD_BATCH`), taken by `swap_table`.
    /// With each, the service's `pick_head`: its fingerprint is hashed once the table is written.
    prebuilt: HashMap<VirtualServerKey, Prebuilt>,
    /// Fingerprints of the written tables, hashed on a background thread.
    hasher: fingerprint::Hasher,
    /// Tests: seconds the agent's clock is set back, to put windows in the past.
    #[cfg(test)]
    rewind: u32,
    attached: BTreeMap<u32, Attached>,
    nr_cpus: usize,
    limits: XdpLimits,
    pinning: Option<Pinning>,
    /// Interfaces adopted from a previous agent: the mode it attached them with.
    adopted_links: BTreeMap<String, &'static str>,
    /// Services the previous agent left forwarding (a live table), sorted.
    adopted_services: Vec<VirtualServerKey>,
}

/// A key that is not there: aya reports it as `KeyNotFound` for hash maps, as the syscall's
/// ENOENT for devmaps.
fn absent(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

impl XdpDataplane {
    /// Loads the program and its maps into the kernel; nothing is attached until `apply`.
    pub fn load(mode: XdpModeSetting, limits: XdpLimits) -> Result<Self, DataplaneError> {
        Self::load_pinned(mode, limits, None)
    }

    /// Loads with maps and links pinned under `pinning`; adopts what a previous agent left there
    /// (its flows, slots and attachments), refusing state of another layout.
    pub fn load_pinned(
        mode: XdpModeSetting,
        limits: XdpLimits,
        pinning: Option<Pinning>,
    ) -> Result<Self, DataplaneError> {
        if PROGRAM.is_empty() {
            return Err(DataplaneError::NoProgram);
        }
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(map_names::SERVICES, limits.max_services)
            .map_max_entries(map_names::SERVICE_STATS, limits.max_services)
            .map_max_entries(map_names::REALS, limits.max_reals)
            .map_max_entries(map_names::REAL_STATS, limits.max_reals)
            .map_max_entries(map_names::TUN_NEXTHOPS, limits.max_reals)
            // Two or four entries per slot.
            .map_max_entries(map_names::RINGS, limits.ring_slots())
            .map_max_entries(map_names::VIPS, limits.max_services)
            .map_max_entries(map_names::FLOWS, limits.flows);
        let mut state = None;
        if let Some(p) = &pinning {
            std::fs::create_dir_all(&p.dir)
                .map_err(|e| DataplaneError::Pin(format!("{}: {e}", p.dir.display())))?;
            if pin::check_pinned(p, &limits)? {
                let s = pin::read_state(&p.state_file)
                    .map_err(|e| DataplaneError::Pin(format!("{}: {e}", p.state_file.display())))?
                    .ok_or_else(|| DataplaneError::PinnedLayout {
                        dir: p.dir.clone(),
                        detail: format!("no agent state in {}", p.state_file.display()),
                    })?;
                if s.layout != pin::LAYOUT {
                    return Err(DataplaneError::PinnedLayout {
                        dir: p.dir.clone(),
                        detail: format!(
                            "layout {} pinned, this build has {}",
                            s.layout,
                            pin::LAYOUT
                        ),
                    });
                }
                state = Some(s);
            }
            for (name, ..) in pin::expected_maps(&limits) {
                loader.map_pin_path(name, p.map_path(name));
            }
        }
        let mut ebpf = loader.load(PROGRAM)?;
        if state.is_none() {
            // New maps (none was pinned): an empty flow table, so a filter that says so.
            let name = map_names::FLOW_RECENT;
            let map = ebpf.map(name).ok_or(DataplaneError::MissingMap(name))?;
            let Map::Array(data) = map else { return Err(DataplaneError::MissingMap(name)) };
            flows::age_new_filter(data, flows::monotonic_secs())?;
        }
        let prog = program(&mut ebpf)?;
        load_verified(prog)?;
        let program_id = prog.info()?.id();
        let nr_cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Exhausted {
            what: "CPU count",
            detail: e.to_string(),
        })?;
        Self {
            ebpf,
            mode,
            program_id,
            service_ids: IdAlloc::new(0, limits.max_services),
            // Real id 0 means "none" in the rings.
            real_ids: IdAlloc::new(1, limits.max_reals),
            rings: RegionAlloc::new(limits.ring_entries),
            services: HashMap::new(),
            ifaces: BTreeMap::new(),
            local_macs: BTreeSet::new(),
            vips: HashMap::new(),
            globals: None,
            config_flags: None,
            flow_sync: false,
            tun_fib_each: false,
            no_flow_filter: false,
            no_flow_stamp: false,
            next_generation: 1,
            ring_writes: 0,
            quarantined: Vec::new(),
            prebuilt: HashMap::new(),
            hasher: fingerprint::Hasher::default(),
            // No pinned maps were found (else `state` holds the previous agent's): these are new.
            fresh_counters: state.is_none(),
            #[cfg(test)]
            rewind: 0,
            attached: BTreeMap::new(),
            nr_cpus,
            limits,
            pinning,
            adopted_links: BTreeMap::new(),
            adopted_services: Vec::new(),
        }
        .adopt(state)
    }

    /// Takes over the bookkeeping of the agent that pinned the maps.
    fn adopt(mut self, state: Option<StateFile>) -> Result<Self, DataplaneError> {
        let Some(state) = state else { return Ok(self) };
        let mut service_ids = Vec::new();
        let mut real_ids = Vec::new();
        let mut regions = Vec::new();
        let services: BpfHashMap<_, ServiceKey, ServiceValue> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, map_names::SERVICES)?)
                .map_err(map_err(map_names::SERVICES))?;
        let mut slots = HashMap::new();
        for rec in &state.services {
            let protocol = rec.protocol.parse().map_err(|e| DataplaneError::Pin(format!("{e}")))?;
            let key = VirtualServerKey::addr(rec.vip, rec.port, protocol);
            let value = services.get(&service_key(&key), 0).ok();
            service_ids.push(rec.id);
            regions.push((rec.ring_base, AREAS * rec.table_size));
            regions.extend(&rec.retired);
            let slot_of = |r: &RealRecord| {
                let value = r.value();
                RealSlot { id: r.id, value, keeps_flows: value.flags & REAL_F_UP != 0 }
            };
            real_ids.extend(rec.reals.iter().chain(&rec.sorry).map(|r| r.id));
            slots.insert(
                key,
                ServiceSlot {
                    id: rec.id,
                    ring_base: rec.ring_base,
                    table_size: rec.table_size,
                    // Unknown contents: the next table is written in full, then swapped in (a
                    // change: it opens a window, keeping the pinned one's anchor while open).
                    areas: [None, None, None],
                    written: Default::default(),
                    active: value.and(rec.active),
                    published: value.is_some(),
                    retired: rec.retired.clone(),
                    value: value.unwrap_or_default(),
                    reals: rec.reals.iter().map(|r| ((r.address, r.port), slot_of(r))).collect(),
                    sorry: rec.sorry.as_ref().map(|r| ((r.address, r.port), slot_of(r))),
                },
            );
        }
        // Services the state does not know (a crash between two writes) must not linger.
        let unknown: Vec<ServiceKey> = services
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !slots.keys().any(|s| service_key(s) == *k))
            .collect();
        let mut services: BpfHashMap<_, ServiceKey, ServiceValue> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, map_names::SERVICES)?)
                .map_err(map_err(map_names::SERVICES))?;
        for k in unknown {
            let _ = services.remove(&k);
        }
        self.service_ids = IdAlloc::from_used(0, self.limits.max_services, &service_ids);
        real_ids.extend(state.quarantined.iter().map(|&(id, _)| id));
        self.quarantined = state.quarantined.clone();
        self.real_ids = IdAlloc::from_used(1, self.limits.max_reals, &real_ids);
        self.rings = RegionAlloc::from_used(self.limits.ring_entries, &regions);
        self.next_generation = state.next_generation.max(1);
        self.adopted_services =
            slots.iter().filter(|(_, s)| s.active.is_some()).map(|(k, _)| *k).collect();
        self.adopted_services.sort();
        self.services = slots;
        // The devmap's ports; their MACs come with the first apply.
        let ports = DevMapHash::try_from(map_mut(&mut self.ebpf, map_names::TX_PORTS)?)
            .map_err(map_err(map_names::TX_PORTS))?;
        self.ifaces = ports.keys().filter_map(Result::ok).map(|idx| (idx, [0; 6])).collect();
        let vips: BpfHashMap<_, VipKey, VipValue> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, map_names::VIPS)?)
                .map_err(map_err(map_names::VIPS))?;
        self.vips = vips.iter().filter_map(Result::ok).collect();
        let macs: BpfHashMap<_, LocalMacKey, u32> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, map_names::LOCAL_MACS)?)
                .map_err(map_err(map_names::LOCAL_MACS))?;
        self.local_macs = macs.keys().filter_map(Result::ok).collect();
        // Ports in the devmap are re-added as needed; start from what the interfaces say.
        self.adopted_links = state
            .links
            .iter()
            .map(|(_, name, mode)| {
                (name.clone(), if mode == "native" { "native" } else { "generic" })
            })
            .collect();
        tracing::info!(
            services = self.services.len(),
            reals = real_ids.len(),
            links = self.adopted_links.len(),
            "adopted the pinned dataplane of a previous agent"
        );
        Ok(self)
    }

    /// What the previous agent left, as `lb status` reports it after adoption.
    pub fn adopted(&self) -> Vec<String> {
        self.adopted_links.keys().cloned().collect()
    }

    /// Writes the bookkeeping next to the pins, so a successor can adopt them.
    fn save_state(&self) -> Result<(), DataplaneError> {
        let Some(p) = &self.pinning else { return Ok(()) };
        let record = |(addr, port): &(IpAddr, u16), r: &RealSlot| RealRecord {
            address: *addr,
            port: *port,
            id: r.id,
            mac: r.value.mac,
            flags: r.value.flags,
            src_mac: r.value.src_mac,
            ifindex: r.value.ifindex,
            generation: r.value.generation,
            tun: r.value.tun,
            tun_family: r.value.tun_family,
            tun_port_be: r.value.tun_port_be,
            tun_dst: r.value.tun_dst,
            tun_src: r.value.tun_src,
        };
        let state = StateFile {
            layout: pin::LAYOUT,
            next_generation: self.next_generation,
            quarantined: self.quarantined.clone(),
            services: self
                .services
                .iter()
                .map(|(k, s)| ServiceRecord {
                    vip: k.vip,
                    port: k.port,
                    protocol: k.protocol.as_str().to_owned(),
                    id: s.id,
                    ring_base: s.ring_base,
                    table_size: s.table_size,
                    active: s.active,
                    retired: s.retired.clone(),
                    reals: s.reals.iter().map(|(a, r)| record(a, r)).collect(),
                    sorry: s.sorry.as_ref().map(|(a, r)| record(a, r)),
                })
                .collect(),
            links: self
                .attached
                .iter()
                .map(|(idx, a)| (*idx, a.name.clone(), a.mode.to_owned()))
                .collect(),
        };
        pin::write_state(&p.state_file, &state)
            .map_err(|e| DataplaneError::Pin(format!("{}: {e}", p.state_file.display())))
    }

    fn detach_link(&mut self, a: Attached) -> Result<(), DataplaneError> {
        match a.link {
            LinkRef::Owned(id) => self.program()?.detach(id)?,
            LinkRef::Pinned(pinned) => {
                // Unpinning drops the last reference once our fd closes: the link detaches.
                drop(pinned.unpin().map_err(|e| DataplaneError::Pin(format!("unpinning: {e}")))?);
            }
        }
        tracing::info!(interface = %a.name, "XDP detached");
        Ok(())
    }

    /// Maglev table entries written since load.
    pub fn ring_writes(&self) -> u64 {
        self.ring_writes
    }

    /// Also acts on frames to `mac` arriving on `ifindex`, besides the interfaces' own MACs, until
    /// the program is unloaded. For benchmarks: BPF_PROG_TEST_RUN's `repeat` reruns the frame the
    /// first run rewrote, addressed to the real's MAC from then on.
    #[doc(hidden)]
    pub fn accept_extra_mac(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<(), DataplaneError> {
        let mut map: BpfHashMap<_, LocalMacKey, u32> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, map_names::LOCAL_MACS)?)
                .map_err(map_err(map_names::LOCAL_MACS))?;
        map.insert(LocalMacKey::new(ifindex, mac), 0, 0).map_err(map_err(map_names::LOCAL_MACS))
    }

    /// The loaded program, for BPF_PROG_TEST_RUN in tests and benchmarks.
    pub fn program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        program(&mut self.ebpf)
    }

    /// Turns the program's new-flow reports (flow sync) on or off; takes effect at once when the
    /// settings were written already, else with the first `apply`.
    pub fn set_flow_sync(&mut self, on: bool) -> Result<(), DataplaneError> {
        self.flow_sync = on;
        self.resync_globals()
    }

    /// Tunnelled reals: a FIB lookup for every packet (on) or the program's next-hop cache (off,
    /// the default); the benchmark compares the two in one run. Takes effect like
    /// [`Self::set_flow_sync`].
    pub fn set_tun_fib_each(&mut self, on: bool) -> Result<(), DataplaneError> {
        self.tun_fib_each = on;
        self.resync_globals()
    }

    /// TCP flows outside a window: the flow-table lookup even when the "recent entry" filter
    /// proves there is no entry (off: the default, the agent's). For the benchmark's control
    /// rows; takes effect like [`Self::set_flow_sync`].
    #[doc(hidden)]
    pub fn set_no_flow_filter(&mut self, on: bool) -> Result<(), DataplaneError> {
        self.no_flow_filter = on;
        self.resync_globals()
    }

    /// TCP inserts without their filter stamp (`CFG_F_NO_FLOW_STAMP`; off: the default, the
    /// agent's). Breaks the filter's invariant: for the benchmark's control rows only; takes
    /// effect like [`Self::set_flow_sync`].
    #[doc(hidden)]
    pub fn set_no_flow_stamp(&mut self, on: bool) -> Result<(), DataplaneError> {
        self.no_flow_stamp = on;
        self.resync_globals()
    }

    /// Rewrites the program's settings after a flag above changed, once they were written (else
    /// the first `apply` writes them).
    fn resync_globals(&mut self) -> Result<(), DataplaneError> {
        match (self.globals, self.config_flags) {
            (Some(g), Some(flags)) => {
                self.sync_globals(&g, flags & common::CFG_F_NO_ALL_PORTS == 0)
            }
            _ => Ok(()),
        }
    }

    /// The new-flow reports ring buffer, for the flow-sync task (once: the reader owns it).
    pub fn take_flow_reports(
        &mut self,
    ) -> Result<aya::maps::RingBuf<aya::maps::MapData>, DataplaneError> {
        let name = map_names::NEW_FLOWS;
        let map = self.ebpf.take_map(name).ok_or(DataplaneError::MissingMap(name))?;
        aya::maps::RingBuf::try_from(map).map_err(map_err(name))
    }

    /// This director's services and real slots, for translating sync entries both ways.
    pub fn sync_slots(&self) -> crate::sync::edge::Slots {
        use crate::sync::edge::{ServiceSlots, SlotInfo};
        let mut out = crate::sync::edge::Slots {
            udp_timeout: self.globals.as_ref().map_or(0, |g| g.udp_timeout),
            ..Default::default()
        };
        for (key, slot) in &self.services {
            let mut svc = ServiceSlots {
                id: slot.id,
                persistence: slot.value.persist_timeout,
                persist_mask: slot.value.persist_mask,
                reals: std::collections::HashMap::new(),
            };
            for (&(ip, port), r) in
                slot.reals.iter().chain(slot.sorry.as_ref().map(|(k, r)| (k, r)))
            {
                let addr = std::net::SocketAddr::new(ip, port);
                let usable = r.keeps_flows;
                svc.reals
                    .insert(addr, SlotInfo { id: r.id, generation: r.value.generation, usable });
                out.by_id.insert(r.id, (addr, r.value.generation));
            }
            out.services.insert((key.vip, key.port, key.protocol.ip_proto()), svc);
        }
        out
    }

    /// The maps the flow-sync edge uses: the new-flow reports (taken: once) and handles on the
    /// flow and persistence tables and the flow table's "recent entry" filter.
    pub fn sync_maps(&mut self) -> Result<crate::sync::edge::SyncMaps, DataplaneError> {
        let reports = self.take_flow_reports()?;
        let open = |name: &'static str| -> Result<aya::maps::MapData, DataplaneError> {
            let map = self.ebpf.map(name).ok_or(DataplaneError::MissingMap(name))?;
            flows::dup_map(map, name)
        };
        let flows = BpfHashMap::try_from(Map::LruHashMap(open(map_names::FLOWS)?))
            .map_err(map_err(map_names::FLOWS))?;
        let persist = BpfHashMap::try_from(Map::LruHashMap(open(map_names::PERSIST)?))
            .map_err(map_err(map_names::PERSIST))?;
        let recent = Array::try_from(Map::Array(open(map_names::FLOW_RECENT)?))
            .map_err(map_err(map_names::FLOW_RECENT))?;
        Ok(crate::sync::edge::SyncMaps { reports, flows, persist, recent })
    }

    /// Writes the program-wide settings. `all_ports`: an all-ports service is (or is about to be)
    /// in the services map, so the program must look one up when no exact-port service matches.
    fn sync_globals(&mut self, g: &Globals, all_ports: bool) -> Result<(), DataplaneError> {
        let mut flags = if all_ports { 0 } else { common::CFG_F_NO_ALL_PORTS };
        if self.flow_sync {
            flags |= common::CFG_F_FLOW_SYNC;
        }
        if self.tun_fib_each {
            flags |= common::CFG_F_TUN_FIB_EACH;
        }
        if self.no_flow_filter {
            flags |= common::CFG_F_NO_FLOW_FILTER;
        }
        if self.no_flow_stamp {
            flags |= common::CFG_F_NO_FLOW_STAMP;
        }
        flags |= window_covers(g);
        if self.globals.as_ref() == Some(g) && self.config_flags == Some(flags) {
            return Ok(());
        }
        let value = GlobalConfig {
            hash_seed: g.hash_seed,
            udp_timeout: g.udp_timeout,
            syn_threshold: g.syn_threshold,
            flags,
            tcp_timeout: tcp_entry_timeout(g.tcp_window),
        };
        let mut map: Array<_, GlobalConfig> =
            Array::try_from(map_mut(&mut self.ebpf, map_names::CONFIG)?)
                .map_err(map_err(map_names::CONFIG))?;
        map.set(0, value, 0).map_err(map_err(map_names::CONFIG))?;
        self.globals = Some(*g);
        self.config_flags = Some(flags);
        Ok(())
    }

    /// Interfaces frames may leave through: the devmap for redirects, and their MACs for the
    /// reals' slots (synced after this).
    fn sync_ifaces(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        let want: BTreeMap<u32, [u8; 6]> = desired
            .interfaces
            .iter()
            .chain(&desired.tx_interfaces)
            .map(|i| (i.ifindex, i.mac.0))
            .collect();
        if want == self.ifaces {
            return Ok(());
        }
        let mut ports = DevMapHash::try_from(map_mut(&mut self.ebpf, map_names::TX_PORTS)?)
            .map_err(map_err(map_names::TX_PORTS))?;
        for idx in want.keys().filter(|k| !self.ifaces.contains_key(k)) {
            ports.insert(*idx, *idx, None, 0).map_err(|e| match e {
                aya::maps::xdp::XdpMapError::MapError(e) => map_err(map_names::TX_PORTS)(e),
                other => {
                    DataplaneError::Exhausted { what: "redirect ports", detail: other.to_string() }
                }
            })?;
        }
        for idx in self.ifaces.keys().filter(|k| !want.contains_key(k)) {
            // The kernel removes a deleted interface from the devmap itself.
            match ports.remove(*idx) {
                Ok(()) => {}
                Err(e) if absent(&e) => {}
                Err(e) => return Err(map_err(map_names::TX_PORTS)(e)),
            }
        }
        self.ifaces = want;
        Ok(())
    }

    /// The destination MACs the program acts on: each attached interface's own. Kept before the
    /// attachment, so a newly attached interface forwards from its first frame; an interface whose
    /// MAC changed is followed on the next apply.
    fn sync_local_macs(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        let want: BTreeSet<LocalMacKey> =
            desired.interfaces.iter().map(|i| LocalMacKey::new(i.ifindex, i.mac.0)).collect();
        if want == self.local_macs {
            return Ok(());
        }
        let mut map: BpfHashMap<_, LocalMacKey, u32> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, map_names::LOCAL_MACS)?)
                .map_err(map_err(map_names::LOCAL_MACS))?;
        for k in want.difference(&self.local_macs) {
            map.insert(k, 0, 0).map_err(map_err(map_names::LOCAL_MACS))?;
        }
        for k in self.local_macs.difference(&want) {
            match map.remove(k) {
                Ok(()) => {}
                Err(e) if absent(&e) => {}
                Err(e) => return Err(map_err(map_names::LOCAL_MACS)(e)),
            }
        }
        self.local_macs = want;
        Ok(())
    }

    /// Every address that has a service, with its ICMP echo setting.
    fn sync_vips(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        let flags = if desired.globals.icmp_echo { VIP_F_ICMP_ECHO } else { 0 };
        let want: HashMap<VipKey, VipValue> =
            // A standby's VIP is the master's business (echo replies, fragments).
            desired
                .services
                .iter()
                .filter(|s| s.active)
                .map(|s| (vip_key(s.key.vip), VipValue { flags }))
                .collect();
        if want == self.vips {
            return Ok(());
        }
        let mut map: BpfHashMap<_, VipKey, VipValue> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, map_names::VIPS)?)
                .map_err(map_err(map_names::VIPS))?;
        for (k, v) in &want {
            if self.vips.get(k) != Some(v) {
                map.insert(k, v, 0).map_err(map_err(map_names::VIPS))?;
            }
        }
        for k in self.vips.keys().filter(|k| !want.contains_key(k)) {
            match map.remove(k) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(map_names::VIPS)(e)),
            }
        }
        self.vips = want;
        Ok(())
    }

    fn attach_missing(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        for iface in &desired.interfaces {
            if self.attached.contains_key(&iface.ifindex) {
                continue;
            }
            let (link, mode) = match self.pinning.clone() {
                None => {
                    let (id, mode) = self.attach(iface)?;
                    (LinkRef::Owned(id), mode)
                }
                Some(p) => self.attach_pinned(iface, &p)?,
            };
            tracing::info!(interface = %iface.name, mode, driver = %iface.driver, "XDP attached");
            self.attached.insert(iface.ifindex, Attached { name: iface.name.clone(), link, mode });
        }
        Ok(())
    }

    /// Attaches through a pinned link: the previous agent's link is taken over with an atomic
    /// program replacement (no packet sees no program), else a new link is made and pinned.
    fn attach_pinned(
        &mut self,
        iface: &Interface,
        p: &Pinning,
    ) -> Result<(LinkRef, &'static str), DataplaneError> {
        use aya::programs::links::{FdLink, PinnedLink};
        let path = p.link_path(&iface.name);
        let pin_err =
            |e: &dyn std::fmt::Display| DataplaneError::Pin(format!("{}: {e}", path.display()));
        let (id, mode) = if path.exists() {
            let old = PinnedLink::from_pin(&path).map_err(|e| pin_err(&e))?;
            let fd: FdLink = old.unpin().map_err(|e| pin_err(&e))?;
            let link = aya::programs::xdp::XdpLink::try_from(fd).map_err(|e| pin_err(&e))?;
            let id = self.program()?.attach_to_link(link)?;
            let mode = self.adopted_links.get(&iface.name).copied().unwrap_or("generic");
            tracing::info!(interface = %iface.name, "took over the pinned XDP link (program replaced atomically)");
            (id, mode)
        } else {
            self.attach(iface)?
        };
        let link = self.program()?.take_link(id)?;
        let fd = FdLink::try_from(link).map_err(|e| pin_err(&e))?;
        let pinned = fd.pin(&path).map_err(|e| pin_err(&e))?;
        Ok((LinkRef::Pinned(pinned), mode))
    }

    fn attach(&mut self, iface: &Interface) -> Result<(XdpLinkId, &'static str), DataplaneError> {
        let setting = self.mode;
        let prog = self.program()?;
        let attach = |prog: &mut Xdp, mode| {
            prog.attach(&iface.name, mode)
                .map_err(|source| DataplaneError::Attach { interface: iface.name.clone(), source })
        };
        match setting {
            XdpModeSetting::Native => Ok((attach(prog, XdpMode::Driver)?, "native")),
            XdpModeSetting::Generic => Ok((attach(prog, XdpMode::Skb)?, "generic")),
            XdpModeSetting::Auto if iface.driver == "veth" => {
                // Native XDP_TX on veth silently drops unless the peer runs an XDP program too,
                // which the agent cannot ensure: generic mode is the one that forwards.
                Ok((attach(prog, XdpMode::Skb)?, "generic"))
            }
            XdpModeSetting::Auto => match attach(prog, XdpMode::Driver) {
                Ok(link) => Ok((link, "native")),
                Err(e) => {
                    tracing::warn!(interface = %iface.name, error = %e, "native XDP unavailable, using generic mode");
                    Ok((attach(prog, XdpMode::Skb)?, "generic"))
                }
            },
        }
    }

    fn detach_unwanted(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        let stale: Vec<u32> = self
            .attached
            .keys()
            .filter(|idx| !desired.interfaces.iter().any(|i| i.ifindex == **idx))
            .copied()
            .collect();
        for idx in stale {
            if let Some(a) = self.attached.remove(&idx) {
                let name = a.name.clone();
                if let Err(e) = self.detach_link(a) {
                    // A deleted interface took its XDP link with it (it may exist again under
                    // another index: that one is attached as a new interface).
                    if iface::index(&name).is_ok_and(|now| now == idx) {
                        return Err(e);
                    }
                    tracing::info!(interface = %name, ifindex = idx,
                        "XDP link of a deleted interface dropped: {e}");
                }
            }
        }
        // Links a previous agent pinned for interfaces no longer served.
        if let Some(p) = self.pinning.clone() {
            let gone: Vec<String> = self
                .adopted_links
                .keys()
                .filter(|n| !desired.interfaces.iter().any(|i| &i.name == *n))
                .cloned()
                .collect();
            for name in gone {
                self.adopted_links.remove(&name);
                let path = p.link_path(&name);
                if let Ok(old) = aya::programs::links::PinnedLink::from_pin(&path) {
                    drop(
                        old.unpin()
                            .map_err(|e| DataplaneError::Pin(format!("{}: {e}", path.display())))?,
                    );
                    tracing::info!(interface = %name, "XDP detached (left by a previous agent)");
                }
            }
        }
        Ok(())
    }

    /// Zeroes a per-CPU counter slot before an id is (re)used, so counts start from nothing.
    fn reset_counter(&mut self, map_name: &'static str, index: u32) -> Result<(), DataplaneError> {
        let zeros = PerCpuValues::try_from(vec![common::Counter::default(); self.nr_cpus])
            .map_err(|e| DataplaneError::Map { map: map_name, source: e.into() })?;
        let mut map: PerCpuArray<_, common::Counter> =
            PerCpuArray::try_from(map_mut(&mut self.ebpf, map_name)?).map_err(map_err(map_name))?;
        map.set(index, zeros, 0).map_err(map_err(map_name))
    }

    fn read_counter(&self, map_name: &'static str, index: u32) -> Result<Counter, DataplaneError> {
        let map = self.ebpf.map(map_name).ok_or(DataplaneError::MissingMap(map_name))?;
        let map: PerCpuArray<_, common::Counter> =
            PerCpuArray::try_from(map).map_err(map_err(map_name))?;
        let values = map.get(&index, 0).map_err(map_err(map_name))?;
        Ok(values.iter().fold(Counter::default(), |acc, c| Counter {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
            new_flows: acc.new_flows + c.new_flows,
        }))
    }

    fn write_real(&mut self, id: u32, value: RealValue) -> Result<(), DataplaneError> {
        let mut map: Array<_, RealValue> =
            Array::try_from(map_mut(&mut self.ebpf, map_names::REALS)?)
                .map_err(map_err(map_names::REALS))?;
        map.set(id, value, 0).map_err(map_err(map_names::REALS))
    }

    /// Writes a real's slot, allocating one (with a fresh generation) for a new real.
    fn sync_real(
        &mut self,
        existing: Option<(u32, RealValue)>,
        real: &RealDesired,
        svc: &ServiceDesired,
    ) -> Result<RealSlot, DataplaneError> {
        let key = svc.key;
        let mut value = match real.lb_kind {
            LbKind::Tun(tunnel) => tunnel_value(real, tunnel, svc.tun_source),
            _ => {
                let ifindex = real.ifindex.unwrap_or(0);
                // The interfaces are synced first; one the agent does not know leaves the real
                // unusable.
                let src_mac = self.ifaces.get(&ifindex).copied();
                RealValue {
                    mac: real.mac.map(|m| m.0).unwrap_or_default(),
                    // Drained (and inhibited) reals stay usable for the flows already on them.
                    flags: if real.keeps_flows && src_mac.is_some() { REAL_F_UP } else { 0 },
                    src_mac: src_mac.unwrap_or_default(),
                    ifindex,
                    ..Default::default()
                }
            }
        };
        match existing {
            Some((id, old)) => {
                value.generation = old.generation;
                if old != value {
                    self.write_real(id, value)?;
                }
                Ok(RealSlot { id, value, keeps_flows: real.keeps_flows })
            }
            None => {
                let (id, first) = self.real_ids.alloc_telling_first().ok_or_else(|| {
                    DataplaneError::Exhausted {
                        what: "real-server slots",
                        detail: format!("raise [dataplane] max_reals (service {key})"),
                    }
                })?;
                value.generation = self.next_generation;
                self.next_generation = self.next_generation.wrapping_add(1).max(1);
                if !(first && self.fresh_counters) {
                    self.reset_counter(map_names::REAL_STATS, id)?;
                }
                self.write_real(id, value)?;
                Ok(RealSlot { id, value, keeps_flows: real.keeps_flows })
            }
        }
    }

    /// Installs or updates one service.
    fn sync_service(&mut self, svc: &ServiceDesired) -> Result<(), DataplaneError> {
        let key = svc.key;
        if !self.services.contains_key(&key) {
            let slot = self.new_service_slot(svc)?;
            self.services.insert(key, slot);
        }
        self.resize_ring(key, svc.table_size)?;

        // Reals first: every id the new table uses must be valid before the table goes live.
        let mut ring_ids = Vec::with_capacity(svc.reals.len());
        for real in &svc.reals {
            let rkey = (real.address, real.port);
            let existing =
                self.services.get(&key).and_then(|s| s.reals.get(&rkey)).map(|r| (r.id, r.value));
            let slot = self.sync_real(existing, real, svc)?;
            ring_ids.push(slot.id);
            if let Some(s) = self.services.get_mut(&key) {
                s.reals.insert(rkey, slot);
            }
        }
        let sorry_id = match &svc.sorry {
            Some(real) => {
                let rkey = (real.address, real.port);
                let existing = self
                    .services
                    .get(&key)
                    .and_then(|s| s.sorry.as_ref())
                    .filter(|(k, _)| *k == rkey)
                    .map(|(_, r)| (r.id, r.value));
                let slot = self.sync_real(existing, real, svc)?;
                let id = slot.id;
                let old = self.services.get_mut(&key).and_then(|s| s.sorry.replace((rkey, slot)));
                if let Some((_, old)) = old.filter(|(_, o)| o.id != id) {
                    self.free_real(old.id)?;
                }
                id
            }
            None => {
                if let Some((_, old)) = self.services.get_mut(&key).and_then(|s| s.sorry.take()) {
                    self.free_real(old.id)?;
                }
                0
            }
        };
        let table = Table { ring: svc.ring.clone(), ids: ring_ids };
        let mut flags = 0;
        let mut persist_timeout = 0;
        let mut prefix = if svc.key.vip.is_ipv4() { 32 } else { 128 };
        if svc.source_hash {
            flags |= SVC_F_SRC_HASH;
        }
        // The program reads the rings map's width from every service that points into it.
        flags |= self.limits.ring_width().svc_flags();
        if let Some((timeout, p)) = svc.persistence {
            persist_timeout = timeout;
            prefix = p;
        }
        let bits = if svc.key.vip.is_ipv4() { 32 } else { 128 };
        let template = ServiceValue {
            flags,
            sorry_real: sorry_id,
            persist_timeout,
            persist_mask: common::prefix_mask(prefix, bits),
            ..Default::default()
        };
        self.swap_table(key, table, template, svc.active)?;

        // Reals no longer configured: the live table no longer names them, so free their ids.
        let gone: Vec<((IpAddr, u16), u32)> = match self.services.get(&key) {
            Some(s) => s
                .reals
                .iter()
                .filter(|(rk, _)| !svc.reals.iter().any(|r| (r.address, r.port) == **rk))
                .map(|(rk, r)| (*rk, r.id))
                .collect(),
            None => Vec::new(),
        };
        // A window's anchor may name them: their ids wait for its end (the slot reads unusable).
        let until = self
            .services
            .get(&key)
            .map(|s| s.value)
            .filter(|v| v.anchor_size != 0 && window_open(v, self.now_secs()))
            .map(|v| v.window_end.saturating_add(2));
        for (rk, id) in gone {
            match until {
                Some(until) => {
                    self.write_real(id, RealValue::default())?;
                    self.quarantined.push((id, until));
                }
                None => self.free_real(id)?,
            }
            if let Some(s) = self.services.get_mut(&key) {
                s.reals.remove(&rk);
            }
        }
        Ok(())
    }

    fn free_real(&mut self, id: u32) -> Result<(), DataplaneError> {
        self.write_real(id, RealValue::default())?;
        self.real_ids.release(id);
        Ok(())
    }

    /// Moves a service to a ring region of the new size when its table size changed. The new
    /// table goes live in `swap_table`; until then the old region stays in use.
    fn resize_ring(&mut self, key: VirtualServerKey, size: u32) -> Result<(), DataplaneError> {
        let Some(slot) = self.services.get(&key) else { return Ok(()) };
        if slot.table_size == size {
            return Ok(());
        }
        let Some(base) = self.rings.alloc(AREAS * size) else {
            return Err(DataplaneError::Exhausted {
                what: "Maglev table space",
                detail: format!(
                    "{key} needs {} entries, {} free",
                    AREAS * size,
                    self.rings.largest()
                ),
            });
        };
        if let Some(s) = self.services.get_mut(&key) {
            let (old_base, old_size) = (s.ring_base, s.table_size);
            s.ring_base = base;
            s.table_size = size;
            s.areas = [None, None, None];
            s.written = Default::default();
            s.active = None;
            // Packets keep using the old region until the service value is replaced, which
            // happens right after in the same apply; only then may it be reused (and only once
            // no window's anchor lies in it).
            s.retired.push((old_base, AREAS * old_size));
        }
        Ok(())
    }

    fn new_service_slot(&mut self, svc: &ServiceDesired) -> Result<ServiceSlot, DataplaneError> {
        let table_size = svc.table_size;
        let (id, first) =
            self.service_ids.alloc_telling_first().ok_or_else(|| DataplaneError::Exhausted {
                what: "service slots",
                detail: format!("cannot install {}", svc.key),
            })?;
        let Some(ring_base) = self.rings.alloc(AREAS * table_size) else {
            self.service_ids.release(id);
            return Err(DataplaneError::Exhausted {
                what: "Maglev table space",
                detail: format!(
                    "{} needs {} entries, {} free",
                    svc.key,
                    AREAS * table_size,
                    self.rings.largest()
                ),
            });
        };
        if !(first && self.fresh_counters) {
            self.reset_counter(map_names::SERVICE_STATS, id)?;
        }
        Ok(ServiceSlot {
            id,
            ring_base,
            table_size,
            areas: [None, None, None],
            written: Default::default(),
            active: None,
            published: false,
            retired: Vec::new(),
            value: ServiceValue { id, ring_offset: ring_base, ..Default::default() },
            reals: HashMap::new(),
            sorry: None,
        })
    }

    /// Makes `table` live for `key`: writes it into an area no packet reads (only the entries
    /// that differ) and then points the service at it with one map update. Unless `publish`, the
    /// service's entry is left out of (or taken out of) the services map: a standby.
    ///
    /// A change of the live table (or the service going live) opens a window of `tcp_window`
    /// seconds (docs/fast-path.md). Its anchor is the table live before the change, or, when a
    /// window is still open, that window's anchor: every flow without an entry started under
    /// it, since flows starting inside a window get one.
    fn swap_table(
        &mut self,
        key: VirtualServerKey,
        table: Table,
        template: ServiceValue,
        publish: bool,
    ) -> Result<(), DataplaneError> {
        let now = self.now_secs();
        let window = self.globals.map_or(DEFAULT_TCP_WINDOW, |g| g.tcp_window);
        let Some(slot) = self.services.get(&key) else { return Ok(()) };
        let (id, base, size) = (slot.id, slot.ring_base, slot.table_size);
        let live = slot.value;
        let open = live.anchor_size != 0 && window_open(&live, now);
        // The anchor's area, when it lies in this region (not in one retired by a resize).
        let anchor_area = (open && live.anchor_size == size)
            .then(|| live.anchor_offset.checked_sub(base))
            .flatten()
            .filter(|off| off % size == 0 && off / size < AREAS)
            .map(|off| (off / size) as usize);
        let target = match slot.active {
            Some(a) if slot.areas[a].as_ref() == Some(&table) => Some(a),
            _ if table.is_empty() => None,
            _ => match anchor_area {
                // Back to the anchor's table (a flap undone): reuse it.
                Some(x) if slot.areas[x].as_ref() == Some(&table) => Some(x),
                _ => Some(
                    (0..AREAS as usize)
                        .find(|&i| Some(i) != slot.active && Some(i) != anchor_area)
                        .unwrap_or(0),
                ),
            },
        };
        if let Some(area) = target
            && slot.areas[area].as_ref() != Some(&table)
        {
            let old = slot.areas[area].clone();
            let offset = base + area as u32 * size;
            let built = self.prebuilt.remove(&key).filter(|(r, ..)| *r == table.ring);
            let (entries, head) = match built {
                Some((_, indexes, head)) => (table.entries(indexes), Some(head)),
                None => (table.entries(None), None),
            };
            if let Some(s) = self.services.get_mut(&key) {
                // A fingerprint still reading this area must not trust what it reads from now.
                s.written[area] = None;
            }
            let map = map_mut(&mut self.ebpf, map_names::RINGS)?;
            let known = || old.map(|t| t.entries(None));
            let width = self.limits.ring_width();
            self.ring_writes += rings::write(map, width, offset, &entries, known)?;
            drop(entries);
            let guard = fingerprint::AreaGuard::new();
            if let Some(head) = head {
                let job = fingerprint::Job::new(
                    table.ring.clone(),
                    head,
                    (width, offset, size),
                    table.ids.clone(),
                    &guard,
                );
                let ebpf = &mut self.ebpf;
                self.hasher.queue(job, || rings_fd(ebpf));
            }
            if let Some(s) = self.services.get_mut(&key) {
                s.areas[area] = Some(table);
                s.written[area] = Some(guard);
            }
        }
        let Some(slot) = self.services.get(&key) else { return Ok(()) };
        let mut value = ServiceValue {
            id,
            ring_offset: live.ring_offset,
            ring_size: 0,
            anchor_offset: live.anchor_offset,
            anchor_size: live.anchor_size,
            window_end: live.window_end,
            ..template
        };
        if let Some(area) = target {
            value.ring_offset = base + area as u32 * size;
            value.ring_size = size;
        }
        let changed = slot.active != target
            || (value.ring_offset, value.ring_size) != (live.ring_offset, live.ring_size);
        let goes_live = publish && !slot.published;
        if publish && (changed || goes_live) {
            let anchor = if open {
                (live.anchor_offset, live.anchor_size)
            } else if slot.published && live.ring_size != 0 {
                (live.ring_offset, live.ring_size)
            } else {
                // Going live: flows without an entry may come from a director (or an agent)
                // before this one, under a table assumed to be this one.
                (value.ring_offset, value.ring_size)
            };
            if !goes_live && target.is_some() && target == anchor_area {
                // The anchor's table is live again: flows without an entry started under it,
                // the rest have entries. The window closes.
                (value.anchor_offset, value.anchor_size, value.window_end) = (0, 0, 0);
            } else {
                (value.anchor_offset, value.anchor_size) = anchor;
                value.window_end = now.saturating_add(window).saturating_add(1);
            }
        }
        let (published, current) = (slot.published, slot.value);
        if publish && (!published || current != value) {
            let mut map: BpfHashMap<_, ServiceKey, ServiceValue> =
                BpfHashMap::try_from(map_mut(&mut self.ebpf, map_names::SERVICES)?)
                    .map_err(map_err(map_names::SERVICES))?;
            map.insert(service_key(&key), value, 0).map_err(map_err(map_names::SERVICES))?;
        } else if !publish && published {
            self.unpublish(&key)?;
        }
        let mut freed = Vec::new();
        if let Some(s) = self.services.get_mut(&key) {
            s.value = value;
            s.active = target;
            s.published = publish;
            // Retired regions go once the new table is live and no open window's anchor is in
            // them.
            let anchored = |&(start, len): &(u32, u32)| {
                value.anchor_size != 0
                    && window_open(&value, now)
                    && (start..start + len).contains(&value.anchor_offset)
            };
            let keep;
            (keep, freed) = s.retired.iter().partition(|r| anchored(r));
            s.retired = keep;
        }
        for (start, len) in freed {
            self.rings.release(start, len);
        }
        Ok(())
    }

    /// Seconds of the monotonic clock, as the program's `now_secs` reads it.
    fn now_secs(&self) -> u32 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid timespec we own; CLOCK_MONOTONIC always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let now = u32::try_from(ts.tv_sec).unwrap_or(u32::MAX);
        #[cfg(test)]
        let now = now.saturating_sub(self.rewind);
        now
    }

    /// Builds, on every CPU, the tables of `services` that no ring area holds yet (so the
    /// writes that follow need not build them one at a time). Their pick fingerprints are
    /// hashed after the writes, off the path to serving (`fingerprint`).
    fn prebuild(&mut self, services: &[ServiceDesired], hash_seed: u32) {
        let wanted: Vec<&ServiceDesired> = services
            .iter()
            .filter(|svc| !svc.ring.is_empty())
            .filter(|svc| {
                self.services
                    .get(&svc.key)
                    .is_none_or(|slot| !slot.areas.iter().flatten().any(|t| t.ring == svc.ring))
            })
            .collect();
        // Tables built ahead stay packed until written: a batch of them holds one unpacked.
        let (ahead, wanted): (Vec<_>, Vec<_>) =
            wanted.into_iter().partition(|svc| svc.ring.held_ahead());
        let built = crate::desired::build_all(&wanted, |svc| svc.ring.entries());
        self.prebuilt.clear();
        let built = wanted.into_iter().zip(built.into_iter().map(Some));
        for (svc, entries) in ahead.into_iter().map(|svc| (svc, None)).chain(built) {
            let head = crate::desired::pick_head(svc, hash_seed);
            self.prebuilt.insert(svc.key, (svc.ring.clone(), entries, head));
        }
    }

    /// Gives back the real ids whose quarantine ended.
    fn release_quarantined(&mut self) {
        let now = self.now_secs();
        let (done, keep): (Vec<_>, Vec<_>) =
            self.quarantined.iter().partition(|&&(_, until)| until < now);
        self.quarantined = keep;
        for (id, _) in done {
            self.real_ids.release(id);
        }
    }

    /// Slots in use against the sizes fixed at load time.
    fn map_usage(&self) -> Vec<MapUsage> {
        let reals: usize =
            self.services.values().map(|s| s.reals.len() + usize::from(s.sorry.is_some())).sum();
        let rings: u64 = self
            .services
            .values()
            .map(|s| {
                u64::from(AREAS * s.table_size)
                    + s.retired.iter().map(|&(_, len)| u64::from(len)).sum::<u64>()
            })
            .sum();
        let l = self.limits;
        vec![
            MapUsage {
                name: "services".into(),
                used: Some(self.services.len() as u64),
                max: l.max_services.into(),
            },
            MapUsage {
                name: "reals".into(),
                used: Some(reals as u64),
                max: u64::from(l.max_reals).saturating_sub(1),
            },
            MapUsage {
                name: "maglev_entries".into(),
                used: Some(rings),
                max: l.ring_entries.into(),
            },
            MapUsage { name: "flows".into(), used: None, max: l.flows.into() },
        ]
    }

    /// Takes the service's entry out of the services map (none there is fine).
    fn unpublish(&mut self, key: &VirtualServerKey) -> Result<(), DataplaneError> {
        let mut map: BpfHashMap<_, ServiceKey, ServiceValue> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, map_names::SERVICES)?)
                .map_err(map_err(map_names::SERVICES))?;
        match map.remove(&service_key(key)) {
            Ok(()) => Ok(()),
            Err(e) if absent(&e) => Ok(()),
            Err(e) => Err(map_err(map_names::SERVICES)(e)),
        }
    }

    fn remove_service(&mut self, key: VirtualServerKey) -> Result<(), DataplaneError> {
        self.unpublish(&key)?;
        let Some(slot) = self.services.remove(&key) else { return Ok(()) };
        for id in slot.reals.values().chain(slot.sorry.as_ref().map(|(_, r)| r)).map(|r| r.id) {
            self.free_real(id)?;
        }
        self.rings.release(slot.ring_base, AREAS * slot.table_size);
        for (base, len) in slot.retired {
            self.rings.release(base, len);
        }
        self.service_ids.release(slot.id);
        Ok(())
    }
}

/// Window length before the globals are first written (never used: they are written first).
const DEFAULT_TCP_WINDOW: u32 = 900;

/// Seconds after which the program stops following an idle TCP flow entry
/// (docs/fast-path.md): `tcp_flow_timeout` (the window), but never less than the 900 s the
/// sync messages promise a peer for an entry it is not told about again. Shorter windows (the
/// tests') would otherwise expire synced entries before a failover needs them.
pub fn tcp_entry_timeout(window: u32) -> u32 {
    window.max(flows::TCP_ESTABLISHED_TIMEOUT)
}

/// `CFG_F_WINDOW_COVERS_*`: per protocol, whether the window lasts at least as long as the
/// program follows an idle entry. Then a flow whose anchor and active tables agree needs no
/// entry after a change: any packet an entry would still steer arrives inside the window, which
/// steers it to the same real (docs/fast-path.md). With a shorter window (or UDP entries that
/// never expire) every flow of a window keeps getting its entry.
fn window_covers(g: &Globals) -> u32 {
    let mut flags = 0;
    if g.tcp_window >= tcp_entry_timeout(g.tcp_window) {
        flags |= common::CFG_F_WINDOW_COVERS_TCP;
    }
    if g.udp_timeout != 0 && g.tcp_window >= g.udp_timeout {
        flags |= common::CFG_F_WINDOW_COVERS_UDP;
    }
    flags
}

/// The service's window is (or may still be, for the program's coarser clock) open at `now`.
fn window_open(v: &ServiceValue, now: u32) -> bool {
    v.window_end != 0 && now <= v.window_end.saturating_add(1)
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Map, DataplaneError> {
    ebpf.map_mut(name).ok_or(DataplaneError::MissingMap(name))
}

/// A descriptor of the rings map of its own (the fingerprint thread reads tables through it).
fn rings_fd(ebpf: &mut Ebpf) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd as _;
    match ebpf.map_mut(map_names::RINGS)? {
        Map::Array(data) => data.fd().as_fd().try_clone_to_owned().ok(),
        _ => None,
    }
}

/// Loads the program through the verifier. The verifier gives up with EAGAIN when a signal is
/// pending for the loading thread during its (tens of milliseconds) run, e.g. one for another
/// thread of a busy process: that is retried, a few times, not reported as a failed load.
fn load_verified(prog: &mut Xdp) -> Result<(), aya::programs::ProgramError> {
    let mut interrupted = 0;
    loop {
        match prog.load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && interrupted < 5 =>
            {
                interrupted += 1;
            }
            other => return other,
        }
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    let prog = ebpf
        .program_mut(common::XDP_PROGRAM)
        .ok_or(DataplaneError::Program(aya::programs::ProgramError::NotLoaded))?;
    Ok(prog.try_into()?)
}

/// The map key for a service.
pub fn service_key(key: &VirtualServerKey) -> ServiceKey {
    let (addr, family) = addr_words(key.vip);
    ServiceKey { addr, port_be: key.port.to_be(), proto: key.protocol.ip_proto(), family }
}

/// Raw address words and family of an address, as the program reads them from packets.
pub fn addr_words(ip: IpAddr) -> (common::Addr, u8) {
    match ip {
        IpAddr::V4(a) => (common::addr_v4(a.octets()), common::FAMILY_V4),
        IpAddr::V6(a) => (common::addr_v6(a.octets()), common::FAMILY_V6),
    }
}

/// The slot of a tunnelled real: the program finds the next hop in the FIB, so no MAC or
/// interface. The outer source is the service's `tun_source` when of the real's family, else
/// the FIB's preferred source toward the real (`tun_src` zero).
fn tunnel_value(real: &RealDesired, tunnel: Tunnel, source: Option<IpAddr>) -> RealValue {
    let (tun_dst, tun_family) = addr_words(real.address);
    let tun_src = source
        .filter(|s| s.is_ipv4() == real.address.is_ipv4())
        .map_or([0; 4], |s| addr_words(s).0);
    let (tun, port) = match tunnel {
        Tunnel::Ipip => (common::TUN_IPIP, 0),
        Tunnel::Gue { port } => (common::TUN_GUE, port),
        Tunnel::Gre => (common::TUN_GRE, 0),
    };
    RealValue {
        flags: if real.keeps_flows { REAL_F_UP } else { 0 },
        tun,
        tun_family,
        tun_port_be: port.to_be(),
        tun_dst,
        tun_src,
        ..Default::default()
    }
}

fn vip_key(ip: IpAddr) -> VipKey {
    let (addr, family) = addr_words(ip);
    VipKey { addr, family, _pad1: 0, _pad2: 0 }
}

impl Dataplane for XdpDataplane {
    fn adopted_services(&self) -> Vec<VirtualServerKey> {
        self.adopted_services.clone()
    }

    fn apply(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        // The all-ports lookup is switched on before an all-ports service is added and off only
        // after the last one is gone, so no frame for one is ever passed up by mistake.
        let all_ports = desired.services.iter().any(|s| s.active && s.key.port == 0);
        let had_all_ports = self.services.iter().any(|(k, s)| k.port == 0 && s.published);
        // New flows are reported while `[flow_sync]` is written (the sync edge reads them).
        self.flow_sync = desired.flow_sync.is_some();
        self.release_quarantined();
        self.sync_globals(&desired.globals, all_ports || had_all_ports)?;
        self.sync_ifaces(desired)?;
        self.sync_local_macs(desired)?;
        self.sync_vips(desired)?;
        // Inactive services (their VRRP instance is not MASTER) are staged: reals and table
        // written, no services-map entry (see `ServiceSlot::published`).
        for batch in desired.services.chunks(BUILD_BATCH) {
            self.prebuild(batch, desired.globals.hash_seed);
            for svc in batch {
                self.sync_service(svc)?;
            }
        }
        self.prebuilt.clear();
        let wanted: HashSet<VirtualServerKey> = desired.services.iter().map(|s| s.key).collect();
        let stale: Vec<VirtualServerKey> =
            self.services.keys().filter(|k| !wanted.contains(k)).copied().collect();
        for key in stale {
            self.remove_service(key)?;
        }
        self.sync_globals(&desired.globals, all_ports)?;
        self.attach_missing(desired)?;
        self.detach_unwanted(desired)?;
        self.save_state()
    }

    fn counters(&mut self) -> Result<Counters, DataplaneError> {
        let mut out = Counters::default();
        for (i, name) in reason::NAMES.iter().enumerate() {
            out.global.push((name, self.read_counter(map_names::GLOBAL_STATS, i as u32)?));
        }
        let events = self
            .ebpf
            .map(map_names::EVENTS)
            .ok_or(DataplaneError::MissingMap(map_names::EVENTS))?;
        let events: PerCpuArray<_, u64> =
            PerCpuArray::try_from(events).map_err(map_err(map_names::EVENTS))?;
        for (i, name) in event::NAMES.iter().enumerate() {
            let v = events.get(&(i as u32), 0).map_err(map_err(map_names::EVENTS))?;
            out.events.push((name, v.iter().sum()));
        }
        for (key, slot) in &self.services {
            out.services.insert(*key, self.read_counter(map_names::SERVICE_STATS, slot.id)?);
            let sorry = slot.sorry.as_ref().map(|(k, r)| (k, r));
            for ((addr, port), real) in slot.reals.iter().chain(sorry) {
                out.reals.insert(
                    (*key, *addr, *port),
                    self.read_counter(map_names::REAL_STATS, real.id)?,
                );
            }
        }
        Ok(out)
    }

    fn status(&self) -> Status {
        Status {
            kind: "xdp",
            attachments: self
                .attached
                .iter()
                .map(|(idx, a)| Attachment {
                    interface: a.name.clone(),
                    ifindex: *idx,
                    mode: a.mode,
                    program_id: self.program_id,
                })
                .collect(),
            maps: self.map_usage(),
        }
    }

    fn flow_source(&self) -> Result<Option<FlowSource>, DataplaneError> {
        let name = map_names::FLOWS;
        let map = self.ebpf.map(name).ok_or(DataplaneError::MissingMap(name))?;
        let reals = self
            .services
            .values()
            .flat_map(|s| s.reals.iter().chain(s.sorry.as_ref().map(|(k, r)| (k, r))))
            .map(|(&(ip, port), r)| {
                let addr = std::net::SocketAddr::new(ip, port);
                (r.id, flows::SlotReal { addr, generation: r.value.generation })
            })
            .collect();
        let timeouts = self
            .globals
            .as_ref()
            .map_or((0, 0), |g| (tcp_entry_timeout(g.tcp_window), g.udp_timeout));
        let source =
            FlowSource::new(flows::dup_map(map, name)?, reals, timeouts, self.limits.flows)?;
        Ok(Some(source))
    }

    fn shutdown(&mut self) -> Result<(), DataplaneError> {
        let links: Vec<Attached> = std::mem::take(&mut self.attached).into_values().collect();
        for a in links {
            self.detach_link(a)?;
        }
        if let Some(p) = &self.pinning {
            // A clean stop leaves nothing behind: the next agent starts fresh.
            pin::remove_all(p, &self.limits);
        }
        Ok(())
    }
}
