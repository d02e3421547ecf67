//! `[bgp]` and its `[[bgp.neighbor]]`s in the native front end: each value on its own (types,
//! ranges, syntax). Rules between values and about the host are the model's (`config::bgp`).

use std::net::IpAddr;

use ::toml::de::{DeTable, DeValue};

use super::super::bgp::{
    ANNOUNCE_DELAY_LIMITS_SECS, AS_TRANS, BgpConfig, BgpNeighbor, Community, HOLD_TIME_LIMITS,
    MAX_PASSWORD_LEN, RESERVED_TABLES, Speaker, WITHDRAW_GRACE_LIMITS_SECS,
};
use super::super::emit::{address, array, boolean, integer, seconds, string};
use super::super::model::Spans;
use super::schema::{Doc, Located, Nested, Section, Setting, unless};
use super::{Key, Parser, Value, describe};

const BGP: &str = "[bgp]";
const NEIGHBOR: &str = "[[bgp.neighbor]]";

impl Located for BgpConfig {
    fn spans_mut(&mut self) -> &mut Spans {
        &mut self.key_locations
    }
}

impl Located for BgpNeighbor {
    fn spans_mut(&mut self) -> &mut Spans {
        &mut self.key_locations
    }
}

/// `[bgp]`. A value with an error keeps its default, so that validation still reports the rest
/// (a file with errors is never run); an error in `speaker`, which every other rule depends on,
/// leaves the section out.
pub(in crate::config) const BGP_SECTION: Section<BgpConfig> = Section {
    header: BGP,
    misplaced: misplaced_in_bgp,
    required: &["local_as"],
    drop_on_error: &["speaker"],
    nested: &[Nested {
        name: "neighbor",
        read: |p, k, v, bgp| {
            for (table, span) in p.tables(k, v, NEIGHBOR) {
                let mut neighbor = BgpNeighbor::at(p.at(span));
                if NEIGHBOR_SECTION.read(p, table, &mut neighbor) {
                    bgp.neighbors.push(neighbor);
                }
            }
        },
    }],
    elsewhere: &[],
    finish: None,
    settings: &[
        Setting {
            name: "local_as",
            doc: Doc {
                ty: "integer 1–4294967295, not 23456",
                default: "required",
                meaning: "This director's AS (4-byte ASes allowed; 23456 is AS_TRANS, a \
                     placeholder).",
            },
            read: |p, k, v, s| {
                if let Some(asn) = p.as_number(k, v) {
                    s.local_as = asn;
                }
            },
            emit: |s, _| Some(integer(&s.local_as)),
        },
        Setting {
            name: "router_id",
            doc: Doc {
                ty: "IPv4 address, not `0.0.0.0`",
                default: "the source address toward the first neighbor",
                meaning: "BGP router id (32 bits, also on IPv6 sessions): required when no \
                     neighbor is IPv4.",
            },
            read: |p, k, v, s| s.router_id = p.router_id(k, v),
            emit: |s, _| s.router_id.map(|id| string(&id.to_string())),
        },
        Setting {
            name: "speaker",
            doc: Doc {
                ty: r#"`"bird"` or `"external"`"#,
                default: r#"`"bird"`"#,
                meaning: concat!(
                    r#"`"bird"`: lb runs BIRD 2 for the neighbors below (BIRD must be installed: "#,
                    r#"the `bird` program on PATH). `"external"`: lb keeps the ready VIPs in "#,
                    r#"`export_table`; takes no neighbors."#,
                ),
            },
            read: |p, k, v, s| {
                if let Some(speaker) = p.speaker(k, v) {
                    s.speaker = speaker;
                }
            },
            emit: |s, d| unless(&s.speaker, &d.speaker, |s| string(s.as_str())),
        },
        Setting {
            name: "export_table",
            doc: Doc {
                ty: "integer 1–4294967295, not 253, 254, 255",
                default: r#"none; required with `"external"`"#,
                meaning: "Kernel routing table of the ready VIPs (/32, /128). The kernel's \
                     default, main and local tables are refused.",
            },
            read: |p, k, v, s| s.export_table = p.export_table(k, v),
            emit: |s, _| s.export_table.as_ref().map(integer),
        },
        Setting {
            name: "hold_time",
            doc: Doc {
                ty: "integer 0 or 3–65535",
                default: "`9`",
                meaning: "BGP hold time in seconds; `0` is no keepalives (1 and 2 are not \
                     allowed by BGP).",
            },
            read: |p, k, v, s| {
                if let Some(hold) = p.hold_time(k, v) {
                    s.hold_time = hold;
                }
            },
            emit: |s, d| unless(&s.hold_time, &d.hold_time, integer),
        },
        Setting {
            name: "med",
            doc: Doc {
                ty: "integer 0–4294967295",
                default: "`0`",
                meaning: "MED sent with every announcement: lower wins, for primary/backup \
                     directors.",
            },
            read: |p, k, v, s| {
                if let Some(med) = p.integer_in(k, v, 0..=u32::MAX) {
                    s.med = med;
                }
            },
            emit: |s, d| unless(&s.med, &d.med, integer),
        },
        Setting {
            name: "communities",
            doc: Doc {
                ty: r#"array of `"ASN:VALUE"` strings, each half 0–65535"#,
                default: "`[]`",
                meaning: "Standard communities added to every announcement.",
            },
            read: |p, k, v, s| s.communities = p.communities(k, v),
            emit: |s, _| {
                (!s.communities.is_empty())
                    .then(|| array(&s.communities, |c| string(&c.to_string())))
            },
        },
        Setting {
            name: "announce_delay",
            doc: Doc {
                ty: "seconds, 0–3600",
                default: "`0`",
                meaning: "Time after the agent starts before the first announcement (e.g. to \
                     let health checks settle).",
            },
            read: |p, k, v, s| {
                if let Some(delay) = p.seconds(k, v, ANNOUNCE_DELAY_LIMITS_SECS) {
                    s.announce_delay = delay;
                }
            },
            emit: |s, d| unless(&s.announce_delay, &d.announce_delay, seconds),
        },
        Setting {
            name: "withdraw_grace",
            doc: Doc {
                ty: "seconds, 0–600",
                default: "`2`",
                meaning: "Time a stopping director keeps forwarding after withdrawing its VIPs.",
            },
            read: |p, k, v, s| {
                if let Some(grace) = p.seconds(k, v, WITHDRAW_GRACE_LIMITS_SECS) {
                    s.withdraw_grace = grace;
                }
            },
            emit: |s, d| unless(&s.withdraw_grace, &d.withdraw_grace, seconds),
        },
    ],
};

