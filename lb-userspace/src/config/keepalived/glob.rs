//! The file patterns of keepalived's `include`, as glob(3) with GLOB_BRACE expands them: `*`,
//! `?`, `[...]` (`[!...]` or `[^...]` negated, with ranges) within one path component, `{a,b}`
//! alternatives anywhere, `\` quoting the next character. Names starting with `.` are matched
//! only by a pattern component starting with `.`. Relative patterns are relative to the including
//! file's directory.

//!
//! Expanding is bounded ([`Limits`]): a pattern that would make too many alternatives, match too
//! many paths or look through too many directory entries is an error, not a walk through the whole
//! file system. As in glob(3), `**` is two `*`s: it matches within one path component, it does
//! not descend into directories.

use std::path::{Path, PathBuf};

/// The longest include pattern: a path is at most PATH_MAX bytes.
pub(super) const MAX_PATTERN_BYTES: usize = 4096;

/// What expanding one pattern may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// `{a,b}` groups inside each other.
    pub brace_depth: usize,
    /// Patterns the `{a,b}` alternatives make.
    pub alternatives: usize,
    /// Paths matched.
    pub paths: usize,
    /// Directory entries looked at.
    pub entries: usize,
}

impl Limits {
    pub const DEFAULT: Limits =
        Limits { brace_depth: 32, alternatives: 1024, paths: 4096, entries: 65536 };
}

/// A pattern that goes beyond a [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum GlobError {
    #[error("`{{...}}` groups are nested more than {0} deep")]
    BraceDepth(usize),
    #[error("its `{{...}}` alternatives make more than {0} patterns")]
    Alternatives(usize),
    #[error("it matches more than {0} paths")]
    Paths(usize),
    #[error("it looks through more than {0} directory entries (narrow the pattern)")]
    Entries(usize),
}

/// Whether `pattern` has any wildcard or alternative, so that it names no file literally.
pub(super) fn has_magic(pattern: &str) -> bool {
    let mut escaped = false;
    for c in pattern.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '*' | '?' | '[' | '{' => return true,
            _ => {}
        }
    }
    false
}

/// A pattern without magic as a path relative to `dir`.
pub(super) fn resolve(pattern: &str, dir: &Path) -> PathBuf {
    dir.join(unescape(pattern))
}

/// The existing paths `pattern` matches, relative to `dir`: each `{...}` alternative in turn, the
/// matches of each sorted, as glob(3) does.
///
/// # Errors
/// The pattern goes beyond `limits`.
pub(super) fn expand(
    pattern: &str,
    dir: &Path,
    limits: &Limits,
) -> Result<Vec<PathBuf>, GlobError> {
    let mut found = Vec::new();
    let mut entries = 0;
    for alternative in braces(pattern, limits)? {
        let (start, rest) = match alternative.strip_prefix('/') {
            Some(rest) => (PathBuf::from("/"), rest.to_owned()),
            None => (dir.to_path_buf(), alternative.clone()),
        };
        let components: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
        let mut matches = walk(start, &components, limits, &mut entries)?;
        matches.sort();
        found.extend(matches);
        if found.len() > limits.paths {
            return Err(GlobError::Paths(limits.paths));
        }
    }
    Ok(found)
}

/// Every path under `start` that matches `components`, in any order; `entries` counts the
/// directory entries looked at. A loop over pending paths, not recursion: a pattern may have as
/// many components as a path.
fn walk(
    start: PathBuf,
    components: &[&str],
    limits: &Limits,
    entries: &mut usize,
) -> Result<Vec<PathBuf>, GlobError> {
    let mut out = Vec::new();
    let mut pending = vec![(start, 0)];
    while let Some((at, i)) = pending.pop() {
        let Some(component) = components.get(i) else {
            if at.exists() {
                out.push(at);
                if out.len() > limits.paths {
                    return Err(GlobError::Paths(limits.paths));
                }
            }
            continue;
        };
        if !has_magic(component) {
            pending.push((at.join(unescape(component)), i + 1));
            continue;
        }
        let Ok(list) =
            std::fs::read_dir(if at.as_os_str().is_empty() { Path::new(".") } else { &at })
        else {
            continue;
        };
        let pattern = items(component);
        for entry in list.flatten() {
            *entries += 1;
            if *entries > limits.entries {
                return Err(GlobError::Entries(limits.entries));
            }
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') && !component.starts_with('.') {
                continue;
            }
            let name: Vec<char> = name.chars().collect();
            if matches(&pattern, &name) {
                pending.push((at.join(entry.file_name()), i + 1));
            }
        }
    }
    Ok(out)
}

