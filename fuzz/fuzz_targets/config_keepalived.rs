//! The keepalived.conf front end: `lb::config::keepalived::parse`, with and without `--strict`.
//!
//! Properties: never panics; every error, warning and notice is located inside the text (line and
//! column 1-based); a successful parse validates again without errors; `--strict` is the plain
//! parse with warnings made errors: it succeeds exactly when the plain parse succeeds without
//! warnings (then with the same model), and otherwise reports at least the plain parse's errors.
//!
//! Nesting: the text is also parsed inside 33 to 10,233 blocks (the first byte says how many):
//! blocks deeper than 32 are a located error (at the 33rd `{`), never a stack overflow.
//!
//! `include` reads files: the text is parsed as if it were a file in an empty directory, and texts
//! that could name a file elsewhere (an include keyword and a `/`) are skipped, so the fuzzer never
//! reads (or hangs on) files of the machine. The empty directory is made under TMPDIR, which
//! `cargo xtask fuzz` points at a folder of each run's own and removes afterwards.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lb::config::{self, keepalived};
use lb_fuzz::{AnyInterface, assert_errors_located, assert_located};
use libfuzzer_sys::fuzz_target;

fn source() -> &'static Path {
    static SOURCE: OnceLock<PathBuf> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let dir = std::env::temp_dir().join("lb-fuzz-keepalived-empty");
        std::fs::create_dir_all(&dir).expect("creating an empty directory for the fuzzed file");
        dir.join("keepalived.conf")
    })
}

fuzz_target!(|data: &[u8]| {
    // `config::load` reads a keepalived.conf lossily; do the same.
    let text = String::from_utf8_lossy(data);
    if text.contains("include") && text.contains('/') {
        return;
    }
    let source = source();
    let _ = keepalived::detect(source, &text);
    let plain = keepalived::parse(&text, source, &AnyInterface, false);
    let strict = keepalived::parse(&text, source, &AnyInterface, true);
    match &plain {
        Ok(loaded) => {
            let again = config::validate(&loaded.config, &AnyInterface);
            assert!(again.is_empty(), "valid model fails validation again: {again:?}");
            for w in &loaded.warnings {
                assert_eq!(w.file, source, "{w}: no other file was read");
                assert_located(&w.to_string(), w.line, w.col, &text);
            }
            for n in &loaded.notices {
                assert_located(&n.to_string(), n.line, n.col, &text);
            }
            let _ = config::notices(&loaded.config);
        }
        Err(errors) => {
            assert_errors_located(&errors.0, &text);
            for e in errors {
                assert_eq!(e.file, source, "{e}: no other file was read");
            }
        }
    }
    match (&plain, &strict) {
        (Ok(p), Ok(s)) => {
            assert!(
                p.warnings.is_empty(),
                "--strict accepted a file with warnings: {:?}",
                p.warnings
            );
            assert_eq!(p.config, s.config, "--strict changed the model");
        }
        (Ok(p), Err(s)) => {
            assert!(!p.warnings.is_empty(), "--strict refused a file without warnings: {s}");
            assert_errors_located(&s.0, &text);
        }
        (Err(p), Ok(_)) => panic!("--strict accepted a file the plain parse refuses: {p}"),
        (Err(p), Err(s)) => {
            assert_errors_located(&s.0, &text);
            for e in p {
                assert!(s.0.contains(e), "--strict lost the error `{e}`; it reports:\n{s}");
            }
        }
    }
    nested(data, &text, source);
});

/// `text` inside more blocks than the reader takes: an error at the 33rd `{` (or, when the text
/// has over a thousand errors of its own, the note that more were found), located.
fn nested(data: &[u8], text: &str, source: &Path) {
    let depth = 33 + usize::from(data.first().copied().unwrap_or(0)) * 40;
    let wrapped = format!("global_defs {}\n{text}\n{}\n", "{ ".repeat(depth), "} ".repeat(depth));
    let errors = match keepalived::parse(&wrapped, source, &AnyInterface, false) {
        Ok(_) => panic!("{depth} nested blocks were accepted"),
        Err(errors) => errors,
    };
    assert_errors_located(&errors.0, &wrapped);
    let shown = errors.to_string();
    assert!(
        shown.contains(":1:77: blocks are nested more than 32 deep")
            || shown.contains(" more errors "),
        "{depth} nested blocks, no depth error:\n{shown}"
    );
}
