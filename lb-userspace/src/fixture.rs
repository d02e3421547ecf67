//! Fixture builders for lb's own types (reals, services, a desired state, a VRRP instance), shared
//! by the unit tests, the XDP fixtures, the benchmark, the guest tests and fuzz. Compiled for tests
//! and with the `test-support` feature only: nothing here is part of the agent.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use crate::{
    config::{
        Config, DataplaneSettings, Location, Protocol, RealServer, Spans, VirtualServer,
        VirtualServerKey,
        health::{RealHealth, ServiceHealth},
        host_prefix_len,
        vrrp::{VirtualAddress, VrrpInstance},
    },
    desired::{Desired, Globals, RealDesired, RealState, ServiceDesired},
    maglev,
    net::{Mac, iface::Interface},
};

/// Reals get MACs 52:54:00:00:00:xx, xx the last byte of their address.
pub const REAL_MAC_PREFIX: [u8; 5] = [0x52, 0x54, 0, 0, 0];
/// The MAC of the test interface (`lo`, ifindex 1, of a private namespace).
pub const IFACE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xd1];
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

/// A DR real on ifindex 1 as `desired_state` gives it: resolved (a MAC from `REAL_MAC_PREFIX`)
/// and keeping its flows unless `Unresolved`.
pub fn real(address: IpAddr, port: u16, weight: u32, state: RealState) -> RealDesired {
    let last = match address {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    };
    let mut mac = [0; 6];
    mac[..5].copy_from_slice(&REAL_MAC_PREFIX);
    mac[5] = last;
    RealDesired {
        address,
        port,
        weight,
        config_weight: weight,
        state,
        mac: (state != RealState::Unresolved).then_some(Mac(mac)),
        ifindex: Some(1),
        lb_kind: Default::default(),
        thresholds: (0, 0),
        keeps_flows: state != RealState::Unresolved,
        override_: None,
        health_message: None,
        check_latency: None,
    }
}

/// `Drain` at weight 0, else `Up`.
pub fn state_for(weight: u32) -> RealState {
    if weight == 0 { RealState::Drain } else { RealState::Up }
}

/// `real` at 192.0.2.`last`.
pub fn r4(last: u8, port: u16, weight: u32) -> RealDesired {
    real(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)), port, weight, state_for(weight))
}

/// `real` at 2001:db8::`last`.
pub fn r6(last: u16, port: u16, weight: u32) -> RealDesired {
    let address = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last));
    real(address, port, weight, state_for(weight))
}

/// An active Maglev service on `lo` (ifindex 1) with `reals` and its table of `table_size`
/// entries over the `Up` ones, built as `desired_state` builds it (default hash seed).
pub fn service(
    vip: IpAddr,
    port: u16,
    protocol: Protocol,
    reals: Vec<RealDesired>,
    table_size: u32,
) -> ServiceDesired {
    let mut s = ServiceDesired {
        key: VirtualServerKey::addr(vip, port, protocol),
        active: true,
        vrrp_instance: None,
        backend: Default::default(),
        backend_reason: String::new(),
        one_packet: false,
        scheduler: "mh".into(),
        interface: "lo".into(),
        ifindex: Some(1),
        table_size,
        source_hash: false,
        persistence: None,
        reals,
        sorry: None,
        tun_source: None,
        ring: crate::desired::Ring::default(),
    };
    rebuild_ring(&mut s);
    s
}

/// Rebuilds `s.ring` from its `Up` reals (after changing them).
pub fn rebuild_ring(s: &mut ServiceDesired) {
    let names: Vec<String> =
        s.reals.iter().map(|r| SocketAddr::new(r.address, r.port).to_string()).collect();
    let backends: Vec<maglev::Backend<'_>> = s
        .reals
        .iter()
        .zip(&names)
        .enumerate()
        .filter(|(_, (r, _))| r.state == RealState::Up)
        .map(|(i, (r, n))| maglev::Backend { name: n, weight: r.weight, id: i as u32 })
        .collect();
    s.ring = crate::desired::Ring::fixed(maglev::build(
        &backends,
        s.table_size,
        u64::from(lb_common::DEFAULT_HASH_SEED),
    ));
}

/// A desired state with `services` on `lo` (ifindex 1, MAC `IFACE_MAC`), default hash seed,
/// UDP timeout 30 s, TCP window 900 s, no SYN threshold, ICMP echo answered.
pub fn desired(services: Vec<ServiceDesired>, tx_interfaces: Vec<Interface>) -> Desired {
    Desired {
        globals: Globals {
            hash_seed: lb_common::DEFAULT_HASH_SEED,
            udp_timeout: 30,
            tcp_window: 900,
            syn_threshold: 0,
            icmp_echo: true,
        },
        interfaces: vec![Interface {
            name: "lo".into(),
            ifindex: 1,
            mac: Mac(IFACE_MAC),
            driver: String::new(),
        }],
        tx_interfaces,
        services,
        flow_sync: None,
    }
}

