//! `lb run`: wires the pure cores to the world. Inputs (config, interfaces, neighbour table,
//! health, VRRP) feed `desired_state`; the dataplane applies the result; the control socket shows
//! it. This file starts and stops the agent; `events` waits on its inputs and `reconcile` turns
//! each into the dataplane's state (the only path there, VRRP included).

mod changes;
mod events;
mod reconcile;
mod resume;
pub mod view;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, TryLockError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};

use crate::{
    config::flow_sync::FlowSyncConfig,
    config::{self, Config, FormatChoice, SystemHost},
    control::proto::ChangedView,
    control::{
        proto::{BackendsView, Request, Response, StatusView},
        server::{ControlSocket, Handler},
    },
    dataplane::{
        Dataplane, DataplaneError,
        hybrid::Hybrid,
        ipvs::IpvsDataplane,
        select::{self, Capabilities, Mode, Plan},
        xdp::{Pinning, XdpDataplane, XdpLimits, XdpModeSetting},
    },
    desired::{
        Desired, FlowSyncDesired, HostFacts, Inputs, RealState, VrrpStates, desired_state,
        real_ifindex,
    },
    health::{
        DEFAULT_CONCURRENCY, HealthMonitor, MonitoredReal, monitored_reals,
        state::{HealthSnapshot, RealId},
    },
    listen::{self, ListenerLimit},
    metrics,
    net::{iface, neigh, route},
    overrides::{self, Override, Overrides, ServiceSelector},
    vrrp::{self as vrrp_engine, State as VrrpState, VrrpEngine, VrrpStatus},
};
pub use events::block_start_signals;
use events::{Exit, Signals, Sources, event_loop};
use reconcile::{Reloader, Turn, config_hash, unix_now};

/// How long start-up waits for real-server MACs before going live with what it has.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the neighbour table is re-read (real MACs appearing, changing or going away).
const NEIGH_REFRESH: Duration = Duration::from_secs(1);
/// How often unresolved reals are probed again.
const REPROBE: Duration = Duration::from_secs(5);

pub struct RunOptions {
    pub config: PathBuf,
    pub socket: PathBuf,
    pub xdp_mode: XdpModeSetting,
    /// Where to serve Prometheus metrics, if at all.
    pub metrics: Option<std::net::SocketAddr>,
    /// Where to serve the status page, if at all.
    pub http: Option<std::net::SocketAddr>,
    pub format: FormatChoice,
    pub strict: bool,
    /// Pin the dataplane (and adopt a previous agent's) for hitless restarts.
    pub pinning: Option<Pinning>,
    /// `--dataplane`: XDP, IPVS, or each service where it fits.
    pub dataplane: Mode,
    /// Which IPVS services this agent created, for the next one.
    pub ipvs_state: PathBuf,
    /// Leave our IPVS services in the kernel at stop.
    pub keep_ipvs_on_stop: bool,
}

/// Everything the reconciler and the control socket share.
struct Shared {
    config: Config,
    facts: HostFacts,
    /// `lb drain/undrain/weight` changes, cleared by a reload.
    overrides: Overrides,
    /// VRRP instances that are MASTER here.
    vrrp: VrrpStates,
    /// The engine's last report (state changes).
    vrrp_status: Option<VrrpStatus>,
    /// The engine's live status, whose counters move without waking anyone: read for `lb status`.
    vrrp_live: Option<tokio::sync::watch::Receiver<VrrpStatus>>,
    health: HealthSnapshot,
    desired: Desired,
    dataplane: Box<dyn Dataplane>,
    plan: Plan,
    started: Instant,
    monitor: Arc<HealthMonitor>,
    /// The dataplane is pinned (`--pin-dir`): SIGQUIT hands it over instead of stopping it.
    pinned: bool,
    /// The agent is stopping or has handed over: a reload still reading must not switch to its
    /// config afterwards.
    closed: bool,
    /// The control socket's and the metrics listener's caps and counters.
    listeners: Vec<Arc<ListenerLimit>>,
    /// Reloads so far and the running config's hash (metrics, `lb status`).
    reloads: crate::control::proto::ReloadsView,
    /// The sync edge's counters, while it runs (with XDP; kept across reloads).
    flow_sync: Option<Arc<crate::sync::edge::SyncStats>>,
    /// `[flow_sync]` for the sync edge, which re-binds its socket when a reload changes it.
    flow_sync_config: Option<tokio::sync::watch::Sender<Option<FlowSyncConfig>>>,
    /// `[bgp]`: the announcer of the ready VIPs.
    bgp: Option<crate::bgp::agent::BgpAgent>,
    /// The checks through the VIP: their TC programs, fed by every reconcile.
    probe: crate::health::probe::ProbePath,
}

