//! A reload that takes seconds to read its file (a ~9 MB config) holds up nothing else: a real
//! whose checks fail meanwhile leaves the forwarding table within its detection time, healthy
//! reals stay up, `lb backends` answers at once and a second `lb reload` is refused with a clear
//! message instead of timing out. Both ways of reloading (`lb reload`, SIGHUP) share that path.
//! SIGTERM during a reload stops the agent at once.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use lb_tests::{DrTopology, LbAgent, count_http, lb_bin, require_root, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// Bytes of empty comment lines appended to the reloaded file: ~4.7 million lines, which take
/// the debug build over 2 s of CPU to read (BENCHMARKS.md, "Reload of a 10 MB config"), several
/// times the detection time below. Well under the 16 MiB a config file may have.
const PADDING: usize = 9 << 20;

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

/// Three reals with fast TCP checks: a dead one is down within `detection()`.
fn services() -> String {
    DrTopology::fast_tcp_check_config(VIP, 3)
}

/// One check: delay_loop + connect_timeout, plus slack for scheduling on a busy machine.
fn detection() -> Duration {
    Duration::from_secs_f64(0.5 + 0.5 + 1.5)
}

/// The same services followed by `PADDING` bytes of `#` lines (many short lines are what makes
/// reading slow; long comment lines read about six times faster).
fn large(services: &str) -> String {
    let mut text = String::with_capacity(services.len() + PADDING);
    text.push_str(services);
    text.push_str(&"#\n".repeat(PADDING / 2));
    text
}

