//! Text to tokens, as keepalived's parser reads it, with `include`d files spliced in where they
//! are included (keepalived reads an included file as if its lines were written there, so an
//! include may even stand inside a block).
//!
//! keepalived's lexical rules: `!` and `#` start a comment anywhere outside a quoted string
//! (`\!` and `\#` are the characters themselves); a `"` starts a string that ends at the next `"`
//! on the same line and is one word however many spaces it holds; `{` and `}` are words of their
//! own wherever they are; a line ends a statement, unless it ends with a backslash, which joins
//! it to the next. Beyond keepalived, non-breaking and other unusual spaces (pasted from web
//! pages and documents) separate words like spaces, with one warning per file.

use std::path::{Path, PathBuf};

use super::super::file;
use super::super::model::Location;
use super::keywords::INCLUDE_KEYWORDS;
use super::{Diags, Sources, glob};

/// A token and where it starts (virtual location).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub kind: Tok,
    pub at: Location,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    /// A word or a quoted string (without its quotes).
    Word {
        text: String,
        quoted: bool,
    },
    Open,
    Close,
    /// End of a (logical) line.
    Eol,
}

/// Nested includes beyond this are reported rather than followed.
pub(super) const MAX_INCLUDE_DEPTH: usize = 16;

/// What reading a keepalived.conf and its includes may take: generous for real files, small
/// enough that a wrong pattern (`include /**/*`) or a hostile file is an error, not an agent
/// that hangs or runs out of memory.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Bytes of one file.
    pub file_bytes: u64,
    /// Bytes of the main file and every file it includes, together.
    pub total_bytes: u64,
    /// Files included (the main file not counted).
    pub files: usize,
    pub glob: glob::Limits,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        file_bytes: file::MAX_FILE_BYTES,
        total_bytes: 64 << 20,
        files: 1024,
        glob: glob::Limits::DEFAULT,
    };
}

/// The tokens of the main file `text` (read from `path`) with its includes spliced in, read
/// within `limits`.
pub(super) fn read_with(
    text: &str,
    path: &Path,
    sources: &mut Sources,
    diags: &mut Diags,
    limits: &Limits,
) -> Vec<Token> {
    let total = u64::try_from(text.len()).unwrap_or(u64::MAX);
    let mut reader =
        Reader { sources, diags, stack: Vec::new(), limits, files: 0, total, stopped: false };
    reader.file(text, path)
}

struct Reader<'a> {
    sources: &'a mut Sources,
    diags: &'a mut Diags,
    /// The files being read, outermost first: (identity, path as named).
    stack: Vec<(PathBuf, PathBuf)>,
    limits: &'a Limits,
    /// Files included so far.
    files: usize,
    /// Bytes read so far, the main file's included.
    total: u64,
    /// A limit on files or bytes was reached: no more includes are read (and reported).
    stopped: bool,
}

