//! One instance's task: feeds its state machine and carries out the actions (adverts, VIPs,
//! gratuitous ARPs, notify scripts), publishing its status.

use super::*;

/// An instance's notify scripts.
#[derive(Clone, Debug, Default)]
pub(super) struct NotifyScripts {
    master: Option<String>,
    backup: Option<String>,
    fault: Option<String>,
    stop: Option<String>,
    generic: Option<String>,
}

impl NotifyScripts {
    pub(super) fn of(c: &VrrpInstance) -> NotifyScripts {
        NotifyScripts {
            master: c.notify_master.clone(),
            backup: c.notify_backup.clone(),
            fault: c.notify_fault.clone(),
            stop: c.notify_stop.clone(),
            generic: c.notify.clone(),
        }
    }

    /// The command lines to run on entering `state`, in keepalived's order (specific, generic).
    pub(super) fn commands(&self, name: &str, state: State, priority: u8) -> Vec<String> {
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

pub(super) struct InstanceTask {
    pub(super) idx: usize,
    pub(super) name: String,
    pub(super) ifname: String,
    pub(super) machine: Instance,
    /// The VIPs' addresses (adverts, gratuitous ARPs, status).
    pub(super) addrs: Vec<IpAddr>,
    /// Adverts in and out.
    pub(super) wire: Wire,
    /// The VIPs on the interface.
    pub(super) vips: Vips,
    pub(super) hooks: Hooks,
    pub(super) status: Arc<watch::Sender<VrrpStatus>>,
    pub(super) notifier: Notifier,
    pub(super) scripts: NotifyScripts,
    /// Position in the sync group and its task.
    pub(super) group: Option<(usize, mpsc::UnboundedSender<MemberChange>)>,
    /// (state, own fault) last told to the group.
    pub(super) reported: Option<(State, bool)>,
    /// Pending gratuitous ARP bursts (cancelled when leaving MASTER).
    pub(super) garps: Vec<JoinHandle<()>>,
    /// The answer to the last [`MasterRequest`], awaited before the VIPs are added.
    pub(super) dataplane: Option<oneshot::Receiver<()>>,
    pub(super) track: TrackStatus,
    pub(super) logs: RateLimit,
}

/// How an instance sends and checks adverts.
pub(super) struct Wire {
    /// The address adverts come from.
    pub(super) primary: IpAddr,
    pub(super) expect: Expect,
    pub(super) auth: Auth,
    pub(super) destinations: Vec<IpAddr>,
    /// The interface's socket, `None` while the interface is missing.
    pub(super) socket: SocketSlot,
}

/// An instance's VIPs on its interface.
pub(super) struct Vips {
    pub(super) ops: vip::Netlink,
    pub(super) addresses: Vec<VirtualAddress>,
    /// The VIPs were added (and not removed since).
    pub(super) held: bool,
}

impl InstanceTask {
    pub(super) async fn run(
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
        self.vips.held = true;
        let res = match iface::index(&self.ifname) {
            Ok(ifindex) => vip::add_all(&self.vips.ops, ifindex, &self.vips.addresses).await,
            Err(e) => Err(e.into()),
        };
        let took = at.elapsed();
        match res {
            Ok(()) => tracing::info!(instance = %self.name, interface = %self.ifname,
                vips = self.vips.addresses.len(), since_event_us = took.as_micros() as u64, "VIPs added"),
            Err(e) => tracing::error!(instance = %self.name, "adding VIPs: {e:#}"),
        }
        self.status.send_if_modified(|s| {
            s.instances[self.idx].vips_held = true;
            false
        });
    }

    async fn remove_vips(&mut self) {
        if !self.hooks.manage_vips || !self.vips.held {
            return;
        }
        self.vips.held = false;
        // The index is read each time: the interface may have been created again since.
        match iface::index(&self.ifname) {
            Ok(ifindex) => {
                match vip::remove_present(&self.vips.ops, ifindex, &self.vips.addresses).await {
                    Ok(removed) => tracing::info!(instance = %self.name, interface = %self.ifname,
                    vips = removed.len(), "VIPs removed"),
                    Err(e) => tracing::error!(instance = %self.name, "removing VIPs: {e:#}"),
                }
            }
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
        let advert = self.machine.advert(priority, self.addrs.clone(), self.wire.auth.clone());
        let socket = self.wire.socket.borrow().clone();
        for i in 0..self.wire.destinations.len() {
            let dst = self.wire.destinations[i];
            let result = match (advert.encode(self.wire.primary, dst), &socket) {
                (Ok(msg), Some(sock)) => {
                    sock.send(self.wire.primary, dst, &msg).await.map_err(|e| e.to_string())
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
            Inbound::Advert { ip, .. } if ip.src == self.wire.primary => return self.own_address(),
            Inbound::Rejected { src, .. } if src == self.wire.primary => return self.own_address(),
            Inbound::Advert { rx, ip } => (rx, ip),
            Inbound::Rejected { error, src } => return self.reject(&error, src),
        };
        let addresses = self.machine.address_check(ip.src);
        let notes = match self.wire.expect.check_with(&rx, &ip, addresses) {
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
            State::Master => (Some(self.wire.primary), Some(self.machine.effective_priority())),
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
