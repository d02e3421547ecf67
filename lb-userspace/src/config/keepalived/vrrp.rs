//! `global_defs` and the VRRP blocks (`vrrp_instance`, `vrrp_script`, `vrrp_sync_group`): each
//! block is read (keywords, value types and ranges, references between blocks) into the VRRP part
//! of the model, with keepalived's defaults, once the whole file is known ([`model`]): an
//! instance's `interface` may come from `global_defs`' `default_interface`, its version from
//! `vrrp_version`, and whether its tracking weights count from the sync group it is in. Keywords
//! lb does not act on are accepted with a warning naming each.
//!
//! What the LVS part needs is kept apart ([`Vrrp::instances`]): which interface each instance's
//! virtual addresses are on, since keepalived's `virtual_server` does not say which interface its
//! traffic arrives on.

use std::net::IpAddr;
use std::time::Duration;

use super::super::flow_sync::{FlowSyncConfig, MIN_MAX_LEN, group_problem};
use super::super::model::{Location, Spans, host_prefix_len};
use super::super::vrrp::{
    DEFAULT_ADVERT_INT, DEFAULT_GARP_REFRESH_DELAY, DEFAULT_GARP_REPEAT, DEFAULT_PRIORITY,
    DEFAULT_SCRIPT_INTERVAL, DEFAULT_VERSION, GARP_REPEAT_LIMITS, MAX_AUTH_PASS_LEN,
    MAX_PREEMPT_DELAY_SECS, OWNER_PRIORITY, TrackInterface, TrackScript, VirtualAddress,
    VrrpConfig, VrrpInstance as InstanceModel, VrrpScript, VrrpSyncGroup,
};
use super::keywords::{self, GLOBAL_DEFS, Section};
use super::tree::{Block, Stmt, Word};
use super::values::{Cx, Seen};

/// Longest interface name Linux accepts (IFNAMSIZ − 1).
pub(super) const MAX_IFNAME_LEN: usize = 15;

/// Longest `garp_master_delay` and script `interval`/`timeout`, in seconds: a day (the native
/// format's limit).
const MAX_SECONDS: u32 = 86_400;

/// keepalived's tracking weights: −253 to 253.
const MAX_TRACKING_WEIGHT: i64 = 253;

/// A name and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Named {
    pub name: String,
    pub at: Location,
}

impl Named {
    fn of(word: &Word) -> Named {
        Named { name: word.text.clone(), at: word.at }
    }
}

/// A value and where it was written.
type At<T> = (T, Location);

/// What is read of a `vrrp_instance`: what the LVS part and the references between blocks need,
/// and the rest of its settings when the block had no errors.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct VrrpInstance {
    pub name: String,
    /// Where the block starts.
    pub at: Location,
    /// Where its name is.
    pub name_at: Location,
    pub interface: Option<Named>,
    /// `virtual_ipaddress` and `virtual_ipaddress_excluded`.
    pub addresses: Vec<VrrpAddress>,
    /// The `vrrp_script`s of its `track_script`.
    pub scripts: Vec<Named>,
    settings: Option<InstanceSettings>,
}

/// One address of a `virtual_ipaddress` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VrrpAddress {
    pub address: IpAddr,
    /// The prefix written, else the host prefix (/32, /128).
    pub prefix: u8,
    pub at: Location,
    /// `dev IFNAME`: the interface it is on, when not the instance's.
    pub dev: Option<Named>,
}

/// The settings of a `vrrp_instance` beyond those every reader needs; `None` when not written.
#[derive(Debug, Clone, PartialEq, Default)]
struct InstanceSettings {
    /// `state`: MASTER (true) or BACKUP.
    state: Option<At<bool>>,
    virtual_router_id: Option<At<u8>>,
    priority: Option<At<u8>>,
    advert_int: Option<At<Duration>>,
    version: Option<At<u8>>,
    /// `nopreempt` (false) or `preempt`, the last one written.
    preempt: Option<bool>,
    preempt_delay: Option<Duration>,
    unicast_src_ip: Option<At<IpAddr>>,
    unicast_peer: Vec<At<IpAddr>>,
    /// The password of `authentication` (the location of the keyword).
    auth_pass: Option<At<String>>,
    /// Each with where its name was written.
    track_interface: Vec<At<TrackInterface>>,
    track_script: Vec<At<TrackScript>>,
    notify_master: Option<String>,
    notify_backup: Option<String>,
    notify_fault: Option<String>,
    notify_stop: Option<String>,
    notify: Option<String>,
    garp_master_repeat: Option<u32>,
    garp_master_delay: Option<Duration>,
    lower_prio_no_advert: Option<bool>,
    skip_check_adv_addr: Option<bool>,
}

/// What is read of a `vrrp_sync_group`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SyncGroup {
    pub name: Named,
    /// Where the block starts.
    pub at: Location,
    pub members: Vec<Named>,
    /// `sync_group_tracking_weight` (or its old name `global_tracking`): the members' tracking
    /// weights count. Without it keepalived ignores them.
    tracking_weight: bool,
    /// `notify_master`, `notify_backup`, `notify_fault`, when the block had no errors.
    notify: Option<[Option<String>; 3]>,
}

/// Everything read from `global_defs` and the VRRP blocks.
#[derive(Debug, Default)]
pub(super) struct Vrrp {
    /// `global_defs`' `default_interface`: where an instance without `interface` puts its
    /// addresses.
    pub default_interface: Option<Named>,
    /// `global_defs`' `vrrp_version`, `vrrp_garp_master_delay`, `vrrp_garp_master_repeat`,
    /// `vrrp_lower_prio_no_advert` and `vrrp_skip_check_adv_addr`: the instances' defaults.
    version: Option<At<u8>>,
    garp_master_delay: Option<Duration>,
    garp_master_repeat: Option<u32>,
    lower_prio_no_advert: Option<bool>,
    skip_check_adv_addr: Option<bool>,
    pub instances: Vec<VrrpInstance>,
    /// Every `vrrp_script`'s name, also of those with errors.
    pub scripts: Vec<Named>,
    /// The `vrrp_script`s without errors.
    script_models: Vec<VrrpScript>,
    pub sync_groups: Vec<SyncGroup>,
    /// `global_defs`' `lvs_sync_daemon`.
    pub flow_sync: Option<FlowSyncConfig>,
    /// `global_defs`' `script_user USER [GROUP]`.
    pub script_user: Option<crate::config::ScriptUserSetting>,
}

