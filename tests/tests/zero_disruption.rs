//! Zero disruption: routine operations on a running director never reset or stall an established
//! connection. Each scenario keeps 50 long-lived TCP connections (a line every 100 ms to the reals'
//! line-echo service on VIP:7) going through the operation and at least 2 s after it, and measures
//! errors and the longest gap between two echoes of a connection ("stall").
//!
//! - reload with changed weights, adding a real by reload, `lb drain`: no connection may see any
//!   problem at all;
//! - a health check of one real flapping 20 times: connections on the other reals see nothing
//!   (connections on the flapping real move while it is down, as designed, and are reported
//!   apart);
//! - director failover (VRRP): the master's agent is SIGKILLed (`director_failover`) or the master
//!   drops off the segment (`director_failover_machine_gone`); the backup has no flow entries but
//!   the same Maglev table, so connections continue to the same reals; at least 90 % must survive,
//!   and what was lost is printed.
//! - the fast path (docs/fast-path.md): 50 TCP connections, and 50 UDP flows (one socket each,
//!   the reals' UDP echo), started outside a table-change window, without flow entries, keep
//!   their real through a reweight and a drain;
//! - hitless restart of the VRRP master's agent, `--pin-dir`, after a SIGKILL
//!   (`vrrp_master_agent_restart`) or a SIGQUIT hand-over (`vrrp_master_agent_handover`): the new
//!   agent resumes the mastership with the adopted dataplane; nothing may be disturbed, the VIP and
//!   the XDP program stay on the master and the backup never takes over.
//!
//! Every scenario prints a `ZERO-DISRUPTION <name>:` line (run with `--nocapture`).

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use lb_tests::{
    ConnReport, DR_HTTP_PORT, DR_TCP_ECHO_PORT, DR_UDP_PORT, DrTopology, LbAgent, LongLived,
    LongLivedReport, Process, count_http, lb_bin, require_root, spawn_testpeer, wait_until,
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const CONNECTIONS: usize = 50;
const INTERVAL: Duration = Duration::from_millis(100);
/// Round trips every connection must make after the operation: ≥ 2 s at `INTERVAL`.
const AFTER: u64 = 20;
/// Port of the extra listener in rs3 that the flapping health check probes.
const CHECK_PORT: u16 = 8080;

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

fn echo() -> SocketAddr {
    SocketAddr::from((VIP, DR_TCP_ECHO_PORT))
}

/// What goes into a config besides the reals.
#[derive(Clone, Copy, Default)]
struct Extras {
    /// A `[[vrrp_instance]]` with this priority, owning the VIP (/24).
    vrrp_priority: Option<u8>,
    /// Its `advert_int` (default 0.2 s).
    advert_int: Option<&'static str>,
    /// `tcp_check`s (delay_loop 0.2, connect_timeout 0.5, retry 0) on every real; rs3's probes
    /// [`CHECK_PORT`].
    health: bool,
    /// `[dataplane] tcp_flow_timeout`, the table-change window (docs/fast-path.md).
    tcp_flow_timeout: Option<u32>,
    /// A UDP service VIP:53 (the reals' UDP echo) too.
    udp: bool,
}

/// TCP services VIP:80 and VIP:7 (and UDP VIP:53 with `udp`), each with the reals
/// `(index, weight)`.
fn config(reals: &[(usize, u32)], extras: Extras) -> String {
    let mut text = String::new();
    if let Some(window) = extras.tcp_flow_timeout {
        text.push_str(&format!("[dataplane]\ntcp_flow_timeout = {window}\n\n"));
    }
    if let Some(priority) = extras.vrrp_priority {
        let advert_int = extras.advert_int.unwrap_or("0.2");
        text.push_str(&format!(
            "[[vrrp_instance]]\nname = \"VI_1\"\nstate = \"BACKUP\"\ninterface = \"eth0\"\n\
             virtual_router_id = 51\npriority = {priority}\nadvert_int = {advert_int}\nversion = 3\n\
             virtual_ipaddress = [\"{VIP}/24\"]\n\n"
        ));
    }
    let udp = extras.udp.then_some((DR_UDP_PORT, "udp"));
    for (port, protocol) in
        [(DR_HTTP_PORT, "tcp"), (DR_TCP_ECHO_PORT, "tcp")].into_iter().chain(udp)
    {
        text.push_str(&format!(
            "[[virtual_server]]\nvip = \"{VIP}\"\nport = {port}\nprotocol = \"{protocol}\"\n\
             interface = \"eth0\"\n"
        ));
        if extras.health {
            text.push_str("delay_loop = 0.2\n");
        }
        for &(i, weight) in reals {
            text.push_str(&format!(
                "[[virtual_server.real_server]]\naddress = \"{}\"\nport = {port}\nweight = {weight}\n",
                DrTopology::real_ip(i)
            ));
            if extras.health {
                text.push_str(
                    "[virtual_server.real_server.tcp_check]\nconnect_timeout = 0.5\nretry = 0\n",
                );
                if i == 2 {
                    text.push_str(&format!("connect_port = {CHECK_PORT}\n"));
                }
            }
        }
        text.push('\n');
    }
    text
}

/// The DR topology (3 reals), the VIP on the director, `lb run` with `reals`, all of them up.
fn setup(
    label: &str,
    reals: &[(usize, u32)],
    extras: Extras,
) -> (DrTopology, tempfile::TempDir, PathBuf, LbAgent) {
    let dr = DrTopology::build(label, 3, VIP, testpeer()).expect("topology");
    dr.director.add_addr(&format!("{VIP}/32")).expect("VIP on the director");
    let dir = lb_tests::scratch_dir(&format!("{}-cfg-", dr.topo.prefix())).expect("temp dir");
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, config(reals, extras)).expect("write config");
    let agent = LbAgent::start(&dr.director.ns, &lb_bin(), &path, &["--xdp-mode", "generic"])
        .expect("lb run");
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("all reals up");
    (dr, dir, path, agent)
}

