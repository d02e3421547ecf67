//! XDP implementation of the dataplane: loads the embedded `lb-xdp` program, keeps its maps equal
//! to the desired state and attaches it to the service interfaces.
//!
//! Table swaps are atomic for packets: each service owns two halves in the rings map; the agent
//! writes the inactive half and then replaces the service's map value to point at it.

mod alloc;
#[cfg(test)]
mod fixtures;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, Map, PerCpuArray, PerCpuValues},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use lb_common::{
    self as common, IfaceValue, REAL_F_UP, RealValue, ServiceKey, ServiceValue, map_names, reason,
    sizes,
};

use self::alloc::{IdAlloc, RegionAlloc};
use super::{Attachment, Counter, Counters, Dataplane, DataplaneError, Status};
use crate::{
    config::VirtualServerKey,
    desired::{Desired, RealState, ServiceDesired},
    maglev,
    net::iface::Interface,
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
}

impl Default for XdpLimits {
    fn default() -> Self {
        Self {
            max_services: sizes::MAX_SERVICES,
            max_reals: sizes::MAX_REALS,
            ring_entries: sizes::MAX_RING_ENTRIES,
        }
    }
}

/// A real as installed: its id in the maps and the value last written.
#[derive(Debug)]
struct RealSlot {
    id: u32,
    value: RealValue,
}

/// A service as installed.
#[derive(Debug)]
struct ServiceSlot {
    id: u32,
    /// Start of this service's two ring halves, each `table_size` long.
    ring_base: u32,
    table_size: u32,
    /// What each half holds (real ids); empty until written.
    halves: [Vec<u32>; 2],
    /// Half the service value points at, if any table is live.
    active: Option<usize>,
    value: ServiceValue,
    reals: HashMap<(IpAddr, u16), RealSlot>,
}

#[derive(Debug)]
struct Attached {
    name: String,
    link: XdpLinkId,
    mode: &'static str,
}

pub struct XdpDataplane {
    ebpf: Ebpf,
    mode: XdpModeSetting,
    program_id: u32,
    service_ids: IdAlloc,
    real_ids: IdAlloc,
    rings: RegionAlloc,
    services: HashMap<VirtualServerKey, ServiceSlot>,
    ifaces: BTreeMap<u32, IfaceValue>,
    attached: BTreeMap<u32, Attached>,
    nr_cpus: usize,
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

impl XdpDataplane {
    /// Loads the program and its maps into the kernel; nothing is attached until `apply`.
    pub fn load(mode: XdpModeSetting, limits: XdpLimits) -> Result<Self, DataplaneError> {
        if PROGRAM.is_empty() {
            return Err(DataplaneError::NoProgram);
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(map_names::SERVICES, limits.max_services)
            .map_max_entries(map_names::SERVICE_STATS, limits.max_services)
            .map_max_entries(map_names::REALS, limits.max_reals)
            .map_max_entries(map_names::REAL_STATS, limits.max_reals)
            .map_max_entries(map_names::RINGS, limits.ring_entries)
            .load(PROGRAM)?;
        let prog = program(&mut ebpf)?;
        prog.load()?;
        let program_id = prog.info()?.id();
        let nr_cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Exhausted {
            what: "CPU count",
            detail: e.to_string(),
        })?;
        Ok(Self {
            ebpf,
            mode,
            program_id,
            service_ids: IdAlloc::new(0, limits.max_services),
            // Real id 0 means "none" in the rings.
            real_ids: IdAlloc::new(1, limits.max_reals),
            rings: RegionAlloc::new(limits.ring_entries),
            services: HashMap::new(),
            ifaces: BTreeMap::new(),
            attached: BTreeMap::new(),
            nr_cpus,
        })
    }

    /// The loaded program, for BPF_PROG_TEST_RUN in tests and benchmarks.
    pub fn program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        program(&mut self.ebpf)
    }

