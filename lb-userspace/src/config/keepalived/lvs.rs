//! The LVS part of keepalived.conf — `virtual_server`, `virtual_server_group`, `real_server` (their
//! checkers are [`super::checkers`]') — read into specs first (every statement checked), then
//! built into the model once the whole file is known: a `virtual_server group` may come before its
//! group, and the interface of a virtual IP comes from the VRRP blocks.
//!
//! keepalived's defaults are kept where they differ from the native format's: no `lb_algo` is
//! `wlc`, no `protocol` is UDP, no forwarding method is NAT (served by IPVS, with a warning), a
//! checker's `warmup` is its `delay_loop`, `retry`, `delay_before_retry` and
//! `misc_timeout` depend on the checker, and a setting of a virtual server is the default of its
//! real servers, whose settings are the defaults of their checkers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::super::health::{DEFAULT_DELAY_LOOP, RealHealth, ServiceHealth};
use super::super::model::{
    DEFAULT_WEIGHT, LbKind, Location, MAX_PERSISTENCE_TIMEOUT_SECS, MAX_SERVICES_LIMITS,
    MAX_WEIGHT, Protocol, RealForwarding, RealServer, SCHEDULERS, ServiceForwarding, Spans, Tunnel,
    TunnelError, VirtualServer, host_prefix_len, unspecified,
};
use super::super::validate::{Role, address_class_error};
use super::checkers::{self, CheckSpec};
use super::keywords::{self, Checker, Section, UNIMPLEMENTED_CHECKERS};
use super::tree::{Stmt, Word};
use super::values::{Cx, Seen};
use super::vrrp::{Named, Vrrp};
use crate::maglev;

/// keepalived's scheduler when none is given (IPVS_DEF_SCHED).
pub(super) const KEEPALIVED_DEFAULT_SCHEDULER: &str = "wlc";

/// keepalived's persistence timeout when `persistence_timeout` has no value, or is implied
/// (IPVS_SVC_PERSISTENT_TIMEOUT): 6 minutes.
pub(super) const DEFAULT_PERSISTENCE: Duration = Duration::from_secs(360);

/// Longest health-check duration accepted, as in the native format: one day.
pub(super) const MAX_SECONDS: u32 = 86_400;

const NOT_IPVS: &str = "it tunes IPVS, which the XDP dataplane replaces";

/// A `virtual_server_group`: its address entries expanded.
#[derive(Debug)]
pub(super) struct Group {
    name: Named,
    entries: Vec<GroupEntry>,
    /// Its `fwmark N [inet|inet6]` entries: mark, family if given (true: IPv6), where.
    fwmarks: Vec<(u32, Option<bool>, Location)>,
    ok: bool,
}

#[derive(Debug)]
struct GroupEntry {
    addresses: Vec<IpAddr>,
    port: u16,
    at: Location,
    port_at: Location,
}

/// Which addresses a `virtual_server` serves.
#[derive(Debug)]
enum Target {
    Address {
        vip: IpAddr,
        vip_at: Location,
        port: u16,
        port_at: Location,
    },
    /// `virtual_server fwmark N`.
    Fwmark {
        mark: u32,
        at: Location,
    },
    Group(Named),
}

/// `persistence_granularity`: a prefix length, or an IPv4 netmask's.
#[derive(Debug, Clone, Copy)]
enum Granularity {
    Prefix(u8),
    Netmask(u8),
}

/// Settings that are defaults of the level below (virtual server → real server → checker).
#[derive(Debug, Default, Clone)]
pub(super) struct Defaults {
    pub retry: Option<(u32, Location)>,
    pub delay_before_retry: Option<Duration>,
    pub warmup: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub virtualhost: Option<String>,
    pub alpha: Option<(bool, Location)>,
    pub delay_loop: Option<(Duration, Location)>,
}

/// A `virtual_server` as written.
#[derive(Debug)]
pub(super) struct VirtualSpec {
    at: Location,
    target: Target,
    protocol: Option<(Protocol, Location)>,
    lb_algo: Option<(String, Location)>,
    /// `lb_kind` (or `lvs_method`) as given; keepalived's default is NAT.
    lb_kind: Option<(LbKind, Location)>,
    /// `ops`: one-packet scheduling.
    ops: Option<Location>,
    delay_loop: Option<(Duration, Location)>,
    /// `persistence_timeout`, `None` inside when given without a value.
    persistence: Option<(Option<Duration>, Location)>,
    granularity: Option<(Granularity, Location)>,
    sorry: Option<Sorry>,
    quorum: Option<u32>,
    hysteresis: Option<u32>,
    quorum_up: Option<String>,
    quorum_down: Option<String>,
    alpha: Option<Location>,
    omega: bool,
    inhibit: bool,
    weight: Option<(u32, Location)>,
    defaults: Defaults,
    lb_interface: Option<Named>,
    /// `ip_family inet|inet6` (true: IPv6): the family of its firewall-mark services.
    ip_family: Option<(bool, Location)>,
    reals: Vec<RealSpec>,
    /// `real_server` statements written, with or without errors.
    reals_written: usize,
    /// Errors in its own settings (not in its real servers): then it is left out.
    ok: bool,
}

#[derive(Debug)]
struct Sorry {
    address: IpAddr,
    address_at: Location,
    port: Option<(u16, Location)>,
    at: Location,
    /// `sorry_server_lvs_method` given (else the virtual server's).
    lb_kind: Option<(LbKind, Location)>,
}

