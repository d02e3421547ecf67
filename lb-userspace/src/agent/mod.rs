//! `lb run`: wires the pure cores to the world. Inputs (config, interfaces, neighbour table) feed
//! `desired_state`; the dataplane applies the result; the control socket shows it.

mod changes;
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
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::{
    cli::load::{self, FormatChoice},
    config::{Config, SystemHost},
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
    desired::{Desired, HostFacts, Inputs, RealState, VrrpStates, desired_state, real_ifindex},
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
}

/// What a reload needs besides the running state. Reading, parsing, validating and planning a
/// new config use only this, so they never hold the agent lock: a slow file must not hold up
/// health transitions, VRRP or the control socket.
struct Reloader {
    /// The file given to `lb run -c`, re-read on reload (same format and strictness).
    config_path: PathBuf,
    format: FormatChoice,
    strict: bool,
    /// `--dataplane` and what this host can do: each reload plans again with them.
    mode: Mode,
    caps: Capabilities,
    /// For the netlink queries a reload makes from a blocking thread.
    rt: tokio::runtime::Handle,
    netlink: rtnetlink::Handle,
    /// Held from reading the file to switching to it: one reload at a time.
    running: Mutex<()>,
}

/// What a reload does when another one is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Turn {
    /// Wait for it (SIGHUP: nobody waits on an answer, and the file may have changed again).
    Wait,
    /// Refuse at once (`lb reload`: the client would otherwise time out without a word).
    Refuse,
}

/// A new config read and checked without the agent lock, ready to switch to.
struct Prepared {
    config: Config,
    plan: Plan,
    facts: HostFacts,
    monitored: Vec<MonitoredReal>,
}

/// Refused `lb reload` while another reload runs; the text is what the operator sees.
const RELOAD_BUSY: &str = "a reload is already in progress: try again when it has finished";

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
            Request::Backends {} | Request::Status {} => None,
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

