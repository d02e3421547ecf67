//! keepalived's keywords, per block, as its parsers install them (keepalived 2.x, plus older
//! spellings still found in old files). A word no block knows is misspelled ("did you mean");
//! one another block knows is misplaced ("belongs in"). Which of them lb acts on is decided where
//! each block is read; the others are accepted with a warning naming them.

use super::super::error::closest;

/// A kind of block: what its keywords are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Top,
    GlobalDefs,
    VirtualServer,
    RealServer,
    Checker(Checker),
    Url,
    VrrpInstance,
    VrrpScript,
    VrrpSyncGroup,
    Authentication,
}

/// The checkers lb implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checker {
    Tcp,
    Http,
    Ssl,
    Misc,
    Dns,
    Udp,
    Ping,
}

impl Checker {
    pub fn from_keyword(word: &str) -> Option<Checker> {
        Some(match word {
            "TCP_CHECK" => Checker::Tcp,
            "HTTP_GET" => Checker::Http,
            "SSL_GET" => Checker::Ssl,
            "MISC_CHECK" => Checker::Misc,
            "DNS_CHECK" => Checker::Dns,
            "UDP_CHECK" => Checker::Udp,
            "PING_CHECK" => Checker::Ping,
            _ => return None,
        })
    }

    pub fn keyword(self) -> &'static str {
        match self {
            Checker::Tcp => "TCP_CHECK",
            Checker::Http => "HTTP_GET",
            Checker::Ssl => "SSL_GET",
            Checker::Misc => "MISC_CHECK",
            Checker::Dns => "DNS_CHECK",
            Checker::Udp => "UDP_CHECK",
            Checker::Ping => "PING_CHECK",
        }
    }

    /// The keywords of this checker beyond the common ones.
    fn own_keywords(self) -> &'static [&'static str] {
        match self {
            Checker::Http | Checker::Ssl => HTTP_KEYWORDS,
            Checker::Misc => MISC_KEYWORDS,
            Checker::Dns => DNS_KEYWORDS,
            Checker::Udp => UDP_KEYWORDS,
            Checker::Tcp | Checker::Ping => &[],
        }
    }
}

/// keepalived's include keywords: `include` and its stricter variants, which differ only in
/// which problems keepalived reports (lb reports them all).
pub(super) const INCLUDE_KEYWORDS: &[&str] =
    &["include", "includer", "includem", "includew", "includeb", "includea"];

/// Top-level blocks lb reads.
const TOP_BLOCKS: &[&str] = &[
    "global_defs",
    "virtual_server",
    "virtual_server_group",
    "vrrp_instance",
    "vrrp_script",
    "vrrp_sync_group",
];

/// Top-level blocks lb does not implement: accepted with one warning each.
pub(super) const TOP_UNIMPLEMENTED_BLOCKS: &[&str] = &[
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "track_group",
    "garp_group",
    "linkbeat_interfaces",
    "interface_up_down_delays",
    "vrrp_track_process",
    "track_file",
    "bfd_instance",
    "SSL",
];

/// Top-level settings lb does not implement.
pub(super) const TOP_UNIMPLEMENTED: &[&str] = &[
    "net_namespace",
    "net_namespace_ipvs",
    "namespace_with_ipsets",
    "instance",
    "use_pid_dir",
    "linkbeat_use_polling",
    "child_wait_time",
];