#[derive(Debug)]
struct RealSpec {
    at: Location,
    address: IpAddr,
    address_at: Location,
    port: Option<(u16, Location)>,
    weight: Option<(u32, Location)>,
    /// `lvs_method` given (else the virtual server's).
    lb_kind: Option<(LbKind, Location)>,
    /// `uthreshold`, `lthreshold` and where the first was written.
    thresholds: (u32, u32, Option<(&'static str, Location)>),
    inhibit: Option<bool>,
    notify_up: Option<String>,
    notify_down: Option<String>,
    defaults: Defaults,
    checks: Vec<CheckSpec>,
}

/// `virtual_server_group NAME { ADDRESS[-RANGE|/PREFIX] [PORT] ... fwmark N ... }`.
pub(super) fn group(cx: &mut Cx<'_>, stmt: &Stmt, groups: &mut Vec<Group>) {
    let errors = cx.errors();
    let name = match stmt.values() {
        [name] => Some(name),
        [] => {
            cx.error(
                stmt.at(),
                "`virtual_server_group` needs a name: virtual_server_group NAME { ... }",
            );
            None
        }
        [_, extra, ..] => {
            cx.error(extra.at, "`virtual_server_group` takes one name");
            None
        }
    };
    let Some(block) = cx.block(stmt, "virtual_server_group NAME { ADDRESS PORT ... }") else {
        return;
    };
    let Some(name) = name else { return };
    if let Some(first) = groups.iter().find(|g| g.name.name == name.text) {
        let message = format!(
            "virtual_server_group `{}` is already defined at line {}",
            name.text, first.name.at.line
        );
        cx.error(name.at, message);
    }
    let mut group = Group {
        name: Named { name: name.text.clone(), at: name.at },
        entries: Vec::new(),
        fwmarks: Vec::new(),
        ok: true,
    };
    for line in &block.stmts {
        if !cx.no_block(line) {
            continue;
        }
        if line.name() == "fwmark" {
            if let Some(values) = cx.values(line, 1, 2) {
                let mark = cx.uint("the fwmark", &values[0], 1, u32::MAX.into());
                let family = match values.get(1) {
                    None => Some(None),
                    Some(word) => family_word(cx, word).map(Some),
                };
                if let (Some(mark), Some(family)) = (mark, family) {
                    group.fwmarks.push((mark as u32, family, values[0].at));
                }
            }
            continue;
        }
        if let Some(entry) = group_entry(cx, line) {
            group.entries.push(entry);
        }
    }
    if block.stmts.is_empty() {
        cx.error(name.at, format!("virtual_server_group `{}` has no entries", name.text));
    }
    group.ok = cx.clean_since(errors);
    groups.push(group);
}

/// One `ADDRESS [PORT]` line of a group, its range expanded.
fn group_entry(cx: &mut Cx<'_>, line: &Stmt) -> Option<GroupEntry> {
    let first = line.keyword();
    let (port, port_at) = match line.values() {
        [] => (0, first.at),
        [port] => (cx.port("the port", port)?, port.at),
        [_, extra, ..] => {
            cx.error(
                extra.at,
                format!("unexpected `{}`: a group entry is ADDRESS [PORT]", extra.text),
            );
            return None;
        }
    };
    let addresses = address_range(cx, first)?;
    Some(GroupEntry { addresses, port, at: first.at, port_at })
}

/// keepalived's address ranges: `A.B.C.D-E` (last byte; last 16 bits in hex for IPv6),
/// `A.B.C.D-E.F.G.H` and `A.B.C.D/N`, or one address.
fn address_range(cx: &mut Cx<'_>, word: &Word) -> Option<Vec<IpAddr>> {
    let text = word.text.as_str();
    let bad = |cx: &mut Cx<'_>, why: &str| {
        cx.error(
            word.at,
            format!("\"{}\" is not an address or address range: {why}", text.escape_debug()),
        );
        None
    };
    let (start, end): (IpAddr, IpAddr) = if let Some((base, prefix)) = text.split_once('/') {
        let Ok(base) = base.parse::<IpAddr>() else { return bad(cx, "the address is invalid") };
        let longest = host_prefix_len(base);
        let Some(prefix) = prefix.parse::<u8>().ok().filter(|p| (1..=longest).contains(p)) else {
            return bad(cx, &format!("the prefix length must be 1 to {longest}"));
        };
        let host_bits = u32::from(longest - prefix);
        let bits = to_bits(base);
        let mask = if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
        if bits & mask != 0 {
            return bad(cx, "the address has bits set after the prefix");
        }
        (base, from_bits(base, bits | mask))
    } else if let Some((base, last)) = text.split_once('-') {
        let Ok(base) = base.parse::<IpAddr>() else { return bad(cx, "the address is invalid") };
        let end = match last.parse::<IpAddr>() {
            Ok(end) if end.is_ipv4() == base.is_ipv4() => end,
            Ok(_) => return bad(cx, "the range ends in another address family"),
            Err(_) => {
                let (radix, max, shift) =
                    if base.is_ipv4() { (10, 255, 8) } else { (16, 0xffff, 16) };
                let Some(n) = u128::from_str_radix(last, radix).ok().filter(|&n| n <= max) else {
                    return bad(cx, "the range end is invalid");
                };
                let bits = to_bits(base);
                from_bits(base, (bits >> shift << shift) | n)
            }
        };
        if to_bits(end) <= to_bits(base) {
            return bad(cx, "the range must end after it starts");
        }
        (base, end)
    } else {
        match text.parse::<IpAddr>() {
            Ok(address) => (address, address),
            Err(_) => return bad(cx, "the address is invalid"),
        }
    };
    let count = to_bits(end) - to_bits(start) + 1;
    let limit = u128::from(*MAX_SERVICES_LIMITS.end());
    if count > limit {
        let message =
            format!("{text} has {count} addresses, more than {limit} virtual servers can use");
        cx.error(word.at, message);
        return None;
    }
    Some((to_bits(start)..=to_bits(end)).map(|bits| from_bits(start, bits)).collect())
}

fn to_bits(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u32::from(v4).into(),
        IpAddr::V6(v6) => v6.into(),
    }
}

/// `bits` as an address of `like`'s family.
fn from_bits(like: IpAddr, bits: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(bits).unwrap_or(u32::MAX))),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

