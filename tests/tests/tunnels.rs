//! End to end: tunnelled reals (`lb_kind = "TUN"`) behind a router, no L2 with the director.
//!
//! ```text
//! client ── router ── director (eth0: XDP, eth1: second path to the router)
//!             ├── rs1 (IPIP)   198.51.100.34 / 2001:db8:1::10
//!             ├── rs2 (GUE)    198.51.100.50 / 2001:db8:2::10
//!             └── rs3 (GRE)    198.51.100.66 / 2001:db8:3::10   (weight 2)
//! ```
//! This host's kernel has no tunnel modules, so each real decapsulates in userspace
//! (`lb-tundecap`: raw sockets and a GUE port into a TUN device); its own stack then answers the
//! client from the VIP straight through the router (L3 DSR).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use lb_tests::{
    DR_TCP_ECHO_PORT, DR_UDP_PORT, LbAgent, Netns, Process, count_http, lb_bin, require_root,
    scratch_dir, spawn_testpeer, unique_prefix,
};

const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 0x100);
const GUE_PORT: u16 = 6080;
/// The service whose reals are of the other address family than its VIP.
const MIXED_PORT: u16 = 8080;
/// The reals: name, encapsulation keys, weight.
const REALS: [(&str, &str, u32); 3] = [
    ("rs1", "tun_type = \"ipip\"", 1),
    ("rs2", "tun_type = \"gue\"\ntun_port = 6080", 1),
    ("rs3", "tun_type = \"gre\"", 2),
];
/// Outer header bytes per real over IPv4 (IPIP 20, GUE 28, GRE 24) and over IPv6.
const OVERHEAD4: [usize; 3] = [20, 28, 24];
const OVERHEAD6: [usize; 3] = [40, 48, 44];

fn real4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 34 + 16 * i as u8)
}

fn real6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1 + i as u16, 0, 0, 0, 0, 0x10)
}

fn bin(name: &str) -> &'static Path {
    match name {
        "testpeer" => Path::new(env!("CARGO_BIN_EXE_lb-testpeer")),
        _ => Path::new(env!("CARGO_BIN_EXE_lb-tundecap")),
    }
}

/// The namespaces and processes; fields drop in order (processes before their namespaces).
struct Lab {
    _procs: Vec<Process>,
    client: Netns,
    director: Netns,
    router: Netns,
    reals: Vec<Netns>,
}

fn ip(ns: &Netns, args: &str) {
    ns.ip(&args.split_whitespace().collect::<Vec<_>>())
        .unwrap_or_else(|e| panic!("[{}] ip {args}: {e:#}", ns.name()));
}

fn sysctl(ns: &Netns, key: &str, value: &str) {
    ns.sysctl(key, value).unwrap_or_else(|e| panic!("[{}] {key}: {e:#}", ns.name()));
}

/// A veth from `router` (`rname`, addresses `r4`/`r6`) into `ns` (`eth`, `h4`/`h6`).
fn link(router: &Netns, rname: &str, ns: &Netns, eth: &str, addrs: [&str; 4]) {
    let [r4, r6, h4, h6] = addrs;
    ip(router, &format!("link add {rname} type veth peer name {eth} netns {}", ns.name()));
    ip(router, &format!("addr add {r4} dev {rname}"));
    ip(router, &format!("addr add {r6} dev {rname} nodad"));
    ip(router, &format!("link set {rname} up"));
    ip(ns, &format!("addr add {h4} dev {eth}"));
    ip(ns, &format!("addr add {h6} dev {eth} nodad"));
    ip(ns, &format!("link set {eth} up"));
}

