//! BPF_PROG_TEST_RUN fixtures: packet in → expected verdict and packet out, run against the real
//! program with maps programmed by `XdpDataplane::apply`. Each test runs in a private network
//! namespace (its `lo`, ifindex 1, is the ingress interface of test runs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{
    maps::{HashMap as BpfHashMap, PerCpuArray},
    programs::{TestRun as _, TestRunOptions},
};
use lb_common::{
    Addr, Binding, FlowKey, IPPROTO_TCP, IPPROTO_UDP, addr_v4, addr_v6, event, flow_hash,
    map_names, ports_word, prefix_mask,
};

use lb_test_support::packet::{self, PLAIN, V4Opts, checksum};

use super::{XdpDataplane, XdpLimits, XdpModeSetting, addr_words};
use crate::{
    config::Protocol,
    dataplane::Dataplane as _,
    desired::{Desired, RealDesired, RealState, ServiceDesired},
    fixture::{self, IFACE_MAC, VIP, VIP6, rebuild_ring},
    net::Mac,
    testutil::{private_netns, require_root},
};

mod fast_path;
mod ring_width;
mod tunnel;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 7);
const SEED: u32 = lb_common::DEFAULT_HASH_SEED;
const SMALL_TABLE: u32 = 4093;

/// A real on port 0 (`service` gives it the service's port).
fn real(address: IpAddr, weight: u32, state: RealState) -> RealDesired {
    fixture::real(address, 0, weight, state)
}

/// A real on port 0 (`service` gives it the service's port).
fn r4(last: u8, weight: u32) -> RealDesired {
    fixture::r4(last, 0, weight)
}

/// A service as `desired_state` would build it (same Maglev table construction).
fn service(
    vip: IpAddr,
    port: u16,
    protocol: Protocol,
    mut reals: Vec<RealDesired>,
) -> ServiceDesired {
    for r in &mut reals {
        r.port = port;
    }
    fixture::service(vip, port, protocol, reals, SMALL_TABLE)
}

const V4: IpAddr = IpAddr::V4(VIP);
const V6: IpAddr = IpAddr::V6(VIP6);

/// `fixture::xdp_services` (see there what each index is) on `lo`.
fn desired() -> Desired {
    fixture::desired(fixture::xdp_services(SMALL_TABLE), vec![])
}

// ---- packet building ----------------------------------------------------------------------

fn eth(ether_type: u16) -> Vec<u8> {
    packet::eth(IFACE_MAC, ROUTER_MAC, ether_type)
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, o: V4Opts, payload: &[u8]) -> Vec<u8> {
    [eth(0x0800), packet::ipv4(src, dst, proto, o, payload)].concat()
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    [eth(0x86dd), packet::ipv6(src, dst, next, payload)].concat()
}

fn tcp_flags(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    packet::tcp(sport, dport, flags, b"hello")
}

fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    tcp_flags(sport, dport, 0x02)
}

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    packet::udp(sport, dport, b"query")
}

fn icmp_echo(kind: u8) -> Vec<u8> {
    let mut h = vec![kind, 0, 0, 0, 0x12, 0x34, 0, 1];
    h.extend_from_slice(b"ping-data");
    h
}

fn v4_tcp(sport: u16, dport: u16) -> Vec<u8> {
    ipv4(CLIENT, VIP, IPPROTO_TCP, PLAIN, &tcp(sport, dport))
}

/// A later segment of a connection (ACK): it follows the flow table, where a SYN is picked anew.
fn v4_ack(sport: u16, dport: u16) -> Vec<u8> {
    ipv4(CLIENT, VIP, IPPROTO_TCP, PLAIN, &tcp_flags(sport, dport, 0x10))
}

fn v6_tcp(sport: u16, dport: u16) -> Vec<u8> {
    ipv6(CLIENT6, VIP6, IPPROTO_TCP, &tcp(sport, dport))
}

/// ICMPv4 echo with a valid checksum.
fn v4_ping() -> Vec<u8> {
    let mut icmp = icmp_echo(8);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(CLIENT, VIP, 1, PLAIN, &icmp)
}

/// ICMPv6 checksum over the pseudo-header.
fn icmp6_checksum(src: Ipv6Addr, dst: Ipv6Addr, body: &[u8]) -> u16 {
    let mut p = Vec::new();
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&(body.len() as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 58]);
    p.extend_from_slice(body);
    checksum(&p)
}

fn v6_ping() -> Vec<u8> {
    let mut icmp = icmp_echo(128);
    let c = icmp6_checksum(CLIENT6, VIP6, &icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv6(CLIENT6, VIP6, 58, &icmp)
}

/// "Fragmentation needed" from a router, quoting a reply a real sent from VIP:vport to
/// CLIENT:cport.
fn v4_frag_needed(cport: u16, vport: u16) -> Vec<u8> {
    let quoted = ipv4(VIP, CLIENT, IPPROTO_TCP, PLAIN, &tcp_flags(vport, cport, 0x10));
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0xdc];
    icmp.extend_from_slice(&quoted[14..14 + 20 + 8]);
    ipv4(Ipv4Addr::new(203, 0, 113, 1), VIP, 1, PLAIN, &icmp)
}

fn v6_too_big(cport: u16, vport: u16) -> Vec<u8> {
    let quoted = ipv6(VIP6, CLIENT6, IPPROTO_TCP, &tcp_flags(vport, cport, 0x10));
    let mut icmp = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00];
    icmp.extend_from_slice(&quoted[14..14 + 40 + 8]);
    ipv6("2001:db8:ffff::1".parse().unwrap_or(CLIENT6), VIP6, 58, &icmp)
}

/// `frame` addressed to another destination MAC.
fn to_mac(mut frame: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    frame[..6].copy_from_slice(&mac);
    frame
}

/// `frame` with a VLAN tag (`tpid` 0x8100: 802.1Q, 0x88a8: 802.1ad) of VLAN 7 after the MACs.
fn tagged(frame: &[u8], tpid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&7u16.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// `frame` (IPv4) with its total length field set to `tot_len`.
fn with_tot_len(mut frame: Vec<u8>, tot_len: u16) -> Vec<u8> {
    frame[16..18].copy_from_slice(&tot_len.to_be_bytes());
    frame
}

/// `frame` (IPv6) with its payload length field set to `len`.
fn with_payload_len(mut frame: Vec<u8>, len: u16) -> Vec<u8> {
    frame[18..20].copy_from_slice(&len.to_be_bytes());
    frame
}

const BROADCAST: [u8; 6] = [0xff; 6];
const MULTICAST: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12];
const OTHER_HOST: [u8; 6] = [0x02, 0, 0, 0, 0, 0xe1];
/// The VRRP virtual router MAC of VRID 51 (IPv4; IPv6 uses 00:00:5e:00:02:VRID). lb's VRRP does
/// not use virtual MACs (`use_vmac` is refused in TOML, ignored with a notice in a keepalived
/// config), so frames to one are another router's.
const VRRP_VMAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 51];

fn v6_frag(id: u32, offset_units: u16, more: bool, payload: &[u8]) -> Vec<u8> {
    let mut fh = vec![IPPROTO_UDP, 0];
    fh.extend_from_slice(&((offset_units << 3) | u16::from(more)).to_be_bytes());
    fh.extend_from_slice(&id.to_be_bytes());
    fh.extend_from_slice(payload);
    ipv6(CLIENT6, VIP6, 44, &fh)
}

// ---- running ------------------------------------------------------------------------------

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

