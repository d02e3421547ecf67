//! Route health injection: which VIPs this director announces, and why. A VIP is announced while
//! this director can serve it: the dataplane is live, the VIP is not withdrawn by the operator,
//! the VRRP instance owning it (if any) is MASTER here, every service on it can take new flows
//! (its quorum holds, or its sorry server takes over), and `announce_delay` has passed since
//! start. Firewall-mark services have no VIP of their own and announce nothing.
//!
//! Pure: computed from the desired dataplane state ([`desired_state`](crate::desired)), which
//! already folds in health, VRRP states and real-server overrides; every health transition that
//! recomputes it can recompute this.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::VirtualServerKey;
use crate::desired::{Desired, RealState, ServiceDesired};
use crate::health::state::HealthSnapshot;

/// VIPs the operator withdrew (`lb bgp withdraw [VIP]`) until the next reload or `lb bgp
/// announce`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Withdrawals {
    /// `lb bgp withdraw` without a VIP: every VIP.
    pub all: bool,
    pub vips: BTreeSet<IpAddr>,
}

impl Withdrawals {
    pub fn withdrawn(&self, vip: IpAddr) -> bool {
        self.all || self.vips.contains(&vip)
    }
}

/// Everything the announcements depend on.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub desired: &'a Desired,
    pub health: &'a HealthSnapshot,
    pub withdrawals: &'a Withdrawals,
    /// The XDP program is attached (or the IPVS services are installed) with the desired state
    /// applied: false while starting, after a failed apply, and while stopping.
    pub dataplane_live: bool,
    /// `[bgp] announce_delay`.
    pub announce_delay: Duration,
    pub now: Instant,
    /// When the agent started.
    pub started_at: Instant,
}

/// Why a service on a VIP cannot take new flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotReady {
    /// Its up reals' weights are below `quorum` (and no sorry server takes over).
    QuorumLost,
    /// No real can take new flows: all down, drained or unresolved (and no sorry server).
    NoRealUp,
    /// Its interface is missing.
    NoInterface,
}

impl NotReady {
    pub fn as_str(self) -> &'static str {
        match self {
            NotReady::QuorumLost => "lacks quorum",
            NotReady::NoRealUp => "has no real up",
            NotReady::NoInterface => "has no interface",
        }
    }
}

/// Why a VIP is announced or not, as `lb status` will show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    Ready,
    /// Services of the VIP that cannot take new flows, each with why.
    NotReady {
        services: Vec<(VirtualServerKey, NotReady)>,
    },
    WithdrawnByOperator,
    /// The VRRP instance owning the VIP is not MASTER here.
    VrrpBackup {
        instance: String,
    },
    /// `announce_delay` has not passed since start; announced after `remaining`.
    AnnounceDelay {
        remaining: Duration,
    },
    DataplaneNotLive,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Ready => f.write_str("ready"),
            Reason::NotReady { services } => {
                f.write_str("not ready: ")?;
                for (i, (key, why)) in services.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{key} {}", why.as_str())?;
                }
                Ok(())
            }
            Reason::WithdrawnByOperator => f.write_str("withdrawn by operator"),
            Reason::VrrpBackup { instance } => write!(f, "VRRP BACKUP ({instance})"),
            Reason::AnnounceDelay { remaining } => {
                write!(f, "announce_delay ({:.1} s left)", remaining.as_secs_f64())
            }
            Reason::DataplaneNotLive => f.write_str("dataplane not live"),
        }
    }
}

/// One VIP's announcement state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VipAnnouncement {
    pub vip: IpAddr,
    pub announce: bool,
    pub reason: Reason,
}

/// Every VIP of the desired state (firewall-mark services aside), in address order, with whether
/// to announce it and why. When several reasons hold, the one the operator acts on first wins:
/// the dataplane, their own withdrawal, VRRP, the services' health, then the start-up delay.
pub fn vip_announcements(inputs: &Inputs<'_>) -> Vec<VipAnnouncement> {
    let mut by_vip: BTreeMap<IpAddr, Vec<&ServiceDesired>> = BTreeMap::new();
    for service in inputs.desired.services.iter().filter(|s| s.key.fwmark.is_none()) {
        by_vip.entry(service.key.vip).or_default().push(service);
    }
    let delay_left =
        (inputs.started_at + inputs.announce_delay).saturating_duration_since(inputs.now);
    by_vip
        .into_iter()
        .map(|(vip, services)| {
            let reason = reason(inputs, vip, &services, delay_left);
            VipAnnouncement { vip, announce: reason == Reason::Ready, reason }
        })
        .collect()
}

fn reason(
    inputs: &Inputs<'_>,
    vip: IpAddr,
    services: &[&ServiceDesired],
    delay_left: Duration,
) -> Reason {
    if !inputs.dataplane_live {
        return Reason::DataplaneNotLive;
    }
    if inputs.withdrawals.withdrawn(vip) {
        return Reason::WithdrawnByOperator;
    }
    if let Some(instance) =
        services.iter().find(|s| !s.active).and_then(|s| s.vrrp_instance.clone())
    {
        return Reason::VrrpBackup { instance };
    }
    let not_ready: Vec<(VirtualServerKey, NotReady)> = services
        .iter()
        .filter_map(|s| service_not_ready(inputs.health, s).map(|why| (s.key, why)))
        .collect();
    if !not_ready.is_empty() {
        return Reason::NotReady { services: not_ready };
    }
    if !delay_left.is_zero() {
        return Reason::AnnounceDelay { remaining: delay_left };
    }
    Reason::Ready
}

