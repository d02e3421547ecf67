//! What an operator lives with: journald-friendly and JSON logs, keepalived's SIGUSR1/SIGUSR2
//! dumps (the agent keeps forwarding), and `/healthz`, `/readyz` and 404 on the metrics listener.

use std::{net::Ipv4Addr, path::Path, time::Duration};

use lb_tests::{DrTopology, LbAgent, Netns, count_http, lb_bin, require_root, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const METRICS: &str = "127.0.0.1:9100";

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

fn config(weight: u32) -> String {
    format!(
        "[[virtual_server]]\nvip = \"{VIP}\"\nport = 80\nprotocol = \"tcp\"\ninterface = \"eth0\"\n\
         [[virtual_server.real_server]]\naddress = \"192.0.2.11\"\nweight = {weight}\n"
    )
}

/// GET `path` on the metrics listener from inside `ns`: (status code, body).
fn get(ns: &Netns, path: &str) -> (u16, String) {
    let url = format!("http://{METRICS}{path}");
    let out = ns
        .exec(&["curl", "-sS", "--noproxy", "*", "--max-time", "2", "-w", "\n%{http_code}", &url])
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status code"), body.to_owned())
}

/// Every line of a journald-mode log: an sd-daemon priority, then the level (no timestamp, no
/// escape codes).
fn assert_journald_lines(log: &str) {
    assert!(!log.contains('\x1b'), "escape codes under journald:\n{log}");
    let mut n = 0;
    for line in log.lines().filter(|l| !l.is_empty()) {
        let (prio, level) = match line.get(..3) {
            Some("<3>") => ("<3>", "ERROR"),
            Some("<4>") => ("<4>", "WARN"),
            Some("<6>") => ("<6>", "INFO"),
            Some("<7>") => ("<7>", "DEBUG"),
            _ => panic!("no priority prefix: {line:?}\n{log}"),
        };
        let rest = line[prio.len()..].trim_start();
        assert!(rest.starts_with(level), "timestamp or wrong level after {prio}: {line:?}");
        n += 1;
    }
    assert!(n > 3, "too little logged:\n{log}");
}

#[test]
fn journald_logs_signal_dumps_and_health_endpoints() {
    if !require_root("operator logs, dumps and endpoints") {
        return;
    }
    let dr = DrTopology::build("op", 1, VIP, testpeer()).expect("topology");
    dr.director.add_addr(&format!("{VIP}/32")).expect("VIP on director");
    let dir = std::env::temp_dir().join(format!("{}-cfg", dr.topo.prefix()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = dir.join("lb.toml");
    std::fs::write(&cfg, config(1)).expect("config");
    let args = ["--xdp-mode", "generic", "--metrics", METRICS];
    let env = [("JOURNAL_STREAM", "8:12345")];
    let agent =
        LbAgent::start_with_env(&dr.director.ns, &lb_bin(), &cfg, &args, &env).expect("lb run");
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("up");
    let ns = &dr.director.ns;

    // The metrics listener's pages.
    assert_eq!(get(ns, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(get(ns, "/readyz").0, 200, "{:?}", get(ns, "/readyz"));
    let (code, body) = get(ns, "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("lb_real_state"), "{body}");
    // Prometheus text by default; OpenMetrics (`# EOF`) when the scraper asks for it.
    assert!(
        !body.contains("# EOF") && body.contains("# TYPE lb_real_packets_total counter"),
        "{body}"
    );
    let url = format!("http://{METRICS}/metrics");
    let accept = "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5";
    let out = ns
        .exec(&["curl", "-sS", "--noproxy", "*", "--max-time", "2", "-i", "-H", accept, &url])
        .expect("curl");
    let open = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert!(open.contains("Content-Type: application/openmetrics-text; version=1.0.0"), "{open}");
    assert!(
        open.trim_end().ends_with("# EOF") && open.contains("# TYPE lb_real_packets counter"),
        "{open}"
    );
    assert_eq!(get(ns, "/nothing-here").0, 404);

    // SIGUSR1 and SIGUSR2: a dump each, the agent answering and forwarding throughout.
    for (sig, file, kind) in
        [(libc::SIGUSR1, "lb.data.json", "data"), (libc::SIGUSR2, "lb.stats.json", "stats")]
    {
        let path = agent.runtime_dir().join(file);
        agent.signal(sig).expect("signal");
        let parsed = || {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        };
        assert!(wait_until(Duration::from_secs(5), || parsed().is_some()), "{file} not written");
        let v = parsed().expect("dump");
        assert_eq!(v["kind"], kind, "{v}");
        assert_eq!(v["backends"]["services"][0]["backends"][0]["address"], "192.0.2.11", "{v}");
        if kind == "data" {
            assert_eq!(v["config"]["virtual_servers"][0]["vip"], VIP.to_string(), "{v}");
        } else {
            assert!(v["status"]["counters"].is_object(), "{v}");
        }
        // Logged once written: wait for the line too.
        let shown = path.display().to_string();
        let logged = wait_until(Duration::from_secs(5), || agent.stderr().contains(&shown));
        assert!(logged, "dump path not logged:\n{}", agent.stderr());
    }
    agent.backends().expect("still answering");
    let counts = count_http(&dr.client.ns, &format!("http://{VIP}/"), 10);
    assert_eq!(counts.get("rs1"), Some(&10), "still forwarding: {counts:?}");

    // Reloads: counted, and the log line says what changed.
    std::fs::write(&cfg, config(2)).expect("config");
    agent.reload().expect("reload");
    std::fs::write(&cfg, "not toml [").expect("config");
    assert!(agent.reload().is_err(), "a broken file is refused");
    let (_, metrics) = get(ns, "/metrics");
    for line in ["lb_reload_success_total 1", "lb_reload_failure_total 1"] {
        assert!(metrics.lines().any(|l| l == line), "no {line} in\n{metrics}");
    }
    assert!(metrics.contains("lb_reload_config_hash{hash=\""), "{metrics}");
    let changed = "changed=services +0 -0 ~0, reals +0 -0 ~1";
    let logged = wait_until(Duration::from_secs(5), || agent.stderr().contains(changed));
    assert!(logged, "no {changed}:\n{}", agent.stderr());

    let log = agent.stop().expect("stops cleanly");
    assert_journald_lines(&log);

    // JSON logs; a service whose only real has weight 0 is not ready, and says why.
    std::fs::write(&cfg, config(0)).expect("config");
    let args = ["--xdp-mode", "generic", "--metrics", METRICS, "--log-format", "json"];
    let agent = LbAgent::start(ns, &lb_bin(), &cfg, &args).expect("lb run --log-format json");
    let (code, body) = get(ns, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("none with a real server up"), "{body}");
    let log = agent.stop().expect("stops cleanly");
    let mut n = 0;
    for line in log.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
        n += 1;
    }
    assert!(n > 3, "too little logged:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