impl Vrrp {
    /// The interface an address of `instance` is on: its `dev`, else the instance's, else the
    /// global default.
    pub fn interface_of<'a>(
        &'a self,
        instance: &'a VrrpInstance,
        address: &'a VrrpAddress,
    ) -> Option<&'a Named> {
        address.dev.as_ref().or(instance.interface.as_ref()).or(self.default_interface.as_ref())
    }
}

const EMAIL: &str = "lb sends no e-mail";
const NOT_IN_LB: &str = "lb's VRRP does not implement it";
const SCRIPTS: &str =
    "lb runs scripts as its own user, without keepalived's script security checks";
const GARP: &str = "lb sends `garp_master_repeat` gratuitous ARPs on becoming MASTER, and again \
                    after `garp_master_delay`";
const MULTICAST: &str = "lb sends its multicast adverts to 224.0.0.18 and ff02::12, VRRP's groups";

/// `lvs_sync_daemon INTERFACE [VRRP_INSTANCE] [id SYNC_ID] [maxlen LEN] [port PORT] [ttl TTL]
/// [group IP]`: `[flow_sync]`. `None` after an error (the file is refused anyway).
fn lvs_sync_daemon(cx: &mut Cx<'_>, s: &Stmt) -> Option<FlowSyncConfig> {
    let errors = cx.errors();
    let values = cx.values(s, 1, 12)?;
    let interface = &values[0];
    interface_name(cx, interface);
    let mut sync = FlowSyncConfig::new(interface.text.clone(), s.at());
    let mut rest = values[1..].iter().peekable();
    let options = ["id", "maxlen", "port", "ttl", "group"];
    if let Some(word) = rest.next_if(|w| !options.contains(&w.text.as_str())) {
        sync.vrrp_instance = Some(word.text.clone());
    }
    while let Some(option) = rest.next() {
        let Some(value) = rest.next() else {
            cx.error(option.at, format!("`lvs_sync_daemon` `{}` needs a value", option.text));
            break;
        };
        match option.text.as_str() {
            "id" => sync.sync_id = cx.uint("the sync id", value, 0, 255).map_or(0, |v| v as u8),
            "maxlen" => {
                let min = MIN_MAX_LEN.into();
                sync.max_len =
                    cx.uint("`maxlen`", value, min, u16::MAX.into()).map_or(0, |v| v as u16)
            }
            "port" => {
                sync.port =
                    cx.uint("the sync port", value, 1, u16::MAX.into()).map_or(0, |v| v as u16)
            }
            "ttl" => sync.ttl = cx.uint("`ttl`", value, 1, 255).map_or(0, |v| v as u8),
            "group" => {
                if let Some(group) = cx.ip("the sync group", value) {
                    match group_problem(group) {
                        Some(problem) => cx.error(value.at, format!("the sync group {problem}")),
                        None => sync.group = group,
                    }
                }
            }
            other => cx.error(
                option.at,
                format!(
                    "unknown `lvs_sync_daemon` option `{other}` (expected id, maxlen, port, ttl \
                     or group)"
                ),
            ),
        }
    }
    cx.clean_since(errors).then_some(sync)
}

/// `global_defs { ... }`.
pub(super) fn global_defs(cx: &mut Cx<'_>, stmt: &Stmt, vrrp: &mut Vrrp) {
    if let Some(extra) = stmt.values().first() {
        cx.error(extra.at, "`global_defs` takes no value");
    }
    let Some(block) = cx.block(stmt, "global_defs { ... }") else { return };
    let mut seen = Seen::default();
    for s in &block.stmts {
        let name = s.name();
        match name {
            "default_interface" => {
                seen.note(cx, "default_interface", s);
                if let Some(word) = cx.value(s) {
                    interface_name(cx, word);
                    vrrp.default_interface = Some(Named::of(word));
                }
            }
            "router_id" | "lvs_id" => {
                seen.note(cx, "router_id", s);
                if cx.value(s).is_some() {
                    cx.unimplemented(
                        s,
                        "it names this director only in keepalived's e-mail and SNMP",
                    );
                }
            }
            "notification_email" => {
                if let Some(block) = cx.block(s, "notification_email { ADDRESS ... }") {
                    for line in &block.stmts {
                        cx.no_block(line);
                    }
                    cx.unimplemented(s, EMAIL);
                }
            }
            "notification_email_from" | "smtp_helo_name" => {
                if cx.value(s).is_some() {
                    cx.unimplemented(s, EMAIL);
                }
            }
            "smtp_server" => {
                if let Some(values) = cx.values(s, 1, 2) {
                    let ok = values.get(1).is_none_or(|port| {
                        cx.uint("the `smtp_server` port", port, 1, u16::MAX.into()).is_some()
                    });
                    if ok {
                        cx.unimplemented(s, EMAIL);
                    }
                }
            }
            "smtp_connect_timeout" => {
                if let Some(word) = cx.value(s)
                    && cx.uint("`smtp_connect_timeout`", word, 1, u32::MAX.into()).is_some()
                {
                    cx.unimplemented(s, EMAIL);
                }
            }
            "smtp_alert" | "smtp_alert_vrrp" | "smtp_alert_checker" | "no_email_faults" => {
                if cx.flag(s).is_some() {
                    cx.unimplemented(s, EMAIL);
                }
            }
            "vrrp_version" => {
                seen.note(cx, "vrrp_version", s);
                if let Some(word) = cx.value(s)
                    && let Some(version) = cx.uint("`vrrp_version`", word, 2, 3)
                {
                    vrrp.version = u8::try_from(version).ok().map(|v| (v, word.at));
                }
            }
            "vrrp_garp_master_delay" => {
                seen.note(cx, "vrrp_garp_master_delay", s);
                if let Some(delay) = garp_delay(cx, s) {
                    vrrp.garp_master_delay = Some(delay);
                }
            }
            "vrrp_garp_master_repeat" => {
                seen.note(cx, "vrrp_garp_master_repeat", s);
                if let Some(repeat) = garp_repeat(cx, s) {
                    vrrp.garp_master_repeat = Some(repeat);
                }
            }
            "vrrp_lower_prio_no_advert" => {
                seen.note(cx, "vrrp_lower_prio_no_advert", s);
                if let Some(on) = cx.flag(s) {
                    vrrp.lower_prio_no_advert = Some(on);
                }
            }
            "vrrp_skip_check_adv_addr" => {
                seen.note(cx, "vrrp_skip_check_adv_addr", s);
                if let Some(on) = cx.flag(s) {
                    vrrp.skip_check_adv_addr = Some(on);
                }
            }
            "vrrp_mcast_group4" | "vrrp_mcast_group6" => {
                let v4 = name.ends_with('4');
                if let Some(word) = cx.value(s)
                    && let Some(address) = cx.ip(&format!("`{name}`"), word)
                {
                    if address.is_ipv4() == v4 {
                        cx.unimplemented(s, MULTICAST);
                    } else {
                        let family = if v4 { "IPv4" } else { "IPv6" };
                        cx.error(
                            word.at,
                            format!("`{name}` must be an {family} address, found {address}"),
                        );
                    }
                }
            }
            "vrrp_garp_master_refresh"
            | "vrrp_garp_master_refresh_repeat"
            | "vrrp_garp_lower_prio_delay"
            | "vrrp_garp_lower_prio_repeat"
            | "vrrp_down_timer_adverts" => {
                if let Some(word) = cx.value(s)
                    && cx.uint(&format!("`{name}`"), word, 0, u32::MAX.into()).is_some()
                {
                    let why = if name.contains("garp") { GARP } else { NOT_IN_LB };
                    cx.unimplemented(s, why);
                }
            }
            "vrrp_garp_interval" | "vrrp_gna_interval" => {
                if let Some(word) = cx.value(s)
                    && cx.seconds(&format!("`{name}`"), word, false, 4294).is_some()
                {
                    cx.unimplemented(s, GARP);
                }
            }
            "script_user" => {
                if let Some(values) = cx.values(s, 1, 2) {
                    let group = values.get(1).map(|g| g.text.as_str());
                    match crate::config::ScriptUserSetting::checked(&values[0].text, group) {
                        Ok(setting) => vrrp.script_user = Some(setting),
                        Err(message) => cx.error(values[0].at, message),
                    }
                }
            }
            "enable_script_security" => {
                if cx.bare_flag(s).is_some() {
                    cx.unimplemented(s, SCRIPTS);
                }
            }
            "lvs_sync_daemon" => {
                seen.note(cx, "lvs_sync_daemon", s);
                if let Some(sync) = lvs_sync_daemon(cx, s) {
                    vrrp.flow_sync = Some(sync);
                }
            }
            _ if GLOBAL_DEFS.contains(&name) => {
                let why = if name.starts_with("vrrp_") {
                    NOT_IN_LB
                } else if name.contains("smtp") || name.contains("email") {
                    EMAIL
                } else {
                    "lb does not implement it"
                };
                cx.unimplemented(s, why);
            }
            _ => cx.unknown(s, Section::GlobalDefs),
        }
    }
}