/// The XDP fixtures' services (index: what), with tables of `table_size`:
/// 0 v4 TCP/80 .11 (w1) .12 (w2) · 1 v4 UDP/53 .13 · 2 v4 TCP/81 drained .14 · 3 v4 TCP/82
/// unresolved .15 · 4 v4 TCP/83 no real, sorry .16 · 5 v4 TCP/84 no real, no sorry · 6 v4 TCP/0
/// (all ports) .17 · 7 v6 TCP/80 ::11 ::12 · 8 v6 UDP/53 ::13 · 9 v4 TCP/85 persistent /24 over
/// .21 .22 .23
pub fn xdp_services(table_size: u32) -> Vec<ServiceDesired> {
    let v4 = IpAddr::V4(VIP);
    let v6 = IpAddr::V6(VIP6);
    let service = |vip, port, protocol, reals| service(vip, port, protocol, reals, table_size);
    let mut sorry = service(v4, 83, Protocol::Tcp, vec![]);
    sorry.sorry = Some(r4(16, 83, 1));
    let mut persistent =
        service(v4, 85, Protocol::Tcp, vec![r4(21, 85, 1), r4(22, 85, 1), r4(23, 85, 1)]);
    persistent.persistence = Some((300, 24));
    let unresolved = real(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 15)), 82, 1, RealState::Unresolved);
    vec![
        service(v4, 80, Protocol::Tcp, vec![r4(11, 80, 1), r4(12, 80, 2)]),
        service(v4, 53, Protocol::Udp, vec![r4(13, 53, 1)]),
        service(v4, 81, Protocol::Tcp, vec![r4(14, 81, 0)]),
        service(v4, 82, Protocol::Tcp, vec![unresolved]),
        sorry,
        service(v4, 84, Protocol::Tcp, vec![]),
        service(v4, 0, Protocol::Tcp, vec![r4(17, 0, 1)]),
        service(v6, 80, Protocol::Tcp, vec![r6(0x11, 80, 1), r6(0x12, 80, 1)]),
        service(v6, 53, Protocol::Udp, vec![r6(0x13, 53, 1)]),
        persistent,
    ]
}

/// A `vrrp_instance` as the config readers would give it: VRRPv3 on `eth0`, priority 100,
/// advert 1 s, preempting, keepalived's GARP defaults; the VIPs as /32 (IPv4) or /64 (IPv6).
pub fn vrrp_instance(name: &str, vrid: u8, vips: &[&str]) -> VrrpInstance {
    VrrpInstance {
        name: name.into(),
        initial_master: false,
        interface: "eth0".into(),
        virtual_router_id: vrid,
        priority: 100,
        advert_int: Duration::from_secs(1),
        version: 3,
        virtual_ipaddress: vips
            .iter()
            .map(|v| v.parse().expect("a VIP address"))
            .map(|address: IpAddr| VirtualAddress {
                address,
                prefix: if address.is_ipv4() { 32 } else { 64 },
            })
            .collect(),
        preempt: true,
        preempt_delay: Duration::ZERO,
        unicast_peer: vec![],
        unicast_src_ip: None,
        auth_pass: None,
        track_interface: vec![],
        track_script: vec![],
        notify_master: None,
        notify_backup: None,
        notify_fault: None,
        notify_stop: None,
        notify: None,
        garp_master_repeat: 5,
        garp_master_refresh_delay: Duration::from_secs(5),
        lower_prio_no_advert: false,
        skip_check_adv_addr: false,
        location: Location::default(),
    }
}

/// A whole config read from `source` holding `virtual_servers`, with every other section as the
/// front ends leave it when not written. Tests change what they are about:
/// `Config { dataplane, ..fixture::config("lb.toml", services) }`.
pub fn config(source: &str, virtual_servers: Vec<VirtualServer>) -> Config {
    Config {
        source: source.into(),
        dataplane: DataplaneSettings::default(),
        virtual_servers,
        vrrp: Default::default(),
        vrrp_locations: Vec::new(),
        bgp: None,
        flow_sync: None,
        script_user: None,
    }
}

/// A virtual server as a front end gives `vip`, `port` and `interface = "eth0"` with nothing
/// else: TCP, `mh` on the default Maglev table, no persistence, default health, DR, no reals.
/// Its section is `at`, where every value is located (none was written elsewhere).
pub fn virtual_server(vip: &str, port: u16, at: Location) -> VirtualServer {
    let vip: IpAddr = vip.parse().expect("a VIP address");
    VirtualServer {
        forwarding: Default::default(),
        vip,
        port,
        protocol: Protocol::Tcp,
        fwmark: None,
        interface: "eth0".to_owned(),
        lb_algo: crate::config::DEFAULT_LB_ALGO.to_owned(),
        table_size: maglev::DEFAULT_SIZE,
        persistence_timeout: None,
        persistence_prefix: host_prefix_len(vip),
        real_servers: Vec::new(),
        sorry_server: None,
        health: ServiceHealth::default(),
        location: at,
        key_locations: Spans::at_section(at),
    }
}

/// A real server `address:port` with the defaults: weight 1, no checks, the service's
/// forwarding. Its section is `at`, where every value is located.
pub fn real_server(address: &str, port: u16, at: Location) -> RealServer {
    RealServer {
        forwarding: Default::default(),
        address: address.parse().expect("a real server address"),
        port,
        weight: crate::config::DEFAULT_WEIGHT,
        health: RealHealth::default(),
        location: at,
        key_locations: Spans::at_section(at),
        check_locations: Vec::new(),
    }
}
