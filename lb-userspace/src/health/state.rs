//! What the checkers currently say: the health module's output and `desired_state`'s input.

use std::{net::IpAddr, time::Duration};

// Keys are small and not chosen by peers: a fast hasher (reloads and flaps visit every real).
use foldhash::{HashMap, HashSet};

use crate::config::VirtualServerKey;

/// One real of one service.
pub type RealId = (VirtualServerKey, IpAddr, u16);

/// The combined result of a real's checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealHealth {
    /// All checks pass.
    pub up: bool,
    /// Weight set by a `misc_dynamic` check (exit code − 2), overriding the configured one.
    pub weight: Option<u32>,
    /// Latency of the last successful check attempt.
    pub latency: Option<Duration>,
    /// Why the real is down (or the last check's outcome), for `lb backends` and logs.
    pub message: String,
}

/// Health of everything that has checks. Reals without checks are absent: they count as up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthSnapshot {
    pub reals: HashMap<RealId, RealHealth>,
    /// Services whose quorum is lost (sum of up weights below `quorum`, with hysteresis).
    pub quorum_lost: HashSet<VirtualServerKey>,
}

impl HealthSnapshot {
    pub fn real(&self, id: &RealId) -> Option<&RealHealth> {
        self.reals.get(id)
    }
}