/// The real (last address byte) a forwarded frame was sent to.
fn sent_to(dp: &mut XdpDataplane, frame: &[u8]) -> u8 {
    let (v, out) = run(dp, frame);
    assert_eq!(v, XDP_TX, "frame was not forwarded");
    out[5]
}

fn setup_with(d: Desired) -> Option<(XdpDataplane, Desired)> {
    if !require_root("xdp fixtures") {
        return None;
    }
    private_netns();
    let limits =
        XdpLimits { max_services: 32, max_reals: 64, ring_entries: 64 * SMALL_TABLE, flows: 16384 };
    let mut dp = XdpDataplane::load(XdpModeSetting::Generic, limits).expect("load XDP program");
    dp.apply(&d).expect("apply");
    Some((dp, d))
}

fn setup() -> Option<(XdpDataplane, Desired)> {
    setup_with(desired())
}

/// The real the Maglev table picks for a flow, computed the way the program does.
fn maglev_pick(d: &Desired, svc: usize, src: IpAddr, sport: u16, dport: u16, proto: u8) -> Mac {
    let s = &d.services[svc];
    let (src, _) = addr_words(src);
    let (dst, _) = addr_words(s.key.vip);
    let h = flow_hash(&src, &dst, ports_word(sport, dport), proto, SEED);
    let ring = s.ring.entries();
    let idx = ring[(h % ring.len() as u32) as usize];
    s.reals[idx as usize].mac.expect("up reals have a MAC")
}

fn flow_key(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, proto: u8) -> FlowKey {
    let (s, family) = addr_words(src);
    let (d, _) = addr_words(dst);
    FlowKey { src: s, dst: d, ports: ports_word(sport, dport), proto, family, _pad: 0 }
}

fn flows(dp: &mut XdpDataplane) -> BpfHashMap<&mut aya::maps::MapData, FlowKey, Binding> {
    BpfHashMap::try_from(dp.ebpf.map_mut(map_names::FLOWS).expect("flows map")).expect("hash map")
}

/// Writes a flow entry as the agent's writers do (flow sync's import): its filter slot stamped
/// first, so the program may follow it (docs/fast-path.md).
fn plant(dp: &mut XdpDataplane, key: FlowKey, b: Binding) {
    let map = dp.ebpf.map(map_names::FLOW_RECENT).expect("filter map");
    let data = super::flows::dup_map(map, map_names::FLOW_RECENT).expect("dup");
    let mut filter = aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("array");
    super::flows::stamp_recent(&mut filter, &key, dp.now_secs()).expect("stamp");
    flows(dp).insert(key, b, 0).expect("plant");
}

/// The flow table's "recent entry" filter.
fn recent(
    dp: &mut XdpDataplane,
) -> aya::maps::Array<&mut aya::maps::MapData, lb_common::FlowRecent> {
    aya::maps::Array::try_from(dp.ebpf.map_mut(map_names::FLOW_RECENT).expect("filter map"))
        .expect("array")
}

/// The filter stamp of `key`'s slot.
fn recent_stamp(dp: &mut XdpDataplane, key: &FlowKey) -> u32 {
    let (index, slot) = lb_common::flow_recent_slot(key);
    recent(dp).get(&index, 0).expect("filter value").stamps[slot as usize]
}

fn event_count(dp: &XdpDataplane, index: u32) -> u64 {
    let m: PerCpuArray<_, u64> =
        PerCpuArray::try_from(dp.ebpf.map(map_names::EVENTS).expect("events")).expect("array");
    m.get(&index, 0).expect("event").iter().sum()
}

/// Expected outcome of one fixture.
enum Want {
    /// Forwarded (XDP_TX) to the real the flow hashes to: (service index, src, sport, dport, proto).
    Maglev(usize, IpAddr, u16, u16, u8),
    /// Forwarded (XDP_TX) to the real whose MAC ends in this byte.
    To(u8),
    /// Left untouched for the kernel.
    Pass,
    Drop,
}

