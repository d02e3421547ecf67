//! `cargo xtask fuzz [--time S] [TARGET…]`: runs the cargo-fuzz (libFuzzer) targets in `fuzz/`,
//! each for S seconds, and fails if any of them crashes (panic, sanitizer report, timeout, OOM),
//! printing the input that did it.
//!
//! - cargo-fuzz is installed into the project's `.tools/` when missing; the targets build with the
//!   nightly toolchain, in `fuzz/target/`. Without a nightly toolchain (it cannot be downloaded on
//!   the project's machines, where only package registries are reachable) they build with the
//!   toolchain `cargo xtask` runs with and `RUSTC_BOOTSTRAP=1`, which accepts the same sanitizer
//!   flags (its `rust-std` ships the sanitizer runtimes). The build includes the eBPF
//!   object (lb-userspace's build script builds it as for any other build).
//! - Corpora live in `fuzz/corpus/TARGET/` and grow from run to run. Every run first copies in the
//!   seeds: `fuzz/seeds/TARGET/` (captured VRRP frames, control requests, XDP frames) and the
//!   project's own examples (examples/*.toml, the TOML and keepalived.conf blocks of the docs, the
//!   keepalived.conf fixtures), so the corpora follow them.
//! - The `xdp` target runs the XDP program through BPF_PROG_TEST_RUN and needs root: without it,
//!   it fails when `CI=true` and is skipped (with a note) otherwise.
//! - A crash input is kept in `fuzz/artifacts/TARGET/`; `cargo fuzz run TARGET PATH` (with
//!   `RUSTUP_TOOLCHAIN=nightly` and `.tools/bin` on PATH) replays it, `cargo fuzz tmin` minimizes it.
//! - `cargo xtask test` (CI) runs every target for [`CI_SECONDS`] through [`ci`]: one build for
//!   all of them, libFuzzer's progress lines kept back (a failing target's last lines are shown).

use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::SystemTime,
};

use anyhow::{Context as _, bail};

use crate::{run, workspace_root};

/// Every target, in the order they run when none is named.
pub const TARGETS: &[&str] = &[
    "config_toml",
    "config_keepalived",
    "vrrp_packet",
    "vrrp_frame",
    "control_request",
    "sync_decode",
    "xdp",
];

/// The cargo-fuzz release the project's `.tools/` gets.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Per-input time limit: an input taking this long is a finding (libFuzzer's default of 20 minutes
/// would never fire within a run). Not lower: under the sanitizers, a keepalived.conf made of one
/// 4 KiB unknown keyword takes seconds (the "did you mean" suggestions).
const INPUT_TIMEOUT_SECS: u32 = 30;

/// Seconds per target in `cargo xtask test`. The build dominates the step (about 7 min cold on
/// 2 cores, once for all targets); 20 s each adds 2 min and reaches tens of thousands of inputs
/// even for the slowest targets (config_keepalived, xdp). `LB_FUZZ_SECS` overrides it.
pub const CI_SECONDS: u64 = 20;

/// Lines of a failing target's output shown when its progress is kept back: from the first line
/// of libFuzzer's or a sanitizer's report (the panic message, the stack, the input's path) at
/// most [`REPORT_LINES`], else the last [`TAIL_LINES`].
const TAIL_LINES: usize = 60;
const REPORT_LINES: usize = 400;

/// Where a failure report starts in a target's output.
fn starts_report(line: &str) -> bool {
    ["panicked at", "==ERROR:", "ERROR: libFuzzer", "deadly signal", "SUMMARY: "]
        .iter()
        .any(|m| line.contains(m))
}

/// What one target's run came to.
struct Outcome {
    target: &'static str,
    result: Result<Stats, String>,
}

#[derive(Default)]
struct Stats {
    runs: u64,
    execs_per_sec: u64,
    corpus: usize,
}