/// Every `global_defs` keyword of keepalived 2.x, plus `lvs_id` (`router_id` before 1.1.8).
pub(super) const GLOBAL_DEFS: &[&str] = &[
    "router_id",
    "lvs_id",
    "default_interface",
    "process_names",
    "process_name",
    "vrrp_process_name",
    "checker_process_name",
    "lvs_process_name",
    "bfd_process_name",
    "use_symlink_paths",
    "set_supplementary_groups",
    "notification_email_from",
    "smtp_server",
    "smtp_helo_name",
    "smtp_connect_timeout",
    "notification_email",
    "smtp_alert",
    "startup_script",
    "startup_script_timeout",
    "shutdown_script",
    "shutdown_script_timeout",
    "max_auto_priority",
    "min_auto_priority_delay",
    "smtp_alert_vrrp",
    "smtp_alert_checker",
    "checker_log_all_failures",
    "dynamic_interfaces",
    "no_email_faults",
    "disable_local_igmp",
    "v3_checksum_as_v2",
    "lvs_timeouts",
    "lvs_flush",
    "lvs_flush_on_stop",
    "lvs_flush_onstop",
    "lvs_sync_daemon",
    "vrrp_mcast_group4",
    "vrrp_mcast_group6",
    "vrrp_garp_master_delay",
    "vrrp_garp_master_repeat",
    "vrrp_garp_master_refresh",
    "vrrp_garp_master_refresh_repeat",
    "vrrp_garp_lower_prio_delay",
    "vrrp_garp_lower_prio_repeat",
    "vrrp_down_timer_adverts",
    "vrrp_garp_interval",
    "vrrp_gna_interval",
    "vrrp_min_garp",
    "vrrp_garp_extra_if",
    "vrrp_vmac_garp_intvl",
    "vrrp_lower_prio_no_advert",
    "vrrp_higher_prio_send_advert",
    "vrrp_version",
    "vrrp_iptables",
    "vrrp_ipsets",
    "nftables",
    "nftables_priority",
    "nftables_ifindex",
    "vrrp_check_unicast_src",
    "vrrp_skip_check_adv_addr",
    "vrrp_strict",
    "vrrp_priority",
    "vrrp_no_swap",
    "vrrp_rt_priority",
    "vrrp_cpu_affinity",
    "vrrp_rlimit_rttime",
    "vrrp_rlimit_rtime",
    "nftables_ipvs",
    "nftables_ipvs_priority",
    "nftables_ipvs_start_fwmark",
    "nftables_counters",
    "notify_fifo",
    "notify_fifo_script",
    "vrrp_notify_fifo",
    "vrrp_notify_fifo_script",
    "vrrp_notify_priority_changes",
    "fifo_write_vrrp_states_on_reload",
    "lvs_notify_fifo",
    "lvs_notify_fifo_script",
    "checker_priority",
    "checker_no_swap",
    "checker_rt_priority",
    "checker_cpu_affinity",
    "checker_rlimit_rttime",
    "checker_rlimit_rtime",
    "bfd_priority",
    "bfd_no_swap",
    "bfd_rt_priority",
    "bfd_cpu_affinity",
    "bfd_rlimit_rttime",
    "bfd_rlimit_rtime",
    "snmp_socket",
    "enable_traps",
    "enable_snmp_vrrp",
    "enable_snmp_keepalived",
    "enable_snmp_rfc",
    "enable_snmp_rfcv2",
    "enable_snmp_rfcv3",
    "enable_snmp_checker",
    "snmp_vs_stats_update_interval",
    "snmp_rs_stats_update_interval",
    "enable_dbus",
    "dbus_service_name",
    "dbus_no_interface_name",
    "script_user",
    "enable_script_security",
    "vrrp_netlink_cmd_rcv_bufs",
    "vrrp_netlink_cmd_rcv_bufs_force",
    "vrrp_netlink_monitor_rcv_bufs",
    "vrrp_netlink_monitor_rcv_bufs_force",
    "process_monitor_rcv_bufs",
    "process_monitor_rcv_bufs_force",
    "lvs_netlink_cmd_rcv_bufs",
    "lvs_netlink_cmd_rcv_bufs_force",
    "lvs_netlink_monitor_rcv_bufs",
    "lvs_netlink_monitor_rcv_bufs_force",
    "rs_init_notifies",
    "no_checker_emails",
    "vrrp_rx_bufs_policy",
    "vrrp_rx_bufs_multiplier",
    "vrrp_startup_delay",
    "vrrp_delay_after_boot",
    "log_unknown_vrids",
    "vrrp_owner_ignore_adverts",
    "vmac_prefix",
    "vmac_addr_prefix",
    "umask",
    "random_seed",
    "reload_check_config",
    "reload_time_file",
    "reload_repeat",
    "reload_file",
    "include_check",
    "config_save_dir",
    "tmp_config_directory",
    "data_use_instance",
    "json_version",
    "iproute_usr_dir",
    "iproute_etc_dir",
    "state_dump_file",
    "stats_dump_file",
    "json_dump_file",
];

