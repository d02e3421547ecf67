//! Configuration: the model, its front ends and its validation.
//!
//! Operators know keepalived, so the native format is TOML using keepalived's vocabulary. A front
//! end turns text into the [`Config`] model (reporting syntax, unknown-key and type errors), then
//! [`validate`] applies the front-end independent rules. Every error found is reported at once,
//! each as `FILE:LINE:COL: message` pointing at the offending key or value. A valid configuration
//! may still get [`notices`]: settings that work, but not as their words suggest.

pub mod bgp;
mod emit;
mod error;
mod file;
pub mod flow_sync;
pub mod health;
mod host;
mod incremental;
pub mod keepalived;
mod model;
mod notice;
mod placement;
mod toml;
mod validate;
pub mod vrrp;

use std::path::Path;

pub use emit::emit;
pub use error::{ConfigErrors, Diagnostic, Severity};
pub use host::{HostView, SystemHost};
pub use incremental::ParseMemo;
pub use keepalived::{Format, Loaded};
pub use model::{
    BackupXdp, Config, DEFAULT_FLOW_TABLE_SIZE, DEFAULT_LB_ALGO, DEFAULT_MAX_REALS,
    DEFAULT_MAX_SERVICES, DEFAULT_SYN_FLOOD_THRESHOLD, DEFAULT_UDP_FLOW_TIMEOUT, DEFAULT_WEIGHT,
    DataplaneSettings, FLOW_TABLE_SIZE_LIMITS, LbKind, Location, MAX_PERSISTENCE_TIMEOUT_SECS,
    MAX_REALS_LIMITS, MAX_SERVICES_LIMITS, MAX_WEIGHT, Protocol, RealForwarding, RealServer,
    SCHEDULERS, ScriptUserSetting, ServiceForwarding, Spans, Tunnel, TunnelError,
    UDP_FLOW_TIMEOUT_LIMITS_SECS, UnknownProtocol, VirtualServer, VirtualServerKey,
    host_prefix_len, not_a_host_address, unspecified,
};
pub use notice::notices;
pub use placement::{needs_ipvs, prefers_ipvs};
pub use validate::validate;

/// Which front end reads a file (`--format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatChoice {
    /// Detect from the content (and the `.conf` extension).
    #[default]
    Auto,
    /// Native TOML (docs/config.md).
    Toml,
    /// keepalived.conf (docs/keepalived.md).
    Keepalived,
}

/// Whether the keepalived front end's warnings (keywords accepted but not acted on) are errors
/// (`--strict`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strictness {
    #[default]
    Lenient,
    Strict,
}

impl From<bool> for Strictness {
    fn from(strict: bool) -> Self {
        if strict { Strictness::Strict } else { Strictness::Lenient }
    }
}

/// The one way a configuration file is read (`lb check`, `lb convert`, `lb run`, reloads): the
/// file once, with the front end `format` names or, for [`FormatChoice::Auto`], the one its
/// content (or, when that says nothing, a `.conf` name) calls for (see [`keepalived::detect`]);
/// then validated for `host`, with the notices of the model and the keepalived front end's
/// warnings.
///
/// # Errors
/// Every problem found, located; an unreadable file is one error at 1:1; with
/// [`Strictness::Strict`], the keepalived warnings too.
pub fn load(
    path: &Path,
    format: FormatChoice,
    host: &dyn HostView,
    strictness: Strictness,
) -> Result<Loaded, ConfigErrors> {
    load_with(path, format, host, strictness, None)
}

/// [`load`] for a file read again and again (the agent's start and reloads): a TOML file's
/// `[[virtual_server]]` blocks that did not change since the last read through `memo` are not
/// parsed again. The result, errors included, is [`load`]'s.
///
/// # Errors
/// As [`load`].
pub fn load_reusing(
    path: &Path,
    format: FormatChoice,
    host: &dyn HostView,
    strictness: Strictness,
    memo: &mut ParseMemo,
) -> Result<Loaded, ConfigErrors> {
    load_with(path, format, host, strictness, Some(memo))
}

