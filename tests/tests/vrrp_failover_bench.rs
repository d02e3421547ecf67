//! Failover benchmark (`cargo xtask bench`; ignored by `cargo test`): the time from SIGKILL of the
//! VRRP master to the first client request answered through the VIP by the new master, for a
//! pair of `lb run` agents and, in the same topology, a pair of keepalived 2.2.7 nodes.
//!
//! Topology: [`DrTopology`] (client 192.0.2.1, `dir1` 192.0.2.2, reals `rs1..3` serving HTTP on
//! the VIP) plus `dir2` 192.0.2.3. Master priority 150 on dir1, backup 100 on dir2, multicast.
//!
//! - **lb pair**: `lb run` (XDP generic) on both directors. A request counts when a real answers
//!   it (body `rsN`): it went through the new master's XDP program (checked after each round:
//!   the killed master has no XDP attached any more, so it cannot be the one forwarding).
//!   Twice: with `[dataplane] backup_xdp = "detach"` (the default: the backup attaches its
//!   program on becoming MASTER; rows `vrrp_failover_lb_*`) and `"standby"` (the program stays
//!   attached on the backup and becoming MASTER is map writes; rows `vrrp_failover_lb_standby_*`).
//! - **keepalived pair**: keepalived (`-P`, VRRP only) on both directors. keepalived forwards
//!   nothing, so dir2 runs a small HTTP responder (`lb-testpeer --name dir2 --http 0.0.0.0:80`)
//!   that answers once dir2 holds the VIP and the client's ARP entry points at it. A request
//!   counts when the body is `dir2`. dir1 runs no responder: like the dead lb master, it answers
//!   the VIP's port 80 with a reset.
//!
//! Both count the same steps: kill → the backup's Master_Down timer → MASTER → VIP added and
//! gratuitous ARPs (lb also puts the services live in the XDP maps) → the client's next attempt
//! reaches it. The client (in its namespace) tries every 2 ms: TCP connect (100 ms limit), a
//! GET, the whole answer (200 ms limit). The clock starts right before `kill(2)` and stops when
//! an answer is read. After each round the killed master is restarted and preempts back.
//!
//! Where in its advert interval the master dies decides up to one interval of the result (the
//! backup counts Master_Down_Interval from the last advert it heard). So round `i` of `n` kills
//! `(i + 0.5) / n` of an interval after a point reached the same way in both pairs, which
//! spreads the kills evenly over the interval, and a second number is reported without that
//! part: from the dead master's last advert (seen by a packet socket in the client's namespace)
//! to the answer. That one is Master_Down_Interval plus the time to serve.
//!
//! Environment: `LB_BIN` (the release `lb`), `LB_BENCH_ROUNDS` (default 5), `LB_BENCH_JSON`
//! (rows `{"name","value","unit",...}` are appended to the JSON list in that file, which is
//! created if missing).

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use lb_tests::keepalived::{Keepalived, KeepalivedConfig, require_keepalived};
use lb_tests::{
    DrTopology, Host, LbAgent, Netns, Process, lb_bin, require_root, spawn_testpeer, wait_until,
};
use serde_json::{Value, json};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// dir1, the master of every round.
const MASTER_IP: Ipv4Addr = DrTopology::DIRECTOR_IP;
const MASTER_PRIO: u8 = 150;
const BACKUP_PRIO: u8 = 100;

fn log(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

/// One advert setting both pairs are measured at.
#[derive(Clone, Copy, Debug)]
struct Setting {
    tag: &'static str,
    version: u8,
    advert: &'static str,
}

const SETTINGS: [Setting; 2] = [
    Setting { tag: "v2_1s", version: 2, advert: "1" },
    Setting { tag: "v3_30ms", version: 3, advert: "0.03" },
];

impl Setting {
    fn advert(&self) -> Duration {
        Duration::from_secs_f64(self.advert.parse().expect("advert"))
    }

    /// The backup's Master_Down_Interval: 3 adverts + Skew_Time (RFC 5798; v2 alike).
    fn master_down(&self) -> Duration {
        self.advert() * 3 + self.advert() * u32::from(256 - u16::from(BACKUP_PRIO)) / 256
    }
}

/// Who may answer a counted request.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// Any real (`rs1`, `rs2`, ...).
    Reals,
    /// The responder on dir2.
    Dir2,
}

impl Want {
    fn accepts(self, body: &str) -> bool {
        match self {
            Want::Reals => body.starts_with("rs"),
            Want::Dir2 => body.trim() == "dir2",
        }
    }
}

