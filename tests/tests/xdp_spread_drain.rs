//! The XDP dataplane under many flows: new flows follow the configured weights, and draining a real
//! (weight 0 + `lb reload`) keeps its open connections while new ones avoid it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lb_tests::{
    DR_HTTP_PORT, DR_TCP_ECHO_PORT, DrTopology, LbAgent, LongLived, Netns, lb_bin, require_root,
    wait_until,
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const REALS: [&str; 3] = ["rs1", "rs2", "rs3"];
const FLOW_TIMEOUT: Duration = Duration::from_secs(2);

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

/// Writes TCP services VIP:80 and VIP:7, each with rs1..rs3 at `weights`, to `path`.
fn write_config(path: &Path, weights: [u32; 3]) {
    let mut text = String::new();
    for port in [DR_HTTP_PORT, DR_TCP_ECHO_PORT] {
        text.push_str(&format!(
            "[[virtual_server]]\nvip = \"{VIP}\"\nport = {port}\nprotocol = \"tcp\"\n\
             interface = \"eth0\"\n"
        ));
        for (i, w) in weights.iter().enumerate() {
            text.push_str(&format!(
                "[[virtual_server.real_server]]\naddress = \"{}\"\nport = {port}\nweight = {w}\n",
                DrTopology::real_ip(i)
            ));
        }
        text.push('\n');
    }
    std::fs::write(path, text).expect("write config");
}

/// A DR topology with 3 reals, the VIP on the director, and `lb run` there with all reals up.
fn setup(label: &str, weights: [u32; 3]) -> (DrTopology, tempfile::TempDir, PathBuf, LbAgent) {
    let dr = DrTopology::build(label, 3, VIP, testpeer()).expect("topology");
    dr.director.add_addr(&format!("{VIP}/32")).expect("VIP on director");
    let dir = lb_tests::scratch_dir(&format!("{}-cfg-", dr.topo.prefix())).expect("temp dir");
    let config = dir.path().join("lb.toml");
    write_config(&config, weights);
    let agent = LbAgent::start(&dr.director.ns, &lb_bin(), &config, &["--xdp-mode", "generic"])
        .expect("lb run");
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("all reals resolved");
    (dr, dir, config, agent)
}

