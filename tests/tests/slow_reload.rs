//! A reload that waits seconds to read its file (a config on a network filesystem that hangs)
//! holds up nothing else: a real whose checks fail meanwhile leaves the forwarding table within
//! its detection time, healthy reals stay up, `lb backends` answers at once and a second `lb
//! reload` is refused with a clear message instead of timing out. Both ways of reloading (`lb
//! reload`, SIGHUP) share that path. SIGTERM during a reload stops the agent at once.
//!
//! The file is served over FUSE by the test ([`GatedFile`]): its reads wait until the test lets
//! them through, so the reload overlaps the failover on any machine, however fast.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use lb_tests::{DrTopology, GatedFile, LbAgent, count_http, lb_bin, require_root, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

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
    // Same services on every reload, so every real keeps its health state across them.
    let config = GatedFile::mount("lb-slowrl-cfg-", "lb.toml", services().as_bytes())
        .expect("the config on FUSE");
    let agent = dr.start_agent_on(config.path(), &[]).expect("lb run");
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("all up");

    // (how the reload is asked for, index of the real whose server dies during it)
    let scenarios = [(Trigger::Socket, 0usize), (Trigger::Sighup, 1)];
    let mut down_already: Vec<u8> = Vec::new();
    for (trigger, victim) in scenarios {
        let last = 11 + victim as u8;
        let log_before = agent.stderr().matches("reloading the configuration").count();
        let done_before = reloads_done(&agent);
        let socket = agent.socket().to_owned();
        let gate = config.shut();
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
        assert!(
            config.wait_for_reader(Duration::from_secs(10)),
            "{trigger:?}: the reload never read its file:\n{}",
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
        assert_eq!(reloads_done(&agent), done_before, "{trigger:?}: reloaded through a shut gate");
        assert!(config.held() > 0, "{trigger:?}: the reload's read was let through");
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

        gate.open();
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

    // SIGTERM during a reload: the agent stops at once (VIP handed back, XDP detached) without
    // waiting for the read to end, and does not switch to that config afterwards. Its process
    // can only exit once the kernel gives the read back, as with a hung NFS mount.
    let started = agent.stderr().matches("reloading the configuration").count();
    let gate = config.shut();
    agent.signal(libc::SIGHUP).expect("SIGHUP");
    assert!(
        wait_until(Duration::from_secs(10), || {
            agent.stderr().matches("reloading the configuration").count() > started
        }) && config.wait_for_reader(Duration::from_secs(10)),
        "the last reload did not start reading:\n{}",
        agent.stderr()
    );
    let stopping = Instant::now();
    agent.signal(libc::SIGTERM).expect("SIGTERM");
    let stopped =
        wait_until(Duration::from_secs(3), || agent.stderr().contains("director stopped"));
    let took = stopping.elapsed();
    assert!(stopped, "stop waited {took:?} for the reload:\n{}", agent.stderr());
    assert!(!dr.director.xdp_attached(), "XDP still attached after the stop:\n{}", agent.stderr());
    gate.open();
    let log = agent.stop().expect("clean exit once the read is let through");
    assert!(
        !log[log.rfind("reloading the configuration").unwrap_or(0)..]
            .contains("configuration reloaded"),
        "{log}"
    );
    eprintln!("SIGTERM during a reload: stopped in {took:?}");
}
