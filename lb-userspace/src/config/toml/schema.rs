//! One declarative description per TOML section: for each key its name, its row of the reference
//! (docs/config.md), how it is read into the model and how `lb convert` writes it back. From it
//! follow the unknown-key check (with "did you mean"), where each value was written ([`Spans`]),
//! `lb convert`'s lines and the key table of docs/config.md (held by a test).
//!
//! Adding a key to a described section: one [`Setting`] in its description, the model field, and
//! its use. The reader reports its own errors (with the `Parser` helpers, so messages stay the
//! same everywhere); the location of the value is recorded before it runs.

use ::toml::de::DeTable;

use super::super::model::Spans;
use super::{Key, Parser, Value};

/// A key's row in the reference: `| key | type | default | meaning |`. Only the docs test reads it
/// (docs/config.md holds the text the man page is built from).
#[cfg_attr(not(test), allow(dead_code))]
pub(in crate::config) struct Doc {
    pub ty: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// One key of a section whose model is `T`.
pub(in crate::config) struct Setting<T> {
    pub name: &'static str,
    #[cfg_attr(not(test), allow(dead_code))]
    pub doc: Doc,
    /// Reads the written value into the model, reporting what is wrong with it.
    pub read: fn(&mut Parser<'_>, &Key<'_>, &Value<'_>, &mut T),
    /// The value as `lb convert` writes it (after `name = `); `None` when it is `default`'s, so
    /// that only what differs from the defaults is written.
    pub emit: fn(value: &T, default: &T) -> Option<String>,
}

/// A section of the file (`[dataplane]`) and its keys, in the reference's order.
pub(in crate::config) struct Section<T: 'static> {
    /// As written in the file and in messages: `[dataplane]`.
    pub header: &'static str,
    pub settings: &'static [Setting<T>],
    /// The whole message for a key that is not the section's but belongs elsewhere ("`x` is set
    /// per real server: move it to ..."), instead of "unknown key"; `|_| None` when there is none.
    pub misplaced: fn(&str) -> Option<String>,
    /// Keys that must be written ("missing required key `x` in [section]", at the section).
    pub required: &'static [&'static str],
    /// Keys whose error (or absence) leaves the whole section out, so that validation does not
    /// report consequences of it: all of a `[[bgp.neighbor]]`'s, `[bgp]`'s `speaker`.
    pub drop_on_error: &'static [&'static str],
    /// Keys holding tables of their own (`neighbor`: the `[[bgp.neighbor]]`s), read in file order
    /// after the settings; documented under their own heading and written by the caller.
    pub nested: &'static [Nested<T>],
    /// Keys a hand-written reader still reads (in `finish`), grouped as the reference documents
    /// them; they are known to the unknown-key check and have their row in the key table.
    pub elsewhere: &'static [Elsewhere],
    /// Runs after the settings and nested tables: the keys read together (`elsewhere`) and the
    /// rules between values that only hold once each was read, given the settings whose value
    /// had an error. `false` leaves the section out.
    pub finish: Option<Finish<T>>,
}