/// `virtual_server` keywords, plus lb's `lb_interface` and keepalived 1.x's `nat_mask`.
pub(super) const VIRTUAL_SERVER: &[&str] = &[
    "lb_interface",
    "ip_family",
    "retry",
    "delay_before_retry",
    "warmup",
    "connect_timeout",
    "delay_loop",
    "inhibit_on_failure",
    "lb_algo",
    "lvs_sched",
    "hashed",
    "ops",
    "flag-1",
    "flag-2",
    "flag-3",
    "sh-port",
    "sh-fallback",
    "mh-port",
    "mh-fallback",
    "lb_kind",
    "lvs_method",
    "persistence_engine",
    "persistence_timeout",
    "persistence_granularity",
    "protocol",
    "ha_suspend",
    "smtp_alert",
    "virtualhost",
    "snmp_name",
    "alpha",
    "omega",
    "quorum_up",
    "quorum_down",
    "quorum",
    "hysteresis",
    "weight",
    "sorry_server",
    "sorry_server_inhibit",
    "sorry_server_lvs_method",
    "real_server",
    "nat_mask",
];

/// `real_server` keywords: its settings, then its checkers (lb's and the others).
pub(super) const REAL_SERVER: &[&str] = &[
    "weight",
    "lvs_method",
    "uthreshold",
    "lthreshold",
    "inhibit_on_failure",
    "notify_up",
    "notify_down",
    "alpha",
    "retry",
    "delay_before_retry",
    "warmup",
    "connect_timeout",
    "delay_loop",
    "smtp_alert",
    "virtualhost",
    "snmp_name",
    "TCP_CHECK",
    "HTTP_GET",
    "SSL_GET",
    "MISC_CHECK",
    "DNS_CHECK",
    "UDP_CHECK",
    "PING_CHECK",
    "SMTP_CHECK",
    "FILE_CHECK",
    "BFD_CHECK",
];

/// Checkers keepalived has and lb does not.
pub(super) const UNIMPLEMENTED_CHECKERS: &[&str] = &["SMTP_CHECK", "FILE_CHECK", "BFD_CHECK"];

/// Connection keywords of every checker but MISC_CHECK.
pub(super) const CONNECTION_KEYWORDS: &[&str] =
    &["connect_ip", "connect_port", "bindto", "bind_port", "bind_if", "connect_timeout", "fwmark"];

/// Keywords of every checker; `nb_get_retry` is `retry` before keepalived 1.3.
pub(super) const COMMON_CHECKER_KEYWORDS: &[&str] = &[
    "retry",
    "nb_get_retry",
    "delay_before_retry",
    "warmup",
    "delay_loop",
    "alpha",
    "log_all_failures",
];

const HTTP_KEYWORDS: &[&str] = &[
    "url",
    "virtualhost",
    "http_protocol",
    "enable_sni",
    "sni_name",
    "fast_recovery",
    "tls_compliant",
];
const MISC_KEYWORDS: &[&str] = &["misc_path", "misc_timeout", "misc_dynamic", "user"];
/// keepalived's `type` and `name`, and the native format's spellings.
const DNS_KEYWORDS: &[&str] = &["type", "name", "dns_type", "dns_name"];
const UDP_KEYWORDS: &[&str] = &["payload", "require_reply", "min_reply_length", "max_reply_length"];

pub(super) const URL: &[&str] = &[
    "path",
    "digest",
    "status_code",
    "virtualhost",
    "regex",
    "regex_no_match",
    "regex_options",
    "regex_stack",
    "regex_min_offset",
    "regex_max_offset",
    "tls_compliant",
];

pub(super) const VRRP_INSTANCE: &[&str] = &[
    "use_vmac",
    "use_vmac_addr",
    "vmac_xmit_base",
    "use_ipvlan",
    "unicast_peer",
    "unicast_fault_no_peer",
    "check_unicast_src",
    "old_unicast_checksum",
    "native_ipv6",
    "state",
    "interface",
    "vrf",
    "dont_track_primary",
    "track_interface",
    "track_script",
    "track_file",
    "track_process",
    "track_bfd",
    "mcast_src_ip",
    "unicast_src_ip",
    "mcast_dst_ip",
    "track_src_ip",
    "virtual_router_id",
    "unicast_ttl",
    "version",
    "priority",
    "advert_int",
    "virtual_ipaddress",
    "virtual_ipaddress_excluded",
    "no_virtual_ipaddress",
    "promote_secondaries",
    "linkbeat_use_polling",
    "v3_checksum_as_v2",
    "virtual_routes",
    "virtual_rules",
    "accept",
    "no_accept",
    "skip_check_adv_addr",
    "strict_mode",
    "preempt",
    "nopreempt",
    "preempt_delay",
    "debug",
    "notify_backup",
    "notify_master",
    "notify_fault",
    "notify_stop",
    "notify_deleted",
    "notify",
    "notify_master_rx_lower_pri",
    "smtp_alert",
    "notify_priority_changes",
    "lvs_sync_daemon_interface",
    "garp_master_delay",
    "garp_master_refresh",
    "garp_master_repeat",
    "garp_master_refresh_repeat",
    "garp_lower_prio_delay",
    "garp_lower_prio_repeat",
    "down_timer_adverts",
    "timer_expired_backup",
    "thread_timer_expired",
    "garp_extra_if",
    "vmac_garp_intvl",
    "lower_prio_no_advert",
    "higher_prio_send_advert",
    "owner_ignore_adverts",
    "kernel_rx_buf_size",
    "authentication",
    "auth_hmac",
];

