//! The VRRP engine: one tokio task per `vrrp_instance` owning its [`Instance`] state machine,
//! fed with its events (startup, adverts, timers, tracking, sync-group peers, shutdown) and
//! carrying out its actions (adverts, VIPs, gratuitous ARPs, notify scripts).
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

/// What to do with the socket of an interface, from the interface it is bound to (`None`: no
/// socket) and the one of that name now (`None`: it does not exist).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rebind {
    Keep,
    /// The interface is gone: close the socket.
    Close,
    /// The interface is (back): open the socket on it.
    Open(LinkId),
}

/// See [`Rebind`].
pub fn rebind(bound: Option<LinkId>, now: Option<LinkId>) -> Rebind {
    match (bound, now) {
        (Some(b), Some(n)) if b == n => Rebind::Keep,
        (_, Some(n)) => Rebind::Open(n),
        (Some(_), None) => Rebind::Close,
        (None, None) => Rebind::Keep,
    }
}

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

/// Commands to an instance task.
#[derive(Debug)]
enum Cmd {
    SyncGroup(State),
    Shutdown,
}

/// From the receive loop to an instance.
#[derive(Debug)]
enum Inbound {
    /// Parsed; the instance applies its own [`Expect::check`].
    Advert { rx: Received, ip: IpMeta },
    /// Failed [`packet::parse`] (the VRID byte pointed at this instance).
    Rejected { error: PacketError, src: IpAddr },
}

/// A member's state or own-fault change, to its sync group's task.
#[derive(Debug)]
struct MemberChange {
    pos: usize,
    state: State,
    /// Its own tracked objects keep it in FAULT (not a sync-group peer).
    own_fault: bool,
    /// Caused by a sync-group command: not forwarded (the group already knows).
    from_sync: bool,
}

/// Everything the runner derives from one `vrrp_instance` before touching the host.
#[derive(Clone, Debug)]
struct Plan {
    cfg: VrrpInstance,
    family: Family,
    version: Version,
    advert_cs: u16,
    auth: Auth,
    tracking: InstanceTracking,
    /// (group index, position in the group).
    group: Option<(usize, usize)>,
}

/// Checks the VRRP config and derives each instance's plan (no host access).
fn plan(vrrp: &VrrpConfig) -> Result<Vec<Plan>> {
    let mut plans = Vec::new();
    let mut seen = HashMap::new();
    for (i, inst) in vrrp.instances.iter().enumerate() {
        let name = &inst.name;
        let version = match inst.version {
            2 => Version::V2,
            3 => Version::V3,
            v => bail!("vrrp_instance {name}: version {v} (must be 2 or 3)"),
        };
        let mut families = inst.virtual_ipaddress.iter().map(|v| Family::of(v.address));
        let family = match families.next() {
            Some(f) => {
                if families.any(|g| g != f) {
                    bail!("vrrp_instance {name}: virtual_ipaddress mixes IPv4 and IPv6");
                }
                f
            }
            None => inst
                .unicast_src_ip
                .or(inst.unicast_peer.first().copied())
                .map_or(Family::V4, Family::of),
        };
        if version == Version::V2 && family == Family::V6 {
            bail!("vrrp_instance {name}: VRRPv2 is IPv4 only; use version 3 for IPv6");
        }
        if let Some(prev) = seen.insert((inst.interface.clone(), family, inst.virtual_router_id), i)
        {
            bail!(
                "vrrp_instance {name}: virtual_router_id {} on {} ({family}) is already used by {}",
                inst.virtual_router_id,
                inst.interface,
                vrrp.instances[prev].name
            );
        }
        let advert_cs =
            u16::try_from(inst.advert_int.as_millis().div_ceil(10)).unwrap_or(u16::MAX).max(1);
        let auth = match (&inst.auth_pass, version) {
            (Some(p), Version::V2) => Auth::password(p.as_bytes()),
            _ => Auth::None,
        };
        // keepalived tracks the instance's own interface (weight 0) unless told otherwise.
        let mut interfaces = vec![(inst.interface.clone(), 0)];
        interfaces.extend(inst.track_interface.iter().map(|t| (t.name.clone(), t.weight)));
        let mut scripts = Vec::new();
        for ts in &inst.track_script {
            let idx = vrrp.scripts.iter().position(|s| s.name == ts.script).ok_or_else(|| {
                anyhow!("vrrp_instance {name}: track_script {} is not a vrrp_script", ts.script)
            })?;
            scripts.push((idx, ts.weight.unwrap_or(vrrp.scripts[idx].weight)));
        }
        plans.push(Plan {
            cfg: inst.clone(),
            family,
            version,
            advert_cs,
            auth,
            tracking: InstanceTracking { interfaces, scripts },
            group: None,
        });
    }
    for (g, group) in vrrp.sync_groups.iter().enumerate() {
        for (pos, member) in group.group.iter().enumerate() {
            let plan = plans.iter_mut().find(|p| &p.cfg.name == member).ok_or_else(|| {
                anyhow!("vrrp_sync_group {}: {member} is not a vrrp_instance", group.name)
            })?;
            if let Some((other, _)) = plan.group {
                bail!(
                    "vrrp_instance {member} is in two sync groups ({} and {})",
                    vrrp.sync_groups[other].name,
                    group.name
                );
            }
            plan.group = Some((g, pos));
        }
    }
    Ok(plans)
}

/// The machine's settings for a plan once the primary address is known.
fn settings(p: &Plan, primary: IpAddr) -> Settings {
    let c = &p.cfg;
    let mut s = Settings::new(c.virtual_router_id, p.version, c.priority, primary);
    s.family = p.family;
    s.advert_interval_cs = p.advert_cs;
    s.preempt = c.preempt;
    s.preempt_delay = c.preempt_delay;
    s.unicast_peers = c.unicast_peer.clone();
    s.garp = Garp { repeat: c.garp_master_repeat, delay: c.garp_master_refresh_delay };
    s.lower_prio_no_advert = c.lower_prio_no_advert;
    s.skip_check_adv_addr = c.skip_check_adv_addr;
    s
}