pub fn fuzz(seconds: u64, names: &[String]) -> anyhow::Result<()> {
    let outcomes = run_all(seconds, names, false)?;
    let crashed = table(&outcomes);
    if !crashed.is_empty() {
        bail!(
            "fuzz target(s) failed: {}; see fuzz/artifacts/ and fuzz/README.md to reproduce",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// The fuzz step of `cargo xtask test`: every target for `LB_FUZZ_SECS` (default
/// [`CI_SECONDS`]) seconds, quietly; `0` skips the step. Returns the targets that ran clean and
/// those that failed (their crash inputs are printed).
pub fn ci() -> anyhow::Result<(u64, u64)> {
    let seconds = match std::env::var("LB_FUZZ_SECS") {
        Ok(v) => v.trim().parse().with_context(|| format!("LB_FUZZ_SECS={v:?}: not a number"))?,
        Err(_) => CI_SECONDS,
    };
    if seconds == 0 {
        eprintln!("xtask: SKIP the fuzz targets (LB_FUZZ_SECS=0)");
        return Ok((0, 0));
    }
    let started = std::time::Instant::now();
    let outcomes = run_all(seconds, &[], true)?;
    let crashed = table(&outcomes);
    let ok = outcomes.len() - crashed.len();
    println!(
        "fuzzing: {} targets for {seconds} s each, build included {} s; {ok} clean, {} failed",
        outcomes.len(),
        started.elapsed().as_secs(),
        crashed.len()
    );
    if !crashed.is_empty() {
        eprintln!(
            "xtask: fuzz target(s) failed: {}; fuzz/README.md says how to reproduce and minimize",
            crashed.join(", ")
        );
    }
    Ok((ok as u64, crashed.len() as u64))
}

/// Prints the summary table; returns the targets that failed.
fn table(outcomes: &[Outcome]) -> Vec<&'static str> {
    println!("\n{:<18} {:>10} {:>8} {:>7}  result", "target", "runs", "exec/s", "corpus");
    let mut crashed = Vec::new();
    for o in outcomes {
        match &o.result {
            Ok(s) => println!(
                "{:<18} {:>10} {:>8} {:>7}  ok",
                o.target, s.runs, s.execs_per_sec, s.corpus
            ),
            Err(e) => {
                println!("{:<18} {:>10} {:>8} {:>7}  FAILED: {e}", o.target, "-", "-", "-");
                crashed.push(o.target);
            }
        }
    }
    crashed
}

/// Builds the targets once and runs each for `seconds`. `quiet` keeps libFuzzer's progress
/// lines back.
fn run_all(seconds: u64, names: &[String], quiet: bool) -> anyhow::Result<Vec<Outcome>> {
    let root = workspace_root()?;
    let targets = select(names)?;
    let is_root = {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    };
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if targets.contains(&"xdp") && !is_root && ci {
        bail!("the xdp fuzz target needs root (BPF_PROG_TEST_RUN); CI must run as root");
    }
    let cargo_fuzz = CargoFuzz { bin: install_cargo_fuzz(&root)?, nightly: has_nightly() };
    let toolchain = if cargo_fuzz.nightly {
        "nightly"
    } else {
        "no nightly toolchain: the default one with RUSTC_BOOTSTRAP=1"
    };
    eprintln!("xtask: building the fuzz targets ({toolchain}, cargo-fuzz {CARGO_FUZZ_VERSION})");
    run(cargo_fuzz_cmd(&root, &cargo_fuzz).arg("build"))?;

    let mut outcomes = Vec::new();
    for &target in &targets {
        if target == "xdp" && !is_root {
            eprintln!("xtask: SKIP fuzz target xdp: needs root (BPF_PROG_TEST_RUN)");
            continue;
        }
        let corpus = seed_corpus(&root, target)?;
        eprintln!("xtask: fuzzing {target} for {seconds} s (corpus {})", corpus.display());
        let result = run_target(&root, &cargo_fuzz, target, &corpus, seconds, quiet)?;
        outcomes.push(Outcome { target, result });
    }
    Ok(outcomes)
}

/// The named targets (all when none), checked against [`TARGETS`].
fn select(names: &[String]) -> anyhow::Result<Vec<&'static str>> {
    if names.is_empty() {
        return Ok(TARGETS.to_vec());
    }
    names
        .iter()
        .map(|n| {
            TARGETS.iter().copied().find(|t| t == n).with_context(|| {
                format!("unknown fuzz target `{n}`; targets: {}", TARGETS.join(", "))
            })
        })
        .collect()
}

/// cargo-fuzz and how to run it.
struct CargoFuzz {
    bin: PathBuf,
    /// A nightly toolchain is installed; else the sanitizer flags need `RUSTC_BOOTSTRAP=1`.
    nightly: bool,
}

/// cargo-fuzz wants nightly's unstable flags (sanitizers, SanitizerCoverage). Nothing is
/// installed: toolchains cannot be downloaded here.
fn has_nightly() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn install_cargo_fuzz(root: &Path) -> anyhow::Result<PathBuf> {
    let tools = root.join(".tools");
    let bin = tools.join("bin").join("cargo-fuzz");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} into {}", tools.display());
    run(Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION, "--root"])
        .arg(&tools))?;
    Ok(bin)
}

