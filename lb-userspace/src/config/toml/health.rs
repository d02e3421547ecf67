//! Health-check settings in the native front end: keepalived's checker vocabulary, lower case.
//!
//! A virtual server sets how often its reals are checked and when it counts as down
//! (`delay_loop`, `alpha`, `quorum`, ...: [`SERVICE_HEALTH`]); each real server has its own
//! ([`REAL_HEALTH`]) and lists its checkers as tables named after keepalived's (`TCP_CHECK` is
//! `tcp_check`), a single table or an array of tables each, all of which must pass. Each kind of
//! checker is one [`Section`] ([`CHECKERS`]) built from the settings below. Keys written in the
//! wrong one of these tables get a message saying where they belong.

use std::ops::Range;

use ::toml::de::{DeTable, DeValue};

use super::super::emit::{address, array, boolean, inline_table, integer, seconds, string};
use super::super::health::{
    CheckKind, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DELAY_BEFORE_RETRY, DEFAULT_DELAY_LOOP,
    DEFAULT_MISC_TIMEOUT, DEFAULT_RETRY, DnsCheck, HealthCheck, HttpCheck, MiscCheck,
    ServiceHealth, UdpCheck, UrlCheck,
};
use super::super::model::{Location, RealServer, Spans, VirtualServer};
use super::schema::{Doc, Finish, Located, Section, Setting, unless};
use super::{Key, Parser, Value, describe};

/// A checker as read (and written by `lb convert`): the check, where each of its values was
/// written, and its header as written (`[virtual_server.real_server.tcp_check]`, or `[[...]]`
/// for one of several), which names the `url` tables beneath it.
pub(in crate::config) struct Checker {
    check: HealthCheck,
    spans: Spans,
    header: String,
}

impl Located for Checker {
    fn spans_mut(&mut self) -> &mut Spans {
        &mut self.spans
    }
}

impl Checker {
    /// `check`, to write it (`lb convert`).
    pub(in crate::config) fn of(check: &HealthCheck) -> Self {
        let spans = Spans::at_section(check.location);
        Checker { check: check.clone(), spans, header: String::new() }
    }

    /// A checker of `kind` with every setting at its default, at `location`.
    fn new(kind: CheckKind, location: Location, header: String) -> Self {
        let check = HealthCheck {
            kind,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            connect_ip: None,
            connect_port: None,
            bindto: None,
            retry: DEFAULT_RETRY,
            delay_before_retry: DEFAULT_DELAY_BEFORE_RETRY,
            warmup: None,
            rise: 1,
            through_vip: false,
            location,
        };
        Checker { check, spans: Spans::at_section(location), header }
    }

    /// The locations validation and notices point at (`nb_get_retry`'s is `retry`'s); the others
    /// are the checker's.
    fn locations(&self) -> Spans {
        let mut at = Spans::at_section(self.spans.section());
        for (name, as_name) in
            [("connect_ip", "connect_ip"), ("bindto", "bindto"), ("retry", "retry")]
                .into_iter()
                .chain([("nb_get_retry", "retry")])
        {
            if let Some(location) = self.spans.get(name) {
                at.set(as_name, location);
            }
        }
        at
    }

    fn http(&mut self) -> Option<&mut HttpCheck> {
        match &mut self.check.kind {
            CheckKind::Http(http) | CheckKind::Ssl(http) => Some(http),
            _ => None,
        }
    }

    fn misc(&mut self) -> Option<&mut MiscCheck> {
        match &mut self.check.kind {
            CheckKind::Misc(misc) => Some(misc),
            _ => None,
        }
    }

    fn dns(&mut self) -> Option<&mut DnsCheck> {
        match &mut self.check.kind {
            CheckKind::Dns(dns) => Some(dns),
            _ => None,
        }
    }

    fn udp(&mut self) -> Option<&mut UdpCheck> {
        match &mut self.check.kind {
            CheckKind::Udp(udp) => Some(udp),
            _ => None,
        }
    }

    /// Whether `name` was written (valid or not).
    fn written(&self, name: &str) -> bool {
        self.spans.get(name).is_some()
    }
}

/// The checker tables of a real server: keepalived's checkers, in lower case, each with its
/// description (in the order `lb convert` and the reference list them).
pub(in crate::config) const CHECKERS: &[(&str, Section<Checker>)] = &[
    ("tcp_check", TCP_CHECK),
    ("http_get", HTTP_GET),
    ("ssl_get", SSL_GET),
    ("misc_check", MISC_CHECK),
    ("dns_check", DNS_CHECK),
    ("udp_check", UDP_CHECK),
    ("ping_check", PING_CHECK),
];

fn is_checker(name: &str) -> bool {
    CHECKERS.iter().any(|(kind, _)| *kind == name)
}

/// The description of the checker tables named `kind` (`tcp_check`).
pub(in crate::config) fn checker_section(kind: &str) -> Option<&'static Section<Checker>> {
    CHECKERS.iter().find(|(k, _)| *k == kind).map(|(_, section)| section)
}

/// The settings of every checker, then `$kind`'s own: a key every checker takes is added here.
macro_rules! every_checker {
    ($($kind:expr),*) => {
        &[RETRY, NB_GET_RETRY, DELAY_BEFORE_RETRY, WARMUP, RISE, $($kind),*]
    };
}

/// The settings of a checker that connects to a port (all but `misc_check` and `ping_check`):
/// those of [`addressed!`], `through_vip`, then `$kind`'s own.
macro_rules! connecting {
    ($($kind:expr),*) => {
        addressed![THROUGH_VIP $(, $kind)*]
    };
}

/// The settings of a checker that sends to an address (all but `misc_check`): the connection
/// keys, those of every checker (as `every_checker!`'s), then `$kind`'s own. A key every such
/// checker takes is added here.
macro_rules! addressed {
    ($($kind:expr),*) => {
        &[
            CONNECT_TIMEOUT,
            CONNECT_IP,
            CONNECT_PORT,
            BINDTO,
            RETRY,
            NB_GET_RETRY,
            DELAY_BEFORE_RETRY,
            WARMUP,
            RISE,
            $($kind),*
        ]
    };
}

/// A checker's description: its header as a single table, its settings, its required keys and
/// the rules between its keys.
const fn checker(
    header: &'static str,
    settings: &'static [Setting<Checker>],
    required: &'static [&'static str],
    misplaced: fn(&str) -> Option<String>,
    finish: Finish<Checker>,
) -> Section<Checker> {
    Section {
        header,
        settings,
        misplaced,
        required,
        drop_on_error: &[],
        nested: &[],
        elsewhere: &[],
        finish: Some(finish),
    }
}

const TCP_CHECK: Section<Checker> = checker(
    "[virtual_server.real_server.tcp_check]",
    connecting![],
    &[],
    |name| misplaced_in_checker("tcp_check", name),
    common_rules,
);

const HTTP_GET: Section<Checker> = checker(
    "[virtual_server.real_server.http_get]",
    connecting![VIRTUALHOST, URL],
    &["url"],
    |name| misplaced_in_checker("http_get", name),
    common_rules,
);

const SSL_GET: Section<Checker> = checker(
    "[virtual_server.real_server.ssl_get]",
    connecting![VIRTUALHOST, SNI, ENABLE_SNI, URL],
    &["url"],
    |name| misplaced_in_checker("ssl_get", name),
    |p, table, c, failed| {
        let conflict = "both set the TLS server name (`enable_sni` = true sends `virtualhost`); \
                        keep only one";
        let one = p.either(table, ["sni", "enable_sni"], conflict).is_some();
        common_rules(p, table, c, failed) && one
    },
);

/// MISC_CHECK connects to nothing: none of the connection keys.
const MISC_CHECK: Section<Checker> = checker(
    "[virtual_server.real_server.misc_check]",
    every_checker![MISC_PATH, MISC_TIMEOUT, MISC_DYNAMIC],
    &["misc_path"],
    |name| misplaced_in_checker("misc_check", name),
    common_rules,
);

const DNS_CHECK: Section<Checker> = checker(
    "[virtual_server.real_server.dns_check]",
    connecting![DNS_NAME_KEY, DNS_OLD_NAME, DNS_TYPE_KEY, DNS_OLD_TYPE],
    &[],
    |name| misplaced_in_checker("dns_check", name),
    |p, table, c, failed| {
        let same = "are the same setting; keep only one";
        let name = p.either(table, ["name", "dns_name"], same).is_some();
        let qtype = p.either(table, ["type", "dns_type"], same).is_some();
        common_rules(p, table, c, failed) && name && qtype
    },
);

const UDP_CHECK: Section<Checker> = checker(
    "[virtual_server.real_server.udp_check]",
    connecting![PAYLOAD, REQUIRE_REPLY],
    &[],
    |name| misplaced_in_checker("udp_check", name),
    common_rules,
);

/// An echo has no port to send to on the VIP: no `through_vip`.
const PING_CHECK: Section<Checker> = checker(
    "[virtual_server.real_server.ping_check]",
    addressed![],
    &[],
    |name| misplaced_in_checker("ping_check", name),
    common_rules,
);

/// The rules between the keys of every checker: one spelling of `retry`; `through_vip` checks
/// the real's own VIP, so no other address (`connect_ip`) with it.
fn common_rules(p: &mut Parser<'_>, table: &DeTable<'_>, c: &mut Checker, _: &[&str]) -> bool {
    let conflict = "are the same setting (`nb_get_retry` is keepalived's old name for `retry`); \
                    keep only one";
    let retry = p.either(table, ["retry", "nb_get_retry"], conflict).is_some();
    let through_vip = match table.get_key_value("through_vip") {
        Some((key, _)) if c.check.through_vip && c.check.connect_ip.is_some() => {
            p.error(
                key.span(),
                "`through_vip` = true checks the VIP on the real itself; it cannot go to \
                 `connect_ip` as well: keep only one"
                    .to_owned(),
            );
            false
        }
        _ => true,
    };
    retry && through_vip
}

/// keepalived's connection keys (every checker but `misc_check`, which connects to nothing), as
/// `connecting!` lists them.
#[cfg(test)]
const CONNECTION_KEYS: &[&str] = &["connect_timeout", "connect_ip", "connect_port", "bindto"];

/// Keys of every checker, as `every_checker!` lists them.
#[cfg(test)]
const COMMON_KEYS: &[&str] = &["retry", "nb_get_retry", "delay_before_retry", "warmup", "rise"];

fn takes(section: &Section<Checker>, name: &str) -> bool {
    section.settings.iter().any(|s| s.name == name)
}

/// A key of the checkers that connect, which `misc_check` does not take.
fn is_connection_key(name: &str) -> bool {
    takes(&TCP_CHECK, name) && !takes(&MISC_CHECK, name)
}

/// A key every checker takes.
fn is_common_key(name: &str) -> bool {
    takes(&TCP_CHECK, name) && takes(&MISC_CHECK, name)
}

const CONNECT_TIMEOUT: Setting<Checker> = Setting {
    name: "connect_timeout",
    doc: Doc {
        ty: "seconds, more than 0, at most 86400",
        default: "`5`",
        meaning: "Time allowed to connect and, for HTTP, to get the answer.",
    },
    read: |p, k, v, c| {
        if let Some(timeout) = p.positive_seconds(k, v, MAX_SECONDS) {
            c.check.connect_timeout = timeout;
        }
    },
    emit: |c, _| unless(&c.check.connect_timeout, &DEFAULT_CONNECT_TIMEOUT, seconds),
};