fn initial_status(p: &Plan, machine: &Instance, primary: IpAddr) -> InstanceStatus {
    InstanceStatus {
        name: p.cfg.name.clone(),
        interface: p.cfg.interface.clone(),
        vrid: p.cfg.virtual_router_id,
        version: p.version.number(),
        vips: p.cfg.virtual_ipaddress.iter().map(|v| v.address).collect(),
        primary_address: primary,
        state: State::Initialize,
        base_priority: p.cfg.priority,
        effective_priority: machine.effective_priority(),
        master: None,
        master_priority: None,
        advert_int: Duration::from_millis(u64::from(machine.settings().advert_interval_cs) * 10),
        master_down_interval: machine.master_down_interval(),
        track_fault: false,
        priority_delta: 0,
        vips_held: false,
        last_transition: None,
        last_garp: None,
        counters: Counters::default(),
    }
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
        let started = Self::start_inner(vrrp, &plans, hooks, handle, &mut background).await;
        if started.is_err() {
            background.iter().rev().for_each(JoinHandle::abort);
        }
        started
    }

    async fn start_inner(
        vrrp: &VrrpConfig,
        plans: &[Plan],
        hooks: Hooks,
        handle: rtnetlink::Handle,
        background: &mut Vec<JoinHandle<()>>,
    ) -> Result<VrrpEngine> {
        let ops = vip::Netlink::new(handle);
        let all_vips: Vec<IpAddr> = vrrp
            .instances
            .iter()
            .flat_map(|i| i.virtual_ipaddress.iter().map(|v| v.address))
            .collect();

        // Host facts per instance; stale VIPs go first (before anyone can see us as MASTER).
        struct Ready {
            ifindex: u32,
            primary: IpAddr,
            machine: Instance,
        }
        let mut ready = Vec::new();
        for p in plans.iter() {
            let name = &p.cfg.name;
            let ifindex =
                iface::index(&p.cfg.interface).with_context(|| format!("vrrp_instance {name}"))?;
            if hooks.manage_vips && !hooks.resume.contains(name) {
                let removed = vip::remove_present(&ops, ifindex, &p.cfg.virtual_ipaddress)
                    .await
                    .with_context(|| format!("vrrp_instance {name}: removing stale VIPs"))?;
                for a in removed {
                    tracing::warn!(instance = %name, interface = %p.cfg.interface,
                        "removed stale VIP {}/{} (we are not MASTER yet)", a.address, a.prefix);
                }
            }
            let primary = match p.cfg.unicast_src_ip {
                Some(a) => a,
                None => {
                    let present = ops.list(ifindex).await?;
                    vip::primary_address(&present, &all_vips, p.family == Family::V6).ok_or_else(
                        || {
                            let what =
                                if p.family == Family::V6 { "link-local IPv6" } else { "IPv4" };
                            anyhow!(
                                "vrrp_instance {name}: interface {} has no {what} address to send \
                                 adverts from (set unicast_src_ip)",
                                p.cfg.interface
                            )
                        },
                    )?
                }
            };
            let machine = Instance::new(settings(p, primary))
                .map_err(|e| anyhow!("vrrp_instance {name}: {e}"))?;
            ready.push(Ready { ifindex, primary, machine });
        }

        // One socket per (interface, family), shared by its instances.
        let mut sockets: HashMap<(String, Family), SocketSlot> = HashMap::new();
        let mut bound = Vec::new();
        for (p, r) in plans.iter().zip(&ready) {
            let key = (p.cfg.interface.clone(), p.family);
            if sockets.contains_key(&key) {
                continue;
            }
            let multicast = plans.iter().any(|q| {
                (&q.cfg.interface, q.family) == (&key.0, key.1) && q.cfg.unicast_peer.is_empty()
            });
            let sock = VrrpSocket::open(&p.cfg.interface, r.ifindex, p.family, multicast)
                .with_context(|| {
                    format!("opening the {} VRRP socket on {}", p.family, p.cfg.interface)
                })?;
            let (tx, rx) = watch::channel(Some(Arc::new(sock)));
            bound.push(Bound {
                ifname: key.0.clone(),
                family: p.family,
                multicast,
                link: Some(LinkId { index: r.ifindex, generation: 0 }),
                tx,
            });
            sockets.insert(key, rx);
        }

        let tracker =
            Tracker::start(plans.iter().map(|p| p.tracking.clone()).collect(), &vrrp.scripts)
                .await
                .context("starting interface/script tracking")?;
        background.extend(tracker.tasks);
        background.push(tokio::spawn(rebind_loop(bound, tracker.links)));

        let status = Arc::new(watch::Sender::new(VrrpStatus {
            instances: plans
                .iter()
                .zip(&ready)
                .map(|(p, r)| initial_status(p, &r.machine, r.primary))
                .collect(),
            foreign_adverts: 0,
            malformed: 0,
        }));

        // Channels first: the receive loops, groups and instances refer to each other.
        let mut cmd_txs = Vec::new();
        let mut cmd_rxs = Vec::new();
        let mut in_txs = Vec::new();
        let mut in_rxs = Vec::new();
        for _ in plans.iter() {
            let (tx, rx) = mpsc::unbounded_channel();
            cmd_txs.push(tx);
            cmd_rxs.push(rx);
            let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
            in_txs.push(tx);
            in_rxs.push(rx);
        }
        let mut group_txs = Vec::new();
        for group in &vrrp.sync_groups {
            // In the group's order, which is each member's position (checked by `plan`).
            let members = group
                .group
                .iter()
                .filter_map(|m| plans.iter().position(|p| &p.cfg.name == m))
                .map(|i| cmd_txs[i].clone())
                .collect();
            let (tx, rx) = mpsc::unbounded_channel();
            group_txs.push(tx);
            let task = run_group(group.clone(), members, rx, hooks.notify_timeout);
            background.push(tokio::spawn(task));
        }

        // Receive loops: VRID → instance, per socket.
        for ((ifname, family), sock) in &sockets {
            let mut routes = HashMap::new();
            for (i, p) in plans.iter().enumerate() {
                if (&p.cfg.interface, p.family) == (ifname, *family) {
                    routes.insert(p.cfg.virtual_router_id, (i, in_txs[i].clone()));
                }
            }
            let task = receive_loop(ifname.clone(), sock.clone(), routes, status.clone());
            background.push(tokio::spawn(task));
        }
        drop(in_txs);

        let mut instances = Vec::new();
        let track_rxs = tracker.status;
        let iter = plans.iter().zip(ready).zip(cmd_rxs).zip(in_rxs).zip(track_rxs);
        for (idx, ((((p, r), cmd_rx), in_rx), track_rx)) in iter.enumerate() {
            let c = &p.cfg;
            let addrs: Vec<IpAddr> = c.virtual_ipaddress.iter().map(|v| v.address).collect();
            let mut expect = r.machine.expect(p.auth.clone(), addrs.clone());
            // keepalived does not check the TTL of unicast adverts (routed peers work).
            expect.min_unicast_ttl = 1;
            let destinations = if c.unicast_peer.is_empty() {
                vec![p.family.multicast_group()]
            } else {
                c.unicast_peer.clone()
            };
            let task = InstanceTask {
                idx,
                name: c.name.clone(),
                ifname: c.interface.clone(),
                primary: r.primary,
                machine: r.machine,
                expect,
                auth: p.auth.clone(),
                addrs,
                vips: c.virtual_ipaddress.clone(),
                destinations,
                socket: sockets[&(c.interface.clone(), p.family)].clone(),
                ops: ops.clone(),
                hooks: hooks.clone(),
                status: status.clone(),
                notifier: Notifier::spawn(hooks.notify_timeout),
                scripts: NotifyScripts::of(c),
                group: p.group.map(|(g, pos)| (pos, group_txs[g].clone())),
                reported: None,
                garps: Vec::new(),
                held: false,
                dataplane: None,
                track: TrackStatus::default(),
                logs: RateLimit::new(LOG_EVERY),
            };
            let cmd_tx = cmd_txs[idx].clone();
            instances.push((cmd_tx, tokio::spawn(task.run(cmd_rx, in_rx, track_rx))));
        }
        Ok(VrrpEngine {
            status,
            instances,
            background: std::mem::take(background),
            stop_limit: hooks.notify_timeout + Duration::from_secs(5),
        })
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

/// An instance's notify scripts.
#[derive(Clone, Debug, Default)]
struct NotifyScripts {
    master: Option<String>,
    backup: Option<String>,
    fault: Option<String>,
    stop: Option<String>,
    generic: Option<String>,
}

impl NotifyScripts {
    fn of(c: &VrrpInstance) -> NotifyScripts {
        NotifyScripts {
            master: c.notify_master.clone(),
            backup: c.notify_backup.clone(),
            fault: c.notify_fault.clone(),
            stop: c.notify_stop.clone(),
            generic: c.notify.clone(),
        }
    }

    /// The command lines to run on entering `state`, in keepalived's order (specific, generic).
    fn commands(&self, name: &str, state: State, priority: u8) -> Vec<String> {
        let mut out = Vec::new();
        let specific = notify::specific(
            state,
            self.master.as_deref(),
            self.backup.as_deref(),
            self.fault.as_deref(),
            self.stop.as_deref(),
        );
        if let Some(s) = specific {
            out.push(notify::command_line(s, &[]));
        }
        if let Some(g) = &self.generic {
            out.push(notify::command_line(g, &notify::instance_args(name, state, priority)));
        }
        out
    }
}

struct InstanceTask {
    idx: usize,
    name: String,
    ifname: String,
    primary: IpAddr,
    machine: Instance,
    expect: Expect,
    auth: Auth,
    addrs: Vec<IpAddr>,
    vips: Vec<VirtualAddress>,
    destinations: Vec<IpAddr>,
    /// The interface's socket, `None` while the interface is missing.
    socket: SocketSlot,
    ops: vip::Netlink,
    hooks: Hooks,
    status: Arc<watch::Sender<VrrpStatus>>,
    notifier: Notifier,
    scripts: NotifyScripts,
    /// Position in the sync group and its task.
    group: Option<(usize, mpsc::UnboundedSender<MemberChange>)>,
    /// (state, own fault) last told to the group.
    reported: Option<(State, bool)>,
    /// Pending gratuitous ARP bursts (cancelled when leaving MASTER).
    garps: Vec<JoinHandle<()>>,
    /// The VIPs were added (and not removed since).
    held: bool,
    /// The answer to the last [`MasterRequest`], awaited before the VIPs are added.
    dataplane: Option<oneshot::Receiver<()>>,
    track: TrackStatus,
    logs: RateLimit,
}

impl InstanceTask {
    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut inbound: mpsc::Receiver<Inbound>,
        mut track: watch::Receiver<TrackStatus>,
    ) {
        // Tracking first, so an instance whose interface is down starts in FAULT.
        let t = *track.borrow_and_update();
        self.track = t;
        self.feed(Event::TrackChanged { fault: t.fault, priority_delta: t.priority_delta }, false)
            .await;
        let start =
            if self.hooks.resume.contains(&self.name) { Event::Resume } else { Event::Startup };
        self.feed(start, false).await;
        let (mut track_open, mut inbound_open) = (true, true);
        loop {
            let deadline = self.machine.next_deadline();
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::SyncGroup(peer_state)) => {
                        self.feed(Event::SyncGroup { peer_state }, true).await;
                    }
                    Some(Cmd::Shutdown) | None => break,
                },
                changed = track.changed(), if track_open => {
                    if changed.is_err() {
                        track_open = false;
                        continue;
                    }
                    let t = *track.borrow_and_update();
                    self.track = t;
                    let ev = Event::TrackChanged { fault: t.fault, priority_delta: t.priority_delta };
                    self.feed(ev, false).await;
                }
                msg = inbound.recv(), if inbound_open => match msg {
                    Some(m) => self.inbound(m).await,
                    None => inbound_open = false,
                },
                () = timer => {
                    // tokio's timer wakes on the millisecond at or after the deadline.
                    let now = deadline.map_or_else(Instant::now, |d| Instant::now().max(d));
                    self.feed_at(Event::Timer, now, false).await;
                }
            }
        }
        self.feed(Event::Shutdown, false).await;
        self.cancel_garps();
        self.notifier.finish(self.hooks.notify_timeout).await;
    }

    async fn feed(&mut self, event: Event, from_sync: bool) {
        self.feed_at(event, Instant::now(), from_sync).await;
    }

    async fn feed_at(&mut self, event: Event, now: Instant, from_sync: bool) {
        let before = self.machine.state();
        let actions = self.machine.handle(event, now);
        // Publish a state change before carrying out anything (the advert that precedes
        // BecomeMaster included): the agent's dataplane switch waits for nothing.
        if actions.iter().any(|a| {
            matches!(
                a,
                Action::BecomeMaster
                    | Action::BecomeBackup
                    | Action::BecomeFault
                    | Action::BecomeStopped
            )
        }) {
            self.transition(before, self.machine.state(), now, from_sync);
        }
        for action in actions {
            self.execute(action, now).await;
        }
        // A tracking fault that changed no state (e.g. already in FAULT for the group).
        self.report_to_group(from_sync);
        self.refresh_status();
    }

    /// Tells the sync group our state and own fault, when either changed since last time.
    fn report_to_group(&mut self, from_sync: bool) {
        let Some((pos, tx)) = &self.group else { return };
        let now = (self.machine.state(), self.track.fault);
        if self.reported == Some(now) {
            return;
        }
        self.reported = Some(now);
        let change = MemberChange { pos: *pos, state: now.0, own_fault: now.1, from_sync };
        let _ = tx.send(change);
    }

    async fn execute(&mut self, action: Action, at: Instant) {
        match action {
            Action::SendAdvert { priority } => self.send_advert(priority).await,
            Action::SendAdvertPriorityZero => self.send_advert(0).await,
            // Already published by `feed_at`; the services go live before the VIPs.
            Action::BecomeMaster => {
                self.wait_for_dataplane().await;
                self.add_vips(at).await;
            }
            Action::BecomeBackup | Action::BecomeFault | Action::BecomeStopped => {
                self.remove_vips().await;
            }
            Action::StopSending => self.cancel_garps(),
            Action::ScheduleGarp { after, count } => self.schedule_garp(after, count),
            Action::Notify { state } => {
                let prio = self.machine.effective_priority();
                for cmd in self.scripts.commands(&self.name, state, prio) {
                    self.notifier.run(cmd, format!("vrrp_instance {} {state}", self.name));
                }
            }
            Action::AdvertIgnored { reason } => {
                let label = ignore_reason(reason);
                self.count(|c| *c.ignored.entry(label).or_default() += 1);
                if let Some(held) = self.logs.allow(label, Instant::now()) {
                    tracing::debug!(instance = %self.name, reason = label, held_back = held,
                        "advert ignored");
                }
            }
        }
    }

    /// Publishes a state change: status first (the agent acts on it), then the hook, the sync
    /// group and the log.
    fn transition(&mut self, from: State, to: State, at: Instant, from_sync: bool) {
        let idx = self.idx;
        let (master, master_priority) = self.master_view();
        let prio = self.machine.effective_priority();
        self.status.send_modify(|s| {
            let i = &mut s.instances[idx];
            i.state = to;
            i.last_transition = Some(SystemTime::now());
            i.counters.transitions += 1;
            if to == State::Master {
                i.counters.became_master += 1;
            }
            i.master = master;
            i.master_priority = master_priority;
            i.effective_priority = prio;
        });
        let published = at.elapsed();
        let change = StateChange {
            index: idx,
            instance: self.name.clone(),
            from,
            to,
            vips: self.addrs.clone(),
            at,
        };
        if let Some(hook) = &self.hooks.on_state {
            hook(&change);
        }
        self.dataplane = None;
        if let (State::Master, Some(tx)) = (to, &self.hooks.before_vips) {
            let (done, answer) = oneshot::channel();
            if tx.send(MasterRequest { change, done }).is_ok() {
                self.dataplane = Some(answer);
            }
        }
        self.report_to_group(from_sync);
        tracing::info!(instance = %self.name, from = %from, priority = prio,
            published_us = published.as_micros() as u64,
            "({}) Entering {to} STATE{}", self.name, if from_sync { " (sync group)" } else { "" });
    }

    /// Waits for the answer to this MASTER transition's [`MasterRequest`], if one was sent.
    async fn wait_for_dataplane(&mut self) {
        let Some(answer) = self.dataplane.take() else { return };
        if tokio::time::timeout(DATAPLANE_WAIT, answer).await.is_err() {
            tracing::warn!(instance = %self.name, "the dataplane did not answer within {DATAPLANE_WAIT:?}: adding the VIPs anyway");
        }
    }

    async fn add_vips(&mut self, at: Instant) {
        if !self.hooks.manage_vips {
            return;
        }
        self.held = true;
        let res = match iface::index(&self.ifname) {
            Ok(ifindex) => vip::add_all(&self.ops, ifindex, &self.vips).await,
            Err(e) => Err(e.into()),
        };
        let took = at.elapsed();
        match res {
            Ok(()) => tracing::info!(instance = %self.name, interface = %self.ifname,
                vips = self.vips.len(), since_event_us = took.as_micros() as u64, "VIPs added"),
            Err(e) => tracing::error!(instance = %self.name, "adding VIPs: {e:#}"),
        }
        self.status.send_if_modified(|s| {
            s.instances[self.idx].vips_held = true;
            false
        });
    }

    async fn remove_vips(&mut self) {
        if !self.hooks.manage_vips || !self.held {
            return;
        }
        self.held = false;
        // The index is read each time: the interface may have been created again since.
        match iface::index(&self.ifname) {
            Ok(ifindex) => match vip::remove_present(&self.ops, ifindex, &self.vips).await {
                Ok(removed) => tracing::info!(instance = %self.name, interface = %self.ifname,
                    vips = removed.len(), "VIPs removed"),
                Err(e) => tracing::error!(instance = %self.name, "removing VIPs: {e:#}"),
            },
            // Deleting the interface deleted its addresses.
            Err(e) => tracing::info!(instance = %self.name, "VIPs gone with the interface: {e}"),
        }
        self.status.send_if_modified(|s| {
            s.instances[self.idx].vips_held = false;
            false
        });
    }

    fn schedule_garp(&mut self, after: Duration, count: u32) {
        let (ifname, vips, status, idx, name) = (
            self.ifname.clone(),
            self.addrs.clone(),
            self.status.clone(),
            self.idx,
            self.name.clone(),
        );
        let burst = move || match announce::send_burst(&ifname, &vips, count) {
            Ok(r) => {
                tracing::info!(instance = %name, interface = %ifname, sent = r.sent,
                    took_us = r.took.as_micros() as u64, "gratuitous ARPs / NAs sent");
                status.send_if_modified(|s| {
                    let i = &mut s.instances[idx];
                    i.counters.garps_sent += u64::from(r.sent);
                    i.last_garp = Some(r);
                    false
                });
            }
            Err(e) => tracing::warn!(instance = %name, interface = %ifname,
                "sending gratuitous ARPs / NAs: {e}"),
        };
        if after.is_zero() {
            // The first burst goes out right after the VIPs, from this task: no scheduling delay.
            burst();
            return;
        }
        self.garps.retain(|h| !h.is_finished());
        self.garps.push(tokio::spawn(async move {
            tokio::time::sleep(after).await;
            burst();
        }));
    }

    fn cancel_garps(&mut self) {
        for h in self.garps.drain(..) {
            h.abort();
        }
    }

    async fn send_advert(&mut self, priority: u8) {
        let advert = self.machine.advert(priority, self.addrs.clone(), self.auth.clone());
        let socket = self.socket.borrow().clone();
        for i in 0..self.destinations.len() {
            let dst = self.destinations[i];
            let result = match (advert.encode(self.primary, dst), &socket) {
                (Ok(msg), Some(sock)) => {
                    sock.send(self.primary, dst, &msg).await.map_err(|e| e.to_string())
                }
                (Ok(_), None) => Err(format!("interface {} is missing", self.ifname)),
                (Err(e), _) => Err(e.to_string()),
            };
            match result {
                Ok(()) => self.count(|c| {
                    c.adverts_sent += 1;
                    if priority == 0 {
                        c.priority_zero_sent += 1;
                    }
                }),
                Err(e) => {
                    self.count(|c| c.send_errors += 1);
                    if let Some(held) = self.logs.allow("send_error", Instant::now()) {
                        tracing::warn!(instance = %self.name, to = %dst, held_back = held,
                            "sending advert: {e}");
                    }
                }
            }
        }
    }

    async fn inbound(&mut self, msg: Inbound) {
        let (rx, ip) = match msg {
            // Our own source (a hairpin, a loop, a forgery): never acted on or checked further,
            // but counted, so a forgery shows.
            Inbound::Advert { ip, .. } if ip.src == self.primary => return self.own_address(),
            Inbound::Rejected { src, .. } if src == self.primary => return self.own_address(),
            Inbound::Advert { rx, ip } => (rx, ip),
            Inbound::Rejected { error, src } => return self.reject(&error, src),
        };
        let addresses = self.machine.address_check(ip.src);
        let notes = match self.expect.check_with(&rx, &ip, addresses) {
            Ok(notes) => notes,
            Err(e) => return self.reject(&e, ip.src),
        };
        let prio0 = rx.advert.priority == 0;
        self.count(|c| {
            c.adverts_received += 1;
            if prio0 {
                c.priority_zero_received += 1;
            }
        });
        if !notes.is_empty()
            && let Some(held) = self.logs.allow("note", Instant::now())
        {
            tracing::info!(instance = %self.name, from = %ip.src, held_back = held,
                "advert accepted with differences: {notes:?}");
        }
        self.feed(Event::advert(ip.src, &rx.advert), false).await;
    }

    fn own_address(&mut self) {
        let label = ignore_reason(IgnoreReason::OwnAddress);
        self.count(|c| *c.ignored.entry(label).or_default() += 1);
    }

    /// Counts and (rate-limited) logs a rejected advert; it changes nothing else.
    fn reject(&mut self, e: &PacketError, src: IpAddr) {
        let reason = e.reason();
        self.count(|c| *c.rejected.entry(reason).or_default() += 1);
        if let Some(held) = self.logs.allow(reason, Instant::now()) {
            tracing::warn!(instance = %self.name, from = %src, reason, held_back = held,
                "advert discarded: {e}");
        }
    }

    /// Updates counters without waking the status receivers.
    fn count(&self, f: impl FnOnce(&mut Counters)) {
        self.status.send_if_modified(|s| {
            f(&mut s.instances[self.idx].counters);
            false
        });
    }

    fn master_view(&self) -> (Option<IpAddr>, Option<u8>) {
        match self.machine.state() {
            State::Master => (Some(self.primary), Some(self.machine.effective_priority())),
            State::Backup => match self.machine.master() {
                Some(m) => (Some(m.address), Some(m.priority)),
                None => (None, None),
            },
            _ => (None, None),
        }
    }

    /// Refreshes what may change without a transition; wakes receivers only if it did.
    fn refresh_status(&self) {
        let (master, master_priority) = self.master_view();
        let m = &self.machine;
        let prio = m.effective_priority();
        let mdi = m.master_down_interval();
        let track = self.track;
        self.status.send_if_modified(|s| {
            let i = &mut s.instances[self.idx];
            let before = (
                i.master,
                i.master_priority,
                i.effective_priority,
                i.master_down_interval,
                i.track_fault,
                i.priority_delta,
            );
            i.master = master;
            i.master_priority = master_priority;
            i.effective_priority = prio;
            i.master_down_interval = mdi;
            i.track_fault = track.fault;
            i.priority_delta = track.priority_delta;
            before != (master, master_priority, prio, mdi, track.fault, track.priority_delta)
        });
    }
}

