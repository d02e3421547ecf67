//! Reading statements' values as keepalived reads them (integers, timers in seconds with
//! fractions, addresses, booleans, script command lines), each problem reported at the word.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::super::model::Location;
use super::Diags;
use super::keywords::{self, Section};
use super::tree::{Block, Stmt, Word};

/// keepalived's booleans.
const TRUE_WORDS: &[&str] = &["on", "true", "yes"];
const FALSE_WORDS: &[&str] = &["off", "false", "no"];

/// The statement walkers' context: where problems go.
pub(super) struct Cx<'d> {
    pub diags: &'d mut Diags,
}

impl Cx<'_> {
    pub fn error(&mut self, at: Location, message: impl Into<String>) {
        self.diags.error(at, message);
    }

    pub fn warning(&mut self, at: Location, message: impl Into<String>) {
        self.diags.warning(at, message);
    }

    /// Errors so far: a walker compares counts to know whether what it read had any.
    pub fn errors(&self) -> usize {
        self.diags.errors()
    }

    /// Whether anything under `since` (an [`Cx::errors`] count) was an error.
    pub fn clean_since(&self, since: usize) -> bool {
        self.errors() == since
    }

    /// Reports a keyword `section` does not know.
    pub fn unknown(&mut self, stmt: &Stmt, section: Section) {
        self.error(stmt.at(), keywords::unknown(&stmt.keyword().text, section));
    }

    /// A keyword keepalived knows and lb does not act on.
    pub fn unimplemented(&mut self, stmt: &Stmt, why: &str) {
        self.warning(stmt.at(), format!("`{}`: accepted, not acted on ({why})", stmt.name()));
    }

    /// Reports a block after a keyword that takes none; `true` when there is none.
    pub fn no_block(&mut self, stmt: &Stmt) -> bool {
        match &stmt.block {
            None => true,
            Some(block) => {
                self.error(block.open, format!("`{}` takes no block", stmt.name()));
                false
            }
        }
    }

    /// The block of a keyword that needs one; `usage` shows how it is written.
    pub fn block<'s>(&mut self, stmt: &'s Stmt, usage: &str) -> Option<&'s Block> {
        if stmt.block.is_none() {
            let end = stmt.words.last().map_or(stmt.at(), |w| w.at);
            self.error(end, format!("`{}` needs a block: {usage}", stmt.name()));
        }
        stmt.block.as_ref()
    }

    /// The values of a statement without a block, when there are `min` to `max` of them.
    pub fn values<'s>(&mut self, stmt: &'s Stmt, min: usize, max: usize) -> Option<&'s [Word]> {
        let values = stmt.values();
        let name = stmt.name();
        let counted =
            |n: usize| if n == 1 { "one value".to_owned() } else { format!("{n} values") };
        let ok_block = self.no_block(stmt);
        if values.len() < min {
            let needs =
                if min == max { counted(min) } else { format!("at least {}", counted(min)) };
            self.error(stmt.at(), format!("`{name}` needs {needs}"));
            return None;
        }
        if values.len() > max {
            let takes = match max {
                0 => "no value".to_owned(),
                _ if min == max => counted(max),
                _ => format!("at most {}", counted(max)),
            };
            self.error(
                values[max].at,
                format!(
                    "`{name}` takes {takes}, found {}: `{}` is one too many",
                    values.len(),
                    values[max].text
                ),
            );
            return None;
        }
        ok_block.then_some(values)
    }

    /// The single value of a statement.
    pub fn value<'s>(&mut self, stmt: &'s Stmt) -> Option<&'s Word> {
        self.values(stmt, 1, 1).map(|values| &values[0])
    }

    /// A flag: on without a value, else the boolean given.
    pub fn flag(&mut self, stmt: &Stmt) -> Option<bool> {
        match self.values(stmt, 0, 1)? {
            [] => Some(true),
            [word, ..] => self.boolean(&format!("`{}`", stmt.name()), word),
        }
    }

    /// A flag that takes no value.
    pub fn bare_flag(&mut self, stmt: &Stmt) -> Option<bool> {
        self.values(stmt, 0, 0).map(|_| true)
    }

    pub fn boolean(&mut self, subject: &str, word: &Word) -> Option<bool> {
        if TRUE_WORDS.contains(&word.text.as_str()) {
            Some(true)
        } else if FALSE_WORDS.contains(&word.text.as_str()) {
            Some(false)
        } else {
            self.error(
                word.at,
                format!(
                    "{subject} must be one of on, off, true, false, yes, no; found \"{}\"",
                    word.text.escape_debug()
                ),
            );
            None
        }
    }

    /// A non-negative integer within `min..=max`.
    pub fn uint(&mut self, subject: &str, word: &Word, min: u64, max: u64) -> Option<u64> {
        let text = word.text.as_str();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            let kind = if text.starts_with('-') && text[1..].bytes().all(|b| b.is_ascii_digit()) {
                format!("{subject} must be between {min} and {max}, found {text}")
            } else {
                format!("{subject} must be an integer, found \"{}\"", text.escape_debug())
            };
            self.error(word.at, kind);
            return None;
        }
        match text.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(
                    word.at,
                    format!("{subject} must be between {min} and {max}, found {text}"),
                );
                None
            }
        }
    }

    /// An integer within `min..=max`, possibly negative.
    pub fn int(&mut self, subject: &str, word: &Word, min: i64, max: i64) -> Option<i64> {
        let text = word.text.as_str();
        let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            self.error(
                word.at,
                format!("{subject} must be an integer, found \"{}\"", text.escape_debug()),
            );
            return None;
        }
        match text.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(
                    word.at,
                    format!("{subject} must be between {min} and {max}, found {text}"),
                );
                None
            }
        }
    }

    /// keepalived's timer: seconds, with up to 6 decimals; more than 0 unless `zero_ok`, at
    /// most `max` seconds.
    pub fn seconds(
        &mut self,
        subject: &str,
        word: &Word,
        zero_ok: bool,
        max: u32,
    ) -> Option<Duration> {
        let text = word.text.as_str();
        let Some(duration) = parse_seconds(text) else {
            self.error(
                word.at,
                format!("{subject} must be a number of seconds, found \"{}\"", text.escape_debug()),
            );
            return None;
        };
        if (duration.is_zero() && !zero_ok) || duration > Duration::from_secs(max.into()) {
            let range = if zero_ok {
                format!("between 0 and {max}")
            } else {
                format!("more than 0 and at most {max}")
            };
            self.error(word.at, format!("{subject} must be {range} seconds, found {text}"));
            return None;
        }
        Some(duration)
    }

    pub fn ip(&mut self, subject: &str, word: &Word) -> Option<IpAddr> {
        match word.text.parse() {
            Ok(address) => Some(address),
            Err(_) => {
                self.error(
                    word.at,
                    format!(
                        "{subject} must be an IP address, found \"{}\"",
                        word.text.escape_debug()
                    ),
                );
                None
            }
        }
    }

    /// A port, 0 to 65535 (0: all ports, or the default).
    pub fn port(&mut self, subject: &str, word: &Word) -> Option<u16> {
        self.uint(subject, word, 0, u16::MAX.into()).and_then(|p| u16::try_from(p).ok())
    }

    /// `MISC_CHECK`'s command line: the first value; keepalived ignores the words after it
    /// (quoting a command with arguments is what was meant).
    pub fn command(&mut self, stmt: &Stmt) -> Option<String> {
        let values = self.values(stmt, 1, usize::MAX)?;
        if let Some(extra) = values.get(1) {
            self.warning(
                extra.at,
                format!(
                    "`{}` runs `{}` alone: the words after it are accepted, not acted on (as in \
                     keepalived); quote a command that has arguments",
                    stmt.name(),
                    values[0].text
                ),
            );
        }
        let command = &values[0];
        if command.text.trim().is_empty() {
            self.error(command.at, format!("`{}` must not be empty", stmt.name()));
            return None;
        }
        Some(command.text.clone())
    }

    /// A script command line: the first value (quote a command with arguments); keepalived's
    /// optional user and group after it are accepted, not acted on.
    pub fn script(&mut self, stmt: &Stmt) -> Option<String> {
        let values = self.values(stmt, 1, 3)?;
        let command = &values[0];
        if command.text.trim().is_empty() {
            self.error(
                command.at,
                format!("`{}` must not be empty: leave it out instead", stmt.name()),
            );
            return None;
        }
        if let Some(user) = values.get(1) {
            self.warning(
                user.at,
                format!(
                    "`{}` runs as `{}`: accepted, not acted on (lb runs scripts as its own user); \
                     quote a command that has arguments",
                    stmt.name(),
                    values[1..].iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" ")
                ),
            );
        }
        Some(command.text.clone())
    }
}

