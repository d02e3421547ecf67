//! A flood of idle connections to the agent's own listeners (20,000 on the control socket, then
//! 17,500 on the metrics port) while traffic flows and a real fails: the failing real is taken
//! out within one check, no healthy real is marked down, `lb backends` and a scrape still answer,
//! and the agent's memory stays flat. And an agent that really runs out of file descriptors
//! keeps its reals' states: a check it cannot run is not a failed check.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use lb_tests::{DrTopology, LbAgent, Netns, Process, count_http, require_root, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const METRICS: &str = "127.0.0.1:9464";
/// delay_loop + connect_timeout (retry 0): one check.
const DETECTION: Duration = Duration::from_millis(500 + 500);
/// Scheduling slack on a busy 2-core machine.
const SLACK: Duration = Duration::from_millis(1500);

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

fn start(dr: &DrTopology, extra: &[&str]) -> (LbAgent, tempfile::TempDir) {
    dr.start_agent(&DrTopology::fast_tcp_check_config(VIP, 3), extra).expect("lb run")
}

fn proc_field(pid: u32, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines().find(|l| l.starts_with(key)).unwrap_or_default().to_owned()
}

fn rss_kib(pid: u32) -> u64 {
    proc_field(pid, "status", "VmRSS:")
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn flood_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lb-flood")
}

/// Holds `n` idle connections to `target` (`unix` path or `tcp` address) from `procs` helper
/// processes (each under its own descriptor limit), from inside `ns` if given. Returns the
/// helpers (killed on drop) once they hold what they could, and how many that is.
fn flood(
    ns: Option<&Netns>,
    kind: &str,
    target: &str,
    n: usize,
    procs: usize,
) -> (Vec<Process>, usize) {
    let each = (n / procs).to_string();
    let mut helpers = Vec::new();
    for _ in 0..procs {
        let args = [flood_bin(), kind, target, each.as_str(), "30"];
        let p = match ns {
            Some(ns) => ns.spawn(&args),
            None => {
                let mut cmd = Command::new(args[0]);
                cmd.args(&args[1..]);
                Process::spawn(cmd, "lb-flood")
            }
        };
        helpers.push(p.expect("spawn lb-flood"));
    }
    let mut held = 0;
    for h in &mut helpers {
        let line =
            h.wait_for_line(|l| l.starts_with("held "), Duration::from_secs(40)).expect("held");
        held += line.trim_start_matches("held ").parse::<usize>().unwrap_or(0);
    }
    (helpers, held)
}

/// Whether the agent logged `real` down after the first `since` bytes of its log.
fn down_logged(agent: &LbAgent, since: usize, real: &str) -> bool {
    let log = agent.stderr();
    let recent = log.get(since..).unwrap_or_default();
    recent.lines().any(|l| l.contains("real server down") && l.contains(real))
}

fn scrape(dr: &DrTopology) -> Option<String> {
    let out = dr
        .director
        .ns
        .exec(&["curl", "-sS", "--noproxy", "*", "--max-time", "2", &format!("http://{METRICS}/")])
        .ok()?;
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    body.contains("lb_real_state").then_some(body)
}

/// Kills real `i`, then checks that it (and only it) goes down within one check while `flood`
/// connections are held; that `lb backends` and a scrape answer; that traffic avoids it.
/// `since`: the agent's log length when the flood started.
fn fail_one_real_under_flood(
    dr: &mut DrTopology,
    agent: &LbAgent,
    i: usize,
    what: &str,
    since: usize,
) {
    let real = format!("192.0.2.{}", 11 + i);
    dr.stop_peer(i).expect("stop a real's server");
    let stopped = Instant::now();
    assert!(
        wait_until(DETECTION + SLACK, || down_logged(agent, since, &real)),
        "{what}: {real} not down within {DETECTION:?} + {SLACK:?}\n{}",
        agent.stderr()
    );
    eprintln!("{what}: {real} down after {:?}", stopped.elapsed());
    let answered = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || agent.backends().is_ok()),
        "{what}: lb backends never answered"
    );
    eprintln!("{what}: lb backends answered after {:?}", answered.elapsed());
    assert!(wait_until(Duration::from_secs(10), || scrape(dr).is_some()), "{what}: no scrape");
    let counts = count_http(&dr.client.ns, &format!("http://{VIP}/"), 20);
    assert_eq!(counts.get("(failed)"), None, "{what}: requests failed: {counts:?}");
    assert_eq!(counts.get(&format!("rs{}", i + 1)), None, "{what}: {counts:?}");
    for other in (0..3).filter(|&j| j != i) {
        let other = format!("192.0.2.{}", 11 + other);
        assert!(!down_logged(agent, since, &other), "{what}: healthy {other} marked down");
    }
}

