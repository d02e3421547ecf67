//! The file patterns of keepalived's `include`, as glob(3) with GLOB_BRACE expands them: `*`,
//! `?`, `[...]` (`[!...]` or `[^...]` negated, with ranges) within one path component, `{a,b}`
//! alternatives anywhere, `\` quoting the next character. Names starting with `.` are matched
//! only by a pattern component starting with `.`. Relative patterns are relative to the including
//! file's directory.

use std::path::{Path, PathBuf};

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
pub(super) fn expand(pattern: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for alternative in braces(pattern) {
        let mut matches = Vec::new();
        let (start, rest) = match alternative.strip_prefix('/') {
            Some(rest) => (PathBuf::from("/"), rest.to_owned()),
            None => (dir.to_path_buf(), alternative.clone()),
        };
        let components: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
        walk(&start, &components, &mut matches);
        matches.sort();
        found.extend(matches);
    }
    found
}

/// Every path under `at` that matches `components`, in any order.
fn walk(at: &Path, components: &[&str], out: &mut Vec<PathBuf>) {
    let Some((first, rest)) = components.split_first() else {
        if at.exists() {
            out.push(at.to_path_buf());
        }
        return;
    };
    if !has_magic(first) {
        walk(&at.join(unescape(first)), rest, out);
        return;
    }
    let Ok(entries) =
        std::fs::read_dir(if at.as_os_str().is_empty() { Path::new(".") } else { at })
    else {
        return;
    };
    let pattern: Vec<char> = first.chars().collect();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') && !first.starts_with('.') {
            continue;
        }
        let name: Vec<char> = name.chars().collect();
        if matches(&pattern, &name) {
            walk(&at.join(entry.file_name()), rest, out);
        }
    }
}

/// The patterns `{a,b}` alternatives make of `pattern`, in order (nested braces too). A brace
/// without its closing one is a literal brace.
fn braces(pattern: &str) -> Vec<String> {
    let chars: Vec<char> = pattern.chars().collect();
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
                    commas.clear();
                }
                depth += 1;
            }
            ',' if depth == 1 => commas.push(i),
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let Some(start) = open else { break };
                    let prefix: String = chars[..start].iter().collect();
                    let suffix: String = chars[i + 1..].iter().collect();
                    let mut bounds = vec![start];
                    bounds.extend(&commas);
                    bounds.push(i);
                    let mut out = Vec::new();
                    for pair in bounds.windows(2) {
                        let choice: String = chars[pair[0] + 1..pair[1]].iter().collect();
                        out.extend(braces(&format!("{prefix}{choice}{suffix}")));
                    }
                    return out;
                }
            }
            _ => {}
        }
    }
    vec![pattern.to_owned()]
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

/// Whether one path component `name` matches `pattern` (`*`, `?`, `[...]`, `\`).
fn matches(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|skip| matches(rest, &name[skip..])),
        Some(('?', rest)) => !name.is_empty() && matches(rest, &name[1..]),
        Some(('[', rest)) => match (class(rest), name.split_first()) {
            (Some(class), Some((&c, name))) => class.contains(c) && matches(class.rest, name),
            // An unclosed `[` is a literal one.
            (None, Some(('[', name))) => matches(rest, name),
            _ => false,
        },
        Some(('\\', rest)) if !rest.is_empty() => {
            name.first() == rest.first() && matches(&rest[1..], &name[1..])
        }
        Some((&c, rest)) => name.first() == Some(&c) && matches(rest, &name[1..]),
    }
}

/// A `[...]` character class, and the pattern after it.
struct Class<'p> {
    members: &'p [char],
    negated: bool,
    rest: &'p [char],
}

impl Class<'_> {
    fn contains(&self, c: char) -> bool {
        let m = self.members;
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
        hit != self.negated
    }
}

/// The class after a `[`, if it is closed.
fn class(pattern: &[char]) -> Option<Class<'_>> {
    let (negated, body) = match pattern.first() {
        Some('!' | '^') => (true, &pattern[1..]),
        _ => (false, pattern),
    };
    // A `]` first in the class is a member.
    let end = body.iter().skip(1).position(|&c| c == ']').map(|i| i + 1)?;
    Some(Class { members: &body[..end], negated, rest: &body[end + 1..] })
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
            let pattern: Vec<char> = pattern.chars().collect();
            let name_chars: Vec<char> = name.chars().collect();
            assert_eq!(matches(&pattern, &name_chars), expected, "{pattern:?} {name}");
        }
    }

    #[test]
    fn brace_alternatives() {
        let cases: [(&str, &[&str]); 5] = [
            ("a.conf", &["a.conf"]),
            ("{a,b}.conf", &["a.conf", "b.conf"]),
            ("x/{a,b/{c,d}}", &["x/a", "x/b/c", "x/b/d"]),
            ("{,cat}x", &["x", "catx"]),
            ("{open", &["{open"]),
        ];
        for (pattern, expected) in cases {
            assert_eq!(braces(pattern), expected, "{pattern}");
        }
        assert!(has_magic("conf.d/*.conf"));
        assert!(has_magic("{a,b}"));
        assert!(!has_magic("plain/file\\*.conf"));
        assert_eq!(resolve("file\\*.conf", Path::new("/etc")), Path::new("/etc/file*.conf"));
    }
}