/// `garp_master_delay N` (whole seconds, as keepalived reads it), up to a day.
fn garp_delay(cx: &mut Cx<'_>, s: &Stmt) -> Option<Duration> {
    let word = cx.value(s)?;
    let secs = cx.uint(&format!("`{}`", s.name()), word, 0, MAX_SECONDS.into())?;
    Some(Duration::from_secs(secs))
}

/// `garp_master_repeat N`, 1 to 100.
fn garp_repeat(cx: &mut Cx<'_>, s: &Stmt) -> Option<u32> {
    let word = cx.value(s)?;
    let (min, max) = GARP_REPEAT_LIMITS.into_inner();
    let repeat = cx.uint(&format!("`{}`", s.name()), word, min.into(), max.into())?;
    u32::try_from(repeat).ok()
}

/// The header of a named block (`vrrp_instance NAME`): its name.
fn block_name<'s>(cx: &mut Cx<'_>, stmt: &'s Stmt) -> Option<&'s Word> {
    match stmt.values() {
        [name] if !name.text.trim().is_empty() => Some(name),
        [name] => {
            cx.error(name.at, format!("the name of a `{}` must not be empty", stmt.name()));
            None
        }
        [] => {
            cx.error(
                stmt.at(),
                format!("`{}` needs a name: {} NAME {{ ... }}", stmt.name(), stmt.name()),
            );
            None
        }
        [_, extra, ..] => {
            cx.error(
                extra.at,
                format!("`{}` takes one name (quote a name with spaces)", stmt.name()),
            );
            None
        }
    }
}

/// Why lb does not act on a `vrrp_instance` keyword it accepts.
fn instance_unimplemented(keyword: &str) -> &'static str {
    match keyword {
        "use_vmac" | "use_vmac_addr" | "vmac_xmit_base" | "use_ipvlan" | "vmac_garp_intvl" => {
            "lb adds the addresses on the instance's `interface`, with its own MAC address"
        }
        "virtual_routes" | "virtual_rules" => "lb adds no routes or rules on becoming MASTER",
        "track_file" | "track_process" | "track_bfd" => {
            "lb tracks interfaces (`track_interface`) and scripts (`track_script`) only"
        }
        "dont_track_primary" => "lb always tracks the instance's `interface`",
        "smtp_alert" => EMAIL,
        "notify_deleted" | "notify_master_rx_lower_pri" | "notify_priority_changes" => {
            "lb runs notify_master, notify_backup, notify_fault, notify_stop and notify only"
        }
        "mcast_dst_ip" => MULTICAST,
        "garp_master_refresh"
        | "garp_master_refresh_repeat"
        | "garp_lower_prio_delay"
        | "garp_lower_prio_repeat"
        | "garp_extra_if" => GARP,
        "lvs_sync_daemon_interface" => {
            "the old form of global_defs' `lvs_sync_daemon INTERFACE INSTANCE`, which lb acts on: \
             write that instead"
        }
        _ => NOT_IN_LB,
    }
}