/// Opens the long-lived connections and waits until each has echoed 3 times, cleanly.
fn open_connections(dr: &DrTopology) -> LongLived {
    let ll = LongLived::start(&dr.client.ns, echo(), CONNECTIONS, INTERVAL)
        .expect("open long-lived connections");
    let before = ll.wait_round_trips(3, Duration::from_secs(10)).expect("every connection echoes");
    eprintln!("before the operation: {}", before.summary());
    assert!(before.is_clean(), "problems before the operation: {before}");
    ll
}

/// Sets the flag when dropped, so the sampler stops even when the operation panics.
struct Raise<'a>(&'a AtomicBool);

impl Drop for Raise<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs `op` while sampling `ll` every 10 ms; returns its result and, per connection, the longest
/// time without a good echo seen meanwhile (gaps between consecutive echoes, and the gap still open
/// at each sample while the connection is alive). The normal gap is about `INTERVAL`.
fn with_stall_meter<R>(ll: &LongLived, op: impl FnOnce() -> R) -> (R, Vec<Duration>) {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let first = ll.snapshot();
            let mut last: Vec<Option<Duration>> =
                first.connections.iter().map(|c| c.last_ok).collect();
            let mut worst = vec![Duration::ZERO; last.len()];
            loop {
                let finished = done.load(Ordering::SeqCst);
                let r = ll.snapshot();
                for c in &r.connections {
                    let i = c.index;
                    if let Some(now) = c.last_ok
                        && last[i].is_none_or(|prev| now > prev)
                    {
                        if let Some(prev) = last[i] {
                            worst[i] = worst[i].max(now - prev);
                        }
                        last[i] = Some(now);
                    }
                    if c.alive
                        && let Some(prev) = last[i]
                    {
                        worst[i] = worst[i].max(r.elapsed.saturating_sub(prev));
                    }
                }
                if finished {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            worst
        });
        let out = {
            let _raise = Raise(&done);
            op()
        };
        (out, sampler.join().expect("stall sampler"))
    })
}

/// Counts of one group of connections.
struct Tally {
    connections: usize,
    alive: usize,
    round_trips: u64,
    errors: u64,
    with_errors: usize,
    longest_stall: Duration,
}

impl Tally {
    fn of<'a>(conns: impl IntoIterator<Item = &'a ConnReport>, stalls: &[Duration]) -> Tally {
        let mut t = Tally {
            connections: 0,
            alive: 0,
            round_trips: 0,
            errors: 0,
            with_errors: 0,
            longest_stall: Duration::ZERO,
        };
        for c in conns {
            t.connections += 1;
            t.alive += usize::from(c.alive);
            t.round_trips += c.round_trips;
            t.errors += c.error_count();
            t.with_errors += usize::from(c.error_count() > 0);
            if c.alive {
                t.longest_stall = t.longest_stall.max(stalls[c.index]);
            }
        }
        t
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} connections ({} alive), {} round trips, {} errors on {} connections, longest \
             stall {} ms (of the alive ones)",
            self.connections,
            self.alive,
            self.round_trips,
            self.errors,
            self.with_errors,
            self.longest_stall.as_millis()
        )
    }
}

/// Prints the scenario's numbers (visible with `--nocapture`) and returns them for messages.
fn print_result(scenario: &str, report: &LongLivedReport, stalls: &[Duration]) -> String {
    let line = format!(
        "ZERO-DISRUPTION {scenario}: {} | by real {:?}",
        Tally::of(&report.connections, stalls),
        report.by_real()
    );
    eprintln!("{line}");
    line
}