impl Lab {
    fn build() -> Lab {
        let p = unique_prefix();
        let mk = |n: &str| Netns::create(&format!("{p}-{n}")).expect("netns");
        let (client, director, router) = (mk("c"), mk("d"), mk("r"));
        let reals: Vec<Netns> = (1..=3).map(|i| mk(&format!("s{i}"))).collect();
        for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
            sysctl(&router, key, "1");
            sysctl(&director, key, "1");
        }
        // The reals answer from the VIP, which the router routes to the director.
        for key in ["all", "default"] {
            sysctl(&router, &format!("net.ipv4.conf.{key}.rp_filter"), "0");
        }
        link(
            &router,
            "c0",
            &client,
            "eth0",
            ["203.0.113.1/24", "2001:db8:c::1/64", "203.0.113.10/24", "2001:db8:c::10/64"],
        );
        // The decapsulators see bytes only, not the kernel's "checksum left to the NIC" mark:
        // the client computes its checksums in full.
        client.exec(&["ethtool", "-K", "eth0", "tx", "off"]).expect("ethtool");
        ip(&client, "route add default via 203.0.113.1");
        ip(&client, "-6 route add default via 2001:db8:c::1");
        link(
            &router,
            "d0",
            &director,
            "eth0",
            ["198.51.100.1/28", "2001:db8:d::1/64", "198.51.100.2/28", "2001:db8:d::2/64"],
        );
        // A second path for the route change.
        link(
            &router,
            "d1",
            &director,
            "eth1",
            ["198.51.100.17/28", "2001:db8:d1::1/64", "198.51.100.18/28", "2001:db8:d1::2/64"],
        );
        ip(&director, "route add default via 198.51.100.1");
        ip(&director, "-6 route add default via 2001:db8:d::1");
        ip(&router, &format!("route add {VIP4}/32 via 198.51.100.2"));
        ip(&router, &format!("-6 route add {VIP6}/128 via 2001:db8:d::2"));
        let mut procs = Vec::new();
        for (i, ns) in reals.iter().enumerate() {
            let (r4, h4) = (Ipv4Addr::from(u32::from(real4(i)) - 1), real4(i));
            let (r6, h6) = (Ipv6Addr::from(u128::from(real6(i)) - 0xf), real6(i));
            let rname = format!("s{}", i + 1);
            link(
                &router,
                &rname,
                ns,
                "eth0",
                [
                    &format!("{r4}/28"),
                    &format!("{r6}/64"),
                    &format!("{h4}/28"),
                    &format!("{h6}/64"),
                ],
            );
            ip(ns, &format!("route add default via {r4}"));
            ip(ns, &format!("-6 route add default via {r6}"));
            ip(ns, &format!("addr add {VIP4}/32 dev lo"));
            ip(ns, &format!("addr add {VIP6}/128 dev lo"));
            let mut decap = ns
                .spawn(&[
                    bin("tundecap").to_str().expect("utf-8"),
                    "--tun",
                    "tun0",
                    "--gue-port",
                    &GUE_PORT.to_string(),
                ])
                .expect("lb-tundecap");
            decap.wait_for_line(|l| l == "ready", Duration::from_secs(5)).expect("decap ready");
            procs.push(decap);
            ip(ns, "link set tun0 up");
            // The inner source (the client) arrives on tun0 but is routed via eth0.
            for dev in ["all", "tun0"] {
                sysctl(ns, &format!("net.ipv4.conf.{dev}.rp_filter"), "0");
            }
            let name = format!("rs{}", i + 1);
            let udp4 = format!("{VIP4}:{DR_UDP_PORT}");
            let udp6 = format!("[{VIP6}]:{DR_UDP_PORT}");
            let echo = format!("[::]:{DR_TCP_ECHO_PORT}");
            let args = [
                "--name",
                &name,
                "--http",
                "[::]:80",
                "--http",
                &format!("[::]:{MIXED_PORT}"),
                "--udp",
                &udp4,
                "--udp",
                &udp6,
                "--tcp-echo",
                &echo,
            ];
            procs.push(spawn_testpeer(ns, bin("testpeer"), &args).expect("testpeer"));
        }
        Lab { _procs: procs, client, director, router, reals }
    }
}