/// `vrrp_instance NAME { ... }`.
pub(super) fn instance(cx: &mut Cx<'_>, stmt: &Stmt, vrrp: &mut Vrrp) {
    let name = block_name(cx, stmt);
    let Some(block) = cx.block(stmt, "vrrp_instance NAME { ... }") else { return };
    let Some(name) = name else { return };
    if let Some(first) = vrrp.instances.iter().find(|i| i.name == name.text) {
        let message =
            format!("vrrp_instance `{}` is already defined at line {}", name.text, first.at.line);
        cx.error(name.at, message);
    }
    let mut instance = VrrpInstance {
        name: name.text.clone(),
        at: stmt.at(),
        name_at: name.at,
        interface: None,
        addresses: Vec::new(),
        scripts: Vec::new(),
        settings: None,
    };
    let mut settings = InstanceSettings::default();
    let errors = cx.errors();
    let mut seen = Seen::default();
    for s in &block.stmts {
        let keyword = s.name();
        // Settings with one value: given again, the last one counts.
        let scalar = match keyword {
            "mcast_src_ip" => Some("unicast_src_ip"),
            "nopreempt" | "preempt" => Some("nopreempt"),
            "state"
            | "interface"
            | "virtual_router_id"
            | "priority"
            | "advert_int"
            | "version"
            | "preempt_delay"
            | "garp_master_delay"
            | "garp_master_repeat"
            | "unicast_src_ip"
            | "authentication"
            | "notify_master"
            | "notify_backup"
            | "notify_fault"
            | "notify_stop"
            | "notify"
            | "lower_prio_no_advert"
            | "skip_check_adv_addr" => {
                keywords::VRRP_INSTANCE.iter().find(|k| **k == keyword).copied()
            }
            _ => None,
        };
        if let Some(setting) = scalar {
            seen.note(cx, setting, s);
        }
        match keyword {
            "state" => {
                if let Some(word) = cx.value(s) {
                    match word.text.as_str() {
                        "MASTER" => settings.state = Some((true, word.at)),
                        "BACKUP" => settings.state = Some((false, word.at)),
                        other => cx.error(
                            word.at,
                            format!("`state` must be MASTER or BACKUP, found \"{other}\""),
                        ),
                    }
                }
            }
            "interface" => {
                if let Some(word) = cx.value(s) {
                    interface_name(cx, word);
                    instance.interface = Some(Named::of(word));
                }
            }
            "virtual_router_id" => {
                if let Some(word) = cx.value(s)
                    && let Some(id) = cx.uint("`virtual_router_id`", word, 1, 255)
                {
                    settings.virtual_router_id = u8::try_from(id).ok().map(|id| (id, word.at));
                }
            }
            "priority" => {
                if let Some(word) = cx.value(s)
                    && let Some(priority) = cx.uint("`priority`", word, 1, 255)
                {
                    settings.priority = u8::try_from(priority).ok().map(|p| (p, word.at));
                }
            }
            "advert_int" => {
                if let Some(word) = cx.value(s)
                    && let Some(interval) = cx.seconds("`advert_int`", word, false, 255)
                {
                    settings.advert_int = Some((interval, word.at));
                }
            }
            "version" => {
                if let Some(word) = cx.value(s)
                    && let Some(version) = cx.uint("`version`", word, 2, 3)
                {
                    settings.version = u8::try_from(version).ok().map(|v| (v, word.at));
                }
            }
            "nopreempt" | "preempt" => {
                if let Some(on) = cx.flag(s) {
                    settings.preempt = Some(on == (keyword == "preempt"));
                }
            }
            "preempt_delay" => {
                if let Some(word) = cx.value(s)
                    && let Some(delay) =
                        cx.seconds("`preempt_delay`", word, true, MAX_PREEMPT_DELAY_SECS)
                {
                    settings.preempt_delay = Some(delay);
                }
            }
            "garp_master_delay" => {
                if let Some(delay) = garp_delay(cx, s) {
                    settings.garp_master_delay = Some(delay);
                }
            }
            "garp_master_repeat" => {
                if let Some(repeat) = garp_repeat(cx, s) {
                    settings.garp_master_repeat = Some(repeat);
                }
            }
            "garp_master_refresh"
            | "garp_master_refresh_repeat"
            | "garp_lower_prio_delay"
            | "garp_lower_prio_repeat" => {
                if let Some(word) = cx.value(s)
                    && cx.uint(&format!("`{keyword}`"), word, 0, u32::MAX.into()).is_some()
                {
                    cx.unimplemented(s, GARP);
                }
            }
            "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
                if let Some(values) = s.values().first() {
                    cx.error(values.at, format!("`{keyword}` takes its addresses in a block"));
                }
                if let Some(block) =
                    cx.block(s, &format!("{keyword} {{ ADDRESS[/PREFIX] [dev IFNAME] ... }}"))
                {
                    addresses(cx, block, &mut instance.addresses);
                    if keyword == "virtual_ipaddress_excluded" && !block.stmts.is_empty() {
                        cx.warning(
                            s.at(),
                            "`virtual_ipaddress_excluded`: its addresses are held like those of \
                             virtual_ipaddress, and also listed in the adverts (lb has no \
                             excluded addresses; a keepalived peer may reject adverts whose \
                             address list differs from its own)",
                        );
                    }
                }
            }
            "track_interface" => {
                if let Some(block) = cx.block(s, "track_interface { IFNAME [weight N] ... }") {
                    for line in &block.stmts {
                        if cx.no_block(line) {
                            interface_name(cx, line.keyword());
                            if let Some(weight) = tracking_weight(cx, line) {
                                let name = line.keyword();
                                let track = TrackInterface {
                                    name: name.text.clone(),
                                    weight: weight.unwrap_or(0),
                                };
                                settings.track_interface.push((track, name.at));
                            }
                        }
                    }
                }
            }
            "track_script" => {
                if let Some(block) = cx.block(s, "track_script { SCRIPT [weight N] ... }") {
                    for line in &block.stmts {
                        if cx.no_block(line)
                            && let Some(weight) = tracking_weight(cx, line)
                        {
                            let name = line.keyword();
                            instance.scripts.push(Named::of(name));
                            let track = TrackScript { script: name.text.clone(), weight };
                            settings.track_script.push((track, name.at));
                        }
                    }
                }
            }
            "unicast_peer" => {
                if let Some(block) = cx.block(s, "unicast_peer { ADDRESS ... }") {
                    for line in &block.stmts {
                        if !cx.no_block(line) {
                            continue;
                        }
                        let word = line.keyword();
                        if let Some(peer) = cx.ip("a `unicast_peer`", word) {
                            settings.unicast_peer.push((peer, word.at));
                        }
                        if let Some(option) = line.values().first() {
                            cx.warning(
                                option.at,
                                format!(
                                    "`{}` after unicast peer {}: accepted, not acted on (lb \
                                     checks neither the TTL nor the source of the adverts per \
                                     peer)",
                                    option.text, word.text
                                ),
                            );
                        }
                    }
                }
            }
            "unicast_src_ip" | "mcast_src_ip" => {
                if let Some(word) = cx.value(s)
                    && let Some(source) = cx.ip(&format!("`{keyword}`"), word)
                {
                    settings.unicast_src_ip = Some((source, word.at));
                }
            }
            "authentication" => {
                if let Some(block) =
                    cx.block(s, "authentication { auth_type PASS auth_pass SECRET }")
                {
                    settings.auth_pass = authentication(cx, s, block).map(|pass| (pass, s.at()));
                }
            }
            "notify_master" => settings.notify_master = cx.script(s),
            "notify_backup" => settings.notify_backup = cx.script(s),
            "notify_fault" => settings.notify_fault = cx.script(s),
            "notify_stop" => settings.notify_stop = cx.script(s),
            "notify" => settings.notify = cx.script(s),
            "lower_prio_no_advert" => settings.lower_prio_no_advert = cx.flag(s),
            "skip_check_adv_addr" => settings.skip_check_adv_addr = cx.flag(s),
            "notify_deleted" | "notify_master_rx_lower_pri" => {
                if cx.script(s).is_some() {
                    cx.unimplemented(s, instance_unimplemented(keyword));
                }
            }
            "smtp_alert"
            | "dont_track_primary"
            | "native_ipv6"
            | "use_vmac_addr"
            | "vmac_xmit_base"
            | "promote_secondaries"
            | "accept"
            | "no_accept"
            | "strict_mode"
            | "higher_prio_send_advert"
            | "owner_ignore_adverts"
            | "check_unicast_src"
            | "unicast_fault_no_peer"
            | "linkbeat_use_polling"
            | "notify_priority_changes" => {
                if cx.flag(s).is_some() {
                    cx.unimplemented(s, instance_unimplemented(keyword));
                }
            }
            _ if keywords::VRRP_INSTANCE.contains(&keyword) => {
                cx.unimplemented(s, instance_unimplemented(keyword));
            }
            _ => cx.unknown(s, Section::VrrpInstance),
        }
    }
    if settings.virtual_router_id.is_none() && cx.clean_since(errors) {
        cx.error(
            name.at,
            format!("vrrp_instance `{}` needs a `virtual_router_id` (1 to 255)", name.text),
        );
    }
    if cx.clean_since(errors) {
        instance.settings = Some(settings);
    }
    vrrp.instances.push(instance);
}

