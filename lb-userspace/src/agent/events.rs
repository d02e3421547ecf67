//! The agent's event loop: signals, VRRP, health and the neighbour table, each handed to one
//! method that ends in a reconcile (`reconcile.rs`).

use std::collections::HashSet;

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::{mpsc, watch},
};

use super::*;
use crate::vrrp::MasterRequest;

/// Why the event loop ended.
pub(super) enum Exit {
    /// SIGTERM/SIGINT: stop forwarding and clean up.
    Stop,
    /// SIGQUIT with a pinned dataplane: exit, leaving forwarding to the next agent.
    Handover,
}

/// The inputs the event loop waits on besides the signals.
pub(super) struct Sources {
    pub(super) health: watch::Receiver<HealthSnapshot>,
    /// The VRRP engine's status: every state change.
    pub(super) vrrp: Option<watch::Receiver<VrrpStatus>>,
    /// The VRRP engine's requests to make services live before an instance adds its VIPs.
    pub(super) masters: Option<mpsc::UnboundedReceiver<MasterRequest>>,
}

/// What the event loop keeps between events.
struct Events<'a> {
    shared: &'a Arc<Mutex<Shared>>,
    handle: &'a rtnetlink::Handle,
    tick: tokio::time::Interval,
    last_probe: Instant,
    /// VRRP instances in FAULT, last we heard.
    faulted: HashSet<String>,
}

/// Waits on the signals and inputs; each arm hands its event to one method below.
pub(super) async fn event_loop(
    shared: &Arc<Mutex<Shared>>,
    reloader: &Arc<Reloader>,
    handle: &rtnetlink::Handle,
    sources: Sources,
    signals: Signals,
    runtime_dir: &Path,
) -> anyhow::Result<Exit> {
    let Signals { mut quit, mut term, mut int, mut hup, mut usr1, mut usr2 } = signals;
    let Sources { mut health, mut vrrp, mut masters } = sources;
    let mut events = Events {
        shared,
        handle,
        tick: tokio::time::interval(NEIGH_REFRESH),
        last_probe: Instant::now(),
        faulted: HashSet::new(),
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); return Ok(Exit::Stop); }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); return Ok(Exit::Stop); }
            _ = quit.recv() => {
                if lock(shared).pinned {
                    return Ok(Exit::Handover);
                }
                tracing::warn!("SIGQUIT without --pin-dir: stopping (nothing could be handed over)");
                return Ok(Exit::Stop);
            }
            request = next(&mut masters) => {
                // The instance's MASTER state is published before the request: the status
                // read below has it. The answer lets the engine add the VIPs.
                if let (Some(request), Some(rx)) = (request, vrrp.as_mut()) {
                    let status = rx.borrow_and_update().clone();
                    events.vrrp(status, Some(&request.change.instance)).await;
                    let _ = request.done.send(());
                } else {
                    masters = None;
                }
            }
            changed = changed(&mut vrrp) => {
                match (changed, vrrp.as_mut()) {
                    (Ok(()), Some(rx)) => {
                        let status = rx.borrow_and_update().clone();
                        events.vrrp(status, None).await;
                    }
                    _ => vrrp = None,
                }
            }
            changed = health.changed() => {
                if changed.is_ok() {
                    let snapshot = health.borrow_and_update().clone();
                    events.health(snapshot).await;
                }
            }
            _ = usr1.recv() => dump_on_signal(shared, runtime_dir, Dump::Data).await,
            _ = usr2.recv() => dump_on_signal(shared, runtime_dir, Dump::Stats).await,
            _ = hup.recv() => {
                let (s, r) = (shared.clone(), reloader.clone());
                // Not awaited: health and VRRP changes go on while the file is read.
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = r.reload(&s, Turn::Wait) {
                        tracing::error!(error = %format!("{e:#}"), "SIGHUP: reload failed, previous configuration kept");
                    }
                });
            }
            _ = events.tick.tick() => events.neighbours().await,
        }
    }
}

