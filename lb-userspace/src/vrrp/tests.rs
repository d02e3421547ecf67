//! The engine against Debian's keepalived (2.2.7) in network namespaces: interoperation, failover
//! times, gratuitous ARPs / NAs, preemption and graceful hand-over, in VRRPv2 and v3, multicast
//! and unicast, IPv4 and IPv6.
//!
//! Topology, all in namespaces this test creates (unique names, deleted by a guard that also runs
//! on panic): a `switch` namespace with a bridge (a hub: ageing 0, no multicast snooping) and a
//! packet capture on it, keepalived's host `.11` and the director `.12`, each with one veth into
//! the bridge. The engine runs on a thread that joined the director's namespace (with its own
//! tokio runtime); keepalived runs there with `-P` (VRRP only) and a notify script that appends
//! its arguments to a file.
//!
//! Times are measured on the wire (capture timestamps): a crash failover is counted from the
//! dead master's last advert to our first one, which the RFC makes Master_Down_Interval; the
//! numbers to match are keepalived's own (docs: 3.62–3.67 s at 1 s v2, 0.33–0.35 s at 0.1 s v3).
//!
//! Root and keepalived are required: missing, the tests fail when `CI=true` and skip otherwise.

use std::{
    fs,
    io::Write as _,
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use lb_test_support::lab;
use tokio::sync::{oneshot, watch};

use super::{
    frame,
    machine::{self, State},
    packet::{self, Version},
    runner::{Hooks, StateChange, VrrpEngine},
    status::{InstanceStatus, VrrpStatus},
};
use crate::config::{
    Location,
    vrrp::{TrackInterface, TrackScript, VrrpConfig, VrrpScript, VrrpSyncGroup},
};

const KA_V4: &str = "192.0.2.11";
const LB_V4: &str = "192.0.2.12";
const VIP_V4: &str = "192.0.2.200";
const VIP_V6: &str = "2001:db8::200";

/// Root plus keepalived, or skip (fail in CI).
fn require(test: &str) -> bool {
    crate::testutil::require_root(test) && crate::testutil::require_program(test, "keepalived")
}

/// A line that stays visible without `--nocapture` (libtest captures the print macros).
fn report(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("spawn");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
}

fn ip_in(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip").args(["-n", ns]).args(args).output().expect("ip");
    assert!(out.status.success(), "ip -n {ns} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` every 5 ms until it gives a value or `timeout` passes.
fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn enter_netns(ns: &str) {
    lb_test_support::enter_netns(ns).unwrap_or_else(|e| panic!("setns {ns}: {e}"));
}

/// The namespaces and links of one test; deleted on drop (also during a panic). Named and built
/// with the labs' shared pieces (lb-test-support's `lab`): a namespace left by a killed test
/// process is removed by the next lab of any test binary.
struct Lab {
    prefix: String,
    /// Removed with its contents when the lab drops, after the namespaces.
    dir: tempfile::TempDir,
    namespaces: Vec<String>,
}

impl Lab {
    /// switch (bridge br0), ka (eth0 .11) and lb (eth0 .12), IPv6 without DAD.
    fn new() -> Lab {
        static ORPHANS: std::sync::Once = std::sync::Once::new();
        ORPHANS.call_once(|| {
            if let Err(e) = lab::remove_orphans() {
                report(&format!("removing leftover namespaces: {e}"));
            }
        });
        let prefix = lab::unique_prefix();
        let dir = crate::testutil::scratch_dir(&format!("{prefix}-"));
        let mut this = Lab { prefix, dir, namespaces: Vec::new() };
        let sw = this.ns("s");
        let mut switch = lab::batch_line(&lab::bridge("br0", Some(0)));
        // Promiscuous: the bridge device then also gets the unicast frames it floods (unicast
        // adverts), not only broadcast and multicast.
        switch += "link set br0 promisc on up\n";
        let mut hosts = Vec::new();
        for (role, v4, v6) in [("k", KA_V4, "2001:db8::11"), ("l", LB_V4, "2001:db8::12")] {
            let ns = this.ns(role);
            for conf in ["all", "default"] {
                let key = format!("net.ipv6.conf.{conf}.accept_dad=0");
                sh(&["ip", "netns", "exec", &ns, "sysctl", "-qw", &key]);
            }
            // (A bare "l" would be read as the `link` keyword.)
            let port = format!("port{role}");
            switch += &lab::batch_line(&lab::veth_into(&port, &ns, "eth0", None));
            switch += &lab::batch_line(&lab::attach(&port, "br0"));
            let mut host = lab::batch_line(&lab::addr_add("eth0", &format!("{v4}/24")));
            host += &lab::batch_line(&lab::addr_add("eth0", &format!("{v6}/64")));
            host += "link set eth0 up\n";
            hosts.push((ns, host));
        }
        lab::ip_batch(Some(&sw), &switch).unwrap_or_else(|e| panic!("{e}"));
        for (ns, host) in hosts {
            lab::ip_batch(Some(&ns), &host).unwrap_or_else(|e| panic!("{e}"));
        }
        this
    }

    fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn ns(&mut self, role: &str) -> String {
        let name = self.name(role);
        sh(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        ip_in(&name, &["link", "set", "lo", "up"]);
        name
    }

    fn has_addr(&self, role: &str, addr: &str) -> bool {
        let out = ip_in(&self.name(role), &["-o", "addr", "show", "dev", "eth0"]);
        out.split_whitespace().any(|w| w.split('/').next() == Some(addr))
    }

    fn mac(&self, role: &str) -> [u8; 6] {
        let out = ip_in(&self.name(role), &["-o", "link", "show", "dev", "eth0"]);
        let hex = out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).unwrap();
        let mut mac = [0u8; 6];
        for (m, h) in mac.iter_mut().zip(hex.split(':')) {
            *m = u8::from_str_radix(h, 16).unwrap();
        }
        mac
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// What the capture on the bridge decodes.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Advert {
        src: IpAddr,
        vrid: u8,
        priority: u8,
        version: Version,
    },
    /// A gratuitous ARP / unsolicited NA for `ip` from `mac`.
    Announce {
        mac: [u8; 6],
        ip: IpAddr,
    },
}

fn decode(f: &[u8]) -> Option<Seen> {
    if f.len() < 14 {
        return None;
    }
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&f[6..12]);
    if ethertype == 0x0806 && f.len() >= 42 && f[20..22] == [0, 1] && f[28..32] == f[38..42] {
        let ip = IpAddr::from([f[28], f[29], f[30], f[31]]);
        return Some(Seen::Announce { mac, ip });
    }
    if ethertype == 0x86dd && f.len() >= 78 && f[20] == 58 && f[54] == 136 {
        let mut t = [0u8; 16];
        t.copy_from_slice(&f[62..78]);
        return Some(Seen::Announce { mac, ip: IpAddr::from(t) });
    }
    let fr = frame::parse_ethernet_frame(f).ok()?;
    let rx = packet::parse(fr.vrrp, &fr.ip).ok()?;
    Some(Seen::Advert {
        src: fr.ip.src,
        vrid: rx.advert.vrid,
        priority: rx.advert.priority,
        version: rx.advert.version(),
    })
}

/// `SIOCGSTAMPNS` (asm-generic sockios): the kernel's receive time of the last packet read.
const SIOCGSTAMPNS: libc::c_ulong = 0x8907;

/// The kernel's receive timestamp of the frame just read, as an `Instant`: a capture thread that
/// is scheduled late must not shift the times measured between frames.
fn kernel_time(fd: &OwnedFd) -> Instant {
    let now = Instant::now();
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: SIOCGSTAMPNS writes one timespec.
    if unsafe { libc::ioctl(fd.as_raw_fd(), SIOCGSTAMPNS, &mut ts) } != 0 {
        return now;
    }
    let stamp = std::time::UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
    let age = std::time::SystemTime::now().duration_since(stamp).unwrap_or_default();
    now.checked_sub(age).unwrap_or(now)
}

/// Every frame the bridge device sees (a hub: all of them), with the kernel's receive time.
struct Capture {
    frames: Arc<Mutex<Vec<(Instant, Seen)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    fn start(lab: &Lab) -> Capture {
        let ns = lab.name("s");
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (fr, st) = (frames.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            enter_netns(&ns);
            let idx = crate::net::iface::index("br0").unwrap();
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2); checked.
            let raw = unsafe {
                libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto))
            };
            assert!(raw >= 0);
            // SAFETY: a fresh descriptor.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: plain old data.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = idx as i32;
            // SAFETY: valid sockaddr_ll of the size given.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0);
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
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 9000];
            while !st.load(Ordering::SeqCst) {
                // SAFETY: buffer valid for its length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n <= 0 {
                    continue;
                }
                let at = kernel_time(&fd);
                if let Some(seen) = decode(&buf[..n as usize]) {
                    fr.lock().unwrap().push((at, seen));
                }
            }
        });
        ready_rx.recv().unwrap();
        Capture { frames, stop, thread: Some(thread) }
    }

    fn all(&self) -> Vec<(Instant, Seen)> {
        self.frames.lock().unwrap().clone()
    }

    /// Adverts from `src` (any priority when `priority` is None).
    fn adverts(&self, src: IpAddr, priority: Option<u8>) -> Vec<Instant> {
        self.all()
            .into_iter()
            .filter_map(|(t, s)| match s {
                Seen::Advert { src: a, priority: p, .. }
                    if a == src && priority.is_none_or(|want| want == p) =>
                {
                    Some(t)
                }
                _ => None,
            })
            .collect()
    }

    /// Announcements of `ip` from `mac`.
    fn announces(&self, mac: [u8; 6], ip: IpAddr) -> Vec<Instant> {
        self.all()
            .into_iter()
            .filter_map(|(t, s)| (s == Seen::Announce { mac, ip }).then_some(t))
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// keepalived's side of a scenario.
#[derive(Clone)]
struct KaConf {
    version: u8,
    priority: u8,
    /// As written in the config ("1", "0.1").
    advert: &'static str,
    vip: &'static str,
    /// unicast_src_ip, unicast_peer.
    unicast: Option<(&'static str, &'static str)>,
}

/// One keepalived run in the `ka` namespace; SIGKILLed on drop.
struct Keepalived {
    child: Child,
    notify_file: PathBuf,
    log: PathBuf,
}

static KA_SEQ: AtomicU32 = AtomicU32::new(0);

impl Keepalived {
    fn start(lab: &Lab, c: &KaConf) -> Keepalived {
        let n = KA_SEQ.fetch_add(1, Ordering::SeqCst);
        let notify_file = lab.path("ka.notify");
        let script = lab.path("ka-notify.sh");
        fs::write(
            &script,
            format!("#!/bin/sh\necho \"$1 $2 $3 $4\" >> {}\n", notify_file.display()),
        )
        .unwrap();
        sh(&["chmod", "755", script.to_str().unwrap()]);
        let unicast = match c.unicast {
            Some((src, peer)) => {
                format!("  unicast_src_ip {src}\n  unicast_peer {{\n    {peer}\n  }}\n")
            }
            None => String::new(),
        };
        let conf = format!(
            "global_defs {{\n  router_id ka{n}\n  script_user root\n}}\n\
             vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  \
             priority {}\n  advert_int {}\n  version {}\n{unicast}  virtual_ipaddress {{\n    {}\n  }}\n  \
             notify {}\n}}\n",
            c.priority,
            c.advert,
            c.version,
            c.vip,
            script.display()
        );
        let conf_path = lab.path(&format!("ka{n}.conf"));
        fs::write(&conf_path, conf).unwrap();
        let pidfile = lab.path(&format!("ka{n}.pid"));
        let vrrp_pidfile = lab.path(&format!("ka{n}.vrrp.pid"));
        let log = lab.path(&format!("ka{n}.log"));
        let logf = fs::File::create(&log).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lab.name("k"), "keepalived", "-n", "-l", "-D", "-P", "-f"])
            .arg(&conf_path)
            .arg("-p")
            .arg(&pidfile)
            .arg("-r")
            .arg(&vrrp_pidfile)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe. If this test process dies, keepalived dies too
        // (its VRRP child then stops on its own).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("starting keepalived");
        Keepalived { child, notify_file, log }
    }

    /// The states keepalived's notify script recorded, in order.
    fn states(&self) -> Vec<String> {
        fs::read_to_string(&self.notify_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
            .collect()
    }

    /// A crash: SIGKILL to keepalived's process group, so the parent and its VRRP child die
    /// together (killing one alone makes the other stop gracefully or respawn it). The group id
    /// is the parent's pid, which cannot be reused before we reap it.
    fn crash(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: signals the process group of a child this test started and has not reaped.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.crash();
    }
}

