//! The native front end: TOML text to [`Config`], reporting syntax, unknown-key, type and range
//! errors at the offending key or value.
//!
//! The document is parsed into `toml`'s spanned tree and walked by hand rather than through serde
//! derive: that is what lets us keep going after the first error, give every error its own exact
//! location and word messages in the operator's terms. Cross-field rules (duplicates, port
//! mismatch, host checks) are not here but in `validate`, shared with other front ends.
//!
//! Adding a key: in a section described in `schema` (`[dataplane]`: `dataplane::DATAPLANE`;
//! `[bgp]`, `[[bgp.neighbor]]`: `bgp::BGP_SECTION`, `bgp::NEIGHBOR_SECTION`;
//! `[[virtual_server]]`: `virtual_server::VIRTUAL_SERVER_SECTION`; real and sorry servers:
//! `real_server::REAL_SERVER_SECTION`, `real_server::SORRY_SERVER_SECTION`), one `Setting` in its
//! description; in the others, add it to the section's `*_KEYS` list and read it in the section's
//! function (they move to descriptions one by one).
//! The health-check settings (keepalived's checkers) are read in the `health` submodule, the
//! VRRP sections (`[[vrrp_instance]]`, `[[vrrp_script]]`, `[[vrrp_sync_group]]`) in `vrrp`, `[bgp]`
//! in `bgp`.

pub(in crate::config) mod bgp;
pub(in crate::config) mod dataplane;
pub(in crate::config) mod flow_sync;
mod forwarding;
pub(in crate::config) mod health;
pub(in crate::config) mod real_server;
pub(in crate::config) mod schema;
pub(in crate::config) mod virtual_server;
pub(in crate::config) mod vrrp;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::time::Duration;

use ::toml::Spanned;
use ::toml::de::{DeInteger, DeString, DeTable, DeValue};

use super::error::{Diagnostic, LineIndex, did_you_mean};
use super::health::{RealHealth, ServiceHealth};
use super::model::{
    Config, DEFAULT_LB_ALGO, DEFAULT_WEIGHT, DataplaneSettings, Location, Protocol, RealForwarding,
    RealServer, ServiceForwarding, Spans, VirtualServer, host_prefix_len, unspecified,
};
use super::vrrp::VrrpConfig;
use crate::maglev;

const TOP_LEVEL_KEYS: &[&str] = &[
    "virtual_server",
    "dataplane",
    "vrrp_instance",
    "vrrp_script",
    "vrrp_sync_group",
    "bgp",
    "flow_sync",
    "script_user",
];
const DATAPLANE: &str = "[dataplane]";
use virtual_server::VIRTUAL_SERVER;

/// Syntax errors reported: a file repeating one mistake a million times needs its first ones
/// fixed, not a million lines.
const MAX_SYNTAX_ERRORS: usize = 1000;

/// Parses `text` into the model. Sections with errors are left out of the returned config, so
/// that validation can still run on the rest without reporting consequences of the same mistake.
/// When the text is not valid TOML, only the syntax errors are returned.
pub(crate) fn parse(text: &str, source: &Path) -> (Config, Vec<Diagnostic>) {
    let mut parser = Parser::new(text, source, 0);
    let mut config = empty_config(source);
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    if syntax_errors.is_empty() {
        parser.document(document.get_ref(), &mut config);
    } else {
        let total = syntax_errors.len();
        // Where the first error not reported is.
        let mut dropped = None;
        for (i, error) in syntax_errors.into_iter().enumerate() {
            let span = error.span().unwrap_or(0..0);
            if i >= MAX_SYNTAX_ERRORS {
                dropped.get_or_insert(span.start);
                continue;
            }
            let mut message = format!("TOML syntax error: {}", error.message());
            // The parser does not say which key; the operator needs it when keys are far apart.
            if let Some(key) = text.get(span.clone()).filter(|_| error.message() == "duplicate key")
            {
                message = format!("{message} `{key}`");
            }
            parser.error(span, message);
        }
        if let Some(offset) = dropped {
            let more = total - MAX_SYNTAX_ERRORS;
            parser.error_at(
                offset,
                format!(
                    "{more} more TOML syntax errors from here on are not reported (only the first \
                     {MAX_SYNTAX_ERRORS} are)"
                ),
            );
        }
    }
    (config, parser.errors)
}

fn empty_config(source: &Path) -> Config {
    Config {
        source: source.to_path_buf(),
        dataplane: DataplaneSettings::default(),
        virtual_servers: Vec::new(),
        vrrp: VrrpConfig::default(),
        vrrp_locations: Vec::new(),
        bgp: None,
        flow_sync: None,
        script_user: None,
    }
}

/// Which part of a file [`parse_part`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// Everything before the first `[[virtual_server]]` line: any section but those.
    Head,
    /// From a `[[virtual_server]]` line to the next: only `[[virtual_server]]` tables.
    Services,
}

/// Reads a part of a file alone: `text` starts at a line start, after `lines_before` lines of
/// the file, and the model's locations are the file's. `None` when the part has a syntax or model
/// error or holds other sections than `part` allows: the caller then reads the whole file, whose
/// diagnostics are the ones to report (see `super::incremental`).
pub(crate) fn parse_part(
    text: &str,
    source: &Path,
    lines_before: usize,
    part: Part,
) -> Option<Config> {
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        return None;
    }
    let root = document.get_ref();
    let services_only = root.keys().all(|key| key.get_ref().as_ref() == "virtual_server");
    let fits = match part {
        Part::Head => !root.contains_key("virtual_server"),
        Part::Services => root.contains_key("virtual_server") && services_only,
    };
    if !fits {
        return None;
    }
    let mut parser = Parser::new(text, source, lines_before);
    let mut config = empty_config(source);
    match part {
        Part::Head => parser.document(root, &mut config),
        Part::Services => config.virtual_servers = parser.virtual_servers(root),
    }
    parser.errors.is_empty().then_some(config)
}

type Key<'i> = Spanned<DeString<'i>>;
type Value<'i> = Spanned<DeValue<'i>>;

pub(in crate::config) struct Parser<'t> {
    source: &'t Path,
    lines: LineIndex<'t>,
    errors: Vec<Diagnostic>,
    /// The forwarding keys of the section being read, until its `finish` takes them.
    forwarding: forwarding::ForwardingDraft,
}

impl<'t> Parser<'t> {
    fn new(text: &'t str, source: &'t Path, lines_before: usize) -> Self {
        Parser {
            source,
            lines: LineIndex::after_lines(text, lines_before),
            errors: Vec::new(),
            forwarding: forwarding::ForwardingDraft::default(),
        }
    }

    /// Every `[[virtual_server]]` of `root` that reads without error.
    fn virtual_servers(&mut self, root: &DeTable<'_>) -> Vec<VirtualServer> {
        let Some((key, value)) = root.get_key_value("virtual_server") else {
            return Vec::new();
        };
        self.tables(key, value, VIRTUAL_SERVER)
            .into_iter()
            .filter_map(|(table, span)| self.virtual_server(table, span))
            .collect()
    }

    fn at(&self, span: Range<usize>) -> Location {
        self.lines.location(span.start)
    }

    fn error_at(&mut self, offset: usize, message: impl Into<String>) {
        let location = self.lines.location(offset);
        self.errors.push(Diagnostic::error(self.source, location, message));
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.error_at(span.start, message);
    }

    /// An error at a location already worked out (a value's place kept in its section's spans).
    fn error_located(&mut self, location: Location, message: impl Into<String>) {
        self.errors.push(Diagnostic::error(self.source, location, message));
    }

