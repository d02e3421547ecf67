//! The agent's BGP state: the announcer edge fed from the reconciler's desired state (through
//! [`readiness`](super::readiness)), the operator's withdrawals, and what `lb status` shows.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::readiness::{self, Inputs, VipAnnouncement, Withdrawals};
use super::speaker::{Announcer, Paths, SpeakerError, SpeakerView};
use crate::config::bgp::BgpConfig;
use crate::desired::Desired;
use crate::health::state::HealthSnapshot;

/// `lb status`'s `bgp`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpView {
    #[serde(flatten)]
    pub speaker: SpeakerView,
    pub vips: Vec<VipView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipView {
    pub vip: String,
    pub announced: bool,
    /// Why, in words: `ready`, `withdrawn by operator`, `VRRP BACKUP (VI_1)`, ...
    pub reason: String,
    /// The reason's kind: `ready`, `not_ready`, `withdrawn_by_operator`, `vrrp_backup`,
    /// `announce_delay`, `dataplane_not_live`.
    pub reason_kind: String,
}

pub struct BgpAgent {
    announcer: Announcer,
    pub withdrawals: Withdrawals,
    started_at: Instant,
    announce_delay: Duration,
    pub withdraw_grace: Duration,
    last: Vec<VipAnnouncement>,
    sent: Option<Vec<IpAddr>>,
    /// Some VIP waits for `announce_delay` only: recompute until it has passed.
    delaying: bool,
    /// The last apply of the desired state succeeded (false after a failed one).
    pub dataplane_ok: bool,
}

impl BgpAgent {
    /// Starts the speaker, its files named after `beside` (the control socket, or the state file
    /// of a pinned dataplane). `outlive`: a pinned dataplane, whose speaker survives the agent.
    ///
    /// # Errors
    /// The speaker could not start (BIRD missing or failing, `export_table` not writable).
    pub fn start(
        bgp: &BgpConfig,
        beside: &std::path::Path,
        outlive: bool,
    ) -> Result<Self, SpeakerError> {
        let announcer = Announcer::start(bgp, Paths::beside(beside), outlive)?;
        // An adopted speaker was announcing already: no delay for a hitless restart.
        let announce_delay = if announcer.adopted() { Duration::ZERO } else { bgp.announce_delay };
        Ok(BgpAgent {
            announcer,
            withdrawals: Withdrawals::default(),
            started_at: Instant::now(),
            announce_delay,
            withdraw_grace: bgp.withdraw_grace,
            last: Vec::new(),
            sent: None,
            delaying: false,
            dataplane_ok: true,
        })
    }

    /// Recomputes the announced set and tells the speaker when it changed.
    pub fn update(&mut self, desired: &Desired, health: &HealthSnapshot, dataplane_live: bool) {
        self.last = readiness::vip_announcements(&Inputs {
            desired,
            health,
            withdrawals: &self.withdrawals,
            dataplane_live: dataplane_live && self.dataplane_ok,
            announce_delay: self.announce_delay,
            now: Instant::now(),
            started_at: self.started_at,
        });
        self.delaying =
            self.last.iter().any(|a| matches!(a.reason, readiness::Reason::AnnounceDelay { .. }));
        let vips: Vec<IpAddr> = self.last.iter().filter(|a| a.announce).map(|a| a.vip).collect();
        if self.sent.as_ref() != Some(&vips) {
            self.announcer.announce(vips.clone());
            self.sent = Some(vips);
        }
    }

    /// A reload: new settings, and the operator's withdrawals end.
    pub fn reload(&mut self, bgp: &BgpConfig) {
        self.announcer.reconfigure(bgp);
        self.withdrawals = Withdrawals::default();
        self.withdraw_grace = bgp.withdraw_grace;
    }

    /// `lb bgp withdraw [VIP]` (`withdraw`) or `lb bgp announce [VIP]`: the VIPs it applies to.
    ///
    /// # Errors
    /// `vip` is not a VIP of this director.
    pub fn operator(&mut self, withdraw: bool, vip: Option<IpAddr>) -> Result<Vec<IpAddr>, String> {
        let known: BTreeSet<IpAddr> = self.last.iter().map(|a| a.vip).collect();
        let w = &mut self.withdrawals;
        match (withdraw, vip) {
            (_, Some(v)) if !known.contains(&v) => {
                return Err(format!("{v} is not a VIP of this director"));
            }
            (true, None) => w.all = true,
            (true, Some(v)) => {
                w.vips.insert(v);
            }
            (false, None) => *w = Withdrawals::default(),
            (false, Some(v)) => {
                if w.all {
                    w.all = false;
                    w.vips = known.clone();
                }
                w.vips.remove(&v);
            }
        }
        Ok(vip.map_or_else(|| known.into_iter().collect(), |v| vec![v]))
    }

    /// Announce nothing (a stopping agent), keeping the speaker up for `withdraw_grace`.
    pub fn withdraw_all(&mut self) {
        self.announcer.announce(Vec::new());
        self.sent = Some(Vec::new());
    }

    pub fn view(&self) -> BgpView {
        BgpView {
            speaker: self.announcer.view(),
            vips: self
                .last
                .iter()
                .map(|a| VipView {
                    vip: a.vip.to_string(),
                    announced: a.announce,
                    reason: a.reason.to_string(),
                    reason_kind: serde_json::to_value(&a.reason)
                        .ok()
                        .and_then(|v| v["reason"].as_str().map(str::to_owned))
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// The announce delay is still running: the event loop re-evaluates each second.
    pub fn waiting(&self) -> bool {
        self.delaying
    }

    pub fn stop(self) {
        self.announcer.stop();
    }

    pub fn leave(self) {
        self.announcer.leave();
    }
}
