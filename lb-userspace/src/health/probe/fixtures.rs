//! BPF_PROG_TEST_RUN fixtures of the probe programs, in a private network namespace: frames in,
//! verdict and frames out byte for byte (destination and source rewrites with valid IPv4 header
//! and TCP/UDP checksums, each tunnel's outer header, ICMP errors about a check translated back),
//! packets left alone, and what a packet costs the programs when it is not a probe's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun as _, TestRunOptions};
use lb_common::{
    FAMILY_V4, FAMILY_V6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, TUN_GRE, TUN_GUE,
    TUN_IPIP, TUN_NONE,
    probe::{EGRESS_PROGRAM, INGRESS_PROGRAM, MARK_BASE, ProbeTarget},
};
use lb_test_support::packet::{self, PLAIN, checksum};

use super::{ProbeDesired, ProbePath, raw};
use crate::testutil::{private_netns, require_root};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const REAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 34);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xd, 0, 0, 0, 0, 2);
const REAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 0x100);
const SPORT: u16 = 40_000;

fn target(real: IpAddr, vip: IpAddr, tun: u8, port: u16) -> ProbeTarget {
    let family = |ip: IpAddr| if ip.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 };
    ProbeTarget {
        real: raw(real),
        vip: raw(vip),
        tun_src: [0; 4],
        inner_src: [0; 4],
        family: family(vip),
        real_family: family(real),
        tun,
        _pad: 0,
        tun_port_be: port.to_be(),
        _pad2: 0,
    }
}

/// The marks: DR, IPIP, GUE, GRE over IPv4; DR and IPv6 in IPv6 over IPv6.
const DR: u32 = MARK_BASE + 1;
const IPIP: u32 = MARK_BASE + 2;
const GUE: u32 = MARK_BASE + 3;
const GRE: u32 = MARK_BASE + 4;
const DR6: u32 = MARK_BASE + 5;
const IP6IP6: u32 = MARK_BASE + 6;
/// An IPv4 VIP on the real's IPv6 address (IPv4 in IPv6, GUE and GRE over IPv6) and an IPv6 VIP
/// on its IPv4 address (IPv6 in IPv4, GUE and GRE over IPv4): translated checks.
const V4IN6: u32 = MARK_BASE + 7;
const GUE46: u32 = MARK_BASE + 8;
const GRE46: u32 = MARK_BASE + 9;
const V6IN4: u32 = MARK_BASE + 10;
const GUE64: u32 = MARK_BASE + 11;
const GRE64: u32 = MARK_BASE + 12;
/// The translated checks' sources (the director's addresses of the VIP's family).
const INNER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const INNER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xe, 0, 0, 0, 0, 2);
/// The IPv4 header a translation writes: ID 0, DF.
const XLAT: packet::V4Opts = packet::V4Opts { ihl: 5, frag: 0x4000, id: 0 };

/// A target whose VIP is of the other family than its real: the inner source given.
fn mixed(real: IpAddr, vip: IpAddr, tun: u8, port: u16) -> ProbeTarget {
    let inner: IpAddr = if vip.is_ipv4() { INNER4.into() } else { INNER6.into() };
    ProbeTarget { inner_src: raw(inner), ..target(real, vip, tun, port) }
}

fn setup() -> Option<ProbePath> {
    if !require_root("probe fixtures") {
        return None;
    }
    private_netns();
    Some(load())
}

/// The probe programs loaded with every target of the fixtures.
fn load() -> ProbePath {
    let (r4, v4, r6, v6) = (REAL.into(), VIP.into(), REAL6.into(), VIP6.into());
    let want = ProbeDesired {
        targets: [
            (DR, target(r4, v4, TUN_NONE, 0)),
            (IPIP, target(r4, v4, TUN_IPIP, 0)),
            (GUE, target(r4, v4, TUN_GUE, 6080)),
            (GRE, target(r4, v4, TUN_GRE, 0)),
            (DR6, target(r6, v6, TUN_NONE, 0)),
            (IP6IP6, target(r6, v6, TUN_IPIP, 0)),
            (V4IN6, mixed(r6, v4, TUN_IPIP, 0)),
            (GUE46, mixed(r6, v4, TUN_GUE, 6080)),
            (GRE46, mixed(r6, v4, TUN_GRE, 0)),
            (V6IN4, mixed(r4, v6, TUN_IPIP, 0)),
            (GUE64, mixed(r4, v6, TUN_GUE, 6080)),
            (GRE64, mixed(r4, v6, TUN_GRE, 0)),
        ]
        .into(),
        // Nothing attached: the programs run by BPF_PROG_TEST_RUN only.
        interfaces: Default::default(),
        unsupported: Default::default(),
    };
    let mut path = ProbePath::default();
    path.try_apply(&want).expect("probe path");
    path
}

