//! The `lb` command line. Subcommand and flag names are a contract with operators and scripts.

pub mod check;
pub mod config_man;
pub mod convert;
#[cfg(test)]
mod golden;
pub mod render;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use std::net::{IpAddr, SocketAddr};

use crate::config::FormatChoice;
use crate::{
    control::DEFAULT_SOCKET,
    dataplane::xdp::XdpModeSetting,
    net::realserver::{self, Action as RealserverAction},
    overrides::{ServiceSelector, parse_real},
};

/// `lb --version`: the release and the commit it was built from (build.rs), e.g.
/// `lb 0.1.0 (git abc1234)`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("LB_GIT_COMMIT"), ")");

/// Section of the command's man pages: an administrator's daemon (8), which also keeps them clear
/// of other packages' `lb(1)`.
pub const MAN_SECTION: &str = "8";

#[derive(Debug, Parser)]
#[command(name = "lb", version = VERSION, about = "eBPF/XDP direct-routing load balancer director")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the director in the foreground (logs to stderr; SIGTERM/SIGINT detach cleanly).
    Run {
        /// Configuration file (TOML or keepalived.conf).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Control socket to listen on.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Which dataplane forwards: `auto` runs on XDP what it serves and gives kernel IPVS the
        /// rest (NAT, tunnels, connection-counting schedulers), or everything when XDP cannot
        /// load; `xdp` and `ipvs` use only one.
        #[arg(long, value_enum, default_value_t = crate::dataplane::select::Mode::Auto)]
        dataplane: crate::dataplane::select::Mode,
        /// Leave this agent's IPVS services in the kernel when it stops (by default they are
        /// removed, as keepalived does; other IPVS rules are never touched).
        #[arg(long)]
        keep_ipvs_on_stop: bool,
        /// XDP attach mode: `auto` uses native mode where the driver supports it properly.
        #[arg(long, value_enum, default_value_t = XdpModeSetting::Auto)]
        xdp_mode: XdpModeSetting,
        /// Serve Prometheus metrics over HTTP on this address (e.g. 127.0.0.1:9100).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<SocketAddr>,
        /// Serve the live status page (and its JSON, /api/v1/status) over HTTP on this address,
        /// e.g. 127.0.0.1:8080. Read-only, but it shows the whole setup: keep it local.
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
        /// Config format: detected from the content by default.
        #[arg(long, value_enum, default_value_t = FormatChoice::Auto)]
        format: FormatChoice,
        /// Refuse a keepalived.conf that has warnings (keywords accepted but not acted on).
        #[arg(long)]
        strict: bool,
        /// Pin the XDP program's maps and links in this bpffs folder, so a killed or restarted
        /// agent leaves forwarding running and the next one adopts it. Default: /sys/fs/bpf/lb
        /// when /sys/fs/bpf is a bpf filesystem (else the agent says so and runs unpinned).
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
        /// Do not pin: the dataplane stops with the agent (tests, ad-hoc runs).
        #[arg(long, conflicts_with_all = ["pin_dir", "state_file"])]
        no_pin: bool,
        /// Where the agent keeps its bookkeeping for adoption (default: dataplane.json next to
        /// the control socket).
        #[arg(long, value_name = "FILE")]
        state_file: Option<PathBuf>,
        /// Log lines as human text or JSON objects (on stderr; under journald text lines carry
        /// sd-daemon `<N>` priorities and no timestamp).
        #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
        log_format: crate::logging::LogFormat,
        /// Least severe level logged; overrides `RUST_LOG` (default: `RUST_LOG`, else `info`).
        #[arg(long, value_enum, value_name = "LEVEL")]
        log_level: Option<crate::logging::LogLevel>,
    },
    /// Validate a configuration file: exit 0 if valid, else print FILE:LINE:COL: message per error
    /// (on stderr).
    Check {
        /// Configuration file (TOML or keepalived.conf).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Config format: detected from the content by default.
        #[arg(long, value_enum, default_value_t = FormatChoice::Auto)]
        format: FormatChoice,
        /// Treat warnings (keepalived keywords accepted but not acted on) as errors.
        #[arg(long)]
        strict: bool,
        /// Print one JSON document on stdout: `valid`, `errors` and `warnings` (each `file`,
        /// `line`, `col`, `message`), `notices`, `summary`. The exit code is the same.
        #[arg(long)]
        json: bool,
    },
    /// List services and their real servers, like `ipvsadm -Ln`.
    Backends {
        /// Control socket of the running agent.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Counters in ipvsadm's `-Ln --stats` layout.
        #[arg(long, conflicts_with = "json")]
        stats: bool,
    },
    /// Re-read the running agent's configuration file and apply it (same as SIGHUP). A config
    /// with errors is refused and the running one kept.
    Reload {
        /// Control socket of the running agent.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Stop sending new flows to a real (weight 0, state `drain`); established flows continue.
    /// Lasts until `lb undrain` or the next reload.
    Drain {
        /// VIP:PORT, or VIP:PORT/tcp|udp when both protocols are served ([VIP]:PORT for IPv6),
        /// or fwmark:N.
        service: ServiceSelector,
        /// REAL:PORT ([REAL]:PORT for IPv6).
        #[arg(value_parser = parse_real)]
        real: SocketAddr,
        /// Control socket of the running agent.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Undo `lb drain`.
    Undrain {
        /// VIP:PORT, or VIP:PORT/tcp|udp ([VIP]:PORT for IPv6), or fwmark:N.
        service: ServiceSelector,
        /// REAL:PORT ([REAL]:PORT for IPv6).
        #[arg(value_parser = parse_real)]
        real: SocketAddr,
        /// Control socket of the running agent.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Set a real's weight (0-65535) until the next reload.
    Weight {
        /// VIP:PORT, or VIP:PORT/tcp|udp ([VIP]:PORT for IPv6), or fwmark:N.
        service: ServiceSelector,
        /// REAL:PORT ([REAL]:PORT for IPv6).
        #[arg(value_parser = parse_real)]
        real: SocketAddr,
        /// New weight, 0-65535 (0 drains).
        #[arg(value_parser = clap::value_parser!(u32).range(0..=65535))]
        weight: u32,
        /// Control socket of the running agent.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Started by an unpinned agent with `speaker = "external"`: reads the `export_table` numbers
    /// the agent writes on stdin; when stdin ends (the agent exited or died), removes lb's VIP
    /// routes from the last one, so a crashed director stops being announced.
    #[command(hide = true)]
    ExportTableWatchdog,
    /// Write man pages for lb and every subcommand (section 8) and lb.toml(5) into DIR (used
    /// by packaging).
    #[command(hide = true)]
    Man {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the shell completion script for SHELL (bash, zsh, fish...) on stdout.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a configuration file (TOML or keepalived.conf) as native TOML, with a note for each
    /// warning; exit 1 with every error, located, if it is invalid.
    Convert {
        /// Configuration file (TOML or keepalived.conf).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Config format: detected from the content by default.
        #[arg(long, value_enum, default_value_t = FormatChoice::Auto)]
        format: FormatChoice,
    },
    /// Make this host a real server of a DR director, or undo it: `up` adds the VIPs to `lo` and
    /// keeps the host from answering ARP for them (saving the settings it changes), `down`
    /// removes them and restores the settings. With `--tunnel` (a TUN director) `up` also sets
    /// up the kernel's decapsulation. Running either twice changes nothing more.
    Realserver {
        /// `up` or `down`.
        #[arg(value_enum)]
        action: RealserverAction,
        /// A virtual IP, IPv4 or IPv6; repeat the option for several.
        #[arg(long = "vip", value_name = "ADDR", required = true)]
        vips: Vec<IpAddr>,
        /// The interface that holds the VIPs.
        #[arg(long, value_name = "IFNAME", default_value = realserver::DEFAULT_DEV)]
        dev: String,
        /// Where `up` saves what `down` restores.
        #[arg(long, value_name = "PATH", default_value = realserver::DEFAULT_STATE)]
        state: PathBuf,
        /// Also decapsulate what a TUN director sends (its `tun_type`): `tunl0`/`ip6tnl0`,
        /// a FOU port, or `gre0`/`ip6gre0`, with `rp_filter` off.
        #[arg(long, value_enum, value_name = "TYPE")]
        tunnel: Option<realserver::TunnelKind>,
        /// The UDP port of `--tunnel gue` (the service's `tun_port`).
        #[arg(long, value_name = "N")]
        gue_port: Option<u16>,
        /// The tunnel's outer family when it is not the VIP's (the real's address in the
        /// director's configuration): IPv6 in IPv4 on `sit0`, IPv4 in IPv6 on `ip6tnl0` in mode
        /// `any`.
        #[arg(long, value_enum, value_name = "4|6")]
        outer: Option<realserver::Outer>,
    },
    /// List the flow table (which real each connection goes to), like `ipvsadm -Lnc`.
    Flows {
        /// Control socket of the running agent.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Only flows to this service: VIP:PORT ([VIP]:PORT for IPv6).
        #[arg(long, value_name = "VIP:PORT")]
        vip: Option<SocketAddr>,
        /// List at most N entries (the agent stops walking the table there).
        #[arg(long, value_name = "N", default_value_t = crate::control::proto::FLOWS_DEFAULT_LIMIT)]
        limit: u64,
    },
    /// BGP maintenance: `withdraw` stops announcing a VIP (all without one) so the routers send
    /// this director no new traffic, while it keeps forwarding what still arrives; `announce`
    /// undoes it. Lasts until the next reload.
    Bgp {
        /// `withdraw` or `announce`.
        #[arg(value_enum)]
        action: BgpAction,
        /// One VIP; every VIP when left out.
        vip: Option<IpAddr>,
        /// Control socket of the running agent.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Show the agent's dataplane (interfaces, XDP mode, program id) and global counters.
    Status {
        /// Control socket of the running agent.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// What a command prints, as `main` writes it out: `lb check` and `lb convert` build it in full
/// so the golden-output test can run them in-process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Printed {
    pub stdout: String,
    pub stderr: String,
    /// The process exit code.
    pub code: u8,
}

impl Printed {
    /// Writes stdout and stderr out and returns the exit code.
    pub fn emit(&self) -> std::process::ExitCode {
        use std::io::Write as _;
        // A closed pipe (`lb check | head`) is not worth a panic: the exit code still tells.
        let _ = std::io::stdout().lock().write_all(self.stdout.as_bytes());
        let _ = std::io::stderr().lock().write_all(self.stderr.as_bytes());
        std::process::ExitCode::from(self.code)
    }
}

/// `lb bgp ACTION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BgpAction {
    Withdraw,
    Announce,
}

impl BgpAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BgpAction::Withdraw => "withdraw",
            BgpAction::Announce => "announce",
        }
    }
}

/// Notices `lb check` prints for a valid config: things that work, but not as the words suggest.
/// The rules live with the config ([`crate::config::notices`]); this renders them as lines.
pub fn check_notices(config: &crate::config::Config) -> Vec<String> {
    crate::config::notices(config).iter().map(ToString::to_string).collect()
}

/// Renders `lb.8` and `lb-SUBCOMMAND.8` for every visible subcommand, and `lb.toml.5` (from the
/// configuration reference), into `dir`.
pub fn write_man_pages(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    use clap::CommandFactory as _;
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut written = Vec::new();
    let mut render = |name: String, cmd: clap::Command| -> std::io::Result<()> {
        let path = dir.join(format!("{name}.{MAN_SECTION}"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd.name(name.clone())).section(MAN_SECTION).render(&mut buf)?;
        std::fs::write(&path, buf)?;
        written.push(path);
        Ok(())
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render(format!("lb-{}", sub.get_name()), sub.clone())?;
    }
    render("lb".to_owned(), cmd)?;
    let path = dir.join("lb.toml.5");
    std::fs::write(&path, config_man::page(env!("CARGO_PKG_VERSION")))?;
    written.push(path);
    Ok(written)
}

/// Writes the completion script for `shell` to `out`.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    use clap::CommandFactory as _;
    clap_complete::generate(shell, &mut Cli::command(), "lb", out);
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_contract() {
        Cli::command().debug_assert();
        // Scenario table: argv → parses?
        let cases: &[(&[&str], bool)] = &[
            (&["lb", "run", "-c", "x.toml"], true),
            (
                &["lb", "run", "--config", "x.toml", "--socket", "/tmp/s", "--xdp-mode", "generic"],
                true,
            ),
            (&["lb", "run", "-c", "x.toml", "--xdp-mode", "native"], true),
            (&["lb", "run", "-c", "x.toml", "--metrics", "127.0.0.1:9100"], true),
            (&["lb", "run", "-c", "x.toml", "--metrics", "localhost"], false),
            (&["lb", "run", "-c", "x.toml", "--http", "127.0.0.1:8080"], true),
            (&["lb", "run", "-c", "x.toml", "--http", "[::1]:8080"], true),
            (&["lb", "run", "-c", "x.toml", "--http", "8080"], false),
            (&["lb", "run", "-c", "x.toml", "--xdp-mode", "turbo"], false),
            (&["lb", "run"], false),
            (&["lb", "check", "-c", "x.toml"], true),
            (&["lb", "check", "-c", "k.conf", "--format", "keepalived", "--strict"], true),
            (&["lb", "check", "-c", "k.conf", "--format", "yaml"], false),
            (&["lb", "run", "-c", "k.conf", "--format", "keepalived"], true),
            (&["lb", "run", "-c", "x.toml", "--pin-dir", "/sys/fs/bpf/lb"], true),
            (&["lb", "run", "-c", "x.toml", "--state-file", "/run/lb/s.json"], true),
            (&["lb", "run", "-c", "x.toml", "--no-pin"], true),
            (&["lb", "run", "-c", "x.toml", "--no-pin", "--pin-dir", "/sys/fs/bpf/x"], false),
            (&["lb", "run", "-c", "x.toml", "--no-pin", "--state-file", "/run/lb/s.json"], false),
            (&["lb", "backends"], true),
            (&["lb", "backends", "--json", "--socket", "/tmp/s"], true),
            (&["lb", "backends", "--stats"], true),
            (&["lb", "backends", "--stats", "--json"], false),
            (&["lb", "status", "--json"], true),
            (&["lb", "reload"], true),
            (&["lb", "drain", "192.0.2.100:80", "192.0.2.11:80"], true),
            (&["lb", "drain", "192.0.2.100:80/udp", "192.0.2.11:80"], true),
            (&["lb", "undrain", "[2001:db8::1]:80", "[2001:db8::11]:80"], true),
            (&["lb", "weight", "192.0.2.100:80", "192.0.2.11:80", "5"], true),
            (&["lb", "weight", "192.0.2.100:80", "192.0.2.11:80", "70000"], false),
            (&["lb", "weight", "192.0.2.100:80", "192.0.2.11:80", "-1"], false),
            (&["lb", "drain", "192.0.2.100", "192.0.2.11:80"], false),
            (&["lb", "bgp", "withdraw"], true),
            (&["lb", "bgp", "announce", "192.0.2.100", "--socket", "/tmp/s"], true),
            (&["lb", "bgp", "withdraw", "2001:db8::1"], true),
            (&["lb", "bgp", "withdraw", "192.0.2.100:80"], false),
            (&["lb", "bgp", "drop"], false),
            (&["lb", "drain", "192.0.2.100:80", "192.0.2.11"], false),
            (&["lb", "drain", "192.0.2.100:80"], false),
            (&["lb", "reload", "--socket", "/tmp/s"], true),
            (&["lb", "frobnicate"], false),
            (&["lb", "man", "--dir", "/tmp/x"], true),
            (&["lb", "completions", "bash"], true),
            (&["lb", "completions", "zsh"], true),
            (&["lb", "completions", "fish"], true),
            (&["lb", "completions", "tcsh"], false),
            (&["lb", "completions"], false),
            (&["lb", "convert", "-c", "/etc/keepalived/keepalived.conf"], true),
            (&["lb", "convert", "--config", "k.conf", "--format", "keepalived"], true),
            (&["lb", "convert", "-c", "k.conf", "--format", "yaml"], false),
            (&["lb", "convert"], false),
            (&["lb", "realserver", "up", "--vip", "192.0.2.100"], true),
            (&["lb", "realserver", "down", "--vip", "192.0.2.100", "--vip", "2001:db8::100"], true),
            (&["lb", "realserver", "up", "--vip", "192.0.2.100", "--dev", "dummy0"], true),
            (&["lb", "realserver", "up", "--vip", "192.0.2.100", "--state", "/tmp/rs.json"], true),
            (&["lb", "realserver", "up", "--vip", "192.0.2.100", "--tunnel", "gre"], true),
            (
                &[
                    "lb",
                    "realserver",
                    "up",
                    "--vip",
                    "192.0.2.100",
                    "--tunnel",
                    "gue",
                    "--gue-port",
                    "6080",
                ],
                true,
            ),
            (
                &[
                    "lb",
                    "realserver",
                    "up",
                    "--vip",
                    "192.0.2.100",
                    "--tunnel",
                    "ipip",
                    "--outer",
                    "6",
                ],
                true,
            ),
            (&["lb", "realserver", "up", "--vip", "2001:db8::1", "--outer", "5"], false),
            (&["lb", "realserver", "up", "--vip", "192.0.2.100", "--tunnel", "vxlan"], false),
            (&["lb", "realserver", "up"], false),
            (&["lb", "realserver", "sideways", "--vip", "192.0.2.100"], false),
            (&["lb", "realserver", "up", "--vip", "nonsense"], false),
            (&["lb", "realserver", "up", "--vip", "192.0.2.100/32"], false),
        ];
        for (argv, ok) in cases {
            assert_eq!(Cli::try_parse_from(*argv).is_ok(), *ok, "{argv:?}");
        }
    }

    /// The packaged `/etc/lb/lb.toml`: valid as shipped (a director with nothing to do) and, with
    /// its example uncommented, a valid director of one service, two reals and a VRRP instance.
    #[test]
    fn shipped_example_config_is_valid_as_is_and_uncommented() {
        use crate::config::{parse_toml, test_support::FakeHost};
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/lb.toml");
        let text = std::fs::read_to_string(&path).expect("contrib/lb.toml");
        let shipped = parse_toml(&text, &path, &FakeHost).unwrap_or_else(|e| panic!("{e}"));
        assert!(shipped.virtual_servers.is_empty(), "does nothing until edited");
        // Uncomment the example: its lines are "# key = ..." and "# [table]" after the first
        // commented table header.
        let start = text.find("# [[virtual_server]]").expect("a commented example");
        let example: String = text[start..]
            .lines()
            .filter_map(|l| l.strip_prefix("# ").or(if l == "#" { Some("") } else { None }))
            .filter(|l| l.is_empty() || l.starts_with('[') || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let full = format!("{}{example}", &text[..start]);
        let cfg = parse_toml(&full, &path, &FakeHost).unwrap_or_else(|e| panic!("{e}\n{full}"));
        assert_eq!(cfg.virtual_servers.len(), 1, "{full}");
        assert_eq!(cfg.virtual_servers[0].real_servers.len(), 2);
        assert_eq!(cfg.vrrp.instances.len(), 1);
    }

    #[test]
    fn version_names_the_release_and_the_commit() {
        let err = Cli::try_parse_from(["lb", "--version"]).expect_err("--version exits");
        let text = err.to_string();
        let rest = text.trim().strip_prefix(&format!("lb {} (git ", env!("CARGO_PKG_VERSION")));
        let commit = rest.and_then(|r| r.strip_suffix(')')).unwrap_or_else(|| panic!("{text}"));
        let hex = !commit.is_empty() && commit.chars().all(|c| c.is_ascii_hexdigit());
        assert!(hex || commit == "unknown", "{text}");
    }

    #[test]
    fn completions_cover_every_subcommand() {
        for shell in
            [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish]
        {
            let mut out = Vec::new();
            write_completions(shell, &mut out);
            let text = String::from_utf8(out).expect("utf-8");
            for sub in Cli::command().get_subcommands().filter(|s| !s.is_hide_set()) {
                assert!(text.contains(sub.get_name()), "{shell}: no {}", sub.get_name());
            }
        }
    }

    #[test]
    fn every_subcommand_has_help_and_a_man_page() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            assert!(sub.get_about().is_some(), "{} has no help text", sub.get_name());
            for arg in sub.get_arguments().filter(|a| a.get_id() != "help") {
                assert!(
                    arg.get_help().is_some(),
                    "{} {} has no help text",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
        let tmp = crate::testutil::scratch_dir("lb-man-");
        let dir = tmp.path().join("man");
        let pages = write_man_pages(&dir).expect("man pages");
        let names: Vec<String> =
            pages.iter().filter_map(|p| p.file_name()?.to_str().map(str::to_owned)).collect();
        let want = ["lb.8", "lb-run.8", "lb-check.8", "lb-backends.8", "lb-drain.8", "lb-weight.8"];
        for want in want.iter().chain(&["lb-completions.8", "lb.toml.5"]) {
            assert!(names.iter().any(|n| n == want), "missing {want} in {names:?}");
        }
        // Section 1 is another package's `lb` (live-build): nothing of ours may land there.
        assert!(!names.iter().any(|n| n.ends_with(".1")), "{names:?}");
        let run = std::fs::read_to_string(dir.join("lb-run.8")).expect("lb-run.8");
        assert!(run.contains("xdp\\-mode") || run.contains("xdp-mode"), "options documented");
        assert!(run.contains(".TH lb-run 8"), "section 8 header");
    }
}