#[test]
fn fixtures() {
    let Some((mut dp, d)) = setup() else { return };
    let c4 = IpAddr::V4(CLIENT);
    let c6 = IpAddr::V6(CLIENT6);
    let other = Ipv4Addr::new(192, 0, 2, 2);
    let mut arp = eth(0x0806);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);
    let t4 = v4_tcp(40000, 80);
    let t6 = v6_tcp(40000, 80);
    let mut hop_by_hop = vec![IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0];
    hop_by_hop.extend_from_slice(&tcp(40000, 80));
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&VIP6.octets());

    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        ("v4 tcp hit", t4.clone(), Want::Maglev(0, c4, 40000, 80, IPPROTO_TCP)),
        ("v4 tcp hit, other flow", v4_tcp(40001, 80), Want::Maglev(0, c4, 40001, 80, IPPROTO_TCP)),
        ("v4 udp hit", ipv4(CLIENT, VIP, IPPROTO_UDP, PLAIN, &udp(5353, 53)), Want::To(13)),
        ("v4 all-ports service", v4_tcp(40000, 8080), Want::To(17)),
        (
            "v4 exact port wins over all-ports",
            v4_tcp(40002, 80),
            Want::Maglev(0, c4, 40002, 80, IPPROTO_TCP),
        ),
        ("v6 tcp hit", t6.clone(), Want::Maglev(7, c6, 40000, 80, IPPROTO_TCP)),
        ("v6 udp hit", ipv6(CLIENT6, VIP6, IPPROTO_UDP, &udp(5353, 53)), Want::To(0x13)),
        ("v6 miss: port", v6_tcp(40000, 8080), Want::Pass),
        ("miss: protocol", ipv4(CLIENT, VIP, IPPROTO_UDP, PLAIN, &udp(40000, 80)), Want::Pass),
        ("miss: address", ipv4(CLIENT, other, IPPROTO_TCP, PLAIN, &tcp(40000, 80)), Want::Pass),
        (
            "vrrp",
            ipv4(
                other,
                Ipv4Addr::new(224, 0, 0, 18),
                112,
                PLAIN,
                &[0x21, 51, 100, 1, 0, 1, 0, 0, 192, 0, 2, 100],
            ),
            Want::Pass,
        ),
        ("non-ip: arp", arp, Want::Pass),
        ("truncated: ethernet only", t4[..14].to_vec(), Want::Pass),
        ("truncated: ipv4 header", t4[..14 + 12].to_vec(), Want::Pass),
        ("truncated: ipv6 header", t6[..14 + 30].to_vec(), Want::Pass),
        ("truncated: v4 no ports", t4[..14 + 20 + 2].to_vec(), Want::Pass),
        ("truncated: v6 no ports", t6[..14 + 40 + 2].to_vec(), Want::Pass),
        ("truncated: v4 tcp header to vip", t4[..14 + 20 + 8].to_vec(), Want::Drop),
        ("truncated: v6 tcp header to vip", t6[..14 + 40 + 8].to_vec(), Want::Drop),
        (
            "truncated: udp header to vip",
            ipv4(CLIENT, VIP, IPPROTO_UDP, PLAIN, &udp(1, 53))[..14 + 20 + 6].to_vec(),
            Want::Drop,
        ),
        ("truncated: icmp header to vip", v4_ping()[..14 + 20 + 4].to_vec(), Want::Pass),
        (
            "bad ip version",
            {
                let mut f = t4.clone();
                f[14] = 0x65;
                f
            },
            Want::Pass,
        ),
        (
            "bad ipv6 version",
            {
                let mut f = t6.clone();
                f[14] = 0x40;
                f
            },
            Want::Pass,
        ),
        (
            "bad ihl",
            {
                let mut f = t4.clone();
                f[14] = 0x44;
                f
            },
            Want::Pass,
        ),
        (
            "ipv4 options to vip",
            ipv4(CLIENT, VIP, IPPROTO_TCP, V4Opts { ihl: 6, ..PLAIN }, &tcp(40000, 80)),
            Want::Pass,
        ),
        ("ipv6 hop-by-hop to vip", ipv6(CLIENT6, VIP6, 0, &hop_by_hop), Want::Pass),
        ("icmp to vip, not echo", ipv4(CLIENT, VIP, 1, PLAIN, &icmp_echo(13)), Want::Pass),
        ("icmp echo to other address", ipv4(CLIENT, other, 1, PLAIN, &icmp_echo(8)), Want::Pass),
        ("icmpv6 neighbour solicitation for vip", ipv6(CLIENT6, VIP6, 58, &ns), Want::Pass),
        ("drained only real", v4_tcp(40000, 81), Want::Drop),
        ("unresolved only real", v4_tcp(40000, 82), Want::Drop),
        ("no real: sorry server", v4_tcp(40000, 83), Want::To(16)),
        ("no real, no sorry server", v4_tcp(40000, 84), Want::Drop),
        (
            "v4 frag needed to flow owner",
            v4_frag_needed(40000, 80),
            Want::Maglev(0, c4, 40000, 80, IPPROTO_TCP),
        ),
        (
            "v6 packet too big to flow owner",
            v6_too_big(40000, 80),
            Want::Maglev(7, c6, 40000, 80, IPPROTO_TCP),
        ),
        ("frag needed for unknown service", v4_frag_needed(40000, 9), Want::To(17)),
        // IP lengths must agree with the frame (issue #14 item 7).
        ("v4 tot_len beyond the frame", with_tot_len(t4.clone(), 200), Want::Drop),
        ("v4 tot_len one beyond the frame", with_tot_len(t4.clone(), 20 + 25 + 1), Want::Drop),
        ("v4 tot_len below the header", with_tot_len(t4.clone(), 19), Want::Pass),
        ("v4 tot_len zero", with_tot_len(t4.clone(), 0), Want::Pass),
        ("v4 tot_len without the tcp header", with_tot_len(t4.clone(), 20 + 8), Want::Drop),
        (
            "v4 udp tot_len beyond the frame",
            with_tot_len(ipv4(CLIENT, VIP, IPPROTO_UDP, PLAIN, &udp(5353, 53)), 100),
            Want::Drop,
        ),
        (
            "v4 ethernet padding after the packet",
            {
                let mut f = t4.clone();
                f.extend_from_slice(&[0; 10]);
                f
            },
            Want::Maglev(0, c4, 40000, 80, IPPROTO_TCP),
        ),
        ("v6 payload_len beyond the frame", with_payload_len(t6.clone(), 26), Want::Drop),
        ("v6 payload_len without the tcp header", with_payload_len(t6.clone(), 8), Want::Drop),
        ("v6 payload_len zero", with_payload_len(t6.clone(), 0), Want::Drop),
        ("v4 echo tot_len beyond the frame", with_tot_len(v4_ping(), 100), Want::Drop),
        ("v6 echo payload_len beyond the frame", with_payload_len(v6_ping(), 100), Want::Drop),
        (
            "v4 frag needed tot_len beyond the frame",
            with_tot_len(v4_frag_needed(40000, 80), 200),
            Want::Drop,
        ),
        (
            "v4 later fragment tot_len beyond the frame",
            with_tot_len(
                ipv4(CLIENT, VIP, IPPROTO_UDP, V4Opts { ihl: 5, frag: 185, id: 78 }, b"x"),
                100,
            ),
            Want::Drop,
        ),
        // Only frames to the ingress interface's MAC are acted on.
        ("v4 to broadcast MAC", to_mac(t4.clone(), BROADCAST), Want::Pass),
        ("v4 to multicast MAC", to_mac(t4.clone(), MULTICAST), Want::Pass),
        ("v4 to another host's MAC", to_mac(t4.clone(), OTHER_HOST), Want::Pass),
        ("v4 to a VRRP virtual MAC", to_mac(t4.clone(), VRRP_VMAC), Want::Pass),
        ("v6 to broadcast MAC", to_mac(t6.clone(), BROADCAST), Want::Pass),
        ("v6 to multicast MAC", to_mac(t6.clone(), [0x33, 0x33, 0, 0, 0, 1]), Want::Pass),
        ("v6 to another host's MAC", to_mac(t6.clone(), OTHER_HOST), Want::Pass),
        (
            "v4 udp to broadcast MAC",
            to_mac(ipv4(CLIENT, VIP, IPPROTO_UDP, PLAIN, &udp(1, 53)), BROADCAST),
            Want::Pass,
        ),
        ("v4 all-ports to another host's MAC", to_mac(v4_tcp(40000, 8080), OTHER_HOST), Want::Pass),
        (
            "v4 truncated tcp to another host's MAC",
            to_mac(t4[..14 + 20 + 8].to_vec(), OTHER_HOST),
            Want::Pass,
        ),
        ("sorry server to broadcast MAC", to_mac(v4_tcp(40000, 83), BROADCAST), Want::Pass),
        ("v4 echo to broadcast MAC", to_mac(v4_ping(), BROADCAST), Want::Pass),
        ("v4 echo to another host's MAC", to_mac(v4_ping(), OTHER_HOST), Want::Pass),
        ("v6 echo to multicast MAC", to_mac(v6_ping(), [0x33, 0x33, 0, 0, 0, 1]), Want::Pass),
        (
            "v4 frag needed to broadcast MAC",
            to_mac(v4_frag_needed(40000, 80), BROADCAST),
            Want::Pass,
        ),
        ("v6 too big to another host's MAC", to_mac(v6_too_big(40000, 80), OTHER_HOST), Want::Pass),
        (
            "v4 first fragment to another host's MAC",
            to_mac(
                ipv4(
                    CLIENT,
                    VIP,
                    IPPROTO_UDP,
                    V4Opts { ihl: 5, frag: 0x2000, id: 79 },
                    &udp(1, 53),
                ),
                OTHER_HOST,
            ),
            Want::Pass,
        ),
        (
            "v4 later fragment to broadcast MAC",
            to_mac(
                ipv4(CLIENT, VIP, IPPROTO_UDP, V4Opts { ihl: 5, frag: 185, id: 79 }, b"x"),
                BROADCAST,
            ),
            Want::Pass,
        ),
        (
            "v6 later fragment to another host's MAC",
            to_mac(v6_frag(97, 100, false, b"tail"), OTHER_HOST),
            Want::Pass,
        ),
        // VLAN-tagged frames on the interface the program is attached to are the kernel's.
        ("802.1Q tagged v4 to vip", tagged(&t4, 0x8100), Want::Pass),
        ("802.1Q tagged v6 to vip", tagged(&t6, 0x8100), Want::Pass),
        ("802.1ad tagged v4 to vip", tagged(&t4, 0x88a8), Want::Pass),
        ("802.1ad + 802.1Q tagged v4 to vip", tagged(&tagged(&t4, 0x8100), 0x88a8), Want::Pass),
        ("802.1Q tagged echo to vip", tagged(&v4_ping(), 0x8100), Want::Pass),
    ];
    for (name, frame, want) in cases {
        let (verdict, out) = run(&mut dp, &frame);
        let to = |mac: [u8; 6]| {
            assert_eq!(verdict, XDP_TX, "{name}: verdict");
            assert_eq!(&out[0..6], &mac, "{name}: destination MAC is the real's");
            assert_eq!(&out[6..12], &IFACE_MAC, "{name}: source MAC is the interface's");
            assert_eq!(&out[12..], &frame[12..], "{name}: IP packet untouched (DR)");
        };
        match want {
            Want::Pass => {
                assert_eq!(verdict, XDP_PASS, "{name}: verdict");
                assert_eq!(out, frame, "{name}: frame must be untouched");
            }
            Want::Drop => assert_eq!(verdict, XDP_DROP, "{name}: verdict"),
            Want::Maglev(svc, src, sport, dport, proto) => {
                to(maglev_pick(&d, svc, src, sport, dport, proto).0)
            }
            Want::To(last) => to([0x52, 0x54, 0, 0, 0, last]),
        }
    }
}