impl Reader<'_> {
    fn file(&mut self, text: &str, path: &Path) -> Vec<Token> {
        let base = self.sources.add(path, text);
        let tokens = lex(text, base, self.diags);
        let identity = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.stack.push((identity, path.to_path_buf()));
        let tokens = self.splice_includes(tokens, path);
        self.stack.pop();
        tokens
    }

    /// Replaces each include line (an include keyword first on its line) with the tokens of the
    /// files it names.
    fn splice_includes(&mut self, tokens: Vec<Token>, path: &Path) -> Vec<Token> {
        // Most files include nothing: no copy of their tokens then.
        let names_include = |t: &Token| match &t.kind {
            Tok::Word { text, .. } => INCLUDE_KEYWORDS.contains(&text.as_str()),
            _ => false,
        };
        if !tokens.iter().any(names_include) {
            return tokens;
        }
        let mut out = Vec::with_capacity(tokens.len());
        let mut tokens = tokens.into_iter().peekable();
        let mut line_start = true;
        while let Some(token) = tokens.next() {
            let is_include = line_start
                && matches!(&token.kind, Tok::Word { text, quoted: false }
                    if INCLUDE_KEYWORDS.contains(&text.as_str()));
            line_start = token.kind == Tok::Eol;
            if !is_include {
                out.push(token);
                continue;
            }
            let mut rest = Vec::new();
            while let Some(next) = tokens.next_if(|t| t.kind != Tok::Eol) {
                rest.push(next);
            }
            let Tok::Word { text: keyword, .. } = &token.kind else { continue };
            match rest.as_slice() {
                [Token { kind: Tok::Word { text: pattern, .. }, at }] => {
                    out.extend(self.include(pattern, *at, path));
                }
                [] => self.diags.error(
                    token.at,
                    format!("`{keyword}` needs a file name or pattern: {keyword} FILE"),
                ),
                [_, extra, ..] => self.diags.error(
                    extra.at,
                    format!(
                        "`{keyword}` takes one file name or pattern (quote a name with spaces)"
                    ),
                ),
                [other] => self.diags.error(
                    other.at,
                    format!("`{keyword}` takes a file name or pattern, not a brace"),
                ),
            }
        }
        out
    }

    /// The tokens of the files `pattern` (relative to `including`'s directory) names.
    fn include(&mut self, pattern: &str, at: Location, including: &Path) -> Vec<Token> {
        if self.stopped {
            return Vec::new();
        }
        if pattern.len() > glob::MAX_PATTERN_BYTES {
            self.diags.error(
                at,
                format!(
                    "this include pattern is {} bytes long; a path is at most {} (PATH_MAX)",
                    pattern.len(),
                    glob::MAX_PATTERN_BYTES
                ),
            );
            return Vec::new();
        }
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            self.diags.error(
                at,
                format!(
                    "includes are nested more than {MAX_INCLUDE_DEPTH} deep here: `{pattern}` is \
                     not read"
                ),
            );
            return Vec::new();
        }
        let dir = including.parent().unwrap_or(Path::new(""));
        let paths = if glob::has_magic(pattern) {
            match glob::expand(pattern, dir, &self.limits.glob) {
                Ok(paths) if paths.is_empty() => {
                    self.diags.warning(at, format!("`include {pattern}` matches no file"));
                    paths
                }
                Ok(paths) => paths,
                Err(e) => {
                    self.diags.error(at, format!("`include {pattern}`: {e}; nothing is read"));
                    return Vec::new();
                }
            }
        } else {
            vec![glob::resolve(pattern, dir)]
        };
        let mut tokens = Vec::new();
        for path in paths {
            if path.is_dir() {
                self.diags.warning(
                    at,
                    format!(
                        "`{}` is a directory, not a configuration file: skipped",
                        path.display()
                    ),
                );
                continue;
            }
            let identity = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if let Some(i) = self.stack.iter().position(|(seen, _)| *seen == identity) {
                let chain: Vec<String> = self.stack[i..]
                    .iter()
                    .map(|(_, named)| format!("`{}`", named.display()))
                    .chain([format!("`{}`", path.display())])
                    .collect();
                self.diags.error(at, format!("include cycle: {}", chain.join(" includes ")));
                continue;
            }
            if self.files >= self.limits.files {
                self.stop(
                    at,
                    format!(
                        "more than {} files are included: `{}` and the files after it are not \
                         read",
                        self.limits.files,
                        path.display()
                    ),
                );
                break;
            }
            self.files += 1;
            match file::read(&path, self.limits.file_bytes) {
                Ok(bytes) => {
                    self.total =
                        self.total.saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
                    if self.total > self.limits.total_bytes {
                        self.stop(
                            at,
                            format!(
                                "the included files total more than {} MiB with `{}`: it and the \
                                 files after it are not read",
                                self.limits.total_bytes >> 20,
                                path.display()
                            ),
                        );
                        break;
                    }
                    tokens.extend(self.file(&String::from_utf8_lossy(&bytes), &path));
                }
                Err(e) => self
                    .diags
                    .error(at, format!("cannot read included file `{}`: {e}", path.display())),
            }
            // What an included file leaves open on its last line ends there.
            tokens.push(Token { kind: Tok::Eol, at });
        }
        tokens
    }

    /// Reports the limit `message` says was reached, and reads no more includes.
    fn stop(&mut self, at: Location, message: String) {
        self.diags.limit(at, message);
        self.stopped = true;
    }
}

