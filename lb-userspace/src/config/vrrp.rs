//! VRRP settings in the model (keepalived's `vrrp_instance`, `vrrp_script`, `vrrp_sync_group`).
//! Front ends fill these; the `vrrp` module runs them.

use std::{fmt, net::IpAddr, ops::RangeInclusive, time::Duration};

use serde::Serialize;

use super::model::Location;

/// keepalived's defaults.
pub const DEFAULT_PRIORITY: u8 = 100;
pub const DEFAULT_ADVERT_INT: Duration = Duration::from_secs(1);
pub const DEFAULT_GARP_REPEAT: u32 = 5;
pub const DEFAULT_GARP_REFRESH_DELAY: Duration = Duration::from_secs(5);
pub const DEFAULT_SCRIPT_INTERVAL: Duration = Duration::from_secs(1);
/// keepalived's `vrrp_version` default, for IPv4 instances; IPv6 instances default to 3, the only
/// version that carries IPv6 (as in keepalived).
pub const DEFAULT_VERSION: u8 = 2;

/// Accepted `virtual_router_id` and `priority`.
pub const VIRTUAL_ROUTER_ID_LIMITS: RangeInclusive<u8> = 1..=255;
pub const PRIORITY_LIMITS: RangeInclusive<u8> = 1..=255;
/// The priority of the address owner, which always starts as MASTER.
pub const OWNER_PRIORITY: u8 = 255;
/// Longest `advert_int` of VRRPv2, whose adverts carry whole seconds in 8 bits.
pub const MAX_ADVERT_INT_V2: Duration = Duration::from_secs(255);
/// Longest `advert_int` of VRRPv3, whose adverts carry centiseconds in 12 bits.
pub const MAX_ADVERT_INT_V3: Duration = Duration::from_millis(40_950);
/// Longest `preempt_delay`, in seconds (keepalived's limit).
pub const MAX_PREEMPT_DELAY_SECS: u32 = 1000;
/// Accepted `garp_master_repeat`.
pub const GARP_REPEAT_LIMITS: RangeInclusive<u32> = 1..=100;
/// Largest weight, either sign, of a tracked interface or script and of a `vrrp_script`.
pub const MAX_TRACK_WEIGHT: i32 = 254;
/// VRRPv2 carries at most this many bytes of `auth_pass`.
pub const MAX_AUTH_PASS_LEN: usize = 8;

/// One `[[vrrp_instance]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VrrpInstance {
    pub name: String,
    /// `state`: the initial state asked for (keepalived starts in BACKUP anyway unless the
    /// priority is 255).
    pub initial_master: bool,
    pub interface: String,
    pub virtual_router_id: u8,
    /// 1..=255 (255 = address owner).
    pub priority: u8,
    pub advert_int: Duration,
    /// 2 or 3.
    pub version: u8,
    /// The VIPs with their prefix length (`192.0.2.100/24`); a bare address gets /32 or /128.
    pub virtual_ipaddress: Vec<VirtualAddress>,
    /// `nopreempt` sets this false.
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Unicast mode when non-empty.
    pub unicast_peer: Vec<IpAddr>,
    pub unicast_src_ip: Option<IpAddr>,
    /// v2 `authentication { auth_type PASS auth_pass ... }`: up to 8 bytes.
    pub auth_pass: Option<String>,
    pub track_interface: Vec<TrackInterface>,
    pub track_script: Vec<TrackScript>,
    pub notify_master: Option<String>,
    pub notify_backup: Option<String>,
    pub notify_fault: Option<String>,
    pub notify_stop: Option<String>,
    /// Generic `notify`: called with `INSTANCE name state priority` as keepalived does.
    pub notify: Option<String>,
    /// Gratuitous ARPs / unsolicited NAs sent on becoming master, and again after the delay.
    pub garp_master_repeat: u32,
    pub garp_master_refresh_delay: Duration,
    /// keepalived's `lower_prio_no_advert`: a MASTER hearing a lower priority does not answer
    /// with an advert of its own (it answers, at most once per advert interval, when false).
    pub lower_prio_no_advert: bool,
    /// keepalived's `skip_check_adv_addr`: a BACKUP does not compare the virtual addresses of
    /// adverts from the master it already follows with its own. Adverts from any other sender,
    /// and every advert a MASTER hears, must carry exactly the instance's addresses.
    pub skip_check_adv_addr: bool,
    pub location: Location,
}

/// A VIP as `virtual_ipaddress` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VirtualAddress {
    pub address: IpAddr,
    pub prefix: u8,
}

/// `track_interface`: link down → FAULT, or with a weight, the priority changes instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackInterface {
    pub name: String,
    /// 0 = link down means FAULT; else added to the priority while the link is down (usually
    /// negative).
    pub weight: i32,
}

/// `track_script`: a reference to a `vrrp_script`, optionally with its own weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackScript {
    pub script: String,
    /// Overrides the script's weight when set.
    pub weight: Option<i32>,
}

/// One `[[vrrp_script]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VrrpScript {
    pub name: String,
    /// Command line, run by `/bin/sh -c`.
    pub script: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// 0: a failing script means FAULT; positive: added to the priority while it succeeds;
    /// negative: added while it fails (keepalived's meaning).
    pub weight: i32,
    /// Consecutive successes to count as OK / failures to count as failed.
    pub rise: u32,
    pub fall: u32,
    pub location: Location,
}

/// One `[[vrrp_sync_group]]`: members change state together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VrrpSyncGroup {
    pub name: String,
    pub group: Vec<String>,
    pub notify_master: Option<String>,
    pub notify_backup: Option<String>,
    pub notify_fault: Option<String>,
    pub location: Location,
}

/// Everything VRRP in a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct VrrpConfig {
    pub instances: Vec<VrrpInstance>,
    pub scripts: Vec<VrrpScript>,
    pub sync_groups: Vec<VrrpSyncGroup>,
}

impl VrrpConfig {
    /// The instance whose `virtual_ipaddress` holds `vip`, if any: the virtual servers on that
    /// VIP forward only while it is MASTER.
    pub fn instance_for(&self, vip: IpAddr) -> Option<&VrrpInstance> {
        self.instances.iter().find(|i| i.virtual_ipaddress.iter().any(|v| v.address == vip))
    }
}

impl VrrpInstance {
    /// Whether the instance is IPv6, as its first address says (validation requires one family);
    /// IPv4 without any, as keepalived.
    pub fn is_ipv6(&self) -> bool {
        self.virtual_ipaddress.first().is_some_and(|v| v.address.is_ipv6())
    }
}

impl fmt::Display for VirtualAddress {
    /// `192.0.2.100/24`, `2001:db8::100/64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}
