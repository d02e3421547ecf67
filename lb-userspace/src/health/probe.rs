//! Checks through the VIP (`through_vip`): each (service, real) with such a check gets a socket
//! mark from the reserved range (`lb_common::probe`), derived purely from the config
//! ([`probes`]); the check's socket connects to the real's own address with that mark, and the
//! probe object's TC programs on the interfaces the reals are reached by send its packets to the
//! VIP on that real (its MAC for DR, its tunnel for TUN) and map the replies back (see
//! docs/tunnels.md, "Checks through the VIP"). [`ProbePath`] is the edge that loads and attaches
//! them and keeps their target map equal to [`desired`]; it works without the XDP program (IPVS
//! dataplane, VRRP BACKUP). While it cannot (not loaded, not attached), the checks through the
//! VIP are down with the reason ([`path_error`]), never run against the real's own address. A
//! real of the other family than its VIP gets its translated check's source from the host's
//! addresses ([`desired`], [`inner_source`]); without one, its checks are down with why.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    net::IpAddr,
    sync::{PoisonError, RwLock},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::HashMap as BpfHashMap,
    programs::{SchedClassifier, TcAttachType, tc::SchedClassifierLinkId},
};
use lb_common::{
    Addr, FAMILY_V4, FAMILY_V6, TUN_GRE, TUN_GUE, TUN_IPIP, TUN_NONE, addr_v4, addr_v6,
    probe::{
        EGRESS_PROGRAM, FLOWS_MAP, INGRESS_PROGRAM, MARK_BASE, MAX_TARGETS, ProbeTarget,
        TARGETS_MAP,
    },
};

use super::state::RealId;
use crate::{
    config::{Config, LbKind, Tunnel},
    desired::HostFacts,
};

/// The TC programs, built with the XDP program (lb-userspace's build.rs).
static PROBE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-probe"));

/// How a real's checks through the VIP go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Marked with this mark, sent to `target`.
    Path { mark: u32, target: ProbeTarget },
    /// Cannot be sent through the VIP: why (the checks report it, down).
    Unsupported(String),
}

fn raw(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(a) => addr_v4(a.octets()),
        IpAddr::V6(a) => addr_v6(a.octets()),
    }
}

fn family(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 }
}

/// Every real with a check through the VIP, and how it goes: marks numbered in file order from
/// `MARK_BASE` + 1. Pure: the monitor and the probe edge derive the same marks.
pub fn probes(config: &Config) -> HashMap<RealId, Probe> {
    let mut out = HashMap::new();
    let mut next = 0u32;
    for vs in &config.virtual_servers {
        for rs in &vs.real_servers {
            if !rs.health.checks.iter().any(|c| c.through_vip) {
                continue;
            }
            let id = (vs.key(), rs.address, rs.port);
            if out.contains_key(&id) {
                continue;
            }
            let tun = match vs.lb_kind_of(rs) {
                LbKind::Dr => Some((TUN_NONE, 0)),
                LbKind::Tun(Tunnel::Ipip) => Some((TUN_IPIP, 0)),
                LbKind::Tun(Tunnel::Gue { port }) => Some((TUN_GUE, port)),
                LbKind::Tun(Tunnel::Gre) => Some((TUN_GRE, 0)),
                LbKind::Nat => None,
            };
            let tun_src = vs.forwarding.tun_source.filter(|s| s.is_ipv4() == rs.address.is_ipv4());
            let probe = match tun {
                _ if vs.fwmark.is_some() => Probe::Unsupported(
                    "a firewall-mark service has no VIP:port to check through".to_owned(),
                ),
                None => Probe::Unsupported(
                    "a NAT real does not hold the VIP: check it by its own address".to_owned(),
                ),
                _ if next >= MAX_TARGETS => Probe::Unsupported(format!(
                    "more than {MAX_TARGETS} reals are checked through the VIP"
                )),
                Some((kind, port)) => {
                    next += 1;
                    Probe::Path {
                        mark: MARK_BASE + next,
                        target: ProbeTarget {
                            real: raw(rs.address),
                            vip: raw(vs.vip),
                            tun_src: tun_src.map(raw).unwrap_or_default(),
                            // Of the other family than the real's: from the host (`desired`).
                            inner_src: [0; 4],
                            family: family(vs.vip),
                            real_family: family(rs.address),
                            tun: kind,
                            _pad: 0,
                            tun_port_be: port.to_be(),
                            _pad2: 0,
                        },
                    }
                }
            };
            out.insert(id, probe);
        }
    }
    out
}

