//! Tracked objects: interfaces (`track_interface`, plus the instance's own interface as keepalived
//! tracks it) and `vrrp_script`s, folded per instance into the
//! [`Event::TrackChanged`](super::Event::TrackChanged) the state machine wants.
//!
//! Weights follow keepalived: weight 0 means "down → FAULT"; a positive weight is added to the
//! priority while the object is up; a negative one while it is down. A script's state needs
//! `rise` consecutive successes to become OK and `fall` consecutive failures to become failed;
//! its first result decides at once, and until then it counts as neither.
//!
//! Link state (`IFF_UP` and `IFF_RUNNING`, a missing interface is down) comes from rtnetlink link
//! events (a dump on each), with a dump every [`LINK_POLL`] as a safety net, or every
//! [`LINK_POLL_NO_EVENTS`] if the event subscription fails.

use std::{collections::HashMap, time::Duration};

use futures::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    MulticastGroup,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        RouteNetlinkMessage,
        link::{LinkAttribute, LinkFlags},
    },
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::{config::vrrp::VrrpScript, health::script};

/// Link states are re-read this often even without a link event.
pub const LINK_POLL: Duration = Duration::from_secs(1);
/// ... and this often when link events are not available.
pub const LINK_POLL_NO_EVENTS: Duration = Duration::from_millis(200);

/// What an instance's tracked objects add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackStatus {
    /// An object with weight 0 is down.
    pub fault: bool,
    /// Sum of the weights in effect.
    pub priority_delta: i32,
}

/// One tracked object's contribution: its weight and whether it is up (None: not known yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    pub weight: i32,
    pub up: Option<bool>,
}

/// Folds tracked objects into a [`TrackStatus`].
pub fn evaluate(objects: impl IntoIterator<Item = Tracked>) -> TrackStatus {
    let mut out = TrackStatus::default();
    for o in objects {
        match (o.up, o.weight) {
            (None, _) => {}
            (Some(false), 0) => out.fault = true,
            (Some(true), w) if w > 0 => out.priority_delta += w,
            (Some(false), w) if w < 0 => out.priority_delta += w,
            _ => {}
        }
    }
    out
}

/// A script's OK/failed state with rise/fall hysteresis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptHealth {
    rise: u32,
    fall: u32,
    state: Option<bool>,
    /// Consecutive results against the current state.
    streak: u32,
}

impl ScriptHealth {
    pub fn new(rise: u32, fall: u32) -> ScriptHealth {
        ScriptHealth { rise: rise.max(1), fall: fall.max(1), state: None, streak: 0 }
    }

    /// OK (true), failed (false) or not run yet (None).
    pub fn state(&self) -> Option<bool> {
        self.state
    }

    /// Records one run; true when the state changed.
    pub fn record(&mut self, ok: bool) -> bool {
        match self.state {
            None => {
                self.state = Some(ok);
                self.streak = 0;
                true
            }
            Some(cur) if cur == ok => {
                self.streak = 0;
                false
            }
            Some(_) => {
                self.streak += 1;
                let need = if ok { self.rise } else { self.fall };
                if self.streak >= need {
                    self.state = Some(ok);
                    self.streak = 0;
                    true
                } else {
                    false
                }
            }
        }
    }
}

/// Link state the way keepalived reads it: administratively up and running (carrier).
pub fn link_is_up(flags: LinkFlags) -> bool {
    flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running)
}

/// What one instance tracks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceTracking {
    /// Interface name and weight.
    pub interfaces: Vec<(String, i32)>,
    /// Index into the engine's script list and the weight in effect for this instance.
    pub scripts: Vec<(usize, i32)>,
}

/// Current inputs of the tracker.
#[derive(Clone, Debug, Default)]
struct Inputs {
    links: HashMap<String, bool>,
    scripts: Vec<Option<bool>>,
}

impl Inputs {
    fn status(&self, t: &InstanceTracking) -> TrackStatus {
        let links = t.interfaces.iter().map(|(name, weight)| Tracked {
            weight: *weight,
            up: Some(self.links.get(name).copied().unwrap_or(false)),
        });
        let scripts = t
            .scripts
            .iter()
            .map(|&(idx, weight)| Tracked { weight, up: self.scripts.get(idx).copied().flatten() });
        evaluate(links.chain(scripts))
    }
}

/// Which interface a name stands for: its index, and how many times an interface of that name
/// was seen deleted. An interface deleted and created again is another interface even when the
/// kernel gives it the same index again (it does, in a namespace): the VRRP sockets bound to it
/// lost their multicast membership and must be opened again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkId {
    pub index: u32,
    pub generation: u32,
}

/// The interfaces of the namespace by name.
pub type LinkIndexes = HashMap<String, LinkId>;

/// The running tracker: one watch per instance, plus its tasks.
pub struct Tracker {
    /// Per instance, in the order given to [`Tracker::start`].
    pub status: Vec<watch::Receiver<TrackStatus>>,
    /// Every interface's identity, updated on the same link events and polls as the link
    /// states.
    pub links: watch::Receiver<LinkIndexes>,
    pub tasks: Vec<JoinHandle<()>>,
}

