//! `[dataplane]`: settings of the XDP dataplane for the whole director. Every key has a default,
//! so the table can be left out. A setting with an error keeps its default, except the limits,
//! which take their largest value.

use super::super::emit::{boolean, integer, seconds, string};
use super::super::model::{
    BackupXdp, DataplaneSettings, FLOW_TABLE_SIZE_LIMITS, MAX_REALS_LIMITS, MAX_SERVICES_LIMITS,
    Spans, TCP_FLOW_TIMEOUT_LIMITS_SECS, UDP_FLOW_TIMEOUT_LIMITS_SECS,
};
use super::schema::{Doc, Located, Section, Setting, unless};
use super::{Key, Parser, Value};

impl Located for DataplaneSettings {
    fn spans_mut(&mut self) -> &mut Spans {
        &mut self.key_locations
    }
}

pub(in crate::config) const DATAPLANE: Section<DataplaneSettings> = Section {
    header: "[dataplane]",
    // `dataplane` written after a `[[virtual_server]]` is caught there; nothing belongs elsewhere.
    misplaced: |_| None,
    required: &[],
    drop_on_error: &[],
    nested: &[],
    elsewhere: &[],
    finish: None,
    settings: &[
        Setting {
            name: "flow_table_size",
            doc: Doc {
                ty: "integer 1024–67108864",
                default: "`1048576`",
                meaning: "Entries in the XDP flow table (an LRU map): flows remembered so that \
                     packets of a flow keep going to the same real when the real servers change.",
            },
            read: |p, k, v, s| {
                if let Some(size) = p.integer_in(k, v, FLOW_TABLE_SIZE_LIMITS) {
                    s.flow_table_size = size;
                }
            },
            emit: |s, d| unless(&s.flow_table_size, &d.flow_table_size, integer),
        },
        Setting {
            name: "hash_seed",
            doc: Doc {
                ty: "integer 0–4294967295",
                default: "`0x4c425331`",
                meaning: "Seed of the flow hash and of the Maglev permutations. Directors that \
                     pair up (or replace one another) must use the same seed, or flows land on other \
                     reals after a failover.",
            },
            read: |p, k, v, s| {
                if let Some(seed) = p.integer_in(k, v, 0..=u32::MAX) {
                    s.hash_seed = seed;
                }
            },
            emit: |s, d| unless(&s.hash_seed, &d.hash_seed, integer),
        },
        Setting {
            name: "syn_flood_threshold",
            doc: Doc {
                ty: "integer 0–4294967295",
                default: "`125000`",
                meaning: "New flows per second per CPU above which new flows are no longer \
                     inserted into the flow table (they are still forwarded by Maglev), so a SYN \
                     flood cannot evict established flows. `0` disables the guard.",
            },
            read: |p, k, v, s| {
                if let Some(threshold) = p.integer_in(k, v, 0..=u32::MAX) {
                    s.syn_flood_threshold = threshold;
                }
            },
            emit: |s, d| unless(&s.syn_flood_threshold, &d.syn_flood_threshold, integer),
        },
        Setting {
            name: "udp_flow_timeout",
            doc: Doc {
                ty: "seconds, 1–86400",
                default: "`30`",
                meaning: "Idle time after which a UDP flow-table entry is no longer used (UDP \
                     has no FIN to end a flow): the flow is then one without an entry. UDP flows \
                     of a service without persistence or source hashing get an entry only \
                     inside the window of `tcp_flow_timeout` (docs/fast-path.md).",
            },
            read: |p, k, v, s| {
                if let Some(timeout) = p.seconds(k, v, UDP_FLOW_TIMEOUT_LIMITS_SECS) {
                    s.udp_flow_timeout = timeout;
                }
            },
            emit: |s, d| unless(&s.udp_flow_timeout, &d.udp_flow_timeout, seconds),
        },
        Setting {
            name: "tcp_flow_timeout",
            doc: Doc {
                ty: "seconds, 1–86400",
                default: "`900`",
                meaning: "Window after a change of a service's real servers (or its start) in \
                     which TCP and UDP flows are written into the flow table: after a change \
                     only the flows it moved when the window lasts at least the entry timeout \
                     (the TCP entry timeout for TCP, 900 s by default; `udp_flow_timeout` for \
                     UDP), else every flow, as in the window of a service's start. Outside it a \
                     flow of a service without persistence or source hashing needs no entry: \
                     the Maglev table alone picks its real, so new connections cost no map \
                     write. A flow (TCP or UDP) idle for longer than this across a change may \
                     move to another real; a TCP flow-table entry idle for longer than this \
                     (but never less than 900 s) is no longer followed (docs/fast-path.md).",
            },
            read: |p, k, v, s| {
                if let Some(timeout) = p.seconds(k, v, TCP_FLOW_TIMEOUT_LIMITS_SECS) {
                    s.tcp_flow_timeout = timeout;
                }
            },
            emit: |s, d| unless(&s.tcp_flow_timeout, &d.tcp_flow_timeout, seconds),
        },
        Setting {
            name: "icmp_echo",
            doc: Doc {
                ty: "boolean",
                default: "`true`",
                meaning: "Answer ICMP and ICMPv6 echo requests (ping) addressed to VIPs.",
            },
            read: |p, k, v, s| {
                if let Some(answer) = p.boolean(k, v) {
                    s.icmp_echo = answer;
                }
            },
            emit: |s, d| unless(&s.icmp_echo, &d.icmp_echo, boolean),
        },
        Setting {
            name: "max_services",
            doc: Doc {
                ty: "integer 1–65536",
                default: "`1024`",
                meaning: "Service slots in the dataplane maps. More virtual servers than this is \
                     an error, located at `max_services` if written, else at the first virtual server \
                     over the limit.",
            },
            read: |p, k, v, s| {
                // On an error the largest value, so that validation does not also report the
                // virtual servers over a limit the operator is already told to fix.
                s.max_services =
                    p.integer_in(k, v, MAX_SERVICES_LIMITS).unwrap_or(*MAX_SERVICES_LIMITS.end());
            },
            emit: |s, d| unless(&s.max_services, &d.max_services, integer),
        },
        Setting {
            name: "max_reals",
            doc: Doc {
                ty: "integer 1–1048576",
                default: "`4096`",
                meaning: "Real-server slots in the dataplane maps, over all virtual servers; \
                     sorry servers count too. More is an error, located like `max_services`'s. \
                     Up to 65,535 the XDP Maglev tables store each entry in 16 bits instead of \
                     32: the rings map (which the kernel allocates and zeroes at start-up) is \
                     half as large.",
            },
            read: |p, k, v, s| {
                s.max_reals =
                    p.integer_in(k, v, MAX_REALS_LIMITS).unwrap_or(*MAX_REALS_LIMITS.end());
            },
            emit: |s, d| unless(&s.max_reals, &d.max_reals, integer),
        },
        Setting {
            name: "backup_xdp",
            doc: Doc {
                ty: "`\"detach\"` or `\"standby\"`",
                default: "`\"detach\"`",
                meaning: "The XDP program on the interfaces of a VRRP BACKUP. `detach`: detached \
                     while none of the interface's services is live, attached again on becoming \
                     MASTER. `standby`: stays attached with the services staged but not live (their \
                     frames pass to the kernel), so becoming MASTER is a few map writes, with no \
                     attach (and no ring reset on drivers that do one on attach). keepalived.conf \
                     has no equivalent: it always detaches.",
            },
            read: |p, k, v, s| {
                if let Some(mode) = p.backup_xdp(k, v) {
                    s.backup_xdp = mode;
                }
            },
            emit: |s, d| unless(&s.backup_xdp, &d.backup_xdp, |m| string(m.as_str())),
        },
    ],
};

impl Parser<'_> {
    fn backup_xdp(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<BackupXdp> {
        let text = self.string(key, value)?;
        match text.parse() {
            Ok(mode) => Some(mode),
            Err(()) => {
                let message = format!(
                    "`{}` must be \"detach\" or \"standby\", found \"{}\"",
                    key.get_ref(),
                    text.escape_debug()
                );
                self.error(value.span(), message);
                None
            }
        }
    }
}