/// One socket the rebind task keeps bound to its interface.
struct Bound {
    ifname: String,
    family: Family,
    multicast: bool,
    /// The interface the current socket is bound to (`None`: no socket).
    link: Option<LinkId>,
    tx: watch::Sender<Option<Arc<VrrpSocket>>>,
}

/// Follows the interfaces and opens each socket again when its interface is created again (or
/// closes it while the interface is missing). A failed open is retried every
/// [`REOPEN_RETRY`].
async fn rebind_loop(mut bound: Vec<Bound>, mut links: watch::Receiver<track::LinkIndexes>) {
    loop {
        let indexes = links.borrow_and_update().clone();
        let mut retry = false;
        for b in &mut bound {
            let now = indexes.get(&b.ifname).copied();
            match rebind(b.link, now) {
                Rebind::Keep => {}
                Rebind::Close => {
                    tracing::warn!(interface = %b.ifname, family = %b.family,
                        "interface gone: VRRP socket closed until it is back");
                    b.link = None;
                    b.tx.send_replace(None);
                }
                Rebind::Open(link) => {
                    let ifindex = link.index;
                    match VrrpSocket::open(&b.ifname, ifindex, b.family, b.multicast) {
                        Ok(sock) => {
                            tracing::info!(interface = %b.ifname, family = %b.family, ifindex,
                                "interface (re)created: VRRP socket opened again");
                            b.link = Some(link);
                            b.tx.send_replace(Some(Arc::new(sock)));
                        }
                        Err(e) => {
                            tracing::warn!(interface = %b.ifname, family = %b.family, ifindex,
                                "opening the VRRP socket again: {e} (retrying)");
                            b.link = None;
                            b.tx.send_replace(None);
                            retry = true;
                        }
                    }
                }
            }
        }
        tokio::select! {
            changed = links.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(REOPEN_RETRY), if retry => {}
        }
    }
}

