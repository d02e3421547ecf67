//! The route announcer edge: makes the world announce exactly the VIPs the reconciler says.
//!
//! - `speaker = "bird"`: lb runs BIRD 2 on the configuration [`bird`](super::bird) renders, in
//!   the runtime directory (next to the control socket): `bird -f -c CONF -s CTL -P PID`. A change
//!   of the announced set rewrites the small VIP file and runs `birdc configure` (no session
//!   restarts). A BIRD that dies is started again with backoff. Session and BFD state are read
//!   with `birdc show protocols all` / `show bfd sessions` ([`birdc`](super::birdc)).
//! - `speaker = "external"`: the announced VIPs are kept as blackhole host routes of protocol
//!   [`ROUTE_PROTOCOL`] in `export_table`, a table no rule points to (so they never change this
//!   host's forwarding), for the operator's routing daemon to export.
//!
//! Fate sharing. Without a pinned dataplane, BIRD dies with the agent (`PR_SET_PDEATHSIG`), and
//! the routers drop this director at once (TCP reset; BFD when the host or link dies). With a
//! pinned dataplane (`--pin-dir`), forwarding outlives the agent, so BIRD does too: a SIGQUIT
//! hand-over or a SIGKILL and restart leaves the sessions up, and the next agent adopts the
//! running BIRD by its pid file and control socket. Nothing is withdrawn then.
//!
//! Everything runs on one thread of its own: BIRD is its child (the death signal follows the
//! thread that forked), and slow `birdc` calls never hold the agent lock.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{bird, birdc};
use crate::config::bgp::{BgpConfig, Speaker};

/// Protocol number of the routes kept in `export_table` (iproute2 shows `proto 250`): ours to
/// list and remove, and not one the kernel or a routing daemon uses.
pub const ROUTE_PROTOCOL: u8 = 250;
/// How often the speaker is checked and its state read.
const POLL: Duration = Duration::from_secs(1);
/// How long a started BIRD has to answer on its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a `birdc` call may take.
const BIRDC_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What `lb status` shows of the speaker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeakerView {
    /// "bird" or "external".
    pub speaker: String,
    /// BGP sessions (BIRD only).
    pub sessions: Vec<SessionView>,
    /// The VIPs the speaker was last told to announce.
    pub announced: Vec<IpAddr>,
    /// Times BIRD was started again after it died.
    pub restarts: u64,
    /// The last problem, if the speaker is not doing what it was told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    pub neighbor: String,
    /// BGP state: `Established`, `Active`, `Connect`, ... (`Down` when BIRD is not running).
    pub state: String,
    pub up: bool,
    /// Seconds in the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    /// BFD session state (`Up`, `Down`, `Init`), when BFD is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<String>,
    /// Prefixes announced to the neighbor.
    pub prefixes: u64,
}

/// Why the speaker could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("BIRD (`bird`): {0}")]
    Bird(String),
    #[error("writing BIRD's configuration {path}: {error}")]
    Write { path: PathBuf, error: std::io::Error },
    #[error("{0}")]
    Render(#[from] bird::RenderError),
    #[error("export_table {table}: {error}")]
    Netlink { table: u32, error: String },
    #[error("starting the BGP speaker thread: {0}")]
    Thread(std::io::Error),
}

/// Where the BIRD files live: beside the control socket, named after it, so two agents with
/// their own sockets in one directory do not share a BIRD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub config: PathBuf,
    pub vips: PathBuf,
    pub control: PathBuf,
    pub pid: PathBuf,
    pub log: PathBuf,
}

impl Paths {
    pub fn beside(socket: &Path) -> Self {
        let dir = socket.parent().unwrap_or(Path::new("/run/lb"));
        let stem = socket.file_name().and_then(|n| n.to_str()).unwrap_or("lb.sock");
        let file = |suffix: &str| dir.join(format!("{stem}.bird{suffix}"));
        Paths {
            config: file(".conf"),
            vips: file("-vips.conf"),
            control: file(".ctl"),
            pid: file(".pid"),
            log: file(".log"),
        }
    }
}

