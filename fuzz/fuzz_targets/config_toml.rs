//! The native TOML configuration front end: `lb::config::parse_toml`, what `lb check`, `lb run`
//! and `lb reload` feed every file through.
//!
//! Properties: never panics; a failed parse reports at least one error, each located inside the
//! text (line and column 1-based); a successful parse is deterministic, validating its model again
//! finds nothing, and its notices are located inside the text too. Nesting: the text after a value
//! of 1 to 10,201 nested arrays (the first byte says how many) parses without overflowing the
//! stack, and nesting deeper than the toml crate's limit (80) is a located error.
#![no_main]

use std::path::Path;

use lb::config::{self, keepalived};
use lb_fuzz::{AnyInterface, assert_errors_located, assert_located};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `config::load` refuses non-UTF-8 files before parsing; what reaches the parser is text.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let source = Path::new("fuzz.toml");
    // Format detection runs on every file `lb` loads (`config::load`).
    let _ = keepalived::detect(source, text);
    match config::parse_toml(text, source, &AnyInterface) {
        Ok(model) => {
            let again = config::validate(&model, &AnyInterface);
            assert!(again.is_empty(), "valid model fails validation again: {again:?}");
            let reparsed = config::parse_toml(text, source, &AnyInterface)
                .expect("the same text parsed twice must succeed twice");
            assert_eq!(model, reparsed, "parsing the same text twice gave different models");
            for notice in config::notices(&model) {
                assert_located(&notice.to_string(), notice.line, notice.col, text);
            }
        }
        Err(errors) => {
            assert_errors_located(&errors.0, text);
            let _ = errors.to_string();
        }
    }
    let depth = 1 + usize::from(data.first().copied().unwrap_or(0)) * 40;
    let wrapped = format!("a = {}{}\n{text}", "[".repeat(depth), "]".repeat(depth));
    match config::parse_toml(&wrapped, source, &AnyInterface) {
        Ok(_) => assert!(depth <= 80, "{depth} nested arrays were accepted"),
        Err(errors) => assert_errors_located(&errors.0, &wrapped),
    }
});