/// The global counter named `name`, summed over CPUs.
fn reason_count(dp: &mut XdpDataplane, name: &str) -> u64 {
    let c = dp.counters().expect("counters");
    c.global.iter().find(|(n, _)| *n == name).map(|(_, c)| c.packets).expect("reason name")
}

/// Frames the program does not act on for their destination MAC, VLAN tag or IP length are each
/// counted under their own reason (and only there).
#[test]
fn frames_not_acted_on_are_counted_by_reason() {
    let Some((mut dp, _)) = setup() else { return };
    let t4 = v4_tcp(40000, 80);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("pass_mac_broadcast", to_mac(t4.clone(), BROADCAST)),
        ("pass_mac_multicast", to_mac(t4.clone(), MULTICAST)),
        ("pass_mac_other_host", to_mac(t4.clone(), OTHER_HOST)),
        ("pass_mac_other_host", to_mac(v4_ping(), VRRP_VMAC)),
        ("pass_vlan", tagged(&t4, 0x8100)),
        ("pass_vlan", tagged(&t4, 0x88a8)),
        ("drop_malformed", with_tot_len(t4.clone(), 200)),
        ("drop_malformed", with_payload_len(v6_tcp(1, 80), 200)),
        ("pass_malformed", with_tot_len(t4.clone(), 19)),
    ];
    for (name, frame) in cases {
        let before: Vec<u64> =
            lb_common::reason::NAMES.iter().map(|n| reason_count(&mut dp, n)).collect();
        let (verdict, _) = run(&mut dp, &frame);
        let want = if name.starts_with("drop") { XDP_DROP } else { XDP_PASS };
        assert_eq!(verdict, want, "{name}: verdict");
        for (i, n) in lb_common::reason::NAMES.iter().enumerate() {
            let delta = reason_count(&mut dp, n) - before[i];
            assert_eq!(delta, u64::from(*n == name), "{name}: counter {n} moved by {delta}");
        }
    }
}

/// The MAC the program acts on is the ingress interface's own, per interface: it follows a change
/// of the interface's MAC, and another interface's MAC does not count.
#[test]
fn the_accepted_mac_is_the_ingress_interfaces_and_follows_it() {
    let Some((mut dp, mut d)) = setup() else { return };
    let frame = v4_tcp(40000, 80);
    assert_eq!(run(&mut dp, &frame).0, XDP_TX, "to the interface's MAC");
    let new_mac = [0x02, 0, 0, 0, 0, 0x77];
    d.interfaces[0].mac = Mac(new_mac);
    dp.apply(&d).expect("apply MAC change");
    assert_eq!(run(&mut dp, &frame), (XDP_PASS, frame.clone()), "to the old MAC");
    assert_eq!(run(&mut dp, &to_mac(frame.clone(), new_mac)).0, XDP_TX, "to the new MAC");

    // A redirect target's MAC is not accepted on the ingress interface (ifindex 1).
    let status = std::process::Command::new("ip")
        .args(["link", "add", "lbmac0", "type", "veth", "peer", "name", "lbmac1"])
        .status()
        .expect("ip link add");
    assert!(status.success(), "creating a veth pair in the private namespace");
    let veth = crate::net::iface::lookup("lbmac0").expect("veth interface");
    d.tx_interfaces.push(veth.clone());
    dp.apply(&d).expect("apply");
    assert_eq!(
        run(&mut dp, &to_mac(frame.clone(), veth.mac.0)).0,
        XDP_PASS,
        "another interface's MAC"
    );
}

#[test]
fn icmp_echo_is_answered_with_valid_checksums() {
    let Some((mut dp, _)) = setup() else { return };
    let ping = v4_ping();
    let (v, out) = run(&mut dp, &ping);
    assert_eq!(v, XDP_TX);
    assert_eq!(&out[0..6], &ROUTER_MAC, "back to the sender");
    assert_eq!(&out[6..12], &IFACE_MAC);
    assert_eq!(&out[14 + 12..14 + 16], &VIP.octets(), "from the VIP");
    assert_eq!(&out[14 + 16..14 + 20], &CLIENT.octets(), "to the client");
    assert_eq!(checksum(&out[14..34]), 0, "IPv4 header checksum");
    assert_eq!(out[34], 0, "echo reply");
    assert_eq!(checksum(&out[34..]), 0, "ICMP checksum");
    assert_eq!(&out[38..], &ping[38..], "identifier, sequence and data echoed");

    let ping6 = v6_ping();
    let (v, out) = run(&mut dp, &ping6);
    assert_eq!(v, XDP_TX);
    assert_eq!(&out[0..6], &ROUTER_MAC);
    assert_eq!(out[14 + 40], 129, "echo reply");
    assert_eq!(icmp6_checksum(VIP6, CLIENT6, &out[54..]), 0, "ICMPv6 checksum");
    assert_eq!(&out[58..], &ping6[58..]);

    // With icmp_echo off, echo requests go to the kernel.
    let mut d = desired();
    d.globals.icmp_echo = false;
    dp.apply(&d).expect("apply");
    assert_eq!(run(&mut dp, &ping), (XDP_PASS, ping.clone()));
}

