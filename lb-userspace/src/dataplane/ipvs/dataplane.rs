//! The IPVS implementation of [`Dataplane`]: the desired state becomes kernel IPVS services and
//! destinations, exactly as keepalived would program them, changed by the smallest set of
//! requests.
//!
//! Ownership: the agent touches only the services it created. Their keys are kept in a state
//! file (next to the control socket), so an agent started after a crash removes its leftovers
//! and adopts what is still wanted, and never flushes rules that others (keepalived, an
//! operator) put there. A wanted service that already exists without being ours is taken over,
//! with a warning: the configuration says it is ours now.
//!
//! The pure part ([`wanted`], [`diff`]) is unit-tested; the in-guest tests run it against a
//! real kernel.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use super::{
    Destination, DestinationEntry, Family, Forward, Ipvs, IpvsError, Protocol, Service,
    ServiceEntry, ServiceFlags, ServiceKey, SyncDaemon, SyncRole, TunnelEncap,
};
use crate::{
    config::{self, LbKind, Tunnel, VirtualServerKey},
    dataplane::select::Backend,
    dataplane::{Connections, Counter, Counters, Dataplane, DataplaneError, Status},
    desired::{Desired, FlowSyncDesired, RealDesired, RealState, ServiceDesired},
};

/// One service as it should be in the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedService {
    pub service: Service,
    /// By real address and port.
    pub destinations: BTreeMap<SocketAddr, Destination>,
    /// The configured service it comes from.
    pub origin: VirtualServerKey,
}

/// The IPVS service key of a configured service.
pub fn service_key(key: &VirtualServerKey) -> ServiceKey {
    if let Some(mark) = key.fwmark {
        return ServiceKey::Fwmark { family: Family::of(key.vip), mark };
    }
    let protocol = match key.protocol {
        config::Protocol::Tcp => Protocol::Tcp,
        config::Protocol::Udp => Protocol::Udp,
    };
    ServiceKey::Addr { protocol, addr: key.vip, port: key.port }
}

/// How IPVS forwards to a real with this `lb_kind` (ipvsadm names it `Forward::ipvsadm_name`).
pub fn forward(kind: LbKind) -> Forward {
    match kind {
        LbKind::Dr => Forward::Route,
        LbKind::Nat => Forward::Masquerade,
        LbKind::Tun(tunnel) => Forward::Tunnel {
            encap: match tunnel {
                Tunnel::Ipip => TunnelEncap::Ipip,
                Tunnel::Gue { port } => TunnelEncap::Gue { port },
                Tunnel::Gre => TunnelEncap::Gre,
            },
            csum: false,
            remote_csum: false,
        },
    }
}

/// The weight a real gets, or `None` when it must not be a destination at all. Up reals take
/// their weight; drained ones, and failed ones with `inhibit_on_failure`, stay at weight 0 so
/// their connections continue (keepalived's behaviour); failed ones leave. While no real can
/// take new connections (quorum lost) every real is at 0 and the sorry server takes them.
fn weight_of(real: &RealDesired, no_new_flows: bool) -> Option<u32> {
    let weight = match real.state {
        RealState::Up => real.weight,
        RealState::Drain => 0,
        RealState::Down if real.keeps_flows => 0,
        RealState::Down | RealState::Unresolved => return None,
    };
    Some(if no_new_flows { 0 } else { weight })
}

fn destination(real: &RealDesired, weight: u32) -> Destination {
    Destination {
        addr: real.address,
        port: real.port,
        forward: forward(real.lb_kind),
        weight,
        upper_threshold: real.thresholds.0,
        lower_threshold: real.thresholds.1,
    }
}

/// What the kernel should hold for the active IPVS services of `desired`. Pure.
pub fn wanted(desired: &Desired) -> BTreeMap<ServiceKey, WantedService> {
    desired
        .services
        .iter()
        .filter(|s| s.active && s.backend == Backend::Ipvs)
        .map(|s| (service_key(&s.key), wanted_service(s)))
        .collect()
}

