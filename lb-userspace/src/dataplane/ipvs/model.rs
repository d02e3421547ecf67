//! The typed view of IPVS services and destinations (what `ipvsadm` calls virtual and real
//! servers). Everything here is plain data: [`super::codec`] maps it to and from netlink attributes.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

use super::uapi;

/// An address family as IPVS carries it (`AF_INET`/`AF_INET6` in a `u16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Inet,
    Inet6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Self {
        if addr.is_ipv4() { Family::Inet } else { Family::Inet6 }
    }

    pub(crate) fn raw(self) -> u16 {
        match self {
            Family::Inet => libc::AF_INET as u16,
            Family::Inet6 => libc::AF_INET6 as u16,
        }
    }

    pub(crate) fn from_raw(raw: u16) -> Option<Self> {
        match i32::from(raw) {
            libc::AF_INET => Some(Family::Inet),
            libc::AF_INET6 => Some(Family::Inet6),
            _ => None,
        }
    }

    /// The longest prefix: a persistence netmask of this length means "per client address".
    pub fn max_prefix(self) -> u8 {
        match self {
            Family::Inet => 32,
            Family::Inet6 => 128,
        }
    }
}

/// The transport protocol of an address-based service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub(crate) fn raw(self) -> u16 {
        match self {
            Protocol::Tcp => libc::IPPROTO_TCP as u16,
            Protocol::Udp => libc::IPPROTO_UDP as u16,
            Protocol::Sctp => libc::IPPROTO_SCTP as u16,
        }
    }

    pub(crate) fn from_raw(raw: u16) -> Option<Self> {
        match i32::from(raw) {
            libc::IPPROTO_TCP => Some(Protocol::Tcp),
            libc::IPPROTO_UDP => Some(Protocol::Udp),
            libc::IPPROTO_SCTP => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    /// `ipvsadm -Ln`'s spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// What identifies a service: either protocol + VIP + port, or a firewall mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    Addr { protocol: Protocol, addr: IpAddr, port: u16 },
    Fwmark { family: Family, mark: u32 },
}

impl ServiceKey {
    pub fn tcp(vip: SocketAddr) -> Self {
        ServiceKey::Addr { protocol: Protocol::Tcp, addr: vip.ip(), port: vip.port() }
    }

    pub fn udp(vip: SocketAddr) -> Self {
        ServiceKey::Addr { protocol: Protocol::Udp, addr: vip.ip(), port: vip.port() }
    }

    pub fn family(&self) -> Family {
        match self {
            ServiceKey::Addr { addr, .. } => Family::of(*addr),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }
}

impl fmt::Display for ServiceKey {
    /// `ipvsadm -Ln`'s first columns: `TCP  192.0.2.100:80`, `FWM  7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Addr { protocol, addr, port } => {
                write!(f, "{protocol}  {}", SocketAddr::new(*addr, *port))
            }
            ServiceKey::Fwmark { family: Family::Inet, mark } => write!(f, "FWM  {mark}"),
            ServiceKey::Fwmark { family: Family::Inet6, mark } => write!(f, "FWM  {mark} IPv6"),
        }
    }
}

/// Service flags (`IP_VS_SVC_F_*`), minus the kernel-internal "hashed" bit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceFlags(u32);

impl ServiceFlags {
    /// Client affinity for `timeout` seconds (`ipvsadm -p`).
    pub const PERSISTENT: Self = Self(uapi::SVC_F_PERSISTENT);
    /// Schedule every packet on its own, no connection entry (`ipvsadm -o`, for UDP).
    pub const ONE_PACKET: Self = Self(uapi::SVC_F_ONEPACKET);
    /// Scheduler-specific flags (`sh-fallback`, `sh-port`, `mh-fallback`, `mh-port`...).
    pub const SCHED1: Self = Self(uapi::SVC_F_SCHED1);
    pub const SCHED2: Self = Self(uapi::SVC_F_SCHED2);
    pub const SCHED3: Self = Self(uapi::SVC_F_SCHED3);
    const KNOWN: u32 = uapi::SVC_F_PERSISTENT
        | uapi::SVC_F_ONEPACKET
        | uapi::SVC_F_SCHED1
        | uapi::SVC_F_SCHED2
        | uapi::SVC_F_SCHED3;

