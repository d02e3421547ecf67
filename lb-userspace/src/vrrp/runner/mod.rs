//! The VRRP engine: one tokio task per `vrrp_instance` owning its [`Instance`] state machine,
//! fed with its events (startup, adverts, timers, tracking, sync-group peers, shutdown) and
//! carrying out its actions (adverts, VIPs, gratuitous ARPs, notify scripts).
//!
//! Files: `plan` (config → per-instance plan, no host access), `start` (wiring at start-up),
//! `instance` (an instance's task), `receive` (sockets → instances by VRID), `rebind` (sockets
//! follow their interface), `group` (sync groups); this file holds the engine's handle and hooks.
//!
//! ```text
//!   raw socket per (interface, family) ──parse, route by VRID──▶ instance task ◀── tracker
//!                                                                   │  ▲
//!                        watch<VrrpStatus> ◀── publish ─────────────┤  └── sync-group task
//!                        VIPs (rtnetlink), GARP (AF_PACKET), notify ◀┘
//! ```
//!
//! A state change is published (status watch, [`Hooks::on_state`] and, becoming MASTER,
//! [`Hooks::before_vips`]) before any of its actions is carried out: the agent switches the
//! dataplane while the advert goes out, and the VIPs are added once it is live. The order on the wire and host is keepalived's: advert, VIPs,
//! gratuitous ARPs, notify scripts.
//!
//! An interface deleted and created again under the same name is another interface: a raw
//! socket bound to the old one lost its multicast membership (and, with a new index, hears
//! nothing at all). The tracker identifies every interface by index and the deletions seen of
//! its name ([`LinkId`]: the kernel may give the new one the same index); a rebind task closes
//! the sockets of an interface that is gone (its instances are in FAULT meanwhile: their own
//! interface is tracked) and opens them again, with the multicast membership, when it is back
//! ([`rebind`] decides). The primary address is the one read at start: the recreated interface
//! is expected to carry the same addresses.

mod group;
mod instance;
mod plan;
mod rebind;
mod receive;
mod start;
#[cfg(test)]
mod tests;

use group::{MemberChange, run_group};
use instance::{InstanceTask, NotifyScripts, Vips, Wire};
use plan::{Plan, initial_status, plan, settings};
use rebind::{Bound, rebind_loop};
pub use rebind::{Rebind, rebind};
use receive::{Inbound, receive_loop};

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, anyhow, bail};
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};

use super::{
    announce,
    machine::{Action, Event, Garp, IgnoreReason, Instance, Settings, State},
    notify::{self, Notifier},
    packet::{self, Auth, Expect, Family, IpMeta, PacketError, Received, Version},
    socket::{RECV_BUFFER, VrrpSocket},
    status::{Counters, InstanceStatus, VrrpStatus, ignore_reason},
    track::{self, InstanceTracking, LinkId, TrackStatus, Tracker},
    vip::{self, AddressOps as _},
};
use crate::{
    config::vrrp::{VirtualAddress, VrrpConfig, VrrpInstance, VrrpSyncGroup},
    net::iface,
};

/// How long becoming MASTER waits for the embedding program's dataplane (see
/// [`Hooks::before_vips`]) before adding the VIPs anyway.
pub const DATAPLANE_WAIT: Duration = Duration::from_secs(10);
/// Rejected adverts, send errors and the like are logged at most this often per reason.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Adverts queued per instance before new ones are dropped (and counted).
const INBOUND_QUEUE: usize = 1024;
/// A socket that could not be opened again is retried this often.
const REOPEN_RETRY: Duration = Duration::from_secs(1);

/// The current socket of one (interface, family): `None` while the interface is missing.
type SocketSlot = watch::Receiver<Option<Arc<VrrpSocket>>>;

/// A callback on every state change (see [`Hooks::on_state`]).
pub type OnState = Arc<dyn Fn(&StateChange) + Send + Sync>;

/// What the embedding program plugs into the engine.
#[derive(Clone)]
pub struct Hooks {
    /// Called by the instance's task the moment it changes state, before the VIPs are added or
    /// removed, the gratuitous ARPs sent and the notify scripts run. Keep it quick (flip a flag,
    /// send on a channel): it delays the failover by its own duration.
    pub on_state: Option<OnState>,
    /// Becoming MASTER: a [`MasterRequest`] is sent here when the state is published, and the
    /// VIPs are added (then the gratuitous ARPs sent) only once it is answered, dropped, or
    /// [`DATAPLANE_WAIT`] has passed. The advert goes out meanwhile. The agent makes the
    /// instance's services live in between, so no packet for a VIP reaches the kernel first.
    pub before_vips: Option<mpsc::UnboundedSender<MasterRequest>>,
    /// Time limit of each notify script.
    pub notify_timeout: Duration,
    /// Add and remove the VIPs on the interfaces (keepalived's job). Off, the engine only
    /// reports the states.
    pub manage_vips: bool,
    /// Instances the previous agent was MASTER of, whose VIPs it left on the interface (a
    /// hitless restart with an adopted dataplane): they start with [`Event::Resume`] instead of
    /// [`Event::Startup`], and their VIPs are not removed as stale.
    pub resume: Vec<String>,
}