fn wanted_service(s: &ServiceDesired) -> WantedService {
    let key = service_key(&s.key);
    let mut service = Service::new(key, &s.scheduler);
    if let Some((timeout, prefix)) = s.persistence {
        service.flags = service.flags | ServiceFlags::PERSISTENT;
        service.timeout = timeout;
        service.netmask = prefix;
    }
    if s.one_packet {
        service.flags = service.flags | ServiceFlags::ONE_PACKET;
    }
    let no_new_flows = s.ring.is_empty();
    let mut destinations = BTreeMap::new();
    for real in &s.reals {
        if let Some(weight) = weight_of(real, no_new_flows) {
            destinations
                .insert(SocketAddr::new(real.address, real.port), destination(real, weight));
        }
    }
    if no_new_flows && let Some(sorry) = &s.sorry {
        // A sorry server that is also a real keeps its entry, now with weight.
        destinations.insert(SocketAddr::new(sorry.address, sorry.port), destination(sorry, 1));
    }
    WantedService { service, destinations, origin: s.key }
}

/// One request to the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    AddService(Service),
    UpdateService(Service),
    DeleteService(ServiceKey),
    AddDestination(ServiceKey, Destination),
    UpdateDestination(ServiceKey, Destination),
    DeleteDestination(ServiceKey, SocketAddr),
}

/// The kernel's view of one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Current {
    pub service: Service,
    pub destinations: BTreeMap<SocketAddr, Destination>,
}

/// The requests that turn `current` into `wanted`, touching only `owned` services among those
/// not wanted. Services come out in key order; within one, removals first (so a re-added
/// destination never collides), then changes, then additions. Pure.
pub fn diff(
    current: &BTreeMap<ServiceKey, Current>,
    wanted: &BTreeMap<ServiceKey, WantedService>,
    owned: &BTreeSet<ServiceKey>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    for key in current.keys() {
        if owned.contains(key) && !wanted.contains_key(key) {
            ops.push(Op::DeleteService(*key));
        }
    }
    for (key, want) in wanted {
        let Some(have) = current.get(key) else {
            ops.push(Op::AddService(want.service.clone()));
            for d in want.destinations.values() {
                ops.push(Op::AddDestination(*key, *d));
            }
            continue;
        };
        if have.service != want.service {
            ops.push(Op::UpdateService(want.service.clone()));
        }
        for addr in have.destinations.keys() {
            if !want.destinations.contains_key(addr) {
                ops.push(Op::DeleteDestination(*key, *addr));
            }
        }
        for (addr, d) in &want.destinations {
            match have.destinations.get(addr) {
                Some(old) if old == d => {}
                Some(_) => ops.push(Op::UpdateDestination(*key, *d)),
                None => ops.push(Op::AddDestination(*key, *d)),
            }
        }
    }
    ops
}

/// The state file: which services this agent created.
#[derive(Debug, Default, Serialize, Deserialize)]
struct OwnedFile {
    services: Vec<OwnedKey>,
}

/// One owned service in the state file. A firewall-mark service is written with its family's
/// unspecified address, protocol TCP, port 0 and `fwmark` (files of older agents have none).
#[derive(Debug, Serialize, Deserialize)]
struct OwnedKey {
    protocol: String,
    address: IpAddr,
    port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fwmark: Option<u32>,
}

impl OwnedKey {
    fn of(key: &ServiceKey) -> Option<Self> {
        match key {
            ServiceKey::Addr { protocol, addr, port } => Some(OwnedKey {
                protocol: protocol.to_string(),
                address: *addr,
                port: *port,
                fwmark: None,
            }),
            ServiceKey::Fwmark { family, mark } => Some(OwnedKey {
                protocol: Protocol::Tcp.to_string(),
                address: config::unspecified(*family == Family::Inet6),
                port: 0,
                fwmark: Some(*mark),
            }),
        }
    }