/// One `[[virtual_server]]` per (VIP, port, protocol) with the given reals' addresses.
fn service(vip: IpAddr, port: u16, protocol: &str, addrs: &[IpAddr]) -> String {
    let mut s = format!(
        "[[virtual_server]]\nvip = \"{vip}\"\nport = {port}\nprotocol = \"{protocol}\"\n\
         interface = \"eth0\"\ndelay_loop = 0.5\n"
    );
    for (addr, (_, keys, weight)) in addrs.iter().zip(REALS) {
        s.push_str(&format!(
            "[[virtual_server.real_server]]\naddress = \"{addr}\"\nweight = {weight}\n\
             lb_kind = \"TUN\"\n{keys}\n\
             [virtual_server.real_server.tcp_check]\nconnect_port = 80\nconnect_timeout = 0.5\n\
             retry = 0\n"
        ));
    }
    s
}

fn config() -> String {
    let v4: Vec<IpAddr> = (0..3).map(|i| real4(i).into()).collect();
    let v6: Vec<IpAddr> = (0..3).map(|i| real6(i).into()).collect();
    // Mixed-family: IPv4 inside IPv6 (rs1, rs3) and a GUE real over IPv4 in the same service.
    let mixed: Vec<IpAddr> = vec![real6(0).into(), real4(1).into(), real6(2).into()];
    [
        service(VIP4.into(), 80, "tcp", &v4),
        service(VIP4.into(), DR_UDP_PORT, "udp", &v4),
        service(VIP6.into(), 80, "tcp", &v6),
        service(VIP6.into(), DR_UDP_PORT, "udp", &v6),
        service(VIP4.into(), DR_TCP_ECHO_PORT, "tcp", &v4),
        service(VIP6.into(), DR_TCP_ECHO_PORT, "tcp", &v6),
        service(VIP4.into(), MIXED_PORT, "tcp", &mixed),
        service(VIP6.into(), MIXED_PORT, "tcp", &v4),
    ]
    .join("\n")
}

/// `n` UDP flows (one socket each, bound to source ports 20000, 20001, ... (IPv6: 10000, ...): distinct
/// flows, below the ephemeral range, the same in every run) from `ns` to `target`, in batches; replies counted by the real's name, unanswered ones as "(failed)". Also returns one
/// still-open socket per real, whose flow the director keeps sending to that real.
fn udp_flows(
    ns: &Netns,
    target: SocketAddr,
    n: usize,
) -> (BTreeMap<String, u32>, BTreeMap<String, UdpSocket>) {
    ns.run_in(move || {
        let mut counts = BTreeMap::new();
        let mut kept = BTreeMap::new();
        let any: IpAddr = if target.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        // Another range per family: a [::] socket also holds the IPv4 port.
        let mut ports = if target.is_ipv4() { 20000.. } else { 10000.. };
        let mut left = n;
        let mut buf = [0u8; 2048];
        while left > 0 {
            let batch: Vec<UdpSocket> = (0..left.min(100))
                .filter_map(|_| ports.next())
                .map(|port: u16| {
                    let s = UdpSocket::bind((any, port)).expect("bind");
                    s.connect(target).expect("connect");
                    s.send(b"w").expect("send");
                    s
                })
                .collect();
            left -= batch.len();
            for s in batch {
                s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
                let name = match s.recv(&mut buf) {
                    Ok(len) => String::from_utf8_lossy(&buf[..len])
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                    Err(_) => "(failed)".to_owned(),
                };
                *counts.entry(name.clone()).or_insert(0) += 1;
                kept.entry(name).or_insert(s);
            }
        }
        (counts, kept)
    })
    .expect("run in client")
}