/// Whether a check through the VIP goes to a real of the other family than its VIP: then the
/// host facts need the interfaces' addresses ([`desired`] picks the translated source there).
pub fn needs_addresses(config: &Config) -> bool {
    config.virtual_servers.iter().any(|vs| {
        vs.real_servers.iter().any(|rs| {
            rs.address.is_ipv4() != vs.vip.is_ipv4()
                && rs.health.checks.iter().any(|c| c.through_vip)
        })
    })
}

/// The source of a check translated into the VIP's family (`v6`): the first address of that
/// family in `addresses` (an interface's, in the kernel's order) that the real can reply to
/// directly: global (not loopback, link-local, unspecified or multicast) and no VIP (`vips`),
/// which the real holds itself.
pub fn inner_source(addresses: &[IpAddr], v6: bool, vips: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    let usable = |ip: &IpAddr| match ip {
        IpAddr::V4(a) => !v6 && !a.is_loopback() && !a.is_link_local() && !a.is_unspecified(),
        IpAddr::V6(a) => {
            v6 && !a.is_loopback()
                && !a.is_unicast_link_local()
                && !a.is_unspecified()
                && !a.is_multicast()
        }
    };
    addresses.iter().copied().find(|ip| usable(ip) && !vips.contains(ip))
}

/// What the probe edge should hold: the targets by mark, the interfaces (by name) the marked
/// reals are reached by, from the routing table, and the marks that cannot go through the VIP
/// on this host, with why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeDesired {
    pub targets: BTreeMap<u32, ProbeTarget>,
    pub interfaces: BTreeSet<String>,
    pub unsupported: BTreeMap<u32, String>,
}

pub fn desired(config: &Config, facts: &HostFacts) -> ProbeDesired {
    let mut d = ProbeDesired::default();
    let vips: BTreeSet<IpAddr> = config.virtual_servers.iter().map(|vs| vs.vip).collect();
    let services: HashMap<_, _> = config.virtual_servers.iter().map(|vs| (vs.key(), vs)).collect();
    for ((key, real, _), probe) in probes(config) {
        let Probe::Path { mark, mut target } = probe else { continue };
        let interface = facts.routes.get(&real).and_then(|e| facts.interface_by_index(e.ifindex));
        if target.family != target.real_family {
            // The real's interface first (the real reaches it), then the service's.
            let service = services.get(&key).map(|vs| vs.interface.as_str()).unwrap_or_default();
            let names: Vec<&str> =
                interface.map(|i| i.name.as_str()).into_iter().chain([service]).collect();
            let vip_v6 = target.family == FAMILY_V6;
            let found = names.iter().find_map(|n| {
                inner_source(facts.addresses.get(*n).map_or(&[][..], Vec::as_slice), vip_v6, &vips)
            });
            match found {
                Some(src) => target.inner_src = raw(src),
                None => {
                    let family = if vip_v6 { "IPv6" } else { "IPv4" };
                    let names = names.iter().filter(|n| !n.is_empty()).copied();
                    d.unsupported.insert(
                        mark,
                        format!(
                            "the real is of the other address family than the VIP and no global \
                             {family} address (not a VIP) is on {} for the translated check's \
                             source",
                            names.collect::<Vec<_>>().join(" or ")
                        ),
                    );
                    continue;
                }
            }
        }
        d.targets.insert(mark, target);
        if let Some(i) = interface {
            d.interfaces.insert(i.name.clone());
        }
    }
    d
}

/// What the probe edge last achieved: the marks whose targets it holds, or why it holds none;
/// and the marks the host cannot serve, with why.
struct PathState {
    error: Option<String>,
    marks: BTreeSet<u32>,
    unsupported: BTreeMap<u32, String>,
}

static PATH: RwLock<PathState> =
    RwLock::new(PathState { error: None, marks: BTreeSet::new(), unsupported: BTreeMap::new() });

