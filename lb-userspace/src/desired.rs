//! The desired dataplane state: a pure function of the config and what the host knows (interfaces,
//! neighbour MACs). Every change — start-up, a neighbour appearing, later reloads and health flaps —
//! goes through `desired_state` and `Dataplane::apply`, so there is one path to get right.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, LazyLock, Mutex, Weak},
};

use foldhash::HashMap;
use serde::Serialize;

use crate::{
    config::{BackupXdp, Config, LbKind, RealServer, VirtualServer, VirtualServerKey},
    dataplane::select::{Backend, Plan},
    health::state::HealthSnapshot,
    maglev,
    net::{Mac, iface::Interface, neigh::Neighbours, route::Egress},
    overrides::{Override, Overrides},
};

/// Everything the desired state depends on.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub config: &'a Config,
    pub host: &'a HostFacts,
    pub health: &'a HealthSnapshot,
    pub overrides: &'a Overrides,
    pub vrrp: &'a VrrpStates,
    /// Which dataplane serves each service (XDP when not in it).
    pub plan: &'a Plan,
}

/// Which VRRP instances are MASTER here. A service whose VIP belongs to an instance forwards only
/// while that instance is MASTER; a director with no instance forwards always.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VrrpStates {
    pub masters: std::collections::HashSet<String>,
}

/// What the host looked like when the state was computed.
#[derive(Clone, Debug, Default)]
pub struct HostFacts {
    /// Interfaces by name: the services' and those the reals are reached through.
    pub interfaces: BTreeMap<String, Interface>,
    /// How each real (and sorry server) address is reached, from the routing table.
    pub routes: HashMap<IpAddr, Egress>,
    pub neighbours: Neighbours,
    /// Addresses of those interfaces by name, in the kernel's order: read only when a check
    /// through the VIP goes to a real of the other family (its translated source comes from
    /// them, `health::probe::desired`).
    pub addresses: BTreeMap<String, Vec<IpAddr>>,
}

impl HostFacts {
    pub fn interface_by_index(&self, ifindex: u32) -> Option<&Interface> {
        self.interfaces.values().find(|i| i.ifindex == ifindex)
    }
}

/// Program-wide dataplane settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Globals {
    pub hash_seed: u32,
    /// Seconds.
    pub udp_timeout: u32,
    /// Seconds of the window after a table change (docs/fast-path.md).
    pub tcp_window: u32,
    pub syn_threshold: u32,
    pub icmp_echo: bool,
}

/// Everything a dataplane needs to forward exactly as configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub globals: Globals,
    /// Interfaces VIP traffic arrives on (XDP attaches here), in name order.
    pub interfaces: Vec<Interface>,
    /// Further interfaces reals are reached through (frames are redirected there).
    pub tx_interfaces: Vec<Interface>,
    /// Services in config order.
    pub services: Vec<ServiceDesired>,
    /// `[flow_sync]`: the IPVS edge runs the kernel's sync daemons with these settings while
    /// it has services.
    pub flow_sync: Option<FlowSyncDesired>,
}

/// `[flow_sync]`'s settings without their location: a reload that only moves the table in the
/// file changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSyncDesired {
    pub interface: String,
    pub sync_id: u8,
    pub group: IpAddr,
    pub port: u16,
    pub ttl: u8,
    pub max_len: u16,
}

