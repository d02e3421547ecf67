//! What the VRRP engine publishes (a `tokio::sync::watch` of [`VrrpStatus`]): per instance its
//! state, priority, master and counters, for the agent (bring the dataplane up or down for the
//! instance's VIPs) and for `lb status`.
//!
//! The watch wakes its receivers only on what they act on — state, master, priority, timers.
//! Counters are updated in place without a wake-up, so `borrow()` always shows current numbers
//! while a once-a-second advert does not wake the agent.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use serde::{Serialize, Serializer};

use super::{
    announce::BurstReport,
    machine::{IgnoreReason, State},
};

/// Every instance, in config order.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VrrpStatus {
    pub instances: Vec<InstanceStatus>,
    /// Valid-looking adverts for VRIDs no instance runs (other routers on the segment).
    pub foreign_adverts: u64,
    /// Packets that were not even a well-formed IP packet carrying VRRP.
    pub malformed: u64,
}

impl VrrpStatus {
    /// The instance named `name`.
    pub fn instance(&self, name: &str) -> Option<&InstanceStatus> {
        self.instances.iter().find(|i| i.name == name)
    }

    /// The instance holding `vip`, if any.
    pub fn instance_for(&self, vip: IpAddr) -> Option<&InstanceStatus> {
        self.instances.iter().find(|i| i.vips.contains(&vip))
    }
}

/// One `vrrp_instance`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    /// 2 or 3.
    pub version: u8,
    /// The virtual addresses (without prefix).
    pub vips: Vec<IpAddr>,
    /// Our adverts' source address.
    pub primary_address: IpAddr,
    #[serde(serialize_with = "state_str")]
    pub state: State,
    /// Configured priority.
    pub base_priority: u8,
    /// Configured priority plus tracking weights.
    pub effective_priority: u8,
    /// The current master: the router a BACKUP listens to (None until it has heard one, or
    /// after a priority-0 advert), our own address when MASTER.
    pub master: Option<IpAddr>,
    /// The master's advertised priority (ours when MASTER).
    pub master_priority: Option<u8>,
    /// Our advert interval.
    #[serde(serialize_with = "secs")]
    pub advert_int: Duration,
    /// Master_Down_Interval at the current priority and master interval.
    #[serde(serialize_with = "secs")]
    pub master_down_interval: Duration,
    /// A tracked interface or script (or a sync-group peer) keeps the instance in FAULT.
    pub track_fault: bool,
    /// Sum of the tracking weights in effect.
    pub priority_delta: i32,
    /// Whether the VIPs are on the interface now.
    pub vips_held: bool,
    /// Wall-clock time of the last state change.
    #[serde(serialize_with = "opt_unix")]
    pub last_transition: Option<SystemTime>,
    /// The last gratuitous ARP / NA burst.
    pub last_garp: Option<BurstReport>,
    pub counters: Counters,
}

/// Per-instance counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Adverts sent (one per destination), priority-0 ones included.
    pub adverts_sent: u64,
    pub priority_zero_sent: u64,
    /// Adverts that passed every check and were fed to the state machine.
    pub adverts_received: u64,
    pub priority_zero_received: u64,
    /// Adverts discarded by the packet checks, by [`super::PacketError::reason`].
    pub rejected: BTreeMap<&'static str, u64>,
    /// Valid adverts the state machine ignored, by [`ignore_reason`].
    pub ignored: BTreeMap<&'static str, u64>,
    /// Adverts the kernel refused to send.
    pub send_errors: u64,
    /// Adverts dropped because the instance's queue was full.
    pub queue_full: u64,
    /// Gratuitous ARPs / unsolicited NAs sent.
    pub garps_sent: u64,
    /// State changes.
    pub transitions: u64,
    /// Times the instance became MASTER.
    pub became_master: u64,
}

impl Counters {
    /// Total of the rejected adverts.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// A stable label for an [`IgnoreReason`].
pub fn ignore_reason(reason: IgnoreReason) -> &'static str {
    match reason {
        IgnoreReason::NotRunning => "not_running",
        IgnoreReason::Fault => "fault",
        IgnoreReason::NotAPeer => "not_a_peer",
        IgnoreReason::WrongFamily => "wrong_family",
        IgnoreReason::OwnAddress => "own_address",
        IgnoreReason::LowerPriority => "lower_priority",
    }
}

fn state_str<S: Serializer>(state: &State, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.as_str())
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A duration as whole microseconds.
pub(super) fn micros<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn opt_unix<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()) {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serializes_for_lb_status() {
        let mut c = Counters::default();
        *c.rejected.entry("bad_ttl").or_default() += 2;
        *c.ignored.entry(ignore_reason(IgnoreReason::LowerPriority)).or_default() += 1;
        let st = VrrpStatus {
            instances: vec![InstanceStatus {
                name: "VI_1".into(),
                interface: "eth0".into(),
                vrid: 51,
                version: 3,
                vips: vec!["192.0.2.200".parse().unwrap()],
                primary_address: "192.0.2.12".parse().unwrap(),
                state: State::Backup,
                base_priority: 90,
                effective_priority: 90,
                master: Some("192.0.2.11".parse().unwrap()),
                master_priority: Some(100),
                advert_int: Duration::from_secs(1),
                master_down_interval: Duration::from_micros(3_648_437),
                track_fault: false,
                priority_delta: 0,
                vips_held: false,
                last_transition: None,
                last_garp: Some(BurstReport {
                    sent: 5,
                    failed: 0,
                    took: Duration::from_micros(42),
                }),
                counters: c,
            }],
            foreign_adverts: 0,
            malformed: 0,
        };
        let v = serde_json::to_value(&st).unwrap();
        let i = &v["instances"][0];
        assert_eq!(i["state"], "BACKUP");
        assert_eq!(i["master"], "192.0.2.11");
        assert_eq!(i["advert_int"], 1.0);
        assert_eq!(i["last_garp"]["took"], 42);
        assert_eq!(i["counters"]["rejected"]["bad_ttl"], 2);
        assert_eq!(i["counters"]["ignored"]["lower_priority"], 1);
        assert_eq!(st.instance_for("192.0.2.200".parse().unwrap()).unwrap().name, "VI_1");
        assert_eq!(st.instance("VI_1").unwrap().counters.rejected_total(), 2);
    }
}