/// The next request on an open channel; never, once there is none.
async fn next<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx.as_mut() {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next change of a watched value; never, once there is none.
async fn changed<T>(rx: &mut Option<watch::Receiver<T>>) -> Result<(), watch::error::RecvError> {
    match rx.as_mut() {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

impl Events<'_> {
    /// A VRRP status: the one way VRRP state reaches the dataplane. `becoming` names the
    /// instance whose MASTER request this answers (the engine holds its VIPs until then).
    async fn vrrp(&mut self, status: VrrpStatus, becoming: Option<&str>) {
        let named = |state: VrrpState| -> Vec<String> {
            status.instances.iter().filter(|i| i.state == state).map(|i| i.name.clone()).collect()
        };
        // An instance out of FAULT: its interface may be a new one (deleted and created
        // again), so re-read interfaces and routes and resolve the reals now, not at the next
        // periodic probe.
        let in_fault: HashSet<String> = named(VrrpState::Fault).into_iter().collect();
        if self.faulted.iter().any(|n| !in_fault.contains(n)) {
            self.last_probe = Instant::now().checked_sub(REPROBE).unwrap_or(self.last_probe);
            self.tick.reset_immediately();
        }
        self.faulted = in_fault;
        let mut masters: HashSet<String> = named(VrrpState::Master).into_iter().collect();
        let unknown = named(VrrpState::Initialize);
        let s = self.shared.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let mut s = lock(&s);
            // Not started yet: a resumed instance stays MASTER until it says otherwise.
            masters.extend(unknown.into_iter().filter(|n| s.vrrp.masters.contains(n)));
            let changed = s.vrrp.masters != masters;
            s.vrrp = VrrpStates { masters };
            s.vrrp_status = Some(status);
            if changed { s.reconcile("VRRP state change").map(|()| true) } else { Ok(false) }
        })
        .await;
        let apply_us = started.elapsed().as_micros() as u64;
        match (result, becoming) {
            (Ok(Ok(true)), Some(instance)) => {
                tracing::info!(instance, apply_us, "dataplane up before the VIPs");
            }
            (Ok(Ok(true)), None) => tracing::info!(apply_us, "VRRP state change in the dataplane"),
            (Ok(Ok(false)), _) => {}
            (Ok(Err(e)), _) => tracing::error!(error = %format!("{e:#}"), "applying a VRRP change"),
            (Err(e), _) => tracing::error!(error = %e, "VRRP task failed"),
        }
    }

    /// A health transition.
    async fn health(&mut self, snapshot: HealthSnapshot) {
        let s = self.shared.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let mut s = lock(&s);
            // Time to get the agent lock: near zero unless something holds it long.
            let waited = started.elapsed();
            s.health = snapshot;
            s.reconcile("health change").map(|()| waited)
        })
        .await;
        match result {
            Ok(Ok(waited)) => tracing::info!(
                apply_us = started.elapsed().as_micros() as u64,
                lock_wait_us = waited.as_micros() as u64,
                "health change in the dataplane"
            ),
            Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "applying a health change"),
            Err(e) => tracing::error!(error = %e, "health task failed"),
        }
    }

    /// The periodic neighbour-table read (and, every few seconds while reals are unresolved,
    /// a re-read of routes and a provoked resolution).
    async fn neighbours(&mut self) {
        let (shared, handle) = (self.shared, self.handle);
        // `announce_delay` ends on its own.
        if lock(shared).bgp.as_ref().is_some_and(crate::bgp::agent::BgpAgent::waiting) {
            lock(shared).announce();
        }
        let neighbours = match neigh::dump(handle).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "reading the neighbour table");
                return;
            }
        };
        // Unresolved reals: look at their routes again (a link may have come up) and
        // provoke resolution, every few seconds.
        let reprobe = self.last_probe.elapsed() >= REPROBE && {
            let s = lock(shared);
            wanted_neighbours(&s.config, &s.facts)
                .iter()
                .any(|(i, _, a)| neighbours.get(*i, *a).is_none())
        };
        let mut routes = None;
        if reprobe {
            self.last_probe = Instant::now();
            let config = lock(shared).config.clone();
            match host_facts(handle, &config, &neighbours).await {
                Ok(f) => routes = Some(f),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "refreshing routes"),
            }
        }
        let mut s = lock(shared);
        if let Some(f) = routes {
            s.facts.interfaces = f.interfaces;
            s.facts.routes = f.routes;
        }
        let wanted = wanted_neighbours(&s.config, &s.facts);
        if reprobe {
            for (idx, name, addr) in &wanted {
                if neighbours.get(*idx, *addr).is_none() {
                    let _ = neigh::provoke(name, *addr);
                }
            }
        }
        // Only the entries we use matter; others churn all the time.
        let relevant = |n: &neigh::Neighbours| -> BTreeMap<(u32, IpAddr), String> {
            wanted
                .iter()
                .filter_map(|(i, _, a)| n.get(*i, *a).map(|m| ((*i, *a), m.to_string())))
                .collect()
        };
        if !reprobe && relevant(&neighbours) == relevant(&s.facts.neighbours) {
            return;
        }
        s.facts.neighbours = neighbours;
        if let Err(e) = s.reconcile("neighbour or route change") {
            tracing::error!(error = %format!("{e:#}"), "reconcile failed");
        }
    }
}

