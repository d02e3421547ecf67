//! The configuration model every front end (native TOML, later keepalived.conf) produces.
//!
//! Names follow keepalived's vocabulary so operators recognise them. Values are already resolved
//! (defaults applied), and each section remembers where it was written so that validation — which
//! does not know which front end produced the model — can point errors at the exact place.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use super::bgp::BgpConfig;
use super::health::{RealHealth, ServiceHealth};
use super::vrrp::VrrpConfig;

/// IPVS scheduler names keepalived accepts for `lb_algo` / `lvs_sched`.
pub const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// Scheduler used when none is given: Maglev hashing is what the dataplane implements natively.
pub const DEFAULT_LB_ALGO: &str = "mh";

/// Weight of a real server when none is given (keepalived's default).
pub const DEFAULT_WEIGHT: u32 = 1;

/// Highest weight accepted, as in keepalived.
pub const MAX_WEIGHT: u32 = 65535;

/// Entries of the XDP flow table when `flow_table_size` is not given.
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 1 << 20;

/// Accepted `flow_table_size`: below 1024 the LRU evicts live flows on any real load; above 64 Mi
/// entries the map alone needs gigabytes of locked memory.
pub const FLOW_TABLE_SIZE_LIMITS: RangeInclusive<u32> = 1024..=(64 << 20);

/// New flows per second per CPU above which new flows are no longer inserted into the flow table:
/// roughly a busy CPU's worth of genuine connections, far below a SYN flood.
pub const DEFAULT_SYN_FLOOD_THRESHOLD: u32 = 125_000;

/// Idle time after which a UDP flow-table entry is no longer used (UDP has no FIN to end a flow).
pub const DEFAULT_UDP_FLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepted `udp_flow_timeout`, in seconds: up to one day.
pub const UDP_FLOW_TIMEOUT_LIMITS_SECS: RangeInclusive<u32> = 1..=86_400;

/// Idle time a TCP flow without a flow-table entry may have across a change of its service's
/// table and keep its real (docs/fast-path.md): IPVS's timeout for an established connection.
pub const DEFAULT_TCP_FLOW_TIMEOUT: Duration = Duration::from_secs(900);

/// Accepted `tcp_flow_timeout`, in seconds: up to one day.
pub const TCP_FLOW_TIMEOUT_LIMITS_SECS: RangeInclusive<u32> = 1..=86_400;

/// Service slots in the dataplane maps when `max_services` is not given.
pub const DEFAULT_MAX_SERVICES: u32 = 1024;

/// Accepted `max_services`.
pub const MAX_SERVICES_LIMITS: RangeInclusive<u32> = 1..=65_536;

/// Real-server slots in the dataplane maps when `max_reals` is not given.
pub const DEFAULT_MAX_REALS: u32 = 4096;

/// Accepted `max_reals`.
pub const MAX_REALS_LIMITS: RangeInclusive<u32> = 1..=1_048_576;

/// Longest `persistence_timeout`, in seconds: one year, as keepalived.
pub const MAX_PERSISTENCE_TIMEOUT_SECS: u32 = 31_536_000;

/// A whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The file it was read from; errors found later (e.g. at apply time) can still name it.
    pub source: PathBuf,
    /// Director-wide dataplane settings (`[dataplane]`); all defaults when the table is absent.
    pub dataplane: DataplaneSettings,
    /// In file order. Empty is valid: a director with nothing to do.
    pub virtual_servers: Vec<VirtualServer>,
    /// keepalived's `vrrp_instance`, `vrrp_script` and `vrrp_sync_group`s. A virtual server
    /// belongs to the instance whose `virtual_ipaddress` holds its VIP and forwards only while
    /// that instance is MASTER; with no instance at all (or none holding its VIP) it always
    /// forwards.
    pub vrrp: VrrpConfig,
    /// Where each VRRP instance's settings were written (list items included), one per entry of
    /// `vrrp.instances` in the same order, for errors about one specific value. Kept beside the
    /// model rather than in [`super::vrrp::VrrpInstance`] so that a reload compares the settings
    /// alone. A front end that does not locate them leaves this empty: errors are then located
    /// at each section ([`Config::vrrp_spans`]).
    #[serde(skip)]
    pub vrrp_locations: Vec<Spans>,
    /// `[bgp]`: announcing the ready VIPs to routers (ECMP scale-out); `None` when not written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpConfig>,
    /// `[flow_sync]` (keepalived: `lvs_sync_daemon`): flow state shared with peer directors;
    /// `None` when not written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_sync: Option<super::flow_sync::FlowSyncConfig>,
    /// keepalived's `script_user`: who runs the notify, MISC_CHECK and vrrp_script scripts
    /// (None: the agent's own user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_user: Option<ScriptUserSetting>,
}

