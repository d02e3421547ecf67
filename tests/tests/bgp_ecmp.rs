//! Active-active scale-out: three directors (`lb run` with `speaker = "bird"`) announce one VIP to
//! a router namespace running BIRD 2 with ECMP (`merge paths`, kernel multipath,
//! `fib_multipath_hash_policy = 1`); three DR reals answer the client straight back through the
//! router. One lab, set up once (BGP sessions take seconds), runs the scenarios in turn.
//!
//! The layout is `lb_tests::bgp::EcmpLab`. BGP timers are short here only (hold 3 s, router
//! reconnects 1 s; BFD 300 ms × 3 as lb renders it).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lb_tests::bgp::{
    DIRECTORS, DIRECTORS6, EcmpLab, REALS, REALS6, ROUTER, ROUTER6, VIP, VIP6, director_config,
    next_hops, next_hops6,
};
use lb_tests::{
    BpfFs, DR_HTTP_PORT, DR_TCP_ECHO_PORT, LbAgent, LongLived, Netns, Topology, count_http, lb_bin,
    require_root, wait_until,
};

/// BIRD 2 is installed (`cargo xtask bootstrap`): skip without it, fail in CI.
fn require_bird(test: &str) -> bool {
    lb_tests::require_program(test, "bird")
}

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