const CONNECT_IP: Setting<Checker> = Setting {
    name: "connect_ip",
    doc: Doc {
        ty: "IP address string",
        default: "the real's address",
        meaning: "Check this address instead; same address family as the real.",
    },
    read: |p, k, v, c| {
        if let Some(ip) = p.ip_address(k, v) {
            c.check.connect_ip = Some(ip);
        }
    },
    emit: |c, _| c.check.connect_ip.as_ref().map(address),
};

const CONNECT_PORT: Setting<Checker> = Setting {
    name: "connect_port",
    doc: Doc {
        ty: "integer 1–65535",
        default: "the real's port",
        meaning: "Check this port instead.",
    },
    read: |p, k, v, c| {
        let port = p.integer(k, v, 1, u16::MAX.into()).and_then(|port| u16::try_from(port).ok());
        if let Some(port) = port {
            c.check.connect_port = Some(port);
        }
    },
    emit: |c, _| c.check.connect_port.as_ref().map(integer),
};

const BINDTO: Setting<Checker> = Setting {
    name: "bindto",
    doc: Doc {
        ty: "IP address string",
        default: "chosen by the kernel",
        meaning: "Source address of the checks; same family as the address checked.",
    },
    read: |p, k, v, c| {
        if let Some(ip) = p.ip_address(k, v) {
            c.check.bindto = Some(ip);
        }
    },
    emit: |c, _| c.check.bindto.as_ref().map(address),
};

const THROUGH_VIP: Setting<Checker> = Setting {
    name: "through_vip",
    doc: Doc {
        ty: "boolean",
        default: "`false`",
        meaning: "Check the VIP on the real: VIP:port sent along the client traffic's path (the \
                  real's MAC for DR, its tunnel for TUN), so a real that serves its own address \
                  but not the VIP is down. See docs/tunnels.md.",
    },
    read: |p, k, v, c| {
        if let Some(through) = p.boolean(k, v) {
            c.check.through_vip = through;
        }
    },
    emit: |c, _| unless(&c.check.through_vip, &false, boolean),
};

/// `retry` or its old name, read unless both are written (`common_rules` says so).
fn read_retry(p: &mut Parser<'_>, k: &Key<'_>, v: &Value<'_>, c: &mut Checker, other: &str) {
    if !c.written(other)
        && let Some(retry) = p.integer_in(k, v, 0..=u32::MAX)
    {
        c.check.retry = retry;
    }
}

const RETRY: Setting<Checker> = Setting {
    name: "retry",
    doc: Doc {
        ty: "integer ≥ 0",
        default: "`1`",
        meaning: "Failed attempts after the first before the real is declared down.",
    },
    read: |p, k, v, c| read_retry(p, k, v, c, "nb_get_retry"),
    emit: |c, _| unless(&c.check.retry, &DEFAULT_RETRY, integer),
};

const NB_GET_RETRY: Setting<Checker> = Setting {
    name: "nb_get_retry",
    doc: Doc {
        ty: "integer ≥ 0",
        default: "`1`",
        meaning: "keepalived's older name of `retry`. Giving both spellings is an error.",
    },
    read: |p, k, v, c| read_retry(p, k, v, c, "retry"),
    // Written as `retry`.
    emit: |_, _| None,
};

const DELAY_BEFORE_RETRY: Setting<Checker> = Setting {
    name: "delay_before_retry",
    doc: Doc { ty: "seconds, 0–86400", default: "`1`", meaning: "Wait between those attempts." },
    read: |p, k, v, c| {
        if let Some(delay) = p.seconds(k, v, 0..=MAX_SECONDS) {
            c.check.delay_before_retry = delay;
        }
    },
    emit: |c, _| unless(&c.check.delay_before_retry, &DEFAULT_DELAY_BEFORE_RETRY, seconds),
};

const WARMUP: Setting<Checker> = Setting {
    name: "warmup",
    doc: Doc {
        ty: "seconds, 0–86400",
        default: "`0` (none)",
        meaning: "The first check waits a random time up to this long, so checks do not all \
                  start at once.",
    },
    read: |p, k, v, c| {
        if let Some(warmup) = p.seconds(k, v, 0..=MAX_SECONDS) {
            c.check.warmup = Some(warmup).filter(|w| !w.is_zero());
        }
    },
    emit: |c, _| c.check.warmup.as_ref().map(seconds),
};

const RISE: Setting<Checker> = Setting {
    name: "rise",
    doc: Doc {
        ty: "integer ≥ 1",
        default: "`1`",
        meaning: "Consecutive passed checks a down real needs to come back up.",
    },
    read: |p, k, v, c| {
        if let Some(rise) = p.integer_in(k, v, 1..=u32::MAX) {
            c.check.rise = rise;
        }
    },
    emit: |c, _| unless(&c.check.rise, &1, integer),
};

const URL: Setting<Checker> = Setting {
    name: "url",
    doc: Doc {
        ty: "array of tables",
        default: "required, at least one",
        meaning: "The URLs to get, all of which must pass.",
    },
    read: |p, k, v, c| {
        let header = format!("[[{}.url]]", section_path(&c.header));
        if let Some(urls) = p.urls(k, v, &header)
            && let Some(http) = c.http()
        {
            http.urls = urls;
        }
    },
    emit: |c, _| match &c.check.kind {
        CheckKind::Http(http) | CheckKind::Ssl(http) => Some(array(&http.urls, |url| {
            let mut pairs = vec![("path", string(&url.path))];
            if let Some(code) = url.status_code {
                pairs.push(("status_code", code.to_string()));
            }
            if let Some(digest) = &url.digest {
                pairs.push(("digest", string(digest)));
            }
            inline_table(&pairs)
        })),
        _ => None,
    },
};

const VIRTUALHOST: Setting<Checker> = Setting {
    name: "virtualhost",
    doc: Doc { ty: "string", default: "the real's address", meaning: "Host header." },
    read: |p, k, v, c| {
        if let Some(host) = p.command(k, v)
            && let Some(http) = c.http()
        {
            http.virtualhost = Some(host);
        }
    },
    emit: |c, _| match &c.check.kind {
        CheckKind::Http(http) | CheckKind::Ssl(http) => http.virtualhost.as_deref().map(string),
        _ => None,
    },
};

const SNI: Setting<Checker> = Setting {
    name: "sni",
    doc: Doc { ty: "string", default: "none", meaning: "TLS server name to send." },
    // Beside `enable_sni`, an error (`SSL_GET`'s rules), not read.
    read: |p, k, v, c| {
        if !c.written("enable_sni")
            && let Some(name) = p.command(k, v)
            && let Some(http) = c.http()
        {
            http.sni = Some(name);
        }
    },
    emit: |c, _| match &c.check.kind {
        CheckKind::Ssl(http) => http.sni.as_deref().map(string),
        _ => None,
    },
};

const ENABLE_SNI: Setting<Checker> = Setting {
    name: "enable_sni",
    doc: Doc {
        ty: "boolean",
        default: "`false`",
        meaning: "As keepalived's: send `virtualhost` as the TLS server name (then \
                  `virtualhost` is required). Giving both `sni` and `enable_sni` is an error.",
    },
    // After `virtualhost`, whose value it sends.
    read: |p, k, v, c| {
        if c.written("sni") || p.boolean(k, v) != Some(true) {
            return;
        }
        let virtualhost = c.written("virtualhost");
        if let Some(http) = c.http() {
            http.sni = http.virtualhost.clone();
        }
        if !virtualhost {
            let message = format!(
                "`{}` sends `virtualhost` as the TLS server name, but there is no \
                 `virtualhost`: add one, or give the name as `sni`",
                k.get_ref()
            );
            p.error(v.span(), message);
        }
    },
    // Written as `sni`.
    emit: |_, _| None,
};

const MISC_PATH: Setting<Checker> = Setting {
    name: "misc_path",
    doc: Doc {
        ty: "command line (string)",
        default: "required",
        meaning: "The script and its arguments, run by `/bin/sh -c`.",
    },
    read: |p, k, v, c| {
        if let Some(path) = p.command(k, v)
            && let Some(misc) = c.misc()
        {
            misc.path = path;
        }
    },
    emit: |c, _| match &c.check.kind {
        CheckKind::Misc(misc) => Some(string(&misc.path)),
        _ => None,
    },
};

const MISC_TIMEOUT: Setting<Checker> = Setting {
    name: "misc_timeout",
    doc: Doc {
        ty: "seconds, more than 0, at most 86400",
        default: "`5`",
        meaning: "Time the script may take; longer counts as failed.",
    },
    read: |p, k, v, c| {
        if let Some(timeout) = p.positive_seconds(k, v, MAX_SECONDS)
            && let Some(misc) = c.misc()
        {
            misc.timeout = timeout;
        }
    },
    emit: |c, _| match &c.check.kind {
        CheckKind::Misc(misc) => unless(&misc.timeout, &DEFAULT_MISC_TIMEOUT, seconds),
        _ => None,
    },
};

const MISC_DYNAMIC: Setting<Checker> = Setting {
    name: "misc_dynamic",
    doc: Doc {
        ty: "boolean",
        default: "`false`",
        meaning: "As keepalived's: exit code 0 is up, 1 down, 2–255 up with weight = code − 2.",
    },
    read: |p, k, v, c| {
        if let Some(dynamic) = p.boolean(k, v)
            && let Some(misc) = c.misc()
        {
            misc.dynamic = dynamic;
        }
    },
    emit: |c, _| match &c.check.kind {
        CheckKind::Misc(misc) => unless(&misc.dynamic, &false, boolean),
        _ => None,
    },
};

/// `name` or `dns_name`, read unless both are written (`DNS_CHECK`'s rules say so).
fn read_dns_name(p: &mut Parser<'_>, k: &Key<'_>, v: &Value<'_>, c: &mut Checker, other: &str) {
    if !c.written(other)
        && let Some(name) = p.command(k, v)
        && let Some(dns) = c.dns()
    {
        dns.name = name;
    }
}

const DNS_NAME_KEY: Setting<Checker> = Setting {
    name: "name",
    doc: Doc { ty: "string", default: "`\".\"`", meaning: "Name to query." },
    read: |p, k, v, c| read_dns_name(p, k, v, c, "dns_name"),
    emit: |c, _| match &c.check.kind {
        CheckKind::Dns(dns) => unless(&dns.name.as_str(), &".", |name| string(name)),
        _ => None,
    },
};

const DNS_OLD_NAME: Setting<Checker> = Setting {
    name: "dns_name",
    doc: Doc { ty: "string", default: "`\".\"`", meaning: "keepalived's name of `name`." },
    read: |p, k, v, c| read_dns_name(p, k, v, c, "name"),
    // Written as `name`.
    emit: |_, _| None,
};

/// `type` or `dns_type`, read unless both are written (`DNS_CHECK`'s rules say so).
fn read_dns_type(p: &mut Parser<'_>, k: &Key<'_>, v: &Value<'_>, c: &mut Checker, other: &str) {
    if c.written(other) {
        return;
    }
    let Some(qtype) = p.string(k, v) else { return };
    let upper = qtype.to_ascii_uppercase();
    if DNS_TYPES.contains(&upper.as_str()) {
        if let Some(dns) = c.dns() {
            dns.qtype = upper;
        }
    } else {
        let message = format!(
            "`{}` must be one of {}, found \"{}\"",
            k.get_ref(),
            DNS_TYPES.join(", "),
            qtype.escape_debug()
        );
        p.error(v.span(), message);
    }
}