impl From<&crate::config::flow_sync::FlowSyncConfig> for FlowSyncDesired {
    fn from(c: &crate::config::flow_sync::FlowSyncConfig) -> Self {
        FlowSyncDesired {
            interface: c.interface.clone(),
            sync_id: c.sync_id,
            group: c.group,
            port: c.port,
            ttl: c.ttl,
            max_len: c.max_len,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceDesired {
    pub key: VirtualServerKey,
    /// False while the VRRP instance owning the VIP is not MASTER: the dataplane stages the
    /// service, not live (and detaches from interfaces with no active service, unless
    /// `backup_xdp = "standby"`).
    pub active: bool,
    /// The VRRP instance whose `virtual_ipaddress` holds the VIP, if any.
    pub vrrp_instance: Option<String>,
    /// The dataplane that serves it.
    pub backend: Backend,
    /// Why that one, when there is something to say (`lb status`).
    pub backend_reason: String,
    /// Scheduler as configured (`mh`, `wrr`, ...); the XDP path always uses weighted Maglev.
    pub scheduler: String,
    /// Schedule each datagram on its own (IPVS `ops`).
    pub one_packet: bool,
    pub interface: String,
    /// `None` when the interface has disappeared: nothing can be forwarded.
    pub ifindex: Option<u32>,
    /// Maglev table size (a prime).
    pub table_size: u32,
    /// Hash new flows on the client address only (`sh`).
    pub source_hash: bool,
    /// (timeout in seconds, client prefix length) when persistent.
    pub persistence: Option<(u32, u8)>,
    pub reals: Vec<RealDesired>,
    /// Takes new flows when no real can.
    pub sorry: Option<RealDesired>,
    /// Outer source of tunnelled packets to reals of its family (`tun_source`).
    pub tun_source: Option<IpAddr>,
    /// Maglev table: indexes into `reals`; empty when no real can take new flows.
    pub ring: Ring,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealDesired {
    pub address: IpAddr,
    pub port: u16,
    /// Effective weight: configured, or set by a `misc_dynamic` check or `lb weight`/`lb drain`.
    pub weight: u32,
    /// The weight in the config file.
    pub config_weight: u32,
    pub state: RealState,
    pub mac: Option<Mac>,
    /// Interface the real is reached through.
    pub ifindex: Option<u32>,
    /// How packets reach it (always DR on XDP).
    pub lb_kind: LbKind,
    /// IPVS connection thresholds (upper, lower); 0 is none.
    pub thresholds: (u32, u32),
    /// Established flows may continue on it (up, drained, or down with `inhibit_on_failure`).
    pub keeps_flows: bool,
    /// A runtime change in force (until the next reload).
    pub override_: Option<Override>,
    /// The health checks' last word on it.
    pub health_message: Option<String>,
    /// Latency of its last successful check.
    pub check_latency: Option<std::time::Duration>,
}

/// A real's state as operators see it in `lb backends`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RealState {
    /// Takes new flows.
    Up,
    /// Weight 0: no new flows; established ones continue.
    Drain,
    /// Its health checks fail: no new flows; established ones move to other reals (or continue
    /// with `inhibit_on_failure`).
    Down,
    /// Its MAC is not known (not on a directly connected link, or not answering ARP/ND): gets
    /// nothing, and its flows move to other reals.
    Unresolved,
}

impl RealState {
    pub fn as_str(self) -> &'static str {
        match self {
            RealState::Up => "up",
            RealState::Drain => "drain",
            RealState::Down => "down",
            RealState::Unresolved => "unresolved",
        }
    }
}

/// The interface index a real is reached through: its route's, when the route is direct; else
/// the service interface (resolution then fails and says so).
pub fn real_ifindex(host: &HostFacts, addr: IpAddr, service_ifindex: Option<u32>) -> Option<u32> {
    match host.routes.get(&addr) {
        Some(e) if !e.via_gateway => Some(e.ifindex),
        _ => service_ifindex,
    }
}

/// A real as the dataplane should treat it; `backend` decides whether its MAC matters (IPVS
/// leaves resolution to the kernel).
fn real_desired(
    inputs: &Inputs<'_>,
    vs: &VirtualServer,
    rs: &RealServer,
    service_ifindex: Option<u32>,
    backend: Backend,
) -> RealDesired {
    let host = inputs.host;
    let key = vs.key();
    let ifindex = real_ifindex(host, rs.address, service_ifindex);
    let mac = ifindex.and_then(|idx| host.neighbours.get(idx, rs.address));
    // A tunnelled real needs no MAC: the XDP program routes to it through the FIB.
    let tunnelled = matches!(vs.lb_kind_of(rs), LbKind::Tun(_));
    let resolved = mac.is_some() || tunnelled || backend == Backend::Ipvs;
    let id = (key, rs.address, rs.port);
    let health = inputs.health.real(&id);
    let override_ = inputs.overrides.0.get(&id).copied();
    let weight = match override_ {
        Some(Override::Drain) => 0,
        Some(Override::Weight(w)) => w,
        None => health.and_then(|h| h.weight).unwrap_or(rs.weight),
    };
    let healthy = health.is_none_or(|h| h.up);
    let state = match (resolved, healthy, weight) {
        (false, _, _) => RealState::Unresolved,
        (true, false, _) => RealState::Down,
        (true, true, 0) => RealState::Drain,
        (true, true, _) => RealState::Up,
    };
    let keeps_flows = match state {
        RealState::Up | RealState::Drain => true,
        RealState::Down => rs.health.inhibit_on_failure,
        RealState::Unresolved => false,
    };
    RealDesired {
        address: rs.address,
        port: rs.port,
        weight,
        config_weight: rs.weight,
        state,
        mac,
        ifindex,
        lb_kind: vs.lb_kind_of(rs),
        thresholds: (rs.forwarding.uthreshold, rs.forwarding.lthreshold),
        keeps_flows,
        override_,
        health_message: health.map(|h| h.message.clone()),
        check_latency: health.and_then(|h| h.latency),
    }
}

/// Computes the desired state. Pure: same inputs, same output.
pub fn desired_state(inputs: &Inputs<'_>) -> Desired {
    let (config, host) = (inputs.config, inputs.host);
    let settings = &config.dataplane;
    let globals = Globals {
        hash_seed: settings.hash_seed,
        udp_timeout: settings.udp_flow_timeout.as_secs().max(1).try_into().unwrap_or(u32::MAX),
        tcp_window: settings.tcp_flow_timeout.as_secs().max(1).try_into().unwrap_or(u32::MAX),
        syn_threshold: settings.syn_flood_threshold,
        icmp_echo: settings.icmp_echo,
    };
    let mut interfaces = BTreeMap::new();
    let mut tx = BTreeMap::new();
    let mut tables = Vec::with_capacity(config.virtual_servers.len());
    let mut services = config
        .virtual_servers
        .iter()
        .map(|vs| {
            let key = vs.key();
            let vrrp_instance = config.vrrp.instance_for(vs.vip).map(|i| i.name.clone());
            let active = vrrp_instance.as_ref().is_none_or(|n| inputs.vrrp.masters.contains(n));
            let backend = inputs.plan.backend(&key);
            // XDP attaches to (and redirects through) only the interfaces of its live services;
            // with `backup_xdp = "standby"` also of its staged ones, so that becoming MASTER
            // needs no attach.
            let keep = active || settings.backup_xdp == BackupXdp::Standby;
            let on_xdp = keep && backend == Backend::Xdp;
            let iface = host.interfaces.get(&vs.interface);
            if let Some(i) = iface.filter(|_| on_xdp) {
                interfaces.insert(i.name.clone(), i.clone());
            }
            let ifindex = iface.map(|i| i.ifindex);
            let real = |rs| real_desired(inputs, vs, rs, ifindex, backend);
            let reals: Vec<RealDesired> = vs.real_servers.iter().map(real).collect();
            let sorry = vs.sorry_server.as_ref().map(real);
            for r in reals.iter().chain(sorry.as_ref()).filter(|_| on_xdp) {
                // Reals share a few interfaces: clone each once, not once per real.
                if let Some(i) = r.ifindex.and_then(|idx| host.interface_by_index(idx))
                    && !tx.contains_key(&i.name)
                {
                    tx.insert(i.name.clone(), i.clone());
                }
            }
            // Quorum lost: no real takes new flows (the sorry server does, if any).
            let table = if inputs.health.quorum_lost.contains(&key) {
                None
            } else {
                TableKey::of(&reals, vs.table_size, settings.hash_seed)
            };
            tables.push(table);
            ServiceDesired {
                key,
                active,
                vrrp_instance,
                backend,
                backend_reason: inputs
                    .plan
                    .0
                    .get(&key)
                    .map(|c| c.reason.clone())
                    .unwrap_or_default(),
                scheduler: vs.lb_algo.clone(),
                one_packet: vs.forwarding.one_packet,
                interface: vs.interface.clone(),
                ifindex,
                table_size: vs.table_size,
                source_hash: vs.lb_algo == "sh",
                persistence: vs.persistence_timeout.map(|t| {
                    (t.as_secs().max(1).try_into().unwrap_or(u32::MAX), vs.persistence_prefix)
                }),
                reals,
                sorry,
                tun_source: vs.forwarding.tun_source,
                ring: Ring::default(),
            }
        })
        .collect::<Vec<ServiceDesired>>();
    for (svc, ring) in services.iter_mut().zip(rings_for(tables)) {
        svc.ring = ring;
    }
    tx.retain(|name, _| !interfaces.contains_key(name));
    Desired {
        globals,
        interfaces: interfaces.into_values().collect(),
        tx_interfaces: tx.into_values().collect(),
        services,
        flow_sync: config.flow_sync.as_ref().map(FlowSyncDesired::from),
    }
}

/// What decides a service's Maglev table: the reals that take new flows (name, weight, index in
/// `reals`), the size and the seed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct TableKey {
    size: u32,
    seed: u32,
    backends: Vec<(String, u32, u32)>,
}

impl TableKey {
    /// `None` when no real takes new flows (the table is empty).
    fn of(reals: &[RealDesired], size: u32, seed: u32) -> Option<Self> {
        let backends: Vec<(String, u32, u32)> = reals
            .iter()
            .enumerate()
            .filter(|(_, r)| r.state == RealState::Up && r.weight > 0)
            .map(|(i, r)| (SocketAddr::new(r.address, r.port).to_string(), r.weight, i as u32))
            .collect();
        (!backends.is_empty()).then_some(Self { size, seed, backends })
    }

