//! Located configuration errors, in the `FILE:LINE:COL: message` form editors and CI logs
//! understand, plus the helpers front ends share to produce them.

use std::fmt;
use std::path::{Path, PathBuf};

use super::model::Location;

/// How much a [`Diagnostic`] matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The file is refused.
    Error,
    /// A keepalived keyword accepted but not acted on; an error with `--strict`.
    Warning,
    /// Valid, but probably not what was meant.
    Notice,
}

/// One thing said about a configuration file, pointing at the key or value it is about:
/// `FILE:LINE:COL: message` (`warning: ` or `notice: ` before the message when it is one), the
/// form editors and CI logs understand. Errors, keepalived warnings, notices and the services no
/// dataplane can serve are all one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{col}: {}{message}", file.display(), severity.prefix())]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    /// 1-based.
    pub line: u32,
    /// 1-based, counted in characters.
    pub col: u32,
    pub message: String,
}

impl Severity {
    /// What precedes the message: nothing for an error.
    fn prefix(self) -> &'static str {
        match self {
            Severity::Error => "",
            Severity::Warning => "warning: ",
            Severity::Notice => "notice: ",
        }
    }
}

impl Diagnostic {
    pub fn new(severity: Severity, file: &Path, at: Location, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            file: file.to_path_buf(),
            line: at.line,
            col: at.col,
            message: message.into(),
        }
    }

    pub fn error(file: &Path, at: Location, message: impl Into<String>) -> Self {
        Diagnostic::new(Severity::Error, file, at, message)
    }

    pub fn warning(file: &Path, at: Location, message: impl Into<String>) -> Self {
        Diagnostic::new(Severity::Warning, file, at, message)
    }

    pub fn notice(file: &Path, at: Location, message: impl Into<String>) -> Self {
        Diagnostic::new(Severity::Notice, file, at, message)
    }

    pub fn location(&self) -> Location {
        Location::new(self.line, self.col)
    }

    /// What `--strict` makes of a warning: the same line, as an error.
    pub fn strict(self) -> Self {
        match self.severity {
            Severity::Warning => {
                let message = format!("warning: {} (an error with --strict)", self.message);
                Diagnostic::error(&self.file, self.location(), message)
            }
            _ => self,
        }
    }
}

/// `lb check --json`: `file` (as printed), `line`, `col`, `message`; the list it is in says the
/// severity.
impl serde::Serialize for Diagnostic {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut out = serializer.serialize_struct("Diagnostic", 4)?;
        out.serialize_field("file", &self.file.display().to_string())?;
        out.serialize_field("line", &self.line)?;
        out.serialize_field("col", &self.col)?;
        out.serialize_field("message", &self.message)?;
        out.end()
    }
}

/// Every problem found in a file, so the operator can fix them all in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line, no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            error.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<Diagnostic> for ConfigErrors {
    fn from(error: Diagnostic) -> Self {
        ConfigErrors(vec![error])
    }
}

impl IntoIterator for ConfigErrors {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Turns byte offsets (what parsers report) into line/column [`Location`]s.
pub(crate) struct LineIndex<'t> {
    text: &'t str,
    /// Byte offset where each line starts.
    line_starts: Vec<usize>,
    /// The line (index into `line_starts`) of the last offset asked: a front end asks about
    /// offsets in file order, so the next one is mostly on it or the line after.
    last: std::cell::Cell<usize>,
    /// Lines before `text` in its file (a part of a file read alone).
    lines_before: usize,
}

