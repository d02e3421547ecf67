//! `cargo xtask test`: every check CI runs, in the order that fails fastest.

use std::process::Command;

use crate::{run, workspace_root};

pub fn test(extra: &[String]) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let cargo = || {
        let mut c = Command::new("cargo");
        c.current_dir(&root);
        c
    };
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "lb-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Integration tests drive the real binaries.
    run(cargo().args(["build", "--workspace", "--exclude", "lb-ebpf", "--bins"]))?;
    let lb = root.join("target").join("debug").join("lb");
    run(cargo()
        .args(["test", "--workspace", "--exclude", "lb-ebpf"])
        .args(extra)
        .env("LB_BIN", &lb))
}