enum Cmd {
    Announce(Vec<IpAddr>),
    Reconfigure(Box<BgpConfig>),
    /// Withdraw everything and stop the speaker.
    Stop,
    /// Leave the speaker announcing for the next agent (pinned hand-over).
    Leave,
}

/// The running announcer. Dropping it without [`stop`](Announcer::stop) or
/// [`leave`](Announcer::leave) stops it.
pub struct Announcer {
    tx: mpsc::Sender<Cmd>,
    live: Arc<Mutex<SpeakerView>>,
    thread: Option<JoinHandle<()>>,
    adopted: bool,
}

impl Announcer {
    /// Starts the speaker with nothing announced (or, when adopting a running BIRD, with what it
    /// announced). `outlive`: the speaker survives the agent (pinned dataplane).
    ///
    /// # Errors
    /// BIRD missing, refusing its configuration or not starting; `export_table` not writable.
    pub fn start(bgp: &BgpConfig, paths: Paths, outlive: bool) -> Result<Self, SpeakerError> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let live = Arc::new(Mutex::new(SpeakerView {
            speaker: bgp.speaker.as_str().to_owned(),
            ..SpeakerView::default()
        }));
        let (bgp, thread_live) = (bgp.clone(), live.clone());
        let thread = std::thread::Builder::new()
            .name("lb-bgp".to_owned())
            .spawn(move || {
                let started = match bgp.speaker {
                    Speaker::Bird => {
                        BirdSpeaker::start(bgp, paths, outlive).map(|b| Edge::Bird(Box::new(b)))
                    }
                    Speaker::External => ExternalSpeaker::start(&bgp, outlive).map(Edge::External),
                };
                match started {
                    Ok(edge) => {
                        let _ = ready_tx.send(Ok(edge.adopted()));
                        supervise(edge, &rx, &thread_live);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(SpeakerError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(adopted)) => Ok(Announcer { tx, live, thread: Some(thread), adopted }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(SpeakerError::Bird("the speaker thread ended while starting".to_owned()))
            }
        }
    }

    /// A BIRD left running by the previous agent was adopted: it was announcing already.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Announce exactly `vips` from now on.
    pub fn announce(&self, vips: Vec<IpAddr>) {
        let _ = self.tx.send(Cmd::Announce(vips));
    }

    /// A reload changed `[bgp]`.
    pub fn reconfigure(&self, bgp: &BgpConfig) {
        let _ = self.tx.send(Cmd::Reconfigure(Box::new(bgp.clone())));
    }

    pub fn view(&self) -> SpeakerView {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Withdraws everything and stops the speaker (BIRD closes its sessions with a Cease).
    pub fn stop(mut self) {
        self.finish(Cmd::Stop);
    }

    /// Leaves the speaker announcing for the next agent.
    pub fn leave(mut self) {
        self.finish(Cmd::Leave);
    }

    fn finish(&mut self, cmd: Cmd) {
        let _ = self.tx.send(cmd);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
impl Announcer {
    /// An announcer with no speaker behind it: unit tests of what the agent decides to announce.
    pub fn detached(bgp: &BgpConfig) -> Self {
        let (tx, _) = mpsc::channel();
        let live = Arc::new(Mutex::new(SpeakerView {
            speaker: bgp.speaker.as_str().to_owned(),
            ..SpeakerView::default()
        }));
        Announcer { tx, live, thread: None, adopted: false }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.finish(Cmd::Stop);
    }
}

enum Edge {
    Bird(Box<BirdSpeaker>),
    External(ExternalSpeaker),
}

impl Edge {
    fn adopted(&self) -> bool {
        matches!(self, Edge::Bird(b) if b.adopted)
    }

    fn announce(&mut self, vips: &[IpAddr]) -> Result<(), String> {
        match self {
            Edge::Bird(b) => b.announce(vips),
            Edge::External(x) => x.sync(vips),
        }
    }

    /// `restarted` publishes a restart's new count before BIRD is started: the new BIRD may
    /// announce (and a router route to this director again) before it answers on its socket.
    fn poll(
        &mut self,
        view: &mut SpeakerView,
        restarted: &mut dyn FnMut(u64),
    ) -> Result<(), String> {
        match self {
            Edge::Bird(b) => b.poll(view, restarted),
            Edge::External(x) => x.sync(&view.announced),
        }
    }
}

fn supervise(mut edge: Edge, rx: &mpsc::Receiver<Cmd>, live: &Mutex<SpeakerView>) {
    let update = |f: &mut dyn FnMut(&mut SpeakerView)| {
        let mut v = live.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut v);
    };
    if let Edge::Bird(b) = &edge {
        let announced = b.announced.clone();
        update(&mut |v| v.announced = announced.clone());
    }
    // Polled on a clock of its own: commands arriving must not postpone reading the sessions.
    let mut next_poll = Instant::now();
    loop {
        let wait = next_poll.saturating_duration_since(Instant::now());
        let result = match rx.recv_timeout(wait) {
            Ok(Cmd::Announce(vips)) => {
                let mut vips = vips;
                vips.sort();
                vips.dedup();
                let r = edge.announce(&vips);
                if r.is_ok() {
                    if live.lock().map(|v| v.announced != vips).unwrap_or(true) {
                        tracing::info!(vips = ?vips, "BGP: announced VIPs");
                    }
                    update(&mut |v| v.announced = vips.clone());
                }
                r
            }
            Ok(Cmd::Reconfigure(bgp)) => match &mut edge {
                Edge::Bird(b) => b.reconfigure(*bgp),
                Edge::External(x) => x.retable(&bgp),
            },
            Ok(Cmd::Stop) | Err(RecvTimeoutError::Disconnected) => {
                match &mut edge {
                    Edge::Bird(b) => b.stop(),
                    Edge::External(x) => {
                        if let Err(e) = x.sync(&[]) {
                            tracing::warn!(error = %e, "removing the VIP routes from export_table");
                        }
                        x.stop_watchdog();
                    }
                }
                return;
            }
            Ok(Cmd::Leave) => {
                tracing::info!("BGP: speaker left running for the next agent");
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                next_poll = Instant::now() + POLL;
                let mut view = live.lock().map(|v| v.clone()).unwrap_or_default();
                let before = view.sessions.clone();
                let r = edge.poll(&mut view, &mut |n| update(&mut |v| v.restarts = n));
                for line in session_changes(&before, &view.sessions) {
                    tracing::info!("BGP: {line}");
                }
                update(&mut |v| {
                    v.sessions = view.sessions.clone();
                    v.restarts = view.restarts;
                });
                r
            }
        };
        let error = result.err();
        if let Some(e) = &error {
            tracing::warn!(error = %e, "BGP speaker");
        }
        update(&mut |v| v.error = error.clone());
    }
}

/// One line per session whose state or BFD state changed between two polls (an operator's
/// log: sessions coming up, going down, BFD flaps). A neighbor not seen before counts as `Down`.
fn session_changes(before: &[SessionView], after: &[SessionView]) -> Vec<String> {
    after
        .iter()
        .filter_map(|s| {
            let old = before.iter().find(|b| b.neighbor == s.neighbor);
            let (was, was_bfd) =
                old.map_or(("Down", None), |b| (b.state.as_str(), b.bfd.as_deref()));
            if was == s.state && was_bfd == s.bfd.as_deref() {
                return None;
            }
            let bfd = match (&s.bfd, was_bfd) {
                (Some(now), Some(w)) if w != now => format!(", BFD {w} -> {now}"),
                (Some(now), None) => format!(", BFD {now}"),
                _ => String::new(),
            };
            Some(format!("session to {} {was} -> {}{bfd}", s.neighbor, s.state))
        })
        .collect()
}

/// BIRD run and supervised by this agent.
struct BirdSpeaker {
    bgp: BgpConfig,
    paths: Paths,
    outlive: bool,
    /// Our child, when we started it (not when adopted).
    child: Option<Child>,
    /// BIRD's pid (ours or adopted).
    pid: Option<i32>,
    adopted: bool,
    announced: Vec<IpAddr>,
    /// When to try starting BIRD again, and the next wait.
    retry: Option<Instant>,
    backoff: Duration,
    restarts: u64,
}

impl BirdSpeaker {
    fn start(bgp: BgpConfig, paths: Paths, outlive: bool) -> Result<Self, SpeakerError> {
        let mut s = BirdSpeaker {
            bgp,
            paths,
            outlive,
            child: None,
            pid: None,
            adopted: false,
            announced: Vec::new(),
            retry: None,
            backoff: Duration::from_secs(1),
            restarts: 0,
        };
        s.write_main()?;
        let running = read_pid(&s.paths.pid).filter(|pid| alive(*pid));
        if let Some(pid) = running {
            if outlive && birdc(&s.paths.control, &["show", "status"]).is_ok() {
                // A hitless restart: keep its sessions and what it announces.
                s.announced = read_vips(&s.paths.vips);
                s.pid = Some(pid);
                s.adopted = true;
                birdc_configure(&s.paths.control).map_err(SpeakerError::Bird)?;
                tracing::info!(pid, "BGP: adopted the running BIRD");
                return Ok(s);
            }
            // Not ours to keep (an unpinned agent must share BIRD's fate): start afresh.
            terminate(pid);
        }
        write_file(&s.paths.vips, &bird::render_vips(&[]))?;
        s.spawn().map_err(SpeakerError::Bird)?;
        Ok(s)
    }

    fn router_id(&self) -> Result<Ipv4Addr, SpeakerError> {
        if let Some(id) = self.bgp.router_id {
            return Ok(id);
        }
        let neighbor = self.bgp.neighbors.iter().find(|n| n.address.is_ipv4());
        let source = neighbor.and_then(|n| {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
            socket.connect((n.address, 179)).ok()?;
            match socket.local_addr().ok()?.ip() {
                IpAddr::V4(a) if !a.is_unspecified() => Some(a),
                _ => None,
            }
        });
        source.ok_or_else(|| {
            SpeakerError::Bird(
                "no router id: set `router_id`, or give the first IPv4 neighbor a route".to_owned(),
            )
        })
    }

    fn write_main(&self) -> Result<(), SpeakerError> {
        let text = bird::render_main(&self.bgp, self.router_id()?, &self.paths.vips)?;
        write_file(&self.paths.config, &text)
    }

    /// Checks the configuration, starts BIRD and waits until it answers.
    fn spawn(&mut self) -> Result<(), String> {
        let check = Command::new("bird")
            .arg("-p")
            .arg("-c")
            .arg(&self.paths.config)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run it ({e}): is BIRD 2 installed?"))?;
        if !check.status.success() {
            return Err(format!(
                "it refused its configuration {}: {}",
                self.paths.config.display(),
                String::from_utf8_lossy(&check.stderr).trim()
            ));
        }
        let _ = std::fs::remove_file(&self.paths.control);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.paths.log)
            .map_err(|e| format!("opening its log {}: {e}", self.paths.log.display()))?;
        let outlive = self.outlive;
        let mut command = Command::new("bird");
        command
            .arg("-f")
            .arg("-c")
            .arg(&self.paths.config)
            .arg("-s")
            .arg(&self.paths.control)
            .arg("-P")
            .arg(&self.paths.pid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Its own session: a terminal's Ctrl-C or the agent's process group is not its.
                libc::setsid();
                if !outlive {
                    // Dies with the agent, so the routers drop a director that cannot forward.
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| format!("cannot start it: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "it exited at start ({status}); its log {}: {}",
                    self.paths.log.display(),
                    log_tail(&self.paths.log)
                ));
            }
            if birdc(&self.paths.control, &["show", "status"]).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "it did not answer on {} within {} s",
                    self.paths.control.display(),
                    START_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::info!(pid = child.id(), config = %self.paths.config.display(), "BGP: BIRD started");
        self.pid = i32::try_from(child.id()).ok();
        self.child = Some(child);
        self.adopted = false;
        Ok(())
    }

    fn running(&mut self) -> bool {
        match (&mut self.child, self.pid) {
            (Some(child), _) => matches!(child.try_wait(), Ok(None)),
            (None, Some(pid)) => alive(pid),
            (None, None) => false,
        }
    }

    fn announce(&mut self, vips: &[IpAddr]) -> Result<(), String> {
        if vips == self.announced.as_slice() {
            return Ok(());
        }
        write_file(&self.paths.vips, &bird::render_vips(vips)).map_err(|e| e.to_string())?;
        self.announced = vips.to_vec();
        if self.running() { birdc_configure(&self.paths.control) } else { Ok(()) }
    }

    fn reconfigure(&mut self, bgp: BgpConfig) -> Result<(), String> {
        if bgp == self.bgp {
            return Ok(());
        }
        self.bgp = bgp;
        self.write_main().map_err(|e| e.to_string())?;
        if self.running() { birdc_configure(&self.paths.control) } else { Ok(()) }
    }

    /// Restarts a dead BIRD (with backoff) and reads the sessions.
    fn poll(
        &mut self,
        view: &mut SpeakerView,
        restarted: &mut dyn FnMut(u64),
    ) -> Result<(), String> {
        view.restarts = self.restarts;
        if !self.running() {
            view.sessions = self.down_sessions();
            if let Some(child) = &mut self.child {
                let status = child.try_wait().ok().flatten();
                tracing::error!(status = ?status, "BGP: BIRD died");
                self.child = None;
                self.pid = None;
            }
            let now = Instant::now();
            if self.retry.is_some_and(|at| now < at) {
                return Err("BIRD is not running: waiting to start it again".to_owned());
            }
            self.restarts += 1;
            view.restarts = self.restarts;
            restarted(self.restarts);
            // Start from the current announced set.
            write_file(&self.paths.vips, &bird::render_vips(&self.announced))
                .map_err(|e| e.to_string())?;
            return match self.spawn() {
                Ok(()) => {
                    self.retry = None;
                    self.backoff = Duration::from_secs(1);
                    Ok(())
                }
                Err(e) => {
                    self.retry = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    Err(format!("BIRD (`bird`): {e}"))
                }
            };
        }
        let protocols = birdc(&self.paths.control, &["show", "protocols", "all"])?;
        let bfd = if self.bgp.neighbors.iter().any(|n| n.bfd) {
            birdc(&self.paths.control, &["show", "bfd", "sessions"]).unwrap_or_default()
        } else {
            String::new()
        };
        view.sessions = sessions(
            &self.bgp,
            &birdc::parse_protocols(&protocols),
            &birdc::parse_bfd(&bfd),
            unix_now(),
        );
        Ok(())
    }

    fn down_sessions(&self) -> Vec<SessionView> {
        sessions(&self.bgp, &[], &[], unix_now())
    }

    fn stop(&mut self) {
        let Some(pid) = self.pid else { return };
        // SIGTERM: BIRD closes each session with a Cease, and the routers withdraw at once.
        terminate(pid);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.paths.pid);
        tracing::info!(pid, "BGP: BIRD stopped");
    }
}

/// One [`SessionView`] per configured neighbor, from BIRD's protocols (named by index).
fn sessions(
    bgp: &BgpConfig,
    protocols: &[birdc::BgpProtocol],
    bfd: &[(IpAddr, String)],
    now: u64,
) -> Vec<SessionView> {
    bgp.neighbors
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let name = bird::protocol_name(i);
            let p = protocols.iter().find(|p| p.name == name);
            let up = p.is_some_and(birdc::BgpProtocol::established);
            SessionView {
                neighbor: n.address.to_string(),
                state: p.map_or_else(|| "Down".to_owned(), |p| p.bgp_state.clone()),
                up,
                uptime_secs: p
                    .and_then(|p| p.since.parse::<u64>().ok())
                    .map(|since| now.saturating_sub(since)),
                bfd: n.bfd.then(|| {
                    bfd.iter()
                        .find(|(a, _)| *a == n.address)
                        .map_or_else(|| "Down".to_owned(), |(_, s)| s.clone())
                }),
                prefixes: p.map_or(0, |p| if up { p.exported } else { 0 }),
            }
        })
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Runs `birdc -s CTL ARGS`, with a time limit; its output, or why it failed.
fn birdc(control: &Path, args: &[&str]) -> Result<String, String> {
    let mut child = Command::new("birdc")
        .arg("-s")
        .arg(control)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run birdc: {e}"))?;
    let deadline = Instant::now() + BIRDC_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("birdc {} did not answer in time", args.join(" ")));
            }
        }
    };
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if !status.success() || out.contains("Unable to connect") {
        let mut err = String::new();
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        return Err(format!("birdc {}: {}", args.join(" "), format!("{out}{err}").trim()));
    }
    Ok(out)
}

