//! The one seam for forwarding: a `Dataplane` applies a `Desired` state idempotently and reports
//! counters. The XDP implementation is the fast path; an IPVS one serves what XDP cannot.

#[cfg(test)]
mod fuzz_regressions;
pub mod hybrid;
pub mod ipvs;
pub mod select;
pub mod xdp;

use std::{collections::HashMap, net::IpAddr};

use serde::Serialize;

use crate::{config::VirtualServerKey, desired::Desired};

/// Packets and bytes (summed over CPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
    /// Flows that started here (reals and services).
    #[serde(default)]
    pub new_flows: u64,
}

/// Counters as of one read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// By verdict reason, in a stable order (`lb_common::reason::NAMES`).
    pub global: Vec<(&'static str, Counter)>,
    /// Events (flow-table hits, re-picks, guard skips...), in `lb_common::event::NAMES` order.
    pub events: Vec<(&'static str, u64)>,
    pub services: HashMap<VirtualServerKey, Counter>,
    /// By (service, real address, real port).
    pub reals: HashMap<(VirtualServerKey, IpAddr, u16), Counter>,
    /// Connection counts kept by the kernel (IPVS services only; XDP keeps none per real).
    pub connections: HashMap<(VirtualServerKey, IpAddr, u16), Connections>,
}

/// `ipvsadm -Ln`'s ActiveConn and InActConn of one destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Connections {
    pub active: u32,
    pub inactive: u32,
}

/// One interface the dataplane forwards on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub interface: String,
    pub ifindex: u32,
    /// "native" or "generic".
    pub mode: &'static str,
    pub program_id: u32,
}

/// What a dataplane reports about itself for `lb status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    pub kind: &'static str,
    pub attachments: Vec<Attachment>,
    /// How full the dataplane's tables are.
    pub maps: Vec<MapUsage>,
}

/// One table's use: `used` is `None` where counting would cost too much (the flow table).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MapUsage {
    pub name: String,
    pub used: Option<u64>,
    pub max: u64,
}

/// Errors a dataplane reports; the agent adds context at its edge.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the XDP program: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("BPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("BPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("attaching XDP to {interface}: {source}")]
    Attach {
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("out of {what}: {detail}")]
    Exhausted { what: &'static str, detail: String },
    #[error("this lb binary was built with AYA_BUILD_SKIP and embeds no XDP program")]
    NoProgram,
    #[error(
        "pinned dataplane in {dir} does not match this build ({detail}); stop the agent that \
         owns it with SIGTERM, or remove {dir}, before starting this one"
    )]
    PinnedLayout { dir: std::path::PathBuf, detail: String },
    #[error("pinned dataplane: {0}")]
    Pin(String),
    #[error("IPVS: {0}")]
    Ipvs(String),
    /// A service was given to a dataplane this agent did not start.
    #[error("{0}")]
    Unavailable(String),
}

/// A forwarding backend.
pub trait Dataplane: Send {
    /// Makes forwarding match `desired`; calling it twice with the same state changes nothing.
    fn apply(&mut self, desired: &Desired) -> Result<(), DataplaneError>;
    /// Current counters.
    fn counters(&mut self) -> Result<Counters, DataplaneError>;
    fn status(&self) -> Status;
    /// Stops forwarding (detaches programs); the director then behaves as if the agent never ran.
    fn shutdown(&mut self) -> Result<(), DataplaneError>;
    /// Services a previous agent left forwarding and this one adopted (a hitless restart), as
    /// they were before the first `apply`; empty when nothing was adopted.
    fn adopted_services(&self) -> Vec<VirtualServerKey> {
        Vec::new()
    }
    /// A reader of the flow table that works without this dataplane (`lb flows` walks it
    /// outside the agent lock); `None` for a dataplane without one (IPVS: `ipvsadm -Lnc`).
    fn flow_source(&self) -> Result<Option<xdp::FlowSource>, DataplaneError> {
        Ok(None)
    }
    /// The services and real slots flow-sync entries are translated with (XDP only).
    fn sync_slots(&self) -> Option<crate::sync::edge::Slots> {
        None
    }
}