/// `mark` as the socket buffer's (a `struct __sk_buff` prefix: len, pkt_type, mark).
fn ctx(mark: u32) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[8..].copy_from_slice(&mark.to_ne_bytes());
    c
}

fn run(path: &mut ProbePath, name: &'static str, mark: u32, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 128];
    let ctx_in = ctx(mark);
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(&ctx_in);
    let res = path.loaded(name).expect(name).test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    (res.return_value, out)
}

/// The TCP/UDP checksum of `segment` with its pseudo header (0 when the checksum in it is right).
fn l4_sum(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(segment.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => panic!("mixed families"),
    }
    pseudo.extend_from_slice(segment);
    checksum(&pseudo)
}

/// `segment` with its checksum filled in.
fn summed(src: IpAddr, dst: IpAddr, proto: u8, mut segment: Vec<u8>) -> Vec<u8> {
    let at = if proto == IPPROTO_TCP { 16 } else { 6 };
    segment[at..at + 2].copy_from_slice(&[0, 0]);
    let sum = l4_sum(src, dst, proto, &segment);
    segment[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    segment
}

fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    summed(src, dst, IPPROTO_TCP, packet::tcp(sport, dport, 0x02, b"GET / HTTP/1.0\r\n\r\n"))
}

/// An Ethernet frame of an IP packet from `src` to `dst` carrying `segment` (`proto`).
fn frame(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> Vec<u8> {
    frame_with(PLAIN, src, dst, proto, segment)
}

/// The same, with these IPv4 header fields (`o`).
fn frame_with(o: packet::V4Opts, src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut f = packet::eth(MAC_B, MAC_A, 0x0800);
            f.extend(packet::ipv4(s, d, proto, o, segment));
            f
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut f = packet::eth(MAC_B, MAC_A, 0x86dd);
            f.extend(packet::ipv6(s, d, proto, segment));
            f
        }
        _ => panic!("mixed families"),
    }
}

/// A check's TCP SYN from the director to the real (as the socket connected to it sends it).
fn syn(v6: bool) -> Vec<u8> {
    let (local, real): (IpAddr, IpAddr) =
        if v6 { (LOCAL6.into(), REAL6.into()) } else { (LOCAL.into(), REAL.into()) };
    frame(local, real, IPPROTO_TCP, &tcp(local, real, SPORT, 80))
}

/// The same packet as the check's, sent to the VIP instead: what must come out (inside), from
/// the IP header on.
fn to_vip(v6: bool) -> Vec<u8> {
    let (local, vip): (IpAddr, IpAddr) =
        if v6 { (LOCAL6.into(), VIP6.into()) } else { (LOCAL.into(), VIP.into()) };
    frame(local, vip, IPPROTO_TCP, &tcp(local, vip, SPORT, 80))[14..].to_vec()
}

