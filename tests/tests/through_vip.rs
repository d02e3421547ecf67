//! Checks through the VIP (`through_vip`) against real servers in namespaces: the director holds
//! the VIP itself; a DR real on its segment and a TUN (IPIP) real behind a router both serve
//! their own address and the VIP. A real that stops serving the VIP (VIP removed from its `lo`,
//! its decapsulation stopped) while it still serves its own address is marked down by the checks
//! through the VIP, and up again when restored; the same real checked by its own address (the
//! control service) stays up all along.
//!
//! ```text
//! director eth0 192.0.2.1/24 + VIP ── rs1 (DR)  192.0.2.11, VIP on lo
//! director eth1 198.51.100.2/28 ── router ── rs2 (IPIP) 198.51.100.34, VIP on lo, lb-tundecap
//! ```
//! This host's kernel has no tunnel modules: rs2 decapsulates with `lb-tundecap`, as in
//! tunnels.rs.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use lb_tests::{
    LbAgent, Netns, Process, lb_bin, require_root, scratch_dir, spawn_testpeer, unique_prefix,
    wait_until,
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const DR_REAL: &str = "192.0.2.11";
const TUN_REAL: &str = "198.51.100.34";
/// The service checked through the VIP, and the control checked by the reals' own addresses.
const PORT: u16 = 80;
const CONTROL_PORT: u16 = 8080;

fn bin(name: &str) -> &'static Path {
    match name {
        "testpeer" => Path::new(env!("CARGO_BIN_EXE_lb-testpeer")),
        _ => Path::new(env!("CARGO_BIN_EXE_lb-tundecap")),
    }
}

fn ip(ns: &Netns, args: &str) {
    ns.ip(&args.split_whitespace().collect::<Vec<_>>())
        .unwrap_or_else(|e| panic!("[{}] ip {args}: {e:#}", ns.name()));
}

fn sysctl(ns: &Netns, key: &str, value: &str) {
    ns.sysctl(key, value).unwrap_or_else(|e| panic!("[{}] {key}: {e:#}", ns.name()));
}

/// A veth `a_eth` in `a` to `b_eth` in `b`, with an IPv4 address on each end.
fn link(a: &Netns, a_eth: &str, a_addr: &str, b: &Netns, b_eth: &str, b_addr: &str) {
    ip(a, &format!("link add {a_eth} type veth peer name {b_eth} netns {}", b.name()));
    ip(a, &format!("addr add {a_addr} dev {a_eth}"));
    ip(a, &format!("link set {a_eth} up"));
    ip(b, &format!("addr add {b_addr} dev {b_eth}"));
    ip(b, &format!("link set {b_eth} up"));
}

/// The namespaces and processes; fields drop in order (processes before their namespaces).
struct Lab {
    decap: Option<Process>,
    _peers: Vec<Process>,
    director: Netns,
    _router: Netns,
    dr: Netns,
    tun: Netns,
}

impl Lab {
    fn build() -> Lab {
        let p = unique_prefix();
        let mk = |n: &str| Netns::create(&format!("{p}-tv{n}")).expect("netns");
        let (director, router, dr, tun) = (mk("d"), mk("r"), mk("s1"), mk("s2"));
        for ns in [&director, &router, &dr, &tun] {
            ip(ns, "link set lo up");
            for key in ["all", "default"] {
                sysctl(ns, &format!("net.ipv4.conf.{key}.rp_filter"), "0");
            }
        }
        sysctl(&router, "net.ipv4.ip_forward", "1");
        link(&director, "eth0", "192.0.2.1/24", &dr, "eth0", &format!("{DR_REAL}/24"));
        link(&director, "eth1", "198.51.100.2/28", &router, "r0", "198.51.100.1/28");
        link(&router, "r1", "198.51.100.33/28", &tun, "eth0", &format!("{TUN_REAL}/28"));
        ip(&director, "route add 198.51.100.32/28 via 198.51.100.1");
        // lb-tundecap sees bytes only, not the kernel's "checksum left to the NIC" mark (a
        // kernel decapsulator or a NIC would complete it): the director completes its checks'
        // checksums before they leave.
        director.exec(&["ethtool", "-K", "eth1", "tx", "off"]).expect("ethtool");
        ip(&tun, "route add default via 198.51.100.33");
        // The director holds the VIP: a plain connect() to it would stay on the director.
        ip(&director, &format!("addr add {VIP}/32 dev eth0"));
        // DR real: the VIP on lo, never answering ARP for it.
        ip(&dr, &format!("addr add {VIP}/32 dev lo"));
        sysctl(&dr, "net.ipv4.conf.all.arp_ignore", "1");
        sysctl(&dr, "net.ipv4.conf.all.arp_announce", "2");
        // TUN real: the VIP on lo, replies straight back through the router.
        ip(&tun, &format!("addr add {VIP}/32 dev lo"));
        let mut peers = Vec::new();
        for (ns, name) in [(&dr, "rs1"), (&tun, "rs2")] {
            let args = [
                "--name",
                name,
                "--http",
                &format!("[::]:{PORT}"),
                "--http",
                &format!("[::]:{CONTROL_PORT}"),
            ];
            peers.push(spawn_testpeer(ns, bin("testpeer"), &args).expect("testpeer"));
        }
        let mut lab = Lab { decap: None, _peers: peers, director, _router: router, dr, tun };
        lab.start_decap();
        lab
    }

