//! The XDP program's packet parsing and forwarding, run in the kernel through BPF_PROG_TEST_RUN:
//! the real `lb-xdp` object that lb-userspace's build embeds, loaded by
//! `lb::dataplane::xdp::XdpDataplane::load` and programmed by `apply` with the services of the
//! BPF_PROG_TEST_RUN fixtures (`lb::fixture::xdp_services`, feature `test-support`), plus one real
//! behind another interface (a veth) for the redirect path. Needs root; the first input moves the fuzzing
//! thread into a private network namespace (its `lo`, ifindex 1, is the ingress of test runs).
//!
//! Input: one Ethernet frame (14..=2048 bytes; shorter ones are refused by the kernel). A
//! destination MAC whose first byte has the two low bits clear (a globally administered unicast
//! MAC) is replaced by the interface's, so most inputs reach the paths behind the MAC check; the
//! others (group and locally administered MACs) stay as they are.
//!
//! Properties, per frame:
//! - the verdict is XDP_PASS, XDP_DROP, XDP_TX or XDP_REDIRECT, and agrees with the one reason
//!   counter (`lb_common::reason`) the program bumped, by one packet of the frame's length;
//! - a frame passed to the kernel is unchanged;
//! - only frames to the interface's MAC are acted on (forwarded, answered, dropped);
//! - a forwarded frame (XDP_TX/XDP_REDIRECT) has the same length and the same bytes from offset 12
//!   on (DR rewrites only the MACs), a real's MAC as destination and the outgoing interface's as
//!   source;
//! - an ICMP echo reply (the one rewrite allowed beyond the MACs) swaps the MACs and IP addresses
//!   of the request, has a correct IPv4 header checksum, and a correct ICMP checksum whenever the
//!   request had one.
//!
//! The program runs in the kernel, where libFuzzer sees no coverage; what it decided (reason,
//! flow-table events, verdict) is fed back as libFuzzer "extra counters", so inputs that reach a new
//! decision are kept. The flow tables persist across inputs (as in a running director), so a
//! crash may depend on earlier inputs; the reproducer is the last input.
//!
//! `LB_FUZZ_TRACE=1` prints each frame's verdict and reason (e.g. replaying a corpus).
#![no_main]

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};

use aya::programs::{TestRun as _, TestRunOptions};
use lb::config::Protocol;
use lb::dataplane::Dataplane as _;
use lb::dataplane::xdp::{XdpDataplane, XdpLimits, XdpModeSetting};
use lb::desired::Desired;
use lb::fixture::{self, IFACE_MAC, REAL_MAC_PREFIX, VIP, VIP6, r4, r6};
use lb::net::iface::Interface;
use lb_common::{event, reason};
use lb_test_support::packet::checksum;
use libfuzzer_sys::fuzz_target;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const TABLE: u32 = 251;
const MAX_FRAME: usize = 2048;
const VETH: &str = "lbfz0";

/// Decisions of the kernel program as coverage: libFuzzer clears these before every input and
/// treats each non-zero one as a feature (its `__libfuzzer_extra_counters` section).
#[used]
#[unsafe(link_section = "__libfuzzer_extra_counters")]
static EXTRA_COUNTERS: [AtomicU8; 512] = [const { AtomicU8::new(0) }; 512];

fn feature(index: usize) {
    let c = &EXTRA_COUNTERS[index % EXTRA_COUNTERS.len()];
    c.store(c.load(Ordering::Relaxed).saturating_add(1), Ordering::Relaxed);
}

/// The BPF_PROG_TEST_RUN fixtures' services (`lb::fixture::xdp_services`); plus v4 UDP/54 and v6
/// TCP/443 source-hashed, whose reals are behind `tx` (a veth).
fn desired(tx: Option<&Interface>) -> Desired {
    let v4 = IpAddr::V4(VIP);
    let v6 = IpAddr::V6(VIP6);
    let mut services = fixture::xdp_services(TABLE);
    let mut tx_interfaces = Vec::new();
    if let Some(tx) = tx {
        let mut far = r4(31, 54, 1);
        far.ifindex = Some(tx.ifindex);
        services.push(fixture::service(v4, 54, Protocol::Udp, vec![far], TABLE));
        let mut far6 = r6(0x31, 443, 1);
        far6.ifindex = Some(tx.ifindex);
        let mut hashed =
            fixture::service(v6, 443, Protocol::Tcp, vec![far6, r6(0x32, 443, 1)], TABLE);
        hashed.source_hash = true;
        services.push(hashed);
        tx_interfaces.push(tx.clone());
    }
    fixture::desired(services, tx_interfaces)
}

