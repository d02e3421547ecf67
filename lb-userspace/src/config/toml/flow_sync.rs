//! `[flow_sync]` in the native front end: each value on its own (types, ranges), from one
//! description ([`FLOW_SYNC_SECTION`]).

use ::toml::de::DeTable;

use super::super::emit::{address, integer, string};
use super::super::flow_sync::{FlowSyncConfig, MIN_MAX_LEN, group_problem};
use super::super::model::{Location, Spans};
use super::Parser;
use super::schema::{Doc, Located, Section, Setting, unless};

pub(in crate::config) const FLOW_SYNC: &str = "[flow_sync]";

/// `[flow_sync]` as read (and written by `lb convert`): the settings and where each was written.
pub(in crate::config) struct FlowSync {
    sync: FlowSyncConfig,
    spans: Spans,
}

impl Located for FlowSync {
    fn spans_mut(&mut self) -> &mut Spans {
        &mut self.spans
    }
}

impl FlowSync {
    /// `sync`, to write it.
    pub(in crate::config) fn of(sync: &FlowSyncConfig) -> Self {
        FlowSync { sync: sync.clone(), spans: Spans::at_section(sync.location) }
    }

    /// The defaults, to write only what differs from them.
    pub(in crate::config) fn defaults(sync: &FlowSyncConfig) -> Self {
        Self::of(&FlowSyncConfig::new(sync.interface.clone(), sync.location))
    }

    fn at(location: Location) -> Self {
        Self::of(&FlowSyncConfig::new(String::new(), location))
    }
}

/// A value with an error keeps its default (the file is refused anyway); without its required
/// `interface` the section is left out.
pub(in crate::config) const FLOW_SYNC_SECTION: Section<FlowSync> = Section {
    header: FLOW_SYNC,
    misplaced: |_| None,
    required: &["interface"],
    drop_on_error: &["interface"],
    nested: &[],
    elsewhere: &[],
    finish: None,
    settings: &[
        Setting {
            name: "interface",
            doc: Doc {
                ty: "string",
                default: "required",
                meaning: "Interface the sync messages are sent on and received from (the group is \
                     joined there).",
            },
            read: |p, k, v, f| {
                if let Some(interface) = p.string(k, v) {
                    interface.clone_into(&mut f.sync.interface);
                }
            },
            emit: |f, _| Some(string(&f.sync.interface)),
        },
        Setting {
            name: "sync_id",
            doc: Doc {
                ty: "integer 0–255",
                default: "`0`",
                meaning: "Sync id sent in every message; messages with another id are dropped.",
            },
            read: |p, k, v, f| {
                if let Some(id) = p.integer(k, v, 0, 255).and_then(|id| u8::try_from(id).ok()) {
                    f.sync.sync_id = id;
                }
            },
            emit: |f, d| unless(&f.sync.sync_id, &d.sync.sync_id, integer),
        },
        Setting {
            name: "group",
            doc: Doc {
                ty: "multicast IP address (IPv4 or IPv6)",
                default: "`\"224.0.0.81\"`",
                meaning: "Destination group of the messages, the kernel's default.",
            },
            read: |p, k, v, f| {
                if let Some(group) = p.ip_address(k, v) {
                    match group_problem(group) {
                        Some(problem) => p.error(v.span(), format!("`group` {problem}")),
                        None => f.sync.group = group,
                    }
                }
            },
            emit: |f, d| unless(&f.sync.group, &d.sync.group, address),
        },
        Setting {
            name: "port",
            doc: Doc {
                ty: "integer 1–65535",
                default: "`8848`",
                meaning: "UDP port of the messages, the kernel's default.",
            },
            read: |p, k, v, f| {
                let port = p.integer(k, v, 1, u16::MAX.into());
                if let Some(port) = port.and_then(|port| u16::try_from(port).ok()) {
                    f.sync.port = port;
                }
            },
            emit: |f, d| unless(&f.sync.port, &d.sync.port, integer),
        },
        Setting {
            name: "ttl",
            doc: Doc {
                ty: "integer 1–255",
                default: "`1`",
                meaning: "TTL (hop limit) of sent messages; received ones must arrive with the \
                     same (else dropped, counted as `ttl`): set it alike on every director of the \
                     group.",
            },
            read: |p, k, v, f| {
                if let Some(ttl) = p.integer(k, v, 1, 255).and_then(|ttl| u8::try_from(ttl).ok()) {
                    f.sync.ttl = ttl;
                }
            },
            emit: |f, d| unless(&f.sync.ttl, &d.sync.ttl, integer),
        },
        Setting {
            name: "max_len",
            doc: Doc {
                ty: "integer 80–65535",
                default: "`1472`",
                meaning: "Largest message, in bytes of UDP payload (the kernel's default for a \
                     1500-byte MTU).",
            },
            read: |p, k, v, f| {
                let len = p.integer(k, v, MIN_MAX_LEN.into(), u16::MAX.into());
                if let Some(len) = len.and_then(|len| u16::try_from(len).ok()) {
                    f.sync.max_len = len;
                }
            },
            emit: |f, d| unless(&f.sync.max_len, &d.sync.max_len, integer),
        },
    ],
};

