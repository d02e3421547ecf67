//! Tests of the namespace harness itself (root only; see `require_root`).

use lb_tests::{
    BridgeMode, DR_HTTP_PORT, DR_TCP_ECHO_PORT, DR_UDP_PORT, DrTopology, Netns, Topology,
    cleanup_orphans, cleanup_stale, http_get, list_netns, require_root, spawn_testpeer,
    tcp_connect, udp_request, unique_prefix, wait_until,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const SEC: Duration = Duration::from_secs(1);

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

fn namespaces_with(prefix: &str) -> Vec<String> {
    list_netns().expect("ip netns list").into_iter().filter(|n| n.starts_with(prefix)).collect()
}

/// A pid counts as gone once it no longer exists or is a zombie awaiting its new parent.
fn pid_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        }
    }
}

/// Live pids whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after "(comm)": state ppid pgrp ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn dr_topology_comes_up_and_is_removed() {
    if !require_root("dr_topology_comes_up_and_is_removed") {
        return;
    }
    let dr = DrTopology::build("harness", 2, VIP, testpeer()).expect("build DR topology");
    let prefix = dr.topo.prefix().to_string();
    let peer_pids: Vec<u32> = (0..2).map(|i| dr.peer(i).expect("peer").pid()).collect();

    let names = namespaces_with(&prefix);
    assert_eq!(names.len(), 5, "switch, client, dir1, rs1, rs2: {names:?}");
    assert_eq!(dr.client.ipv4(), Some(DrTopology::CLIENT_IP));
    assert_eq!(dr.director.ipv4(), Some(DrTopology::DIRECTOR_IP));
    assert_eq!(dr.reals[1].ipv4(), Some(Ipv4Addr::new(192, 0, 2, 12)));

    // L2/L3 reachability through the bridge.
    let rtt = dr
        .client
        .ns
        .ping(IpAddr::V4(DrTopology::DIRECTOR_IP), 3 * SEC)
        .expect("client pings director");
    assert!(rtt < SEC, "rtt {rtt:?}");
    // The director learnt the client's deterministic MAC.
    let neigh = dr.director.ns.ip(&["neigh", "show", "192.0.2.1"]).expect("neigh");
    assert!(neigh.contains(&dr.client.mac_string()), "{neigh}");

    // Each real serves its name on its own address.
    for (i, real) in dr.reals.iter().enumerate() {
        let own = DrTopology::real_ip(i);
        let body = http_get(&dr.client.ns, &format!("http://{own}:{DR_HTTP_PORT}/")).expect("GET");
        assert_eq!(body, format!("{}\n", real.name));
        let reply =
            udp_request(&dr.client.ns, SocketAddr::from((own, DR_UDP_PORT)), b"hello", 2 * SEC)
                .expect("udp");
        assert_eq!(reply, format!("{} hello", real.name).as_bytes());
    }

    // A long-lived echo connection, used from this (non-namespace) thread.
    let stream = tcp_connect(
        &dr.client.ns,
        SocketAddr::from((DrTopology::real_ip(0), DR_TCP_ECHO_PORT)),
        2 * SEC,
    )
    .expect("connect echo");
    stream.set_read_timeout(Some(2 * SEC)).expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    for msg in ["one", "two"] {
        writeln!(w, "{msg}").expect("write");
        let mut line = String::new();
        r.read_line(&mut line).expect("read");
        assert_eq!(line, format!("rs1 {msg}\n"));
    }

    // DR real-server setup: each real serves the VIP locally...
    let body = http_get(&dr.reals[1].ns, &format!("http://{VIP}/")).expect("local VIP");
    assert_eq!(body, "rs2\n");
    // ...but nobody answers ARP for it, so without a director claiming it the VIP is unreachable.
    let err = http_get(&dr.client.ns, &format!("http://{VIP}/")).expect_err("VIP unreachable");
    assert!(format!("{err:#}").contains("curl"), "{err:#}");
    for real in &dr.reals {
        assert_eq!(real.ns.sysctl_get("net.ipv4.conf.eth0.arp_ignore").expect("sysctl"), "1");
        // Cross-check the setns-based sysctl write with sysctl(8) in the namespace.
        let v =
            real.ns.run_ok(&["sysctl", "-n", "net.ipv4.conf.all.arp_announce"]).expect("sysctl(8)");
        assert_eq!(v.trim(), "2");
    }
    let offload = dr.client.ns.run_ok(&["ethtool", "-k", "eth0"]).expect("ethtool");
    assert!(offload.contains("tx-checksumming: off"), "{offload}");

    drop(dr);
    assert_eq!(namespaces_with(&prefix), Vec::<String>::new());
    for pid in peer_pids {
        assert!(pid_gone(pid), "testpeer {pid} survived");
    }
}