fn load_with(
    path: &Path,
    format: FormatChoice,
    host: &dyn HostView,
    strictness: Strictness,
    memo: Option<&mut ParseMemo>,
) -> Result<Loaded, ConfigErrors> {
    let bytes = read_file(path)?;
    let format = match format {
        // A valid file (the usual case) is checked as UTF-8 without building a lossy copy.
        FormatChoice::Auto => match std::str::from_utf8(&bytes) {
            Ok(text) => keepalived::detect(path, text),
            Err(_) => keepalived::detect(path, &String::from_utf8_lossy(&bytes)),
        },
        FormatChoice::Toml => Format::Toml,
        FormatChoice::Keepalived => Format::Keepalived,
    };
    match format {
        Format::Keepalived => {
            let strict = strictness == Strictness::Strict;
            keepalived::parse(&String::from_utf8_lossy(&bytes), path, host, strict)
        }
        Format::Toml => {
            let text = String::from_utf8(bytes).map_err(|e| {
                // Point at the first bad byte: everything before it is valid text we can count in.
                let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let valid = String::from_utf8_lossy(valid);
                let at = error::LineIndex::new(&valid).location(valid.len());
                Diagnostic::error(path, at, "file is not valid UTF-8")
            })?;
            let config = match memo {
                Some(memo) => parse_toml_reusing(&text, path, host, memo)?,
                None => parse_toml(&text, path, host)?,
            };
            let notices = notices(&config);
            Ok(Loaded { config, format: Format::Toml, warnings: Vec::new(), notices })
        }
    }
}

/// The bytes of the configuration file at `path`: a regular file of at most
/// [`file::MAX_FILE_BYTES`].
///
/// # Errors
/// One error at 1:1 saying why the file was not read.
fn read_file(path: &Path) -> Result<Vec<u8>, Diagnostic> {
    file::read(path, file::MAX_FILE_BYTES).map_err(|e| {
        Diagnostic::error(path, Location::new(1, 1), format!("cannot read configuration file: {e}"))
    })
}

/// Parses and validates native configuration `text`; `source` names it in errors.
///
/// # Errors
/// Every problem found, in file order; only the syntax errors when `text` is not valid TOML.
pub fn parse_toml(text: &str, source: &Path, host: &dyn HostView) -> Result<Config, ConfigErrors> {
    let (config, errors) = toml::parse(text, source);
    validated(config, errors, host)
}

/// [`parse_toml`], reusing the blocks of `memo` that did not change (see [`load_reusing`]).
///
/// # Errors
/// As [`parse_toml`].
pub fn parse_toml_reusing(
    text: &str,
    source: &Path,
    host: &dyn HostView,
    memo: &mut ParseMemo,
) -> Result<Config, ConfigErrors> {
    match incremental::parse(text, source, memo) {
        Some(config) => validated(config, Vec::new(), host),
        None => parse_toml(text, source, host),
    }
}

/// `config` as parsed with its front end's `errors`, then validated for `host`.
fn validated(
    config: Config,
    mut errors: Vec<Diagnostic>,
    host: &dyn HostView,
) -> Result<Config, ConfigErrors> {
    errors.extend(validate(&config, host));
    if errors.is_empty() {
        Ok(config)
    } else {
        // Stable: errors at the same place keep the order they were found in.
        errors.sort_by_key(Diagnostic::location);
        Err(ConfigErrors(errors))
    }
}

