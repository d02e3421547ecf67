//! Kernel IPVS forwarding real traffic in the guest (`cargo xtask vm test`): a service programmed
//! through our client, a client namespace making short TCP connections (or sending UDP datagrams)
//! to the VIP and real-server namespaces answering, for each forwarding method and family. Checks the split by weight, what
//! each real saw (the VIP or its own address as destination, the client as source), that
//! `ipvsadm -Ln` names the method, and for IP-in-IP that the reals' `tunl0` carried the traffic.

use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use super::{
    Destination, Forward, Ipvs, Protocol, Service, ServiceKey, TunnelEncap,
    vm_net::{Lab, RealMode, ServiceGuard, VIP, VIP6, ipvsadm},
};

struct Scenario {
    name: &'static str,
    /// [`VIP`] or [`VIP6`]: the family of everything.
    vip: IpAddr,
    /// TCP: one connection per request; UDP: one datagram from a new port.
    protocol: Protocol,
    mode: RealMode,
    forward: Forward,
    /// One real per weight, `r1`, `r2`...
    weights: &'static [u32],
    vip_port: u16,
    /// NAT may change the port; DR and TUN cannot.
    real_port: u16,
    connections: usize,
}

const IPIP: Forward = Forward::Tunnel { encap: TunnelEncap::Ipip, csum: false, remote_csum: false };

/// wrr is deterministic, so the split is exact but for a few client ports that hit a connection
/// entry of an earlier connection; ±10 % leaves room for those.
const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "direct routing, wrr 1:2:3",
        vip: IpAddr::V4(VIP),
        protocol: Protocol::Tcp,
        mode: RealMode::Direct,
        forward: Forward::Route,
        weights: &[1, 2, 3],
        vip_port: 80,
        real_port: 80,
        connections: 300,
    },
    Scenario {
        name: "NAT to another port, wrr 1:1:2",
        vip: IpAddr::V4(VIP),
        protocol: Protocol::Tcp,
        mode: RealMode::Nat,
        forward: Forward::Masquerade,
        weights: &[1, 1, 2],
        vip_port: 80,
        real_port: 8080,
        connections: 120,
    },
    Scenario {
        name: "IP-in-IP tunnel, wrr 2:1",
        vip: IpAddr::V4(VIP),
        protocol: Protocol::Tcp,
        mode: RealMode::Tunnel,
        forward: IPIP,
        weights: &[2, 1],
        vip_port: 80,
        real_port: 80,
        connections: 120,
    },
    Scenario {
        name: "IPv6 direct routing, wrr 1:1:2",
        vip: IpAddr::V6(VIP6),
        protocol: Protocol::Tcp,
        mode: RealMode::Direct,
        forward: Forward::Route,
        weights: &[1, 1, 2],
        vip_port: 80,
        real_port: 80,
        connections: 120,
    },
    Scenario {
        name: "IPv6 NAT to another port, wrr 1:2",
        vip: IpAddr::V6(VIP6),
        protocol: Protocol::Tcp,
        mode: RealMode::Nat,
        forward: Forward::Masquerade,
        weights: &[1, 2],
        vip_port: 443,
        real_port: 8443,
        connections: 90,
    },
    Scenario {
        name: "UDP direct routing, wrr 1:3",
        vip: IpAddr::V4(VIP),
        protocol: Protocol::Udp,
        mode: RealMode::Direct,
        forward: Forward::Route,
        weights: &[1, 3],
        vip_port: 53,
        real_port: 53,
        connections: 80,
    },
    Scenario {
        name: "UDP IPv6 NAT to another port, wrr 1:1",
        vip: IpAddr::V6(VIP6),
        protocol: Protocol::Udp,
        mode: RealMode::Nat,
        forward: Forward::Masquerade,
        weights: &[1, 1],
        vip_port: 53,
        real_port: 5353,
        connections: 60,
    },
];
const TOLERANCE: f64 = 0.10;

