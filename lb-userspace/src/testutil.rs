//! Helpers for tests that need root and kernel features.

/// True when the test can run. Without root it fails loudly in CI (`CI=true`) and skips elsewhere.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let msg = format!("{test}: needs root (CAP_BPF, CAP_NET_ADMIN)");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}; CI must run as root");
    }
    eprintln!("SKIP: {msg}");
    false
}

/// Moves the calling thread into a fresh network namespace, so attaching XDP or adding addresses
/// touches nothing outside the test. Its `lo` has ifindex 1, which is what BPF_PROG_TEST_RUN uses.
pub fn private_netns() {
    // SAFETY: unshare only affects the calling thread's network namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
}