#[test]
fn weights_split_flows_and_counters_add_up() {
    let Some((mut dp, d)) = setup() else { return };
    let (mut to11, mut to12) = (0u32, 0u32);
    let n = 3000u16;
    let mut bytes = 0u64;
    for sport in 10000..10000 + n {
        let frame = v4_tcp(sport, 80);
        bytes += frame.len() as u64;
        match sent_to(&mut dp, &frame) {
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
    assert_eq!(per_real(11).new_flows, u64::from(to11));
    assert_eq!(per_real(12).packets, u64::from(to12));
    assert_eq!(c.services[&key].packets, u64::from(n));
    assert_eq!(c.services[&key].new_flows, u64::from(n));
    assert_eq!(c.services[&key].bytes, bytes);
    let tx = c.global.iter().find(|(name, _)| *name == "tx").expect("tx counter").1;
    assert_eq!(tx.packets, u64::from(n));
    // Second packet of every flow: flow-table hits, no new flows.
    for sport in 10000..10000 + n {
        sent_to(&mut dp, &v4_ack(sport, 80));
    }
    let c = dp.counters().expect("counters");
    assert_eq!(c.services[&key].new_flows, u64::from(n));
    assert_eq!(
        c.events.iter().find(|(e, _)| *e == "flow_hit").map(|(_, v)| *v),
        Some(u64::from(n))
    );
}

/// Flows stay on their real when the table changes (reweight, drain, new real); new flows follow
/// the new table; a flow whose real goes down moves.
#[test]
fn flow_table_keeps_established_flows() {
    let Some((mut dp, mut d)) = setup() else { return };
    let before: Vec<u8> = (20000..20400u16).map(|p| sent_to(&mut dp, &v4_tcp(p, 80))).collect();
    // Reweight 1:2 → 5:1 and add a third real: many flows' Maglev slot changes.
    d.services[0].reals = vec![r4(11, 5), r4(12, 1), r4(19, 1)];
    for r in &mut d.services[0].reals {
        r.port = 80;
    }
    rebuild_ring(&mut d.services[0]);
    dp.apply(&d).expect("apply");
    let moved_by_table = (20000..20400u16)
        .filter(|p| {
            maglev_pick(&d, 0, IpAddr::V4(CLIENT), *p, 80, IPPROTO_TCP).0[5]
                != before[(p - 20000) as usize]
        })
        .count();
    assert!(
        moved_by_table > 50,
        "the change must move many slots to test anything ({moved_by_table})"
    );
    for (i, p) in (20000..20400u16).enumerate() {
        assert_eq!(sent_to(&mut dp, &v4_ack(p, 80)), before[i], "established flow {p} moved");
    }
    // New flows follow the new table.
    for p in 30000..30200u16 {
        let want = maglev_pick(&d, 0, IpAddr::V4(CLIENT), p, 80, IPPROTO_TCP).0[5];
        assert_eq!(sent_to(&mut dp, &v4_tcp(p, 80)), want, "new flow {p}");
    }
    // Drain .11: its established flows continue, new flows avoid it.
    d.services[0].reals[0] = RealDesired { port: 80, ..r4(11, 0) };
    rebuild_ring(&mut d.services[0]);
    dp.apply(&d).expect("apply drain");
    for (i, p) in (20000..20400u16).enumerate() {
        assert_eq!(sent_to(&mut dp, &v4_ack(p, 80)), before[i], "drained real keeps flow {p}");
    }
    for p in 40000..40300u16 {
        assert_ne!(sent_to(&mut dp, &v4_tcp(p, 80)), 11, "new flow {p} on a drained real");
    }
    // .11 goes down (unresolved): its flows are re-picked onto live reals.
    d.services[0].reals[0].state = RealState::Unresolved;
    d.services[0].reals[0].mac = None;
    d.services[0].reals[0].keeps_flows = false;
    dp.apply(&d).expect("apply down");
    let repick_before = event_count(&dp, event::FLOW_REPICK);
    for p in 20000..20400u16 {
        assert_ne!(sent_to(&mut dp, &v4_ack(p, 80)), 11, "flow {p} still on a down real");
    }
    let moved = before.iter().filter(|r| **r == 11).count() as u64;
    assert_eq!(event_count(&dp, event::FLOW_REPICK) - repick_before, moved);
}

/// `lb flows`: a listing shows what the program forwards by, keeps the origin of an entry
/// installed from a peer (the program refreshes only `atime`), and stays bounded by its limit
/// and time budget on a full table.
#[test]
fn flow_listing_follows_the_table_and_is_bounded() {
    let Some((mut dp, d)) = setup() else { return };
    let vip = IpAddr::V4(VIP);
    let svc = d.services[0].key;
    let target = std::net::SocketAddr::new(vip, svc.port);
    sent_to(&mut dp, &v4_tcp(20000, 80));
    // An entry as a sync message installs it: to .12, whatever the table says.
    let (id, generation) = {
        let slot = &dp.services[&svc].reals[&(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 12)), 80)];
        (slot.id, slot.value.generation)
    };
    let synced = flow_key(IpAddr::V4(CLIENT), vip, 20001, 80, IPPROTO_TCP);
    // Idle for a while, not past the TCP entry timeout (which would end it).
    let atime = dp.now_secs().wrapping_sub(5);
    let b = Binding { real: id, generation, atime, flags: lb_common::BINDING_F_SYNC };
    plant(&mut dp, synced, b);
    assert_eq!(sent_to(&mut dp, &v4_ack(20001, 80)), 12, "a synced entry is followed");
    let kept = flows(&mut dp).get(&synced, 0).expect("entry");
    assert_eq!(kept.flags, lb_common::BINDING_F_SYNC, "the program keeps the origin");
    assert_ne!(kept.atime, atime, "and refreshes the last use");

    let source = dp.flow_source().expect("source").expect("XDP has a flow table");
    let budget = std::time::Duration::from_secs(2);
    let view = source.read(Some(target), 100, budget);
    let mut got: Vec<(String, String)> =
        view.flows.iter().map(|f| (f.client.clone(), f.origin.clone())).collect();
    got.sort();
    let client = |port| format!("{CLIENT}:{port}");
    assert_eq!(got, [(client(20000), "local".into()), (client(20001), "sync".into())]);
    assert_eq!(view.flows[0].vip, target.to_string());
    assert!(!view.truncated);
    assert!(
        source.read(Some("192.0.2.100:443".parse().expect("addr")), 100, budget).flows.is_empty()
    );

    // A full table: the limit ends the walk at once, and a filter that matches nothing ends at
    // the time budget, not after the whole table.
    let n = 16384u32;
    {
        let mut map = flows(&mut dp);
        for i in 0..n {
            let c = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, (i >> 16) as u16, i as u16);
            let k = flow_key(IpAddr::V6(c), V6, 1, 80, IPPROTO_TCP);
            map.insert(k, Binding { real: id, generation, atime: 0, flags: 0 }, 0).expect("fill");
        }
    }
    let view = source.read(None, 10, budget);
    assert_eq!((view.flows.len(), view.truncated), (10, true));
    let start = std::time::Instant::now();
    let none = "192.0.2.100:81".parse().expect("addr");
    let view = source.read(Some(none), 10, std::time::Duration::ZERO);
    assert!(view.truncated && view.flows.is_empty(), "stopped by the budget");
    assert!(start.elapsed() < std::time::Duration::from_millis(500), "{:?}", start.elapsed());
    let view = source.read(Some(none), 10, budget);
    assert!(!view.truncated, "a whole walk within the budget is complete");
}

/// A standby service (its VRRP instance is BACKUP) gets its reals and Maglev table written but
/// no services-map entry: its traffic is the kernel's, and taking over writes no table entry.
#[test]
fn a_standby_service_is_staged_and_taken_over_without_writing_its_table() {
    let mut d = desired();
    d.services.retain(|s| s.key.port != 0);
    d.services[0].active = false;
    let Some((mut dp, mut d)) = setup_with(d) else { return };
    let staged = dp.ring_writes();
    assert!(staged >= u64::from(SMALL_TABLE), "the standby's table was not written ({staged})");
    let frame = v4_tcp(40000, 80);
    assert_eq!(run(&mut dp, &frame), (XDP_PASS, frame.clone()), "standby forwarded");

    d.services[0].active = true;
    dp.apply(&d).expect("take over");
    assert_eq!(dp.ring_writes(), staged, "the takeover rewrote table entries");
    let want = maglev_pick(&d, 0, IpAddr::V4(CLIENT), 40000, 80, IPPROTO_TCP).0[5];
    assert_eq!(sent_to(&mut dp, &frame), want);

    d.services[0].active = false;
    dp.apply(&d).expect("back to standby");
    assert_eq!(run(&mut dp, &frame).0, XDP_PASS, "standby again, still forwarded");
    assert_eq!(dp.ring_writes(), staged);
}

