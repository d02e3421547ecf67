//! The agent's log: human text or JSON lines on stderr. Under journald (`JOURNAL_STREAM` set, as
//! systemd does for a service's stdout/stderr) journald adds the time itself and reads the
//! priority from an sd-daemon `<N>` prefix, so text lines carry that prefix, no timestamp and no
//! colours. Elsewhere colours are used only when stderr is a terminal.

use std::{fmt, io::IsTerminal as _};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    EnvFilter,
    fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter, format::Writer},
    registry::LookupSpan,
};

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (`level`, `message`, `target`, fields).
    Json,
}

/// `--log-level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// How the log is written, resolved from the flags and the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// Filter directives (`info`, `lb=debug,warn`, ...).
    pub filter: String,
    /// stderr goes to journald: no timestamp, sd-daemon priority prefixes on text lines.
    pub journald: bool,
    /// ANSI colours (text only, never under journald).
    pub ansi: bool,
}

impl LogSettings {
    /// `--log-level` wins over `RUST_LOG` (the command line is the more deliberate choice);
    /// `RUST_LOG` over the default `info`.
    pub fn resolve(
        format: LogFormat,
        level: Option<LogLevel>,
        rust_log: Option<&str>,
        journal_stream: Option<&str>,
        stderr_is_terminal: bool,
    ) -> LogSettings {
        let filter = match (level, rust_log.map(str::trim).filter(|s| !s.is_empty())) {
            (Some(l), _) => l.directive().to_owned(),
            (None, Some(env)) => env.to_owned(),
            (None, None) => "info".to_owned(),
        };
        let journald = journal_stream.is_some_and(|s| !s.is_empty());
        let ansi = format == LogFormat::Text && !journald && stderr_is_terminal;
        LogSettings { format, filter, journald, ansi }
    }

    /// From this process's environment and stderr.
    pub fn from_env(format: LogFormat, level: Option<LogLevel>) -> LogSettings {
        let rust_log = std::env::var("RUST_LOG").ok();
        let journal = std::env::var("JOURNAL_STREAM").ok();
        LogSettings::resolve(
            format,
            level,
            rust_log.as_deref(),
            journal.as_deref(),
            std::io::stderr().is_terminal(),
        )
    }
}

/// Whether this process's stderr goes to journald (for messages written without the log).
pub fn under_journald() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some_and(|s| !s.is_empty())
}

/// The sd-daemon priority of a level (syslog numbers).
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Prefixes every line of an event with its `<N>` priority, so journald files a multi-line
/// message under one priority too.
struct SdPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for SdPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let p = priority(*event.metadata().level());
        for l in line.lines() {
            writeln!(writer, "<{p}>{l}")?;
        }
        Ok(())
    }
}

/// The subscriber for `settings`, writing to `writer` (stderr in the agent; a buffer in tests).
pub fn subscriber<W>(settings: &LogSettings, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // A bad RUST_LOG must not stop the agent: fall back to `info`.
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match (settings.format, settings.journald) {
        (LogFormat::Json, false) => Box::new(builder.json().flatten_event(true).finish()),
        // JSON stays pure JSON (no prefix) for log shippers; journald keeps the time.
        (LogFormat::Json, true) => {
            Box::new(builder.json().flatten_event(true).without_time().finish())
        }
        (LogFormat::Text, false) => Box::new(builder.with_ansi(settings.ansi).finish()),
        (LogFormat::Text, true) => {
            let format = tracing_subscriber::fmt::format().without_time().with_ansi(false);
            Box::new(builder.with_ansi(false).event_format(SdPriority(format)).finish())
        }
    }
}

/// Installs the process-wide log (once, before the agent starts).
pub fn init(settings: &LogSettings) {
    use tracing_subscriber::util::SubscriberInitExt as _;
    // Already installed (never in the binary): keep the first.
    let _ = subscriber(settings, std::io::stderr).try_init();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer that keeps everything written, for reading back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn capture(settings: &LogSettings) -> String {
        let buf = Buf::default();
        let sub = subscriber(settings, buf.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::error!(real = "192.0.2.11:80", "real down: connection refused");
            tracing::warn!("a warning");
            tracing::info!("line one\nline two");
            tracing::debug!("details");
        });
        let bytes = buf.0.lock().expect("buf").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn resolve_table() {
        use LogFormat::*;
        // (format, --log-level, RUST_LOG, JOURNAL_STREAM, tty) -> (filter, journald, ansi)
        type Case<'a> = (
            LogFormat,
            Option<LogLevel>,
            Option<&'a str>,
            Option<&'a str>,
            bool,
            &'a str,
            bool,
            bool,
        );
        let cases: &[Case] = &[
            (Text, None, None, None, true, "info", false, true),
            (Text, None, None, None, false, "info", false, false),
            (Text, None, Some("lb=debug"), None, false, "lb=debug", false, false),
            (Text, Some(LogLevel::Warn), Some("lb=debug"), None, false, "warn", false, false),
            (Text, None, Some(" "), Some("8:123"), true, "info", true, false),
            (Json, Some(LogLevel::Debug), None, None, true, "debug", false, false),
            (Text, None, None, Some(""), true, "info", false, true),
        ];
        for &(format, level, rust_log, journal, tty, filter, journald, ansi) in cases {
            let s = LogSettings::resolve(format, level, rust_log, journal, tty);
            assert_eq!(
                (s.filter.as_str(), s.journald, s.ansi),
                (filter, journald, ansi),
                "{format:?} {level:?} {rust_log:?} {journal:?} tty={tty}"
            );
        }
    }

    #[test]
    fn journald_text_has_priorities_no_time_no_colours() {
        let s =
            LogSettings::resolve(LogFormat::Text, Some(LogLevel::Debug), None, Some("8:1"), true);
        let out = capture(&s);
        assert!(!out.contains('\x1b'), "escape codes under journald: {out:?}");
        let lines: Vec<&str> = out.lines().collect();
        let prefixes: Vec<&str> = lines.iter().map(|l| &l[..3]).collect();
        assert_eq!(prefixes, ["<3>", "<4>", "<6>", "<6>", "<7>"], "{out}");
        for l in &lines {
            // Text lines start with the level right after the prefix: no timestamp.
            let rest = l[3..].trim_start();
            assert!(
                ["ERROR", "WARN", "INFO", "DEBUG", "line two"].iter().any(|p| rest.starts_with(p)),
                "timestamp or junk before the level: {l:?}"
            );
        }
        assert!(out.contains("real down: connection refused"), "{out}");
    }

    #[test]
    fn plain_text_off_a_terminal_has_time_but_no_colours() {
        let s = LogSettings::resolve(LogFormat::Text, None, None, None, false);
        let out = capture(&s);
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(!out.contains("details"), "debug filtered at info: {out}");
        let first = out.lines().next().expect("a line");
        assert!(first.starts_with(|c: char| c.is_ascii_digit()), "timestamp first: {first}");
    }

    #[test]
    fn json_lines_parse_with_level_and_message() {
        for journal in [None, Some("8:1")] {
            let s = LogSettings::resolve(LogFormat::Json, None, None, journal, true);
            let out = capture(&s);
            let mut n = 0;
            for l in out.lines() {
                let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
                assert!(v["level"].is_string(), "{l}");
                assert!(v["message"].is_string(), "{l}");
                assert_eq!(v.get("timestamp").is_some(), journal.is_none(), "{l}");
                n += 1;
            }
            assert_eq!(n, 3, "error, warn, info: {out}");
            assert!(out.contains("\"real\":\"192.0.2.11:80\""), "fields kept: {out}");
        }
    }
}
