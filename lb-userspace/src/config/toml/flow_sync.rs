//! `[flow_sync]` in the native front end: each value on its own (types, ranges).

use ::toml::de::DeTable;

use super::super::flow_sync::{FlowSyncConfig, MIN_MAX_LEN, group_problem};
use super::Parser;

const FLOW_SYNC_KEYS: &[&str] = &["interface", "sync_id", "group", "port", "ttl", "max_len"];
const FLOW_SYNC: &str = "[flow_sync]";

impl Parser<'_> {
    /// `[flow_sync]`, when written; `None` without its required `interface`. A value with an
    /// error keeps its default (the file is refused anyway).
    pub(super) fn flow_sync(&mut self, root: &DeTable<'_>) -> Option<FlowSyncConfig> {
        let (key, value) = root.get_key_value("flow_sync")?;
        let (table, span) = self.table(key, value, FLOW_SYNC)?;
        let location = self.at(span);
        self.unknown_keys(table, FLOW_SYNC_KEYS, &format!("in {FLOW_SYNC}"));
        let (key, value) = self.required(table, "interface", location, FLOW_SYNC)?;
        let interface = self.string(key, value)?.to_owned();
        let mut sync = FlowSyncConfig::new(interface, location);
        if let Some((key, value)) = table.get_key_value("sync_id")
            && let Some(id) = self.integer(key, value, 0, 255)
        {
            sync.sync_id = u8::try_from(id).unwrap_or(0);
        }
        if let Some((key, value)) = table.get_key_value("group")
            && let Some(group) = self.ip_address(key, value)
        {
            match group_problem(group) {
                Some(problem) => self.error(value.span(), format!("`group` {problem}")),
                None => sync.group = group,
            }
        }
        if let Some((key, value)) = table.get_key_value("port")
            && let Some(port) = self.integer(key, value, 1, u16::MAX.into())
        {
            sync.port = u16::try_from(port).unwrap_or(sync.port);
        }
        if let Some((key, value)) = table.get_key_value("ttl")
            && let Some(ttl) = self.integer(key, value, 1, 255)
        {
            sync.ttl = u8::try_from(ttl).unwrap_or(sync.ttl);
        }
        if let Some((key, value)) = table.get_key_value("max_len")
            && let Some(len) = self.integer(key, value, MIN_MAX_LEN.into(), u16::MAX.into())
        {
            sync.max_len = u16::try_from(len).unwrap_or(sync.max_len);
        }
        Some(sync)
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