/// `virtual_server IP [PORT] { ... }`, `virtual_server group NAME { ... }` (`fwmark` is an
/// error): the spec, or `None` when it cannot be built at all.
pub(super) fn virtual_server(cx: &mut Cx<'_>, stmt: &Stmt) -> Option<VirtualSpec> {
    let errors = cx.errors();
    let usage = "virtual_server ADDRESS PORT { ... }";
    let target = match stmt.values() {
        [] => {
            cx.error(stmt.at(), format!("`virtual_server` needs an address and a port: {usage}"));
            None
        }
        [kind, mark] if kind.text == "fwmark" && !kind.quoted => cx
            .uint("the fwmark", mark, 1, u32::MAX.into())
            .map(|m| Target::Fwmark { mark: m as u32, at: mark.at }),
        [kind, _, extra, ..] if kind.text == "fwmark" && !kind.quoted => {
            cx.error(
                extra.at,
                format!("unexpected `{}`: virtual_server fwmark N {{ ... }}", extra.text),
            );
            None
        }
        [kind] if matches!(kind.text.as_str(), "fwmark" | "group") => {
            cx.error(kind.at, format!("`virtual_server {}` needs a value", kind.text));
            None
        }
        [kind, name] if kind.text == "group" && !kind.quoted => {
            Some(Target::Group(Named { name: name.text.clone(), at: name.at }))
        }
        [kind, _, extra, ..] if kind.text == "group" && !kind.quoted => {
            cx.error(
                extra.at,
                format!("unexpected `{}`: virtual_server group NAME {{ ... }}", extra.text),
            );
            None
        }
        [address, rest @ ..] => {
            let port = match rest {
                [] => Some((0, address.at)),
                [port] => cx.port("the port", port).map(|p| (p, port.at)),
                [_, extra, ..] => {
                    cx.error(extra.at, format!("unexpected `{}`: {usage}", extra.text));
                    None
                }
            };
            let vip = if address.text.contains(['-', '/']) {
                cx.error(
                    address.at,
                    format!(
                        "a virtual_server has one address, found \"{}\": put ranges in a \
                         virtual_server_group",
                        address.text
                    ),
                );
                None
            } else {
                cx.ip("the virtual_server address", address)
            };
            match (vip, port) {
                (Some(vip), Some((port, port_at))) => {
                    Some(Target::Address { vip, vip_at: address.at, port, port_at })
                }
                _ => None,
            }
        }
    };
    let block = cx.block(stmt, &format!("{usage} or virtual_server group NAME {{ ... }}"));
    let has_target = target.is_some();
    let mut spec = VirtualSpec {
        at: stmt.at(),
        target: target.unwrap_or(Target::Group(Named { name: String::new(), at: stmt.at() })),
        protocol: None,
        lb_algo: None,
        lb_kind: None,
        ops: None,
        delay_loop: None,
        persistence: None,
        granularity: None,
        sorry: None,
        quorum: None,
        hysteresis: None,
        quorum_up: None,
        quorum_down: None,
        alpha: None,
        omega: false,
        inhibit: false,
        weight: None,
        defaults: Defaults::default(),
        lb_interface: None,
        ip_family: None,
        reals: Vec::new(),
        reals_written: 0,
        ok: true,
    };
    let mut own_errors = cx.errors() - errors;
    let mut sorry_method: Option<(LbKind, Location)> = None;
    let mut seen = Seen::default();
    for s in block.map(|b| b.stmts.as_slice()).unwrap_or_default() {
        let before = cx.errors();
        let name = s.name();
        match name {
            "real_server" => {
                spec.reals_written += 1;
                if let Some(real) = real_server(cx, s) {
                    spec.reals.push(real);
                }
                continue;
            }
            "ip_family" => {
                seen.note(cx, "ip_family", s);
                if let Some(word) = cx.value(s) {
                    spec.ip_family = family_word(cx, word).map(|v6| (v6, word.at));
                }
            }
            "lb_interface" => {
                seen.note(cx, "lb_interface", s);
                if let Some(word) = cx.value(s) {
                    spec.lb_interface = Some(Named { name: word.text.clone(), at: word.at });
                }
            }
            "lb_algo" | "lvs_sched" => {
                seen.note(cx, "the scheduler", s);
                if let Some(word) = cx.value(s) {
                    if SCHEDULERS.contains(&word.text.as_str()) {
                        spec.lb_algo = Some((word.text.clone(), word.at));
                    } else {
                        let hint = keywords::suggest(&word.text, SCHEDULERS)
                            .map(|s| format!("did you mean `{s}`? "))
                            .unwrap_or_default();
                        cx.error(
                            word.at,
                            format!(
                                "unknown scheduler `{}`: {hint}expected one of {}",
                                word.text,
                                SCHEDULERS.join(", ")
                            ),
                        );
                    }
                }
            }
            "lb_kind" | "lvs_method" => {
                seen.note(cx, "the forwarding method", s);
                spec.lb_kind = forwarding(cx, s);
            }
            "sorry_server_lvs_method" => sorry_method = forwarding(cx, s),
            "protocol" => {
                seen.note(cx, "protocol", s);
                if let Some(word) = cx.value(s) {
                    spec.protocol = protocol(cx, word).map(|p| (p, word.at));
                }
            }
            "delay_loop" => {
                seen.note(cx, "delay_loop", s);
                if let Some(word) = cx.value(s) {
                    spec.delay_loop =
                        cx.seconds("`delay_loop`", word, false, MAX_SECONDS).map(|d| (d, word.at));
                }
            }
            "persistence_timeout" => {
                seen.note(cx, "persistence_timeout", s);
                if let Some(values) = cx.values(s, 0, 1) {
                    spec.persistence = match values.first() {
                        None => Some((None, s.at())),
                        Some(word) => cx
                            .uint(
                                "`persistence_timeout`",
                                word,
                                0,
                                MAX_PERSISTENCE_TIMEOUT_SECS.into(),
                            )
                            .map(|secs| (Some(Duration::from_secs(secs)), word.at)),
                    };
                }
            }
            "persistence_granularity" => {
                seen.note(cx, "persistence_granularity", s);
                if let Some(word) = cx.value(s) {
                    spec.granularity = granularity(cx, word).map(|g| (g, word.at));
                }
            }
            "sorry_server" => {
                seen.note(cx, "sorry_server", s);
                if let Some(values) = cx.values(s, 1, 2) {
                    let address = cx.ip("the sorry_server address", &values[0]);
                    let port = match values.get(1) {
                        None => Some(None),
                        Some(word) => {
                            cx.port("the sorry_server port", word).map(|p| Some((p, word.at)))
                        }
                    };
                    if let (Some(address), Some(port)) = (address, port) {
                        spec.sorry = Some(Sorry {
                            address,
                            address_at: values[0].at,
                            port,
                            at: s.at(),
                            lb_kind: None,
                        });
                    }
                }
            }
            "quorum" => {
                seen.note(cx, "quorum", s);
                if let Some(word) = cx.value(s) {
                    spec.quorum = cx
                        .uint("`quorum`", word, 1, u32::MAX.into())
                        .and_then(|n| u32::try_from(n).ok());
                }
            }
            "hysteresis" => {
                seen.note(cx, "hysteresis", s);
                if let Some(word) = cx.value(s) {
                    spec.hysteresis = cx
                        .uint("`hysteresis`", word, 0, u32::MAX.into())
                        .and_then(|n| u32::try_from(n).ok());
                }
            }
            "quorum_up" => spec.quorum_up = cx.script(s),
            "quorum_down" => spec.quorum_down = cx.script(s),
            // keepalived takes these bare here; `off` is read as meant.
            "alpha" => {
                if let Some(on) = cx.flag(s) {
                    spec.alpha = on.then_some(s.at());
                }
            }
            "omega" => spec.omega = cx.flag(s).unwrap_or(spec.omega),
            "inhibit_on_failure" => spec.inhibit = cx.flag(s).unwrap_or(spec.inhibit),
            "weight" => {
                seen.note(cx, "weight", s);
                if let Some(word) = cx.value(s) {
                    spec.weight = cx
                        .uint("`weight`", word, 1, MAX_WEIGHT.into())
                        .and_then(|w| u32::try_from(w).ok())
                        .map(|w| (w, word.at));
                }
            }
            "retry" | "delay_before_retry" | "warmup" | "connect_timeout" | "virtualhost" => {
                default_setting(cx, s, &mut spec.defaults, 1);
            }
            "ops" => spec.ops = cx.flag(s).unwrap_or(false).then_some(s.at()),
            "ha_suspend" | "hashed" | "flag-1" | "flag-2" | "flag-3" | "sh-port"
            | "sh-fallback" | "mh-port" | "mh-fallback" | "persistence_engine" | "nat_mask" => {
                cx.unimplemented(s, NOT_IPVS);
            }
            "sorry_server_inhibit" => {
                cx.unimplemented(s, "the sorry server takes traffic only when no real server can")
            }
            "smtp_alert" => cx.unimplemented(s, "lb sends no e-mail"),
            "snmp_name" => {
                cx.unimplemented(s, "lb has no SNMP agent; see `lb backends` and its metrics")
            }
            _ => cx.unknown(s, Section::VirtualServer),
        }
        own_errors += cx.errors() - before;
    }
    if let Some(sorry) = spec.sorry.as_mut() {
        sorry.lb_kind = sorry_method;
    }
    spec.ok = own_errors == 0 && has_target;
    has_target.then_some(spec)
}