pub(super) const VRRP_SCRIPT: &[&str] =
    &["script", "interval", "timeout", "weight", "rise", "fall", "user", "init_fail"];

pub(super) const VRRP_SYNC_GROUP: &[&str] = &[
    "group",
    "track_interface",
    "track_script",
    "track_file",
    "track_process",
    "track_bfd",
    "notify_backup",
    "notify_master",
    "notify_fault",
    "notify_stop",
    "notify",
    "smtp_alert",
    "global_tracking",
    "sync_group_tracking_weight",
    "notify_priority_changes",
];

pub(super) const AUTHENTICATION: &[&str] = &["auth_type", "auth_pass"];

/// Whether `word` starts a top-level block or setting keepalived knows.
pub(super) fn is_top_level(word: &str) -> bool {
    TOP_BLOCKS.contains(&word)
        || TOP_UNIMPLEMENTED_BLOCKS.contains(&word)
        || TOP_UNIMPLEMENTED.contains(&word)
}

impl Section {
    /// How messages name it: "in {name}".
    pub fn name(self) -> &'static str {
        match self {
            Section::Top => "at the top level",
            Section::GlobalDefs => "global_defs",
            Section::VirtualServer => "virtual_server",
            Section::RealServer => "real_server",
            Section::Checker(checker) => checker.keyword(),
            Section::Url => "url",
            Section::VrrpInstance => "vrrp_instance",
            Section::VrrpScript => "vrrp_script",
            Section::VrrpSyncGroup => "vrrp_sync_group",
            Section::Authentication => "authentication",
        }
    }

    /// "in X" / "at the top level".
    fn place(self) -> String {
        match self {
            Section::Top => self.name().to_owned(),
            _ => format!("in {}", self.name()),
        }
    }

    /// Every keyword keepalived knows here.
    pub fn keywords(self) -> Vec<&'static str> {
        match self {
            Section::Top => [TOP_BLOCKS, TOP_UNIMPLEMENTED_BLOCKS, TOP_UNIMPLEMENTED].concat(),
            Section::GlobalDefs => GLOBAL_DEFS.to_vec(),
            Section::VirtualServer => VIRTUAL_SERVER.to_vec(),
            Section::RealServer => REAL_SERVER.to_vec(),
            Section::Checker(checker) => {
                let connection =
                    if checker == Checker::Misc { &[][..] } else { CONNECTION_KEYWORDS };
                [connection, COMMON_CHECKER_KEYWORDS, checker.own_keywords()].concat()
            }
            Section::Url => URL.to_vec(),
            Section::VrrpInstance => VRRP_INSTANCE.to_vec(),
            Section::VrrpScript => VRRP_SCRIPT.to_vec(),
            Section::VrrpSyncGroup => VRRP_SYNC_GROUP.to_vec(),
            Section::Authentication => AUTHENTICATION.to_vec(),
        }
    }
}

/// Sections in the order "belongs in" lists them.
const ALL_SECTIONS: &[Section] = &[
    Section::Top,
    Section::GlobalDefs,
    Section::VirtualServer,
    Section::RealServer,
    Section::Checker(Checker::Tcp),
    Section::Checker(Checker::Http),
    Section::Checker(Checker::Ssl),
    Section::Checker(Checker::Misc),
    Section::Checker(Checker::Dns),
    Section::Checker(Checker::Udp),
    Section::Checker(Checker::Ping),
    Section::Url,
    Section::VrrpInstance,
    Section::VrrpScript,
    Section::VrrpSyncGroup,
    Section::Authentication,
];