fn hops(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Waits until the router's next hops are `want`; how long it took.
fn wait_hops(router: &Netns, want: &[&str], timeout: Duration, what: &str) -> Duration {
    let start = Instant::now();
    let want = hops(want);
    assert!(
        wait_until(timeout, || next_hops(router) == want),
        "{what}: next hops {:?}, want {want:?} within {timeout:?}",
        next_hops(router)
    );
    start.elapsed()
}

fn lab(label: &str) -> EcmpLab {
    EcmpLab::build(label, testpeer()).expect("ECMP lab")
}

/// Kills a BIRD a pinned agent left running (it outlives agents by design), when the test ends.
struct BirdReaper(std::path::PathBuf);

impl Drop for BirdReaper {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0).ok().and_then(|t| t.trim().parse().ok())
        {
            // SAFETY: a plain signal to the BIRD this test's agent started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn new_flows(agent: &LbAgent) -> u64 {
    let b = agent.backends().expect("backends");
    b["services"].as_array().unwrap().iter().map(|s| s["new_flows"].as_u64().unwrap_or(0)).sum()
}

fn vip_state(agent: &LbAgent) -> (bool, String) {
    let s = agent.status().expect("status");
    let v = &s["bgp"]["vips"][0];
    (v["announced"].as_bool().unwrap_or(false), v["reason"].as_str().unwrap_or("").to_owned())
}

#[test]
fn three_directors_behind_ecmp() {
    if !require_root("bgp_ecmp") || !require_bird("bgp_ecmp") {
        return;
    }
    let lab = lab("bgpecmp");
    let router = &lab.router.ns;
    let cfg = lab.dir.path().join("lb.toml");
    std::fs::write(&cfg, director_config("")).unwrap();
    let bpf = BpfFs::mount(lab.dir.path().join("bpf")).expect("bpffs");
    let pin = bpf.dir.join("lb3").to_string_lossy().into_owned();
    let state = lab.dir.path().join("dir3.json");
    let _reaper = BirdReaper(lab.dir.path().join("dir3.json.bird.pid"));
    let state_s = state.to_string_lossy().into_owned();
    let generic = ["--xdp-mode", "generic"];
    let pinned = ["--xdp-mode", "generic", "--pin-dir", &pin, "--state-file", &state_s];
    let start = |i: usize, args: &[&str]| {
        LbAgent::start(&lab.directors[i].ns, &lb_bin(), &cfg, args).expect("lb run")
    };
    let dir1 = start(0, &generic);
    let dir2 = start(1, &generic);
    let dir3 = start(2, &pinned);

    // 1. All three announce: three next hops; new connections spread over the directors.
    wait_hops(router, &DIRECTORS, Duration::from_secs(30), "all three directors");
    // Each agent reads its session from BIRD once a second.
    for a in [&dir1, &dir2, &dir3] {
        let up = || a.status().is_ok_and(|s| s["bgp"]["sessions"][0]["prefixes"] == 1);
        assert!(wait_until(Duration::from_secs(5), up), "{:?}", a.status().ok());
        // Fingerprints are hashed just after start-up: "pending" until then, not a mismatch.
        let known = || {
            a.status().is_ok_and(|s| {
                s["pick_fingerprints"]
                    .as_array()
                    .is_some_and(|f| f.iter().all(|f| f["fingerprint"] != "pending"))
            })
        };
        assert!(wait_until(Duration::from_secs(5), known), "{:?}", a.status().ok());
    }
    let statuses: Vec<serde_json::Value> =
        [&dir1, &dir2, &dir3].iter().map(|a| a.status().unwrap()).collect();
    for s in &statuses {
        let session = &s["bgp"]["sessions"][0];
        assert_eq!(session["neighbor"], ROUTER, "{s}");
        assert_eq!(session["up"], true, "{s}");
        assert_eq!(session["bfd"], "Up", "{s}");
        assert_eq!(session["prefixes"], 1, "{s}");
        assert_eq!(s["bgp"]["vips"][0]["reason"], "ready", "{s}");
        assert_eq!(s["pick_fingerprints"], statuses[0]["pick_fingerprints"]);
    }
    assert!(!statuses[0]["pick_fingerprints"].as_array().unwrap().is_empty());
    let before: Vec<u64> = [&dir1, &dir2, &dir3].iter().map(|a| new_flows(a)).collect();
    const N: u32 = 300; // new connections; each director must forward ≥ 15 % of them
    let counts = count_http(&lab.client.ns, &format!("http://{VIP}:{DR_HTTP_PORT}/"), N);
    assert!(!counts.contains_key("(failed)"), "{counts:?}");
    for rs in ["rs1", "rs2", "rs3"] {
        assert!(counts.contains_key(rs), "{rs} never answered: {counts:?}");
    }
    let spread: Vec<u64> =
        [&dir1, &dir2, &dir3].iter().zip(&before).map(|(a, b)| new_flows(a) - b).collect();
    eprintln!("flows per director: {spread:?} of {N}");
    for (i, n) in spread.iter().enumerate() {
        assert!(*n * 100 >= u64::from(N) * 15, "dir{} forwarded {n} of {N}: {spread:?}", i + 1);
    }

    // The VIP is on no director's interface; XDP answers ICMP echo for it all the same.
    lab.client
        .ns
        .ping(VIP.into(), Duration::from_secs(2))
        .expect("ping the VIP through the router");

    // 2. Long-lived connections across withdraw, crash, rejoin and a hitless restart.
    let conns = LongLived::start(
        &lab.client.ns,
        (VIP, DR_TCP_ECHO_PORT).into(),
        50,
        Duration::from_millis(100),
    )
    .expect("long-lived connections");
    let mut last = conns.wait_round_trips(3, Duration::from_secs(10)).expect("talking");

    dir1.cli(&["bgp", "withdraw"]).expect("lb bgp withdraw");
    let took = wait_hops(router, &DIRECTORS[1..], Duration::from_secs(1), "dir1 withdrawn");
    eprintln!("operator withdraw: router dropped dir1 after {took:?}");
    assert_eq!(vip_state(&dir1), (false, "withdrawn by operator".to_owned()));
    last = conns.wait_progress(&last, 3, Duration::from_secs(10)).expect("after the withdraw");

    dir2.kill().expect("SIGKILL dir2");
    let took = wait_hops(router, &DIRECTORS[2..], Duration::from_secs(1), "dir2 killed");
    eprintln!("SIGKILL: router dropped dir2 after {took:?}");
    last = conns.wait_progress(&last, 3, Duration::from_secs(10)).expect("after the crash");

    let dir2 = start(1, &generic);
    wait_hops(router, &DIRECTORS[1..], Duration::from_secs(20), "dir2 back");
    dir1.cli(&["bgp", "announce"]).expect("lb bgp announce");
    wait_hops(router, &DIRECTORS, Duration::from_secs(5), "dir1 announced again");
    last = conns.wait_progress(&last, 3, Duration::from_secs(10)).expect("after the rejoin");

    // Hitless restarts of the pinned dir3 (SIGQUIT hand-over; SIGKILL and an immediate restart):
    // BIRD outlives the agent, the next agent adopts it, the router never drops dir3.
    let hitless = |how: &str, stop: &dyn Fn() -> LbAgent| -> LbAgent {
        let dropped = Arc::new(AtomicBool::new(false));
        let watching = Arc::new(AtomicBool::new(true));
        let watcher = {
            let (dropped, watching) = (dropped.clone(), watching.clone());
            let router = router.clone();
            std::thread::spawn(move || {
                while watching.load(Ordering::Relaxed) {
                    if !next_hops(&router).contains(DIRECTORS[2]) {
                        dropped.store(true, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let next = stop();
        assert!(next.stderr().contains("adopted the running BIRD"), "{how}: {}", next.stderr());
        std::thread::sleep(Duration::from_secs(3));
        watching.store(false, Ordering::Relaxed);
        watcher.join().unwrap();
        assert!(!dropped.load(Ordering::Relaxed), "{how}: the router dropped dir3");
        assert_eq!(vip_state(&next), (true, "ready".to_owned()), "{how}");
        next
    };
    let dir3 = std::cell::Cell::new(Some(dir3));
    let take = || dir3.take().expect("dir3 running");
    let restarted = hitless("SIGQUIT hand-over", &|| {
        take().quit().expect("SIGQUIT dir3");
        start(2, &pinned)
    });
    last = conns.wait_progress(&last, 3, Duration::from_secs(10)).expect("after the hand-over");
    dir3.set(Some(restarted));
    let dir3 = hitless("SIGKILL and restart", &|| {
        take().kill().expect("SIGKILL dir3");
        start(2, &pinned)
    });
    last = conns.wait_progress(&last, 3, Duration::from_secs(10)).expect("after the SIGKILL");

    // 3. Every real down as dir3 sees it: dir3 withdraws; back up: it announces again.
    for real in REALS {
        lab.directors[2].ns.ip(&["route", "add", "prohibit", &format!("{real}/32")]).unwrap();
    }
    wait_hops(router, &DIRECTORS[..2], Duration::from_secs(5), "dir3's reals down");
    let (announced, reason) = vip_state(&dir3);
    assert!(!announced && reason.starts_with("not ready"), "{reason}");
    for real in REALS {
        lab.directors[2].ns.ip(&["route", "del", "prohibit", &format!("{real}/32")]).unwrap();
    }
    wait_hops(router, &DIRECTORS, Duration::from_secs(5), "dir3's reals up again");
    // Quorum brings the announcement back before every check has passed: until dir3 sees every
    // real up again it picks differently (docs/scale-out.md), and the next step moves flows to it.
    let picks = |a: &LbAgent| a.status().ok().map(|s| s["pick_fingerprints"].clone());
    let agree = || picks(&dir3).is_some() && picks(&dir3) == picks(&dir1);
    assert!(wait_until(Duration::from_secs(5), agree), "dir3 picks unlike dir1 after its reals");
    last = conns.wait_progress(&last, 3, Duration::from_secs(10)).expect("after dir3's reals");

    // BIRD dies under a live agent: the router drops dir1 at once, the agent starts BIRD again.
    let pid_file = dir1.runtime_dir().join("lb.sock.bird.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // SAFETY: a plain signal to the BIRD dir1's agent started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_hops(router, &DIRECTORS[1..], Duration::from_secs(1), "dir1's BIRD killed");
    wait_hops(router, &DIRECTORS, Duration::from_secs(15), "dir1's BIRD restarted");
    assert_eq!(dir1.status().unwrap()["bgp"]["restarts"], 1);
    conns.wait_progress(&last, 3, Duration::from_secs(10)).expect("at the end");
    let report = conns.stop();
    eprintln!("{}", report.summary());
    assert!(report.is_clean(), "connections broken:\n{report}");

    // A graceful stop withdraws first (the router drops dir1 before the agent exits).
    let stopping = Instant::now();
    dir1.stop().expect("SIGTERM dir1");
    assert!(stopping.elapsed() >= Duration::from_secs(1), "withdraw_grace not kept");
    assert!(!next_hops(router).contains(DIRECTORS[0]));
    dir3.stop().expect("SIGTERM dir3");
    assert!(!lab.dir.path().join("dir3.json.bird.pid").exists(), "dir3's BIRD left running");
    drop(dir2);
    drop(lab.topo);
}

/// `announce_delay`: the sessions come up but nothing is announced until the delay has passed
/// (the status says why meanwhile). An IPv6 VIP goes over the IPv6 session: the router learns the
/// /128 via the director's IPv6 address and forwards to it (XDP answers the echo, a real the GET).
#[test]
fn announce_delay_then_an_ipv6_vip_over_an_ipv6_session() {
    if !require_root("bgp_delay_v6") || !require_bird("bgp_delay_v6") {
        return;
    }
    const DELAY: Duration = Duration::from_secs(4);
    let lab = lab("bgpdelay6");
    let router = &lab.router.ns;
    let mut text = director_config(&format!("announce_delay = {}\n", DELAY.as_secs()));
    text.push_str(&format!("[[bgp.neighbor]]\naddress = \"{ROUTER6}\"\nremote_as = 65000\n"));
    text.push_str(&format!(
        "[[virtual_server]]\nvip = \"{VIP6}\"\nport = {DR_HTTP_PORT}\ninterface = \"eth0\"\n\
         delay_loop = 0.5\n"
    ));
    for real in REALS6 {
        text.push_str(&format!(
            "[[virtual_server.real_server]]\naddress = \"{real}\"\n\
             [virtual_server.real_server.tcp_check]\nconnect_timeout = 0.5\nretry = 0\n"
        ));
    }
    let cfg = lab.dir.path().join("lb.toml");
    std::fs::write(&cfg, text).unwrap();
    let started = Instant::now();
    let agent = LbAgent::start(&lab.directors[0].ns, &lb_bin(), &cfg, &["--xdp-mode", "generic"])
        .expect("lb run");

    // Both sessions up, both VIPs held back by the delay, the router knowing nothing yet.
    let held = |s: &serde_json::Value| {
        let sessions = s["bgp"]["sessions"].as_array().cloned().unwrap_or_default();
        let vips = s["bgp"]["vips"].as_array().cloned().unwrap_or_default();
        sessions.len() == 2
            && sessions.iter().all(|x| x["up"] == true)
            && vips.len() == 2
            && vips.iter().all(|v| {
                v["announced"] == false
                    && v["reason"].as_str().is_some_and(|r| r.starts_with("announce_delay ("))
            })
    };
    assert!(
        wait_until(DELAY, || agent.status().is_ok_and(|s| held(&s))),
        "sessions up while the delay runs: {:?}",
        agent.status().ok()
    );
    assert!(next_hops(router).is_empty(), "announced during the delay: {:?}", next_hops(router));
    assert!(next_hops6(router).is_empty(), "announced during the delay: {:?}", next_hops6(router));

    wait_hops(router, &DIRECTORS[..1], Duration::from_secs(10), "after announce_delay");
    let took = started.elapsed();
    assert!(took >= DELAY, "announced {took:?} after the start, within announce_delay");
    let v6 = || next_hops6(router) == hops(&DIRECTORS6[..1]);
    assert!(wait_until(Duration::from_secs(5), v6), "IPv6 next hops {:?}", next_hops6(router));
    let s = agent.status().unwrap();
    for v in s["bgp"]["vips"].as_array().unwrap() {
        assert_eq!((&v["announced"], &v["reason"]), (&true.into(), &"ready".into()), "{s}");
    }

    lab.client.ns.ping(VIP6.into(), Duration::from_secs(2)).expect("ping the IPv6 VIP");
    let counts = count_http(&lab.client.ns, &format!("http://[{VIP6}]:{DR_HTTP_PORT}/"), 20);
    assert!(!counts.contains_key("(failed)"), "{counts:?}");
    agent.stop().expect("stop");
}

/// `speaker = "external"`: the ready VIPs are routes in `export_table`, which a BIRD configured
/// by the test (not by lb) exports to the router; `lb bgp withdraw` removes them, and so does an
/// agent's crash (its watchdog).
#[test]
fn external_speaker_keeps_routes_for_the_operators_daemon() {
    if !require_root("bgp_external") || !require_bird("bgp_external") {
        return;
    }
    let lab = lab("bgpext");
    let router = &lab.router.ns;
    let director = &lab.directors[0];
    let cfg = lab.dir.path().join("lb.toml");
    let text = director_config("speaker = \"external\"\nexport_table = 100\n");
    // No neighbors with `external`: the operator's daemon holds the sessions.
    let text =
        text.replace(&format!("[[bgp.neighbor]]\naddress = \"{ROUTER}\"\nremote_as = 65000\n"), "");
    std::fs::write(&cfg, text).unwrap();
    let agent =
        LbAgent::start(&director.ns, &lb_bin(), &cfg, &["--xdp-mode", "generic"]).expect("lb");
    let table = || director.ns.ip(&["route", "show", "table", "100"]).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(5), || table().contains("blackhole 192.0.2.100")));
    assert!(table().contains("proto 250"), "{}", table());
    // Never this host's forwarding: the main table knows nothing of the VIP.
    let main = director.ns.ip(&["route", "show", "table", "main"]).unwrap();
    assert!(!main.contains("192.0.2.100"), "{main}");

    let conf = lab.dir.path().join("dir1-bird.conf");
    std::fs::write(
        &conf,
        format!(
            "router id {};\nprotocol device {{}}\n\
             protocol kernel {{ kernel table 100; learn; ipv4 {{ import all; export none; }}; }}\n\
             protocol bgp {{ local as 65010; neighbor {ROUTER} as 65000; hold time 3;\n\
             connect delay time 1; ipv4 {{ import none; export all; next hop self; }}; }}\n",
            DIRECTORS[0]
        ),
    )
    .unwrap();
    let ctl = lab.dir.path().join("dir1-bird.ctl");
    let _bird = director
        .ns
        .spawn(&["bird", "-f", "-c", conf.to_str().unwrap(), "-s", ctl.to_str().unwrap()])
        .expect("director BIRD");
    wait_hops(router, &DIRECTORS[..1], Duration::from_secs(30), "learned from export_table");

    agent.cli(&["bgp", "withdraw"]).expect("withdraw");
    assert!(wait_until(Duration::from_secs(3), || !table().contains("192.0.2.100")), "{}", table());
    wait_hops(router, &[], Duration::from_secs(5), "withdrawn from export_table");
    agent.cli(&["bgp", "announce"]).expect("announce");
    wait_hops(router, &DIRECTORS[..1], Duration::from_secs(5), "announced again");

    // A crash (no pinned dataplane: forwarding died with it): the watchdog empties the table.
    agent.kill().expect("SIGKILL");
    let gone = || !table().contains("192.0.2.100");
    assert!(wait_until(Duration::from_secs(2), gone), "routes left after a crash: {}", table());
    wait_hops(router, &[], Duration::from_secs(5), "a crashed agent withdrawn");
    let agent =
        LbAgent::start(&director.ns, &lb_bin(), &cfg, &["--xdp-mode", "generic"]).expect("lb");
    wait_hops(router, &DIRECTORS[..1], Duration::from_secs(10), "announced by the next agent");
    agent.stop().expect("stop");
    assert!(!table().contains("192.0.2.100"), "routes left after stop: {}", table());
}

/// BIRD failing to start: `lb run` exits with an error naming it, and nothing stays attached.
#[test]
fn bird_failing_to_start_is_a_clear_error() {
    if !require_root("bgp_bird_fails") {
        return;
    }
    let mut topo = Topology::new("bgpfail").expect("topology");
    let host = topo.add_host("dir1", &["198.51.100.2/24"]).unwrap();
    let dir = lb_tests::scratch_dir(&format!("{}-bgpfail-", topo.prefix())).unwrap();
    // A `bird` that refuses to run, first on PATH.
    let fake = dir.path().join("bird");
    std::fs::write(&fake, "#!/bin/sh\necho 'bird: cannot start (test)' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = dir.path().join("lb.toml");
    std::fs::write(&cfg, director_config("")).unwrap();
    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
    let socket = dir.path().join("lb.sock");
    let (cfg_s, socket_s, bin) = (cfg.to_str().unwrap(), socket.to_str().unwrap(), lb_bin());
    let path_env = format!("PATH={path}");
    let args = [
        "env",
        &path_env,
        bin.to_str().unwrap(),
        "run",
        "--no-pin",
        "-c",
        cfg_s,
        "--socket",
        socket_s,
        "--xdp-mode",
        "generic",
    ];
    let out = lb_tests::Process::spawn(host.ns.command(&args), "lb run")
        .and_then(|p| p.wait_with_output(Duration::from_secs(20)))
        .expect("lb run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "lb run started with a failing BIRD: {stderr}");
    assert!(stderr.contains("BIRD (`bird`)"), "{stderr}");
    assert!(stderr.contains("cannot start (test)"), "{stderr}");
    assert!(!host.xdp_attached(), "XDP left attached");
}

/// A VIP in a `vrrp_instance` is announced by the MASTER only; a failover moves the announcement.
#[test]
fn vrrp_vip_is_announced_by_the_master_only() {
    if !require_root("bgp_vrrp") || !require_bird("bgp_vrrp") {
        return;
    }
    let lab = lab("bgpvrrp");
    let router = &lab.router.ns;
    let config = |priority: u8| {
        format!(
            "{}[[vrrp_instance]]\nname = \"VI_1\"\nstate = \"BACKUP\"\ninterface = \"eth0\"\n\
             virtual_router_id = 51\npriority = {priority}\nadvert_int = 0.5\nversion = 3\n\
             virtual_ipaddress = [\"{VIP}/32\"]\n",
            director_config("")
        )
    };
    let start = |i: usize, priority: u8| {
        let cfg = lab.dir.path().join(format!("lb{i}.toml"));
        std::fs::write(&cfg, config(priority)).unwrap();
        LbAgent::start(&lab.directors[i].ns, &lb_bin(), &cfg, &["--xdp-mode", "generic"])
            .expect("lb run")
    };
    let dir1 = start(0, 150);
    let dir2 = start(1, 100);
    wait_hops(router, &DIRECTORS[..1], Duration::from_secs(30), "the MASTER announces");
    let backup = || vip_state(&dir2) == (false, "VRRP BACKUP (VI_1)".to_owned());
    assert!(wait_until(Duration::from_secs(5), backup), "{:?}", vip_state(&dir2));
    // Still only the MASTER a while later (the BACKUP's session is up, announcing nothing).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(next_hops(router), hops(&DIRECTORS[..1]));
    assert_eq!(dir2.status().unwrap()["bgp"]["sessions"][0]["up"], true);

    dir1.stop().expect("SIGTERM dir1");
    let took = wait_hops(router, &DIRECTORS[1..2], Duration::from_secs(10), "failover");
    eprintln!("VRRP failover moved the announcement in {took:?} after dir1 stopped");
    assert_eq!(vip_state(&dir2), (true, "ready".to_owned()));
}

/// One `GET /` from client port `sport` over a fresh connection: answered by a real?
fn curl_from(client: &Netns, sport: u16) -> bool {
    let url = format!("http://{VIP}:{DR_HTTP_PORT}/");
    let port = sport.to_string();
    let args = ["curl", "-sS", "--noproxy", "*", "--local-port", &port, "--connect-timeout", "0.1"];
    let mut cmd = client.command(&args);
    cmd.args(["--max-time", "0.3", &url]);
    lb_tests::run_command(cmd, Duration::from_secs(2))
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("rs"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `cargo xtask bench`: a director dies (its link goes down: no TCP reset, only BFD can tell) →
/// the router withdraws it → the first request of a flow that hashed to it is answered through
/// another director. Medians of `LB_BENCH_ROUNDS` (default 5) rounds; and the spread of new
/// flows over the three directors. Rows are appended to `LB_BENCH_JSON` if set.
#[test]
#[ignore = "benchmark: cargo xtask bench"]
fn bench_director_death_to_traffic_through_the_others() {
    if !require_root("bgp_bench") || !require_bird("bgp_bench") {
        return;
    }
    let rounds: usize =
        std::env::var("LB_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let lab = lab("bgpbench");
    let router = &lab.router.ns;
    let cfg = lab.dir.path().join("lb.toml");
    std::fs::write(&cfg, director_config("")).unwrap();
    let start = |i: usize| {
        LbAgent::start(&lab.directors[i].ns, &lb_bin(), &cfg, &["--xdp-mode", "generic"])
            .expect("lb run")
    };
    let mut agents: Vec<Option<LbAgent>> = (0..3).map(|i| Some(start(i))).collect();
    wait_hops(router, &DIRECTORS, Duration::from_secs(30), "all three");

    // Spread of 300 new connections.
    let before: Vec<u64> = agents.iter().flatten().map(new_flows).collect();
    let n = 300;
    let counts = count_http(&lab.client.ns, &format!("http://{VIP}:{DR_HTTP_PORT}/"), n);
    let spread: Vec<f64> = agents
        .iter()
        .flatten()
        .zip(&before)
        .map(|(a, b)| (new_flows(a) - b) as f64 * 100.0 / f64::from(n))
        .collect();
    eprintln!("spread of {n} connections over the directors (%): {spread:?}; answers {counts:?}");

    let (mut withdraws, mut answers) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let dead = Instant::now();
        lab.directors[0].ns.ip(&["link", "set", "eth0", "down"]).unwrap();
        let watcher = {
            let router = router.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(10) {
                    if !next_hops(&router).contains(DIRECTORS[0]) {
                        return Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                None
            })
        };
        // New connections (the client picks the ports) until 1.5 s after the withdrawal: the
        // ones the router still hashes to dir1 fail. Traffic flows again for every flow from
        // the end of the last failed one.
        let mut attempts: Vec<(Instant, bool)> = Vec::new();
        // Fresh ports each round: a real still holds the last round's in TIME_WAIT.
        let mut port = 20000 + 1000 * u16::try_from(round).unwrap_or(0);
        while dead.elapsed() < Duration::from_secs(6) {
            port += 1;
            let ok = curl_from(&lab.client.ns, port);
            attempts.push((Instant::now(), ok));
            assert!(attempts.len() < 1000, "too many attempts");
            if watcher.is_finished() && attempts.iter().rev().take(40).all(|a| a.1) {
                break;
            }
        }
        let withdrawn = watcher.join().unwrap().expect("router never withdrew dir1");
        let failed_at: Vec<u128> = attempts
            .iter()
            .filter(|a| !a.1)
            .map(|a| a.0.duration_since(dead).as_millis())
            .collect();
        eprintln!("failed requests ended at (ms after the death): {failed_at:?}");
        let failures = attempts.iter().filter(|a| !a.1).count();
        assert!(failures > 0, "no request failed: dir1 was not on any flow's path");
        let answered = attempts.iter().rev().find(|a| !a.1).map(|a| a.0).unwrap();
        assert!(attempts.last().is_some_and(|a| a.1), "requests still failing");
        let (w, a) = (
            withdrawn.duration_since(dead).as_secs_f64() * 1e3,
            answered.duration_since(dead).as_secs_f64() * 1e3,
        );
        eprintln!(
            "round {}: withdrawn after {w:.0} ms, last failed request ended {a:.0} ms after the \
             death ({failures} of {} failed)",
            round + 1,
            attempts.len()
        );
        withdraws.push(w);
        answers.push(a);
        // dir1 back: link up, a fresh agent (and BIRD), three next hops again.
        lab.directors[0].ns.ip(&["link", "set", "eth0", "up"]).unwrap();
        if let Some(old) = agents[0].take() {
            let _ = old.kill();
        }
        agents[0] = Some(start(0));
        wait_hops(router, &DIRECTORS, Duration::from_secs(30), "dir1 back");
        // BFD up again too, or the next death is found by the hold timer instead.
        let agent = agents[0].as_ref().unwrap();
        let bfd_up = || agent.status().is_ok_and(|s| s["bgp"]["sessions"][0]["bfd"] == "Up");
        assert!(wait_until(Duration::from_secs(10), bfd_up), "BFD not up again");
    }
    let rows = serde_json::json!([
        {"name": "bgp_director_death_bfd_withdraw", "value": median(withdraws.clone()),
         "unit": "ms", "samples": withdraws},
        {"name": "bgp_director_death_all_flows_answered", "value": median(answers.clone()),
         "unit": "ms", "samples": answers},
        {"name": "bgp_ecmp_spread_min_share", "value": spread.iter().copied().fold(100.0, f64::min),
         "unit": "%", "samples": spread},
    ]);
    eprintln!("{}", serde_json::to_string_pretty(&rows).unwrap());
    if let Some(path) = std::env::var_os("LB_BENCH_JSON") {
        let mut list: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        list.extend(rows.as_array().unwrap().iter().cloned());
        std::fs::write(&path, serde_json::to_string_pretty(&list).unwrap() + "\n").unwrap();
    }
}

/// Three directors behind ECMP carry 50 long-lived connections; one real is drained on all of
/// them (so no Maglev table maps a new flow to it); then the director forwarding most of that
/// real's connections is killed and the router rehashes its flows (and, hash-threshold
/// multipath, some of the others') onto the survivors. Returns the connections broken (ended,
/// errors, stalled, or moved to another real) and the survivors' `flow_sync` counters.
/// `[dataplane] tcp_flow_timeout` of the drain-then-kill lab, seconds.
const WINDOW_S: u64 = 1;

fn drain_then_kill(label: &str, sync: bool) -> (usize, Vec<serde_json::Value>) {
    let lab = lab(label);
    let router = &lab.router.ns;
    let cfg = lab.dir.path().join("lb.toml");
    // A short table-change window (docs/fast-path.md): inside one, a flow without an entry on a
    // survivor follows the anchor table, which is the drained real's too, and nothing breaks
    // even without sync; the kill comes after the drain's window has ended.
    let mut text = format!("[dataplane]\ntcp_flow_timeout = {WINDOW_S}\n{}", director_config(""));
    if sync {
        text.push_str("\n[flow_sync]\ninterface = \"eth0\"\nsync_id = 9\n");
    }
    std::fs::write(&cfg, text).unwrap();
    let mut dirs: Vec<Option<LbAgent>> = (0..3)
        .map(|i| {
            let a =
                LbAgent::start(&lab.directors[i].ns, &lb_bin(), &cfg, &["--xdp-mode", "generic"]);
            Some(a.expect("lb run"))
        })
        .collect();
    wait_hops(router, &DIRECTORS, Duration::from_secs(30), "all three directors");
    for a in dirs.iter().flatten() {
        a.wait_all_backends("up", Duration::from_secs(10)).expect("reals up");
    }
    let conns = LongLived::start(
        &lab.client.ns,
        (VIP, DR_TCP_ECHO_PORT).into(),
        50,
        Duration::from_millis(100),
    )
    .expect("long-lived connections");
    let before = conns.wait_round_trips(3, Duration::from_secs(10)).expect("talking");
    assert!(before.is_clean(), "before: {before}");
    let sync_status = |a: &LbAgent| a.status().map(|s| s["flow_sync"].clone()).unwrap_or_default();
    let installed = || {
        dirs.iter()
            .flatten()
            .map(|a| sync_status(a)["flows_installed"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let installed_before = installed();
    let drained = REALS[0];
    let svc = format!("{VIP}:{DR_TCP_ECHO_PORT}");
    for a in dirs.iter().flatten() {
        a.cli(&["drain", &svc, &format!("{drained}:{DR_TCP_ECHO_PORT}")]).expect("lb drain");
    }
    if sync {
        // Each flow has its entry on the director forwarding it, which the two others install:
        // from its SYN when it started inside the start window, else from its first segment in
        // the drain's window.
        let learnt = || installed() >= 100;
        let statuses = || dirs.iter().flatten().map(sync_status).collect::<Vec<_>>();
        assert!(
            wait_until(Duration::from_secs(5), learnt),
            "flows learnt: {installed_before} before the drain, {:?}",
            statuses()
        );
    }
    // The window ends (plus the program's one-second clock) before the kill.
    std::thread::sleep(Duration::from_secs(WINDOW_S + 2));
    // The director with the most local flows to the drained real.
    let on_drained = |a: &LbAgent| {
        let out = a.cli(&["flows", "--json", "--vip", &svc]).expect("lb flows");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v["flows"].as_array().map_or(0, |f| {
            f.iter()
                .filter(|f| {
                    f["origin"] == "local"
                        && f["real"].as_str().is_some_and(|r| r.starts_with(drained))
                })
                .count()
        })
    };
    let victim = (0..3).max_by_key(|&i| dirs[i].as_ref().map_or(0, on_drained)).unwrap();
    let at = conns.snapshot();
    dirs[victim].take().unwrap().kill().expect("SIGKILL");
    let survivors: Vec<&str> =
        DIRECTORS.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, d)| *d).collect();
    wait_hops(router, &survivors, Duration::from_secs(2), "director killed");
    let _ = wait_until(Duration::from_secs(10), || {
        let r = conns.snapshot();
        let p = r.progress_since(&at);
        r.connections.iter().all(|c| !c.alive || p[c.index] >= 30)
    });
    let report = conns.stop();
    let progress = report.progress_since(&at);
    let broken = report
        .connections
        .iter()
        .filter(|c| {
            !c.alive || c.error_count() > 0 || progress[c.index] < 30 || c.last_real != c.first_real
        })
        .count();
    eprintln!(
        "ECMP FLOW-SYNC sync={sync}: dir{} killed, broken {broken}/50; {}",
        victim + 1,
        report.summary()
    );
    let statuses = dirs.iter().flatten().map(sync_status).collect();
    for a in dirs.into_iter().flatten() {
        a.stop().expect("clean stop");
    }
    (broken, statuses)
}

/// Issue #17 with the scale-out topology: a real drained, then a director killed: with
/// `[flow_sync]` no connection breaks; without it (the control, same test) some do.
#[test]
fn flow_sync_keeps_connections_when_an_ecmp_director_dies_after_a_drain() {
    if !require_root("bgp_ecmp flow sync") || !require_bird("bgp_ecmp flow sync") {
        return;
    }
    let (broken, _) = drain_then_kill("ecmpnosync", false);
    assert!(broken > 0, "control without [flow_sync]: the drain and the kill must break some");
    let (broken, statuses) = drain_then_kill("ecmpsync", true);
    assert_eq!(broken, 0, "with [flow_sync]: {statuses:?}");
}