/// `lb_kind` / `lvs_method` / `sorry_server_lvs_method`: `DR`, `NAT`, or keepalived's
/// `TUN [type ipip|gue|gre] [port PORT] [nocsum|csum|remcsum]` (GUE needs the port).
fn forwarding(cx: &mut Cx<'_>, stmt: &Stmt) -> Option<(LbKind, Location)> {
    let values = cx.values(stmt, 1, 8)?;
    let method = &values[0];
    let no_options = |cx: &mut Cx<'_>| {
        if let Some(extra) = values.get(1) {
            cx.error(
                extra.at,
                format!(
                    "`{} {}` takes no options, found `{}`",
                    stmt.name(),
                    method.text,
                    extra.text
                ),
            );
            return false;
        }
        true
    };
    let kind = match method.text.as_str() {
        "DR" => no_options(cx).then_some(LbKind::Dr)?,
        "NAT" => no_options(cx).then_some(LbKind::Nat)?,
        "TUN" => LbKind::Tun(tunnel(cx, &values[1..])?),
        other => {
            cx.error(
                method.at,
                format!("unknown forwarding method `{other}`: expected DR, NAT or TUN"),
            );
            return None;
        }
    };
    Some((kind, method.at))
}

/// The options after `TUN`.
fn tunnel(cx: &mut Cx<'_>, options: &[Word]) -> Option<Tunnel> {
    let mut kind: Option<&Word> = None;
    let mut port: Option<(u16, &Word)> = None;
    let mut words = options.iter();
    while let Some(word) = words.next() {
        match word.text.as_str() {
            "type" | "port" => {
                let Some(value) = words.next() else {
                    cx.error(word.at, format!("`TUN {}` needs a value", word.text));
                    return None;
                };
                if word.text == "type" {
                    kind = Some(value);
                } else {
                    port = Some((cx.port("the tunnel port", value)?, value));
                }
            }
            "nocsum" => {}
            "csum" | "remcsum" => cx.warning(
                word.at,
                format!("`{}`: accepted, not acted on (GUE checksums are left off)", word.text),
            ),
            other => {
                cx.error(
                    word.at,
                    format!(
                        "unknown `TUN` option `{other}`: expected type, port or a checksum flag"
                    ),
                );
                return None;
            }
        }
    }
    let error = match Tunnel::from_parts(kind.map(|k| k.text.as_str()), port.map(|p| p.0)) {
        Ok(tunnel) => return Some(tunnel),
        Err(error) => error,
    };
    let type_at = kind.map_or(options[0].at, |k| k.at);
    let kind = kind.map_or("ipip", |k| k.text.as_str());
    match (error, port) {
        (TunnelError::ZeroPort, Some((_, at))) => {
            cx.error(at.at, "the tunnel port must be 1 to 65535")
        }
        (TunnelError::PortWithoutGue, Some((_, at))) => {
            cx.error(at.at, format!("a tunnel port is for `type gue`, not `{kind}`"))
        }
        (TunnelError::GueWithoutPort, _) => cx.error(type_at, "`TUN type gue` needs `port PORT`"),
        _ => cx.error(type_at, format!("unknown tunnel type `{kind}`: expected ipip, gue or gre")),
    }
    None
}