struct State {
    dp: XdpDataplane,
    /// Global counters (packets, bytes) by reason and event counts after the last run.
    last: (Vec<(u64, u64)>, Vec<u64>),
    /// Source MAC of frames leaving through each ifindex.
    iface_macs: Vec<(u32, [u8; 6])>,
    /// `LB_FUZZ_TRACE=1`: print what happened to each frame.
    trace: bool,
}

impl State {
    fn new() -> State {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("the xdp fuzz target needs root (BPF_PROG_TEST_RUN, network namespaces)");
            std::process::exit(2);
        }
        // SAFETY: unshare only changes the calling thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        // Children forked from this thread inherit its namespace.
        let veth = std::process::Command::new("ip")
            .args(["link", "add", VETH, "type", "veth", "peer", "name", "lbfz1"])
            .status()
            .is_ok_and(|s| s.success());
        let tx = if veth { lb::net::iface::lookup(VETH).ok() } else { None };
        if tx.is_none() {
            eprintln!(
                "xdp fuzz: no veth in the private namespace; the redirect path is not fuzzed"
            );
        }
        let d = desired(tx.as_ref());
        let limits =
            XdpLimits { max_services: 32, max_reals: 64, ring_entries: 64 * TABLE, flows: 4096 };
        let mut dp = XdpDataplane::load(XdpModeSetting::Generic, limits).unwrap_or_else(|e| {
            panic!("loading the XDP program (built with AYA_BUILD_SKIP?): {e}")
        });
        dp.apply(&d).expect("programming the maps");
        let iface_macs =
            d.interfaces.iter().chain(&d.tx_interfaces).map(|i| (i.ifindex, i.mac.0)).collect();
        let trace = std::env::var("LB_FUZZ_TRACE").is_ok_and(|v| v == "1");
        let mut state = State { dp, last: (Vec::new(), Vec::new()), iface_macs, trace };
        state.last = state.read_counters();
        state
    }

    fn read_counters(&mut self) -> (Vec<(u64, u64)>, Vec<u64>) {
        let c = self.dp.counters().expect("reading the counters");
        (
            c.global.iter().map(|(_, c)| (c.packets, c.bytes)).collect(),
            c.events.iter().map(|(_, n)| *n).collect(),
        )
    }

    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 256];
        let prog = self.dp.program().expect("the XDP program");
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let res = prog.test_run(opts).unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e}"));
        out.truncate(res.data_size_out as usize);
        (res.return_value, out)
    }
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// What ICMP echo a frame carries, if any: (IPv6, offset of the IP header).
fn echo_kind(f: &[u8], request: bool) -> Option<bool> {
    let v4_type = if request { 8 } else { 0 };
    let v6_type = if request { 128 } else { 129 };
    match f.get(12..14)? {
        [0x08, 0x00] => {
            let ihl = usize::from(f.get(14)? & 0x0f) * 4;
            (f[14] >> 4 == 4 && *f.get(23)? == 1 && *f.get(14 + ihl)? == v4_type).then_some(false)
        }
        [0x86, 0xdd] => (*f.get(20)? == 58 && *f.get(54)? == v6_type).then_some(true),
        _ => None,
    }
}

