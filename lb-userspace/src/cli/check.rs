//! `lb check`: the verdict on a config file, as text lines or as one JSON document.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::Printed;
use crate::config::HostView;
use crate::config::{Diagnostic, FormatChoice, Strictness};

/// What a valid file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub format: String,
    pub virtual_servers: usize,
    pub real_servers: usize,
    pub vrrp_instances: usize,
}

/// `lb check --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub valid: bool,
    pub errors: Vec<Diagnostic>,
    /// keepalived keywords accepted but not acted on.
    pub warnings: Vec<Diagnostic>,
    /// Settings that are valid but probably not what was meant.
    pub notices: Vec<Diagnostic>,
    /// Absent (null) when the file is not valid.
    pub summary: Option<Summary>,
}

/// `lb check` in text: warnings, notices and the summary line on stdout (exit 0), or one line per
/// error on stderr (exit 1), so a script capturing stdout still sees why the file failed there.
pub fn check_text(path: &Path, host: &dyn HostView, format: FormatChoice, strict: bool) -> Printed {
    match crate::config::load(path, format, host, Strictness::from(strict)) {
        Ok(loaded) => {
            let mut stdout = String::new();
            for w in &loaded.warnings {
                let _ = writeln!(stdout, "{w}");
            }
            for n in &loaded.notices {
                let _ = writeln!(stdout, "{n}");
            }
            let cfg = &loaded.config;
            let reals: usize = cfg.virtual_servers.iter().map(|v| v.real_servers.len()).sum();
            let _ = writeln!(
                stdout,
                "{}: ok ({}, {} virtual servers, {} real servers)",
                path.display(),
                loaded.format,
                cfg.virtual_servers.len(),
                reals
            );
            Printed { stdout, stderr: String::new(), code: 0 }
        }
        Err(errors) => {
            let mut stderr = String::new();
            for e in errors.iter() {
                let _ = writeln!(stderr, "{e}");
            }
            Printed { stdout: String::new(), stderr, code: 1 }
        }
    }
}

/// `lb check --json`: the [`Report`] as one pretty JSON document on stdout; same exit code.
///
/// # Errors
/// Only if the report cannot be serialised.
pub fn check_json(
    path: &Path,
    host: &dyn HostView,
    format: FormatChoice,
    strict: bool,
) -> serde_json::Result<Printed> {
    let report = check(path, host, format, strict);
    let stdout = format!("{}\n", serde_json::to_string_pretty(&report)?);
    Ok(Printed { stdout, stderr: String::new(), code: u8::from(!report.valid) })
}

/// Checks `path` as `lb check` does.
pub fn check(path: &Path, host: &dyn HostView, format: FormatChoice, strict: bool) -> Report {
    match crate::config::load(path, format, host, Strictness::from(strict)) {
        Ok(loaded) => {
            let cfg = &loaded.config;
            Report {
                valid: true,
                errors: Vec::new(),
                warnings: loaded.warnings.clone(),
                notices: loaded.notices.clone(),
                summary: Some(Summary {
                    format: loaded.format.to_string(),
                    virtual_servers: cfg.virtual_servers.len(),
                    real_servers: cfg.virtual_servers.iter().map(|v| v.real_servers.len()).sum(),
                    vrrp_instances: cfg.vrrp.instances.len(),
                }),
            }
        }
        Err(errors) => Report {
            valid: false,
            errors: errors.0,
            warnings: Vec::new(),
            notices: Vec::new(),
            summary: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::AnyHost;

    fn report(text: &str) -> serde_json::Value {
        let dir = crate::testutil::scratch_dir("lb-check-json-");
        let path = dir.path().join("t.toml");
        std::fs::write(&path, text).expect("write");
        let r = check(&path, &AnyHost, FormatChoice::Auto, false);
        serde_json::to_value(r).expect("json")
    }

    #[test]
    fn json_shape_valid_and_invalid() {
        let ok = report(
            "[[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\nprotocol = \"tcp\"\ninterface = \"eth0\"\n\
             [[virtual_server.real_server]]\naddress = \"192.0.2.11\"\n",
        );
        assert_eq!(ok["valid"], true, "{ok}");
        assert_eq!(ok["errors"], serde_json::json!([]), "{ok}");
        assert!(ok["warnings"].is_array(), "{ok}");
        assert_eq!(ok["summary"]["virtual_servers"], 1, "{ok}");
        assert_eq!(ok["summary"]["real_servers"], 1, "{ok}");
        assert_eq!(ok["summary"]["format"], "TOML", "{ok}");

        let bad = report("[[virtual_server]]\nvip = \"nope\"\n");
        assert_eq!(bad["valid"], false, "{bad}");
        assert!(bad["summary"].is_null(), "{bad}");
        let errors = bad["errors"].as_array().expect("errors");
        assert!(!errors.is_empty(), "{bad}");
        for e in errors {
            assert!(e["file"].as_str().is_some_and(|f| f.ends_with(".toml")), "{e}");
            assert!(e["line"].as_u64().is_some_and(|l| l >= 1), "{e}");
            assert!(e["col"].as_u64().is_some_and(|c| c >= 1), "{e}");
            assert!(e["message"].is_string(), "{e}");
        }
    }
}
