//! Developer and CI tasks. `cargo xtask demo` and `cargo xtask test` are the README's two commands.

mod bench;
mod bootstrap;
mod deb;
mod demo;
mod fuzz;
mod linerate;
mod test;
mod vm;

use std::{
    path::PathBuf,
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh machine needs to build (Debian packages, bpf-linker). Idempotent.
    Bootstrap,
    /// Build, start a throw-away DR topology in network namespaces, send requests through the VIP.
    Demo {
        /// Requests to send through the VIP.
        #[arg(long, default_value_t = 30)]
        requests: u32,
        /// Three directors behind a BIRD router sharing one VIP over BGP + ECMP, instead of the
        /// VRRP pair.
        #[arg(long)]
        ecmp: bool,
    },
    /// Run every check and test: fmt, clippy -D warnings, unit, BPF_PROG_TEST_RUN, netns integration.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Measure the XDP fast path (ns/packet, BPF_PROG_TEST_RUN) and Maglev table builds; needs root.
    /// Prints a Markdown table and writes target/bench.json (see BENCHMARKS.md).
    Bench {
        /// Instead: frames per second forwarded through a veth in native XDP mode (lb next to a
        /// MAC-swapping XDP_TX ceiling and the kernel's forwarding); target/bench-line-rate.json.
        #[arg(long)]
        line_rate: bool,
    },
    /// Run the cargo-fuzz targets in fuzz/ (nightly), each for --time seconds; fails on any crash
    /// and prints the input. Targets: config_toml, config_keepalived, vrrp_packet, vrrp_frame,
    /// control_request, sync_decode, xdp (needs root). See fuzz/README.md.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        time: u64,
        /// Targets to run (all when none).
        targets: Vec<String>,
        /// Run exactly the fuzz step of `cargo xtask test`: every target for LB_FUZZ_SECS
        /// (default 20) seconds, libFuzzer's progress kept back.
        #[arg(long, conflicts_with_all = ["time", "targets"])]
        ci: bool,
    },
    /// Build the Debian package target/debian/lb_VERSION_amd64.deb (release build of lb).
    Deb {
        /// Package the debug build instead (faster; what `cargo xtask test` checks).
        #[arg(long)]
        debug: bool,
        /// Then install it into a clean Debian bookworm root (mmdebstrap) and check it; needs root.
        #[arg(long)]
        check: bool,
    },
    /// Boot a Debian 12 kernel under qemu for what this kernel lacks (IPVS); cached in .cache/vm.
    #[command(subcommand)]
    Vm(vm::Vm),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Bootstrap => bootstrap::bootstrap(),
        Task::Demo { requests, ecmp: false } => {
            bootstrap::bootstrap().and_then(|()| demo::demo(requests))
        }
        Task::Demo { requests, ecmp: true } => {
            bootstrap::bootstrap().and_then(|()| demo::demo_ecmp(requests))
        }
        Task::Test { args } => bootstrap::bootstrap().and_then(|()| test::test(&args)),
        Task::Bench { line_rate: false } => bootstrap::bootstrap().and_then(|()| bench::bench()),
        Task::Bench { line_rate: true } => {
            bootstrap::bootstrap().and_then(|()| linerate::line_rate())
        }
        Task::Fuzz { ci: true, .. } => bootstrap::bootstrap().and_then(|()| match fuzz::ci()? {
            (_, 0) => Ok(()),
            (_, failed) => bail!("{failed} fuzz target(s) crashed (inputs above)"),
        }),
        Task::Fuzz { time, targets, .. } => {
            bootstrap::bootstrap().and_then(|()| fuzz::fuzz(time, &targets))
        }
        Task::Deb { debug, check } => {
            let profile = if debug { deb::Profile::Debug } else { deb::Profile::Release };
            bootstrap::bootstrap().and_then(|()| deb::deb(profile, check))
        }
        Task::Vm(cmd) => vm::vm(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.parent().map(PathBuf::from).context("xtask has no parent directory")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace, where cargo runs it)
/// or the workspace's `target/`.
pub fn target_dir(root: &std::path::Path) -> PathBuf {
    target_dir_from(root, std::env::var_os("CARGO_TARGET_DIR"))
}

fn target_dir_from(root: &std::path::Path, var: Option<std::ffi::OsString>) -> PathBuf {
    // An absolute value replaces root in join().
    var.filter(|d| !d.is_empty()).map_or_else(|| root.join("target"), |d| root.join(d))
}

/// Runs a command, inheriting stdio, failing on a non-zero exit.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    #[test]
    fn target_dir_follows_cargo_target_dir() {
        let root = Path::new("/src/lb");
        let cases = [
            (None, "/src/lb/target"),
            (Some(""), "/src/lb/target"),
            (Some("build"), "/src/lb/build"),
            (Some("/var/cache/cargo"), "/var/cache/cargo"),
        ];
        for (var, want) in cases {
            let got = super::target_dir_from(root, var.map(Into::into));
            assert_eq!(got, PathBuf::from(want), "{var:?}");
        }
    }
}