/// The signals the agent handles, registered at the start of `lb run`: from then on a signal is
/// queued for the event loop instead of taking its default action.
pub(super) struct Signals {
    quit: Signal,
    term: Signal,
    int: Signal,
    hup: Signal,
    /// keepalived's data dump and stats dump: files in the runtime directory.
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    pub(super) fn new() -> std::io::Result<Self> {
        let signals = Signals {
            quit: signal(SignalKind::quit())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        };
        // `main` holds these blocked until now (see `block_start_signals`); a signal that came
        // meanwhile is delivered to the handlers just installed.
        unblock_start_signals();
        Ok(signals)
    }

    /// The next stop signal's name (SIGQUIT too: during start-up there is nothing to hand over).
    pub(super) async fn stop(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.quit.recv() => "SIGQUIT",
        }
    }
}

/// The signals `lb run` handles.
const START_SIGNALS: [libc::c_int; 6] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2];

fn start_signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in START_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Keeps the signals `lb run` handles pending (not fatal) until its handlers are installed.
/// Call first thing, before any thread is started: threads inherit the mask.
pub fn block_start_signals() {
    let set = start_signal_set();
    // SAFETY: a valid set; changing this thread's mask only.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

fn unblock_start_signals() {
    let set = start_signal_set();
    // SAFETY: a valid set; changing this thread's mask only.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}

/// keepalived's SIGUSR1 and SIGUSR2 dumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dump {
    /// Configuration, desired state (backends as forwarded) and VRRP.
    Data,
    /// Status and counters.
    Stats,
}

impl Dump {
    fn signal(self) -> &'static str {
        match self {
            Dump::Data => "SIGUSR1",
            Dump::Stats => "SIGUSR2",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Dump::Data => "lb.data.json",
            Dump::Stats => "lb.stats.json",
        }
    }
}

impl Shared {
    /// The JSON of a dump, from the same views `lb backends` and `lb status` show.
    fn dump(&mut self, kind: Dump) -> Result<serde_json::Value, String> {
        let (backends, status) = self.views()?;
        let written_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let value = match kind {
            Dump::Data => serde_json::json!({
                "kind": "data",
                "pid": std::process::id(),
                "written_at": written_at,
                "config": self.config,
                "backends": backends,
                "vrrp": status.vrrp,
            }),
            Dump::Stats => serde_json::json!({
                "kind": "stats",
                "pid": std::process::id(),
                "written_at": written_at,
                "status": status,
                "backends": backends,
            }),
        };
        Ok(value)
    }
}

/// Writes `value` to `dir/name` whole: a reader never sees half a dump.
fn write_dump(dir: &Path, name: &str, value: &serde_json::Value) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// SIGUSR1/SIGUSR2: writes the dump and logs where; a failure is logged, never fatal.
async fn dump_on_signal(shared: &Arc<Mutex<Shared>>, dir: &Path, kind: Dump) {
    let (s, dir) = (shared.clone(), dir.to_owned());
    let result = tokio::task::spawn_blocking(move || {
        let value = lock(&s).dump(kind).map_err(std::io::Error::other)?;
        write_dump(&dir, kind.file_name(), &value)
    })
    .await;
    match result {
        Ok(Ok(path)) => tracing::info!(path = %path.display(), "{}: dump written", kind.signal()),
        Ok(Err(e)) => tracing::error!(error = %e, "{}: writing the dump", kind.signal()),
        Err(e) => tracing::error!(error = %e, "{}: dump task failed", kind.signal()),
    }
}