    /// Weighted Maglev over the reals that take new flows; entries index `reals`.
    fn build(&self) -> Vec<u32> {
        let backends: Vec<maglev::Backend<'_>> = self
            .backends
            .iter()
            .map(|(name, weight, id)| maglev::Backend { name, weight: *weight, id: *id })
            .collect();
        maglev::build(&backends, self.size, u64::from(self.seed))
    }
}

/// A service's Maglev table, held as what decides it rather than as its entries: the entries are
/// built when the dataplane writes them (or a fingerprint needs them) and dropped after, so an
/// agent of 1,000 services at M = 65537 no longer holds 256 MiB of tables. Cheap to clone and
/// compare; a desired state shares the ring of every service whose reals did not change with the
/// previous one (and its memoised fingerprints with it).
#[derive(Clone, Debug, Default)]
pub struct Ring(Option<Arc<RingSource>>);

#[derive(Debug)]
struct RingSource {
    entries: Entries,
    /// The table built ahead of its first write (start-up builds tables while the program
    /// loads), packed; taken by the first [`Ring::entries`].
    ahead: Mutex<Option<Packed>>,
    /// Pick fingerprints computed from this table, by the bytes hashed ahead of it (a few: a
    /// table can serve services whose fingerprints differ only in reals it does not use).
    /// `None`: the dataplane is hashing the table as written ([`Ring::fingerprint_pending`]).
    fingerprints: Mutex<Vec<(Vec<u8>, Option<String>)>>,
}

#[derive(Debug, PartialEq, Eq)]
enum Entries {
    /// Weighted Maglev over these reals, built on demand.
    Maglev(TableKey),
    /// Given entries (fixtures and tests).
    Fixed(Vec<u32>),
}

/// Fingerprints kept per table.
const FINGERPRINTS_PER_TABLE: usize = 4;

impl PartialEq for Ring {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a.entries == b.entries,
            _ => false,
        }
    }
}

impl Eq for Ring {}

impl Ring {
    /// A table of the given entries (empty: no real takes new flows).
    pub fn fixed(entries: Vec<u32>) -> Self {
        Self::of(if entries.is_empty() { None } else { Some(Entries::Fixed(entries)) })
    }

    fn of(entries: Option<Entries>) -> Self {
        Self(entries.map(|entries| {
            Arc::new(RingSource {
                entries,
                ahead: Mutex::default(),
                fingerprints: Mutex::default(),
            })
        }))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The same table object (not only equal): shared between desired states.
    pub fn shares(&self, other: &Ring) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The entries: indexes into the service's reals. Builds a Maglev table (milliseconds at
    /// M = 65537): for writing it, not for holding it.
    pub fn entries(&self) -> Vec<u32> {
        let Some(source) = self.0.as_deref() else { return Vec::new() };
        if let Some(packed) = source.ahead.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return packed.unpack();
        }
        match &source.entries {
            Entries::Maglev(key) => key.build(),
            Entries::Fixed(e) => e.clone(),
        }
    }