/// A section's [`Section::finish`].
pub(in crate::config) type Finish<T> =
    fn(&mut Parser<'_>, &DeTable<'_>, &mut T, failed: &[&'static str]) -> bool;

/// Keys of a section read together by a hand-written reader (its `finish`), documented in one row.
pub(in crate::config) struct Elsewhere {
    /// The row's key cell: "`delay_loop`, `alpha`, ...".
    #[cfg_attr(not(test), allow(dead_code))]
    pub label: &'static str,
    pub keys: &'static [&'static str],
    #[cfg_attr(not(test), allow(dead_code))]
    pub doc: Doc,
}

/// A key of a section that holds tables with their own description.
pub(in crate::config) struct Nested<T> {
    pub name: &'static str,
    pub read: fn(&mut Parser<'_>, &Key<'_>, &Value<'_>, &mut T),
}

/// A model that keeps where its values were written.
pub(in crate::config) trait Located {
    fn spans_mut(&mut self) -> &mut Spans;
}

impl<T: Located> Section<T> {
    /// The names of the keys, for the unknown-key check.
    pub fn keys(&self) -> Vec<&'static str> {
        let nested = self.nested.iter().map(|n| n.name);
        let elsewhere = self.elsewhere.iter().flat_map(|e| e.keys.iter().copied());
        self.settings.iter().map(|s| s.name).chain(nested).chain(elsewhere).collect()
    }

    /// Reads `table` into `model` (which holds the defaults, and the section's place in its
    /// spans): every unknown key, missing key and bad value reported, the location of every
    /// written value kept. `false` when the section is to be left out (see `drop_on_error`).
    pub fn read(&self, parser: &mut Parser<'_>, table: &DeTable<'_>, model: &mut T) -> bool {
        self.read_as(parser, table, model, self.header)
    }

    /// Whether `name` is one of the section's keys ([`Section::keys`] without building the list:
    /// a section is read once per real server).
    pub fn knows(&self, name: &str) -> bool {
        self.settings.iter().any(|s| s.name == name)
            || self.nested.iter().any(|n| n.name == name)
            || self.elsewhere.iter().any(|e| e.keys.contains(&name))
    }

    /// How many keys of `table` are not the section's (each reported by [`Section::read`]):
    /// for a reader that leaves a section out for a bad value but not for an unknown key.
    pub fn unknown_count(&self, table: &DeTable<'_>) -> usize {
        table.keys().filter(|key| !self.knows(key.get_ref())).count()
    }

    /// [`Section::read`] of a section written under another `header` than the description's
    /// (a checker written `[[...tcp_check]]` instead of `[...tcp_check]`), named so in messages.
    pub fn read_as(
        &self,
        parser: &mut Parser<'_>,
        table: &DeTable<'_>,
        model: &mut T,
        header: &str,
    ) -> bool {
        // The list of keys and the context are only needed to word an error.
        if table.keys().any(|key| !self.knows(key.get_ref())) {
            let context = format!("in {header}");
            parser.unknown_keys_with(table, &self.keys(), &context, self.misplaced);
        }
        // Each setting's entry, looked up once for both passes below.
        let entries: Vec<_> = self.settings.iter().map(|s| table.get_key_value(s.name)).collect();
        // Every written value is located before any is read, so that a reader can tell which
        // other keys were written (`vip` is not read beside `fwmark`).
        for (setting, entry) in self.settings.iter().zip(&entries) {
            if let Some((_, value)) = entry {
                let at = parser.at(value.span());
                model.spans_mut().set(setting.name, at);
            }
        }
        for nested in self.nested {
            if let Some(value) = table.get(nested.name) {
                let at = parser.at(value.span());
                model.spans_mut().set(nested.name, at);
            }
        }
        let mut failed = Vec::new();
        for (setting, entry) in self.settings.iter().zip(entries) {
            let errors = parser.errors.len();
            if let Some((key, value)) = entry {
                (setting.read)(parser, key, value, model);
            } else if self.required.contains(&setting.name) {
                let at = model.spans_mut().section();
                parser.missing(at, setting.name, header);
            }
            if parser.errors.len() > errors {
                failed.push(setting.name);
            }
        }
        let mut keep = !failed.iter().any(|name| self.drop_on_error.contains(name));
        for nested in self.nested {
            if let Some((key, value)) = table.get_key_value(nested.name) {
                (nested.read)(parser, key, value, model);
            }
        }
        if let Some(finish) = self.finish {
            keep &= finish(parser, table, model, &failed);
        }
        keep
    }

    /// `key = value` lines for every setting of `model` that differs from `default`.
    pub fn emit(&self, model: &T, default: &T) -> String {
        let mut out = String::new();
        for (name, value) in self.emit_pairs(model, default) {
            out.push_str(&format!("{name} = {value}\n"));
        }
        out
    }

    /// [`Section::emit`] as key/value pairs, for an inline table.
    pub fn emit_pairs(&self, model: &T, default: &T) -> Vec<(&'static str, String)> {
        let shown = self.settings.iter().map(|s| (s.name, (s.emit)(model, default)));
        shown.filter_map(|(name, value)| Some((name, value?))).collect()
    }

    /// The rows of the section's key table in docs/config.md.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn doc_rows(&self) -> Vec<String> {
        let settings = self.settings.iter().map(|s| (format!("`{}`", s.name), &s.doc));
        let elsewhere = self.elsewhere.iter().map(|e| (e.label.to_owned(), &e.doc));
        settings
            .chain(elsewhere)
            .map(|(key, Doc { ty, default, meaning })| {
                // An empty cell is `| |`, as the reference writes it.
                let cells = [key.as_str(), ty, default, meaning];
                let row: String = cells
                    .iter()
                    .map(|c| if c.is_empty() { "| ".to_owned() } else { format!("| {c} ") })
                    .collect();
                row + "|"
            })
            .collect()
    }
}

