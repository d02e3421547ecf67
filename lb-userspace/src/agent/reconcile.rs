//! Reconciling: the one place the agent's inputs become the dataplane's state. Every change
//! (VRRP, health, neighbours, `lb drain`/`weight`, reloads) ends in [`Shared::reconcile`] or, for a
//! reload, [`Shared::switch_to`], under the agent lock.

use super::*;

/// What a reload needs besides the running state. Reading, parsing, validating and planning a
/// new config use only this, so they never hold the agent lock: a slow file must not hold up
/// health transitions, VRRP or the control socket.
pub(super) struct Reloader {
    /// The file given to `lb run -c`, re-read on reload (same format and strictness).
    pub(super) config_path: PathBuf,
    pub(super) format: FormatChoice,
    pub(super) strict: bool,
    /// `--dataplane` and what this host can do: each reload plans again with them.
    pub(super) mode: Mode,
    pub(super) caps: Capabilities,
    /// For the netlink queries a reload makes from a blocking thread.
    pub(super) rt: tokio::runtime::Handle,
    pub(super) netlink: rtnetlink::Handle,
    /// Held from reading the file to switching to it: one reload at a time. It keeps the parts
    /// of the last file read that the next reload need not parse again.
    pub(super) running: Mutex<crate::config::ParseMemo>,
}

/// What a reload does when another one is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Turn {
    /// Wait for it (SIGHUP: nobody waits on an answer, and the file may have changed again).
    Wait,
    /// Refuse at once (`lb reload`: the client would otherwise time out without a word).
    Refuse,
}

/// A new config read and checked without the agent lock, ready to switch to.
pub(super) struct Prepared {
    config: Config,
    plan: Plan,
    facts: HostFacts,
    monitored: Vec<MonitoredReal>,
    /// Milliseconds reading and checking the file, and reading the host's routes.
    parse_ms: u64,
    host_ms: u64,
}

/// Milliseconds of the steps of a reload's switch (its log line: where a slow reload goes).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SwitchSteps {
    /// On another thread, beside the steps up to `log_ms`.
    summary_ms: u64,
    desired_ms: u64,
    apply_ms: u64,
    /// Neighbour probes for new reals and the reals' log lines.
    log_ms: u64,
    monitor_ms: u64,
}

/// What a switch did, for the reload's reply and log line.
pub(super) struct Switched {
    services: usize,
    reals: usize,
    changes: changes::Changes,
    steps: SwitchSteps,
    retired: Retired,
}

/// What a reload replaced: the old config, host facts, desired state and plan; and the health
/// monitor, whose update beside the reply frees the old reals' settings.
pub(super) struct Retired {
    replaced: (Config, HostFacts, Desired, Plan),
    monitor: Arc<HealthMonitor>,
}

/// Frees what a reload replaced and hands the memory back to the system (tens of MiB at 1,000
/// services) beside the reply rather than before it: neither changes what runs. The trim waits
/// for the monitor's update, which frees memory too (else ~6 MiB stay with the process).
fn retire(retired: Retired) {
    let freeing = std::thread::Builder::new().name("lb-reload-free".into()).spawn(move || {
        let Retired { replaced, monitor } = retired;
        drop(replaced);
        monitor.settle();
        super::release_freed_memory();
    });
    if freeing.is_err() {
        // No thread to spare (the closure, and what it held, is freed already): trim here.
        super::release_freed_memory();
    }
}

/// Milliseconds since the last lap.
struct Lap(Instant);

impl Lap {
    fn new() -> Self {
        Lap(Instant::now())
    }

    fn ms(&mut self) -> u64 {
        let now = Instant::now();
        let ms = now.duration_since(self.0).as_millis() as u64;
        self.0 = now;
        ms
    }
}

/// Refused `lb reload` while another reload runs; the text is what the operator sees.
const RELOAD_BUSY: &str = "a reload is already in progress: try again when it has finished";

impl Shared {
    /// The reload counters and the running config's hash, which a reload leaves empty for
    /// the first reader to compute (an MD5 of the whole config: not worth delaying a reply).
    fn running_reloads(&mut self) -> crate::control::proto::ReloadsView {
        if self.reloads.config_hash.is_empty() {
            self.reloads.config_hash = config_hash(&self.config);
        }
        self.reloads.clone()
    }

