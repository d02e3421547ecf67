//! Checks through the VIP (`through_vip`) against real servers in namespaces: the director holds
//! the VIPs (IPv4 and IPv6) itself; a DR real on its segment and a TUN real behind a router (IPIP,
//! GUE, GRE and IPv6 in IPv6) both serve their own address and the VIPs by HTTP, HTTPS, DNS and
//! UDP (`lb-testpeer`). Every checker that can go through the VIP (TCP, HTTP, SSL, DNS, UDP) is
//! checked through it on the DR path and at least one tunnel (`THROUGH`), and the VIP of one
//! family on the TUN real's address of the other (the check translated: IPv4 in IPv6, GRE and GUE
//! over IPv6; IPv6 in IPv4 and GUE over IPv4). A real that stops
//! serving the VIP (VIP removed from its `lo`, its decapsulation stopped) while it still serves
//! its own address is marked down by the checks through the VIP, and up again when restored; the
//! same real checked by its own address with every checker (the control service) stays up all
//! along. The same holds on a VRRP BACKUP that does not hold the VIP (a peer is MASTER), its XDP
//! program detached or standing by.
//!
//! ```text
//! director eth0 192.0.2.1/24 2001:db8:a::1/64 + VIPs ── rs1 (DR) 192.0.2.11 2001:db8:a::11
//! director eth1 198.51.100.2/28 2001:db8:d::2/64 ── router ── rs2 (TUN) 198.51.100.34 2001:db8:1::10
//! ```
//! This host's kernel has no tunnel modules: rs2 decapsulates with `lb-tundecap`, as in
//! tunnels.rs.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use lb_tests::{
    LbAgent, Netns, Process, lb_bin, require_root, scratch_dir, spawn_testpeer, unique_prefix,
    wait_until,
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 0x100);
const DR_REAL: &str = "192.0.2.11";
const TUN_REAL: &str = "198.51.100.34";
const DR_REAL6: &str = "2001:db8:a::11";
const TUN_REAL6: &str = "2001:db8:1::10";
/// The service checked through the VIP, and the control checked by the reals' own addresses.
const PORT: u16 = 80;
const CONTROL_PORT: u16 = 8080;
/// Services checked through the VIP with the TUN real on GUE and on GRE.
const GUE_PORT: u16 = 81;
const GRE_PORT: u16 = 82;
/// Each VIP on the TUN real's address of the other family: IPv4 in IPv6 and IPv6 in IPv4 (port
/// 83), GRE over IPv6 and GUE over IPv4 (port 84); the check translated into the VIP's family.
const MIXED_PORT: u16 = 83;
const MIXED_TUN_PORT: u16 = 84;
/// The IPv6 VIP on the TUN real's IPv4 address checked by UDP without `require_reply`: refused
/// (ICMP errors about a translated check are not translated).
const MIXED_UDP_OWN_PORT: u16 = 5355;
/// The IPv4 VIP's UDP echo on the TUN real's IPv6 address (GUE over IPv6, `require_reply`).
const MIXED_UDP_PORT: u16 = 5356;
/// A UDP service (the testpeer's echo) checked through the VIP.
const UDP_PORT: u16 = 5353;
/// A UDP service the reals serve on their own addresses only, not on the VIPs: checked through
/// the VIP without `require_reply`, only the real's ICMP port unreachable tells it.
const UDP_OWN_PORT: u16 = 5354;
/// SSL_GET (the testpeer's HTTPS) and DNS_CHECK (its DNS responder) services.
const SSL_PORT: u16 = 443;
const DNS_PORT: u16 = 53;
const GUE_DST_PORT: u16 = 6080;

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

