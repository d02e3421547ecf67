//! Builds the XDP program (`lb-ebpf`, binary `lb-xdp`) with Debian's rustc (the only toolchain here that
//! ships `core` for the bpf target) and bpf-linker from the project's `.tools/` (see `cargo xtask bootstrap`).

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace =
        manifest_dir.parent().ok_or_else(|| anyhow!("lb-userspace has no parent directory"))?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    git_commit(&manifest_dir);

    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // Fast host-only checks (`AYA_BUILD_SKIP=1 cargo check`): embed an empty object; loading then
        // fails with a clear error instead of the build failing.
        std::fs::write(out_dir.join("lb-xdp"), [])?;
        std::fs::write(out_dir.join("lb-probe"), [])?;
        println!("cargo:warning=AYA_BUILD_SKIP set: the lb binary embeds no XDP program");
        return Ok(());
    }

    // aya-build watches lb-ebpf/; the shared types shape the program too.
    println!("cargo:rerun-if-changed={}", workspace.join("lb-common").join("src").display());

    // bpf-linker lives in the project's tool folder; put it first on PATH for the inner cargo.
    let tools_bin = workspace.join(".tools").join("bin");
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![tools_bin.clone()];
    paths.extend(env::split_paths(&path));
    let joined = env::join_paths(paths)?;
    println!("cargo:rerun-if-changed={}", tools_bin.join("bpf-linker").display());

    // SAFETY: build scripts are single-threaded; the inner cargo inherits these.
    unsafe {
        env::set_var("PATH", &joined);
        // aya-ebpf uses an unstable feature; allow it for that crate only. "1" would make aya-build add
        // -Z build-std, which cannot work without rust-src.
        env::set_var("RUSTC_BOOTSTRAP", "aya_ebpf");
    }

    let ebpf_dir = workspace.join("lb-ebpf");
    let ebpf = aya_build::Package {
        name: "lb-ebpf",
        root_dir: ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 workspace path"))?,
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom("debian")).context(
        "building the XDP program failed; run `cargo xtask bootstrap` to install the eBPF toolchain",
    )?;
    Ok(())
}

/// `lb --version` names the commit it was built from: `LB_GIT_COMMIT` is the short hash, or
/// "unknown" outside a git checkout (a source tarball). Rebuilt when HEAD or its branch moves.
fn git_commit(dir: &Path) {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=LB_GIT_COMMIT={commit}");
    // HEAD names the branch; the branch's ref file (or packed-refs) names the commit.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        // A missing file would make cargo rerun this script on every build.
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name])
            && Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
