//! The keepalived front end: `keepalived.conf` text to the same [`Config`] model the native TOML
//! front end produces, so operators migrating from LVS + keepalived run their files unchanged.
//!
//! The work is done in stages, each reporting every problem it finds:
//!
//! 1. [`reader`] reads the file and, recursively, the files it `include`s, and turns their text into
//!    tokens (words, quoted strings, braces, line ends) the way keepalived's own parser does:
//!    `!` and `#` comments, double-quoted strings, a trailing backslash joining lines, braces that
//!    are tokens wherever they are, non-breaking and full-width spaces counted as spaces.
//! 2. [`tree`] groups the tokens into statements (a keyword, its values, optionally a block).
//! 3. [`analyze`] walks the statements with keepalived's keyword lists ([`keywords`]): the LVS part
//!    ([`lvs`], [`checkers`]) and the VRRP blocks with `global_defs` ([`vrrp`]) become the model;
//!    the VRRP instances also tell which interface a virtual IP arrives on.
//! 4. The shared [`validate`] rules run on the model, and [`notices`] are gathered.
//!
//! Every location is a line in one *virtual* line space in which each file read gets its own
//! range ([`Sources`]): the model's [`Location`]s carry no file name, and this is what lets the
//! shared validation report an error in an included file at the right file. Errors, warnings and
//! notices are mapped back to `FILE:LINE:COL` at the end, and so are the locations in the
//! returned model (to the line in the file that defined them).
//!
//! Problems come in two kinds: errors (the file cannot run as keepalived would run it) and
//! [`Warning`]s (a keyword keepalived knows that lb accepts but does not act on, or a keepalived
//! default lb follows that the operator may not expect). `--strict` turns warnings into errors.

mod analyze;
mod checkers;
mod glob;
mod keywords;
mod lvs;
mod reader;
mod tree;
mod values;
mod vrrp;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::{ConfigErrors, Diagnostic, Severity};
use super::host::HostView;
use super::model::{Config, Location};
use super::notice::notices;
use super::validate::validate;

/// Which front end read a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The native TOML format (docs/config.md).
    Toml,
    /// keepalived's `keepalived.conf` format (docs/keepalived.md).
    Keepalived,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Toml => "TOML",
            Format::Keepalived => "keepalived.conf",
        })
    }
}

/// A configuration read by either front end, with everything `lb check` prints about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Its locations are lines of the file that defined each item; `config.source` is the main
    /// file (a keepalived.conf may `include` others).
    pub config: Config,
    pub format: Format,
    /// Always empty for TOML: its unknown keys are errors.
    pub warnings: Vec<Diagnostic>,
    /// [`notices`] of the model, each located in the file it is about.
    pub notices: Vec<Diagnostic>,
}

/// Parses and validates keepalived.conf `text`; `source` names it in errors, and relative
/// `include`s are found next to it.
///
/// # Errors
/// Every problem found, files in the order they were read, each in line order; with `strict`,
/// the warnings too.
pub fn parse(
    text: &str,
    source: &Path,
    host: &dyn HostView,
    strict: bool,
) -> Result<Loaded, ConfigErrors> {
    parse_within(text, source, host, strict, &reader::Limits::DEFAULT)
}

