//! BPF_PROG_TEST_RUN fixtures: packet in → expected verdict and packet out, run against the real
//! program with maps programmed by `XdpDataplane::apply`.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use aya::programs::{TestRun as _, TestRunOptions};
use lb_common::{DEFAULT_HASH_SEED, flow_hash_v4};

use super::{XdpDataplane, XdpLimits, XdpModeSetting};
use crate::{
    config::{Protocol, VirtualServerKey},
    dataplane::Dataplane as _,
    desired::{Desired, RealDesired, RealState, ServiceDesired},
    maglev,
    net::{Mac, iface::Interface},
    testutil::{private_netns, require_root},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const IFACE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xd1];
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn real(last: u8, weight: u32, state: RealState) -> RealDesired {
    RealDesired {
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)),
        port: 0,
        weight,
        state,
        mac: (state != RealState::Unresolved).then_some(Mac([0x52, 0x54, 0, 0, 0, last])),
    }
}

fn service(port: u16, protocol: Protocol, mut reals: Vec<RealDesired>) -> ServiceDesired {
    for r in &mut reals {
        r.port = port;
    }
    let names: Vec<String> = reals.iter().map(|r| format!("{}:{}", r.address, r.port)).collect();
    let backends: Vec<maglev::Backend<'_>> = reals
        .iter()
        .zip(&names)
        .enumerate()
        .filter(|(_, (r, _))| r.state == RealState::Up)
        .map(|(i, (r, n))| maglev::Backend { name: n, weight: r.weight, id: i as u32 })
        .collect();
    ServiceDesired {
        key: VirtualServerKey { vip: IpAddr::V4(VIP), port, protocol },
        scheduler: "mh".into(),
        interface: "lo".into(),
        ifindex: Some(1),
        ring: Arc::new(maglev::build(&backends, maglev::DEFAULT_SIZE, 0)),
        reals,
    }
}

/// The test topology: TCP/80 split 1:2 over .11/.12, UDP/53 on .13, TCP/81 whose only real is
/// drained and TCP/82 whose only real is unresolved (both: no real can take a new flow).
fn desired() -> Desired {
    Desired {
        interfaces: vec![Interface {
            name: "lo".into(),
            ifindex: 1,
            mac: Mac(IFACE_MAC),
            driver: String::new(),
        }],
        services: vec![
            service(
                80,
                Protocol::Tcp,
                vec![real(11, 1, RealState::Up), real(12, 2, RealState::Up)],
            ),
            service(53, Protocol::Udp, vec![real(13, 1, RealState::Up)]),
            service(81, Protocol::Tcp, vec![real(14, 0, RealState::Drain)]),
            service(82, Protocol::Tcp, vec![real(15, 1, RealState::Unresolved)]),
        ],
    }
}

/// Builds an Ethernet + IPv4 + L4 frame. `l4` is the transport header and payload.
fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ihl: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&IFACE_MAC);
    f.extend_from_slice(&ROUTER_MAC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let hlen = usize::from(ihl) * 4;
    let total = (hlen + l4.len()) as u16;
    let mut ip = vec![0x40 | ihl, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1]);
    ip.extend_from_slice(&frag.to_be_bytes());
    ip.extend_from_slice(&[64, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.resize(hlen, 1); // options: NOPs
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 =
        b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    h.extend_from_slice(b"hello");
    h
}

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&13u16.to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(b"query");
    h
}