/// `script_user USER [GROUP]` (TOML: `script_user = "USER"` or `"USER:GROUP"`).
impl ScriptUserSetting {
    /// The setting after checking that the user (and group) exist here, as keepalived does at
    /// load; else why not, for the located error.
    pub fn checked(user: &str, group: Option<&str>) -> Result<ScriptUserSetting, String> {
        crate::health::script::ScriptUser::resolve(user, group)
            .map(|_| ScriptUserSetting { user: user.to_owned(), group: group.map(str::to_owned) })
            .map_err(|e| format!("`script_user`: {e}"))
    }
}

/// `script_user USER [GROUP]` (TOML: `script_user = "USER"` or `"USER:GROUP"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScriptUserSetting {
    pub user: String,
    /// The user's own group when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Director-wide settings of the XDP dataplane, sizing its maps and guards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataplaneSettings {
    /// Entries in the XDP flow table (an LRU map), within [`FLOW_TABLE_SIZE_LIMITS`].
    pub flow_table_size: u32,
    /// Seed of the flow hash and of the Maglev permutations: directors that pair up must use the
    /// same one, or a flow moved between them lands on another real.
    pub hash_seed: u32,
    /// New flows per second per CPU above which new flows are no longer inserted into the flow
    /// table (they are still forwarded by Maglev); 0 disables the guard.
    pub syn_flood_threshold: u32,
    /// Idle time after which a UDP flow-table entry is no longer used.
    pub udp_flow_timeout: Duration,
    /// Length of the window after a table change in which every TCP flow gets an entry: a TCP
    /// flow idle longer than this across a change may move to another real.
    pub tcp_flow_timeout: Duration,
    /// Answer ICMP/ICMPv6 echo requests addressed to VIPs.
    pub icmp_echo: bool,
    /// Service slots in the dataplane maps: the number of virtual servers may not exceed it.
    pub max_services: u32,
    /// Real-server slots in the dataplane maps: real servers plus sorry servers, over all virtual
    /// servers, may not exceed it.
    pub max_reals: u32,
    /// What the XDP program does on an interface whose services' VRRP instances are all BACKUP.
    pub backup_xdp: BackupXdp,
    /// Where each setting was written, for errors about one specific value.
    #[serde(skip)]
    pub key_locations: Spans,
}

/// `[dataplane] backup_xdp`: the XDP program on a VRRP BACKUP's interfaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupXdp {
    /// Detached while no service of the interface is live (the product's behaviour): becoming
    /// MASTER attaches it again.
    #[default]
    Detach,
    /// Stays attached with the services staged, not live (their frames pass to the stack), so
    /// becoming MASTER is map writes only: no attach, no ring reset on drivers that do one.
    Standby,
}

impl BackupXdp {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupXdp::Detach => "detach",
            BackupXdp::Standby => "standby",
        }
    }
}

impl std::str::FromStr for BackupXdp {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "detach" => Ok(BackupXdp::Detach),
            "standby" => Ok(BackupXdp::Standby),
            _ => Err(()),
        }
    }
}