/// Waits until every connection selected by `include` has made `more` round trips since
/// `earlier`. Err (with the report) when one of them is given up or on timeout.
fn wait_progress_of(
    ll: &LongLived,
    earlier: &LongLivedReport,
    more: u64,
    timeout: Duration,
    include: impl Fn(&ConnReport) -> bool,
) -> Result<LongLivedReport, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let r = ll.snapshot();
        let progress = r.progress_since(earlier);
        let chosen: Vec<&ConnReport> = r.connections.iter().filter(|c| include(c)).collect();
        if let Some(dead) = chosen.iter().find(|c| !c.alive) {
            return Err(format!("connection {} was given up: {r}", dead.index));
        }
        if chosen.iter().all(|c| progress[c.index] >= more) {
            return Ok(r);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not every connection made {more} round trips in {timeout:?}: {r}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The backend `address` of service `port` in `lb backends --json`.
fn backend(agent: &LbAgent, port: u16, i: usize) -> Option<serde_json::Value> {
    let v = agent.backends().ok()?;
    v["services"].as_array()?.iter().find(|s| s["port"] == u64::from(port))?["backends"]
        .as_array()?
        .iter()
        .find(|b| b["address"] == DrTopology::real_ip(i).to_string())
        .cloned()
}

/// Whether real `i` shows `state` (and `weight`, if given) on both services.
fn shows(agent: &LbAgent, i: usize, state: &str, weight: Option<u64>) -> bool {
    [DR_HTTP_PORT, DR_TCP_ECHO_PORT].iter().all(|&port| {
        backend(agent, port, i).is_some_and(|b| {
            b["state"] == state && weight.is_none_or(|w| b["weight"].as_u64() == Some(w))
        })
    })
}

/// The common part of the single-director scenarios: `op` runs, then every connection must make
/// [`AFTER`] more round trips (≥ 2 s); returns the final report and the stalls.
fn keep_going_through(
    ll: LongLived,
    op: impl FnOnce() -> Result<(), String>,
) -> (Result<(), String>, LongLivedReport, Vec<Duration>) {
    let (outcome, stalls) = with_stall_meter(&ll, || {
        op()?;
        let at = ll.snapshot();
        let started = Instant::now();
        ll.wait_progress(&at, AFTER, Duration::from_secs(15)).map_err(|e| format!("{e:#}"))?;
        let left = Duration::from_secs(2).saturating_sub(started.elapsed());
        std::thread::sleep(left);
        Ok(())
    });
    (outcome, ll.stop(), stalls)
}

#[test]
fn reload_with_changed_weights() {
    if !require_root("reload_with_changed_weights") {
        return;
    }
    let all = [(0, 1), (1, 1), (2, 1)];
    let (dr, _dir, path, agent) = setup("zdweights", &all, Extras::default());
    let ll = open_connections(&dr);

    let (outcome, report, stalls) = keep_going_through(ll, || {
        std::fs::write(&path, config(&[(0, 3), (1, 1), (2, 1)], Extras::default()))
            .map_err(|e| e.to_string())?;
        agent.reload().map_err(|e| format!("lb reload: {e:#}"))?;
        let applied = wait_until(Duration::from_secs(5), || {
            shows(&agent, 0, "up", Some(3))
                && shows(&agent, 1, "up", Some(1))
                && shows(&agent, 2, "up", Some(1))
        });
        if !applied {
            return Err(format!("weights 3/1/1 not shown: {:?}", agent.backends().ok()));
        }
        Ok(())
    });
    let line = print_result("reload_with_changed_weights", &report, &stalls);
    outcome.unwrap_or_else(|e| panic!("{e}\n{line}"));
    assert!(report.is_clean(), "a reload disturbed connections: {line}\n{report}");
    assert_eq!(report.alive(), CONNECTIONS, "{report}");
    agent.stop().expect("clean stop");
}

#[test]
fn add_a_real() {
    if !require_root("add_a_real") {
        return;
    }
    let (dr, _dir, path, agent) = setup("zdaddreal", &[(0, 1), (1, 1)], Extras::default());
    let ll = open_connections(&dr);

    let mut spread = Default::default();
    let (outcome, report, stalls) = keep_going_through(ll, || {
        std::fs::write(&path, config(&[(0, 1), (1, 1), (2, 1)], Extras::default()))
            .map_err(|e| e.to_string())?;
        agent.reload().map_err(|e| format!("lb reload: {e:#}"))?;
        if !wait_until(Duration::from_secs(10), || shows(&agent, 2, "up", Some(1))) {
            return Err(format!("rs3 not up after the reload: {:?}", agent.backends().ok()));
        }
        spread = count_http(&dr.client.ns, &format!("http://{VIP}/"), 60);
        Ok(())
    });
    let line = print_result("add_a_real", &report, &stalls);
    eprintln!("60 new HTTP flows after adding rs3: {spread:?}");
    outcome.unwrap_or_else(|e| panic!("{e}\n{line}"));
    assert!(report.is_clean(), "adding a real disturbed connections: {line}\n{report}");
    assert_eq!(report.alive(), CONNECTIONS, "{report}");
    assert!(report.on_real("rs3").is_empty(), "rs3 was not in the config yet: {report}");
    assert_eq!(spread.get("(failed)"), None, "new flows failed: {spread:?}");
    assert!(spread.get("rs3").copied().unwrap_or(0) > 0, "no new flow reached rs3: {spread:?}");
    agent.stop().expect("clean stop");
}

#[test]
fn drain_a_real() {
    if !require_root("drain_a_real") {
        return;
    }
    let all = [(0, 1), (1, 1), (2, 1)];
    let (dr, _dir, _path, agent) = setup("zddrain", &all, Extras::default());
    let ll = open_connections(&dr);

    let mut spread = Default::default();
    let (outcome, report, stalls) = keep_going_through(ll, || {
        let rs1 = DrTopology::real_ip(0);
        for port in [DR_TCP_ECHO_PORT, DR_HTTP_PORT] {
            agent
                .cli(&["drain", &format!("{VIP}:{port}"), &format!("{rs1}:{port}")])
                .map_err(|e| format!("lb drain :{port}: {e:#}"))?;
        }
        if !shows(&agent, 0, "drain", Some(0)) {
            return Err(format!("rs1 not drained: {:?}", agent.backends().ok()));
        }
        spread = count_http(&dr.client.ns, &format!("http://{VIP}/"), 60);
        Ok(())
    });
    let line = print_result("drain_a_real", &report, &stalls);
    eprintln!("60 new HTTP flows after draining rs1: {spread:?}");
    outcome.unwrap_or_else(|e| panic!("{e}\n{line}"));
    assert!(!report.on_real("rs1").is_empty(), "no connection on rs1 to drain: {report}");
    assert!(report.is_clean(), "draining disturbed connections: {line}\n{report}");
    assert_eq!(report.alive(), CONNECTIONS, "{report}");
    assert_eq!(spread.get("(failed)"), None, "new flows failed: {spread:?}");
    assert_eq!(spread.get("rs1"), None, "new flows reached the drained rs1: {spread:?}");
    agent.stop().expect("clean stop");
}

/// The fast path (docs/fast-path.md): connections opened after the window of the agent's start
/// has ended have no flow entry (`lb flows` lists none), and a reweight and a drain keep every
/// one on its real: inside the window each takes its entry from the anchor table.
#[test]
fn connections_without_entries_survive_a_reweight_and_a_drain() {
    if !require_root("connections_without_entries_survive_a_reweight_and_a_drain") {
        return;
    }
    let all = [(0, 1), (1, 1), (2, 1)];
    let extras = Extras { tcp_flow_timeout: Some(1), ..Extras::default() };
    let (dr, _dir, path, agent) = setup("zdstateless", &all, extras);
    // The start's window (1 s and a second for the program's coarse clock) ends.
    std::thread::sleep(Duration::from_secs(3));
    let ll = open_connections(&dr);
    let flows = agent.cli(&["flows", "--json"]).expect("lb flows");
    let listed: serde_json::Value = serde_json::from_str(&flows).expect("lb flows --json");
    let entries = listed["flows"].as_array().map_or(0, Vec::len);
    assert_eq!(entries, 0, "connections opened outside a window have no entry: {flows}");

    let (outcome, report, stalls) = keep_going_through(ll, || {
        std::fs::write(&path, config(&[(0, 3), (1, 1), (2, 1)], extras))
            .map_err(|e| e.to_string())?;
        agent.reload().map_err(|e| format!("lb reload: {e:#}"))?;
        if !wait_until(Duration::from_secs(5), || shows(&agent, 0, "up", Some(3))) {
            return Err(format!("weights 3/1/1 not shown: {:?}", agent.backends().ok()));
        }
        let rs2 = DrTopology::real_ip(1);
        for port in [DR_TCP_ECHO_PORT, DR_HTTP_PORT] {
            agent
                .cli(&["drain", &format!("{VIP}:{port}"), &format!("{rs2}:{port}")])
                .map_err(|e| format!("lb drain :{port}: {e:#}"))?;
        }
        Ok(())
    });
    let line = print_result(
        "connections_without_entries_survive_a_reweight_and_a_drain",
        &report,
        &stalls,
    );
    outcome.unwrap_or_else(|e| panic!("{e}\n{line}"));
    assert!(!report.on_real("rs2").is_empty(), "no connection on rs2 to drain: {report}");
    assert!(report.is_clean(), "a change disturbed connections without entries: {line}\n{report}");
    assert_eq!(report.alive(), CONNECTIONS, "{report}");
    agent.stop().expect("clean stop");
}

/// UDP flows to VIP:53 from the client, one socket (source port) each: the name of the real
/// that echoes one datagram of each. An error names the flow that got no answer.
fn udp_reals(socks: &[UdpSocket]) -> Result<Vec<String>, String> {
    let mut buf = [0u8; 512];
    socks
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.send(b"ping").map_err(|e| format!("udp flow {i}: send: {e}"))?;
            let n = s.recv(&mut buf).map_err(|e| format!("udp flow {i}: no echo: {e}"))?;
            let text = String::from_utf8_lossy(&buf[..n]);
            Ok(text.split_whitespace().next().unwrap_or_default().to_owned())
        })
        .collect()
}