/// Reads the `settings` of a group that its section's `finish` reads (the health settings of a
/// virtual server, documented in a table of their own), like [`Section::read`] reads its own:
/// every written value located first, then each read. The names of those with an error.
pub(in crate::config) fn read_settings<T: Located>(
    parser: &mut Parser<'_>,
    table: &DeTable<'_>,
    settings: &[Setting<T>],
    model: &mut T,
) -> Vec<&'static str> {
    // Each setting's entry, looked up once for both passes.
    let entries: Vec<_> = settings.iter().map(|s| table.get_key_value(s.name)).collect();
    for (setting, entry) in settings.iter().zip(&entries) {
        if let Some((_, value)) = entry {
            let at = parser.at(value.span());
            model.spans_mut().set(setting.name, at);
        }
    }
    let mut failed = Vec::new();
    for (setting, entry) in settings.iter().zip(entries) {
        if let Some((key, value)) = entry {
            let errors = parser.errors.len();
            (setting.read)(parser, key, value, model);
            if parser.errors.len() > errors {
                failed.push(setting.name);
            }
        }
    }
    failed
}

/// `key = value` lines of the `settings` of a group (see [`read_settings`]) that differ from
/// `default`'s.
pub(in crate::config) fn emit_settings<T>(
    settings: &[Setting<T>],
    model: &T,
    default: &T,
) -> String {
    let mut out = String::new();
    for setting in settings {
        if let Some(value) = (setting.emit)(model, default) {
            out.push_str(&format!("{} = {value}\n", setting.name));
        }
    }
    out
}

/// The value `show`n when it differs from the default's, for [`Setting::emit`].
pub(in crate::config) fn unless<V: PartialEq>(
    value: &V,
    default: &V,
    show: fn(&V) -> String,
) -> Option<String> {
    (value != default).then(|| show(value))
}

/// Reading docs/config.md in tests: which keys a table documents.
#[cfg(test)]
pub(in crate::config) mod docs {
    use std::path::Path;