impl Default for DataplaneSettings {
    fn default() -> Self {
        DataplaneSettings {
            flow_table_size: DEFAULT_FLOW_TABLE_SIZE,
            hash_seed: lb_common::DEFAULT_HASH_SEED,
            syn_flood_threshold: DEFAULT_SYN_FLOOD_THRESHOLD,
            udp_flow_timeout: DEFAULT_UDP_FLOW_TIMEOUT,
            tcp_flow_timeout: DEFAULT_TCP_FLOW_TIMEOUT,
            icmp_echo: true,
            max_services: DEFAULT_MAX_SERVICES,
            max_reals: DEFAULT_MAX_REALS,
            backup_xdp: BackupXdp::Detach,
            key_locations: Spans::default(),
        }
    }
}

/// Where the values of a section were written, by key, and where the section itself is: errors
/// about a value point at it, or at the section when it was not written (its default applies).
/// Sections described declaratively (`config/toml/schema.rs`) fill it as they read; the optional
/// `[dataplane]` table has no section to fall back on, so errors about an omitted limit use
/// [`Spans::get`] and point at what exceeds it instead.
///
/// A key holding a list (`virtual_ipaddress`) also keeps where each of its items was written.
#[derive(Debug, Clone, Eq, Default)]
pub struct Spans {
    section: Location,
    written: Vec<(&'static str, Location)>,
    items: Vec<(&'static str, Vec<Location>)>,
}

impl Spans {
    /// Nothing written yet: every value located at the section.
    pub fn at_section(section: Location) -> Self {
        Spans { section, written: Vec::new(), items: Vec::new() }
    }

    /// Where the section is.
    pub fn section(&self) -> Location {
        self.section
    }

    /// Where `key`'s value was written, if it was.
    pub fn get(&self, key: &str) -> Option<Location> {
        self.written.iter().find(|(k, _)| *k == key).map(|(_, at)| *at)
    }

    /// Where `key`'s value was written, else the section.
    pub fn located(&self, key: &str) -> Location {
        self.get(key).unwrap_or(self.section)
    }

    /// Records where `key`'s value was written (a key is written once: TOML refuses duplicates).
    pub fn set(&mut self, key: &'static str, at: Location) {
        match self.written.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = at,
            None => self.written.push((key, at)),
        }
    }

    /// [`Spans::set`], for building expected values.
    #[must_use]
    pub fn with(mut self, key: &'static str, at: Location) -> Self {
        self.set(key, at);
        self
    }

    /// Records where each item of list `key` was written, in order.
    pub fn set_items(&mut self, key: &'static str, items: Vec<Location>) {
        match self.items.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = items,
            None => self.items.push((key, items)),
        }
    }

    /// [`Spans::set_items`], for building expected values.
    #[must_use]
    pub fn with_items(mut self, key: &'static str, items: &[Location]) -> Self {
        self.set_items(key, items.to_vec());
        self
    }

    /// Where each item of list `key` was written (none when it was not).
    pub fn items(&self, key: &str) -> &[Location] {
        self.items.iter().find(|(k, _)| *k == key).map_or(&[], |(_, items)| items.as_slice())
    }

    /// Where item `index` of list `key` was written, else the section.
    pub fn item(&self, key: &str, index: usize) -> Location {
        self.items(key).get(index).copied().unwrap_or(self.section)
    }

    /// Moves every location (the keepalived front end's virtual lines to file lines).
    pub fn relocate(&mut self, place: impl Fn(Location) -> Location) {
        self.section = place(self.section);
        let items = self.items.iter_mut().flat_map(|(_, items)| items.iter_mut());
        for at in self.written.iter_mut().map(|(_, at)| at).chain(items) {
            *at = place(*at);
        }
    }
}

impl PartialEq for Spans {
    /// The same places for every key, whatever the order they were read in; a key written at the
    /// section's place is the same as one not written.
    fn eq(&self, other: &Self) -> bool {
        let keys = self.written.iter().chain(&other.written).map(|(k, _)| *k);
        let lists = self.items.iter().chain(&other.items).map(|(k, _)| *k);
        self.section == other.section
            && keys.into_iter().all(|k| self.located(k) == other.located(k))
            && lists.into_iter().all(|k| self.items(k) == other.items(k))
    }
}