    fn key(&self) -> Option<ServiceKey> {
        if let Some(mark) = self.fwmark {
            return Some(ServiceKey::Fwmark { family: Family::of(self.address), mark });
        }
        let protocol = match self.protocol.as_str() {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            _ => return None,
        };
        Some(ServiceKey::Addr { protocol, addr: self.address, port: self.port })
    }
}

/// Errors of the IPVS dataplane.
fn ipvs_error(op: &str, e: IpvsError) -> DataplaneError {
    DataplaneError::Ipvs(format!("{op}: {e}"))
}

/// Kernel IPVS as a dataplane.
pub struct IpvsDataplane {
    ipvs: Ipvs,
    /// Services this agent created (and must remove, and only these).
    owned: BTreeSet<ServiceKey>,
    state_file: Option<PathBuf>,
    /// Remove our services when stopping (`shutdown`).
    remove_on_stop: bool,
    /// What the last apply installed, for counters.
    installed: BTreeMap<ServiceKey, VirtualServerKey>,
    /// Services found at start that a previous agent left (adopted or removed at first apply).
    leftovers: usize,
    /// The settings the kernel's sync daemons were last started with (`[flow_sync]`).
    sync_daemons: Option<FlowSyncDesired>,
}

/// The sync daemons `flow_sync` asks of an IPVS edge serving `services` services: none without
/// services (nothing of ours to sync). Standby services count: a VRRP backup is where the
/// backup daemon has connections to receive.
pub fn wanted_sync_daemons(
    flow_sync: Option<&FlowSyncDesired>,
    services: usize,
) -> Vec<SyncDaemon> {
    let Some(s) = flow_sync.filter(|_| services > 0) else { return Vec::new() };
    // Both, as keepalived's `lvs_sync_daemon` starts them: send ours, learn the peer's.
    [SyncRole::Master, SyncRole::Backup]
        .into_iter()
        .map(|role| SyncDaemon {
            role,
            interface: s.interface.clone(),
            sync_id: s.sync_id,
            max_len: s.max_len,
            group: s.group,
            port: s.port,
            ttl: s.ttl,
        })
        .collect()
}

