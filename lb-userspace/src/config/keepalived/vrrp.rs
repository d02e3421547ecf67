//! `global_defs` and the VRRP blocks (`vrrp_instance`, `vrrp_script`, `vrrp_sync_group`). lb does
//! not run VRRP yet, so these are checked (keywords, value types and ranges, references between
//! them) and otherwise accepted with one warning per block. What is kept is what the LVS part
//! needs: which interface each instance's virtual addresses are on, since keepalived's
//! `virtual_server` does not say which interface its traffic arrives on.

use std::net::IpAddr;

use super::super::model::Location;
use super::keywords::{self, GLOBAL_DEFS, Section};
use super::tree::{Block, Stmt, Word};
use super::values::{Cx, Seen};

/// Longest interface name Linux accepts (IFNAMSIZ − 1).
pub(super) const MAX_IFNAME_LEN: usize = 15;

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

/// What lb keeps of a `vrrp_instance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VrrpInstance {
    pub name: String,
    pub at: Location,
    pub interface: Option<Named>,
    /// `virtual_ipaddress` and `virtual_ipaddress_excluded`.
    pub addresses: Vec<VrrpAddress>,
    /// The `vrrp_script`s of its `track_script`.
    pub scripts: Vec<Named>,
}

/// One address of a `virtual_ipaddress` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VrrpAddress {
    pub address: IpAddr,
    pub at: Location,
    /// `dev IFNAME`: the interface it is on, when not the instance's.
    pub dev: Option<Named>,
}