    /// What `lb backends` and `lb status` (and the metrics) show.
    pub(super) fn views(&mut self) -> Result<(BackendsView, StatusView), String> {
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
            reloads: self.running_reloads(),
            flow_sync: self
                .flow_sync
                .as_ref()
                .filter(|_| self.config.flow_sync.is_some())
                .map(|s| s.view()),
            bgp: self.bgp.as_ref().map(crate::bgp::agent::BgpAgent::view),
            pick_fingerprints: crate::bgp::fingerprints(
                &self.desired,
                self.config.dataplane.hash_seed,
            ),
        };
        Ok((backends, status))
    }

    /// The desired state for the current inputs.
    pub(super) fn compute(&self) -> Desired {
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
    pub(super) fn reconcile(&mut self, why: &str) -> anyhow::Result<()> {
        let desired = self.compute();
        if desired != self.desired {
            if let Err(e) = self.dataplane.apply(&desired) {
                // Not forwarding as desired: attract no traffic until an apply succeeds.
                if let Some(b) = &mut self.bgp {
                    b.dataplane_ok = false;
                }
                self.announce();
                return Err(e).with_context(|| format!("applying {why}"));
            }
            tracing::info!("{why}: dataplane updated");
            log_desired(Some(&self.desired), &desired);
            self.desired = desired;
        }
        self.probe.apply(&crate::health::probe::desired(&self.config, &self.facts));
        // What runs is what was last applied with success.
        if let Some(b) = &mut self.bgp {
            b.dataplane_ok = true;
        }
        self.announce();
        Ok(())
    }

    /// The announced VIPs follow the desired state (route health injection).
    pub(super) fn announce(&mut self) {
        if let Some(b) = &mut self.bgp {
            b.update(&self.desired, &self.health, !self.closed);
        }
    }

    /// `lb bgp withdraw|announce [VIP]`.
    pub(super) fn bgp_operator(
        &mut self,
        action: &str,
        vip: Option<&str>,
    ) -> anyhow::Result<serde_json::Value> {
        let Some(b) = &mut self.bgp else {
            anyhow::bail!("no [bgp] section in the running configuration")
        };
        let withdraw = match action {
            "withdraw" => true,
            "announce" => false,
            other => anyhow::bail!("unknown bgp action {other:?}: withdraw or announce"),
        };
        let vip = vip.map(str::parse::<IpAddr>).transpose().context("VIP")?;
        let vips = b.operator(withdraw, vip).map_err(|e| anyhow!(e))?;
        self.announce();
        tracing::info!(action, vips = ?vips, "operator BGP override");
        Ok(serde_json::json!({ "action": action, "vips": vips }))
    }

    /// `lb drain` / `lb undrain` / `lb weight`: validated against the running config, applied
    /// at once, kept until the next reload.
    pub(super) fn change(
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
    pub(super) fn switch_to(
        &mut self,
        new: Prepared,
        overrides_before: &Overrides,
    ) -> anyhow::Result<Switched> {
        let mut steps = SwitchSteps::default();
        let mut lap = Lap::new();
        if self.closed {
            anyhow::bail!("the agent is stopping: the new configuration was not applied");
        }
        let speaker = |c: &Config| c.bgp.as_ref().map(|b| b.speaker);
        if speaker(&self.config) != speaker(&new.config) {
            anyhow::bail!(
                "[bgp] added, removed or its speaker changed: restart lb to apply it (nothing \
                 was changed)"
            );
        }
        let Prepared { config, plan, mut facts, monitored, .. } = new;
        // The neighbour table as last read: it may have changed while the file was read.
        facts.neighbours = self.facts.neighbours.clone();
        let overrides = overrides_after_reload(&self.overrides, overrides_before, &config);
        // The change summary only reads the two configs: another CPU computes it while this
        // one applies. (The config hash, 10-30 ms at 1,000 services, is computed when first
        // read: see `views`.)
        let running = &self.config;
        let summary = || {
            let mut lap = Lap::new();
            let changes = changes::Changes::between(running, &config);
            (changes, lap.ms())
        };
        let (desired, summary) = std::thread::scope(|scope| {
            let beside = std::thread::Builder::new()
                .name("lb-reload-summary".into())
                .spawn_scoped(scope, summary);
            let desired = desired_state(&Inputs {
                config: &config,
                host: &facts,
                health: &self.health,
                overrides: &overrides,
                vrrp: &self.vrrp,
                plan: &plan,
            });
            steps.desired_ms = lap.ms();
            if let Err(e) = self.dataplane.apply(&desired) {
                // Put back what was running; the old state was applied before, so this succeeds
                // unless the kernel refuses map updates altogether.
                if let Err(again) = self.dataplane.apply(&self.desired) {
                    tracing::error!(error = %again, "restoring the previous state after a failed reload");
                }
                return Err(e).context("applying the new configuration (previous one kept)");
            }
            steps.apply_ms = lap.ms();
            // New reals: start resolving their MACs now rather than at the next re-probe.
            for (idx, name, addr) in wanted_neighbours(&config, &facts) {
                if facts.neighbours.get(idx, addr).is_none() {
                    let _ = neigh::provoke(&name, addr);
                }
            }
            log_desired(Some(&self.desired), &desired);
            // The file named an existing user when it was read; one removed since keeps the old.
            if let Err(e) = crate::health::script::apply_setting(config.script_user.as_ref()) {
                tracing::error!(error = %e, "script_user: scripts keep running as before");
            }
            // Before the checks start: a new check through the VIP must find its target.
            self.probe.apply(&crate::health::probe::desired(&config, &facts));
            steps.log_ms = lap.ms();
            let summary = match beside {
                Ok(thread) => thread.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
                // No thread to spare: here, after the apply.
                Err(_) => summary(),
            };
            Ok((desired, summary))
        })?;
        let (changes, summary_ms) = summary;
        steps.summary_ms = summary_ms;
        let services = desired.services.len();
        let reals: usize = desired.services.iter().map(|s| s.reals.len()).sum();
        // Unchanged reals keep their health state and running checks. The monitor takes the
        // new reals beside the reply (the next update waits for this one).
        self.monitor.update_beside(monitored);
        steps.monitor_ms = lap.ms();
        let old_config = std::mem::replace(&mut self.config, config);
        if let Some(tx) = &self.flow_sync_config {
            // The sync edge re-binds only for a change of the settings, not of their location.
            let settings = |c: &Option<FlowSyncConfig>| c.as_ref().map(FlowSyncDesired::from);
            let new = self.config.flow_sync.clone();
            tx.send_if_modified(|c| {
                let changed = settings(c) != settings(&new);
                if changed {
                    *c = new;
                }
                changed
            });
        }
        let retired = Retired {
            replaced: (
                old_config,
                std::mem::replace(&mut self.facts, facts),
                std::mem::replace(&mut self.desired, desired),
                std::mem::replace(&mut self.plan, plan),
            ),
            monitor: self.monitor.clone(),
        };
        // Runtime changes last until a reload.
        self.overrides = overrides;
        if let (Some(b), Some(bgp)) = (&mut self.bgp, &self.config.bgp) {
            b.reload(bgp);
        }
        self.announce();
        Ok(Switched { services, reals, changes, steps, retired })
    }
}

impl Reloader {
    /// Re-reads the config file and applies it: the one reload path of `lb reload` and SIGHUP.
    /// The agent lock is taken only briefly to read the running VRRP settings, and to switch.
    pub(super) fn reload(
        &self,
        shared: &Mutex<Shared>,
        turn: Turn,
    ) -> anyhow::Result<serde_json::Value> {
        let mut running = match (turn, self.running.try_lock()) {
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
        let switched = self.prepare(&running_vrrp, &mut running).and_then(|prepared| {
            let prepared_ms = started.elapsed().as_millis() as u64;
            let (parse_ms, host_ms) = (prepared.parse_ms, prepared.host_ms);
            let mut lap = Lap::new();
            let mut s = lock(shared);
            let switched = s.switch_to(prepared, &overrides_before)?;
            // Computed when first read (`views`): the reply need not wait for it.
            s.reloads.config_hash.clear();
            drop(s);
            let switch_ms = lap.ms();
            retire(switched.retired);
            let counts = (switched.services, switched.reals);
            Ok((
                counts,
                prepared_ms,
                switched.changes,
                (parse_ms, host_ms, switch_ms),
                switched.steps,
            ))
        });
        let ((services, reals), prepared_ms, changes, (parse_ms, host_ms, switch_ms), steps) =
            match switched {
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
            parse_ms,
            host_ms,
            reused_blocks = running.reused(),
            switch_ms,
            summary_ms = steps.summary_ms,
            desired_ms = steps.desired_ms,
            apply_ms = steps.apply_ms,
            log_ms = steps.log_ms,
            monitor_ms = steps.monitor_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "configuration reloaded"
        );
        Ok(
            serde_json::json!({ "config": self.config_path.display().to_string(), "services": services, "reals": reals }),
        )
    }

    /// Reads, parses and validates the file and plans its dataplanes, without the agent lock.
    fn prepare(
        &self,
        running_vrrp: &crate::config::vrrp::VrrpConfig,
        memo: &mut crate::config::ParseMemo,
    ) -> anyhow::Result<Prepared> {
        let started = Instant::now();
        let config = load_config(&self.config_path, self.format, self.strict, memo)?;
        let parse_ms = started.elapsed().as_millis() as u64;
        if config.vrrp != *running_vrrp {
            // Restarting instances would give up mastership mid-reload; keepalived users expect
            // VRRP changes to need a restart too.
            anyhow::bail!("VRRP settings changed: restart lb to apply them (nothing was changed)");
        }
        let plan = plan_dataplanes(&config, self.mode, &self.caps)?;
        let host = Instant::now();
        let facts =
            self.rt.block_on(host_facts(&self.netlink, &config, &neigh::Neighbours::default()))?;
        let host_ms = host.elapsed().as_millis() as u64;
        let monitored = monitored_reals(&config);
        Ok(Prepared { config, plan, facts, monitored, parse_ms, host_ms })
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

/// Seconds since the Unix epoch (0 for a clock before it).
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A short hash of the configuration as the agent runs it (what was read, not the file's bytes).
pub(super) fn config_hash(config: &Config) -> String {
    use md5::{Digest as _, Md5};
    /// Hashes the JSON as it is written, in blocks: no copy of the whole text.
    struct Hashing(Md5);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, Hashing(Md5::new()));
    let written = serde_json::to_writer(&mut out, config).is_ok();
    // As before: a config that cannot be written hashes as the empty text.
    let digest = match out.into_inner() {
        Ok(Hashing(md5)) if written => md5.finalize(),
        _ => Md5::digest([]),
    };
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
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

    /// The hash written as the JSON is produced is the hash of the whole JSON text (what
    /// `lb status` showed before), and follows the config.
    #[test]
    fn config_hash_is_the_md5_of_the_config_as_json() {
        use md5::{Digest as _, Md5};
        for reals in [&[11u8][..], &[11, 12], &(101..=250).collect::<Vec<u8>>()] {
            let config = config(reals);
            let text = serde_json::to_vec(&config).expect("serialisable");
            let want: String =
                Md5::digest(&text).iter().take(8).map(|b| format!("{b:02x}")).collect();
            assert_eq!(config_hash(&config), want, "{} reals", reals.len());
        }
        assert_ne!(config_hash(&config(&[11])), config_hash(&config(&[12])));
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

    /// A dataplane whose applies fail while `fail` is set.
    struct Flaky(Arc<std::sync::atomic::AtomicBool>);

    impl Dataplane for Flaky {
        fn apply(&mut self, _: &Desired) -> Result<(), crate::dataplane::DataplaneError> {
            if self.0.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(crate::dataplane::DataplaneError::Unavailable("test: refused".into()));
            }
            Ok(())
        }
        fn counters(
            &mut self,
        ) -> Result<crate::dataplane::Counters, crate::dataplane::DataplaneError> {
            Ok(crate::dataplane::Counters::default())
        }
        fn status(&self) -> crate::dataplane::Status {
            crate::dataplane::Status::default()
        }
        fn shutdown(&mut self) -> Result<(), crate::dataplane::DataplaneError> {
            Ok(())
        }
    }

    /// A host with `eth0` and the reals of `config` as neighbours.
    fn shared_facts(config: &Config) -> HostFacts {
        use crate::net::{Mac, iface::Interface};
        let eth0 =
            Interface { name: "eth0".into(), ifindex: 7, mac: Mac([2; 6]), driver: "veth".into() };
        let mut facts = HostFacts::default();
        facts.interfaces.insert("eth0".into(), eth0);
        for r in &config.virtual_servers[0].real_servers {
            facts.neighbours.0.insert((7, r.address), Mac([0x52, 0, 0, 0, 0, 1]));
        }
        facts
    }

    /// The agent's state for `config` on a host with `eth0` and the reals as neighbours, BGP
    /// deciding but announcing nowhere.
    fn shared(config: Config, dataplane: Flaky) -> Shared {
        let facts = shared_facts(&config);
        let bgp = config.bgp.as_ref().map(crate::bgp::agent::BgpAgent::detached);
        Shared {
            config,
            facts,
            overrides: Overrides::default(),
            vrrp: VrrpStates::default(),
            vrrp_status: None,
            vrrp_live: None,
            health: HealthSnapshot::default(),
            desired: Desired::default(),
            dataplane: Box::new(dataplane),
            plan: Plan::default(),
            started: Instant::now(),
            monitor: Arc::new(HealthMonitor::start(Vec::new(), 1).expect("monitor")),
            pinned: false,
            closed: false,
            listeners: Vec::new(),
            reloads: crate::control::proto::ReloadsView::default(),
            bgp,
            flow_sync: None,
            flow_sync_config: None,
            probe: Default::default(),
        }
    }

    /// A switch reports the change summary (computed beside the apply), and the status the hash
    /// of the config it switched to (computed when first read); a failed apply switches to
    /// nothing and keeps the config.
    #[test]
    fn a_switch_reports_its_changes_and_hash_and_a_failed_one_keeps_the_config() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _rt = rt.enter();
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut shared = shared(config(&[11, 12]), Flaky(fail.clone()));
        // Every real's MAC known: no neighbour is provoked on the test host.
        shared.facts.neighbours = shared_facts(&config(&[11, 12, 13])).neighbours;
        shared.reconcile("start").expect("applied");
        let prepared = |reals: &[u8]| {
            let config = config(reals);
            Prepared {
                monitored: monitored_reals(&config),
                plan: Plan::default(),
                facts: shared_facts(&config),
                config,
                parse_ms: 0,
                host_ms: 0,
            }
        };
        // (case, new reals, apply fails, reals after, changes)
        type Case = (&'static str, &'static [u8], bool, &'static [u8], &'static str);
        let cases: &[Case] = &[
            (
                "real added",
                &[11, 12, 13],
                false,
                &[11, 12, 13],
                "services +0 -0 ~0, reals +1 -0 ~0",
            ),
            ("same again", &[11, 12, 13], false, &[11, 12, 13], "nothing"),
            ("refused", &[11], true, &[11, 12, 13], ""),
            ("reals removed", &[13], false, &[13], "services +0 -0 ~0, reals +0 -2 ~0"),
        ];
        for &(case, reals, fails, after, changes) in cases {
            fail.store(fails, std::sync::atomic::Ordering::Relaxed);
            let new = prepared(reals);
            let hash = config_hash(&new.config);
            match shared.switch_to(new, &Overrides::default()) {
                Ok(switched) => {
                    assert!(!fails, "{case}");
                    assert_eq!(switched.changes.to_string(), changes, "{case}");
                    // What a reload leaves for the first reader to compute.
                    shared.reloads.config_hash.clear();
                }
                Err(e) => assert!(fails, "{case}: {e:#}"),
            }
            let got: Vec<IpAddr> =
                shared.config.virtual_servers[0].real_servers.iter().map(|r| r.address).collect();
            let want: Vec<IpAddr> = after.iter().map(|r| IpAddr::from([192, 0, 2, *r])).collect();
            assert_eq!(got, want, "{case}");
            assert_eq!(shared.desired.services[0].reals.len(), after.len(), "{case}");
            // The running config's hash, also after a refused switch.
            let (_, status) = shared.views().expect("views");
            assert_eq!(status.reloads.config_hash, config_hash(&shared.config), "{case}");
            if !fails {
                assert_eq!(status.reloads.config_hash, hash, "{case}");
            }
            // The monitor took the reals beside the switch, and only from a switch that held.
            shared.monitor.settle();
            let monitored: Vec<IpAddr> = shared.monitor.real_ids().iter().map(|id| id.1).collect();
            assert_eq!(monitored, want, "{case}");
        }
    }

    /// Route health injection follows what was applied: a failed apply withdraws the VIPs
    /// (the director may not forward as desired), the next successful one announces them again.
    #[test]
    fn a_failed_apply_withdraws_until_an_apply_succeeds() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _rt = rt.enter();
        let mut config = config(&[11, 12]);
        config.bgp = parse_toml(
            "[bgp]\nlocal_as = 65010\nrouter_id = \"198.51.100.2\"\nspeaker = \"external\"\n\
             export_table = 100\n",
            Path::new("t.toml"),
            &FakeHost,
        )
        .expect("valid [bgp]")
        .bgp;
        let key = config.virtual_servers[0].key();
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut shared = shared(config, Flaky(fail.clone()));
        let vip = |s: &Shared| {
            let view = s.bgp.as_ref().unwrap().view();
            assert_eq!(view.vips.len(), 1, "{view:?}");
            (view.vips[0].announced, view.vips[0].reason.clone())
        };
        shared.reconcile("start").expect("applied");
        assert_eq!(vip(&shared), (true, "ready".to_owned()));

        fail.store(true, std::sync::atomic::Ordering::Relaxed);
        shared.overrides.0.insert((key, IpAddr::from([192, 0, 2, 11]), 80), Override::Drain);
        assert!(shared.reconcile("drain").is_err());
        assert_eq!(vip(&shared), (false, "dataplane not live".to_owned()));
        // Still failing, whatever wakes the reconciler: still withdrawn.
        assert!(shared.reconcile("health").is_err());
        assert_eq!(vip(&shared), (false, "dataplane not live".to_owned()));

        fail.store(false, std::sync::atomic::Ordering::Relaxed);
        shared.reconcile("retry").expect("applied");
        assert_eq!(vip(&shared), (true, "ready".to_owned()));
    }
}