    pub const fn empty() -> Self {
        Self(0)
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Keeps the bits we model; the kernel's "hashed" marker and unknown bits are dropped.
    pub const fn from_bits_truncate(bits: u32) -> Self {
        Self(bits & Self::KNOWN)
    }

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for ServiceFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// A virtual service as we create it (`ipvsadm -A`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub key: ServiceKey,
    /// Scheduler module suffix (`wrr`, `mh`, `sh`...); the kernel loads `ip_vs_<name>`.
    pub scheduler: String,
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (used with [`ServiceFlags::PERSISTENT`]).
    pub timeout: u32,
    /// Persistence granularity as a prefix length; the family's full length means per client.
    pub netmask: u8,
    /// Persistence engine (`sip`), if any.
    pub pe_name: Option<String>,
}

impl Service {
    /// A service with no persistence, like `ipvsadm -A -t VIP:PORT -s SCHED`.
    pub fn new(key: ServiceKey, scheduler: &str) -> Self {
        Service {
            key,
            scheduler: scheduler.to_owned(),
            flags: ServiceFlags::empty(),
            timeout: 0,
            netmask: key.family().max_prefix(),
            pe_name: None,
        }
    }
}

/// Tunnel encapsulation for [`Forward::Tunnel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TunnelEncap {
    Ipip,
    /// Generic UDP encapsulation to this destination UDP port.
    Gue {
        port: u16,
    },
    Gre,
}

/// How packets reach a destination (`ipvsadm -g/-m/-i`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Forward {
    /// Direct routing: only the MAC changes (`-g`, "Route").
    Route,
    /// NAT (`-m`, "Masq").
    Masquerade,
    /// IP-in-IP/GUE/GRE (`-i`, "Tunnel"); `csum`/`remote_csum` are the encapsulation flags.
    Tunnel { encap: TunnelEncap, csum: bool, remote_csum: bool },
    /// The destination is an address of this host (set by the kernel, "Local").
    Local,
}

impl Forward {
    /// `ipvsadm -Ln`'s "Forward" column.
    pub fn ipvsadm_name(&self) -> &'static str {
        match self {
            Forward::Route => "Route",
            Forward::Masquerade => "Masq",
            Forward::Tunnel { .. } => "Tunnel",
            Forward::Local => "Local",
        }
    }
}

/// A real server of a service (`ipvsadm -a`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    pub addr: IpAddr,
    pub port: u16,
    pub forward: Forward,
    /// 0 stops new connections (drain); the kernel rejects values above `i32::MAX`.
    pub weight: u32,
    /// Stop scheduling above this many connections (0: no limit).
    pub upper_threshold: u32,
    /// Resume scheduling below this many connections (0: unset).
    pub lower_threshold: u32,
}

impl Destination {
    /// A direct-routing real server without connection thresholds.
    pub fn route(real: SocketAddr, weight: u32) -> Self {
        Destination {
            addr: real.ip(),
            port: real.port(),
            forward: Forward::Route,
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
}

/// Counters and rates as the kernel keeps them (`ipvsadm --stats`/`--rate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
    /// Rates over the kernel's estimator window, per second.
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

/// A service as read back, with its counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub service: Service,
    pub stats: Stats,
}

/// A destination as read back, with its connection counts and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestinationEntry {
    pub destination: Destination,
    /// Established connections (`ActiveConn`).
    pub active_conns: u32,
    /// Other connection states (`InActConn`).
    pub inactive_conns: u32,
    /// Persistence templates pointing here.
    pub persist_conns: u32,
    pub stats: Stats,
}

/// What `GET_INFO` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// `0x010201` is 1.2.1.
    pub version: u32,
    /// Buckets of the connection hash table.
    pub conn_table_size: u32,
}

impl Info {
    /// `1.2.1`, as `ipvsadm` prints it.
    pub fn version_string(&self) -> String {
        let v = self.version;
        format!("{}.{}.{}", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff)
    }
}

/// Which of the kernel's two sync daemons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncRole {
    /// Sends this director's connections.
    Master,
    /// Receives a peer's.
    Backup,
}

impl SyncRole {
    pub(crate) fn wire(self) -> u32 {
        match self {
            SyncRole::Master => super::uapi::daemon::STATE_MASTER,
            SyncRole::Backup => super::uapi::daemon::STATE_BACKUP,
        }
    }
}

/// The kernel's connection sync daemon, with `[flow_sync]`'s settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncDaemon {
    pub role: SyncRole,
    pub interface: String,
    pub sync_id: u8,
    pub max_len: u16,
    pub group: std::net::IpAddr,
    pub port: u16,
    pub ttl: u8,
}
