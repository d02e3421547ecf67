//! Makes a fresh Debian machine able to build and test the project. Idempotent: every step checks
//! first, so a second run only spends the seconds the checks take.
//!
//! Steps: Debian packages (Debian's rustc ships `core` for the bpf target; LLVM 22 for bpf-linker;
//! iproute2/ethtool/curl/tcpdump for tests), `rustup toolchain link debian /usr` (aya-build runs the
//! eBPF build with that toolchain), and bpf-linker 0.13 built against LLVM 22 into `.tools/`.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::{run, workspace_root};

/// Debian packages the build and the tests need.
const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "clang-22",
    "lld-22",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "bpftool",
    "iproute2",
    "ethtool",
    "tcpdump",
    "curl",
    // VRRP interoperability tests run Debian's keepalived as the peer and tshark as the oracle.
    "keepalived",
    "tshark",
    // BGP scale-out: BIRD 2 is lb's BGP speaker, and the router of the ECMP labs.
    "bird2",
    // The Debian package is checked in a clean bookworm root (cargo xtask deb --check).
    "mmdebstrap",
    // The status page is tested in a real headless browser, driven over WebDriver.
    "chromium",
    "chromium-driver",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn bootstrap() -> anyhow::Result<()> {
    let root = workspace_root()?;
    apt_packages()?;
    link_debian_toolchain()?;
    bpf_linker(&root)?;
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]).output().is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
    })
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    let lock = "DPkg::Lock::Timeout=600";
    run(Command::new("apt-get").args(["-o", lock, "update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["-o", lock, "install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get install (run as root)")
}

fn link_debian_toolchain() -> anyhow::Result<()> {
    let Ok(out) = Command::new("rustup").args(["toolchain", "list"]).output() else {
        // No rustup: cargo is Debian's own, which builds the eBPF crate directly.
        return Ok(());
    };
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("debian")) {
        return Ok(());
    }
    run(Command::new("rustup").args(["toolchain", "link", "debian", "/usr"]))
}

fn bpf_linker(root: &Path) -> anyhow::Result<()> {
    let tools = root.join(".tools");
    let bin = tools.join("bin").join("bpf-linker");
    if let Ok(out) = Command::new(&bin).arg("--version").output()
        && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 2 minutes, once)"
    );
    let mut cmd = Command::new("cargo");
    // Use rustup's stable when present (Debian's cargo also works; rustup's shadows it on PATH).
    if Command::new("rustup").arg("--version").output().is_ok() {
        cmd.arg("+stable");
    }
    cmd.args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked"])
        .args(["--no-default-features", "--features", "llvm-22", "--root"])
        .arg(&tools)
        .env("LLVM_PREFIX", "/usr/lib/llvm-22");
    run(&mut cmd)?;
    if !bin.exists() {
        bail!("bpf-linker was not installed at {}", bin.display());
    }
    Ok(())
}