struct AgentHandler {
    shared: Arc<Mutex<Shared>>,
    reloader: Arc<Reloader>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock cannot leave the state half-written in a way that matters
    // more than stopping answering; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handler for AgentHandler {
    fn handle(&self, request: Request) -> Response {
        if let Request::Flows { vip, limit } = &request {
            return flows(&self.shared, vip.as_deref(), *limit);
        }
        let apply =
            |service: &str, real: &str, change| lock(&self.shared).change(service, real, change);
        let change = match &request {
            // Takes the agent lock only to switch to the new config.
            Request::Reload {} => Some(self.reloader.reload(&self.shared, Turn::Refuse)),
            Request::Drain { service, real } => Some(apply(service, real, Change::Drain)),
            Request::Undrain { service, real } => Some(apply(service, real, Change::Undrain)),
            Request::Weight { service, real, weight } => Some(
                overrides::weight(*weight)
                    .map_err(anyhow::Error::from)
                    .and_then(|w| apply(service, real, Change::Weight(w))),
            ),
            Request::Bgp { action, vip } => {
                Some(lock(&self.shared).bgp_operator(action, vip.as_deref()))
            }
            Request::Backends {} | Request::Status {} | Request::Flows { .. } => None,
        };
        if let Some(result) = change {
            return match result {
                Ok(data) => Response::ok(data),
                Err(e) => Response::error(format!("{e:#}")),
            };
        }
        let (backends, status) = match lock(&self.shared).views() {
            Ok(v) => v,
            Err(e) => return Response::error(e),
        };
        let data = match request {
            Request::Backends {} => serde_json::to_value(backends),
            Request::Status {} => serde_json::to_value(status),
            _ => return Response::error("internal error: request not handled"),
        };
        match data {
            Ok(d) => Response::ok(d),
            Err(e) => Response::error(format!("internal error: {e}")),
        }
    }
}

/// `lb flows`: the agent lock only to take a reader; the walk runs without it.
fn flows(shared: &Mutex<Shared>, vip: Option<&str>, limit: Option<u64>) -> Response {
    let vip = match vip.map(str::parse::<std::net::SocketAddr>).transpose() {
        Ok(v) => v,
        Err(e) => return Response::error(format!("--vip: {e} (VIP:PORT, [VIP]:PORT for IPv6)")),
    };
    let limit = limit.unwrap_or(crate::control::proto::FLOWS_DEFAULT_LIMIT);
    let source = lock(shared).dataplane.flow_source();
    let view = match source {
        Ok(Some(s)) => s.read(vip, usize::try_from(limit).unwrap_or(usize::MAX), FLOWS_BUDGET),
        Ok(None) => crate::control::proto::FlowsView::default(),
        Err(e) => return Response::error(format!("reading the flow table: {e}")),
    };
    match serde_json::to_value(view) {
        Ok(d) => Response::ok(d),
        Err(e) => Response::error(format!("internal error: {e}")),
    }
}

/// How long one `lb flows` may walk the flow table.
const FLOWS_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

impl metrics::Source for AgentHandler {
    fn views(&self) -> Result<(BackendsView, StatusView), String> {
        lock(&self.shared).views()
    }
}

/// A runtime change requested over the control socket.
#[derive(Clone, Copy, Debug)]
enum Change {
    Drain,
    Undrain,
    Weight(u32),
}

/// Loads the config, logging keepalived.conf warnings (they were accepted, not acted on).
/// Reads the config; `memo` keeps what the next read of the same file (a reload) can reuse.
fn load_config(
    path: &std::path::Path,
    format: FormatChoice,
    strict: bool,
    memo: &mut config::ParseMemo,
) -> anyhow::Result<Config> {
    let loaded = config::load_reusing(path, format, &SystemHost, strict.into(), memo)
        .map_err(|e| anyhow!("{e}"))?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    Ok(loaded.config)
}