/// The fast path for UDP (docs/fast-path.md), with a real UDP client and server: flows started
/// after the start's window have no entry (`lb flows` lists none); idle across a reweight, and
/// across a drain in the same window, each keeps its real (it takes its entry from the anchor
/// table); after the window its entry keeps it there.
#[test]
fn udp_flows_without_entries_keep_their_real_across_a_reweight_and_a_drain() {
    let test = "udp_flows_without_entries_keep_their_real_across_a_reweight_and_a_drain";
    if !require_root(test) {
        return;
    }
    const WINDOW: u32 = 4;
    let all = [(0, 1), (1, 1), (2, 1)];
    let extras = Extras { tcp_flow_timeout: Some(WINDOW), udp: true, ..Extras::default() };
    let (dr, _dir, path, agent) = setup("zdudp", &all, extras);
    let udp_flows = |agent: &LbAgent| {
        let text = agent.cli(&["flows", "--json"]).expect("lb flows");
        let v: serde_json::Value = serde_json::from_str(&text).expect("lb flows --json");
        let udp = |f: &&serde_json::Value| f["protocol"].as_str() == Some("udp");
        v["flows"].as_array().map_or(0, |a| a.iter().filter(udp).count())
    };
    // The start's window (and a second for the program's coarse clock) ends.
    std::thread::sleep(Duration::from_secs(u64::from(WINDOW) + 2));
    let target = SocketAddr::from((VIP, DR_UDP_PORT));
    let socks = dr
        .client
        .ns
        .run_in(move || -> std::io::Result<Vec<UdpSocket>> {
            (0..CONNECTIONS)
                .map(|_| {
                    let s = UdpSocket::bind("0.0.0.0:0")?;
                    s.connect(target)?;
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    Ok(s)
                })
                .collect()
        })
        .expect("client namespace")
        .expect("UDP sockets");
    let before = udp_reals(&socks).expect("every UDP flow is echoed");
    assert_eq!(udp_flows(&agent), 0, "UDP flows outside a window have no entry");
    assert!(before.iter().any(|r| r == "rs2"), "no UDP flow on rs2 to drain: {before:?}");

    // Change 1: a reweight opens a window anchored on the table the flows started under.
    std::fs::write(&path, config(&[(0, 5), (1, 1), (2, 1)], extras)).expect("write config");
    agent.reload().expect("lb reload");
    let reweighted =
        || backend(&agent, DR_UDP_PORT, 0).is_some_and(|b| b["weight"].as_u64() == Some(5));
    assert!(wait_until(Duration::from_secs(5), reweighted), "reweight not shown");
    // Half the flows idle across it, half across it and a drain (change 2 of the window).
    std::thread::sleep(Duration::from_secs(1));
    let (first, second) = socks.split_at(CONNECTIONS / 2);
    let after_one = udp_reals(first).expect("echoes after the reweight");
    let rs2 = DrTopology::real_ip(1);
    agent
        .cli(&["drain", &format!("{VIP}:{DR_UDP_PORT}"), &format!("{rs2}:{DR_UDP_PORT}")])
        .expect("lb drain");
    let after_two = udp_reals(second).expect("echoes after the drain");
    let after: Vec<String> = after_one.into_iter().chain(after_two).collect();
    assert_eq!(after, before, "UDP flows idle across one and two changes keep their real");
    assert_eq!(udp_flows(&agent), CONNECTIONS, "each took its entry in the window");

    // After the window the entries (idle less than udp_flow_timeout) keep them there.
    std::thread::sleep(Duration::from_secs(u64::from(WINDOW) + 2));
    let later = udp_reals(&socks).expect("echoes after the window");
    assert_eq!(later, before, "UDP flows with entries keep their real after the window");
    let mut by_real = std::collections::BTreeMap::new();
    for r in &before {
        *by_real.entry(r.as_str()).or_insert(0) += 1;
    }
    println!(
        "ZERO-DISRUPTION {test}: {CONNECTIONS} UDP flows kept their real | by real {by_real:?}"
    );
    agent.stop().expect("clean stop");
}