    /// Builds this Maglev table now and holds it, packed, for the first [`Ring::entries`]. Its
    /// size in bytes; 0 when nothing was held (no Maglev table, held already, or indexes too
    /// large to pack).
    fn build_ahead(&self) -> usize {
        let Some(source) = self.0.as_deref() else { return 0 };
        let Entries::Maglev(key) = &source.entries else { return 0 };
        if source.ahead.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            return 0;
        }
        // Entries index all the service's reals, not only those in the table.
        let reals = key.backends.iter().map(|b| b.2 as usize + 1).max().unwrap_or(0);
        let Some(packed) = Packed::of(reals, key.build()) else { return 0 };
        let bytes = packed.bytes();
        *source.ahead.lock().unwrap_or_else(|e| e.into_inner()) = Some(packed);
        bytes
    }

    /// A table built ahead is held: the first [`Ring::entries`] unpacks it instead of building.
    pub fn held_ahead(&self) -> bool {
        self.0.as_deref().is_some_and(|s| s.ahead.lock().is_ok_and(|a| a.is_some()))
    }

    /// Drops the table built ahead, if no write took it.
    fn drop_ahead(&self) {
        if let Some(source) = self.0.as_deref() {
            source.ahead.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }

    /// The pick fingerprint of the service `head` describes (see [`pick_head`]): MD5 of `head`
    /// then the entries, memoised with the table. [`PENDING`] while the dataplane is hashing the
    /// table it wrote (after start-up, off the path to serving); otherwise built and hashed here.
    pub fn fingerprint(&self, head: &[u8]) -> String {
        let Some(source) = &self.0 else { return digest(head, &[]) };
        match source.known(head) {
            Some(Some(f)) => f,
            Some(None) => PENDING.to_owned(),
            None => self.entries_noting_fingerprint(head).1,
        }
    }

    /// The entries, and the fingerprint they give `head`, remembered for [`Ring::fingerprint`].
    pub fn entries_noting_fingerprint(&self, head: &[u8]) -> (Vec<u32>, String) {
        let entries = self.entries();
        let f = digest(head, &entries);
        self.note_fingerprint(head, Some(f.clone()));
        (entries, f)
    }

    /// Marks the fingerprint for `head` as being computed elsewhere (the dataplane hashes the
    /// table as written): `lb status` shows [`PENDING`] instead of building the table again.
    /// Returns false when it is known or pending already (nothing to compute).
    pub fn fingerprint_pending(&self, head: &[u8]) -> bool {
        match &self.0 {
            Some(source) if source.known(head).is_none() => {
                self.note_fingerprint(head, None);
                true
            }
            _ => false,
        }
    }

    /// Remembers `fingerprint` (`None`: pending) for `head`, replacing what was there.
    pub fn note_fingerprint(&self, head: &[u8], fingerprint: Option<String>) {
        let Some(source) = &self.0 else { return };
        let mut known = source.fingerprints.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = known.iter_mut().find(|(h, _)| h == head) {
            entry.1 = fingerprint;
            return;
        }
        if known.len() >= FINGERPRINTS_PER_TABLE {
            known.remove(0);
        }
        known.push((head.to_vec(), fingerprint));
    }
}

/// What `lb status` shows for a fingerprint the dataplane has not finished hashing yet (for a
/// second or two after start-up, a few milliseconds after a reload): not a mismatch, not known.
pub const PENDING: &str = "pending";

impl RingSource {
    /// `Some(None)`: pending; `None`: never computed (or forgotten).
    fn known(&self, head: &[u8]) -> Option<Option<String>> {
        let known = self.fingerprints.lock().unwrap_or_else(|e| e.into_inner());
        known.iter().find(|(h, _)| h == head).map(|(_, f)| f.clone())
    }
}

