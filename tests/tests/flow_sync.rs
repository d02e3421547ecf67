//! Flow state on a running director: `lb flows` lists the connections the XDP program forwards
//! (like `ipvsadm -Lnc`), filtered by service and bounded by `--limit`.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use lb_tests::{DrTopology, require_root, tcp_connect};

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