/// Starts the listener rs3's health check probes (an HTTP testpeer on rs3:CHECK_PORT).
fn check_listener(dr: &DrTopology) -> Process {
    let addr = format!("{}:{CHECK_PORT}", DrTopology::real_ip(2));
    spawn_testpeer(&dr.reals[2].ns, testpeer(), &["--name", "rs3check", "--http", &addr])
        .expect("rs3's check listener")
}

#[test]
fn health_flaps_of_another_real() {
    if !require_root("health_flaps_of_another_real") {
        return;
    }
    const FLAPS: usize = 20;
    let all = [(0, 1), (1, 1), (2, 1)];
    let extras = Extras { health: true, ..Default::default() };
    let dr = DrTopology::build("zdflap", 3, VIP, testpeer()).expect("topology");
    // Declared after `dr`: dropped (killed) before the namespaces go.
    let mut listener = Some(check_listener(&dr));
    dr.director.add_addr(&format!("{VIP}/32")).expect("VIP on the director");
    let dir = lb_tests::scratch_dir(&format!("{}-cfg-", dr.topo.prefix())).expect("temp dir");
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, config(&all, extras)).expect("write config");
    let agent = LbAgent::start(&dr.director.ns, &lb_bin(), &path, &["--xdp-mode", "generic"])
        .expect("lb run");
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("all reals up");
    let ll = open_connections(&dr);
    let on_rs3: Vec<usize> = ll.snapshot().on_real("rs3").iter().map(|c| c.index).collect();
    let others = |c: &ConnReport| matches!(c.first_real.as_deref(), Some("rs1" | "rs2"));

    let mut downs = Vec::new();
    let mut ups = Vec::new();
    let (outcome, stalls) = with_stall_meter(&ll, || -> Result<(), String> {
        for n in 1..=FLAPS {
            let t = Instant::now();
            listener.take();
            if !wait_until(Duration::from_secs(5), || shows(&agent, 2, "down", None)) {
                return Err(format!("flap {n}: rs3 not down: {:?}", agent.backends().ok()));
            }
            downs.push(t.elapsed());
            let t = Instant::now();
            listener = Some(check_listener(&dr));
            if !wait_until(Duration::from_secs(5), || shows(&agent, 2, "up", None)) {
                return Err(format!("flap {n}: rs3 not up: {:?}", agent.backends().ok()));
            }
            ups.push(t.elapsed());
        }
        let at = ll.snapshot();
        let started = Instant::now();
        wait_progress_of(&ll, &at, AFTER, Duration::from_secs(15), others)?;
        std::thread::sleep(Duration::from_secs(2).saturating_sub(started.elapsed()));
        Ok(())
    });
    let report = ll.stop();
    let line = print_result("health_flaps_of_another_real", &report, &stalls);
    let clean_group = Tally::of(report.connections.iter().filter(|c| others(c)), &stalls);
    let rs3_group = Tally::of(on_rs3.iter().map(|&i| &report.connections[i]), &stalls);
    let ms = |d: &[Duration]| d.iter().map(Duration::as_millis).max().unwrap_or(0);
    eprintln!(
        "  {} flaps done: down seen within {} ms, up within {} ms (worst)\n  on rs1/rs2: \
         {clean_group}\n  on rs3 (moved while it was down, expected): {rs3_group}",
        downs.len().min(ups.len()),
        ms(&downs),
        ms(&ups)
    );
    outcome.unwrap_or_else(|e| panic!("{e}\n{line}"));
    let problems: Vec<String> = report
        .errors()
        .into_iter()
        .filter(|e| e.contains(" on rs1]") || e.contains(" on rs2]"))
        .collect();
    assert!(
        clean_group.errors == 0 && problems.is_empty(),
        "connections on rs1/rs2 were disturbed by rs3's flapping ({clean_group}):\n  {}\n{report}",
        problems.join("\n  ")
    );
    assert_eq!(clean_group.alive, clean_group.connections, "{report}");
    assert!(clean_group.connections > 0, "no connection on rs1/rs2: {report}");
    agent.stop().expect("clean stop");
}

