//! Notices: things in a valid configuration that work, but not as the words suggest. `lb check`
//! prints them; they never make a configuration invalid. Independent of the front end, like
//! validation, and located the same way.

use std::fmt;
use std::path::PathBuf;

use super::model::{Config, Location, VirtualServer};

/// Maglev keeps every real's share within 1 % of its weight while the table has at least this many
/// slots per real server.
const SLOTS_PER_REAL_FOR_1_PERCENT: u64 = 100;

/// One notice about a configuration, pointing at the setting it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub file: PathBuf,
    /// 1-based.
    pub line: u32,
    /// 1-based, counted in characters.
    pub col: u32,
    pub message: String,
}

impl Notice {
    fn new(config: &Config, at: Location, message: String) -> Self {
        Notice { file: config.source.clone(), line: at.line, col: at.col, message }
    }

    pub fn location(&self) -> Location {
        Location::new(self.line, self.col)
    }
}

impl fmt::Display for Notice {
    /// `FILE:LINE:COL: notice: message`, like errors, so editors can jump to it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: notice: {}", self.file.display(), self.line, self.col, self.message)
    }
}

/// Every notice about `config`, in file order.
pub fn notices(config: &Config) -> Vec<Notice> {
    let mut notices = Vec::new();
    for vs in &config.virtual_servers {
        let key = vs.key();
        let mut notice = |at: Location, message: String| {
            notices.push(Notice::new(config, at, format!("{key}: {message}")));
        };
        if vs.lb_algo != "mh" {
            notice(
                vs.key_locations.lb_algo,
                format!(
                    "scheduler `{}` runs as weighted Maglev (`mh`) on the XDP dataplane",
                    vs.lb_algo
                ),
            );
        }
        if let Some(at) = vs.key_locations.persistence_granularity
            && vs.persistence_timeout.is_none()
        {
            notice(at, "persistence_granularity has no effect without persistence_timeout".into());
        }
        if let Some(message) = small_table(vs) {
            notice(vs.key_locations.table_size, message);
        }
    }
    // Stable: notices at the same place keep the order above.
    notices.sort_by_key(Notice::location);
    notices
}

/// A Maglev table too small for an even spread over the real servers.
fn small_table(vs: &VirtualServer) -> Option<String> {
    let reals = vs.real_servers.len();
    let needed = SLOTS_PER_REAL_FOR_1_PERCENT.saturating_mul(u64::try_from(reals).ok()?);
    (u64::from(vs.table_size) < needed).then(|| {
        format!(
            "table_size {} is below 100 × {reals} real servers: shares may deviate from weights by \
             more than 1%",
            vs.table_size
        )
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::parse_toml;
    use super::super::test_support::{FakeHost, doc};
    use super::*;

    /// Base lines 1-4: a valid IPv4 virtual server on eth0.
    const VS: &[&str] =
        &["[[virtual_server]]", "vip = '192.0.2.100'", "port = 80", "interface = 'eth0'"];

    /// `n` real servers 192.0.2.1.. as inline tables on one line.
    fn reals(n: usize) -> String {
        let reals: Vec<String> =
            (1..=n).map(|i| format!("{{ address = '192.0.2.{i}' }}")).collect();
        format!("real_server = [{}]", reals.join(", "))
    }

    #[test]
    fn scenarios() {
        let three = reals(3);
        // (name, lines after the base virtual server, expected notices)
        let cases: &[(&str, Vec<&str>, &[&str])] = &[
            ("defaults: nothing to say", vec![], &[]),
            (
                "scheduler other than mh",
                vec!["lb_algo = 'wrr'"],
                &["t.toml:5:11: notice: 192.0.2.100:80/tcp: scheduler `wrr` runs as weighted \
                     Maglev (`mh`) on the XDP dataplane"],
            ),
            (
                "sh is not mapped specially",
                vec!["lvs_sched = 'sh'"],
                &["t.toml:5:13: notice: 192.0.2.100:80/tcp: scheduler `sh` runs as weighted \
                     Maglev (`mh`) on the XDP dataplane"],
            ),
            (
                "granularity without timeout",
                vec!["persistence_granularity = '255.255.255.0'"],
                &["t.toml:5:27: notice: 192.0.2.100:80/tcp: persistence_granularity has no \
                     effect without persistence_timeout"],
            ),
            (
                "granularity with a timeout of 0 (no persistence)",
                vec!["persistence_timeout = 0", "persistence_granularity = 24"],
                &["t.toml:6:27: notice: 192.0.2.100:80/tcp: persistence_granularity has no \
                     effect without persistence_timeout"],
            ),
            (
                "granularity with a timeout",
                vec!["persistence_timeout = 300", "persistence_granularity = 24"],
                &[],
            ),
            (
                "small table",
                vec!["table_size = 251", three.as_str()],
                &["t.toml:5:14: notice: 192.0.2.100:80/tcp: table_size 251 is below 100 × 3 \
                     real servers: shares may deviate from weights by more than 1%"],
            ),
            ("table just large enough", vec!["table_size = 509", three.as_str()], &[]),
            (
                "in file order",
                vec!["table_size = 251", "lb_algo = 'rr'", three.as_str()],
                &[
                    "t.toml:5:14: notice: 192.0.2.100:80/tcp: table_size 251 is below 100 × 3 \
                     real servers: shares may deviate from weights by more than 1%",
                    "t.toml:6:11: notice: 192.0.2.100:80/tcp: scheduler `rr` runs as weighted \
                     Maglev (`mh`) on the XDP dataplane",
                ],
            ),
        ];
        for (name, extra, expected) in cases {
            let text = doc(&[VS, extra].concat());
            let config = match parse_toml(&text, Path::new("t.toml"), &FakeHost) {
                Ok(config) => config,
                Err(errors) => panic!("{name}: {errors}"),
            };
            let shown: Vec<String> = notices(&config).iter().map(ToString::to_string).collect();
            assert_eq!(shown, *expected, "{name}");
        }
    }

    #[test]
    fn default_table_needs_656_reals_for_a_notice() {
        let mut config =
            parse_toml(&doc(&[VS, &[reals(1).as_str()]].concat()), Path::new("t.toml"), &FakeHost)
                .unwrap();
        let vs = &mut config.virtual_servers[0];
        let real = vs.real_servers[0].clone();
        vs.real_servers = vec![real.clone(); 655];
        assert!(notices(&config).is_empty());
        config.virtual_servers[0].real_servers.push(real);
        let shown: Vec<String> = notices(&config).iter().map(ToString::to_string).collect();
        // Omitted: located at the section, where the operator would add `table_size`.
        assert_eq!(
            shown,
            ["t.toml:1:1: notice: 192.0.2.100:80/tcp: table_size 65537 is below 100 × 656 real \
              servers: shares may deviate from weights by more than 1%"]
        );
    }
}
