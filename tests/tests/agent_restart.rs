//! Hitless agent restart: with `--pin-dir`, a SIGKILLed agent leaves forwarding running and the
//! next agent adopts the pinned dataplane; 50 long-lived connections see no error throughout.

use std::{net::Ipv4Addr, path::Path, time::Duration};

use lb_tests::{BpfFs, DrTopology, LbAgent, LongLived, lb_bin, require_root};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

#[test]
fn sigkilled_agent_is_replaced_without_breaking_connections() {
    if !require_root("agent restart") {
        return;
    }
    let dr = DrTopology::build("ar", 3, VIP, testpeer()).expect("topology");
    dr.director.add_addr(&format!("{VIP}/32")).expect("VIP on director");
    let tmp = lb_tests::scratch_dir(&format!("{}-restart-", dr.topo.prefix())).expect("dir");
    let dir = tmp.path();
    let bpf = BpfFs::mount(dir.join("bpf")).expect("bpffs");
    let cfg = dir.join("lb.toml");
    let mut text = format!("[[virtual_server]]\nvip = \"{VIP}\"\nport = 7\ninterface = \"eth0\"\n");
    for i in 0..3 {
        text.push_str(&format!(
            "[[virtual_server.real_server]]\naddress = \"192.0.2.{}\"\n",
            11 + i
        ));
    }
    std::fs::write(&cfg, text).expect("config");
    let pin = bpf.dir.join("lb").to_string_lossy().into_owned();
    let state = dir.join("dataplane.json").to_string_lossy().into_owned();
    let args = ["--xdp-mode", "generic", "--pin-dir", &pin, "--state-file", &state];

    let first = LbAgent::start(&dr.director.ns, &lb_bin(), &cfg, &args).expect("first agent");
    first.wait_all_backends("up", Duration::from_secs(10)).expect("up");
    let conns = LongLived::start(&dr.client.ns, (VIP, 7).into(), 50, Duration::from_millis(100))
        .expect("long-lived connections");
    let r0 = conns.wait_round_trips(3, Duration::from_secs(10)).expect("all connections talking");

    first.kill().expect("SIGKILL the agent");
    // No agent at all: the pinned program keeps forwarding.
    let r1 =
        conns.wait_progress(&r0, 5, Duration::from_secs(10)).expect("forwarding without an agent");

    let second = LbAgent::start(&dr.director.ns, &lb_bin(), &cfg, &args).expect("second agent");
    let r2 =
        conns.wait_progress(&r1, 10, Duration::from_secs(10)).expect("forwarding after adoption");
    let report = conns.stop();
    eprintln!("{}", report.summary());
    assert!(report.is_clean(), "connections broken by the restart:\n{report}");
    assert!(r2.total_round_trips() > r0.total_round_trips());
    let log = second.stderr();
    assert!(log.contains("adopted the pinned dataplane"), "{log}");
    assert!(log.contains("took over the pinned XDP link"), "{log}");

    // A clean stop removes the pins.
    second.stop().expect("clean stop");
    assert!(!Path::new(&pin).exists(), "pins left behind after SIGTERM");
}
