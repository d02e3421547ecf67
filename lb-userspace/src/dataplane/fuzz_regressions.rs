//! Inputs found by the fuzz targets in `fuzz/` (`cargo xtask fuzz`), fed to the same code they
//! failed in, so they stay fixed.

use std::net::IpAddr;

use aya::programs::{TestRun as _, TestRunOptions};
use lb_test_support::packet::checksum;

use super::{
    Dataplane as _,
    xdp::{XdpDataplane, XdpLimits, XdpModeSetting},
};
use crate::{
    config::Protocol,
    fixture,
    testutil::{private_netns, require_root},
};

const XDP_TX: u32 = 3;

/// Runs `frame` through the XDP program (BPF_PROG_TEST_RUN) with one service, TCP/80 on
/// 192.0.2.100 with ICMP echo answered; `None` when not root (see `require_root`).
fn xdp_run(frame: &[u8]) -> Option<(u32, Vec<u8>)> {
    if !require_root("xdp fuzz regressions") {
        return None;
    }
    private_netns();
    let real = fixture::r4(11, 80, 1);
    let service = fixture::service(IpAddr::V4(fixture::VIP), 80, Protocol::Tcp, vec![real], 251);
    let mut desired = fixture::desired(vec![service], vec![]);
    desired.globals.hash_seed = 1;
    let limits = XdpLimits { max_services: 4, max_reals: 8, ring_entries: 4 * 251, flows: 1024 };
    let mut dp = XdpDataplane::load(XdpModeSetting::Generic, limits).expect("load XDP program");
    dp.apply(&desired).expect("apply");
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    let res = dp.program().expect("program").test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    Some((res.return_value, out))
}

/// fuzz target `xdp`: an ICMP echo request to a VIP whose message is all zeros but for its type
/// (code 0, identifier 0, sequence 0, no data; checksum 0xf7ff, correct). The reply's checksum is
/// updated incrementally (RFC 1624 eqn. 3) from 0xf7ff to 0x0000, but over an all-zero message
/// only 0xffff verifies: receivers drop the reply as corrupt. (Any other message is fine, as is
/// 0xffff in place of a computed 0x0000.)
#[test]
fn icmp_echo_reply_to_an_all_zero_request_has_a_valid_checksum() {
    let frame: [u8; 42] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0xd1, 0x02, 0x00, 0x00, 0x00, 0x00, 0xc1, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x40, 0x01, 0x8e, 0x41, 0xc6, 0x33, 0x64, 0x07,
        0xc0, 0x00, 0x02, 0x64, 0x08, 0x00, 0xf7, 0xff, 0x00, 0x00, 0x00, 0x00,
    ];
    assert_eq!(checksum(&frame[34..]), 0, "the request's ICMP checksum is correct");
    let Some((verdict, out)) = xdp_run(&frame) else { return };
    assert_eq!(verdict, XDP_TX, "the echo request is answered");
    assert_eq!(out[34], 0, "an echo reply");
    assert_eq!(
        checksum(&out[34..]),
        0,
        "ICMP checksum of the reply: {:#06x}",
        u16::from_be_bytes([out[36], out[37]])
    );
}