    fn sync_ifaces(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        let want: BTreeMap<u32, IfaceValue> = desired
            .interfaces
            .iter()
            .map(|i| (i.ifindex, IfaceValue { mac: i.mac.0, _pad: [0; 2] }))
            .collect();
        if want == self.ifaces {
            return Ok(());
        }
        let mut map: BpfHashMap<_, u32, IfaceValue> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, map_names::IFACES)?)
                .map_err(map_err(map_names::IFACES))?;
        for (idx, v) in &want {
            if self.ifaces.get(idx) != Some(v) {
                map.insert(idx, v, 0).map_err(map_err(map_names::IFACES))?;
            }
        }
        for idx in self.ifaces.keys().filter(|k| !want.contains_key(k)) {
            map.remove(idx).map_err(map_err(map_names::IFACES))?;
        }
        self.ifaces = want;
        Ok(())
    }

    fn attach_missing(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        for iface in &desired.interfaces {
            if self.attached.contains_key(&iface.ifindex) {
                continue;
            }
            let (link, mode) = self.attach(iface)?;
            tracing::info!(interface = %iface.name, mode, driver = %iface.driver, "XDP attached");
            self.attached.insert(iface.ifindex, Attached { name: iface.name.clone(), link, mode });
        }
        Ok(())
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
                self.program()?.detach(a.link)?;
                tracing::info!(interface = %a.name, "XDP detached");
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
        }))
    }

    fn write_real(&mut self, id: u32, value: RealValue) -> Result<(), DataplaneError> {
        let mut map: Array<_, RealValue> =
            Array::try_from(map_mut(&mut self.ebpf, map_names::REALS)?)
                .map_err(map_err(map_names::REALS))?;
        map.set(id, value, 0).map_err(map_err(map_names::REALS))
    }

    /// Installs or updates one service; returns its key.
    fn sync_service(&mut self, svc: &ServiceDesired) -> Result<(), DataplaneError> {
        let key = svc.key;
        if !self.services.contains_key(&key) {
            let slot = self.new_service_slot(svc)?;
            self.services.insert(key, slot);
        }

        // Reals first: every id the new table uses must be valid before the table goes live.
        let mut ring_ids = Vec::with_capacity(svc.reals.len());
        for real in &svc.reals {
            let ifindex = svc.ifindex.unwrap_or(0);
            let value = RealValue {
                mac: real.mac.map(|m| m.0).unwrap_or_default(),
                // Drained reals stay usable for flows already on them (flow table, later).
                flags: if real.state == RealState::Unresolved { 0 } else { REAL_F_UP },
                ifindex,
            };
            let rkey = (real.address, real.port);
            let existing =
                self.services.get(&key).and_then(|s| s.reals.get(&rkey)).map(|r| (r.id, r.value));
            let id = match existing {
                Some((id, old)) => {
                    if old != value {
                        self.write_real(id, value)?;
                    }
                    id
                }
                None => {
                    let id = self.real_ids.alloc().ok_or_else(|| DataplaneError::Exhausted {
                        what: "real-server slots",
                        detail: format!("raise the reals limit (service {key})"),
                    })?;
                    self.reset_counter(map_names::REAL_STATS, id)?;
                    self.write_real(id, value)?;
                    id
                }
            };
            if let Some(s) = self.services.get_mut(&key) {
                s.reals.insert(rkey, RealSlot { id, value });
            }
            ring_ids.push(id);
        }
        let table: Vec<u32> = svc.ring.iter().map(|&i| ring_ids[i as usize]).collect();
        self.swap_table(key, table)?;

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
        for (rk, id) in gone {
            self.write_real(id, RealValue::default())?;
            self.real_ids.release(id);
            if let Some(s) = self.services.get_mut(&key) {
                s.reals.remove(&rk);
            }
        }
        Ok(())
    }

    fn new_service_slot(&mut self, svc: &ServiceDesired) -> Result<ServiceSlot, DataplaneError> {
        let table_size = maglev::DEFAULT_SIZE;
        let id = self.service_ids.alloc().ok_or_else(|| DataplaneError::Exhausted {
            what: "service slots",
            detail: format!("cannot install {}", svc.key),
        })?;
        let Some(ring_base) = self.rings.alloc(2 * table_size) else {
            self.service_ids.release(id);
            return Err(DataplaneError::Exhausted {
                what: "Maglev table space",
                detail: format!(
                    "{} needs {} entries, {} free",
                    svc.key,
                    2 * table_size,
                    self.rings.largest()
                ),
            });
        };
        self.reset_counter(map_names::SERVICE_STATS, id)?;
        Ok(ServiceSlot {
            id,
            ring_base,
            table_size,
            halves: [Vec::new(), Vec::new()],
            active: None,
            value: ServiceValue { id, flags: 0, ring_offset: ring_base, ring_size: 0 },
            reals: HashMap::new(),
        })
    }

    /// Makes `table` live for `key`: writes it into the inactive half (only the entries that
    /// differ) and then points the service at it with one map update.
    fn swap_table(&mut self, key: VirtualServerKey, table: Vec<u32>) -> Result<(), DataplaneError> {
        let Some(slot) = self.services.get(&key) else { return Ok(()) };
        let (id, base, size) = (slot.id, slot.ring_base, slot.table_size);
        let mut value = slot.value;
        let target = match slot.active {
            Some(a) if slot.halves[a] == table => Some(a),
            _ if table.is_empty() => None,
            Some(a) => Some(1 - a),
            None => Some(0),
        };
        if let Some(half) = target
            && slot.halves[half] != table
        {
            let old = slot.halves[half].clone();
            let offset = base + half as u32 * size;
            let mut rings: Array<_, u32> =
                Array::try_from(map_mut(&mut self.ebpf, map_names::RINGS)?)
                    .map_err(map_err(map_names::RINGS))?;
            for (i, &real) in table.iter().enumerate() {
                if old.get(i) != Some(&real) {
                    rings.set(offset + i as u32, real, 0).map_err(map_err(map_names::RINGS))?;
                }
            }
            if let Some(s) = self.services.get_mut(&key) {
                s.halves[half] = table;
            }
        }
        match target {
            Some(half) => {
                value.ring_offset = base + half as u32 * size;
                value.ring_size = size;
            }
            None => value.ring_size = 0,
        }
        let skey = service_key(&key);
        let mut map: BpfHashMap<_, ServiceKey, ServiceValue> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, map_names::SERVICES)?)
                .map_err(map_err(map_names::SERVICES))?;
        let installed =
            self.services.get(&key).is_some_and(|s| s.active.is_some() || s.value.ring_size > 0);
        if !installed || self.services.get(&key).map(|s| s.value) != Some(value) {
            map.insert(skey, value, 0).map_err(map_err(map_names::SERVICES))?;
        }
        if let Some(s) = self.services.get_mut(&key) {
            s.value = value;
            s.active = target;
            debug_assert_eq!(s.id, id);
        }
        Ok(())
    }

    fn remove_service(&mut self, key: VirtualServerKey) -> Result<(), DataplaneError> {
        let mut map: BpfHashMap<_, ServiceKey, ServiceValue> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, map_names::SERVICES)?)
                .map_err(map_err(map_names::SERVICES))?;
        match map.remove(&service_key(&key)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(map_names::SERVICES)(e)),
        }
        let Some(slot) = self.services.remove(&key) else { return Ok(()) };
        for real in slot.reals.values() {
            self.write_real(real.id, RealValue::default())?;
            self.real_ids.release(real.id);
        }
        self.rings.release(slot.ring_base, 2 * slot.table_size);
        self.service_ids.release(slot.id);
        Ok(())
    }
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Map, DataplaneError> {
    ebpf.map_mut(name).ok_or(DataplaneError::MissingMap(name))
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    let prog = ebpf
        .program_mut(common::XDP_PROGRAM)
        .ok_or(DataplaneError::Program(aya::programs::ProgramError::NotLoaded))?;
    Ok(prog.try_into()?)
}

