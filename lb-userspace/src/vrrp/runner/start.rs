//! Starting the engine, one step per function: host facts per instance (stale VIPs removed
//! first), one socket per (interface, family), tracking, then the tasks (sync groups, receive
//! loops, instances), wired by their channels.

use super::*;

/// The socket of each (interface, family).
type Sockets = HashMap<(String, Family), SocketSlot>;

/// An instance's host facts, read before anything runs.
pub(super) struct Ready {
    ifindex: u32,
    primary: IpAddr,
    machine: Instance,
}

/// Everything `VrrpEngine::start` wires; the tasks it starts go to `background` (aborted by the
/// caller on error).
pub(super) async fn wire(
    vrrp: &VrrpConfig,
    plans: &[Plan],
    hooks: Hooks,
    handle: rtnetlink::Handle,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<VrrpEngine> {
    let ops = vip::Netlink::new(handle);
    let ready = host_facts(vrrp, plans, &hooks, &ops).await?;
    let (sockets, bound) = open_sockets(plans, &ready)?;

    let tracker = Tracker::start(plans.iter().map(|p| p.tracking.clone()).collect(), &vrrp.scripts)
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
    let (cmd_txs, cmd_rxs): (Vec<_>, Vec<_>) =
        plans.iter().map(|_| mpsc::unbounded_channel()).unzip();
    let (in_txs, in_rxs): (Vec<_>, Vec<_>) =
        plans.iter().map(|_| mpsc::channel(INBOUND_QUEUE)).unzip();
    let group_txs = spawn_groups(vrrp, plans, &cmd_txs, hooks.notify_timeout, background);
    spawn_receivers(plans, &sockets, in_txs, &status, background);

    let mut instances = Vec::new();
    let iter = plans.iter().zip(ready).zip(cmd_rxs).zip(in_rxs).zip(tracker.status);
    for (idx, ((((p, r), cmd_rx), in_rx), track_rx)) in iter.enumerate() {
        let socket = sockets[&(p.cfg.interface.clone(), p.family)].clone();
        let group = p.group.map(|(g, pos)| (pos, group_txs[g].clone()));
        let task = InstanceTask::new(idx, p, r, socket, &ops, &hooks, &status, group);
        instances.push((cmd_txs[idx].clone(), tokio::spawn(task.run(cmd_rx, in_rx, track_rx))));
    }
    Ok(VrrpEngine {
        status,
        instances,
        background: std::mem::take(background),
        stop_limit: hooks.notify_timeout + Duration::from_secs(5),
    })
}

/// Per instance: its interface, the address its adverts come from and its state machine. Stale
/// VIPs go first (before anyone can see us as MASTER), except those of resumed instances.
async fn host_facts(
    vrrp: &VrrpConfig,
    plans: &[Plan],
    hooks: &Hooks,
    ops: &vip::Netlink,
) -> Result<Vec<Ready>> {
    let all_vips: Vec<IpAddr> =
        vrrp.instances.iter().flat_map(|i| i.virtual_ipaddress.iter().map(|v| v.address)).collect();
    let mut ready = Vec::new();
    for p in plans.iter() {
        let name = &p.cfg.name;
        let ifindex =
            iface::index(&p.cfg.interface).with_context(|| format!("vrrp_instance {name}"))?;
        if hooks.manage_vips && !hooks.resume.contains(name) {
            let removed = vip::remove_present(ops, ifindex, &p.cfg.virtual_ipaddress)
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
                        let what = if p.family == Family::V6 { "link-local IPv6" } else { "IPv4" };
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
    Ok(ready)
}

/// One socket per (interface, family), shared by its instances, and what the rebind task needs
/// to open each again.
fn open_sockets(plans: &[Plan], ready: &[Ready]) -> Result<(Sockets, Vec<Bound>)> {
    let mut sockets = Sockets::new();
    let mut bound = Vec::new();
    for (p, r) in plans.iter().zip(ready) {
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
    Ok((sockets, bound))
}

/// One task per sync group; returns each group's channel.
fn spawn_groups(
    vrrp: &VrrpConfig,
    plans: &[Plan],
    cmd_txs: &[mpsc::UnboundedSender<Cmd>],
    notify_timeout: Duration,
    background: &mut Vec<JoinHandle<()>>,
) -> Vec<mpsc::UnboundedSender<MemberChange>> {
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
        background.push(tokio::spawn(run_group(group.clone(), members, rx, notify_timeout)));
    }
    group_txs
}

/// Receive loops: VRID → instance, per socket.
fn spawn_receivers(
    plans: &[Plan],
    sockets: &Sockets,
    in_txs: Vec<mpsc::Sender<Inbound>>,
    status: &Arc<watch::Sender<VrrpStatus>>,
    background: &mut Vec<JoinHandle<()>>,
) {
    for ((ifname, family), sock) in sockets {
        let mut routes = HashMap::new();
        for (i, p) in plans.iter().enumerate() {
            if (&p.cfg.interface, p.family) == (ifname, *family) {
                routes.insert(p.cfg.virtual_router_id, (i, in_txs[i].clone()));
            }
        }
        let task = receive_loop(ifname.clone(), sock.clone(), routes, status.clone());
        background.push(tokio::spawn(task));
    }
}

impl InstanceTask {
    /// The task of instance `idx` (config order).
    #[allow(clippy::too_many_arguments)]
    fn new(
        idx: usize,
        p: &Plan,
        r: Ready,
        socket: SocketSlot,
        ops: &vip::Netlink,
        hooks: &Hooks,
        status: &Arc<watch::Sender<VrrpStatus>>,
        group: Option<(usize, mpsc::UnboundedSender<MemberChange>)>,
    ) -> InstanceTask {
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
        InstanceTask {
            idx,
            name: c.name.clone(),
            ifname: c.interface.clone(),
            machine: r.machine,
            addrs,
            wire: Wire { primary: r.primary, expect, auth: p.auth.clone(), destinations, socket },
            vips: Vips { ops: ops.clone(), addresses: c.virtual_ipaddress.clone(), held: false },
            hooks: hooks.clone(),
            status: status.clone(),
            notifier: Notifier::spawn(hooks.notify_timeout),
            scripts: NotifyScripts::of(c),
            group,
            reported: None,
            garps: Vec::new(),
            dataplane: None,
            track: TrackStatus::default(),
            logs: RateLimit::new(LOG_EVERY),
        }
    }
}