impl IpvsDataplane {
    /// Opens IPVS and reads which services a previous agent left (`state_file`).
    pub fn open(state_file: Option<PathBuf>, remove_on_stop: bool) -> Result<Self, DataplaneError> {
        let ipvs = Ipvs::open().map_err(|e| ipvs_error("opening IPVS", e))?;
        let owned: BTreeSet<ServiceKey> = match &state_file {
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => serde_json::from_slice::<OwnedFile>(&bytes)
                    .map_err(|e| DataplaneError::Ipvs(format!("reading {}: {e}", path.display())))?
                    .services
                    .iter()
                    .filter_map(OwnedKey::key)
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
                Err(e) => {
                    return Err(DataplaneError::Ipvs(format!("reading {}: {e}", path.display())));
                }
            },
            None => BTreeSet::new(),
        };
        let leftovers = owned.len();
        if leftovers > 0 {
            tracing::info!(services = leftovers, "IPVS: services of a previous agent found");
        }
        Ok(IpvsDataplane {
            ipvs,
            owned,
            state_file,
            remove_on_stop,
            installed: BTreeMap::new(),
            leftovers,
            sync_daemons: None,
        })
    }

    /// How many services a previous agent left to adopt or remove.
    pub fn leftovers(&self) -> usize {
        self.leftovers
    }

    /// The requests an [`Dataplane::apply`] of `desired` would make now (none when the kernel
    /// already matches).
    pub fn pending(&mut self, desired: &Desired) -> Result<Vec<Op>, DataplaneError> {
        let wanted = wanted(desired);
        let current = self.current(&wanted)?;
        Ok(diff(&current, &wanted, &self.owned))
    }

    /// Every service in the kernel, with the destinations of those in `wanted` (the only ones
    /// [`diff`] compares; the others are ours to delete whole, or not ours at all).
    fn current(
        &mut self,
        wanted: &BTreeMap<ServiceKey, WantedService>,
    ) -> Result<BTreeMap<ServiceKey, Current>, DataplaneError> {
        let services = self.ipvs.services().map_err(|e| ipvs_error("listing IPVS services", e))?;
        let mut out = BTreeMap::new();
        for ServiceEntry { service, .. } in services {
            let key = service.key;
            if !wanted.contains_key(&key) {
                out.insert(key, Current { service, destinations: BTreeMap::new() });
                continue;
            }
            let destinations = self
                .ipvs
                .destinations(&key)
                .map_err(|e| ipvs_error(&format!("listing destinations of {key}"), e))?
                .into_iter()
                .map(|d: DestinationEntry| (d.destination.socket_addr(), d.destination))
                .collect();
            out.insert(key, Current { service, destinations });
        }
        Ok(out)
    }

    fn run(&mut self, op: &Op) -> Result<(), DataplaneError> {
        let result = match op {
            Op::AddService(s) => self.ipvs.add_service(s),
            Op::UpdateService(s) => self.ipvs.update_service(s),
            Op::DeleteService(k) => match self.ipvs.delete_service(k) {
                Err(e) if e.is_not_found() => Ok(()),
                other => other,
            },
            Op::AddDestination(k, d) => self.ipvs.add_destination(k, d),
            Op::UpdateDestination(k, d) => self.ipvs.update_destination(k, d),
            Op::DeleteDestination(k, a) => match self.ipvs.delete_destination(k, *a) {
                Err(e) if e.is_not_found() => Ok(()),
                other => other,
            },
        };
        result.map_err(|e| ipvs_error(&describe(op), e))
    }

    /// Starts, restarts or stops the kernel's sync daemons when their settings changed. A
    /// daemon that will not start is logged, not an apply error: forwarding does not depend on
    /// it, and the next change of `[flow_sync]` tries again.
    fn apply_sync_daemons(&mut self, desired: &Desired) {
        let services = desired.services.len();
        let want = desired.flow_sync.as_ref().filter(|_| services > 0);
        if self.sync_daemons.as_ref() == want {
            return;
        }
        if self.sync_daemons.take().is_some() {
            self.stop_sync_daemons();
        }
        for d in wanted_sync_daemons(want, services) {
            let mut started = self.ipvs.start_sync_daemon(&d);
            if started.as_ref().is_err_and(IpvsError::is_exists) {
                // Left by an agent that died, or by keepalived: restarted with our settings.
                let _ = self.ipvs.stop_sync_daemon(d.role);
                started = self.ipvs.start_sync_daemon(&d);
            }
            match started {
                Ok(()) => tracing::info!(
                    role = ?d.role, interface = %d.interface, sync_id = d.sync_id,
                    "IPVS sync daemon started"
                ),
                Err(e) => tracing::warn!(
                    role = ?d.role, interface = %d.interface, error = %e,
                    "IPVS sync daemon did not start"
                ),
            }
        }
        self.sync_daemons = want.cloned();
    }

    fn stop_sync_daemons(&mut self) {
        for role in [SyncRole::Master, SyncRole::Backup] {
            match self.ipvs.stop_sync_daemon(role) {
                Ok(()) => tracing::info!(role = ?role, "IPVS sync daemon stopped"),
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!(role = ?role, error = %e, "stopping an IPVS sync daemon"),
            }
        }
    }

    fn save_owned(&self) -> Result<(), DataplaneError> {
        let Some(path) = &self.state_file else { return Ok(()) };
        let file = OwnedFile { services: self.owned.iter().filter_map(OwnedKey::of).collect() };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&file)?)?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| DataplaneError::Ipvs(format!("writing {}: {e}", path.display())))
    }
}