fn protocol(cx: &mut Cx<'_>, word: &Word) -> Option<Protocol> {
    if word.text.eq_ignore_ascii_case("sctp") {
        cx.error(word.at, "`protocol SCTP` is not supported by lb yet: TCP or UDP");
        return None;
    }
    match word.text.parse() {
        Ok(protocol) => Some(protocol),
        Err(_) => {
            cx.error(
                word.at,
                format!("unknown protocol `{}`: expected TCP, UDP or SCTP", word.text),
            );
            None
        }
    }
}

/// keepalived's `persistence_granularity`: a dotted netmask (IPv4) or a prefix length (IPv6,
/// and lb also takes one for IPv4).
fn granularity(cx: &mut Cx<'_>, word: &Word) -> Option<Granularity> {
    if word.text.contains('.') {
        let Ok(mask) = word.text.parse::<Ipv4Addr>() else {
            let message = format!(
                "`persistence_granularity` must be a netmask like 255.255.255.0 or a prefix \
                 length, found \"{}\"",
                word.text.escape_debug()
            );
            cx.error(word.at, message);
            return None;
        };
        let bits = u32::from(mask);
        let prefix = bits.leading_ones();
        if bits.checked_shl(prefix).unwrap_or(0) != 0 {
            let message = format!(
                "`persistence_granularity` netmask {mask} is not contiguous: it must be ones then \
                 zeros, like 255.255.255.0"
            );
            cx.error(word.at, message);
            return None;
        }
        return u8::try_from(prefix).ok().map(Granularity::Netmask);
    }
    cx.uint("`persistence_granularity`", word, 1, 128)
        .and_then(|p| u8::try_from(p).ok())
        .map(Granularity::Prefix)
}

/// A checker default at the virtual server, real server or checker level (`level` 1, 2, 3:
/// `retry` is at least 1 above the checkers, as in keepalived).
pub(super) fn default_setting(cx: &mut Cx<'_>, stmt: &Stmt, defaults: &mut Defaults, level: u8) {
    let name = stmt.name();
    let subject = format!("`{name}`");
    match name {
        "retry" | "nb_get_retry" => {
            if let Some(word) = cx.value(stmt) {
                let min = if level < 3 { 1 } else { 0 };
                if let Some(n) = cx.uint(&subject, word, min, u32::MAX.into()) {
                    defaults.retry = u32::try_from(n).ok().map(|n| (n, word.at));
                }
            }
        }
        "delay_before_retry" => {
            if let Some(word) = cx.value(stmt) {
                defaults.delay_before_retry = cx.seconds(&subject, word, true, MAX_SECONDS);
            }
        }
        "warmup" => {
            if let Some(word) = cx.value(stmt) {
                defaults.warmup = cx.seconds(&subject, word, true, MAX_SECONDS);
            }
        }
        "connect_timeout" => {
            if let Some(word) = cx.value(stmt) {
                defaults.connect_timeout = cx.seconds(&subject, word, false, MAX_SECONDS);
            }
        }
        "delay_loop" => {
            if let Some(word) = cx.value(stmt) {
                defaults.delay_loop =
                    cx.seconds(&subject, word, false, MAX_SECONDS).map(|d| (d, word.at));
            }
        }
        "alpha" => {
            if let Some(on) = cx.flag(stmt) {
                defaults.alpha = Some((on, stmt.at()));
            }
        }
        "virtualhost" => {
            if let Some(word) = cx.value(stmt) {
                defaults.virtualhost = Some(word.text.clone());
            }
        }
        _ => {}
    }
}

/// `real_server IP [PORT] { ... }`: `None` after an error in it (it is left out).
fn real_server(cx: &mut Cx<'_>, stmt: &Stmt) -> Option<RealSpec> {
    let errors = cx.errors();
    let usage = "real_server ADDRESS PORT { ... }";
    let (address, port) = match stmt.values() {
        [] => {
            cx.error(stmt.at(), format!("`real_server` needs an address and a port: {usage}"));
            (None, None)
        }
        [address, rest @ ..] => {
            let port = match rest {
                [] => Some(None),
                [port] => cx.port("the real_server port", port).map(|p| Some((p, port.at))),
                [_, extra, ..] => {
                    cx.error(extra.at, format!("unexpected `{}`: {usage}", extra.text));
                    None
                }
            };
            (cx.ip("the real_server address", address).map(|a| (a, address.at)), port)
        }
    };
    let block = cx.block(stmt, usage);
    let mut seen = Seen::default();
    let mut real = RealSpec {
        at: stmt.at(),
        address: address.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.0),
        address_at: address.map_or(stmt.at(), |a| a.1),
        port: port.flatten(),
        weight: None,
        lb_kind: None,
        thresholds: (0, 0, None),
        inhibit: None,
        notify_up: None,
        notify_down: None,
        defaults: Defaults::default(),
        checks: Vec::new(),
    };
    for s in block.map(|b| b.stmts.as_slice()).unwrap_or_default() {
        let name = s.name();
        if let Some(checker) = Checker::from_keyword(name) {
            if let Some(check) = checkers::check(cx, s, checker) {
                real.checks.push(check);
            }
            continue;
        }
        match name {
            "weight" => {
                seen.note(cx, "weight", s);
                if let Some(word) = cx.value(s) {
                    real.weight = cx
                        .uint("`weight`", word, 0, MAX_WEIGHT.into())
                        .and_then(|w| u32::try_from(w).ok())
                        .map(|w| (w, word.at));
                }
            }
            "lvs_method" => {
                seen.note(cx, "the forwarding method", s);
                real.lb_kind = forwarding(cx, s);
            }
            "inhibit_on_failure" => real.inhibit = cx.flag(s),
            "notify_up" => real.notify_up = cx.script(s),
            "notify_down" => real.notify_down = cx.script(s),
            "retry" | "delay_before_retry" | "warmup" | "connect_timeout" | "delay_loop"
            | "alpha" | "virtualhost" => default_setting(cx, s, &mut real.defaults, 2),
            "uthreshold" | "lthreshold" => {
                let key = if name == "uthreshold" { "uthreshold" } else { "lthreshold" };
                seen.note(cx, key, s);
                if let Some(word) = cx.value(s)
                    && let Some(n) = cx.uint(&format!("`{name}`"), word, 0, u32::MAX.into())
                {
                    let n = u32::try_from(n).unwrap_or(u32::MAX);
                    if name == "uthreshold" {
                        real.thresholds.0 = n;
                    } else {
                        real.thresholds.1 = n;
                    }
                    real.thresholds.2.get_or_insert((key, word.at));
                }
            }
            "smtp_alert" => cx.unimplemented(s, "lb sends no e-mail"),
            "snmp_name" => {
                cx.unimplemented(s, "lb has no SNMP agent; see `lb backends` and its metrics")
            }
            _ if UNIMPLEMENTED_CHECKERS.contains(&name) => cx.warning(
                s.at(),
                format!(
                    "`{name}`: accepted, not acted on (lb has no such checker): this real server \
                     is not checked by it"
                ),
            ),
            _ => cx.unknown(s, Section::RealServer),
        }
    }
    (cx.clean_since(errors) && address.is_some() && port.is_some()).then_some(real)
}