/// Starts the dataplanes `--dataplane` allows and this host supports, and says what it supports.
/// In `auto`, an XDP program the kernel refuses (or a build without one) leaves IPVS; a pinned
/// dataplane of another layout is never silently replaced.
fn start_dataplanes(
    opts: &RunOptions,
    config: &Config,
) -> anyhow::Result<(Option<XdpDataplane>, Option<IpvsDataplane>, Capabilities)> {
    let ipvs = match opts.dataplane {
        Mode::Xdp => Err("not used with --dataplane xdp".to_owned()),
        Mode::Auto | Mode::Ipvs => {
            IpvsDataplane::open(Some(opts.ipvs_state.clone()), !opts.keep_ipvs_on_stop)
                .map_err(|e| e.to_string())
        }
    };
    if let (Mode::Ipvs, Err(e)) = (opts.dataplane, &ipvs) {
        anyhow::bail!("--dataplane ipvs: {e}");
    }
    let xdp = match opts.dataplane {
        Mode::Ipvs => Err("not used with --dataplane ipvs".to_owned()),
        mode => {
            match XdpDataplane::load_pinned(opts.xdp_mode, limits_for(config), opts.pinning.clone())
            {
                Ok(xdp) => Ok(xdp),
                Err(
                    e @ (DataplaneError::NoProgram
                    | DataplaneError::Load(_)
                    | DataplaneError::Program(_)),
                ) if mode == Mode::Auto => {
                    tracing::warn!(error = %e, "XDP dataplane not usable; IPVS serves what it can");
                    Err(e.to_string())
                }
                Err(e) => {
                    return Err(e).context(
                        "loading the XDP dataplane (needs root: CAP_BPF, CAP_NET_ADMIN, \
                         CAP_PERFMON)",
                    );
                }
            }
        }
    };
    let caps = Capabilities {
        xdp: xdp.as_ref().map(drop).map_err(Clone::clone),
        ipvs: ipvs.as_ref().map(drop).map_err(Clone::clone),
    };
    Ok((xdp.ok(), ipvs.ok(), caps))
}

/// The sync edge's maps, whenever XDP runs: a reload may write `[flow_sync]` (the program
/// reports new flows while the desired state has it). Without XDP (or on an error) lb syncs no
/// XDP flows; services on IPVS are synced by the kernel's daemons (the IPVS edge starts them).
fn flow_sync_maps(config: &Config, dataplane: &mut Hybrid) -> Option<crate::sync::edge::SyncMaps> {
    let Some(xdp) = dataplane.xdp.as_mut() else {
        if config.flow_sync.is_some() && dataplane.ipvs.is_none() {
            tracing::warn!("[flow_sync] needs the XDP or IPVS dataplane: flow sync is off");
        }
        return None;
    };
    match xdp.sync_maps() {
        Ok(maps) => Some(maps),
        Err(e) => {
            if config.flow_sync.is_some() {
                tracing::warn!(error = %e, "flow sync is off");
            }
            None
        }
    }
}

/// Which dataplane serves each service; an error names every service that cannot run here.
fn plan_dataplanes(config: &Config, mode: Mode, caps: &Capabilities) -> anyhow::Result<Plan> {
    let plan = select::plan(config, mode, caps).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow!("no dataplane can serve these virtual servers:\n{}", lines.join("\n"))
    })?;
    for vs in &config.virtual_servers {
        if let Some(choice) = plan.0.get(&vs.key()).filter(|c| !c.reason.is_empty()) {
            tracing::info!(service = %vs.key(), dataplane = %choice.backend, "{}", choice.reason);
        }
    }
    Ok(plan)
}

/// Bytes of tables built ahead of the first apply held at once: 1,024 tables of up to 16 reals
/// at M = 65537, more than one CPU builds while the program loads (1,000 services: 770–1,000 of
/// them in a 0.8–1.9 s load); the apply builds the rest as before. The start-up peak (`VmHWM`)
/// pays for it (32 KiB per table of up to 16 reals; BENCHMARKS.md, "Agent scale"), the steady
/// `VmRSS` does not (the tables are dropped after the apply).
const AHEAD_BUDGET: usize = 32 << 20;