impl FromIterator<(&'static str, Location)> for Spans {
    fn from_iter<I: IntoIterator<Item = (&'static str, Location)>>(pairs: I) -> Self {
        let mut spans = Spans::default();
        for (key, at) in pairs {
            spans.set(key, at);
        }
        spans
    }
}

/// Transport protocol of a virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// Lower-case name, as written in the native config.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// IP protocol number, as the dataplane matches it.
    pub fn ip_proto(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol name that is neither TCP nor UDP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol \"{0}\", expected \"tcp\" or \"udp\"")]
pub struct UnknownProtocol(pub String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;

    /// Case-insensitive, because keepalived.conf spells them `TCP` / `UDP`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("tcp") {
            Ok(Protocol::Tcp)
        } else if s.eq_ignore_ascii_case("udp") {
            Ok(Protocol::Udp)
        } else {
            Err(UnknownProtocol(s.to_owned()))
        }
    }
}

/// A position in a configuration file; both fields are 1-based, `col` counts characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize)]
pub struct Location {
    pub line: u32,
    pub col: u32,
}

impl Location {
    pub const fn new(line: u32, col: u32) -> Self {
        Location { line, col }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// What identifies a virtual server (IPVS service): two definitions with the same key collide.
/// A firewall-mark service (keepalived's `virtual_server fwmark N`) has `fwmark` set, the
/// unspecified address of its family as `vip`, port 0 and TCP: IPVS tells those apart by family
/// and mark only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct VirtualServerKey {
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fwmark: Option<u32>,
}

impl VirtualServerKey {
    /// The key of the service on `vip:port/protocol`.
    pub const fn addr(vip: IpAddr, port: u16, protocol: Protocol) -> Self {
        VirtualServerKey { vip, port, protocol, fwmark: None }
    }

    /// The key of the firewall-mark service `mark` of `vip`'s family.
    pub fn fwmark(mark: u32, ipv6: bool) -> Self {
        VirtualServerKey {
            vip: unspecified(ipv6),
            port: 0,
            protocol: Protocol::Tcp,
            fwmark: Some(mark),
        }
    }
}

/// `0.0.0.0` or `::`: the address a firewall-mark service stands on, naming only its family.
pub fn unspecified(ipv6: bool) -> IpAddr {
    if ipv6 { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() }
}

/// Why `address` is not the unicast address of one host, if it is not: such an address can be
/// neither a virtual IP clients reach nor a server lb forwards to. Link-local addresses are
/// unicast, so they pass.
pub fn not_a_host_address(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => {
            if v4.is_unspecified() {
                Some("the unspecified address")
            } else if v4.octets()[0] == 0 {
                Some("an address of \"this network\" (0.0.0.0/8), which is a source only")
            } else if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_multicast() {
                Some("a multicast address")
            } else if v4.is_broadcast() {
                Some("the broadcast address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                Some("the unspecified address")
            } else if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else if v6.to_ipv4_mapped().is_some() {
                // Mapped addresses stand for IPv4 peers inside one host's sockets; no IPv6 packet
                // carries one (RFC 4291 2.5.5.2).
                Some("an IPv4-mapped IPv6 address, which no packet carries")
            } else {
                None
            }
        }
    }
}

impl fmt::Display for VirtualServerKey {
    /// `192.0.2.100:80/tcp`, `[2001:db8::1]:53/udp`, `fwmark 1`, `fwmark 1/inet6`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fwmark {
            Some(mark) if self.vip.is_ipv6() => write!(f, "fwmark {mark}/inet6"),
            Some(mark) => write!(f, "fwmark {mark}"),
            None => write!(f, "{}/{}", SocketAddr::new(self.vip, self.port), self.protocol),
        }
    }
}