/// An op as `ipvsadm` would say it, for errors and logs.
fn describe(op: &Op) -> String {
    match op {
        Op::AddService(s) => format!("adding IPVS service {}", s.key),
        Op::UpdateService(s) => format!("changing IPVS service {}", s.key),
        Op::DeleteService(k) => format!("removing IPVS service {k}"),
        Op::AddDestination(k, d) => format!("adding {} to IPVS service {k}", d.socket_addr()),
        Op::UpdateDestination(k, d) => {
            format!("changing {} of IPVS service {k}", d.socket_addr())
        }
        Op::DeleteDestination(k, a) => format!("removing {a} from IPVS service {k}"),
    }
}

impl Dataplane for IpvsDataplane {
    fn apply(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        let wanted = wanted(desired);
        let current = self.current(&wanted)?;
        for key in wanted.keys() {
            if current.contains_key(key) && !self.owned.contains(key) {
                tracing::warn!(service = %key, "IPVS: taking over a service this agent did not create");
            }
        }
        let ops = diff(&current, &wanted, &self.owned);
        // Owned before the first request: a crash in between must not orphan what we add.
        let before = self.owned.clone();
        self.owned.extend(wanted.keys().copied());
        if self.owned != before {
            self.save_owned()?;
        }
        for op in &ops {
            tracing::debug!("{}", describe(op));
            self.run(op)?;
        }
        let owned: BTreeSet<ServiceKey> = wanted.keys().copied().collect();
        if owned != self.owned {
            self.owned = owned;
            self.save_owned()?;
        }
        self.installed = wanted.iter().map(|(k, w)| (*k, w.origin)).collect();
        self.apply_sync_daemons(desired);
        if !ops.is_empty() {
            tracing::info!(requests = ops.len(), services = wanted.len(), "IPVS updated");
        }
        Ok(())
    }

    fn counters(&mut self) -> Result<Counters, DataplaneError> {
        let mut counters = Counters::default();
        let stats: HashMap<ServiceKey, super::Stats> = self
            .ipvs
            .services()
            .map_err(|e| ipvs_error("reading IPVS counters", e))?
            .into_iter()
            .map(|e| (e.service.key, e.stats))
            .collect();
        let installed: Vec<(ServiceKey, VirtualServerKey)> =
            self.installed.iter().map(|(k, v)| (*k, *v)).collect();
        for (key, origin) in installed {
            let Some(s) = stats.get(&key) else { continue };
            counters.services.insert(origin, counter(s));
            let dests = self
                .ipvs
                .destinations(&key)
                .map_err(|e| ipvs_error(&format!("reading counters of {key}"), e))?;
            for d in dests {
                let id = (origin, d.destination.addr, d.destination.port);
                counters.reals.insert(id, counter(&d.stats));
                counters
                    .connections
                    .insert(id, Connections { active: d.active_conns, inactive: d.inactive_conns });
            }
        }
        Ok(counters)
    }

    fn status(&self) -> Status {
        Status { kind: "ipvs", attachments: Vec::new(), maps: Vec::new() }
    }

    fn shutdown(&mut self) -> Result<(), DataplaneError> {
        if !self.remove_on_stop {
            // The sync daemons too: the kernel goes on forwarding and syncing without us.
            tracing::info!(services = self.owned.len(), "IPVS services left in place");
            return Ok(());
        }
        if self.sync_daemons.take().is_some() {
            self.stop_sync_daemons();
        }
        let keys: Vec<ServiceKey> = self.owned.iter().copied().collect();
        let mut first_error = None;
        for key in keys {
            match self.run(&Op::DeleteService(key)) {
                Ok(()) => {
                    self.owned.remove(&key);
                }
                Err(e) => {
                    tracing::error!(error = %e, "removing an IPVS service at stop");
                    first_error.get_or_insert(e);
                }
            }
        }
        self.installed.clear();
        self.save_owned()?;
        first_error.map_or(Ok(()), Err)
    }
}