/// How the master director fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// SIGKILL of its `lb run` (the machine stays up).
    KillAgent,
    /// Its link goes down (the machine is gone, as far as the network can tell).
    PullCable,
}

/// dir1's dataplane as seen from outside: whether an XDP program is on eth0 and whether the VIP is
/// (a VIP without the program means dir1's own TCP stack answers the clients: with RSTs).
fn dir1_leftovers(dr: &DrTopology) -> String {
    let out = |args: &[&str]| {
        dr.director
            .ns
            .exec(args)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let xdp = out(&["ip", "-d", "link", "show", "eth0"]).contains("xdp");
    let vip = out(&["ip", "-4", "addr", "show", "eth0"]).contains(&format!("{VIP}/"));
    let hint = if vip && !xdp {
        " (the VIP without the XDP program: dir1's kernel answers the connections with RSTs \
         until dir2's gratuitous ARP)"
    } else {
        ""
    };
    format!("dir1 after the failure: XDP on eth0: {xdp}, VIP on eth0: {vip}{hint}")
}

/// Two directors with VRRP (dir1 priority 150, dir2 100) and the same services; long-lived
/// connections through dir1; dir1 fails; dir2 (no flow entries, the same Maglev tables) must carry
/// at least 90 % of the connections on to the same reals.
fn failover(scenario: &str, label: &str, how: Failure) {
    let all = [(0, 1), (1, 1), (2, 1)];
    let mut dr = DrTopology::build(label, 3, VIP, testpeer()).expect("topology");
    let dir2 = dr.topo.add_host("dir2", &["192.0.2.3/24"]).expect("second director");
    let dir = lb_tests::scratch_dir(&format!("{}-cfg-", dr.topo.prefix())).expect("temp dir");
    let (c1, c2) = (dir.path().join("dir1.toml"), dir.path().join("dir2.toml"));
    let vrrp = |p| Extras { vrrp_priority: Some(p), ..Default::default() };
    std::fs::write(&c1, config(&all, vrrp(150))).expect("config");
    std::fs::write(&c2, config(&all, vrrp(100))).expect("config");
    // The master pins its dataplane (as the shipped systemd unit does): killing its agent leaves
    // forwarding running until the clients follow the VIP to dir2.
    let bpf = lb_tests::BpfFs::mount(dir.path().join("bpf")).expect("bpffs");
    let pin = bpf.dir.join("lb").to_string_lossy().into_owned();
    let state = dir.path().join("dir1-dataplane.json").to_string_lossy().into_owned();
    let a1 = LbAgent::start(
        &dr.director.ns,
        &lb_bin(),
        &c1,
        &["--xdp-mode", "generic", "--pin-dir", &pin, "--state-file", &state],
    )
    .expect("dir1");
    let a2 = LbAgent::start(&dir2.ns, &lb_bin(), &c2, &["--xdp-mode", "generic"]).expect("dir2");
    let settled = wait_until(Duration::from_secs(10), || {
        a1.vrrp_state("VI_1").as_deref() == Some("MASTER")
            && a2.vrrp_state("VI_1").as_deref() == Some("BACKUP")
    });
    assert!(
        settled,
        "dir1 MASTER, dir2 BACKUP: {:?} / {:?}",
        a1.vrrp_state("VI_1"),
        a2.vrrp_state("VI_1")
    );
    a1.wait_all_backends("up", Duration::from_secs(10)).expect("reals up on dir1");
    a2.wait_all_backends("up", Duration::from_secs(10)).expect("reals up on dir2");
    let ll = open_connections(&dr);

    let mut failover = None;
    let mut at_failure = None;
    let mut leftovers = String::new();
    let (outcome, stalls) = with_stall_meter(&ll, || -> Result<(), String> {
        at_failure = Some(ll.snapshot());
        let failed = Instant::now();
        match how {
            Failure::KillAgent => a1.kill().map_err(|e| format!("SIGKILL dir1's agent: {e:#}"))?,
            Failure::PullCable => {
                let port = &dr.director.bridge_port;
                dr.topo
                    .switch()
                    .ip(&["link", "set", port, "down"])
                    .map_err(|e| format!("dir1's bridge port down: {e:#}"))?;
            }
        }
        if !wait_until(Duration::from_secs(10), || {
            a2.vrrp_state("VI_1").as_deref() == Some("MASTER")
        }) {
            return Err(format!("dir2 did not become MASTER: {:?}", a2.vrrp_state("VI_1")));
        }
        failover = Some(failed.elapsed());
        leftovers = dir1_leftovers(&dr);
        // Every connection still alive must go on for AFTER round trips (≥ 2 s); those given up
        // are what the failover lost, judged below.
        let at = ll.snapshot();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(20);
        loop {
            let r = ll.snapshot();
            let progress = r.progress_since(&at);
            let done = r.connections.iter().all(|c| !c.alive || progress[c.index] >= AFTER);
            if (done && started.elapsed() >= Duration::from_secs(2)) || Instant::now() >= deadline {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let report = ll.stop();
    let line = print_result(scenario, &report, &stalls);
    let at_failure = at_failure.expect("snapshot at the failure");
    let progress = report.progress_since(&at_failure);
    let survived: Vec<&ConnReport> = report
        .connections
        .iter()
        .filter(|c| c.alive && progress[c.index] >= AFTER && c.last_real == c.first_real)
        .collect();
    let lost = CONNECTIONS - survived.len();
    let moved = report
        .connections
        .iter()
        .filter(|c| c.last_real.is_some() && c.last_real != c.first_real)
        .count();
    let longest = survived.iter().map(|c| stalls[c.index]).max().unwrap_or_default();
    let summary = format!(
        "{how:?}: dir2 MASTER {} ms after the failure; survived {}/{CONNECTIONS} ({:.0} %), lost \
         {lost}, moved to another real {moved}, connections with errors {}, longest stall of a \
         survivor {} ms; {leftovers}",
        failover.map_or(0, |d| d.as_millis()),
        survived.len(),
        100.0 * survived.len() as f64 / CONNECTIONS as f64,
        report.connections.iter().filter(|c| c.error_count() > 0).count(),
        longest.as_millis()
    );
    eprintln!("  {summary}");
    outcome.unwrap_or_else(|e| panic!("{e}\n{line}\n{summary}"));
    assert!(
        survived.len() * 10 >= CONNECTIONS * 9,
        "only {} of {CONNECTIONS} connections survived the failover ({summary}): {line}\n{report}",
        survived.len()
    );
    a2.stop().expect("clean stop of dir2");
}

#[test]
fn director_failover() {
    if !require_root("director_failover") {
        return;
    }
    failover("director_failover", "zdfailover", Failure::KillAgent);
}

#[test]
fn director_failover_machine_gone() {
    if !require_root("director_failover_machine_gone") {
        return;
    }
    failover("director_failover_machine_gone", "zdcable", Failure::PullCable);
}

/// dir1's VRRP instance: `became_master` from `lb status`.
fn became_master(agent: &LbAgent) -> Option<u64> {
    let v = agent.status().ok()?;
    let i = v["vrrp"]["instances"].as_array()?.iter().find(|i| i["name"] == "VI_1")?;
    i["counters"]["became_master"].as_u64()
}

/// How the VRRP master's agent ends before its restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    /// SIGKILL: a crash.
    Kill,
    /// SIGQUIT: an upgrade's hand-over to the next agent.
    Quit,
}

/// The VRRP master's agent is SIGKILLed and started again at once with the same `--pin-dir` (a
/// crash and a supervisor's restart) while dir2 listens as BACKUP. The new agent adopts the pinned
/// dataplane and resumes the mastership (lb-userspace/src/agent/resume.rs) instead of starting in
/// BACKUP: the VIP and the XDP program never leave dir1, dir2 never becomes MASTER, and no
/// connection sees an error. Adverts every [`RESTART_ADVERT`] (5 s): dir2 would take over after
/// 18 s of silence, the resumed master is quiet for 7 s, so the restart (a program load through
/// the verifier: 3-4 s seen on a loaded two-core machine) has at least 6 s. At 1 s adverts it had
/// 1.2 s, which a loaded machine's restart overran (dir2 took over).
#[test]
fn vrrp_master_agent_restart() {
    if !require_root("vrrp_master_agent_restart") {
        return;
    }
    master_agent_restart("vrrp_master_agent_restart", "zdvrrprst", Exit::Kill);
}

/// The same with SIGQUIT (the documented hand-over for upgrades): the old agent leaves the VIP and
/// the mastership to the next one instead of handing over to the backup.
#[test]
fn vrrp_master_agent_handover() {
    if !require_root("vrrp_master_agent_handover") {
        return;
    }
    master_agent_restart("vrrp_master_agent_handover", "zdvrrpquit", Exit::Quit);
}

/// `advert_int` of the restart scenarios, in seconds. The restart must fit in dir2's
/// Master_Down_Interval (3 adverts + skew) less the time since dir1's last advert (up to one) and
/// the resumed master's quiet time (one advert + skew): 1.2 adverts.
const RESTART_ADVERT: &str = "5";

/// dir2's Master_Down_Interval at priority 100 (VRRPv3: 3 adverts + (256 - 100)/256 of one).
fn dir2_master_down() -> Duration {
    let advert = Duration::from_secs(RESTART_ADVERT.parse().expect("whole seconds"));
    advert * 3 + advert * 156 / 256
}

fn master_agent_restart(scenario: &str, label: &str, exit: Exit) {
    let all = [(0, 1), (1, 1), (2, 1)];
    let mut dr = DrTopology::build(label, 3, VIP, testpeer()).expect("topology");
    let dir2 = dr.topo.add_host("dir2", &["192.0.2.3/24"]).expect("second director");
    let dir = lb_tests::scratch_dir(&format!("{}-cfg-", dr.topo.prefix())).expect("temp dir");
    let (c1, c2) = (dir.path().join("dir1.toml"), dir.path().join("dir2.toml"));
    let vrrp = |p| Extras {
        vrrp_priority: Some(p),
        advert_int: Some(RESTART_ADVERT),
        ..Default::default()
    };
    std::fs::write(&c1, config(&all, vrrp(150))).expect("config");
    std::fs::write(&c2, config(&all, vrrp(100))).expect("config");
    let bpf = lb_tests::BpfFs::mount(dir.path().join("bpf")).expect("bpffs");
    let pin = bpf.dir.join("lb").to_string_lossy().into_owned();
    let state = dir.path().join("dir1-dataplane.json").to_string_lossy().into_owned();
    let args = ["--xdp-mode", "generic", "--pin-dir", &pin, "--state-file", &state];
    let a1 = LbAgent::start(&dr.director.ns, &lb_bin(), &c1, &args).expect("dir1");
    let a2 = LbAgent::start(&dir2.ns, &lb_bin(), &c2, &["--xdp-mode", "generic"]).expect("dir2");
    // dir1's first election takes its own Master_Down_Interval (17 s) after a loaded start.
    let settled = wait_until(dir2_master_down() + Duration::from_secs(20), || {
        a1.vrrp_state("VI_1").as_deref() == Some("MASTER")
            && a2.vrrp_state("VI_1").as_deref() == Some("BACKUP")
    });
    assert!(
        settled,
        "dir1 MASTER, dir2 BACKUP: {:?} / {:?}",
        a1.vrrp_state("VI_1"),
        a2.vrrp_state("VI_1")
    );
    a1.wait_all_backends("up", Duration::from_secs(10)).expect("reals up on dir1");
    let dir2_masters = became_master(&a2).expect("dir2's VRRP counters");
    let ll = open_connections(&dr);

    let mut restarted: Option<LbAgent> = None;
    let mut gap = Duration::ZERO;
    // (samples, without XDP, without the VIP) of dir1 from the kill to the end.
    let mut samples = (0u32, 0u32, 0u32);
    let (outcome, stalls) = with_stall_meter(&ll, || -> Result<(), String> {
        let done = AtomicBool::new(false);
        let dir1 = &dr.director;
        std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                let mut n = (0, 0, 0);
                while !done.load(Ordering::SeqCst) {
                    let (xdp, vip) = (dir1.xdp_attached(), dir1.has_addr(VIP.into()));
                    n = (n.0 + 1, n.1 + u32::from(!xdp), n.2 + u32::from(!vip));
                    std::thread::sleep(Duration::from_millis(50));
                }
                n
            });
            let result = (|| {
                let _raise = Raise(&done);
                match exit {
                    Exit::Kill => a1.kill().map_err(|e| format!("SIGKILL dir1's agent: {e:#}"))?,
                    Exit::Quit => {
                        a1.quit().map_err(|e| format!("SIGQUIT dir1's agent: {e:#}"))?;
                    }
                }
                let killed = Instant::now();
                let again = LbAgent::start(&dr.director.ns, &lb_bin(), &c1, &args)
                    .map_err(|e| format!("restarting dir1's agent: {e:#}"))?;
                gap = killed.elapsed();
                restarted = Some(again);
                // Past the resumed master's quiet time and dir2's Master_Down_Interval, and
                // AFTER more round trips for every connection.
                let at = ll.snapshot();
                ll.wait_progress(&at, AFTER, Duration::from_secs(15))
                    .map_err(|e| format!("{e:#}"))?;
                // dir2's timer ran from dir1's last advert before the signal: past this, a
                // silent dir1 would have lost the mastership.
                let past = dir2_master_down() + Duration::from_secs(1);
                std::thread::sleep(past.saturating_sub(killed.elapsed()));
                Ok(())
            })();
            samples = watcher.join().expect("dir1 watcher");
            result
        })
    });
    let report = ll.stop();
    let line = print_result(scenario, &report, &stalls);
    let a1 = restarted
        .unwrap_or_else(|| panic!("{}\n{line}", outcome.clone().err().unwrap_or_default()));
    let dir2_now = became_master(&a2);
    let summary = format!(
        "{exit:?}: dir1's agent back {} ms after the signal; dir1 {:?}, dir2 {:?} (became MASTER {} times \
         before, {dir2_now:?} now); {} samples of dir1: {} without XDP, {} without the VIP",
        gap.as_millis(),
        a1.vrrp_state("VI_1"),
        a2.vrrp_state("VI_1"),
        dir2_masters,
        samples.0,
        samples.1,
        samples.2
    );
    eprintln!("  {summary}");
    outcome.unwrap_or_else(|e| panic!("{e}\n{line}\n{summary}"));
    assert!(report.is_clean(), "the restart disturbed connections: {line}\n{summary}\n{report}");
    assert_eq!(report.alive(), CONNECTIONS, "{report}");
    assert!(samples.0 > 0 && samples.1 == 0 && samples.2 == 0, "dir1 let go: {summary}");
    assert_eq!(dir2_now, Some(dir2_masters), "dir2 took over: {summary}");
    assert_eq!(a1.vrrp_state("VI_1").as_deref(), Some("MASTER"), "{summary}");
    let log = a1.stderr();
    assert!(log.contains("adopted the pinned dataplane"), "{log}");
    assert!(log.contains("resuming VRRP mastership"), "{log}");
    assert!(!log.contains("removed stale VIP"), "{log}");
    a1.stop().expect("clean stop of dir1");
    a2.stop().expect("clean stop of dir2");
}