/// Spaces keepalived does not know, but operators paste: non-breaking, full-width and the like.
fn is_unusual_space(c: char) -> bool {
    matches!(
        c,
        '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{202f}' | '\u{205f}' | '\u{3000}' | '\u{feff}'
    )
}

/// keepalived's white space.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\x0b' | '\x0c')
}

/// The tokens of one file's `text`, whose lines start at virtual line `base` + 1.
pub(super) fn lex(text: &str, base: u32, diags: &mut Diags) -> Vec<Token> {
    let mut lexer = Lexer {
        chars: text.chars().collect(),
        i: 0,
        line: 1,
        col: 1,
        base,
        tokens: Vec::new(),
        line_start: true,
        unusual: None,
        diags,
    };
    lexer.run();
    lexer.tokens
}

struct Lexer<'d> {
    chars: Vec<char>,
    i: usize,
    line: u32,
    col: u32,
    base: u32,
    tokens: Vec<Token>,
    /// Nothing but spaces since the line started.
    line_start: bool,
    /// The first unusual space (where, which) and how many there are.
    unusual: Option<(Location, char, usize)>,
    diags: &'d mut Diags,
}

impl Lexer<'_> {
    fn here(&self) -> Location {
        Location::new(self.base + self.line, self.col)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.i + ahead).copied()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.i += 1;
            if c == '\n' {
                self.line += 1;
                self.col = 1;
            } else {
                self.col += 1;
            }
        }
    }

    fn push(&mut self, kind: Tok, at: Location) {
        // One line end stands for a run of them: blank lines end nothing more, and a file of
        // line ends would otherwise cost a token each.
        if kind == Tok::Eol && self.tokens.last().is_some_and(|t| t.kind == Tok::Eol) {
            return;
        }
        self.tokens.push(Token { kind, at });
    }

    fn run(&mut self) {
        // A byte order mark is an encoding artefact, not a space anybody typed.
        if self.peek() == Some('\u{feff}') {
            self.i += 1;
        }
        while let Some(c) = self.peek() {
            match c {
                '\n' => {
                    self.push(Tok::Eol, self.here());
                    self.bump();
                }
                c if is_space(c) => self.bump(),
                c if is_unusual_space(c) => {
                    self.note_unusual(c);
                    self.bump();
                }
                '!' | '#' => self.skip_comment(),
                '{' => {
                    self.push(Tok::Open, self.here());
                    self.bump();
                }
                '}' => {
                    self.push(Tok::Close, self.here());
                    self.bump();
                }
                '"' => self.quoted(),
                '\\' if self.continues() => self.join_lines(),
                _ if self.line_start && self.include_ahead() => self.include_line(),
                _ => self.word(),
            }
            self.line_start = self.tokens.last().is_none_or(|t| t.kind == Tok::Eol);
        }
        self.push(Tok::Eol, self.here());
        if let Some((at, c, count)) = self.unusual {
            let more = match count {
                1 => String::new(),
                n => format!(" (and {} more in this file)", n - 1),
            };
            self.diags.warning(
                at,
                format!(
                    "unusual space character U+{:04X}{more} read as a space: keepalived would \
                     read it as part of a word; retype it as a plain space",
                    u32::from(c)
                ),
            );
        }
    }

    fn note_unusual(&mut self, c: char) {
        match &mut self.unusual {
            Some((_, _, count)) => *count += 1,
            None => self.unusual = Some((self.here(), c, 1)),
        }
    }

    fn skip_comment(&mut self) {
        while self.peek().is_some_and(|c| c != '\n') {
            self.bump();
        }
    }

    /// Whether the backslash at the cursor ends its line (only spaces after it): the line
    /// continues on the next one.
    fn continues(&self) -> bool {
        let mut ahead = 1;
        loop {
            match self.peek_at(ahead) {
                None | Some('\n') => return true,
                Some(c) if is_space(c) || is_unusual_space(c) => ahead += 1,
                Some(_) => return false,
            }
        }
    }

    /// Skips a line-ending backslash and the line end: the next line continues this one.
    fn join_lines(&mut self) {
        while let Some(c) = self.peek() {
            self.bump();
            if c == '\n' {
                break;
            }
        }
    }

    /// Whether an include keyword and a space are at the cursor.
    fn include_ahead(&self) -> bool {
        INCLUDE_KEYWORDS.iter().any(|keyword| {
            let len = keyword.chars().count();
            keyword.chars().enumerate().all(|(i, c)| self.peek_at(i) == Some(c))
                && self.peek_at(len).is_some_and(|c| is_space(c) || is_unusual_space(c))
        })
    }

    /// An include line, as keepalived reads it: the keyword, then the rest of the line as the
    /// file pattern, braces and spaces included (`include conf.d/{web,dns}.conf`), without its
    /// comment, trailing spaces and surrounding quotes.
    fn include_line(&mut self) {
        self.word();
        while self.peek().is_some_and(|c| is_space(c) || is_unusual_space(c)) {
            self.bump();
        }
        let at = self.here();
        let mut pattern = String::new();
        let mut quoted = false;
        while let Some(c) = self.peek() {
            match c {
                '\n' => break,
                '!' | '#' if !quoted => {
                    self.skip_comment();
                    break;
                }
                '"' => quoted = !quoted,
                _ => {}
            }
            pattern.push(c);
            self.bump();
        }
        let pattern = pattern.trim_end_matches(|c| is_space(c) || is_unusual_space(c));
        let pattern = pattern
            .strip_prefix('"')
            .and_then(|p| p.strip_suffix('"'))
            .unwrap_or(pattern)
            .to_owned();
        if !pattern.is_empty() {
            self.check_text(&pattern, at);
            self.push(Tok::Word { text: pattern, quoted: true }, at);
        }
    }

    fn word(&mut self) {
        let at = self.here();
        let mut text = String::new();
        while let Some(c) = self.peek() {
            match c {
                '\n' | '{' | '}' | '"' | '!' | '#' => break,
                c if is_space(c) || is_unusual_space(c) => break,
                '\\' if self.continues() => break,
                '\\' => {
                    self.bump();
                    match self.peek() {
                        // An escaped comment character is itself.
                        Some(c @ ('!' | '#')) => {
                            text.push(c);
                            self.bump();
                        }
                        // keepalived keeps other escapes as written, for the scripts.
                        Some(c) if !is_space(c) && !is_unusual_space(c) => {
                            text.push('\\');
                            text.push(c);
                            self.bump();
                        }
                        _ => text.push('\\'),
                    }
                }
                c => {
                    text.push(c);
                    self.bump();
                }
            }
        }
        self.check_text(&text, at);
        self.push(Tok::Word { text, quoted: false }, at);
    }

    fn quoted(&mut self) {
        let at = self.here();
        self.bump();
        let mut text = String::new();
        loop {
            match self.peek() {
                None | Some('\n') => {
                    self.diags.error(
                        at,
                        "unterminated quoted string: the closing `\"` is missing on this line",
                    );
                    break;
                }
                Some('"') => {
                    self.bump();
                    break;
                }
                // Kept as written (scripts get their escapes), but `\"` does not end the string.
                Some('\\') => {
                    text.push('\\');
                    self.bump();
                    if let Some(c) = self.peek().filter(|&c| c != '\n') {
                        text.push(c);
                        self.bump();
                    }
                }
                Some(c) => {
                    text.push(c);
                    self.bump();
                }
            }
        }
        self.check_text(&text, at);
        self.push(Tok::Word { text, quoted: true }, at);
    }

    /// Bytes that were not UTF-8 became U+FFFD when the file was read: harmless in comments,
    /// but a value with them is not what the operator wrote.
    fn check_text(&mut self, text: &str, at: Location) {
        if text.contains('\u{fffd}') {
            self.diags.error(
                at,
                "this value is not valid UTF-8 text (the file may use another encoding, like \
                 Latin-1): retype it",
            );
        }
    }
}