/// One HTTP GET on a fresh connection; the real's name from the body.
fn http_flow(target: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&target, FLOW_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(FLOW_TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(FLOW_TIMEOUT)).map_err(|e| e.to_string())?;
    let req = format!("GET / HTTP/1.1\r\nHost: {VIP}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| format!("read (after {} bytes): {e}", resp.len()))?;
    let resp = String::from_utf8_lossy(&resp);
    let Some((head, body)) = resp.split_once("\r\n\r\n") else {
        return Err(format!("no HTTP head in {resp:?}"));
    };
    if !head.starts_with("HTTP/1.1 200 ") {
        return Err(format!("status {:?}", head.lines().next()));
    }
    Ok(body.trim().to_string())
}

/// Flows answered per real, plus the failures.
struct Spread {
    by_real: BTreeMap<String, usize>,
    failures: Vec<String>,
}

impl Spread {
    fn total(&self) -> usize {
        self.by_real.values().sum::<usize>() + self.failures.len()
    }
    fn get(&self, real: &str) -> usize {
        self.by_real.get(real).copied().unwrap_or(0)
    }
}

/// `n` HTTP flows from `client` to VIP:80 (one connection each) on `parallel` threads inside the
/// client's namespace.
fn http_flows(client: &Netns, n: usize, parallel: usize) -> Spread {
    let target = SocketAddr::from((VIP, DR_HTTP_PORT));
    let results: Vec<Vec<Result<String, String>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..parallel)
            .map(|w| {
                let share = n / parallel + usize::from(w < n % parallel);
                s.spawn(move || {
                    client
                        .run_in(move || (0..share).map(|_| http_flow(target)).collect::<Vec<_>>())
                        .expect("enter the client namespace")
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("HTTP worker")).collect()
    });
    let mut spread = Spread { by_real: BTreeMap::new(), failures: Vec::new() };
    for r in results.into_iter().flatten() {
        match r {
            Ok(real) => *spread.by_real.entry(real).or_insert(0) += 1,
            Err(e) => spread.failures.push(e),
        }
    }
    spread
}

#[test]
fn many_flows_follow_weights() {
    if !require_root("many_flows_follow_weights") {
        return;
    }
    let weights = [1u32, 2, 3];
    let (dr, _dir, _config, agent) = setup("spread", weights);

    // Each flow lands on real i with probability p_i = w_i / Σw (the Maglev table matches the
    // weights to well under 1 % at 65537 slots; the flow hash spreads source ports uniformly), so
    // real i's count is Binomial(N, p_i), σ_i = sqrt(N p_i (1 - p_i)). The bound ±10 % of N p_i is
    // z_i = 0.1 N p_i / σ_i standard deviations wide; for the smallest share (1/6) at N = 9000 that
    // is 4.2σ, still ≥ 3.5σ if the table were 1.5 % off.
    const FLOWS: usize = 9000;
    let total_weight: u32 = weights.iter().sum();
    let started = Instant::now();
    let spread = http_flows(&dr.client.ns, FLOWS, 4);
    let took = started.elapsed();
    eprintln!(
        "{FLOWS} flows in {:.1} s ({:.0}/s): {:?}, {} failed",
        took.as_secs_f64(),
        FLOWS as f64 / took.as_secs_f64(),
        spread.by_real,
        spread.failures.len()
    );
    assert_eq!(spread.total(), FLOWS);
    assert!(
        spread.failures.is_empty(),
        "{} of {FLOWS} flows failed; first ones: {:?}; per real: {:?}",
        spread.failures.len(),
        &spread.failures[..spread.failures.len().min(5)],
        spread.by_real
    );
    assert!(
        spread.by_real.keys().all(|k| REALS.contains(&k.as_str())),
        "answers from unexpected servers: {:?}",
        spread.by_real
    );

    let mut problems = Vec::new();
    for (i, real) in REALS.iter().enumerate() {
        let p = f64::from(weights[i]) / f64::from(total_weight);
        let expected = FLOWS as f64 * p;
        let sigma = (FLOWS as f64 * p * (1.0 - p)).sqrt();
        let got = spread.get(real);
        let rel = (got as f64 - expected) / expected;
        let z = (got as f64 - expected) / sigma;
        let bound_sigmas = 0.1 * expected / sigma;
        eprintln!(
            "{real} (weight {}): {got} flows, expected {expected:.0} ± {sigma:.1} (σ); off by \
             {:+.2} % = {z:+.2}σ; the ±10 % bound is {bound_sigmas:.2}σ",
            weights[i],
            rel * 100.0
        );
        assert!(
            bound_sigmas >= 3.5,
            "test design: the bound for {real} is only {bound_sigmas:.2}σ"
        );
        if rel.abs() > 0.10 {
            problems.push(format!(
                "{real} (weight {}) got {got} of {FLOWS} flows, expected {expected:.0} ±10 % \
                 ({:+.1} %, {z:+.1}σ)",
                weights[i],
                rel * 100.0
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "shares off the weights: {problems:#?}; all: {:?}",
        spread.by_real
    );

    // The agent counted packets for every real of the HTTP service.
    let v = agent.backends().expect("lb backends --json");
    let http = v["services"]
        .as_array()
        .and_then(|ss| ss.iter().find(|s| s["port"] == u64::from(DR_HTTP_PORT)))
        .expect("the HTTP service in lb backends");
    let packets: Vec<u64> = http["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["packets"].as_u64().unwrap_or(0))
        .collect();
    eprintln!("lb backends packets on :80 per real: {packets:?}");
    assert!(
        packets.iter().sum::<u64>() >= 3 * FLOWS as u64,
        "at least SYN, ACK and request per flow through the director: {packets:?}"
    );
    agent.stop().expect("clean stop");
}

/// The backend entry for `address` in service `port` of `lb backends --json`.
fn backend(v: &serde_json::Value, port: u16, address: Ipv4Addr) -> Option<serde_json::Value> {
    v["services"].as_array()?.iter().find(|s| s["port"] == u64::from(port))?["backends"]
        .as_array()?
        .iter()
        .find(|b| b["address"] == address.to_string())
        .cloned()
}

#[test]
fn drain_keeps_open_connections_new_ones_avoid_it() {
    if !require_root("drain_keeps_open_connections_new_ones_avoid_it") {
        return;
    }
    let (dr, _dir, config, agent) = setup("drain", [1, 1, 1]);
    let rs1 = DrTopology::real_ip(0);

    // Long-lived connections, spread over the three reals.
    let echo = SocketAddr::from((VIP, DR_TCP_ECHO_PORT));
    let ll = LongLived::start(&dr.client.ns, echo, 30, Duration::from_millis(100))
        .expect("open long-lived connections");
    let before = ll.wait_round_trips(3, Duration::from_secs(10)).expect("every connection echoes");
    let on_rs1 = before.on_real("rs1").len();
    eprintln!("before the drain: {}", before.summary());
    assert!(before.is_clean(), "problems before the drain: {before}");
    assert!(on_rs1 > 0, "no long-lived connection landed on rs1, nothing to drain: {before}");

    // Drain rs1 on both services.
    write_config(&config, [0, 1, 1]);
    let out = agent.reload().expect("lb reload");
    eprintln!("lb reload: {}", out.trim());
    let at_reload = ll.snapshot();

    // Every check below is collected, so one failure does not hide the others.
    let mut failures: Vec<String> = Vec::new();

    let drained = wait_until(Duration::from_secs(5), || {
        agent.backends().is_ok_and(|v| {
            [DR_HTTP_PORT, DR_TCP_ECHO_PORT].iter().all(|&port| {
                backend(&v, port, rs1).is_some_and(|b| b["state"] == "drain" && b["weight"] == 0)
            })
        })
    });
    let v = agent.backends().expect("lb backends --json");
    for port in [DR_HTTP_PORT, DR_TCP_ECHO_PORT] {
        for i in 0..3 {
            let b = backend(&v, port, DrTopology::real_ip(i));
            let (state, weight) = if i == 0 { ("drain", 0) } else { ("up", 1) };
            let ok = b.as_ref().is_some_and(|b| b["state"] == state && b["weight"] == weight);
            if !ok {
                failures.push(format!(
                    "lb backends: {}:{port} should be {state} with weight {weight} after the \
                     reload{}, shows {}",
                    DrTopology::real_ip(i),
                    if drained { "" } else { " (waited 5 s)" },
                    b.map_or_else(|| "no such backend".to_string(), |b| b.to_string())
                ));
            }
        }
    }

    // Keep the long-lived connections going through and after the change.
    std::thread::sleep(Duration::from_secs(2));

    // New flows avoid the drained real.
    let spread = http_flows(&dr.client.ns, 200, 2);
    eprintln!(
        "200 new flows after the drain: {:?}, {} failed",
        spread.by_real,
        spread.failures.len()
    );
    if spread.get("rs1") > 0 {
        failures.push(format!(
            "{} of 200 new flows went to the drained rs1: {:?}",
            spread.get("rs1"),
            spread.by_real
        ));
    }
    if !spread.failures.is_empty() {
        failures.push(format!(
            "{} of 200 new flows failed: {:?}",
            spread.failures.len(),
            &spread.failures[..spread.failures.len().min(5)]
        ));
    }
    for real in ["rs2", "rs3"] {
        if spread.get(real) == 0 {
            failures.push(format!("{real} got none of 200 new flows: {:?}", spread.by_real));
        }
    }

    // The long-lived connections: none broke, none moved, those on rs1 kept working.
    let report = ll.stop();
    eprintln!("long-lived connections at the end: {report}");
    let progress = report.progress_since(&at_reload);
    // (Connections given up are reported with their errors below.)
    for c in report.on_real("rs1").into_iter().filter(|c| c.alive) {
        let after = progress[c.index];
        if after < 10 {
            failures.push(format!(
                "long-lived conn {} on rs1 ({:?}) made only {after} round trips in the ~2.5 s \
                 after the reload (expected ~25 at 100 ms)",
                c.index, c.local
            ));
        }
    }
    let errors = report.errors();
    if !errors.is_empty() {
        let broken: Vec<usize> =
            report.connections.iter().filter(|c| c.error_count() > 0).map(|c| c.index).collect();
        let broken_on_rs1 = report.on_real("rs1").iter().filter(|c| c.error_count() > 0).count();
        failures.push(format!(
            "long-lived connections had {} errors on {} of {} connections ({broken_on_rs1} of the \
             {on_rs1} on rs1; connections {broken:?}):\n    {}",
            errors.len(),
            broken.len(),
            report.connections.len(),
            errors.join("\n    ")
        ));
    }

    assert!(failures.is_empty(), "drain test failures:\n- {}", failures.join("\n- "));
    agent.stop().expect("clean stop");
}