/// A veth `a_eth` in `a` to `b_eth` in `b`, with an IPv4 and an IPv6 address on each end.
fn link(a: &Netns, a_eth: &str, a_addrs: [&str; 2], b: &Netns, b_eth: &str, b_addrs: [&str; 2]) {
    ip(a, &format!("link add {a_eth} type veth peer name {b_eth} netns {}", b.name()));
    for (ns, eth, [v4, v6]) in [(a, a_eth, a_addrs), (b, b_eth, b_addrs)] {
        ip(ns, &format!("addr add {v4} dev {eth}"));
        ip(ns, &format!("addr add {v6} dev {eth} nodad"));
        ip(ns, &format!("link set {eth} up"));
    }
}

/// The namespaces and processes; fields drop in order (processes before their namespaces).
struct Lab {
    decap: Option<Process>,
    _peers: Vec<Process>,
    director: Netns,
    _router: Netns,
    dr: Netns,
    tun: Netns,
    /// The director's VRRP peer, on its eth2, if any.
    vrrp_peer: Option<Netns>,
}

/// Who holds the VIPs on the director's side.
#[derive(Clone, Copy, PartialEq)]
enum Vips {
    /// The director itself (added by hand).
    Director,
    /// A VRRP MASTER in a namespace of its own on the director's eth2 (the test starts it): the
    /// director is its BACKUP, without the VIP.
    VrrpPeer,
}

