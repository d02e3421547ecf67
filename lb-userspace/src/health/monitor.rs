//! The health-check runner: one tokio task per (real, check), scheduling itself by its
//! [`CheckPolicy`], combining each real's checks, keeping every service's quorum and publishing a
//! [`HealthSnapshot`] through a `watch` channel (the agent coalesces bursts of changes).
//!
//! Attempts share a semaphore, so thousands of reals do not open thousands of sockets at once;
//! every attempt is bounded by its own timeout, so a hung real holds one permit for at most that
//! long and never delays the others' transitions beyond it. Scripts (notify, quorum) run on their
//! own tasks with a timeout: a slow script never delays a check.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use foldhash::{HashMap, HashMapExt as _, HashSet};
use tokio::{
    runtime::Handle,
    sync::{Semaphore, watch},
    task::AbortHandle,
};

use super::{
    check::{self, Outcome},
    policy::CheckPolicy,
    probe::{Probe, probes},
    quorum,
    random::random_u64,
    script,
    state::{HealthSnapshot, RealHealth, RealId},
};
use crate::config::{
    Config, VirtualServerKey,
    health::{HealthCheck, RealHealth as RealChecks, ServiceHealth},
};

/// Check attempts allowed to run at once when the caller has no better number.
pub const DEFAULT_CONCURRENCY: usize = 256;

/// How long a notify or quorum script may run before it is killed. keepalived has no limit; a
/// hung script should not pile up processes at every flap.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// When an attempt the agent could not make is tried again: `delay_before_retry`, within these.
const NOT_RUN_RETRY_MIN: Duration = Duration::from_millis(100);
const NOT_RUN_RETRY_MAX: Duration = Duration::from_secs(1);

/// Message of a check that has not finished an attempt yet.
const NOT_CHECKED: &str = "not checked yet";

/// One real server as the monitor sees it. Pass every real of every service, also those without
/// checks: they are always up and count towards their service's quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitoredReal {
    /// The service, and the real's address and port: the checks' default target.
    pub id: RealId,
    /// The configured weight: what the real adds to the quorum while up, unless a
    /// `misc_dynamic` check set another.
    pub weight: u32,
    pub checks: RealChecks,
    /// The service's settings (`delay_loop`, `alpha`, quorum, ...); the same for all its reals.
    pub service: ServiceHealth,
    /// How its checks through the VIP go (`through_vip`); `None` without such checks.
    pub probe: Option<Probe>,
}

impl MonitoredReal {
    fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.id.1, self.id.2)
    }

    /// Same checks on the same target: a reload keeps the running tasks and their state.
    fn same_checks(&self, other: &MonitoredReal) -> bool {
        let strip = |c: &HealthCheck| HealthCheck { location: Default::default(), ..c.clone() };
        self.id == other.id
            && self.probe == other.probe
            && self.service.delay_loop == other.service.delay_loop
            && self.checks.checks.len() == other.checks.checks.len()
            && self
                .checks
                .checks
                .iter()
                .zip(&other.checks.checks)
                .all(|(a, b)| strip(a) == strip(b))
    }
}