/// A pattern split at its `{...}` groups.
#[derive(Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    /// The alternatives of a group, each split again.
    Group(Vec<Vec<Part>>),
}

/// The patterns `{a,b}` alternatives make of `pattern`, in order (nested braces too). A brace
/// without its closing one is a literal brace.
///
/// # Errors
/// Groups nested too deep or too many patterns made (counted before any is made).
fn braces(pattern: &str, limits: &Limits) -> Result<Vec<String>, GlobError> {
    let chars: Vec<char> = pattern.chars().collect();
    let parts = split(&chars, 0, limits)?;
    if count(&parts) > limits.alternatives {
        return Err(GlobError::Alternatives(limits.alternatives));
    }
    Ok(join(&parts))
}

/// `chars` split at its groups. glob(3)'s rule: the first `{` and its matching `}` make a group
/// whose alternatives are split at its top-level commas; what follows the group is split the same
/// way; a `{` that is never closed is text, and so is everything after it.
fn split(chars: &[char], depth: usize, limits: &Limits) -> Result<Vec<Part>, GlobError> {
    let mut parts = Vec::new();
    let mut rest = chars;
    while let Some((open, close, commas)) = first_group(rest) {
        if depth >= limits.brace_depth {
            return Err(GlobError::BraceDepth(limits.brace_depth));
        }
        if open > 0 {
            parts.push(Part::Text(rest[..open].iter().collect()));
        }
        let mut bounds = vec![open];
        bounds.extend(&commas);
        bounds.push(close);
        let choices = bounds
            .windows(2)
            .map(|pair| split(&rest[pair[0] + 1..pair[1]], depth + 1, limits))
            .collect::<Result<_, _>>()?;
        parts.push(Part::Group(choices));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.iter().collect()));
    }
    Ok(parts)
}

/// The first group of `chars`: where its `{` and `}` are, and its top-level commas; none when
/// the first `{` is never closed.
fn first_group(chars: &[char]) -> Option<(usize, usize, Vec<usize>)> {
    let mut escaped = false;
    let mut open = None;
    let mut depth = 0;
    let mut commas = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '{' => {
                if depth == 0 {
                    open = Some(i);
                }
                depth += 1;
            }
            ',' if depth == 1 => commas.push(i),
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    return open.map(|open| (open, i, commas));
                }
            }
            _ => {}
        }
    }
    None
}

/// How many patterns `parts` make, saturating.
fn count(parts: &[Part]) -> usize {
    parts
        .iter()
        .map(|part| match part {
            Part::Text(_) => 1,
            Part::Group(choices) => choices.iter().map(|c| count(c)).fold(0, usize::saturating_add),
        })
        .fold(1, usize::saturating_mul)
}

/// The patterns `parts` make: the first group's alternatives vary slowest.
fn join(parts: &[Part]) -> Vec<String> {
    let mut out = vec![String::new()];
    for part in parts {
        out = match part {
            Part::Text(text) => out.into_iter().map(|head| head + text).collect(),
            Part::Group(choices) => {
                let tails: Vec<String> = choices.iter().flat_map(|c| join(c)).collect();
                out.iter()
                    .flat_map(|head| tails.iter().map(move |tail| format!("{head}{tail}")))
                    .collect()
            }
        };
    }
    out
}

/// `pattern` with its `\` escapes removed.
fn unescape(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// One element of a path component's pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// `*`: any characters.
    Star,
    /// `?`: one character.
    Any,
    /// `[...]`: one of (or, negated, none of) its members.
    Class {
        members: Vec<char>,
        negated: bool,
    },
    Char(char),
}

impl Item {
    /// Whether this single-character item matches `c`.
    fn accepts(&self, c: char) -> bool {
        match self {
            Item::Star | Item::Any => true,
            Item::Char(want) => *want == c,
            Item::Class { members: m, negated } => {
                let mut i = 0;
                let mut hit = false;
                while i < m.len() {
                    if i + 2 < m.len() && m[i + 1] == '-' {
                        hit |= (m[i]..=m[i + 2]).contains(&c);
                        i += 3;
                    } else {
                        hit |= m[i] == c;
                        i += 1;
                    }
                }
                hit != *negated
            }
        }
    }
}