impl Tracker {
    /// Reads the link states once (so the first status is already right), then starts the link
    /// watcher and one runner per script used by any instance.
    pub async fn start(
        instances: Vec<InstanceTracking>,
        scripts: &[VrrpScript],
    ) -> anyhow::Result<Tracker> {
        // A connection of its own: its link dumps must not collide with the VIP code's address
        // dumps (one dump at a time per netlink socket).
        let (conn, handle, _) = rtnetlink::new_connection()?;
        let mut tasks = vec![tokio::spawn(conn)];
        let (links, indexes) = link_states(&handle).await?;
        let mut inputs = Inputs { links, scripts: vec![None; scripts.len()] };
        // Deletions seen per name (from RTM_DELLINK events, or a name missing from a dump).
        let mut deleted: HashMap<String, u32> = HashMap::new();
        let (index_tx, index_rx) = watch::channel(identify(&indexes, &deleted));
        let mut senders = Vec::new();
        let mut status = Vec::new();
        for t in &instances {
            let (tx, rx) = watch::channel(inputs.status(t));
            senders.push(tx);
            status.push(rx);
        }
        let (script_tx, mut script_rx) = mpsc::unbounded_channel::<(usize, Option<bool>)>();
        for (idx, s) in scripts.iter().enumerate() {
            if instances.iter().any(|t| t.scripts.iter().any(|(i, _)| *i == idx)) {
                tasks.push(tokio::spawn(run_script(idx, s.clone(), script_tx.clone())));
            }
        }
        drop(script_tx);
        // Link events; without them (unlikely) a faster poll sees every change within 200 ms.
        let mut events = match rtnetlink::new_multicast_connection(&[MulticastGroup::Link]) {
            Ok((conn, _h, messages)) => {
                tasks.push(tokio::spawn(conn));
                Some(messages)
            }
            Err(e) => {
                tracing::warn!("no rtnetlink link events ({e}); polling link state only");
                None
            }
        };
        tasks.push(tokio::spawn(async move {
            let every = if events.is_some() { LINK_POLL } else { LINK_POLL_NO_EVENTS };
            let mut poll = tokio::time::interval(every);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut scripts_open = true;
            loop {
                tokio::select! {
                    _ = poll.tick() => {}
                    ev = async { events.as_mut()?.next().await }, if events.is_some() => {
                        match ev {
                            Some((msg, _)) => {
                                if let Some(name) = deleted_link(&msg) {
                                    *deleted.entry(name).or_default() += 1;
                                }
                            }
                            None => events = None,
                        }
                    }
                    msg = script_rx.recv(), if scripts_open => match msg {
                        Some((idx, state)) => {
                            inputs.scripts[idx] = state;
                            publish(&inputs, &instances, &senders);
                            continue;
                        }
                        None => scripts_open = false,
                    },
                }
                match link_states(&handle).await {
                    Ok((links, indexes)) => {
                        inputs.links = links;
                        index_tx.send_if_modified(|cur| {
                            // A name gone from a dump was deleted, event or not.
                            for name in cur.keys().filter(|n| !indexes.contains_key(*n)) {
                                *deleted.entry(name.clone()).or_default() += 1;
                            }
                            let new = identify(&indexes, &deleted);
                            let changed = *cur != new;
                            *cur = new;
                            changed
                        });
                    }
                    Err(e) => {
                        tracing::warn!("reading link states: {e:#}");
                        continue;
                    }
                }
                publish(&inputs, &instances, &senders);
            }
        }));
        Ok(Tracker { status, links: index_rx, tasks })
    }
}

fn publish(
    inputs: &Inputs,
    instances: &[InstanceTracking],
    senders: &[watch::Sender<TrackStatus>],
) {
    for (t, tx) in instances.iter().zip(senders) {
        let new = inputs.status(t);
        tx.send_if_modified(|cur| {
            let changed = *cur != new;
            *cur = new;
            changed
        });
    }
}

/// Names an interface's identity: its index and the deletions seen of its name.
fn identify(indexes: &HashMap<String, u32>, deleted: &HashMap<String, u32>) -> LinkIndexes {
    indexes
        .iter()
        .map(|(name, &index)| {
            let generation = deleted.get(name).copied().unwrap_or(0);
            (name.clone(), LinkId { index, generation })
        })
        .collect()
}

/// The interface name of an RTM_DELLINK event.
fn deleted_link(msg: &NetlinkMessage<RouteNetlinkMessage>) -> Option<String> {
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) = &msg.payload else {
        return None;
    };
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// Every interface of the namespace: name → up, and name → ifindex.
async fn link_states(
    handle: &rtnetlink::Handle,
) -> anyhow::Result<(HashMap<String, bool>, HashMap<String, u32>)> {
    let mut out = HashMap::new();
    let mut indexes = HashMap::new();
    let mut links = handle.link().get().execute();
    while let Some(msg) = links.try_next().await? {
        let name = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        if let Some(name) = name {
            indexes.insert(name.clone(), msg.header.index);
            out.insert(name, link_is_up(msg.header.flags));
        }
    }
    Ok((out, indexes))
}