/// Every real server of `config` (sorry servers are never checked, as in keepalived).
pub fn monitored_reals(config: &Config) -> Vec<MonitoredReal> {
    let mut probes = probes(config);
    config
        .virtual_servers
        .iter()
        .flat_map(|vs| {
            let key = vs.key();
            vs.real_servers.iter().map(move |rs| (key, rs, vs))
        })
        .map(|(key, rs, vs)| {
            let id = (key, rs.address, rs.port);
            MonitoredReal {
                probe: probes.remove(&id),
                id,
                weight: rs.weight,
                checks: rs.health.clone(),
                service: vs.health.clone(),
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MonitorError {
    #[error("the health monitor must be started inside a tokio runtime")]
    NoRuntime,
}

/// Runs the health checks; dropping it stops them (without running any script).
pub struct HealthMonitor {
    shared: Arc<Shared>,
    /// An update running on its own thread ([`HealthMonitor::update_beside`]); every later
    /// update, and `stop`, waits for it first, so updates apply in order.
    pending: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct Shared {
    inner: Mutex<Inner>,
    tx: watch::Sender<HealthSnapshot>,
    permits: Semaphore,
    runtime: Handle,
    /// Attempts not run for lack of a resource of the agent's own (see [`Outcome::not_run`]).
    not_run: AtomicU64,
}

#[derive(Default)]
struct Inner {
    reals: HashMap<RealId, RealEntry>,
    /// Attempts by check and outcome, and their latencies (the metrics).
    stats: crate::control::proto::HealthChecksView,
    services: HashMap<VirtualServerKey, ServiceEntry>,
    next_generation: u64,
    stopped: bool,
}

struct RealEntry {
    spec: MonitoredReal,
    /// Tells this entry's tasks from those of an entry it replaced.
    generation: u64,
    checks: Vec<CheckSlot>,
    tasks: Vec<AbortHandle>,
    /// All checks up.
    up: bool,
    dynamic_weight: Option<u32>,
    latency: Option<Duration>,
}

struct CheckSlot {
    up: bool,
    /// `NAME: message` of its last attempt.
    message: String,
    /// Its last attempt could not be made (logged once until one is made again).
    not_run: bool,
}

struct ServiceEntry {
    health: ServiceHealth,
    quorum_up: bool,
}

impl RealEntry {
    fn effective_weight(&self) -> u32 {
        self.dynamic_weight.unwrap_or(self.spec.weight)
    }

    /// What it adds to its service's quorum: its weight while up.
    fn quorum_weight(&self) -> u64 {
        if self.up { u64::from(self.effective_weight()) } else { 0 }
    }

    /// The real's message: its down checks' messages while down, all checks' while up. Stable
    /// across identical attempts, so an unchanged real does not wake the agent.
    fn message(&self) -> String {
        let parts: Vec<&str> =
            self.checks.iter().filter(|c| self.up || !c.up).map(|c| c.message.as_str()).collect();
        parts.join("; ")
    }

    fn health(&self) -> RealHealth {
        RealHealth {
            up: self.up,
            weight: self.dynamic_weight,
            latency: self.latency,
            message: self.message(),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough data (each update is a few
        // field writes); keep checking rather than poisoning the whole monitor.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn_script(&self, command: Option<&String>, what: String) {
        if let Some(command) = command {
            self.runtime.spawn(script::run_logged(command.clone(), SCRIPT_TIMEOUT, what));
        }
    }

    /// Starts the tasks of a new entry for `spec`.
    fn start_real(self: &Arc<Self>, inner: &mut Inner, spec: MonitoredReal) {
        let generation = inner.next_generation;
        inner.next_generation += 1;
        let up = !spec.service.alpha || spec.checks.checks.is_empty();
        let checks = spec
            .checks
            .checks
            .iter()
            .map(|c| CheckSlot {
                up,
                message: format!("{}: {NOT_CHECKED}", c.kind.name()),
                not_run: false,
            })
            .collect();
        let tasks = spec
            .checks
            .checks
            .iter()
            .enumerate()
            .map(|(index, check)| {
                let task = check_loop(
                    self.clone(),
                    spec.id,
                    generation,
                    index,
                    check.clone(),
                    spec.service.clone(),
                    spec.probe.clone(),
                );
                self.runtime.spawn(task).abort_handle()
            })
            .collect();
        if !spec.checks.checks.is_empty() {
            tracing::debug!(service = %spec.id.0, real = %spec.addr(), "health checks started");
        }
        let entry =
            RealEntry { spec, generation, checks, tasks, up, dynamic_weight: None, latency: None };
        inner.reals.insert(entry.spec.id, entry);
    }

    /// Re-evaluates `key`'s quorum; runs its script and returns the new state if it changed.
    fn evaluate_quorum(&self, inner: &mut Inner, key: VirtualServerKey) -> Option<bool> {
        let sum: u64 =
            inner.reals.values().filter(|e| e.spec.id.0 == key).map(RealEntry::quorum_weight).sum();
        self.evaluate_quorum_at(inner, key, sum)
    }

    /// [`Self::evaluate_quorum`] given the weight of the service's up reals (`sum`).
    fn evaluate_quorum_at(
        &self,
        inner: &mut Inner,
        key: VirtualServerKey,
        sum: u64,
    ) -> Option<bool> {
        let service = inner.services.get_mut(&key)?;
        let (q, h) = (service.health.quorum, service.health.hysteresis);
        let up = quorum::evaluate(service.quorum_up, sum, q, h);
        if up == service.quorum_up {
            return None;
        }
        service.quorum_up = up;
        if up {
            tracing::info!(service = %key, weight = sum, quorum = q, hysteresis = h, "quorum gained");
            self.spawn_script(service.health.quorum_up.as_ref(), format!("quorum_up of {key}"));
        } else {
            tracing::warn!(service = %key, weight = sum, quorum = q, hysteresis = h, "quorum lost");
            self.spawn_script(service.health.quorum_down.as_ref(), format!("quorum_down of {key}"));
        }
        Some(up)
    }

    /// Records an attempt of check `index` of real `id` that the agent could not make: counted,
    /// logged once, and nothing else changes (the real keeps its state and message).
    fn skipped(&self, id: &RealId, generation: u64, index: usize, outcome: &Outcome) {
        self.not_run.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        let Some(entry) = inner.reals.get_mut(id).filter(|e| e.generation == generation) else {
            return;
        };
        let addr = entry.spec.addr();
        let name = entry.spec.checks.checks.get(index).map(|c| c.kind.name());
        if let Some(slot) = entry.checks.get_mut(index)
            && !slot.not_run
        {
            slot.not_run = true;
            tracing::warn!(service = %id.0, real = %addr, check = name.unwrap_or_default(),
                "{}; the real keeps its state until the check runs again", outcome.message);
        }
    }

    /// Records the result of one attempt of check `index` of real `id`.
    fn report(&self, id: &RealId, generation: u64, index: usize, check_up: bool, outcome: Outcome) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.stopped {
            return; // an attempt that finished while the monitor stopped
        }
        let Some(entry) = inner.reals.get_mut(id).filter(|e| e.generation == generation) else {
            return; // replaced or removed while the attempt ran
        };
        let Some(check) = entry.spec.checks.checks.get(index) else { return };
        let name = check.kind.name();
        inner.stats.record(name, outcome.ok, outcome.latency);
        let addr = entry.spec.addr();
        if let Some(slot) = entry.checks.get_mut(index) {
            if slot.up != check_up {
                tracing::debug!(service = %id.0, real = %addr, check = name, up = check_up,
                    "check {}: {}", if check_up { "passes" } else { "fails" }, outcome.message);
            }
            if slot.not_run {
                tracing::info!(service = %id.0, real = %addr, check = name, "check runs again");
            }
            slot.up = check_up;
            slot.not_run = false;
            slot.message = format!("{name}: {}", outcome.message);
        }
        let old_weight = entry.effective_weight();
        if outcome.ok {
            entry.latency = Some(outcome.latency);
            if outcome.weight.is_some() {
                entry.dynamic_weight = outcome.weight;
            }
        }
        let was_up = entry.up;
        entry.up = entry.checks.iter().all(|c| c.up);
        if entry.up != was_up {
            let message = entry.message();
            if entry.up {
                tracing::info!(service = %id.0, real = %addr, "real server up: {message}");
                self.spawn_script(
                    entry.spec.checks.notify_up.as_ref(),
                    format!("notify_up of {addr}"),
                );
            } else {
                tracing::warn!(service = %id.0, real = %addr, "real server down: {message}");
                self.spawn_script(
                    entry.spec.checks.notify_down.as_ref(),
                    format!("notify_down of {addr}"),
                );
            }
        }
        let health = entry.health();
        let weighs_differently = entry.up != was_up || entry.effective_weight() != old_weight;
        let quorum = if weighs_differently { self.evaluate_quorum(inner, id.0) } else { None };
        self.tx.send_if_modified(|snapshot| {
            let mut significant = match snapshot.reals.get(id) {
                Some(old) => !same_but_latency(old, &health),
                None => true,
            };
            snapshot.reals.insert(*id, health);
            if let Some(up) = quorum {
                significant |= set_quorum_lost(snapshot, id.0, !up);
            }
            significant
        });
    }
}

/// Equal apart from the latency, which changes at every attempt and is not worth a wake-up.
fn same_but_latency(a: &RealHealth, b: &RealHealth) -> bool {
    a.up == b.up && a.weight == b.weight && a.message == b.message
}

fn set_quorum_lost(snapshot: &mut HealthSnapshot, key: VirtualServerKey, lost: bool) -> bool {
    if lost { snapshot.quorum_lost.insert(key) } else { snapshot.quorum_lost.remove(&key) }
}

/// Runs check `index` of a real for as long as the task lives.
async fn check_loop(
    shared: Arc<Shared>,
    id: RealId,
    generation: u64,
    index: usize,
    check: HealthCheck,
    service: ServiceHealth,
    probe: Option<Probe>,
) {
    let mut policy = CheckPolicy::new(&check, &service);
    let mut next = policy.first_run(Instant::now(), random_u64());
    let limit = check::attempt_timeout(&check) + check::TIMEOUT_GRACE;
    loop {
        tokio::time::sleep_until(next.into()).await;
        let mut outcome = {
            let Ok(_permit) = shared.permits.acquire().await else {
                return; // closed: the monitor stopped
            };
            let started = Instant::now();
            match tokio::time::timeout(limit, check::run(&check, id.1, id.2, probe.as_ref())).await
            {
                Ok(outcome) => outcome,
                Err(_) => Outcome::down(format!("no result within {limit:?}"), started),
            }
        };
        if outcome.not_run {
            // Nothing learnt about the real: its policy does not move; try again soon.
            shared.skipped(&id, generation, index, &outcome);
            next = Instant::now()
                + check.delay_before_retry.clamp(NOT_RUN_RETRY_MIN, NOT_RUN_RETRY_MAX);
            continue;
        }
        let decision = policy.on_result(outcome.ok, Instant::now());
        if !outcome.ok && policy.is_up() {
            // A failure the retries may still absorb: say so, the real is not down (yet).
            let retry = policy.state().failures;
            outcome.message = format!("{} (retry {retry} of {})", outcome.message, check.retry);
        }
        shared.report(&id, generation, index, policy.is_up(), outcome);
        next = decision.next_run;
    }
}

impl HealthMonitor {
    /// Starts checking `reals`, with at most `concurrency` attempts at once (at least 1).
    ///
    /// # Errors
    /// [`MonitorError::NoRuntime`] when called outside a tokio runtime.
    pub fn start(reals: Vec<MonitoredReal>, concurrency: usize) -> Result<Self, MonitorError> {
        let runtime = Handle::try_current().map_err(|_| MonitorError::NoRuntime)?;
        let (tx, _) = watch::channel(HealthSnapshot::default());
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            tx,
            permits: Semaphore::new(concurrency.clamp(1, Semaphore::MAX_PERMITS)),
            runtime,
            not_run: AtomicU64::new(0),
        });
        let monitor = HealthMonitor { shared, pending: Mutex::new(None) };
        monitor.update(reals);
        Ok(monitor)
    }

    /// Receives every significant change of the snapshot (up/down, weight, message, quorum);
    /// the latest latencies are in it too but do not wake receivers by themselves.
    pub fn subscribe(&self) -> watch::Receiver<HealthSnapshot> {
        self.shared.tx.subscribe()
    }

    /// Check attempts not run so far for lack of a resource here (they changed nothing).
    pub fn checks_not_run(&self) -> u64 {
        self.shared.not_run.load(Ordering::Relaxed)
    }

    /// Attempts by check and outcome, and their latencies, so far.
    pub fn check_stats(&self) -> crate::control::proto::HealthChecksView {
        self.shared.lock().stats.clone()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> HealthSnapshot {
        self.shared.tx.borrow().clone()
    }

    /// Applies a reloaded configuration. Reals with the same checks on the same target (and
    /// the same `delay_loop`) keep their state and running tasks, with weights, scripts and
    /// quorum settings taken from `reals`; removed reals stop; new or changed ones start afresh.
    pub fn update(&self, reals: Vec<MonitoredReal>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        settle(pending.take());
        update(&self.shared, reals);
    }

    /// [`HealthMonitor::update`] on a thread of its own, for a reload: its reply waits for the
    /// dataplane, not for the monitor's bookkeeping of 10,000 reals (~10 ms at 1,000 services).
    /// Checks of new reals start a few milliseconds later; updates still apply in order.
    pub fn update_beside(&self, reals: Vec<MonitoredReal>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        settle(pending.take());
        // Handed over through a slot: a thread that cannot start leaves the reals here.
        let slot = Arc::new(Mutex::new(Some(reals)));
        let (theirs, shared) = (slot.clone(), self.shared.clone());
        let beside = std::thread::Builder::new().name("lb-health-update".into()).spawn(move || {
            let reals = theirs.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(reals) = reals {
                update(&shared, reals);
            }
        });
        match beside {
            Ok(thread) => *pending = Some(thread),
            Err(_) => {
                let reals = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(reals) = reals {
                    update(&self.shared, reals);
                }
            }
        }
    }

    /// The reals being monitored, in order.
    #[cfg(test)]
    pub fn real_ids(&self) -> Vec<RealId> {
        let mut ids: Vec<RealId> = self.shared.lock().reals.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Waits for an update running beside (see [`HealthMonitor::update_beside`]).
    pub fn settle(&self) {
        settle(self.pending.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

/// Waits for `thread`, an update beside; its panic is the caller's.
fn settle(thread: Option<std::thread::JoinHandle<()>>) {
    if let Some(thread) = thread {
        thread.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    }
}

/// [`HealthMonitor::update`] itself.
fn update(shared: &Arc<Shared>, reals: Vec<MonitoredReal>) {
    let mut guard = shared.lock();
    let inner = &mut *guard;
    if inner.stopped {
        return;
    }
    let mut wanted: HashMap<RealId, MonitoredReal> = reals.into_iter().map(|r| (r.id, r)).collect();

    let old_ids: Vec<RealId> = inner.reals.keys().copied().collect();
    for id in old_ids {
        // Kept reals take their new settings by move (no copy of 10,000 specs).
        let new = match (inner.reals.get_mut(&id), wanted.remove(&id)) {
            (Some(entry), Some(new)) if entry.spec.same_checks(&new) => {
                entry.spec = new;
                continue;
            }
            (_, new) => new,
        };
        if let Some(new) = new {
            wanted.insert(id, new);
        }
        if let Some(entry) = inner.reals.remove(&id) {
            entry.tasks.iter().for_each(AbortHandle::abort);
            if !entry.checks.is_empty() {
                tracing::debug!(service = %id.0, real = %entry.spec.addr(), "health checks stopped");
            }
        }
    }
    for spec in wanted.into_values() {
        shared.start_real(inner, spec);
    }

    let mut services: HashMap<VirtualServerKey, ServiceEntry> = HashMap::new();
    for entry in inner.reals.values() {
        let key = entry.spec.id.0;
        services.entry(key).or_insert_with(|| ServiceEntry {
            health: entry.spec.service.clone(),
            quorum_up: inner.services.get(&key).map_or(quorum::INITIAL, |s| s.quorum_up),
        });
    }
    inner.services = services;
    // The up weight of every service in one pass over the reals (not one pass per service:
    // 1,000 services of 10 reals made that 10 M visits per reload).
    let mut sums: HashMap<VirtualServerKey, u64> =
        inner.services.keys().map(|key| (*key, 0)).collect();
    for entry in inner.reals.values() {
        if let Some(sum) = sums.get_mut(&entry.spec.id.0) {
            *sum += entry.quorum_weight();
        }
    }
    for (key, sum) in sums {
        shared.evaluate_quorum_at(inner, key, sum);
    }

    let snapshot = HealthSnapshot {
        reals: inner
            .reals
            .iter()
            .filter(|(_, e)| !e.checks.is_empty())
            .map(|(id, e)| (*id, e.health()))
            .collect(),
        quorum_lost: inner
            .services
            .iter()
            .filter(|(_, s)| !s.quorum_up)
            .map(|(key, _)| *key)
            .collect::<HashSet<_>>(),
    };
    shared.tx.send_if_modified(|old| {
        let significant = old.quorum_lost != snapshot.quorum_lost
            || old.reals.len() != snapshot.reals.len()
            || snapshot
                .reals
                .iter()
                .any(|(id, new)| old.reals.get(id).is_none_or(|old| !same_but_latency(old, new)));
        *old = snapshot;
        significant
    });
}

impl HealthMonitor {
    /// Stops every check, then runs `quorum_down` for the services with `omega` whose quorum was
    /// up (keepalived does so on shutdown) and waits for those scripts. Later calls do nothing.
    pub async fn stop(&self) {
        let scripts: Vec<_> = {
            let mut inner = self.shared.lock();
            if inner.stopped {
                return;
            }
            inner.stopped = true;
            self.shared.permits.close();
            for entry in inner.reals.values() {
                entry.tasks.iter().for_each(AbortHandle::abort);
            }
            inner
                .services
                .iter()
                .filter(|(_, s)| s.health.omega && s.quorum_up)
                .filter_map(|(key, s)| {
                    let command = s.health.quorum_down.clone()?;
                    Some(script::run_logged(
                        command,
                        SCRIPT_TIMEOUT,
                        format!("quorum_down of {key}"),
                    ))
                })
                .collect()
        };
        futures::future::join_all(scripts).await;
    }
}

impl Drop for HealthMonitor {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        inner.stopped = true;
        for entry in inner.reals.values() {
            entry.tasks.iter().for_each(AbortHandle::abort);
        }
    }
}

#[cfg(test)]
mod tests;