    /// Fills `config` (its defaults in place) from the document's tables.
    fn document(&mut self, root: &DeTable<'_>, config: &mut Config) {
        self.unknown_keys(root, TOP_LEVEL_KEYS, "at top level");
        if let Some((key, value)) = root.get_key_value("dataplane")
            && let Some((table, _)) = self.table(key, value, DATAPLANE)
        {
            config.dataplane = self.dataplane(table);
        }
        config.virtual_servers = self.virtual_servers(root);
        (config.vrrp, config.vrrp_locations) = self.vrrp(root);
        config.bgp = self.bgp(root);
        config.flow_sync = self.flow_sync(root);
        if let Some((key, value)) = root.get_key_value("script_user")
            && let Some(text) = self.string(key, value)
        {
            let (user, group) = match text.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (text, None),
            };
            match super::model::ScriptUserSetting::checked(user, group) {
                Ok(setting) => config.script_user = Some(setting),
                Err(message) => self.error(value.span(), message),
            }
        }
    }

    /// `[dataplane]`: every setting has a default (see [`dataplane::DATAPLANE`]).
    fn dataplane(&mut self, table: &DeTable<'_>) -> DataplaneSettings {
        let mut settings = DataplaneSettings::default();
        dataplane::DATAPLANE.read(self, table, &mut settings);
        settings
    }

    /// A `[[virtual_server]]` (see [`virtual_server::VIRTUAL_SERVER_SECTION`]).
    fn virtual_server(&mut self, table: &DeTable<'_>, span: Range<usize>) -> Option<VirtualServer> {
        let location = self.at(span);
        // A firewall-mark service without `ip_family` has its first real server's family (as
        // in keepalived), else IPv4's; any other service, its `vip`'s.
        let first_real = table
            .get("real_server")
            .and_then(|v| v.get_ref().as_array())
            .and_then(|reals| reals.first())
            .and_then(|real| real.get_ref().as_table())
            .and_then(|real| real.get("address"))
            .and_then(|address| address.get_ref().as_str())
            .and_then(|address| address.parse::<IpAddr>().ok());
        let ipv6 = table.contains_key("fwmark") && first_real.is_some_and(|a| a.is_ipv6());
        let mut vs = VirtualServer {
            vip: unspecified(ipv6),
            port: 0,
            protocol: Protocol::Tcp,
            fwmark: None,
            interface: String::new(),
            lb_algo: DEFAULT_LB_ALGO.to_owned(),
            table_size: maglev::DEFAULT_SIZE,
            persistence_timeout: None,
            // The VIP's host prefix unless written; set once the VIP is known.
            persistence_prefix: 0,
            real_servers: Vec::new(),
            sorry_server: None,
            health: ServiceHealth::default(),
            forwarding: ServiceForwarding::default(),
            location,
            key_locations: Spans::at_section(location),
        };
        virtual_server::VIRTUAL_SERVER_SECTION.read(self, table, &mut vs).then_some(vs)
    }

    /// A Maglev table size: only the primes the table builder is made for; a near miss (65536)
    /// is most likely meant as the nearest of them.
    fn table_size(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<u32> {
        let integer = self.integer_literal(key, value)?;
        // Beyond i64 is beyond every size: the nearest is the largest.
        let n = i128::from_str_radix(integer.as_str(), integer.radix()).unwrap_or(i128::MAX);
        if let Some(&size) = maglev::PRIMES.iter().find(|&&p| i128::from(p) == n) {
            return Some(size);
        }
        let nearest = maglev::PRIMES.iter().min_by_key(|&&p| (i128::from(p) - n).unsigned_abs());
        let allowed: Vec<String> = maglev::PRIMES.iter().map(u32::to_string).collect();
        let hint = nearest.map(|p| format!("; the nearest is {p}")).unwrap_or_default();
        let message = format!(
            "`{}` must be one of {} (primes, as Maglev needs), found {integer}{hint}",
            key.get_ref(),
            allowed.join(", ")
        );
        self.error(value.span(), message);
        None
    }

    /// keepalived's `persistence_granularity` as a prefix length: a dotted netmask (IPv4 only,
    /// since keepalived writes it so) or the prefix length itself. `vip` is `None` when it was
    /// invalid: the value is then still checked as far as it can be. That a prefix fits the VIP's
    /// family is validation's rule; only the dotted form is checked here, as only here is it seen.
    fn persistence_granularity(
        &mut self,
        key: &Key<'_>,
        value: &Value<'_>,
        vip: Option<IpAddr>,
    ) -> Option<u8> {
        let text = match value.get_ref() {
            // Up to the longest prefix of any family; whether it fits the VIP's is validation's.
            DeValue::Integer(_) => {
                let longest = host_prefix_len(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
                return self
                    .integer(key, value, 0, longest.into())
                    .and_then(|n| u8::try_from(n).ok());
            }
            DeValue::String(text) => text,
            other => {
                let message = format!(
                    "`{}` must be a netmask string or a prefix length, found {}",
                    key.get_ref(),
                    describe(other)
                );
                self.error(value.span(), message);
                return None;
            }
        };
        let message = if vip.is_some_and(|vip| vip.is_ipv6()) {
            format!(
                "`{}` of an IPv6 virtual server must be a prefix length (0 to 128), found string \
                 \"{}\"",
                key.get_ref(),
                text.escape_debug()
            )
        } else {
            match text.parse::<Ipv4Addr>() {
                Ok(mask) => match netmask_prefix(mask) {
                    Some(prefix) => return Some(prefix),
                    None => format!(
                        "`{}` netmask {mask} is not contiguous: it must be ones then zeros, like \
                         255.255.255.0",
                        key.get_ref()
                    ),
                },
                Err(_) => format!(
                    "`{}` must be a netmask like \"255.255.255.0\" or a prefix length, found \
                     string \"{}\"",
                    key.get_ref(),
                    text.escape_debug()
                ),
            }
        };
        self.error(value.span(), message);
        None
    }

    /// The one of two keys that set the same thing that was given, if any; `None` after reporting
    /// both given, at the later one: "`b` and `a` {conflict}".
    fn either<'a, 'i>(
        &mut self,
        table: &'a DeTable<'i>,
        names: [&str; 2],
        conflict: &str,
    ) -> Option<Option<(&'a Key<'i>, &'a Value<'i>)>> {
        match (table.get_key_value(names[0]), table.get_key_value(names[1])) {
            (None, None) => Some(None),
            (Some(one), None) | (None, Some(one)) => Some(Some(one)),
            (Some(a), Some(b)) => {
                let (first, second) =
                    if a.0.span().start < b.0.span().start { (a, b) } else { (b, a) };
                let message =
                    format!("`{}` and `{}` {conflict}", second.0.get_ref(), first.0.get_ref());
                self.error(second.0.span(), message);
                None
            }
        }
    }

    /// A real server, or a sorry server, which then gets the default weight and no checks.
    /// `virtual_port` is the virtual server's port, used as the default; `None` when it was itself
    /// invalid, in which case this server is still checked but not built.
    fn real_server(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
        virtual_port: Option<u16>,
        backend: Backend,
    ) -> Option<RealServer> {
        let location = self.at(span);
        let inhibit_on_failure = match backend {
            Backend::Real { inhibit_on_failure } => inhibit_on_failure,
            Backend::Sorry => false,
        };
        let mut server = RealServer {
            // `address` is required: a server without a valid one is left out.
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: virtual_port.unwrap_or_default(),
            weight: DEFAULT_WEIGHT,
            health: RealHealth { inhibit_on_failure, ..RealHealth::default() },
            forwarding: RealForwarding::default(),
            location,
            key_locations: Spans::at_section(location),
            check_locations: Vec::new(),
        };
        let section = match backend {
            Backend::Real { .. } => &real_server::REAL_SERVER_SECTION,
            Backend::Sorry => &real_server::SORRY_SERVER_SECTION,
        };
        let keep = section.read(self, table, &mut server);
        // Without its own port, it has the service's, which must then be valid.
        let port = virtual_port.is_some() || server.key_locations.get("port").is_some();
        (keep && port).then_some(server)
    }

    /// Reports every key of `table` not in `known`, suggesting the closest known one — or the top
    /// level for `dataplane`, which TOML puts in the table above it when written inline after a
    /// `[[virtual_server]]` (an easy slip).
    fn unknown_keys(&mut self, table: &DeTable<'_>, known: &[&str], context: &str) {
        self.unknown_keys_with(table, known, context, |_| None);
    }

    /// [`Self::unknown_keys`], with `misplaced` giving the whole message for a key that is known,
    /// but belongs elsewhere (`delay_loop` in a real server).
    fn unknown_keys_with(
        &mut self,
        table: &DeTable<'_>,
        known: &[&str],
        context: &str,
        misplaced: impl Fn(&str) -> Option<String>,
    ) {
        for key in table.keys() {
            let name = key.get_ref();
            if known.contains(&name.as_ref()) {
                continue;
            }
            let message = misplaced(name).unwrap_or_else(|| {
                let mut hint = did_you_mean(name, known);
                if hint.is_empty() && name == "dataplane" {
                    hint = format!(
                        "; `{name}` belongs at top level: write [{name}], or `{name} = {{ ... }}` \
                         before the first table"
                    );
                }
                format!("unknown key `{name}` {context}{hint}")
            });
            self.error(key.span(), message);
        }
    }

    fn missing(&mut self, section_at: Location, name: &str, section: &str) {
        let message = format!("missing required key `{name}` in {section}");
        self.errors.push(Diagnostic::error(self.source, section_at, message));
    }

    /// The tables of an array of tables (`[[name]]`, or an inline array of inline tables), with
    /// the span each starts at.
    fn tables<'a, 'i>(
        &mut self,
        key: &Key<'_>,
        value: &'a Value<'i>,
        header: &str,
    ) -> Vec<(&'a DeTable<'i>, Range<usize>)> {
        let DeValue::Array(items) = value.get_ref() else {
            self.error(
                value.span(),
                format!(
                    "`{}` must be an array of tables: write {header} once per entry",
                    key.get_ref()
                ),
            );
            return Vec::new();
        };
        let mut tables = Vec::with_capacity(items.len());
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(table) => tables.push((table, item.span())),
                other => self.error(
                    item.span(),
                    format!(
                        "each `{}` entry must be a table, found {}",
                        key.get_ref(),
                        describe(other)
                    ),
                ),
            }
        }
        tables
    }

    /// A single table (`[name]`, or an inline table) with the span it starts at.
    fn table<'a, 'i>(
        &mut self,
        key: &Key<'_>,
        value: &'a Value<'i>,
        header: &str,
    ) -> Option<(&'a DeTable<'i>, Range<usize>)> {
        match value.get_ref() {
            DeValue::Table(table) => Some((table, value.span())),
            other => {
                let message = format!(
                    "`{}` must be a single table: write {header} once, or `{} = {{ ... }}`; found {}",
                    key.get_ref(),
                    key.get_ref(),
                    describe(other)
                );
                self.error(value.span(), message);
                None
            }
        }
    }

    fn string<'a>(&mut self, key: &Key<'_>, value: &'a Value<'_>) -> Option<&'a str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            other => {
                let message =
                    format!("`{}` must be a string, found {}", key.get_ref(), describe(other));
                self.error(value.span(), message);
                None
            }
        }
    }

    fn ip_address(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<IpAddr> {
        let text = self.string(key, value)?;
        match text.parse() {
            Ok(address) => Some(address),
            Err(_) => {
                let message = format!(
                    "`{}` must be an IP address, found \"{}\"",
                    key.get_ref(),
                    text.escape_debug()
                );
                self.error(value.span(), message);
                None
            }
        }
    }

    /// 0 is valid everywhere: an all-ports virtual server, whose reals then have port 0 too (any
    /// other mismatch is validation's to report).
    fn port(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<u16> {
        self.integer(key, value, 0, u16::MAX.into()).and_then(|p| u16::try_from(p).ok())
    }

    fn boolean(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                let message =
                    format!("`{}` must be true or false, found {}", key.get_ref(), describe(other));
                self.error(value.span(), message);
                None
            }
        }
    }

    /// A duration in seconds within `limits`: an integer, or a float for fractions (`0.5`).
    fn seconds(
        &mut self,
        key: &Key<'_>,
        value: &Value<'_>,
        limits: RangeInclusive<u32>,
    ) -> Option<Duration> {
        self.seconds_from(key, value, (*limits.start(), true), *limits.end())
    }

    /// A duration in seconds, more than 0 and at most `max`.
    fn positive_seconds(&mut self, key: &Key<'_>, value: &Value<'_>, max: u32) -> Option<Duration> {
        self.seconds_from(key, value, (0, false), max)
    }

    /// A duration in seconds from `min` (included or not) to `max`.
    fn seconds_from(
        &mut self,
        key: &Key<'_>,
        value: &Value<'_>,
        (min, min_included): (u32, bool),
        max: u32,
    ) -> Option<Duration> {
        let above_min =
            |s: f64| if min_included { s >= f64::from(min) } else { s > f64::from(min) };
        let duration = match value.get_ref() {
            DeValue::Integer(integer) => i64::from_str_radix(integer.as_str(), integer.radix())
                .ok()
                .filter(|&n| {
                    let min = i64::from(min) + i64::from(!min_included);
                    (min..=i64::from(max)).contains(&n)
                })
                .and_then(|n| u64::try_from(n).ok())
                .map(Duration::from_secs),
            DeValue::Float(float) => float
                .as_str()
                .parse::<f64>()
                .ok()
                // Also keeps out NaN, which no range contains.
                .filter(|&s| above_min(s) && s <= f64::from(max))
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                // Too small to be told from 0.
                .filter(|d| min_included || !d.is_zero()),
            other => {
                let message = format!(
                    "`{}` must be a number of seconds, found {}",
                    key.get_ref(),
                    describe(other)
                );
                self.error(value.span(), message);
                return None;
            }
        };
        if duration.is_none() {
            let found = match value.get_ref() {
                DeValue::Integer(integer) => integer.to_string(),
                DeValue::Float(float) => float.to_string(),
                other => describe(other),
            };
            let range = if min_included {
                format!("between {min} and {max}")
            } else {
                format!("more than {min} and at most {max}")
            };
            let message = format!("`{}` must be {range} seconds, found {found}", key.get_ref());
            self.error(value.span(), message);
        }
        duration
    }

    /// An integer within `limits`, for settings the dataplane keeps as `u32`.
    fn integer_in(
        &mut self,
        key: &Key<'_>,
        value: &Value<'_>,
        limits: RangeInclusive<u32>,
    ) -> Option<u32> {
        self.integer(key, value, (*limits.start()).into(), (*limits.end()).into())
            .and_then(|n| u32::try_from(n).ok())
    }

    /// The integer literal of `value`, or an error saying it is not one.
    fn integer_literal<'a>(
        &mut self,
        key: &Key<'_>,
        value: &'a Value<'_>,
    ) -> Option<&'a DeInteger<'a>> {
        match value.get_ref() {
            DeValue::Integer(integer) => Some(integer),
            other => {
                let message =
                    format!("`{}` must be an integer, found {}", key.get_ref(), describe(other));
                self.error(value.span(), message);
                None
            }
        }
    }

    /// An integer within `min..=max`.
    fn integer(&mut self, key: &Key<'_>, value: &Value<'_>, min: i64, max: i64) -> Option<i64> {
        let integer = self.integer_literal(key, value)?;
        match i64::from_str_radix(integer.as_str(), integer.radix()) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let message =
                    format!("`{}` must be between {min} and {max}, found {integer}", key.get_ref());
                self.error(value.span(), message);
                None
            }
        }
    }
}