#[test]
fn cleanup_runs_on_panic() {
    if !require_root("cleanup_runs_on_panic") {
        return;
    }
    let seen = std::sync::Mutex::new(None::<(String, u32)>);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut topo = Topology::new("panic").expect("topology");
        let a = topo.add_host("a", &["198.51.100.1/24"]).expect("host a");
        topo.add_host("b", &["198.51.100.2/24"]).expect("host b");
        let sleeper = a.ns.spawn(&["sleep", "300"]).expect("spawn");
        *seen.lock().expect("lock") = Some((topo.prefix().to_string(), sleeper.pid()));
        topo.adopt(sleeper);
        assert_eq!(namespaces_with(topo.prefix()).len(), 3);
        panic!("deliberate panic inside a topology");
    }));
    assert!(result.is_err());
    let (prefix, pid) = seen.lock().expect("lock").take().expect("closure ran");
    assert_eq!(namespaces_with(&prefix), Vec::<String>::new());
    assert!(pid_gone(pid), "adopted process {pid} survived");
}

#[test]
fn process_guard_kills_the_whole_group() {
    if !require_root("process_guard_kills_the_whole_group") {
        return;
    }
    let ns = Netns::create(&format!("{}-grp", unique_prefix())).expect("netns");
    let mut p =
        ns.spawn(&["sh", "-c", "sleep 300 & sleep 300 & echo started; wait"]).expect("spawn");
    p.wait_for_line(|l| l == "started", 5 * SEC).expect("started");
    let members = group_members(p.pid());
    assert!(members.len() >= 3, "sh + 2 sleeps: {members:?}");
    drop(p);
    assert!(
        wait_until(2 * SEC, || members.iter().all(|&m| pid_gone(m))),
        "group members survived: {members:?}"
    );
    let name = ns.name().to_string();
    drop(ns);
    assert!(!list_netns().expect("list").contains(&name));
}