/// Builds the model's virtual servers from the specs, now that the groups and the VRRP
/// addresses are known.
pub(super) fn build(
    cx: &mut Cx<'_>,
    specs: &[VirtualSpec],
    groups: &[Group],
    vrrp: &Vrrp,
) -> Vec<VirtualServer> {
    let mut out = Vec::new();
    for spec in specs {
        let errors = cx.errors();
        let targets = targets(cx, spec, groups);
        if !spec.ok || !cx.clean_since(errors) {
            continue;
        }
        let Some(targets) = targets else { continue };
        // keepalived's `ip_family` must agree with the addresses it is given next to.
        if let Some((v6, at)) = spec.ip_family
            && let Some(t) = targets.iter().find(|t| t.fwmark.is_none() && t.vip.is_ipv6() != v6)
        {
            let family = if v6 { "inet6" } else { "inet" };
            cx.error(
                at,
                format!("`ip_family {family}` does not match virtual server address {}", t.vip),
            );
            continue;
        }
        if spec.reals_written == 0 {
            cx.warning(
                spec.at,
                "this virtual_server has no real_server: keepalived ignores it, and so does lb",
            );
            continue;
        }
        let implied_nat =
            |given: &Option<(LbKind, Location)>| given.is_none() && spec.lb_kind.is_none();
        let uses_nat = spec.reals.iter().any(|r| implied_nat(&r.lb_kind))
            || spec.sorry.as_ref().is_some_and(|s| implied_nat(&s.lb_kind));
        if uses_nat {
            cx.warning(
                spec.at,
                "no `lb_kind` (or `lvs_method`) for this virtual_server or one of its real \
                 servers: keepalived then uses NAT, and so does lb, on the IPVS dataplane; add \
                 `lb_kind DR` for direct routing (which XDP serves)",
            );
        }
        let protocol = match spec.protocol {
            Some(protocol) => protocol,
            // IPVS tells firewall-mark services apart by mark and family only.
            None if targets.iter().all(|t| t.fwmark.is_some()) => (Protocol::Tcp, spec.at),
            None => {
                cx.warning(
                    spec.at,
                    "no `protocol`: keepalived uses UDP, and so does lb; add `protocol TCP` for a \
                     TCP service",
                );
                (Protocol::Udp, spec.at)
            }
        };
        per_level_warnings(cx, spec);
        let mut unplaced = Vec::new();
        for target in &targets {
            match interface_for(spec, target, vrrp) {
                Ok(interface) => {
                    if let Some(vs) = virtual_server_model(cx, spec, target, protocol, interface) {
                        out.push(vs);
                    }
                }
                Err(message) => unplaced.push((target, message)),
            }
        }
        // A VIP that can be no host's has no interface either: say what is wrong with it, and
        // with the backends of this virtual server, which validation will not see.
        let (bad, unplaced): (Vec<_>, Vec<_>) = unplaced
            .into_iter()
            .partition(|(target, _)| address_class_error(Role::Vip, target.vip).is_some());
        for (target, _) in &bad {
            if let Some(message) = address_class_error(Role::Vip, target.vip) {
                cx.error(target.vip_at, message);
            }
        }
        if !bad.is_empty() {
            let reals = spec.reals.iter().map(|r| (Role::Real, r.address, r.address_at));
            let sorry = spec.sorry.iter().map(|s| (Role::Sorry, s.address, s.address_at));
            for (role, address, at) in reals.chain(sorry) {
                if let Some(message) = address_class_error(role, address) {
                    cx.error(at, message);
                }
            }
        }
        if let Some(((target, message), rest)) = unplaced.split_first() {
            let more = match rest.len() {
                0 => String::new(),
                n => format!(" (and {n} more addresses of this virtual_server)"),
            };
            cx.error(target.vip_at, format!("{message}{more}"));
        }
    }
    out
}

/// One virtual IP and port a spec serves, or one firewall mark (then `vip` is the unspecified
/// address of its family and `port` 0).
struct TargetAddress {
    fwmark: Option<u32>,
    vip: IpAddr,
    vip_at: Location,
    port: u16,
    port_at: Location,
    /// The virtual server's location: its statement, or its group entry.
    at: Location,
}