/// Polls the VIP from `client` until an answer's body is `want`'s; the instant it was read.
fn first_answer(client: &Netns, want: Want, timeout: Duration) -> Option<Instant> {
    let target = SocketAddr::from((VIP, 80));
    client
        .run_in(move || {
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if one_request(target).is_some_and(|body| want.accepts(&body)) {
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        })
        .expect("client namespace")
}

/// One `GET /` over a fresh connection; the body, if a whole answer came back.
fn one_request(target: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&target, Duration::from_millis(100)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).ok()?;
    let text = String::from_utf8_lossy(&answer);
    let (_, body) = text.split_once("\r\n\r\n")?;
    Some(body.to_string())
}

/// VRRP adverts (IP protocol 112) seen in a namespace: source and arrival time, from a thread
/// with an `AF_PACKET` socket there.
struct Adverts {
    seen: Arc<Mutex<Vec<(Instant, Ipv4Addr)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Adverts {
    fn watch(ns: &Netns) -> Adverts {
        let file = std::fs::File::open(format!("/run/netns/{}", ns.name())).expect("netns");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on a namespace fd; affects this thread only.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let proto = (libc::ETH_P_IP as u16).to_be();
            // SAFETY: plain socket(2), checked below.
            let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto)) };
            assert!(raw >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            // SAFETY: a fresh descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let tv = libc::timeval { tv_sec: 0, tv_usec: 50_000 };
            // SAFETY: a timeval option with its size.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    size_of::<libc::timeval>() as libc::socklen_t,
                );
            }
            tx.send(()).expect("ready");
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::SeqCst) {
                // SAFETY: the buffer is valid for its length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                let at = Instant::now();
                if n >= 20 && buf[0] >> 4 == 4 && buf[9] == 112 {
                    let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
                    seen2.lock().expect("lock").push((at, src));
                }
            }
        });
        rx.recv().expect("advert watch");
        Adverts { seen, stop, thread: Some(thread) }
    }

    /// The last advert from `src` seen at or before `t`.
    fn last_before(&self, src: Ipv4Addr, t: Instant) -> Option<Instant> {
        let seen = self.seen.lock().expect("lock");
        seen.iter().filter(|(at, s)| *s == src && *at <= t).map(|(at, _)| *at).max()
    }
}

impl Drop for Adverts {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One round's result, in ms.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// kill → answer.
    from_kill: f64,
    /// The dead master's last advert → answer.
    from_last_advert: f64,
}

/// Kills with `kill` at round `round`'s phase of the advert interval, then waits for an answer
/// that `want` accepts.
fn measure(
    lab: &Lab,
    s: Setting,
    round: usize,
    rounds: usize,
    watch: &Adverts,
    want: Want,
    kill: impl FnOnce(),
) -> Sample {
    std::thread::sleep(s.advert().mul_f64((round as f64 + 0.5) / rounds as f64));
    let killed = Instant::now();
    kill();
    let timeout = s.master_down() * 4 + Duration::from_secs(10);
    let answered = first_answer(&lab.dr.client.ns, want, timeout).expect("no answer");
    let last = watch.last_before(MASTER_IP, killed).expect("no advert from the master seen");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Sample {
        from_kill: ms(answered.duration_since(killed)),
        from_last_advert: ms(answered.duration_since(last)),
    }
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n % 2 == 1 { samples[n / 2] } else { (samples[n / 2 - 1] + samples[n / 2]) / 2.0 }
}

struct Lab {
    dr: DrTopology,
    dir2: Host,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(label: &str) -> Lab {
        let mut dr = DrTopology::build(label, 3, VIP, testpeer()).expect("topology");
        let dir2 = dr.topo.add_host("dir2", &["192.0.2.3/24"]).expect("dir2");
        let dir = lb_tests::scratch_dir(&format!("{}-bench-", dr.topo.prefix())).expect("temp dir");
        Lab { dr, dir2, dir }
    }

    fn lb_config(&self, s: Setting, priority: u8, mode: BackupXdp) -> PathBuf {
        let mut text = format!(
            "[dataplane]\nbackup_xdp = \"{}\"\n\n[[vrrp_instance]]\nname = \"VI_1\"\nstate = \"BACKUP\"\ninterface = \"eth0\"\n\
             virtual_router_id = 51\npriority = {priority}\nadvert_int = {}\nversion = {}\n\
             virtual_ipaddress = [\"{VIP}/32\"]\n\n[[virtual_server]]\nvip = \"{VIP}\"\n\
             port = 80\ninterface = \"eth0\"\n",
            mode.name(),
            s.advert,
            s.version
        );
        for i in 0..3 {
            let real = DrTopology::real_ip(i);
            text.push_str(&format!("[[virtual_server.real_server]]\naddress = \"{real}\"\n"));
        }
        let path = self.dir.path().join(format!("lb-{priority}.toml"));
        std::fs::write(&path, text).expect("config");
        path
    }