#[test]
#[ignore = "needs kernel IPVS and root: `cargo xtask vm test` runs it in a VM"]
fn vm_forwarding_splits_by_weight_per_method() {
    for scenario in SCENARIOS {
        println!("--- {}", scenario.name);
        forward(scenario);
    }
}

fn forward(s: &Scenario) {
    let started = Instant::now();
    let mut lab = Lab::new(s.weights.len(), s.mode);
    match s.protocol {
        Protocol::Udp => lab.serve_udp(s.real_port),
        _ => lab.serve(s.real_port),
    }
    let built = started.elapsed();

    let vip = SocketAddr::new(s.vip, s.vip_port);
    let destinations: Vec<Destination> = lab
        .reals
        .iter()
        .zip(s.weights)
        .map(|(real, &weight)| Destination {
            forward: s.forward,
            ..Destination::route(SocketAddr::new(real.addr_like(s.vip), s.real_port), weight)
        })
        .collect();
    let mut ipvs = Ipvs::open().expect("opening IPVS");
    let key = ServiceKey::Addr { protocol: s.protocol, addr: s.vip, port: s.vip_port };
    let _service = ServiceGuard::add(&mut ipvs, &Service::new(key, "wrr"), &destinations);

    // ipvsadm reads back each destination with the method's name and its weight.
    let listing = ipvsadm(&["-Ln"]);
    for d in &destinations {
        let line: Vec<&str> = listing
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.get(1) == Some(&d.socket_addr().to_string().as_str()))
            .unwrap_or_else(|| panic!("{}: {} not in ipvsadm -Ln:\n{listing}", s.name, d.addr));
        assert_eq!(line[2], s.forward.ipvsadm_name(), "{}: {listing}", s.name);
        assert_eq!(line[3], d.weight.to_string(), "{}: {listing}", s.name);
    }

    let tunl0_before: Vec<u64> = match s.mode {
        RealMode::Tunnel => lab.reals.iter().map(|r| lab.rx_packets(r, "tunl0")).collect(),
        _ => Vec::new(),
    };
    let sent = Instant::now();
    let tally = match s.protocol {
        Protocol::Udp => lab.udp_requests(vip, s.connections),
        _ => lab.requests(vip, s.connections),
    };
    let took = sent.elapsed();
    println!(
        "{}: {:?} ({} requests in {took:.2?}, slowest {:.2?}; topology in {built:.2?})",
        s.name, tally.per_real, s.connections, tally.slowest
    );
    let weights: Vec<(&str, u32)> =
        lab.reals.iter().zip(s.weights).map(|(r, &w)| (r.name.as_str(), w)).collect();
    tally.assert_split(&weights, TOLERANCE);
    assert_eq!(tally.total(), s.connections, "{}", s.name);

    // What reached the reals: the client's own address as the source always (IPVS never
    // rewrites it); the VIP as destination unless NAT rewrote it to the real.
    for real in &lab.reals {
        let local = match s.mode {
            RealMode::Nat => SocketAddr::new(real.addr_like(s.vip), s.real_port),
            RealMode::Direct | RealMode::Tunnel | RealMode::Plain => vip,
        };
        let want = std::iter::once((local, lab.client_like(s.vip))).collect();
        assert_eq!(tally.seen[&real.name], want, "{}: {} saw", s.name, real.name);
    }
    for (real, before) in lab.reals.iter().zip(&tunl0_before) {
        let after = lab.rx_packets(real, "tunl0");
        let n = tally.per_real.get(&real.name).copied().unwrap_or(0);
        // Each connection is at least SYN, ACK, FIN and the last ACK from the client.
        assert!(
            after - before >= 3 * n as u64,
            "{}: {} tunl0 {before} -> {after}",
            s.name,
            real.name
        );
    }

    // IPVS accounted every connection to a destination (as active or, once closed or for UDP,
    // inactive).
    let entries = ipvs.destinations(&key).expect("listing destinations");
    for e in &entries {
        assert!(
            e.active_conns + e.inactive_conns > 0,
            "{}: {} has no connections: {entries:?}",
            s.name,
            e.destination.addr
        );
    }
    println!("{}: done in {:.2?}", s.name, started.elapsed());
}