fn states(agent: &LbAgent) -> Vec<(String, String)> {
    let v = agent.backends().unwrap_or_default();
    v["services"][0]["backends"]
        .as_array()
        .map(|bs| {
            bs.iter()
                .map(|b| {
                    let s = |k: &str| b[k].as_str().unwrap_or_default().to_owned();
                    (s("address"), s("state"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn state_of(states: &[(String, String)], last: u8) -> &str {
    let addr = format!("192.0.2.{last}");
    states.iter().find(|(a, _)| *a == addr).map(|(_, s)| s.as_str()).unwrap_or_default()
}

fn reloads_done(agent: &LbAgent) -> usize {
    agent.stderr().matches("configuration reloaded").count()
}

#[derive(Clone, Copy, Debug)]
enum Trigger {
    Socket,
    Sighup,
}

#[test]
fn a_slow_reload_never_freezes_failover_health_or_the_control_socket() {
    if !require_root("slow reload") {
        return;
    }
    let mut dr = DrTopology::build("slowrl", 3, VIP, testpeer()).expect("topology");
    let (agent, dir) = dr.start_agent(&services(), &[]).expect("lb run");
    let cfg = dir.path().join("lb.toml");
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("all up");
    // Same services, so every real keeps its health state across the reloads.
    std::fs::write(&cfg, large(&services())).expect("large config");

    // (how the reload is asked for, index of the real whose server dies during it)
    let scenarios = [(Trigger::Socket, 0usize), (Trigger::Sighup, 1)];
    let mut down_already: Vec<u8> = Vec::new();
    for (trigger, victim) in scenarios {
        let last = 11 + victim as u8;
        let log_before = agent.stderr().matches("reloading the configuration").count();
        let done_before = reloads_done(&agent);
        let socket = agent.socket().to_owned();
        let reload = match trigger {
            Trigger::Socket => Some(std::thread::spawn(move || {
                Command::new(lb_bin()).arg("reload").arg("--socket").arg(socket).output()
            })),
            Trigger::Sighup => {
                agent.signal(libc::SIGHUP).expect("SIGHUP");
                None
            }
        };
        assert!(
            wait_until(Duration::from_secs(10), || {
                agent.stderr().matches("reloading the configuration").count() > log_before
            }),
            "{trigger:?}: the reload did not start:\n{}",
            agent.stderr()
        );
        let started = Instant::now();
        dr.stop_peer(victim).expect("stop the real's server");

        // Poll as an operator would: every answer must come quickly, and no healthy real may
        // ever be shown down.
        let mut slowest = Duration::ZERO;
        let mut seen = Vec::new();
        let down = wait_until(detection(), || {
            let asked = Instant::now();
            let s = states(&agent);
            slowest = slowest.max(asked.elapsed());
            let done = state_of(&s, last) == "down";
            seen = s;
            done
        });
        let failover = started.elapsed();
        assert!(
            down,
            "{trigger:?}: 192.0.2.{last} not down within {:?} of its server stopping: {seen:?}\n{}",
            detection(),
            agent.stderr()
        );
        for (addr, state) in &seen {
            let healthy = !addr.ends_with(&format!(".{last}"))
                && !down_already.iter().any(|d| addr.ends_with(&format!(".{d}")));
            assert!(!healthy || state == "up", "{trigger:?}: healthy {addr} shown {state}");
        }
        assert!(slowest < Duration::from_secs(1), "{trigger:?}: `lb backends` took {slowest:?}");
        // The failover happened while the reload was still reading: a second one is refused at
        // once, not queued behind it until the client times out.
        assert_eq!(
            reloads_done(&agent),
            done_before,
            "{trigger:?}: the reload finished before the failover, so nothing overlapped \
             (a faster machine? make PADDING larger)"
        );
        let asked = Instant::now();
        let second = agent.reload().expect_err("a second reload during the first is refused");
        assert!(second.to_string().contains("a reload is already in progress"), "{second}");
        assert!(asked.elapsed() < Duration::from_secs(1), "refused after {:?}", asked.elapsed());
        eprintln!(
            "{trigger:?}: failover in {failover:?} during the reload; slowest backends {slowest:?}"
        );
        // Traffic goes to the healthy reals only, and none of it fails.
        let counts = count_http(&dr.client.ns, &format!("http://{VIP}/"), 20);
        assert_eq!(counts.get("(failed)"), None, "{trigger:?}: {counts:?}");
        assert_eq!(counts.get(&format!("rs{}", victim + 1)), None, "{trigger:?}: {counts:?}");

        match reload {
            Some(thread) => {
                let out = thread.join().expect("reload thread").expect("run lb reload");
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
                assert!(stdout.contains("reloaded"), "{stdout}");
            }
            None => assert!(
                wait_until(Duration::from_secs(30), || reloads_done(&agent) > done_before),
                "SIGHUP reload did not finish:\n{}",
                agent.stderr()
            ),
        }
        // The reload kept health state: the dead real stays out, the others stay in.
        down_already.push(last);
        let after = states(&agent);
        for (addr, state) in &after {
            let dead = down_already.iter().any(|d| addr.ends_with(&format!(".{d}")));
            assert_eq!(state, if dead { "down" } else { "up" }, "{trigger:?}: {addr}: {after:?}");
        }
    }
    let counts = count_http(&dr.client.ns, &format!("http://{VIP}/"), 20);
    assert_eq!(counts.get("rs3"), Some(&20), "only the healthy real serves: {counts:?}");
    let log = agent.stderr();
    let timings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("configuration reloaded") || l.contains("health change in"))
        .collect();
    eprintln!("{}", timings.join("\n"));

    // SIGTERM during a reload: the agent stops at once, without waiting for the read to end
    // or switching to its config afterwards.
    let started = agent.stderr().matches("reloading the configuration").count();
    agent.signal(libc::SIGHUP).expect("SIGHUP");
    assert!(
        wait_until(Duration::from_secs(10), || {
            agent.stderr().matches("reloading the configuration").count() > started
        }),
        "the last reload did not start"
    );
    let stopping = Instant::now();
    let log = agent.stop().expect("clean stop during a reload");
    let stopped = stopping.elapsed();
    assert!(stopped < Duration::from_secs(3), "stop waited {stopped:?} for the reload:\n{log}");
    assert!(
        !log[log.rfind("reloading the configuration").unwrap_or(0)..]
            .contains("configuration reloaded"),
        "{log}"
    );
    assert!(!dr.director.xdp_attached(), "XDP still attached after the stop:\n{log}");
}