    fn start_lb(&self, host: &Host, s: Setting, priority: u8, mode: BackupXdp) -> LbAgent {
        let cfg = self.lb_config(s, priority, mode);
        LbAgent::start(&host.ns, &lb_bin(), &cfg, &["--xdp-mode", "generic"]).expect("lb run")
    }

    fn start_ka(&self, host: &Host, s: Setting, priority: u8) -> Keepalived {
        let mut cfg = KeepalivedConfig::new(51, priority, &format!("{VIP}/32"));
        cfg.version = s.version;
        cfg.advert_int = s.advert.into();
        Keepalived::start(&host.ns, self.dir.path(), &cfg).expect("keepalived")
    }
}

/// `[dataplane] backup_xdp` of both lb agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackupXdp {
    /// The default: the backup attaches its program on becoming MASTER.
    Detach,
    /// The program stays attached on the backup; MASTER is map writes only.
    Standby,
}

impl BackupXdp {
    fn name(self) -> &'static str {
        match self {
            BackupXdp::Detach => "detach",
            BackupXdp::Standby => "standby",
        }
    }
}

/// lb+lb: `rounds` kills of the master.
fn lb_pair(s: Setting, rounds: usize, mode: BackupXdp) -> Vec<Sample> {
    let lab = Lab::new(&format!("b{}{}", &mode.name()[..1], s.tag));
    let watch = Adverts::watch(&lab.dr.client.ns);
    let (d1, d2) = (lab.dr.director.clone(), lab.dir2.clone());
    let settle = s.master_down() * 4 + Duration::from_secs(10);
    let backup = lab.start_lb(&d2, s, BACKUP_PRIO, mode);
    let mut out = Vec::new();
    for round in 0..rounds {
        let master = lab.start_lb(&d1, s, MASTER_PRIO, mode);
        let ready = wait_until(settle, || {
            master.vrrp_state("VI_1").as_deref() == Some("MASTER")
                && backup.vrrp_state("VI_1").as_deref() == Some("BACKUP")
                && d1.has_addr(VIP.into())
                && !d2.has_addr(VIP.into())
        });
        assert!(ready, "round {round}: dir1 MASTER, dir2 BACKUP\n{}", master.stderr());
        master.wait_all_backends("up", Duration::from_secs(10)).expect("reals up");
        backup.wait_all_backends("up", Duration::from_secs(10)).expect("reals up");
        let before = first_answer(&lab.dr.client.ns, Want::Reals, Duration::from_secs(5));
        assert!(before.is_some(), "round {round}: the master does not forward");

        let kill = || master.kill().expect("SIGKILL");
        let sample = measure(&lab, s, round, rounds, &watch, Want::Reals, kill);
        assert!(!d1.xdp_attached(), "the killed master still has XDP: it may have answered");
        assert_eq!(backup.vrrp_state("VI_1").as_deref(), Some("MASTER"));
        log(&format!("lb pair ({}) {} round {round}: {sample:?}", mode.name(), s.tag));
        // The new master's own account of the steps (state change, dataplane, VIPs, GARPs).
        let steps = ["Entering MASTER", "dataplane up before", "VIPs added", "gratuitous ARPs"];
        let text = backup.stderr();
        for step in steps {
            if let Some(line) = text.lines().rev().find(|l| l.contains(step)) {
                log(&format!("  {line}"));
            }
        }
        out.push(sample);
    }
    out
}