/// A retransmitted SYN follows its flow's entry after a table change, as later segments do (Katran
/// re-picks SYNs; here the lookup is kept, see `choose` in the program).
#[test]
fn retransmitted_syn_and_later_segments_follow_the_entry() {
    let Some((mut dp, mut d)) = setup() else { return };
    let c4 = IpAddr::V4(CLIENT);
    let ports: Vec<u16> = (50000..50400).collect();
    let first: Vec<u8> = ports.iter().map(|p| sent_to(&mut dp, &v4_tcp(*p, 80))).collect();
    d.services[0].reals = vec![r4(11, 5), r4(12, 1), r4(19, 1)];
    for r in &mut d.services[0].reals {
        r.port = 80;
    }
    rebuild_ring(&mut d.services[0]);
    dp.apply(&d).expect("apply");
    let pick = |p: u16| maglev_pick(&d, 0, c4, p, 80, IPPROTO_TCP).0[5];
    let moved: Vec<(u16, u8)> =
        ports.iter().zip(&first).filter(|(p, r)| pick(**p) != **r).map(|(p, r)| (*p, *r)).collect();
    assert!(moved.len() > 50, "the change must move slots to test anything ({})", moved.len());
    let (hits, new) = (event_count(&dp, event::FLOW_HIT), event_count(&dp, event::FLOW_NEW));
    for (p, old) in &moved {
        assert_eq!(sent_to(&mut dp, &v4_tcp(*p, 80)), *old, "retransmitted SYN of flow {p}");
        assert_eq!(sent_to(&mut dp, &v4_ack(*p, 80)), *old, "ACK of flow {p}");
    }
    let n = moved.len() as u64;
    assert_eq!(event_count(&dp, event::FLOW_HIT) - hits, 2 * n, "every segment hits");
    assert_eq!(event_count(&dp, event::FLOW_NEW) - new, 0, "no new flow");
}

#[test]
fn rst_creates_no_flow_entry_and_syn_does() {
    let Some((mut dp, _)) = setup() else { return };
    let c4 = IpAddr::V4(CLIENT);
    sent_to(&mut dp, &ipv4(CLIENT, VIP, IPPROTO_TCP, PLAIN, &tcp_flags(41000, 80, 0x04)));
    assert!(
        flows(&mut dp).get(&flow_key(c4, V4, 41000, 80, IPPROTO_TCP), 0).is_err(),
        "RST created an entry"
    );
    sent_to(&mut dp, &v4_tcp(41001, 80));
    assert!(
        flows(&mut dp).get(&flow_key(c4, V4, 41001, 80, IPPROTO_TCP), 0).is_ok(),
        "SYN created no entry"
    );
    assert_eq!(event_count(&dp, event::FLOW_RST_UNTRACKED), 1);
}

#[test]
fn udp_entries_expire() {
    let Some((mut dp, mut d)) = setup() else { return };
    // Two reals on UDP/53 so an expired entry can be seen to be re-picked.
    d.services[1] = service(V4, 53, Protocol::Udp, vec![r4(13, 1), r4(18, 1)]);
    dp.apply(&d).expect("apply");
    let c4 = IpAddr::V4(CLIENT);
    let frame = |p| ipv4(CLIENT, VIP, IPPROTO_UDP, PLAIN, &udp(p, 53));
    // Find a flow, then pin its entry to the other real with an old timestamp.
    let p = 5000;
    let first = sent_to(&mut dp, &frame(p));
    let key = flow_key(c4, V4, p, 53, IPPROTO_UDP);
    let mut entry = flows(&mut dp).get(&key, 0).expect("udp flow entry");
    let other_id = {
        let slot = &dp.services[&d.services[1].key];
        let other_ip: IpAddr =
            if first == 13 { "192.0.2.18" } else { "192.0.2.13" }.parse().expect("ip");
        slot.reals[&(other_ip, 53)].id
    };
    let other_gen = dp.services[&d.services[1].key]
        .reals
        .values()
        .find(|r| r.id == other_id)
        .expect("slot")
        .value
        .generation;
    entry.real = other_id;
    entry.generation = other_gen;
    flows(&mut dp).insert(key, entry, 0).expect("pin fresh entry");
    assert_ne!(sent_to(&mut dp, &frame(p)), first, "a fresh entry is followed");
    entry.atime = entry.atime.wrapping_sub(31);
    flows(&mut dp).insert(key, entry, 0).expect("age entry");
    assert_eq!(sent_to(&mut dp, &frame(p)), first, "an entry idle past udp_timeout is not used");
    assert_eq!(event_count(&dp, event::FLOW_EXPIRED), 1);
}

#[test]
fn persistence_keeps_a_client_network_on_one_real() {
    let Some((mut dp, mut d)) = setup() else { return };
    let frame = |src: Ipv4Addr, p| ipv4(src, VIP, IPPROTO_TCP, PLAIN, &tcp(p, 85));
    let first = sent_to(&mut dp, &frame(CLIENT, 50000));
    // Other connections from the client and its /24 neighbours: same real.
    for p in 50001..50050u16 {
        assert_eq!(sent_to(&mut dp, &frame(CLIENT, p)), first, "connection {p}");
        assert_eq!(
            sent_to(&mut dp, &frame(Ipv4Addr::new(198, 51, 100, 200), p)),
            first,
            "same /24"
        );
    }
    // Changing the table does not move the persistent client.
    d.services[9].reals.push(RealDesired { port: 85, ..r4(24, 10) });
    rebuild_ring(&mut d.services[9]);
    dp.apply(&d).expect("apply");
    for p in 51000..51050u16 {
        assert_eq!(sent_to(&mut dp, &frame(CLIENT, p)), first, "after table change {p}");
    }
    assert_eq!(event_count(&dp, event::PERSIST_HIT), 2 * 49 + 50);
    // Many different /24s spread over the reals.
    let mut seen = std::collections::BTreeSet::new();
    for net in 0..64u8 {
        seen.insert(sent_to(&mut dp, &frame(Ipv4Addr::new(203, 0, net, 9), 52000)));
    }
    assert!(seen.len() >= 3, "clients of different networks spread: {seen:?}");
}

#[test]
fn source_hash_sends_all_connections_of_a_client_to_one_real() {
    let mut d = desired();
    d.services[0].source_hash = true;
    let Some((mut dp, _)) = setup_with(d) else { return };
    let first = sent_to(&mut dp, &v4_tcp(1000, 80));
    for p in 1001..1100u16 {
        assert_eq!(sent_to(&mut dp, &v4_tcp(p, 80)), first);
    }
    let mask = prefix_mask(32, 32);
    assert_eq!(mask, addr_v4([255; 4]));
}

#[test]
fn fragments_follow_their_first_fragment() {
    let Some((mut dp, _)) = setup() else { return };
    // v4: first fragment (MF, offset 0) carries the ports; later ones only the id.
    let first =
        ipv4(CLIENT, VIP, IPPROTO_UDP, V4Opts { ihl: 5, frag: 0x2000, id: 77 }, &udp(6000, 53));
    let later = ipv4(CLIENT, VIP, IPPROTO_UDP, V4Opts { ihl: 5, frag: 185, id: 77 }, b"more data");
    let stray = ipv4(CLIENT, VIP, IPPROTO_UDP, V4Opts { ihl: 5, frag: 185, id: 78 }, b"more data");
    let not_vip = ipv4(
        CLIENT,
        Ipv4Addr::new(192, 0, 2, 2),
        IPPROTO_UDP,
        V4Opts { ihl: 5, frag: 185, id: 78 },
        b"x",
    );
    assert_eq!(sent_to(&mut dp, &first), 13);
    assert_eq!(sent_to(&mut dp, &later), 13, "later fragment follows the first");
    assert_eq!(run(&mut dp, &stray).0, XDP_DROP, "later fragment of an unseen datagram");
    assert_eq!(run(&mut dp, &not_vip).0, XDP_PASS, "fragments to other addresses are the kernel's");
    // v6: the Fragment extension header.
    assert_eq!(sent_to(&mut dp, &v6_frag(99, 0, true, &udp(6000, 53))), 0x13);
    assert_eq!(sent_to(&mut dp, &v6_frag(99, 100, false, b"tail")), 0x13);
    assert_eq!(run(&mut dp, &v6_frag(98, 100, false, b"tail")).0, XDP_DROP);
    assert_eq!(event_count(&dp, event::FRAG_HIT), 2);
}