/// [`parse`], reading includes within `limits`.
fn parse_within(
    text: &str,
    source: &Path,
    host: &dyn HostView,
    strict: bool,
    limits: &reader::Limits,
) -> Result<Loaded, ConfigErrors> {
    let mut sources = Sources::default();
    let mut diags = Diags::default();
    let tokens = reader::read_with(text, source, &mut sources, &mut diags, limits);
    let statements = tree::parse(tokens, &mut diags);
    let mut config = analyze::analyze(&statements, source, &mut diags);
    for error in validate(&config, host) {
        diags.error(error.location(), error.message);
    }
    let notices: Vec<Diagnostic> = notices(&config)
        .into_iter()
        .map(|notice| {
            let (file, at, message) = sources.place(notice.location(), &notice.message);
            Diagnostic::notice(&file, at, message)
        })
        .collect();

    diags.close();
    // File order, then line order; stable, so what was found first at one place stays first.
    // What several virtual servers share (an interface written once) is reported once.
    diags.list.sort_by_key(|diag| diag.at);
    diags.list.dedup_by(|a, b| a.at == b.at && a.severity == b.severity && a.message == b.message);
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for diag in diags.list {
        let (file, at, message) = sources.place(diag.at, &diag.message);
        let placed = Diagnostic::new(diag.severity, &file, at, message);
        match placed.severity {
            Severity::Warning if !strict => warnings.push(placed),
            // `strict` makes a warning an error.
            _ => errors.push(placed.strict()),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    relocate(&mut config, |at| sources.place(at, "").1);
    Ok(Loaded { config, format: Format::Keepalived, warnings, notices })
}

/// The format of a configuration file, from its first line that tells: TOML is recognised by
/// `[table]` headers and `key = value` lines, keepalived.conf by `keyword ... {` blocks and `!`
/// comments; a file with neither (only comments, or empty) is keepalived.conf when its name ends
/// in `.conf`, else TOML. [`super::load`] uses it for `--format auto`.
pub fn detect(path: &Path, text: &str) -> Format {
    for line in text.lines() {
        let line = line.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            return Format::Toml;
        }
        if line.starts_with('!') {
            return Format::Keepalived;
        }
        // `key = value`: a bare, dotted or quoted key, then `=`. keepalived words never contain
        // `=` before their first space, except in `$NAME=value` definitions.
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim_end();
            let bare = !key.is_empty()
                && key.chars().all(|c| c.is_ascii_alphanumeric() || "_-.\"'".contains(c));
            if bare && !key.starts_with('$') {
                return Format::Toml;
            }
        }
        let first = line.split_whitespace().next().unwrap_or_default();
        if line.contains('{')
            || line.starts_with('}')
            || keywords::is_top_level(first)
            || keywords::INCLUDE_KEYWORDS.contains(&first)
        {
            return Format::Keepalived;
        }
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("conf" | "cfg") => Format::Keepalived,
        _ => Format::Toml,
    }
}

/// A problem found by any stage (an error or a warning), at a virtual location (see [`Sources`]):
/// a [`Diagnostic`] once placed in its file.
#[derive(Debug, Clone)]
struct Diag {
    at: Location,
    message: String,
    severity: Severity,
}

/// Problems kept: a file that repeats one mistake a million times (`}` on every line) needs
/// its first ones fixed, not a million lines of output and the memory they take.
const MAX_DIAGS: usize = 1000;

/// Every problem found so far (the first [`MAX_DIAGS`]).
#[derive(Debug, Default)]
struct Diags {
    list: Vec<Diag>,
    /// Errors found after the list was full, and where the first of them is.
    dropped: Option<(Location, usize)>,
}

impl Diags {
    fn error(&mut self, at: Location, message: impl Into<String>) {
        self.push(Diag { at, message: message.into(), severity: Severity::Error });
    }

    fn warning(&mut self, at: Location, message: impl Into<String>) {
        self.push(Diag { at, message: message.into(), severity: Severity::Warning });
    }

    /// An error kept even when the list is full: a limit reached, which explains the rest.
    fn limit(&mut self, at: Location, message: impl Into<String>) {
        self.list.push(Diag { at, message: message.into(), severity: Severity::Error });
    }

    fn push(&mut self, diag: Diag) {
        if self.list.len() < MAX_DIAGS {
            self.list.push(diag);
            return;
        }
        // Dropped warnings need no mention: the errors decide.
        if diag.severity == Severity::Error {
            let (_, count) = self.dropped.get_or_insert((diag.at, 0));
            *count += 1;
        }
    }