/// Reads one interface's socket (switching when it is opened again) and hands each advert to
/// the instance its VRID names.
async fn receive_loop(
    ifname: String,
    mut slot: SocketSlot,
    routes: HashMap<u8, (usize, mpsc::Sender<Inbound>)>,
    status: Arc<watch::Sender<VrrpStatus>>,
) {
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut logs = RateLimit::new(LOG_EVERY);
    // Without the rebind task (it only ends with the engine) the last socket stays in use.
    let mut watching = true;
    loop {
        let current = slot.borrow_and_update().clone();
        let Some(socket) = current else {
            // The interface is missing: wait for its new socket.
            if !watching || slot.changed().await.is_err() {
                return;
            }
            continue;
        };
        let got = tokio::select! {
            changed = slot.changed(), if watching => {
                watching = changed.is_ok();
                continue;
            }
            got = socket.recv(&mut buf) => got,
        };
        let got = match got {
            Ok(got) => got,
            Err(e) => {
                if let Some(held) = logs.allow("recv", Instant::now()) {
                    tracing::warn!(interface = %ifname, held_back = held, "receiving VRRP: {e}");
                }
                // Do not spin on a persistent error.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (ip, range) = match got {
            Ok(v) => v,
            Err(e) => {
                status.send_if_modified(|s| {
                    s.malformed += 1;
                    false
                });
                if let Some(held) = logs.allow("malformed", Instant::now()) {
                    tracing::debug!(interface = %ifname, held_back = held,
                        "malformed VRRP packet: {e}");
                }
                continue;
            }
        };
        let payload = &buf[range];
        let target = match route(payload, |vrid| routes.contains_key(&vrid)) {
            Route::Instance(vrid) => routes.get(&vrid),
            Route::Foreign => {
                status.send_if_modified(|s| {
                    s.foreign_adverts += 1;
                    false
                });
                None
            }
            Route::Malformed => {
                status.send_if_modified(|s| {
                    s.malformed += 1;
                    false
                });
                if let Some(held) = logs.allow("malformed", Instant::now()) {
                    tracing::debug!(interface = %ifname, held_back = held, len = payload.len(),
                        "VRRP message too short to carry a VRID");
                }
                None
            }
        };
        let Some((idx, tx)) = target else { continue };
        let msg = match packet::parse(payload, &ip) {
            Ok(rx) => Inbound::Advert { rx, ip },
            Err(error) => Inbound::Rejected { error, src: ip.src },
        };
        if tx.try_send(msg).is_err() {
            status.send_if_modified(|s| {
                s.instances[*idx].counters.queue_full += 1;
                false
            });
        }
    }
}

/// Where the receive loop hands a VRRP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// To the instance running this VRID (which applies every other check).
    Instance(u8),
    /// A VRID no instance on the interface runs: another router's.
    Foreign,
    /// Not even a VRID.
    Malformed,
}