#[test]
fn egress_sends_a_marked_check_to_the_vip_on_its_real() {
    let Some(mut path) = setup() else { return };
    let (syn4, syn6) = (syn(false), syn(true));
    let (inner4, inner6) = (to_vip(false), to_vip(true));

    // DR: only the destination changes (and the checksums with it).
    let (v, out) = run(&mut path, EGRESS_PROGRAM, DR, &syn4);
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(out[..14], syn4[..14], "the frame keeps the real's MAC");
    assert_eq!(out[14..], inner4[..], "destination VIP, IPv4 and TCP checksums updated");
    let (v, out) = run(&mut path, EGRESS_PROGRAM, DR6, &syn6);
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(out[14..], inner6[..], "IPv6: destination VIP, TCP checksum updated");

    // Tunnels: (mark, input, outer IPv6, outer protocol, bytes between outer header and inner).
    type Case<'a> = (u32, &'a [u8], bool, u8, Vec<u8>);
    let gue = {
        let mut udp = vec![0, 0]; // source port: flow entropy, checked below
        udp.extend_from_slice(&6080u16.to_be_bytes());
        udp.extend_from_slice(&((inner4.len() + 8) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp
    };
    let cases: [Case<'_>; 4] = [
        (IPIP, &syn4, false, 4, vec![]),
        (GRE, &syn4, false, 47, vec![0, 0, 0x08, 0x00]),
        (GUE, &syn4, false, 17, gue),
        (IP6IP6, &syn6, true, 41, vec![]),
    ];
    for (mark, input, v6, proto, between) in cases {
        let (v, out) = run(&mut path, EGRESS_PROGRAM, mark, input);
        assert_eq!(v, TC_ACT_OK, "mark {mark:#x}");
        assert_eq!(out[..14], input[..14], "mark {mark:#x}: MACs and EtherType kept");
        let inner = if v6 { &inner6 } else { &inner4 };
        let ip_hlen = if v6 { 40 } else { 20 };
        let outer = &out[14..14 + ip_hlen];
        let after = &out[14 + ip_hlen..];
        let mut between_out = after[..between.len()].to_vec();
        if proto == 17 {
            assert_eq!(between_out[0] & 0xc0, 0xc0, "GUE source port from the flow");
            between_out[..2].copy_from_slice(&[0, 0]);
        }
        assert_eq!(between_out, between, "mark {mark:#x}: tunnel header");
        assert_eq!(&after[between.len()..], &inner[..], "mark {mark:#x}: inner packet to the VIP");
        let outer_len = ip_hlen + between.len() + inner.len();
        if v6 {
            assert_eq!(outer[0] >> 4, 6);
            assert_eq!(usize::from(u16::from_be_bytes([outer[4], outer[5]])), outer_len - 40);
            assert_eq!((outer[6], outer[7]), (proto, 64), "next header, hop limit");
            assert_eq!(outer[8..24], LOCAL6.octets(), "outer source: the check's");
            assert_eq!(outer[24..40], REAL6.octets(), "outer destination: the real");
        } else {
            let mut expected = packet::ipv4(LOCAL, REAL, proto, PLAIN, &[]);
            expected[2..4].copy_from_slice(&(outer_len as u16).to_be_bytes());
            expected[4..8].copy_from_slice(&[0, 0, 0x40, 0]); // ID 0, DF
            expected[10..12].copy_from_slice(&[0, 0]);
            let sum = checksum(&expected);
            expected[10..12].copy_from_slice(&sum.to_be_bytes());
            assert_eq!(outer, &expected[..], "mark {mark:#x}: outer IPv4 header");
        }
    }
}

#[test]
fn egress_leaves_unmarked_packets_and_drops_what_it_cannot_send_as_asked() {
    let Some(mut path) = setup() else { return };
    let syn4 = syn(false);
    for (mark, verdict) in [
        (0, TC_ACT_OK),
        // Marks outside the range: not a probe's.
        (0x1234, TC_ACT_OK),
        (MARK_BASE + 0x1_0001, TC_ACT_OK),
        // In the range but no target: never sent to the real's own address.
        (MARK_BASE + 99, TC_ACT_SHOT),
        // A target of the other family.
        (DR6, TC_ACT_SHOT),
    ] {
        let (v, out) = run(&mut path, EGRESS_PROGRAM, mark, &syn4);
        assert_eq!(v, verdict, "mark {mark:#x}");
        if v == TC_ACT_OK {
            assert_eq!(out, syn4, "mark {mark:#x}: untouched");
        }
    }
    // Marked, but to another address than the target's real.
    let other: IpAddr = Ipv4Addr::new(198, 51, 100, 99).into();
    let f = frame(LOCAL.into(), other, IPPROTO_TCP, &tcp(LOCAL.into(), other, SPORT, 80));
    assert_eq!(run(&mut path, EGRESS_PROGRAM, DR, &f).0, TC_ACT_SHOT);
    // Marked, but ICMP.
    let f = frame(LOCAL.into(), REAL.into(), 1, &[8, 0, 0, 0, 0, 1, 0, 1]);
    assert_eq!(run(&mut path, EGRESS_PROGRAM, DR, &f).0, TC_ACT_SHOT);
}

#[test]
fn ingress_gives_a_probe_reply_the_real_as_its_source() {
    let Some(mut path) = setup() else { return };
    for (v6, mark, proto) in
        [(false, DR, IPPROTO_TCP), (false, IPIP, IPPROTO_UDP), (true, DR6, IPPROTO_TCP)]
    {
        let (local, real, vip): (IpAddr, IpAddr, IpAddr) = if v6 {
            (LOCAL6.into(), REAL6.into(), VIP6.into())
        } else {
            (LOCAL.into(), REAL.into(), VIP.into())
        };
        let segment = |src, dst, sport, dport| match proto {
            IPPROTO_TCP => tcp(src, dst, sport, dport),
            _ => summed(src, dst, IPPROTO_UDP, packet::udp(sport, dport, b"ping")),
        };
        // The check goes out (remembered), the reply comes back from the VIP.
        let out = frame(local, real, proto, &segment(local, real, SPORT, 53));
        assert_eq!(run(&mut path, EGRESS_PROGRAM, mark, &out).0, TC_ACT_OK);
        let reply = frame(vip, local, proto, &segment(vip, local, 53, SPORT));
        let (v, got) = run(&mut path, INGRESS_PROGRAM, 0, &reply);
        assert_eq!(v, TC_ACT_OK);
        let expected = frame(real, local, proto, &segment(real, local, 53, SPORT));
        assert_eq!(got, expected, "v6 {v6} proto {proto}: source the real, checksums updated");
        // Not the probe's flow (another port): untouched.
        let other = frame(vip, local, proto, &segment(vip, local, 53, SPORT + 1));
        assert_eq!(run(&mut path, INGRESS_PROGRAM, 0, &other), (TC_ACT_OK, other));
    }
}

/// An ICMP (IPv4) or ICMPv6 error `kind` (type, code) from `from` to `to` quoting `quoted` (an IP
/// packet from its header on), its checksum computed from scratch.
fn icmp_error(from: IpAddr, to: IpAddr, kind: (u8, u8), quoted: &[u8]) -> Vec<u8> {
    let mut msg = vec![kind.0, kind.1, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(quoted);
    let (proto, sum) = if from.is_ipv4() {
        (IPPROTO_ICMP, checksum(&msg))
    } else {
        (IPPROTO_ICMPV6, l4_sum(from, to, IPPROTO_ICMPV6, &msg))
    };
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    frame(from, to, proto, &msg)
}

/// Every checksum of an ICMP error frame (no IPv4 options) verified on its own: the outer IPv4
/// header's, the ICMP/ICMPv6 checksum, the quoted IPv4 header's and the quoted UDP checksum.
fn assert_checksums(frame: &[u8], what: &str) {
    let v6 = frame[12..14] == [0x86, 0xdd];
    let (hlen, src, dst): (usize, IpAddr, IpAddr) = if v6 {
        let a = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&frame[at..at + 16]).unwrap());
        (40, a(22), a(38))
    } else {
        let a = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&frame[at..at + 4]).unwrap());
        assert_eq!(checksum(&frame[14..34]), 0, "{what}: outer IPv4 header checksum");
        (20, a(26), a(30))
    };
    let msg = &frame[14 + hlen..];
    let icmp = if v6 { l4_sum(src, dst, IPPROTO_ICMPV6, msg) } else { checksum(msg) };
    assert_eq!(icmp, 0, "{what}: ICMP checksum");
    let quoted = &msg[8..];
    let (qsrc, qdst, qproto, l4): (IpAddr, IpAddr, u8, &[u8]) = if v6 {
        let a = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&quoted[at..at + 16]).unwrap());
        (a(8), a(24), quoted[6], &quoted[40..])
    } else {
        assert_eq!(checksum(&quoted[..20]), 0, "{what}: quoted IPv4 header checksum");
        let a = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&quoted[at..at + 4]).unwrap());
        (a(12), a(16), quoted[9], &quoted[20..])
    };
    if qproto == IPPROTO_UDP {
        assert_eq!(l4_sum(qsrc, qdst, IPPROTO_UDP, l4), 0, "{what}: quoted UDP checksum");
    }
}