    /// Ends the list with one error saying how many were dropped, if any.
    fn close(&mut self) {
        if let Some((at, count)) = self.dropped.take() {
            self.list.push(Diag {
                at,
                message: format!(
                    "{count} more errors from here on are not reported (only the first \
                     {MAX_DIAGS} problems are)"
                ),
                severity: Severity::Error,
            });
        }
    }

    fn errors(&self) -> usize {
        self.list.iter().filter(|d| d.severity == Severity::Error).count()
    }
}

/// One file read, and where its lines are in the virtual line space.
#[derive(Debug)]
struct SourceFile {
    path: PathBuf,
    /// Virtual line = `base` + line in the file.
    base: u32,
}

/// The files read, in order, each given the next free range of virtual lines: the main file's
/// lines are its own (base 0), an included file's follow those of the files read before it.
#[derive(Debug, Default)]
struct Sources {
    files: Vec<SourceFile>,
    next_base: u32,
}

impl Sources {
    /// Registers `path` with `text`; returns its base.
    fn add(&mut self, path: &Path, text: &str) -> u32 {
        let base = self.next_base;
        // Room for every line plus one past the end (an error at end of file).
        let lines = u32::try_from(text.matches('\n').count()).unwrap_or(u32::MAX - 2);
        self.next_base = base.saturating_add(lines).saturating_add(2);
        self.files.push(SourceFile { path: path.to_path_buf(), base });
        base
    }

    /// The file a virtual line belongs to, and its base.
    fn file_of(&self, line: u32) -> Option<&SourceFile> {
        let i = self.files.partition_point(|file| file.base < line);
        i.checked_sub(1).map(|i| &self.files[i])
    }

    /// The real file and location of virtual `at`, and `message` with the virtual lines it
    /// mentions ("at line N") made real too.
    fn place(&self, at: Location, message: &str) -> (PathBuf, Location, String) {
        // Every location is in a file read; were one not, the main file is the best guess.
        let Some(file) = self.file_of(at.line).or(self.files.first()) else {
            return (PathBuf::new(), at, message.to_owned());
        };
        let location = Location::new(at.line.saturating_sub(file.base), at.col);
        (file.path.clone(), location, self.place_mentions(message, &file.path))
    }

    /// Rewrites each "at line N" of `message` (N virtual) as "at line M" when in `here`, else
    /// "at line M of FILE".
    fn place_mentions(&self, message: &str, here: &Path) -> String {
        const MARK: &str = "at line ";
        let mut out = String::with_capacity(message.len());
        let mut rest = message;
        while let Some(i) = rest.find(MARK) {
            let (before, after) = rest.split_at(i + MARK.len());
            out.push_str(before);
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let (number, tail) = after.split_at(digits);
            match number.parse::<u32>().ok().and_then(|n| Some((n, self.file_of(n)?))) {
                Some((n, file)) if file.path == here => out.push_str(&(n - file.base).to_string()),
                Some((n, file)) => {
                    out.push_str(&format!("{} of {}", n - file.base, file.path.display()));
                }
                None => out.push_str(number),
            }
            rest = tail;
        }
        out.push_str(rest);
        out
    }
}

/// Applies `place` to every location of `config`.
fn relocate(config: &mut Config, place: impl Fn(Location) -> Location) {
    let vrrp = &mut config.vrrp;
    for instance in &mut vrrp.instances {
        instance.location = place(instance.location);
    }
    for script in &mut vrrp.scripts {
        script.location = place(script.location);
    }
    for group in &mut vrrp.sync_groups {
        group.location = place(group.location);
    }
    for at in &mut config.vrrp_locations {
        at.relocate(&place);
    }
    for vs in &mut config.virtual_servers {
        vs.location = place(vs.location);
        vs.key_locations.relocate(&place);
        for rs in vs.real_servers.iter_mut().chain(vs.sorry_server.as_mut()) {
            rs.location = place(rs.location);
            rs.key_locations.relocate(&place);
            for check in &mut rs.check_locations {
                check.relocate(&place);
            }
            for check in &mut rs.health.checks {
                check.location = place(check.location);
            }
        }
    }
}