/// A virtual service: traffic to `vip:port/protocol` arriving on `interface` is spread over the
/// real servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtualServer {
    /// For a firewall-mark service, the unspecified address of its family (`0.0.0.0`, `::`).
    pub vip: IpAddr,
    /// 0 makes an all-ports service: it matches any destination port of its protocol on the VIP
    /// when no exact-port service does.
    pub port: u16,
    pub protocol: Protocol,
    /// keepalived's `virtual_server fwmark N`: the service takes the packets netfilter marked N
    /// (e.g. several ports of one VIP, so persistence spans them). Marks are set after XDP has
    /// run, so only IPVS serves these; `vip` is then unspecified, `port` 0 and `protocol` TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fwmark: Option<u32>,
    /// The NIC the VIP traffic arrives on, where the XDP program attaches; empty for a
    /// firewall-mark service that names none (IPVS needs no interface).
    pub interface: String,
    /// Scheduler name (one of [`SCHEDULERS`]); keepalived also calls it `lvs_sched`.
    pub lb_algo: String,
    /// Maglev lookup table size, one of [`crate::maglev::PRIMES`]; more than 100 × the real
    /// servers keeps every real's share within 1 % of its weight.
    pub table_size: u32,
    /// A client sticks to one real server until it has been idle this long (keepalived's
    /// persistence); `None` when absent or 0: every flow is scheduled on its own.
    pub persistence_timeout: Option<Duration>,
    /// Clients whose addresses share this many leading bits count as one for persistence
    /// (keepalived's `persistence_granularity`); 32 for IPv4 and 128 for IPv6 by default.
    pub persistence_prefix: u8,
    pub real_servers: Vec<RealServer>,
    /// Receives the traffic only when no real server can take it; its weight is irrelevant (1).
    pub sorry_server: Option<RealServer>,
    /// How the real servers are checked and when the service counts as down (keepalived's
    /// `delay_loop`, `alpha`, `quorum`, ...).
    pub health: ServiceHealth,
    /// How packets reach the reals and IPVS-only scheduling knobs; the defaults (DR) are what
    /// the XDP dataplane does, anything else needs IPVS.
    pub forwarding: ServiceForwarding,
    /// Where the section starts (the `[[virtual_server]]` header).
    pub location: Location,
    /// Where each setting was written, for errors about one specific value; an omitted
    /// setting (default applied) is located at the section, where the operator would add it.
    #[serde(skip)]
    pub key_locations: Spans,
}

impl VirtualServer {
    pub fn key(&self) -> VirtualServerKey {
        match self.fwmark {
            Some(mark) => VirtualServerKey::fwmark(mark, self.vip.is_ipv6()),
            None => VirtualServerKey::addr(self.vip, self.port, self.protocol),
        }
    }

    /// Where the first of `keys` that was written is, else the section.
    fn written_at(&self, keys: &[&str]) -> Location {
        let at = keys.iter().find_map(|key| self.key_locations.get(key));
        at.unwrap_or(self.key_locations.section())
    }

    /// Where the service's address was given: the `fwmark` that stands for it (a `vip` beside it
    /// is an error, not read), else its `vip`.
    pub fn vip_at(&self) -> Location {
        self.written_at(&["fwmark", "vip"])
    }

    pub fn protocol_at(&self) -> Location {
        self.written_at(&["protocol"])
    }

    pub fn interface_at(&self) -> Location {
        self.written_at(&["interface"])
    }

    /// `lb_algo`, or keepalived's other spelling `lvs_sched`.
    pub fn lb_algo_at(&self) -> Location {
        self.written_at(&["lb_algo", "lvs_sched"])
    }

    pub fn table_size_at(&self) -> Location {
        self.written_at(&["table_size"])
    }

    pub fn persistence_timeout_at(&self) -> Location {
        self.written_at(&["persistence_timeout"])
    }