/// Helpers shared by the scenario tests of the submodules.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{Config, ConfigErrors, HostView};

    /// A host where every interface exists: for configs written for other hosts.
    pub(crate) struct AnyHost;

    impl HostView for AnyHost {
        fn interface_exists(&self, _: &str) -> bool {
            true
        }
    }

    /// A host with `eth0` and `eth1` only, whose addresses are 198.51.100.2, 2001:db8:ffff::1
    /// and 2001:db8::2 (198.51.100.1 is the router of the `[bgp]` examples), with routes to
    /// everything but 2001:db8:dead::/48.
    pub(crate) struct FakeHost;

    impl HostView for FakeHost {
        fn has_route(&self, address: std::net::IpAddr) -> bool {
            !matches!(address, std::net::IpAddr::V6(a) if a.segments()[..3] == [0x2001, 0xdb8, 0xdead])
        }

        fn interface_exists(&self, name: &str) -> bool {
            matches!(name, "eth0" | "eth1")
        }

        fn own_addresses(&self) -> std::io::Result<Vec<std::net::IpAddr>> {
            Ok(vec![
                [198, 51, 100, 2].into(),
                [0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1].into(),
                [0x2001, 0xdb8, 0, 0, 0, 0, 0, 2].into(),
            ])
        }
    }

    /// A document from its lines, so tests can be indented and line `n` is `lines[n - 1]`.
    pub(super) fn doc(lines: &[&str]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    /// (name, base document, lines after it, expected message part, expected line:col).
    pub(super) type Scenario = (
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
        &'static str,
        &'static str,
    );

    /// Each scenario's base document and lines, read by the TOML front end on [`FakeHost`], must
    /// fail with exactly its one error, at its place.
    pub(super) fn assert_toml_scenarios(scenarios: &[Scenario]) {
        for &(name, base, extra, expected, at) in scenarios {
            let text = doc(&[base, extra].concat());
            let result = super::parse_toml(&text, std::path::Path::new("test.toml"), &FakeHost);
            assert_single_error(name, result, expected, at);
        }
    }

    /// Asserts that `result` failed with exactly one error, containing `expected` and located at
    /// `at` ("line:col").
    pub(super) fn assert_single_error(
        name: &str,
        result: Result<Config, ConfigErrors>,
        expected: &str,
        at: &str,
    ) {
        let errors = match result {
            Ok(config) => panic!("{name}: expected an error, got {config:#?}"),
            Err(errors) => errors,
        };
        assert_eq!(errors.len(), 1, "{name}: expected one error, got:\n{errors}");
        let error = &errors.0[0];
        assert!(
            error.message.contains(expected),
            "{name}: `{}` does not contain `{expected}`",
            error.message
        );
        assert_eq!(error.location().to_string(), at, "{name}: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{FakeHost, doc};
    use super::*;

    #[test]
    fn all_errors_of_a_file_are_reported_in_file_order() {
        let text = doc(&[
            "[[virtual_server]]",
            "vip = '192.0.2.300'",
            "port = 80",
            "interface = 'eth0'",
            "[[virtual_server]]",
            "vip = '192.0.2.101'",
            "port = 80",
            "interface = 'eth0'",
            "[[virtual_server.real_server]]",
            "address = '192.0.2.11'",
            "weigth = 2",
            "[[virtual_server]]",
            "vip = '192.0.2.102'",
            "port = 80",
            "interface = 'eth9'",
        ]);
        let errors = parse_toml(&text, Path::new("lb.toml"), &FakeHost).unwrap_err();
        assert_eq!(
            errors.to_string(),
            [
                "lb.toml:2:7: `vip` must be an IP address, found \"192.0.2.300\"",
                "lb.toml:11:1: unknown key `weigth` in [[virtual_server.real_server]]; did you mean `weight`?",
                "lb.toml:15:13: interface `eth9` does not exist on this host",
            ]
            .join("\n")
        );
    }

    /// The reference's examples are what operators copy: each must be valid as written.
    #[test]
    fn examples_in_the_reference_are_valid() {
        let reference = include_str!("../../../docs/config.md");
        let blocks: Vec<&str> = reference
            .split("```toml\n")
            .skip(1)
            .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
            .collect();
        assert!(!blocks.is_empty(), "no TOML examples found in docs/config.md");
        for block in blocks {
            if let Err(errors) = parse_toml(block, Path::new("docs/config.md"), &FakeHost) {
                panic!("{errors}\nin:\n{block}");
            }
        }
    }

    /// The toml crate recurses into arrays and inline tables; it stops at its own depth limit
    /// (80), which must hold for every way of nesting, as a located error on a test thread's
    /// stack (2 MiB, as small as the agent's reload thread).
    #[test]
    fn deep_toml_nesting_is_a_located_error() {
        let deep = 100_000;
        let cases = [
            ("arrays", format!("a = {}{}\n", "[".repeat(deep), "]".repeat(deep))),
            ("inline tables", format!("a = {}1{}\n", "{b = ".repeat(deep), "}".repeat(deep))),
            (
                "arrays of inline tables",
                format!("a = {}{}\n", "[{b = ".repeat(deep), "}]".repeat(deep)),
            ),
            ("dotted keys", format!("{} = 1\n", vec!["a"; deep].join("."))),
            ("table header", format!("[{}]\n", vec!["a"; deep].join("."))),
            ("unclosed arrays", format!("a = {}\n", "[".repeat(deep))),
        ];
        // 80 deep is read (only the key is unknown), 81 is not.
        let arrays = |n: usize| format!("a = {}{}\n", "[".repeat(n), "]".repeat(n));
        let at_limit = parse_toml(&arrays(80), Path::new("deep.toml"), &FakeHost).unwrap_err();
        assert_eq!(at_limit.to_string(), "deep.toml:1:1: unknown key `a` at top level");
        let beyond = parse_toml(&arrays(81), Path::new("deep.toml"), &FakeHost).unwrap_err();
        assert_eq!(
            beyond.to_string(),
            "deep.toml:1:85: TOML syntax error: cannot recurse further; max recursion depth met"
        );
        for (name, text) in cases {
            let errors = parse_toml(&text, Path::new("deep.toml"), &FakeHost).unwrap_err();
            assert!(
                errors.iter().all(|e| e.line == 1 && e.col >= 1 && e.message.starts_with("TOML")),
                "{name}: {errors}"
            );
        }
    }

    #[test]
    fn syntax_errors_are_reported_up_to_a_thousand() {
        let errors = parse_toml(&"]\n".repeat(1500), Path::new("t.toml"), &FakeHost).unwrap_err();
        assert_eq!(errors.len(), 1001, "{errors}");
        assert_eq!(
            errors.0[1000].to_string(),
            "t.toml:1001:1: 500 more TOML syntax errors from here on are not reported (only the \
             first 1000 are)"
        );
    }

    #[test]
    fn load_reads_the_file() {
        let tmp = crate::testutil::scratch_dir("lb-config-test-");
        let dir = tmp.path();
        let cases: &[(&str, &[u8], Result<usize, &str>)] = &[
            (
                "ok.toml",
                b"[[virtual_server]]\nvip = '192.0.2.1'\nport = 80\ninterface = 'eth0'\n",
                Ok(1),
            ),
            ("empty.toml", b"", Ok(0)),
            ("latin1.toml", b"# ok\n# caf\xe9\n", Err("latin1.toml:2:6: file is not valid UTF-8")),
            (
                "syntax.toml",
                b"[[virtual_server]\n",
                Err("syntax.toml:1:18: TOML syntax error: unclosed array table"),
            ),
        ];
        for &(name, content, ref expected) in cases {
            let path = dir.join(name);
            std::fs::write(&path, content).unwrap();
            let result = load(&path, FormatChoice::Toml, &FakeHost, Strictness::Lenient);
            match (result.map(|loaded| loaded.config), expected) {
                (Ok(config), Ok(count)) => {
                    assert_eq!(config.virtual_servers.len(), *count, "{name}");
                    assert_eq!(config.source, path);
                }
                (Err(errors), Err(prefix)) => {
                    let shown = errors.to_string();
                    let shown = shown.strip_prefix(&format!("{}/", dir.display()));
                    assert!(shown.is_some_and(|s| s.starts_with(prefix)), "{name}: {errors}");
                }
                (result, _) => panic!("{name}: unexpected {result:?}"),
            }
        }
        let missing = dir.join("missing.toml");
        let errors =
            load(&missing, FormatChoice::Toml, &FakeHost, Strictness::Lenient).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors.to_string().starts_with(&format!(
                "{}:1:1: cannot read configuration file: ",
                missing.display()
            )),
            "{errors}"
        );
    }
}