/// The message for a keyword `here` does not know: where it belongs if another block knows it,
/// else the closest keyword of this block as a suggestion.
pub(super) fn unknown(word: &str, here: Section) -> String {
    if let Some(feature) = unsupported_feature(word) {
        return format!("keepalived's {feature} is not supported yet: write the lines out in full");
    }
    if INCLUDE_KEYWORDS.contains(&word) {
        return format!("`{word}` must be the first word of its line");
    }
    if here == Section::Checker(Checker::Misc) && CONNECTION_KEYWORDS.contains(&word) {
        return format!(
            "`{word}` does not apply to MISC_CHECK: it runs a script and connects to nothing"
        );
    }
    let mut homes: Vec<&str> = Vec::new();
    for &section in ALL_SECTIONS {
        if section == here || !section.keywords().contains(&word) {
            continue;
        }
        let home = match section {
            Section::Checker(_)
                if COMMON_CHECKER_KEYWORDS.contains(&word)
                    || CONNECTION_KEYWORDS.contains(&word) =>
            {
                "a checker (like TCP_CHECK)"
            }
            _ => section.name(),
        };
        if !homes.contains(&home) {
            homes.push(home);
        }
    }
    if let Some((first, rest)) = homes.split_first() {
        let top = Section::Top.name();
        let place = if *first == top {
            "belongs at the top level".to_owned()
        } else {
            format!("belongs in {first}")
        };
        let others: String = rest.iter().map(|h| format!(" or {h}")).collect();
        let hint = if homes.contains(&top) && here != Section::Top {
            " (is a `}` missing above?)"
        } else {
            ""
        };
        return format!("`{word}` {place}{others}, not {}{hint}", here.place());
    }
    let known = here.keywords();
    let hint = suggest(word, &known).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
    format!("unknown keyword `{word}` {}{hint}", here.place())
}

/// The advanced keepalived parser feature a line starting with `word` uses, if any.
fn unsupported_feature(word: &str) -> Option<&'static str> {
    if word.starts_with('@') {
        Some("conditional configuration (`@ID` lines)")
    } else if word.starts_with('$') {
        Some("parameter substitution (`$NAME=value` definitions)")
    } else if word.starts_with("~SEQ") || word.starts_with("~LST") {
        Some("sequence and list blocks (`~SEQ`, `~LST`)")
    } else {
        None
    }
}

/// The candidate closest to `word`, ignoring case (keepalived's checkers are upper case).
pub(super) fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let lower: Vec<String> = candidates.iter().map(|c| c.to_ascii_lowercase()).collect();
    let refs: Vec<&str> = lower.iter().map(String::as_str).collect();
    let best = closest(word, &refs)?;
    refs.iter().position(|&r| r == best).map(|i| candidates[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelled_and_misplaced() {
        let cases = [
            (
                "weigth",
                Section::RealServer,
                "unknown keyword `weigth` in real_server; did you mean `weight`?",
            ),
            (
                "tcp_check",
                Section::RealServer,
                "unknown keyword `tcp_check` in real_server; did you mean `TCP_CHECK`?",
            ),
            (
                "lb_algoo",
                Section::VirtualServer,
                "unknown keyword `lb_algoo` in virtual_server; did you mean `lb_algo`?",
            ),
            ("bogus", Section::GlobalDefs, "unknown keyword `bogus` in global_defs"),
            (
                "virtual_servr",
                Section::Top,
                "unknown keyword `virtual_servr` at the top level; did you mean `virtual_server`?",
            ),
            (
                "real_server",
                Section::Top,
                "`real_server` belongs in virtual_server, not at the top level",
            ),
            (
                "virtual_server",
                Section::RealServer,
                "`virtual_server` belongs at the top level, not in real_server (is a `}` missing above?)",
            ),
            (
                "url",
                Section::Checker(Checker::Tcp),
                "`url` belongs in HTTP_GET or SSL_GET, not in TCP_CHECK",
            ),
            (
                "connect_port",
                Section::Checker(Checker::Misc),
                "`connect_port` does not apply to MISC_CHECK: it runs a script and connects to nothing",
            ),
            (
                "misc_path",
                Section::RealServer,
                "`misc_path` belongs in MISC_CHECK, not in real_server",
            ),
            (
                "priority",
                Section::VirtualServer,
                "`priority` belongs in vrrp_instance, not in virtual_server",
            ),
            ("router_id", Section::Top, "`router_id` belongs in global_defs, not at the top level"),
            ("include", Section::VirtualServer, "`include` must be the first word of its line"),
            (
                "@lb1",
                Section::VrrpInstance,
                "keepalived's conditional configuration (`@ID` lines) is not supported yet: write \
                 the lines out in full",
            ),
        ];
        for (word, section, expected) in cases {
            assert_eq!(unknown(word, section), expected, "{word}");
        }
    }
}