/// Sends a line of `len` bytes over TCP to `target` from `ns` and returns the name of the real
/// that echoed it whole.
fn upload(ns: &Netns, target: SocketAddr, len: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = lb_tests::tcp_connect(ns, target, Duration::from_secs(2)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut line = vec![b'z'; len];
    line.push(b'\n');
    stream.write_all(&line).expect("send the line");
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).expect("echo");
    let (name, echoed) = reply.trim_end().split_once(' ').unwrap_or(("", ""));
    assert_eq!(echoed.len(), len, "{target}: the whole line came back");
    name.to_owned()
}

/// Sends `payload` on the connected socket and returns the replying real's name.
fn ask(sock: &UdpSocket, payload: &[u8], timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout)).ok()?;
    sock.send(payload).ok()?;
    let mut buf = vec![0u8; 65536];
    let n = sock.recv(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n]).split_whitespace().next().map(str::to_owned)
}

/// `(level, MTU_DISCOVER, PMTUDISC_DO, MTU)` socket options of a family.
fn pmtu_opts(v6: bool) -> [libc::c_int; 4] {
    if v6 {
        [libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_DO, libc::IPV6_MTU]
    } else {
        [libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO, libc::IP_MTU]
    }
}

/// Sets "don't fragment" (PMTUDISC_DO): too big is an error, never a local fragmentation.
fn set_df(sock: &UdpSocket, v6: bool) {
    let [level, name, on, _] = pmtu_opts(v6);
    // SAFETY: setsockopt with a pointer to a c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "MTU_DISCOVER: {}", std::io::Error::last_os_error());
}

/// The path MTU the kernel keeps for a connected socket's destination (IP_MTU / IPV6_MTU).
fn path_mtu(sock: &UdpSocket, v6: bool) -> usize {
    let [level, _, _, name] = pmtu_opts(v6);
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a c_int with its size.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "IP_MTU: {}", std::io::Error::last_os_error());
    usize::try_from(mtu).unwrap_or(0)
}

/// For each real (smallest encapsulation first: the client's path MTU toward the VIP only ever
/// goes down), on a flow to it: a DF datagram of the current path MTU, too big once
/// encapsulated, must lower the path MTU to exactly what fits that real's tunnel, and a datagram
/// of the new size must then be answered by that real.
fn too_big_steps(client: &Netns, kept: &BTreeMap<String, UdpSocket>, v6: bool) {
    let (overhead, headers) = if v6 { (OVERHEAD6, 48) } else { (OVERHEAD4, 28) };
    let mut order: Vec<usize> = (0..3).collect();
    order.sort_by_key(|&i| overhead[i]);
    let mut size = 1500;
    for i in order {
        let name = REALS[i].0;
        let sock = kept.get(name).unwrap_or_else(|| panic!("a flow to {name}"));
        let sock = sock.try_clone().expect("clone");
        let want = 1500 - overhead[i];
        let (got, reply) = client
            .run_in(move || {
                set_df(&sock, v6);
                let _ = sock.set_read_timeout(Some(Duration::from_millis(20)));
                // The first send may fail (EMSGSIZE) or its ICMP answer may still be on its way.
                let _ = sock.send(&vec![b'x'; size - headers]);
                let deadline = Instant::now() + Duration::from_secs(1);
                while path_mtu(&sock, v6) != want && Instant::now() < deadline {
                    let _ = sock.recv(&mut [0u8; 64]);
                }
                let got = path_mtu(&sock, v6);
                while sock.recv(&mut [0u8; 65536]).is_ok() {}
                (got, ask(&sock, &vec![b'y'; got - headers], Duration::from_secs(2)))
            })
            .expect("run in client");
        eprintln!("{name}: path MTU {got} after a {size}-byte DF datagram, then {reply:?}");
        assert_eq!(got, want, "{name} (v6 {v6}): path MTU after the ICMP answer");
        assert_eq!(reply.as_deref(), Some(name), "{name}: a datagram of the new path MTU");
        size = want;
    }
}