/// Holds `n` idle connections to `target` (`kind` as in `flood`; from the director's
/// namespace if `in_director`) from two helpers, checks the agent accepted them all with its fds
/// bounded, then fails real `i` under them (`fail_one_real_under_flood`). Returns the helpers:
/// the flood lasts until they drop.
fn flood_then_fail_one_real(
    dr: &mut DrTopology,
    agent: &LbAgent,
    in_director: bool,
    kind: &str,
    target: &str,
    n: usize,
    i: usize,
) -> Vec<Process> {
    let what = if kind == "unix" { "control flood" } else { "metrics flood" };
    let pid = agent.pid().expect("pid");
    let since = agent.stderr().len();
    let started = Instant::now();
    let ns = in_director.then_some(&dr.director.ns);
    let (helpers, held) = flood(ns, kind, target, n, 2);
    eprintln!(
        "{what}: {held} connections in {:?}; agent fds {}, RSS {} KiB",
        started.elapsed(),
        open_fds(pid),
        rss_kib(pid)
    );
    assert_eq!(held, n, "the agent kept accepting");
    assert!(open_fds(pid) < 1_000, "fds bounded: {}", open_fds(pid));
    fail_one_real_under_flood(dr, agent, i, what, since);
    helpers
}

#[test]
fn idle_connection_floods_do_not_take_reals_down() {
    if !require_root("idle_connection_floods") {
        return;
    }
    let mut dr = DrTopology::build("lf", 3, VIP, testpeer()).expect("topology");
    let (agent, _dir) = start(&dr, &["--metrics", METRICS]);
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("all up");
    let pid = agent.pid().expect("pid");
    // Started with soft < hard, the agent raises its soft limit to the hard one.
    let limits = proc_field(pid, "limits", "Max open files");
    let nums: Vec<&str> = limits.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums.first(), nums.get(1), "soft limit raised to the hard one: {limits}");
    let rss_before = rss_kib(pid);

    // 1. 20,000 idle control connections.
    let socket = agent.socket().to_string_lossy().into_owned();
    let helpers = flood_then_fail_one_real(&mut dr, &agent, false, "unix", &socket, 20_000, 0);
    drop(helpers);
    let status = agent.status().expect("status");
    let control = &status["listeners"]["control"];
    assert!(control["refused"].as_u64().unwrap_or(0) > 0, "{status}");
    assert_eq!(control["limit"], 128, "{status}");

    dr.start_peer(0).expect("restart rs1");
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("all up again");

    // 2. 17,500 idle metrics connections.
    let helpers = flood_then_fail_one_real(&mut dr, &agent, true, "tcp", METRICS, 17_500, 1);
    drop(helpers);
    let metrics = scrape(&dr).expect("scrape");
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("lb_listener_refused_total{listener=\"metrics\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(refused > 0, "refusals counted:\n{metrics}");

    let rss_after = rss_kib(pid);
    eprintln!("agent RSS: {rss_before} KiB before the floods, {rss_after} KiB after");
    assert!(rss_after < rss_before + 32 * 1024, "RSS grew {rss_before} → {rss_after} KiB");
}