impl<'t> LineIndex<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        Self::after_lines(text, 0)
    }

    /// For `text` starting at a line start of a file, after `lines_before` lines: locations are
    /// the file's.
    pub(crate) fn after_lines(text: &'t str, lines_before: usize) -> Self {
        let line_starts =
            std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        LineIndex { text, line_starts, last: std::cell::Cell::new(0), lines_before }
    }

    /// The index into `line_starts` of the line holding `offset`.
    fn line_of(&self, offset: usize) -> usize {
        let holds = |line: usize| {
            self.line_starts.get(line).is_some_and(|&start| start <= offset)
                && self.line_starts.get(line + 1).is_none_or(|&next| next > offset)
        };
        let last = self.last.get();
        let line = if holds(last) {
            last
        } else if holds(last + 1) {
            last + 1
        } else {
            // line_starts[0] == 0, so at least one start is <= offset.
            self.line_starts.partition_point(|&start| start <= offset) - 1
        };
        self.last.set(line);
        line
    }

    /// Offsets past the end or inside a multi-byte character are clamped to a valid position.
    pub(crate) fn location(&self, offset: usize) -> Location {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_of(offset);
        let start = self.line_starts[line];
        let col = self.text[start..offset].chars().count() + 1;
        Location::new(saturating_u32(self.lines_before + line + 1), saturating_u32(col))
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The closest of `candidates` to a misspelled `word`, if close enough to be a plausible typo.
/// Case does not count: neither in keys (`Port`) nor in names (`vi_1` for `VI_1`).
pub(crate) fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let word = word.to_ascii_lowercase();
    let len = word.chars().count();
    candidates
        .iter()
        // The distance is at least the length difference: skip hopeless candidates before
        // building a table (a 100 KB unknown word would otherwise cost seconds).
        .filter(|c| len.abs_diff(c.chars().count()) <= (c.chars().count() / 3).max(1))
        // Optimal string alignment: Levenshtein plus adjacent transpositions, the most common
        // typo (`weigth`).
        .map(|&c| (strsim::osa_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|&(d, c)| d <= (c.chars().count() / 3).max(1))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// `; did you mean `x`?` when a candidate is close, else nothing — appended to "unknown" errors.
pub(crate) fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    closest(word, candidates).map(|c| format!("; did you mean `{c}`?")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_file_line_col_message() {
        let first = Diagnostic::error(Path::new("/etc/lb.toml"), Location::new(3, 8), "bad port");
        let second = Diagnostic::error(Path::new("/etc/lb.toml"), Location::new(9, 1), "oops");
        assert_eq!(first.to_string(), "/etc/lb.toml:3:8: bad port");
        assert_eq!(
            ConfigErrors(vec![first, second]).to_string(),
            "/etc/lb.toml:3:8: bad port\n/etc/lb.toml:9:1: oops"
        );
    }

    /// Every severity prints as `FILE:LINE:COL:`, warnings and notices say which they are, and
    /// `--strict` makes a warning an error that still says it was one.
    #[test]
    fn severities_display_and_strict() {
        let (file, at) = (Path::new("k.conf"), Location::new(2, 5));
        let cases = [
            (Diagnostic::error(file, at, "m"), "k.conf:2:5: m", "k.conf:2:5: m"),
            (
                Diagnostic::warning(file, at, "m"),
                "k.conf:2:5: warning: m",
                "k.conf:2:5: warning: m (an error with --strict)",
            ),
            (Diagnostic::notice(file, at, "m"), "k.conf:2:5: notice: m", "k.conf:2:5: notice: m"),
        ];
        for (diag, shown, strict) in cases {
            assert_eq!(diag.to_string(), shown);
            assert_eq!(diag.strict().to_string(), strict);
        }
        let json = serde_json::to_value(Diagnostic::warning(file, at, "m")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"file": "k.conf", "line": 2, "col": 5, "message": "m"})
        );
    }

    #[test]
    fn line_index_counts_characters() {
        let text = "a = 1\nnamé = \"x\"\r\n\tz\n";
        let index = LineIndex::new(text);
        let cases = [
            (0, (1, 1)),
            (4, (1, 5)),
            (6, (2, 1)),
            // After "namé = " (é is two bytes): the opening quote is character 8.
            (text.find('"').unwrap(), (2, 8)),
            // Inside é: clamped back to its start.
            (text.find('é').unwrap() + 1, (2, 4)),
            (text.find('z').unwrap(), (3, 2)),
            (text.len(), (4, 1)),
            (text.len() + 10, (4, 1)),
        ];
        for (offset, (line, col)) in cases {
            assert_eq!(index.location(offset), Location::new(line, col), "offset {offset}");
        }
    }

    /// The remembered line changes no answer, whatever order offsets are asked in.
    #[test]
    fn line_index_answers_alike_in_any_order() {
        let text = "a\n\nbé = 1\n\n\nlong line here\nx";
        let fresh = |offset| LineIndex::new(text).location(offset);
        let offsets: Vec<usize> = (0..=text.len() + 2).collect();
        let backwards: Vec<usize> = offsets.iter().rev().copied().collect();
        // Every pair, each way round: jumps forward and back by any distance.
        let pairs: Vec<usize> =
            offsets.iter().flat_map(|&a| offsets.iter().flat_map(move |&b| [a, b])).collect();
        for order in [&offsets, &backwards, &pairs] {
            let index = LineIndex::new(text);
            for &offset in order {
                assert_eq!(index.location(offset), fresh(offset), "offset {offset}");
            }
        }
        assert_eq!(fresh(text.len()), Location::new(7, 2));
    }

    #[test]
    fn suggestions_only_for_plausible_typos() {
        let keys = ["address", "port", "weight"];
        let cases = [
            ("weigth", Some("weight")),
            ("adress", Some("address")),
            ("Port", Some("port")),
            ("prot", Some("port")),
            ("ports", Some("port")),
            ("bogus", None),
            ("w", None),
        ];
        for (word, expected) in cases {
            assert_eq!(closest(word, &keys), expected, "{word}");
        }
        assert_eq!(did_you_mean("weigth", &keys), "; did you mean `weight`?");
        // Names keep their case; a word in another case still matches them.
        let names = ["VI_1", "chk_nginx"];
        assert_eq!(closest("vi_1", &names), Some("VI_1"));
        assert_eq!(closest("VI_2", &names), Some("VI_1"));
        assert_eq!(closest("CHK_NGINX", &names), Some("chk_nginx"));
        assert_eq!(did_you_mean("bogus", &keys), "");
    }
}