fn assert_weights(what: &str, counts: &BTreeMap<String, u32>) {
    let total: u32 = counts.values().sum();
    let weight_sum: u32 = REALS.iter().map(|r| r.2).sum();
    for (name, _, weight) in REALS {
        let want = f64::from(total) * f64::from(weight) / f64::from(weight_sum);
        let got = f64::from(counts.get(name).copied().unwrap_or(0));
        assert!((got - want).abs() <= want * 0.10, "{what}: {name} got {got}, want {want} ±10 %");
    }
}

#[test]
fn tunnelled_reals_behind_a_router_serve_the_vip() {
    if !require_root("tunnels") {
        return;
    }
    let lab = Lab::build();
    let dir = scratch_dir("lb-tun-cfg-").expect("scratch");
    let cfg = dir.path().join("lb.toml");
    std::fs::write(&cfg, config()).expect("write config");
    let agent =
        LbAgent::start(&lab.director, &lb_bin(), &cfg, &["--xdp-mode", "generic"]).expect("lb run");
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("reals up (their own address)");
    // The first tunnelled packet needs the router's MAC: the checks resolved it already.

    // TCP through the VIP to every encapsulation, both families, and the mixed-family services.
    for (url, what) in [
        (format!("http://{VIP4}/"), "v4 tcp"),
        (format!("http://[{VIP6}]/"), "v6 tcp"),
        (format!("http://{VIP4}:{MIXED_PORT}/"), "v4 VIP, v6 IPIP and GRE reals, a v4 GUE real"),
        (format!("http://[{VIP6}]:{MIXED_PORT}/"), "v6 VIP, v4 reals"),
    ] {
        let counts = count_http(&lab.client, &url, 24);
        eprintln!("{what}: {counts:?}");
        if counts.contains_key("(failed)") {
            eprintln!(
                "director: {}",
                agent.status().map(|s| s["counters"].clone()).unwrap_or_default()
            );
            for ns in [&lab.router].into_iter().chain(&lab.reals) {
                eprintln!("{ns:?}: {}", ns.ip(&["-s", "link"]).unwrap_or_default());
            }
        }
        assert_eq!(counts.get("(failed)"), None, "{what}: every request answered: {counts:?}");
        for (name, ..) in REALS {
            assert!(counts.get(name).copied().unwrap_or(0) > 0, "{what}: {name} idle: {counts:?}");
        }
    }

    // UDP, both families, weights 1:1:2 within ±10 % over many flows.
    let (mut kept4, mut kept6) = (BTreeMap::new(), BTreeMap::new());
    for (target, what) in [
        (SocketAddr::from((VIP4, DR_UDP_PORT)), "v4 udp"),
        (SocketAddr::from((VIP6, DR_UDP_PORT)), "v6 udp"),
    ] {
        let started = Instant::now();
        let (counts, kept) = udp_flows(&lab.client, target, 8000);
        eprintln!("{what}: {counts:?} in {:?}", started.elapsed());
        assert_eq!(counts.get("(failed)"), None, "{what}: every datagram answered: {counts:?}");
        assert_weights(what, &counts);
        if target.is_ipv4() { kept4 = kept } else { kept6 = kept }
    }

    // TCP sends full-sized DF segments: the first ones are too big once encapsulated, the
    // director's answer lowers the client's path MTU and the upload then goes through.
    for vip in [IpAddr::V4(VIP4), IpAddr::V6(VIP6)] {
        let echoed = upload(&lab.client, SocketAddr::new(vip, DR_TCP_ECHO_PORT), 6000);
        eprintln!("6000-byte line to {vip} echoed by {echoed}");
        assert!(REALS.iter().any(|r| r.0 == echoed), "{echoed}");
        let route = lab.client.ip(&["route", "get", &vip.to_string()]).expect("ip route get");
        assert!(route.contains("mtu 14"), "the client learnt a smaller path MTU: {route}");
    }
    // Back to the links' MTU for the per-encapsulation steps below.
    for family in ["-4", "-6"] {
        lab.client.ip(&[family, "route", "flush", "cache"]).expect("flush the path MTU cache");
    }
    for vip in [IpAddr::V4(VIP4), IpAddr::V6(VIP6)] {
        let mtu = lab
            .client
            .run_in(move || {
                let any: IpAddr = if vip.is_ipv4() {
                    Ipv4Addr::UNSPECIFIED.into()
                } else {
                    Ipv6Addr::UNSPECIFIED.into()
                };
                let sock = UdpSocket::bind((any, 0)).expect("bind");
                sock.connect((vip, DR_UDP_PORT)).expect("connect");
                path_mtu(&sock, vip.is_ipv6())
            })
            .expect("run in client");
        assert_eq!(mtu, 1500, "{vip}: path MTU after the flush");
    }

    // A DF datagram too big for the tunnel: the client learns the MTU that fits that real's
    // encapsulation (ICMP frag-needed / ICMPv6 packet-too-big from the VIP), and a datagram of
    // that size then goes through.
    too_big_steps(&lab.client, &kept4, false);
    too_big_steps(&lab.client, &kept6, true);

    // A real's route changes on the director (another link to the router): its tunnelled
    // packets take the new path within a second (the program keeps a real's next hop for
    // 250 ms), the flow keeps being answered. The client asks every 50 ms for a second; tcpdump's
    // timestamps say when the first packet took the new path.
    let rs1 = kept4.get("rs1").expect("a flow to rs1");
    lab.director
        .ping(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 17)), Duration::from_secs(1))
        .expect("neighbour on eth1");
    let capture = lab
        .router
        .spawn(&[
            "tcpdump",
            "-i",
            "d1",
            "-n",
            "-l",
            "-tt",
            "-c",
            "3",
            "ip",
            "proto",
            "4",
            "and",
            "dst",
            "host",
            &real4(0).to_string(),
        ])
        .expect("tcpdump");
    capture
        .wait_for_stderr_line(|l| l.contains("listening on"), Duration::from_secs(5))
        .expect("tcpdump started");
    lab.director
        .ip(&["route", "add", &format!("{}/32", real4(0)), "via", "198.51.100.17", "dev", "eth1"])
        .expect("route change");
    let changed = std::time::SystemTime::now();
    let sock = rs1.try_clone().expect("clone");
    let answered = lab
        .client
        .run_in(move || {
            let start = Instant::now();
            let mut answered = Vec::new();
            while start.elapsed() < Duration::from_secs(1) {
                answered.extend(ask(&sock, b"r", Duration::from_millis(200)));
                std::thread::sleep(Duration::from_millis(50));
            }
            answered
        })
        .expect("run in client");
    // tcpdump exits after its third packet: those passed while the client was being answered.
    let out = capture.wait_with_output(Duration::from_millis(500)).expect("3 packets on eth1");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen = stdout.lines().count();
    let first: f64 = stdout
        .split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .expect("a tcpdump -tt timestamp");
    let since = changed.duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    let took = first - since;
    eprintln!(
        "after the route change: {answered:?}, the first of {seen} IPIP packets on eth1 after {took:.3} s"
    );
    assert!(seen >= 3, "tunnelled packets on the new path");
    assert!(took < 1.0, "on the new path within a second: {took:.3} s");
    assert!(answered.iter().all(|n| n == "rs1") && answered.len() >= 10, "{answered:?}");

    // The director's counters agree: tunnelled packets, and one frag-needed per real above.
    let status = agent.status().expect("status");
    let counter = |name: &str| status["counters"][name]["packets"].as_u64().unwrap_or(0);
    assert!(counter("tx_tunnel") >= 16_000, "{}", status["counters"]);
    assert!(counter("tx_tun_too_big") >= 3, "{}", status["counters"]);
    assert_eq!(counter("drop_tun_no_route"), 0, "{}", status["counters"]);
    agent.stop().expect("clean stop");
}