#[test]
fn syn_flood_guard_stops_inserting_above_the_threshold() {
    let mut d = desired();
    d.globals.syn_threshold = 50;
    let Some((mut dp, _)) = setup_with(d) else { return };
    for p in 1000..1200u16 {
        sent_to(&mut dp, &v4_tcp(p, 80));
    }
    let skipped = event_count(&dp, event::FLOW_GUARD_SKIP);
    // 200 new flows within a second or two on one CPU: at most 2 × 50 were inserted.
    assert!(skipped >= 100, "guard skipped only {skipped} of 200 new flows");
    assert_eq!(flows(&mut dp).keys().count() as u64, 200 - skipped);
}

/// Flow sync: with the switch on, each new flow inserted is reported once (key, real slot,
/// generation); nothing with it off, for hits, RSTs or under the SYN-flood guard; a full ring
/// buffer drops reports (counted) and every frame is still forwarded.
#[test]
fn new_flows_are_reported_with_flow_sync_on_and_bounded() {
    let Some((mut dp, mut d)) = setup() else { return };
    let mut ring = dp.take_flow_reports().expect("ring buffer");
    let drain = |ring: &mut aya::maps::RingBuf<aya::maps::MapData>| {
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            out.push(super::flows::parse_report(&item).expect("a report"));
        }
        out
    };
    sent_to(&mut dp, &v4_tcp(21000, 80));
    assert!(drain(&mut ring).is_empty(), "sync off: nothing reported");

    dp.set_flow_sync(true).expect("sync on");
    let to = sent_to(&mut dp, &v4_tcp(21001, 80));
    sent_to(&mut dp, &v4_ack(21001, 80));
    sent_to(&mut dp, &v4_ack(21000, 80));
    run(&mut dp, &ipv4(CLIENT, VIP, IPPROTO_TCP, PLAIN, &tcp_flags(21002, 80, 0x04)));
    let got = drain(&mut ring);
    assert_eq!(got.len(), 1, "one new flow, hits and a RST are not reported: {got:?}");
    let key = flow_key(IpAddr::V4(CLIENT), IpAddr::V4(VIP), 21001, 80, IPPROTO_TCP);
    assert_eq!(got[0].key, key);
    let entry = flows(&mut dp).get(&key, 0).expect("flow entry");
    assert_eq!((got[0].real, got[0].generation), (entry.real, entry.generation));
    let slot = dp.services.values().flat_map(|s| s.reals.iter()).find(|(_, r)| r.id == entry.real);
    assert_eq!(slot.map(|(k, _)| k.0), Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, to))));

    // Not read: the ring fills, later reports are dropped and counted, forwarding goes on.
    let record = size_of::<lb_common::FlowReport>() + 8;
    let fits = lb_common::sizes::NEW_FLOWS_RING as usize / record;
    let sent = fits + 200;
    for i in 0..sent {
        sent_to(&mut dp, &ipv4(CLIENT, VIP, IPPROTO_TCP, PLAIN, &tcp(30000 + i as u16, 80)));
    }
    let dropped = event_count(&dp, event::FLOW_REPORT_DROP);
    let got = drain(&mut ring).len();
    assert!(dropped >= 200, "dropped {dropped} of {sent}");
    assert_eq!(got as u64 + dropped, sent as u64, "every new flow reported or counted");

    // Above the SYN-flood guard's threshold nothing is reported. (An apply sets the switch
    // from the desired state: `[flow_sync]` written.)
    d.globals.syn_threshold = 50;
    d.flow_sync = Some(crate::desired::FlowSyncDesired {
        interface: "lo".into(),
        sync_id: 0,
        group: "224.0.0.81".parse().unwrap(),
        port: 8848,
        ttl: 1,
        max_len: 1472,
    });
    dp.apply(&d).expect("guard on");
    let skipped_before = event_count(&dp, event::FLOW_GUARD_SKIP);
    for i in 0..4000u16 {
        sent_to(&mut dp, &ipv4(CLIENT, VIP, IPPROTO_TCP, PLAIN, &tcp(10000 + i, 80)));
    }
    let skipped = event_count(&dp, event::FLOW_GUARD_SKIP) - skipped_before;
    assert!(skipped > 0, "the guard must act to test anything");
    let reported = drain(&mut ring).len() as u64;
    let dropped = event_count(&dp, event::FLOW_REPORT_DROP) - dropped;
    assert_eq!(reported + dropped + skipped, 4000, "guarded flows are not reported");

    dp.set_flow_sync(false).expect("sync off");
    sent_to(&mut dp, &v4_tcp(21003, 80));
    assert!(drain(&mut ring).is_empty(), "switched off at once");
}

#[test]
fn reals_on_another_interface_are_reached_by_redirect() {
    if !require_root("xdp redirect") {
        return;
    }
    private_netns();
    let status = std::process::Command::new("ip")
        .args(["link", "add", "lbtx0", "type", "veth", "peer", "name", "lbtx1"])
        .status()
        .expect("ip link add");
    assert!(status.success(), "creating a veth pair in the private namespace");
    let dummy = crate::net::iface::lookup("lbtx0").expect("veth interface");
    let mut d = desired();
    d.tx_interfaces.push(dummy.clone());
    d.services[1].reals[0].ifindex = Some(dummy.ifindex);
    let limits =
        XdpLimits { max_services: 32, max_reals: 64, ring_entries: 64 * SMALL_TABLE, flows: 16384 };
    let mut dp = XdpDataplane::load(XdpModeSetting::Generic, limits).expect("load");
    dp.apply(&d).expect("apply");
    let (v, out) = run(&mut dp, &ipv4(CLIENT, VIP, IPPROTO_UDP, PLAIN, &udp(5353, 53)));
    assert_eq!(v, XDP_REDIRECT);
    assert_eq!(&out[6..12], &dummy.mac.0, "source MAC of the outgoing interface");
    assert_eq!(out[5], 13);
}

/// The source MAC is kept in each real's slot: it follows a change of the interface's MAC, and a
/// real reached through an interface the dataplane was not given is not used.
#[test]
fn source_mac_follows_the_interface_and_unknown_interfaces_are_not_used() {
    let Some((mut dp, mut d)) = setup() else { return };
    let dns = ipv4(CLIENT, VIP, IPPROTO_UDP, PLAIN, &udp(5353, 53));
    let (v, out) = run(&mut dp, &dns);
    assert_eq!((v, &out[6..12]), (XDP_TX, &IFACE_MAC[..]));

    let new_mac = [0x02, 0, 0, 0, 0, 0x77];
    d.interfaces[0].mac = Mac(new_mac);
    dp.apply(&d).expect("apply MAC change");
    // Frames now come to the new MAC too.
    let dns = to_mac(dns, new_mac);
    let (v, out) = run(&mut dp, &dns);
    assert_eq!((v, &out[6..12], out[5]), (XDP_TX, &new_mac[..], 13), "after the MAC change");

    // The only real of UDP/53 now says it is reached through an interface nobody provided.
    d.services[1].reals[0].ifindex = Some(4242);
    dp.apply(&d).expect("apply unknown interface");
    assert_eq!(run(&mut dp, &dns).0, XDP_DROP, "a real without a known interface was used");
}

