//! What every test of the workspace shares, host and guest alike: the prerequisites of tests
//! that need root or a program (a visible skip on a developer's machine, a failure in CI), where
//! the `lb` binary is, and moving a thread into a network namespace. Unit tests (lb-userspace, as a dev-dependency), the in-guest tests
//! and the namespace-lab tests (lb-tests) all use these, so a skip reads the same everywhere.
//! With the feature `netns`: the one namespace guard of every lab ([`netns::Netns`]) and the
//! child-process guard with command time limits ([`process::Process`]).

#[cfg(feature = "netns")]
mod icmp;
pub mod lab;
#[cfg(feature = "netns")]
pub mod netns;
pub mod packet;
#[cfg(feature = "netns")]
pub mod process;

use std::{
    fs::File,
    io::{self, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

/// Whether a test needing root (network namespaces, BPF, raw sockets) can run: root, and
/// iproute2's `ip` to build labs with. Otherwise it panics in CI (`CI=true`: such tests must fail
/// loudly there) and elsewhere prints `SKIP: ...` and returns false.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root && on_path("ip") {
        return true;
    }
    let why = if root { "iproute2 `ip` is not available" } else { "not running as root" };
    skip_outside_ci(
        &format!("{test}: {why} (needs root: namespaces, CAP_BPF, CAP_NET_ADMIN)"),
        format!(
            "!!! {test}: needs root and iproute2, but {why}. CI=true, so this is a failure, \
             not a skip. !!!"
        ),
    )
}

/// Whether `program` is on PATH. Without it the test fails loudly in CI (`CI=true`: CI installs
/// it through `cargo xtask bootstrap`) and skips elsewhere.
pub fn require_program(test: &str, program: &str) -> bool {
    if on_path(program) {
        return true;
    }
    let msg = format!("{test}: `{program}` is not installed");
    skip_outside_ci(&msg, format!("!!! {msg}. CI=true, so this is a failure. !!!"))
}

/// False (skip, saying `msg`), except in CI (`CI=true`), where a missing prerequisite is a
/// failure: panics with `in_ci`.
fn skip_outside_ci(msg: &str, in_ci: String) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{in_ci}");
    }
    // Straight to fd 2, not eprintln!: libtest captures the macros, and a skip must stay visible.
    let _ = writeln!(std::io::stderr().lock(), "SKIP: {msg}");
    false
}

/// An executable file named `program` in a PATH directory.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(path) = std::env::var_os("PATH") else { return false };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Where the `lb` binary is: `$LB_BIN` (set by `cargo xtask test` and, in the guest, by
/// `cargo xtask vm test`), else the workspace's debug build.
pub fn lb_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LB_BIN") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/lb")
}

/// Where `ip netns` keeps its namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Moves the calling thread into the named network namespace (`ip netns add NAME`): sockets it
/// creates, and processes it starts, live there. Namespaces are per thread.
pub fn enter_netns(name: &str) -> io::Result<()> {
    setns(&File::open(format!("{NETNS_RUN_DIR}/{name}"))?)
}

/// Runs `f` on a scoped thread that joined the named namespace and returns its result; a panic
/// in `f` propagates. Sockets `f` returns stay in that namespace, usable from any thread.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    // Opened here: a missing namespace is the caller's error, not the thread's.
    let file = File::open(format!("{NETNS_RUN_DIR}/{name}"))?;
    std::thread::scope(|s| {
        let handle = s.spawn(move || {
            setns(&file)?;
            drop(file);
            Ok(f())
        });
        handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Moves the calling thread into a fresh network namespace of its own (gone with its last user).
pub fn private_netns() -> io::Result<()> {
    // SAFETY: unshare only affects the calling thread's network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn setns(file: &File) -> io::Result<()> {
    // SAFETY: setns on a namespace file we hold open; CLONE_NEWNET only affects this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_path_only() {
        assert!(on_path("sh"));
        assert!(!on_path("lb-no-such-program-here"));
    }

    #[test]
    fn a_missing_namespace_is_an_error() {
        assert!(in_netns("lb-no-such-namespace", || ()).is_err());
        assert!(enter_netns("lb-no-such-namespace").is_err());
    }

    #[test]
    fn lb_bin_prefers_the_environment() {
        // The variable is read, not set here: tests run in parallel in one process.
        match std::env::var_os("LB_BIN") {
            Some(p) => assert_eq!(lb_bin(), PathBuf::from(p)),
            None => assert!(lb_bin().ends_with("target/debug/lb")),
        }
    }
}
