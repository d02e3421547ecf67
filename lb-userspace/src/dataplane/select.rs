//! Which dataplane serves each service: `--dataplane auto|xdp|ipvs` and what each service asks
//! for, against what this host can do. Pure: the agent probes the host, this decides.
//!
//! XDP serves direct routing with Maglev (`mh`), source hashing (`sh`), and the stateless
//! weighted schedulers `rr`/`wrr` (whose long-run shares weighted Maglev reproduces). IPVS is
//! *needed* for NAT, tunnels, one-packet scheduling and connection thresholds, and *preferred*
//! for the schedulers that count connections or keep per-destination state (`lc`, `wlc`, `sed`,
//! `nq`, `lblc`, `lblcr`, `dh`, `fo`, `ovf`, `twos`): `auto` gives those to IPVS when the kernel
//! has it, else runs them on XDP as weighted Maglev, with a notice. A service that needs IPVS on
//! a host without it, or that the chosen mode cannot serve, stops start-up (and reloads) with an
//! error naming the service and the reason.

use std::{collections::HashMap, fmt};

use serde::Serialize;

// What each service asks of a dataplane is the config's to say (its notices use it too).
use crate::config::{Config, Diagnostic, VirtualServer, VirtualServerKey};
pub use crate::config::{needs_ipvs, prefers_ipvs};

/// `--dataplane`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// XDP where it can serve the service, IPVS for the rest (and for everything when XDP cannot
    /// load).
    #[default]
    Auto,
    /// XDP only: services only IPVS can serve are refused.
    Xdp,
    /// Kernel IPVS only, like keepalived.
    Ipvs,
}

/// The dataplane serving one service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Xdp,
    Ipvs,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Xdp => "xdp",
            Backend::Ipvs => "ipvs",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What this host can do: `Err` says why a dataplane is unavailable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    pub xdp: Result<(), String>,
    pub ipvs: Result<(), String>,
}

/// One service's dataplane and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Choice {
    pub backend: Backend,
    /// Empty when there is nothing to say (XDP for a service it serves natively).
    pub reason: String,
}

/// The dataplane of every service; services not in it run on XDP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan(pub HashMap<VirtualServerKey, Choice>);

impl Plan {
    pub fn backend(&self, key: &VirtualServerKey) -> Backend {
        self.0.get(key).map_or(Backend::Xdp, |c| c.backend)
    }

    /// Whether any service runs on `backend`.
    pub fn uses(&self, backend: Backend) -> bool {
        self.0.values().any(|c| c.backend == backend)
    }
}

/// Decides every service's dataplane, or says which services cannot run and why.
pub fn plan(config: &Config, mode: Mode, caps: &Capabilities) -> Result<Plan, Vec<Diagnostic>> {
    let mut plan = Plan::default();
    let mut errors = Vec::new();
    for vs in &config.virtual_servers {
        let choice = choose(vs, mode, caps);
        match choice {
            Ok(choice) => {
                plan.0.insert(vs.key(), choice);
            }
            // A service no available dataplane can serve.
            Err(reason) => errors.push(Diagnostic::error(
                &config.source,
                vs.location,
                format!("virtual server {}: {reason}", vs.key()),
            )),
        }
    }
    if errors.is_empty() { Ok(plan) } else { Err(errors) }
}