impl Default for Hooks {
    fn default() -> Hooks {
        Hooks {
            on_state: None,
            before_vips: None,
            notify_timeout: notify::DEFAULT_NOTIFY_TIMEOUT,
            manage_vips: true,
            resume: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("on_state", &self.on_state.as_ref().map(|_| "Fn"))
            .field("before_vips", &self.before_vips.is_some())
            .field("notify_timeout", &self.notify_timeout)
            .field("manage_vips", &self.manage_vips)
            .field("resume", &self.resume)
            .finish()
    }
}

/// One state change, as given to [`Hooks::on_state`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    /// Index in [`VrrpStatus::instances`] (config order).
    pub index: usize,
    pub instance: String,
    pub from: State,
    pub to: State,
    /// The instance's VIPs.
    pub vips: Vec<IpAddr>,
    /// When the event that caused it was handled.
    pub at: Instant,
}

/// An instance is becoming MASTER: answer `done` when its services are live (see
/// [`Hooks::before_vips`]).
#[derive(Debug)]
pub struct MasterRequest {
    pub change: StateChange,
    pub done: oneshot::Sender<()>,
}

/// The running engine. [`VrrpEngine::stop`] hands over gracefully; dropping it without `stop`
/// lets the instance tasks shut down the same way on their own (if the runtime keeps running).
pub struct VrrpEngine {
    status: Arc<watch::Sender<VrrpStatus>>,
    instances: Vec<(mpsc::UnboundedSender<Cmd>, JoinHandle<()>)>,
    background: Vec<JoinHandle<()>>,
    stop_limit: Duration,
}

impl VrrpEngine {
    /// Starts every instance of `vrrp` in the current network namespace: removes stale VIPs,
    /// opens the sockets, starts tracking and the instance tasks (each starts in BACKUP, or
    /// MASTER at once as address owner). Nothing is left running on error.
    pub async fn start(vrrp: &VrrpConfig, hooks: Hooks) -> Result<VrrpEngine> {
        let plans = plan(vrrp)?;
        if plans.is_empty() {
            return Ok(VrrpEngine {
                status: Arc::new(watch::Sender::new(VrrpStatus::default())),
                instances: Vec::new(),
                background: Vec::new(),
                stop_limit: Duration::ZERO,
            });
        }
        let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
        let mut background = vec![tokio::spawn(conn)];
        let started = start::wire(vrrp, &plans, hooks, handle, &mut background).await;
        if started.is_err() {
            background.iter().rev().for_each(JoinHandle::abort);
        }
        started
    }

    /// A receiver of the engine's status; `changed()` fires on state, master, priority and timer
    /// changes (counters update silently).
    pub fn status(&self) -> watch::Receiver<VrrpStatus> {
        self.status.subscribe()
    }

    /// The current status.
    pub fn snapshot(&self) -> VrrpStatus {
        self.status.borrow().clone()
    }

    /// Stops every instance the way keepalived does on SIGTERM: a MASTER sends a priority-0
    /// advert (its backup takes over after Skew_Time instead of Master_Down_Interval), the VIPs
    /// are removed and `notify_stop` / `notify ... STOP` run (waited for, up to the notify
    /// timeout).
    pub async fn stop(mut self) {
        for (tx, _) in &self.instances {
            let _ = tx.send(Cmd::Shutdown);
        }
        for (_, task) in std::mem::take(&mut self.instances) {
            let abort = task.abort_handle();
            if tokio::time::timeout(self.stop_limit, task).await.is_err() {
                tracing::warn!("a VRRP instance did not stop within {:?}", self.stop_limit);
                abort.abort();
            }
        }
        // Reverse order: loops before the netlink connections they use.
        for t in self.background.drain(..).rev() {
            t.abort();
        }
    }
}

impl VrrpEngine {
    /// Ends the engine leaving every instance as it is: a MASTER keeps its VIPs and sends no
    /// priority-0 advert, so its backups wait out their Master_Down_Interval. SIGQUIT's
    /// hand-over to the next agent, which resumes the masterships (agent/resume.rs).
    pub async fn abandon(mut self) {
        let instances = std::mem::take(&mut self.instances);
        for (_, task) in &instances {
            task.abort();
        }
        // The command channels stay open until the tasks are gone: a closed one would make a
        // task that is running right now shut down (advert with priority 0, VIPs removed).
        for (tx, task) in instances {
            let _ = task.await;
            drop(tx);
        }
        for t in self.background.drain(..).rev() {
            t.abort();
        }
    }
}

impl Drop for VrrpEngine {
    fn drop(&mut self) {
        // Instance tasks see their command channel close and shut down gracefully on their own.
        for t in self.background.iter().rev() {
            t.abort();
        }
    }
}

/// Commands to an instance task.
#[derive(Debug)]
pub(super) enum Cmd {
    SyncGroup(State),
    Shutdown,
}

/// Logs at most once per `every` per key, counting what was held back.
pub(crate) struct RateLimit {
    every: Duration,
    last: HashMap<&'static str, (Instant, u64)>,
}

impl RateLimit {
    pub(crate) fn new(every: Duration) -> RateLimit {
        RateLimit { every, last: HashMap::new() }
    }

    /// `Some(suppressed since the last logged one)` when this one may be logged.
    pub(crate) fn allow(&mut self, key: &'static str, now: Instant) -> Option<u64> {
        match self.last.get_mut(key) {
            Some((at, held)) if now.duration_since(*at) < self.every => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = *held;
                *at = now;
                *held = 0;
                Some(n)
            }
            None => {
                self.last.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}