impl Lab {
    fn build(vips: Vips) -> Lab {
        let p = unique_prefix();
        let mk = |n: &str| Netns::create(&format!("{p}-tv{n}")).expect("netns");
        let (director, router, dr, tun) = (mk("d"), mk("r"), mk("s1"), mk("s2"));
        let vrrp_peer = (vips == Vips::VrrpPeer).then(|| mk("p"));
        for ns in [&director, &router, &dr, &tun].into_iter().chain(&vrrp_peer) {
            ip(ns, "link set lo up");
            for key in ["all", "default"] {
                sysctl(ns, &format!("net.ipv4.conf.{key}.rp_filter"), "0");
            }
        }
        sysctl(&router, "net.ipv4.ip_forward", "1");
        sysctl(&router, "net.ipv6.conf.all.forwarding", "1");
        link(
            &director,
            "eth0",
            ["192.0.2.1/24", "2001:db8:a::1/64"],
            &dr,
            "eth0",
            [&format!("{DR_REAL}/24"), &format!("{DR_REAL6}/64")],
        );
        link(
            &director,
            "eth1",
            ["198.51.100.2/28", "2001:db8:d::2/64"],
            &router,
            "r0",
            ["198.51.100.1/28", "2001:db8:d::1/64"],
        );
        link(
            &router,
            "r1",
            ["198.51.100.33/28", "2001:db8:1::1/64"],
            &tun,
            "eth0",
            [&format!("{TUN_REAL}/28"), &format!("{TUN_REAL6}/64")],
        );
        ip(&director, "route add 198.51.100.32/28 via 198.51.100.1");
        ip(&director, "-6 route add 2001:db8:1::/64 via 2001:db8:d::1");
        ip(&tun, "route add default via 198.51.100.33");
        ip(&tun, "-6 route add default via 2001:db8:1::1");
        // lb-tundecap sees bytes only, not the kernel's "checksum left to the NIC" mark (a
        // kernel decapsulator or a NIC would complete it): the director completes its checks'
        // checksums before they leave.
        director.exec(&["ethtool", "-K", "eth1", "tx", "off"]).expect("ethtool");
        match &vrrp_peer {
            // The director holds the VIPs: a plain connect() to one would stay on the director.
            None => {
                ip(&director, &format!("addr add {VIP}/32 dev eth0"));
                ip(&director, &format!("addr add {VIP6}/128 dev eth0 nodad"));
            }
            Some(peer) => link(
                &director,
                "eth2",
                ["203.0.113.1/24", "2001:db8:e::1/64"],
                peer,
                "eth0",
                ["203.0.113.2/24", "2001:db8:e::2/64"],
            ),
        }
        // DR real: the VIPs on lo, never answering ARP for them.
        sysctl(&dr, "net.ipv4.conf.all.arp_ignore", "1");
        sysctl(&dr, "net.ipv4.conf.all.arp_announce", "2");
        // Both reals: an ICMP error for every refused check (not one a second per peer), so a
        // check without `require_reply` never passes for want of one.
        for ns in [&dr, &tun] {
            sysctl(ns, "net.ipv4.icmp_ratelimit", "0");
            sysctl(ns, "net.ipv6.icmp.ratelimit", "0");
        }
        // Both reals: the VIPs on lo; the TUN real replies straight back through the router.
        for ns in [&dr, &tun] {
            ip(ns, &format!("addr add {VIP}/32 dev lo"));
            ip(ns, &format!("addr add {VIP6}/128 dev lo"));
        }
        let mut peers = Vec::new();
        for (ns, name, own, own6) in
            [(&dr, "rs1", DR_REAL, DR_REAL6), (&tun, "rs2", TUN_REAL, TUN_REAL6)]
        {
            let mut args = vec!["--name".to_owned(), name.to_owned()];
            let mut serve = |flag: &str, addr: String| args.extend([flag.to_owned(), addr]);
            serve("--udp", format!("{VIP}:{UDP_PORT}"));
            serve("--udp", format!("{VIP}:{MIXED_UDP_PORT}"));
            serve("--udp", format!("{own}:{UDP_OWN_PORT}"));
            serve("--udp", format!("[{own6}]:{UDP_OWN_PORT}"));
            for p in [PORT, CONTROL_PORT, GUE_PORT, GRE_PORT, MIXED_PORT, MIXED_TUN_PORT] {
                serve("--http", format!("[::]:{p}"));
            }
            serve("--https", format!("[::]:{SSL_PORT}"));
            // Bound to each address, so each answers from the address it was asked on.
            for addr in [VIP.to_string(), own.to_owned(), format!("[{VIP6}]"), format!("[{own6}]")]
            {
                serve("--dns", format!("{addr}:{DNS_PORT}"));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            peers.push(spawn_testpeer(ns, bin("testpeer"), &args).expect("testpeer"));
        }
        let mut lab =
            Lab { decap: None, _peers: peers, director, _router: router, dr, tun, vrrp_peer };
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
        sysctl(&self.tun, "net.ipv4.conf.tun0.rp_filter", "0");
        self.decap = Some(decap);
    }

    fn stop_decap(&mut self) {
        if let Some(mut d) = self.decap.take() {
            d.kill().expect("stop lb-tundecap");
        }
    }
}

/// A checker of the lab, one attempt within 0.5 s.
#[derive(Clone, Copy)]
enum Check {
    Tcp,
    Http,
    /// `ssl_get` to `SSL_PORT`.
    Ssl,
    /// `dns_check` (TXT, answered by the testpeer's responder) to `DNS_PORT`.
    Dns,
    /// `udp_check` (`require_reply`) of the testpeer's echo.
    Udp,
    /// `udp_check` without `require_reply` (down only on an ICMP error) to `UDP_OWN_PORT`.
    UdpIcmp,
}

const WEB: &[Check] = &[Check::Tcp, Check::Http];

impl Check {
    /// The checker's table under a real of a service on `port`.
    fn toml(self, port: u16, through: bool) -> String {
        let (kind, keys, own_port) = match self {
            Check::Tcp => ("tcp_check", "", None),
            Check::Http => ("http_get", "url = [{ path = \"/\" }]\n", None),
            Check::Ssl => ("ssl_get", "url = [{ path = \"/\" }]\n", Some(SSL_PORT)),
            Check::Dns => ("dns_check", "name = \"lb.test\"\ntype = \"TXT\"\n", Some(DNS_PORT)),
            Check::Udp => ("udp_check", "payload = \"ping\"\nrequire_reply = true\n", None),
            Check::UdpIcmp => ("udp_check", "payload = \"ping\"\n", Some(UDP_OWN_PORT)),
        };
        // The control service checks every server of the real on its own port.
        let connect_port = match own_port {
            Some(p) if p != port => format!("connect_port = {p}\n"),
            _ => String::new(),
        };
        format!(
            "[[virtual_server.real_server.{kind}]]\nconnect_timeout = 0.5\nretry = 0\n\
             through_vip = {through}\n{connect_port}{keys}"
        )
    }
}

/// A service on `vip`:`port` (UDP when it is checked by datagrams) with the DR real (if given)
/// and the TUN real with `tunnel`'s keys, each checked by `checks`, through the VIP or not.
fn service(
    vip: &str,
    port: u16,
    dr: Option<&str>,
    tun: &str,
    tunnel: &str,
    checks: &[Check],
    through: bool,
) -> String {
    let udp = checks.iter().all(|c| matches!(c, Check::Dns | Check::Udp | Check::UdpIcmp));
    let protocol = if udp { "udp" } else { "tcp" };
    let mut s = format!(
        "[[virtual_server]]\nvip = \"{vip}\"\nport = {port}\nprotocol = \"{protocol}\"\n\
         interface = \"eth0\"\ndelay_loop = 0.5\nalpha = true\n"
    );
    let reals = dr
        .map(|r| (r, String::new()))
        .into_iter()
        .chain([(tun, format!("lb_kind = \"TUN\"\n{tunnel}\n"))]);
    for (real, keys) in reals {
        s.push_str(&format!("[[virtual_server.real_server]]\naddress = \"{real}\"\n{keys}"));
        for check in checks {
            s.push_str(&check.toml(port, through));
        }
    }
    s
}

const IPIP: &str = "tun_type = \"ipip\"";

/// Every service: through the VIP over IPv4 (TCP and HTTP to DR and IPIP, GUE, GRE; SSL to DR
/// and IPIP; DNS to DR and GUE; UDP to DR and IPIP), over IPv6 (TCP and HTTP, SSL, DNS: DR and
/// IPv6 in IPv6), and the control by the reals' own addresses with every checker.
fn config() -> String {
    let v4 = VIP.to_string();
    let v6 = VIP6.to_string();
    let gue = format!("tun_type = \"gue\"\ntun_port = {GUE_DST_PORT}");
    let (dr, tun, dr6, tun6) = (Some(DR_REAL), TUN_REAL, Some(DR_REAL6), TUN_REAL6);
    let mut s = [
        service(&v4, PORT, dr, tun, IPIP, WEB, true),
        service(&v4, GUE_PORT, None, tun, &gue, WEB, true),
        service(&v4, GRE_PORT, None, tun, "tun_type = \"gre\"", WEB, true),
        service(&v4, SSL_PORT, dr, tun, IPIP, &[Check::Ssl], true),
        service(&v4, DNS_PORT, dr, tun, &gue, &[Check::Dns], true),
        service(&v4, UDP_PORT, dr, tun, IPIP, &[Check::Udp], true),
        service(&v6, PORT, dr6, tun6, IPIP, WEB, true),
        service(&v6, SSL_PORT, dr6, tun6, IPIP, &[Check::Ssl], true),
        service(&v6, DNS_PORT, dr6, tun6, IPIP, &[Check::Dns], true),
        service(&v4, UDP_OWN_PORT, dr, tun, IPIP, &[Check::UdpIcmp], true),
        service(&v6, UDP_OWN_PORT, dr6, tun6, IPIP, &[Check::UdpIcmp], true),
        service(
            &v4,
            CONTROL_PORT,
            dr,
            tun,
            IPIP,
            &[WEB, &[Check::Ssl, Check::Dns, Check::UdpIcmp]].concat(),
            false,
        ),
    ]
    .join("");
    // The VIPs on the TUN real's address of the other family (one with a `tun_source` of the
    // real's family: the outer source; the others' is the check's own).
    let gre = "tun_type = \"gre\"";
    let mixed = [
        service(&v4, MIXED_PORT, None, tun6, IPIP, WEB, true).replacen(
            "alpha = true\n",
            "alpha = true\ntun_source = \"2001:db8:d::2\"\n",
            1,
        ),
        service(&v6, MIXED_PORT, None, tun, IPIP, WEB, true),
        service(&v4, MIXED_TUN_PORT, None, tun6, gre, WEB, true),
        service(&v6, MIXED_TUN_PORT, None, tun, &gue, WEB, true),
        service(&v4, MIXED_UDP_PORT, None, tun6, &gue, &[Check::Udp], true),
        service(&v6, MIXED_UDP_OWN_PORT, None, tun, IPIP, &[Check::UdpIcmp], true),
    ];
    s.push_str(&mixed.join(""));
    s
}

/// (state, health message) of `real` in the service on `port` (no two services of the lab share a
/// port and a real).
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

/// Every (service port, real) checked through the VIP: each path (DR and each tunnel, IPv4 and
/// IPv6, and the VIP of the other family than the real's) and each checker (TCP, HTTP, SSL,
/// DNS, UDP).
const THROUGH: [(u16, &str); 21] = [
    (PORT, DR_REAL),
    (PORT, TUN_REAL),
    (GUE_PORT, TUN_REAL),
    (GRE_PORT, TUN_REAL),
    (SSL_PORT, DR_REAL),
    (SSL_PORT, TUN_REAL),
    (DNS_PORT, DR_REAL),
    (DNS_PORT, TUN_REAL),
    (UDP_PORT, DR_REAL),
    (UDP_PORT, TUN_REAL),
    (PORT, DR_REAL6),
    (PORT, TUN_REAL6),
    (SSL_PORT, DR_REAL6),
    (SSL_PORT, TUN_REAL6),
    (DNS_PORT, DR_REAL6),
    (DNS_PORT, TUN_REAL6),
    // IPv4 VIP on the IPv6 address (IPv4 in IPv6; GRE, GUE over IPv6) and back (IPv6 in IPv4,
    // GUE over IPv4).
    (MIXED_PORT, TUN_REAL6),
    (MIXED_PORT, TUN_REAL),
    (MIXED_TUN_PORT, TUN_REAL6),
    (MIXED_TUN_PORT, TUN_REAL),
    (MIXED_UDP_PORT, TUN_REAL6),
];
/// The reals checked by their own addresses, with every checker.
const CONTROL: [(u16, &str); 2] = [(CONTROL_PORT, DR_REAL), (CONTROL_PORT, TUN_REAL)];
/// Checked through the VIP by UDP without `require_reply` where the reals serve their own
/// addresses only (the control's `UdpIcmp` check passes there): refused, so down.
const REFUSED: [(u16, &str); 4] = [
    (UDP_OWN_PORT, DR_REAL),
    (UDP_OWN_PORT, TUN_REAL),
    (UDP_OWN_PORT, DR_REAL6),
    (UDP_OWN_PORT, TUN_REAL6),
];

/// Each of `REFUSED` down within `within`, by the real's port unreachable (ICMP or ICMPv6)
/// through the VIP, and still down `hold` later (one check passing for want of an error would
/// bring it up: `alpha`, no retry).
fn refused(agent: &LbAgent, within: Duration, hold: Duration) {
    let says = |h: &str| h.contains("through the VIP: ") && h.contains("Connection refused");
    for (port, real) in REFUSED {
        let ok = wait_until(within, || says(&state(agent, port, real).1));
        let (now, health) = state(agent, port, real);
        assert!(ok && now == "down", "{real}:{port} refused through the VIP: {now} {health}");
    }
    let up = |&(port, real): &(u16, &str)| state(agent, port, real).0 != "down";
    let flipped = wait_until(hold, || REFUSED.iter().any(up));
    assert!(!flipped, "a refused service came up: {}", agent.backends().unwrap_or_default());
}

/// Takes `broken` (a subset of `watched`) down within one check each, with the path named in
/// the message, while every other of `watched` stays up; returns the time until all were down.
fn all_down(
    agent: &LbAgent,
    broken: &[(u16, &str)],
    watched: &[(u16, &str)],
    one_check: Duration,
) -> Duration {
    let started = Instant::now();
    for &(port, real) in broken {
        wait_state(agent, port, real, "down", one_check);
        let (_, health) = state(agent, port, real);
        assert!(health.contains("through the VIP: "), "{real}:{port} says the path: {health}");
    }
    let took = started.elapsed();
    for (port, real) in watched.iter().filter(|s| !broken.contains(s)) {
        let (now, health) = state(agent, *port, real);
        assert_eq!(now, "up", "{real}:{port} is unaffected: {health}");
    }
    took
}

fn all_up(agent: &LbAgent, services: &[(u16, &str)], within: Duration) -> Duration {
    let started = Instant::now();
    for &(port, real) in services {
        wait_state(agent, port, real, "up", within);
    }
    started.elapsed()
}

/// The scenario of both tests: every service of `through` (checked through the VIP) and of
/// `control` (by the reals' own addresses) up; the DR real loses the IPv4 VIP, then the TUN
/// real's decapsulation stops, each while the real still serves its own address: exactly the
/// services through the VIP on that path go down within one check, and come back when restored.
fn break_and_restore(
    lab: &mut Lab,
    agent: &LbAgent,
    through: &[(u16, &str)],
    control: &[(u16, &str)],
) {
    // One check: delay_loop 0.5 + connect_timeout 0.5, and slack for a busy machine.
    let one_check = Duration::from_secs(3);
    // `alpha`: the reals start down, so "up" means their checks passed, through the VIP too.
    let every: Vec<(u16, &str)> = through.iter().chain(control).copied().collect();
    all_up(agent, &every, Duration::from_secs(15));

    // The DR real keeps its own address (the control) and the IPv6 VIP.
    let dr_v4: Vec<_> = through.iter().copied().filter(|s| s.1 == DR_REAL).collect();
    ip(&lab.dr, &format!("addr del {VIP}/32 dev lo"));
    let took = all_down(agent, &dr_v4, &every, one_check);
    eprintln!("DR real without the VIP: all {} down after {took:?}", dr_v4.len());
    ip(&lab.dr, &format!("addr add {VIP}/32 dev lo"));
    let took = all_up(agent, &dr_v4, one_check);
    eprintln!("DR real with the VIP back: all up after {took:?}");

    let tunnelled: Vec<_> =
        through.iter().copied().filter(|s| [TUN_REAL, TUN_REAL6].contains(&s.1)).collect();
    lab.stop_decap();
    let took = all_down(agent, &tunnelled, &every, one_check);
    eprintln!("TUN real without decap: all {} down after {took:?}", tunnelled.len());
    lab.start_decap();
    let took = all_up(agent, &every, one_check);
    eprintln!("TUN real with decap back: all up after {took:?}");
}

/// The director holds the VIPs: every checker through the VIP on every path.
#[test]
fn checks_through_the_vip_tell_a_real_that_does_not_serve_it() {
    if !require_root("checks through the VIP") {
        return;
    }
    let mut lab = Lab::build(Vips::Director);
    let dir = scratch_dir("lb-through-vip-").expect("scratch");
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, config()).expect("config");
    let agent = LbAgent::start(&lab.director, &lb_bin(), &path, &[]).expect("lb run");
    wait_state(&agent, PORT, DR_REAL, "up", Duration::from_secs(15));
    // A translated UDP check without a reply to wait for is refused, and says why.
    let (mixed, why) = state(&agent, MIXED_UDP_OWN_PORT, TUN_REAL);
    assert_eq!(mixed, "down", "{why}");
    assert!(why.contains("through_vip: ") && why.contains("require_reply"), "{why}");
    refused(&agent, Duration::from_secs(5), Duration::from_secs(2));
    break_and_restore(&mut lab, &agent, &THROUGH, &CONTROL);
    drop(agent);
    drop(lab);
}