/// The items of one path component's pattern: `*`, `?`, `[...]` (`[!...]`/`[^...]` negated; a
/// `]` first is a member; an unclosed `[` is a literal one), `\` making the next character
/// literal.
fn items(pattern: &str) -> Vec<Item> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => out.push(Item::Star),
            '?' => out.push(Item::Any),
            '[' => {
                let (negated, body) = match chars.get(i + 1) {
                    Some('!' | '^') => (true, i + 2),
                    _ => (false, i + 1),
                };
                // A `]` first in the class is a member.
                let end = chars.iter().skip(body + 1).position(|&c| c == ']').map(|e| body + 1 + e);
                match end {
                    Some(end) => {
                        out.push(Item::Class { members: chars[body..end].to_vec(), negated });
                        i = end;
                    }
                    None => out.push(Item::Char('[')),
                }
            }
            '\\' if i + 1 < chars.len() => {
                i += 1;
                out.push(Item::Char(chars[i]));
            }
            c => out.push(Item::Char(c)),
        }
        i += 1;
    }
    out
}

/// Whether one path component `name` matches `pattern`. Each `*` tries the shortest match first
/// and, on a mismatch, only the last `*` takes one more character: time grows with the product
/// of the lengths, never exponentially with the number of `*`s.
fn matches(pattern: &[Item], name: &[char]) -> bool {
    let (mut p, mut n) = (0, 0);
    // The last `*` seen and where in the name its match ends.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(Item::Star) => {
                star = Some((p, n));
                p += 1;
            }
            Some(item) if item.accepts(name[n]) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((at, end)) => {
                    star = Some((at, end + 1));
                    p = at + 1;
                    n = end + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|item| *item == Item::Star)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_matching() {
        let cases = [
            ("*.conf", "web.conf", true),
            ("*.conf", "web.conf.bak", false),
            ("*", "", true),
            ("vs-?.conf", "vs-1.conf", true),
            ("vs-?.conf", "vs-10.conf", false),
            ("vs-[0-9].conf", "vs-7.conf", true),
            ("vs-[!0-9].conf", "vs-7.conf", false),
            ("vs-[^0-9].conf", "vs-a.conf", true),
            ("[]]x", "]x", true),
            ("[abc", "[abc", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("*a*b*", "xxaxxbxx", true),
        ];
        for (pattern, name, expected) in cases {
            let name_chars: Vec<char> = name.chars().collect();
            assert_eq!(matches(&items(pattern), &name_chars), expected, "{pattern:?} {name}");
        }
    }

    #[test]
    fn brace_alternatives() {
        let cases: [(&str, &[&str]); 9] = [
            ("a.conf", &["a.conf"]),
            ("{a,b}.conf", &["a.conf", "b.conf"]),
            ("x/{a,b/{c,d}}", &["x/a", "x/b/c", "x/b/d"]),
            ("{,cat}x", &["x", "catx"]),
            ("{open", &["{open"]),
            ("{a,b}{c,d}", &["ac", "ad", "bc", "bd"]),
            ("{a,b}x{c", &["ax{c", "bx{c"]),
            ("x{a,{b,c}", &["x{a,{b,c}"]),
            ("\\{a,b}{c\\,d}", &["\\{a,b}c\\,d"]),
        ];
        for (pattern, expected) in cases {
            assert_eq!(braces(pattern, &Limits::DEFAULT).unwrap(), expected, "{pattern}");
        }
        assert!(has_magic("conf.d/*.conf"));
        assert!(has_magic("{a,b}"));
        assert!(!has_magic("plain/file\\*.conf"));
        assert_eq!(resolve("file\\*.conf", Path::new("/etc")), Path::new("/etc/file*.conf"));
    }

    /// `many(n, "{a,b}")`: the group `n` times.
    fn many(n: usize, group: &str) -> String {
        group.repeat(n)
    }

    #[test]
    fn brace_expansion_is_bounded() {
        let limits = Limits::DEFAULT;
        // (name, pattern, Ok(patterns made) or the error)
        let cases: Vec<(&str, String, Result<usize, GlobError>)> = vec![
            ("10 groups of 2", many(10, "{a,b}"), Ok(1024)),
            ("11 groups of 2", many(11, "{a,b}"), Err(GlobError::Alternatives(1024))),
            // Counted before anything is made: 2^60 patterns cost no time.
            ("60 groups of 2", many(60, "{a,b}"), Err(GlobError::Alternatives(1024))),
            ("1024 alternatives", format!("{{{}}}", vec!["x"; 1024].join(",")), Ok(1024)),
            ("32 deep", format!("{}x{}", "{".repeat(32), "}".repeat(32)), Ok(1)),
            (
                "33 deep",
                format!("{}x{}", "{".repeat(33), "}".repeat(33)),
                Err(GlobError::BraceDepth(32)),
            ),
            (
                "100,000 deep",
                format!("{}x{}", "{".repeat(100_000), "}".repeat(100_000)),
                Err(GlobError::BraceDepth(32)),
            ),
            // Never closed: text, however deep.
            ("100,000 open", "{".repeat(100_000), Ok(1)),
            ("2,000 single groups", many(2000, "{x}"), Ok(1)),
        ];
        for (name, pattern, expected) in cases {
            let got = braces(&pattern, &limits).map(|patterns| patterns.len());
            assert_eq!(got, expected, "{name}");
        }
    }

    /// A scratch directory: its path, and the guard that removes it when dropped.
    struct Scratch {
        path: PathBuf,
        _guard: tempfile::TempDir,
    }

    impl Scratch {
        fn new(name: &str, files: &[&str]) -> Scratch {
            let guard = crate::testutil::scratch_dir(&format!("lb-glob-{name}-"));
            let dir = guard.path().to_owned();
            for file in files {
                let path = dir.join(file);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, "").unwrap();
            }
            Scratch { path: dir, _guard: guard }
        }

        fn names(&self, paths: Vec<PathBuf>) -> Vec<String> {
            let strip = |p: PathBuf| p.strip_prefix(&self.path).unwrap().display().to_string();
            paths.into_iter().map(strip).collect()
        }
    }

    #[test]
    fn double_star_stays_in_one_component() {
        let dir = Scratch::new("stars", &["a.conf", "d/b.conf", "d/e/c.conf", ".hidden.conf"]);
        let cases: &[(&str, &[&str])] = &[
            ("**", &["a.conf", "d"]),
            ("**.conf", &["a.conf"]),
            ("**/*.conf", &["d/b.conf"]),
            ("*/**/*.conf", &["d/e/c.conf"]),
            ("{d/e,d}/*.conf", &["d/e/c.conf", "d/b.conf"]),
            (".*.conf", &[".hidden.conf"]),
        ];
        for (pattern, expected) in cases {
            let got = expand(pattern, &dir.path, &Limits::DEFAULT).unwrap();
            assert_eq!(dir.names(got), *expected, "{pattern}");
        }
    }

    #[test]
    fn walking_is_bounded() {
        let names: Vec<String> = (0..20).map(|i| format!("d{i}/f.conf")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let dir = Scratch::new("walk", &names);
        let limits = Limits { paths: 10, entries: 30, ..Limits::DEFAULT };
        let cases: &[(&str, Result<usize, GlobError>)] = &[
            ("d1[0-4]/f.conf", Ok(5)),
            // d0..d9: 10 paths, within the limit; 20 are not.
            ("d?/f.conf", Ok(10)),
            ("*/f.conf", Err(GlobError::Paths(10))),
            ("{d1,d2,d3,d4,d5,d6,d7,d8,d9,d10,d11}/f.conf", Err(GlobError::Paths(10))),
            // 20 entries in the directory, 20 more in its subdirectories.
            ("*/*", Err(GlobError::Entries(30))),
        ];
        for (pattern, expected) in cases {
            let got = expand(pattern, &dir.path, &limits).map(|p| p.len());
            assert_eq!(got, *expected, "{pattern}");
        }
    }

    /// Backtracking into every `*` took time exponential in their number.
    #[test]
    fn many_stars_match_in_polynomial_time() {
        let name: Vec<char> = "a".repeat(255).chars().collect();
        let pattern = items(&format!("{}b", "*a".repeat(40)));
        assert!(!matches(&pattern, &name));
        let pattern = items(&format!("{}a", "*a".repeat(40)));
        assert!(matches(&pattern, &name));
    }
}