/// The real the program must pick for a frame, computed the way the program does.
fn expected_real(d: &Desired, svc: usize, src: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> Mac {
    let ports = u32::from_ne_bytes([
        sport.to_be_bytes()[0],
        sport.to_be_bytes()[1],
        dport.to_be_bytes()[0],
        dport.to_be_bytes()[1],
    ]);
    let h = flow_hash_v4(
        u32::from_ne_bytes(src.octets()),
        u32::from_ne_bytes(VIP.octets()),
        ports,
        proto,
        DEFAULT_HASH_SEED,
    );
    let s = &d.services[svc];
    let idx = s.ring[(h % s.ring.len() as u32) as usize];
    s.reals[idx as usize].mac.expect("up reals have a MAC")
}

fn run(dp: &mut XdpDataplane, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let prog = dp.program().expect("program");
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    (res.return_value, out)
}

fn setup() -> Option<(XdpDataplane, Desired)> {
    if !require_root("xdp fixtures") {
        return None;
    }
    private_netns();
    let limits =
        XdpLimits { max_services: 16, max_reals: 64, ring_entries: 16 * maglev::DEFAULT_SIZE };
    let mut dp = XdpDataplane::load(XdpModeSetting::Generic, limits).expect("load XDP program");
    let d = desired();
    dp.apply(&d).expect("apply");
    Some((dp, d))
}

/// Expected outcome of one fixture.
enum Want {
    /// Forwarded to the real the flow hashes to (service index in `desired()`).
    Tx {
        svc: usize,
        sport: u16,
        dport: u16,
        proto: u8,
    },
    /// Left untouched for the kernel.
    Pass,
    Drop,
}

#[test]
fn fixtures() {
    let Some((mut dp, d)) = setup() else { return };
    let other = Ipv4Addr::new(192, 0, 2, 2);
    let mut arp = Vec::new();
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&ROUTER_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);
    let mut ipv6 = ipv4_frame(CLIENT, VIP, 6, 5, 0, &tcp(1000, 80));
    ipv6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let tcp_frame = ipv4_frame(CLIENT, VIP, 6, 5, 0, &tcp(40000, 80));

    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        ("tcp hit", tcp_frame.clone(), Want::Tx { svc: 0, sport: 40000, dport: 80, proto: 6 }),
        (
            "tcp hit, other flow",
            ipv4_frame(CLIENT, VIP, 6, 5, 0, &tcp(40001, 80)),
            Want::Tx { svc: 0, sport: 40001, dport: 80, proto: 6 },
        ),
        (
            "udp hit",
            ipv4_frame(CLIENT, VIP, 17, 5, 0, &udp(5353, 53)),
            Want::Tx { svc: 1, sport: 5353, dport: 53, proto: 17 },
        ),
        ("miss: port", ipv4_frame(CLIENT, VIP, 6, 5, 0, &tcp(40000, 8080)), Want::Pass),
        ("miss: protocol", ipv4_frame(CLIENT, VIP, 17, 5, 0, &udp(40000, 80)), Want::Pass),
        ("miss: address", ipv4_frame(CLIENT, other, 6, 5, 0, &tcp(40000, 80)), Want::Pass),
        (
            "vrrp",
            ipv4_frame(
                other,
                Ipv4Addr::new(224, 0, 0, 18),
                112,
                5,
                0,
                &[0x21, 51, 100, 1, 0, 1, 0, 0, 192, 0, 2, 100],
            ),
            Want::Pass,
        ),
        ("icmp to vip", ipv4_frame(CLIENT, VIP, 1, 5, 0, &[8, 0, 0, 0, 0, 1, 0, 1]), Want::Pass),
        ("non-ip: arp", arp, Want::Pass),
        ("non-ip: ipv6", ipv6, Want::Pass),
        ("truncated: ethernet only", tcp_frame[..14].to_vec(), Want::Pass),
        ("truncated: ip header", tcp_frame[..14 + 12].to_vec(), Want::Pass),
        ("truncated: no ports", tcp_frame[..14 + 20 + 2].to_vec(), Want::Pass),
        ("truncated: tcp header to vip", tcp_frame[..14 + 20 + 8].to_vec(), Want::Drop),
        (
            "truncated: udp header to vip",
            ipv4_frame(CLIENT, VIP, 17, 5, 0, &udp(1, 53))[..14 + 20 + 6].to_vec(),
            Want::Drop,
        ),
        (
            "bad version",
            {
                let mut f = tcp_frame.clone();
                f[14] = 0x65;
                f
            },
            Want::Pass,
        ),
        (
            "bad ihl",
            {
                let mut f = tcp_frame.clone();
                f[14] = 0x44;
                f
            },
            Want::Pass,
        ),
        ("ip options to vip", ipv4_frame(CLIENT, VIP, 6, 6, 0, &tcp(40000, 80)), Want::Pass),
        (
            "first fragment to vip",
            ipv4_frame(CLIENT, VIP, 6, 5, 0x2000, &tcp(40000, 80)),
            Want::Pass,
        ),
        ("later fragment to vip", ipv4_frame(CLIENT, VIP, 6, 5, 185, &tcp(40000, 80)), Want::Pass),
        ("drained only real", ipv4_frame(CLIENT, VIP, 6, 5, 0, &tcp(40000, 81)), Want::Drop),
        ("unresolved only real", ipv4_frame(CLIENT, VIP, 6, 5, 0, &tcp(40000, 82)), Want::Drop),
    ];
    for (name, frame, want) in cases {
        let (verdict, out) = run(&mut dp, &frame);
        match want {
            Want::Pass | Want::Drop => {
                let v = if matches!(want, Want::Pass) { XDP_PASS } else { XDP_DROP };
                assert_eq!(verdict, v, "{name}: verdict");
                assert_eq!(out, frame, "{name}: frame must be untouched");
            }
            Want::Tx { svc, sport, dport, proto } => {
                assert_eq!(verdict, XDP_TX, "{name}: verdict");
                let mac = expected_real(&d, svc, CLIENT, sport, dport, proto);
                assert_eq!(&out[0..6], &mac.0, "{name}: destination MAC is the real's");
                assert_eq!(&out[6..12], &IFACE_MAC, "{name}: source MAC is the interface's");
                assert_eq!(&out[12..], &frame[12..], "{name}: IP packet untouched (DR)");
            }
        }
    }
}