/// The map key for a service.
pub fn service_key(key: &VirtualServerKey) -> ServiceKey {
    match key.vip {
        IpAddr::V4(a) => ServiceKey::v4(a.octets(), key.port, key.protocol.ip_proto()),
        IpAddr::V6(a) => ServiceKey {
            addr: a.octets(),
            port_be: key.port.to_be(),
            proto: key.protocol.ip_proto(),
            family: common::FAMILY_V6,
        },
    }
}

impl Dataplane for XdpDataplane {
    fn apply(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        self.sync_ifaces(desired)?;
        for svc in &desired.services {
            self.sync_service(svc)?;
        }
        let stale: Vec<VirtualServerKey> = self
            .services
            .keys()
            .filter(|k| !desired.services.iter().any(|s| s.key == **k))
            .copied()
            .collect();
        for key in stale {
            self.remove_service(key)?;
        }
        self.attach_missing(desired)?;
        self.detach_unwanted(desired)
    }

    fn counters(&mut self) -> Result<Counters, DataplaneError> {
        let mut out = Counters::default();
        for (i, name) in reason::NAMES.iter().enumerate() {
            out.global.push((name, self.read_counter(map_names::GLOBAL_STATS, i as u32)?));
        }
        for (key, slot) in &self.services {
            out.services.insert(*key, self.read_counter(map_names::SERVICE_STATS, slot.id)?);
            for ((addr, port), real) in &slot.reals {
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
        }
    }

    fn shutdown(&mut self) -> Result<(), DataplaneError> {
        let links: Vec<Attached> = std::mem::take(&mut self.attached).into_values().collect();
        for a in links {
            self.program()?.detach(a.link)?;
            tracing::info!(interface = %a.name, "XDP detached");
        }
        Ok(())
    }
}
