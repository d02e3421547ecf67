//! VRRP settings in the native front end: keepalived's `vrrp_instance`, `vrrp_script` and
//! `vrrp_sync_group` blocks as the arrays of tables `[[vrrp_instance]]`, `[[vrrp_script]]` and
//! `[[vrrp_sync_group]]`, with keepalived's keywords; the block's name is the `name` key.
//!
//! Checked here: each value on its own, names (unique per kind of section) and the references by
//! name between sections (a `track_script` names a `vrrp_script`, a sync group its instances),
//! since only the front end still knows the names of sections left out for their errors. Rules
//! between values (versions, address families, the host's interfaces, instances sharing a router
//! id or an address) are `validate`'s, shared with other front ends.

use std::net::IpAddr;
use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use ::toml::de::{DeTable, DeValue};

use super::super::emit::{address, array, boolean, inline_table, integer, seconds, string};
use super::super::error::did_you_mean;
use super::super::model::{Location, Spans, host_prefix_len};
use super::super::vrrp::{
    DEFAULT_ADVERT_INT, DEFAULT_GARP_REFRESH_DELAY, DEFAULT_GARP_REPEAT, DEFAULT_PRIORITY,
    DEFAULT_SCRIPT_INTERVAL, DEFAULT_VERSION, GARP_REPEAT_LIMITS, MAX_ADVERT_INT_V2,
    MAX_AUTH_PASS_LEN, MAX_PREEMPT_DELAY_SECS, MAX_TRACK_WEIGHT, PRIORITY_LIMITS, TrackInterface,
    TrackScript, VIRTUAL_ROUTER_ID_LIMITS, VirtualAddress, VrrpConfig, VrrpInstance, VrrpScript,
    VrrpSyncGroup,
};
use super::schema::{Doc, Located, Section, Setting, unless};
use super::{Key, Parser, Value, describe};

/// keepalived `vrrp_instance` keywords lb does not take: an unknown-key suggestion for them
/// (`garp_master_refresh` → `garp_master_refresh_delay`) would mislead.
const UNSUPPORTED_INSTANCE_KEYWORDS: &[&str] = &[
    "accept",
    "check_unicast_src",
    "debug",
    "dont_track_primary",
    "garp_lower_prio_delay",
    "garp_lower_prio_repeat",
    "garp_master_refresh_repeat",
    "higher_prio_send_advert",
    "kernel_rx_buf_size",
    "linkbeat_use_polling",
    "mcast_dst_ip",
    "native_ipv6",
    "no_accept",
    "notify_deleted",
    "notify_master_rx_lower_pri",
    "notify_priority_changes",
    "owner_ignore_adverts",
    "promote_secondaries",
    "smtp_alert",
    "strict_mode",
    "track_bfd",
    "track_file",
    "track_process",
    "track_src_ip",
    "unicast_fault_no_peer",
    "unicast_ttl",
    "use_vmac",
    "virtual_ipaddress_excluded",
    "virtual_routes",
    "virtual_rules",
    "vmac_xmit_base",
];

const VRRP_INSTANCE: &str = "[[vrrp_instance]]";
const VRRP_SCRIPT: &str = "[[vrrp_script]]";
const VRRP_SYNC_GROUP: &str = "[[vrrp_sync_group]]";
const AUTHENTICATION: &str = "[vrrp_instance.authentication]";

/// Longest `interval`/`timeout` of a script and `garp_master_refresh_delay`, in seconds: a day.
const MAX_SECONDS: u32 = 86_400;

/// The message for a key written in a `[[vrrp_instance]]` that belongs elsewhere or that lb does
/// not take.
fn misplaced_in_instance(name: &str) -> Option<String> {
    let message = match name {
        "auth_type" | "auth_pass" => format!(
            "`{name}` belongs in the instance's `authentication` table: `authentication = {{ \
             auth_type = \"PASS\", auth_pass = \"...\" }}`"
        ),
        "weight" => "`weight` is set per tracked script or interface, `track_script = [{ name = \
                     \"...\", weight = -20 }]`, or in the [[vrrp_script]]"
            .to_owned(),
        "script" | "interval" | "timeout" | "rise" | "fall" => format!(
            "`{name}` is a vrrp_script setting: move it to a [[vrrp_script]] and name that script \
             in the instance's `track_script`"
        ),
        "group" => {
            "`group` is a vrrp_sync_group setting: move it to a [[vrrp_sync_group]]".to_owned()
        }
        "preempt" => {
            "`preempt` is the default: write `nopreempt = true` to turn it off (as in keepalived)"
                .to_owned()
        }
        "garp_master_refresh" => "keepalived's `garp_master_refresh` (gratuitous ARPs repeated \
                                  while MASTER) is not supported: lb sends them \
                                  `garp_master_repeat` times on becoming MASTER, and again after \
                                  `garp_master_refresh_delay`"
            .to_owned(),
        _ if UNSUPPORTED_INSTANCE_KEYWORDS.contains(&name) => {
            format!("keepalived's `{name}` is not supported in {VRRP_INSTANCE}")
        }
        _ => return None,
    };
    Some(message)
}

/// The message for an instance key written in a `[[vrrp_script]]`.
fn misplaced_in_script(name: &str) -> Option<String> {
    INSTANCE_SECTION
        .keys()
        .contains(&name)
        .then(|| format!("`{name}` is a vrrp_instance setting: move it to a {VRRP_INSTANCE}"))
}

/// The message for an instance or script key written in a `[[vrrp_sync_group]]`.
fn misplaced_in_sync_group(name: &str) -> Option<String> {
    if INSTANCE_SECTION.keys().contains(&name) {
        Some(format!(
            "`{name}` is set per vrrp_instance, not per sync group: move it to the instances' \
             {VRRP_INSTANCE}"
        ))
    } else {
        misplaced_in_instance(name)
    }
}

/// The names defined by one kind of section, in file order, with where each was written; kept
/// also for sections left out for their errors, so references to them are not reported too.
#[derive(Default)]
struct Names(Vec<(String, Location)>);

impl Names {
    fn first(&self, name: &str) -> Option<Location> {
        self.0.iter().find(|(n, _)| n == name).map(|&(_, at)| at)
    }