/// ICMP errors quoting a check's packet (sent to the VIP) name the real again: the quoted
/// destination, and the source when the VIP sent the error (a router's keeps its own).
#[test]
fn ingress_gives_an_icmp_error_to_a_probe_the_real_as_quoted_destination() {
    let Some(mut path) = setup() else { return };
    let router4: IpAddr = Ipv4Addr::new(198, 51, 100, 1).into();
    let router6: IpAddr = Ipv6Addr::new(0x2001, 0xdb8, 0xd, 0, 0, 0, 0, 1).into();
    const PORT_UNREACHABLE: (u8, u8) = (3, 3);
    const TIME_EXCEEDED: (u8, u8) = (11, 0);
    const HOST_UNREACHABLE: (u8, u8) = (3, 1);
    const PORT_UNREACHABLE6: (u8, u8) = (1, 4);
    const TOO_BIG6: (u8, u8) = (2, 0);
    const TIME_EXCEEDED6: (u8, u8) = (3, 0);
    // (IPv6, mark, protocol, from the VIP (else the router), error, quoted bytes kept)
    let cases = [
        (false, DR, IPPROTO_UDP, true, PORT_UNREACHABLE, usize::MAX),
        (false, IPIP, IPPROTO_UDP, true, PORT_UNREACHABLE, usize::MAX),
        (false, DR, IPPROTO_UDP, false, TIME_EXCEEDED, usize::MAX),
        // A router's error quotes the IP header and 8 bytes of TCP only (RFC 792).
        (false, IPIP, IPPROTO_TCP, false, HOST_UNREACHABLE, 28),
        (true, DR6, IPPROTO_UDP, true, PORT_UNREACHABLE6, usize::MAX),
        (true, IP6IP6, IPPROTO_UDP, true, PORT_UNREACHABLE6, usize::MAX),
        (true, DR6, IPPROTO_TCP, true, TOO_BIG6, usize::MAX),
        (true, DR6, IPPROTO_UDP, false, TIME_EXCEEDED6, usize::MAX),
    ];
    for (i, (v6, mark, proto, from_vip, kind, keep)) in cases.into_iter().enumerate() {
        let what = format!("case {i}: v6 {v6} mark {mark:#x} proto {proto} from VIP {from_vip}");
        let (local, real, vip, router): (IpAddr, IpAddr, IpAddr, IpAddr) = if v6 {
            (LOCAL6.into(), REAL6.into(), VIP6.into(), router6)
        } else {
            (LOCAL.into(), REAL.into(), VIP.into(), router4)
        };
        // Each case its own flow: the source port.
        let sport = SPORT + 100 + i as u16;
        let segment = |dst: IpAddr| match proto {
            IPPROTO_TCP => tcp(local, dst, sport, 80),
            _ => summed(local, dst, IPPROTO_UDP, packet::udp(sport, 5353, b"ping")),
        };
        // The IP packet to `dst` as an error quotes it.
        let packet = |dst: IpAddr| {
            let mut ip = frame(local, dst, proto, &segment(dst))[14..].to_vec();
            ip.truncate(keep);
            ip
        };
        let check = frame(local, real, proto, &segment(real));
        assert_eq!(run(&mut path, EGRESS_PROGRAM, mark, &check).0, TC_ACT_OK, "{what}");
        let sender = if from_vip { vip } else { router };
        let error = icmp_error(sender, local, kind, &packet(vip));
        let (v, got) = run(&mut path, INGRESS_PROGRAM, 0, &error);
        assert_eq!(v, TC_ACT_OK, "{what}");
        let back = if from_vip { real } else { router };
        let expected = icmp_error(back, local, kind, &packet(real));
        assert_eq!(got, expected, "{what}: source and quoted destination the real's");
        if keep == usize::MAX {
            assert_checksums(&got, &what);
        }
    }
}

