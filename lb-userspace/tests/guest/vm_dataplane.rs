//! `IpvsDataplane` against a real kernel (in the `cargo xtask vm` guest): a config goes through
//! `desired_state` into IPVS, `ipvsadm -Ln` must show what keepalived would have programmed, a
//! second apply changes nothing, health changes edit destinations, an agent that restarts after
//! a crash removes its leftovers, and rules that are not ours are never touched.

use std::{collections::HashMap, path::Path, process::Command};

use super::IpvsDataplane;
use lb::{
    config::{self, Config, HostView},
    dataplane::{
        Dataplane,
        select::{self, Capabilities, Mode},
    },
    desired::{Desired, HostFacts, Inputs, VrrpStates, desired_state},
    health::state::{HealthSnapshot, RealHealth},
    overrides::Overrides,
};

/// The configs here name interfaces of labs built later: every interface exists.
struct AnyHost;

impl HostView for AnyHost {
    fn interface_exists(&self, _: &str) -> bool {
        true
    }
}

const DR: &str = r#"
[[virtual_server]]
vip = "192.0.2.100"
port = 80
interface = "eth0"
lb_algo = "wlc"
inhibit_on_failure = false
real_server = [
    { address = "192.0.2.11", weight = 1 },
    { address = "192.0.2.12", weight = 2 },
    { address = "192.0.2.13", weight = 0 },
    { address = "192.0.2.14", weight = 3, inhibit_on_failure = true },
]
sorry_server = { address = "192.0.2.200" }
"#;

const NAT: &str = r#"
[[virtual_server]]
vip = "192.0.2.101"
port = 80
interface = "eth0"
lb_kind = "NAT"
real_server = [{ address = "10.0.0.11", port = 8080, uthreshold = 100, lthreshold = 10 }]
"#;

const TUN: &str = r#"
[[virtual_server]]
vip = "192.0.2.102"
port = 53
protocol = "udp"
interface = "eth0"
ops = true
lb_kind = "TUN"
tun_type = "gue"
tun_port = 6080
persistence_timeout = 300
persistence_granularity = 24
real_server = [{ address = "192.0.2.21" }]
"#;

const ANOTHER: &str = r#"
[[virtual_server]]
vip = "192.0.2.109"
port = 81
interface = "eth0"
real_server = [{ address = "192.0.2.31" }]
"#;

fn config(text: &str) -> Config {
    config::parse_toml(text, Path::new("vm.toml"), &AnyHost).expect("valid test config")
}

fn desired(config: &Config, health: &HealthSnapshot) -> Desired {
    let caps = Capabilities { xdp: Err("not in this test".into()), ipvs: Ok(()) };
    let plan = select::plan(config, Mode::Auto, &caps).expect("plan");
    desired_state(&Inputs {
        config,
        host: &HostFacts::default(),
        health,
        overrides: &Overrides::default(),
        vrrp: &VrrpStates::default(),
        plan: &plan,
    })
}