/// Runs `load` on a thread of its own and `work` on this one until `load` is done (`work` sees
/// the flag set and returns). `load`'s result is what it returned, errors included.
fn beside<L: Send, W>(
    load: impl FnOnce() -> L + Send,
    work: impl FnOnce(&std::sync::atomic::AtomicBool) -> W,
) -> (L, W) {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let loading = scope.spawn(|| {
            // Set even when `load` panics, so `work` does not outlive it.
            struct Done<'a>(&'a AtomicBool);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Relaxed);
                }
            }
            let _done = Done(&done);
            load()
        });
        let worked = work(&done);
        match loading.join() {
            Ok(loaded) => (loaded, worked),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The rings the first apply will likely write: the desired state's, guessed before the
/// dataplanes load and the checks start (XDP loads; reals up as configured; no VRRP instance
/// MASTER yet). A wrong guess costs a build, never a wrong table: a built table belongs to what
/// decides it (`desired::Ring`), and the real desired state shares the guessed rings.
fn rings_ahead(config: &Config, facts: &HostFacts, mode: Mode) -> Vec<crate::desired::Ring> {
    let caps = Capabilities {
        xdp: Ok(()),
        ipvs: if mode == Mode::Xdp { Err(String::new()) } else { Ok(()) },
    };
    let Ok(plan) = select::plan(config, mode, &caps) else { return Vec::new() };
    let guess = desired_state(&Inputs {
        config,
        host: facts,
        health: &HealthSnapshot::default(),
        overrides: &Overrides::default(),
        vrrp: &VrrpStates::default(),
        plan: &plan,
    });
    let mut rings: Vec<crate::desired::Ring> = Vec::new();
    for svc in guess.services.into_iter().filter(|s| s.backend == select::Backend::Xdp) {
        if !svc.ring.is_empty() && !rings.iter().rev().take(1).any(|r| r.shares(&svc.ring)) {
            rings.push(svc.ring);
        }
    }
    rings
}

/// Map sizes large enough for `config` (never below the compiled defaults).
fn limits_for(config: &Config) -> XdpLimits {
    let settings = &config.dataplane;
    let tables: u32 = config.virtual_servers.iter().map(|v| 4 * v.table_size).sum();
    XdpLimits {
        max_services: settings.max_services,
        // Slot 0 is never used.
        max_reals: settings.max_reals.saturating_add(1),
        // Room for every table four times over: three areas each (the active table, a window's
        // anchor, the next one) and one more, so reloads can move tables and add services.
        ring_entries: XdpLimits::default().ring_entries.max(tables),
        flows: settings.flow_table_size,
    }
}

/// (ifindex, ifname, address) of every real whose MAC the dataplane needs.
fn wanted_neighbours(config: &Config, facts: &HostFacts) -> Vec<(u32, String, IpAddr)> {
    let mut out = Vec::new();
    for vs in &config.virtual_servers {
        let service_ifindex = facts.interfaces.get(&vs.interface).map(|i| i.ifindex);
        for rs in vs.real_servers.iter().chain(&vs.sorry_server) {
            let Some(idx) = real_ifindex(facts, rs.address, service_ifindex) else { continue };
            if let Some(i) = facts.interface_by_index(idx) {
                out.push((idx, i.name.clone(), rs.address));
            }
        }
    }
    out
}

/// Interfaces and routes for `config`, keeping `neighbours` as last read. Fails when a service's
/// interface (if it names one) does not exist.
async fn host_facts(
    netlink: &rtnetlink::Handle,
    config: &Config,
    neighbours: &neigh::Neighbours,
) -> anyhow::Result<HostFacts> {
    let mut facts = HostFacts { neighbours: neighbours.clone(), ..Default::default() };
    // A firewall-mark service may name no interface (only IPVS serves it, and needs none).
    for vs in config.virtual_servers.iter().filter(|vs| !vs.interface.is_empty()) {
        if !facts.interfaces.contains_key(&vs.interface) {
            let i = iface::lookup(&vs.interface)
                .with_context(|| format!("interface {} of {}", vs.interface, vs.key()))?;
            facts.interfaces.insert(i.name.clone(), i);
        }
    }
    let reals =
        config.virtual_servers.iter().flat_map(|vs| vs.real_servers.iter().chain(&vs.sorry_server));
    // One dump of the routes and rules answers (nearly) every real: 10,000 reals were 10,000
    // `ip route get` round trips, at start-up and in every reload.
    let table = route::RouteTable::read(netlink).await.context("reading the routing table")?;
    for rs in reals {
        if facts.routes.contains_key(&rs.address) {
            continue;
        }
        let egress = match table.lookup(rs.address) {
            route::Lookup::Found(e) => e,
            route::Lookup::Ask => {
                route::egress(netlink, rs.address).await.context("querying the routing table")?
            }
        };
        match egress {
            Some(e) => {
                if e.via_gateway {
                    tracing::warn!(real = %rs.address, "real server is behind a gateway: direct routing needs it on a directly connected link");
                }
                if facts.interface_by_index(e.ifindex).is_none()
                    && let Ok(i) = iface::lookup_index(e.ifindex)
                {
                    facts.interfaces.insert(i.name.clone(), i);
                }
                facts.routes.insert(rs.address, e);
            }
            None => tracing::warn!(real = %rs.address, "no route to real server"),
        }
    }
    if crate::health::probe::needs_addresses(config) {
        for (name, ip) in iface::addresses().context("reading the interfaces' addresses")? {
            if facts.interfaces.contains_key(&name) {
                facts.addresses.entry(name).or_default().push(ip);
            }
        }
    }
    Ok(facts)
}

/// One malloc arena for the whole agent, set before its threads start: glibc otherwise gives
/// each thread that allocates while another does its own arena, and at 1,000 services x 10 reals
/// their fragments held ~20 MiB (RSS 65 -> 46 MiB with one arena; the agent allocates little
/// once running, so sharing one costs nothing measurable).
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt has no preconditions; M_ARENA_MAX only bounds arenas created later.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Hands the heap memory freed by a large apply back to the system: building tables (256 KiB
/// each at M = 65537) and a reload's second config leave glibc holding tens of MiB otherwise.
fn release_freed_memory() {
    // SAFETY: malloc_trim has no preconditions; it only returns free pages to the kernel.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Logs each real's state: all of them at start-up (`before` is `None`), afterwards only those
/// new or changed (state, weight, MAC) since `before`, so that a reload or a health flip among
/// 10,000 reals logs what changed rather than 10,000 lines.
fn log_desired(before: Option<&Desired>, d: &Desired) {
    let old: std::collections::HashMap<_, _> =
        before.map(|b| b.services.iter().map(|s| (s.key, s)).collect()).unwrap_or_default();
    for s in &d.services {
        let was = old.get(&s.key);
        for r in &s.reals {
            let same = was
                .and_then(|w| w.reals.iter().find(|o| (o.address, o.port) == (r.address, r.port)))
                .is_some_and(|o| (o.state, o.weight, o.mac) == (r.state, r.weight, r.mac));
            if same {
                continue;
            }
            match r.state {
                RealState::Unresolved => tracing::warn!(service = %s.key, real = %r.address,
                    "real server MAC unresolved on {}: it gets no traffic until it answers ARP/ND", s.interface),
                state => tracing::info!(service = %s.key, real = %r.address, weight = r.weight,
                    mac = %r.mac.map(|m| m.to_string()).unwrap_or_default(), state = state.as_str(), "real server"),
            }
        }
    }
}

pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    // Before anything slow: a stop signal during start-up then ends it cleanly (below, or as
    // soon as the event loop runs) instead of killing the agent with its socket left behind.
    let mut signals = Signals::new()?;
    crate::sdnotify::init();
    // The listeners are capped, so a higher limit is headroom for checks, VRRP and netlink.
    match listen::raise_nofile_limit() {
        Ok((old, new)) if old != new => tracing::info!(old, new, "raised the open-files limit"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    // Start-up's steps, timed for the "director running" line (`lb run` at scale).
    let started = Instant::now();
    let mut lap = {
        let mut last = started;
        move || {
            let now = Instant::now();
            let ms = now.duration_since(last).as_millis() as u64;
            last = now;
            ms
        }
    };
    let mut memo = config::ParseMemo::default();
    let config = load_config(&opts.config, opts.format, opts.strict, &mut memo)?;
    let read_ms = lap();
    crate::health::script::apply_setting(config.script_user.as_ref()).context("script_user")?;
    // Claim the socket first: a second agent must fail before touching the dataplane.
    let socket = ControlSocket::bind(&opts.socket)?;
    let metrics_listener = match opts.metrics {
        Some(addr) => {
            Some(metrics::bind(addr).await.with_context(|| format!("metrics address {addr}"))?)
        }
        None => None,
    };
    let http_listener = match opts.http {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("status page address {addr}"))?,
        ),
        None => None,
    };

    let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(conn);
    let listen_ms = lap();
    let mut facts = host_facts(&handle, &config, &neigh::Neighbours::default()).await?;
    let host_ms = lap();
    let wanted = wanted_neighbours(&config, &facts);
    // The one long wait of start-up (nothing is attached yet): a stop signal ends it at once.
    facts.neighbours = tokio::select! {
        resolved = neigh::resolve(&handle, &wanted, RESOLVE_TIMEOUT) => {
            resolved.context("reading the neighbour table")?
        }
        name = signals.stop() => {
            tracing::info!("{name} during start-up: stopping");
            return Ok(()); // dropping the socket removes its file
        }
    };

    let neigh_ms = lap();
    // The Maglev tables need no map: build what the first apply will likely write while the
    // program and its maps load (a CPU each), held until the apply takes them.
    let (loaded, (ahead, built_ahead)) = beside(
        || start_dataplanes(&opts, &config),
        |done| {
            // Guessed here, not before: the load need not wait for it.
            let ahead = rings_ahead(&config, &facts, opts.dataplane);
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let threads = threads.saturating_sub(1).max(1);
            let built = crate::desired::build_ahead(&ahead, threads, AHEAD_BUDGET, done);
            (ahead, built)
        },
    );
    let (xdp, ipvs, caps) = loaded.inspect_err(|_| crate::desired::drop_ahead(&ahead))?;
    let load_ms = lap();
    let plan = plan_dataplanes(&config, opts.dataplane, &caps)?;
    let adopted = xdp.as_ref().map(XdpDataplane::adopted_services).unwrap_or_default();
    let mut dataplane = Hybrid { xdp, ipvs };
    // Before the first check: one through the VIP must find its path ready.
    let mut probe = crate::health::probe::ProbePath::default();
    probe.apply(&crate::health::probe::desired(&config, &facts));
    let monitor = Arc::new(
        HealthMonitor::start(monitored_reals(&config), DEFAULT_CONCURRENCY)
            .context("starting health checks")?,
    );
    // Subscribe before reading: a transition between the two must still wake the event loop.
    let mut health_rx = monitor.subscribe();
    // Reals start as the checkers say (`alpha`: down until their checks pass).
    let health = health_rx.borrow_and_update().clone();
    let overrides = Overrides::default();
    // VRRP-owned services start inactive (the instances start in BACKUP), except those of the
    // instances resumed as MASTER after adopting a previous agent's dataplane (resume.rs).
    let resume = resume::instances(&config, &adopted, &handle).await;
    let vrrp = VrrpStates { masters: resume.iter().cloned().collect() };
    let checks_ms = lap();
    let desired = desired_state(&Inputs {
        config: &config,
        host: &facts,
        health: &health,
        overrides: &overrides,
        vrrp: &vrrp,
        plan: &plan,
    });
    let desired_ms = lap();
    if let Err(e) = dataplane.apply(&desired) {
        // Never run half-configured: undo what was attached.
        let _ = dataplane.shutdown();
        return Err(e).context("programming the dataplane");
    }
    let apply_ms = lap();
    // Tables built for services the apply did not write (a guess that missed) go now.
    crate::desired::drop_ahead(&ahead);
    drop(ahead);
    log_desired(None, &desired);
    release_freed_memory();
    let flow_sync = flow_sync_maps(&config, &mut dataplane);
    let log_ms = lap();
    tracing::info!(
        config = %opts.config.display(),
        services = desired.services.len(),
        socket = %opts.socket.display(),
        read_ms,
        listen_ms,
        host_ms,
        neigh_ms,
        load_ms,
        built_ahead,
        checks_ms,
        desired_ms,
        apply_ms,
        log_ms,
        total_ms = started.elapsed().as_millis() as u64,
        "director running"
    );

    let control_limit = ListenerLimit::new("control", listen::MAX_CONTROL_CONNECTIONS);
    let metrics_limit = metrics_listener
        .as_ref()
        .map(|_| ListenerLimit::new("metrics", listen::MAX_METRICS_CONNECTIONS));
    let http_limit =
        http_listener.as_ref().map(|_| ListenerLimit::new("http", crate::status::MAX_CONNECTIONS));
    let reloader = Arc::new(Reloader {
        config_path: opts.config.clone(),
        format: opts.format,
        strict: opts.strict,
        mode: opts.dataplane,
        caps,
        rt: tokio::runtime::Handle::current(),
        netlink: handle.clone(),
        running: Mutex::new(memo),
    });
    let config_for_hash = config.clone();
    let shared = Arc::new(Mutex::new(Shared {
        config,
        facts,
        overrides,
        vrrp,
        vrrp_status: None,
        vrrp_live: None,
        health,
        desired,
        dataplane: Box::new(dataplane),
        plan,
        started: Instant::now(),
        monitor: monitor.clone(),
        pinned: opts.pinning.is_some(),
        closed: false,
        listeners: [Some(&control_limit), metrics_limit.as_ref(), http_limit.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
        reloads: crate::control::proto::ReloadsView {
            last_success: Some(unix_now()),
            config_hash: config_hash(&config_for_hash),
            ..Default::default()
        },
        flow_sync: flow_sync.as_ref().map(|_| Arc::default()),
        flow_sync_config: None,
        bgp: None,
        probe,
    }));
    if let Some(bgp) = config_for_hash.bgp.clone() {
        // Pinned: BIRD's files sit beside the state file, where the next agent looks to adopt.
        let beside = opts.pinning.as_ref().map_or(&opts.socket, |p| &p.state_file).clone();
        let outlive = opts.pinning.is_some();
        let started = tokio::task::spawn_blocking(move || {
            crate::bgp::agent::BgpAgent::start(&bgp, &beside, outlive)
        })
        .await;
        match started {
            Ok(Ok(b)) => {
                let mut s = lock(&shared);
                s.bgp = Some(b);
                s.announce();
            }
            Ok(Err(e)) => {
                let _ = lock(&shared).dataplane.shutdown();
                return Err(anyhow!(e)).context("starting the BGP speaker");
            }
            Err(e) => {
                let _ = lock(&shared).dataplane.shutdown();
                return Err(anyhow!(e)).context("starting the BGP speaker");
            }
        }
    }
    let sync_task = flow_sync.map(|maps| {
        let s = shared.clone();
        let (cfg_tx, cfg) = tokio::sync::watch::channel(config_for_hash.flow_sync.clone());
        let stats = {
            let mut sh = lock(&shared);
            sh.flow_sync_config = Some(cfg_tx);
            sh.flow_sync.clone().unwrap_or_default()
        };
        let own = || {
            crate::config::HostView::own_addresses(&crate::config::SystemHost).unwrap_or_default()
        };
        let slots = move || lock(&s).dataplane.sync_slots();
        tokio::spawn(async move {
            if let Err(e) = crate::sync::edge::run(cfg, maps, slots, own, stats).await {
                tracing::error!(error = %format!("{e:#}"), "flow sync stopped");
            }
        })
    });
    let handler = || AgentHandler { shared: shared.clone(), reloader: reloader.clone() };
    let server = tokio::spawn(socket.serve(Arc::new(handler()), control_limit));
    let metrics_task = metrics_listener.zip(metrics_limit).map(|(l, limit)| {
        tracing::info!(addr = ?l.local_addr().ok(), "serving Prometheus metrics");
        tokio::spawn(metrics::serve(l, Arc::new(handler()), limit))
    });
    let status_tasks = http_listener.zip(http_limit).map(|(l, limit)| {
        tracing::info!(addr = ?l.local_addr().ok(), "serving the status page");
        let history = Arc::new(Mutex::new(crate::status::History::default()));
        let source: Arc<dyn metrics::Source> = Arc::new(handler());
        [
            crate::status::spawn_sampler(source.clone(), history.clone()),
            tokio::spawn(crate::status::serve(l, source, history, limit)),
        ]
    });

    // VRRP last: the dataplane is ready before an instance can become MASTER.
    let mut master_requests = None;
    let engine = if lock(&shared).config.vrrp.instances.is_empty() {
        None
    } else {
        let vrrp = lock(&shared).config.vrrp.clone();
        // Becoming MASTER: the engine asks (and waits) before adding the VIPs and sending
        // gratuitous ARPs, so the services are live before any packet for a VIP reaches this
        // host's kernel (which would answer with a reset). Every other change reaches the
        // dataplane through the status channel; both go through the event loop's one reconcile.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        master_requests = Some(rx);
        let hooks =
            vrrp_engine::Hooks { before_vips: Some(tx), resume, ..vrrp_engine::Hooks::default() };
        match VrrpEngine::start(&vrrp, hooks).await {
            Ok(e) => Some(e),
            Err(e) => {
                let _ = lock(&shared).dataplane.shutdown();
                return Err(anyhow!(e)).context("starting VRRP");
            }
        }
    };
    // Marked changed: a state published before this subscription (a resumed instance in FAULT)
    // still reaches the dataplane.
    let vrrp_rx = engine.as_ref().map(|e| {
        let mut rx = e.status();
        rx.mark_changed();
        rx
    });
    lock(&shared).vrrp_live = engine.as_ref().map(VrrpEngine::status);
    let runtime_dir = opts.socket.parent().unwrap_or(Path::new("/run/lb")).to_owned();
    // systemd (Type=notify): started once the dataplane is live and VRRP runs.
    let (services, reals) = {
        let s = lock(&shared);
        (s.desired.services.len(), s.desired.services.iter().map(|x| x.reals.len()).sum::<usize>())
    };
    crate::sdnotify::ready(&format!("serving {services} services, {reals} real servers"));
    let watchdog = crate::sdnotify::watchdog_from_env().map(|every| {
        let s = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                // Only while the agent's state can be taken: a wedged agent stops pinging.
                let s = s.clone();
                if tokio::task::spawn_blocking(move || drop(lock(&s))).await.is_ok() {
                    crate::sdnotify::watchdog();
                }
            }
        })
    });
    let sources = Sources { health: health_rx, vrrp: vrrp_rx, masters: master_requests };
    let result = event_loop(&shared, &reloader, &handle, sources, signals, &runtime_dir).await;
    lock(&shared).closed = true;
    crate::sdnotify::stopping();
    if let Some(w) = watchdog {
        w.abort();
    }
    if matches!(result, Ok(Exit::Handover)) {
        // SIGQUIT: leave the pinned dataplane forwarding for the next agent to adopt, and the
        // VRRP masterships (VIPs held, no priority-0 advert) for it to resume.
        if let Some(e) = engine {
            e.abandon().await;
        }
        let bgp = lock(&shared).bgp.take();
        if let Some(b) = bgp {
            b.leave();
        }
        server.abort();
        let _ = server.await;
        tracing::info!("SIGQUIT: exiting with the dataplane left running for the next agent");
        return Ok(());
    }
    let result = result.map(|_| ());
    // Withdraw first, keep forwarding what still arrives for `withdraw_grace`, then stop.
    let grace = {
        let mut s = lock(&shared);
        s.bgp.as_mut().map(|b| {
            b.withdraw_all();
            b.withdraw_grace
        })
    };
    if let Some(grace) = grace.filter(|g| !g.is_zero()) {
        tracing::info!(
            grace_secs = grace.as_secs(),
            "VIPs withdrawn: forwarding until the grace ends"
        );
        tokio::time::sleep(grace).await;
    }
    let bgp = lock(&shared).bgp.take();
    if let Some(b) = bgp {
        let _ = tokio::task::spawn_blocking(move || b.stop()).await;
    }
    if let Some(e) = engine {
        // Hand over first (priority-0 adverts, VIPs removed), then stop forwarding.
        e.stop().await;
    }
    monitor.stop().await;

    server.abort();
    let _ = server.await; // drops the socket, removing its file
    if let Some(t) = metrics_task {
        t.abort();
    }
    for t in status_tasks.into_iter().flatten().chain(sync_task) {
        t.abort();
    }
    lock(&shared).probe.stop();
    let shutdown = lock(&shared).dataplane.shutdown();
    tracing::info!("director stopped");
    result.and(shutdown.map_err(Into::into))
}