/// ICMP errors that are not about a remembered check, not errors, or cut short: untouched.
#[test]
fn ingress_leaves_other_and_truncated_icmp_alone() {
    let Some(mut path) = setup() else { return };
    for v6 in [false, true] {
        let (local, real, vip, mark): (IpAddr, IpAddr, IpAddr, u32) = if v6 {
            (LOCAL6.into(), REAL6.into(), VIP6.into(), DR6)
        } else {
            (LOCAL.into(), REAL.into(), VIP.into(), DR)
        };
        let udp = |dst, sport| {
            let segment = summed(local, dst, IPPROTO_UDP, packet::udp(sport, 5353, b"ping"));
            frame(local, dst, IPPROTO_UDP, &segment)
        };
        let sport = SPORT + 300;
        assert_eq!(run(&mut path, EGRESS_PROGRAM, mark, &udp(real, sport)).0, TC_ACT_OK);
        let quoted = udp(vip, sport)[14..].to_vec();
        let other = udp(vip, sport + 1)[14..].to_vec();
        let (unreachable, echo_reply) = if v6 { ((1, 4), (129, 0)) } else { ((3, 3), (0, 0)) };
        let hlen = if v6 { 40 } else { 20 };
        let mut frames = vec![
            // Not a remembered flow (another source port).
            icmp_error(vip, local, unreachable, &other),
            // Not an error.
            icmp_error(vip, local, echo_reply, &quoted),
            // An ICMP header only.
            icmp_error(vip, local, unreachable, &[]),
        ];
        // Cut in the quoted IP header, in the ports, before the UDP checksum's end.
        for keep in [1, hlen - 4, hlen + 2, hlen + 6, hlen + 7] {
            frames.push(icmp_error(vip, local, unreachable, &quoted[..keep]));
        }
        // The ICMP header itself cut short (the IP header's length says more).
        let whole = icmp_error(vip, local, unreachable, &quoted);
        frames.push(whole[..14 + hlen + 4].to_vec());
        for (i, f) in frames.into_iter().enumerate() {
            assert_eq!(run(&mut path, INGRESS_PROGRAM, 0, &f), (TC_ACT_OK, f), "v6 {v6} frame {i}");
        }
    }
}

