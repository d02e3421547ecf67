//! `lb run`: wires the pure cores to the world. Inputs (config, interfaces, neighbour table) feed
//! `desired_state`; the dataplane applies the result; the control socket shows it.

pub mod view;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::{self, Config, SystemHost},
    control::{
        proto::{Request, Response, StatusView},
        server::{ControlSocket, Handler},
    },
    dataplane::{
        Dataplane,
        xdp::{XdpDataplane, XdpLimits, XdpModeSetting},
    },
    desired::{Desired, HostFacts, RealState, desired_state},
    maglev,
    net::{iface, neigh},
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
}

/// Everything the reconciler and the control socket share.
struct Shared {
    /// The file given to `lb run -c`, re-read on reload.
    config_path: PathBuf,
    config: Config,
    facts: HostFacts,
    desired: Desired,
    dataplane: Box<dyn Dataplane>,
    started: Instant,
}

struct AgentHandler(Arc<Mutex<Shared>>);

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock cannot leave the state half-written in a way that matters
    // more than stopping answering; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handler for AgentHandler {
    fn handle(&self, request: Request) -> Response {
        let mut s = lock(&self.0);
        if let Request::Reload {} = request {
            return match s.reload() {
                Ok(summary) => Response::ok(summary),
                Err(e) => Response::error(format!("{e:#}")),
            };
        }
        let counters = match s.dataplane.counters() {
            Ok(c) => c,
            Err(e) => return Response::error(format!("reading counters: {e}")),
        };
        let data = match request {
            Request::Backends {} => {
                let kind = s.dataplane.status().kind;
                serde_json::to_value(view::backends(&s.desired, &counters, kind))
            }
            Request::Reload {} => return Response::error("internal error: reload not handled"),
            Request::Status {} => serde_json::to_value(StatusView {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                config: s.config.source.display().to_string(),
                pid: std::process::id(),
                uptime_secs: s.started.elapsed().as_secs(),
                dataplane: s.dataplane.status().into(),
                counters: counters.global.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
                services: s.desired.services.len(),
                reals: s.desired.services.iter().map(|x| x.reals.len()).sum(),
            }),
        };
        match data {
            Ok(d) => Response::ok(d),
            Err(e) => Response::error(format!("internal error: {e}")),
        }
    }
}

impl Shared {
    /// Re-reads the config file and applies it. A config that fails to load or apply changes
    /// nothing: the running state stays as it was.
    fn reload(&mut self) -> anyhow::Result<serde_json::Value> {
        let config = config::load(&self.config_path, &SystemHost).map_err(|e| anyhow!("{e}"))?;
        let mut facts = self.facts.clone();
        for vs in &config.virtual_servers {
            if !facts.interfaces.contains_key(&vs.interface) {
                let i = iface::lookup(&vs.interface)
                    .with_context(|| format!("interface {} of {}", vs.interface, vs.key()))?;
                facts.interfaces.insert(i.name.clone(), i);
            }
        }
        facts
            .interfaces
            .retain(|name, _| config.virtual_servers.iter().any(|v| &v.interface == name));
        let desired = desired_state(&config, &facts);
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
        tracing::info!(config = %self.config_path.display(), services, reals, "configuration reloaded");
        log_desired(&desired);
        self.config = config;
        self.facts = facts;
        self.desired = desired;
        Ok(
            serde_json::json!({ "config": self.config_path.display().to_string(), "services": services, "reals": reals }),
        )
    }
}

/// Map sizes large enough for `config` (never below the compiled defaults).
fn limits_for(config: &Config) -> XdpLimits {
    let d = XdpLimits::default();
    let services = config.virtual_servers.len() as u32;
    let reals: u32 = config.virtual_servers.iter().map(|v| v.real_servers.len() as u32).sum();
    XdpLimits {
        max_services: d.max_services.max(services),
        max_reals: d.max_reals.max(reals + 1),
        ring_entries: d.ring_entries.max(2 * maglev::DEFAULT_SIZE * services),
    }
}