fn choose(vs: &VirtualServer, mode: Mode, caps: &Capabilities) -> Result<Choice, String> {
    let ipvs = |reason: String| -> Result<Choice, String> {
        match &caps.ipvs {
            Ok(()) => Ok(Choice { backend: Backend::Ipvs, reason }),
            Err(why) => {
                Err(format!("{reason} needs the IPVS dataplane, which is not usable here: {why}"))
            }
        }
    };
    let xdp = |reason: String| -> Result<Choice, String> {
        match &caps.xdp {
            Ok(()) => Ok(Choice { backend: Backend::Xdp, reason }),
            Err(why) => Err(format!("the XDP dataplane is not usable here: {why}")),
        }
    };
    let approximated =
        |scheduler: &str| format!("scheduler `{scheduler}` runs as weighted Maglev (`mh`) on XDP");
    match mode {
        Mode::Ipvs => ipvs("--dataplane ipvs".to_owned()),
        Mode::Xdp => match needs_ipvs(vs) {
            Some(reason) => Err(format!("{reason}: it cannot run with --dataplane xdp")),
            None if prefers_ipvs(vs).is_some() => xdp(approximated(&vs.lb_algo)),
            None => xdp(String::new()),
        },
        Mode::Auto => {
            if let Some(reason) = needs_ipvs(vs) {
                return ipvs(reason);
            }
            if let Some(reason) = prefers_ipvs(vs) {
                return match (&caps.ipvs, &caps.xdp) {
                    (Ok(()), _) => ipvs(reason),
                    (Err(why), Ok(())) => Ok(Choice {
                        backend: Backend::Xdp,
                        reason: format!("{} (IPVS not usable: {why})", approximated(&vs.lb_algo)),
                    }),
                    (Err(_), Err(_)) => xdp(String::new()),
                };
            }
            match (&caps.xdp, &caps.ipvs) {
                (Ok(()), _) => Ok(Choice { backend: Backend::Xdp, reason: String::new() }),
                (Err(why), Ok(())) => {
                    Ok(Choice { backend: Backend::Ipvs, reason: format!("XDP not usable: {why}") })
                }
                (Err(xdp_why), Err(ipvs_why)) => Err(format!(
                    "neither dataplane is usable here: XDP: {xdp_why}; IPVS: {ipvs_why}"
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{parse_toml, test_support::FakeHost};

    fn service(extra: &str) -> Config {
        let text = format!(
            "[[virtual_server]]\nvip = '192.0.2.100'\nport = 80\ninterface = 'eth0'\n{extra}\n\
             [[virtual_server.real_server]]\naddress = '192.0.2.11'\n"
        );
        parse_toml(&text, Path::new("lb.toml"), &FakeHost).expect("valid test config")
    }

    const BOTH: Capabilities = Capabilities { xdp: Ok(()), ipvs: Ok(()) };

    fn no_ipvs() -> Capabilities {
        Capabilities { xdp: Ok(()), ipvs: Err("generic netlink family IPVS not found".into()) }
    }

    fn no_xdp() -> Capabilities {
        Capabilities { xdp: Err("the kernel refused the program".into()), ipvs: Ok(()) }
    }

    /// (case, service lines, mode, host, Ok(backend, reason part) or Err(message part))
    #[test]
    fn scenarios() {
        type Case = (
            &'static str,
            &'static str,
            Mode,
            Capabilities,
            Result<(Backend, &'static str), &'static str>,
        );
        let cases: Vec<Case> = vec![
            ("DR mh on XDP", "", Mode::Auto, BOTH, Ok((Backend::Xdp, ""))),
            ("wrr is XDP's", "lb_algo = 'wrr'", Mode::Auto, BOTH, Ok((Backend::Xdp, ""))),
            (
                "NAT to IPVS",
                "lb_kind = 'NAT'",
                Mode::Auto,
                BOTH,
                Ok((Backend::Ipvs, "`lb_kind NAT`")),
            ),
            (
                "TUN to IPVS",
                "lb_kind = 'TUN'",
                Mode::Auto,
                BOTH,
                Ok((Backend::Ipvs, "`lb_kind TUN`")),
            ),
            (
                "ops to IPVS",
                "protocol = 'udp'\nops = true",
                Mode::Auto,
                BOTH,
                Ok((Backend::Ipvs, "one-packet")),
            ),
            (
                "wlc prefers IPVS",
                "lb_algo = 'wlc'",
                Mode::Auto,
                BOTH,
                Ok((Backend::Ipvs, "scheduler `wlc`")),
            ),
            (
                "wlc on XDP without IPVS",
                "lb_algo = 'wlc'",
                Mode::Auto,
                no_ipvs(),
                Ok((
                    Backend::Xdp,
                    "scheduler `wlc` runs as weighted Maglev (`mh`) on XDP (IPVS not usable",
                )),
            ),
            (
                "wlc forced to XDP",
                "lb_algo = 'lc'",
                Mode::Xdp,
                BOTH,
                Ok((Backend::Xdp, "scheduler `lc` runs as weighted Maglev")),
            ),
            ("old kernel: IPVS", "", Mode::Auto, no_xdp(), Ok((Backend::Ipvs, "XDP not usable"))),
            ("forced IPVS", "", Mode::Ipvs, BOTH, Ok((Backend::Ipvs, "--dataplane ipvs"))),
            (
                "NAT without IPVS",
                "lb_kind = 'NAT'",
                Mode::Auto,
                no_ipvs(),
                Err("lb.toml:1:1: virtual server 192.0.2.100:80/tcp: `lb_kind NAT` (only direct \
                     routing runs on XDP) needs the IPVS dataplane, which is not usable here: \
                     generic netlink family IPVS not found"),
            ),
            (
                "NAT forced to XDP",
                "lb_kind = 'NAT'",
                Mode::Xdp,
                BOTH,
                Err(
                    "`lb_kind NAT` (only direct routing runs on XDP): it cannot run with --dataplane xdp",
                ),
            ),
            ("forced IPVS without it", "", Mode::Ipvs, no_ipvs(), Err("needs the IPVS dataplane")),
            (
                "forced XDP without it",
                "",
                Mode::Xdp,
                no_xdp(),
                Err("the XDP dataplane is not usable here"),
            ),
            (
                "neither",
                "",
                Mode::Auto,
                Capabilities { xdp: Err("no BPF".into()), ipvs: Err("no IPVS".into()) },
                Err("neither dataplane is usable here: XDP: no BPF; IPVS: no IPVS"),
            ),
        ];
        for (name, extra, mode, caps, want) in cases {
            let config = service(extra);
            let got = plan(&config, mode, &caps);
            match (got, want) {
                (Ok(plan), Ok((backend, reason))) => {
                    let choice = &plan.0[&config.virtual_servers[0].key()];
                    assert_eq!(choice.backend, backend, "{name}");
                    assert!(choice.reason.contains(reason), "{name}: reason {:?}", choice.reason);
                    if reason.is_empty() {
                        assert!(choice.reason.is_empty(), "{name}: reason {:?}", choice.reason);
                    }
                }
                (Err(errors), Err(part)) => {
                    assert_eq!(errors.len(), 1, "{name}");
                    let text = errors[0].to_string();
                    assert!(text.contains(part), "{name}: {text}");
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_tunnel_on_one_real_or_the_sorry_server_needs_ipvs() {
        let config = service("sorry_server = { address = '192.0.2.200', lb_kind = 'NAT' }");
        let chosen = plan(&config, Mode::Auto, &BOTH).expect("plan");
        assert_eq!(chosen.backend(&config.virtual_servers[0].key()), Backend::Ipvs);
        let config = parse_toml(
            "[[virtual_server]]\nvip = '192.0.2.100'\nport = 80\ninterface = 'eth0'\n\
             [[virtual_server.real_server]]\naddress = '192.0.2.11'\nlb_kind = 'TUN'\n\
             [[virtual_server.real_server]]\naddress = '192.0.2.12'\nuthreshold = 9\n",
            Path::new("lb.toml"),
            &FakeHost,
        )
        .expect("valid");
        let vs = &config.virtual_servers[0];
        assert_eq!(
            needs_ipvs(vs).as_deref(),
            Some("real server 192.0.2.11:80 uses `lb_kind TUN` (only direct routing runs on XDP)")
        );
    }

    #[test]
    fn a_firewall_mark_service_runs_on_ipvs_only() {
        let text = "[[virtual_server]]\nfwmark = 3\n[[virtual_server.real_server]]\n\
                    address = '192.0.2.11'\nport = 80\n";
        let config = parse_toml(text, Path::new("lb.toml"), &FakeHost).expect("valid");
        let key = config.virtual_servers[0].key();
        for (mode, caps) in [(Mode::Auto, BOTH), (Mode::Ipvs, BOTH), (Mode::Auto, no_xdp())] {
            let chosen = plan(&config, mode, &caps).expect("IPVS is there");
            assert_eq!(chosen.backend(&key), Backend::Ipvs, "{mode:?}");
        }
        let refused = |mode, caps| plan(&config, mode, &caps).expect_err("refused")[0].to_string();
        assert_eq!(
            refused(Mode::Auto, no_ipvs()),
            "lb.toml:1:1: virtual server fwmark 3: a firewall-mark service (netfilter marks \
             packets after XDP has run, so only IPVS can match them) needs the IPVS dataplane, \
             which is not usable here: generic netlink family IPVS not found"
        );
        assert!(refused(Mode::Xdp, BOTH).ends_with("it cannot run with --dataplane xdp"));
    }

    #[test]
    fn every_failing_service_is_reported() {
        let text = "[[virtual_server]]\nvip = '192.0.2.100'\nport = 80\ninterface = 'eth0'\nlb_kind = 'NAT'\n\
                    [[virtual_server]]\nvip = '192.0.2.101'\nport = 80\ninterface = 'eth0'\n\
                    [[virtual_server]]\nvip = '192.0.2.102'\nport = 80\ninterface = 'eth0'\nlb_kind = 'TUN'\n";
        let config = parse_toml(text, Path::new("lb.toml"), &FakeHost).expect("valid");
        let errors = plan(&config, Mode::Auto, &no_ipvs()).expect_err("two need IPVS");
        let at: Vec<String> = errors.iter().map(|e| e.location().to_string()).collect();
        assert_eq!(at, ["1:1", "10:1"]);
    }
}