/// A `[[bgp.neighbor]]`: one with an error is left out.
pub(in crate::config) const NEIGHBOR_SECTION: Section<BgpNeighbor> = Section {
    header: NEIGHBOR,
    misplaced: misplaced_in_neighbor,
    required: &["address", "remote_as"],
    drop_on_error: &["address", "remote_as", "bfd", "password"],
    nested: &[],
    elsewhere: &[],
    finish: None,
    settings: &[
        Setting {
            name: "address",
            doc: Doc {
                ty: "IP address",
                default: "required",
                meaning: "The router's address: unicast, not loopback, not IPv6 link-local, not \
                     an address of this host, not twice. An IPv4 session carries the IPv4 VIPs, an \
                     IPv6 session the IPv6 ones.",
            },
            read: |p, k, v, n| {
                if let Some(a) = p.neighbor_address(k, v) {
                    n.address = a;
                }
            },
            emit: |n, _| Some(address(&n.address)),
        },
        Setting {
            name: "remote_as",
            doc: Doc {
                ty: "integer 1–4294967295, not 23456",
                default: "required",
                meaning: "The router's AS (equal to `local_as`: iBGP).",
            },
            read: |p, k, v, n| {
                if let Some(asn) = p.as_number(k, v) {
                    n.remote_as = asn;
                }
            },
            emit: |n, _| Some(integer(&n.remote_as)),
        },
        Setting {
            name: "bfd",
            doc: Doc {
                ty: "boolean",
                default: "`true`",
                meaning: "Run BFD on the session, so that a dead director is dropped in under a \
                     second.",
            },
            read: |p, k, v, n| {
                if let Some(bfd) = p.boolean(k, v) {
                    n.bfd = bfd;
                }
            },
            emit: |n, d| unless(&n.bfd, &d.bfd, boolean),
        },
        Setting {
            name: "password",
            doc: Doc {
                ty: r#"string, 1–80 printable ASCII characters, no `"` or `\`"#,
                default: "none",
                meaning: "TCP-MD5 key of the session (RFC 2385).",
            },
            read: |p, k, v, n| n.password = p.password(k, v),
            emit: |n, _| n.password.as_deref().map(string),
        },
    ],
};