const DNS_TYPE_KEY: Setting<Checker> = Setting {
    name: "type",
    doc: Doc {
        ty: "`A` `AAAA` `NS` `SOA` `MX` `TXT` `CNAME` `PTR`",
        default: "`\"SOA\"`",
        meaning: "Query type, case-insensitive.",
    },
    read: |p, k, v, c| read_dns_type(p, k, v, c, "dns_type"),
    emit: |c, _| match &c.check.kind {
        CheckKind::Dns(dns) => unless(&dns.qtype.as_str(), &"SOA", |qtype| string(qtype)),
        _ => None,
    },
};

const DNS_OLD_TYPE: Setting<Checker> = Setting {
    name: "dns_type",
    doc: Doc {
        ty: "`A` `AAAA` `NS` `SOA` `MX` `TXT` `CNAME` `PTR`",
        default: "`\"SOA\"`",
        meaning: "keepalived's name of `type`.",
    },
    read: |p, k, v, c| read_dns_type(p, k, v, c, "type"),
    // Written as `type`.
    emit: |_, _| None,
};

const PAYLOAD: Setting<Checker> = Setting {
    name: "payload",
    doc: Doc {
        ty: "string",
        default: "empty",
        meaning: "Bytes to send: `\"0x\"` and an even number of hex digits is sent as those \
                  bytes, any other string as its UTF-8 text.",
    },
    read: |p, k, v, c| {
        let Some(payload) = p.string(k, v).map(udp_payload) else { return };
        if payload.len() > MAX_UDP_PAYLOAD {
            let message = format!(
                "`{}` is {} bytes, more than a UDP datagram holds ({MAX_UDP_PAYLOAD})",
                k.get_ref(),
                payload.len()
            );
            p.error(v.span(), message);
        } else if let Some(udp) = c.udp() {
            udp.payload = payload;
        }
    },
    // In hex, which reads back to the same bytes whatever they are.
    emit: |c, _| match &c.check.kind {
        CheckKind::Udp(udp) if !udp.payload.is_empty() => {
            let hex: String = udp.payload.iter().map(|b| format!("{b:02x}")).collect();
            Some(string(&format!("0x{hex}")))
        }
        _ => None,
    },
};

const REQUIRE_REPLY: Setting<Checker> = Setting {
    name: "require_reply",
    doc: Doc {
        ty: "boolean",
        default: "`false`",
        meaning: "Up only when a reply comes back; otherwise up unless an ICMP error comes back.",
    },
    read: |p, k, v, c| {
        if let Some(require) = p.boolean(k, v)
            && let Some(udp) = c.udp()
        {
            udp.require_reply = require;
        }
    },
    emit: |c, _| match &c.check.kind {
        CheckKind::Udp(udp) => unless(&udp.require_reply, &false, boolean),
        _ => None,
    },
};

/// Health settings of a virtual server (keepalived sets `delay_loop` and `alpha` per checker too;
/// here they are the service's, for all its checkers). Read by the virtual server's `finish`;
/// documented in their own table under "Health checks".
pub(in crate::config) const SERVICE_HEALTH: &[Setting<VirtualServer>] = &[
    Setting {
        name: "delay_loop",
        doc: Doc {
            ty: "seconds, more than 0, at most 86400",
            default: "`60`",
            meaning: "Interval between the checks of each real.",
        },
        read: |p, k, v, vs| {
            if let Some(delay) = p.positive_seconds(k, v, MAX_SECONDS) {
                vs.health.delay_loop = delay;
            }
        },
        emit: |vs, _| unless(&vs.health.delay_loop, &DEFAULT_DELAY_LOOP, seconds),
    },
    Setting {
        name: "alpha",
        doc: Doc {
            ty: "boolean",
            default: "`false`",
            meaning: "Reals start down and come up once their checks pass.",
        },
        read: |p, k, v, vs| {
            if let Some(alpha) = p.boolean(k, v) {
                vs.health.alpha = alpha;
            }
        },
        emit: |vs, _| unless(&vs.health.alpha, &false, boolean),
    },
    Setting {
        name: "omega",
        doc: Doc {
            ty: "boolean",
            default: "`false`",
            meaning: "Run `quorum_down` when the director stops while the quorum is up.",
        },
        read: |p, k, v, vs| {
            if let Some(omega) = p.boolean(k, v) {
                vs.health.omega = omega;
            }
        },
        emit: |vs, _| unless(&vs.health.omega, &false, boolean),
    },
    Setting {
        name: "quorum",
        doc: Doc {
            ty: "integer ≥ 0",
            default: "`1`",
            meaning: "Sum of the weights of the up reals below which the service is down.",
        },
        read: |p, k, v, vs| {
            if let Some(quorum) = p.integer_in(k, v, 0..=u32::MAX) {
                vs.health.quorum = quorum;
            }
        },
        emit: |vs, _| unless(&vs.health.quorum, &ServiceHealth::default().quorum, integer),
    },
    Setting {
        name: "hysteresis",
        doc: Doc { ty: "integer ≥ 0", default: "`0`", meaning: "Margin around `quorum`." },
        read: |p, k, v, vs| {
            if let Some(hysteresis) = p.integer_in(k, v, 0..=u32::MAX) {
                vs.health.hysteresis = hysteresis;
            }
        },
        emit: |vs, _| unless(&vs.health.hysteresis, &0, integer),
    },
    Setting {
        name: "quorum_up",
        doc: Doc {
            ty: "command line (string)",
            default: "none",
            meaning: "Run when the quorum is gained.",
        },
        read: |p, k, v, vs| {
            if let Some(command) = p.command(k, v) {
                vs.health.quorum_up = Some(command);
            }
        },
        emit: |vs, _| vs.health.quorum_up.as_deref().map(string),
    },
    Setting {
        name: "quorum_down",
        doc: Doc {
            ty: "command line (string)",
            default: "none",
            meaning: "Run when the quorum is lost.",
        },
        read: |p, k, v, vs| {
            if let Some(command) = p.command(k, v) {
                vs.health.quorum_down = Some(command);
            }
        },
        emit: |vs, _| vs.health.quorum_down.as_deref().map(string),
    },
    Setting {
        name: "inhibit_on_failure",
        doc: Doc {
            ty: "boolean",
            default: "`false`",
            meaning: "Default of the reals' `inhibit_on_failure`.",
        },
        read: |p, k, v, vs| {
            if let Some(inhibit) = p.boolean(k, v) {
                vs.health.inhibit_on_failure = inhibit;
            }
        },
        emit: |vs, _| unless(&vs.health.inhibit_on_failure, &false, boolean),
    },
];

/// Health settings of a real server besides its checkers (whose default `inhibit_on_failure` is
/// the virtual server's, in the model read into). Read by the real server's `finish`.
pub(in crate::config) const REAL_HEALTH: &[Setting<RealServer>] = &[
    Setting {
        name: "inhibit_on_failure",
        doc: Doc {
            ty: "boolean",
            default: "the virtual server's",
            meaning: "Keep the failed real with weight 0 instead of removing it.",
        },
        read: |p, k, v, rs| {
            if let Some(inhibit) = p.boolean(k, v) {
                rs.health.inhibit_on_failure = inhibit;
            }
        },
        emit: |rs, d| unless(&rs.health.inhibit_on_failure, &d.health.inhibit_on_failure, boolean),
    },
    Setting {
        name: "notify_up",
        doc: Doc {
            ty: "command line (string)",
            default: "none",
            meaning: "Run when the real comes up.",
        },
        read: |p, k, v, rs| {
            if let Some(command) = p.command(k, v) {
                rs.health.notify_up = Some(command);
            }
        },
        emit: |rs, _| rs.health.notify_up.as_deref().map(string),
    },
    Setting {
        name: "notify_down",
        doc: Doc {
            ty: "command line (string)",
            default: "none",
            meaning: "Run when the real goes down.",
        },
        read: |p, k, v, rs| {
            if let Some(command) = p.command(k, v) {
                rs.health.notify_down = Some(command);
            }
        },
        emit: |rs, _| rs.health.notify_down.as_deref().map(string),
    },
];

fn is_service_key(name: &str) -> bool {
    SERVICE_HEALTH.iter().any(|s| s.name == name)
}

fn is_real_key(name: &str) -> bool {
    REAL_HEALTH.iter().any(|s| s.name == name)
}

/// Query types `dns_check` sends.
const DNS_TYPES: &[&str] = &["A", "AAAA", "NS", "SOA", "MX", "TXT", "CNAME", "PTR"];

/// Longest duration of any health setting, in seconds: one day.
const MAX_SECONDS: u32 = 86_400;

/// Largest UDP payload an IPv4 datagram carries.
const MAX_UDP_PAYLOAD: usize = 65_507;

/// Every key a checker of `kind` takes.
#[cfg(test)]
fn checker_keys(kind: &str) -> Vec<&'static str> {
    checker_section(kind).map(Section::keys).unwrap_or_default()
}

/// The message for a health key written in a `[[virtual_server]]`, where it does not belong.
pub(super) fn misplaced_in_virtual_server(name: &str) -> Option<String> {
    if is_checker(name) {
        Some(format!(
            "`{name}` is checked per real server: write [virtual_server.real_server.{name}] after \
             the real's [[virtual_server.real_server]]"
        ))
    } else if is_real_key(name) {
        Some(format!("`{name}` is set per real server: move it to [[virtual_server.real_server]]"))
    } else {
        checker_setting(name, "each real server's")
    }
}

/// The message for a key written in a `[[virtual_server.real_server]]` that belongs elsewhere.
pub(super) fn misplaced_in_real_server(name: &str) -> Option<String> {
    service_setting(name).or_else(|| checker_setting(name, "the real server's"))
}

/// The message for a health key under a sorry server, which keepalived never checks.
pub(super) fn misplaced_in_sorry_server(name: &str) -> Option<String> {
    (is_checker(name) || is_real_key(name)).then(|| {
        format!(
            "`{name}` in [virtual_server.sorry_server]: keepalived does not check sorry servers \
             (the sorry server takes the traffic only when no real server can), so it takes no \
             health settings"
        )
    })
}

/// The message for a key written in a checker of `kind` that belongs elsewhere.
fn misplaced_in_checker(kind: &str, name: &str) -> Option<String> {
    if kind == "misc_check" && is_connection_key(name) {
        return Some(format!(
            "`{name}` does not apply to misc_check: it runs a script and connects to nothing (as \
             keepalived's MISC_CHECK); the script's time limit is `misc_timeout`"
        ));
    }
    let kinds: Vec<&str> = CHECKERS
        .iter()
        .filter(|(_, section)| takes(section, name))
        .map(|(kind, _)| *kind)
        .collect();
    if !kinds.is_empty() {
        return Some(format!("`{name}` does not apply to {kind}: only to {}", kinds.join(" and ")));
    }
    if is_real_key(name) {
        return Some(format!(
            "`{name}` is set per real server, not per checker: move it to \
             [[virtual_server.real_server]]"
        ));
    }
    service_setting(name)
}

fn service_setting(name: &str) -> Option<String> {
    (is_service_key(name) && !is_real_key(name))
        .then(|| format!("`{name}` is set per virtual server: move it to [[virtual_server]]"))
}

/// `whose`: whose checker table the setting belongs in.
fn checker_setting(name: &str, whose: &str) -> Option<String> {
    (is_connection_key(name) || is_common_key(name)).then(|| {
        format!(
            "`{name}` is a checker setting: put it in {whose} checker table, like \
             [virtual_server.real_server.tcp_check]"
        )
    })
}

/// The dotted path of a section's header: `a.b` for `[[a.b]]`.
fn section_path(section: &str) -> &str {
    section.trim_matches(|c| c == '[' || c == ']')
}

