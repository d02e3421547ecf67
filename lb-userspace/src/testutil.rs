//! Helpers for tests that need root and kernel features.

/// True when the test can run. Without root it fails loudly in CI (`CI=true`) and skips elsewhere.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let msg = format!("{test}: needs root (CAP_BPF, CAP_NET_ADMIN)");
    skip_outside_ci(&msg, format!("{msg}; CI must run as root"))
}

/// True when `program` is on PATH. Without it the test fails loudly in CI (`CI=true`: CI installs
/// it through `cargo xtask bootstrap`) and skips elsewhere.
pub fn require_program(test: &str, program: &str) -> bool {
    use crate::config::{HostView as _, SystemHost};
    if SystemHost.has_program(program) {
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

/// Removes capabilities from the calling thread's effective set (capabilities are per thread), e.g.
/// to load BPF the way an agent without CAP_PERFMON would.
pub fn drop_effective_caps(caps: &[u32]) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const V3: u32 = 0x2008_0522;
    let mut hdr = Header { version: V3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header read/write two data structs.
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()), 0, "capget");
        for &c in caps {
            data[(c / 32) as usize].effective &= !(1 << (c % 32));
        }
        assert_eq!(libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()), 0, "capset");
    }
}

/// A fresh folder `<temp>/<prefix>XXXXXX`, removed with everything in it when the guard drops
/// (also when the test panics).
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("creating a temporary folder")
}