fn targets(cx: &mut Cx<'_>, spec: &VirtualSpec, groups: &[Group]) -> Option<Vec<TargetAddress>> {
    match &spec.target {
        Target::Address { vip, vip_at, port, port_at } => Some(vec![TargetAddress {
            fwmark: None,
            vip: *vip,
            vip_at: *vip_at,
            port: *port,
            port_at: *port_at,
            at: spec.at,
        }]),
        Target::Fwmark { mark, at } => {
            Some(vec![fwmark_target(*mark, fwmark_family(spec, None), *at, spec.at)])
        }
        Target::Group(name) => {
            let Some(group) = groups.iter().find(|g| g.name.name == name.name) else {
                let names: Vec<&str> = groups.iter().map(|g| g.name.name.as_str()).collect();
                let hint = keywords::suggest(&name.name, &names)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                cx.error(name.at, format!("no virtual_server_group `{}`{hint}", name.name));
                return None;
            };
            // Its own errors were reported where it is defined.
            group.ok.then(|| {
                let addresses = group.entries.iter().flat_map(|entry| {
                    entry.addresses.iter().map(|&vip| TargetAddress {
                        fwmark: None,
                        vip,
                        vip_at: entry.at,
                        port: entry.port,
                        port_at: entry.port_at,
                        at: entry.at,
                    })
                });
                let marks = group.fwmarks.iter().map(|&(mark, family, at)| {
                    fwmark_target(mark, fwmark_family(spec, family), at, at)
                });
                addresses.chain(marks).collect()
            })
        }
    }
}

/// The target of firewall mark `mark` (`ipv6`: of the IPv6 family), written at `mark_at`, of the
/// virtual server (or group entry) at `at`.
fn fwmark_target(mark: u32, ipv6: bool, mark_at: Location, at: Location) -> TargetAddress {
    TargetAddress {
        fwmark: Some(mark),
        vip: unspecified(ipv6),
        vip_at: mark_at,
        port: 0,
        port_at: mark_at,
        at,
    }
}

/// The family of a firewall-mark service (true: IPv6): the group entry's, else the virtual
/// server's `ip_family`, else that of its first real server (as keepalived), else IPv4.
fn fwmark_family(spec: &VirtualSpec, entry: Option<bool>) -> bool {
    entry
        .or(spec.ip_family.map(|f| f.0))
        .or(spec.reals.first().map(|r| r.address.is_ipv6()))
        .unwrap_or(false)
}

/// `inet` or `inet6` (true), as keepalived's `ip_family` spells them.
fn family_word(cx: &mut Cx<'_>, word: &Word) -> Option<bool> {
    match word.text.as_str() {
        "inet" => Some(false),
        "inet6" => Some(true),
        other => {
            cx.error(word.at, format!("the address family is `inet` or `inet6`, found `{other}`"));
            None
        }
    }
}

/// The virtual server's health settings that lb has per service only: a real server or checker
/// setting another `alpha` or `delay_loop` is accepted, not acted on.
fn per_level_warnings(cx: &mut Cx<'_>, spec: &VirtualSpec) {
    let delay_loop = spec.delay_loop.map_or(DEFAULT_DELAY_LOOP, |d| d.0);
    let alpha = spec.alpha.is_some();
    let levels = spec
        .reals
        .iter()
        .flat_map(|r| std::iter::once(&r.defaults).chain(r.checks.iter().map(|c| &c.own)));
    for defaults in levels {
        if let Some((other, at)) = defaults.delay_loop
            && other != delay_loop
        {
            cx.warning(
                at,
                format!(
                    "`delay_loop` {other:?} here: accepted, not acted on (lb checks all the real \
                     servers of a virtual server every delay_loop of the virtual_server, here \
                     {delay_loop:?})"
                ),
            );
        }
        if let Some((other, at)) = defaults.alpha
            && other != alpha
        {
            let state = if alpha { "on" } else { "off" };
            cx.warning(
                at,
                format!(
                    "`alpha` here: accepted, not acted on (lb sets alpha per virtual_server, where \
                     it is {state})"
                ),
            );
        }
    }
}

/// The interface `target`'s VIP arrives on: `lb_interface`, else the interface of the
/// `vrrp_instance` that has the VIP; the message of the error when neither tells.
fn interface_for(
    spec: &VirtualSpec,
    target: &TargetAddress,
    vrrp: &Vrrp,
) -> Result<(String, Location), String> {
    if let Some(named) = &spec.lb_interface {
        return Ok((named.name.clone(), named.at));
    }
    if target.fwmark.is_some() {
        // Only IPVS serves marks, and it needs no interface.
        return Ok((String::new(), spec.at));
    }
    let mut found: Vec<(&Named, &str)> = Vec::new();
    for instance in &vrrp.instances {
        for address in instance.addresses.iter().filter(|a| a.address == target.vip) {
            if let Some(interface) = vrrp.interface_of(instance, address)
                && !found.iter().any(|(f, _)| f.name == interface.name)
            {
                found.push((interface, &instance.name));
            }
        }
    }
    match found.as_slice() {
        [(interface, _)] => Ok((interface.name.clone(), interface.at)),
        [] => Err(format!(
            "no interface for virtual IP {}: keepalived's virtual_server does not name one; add \
             `lb_interface IFNAME` to this virtual_server, or list {} in the virtual_ipaddress of a \
             vrrp_instance (its `interface` is used)",
            target.vip, target.vip
        )),
        several => {
            let listed: Vec<String> = several
                .iter()
                .map(|(i, instance)| format!("`{}` in vrrp_instance `{instance}`", i.name))
                .collect();
            Err(format!(
                "virtual IP {} is on several interfaces ({}): add `lb_interface IFNAME` to this \
                 virtual_server to say which one its traffic arrives on",
                target.vip,
                listed.join(", ")
            ))
        }
    }
}

