//! The configuration model every front end (native TOML, later keepalived.conf) produces.
//!
//! Names follow keepalived's vocabulary so operators recognise them. Values are already resolved
//! (defaults applied), and each section remembers where it was written so that validation — which
//! does not know which front end produced the model — can point errors at the exact place.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::Serialize;

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

/// A whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The file it was read from; errors found later (e.g. at apply time) can still name it.
    pub source: PathBuf,
    /// In file order. Empty is valid: a director with nothing to do.
    pub virtual_servers: Vec<VirtualServer>,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct VirtualServerKey {
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for VirtualServerKey {
    /// `192.0.2.100:80/tcp`, `[2001:db8::1]:53/udp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", SocketAddr::new(self.vip, self.port), self.protocol)
    }
}

/// A virtual service: traffic to `vip:port/protocol` arriving on `interface` is spread over the
/// real servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtualServer {
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// The NIC the VIP traffic arrives on, where the XDP program attaches.
    pub interface: String,
    /// Scheduler name (one of [`SCHEDULERS`]); keepalived also calls it `lvs_sched`.
    pub lb_algo: String,
    pub real_servers: Vec<RealServer>,
    /// Where the section starts (the `[[virtual_server]]` header).
    pub location: Location,
    /// Where each setting was written, for errors about one specific value.
    #[serde(skip)]
    pub key_locations: VirtualServerLocations,
}

impl VirtualServer {
    pub fn key(&self) -> VirtualServerKey {
        VirtualServerKey { vip: self.vip, port: self.port, protocol: self.protocol }
    }
}

impl fmt::Display for VirtualServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.key().fmt(f)
    }
}

/// Locations of a virtual server's values. A setting that was omitted (default applied) is
/// located at its section, since that is where the operator would add it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VirtualServerLocations {
    pub vip: Location,
    pub port: Location,
    pub protocol: Location,
    pub interface: Location,
    pub lb_algo: Location,
}

impl VirtualServerLocations {
    /// Every value located at the section itself; front ends then overwrite what they saw.
    pub fn all_at(location: Location) -> Self {
        VirtualServerLocations {
            vip: location,
            port: location,
            protocol: location,
            interface: location,
            lb_algo: location,
        }
    }
}

/// A backend that receives a virtual server's traffic by direct routing (same port, MAC rewrite).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RealServer {
    pub address: IpAddr,
    /// Must equal the virtual server's port (DR cannot rewrite it); kept so validation can say so.
    pub port: u16,
    /// 0..=[`MAX_WEIGHT`]; 0 drains the server (no new connections).
    pub weight: u32,
    /// Where the section starts (the `[[virtual_server.real_server]]` header).
    pub location: Location,
    /// Where each setting was written, for errors about one specific value.
    #[serde(skip)]
    pub key_locations: RealServerLocations,
}

impl RealServer {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

impl fmt::Display for RealServer {
    /// `192.0.2.11:80`, `[2001:db8::11]:80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.socket_addr().fmt(f)
    }
}

/// Locations of a real server's values; omitted settings are located at the section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RealServerLocations {
    pub address: Location,
    pub port: Location,
    pub weight: Location,
}

impl RealServerLocations {
    /// Every value located at the section itself; front ends then overwrite what they saw.
    pub fn all_at(location: Location) -> Self {
        RealServerLocations { address: location, port: location, weight: location }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let key = VirtualServerKey { vip: vip.parse().unwrap(), port, protocol };
            assert_eq!(key.to_string(), expected);
        }
    }

    #[test]
    fn serializes_without_key_locations() {
        let rs = RealServer {
            address: "192.0.2.11".parse().unwrap(),
            port: 80,
            weight: 1,
            location: Location::new(6, 1),
            key_locations: RealServerLocations::all_at(Location::new(6, 1)),
        };
        let json = serde_json::to_value(&rs).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "address": "192.0.2.11", "port": 80, "weight": 1,
                "location": {"line": 6, "col": 1}
            })
        );
    }
}
