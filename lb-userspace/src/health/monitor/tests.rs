//! The monitor against real local servers and scripts, with a 100 ms `delay_loop`. Timings are
//! asserted with generous slack: the machine may be busy running other tests.

use std::{
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use tokio::net::TcpListener;

use super::*;
use crate::config::{
    Protocol,
    health::{CheckKind, HttpCheck, MiscCheck, UrlCheck},
};
use crate::health::check::{http::tests::serve, testing};

const DELAY: Duration = Duration::from_millis(100);
const SLACK: Duration = Duration::from_millis(900);
const LONG: Duration = Duration::from_secs(10);

fn key(port: u16) -> VirtualServerKey {
    VirtualServerKey::addr("192.0.2.100".parse().unwrap(), port, Protocol::Tcp)
}

fn service() -> ServiceHealth {
    ServiceHealth { delay_loop: DELAY, ..ServiceHealth::default() }
}

fn real(vs: VirtualServerKey, addr: SocketAddr, checks: Vec<HealthCheck>) -> MonitoredReal {
    MonitoredReal {
        id: (vs, addr.ip(), addr.port()),
        weight: 1,
        checks: RealChecks { checks, ..RealChecks::default() },
        service: service(),
        probe: None,
    }
}

fn misc(path: String, dynamic: bool) -> HealthCheck {
    testing::check(CheckKind::Misc(MiscCheck { path, timeout: Duration::from_secs(2), dynamic }))
}

/// A scratch directory for scripts' files: its path, and the guard that removes it on drop.
struct Scratch {
    path: PathBuf,
    _guard: tempfile::TempDir,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let guard = crate::testutil::scratch_dir(&format!("lb-monitor-{name}-"));
        Scratch { path: guard.path().to_owned(), _guard: guard }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Replaces file `name` at once, so that a script reading it never sees it half-written.
    fn write(&self, name: &str, text: &str) {
        let tmp = self.path(&format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.path(name)).unwrap();
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// A MISC_CHECK exiting with the code stored in file `name`.
    fn exit_with(&self, name: &str, code: u8) -> HealthCheck {
        self.write(name, &code.to_string());
        misc(format!("exit $(cat {})", self.path(name).display()), true)
    }

    /// A script appending `word` to file `name`.
    fn append(&self, name: &str, word: &str) -> String {
        format!("echo {word} >> {}", self.path(name).display())
    }
}

/// Waits until `pred` holds for the published snapshot; returns how long that took.
async fn wait_for(
    rx: &mut watch::Receiver<HealthSnapshot>,
    what: &str,
    pred: impl Fn(&HealthSnapshot) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        if pred(&rx.borrow_and_update()) {
            return started.elapsed();
        }
        let left = LONG.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!("timed out waiting for {what}; last snapshot: {:?}", rx.borrow()),
        }
    }
}