/// Seconds with an optional fraction of up to 9 digits (keepalived reads 6); nothing else.
pub(super) fn parse_seconds(text: &str) -> Option<Duration> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty())
        || !digits(whole)
        || !digits(fraction)
        || fraction.len() > 9
    {
        return None;
    }
    let secs = if whole.is_empty() { 0 } else { whole.parse::<u64>().ok()? };
    let nanos =
        if fraction.is_empty() { 0 } else { format!("{fraction:0<9}").parse::<u32>().ok()? };
    Some(Duration::new(secs, nanos))
}

/// Remembers the scalar keywords seen in one block, to warn when one is given again: keepalived
/// uses the last one, and so does lb, but the first one was probably meant too.
#[derive(Default)]
pub(super) struct Seen {
    first: HashMap<&'static str, Location>,
}

impl Seen {
    /// Notes `stmt` as setting `setting` (a keyword, or the first spelling of several).
    pub fn note(&mut self, cx: &mut Cx<'_>, setting: &'static str, stmt: &Stmt) {
        match self.first.get(setting) {
            Some(first) => cx.warning(
                stmt.at(),
                format!(
                    "`{}` sets {setting} again (first set at line {}): the last one counts, as in \
                     keepalived",
                    stmt.name(),
                    first.line
                ),
            ),
            None => {
                self.first.insert(setting, stmt.at());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        let cases = [
            ("3", Some(Duration::from_secs(3))),
            ("2.5", Some(Duration::from_millis(2500))),
            ("0.000001", Some(Duration::from_micros(1))),
            (".5", Some(Duration::from_millis(500))),
            ("5.", Some(Duration::from_secs(5))),
            ("0", Some(Duration::ZERO)),
            ("", None),
            (".", None),
            ("-1", None),
            ("1e3", None),
            ("5s", None),
            ("1.0000000001", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_seconds(text), expected, "{text:?}");
        }
    }
}