/// Whether the ICMP (v4) or ICMPv6 checksum of an echo frame verifies, over the message the IP
/// length fields delimit; `None` when they point outside the frame.
fn icmp_checksum_ok(f: &[u8], v6: bool) -> Option<bool> {
    if v6 {
        let len = usize::from(u16::from_be_bytes([f[18], f[19]]));
        let msg = f.get(54..54 + len)?;
        let mut pseudo = Vec::with_capacity(40 + len);
        pseudo.extend_from_slice(&f[22..54]);
        pseudo.extend_from_slice(&(len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(msg);
        Some(checksum(&pseudo) == 0)
    } else {
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
        Some(checksum(f.get(14 + ihl..14 + total)?) == 0)
    }
}

fn check_echo_reply(input: &[u8], out: &[u8]) {
    let v6 = echo_kind(input, true).expect("an echo reply answers an echo request");
    assert_eq!(echo_kind(out, false), Some(v6), "the reply is an echo reply");
    assert_eq!(out.len(), input.len(), "echo reply length");
    assert_eq!(out[0..6], input[6..12], "reply goes back to the sender's MAC");
    assert_eq!(out[6..12], input[0..6], "reply comes from the MAC the request was sent to");
    let (src, dst) = if v6 { (22..38, 38..54) } else { (26..30, 30..34) };
    assert_eq!(out[src.clone()], input[dst.clone()], "reply source is the request destination");
    assert_eq!(out[dst], input[src], "reply destination is the request source");
    if !v6 {
        assert_eq!(checksum(&out[14..34]), 0, "IPv4 header checksum of the echo reply");
    }
    if icmp_checksum_ok(input, v6) == Some(true) {
        assert_eq!(icmp_checksum_ok(out, v6), Some(true), "ICMP checksum of the echo reply");
    }
}

fn l4_class(f: &[u8]) -> usize {
    let proto = match f.get(12..14) {
        Some([0x08, 0x00]) => f.get(23).copied(),
        Some([0x86, 0xdd]) => f.get(20).copied(),
        _ => return 0,
    };
    match proto {
        Some(6) => 1,
        Some(17) => 2,
        Some(1 | 58) => 3,
        Some(44) => 4,
        Some(_) => 5,
        None => 6,
    }
}

fn one(state: &mut State, frame: &[u8]) {
    let (verdict, out) = state.run(frame);
    let now = state.read_counters();
    let (before, before_events) = std::mem::replace(&mut state.last, now.clone());
    let (after, after_events) = now;

    let bumped: Vec<usize> = (0..after.len()).filter(|&i| after[i] != before[i]).collect();
    let [r] = bumped[..] else {
        panic!("verdict {verdict}: expected exactly one reason counter to move, got {bumped:?}");
    };
    let (packets, bytes) = (after[r].0 - before[r].0, after[r].1 - before[r].1);
    assert_eq!((packets, bytes), (1, frame.len() as u64), "reason {r}: packets and bytes counted");

    feature(r);
    feature(16 + verdict.min(7) as usize);
    feature(32 + r * 8 + l4_class(frame));
    for e in 0..after_events.len() {
        if after_events[e] != before_events[e] {
            feature(160 + e);
            feature(176 + r * event::COUNT as usize + e);
        }
    }

    let r = r as u32;
    if state.trace {
        eprintln!("xdp: {} bytes: verdict {verdict}, {}", frame.len(), reason::NAMES[r as usize]);
    }
    let expected = match r {
        r if reason::is_pass(r) => XDP_PASS,
        reason::TX | reason::TX_ICMP_ECHO | reason::TX_ICMP_TOO_BIG => XDP_TX,
        reason::REDIRECT => XDP_REDIRECT,
        reason::DROP_NO_REAL..=reason::DROP_TX_ERROR => XDP_DROP,
        other => panic!("unknown reason {other}"),
    };
    assert!(
        matches!(verdict, XDP_PASS | XDP_DROP | XDP_TX | XDP_REDIRECT),
        "verdict {verdict} (reason {r})"
    );
    assert_eq!(verdict, expected, "verdict {verdict} for reason {}", reason::NAMES[r as usize]);
    if verdict != XDP_PASS {
        assert_eq!(frame[..6], IFACE_MAC, "acted on a frame to {:02x?}", &frame[..6]);
    }
    match verdict {
        XDP_PASS => assert_eq!(out, frame, "a frame passed to the kernel was changed"),
        XDP_TX | XDP_REDIRECT if r == reason::TX_ICMP_ECHO => check_echo_reply(frame, &out),
        XDP_TX | XDP_REDIRECT => {
            assert_eq!(out.len(), frame.len(), "forwarded frame length");
            assert_eq!(out[12..], frame[12..], "forwarded frame changed beyond the MACs");
            assert_eq!(
                out[..5],
                REAL_MAC_PREFIX,
                "destination MAC {:02x?} is no real's",
                &out[..6]
            );
            assert!(
                state.iface_macs.iter().any(|(_, mac)| out[6..12] == *mac),
                "source MAC {:02x?} is no interface's",
                &out[6..12]
            );
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    // BPF_PROG_TEST_RUN refuses XDP frames shorter than an Ethernet header.
    if data.len() < 14 || data.len() > MAX_FRAME {
        return;
    }
    let mut frame = data.to_vec();
    if frame[0] & 0x03 == 0 {
        frame[..6].copy_from_slice(&IFACE_MAC);
    }
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let state = s.get_or_insert_with(State::new);
        one(state, &frame);
    });
});