    /// docs/config.md.
    pub fn config_md() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
        std::fs::read_to_string(path).expect("docs/config.md")
    }

    /// The rows (cells) of the first table under the heading `heading` (without its `#`s).
    pub fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
        let mut lines = doc.lines().skip_while(|l| l.trim_start_matches('#').trim() != heading);
        assert!(lines.next().is_some(), "docs/config.md has no heading {heading}");
        lines
            .skip_while(|l| !l.starts_with('|'))
            // The header row and the rule beneath it.
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().to_owned()).collect())
            .collect()
    }

    /// The `code` words of `cell`: "`retry` (or `nb_get_retry`)" has `retry`, `nb_get_retry`.
    pub fn names(cell: &str) -> Vec<&str> {
        cell.split('`').skip(1).step_by(2).collect()
    }

    /// Every key of column `column` of the table under `heading`.
    pub fn keys(doc: &str, heading: &str, column: usize) -> Vec<String> {
        let rows = table(doc, heading);
        let cells = rows.iter().filter_map(|row| row.get(column));
        cells.flat_map(|cell| names(cell).into_iter().map(str::to_owned)).collect()
    }

    /// Asserts every key of `keys` is in the key column of the table under `heading`.
    pub fn assert_documented<'k>(
        doc: &str,
        heading: &str,
        keys: impl IntoIterator<Item = &'k str>,
    ) {
        let documented = keys_of(doc, heading);
        for key in keys {
            assert!(
                documented.iter().any(|d| d == key),
                "`{key}` is not in docs/config.md {heading}"
            );
        }
    }

    fn keys_of(doc: &str, heading: &str) -> Vec<String> {
        keys(doc, heading, 0)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::bgp::{BGP_SECTION, NEIGHBOR_SECTION};
    use super::super::dataplane::DATAPLANE;
    use super::super::flow_sync::FLOW_SYNC_SECTION;
    use super::super::real_server::{REAL_SERVER_SECTION, SORRY_SERVER_SECTION};
    use super::super::virtual_server::VIRTUAL_SERVER_SECTION;

    /// The key table of `section` in `doc`: its rows, and the line range they span.
    fn table_rows(doc: &str, header: &str) -> (Vec<String>, std::ops::Range<usize>) {
        let lines: Vec<&str> = doc.lines().collect();
        // `## [bgp]`, or `### [[bgp.neighbor]]` beneath it.
        let heading = format!("## `{header}`");
        let start = lines
            .iter()
            .position(|l| l.trim_start_matches('#') == heading.trim_start_matches('#'))
            .expect("section heading");
        let table = start
            + lines[start..].iter().position(|l| l.starts_with("| key |")).expect("key table")
            + 2;
        let end = table + lines[table..].iter().take_while(|l| l.starts_with('|')).count();
        (lines[table..end].iter().map(|l| (*l).to_owned()).collect(), table..end)
    }

    /// The tables of docs/config.md are the descriptions'; `LB_BLESS=1` rewrites them.
    #[test]
    fn config_md_key_tables_follow_the_descriptions() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
        let doc = std::fs::read_to_string(&path).expect("docs/config.md");
        let sections = [
            (DATAPLANE.header, DATAPLANE.doc_rows()),
            (BGP_SECTION.header, BGP_SECTION.doc_rows()),
            (NEIGHBOR_SECTION.header, NEIGHBOR_SECTION.doc_rows()),
            (VIRTUAL_SERVER_SECTION.header, VIRTUAL_SERVER_SECTION.doc_rows()),
            (REAL_SERVER_SECTION.header, REAL_SERVER_SECTION.doc_rows()),
            (SORRY_SERVER_SECTION.header, SORRY_SERVER_SECTION.doc_rows()),
            (FLOW_SYNC_SECTION.header, FLOW_SYNC_SECTION.doc_rows()),
        ];
        let bless = std::env::var("LB_BLESS").is_ok_and(|v| v == "1");
        let mut text = doc.clone();
        for (header, want) in sections {
            let (rows, range) = table_rows(&text, header);
            if bless {
                let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
                lines.splice(range, want);
                text = lines.join("\n") + "\n";
            } else {
                assert_eq!(rows, want, "docs/config.md {header} drifted (LB_BLESS=1 rewrites it)");
            }
        }
        if bless && text != doc {
            std::fs::write(&path, text).expect("write docs/config.md");
        }
    }

    /// `knows` (the unknown-key check's fast test) says yes to exactly the listed keys.
    #[test]
    fn knows_exactly_the_keys() {
        fn check<T: super::Located>(section: &super::Section<T>) {
            let keys = section.keys();
            for key in &keys {
                assert!(section.knows(key), "{} does not know `{key}`", section.header);
                for near in [&key[1..], &format!("{key}s"), &key.to_uppercase()] {
                    assert_eq!(section.knows(near), keys.contains(&near), "`{near}`");
                }
            }
            assert!(!section.knows("") && !section.knows("no_such_key"));
        }
        check(&DATAPLANE);
        check(&BGP_SECTION);
        check(&NEIGHBOR_SECTION);
        check(&VIRTUAL_SERVER_SECTION);
        check(&REAL_SERVER_SECTION);
        check(&SORRY_SERVER_SECTION);
        check(&FLOW_SYNC_SECTION);
    }

    #[test]
    fn keys_are_unique_per_section() {
        let keys = [
            DATAPLANE.keys(),
            BGP_SECTION.keys(),
            NEIGHBOR_SECTION.keys(),
            VIRTUAL_SERVER_SECTION.keys(),
            REAL_SERVER_SECTION.keys(),
            SORRY_SERVER_SECTION.keys(),
            FLOW_SYNC_SECTION.keys(),
        ];
        for mut keys in keys {
            let all = keys.len();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), all);
        }
    }
}