/// Waits until file contents satisfy `pred` (scripts run on their own tasks).
async fn wait_file(scratch: &Scratch, name: &str, want: &str) {
    let started = Instant::now();
    while scratch.read(name) != want {
        assert!(started.elapsed() < LONG, "{name}: {:?}, want {want:?}", scratch.read(name));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_up(s: &HealthSnapshot, id: &RealId) -> Option<bool> {
    s.real(id).map(|h| h.up)
}

/// Accepts and drops connections until aborted.
async fn listen(addr: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_follows_its_listener() {
    let (addr, server) = listen("127.0.0.1:0").await;
    let r = real(key(80), addr, vec![testing::check(CheckKind::Tcp)]);
    let id = r.id;
    let monitor = HealthMonitor::start(vec![r], DEFAULT_CONCURRENCY).unwrap();
    let mut rx = monitor.subscribe();
    assert_eq!(
        monitor.snapshot().real(&id).map(|h| (h.up, h.message.clone())),
        Some((true, "TCP_CHECK: not checked yet".to_owned())),
        "without alpha a real starts up"
    );
    wait_for(&mut rx, "first check", |s| {
        s.real(&id).is_some_and(|h| h.message == "TCP_CHECK: connected")
    })
    .await;
    assert!(monitor.snapshot().real(&id).and_then(|h| h.latency).is_some());

    server.abort();
    let _ = server.await;
    let took = wait_for(&mut rx, "down", |s| is_up(s, &id) == Some(false)).await;
    assert!(took < DELAY + SLACK, "down after {took:?}");
    let message = monitor.snapshot().real(&id).unwrap().message.clone();
    assert!(message.starts_with("TCP_CHECK: connect to 127.0.0.1:"), "{message}");
    assert!(message.contains("refused"), "{message}");
    assert!(monitor.snapshot().quorum_lost.contains(&key(80)), "weight 0 < quorum 1");

    let (_again, server) = listen(&addr.to_string()).await;
    let took = wait_for(&mut rx, "up again", |s| is_up(s, &id) == Some(true)).await;
    assert!(took < DELAY + SLACK, "up after {took:?}");
    assert!(!monitor.snapshot().quorum_lost.contains(&key(80)));
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_real_does_not_delay_another() {
    let hung = serve("127.0.0.1", None, false).await;
    let mut http = testing::check(CheckKind::Http(HttpCheck {
        urls: vec![UrlCheck { path: "/".into(), status_code: None, digest: None }],
        virtualhost: None,
        sni: None,
    }));
    http.connect_timeout = Duration::from_millis(1500);
    let (addr, server) = listen("127.0.0.1:0").await;
    let slow = real(key(80), hung.addr, vec![http]);
    let fast = real(key(80), addr, vec![testing::check(CheckKind::Tcp)]);
    let (slow_id, fast_id) = (slow.id, fast.id);
    let started = Instant::now();
    let monitor = HealthMonitor::start(vec![slow, fast], DEFAULT_CONCURRENCY).unwrap();
    let mut rx = monitor.subscribe();
    wait_for(&mut rx, "fast checked", |s| {
        s.real(&fast_id).is_some_and(|h| h.message == "TCP_CHECK: connected")
    })
    .await;

    server.abort();
    let _ = server.await;
    let took = wait_for(&mut rx, "fast down", |s| is_up(s, &fast_id) == Some(false)).await;
    assert!(took < DELAY + SLACK, "down after {took:?}");
    let slow_state = monitor.snapshot().real(&slow_id).cloned().unwrap();
    if started.elapsed() < Duration::from_millis(1400) {
        assert_eq!(slow_state.message, "HTTP_GET: not checked yet", "the hung attempt still runs");
    }

    wait_for(&mut rx, "slow down", |s| is_up(s, &slow_id) == Some(false)).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500) + SLACK, "{elapsed:?}");
    assert_eq!(
        monitor.snapshot().real(&slow_id).unwrap().message,
        "HTTP_GET: GET /: timed out after 1.5s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_weights_quorum_and_scripts() {
    let scratch = Scratch::new("quorum");
    let vs = key(443);
    let svc = ServiceHealth {
        delay_loop: DELAY,
        quorum: 3,
        quorum_up: Some(scratch.append("quorum", "up")),
        quorum_down: Some(scratch.append("quorum", "down")),
        ..ServiceHealth::default()
    };
    let mut r1 = real(vs, "127.0.0.1:443".parse().unwrap(), vec![scratch.exit_with("r1", 5)]);
    let mut r2 = real(vs, "127.0.0.2:443".parse().unwrap(), vec![scratch.exit_with("r2", 0)]);
    r2.checks.notify_up = Some(scratch.append("r2.notify", "up"));
    r2.checks.notify_down = Some(scratch.append("r2.notify", "down"));
    r1.service = svc.clone();
    r2.service = svc;
    // Configured as its script will set it: the quorum holds from the start.
    r1.weight = 3;
    let (id1, id2) = (r1.id, r2.id);
    let monitor = HealthMonitor::start(vec![r1, r2], DEFAULT_CONCURRENCY).unwrap();
    let mut rx = monitor.subscribe();

    // r1 exits 5: up with weight 3; with r2 (weight 1) the sum is 4 ≥ 3.
    wait_for(&mut rx, "weight 3", |s| s.real(&id1).is_some_and(|h| h.weight == Some(3))).await;
    assert_eq!(
        monitor.snapshot().real(&id1).unwrap().message,
        "MISC_CHECK: script exited 5: weight 3"
    );
    assert!(monitor.snapshot().quorum_lost.is_empty());

    // r1 down: sum 1 < 3.
    scratch.write("r1", "1");
    wait_for(&mut rx, "quorum lost", |s| s.quorum_lost.contains(&vs)).await;
    assert_eq!(is_up(&monitor.snapshot(), &id1), Some(false));
    wait_file(&scratch, "quorum", "down\n").await;

    // Up with weight 0 (exit 2): still 1.
    scratch.write("r1", "2");
    wait_for(&mut rx, "weight 0", |s| s.real(&id1).is_some_and(|h| h.up && h.weight == Some(0)))
        .await;
    assert!(monitor.snapshot().quorum_lost.contains(&vs));
    // Exit 0 leaves the weight; exit 4 sets 2: sum 3 regains the quorum.
    scratch.write("r1", "4");
    wait_for(&mut rx, "quorum back", |s| !s.quorum_lost.contains(&vs)).await;
    assert_eq!(monitor.snapshot().real(&id1).unwrap().weight, Some(2));
    wait_file(&scratch, "quorum", "down\nup\n").await;

    // r2's notify_down runs on its transition (notify_up did not: it never went up, it was up).
    scratch.write("r2", "1");
    wait_for(&mut rx, "r2 down", |s| is_up(s, &id2) == Some(false)).await;
    wait_file(&scratch, "r2.notify", "down\n").await;
    assert!(monitor.snapshot().quorum_lost.contains(&vs), "2 < 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_before_down() {
    let scratch = Scratch::new("retry");
    let mut check = scratch.exit_with("r", 0);
    check.retry = 2;
    check.delay_before_retry = Duration::from_millis(300);
    let r = real(key(80), "127.0.0.1:80".parse().unwrap(), vec![check]);
    let id = r.id;
    let monitor = HealthMonitor::start(vec![r], DEFAULT_CONCURRENCY).unwrap();
    let mut rx = monitor.subscribe();
    let message = |text: &'static str| {
        move |s: &HealthSnapshot| s.real(&id).is_some_and(|h| h.message == text)
    };
    wait_for(&mut rx, "checked", message("MISC_CHECK: script exited 0")).await;

    scratch.write("r", "1");
    wait_for(&mut rx, "first retry", message("MISC_CHECK: script exited 1 (retry 1 of 2)")).await;
    assert_eq!(is_up(&monitor.snapshot(), &id), Some(true), "retrying: still up");
    let started = Instant::now();
    wait_for(&mut rx, "second retry", message("MISC_CHECK: script exited 1 (retry 2 of 2)")).await;
    assert_eq!(is_up(&monitor.snapshot(), &id), Some(true));
    wait_for(&mut rx, "down", |s| is_up(s, &id) == Some(false)).await;
    let took = started.elapsed();
    // Two more attempts, each 300 ms after the previous one.
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(600) + SLACK,
        "{took:?}"
    );
    assert_eq!(monitor.snapshot().real(&id).unwrap().message, "MISC_CHECK: script exited 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reals_without_checks_count_and_are_absent() {
    let vs = key(8080);
    let mut plain = real(vs, "127.0.0.1:8080".parse().unwrap(), vec![]);
    plain.weight = 2;
    plain.service.quorum = 2;
    let monitor = HealthMonitor::start(vec![plain], 4).unwrap();
    let snapshot = monitor.snapshot();
    assert!(snapshot.reals.is_empty());
    assert!(snapshot.quorum_lost.is_empty());

    // Drained to weight 0 by a reload: the quorum is lost.
    let mut drained = real(vs, "127.0.0.1:8080".parse().unwrap(), vec![]);
    drained.weight = 0;
    drained.service.quorum = 2;
    monitor.update(vec![drained]);
    assert!(monitor.snapshot().quorum_lost.contains(&vs));
}

/// A reload weighs each service's quorum by its own reals only (the sums are taken in one pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_weighs_each_services_quorum_by_its_own_reals() {
    let (a, b) = (key(80), key(81));
    let plain = |vs, addr: &str, weight| {
        let mut r = real(vs, addr.parse().unwrap(), vec![]);
        r.weight = weight;
        r.service.quorum = 2;
        r
    };
    // (case, weights of a's two reals, weight of b's one real, quorum lost after the reload)
    let cases: &[(&str, [u32; 2], u32, &[VirtualServerKey])] = &[
        ("both hold", [1, 1], 2, &[]),
        ("only b short", [1, 1], 1, &[b]),
        ("only a short", [1, 0], 5, &[a]),
        ("both short", [0, 1], 0, &[a, b]),
    ];
    for &(case, [a1, a2], b1, lost) in cases {
        let monitor = HealthMonitor::start(Vec::new(), 4).unwrap();
        monitor.update(vec![
            plain(a, "127.0.0.1:80", a1),
            plain(a, "127.0.0.2:80", a2),
            plain(b, "127.0.0.3:81", b1),
        ]);
        let got = monitor.snapshot().quorum_lost;
        let want: HashSet<VirtualServerKey> = lost.iter().copied().collect();
        assert_eq!(got, want, "{case}");
    }
}

/// Updates beside a reload's reply apply in order (each waits for the one before, and so does
/// `update`): the monitor ends with the last reals given, their quorum evaluated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_beside_apply_in_order() {
    let vs = key(80);
    let reals = |n: u8| -> Vec<MonitoredReal> {
        let at = |i| format!("127.0.0.{i}:80").parse().unwrap();
        let with_quorum = |mut r: MonitoredReal| {
            r.service.quorum = 2;
            r
        };
        (1..=n).map(|i| with_quorum(real(vs, at(i), vec![]))).collect()
    };
    let ids = |n| reals(n).iter().map(|r| r.id).collect::<Vec<_>>();
    let monitor = HealthMonitor::start(Vec::new(), 4).unwrap();
    // (reals given beside, one after the other; then by `update`, if any) -> the last
    let cases: &[(&[u8], Option<u8>)] =
        &[(&[200, 1, 50, 0, 5], None), (&[100, 2], Some(1)), (&[1, 150], None)];
    for &(beside, then) in cases {
        for &n in beside {
            monitor.update_beside(reals(n));
        }
        if let Some(n) = then {
            monitor.update(reals(n));
        }
        monitor.settle();
        let last = then.or(beside.last().copied()).unwrap_or_default();
        let mut want = ids(last);
        want.sort_unstable();
        assert_eq!(monitor.real_ids(), want, "{beside:?} then {then:?}");
        let lost = monitor.snapshot().quorum_lost.contains(&vs);
        assert_eq!(lost, last < 2, "{beside:?} then {then:?}");
    }
    // An update beside has finished when the next one is handed over: the monitor holds the
    // first one's reals or the second's, never those from before.
    monitor.update(reals(3));
    monitor.update_beside(reals(200));
    monitor.update_beside(reals(150));
    let got = monitor.real_ids();
    let (first, second) = (ids(200), ids(150));
    let sorted = |mut v: Vec<RealId>| {
        v.sort_unstable();
        v
    };
    assert!(got == sorted(first) || got == sorted(second), "{} reals", got.len());
    monitor.settle();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_zero_without_connect_port_fails_clearly() {
    let r = real(key(0), "127.0.0.1:0".parse().unwrap(), vec![testing::check(CheckKind::Tcp)]);
    let id = r.id;
    let monitor = HealthMonitor::start(vec![r], 4).unwrap();
    let mut rx = monitor.subscribe();
    wait_for(&mut rx, "down", |s| is_up(s, &id) == Some(false)).await;
    let message = monitor.snapshot().real(&id).unwrap().message.clone();
    assert!(message.contains("has no connect_port"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_unchanged_reals() {
    let scratch = Scratch::new("reload");
    let vs = key(80);
    let alpha = ServiceHealth { delay_loop: DELAY, alpha: true, ..ServiceHealth::default() };
    let mut a = real(vs, "127.0.0.1:80".parse().unwrap(), vec![scratch.exit_with("a", 0)]);
    let mut b = real(vs, "127.0.0.2:80".parse().unwrap(), vec![scratch.exit_with("b", 0)]);
    a.service = alpha.clone();
    b.service = alpha.clone();
    let (id_a, id_b) = (a.id, b.id);
    let monitor = HealthMonitor::start(vec![a.clone(), b], DEFAULT_CONCURRENCY).unwrap();
    let mut rx = monitor.subscribe();
    assert_eq!(is_up(&monitor.snapshot(), &id_a), Some(false), "alpha starts down");
    assert!(monitor.snapshot().quorum_lost.contains(&vs));
    wait_for(&mut rx, "both up", |s| {
        is_up(s, &id_a) == Some(true) && is_up(s, &id_b) == Some(true)
    })
    .await;

    // Same checks (at another place in the file), new weight; b removed; c added.
    let mut a2 = a.clone();
    a2.weight = 5;
    a2.checks.checks[0].location = crate::config::Location::new(40, 1);
    let mut c = real(vs, "127.0.0.3:80".parse().unwrap(), vec![scratch.exit_with("c", 1)]);
    c.service = alpha.clone();
    let id_c = c.id;
    monitor.update(vec![a2.clone(), c]);
    let s = monitor.snapshot();
    assert_eq!(is_up(&s, &id_a), Some(true), "a keeps its state");
    assert_eq!(s.real(&id_b), None, "b is gone");
    assert_eq!(
        s.real(&id_c).map(|h| (h.up, h.message.as_str())),
        Some((false, "MISC_CHECK: not checked yet"))
    );
    assert!(s.quorum_lost.is_empty(), "a alone weighs 5");

    // Changed checks restart from the initial state (alpha: down).
    let mut a3 = a2.clone();
    a3.checks.checks[0].connect_timeout = Duration::from_secs(3);
    monitor.update(vec![a3]);
    assert_eq!(is_up(&monitor.snapshot(), &id_a), Some(false));
    wait_for(&mut rx, "a up again", |s| is_up(s, &id_a) == Some(true)).await;
    assert_eq!(monitor.snapshot().reals.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_runs_quorum_down_under_omega() {
    let scratch = Scratch::new("omega");
    let vs = key(25);
    let mut r = real(vs, "127.0.0.1:25".parse().unwrap(), vec![scratch.exit_with("r", 0)]);
    r.service.omega = true;
    r.service.quorum_down = Some(scratch.append("quorum", "down"));
    let id = r.id;
    let monitor = HealthMonitor::start(vec![r], DEFAULT_CONCURRENCY).unwrap();
    let mut rx = monitor.subscribe();
    wait_for(&mut rx, "checked", |s| {
        s.real(&id).is_some_and(|h| h.message == "MISC_CHECK: script exited 0")
    })
    .await;
    monitor.stop().await;
    assert_eq!(scratch.read("quorum"), "down\n");
    monitor.stop().await;
    assert_eq!(scratch.read("quorum"), "down\n", "once");

    // Nothing runs any more: a failing script is not noticed.
    scratch.write("r", "1");
    tokio::time::sleep(DELAY * 4).await;
    assert_eq!(is_up(&monitor.snapshot(), &id), Some(true));
}

#[test]
fn start_needs_a_runtime() {
    assert_eq!(HealthMonitor::start(vec![], 1).err(), Some(MonitorError::NoRuntime));
}

#[test]
fn same_checks_ignores_locations_only() {
    let a = real(key(80), "127.0.0.1:80".parse().unwrap(), vec![testing::check(CheckKind::Tcp)]);
    let mut b = a.clone();
    b.checks.checks[0].location = crate::config::Location::new(9, 9);
    b.weight = 7;
    b.checks.notify_up = Some("true".into());
    assert!(a.same_checks(&b));
    let mut c = a.clone();
    c.checks.checks[0].retry = 3;
    assert!(!a.same_checks(&c));
    let mut d = a.clone();
    d.service.delay_loop = Duration::from_secs(1);
    assert!(!a.same_checks(&d));
    let mut e = a.clone();
    e.id.1 = IpAddr::from([127, 0, 0, 2]);
    assert!(!a.same_checks(&e));
}

#[test]
fn monitored_reals_of_a_config() {
    let text = r#"
[[virtual_server]]
vip = "192.0.2.100"
port = 80
protocol = "tcp"
interface = "lo"
delay_loop = 2
quorum = 2

[[virtual_server.real_server]]
address = "192.0.2.11"
port = 80
weight = 3
[virtual_server.real_server.tcp_check]
connect_timeout = 1

[[virtual_server.real_server]]
address = "192.0.2.12"
port = 80

[virtual_server.sorry_server]
address = "192.0.2.50"
port = 80
"#;
    let config = crate::config::parse_toml(
        text,
        std::path::Path::new("test.toml"),
        &crate::config::SystemHost,
    )
    .unwrap();
    let reals = monitored_reals(&config);
    let summary: Vec<_> = reals
        .iter()
        .map(|r| (r.id, r.weight, r.checks.checks.len(), r.service.delay_loop, r.service.quorum))
        .collect();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let two = Duration::from_secs(2);
    assert_eq!(
        summary,
        vec![
            ((key(80), ip("192.0.2.11"), 80), 3, 1, two, 2),
            ((key(80), ip("192.0.2.12"), 80), 1, 0, two, 2),
        ],
        "sorry servers are not checked"
    );
}
