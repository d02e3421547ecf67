//! Flow state on a running director: `lb flows` lists the connections the XDP program forwards
//! (like `ipvsadm -Lnc`), filtered by service and bounded by `--limit`; and flow sync between an
//! lb + lb VRRP pair: the backup learns the master's flows, so a failover after the backup's
//! Maglev table changed breaks no connection (the same failover without `[flow_sync]` does).

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use lb_tests::{
    DR_TCP_ECHO_PORT, DrTopology, LbAgent, LongLived, lb_bin, require_root, tcp_connect, wait_until,
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

#[test]
fn lb_flows_lists_the_open_connections() {
    if !require_root("lb flows") {
        return;
    }
    let dr = DrTopology::build("fl", 2, VIP, testpeer()).expect("topology");
    let config = DrTopology::fast_tcp_check_config(VIP, 2);
    let (agent, _dir) = dr.start_agent(&config, &[]).expect("lb run");
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("up");

    let target = SocketAddr::from((VIP, 80));
    let streams: Vec<_> = (0..6)
        .map(|_| tcp_connect(&dr.client.ns, target, Duration::from_secs(3)).expect("connect"))
        .collect();
    let ports: BTreeSet<String> =
        streams.iter().map(|s| s.local_addr().expect("local address").to_string()).collect();

    let json: serde_json::Value =
        serde_json::from_str(&agent.cli(&["flows", "--json"]).expect("lb flows")).expect("json");
    let flows = json["flows"].as_array().expect("flows");
    let listed: BTreeSet<String> = flows
        .iter()
        .filter(|f| f["vip"] == "192.0.2.100:80")
        .map(|f| f["client"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(ports.is_subset(&listed), "open {ports:?}, listed {json}");
    let reals = ["192.0.2.11:80", "192.0.2.12:80"];
    for f in flows {
        assert!(reals.contains(&f["real"].as_str().unwrap_or_default()), "{f}");
        let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
        assert_eq!(
            (s("protocol"), s("state"), s("origin")),
            ("tcp".into(), "ESTABLISHED".into(), "local".into())
        );
        assert!(f["expires_s"].as_u64().is_some_and(|s| s > 800 && s <= 900), "{f}");
    }
    assert_eq!(json["truncated"], false, "{json}");

    // The limit bounds the answer and says so.
    let json: serde_json::Value = serde_json::from_str(
        &agent.cli(&["flows", "--json", "--limit", "2"]).expect("lb flows --limit"),
    )
    .expect("json");
    assert_eq!(json["flows"].as_array().map(Vec::len), Some(2), "{json}");
    assert_eq!(json["truncated"], true, "{json}");

    // Another service: nothing; the text table reads like ipvsadm -Lnc.
    let other = agent.cli(&["flows", "--json", "--vip", "192.0.2.100:443"]).expect("lb flows");
    let other: serde_json::Value = serde_json::from_str(&other).expect("json");
    assert_eq!(other["flows"].as_array().map(Vec::len), Some(0), "{other}");
    let text = agent.cli(&["flows", "--vip", "192.0.2.100:80"]).expect("lb flows");
    let first = ports.iter().next().expect("a port");
    let line = text.lines().find(|l| l.contains(first.as_str())).expect("connection listed");
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        (cols[0], cols[2], cols[4], cols[6]),
        ("TCP", "ESTABLISHED", "192.0.2.100:80", "local")
    );
    let err = agent.cli(&["flows", "--vip", "192.0.2.100"]).expect_err("VIP without port");
    assert!(err.to_string().contains("--vip"), "{err}");
    drop(streams);
}

const CONNECTIONS: usize = 50;

/// The echo service VIP:7 over three reals, owned by VRRP instance VI_1 (advert 0.2 s), with
/// `[flow_sync]` (sync id 7) when `sync`.
fn pair_config(priority: u8, sync: bool) -> String {
    let mut text = format!(
        "[[vrrp_instance]]\nname = \"VI_1\"\nstate = \"BACKUP\"\ninterface = \"eth0\"\n\
         virtual_router_id = 51\npriority = {priority}\nadvert_int = 0.2\nversion = 3\n\
         virtual_ipaddress = [\"{VIP}/24\"]\n\n[[virtual_server]]\nvip = \"{VIP}\"\n\
         port = {DR_TCP_ECHO_PORT}\nprotocol = \"tcp\"\ninterface = \"eth0\"\n"
    );
    for i in 0..3 {
        text.push_str(&format!(
            "[[virtual_server.real_server]]\naddress = \"{}\"\nport = {DR_TCP_ECHO_PORT}\n",
            DrTopology::real_ip(i)
        ));
    }
    if sync {
        text.push_str("\n[flow_sync]\ninterface = \"eth0\"\nsync_id = 7\n");
    }
    text
}

fn flow_sync_status(agent: &LbAgent) -> serde_json::Value {
    agent.status().map(|s| s["flow_sync"].clone()).unwrap_or_default()
}

/// dir1 MASTER and dir2 BACKUP carry 50 long-lived connections; dir2's table is changed (a
/// real drained, another reweighted) so that Maglev maps many of them elsewhere there; dir1
/// hands over (SIGTERM). Returns the connections broken (ended, errors, or moved to another
/// real) and dir2's `flow_sync` status.
fn failover_after_table_change(label: &str, sync: bool) -> (usize, serde_json::Value) {
    let mut dr = DrTopology::build(label, 3, VIP, testpeer()).expect("topology");
    let dir2 = dr.topo.add_host("dir2", &["192.0.2.3/24"]).expect("second director");
    let dir = lb_tests::scratch_dir(&format!("{}-cfg-", dr.topo.prefix())).expect("temp dir");
    let (c1, c2) = (dir.path().join("dir1.toml"), dir.path().join("dir2.toml"));
    std::fs::write(&c1, pair_config(150, sync)).expect("config");
    std::fs::write(&c2, pair_config(100, sync)).expect("config");
    let args = ["--xdp-mode", "generic"];
    let a1 = LbAgent::start(&dr.director.ns, &lb_bin(), &c1, &args).expect("dir1");
    let a2 = LbAgent::start(&dir2.ns, &lb_bin(), &c2, &args).expect("dir2");
    let settled = wait_until(Duration::from_secs(10), || {
        a1.vrrp_state("VI_1").as_deref() == Some("MASTER")
            && a2.vrrp_state("VI_1").as_deref() == Some("BACKUP")
    });
    assert!(
        settled,
        "dir1 MASTER, dir2 BACKUP: {:?} / {:?}",
        a1.vrrp_state("VI_1"),
        a2.vrrp_state("VI_1")
    );
    a1.wait_all_backends("up", Duration::from_secs(10)).expect("reals up on dir1");
    a2.wait_all_backends("up", Duration::from_secs(10)).expect("reals up on dir2");
    let echo = SocketAddr::from((VIP, DR_TCP_ECHO_PORT));
    let ll = LongLived::start(&dr.client.ns, echo, CONNECTIONS, Duration::from_millis(100))
        .expect("long-lived connections");
    let before = ll.wait_round_trips(3, Duration::from_secs(10)).expect("every connection echoes");
    assert!(before.is_clean(), "problems before the failover: {before}");
    if sync {
        let learnt = wait_until(Duration::from_secs(5), || {
            flow_sync_status(&a2)["flows_installed"].as_u64().unwrap_or(0) >= CONNECTIONS as u64
        });
        assert!(learnt, "dir2 learnt the flows: {}", flow_sync_status(&a2));
        let flows: serde_json::Value =
            serde_json::from_str(&a2.cli(&["flows", "--json"]).expect("lb flows")).expect("json");
        let synced = flows["flows"]
            .as_array()
            .map_or(0, |f| f.iter().filter(|f| f["origin"] == "sync").count());
        assert!(synced >= CONNECTIONS, "dir2 lists the synced flows: {flows}");
    }
    // Only dir2's table changes: the master keeps forwarding as before.
    let svc = format!("{VIP}:{DR_TCP_ECHO_PORT}");
    let real = |i| format!("{}:{DR_TCP_ECHO_PORT}", DrTopology::real_ip(i));
    a2.cli(&["drain", &svc, &real(1)]).expect("drain on dir2");
    a2.cli(&["weight", &svc, &real(2), "50"]).expect("reweight on dir2");

    let at = ll.snapshot();
    a1.stop().expect("dir1 hands over");
    let took_over =
        wait_until(Duration::from_secs(10), || a2.vrrp_state("VI_1").as_deref() == Some("MASTER"));
    assert!(took_over, "dir2 MASTER: {:?}", a2.vrrp_state("VI_1"));
    // Every connection still alive goes on for 2 s more.
    let _ = wait_until(Duration::from_secs(10), || {
        let r = ll.snapshot();
        let p = r.progress_since(&at);
        r.connections.iter().all(|c| !c.alive || p[c.index] >= 30)
    });
    let report = ll.stop();
    let progress = report.progress_since(&at);
    let broken = report
        .connections
        .iter()
        .filter(|c| {
            !c.alive || c.error_count() > 0 || progress[c.index] < 30 || c.last_real != c.first_real
        })
        .count();
    eprintln!("FLOW-SYNC sync={sync}: broken {broken}/{CONNECTIONS}; {}", report.summary());
    let status = flow_sync_status(&a2);
    a2.stop().expect("clean stop of dir2");
    (broken, status)
}

#[test]
fn flow_sync_keeps_connections_through_a_failover_after_a_table_change() {
    if !require_root("flow sync failover") {
        return;
    }
    let (broken, _) = failover_after_table_change("fsnone", false);
    assert!(broken > 0, "control without [flow_sync]: the table change must break connections");
    let (broken, status) = failover_after_table_change("fssync", true);
    assert_eq!(broken, 0, "with [flow_sync]: {status}");
}

/// Forged and malformed sync datagrams from the client side, and a valid message of another
/// sync id: dropped and counted by reason, nothing installed, forwarding undisturbed.
#[test]
fn forged_sync_datagrams_are_dropped_and_counted() {
    if !require_root("flow sync bad input") {
        return;
    }
    let dr = DrTopology::build("fsbad", 2, VIP, testpeer()).expect("topology");
    let config = format!(
        "{}\n[flow_sync]\ninterface = \"eth0\"\nsync_id = 7\n",
        DrTopology::fast_tcp_check_config(VIP, 2)
    );
    let (agent, _dir) = dr.start_agent(&config, &[]).expect("lb run");
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("up");
    // (datagram, reason): header = reserved, sync id, size (2), count, version, spare (2).
    let entry_v4 = {
        let mut e = vec![0u8, 6, 0, 36, 0, 0, 0, 3, 0, 1];
        e.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 80]); // cport 40000, vport, dport
        e.extend_from_slice(&[0; 4]); // fwmark
        e.extend_from_slice(&900u32.to_be_bytes());
        e.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 100, 192, 0, 2, 11]);
        e
    };
    let message = |sync_id: u8, version: u8, entries: &[u8], count: u8| {
        let size = (8 + entries.len()) as u16;
        let mut m = vec![0, sync_id, (size >> 8) as u8, size as u8, count, version, 0, 0];
        m.extend_from_slice(entries);
        m
    };
    // Sent with TTL 1, as directors send (the `ttl` default), so they reach the decoder; a
    // well-formed message with another TTL is dropped before it.
    let cases: Vec<(Vec<u8>, u32, &str)> = vec![
        (vec![0, 7, 0], 1, "truncated"),
        (message(7, 2, &[], 0), 1, "wrong_version"),
        (message(9, 1, &entry_v4, 1), 1, "sync_id"),
        (vec![3, 7, 0, 8, 0, 1, 0, 0], 1, "version0"),
        (message(7, 1, &entry_v4[..20], 1), 1, "entry_truncated"),
        (message(7, 1, &entry_v4, 1), 64, "ttl"),
    ];
    let target = SocketAddr::from((DrTopology::DIRECTOR_IP, 8848));
    let send = |datagram: &[u8], ttl: u32| {
        let d = datagram.to_vec();
        dr.client
            .ns
            .run_in(move || {
                let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
                s.set_ttl(ttl)?;
                s.send_to(&d, target).map(|_| ())
            })
            .expect("netns")
            .expect("send");
    };
    for (datagram, ttl, _) in &cases {
        send(datagram, *ttl);
    }
    // An entry for a real this director does not know: counted, not installed.
    let mut unknown_real = entry_v4.clone();
    unknown_real[35] = 99;
    send(&message(7, 1, &unknown_real, 1), 1);
    let want: Vec<&str> = cases.iter().map(|(_, _, r)| *r).chain(["unknown_real"]).collect();
    let counted = wait_until(Duration::from_secs(3), || {
        let s = flow_sync_status(&agent);
        want.iter().all(|r| s["dropped"][*r].as_u64().unwrap_or(0) >= 1)
    });
    let status = flow_sync_status(&agent);
    assert!(counted, "every bad datagram counted by reason {want:?}: {status}");
    assert_eq!(status["flows_installed"], 0, "{status}");
    // Forwarding undisturbed.
    let served = lb_tests::count_http(&dr.client.ns, &format!("http://{VIP}/"), 10);
    assert_eq!(served.values().sum::<u32>(), 10, "{served:?}");
    let metrics_text = agent.cli(&["status"]).expect("lb status");
    assert!(metrics_text.contains("flow sync:"), "{metrics_text}");
}