/// What a service's pick fingerprint hashes ahead of its table: the hash seed, table size,
/// hashing mode and the reals with weights and states in order.
pub fn pick_head(s: &ServiceDesired, hash_seed: u32) -> Vec<u8> {
    let mut head = Vec::with_capacity(9 + 26 * s.reals.len());
    head.extend(hash_seed.to_le_bytes());
    head.extend(s.table_size.to_le_bytes());
    head.push(u8::from(s.source_hash));
    for r in &s.reals {
        let addr = match r.address {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        head.extend(addr);
        head.extend(r.port.to_le_bytes());
        head.extend(r.weight.to_le_bytes());
        head.extend(r.state.as_str().as_bytes());
    }
    head
}

/// MD5 of `head` then the table's entries (little-endian), first 8 bytes in hex.
fn digest(head: &[u8], entries: &[u32]) -> String {
    let mut d = PickDigest::new(head);
    d.update(entries);
    d.finish()
}

/// A pick fingerprint fed entry by entry (the dataplane hashes a table as it reads it back).
pub struct PickDigest {
    md5: md5::Md5,
    /// Entries as little-endian bytes, hashed 4 KiB at a time: no 256 KiB copy of a table.
    buf: [u8; 4096],
    used: usize,
}

impl PickDigest {
    pub fn new(head: &[u8]) -> Self {
        use md5::Digest as _;
        let mut md5 = md5::Md5::new();
        md5.update(head);
        Self { md5, buf: [0; 4096], used: 0 }
    }

    pub fn update(&mut self, entries: &[u32]) {
        for &e in entries {
            self.push(e);
        }
    }

    #[inline]
    pub fn push(&mut self, entry: u32) {
        use md5::Digest as _;
        self.buf[self.used..self.used + 4].copy_from_slice(&entry.to_le_bytes());
        self.used += 4;
        if self.used == self.buf.len() {
            self.md5.update(self.buf);
            self.used = 0;
        }
    }

    pub fn finish(mut self) -> String {
        use md5::Digest as _;
        self.md5.update(&self.buf[..self.used]);
        self.md5.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// Rings made before, by what decides them. Weak: a ring lives as long as a desired state (or
/// the dataplane's record of a ring area) holds it, so services whose reals did not change keep
/// their ring, and with it their memoised fingerprints. The cache itself holds none.
static TABLES: LazyLock<Mutex<HashMap<TableKey, Weak<RingSource>>>> =
    LazyLock::new(Default::default);

/// The ring of each service (`None`: empty), reusing the rings made before.
fn rings_for(keys: Vec<Option<TableKey>>) -> Vec<Ring> {
    let mut cache = TABLES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let out: Vec<Ring> = keys
        .into_iter()
        .map(|k| {
            let Some(k) = k else { return Ring::default() };
            if let Some(source) = cache.get(&k).and_then(Weak::upgrade) {
                return Ring(Some(source));
            }
            let ring = Ring::of(Some(Entries::Maglev(k.clone())));
            if let Some(source) = &ring.0 {
                cache.insert(k, Arc::downgrade(source));
            }
            ring
        })
        .collect();
    // Forget rings nobody holds any more, once they are the larger part of the cache.
    if cache.len() > 2 * out.len() + 64 {
        cache.retain(|_, t| t.strong_count() > 0);
    }
    out
}

/// A table built ahead, its entries (indexes into a service's reals) in as few bits as they fit:
/// 32 KiB at M = 65537 for up to 16 reals, against 256 KiB as `u32`s.
#[derive(Debug)]
enum Packed {
    /// Two entries per byte, the even one in the low half; the table's length.
    U4(Vec<u8>, usize),
    U8(Vec<u8>),
    U16(Vec<u16>),
}

impl Packed {
    /// In the fewest bits `reals` (entries index fewer) needs; `None` when over 16 bits, or when
    /// an entry does not fit after all.
    fn of(reals: usize, entries: Vec<u32>) -> Option<Self> {
        if reals <= 1 << 4 {
            let nibble = |e: u32| u8::try_from(e).ok().filter(|&e| e < 16);
            entries
                .chunks(2)
                .map(|pair| match *pair {
                    [even] => nibble(even),
                    [even, odd] => Some(nibble(even)? | nibble(odd)? << 4),
                    _ => None,
                })
                .collect::<Option<_>>()
                .map(|bytes| Self::U4(bytes, entries.len()))
        } else if reals <= 1 << 8 {
            entries.iter().map(|&e| u8::try_from(e).ok()).collect::<Option<_>>().map(Self::U8)
        } else if reals <= 1 << 16 {
            entries.iter().map(|&e| u16::try_from(e).ok()).collect::<Option<_>>().map(Self::U16)
        } else {
            None
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Self::U4(v, _) | Self::U8(v) => v.len(),
            Self::U16(v) => 2 * v.len(),
        }
    }

    fn unpack(self) -> Vec<u32> {
        match self {
            Self::U4(v, len) => v
                .into_iter()
                .flat_map(|b| [u32::from(b & 15), u32::from(b >> 4)])
                .take(len)
                .collect(),
            Self::U8(v) => v.into_iter().map(u32::from).collect(),
            Self::U16(v) => v.into_iter().map(u32::from).collect(),
        }
    }
}

/// Builds the tables of `rings` ahead of their writes, on `threads` threads, until `stop` is set
/// or `budget` bytes are held; each [`Ring::entries`] then takes its table instead of building
/// it. Start-up does this while the XDP program and its maps load (the builds need no map). The
/// tables held are dropped by [`drop_ahead`] (or taken by the writes). Returns the tables built.
pub fn build_ahead(
    rings: &[Ring],
    threads: usize,
    budget: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let (next, held, built) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    let work = || {
        while !stop.load(Relaxed) && held.load(Relaxed) < budget {
            let Some(ring) = rings.get(next.fetch_add(1, Relaxed)) else { break };
            let bytes = ring.build_ahead();
            if bytes > 0 {
                held.fetch_add(bytes, Relaxed);
                built.fetch_add(1, Relaxed);
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads.max(1) {
            scope.spawn(work);
        }
        work();
    });
    built.into_inner()
}

/// Drops what [`build_ahead`] built for `rings` and no write took.
pub fn drop_ahead(rings: &[Ring]) {
    for ring in rings {
        ring.drop_ahead();
    }
}

/// Builds below this many run on the calling thread; more are spread over the CPUs (start-up,
/// a reload changing many services): a default table takes milliseconds.
const PARALLEL_BUILDS: usize = 4;

/// Runs `build` over `items` on several threads when there are many; results in order.
pub fn build_all<T: Sync, R: Send>(items: &[T], build: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if items.len() < PARALLEL_BUILDS || threads < 2 {
        return items.iter().map(&build).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let build = &build;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(build).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(tables) => tables,
                // A panic in a build is a bug; surface it where the builds were asked for.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{self, test_support::AnyHost};

    /// The fingerprint is MD5 of the head then every entry's four little-endian bytes, whatever
    /// the table's length against the hashing buffer (what other directors' builds compute).
    #[test]
    fn digest_hashes_the_head_and_the_entries_bytes() {
        use md5::{Digest as _, Md5};
        for len in [0, 1, 1023, 1024, 1025, 2048, 65537] {
            let entries: Vec<u32> = (0..len).map(|i: u32| i.wrapping_mul(2_654_435_761)).collect();
            let mut h = Md5::new();
            h.update(b"head");
            for e in &entries {
                h.update(e.to_le_bytes());
            }
            let want: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
            assert_eq!(digest(b"head", &entries), want, "{len} entries");
        }
    }

    /// A pending fingerprint shows as such (never built meanwhile) until noted; a known one is
    /// not marked pending again; an empty ring has nothing to compute.
    #[test]
    fn pending_fingerprints_show_until_noted() {
        let ring = Ring::fixed(vec![1, 0, 1]);
        let want = digest(b"h", &[1, 0, 1]);
        assert!(ring.fingerprint_pending(b"h"));
        assert!(!ring.fingerprint_pending(b"h"), "pending already");
        assert_eq!(ring.fingerprint(b"h"), PENDING);
        assert_eq!(ring.fingerprint(b"other"), digest(b"other", &[1, 0, 1]), "another head");
        ring.note_fingerprint(b"h", Some(want.clone()));
        assert_eq!(ring.fingerprint(b"h"), want);
        assert!(!ring.fingerprint_pending(b"h"), "known");
        assert!(!Ring::default().fingerprint_pending(b"h"));
        assert_eq!(Ring::default().fingerprint(b"h"), digest(b"h", &[]));
    }

    const CONF: &str = r#"
[[virtual_server]]
vip = "192.0.2.100"
port = 80
interface = "eth0"
[[virtual_server.real_server]]
address = "192.0.2.11"
weight = 1
[[virtual_server.real_server]]
address = "192.0.2.12"
weight = 0
[[virtual_server.real_server]]
address = "192.0.2.13"
weight = 2
"#;

    static NO_HEALTH: std::sync::LazyLock<HealthSnapshot> =
        std::sync::LazyLock::new(HealthSnapshot::default);
    static NO_OVERRIDES: std::sync::LazyLock<Overrides> =
        std::sync::LazyLock::new(Overrides::default);

    static NO_VRRP: std::sync::LazyLock<VrrpStates> = std::sync::LazyLock::new(VrrpStates::default);
    static NO_PLAN: std::sync::LazyLock<Plan> = std::sync::LazyLock::new(Plan::default);

    fn inputs<'a>(config: &'a Config, host: &'a HostFacts) -> Inputs<'a> {
        Inputs {
            config,
            host,
            health: &NO_HEALTH,
            overrides: &NO_OVERRIDES,
            vrrp: &NO_VRRP,
            plan: &NO_PLAN,
        }
    }

    fn host(with_macs: &[&str]) -> HostFacts {
        let eth0 =
            Interface { name: "eth0".into(), ifindex: 7, mac: Mac([2; 6]), driver: "veth".into() };
        let mut h = HostFacts::default();
        h.interfaces.insert("eth0".into(), eth0);
        for (i, a) in with_macs.iter().enumerate() {
            let addr: IpAddr = a.parse().expect("test address");
            h.neighbours.0.insert((7, addr), Mac([0x52, 0, 0, 0, 0, i as u8]));
        }
        h
    }

    /// A change to one service's reals rebuilds that service's table only: the others are the
    /// very tables of the previous state (shared, not rebuilt), and every table equals a fresh
    /// build, as if there were no memo. Many services: their builds run on several threads.
    #[test]
    fn only_changed_tables_are_rebuilt_and_memoised_tables_equal_fresh_builds() {
        let mut text = String::new();
        for s in 0..12 {
            text.push_str(&format!(
                "[[virtual_server]]\nvip = \"192.0.2.{}\"\nport = 80\ninterface = \"eth0\"\ntable_size = 1021\n",
                100 + s
            ));
            for r in 0..3 {
                text.push_str(&format!(
                    "[[virtual_server.real_server]]\naddress = \"198.51.100.{}\"\n",
                    10 * s + r + 1
                ));
            }
        }
        let mut cfg = config::parse_toml(&text, Path::new("t.toml"), &AnyHost).expect("valid");
        let addrs: Vec<String> = cfg
            .virtual_servers
            .iter()
            .flat_map(|v| v.real_servers.iter().map(|r| r.address.to_string()))
            .collect();
        let h = host(&addrs.iter().map(String::as_str).collect::<Vec<_>>());
        let fresh = |d: &Desired| {
            for s in &d.services {
                let want = TableKey::of(&s.reals, s.table_size, d.globals.hash_seed)
                    .map(|k| k.build())
                    .unwrap_or_default();
                assert_eq!(s.ring.entries(), want, "{}: the memoised table differs", s.key);
            }
        };
        let before = desired_state(&inputs(&cfg, &h));
        fresh(&before);
        cfg.virtual_servers[5].real_servers[1].weight = 3;
        let after = desired_state(&inputs(&cfg, &h));
        fresh(&after);
        for (i, (a, b)) in before.services.iter().zip(&after.services).enumerate() {
            assert_eq!(a.ring.shares(&b.ring), i != 5, "service {i}");
        }
        // Back to the first config: the same tables again (equal contents).
        cfg.virtual_servers[5].real_servers[1].weight = 1;
        assert_eq!(desired_state(&inputs(&cfg, &h)), before);
    }

    /// Tables built ahead (packed in 4, 8 or 16 bits by the largest real index) equal fresh
    /// builds, across widths, weights, sizes, seeds and reals left out of the table.
    #[test]
    fn tables_built_ahead_equal_fresh_builds() {
        use std::sync::atomic::AtomicBool;
        // (reals, every n-th real out of the table (0: none), weights cycle 1..=w, size, seed)
        let cases: &[(u32, u32, u32, u32, u32)] = &[
            (1, 0, 1, 251, 0),
            (10, 0, 1, 65537, 0),
            (16, 0, 3, 1021, 7),
            (17, 0, 1, 1021, 7),
            (20, 2, 1, 509, 1), // 10 in the table, indexes up to 19: 8 bits
            (256, 0, 5, 4093, 3),
            (257, 0, 1, 4093, 3),
            (1000, 7, 2, 8191, 9),
        ];
        for &(reals, skip, w, size, seed) in cases {
            let backends: Vec<(String, u32, u32)> = (0..reals)
                .filter(|i| skip == 0 || i % skip != 0)
                .map(|i| (format!("10.{}.{}.1:80", i / 250, i % 250), i % w + 1, i))
                .collect();
            let key = TableKey { size, seed, backends };
            let want = key.build();
            let ring = Ring::of(Some(Entries::Maglev(key)));
            let stop = AtomicBool::new(false);
            assert_eq!(build_ahead(std::slice::from_ref(&ring), 2, usize::MAX, &stop), 1);
            assert!(ring.held_ahead(), "{reals} reals: not held");
            assert_eq!(ring.entries(), want, "{reals} reals, size {size}: taken");
            assert!(!ring.held_ahead(), "{reals} reals: taken once");
            assert_eq!(ring.entries(), want, "{reals} reals, size {size}: built again");
        }
    }

    /// Building ahead stops at the flag and at the budget; what no write took can be dropped;
    /// fixed tables are never held.
    #[test]
    fn building_ahead_stops_at_the_flag_and_the_budget() {
        use std::sync::atomic::AtomicBool;
        let ring = |n: u32| {
            let backends = (0..3).map(|i| (format!("192.0.2.{}:{n}", i + 1), 1, i)).collect();
            Ring::of(Some(Entries::Maglev(TableKey { size: 1021, seed: 0, backends })))
        };
        let rings: Vec<Ring> = (0..8).map(ring).collect();
        let held = |rings: &[Ring]| rings.iter().filter(|r| r.held_ahead()).count();
        let (go, stop) = (AtomicBool::new(false), AtomicBool::new(true));
        assert_eq!(build_ahead(&rings, 2, usize::MAX, &stop), 0);
        assert_eq!(held(&rings), 0);
        // One table is 511 bytes: the budget is checked before each build.
        assert_eq!(build_ahead(&rings, 1, 1, &go), 1);
        assert_eq!(build_ahead(&rings, 1, 1_000, &go), 2, "the held one skipped, two built");
        assert_eq!(held(&rings), 3);
        assert_eq!(build_ahead(&rings, 2, usize::MAX, &go), 5, "held ones are not built again");
        drop_ahead(&rings);
        assert_eq!(held(&rings), 0);
        for (n, r) in rings.iter().enumerate() {
            assert_eq!(r.entries(), ring(n as u32).entries());
        }
        let fixed = [Ring::fixed(vec![1, 2, 3])];
        assert_eq!(build_ahead(&fixed, 1, usize::MAX, &go), 0);
        assert_eq!(fixed[0].entries(), vec![1, 2, 3]);
    }

    #[test]
    fn states_follow_weight_and_resolution() {
        let cfg = config::parse_toml(CONF, Path::new("t.toml"), &AnyHost).expect("valid");
        // Scenario table: resolved MACs → expected states of .11, .12, .13.
        let cases: &[(&[&str], [RealState; 3])] = &[
            (
                &["192.0.2.11", "192.0.2.12", "192.0.2.13"],
                [RealState::Up, RealState::Drain, RealState::Up],
            ),
            (&["192.0.2.13"], [RealState::Unresolved, RealState::Unresolved, RealState::Up]),
            (&[], [RealState::Unresolved; 3]),
        ];
        for (macs, want) in cases {
            let d = desired_state(&inputs(&cfg, &host(macs)));
            let got: Vec<RealState> = d.services[0].reals.iter().map(|r| r.state).collect();
            assert_eq!(got, want, "macs {macs:?}");
            // Only Up reals appear in the table.
            let ring = &d.services[0].ring;
            for idx in ring.entries().iter() {
                assert_eq!(d.services[0].reals[*idx as usize].state, RealState::Up);
            }
            assert_eq!(ring.is_empty(), !want.contains(&RealState::Up));
        }
    }

    #[test]
    fn table_splits_by_weight_and_interfaces_are_collected() {
        let cfg = config::parse_toml(CONF, Path::new("t.toml"), &AnyHost).expect("valid");
        let d = desired_state(&inputs(&cfg, &host(&["192.0.2.11", "192.0.2.12", "192.0.2.13"])));
        assert_eq!(d.interfaces.len(), 1);
        assert_eq!(d.services[0].ifindex, Some(7));
        let ring = d.services[0].ring.entries();
        assert_eq!(ring.len() as u32, maglev::DEFAULT_SIZE, "default table size");
        let twos = ring.iter().filter(|&&i| i == 2).count() as f64 / ring.len() as f64;
        assert!((twos - 2.0 / 3.0).abs() < 0.01, "weight-2 real has share {twos}");
    }

    /// An IPVS service needs no MACs (the kernel resolves them) and claims no XDP interface.
    #[test]
    fn ipvs_services_need_no_macs_and_no_xdp_interface() {
        use crate::dataplane::select::Choice;
        let cfg = config::parse_toml(CONF, Path::new("t.toml"), &AnyHost).expect("valid");
        let key = cfg.virtual_servers[0].key();
        let plan = Plan(std::collections::HashMap::from([(
            key,
            Choice { backend: Backend::Ipvs, reason: "test".into() },
        )]));
        let h = host(&[]);
        let d = desired_state(&Inputs { plan: &plan, ..inputs(&cfg, &h) });
        let s = &d.services[0];
        assert_eq!(s.backend, Backend::Ipvs);
        let states: Vec<RealState> = s.reals.iter().map(|r| r.state).collect();
        assert_eq!(states, [RealState::Up, RealState::Drain, RealState::Up]);
        assert!(d.interfaces.is_empty() && d.tx_interfaces.is_empty(), "{d:?}");
        // The same service on XDP waits for the MACs.
        let d = desired_state(&inputs(&cfg, &h));
        assert!(d.services[0].reals.iter().all(|r| r.state == RealState::Unresolved));
        assert_eq!(d.interfaces.len(), 1);
    }

    #[test]
    fn missing_interface_leaves_service_unforwarded() {
        let cfg = config::parse_toml(CONF, Path::new("t.toml"), &AnyHost).expect("valid");
        let d = desired_state(&inputs(&cfg, &HostFacts::default()));
        assert!(d.interfaces.is_empty());
        assert_eq!(d.services[0].ifindex, None);
        assert!(d.services[0].ring.is_empty());
    }

    /// Health, `inhibit_on_failure`, `misc_dynamic` weights, runtime overrides and quorum, each
    /// with what it does to a real's state, weight, flows and the table.
    #[test]
    fn health_and_overrides_shape_the_state() {
        use crate::health::state::RealHealth;

        let conf = format!(
            "{CONF}[[virtual_server.real_server]]\naddress = \"192.0.2.14\"\ninhibit_on_failure = true\n"
        );
        let cfg = config::parse_toml(&conf, Path::new("t.toml"), &AnyHost).expect("valid");
        let all = ["192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14"];
        let h = host(&all);
        let key = cfg.virtual_servers[0].key();
        let id = |last: u8| (key, IpAddr::from([192, 0, 2, last]), 80);
        let down =
            |msg: &str| RealHealth { up: false, weight: None, latency: None, message: msg.into() };
        let up_w = |w: u32| RealHealth {
            up: true,
            weight: Some(w),
            latency: None,
            message: String::new(),
        };

        // (case, health, overrides, quorum lost, expected (state, weight, keeps_flows) for .11-.14)
        type Want = [(RealState, u32, bool); 4];
        let base: Want = [
            (RealState::Up, 1, true),
            (RealState::Drain, 0, true),
            (RealState::Up, 2, true),
            (RealState::Up, 1, true),
        ];
        type Case = (&'static str, Vec<(u8, RealHealth)>, Vec<(u8, Override)>, bool, Want);
        let mut cases: Vec<Case> = vec![("nothing", vec![], vec![], false, base)];
        let mut w = base;
        w[0] = (RealState::Down, 1, false);
        cases.push((
            "failed check: flows move",
            vec![(11, down("TCP_CHECK: refused"))],
            vec![],
            false,
            w,
        ));
        let mut w = base;
        w[3] = (RealState::Down, 1, true);
        cases.push(("inhibit_on_failure: flows stay", vec![(14, down("x"))], vec![], false, w));
        let mut w = base;
        w[2] = (RealState::Up, 7, true);
        cases.push(("misc_dynamic weight", vec![(13, up_w(7))], vec![], false, w));
        let mut w = base;
        w[0] = (RealState::Drain, 0, true);
        w[1] = (RealState::Up, 5, true);
        cases.push((
            "lb drain / lb weight",
            vec![],
            vec![(11, Override::Drain), (12, Override::Weight(5))],
            false,
            w,
        ));
        let mut w = base;
        w[2] = (RealState::Up, 3, true);
        cases.push((
            "lb weight beats misc_dynamic",
            vec![(13, up_w(7))],
            vec![(13, Override::Weight(3))],
            false,
            w,
        ));
        let mut w = base;
        w[0] = (RealState::Down, 0, false);
        cases.push((
            "drained and failed is down",
            vec![(11, down("x"))],
            vec![(11, Override::Drain)],
            false,
            w,
        ));
        cases.push(("quorum lost: table empty", vec![], vec![], true, base));

        for (name, health, overrides, quorum_lost, want) in cases {
            let mut hs = HealthSnapshot::default();
            for (last, rh) in health {
                hs.reals.insert(id(last), rh);
            }
            if quorum_lost {
                hs.quorum_lost.insert(key);
            }
            let mut ov = Overrides::default();
            for (last, o) in overrides {
                ov.0.insert(id(last), o);
            }
            let d = desired_state(&Inputs {
                config: &cfg,
                host: &h,
                health: &hs,
                overrides: &ov,
                vrrp: &NO_VRRP,
                plan: &NO_PLAN,
            });
            let s = &d.services[0];
            let got: Vec<(RealState, u32, bool)> =
                s.reals.iter().map(|r| (r.state, r.weight, r.keeps_flows)).collect();
            assert_eq!(got, want, "{name}");
            // The table holds exactly the reals that take new flows (none without quorum).
            let mut in_ring: Vec<u32> = s.ring.entries();
            in_ring.sort_unstable();
            in_ring.dedup();
            let expect: Vec<u32> = if quorum_lost {
                vec![]
            } else {
                (0..4).filter(|&i| want[i as usize].0 == RealState::Up).collect()
            };
            assert_eq!(in_ring, expect, "{name}: table members");
        }
    }

    #[test]
    fn services_forward_only_while_their_vrrp_instance_is_master() {
        let conf = format!(
            "{CONF}[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\nvirtual_ipaddress = [\"192.0.2.100/24\"]\n\
             [[virtual_server]]\nvip = \"192.0.2.200\"\nport = 80\ninterface = \"eth0\"\n\
             [[virtual_server.real_server]]\naddress = \"192.0.2.11\"\n"
        );
        let cfg = config::parse_toml(&conf, Path::new("t.toml"), &AnyHost).expect("valid");
        let h = host(&["192.0.2.11", "192.0.2.12", "192.0.2.13"]);
        // (masters, service 0 active, service 1 active (no instance), interfaces attached)
        let cases: &[(&[&str], bool, bool, usize)] =
            &[(&[], false, true, 1), (&["VI_1"], true, true, 1), (&["VI_2"], false, true, 1)];
        for (masters, a0, a1, ifaces) in cases {
            let vrrp = VrrpStates { masters: masters.iter().map(|m| (*m).to_owned()).collect() };
            let d = desired_state(&Inputs { vrrp: &vrrp, ..inputs(&cfg, &h) });
            assert_eq!(d.services[0].vrrp_instance.as_deref(), Some("VI_1"));
            assert_eq!((d.services[0].active, d.services[1].active), (*a0, *a1), "{masters:?}");
            assert_eq!(d.interfaces.len(), *ifaces);
        }
        // Only a service of a non-master instance: nothing to attach.
        let only = format!(
            "{CONF}[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\nvirtual_ipaddress = [\"192.0.2.100/24\"]\n"
        );
        let cfg = config::parse_toml(&only, Path::new("t.toml"), &AnyHost).expect("valid");
        let d = desired_state(&inputs(&cfg, &h));
        assert!(
            d.interfaces.is_empty() && d.tx_interfaces.is_empty(),
            "backup director attaches nothing"
        );
    }

    /// `backup_xdp`: on BACKUP the service is staged either way; "standby" keeps the interfaces
    /// (attached, and the reals' ones in the redirect map), so MASTER changes `active` only.
    #[test]
    fn standby_keeps_a_backups_interfaces() {
        let h = host(&["192.0.2.11", "192.0.2.12", "192.0.2.13"]);
        let vi = "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\n\
                  virtual_router_id = 51\nvirtual_ipaddress = [\"192.0.2.100/24\"]\n";
        // (backup_xdp line, masters, active, interfaces attached)
        let cases: &[(&str, &[&str], bool, usize)] = &[
            ("", &[], false, 0),
            ("", &["VI_1"], true, 1),
            ("backup_xdp = \"detach\"\n", &[], false, 0),
            ("backup_xdp = \"standby\"\n", &[], false, 1),
            ("backup_xdp = \"standby\"\n", &["VI_1"], true, 1),
        ];
        for (line, masters, active, ifaces) in cases {
            let text = format!("[dataplane]\n{line}{CONF}{vi}");
            let cfg = config::parse_toml(&text, Path::new("t.toml"), &AnyHost).expect("valid");
            let vrrp = VrrpStates { masters: masters.iter().map(|m| (*m).to_owned()).collect() };
            let d = desired_state(&Inputs { vrrp: &vrrp, ..inputs(&cfg, &h) });
            let case = format!("{line:?} masters {masters:?}");
            assert_eq!(d.services[0].active, *active, "{case}");
            assert_eq!(d.interfaces.len(), *ifaces, "{case}: attached interfaces");
            // The staged service is complete: the same reals and table as when live.
            let live = desired_state(&Inputs {
                vrrp: &VrrpStates { masters: ["VI_1".to_owned()].into() },
                ..inputs(&cfg, &h)
            });
            assert_eq!(d.services[0].ring, live.services[0].ring, "{case}");
            assert_eq!(d.services[0].reals, live.services[0].reals, "{case}");
        }
    }
}
