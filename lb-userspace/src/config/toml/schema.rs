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
}

/// A model that keeps where its values were written.
pub(in crate::config) trait Located {
    fn spans_mut(&mut self) -> &mut Spans;
}

impl<T: Located> Section<T> {
    /// The names of the keys, for the unknown-key check.
    pub fn keys(&self) -> Vec<&'static str> {
        self.settings.iter().map(|s| s.name).collect()
    }

    /// Reads `table` into `model` (which holds the defaults): every unknown key and every bad
    /// value reported, the location of every written value kept.
    pub fn read(&self, parser: &mut Parser<'_>, table: &DeTable<'_>, model: &mut T) {
        let context = format!("in {}", self.header);
        parser.unknown_keys_with(table, &self.keys(), &context, self.misplaced);
        for setting in self.settings {
            if let Some((key, value)) = table.get_key_value(setting.name) {
                let at = parser.at(value.span());
                model.spans_mut().set(setting.name, at);
                (setting.read)(parser, key, value, model);
            }
        }
    }

    /// `key = value` lines for every setting of `model` that differs from `default`.
    pub fn emit(&self, model: &T, default: &T) -> String {
        let mut out = String::new();
        for setting in self.settings {
            if let Some(value) = (setting.emit)(model, default) {
                out.push_str(&format!("{} = {value}\n", setting.name));
            }
        }
        out
    }

    /// The rows of the section's key table in docs/config.md.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn doc_rows(&self) -> Vec<String> {
        self.settings
            .iter()
            .map(|s| {
                let Doc { ty, default, meaning } = &s.doc;
                format!("| `{}` | {ty} | {default} | {meaning} |", s.name)
            })
            .collect()
    }
}

/// The value `show`n when it differs from the default's, for [`Setting::emit`].
pub(in crate::config) fn unless<V: PartialEq>(
    value: &V,
    default: &V,
    show: fn(&V) -> String,
) -> Option<String> {
    (value != default).then(|| show(value))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::dataplane::DATAPLANE;

    /// The key table of `section` in `doc`: its rows, and the line range they span.
    fn table_rows(doc: &str, header: &str) -> (Vec<String>, std::ops::Range<usize>) {
        let lines: Vec<&str> = doc.lines().collect();
        let heading = format!("## `{header}`");
        let start = lines.iter().position(|l| *l == heading).expect("section heading");
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
        let sections = [(DATAPLANE.header, DATAPLANE.doc_rows())];
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

    #[test]
    fn keys_are_unique_per_section() {
        let mut keys = DATAPLANE.keys();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), DATAPLANE.settings.len());
    }
}
