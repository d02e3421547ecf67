//! The `[bgp]` section in the model: how this director announces its ready VIPs to the routers
//! (ECMP scale-out). lb speaks no BGP itself: BIRD does (`speaker = "bird"`), or the operator's
//! own routing daemon exports the routes lb keeps in a kernel table (`speaker = "external"`).
//!
//! Ranges of single values are checked by the front end; the rules here span values or need the
//! host (a neighbor that is one of our addresses, BIRD installed).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use super::host::HostView;
use super::model::{Location, Spans};

/// Hold time when none is given: short, so that a session without BFD still fails in seconds.
pub const DEFAULT_HOLD_TIME: u16 = 9;
/// Seconds a stopping director keeps forwarding after withdrawing, when none is given.
pub const DEFAULT_WITHDRAW_GRACE: Duration = Duration::from_secs(2);
/// Accepted `hold_time` besides 0 (no keepalives): RFC 4271 forbids 1 and 2.
pub const HOLD_TIME_LIMITS: RangeInclusive<u16> = 3..=u16::MAX;
/// Accepted `announce_delay`, in seconds: up to an hour.
pub const ANNOUNCE_DELAY_LIMITS_SECS: RangeInclusive<u32> = 0..=3600;
/// Accepted `withdraw_grace`, in seconds: up to ten minutes.
pub const WITHDRAW_GRACE_LIMITS_SECS: RangeInclusive<u32> = 0..=600;
/// Longest TCP-MD5 key (RFC 2385 keys as Linux takes them: `TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_PASSWORD_LEN: usize = 80;
/// AS_TRANS (RFC 6793): stands in for a 4-byte AS towards old speakers, never a real AS.
pub const AS_TRANS: u32 = 23456;
/// Kernel routing tables lb may not use as `export_table`: local, main and default.
pub const RESERVED_TABLES: [u32; 3] = [253, 254, 255];

/// Which program holds the BGP sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    /// lb writes BIRD's configuration and runs BIRD.
    Bird,
    /// lb keeps the ready VIPs as routes in `export_table`; the operator's daemon exports them.
    External,
}

impl Speaker {
    pub const NAMES: &[&str] = &["bird", "external"];

    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::Bird => "bird",
            Speaker::External => "external",
        }
    }
}

impl FromStr for Speaker {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bird" => Ok(Speaker::Bird),
            "external" => Ok(Speaker::External),
            _ => Err(()),
        }
    }
}

/// A standard BGP community `ASN:VALUE` (RFC 1997), each half 16 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Community(pub u16, pub u16);

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0, self.1)
    }
}

impl FromStr for Community {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (high, low) = s.split_once(':').ok_or(())?;
        // `u16::from_str` takes a leading `+`; a community is digits only.
        let half = |t: &str| {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            t.parse::<u16>().map_err(|_| ())
        };
        Ok(Community(half(high)?, half(low)?))
    }
}

/// The `[bgp]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BgpConfig {
    /// This director's AS (4-byte ASes allowed).
    pub local_as: u32,
    /// `None`: the source address toward the first neighbor, found at run time.
    pub router_id: Option<Ipv4Addr>,
    pub speaker: Speaker,
    /// Kernel routing table the ready VIPs are kept in (`external`).
    pub export_table: Option<u32>,
    /// Seconds; 0 is no keepalives.
    pub hold_time: u16,
    /// MED sent with every announcement: lower wins, for primary/backup directors.
    pub med: u32,
    pub communities: Vec<Community>,
    /// Time after start before the first announcement.
    pub announce_delay: Duration,
    /// Time a stopping director keeps forwarding after withdrawing.
    pub withdraw_grace: Duration,
    /// In file order.
    pub neighbors: Vec<BgpNeighbor>,
    /// Where `[bgp]` starts.
    pub location: Location,
    #[serde(skip)]
    pub key_locations: Spans,
}

impl BgpConfig {
    /// All defaults, with `local_as` and no neighbor.
    pub fn new(local_as: u32, location: Location) -> Self {
        BgpConfig {
            local_as,
            router_id: None,
            speaker: Speaker::Bird,
            export_table: None,
            hold_time: DEFAULT_HOLD_TIME,
            med: 0,
            communities: Vec::new(),
            announce_delay: Duration::ZERO,
            withdraw_grace: DEFAULT_WITHDRAW_GRACE,
            neighbors: Vec::new(),
            location,
            key_locations: Spans::at_section(location),
        }
    }
}

