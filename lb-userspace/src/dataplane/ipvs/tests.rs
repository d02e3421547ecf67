//! Byte fixtures written from the `linux/ip_vs.h` layout (attribute ids, nesting, byte order) and
//! the netlink/genetlink headers, independent of the encoder they check. x86_64 is little-endian:
//! native `u16`/`u32` attributes appear byte-swapped, ports and IPv4 netmasks do not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{
    IpvsError,
    codec::{self, Reply, Request},
    model::*,
    probe,
};

const FAMILY: u16 = 0x1c;

/// Hex with whitespace and `#` comments (to the end of the line) ignored.
fn hex(s: &str) -> Vec<u8> {
    let digits: String = s
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd hex fixture");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

fn show(b: &[u8]) -> String {
    b.chunks(4)
        .map(|c| c.iter().map(|x| format!("{x:02x}")).collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

fn assert_bytes(got: &[u8], want: &[u8]) {
    assert_eq!(show(got), show(want));
}

fn vip() -> ServiceKey {
    ServiceKey::tcp(SocketAddr::new(Ipv4Addr::new(192, 0, 2, 100).into(), 80))
}

fn real(last: u8) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(192, 0, 2, last).into(), 80)
}

/// `ipvsadm --start-daemon master --mcast-interface eth1 --syncid 5 ...` as keepalived sends it.
#[test]
fn sync_daemons_start_and_stop() {
    let want = hex("
        54000000 1c00 0500 09000000 00000000  # nlmsghdr: 84 bytes, REQUEST|ACK, seq 9
        09 01 0000                            # genlmsghdr: NEW_DAEMON, version 1
        4000 0380                             # CMD_ATTR_DAEMON | NLA_F_NESTED, 64 bytes
          0800 0100 01000000                  # STATE = MASTER
          0900 0200 65746831 00000000         # MCAST_IFN \"eth1\\0\"
          0800 0300 05000000                  # SYNC_ID 5
          0600 0400 c005 0000                 # SYNC_MAXLEN 1472 (host order)
          0800 0500 e0000051                  # MCAST_GROUP 224.0.0.81
          0600 0700 9022 0000                 # MCAST_PORT 8848 (host order)
          0500 0800 01 000000                 # MCAST_TTL 1
    ");
    let d = SyncDaemon {
        role: SyncRole::Master,
        interface: "eth1".into(),
        sync_id: 5,
        max_len: 1472,
        group: Ipv4Addr::new(224, 0, 0, 81).into(),
        port: 8848,
        ttl: 1,
    };
    assert_bytes(&Request::NewDaemon(&d).encode(FAMILY, 9).unwrap(), &want);
    let v6 = SyncDaemon { role: SyncRole::Backup, group: "ff02::81".parse().unwrap(), ..d };
    let bytes = Request::NewDaemon(&v6).encode(FAMILY, 1).unwrap();
    let group6 = hex("1400 0600 ff020000 00000000 00000000 00000081");
    assert!(bytes.windows(group6.len()).any(|w| w == group6), "{}", show(&bytes));
    let want = hex("
        20000000 1c00 0500 02000000 00000000  # nlmsghdr: 32 bytes
        0a 01 0000                            # DEL_DAEMON
        0c00 0380 0800 0100 02000000          # DAEMON { STATE = BACKUP }
    ");
    assert_bytes(&Request::DelDaemon(SyncRole::Backup).encode(FAMILY, 2).unwrap(), &want);
}

#[test]
fn new_service_tcp_wrr() {
    let want = hex("
        68000000 1c00 0500 07000000 00000000  # nlmsghdr: 104 bytes, family, REQUEST|ACK, seq 7
        01 01 0000                            # genlmsghdr: NEW_SERVICE, version 1
        5400 0180                             # CMD_ATTR_SERVICE | NLA_F_NESTED, 84 bytes
          0600 0100 0200 0000                 # AF = AF_INET
          0600 0200 0600 0000                 # PROTOCOL = TCP
          1400 0300 c0000264 00000000 00000000 00000000  # ADDR 192.0.2.100 (nf_inet_addr)
          0600 0400 0050 0000                 # PORT 80, network order
          0800 0600 77727200                  # SCHED_NAME \"wrr\\0\"
          0c00 0700 00000000 ffffffff         # FLAGS {flags 0, mask ~0}
          0800 0800 00000000                  # TIMEOUT 0
          0800 0900 ffffffff                  # NETMASK 255.255.255.255
    ");
    let svc = Service::new(vip(), "wrr");
    assert_bytes(&Request::NewService(&svc).encode(FAMILY, 7).unwrap(), &want);
}

#[test]
fn set_service_fwmark_ipv6_persistent_with_pe() {
    let want = hex("
        54000000 1c00 0500 03000000 00000000  # 84 bytes, REQUEST|ACK, seq 3
        02 01 0000                            # SET_SERVICE
        4000 0180                             # SERVICE, 64 bytes
          0600 0100 0a00 0000                 # AF = AF_INET6
          0800 0500 07000000                  # FWMARK 7
          0700 0600 736800 00                 # SCHED_NAME \"sh\\0\" + 1 pad
          0800 0b00 73697000                  # PE_NAME \"sip\\0\"
          0c00 0700 09000000 ffffffff         # FLAGS PERSISTENT|SCHED1, mask ~0
          0800 0800 2c010000                  # TIMEOUT 300
          0800 0900 40000000                  # NETMASK: IPv6 takes a prefix length, 64
    ");
    let svc = Service {
        key: ServiceKey::Fwmark { family: Family::Inet6, mark: 7 },
        scheduler: "sh".into(),
        flags: ServiceFlags::PERSISTENT | ServiceFlags::SCHED1,
        timeout: 300,
        netmask: 64,
        pe_name: Some("sip".into()),
    };
    assert_bytes(&Request::SetService(&svc).encode(FAMILY, 3).unwrap(), &want);
}

#[test]
fn ipv4_persistence_netmask_is_a_network_order_mask() {
    let mut svc = Service::new(vip(), "rr");
    svc.flags = ServiceFlags::PERSISTENT;
    svc.netmask = 24;
    let bytes = Request::NewService(&svc).encode(FAMILY, 1).unwrap();
    assert_bytes(&bytes[bytes.len() - 8..], &hex("0800 0900 ffffff00"));
    svc.netmask = 0;
    let bytes = Request::NewService(&svc).encode(FAMILY, 1).unwrap();
    assert_bytes(&bytes[bytes.len() - 8..], &hex("0800 0900 00000000"));
}

#[test]
fn new_destination_route() {
    let want = hex("
        8c000000 1c00 0500 08000000 00000000  # 140 bytes, REQUEST|ACK, seq 8
        05 01 0000                            # NEW_DEST
        3000 0180                             # SERVICE (key only), 48 bytes
          0600 0100 0200 0000
          0600 0200 0600 0000
          1400 0300 c0000264 00000000 00000000 00000000
          0600 0400 0050 0000
        4800 0280                             # CMD_ATTR_DEST | NLA_F_NESTED, 72 bytes
          1400 0100 c000020b 00000000 00000000 00000000  # ADDR 192.0.2.11
          0600 0200 0050 0000                 # PORT 80
          0600 0b00 0200 0000                 # ADDR_FAMILY AF_INET
          0800 0300 03000000                  # FWD_METHOD = IP_VS_CONN_F_DROUTE
          0800 0400 02000000                  # WEIGHT 2
          0800 0500 00000000                  # U_THRESH
          0800 0600 00000000                  # L_THRESH
    ");
    let d = Destination::route(real(11), 2);
    assert_bytes(&Request::NewDestination(&vip(), &d).encode(FAMILY, 8).unwrap(), &want);
}

#[test]
fn set_destination_gue_tunnel_carries_tunnel_attributes() {
    let d = Destination {
        addr: "2001:db8::11".parse().unwrap(),
        port: 80,
        forward: Forward::Tunnel {
            encap: TunnelEncap::Gue { port: 6080 },
            csum: false,
            remote_csum: true,
        },
        weight: 5,
        upper_threshold: 100,
        lower_threshold: 10,
    };
    let bytes = Request::SetDestination(&vip(), &d).encode(FAMILY, 2).unwrap();
    assert_eq!(bytes[16], 6, "SET_DEST");
    let want_dest = hex("
        6000 0280                             # DEST, 96 bytes
          1400 0100 20010db8 00000000 00000000 00000011  # ADDR 2001:db8::11
          0600 0200 0050 0000                 # PORT 80
          0600 0b00 0a00 0000                 # ADDR_FAMILY AF_INET6
          0800 0300 02000000                  # FWD_METHOD = IP_VS_CONN_F_TUNNEL
          0800 0400 05000000                  # WEIGHT 5
          0800 0500 64000000                  # U_THRESH 100
          0800 0600 0a000000                  # L_THRESH 10
          0500 0d00 01 000000                 # TUN_TYPE GUE (u8) + 3 pad
          0600 0e00 17c0 0000                 # TUN_PORT 6080, network order
          0600 0f00 0200 0000                 # TUN_FLAGS REMCSUM
    ");
    assert_bytes(&bytes[bytes.len() - want_dest.len()..], &want_dest);
}

#[test]
fn delete_destination_sends_only_its_address() {
    let want = hex("
        6c000000 1c00 0500 04000000 00000000  # 108 bytes
        07 01 0000                            # DEL_DEST
        3000 0180
          0600 0100 0200 0000
          0600 0200 0600 0000
          1400 0300 c0000264 00000000 00000000 00000000
          0600 0400 0050 0000
        2800 0280                             # DEST, 40 bytes: address, port, family
          1400 0100 c000020c 00000000 00000000 00000000
          0600 0200 0050 0000
          0600 0b00 0200 0000
    ");
    assert_bytes(&Request::DelDestination(&vip(), real(12)).encode(FAMILY, 4).unwrap(), &want);
}

#[test]
fn dumps_and_simple_requests() {
    // GET_SERVICE as a dump: REQUEST|DUMP (0x301), no attributes.
    assert_bytes(
        &Request::GetServices.encode(FAMILY, 1).unwrap(),
        &hex("14000000 1c00 0103 01000000 00000000 04 01 0000"),
    );
    assert_bytes(
        &Request::GetInfo.encode(FAMILY, 2).unwrap(),
        &hex("14000000 1c00 0500 02000000 00000000 0f 01 0000"),
    );
    let get_dests = Request::GetDestinations(&vip()).encode(FAMILY, 5).unwrap();
    assert_bytes(&get_dests[..20], &hex("44000000 1c00 0103 05000000 00000000 08 01 0000"));
    let del = Request::DelService(&vip()).encode(FAMILY, 6).unwrap();
    assert_bytes(&del[..20], &hex("44000000 1c00 0500 06000000 00000000 03 01 0000"));
}

#[test]
fn refuses_what_the_kernel_would_reject_or_truncate() {
    let long = Service::new(vip(), "a-scheduler-name-too-long");
    assert!(matches!(
        Request::NewService(&long).encode(FAMILY, 1),
        Err(IpvsError::Invalid { what: "scheduler", .. })
    ));
    let mut d = Destination::route(real(11), u32::MAX);
    assert!(matches!(
        Request::NewDestination(&vip(), &d).encode(FAMILY, 1),
        Err(IpvsError::Invalid { what: "weight", .. })
    ));
    d.weight = 1;
    d.forward =
        Forward::Tunnel { encap: TunnelEncap::Gue { port: 0 }, csum: false, remote_csum: false };
    assert!(matches!(
        Request::NewDestination(&vip(), &d).encode(FAMILY, 1),
        Err(IpvsError::Invalid { what: "tunnel", .. })
    ));
    let mut svc = Service::new(vip(), "wrr");
    svc.netmask = 33;
    assert!(Request::NewService(&svc).encode(FAMILY, 1).is_err());
}

/// A `GET_SERVICE` dump reply as the kernel writes it (nests without `NLA_F_NESTED`), preceded
/// by a stray ACK for an older sequence number and followed by `NLMSG_DONE`.
fn service_dump_fixture() -> Vec<u8> {
    hex("
        24000000 0200 0001 08000000 34120000  # NLMSG_ERROR, CAPPED, seq 8 (not ours)
          00000000                            # code 0: an ACK
          14000000 1c00 0500 08000000 00000000
        dc000000 1c00 0200 09000000 34120000  # 220 bytes, NLM_F_MULTI, seq 9
        01 01 0000                            # NEW_SERVICE
        c800 0100                             # SERVICE, 200 bytes
          0600 0100 0200 0000                 # AF_INET
          0600 0200 0600 0000                 # TCP
          1400 0300 c0000264 00000000 00000000 00000000
          0600 0400 0050 0000                 # port 80
          0800 0600 77727200                  # \"wrr\"
          0c00 0700 02000000 ffffffff         # FLAGS: HASHED only (kernel-internal)
          0800 0800 00000000                  # TIMEOUT
          0800 0900 ffffffff                  # NETMASK /32
          3c00 0a00                           # STATS (32-bit), 60 bytes
            0800 0100 06000000                # CONNS 6
            0800 0200 24000000                # INPKTS 36
            0800 0300 00000000                # OUTPKTS 0
            0c00 0400 8d0b0000 00000000       # INBYTES 2957
            0c00 0500 00000000 00000000       # OUTBYTES
            0800 0600 01000000                # CPS 1
          3800 0c00                           # STATS64, 56 bytes
            0c00 0100 06000000 01000000       # CONNS 2^32 + 6 (only 64-bit can say so)
            0c00 0200 24000000 00000000       # INPKTS 36
            0c00 0400 8d0b0000 00000000       # INBYTES 2957
            0400 0b00                         # IPVS_STATS_ATTR_PAD
            0c00 0a00 05000000 00000000       # OUTBPS 5
        14000000 0300 0200 09000000 34120000  # NLMSG_DONE, seq 9
          00000000
    ")
}

#[test]
fn decodes_a_service_dump() {
    let replies = codec::decode_replies(&service_dump_fixture(), 9).unwrap();
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[1], Reply::Done);
    let Reply::Data(data) = &replies[0] else { panic!("{:?}", replies[0]) };
    assert_eq!(data.cmd, 1);
    let nested = codec::find_attr(&data.attrs, 1).unwrap().unwrap();
    let entry = codec::decode_service(nested).unwrap();
    assert_eq!(entry.service, Service::new(vip(), "wrr"));
    assert_eq!(
        entry.stats,
        Stats { conns: (1 << 32) + 6, inpkts: 36, inbytes: 2957, outbps: 5, ..Stats::default() }
    );
}

#[test]
fn decodes_a_destination() {
    let nested = hex("
        1400 0100 c000020b 00000000 00000000 00000000  # ADDR (kernel sends all 16 bytes)
        0600 0200 0050 0000                   # PORT 80
        0800 0300 03000000                    # FWD_METHOD DROUTE
        0800 0400 02000000                    # WEIGHT 2
        0800 0500 00000000                    # U_THRESH
        0800 0600 00000000                    # L_THRESH
        0800 0700 01000000                    # ACTIVE_CONNS 1
        0800 0800 04000000                    # INACT_CONNS 4
        0800 0900 00000000                    # PERSIST_CONNS
        1400 0a00                             # STATS (32-bit only: an older kernel)
          0800 0100 03000000                  # CONNS 3
          0800 0200 0c000000                  # INPKTS 12
        0600 0b00 0200 0000                   # ADDR_FAMILY AF_INET
        0500 0d00 00 000000                   # TUN_TYPE IPIP (ignored for DROUTE)
        0600 0e00 0000 0000                   # TUN_PORT
        0600 0f00 0000 0000                   # TUN_FLAGS
    ");
    let entry = codec::decode_destination(&nested, Family::Inet).unwrap();
    assert_eq!(entry.destination, Destination::route(real(11), 2));
    assert_eq!((entry.active_conns, entry.inactive_conns, entry.persist_conns), (1, 4, 0));
    assert_eq!(entry.stats, Stats { conns: 3, inpkts: 12, ..Stats::default() });
}

#[test]
fn decodes_tunnel_and_ipv6_destinations() {
    let nested = hex("
        1400 0100 20010db8 00000000 00000000 00000011
        0600 0200 0050 0000
        0800 0300 02000000                    # TUNNEL
        0800 0400 01000000
        0600 0b00 0a00 0000                   # AF_INET6 (a v4 service may tunnel to v6)
        0500 0d00 02 000000                   # GRE
        0600 0f00 0100 0000                   # CSUM
    ");
    let entry = codec::decode_destination(&nested, Family::Inet).unwrap();
    assert_eq!(entry.destination.addr, "2001:db8::11".parse::<IpAddr>().unwrap());
    assert_eq!(
        entry.destination.forward,
        Forward::Tunnel { encap: TunnelEncap::Gre, csum: true, remote_csum: false }
    );
}

#[test]
fn round_trips_fwmark_ipv6_service() {
    // What we send for a service is what the kernel echoes back (minus stats), so the encoder's
    // service attributes fed to the decoder must give the same service.
    let svc = Service {
        key: ServiceKey::Fwmark { family: Family::Inet6, mark: 42 },
        scheduler: "mh".into(),
        flags: ServiceFlags::PERSISTENT | ServiceFlags::SCHED2,
        timeout: 600,
        netmask: 48,
        pe_name: None,
    };
    let bytes = Request::NewService(&svc).encode(FAMILY, 1).unwrap();
    let nested = codec::find_attr(&bytes[20..], 1).unwrap().unwrap();
    assert_eq!(codec::decode_service(nested).unwrap().service, svc);
    let v6 = Service::new(ServiceKey::udp(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 53)), "rr");
    let bytes = Request::NewService(&v6).encode(FAMILY, 1).unwrap();
    let nested = codec::find_attr(&bytes[20..], 1).unwrap().unwrap();
    assert_eq!(codec::decode_service(nested).unwrap().service, v6);
}

#[test]
fn decodes_info_then_ack() {
    let buf = hex("
        24000000 1c00 0000 02000000 34120000  # 36 bytes, seq 2
        0e 01 0000                            # SET_INFO (the GET_INFO reply)
        0800 0100 01020100                    # VERSION 0x010201
        0800 0200 00100000                    # CONN_TAB_SIZE 4096
        24000000 0200 0001 02000000 34120000  # NLMSG_ERROR, CAPPED
          00000000 14000000 1c00 0500 02000000 00000000
    ");
    let replies = codec::decode_replies(&buf, 2).unwrap();
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[1], Reply::Ack);
    let Reply::Data(data) = &replies[0] else { panic!() };
    assert_eq!(data.cmd, 14);
    let info = codec::decode_info(&data.attrs).unwrap();
    assert_eq!(info, Info { version: 0x010201, conn_table_size: 4096 });
    assert_eq!(info.version_string(), "1.2.1");
}

#[test]
fn decodes_errors_with_extended_ack_text() {
    let buf = hex("
        30000000 0200 0003 05000000 34120000  # NLMSG_ERROR, CAPPED|ACK_TLVS, 48 bytes
          efffffff                            # -17: EEXIST
          14000000 1c00 0500 05000000 00000000  # echoed request header
          0b00 0100 65786973 747300 00        # NLMSGERR_ATTR_MSG \"exists\"
    ");
    let replies = codec::decode_replies(&buf, 5).unwrap();
    assert_eq!(replies, vec![Reply::Error { errno: 17, message: Some("exists".into()) }]);
    let err =
        IpvsError::Kernel { op: "IPVS add service", errno: 17, message: Some("exists".into()) };
    assert!(err.is_exists() && !err.is_not_found());
    assert_eq!(err.to_string(), "IPVS add service: File exists (os error 17) (exists)");
}

#[test]
fn rejects_truncated_replies() {
    let mut buf = service_dump_fixture();
    buf.truncate(100);
    assert!(matches!(codec::decode_replies(&buf, 9), Err(IpvsError::Decode(_))));
    // A service missing its address family cannot be keyed.
    assert!(matches!(
        codec::decode_service(&hex("0600 0200 0600 0000")),
        Err(IpvsError::Decode(_))
    ));
}

/// On this host the kernel has no IPVS, so the probe must say exactly that (it is what makes the
/// agent fall back). Where IPVS exists the probe must succeed instead.
#[test]
fn probe_reports_not_available_without_ipvs() {
    let result = probe();
    if std::path::Path::new("/proc/net/ip_vs").exists() {
        assert!(!matches!(result, Err(IpvsError::NotAvailable)), "{result:?}");
        return;
    }
    let err = result.expect_err("no IPVS on this kernel");
    assert!(matches!(err, IpvsError::NotAvailable), "{err:?}");
    assert_eq!(err.to_string(), "IPVS not available: generic netlink family IPVS not found");
}
