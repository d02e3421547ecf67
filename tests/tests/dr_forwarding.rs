//! End to end: the real `lb` binary directs traffic from a client to real servers in network
//! namespaces (DR: MAC rewrite), and the replies go from the reals straight to the client.

use std::{net::Ipv4Addr, path::Path, time::Duration};

use lb_tests::{
    DR_UDP_PORT, DrTopology, LbAgent, Process, count_http, lb_bin, require_root, udp_request,
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

fn config(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"
[[virtual_server]]
vip = "{VIP}"
port = 80
protocol = "tcp"
interface = "eth0"
[[virtual_server.real_server]]
address = "192.0.2.11"
[[virtual_server.real_server]]
address = "192.0.2.12"
[[virtual_server.real_server]]
address = "192.0.2.13"
weight = 2

[[virtual_server]]
vip = "{VIP}"
port = {DR_UDP_PORT}
protocol = "udp"
interface = "eth0"
[[virtual_server.real_server]]
address = "192.0.2.11"
[[virtual_server.real_server]]
address = "192.0.2.12"
"#
    );
    let path = dir.join("lb.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Source MACs of the frames carrying replies from the VIP, as seen by the client.
fn reply_source_macs(capture: Process) -> Vec<String> {
    let out = capture.wait_with_output(Duration::from_secs(5)).expect("tcpdump output");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

#[test]
fn dr_forwarding_spreads_flows_and_replies_bypass_the_director() {
    if !require_root("dr_forwarding") {
        return;
    }
    let dr = DrTopology::build("dr", 3, VIP, testpeer()).expect("topology");
    // The director owns the VIP (what VRRP or an operator does), so the client ARPs to it.
    dr.director.add_addr(&format!("{VIP}/32")).expect("VIP on director");
    let dir = tempdir(dr.topo.prefix());
    let agent =
        LbAgent::start(&dr.director.ns, &lb_bin(), &config(dir.path()), &["--xdp-mode", "generic"])
            .expect("lb run");
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("all reals resolved");

    // Watch the client's side: every TCP reply from the VIP must come from a real's MAC.
    let capture = dr
        .client
        .ns
        .spawn(&[
            "tcpdump",
            "-i",
            "eth0",
            "-n",
            "-e",
            "-l",
            "-c",
            "40",
            "src",
            "host",
            &VIP.to_string(),
            "and",
            "tcp",
        ])
        .expect("tcpdump");
    capture
        .wait_for_stderr_line(|l| l.contains("listening on"), Duration::from_secs(5))
        .expect("tcpdump started");

    let link = dr.director.ns.run_ok(&["ip", "link", "show", "eth0"]).expect("ip link");
    assert!(link.contains("xdpgeneric"), "XDP (generic) attached while running: {link}");

    let counts = count_http(&dr.client.ns, &format!("http://{VIP}/"), 60);
    eprintln!("requests served per real: {counts:?}");
    assert_eq!(counts.get("(failed)"), None, "every request answered: {counts:?}");
    for rs in ["rs1", "rs2", "rs3"] {
        assert!(counts.get(rs).copied().unwrap_or(0) > 0, "{rs} served nothing: {counts:?}");
    }
    assert_eq!(counts.values().sum::<u32>(), 60);

    let macs = reply_source_macs(capture);
    eprintln!("reply frames captured at the client: {}", macs.len());
    assert!(!macs.is_empty(), "captured no replies");
    let reals: Vec<String> = dr.reals.iter().map(|r| r.mac_string()).collect();
    let director = dr.director.mac_string();
    for m in &macs {
        assert_ne!(m.trim_end_matches(','), director, "a reply came through the director");
        assert!(reals.iter().any(|r| m.starts_with(r.as_str())), "reply from unknown MAC {m}");
    }

    // UDP: each datagram is a flow; replies come from the VIP.
    let target = std::net::SocketAddr::from((VIP, DR_UDP_PORT));
    let reply = udp_request(&dr.client.ns, target, b"ping", Duration::from_secs(2)).expect("udp");
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("rs1 ping") || text.starts_with("rs2 ping"), "udp reply {text:?}");

    // The agent's view agrees with what the client saw.
    let v = agent.backends().expect("backends");
    let tcp = &v["services"][0];
    assert_eq!(tcp["vip"], VIP.to_string());
    assert_eq!(tcp["protocol"], "tcp");
    let forwarded: u64 = tcp["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["packets"].as_u64().unwrap_or(0))
        .sum();
    assert!(forwarded >= 60 * 3, "at least SYN, ACK, request per connection: {forwarded}");
    for b in tcp["backends"].as_array().expect("backends") {
        assert!(b["packets"].as_u64().unwrap_or(0) > 0, "counters per real: {b}");
    }
    let text = agent.cli(&["backends"]).expect("lb backends");
    assert!(text.contains("TCP  192.0.2.100:80 mh"), "{text}");
    assert!(text.contains("-> 192.0.2.13:80"), "{text}");

    // Clean stop: exit 0 and the XDP program is gone from the interface.
    let socket = agent.socket().to_owned();
    agent.stop().expect("clean stop");
    assert!(!socket.exists(), "control socket removed on stop");
    let link = dr.director.ns.run_ok(&["ip", "link", "show", "eth0"]).expect("ip link");
    assert!(!link.contains("xdp"), "XDP still attached after stop: {link}");
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    lb_tests::scratch_dir(&format!("{prefix}-cfg-")).expect("temp dir")
}

/// A keepalived.conf as operators have it (plus the interface) runs unchanged.
#[test]
fn lb_runs_a_keepalived_conf_unchanged() {
    if !require_root("keepalived.conf") {
        return;
    }
    let dr = DrTopology::build("kc", 3, VIP, testpeer()).expect("topology");
    dr.director.add_addr(&format!("{VIP}/32")).expect("VIP on director");
    let dir = tempdir(dr.topo.prefix());
    let conf = dir.path().join("keepalived.conf");
    let mut text = format!(
        "! keepalived.conf\nglobal_defs {{\n    router_id LVS_TEST\n}}\n\nvirtual_server {VIP} 80 {{\n    delay_loop 1\n    lb_algo wrr\n    lb_kind DR\n    protocol TCP\n    lb_interface eth0\n"
    );
    for i in 0..3 {
        text.push_str(&format!(
            "    real_server 192.0.2.{} 80 {{\n        weight 1\n        TCP_CHECK {{\n            connect_timeout 1\n            nb_get_retry 1\n        }}\n    }}\n",
            11 + i
        ));
    }
    text.push_str("}\n");
    std::fs::write(&conf, text).expect("write keepalived.conf");
    let agent = LbAgent::start(&dr.director.ns, &lb_bin(), &conf, &["--xdp-mode", "generic"])
        .expect("lb run -c keepalived.conf");
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("all reals up");
    let counts = count_http(&dr.client.ns, &format!("http://{VIP}/"), 30);
    assert_eq!(counts.get("(failed)"), None, "{counts:?}");
    assert_eq!(counts.len(), 3, "all three reals answer: {counts:?}");
    let v = agent.backends().expect("backends");
    assert_eq!(v["services"][0]["scheduler"], "wrr", "the configured scheduler is shown");
}