#[test]
fn table_change_and_removal_take_effect() {
    let Some((mut dp, mut d)) = setup() else { return };
    // A different table size moves the service to a new ring region.
    d.services[0].table_size = 251;
    rebuild_ring(&mut d.services[0]);
    dp.apply(&d).expect("apply resize");
    for p in 60000..60100u16 {
        let want = maglev_pick(&d, 0, IpAddr::V4(CLIENT), p, 80, IPPROTO_TCP).0[5];
        assert_eq!(sent_to(&mut dp, &v4_tcp(p, 80)), want);
    }
    // Applying the same state twice is a no-op.
    dp.apply(&d).expect("apply again");
    // Remove the service: its traffic goes to the all-ports service, then, without it, to the kernel.
    let frame = v4_tcp(40000, 80);
    d.services.remove(0);
    dp.apply(&d).expect("apply removal");
    assert_eq!(sent_to(&mut dp, &frame), 17);
    d.services.retain(|s| s.key.port != 0);
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
        XdpLimits { max_services: 32, max_reals: 64, ring_entries: 64 * SMALL_TABLE, flows: 16384 };
    let mut dp =
        XdpDataplane::load(XdpModeSetting::Generic, limits).expect("load without CAP_PERFMON");
    let d = desired();
    dp.apply(&d).expect("apply");
    let (verdict, out) = run(&mut dp, &v4_tcp(40000, 80));
    assert_eq!(verdict, XDP_TX);
    assert_eq!(&out[0..6], &maglev_pick(&d, 0, IpAddr::V4(CLIENT), 40000, 80, IPPROTO_TCP).0);
    assert_eq!(
        sent_to(&mut dp, &v6_tcp(1, 80)),
        maglev_pick(&d, 7, IpAddr::V6(CLIENT6), 1, 80, IPPROTO_TCP).0[5]
    );
}

#[allow(dead_code)]
fn _unused(_: Addr) -> Addr {
    addr_v6([0; 16])
}

/// A bpf filesystem mounted on a temporary folder for the test, unmounted on drop.
struct BpfFs {
    dir: std::path::PathBuf,
    /// Removes the (by then unmounted) folder after `drop` below.
    _guard: tempfile::TempDir,
}

impl BpfFs {
    fn mount(label: &str) -> Self {
        let guard = crate::testutil::scratch_dir(&format!("lb-bpffs-{label}-"));
        let dir = guard.path().to_owned();
        let c = |s: &str| std::ffi::CString::new(s).expect("cstring");
        let target = c(dir.to_str().expect("utf-8 path"));
        // SAFETY: plain mount(2) with valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(c("bpf").as_ptr(), target.as_ptr(), c("bpf").as_ptr(), 0, std::ptr::null())
        };
        assert_eq!(rc, 0, "mount bpffs: {}", std::io::Error::last_os_error());
        Self { dir, _guard: guard }
    }

    /// The agent's state file for pins in this folder: beside it (bpffs holds only pins), and
    /// removed with it, also when a test fails before its clean stop.
    fn state_file(&self) -> std::path::PathBuf {
        self.dir.with_extension("state.json")
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        if let Ok(target) = std::ffi::CString::new(self.dir.to_string_lossy().as_bytes()) {
            // SAFETY: umount2 with a valid path.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_file(self.state_file());
    }
}

fn xdp_on_lo() -> String {
    let out =
        std::process::Command::new("ip").args(["-d", "link", "show", "lo"]).output().expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Hitless restart, in both ring widths: an agent that dies leaves its pinned program, maps and
/// link forwarding; the next one takes them over — flows stay on their reals, counters continue
/// — and a clean stop removes everything. State of another layout is refused, also one whose
/// ring entries have the other width.
#[test]
fn a_killed_agent_leaves_forwarding_and_the_next_adopts_it() {
    if !require_root("pinned adoption") {
        return;
    }
    // (max_reals, one whose ring width differs)
    for (max_reals, other_width) in [(64, 70_000), (70_000, 64)] {
        private_netns();
        let limits =
            XdpLimits { max_services: 32, max_reals, ring_entries: 64 * SMALL_TABLE, flows: 16384 };
        let other = XdpLimits { max_reals: other_width, ..limits };
        assert_ne!(limits.ring_width(), other.ring_width());
        killed_agent_is_adopted(limits, other);
    }
}

fn killed_agent_is_adopted(limits: XdpLimits, other_width: XdpLimits) {
    let fs = BpfFs::mount("adopt");
    let pinning = super::Pinning { dir: fs.dir.join("lb"), state_file: fs.state_file() };
    let d = desired();
    let mut dp1 = XdpDataplane::load_pinned(XdpModeSetting::Generic, limits, Some(pinning.clone()))
        .expect("first agent");
    dp1.apply(&d).expect("apply");
    let before: Vec<u8> = (20000..20300u16).map(|p| sent_to(&mut dp1, &v4_tcp(p, 80))).collect();
    let first_prog = dp1.program_id;
    drop(dp1); // SIGKILL: nothing is detached or unpinned
    assert!(
        xdp_on_lo().contains(&format!("prog/xdp id {first_prog}")),
        "still attached: {}",
        xdp_on_lo()
    );

    // The successor runs a changed config: the table moves, established flows must not.
    let mut d2 = desired();
    d2.services[0].reals = vec![r4(11, 5), r4(12, 1), r4(19, 1)];
    for r in &mut d2.services[0].reals {
        r.port = 80;
    }
    rebuild_ring(&mut d2.services[0]);
    let mut dp2 = XdpDataplane::load_pinned(XdpModeSetting::Generic, limits, Some(pinning.clone()))
        .expect("second agent adopts");
    // The "recent entry" filter is pinned too: the entries' slots keep their stamps.
    let stamped = (20000..20300u16)
        .filter(|&p| {
            let key = flow_key(IpAddr::V4(CLIENT), IpAddr::V4(VIP), p, 80, IPPROTO_TCP);
            recent_stamp(&mut dp2, &key) != 0
        })
        .count();
    assert_eq!(stamped, 300, "filter slots kept across the restart");
    dp2.apply(&d2).expect("apply after adoption");
    assert_ne!(dp2.program_id, first_prog);
    assert!(xdp_on_lo().contains(&format!("prog/xdp id {}", dp2.program_id)), "{}", xdp_on_lo());
    for (i, p) in (20000..20300u16).enumerate() {
        assert_eq!(
            sent_to(&mut dp2, &v4_ack(p, 80)),
            before[i],
            "flow {p} moved across the restart"
        );
    }
    let c = dp2.counters().expect("counters");
    assert_eq!(
        c.services[&d2.services[0].key].packets, 600,
        "counters continue across the restart"
    );

    // A build with another layout (another flow-table size, or ring entries of the other
    // width) refuses the pinned state.
    for other in [XdpLimits { flows: 8192, ..limits }, other_width] {
        let err = XdpDataplane::load_pinned(XdpModeSetting::Generic, other, Some(pinning.clone()))
            .err()
            .expect("mismatched layout must be refused");
        assert!(err.to_string().contains("does not match this build"), "{other:?}: {err}");
    }

    // A clean stop detaches and unpins everything.
    dp2.shutdown().expect("shutdown");
    assert!(!xdp_on_lo().contains("prog/xdp"), "{}", xdp_on_lo());
    assert!(!pinning.dir.exists(), "pins removed");
    assert!(!pinning.state_file.exists(), "state removed");
}