    /// `None` when omitted: unlike the others, whether it was written matters (a notice says it
    /// does nothing without `persistence_timeout`).
    pub fn persistence_granularity_at(&self) -> Option<Location> {
        self.key_locations.get("persistence_granularity")
    }

    pub fn delay_loop_at(&self) -> Location {
        self.written_at(&["delay_loop"])
    }

    pub fn alpha_at(&self) -> Location {
        self.written_at(&["alpha"])
    }

    /// `lb_kind`, or keepalived's other spelling `lvs_method` (else the section's header, where
    /// the default applies).
    pub fn lb_kind_at(&self) -> Location {
        let at = ["lb_kind", "lvs_method"].iter().find_map(|k| self.key_locations.get(k));
        at.unwrap_or(self.location)
    }

    /// `ops` (one-packet scheduling), else the section's header.
    pub fn one_packet_at(&self) -> Location {
        self.key_locations.get("ops").unwrap_or(self.location)
    }
}

impl Config {
    /// Where the settings of VRRP instance `index` were written: all at the instance's section
    /// when the front end located none.
    pub fn vrrp_spans(&self, index: usize) -> Spans {
        let section = self.vrrp.instances.get(index).map(|i| i.location).unwrap_or_default();
        self.vrrp_locations.get(index).cloned().unwrap_or_else(|| Spans::at_section(section))
    }
}

impl fmt::Display for VirtualServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.key().fmt(f)
    }
}

/// Length of a host prefix in `address`'s family (32 or 128): the default persistence granularity
/// (each client on its own) and the longest one allowed.
pub fn host_prefix_len(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// A backend that receives a virtual server's traffic by direct routing (same port, MAC rewrite).
/// Also a virtual server's sorry server, which has no weight of its own (1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RealServer {
    pub address: IpAddr,
    /// Must equal the virtual server's port (DR cannot rewrite it); kept so validation can say so.
    pub port: u16,
    /// 0..=[`MAX_WEIGHT`]; 0 drains the server (no new connections).
    pub weight: u32,
    /// Its checkers and what happens when they fail; a sorry server is never checked (as in
    /// keepalived) and has the default: no checks.
    pub health: RealHealth,
    /// Its own forwarding method and IPVS connection thresholds; defaults follow the service.
    pub forwarding: RealForwarding,
    /// Where the section starts (the `[[virtual_server.real_server]]` header).
    pub location: Location,
    /// Where each setting was written, for errors about one specific value.
    #[serde(skip)]
    pub key_locations: Spans,
    /// Where each checker's settings were written: one per entry of `health.checks`, in order.
    #[serde(skip)]
    pub check_locations: Vec<Spans>,
}

impl RealServer {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    /// Where `address` was written (else the section).
    pub fn address_at(&self) -> Location {
        self.key_locations.located("address")
    }

    /// Where `port` was written (else the section, where the service's port applies).
    pub fn port_at(&self) -> Location {
        self.key_locations.located("port")
    }

    /// Where `weight` was written (else the section).
    pub fn weight_at(&self) -> Location {
        self.key_locations.located("weight")
    }

    /// Where the IPVS connection thresholds were written: `uthreshold`, else `lthreshold`, else
    /// the section's header.
    pub fn thresholds_at(&self) -> Location {
        let at = ["uthreshold", "lthreshold"].iter().find_map(|k| self.key_locations.get(k));
        at.unwrap_or(self.location)
    }
}

impl fmt::Display for RealServer {
    /// `192.0.2.11:80`, `[2001:db8::11]:80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.socket_addr().fmt(f)
    }
}

/// How the director hands a packet to a real server (keepalived's `lb_kind` / `lvs_method`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LbKind {
    /// Direct routing: the frame goes to the real's MAC unchanged; replies bypass the director.
    #[default]
    Dr,
    /// Masquerading: the destination is rewritten; replies must route back through the director.
    Nat,
    /// IP tunnelling to the real, which decapsulates and answers the client directly.
    Tun(Tunnel),
}