/// An interface name as Linux accepts it.
fn interface_name(cx: &mut Cx<'_>, word: &Word) {
    if word.text.is_empty()
        || word.text.chars().count() > MAX_IFNAME_LEN
        || word.text.contains(['/', ' '])
    {
        cx.error(
            word.at,
            format!(
                "\"{}\" is not an interface name: 1 to {MAX_IFNAME_LEN} characters, no `/` or space",
                word.text.escape_debug()
            ),
        );
    }
}

/// `NAME [weight N [reverse|noreverse]]` in `track_interface` / `track_script`: the weight, if
/// written; `None` after an error.
fn tracking_weight(cx: &mut Cx<'_>, line: &Stmt) -> Option<Option<i32>> {
    match line.values() {
        [] => Some(None),
        [weight, value, rest @ ..] if weight.text == "weight" => {
            let weight =
                cx.int("the tracking `weight`", value, -MAX_TRACKING_WEIGHT, MAX_TRACKING_WEIGHT);
            let direction = match rest {
                [] => true,
                [direction] => no_reverse(cx, direction),
                [_, other, ..] => {
                    cx.error(other.at, format!("unexpected `{}` after the weight", other.text));
                    false
                }
            };
            let weight = i32::try_from(weight?).ok()?;
            direction.then_some(Some(weight))
        }
        [first, ..] => {
            cx.error(first.at, format!("unexpected `{}`: expected `weight N`", first.text));
            None
        }
    }
}

/// `noreverse` (the default) after a weight; `reverse` is an error: lb cannot invert a weight.
fn no_reverse(cx: &mut Cx<'_>, word: &Word) -> bool {
    match word.text.as_str() {
        "noreverse" => true,
        "reverse" => {
            cx.error(
                word.at,
                "`reverse` is not supported: lb adds a positive weight while the tracked object \
                 is up and a negative one while it is down, as keepalived does without `reverse`; \
                 change the weights and priorities to say the same without it",
            );
            false
        }
        other => {
            cx.error(word.at, format!("unexpected `{other}`: expected reverse or noreverse"));
            false
        }
    }
}

/// keepalived's options after a virtual address, and whether each takes a value.
const ADDRESS_OPTIONS: &[(&str, bool)] = &[
    ("dev", true),
    ("scope", true),
    ("broadcast", true),
    ("brd", true),
    ("label", true),
    ("peer", true),
    ("preferred_lft", true),
    ("home", false),
    ("-nodad", false),
    ("mngtmpaddr", false),
    ("noprefixroute", false),
    ("autojoin", false),
    ("no_track", false),
    ("use_vmac", false),
];

/// The lines of a `virtual_ipaddress` block: `ADDRESS[/PREFIX] [dev IFNAME] [options]`. The
/// options other than `dev` are accepted with a warning each; `dev` is weighed once the
/// instance's interface is known ([`model`]).
fn addresses(cx: &mut Cx<'_>, block: &Block, out: &mut Vec<VrrpAddress>) {
    for line in &block.stmts {
        if !cx.no_block(line) {
            continue;
        }
        let first = line.keyword();
        let (text, prefix) = first.text.split_once('/').unwrap_or((&first.text, ""));
        let Ok(address) = text.parse::<IpAddr>() else {
            let message = format!(
                "a virtual address must be an IP address with an optional /PREFIX, found \"{}\"",
                first.text.escape_debug()
            );
            cx.error(first.at, message);
            continue;
        };
        let longest = host_prefix_len(address);
        let prefix = if prefix.is_empty() {
            longest
        } else {
            match prefix.parse::<u8>() {
                Ok(p) if p <= longest => p,
                _ => {
                    cx.error(
                        first.at,
                        format!(
                            "the prefix length of {text} must be 0 to {longest}, found \"{prefix}\""
                        ),
                    );
                    continue;
                }
            }
        };
        let mut dev = None;
        let mut words = line.values().iter();
        while let Some(option) = words.next() {
            let names: Vec<&str> = ADDRESS_OPTIONS.iter().map(|(n, _)| *n).collect();
            match ADDRESS_OPTIONS.iter().find(|(n, _)| *n == option.text) {
                Some((name, true)) => match words.next() {
                    Some(value) if *name == "dev" => {
                        interface_name(cx, value);
                        dev = Some(Named::of(value));
                    }
                    Some(value) => cx.warning(
                        option.at,
                        format!(
                            "`{name} {}` of virtual address {}: accepted, not acted on (lb adds \
                             virtual addresses with the kernel's defaults)",
                            value.text, first.text
                        ),
                    ),
                    None => cx.error(option.at, format!("`{name}` needs a value")),
                },
                Some((name, false)) => cx.warning(
                    option.at,
                    format!(
                        "`{name}` of virtual address {}: accepted, not acted on (lb adds virtual \
                         addresses with the kernel's defaults, IPv6 ones without duplicate \
                         address detection)",
                        first.text
                    ),
                ),
                None => {
                    let hint = keywords::suggest(&option.text, &names)
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    cx.error(
                        option.at,
                        format!("unknown option `{}` of a virtual address{hint}", option.text),
                    );
                    // What follows may be its value: one error is enough.
                    break;
                }
            }
        }
        out.push(VrrpAddress { address, prefix, at: first.at, dev });
    }
}