#[cfg(test)]
mod tests {
    use std::{
        path::Path,
        sync::atomic::{AtomicBool, Ordering::Relaxed},
    };

    use super::*;
    use crate::{
        config::test_support::AnyHost,
        net::{Mac, iface::Interface},
    };

    /// Works until `done`, counting rounds.
    fn until_done(done: &AtomicBool) -> u32 {
        let mut rounds = 0;
        while !done.load(Relaxed) {
            rounds += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        rounds
    }

    /// The work runs while the load does and stops when it ends; the load's result comes back
    /// as it was, an error included; a panicking load still stops the work, then surfaces.
    #[test]
    fn beside_runs_the_work_during_the_load_and_returns_its_result() {
        let slow = || {
            std::thread::sleep(Duration::from_millis(50));
            Ok::<u32, String>(7)
        };
        let (loaded, rounds) = beside(slow, until_done);
        assert_eq!(loaded, Ok(7));
        assert!(rounds > 0, "the work ran beside the load");
        let (loaded, _) = beside(|| Err::<u32, _>("refused".to_owned()), until_done);
        assert_eq!(loaded, Err("refused".to_owned()));
        let panicked = std::panic::catch_unwind(|| beside(|| panic!("load"), until_done));
        assert!(panicked.is_err());
    }

    fn host(reals: &[String]) -> HostFacts {
        let eth0 =
            Interface { name: "eth0".into(), ifindex: 7, mac: Mac([2; 6]), driver: "veth".into() };
        let mut h = HostFacts::default();
        h.interfaces.insert("eth0".into(), eth0);
        for a in reals {
            h.neighbours
                .0
                .insert((7, a.parse().expect("test address")), Mac([0x52, 0, 0, 0, 0, 1]));
        }
        h
    }

    /// The rings guessed before the load are the very rings of the first desired state (so the
    /// apply takes the tables built ahead), one per XDP service with a table; none under IPVS.
    #[test]
    fn rings_guessed_ahead_are_the_first_desired_states() {
        let mut text = String::new();
        let mut reals = Vec::new();
        for s in 0..5 {
            text.push_str(&format!(
                "[[virtual_server]]\nvip = \"192.0.2.{}\"\nport = 80\ninterface = \"eth0\"\ntable_size = 1021\n",
                100 + s
            ));
            // Service 4's reals have no MAC: no table.
            for r in 0..3 {
                let addr = format!("198.51.100.{}", 10 * s + r + 1);
                text.push_str(&format!("[[virtual_server.real_server]]\naddress = \"{addr}\"\n"));
                if s != 4 {
                    reals.push(addr);
                }
            }
        }
        let config = config::parse_toml(&text, Path::new("t.toml"), &AnyHost).expect("valid");
        let facts = host(&reals);
        for mode in [Mode::Xdp, Mode::Auto] {
            let ahead = rings_ahead(&config, &facts, mode);
            assert_eq!(ahead.len(), 4, "{mode:?}");
            let caps = Capabilities { xdp: Ok(()), ipvs: Err("none".into()) };
            let plan = select::plan(&config, Mode::Xdp, &caps).expect("plan");
            let desired = desired_state(&Inputs {
                config: &config,
                host: &facts,
                health: &HealthSnapshot::default(),
                overrides: &Overrides::default(),
                vrrp: &VrrpStates::default(),
                plan: &plan,
            });
            for (svc, ring) in desired.services.iter().zip(&ahead) {
                assert!(svc.ring.shares(ring), "{mode:?} {}", svc.key);
            }
        }
        assert!(rings_ahead(&config, &facts, Mode::Ipvs).is_empty());
    }
}