/// Routes a VRRP message by its VRID byte; `ours` says whether an instance runs a VRID.
fn route(payload: &[u8], ours: impl Fn(u8) -> bool) -> Route {
    match payload.get(1) {
        Some(&vrid) if ours(vrid) => Route::Instance(vrid),
        Some(_) => Route::Foreign,
        None => Route::Malformed,
    }
}

/// A sync group (keepalived's `vrrp_sync_group`): its members move together.
///
/// - A member whose own tracking fails takes the others to FAULT with it; they stay there until
///   no member is faulty on its own account any more.
/// - A member's own change to MASTER or BACKUP is passed on to the others (a backup taking over
///   takes its peers along; a master losing to a higher priority releases theirs), unless a peer
///   is faulty on its own account: then the member is sent back to FAULT instead.
/// - Changes caused by the group itself are not passed on again, so nothing echoes.
///
/// The group's notify scripts run when all members have reached the same new state.
async fn run_group(
    group: VrrpSyncGroup,
    members: Vec<mpsc::UnboundedSender<Cmd>>,
    mut rx: mpsc::UnboundedReceiver<MemberChange>,
    notify_timeout: Duration,
) {
    let notifier = Notifier::spawn(notify_timeout);
    // (state, own fault) per member.
    let mut states = vec![(State::Initialize, false); members.len()];
    let mut group_state = State::Initialize;
    while let Some(ch) = rx.recv().await {
        let Some(&prev) = states.get(ch.pos) else { continue };
        states[ch.pos] = (ch.state, ch.own_fault);
        let mut told = vec![false; members.len()];
        let tell = |i: usize, state: State, told: &mut Vec<bool>| {
            told[i] = true;
            let _ = members[i].send(Cmd::SyncGroup(state));
        };
        let others = (0..members.len()).filter(|&i| i != ch.pos);
        let any_own = states.iter().any(|&(_, own)| own);
        if ch.own_fault && !prev.1 {
            others.for_each(|i| tell(i, State::Fault, &mut told));
        } else if !ch.from_sync
            && ch.state != prev.0
            && matches!(ch.state, State::Master | State::Backup)
        {
            if any_own {
                tell(ch.pos, State::Fault, &mut told);
            } else {
                others.for_each(|i| tell(i, ch.state, &mut told));
            }
        }
        if prev.1 && !ch.own_fault && !any_own {
            // The last own fault cleared: release whoever the group still holds in FAULT.
            for i in 0..members.len() {
                if states[i].0 == State::Fault && !told[i] {
                    tell(i, State::Backup, &mut told);
                }
            }
        }
        let first = states[0].0;
        if states.iter().all(|&(s, _)| s == first) && first != group_state {
            group_state = first;
            tracing::info!(group = %group.name, "vrrp_sync_group {} is {first}", group.name);
            let script = notify::specific(
                first,
                group.notify_master.as_deref(),
                group.notify_backup.as_deref(),
                group.notify_fault.as_deref(),
                None,
            );
            if let Some(s) = script {
                notifier.run(
                    notify::command_line(s, &[]),
                    format!("vrrp_sync_group {} {first}", group.name),
                );
            }
        }
    }
    notifier.finish(notify_timeout).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        Location,
        vrrp::{TrackInterface, TrackScript, VrrpScript},
    };

    pub(crate) fn instance(name: &str, vrid: u8, vips: &[&str]) -> VrrpInstance {
        VrrpInstance {
            name: name.into(),
            initial_master: false,
            interface: "eth0".into(),
            virtual_router_id: vrid,
            priority: 100,
            advert_int: Duration::from_secs(1),
            version: 3,
            virtual_ipaddress: vips
                .iter()
                .map(|v| VirtualAddress { address: v.parse().unwrap(), prefix: 32 })
                .collect(),
            preempt: true,
            preempt_delay: Duration::ZERO,
            unicast_peer: vec![],
            unicast_src_ip: None,
            auth_pass: None,
            track_interface: vec![],
            track_script: vec![],
            notify_master: None,
            notify_backup: None,
            notify_fault: None,
            notify_stop: None,
            notify: None,
            garp_master_repeat: 5,
            garp_master_refresh_delay: Duration::from_secs(5),
            lower_prio_no_advert: false,
            skip_check_adv_addr: false,
            location: Location::default(),
        }
    }

    fn script(name: &str, weight: i32) -> VrrpScript {
        VrrpScript {
            name: name.into(),
            script: "true".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            weight,
            rise: 1,
            fall: 1,
            location: Location::default(),
        }
    }

    fn config(instances: Vec<VrrpInstance>) -> VrrpConfig {
        VrrpConfig { instances, scripts: vec![], sync_groups: vec![] }
    }

    #[test]
    fn plan_derives_family_interval_auth_and_tracking() {
        let mut a = instance("A", 51, &["192.0.2.200"]);
        a.version = 2;
        a.advert_int = Duration::from_millis(1500);
        a.auth_pass = Some("secret12345".into());
        a.track_interface = vec![TrackInterface { name: "eth1".into(), weight: -20 }];
        a.track_script = vec![
            TrackScript { script: "chk".into(), weight: None },
            TrackScript { script: "chk2".into(), weight: Some(7) },
        ];
        let mut b = instance("B", 51, &["2001:db8::200"]);
        b.advert_int = Duration::from_millis(5);
        let mut cfg = config(vec![a, b]);
        cfg.scripts = vec![script("chk", -10), script("chk2", 0)];
        let plans = plan(&cfg).unwrap();
        assert_eq!(plans[0].family, Family::V4);
        assert_eq!(plans[0].version, Version::V2);
        assert_eq!(plans[0].advert_cs, 150); // the machine rounds v2 up to 200
        assert_eq!(plans[0].auth, Auth::password(b"secret12"));
        assert_eq!(
            plans[0].tracking,
            InstanceTracking {
                interfaces: vec![("eth0".into(), 0), ("eth1".into(), -20)],
                scripts: vec![(0, -10), (1, 7)],
            }
        );
        // Same VRID, other family: fine. Sub-centisecond rounds up to 1 cs.
        assert_eq!(plans[1].family, Family::V6);
        assert_eq!(plans[1].advert_cs, 1);
        assert_eq!(plans[1].auth, Auth::None);
        let s = settings(&plans[0], "192.0.2.12".parse().unwrap());
        let m = Instance::new(s).unwrap();
        assert_eq!(m.settings().advert_interval_cs, 200);
    }

    #[test]
    fn plan_rejects_what_cannot_run() {
        let err = |cfg: VrrpConfig| plan(&cfg).unwrap_err().to_string();
        let dup =
            config(vec![instance("A", 51, &["192.0.2.1"]), instance("B", 51, &["192.0.2.2"])]);
        assert!(err(dup).contains("already used by A"));
        let mixed = config(vec![instance("A", 51, &["192.0.2.1", "2001:db8::1"])]);
        assert!(err(mixed).contains("mixes"));
        let mut v2v6 = instance("A", 51, &["2001:db8::1"]);
        v2v6.version = 2;
        assert!(err(config(vec![v2v6])).contains("IPv4 only"));
        let mut v4 = instance("A", 51, &["192.0.2.1"]);
        v4.version = 4;
        assert!(err(config(vec![v4])).contains("version 4"));
        let mut ts = instance("A", 51, &["192.0.2.1"]);
        ts.track_script = vec![TrackScript { script: "nope".into(), weight: None }];
        assert!(err(config(vec![ts])).contains("not a vrrp_script"));
        let mut cfg = config(vec![instance("A", 51, &["192.0.2.1"])]);
        cfg.sync_groups = vec![VrrpSyncGroup {
            name: "G".into(),
            group: vec!["A".into(), "B".into()],
            notify_master: None,
            notify_backup: None,
            notify_fault: None,
            location: Location::default(),
        }];
        assert!(err(cfg.clone()).contains("B is not a vrrp_instance"));
        cfg.sync_groups[0].group = vec!["A".into()];
        cfg.sync_groups.push(cfg.sync_groups[0].clone());
        cfg.sync_groups[1].name = "H".into();
        assert!(err(cfg).contains("two sync groups"));
    }

    #[test]
    fn notify_commands_in_keepalived_order() {
        let mut c = instance("VI_1", 51, &["192.0.2.200"]);
        c.notify_master = Some("/etc/lb/master.sh".into());
        c.notify = Some("/etc/lb/notify.sh".into());
        let n = NotifyScripts::of(&c);
        assert_eq!(
            n.commands("VI_1", State::Master, 90),
            ["/etc/lb/master.sh", "/etc/lb/notify.sh INSTANCE VI_1 MASTER 90"]
        );
        assert_eq!(
            n.commands("VI_1", State::Backup, 90),
            ["/etc/lb/notify.sh INSTANCE VI_1 BACKUP 90"]
        );
        assert!(NotifyScripts::default().commands("x", State::Stop, 1).is_empty());
    }

    #[tokio::test]
    async fn no_instances_no_engine_work() {
        let engine = VrrpEngine::start(&VrrpConfig::default(), Hooks::default()).await.unwrap();
        assert!(engine.snapshot().instances.is_empty());
        engine.stop().await;
    }

    /// Only a message long enough to carry a VRID is an advert, ours or another router's.
    #[test]
    fn messages_are_routed_by_vrid() {
        let ours = |vrid: u8| vrid == 51;
        let cases: [(&str, &[u8], Route); 5] = [
            ("empty", &[], Route::Malformed),
            ("version byte only", &[0x31], Route::Malformed),
            ("truncated, our VRID: the instance rejects it", &[0x31, 51], Route::Instance(51)),
            ("another VRID", &[0x31, 52, 100, 1, 0, 100, 0, 0], Route::Foreign),
            ("our VRID", &[0x31, 51, 100, 1, 0, 100, 0, 0], Route::Instance(51)),
        ];
        for (name, payload, want) in cases {
            assert_eq!(route(payload, ours), want, "{name}");
        }
    }

    #[test]
    fn rebind_follows_the_interface() {
        use Rebind::{Close, Keep, Open};
        let (a, b, c) = (
            LinkId { index: 4, generation: 0 },
            LinkId { index: 9, generation: 1 },
            LinkId { index: 4, generation: 1 },
        );
        // (bound to, interface now, what to do)
        let cases = [
            (Some(a), Some(a), Keep),    // unchanged
            (Some(a), None, Close),      // deleted
            (None, None, Keep),          // still missing
            (None, Some(b), Open(b)),    // created again (or a failed open retried)
            (Some(a), Some(b), Open(b)), // deleted and created again between two dumps
            (Some(a), Some(c), Open(c)), // ... and given the same index again
        ];
        for (bound, now, want) in cases {
            assert_eq!(rebind(bound, now), want, "bound {bound:?}, now {now:?}");
        }
    }

    #[test]
    fn rate_limit_once_per_period_per_reason() {
        let mut rl = RateLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(rl.allow("bad_ttl", t0), Some(0));
        assert_eq!(rl.allow("bad_ttl", t0 + Duration::from_secs(1)), None);
        assert_eq!(rl.allow("bad_ttl", t0 + Duration::from_secs(9)), None);
        assert_eq!(rl.allow("auth_failed", t0 + Duration::from_secs(9)), Some(0));
        assert_eq!(rl.allow("bad_ttl", t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(rl.allow("bad_ttl", t0 + Duration::from_secs(11)), None);
    }

    /// Drains what a member was told so far.
    fn told(rx: &mut mpsc::UnboundedReceiver<Cmd>) -> Vec<State> {
        let mut out = Vec::new();
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Cmd::SyncGroup(s) => out.push(s),
                Cmd::Shutdown => panic!("a group never shuts members down"),
            }
        }
        out
    }

    #[tokio::test]
    async fn sync_group_moves_members_together_without_echoes_or_deadlocks() {
        let tmp = crate::testutil::scratch_dir("lb-vrrp-group-");
        let dir = tmp.path();
        let out = dir.join("notified");
        let _ = std::fs::remove_file(&out);
        let script = |w: &str| Some(format!("echo {w} >> {}", out.display()));
        let group = VrrpSyncGroup {
            name: "G".into(),
            group: vec!["A".into(), "B".into(), "C".into()],
            notify_master: script("master"),
            notify_backup: script("backup"),
            notify_fault: script("fault"),
            location: Location::default(),
        };
        let (mut txs, mut rxs) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let (tx, rx) = mpsc::unbounded_channel();
            txs.push(tx);
            rxs.push(rx);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_group(group, txs, rx, Duration::from_secs(5)));
        let settle = || tokio::time::sleep(Duration::from_millis(50));
        let send = |pos, state, own_fault, from_sync| {
            tx.send(MemberChange { pos, state, own_fault, from_sync }).unwrap();
        };
        use State::{Backup, Fault, Master};

        // A starts with its tracked interface down; B and C start (B already told FAULT).
        send(0, Fault, true, false);
        send(1, Fault, false, false);
        send(2, Backup, false, false);
        settle().await;
        assert_eq!(told(&mut rxs[1]), [Fault]);
        assert_eq!(told(&mut rxs[2]), [Fault, Fault], "A's fault, then its own BACKUP refused");
        send(2, Fault, false, true);
        // A's link comes up: everyone is released.
        send(0, Backup, false, false);
        settle().await;
        assert_eq!(told(&mut rxs[1]), [Backup]);
        assert_eq!(told(&mut rxs[2]), [Backup]);
        assert!(told(&mut rxs[0]).is_empty());
        send(1, Backup, false, true);
        send(2, Backup, false, true);
        // B's timer fires: the others follow; their sync-caused MASTER is not echoed.
        send(1, Master, false, false);
        settle().await;
        assert_eq!(told(&mut rxs[0]), [Master]);
        assert_eq!(told(&mut rxs[2]), [Master]);
        send(0, Master, false, true);
        send(2, Master, false, true);
        settle().await;
        assert!(told(&mut rxs[1]).is_empty());
        // C's script fails while it is MASTER: all go FAULT.
        send(2, Fault, true, false);
        settle().await;
        assert_eq!(told(&mut rxs[0]), [Fault]);
        assert_eq!(told(&mut rxs[1]), [Fault]);
        send(0, Fault, false, true);
        send(1, Fault, false, true);
        // A's own tracking fails too (it was already in FAULT: only its own fault changes), then
        // C recovers: B is released, A stays down on its own and B is sent back.
        send(0, Fault, true, false);
        settle().await;
        assert_eq!(told(&mut rxs[1]), [Fault]);
        assert_eq!(told(&mut rxs[2]), [Fault]);
        send(2, Backup, false, false);
        settle().await;
        assert_eq!(told(&mut rxs[2]), [Fault], "A is still faulty");
        assert!(told(&mut rxs[1]).is_empty());
        send(2, Fault, false, true);
        send(0, Backup, false, false);
        settle().await;
        assert_eq!(told(&mut rxs[1]), [Backup]);
        assert_eq!(told(&mut rxs[2]), [Backup]);
        send(1, Backup, false, true);
        send(2, Backup, false, true);
        settle().await;
        // A shared link fails under A and B (both faulty on their own), then comes back: when
        // the last own fault clears, everyone still held in FAULT is released.
        send(0, Fault, true, false);
        settle().await;
        assert_eq!(told(&mut rxs[1]), [Fault]);
        assert_eq!(told(&mut rxs[2]), [Fault]);
        send(1, Fault, false, true);
        send(2, Fault, false, true);
        send(1, Fault, true, false);
        settle().await;
        assert_eq!(told(&mut rxs[0]), [Fault]);
        assert_eq!(told(&mut rxs[2]), [Fault]);
        send(0, Fault, false, false); // A's link is back, but B still holds the group
        settle().await;
        assert!(told(&mut rxs[0]).is_empty() && told(&mut rxs[2]).is_empty());
        send(1, Fault, false, false); // and B's: A, B and C are all released
        settle().await;
        assert_eq!(told(&mut rxs[0]), [Backup]);
        assert_eq!(told(&mut rxs[1]), [Backup]);
        assert_eq!(told(&mut rxs[2]), [Backup]);
        for pos in 0..3 {
            send(pos, Backup, false, true);
        }
        settle().await;
        drop(tx);
        task.await.unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            got.lines().collect::<Vec<_>>(),
            ["fault", "backup", "master", "fault", "backup", "fault", "backup"]
        );
    }
}