/// (ifindex, ifname, address) of every real whose MAC the dataplane needs.
fn wanted_neighbours(config: &Config, facts: &HostFacts) -> Vec<(u32, String, IpAddr)> {
    config
        .virtual_servers
        .iter()
        .filter_map(|vs| facts.interfaces.get(&vs.interface).map(|i| (vs, i)))
        .flat_map(|(vs, i)| {
            vs.real_servers.iter().map(move |rs| (i.ifindex, i.name.clone(), rs.address))
        })
        .collect()
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
    let config = config::load(&opts.config, &SystemHost).map_err(|e| anyhow!("{e}"))?;
    // Claim the socket first: a second agent must fail before touching the dataplane.
    let socket = ControlSocket::bind(&opts.socket)?;

    let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(conn);
    let mut facts = HostFacts::default();
    for vs in &config.virtual_servers {
        let i = iface::lookup(&vs.interface)
            .with_context(|| format!("interface {} of {}", vs.interface, vs.key()))?;
        facts.interfaces.insert(i.name.clone(), i);
    }
    let wanted = wanted_neighbours(&config, &facts);
    facts.neighbours = neigh::resolve(&handle, &wanted, RESOLVE_TIMEOUT)
        .await
        .context("reading the neighbour table")?;

    let mut dataplane = XdpDataplane::load(opts.xdp_mode, limits_for(&config))
        .context("loading the XDP dataplane (needs root: CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)")?;
    let desired = desired_state(&config, &facts);
    if let Err(e) = dataplane.apply(&desired) {
        // Never run half-configured: undo what was attached.
        let _ = dataplane.shutdown();
        return Err(e).context("programming the XDP dataplane");
    }
    log_desired(&desired);
    tracing::info!(
        config = %opts.config.display(),
        services = desired.services.len(),
        socket = %opts.socket.display(),
        "director running"
    );

    let shared = Arc::new(Mutex::new(Shared {
        config_path: opts.config.clone(),
        config,
        facts,
        desired,
        dataplane: Box::new(dataplane),
        started: Instant::now(),
    }));
    let server = tokio::spawn(socket.serve(Arc::new(AgentHandler(shared.clone()))));

    let result = event_loop(&shared, &handle).await;

    server.abort();
    let _ = server.await; // drops the socket, removing its file
    let shutdown = lock(&shared).dataplane.shutdown();
    tracing::info!("director stopped");
    result.and(shutdown.map_err(Into::into))
}

/// Waits for a stop signal while keeping real-server MACs current.
async fn event_loop(shared: &Arc<Mutex<Shared>>, handle: &rtnetlink::Handle) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(NEIGH_REFRESH);
    let mut last_probe = Instant::now();
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); return Ok(()); }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); return Ok(()); }
            _ = hup.recv() => {
                let s = shared.clone();
                // Reload does blocking syscalls; keep the event loop responsive.
                let result = tokio::task::spawn_blocking(move || lock(&s).reload()).await;
                match result {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "SIGHUP: reload failed, previous configuration kept"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: reload task failed"),
                }
            }
            _ = tick.tick() => {
                let neighbours = match neigh::dump(handle).await {
                    Ok(n) => n,
                    Err(e) => { tracing::warn!(error = %e, "reading the neighbour table"); continue; }
                };
                let mut s = lock(shared);
                let wanted = wanted_neighbours(&s.config, &s.facts);
                if last_probe.elapsed() >= REPROBE {
                    last_probe = Instant::now();
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
                if relevant(&neighbours) == relevant(&s.facts.neighbours) {
                    continue;
                }
                s.facts.neighbours = neighbours;
                let desired = desired_state(&s.config, &s.facts);
                match s.dataplane.apply(&desired) {
                    Ok(()) => {
                        tracing::info!("neighbour table changed: dataplane updated");
                        log_desired(&desired);
                        s.desired = desired;
                    }
                    Err(e) => tracing::error!(error = %e, "applying neighbour change"),
                }
            }
        }
    }
}