impl LbKind {
    /// keepalived's and `ipvsadm`'s names.
    pub fn name(self) -> &'static str {
        match self {
            LbKind::Dr => "DR",
            LbKind::Nat => "NAT",
            LbKind::Tun(_) => "TUN",
        }
    }
}

impl fmt::Display for LbKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LbKind::Tun(t) if *t != Tunnel::Ipip => write!(f, "TUN ({t})"),
            other => f.write_str(other.name()),
        }
    }
}

/// The encapsulation of [`LbKind::Tun`] (keepalived's `tun_type`, `tun_port`, `tun_flags`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tunnel {
    #[default]
    Ipip,
    /// Generic UDP encapsulation to this UDP port.
    Gue {
        port: u16,
    },
    Gre,
}

/// Why a tunnel type and port do not make a [`Tunnel`]; front ends word it in their syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelError {
    /// Not `ipip`, `gue` or `gre`.
    UnknownType,
    /// GUE without its port.
    GueWithoutPort,
    /// GUE with port 0.
    ZeroPort,
    /// A port for a tunnel that has none (ipip, gre).
    PortWithoutGue,
}

impl Tunnel {
    /// The tunnel of keepalived's `type` (`ipip` when not given) and `port` (GUE's, required).
    pub fn from_parts(kind: Option<&str>, port: Option<u16>) -> Result<Tunnel, TunnelError> {
        match (kind.unwrap_or("ipip"), port) {
            ("gue", Some(0)) => Err(TunnelError::ZeroPort),
            ("gue", Some(port)) => Ok(Tunnel::Gue { port }),
            ("gue", None) => Err(TunnelError::GueWithoutPort),
            ("ipip" | "gre", Some(_)) => Err(TunnelError::PortWithoutGue),
            ("ipip", None) => Ok(Tunnel::Ipip),
            ("gre", None) => Ok(Tunnel::Gre),
            _ => Err(TunnelError::UnknownType),
        }
    }
}

impl fmt::Display for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tunnel::Ipip => f.write_str("ipip"),
            Tunnel::Gue { port } => write!(f, "gue port {port}"),
            Tunnel::Gre => f.write_str("gre"),
        }
    }
}

/// A virtual server's forwarding settings beyond the XDP path's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ServiceForwarding {
    /// For every real that does not say otherwise.
    pub lb_kind: LbKind,
    /// Schedule each UDP datagram on its own (keepalived's `ops`).
    pub one_packet: bool,
    /// Outer source address of tunnelled packets to reals of its family (`tun_source`); else
    /// the director's preferred source toward each real (the FIB's, looked up per packet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tun_source: Option<std::net::IpAddr>,
}

/// A real server's forwarding settings beyond the XDP path's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RealForwarding {
    /// Overrides the service's `lb_kind` for this real.
    pub lb_kind: Option<LbKind>,
    /// IPVS stops sending new connections above this many (0: no limit).
    pub uthreshold: u32,
    /// ... and resumes below this many (0: no limit).
    pub lthreshold: u32,
}

impl VirtualServer {
    /// How packets reach `real`: its own method, else the service's.
    pub fn lb_kind_of(&self, real: &RealServer) -> LbKind {
        real.forwarding.lb_kind.unwrap_or(self.forwarding.lb_kind)
    }

