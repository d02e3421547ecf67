//! `cargo xtask bench`: builds the `dataplane` benchmark of lb-userspace with the release profile,
//! runs it (it prints a Markdown table) and leaves the rows in `target/bench.json`. Needs root:
//! the XDP rows run the real program through BPF_PROG_TEST_RUN in a private network namespace.
//! BENCHMARKS.md explains each row's method.

use std::{fs, io, process::Command};

use anyhow::{Context as _, bail};

use crate::{run, workspace_root};

pub fn bench() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask bench needs root (BPF_PROG_TEST_RUN, CAP_PERFMON, network namespaces)");
    }
    let root = workspace_root()?;
    let target = root.join("target");
    fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let json = target.join("bench.json");
    // A stale file must not pass for this run's results.
    match fs::remove_file(&json) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", json.display())),
    }
    // `cargo bench` builds with the bench profile, which is the release profile.
    run(Command::new("cargo")
        .current_dir(&root)
        .args(["bench", "-p", "lb-userspace", "--bench", "dataplane", "--", "--json"])
        .arg(&json))?;
    if !json.is_file() {
        bail!("the benchmark finished without writing {}", json.display());
    }
    println!("\nrows written to {}", json.display());
    Ok(())
}