#[test]
fn netns_exec_reports_failures() {
    if !require_root("netns_exec_reports_failures") {
        return;
    }
    let ns = Netns::create(&format!("{}-exec", unique_prefix())).expect("netns");
    let err = ns.exec(&["ip", "link", "set", "nosuchdev", "up"]).expect_err("must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("nosuchdev") && msg.contains("exit"), "{msg}");

    let started = std::time::Instant::now();
    let err =
        ns.exec_timeout(&["sleep", "30"], Duration::from_millis(300)).expect_err("must time out");
    assert!(started.elapsed() < 5 * SEC, "{err:#}");

    // Only net.* sysctls are per namespace; anything else is refused.
    assert!(ns.sysctl("kernel.panic", "0").is_err());
    ns.delete().expect("delete");
    assert!(ns.exec(&["true"]).is_err(), "deleted namespace must refuse commands");
}

#[test]
fn cleanup_stale_removes_forgotten_namespaces() {
    if !require_root("cleanup_stale_removes_forgotten_namespaces") {
        return;
    }
    let prefix = unique_prefix();
    let ns = Netns::create(&format!("{prefix}-stale")).expect("netns");
    // A process nobody guards, as after a crash.
    let mut child = ns.command(&["sleep", "300"]).spawn().expect("spawn");
    std::mem::forget(ns);
    assert_eq!(namespaces_with(&prefix).len(), 1);

    let removed = cleanup_stale(&prefix).expect("cleanup_stale");
    assert_eq!(removed, vec![format!("{prefix}-stale")]);
    assert_eq!(namespaces_with(&prefix), Vec::<String>::new());
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the stale process was killed: {status:?}");
    assert!(cleanup_stale("lb").is_err(), "too broad a prefix is refused");
}

#[test]
fn cleanup_orphans_removes_only_namespaces_of_dead_processes() {
    if !require_root("cleanup_orphans_removes_only_namespaces_of_dead_processes") {
        return;
    }
    fn base36(mut v: u32, width: usize) -> String {
        let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut out = vec![b'0'; width];
        for slot in out.iter_mut().rev() {
            *slot = digits[(v % 36) as usize];
            v /= 36;
        }
        String::from_utf8(out).expect("ascii")
    }
    // A pid that just died (reuse within these few ms is practically impossible).
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let dead = child.id();
    child.wait().expect("wait");
    assert!(pid_gone(dead));
    let orphan = format!("lb{}zzz-orphan", base36(dead, 5));
    let ours = format!("{}-alive", unique_prefix());
    // Created bare, as a crashed run leaves it. If this test binary runs twice in parallel, the
    // other copy's cleanup may delete it even while `ip netns add` is still mounting it (then the
    // add fails): either way only the end state below matters.
    let mut add = std::process::Command::new("ip");
    add.args(["netns", "add", &orphan]);
    let _ = lb_tests::run_command(add, 10 * SEC);
    let ours_ns = Netns::create(&ours).expect("our netns");

    // Another test binary running in parallel may clean the orphan up first: check the end state.
    cleanup_orphans().expect("cleanup_orphans");
    let left = list_netns().expect("list");
    assert!(!left.contains(&orphan), "orphan survived: {left:?}");
    assert!(left.contains(&ours), "a live process's namespace must survive");
    drop(ours_ns);
}

#[test]
fn testpeer_speaks_http_udp_and_echo() {
    if !require_root("testpeer_speaks_http_udp_and_echo") {
        return;
    }
    let mut topo = Topology::new("peer").expect("topology");
    let client = topo.add_host("c", &["203.0.113.1/24", "2001:db8::1/64"]).expect("client");
    let server = topo.add_host("s", &["203.0.113.2/24", "2001:db8::2/64"]).expect("server");
    let peer = spawn_testpeer(
        &server.ns,
        testpeer(),
        &[
            "--name",
            "tp1",
            "--http",
            "203.0.113.2:8080",
            "--http",
            "[2001:db8::2]:8080",
            "--udp",
            "203.0.113.2:5353",
            "--tcp-echo",
            "203.0.113.2:7007",
        ],
    )
    .expect("testpeer");
    topo.adopt(peer);

    // IPv6 works right away (no DAD), ICMPv6 included.
    client.ns.ping("2001:db8::2".parse().expect("addr"), 3 * SEC).expect("ping6");
    assert_eq!(http_get(&client.ns, "http://[2001:db8::2]:8080/").expect("GET v6"), "tp1\n");

    let raw = |request: &str| -> String {
        let mut s = tcp_connect(&client.ns, "203.0.113.2:8080".parse().expect("addr"), 2 * SEC)
            .expect("connect");
        s.set_read_timeout(Some(2 * SEC)).expect("timeout");
        s.write_all(request.as_bytes()).expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    };
    let get = raw("GET /anything HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
    assert!(get.contains("\r\nContent-Length: 4\r\n"), "{get}");
    assert!(get.contains("\r\nConnection: close\r\n"), "{get}");
    assert!(get.ends_with("\r\n\r\ntp1\n"), "{get}");
    let head = raw("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");
    let post = raw("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");

    // UDP: binary payloads come back verbatim after the name.
    let reply = udp_request(
        &client.ns,
        "203.0.113.2:5353".parse().expect("addr"),
        &[0, 1, 2, 255],
        2 * SEC,
    )
    .expect("udp");
    assert_eq!(reply, b"tp1 \x00\x01\x02\xff");

    // Echo: several lines on one connection; a final line without newline still gets one.
    let mut s = tcp_connect(&client.ns, "203.0.113.2:7007".parse().expect("addr"), 2 * SEC)
        .expect("connect");
    s.set_read_timeout(Some(2 * SEC)).expect("timeout");
    s.write_all(b"a\nbb\n").expect("write");
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"tail").expect("write");
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert_eq!(out, "tp1 a\ntp1 bb\ntp1 tail\n");
}

#[test]
fn hub_mode_floods_unicast_to_observers() {
    if !require_root("hub_mode_floods_unicast_to_observers") {
        return;
    }
    let mut topo = Topology::with_mode("hub", BridgeMode::Hub).expect("topology");
    let a = topo.add_host("a", &["192.0.2.1/24"]).expect("a");
    let b = topo.add_host("b", &["192.0.2.2/24"]).expect("b");
    let obs = topo.add_host("obs", &[]).expect("observer");
    let details = topo.switch().ip(&["-d", "link", "show", "br0"]).expect("bridge details");
    assert!(details.contains("ageing_time 0 "), "{details}");

    // Open a packet socket in the observer before the traffic so frames queue up.
    let sock = obs
        .ns
        .run_in(|| {
            let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
            // SAFETY: plain socket(2); ownership is taken right away.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    proto,
                )
            };
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            // SAFETY: fresh fd owned by nobody else.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .expect("packet socket");
    for _ in 0..3 {
        a.ns.ping(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 3 * SEC).expect("a pings b");
    }
    // Count ICMP frames addressed to b's MAC that reached the observer.
    let mut unicast_to_b = 0;
    let mut buf = [0u8; 2048];
    loop {
        // SAFETY: valid buffer of the given length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            break;
        }
        let f = &buf[..n as usize];
        if f.len() > 23 && f[..6] == b.mac && f[12..14] == [0x08, 0x00] && f[23] == 1 {
            unicast_to_b += 1;
        }
    }
    assert!(unicast_to_b >= 3, "observer saw {unicast_to_b} echo requests to b");
}