/// Runs one `vrrp_script` every `interval` (each run bounded by `timeout`) and reports its state
/// changes.
async fn run_script(idx: usize, s: VrrpScript, tx: mpsc::UnboundedSender<(usize, Option<bool>)>) {
    let mut health = ScriptHealth::new(s.rise, s.fall);
    let mut tick = tokio::time::interval(s.interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = script::run_shell(&s.script, s.timeout).await;
        let ok = matches!(&result, Ok(status) if status.success());
        if health.record(ok) {
            match &result {
                Ok(status) => tracing::info!(script = %s.name, %status,
                    "vrrp_script is now {}", if ok { "OK" } else { "failed" }),
                Err(e) => tracing::info!(script = %s.name, "vrrp_script is now failed: {e}"),
            }
            if tx.send((idx, health.state())).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(weight: i32, up: Option<bool>) -> Tracked {
        Tracked { weight, up }
    }

    #[test]
    fn weights_follow_keepalived() {
        let st = |objs: &[Tracked]| evaluate(objs.iter().copied());
        assert_eq!(st(&[]), TrackStatus::default());
        // Weight 0: down means FAULT; up means nothing.
        assert_eq!(st(&[t(0, Some(true))]), TrackStatus { fault: false, priority_delta: 0 });
        assert_eq!(st(&[t(0, Some(false))]), TrackStatus { fault: true, priority_delta: 0 });
        // Positive: added while up. Negative: added while down.
        assert_eq!(st(&[t(10, Some(true)), t(-20, Some(true))]).priority_delta, 10);
        assert_eq!(st(&[t(10, Some(false)), t(-20, Some(false))]).priority_delta, -20);
        assert_eq!(st(&[t(10, Some(true)), t(-20, Some(false))]).priority_delta, -10);
        // Unknown counts as nothing at all.
        assert_eq!(st(&[t(0, None), t(5, None), t(-5, None)]), TrackStatus::default());
    }

    #[test]
    fn script_health_first_result_decides_then_rise_and_fall() {
        let mut h = ScriptHealth::new(2, 3);
        assert_eq!(h.state(), None);
        assert!(h.record(true));
        assert_eq!(h.state(), Some(true));
        // Two failures are not enough with fall 3; a success in between resets the streak.
        assert!(!h.record(false));
        assert!(!h.record(false));
        assert!(!h.record(true));
        assert!(!h.record(false));
        assert!(!h.record(false));
        assert!(h.record(false));
        assert_eq!(h.state(), Some(false));
        // Rise 2.
        assert!(!h.record(true));
        assert!(h.record(true));
        assert_eq!(h.state(), Some(true));
        // rise/fall 0 behave as 1.
        let mut h = ScriptHealth::new(0, 0);
        assert!(h.record(false));
        assert!(h.record(true));
    }

    #[test]
    fn inputs_per_instance() {
        let mut inputs = Inputs::default();
        inputs.links.insert("eth0".into(), true);
        inputs.links.insert("eth1".into(), false);
        inputs.scripts = vec![Some(false), None];
        let own_only = InstanceTracking { interfaces: vec![("eth0".into(), 0)], scripts: vec![] };
        assert_eq!(inputs.status(&own_only), TrackStatus::default());
        // A missing interface is down.
        let missing = InstanceTracking { interfaces: vec![("nosuch".into(), 0)], scripts: vec![] };
        assert!(inputs.status(&missing).fault);
        let weighted = InstanceTracking {
            interfaces: vec![("eth0".into(), 0), ("eth1".into(), -30)],
            scripts: vec![(0, -15), (1, 0)],
        };
        assert_eq!(inputs.status(&weighted), TrackStatus { fault: false, priority_delta: -45 });
    }

    #[test]
    fn a_deleted_name_is_another_interface_even_with_the_same_index() {
        let indexes: HashMap<String, u32> = [("eth0".to_string(), 3)].into();
        let id = |deleted: &HashMap<String, u32>| identify(&indexes, deleted)["eth0"];
        let before = id(&HashMap::new());
        assert_eq!(before, LinkId { index: 3, generation: 0 });
        let after = id(&[("eth0".to_string(), 1)].into());
        assert_ne!(before, after, "deleted and created again with index 3");
        // Deletions of other names change nothing.
        assert_eq!(id(&[("eth1".to_string(), 4)].into()), before);

        let mut del = rtnetlink::packet_route::link::LinkMessage::default();
        del.attributes.push(LinkAttribute::IfName("eth0".into()));
        let msg = NetlinkMessage::from(RouteNetlinkMessage::DelLink(del.clone()));
        assert_eq!(deleted_link(&msg).as_deref(), Some("eth0"));
        let msg = NetlinkMessage::from(RouteNetlinkMessage::NewLink(del));
        assert_eq!(deleted_link(&msg), None);
    }

    #[test]
    fn link_flags() {
        assert!(link_is_up(LinkFlags::Up | LinkFlags::Running | LinkFlags::LowerUp));
        assert!(!link_is_up(LinkFlags::Up));
        assert!(!link_is_up(LinkFlags::Running));
    }
}