fn birdc_configure(control: &Path) -> Result<(), String> {
    let out = birdc(control, &["configure"])?;
    if out.contains("Reconfigured") || out.contains("Reconfiguration in progress") {
        Ok(())
    } else {
        Err(format!("birdc configure: {}", out.trim()))
    }
}

/// Writes `path` whole: BIRD never reads half a file.
fn write_file(path: &Path, text: &str) -> Result<(), SpeakerError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|error| SpeakerError::Write { path: path.to_owned(), error })
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok().filter(|p| *p > 1)
}

/// The VIPs of a VIP file this agent wrote (adoption).
fn read_vips(path: &Path) -> Vec<IpAddr> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut vips: Vec<IpAddr> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("route ")?.split('/').next()?.parse().ok())
        .collect();
    vips.sort();
    vips
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// SIGTERM, then SIGKILL if it is still there after 3 s.
fn terminate(pid: i32) {
    // SAFETY: plain signals to the BIRD this agent (or its predecessor) started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive(pid) && Instant::now() < deadline {
        // Reap it if it is our child (else it stays a zombie and looks alive).
        // SAFETY: non-blocking wait on one pid.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// `speaker = "external"`: the VIPs as routes in `export_table`.
struct ExternalSpeaker {
    table: u32,
    rt: tokio::runtime::Runtime,
    handle: rtnetlink::Handle,
    /// `lb export-table-watchdog`, told the table in use; it empties it once we are gone.
    watchdog: Option<(std::process::Child, std::process::ChildStdin)>,
}

impl ExternalSpeaker {
    /// `outlive`: a pinned dataplane keeps forwarding without the agent, so its routes stay;
    /// otherwise a watchdog removes them when the agent dies.
    fn start(bgp: &BgpConfig, outlive: bool) -> Result<Self, SpeakerError> {
        let table = bgp.export_table.unwrap_or_default();
        let err = |error: String| SpeakerError::Netlink { table, error };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err(e.to_string()))?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            Ok::<_, std::io::Error>(handle)
        });
        let handle = handle.map_err(|e| err(e.to_string()))?;
        // Routes a previous agent left stay until the first announcement (moments later) makes
        // the table match: a hitless restart must not flap them.
        let mut speaker = ExternalSpeaker { table, rt, handle, watchdog: None };
        if !outlive {
            speaker.watchdog = start_watchdog().map_err(err)?;
            speaker.tell_watchdog();
        }
        Ok(speaker)
    }

    fn retable(&mut self, bgp: &BgpConfig) -> Result<(), String> {
        let table = bgp.export_table.unwrap_or_default();
        if table != self.table {
            self.sync(&[])?;
            self.table = table;
            self.tell_watchdog();
        }
        Ok(())
    }

    fn tell_watchdog(&mut self) {
        use std::io::Write as _;
        if let Some((_, stdin)) = &mut self.watchdog
            && let Err(e) = writeln!(stdin, "{}", self.table)
        {
            tracing::warn!(error = %e, "export_table watchdog gone: a crash would leave routes");
        }
    }

    /// Our routes are gone (a stop): let the watchdog end too.
    fn stop_watchdog(&mut self) {
        if let Some((mut child, stdin)) = self.watchdog.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Makes our routes in the table exactly `vips` (idempotent).
    fn sync(&self, vips: &[IpAddr]) -> Result<(), String> {
        self.rt.block_on(sync_table(&self.handle, self.table, vips)).map_err(|e| e.to_string())
    }
}

