//! `cargo xtask bench`: builds the `dataplane` benchmark of lb-userspace with the release profile,
//! runs it (it prints a Markdown table) and leaves the rows in `target/bench.json`. Needs root:
//! the XDP rows run the real program through BPF_PROG_TEST_RUN in a private network namespace.
//! Then the VRRP failover benchmark (`tests/tests/vrrp_failover_bench.rs`: lb pairs and
//! keepalived pairs in network namespaces, the release `lb`) appends its rows to the same file,
//! and so does the BGP scale-out benchmark (`tests/tests/bgp_ecmp.rs`, ignored `bench_` test).
//! Last the agent-scale process measurement (`tests/bench/agent-scale.sh`) prints its lines.
//! BENCHMARKS.md explains each row's method. XDP against kernel IPVS (which this kernel lacks)
//! is `cargo xtask vm bench`, in an emulated guest: minutes of qemu, so not run from here.

use std::{fs, io, process::Command};

use anyhow::{Context as _, bail};

use crate::{run, workspace_root};

pub fn bench() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask bench needs root (BPF_PROG_TEST_RUN, CAP_PERFMON, network namespaces)");
    }
    let root = workspace_root()?;
    let target = crate::target_dir(&root);
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
    // VRRP failover with the release agent. CI=true: a missing keepalived or kernel feature
    // fails instead of skipping.
    run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "lb-userspace",
        "--bin",
        "lb",
    ]))?;
    // target_dir() is absolute: the test runs in its own crate folder.
    let lb = target.join("release").join("lb");
    let rows_before = fs::read_to_string(&json)?.matches("\"name\"").count();
    run(Command::new("cargo")
        .current_dir(&root)
        .args(["test", "--release", "-p", "lb-tests", "--test", "vrrp_failover_bench", "--"])
        .args(["--ignored", "--nocapture", "--test-threads", "1"])
        .env("CI", "true")
        .env("LB_BIN", &lb)
        .env("LB_BENCH_JSON", &json))?;
    if fs::read_to_string(&json)?.matches("\"name\"").count() <= rows_before {
        bail!("the VRRP failover benchmark added no rows to {}", json.display());
    }
    // BGP scale-out: director death → BFD withdraw → traffic through the others; flow spread.
    let rows_before = fs::read_to_string(&json)?.matches("\"name\"").count();
    run(Command::new("cargo")
        .current_dir(&root)
        .args(["test", "--release", "-p", "lb-tests", "--test", "bgp_ecmp", "--"])
        .args(["--ignored", "--nocapture", "--test-threads", "1", "bench_"])
        .env("CI", "true")
        .env("LB_BIN", &lb)
        .env("LB_BENCH_JSON", &json))?;
    if fs::read_to_string(&json)?.matches("\"name\"").count() <= rows_before {
        bail!("the BGP failover benchmark added no rows to {}", json.display());
    }
    // Agent scale as a process (1,000 services x 10 reals, release `lb`): printed, not rows
    // (BENCHMARKS.md "Agent scale" records it).
    run(Command::new("bash").current_dir(&root).arg("tests/bench/agent-scale.sh").arg(&lb))?;
    println!("\nrows written to {}", json.display());
    Ok(())
}