/// Why `service` cannot take new flows, if it cannot. A sorry server that can be reached takes
/// over whatever the reals' state, so the service is then ready.
fn service_not_ready(health: &HealthSnapshot, service: &ServiceDesired) -> Option<NotReady> {
    if service.ifindex.is_none() {
        return Some(NotReady::NoInterface);
    }
    if service.sorry.as_ref().is_some_and(|s| s.state != RealState::Unresolved) {
        return None;
    }
    if health.quorum_lost.contains(&service.key) {
        Some(NotReady::QuorumLost)
    } else if service.ring.is_empty() {
        Some(NotReady::NoRealUp)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;

    use super::*;
    use crate::config::{self, Config, test_support::AnyHost};
    use crate::dataplane::select::Plan;
    use crate::desired::{self, HostFacts, VrrpStates};
    use crate::health::state::RealHealth;
    use crate::net::{Mac, iface::Interface};
    use crate::overrides::Overrides;

    /// Three VIPs: .100 with two services (one of them with a sorry server), .101 owned by the
    /// VRRP instance VI_1, 2001:db8::100 with a quorum of 2; and a firewall-mark service.
    const CONF: &str = r#"
[[virtual_server]]
vip = "192.0.2.100"
port = 80
interface = "eth0"
[[virtual_server.real_server]]
address = "192.0.2.11"
[[virtual_server]]
vip = "192.0.2.100"
port = 443
interface = "eth0"
[[virtual_server.real_server]]
address = "192.0.2.12"
[virtual_server.sorry_server]
address = "192.0.2.19"
[[virtual_server]]
vip = "192.0.2.101"
port = 80
interface = "eth0"
[[virtual_server.real_server]]
address = "192.0.2.11"
[[virtual_server]]
vip = "2001:db8::100"
port = 80
interface = "eth0"
quorum = 2
[[virtual_server.real_server]]
address = "2001:db8::11"
[[virtual_server.real_server]]
address = "2001:db8::12"
[[virtual_server]]
fwmark = 7
interface = "eth0"
[[virtual_server.real_server]]
address = "192.0.2.11"
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
virtual_router_id = 51
virtual_ipaddress = ["192.0.2.101/24"]
"#;

    fn host() -> HostFacts {
        let eth0 =
            Interface { name: "eth0".into(), ifindex: 7, mac: Mac([2; 6]), driver: "veth".into() };
        let mut h = HostFacts::default();
        h.interfaces.insert("eth0".into(), eth0);
        for a in ["192.0.2.11", "192.0.2.12", "192.0.2.19", "2001:db8::11", "2001:db8::12"] {
            h.neighbours.0.insert((7, a.parse().unwrap()), Mac([0x52, 0, 0, 0, 0, 1]));
        }
        h
    }

    /// What a scenario changes from "all up, VRRP MASTER, live, no delay".
    #[derive(Default, Clone)]
    struct Case {
        down: &'static [&'static str],
        quorum_lost: &'static [&'static str],
        backup: bool,
        not_live: bool,
        withdrawn: Withdrawals,
        delay_left: bool,
        no_interface: bool,
    }

    fn service(config: &Config, addr: &str) -> VirtualServerKey {
        let addr: SocketAddr = addr.parse().unwrap();
        config
            .virtual_servers
            .iter()
            .map(|v| v.key())
            .find(|k| k.fwmark.is_none() && k.vip == addr.ip() && k.port == addr.port())
            .unwrap()
    }

    /// (VIP, announced, reason) of each VIP.
    type Outcome = Vec<(String, bool, String)>;

    fn run(case: &Case) -> Outcome {
        let config = config::parse_toml(CONF, Path::new("t.toml"), &AnyHost).unwrap();
        let mut health = HealthSnapshot::default();
        for real in case.down {
            let real: SocketAddr = real.parse().unwrap();
            for vs in &config.virtual_servers {
                if vs.real_servers.iter().any(|r| r.address == real.ip()) {
                    let down = RealHealth {
                        up: false,
                        weight: None,
                        latency: None,
                        message: "down".into(),
                    };
                    health.reals.insert((vs.key(), real.ip(), real.port()), down);
                }
            }
        }
        for s in case.quorum_lost {
            health.quorum_lost.insert(service(&config, s));
        }
        let mut vrrp = VrrpStates::default();
        if !case.backup {
            vrrp.masters.insert("VI_1".to_owned());
        }
        let mut host = host();
        if case.no_interface {
            host.interfaces.clear();
        }
        let desired = desired::desired_state(&desired::Inputs {
            config: &config,
            host: &host,
            health: &health,
            overrides: &Overrides::default(),
            vrrp: &vrrp,
            plan: &Plan::default(),
        });
        let started_at = Instant::now();
        let inputs = Inputs {
            desired: &desired,
            health: &health,
            withdrawals: &case.withdrawn,
            dataplane_live: !case.not_live,
            announce_delay: Duration::from_secs(10),
            now: started_at
                + if case.delay_left { Duration::from_secs(4) } else { Duration::from_secs(10) },
            started_at,
        };
        vip_announcements(&inputs)
            .into_iter()
            .map(|a| (a.vip.to_string(), a.announce, a.reason.to_string()))
            .collect()
    }

    #[test]
    fn scenarios() {
        let ready = |vip: &str| (vip.to_owned(), true, "ready".to_owned());
        let not = |vip: &str, why: &str| (vip.to_owned(), false, why.to_owned());
        let one_vip =
            |vip: &str| Withdrawals { all: false, vips: BTreeSet::from([vip.parse().unwrap()]) };
        let cases: Vec<(&str, Case, Outcome)> = vec![
            (
                "all ready; the firewall-mark service announces nothing",
                Case::default(),
                vec![ready("192.0.2.100"), ready("192.0.2.101"), ready("2001:db8::100")],
            ),
            (
                "one service of a VIP without a real: the VIP is not ready, naming it",
                Case { down: &["192.0.2.11:80"], ..Case::default() },
                vec![
                    not("192.0.2.100", "not ready: 192.0.2.100:80/tcp has no real up"),
                    not("192.0.2.101", "not ready: 192.0.2.101:80/tcp has no real up"),
                    ready("2001:db8::100"),
                ],
            ),
            (
                "the sorry server takes over: ready",
                Case {
                    down: &["192.0.2.12:443"],
                    quorum_lost: &["192.0.2.100:443"],
                    ..Case::default()
                },
                vec![ready("192.0.2.100"), ready("192.0.2.101"), ready("2001:db8::100")],
            ),
            (
                "quorum lost though a real is up",
                Case {
                    down: &["[2001:db8::12]:80"],
                    quorum_lost: &["[2001:db8::100]:80"],
                    ..Case::default()
                },
                vec![
                    ready("192.0.2.100"),
                    ready("192.0.2.101"),
                    not("2001:db8::100", "not ready: [2001:db8::100]:80/tcp lacks quorum"),
                ],
            ),
            (
                "VRRP BACKUP withdraws only the instance's VIP",
                Case { backup: true, ..Case::default() },
                vec![
                    ready("192.0.2.100"),
                    not("192.0.2.101", "VRRP BACKUP (VI_1)"),
                    ready("2001:db8::100"),
                ],
            ),
            (
                "operator withdraws one VIP",
                Case { withdrawn: one_vip("2001:db8::100"), ..Case::default() },
                vec![
                    ready("192.0.2.100"),
                    ready("192.0.2.101"),
                    not("2001:db8::100", "withdrawn by operator"),
                ],
            ),
            (
                "operator withdraws all, over VRRP and health",
                Case {
                    withdrawn: Withdrawals { all: true, ..Withdrawals::default() },
                    backup: true,
                    down: &["192.0.2.11:80"],
                    ..Case::default()
                },
                vec![
                    not("192.0.2.100", "withdrawn by operator"),
                    not("192.0.2.101", "withdrawn by operator"),
                    not("2001:db8::100", "withdrawn by operator"),
                ],
            ),
            (
                "announce_delay not passed: ready VIPs wait, unready ones say why",
                Case { delay_left: true, backup: true, ..Case::default() },
                vec![
                    not("192.0.2.100", "announce_delay (6.0 s left)"),
                    not("192.0.2.101", "VRRP BACKUP (VI_1)"),
                    not("2001:db8::100", "announce_delay (6.0 s left)"),
                ],
            ),
            (
                "dataplane not live: nothing, whatever else holds",
                Case { not_live: true, withdrawn: one_vip("192.0.2.100"), ..Case::default() },
                vec![
                    not("192.0.2.100", "dataplane not live"),
                    not("192.0.2.101", "dataplane not live"),
                    not("2001:db8::100", "dataplane not live"),
                ],
            ),
            (
                "interface gone",
                Case { no_interface: true, ..Case::default() },
                vec![
                    not(
                        "192.0.2.100",
                        "not ready: 192.0.2.100:80/tcp has no interface, 192.0.2.100:443/tcp has no interface",
                    ),
                    not("192.0.2.101", "not ready: 192.0.2.101:80/tcp has no interface"),
                    not("2001:db8::100", "not ready: [2001:db8::100]:80/tcp has no interface"),
                ],
            ),
        ];
        for (name, case, expected) in cases {
            assert_eq!(run(&case), expected, "{name}");
        }
    }

    #[test]
    fn reasons_serialise_for_json() {
        let reason = Reason::VrrpBackup { instance: "VI_1".into() };
        assert_eq!(
            serde_json::to_value(&reason).unwrap(),
            serde_json::json!({ "reason": "vrrp_backup", "instance": "VI_1" })
        );
        assert_eq!(
            serde_json::to_value(Reason::Ready).unwrap(),
            serde_json::json!({ "reason": "ready" })
        );
    }
}