/// The message for a neighbor key written in `[bgp]` or the other way round.
fn misplaced_in_bgp(name: &str) -> Option<String> {
    NEIGHBOR_SECTION
        .keys()
        .contains(&name)
        .then(|| format!("`{name}` is set per neighbor: move it to a {NEIGHBOR}"))
}

fn misplaced_in_neighbor(name: &str) -> Option<String> {
    BGP_SECTION
        .settings
        .iter()
        .any(|s| s.name == name)
        .then(|| format!("`{name}` is a director-wide setting: move it to {BGP}"))
}

impl Parser<'_> {
    /// `[bgp]`, when written (see [`BGP_SECTION`]).
    pub(super) fn bgp(&mut self, root: &DeTable<'_>) -> Option<BgpConfig> {
        let (key, value) = root.get_key_value("bgp")?;
        let (table, span) = self.table(key, value, BGP)?;
        let mut bgp = BgpConfig::new(0, self.at(span));
        BGP_SECTION.read(self, table, &mut bgp).then_some(bgp)
    }

    /// An AS number: 4-byte ASes allowed; neither 0 (reserved) nor AS_TRANS.
    fn as_number(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<u32> {
        let n = self.integer_in(key, value, 1..=u32::MAX)?;
        if n == AS_TRANS {
            let message = format!(
                "`{}` must not be {AS_TRANS} (AS_TRANS, a placeholder for 4-byte ASes): write \
                 the real AS number",
                key.get_ref()
            );
            self.error(value.span(), message);
            return None;
        }
        Some(n)
    }

    fn router_id(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<std::net::Ipv4Addr> {
        let text = self.string(key, value)?;
        match text.parse::<std::net::Ipv4Addr>() {
            Ok(id) if !id.is_unspecified() => Some(id),
            _ => {
                let message = format!(
                    "`{}` must be an IPv4 address other than 0.0.0.0 (BGP router ids are 32-bit, \
                     also on IPv6 sessions), found \"{}\"",
                    key.get_ref(),
                    text.escape_debug()
                );
                self.error(value.span(), message);
                None
            }
        }
    }

    fn speaker(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<Speaker> {
        let text = self.string(key, value)?;
        match text.parse() {
            Ok(speaker) => Some(speaker),
            Err(()) => {
                let message = format!(
                    "`{}` must be \"bird\" or \"external\", found \"{}\"",
                    key.get_ref(),
                    text.escape_debug()
                );
                self.error(value.span(), message);
                None
            }
        }
    }

    fn export_table(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<u32> {
        let table = self.integer_in(key, value, 1..=u32::MAX)?;
        if RESERVED_TABLES.contains(&table) {
            let message = format!(
                "`{}` must not be {table}: tables 253, 254 and 255 are the kernel's default, \
                 main and local tables; use a table of its own (e.g. 100)",
                key.get_ref()
            );
            self.error(value.span(), message);
            return None;
        }
        Some(table)
    }

    fn hold_time(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<u16> {
        let integer = self.integer_literal(key, value)?;
        let n = i64::from_str_radix(integer.as_str(), integer.radix()).ok();
        let (min, max) = (i64::from(*HOLD_TIME_LIMITS.start()), i64::from(*HOLD_TIME_LIMITS.end()));
        match n.filter(|&n| n == 0 || (min..=max).contains(&n)) {
            Some(n) => u16::try_from(n).ok(),
            None => {
                let message = format!(
                    "`{}` must be 0 (no keepalives) or between {min} and {max} seconds, found \
                     {integer}",
                    key.get_ref()
                );
                self.error(value.span(), message);
                None
            }
        }
    }

    /// Every community of the array; the ones with errors are reported and left out.
    fn communities(&mut self, key: &Key<'_>, value: &Value<'_>) -> Vec<Community> {
        let DeValue::Array(items) = value.get_ref() else {
            let message = format!(
                "`{}` must be an array of \"ASN:VALUE\" strings, found {}",
                key.get_ref(),
                describe(value.get_ref())
            );
            self.error(value.span(), message);
            return Vec::new();
        };
        let mut communities = Vec::with_capacity(items.len());
        for item in items.iter() {
            let parsed = match item.get_ref() {
                DeValue::String(text) => text.parse::<Community>().map_err(|()| {
                    format!(
                        "each of `{}` must be \"ASN:VALUE\", each 0 to 65535, found \"{}\"",
                        key.get_ref(),
                        text.escape_debug()
                    )
                }),
                other => Err(format!(
                    "each of `{}` must be a string \"ASN:VALUE\", found {}",
                    key.get_ref(),
                    describe(other)
                )),
            };
            match parsed {
                Ok(community) => communities.push(community),
                Err(message) => self.error(item.span(), message),
            }
        }
        communities
    }

    /// A router's address: a unicast address lb can open a session to.
    fn neighbor_address(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<IpAddr> {
        let address = self.ip_address(key, value)?;
        let problem = if address.is_unspecified() {
            Some("the unspecified address")
        } else if address.is_multicast() || address == IpAddr::from([255, 255, 255, 255]) {
            Some("not a unicast address")
        } else if address.is_loopback() {
            Some("a loopback address")
        } else if matches!(address, IpAddr::V6(v6) if v6.is_unicast_link_local()) {
            Some("link-local, which needs an interface to reach it (not supported)")
        } else {
            None
        };
        if let Some(problem) = problem {
            let message = format!("neighbor `{}` {address} is {problem}", key.get_ref());
            self.error(value.span(), message);
            return None;
        }
        Some(address)
    }

    /// A TCP-MD5 key: printable ASCII up to [`MAX_PASSWORD_LEN`], without quotes or backslashes
    /// (so that it is written into BIRD's configuration as is).
    fn password(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<String> {
        let text = self.string(key, value)?;
        let printable = text.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        if text.is_empty()
            || text.len() > MAX_PASSWORD_LEN
            || !printable
            || text.contains(['"', '\\'])
        {
            let message = format!(
                "`{}` must be 1 to {MAX_PASSWORD_LEN} printable ASCII characters (the TCP-MD5 \
                 key limit), without `\"` or `\\`; found {} characters",
                key.get_ref(),
                text.chars().count()
            );
            self.error(value.span(), message);
            return None;
        }
        Some(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::path::Path;
    use std::time::Duration;

    use super::super::super::bgp::DEFAULT_WITHDRAW_GRACE;
    use super::super::super::model::Location;
    use super::super::super::test_support::{FakeHost, Scenario, assert_toml_scenarios, doc};
    use super::super::super::{ConfigErrors, HostView, parse_toml};
    use super::*;

    /// Lines 1-2 of every scenario: `[bgp]` with its one required key.
    const BGP_BASE: &[&str] = &["[bgp]", "local_as = 65010"];

    /// Each must be the only error of its file, at its place.
    const SCENARIOS: &[Scenario] = &[
        ("bgp as a value", &["bgp = 1"], &[], "`bgp` must be a single table", "1:7"),
        (
            "missing local_as",
            &["[bgp]"],
            &["[[bgp.neighbor]]", "address = '198.51.100.1'", "remote_as = 65000"],
            "missing required key `local_as` in [bgp]",
            "1:1",
        ),
        (
            "AS 0",
            &["[bgp]", "local_as = 0"],
            &[],
            "`local_as` must be between 1 and 4294967295",
            "2:12",
        ),
        (
            "AS beyond 4 bytes",
            &["[bgp]", "local_as = 4294967296"],
            &[],
            "`local_as` must be between 1 and 4294967295",
            "2:12",
        ),
        ("AS_TRANS", &["[bgp]", "local_as = 23456"], &[], "must not be 23456 (AS_TRANS", "2:12"),
        (
            "misspelled key",
            BGP_BASE,
            &["hold_tme = 3", "[[bgp.neighbor]]", "address = '198.51.100.1'", "remote_as = 1"],
            "unknown key `hold_tme` in [bgp]; did you mean `hold_time`?",
            "3:1",
        ),
        (
            "neighbor key in [bgp]",
            BGP_BASE,
            &["remote_as = 1"],
            "`remote_as` is set per neighbor: move it to a [[bgp.neighbor]]",
            "3:1",
        ),
        (
            "director-wide key in a neighbor",
            BGP_BASE,
            &["[[bgp.neighbor]]", "address = '198.51.100.1'", "remote_as = 1", "med = 5"],
            "`med` is a director-wide setting: move it to [bgp]",
            "6:1",
        ),
        (
            "router id IPv6",
            BGP_BASE,
            &["router_id = '2001:db8::1'"],
            "`router_id` must be an IPv4 address other than 0.0.0.0",
            "3:13",
        ),
        (
            "router id unspecified",
            BGP_BASE,
            &["router_id = '0.0.0.0'"],
            "`router_id` must be an IPv4 address other than 0.0.0.0",
            "3:13",
        ),
        (
            "unknown speaker",
            BGP_BASE,
            &["speaker = 'frr'"],
            "must be \"bird\" or \"external\"",
            "3:11",
        ),
        (
            "export table main",
            BGP_BASE,
            &["speaker = 'external'", "export_table = 254"],
            "`export_table` must not be 254",
            "4:16",
        ),
        (
            "export table 0",
            BGP_BASE,
            &["speaker = 'external'", "export_table = 0"],
            "`export_table` must be between 1 and 4294967295",
            "4:16",
        ),
        (
            "external without export table",
            BGP_BASE,
            &["speaker = 'external'"],
            "`speaker = \"external\"` needs `export_table`",
            "3:11",
        ),
        (
            "external with a neighbor",
            BGP_BASE,
            &[
                "speaker = 'external'",
                "export_table = 100",
                "[[bgp.neighbor]]",
                "address = '198.51.100.1'",
                "remote_as = 1",
            ],
            "[[bgp.neighbor]] is for `speaker = \"bird\"`",
            "5:1",
        ),
        (
            "hold time 2",
            BGP_BASE,
            &["hold_time = 2"],
            "`hold_time` must be 0 (no keepalives) or between 3 and 65535 seconds, found 2",
            "3:13",
        ),
        (
            "hold time too long",
            BGP_BASE,
            &["hold_time = 65536"],
            "`hold_time` must be 0 (no keepalives) or between 3 and 65535",
            "3:13",
        ),
        ("med negative", BGP_BASE, &["med = -1"], "`med` must be between 0 and 4294967295", "3:7"),
        (
            "community half too large",
            BGP_BASE,
            &["communities = ['65010:100', '65536:1']"],
            "each of `communities` must be \"ASN:VALUE\", each 0 to 65535, found \"65536:1\"",
            "3:29",
        ),
        (
            "community not a string",
            BGP_BASE,
            &["communities = [65010]"],
            "each of `communities` must be a string \"ASN:VALUE\", found integer 65010",
            "3:16",
        ),
        (
            "communities not an array",
            BGP_BASE,
            &["communities = '65010:100'"],
            "`communities` must be an array of \"ASN:VALUE\" strings",
            "3:15",
        ),
        (
            "announce delay too long",
            BGP_BASE,
            &["announce_delay = 3601"],
            "`announce_delay` must be between 0 and 3600 seconds, found 3601",
            "3:18",
        ),
        (
            "withdraw grace negative",
            BGP_BASE,
            &["withdraw_grace = -1"],
            "`withdraw_grace` must be between 0 and 600 seconds",
            "3:18",
        ),
        (
            "neighbor without remote_as",
            BGP_BASE,
            &["[[bgp.neighbor]]", "address = '198.51.100.1'"],
            "missing required key `remote_as` in [[bgp.neighbor]]",
            "3:1",
        ),
        (
            "neighbor remote AS 0",
            BGP_BASE,
            &["[[bgp.neighbor]]", "address = '198.51.100.1'", "remote_as = 0"],
            "`remote_as` must be between 1 and 4294967295",
            "5:13",
        ),
        (
            "neighbor not an address",
            BGP_BASE,
            &["[[bgp.neighbor]]", "address = 'router1'", "remote_as = 1"],
            "`address` must be an IP address, found \"router1\"",
            "4:11",
        ),
        (
            "neighbor multicast",
            BGP_BASE,
            &["[[bgp.neighbor]]", "address = '224.0.0.5'", "remote_as = 1"],
            "is not a unicast address",
            "4:11",
        ),
        (
            "neighbor link-local",
            BGP_BASE,
            &["[[bgp.neighbor]]", "address = 'fe80::1'", "remote_as = 1"],
            "is link-local",
            "4:11",
        ),
        (
            "neighbor is our address",
            BGP_BASE,
            &["[[bgp.neighbor]]", "address = '198.51.100.2'", "remote_as = 1"],
            "neighbor 198.51.100.2 is an address of this host",
            "4:11",
        ),
        (
            "duplicate neighbor",
            BGP_BASE,
            &[
                "router_id = '192.0.2.1'",
                "[[bgp.neighbor]]",
                "address = '2001:db8::1'",
                "remote_as = 1",
                "[[bgp.neighbor]]",
                "address = '2001:DB8:0::1'",
                "remote_as = 2",
            ],
            "duplicate neighbor 2001:db8::1: already defined at line 5",
            "8:11",
        ),
        (
            "IPv6 sessions only, no router id",
            BGP_BASE,
            &["[[bgp.neighbor]]", "address = '2001:db8::1'", "remote_as = 1"],
            "`router_id` is required when no neighbor is IPv4",
            "1:1",
        ),
        (
            "bfd not a boolean",
            BGP_BASE,
            &["[[bgp.neighbor]]", "address = '198.51.100.1'", "remote_as = 1", "bfd = 'yes'"],
            "`bfd` must be true or false",
            "6:7",
        ),
        (
            "password too long",
            BGP_BASE,
            &[
                "[[bgp.neighbor]]",
                "address = '198.51.100.1'",
                "remote_as = 1",
                "password = '123456789012345678901234567890123456789012345678901234567890123456789012345678901'",
            ],
            "`password` must be 1 to 80 printable ASCII characters (the TCP-MD5 key limit), \
             without `\"` or `\\`; found 81 characters",
            "6:12",
        ),
        (
            "password with a quote",
            BGP_BASE,
            &["[[bgp.neighbor]]", "address = '198.51.100.1'", "remote_as = 1", "password = 'a\"b'"],
            "`password` must be 1 to 80 printable ASCII",
            "6:12",
        ),
        (
            "empty password",
            BGP_BASE,
            &["[[bgp.neighbor]]", "address = '198.51.100.1'", "remote_as = 1", "password = ''"],
            "`password` must be 1 to 80 printable ASCII",
            "6:12",
        ),
        (
            "neighbor as a table",
            BGP_BASE,
            &["[bgp.neighbor]", "address = '198.51.100.1'", "remote_as = 1"],
            "`neighbor` must be an array of tables: write [[bgp.neighbor]] once per entry",
            "3:1",
        ),
    ];

    /// A neighbor, appended to the scenarios that write none (and choose no speaker), which
    /// `speaker = "bird"` needs.
    const NEIGHBOR_LINES: &[&str] =
        &["[[bgp.neighbor]]", "address = '198.51.100.1'", "remote_as = 65000"];

    #[test]
    fn scenarios() {
        let mut scenarios = Vec::new();
        for &(name, base, extra, expected, at) in SCENARIOS {
            let text = [base, extra].concat().join("\n");
            let standalone = ["neighbor]", "speaker", "bgp ="].iter().any(|w| text.contains(w));
            let extra: &'static [&'static str] = if standalone {
                extra
            } else {
                Box::leak([extra, NEIGHBOR_LINES].concat().into_boxed_slice())
            };
            scenarios.push((name, base, extra, expected, at));
        }
        scenarios.push((
            "bird without neighbor",
            BGP_BASE,
            &[],
            "needs at least one [[bgp.neighbor]]",
            "1:1",
        ));
        assert_toml_scenarios(&scenarios);
    }

    /// The issue's contract, as written there.
    const CONTRACT: &str = r#"[bgp]
local_as = 65010
router_id = "198.51.100.2"   # default: the source address toward the first neighbor
speaker = "bird"
export_table = 100
hold_time = 9
med = 0
communities = ["65010:100"]
announce_delay = 0
withdraw_grace = 2
[[bgp.neighbor]]
address = "198.51.100.1"
remote_as = 65000
bfd = true
password = "secret"
"#;

    #[test]
    fn contract_parses_into_the_model() {
        let config = parse_toml(CONTRACT, Path::new("test.toml"), &FakeHost).unwrap();
        let bgp = config.bgp.unwrap();
        let expected = BgpConfig {
            router_id: Some(Ipv4Addr::new(198, 51, 100, 2)),
            export_table: Some(100),
            communities: vec![Community(65010, 100)],
            neighbors: vec![BgpNeighbor {
                address: "198.51.100.1".parse().unwrap(),
                remote_as: 65000,
                bfd: true,
                password: Some("secret".to_owned()),
                location: Location::new(11, 1),
                key_locations: bgp.neighbors[0].key_locations.clone(),
            }],
            key_locations: bgp.key_locations.clone(),
            ..BgpConfig::new(65010, Location::new(1, 1))
        };
        assert_eq!(bgp, expected);
        assert_eq!(bgp.neighbors[0].address_at(), Location::new(12, 11));
        assert_eq!(bgp.key_locations.located("speaker"), Location::new(4, 11));
    }

    #[test]
    fn defaults_and_values() {
        let text = doc(&[
            "bgp = { local_as = 4200000000, speaker = 'external', export_table = 4294967295, \
             hold_time = 0, med = 4294967295, announce_delay = 1.5, communities = [] }",
        ]);
        let bgp = parse_toml(&text, Path::new("t.toml"), &FakeHost).unwrap().bgp.unwrap();
        assert_eq!(bgp.local_as, 4_200_000_000);
        assert_eq!(bgp.speaker, Speaker::External);
        assert_eq!(bgp.export_table, Some(u32::MAX));
        assert_eq!(bgp.hold_time, 0);
        assert_eq!(bgp.med, u32::MAX);
        assert_eq!(bgp.announce_delay, Duration::from_millis(1500));
        assert_eq!(bgp.withdraw_grace, DEFAULT_WITHDRAW_GRACE);
        assert_eq!(bgp.router_id, None);

        let neighbor = doc(&[
            "[bgp]",
            "local_as = 1",
            "[[bgp.neighbor]]",
            "address = '198.51.100.1'",
            "remote_as = 2",
        ]);
        let bgp = parse_toml(&neighbor, Path::new("t.toml"), &FakeHost).unwrap().bgp.unwrap();
        assert_eq!(bgp.hold_time, 9);
        assert!(bgp.neighbors[0].bfd, "bfd is on by default");
        assert_eq!(bgp.neighbors[0].password, None);
        let none = parse_toml("", Path::new("t.toml"), &FakeHost).unwrap();
        assert_eq!(none.bgp, None);
    }

    /// A host without BIRD.
    struct NoBird;

    impl HostView for NoBird {
        fn interface_exists(&self, _: &str) -> bool {
            true
        }

        fn has_program(&self, name: &str) -> bool {
            name != "bird"
        }
    }

    #[test]
    fn bird_must_be_installed_for_speaker_bird() {
        let errors: ConfigErrors = parse_toml(CONTRACT, Path::new("lb.toml"), &NoBird).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors}");
        assert!(
            errors.to_string().starts_with(
                "lb.toml:4:11: `speaker = \"bird\"` but the `bird` program (BIRD 2) is not \
                 installed"
            ),
            "{errors}"
        );
        // Nothing to run with `external`.
        let external = CONTRACT
            .replace("speaker = \"bird\"", "speaker = \"external\"")
            .replace("[[bgp.neighbor]]\naddress = \"198.51.100.1\"\nremote_as = 65000\nbfd = true\npassword = \"secret\"\n", "");
        let config = parse_toml(&external, Path::new("lb.toml"), &NoBird).unwrap();
        assert_eq!(config.bgp.unwrap().speaker, Speaker::External);
    }

    /// Every error of a file at once, each at its place.
    #[test]
    fn all_errors_at_once() {
        let text = doc(&[
            "[bgp]",
            "local_as = 0",
            "hold_time = 1",
            "communities = ['1:2:3']",
            "[[bgp.neighbor]]",
            "address = '198.51.100.2'",
            "remote_as = 65000",
            "[[bgp.neighbor]]",
            "address = '198.51.100.2'",
            "remote_as = 23456",
        ]);
        let errors = parse_toml(&text, Path::new("lb.toml"), &FakeHost).unwrap_err();
        let at: Vec<String> = errors.iter().map(|e| e.location().to_string()).collect();
        // The value errors, and the neighbor rules on what could be read: the first neighbor is
        // our own address, the second (left out for its AS) is not reported as a duplicate.
        assert_eq!(at, ["2:12", "3:13", "4:16", "6:11", "10:13"], "{errors}");
        assert!(errors.0[3].message.contains("is an address of this host"), "{errors}");
    }

    /// An error in `speaker` (which every rule of [bgp] depends on) leaves [bgp] out; an error
    /// elsewhere keeps it with that value's default; a neighbor with an error is left out.
    #[test]
    fn what_an_error_leaves_out() {
        let neighbor = ["[[bgp.neighbor]]", "address = '198.51.100.1'", "remote_as = 65000"];
        // (line in [bgp], line in the neighbor, [bgp] kept, neighbors kept)
        let cases = [
            ("speaker = 'quagga'", "bfd = true", false, 1),
            ("speaker = 1", "bfd = true", false, 1),
            ("med = -1", "bfd = true", true, 1),
            ("hold_time = 1", "bfd = true", true, 1),
            ("med = 1", "bfd = 'yes'", true, 0),
            ("med = 1", "password = ''", true, 0),
        ];
        for (bgp_line, neighbor_line, kept, neighbors) in cases {
            let mut lines = vec!["[bgp]", "local_as = 65010", bgp_line];
            lines.extend(neighbor);
            lines.push(neighbor_line);
            let (config, errors) = super::super::parse(&doc(&lines), Path::new("lb.toml"));
            assert_eq!(errors.len(), 1, "{bgp_line} / {neighbor_line}: {errors:?}");
            assert_eq!(config.bgp.is_some(), kept, "{bgp_line}");
            if let Some(bgp) = config.bgp {
                assert_eq!(bgp.neighbors.len(), neighbors, "{neighbor_line}");
            }
        }
    }
}