/// An agent whose file-descriptor table is really full (hard limit lowered under it, then
/// filled by connections) cannot run its checks: that is counted and logged, not a down real.
#[test]
fn checks_that_cannot_get_a_socket_keep_the_reals_state() {
    if !require_root("checks_without_fds") {
        return;
    }
    let dr = DrTopology::build("lfd", 3, VIP, testpeer()).expect("topology");
    let (agent, _dir) = start(&dr, &[]);
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("all up");
    let pid = agent.pid().expect("pid");
    // A few fds of headroom, then fill them with control connections (within the cap).
    let limit = u64::try_from(open_fds(pid)).expect("fds") + 8;
    let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
    // SAFETY: prlimit on a child we started, with a struct we own.
    let rc = unsafe {
        libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut())
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let socket = agent.socket().to_string_lossy().into_owned();
    let (held, _) = flood(None, "unix", &socket, 64, 1);
    assert!(
        wait_until(Duration::from_secs(5), || agent.stderr().contains("check not run")),
        "no check ran short of fds (fds {} of {limit}):\n{}",
        open_fds(pid),
        agent.stderr()
    );
    // Several check rounds without fds.
    std::thread::sleep(Duration::from_secs(2));
    drop(held);
    let log = agent.stderr();
    assert!(!log.contains("real server down"), "a shortage read as a real down:\n{log}");
    let status = wait_until(Duration::from_secs(10), || agent.status().is_ok());
    assert!(status, "status answers once the flood is gone");
    let status = agent.status().expect("status");
    assert!(status["checks_not_run"].as_u64().unwrap_or(0) > 0, "{status}");
    agent.wait_all_backends("up", Duration::from_secs(5)).expect("all still up");
}

/// The numbers behind BENCHMARKS.md ("Idle connection floods"): for 20,000 idle control and
/// then metrics connections, the agent's RSS and fds, how long a killed real takes to be marked
/// down, whether a healthy one was, how long `lb backends` takes to answer and the healthy
/// reals' check latency. Prints, asserts nothing about the agent. Run with `--ignored`; set
/// `LB_BIN` to compare builds.
#[test]
#[ignore = "measurement for BENCHMARKS.md"]
fn measure_idle_floods() {
    if !require_root("measure_idle_floods") {
        return;
    }
    println!(
        "| flood | held | agent fds | RSS before → flooded → after (MiB) | killed real down after | healthy reals down | `lb backends` answers after | check latency of healthy reals |"
    );
    for (kind, label) in [("unix", "control"), ("tcp", "metrics")] {
        let mut dr = DrTopology::build("lm", 3, VIP, testpeer()).expect("topology");
        let (agent, dir) = start(&dr, &["--metrics", METRICS]);
        agent.wait_all_backends("up", Duration::from_secs(10)).expect("all up");
        let pid = agent.pid().expect("pid");
        let mib = |kib: u64| kib as f64 / 1024.0;
        let rss_before = rss_kib(pid);
        let since = agent.stderr().len();
        let target = match kind {
            "unix" => agent.socket().to_string_lossy().into_owned(),
            _ => METRICS.to_owned(),
        };
        let ns = (kind == "tcp").then_some(&dr.director.ns);
        let (helpers, held) = flood(ns, kind, &target, 20_000, 2);
        let fds = open_fds(pid);
        let rss_flooded = rss_kib(pid);
        dr.stop_peer(0).expect("stop rs1");
        let stopped = Instant::now();
        let down = wait_until(Duration::from_secs(10), || down_logged(&agent, since, "192.0.2.11"));
        let detected = if down {
            format!("{:.2} s", stopped.elapsed().as_secs_f64())
        } else {
            "not within 10 s".into()
        };
        let asked = Instant::now();
        let backends = if wait_until(Duration::from_secs(15), || agent.backends().is_ok()) {
            format!("{:.2} s", asked.elapsed().as_secs_f64())
        } else {
            "not within 15 s".into()
        };
        let latency = agent
            .backends()
            .ok()
            .map(|v| {
                let ms: Vec<String> = v["services"][0]["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|b| b["address"] != "192.0.2.11")
                    .map(|b| match b["check_latency"].as_f64() {
                        Some(s) => format!("{:.2} ms", s * 1000.0),
                        None => "none".into(),
                    })
                    .collect();
                ms.join(", ")
            })
            .unwrap_or_else(|| "n/a".into());
        let healthy_down =
            ["192.0.2.12", "192.0.2.13"].iter().filter(|r| down_logged(&agent, since, r)).count();
        drop(helpers);
        std::thread::sleep(Duration::from_secs(5));
        let rss_after = rss_kib(pid);
        println!(
            "| {label} | {held} | {fds} | {:.0} → {:.0} → {:.0} | {detected} | {healthy_down} of 2 | {backends} | {latency} |",
            mib(rss_before),
            mib(rss_flooded),
            mib(rss_after)
        );
        drop(agent);
        drop(dir);
    }
}