fn virtual_server_model(
    cx: &mut Cx<'_>,
    spec: &VirtualSpec,
    target: &TargetAddress,
    protocol: (Protocol, Location),
    interface: (String, Location),
) -> Option<VirtualServer> {
    let mut at = Spans::at_section(spec.at)
        .with("vip", target.vip_at)
        .with("port", target.port_at)
        .with("protocol", protocol.1)
        .with("interface", interface.1);
    let delay_loop = match spec.delay_loop {
        Some((delay, written)) => {
            at.set("delay_loop", written);
            delay
        }
        None => DEFAULT_DELAY_LOOP,
    };
    let lb_algo = match &spec.lb_algo {
        Some((name, written)) => {
            at.set("lb_algo", *written);
            name.clone()
        }
        None => KEEPALIVED_DEFAULT_SCHEDULER.to_owned(),
    };
    let mut persistence = match spec.persistence {
        Some((timeout, written)) => {
            at.set("persistence_timeout", written);
            match timeout {
                None => Some(DEFAULT_PERSISTENCE),
                Some(timeout) => Some(timeout).filter(|t| !t.is_zero()),
            }
        }
        // keepalived: a granularity makes the service persistent.
        None => spec.granularity.map(|_| DEFAULT_PERSISTENCE),
    };
    if target.port == 0 && target.fwmark.is_none() && persistence.is_none() {
        cx.warning(
            target.port_at,
            "port 0 without `persistence_timeout`: keepalived makes the service persistent (360 \
             seconds), and so does lb",
        );
        persistence = Some(DEFAULT_PERSISTENCE);
    }
    let persistence_prefix = match spec.granularity {
        None => host_prefix_len(target.vip),
        Some((granularity, written)) => {
            at.set("persistence_granularity", written);
            match granularity {
                Granularity::Prefix(prefix) => prefix,
                Granularity::Netmask(prefix) if target.vip.is_ipv4() => prefix,
                Granularity::Netmask(_) => {
                    cx.error(
                        written,
                        format!(
                            "`persistence_granularity` of IPv6 virtual server {} must be a prefix \
                             length (1 to 128), not a netmask",
                            target.vip
                        ),
                    );
                    return None;
                }
            }
        }
    };
    if let Some(alpha) = spec.alpha {
        at.set("alpha", alpha);
    }
    let health = ServiceHealth {
        delay_loop,
        alpha: spec.alpha.is_some(),
        omega: spec.omega,
        quorum: spec.quorum.unwrap_or(1),
        hysteresis: spec.hysteresis.unwrap_or(0),
        quorum_up: spec.quorum_up.clone(),
        quorum_down: spec.quorum_down.clone(),
        inhibit_on_failure: spec.inhibit,
    };
    let real_servers =
        spec.reals.iter().map(|real| real_model(cx, spec, real, target.port, delay_loop)).collect();
    let sorry_server = spec.sorry.as_ref().map(|sorry| {
        let mut key_locations = Spans::at_section(sorry.at).with("address", sorry.address_at);
        if let Some((_, port_at)) = sorry.port {
            key_locations.set("port", port_at);
        }
        if let Some((_, lb_kind_at)) = sorry.lb_kind {
            key_locations.set("lb_kind", lb_kind_at);
        }
        RealServer {
            forwarding: RealForwarding {
                lb_kind: sorry.lb_kind.map(|k| k.0),
                ..RealForwarding::default()
            },
            address: sorry.address,
            port: sorry.port.map_or(target.port, |p| p.0),
            weight: DEFAULT_WEIGHT,
            health: RealHealth::default(),
            location: sorry.at,
            key_locations,
            check_locations: Vec::new(),
        }
    });
    if let Some((_, lb_kind_at)) = spec.lb_kind {
        at.set("lb_kind", lb_kind_at);
    }
    if let Some(ops_at) = spec.ops {
        at.set("ops", ops_at);
    }
    Some(VirtualServer {
        forwarding: ServiceForwarding {
            lb_kind: spec.lb_kind.map_or(LbKind::Nat, |k| k.0),
            one_packet: spec.ops.is_some(),
            tun_source: None,
        },
        vip: target.vip,
        port: target.port,
        protocol: protocol.0,
        fwmark: target.fwmark,
        interface: interface.0,
        lb_algo,
        table_size: maglev::DEFAULT_SIZE,
        persistence_timeout: persistence,
        persistence_prefix,
        real_servers,
        sorry_server,
        health,
        location: target.at,
        key_locations: at,
    })
}

fn real_model(
    cx: &mut Cx<'_>,
    vs: &VirtualSpec,
    real: &RealSpec,
    vs_port: u16,
    delay_loop: Duration,
) -> RealServer {
    let mut at = Spans::at_section(real.at).with("address", real.address_at);
    let port = match real.port {
        Some((port, written)) => {
            at.set("port", written);
            port
        }
        None => vs_port,
    };
    let weight = match real.weight.or(vs.weight) {
        Some((weight, written)) => {
            at.set("weight", written);
            weight
        }
        None => DEFAULT_WEIGHT,
    };
    let mut checks = Vec::new();
    let mut check_locations = Vec::new();
    for spec in &real.checks {
        let levels = [&real.defaults, &vs.defaults];
        let (check, locations) = checkers::check_model(cx, spec, levels, delay_loop);
        checks.push(check);
        check_locations.push(locations);
    }
    if let Some((_, lb_kind_at)) = real.lb_kind {
        at.set("lb_kind", lb_kind_at);
    }
    // The first threshold written locates both.
    if let Some((key, written)) = real.thresholds.2 {
        at.set(key, written);
    }
    RealServer {
        forwarding: RealForwarding {
            lb_kind: real.lb_kind.map(|k| k.0),
            uthreshold: real.thresholds.0,
            lthreshold: real.thresholds.1,
        },
        address: real.address,
        port,
        weight,
        health: RealHealth {
            checks,
            inhibit_on_failure: real.inhibit.unwrap_or(vs.inhibit),
            notify_up: real.notify_up.clone(),
            notify_down: real.notify_down.clone(),
        },
        location: real.at,
        key_locations: at,
        check_locations,
    }
}