/// What the programs cost a packet that is not a probe's (the common case on the interfaces they
/// are attached to): an unmarked packet on egress, a reply to no probe and an ICMP error about
/// no probe on ingress. Printed, not asserted (a shared machine); the bound only catches a
/// runaway.
#[test]
fn packets_of_others_cost_little() {
    let Some(mut path) = setup() else { return };
    let syn4 = syn(false);
    let (vip, local): (IpAddr, IpAddr) = (VIP.into(), LOCAL.into());
    let reply = frame(vip, local, IPPROTO_TCP, &tcp(vip, local, 80, SPORT + 7));
    let quoted = frame(local, vip, IPPROTO_UDP, &packet::udp(SPORT + 7, 53, b"x"));
    let error = icmp_error(vip, local, (3, 3), &quoted[14..]);
    let cases = [
        (EGRESS_PROGRAM, &syn4, "unmarked"),
        (INGRESS_PROGRAM, &reply, "TCP"),
        (INGRESS_PROGRAM, &error, "ICMP error"),
    ];
    for (name, frame, what) in cases {
        let ctx_in = ctx(0);
        // A repeated run stops with EINTR when a signal is pending (the kernel checks between
        // repetitions; other tests' child processes send SIGCHLD): run it again, a few times.
        let mut attempts = 0;
        let res = loop {
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(frame);
            opts.ctx_in = Some(&ctx_in);
            opts.repeat = 100_000;
            match path.loaded(name).expect(name).test_run(opts) {
                Err(aya::programs::ProgramError::SyscallError(e))
                    if e.io_error.kind() == std::io::ErrorKind::Interrupted && attempts < 10 =>
                {
                    attempts += 1;
                }
                other => break other.expect("BPF_PROG_TEST_RUN"),
            }
        };
        let ns = res.duration.as_nanos();
        eprintln!(
            "{name}: {what}: {ns} ns per packet not a probe's (BPF_PROG_TEST_RUN, repeat 100000)"
        );
        assert!(ns < 5_000, "{name}: {ns} ns");
    }
}

/// The addresses of a translated check: (the socket's source and the real, of the real's family;
/// the inner source and the VIP, of the VIP's family).
fn mixed_addrs(real_v6: bool) -> (IpAddr, IpAddr, IpAddr, IpAddr) {
    if real_v6 {
        (LOCAL6.into(), REAL6.into(), INNER4.into(), VIP.into())
    } else {
        (LOCAL.into(), REAL.into(), INNER6.into(), VIP6.into())
    }
}

