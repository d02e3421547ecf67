//! `[flow_sync]` (and keepalived's `lvs_sync_daemon`): sharing flow state with peer directors
//! on the IPVS sync protocol (version 1), with the kernel's defaults.

use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use super::model::Location;

/// keepalived's and the kernel's default multicast group (IPv4).
pub const DEFAULT_GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
pub const DEFAULT_PORT: u16 = 8848;
pub const DEFAULT_TTL: u8 = 1;
/// 1500-byte MTU less the IPv4 and UDP headers, as the kernel computes it.
pub const DEFAULT_MAX_LEN: u16 = 1472;
/// Smallest message worth sending: the 8-byte header and one IPv6 entry (72 bytes).
pub const MIN_MAX_LEN: u16 = 80;

/// Flow sync with peer directors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowSyncConfig {
    /// Interface the messages are sent on and received from (the group is joined there).
    pub interface: String,
    /// Sync id sent in every message; received messages of another id are dropped.
    pub sync_id: u8,
    /// Multicast group (IPv4 or IPv6).
    pub group: IpAddr,
    pub port: u16,
    /// TTL (hop limit) of sent messages; received ones must carry it too.
    pub ttl: u8,
    /// Largest message sent, bytes (UDP payload).
    pub max_len: u16,
    /// keepalived's `lvs_sync_daemon INTERFACE VRRP_INSTANCE`: the instance named (lb sends and
    /// receives in every state, as both IPVS daemons do).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vrrp_instance: Option<String>,
    #[serde(skip)]
    pub location: Location,
}

impl FlowSyncConfig {
    /// The defaults, on `interface`.
    pub fn new(interface: String, location: Location) -> Self {
        Self {
            interface,
            sync_id: 0,
            group: IpAddr::V4(DEFAULT_GROUP_V4),
            port: DEFAULT_PORT,
            ttl: DEFAULT_TTL,
            max_len: DEFAULT_MAX_LEN,
            vrrp_instance: None,
            location,
        }
    }
}

/// Why `group` cannot be a sync group (`None`: it can).
pub fn group_problem(group: IpAddr) -> Option<&'static str> {
    (!group.is_multicast()).then_some("must be a multicast address (224.0.0.0/4 or ff00::/8)")
}
