//! `cargo xtask test`: every check CI runs, in the order that fails fastest.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{run, workspace_root};

pub fn test(extra: &[String]) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let cargo = || {
        let mut c = Command::new("cargo");
        c.current_dir(&root);
        c
    };
    // The eBPF crate only builds for the bpf target (from lb-userspace's build script).
    let all = ["--workspace", "--exclude", "lb-ebpf"];
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().arg("clippy").args(all).args(["--all-targets", "--", "-D", "warnings"]))?;
    // Integration tests drive the real binaries.
    run(cargo().arg("build").args(all).arg("--bins"))?;
    let lb = crate::target_dir(&root).join("debug").join("lb");
    let mut test = cargo();
    // Every test binary runs, also after a failure, so one run shows every failure.
    test.arg("test").args(all).args(["--all-targets", "--no-fail-fast"]).args(extra);
    test.env("LB_BIN", &lb);
    let (mut passed, mut failed) = run_counting(&mut test)?;
    // The Debian package of the debug build, installed into a clean bookworm root.
    let (deb_passed, deb_failed) = crate::deb::ci(&root, &lb)?;
    passed += deb_passed;
    failed += deb_failed;
    // Kernel IPVS exists only in the Debian guest kernel under qemu (this kernel has none).
    let (vm_passed, vm_failed) = crate::vm::run_tests(std::time::Duration::from_secs(600))?;
    passed += vm_passed;
    failed += vm_failed;
    // Last: the nightly sanitizer build of fuzz/ is the slowest step. Each target counts as a
    // test; a crash fails the run, its input's path printed.
    let (fuzz_passed, fuzz_failed) = crate::fuzz::ci()?;
    passed += fuzz_passed;
    failed += fuzz_failed;
    println!("{passed} passed, {failed} failed");
    if passed == 0 {
        bail!("no test ran");
    }
    if deb_failed > 0 {
        bail!("{deb_failed} package check(s) failed (see the `deb: FAILED` lines)");
    }
    if fuzz_failed > 0 {
        bail!("{fuzz_failed} fuzz target(s) crashed (inputs above)");
    }
    Ok(())
}

/// Runs `cargo test`, passing its output through, and adds up its "test result" lines.
fn run_counting(cmd: &mut Command) -> anyhow::Result<(u64, u64)> {
    let mut child = cmd.stdout(Stdio::piped()).spawn().context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, " passed");
            failed += count(rest, " failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo test failed ({passed} passed, {failed} failed)");
    }
    Ok((passed, failed))
}

/// The number before `label` in "ok. 9 passed; 0 failed; ...".
fn count(summary: &str, label: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(label.trim_start_matches(' '))
                .map(str::trim)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn reads_cargo_test_summaries() {
        let cases = [
            (
                "ok. 9 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
                9,
                0,
            ),
            ("FAILED. 36 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out", 36, 2),
        ];
        for (line, p, f) in cases {
            assert_eq!((count(line, " passed"), count(line, " failed")), (p, f), "{line}");
        }
    }
}