/// This binary as `lb export-table-watchdog`, stdin a pipe only we write (close-on-exec on our
/// side, so BIRD or a hook never holds it open), in a process group of its own so that a kill of
/// the agent's group leaves it to see the end.
fn start_watchdog() -> Result<Option<(std::process::Child, std::process::ChildStdin)>, String> {
    use std::os::unix::process::CommandExt as _;
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().map_err(|e| format!("finding lb's own binary: {e}"))?;
    let mut child = Command::new(&exe)
        .arg("export-table-watchdog")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting {} export-table-watchdog: {e}", exe.display()))?;
    Ok(child.stdin.take().map(|stdin| (child, stdin)))
}

/// `lb export-table-watchdog`: remembers the last table number read from `input` and, at its end
/// (the agent exited or was killed: the kernel closes the pipe either way), removes lb's routes
/// (protocol 250) from that table. Termination signals are ignored: a service manager stopping
/// the agent's whole group must not stop this one before the agent's end is seen.
///
/// # Errors
/// The routes could not be removed.
pub fn export_table_watchdog(input: impl std::io::BufRead) -> Result<(), SpeakerError> {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: installing SIG_IGN has no preconditions.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    let mut table = None;
    for line in input.lines() {
        let Ok(line) = line else { break };
        if let Ok(t) = line.trim().parse::<u32>() {
            table = Some(t);
        }
    }
    let Some(table) = table else { return Ok(()) };
    let err = |error: String| SpeakerError::Netlink { table, error };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(e.to_string()))?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| err(e.to_string()))?;
        tokio::spawn(conn);
        sync_table(&handle, table, &[]).await.map_err(|e| err(e.to_string()))
    })
}