/// keepalived+keepalived with a responder on dir2: `rounds` kills of the master.
fn keepalived_pair(s: Setting, rounds: usize) -> Vec<Sample> {
    let lab = Lab::new(&format!("bk{}", s.tag));
    let watch = Adverts::watch(&lab.dr.client.ns);
    let (d1, d2) = (lab.dr.director.clone(), lab.dir2.clone());
    let settle = s.master_down() * 4 + Duration::from_secs(10);
    let responder: Process =
        spawn_testpeer(&d2.ns, testpeer(), &["--name", "dir2", "--http", "0.0.0.0:80"])
            .expect("responder");
    let backup = lab.start_ka(&d2, s, BACKUP_PRIO);
    let mut out = Vec::new();
    for round in 0..rounds {
        let mut master = lab.start_ka(&d1, s, MASTER_PRIO);
        let m = master.wait_state("MASTER", master.started, settle).expect("dir1 MASTER");
        backup.wait_state("BACKUP", m, settle).ok();
        let ready = wait_until(settle, || {
            backup.state().as_deref() == Some("BACKUP")
                && d1.has_addr(VIP.into())
                && !d2.has_addr(VIP.into())
        });
        assert!(ready, "round {round}: dir1 MASTER, dir2 BACKUP: {:?}", backup.states());
        // The client resolves the VIP to dir1 first (refused there: no responder), as the
        // lb pair's client does with its request before the kill.
        let target = SocketAddr::from((VIP, 80));
        let refused = lab.dr.client.ns.run_in(move || one_request(target)).expect("client");
        assert_eq!(refused, None, "round {round}: something answers on dir1");

        let kill = || master.crash().expect("SIGKILL");
        let sample = measure(&lab, s, round, rounds, &watch, Want::Dir2, kill);
        log(&format!("keepalived pair {} round {round}: {sample:?}", s.tag));
        out.push(sample);
    }
    drop(responder);
    out
}

#[test]
#[ignore = "benchmark: run by cargo xtask bench"]
fn vrrp_failover_bench() {
    let name = "vrrp failover bench";
    if !require_root(name) || !require_keepalived(name) {
        return;
    }
    let rounds: usize =
        std::env::var("LB_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let mut rows = Vec::new();
    let mut table = String::from(
        "| row | median | min | max | from the last advert (median) | Master_Down_Interval |\n",
    );
    table.push_str("|---|---:|---:|---:|---:|---:|\n");
    // LB_BENCH_SETTINGS=v3_30ms (tags, comma-separated): only those settings, for quick runs.
    let only = std::env::var("LB_BENCH_SETTINGS").ok();
    let wanted = |tag: &str| only.as_deref().is_none_or(|o| o.split(',').any(|t| t == tag));
    for s in SETTINGS.into_iter().filter(|s| wanted(s.tag)) {
        // Side by side in one run: lb with the default (attach on MASTER), lb with the program
        // kept attached on BACKUP, and keepalived.
        let pairs = [
            ("lb", lb_pair(s, rounds, BackupXdp::Detach)),
            ("lb_standby", lb_pair(s, rounds, BackupXdp::Standby)),
            ("keepalived", keepalived_pair(s, rounds)),
        ];
        for (who, samples) in pairs {
            let round1 = |v: f64| (v * 10.0).round() / 10.0;
            let from_kill: Vec<f64> = samples.iter().map(|x| round1(x.from_kill)).collect();
            let from_advert: Vec<f64> =
                samples.iter().map(|x| round1(x.from_last_advert)).collect();
            let mut sorted = from_kill.clone();
            let value = median(&mut sorted);
            let advert_median = median(&mut from_advert.clone());
            let mdi = round1(s.master_down().as_secs_f64() * 1000.0);
            let row = format!("vrrp_failover_{who}_{}", s.tag);
            table.push_str(&format!(
                "| `{row}` | {value:.0} ms | {:.0} ms | {:.0} ms | {advert_median:.0} ms | \
                 {mdi:.0} ms |\n",
                sorted[0],
                sorted[sorted.len() - 1]
            ));
            let who_text = match who {
                "lb" => "lb (backup_xdp = \"detach\")",
                "lb_standby" => "lb (backup_xdp = \"standby\")",
                other => other,
            };
            let what = format!(
                "the {who_text} master (priority {MASTER_PRIO}, dir1) SIGKILLed -> first client request \
                 answered through the VIP by the new master ({BACKUP_PRIO}); VRRPv{} advert {} s; \
                 median of {rounds} rounds, kills spread evenly over the advert interval",
                s.version, s.advert
            );
            rows.push(json!({
                "name": row,
                "value": round1(value),
                "unit": "ms",
                "method": format!("kill -> answer: {what}"),
                "rounds": rounds,
                "samples": from_kill,
                "master_down_interval_ms": mdi,
            }));
            rows.push(json!({
                "name": format!("{row}_from_last_advert"),
                "value": round1(advert_median),
                "unit": "ms",
                "method": format!("the dead master's last advert (seen by the client) -> answer: {what}"),
                "rounds": rounds,
                "samples": from_advert,
                "master_down_interval_ms": mdi,
            }));
        }
    }
    log(&table);
    if let Some(path) = std::env::var_os("LB_BENCH_JSON") {
        let path = PathBuf::from(path);
        let mut list: Vec<Value> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        list.extend(rows);
        let text = serde_json::to_string_pretty(&list).expect("json");
        std::fs::write(&path, text + "\n").expect("writing the rows");
    }
}
