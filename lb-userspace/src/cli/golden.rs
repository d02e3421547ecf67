//! Golden outputs of `lb check` (text and `--json`) and `lb convert` on the project's own configs:
//! the example and packaged files, the keepalived fixtures, the fuzz seeds, the TOML and
//! keepalived blocks of the docs, and `tests/golden/inputs/`. Each one is also mutated line by
//! line (a key misspelt, a value of the wrong type, a negative number, the line dropped) and
//! `lb check` run on every variant, so the error texts of every reader are held too.
//!
//! The outputs are compared byte for byte with `tests/golden/outputs/`; `LB_BLESS=1` rewrites them
//! (then review the diff). Paths are written relative to the repository (`<tmp>` for the docs
//! blocks and the mutations, which are written to a scratch folder). Interfaces are those of the
//! test host `eth0` and `eth1` only, so the outputs are the same on any machine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::Printed;
use super::check::{check_json, check_text};
use super::convert::convert_printed;
use crate::config::FormatChoice;
use crate::config::test_support::FakeHost;

/// At most this many mutated variants per input: enough for every line of the examples.
const MAX_MUTATIONS: usize = 400;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One corpus input: its name in the golden folder and its text.
struct Input {
    name: String,
    text: String,
}

/// The sorted files (no subfolders) of `dir`, relative to the repository.
fn files_in(dir: &str) -> Vec<Input> {
    let root = repo();
    let mut names: Vec<String> = std::fs::read_dir(root.join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n != "init.sh")
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let name = format!("{dir}/{n}");
            let text = String::from_utf8_lossy(&std::fs::read(root.join(&name)).unwrap()).into();
            Input { name, text }
        })
        .collect()
}

/// The code blocks of `lang` in a Markdown document of the repository, as `.toml` or `.conf`
/// inputs named after it.
fn doc_blocks(doc: &str, lang: &str, ext: &str) -> Vec<Input> {
    let text = std::fs::read_to_string(repo().join(doc)).unwrap_or_else(|e| panic!("{doc}: {e}"));
    let open = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let end = body.find("```").unwrap_or(body.len());
        let name = format!("{}-{}.{ext}", doc.replace('/', "-"), out.len());
        out.push(Input { name, text: body[..end].to_owned() });
        rest = &body[end..];
    }
    out
}

fn corpus() -> Vec<Input> {
    let mut all = Vec::new();
    for dir in [
        "examples",
        "contrib",
        "lb-userspace/src/config/keepalived/fixtures",
        "fuzz/seeds/config_toml",
        "fuzz/seeds/config_keepalived",
        "tests/golden/inputs",
    ] {
        all.extend(files_in(dir).into_iter().filter(|i| !i.name.ends_with(".service")));
    }
    for doc in ["README.md", "docs/config.md", "docs/scale-out.md", "docs/flow-sync.md"] {
        all.extend(doc_blocks(doc, "toml", "toml"));
    }
    all.extend(doc_blocks("docs/keepalived.md", "keepalived", "conf"));
    all
}

/// `printed` under `title`, with the paths made location-independent.
fn section(out: &mut String, title: &str, printed: &Printed, paths: &[(&str, &str)]) {
    let mut text = format!(
        "=== {title} (exit {})\n--- stdout\n{}--- stderr\n{}",
        printed.code, printed.stdout, printed.stderr
    );
    for (from, to) in paths {
        text = text.replace(from, to);
    }
    out.push_str(&text);
}

/// Variants of `text`, one change each: `(what changed, text)`.
fn mutations(text: &str, keepalived: bool) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with(['#', '!', '[', '{', '}', ']', '"', '\'']) {
            continue;
        }
        let indent = &line[..line.len() - line.trim_start().len()];
        let mut variants: Vec<String> = Vec::new();
        if keepalived {
            let mut words = trimmed.split_whitespace();
            let Some(word) = words.next() else { continue };
            let args: Vec<&str> = words.collect();
            variants.push(format!("{indent}{} {}", misspelt(word), args.join(" ")));
            if let Some(first) = args.first().filter(|a| !a.starts_with('{')) {
                let rest = args[1..].join(" ");
                variants.push(format!("{indent}{word} x{} {rest}", first.len()));
                variants.push(format!("{indent}{word} -1 {rest}"));
            }
        } else {
            let Some((key, value)) = trimmed.split_once('=') else { continue };
            let (key, value) = (key.trim(), value.trim());
            variants.push(format!("{indent}{} = {value}", misspelt(key)));
            let wrong = if value.starts_with(['"', '\'', '[', '{']) { "1" } else { "\"x\"" };
            variants.push(format!("{indent}{key} = {wrong}"));
            if value.starts_with(|c: char| c.is_ascii_digit()) {
                variants.push(format!("{indent}{key} = -1"));
            }
        }
        variants.push(String::new());
        for variant in variants {
            let mut changed = lines.clone();
            changed[i] = &variant;
            let what = format!("line {}: `{}` -> `{}`", i + 1, line.trim(), variant.trim());
            out.push((what, changed.join("\n") + "\n"));
        }
    }
    out.truncate(MAX_MUTATIONS);
    out
}