/// A check to a real of the other family than its VIP: the socket's packet [S_r → REAL] comes
/// out as one of the VIP's family [inner source → VIP] (a new IP header, TCP checksum for the
/// new pseudo-header) inside the real's tunnel of the real's family (outer source S_r).
#[test]
fn egress_translates_a_check_to_a_real_of_the_other_family() {
    let Some(mut path) = setup() else { return };
    let gue = |inner_len: usize| {
        let mut udp = vec![0, 0]; // source port: flow entropy, checked below
        udp.extend_from_slice(&6080u16.to_be_bytes());
        udp.extend_from_slice(&((inner_len + 8) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp
    };
    // (mark, real IPv6, outer protocol, tunnel header before the inner packet but GUE's)
    let cases: [(u32, bool, u8, Option<Vec<u8>>); 6] = [
        (V4IN6, true, 4, Some(vec![])),
        (GUE46, true, 17, None),
        (GRE46, true, 47, Some(vec![0, 0, 0x08, 0x00])),
        (V6IN4, false, 41, Some(vec![])),
        (GUE64, false, 17, None),
        (GRE64, false, 47, Some(vec![0, 0, 0x86, 0xdd])),
    ];
    for (mark, real_v6, proto, between) in cases {
        let what = format!("mark {mark:#x}");
        let (socket, real, inner_src, vip) = mixed_addrs(real_v6);
        let check = frame(socket, real, IPPROTO_TCP, &tcp(socket, real, SPORT, 80));
        let inner = frame_with(XLAT, inner_src, vip, IPPROTO_TCP, &tcp(inner_src, vip, SPORT, 80))
            [14..]
            .to_vec();
        let between = between.unwrap_or_else(|| gue(inner.len()));
        let (v, out) = run(&mut path, EGRESS_PROGRAM, mark, &check);
        assert_eq!(v, TC_ACT_OK, "{what}");
        assert_eq!(out[..14], check[..14], "{what}: MACs, EtherType of the real's family");
        let ip_hlen = if real_v6 { 40 } else { 20 };
        let outer = &out[14..14 + ip_hlen];
        let after = &out[14 + ip_hlen..];
        let mut between_out = after[..between.len()].to_vec();
        if proto == 17 {
            assert_eq!(between_out[0] & 0xc0, 0xc0, "{what}: GUE source port from the flow");
            between_out[..2].copy_from_slice(&[0, 0]);
        }
        assert_eq!(between_out, between, "{what}: tunnel header");
        let got = &after[between.len()..];
        assert_eq!(got, &inner[..], "{what}: inner packet of the VIP's family to the VIP");
        // The inner TCP checksum recomputed from scratch, and the IPv4 header's.
        let l4 = &got[if vip.is_ipv4() { 20 } else { 40 }..];
        assert_eq!(l4_sum(inner_src, vip, IPPROTO_TCP, l4), 0, "{what}: inner TCP checksum");
        if vip.is_ipv4() {
            assert_eq!(checksum(&got[..20]), 0, "{what}: inner IPv4 header checksum");
        }
        let outer_len = ip_hlen + between.len() + inner.len();
        if real_v6 {
            assert_eq!(outer[0] >> 4, 6, "{what}");
            assert_eq!(usize::from(u16::from_be_bytes([outer[4], outer[5]])), outer_len - 40);
            assert_eq!((outer[6], outer[7]), (proto, 64), "{what}: next header, hop limit");
            assert_eq!(outer[8..24], LOCAL6.octets(), "{what}: outer source: the check's");
            assert_eq!(outer[24..40], REAL6.octets(), "{what}: outer destination: the real");
        } else {
            let mut expected = packet::ipv4(LOCAL, REAL, proto, XLAT, &[]);
            expected[2..4].copy_from_slice(&(outer_len as u16).to_be_bytes());
            expected[10..12].copy_from_slice(&[0, 0]);
            let sum = checksum(&expected);
            expected[10..12].copy_from_slice(&sum.to_be_bytes());
            assert_eq!(outer, &expected[..], "{what}: outer IPv4 header");
        }
    }
    // What a translation cannot carry is dropped, never sent to the real's own address: a UDP
    // datagram without checksum (IPv6 needs one), a fragment, another destination.
    let (socket, real, ..) = mixed_addrs(false);
    let mut no_sum = packet::udp(SPORT, 53, b"ping");
    no_sum[6..8].copy_from_slice(&[0, 0]);
    let fragment = packet::V4Opts { frag: 0x2000, ..PLAIN };
    let other: IpAddr = Ipv4Addr::new(198, 51, 100, 99).into();
    for (i, f) in [
        frame(socket, real, IPPROTO_UDP, &no_sum),
        frame_with(fragment, socket, real, IPPROTO_TCP, &tcp(socket, real, SPORT, 80)),
        frame(socket, other, IPPROTO_TCP, &tcp(socket, other, SPORT, 80)),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(run(&mut path, EGRESS_PROGRAM, V6IN4, &f).0, TC_ACT_SHOT, "case {i}");
    }
    // A mixed target's mark on a packet of the VIP's family (not the real's): dropped.
    let f = syn(true);
    assert_eq!(run(&mut path, EGRESS_PROGRAM, V6IN4, &f).0, TC_ACT_SHOT);
}

/// The real's reply to a translated check comes straight back in the VIP's family [VIP → inner
/// source]; it is translated back into the real's [REAL → S_r] for the check's socket. ICMP
/// errors about a translated check are left as they are (not translated).
#[test]
fn ingress_translates_a_reply_back_to_the_reals_family() {
    let Some(mut path) = setup() else { return };
    for (i, (mark, real_v6, proto)) in [
        (V4IN6, true, IPPROTO_TCP),
        (GUE46, true, IPPROTO_UDP),
        (V6IN4, false, IPPROTO_TCP),
        (GRE64, false, IPPROTO_UDP),
    ]
    .into_iter()
    .enumerate()
    {
        let what = format!("mark {mark:#x} proto {proto}");
        let (socket, real, inner_src, vip) = mixed_addrs(real_v6);
        let sport = SPORT + 500 + i as u16;
        let segment = |src, dst, sport, dport| match proto {
            IPPROTO_TCP => tcp(src, dst, sport, dport),
            _ => summed(src, dst, IPPROTO_UDP, packet::udp(sport, dport, b"ping")),
        };
        let check = frame(socket, real, proto, &segment(socket, real, sport, 53));
        assert_eq!(run(&mut path, EGRESS_PROGRAM, mark, &check).0, TC_ACT_OK, "{what}");
        let reply = frame(vip, inner_src, proto, &segment(vip, inner_src, 53, sport));
        let (v, got) = run(&mut path, INGRESS_PROGRAM, 0, &reply);
        assert_eq!(v, TC_ACT_OK, "{what}");
        let o = if real_v6 { PLAIN } else { XLAT };
        let expected = frame_with(o, real, socket, proto, &segment(real, socket, 53, sport));
        assert_eq!(got, expected, "{what}: from the real to the socket, in the real's family");
        let l4 = &got[14 + if real_v6 { 40 } else { 20 }..];
        assert_eq!(l4_sum(real, socket, proto, l4), 0, "{what}: checksum recomputed");
        // Another flow (port): untouched.
        let other = frame(vip, inner_src, proto, &segment(vip, inner_src, 53, sport + 1000));
        assert_eq!(run(&mut path, INGRESS_PROGRAM, 0, &other), (TC_ACT_OK, other), "{what}");
        // The real's port unreachable about the translated check: untouched.
        let sent = frame_with(XLAT, inner_src, vip, proto, &segment(inner_src, vip, sport, 53));
        let unreachable = if vip.is_ipv4() { (3, 3) } else { (1, 4) };
        let error = icmp_error(vip, inner_src, unreachable, &sent[14..]);
        assert_eq!(run(&mut path, INGRESS_PROGRAM, 0, &error), (TC_ACT_OK, error), "{what}");
    }
}

/// The probe programs pass the verifier when the agent lacks CAP_PERFMON (and CAP_SYS_ADMIN):
/// Spectre hardening, no variable packet offsets; a translated check and its reply still work.
#[test]
fn translates_without_cap_perfmon() {
    if !require_root("probe programs without CAP_PERFMON") {
        return;
    }
    private_netns();
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    crate::testutil::drop_effective_caps(&[CAP_SYS_ADMIN, CAP_PERFMON]);
    let mut path = load();
    let (socket, real, inner_src, vip) = mixed_addrs(false);
    let check = frame(socket, real, IPPROTO_TCP, &tcp(socket, real, SPORT, 80));
    let (v, out) = run(&mut path, EGRESS_PROGRAM, V6IN4, &check);
    assert_eq!(v, TC_ACT_OK);
    let inner = frame(inner_src, vip, IPPROTO_TCP, &tcp(inner_src, vip, SPORT, 80));
    assert_eq!(out[14 + 20..], inner[14..], "IPv6 in IPv4: the translated check inside");
    let reply = frame(vip, inner_src, IPPROTO_TCP, &tcp(vip, inner_src, 80, SPORT));
    let back = frame_with(XLAT, real, socket, IPPROTO_TCP, &tcp(real, socket, 80, SPORT));
    assert_eq!(run(&mut path, INGRESS_PROGRAM, 0, &reply), (TC_ACT_OK, back));
}