/// keepalived's UDP_CHECK payload: `0x` and an even number of hex digits is bytes in hex;
/// anything else is sent as its UTF-8 bytes.
fn udp_payload(text: &str) -> Vec<u8> {
    let hex = text.strip_prefix("0x").filter(|hex| !hex.is_empty() && hex.len() % 2 == 0).and_then(
        |hex| {
            hex.as_bytes()
                .chunks_exact(2)
                .map(|pair| match pair {
                    [high, low] => {
                        let digit = |c: &u8| char::from(*c).to_digit(16);
                        u8::try_from(digit(high)? * 16 + digit(low)?).ok()
                    }
                    _ => None,
                })
                .collect::<Option<Vec<u8>>>()
        },
    );
    hex.unwrap_or_else(|| text.as_bytes().to_vec())
}

/// The model of a checker of `kind` before its settings are read: their defaults.
fn default_kind(kind: &str) -> CheckKind {
    let http = || HttpCheck { urls: Vec::new(), virtualhost: None, sni: None };
    match kind {
        "http_get" => CheckKind::Http(http()),
        "ssl_get" => CheckKind::Ssl(http()),
        "misc_check" => CheckKind::Misc(MiscCheck {
            path: String::new(),
            timeout: DEFAULT_MISC_TIMEOUT,
            dynamic: false,
        }),
        "dns_check" => CheckKind::Dns(DnsCheck { name: ".".to_owned(), qtype: "SOA".to_owned() }),
        "udp_check" => CheckKind::Udp(UdpCheck { payload: Vec::new(), require_reply: false }),
        "ping_check" => CheckKind::Ping,
        // "tcp_check", the only other one in CHECKERS.
        _ => CheckKind::Tcp,
    }
}

impl Parser<'_> {
    /// The checkers of a real server (`section`), in file order, with where their values were
    /// written; `None` after an error in any of them.
    pub(super) fn checkers(
        &mut self,
        table: &DeTable<'_>,
        section: &str,
    ) -> Option<(Vec<HealthCheck>, Vec<Spans>)> {
        let mut ok = true;
        // Every checker table, whatever its kind, in file order.
        let mut checkers = Vec::new();
        for (kind, _) in CHECKERS {
            let Some((key, value)) = table.get_key_value(*kind) else {
                continue;
            };
            let single = format!("[{}.{kind}]", section_path(section));
            let several = format!("[{single}]");
            match value.get_ref() {
                DeValue::Table(checker) => checkers.push((*kind, checker, value.span(), single)),
                DeValue::Array(items) => {
                    for item in items.iter() {
                        match item.get_ref() {
                            DeValue::Table(checker) => {
                                checkers.push((*kind, checker, item.span(), several.clone()));
                            }
                            other => {
                                let message = format!(
                                    "each `{kind}` entry must be a table, found {}",
                                    describe(other)
                                );
                                self.error(item.span(), message);
                                ok = false;
                            }
                        }
                    }
                }
                other => {
                    let message = format!(
                        "`{}` must be a table: write {single}, or {several} once per checker to \
                         have several; found {}",
                        key.get_ref(),
                        describe(other)
                    );
                    self.error(value.span(), message);
                    ok = false;
                }
            }
        }
        checkers.sort_by_key(|(_, _, span, _)| span.start);
        let mut checks = Vec::new();
        let mut locations = Vec::new();
        for (kind, checker, span, header) in checkers {
            match self.check(kind, checker, span, header) {
                Some(checker) => {
                    locations.push(checker.locations());
                    checks.push(checker.check);
                }
                None => ok = false,
            }
        }
        ok.then_some((checks, locations))
    }

    /// One checker table of `kind` (its key, `tcp_check`), written as `header`; `None` after
    /// any error in it, unknown keys too: it is not what the operator meant.
    fn check(
        &mut self,
        kind: &str,
        table: &DeTable<'_>,
        span: Range<usize>,
        header: String,
    ) -> Option<Checker> {
        let section = checker_section(kind)?;
        let errors_before = self.errors.len();
        let mut checker = Checker::new(default_kind(kind), self.at(span), header);
        let header = checker.header.clone();
        section.read_as(self, table, &mut checker, &header);
        (self.errors.len() == errors_before).then_some(checker)
    }

    /// The URLs of an HTTP checker: at least one.
    fn urls(&mut self, key: &Key<'_>, value: &Value<'_>, header: &str) -> Option<Vec<UrlCheck>> {
        let errors_before = self.errors.len();
        let tables = self.tables(key, value, header);
        if tables.is_empty() && self.errors.len() == errors_before {
            let message = format!(
                "`{}` needs at least one entry, like `{} = [{{ path = \"/\" }}]`",
                key.get_ref(),
                key.get_ref()
            );
            self.error(value.span(), message);
        }
        let urls: Vec<UrlCheck> =
            tables.into_iter().filter_map(|(table, span)| self.url(table, span, header)).collect();
        (self.errors.len() == errors_before).then_some(urls)
    }

    /// One URL of an HTTP checker, in its table written as `header`.
    fn url(&mut self, table: &DeTable<'_>, span: Range<usize>, header: &str) -> Option<UrlCheck> {
        let errors_before = self.errors.len();
        let at = self.at(span);
        let mut url = Url {
            url: UrlCheck { path: String::new(), status_code: None, digest: None },
            spans: Spans::at_section(at),
        };
        URL_SECTION.read_as(self, table, &mut url, header);
        (self.errors.len() == errors_before).then_some(url.url)
    }

    /// A non-empty string: a command line, a host or a name.
    pub(super) fn command(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<String> {
        let text = self.string(key, value)?;
        if text.trim().is_empty() {
            let message = format!("`{}` must not be empty: leave it out instead", key.get_ref());
            self.error(value.span(), message);
            return None;
        }
        Some(text.to_owned())
    }
}

/// A URL of an HTTP checker as read.
struct Url {
    url: UrlCheck,
    spans: Spans,
}

impl Located for Url {
    fn spans_mut(&mut self) -> &mut Spans {
        &mut self.spans
    }
}