/// Everything read from `global_defs` and the VRRP blocks.
#[derive(Debug, Default)]
pub(super) struct Vrrp {
    /// `global_defs`' `default_interface`: where an instance without `interface` puts its
    /// addresses.
    pub default_interface: Option<Named>,
    pub instances: Vec<VrrpInstance>,
    pub scripts: Vec<Named>,
    /// Each `vrrp_sync_group`'s `group` members.
    pub sync_members: Vec<Named>,
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
const NOT_VRRP: &str = "VRRP is not implemented yet";
const SCRIPTS: &str =
    "lb runs scripts as its own user, without keepalived's script security checks";

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
                if let Some(word) = cx.value(s)
                    && cx.uint("`vrrp_version`", word, 2, 3).is_some()
                {
                    cx.unimplemented(s, NOT_VRRP);
                }
            }
            "vrrp_mcast_group4" | "vrrp_mcast_group6" => {
                let v4 = name.ends_with('4');
                if let Some(word) = cx.value(s)
                    && let Some(address) = cx.ip(&format!("`{name}`"), word)
                {
                    if address.is_ipv4() == v4 {
                        cx.unimplemented(s, NOT_VRRP);
                    } else {
                        let family = if v4 { "IPv4" } else { "IPv6" };
                        cx.error(
                            word.at,
                            format!("`{name}` must be an {family} address, found {address}"),
                        );
                    }
                }
            }
            "vrrp_garp_master_delay"
            | "vrrp_garp_master_repeat"
            | "vrrp_garp_master_refresh"
            | "vrrp_garp_master_refresh_repeat"
            | "vrrp_garp_lower_prio_delay"
            | "vrrp_garp_lower_prio_repeat"
            | "vrrp_down_timer_adverts" => {
                if let Some(word) = cx.value(s)
                    && cx.uint(&format!("`{name}`"), word, 0, u32::MAX.into()).is_some()
                {
                    cx.unimplemented(s, NOT_VRRP);
                }
            }
            "vrrp_garp_interval" | "vrrp_gna_interval" => {
                if let Some(word) = cx.value(s)
                    && cx.seconds(&format!("`{name}`"), word, false, 4294).is_some()
                {
                    cx.unimplemented(s, NOT_VRRP);
                }
            }
            "script_user" => {
                if cx.values(s, 1, 2).is_some() {
                    cx.unimplemented(s, SCRIPTS);
                }
            }
            "enable_script_security" => {
                if cx.bare_flag(s).is_some() {
                    cx.unimplemented(s, SCRIPTS);
                }
            }
            _ if GLOBAL_DEFS.contains(&name) => {
                let why = if name.starts_with("vrrp_") {
                    NOT_VRRP
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

/// The header of a named block (`vrrp_instance NAME`): its name.
fn block_name<'s>(cx: &mut Cx<'_>, stmt: &'s Stmt) -> Option<&'s Word> {
    match stmt.values() {
        [name] => Some(name),
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

/// The one warning of a VRRP block.
fn not_implemented(cx: &mut Cx<'_>, stmt: &Stmt, name: &str, what: &str) {
    cx.warning(
        stmt.at(),
        format!("{} `{name}`: accepted, VRRP is not implemented yet ({what})", stmt.name()),
    );
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
        interface: None,
        addresses: Vec::new(),
        scripts: Vec::new(),
    };
    let errors = cx.errors();
    let mut has_vrid = false;
    let mut seen = Seen::default();
    for s in &block.stmts {
        let keyword = s.name();
        match keyword {
            "state" => {
                seen.note(cx, "state", s);
                if let Some(word) = cx.value(s)
                    && !matches!(word.text.as_str(), "MASTER" | "BACKUP")
                {
                    let message =
                        format!("`state` must be MASTER or BACKUP, found \"{}\"", word.text);
                    cx.error(word.at, message);
                }
            }
            "interface" => {
                seen.note(cx, "interface", s);
                if let Some(word) = cx.value(s) {
                    interface_name(cx, word);
                    instance.interface = Some(Named::of(word));
                }
            }
            "virtual_router_id" => {
                has_vrid = true;
                if let Some(word) = cx.value(s) {
                    cx.uint("`virtual_router_id`", word, 1, 255);
                }
            }
            "priority" => {
                if let Some(word) = cx.value(s) {
                    cx.uint("`priority`", word, 1, 255);
                }
            }
            "advert_int" => {
                if let Some(word) = cx.value(s) {
                    cx.seconds("`advert_int`", word, false, 255);
                }
            }
            "version" => {
                if let Some(word) = cx.value(s) {
                    cx.uint("`version`", word, 2, 3);
                }
            }
            "preempt_delay" => {
                if let Some(word) = cx.value(s) {
                    cx.seconds("`preempt_delay`", word, true, 1000);
                }
            }
            "garp_master_delay"
            | "garp_master_repeat"
            | "garp_master_refresh"
            | "garp_master_refresh_repeat"
            | "garp_lower_prio_delay"
            | "garp_lower_prio_repeat" => {
                if let Some(word) = cx.value(s) {
                    cx.uint(&format!("`{keyword}`"), word, 0, u32::MAX.into());
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
                }
            }
            "track_interface" => {
                if let Some(block) = cx.block(s, "track_interface { IFNAME [weight N] ... }") {
                    for line in &block.stmts {
                        if cx.no_block(line) {
                            interface_name(cx, line.keyword());
                            tracking_weight(cx, line);
                        }
                    }
                }
            }
            "track_script" => {
                if let Some(block) = cx.block(s, "track_script { SCRIPT [weight N] ... }") {
                    for line in &block.stmts {
                        if cx.no_block(line) && tracking_weight(cx, line) {
                            instance.scripts.push(Named::of(line.keyword()));
                        }
                    }
                }
            }
            "unicast_peer" => {
                if let Some(block) = cx.block(s, "unicast_peer { ADDRESS ... }") {
                    for line in &block.stmts {
                        if cx.no_block(line) {
                            cx.ip("a `unicast_peer`", line.keyword());
                        }
                    }
                }
            }
            "unicast_src_ip" | "mcast_src_ip" => {
                if let Some(word) = cx.value(s) {
                    cx.ip(&format!("`{keyword}`"), word);
                }
            }
            "authentication" => {
                if let Some(block) =
                    cx.block(s, "authentication { auth_type PASS auth_pass SECRET }")
                {
                    authentication(cx, block);
                }
            }
            "notify_master"
            | "notify_backup"
            | "notify_fault"
            | "notify_stop"
            | "notify"
            | "notify_deleted"
            | "notify_master_rx_lower_pri" => {
                cx.script(s);
            }
            "smtp_alert"
            | "nopreempt"
            | "preempt"
            | "dont_track_primary"
            | "native_ipv6"
            | "use_vmac_addr"
            | "vmac_xmit_base"
            | "promote_secondaries"
            | "accept"
            | "no_accept"
            | "skip_check_adv_addr"
            | "strict_mode"
            | "lower_prio_no_advert"
            | "higher_prio_send_advert"
            | "owner_ignore_adverts"
            | "check_unicast_src"
            | "unicast_fault_no_peer"
            | "linkbeat_use_polling"
            | "notify_priority_changes" => {
                cx.flag(s);
            }
            _ if keywords::VRRP_INSTANCE.contains(&keyword) => {}
            _ => cx.unknown(s, Section::VrrpInstance),
        }
    }
    if !has_vrid && cx.clean_since(errors) {
        cx.error(
            name.at,
            format!("vrrp_instance `{}` needs a `virtual_router_id` (1 to 255)", name.text),
        );
    }
    not_implemented(
        cx,
        stmt,
        &name.text,
        "lb neither adds its virtual_ipaddress addresses nor fails them over",
    );
    vrrp.instances.push(instance);
}

/// An interface name as Linux accepts it.
fn interface_name(cx: &mut Cx<'_>, word: &Word) {
    if word.text.chars().count() > MAX_IFNAME_LEN || word.text.contains(['/', ' ']) {
        cx.error(
            word.at,
            format!(
                "\"{}\" is not an interface name: at most {MAX_IFNAME_LEN} characters, no `/` or space",
                word.text.escape_debug()
            ),
        );
    }
}

/// `NAME [weight N [reverse|noreverse]]` in `track_interface` / `track_script`; `true` if fine.
fn tracking_weight(cx: &mut Cx<'_>, line: &Stmt) -> bool {
    let errors = cx.errors();
    match line.values() {
        [] => {}
        [weight, value, rest @ ..] if weight.text == "weight" => {
            cx.int("the tracking `weight`", value, -253, 253);
            match rest {
                [] => {}
                [direction] if matches!(direction.text.as_str(), "reverse" | "noreverse") => {}
                [other, ..] => cx.error(
                    other.at,
                    format!("unexpected `{}`: expected reverse or noreverse", other.text),
                ),
            }
        }
        [first, ..] => {
            cx.error(first.at, format!("unexpected `{}`: expected `weight N`", first.text))
        }
    }
    cx.clean_since(errors)
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

/// The lines of a `virtual_ipaddress` block: `ADDRESS[/PREFIX] [dev IFNAME] [options]`.
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
        let longest = if address.is_ipv4() { 32 } else { 128 };
        if !prefix.is_empty() && prefix.parse::<u8>().ok().is_none_or(|p| p > longest) {
            cx.error(
                first.at,
                format!("the prefix length of {text} must be 0 to {longest}, found \"{prefix}\""),
            );
            continue;
        }
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
                    Some(_) => {}
                    None => cx.error(option.at, format!("`{name}` needs a value")),
                },
                Some((_, false)) => {}
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
        out.push(VrrpAddress { address, at: first.at, dev });
    }
}

fn authentication(cx: &mut Cx<'_>, block: &Block) {
    for s in &block.stmts {
        match s.name() {
            "auth_type" => {
                if let Some(word) = cx.value(s)
                    && !matches!(word.text.as_str(), "PASS" | "AH")
                {
                    cx.error(
                        word.at,
                        format!("`auth_type` must be PASS or AH, found \"{}\"", word.text),
                    );
                }
            }
            "auth_pass" => {
                cx.value(s);
            }
            _ => cx.unknown(s, Section::Authentication),
        }
    }
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
    let mut has_script = false;
    let mut seen = Seen::default();
    for s in &block.stmts {
        let keyword = s.name();
        if keywords::VRRP_SCRIPT.contains(&keyword) && keyword != "user" {
            let setting =
                keywords::VRRP_SCRIPT.iter().find(|k| **k == keyword).copied().unwrap_or("");
            seen.note(cx, setting, s);
        }
        match keyword {
            "script" => {
                has_script = true;
                cx.script(s);
            }
            "interval" | "timeout" => {
                if let Some(word) = cx.value(s) {
                    cx.seconds(&format!("`{keyword}`"), word, false, 86_400);
                }
            }
            "weight" => {
                if let Some(values) = cx.values(s, 1, 2) {
                    cx.int("`weight`", &values[0], -253, 253);
                    if let Some(extra) = values.get(1).filter(|w| w.text != "reverse") {
                        cx.error(
                            extra.at,
                            format!("unexpected `{}`: expected reverse", extra.text),
                        );
                    }
                }
            }
            "rise" | "fall" => {
                if let Some(word) = cx.value(s) {
                    cx.uint(&format!("`{keyword}`"), word, 1, u32::MAX.into());
                }
            }
            "user" => {
                cx.values(s, 1, 2);
            }
            "init_fail" => {
                cx.bare_flag(s);
            }
            _ => cx.unknown(s, Section::VrrpScript),
        }
    }
    if !has_script && cx.clean_since(errors) {
        cx.error(name.at, format!("vrrp_script `{}` needs a `script`", name.text));
    }
    not_implemented(cx, stmt, &name.text, "lb does not run it");
    vrrp.scripts.push(Named::of(name));
}

/// `vrrp_sync_group NAME { group { INSTANCE ... } ... }`.
pub(super) fn sync_group(cx: &mut Cx<'_>, stmt: &Stmt, vrrp: &mut Vrrp) {
    let name = block_name(cx, stmt);
    let Some(block) = cx.block(stmt, "vrrp_sync_group NAME { group { INSTANCE ... } }") else {
        return;
    };
    let Some(name) = name else { return };
    let errors = cx.errors();
    let mut has_group = false;
    for s in &block.stmts {
        let keyword = s.name();
        match keyword {
            "group" => {
                has_group = true;
                if let Some(block) = cx.block(s, "group { INSTANCE ... }") {
                    for line in &block.stmts {
                        if cx.no_block(line) {
                            vrrp.sync_members.extend(line.words.iter().map(Named::of));
                        }
                    }
                }
            }
            "track_interface" | "track_script" | "track_file" | "track_process" | "track_bfd" => {
                cx.block(s, &format!("{keyword} {{ NAME ... }}"));
            }
            "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" | "notify" => {
                cx.script(s);
            }
            "smtp_alert"
            | "global_tracking"
            | "sync_group_tracking_weight"
            | "notify_priority_changes" => {
                cx.flag(s);
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
    not_implemented(cx, stmt, &name.text, "its instances are not run");
}

/// What the VRRP blocks name must exist: sync group members, tracked scripts.
pub(super) fn check_references(cx: &mut Cx<'_>, vrrp: &Vrrp) {
    let instances: Vec<&str> = vrrp.instances.iter().map(|i| i.name.as_str()).collect();
    for member in &vrrp.sync_members {
        if !instances.contains(&member.name.as_str()) {
            let hint = keywords::suggest(&member.name, &instances)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            cx.error(member.at, format!("no vrrp_instance `{}`{hint}", member.name));
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