/// Why a check marked `mark` cannot go through the VIP now, if it cannot: the edge failed, or
/// it holds no target for that mark (not set up yet, or not by this process: only `lb run` sets
/// it up).
pub fn path_error(mark: u32) -> Option<String> {
    let path = PATH.read().unwrap_or_else(PoisonError::into_inner);
    if let Some(why) = path.unsupported.get(&mark) {
        return Some(why.clone());
    }
    match &path.error {
        Some(e) => Some(e.clone()),
        None if !path.marks.contains(&mark) => {
            Some("the probe path has no target for this check (not set up yet)".to_owned())
        }
        None => None,
    }
}

fn set_path(result: Result<&ProbeDesired, String>) {
    let mut path = PATH.write().unwrap_or_else(PoisonError::into_inner);
    match result {
        Ok(want) => {
            path.error = None;
            path.marks = want.targets.keys().copied().collect();
            path.unsupported = want.unsupported.clone();
        }
        Err(e) => {
            path.error = Some(e);
            path.marks.clear();
            path.unsupported.clear();
        }
    }
}

tokio::task_local! {
    /// The mark of the check attempt running on this task (`through_vip`).
    static MARK: u32;
}

/// Runs `attempt` with its sockets marked `mark`.
pub async fn with_mark<F: Future>(mark: u32, attempt: F) -> F::Output {
    MARK.scope(mark, attempt).await
}