    /// The reals and the sorry server.
    pub fn all_reals(&self) -> impl Iterator<Item = &RealServer> {
        self.real_servers.iter().chain(self.sorry_server.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A written key is located where it was written, any other at the section; equality is
    /// by place, not by the order keys were read in.
    #[test]
    fn spans_locate_written_keys_else_the_section() {
        let at = Location::new;
        let spans = Spans::at_section(at(3, 1)).with("retry", at(5, 9)).with("bindto", at(4, 10));
        assert_eq!(spans.get("retry"), Some(at(5, 9)));
        assert_eq!(spans.get("connect_ip"), None);
        assert_eq!(spans.located("connect_ip"), at(3, 1));
        assert_eq!(
            spans,
            Spans::at_section(at(3, 1)).with("bindto", at(4, 10)).with("retry", at(5, 9))
        );
        assert_ne!(spans, Spans::at_section(at(3, 1)).with("retry", at(5, 9)));
        assert_eq!(Spans::at_section(at(3, 1)), Spans::at_section(at(3, 1)).with("x", at(3, 1)));
        let mut moved = spans.clone();
        moved.relocate(|l| at(l.line + 10, l.col));
        assert_eq!((moved.located("retry"), moved.located("x")), (at(15, 9), at(13, 1)));
    }

    /// A list key's items are located one by one, else at the section; they take part in
    /// equality and move with the rest.
    #[test]
    fn spans_locate_list_items_else_the_section() {
        let at = Location::new;
        let spans = Spans::at_section(at(3, 1))
            .with("virtual_ipaddress", at(4, 21))
            .with_items("virtual_ipaddress", &[at(4, 22), at(4, 40)]);
        assert_eq!(spans.items("virtual_ipaddress"), [at(4, 22), at(4, 40)]);
        assert_eq!(spans.item("virtual_ipaddress", 1), at(4, 40));
        assert_eq!(spans.item("virtual_ipaddress", 2), at(3, 1));
        assert_eq!(spans.item("unicast_peer", 0), at(3, 1));
        assert!(spans.items("unicast_peer").is_empty());
        let fewer = Spans::at_section(at(3, 1))
            .with("virtual_ipaddress", at(4, 21))
            .with_items("virtual_ipaddress", &[at(4, 22)]);
        assert_ne!(spans, fewer);
        assert_ne!(fewer, spans);
        let mut moved = spans.clone();
        moved.relocate(|l| at(l.line + 10, l.col));
        assert_eq!(moved.items("virtual_ipaddress"), [at(14, 22), at(14, 40)]);
        assert_eq!(moved.located("virtual_ipaddress"), at(14, 21));
    }

    #[test]
    fn protocol_names_and_numbers() {
        let cases =
            [("tcp", Protocol::Tcp, 6), ("TCP", Protocol::Tcp, 6), ("Udp", Protocol::Udp, 17)];
        for (name, proto, number) in cases {
            assert_eq!(name.parse::<Protocol>(), Ok(proto), "{name}");
            assert_eq!(proto.ip_proto(), number);
            assert_eq!(proto.to_string(), name.to_ascii_lowercase());
        }
        assert_eq!(
            "sctp".parse::<Protocol>().map_err(|e| e.to_string()),
            Err("unknown protocol \"sctp\", expected \"tcp\" or \"udp\"".to_owned())
        );
    }

    #[test]
    fn keys_display_like_socket_addresses() {
        let cases = [
            ("192.0.2.100", 80, Protocol::Tcp, "192.0.2.100:80/tcp"),
            ("2001:db8::1", 53, Protocol::Udp, "[2001:db8::1]:53/udp"),
        ];
        for (vip, port, protocol, expected) in cases {
            let key = VirtualServerKey::addr(vip.parse().unwrap(), port, protocol);
            assert_eq!(key.to_string(), expected);
        }
        assert_eq!(VirtualServerKey::fwmark(1, false).to_string(), "fwmark 1");
        assert_eq!(VirtualServerKey::fwmark(7, true).to_string(), "fwmark 7/inet6");
    }

    #[test]
    fn serializes_without_key_locations() {
        let rs = RealServer {
            key_locations: Spans::at_section(Location::new(6, 1)),
            ..crate::fixture::real_server("192.0.2.11", 80, Location::new(6, 1))
        };
        let json = serde_json::to_value(&rs).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "address": "192.0.2.11", "port": 80, "weight": 1,
                "forwarding": {"lb_kind": null, "uthreshold": 0, "lthreshold": 0},
                "health": {
                    "checks": [], "inhibit_on_failure": false,
                    "notify_up": null, "notify_down": null
                },
                "location": {"line": 6, "col": 1}
            })
        );
    }
}
