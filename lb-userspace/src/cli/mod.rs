//! The `lb` command line. Subcommand and flag names are a contract with operators and scripts.

pub mod render;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{control::DEFAULT_SOCKET, dataplane::xdp::XdpModeSetting};

#[derive(Debug, Parser)]
#[command(name = "lb", version, about = "eBPF/XDP direct-routing load balancer director")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the director in the foreground (logs to stderr; SIGTERM/SIGINT detach cleanly).
    Run {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Control socket to listen on.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// XDP attach mode: `auto` uses native mode where the driver supports it properly.
        #[arg(long, value_enum, default_value_t = XdpModeSetting::Auto)]
        xdp_mode: XdpModeSetting,
    },
    /// Validate a configuration file: exit 0 if valid, else print FILE:LINE:COL: message per error.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// List services and their real servers, like `ipvsadm -Ln`.
    Backends {
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the running agent's configuration file and apply it (same as SIGHUP). A config
    /// with errors is refused and the running one kept.
    Reload {
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Show the agent's dataplane (interfaces, XDP mode, program id) and global counters.
    Status {
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// Notices `lb check` prints for a valid config: things that work, but not as the words suggest.
/// The rules live with the config ([`crate::config::notices`]); this renders them as lines.
pub fn check_notices(config: &crate::config::Config) -> Vec<String> {
    crate::config::notices(config).iter().map(ToString::to_string).collect()
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
            (&["lb", "run", "-c", "x.toml", "--xdp-mode", "turbo"], false),
            (&["lb", "run"], false),
            (&["lb", "check", "-c", "x.toml"], true),
            (&["lb", "backends"], true),
            (&["lb", "backends", "--json", "--socket", "/tmp/s"], true),
            (&["lb", "status", "--json"], true),
            (&["lb", "reload"], true),
            (&["lb", "reload", "--socket", "/tmp/s"], true),
            (&["lb", "frobnicate"], false),
        ];
        for (argv, ok) in cases {
            assert_eq!(Cli::try_parse_from(*argv).is_ok(), *ok, "{argv:?}");
        }
    }
}