impl Shared {
    /// What `lb backends` and `lb status` (and the metrics) show.
    fn views(&mut self) -> Result<(BackendsView, StatusView), String> {
        let counters = self.dataplane.counters().map_err(|e| format!("reading counters: {e}"))?;
        let status = self.dataplane.status();
        let backends = view::backends(&self.desired, &counters);
        let status = StatusView {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            config: self.config.source.display().to_string(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            dataplane: status.into(),
            counters: counters.global.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            events: counters.events.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            services: self.desired.services.len(),
            reals: self.desired.services.iter().map(|x| x.reals.len()).sum(),
            service_dataplanes: view::service_dataplanes(&self.desired),
            vrrp: match &self.vrrp_live {
                Some(rx) => serde_json::to_value(&*rx.borrow()).ok(),
                None => self.vrrp_status.as_ref().and_then(|v| serde_json::to_value(v).ok()),
            },
            listeners: self.listeners.iter().map(|l| (l.name().to_owned(), l.view())).collect(),
            checks_not_run: self.monitor.checks_not_run(),
            health_checks: self.monitor.check_stats(),
            reloads: self.reloads.clone(),
        };
        Ok((backends, status))
    }

    /// The desired state for the current inputs.
    fn compute(&self) -> Desired {
        desired_state(&Inputs {
            config: &self.config,
            host: &self.facts,
            health: &self.health,
            overrides: &self.overrides,
            vrrp: &self.vrrp,
            plan: &self.plan,
        })
    }

    /// Recomputes and applies the desired state if anything changed.
    fn reconcile(&mut self, why: &str) -> anyhow::Result<()> {
        let desired = self.compute();
        if desired == self.desired {
            return Ok(());
        }
        self.dataplane.apply(&desired).with_context(|| format!("applying {why}"))?;
        tracing::info!("{why}: dataplane updated");
        log_desired(&desired);
        self.desired = desired;
        Ok(())
    }

    /// `lb drain` / `lb undrain` / `lb weight`: validated against the running config, applied
    /// at once, kept until the next reload.
    fn change(
        &mut self,
        service: &str,
        real: &str,
        change: Change,
    ) -> anyhow::Result<serde_json::Value> {
        let selector: ServiceSelector = service.parse()?;
        let ids = overrides::select(&self.config, &selector, overrides::parse_real(real)?)?;
        let before = self.overrides.clone();
        for id in &ids {
            match change {
                Change::Drain => {
                    self.overrides.0.insert(*id, Override::Drain);
                }
                Change::Undrain => {
                    if self.overrides.0.get(id) == Some(&Override::Drain) {
                        self.overrides.0.remove(id);
                    }
                }
                Change::Weight(w) => {
                    self.overrides.0.insert(*id, Override::Weight(w));
                }
            }
        }
        if let Err(e) = self.reconcile(&format!("{change:?} {real} in {service}")) {
            self.overrides = before;
            return Err(e);
        }
        let changed: Vec<ChangedView> = ids
            .iter()
            .filter_map(|(key, addr, port)| {
                let svc = self.desired.services.iter().find(|s| s.key == *key)?;
                let r = svc.reals.iter().find(|r| r.address == *addr && r.port == *port)?;
                Some(ChangedView {
                    service: key.to_string(),
                    real: std::net::SocketAddr::new(*addr, *port).to_string(),
                    state: r.state.as_str().to_owned(),
                    weight: r.weight,
                })
            })
            .collect();
        Ok(serde_json::json!({ "changed": changed }))
    }

    /// Switches to a prepared config: the only step of a reload under the agent lock. A config
    /// that fails to apply changes nothing: the running state stays as it was.
    /// `overrides_before` are the runtime changes when the reload began: it clears those, and
    /// keeps any made while it read (they came after it) for reals the new config still has.
    fn switch_to(
        &mut self,
        new: Prepared,
        overrides_before: &Overrides,
    ) -> anyhow::Result<(usize, usize)> {
        if self.closed {
            anyhow::bail!("the agent is stopping: the new configuration was not applied");
        }
        let Prepared { config, plan, mut facts, monitored } = new;
        // The neighbour table as last read: it may have changed while the file was read.
        facts.neighbours = self.facts.neighbours.clone();
        let overrides = overrides_after_reload(&self.overrides, overrides_before, &config);
        let desired = desired_state(&Inputs {
            config: &config,
            host: &facts,
            health: &self.health,
            overrides: &overrides,
            vrrp: &self.vrrp,
            plan: &plan,
        });
        if let Err(e) = self.dataplane.apply(&desired) {
            // Put back what was running; the old state was applied before, so this succeeds
            // unless the kernel refuses map updates altogether.
            if let Err(again) = self.dataplane.apply(&self.desired) {
                tracing::error!(error = %again, "restoring the previous state after a failed reload");
            }
            return Err(e).context("applying the new configuration (previous one kept)");
        }
        // New reals: start resolving their MACs now rather than at the next re-probe.
        for (idx, name, addr) in wanted_neighbours(&config, &facts) {
            if facts.neighbours.get(idx, addr).is_none() {
                let _ = neigh::provoke(&name, addr);
            }
        }
        let services = desired.services.len();
        let reals: usize = desired.services.iter().map(|s| s.reals.len()).sum();
        log_desired(&desired);
        // Unchanged reals keep their health state and running checks.
        self.monitor.update(monitored);
        self.config = config;
        self.facts = facts;
        self.desired = desired;
        self.plan = plan;
        // Runtime changes last until a reload.
        self.overrides = overrides;
        Ok((services, reals))
    }
}

impl Reloader {
    /// Re-reads the config file and applies it: the one reload path of `lb reload` and SIGHUP.
    /// The agent lock is taken only briefly to read the running VRRP settings, and to switch.
    fn reload(&self, shared: &Mutex<Shared>, turn: Turn) -> anyhow::Result<serde_json::Value> {
        let _running = match (turn, self.running.try_lock()) {
            (_, Ok(g)) => g,
            (_, Err(TryLockError::Poisoned(e))) => e.into_inner(),
            (Turn::Refuse, Err(TryLockError::WouldBlock)) => anyhow::bail!(RELOAD_BUSY),
            (Turn::Wait, Err(TryLockError::WouldBlock)) => {
                tracing::info!("a reload is already in progress: this one waits its turn");
                self.running.lock().unwrap_or_else(|e| e.into_inner())
            }
        };
        let started = Instant::now();
        tracing::info!(config = %self.config_path.display(), "reloading the configuration");
        crate::sdnotify::reloading();
        // Only reloads change the config, and they run one at a time: this stays current.
        let (running_vrrp, overrides_before) = {
            let s = lock(shared);
            (s.config.vrrp.clone(), s.overrides.clone())
        };
        let switched = self.prepare(&running_vrrp).and_then(|prepared| {
            let prepared_ms = started.elapsed().as_millis() as u64;
            let changes = changes::Changes::between(&lock(shared).config, &prepared.config);
            let hash = config_hash(&prepared.config);
            let mut s = lock(shared);
            let counts = s.switch_to(prepared, &overrides_before)?;
            s.reloads.config_hash = hash;
            Ok((counts, prepared_ms, changes))
        });
        let ((services, reals), prepared_ms, changes) = match switched {
            Ok(v) => {
                let mut s = lock(shared);
                s.reloads.succeeded += 1;
                s.reloads.last_success = Some(unix_now());
                v
            }
            Err(e) => {
                lock(shared).reloads.failed += 1;
                crate::sdnotify::ready(&format!(
                    "reload refused, previous configuration kept: {e:#}"
                ));
                return Err(e);
            }
        };
        crate::sdnotify::ready(&format!("reloaded: {services} services, {reals} real servers"));
        tracing::info!(
            config = %self.config_path.display(),
            services,
            reals,
            changed = %changes,
            read_ms = prepared_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "configuration reloaded"
        );
        Ok(
            serde_json::json!({ "config": self.config_path.display().to_string(), "services": services, "reals": reals }),
        )
    }