/// A VRRP instance `VI_1` of the IPv4 VIP on `interface` at `priority`.
fn vrrp_instance(interface: &str, priority: u8) -> String {
    format!(
        "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"{interface}\"\n\
         virtual_router_id = 51\npriority = {priority}\nadvert_int = 1\nversion = 3\n\
         virtual_ipaddress = [\"{VIP}/32\"]\n"
    )
}

/// The director is the VRRP BACKUP of the IPv4 VIP (a peer is MASTER): it does not hold the VIP
/// and its XDP program is detached, and the checks through the VIP still tell a real that does
/// not serve it (docs/tunnels.md: the probe path does not depend on the XDP program).
#[test]
fn checks_through_the_vip_work_on_a_vrrp_backup() {
    if require_root("checks through the VIP on a VRRP BACKUP") {
        on_a_vrrp_backup("detach");
    }
}

/// The same with `backup_xdp = "standby"`: the BACKUP's XDP program stays attached with the
/// services staged, and the checks' replies from the VIP pass it.
#[test]
fn checks_through_the_vip_work_on_a_vrrp_backup_with_xdp_standing_by() {
    if require_root("checks through the VIP on a VRRP BACKUP, XDP standing by") {
        on_a_vrrp_backup("standby");
    }
}

/// The director as the BACKUP with `backup_xdp` (`detach` or `standby`).
fn on_a_vrrp_backup(backup_xdp: &str) {
    let mut lab = Lab::build(Vips::VrrpPeer);
    let dir = scratch_dir("lb-through-vip-backup-").expect("scratch");
    let (path, peer_path) = (dir.path().join("lb.toml"), dir.path().join("peer.toml"));
    // The address owner's priority: MASTER at once, before the director starts listening.
    std::fs::write(
        &peer_path,
        vrrp_instance("eth0", 255).replacen("\n", "\nstate = \"MASTER\"\n", 1),
    )
    .expect("peer config");
    let peer_ns = lab.vrrp_peer.as_ref().expect("the VRRP peer");
    let peer = LbAgent::start(peer_ns, &lb_bin(), &peer_path, &[]).expect("peer lb run");
    let master = wait_until(Duration::from_secs(10), || {
        peer.vrrp_state("VI_1").as_deref() == Some("MASTER")
    });
    assert!(master, "peer MASTER: {:?}\n{}", peer.vrrp_state("VI_1"), peer.stderr());

    let v4 = VIP.to_string();
    let gue = format!("tun_type = \"gue\"\ntun_port = {GUE_DST_PORT}");
    let (dr, tun) = (Some(DR_REAL), TUN_REAL);
    let conf = [
        format!("[dataplane]\nbackup_xdp = \"{backup_xdp}\"\n"),
        vrrp_instance("eth2", 100),
        service(&v4, PORT, dr, tun, IPIP, WEB, true),
        service(&v4, DNS_PORT, dr, tun, &gue, &[Check::Dns], true),
        service(&v4, CONTROL_PORT, dr, tun, IPIP, WEB, false),
    ]
    .join("");
    std::fs::write(&path, conf).expect("config");
    let agent = LbAgent::start(&lab.director, &lb_bin(), &path, &[]).expect("lb run");
    let through = [(PORT, DR_REAL), (PORT, TUN_REAL), (DNS_PORT, DR_REAL), (DNS_PORT, TUN_REAL)];
    let backup = |lab: &Lab| {
        assert_eq!(agent.vrrp_state("VI_1").as_deref(), Some("BACKUP"), "{}", agent.stderr());
        let addrs = lab.director.ip(&["-4", "addr", "show"]).expect("ip addr");
        assert!(!addrs.contains(&format!("{VIP}/")), "the BACKUP holds no VIP: {addrs}");
        let link = lab.director.ip(&["link", "show", "dev", "eth0"]).expect("ip link");
        let attached = link.contains("xdp");
        assert_eq!(attached, backup_xdp == "standby", "backup_xdp = {backup_xdp}: {link}");
    };
    wait_state(&agent, PORT, DR_REAL, "up", Duration::from_secs(15));
    backup(&lab);
    break_and_restore(&mut lab, &agent, &through, &CONTROL);
    backup(&lab);
    drop(agent);
    drop(peer);
    drop(lab);
}

