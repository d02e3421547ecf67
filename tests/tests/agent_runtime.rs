//! Runtime control of a running director: `lb drain`, `lb undrain`, `lb weight`, `lb reload`
//! change forwarding at once (seen in traffic and in `lb backends --json`); bad input changes
//! nothing.

use std::{net::Ipv4Addr, path::Path, process::Command, time::Duration};

use lb_tests::{DrTopology, LbAgent, count_http, lb_bin, require_root};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

fn config(weights: [u32; 3]) -> String {
    let mut text = format!(
        "[[virtual_server]]\nvip = \"{VIP}\"\nport = 80\nprotocol = \"tcp\"\ninterface = \"eth0\"\n"
    );
    for (i, w) in weights.iter().enumerate() {
        text.push_str(&format!(
            "[[virtual_server.real_server]]\naddress = \"192.0.2.{}\"\nweight = {w}\n",
            11 + i
        ));
    }
    text
}

/// (state, weight, override) of real `last` in `lb backends --json`.
fn real(agent: &LbAgent, last: u8) -> (String, u64, Option<String>) {
    let v = agent.backends().expect("backends");
    let b = v["services"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .find(|b| b["address"] == format!("192.0.2.{last}"))
        .cloned()
        .expect("real listed");
    (
        b["state"].as_str().unwrap_or_default().to_owned(),
        b["weight"].as_u64().unwrap_or(u64::MAX),
        b["override"].as_str().map(str::to_owned),
    )
}

/// Requests a real answered (not "(failed)").
fn answered_by_a_real(counts: &std::collections::BTreeMap<String, u32>) -> u32 {
    counts.iter().filter(|(who, _)| who.starts_with("rs")).map(|(_, n)| n).sum()
}

fn served(dr: &DrTopology, n: u32) -> std::collections::BTreeMap<String, u32> {
    count_http(&dr.client.ns, &format!("http://{VIP}/"), n)
}

#[test]
fn drain_weight_undrain_and_reload_change_forwarding_at_once() {
    if !require_root("runtime control") {
        return;
    }
    let dr = DrTopology::build("rt", 3, VIP, testpeer()).expect("topology");
    dr.director.add_addr(&format!("{VIP}/32")).expect("VIP on director");
    let dir = lb_tests::scratch_dir(&format!("{}-cfg-", dr.topo.prefix())).expect("dir");
    let cfg = dir.path().join("lb.toml");
    std::fs::write(&cfg, config([1, 1, 1])).expect("config");
    let args = ["--xdp-mode", "generic", "--metrics", "127.0.0.1:9100"];
    let agent = LbAgent::start(&dr.director.ns, &lb_bin(), &cfg, &args).expect("lb run");
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("up");

    // Drain rs1: no new flow reaches it; shown as drain, weight 0, override.
    let out = agent.cli(&["drain", "192.0.2.100:80", "192.0.2.11:80"]).expect("lb drain");
    assert!(out.contains("192.0.2.11:80: drain (weight 0)"), "{out}");
    assert_eq!(real(&agent, 11), ("drain".into(), 0, Some("drain".into())));
    let counts = served(&dr, 60);
    let mut answered = answered_by_a_real(&counts);
    assert_eq!(counts.get("rs1"), None, "drained real got new flows: {counts:?}");
    assert_eq!(counts.values().sum::<u32>(), 60);
    let text = agent.cli(&["backends"]).expect("backends");
    assert!(text.contains("drain*"), "runtime change marked in the table: {text}");

    // Weight: rs2 gets (almost) everything.
    agent.cli(&["weight", "192.0.2.100:80", "192.0.2.12:80", "50"]).expect("lb weight");
    assert_eq!(real(&agent, 12), ("up".into(), 50, Some("weight 50".into())));
    let counts = served(&dr, 100);
    answered += answered_by_a_real(&counts);
    assert!(counts.get("rs2").copied().unwrap_or(0) >= 85, "weight 50 vs 1: {counts:?}");

    // The same state in the Prometheus endpoint and in `lb status`.
    let metrics = dr
        .director
        .ns
        .run_ok(&[
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "2",
            "http://127.0.0.1:9100/metrics",
        ])
        .expect("metrics");
    let rs1 = r#"vip="192.0.2.100",port="80",protocol="tcp",real="192.0.2.11",real_port="80""#;
    assert!(metrics.contains(&format!("lb_real_state{{{rs1},state=\"drain\"}} 1")), "{metrics}");
    assert!(metrics.contains(&format!("lb_real_weight{{{rs1}}} 0")), "{metrics}");
    let rs2_packets = metrics
        .lines()
        .find(|l| l.starts_with("lb_real_packets_total{") && l.contains(r#"real="192.0.2.12""#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("rs2 packet counter");
    assert!(rs2_packets > 0, "{metrics}");
    assert!(metrics.contains("lb_dataplane_packets_total{name=\"tx\",reason=\"tx\"}"), "{metrics}");
    let status: serde_json::Value =
        serde_json::from_str(&agent.cli(&["status", "--json"]).expect("status")).expect("json");
    let maps = status["dataplane"]["maps"].as_array().expect("map usage");
    assert!(maps.iter().any(|m| m["name"] == "reals" && m["used"] == 3), "{status}");
    // Every forwarded frame is a new flow, a hit on an entry or a packet forwarded by the table
    // alone (docs/fast-path.md); each answered request was a new flow (a request that timed out
    // on a loaded machine may never have reached the director).
    let event = |name: &str| status["events"][name].as_u64().unwrap_or(0);
    let tx = status["counters"]["tx"]["packets"].as_u64().unwrap_or(0);
    let forwarded = event("flow_new") + event("flow_hit") + event("flow_stateless_hit");
    assert_eq!(forwarded, tx, "{status}");
    assert!(event("flow_new") >= u64::from(answered), "{answered} answered: {status}");
    // Which dataplane serves the service, in both views; XDP counts no connections per real.
    assert_eq!(
        status["service_dataplanes"],
        serde_json::json!([{ "service": "192.0.2.100:80/tcp", "dataplane": "xdp" }]),
        "{status}"
    );
    let backends = agent.backends().expect("backends");
    let service = &backends["services"][0];
    assert_eq!(service["dataplane"], "xdp", "{backends}");
    assert_eq!(service["backends"][0]["forward"], "Route", "{backends}");
    assert!(service["backends"][0].get("active_conns").is_none(), "{backends}");
    // A reload that would need IPVS (absent here) is refused and changes nothing.
    std::fs::write(
        &cfg,
        config([1, 1, 1]).replace("port = 80\n", "port = 80\nlb_kind = \"NAT\"\n"),
    )
    .expect("NAT config");
    let err = agent.cli(&["reload"]).expect_err("NAT without IPVS must be refused");
    assert!(err.to_string().contains("needs the IPVS dataplane"), "{err}");

    // Undrain rs1: it takes new flows again.
    agent.cli(&["undrain", "192.0.2.100:80", "192.0.2.11:80"]).expect("lb undrain");
    assert_eq!(real(&agent, 11), ("up".into(), 1, None));

    // A reload with an invalid file is refused, with the file's errors, and changes nothing.
    std::fs::write(&cfg, "[[virtual_server]]\nvip = \"192.0.2.300\"\n").expect("bad config");
    let err = agent.cli(&["reload"]).expect_err("invalid config must be refused");
    assert!(err.to_string().contains(":2:7: `vip` must be an IP address"), "{err}");
    assert_eq!(real(&agent, 12), ("up".into(), 50, Some("weight 50".into())), "state kept");

    // A valid reload applies the file and clears runtime changes.
    std::fs::write(&cfg, config([0, 1, 1])).expect("config");
    let out = agent.reload().expect("reload");
    assert!(out.contains("reloaded"), "{out}");
    assert_eq!(real(&agent, 11), ("drain".into(), 0, None));
    assert_eq!(real(&agent, 12), ("up".into(), 1, None), "runtime weight cleared by reload");
    let counts = served(&dr, 40);
    assert_eq!(counts.get("rs1"), None, "{counts:?}");
}

#[test]
fn bad_input_to_every_subcommand_is_refused_and_changes_nothing() {
    if !require_root("runtime control bad input") {
        return;
    }
    let dr = DrTopology::build("bad", 1, VIP, testpeer()).expect("topology");
    dr.director.add_addr(&format!("{VIP}/32")).expect("VIP on director");
    let dir = lb_tests::scratch_dir(&format!("{}-cfg-", dr.topo.prefix())).expect("dir");
    let cfg = dir.path().join("lb.toml");
    std::fs::write(
        &cfg,
        format!("[[virtual_server]]\nvip = \"{VIP}\"\nport = 80\ninterface = \"eth0\"\n[[virtual_server.real_server]]\naddress = \"192.0.2.11\"\n"),
    )
    .expect("config");
    let agent = LbAgent::start(&dr.director.ns, &lb_bin(), &cfg, &["--xdp-mode", "generic"])
        .expect("lb run");
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("up");
    let before = agent.backends().expect("backends");
    // (arguments, fragment of the error)
    let cases: &[(&[&str], &str)] = &[
        (&["drain", "192.0.2.100:81", "192.0.2.11:81"], "no virtual server 192.0.2.100:81"),
        (&["drain", "192.0.2.100:80", "192.0.2.99:80"], "real server 192.0.2.99:80 is not part of"),
        (&["drain", "192.0.2.100:80/udp", "192.0.2.11:80"], "no virtual server"),
        (&["drain", "nonsense", "192.0.2.11:80"], "is not VIP:PORT"),
        (&["undrain", "192.0.2.100:80", "192.0.2.11"], "is not REAL:PORT"),
        (&["weight", "192.0.2.100:80", "192.0.2.11:80", "65536"], "65536"),
        (&["weight", "192.0.2.100:80", "192.0.2.11:80", "heavy"], "heavy"),
        (&["weight", "192.0.2.100:80", "192.0.2.11:80"], "required"),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, want) in cases {
        let out = Command::new(lb_bin())
            .args(*args)
            .arg("--socket")
            .arg(agent.socket())
            .output()
            .expect("run lb");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(stderr.contains(want), "{args:?}: want {want:?} in {stderr}");
    }
    // A missing agent is reported clearly.
    let out = Command::new(lb_bin())
        .args(["backends", "--socket", "/nonexistent/lb.sock"])
        .output()
        .expect("run lb");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot reach the lb agent at /nonexistent/lb.sock")
    );
    assert_eq!(agent.backends().expect("backends"), before, "nothing changed");
}