    fn start_decap(&mut self) {
        let mut decap = self
            .tun
            .spawn(&[
                bin("tundecap").to_str().expect("utf-8"),
                "--tun",
                "tun0",
                "--gue-port",
                "6080",
            ])
            .expect("lb-tundecap");
        decap.wait_for_line(|l| l == "ready", Duration::from_secs(5)).expect("decap ready");
        ip(&self.tun, "link set tun0 up");
        for dev in ["all", "tun0"] {
            sysctl(&self.tun, &format!("net.ipv4.conf.{dev}.rp_filter"), "0");
        }
        self.decap = Some(decap);
    }

    fn stop_decap(&mut self) {
        if let Some(mut d) = self.decap.take() {
            d.kill().expect("stop lb-tundecap");
        }
    }
}

/// The real servers' checks: through the VIP (TCP and HTTP) on `PORT`, by the real's own
/// address on `CONTROL_PORT`.
fn config() -> String {
    let mut s = String::new();
    for (port, through) in [(PORT, true), (CONTROL_PORT, false)] {
        s.push_str(&format!(
            "[[virtual_server]]\nvip = \"{VIP}\"\nport = {port}\ninterface = \"eth0\"\n\
             delay_loop = 0.5\nalpha = true\n"
        ));
        for (real, keys) in [(DR_REAL, ""), (TUN_REAL, "lb_kind = \"TUN\"\ntun_type = \"ipip\"\n")]
        {
            s.push_str(&format!(
                "[[virtual_server.real_server]]\naddress = \"{real}\"\n{keys}\
                 [[virtual_server.real_server.tcp_check]]\nconnect_timeout = 0.5\nretry = 0\n\
                 through_vip = {through}\n\
                 [[virtual_server.real_server.http_get]]\nconnect_timeout = 0.5\nretry = 0\n\
                 through_vip = {through}\nurl = [{{ path = \"/\" }}]\n"
            ));
        }
    }
    s
}

/// (state, health message) of `real` in the service on `port`.
fn state(agent: &LbAgent, port: u16, real: &str) -> (String, String) {
    let v = agent.backends().unwrap_or_default();
    let found = v["services"].as_array().and_then(|services| {
        services.iter().filter(|s| s["port"] == port).find_map(|s| {
            s["backends"].as_array()?.iter().find(|b| b["address"] == real).map(|b| {
                let text = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
                (text("state"), text("health"))
            })
        })
    });
    found.unwrap_or_default()
}

fn wait_state(agent: &LbAgent, port: u16, real: &str, want: &str, within: Duration) -> Duration {
    let started = Instant::now();
    let ok = wait_until(within, || state(agent, port, real).0 == want);
    assert!(
        ok,
        "{real} on port {port} not {want} within {within:?}: {:?}\nbackends: {}\nagent log:\n{}",
        state(agent, port, real),
        agent.backends().unwrap_or_default(),
        agent.stderr()
    );
    started.elapsed()
}

#[test]
fn checks_through_the_vip_tell_a_real_that_does_not_serve_it() {
    if !require_root("checks through the VIP") {
        return;
    }
    let mut lab = Lab::build();
    let dir = scratch_dir("lb-through-vip-").expect("scratch");
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, config()).expect("config");
    let agent = LbAgent::start(&lab.director, &lb_bin(), &path, &[]).expect("lb run");
    // One check: delay_loop 0.5 + connect_timeout 0.5, and slack for a busy machine.
    let one_check = Duration::from_secs(3);
    // `alpha`: the reals start down, so "up" means their checks passed, through the VIP too.
    for port in [PORT, CONTROL_PORT] {
        for real in [DR_REAL, TUN_REAL] {
            wait_state(&agent, port, real, "up", Duration::from_secs(15));
        }
    }

    // The DR real loses the VIP but still serves its own address.
    ip(&lab.dr, &format!("addr del {VIP}/32 dev lo"));
    let took = wait_state(&agent, PORT, DR_REAL, "down", one_check);
    let (_, health) = state(&agent, PORT, DR_REAL);
    assert!(health.contains("through the VIP: "), "the message says which path failed: {health}");
    eprintln!("DR real without the VIP down after {took:?}: {:?}", state(&agent, PORT, DR_REAL));
    assert_eq!(state(&agent, CONTROL_PORT, DR_REAL).0, "up", "checked by its own address");
    assert_eq!(
        state(&agent, PORT, TUN_REAL).0,
        "up",
        "the other real is unaffected: {:?}",
        state(&agent, PORT, TUN_REAL)
    );
    ip(&lab.dr, &format!("addr add {VIP}/32 dev lo"));
    let took = wait_state(&agent, PORT, DR_REAL, "up", one_check);
    eprintln!("DR real with the VIP back up after {took:?}");

    // The TUN real's decapsulation stops; it still serves its own address.
    lab.stop_decap();
    let took = wait_state(&agent, PORT, TUN_REAL, "down", one_check);
    eprintln!("TUN real without decap down after {took:?}: {:?}", state(&agent, PORT, TUN_REAL));
    assert_eq!(state(&agent, CONTROL_PORT, TUN_REAL).0, "up", "checked by its own address");
    assert_eq!(state(&agent, PORT, DR_REAL).0, "up", "the other real is unaffected");
    lab.start_decap();
    let took = wait_state(&agent, PORT, TUN_REAL, "up", one_check);
    eprintln!("TUN real with decap back up after {took:?}");

    // The control service never noticed.
    for real in [DR_REAL, TUN_REAL] {
        assert_eq!(state(&agent, CONTROL_PORT, real).0, "up", "{real}");
    }
    drop(agent);
    drop(lab);
}