/// `ipvsadm -Ln` as whitespace-split lines (service and destination lines only).
fn ipvsadm() -> Vec<String> {
    let out = Command::new("ipvsadm").arg("-Ln").output().expect("running ipvsadm -Ln");
    assert!(out.status.success(), "ipvsadm: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("ipvsadm -Ln:\n{text}");
    text.lines()
        .filter(|l| l.starts_with("TCP") || l.starts_with("UDP") || l.contains("->"))
        .filter(|l| !l.contains("RemoteAddress"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn ipvsadm_run(args: &[&str]) {
    let out = Command::new("ipvsadm").args(args).output().expect("running ipvsadm");
    assert!(out.status.success(), "ipvsadm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn down(message: &str) -> RealHealth {
    RealHealth { up: false, weight: None, latency: None, message: message.into() }
}

#[test]
#[ignore = "needs kernel IPVS and root: `cargo xtask vm test` runs it in a VM"]
fn vm_ipvs_dataplane_programs_reconciles_and_cleans_up() {
    let dir = std::env::temp_dir().join("lb-vm-dataplane");
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.join("ipvs-services.json");
    // Someone else's rule: never touched.
    ipvsadm_run(&["-A", "-t", "198.51.100.1:443", "-s", "rr"]);
    ipvsadm_run(&["-a", "-t", "198.51.100.1:443", "-r", "198.51.100.11:443", "-g"]);
    let foreign = ["TCP 198.51.100.1:443 rr", "-> 198.51.100.11:443 Route 1 0 0"];

    let cfg = config(&[DR, NAT, TUN].concat());
    let healthy = HealthSnapshot::default();
    let mut dp = IpvsDataplane::open(Some(state.clone()), true).expect("opening IPVS");
    dp.apply(&desired(&cfg, &healthy)).expect("first apply");
    let listing = ipvsadm();
    for line in [
        "TCP 192.0.2.100:80 wlc",
        "-> 192.0.2.11:80 Route 1 0 0",
        "-> 192.0.2.12:80 Route 2 0 0",
        "-> 192.0.2.13:80 Route 0 0 0",
        "-> 192.0.2.14:80 Route 3 0 0",
        "TCP 192.0.2.101:80 mh",
        "-> 10.0.0.11:8080 Masq 1 0 0",
        "UDP 192.0.2.102:53 mh persistent 300 mask 255.255.255.0 ops",
        "-> 192.0.2.21:53 Tunnel 1 0 0",
        foreign[0],
        foreign[1],
    ] {
        assert!(listing.iter().any(|l| l == line), "missing {line:?} in {listing:#?}");
    }
    assert!(!listing.iter().any(|l| l.contains("192.0.2.200")), "sorry server unused yet");
    assert!(state.exists(), "ownership recorded");

    // Idempotent: the same state again needs no request.
    let ops = dp.pending(&desired(&cfg, &healthy)).expect("pending");
    assert!(ops.is_empty(), "second apply would change {ops:#?}");

    // Health: .11 fails (removed), .14 fails with inhibit_on_failure (kept at 0).
    let key = cfg.virtual_servers[0].key();
    let id = |last: u8| (key, std::net::IpAddr::from([192, 0, 2, last]), 80);
    let mut sick = HealthSnapshot::default();
    sick.reals.insert(id(11), down("TCP_CHECK: refused"));
    sick.reals.insert(id(14), down("TCP_CHECK: refused"));
    dp.apply(&desired(&cfg, &sick)).expect("health apply");
    let listing = ipvsadm();
    assert!(!listing.iter().any(|l| l.contains("192.0.2.11:80")), "{listing:#?}");
    assert!(listing.iter().any(|l| l == "-> 192.0.2.14:80 Route 0 0 0"), "{listing:#?}");
    // Quorum lost: every real at 0, the sorry server takes the connections.
    sick.quorum_lost.insert(key);
    dp.apply(&desired(&cfg, &sick)).expect("quorum apply");
    let listing = ipvsadm();
    assert!(listing.iter().any(|l| l == "-> 192.0.2.200:80 Route 1 0 0"), "{listing:#?}");
    assert!(listing.iter().any(|l| l == "-> 192.0.2.12:80 Route 0 0 0"), "{listing:#?}");

    // A crash (no shutdown), then an agent whose config dropped the NAT service: it adopts the
    // rest and removes only its own leftover.
    drop(dp);
    let cfg2 = config(&[DR, TUN, ANOTHER].concat());
    let mut dp = IpvsDataplane::open(Some(state.clone()), true).expect("reopening IPVS");
    assert_eq!(dp.leftovers(), 3);
    dp.apply(&desired(&cfg2, &healthy)).expect("apply after restart");
    let listing = ipvsadm();
    assert!(!listing.iter().any(|l| l.starts_with("TCP 192.0.2.101:80")), "{listing:#?}");
    assert!(listing.iter().any(|l| l.starts_with("TCP 192.0.2.109:81")), "{listing:#?}");
    assert!(listing.iter().any(|l| l == "-> 192.0.2.11:80 Route 1 0 0"), "back up: {listing:#?}");
    assert!(listing.iter().any(|l| l == foreign[0]), "{listing:#?}");

    // Counters and connection counts come back for our services only.
    let counters = dp.counters().expect("counters");
    assert_eq!(counters.services.len(), 3, "{counters:?}");
    assert!(counters.connections.keys().all(|(k, _, _)| k.vip.to_string() != "198.51.100.1"));

    // Stopping removes ours and nothing else.
    dp.shutdown().expect("shutdown");
    let listing = ipvsadm();
    assert_eq!(listing, foreign.map(String::from).to_vec(), "only the foreign rule is left");
    let left: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&state).expect("state file")).expect("json");
    assert_eq!(left["services"], serde_json::json!([]));
    ipvsadm_run(&["-D", "-t", "198.51.100.1:443"]);
    let _ = std::fs::remove_dir_all(&dir);
}
