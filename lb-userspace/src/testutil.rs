//! Helpers for tests that need root and kernel features.

use std::{net::IpAddr, time::Duration};

use crate::config::{
    Location,
    vrrp::{VirtualAddress, VrrpInstance},
};

// One definition for every test kind (unit, lab, guest): a skip reads the same everywhere.
pub use lb_test_support::{require_program, require_root};

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

/// A `vrrp_instance` as the config readers would give it: VRRPv3 on `eth0`, priority 100,
/// advert 1 s, preempting, keepalived's GARP defaults; the VIPs as /32 (IPv4) or /64 (IPv6).
pub fn vrrp_instance(name: &str, vrid: u8, vips: &[&str]) -> VrrpInstance {
    VrrpInstance {
        name: name.into(),
        initial_master: false,
        interface: "eth0".into(),
        virtual_router_id: vrid,
        priority: 100,
        advert_int: Duration::from_secs(1),
        version: 3,
        virtual_ipaddress: vips
            .iter()
            .map(|v| v.parse().expect("a VIP address"))
            .map(|address: IpAddr| VirtualAddress {
                address,
                prefix: if address.is_ipv4() { 32 } else { 64 },
            })
            .collect(),
        preempt: true,
        preempt_delay: Duration::ZERO,
        unicast_peer: vec![],
        unicast_src_ip: None,
        auth_pass: None,
        track_interface: vec![],
        track_script: vec![],
        notify_master: None,
        notify_backup: None,
        notify_fault: None,
        notify_stop: None,
        notify: None,
        garp_master_repeat: 5,
        garp_master_refresh_delay: Duration::from_secs(5),
        lower_prio_no_advert: false,
        skip_check_adv_addr: false,
        location: Location::default(),
    }
}