impl Parser<'_> {
    /// `[flow_sync]`, when written; `None` without its required `interface`.
    pub(super) fn flow_sync(&mut self, root: &DeTable<'_>) -> Option<FlowSyncConfig> {
        let (key, value) = root.get_key_value("flow_sync")?;
        let (table, span) = self.table(key, value, FLOW_SYNC)?;
        let mut sync = FlowSync::at(self.at(span));
        FLOW_SYNC_SECTION.read(self, table, &mut sync).then_some(sync.sync)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::parse;

    #[test]
    fn flow_sync_values_and_located_errors() {
        // Scenario table: the section → (sync_id, group, port, ttl, max_len) or the errors.
        type Ok5 = (u8, &'static str, u16, u8, u16);
        let cases: &[(&str, Result<Ok5, &[&str]>)] = &[
            ("[flow_sync]\ninterface = \"eth1\"\n", Ok((0, "224.0.0.81", 8848, 1, 1472))),
            (
                "[flow_sync]\ninterface = \"eth1\"\nsync_id = 5\ngroup = \"ff02::81\"\nport = 8849\n\
                 ttl = 2\nmax_len = 9000\n",
                Ok((5, "ff02::81", 8849, 2, 9000)),
            ),
            ("[flow_sync]\nsync_id = 5\n", Err(&["1:1:"])),
            ("[flow_sync]\ninterface = \"eth1\"\nsync_id = 256\n", Err(&["3:11:"])),
            (
                "[flow_sync]\ninterface = \"eth1\"\ngroup = \"192.0.2.1\"\n",
                Err(&["3:9: `group` must be a multicast"]),
            ),
            ("[flow_sync]\ninterface = \"eth1\"\nport = 0\n", Err(&["3:8:"])),
            ("[flow_sync]\ninterface = \"eth1\"\nttl = 0\n", Err(&["3:7:"])),
            ("[flow_sync]\ninterface = \"eth1\"\nmax_len = 40\n", Err(&["3:11:"])),
            (
                "[flow_sync]\ninterface = \"eth1\"\nmaxlen = 1400\n",
                Err(&["3:1: unknown key `maxlen`"]),
            ),
        ];
        for (text, want) in cases {
            let (config, errors) = parse(text, Path::new("lb.toml"));
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            match want {
                Ok((id, group, port, ttl, max_len)) => {
                    assert!(errors.is_empty(), "{text}: {errors:?}");
                    let s = config.flow_sync.expect("flow_sync");
                    assert_eq!(s.interface, "eth1");
                    let got = (s.sync_id, s.group.to_string(), s.port, s.ttl, s.max_len);
                    assert_eq!(got, (*id, (*group).to_owned(), *port, *ttl, *max_len), "{text}");
                }
                Err(prefixes) => {
                    assert_eq!(errors.len(), prefixes.len(), "{text}: {errors:?}");
                    for (e, p) in errors.iter().zip(*prefixes) {
                        assert!(e.starts_with(&format!("lb.toml:{p}")), "{text}: {e}");
                    }
                }
            }
        }
        assert_eq!(parse("", Path::new("lb.toml")).0.flow_sync, None);
    }
}