/// The engine on a thread in the director's namespace.
struct EngineHost {
    status: watch::Receiver<VrrpStatus>,
    changes: Arc<Mutex<Vec<StateChange>>>,
    stop_tx: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EngineHost {
    fn start(lab: &Lab, cfg: VrrpConfig) -> EngineHost {
        let ns = lab.name("l");
        let changes = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let ch = changes.clone();
        let thread = std::thread::spawn(move || {
            enter_netns(&ns);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let record = move |c: &StateChange| ch.lock().unwrap().push(c.clone());
                let hooks = Hooks { on_state: Some(Arc::new(record)), ..Hooks::default() };
                let engine = match VrrpEngine::start(&cfg, hooks).await {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(engine.status()));
                let _ = stop_rx.await;
                engine.stop().await;
            });
        });
        let status = ready_rx.recv().unwrap().unwrap_or_else(|e| panic!("engine start: {e}"));
        EngineHost { status, changes, stop_tx: Some(stop_tx), thread: Some(thread) }
    }

    fn instance(&self) -> InstanceStatus {
        self.status.borrow().instances[0].clone()
    }

    fn state(&self) -> State {
        self.status.borrow().instances[0].state
    }

    /// When the instance last entered `state` (hook time).
    fn entered(&self, state: State) -> Option<Instant> {
        self.changes.lock().unwrap().iter().rev().find(|c| c.to == state).map(|c| c.at)
    }

    fn wait_state(&self, state: State, timeout: Duration) -> Instant {
        wait_for(timeout, || (self.state() == state).then(|| self.entered(state)).flatten())
            .unwrap_or_else(|| {
                panic!("engine not {state} within {timeout:?}: {:#?}", self.instance())
            })
    }

    /// Stops the engine (priority-0 advert if MASTER, VIPs removed, notify STOP).
    fn stop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("engine thread");
        }
    }
}