/// `authentication { auth_type PASS auth_pass SECRET }`: the password, at most 8 bytes. The
/// password itself is never repeated in a message.
fn authentication(cx: &mut Cx<'_>, stmt: &Stmt, block: &Block) -> Option<String> {
    let errors = cx.errors();
    let mut auth_type = None;
    let mut pass: Option<&Word> = None;
    let mut seen = Seen::default();
    for s in &block.stmts {
        match s.name() {
            "auth_type" => {
                seen.note(cx, "auth_type", s);
                if let Some(word) = cx.value(s) {
                    match word.text.as_str() {
                        "PASS" => auth_type = Some(word),
                        "AH" => cx.error(
                            word.at,
                            "`auth_type AH` (IPsec authentication header) is not supported: use \
                             PASS, or no `authentication`",
                        ),
                        other => cx.error(
                            word.at,
                            format!("`auth_type` must be PASS or AH, found \"{other}\""),
                        ),
                    }
                }
            }
            "auth_pass" => {
                seen.note(cx, "auth_pass", s);
                pass = cx.value(s);
            }
            _ => cx.unknown(s, Section::Authentication),
        }
    }
    if !cx.clean_since(errors) {
        return None;
    }
    let (Some(_), Some(pass)) = (auth_type, pass) else {
        cx.error(stmt.at(), "`authentication` needs both `auth_type PASS` and `auth_pass SECRET`");
        return None;
    };
    let text = pass.text.as_str();
    if text.is_empty() {
        cx.error(pass.at, "`auth_pass` must not be empty: leave `authentication` out instead");
        return None;
    }
    if text.len() <= MAX_AUTH_PASS_LEN {
        return Some(text.to_owned());
    }
    if !text.is_char_boundary(MAX_AUTH_PASS_LEN) {
        cx.error(
            pass.at,
            format!(
                "`auth_pass` is {} bytes, and its first {MAX_AUTH_PASS_LEN}, all VRRPv2 carries, \
                 end inside a character: shorten it to {MAX_AUTH_PASS_LEN} bytes",
                text.len()
            ),
        );
        return None;
    }
    cx.warning(
        pass.at,
        format!(
            "`auth_pass` is {} bytes: VRRPv2 carries {MAX_AUTH_PASS_LEN}, and keepalived uses only \
             the first {MAX_AUTH_PASS_LEN}; so does lb",
            text.len()
        ),
    );
    Some(text[..MAX_AUTH_PASS_LEN].to_owned())
}

/// `vrrp_script NAME { ... }`.
pub(super) fn script(cx: &mut Cx<'_>, stmt: &Stmt, vrrp: &mut Vrrp) {
    let name = block_name(cx, stmt);
    let Some(block) = cx.block(stmt, "vrrp_script NAME { script \"COMMAND\" ... }") else { return };
    let Some(name) = name else { return };
    if let Some(first) = vrrp.scripts.iter().find(|s| s.name == name.text) {
        cx.error(
            name.at,
            format!("vrrp_script `{}` is already defined at line {}", name.text, first.at.line),
        );
    }
    let errors = cx.errors();
    let mut command = None;
    let mut interval = None;
    let mut timeout = None;
    let mut weight = 0;
    let mut rise = 1;
    let mut fall = 1;
    let mut seen = Seen::default();
    for s in &block.stmts {
        let keyword = s.name();
        if keywords::VRRP_SCRIPT.contains(&keyword) && keyword != "user" {
            let setting =
                keywords::VRRP_SCRIPT.iter().find(|k| **k == keyword).copied().unwrap_or("");
            seen.note(cx, setting, s);
        }
        match keyword {
            "script" => command = cx.script(s).or(command),
            "interval" | "timeout" => {
                if let Some(word) = cx.value(s)
                    && let Some(seconds) =
                        cx.seconds(&format!("`{keyword}`"), word, false, MAX_SECONDS)
                {
                    if keyword == "interval" {
                        interval = Some(seconds);
                    } else {
                        timeout = Some(seconds);
                    }
                }
            }
            "weight" => {
                if let Some(values) = cx.values(s, 1, 2) {
                    let value =
                        cx.int("`weight`", &values[0], -MAX_TRACKING_WEIGHT, MAX_TRACKING_WEIGHT);
                    let direction = values.get(1).is_none_or(|word| no_reverse(cx, word));
                    if let Some(value) = value.and_then(|v| i32::try_from(v).ok())
                        && direction
                    {
                        weight = value;
                    }
                }
            }
            "rise" | "fall" => {
                if let Some(word) = cx.value(s)
                    && let Some(n) = cx.uint(&format!("`{keyword}`"), word, 1, u32::MAX.into())
                    && let Ok(n) = u32::try_from(n)
                {
                    if keyword == "rise" {
                        rise = n;
                    } else {
                        fall = n;
                    }
                }
            }
            "user" => {
                if cx.values(s, 1, 2).is_some() {
                    cx.unimplemented(s, "lb runs scripts as its own user");
                }
            }
            "init_fail" => {
                if cx.bare_flag(s).is_some() {
                    cx.unimplemented(s, "lb counts a script as failed or not once it has run");
                }
            }
            _ => cx.unknown(s, Section::VrrpScript),
        }
    }
    let clean = cx.clean_since(errors);
    match command {
        Some(script) if clean => {
            let interval = interval.unwrap_or(DEFAULT_SCRIPT_INTERVAL);
            vrrp.script_models.push(VrrpScript {
                name: name.text.clone(),
                script,
                interval,
                // keepalived: no timeout is the interval.
                timeout: timeout.unwrap_or(interval),
                weight,
                rise,
                fall,
                location: stmt.at(),
            });
        }
        None if clean => {
            cx.error(name.at, format!("vrrp_script `{}` needs a `script`", name.text));
        }
        _ => {}
    }
    vrrp.scripts.push(Named::of(name));
}