/// Marks a check's socket for its probe target when the attempt runs through the VIP: the one
/// place every checker that connects calls when it creates its socket.
pub(crate) fn mark_socket(socket: &impl std::os::fd::AsFd) -> std::io::Result<()> {
    match MARK.try_with(|m| *m) {
        Ok(mark) => socket2::SockRef::from(socket).set_mark(mark),
        Err(_) => Ok(()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("loading the probe object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("probe program {name}: {source}")]
    Program { name: &'static str, source: aya::programs::ProgramError },
    #[error("probe map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("probe map: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("attaching the probe programs to {interface}: {source}{qdisc}")]
    Attach { interface: String, source: Box<aya::programs::ProgramError>, qdisc: String },
}

/// The probe edge: the loaded object, its attachments, and what was last applied.
#[derive(Default)]
pub struct ProbePath {
    ebpf: Option<Ebpf>,
    /// Interface → (egress link, ingress link).
    attached: BTreeMap<String, (SchedClassifierLinkId, SchedClassifierLinkId)>,
    applied: Option<ProbeDesired>,
}

impl ProbePath {
    /// Makes the programs' state `want`, idempotently; the checks through the VIP learn the
    /// result ([`path_error`]).
    pub fn apply(&mut self, want: &ProbeDesired) {
        if self.applied.as_ref() == Some(want) {
            return;
        }
        tracing::debug!(interfaces = ?want.interfaces, targets = want.targets.len(), "probe path");
        match self.try_apply(want) {
            Ok(()) => {
                self.applied = Some(want.clone());
                set_path(Ok(want));
            }
            Err(e) => {
                tracing::error!(error = %e, "checks through the VIP cannot run");
                self.applied = None;
                set_path(Err(e.to_string()));
            }
        }
    }

    fn try_apply(&mut self, want: &ProbeDesired) -> Result<(), ProbeError> {
        if want.targets.is_empty() {
            // Nothing to check through the VIP: nothing attached anywhere.
            self.stop();
            return Ok(());
        }
        if self.ebpf.is_none() {
            let mut ebpf = EbpfLoader::new().load(PROBE_OBJECT)?;
            for name in [EGRESS_PROGRAM, INGRESS_PROGRAM] {
                program(&mut ebpf, name)?
                    .load()
                    .map_err(|source| ProbeError::Program { name, source })?;
            }
            self.ebpf = Some(ebpf);
        }
        let Some(ebpf) = self.ebpf.as_mut() else { return Ok(()) };
        // Targets first: a newly attached egress program must know every mark it sees.
        {
            let map = ebpf.map_mut(TARGETS_MAP).ok_or(ProbeError::MissingMap(TARGETS_MAP))?;
            let mut targets: BpfHashMap<_, u32, ProbeTarget> = BpfHashMap::try_from(map)?;
            let stale: Vec<u32> = targets
                .keys()
                .filter_map(Result::ok)
                .filter(|m| !want.targets.contains_key(m))
                .collect();
            for mark in stale {
                targets.remove(&mark)?;
            }
            for (mark, target) in &want.targets {
                targets.insert(mark, target, 0)?;
            }
        }
        ebpf.map(FLOWS_MAP).ok_or(ProbeError::MissingMap(FLOWS_MAP))?;
        let gone: Vec<String> =
            self.attached.keys().filter(|i| !want.interfaces.contains(*i)).cloned().collect();
        for interface in gone {
            if let Some((egress, ingress)) = self.attached.remove(&interface) {
                // Gone with the interface, or detached now; either way no longer ours.
                let _ = program(ebpf, EGRESS_PROGRAM).map(|p| p.detach(egress));
                let _ = program(ebpf, INGRESS_PROGRAM).map(|p| p.detach(ingress));
                tracing::info!(interface, "checks through the VIP: probe programs detached");
            }
        }
        for interface in &want.interfaces {
            if self.attached.contains_key(interface) {
                continue;
            }
            let egress = attach(ebpf, EGRESS_PROGRAM, interface, TcAttachType::Egress)?;
            let ingress = match attach(ebpf, INGRESS_PROGRAM, interface, TcAttachType::Ingress) {
                Ok(link) => link,
                Err(e) => {
                    let _ = program(ebpf, EGRESS_PROGRAM).map(|p| p.detach(egress));
                    return Err(e);
                }
            };
            tracing::info!(interface, "checks through the VIP: probe programs attached");
            self.attached.insert(interface.clone(), (egress, ingress));
        }
        Ok(())
    }

    /// Detaches everything (the agent stops, or nothing is checked through the VIP any more).
    pub fn stop(&mut self) {
        // Dropping the object detaches its programs' links.
        for interface in std::mem::take(&mut self.attached).into_keys() {
            tracing::info!(interface, "checks through the VIP: probe programs detached");
        }
        self.ebpf = None;
        self.applied = None;
    }
}

#[cfg(test)]
impl ProbePath {
    /// A loaded program, for BPF_PROG_TEST_RUN.
    fn loaded(&mut self, name: &'static str) -> Option<&mut SchedClassifier> {
        program(self.ebpf.as_mut()?, name).ok()
    }
}

fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, ProbeError> {
    let program = ebpf
        .program_mut(name)
        .ok_or(ProbeError::Program { name, source: aya::programs::ProgramError::NotLoaded })?;
    program.try_into().map_err(|source| ProbeError::Program { name, source })
}

/// Attaches `name` to `interface`; where the kernel has no TCX (before 6.6), after adding the
/// clsact qdisc it needs (kept: other programs may use it).
fn attach(
    ebpf: &mut Ebpf,
    name: &'static str,
    interface: &str,
    kind: TcAttachType,
) -> Result<SchedClassifierLinkId, ProbeError> {
    let p = program(ebpf, name)?;
    match p.attach(interface, kind) {
        Ok(link) => Ok(link),
        Err(_) => {
            // Already there is fine; any other failure shows in the second attach's error.
            let qdisc = aya::programs::tc::qdisc_add_clsact(interface);
            p.attach(interface, kind).map_err(|source| ProbeError::Attach {
                interface: interface.to_owned(),
                source: Box::new(source),
                qdisc: qdisc
                    .err()
                    .map(|e| format!(" (adding the clsact qdisc: {e})"))
                    .unwrap_or_default(),
            })
        }
    }
}

#[cfg(test)]
mod fixtures;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{parse_toml, test_support::FakeHost};

    fn config(text: &str) -> Config {
        parse_toml(text, Path::new("t.toml"), &FakeHost).unwrap_or_else(|e| panic!("{e}"))
    }

    /// (service, real, through_vip, lb_kind keys) → expected probe: mark offset or a reason.
    #[test]
    fn marks_and_targets_follow_the_config() {
        let text = r#"
[[virtual_server]]
vip = "192.0.2.100"
port = 80
interface = "eth0"
tun_source = "198.51.100.2"
[[virtual_server.real_server]]
address = "192.0.2.11"
tcp_check = { through_vip = true }
[[virtual_server.real_server]]
address = "192.0.2.12"
tcp_check = {}
[[virtual_server.real_server]]
address = "198.51.100.34"
lb_kind = "TUN"
tun_type = "gue"
tun_port = 6080
http_get = [{ url = [{ path = "/" }] }, { through_vip = true, url = [{ path = "/" }] }]
[[virtual_server.real_server]]
address = "2001:db8:1::10"
lb_kind = "TUN"
tcp_check = { through_vip = true }
[[virtual_server.real_server]]
address = "192.0.2.13"
lb_kind = "NAT"
udp_check = { through_vip = true }
"#;
        let c = config(text);
        let p = probes(&c);
        let key = c.virtual_servers[0].key();
        let get = |ip: &str| p.get(&(key, ip.parse().unwrap(), 80)).cloned();
        let dr = ProbeTarget {
            real: raw("192.0.2.11".parse().unwrap()),
            vip: raw("192.0.2.100".parse().unwrap()),
            tun_src: raw("198.51.100.2".parse().unwrap()),
            inner_src: [0; 4],
            family: FAMILY_V4,
            real_family: FAMILY_V4,
            tun: TUN_NONE,
            _pad: 0,
            tun_port_be: 0,
            _pad2: 0,
        };
        assert_eq!(get("192.0.2.11"), Some(Probe::Path { mark: MARK_BASE + 1, target: dr }));
        assert_eq!(get("192.0.2.12"), None, "no check through the VIP: no mark");
        let gue = ProbeTarget {
            real: raw("198.51.100.34".parse().unwrap()),
            tun: TUN_GUE,
            tun_port_be: 6080u16.to_be(),
            ..dr
        };
        assert_eq!(get("198.51.100.34"), Some(Probe::Path { mark: MARK_BASE + 2, target: gue }));
        // IPv4 VIP on an IPv6 real: translated, its inner source left to `desired`, the
        // IPv4 `tun_source` not for its IPv6 outer header.
        let mixed = ProbeTarget {
            real: raw("2001:db8:1::10".parse().unwrap()),
            tun_src: [0; 4],
            real_family: FAMILY_V6,
            tun: TUN_IPIP,
            ..dr
        };
        assert_eq!(get("2001:db8:1::10"), Some(Probe::Path { mark: MARK_BASE + 3, target: mixed }));
        match get("192.0.2.13") {
            Some(Probe::Unsupported(why)) => assert!(why.contains("NAT"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.len(), 4);
        // The same config gives the same marks (the monitor and the edge derive them apart).
        assert_eq!(probes(&config(text)), p);
    }

    /// (addresses, VIP family IPv6) → the translated check's source.
    #[test]
    fn inner_source_is_the_first_global_address_of_the_vips_family_not_a_vip() {
        let vips: BTreeSet<IpAddr> =
            ["192.0.2.100", "2001:db8:f::100"].iter().map(|a| a.parse().unwrap()).collect();
        let ips = |list: &[&str]| list.iter().map(|a| a.parse().unwrap()).collect::<Vec<IpAddr>>();
        let rows: [(&[&str], bool, Option<&str>); 8] = [
            (&["198.51.100.2", "2001:db8:d::2"], false, Some("198.51.100.2")),
            (&["198.51.100.2", "2001:db8:d::2"], true, Some("2001:db8:d::2")),
            // Link-local and loopback cannot be replied to from the real's network.
            (&["fe80::1", "::1", "2001:db8:d::2"], true, Some("2001:db8:d::2")),
            (&["127.0.0.1", "169.254.1.1", "10.0.0.2"], false, Some("10.0.0.2")),
            // A VIP: the real holds it and would answer itself.
            (&["192.0.2.100", "198.51.100.2"], false, Some("198.51.100.2")),
            (&["2001:db8:f::100"], true, None),
            (&["198.51.100.2"], true, None),
            (&[], false, None),
        ];
        for (list, v6, want) in rows {
            let want = want.map(|a| a.parse::<IpAddr>().unwrap());
            assert_eq!(inner_source(&ips(list), v6, &vips), want, "{list:?} v6 {v6}");
        }
    }

    /// A real of the other family: the inner source from its interface, else the service's;
    /// none → the mark unsupported with why (no target, nothing attached for it).
    #[test]
    fn desired_picks_the_translated_source_from_the_host() {
        use crate::net::route::Egress;
        let c = config(
            "[[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\ninterface = \"eth0\"\n\
             [[virtual_server.real_server]]\naddress = \"2001:db8:1::10\"\nlb_kind = \"TUN\"\n\
             tcp_check = { through_vip = true }\n",
        );
        let facts = |addresses: &[(&str, &str)]| {
            let mut facts = two_interfaces();
            facts.routes.insert(
                "2001:db8:1::10".parse().unwrap(),
                Egress { ifindex: 3, via_gateway: false },
            );
            for (name, ip) in addresses {
                facts.addresses.entry((*name).to_owned()).or_default().push(ip.parse().unwrap());
            }
            facts
        };
        // (interface, address) pairs of the host → the inner source, if any.
        type Row<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let rows: [Row<'_>; 4] = [
            (&[("eth1", "2001:db8:d::2"), ("eth1", "198.51.100.2")], Some("198.51.100.2")),
            (&[("eth0", "10.0.0.2"), ("eth1", "198.51.100.2")], Some("198.51.100.2")),
            // Nothing of the VIP's family on the real's interface: the service's.
            (&[("eth0", "10.0.0.2"), ("eth1", "2001:db8:d::2")], Some("10.0.0.2")),
            (&[("eth0", "192.0.2.100"), ("eth1", "2001:db8:d::2")], None),
        ];
        let mark = MARK_BASE + 1;
        for (addresses, want) in rows {
            let d = desired(&c, &facts(addresses));
            match want {
                Some(src) => {
                    let t = d.targets.get(&mark).unwrap_or_else(|| panic!("{addresses:?}"));
                    assert_eq!(t.inner_src, raw(src.parse().unwrap()), "{addresses:?}");
                    assert_eq!((t.family, t.real_family), (FAMILY_V4, FAMILY_V6));
                    assert!(d.unsupported.is_empty());
                    assert_eq!(d.interfaces.iter().collect::<Vec<_>>(), ["eth1"]);
                }
                None => {
                    assert!(d.targets.is_empty() && d.interfaces.is_empty(), "{addresses:?}");
                    let why = &d.unsupported[&mark];
                    assert!(why.contains("IPv4 address") && why.contains("eth1 or eth0"), "{why}");
                }
            }
        }
        assert!(needs_addresses(&c));
    }

    /// Host facts with the interfaces eth0 (index 2) and eth1 (index 3), nothing else.
    fn two_interfaces() -> crate::desired::HostFacts {
        let mut facts = crate::desired::HostFacts::default();
        for (name, ifindex) in [("eth0", 2), ("eth1", 3)] {
            facts.interfaces.insert(
                name.to_owned(),
                crate::net::iface::Interface {
                    name: name.to_owned(),
                    ifindex,
                    mac: crate::net::Mac([2; 6]),
                    driver: "veth".to_owned(),
                },
            );
        }
        facts
    }

    #[test]
    fn desired_names_the_interfaces_of_the_marked_reals() {
        use crate::net::route::Egress;
        let c = config(
            "[[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\ninterface = \"eth0\"\n\
             [[virtual_server.real_server]]\naddress = \"192.0.2.11\"\n\
             tcp_check = { through_vip = true }\n\
             [[virtual_server.real_server]]\naddress = \"192.0.2.12\"\ntcp_check = {}\n",
        );
        let mut facts = two_interfaces();
        for (real, ifindex) in [("192.0.2.11", 3), ("192.0.2.12", 2)] {
            facts.routes.insert(real.parse().unwrap(), Egress { ifindex, via_gateway: false });
        }
        assert!(!needs_addresses(&c), "no real of the other family");
        let d = desired(&c, &facts);
        assert_eq!(d.targets.keys().copied().collect::<Vec<_>>(), [MARK_BASE + 1]);
        // Only the checked-through-the-VIP real's interface, not the service's.
        assert_eq!(d.interfaces.iter().map(String::as_str).collect::<Vec<_>>(), ["eth1"]);
        assert_eq!(
            desired(
                &config(
                    "[[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\ninterface = \"eth0\"\n"
                ),
                &facts
            ),
            ProbeDesired::default()
        );
    }
}