/// `word` with its last two characters swapped (a typo "did you mean" should catch).
fn misspelt(word: &str) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    let n = chars.len();
    if n >= 2 {
        chars.swap(n - 1, n - 2);
    } else {
        chars.push('x');
    }
    chars.into_iter().collect()
}

/// Everything the commands print for `input` (written at `path`).
fn outputs(input: &Input, path: &Path, scratch: &Path, paths: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let host = &FakeHost;
    let auto = FormatChoice::Auto;
    section(&mut out, "lb check", &check_text(path, host, auto, false), paths);
    section(&mut out, "lb check --strict", &check_text(path, host, auto, true), paths);
    let json = check_json(path, host, auto, false).expect("json");
    section(&mut out, "lb check --json", &json, paths);
    section(&mut out, "lb convert", &convert_printed(path, auto), paths);
    let keepalived =
        crate::config::keepalived::detect(path, &input.text) == crate::config::Format::Keepalived;
    let file = path.file_name().expect("a file name");
    let variant = scratch.join("mutated").join(file);
    std::fs::create_dir_all(variant.parent().expect("parent")).expect("mkdir");
    for (what, text) in mutations(&input.text, keepalived) {
        std::fs::write(&variant, text).expect("write variant");
        let printed = check_text(&variant, host, auto, false);
        section(&mut out, &format!("lb check, {what}"), &printed, paths);
    }
    out
}

#[test]
fn config_outputs_are_golden() {
    let scratch = crate::testutil::scratch_dir("lb-golden-");
    let root = repo().canonicalize().expect("repo");
    let root_text = format!("{}/", root.display());
    let tmp_text = scratch.path().display().to_string();
    let paths = [(root_text.as_str(), ""), (tmp_text.as_str(), "<tmp>")];
    let golden = root.join("tests/golden/outputs");
    let bless = std::env::var("LB_BLESS").is_ok_and(|v| v == "1");
    let mut want_files = Vec::new();
    let mut drift = Vec::new();
    for input in corpus() {
        let in_repo = root.join(&input.name);
        let path = if in_repo.is_file() {
            in_repo
        } else {
            let p = scratch.path().join(&input.name);
            std::fs::write(&p, &input.text).expect("write doc block");
            p
        };
        let got = outputs(&input, &path, scratch.path(), &paths);
        let file = golden.join(format!("{}.out", input.name.replace('/', "__")));
        want_files.push(file.clone());
        if bless {
            std::fs::create_dir_all(&golden).expect("mkdir golden");
            std::fs::write(&file, &got).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&file).unwrap_or_default();
        if want != got {
            let line = want.lines().zip(got.lines()).position(|(a, b)| a != b);
            let line = line.unwrap_or(want.lines().count().min(got.lines().count()));
            let shown = |t: &str| t.lines().nth(line).unwrap_or("<end>").to_owned();
            let mut msg = format!("{}: differs at line {}\n", file.display(), line + 1);
            let _ = writeln!(msg, "  golden: {}\n  now:    {}", shown(&want), shown(&got));
            drift.push(msg);
        }
    }
    // A golden file whose input is gone is stale.
    for entry in std::fs::read_dir(&golden).expect("tests/golden/outputs").flatten() {
        if !want_files.contains(&entry.path()) {
            if bless {
                std::fs::remove_file(entry.path()).expect("remove stale golden file");
            } else {
                drift.push(format!("{}: no input any more\n", entry.path().display()));
            }
        }
    }
    assert!(
        drift.is_empty(),
        "lb check/convert outputs changed (LB_BLESS=1 rewrites tests/golden/outputs):\n{}",
        drift.concat()
    );
}