fn counter(s: &super::Stats) -> Counter {
    Counter { packets: s.inpkts, bytes: s.inbytes, new_flows: s.conns }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol as P;

    fn real(last: u8, weight: u32, state: RealState) -> RealDesired {
        RealDesired {
            address: IpAddr::from([192, 0, 2, last]),
            port: 80,
            weight,
            config_weight: weight,
            state,
            mac: None,
            ifindex: None,
            lb_kind: LbKind::Dr,
            thresholds: (0, 0),
            keeps_flows: matches!(state, RealState::Up | RealState::Drain),
            override_: None,
            health_message: None,
            check_latency: None,
        }
    }

    fn service(reals: Vec<RealDesired>) -> ServiceDesired {
        let up = reals.iter().any(|r| r.state == RealState::Up && r.weight > 0);
        ServiceDesired {
            key: VirtualServerKey::addr(IpAddr::from([192, 0, 2, 100]), 80, P::Tcp),
            active: true,
            vrrp_instance: None,
            backend: Backend::Ipvs,
            backend_reason: String::new(),
            scheduler: "wlc".into(),
            one_packet: false,
            interface: "eth0".into(),
            ifindex: None,
            table_size: 251,
            source_hash: false,
            persistence: None,
            reals,
            sorry: None,
            tun_source: None,
            ring: crate::desired::Ring::fixed(if up { vec![0] } else { vec![] }),
        }
    }

    fn weights(w: &WantedService) -> Vec<(u8, u32)> {
        w.destinations
            .values()
            .map(|d| match d.addr {
                IpAddr::V4(a) => (a.octets()[3], d.weight),
                IpAddr::V6(_) => (0, d.weight),
            })
            .collect()
    }

    /// Real states and the sorry server → destinations and weights, as keepalived programs them.
    #[test]
    fn destinations_follow_real_states() {
        let mut inhibited = real(14, 3, RealState::Down);
        inhibited.keeps_flows = true;
        type Case = (&'static str, ServiceDesired, Vec<(u8, u32)>);
        let cases: Vec<Case> = vec![
            (
                "up, drained, down, inhibited",
                service(vec![
                    real(11, 2, RealState::Up),
                    real(12, 0, RealState::Drain),
                    real(13, 1, RealState::Down),
                    inhibited.clone(),
                ]),
                vec![(11, 2), (12, 0), (14, 0)],
            ),
            (
                "all down: sorry server takes over",
                ServiceDesired {
                    sorry: Some(real(200, 1, RealState::Up)),
                    ..service(vec![real(11, 2, RealState::Down), inhibited])
                },
                vec![(14, 0), (200, 1)],
            ),
            (
                "sorry server unused while a real is up",
                ServiceDesired {
                    sorry: Some(real(200, 1, RealState::Up)),
                    ..service(vec![real(11, 2, RealState::Up)])
                },
                vec![(11, 2)],
            ),
        ];
        for (name, s, want) in cases {
            let d = Desired { services: vec![s], ..Desired::default() };
            let w = wanted(&d);
            assert_eq!(w.len(), 1, "{name}");
            let got = weights(w.values().next().unwrap());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn services_map_persistence_ops_and_methods() {
        let mut nat = real(11, 1, RealState::Up);
        nat.lb_kind = LbKind::Nat;
        nat.port = 8080;
        nat.thresholds = (100, 10);
        let mut tun = real(12, 1, RealState::Up);
        tun.lb_kind = LbKind::Tun(Tunnel::Gue { port: 6080 });
        let s = ServiceDesired {
            persistence: Some((300, 24)),
            one_packet: true,
            ..service(vec![nat, tun])
        };
        let d = Desired { services: vec![s], ..Desired::default() };
        let w = wanted(&d);
        let svc = &w.values().next().unwrap().service;
        assert_eq!(svc.scheduler, "wlc");
        assert!(svc.flags.contains(ServiceFlags::PERSISTENT | ServiceFlags::ONE_PACKET));
        assert_eq!((svc.timeout, svc.netmask), (300, 24));
        let dests: Vec<&Destination> = w.values().next().unwrap().destinations.values().collect();
        assert_eq!(dests[0].forward, Forward::Masquerade);
        assert_eq!(
            (dests[0].port, dests[0].upper_threshold, dests[0].lower_threshold),
            (8080, 100, 10)
        );
        assert!(matches!(
            dests[1].forward,
            Forward::Tunnel { encap: TunnelEncap::Gue { port: 6080 }, .. }
        ));
    }

    #[test]
    fn inactive_and_xdp_services_are_not_in_ipvs() {
        let standby = ServiceDesired { active: false, ..service(vec![real(11, 1, RealState::Up)]) };
        let on_xdp =
            ServiceDesired { backend: Backend::Xdp, ..service(vec![real(11, 1, RealState::Up)]) };
        let d = Desired { services: vec![standby, on_xdp], ..Desired::default() };
        assert!(wanted(&d).is_empty());
    }

    fn current_of(w: &BTreeMap<ServiceKey, WantedService>) -> BTreeMap<ServiceKey, Current> {
        w.iter()
            .map(|(k, w)| {
                (*k, Current { service: w.service.clone(), destinations: w.destinations.clone() })
            })
            .collect()
    }

    /// Diffs: idempotent, minimal, and blind to services that are not ours.
    #[test]
    fn diff_scenarios() {
        let base = wanted(&Desired {
            services: vec![service(vec![real(11, 1, RealState::Up), real(12, 1, RealState::Up)])],
            ..Desired::default()
        });
        let key = *base.keys().next().unwrap();
        let foreign = ServiceKey::tcp("192.0.2.200:443".parse().unwrap());
        let mut with_foreign = current_of(&base);
        with_foreign.insert(
            foreign,
            Current { service: Service::new(foreign, "rr"), destinations: BTreeMap::new() },
        );
        let owned: BTreeSet<ServiceKey> = [key].into();
        let reweighted = wanted(&Desired {
            services: vec![service(vec![real(11, 5, RealState::Up), real(13, 1, RealState::Up)])],
            ..Desired::default()
        });
        let mut rescheduled = base.clone();
        rescheduled.get_mut(&key).unwrap().service.scheduler = "rr".into();
        let nothing = BTreeMap::new();
        let d = |last: u8, w: u32| Destination::route(SocketAddr::from(([192, 0, 2, last], 80)), w);

        type Case<'a> = (
            &'a str,
            BTreeMap<ServiceKey, Current>,
            &'a BTreeMap<ServiceKey, WantedService>,
            BTreeSet<ServiceKey>,
            Vec<Op>,
        );
        let cases: Vec<Case<'_>> = vec![
            ("nothing changes", current_of(&base), &base, owned.clone(), vec![]),
            (
                "fresh start",
                BTreeMap::new(),
                &base,
                BTreeSet::new(),
                vec![
                    Op::AddService(base[&key].service.clone()),
                    Op::AddDestination(key, d(11, 1)),
                    Op::AddDestination(key, d(12, 1)),
                ],
            ),
            ("a foreign service is left alone", with_foreign.clone(), &base, owned.clone(), vec![]),
            (
                "our leftover is removed, the foreign one stays",
                with_foreign,
                &nothing,
                owned.clone(),
                vec![Op::DeleteService(key)],
            ),
            (
                "reweight, remove and add a real",
                current_of(&base),
                &reweighted,
                owned.clone(),
                vec![
                    Op::DeleteDestination(key, SocketAddr::from(([192, 0, 2, 12], 80))),
                    Op::UpdateDestination(key, d(11, 5)),
                    Op::AddDestination(key, d(13, 1)),
                ],
            ),
            (
                "scheduler change",
                current_of(&base),
                &rescheduled,
                owned,
                vec![Op::UpdateService(rescheduled[&key].service.clone())],
            ),
        ];
        for (name, current, wanted, owned, want) in cases {
            assert_eq!(diff(&current, wanted, &owned), want, "{name}");
        }
    }

    #[test]
    fn owned_keys_round_trip_through_the_state_file_format() {
        let keys = [
            ServiceKey::tcp("192.0.2.100:80".parse().unwrap()),
            ServiceKey::udp("[2001:db8::1]:53".parse().unwrap()),
            ServiceKey::Fwmark { family: Family::Inet, mark: 1 },
            ServiceKey::Fwmark { family: Family::Inet6, mark: 1 },
        ];
        let file = OwnedFile { services: keys.iter().filter_map(OwnedKey::of).collect() };
        let text = serde_json::to_string(&file).unwrap();
        let back: OwnedFile = serde_json::from_str(&text).unwrap();
        let back: Vec<ServiceKey> = back.services.iter().filter_map(OwnedKey::key).collect();
        assert_eq!(back, keys);
        // A file written before firewall-mark services existed still reads.
        let old = r#"{"services":[{"protocol":"TCP","address":"192.0.2.100","port":80}]}"#;
        let old: OwnedFile = serde_json::from_str(old).unwrap();
        assert_eq!(old.services[0].key(), Some(keys[0]));
    }

    /// `[flow_sync]` asks for both kernel daemons with its settings, and none without services
    /// on IPVS.
    #[test]
    fn flow_sync_starts_both_kernel_daemons_while_ipvs_has_services() {
        let s = FlowSyncDesired {
            interface: "eth1".into(),
            sync_id: 5,
            group: "224.0.0.81".parse().unwrap(),
            port: 8848,
            ttl: 1,
            max_len: 1472,
        };
        let cases: [(Option<&FlowSyncDesired>, usize, &[SyncRole]); 3] = [
            (Some(&s), 2, &[SyncRole::Master, SyncRole::Backup]),
            (Some(&s), 0, &[]),
            (None, 2, &[]),
        ];
        for (flow_sync, services, roles) in cases {
            let got = wanted_sync_daemons(flow_sync, services);
            assert_eq!(got.iter().map(|d| d.role).collect::<Vec<_>>(), roles);
            for d in got {
                let settings = (d.interface.as_str(), d.sync_id, d.group, d.port, d.ttl, d.max_len);
                assert_eq!(settings, ("eth1", 5, s.group, 8848, 1, 1472));
            }
        }
    }

    /// A firewall-mark service becomes IPVS's `FWM` service of its family, with its reals as
    /// destinations on their own ports.
    #[test]
    fn a_firewall_mark_service_is_an_ipvs_fwmark_service() {
        let mut reals = vec![real(11, 2, RealState::Up), real(12, 1, RealState::Up)];
        reals[1].port = 443;
        let fwm = ServiceDesired { key: VirtualServerKey::fwmark(7, false), ..service(reals) };
        let mut real6 = real(11, 1, RealState::Up);
        real6.address = "2001:db8::11".parse().unwrap();
        let six = ServiceDesired { key: VirtualServerKey::fwmark(7, true), ..service(vec![real6]) };
        let w = wanted(&Desired { services: vec![fwm, six], ..Desired::default() });
        let keys: Vec<String> = w.keys().map(ToString::to_string).collect();
        assert_eq!(keys, ["FWM  7", "FWM  7 IPv6"]);
        let v4 = &w[&ServiceKey::Fwmark { family: Family::Inet, mark: 7 }];
        let dests: Vec<(String, u32)> =
            v4.destinations.iter().map(|(a, d)| (a.to_string(), d.weight)).collect();
        assert_eq!(dests, [("192.0.2.11:80".to_owned(), 2), ("192.0.2.12:443".to_owned(), 1)]);
        assert_eq!(v4.origin, VirtualServerKey::fwmark(7, false));
    }
}