    /// Reads, parses and validates the file and plans its dataplanes, without the agent lock.
    fn prepare(&self, running_vrrp: &crate::config::vrrp::VrrpConfig) -> anyhow::Result<Prepared> {
        let config = load_config(&self.config_path, self.format, self.strict)?;
        if config.vrrp != *running_vrrp {
            // Restarting instances would give up mastership mid-reload; keepalived users expect
            // VRRP changes to need a restart too.
            anyhow::bail!("VRRP settings changed: restart lb to apply them (nothing was changed)");
        }
        let plan = plan_dataplanes(&config, self.mode, &self.caps)?;
        let facts =
            self.rt.block_on(host_facts(&self.netlink, &config, &neigh::Neighbours::default()))?;
        let monitored = monitored_reals(&config);
        Ok(Prepared { config, plan, facts, monitored })
    }
}

/// The runtime changes a reload keeps: those made while it read its file (`now` but not
/// `before`, the changes when it began), for reals `config` still has. Older ones it clears.
fn overrides_after_reload(now: &Overrides, before: &Overrides, config: &Config) -> Overrides {
    let in_config = |(key, addr, port): &RealId| {
        config.virtual_servers.iter().any(|vs| {
            vs.key() == *key
                && vs.real_servers.iter().any(|r| r.address == *addr && r.port == *port)
        })
    };
    Overrides(
        now.0
            .iter()
            .filter(|(id, o)| before.0.get(id) != Some(o) && in_config(id))
            .map(|(id, o)| (*id, *o))
            .collect(),
    )
}

/// Loads the config, logging keepalived.conf warnings (they were accepted, not acted on).
fn load_config(
    path: &std::path::Path,
    format: FormatChoice,
    strict: bool,
) -> anyhow::Result<Config> {
    let loaded = load::load(path, &SystemHost, format, strict).map_err(|e| anyhow!("{e}"))?;
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

/// Map sizes large enough for `config` (never below the compiled defaults).
fn limits_for(config: &Config) -> XdpLimits {
    let settings = &config.dataplane;
    let tables: u32 = config.virtual_servers.iter().map(|v| 2 * v.table_size).sum();
    XdpLimits {
        max_services: settings.max_services,
        // Slot 0 is never used.
        max_reals: settings.max_reals.saturating_add(1),
        // Room for every table twice over, so reloads can move tables and add services.
        ring_entries: XdpLimits::default().ring_entries.max(2 * tables),
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
    for rs in reals {
        if facts.routes.contains_key(&rs.address) {
            continue;
        }
        match route::egress(netlink, rs.address).await.context("querying the routing table")? {
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
    Ok(facts)
}

fn log_desired(d: &Desired) {
    for s in &d.services {
        for r in &s.reals {
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
    let config = load_config(&opts.config, opts.format, opts.strict)?;
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
    let mut facts = host_facts(&handle, &config, &neigh::Neighbours::default()).await?;
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

    let (xdp, ipvs, caps) = start_dataplanes(&opts, &config)?;
    let plan = plan_dataplanes(&config, opts.dataplane, &caps)?;
    let adopted = xdp.as_ref().map(XdpDataplane::adopted_services).unwrap_or_default();
    let mut dataplane = Hybrid { xdp, ipvs };
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
    let desired = desired_state(&Inputs {
        config: &config,
        host: &facts,
        health: &health,
        overrides: &overrides,
        vrrp: &vrrp,
        plan: &plan,
    });
    if let Err(e) = dataplane.apply(&desired) {
        // Never run half-configured: undo what was attached.
        let _ = dataplane.shutdown();
        return Err(e).context("programming the dataplane");
    }
    log_desired(&desired);
    tracing::info!(
        config = %opts.config.display(),
        services = desired.services.len(),
        socket = %opts.socket.display(),
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
        running: Mutex::new(()),
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
    }));
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
    let engine = if lock(&shared).config.vrrp.instances.is_empty() {
        None
    } else {
        let vrrp = lock(&shared).config.vrrp.clone();
        // Becoming MASTER: the services go live *before* the engine adds the VIPs and sends
        // gratuitous ARPs, so no packet for the VIP reaches this host's kernel (which would
        // answer with a reset). Leaving MASTER goes through the status channel, after the VIPs
        // are gone, so forwarding continues until then.
        let s = shared.clone();
        let on_state: vrrp_engine::OnState = Arc::new(move |change: &vrrp_engine::StateChange| {
            if change.to != VrrpState::Master {
                return;
            }
            let started = Instant::now();
            let mut s = lock(&s);
            if s.vrrp.masters.insert(change.instance.clone()) {
                match s.reconcile("becoming VRRP master") {
                    Ok(()) => tracing::info!(
                        instance = %change.instance,
                        apply_us = started.elapsed().as_micros() as u64,
                        "dataplane up before the VIPs"
                    ),
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "bringing the dataplane up")
                    }
                }
            }
        });
        let hooks = vrrp_engine::Hooks {
            on_state: Some(on_state),
            resume,
            ..vrrp_engine::Hooks::default()
        };
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
    let result =
        event_loop(&shared, &reloader, &handle, health_rx, vrrp_rx, signals, &runtime_dir).await;
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
        server.abort();
        let _ = server.await;
        tracing::info!("SIGQUIT: exiting with the dataplane left running for the next agent");
        return Ok(());
    }
    let result = result.map(|_| ());
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
    for t in status_tasks.into_iter().flatten() {
        t.abort();
    }
    let shutdown = lock(&shared).dataplane.shutdown();
    tracing::info!("director stopped");
    result.and(shutdown.map_err(Into::into))
}

/// The signals the agent handles, registered at the start of `lb run`: from then on a signal is
/// queued for the event loop instead of taking its default action.
struct Signals {
    quit: Signal,
    term: Signal,
    int: Signal,
    hup: Signal,
    /// keepalived's data dump and stats dump: files in the runtime directory.
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
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
    async fn stop(&mut self) -> &'static str {
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
enum Dump {
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

/// Seconds since the Unix epoch (0 for a clock before it).
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A short hash of the configuration as the agent runs it (what was read, not the file's bytes).
fn config_hash(config: &Config) -> String {
    use md5::{Digest as _, Md5};
    let bytes = serde_json::to_vec(config).unwrap_or_default();
    let digest = Md5::digest(&bytes);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
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

/// Why the event loop ended.
enum Exit {
    /// SIGTERM/SIGINT: stop forwarding and clean up.
    Stop,
    /// SIGQUIT with a pinned dataplane: exit, leaving forwarding to the next agent.
    Handover,
}

async fn event_loop(
    shared: &Arc<Mutex<Shared>>,
    reloader: &Arc<Reloader>,
    handle: &rtnetlink::Handle,
    mut health: tokio::sync::watch::Receiver<HealthSnapshot>,
    mut vrrp: Option<tokio::sync::watch::Receiver<VrrpStatus>>,
    signals: Signals,
    runtime_dir: &Path,
) -> anyhow::Result<Exit> {
    let Signals { mut quit, mut term, mut int, mut hup, mut usr1, mut usr2 } = signals;
    let mut tick = tokio::time::interval(NEIGH_REFRESH);
    let mut last_probe = Instant::now();
    // VRRP instances in FAULT, last we heard.
    let mut faulted = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); return Ok(Exit::Stop); }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); return Ok(Exit::Stop); }
            _ = quit.recv() => {
                if lock(shared).pinned {
                    return Ok(Exit::Handover);
                }
                tracing::warn!("SIGQUIT with an unpinned dataplane (--no-pin, or no bpf filesystem): stopping (nothing could be handed over)");
                return Ok(Exit::Stop);
            }
            changed = async {
                match vrrp.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(rx) = vrrp.as_mut() else { continue };
                if changed.is_err() {
                    vrrp = None;
                    continue;
                }
                let status = rx.borrow_and_update().clone();
                let named = |state: VrrpState| -> Vec<String> {
                    status.instances.iter().filter(|i| i.state == state).map(|i| i.name.clone()).collect()
                };
                // An instance out of FAULT: its interface may be a new one (deleted and created
                // again), so re-read interfaces and routes and resolve the reals now, not at
                // the next periodic probe.
                let in_fault: std::collections::HashSet<String> = named(VrrpState::Fault).into_iter().collect();
                if faulted.iter().any(|n| !in_fault.contains(n)) {
                    last_probe = Instant::now().checked_sub(REPROBE).unwrap_or(last_probe);
                    tick.reset_immediately();
                }
                faulted = in_fault;
                let mut masters: std::collections::HashSet<String> =
                    named(VrrpState::Master).into_iter().collect();
                let unknown = named(VrrpState::Initialize);
                let s = shared.clone();
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
                match result {
                    Ok(Ok(true)) => tracing::info!(
                        apply_us = started.elapsed().as_micros() as u64,
                        "VRRP state change in the dataplane"
                    ),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "applying a VRRP change"),
                    Err(e) => tracing::error!(error = %e, "VRRP task failed"),
                }
            }
            changed = health.changed() => {
                if changed.is_err() {
                    continue;
                }
                let snapshot = health.borrow_and_update().clone();
                let s = shared.clone();
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
            _ = tick.tick() => {
                let neighbours = match neigh::dump(handle).await {
                    Ok(n) => n,
                    Err(e) => { tracing::warn!(error = %e, "reading the neighbour table"); continue; }
                };
                // Unresolved reals: look at their routes again (a link may have come up) and
                // provoke resolution, every few seconds.
                let reprobe = last_probe.elapsed() >= REPROBE && {
                    let s = lock(shared);
                    wanted_neighbours(&s.config, &s.facts).iter().any(|(i, _, a)| neighbours.get(*i, *a).is_none())
                };
                let mut routes = None;
                if reprobe {
                    last_probe = Instant::now();
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
                    wanted.iter().filter_map(|(i, _, a)| n.get(*i, *a).map(|m| ((*i, *a), m.to_string()))).collect()
                };
                if !reprobe && relevant(&neighbours) == relevant(&s.facts.neighbours) {
                    continue;
                }
                s.facts.neighbours = neighbours;
                if let Err(e) = s.reconcile("neighbour or route change") {
                    tracing::error!(error = %format!("{e:#}"), "reconcile failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{parse_toml, test_support::FakeHost};

    fn config(reals: &[u8]) -> Config {
        let mut text =
            "[[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\ninterface = \"eth0\"\n"
                .to_owned();
        for r in reals {
            text.push_str(&format!("[[virtual_server.real_server]]\naddress = \"192.0.2.{r}\"\n"));
        }
        parse_toml(&text, Path::new("t.toml"), &FakeHost).expect("valid config")
    }

    fn overrides(config: &Config, entries: &[(u8, Override)]) -> Overrides {
        let key = config.virtual_servers[0].key();
        Overrides(
            entries.iter().map(|(r, o)| ((key, IpAddr::from([192, 0, 2, *r]), 80), *o)).collect(),
        )
    }

    #[test]
    fn a_reload_keeps_only_the_runtime_changes_made_while_it_read() {
        use Override::{Drain, Weight};
        // (case, reals in the new config, changes when the reload began, changes at the
        // switch, changes kept)
        type Case = (
            &'static str,
            &'static [u8],
            &'static [(u8, Override)],
            &'static [(u8, Override)],
            &'static [(u8, Override)],
        );
        let cases: &[Case] = &[
            ("none", &[11, 12], &[], &[], &[]),
            ("older ones cleared", &[11, 12], &[(11, Drain)], &[(11, Drain)], &[]),
            ("made during the read kept", &[11, 12], &[], &[(12, Drain)], &[(12, Drain)]),
            (
                "changed during the read kept",
                &[11, 12],
                &[(11, Drain)],
                &[(11, Weight(5))],
                &[(11, Weight(5))],
            ),
            (
                "mixed",
                &[11, 12],
                &[(11, Drain)],
                &[(11, Drain), (12, Weight(3))],
                &[(12, Weight(3))],
            ),
            ("real gone from the new config", &[11], &[], &[(12, Drain)], &[]),
        ];
        for (case, reals, before, now, kept) in cases {
            let config = config(reals);
            let got = overrides_after_reload(
                &overrides(&config, now),
                &overrides(&config, before),
                &config,
            );
            assert_eq!(got, overrides(&config, kept), "{case}");
        }
    }
}