/// `vrrp_sync_group NAME { group { INSTANCE ... } ... }`.
pub(super) fn sync_group(cx: &mut Cx<'_>, stmt: &Stmt, vrrp: &mut Vrrp) {
    let name = block_name(cx, stmt);
    let Some(block) = cx.block(stmt, "vrrp_sync_group NAME { group { INSTANCE ... } }") else {
        return;
    };
    let Some(name) = name else { return };
    if let Some(first) = vrrp.sync_groups.iter().find(|g| g.name.name == name.text) {
        cx.error(
            name.at,
            format!("vrrp_sync_group `{}` is already defined at line {}", name.text, first.at.line),
        );
    }
    let errors = cx.errors();
    let mut group = SyncGroup {
        name: Named::of(name),
        at: stmt.at(),
        members: Vec::new(),
        tracking_weight: false,
        notify: None,
    };
    let mut has_group = false;
    let mut notify: [Option<String>; 3] = [None, None, None];
    let mut seen = Seen::default();
    for s in &block.stmts {
        let keyword = s.name();
        if let Some(setting) =
            ["notify_master", "notify_backup", "notify_fault"].into_iter().find(|k| *k == keyword)
        {
            seen.note(cx, setting, s);
        }
        match keyword {
            "group" => {
                has_group = true;
                if let Some(block) = cx.block(s, "group { INSTANCE ... }") {
                    for line in &block.stmts {
                        if cx.no_block(line) {
                            group.members.extend(line.words.iter().map(Named::of));
                        }
                    }
                }
            }
            "track_interface" | "track_script" | "track_file" | "track_process" | "track_bfd" => {
                if cx.block(s, &format!("{keyword} {{ NAME ... }}")).is_some() {
                    cx.unimplemented(
                        s,
                        "lb tracks interfaces and scripts per vrrp_instance: track them in each \
                         instance of the group",
                    );
                }
            }
            "notify_master" => notify[0] = cx.script(s),
            "notify_backup" => notify[1] = cx.script(s),
            "notify_fault" => notify[2] = cx.script(s),
            "notify_stop" | "notify" => {
                if cx.script(s).is_some() {
                    cx.unimplemented(
                        s,
                        "lb runs a sync group's notify_master, notify_backup and notify_fault \
                         only; its instances' own notify scripts run as usual",
                    );
                }
            }
            "sync_group_tracking_weight" | "global_tracking" => {
                if let Some(on) = cx.flag(s) {
                    group.tracking_weight = on;
                }
            }
            "smtp_alert" | "notify_priority_changes" => {
                if cx.flag(s).is_some() {
                    let why = if keyword == "smtp_alert" { EMAIL } else { NOT_IN_LB };
                    cx.unimplemented(s, why);
                }
            }
            _ => cx.unknown(s, Section::VrrpSyncGroup),
        }
    }
    if !has_group && cx.clean_since(errors) {
        cx.error(
            name.at,
            format!("vrrp_sync_group `{}` needs a `group {{ INSTANCE ... }}`", name.text),
        );
    }
    if has_group && group.members.is_empty() && cx.clean_since(errors) {
        cx.error(
            name.at,
            format!("vrrp_sync_group `{}` lists no instance in its `group`", name.text),
        );
    }
    if cx.clean_since(errors) {
        group.notify = Some(notify);
    }
    vrrp.sync_groups.push(group);
}

/// What the VRRP blocks name must exist: sync group members (each in one group, once), tracked
/// scripts.
pub(super) fn check_references(cx: &mut Cx<'_>, vrrp: &Vrrp) {
    let instances: Vec<&str> = vrrp.instances.iter().map(|i| i.name.as_str()).collect();
    // Instance → the group it is in (where its name is, and the group).
    let mut placed: Vec<(&str, &SyncGroup)> = Vec::new();
    for group in &vrrp.sync_groups {
        for member in &group.members {
            if !instances.contains(&member.name.as_str()) {
                let hint = keywords::suggest(&member.name, &instances)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                cx.error(member.at, format!("no vrrp_instance `{}`{hint}", member.name));
                continue;
            }
            match placed.iter().find(|(name, _)| *name == member.name) {
                Some((_, first)) if std::ptr::eq(*first, group) => cx.error(
                    member.at,
                    format!("vrrp_instance `{}` is listed twice in this group", member.name),
                ),
                Some((_, first)) => cx.error(
                    member.at,
                    format!(
                        "vrrp_instance `{}` is already in vrrp_sync_group `{}` at line {}: an \
                         instance can be in one sync group only",
                        member.name, first.name.name, first.at.line
                    ),
                ),
                None => placed.push((&member.name, group)),
            }
        }
    }
    let scripts: Vec<&str> = vrrp.scripts.iter().map(|s| s.name.as_str()).collect();
    for script in vrrp.instances.iter().flat_map(|i| &i.scripts) {
        if !scripts.contains(&script.name.as_str()) {
            let hint = keywords::suggest(&script.name, &scripts)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            cx.error(script.at, format!("no vrrp_script `{}`{hint}", script.name));
        }
    }
}

/// The VRRP part of the model, from the blocks without errors, with keepalived's defaults: each
/// instance's `interface` (else `default_interface`), version (else `vrrp_version`, else 3 for
/// IPv6 addresses and 2 otherwise), priority (255 for `state MASTER`, else 100), and the
/// tracking weights of the instances of a sync group without `sync_group_tracking_weight`, which
/// keepalived ignores.
pub(super) fn model(cx: &mut Cx<'_>, vrrp: &Vrrp) -> (VrrpConfig, Vec<Spans>) {
    let mut config = VrrpConfig { scripts: vrrp.script_models.clone(), ..VrrpConfig::default() };
    let mut locations = Vec::new();
    for instance in &vrrp.instances {
        if let Some((model, at)) = instance_model(cx, vrrp, instance) {
            config.instances.push(model);
            locations.push(at);
        }
    }
    for group in &vrrp.sync_groups {
        if let Some([notify_master, notify_backup, notify_fault]) = group.notify.clone() {
            config.sync_groups.push(VrrpSyncGroup {
                name: group.name.name.clone(),
                group: group.members.iter().map(|m| m.name.clone()).collect(),
                notify_master,
                notify_backup,
                notify_fault,
                location: group.at,
            });
        }
    }
    (config, locations)
}

