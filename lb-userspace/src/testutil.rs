//! Helpers for tests that need root and kernel features.

// One definition for every test kind (unit, lab, guest): a skip reads the same everywhere.
pub use lb_test_support::{require_program, require_root};

pub use crate::fixture::vrrp_instance;

/// Moves the calling thread into a fresh network namespace, so attaching XDP or adding addresses
/// touches nothing outside the test. Its `lo` has ifindex 1, which is what BPF_PROG_TEST_RUN uses.
pub fn private_netns() {
    lb_test_support::private_netns().expect("unshare(CLONE_NEWNET)");
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