/// Which kind of backend [`Parser::real_server`] reads.
#[derive(Debug, Clone, Copy)]
enum Backend {
    /// `inhibit_on_failure` is the virtual server's, the default of its reals.
    Real { inhibit_on_failure: bool },
    /// Never checked, so it takes no health settings, and no weight.
    Sorry,
}

/// The prefix length of a contiguous netmask (`255.255.255.0` → 24); `None` when its ones and
/// zeros are mixed, which no client grouping can mean.
fn netmask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let prefix = bits.leading_ones();
    // Shifting the ones out must leave nothing; a shift by 32 overflows and means "all ones".
    (bits.checked_shl(prefix).unwrap_or(0) == 0).then(|| u8::try_from(prefix).ok()).flatten()
}

/// A value as an operator would recognise it in a "found ..." message.
fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("string \"{}\"", s.escape_debug()),
        DeValue::Integer(i) => format!("integer {i}"),
        DeValue::Float(f) => format!("float {f}"),
        DeValue::Boolean(b) => format!("boolean {b}"),
        DeValue::Datetime(d) => format!("datetime {d}"),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_toml;
    use super::super::test_support::{
        FakeHost, Scenario, assert_single_error, assert_toml_scenarios, doc,
    };
    use super::*;
    use crate::config::model::BackupXdp;

    /// (name, document, expected message part, expected line:col). Each must be the only error.
    const SCENARIOS: &[(&str, &[&str], &str, &str)] = &[
        (
            "unquoted string (keepalived.conf habit)",
            &["[[virtual_server]]", "vip = '192.0.2.100'", "port = 80", "interface = eth0"],
            "TOML syntax error: string values must be quoted",
            "4:13",
        ),
        (
            "unclosed header",
            &["[[virtual_server]", "vip = '192.0.2.100'"],
            "TOML syntax error: unclosed array table, expected `]`",
            "1:18",
        ),
        (
            "duplicate key",
            &["[[virtual_server]]", "vip = '192.0.2.100'", "port = 80", "port = 81"],
            "TOML syntax error: duplicate key `port`",
            "4:1",
        ),
        (
            "unknown top-level key",
            &["virtual_servers = []"],
            "unknown key `virtual_servers` at top level; did you mean `virtual_server`?",
            "1:1",
        ),
        (
            "unknown virtual server key without a close match",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "  ha_suspend = true",
            ],
            "unknown key `ha_suspend` in [[virtual_server]]",
            "5:3",
        ),
        (
            "misspelled virtual server key",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "protcol = 'udp'",
                "interface = 'eth0'",
            ],
            "unknown key `protcol` in [[virtual_server]]; did you mean `protocol`?",
            "4:1",
        ),
        (
            "misspelled real server key",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "weigth = 1",
            ],
            "unknown key `weigth` in [[virtual_server.real_server]]; did you mean `weight`?",
            "7:1",
        ),
        (
            "misspelled section",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "[[virtual_server.realserver]]",
            ],
            "unknown key `realserver` in [[virtual_server]]; did you mean `real_server`?",
            "5:18",
        ),
        (
            "quoted port",
            &["[[virtual_server]]", "vip = '192.0.2.100'", "port = \"80\"", "interface = 'eth0'"],
            "`port` must be an integer, found string \"80\"",
            "3:8",
        ),
        (
            "negative port",
            &["[[virtual_server]]", "vip = '192.0.2.100'", "port = -1", "interface = 'eth0'"],
            "`port` must be between 0 and 65535, found -1",
            "3:8",
        ),
        (
            "port too large",
            &["[[virtual_server]]", "vip = '192.0.2.100'", "port = 70000", "interface = 'eth0'"],
            "`port` must be between 0 and 65535, found 70000",
            "3:8",
        ),
        (
            "negative weight",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "weight = -1",
            ],
            "`weight` must be between 0 and 65535, found -1",
            "7:10",
        ),
        (
            "weight too large",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "weight = 70000",
            ],
            "`weight` must be between 0 and 65535, found 70000",
            "7:10",
        ),
        (
            "fractional weight",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "weight = 1.5",
            ],
            "`weight` must be an integer, found float 1.5",
            "7:10",
        ),
        (
            "missing vip",
            &["", "[[virtual_server]]", "port = 80", "interface = 'eth0'"],
            "missing required key `vip` in [[virtual_server]]",
            "2:1",
        ),
        (
            "missing port",
            &["[[virtual_server]]", "vip = '192.0.2.100'", "interface = 'eth0'"],
            "missing required key `port` in [[virtual_server]]",
            "1:1",
        ),
        (
            "missing interface",
            &["[[virtual_server]]", "vip = '192.0.2.100'", "port = 80"],
            "missing required key `interface` in [[virtual_server]]",
            "1:1",
        ),
        (
            "missing real server address",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "  [[virtual_server.real_server]]",
                "  weight = 3",
            ],
            "missing required key `address` in [[virtual_server.real_server]]",
            "5:3",
        ),
        (
            "vip out of range",
            &["[[virtual_server]]", "vip = '192.0.2.300'", "port = 80", "interface = 'eth0'"],
            "`vip` must be an IP address, found \"192.0.2.300\"",
            "2:7",
        ),
        (
            "vip is a host name",
            &["[[virtual_server]]", "vip = 'example.com'", "port = 80", "interface = 'eth0'"],
            "`vip` must be an IP address, found \"example.com\"",
            "2:7",
        ),
        (
            "real server address is a host name",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "[[virtual_server.real_server]]",
                "address = 'web1.example.com'",
            ],
            "`address` must be an IP address, found \"web1.example.com\"",
            "6:11",
        ),
        (
            "unknown protocol",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "protocol = 'sctp'",
                "interface = 'eth0'",
            ],
            "unknown protocol \"sctp\", expected \"tcp\" or \"udp\"",
            "4:12",
        ),
        (
            "protocol number",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "protocol = 6",
                "interface = 'eth0'",
            ],
            "`protocol` must be a string, found integer 6",
            "4:12",
        ),
        (
            "both scheduler spellings",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "lvs_sched = 'rr'",
                "interface = 'eth0'",
                "lb_algo = 'rr'",
            ],
            "`lb_algo` and `lvs_sched` are the same setting (keepalived spells it both ways); keep only one",
            "6:1",
        ),
        // Neither spelling is read when both are given.
        (
            "both scheduler spellings, one not a string",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "lb_algo = 1",
                "interface = 'eth0'",
                "lvs_sched = 'rr'",
            ],
            "`lvs_sched` and `lb_algo` are the same setting",
            "6:1",
        ),
        (
            "virtual_server as a plain table",
            &["[virtual_server]", "vip = '192.0.2.100'"],
            "`virtual_server` must be an array of tables: write [[virtual_server]] once per entry",
            "1:1",
        ),
        (
            "real_server as a plain table",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "[virtual_server.real_server]",
                "address = '192.0.2.11'",
            ],
            "`real_server` must be an array of tables: write [[virtual_server.real_server]] once per entry",
            "5:1",
        ),
        (
            "array element not a table",
            &["virtual_server = [1]"],
            "each `virtual_server` entry must be a table, found integer 1",
            "1:19",
        ),
        (
            "fwmark with a vip",
            &["[[virtual_server]]", "fwmark = 1", "vip = '192.0.2.100'"],
            "`vip` does not go with `fwmark`: a firewall-mark service takes the packets netfilter \
             marked, whatever their address and port",
            "3:7",
        ),
        (
            "fwmark 0",
            &["[[virtual_server]]", "fwmark = 0"],
            "`fwmark` must be between 1 and 4294967295, found 0",
            "2:10",
        ),
        (
            "ip_family without fwmark",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "ip_family = 'inet'",
            ],
            "`ip_family` is for firewall-mark services (`fwmark`); a virtual server with a `vip` \
             has the vip's family",
            "5:13",
        ),
        (
            "unknown ip_family",
            &["[[virtual_server]]", "fwmark = 1", "ip_family = 'ipv6'"],
            "`ip_family` is \"inet\" or \"inet6\", found \"ipv6\"",
            "3:13",
        ),
        // A key that does not go with another is not read as well: one error each.
        (
            "fwmark with a vip that is no address",
            &["[[virtual_server]]", "fwmark = 1", "vip = 'web'", "interface = 'eth0'"],
            "`vip` does not go with `fwmark`",
            "3:7",
        ),
        (
            "unknown ip_family without fwmark",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "ip_family = 'ipv6'",
            ],
            "`ip_family` is for firewall-mark services (`fwmark`)",
            "5:13",
        ),
        // The family of a firewall-mark service without `ip_family` is its first real's.
        (
            "netmask granularity of a firewall-mark service of IPv6 reals",
            &[
                "[[virtual_server]]",
                "fwmark = 1",
                "persistence_timeout = 60",
                "persistence_granularity = '255.255.255.0'",
                "[[virtual_server.real_server]]",
                "address = '2001:db8::11'",
            ],
            "`persistence_granularity` of an IPv6 virtual server must be a prefix length",
            "4:27",
        ),
        (
            "lvs_sched not a string",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "lvs_sched = 1",
            ],
            "`lvs_sched` must be a string, found integer 1",
            "5:13",
        ),
    ];

    /// Where the values that stand for others are located: a firewall-mark service's address at
    /// its `fwmark` (even beside a wrongly written `vip`), the scheduler at `lvs_sched`.
    #[test]
    fn cross_key_locations() {
        let text =
            doc(&["[[virtual_server]]", "vip = '192.0.2.100'", "fwmark = 7", "lvs_sched = 'wrr'"]);
        let (config, errors) = super::parse(&text, Path::new("t.toml"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        let vs = &config.virtual_servers[0];
        assert_eq!((vs.fwmark, vs.lb_algo.as_str()), (Some(7), "wrr"));
        assert_eq!(vs.vip_at(), Location::new(3, 10));
        assert_eq!(vs.lb_algo_at(), Location::new(4, 13));
        assert_eq!(vs.persistence_prefix, 32);
    }

    /// keepalived's `virtual_server fwmark N`: no vip, port or interface; the family from
    /// `ip_family`, else the first real server; real ports kept (they are for the checks).
    #[test]
    fn firewall_mark_services() {
        let text = doc(&[
            "[[virtual_server]]",
            "fwmark = 1",
            "lb_algo = 'wlc'",
            "persistence_timeout = 600",
            "[[virtual_server.real_server]]",
            "address = '192.0.2.11'",
            "port = 443",
            "[[virtual_server]]",
            "fwmark = 1",
            "[[virtual_server.real_server]]",
            "address = '2001:db8::11'",
            "[[virtual_server]]",
            "fwmark = 2",
            "ip_family = 'inet6'",
            "interface = 'eth0'",
        ]);
        let config = parse_toml(&text, Path::new("test.toml"), &FakeHost).expect("valid");
        let shown: Vec<String> = config
            .virtual_servers
            .iter()
            .map(|vs| format!("{vs} vip {} port {} on {:?}", vs.vip, vs.port, vs.interface))
            .collect();
        assert_eq!(
            shown,
            [
                "fwmark 1 vip 0.0.0.0 port 0 on \"\"",
                "fwmark 1/inet6 vip :: port 0 on \"\"",
                "fwmark 2/inet6 vip :: port 0 on \"eth0\"",
            ]
        );
        let vs = &config.virtual_servers[0];
        assert_eq!(vs.fwmark, Some(1));
        assert_eq!(vs.vip_at(), Location::new(2, 10));
        assert_eq!(vs.real_servers[0].port, 443);
        assert_eq!(vs.persistence_prefix, 32);
        assert_eq!(config.virtual_servers[1].persistence_prefix, 128);
        // The same mark in the same family twice is one IPVS service.
        let twice = doc(&["[[virtual_server]]", "fwmark = 5", "[[virtual_server]]", "fwmark = 5"]);
        let errors = parse_toml(&twice, Path::new("test.toml"), &FakeHost).expect_err("duplicate");
        assert!(
            errors.to_string().contains("3:1: duplicate virtual server fwmark 5: already defined"),
            "{errors}"
        );
    }

    #[test]
    fn scenarios() {
        for &(name, lines, expected, at) in SCENARIOS {
            let result = parse_toml(&doc(lines), Path::new("test.toml"), &FakeHost);
            assert_single_error(name, result, expected, at);
        }
    }

    /// Base lines 1-4: a valid IPv4 virtual server on eth0.
    const VS: &[&str] =
        &["[[virtual_server]]", "vip = '192.0.2.100'", "port = 80", "interface = 'eth0'"];

    /// Base lines 1-4: a valid IPv6 virtual server on eth0.
    const VS6: &[&str] =
        &["[[virtual_server]]", "vip = '2001:db8::100'", "port = 80", "interface = 'eth0'"];

    /// The `[dataplane]` settings and the newer virtual server keys. Each must be the only error.
    const SETTING_SCENARIOS: &[Scenario] = &[
        (
            "misspelled dataplane table",
            VS,
            &["[data_plane]"],
            "unknown key `data_plane` at top level; did you mean `dataplane`?",
            "5:2",
        ),
        (
            "dataplane as an array of tables",
            VS,
            &["[[dataplane]]"],
            "`dataplane` must be a single table: write [dataplane] once, or `dataplane = { ... }`; \
             found an array",
            "5:1",
        ),
        (
            "dataplane as a value",
            &[],
            &["dataplane = true"],
            "`dataplane` must be a single table: write [dataplane] once, or `dataplane = { ... }`; \
             found boolean true",
            "1:13",
        ),
        (
            "misspelled dataplane key",
            VS,
            &["[dataplane]", "flow_table_sise = 2048"],
            "unknown key `flow_table_sise` in [dataplane]; did you mean `flow_table_size`?",
            "6:1",
        ),
        (
            "flow table too small",
            VS,
            &["[dataplane]", "flow_table_size = 512"],
            "`flow_table_size` must be between 1024 and 67108864, found 512",
            "6:19",
        ),
        (
            "flow table too large",
            VS,
            &["[dataplane]", "flow_table_size = 67108865"],
            "`flow_table_size` must be between 1024 and 67108864, found 67108865",
            "6:19",
        ),
        (
            "flow table size with a unit",
            VS,
            &["[dataplane]", "flow_table_size = '1M'"],
            "`flow_table_size` must be an integer, found string \"1M\"",
            "6:19",
        ),
        (
            "negative hash seed",
            VS,
            &["[dataplane]", "hash_seed = -1"],
            "`hash_seed` must be between 0 and 4294967295, found -1",
            "6:13",
        ),
        (
            "hash seed wider than 32 bits",
            VS,
            &["[dataplane]", "hash_seed = 0x1_0000_0000"],
            "`hash_seed` must be between 0 and 4294967295, found 0x100000000",
            "6:13",
        ),
        (
            "syn flood threshold wider than 32 bits",
            VS,
            &["[dataplane]", "syn_flood_threshold = 4294967296"],
            "`syn_flood_threshold` must be between 0 and 4294967295, found 4294967296",
            "6:23",
        ),
        (
            "udp flow timeout below a second",
            VS,
            &["[dataplane]", "udp_flow_timeout = 0.5"],
            "`udp_flow_timeout` must be between 1 and 86400 seconds, found 0.5",
            "6:20",
        ),
        (
            "udp flow timeout 0",
            VS,
            &["[dataplane]", "udp_flow_timeout = 0"],
            "`udp_flow_timeout` must be between 1 and 86400 seconds, found 0",
            "6:20",
        ),
        (
            "udp flow timeout over a day",
            VS,
            &["[dataplane]", "udp_flow_timeout = 86400.5"],
            "`udp_flow_timeout` must be between 1 and 86400 seconds, found 86400.5",
            "6:20",
        ),
        (
            "udp flow timeout nan",
            VS,
            &["[dataplane]", "udp_flow_timeout = nan"],
            "`udp_flow_timeout` must be between 1 and 86400 seconds, found nan",
            "6:20",
        ),
        (
            "udp flow timeout with a unit",
            VS,
            &["[dataplane]", "udp_flow_timeout = '30s'"],
            "`udp_flow_timeout` must be a number of seconds, found string \"30s\"",
            "6:20",
        ),
        (
            "tcp flow timeout 0",
            VS,
            &["[dataplane]", "tcp_flow_timeout = 0"],
            "`tcp_flow_timeout` must be between 1 and 86400 seconds, found 0",
            "6:20",
        ),
        (
            "icmp echo as a string",
            VS,
            &["[dataplane]", "icmp_echo = 'yes'"],
            "`icmp_echo` must be true or false, found string \"yes\"",
            "6:13",
        ),
        (
            "icmp echo as a number",
            &[],
            &["dataplane = { icmp_echo = 1 }"],
            "`icmp_echo` must be true or false, found integer 1",
            "1:27",
        ),
        (
            "inline dataplane table after a virtual server",
            VS,
            &["dataplane = { icmp_echo = false }"],
            "unknown key `dataplane` in [[virtual_server]]; `dataplane` belongs at top level: \
             write [dataplane], or `dataplane = { ... }` before the first table",
            "5:1",
        ),
        (
            "max services 0",
            VS,
            &["[dataplane]", "max_services = 0"],
            "`max_services` must be between 1 and 65536, found 0",
            "6:16",
        ),
        (
            "max reals too large",
            VS,
            &["[dataplane]", "max_reals = 1048577"],
            "`max_reals` must be between 1 and 1048576, found 1048577",
            "6:13",
        ),
        (
            "backup_xdp not a mode",
            VS,
            &["[dataplane]", "backup_xdp = 'keep'"],
            "`backup_xdp` must be \"detach\" or \"standby\", found \"keep\"",
            "6:14",
        ),
        (
            "table size not a prime offered",
            VS,
            &["table_size = 65536"],
            "`table_size` must be one of 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65537, \
             131071 (primes, as Maglev needs), found 65536; the nearest is 65537",
            "5:14",
        ),
        (
            "table size below the smallest",
            VS,
            &["table_size = 100"],
            "found 100; the nearest is 251",
            "5:14",
        ),
        (
            "table size between two",
            VS,
            &["table_size = 1000"],
            "found 1000; the nearest is 1021",
            "5:14",
        ),
        (
            "table size above the largest",
            VS,
            &["table_size = 0x7fff_ffff_ffff_ffff"],
            "found 0x7fffffffffffffff; the nearest is 131071",
            "5:14",
        ),
        ("negative table size", VS, &["table_size = -5"], "found -5; the nearest is 251", "5:14"),
        (
            "quoted table size",
            VS,
            &["table_size = '65537'"],
            "`table_size` must be an integer, found string \"65537\"",
            "5:14",
        ),
        (
            "misspelled table size",
            VS,
            &["table-size = 251"],
            "unknown key `table-size` in [[virtual_server]]; did you mean `table_size`?",
            "5:1",
        ),
        (
            "negative persistence timeout",
            VS,
            &["persistence_timeout = -1"],
            "`persistence_timeout` must be between 0 and 31536000 seconds, found -1",
            "5:23",
        ),
        (
            "negative fractional persistence timeout",
            VS,
            &["persistence_timeout = -0.5"],
            "`persistence_timeout` must be between 0 and 31536000 seconds, found -0.5",
            "5:23",
        ),
        (
            "persistence timeout over a year",
            VS,
            &["persistence_timeout = 31536001"],
            "`persistence_timeout` must be between 0 and 31536000 seconds, found 31536001",
            "5:23",
        ),
        (
            "infinite persistence timeout",
            VS,
            &["persistence_timeout = inf"],
            "`persistence_timeout` must be between 0 and 31536000 seconds, found inf",
            "5:23",
        ),
        (
            "persistence timeout with a unit",
            VS,
            &["persistence_timeout = '5m'"],
            "`persistence_timeout` must be a number of seconds, found string \"5m\"",
            "5:23",
        ),
        (
            "misspelled persistence timeout",
            VS,
            &["persistance_timeout = 300"],
            "unknown key `persistance_timeout` in [[virtual_server]]; did you mean \
             `persistence_timeout`?",
            "5:1",
        ),
        (
            "non-contiguous netmask",
            VS,
            &["persistence_timeout = 300", "persistence_granularity = '255.0.255.0'"],
            "`persistence_granularity` netmask 255.0.255.0 is not contiguous: it must be ones then \
             zeros, like 255.255.255.0",
            "6:27",
        ),
        (
            "netmask out of range",
            VS,
            &["persistence_timeout = 300", "persistence_granularity = '255.255.255.256'"],
            "`persistence_granularity` must be a netmask like \"255.255.255.0\" or a prefix \
             length, found string \"255.255.255.256\"",
            "6:27",
        ),
        (
            "prefix length as a string",
            VS,
            &["persistence_timeout = 300", "persistence_granularity = '/24'"],
            "`persistence_granularity` must be a netmask like \"255.255.255.0\" or a prefix \
             length, found string \"/24\"",
            "6:27",
        ),
        (
            "prefix length too long for any family",
            VS6,
            &["persistence_timeout = 300", "persistence_granularity = 129"],
            "`persistence_granularity` must be between 0 and 128, found 129",
            "6:27",
        ),
        (
            "negative prefix length",
            VS,
            &["persistence_timeout = 300", "persistence_granularity = -1"],
            "`persistence_granularity` must be between 0 and 128, found -1",
            "6:27",
        ),
        (
            "prefix length as a float",
            VS,
            &["persistence_timeout = 300", "persistence_granularity = 24.0"],
            "`persistence_granularity` must be a netmask string or a prefix length, found float \
             24.0",
            "6:27",
        ),
        (
            "dotted netmask on an IPv6 virtual server",
            VS6,
            &["persistence_timeout = 300", "persistence_granularity = '255.255.255.0'"],
            "`persistence_granularity` of an IPv6 virtual server must be a prefix length (0 to \
             128), found string \"255.255.255.0\"",
            "6:27",
        ),
        (
            "IPv6 mask on an IPv6 virtual server",
            VS6,
            &["persistence_timeout = 300", "persistence_granularity = 'ffff:ffff::'"],
            "`persistence_granularity` of an IPv6 virtual server must be a prefix length (0 to \
             128), found string \"ffff:ffff::\"",
            "6:27",
        ),
        (
            "sorry server as an address",
            VS,
            &["sorry_server = '192.0.2.200'"],
            "`sorry_server` must be a single table: write [virtual_server.sorry_server] once, or \
             `sorry_server = { ... }`; found string \"192.0.2.200\"",
            "5:16",
        ),
        (
            "sorry server as an array of tables",
            VS,
            &["[[virtual_server.sorry_server]]", "address = '192.0.2.200'"],
            "`sorry_server` must be a single table: write [virtual_server.sorry_server] once, or \
             `sorry_server = { ... }`; found an array",
            "5:1",
        ),
        (
            "sorry server with a weight",
            VS,
            &["sorry_server = { address = '192.0.2.200', weight = 1 }"],
            "unknown key `weight` in [virtual_server.sorry_server]",
            "5:43",
        ),
        (
            "misspelled sorry server key",
            VS,
            &["[virtual_server.sorry_server]", "address = '192.0.2.200'", "prot = 80"],
            "unknown key `prot` in [virtual_server.sorry_server]; did you mean `port`?",
            "7:1",
        ),
        (
            "sorry server without an address",
            VS,
            &["sorry_server = { port = 80 }"],
            "missing required key `address` in [virtual_server.sorry_server]",
            "5:16",
        ),
        (
            "sorry server address is a host name",
            VS,
            &["[virtual_server.sorry_server]", "address = 'sorry.example.com'"],
            "`address` must be an IP address, found \"sorry.example.com\"",
            "6:11",
        ),
        (
            "sorry server port too large",
            VS,
            &["sorry_server = { address = '192.0.2.200', port = 65536 }"],
            "`port` must be between 0 and 65535, found 65536",
            "5:50",
        ),
        (
            "misspelled sorry server",
            VS,
            &["sorry_sever = { address = '192.0.2.200' }"],
            "unknown key `sorry_sever` in [[virtual_server]]; did you mean `sorry_server`?",
            "5:1",
        ),
    ];

    #[test]
    fn setting_scenarios() {
        assert_toml_scenarios(SETTING_SCENARIOS);
    }

    fn parse_ok(text: &str) -> Config {
        let (config, errors) = parse(text, Path::new("test.toml"));
        assert!(errors.is_empty(), "unexpected errors: {errors:#?}");
        config
    }

    /// The contract file from the design: must keep parsing as-is, into exactly this model.
    #[test]
    fn contract_file_parses_into_the_model() {
        let text = r#"[[virtual_server]]
vip = "192.0.2.100"
port = 80
protocol = "tcp"
interface = "eth0"

[[virtual_server.real_server]]
address = "192.0.2.11"
port = 80
weight = 1

[[virtual_server.real_server]]
address = "192.0.2.12"
port = 80
weight = 2
"#;
        let real = |address: &str, line: u32, weight: u32| RealServer {
            weight,
            key_locations: Spans::at_section(Location::new(line, 1))
                .with("address", Location::new(line + 1, 11))
                .with("port", Location::new(line + 2, 8))
                .with("weight", Location::new(line + 3, 10)),
            ..crate::fixture::real_server(address, 80, Location::new(line, 1))
        };
        let expected = Config {
            virtual_servers: vec![VirtualServer {
                vip: "192.0.2.100".parse().unwrap(),
                port: 80,
                persistence_prefix: 32,
                real_servers: vec![real("192.0.2.11", 7, 1), real("192.0.2.12", 12, 2)],
                location: Location::new(1, 1),
                key_locations: Spans::at_section(Location::new(1, 1))
                    .with("vip", Location::new(2, 7))
                    .with("port", Location::new(3, 8))
                    .with("protocol", Location::new(4, 12))
                    .with("interface", Location::new(5, 13)),
                ..crate::fixture::virtual_server("192.0.2.100", 80, Location::new(1, 1))
            }],
            ..crate::fixture::config("test.toml", Vec::new())
        };
        assert_eq!(parse_ok(text), expected);
    }

    #[test]
    fn defaults_and_spellings() {
        // (name, document, check on the single virtual server)
        type Check = fn(&VirtualServer);
        let cases: &[(&str, &[&str], Check)] = &[
            (
                "defaults",
                &[
                    "[[virtual_server]]",
                    "vip = '192.0.2.100'",
                    "port = 443",
                    "interface = 'eth0'",
                    "[[virtual_server.real_server]]",
                    "address = '192.0.2.11'",
                ],
                |vs| {
                    assert_eq!(vs.protocol, Protocol::Tcp);
                    assert_eq!(vs.lb_algo, "mh");
                    assert_eq!(vs.real_servers[0].port, 443);
                    assert_eq!(vs.real_servers[0].weight, 1);
                    assert_eq!(vs.real_servers[0].port_at(), Location::new(5, 1));
                },
            ),
            (
                "keepalived spellings",
                &[
                    "[[virtual_server]]",
                    "vip = '192.0.2.100'",
                    "port = 53",
                    "protocol = 'UDP'",
                    "lvs_sched = 'wrr'",
                    "interface = 'eth0'",
                ],
                |vs| {
                    assert_eq!(vs.protocol, Protocol::Udp);
                    assert_eq!(vs.lb_algo, "wrr");
                    assert_eq!(vs.lb_algo_at(), Location::new(5, 13));
                },
            ),
            (
                "weight 0 drains, hex integers are integers",
                &[
                    "[[virtual_server]]",
                    "vip = '192.0.2.100'",
                    "port = 0x50",
                    "lb_algo = 'rr'",
                    "interface = 'eth0'",
                    "[[virtual_server.real_server]]",
                    "address = '192.0.2.11'",
                    "weight = 0",
                ],
                |vs| {
                    assert_eq!(vs.port, 80);
                    assert_eq!(vs.lb_algo, "rr");
                    assert_eq!(vs.real_servers[0].weight, 0);
                },
            ),
            (
                "inline tables",
                &[
                    "virtual_server = [{ vip = '192.0.2.100', port = 80, interface = 'eth0',",
                    "  real_server = [{ address = '192.0.2.11' }] }]",
                ],
                |vs| {
                    assert_eq!(vs.location, Location::new(1, 19));
                    assert_eq!(vs.real_servers[0].location, Location::new(2, 18));
                },
            ),
            (
                "IPv6",
                &[
                    "[[virtual_server]]",
                    "vip = '2001:db8::100'",
                    "port = 80",
                    "interface = 'eth0'",
                    "[[virtual_server.real_server]]",
                    "address = '2001:db8::11'",
                ],
                |vs| {
                    assert_eq!(vs.to_string(), "[2001:db8::100]:80/tcp");
                    assert_eq!(vs.real_servers[0].to_string(), "[2001:db8::11]:80");
                },
            ),
        ];
        for (name, lines, check) in cases {
            let config = parse_ok(&doc(lines));
            assert_eq!(config.virtual_servers.len(), 1, "{name}");
            check(&config.virtual_servers[0]);
        }
    }

    /// A file using every key added after the contract file, into exactly this model.
    #[test]
    fn every_setting_parses_into_the_model() {
        let text = r#"[dataplane]
flow_table_size = 4194304
hash_seed = 0xdeadbeef
syn_flood_threshold = 0
udp_flow_timeout = 2.5
icmp_echo = false
max_services = 16
max_reals = 64
backup_xdp = "standby"

[[virtual_server]]
vip = "192.0.2.100"
port = 0
protocol = "udp"
interface = "eth0"
table_size = 251
persistence_timeout = 300
persistence_granularity = "255.255.255.0"
sorry_server = { address = "192.0.2.200" }

[[virtual_server.real_server]]
address = "192.0.2.11"

[[virtual_server]]
vip = "2001:db8::100"
port = 443
interface = "eth1"
persistence_timeout = 0.5
persistence_granularity = 64

[virtual_server.sorry_server]
address = "2001:db8::200"
port = 443
"#;
        let at = Location::new;
        let expected = Config {
            dataplane: DataplaneSettings {
                flow_table_size: 4 << 20,
                hash_seed: 0xdead_beef,
                syn_flood_threshold: 0,
                udp_flow_timeout: Duration::from_millis(2500),
                tcp_flow_timeout: Duration::from_secs(900),
                icmp_echo: false,
                max_services: 16,
                max_reals: 64,
                backup_xdp: BackupXdp::Standby,
                key_locations: [
                    ("flow_table_size", at(2, 19)),
                    ("hash_seed", at(3, 13)),
                    ("syn_flood_threshold", at(4, 23)),
                    ("udp_flow_timeout", at(5, 20)),
                    ("icmp_echo", at(6, 13)),
                    ("max_services", at(7, 16)),
                    ("max_reals", at(8, 13)),
                    ("backup_xdp", at(9, 14)),
                ]
                .into_iter()
                .collect(),
            },
            virtual_servers: vec![
                VirtualServer {
                    vip: "192.0.2.100".parse().unwrap(),
                    port: 0,
                    protocol: Protocol::Udp,
                    table_size: 251,
                    persistence_timeout: Some(Duration::from_secs(300)),
                    persistence_prefix: 24,
                    real_servers: vec![RealServer {
                        key_locations: Spans::at_section(at(21, 1)).with("address", at(22, 11)),
                        ..crate::fixture::real_server("192.0.2.11", 0, at(21, 1))
                    }],
                    sorry_server: Some(RealServer {
                        key_locations: Spans::at_section(at(19, 16)).with("address", at(19, 28)),
                        ..crate::fixture::real_server("192.0.2.200", 0, at(19, 16))
                    }),
                    location: at(11, 1),
                    key_locations: Spans::at_section(at(11, 1))
                        .with("vip", at(12, 7))
                        .with("port", at(13, 8))
                        .with("protocol", at(14, 12))
                        .with("interface", at(15, 13))
                        .with("lb_algo", at(11, 1))
                        .with("table_size", at(16, 14))
                        .with("persistence_timeout", at(17, 23))
                        .with("persistence_granularity", at(18, 27)),
                    ..crate::fixture::virtual_server("192.0.2.100", 0, at(11, 1))
                },
                VirtualServer {
                    vip: "2001:db8::100".parse().unwrap(),
                    port: 443,
                    interface: "eth1".to_owned(),
                    persistence_timeout: Some(Duration::from_millis(500)),
                    persistence_prefix: 64,
                    sorry_server: Some(RealServer {
                        key_locations: Spans::at_section(at(31, 1))
                            .with("address", at(32, 11))
                            .with("port", at(33, 8)),
                        ..crate::fixture::real_server("2001:db8::200", 443, at(31, 1))
                    }),
                    location: at(24, 1),
                    key_locations: Spans::at_section(at(24, 1))
                        .with("vip", at(25, 7))
                        .with("port", at(26, 8))
                        .with("interface", at(27, 13))
                        .with("persistence_timeout", at(28, 23))
                        .with("persistence_granularity", at(29, 27)),
                    ..crate::fixture::virtual_server("2001:db8::100", 443, at(24, 1))
                },
            ],
            ..crate::fixture::config("test.toml", Vec::new())
        };
        assert_eq!(parse_ok(text), expected);
        assert!(super::super::validate(&expected, &FakeHost).is_empty());
    }

    #[test]
    fn dataplane_values() {
        // (name, document, check on the settings)
        type Check = fn(&DataplaneSettings);
        let cases: &[(&str, &[&str], Check)] = &[
            ("absent: all defaults", &[], |dp| {
                assert_eq!(*dp, DataplaneSettings::default());
                assert_eq!(dp.flow_table_size, 1_048_576);
                assert_eq!(dp.hash_seed, 0x4c42_5331);
                assert_eq!(dp.syn_flood_threshold, 125_000);
                assert_eq!(dp.udp_flow_timeout, Duration::from_secs(30));
                assert!(dp.icmp_echo);
                assert_eq!(dp.max_services, 1024);
                assert_eq!(dp.max_reals, 4096);
            }),
            ("empty table: all defaults", &["[dataplane]"], |dp| {
                assert_eq!(*dp, DataplaneSettings::default());
            }),
            (
                "lowest values",
                &[
                    "[dataplane]",
                    "flow_table_size = 1024",
                    "hash_seed = 0",
                    "syn_flood_threshold = 0",
                    "udp_flow_timeout = 1",
                    "tcp_flow_timeout = 1",
                    "max_services = 1",
                    "max_reals = 1",
                ],
                |dp| {
                    assert_eq!(
                        (dp.flow_table_size, dp.hash_seed, dp.syn_flood_threshold),
                        (1024, 0, 0)
                    );
                    assert_eq!(dp.udp_flow_timeout, Duration::from_secs(1));
                    assert_eq!(dp.tcp_flow_timeout, Duration::from_secs(1));
                    assert_eq!((dp.max_services, dp.max_reals), (1, 1));
                },
            ),
            (
                "highest values, other integer spellings",
                &[
                    "[dataplane]",
                    "flow_table_size = 67_108_864",
                    "hash_seed = 0xffffffff",
                    "syn_flood_threshold = 4294967295",
                    "udp_flow_timeout = 86400.0",
                    "max_services = 0o200000",
                    "max_reals = 1048576",
                ],
                |dp| {
                    assert_eq!(dp.flow_table_size, 64 << 20);
                    assert_eq!((dp.hash_seed, dp.syn_flood_threshold), (u32::MAX, u32::MAX));
                    assert_eq!(dp.udp_flow_timeout, Duration::from_secs(86400));
                    assert_eq!((dp.max_services, dp.max_reals), (65536, 1 << 20));
                },
            ),
            (
                "inline table, fractional timeout",
                &["dataplane = { udp_flow_timeout = 1.25, icmp_echo = true }"],
                |dp| {
                    assert_eq!(dp.udp_flow_timeout, Duration::from_millis(1250));
                    assert!(dp.icmp_echo);
                    assert_eq!(
                        dp.key_locations.get("udp_flow_timeout"),
                        Some(Location::new(1, 34))
                    );
                    assert_eq!(dp.key_locations.get("icmp_echo"), Some(Location::new(1, 52)));
                    assert_eq!(dp.key_locations.get("max_services"), None);
                },
            ),
            (
                "after the virtual servers",
                &[
                    "[[virtual_server]]",
                    "vip = '192.0.2.100'",
                    "port = 80",
                    "interface = 'eth0'",
                    "[dataplane]",
                    "icmp_echo = false",
                ],
                |dp| {
                    assert!(!dp.icmp_echo);
                    assert_eq!(dp.key_locations.get("icmp_echo"), Some(Location::new(6, 13)));
                },
            ),
        ];
        for (name, lines, check) in cases {
            let config = parse_toml(&doc(lines), Path::new("test.toml"), &FakeHost)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            check(&config.dataplane);
        }
    }

    #[test]
    fn virtual_server_values() {
        // (name, lines after the base virtual server, check on the single virtual server)
        type Check = fn(&VirtualServer);
        let cases: &[(&str, &[&str], &[&str], Check)] = &[
            ("IPv4 defaults", VS, &[], |vs| {
                assert_eq!(vs.table_size, 65537);
                assert_eq!(vs.persistence_timeout, None);
                assert_eq!(vs.persistence_prefix, 32);
                assert_eq!(vs.sorry_server, None);
                assert_eq!(vs.table_size_at(), Location::new(1, 1));
                assert_eq!(vs.persistence_granularity_at(), None);
            }),
            ("IPv6 defaults", VS6, &[], |vs| {
                assert_eq!(vs.persistence_prefix, 128);
                assert_eq!(vs.persistence_timeout, None);
            }),
            ("smallest table", VS, &["table_size = 251"], |vs| {
                assert_eq!(vs.table_size, 251);
                assert_eq!(vs.table_size_at(), Location::new(5, 14));
            }),
            ("largest table", VS, &["table_size = 131071"], |vs| {
                assert_eq!(vs.table_size, 131_071);
            }),
            ("persistence in whole seconds", VS, &["persistence_timeout = 300"], |vs| {
                assert_eq!(vs.persistence_timeout, Some(Duration::from_secs(300)));
                assert_eq!(vs.persistence_timeout_at(), Location::new(5, 23));
            }),
            ("persistence in fractions", VS, &["persistence_timeout = 1.5"], |vs| {
                assert_eq!(vs.persistence_timeout, Some(Duration::from_millis(1500)));
            }),
            ("persistence up to a year", VS, &["persistence_timeout = 31536000"], |vs| {
                assert_eq!(vs.persistence_timeout, Some(Duration::from_secs(31_536_000)));
            }),
            ("persistence 0 is none", VS, &["persistence_timeout = 0"], |vs| {
                assert_eq!(vs.persistence_timeout, None);
            }),
            ("persistence 0.0 is none", VS, &["persistence_timeout = 0.0"], |vs| {
                assert_eq!(vs.persistence_timeout, None);
            }),
            (
                "netmask",
                VS,
                &["persistence_timeout = 60", "persistence_granularity = '255.255.255.0'"],
                |vs| {
                    assert_eq!(vs.persistence_prefix, 24);
                    assert_eq!(vs.persistence_granularity_at(), Some(Location::new(6, 27)));
                },
            ),
            ("host netmask", VS, &["persistence_granularity = '255.255.255.255'"], |vs| {
                assert_eq!(vs.persistence_prefix, 32);
            }),
            ("odd netmask", VS, &["persistence_granularity = '255.255.128.0'"], |vs| {
                assert_eq!(vs.persistence_prefix, 17);
            }),
            ("empty netmask", VS, &["persistence_granularity = '0.0.0.0'"], |vs| {
                assert_eq!(vs.persistence_prefix, 0);
            }),
            ("IPv4 prefix length", VS, &["persistence_granularity = 24"], |vs| {
                assert_eq!(vs.persistence_prefix, 24);
            }),
            ("IPv4 prefix length 0", VS, &["persistence_granularity = 0"], |vs| {
                assert_eq!(vs.persistence_prefix, 0);
            }),
            ("IPv6 prefix length", VS6, &["persistence_granularity = 64"], |vs| {
                assert_eq!(vs.persistence_prefix, 64);
            }),
            ("IPv6 host prefix length", VS6, &["persistence_granularity = 128"], |vs| {
                assert_eq!(vs.persistence_prefix, 128);
            }),
            (
                "inline sorry server with a port",
                VS,
                &["sorry_server = { address = '192.0.2.200', port = 80 }"],
                |vs| {
                    let sorry = vs.sorry_server.as_ref().unwrap();
                    assert_eq!(sorry.to_string(), "192.0.2.200:80");
                    assert_eq!(sorry.weight, 1);
                    assert_eq!(sorry.location, Location::new(5, 16));
                    assert_eq!(sorry.address_at(), Location::new(5, 28));
                    assert_eq!(sorry.port_at(), Location::new(5, 50));
                },
            ),
            (
                "inline sorry server without a port",
                VS,
                &["sorry_server = { address = '192.0.2.200' }"],
                |vs| {
                    let sorry = vs.sorry_server.as_ref().unwrap();
                    assert_eq!(sorry.port, 80);
                    assert_eq!(sorry.port_at(), Location::new(5, 16));
                },
            ),
            (
                "sorry server as a standard table, after the real servers",
                VS,
                &[
                    "[[virtual_server.real_server]]",
                    "address = '192.0.2.11'",
                    "[virtual_server.sorry_server]",
                    "address = '192.0.2.200'",
                ],
                |vs| {
                    assert_eq!(vs.real_servers.len(), 1);
                    let sorry = vs.sorry_server.as_ref().unwrap();
                    assert_eq!(sorry.to_string(), "192.0.2.200:80");
                    assert_eq!(sorry.location, Location::new(7, 1));
                    assert_eq!(sorry.address_at(), Location::new(8, 11));
                },
            ),
            ("IPv6 sorry server", VS6, &["sorry_server = { address = '2001:db8::200' }"], |vs| {
                assert_eq!(vs.sorry_server.as_ref().unwrap().to_string(), "[2001:db8::200]:80");
            }),
            (
                "all ports, the real's port omitted or 0",
                &["[[virtual_server]]", "vip = '192.0.2.100'", "port = 0", "interface = 'eth0'"],
                &[
                    "sorry_server = { address = '192.0.2.200' }",
                    "[[virtual_server.real_server]]",
                    "address = '192.0.2.11'",
                    "[[virtual_server.real_server]]",
                    "address = '192.0.2.12'",
                    "port = 0",
                ],
                |vs| {
                    assert_eq!(vs.to_string(), "192.0.2.100:0/tcp");
                    let ports: Vec<u16> = vs.real_servers.iter().map(|rs| rs.port).collect();
                    assert_eq!(ports, [0, 0]);
                    assert_eq!(vs.sorry_server.as_ref().unwrap().port, 0);
                },
            ),
        ];
        for (name, base, extra, check) in cases {
            let text = doc(&[*base, *extra].concat());
            let config = parse_toml(&text, Path::new("test.toml"), &FakeHost)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(config.virtual_servers.len(), 1, "{name}");
            check(&config.virtual_servers[0]);
        }
    }

    #[test]
    fn every_table_size_offered_is_accepted() {
        for size in maglev::PRIMES {
            let text = doc(&[VS, &[format!("table_size = {size}").as_str()]].concat());
            assert_eq!(parse_ok(&text).virtual_servers[0].table_size, size);
        }
    }

    #[test]
    fn netmask_prefixes() {
        let cases = [
            ("0.0.0.0", Some(0)),
            ("128.0.0.0", Some(1)),
            ("255.255.255.0", Some(24)),
            ("255.255.255.254", Some(31)),
            ("255.255.255.255", Some(32)),
            ("255.0.255.0", None),
            ("0.0.0.255", None),
            ("255.255.255.253", None),
        ];
        for (mask, expected) in cases {
            assert_eq!(netmask_prefix(mask.parse().unwrap()), expected, "{mask}");
        }
    }

    /// A limit with an error is reported once, not again as virtual or real servers over the
    /// default.
    #[test]
    fn invalid_limits_report_only_themselves() {
        let mut lines: Vec<String> =
            ["[dataplane]", "max_reals = 'many'", "max_services = 0"].map(String::from).to_vec();
        for port in 1..=1025 {
            lines.extend(["[[virtual_server]]".into(), "vip = '192.0.2.100'".into()]);
            lines.extend([format!("port = {port}"), "interface = 'eth0'".into()]);
        }
        for i in 0..4097 {
            lines.push("[[virtual_server.real_server]]".into());
            lines.push(format!("address = '10.0.{}.{}'", i / 256, i % 256));
        }
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let errors = parse_toml(&doc(&lines), Path::new("test.toml"), &FakeHost).unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "test.toml:2:13: `max_reals` must be an integer, found string \"many\"",
                "test.toml:3:16: `max_services` must be between 1 and 65536, found 0",
            ]
        );
    }

    #[test]
    fn nothing_to_do_is_valid() {
        for text in ["", "# just a comment\n", "\n\n", "virtual_server = []\n"] {
            assert_eq!(parse_ok(text).virtual_servers, Vec::new(), "{text:?}");
        }
    }

    #[test]
    fn virtual_servers_keep_file_order() {
        let text = doc(&[
            "[[virtual_server]]",
            "vip = '192.0.2.2'",
            "port = 80",
            "interface = 'eth0'",
            "[[virtual_server]]",
            "vip = '192.0.2.1'",
            "port = 80",
            "interface = 'eth0'",
        ]);
        let vips: Vec<String> =
            parse_ok(&text).virtual_servers.iter().map(|vs| vs.vip.to_string()).collect();
        assert_eq!(vips, ["192.0.2.2", "192.0.2.1"]);
    }

    #[test]
    fn sections_with_errors_are_left_out_of_the_model() {
        let text = doc(&[
            "[[virtual_server]]",
            "vip = '192.0.2.1'",
            "port = 80",
            "interface = 'eth0'",
            "[[virtual_server.real_server]]",
            "address = '192.0.2.11'",
            "[[virtual_server.real_server]]",
            "address = 'nope'",
            "[[virtual_server]]",
            "vip = '192.0.2.2'",
            "port = 'http'",
            "interface = 'eth0'",
        ]);
        let (config, errors) = parse(&text, Path::new("test.toml"));
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert_eq!(config.virtual_servers.len(), 1);
        assert_eq!(config.virtual_servers[0].real_servers.len(), 1);
    }
}