/// One `[[bgp.neighbor]]`: a BGP session to a router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BgpNeighbor {
    pub address: IpAddr,
    pub remote_as: u32,
    /// BFD on this session, for sub-second failure detection.
    pub bfd: bool,
    /// TCP-MD5 key; a secret, so never in JSON output.
    #[serde(skip)]
    pub password: Option<String>,
    /// Where the neighbor's table starts.
    pub location: Location,
    /// Where its values were written (`address` for the rules between neighbors).
    #[serde(skip)]
    pub key_locations: Spans,
}

impl BgpNeighbor {
    /// The defaults, before its table is read (`address` and `remote_as` are required).
    pub fn at(location: Location) -> Self {
        BgpNeighbor {
            address: IpAddr::from([0, 0, 0, 0]),
            remote_as: 0,
            bfd: true,
            password: None,
            location,
            key_locations: Spans::at_section(location),
        }
    }

    /// Where `address` was written.
    pub fn address_at(&self) -> Location {
        self.key_locations.located("address")
    }
}

/// Checks of `[bgp]` beyond single values.
pub(super) fn validate(
    bgp: &BgpConfig,
    host: &dyn HostView,
    error: &mut impl FnMut(Location, String),
) {
    let speaker_at = bgp.key_locations.located("speaker");
    match bgp.speaker {
        Speaker::Bird => {
            if bgp.neighbors.is_empty() && bgp.key_locations.get("neighbor").is_none() {
                error(
                    bgp.location,
                    "`speaker = \"bird\"` needs at least one [[bgp.neighbor]] to announce to"
                        .to_owned(),
                );
            }
            let v4_neighbor = bgp.neighbors.iter().any(|n| n.address.is_ipv4());
            if bgp.router_id.is_none() && !v4_neighbor && !bgp.neighbors.is_empty() {
                error(
                    bgp.location,
                    "`router_id` is required when no neighbor is IPv4: the default is this \
                     host's IPv4 source address toward the first neighbor"
                        .to_owned(),
                );
            }
            if !host.has_program("bird") {
                error(
                    speaker_at,
                    "`speaker = \"bird\"` but the `bird` program (BIRD 2) is not installed or not \
                     on PATH: install BIRD 2, or use `speaker = \"external\"` with your own \
                     routing daemon"
                        .to_owned(),
                );
            }
        }
        Speaker::External => {
            if bgp.export_table.is_none() && bgp.key_locations.get("export_table").is_none() {
                error(
                    speaker_at,
                    "`speaker = \"external\"` needs `export_table`: the kernel routing table \
                     your routing daemon exports the ready VIPs from"
                        .to_owned(),
                );
            }
            for neighbor in &bgp.neighbors {
                error(
                    neighbor.location,
                    "[[bgp.neighbor]] is for `speaker = \"bird\"`: with `external` your own \
                     routing daemon holds the sessions"
                        .to_owned(),
                );
            }
        }
    }
    let mut seen: Vec<(IpAddr, Location)> = Vec::new();
    for neighbor in &bgp.neighbors {
        let address = neighbor.address;
        if let Some((_, first)) = seen.iter().find(|(a, _)| *a == address) {
            error(
                neighbor.address_at(),
                format!("duplicate neighbor {address}: already defined at line {}", first.line),
            );
            continue;
        }
        seen.push((address, neighbor.address_at()));
        if host.has_address(address) {
            error(
                neighbor.address_at(),
                format!("neighbor {address} is an address of this host: name the router's address"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn communities() {
        let cases = [
            ("65010:100", Some(Community(65010, 100))),
            ("0:0", Some(Community(0, 0))),
            ("65535:65535", Some(Community(65535, 65535))),
            ("65536:1", None),
            ("1:65536", None),
            ("1", None),
            ("1:", None),
            (":1", None),
            ("+1:2", None),
            ("1:2:3", None),
            ("a:b", None),
            (" 1:2", None),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<Community>().ok(), expected, "{text:?}");
            if let Some(c) = expected {
                assert_eq!(c.to_string(), text);
            }
        }
    }
}