/// The tables of an HTTP checker's `url`.
const URL_SECTION: Section<Url> = Section {
    header: "[[virtual_server.real_server.http_get.url]]",
    misplaced: |_| None,
    required: &["path"],
    drop_on_error: &[],
    nested: &[],
    elsewhere: &[],
    finish: None,
    settings: &[
        Setting {
            name: "path",
            doc: Doc {
                ty: "string starting with `/`",
                default: "required",
                meaning: "Path (and query) to get.",
            },
            read: |p, k, v, u| {
                let Some(path) = p.string(k, v) else { return };
                if path.starts_with('/') {
                    path.clone_into(&mut u.url.path);
                } else {
                    let message = format!(
                        "`{}` must start with \"/\", found \"{}\"",
                        k.get_ref(),
                        path.escape_debug()
                    );
                    p.error(v.span(), message);
                }
            },
            emit: |u, _| Some(string(&u.url.path)),
        },
        Setting {
            name: "status_code",
            doc: Doc { ty: "integer 100–599", default: "any 2xx", meaning: "Expected status." },
            read: |p, k, v, u| {
                if let Some(code) = p.integer(k, v, 100, 599).and_then(|c| u16::try_from(c).ok()) {
                    u.url.status_code = Some(code);
                }
            },
            emit: |u, _| u.url.status_code.as_ref().map(integer),
        },
        Setting {
            name: "digest",
            doc: Doc {
                ty: "32 hex digits",
                default: "none",
                meaning: "MD5 of the body, as keepalived's `genhash` prints it.",
            },
            read: |p, k, v, u| {
                let Some(digest) = p.string(k, v) else { return };
                if digest.len() == 32 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                    u.url.digest = Some(digest.to_ascii_lowercase());
                } else {
                    let message = format!(
                        "`{}` must be an MD5 digest, 32 hex digits as genhash prints it, found \
                         \"{}\"",
                        k.get_ref(),
                        digest.escape_debug()
                    );
                    p.error(v.span(), message);
                }
            },
            emit: |u, _| u.url.digest.as_deref().map(string),
        },
    ],
};

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::super::super::health::RealHealth;
    use super::super::super::model::{Config, RealServer, VirtualServer};
    use super::super::super::parse_toml;
    use super::super::super::test_support::{
        FakeHost, Scenario, assert_single_error, assert_toml_scenarios, doc,
    };
    use super::*;

    /// Base lines 1-4: a valid IPv4 virtual server on eth0.
    const VS: &[&str] =
        &["[[virtual_server]]", "vip = '192.0.2.100'", "port = 80", "interface = 'eth0'"];

    /// Base lines 1-6: [`VS`] with one real server.
    const REAL: &[&str] = &[
        "[[virtual_server]]",
        "vip = '192.0.2.100'",
        "port = 80",
        "interface = 'eth0'",
        "[[virtual_server.real_server]]",
        "address = '192.0.2.11'",
    ];

    /// Base lines 1-7: [`REAL`] with a TCP checker table on line 7, its keys from line 8.
    const TCP: &[&str] = &[
        "[[virtual_server]]",
        "vip = '192.0.2.100'",
        "port = 80",
        "interface = 'eth0'",
        "[[virtual_server.real_server]]",
        "address = '192.0.2.11'",
        "[virtual_server.real_server.tcp_check]",
    ];

    /// Each must be the only error.
    const SCENARIOS: &[Scenario] = &[
        // The virtual server's settings.
        (
            "delay_loop 0",
            VS,
            &["delay_loop = 0"],
            "`delay_loop` must be more than 0 and at most 86400 seconds, found 0",
            "5:14",
        ),
        (
            "delay_loop 0.0",
            VS,
            &["delay_loop = 0.0"],
            "`delay_loop` must be more than 0 and at most 86400 seconds, found 0.0",
            "5:14",
        ),
        (
            "delay_loop too small to be told from 0",
            VS,
            &["delay_loop = 1e-12"],
            "`delay_loop` must be more than 0 and at most 86400 seconds, found 1e-12",
            "5:14",
        ),
        (
            "negative delay_loop",
            VS,
            &["delay_loop = -5"],
            "`delay_loop` must be more than 0 and at most 86400 seconds, found -5",
            "5:14",
        ),
        (
            "delay_loop over a day",
            VS,
            &["delay_loop = 86401"],
            "`delay_loop` must be more than 0 and at most 86400 seconds, found 86401",
            "5:14",
        ),
        (
            "delay_loop with a unit",
            VS,
            &["delay_loop = '60s'"],
            "`delay_loop` must be a number of seconds, found string \"60s\"",
            "5:14",
        ),
        (
            "misspelled delay_loop",
            VS,
            &["delay_lop = 6"],
            "unknown key `delay_lop` in [[virtual_server]]; did you mean `delay_loop`?",
            "5:1",
        ),
        (
            "alpha as a string",
            VS,
            &["alpha = 'yes'"],
            "`alpha` must be true or false, found string \"yes\"",
            "5:9",
        ),
        (
            "omega as a number",
            VS,
            &["omega = 1"],
            "`omega` must be true or false, found integer 1",
            "5:9",
        ),
        (
            "negative quorum",
            VS,
            &["quorum = -1"],
            "`quorum` must be between 0 and 4294967295, found -1",
            "5:10",
        ),
        (
            "fractional quorum",
            VS,
            &["quorum = 1.5"],
            "`quorum` must be an integer, found float 1.5",
            "5:10",
        ),
        (
            "negative hysteresis",
            VS,
            &["hysteresis = -1"],
            "`hysteresis` must be between 0 and 4294967295, found -1",
            "5:14",
        ),
        (
            "quorum_up as a number",
            VS,
            &["quorum_up = 1"],
            "`quorum_up` must be a string, found integer 1",
            "5:13",
        ),
        (
            "empty quorum_down",
            VS,
            &["quorum_down = ' '"],
            "`quorum_down` must not be empty: leave it out instead",
            "5:15",
        ),
        (
            "inhibit_on_failure as a string",
            VS,
            &["inhibit_on_failure = 'true'"],
            "`inhibit_on_failure` must be true or false, found string \"true\"",
            "5:22",
        ),
        (
            "checker under the virtual server",
            VS,
            &["[virtual_server.tcp_check]", "connect_timeout = 3"],
            "`tcp_check` is checked per real server: write [virtual_server.real_server.tcp_check] \
             after the real's [[virtual_server.real_server]]",
            "5:17",
        ),
        (
            "notify_up on the virtual server",
            VS,
            &["notify_up = '/bin/true'"],
            "`notify_up` is set per real server: move it to [[virtual_server.real_server]]",
            "5:1",
        ),
        (
            "checker setting on the virtual server",
            VS,
            &["connect_timeout = 3"],
            "`connect_timeout` is a checker setting: put it in each real server's checker table, \
             like [virtual_server.real_server.tcp_check]",
            "5:1",
        ),
        // The real server's settings.
        (
            "real inhibit_on_failure as a number",
            REAL,
            &["inhibit_on_failure = 0"],
            "`inhibit_on_failure` must be true or false, found integer 0",
            "7:22",
        ),
        (
            "empty notify_up",
            REAL,
            &["notify_up = ''"],
            "`notify_up` must not be empty: leave it out instead",
            "7:13",
        ),
        (
            "notify_down as an array",
            REAL,
            &["notify_down = ['/bin/echo', 'down']"],
            "`notify_down` must be a string, found an array",
            "7:15",
        ),
        (
            "delay_loop on a real server",
            REAL,
            &["delay_loop = 6"],
            "`delay_loop` is set per virtual server: move it to [[virtual_server]]",
            "7:1",
        ),
        (
            "checker setting on a real server",
            REAL,
            &["nb_get_retry = 3"],
            "`nb_get_retry` is a checker setting: put it in the real server's checker table, like \
             [virtual_server.real_server.tcp_check]",
            "7:1",
        ),
        (
            "keepalived's upper-case checker name",
            REAL,
            &["[virtual_server.real_server.TCP_CHECK]"],
            "unknown key `TCP_CHECK` in [[virtual_server.real_server]]; did you mean `tcp_check`?",
            "7:29",
        ),
        (
            "misspelled checker",
            REAL,
            &["[virtual_server.real_server.http_gte]"],
            "unknown key `http_gte` in [[virtual_server.real_server]]; did you mean `http_get`?",
            "7:29",
        ),
        (
            "checker as a value",
            REAL,
            &["tcp_check = true"],
            "`tcp_check` must be a table: write [virtual_server.real_server.tcp_check], or \
             [[virtual_server.real_server.tcp_check]] once per checker to have several; found \
             boolean true",
            "7:13",
        ),
        (
            "checker array entry not a table",
            REAL,
            &["ping_check = [{}, 'again']"],
            "each `ping_check` entry must be a table, found string \"again\"",
            "7:19",
        ),
        // The common checker settings.
        (
            "connect_timeout 0",
            TCP,
            &["connect_timeout = 0"],
            "`connect_timeout` must be more than 0 and at most 86400 seconds, found 0",
            "8:19",
        ),
        (
            "negative connect_timeout",
            TCP,
            &["connect_timeout = -1.5"],
            "`connect_timeout` must be more than 0 and at most 86400 seconds, found -1.5",
            "8:19",
        ),
        (
            "connect_timeout as a string",
            TCP,
            &["connect_timeout = '5'"],
            "`connect_timeout` must be a number of seconds, found string \"5\"",
            "8:19",
        ),
        (
            "connect_ip not an address",
            TCP,
            &["connect_ip = '192.0.2.256'"],
            "`connect_ip` must be an IP address, found \"192.0.2.256\"",
            "8:14",
        ),
        (
            "connect_port 0",
            TCP,
            &["connect_port = 0"],
            "`connect_port` must be between 1 and 65535, found 0",
            "8:16",
        ),
        (
            "connect_port too large",
            TCP,
            &["connect_port = 65536"],
            "`connect_port` must be between 1 and 65535, found 65536",
            "8:16",
        ),
        (
            "connect_port as a service name",
            TCP,
            &["connect_port = 'http'"],
            "`connect_port` must be an integer, found string \"http\"",
            "8:16",
        ),
        (
            "bindto an interface",
            TCP,
            &["bindto = 'eth0'"],
            "`bindto` must be an IP address, found \"eth0\"",
            "8:10",
        ),
        (
            "negative retry",
            TCP,
            &["retry = -1"],
            "`retry` must be between 0 and 4294967295, found -1",
            "8:9",
        ),
        (
            "nb_get_retry as a string",
            TCP,
            &["nb_get_retry = 'three'"],
            "`nb_get_retry` must be an integer, found string \"three\"",
            "8:16",
        ),
        (
            "retry and nb_get_retry",
            TCP,
            &["retry = 3", "nb_get_retry = 3"],
            "`nb_get_retry` and `retry` are the same setting (`nb_get_retry` is keepalived's old \
             name for `retry`); keep only one",
            "9:1",
        ),
        (
            "nb_get_retry and retry",
            TCP,
            &["nb_get_retry = 3", "retry = 3"],
            "`retry` and `nb_get_retry` are the same setting",
            "9:1",
        ),
        (
            "negative delay_before_retry",
            TCP,
            &["delay_before_retry = -1"],
            "`delay_before_retry` must be between 0 and 86400 seconds, found -1",
            "8:22",
        ),
        (
            "warmup over a day",
            TCP,
            &["warmup = 86400.5"],
            "`warmup` must be between 0 and 86400 seconds, found 86400.5",
            "8:10",
        ),
        ("rise 0", TCP, &["rise = 0"], "`rise` must be between 1 and 4294967295, found 0", "8:8"),
        (
            "misspelled checker key",
            TCP,
            &["conect_timeout = 3"],
            "unknown key `conect_timeout` in [virtual_server.real_server.tcp_check]; did you mean \
             `connect_timeout`?",
            "8:1",
        ),
        (
            "misspelled key of an array checker",
            REAL,
            &["[[virtual_server.real_server.tcp_check]]", "retyr = 3"],
            "unknown key `retyr` in [[virtual_server.real_server.tcp_check]]; did you mean \
             `retry`?",
            "8:1",
        ),
        (
            "an HTTP key in a TCP checker",
            TCP,
            &["url = [{ path = '/' }]"],
            "`url` does not apply to tcp_check: only to http_get and ssl_get",
            "8:1",
        ),
        (
            "delay_loop in a checker (keepalived allows it there)",
            TCP,
            &["delay_loop = 6"],
            "`delay_loop` is set per virtual server: move it to [[virtual_server]]",
            "8:1",
        ),
        (
            "inhibit_on_failure in a checker",
            TCP,
            &["inhibit_on_failure = true"],
            "`inhibit_on_failure` is set per real server, not per checker: move it to \
             [[virtual_server.real_server]]",
            "8:1",
        ),
        (
            "bad value in the second checker of an array",
            REAL,
            &[
                "[[virtual_server.real_server.tcp_check]]",
                "[[virtual_server.real_server.tcp_check]]",
                "connect_port = -80",
            ],
            "`connect_port` must be between 1 and 65535, found -80",
            "9:16",
        ),
        // http_get and ssl_get.
        (
            "http_get without url",
            REAL,
            &["[virtual_server.real_server.http_get]", "virtualhost = 'www.example.com'"],
            "missing required key `url` in [virtual_server.real_server.http_get]",
            "7:1",
        ),
        (
            "inline http_get without url",
            REAL,
            &["http_get = { connect_timeout = 2 }"],
            "missing required key `url` in [virtual_server.real_server.http_get]",
            "7:12",
        ),
        (
            "no url",
            REAL,
            &["[virtual_server.real_server.http_get]", "url = []"],
            "`url` needs at least one entry, like `url = [{ path = \"/\" }]`",
            "8:7",
        ),
        (
            "url as a string",
            REAL,
            &["[virtual_server.real_server.http_get]", "url = '/health'"],
            "`url` must be an array of tables: write [[virtual_server.real_server.http_get.url]] \
             once per entry",
            "8:7",
        ),
        (
            "url as a single table",
            REAL,
            &["[virtual_server.real_server.ssl_get]", "url = { path = '/' }"],
            "`url` must be an array of tables: write [[virtual_server.real_server.ssl_get.url]] \
             once per entry",
            "8:7",
        ),
        (
            "url entry not a table",
            REAL,
            &["[virtual_server.real_server.http_get]", "url = ['/health']"],
            "each `url` entry must be a table, found string \"/health\"",
            "8:8",
        ),
        (
            "url without path",
            REAL,
            &["[virtual_server.real_server.http_get]", "url = [{ status_code = 200 }]"],
            "missing required key `path` in [[virtual_server.real_server.http_get.url]]",
            "8:8",
        ),
        (
            "url table without path",
            REAL,
            &[
                "[[virtual_server.real_server.http_get]]",
                "[[virtual_server.real_server.http_get.url]]",
                "status_code = 200",
            ],
            "missing required key `path` in [[virtual_server.real_server.http_get.url]]",
            "8:1",
        ),
        (
            "relative path",
            REAL,
            &["[virtual_server.real_server.http_get]", "url = [{ path = 'health' }]"],
            "`path` must start with \"/\", found \"health\"",
            "8:17",
        ),
        (
            "full URL as path",
            REAL,
            &["[virtual_server.real_server.http_get]", "url = [{ path = 'http://x/' }]"],
            "`path` must start with \"/\", found \"http://x/\"",
            "8:17",
        ),
        (
            "status code below 100",
            REAL,
            &["[virtual_server.real_server.http_get]", "url = [{ path = '/', status_code = 99 }]"],
            "`status_code` must be between 100 and 599, found 99",
            "8:36",
        ),
        (
            "status code 600",
            REAL,
            &["[virtual_server.real_server.http_get]", "url = [{ path = '/', status_code = 600 }]"],
            "`status_code` must be between 100 and 599, found 600",
            "8:36",
        ),
        (
            "status code as a string",
            REAL,
            &[
                "[virtual_server.real_server.http_get]",
                "url = [{ path = '/', status_code = '200' }]",
            ],
            "`status_code` must be an integer, found string \"200\"",
            "8:36",
        ),
        (
            "short digest",
            REAL,
            &["[virtual_server.real_server.http_get]", "url = [{ path = '/', digest = 'abc' }]"],
            "`digest` must be an MD5 digest, 32 hex digits as genhash prints it, found \"abc\"",
            "8:31",
        ),
        (
            "digest with a non-hex digit",
            REAL,
            &[
                "[virtual_server.real_server.http_get]",
                "url = [{ path = '/', digest = '9b3a0c85a887a256d6939da88aabd8cg' }]",
            ],
            "`digest` must be an MD5 digest, 32 hex digits as genhash prints it, found \
             \"9b3a0c85a887a256d6939da88aabd8cg\"",
            "8:31",
        ),
        (
            "misspelled url key",
            REAL,
            &["[virtual_server.real_server.http_get]", "url = [{ path = '/', statuscode = 200 }]"],
            "unknown key `statuscode` in [[virtual_server.real_server.http_get.url]]; did you mean \
             `status_code`?",
            "8:22",
        ),
        (
            "empty virtualhost",
            REAL,
            &[
                "[virtual_server.real_server.http_get]",
                "url = [{ path = '/' }]",
                "virtualhost = ''",
            ],
            "`virtualhost` must not be empty: leave it out instead",
            "9:15",
        ),
        (
            "sni on http_get",
            REAL,
            &["[virtual_server.real_server.http_get]", "url = [{ path = '/' }]", "sni = 'x'"],
            "`sni` does not apply to http_get: only to ssl_get",
            "9:1",
        ),
        (
            "enable_sni without virtualhost",
            REAL,
            &[
                "[virtual_server.real_server.ssl_get]",
                "url = [{ path = '/' }]",
                "enable_sni = true",
            ],
            "`enable_sni` sends `virtualhost` as the TLS server name, but there is no \
             `virtualhost`: add one, or give the name as `sni`",
            "9:14",
        ),
        (
            "sni and enable_sni",
            REAL,
            &[
                "[virtual_server.real_server.ssl_get]",
                "url = [{ path = '/' }]",
                "virtualhost = 'www.example.com'",
                "sni = 'www.example.com'",
                "enable_sni = true",
            ],
            "`enable_sni` and `sni` both set the TLS server name (`enable_sni` = true sends \
             `virtualhost`); keep only one",
            "11:1",
        ),
        (
            "enable_sni as a string",
            REAL,
            &[
                "[virtual_server.real_server.ssl_get]",
                "url = [{ path = '/' }]",
                "virtualhost = 'www.example.com'",
                "enable_sni = 'yes'",
            ],
            "`enable_sni` must be true or false, found string \"yes\"",
            "10:14",
        ),
        (
            "sni as a number",
            REAL,
            &["[virtual_server.real_server.ssl_get]", "url = [{ path = '/' }]", "sni = 1"],
            "`sni` must be a string, found integer 1",
            "9:7",
        ),
        // misc_check.
        (
            "misc_check without misc_path",
            REAL,
            &["[virtual_server.real_server.misc_check]", "misc_timeout = 3"],
            "missing required key `misc_path` in [virtual_server.real_server.misc_check]",
            "7:1",
        ),
        (
            "empty misc_path",
            REAL,
            &["misc_check = { misc_path = '' }"],
            "`misc_path` must not be empty: leave it out instead",
            "7:28",
        ),
        (
            "misc_timeout 0",
            REAL,
            &["misc_check = { misc_path = '/bin/true', misc_timeout = 0 }"],
            "`misc_timeout` must be more than 0 and at most 86400 seconds, found 0",
            "7:56",
        ),
        (
            "misc_dynamic as a string",
            REAL,
            &["misc_check = { misc_path = '/bin/true', misc_dynamic = 'yes' }"],
            "`misc_dynamic` must be true or false, found string \"yes\"",
            "7:56",
        ),
        (
            "connect_timeout on misc_check",
            REAL,
            &[
                "[virtual_server.real_server.misc_check]",
                "misc_path = '/bin/true'",
                "connect_timeout = 3",
            ],
            "`connect_timeout` does not apply to misc_check: it runs a script and connects to \
             nothing (as keepalived's MISC_CHECK); the script's time limit is `misc_timeout`",
            "9:1",
        ),
        (
            "connect_ip on misc_check",
            REAL,
            &["misc_check = { misc_path = '/bin/true', connect_ip = '192.0.2.11' }"],
            "`connect_ip` does not apply to misc_check",
            "7:41",
        ),
        // dns_check.
        (
            "unknown query type",
            REAL,
            &["dns_check = { type = 'SRV' }"],
            "`type` must be one of A, AAAA, NS, SOA, MX, TXT, CNAME, PTR, found \"SRV\"",
            "7:22",
        ),
        (
            "query type as a number",
            REAL,
            &["dns_check = { dns_type = 6 }"],
            "`dns_type` must be a string, found integer 6",
            "7:26",
        ),
        (
            "name and dns_name",
            REAL,
            &["dns_check = { dns_name = 'example.com', name = 'example.com' }"],
            "`name` and `dns_name` are the same setting; keep only one",
            "7:41",
        ),
        (
            "type and dns_type",
            REAL,
            &["[virtual_server.real_server.dns_check]", "type = 'A'", "dns_type = 'A'"],
            "`dns_type` and `type` are the same setting; keep only one",
            "9:1",
        ),
        (
            "empty query name",
            REAL,
            &["dns_check = { name = '' }"],
            "`name` must not be empty: leave it out instead",
            "7:22",
        ),
        // udp_check.
        (
            "payload as a number",
            REAL,
            &["udp_check = { payload = 0x0a }"],
            "`payload` must be a string, found integer 0x0a",
            "7:25",
        ),
        (
            "require_reply as a string",
            REAL,
            &["udp_check = { require_reply = 'no' }"],
            "`require_reply` must be true or false, found string \"no\"",
            "7:31",
        ),
        // through_vip.
        (
            "through_vip as a string",
            TCP,
            &["through_vip = 'yes'"],
            "`through_vip` must be true or false, found string \"yes\"",
            "8:15",
        ),
        (
            "through_vip on misc_check",
            REAL,
            &["misc_check = { misc_path = '/bin/true', through_vip = true }"],
            "`through_vip` does not apply to misc_check: it runs a script and connects to nothing",
            "7:41",
        ),
        (
            "through_vip on ping_check",
            REAL,
            &["ping_check = { through_vip = true }"],
            "`through_vip` does not apply to ping_check: only to tcp_check and http_get and \
             ssl_get and dns_check and udp_check",
            "7:16",
        ),
        (
            "through_vip with connect_ip",
            TCP,
            &["connect_ip = '192.0.2.21'", "through_vip = true"],
            "`through_vip` = true checks the VIP on the real itself; it cannot go to `connect_ip` \
             as well: keep only one",
            "9:1",
        ),
        (
            "through_vip on a real server",
            REAL,
            &["through_vip = true"],
            "`through_vip` is a checker setting: put it in the real server's checker table, like \
             [virtual_server.real_server.tcp_check]",
            "7:1",
        ),
        // ping_check.
        (
            "payload on ping_check",
            REAL,
            &["ping_check = { payload = 'x' }"],
            "`payload` does not apply to ping_check: only to udp_check",
            "7:16",
        ),
        // Sorry servers are not checked.
        (
            "checker under the sorry server",
            VS,
            &[
                "[virtual_server.sorry_server]",
                "address = '192.0.2.200'",
                "[virtual_server.sorry_server.tcp_check]",
            ],
            "`tcp_check` in [virtual_server.sorry_server]: keepalived does not check sorry servers \
             (the sorry server takes the traffic only when no real server can), so it takes no \
             health settings",
            "7:30",
        ),
        (
            "notify_up on the sorry server",
            VS,
            &["sorry_server = { address = '192.0.2.200', notify_up = '/bin/true' }"],
            "`notify_up` in [virtual_server.sorry_server]: keepalived does not check sorry servers",
            "5:43",
        ),
    ];

    #[test]
    fn scenarios() {
        assert_toml_scenarios(SCENARIOS);
    }

    /// A payload too large for any datagram: built, as no scenario line could hold it.
    #[test]
    fn udp_payload_fits_a_datagram() {
        for (size, error) in [(65_507, None), (65_508, Some("7:25"))] {
            let payload = format!("udp_check = {{ payload = '{}' }}", "x".repeat(size));
            let text = doc(&[REAL, &[payload.as_str()]].concat());
            let result = parse_toml(&text, Path::new("test.toml"), &FakeHost);
            match error {
                None => assert!(result.is_ok(), "{size}: {result:?}"),
                Some(at) => assert_single_error(
                    "payload",
                    result,
                    "`payload` is 65508 bytes, more than a UDP datagram holds (65507)",
                    at,
                ),
            }
        }
    }

    fn parse_ok(lines: &[&str]) -> Config {
        parse_toml(&doc(lines), Path::new("test.toml"), &FakeHost)
            .unwrap_or_else(|e| panic!("{e}\nin:\n{}", doc(lines)))
    }

    /// A checker of `kind` with every common setting at its default, at `line`:`col`.
    fn default_check(kind: CheckKind, line: u32, col: u32) -> HealthCheck {
        HealthCheck {
            kind,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            connect_ip: None,
            connect_port: None,
            bindto: None,
            retry: DEFAULT_RETRY,
            delay_before_retry: DEFAULT_DELAY_BEFORE_RETRY,
            warmup: None,
            rise: 1,
            through_vip: false,
            location: Location::new(line, col),
        }
    }

    fn url(path: &str) -> UrlCheck {
        UrlCheck { path: path.to_owned(), status_code: None, digest: None }
    }

    #[test]
    fn service_values() {
        // (name, lines after the base virtual server and a real, check on the virtual server)
        type Check = fn(&VirtualServer);
        let cases: &[(&str, &[&str], Check)] = &[
            ("defaults", &[], |vs| {
                assert_eq!(vs.health, ServiceHealth::default());
                assert_eq!(vs.health.delay_loop, Duration::from_secs(60));
                assert_eq!(vs.health.quorum, 1);
                assert_eq!(vs.real_servers[0].health, RealHealth::default());
                assert_eq!(vs.delay_loop_at(), Location::new(1, 1));
            }),
            ("fractional delay_loop", &["delay_loop = 0.5"], |vs| {
                assert_eq!(vs.health.delay_loop, Duration::from_millis(500));
                assert_eq!(vs.delay_loop_at(), Location::new(5, 14));
            }),
            ("longest delay_loop", &["delay_loop = 86400"], |vs| {
                assert_eq!(vs.health.delay_loop, Duration::from_secs(86_400));
            }),
            (
                "every setting",
                &[
                    "delay_loop = 6",
                    "alpha = true",
                    "omega = true",
                    "quorum = 0",
                    "hysteresis = 2",
                    "quorum_up = '/usr/local/bin/up 192.0.2.100'",
                    "quorum_down = '/usr/local/bin/down'",
                    "inhibit_on_failure = true",
                ],
                |vs| {
                    assert_eq!(
                        vs.health,
                        ServiceHealth {
                            delay_loop: Duration::from_secs(6),
                            alpha: true,
                            omega: true,
                            quorum: 0,
                            hysteresis: 2,
                            quorum_up: Some("/usr/local/bin/up 192.0.2.100".to_owned()),
                            quorum_down: Some("/usr/local/bin/down".to_owned()),
                            inhibit_on_failure: true,
                        }
                    );
                    assert_eq!(vs.alpha_at(), Location::new(6, 9));
                    // The real inherits inhibit_on_failure.
                    assert!(vs.real_servers[0].health.inhibit_on_failure);
                },
            ),
            ("largest quorum", &["quorum = 4294967295"], |vs| {
                assert_eq!(vs.health.quorum, u32::MAX);
            }),
        ];
        for (name, extra, check) in cases {
            // The virtual server's keys must come before its real server's table.
            let lines = [VS, extra, &REAL[4..]].concat();
            let config = parse_ok(&lines);
            assert_eq!(config.virtual_servers.len(), 1, "{name}");
            check(&config.virtual_servers[0]);
        }
    }

    #[test]
    fn real_values() {
        // (name, lines after the base real server, check on that real server)
        type Check = fn(&RealServer);
        let cases: &[(&str, &[&str], Check)] = &[
            (
                "notify scripts and inhibit_on_failure",
                &[
                    "inhibit_on_failure = true",
                    "notify_up = '/bin/up'",
                    "notify_down = '/bin/down'",
                ],
                |rs| {
                    assert_eq!(
                        rs.health,
                        RealHealth {
                            checks: Vec::new(),
                            inhibit_on_failure: true,
                            notify_up: Some("/bin/up".to_owned()),
                            notify_down: Some("/bin/down".to_owned()),
                        }
                    );
                },
            ),
            ("empty checker: all defaults", &["tcp_check = {}"], |rs| {
                assert_eq!(rs.health.checks, [default_check(CheckKind::Tcp, 7, 13)]);
                assert_eq!(rs.check_locations, [Spans::at_section(Location::new(7, 13))]);
            }),
            ("checker written as a table", &["[virtual_server.real_server.ping_check]"], |rs| {
                assert_eq!(rs.health.checks, [default_check(CheckKind::Ping, 7, 1)]);
            }),
            (
                "through_vip on every checker that connects to a port",
                &[
                    "tcp_check = [{ through_vip = true }, { through_vip = false }]",
                    "http_get = { through_vip = true, url = [{ path = '/' }] }",
                    "ssl_get = { through_vip = true, url = [{ path = '/' }] }",
                    "dns_check = { through_vip = true }",
                    "udp_check = { through_vip = true }",
                ],
                |rs| {
                    let through: Vec<(&str, bool)> =
                        rs.health.checks.iter().map(|c| (c.kind.name(), c.through_vip)).collect();
                    assert_eq!(
                        through,
                        [
                            ("TCP_CHECK", true),
                            ("TCP_CHECK", false),
                            ("HTTP_GET", true),
                            ("SSL_GET", true),
                            ("DNS_CHECK", true),
                            ("UDP_CHECK", true),
                        ]
                    );
                },
            ),
            (
                "every common setting",
                &[
                    "[virtual_server.real_server.tcp_check]",
                    "connect_timeout = 2.5",
                    "connect_ip = '192.0.2.21'",
                    "connect_port = 8080",
                    "bindto = '192.0.2.1'",
                    "retry = 0",
                    "delay_before_retry = 0",
                    "warmup = 30",
                    "rise = 3",
                ],
                |rs| {
                    let expected = HealthCheck {
                        connect_timeout: Duration::from_millis(2500),
                        connect_ip: Some("192.0.2.21".parse().unwrap()),
                        connect_port: Some(8080),
                        bindto: Some("192.0.2.1".parse().unwrap()),
                        retry: 0,
                        delay_before_retry: Duration::ZERO,
                        warmup: Some(Duration::from_secs(30)),
                        rise: 3,
                        ..default_check(CheckKind::Tcp, 7, 1)
                    };
                    assert_eq!(rs.health.checks, [expected]);
                    assert_eq!(
                        rs.check_locations,
                        [Spans::at_section(Location::new(7, 1))
                            .with("connect_ip", Location::new(9, 14))
                            .with("bindto", Location::new(11, 10))
                            .with("retry", Location::new(12, 9))]
                    );
                },
            ),
            (
                "old name nb_get_retry, warmup 0",
                &["tcp_check = { nb_get_retry = 4, warmup = 0 }"],
                |rs| {
                    assert_eq!(rs.health.checks[0].retry, 4);
                    assert_eq!(rs.health.checks[0].warmup, None);
                    assert_eq!(rs.check_locations[0].located("retry"), Location::new(7, 30));
                },
            ),
            (
                "largest values",
                &["tcp_check = { connect_port = 65535, connect_timeout = 86400 }"],
                |rs| {
                    assert_eq!(rs.health.checks[0].connect_port, Some(65535));
                    assert_eq!(rs.health.checks[0].connect_timeout, Duration::from_secs(86_400));
                },
            ),
            (
                "several checkers of one kind, and of several kinds, in file order",
                &[
                    "[[virtual_server.real_server.tcp_check]]",
                    "connect_port = 80",
                    "[virtual_server.real_server.ping_check]",
                    "[[virtual_server.real_server.tcp_check]]",
                    "connect_port = 443",
                ],
                |rs| {
                    let ports: Vec<_> = rs.health.checks.iter().map(|c| c.connect_port).collect();
                    assert_eq!(ports, [Some(80), None, Some(443)]);
                    let kinds: Vec<_> = rs.health.checks.iter().map(|c| c.kind.name()).collect();
                    assert_eq!(kinds, ["TCP_CHECK", "PING_CHECK", "TCP_CHECK"]);
                    let lines: Vec<_> = rs.health.checks.iter().map(|c| c.location.line).collect();
                    assert_eq!(lines, [7, 9, 10]);
                },
            ),
            ("an empty array: no checkers", &["tcp_check = []"], |rs| {
                assert!(rs.health.checks.is_empty());
            }),
            (
                "http_get: URL tables, digest in lower case",
                &[
                    "[virtual_server.real_server.http_get]",
                    "virtualhost = 'www.example.com'",
                    "[[virtual_server.real_server.http_get.url]]",
                    "path = '/'",
                    "[[virtual_server.real_server.http_get.url]]",
                    "path = '/health?full=1'",
                    "status_code = 204",
                    "digest = '9B3A0C85A887A256D6939DA88AABD8CD'",
                ],
                |rs| {
                    let expected = HttpCheck {
                        urls: vec![
                            url("/"),
                            UrlCheck {
                                path: "/health?full=1".to_owned(),
                                status_code: Some(204),
                                digest: Some("9b3a0c85a887a256d6939da88aabd8cd".to_owned()),
                            },
                        ],
                        virtualhost: Some("www.example.com".to_owned()),
                        sni: None,
                    };
                    assert_eq!(rs.health.checks, [default_check(CheckKind::Http(expected), 7, 1)]);
                },
            ),
            (
                "ssl_get: enable_sni sends virtualhost",
                &[
                    "ssl_get = { url = [{ path = '/' }], virtualhost = 'a.example', enable_sni = true }",
                ],
                |rs| {
                    let CheckKind::Ssl(ssl) = &rs.health.checks[0].kind else { panic!() };
                    assert_eq!(ssl.sni.as_deref(), Some("a.example"));
                },
            ),
            (
                "ssl_get: enable_sni false sends none",
                &[
                    "ssl_get = { url = [{ path = '/' }], virtualhost = 'a.example', enable_sni = false }",
                ],
                |rs| {
                    let CheckKind::Ssl(ssl) = &rs.health.checks[0].kind else { panic!() };
                    assert_eq!(ssl.sni, None);
                },
            ),
            (
                "ssl_get: explicit sni",
                &["ssl_get = { url = [{ path = '/', status_code = 100 }], sni = 'b.example' }"],
                |rs| {
                    let CheckKind::Ssl(ssl) = &rs.health.checks[0].kind else { panic!() };
                    assert_eq!(ssl.sni.as_deref(), Some("b.example"));
                    assert_eq!(ssl.virtualhost, None);
                    assert_eq!(ssl.urls[0].status_code, Some(100));
                },
            ),
            ("misc_check defaults", &["misc_check = { misc_path = '/bin/true' }"], |rs| {
                let expected = MiscCheck {
                    path: "/bin/true".to_owned(),
                    timeout: DEFAULT_MISC_TIMEOUT,
                    dynamic: false,
                };
                assert_eq!(rs.health.checks, [default_check(CheckKind::Misc(expected), 7, 14)]);
            }),
            (
                "misc_check with every setting",
                &[
                    "[virtual_server.real_server.misc_check]",
                    "misc_path = '/usr/local/bin/check --host 192.0.2.11'",
                    "misc_timeout = 0.5",
                    "misc_dynamic = true",
                    "retry = 2",
                ],
                |rs| {
                    let CheckKind::Misc(misc) = &rs.health.checks[0].kind else { panic!() };
                    assert_eq!(misc.path, "/usr/local/bin/check --host 192.0.2.11");
                    assert_eq!(misc.timeout, Duration::from_millis(500));
                    assert!(misc.dynamic);
                    assert_eq!(rs.health.checks[0].retry, 2);
                },
            ),
            ("dns_check defaults", &["dns_check = {}"], |rs| {
                let expected = DnsCheck { name: ".".to_owned(), qtype: "SOA".to_owned() };
                assert_eq!(rs.health.checks[0].kind, CheckKind::Dns(expected));
            }),
            (
                "dns_check, lower-case type",
                &["dns_check = { name = 'example.com', type = 'aaaa' }"],
                |rs| {
                    let expected =
                        DnsCheck { name: "example.com".to_owned(), qtype: "AAAA".to_owned() };
                    assert_eq!(rs.health.checks[0].kind, CheckKind::Dns(expected));
                },
            ),
            (
                "dns_check, other spellings",
                &["dns_check = { dns_name = 'example.org', dns_type = 'Mx' }"],
                |rs| {
                    let expected =
                        DnsCheck { name: "example.org".to_owned(), qtype: "MX".to_owned() };
                    assert_eq!(rs.health.checks[0].kind, CheckKind::Dns(expected));
                },
            ),
            ("udp_check defaults", &["udp_check = {}"], |rs| {
                let expected = UdpCheck { payload: Vec::new(), require_reply: false };
                assert_eq!(rs.health.checks[0].kind, CheckKind::Udp(expected));
            }),
            (
                "udp_check hex payload",
                &["udp_check = { payload = '0x0a0B', require_reply = true }"],
                |rs| {
                    let expected = UdpCheck { payload: vec![0x0a, 0x0b], require_reply: true };
                    assert_eq!(rs.health.checks[0].kind, CheckKind::Udp(expected));
                },
            ),
            ("udp_check text payload", &["udp_check = { payload = \"ping\\n\" }"], |rs| {
                let expected = UdpCheck { payload: b"ping\n".to_vec(), require_reply: false };
                assert_eq!(rs.health.checks[0].kind, CheckKind::Udp(expected));
            }),
        ];
        for (name, extra, check) in cases {
            let config = parse_ok(&[REAL, extra].concat());
            assert_eq!(config.virtual_servers[0].real_servers.len(), 1, "{name}");
            check(&config.virtual_servers[0].real_servers[0]);
        }
    }

    #[test]
    fn real_servers_take_the_virtual_servers_inhibit_on_failure_unless_their_own() {
        let lines = [
            VS,
            &[
                "inhibit_on_failure = true",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.12'",
                "inhibit_on_failure = false",
            ],
        ]
        .concat();
        let config = parse_ok(&lines);
        let inhibit: Vec<bool> = config.virtual_servers[0]
            .real_servers
            .iter()
            .map(|rs| rs.health.inhibit_on_failure)
            .collect();
        assert_eq!(inhibit, [true, false]);
    }

    #[test]
    fn udp_payloads() {
        let cases: &[(&str, &[u8])] = &[
            ("", b""),
            ("0x00ff", &[0, 255]),
            ("0xDEADbeef", &[0xde, 0xad, 0xbe, 0xef]),
            // Not hex: sent as written.
            ("0x", b"0x"),
            ("0xabc", b"0xabc"),
            ("0xzz", b"0xzz"),
            ("0X0a", b"0X0a"),
            ("00ff", b"00ff"),
            ("é", "é".as_bytes()),
        ];
        for &(text, bytes) in cases {
            assert_eq!(udp_payload(text), bytes, "{text:?}");
        }
    }

    /// The section key lists of the parent name every key read here.
    #[test]
    fn sections_know_the_health_keys() {
        let service_keys = super::super::virtual_server::VIRTUAL_SERVER_SECTION.keys();
        for key in SERVICE_HEALTH.iter().map(|s| s.name) {
            assert!(service_keys.contains(&key), "{key}");
        }
        let real_keys = super::super::real_server::REAL_SERVER_SECTION.keys();
        let health_keys = REAL_HEALTH.iter().map(|s| s.name);
        for key in health_keys.chain(CHECKERS.iter().map(|(kind, _)| *kind)) {
            assert!(real_keys.contains(&key), "{key}");
        }
    }

    /// Every key read here has its row in the health tables of docs/config.md: the service's and
    /// the real's in theirs, a checker's in "Keys of every checker" or in its own kind's rows of
    /// "Keys of one kind of checker" (a `url` table's as `url` → `path`).
    #[test]
    fn docs_list_every_health_key() {
        use super::super::schema::docs::{assert_documented, names, table};
        let doc = super::super::schema::docs::config_md();
        assert_documented(&doc, "In `[[virtual_server]]`", SERVICE_HEALTH.iter().map(|s| s.name));
        let real = REAL_HEALTH.iter().map(|s| s.name).chain(CHECKERS.iter().map(|(k, _)| *k));
        assert_documented(&doc, "In `[[virtual_server.real_server]]`", real);
        let every = super::super::schema::docs::keys(&doc, "Keys of every checker", 0);
        // (kinds, key cell) of "Keys of one kind of checker": an empty kind cell is the row above's.
        let mut kinds = String::new();
        let mut by_kind = Vec::new();
        for row in table(&doc, "Keys of one kind of checker") {
            if !row[0].is_empty() {
                kinds.clone_from(&row[0]);
            }
            by_kind.push((kinds.clone(), row[1].clone()));
        }
        let documented = |kind: &str, key: &str| {
            every.iter().any(|k| k == key)
                || by_kind
                    .iter()
                    .any(|(kinds, cell)| names(kinds).contains(&kind) && names(cell).contains(&key))
        };
        for (kind, section) in CHECKERS {
            for key in section.keys() {
                assert!(documented(kind, key), "{kind}'s `{key}` is not in docs/config.md");
            }
        }
        for key in URL_SECTION.keys() {
            let row = by_kind.iter().find(|(kinds, cell)| {
                names(kinds).contains(&"http_get") && names(cell) == ["url", key]
            });
            assert!(row.is_some(), "`url` → `{key}` is not in docs/config.md");
        }
    }

    #[test]
    fn checker_keys_per_kind() {
        assert_eq!(
            checker_keys("misc_check"),
            [
                "retry",
                "nb_get_retry",
                "delay_before_retry",
                "warmup",
                "rise",
                "misc_path",
                "misc_timeout",
                "misc_dynamic"
            ]
        );
        assert_eq!(checker_keys("ping_check"), [CONNECTION_KEYS, COMMON_KEYS].concat());
        assert_eq!(
            checker_keys("tcp_check"),
            [CONNECTION_KEYS, COMMON_KEYS, &["through_vip"]].concat()
        );
        for kind in ["http_get", "ssl_get", "dns_check", "udp_check"] {
            assert!(checker_keys(kind).contains(&"through_vip"), "{kind}");
        }
        assert!(
            checker_keys("ssl_get").contains(&"url") && checker_keys("ssl_get").contains(&"sni")
        );
        assert!(!checker_keys("http_get").contains(&"sni"));
    }

    /// The example of the issue that asked for health checks: must parse as-is, into this model.
    #[test]
    fn contract_example_parses_into_the_model() {
        let text = r#"[[virtual_server]]
vip = "192.0.2.100"
port = 80
protocol = "tcp"
interface = "eth0"
delay_loop = 1

[[virtual_server.real_server]]
address = "192.0.2.11"
port = 80
[virtual_server.real_server.tcp_check]
connect_timeout = 1
retry = 1
delay_before_retry = 1

[[virtual_server.real_server]]
address = "192.0.2.12"
port = 80
[virtual_server.real_server.http_get]
connect_timeout = 1
url = [{ path = "/", status_code = 200 }]
"#;
        let at = Location::new;
        let real = |address: &str, line: u32, check: HealthCheck, checked: Spans| RealServer {
            health: RealHealth { checks: vec![check], ..RealHealth::default() },
            key_locations: Spans::at_section(at(line, 1))
                .with("address", at(line + 1, 11))
                .with("port", at(line + 2, 8)),
            check_locations: vec![checked],
            ..crate::fixture::real_server(address, 80, at(line, 1))
        };
        let tcp = HealthCheck {
            connect_timeout: Duration::from_secs(1),
            retry: 1,
            delay_before_retry: Duration::from_secs(1),
            ..default_check(CheckKind::Tcp, 11, 1)
        };
        let http = HealthCheck {
            connect_timeout: Duration::from_secs(1),
            ..default_check(
                CheckKind::Http(HttpCheck {
                    urls: vec![UrlCheck {
                        path: "/".to_owned(),
                        status_code: Some(200),
                        digest: None,
                    }],
                    virtualhost: None,
                    sni: None,
                }),
                19,
                1,
            )
        };
        let expected = Config {
            virtual_servers: vec![VirtualServer {
                vip: "192.0.2.100".parse().unwrap(),
                port: 80,
                persistence_prefix: 32,
                real_servers: vec![
                    real(
                        "192.0.2.11",
                        8,
                        tcp,
                        Spans::at_section(at(11, 1)).with("retry", at(13, 9)),
                    ),
                    real("192.0.2.12", 16, http, Spans::at_section(at(19, 1))),
                ],
                health: ServiceHealth {
                    delay_loop: Duration::from_secs(1),
                    ..ServiceHealth::default()
                },
                location: at(1, 1),
                key_locations: Spans::at_section(at(1, 1))
                    .with("vip", at(2, 7))
                    .with("port", at(3, 8))
                    .with("protocol", at(4, 12))
                    .with("interface", at(5, 13))
                    .with("delay_loop", at(6, 14)),
                ..crate::fixture::virtual_server("192.0.2.100", 80, at(1, 1))
            }],
            ..crate::fixture::config("test.toml", Vec::new())
        };
        let config = parse_toml(text, Path::new("test.toml"), &FakeHost).unwrap();
        assert_eq!(config, expected);
    }

    /// One checker of each kind on one real server, into exactly these checkers.
    #[test]
    fn one_checker_of_each_kind() {
        let text = r#"[[virtual_server]]
vip = "2001:db8::100"
port = 53
protocol = "udp"
interface = "eth0"
delay_loop = 10
alpha = true
quorum = 2
hysteresis = 1

[[virtual_server.real_server]]
address = "2001:db8::11"
weight = 2
notify_down = "/usr/local/bin/page-oncall dns1"

[virtual_server.real_server.tcp_check]
connect_port = 53
connect_ip = "2001:db8::111"

[virtual_server.real_server.http_get]
connect_port = 8080
url = [{ path = "/healthz", status_code = 200 }]

[virtual_server.real_server.ssl_get]
connect_port = 8443
virtualhost = "dns1.example.com"
enable_sni = true
url = [{ path = "/", digest = "9b3a0c85a887a256d6939da88aabd8cd" }]

[virtual_server.real_server.misc_check]
misc_path = "/usr/local/bin/check-dns dns1"
misc_dynamic = true

[virtual_server.real_server.dns_check]
name = "example.com"
type = "A"
retry = 2

[virtual_server.real_server.udp_check]
payload = "0x00"
require_reply = true
bindto = "2001:db8::1"

[virtual_server.real_server.ping_check]
connect_timeout = 0.5
rise = 2
"#;
        let config = parse_toml(text, Path::new("test.toml"), &FakeHost).unwrap();
        let vs = &config.virtual_servers[0];
        assert_eq!(
            vs.health,
            ServiceHealth {
                delay_loop: Duration::from_secs(10),
                alpha: true,
                quorum: 2,
                hysteresis: 1,
                ..ServiceHealth::default()
            }
        );
        let rs = &vs.real_servers[0];
        assert_eq!(rs.health.notify_down.as_deref(), Some("/usr/local/bin/page-oncall dns1"));
        let http = |urls: Vec<UrlCheck>, virtualhost: Option<&str>, sni: Option<&str>| HttpCheck {
            urls,
            virtualhost: virtualhost.map(str::to_owned),
            sni: sni.map(str::to_owned),
        };
        let expected = vec![
            HealthCheck {
                connect_port: Some(53),
                connect_ip: Some("2001:db8::111".parse().unwrap()),
                ..default_check(CheckKind::Tcp, 16, 1)
            },
            HealthCheck {
                connect_port: Some(8080),
                ..default_check(
                    CheckKind::Http(http(
                        vec![UrlCheck { status_code: Some(200), ..url("/healthz") }],
                        None,
                        None,
                    )),
                    20,
                    1,
                )
            },
            HealthCheck {
                connect_port: Some(8443),
                ..default_check(
                    CheckKind::Ssl(http(
                        vec![UrlCheck {
                            digest: Some("9b3a0c85a887a256d6939da88aabd8cd".to_owned()),
                            ..url("/")
                        }],
                        Some("dns1.example.com"),
                        Some("dns1.example.com"),
                    )),
                    24,
                    1,
                )
            },
            default_check(
                CheckKind::Misc(MiscCheck {
                    path: "/usr/local/bin/check-dns dns1".to_owned(),
                    timeout: DEFAULT_MISC_TIMEOUT,
                    dynamic: true,
                }),
                30,
                1,
            ),
            HealthCheck {
                retry: 2,
                ..default_check(
                    CheckKind::Dns(DnsCheck {
                        name: "example.com".to_owned(),
                        qtype: "A".to_owned(),
                    }),
                    34,
                    1,
                )
            },
            HealthCheck {
                bindto: Some("2001:db8::1".parse().unwrap()),
                ..default_check(
                    CheckKind::Udp(UdpCheck { payload: vec![0], require_reply: true }),
                    39,
                    1,
                )
            },
            HealthCheck {
                connect_timeout: Duration::from_millis(500),
                rise: 2,
                ..default_check(CheckKind::Ping, 44, 1)
            },
        ];
        assert_eq!(rs.health.checks, expected);
        let located: Vec<Spans> = rs.check_locations.clone();
        assert_eq!(located.len(), 7);
        assert_eq!(located[0].located("connect_ip"), Location::new(18, 14));
        assert_eq!(located[4].located("retry"), Location::new(37, 9));
        assert_eq!(located[5].located("bindto"), Location::new(42, 10));
    }

    /// Every error in checkers is reported, and a real with one is left out of the model.
    #[test]
    fn all_checker_errors_are_reported_and_the_real_left_out() {
        let text = doc(&[
            REAL,
            &[
                "[virtual_server.real_server.tcp_check]",
                "connect_port = 0",
                "retry = -1",
                "[virtual_server.real_server.http_get]",
                "url = [{ path = 'x' }, { path = '/', status_code = 0 }]",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.12'",
                "ping_check = {}",
            ],
        ]
        .concat());
        let (config, errors) = super::super::parse(&text, Path::new("test.toml"));
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "test.toml:8:16: `connect_port` must be between 1 and 65535, found 0",
                "test.toml:9:9: `retry` must be between 0 and 4294967295, found -1",
                "test.toml:11:17: `path` must start with \"/\", found \"x\"",
                "test.toml:11:52: `status_code` must be between 100 and 599, found 0",
            ]
        );
        let reals: Vec<String> =
            config.virtual_servers[0].real_servers.iter().map(ToString::to_string).collect();
        assert_eq!(reals, ["192.0.2.12:80"]);
    }
}