/// `cargo fuzz` on the nightly toolchain, from the workspace root (cargo-fuzz finds `fuzz/`).
fn cargo_fuzz_cmd(root: &Path, cargo_fuzz: &CargoFuzz) -> Command {
    let mut cmd = Command::new(&cargo_fuzz.bin);
    cmd.arg("fuzz").current_dir(root);
    // cargo-fuzz runs `cargo` from PATH: make that rustup's proxy on nightly, whatever toolchain
    // (and target dir) `cargo xtask` itself runs with.
    if cargo_fuzz.nightly {
        cmd.env("RUSTUP_TOOLCHAIN", "nightly");
    } else {
        cmd.env("RUSTC_BOOTSTRAP", "1");
    }
    for var in ["RUSTC", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO", "CARGO_TARGET_DIR"] {
        cmd.env_remove(var);
    }
    let tools_bin = root.join(".tools").join("bin");
    let mut path = vec![tools_bin];
    path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    cmd.env("PATH", std::env::join_paths(path).unwrap_or_else(|_| OsString::from("/usr/bin")));
    cmd
}

/// Creates `fuzz/corpus/TARGET/` and copies the target's seeds into it.
fn seed_corpus(root: &Path, target: &str) -> anyhow::Result<PathBuf> {
    let corpus = root.join("fuzz").join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let own = root.join("fuzz").join("seeds").join(target);
    for path in files(&own, |_| true)? {
        seeds.push((file_name(&path), std::fs::read(&path)?));
    }
    match target {
        "config_toml" => {
            for path in files(&root.join("examples"), |p| has_ext(p, "toml"))? {
                seeds.push((format!("examples-{}", file_name(&path)), std::fs::read(&path)?));
            }
            seeds.extend(doc_blocks(root, &["toml"])?);
        }
        "config_keepalived" => {
            let fixtures = root
                .join("lb-userspace")
                .join("src")
                .join("config")
                .join("keepalived")
                .join("fixtures");
            for path in files(&fixtures, |p| has_ext(p, "conf"))? {
                seeds.push((format!("fixtures-{}", file_name(&path)), std::fs::read(&path)?));
            }
            seeds.extend(doc_blocks(root, &["keepalived", "conf"])?);
        }
        _ => {}
    }
    for (name, bytes) in seeds {
        let path = corpus.join(format!("seed-{name}"));
        if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(corpus)
}

/// The files directly in `dir` that `keep` accepts, sorted; none when `dir` does not exist.
fn files(dir: &Path, keep: impl Fn(&Path) -> bool) -> anyhow::Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.is_file() && keep(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|e| e == ext)
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The fenced code blocks in README.md and docs/*.md whose language is one of `langs`, named
/// after their file and position.
fn doc_blocks(root: &Path, langs: &[&str]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut docs = vec![root.join("README.md")];
    docs.extend(files(&root.join("docs"), |p| has_ext(p, "md"))?);
    let mut out = Vec::new();
    for doc in docs {
        let Ok(text) = std::fs::read_to_string(&doc) else { continue };
        let mut block: Option<String> = None;
        let mut n = 0;
        for line in text.lines() {
            match &mut block {
                None => {
                    if let Some(lang) = line.trim_start().strip_prefix("```")
                        && langs.contains(&lang.trim())
                    {
                        block = Some(String::new());
                    }
                }
                Some(b) if line.trim_start().starts_with("```") => {
                    n += 1;
                    out.push((format!("{}-{n}", file_name(&doc)), std::mem::take(b).into_bytes()));
                    block = None;
                }
                Some(b) => {
                    b.push_str(line);
                    b.push('\n');
                }
            }
        }
    }
    Ok(out)
}

/// Runs one target; `Err` describes a crash (with the path of the input that caused it).
fn run_target(
    root: &Path,
    cargo_fuzz: &CargoFuzz,
    target: &str,
    corpus: &Path,
    seconds: u64,
    quiet: bool,
) -> anyhow::Result<Result<Stats, String>> {
    let artifacts = root.join("fuzz").join("artifacts").join(target);
    let started = SystemTime::now();
    // Targets that need a scratch folder (config_keepalived's empty include directory) make it
    // under TMPDIR: give each run its own, removed when the run ends.
    let scratch = tempfile::Builder::new()
        .prefix(&format!("lb-fuzz-{target}-"))
        .tempdir()
        .context("creating the fuzz run's temporary folder")?;
    let mut cmd = cargo_fuzz_cmd(root, cargo_fuzz);
    cmd.env("TMPDIR", scratch.path());
    cmd.args(["run", target]).arg(corpus).arg("--").args([
        format!("-max_total_time={seconds}"),
        format!("-timeout={INPUT_TIMEOUT_SECS}"),
        "-print_final_stats=1".to_owned(),
    ]);
    if target == "xdp" {
        // BPF_PROG_TEST_RUN takes at most a page of packet data.
        cmd.arg("-max_len=2048");
    }
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting cargo fuzz run {target}"))?;
    let stderr = child.stderr.take().context("cargo fuzz stderr")?;
    let mut stats = Stats::default();
    let mut written = Vec::new();
    let mut tail = std::collections::VecDeque::new();
    let mut report: Vec<String> = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if quiet {
            if (!report.is_empty() || starts_report(&line)) && report.len() < REPORT_LINES {
                report.push(line.clone());
            }
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.clone());
        } else {
            eprintln!("{line}");
        }
        let number = |prefix: &str| line.strip_prefix(prefix).and_then(|n| n.trim().parse().ok());
        if let Some(n) = number("stat::number_of_executed_units:") {
            stats.runs = n;
        }
        if let Some(n) = number("stat::average_exec_per_sec:") {
            stats.execs_per_sec = n;
        }
        // libFuzzer: "Test unit written to fuzz/artifacts/TARGET/crash-…"
        if let Some((_, path)) = line.split_once("Test unit written to ") {
            written.push(PathBuf::from(path.trim()));
        }
    }
    let status = child.wait()?;
    stats.corpus = files(corpus, |_| true)?.len();
    if status.success() {
        return Ok(Ok(stats));
    }
    if quiet {
        eprintln!("xtask: what fuzz target {target} printed about the failure:");
        let shown: Vec<&String> =
            if report.is_empty() { tail.iter().collect() } else { report.iter().collect() };
        for line in shown {
            eprintln!("{line}");
        }
    }
    // Inputs libFuzzer kept for this failure: the ones it announced, else any new artifact.
    let mut inputs: Vec<PathBuf> = written.iter().map(|p| absolute(root, p)).collect();
    if inputs.is_empty() {
        inputs = files(&artifacts, |p| {
            std::fs::metadata(p).and_then(|m| m.modified()).is_ok_and(|t| t >= started)
        })?;
    }
    if inputs.is_empty() {
        return Ok(Err(format!("cargo fuzz run {target} failed ({status}) without a crash input")));
    }
    for input in &inputs {
        eprintln!("xtask: fuzz target {target} crashed; input: {}", input.display());
    }
    let list: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    Ok(Err(format!("crash input {}", list.join(", "))))
}

fn absolute(root: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() { path.to_path_buf() } else { root.join(path) }
}
