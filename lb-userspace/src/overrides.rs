//! Runtime changes made with `lb drain`, `lb undrain` and `lb weight`: they sit on top of the
//! config until the next reload, and `desired_state` applies them like any other input.

use std::net::SocketAddr;

use foldhash::HashMap;

use serde::Serialize;

use crate::{
    config::{Config, Protocol, VirtualServerKey},
    health::state::RealId,
};

/// What an operator changed about one real.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Override {
    /// No new flows (weight 0) until undrained or reloaded.
    Drain,
    /// This weight instead of the configured one.
    Weight(u32),
}

impl std::fmt::Display for Override {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Override::Drain => f.write_str("drain"),
            Override::Weight(w) => write!(f, "weight {w}"),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides(pub HashMap<RealId, Override>);

/// A service as named on the command line: `VIP:PORT` (every protocol), `VIP:PORT/tcp`, or
/// `fwmark:N` (the firewall-mark service N, of either family).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceSelector {
    /// Unused (`0.0.0.0:0`) when `fwmark` is set.
    pub addr: SocketAddr,
    pub protocol: Option<Protocol>,
    pub fwmark: Option<u32>,
}

impl std::fmt::Display for ServiceSelector {
    /// As parsed: `fwmark:N`, `VIP:PORT` or `VIP:PORT/tcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.fwmark, self.protocol) {
            (Some(mark), _) => write!(f, "fwmark:{mark}"),
            (None, Some(p)) => write!(f, "{}/{p}", self.addr),
            (None, None) => write!(f, "{}", self.addr),
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error(
        "`{0}` is not VIP:PORT (IPv6: [VIP]:PORT), optionally followed by /tcp or /udp, nor \
         fwmark:N"
    )]
    BadService(String),
    #[error("`{0}` is not REAL:PORT (IPv6: [REAL]:PORT)")]
    BadReal(String),
    #[error("no virtual server {0} in the running configuration")]
    NoService(String),
    #[error("real server {real} is not part of {service}")]
    NoReal { service: String, real: String },
    #[error("weight {0} is out of range (0-65535)")]
    BadWeight(u64),
}

impl std::str::FromStr for ServiceSelector {
    type Err = SelectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SelectError::BadService(s.to_owned());
        if let Some((word, mark)) = s.split_once(':')
            && word.eq_ignore_ascii_case("fwmark")
        {
            let mark = mark.parse::<u32>().ok().filter(|m| *m != 0).ok_or_else(bad)?;
            let addr = SocketAddr::from(([0, 0, 0, 0], 0));
            return Ok(Self { addr, protocol: None, fwmark: Some(mark) });
        }
        let (addr, protocol) = match s.rsplit_once('/') {
            Some((a, p)) => (a, Some(p.parse::<Protocol>().map_err(|_| bad())?)),
            None => (s, None),
        };
        Ok(Self { addr: addr.parse().map_err(|_| bad())?, protocol, fwmark: None })
    }
}

/// Parses `REAL:PORT`.
pub fn parse_real(s: &str) -> Result<SocketAddr, SelectError> {
    s.parse().map_err(|_| SelectError::BadReal(s.to_owned()))
}

/// The real servers a command names, checked against the running config.
pub fn select(
    config: &Config,
    service: &ServiceSelector,
    real: SocketAddr,
) -> Result<Vec<RealId>, SelectError> {
    let services: Vec<VirtualServerKey> = config
        .virtual_servers
        .iter()
        .map(|v| v.key())
        .filter(|k| match service.fwmark {
            Some(mark) => k.fwmark == Some(mark),
            None => {
                k.fwmark.is_none()
                    && k.vip == service.addr.ip()
                    && k.port == service.addr.port()
                    && service.protocol.is_none_or(|p| p == k.protocol)
            }
        })
        .collect();
    if services.is_empty() {
        return Err(SelectError::NoService(service.to_string()));
    }
    let mut out = Vec::new();
    for key in services {
        let vs = config.virtual_servers.iter().find(|v| v.key() == key);
        let has = vs.is_some_and(|v| v.real_servers.iter().any(|r| r.socket_addr() == real));
        if !has {
            return Err(SelectError::NoReal { service: key.to_string(), real: real.to_string() });
        }
        out.push((key, real.ip(), real.port()));
    }
    Ok(out)
}