impl Drop for EngineHost {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lb_instance(lab: &Lab, version: u8, priority: u8, advert: Duration, vip: &str) -> VrrpConfig {
    let notify = lab.path("lb-notify.sh");
    fs::write(&notify, format!("#!/bin/sh\necho \"$*\" >> {}\n", lab.path("lb.notify").display()))
        .unwrap();
    sh(&["chmod", "755", notify.to_str().unwrap()]);
    let mut inst = crate::testutil::vrrp_instance("VI_1", 51, &[vip]);
    inst.priority = priority;
    inst.advert_int = advert;
    inst.version = version;
    inst.notify = Some(notify.display().to_string());
    VrrpConfig { instances: vec![inst], scripts: vec![], sync_groups: vec![] }
}

fn mdi(version: u8, priority: u8, advert: Duration) -> Duration {
    let v = if version == 2 { Version::V2 } else { Version::V3 };
    let cs = u16::try_from(advert.as_millis() / 10).unwrap();
    let cs = if v == Version::V2 { cs.div_ceil(100) * 100 } else { cs };
    machine::master_down_interval(v, priority, cs, 3)
}

fn us(d: Duration) -> String {
    format!("{} µs", d.as_micros())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// keepalived (100) MASTER, the engine (90) BACKUP listening to it; keepalived crashes and the
/// engine takes over on Master_Down_Interval with the VIP and gratuitous ARPs/NAs; keepalived
/// comes back with 110 and preempts.
fn crash_failover(
    version: u8,
    advert: Duration,
    ka_advert: &'static str,
    v6: bool,
    check_refresh: bool,
) {
    init_logs();
    let lab = Lab::new();
    let cap = Capture::start(&lab);
    let vip = if v6 { VIP_V6 } else { VIP_V4 };
    let vip_conf = if v6 { "2001:db8::200/64" } else { "192.0.2.200/32" };
    let ka_conf =
        KaConf { version, priority: 100, advert: ka_advert, vip: vip_conf, unicast: None };
    let mut ka = Keepalived::start(&lab, &ka_conf);
    let ka_master_in = mdi(version, 100, advert) + Duration::from_secs(3);
    wait_for(ka_master_in, || ka.states().contains(&"MASTER".to_string()).then_some(()))
        .unwrap_or_else(|| panic!("keepalived never became MASTER:\n{}", ka.log_text()));
    let ka_src: IpAddr = if v6 {
        // keepalived sends from its link-local address: take it from its first advert.
        wait_for(Duration::from_secs(2), || {
            cap.all().into_iter().find_map(|(_, s)| match s {
                Seen::Advert { src, priority: 100, .. } if src.is_ipv6() => Some(src),
                _ => None,
            })
        })
        .expect("keepalived IPv6 advert")
    } else {
        KA_V4.parse().unwrap()
    };

    let mut lb = EngineHost::start(&lab, lb_instance(&lab, version, 90, advert, vip));
    let lb_mdi = mdi(version, 90, advert);
    lb.wait_state(State::Backup, Duration::from_secs(2));
    std::thread::sleep(lb_mdi + advert * 2);
    let st = lb.instance();
    assert_eq!(st.state, State::Backup, "{st:#?}");
    assert_eq!(st.master, Some(ka_src), "{st:#?}");
    assert_eq!(st.master_priority, Some(100));
    assert!(st.counters.adverts_received >= 2, "{st:#?}");
    assert_eq!(st.counters.rejected_total(), 0, "keepalived's adverts rejected: {st:#?}");
    assert!(!lab.has_addr("l", vip), "BACKUP holds the VIP");
    let lb_src = st.primary_address;

    // Crash.
    let killed = Instant::now();
    ka.crash();
    let became = lb.wait_state(State::Master, lb_mdi + Duration::from_secs(2));
    let last_ka =
        cap.adverts(ka_src, Some(100)).into_iter().filter(|t| *t <= killed).max().unwrap();
    let first_lb = wait_for(Duration::from_secs(1), || {
        cap.adverts(lb_src, Some(90)).into_iter().find(|t| *t > killed)
    })
    .expect("no advert from the new master");
    let on_wire = first_lb.duration_since(last_ka);
    assert!(
        on_wire + Duration::from_millis(20) >= lb_mdi,
        "took over early: {on_wire:?} < {lb_mdi:?}"
    );
    assert!(
        on_wire <= lb_mdi + Duration::from_millis(250),
        "slow takeover: {on_wire:?} vs {lb_mdi:?}"
    );
    assert!(wait_for(Duration::from_secs(1), || lab.has_addr("l", vip).then_some(())).is_some());
    let lb_mac = lab.mac("l");
    let vip_ip: IpAddr = vip.parse().unwrap();
    let garps = wait_for(Duration::from_secs(1), || {
        let g = cap.announces(lb_mac, vip_ip);
        (g.len() >= 5).then_some(g)
    })
    .expect("5 gratuitous ARPs / NAs");
    let garp_after_master = garps[0].saturating_duration_since(became);
    // The report is published right after the burst: the frames can be seen a moment before.
    let burst = wait_for(Duration::from_secs(1), || lb.instance().last_garp).expect("burst report");
    assert_eq!(burst.sent, 5);
    let mut refresh = String::new();
    if check_refresh {
        let all = wait_for(Duration::from_secs(7), || {
            let g = cap.announces(lb_mac, vip_ip);
            (g.len() >= 10).then_some(g)
        })
        .expect("second burst of 5 after 5 s");
        let gap = all[5].duration_since(all[0]);
        assert!(
            gap >= Duration::from_millis(4950) && gap <= Duration::from_millis(5300),
            "{gap:?}"
        );
        refresh = format!(", refresh burst after {}", ms(gap));
    }

    // keepalived back with a higher priority preempts.
    let back = KaConf { priority: 110, ..ka_conf };
    let restarted = Instant::now();
    let ka2 = Keepalived::start(&lab, &back);
    let ka_mdi = mdi(version, 110, advert);
    let backup_at = lb.wait_state(State::Backup, ka_mdi + Duration::from_secs(3));
    let preempt = backup_at.duration_since(restarted);
    let st = lb.instance();
    assert_eq!(st.master, Some(ka_src), "{st:#?}");
    assert_eq!(st.master_priority, Some(110));
    assert!(
        wait_for(Duration::from_secs(1), || (!lab.has_addr("l", vip)).then_some(())).is_some(),
        "VIP still on the director after losing MASTER"
    );
    assert_eq!(st.counters.rejected_total(), 0, "{st:#?}");
    lb.stop();
    drop(ka2);
    let notes = fs::read_to_string(lab.path("lb.notify")).unwrap();
    let lines: Vec<&str> = notes.lines().collect();
    assert_eq!(
        lines,
        [
            "INSTANCE VI_1 BACKUP 90",
            "INSTANCE VI_1 MASTER 90",
            "INSTANCE VI_1 BACKUP 90",
            "INSTANCE VI_1 STOP 90"
        ]
    );
    report(&format!(
        "MEASURED vrrp crash failover v{version}{} advert {}: last keepalived advert -> our first \
         advert {} (Master_Down_Interval {}), kill -> MASTER {}; MASTER -> first {} {} later, \
         burst of 5 took {} µs{refresh}; keepalived restart (prio 110) -> we are BACKUP after {}",
        if v6 { " IPv6" } else { "" },
        ms(advert),
        ms(on_wire),
        ms(lb_mdi),
        ms(became.duration_since(killed)),
        if v6 { "NA" } else { "GARP" },
        us(garp_after_master),
        burst.took.as_micros(),
        ms(preempt),
    ));
}

/// The engine (150) MASTER; keepalived (100) joins and stays BACKUP; the engine stops gracefully
/// and keepalived takes over after its Skew_Time thanks to the priority-0 advert.
fn graceful_handover(version: u8, advert: Duration, ka_advert: &'static str, unicast: bool) {
    init_logs();
    let lab = Lab::new();
    let cap = Capture::start(&lab);
    let mut cfg = lb_instance(&lab, version, 150, advert, VIP_V4);
    if unicast {
        cfg.instances[0].unicast_src_ip = Some(LB_V4.parse().unwrap());
        cfg.instances[0].unicast_peer = vec![KA_V4.parse().unwrap()];
    }
    let mut lb = EngineHost::start(&lab, cfg);
    let lb_mdi = mdi(version, 150, advert);
    let started = Instant::now();
    let master_at = lb.wait_state(State::Master, lb_mdi + Duration::from_secs(2));
    let to_master = master_at.duration_since(started);
    assert!(lab.has_addr("l", VIP_V4));
    let lb_src: IpAddr = LB_V4.parse().unwrap();
    let ka_src: IpAddr = KA_V4.parse().unwrap();

    let ka_conf = KaConf {
        version,
        priority: 100,
        advert: ka_advert,
        vip: "192.0.2.200/32",
        unicast: unicast.then_some((KA_V4, LB_V4)),
    };
    let ka = Keepalived::start(&lab, &ka_conf);
    std::thread::sleep(mdi(version, 100, advert) + advert * 3);
    assert_eq!(ka.states(), ["BACKUP"], "keepalived must stay BACKUP:\n{}", ka.log_text());
    assert_eq!(lb.state(), State::Master);
    let st = lb.instance();
    assert_eq!(st.counters.rejected_total(), 0, "{st:#?}");
    assert!(cap.adverts(ka_src, None).is_empty(), "keepalived advertised while BACKUP");

    let stopping = Instant::now();
    lb.stop();
    let stopped = stopping.elapsed();
    // The capture thread may not have read the frame yet when stop() returns.
    let zero = wait_for(Duration::from_secs(1), || {
        cap.adverts(lb_src, Some(0)).into_iter().find(|t| *t >= stopping)
    });
    let zero = zero.expect("no priority-0 advert on stop");
    let ka_first = wait_for(Duration::from_secs(2), || {
        cap.adverts(ka_src, Some(100)).into_iter().find(|t| *t > zero)
    })
    .unwrap_or_else(|| panic!("keepalived did not take over:\n{}", ka.log_text()));
    let takeover = ka_first.duration_since(stopping);
    let skew = machine::skew_time(
        if version == 2 { Version::V2 } else { Version::V3 },
        100,
        u16::try_from(advert.as_millis() / 10).unwrap(),
    );
    assert!(
        takeover < Duration::from_secs(1).max(skew + Duration::from_millis(300)),
        "{takeover:?}"
    );
    assert!(
        wait_for(Duration::from_secs(2), || ka.states().contains(&"MASTER".into()).then_some(()))
            .is_some()
    );
    assert!(!lab.has_addr("l", VIP_V4), "VIP left behind after stop");
    let log = ka.log_text().to_lowercase();
    for bad in ["checksum", "invalid", "error", "wrong"] {
        assert!(!log.contains(bad), "keepalived complains ({bad}):\n{}", ka.log_text());
    }
    let notes = fs::read_to_string(lab.path("lb.notify")).unwrap();
    let lines: Vec<&str> = notes.lines().collect();
    assert_eq!(
        lines,
        ["INSTANCE VI_1 BACKUP 150", "INSTANCE VI_1 MASTER 150", "INSTANCE VI_1 STOP 150"]
    );
    report(&format!(
        "MEASURED vrrp graceful hand-over v{version}{} advert {}: start -> MASTER {} \
         (Master_Down_Interval {}); stop() took {}, priority-0 advert after {}, keepalived \
         MASTER (first advert) {} after stop (its Skew_Time {})",
        if unicast { " unicast" } else { "" },
        ms(advert),
        ms(to_master),
        ms(lb_mdi),
        ms(stopped),
        ms(zero.duration_since(stopping)),
        ms(takeover),
        ms(skew),
    ));
}

#[test]
fn keepalived_crash_failover_v2() {
    if require("vrrp keepalived crash failover v2") {
        crash_failover(2, Duration::from_secs(1), "1", false, true);
    }
}

#[test]
fn keepalived_crash_failover_v3_fast() {
    if require("vrrp keepalived crash failover v3") {
        crash_failover(3, Duration::from_millis(100), "0.1", false, false);
    }
}

#[test]
fn keepalived_crash_failover_v3_ipv6() {
    if require("vrrp keepalived crash failover v3 IPv6") {
        crash_failover(3, Duration::from_millis(100), "0.1", true, false);
    }
}

#[test]
fn graceful_handover_to_keepalived_v2() {
    if require("vrrp graceful hand-over v2") {
        graceful_handover(2, Duration::from_secs(1), "1", false);
    }
}

#[test]
fn graceful_handover_to_keepalived_v3_unicast() {
    if require("vrrp graceful hand-over v3 unicast") {
        graceful_handover(3, Duration::from_secs(1), "1", true);
    }
}

/// Tracking and sync groups without a peer: a tracked interface losing carrier puts its
/// instance in FAULT (priority-0 advert, VIP removed) and the sync group follows; a failing
/// `vrrp_script` lowers the priority by its weight; the instance's own interface is tracked.
#[test]
fn tracking_and_sync_group() {
    if !crate::testutil::require_root("vrrp tracking and sync group") {
        return;
    }
    init_logs();
    let lab = Lab::new();
    let cap = Capture::start(&lab);
    let lbns = lab.name("l");
    ip_in(&lbns, &["link", "add", "trk0", "type", "veth", "peer", "name", "trk1"]);
    ip_in(&lbns, &["link", "set", "trk0", "up"]);
    ip_in(&lbns, &["link", "set", "trk1", "up"]);
    let flag = lab.path("healthy");
    let group_file = lab.path("group.notify");
    let advert = Duration::from_millis(100);
    let mut cfg = lb_instance(&lab, 3, 100, advert, VIP_V4);
    let mut vi2 = cfg.instances[0].clone();
    vi2.name = "VI_2".into();
    vi2.virtual_router_id = 52;
    vi2.virtual_ipaddress[0].address = "192.0.2.201".parse().unwrap();
    let vi1 = &mut cfg.instances[0];
    vi1.track_interface = vec![TrackInterface { name: "trk0".into(), weight: 0 }];
    vi1.track_script = vec![TrackScript { script: "chk".into(), weight: None }];
    cfg.instances.push(vi2);
    cfg.scripts = vec![VrrpScript {
        name: "chk".into(),
        script: format!("test -f {}", flag.display()),
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
        weight: -30,
        rise: 1,
        fall: 1,
        location: Location::default(),
    }];
    let append = |word: &str| Some(format!("echo {word} >> {}", group_file.display()));
    cfg.sync_groups = vec![VrrpSyncGroup {
        name: "G".into(),
        group: vec!["VI_1".into(), "VI_2".into()],
        notify_master: append("master"),
        notify_backup: append("backup"),
        notify_fault: append("fault"),
        location: Location::default(),
    }];
    let lb = EngineHost::start(&lab, cfg);
    let both = |state: State, timeout: Duration| {
        wait_for(timeout, || {
            let s = lb.status.borrow();
            s.instances.iter().all(|i| i.state == state).then_some(())
        })
        .unwrap_or_else(|| panic!("not both {state}: {:#?}", lb.status.borrow().instances))
    };
    let prio = |i: usize| lb.status.borrow().instances[i].effective_priority;
    both(State::Master, Duration::from_secs(3));
    assert!(lab.has_addr("l", VIP_V4) && lab.has_addr("l", "192.0.2.201"));
    // The script fails (no flag file): weight -30 applies.
    wait_for(Duration::from_secs(1), || (prio(0) == 70).then_some(())).expect("priority 70");
    assert_eq!(prio(1), 100);
    fs::write(&flag, "").unwrap();
    wait_for(Duration::from_secs(1), || (prio(0) == 100).then_some(())).expect("priority 100");

    // The tracked interface loses carrier (its peer goes down).
    let down = Instant::now();
    ip_in(&lbns, &["link", "set", "trk1", "down"]);
    both(State::Fault, Duration::from_secs(1));
    let fault_after = lb
        .changes
        .lock()
        .unwrap()
        .iter()
        .find(|c| c.to == State::Fault && c.at > down)
        .map(|c| c.at.duration_since(down))
        .unwrap();
    let gone = || (!lab.has_addr("l", VIP_V4) && !lab.has_addr("l", "192.0.2.201")).then_some(());
    assert!(wait_for(Duration::from_secs(1), gone).is_some(), "VIPs kept in FAULT");
    let lb_src: IpAddr = LB_V4.parse().unwrap();
    let zero_vrids = wait_for(Duration::from_secs(1), || {
        let v: Vec<u8> = cap
            .all()
            .into_iter()
            .filter_map(|(t, s)| match s {
                Seen::Advert { src, vrid, priority: 0, .. } if src == lb_src && t > down => {
                    Some(vrid)
                }
                _ => None,
            })
            .collect();
        (v.contains(&51) && v.contains(&52)).then_some(v)
    });
    assert!(zero_vrids.is_some(), "no priority-0 adverts for both VRIDs on FAULT");
    let st = lb.status.borrow().instances[0].clone();
    assert!(st.track_fault, "{st:#?}");
    ip_in(&lbns, &["link", "set", "trk1", "up"]);
    both(State::Master, Duration::from_secs(2));

    // The instances' own interface.
    ip_in(&lbns, &["link", "set", "eth0", "down"]);
    both(State::Fault, Duration::from_secs(1));
    ip_in(&lbns, &["link", "set", "eth0", "up"]);
    both(State::Master, Duration::from_secs(2));
    // Notify scripts run on their own after the state change: give the last one time to write.
    let want = ["master", "fault", "master", "fault", "master"];
    let agreed_now = || {
        let notes = fs::read_to_string(&group_file).unwrap_or_default();
        let agreed: Vec<String> =
            notes.lines().filter(|l| *l != "backup").map(str::to_owned).collect();
        (agreed.len() >= want.len()).then_some(())
    };
    let _ = wait_for(Duration::from_secs(2), agreed_now);
    drop(lb);

    let notes = fs::read_to_string(&group_file).unwrap();
    let agreed: Vec<&str> = notes.lines().filter(|l| *l != "backup").collect();
    assert_eq!(agreed, want, "{notes}");
    report(&format!(
        "MEASURED vrrp tracking: tracked link down -> FAULT after {} (sync-group peer too)",
        us(fault_after)
    ));
}

/// The director's interface is deleted and created again under the same name (and index):
/// the instance is in FAULT while it is missing, then opens its socket again (with the
/// multicast membership) on the new interface: it hears keepalived's adverts again and stays
/// BACKUP (with the old socket it would hear nothing and take over). The same when the
/// interface is deleted and created again at once. After keepalived crashes it takes over, its
/// adverts on the wire and the VIP on the new interface.
#[test]
fn recreated_interface_gets_its_socket_back() {
    if !require("vrrp recreated interface") {
        return;
    }
    init_logs();
    let lab = Lab::new();
    let cap = Capture::start(&lab);
    let advert = Duration::from_millis(100);
    let ka_conf =
        KaConf { version: 3, priority: 100, advert: "0.1", vip: "192.0.2.200/32", unicast: None };
    let mut ka = Keepalived::start(&lab, &ka_conf);
    wait_for(Duration::from_secs(3), || ka.states().contains(&"MASTER".to_string()).then_some(()))
        .unwrap_or_else(|| panic!("keepalived never became MASTER:\n{}", ka.log_text()));
    let mut lb = EngineHost::start(&lab, lb_instance(&lab, 3, 90, advert, VIP_V4));
    let lb_mdi = mdi(3, 90, advert);
    lb.wait_state(State::Backup, Duration::from_secs(2));
    let ka_src: IpAddr = KA_V4.parse().unwrap();
    let listening =
        wait_for(Duration::from_secs(2), || (lb.instance().master == Some(ka_src)).then_some(()));
    assert!(listening.is_some(), "not listening to keepalived: {:#?}", lb.instance());

    // Delete the director's veth (its bridge port goes with it) and create it again: same
    // name, MAC, addresses and even index (the kernel's own choice would be a new one).
    let (lbns, sw) = (lab.name("l"), lab.name("s"));
    let mac = lab.mac("l");
    let mac_s = mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    let ifindex = ip_in(&lbns, &["-o", "link", "show", "dev", "eth0"])
        .split(':')
        .next()
        .unwrap()
        .trim()
        .to_string();
    let recreate = || {
        ip_in(
            &lbns,
            &[
                "link", "add", "eth0", "index", &ifindex, "address", &mac_s, "type", "veth",
                "peer", "name", "portl", "netns", &sw,
            ],
        );
        ip_in(&sw, &["link", "set", "portl", "master", "br0"]);
        ip_in(&sw, &["link", "set", "portl", "up"]);
        ip_in(&lbns, &["addr", "add", &format!("{LB_V4}/24"), "dev", "eth0"]);
        ip_in(&lbns, &["addr", "add", "2001:db8::12/64", "dev", "eth0", "nodad"]);
        ip_in(&lbns, &["link", "set", "eth0", "up"]);
        let now = ip_in(&lbns, &["-o", "link", "show", "dev", "eth0"]);
        assert!(now.starts_with(&format!("{ifindex}:")), "index not kept: {now}");
    };
    // Longer than Master_Down_Interval: only keepalived's adverts keep us BACKUP.
    let listening = |what: &str| {
        let heard_before = lb.instance().counters.adverts_received;
        std::thread::sleep(lb_mdi * 3);
        let st = lb.instance();
        assert_eq!(st.state, State::Backup, "{what}: deaf on the new interface: {st:#?}");
        assert_eq!(st.master, Some(ka_src), "{what}: {st:#?}");
        assert!(st.counters.adverts_received >= heard_before + 5, "{what}: {st:#?}");
    };
    let deleted = Instant::now();
    ip_in(&lbns, &["link", "del", "eth0"]);
    let fault = lb.wait_state(State::Fault, Duration::from_secs(3));
    std::thread::sleep(lb_mdi * 2);
    assert_eq!(lb.state(), State::Fault, "must stay in FAULT while eth0 is missing");
    let created = Instant::now();
    recreate();
    let backup = lb.wait_state(State::Backup, Duration::from_secs(3));
    listening("after a while without eth0");
    // Deleted and created again at once: the link dump may never see it missing.
    ip_in(&lbns, &["link", "del", "eth0"]);
    recreate();
    wait_for(Duration::from_secs(3), || (lb.state() == State::Backup).then_some(()))
        .expect("BACKUP again");
    listening("deleted and created again at once");

    // And the send path: keepalived crashes, we take over on the new interface.
    let killed = Instant::now();
    ka.crash();
    lb.wait_state(State::Master, lb_mdi + Duration::from_secs(2));
    let lb_src: IpAddr = LB_V4.parse().unwrap();
    let ours = wait_for(Duration::from_secs(1), || {
        cap.adverts(lb_src, Some(90)).into_iter().find(|t| *t > killed)
    });
    assert!(ours.is_some(), "no advert from us on the recreated interface");
    assert!(wait_for(Duration::from_secs(1), || lab.has_addr("l", VIP_V4).then_some(())).is_some());
    lb.stop();
    report(&format!(
        "MEASURED vrrp interface recreated: deleted -> FAULT {}, up again -> BACKUP {}",
        ms(fault.saturating_duration_since(deleted)),
        ms(backup.saturating_duration_since(created)),
    ));
}

mod forged;