/// The interfaces the agent says it attached the probe programs to, and detached them from, so
/// far (`bpftool net` of this host does not list TCX links).
fn probe_log(agent: &LbAgent) -> (Vec<String>, Vec<String>) {
    let log = agent.stderr();
    let of = |what: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("probe programs {what}")))
            .filter_map(|l| l.split("interface=").nth(1).map(|i| i.trim_matches('"').to_owned()))
            .collect()
    };
    (of("attached"), of("detached"))
}

/// The probe edge follows reloads: attached when a check through the VIP appears (on the
/// interface its real is routed by, only), working at once, detached when none is left.
#[test]
fn reloads_attach_and_detach_the_probe_path() {
    if !require_root("checks through the VIP, reloaded") {
        return;
    }
    let lab = Lab::build(Vips::Director);
    let dir = scratch_dir("lb-through-vip-reload-").expect("scratch");
    let path = dir.path().join("lb.toml");
    let conf = |through: bool| {
        service(&VIP.to_string(), PORT, Some(DR_REAL), TUN_REAL, IPIP, WEB, false)
            + &service(&VIP6.to_string(), PORT, Some(DR_REAL6), TUN_REAL6, IPIP, WEB, false)
            // Only the DR real (routed by eth0) checked through the VIP.
            + &service(&VIP.to_string(), GUE_PORT, Some(DR_REAL), TUN_REAL, IPIP, WEB, false)
                .replacen("through_vip = false", &format!("through_vip = {through}"), 2)
    };
    std::fs::write(&path, conf(false)).expect("config");
    let agent = LbAgent::start(&lab.director, &lb_bin(), &path, &[]).expect("lb run");
    wait_state(&agent, GUE_PORT, DR_REAL, "up", Duration::from_secs(15));
    assert_eq!(probe_log(&agent), (vec![], vec![]), "nothing through the VIP: nothing attached");

    std::fs::write(&path, conf(true)).expect("config");
    agent.reload().expect("reload");
    wait_state(&agent, GUE_PORT, DR_REAL, "up", Duration::from_secs(5));
    let attached = vec!["eth0".to_owned()];
    assert_eq!(probe_log(&agent), (attached.clone(), vec![]), "on eth0 (the DR real's) only");
    ip(&lab.dr, &format!("addr del {VIP}/32 dev lo"));
    wait_state(&agent, GUE_PORT, DR_REAL, "down", Duration::from_secs(3));
    assert_eq!(state(&agent, PORT, DR_REAL).0, "up", "checked by its own address");
    ip(&lab.dr, &format!("addr add {VIP}/32 dev lo"));
    wait_state(&agent, GUE_PORT, DR_REAL, "up", Duration::from_secs(3));

    std::fs::write(&path, conf(false)).expect("config");
    agent.reload().expect("reload");
    assert_eq!(probe_log(&agent), (attached.clone(), attached), "none left to check: detached");
    // Changed checks restart from the initial state (`alpha`: down) until their first check.
    wait_state(&agent, GUE_PORT, DR_REAL, "up", Duration::from_secs(3));
    drop(agent);
    drop(lab);
}