    fn all(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// A `track_interface` or `track_script` entry: a name, or a `{ name, weight }` table.
struct Tracked {
    name: String,
    weight: Option<i32>,
    /// Where the name was written.
    at: Location,
}

/// An instance already in a sync group, and which group (where its section starts).
struct Member {
    instance: String,
    group: Location,
}

impl Parser<'_> {
    /// The VRRP sections of the document, and where their values were written. Sections with
    /// errors are left out.
    pub(super) fn vrrp(&mut self, root: &DeTable<'_>) -> (VrrpConfig, Vec<Spans>) {
        let mut config = VrrpConfig::default();
        let mut locations = Vec::new();

        let mut scripts = Names::default();
        for (table, span) in self.sections(root, "vrrp_script", VRRP_SCRIPT) {
            config.scripts.extend(self.vrrp_script(table, span, &mut scripts));
        }
        let scripts = scripts.all();

        let mut instances = Names::default();
        for (table, span) in self.sections(root, "vrrp_instance", VRRP_INSTANCE) {
            if let Some((instance, at)) = self.vrrp_instance(table, span, &mut instances, &scripts)
            {
                config.instances.push(instance);
                locations.push(at);
            }
        }
        let instances = instances.all();

        let mut groups = Names::default();
        let mut members = Vec::new();
        for (table, span) in self.sections(root, "vrrp_sync_group", VRRP_SYNC_GROUP) {
            let group = self.vrrp_sync_group(table, span, &mut groups, &instances, &mut members);
            config.sync_groups.extend(group);
        }
        (config, locations)
    }

    /// The tables of the top-level array of tables `name`, if any.
    fn sections<'a, 'i>(
        &mut self,
        root: &'a DeTable<'i>,
        name: &str,
        header: &str,
    ) -> Vec<(&'a DeTable<'i>, Range<usize>)> {
        match root.get_key_value(name) {
            Some((key, value)) => self.tables(key, value, header),
            None => Vec::new(),
        }
    }

    /// The `name` of a section of `kind` (`vrrp_script`) in its `name` setting: not empty, not
    /// already defined by another section of the kind (a name defined twice stays in `names`
    /// the first time, so that references to it are not errors as well).
    fn defined_name(
        &mut self,
        key: &Key<'_>,
        value: &Value<'_>,
        kind: &str,
        names: &mut Names,
    ) -> Option<String> {
        let at = self.at(value.span());
        let name = self.name(key, value)?;
        if let Some(first) = names.first(&name) {
            let message = format!("{kind} `{name}` is already defined at line {}", first.line);
            self.error(value.span(), message);
            return None;
        }
        names.0.push((name.clone(), at));
        Some(name)
    }

    /// A string that names something: not empty.
    fn name(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<String> {
        let text = self.string(key, value)?;
        if text.trim().is_empty() {
            self.error(value.span(), format!("`{}` must not be empty", key.get_ref()));
            return None;
        }
        Some(text.to_owned())
    }

    /// An integer within `limits`, for the settings VRRP carries in a byte.
    fn byte(&mut self, key: &Key<'_>, value: &Value<'_>, limits: RangeInclusive<u8>) -> Option<u8> {
        let (min, max) = limits.into_inner();
        self.integer(key, value, min.into(), max.into()).and_then(|n| u8::try_from(n).ok())
    }

    /// A tracking weight: -254 to 254.
    fn track_weight(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<i32> {
        let max = i64::from(MAX_TRACK_WEIGHT);
        self.integer(key, value, -max, max).and_then(|n| i32::try_from(n).ok())
    }

    /// The array `value` of `key`, whose items are `of` (for the message when it is not one).
    fn array<'a, 'i>(
        &mut self,
        key: &Key<'_>,
        value: &'a Value<'i>,
        of: &str,
    ) -> Option<&'a [Value<'i>]> {
        match value.get_ref() {
            DeValue::Array(items) => Some(items),
            other => {
                let message = format!(
                    "`{}` must be an array of {of}, found {}",
                    key.get_ref(),
                    describe(other)
                );
                self.error(value.span(), message);
                None
            }
        }
    }

    fn vrrp_script(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
        names: &mut Names,
    ) -> Option<VrrpScript> {
        let errors = self.errors.len();
        let location = self.at(span);
        let mut script = Script {
            script: VrrpScript {
                name: String::new(),
                script: String::new(),
                interval: DEFAULT_SCRIPT_INTERVAL,
                timeout: DEFAULT_SCRIPT_INTERVAL,
                weight: 0,
                rise: 1,
                fall: 1,
                location,
            },
            spans: Spans::at_section(location),
            names: std::mem::take(names),
        };
        SCRIPT_SECTION.read(self, table, &mut script);
        *names = script.names;
        // An unknown key is reported, but does not leave the section out.
        let unknown = SCRIPT_SECTION.unknown_count(table);
        (self.errors.len() == errors + unknown).then_some(script.script)
    }

    fn vrrp_instance(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
        names: &mut Names,
        scripts: &[&str],
    ) -> Option<(VrrpInstance, Spans)> {
        let errors = self.errors.len();
        let location = self.at(span);
        let mut instance = Instance {
            instance: VrrpInstance {
                name: String::new(),
                initial_master: false,
                interface: String::new(),
                virtual_router_id: 0,
                priority: DEFAULT_PRIORITY,
                advert_int: DEFAULT_ADVERT_INT,
                version: DEFAULT_VERSION,
                virtual_ipaddress: Vec::new(),
                preempt: true,
                preempt_delay: Duration::ZERO,
                unicast_peer: Vec::new(),
                unicast_src_ip: None,
                auth_pass: None,
                track_interface: Vec::new(),
                track_script: Vec::new(),
                notify_master: None,
                notify_backup: None,
                notify_fault: None,
                notify_stop: None,
                notify: None,
                garp_master_repeat: DEFAULT_GARP_REPEAT,
                garp_master_refresh_delay: DEFAULT_GARP_REFRESH_DELAY,
                lower_prio_no_advert: false,
                skip_check_adv_addr: false,
                location,
            },
            spans: Spans::at_section(location),
            names: std::mem::take(names),
            scripts: scripts.iter().map(|&name| name.to_owned()).collect(),
            version: None,
        };
        INSTANCE_SECTION.read(self, table, &mut instance);
        *names = std::mem::take(&mut instance.names);
        // An unknown key is reported, but does not leave the section out.
        let unknown = INSTANCE_SECTION.unknown_count(table);
        (self.errors.len() == errors + unknown).then_some((instance.instance, instance.spans))
    }

    /// `state`: `MASTER` (true) or `BACKUP`, in any case.
    fn initial_state(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<bool> {
        let text = self.string(key, value)?;
        if text.eq_ignore_ascii_case("MASTER") {
            Some(true)
        } else if text.eq_ignore_ascii_case("BACKUP") {
            Some(false)
        } else {
            let message = format!(
                "`{}` must be \"MASTER\" or \"BACKUP\", found \"{}\"",
                key.get_ref(),
                text.escape_debug()
            );
            self.error(value.span(), message);
            None
        }
    }

    fn version(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<u8> {
        let integer = self.integer_literal(key, value)?;
        match i64::from_str_radix(integer.as_str(), integer.radix()) {
            Ok(2) => Some(2),
            Ok(3) => Some(3),
            _ => {
                let message = format!(
                    "`{}` must be 2 or 3 (VRRPv2 or VRRPv3), found {integer}",
                    key.get_ref()
                );
                self.error(value.span(), message);
                None
            }
        }
    }

    /// `garp_master_refresh_delay`, or keepalived's name for it, `garp_master_delay`.
    /// `virtual_ipaddress`: at least one `ADDRESS[/PREFIX]`; `at` gets where each was written.
    fn virtual_addresses(
        &mut self,
        key: &Key<'_>,
        value: &Value<'_>,
        at: &mut Vec<Location>,
    ) -> Option<Vec<VirtualAddress>> {
        let items = self.array(key, value, "addresses, like [\"192.0.2.100/24\"]")?;
        if items.is_empty() {
            let message = format!("`{}` must list at least one address", key.get_ref());
            self.error(value.span(), message);
            return None;
        }
        let mut addresses = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            match self.virtual_address(key, item) {
                Some(address) => {
                    addresses.push(address);
                    at.push(self.at(item.span()));
                }
                None => ok = false,
            }
        }
        ok.then_some(addresses)
    }

    /// One `virtual_ipaddress` entry: `192.0.2.100/24`, or without a prefix a host address.
    fn virtual_address(&mut self, key: &Key<'_>, item: &Value<'_>) -> Option<VirtualAddress> {
        let key = key.get_ref();
        let text = match item.get_ref() {
            DeValue::String(text) => text,
            other => {
                let message = format!(
                    "each `{key}` entry must be an address string like \"192.0.2.100/24\", found {}",
                    describe(other)
                );
                self.error(item.span(), message);
                return None;
            }
        };
        let message = if text.contains(char::is_whitespace) {
            format!(
                "`{key}` entries are an address with an optional /PREFIX only: keepalived's \
                 options after it (`dev`, `label`, `scope`, ...) are not supported, found \"{}\"",
                text.escape_debug()
            )
        } else {
            let (address, prefix) = match text.split_once('/') {
                Some((address, prefix)) => (address, Some(prefix)),
                None => (text.as_ref(), None),
            };
            match address.parse() {
                Ok(address) => {
                    let longest = host_prefix_len(address);
                    match prefix.map(str::parse::<u8>) {
                        None => return Some(VirtualAddress { address, prefix: longest }),
                        Some(Ok(prefix)) if prefix <= longest => {
                            return Some(VirtualAddress { address, prefix });
                        }
                        Some(_) => format!(
                            "the prefix length of {address} in `{key}` must be 0 to {longest}, \
                             found \"{}\"",
                            prefix.unwrap_or_default().escape_debug()
                        ),
                    }
                }
                Err(_) => format!(
                    "each `{key}` entry must be an IP address with an optional /PREFIX, like \
                     \"192.0.2.100/24\", found \"{}\"",
                    text.escape_debug()
                ),
            }
        };
        self.error(item.span(), message);
        None
    }

    /// `unicast_peer`: IP addresses; `at` gets where each was written.
    fn unicast_peers(
        &mut self,
        key: &Key<'_>,
        value: &Value<'_>,
        at: &mut Vec<Location>,
    ) -> Option<Vec<IpAddr>> {
        let items = self.array(key, value, "IP addresses")?;
        let mut peers = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            let text = match item.get_ref() {
                DeValue::String(text) => text.as_ref(),
                other => {
                    let message = format!(
                        "each `{}` entry must be an IP address string, found {}",
                        key.get_ref(),
                        describe(other)
                    );
                    self.error(item.span(), message);
                    ok = false;
                    continue;
                }
            };
            match text.parse() {
                Ok(peer) => {
                    peers.push(peer);
                    at.push(self.at(item.span()));
                }
                Err(_) => {
                    let message = format!(
                        "each `{}` entry must be an IP address, found \"{}\"",
                        key.get_ref(),
                        text.escape_debug()
                    );
                    self.error(item.span(), message);
                    ok = false;
                }
            }
        }
        ok.then_some(peers)
    }

    /// `authentication = { auth_type = "PASS", auth_pass = "..." }`: the password.
    fn authentication(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<String> {
        let (table, span) = self.table(key, value, AUTHENTICATION)?;
        let mut read = Authentication::at(self.at(span));
        AUTHENTICATION_SECTION.read(self, table, &mut read);
        read.pass.filter(|_| read.pass_type)
    }

    /// `auth_type`: only `PASS` (any case); keepalived's `AH` is not supported.
    fn auth_type(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<()> {
        let text = self.string(key, value)?;
        if text.eq_ignore_ascii_case("PASS") {
            return Some(());
        }
        let message = if text.eq_ignore_ascii_case("AH") {
            format!(
                "`{}` \"AH\" (IPsec authentication header) is not supported: use \"PASS\", or no \
                 `authentication`",
                key.get_ref()
            )
        } else {
            format!("`{}` must be \"PASS\", found \"{}\"", key.get_ref(), text.escape_debug())
        };
        self.error(value.span(), message);
        None
    }

    /// `auth_pass`: 1 to 8 bytes. The password itself is never repeated in a message.
    fn auth_pass(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<String> {
        let text = self.string(key, value)?;
        let message = if text.is_empty() {
            format!("`{}` must not be empty: leave `authentication` out instead", key.get_ref())
        } else if text.len() > MAX_AUTH_PASS_LEN {
            format!(
                "`{}` must be at most {MAX_AUTH_PASS_LEN} bytes, found {}: VRRPv2 carries \
                 {MAX_AUTH_PASS_LEN}, and keepalived would silently use only the first \
                 {MAX_AUTH_PASS_LEN}; shorten it to those",
                key.get_ref(),
                text.len()
            )
        } else {
            return Some(text.to_owned());
        };
        self.error(value.span(), message);
        None
    }

    /// `track_script`: entries that each name a `vrrp_script` of `scripts`.
    fn track_scripts(
        &mut self,
        key: &Key<'_>,
        value: &Value<'_>,
        scripts: &[&str],
    ) -> Option<Vec<TrackScript>> {
        let tracked = self.tracked(key, value)?;
        let mut ok = true;
        for entry in &tracked {
            if !scripts.contains(&entry.name.as_str()) {
                let hint = did_you_mean(&entry.name, scripts);
                let message = format!("no vrrp_script is named `{}`{hint}", entry.name);
                self.error_located(entry.at, message);
                ok = false;
            }
        }
        let tracked = tracked.into_iter();
        ok.then(|| tracked.map(|t| TrackScript { script: t.name, weight: t.weight }).collect())
    }

    /// The entries of `track_interface` or `track_script`: names, or `{ name, weight }` tables.
    fn tracked(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<Vec<Tracked>> {
        let what = key.get_ref();
        let items = self.array(key, value, "names, or of { name = \"...\", weight = N } tables")?;
        let mut entries = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            let entry = match item.get_ref() {
                DeValue::String(_) => {
                    let at = self.at(item.span());
                    self.name(key, item).map(|name| Tracked { name, weight: None, at })
                }
                DeValue::Table(table) => self.tracked_table(what, table, item.span()),
                other => {
                    let message = format!(
                        "each `{what}` entry must be a name or a {{ name = \"...\", weight = N }} \
                         table, found {}",
                        describe(other)
                    );
                    self.error(item.span(), message);
                    None
                }
            };
            match entry {
                Some(entry) => entries.push(entry),
                None => ok = false,
            }
        }
        ok.then_some(entries)
    }

    /// A `{ name, weight }` entry of `what` (`track_script`).
    fn tracked_table(
        &mut self,
        what: &str,
        table: &DeTable<'_>,
        span: Range<usize>,
    ) -> Option<Tracked> {
        let mut entry = TrackEntry::at(self.at(span));
        TRACK_ENTRY_SECTION.read_as(self, table, &mut entry, &format!("a `{what}` entry"));
        let at = entry.spans.located("name");
        Some(Tracked { name: entry.name?, weight: entry.weight.ok()?, at })
    }

    fn vrrp_sync_group(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
        names: &mut Names,
        instances: &[&str],
        members: &mut Vec<Member>,
    ) -> Option<VrrpSyncGroup> {
        let errors = self.errors.len();
        let location = self.at(span);
        let mut group = SyncGroup {
            group: VrrpSyncGroup {
                name: String::new(),
                group: Vec::new(),
                notify_master: None,
                notify_backup: None,
                notify_fault: None,
                location,
            },
            spans: Spans::at_section(location),
            names: std::mem::take(names),
            instances: instances.iter().map(|&name| name.to_owned()).collect(),
            members: std::mem::take(members),
        };
        SYNC_GROUP_SECTION.read(self, table, &mut group);
        *names = group.names;
        *members = group.members;
        // An unknown key is reported, but does not leave the section out.
        let unknown = SYNC_GROUP_SECTION.unknown_count(table);
        (self.errors.len() == errors + unknown).then_some(group.group)
    }

    /// A sync group's `group`: at least one of `instances`, each in no other group (`members`,
    /// which this group's are added to; `section` is where this group starts).
    fn group(
        &mut self,
        key: &Key<'_>,
        value: &Value<'_>,
        section: Location,
        instances: &[&str],
        members: &mut Vec<Member>,
    ) -> Option<Vec<String>> {
        let items = self.array(key, value, "vrrp_instance names")?;
        if items.is_empty() {
            let message = format!("`{}` must list at least one vrrp_instance", key.get_ref());
            self.error(value.span(), message);
            return None;
        }
        let mut group = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            let Some(name) = self.name(key, item) else {
                ok = false;
                continue;
            };
            let message = if !instances.contains(&name.as_str()) {
                Some(format!(
                    "no vrrp_instance is named `{name}`{}",
                    did_you_mean(&name, instances)
                ))
            } else {
                match members.iter().find(|m| m.instance == name) {
                    Some(m) if m.group == section => {
                        Some(format!("vrrp_instance `{name}` is listed twice in this group"))
                    }
                    Some(m) => Some(format!(
                        "vrrp_instance `{name}` is already in the vrrp_sync_group at line {}: an \
                         instance can be in one sync group only",
                        m.group.line
                    )),
                    None => None,
                }
            };
            match message {
                Some(message) => {
                    self.error(item.span(), message);
                    ok = false;
                }
                None => {
                    members.push(Member { instance: name.clone(), group: section });
                    group.push(name);
                }
            }
        }
        ok.then_some(group)
    }
}

/// A `[[vrrp_instance]]` as read: the instance, where its values were written (list items
/// included: validation points at one address), the names of the instances before it, the
/// scripts it may track and the version if written.
struct Instance {
    instance: VrrpInstance,
    spans: Spans,
    names: Names,
    scripts: Vec<String>,
    version: Option<u8>,
}

impl Located for Instance {
    fn spans_mut(&mut self) -> &mut Spans {
        &mut self.spans
    }
}

/// `Doc` of an instance setting; its row in docs/config.md has a keepalived column besides
/// (held by `docs_list_every_vrrp_key`).
const fn doc(ty: &'static str, default: &'static str, meaning: &'static str) -> Doc {
    Doc { ty, default, meaning }
}

/// An instance's notify script `name`, whose value `field` is.
macro_rules! instance_notify {
    ($name:literal, $field:ident, $meaning:literal) => {
        Setting {
            name: $name,
            doc: doc("command line (string)", "none", $meaning),
            read: |p, k, v, i| i.instance.$field = p.command(k, v),
            emit: |i, _| i.instance.$field.as_deref().map(string),
        }
    };
}

/// A boolean setting of an instance, `false` unless written.
macro_rules! instance_flag {
    ($name:literal, $field:ident, $meaning:literal) => {
        Setting {
            name: $name,
            doc: doc("boolean", "`false`", $meaning),
            read: |p, k, v, i| {
                if let Some(flag) = p.boolean(k, v) {
                    i.instance.$field = flag;
                }
            },
            emit: |i, _| unless(&i.instance.$field, &false, boolean),
        }
    };
}

/// `garp_master_refresh_delay` or keepalived's `garp_master_delay`, read unless both are
/// written (the section's `finish` says so).
fn read_garp_delay(p: &mut Parser<'_>, k: &Key<'_>, v: &Value<'_>, i: &mut Instance, other: &str) {
    if i.spans.get(other).is_none()
        && let Some(delay) = p.seconds(k, v, 0..=MAX_SECONDS)
    {
        i.instance.garp_master_refresh_delay = delay;
    }
}

/// A track entry as `lb convert` writes it: the name alone, or with its weight.
fn tracked_entry(name: &str, weight: Option<i32>) -> String {
    match weight {
        None => string(name),
        Some(weight) => {
            let entry = TrackEntry {
                name: Some(name.to_owned()),
                weight: Ok(Some(weight)),
                ..TrackEntry::at(Location::default())
            };
            inline_table(
                &TRACK_ENTRY_SECTION.emit_pairs(&entry, &TrackEntry::at(Location::default())),
            )
        }
    }
}

/// `authentication = { ... }` as read: whether `auth_type` is valid, the password if valid.
struct Authentication {
    pass_type: bool,
    pass: Option<String>,
    spans: Spans,
}

impl Authentication {
    fn at(location: Location) -> Self {
        Authentication { pass_type: false, pass: None, spans: Spans::at_section(location) }
    }
}

impl Located for Authentication {
    fn spans_mut(&mut self) -> &mut Spans {
        &mut self.spans
    }
}

/// The keys of `authentication`; documented in its row of the `[[vrrp_instance]]` table.
const AUTHENTICATION_SECTION: Section<Authentication> = Section {
    header: AUTHENTICATION,
    misplaced: |_| None,
    required: &["auth_type", "auth_pass"],
    drop_on_error: &[],
    nested: &[],
    elsewhere: &[],
    finish: None,
    settings: &[
        Setting {
            name: "auth_type",
            doc: doc(r#"`"PASS"`"#, "required", "keepalived's `AH` is not supported."),
            read: |p, k, v, a| a.pass_type = p.auth_type(k, v).is_some(),
            emit: |a, _| a.pass.is_some().then(|| string("PASS")),
        },
        Setting {
            name: "auth_pass",
            doc: doc("string, 1–8 bytes", "required", "The password."),
            read: |p, k, v, a| a.pass = p.auth_pass(k, v),
            emit: |a, _| a.pass.as_deref().map(string),
        },
    ],
};

/// A `{ name, weight }` entry of `track_interface` or `track_script` as read; `weight` is
/// `Err` when written wrong.
struct TrackEntry {
    name: Option<String>,
    weight: Result<Option<i32>, ()>,
    spans: Spans,
}

impl TrackEntry {
    fn at(location: Location) -> Self {
        TrackEntry { name: None, weight: Ok(None), spans: Spans::at_section(location) }
    }
}

impl Located for TrackEntry {
    fn spans_mut(&mut self) -> &mut Spans {
        &mut self.spans
    }
}

/// The keys of a track entry written as a table (read under the entry's own name: "a
/// `track_script` entry"); documented in the `track_*` rows of the `[[vrrp_instance]]` table.
const TRACK_ENTRY_SECTION: Section<TrackEntry> = Section {
    header: "a track entry",
    misplaced: |_| None,
    required: &["name"],
    drop_on_error: &[],
    nested: &[],
    elsewhere: &[],
    finish: None,
    settings: &[
        Setting {
            name: "name",
            doc: doc("string", "required", "The interface or `[[vrrp_script]]`."),
            read: |p, k, v, t| t.name = p.name(k, v),
            emit: |t, _| t.name.as_deref().map(string),
        },
        Setting {
            name: "weight",
            doc: doc("integer -254–254", "none", "Added to the priority instead of FAULT."),
            read: |p, k, v, t| t.weight = p.track_weight(k, v).map(Some).ok_or(()),
            emit: |t, _| t.weight.ok().flatten().map(|w| w.to_string()),
        },
    ],
};

/// The settings of a `[[vrrp_instance]]`, in the reference's order.
const INSTANCE_SECTION: Section<Instance> = Section {
    header: VRRP_INSTANCE,
    misplaced: misplaced_in_instance,
    required: &["name", "interface", "virtual_router_id", "virtual_ipaddress"],
    drop_on_error: &[],
    nested: &[],
    elsewhere: &[],
    finish: Some(|p, table, i, _| {
        let conflict = "are the same setting (keepalived calls it `garp_master_delay`); keep only \
                        one";
        let one = p.either(table, ["garp_master_refresh_delay", "garp_master_delay"], conflict);
        // As keepalived: IPv6 instances default to the only version that carries IPv6.
        let ipv6 = i.instance.virtual_ipaddress.first().is_some_and(|v| v.address.is_ipv6());
        i.instance.version = i.version.unwrap_or(if ipv6 { 3 } else { DEFAULT_VERSION });
        one.is_some()
    }),
    settings: &[
        Setting {
            name: "name",
            doc: doc("string", "required", "Unique among the instances."),
            read: |p, k, v, i| {
                if let Some(name) = p.defined_name(k, v, "vrrp_instance", &mut i.names) {
                    i.instance.name = name;
                }
            },
            emit: |i, _| Some(string(&i.instance.name)),
        },
        Setting {
            name: "state",
            doc: doc(
                r#"`"MASTER"` \| `"BACKUP"`"#,
                r#"`"BACKUP"`"#,
                "The initial state asked for.",
            ),
            read: |p, k, v, i| {
                if let Some(master) = p.initial_state(k, v) {
                    i.instance.initial_master = master;
                }
            },
            emit: |i, _| i.instance.initial_master.then(|| string("MASTER")),
        },
        Setting {
            name: "interface",
            doc: doc("string", "required", "The NIC the adverts are sent and received on."),
            read: |p, k, v, i| {
                if let Some(interface) = p.name(k, v) {
                    i.instance.interface = interface;
                }
            },
            emit: |i, _| Some(string(&i.instance.interface)),
        },
        Setting {
            name: "virtual_router_id",
            doc: doc("integer 1–255", "required", "The same on every router of the group."),
            read: |p, k, v, i| {
                if let Some(id) = p.byte(k, v, VIRTUAL_ROUTER_ID_LIMITS) {
                    i.instance.virtual_router_id = id;
                }
            },
            emit: |i, _| Some(integer(&i.instance.virtual_router_id)),
        },
        Setting {
            name: "priority",
            doc: doc("integer 1–255", "`100`", "The highest priority is MASTER."),
            read: |p, k, v, i| {
                if let Some(priority) = p.byte(k, v, PRIORITY_LIMITS) {
                    i.instance.priority = priority;
                }
            },
            emit: |i, _| unless(&i.instance.priority, &DEFAULT_PRIORITY, integer),
        },
        Setting {
            name: "advert_int",
            doc: doc("seconds", "`1`", "Interval between adverts."),
            // Up to the longest of either version; what fits the version is validation's.
            read: |p, k, v, i| {
                let max = u32::try_from(MAX_ADVERT_INT_V2.as_secs()).unwrap_or(u32::MAX);
                if let Some(interval) = p.positive_seconds(k, v, max) {
                    i.instance.advert_int = interval;
                }
            },
            emit: |i, _| unless(&i.instance.advert_int, &DEFAULT_ADVERT_INT, seconds),
        },
        Setting {
            name: "version",
            doc: doc("`2` \\| `3`", "`2`; `3` for IPv6 addresses", "The VRRP version."),
            read: |p, k, v, i| {
                i.version = p.version(k, v);
            },
            // The default follows the addresses' family.
            emit: |i, _| {
                let default = if i.instance.is_ipv6() { 3 } else { DEFAULT_VERSION };
                unless(&i.instance.version, &default, integer)
            },
        },
        Setting {
            name: "virtual_ipaddress",
            doc: doc(
                r#"array of `"ADDRESS[/PREFIX]"` strings"#,
                "required, at least one",
                "The addresses the MASTER holds.",
            ),
            read: |p, k, v, i| {
                let mut at = Vec::new();
                if let Some(addresses) = p.virtual_addresses(k, v, &mut at) {
                    i.instance.virtual_ipaddress = addresses;
                }
                i.spans.set_items("virtual_ipaddress", at);
            },
            emit: |i, _| Some(array(&i.instance.virtual_ipaddress, |vip| string(&vip.to_string()))),
        },
        Setting {
            name: "nopreempt",
            doc: doc("boolean", "`false`", "A higher priority does not take over from a MASTER."),
            read: |p, k, v, i| {
                if let Some(nopreempt) = p.boolean(k, v) {
                    i.instance.preempt = !nopreempt;
                }
            },
            emit: |i, _| (!i.instance.preempt).then(|| boolean(&true)),
        },
        Setting {
            name: "preempt_delay",
            doc: doc("seconds, 0–1000", "`0`", "After starting, wait this long to take over."),
            read: |p, k, v, i| {
                if let Some(delay) = p.seconds(k, v, 0..=MAX_PREEMPT_DELAY_SECS) {
                    i.instance.preempt_delay = delay;
                }
            },
            emit: |i, _| unless(&i.instance.preempt_delay, &Duration::ZERO, seconds),
        },
        Setting {
            name: "unicast_src_ip",
            doc: doc("IP address string", "an address of `interface`", "Source of the adverts."),
            read: |p, k, v, i| {
                if let Some(ip) = p.ip_address(k, v) {
                    i.instance.unicast_src_ip = Some(ip);
                }
            },
            emit: |i, _| i.instance.unicast_src_ip.as_ref().map(address),
        },
        Setting {
            name: "unicast_peer",
            doc: doc("array of IP address strings", "none: multicast", "The other routers."),
            read: |p, k, v, i| {
                let mut at = Vec::new();
                if let Some(peers) = p.unicast_peers(k, v, &mut at) {
                    i.instance.unicast_peer = peers;
                }
                i.spans.set_items("unicast_peer", at);
            },
            emit: |i, _| {
                let peers = &i.instance.unicast_peer;
                (!peers.is_empty()).then(|| array(peers, address))
            },
        },
        Setting {
            name: "authentication",
            doc: doc("table", "none", "VRRPv2's simple password."),
            read: |p, k, v, i| {
                i.instance.auth_pass = p.authentication(k, v);
            },
            emit: |i, _| {
                let pass = i.instance.auth_pass.clone()?;
                let given = Authentication {
                    pass_type: true,
                    pass: Some(pass),
                    ..Authentication::at(i.instance.location)
                };
                let pairs = AUTHENTICATION_SECTION
                    .emit_pairs(&given, &Authentication::at(i.instance.location));
                Some(inline_table(&pairs))
            },
        },
        Setting {
            name: "track_interface",
            doc: doc(
                "array of names or `{ name, weight }` tables",
                "none",
                "Interfaces whose state changes the instance's.",
            ),
            read: |p, k, v, i| {
                let Some(tracked) = p.tracked(k, v) else { return };
                let at = tracked.iter().map(|t| t.at).collect();
                i.spans.set_items("track_interface", at);
                let weight = |t: &Tracked| t.weight.unwrap_or(0);
                let entries = tracked
                    .iter()
                    .map(|t| TrackInterface { name: t.name.clone(), weight: weight(t) });
                i.instance.track_interface = entries.collect();
            },
            emit: |i, _| {
                let tracked = &i.instance.track_interface;
                (!tracked.is_empty()).then(|| {
                    array(tracked, |t| tracked_entry(&t.name, Some(t.weight).filter(|w| *w != 0)))
                })
            },
        },
        Setting {
            name: "track_script",
            doc: doc(
                "array of names or `{ name, weight }` tables",
                "none",
                "`[[vrrp_script]]`s whose results change the instance's state or priority.",
            ),
            read: |p, k, v, i| {
                let scripts: Vec<&str> = i.scripts.iter().map(String::as_str).collect();
                if let Some(tracked) = p.track_scripts(k, v, &scripts) {
                    i.instance.track_script = tracked;
                }
            },
            emit: |i, _| {
                let tracked = &i.instance.track_script;
                (!tracked.is_empty())
                    .then(|| array(tracked, |t| tracked_entry(&t.script, t.weight)))
            },
        },
        instance_notify!("notify_master", notify_master, "Run on becoming MASTER."),
        instance_notify!("notify_backup", notify_backup, "Run on becoming BACKUP."),
        instance_notify!("notify_fault", notify_fault, "Run on becoming FAULT."),
        instance_notify!("notify_stop", notify_stop, "Run when the instance stops."),
        instance_notify!("notify", notify, "Run on every change."),
        Setting {
            name: "garp_master_repeat",
            doc: doc(
                "integer 1–100",
                "`5`",
                "Gratuitous ARPs (unsolicited NAs) on becoming MASTER.",
            ),
            read: |p, k, v, i| {
                if let Some(repeat) = p.integer_in(k, v, GARP_REPEAT_LIMITS) {
                    i.instance.garp_master_repeat = repeat;
                }
            },
            emit: |i, _| unless(&i.instance.garp_master_repeat, &DEFAULT_GARP_REPEAT, integer),
        },
        Setting {
            name: "garp_master_refresh_delay",
            doc: doc("seconds, 0–86400", "`5`", "When they are sent again."),
            read: |p, k, v, i| read_garp_delay(p, k, v, i, "garp_master_delay"),
            emit: |i, _| {
                let delay = &i.instance.garp_master_refresh_delay;
                unless(delay, &DEFAULT_GARP_REFRESH_DELAY, seconds)
            },
        },
        Setting {
            name: "garp_master_delay",
            doc: doc(
                "seconds, 0–86400",
                "`5`",
                "keepalived's name of `garp_master_refresh_delay`.",
            ),
            read: |p, k, v, i| read_garp_delay(p, k, v, i, "garp_master_refresh_delay"),
            // Written as `garp_master_refresh_delay`.
            emit: |_, _| None,
        },
        instance_flag!(
            "lower_prio_no_advert",
            lower_prio_no_advert,
            "No answer to lower priorities."
        ),
        instance_flag!("skip_check_adv_addr", skip_check_adv_addr, "Skip comparing the addresses."),
    ],
};

/// The lines `lb convert` writes for `instance`.
pub(in crate::config) fn instance_emit(instance: &VrrpInstance) -> String {
    let location = instance.location;
    let instance = Instance {
        instance: instance.clone(),
        spans: Spans::at_section(location),
        names: Names::default(),
        scripts: Vec::new(),
        version: None,
    };
    INSTANCE_SECTION.emit(&instance, &instance)
}

/// A `[[vrrp_script]]` as read: the script, where its values were written, and the names of
/// the scripts before it.
struct Script {
    script: VrrpScript,
    spans: Spans,
    names: Names,
}

impl Located for Script {
    fn spans_mut(&mut self) -> &mut Spans {
        &mut self.spans
    }
}

/// The settings of a `[[vrrp_script]]`; `lb convert` writes the model's through [`script_emit`].
const SCRIPT_SECTION: Section<Script> = Section {
    header: VRRP_SCRIPT,
    misplaced: misplaced_in_script,
    required: &["name", "script"],
    drop_on_error: &[],
    nested: &[],
    elsewhere: &[],
    // keepalived's default timeout is the interval.
    finish: Some(|_, table, s, _| {
        if !table.contains_key("timeout") {
            s.script.timeout = s.script.interval;
        }
        true
    }),
    settings: &[
        Setting {
            name: "name",
            doc: Doc { ty: "string", default: "required", meaning: "Unique among the scripts." },
            read: |p, k, v, s| {
                if let Some(name) = p.defined_name(k, v, "vrrp_script", &mut s.names) {
                    s.script.name = name;
                }
            },
            emit: |s, _| Some(string(&s.script.name)),
        },
        Setting {
            name: "script",
            doc: Doc {
                ty: "command line (string)",
                default: "required",
                meaning: "Run by `/bin/sh -c`.",
            },
            read: |p, k, v, s| {
                if let Some(script) = p.command(k, v) {
                    s.script.script = script;
                }
            },
            emit: |s, _| Some(string(&s.script.script)),
        },
        Setting {
            name: "interval",
            doc: Doc {
                ty: "seconds, more than 0, at most 86400",
                default: "`1`",
                meaning: "Time between runs.",
            },
            read: |p, k, v, s| {
                if let Some(interval) = p.positive_seconds(k, v, MAX_SECONDS) {
                    s.script.interval = interval;
                }
            },
            emit: |s, _| unless(&s.script.interval, &DEFAULT_SCRIPT_INTERVAL, seconds),
        },
        Setting {
            name: "timeout",
            doc: Doc {
                ty: "seconds, more than 0, at most 86400",
                default: "the `interval`",
                meaning: "A run taking longer fails.",
            },
            read: |p, k, v, s| {
                if let Some(timeout) = p.positive_seconds(k, v, MAX_SECONDS) {
                    s.script.timeout = timeout;
                }
            },
            // The default is the interval.
            emit: |s, _| unless(&s.script.timeout, &s.script.interval, seconds),
        },
        Setting {
            name: "weight",
            doc: Doc {
                ty: "integer −254–254",
                default: "`0`",
                meaning: "`0`: while the script fails, the instance is FAULT; else added to the \
                     priority (positive: while it succeeds, negative: while it fails).",
            },
            read: |p, k, v, s| {
                if let Some(weight) = p.track_weight(k, v) {
                    s.script.weight = weight;
                }
            },
            emit: |s, _| unless(&s.script.weight, &0, integer),
        },
        Setting {
            name: "rise",
            doc: Doc {
                ty: "integer ≥ 1",
                default: "`1`",
                meaning: "Consecutive successes for a failed script to count as succeeding.",
            },
            read: |p, k, v, s| {
                if let Some(rise) = p.integer_in(k, v, 1..=u32::MAX) {
                    s.script.rise = rise;
                }
            },
            emit: |s, _| unless(&s.script.rise, &1, integer),
        },
        Setting {
            name: "fall",
            doc: Doc {
                ty: "integer ≥ 1",
                default: "`1`",
                meaning: "Consecutive failures for a succeeding script to count as failed.",
            },
            read: |p, k, v, s| {
                if let Some(fall) = p.integer_in(k, v, 1..=u32::MAX) {
                    s.script.fall = fall;
                }
            },
            emit: |s, _| unless(&s.script.fall, &1, integer),
        },
    ],
};

/// The lines `lb convert` writes for `script`.
pub(in crate::config) fn script_emit(script: &VrrpScript) -> String {
    let location = script.location;
    let script = Script {
        script: script.clone(),
        spans: Spans::at_section(location),
        names: Names::default(),
    };
    SCRIPT_SECTION.emit(&script, &script)
}

/// A `[[vrrp_sync_group]]` as read: the group, where its values were written, the names of the
/// groups before it, the instances it may list and the instances already in a group.
struct SyncGroup {
    group: VrrpSyncGroup,
    spans: Spans,
    names: Names,
    instances: Vec<String>,
    members: Vec<Member>,
}

impl Located for SyncGroup {
    fn spans_mut(&mut self) -> &mut Spans {
        &mut self.spans
    }
}

/// The settings of a `[[vrrp_sync_group]]`; `lb convert` writes the model's through
/// [`sync_group_emit`].
const SYNC_GROUP_SECTION: Section<SyncGroup> = Section {
    header: VRRP_SYNC_GROUP,
    misplaced: misplaced_in_sync_group,
    required: &["name", "group"],
    drop_on_error: &[],
    nested: &[],
    elsewhere: &[],
    finish: None,
    settings: &[
        Setting {
            name: "name",
            doc: Doc {
                ty: "string",
                default: "required",
                meaning: "Unique among the sync groups.",
            },
            read: |p, k, v, g| {
                if let Some(name) = p.defined_name(k, v, "vrrp_sync_group", &mut g.names) {
                    g.group.name = name;
                }
            },
            emit: |g, _| Some(string(&g.group.name)),
        },
        Setting {
            name: "group",
            doc: Doc {
                ty: "array of instance names",
                default: "required, at least one",
                meaning: "The vrrp_instances that change state together; each in one group only.",
            },
            read: |p, k, v, g| {
                let section = g.spans.section();
                let instances: Vec<&str> = g.instances.iter().map(String::as_str).collect();
                if let Some(group) = p.group(k, v, section, &instances, &mut g.members) {
                    g.group.group = group;
                }
            },
            emit: |g, _| Some(array(&g.group.group, |name| string(name))),
        },
        Setting {
            name: "notify_master",
            doc: NOTIFY_DOC,
            read: |p, k, v, g| g.group.notify_master = p.command(k, v),
            emit: |g, _| g.group.notify_master.as_deref().map(string),
        },
        Setting {
            name: "notify_backup",
            doc: NOTIFY_DOC,
            read: |p, k, v, g| g.group.notify_backup = p.command(k, v),
            emit: |g, _| g.group.notify_backup.as_deref().map(string),
        },
        Setting {
            name: "notify_fault",
            doc: NOTIFY_DOC,
            read: |p, k, v, g| g.group.notify_fault = p.command(k, v),
            emit: |g, _| g.group.notify_fault.as_deref().map(string),
        },
    ],
};

const NOTIFY_DOC: Doc = Doc {
    ty: "command line (string)",
    default: "none",
    meaning: "Run when the group changes to that state.",
};

/// The lines `lb convert` writes for `group`.
pub(in crate::config) fn sync_group_emit(group: &VrrpSyncGroup) -> String {
    let group = SyncGroup {
        group: group.clone(),
        spans: Spans::at_section(group.location),
        names: Names::default(),
        instances: Vec::new(),
        members: Vec::new(),
    };
    SYNC_GROUP_SECTION.emit(&group, &group)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::super::model::Config;
    use super::super::super::test_support::{FakeHost, Scenario, assert_toml_scenarios, doc};
    use super::super::super::{notices, parse_toml};
    use super::*;

    /// Base lines 1-5: a valid IPv4 instance on eth0.
    const VI: &[&str] = &[
        "[[vrrp_instance]]",
        "name = 'VI_1'",
        "interface = 'eth0'",
        "virtual_router_id = 51",
        "virtual_ipaddress = ['192.0.2.100/24']",
    ];

    /// Base lines 1-3: a valid script.
    const SCRIPT: &[&str] = &["[[vrrp_script]]", "name = 'chk'", "script = '/bin/true'"];

    /// Base lines 1-10: [`VI`], then a second valid instance on eth1 (lines 6-10).
    const TWO: &[&str] = &[
        "[[vrrp_instance]]",
        "name = 'VI_1'",
        "interface = 'eth0'",
        "virtual_router_id = 51",
        "virtual_ipaddress = ['192.0.2.100/24']",
        "[[vrrp_instance]]",
        "name = 'VI_2'",
        "interface = 'eth1'",
        "virtual_router_id = 52",
        "virtual_ipaddress = ['192.0.2.200/24']",
    ];

    /// What the front end reports, each the only error of its document.
    const SCENARIOS: &[Scenario] = &[
        // Sections and keys.
        (
            "misspelled top-level section",
            &[],
            &["[[vrrp_instances]]"],
            "unknown key `vrrp_instances` at top level; did you mean `vrrp_instance`?",
            "1:3",
        ),
        (
            "instance as a plain table",
            &[],
            &["[vrrp_instance]", "name = 'VI_1'"],
            "`vrrp_instance` must be an array of tables: write [[vrrp_instance]] once per entry",
            "1:1",
        ),
        (
            "script as a plain table",
            &[],
            &["vrrp_script = { name = 'chk', script = '/bin/true' }"],
            "`vrrp_script` must be an array of tables: write [[vrrp_script]] once per entry",
            "1:15",
        ),
        (
            "misspelled instance key",
            VI,
            &["priorty = 90"],
            "unknown key `priorty` in [[vrrp_instance]]; did you mean `priority`?",
            "6:1",
        ),
        (
            "unknown instance key without a close match",
            VI,
            &["  lvs_sync_daemon_interface = 'eth0'"],
            "unknown key `lvs_sync_daemon_interface` in [[vrrp_instance]]",
            "6:3",
        ),
        (
            "keepalived keyword lb does not take",
            VI,
            &["use_vmac = true"],
            "keepalived's `use_vmac` is not supported in [[vrrp_instance]]",
            "6:1",
        ),
        (
            "keepalived's periodic gratuitous ARPs",
            VI,
            &["garp_master_refresh = 60"],
            "keepalived's `garp_master_refresh` (gratuitous ARPs repeated while MASTER) is not \
             supported: lb sends them `garp_master_repeat` times on becoming MASTER, and again \
             after `garp_master_refresh_delay`",
            "6:1",
        ),
        (
            "preempt written out",
            VI,
            &["preempt = true"],
            "`preempt` is the default: write `nopreempt = true` to turn it off (as in keepalived)",
            "6:1",
        ),
        (
            "password outside the authentication table",
            VI,
            &["auth_pass = 'secret'"],
            "`auth_pass` belongs in the instance's `authentication` table: `authentication = { \
             auth_type = \"PASS\", auth_pass = \"...\" }`",
            "6:1",
        ),
        (
            "script setting in an instance",
            VI,
            &["interval = 2"],
            "`interval` is a vrrp_script setting: move it to a [[vrrp_script]] and name that \
             script in the instance's `track_script`",
            "6:1",
        ),
        (
            "weight in an instance",
            VI,
            &["weight = -20"],
            "`weight` is set per tracked script or interface, `track_script = [{ name = \"...\", \
             weight = -20 }]`, or in the [[vrrp_script]]",
            "6:1",
        ),
        (
            "sync group setting in an instance",
            VI,
            &["group = ['VI_1']"],
            "`group` is a vrrp_sync_group setting: move it to a [[vrrp_sync_group]]",
            "6:1",
        ),
        // The instance's values.
        (
            "missing name",
            &[],
            &[
                "[[vrrp_instance]]",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['192.0.2.100']",
            ],
            "missing required key `name` in [[vrrp_instance]]",
            "1:1",
        ),
        (
            "missing interface",
            &[],
            &[
                "",
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['192.0.2.100']",
            ],
            "missing required key `interface` in [[vrrp_instance]]",
            "2:1",
        ),
        (
            "missing virtual_router_id",
            &[],
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth0'",
                "virtual_ipaddress = ['192.0.2.100']",
            ],
            "missing required key `virtual_router_id` in [[vrrp_instance]]",
            "1:1",
        ),
        (
            "missing virtual_ipaddress",
            &[],
            &["[[vrrp_instance]]", "name = 'VI_1'", "interface = 'eth0'", "virtual_router_id = 51"],
            "missing required key `virtual_ipaddress` in [[vrrp_instance]]",
            "1:1",
        ),
        (
            "empty name",
            &[],
            &[
                "[[vrrp_instance]]",
                "name = ''",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['192.0.2.100']",
            ],
            "`name` must not be empty",
            "2:8",
        ),
        (
            "name as a number",
            &[],
            &[
                "[[vrrp_instance]]",
                "name = 1",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['192.0.2.100']",
            ],
            "`name` must be a string, found integer 1",
            "2:8",
        ),
        (
            "instance name defined twice",
            VI,
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth1'",
                "virtual_router_id = 52",
                "virtual_ipaddress = ['192.0.2.200']",
            ],
            "vrrp_instance `VI_1` is already defined at line 2",
            "7:8",
        ),
        (
            "unknown state",
            VI,
            &["state = 'primary'"],
            "`state` must be \"MASTER\" or \"BACKUP\", found \"primary\"",
            "6:9",
        ),
        (
            "state as a boolean",
            VI,
            &["state = true"],
            "`state` must be a string, found boolean true",
            "6:9",
        ),
        (
            "empty interface",
            &[],
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = ''",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['192.0.2.100']",
            ],
            "`interface` must not be empty",
            "3:13",
        ),
        (
            "virtual_router_id 0",
            &[],
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth0'",
                "virtual_router_id = 0",
                "virtual_ipaddress = ['192.0.2.100']",
            ],
            "`virtual_router_id` must be between 1 and 255, found 0",
            "4:21",
        ),
        (
            "virtual_router_id 256",
            &[],
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth0'",
                "virtual_router_id = 256",
                "virtual_ipaddress = ['192.0.2.100']",
            ],
            "`virtual_router_id` must be between 1 and 255, found 256",
            "4:21",
        ),
        (
            "priority 0",
            VI,
            &["priority = 0"],
            "`priority` must be between 1 and 255, found 0",
            "6:12",
        ),
        (
            "priority 256",
            VI,
            &["priority = 256"],
            "`priority` must be between 1 and 255, found 256",
            "6:12",
        ),
        (
            "quoted priority",
            VI,
            &["priority = '100'"],
            "`priority` must be an integer, found string \"100\"",
            "6:12",
        ),
        (
            "version 4",
            VI,
            &["version = 4"],
            "`version` must be 2 or 3 (VRRPv2 or VRRPv3), found 4",
            "6:11",
        ),
        (
            "version as a string",
            VI,
            &["version = 'v3'"],
            "`version` must be an integer, found string \"v3\"",
            "6:11",
        ),
        (
            "advert_int 0",
            VI,
            &["advert_int = 0"],
            "`advert_int` must be more than 0 and at most 255 seconds, found 0",
            "6:14",
        ),
        (
            "advert_int above any version's",
            VI,
            &["advert_int = 256"],
            "`advert_int` must be more than 0 and at most 255 seconds, found 256",
            "6:14",
        ),
        (
            "advert_int with a unit",
            VI,
            &["advert_int = '1s'"],
            "`advert_int` must be a number of seconds, found string \"1s\"",
            "6:14",
        ),
        (
            "virtual_ipaddress as a string",
            &[],
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = '192.0.2.100/24'",
            ],
            "`virtual_ipaddress` must be an array of addresses, like [\"192.0.2.100/24\"], found \
             string \"192.0.2.100/24\"",
            "5:21",
        ),
        (
            "no virtual address",
            &[],
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = []",
            ],
            "`virtual_ipaddress` must list at least one address",
            "5:21",
        ),
        (
            "virtual address out of range",
            &[],
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['192.0.2.100', '192.0.2.300/24']",
            ],
            "each `virtual_ipaddress` entry must be an IP address with an optional /PREFIX, like \
             \"192.0.2.100/24\", found \"192.0.2.300/24\"",
            "5:37",
        ),
        (
            "virtual address prefix too long",
            &[],
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['192.0.2.100/33']",
            ],
            "the prefix length of 192.0.2.100 in `virtual_ipaddress` must be 0 to 32, found \"33\"",
            "5:22",
        ),
        (
            "virtual address with an empty prefix",
            &[],
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['2001:db8::100/']",
            ],
            "the prefix length of 2001:db8::100 in `virtual_ipaddress` must be 0 to 128, found \"\"",
            "5:22",
        ),
        (
            "virtual address with keepalived's options",
            &[],
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['192.0.2.100/24 dev eth1']",
            ],
            "`virtual_ipaddress` entries are an address with an optional /PREFIX only: \
             keepalived's options after it (`dev`, `label`, `scope`, ...) are not supported, \
             found \"192.0.2.100/24 dev eth1\"",
            "5:22",
        ),
        (
            "virtual address as a number",
            &[],
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = [3221226084]",
            ],
            "each `virtual_ipaddress` entry must be an address string like \"192.0.2.100/24\", \
             found integer 3221226084",
            "5:22",
        ),
        (
            "nopreempt as a string",
            VI,
            &["nopreempt = 'yes'"],
            "`nopreempt` must be true or false, found string \"yes\"",
            "6:13",
        ),
        (
            "lower_prio_no_advert as a string",
            VI,
            &["lower_prio_no_advert = 'yes'"],
            "`lower_prio_no_advert` must be true or false, found string \"yes\"",
            "6:24",
        ),
        (
            "skip_check_adv_addr as a number",
            VI,
            &["skip_check_adv_addr = 1"],
            "`skip_check_adv_addr` must be true or false, found integer 1",
            "6:23",
        ),
        (
            "preempt_delay too long",
            VI,
            &["preempt_delay = 1001"],
            "`preempt_delay` must be between 0 and 1000 seconds, found 1001",
            "6:17",
        ),
        (
            "unicast_src_ip a host name",
            VI,
            &["unicast_src_ip = 'lb1'", "unicast_peer = ['192.0.2.2']"],
            "`unicast_src_ip` must be an IP address, found \"lb1\"",
            "6:18",
        ),
        (
            "unicast_peer a single address",
            VI,
            &["unicast_peer = '192.0.2.2'"],
            "`unicast_peer` must be an array of IP addresses, found string \"192.0.2.2\"",
            "6:16",
        ),
        (
            "unicast_peer a host name",
            VI,
            &["unicast_peer = ['192.0.2.2', 'lb2']"],
            "each `unicast_peer` entry must be an IP address, found \"lb2\"",
            "6:30",
        ),
        (
            "unicast_peer a number",
            VI,
            &["unicast_peer = [2]"],
            "each `unicast_peer` entry must be an IP address string, found integer 2",
            "6:17",
        ),
        (
            "AH authentication",
            VI,
            &["authentication = { auth_type = 'AH', auth_pass = 'secret' }"],
            "`auth_type` \"AH\" (IPsec authentication header) is not supported: use \"PASS\", or \
             no `authentication`",
            "6:32",
        ),
        (
            "unknown auth_type",
            VI,
            &["authentication = { auth_type = 'MD5', auth_pass = 'secret' }"],
            "`auth_type` must be \"PASS\", found \"MD5\"",
            "6:32",
        ),
        (
            "password longer than 8 bytes",
            VI,
            &["[vrrp_instance.authentication]", "auth_type = 'PASS'", "auth_pass = 'secret123'"],
            "`auth_pass` must be at most 8 bytes, found 9: VRRPv2 carries 8, and keepalived would \
             silently use only the first 8; shorten it to those",
            "8:13",
        ),
        (
            "password of 8 characters but more bytes",
            VI,
            &["authentication = { auth_type = 'PASS', auth_pass = 'pässwort' }"],
            "`auth_pass` must be at most 8 bytes, found 9",
            "6:52",
        ),
        (
            "empty password",
            VI,
            &["authentication = { auth_type = 'PASS', auth_pass = '' }"],
            "`auth_pass` must not be empty: leave `authentication` out instead",
            "6:52",
        ),
        (
            "authentication without a password",
            VI,
            &["authentication = { auth_type = 'PASS' }"],
            "missing required key `auth_pass` in [vrrp_instance.authentication]",
            "6:18",
        ),
        (
            "authentication without a type",
            VI,
            &["", "[vrrp_instance.authentication]", "auth_pass = 'secret'"],
            "missing required key `auth_type` in [vrrp_instance.authentication]",
            "7:1",
        ),
        (
            "misspelled authentication key",
            VI,
            &["authentication = { auth_type = 'PASS', auth_pass = 'x', auth_passwd = 'y' }"],
            "unknown key `auth_passwd` in [vrrp_instance.authentication]; did you mean \
             `auth_pass`?",
            "6:57",
        ),
        (
            "authentication as a password",
            VI,
            &["authentication = 'secret'"],
            "`authentication` must be a single table: write [vrrp_instance.authentication] once, \
             or `authentication = { ... }`; found string \"secret\"",
            "6:18",
        ),
        (
            "tracked interface weight too large",
            VI,
            &["track_interface = [{ name = 'eth1', weight = 255 }]"],
            "`weight` must be between -254 and 254, found 255",
            "6:46",
        ),
        (
            "tracked interface without a name",
            VI,
            &["track_interface = ['eth1', { weight = -10 }]"],
            "missing required key `name` in a `track_interface` entry",
            "6:28",
        ),
        (
            "tracked interface as a number",
            VI,
            &["track_interface = [1]"],
            "each `track_interface` entry must be a name or a { name = \"...\", weight = N } \
             table, found integer 1",
            "6:20",
        ),
        (
            "track_interface a single name",
            VI,
            &["track_interface = 'eth1'"],
            "`track_interface` must be an array of names, or of { name = \"...\", weight = N } \
             tables, found string \"eth1\"",
            "6:19",
        ),
        (
            "empty tracked interface name",
            VI,
            &["track_interface = ['']"],
            "`track_interface` must not be empty",
            "6:20",
        ),
        (
            "tracked script that does not exist, close to one that does",
            SCRIPT,
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['192.0.2.100']",
                "track_script = ['chk', { name = 'chk2', weight = 5 }]",
            ],
            "no vrrp_script is named `chk2`; did you mean `chk`?",
            "9:33",
        ),
        (
            "tracked script without any script",
            VI,
            &["track_script = ['chk_nginx']"],
            "no vrrp_script is named `chk_nginx`",
            "6:17",
        ),
        (
            "misspelled key of a tracked script",
            SCRIPT,
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['192.0.2.100']",
                "[[vrrp_instance.track_script]]",
                "name = 'chk'",
                "wieght = 5",
            ],
            "unknown key `wieght` in a `track_script` entry; did you mean `weight`?",
            "11:1",
        ),
        (
            "empty notify command",
            VI,
            &["notify_master = ' '"],
            "`notify_master` must not be empty: leave it out instead",
            "6:17",
        ),
        (
            "notify as an array",
            VI,
            &["notify = ['/bin/true']"],
            "`notify` must be a string, found an array",
            "6:10",
        ),
        (
            "garp_master_repeat 0",
            VI,
            &["garp_master_repeat = 0"],
            "`garp_master_repeat` must be between 1 and 100, found 0",
            "6:22",
        ),
        (
            "garp_master_refresh_delay negative",
            VI,
            &["garp_master_refresh_delay = -1"],
            "`garp_master_refresh_delay` must be between 0 and 86400 seconds, found -1",
            "6:29",
        ),
        (
            "both spellings of the gratuitous ARP delay",
            VI,
            &["garp_master_refresh_delay = 5", "garp_master_delay = 5"],
            "`garp_master_delay` and `garp_master_refresh_delay` are the same setting \
             (keepalived calls it `garp_master_delay`); keep only one",
            "7:1",
        ),
        // Scripts.
        (
            "script without a command",
            &[],
            &["[[vrrp_script]]", "name = 'chk'", "interval = 2"],
            "missing required key `script` in [[vrrp_script]]",
            "1:1",
        ),
        (
            "script without a name",
            &[],
            &["[[vrrp_script]]", "script = '/bin/true'"],
            "missing required key `name` in [[vrrp_script]]",
            "1:1",
        ),
        (
            "empty script command",
            &[],
            &["[[vrrp_script]]", "name = 'chk'", "script = ''"],
            "`script` must not be empty: leave it out instead",
            "3:10",
        ),
        (
            "script name defined twice",
            SCRIPT,
            &["[[vrrp_script]]", "name = 'chk'", "script = '/bin/false'"],
            "vrrp_script `chk` is already defined at line 2",
            "5:8",
        ),
        (
            "script interval 0",
            SCRIPT,
            &["interval = 0"],
            "`interval` must be more than 0 and at most 86400 seconds, found 0",
            "4:12",
        ),
        (
            "script timeout with a unit",
            SCRIPT,
            &["timeout = '2s'"],
            "`timeout` must be a number of seconds, found string \"2s\"",
            "4:11",
        ),
        (
            "script weight too small",
            SCRIPT,
            &["weight = -255"],
            "`weight` must be between -254 and 254, found -255",
            "4:10",
        ),
        (
            "script rise 0",
            SCRIPT,
            &["rise = 0"],
            "`rise` must be between 1 and 4294967295, found 0",
            "4:8",
        ),
        (
            "script fall negative",
            SCRIPT,
            &["fall = -1"],
            "`fall` must be between 1 and 4294967295, found -1",
            "4:8",
        ),
        (
            "misspelled script key",
            SCRIPT,
            &["intervall = 2"],
            "unknown key `intervall` in [[vrrp_script]]; did you mean `interval`?",
            "4:1",
        ),
        (
            "instance setting in a script",
            SCRIPT,
            &["priority = 100"],
            "`priority` is a vrrp_instance setting: move it to a [[vrrp_instance]]",
            "4:1",
        ),
        // Sync groups.
        (
            "sync group without a group",
            TWO,
            &["[[vrrp_sync_group]]", "name = 'G1'"],
            "missing required key `group` in [[vrrp_sync_group]]",
            "11:1",
        ),
        (
            "sync group without a name",
            TWO,
            &["[[vrrp_sync_group]]", "group = ['VI_1']"],
            "missing required key `name` in [[vrrp_sync_group]]",
            "11:1",
        ),
        (
            "empty sync group",
            TWO,
            &["[[vrrp_sync_group]]", "name = 'G1'", "group = []"],
            "`group` must list at least one vrrp_instance",
            "13:9",
        ),
        (
            "sync group of one name",
            TWO,
            &["[[vrrp_sync_group]]", "name = 'G1'", "group = 'VI_1'"],
            "`group` must be an array of vrrp_instance names, found string \"VI_1\"",
            "13:9",
        ),
        (
            "sync group naming no instance",
            TWO,
            &["[[vrrp_sync_group]]", "name = 'G1'", "group = ['VI_1', 'VI_3']"],
            "no vrrp_instance is named `VI_3`; did you mean `VI_1`?",
            "13:18",
        ),
        (
            "instance in two sync groups",
            TWO,
            &[
                "[[vrrp_sync_group]]",
                "name = 'G1'",
                "group = ['VI_1', 'VI_2']",
                "[[vrrp_sync_group]]",
                "name = 'G2'",
                "group = ['VI_2']",
            ],
            "vrrp_instance `VI_2` is already in the vrrp_sync_group at line 11: an instance can \
             be in one sync group only",
            "16:10",
        ),
        (
            "instance twice in one sync group",
            TWO,
            &["[[vrrp_sync_group]]", "name = 'G1'", "group = ['VI_1', 'VI_2', 'VI_1']"],
            "vrrp_instance `VI_1` is listed twice in this group",
            "13:26",
        ),
        (
            "sync group name defined twice",
            TWO,
            &[
                "[[vrrp_sync_group]]",
                "name = 'G1'",
                "group = ['VI_1']",
                "[[vrrp_sync_group]]",
                "name = 'G1'",
                "group = ['VI_2']",
            ],
            "vrrp_sync_group `G1` is already defined at line 12",
            "15:8",
        ),
        (
            "instance setting in a sync group",
            TWO,
            &["[[vrrp_sync_group]]", "name = 'G1'", "group = ['VI_1']", "priority = 100"],
            "`priority` is set per vrrp_instance, not per sync group: move it to the instances' \
             [[vrrp_instance]]",
            "14:1",
        ),
        (
            "misspelled sync group key",
            TWO,
            &["[[vrrp_sync_group]]", "name = 'G1'", "group = ['VI_1']", "notify_mastr = 'x'"],
            "unknown key `notify_mastr` in [[vrrp_sync_group]]; did you mean `notify_master`?",
            "14:1",
        ),
    ];

    #[test]
    fn scenarios() {
        assert_toml_scenarios(SCENARIOS);
    }

    /// A password is a secret: no message repeats it, whatever is wrong with it.
    #[test]
    fn passwords_are_not_repeated() {
        for pass in ["secret123", "pässwort", "a-very-long-password"] {
            let line = format!("authentication = {{ auth_type = 'PASS', auth_pass = '{pass}' }}");
            let text = doc(&[VI, &[line.as_str()]].concat());
            let errors = parse_toml(&text, Path::new("test.toml"), &FakeHost).unwrap_err();
            assert!(!errors.to_string().contains(&pass[..8]), "{errors}");
        }
    }

    fn parse_ok(lines: &[&str]) -> Config {
        let text = doc(lines);
        parse_toml(&text, Path::new("test.toml"), &FakeHost).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Valid documents, each checked on the model.
    #[test]
    fn values() {
        type Check = fn(&VrrpConfig);
        let cases: &[(&str, &[&str], &[&str], Check)] = &[
            ("defaults", VI, &[], |vrrp| {
                let vi = &vrrp.instances[0];
                assert!(!vi.initial_master);
                assert_eq!(vi.priority, 100);
                assert_eq!(vi.advert_int, Duration::from_secs(1));
                assert_eq!(vi.version, 2);
                assert_eq!(vi.virtual_ipaddress[0].to_string(), "192.0.2.100/24");
                assert!(vi.preempt);
                assert_eq!(vi.preempt_delay, Duration::ZERO);
                assert_eq!((&vi.unicast_peer, vi.unicast_src_ip), (&Vec::new(), None));
                assert_eq!(vi.auth_pass, None);
                assert!(vi.track_interface.is_empty() && vi.track_script.is_empty());
                assert_eq!((&vi.notify, &vi.notify_master, &vi.notify_stop), (&None, &None, &None));
                assert_eq!(vi.garp_master_repeat, 5);
                assert_eq!(vi.garp_master_refresh_delay, Duration::from_secs(5));
                assert!(vrrp.scripts.is_empty() && vrrp.sync_groups.is_empty());
            }),
            (
                "IPv6: version 3 by default, host prefix",
                &[
                    "[[vrrp_instance]]",
                    "name = 'VI_6'",
                    "interface = 'eth0'",
                    "virtual_router_id = 51",
                    "virtual_ipaddress = ['2001:db8::100', '2001:db8::101/64']",
                    "unicast_peer = ['2001:db8::2']",
                ],
                &[],
                |vrrp| {
                    let vi = &vrrp.instances[0];
                    assert_eq!(vi.version, 3);
                    let vips: Vec<String> =
                        vi.virtual_ipaddress.iter().map(ToString::to_string).collect();
                    assert_eq!(vips, ["2001:db8::100/128", "2001:db8::101/64"]);
                },
            ),
            ("IPv4 host address", VI, &[], |vrrp| {
                assert_eq!(vrrp.instances[0].virtual_ipaddress[0].prefix, 24);
            }),
            ("state in lower case", VI, &["state = 'master'"], |vrrp| {
                assert!(vrrp.instances[0].initial_master);
            }),
            ("state in mixed case", VI, &["state = 'Backup'"], |vrrp| {
                assert!(!vrrp.instances[0].initial_master);
            }),
            ("owner", VI, &["state = 'MASTER'", "priority = 255"], |vrrp| {
                assert_eq!(vrrp.instances[0].priority, 255);
            }),
            ("VRRPv3 hundredths", VI, &["version = 3", "advert_int = 0.05"], |vrrp| {
                assert_eq!(vrrp.instances[0].advert_int, Duration::from_millis(50));
            }),
            ("VRRPv3 longest", VI, &["version = 3", "advert_int = 40.95"], |vrrp| {
                assert_eq!(vrrp.instances[0].advert_int, Duration::from_millis(40_950));
            }),
            ("VRRPv2 longest", VI, &["advert_int = 255"], |vrrp| {
                assert_eq!(vrrp.instances[0].advert_int, Duration::from_secs(255));
            }),
            ("VRRPv2 whole seconds as a float", VI, &["advert_int = 3.0"], |vrrp| {
                assert_eq!(vrrp.instances[0].advert_int, Duration::from_secs(3));
            }),
            ("nopreempt", VI, &["nopreempt = true", "preempt_delay = 0.5"], |vrrp| {
                assert!(!vrrp.instances[0].preempt);
                assert_eq!(vrrp.instances[0].preempt_delay, Duration::from_millis(500));
            }),
            ("keepalived's name of the GARP delay", VI, &["garp_master_delay = 0"], |vrrp| {
                assert_eq!(vrrp.instances[0].garp_master_refresh_delay, Duration::ZERO);
            }),
            ("forged-advert settings off by default", VI, &[], |vrrp| {
                assert!(!vrrp.instances[0].lower_prio_no_advert);
                assert!(!vrrp.instances[0].skip_check_adv_addr);
            }),
            (
                "forged-advert settings on",
                VI,
                &["lower_prio_no_advert = true", "skip_check_adv_addr = true"],
                |vrrp| {
                    assert!(vrrp.instances[0].lower_prio_no_advert);
                    assert!(vrrp.instances[0].skip_check_adv_addr);
                },
            ),
            (
                "tracked interfaces by name and with a weight",
                VI,
                &["track_interface = ['eth1', { name = 'eth0', weight = -254 }]"],
                |vrrp| {
                    let tracked = &vrrp.instances[0].track_interface;
                    assert_eq!(
                        *tracked,
                        [
                            TrackInterface { name: "eth1".into(), weight: 0 },
                            TrackInterface { name: "eth0".into(), weight: -254 },
                        ]
                    );
                },
            ),
            (
                "tracked scripts as an array of tables",
                SCRIPT,
                &[
                    "[[vrrp_instance]]",
                    "name = 'VI_1'",
                    "interface = 'eth0'",
                    "virtual_router_id = 51",
                    "virtual_ipaddress = ['192.0.2.100']",
                    "[[vrrp_instance.track_script]]",
                    "name = 'chk'",
                    "weight = 254",
                    "[[vrrp_instance.track_script]]",
                    "name = 'chk'",
                ],
                |vrrp| {
                    assert_eq!(
                        vrrp.instances[0].track_script,
                        [
                            TrackScript { script: "chk".into(), weight: Some(254) },
                            TrackScript { script: "chk".into(), weight: None },
                        ]
                    );
                },
            ),
            (
                "script defined after the instance tracking it",
                VI,
                &["track_script = ['chk']", "[[vrrp_script]]", "name = 'chk'", "script = 'true'"],
                |vrrp| {
                    assert_eq!(vrrp.instances[0].track_script[0].script, "chk");
                    assert_eq!(vrrp.scripts[0].location, Location::new(7, 1));
                },
            ),
            (
                "authentication as a standard table, type in lower case",
                VI,
                &["[vrrp_instance.authentication]", "auth_type = 'pass'", "auth_pass = '12345678'"],
                |vrrp| {
                    assert_eq!(vrrp.instances[0].auth_pass.as_deref(), Some("12345678"));
                },
            ),
            ("script defaults", SCRIPT, &[], |vrrp| {
                let script = &vrrp.scripts[0];
                assert_eq!(script.script, "/bin/true");
                assert_eq!(
                    (script.interval, script.timeout),
                    (Duration::from_secs(1), Duration::from_secs(1))
                );
                assert_eq!((script.weight, script.rise, script.fall), (0, 1, 1));
            }),
            ("script timeout follows its interval", SCRIPT, &["interval = 2.5"], |vrrp| {
                assert_eq!(vrrp.scripts[0].timeout, Duration::from_millis(2500));
            }),
            (
                "inline arrays of tables",
                &[],
                &[
                    "vrrp_script = [{ name = 'chk', script = 'true', weight = 2 }]",
                    "vrrp_instance = [{ name = 'VI_1', interface = 'eth0', virtual_router_id = 1,",
                    "  virtual_ipaddress = ['192.0.2.100'], track_script = ['chk'] }]",
                    "vrrp_sync_group = [{ name = 'G', group = ['VI_1'] }]",
                ],
                |vrrp| {
                    assert_eq!(vrrp.scripts[0].location, Location::new(1, 16));
                    assert_eq!(vrrp.instances[0].location, Location::new(2, 18));
                    assert_eq!(vrrp.sync_groups[0].group, ["VI_1"]);
                },
            ),
        ];
        for (name, base, extra, check) in cases {
            let config = parse_ok(&[*base, *extra].concat());
            assert!(!config.vrrp.instances.is_empty() || !config.vrrp.scripts.is_empty(), "{name}");
            check(&config.vrrp);
        }
    }

    /// The example of the issue that asked for VRRP: must parse as-is, into exactly this model.
    #[test]
    fn contract_example_parses_into_the_model() {
        let text = r#"[[vrrp_instance]]
name = "VI_1"
state = "BACKUP"
interface = "eth0"
virtual_router_id = 51
priority = 90
advert_int = 1
version = 2
virtual_ipaddress = ["192.0.2.100/24"]
"#;
        let at = Location::new;
        let expected = Config {
            virtual_servers: Vec::new(),
            vrrp: VrrpConfig {
                instances: vec![VrrpInstance {
                    name: "VI_1".to_owned(),
                    virtual_router_id: 51,
                    priority: 90,
                    version: 2,
                    virtual_ipaddress: vec![VirtualAddress {
                        address: "192.0.2.100".parse().unwrap(),
                        prefix: 24,
                    }],
                    location: at(1, 1),
                    ..crate::fixture::vrrp_instance("VI_1", 51, &[])
                }],
                scripts: Vec::new(),
                sync_groups: Vec::new(),
            },
            vrrp_locations: vec![
                Spans::at_section(at(1, 1))
                    .with("name", at(2, 8))
                    .with("state", at(3, 9))
                    .with("interface", at(4, 13))
                    .with("virtual_router_id", at(5, 21))
                    .with("priority", at(6, 12))
                    .with("advert_int", at(7, 14))
                    .with("version", at(8, 11))
                    .with("virtual_ipaddress", at(9, 21))
                    .with_items("virtual_ipaddress", &[at(9, 22)]),
            ],
            ..crate::fixture::config("test.toml", Vec::new())
        };
        let config = parse_toml(text, Path::new("test.toml"), &FakeHost).unwrap();
        assert_eq!(config, expected);
        assert_eq!(notices(&config), Vec::new());
    }

    /// A file using every VRRP key, into exactly this model.
    #[test]
    fn every_setting_parses_into_the_model() {
        let text = r#"[[vrrp_script]]
name = "chk_nginx"
script = "/usr/bin/pgrep nginx"
interval = 2
timeout = 1.5
weight = -20
rise = 2
fall = 3

[[vrrp_instance]]
name = "VI_1"
state = "MASTER"
interface = "eth0"
virtual_router_id = 51
priority = 150
advert_int = 0.5
version = 3
virtual_ipaddress = ["192.0.2.100/24", "192.0.2.101"]
nopreempt = true
preempt_delay = 30
unicast_src_ip = "192.0.2.1"
unicast_peer = ["192.0.2.2", "192.0.2.3"]
track_interface = ["eth1", { name = "eth0", weight = -50 }]
track_script = [{ name = "chk_nginx", weight = 10 }]
notify_master = "/etc/lb/notify.sh master"
notify_backup = "/etc/lb/notify.sh backup"
notify_fault = "/etc/lb/notify.sh fault"
notify_stop = "/etc/lb/notify.sh stop"
notify = "/etc/lb/notify.sh"
garp_master_repeat = 3
garp_master_refresh_delay = 10

[[vrrp_instance]]
name = "VI_2"
interface = "eth1"
virtual_router_id = 52
virtual_ipaddress = ["192.0.2.200/24"]
authentication = { auth_type = "PASS", auth_pass = "s3cret" }
track_script = ["chk_nginx"]
lower_prio_no_advert = true
skip_check_adv_addr = true

[[vrrp_sync_group]]
name = "G1"
group = ["VI_1", "VI_2"]
notify_master = "/etc/lb/group.sh master"
notify_backup = "/etc/lb/group.sh backup"
notify_fault = "/etc/lb/group.sh fault"
"#;
        let at = Location::new;
        let ip = |text: &str| -> IpAddr { text.parse().unwrap() };
        let vip = |text: &str, prefix| VirtualAddress { address: ip(text), prefix };
        let command = |text: &str| Some(text.to_owned());
        let script = VrrpScript {
            name: "chk_nginx".to_owned(),
            script: "/usr/bin/pgrep nginx".to_owned(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_millis(1500),
            weight: -20,
            rise: 2,
            fall: 3,
            location: at(1, 1),
        };
        let first = VrrpInstance {
            name: "VI_1".to_owned(),
            initial_master: true,
            virtual_router_id: 51,
            priority: 150,
            advert_int: Duration::from_millis(500),
            version: 3,
            virtual_ipaddress: vec![vip("192.0.2.100", 24), vip("192.0.2.101", 32)],
            preempt: false,
            preempt_delay: Duration::from_secs(30),
            unicast_peer: vec![ip("192.0.2.2"), ip("192.0.2.3")],
            unicast_src_ip: Some(ip("192.0.2.1")),
            track_interface: vec![
                TrackInterface { name: "eth1".to_owned(), weight: 0 },
                TrackInterface { name: "eth0".to_owned(), weight: -50 },
            ],
            track_script: vec![TrackScript { script: "chk_nginx".to_owned(), weight: Some(10) }],
            notify_master: command("/etc/lb/notify.sh master"),
            notify_backup: command("/etc/lb/notify.sh backup"),
            notify_fault: command("/etc/lb/notify.sh fault"),
            notify_stop: command("/etc/lb/notify.sh stop"),
            notify: command("/etc/lb/notify.sh"),
            garp_master_repeat: 3,
            garp_master_refresh_delay: Duration::from_secs(10),
            location: at(10, 1),
            ..crate::fixture::vrrp_instance("VI_1", 51, &[])
        };
        let second = VrrpInstance {
            name: "VI_2".to_owned(),
            interface: "eth1".to_owned(),
            virtual_router_id: 52,
            version: 2,
            virtual_ipaddress: vec![vip("192.0.2.200", 24)],
            auth_pass: Some("s3cret".to_owned()),
            track_script: vec![TrackScript { script: "chk_nginx".to_owned(), weight: None }],
            lower_prio_no_advert: true,
            skip_check_adv_addr: true,
            location: at(33, 1),
            ..crate::fixture::vrrp_instance("VI_2", 52, &[])
        };
        let group = VrrpSyncGroup {
            name: "G1".to_owned(),
            group: vec!["VI_1".to_owned(), "VI_2".to_owned()],
            notify_master: command("/etc/lb/group.sh master"),
            notify_backup: command("/etc/lb/group.sh backup"),
            notify_fault: command("/etc/lb/group.sh fault"),
            location: at(43, 1),
        };
        // Where validation looks (the keys it names, the list items); the others are the
        // section's description's.
        let validated = |spans: &Spans| {
            let keys = [
                "name",
                "state",
                "interface",
                "virtual_router_id",
                "priority",
                "advert_int",
                "version",
                "unicast_src_ip",
                "authentication",
            ];
            let lists = ["virtual_ipaddress", "unicast_peer", "track_interface"];
            let located = keys.map(|k| spans.located(k)).to_vec();
            (spans.section(), located, lists.map(|k| spans.items(k).to_vec()))
        };
        let locations = [
            Spans::at_section(at(10, 1))
                .with("name", at(11, 8))
                .with("state", at(12, 9))
                .with("interface", at(13, 13))
                .with("virtual_router_id", at(14, 21))
                .with("priority", at(15, 12))
                .with("advert_int", at(16, 14))
                .with("version", at(17, 11))
                .with_items("virtual_ipaddress", &[at(18, 22), at(18, 40)])
                .with("unicast_src_ip", at(21, 18))
                .with_items("unicast_peer", &[at(22, 17), at(22, 30)])
                .with_items("track_interface", &[at(23, 20), at(23, 37)]),
            Spans::at_section(at(33, 1))
                .with("name", at(34, 8))
                .with("interface", at(35, 13))
                .with("virtual_router_id", at(36, 21))
                .with_items("virtual_ipaddress", &[at(37, 22)])
                .with("authentication", at(38, 18)),
        ];
        let config = parse_toml(text, Path::new("test.toml"), &FakeHost).unwrap();
        assert_eq!(
            config.vrrp,
            VrrpConfig {
                instances: vec![first, second],
                scripts: vec![script],
                sync_groups: vec![group]
            }
        );
        let got: Vec<_> = config.vrrp_locations.iter().map(validated).collect();
        assert_eq!(got, locations.iter().map(validated).collect::<Vec<_>>());
    }

    /// Every error is reported, and a section with one is left out of the model; the names of
    /// sections left out still count, so references to them are not errors too.
    #[test]
    fn all_errors_are_reported_and_sections_left_out() {
        let text = doc(&[
            "[[vrrp_script]]",
            "name = 'chk'",
            "script = '/bin/true'",
            "rise = 0",
            "[[vrrp_instance]]",
            "name = 'VI_1'",
            "interface = 'eth0'",
            "virtual_router_id = 51",
            "priority = 300",
            "virtual_ipaddress = ['192.0.2.100']",
            "track_script = ['chk']",
            "[[vrrp_instance]]",
            "name = 'VI_2'",
            "interface = 'eth1'",
            "virtual_router_id = 52",
            "virtual_ipaddress = ['192.0.2.200']",
            "[[vrrp_sync_group]]",
            "name = 'G1'",
            "group = ['VI_1', 'VI_2', 'VI_9']",
        ]);
        let (config, errors) = super::super::parse(&text, Path::new("test.toml"));
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "test.toml:4:8: `rise` must be between 1 and 4294967295, found 0",
                "test.toml:9:12: `priority` must be between 1 and 255, found 300",
                "test.toml:19:26: no vrrp_instance is named `VI_9`; did you mean `VI_1`?",
            ]
        );
        assert!(config.vrrp.scripts.is_empty());
        let names: Vec<&str> = config.vrrp.instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["VI_2"]);
        assert_eq!(config.vrrp_locations.len(), 1);
        assert_eq!(config.vrrp_locations[0].located("name"), Location::new(13, 8));
        assert!(config.vrrp.sync_groups.is_empty());
    }

    /// A misspelt key is reported, but leaves its section in the model (so that validation
    /// still judges the rest), as before the sections were described.
    #[test]
    fn an_unknown_key_does_not_leave_a_section_out() {
        let text = "[[vrrp_script]]\nname = 's'\nscript = '/bin/true'\nintervall = 2\n\
                    [[vrrp_instance]]\nname = 'vi'\ninterface = 'eth0'\nvirtual_router_id = 1\n\
                    virtual_ipaddress = ['192.0.2.1/24']\nversino = 3\n\
                    [[vrrp_sync_group]]\nname = 'g'\ngroup = ['vi']\nnotify_mastr = '/bin/x'\n";
        let (config, errors) = super::super::parse(text, std::path::Path::new("t.toml"));
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert!(shown.iter().all(|e| e.contains("unknown key")), "{shown:?}");
        assert_eq!(config.vrrp.scripts.len(), 1);
        assert_eq!(config.vrrp.instances.len(), 1);
        assert_eq!(config.vrrp.sync_groups.len(), 1);
    }

    /// Every key read here has its row in docs/config.md's tables (the authentication keys are
    /// in `authentication`'s).
    #[test]
    fn docs_list_every_vrrp_key() {
        use super::super::schema::docs::{assert_documented, config_md, table};
        let doc = config_md();
        assert_documented(&doc, "`[[vrrp_instance]]`", INSTANCE_SECTION.keys());
        assert_documented(&doc, "`[[vrrp_script]]`", SCRIPT_SECTION.keys());
        assert_documented(&doc, "`[[vrrp_sync_group]]`", SYNC_GROUP_SECTION.keys());
        let rows = table(&doc, "`[[vrrp_instance]]`");
        let authentication = rows.iter().find(|row| row[0] == "`authentication`");
        let meaning = authentication.and_then(|row| row.last()).expect("authentication row");
        for key in AUTHENTICATION_SECTION.keys().iter().chain(&TRACK_ENTRY_SECTION.keys()) {
            let written = meaning.contains(&format!("`{key}`"))
                || rows.iter().any(|row| row[0].starts_with("`track_") && row[1].contains(key));
            assert!(written, "`{key}` is not in docs/config.md [[vrrp_instance]]");
        }
    }

    #[test]
    fn misplaced_keys() {
        // Every key of one section that another takes gets a message saying where it belongs.
        for &key in SCRIPT_SECTION.keys().iter().filter(|k| !INSTANCE_SECTION.keys().contains(k)) {
            assert!(misplaced_in_instance(key).is_some(), "{key}");
        }
        for &key in INSTANCE_SECTION.keys().iter().filter(|k| !SCRIPT_SECTION.keys().contains(k)) {
            assert!(misplaced_in_script(key).is_some(), "{key}");
        }
        for &key in
            INSTANCE_SECTION.keys().iter().filter(|k| !SYNC_GROUP_SECTION.keys().contains(k))
        {
            assert!(misplaced_in_sync_group(key).is_some(), "{key}");
        }
        // An unsupported keyword is never one lb takes.
        for key in UNSUPPORTED_INSTANCE_KEYWORDS {
            assert!(!INSTANCE_SECTION.keys().contains(key), "{key}");
        }
    }
}