/// Validates a weight given on the command line.
pub fn weight(w: u64) -> Result<u32, SelectError> {
    u32::try_from(w)
        .ok()
        .filter(|w| *w <= crate::config::MAX_WEIGHT)
        .ok_or(SelectError::BadWeight(w))
}

/// Keeps only overrides that still name a configured real (after a reload they are all dropped;
/// this guards other callers).
pub fn retain_configured(overrides: &mut Overrides, config: &Config) {
    overrides.0.retain(|(key, addr, port), _| {
        config.virtual_servers.iter().any(|v| {
            v.key() == *key && v.real_servers.iter().any(|r| r.address == *addr && r.port == *port)
        })
    });
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{self, test_support::AnyHost};

    const CONF: &str = r#"
[[virtual_server]]
vip = "192.0.2.100"
port = 80
interface = "eth0"
[[virtual_server.real_server]]
address = "192.0.2.11"
[[virtual_server]]
vip = "192.0.2.100"
port = 80
protocol = "udp"
interface = "eth0"
[[virtual_server.real_server]]
address = "192.0.2.11"
[[virtual_server]]
vip = "2001:db8::100"
port = 53
protocol = "udp"
interface = "eth0"
[[virtual_server.real_server]]
address = "2001:db8::11"
[[virtual_server]]
fwmark = 7
[[virtual_server.real_server]]
address = "192.0.2.11"
port = 443
"#;

    #[test]
    fn selectors_name_services_and_reals() {
        let cfg = config::parse_toml(CONF, Path::new("t.toml"), &AnyHost).expect("valid");
        // (service, real, number of reals selected or the error's text)
        let cases: &[(&str, &str, Result<usize, &str>)] = &[
            ("192.0.2.100:80", "192.0.2.11:80", Ok(2)),
            ("192.0.2.100:80/tcp", "192.0.2.11:80", Ok(1)),
            ("192.0.2.100:80/UDP", "192.0.2.11:80", Ok(1)),
            ("[2001:db8::100]:53", "[2001:db8::11]:53", Ok(1)),
            ("192.0.2.100:81", "192.0.2.11:80", Err("no virtual server 192.0.2.100:81")),
            ("192.0.2.100:80", "192.0.2.12:80", Err("real server 192.0.2.12:80 is not part of")),
            ("192.0.2.100", "192.0.2.11:80", Err("is not VIP:PORT")),
            ("192.0.2.100:80/sctp", "192.0.2.11:80", Err("is not VIP:PORT")),
            ("192.0.2.100:80", "192.0.2.11", Err("is not REAL:PORT")),
            ("fwmark:7", "192.0.2.11:443", Ok(1)),
            ("FWMARK:7", "192.0.2.11:443", Ok(1)),
            ("fwmark:8", "192.0.2.11:443", Err("no virtual server fwmark:8")),
            ("fwmark:7", "192.0.2.11:80", Err("real server 192.0.2.11:80 is not part of fwmark 7")),
            ("fwmark:0", "192.0.2.11:443", Err("nor fwmark:N")),
            ("0.0.0.0:0", "192.0.2.11:443", Err("no virtual server 0.0.0.0:0")),
        ];
        for (svc, real, want) in cases {
            let got = svc
                .parse::<ServiceSelector>()
                .and_then(|s| select(&cfg, &s, parse_real(real)?))
                .map(|v| v.len())
                .map_err(|e| e.to_string());
            match (want, &got) {
                (Ok(n), Ok(m)) => assert_eq!(n, m, "{svc} {real}"),
                (Err(frag), Err(msg)) => assert!(msg.contains(frag), "{svc} {real}: {msg}"),
                _ => panic!("{svc} {real}: want {want:?}, got {got:?}"),
            }
        }
        assert_eq!(weight(65535), Ok(65535));
        assert_eq!(weight(65536), Err(SelectError::BadWeight(65536)));
    }
}