async fn sync_table(
    handle: &rtnetlink::Handle,
    table: u32,
    vips: &[IpAddr],
) -> Result<(), rtnetlink::Error> {
    use futures::TryStreamExt as _;
    use rtnetlink::RouteMessageBuilder;
    use rtnetlink::packet_route::route::{
        RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
    };

    let want: BTreeSet<IpAddr> = vips.iter().copied().collect();
    let mut have = BTreeSet::new();
    let dumps = [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ];
    let ours = |m: &RouteMessage| -> Option<(IpAddr, RouteMessage)> {
        let in_table = m
            .attributes
            .iter()
            .find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None })
            .unwrap_or(u32::from(m.header.table));
        if in_table != table || m.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
            return None;
        }
        let dst = m.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
            _ => None,
        })?;
        Some((dst, m.clone()))
    };
    for dump in dumps {
        let mut stream = handle.route().get(dump).execute();
        while let Some(m) = stream.try_next().await? {
            if let Some((dst, m)) = ours(&m) {
                if want.contains(&dst) {
                    have.insert(dst);
                } else {
                    handle.route().del(m).execute().await?;
                }
            }
        }
    }
    for vip in want.difference(&have) {
        let prefix = if vip.is_ipv4() { 32 } else { 128 };
        let Ok(builder) = RouteMessageBuilder::<IpAddr>::new().destination_prefix(*vip, prefix)
        else {
            continue;
        };
        let message = builder
            .table_id(table)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .kind(RouteType::BlackHole)
            .build();
        handle.route().add(message).replace().execute().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, test_support::AnyHost};

    #[test]
    fn files_are_named_after_the_socket() {
        let p = Paths::beside(Path::new("/run/lb/lb.sock"));
        assert_eq!(p.config, Path::new("/run/lb/lb.sock.bird.conf"));
        assert_eq!(p.vips, Path::new("/run/lb/lb.sock.bird-vips.conf"));
        assert_eq!(p.control, Path::new("/run/lb/lb.sock.bird.ctl"));
    }

    #[test]
    fn sessions_follow_the_configured_neighbors() {
        let text = "[bgp]\nlocal_as = 65010\nrouter_id = '192.0.2.1'\n\
                    [[bgp.neighbor]]\naddress = '198.51.100.1'\nremote_as = 65000\n\
                    [[bgp.neighbor]]\naddress = '198.51.100.3'\nremote_as = 65000\nbfd = false\n";
        let bgp = config::parse_toml(text, Path::new("b.toml"), &AnyHost).unwrap().bgp.unwrap();
        let protocols = vec![birdc::BgpProtocol {
            name: "lb_neighbor1".into(),
            state: "up".into(),
            since: "1000".into(),
            bgp_state: "Established".into(),
            neighbor: Some("198.51.100.1".parse().unwrap()),
            exported: 2,
        }];
        let bfd = vec![("198.51.100.1".parse().unwrap(), "Up".to_owned())];
        let got = sessions(&bgp, &protocols, &bfd, 1060);
        assert_eq!(
            got,
            vec![
                SessionView {
                    neighbor: "198.51.100.1".into(),
                    state: "Established".into(),
                    up: true,
                    uptime_secs: Some(60),
                    bfd: Some("Up".into()),
                    prefixes: 2,
                },
                SessionView {
                    neighbor: "198.51.100.3".into(),
                    state: "Down".into(),
                    up: false,
                    uptime_secs: None,
                    bfd: None,
                    prefixes: 0,
                },
            ]
        );
    }

    #[test]
    fn vip_file_reads_back() {
        let dir = crate::testutil::scratch_dir("lb-vipfile-");
        let path = dir.path().join("v.conf");
        let vips: Vec<IpAddr> =
            vec!["192.0.2.10".parse().unwrap(), "2001:db8::10".parse().unwrap()];
        std::fs::write(&path, bird::render_vips(&vips)).unwrap();
        assert_eq!(read_vips(&path), vips);
    }

    /// Session log lines: only changes, with the BFD state when it changed.
    #[test]
    fn session_changes_are_logged_once() {
        let s = |state: &str, bfd: Option<&str>| SessionView {
            neighbor: "198.51.100.1".into(),
            state: state.into(),
            up: state == "Established",
            uptime_secs: None,
            bfd: bfd.map(str::to_owned),
            prefixes: 0,
        };
        let cases: Vec<(Vec<SessionView>, Vec<SessionView>, Vec<&str>)> = vec![
            (vec![], vec![s("Active", None)], vec!["session to 198.51.100.1 Down -> Active"]),
            (vec![s("Active", None)], vec![s("Active", None)], vec![]),
            (
                vec![s("Active", Some("Down"))],
                vec![s("Established", Some("Up"))],
                vec!["session to 198.51.100.1 Active -> Established, BFD Down -> Up"],
            ),
            (
                vec![s("Established", Some("Up"))],
                vec![s("Established", Some("Down"))],
                vec!["session to 198.51.100.1 Established -> Established, BFD Up -> Down"],
            ),
            (vec![s("Established", Some("Up"))], vec![s("Established", Some("Up"))], vec![]),
        ];
        for (before, after, want) in cases {
            assert_eq!(session_changes(&before, &after), want, "{before:?} -> {after:?}");
        }
    }
}