fn instance_model(
    cx: &mut Cx<'_>,
    vrrp: &Vrrp,
    instance: &VrrpInstance,
) -> Option<(InstanceModel, Spans)> {
    let settings = instance.settings.as_ref()?;
    let name = &instance.name;
    let (virtual_router_id, vrid_at) = settings.virtual_router_id?;
    let Some(interface) = instance.interface.as_ref().or(vrrp.default_interface.as_ref()) else {
        cx.error(
            instance.name_at,
            format!(
                "vrrp_instance `{name}` has no `interface`, and global_defs no \
                 `default_interface`: add `interface IFNAME`"
            ),
        );
        return None;
    };
    let Some(first) = instance.addresses.first() else {
        cx.error(
            instance.name_at,
            format!(
                "vrrp_instance `{name}` has no `virtual_ipaddress`: lb needs at least one address \
                 per instance (the addresses it holds while MASTER)"
            ),
        );
        return None;
    };
    for dev in instance.addresses.iter().filter_map(|a| a.dev.as_ref()) {
        if dev.name != interface.name {
            cx.warning(
                dev.at,
                format!(
                    "`dev {}`: accepted, not acted on (lb adds every address of vrrp_instance \
                     `{name}` on its interface `{}` and sends its gratuitous ARPs there; write a \
                     vrrp_instance on {} for the addresses on {})",
                    dev.name, interface.name, dev.name, dev.name
                ),
            );
        }
    }

    // Where validation points, under the native front end's key names.
    let mut at = Spans::at_section(instance.at)
        .with("name", instance.name_at)
        .with("interface", interface.at)
        .with("virtual_router_id", vrid_at);
    at.set_items("virtual_ipaddress", instance.addresses.iter().map(|a| a.at).collect());

    let ipv6 = first.address.is_ipv6();
    let version = match (settings.version, vrrp.version) {
        (Some((version, written)), _) => {
            at.set("version", written);
            version
        }
        // As keepalived: IPv6 runs the only version that carries it.
        _ if ipv6 => 3,
        (None, Some((version, written))) => {
            at.set("version", written);
            version
        }
        (None, None) => DEFAULT_VERSION,
    };
    let priority = match (settings.priority, settings.state) {
        (Some((priority, written)), _) => {
            at.set("priority", written);
            priority
        }
        (None, Some((true, written))) => {
            cx.warning(
                written,
                format!(
                    "vrrp_instance `{name}`: `state MASTER` without `priority`: priority \
                     {OWNER_PRIORITY}, the address owner, as in keepalived; add `priority` for \
                     another"
                ),
            );
            at.set("priority", written);
            OWNER_PRIORITY
        }
        (None, _) => DEFAULT_PRIORITY,
    };
    // As keepalived: no `state` is MASTER for the address owner, BACKUP otherwise.
    let initial_master = match settings.state {
        Some((master, written)) => {
            at.set("state", written);
            master
        }
        None => priority == OWNER_PRIORITY,
    };
    let advert_int = match settings.advert_int {
        Some((interval, written)) => {
            at.set("advert_int", written);
            interval
        }
        None => DEFAULT_ADVERT_INT,
    };
    if let Some((_, written)) = settings.unicast_src_ip {
        at.set("unicast_src_ip", written);
    }
    at.set_items(
        "unicast_peer",
        settings.unicast_peer.iter().map(|&(_, written)| written).collect(),
    );
    if let Some((_, written)) = &settings.auth_pass {
        at.set("authentication", *written);
    }
    let (track_interface, track_script) = tracking(cx, vrrp, instance, settings);
    at.set_items("track_interface", track_interface.iter().map(|&(_, written)| written).collect());

    let model = InstanceModel {
        name: name.clone(),
        initial_master,
        interface: interface.name.clone(),
        virtual_router_id,
        priority,
        advert_int,
        version,
        virtual_ipaddress: instance
            .addresses
            .iter()
            .map(|a| VirtualAddress { address: a.address, prefix: a.prefix })
            .collect(),
        preempt: settings.preempt.unwrap_or(true),
        preempt_delay: settings.preempt_delay.unwrap_or(Duration::ZERO),
        unicast_peer: settings.unicast_peer.iter().map(|&(peer, _)| peer).collect(),
        unicast_src_ip: settings.unicast_src_ip.map(|(source, _)| source),
        auth_pass: settings.auth_pass.as_ref().map(|(pass, _)| pass.clone()),
        track_interface: track_interface.into_iter().map(|(track, _)| track).collect(),
        track_script,
        notify_master: settings.notify_master.clone(),
        notify_backup: settings.notify_backup.clone(),
        notify_fault: settings.notify_fault.clone(),
        notify_stop: settings.notify_stop.clone(),
        notify: settings.notify.clone(),
        garp_master_repeat: settings
            .garp_master_repeat
            .or(vrrp.garp_master_repeat)
            .unwrap_or(DEFAULT_GARP_REPEAT),
        garp_master_refresh_delay: settings
            .garp_master_delay
            .or(vrrp.garp_master_delay)
            .unwrap_or(DEFAULT_GARP_REFRESH_DELAY),
        lower_prio_no_advert: settings
            .lower_prio_no_advert
            .or(vrrp.lower_prio_no_advert)
            .unwrap_or(false),
        skip_check_adv_addr: settings
            .skip_check_adv_addr
            .or(vrrp.skip_check_adv_addr)
            .unwrap_or(false),
        location: instance.at,
    };
    Some((model, at))
}

/// The instance's tracked interfaces (with where each name is) and scripts, as keepalived runs
/// them: in a sync group without `sync_group_tracking_weight`, interface weights are ignored (a
/// link down is FAULT) and weighted scripts are not tracked at all.
fn tracking(
    cx: &mut Cx<'_>,
    vrrp: &Vrrp,
    instance: &VrrpInstance,
    settings: &InstanceSettings,
) -> (Vec<At<TrackInterface>>, Vec<TrackScript>) {
    let mut interfaces = settings.track_interface.clone();
    let mut scripts: Vec<TrackScript> =
        settings.track_script.iter().map(|(track, _)| track.clone()).collect();
    let group = vrrp
        .sync_groups
        .iter()
        .find(|g| g.members.iter().any(|m| m.name == instance.name))
        .filter(|g| !g.tracking_weight);
    let Some(group) = group else { return (interfaces, scripts) };
    let name = &instance.name;
    let why = format!(
        "vrrp_instance `{name}` is in vrrp_sync_group `{}`, which has no \
         `sync_group_tracking_weight`",
        group.name.name
    );
    for (track, written) in &mut interfaces {
        if track.weight != 0 {
            cx.warning(
                *written,
                format!(
                    "the weight of tracked interface `{}` is ignored, as keepalived ignores it: \
                     {why}; the instance goes to FAULT while the link is down",
                    track.name
                ),
            );
            track.weight = 0;
        }
    }
    scripts.clear();
    for (track, written) in &settings.track_script {
        let own = vrrp.script_models.iter().find(|s| s.name == track.script).map(|s| s.weight);
        if track.weight.or(own).unwrap_or(0) == 0 {
            scripts.push(track.clone());
        } else {
            cx.warning(
                *written,
                format!(
                    "tracked script `{}` has a weight, so it is not tracked, as keepalived does \
                     not track it: {why}",
                    track.script
                ),
            );
        }
    }
    (interfaces, scripts)
}