#[test]
fn weights_split_flows_and_counters_add_up() {
    let Some((mut dp, d)) = setup() else { return };
    let (mut to11, mut to12) = (0u32, 0u32);
    let n = 3000u16;
    let mut bytes = 0u64;
    for sport in 10000..10000 + n {
        let frame = ipv4_frame(CLIENT, VIP, 6, 5, 0, &tcp(sport, 80));
        bytes += frame.len() as u64;
        let (verdict, out) = run(&mut dp, &frame);
        assert_eq!(verdict, XDP_TX);
        match out[5] {
            11 => to11 += 1,
            12 => to12 += 1,
            other => panic!("unexpected real .{other}"),
        }
    }
    let share12 = f64::from(to12) / f64::from(n);
    assert!((share12 - 2.0 / 3.0).abs() < 0.04, "weight-2 real got {share12:.3} of flows");

    let c = dp.counters().expect("counters");
    let key = d.services[0].key;
    let per_real = |last: u8| c.reals[&(key, IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)), 80)];
    assert_eq!(per_real(11).packets, u64::from(to11));
    assert_eq!(per_real(12).packets, u64::from(to12));
    assert_eq!(c.services[&key].packets, u64::from(n));
    assert_eq!(c.services[&key].bytes, bytes);
    let tx = c.global.iter().find(|(name, _)| *name == "tx").expect("tx counter").1;
    assert_eq!(tx.packets, u64::from(n));
}

#[test]
fn table_change_and_removal_take_effect() {
    let Some((mut dp, mut d)) = setup() else { return };
    let frame = ipv4_frame(CLIENT, VIP, 6, 5, 0, &tcp(40000, 80));
    // Drain .11: every flow now goes to .12.
    d.services[0].reals[0].state = RealState::Drain;
    d.services[0].reals[0].weight = 0;
    d.services[0] = service(80, Protocol::Tcp, d.services[0].reals.clone());
    dp.apply(&d).expect("apply drain");
    for sport in 20000..20200u16 {
        let (v, out) = run(&mut dp, &ipv4_frame(CLIENT, VIP, 6, 5, 0, &tcp(sport, 80)));
        assert_eq!((v, out[5]), (XDP_TX, 12), "drained real must get no new flow");
    }
    // Applying the same state twice is a no-op.
    dp.apply(&d).expect("apply again");
    // Remove the service: its traffic is passed to the kernel again.
    d.services.remove(0);
    dp.apply(&d).expect("apply removal");
    assert_eq!(run(&mut dp, &frame).0, XDP_PASS);
}

/// The program must pass the verifier when the agent lacks CAP_PERFMON (and CAP_SYS_ADMIN): the
/// verifier then rejects variable packet offsets and adds Spectre barriers.
#[test]
fn loads_and_forwards_without_cap_perfmon() {
    if !require_root("xdp without CAP_PERFMON") {
        return;
    }
    private_netns();
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    crate::testutil::drop_effective_caps(&[CAP_SYS_ADMIN, CAP_PERFMON]);
    let limits =
        XdpLimits { max_services: 16, max_reals: 64, ring_entries: 16 * maglev::DEFAULT_SIZE };
    let mut dp =
        XdpDataplane::load(XdpModeSetting::Generic, limits).expect("load without CAP_PERFMON");
    let d = desired();
    dp.apply(&d).expect("apply");
    let frame = ipv4_frame(CLIENT, VIP, 6, 5, 0, &tcp(40000, 80));
    let (verdict, out) = run(&mut dp, &frame);
    assert_eq!(verdict, XDP_TX);
    assert_eq!(&out[0..6], &expected_real(&d, 0, CLIENT, 40000, 80, 6).0);
}
