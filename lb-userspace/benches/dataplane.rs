//! `cargo xtask bench`: what the XDP fast path costs per packet, and how long a Maglev table takes
//! to build. Not a test: it measures, checks that it measured the intended path (verdicts, output
//! MACs, flow-table event counters) and fails loudly otherwise.
//!
//! XDP rows run the real program with maps programmed by `XdpDataplane::apply`, through
//! BPF_PROG_TEST_RUN, inside a private network namespace (test runs see ingress ifindex 1, its
//! `lo`), on a thread pinned to one CPU. Two methods, because `repeat` does not restore the input
//! frame (see BENCHMARKS.md):
//! - `repeat`: one call with `repeat = REPEAT`; the value is the kernel's per-repetition average.
//!   Used only where every repetition takes the path the row is named after (floor, non-VIP pass,
//!   hit on one flow, new flow without an insert: an untracked RST), which the event and verdict
//!   counters confirm.
//! - `per-call`: one call per packet (`repeat = 1`), wall clock per call over chunks of `CHUNK`
//!   calls, minus the per-call wall clock of the trivial XDP_PASS program on the same frames
//!   (measured right before and after each chunk). Median over chunks, then over rounds.
//!   The kernel's own per-run `duration` gives a second estimate, reported alongside.
//!
//! Arguments: `--json PATH` writes the rows as JSON; `--only GROUP` runs one group of rows (`xdp`,
//! `xdp-noperfmon`, `maglev`, `reconcile`, `health`, `scale`), for quick runs while working on one of them;
//! `--bench` (added by cargo) is ignored.
//! Prints a Markdown table on stdout.

use lb_test_support::packet::{self, PLAIN};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use lb::{
    config::Protocol,
    dataplane::{
        Dataplane as _,
        xdp::{XdpDataplane, XdpLimits, XdpModeSetting},
    },
    desired::{Desired, RealDesired, RealState},
    fixture::{self, IFACE_MAC, REAL_MAC_PREFIX, VIP, VIP6},
    maglev,
    net::Mac,
};
use serde_json::{Value, json};

/// The trivial program (lb-ebpf/src/bin/pass.rs), built next to `lb-xdp` by build.rs.
const PASS_OBJECT: &str = concat!(env!("OUT_DIR"), "/lb-xdp-pass");
const PASS_PROGRAM: &str = "lb_xdp_pass";
/// The flow table's LRU insert alone (lb-ebpf/src/bin/lru_floor.rs), built by build.rs.
const LRU_FLOOR_OBJECT: &str = concat!(env!("OUT_DIR"), "/lb-xdp-lru-floor");
const LRU_INSERT_PROGRAM: &str = "lb_floor_lru_insert";
const LRU_UPDATE_PROGRAM: &str = "lb_floor_lru_update";
/// The frame's v4 flow inserted / looked up, with a 40-byte `FlowKey` and with a 16-byte key.
const LRU_FRAME_PROGRAMS: [&str; 4] = [
    "lb_floor_frame_insert",
    "lb_floor_frame_lookup",
    "lb_floor_frame_insert4",
    "lb_floor_frame_lookup4",
];
/// Repetitions per `repeat` call of the LRU-insert row: every repetition adds a key, and all of
/// a run's keys (`ROUNDS` of these plus the per-call rounds) fit in `FLOWS`, so none is evicted.
const LRU_REPEAT: u32 = 100_000;

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// Rounds per row; each row reports the median.
const ROUNDS: usize = 7;
/// Repetitions per `repeat` call.
const REPEAT: u32 = 2_000_000;
/// Distinct packets (one call each) per round of a `per-call` row.
const CALLS: usize = 20_000;
/// Calls timed together; rows take the median over chunks, so a preempted chunk does not count.
const CHUNK: usize = 250;
/// Flow-table size: every flow a run creates (a warm-up round plus `ROUNDS`, v4 and v6) fits
/// with room to spare, so nothing is evicted (checked: a second pass over a round's packets must
/// hit the table for every one of them).
const FLOWS: u32 = 1 << 20;
const TABLE_SIZE: u32 = maglev::DEFAULT_SIZE;
/// Stale entries in the flow table of the stateless rows (half of `FLOWS`).
const STALE_ENTRIES: u32 = FLOWS / 2;
const MAGLEV_RUNS: usize = 15;

const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const NON_VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const PORT: u16 = 80;
/// VIPs of the tunnel rows: IPIP (IPv4 in IPv4) and IPv6 in IPv6 reals behind a gateway.
const VIP_TUN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);
const VIP6_TUN: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x101);
/// The gateway toward the tunnelled reals (a permanent neighbour entry on a veth).
const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const XDP_REDIRECT: u32 = 4;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;

/// One result line.
struct Row {
    name: String,
    value: f64,
    unit: &'static str,
    method: String,
    /// Per-round values the median was taken over.
    samples: Vec<f64>,
    /// Extra fields for the JSON (wall-clock cross-checks, subtracted overheads).
    extra: Vec<(&'static str, Value)>,
    /// Name of the floor row this row is compared with.
    floor: Option<String>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut json_path = None;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => {
                json_path = Some(PathBuf::from(args.next().context("--json needs a path")?))
            }
            "--only" => only = Some(args.next().context("--only needs a group")?),
            "--bench" => {}
            other => bail!("unknown argument {other:?} (expected --json PATH, --only GROUP)"),
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the dataplane benchmark needs root (BPF, CAP_PERFMON, network namespaces)");
    }
    ensure!(
        std::fs::metadata(PASS_OBJECT).is_ok_and(|m| m.len() > 0),
        "{PASS_OBJECT} is missing or empty (built with AYA_BUILD_SKIP?)"
    );

    const GROUPS: [&str; 6] = ["xdp", "xdp-noperfmon", "maglev", "reconcile", "health", "scale"];
    if let Some(g) = &only {
        ensure!(GROUPS.contains(&g.as_str()), "--only {g:?}: the groups are {}", GROUPS.join(", "));
    }
    let wanted = |group: &str| only.as_deref().is_none_or(|g| g == group);

    let mut rows = Vec::new();
    for caps in [Caps::Perfmon, Caps::NoPerfmon] {
        if !wanted(caps.group()) {
            continue;
        }
        eprintln!("bench: XDP rows, {}", caps.describe());
        let thread = std::thread::Builder::new()
            .name(format!("xdp-{}", caps.suffix()))
            .spawn(move || xdp_rows(caps))
            .context("spawning the XDP benchmark thread")?;
        let r = thread.join().map_err(|_| anyhow::anyhow!("XDP benchmark thread panicked"))?;
        rows.extend(r.with_context(|| format!("XDP rows ({})", caps.describe()))?);
    }
    if wanted("xdp") {
        eprintln!("bench: memory latency");
        rows.push(memory_latency_row()?);
    }
    if wanted("maglev") {
        eprintln!("bench: Maglev table builds");
        rows.extend(maglev_rows()?);
    }
    if wanted("reconcile") {
        eprintln!("bench: health change to dataplane");
        let t = std::thread::spawn(reconcile_rows);
        rows.extend(t.join().map_err(|_| anyhow::anyhow!("reconcile benchmark panicked"))??);
    }
    if wanted("scale") {
        eprintln!("bench: agent scale, {SCALE_SERVICES} services x {SCALE_REALS} reals");
        let t = std::thread::spawn(scale_rows);
        rows.extend(t.join().map_err(|_| anyhow::anyhow!("scale benchmark panicked"))??);
    }
    if wanted("health") {
        eprintln!("bench: TCP health checks on one core");
        let t = std::thread::spawn(|| {
            // Private namespace (threads spawned from here inherit it), `lo` up for 127.0.0.0/8.
            isolate_thread()?;
            let up = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status()?;
            ensure!(up.success(), "ip link set lo up");
            let mut rows = health_rows(1400, 0.1, "health_tcp_checks")?;
            // Issue 20's scale goal: 10,000 reals checked every second on at most one core.
            rows.extend(health_rows(10_000, 1.0, "health_tcp_10k_reals")?);
            Ok(rows)
        });
        rows.extend(t.join().map_err(|_| anyhow::anyhow!("health benchmark panicked"))??);
    }

    print_table(&rows);
    let json = to_json(&rows);
    if let Some(path) = json_path {
        let text = serde_json::to_string_pretty(&json)?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

// ---- capabilities and namespaces --------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Caps {
    /// Plain root: the verifier trusts the loader (no Spectre barriers).
    Perfmon,
    /// CAP_PERFMON and CAP_SYS_ADMIN dropped from the thread's effective set before loading.
    NoPerfmon,
}

impl Caps {
    /// The `--only` group of its rows.
    fn group(self) -> &'static str {
        match self {
            Caps::Perfmon => "xdp",
            Caps::NoPerfmon => "xdp-noperfmon",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Caps::Perfmon => "",
            Caps::NoPerfmon => "_noperfmon",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Caps::Perfmon => "root with CAP_PERFMON",
            Caps::NoPerfmon => "without CAP_PERFMON and CAP_SYS_ADMIN",
        }
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

fn capget() -> anyhow::Result<[CapData; 2]> {
    let mut hdr = CapHeader { version: CAP_V3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget with a v3 header writes two data structs.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    ensure!(rc == 0, "capget: {}", std::io::Error::last_os_error());
    Ok(data)
}

fn has_effective(data: &[CapData; 2], cap: u32) -> bool {
    data[(cap / 32) as usize].effective & (1 << (cap % 32)) != 0
}

/// Removes capabilities from the calling thread's effective set (capabilities are per thread).
fn drop_effective_caps(caps: &[u32]) -> anyhow::Result<()> {
    let mut data = capget()?;
    for &c in caps {
        data[(c / 32) as usize].effective &= !(1 << (c % 32));
    }
    let mut hdr = CapHeader { version: CAP_V3, pid: 0 };
    // SAFETY: capset with a v3 header reads two data structs.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    ensure!(rc == 0, "capset: {}", std::io::Error::last_os_error());
    let now = capget()?;
    for &c in caps {
        ensure!(!has_effective(&now, c), "capability {c} is still effective after capset");
    }
    Ok(())
}

/// Moves the calling thread into a fresh network namespace (its `lo` is ifindex 1) and pins it to
/// one CPU, so per-CPU state (LRU free lists, counters) and caches stay put between calls.
fn isolate_thread() -> anyhow::Result<()> {
    // SAFETY: unshare only affects the calling thread's network namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    ensure!(rc == 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) applies to the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus - 1, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!(
                "bench: warning: cannot pin to CPU {}: {}",
                cpus - 1,
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

// ---- the desired state and packets ------------------------------------------------------------

/// An up real of weight 1 on `PORT` with MAC 52:54:00:00:00:`last`.
fn real(address: IpAddr, last: u8) -> RealDesired {
    let mut mac = [0; 6];
    mac[..5].copy_from_slice(&REAL_MAC_PREFIX);
    mac[5] = last;
    RealDesired { mac: Some(Mac(mac)), ..fixture::real(address, PORT, 1, RealState::Up) }
}

/// Four IPIP reals (their family decides the outer header).
fn tunnelled(address: fn(u8) -> IpAddr) -> Vec<RealDesired> {
    (1..=4)
        .map(|i| RealDesired {
            lb_kind: lb::config::LbKind::Tun(lb::config::Tunnel::Ipip),
            mac: None,
            ..real(address(i), i)
        })
        .collect()
}

/// Routes to the tunnelled reals in the bench's namespace: a veth with a gateway (permanent
/// neighbour entries) and forwarding on, which the program's FIB lookups need.
fn tunnel_topology() -> anyhow::Result<()> {
    for path in ["/proc/sys/net/ipv4/conf/all/forwarding", "/proc/sys/net/ipv6/conf/all/forwarding"]
    {
        std::fs::write(path, "1").with_context(|| format!("writing {path}"))?;
    }
    let gw = GW_MAC.map(|b| format!("{b:02x}")).join(":");
    for args in [
        "link set lo up".to_owned(),
        "link add t0 type veth peer name t1".to_owned(),
        "link set t0 up".to_owned(),
        "link set t1 up".to_owned(),
        "addr add 203.0.113.1/24 dev t0".to_owned(),
        "addr add 2001:db8:ff::1/64 dev t0 nodad".to_owned(),
        format!("neigh replace 203.0.113.254 lladdr {gw} dev t0 nud permanent"),
        format!("neigh replace 2001:db8:ff::fe lladdr {gw} dev t0 nud permanent"),
        "route add 198.51.100.0/24 via 203.0.113.254".to_owned(),
        "route add 2001:db8:100::/64 via 2001:db8:ff::fe".to_owned(),
    ] {
        let out = std::process::Command::new("ip")
            .args(args.split_whitespace())
            .output()
            .context("running ip")?;
        ensure!(out.status.success(), "ip {args}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// One v4 and one v6 TCP service on port 80, four reals each, default table size; and the same
/// on two more VIPs with tunnelled reals (IPIP, IPv6 in IPv6).
fn desired() -> Desired {
    let v4 = (1..=4).map(|i| real(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + i)), 10 + i)).collect();
    let v6 = (1..=4)
        .map(|i| {
            let a = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + u16::from(i));
            real(IpAddr::V6(a), 0x60 + i)
        })
        .collect();
    let service = |vip, reals| fixture::service(vip, PORT, Protocol::Tcp, reals, TABLE_SIZE);
    fixture::desired(
        vec![
            service(IpAddr::V4(VIP), v4),
            service(IpAddr::V6(VIP6), v6),
            service(IpAddr::V4(VIP_TUN), tunnelled(|i| Ipv4Addr::new(198, 51, 100, 10 + i).into())),
            service(
                IpAddr::V6(VIP6_TUN),
                tunnelled(|i| Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, u16::from(i)).into()),
            ),
        ],
        vec![],
    )
}

const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// A TCP segment with `flags` and a few payload bytes (the frame comes to 60 bytes for v4).
fn tcp_segment(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    packet::tcp(sport, dport, flags, b"bench!")
}

fn v4_syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16) -> Vec<u8> {
    v4_tcp(src, dst, sport, TCP_SYN)
}

fn v4_tcp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, flags: u8) -> Vec<u8> {
    let ip =
        packet::ipv4(src, dst, lb_common::IPPROTO_TCP, PLAIN, &tcp_segment(sport, PORT, flags));
    [packet::eth(IFACE_MAC, ROUTER_MAC, 0x0800), ip].concat()
}

fn v6_tcp(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, flags: u8) -> Vec<u8> {
    let ip = packet::ipv6(src, dst, lb_common::IPPROTO_TCP, &tcp_segment(sport, PORT, flags));
    [packet::eth(IFACE_MAC, ROUTER_MAC, 0x86dd), ip].concat()
}

/// Distinct clients for new flows: packet `n` of the whole run (over rounds and families) gets
/// its own (source address, source port).
/// The TCP packet of client `n` with `flags` to each family's VIP: the rows' packet makers.
fn to_vip_v4(n: usize, flags: u8) -> Vec<u8> {
    let (src, sport) = client_v4(n);
    v4_tcp(src, VIP, sport, flags)
}

fn to_vip_v6(n: usize, flags: u8) -> Vec<u8> {
    let (src, sport) = client_v6(n);
    v6_tcp(src, VIP6, sport, flags)
}

/// The UDP datagram of client `n` to the v4 VIP's UDP service (60 bytes, as the TCP frames).
fn to_vip_v4_udp(n: usize, _flags: u8) -> Vec<u8> {
    let (src, sport) = client_v4(n);
    let udp = packet::udp(sport, PORT, b"bench, a datagram!");
    let ip = packet::ipv4(src, VIP, lb_common::IPPROTO_UDP, PLAIN, &udp);
    [packet::eth(IFACE_MAC, ROUTER_MAC, 0x0800), ip].concat()
}

fn to_vip_v4_ipip(n: usize, flags: u8) -> Vec<u8> {
    let (src, sport) = client_v4(n);
    v4_tcp(src, VIP_TUN, sport, flags)
}

fn to_vip_v6_in_v6(n: usize, flags: u8) -> Vec<u8> {
    let (src, sport) = client_v6(n);
    v6_tcp(src, VIP6_TUN, sport, flags)
}

fn client_v4(n: usize) -> (Ipv4Addr, u16) {
    let host = (n / 50_000) as u32;
    let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 1)) + host);
    (addr, 10_000 + (n % 50_000) as u16)
}

fn client_v6(n: usize) -> (Ipv6Addr, u16) {
    let host = (n / 50_000) as u16;
    (Ipv6Addr::new(0x2001, 0xdb8, 0xc1, 0, 0, 0, 0, 1 + host), 10_000 + (n % 50_000) as u16)
}

// ---- running the programs ---------------------------------------------------------------------

/// Result of one `repeat` call: verdict of the last repetition, kernel ns per repetition, wall ns
/// per repetition (the latter includes the syscall and any preemption).
struct Repeated {
    verdict: u32,
    kernel_ns: f64,
    wall_ns: f64,
}

fn repeat_run(prog: &Xdp, frame: &[u8], repeat: u32) -> anyhow::Result<Repeated> {
    let mut out = [0u8; 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.repeat = repeat;
    let start = Instant::now();
    let res = prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    let wall = start.elapsed();
    Ok(Repeated {
        verdict: res.return_value,
        kernel_ns: res.duration.as_nanos() as f64,
        wall_ns: wall.as_nanos() as f64 / f64::from(repeat),
    })
}

/// One frame through the program, returning the verdict and the output frame.
fn run_once(prog: &Xdp, frame: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    let res = prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    out.truncate(res.data_size_out as usize);
    Ok((res.return_value, out))
}

/// Result of a `per-call` loop: wall ns per call and the mean of the kernel's own per-run
/// duration.
#[derive(Clone, Copy)]
struct PerCall {
    wall_ns: f64,
    kernel_ns: f64,
}

/// One call (repeat = 1) per frame. Every call must return `verdict` and leave a frame whose
/// destination MAC starts with `dst_prefix`; the same loop runs for the trivial program, so the
/// checks cost the same on both sides of the subtraction.
fn per_call(
    prog: &Xdp,
    frames: &[Vec<u8>],
    verdict: u32,
    dst_prefix: [u8; 5],
) -> anyhow::Result<PerCall> {
    let mut out = [0u8; 256];
    let mut kernel = Duration::ZERO;
    let mut wrong = 0usize;
    let start = Instant::now();
    for frame in frames {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let res = prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
        kernel += res.duration;
        wrong += usize::from(res.return_value != verdict || out[..5] != dst_prefix);
    }
    let wall = start.elapsed();
    ensure!(
        wrong == 0,
        "{wrong} of {} calls did not return verdict {verdict} with a frame to {dst_prefix:02x?}",
        frames.len()
    );
    let n = frames.len() as f64;
    Ok(PerCall { wall_ns: wall.as_nanos() as f64 / n, kernel_ns: kernel.as_nanos() as f64 / n })
}

/// Reads every byte of `frames`, so the copy into the kernel does not pay for cache misses that
/// the other side of a subtraction would not pay.
fn touch(frames: &[Vec<u8>]) {
    let sum = frames.iter().flatten().fold(0u8, |a, &b| a.wrapping_add(b));
    std::hint::black_box(sum);
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Flow-table events and verdict reasons, to prove which path a measurement took.
struct Snapshot {
    flow_hit: u64,
    flow_new: u64,
    flow_new_stateless: u64,
    flow_stateless_hit: u64,
    flow_filter_skip: u64,
    flow_rst_untracked: u64,
    tx: u64,
    pass_not_service: u64,
}

fn snapshot(dp: &mut XdpDataplane) -> anyhow::Result<Snapshot> {
    let c = dp.counters().context("reading counters")?;
    let event = |name: &str| -> anyhow::Result<u64> {
        c.events
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .with_context(|| format!("no event counter {name}"))
    };
    let reason = |name: &str| -> anyhow::Result<u64> {
        c.global
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.packets)
            .with_context(|| format!("no reason counter {name}"))
    };
    Ok(Snapshot {
        flow_hit: event("flow_hit")?,
        flow_new: event("flow_new")?,
        flow_new_stateless: event("flow_new_stateless")?,
        flow_stateless_hit: event("flow_stateless_hit")?,
        flow_filter_skip: event("flow_filter_skip")?,
        flow_rst_untracked: event("flow_rst_untracked")?,
        tx: reason("tx")?,
        pass_not_service: reason("pass_not_service")?,
    })
}

fn load_pass_program(ebpf: &mut Ebpf) -> anyhow::Result<&mut Xdp> {
    let prog: &mut Xdp = ebpf
        .program_mut(PASS_PROGRAM)
        .with_context(|| format!("no program {PASS_PROGRAM} in {PASS_OBJECT}"))?
        .try_into()
        .context("the pass program is not XDP")?;
    prog.load().context("loading the pass program")?;
    Ok(prog)
}

// ---- the XDP rows -----------------------------------------------------------------------------

/// The lb program with maps of the benchmark's size (a `FLOWS`-entry flow table).
fn load_lb() -> anyhow::Result<XdpDataplane> {
    let limits =
        XdpLimits { max_services: 8, max_reals: 64, ring_entries: 16 * TABLE_SIZE, flows: FLOWS };
    XdpDataplane::load(XdpModeSetting::Generic, limits).context("loading the lb program")
}

fn xdp_rows(caps: Caps) -> anyhow::Result<Vec<Row>> {
    isolate_thread()?;
    tunnel_topology()?;
    if caps == Caps::NoPerfmon {
        drop_effective_caps(&[CAP_SYS_ADMIN, CAP_PERFMON])?;
    } else {
        ensure!(
            has_effective(&capget()?, CAP_PERFMON),
            "root without CAP_PERFMON in its effective set: the rows would not measure the \
             privileged program"
        );
    }
    let sfx = caps.suffix();
    let floor_name = format!("xdp_pass_floor{sfx}");

    let mut pass_obj =
        Ebpf::load_file(PASS_OBJECT).with_context(|| format!("opening {PASS_OBJECT}"))?;
    let pass = load_pass_program(&mut pass_obj)?;
    let mut dp = load_lb()?;
    // The services stay inside the window their start opened (tcp_flow_timeout 900 s): every
    // TCP flow gets an entry, as before docs/fast-path.md. `stateless_rows` measures outside it.
    let d = desired();
    dp.apply(&d).context("programming the maps")?;
    // `repeat` reruns the rewritten frame, addressed to the real from the second run on.
    for r in d.services.iter().flat_map(|s| &s.reals) {
        if let Some(mac) = r.mac {
            dp.accept_extra_mac(1, mac.0).context("accepting a real's MAC")?;
        }
    }

    let iface_prefix: [u8; 5] = IFACE_MAC[..5].try_into().context("MAC prefix")?;
    let mut rows = Vec::new();

    // Floor: the trivial program on a v4 TCP frame.
    let frame = v4_syn(CLIENT, NON_VIP, 40000);
    let (mut kernel, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let r = repeat_run(pass, &frame, REPEAT)?;
        ensure!(r.verdict == XDP_PASS, "pass program returned {}", r.verdict);
        kernel.push(r.kernel_ns);
        wall.push(r.wall_ns);
    }
    rows.push(repeat_row(&floor_name, REPEAT, kernel, wall, None));

    // Non-VIP: the lb program hands a frame to an address without a service to the kernel.
    let lb = dp.program().context("lb program")?;
    let (v, out) = run_once(lb, &frame)?;
    ensure!(v == XDP_PASS && out == frame, "non-VIP frame: verdict {v} (want XDP_PASS, untouched)");
    let (mut kernel, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let before = snapshot(&mut dp)?;
        let r = repeat_run(dp.program()?, &frame, REPEAT)?;
        let after = snapshot(&mut dp)?;
        ensure!(r.verdict == XDP_PASS, "non-VIP frame: verdict {} (want XDP_PASS)", r.verdict);
        let passed = after.pass_not_service - before.pass_not_service;
        ensure!(
            passed == u64::from(REPEAT),
            "non-VIP: {passed} pass_not_service verdicts for {REPEAT} repetitions"
        );
        kernel.push(r.kernel_ns);
        wall.push(r.wall_ns);
    }
    rows.push(repeat_row(
        &format!("v4_non_vip_pass{sfx}"),
        REPEAT,
        kernel,
        wall,
        Some(&floor_name),
    ));

    // Flow hit: a SYN creates the flow once; then every repetition of an ACK of that connection
    // finds it.
    let frame = v4_syn(CLIENT, VIP, 40000);
    let before = snapshot(&mut dp)?;
    let (v, out) = run_once(dp.program()?, &frame)?;
    let after = snapshot(&mut dp)?;
    ensure!(v == XDP_TX, "SYN to the VIP: verdict {v} (want XDP_TX)");
    ensure!(
        out[..5] == REAL_MAC_PREFIX && out[6..12] == IFACE_MAC,
        "SYN to the VIP left with MACs {:02x?} -> {:02x?}",
        &out[6..12],
        &out[..6]
    );
    ensure!(after.flow_new - before.flow_new == 1, "the first SYN did not create a flow");
    let frame = v4_tcp(CLIENT, VIP, 40000, TCP_ACK);
    let (mut kernel, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let before = snapshot(&mut dp)?;
        let r = repeat_run(dp.program()?, &frame, REPEAT)?;
        let after = snapshot(&mut dp)?;
        ensure!(r.verdict == XDP_TX, "flow hit: verdict {} (want XDP_TX)", r.verdict);
        let (hits, new, tx) = (
            after.flow_hit - before.flow_hit,
            after.flow_new - before.flow_new,
            after.tx - before.tx,
        );
        ensure!(
            hits == u64::from(REPEAT) && new == 0 && tx == u64::from(REPEAT),
            "flow hit: {hits} hits, {new} new flows, {tx} XDP_TX for {REPEAT} repetitions"
        );
        kernel.push(r.kernel_ns);
        wall.push(r.wall_ns);
    }
    rows.push(repeat_row(&format!("v4_flow_hit{sfx}"), REPEAT, kernel, wall, Some(&floor_name)));

    // The same flow per call: the hit path with the flow entry hot in cache, as in `repeat`.
    // The IPIP twin (a flow to the tunnelled VIP, created by its own SYN) is the one-flow hit to
    // compare with Katran, which encapsulates every packet (BENCHMARKS.md).
    let gw_prefix: [u8; 5] = GW_MAC[..5].try_into().context("MAC prefix")?;
    let ipip_syn = v4_syn(CLIENT, VIP_TUN, 40000);
    let (v, out) = run_once(dp.program()?, &ipip_syn)?;
    ensure!(
        v == XDP_REDIRECT && out[..6] == GW_MAC,
        "SYN to the tunnelled VIP: verdict {v} (want XDP_REDIRECT), to {:02x?}",
        &out[..6]
    );
    let one_flow: [(&str, Vec<u8>, u32, [u8; 5]); 2] = [
        ("v4", frame, XDP_TX, REAL_MAC_PREFIX),
        ("v4_ipip", v4_tcp(CLIENT, VIP_TUN, 40000, TCP_ACK), XDP_REDIRECT, gw_prefix),
    ];
    for (family, frame, verdict, prefix) in one_flow {
        let frames = vec![frame; CHUNK];
        let mut hit = Series::default();
        for _ in 0..ROUNDS {
            let s0 = snapshot(&mut dp)?;
            let mut chunks = Chunks::default();
            for _ in 0..CALLS / CHUNK {
                let p1 = per_call(pass, &frames, XDP_PASS, iface_prefix)?;
                let h = per_call(dp.program()?, &frames, verdict, prefix)?;
                let p2 = per_call(pass, &frames, XDP_PASS, iface_prefix)?;
                chunks.add(h, p1, p2);
            }
            let s1 = snapshot(&mut dp)?;
            let calls = ((CALLS / CHUNK) * CHUNK) as u64;
            ensure!(
                s1.flow_hit - s0.flow_hit == calls && s1.flow_new == s0.flow_new,
                "{family} one-flow hits: {} hits, {} new flows for {calls} calls",
                s1.flow_hit - s0.flow_hit,
                s1.flow_new - s0.flow_new
            );
            hit.push(&chunks);
        }
        rows.push(per_call_row(
            format!("{family}_flow_hit_one_flow_percall{sfx}"),
            "the same packet every call (one flow, hot in cache)",
            hit,
            &floor_name,
        ));
    }

    // The new-flow path without the flow-table insert, hot in cache: a TCP RST from a client
    // without a flow entry misses the flow table, takes a real from the Maglev table and is
    // forwarded, but creates no entry (as any new flow while the SYN-flood guard is active), so
    // every repetition takes that same path. Checked: flow_new = flow_rst_untracked = tx =
    // repetitions, no hit.
    let frame = v4_tcp(CLIENT, VIP, 40001, TCP_RST);
    let before = snapshot(&mut dp)?;
    let (v, out) = run_once(dp.program()?, &frame)?;
    let after = snapshot(&mut dp)?;
    ensure!(
        v == XDP_TX && out[..5] == REAL_MAC_PREFIX && out[6..12] == IFACE_MAC,
        "RST to the VIP: verdict {v} (want XDP_TX), MACs {:02x?} -> {:02x?}",
        &out[6..12],
        &out[..6]
    );
    ensure!(
        after.flow_new - before.flow_new == 1
            && after.flow_rst_untracked - before.flow_rst_untracked == 1
            && after.flow_hit == before.flow_hit,
        "the RST did not take the untracked new-flow path"
    );
    let (mut kernel, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let before = snapshot(&mut dp)?;
        let r = repeat_run(dp.program()?, &frame, REPEAT)?;
        let after = snapshot(&mut dp)?;
        ensure!(r.verdict == XDP_TX, "untracked RST: verdict {} (want XDP_TX)", r.verdict);
        let (new, rst, hits, tx) = (
            after.flow_new - before.flow_new,
            after.flow_rst_untracked - before.flow_rst_untracked,
            after.flow_hit - before.flow_hit,
            after.tx - before.tx,
        );
        let n = u64::from(REPEAT);
        ensure!(
            new == n && rst == n && hits == 0 && tx == n,
            "untracked RST: {new} new flows, {rst} untracked RSTs, {hits} hits, {tx} XDP_TX for \
             {REPEAT} repetitions"
        );
        kernel.push(r.kernel_ns);
        wall.push(r.wall_ns);
    }
    rows.push(repeat_row(
        &format!("v4_new_flow_no_insert{sfx}"),
        REPEAT,
        kernel,
        wall,
        Some(&floor_name),
    ));

    // The map alone, for reading the goal (set with CAP_PERFMON) against it.
    if caps == Caps::Perfmon {
        rows.extend(lru_floor_rows(pass, &frame, &floor_name)?);
    }

    // New flows and hits on many flows, one call per distinct packet, v4 then v6. Round r creates
    // CALLS flows (SYNs) and replays the CALLS flows of round r - 1 as ACKs (created one round
    // earlier, so other flows have been touched since, as for a real established flow).
    // The tunnel rows: the same packets to the VIPs of tunnelled reals, encapsulated and
    // redirected to the gateway's interface (the next hop and the encapsulation included). Their
    // chunks alternate between the program's kept next hops (even chunks: the `v4_ipip_*` rows)
    // and a FIB lookup for every packet (`CFG_F_TUN_FIB_EACH`, odd chunks: `*_fib_each_*`), so
    // the two are measured interleaved in one run. Switching back costs each real one refresh
    // (two lookups) per chunk, counted in the kept rows.
    // The v4_sync pass repeats v4 with flow sync on (every new flow also reported through the
    // ring buffer, which is read between chunks, outside the timed calls); v4_after_sync repeats
    // it with sync off on the table v4_sync left: `v4_sync_new_flow` against
    // `v4_after_sync_new_flow` is what flow sync costs.
    type Family = (&'static str, fn(usize, u8) -> Vec<u8>, u32, [u8; 5], bool);
    let real_verdict = (XDP_TX, REAL_MAC_PREFIX);
    let v4: fn(usize, u8) -> Vec<u8> = to_vip_v4;
    let families: [Family; 6] = [
        ("v4", v4, real_verdict.0, real_verdict.1, false),
        ("v6", to_vip_v6, real_verdict.0, real_verdict.1, false),
        ("v4_ipip", to_vip_v4_ipip, XDP_REDIRECT, gw_prefix, false),
        ("v6_in_v6", to_vip_v6_in_v6, XDP_REDIRECT, gw_prefix, false),
        ("v4_sync", v4, real_verdict.0, real_verdict.1, true),
        // The control for the sync pass: sync off, on a table as full as the sync pass saw.
        ("v4_after_sync", v4, real_verdict.0, real_verdict.1, false),
    ];
    let mut reports = dp.take_flow_reports().context("the new-flow reports ring buffer")?;
    for (family, make, verdict, prefix, sync) in families {
        dp.set_flow_sync(sync).context("flow sync switch")?;
        let mut read = 0u64;
        // Each v4 pass takes clients the previous ones did not use.
        let mut next = match family {
            "v4_sync" => (ROUNDS + 1) * CALLS,
            "v4_after_sync" => 2 * (ROUNDS + 1) * CALLS,
            _ => 0usize,
        };
        // (SYNs of new flows, ACKs of the same flows for the next round's replay)
        let mut batch = || {
            let range = next..next + CALLS;
            next += CALLS;
            let syns: Vec<Vec<u8>> = range.clone().map(|n| make(n, TCP_SYN)).collect();
            (syns, range.map(|n| make(n, TCP_ACK)).collect::<Vec<_>>())
        };
        // Warm-up round (not reported): its flows are the first round's hits.
        let (warm, mut previous) = batch();
        per_call(pass, &warm, XDP_PASS, iface_prefix)?;
        for chunk in warm.chunks(CHUNK) {
            per_call(dp.program()?, chunk, verdict, prefix)?;
            while let Some(item) = reports.next() {
                read += u64::from(item.len() == size_of::<lb_common::FlowReport>());
            }
        }

        let tunnel = verdict == XDP_REDIRECT;
        // Odd chunks are a control: tunnels look the FIB up for every packet, v4 and v6 insert
        // without the filter stamp (`CFG_F_NO_FLOW_STAMP`: what the stamp costs an insert).
        let control = match family {
            "v4_ipip" | "v6_in_v6" => Some("fib_each"),
            "v4" | "v6" => Some("nostamp"),
            _ => None,
        };
        let (mut new, mut hit) = (Series::default(), Series::default());
        let (mut new_each, mut hit_each) = (Series::default(), Series::default());
        for _ in 0..ROUNDS {
            let (frames, acks) = batch();
            let s0 = snapshot(&mut dp)?;
            let (mut n_chunks, mut h_chunks) = (Chunks::default(), Chunks::default());
            let (mut n_each, mut h_each) = (Chunks::default(), Chunks::default());
            let pairs = frames.chunks(CHUNK).zip(previous.chunks(CHUNK));
            for (i, (fresh, old)) in pairs.enumerate() {
                let each = control.is_some() && i % 2 == 1;
                if tunnel {
                    dp.set_tun_fib_each(each).context("the tunnel lookup switch")?;
                } else if control.is_some() {
                    dp.set_no_flow_stamp(each).context("the stamp switch")?;
                }
                // Both sides of each subtraction copy frames that are already in cache.
                touch(fresh);
                touch(old);
                let p1 = per_call(pass, fresh, XDP_PASS, iface_prefix)?;
                let n = per_call(dp.program()?, fresh, verdict, prefix)?;
                let h = per_call(dp.program()?, old, verdict, prefix)?;
                let p2 = per_call(pass, old, XDP_PASS, iface_prefix)?;
                let (nc, hc) =
                    if each { (&mut n_each, &mut h_each) } else { (&mut n_chunks, &mut h_chunks) };
                nc.add(n, p1, p2);
                hc.add(h, p1, p2);
                while let Some(item) = reports.next() {
                    read += u64::from(item.len() == size_of::<lb_common::FlowReport>());
                }
            }
            let s1 = snapshot(&mut dp)?;
            let calls = CALLS as u64;
            // Every fresh packet made a flow and every replayed one found its flow: nothing was
            // evicted, and each call took the path its row is named after.
            ensure!(
                s1.flow_new - s0.flow_new == calls && s1.flow_hit - s0.flow_hit == calls,
                "{family}: {} new flows and {} hits for {CALLS} new and {CALLS} replayed packets",
                s1.flow_new - s0.flow_new,
                s1.flow_hit - s0.flow_hit
            );
            new.push(&n_chunks);
            hit.push(&h_chunks);
            if control.is_some() {
                new_each.push(&n_each);
                hit_each.push(&h_each);
            }
            previous = acks;
        }
        if tunnel {
            dp.set_tun_fib_each(false).context("the tunnel lookup switch")?;
        } else {
            dp.set_no_flow_stamp(false).context("the stamp switch")?;
        }
        let what = if tunnel {
            "with a FIB lookup for every packet (CFG_F_TUN_FIB_EACH)"
        } else {
            "with TCP inserts that do not stamp the filter (CFG_F_NO_FLOW_STAMP)"
        };
        if let Some(control) = control {
            rows.push(per_call_row(
                format!("{family}_{control}_new_flow{sfx}"),
                &format!("as the new_flow row, {what}, chunks interleaved with it"),
                new_each,
                &floor_name,
            ));
            rows.push(per_call_row(
                format!("{family}_{control}_flow_hit_percall{sfx}"),
                &format!("as the flow_hit_percall row, {what}, chunks interleaved with it"),
                hit_each,
                &floor_name,
            ));
        }
        // Sync on: every new flow (warm-up round included) was reported, and read; off: none.
        let want = if sync { ((ROUNDS + 1) * CALLS) as u64 } else { 0 };
        ensure!(read == want, "{family}: {read} new-flow reports read, {want} expected");
        rows.push(per_call_row(
            format!("{family}_new_flow{sfx}"),
            "a new flow (TCP SYN from a new client address:port) every call",
            new,
            &floor_name,
        ));
        rows.push(per_call_row(
            format!("{family}_flow_hit_percall{sfx}"),
            "the previous round's packets replayed: a hit on a different established flow \
             every call",
            hit,
            &floor_name,
        ));
    }
    // The maps (a million-entry flow table) go before the next program's are made.
    drop(reports);
    drop(dp);
    rows.extend(stateless_rows(pass, iface_prefix, &floor_name, sfx)?);
    rows.extend(change_window_rows(pass, iface_prefix, &floor_name, sfx)?);
    Ok(rows)
}

/// The fast path of docs/fast-path.md, side by side with the `new_flow` and
/// `flow_hit_percall` rows of the same run: the same kind of packets (v4, v6, and the tunnelled
/// VIPs' v4_ipip and v6_in_v6; distinct clients, one call each) to a program whose services'
/// windows have ended (`tcp_flow_timeout` 1 s, waited out). A SYN writes no entry; the previous
/// round's ACKs find none and are forwarded by the table alone. `v4_udp`: the same with UDP
/// datagrams to a UDP service on the v4 VIP (a new client's first datagram, then the previous
/// round's replayed: both without an entry, `flow_stateless_hit`). The flow table holds
/// `STALE_ENTRIES` entries of other clients, idle past any timeout and unstamped (left by
/// windows long past). Chunks alternate between the
/// "recent entry" filter (even chunks: the flow-table lookup skipped, the `*_stateless*` rows)
/// and the filter defeated (`CFG_F_NO_FLOW_FILTER`, odd chunks: the lookup done and missed, the
/// `*_nofilter_*` rows), so the filter's gain is an in-run ratio. Checked per round: `flow_new`
/// = `flow_new_stateless` = calls, `flow_stateless_hit` = calls, `flow_hit` +0, and
/// `flow_filter_skip` = the filter chunks' calls (SYNs and ACKs).
fn stateless_rows(
    pass: &Xdp,
    iface_prefix: [u8; 5],
    floor_name: &str,
    sfx: &str,
) -> anyhow::Result<Vec<Row>> {
    let mut dp = load_lb()?;
    let mut d = desired();
    d.globals.tcp_window = 1;
    let mut udp = d.services[0].clone();
    udp.key = lb::config::VirtualServerKey::addr(IpAddr::V4(VIP), PORT, Protocol::Udp);
    d.services.push(udp);
    dp.apply(&d).context("programming the maps")?;
    // Entries left by windows long past (as on a director that has run for a while): half the
    // table, to clients the rows do not use, idle past any timeout and without filter stamps.
    // A lookup of the control chunks then misses in a populated table, not an empty one.
    let mut stale = dp.sync_maps().context("the flow table")?.flows;
    for i in 0..STALE_ENTRIES {
        let src = lb_common::addr_v6([
            0x20,
            1,
            0x0d,
            0xb8,
            0xff,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            (i >> 24) as u8,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ]);
        let key = lb_common::FlowKey {
            src,
            dst: lb_common::addr_v6(VIP6.octets()),
            ports: lb_common::ports_word(40000, PORT),
            proto: lb_common::IPPROTO_TCP,
            family: lb_common::FAMILY_V6,
            _pad: 0,
        };
        let b = lb_common::Binding { real: 1, generation: 0, atime: 0, flags: 0 };
        stale.insert(key, b, 0).context("a stale flow entry")?;
    }
    drop(stale);
    // The window (1 s, plus a second for the program's coarse clock) ends.
    std::thread::sleep(std::time::Duration::from_millis(3200));
    let gw_prefix: [u8; 5] = GW_MAC[..5].try_into().context("MAC prefix")?;
    /// (row prefix, the packet of client `n` with TCP flags, verdict, destination MAC prefix)
    type Family = (&'static str, fn(usize, u8) -> Vec<u8>, u32, [u8; 5]);
    let families: [Family; 5] = [
        ("v4", to_vip_v4, XDP_TX, REAL_MAC_PREFIX),
        ("v6", to_vip_v6, XDP_TX, REAL_MAC_PREFIX),
        ("v4_ipip", to_vip_v4_ipip, XDP_REDIRECT, gw_prefix),
        ("v6_in_v6", to_vip_v6_in_v6, XDP_REDIRECT, gw_prefix),
        ("v4_udp", to_vip_v4_udp, XDP_TX, REAL_MAC_PREFIX),
    ];
    let mut rows = Vec::new();
    for (family, make, verdict, prefix) in families {
        let udp = family.ends_with("udp");
        // UDP: no datagram is a new flow, each is a packet without an entry.
        let calls = CALLS as u64;
        let (want_new, want_stateless_hit) = if udp { (0, 2 * calls) } else { (calls, calls) };
        let mut next = 0usize;
        let mut batch = || {
            let range = next..next + CALLS;
            next += CALLS;
            let syns: Vec<Vec<u8>> = range.clone().map(|n| make(n, TCP_SYN)).collect();
            (syns, range.map(|n| make(n, TCP_ACK)).collect::<Vec<_>>())
        };
        let (warm, mut previous) = batch();
        per_call(pass, &warm, XDP_PASS, iface_prefix)?;
        for chunk in warm.chunks(CHUNK) {
            per_call(dp.program()?, chunk, verdict, prefix)?;
        }
        let (mut new, mut hit) = (Series::default(), Series::default());
        let (mut new_off, mut hit_off) = (Series::default(), Series::default());
        for _ in 0..ROUNDS {
            let (frames, acks) = batch();
            let s0 = snapshot(&mut dp)?;
            let (mut n_chunks, mut h_chunks) = (Chunks::default(), Chunks::default());
            let (mut n_off, mut h_off) = (Chunks::default(), Chunks::default());
            let mut filtered = 0u64;
            let pairs = frames.chunks(CHUNK).zip(previous.chunks(CHUNK));
            for (i, (fresh, old)) in pairs.enumerate() {
                let off = i % 2 == 1;
                dp.set_no_flow_filter(off).context("the filter switch")?;
                touch(fresh);
                touch(old);
                let p1 = per_call(pass, fresh, XDP_PASS, iface_prefix)?;
                let n = per_call(dp.program()?, fresh, verdict, prefix)?;
                let h = per_call(dp.program()?, old, verdict, prefix)?;
                let p2 = per_call(pass, old, XDP_PASS, iface_prefix)?;
                let (nc, hc) =
                    if off { (&mut n_off, &mut h_off) } else { (&mut n_chunks, &mut h_chunks) };
                nc.add(n, p1, p2);
                hc.add(h, p1, p2);
                if !off {
                    filtered += (fresh.len() + old.len()) as u64;
                }
            }
            dp.set_no_flow_filter(false).context("the filter switch")?;
            let s1 = snapshot(&mut dp)?;
            ensure!(
                s1.flow_new - s0.flow_new == want_new
                    && s1.flow_new_stateless - s0.flow_new_stateless == want_new
                    && s1.flow_stateless_hit - s0.flow_stateless_hit == want_stateless_hit
                    && s1.flow_hit == s0.flow_hit
                    && s1.flow_filter_skip - s0.flow_filter_skip == filtered,
                "{family} stateless: {} new ({} without entry), {} table-only hits, {} hits, {} \
                 filter skips ({filtered} expected) for {CALLS} new and {CALLS} replayed packets",
                s1.flow_new - s0.flow_new,
                s1.flow_new_stateless - s0.flow_new_stateless,
                s1.flow_stateless_hit - s0.flow_stateless_hit,
                s1.flow_hit - s0.flow_hit,
                s1.flow_filter_skip - s0.flow_filter_skip,
            );
            new.push(&n_chunks);
            hit.push(&h_chunks);
            new_off.push(&n_off);
            hit_off.push(&h_off);
            previous = acks;
        }
        rows.push(per_call_row(
            format!("{family}_new_flow_stateless{sfx}"),
            if udp {
                "a new flow (UDP datagram from a new client address:port) every call, outside \
                 the service's table-change window: the filter skips the flow-table lookup, no \
                 entry written"
            } else {
                "a new flow (TCP SYN from a new client address:port) every call, outside the \
                 service's table-change window: the filter skips the flow-table lookup, no entry \
                 written"
            },
            new,
            floor_name,
        ));
        rows.push(per_call_row(
            format!("{family}_stateless_hit_percall{sfx}"),
            if udp {
                "the previous round's flows replayed (datagrams): no entry, the filter skips the \
                 lookup, the table alone picks the real, a different flow every call"
            } else {
                "the previous round's flows replayed as ACKs: no entry, the filter skips the \
                 lookup, the table alone picks the real, a different flow every call"
            },
            hit,
            floor_name,
        ));
        rows.push(per_call_row(
            format!("{family}_nofilter_new_flow_stateless{sfx}"),
            "as the new_flow_stateless row with the filter defeated (CFG_F_NO_FLOW_FILTER: the \
             lookup done, a miss), chunks interleaved with it",
            new_off,
            floor_name,
        ));
        rows.push(per_call_row(
            format!("{family}_nofilter_stateless_hit_percall{sfx}"),
            "as the stateless_hit_percall row with the filter defeated, chunks interleaved \
             with it",
            hit_off,
            floor_name,
        ));
    }
    Ok(rows)
}

/// Flows inside the window of a table change (docs/fast-path.md): the v4 service goes live with
/// four reals, then a fifth is added inside that window (the default 900 s window, which
/// outlasts the TCP entries), so the anchor and the active table name the same real for about
/// four flows in five. A SYN from a new client every call (`v4_window_new_flow`: an entry only
/// where the change moved the flow); the previous round's flows replayed as ACKs, those without
/// an entry (`v4_window_table_hit_percall`: the filter's skip, then both tables) and those with
/// one (`v4_window_entry_hit_percall`), in chunks of their own. Before, every flow of a window
/// was inserted, as in the window of a service going live (`v4_new_flow`, `v4_flow_hit_percall`).
/// Checked per round: every SYN a new flow, some inserted and most not; each replayed flow hits
/// its entry when it has one and takes the table when not.
fn change_window_rows(
    pass: &Xdp,
    iface_prefix: [u8; 5],
    floor_name: &str,
    sfx: &str,
) -> anyhow::Result<Vec<Row>> {
    let mut dp = load_lb()?;
    let mut d = desired();
    dp.apply(&d).context("programming the maps")?;
    let mut reals = d.services[0].reals.clone();
    reals.push(real(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 15)), 15));
    d.services[0] = fixture::service(IpAddr::V4(VIP), PORT, Protocol::Tcp, reals, TABLE_SIZE);
    dp.apply(&d).context("a fifth real inside the window")?;
    let table = dp.sync_maps().context("the flow table")?.flows;
    let has_entry = |n: usize| {
        let (src, sport) = client_v4(n);
        let key = lb_common::FlowKey {
            src: lb_common::addr_v4(src.octets()),
            dst: lb_common::addr_v4(VIP.octets()),
            ports: lb_common::ports_word(sport, PORT),
            proto: lb_common::IPPROTO_TCP,
            family: lb_common::FAMILY_V4,
            _pad: 0,
        };
        table.get(&key, 0).is_ok()
    };
    let mut next = 0usize;
    let mut batch = || {
        let range = next..next + CALLS;
        next += CALLS;
        range
    };
    let syns = |r: &std::ops::Range<usize>| -> Vec<Vec<u8>> {
        r.clone().map(|n| to_vip_v4(n, TCP_SYN)).collect()
    };
    let warm = batch();
    for chunk in syns(&warm).chunks(CHUNK) {
        per_call(dp.program()?, chunk, XDP_TX, REAL_MAC_PREFIX)?;
    }
    let mut previous = warm;
    let (mut new, mut table_hit, mut entry_hit) =
        (Series::default(), Series::default(), Series::default());
    let calls = CALLS as u64;
    for _ in 0..ROUNDS {
        let fresh = batch();
        let frames = syns(&fresh);
        // The previous round's flows, by whether the window gave them an entry.
        let (with, without): (Vec<usize>, Vec<usize>) =
            previous.clone().partition(|&n| has_entry(n));
        let acks =
            |ns: &[usize]| -> Vec<Vec<u8>> { ns.iter().map(|&n| to_vip_v4(n, TCP_ACK)).collect() };
        let (with, without) = (acks(&with), acks(&without));
        ensure!(
            with.len() > CALLS / 20 && without.len() > CALLS / 2,
            "change window: {} replayed flows with an entry, {} without",
            with.len(),
            without.len()
        );
        let s0 = snapshot(&mut dp)?;
        let mut c = [Chunks::default(), Chunks::default(), Chunks::default()];
        // Each replayed series once per round in order, then again from its start (the same
        // path again: a hit refreshes nothing within the second) to pair with every SYN chunk;
        // only the first pass is timed.
        let (w_chunks, e_chunks): (Vec<_>, Vec<_>) =
            (without.chunks(CHUNK).collect(), with.chunks(CHUNK).collect());
        let mut replayed = [0u64; 2];
        for (i, fresh) in frames.chunks(CHUNK).enumerate() {
            let (old, entry) = (w_chunks[i % w_chunks.len()], e_chunks[i % e_chunks.len()]);
            let (table_now, entry_now) = (i < w_chunks.len(), i < e_chunks.len());
            touch(fresh);
            touch(old);
            let p1 = per_call(pass, fresh, XDP_PASS, iface_prefix)?;
            let n = per_call(dp.program()?, fresh, XDP_TX, REAL_MAC_PREFIX)?;
            let t = per_call(dp.program()?, old, XDP_TX, REAL_MAC_PREFIX)?;
            let e = per_call(dp.program()?, entry, XDP_TX, REAL_MAC_PREFIX)?;
            let p2 = per_call(pass, old, XDP_PASS, iface_prefix)?;
            c[0].add(n, p1, p2);
            if table_now {
                c[1].add(t, p1, p2);
            }
            if entry_now {
                c[2].add(e, p1, p2);
            }
            replayed[0] += old.len() as u64;
            replayed[1] += entry.len() as u64;
        }
        let s1 = snapshot(&mut dp)?;
        let (new_flows, stateless) =
            (s1.flow_new - s0.flow_new, s1.flow_new_stateless - s0.flow_new_stateless);
        let (hits, table_hits) =
            (s1.flow_hit - s0.flow_hit, s1.flow_stateless_hit - s0.flow_stateless_hit);
        ensure!(
            new_flows == calls
                && stateless > calls / 2
                && stateless < calls
                && table_hits == replayed[0]
                && hits == replayed[1],
            "change window: {new_flows} new flows ({stateless} without an entry), {hits} hits \
             and {table_hits} table-only hits for {} replayed flows with an entry and {} \
             without",
            replayed[1],
            replayed[0]
        );
        let [a, b, e] = &c;
        new.push(a);
        table_hit.push(b);
        entry_hit.push(e);
        previous = fresh;
    }
    Ok(vec![
        per_call_row(
            format!("v4_window_new_flow{sfx}"),
            "a new flow (TCP SYN) every call inside the window of a change that moved about one \
             flow in five: an entry only for the moved ones",
            new,
            floor_name,
        ),
        per_call_row(
            format!("v4_window_table_hit_percall{sfx}"),
            "the previous round's flows of the window that have no entry (the change did not \
             move them) replayed as ACKs: the filter's skip, the anchor and the active table",
            table_hit,
            floor_name,
        ),
        per_call_row(
            format!("v4_window_entry_hit_percall{sfx}"),
            "the previous round's flows of the window that have an entry (the change moved \
             them) replayed as ACKs, chunks interleaved with the table_hit row",
            entry_hit,
            floor_name,
        ),
    ])
}

/// What the kernel's LRU hash map costs by itself for a flow-table write (`FlowKey` → `Binding`,
/// `FLOWS` entries): a new key per repetition (hot), the same key repeated (Katran's repeated
/// SYN), and a new key per call (as cold as the `new_flow` rows). Checked: the program's sequence
/// advanced once per run, and the run's first and last keys are in the map (nothing evicted).
/// With CAP_PERFMON only, the goal's setting (without it the verifier refuses the program's
/// stack memset).
fn lru_floor_rows(pass: &Xdp, frame: &[u8], floor_name: &str) -> anyhow::Result<Vec<Row>> {
    ensure!(
        std::fs::metadata(LRU_FLOOR_OBJECT).is_ok_and(|m| m.len() > 0),
        "{LRU_FLOOR_OBJECT} is missing or empty (built with AYA_BUILD_SKIP?)"
    );
    let mut ebpf = aya::EbpfLoader::new()
        .map_max_entries("LB_FLOOR_FLOWS", FLOWS)
        .map_max_entries("LB_FLOOR_FLOWS40", FLOWS)
        .map_max_entries("LB_FLOOR_FLOWS4", FLOWS)
        .load_file(LRU_FLOOR_OBJECT)
        .with_context(|| format!("opening {LRU_FLOOR_OBJECT}"))?;
    for name in [LRU_INSERT_PROGRAM, LRU_UPDATE_PROGRAM].iter().chain(&LRU_FRAME_PROGRAMS) {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name} in {LRU_FLOOR_OBJECT}"))?
            .try_into()
            .with_context(|| format!("{name} is not XDP"))?;
        prog.load().with_context(|| format!("loading {name}"))?;
    }
    let insert: &Xdp = ebpf.program(LRU_INSERT_PROGRAM).context("insert program")?.try_into()?;
    let update: &Xdp = ebpf.program(LRU_UPDATE_PROGRAM).context("update program")?.try_into()?;
    let seq_map: aya::maps::PerCpuArray<_, u32> =
        aya::maps::PerCpuArray::try_from(ebpf.map("LB_FLOOR_SEQ").context("sequence map")?)?;
    let flows: aya::maps::HashMap<_, lb_common::FlowKey, lb_common::Binding> =
        aya::maps::HashMap::try_from(ebpf.map("LB_FLOOR_FLOWS").context("flows map")?)?;
    // Keys written so far, over all CPUs (the thread is pinned, but count them all anyway).
    let seq =
        || -> anyhow::Result<u64> { Ok(seq_map.get(&0, 0)?.iter().map(|&v| u64::from(v)).sum()) };
    // Whether key `n` (as the program builds it) is in the map.
    let has_key = |n: u64| -> bool {
        let key = lb_common::FlowKey {
            src: [(n as u32).to_be(), 0, 0, 0],
            dst: [0x6402_00c0, 0, 0, 0],
            ports: 0x5000_409c,
            proto: lb_common::IPPROTO_TCP,
            family: lb_common::FAMILY_V4,
            _pad: 0,
        };
        flows.get(&key, 0).is_ok()
    };
    let mut rows = Vec::new();

    // A new key every repetition, hot.
    let first = seq()? + 1;
    let (mut kernel, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let before = seq()?;
        let r = repeat_run(insert, frame, LRU_REPEAT)?;
        let after = seq()?;
        ensure!(r.verdict == XDP_PASS, "LRU insert: verdict {} (want XDP_PASS)", r.verdict);
        ensure!(
            after - before == u64::from(LRU_REPEAT) && has_key(before + 1) && has_key(after),
            "LRU insert: {} keys written for {LRU_REPEAT} repetitions, or a key is missing",
            after - before
        );
        kernel.push(r.kernel_ns);
        wall.push(r.wall_ns);
    }
    rows.push(repeat_row("lru_insert_new_key", LRU_REPEAT, kernel, wall, Some(floor_name)));

    // The same key every repetition: the kernel still takes a free element and drops the old one.
    let (mut kernel, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let r = repeat_run(update, frame, REPEAT)?;
        ensure!(r.verdict == XDP_PASS, "LRU update: verdict {} (want XDP_PASS)", r.verdict);
        ensure!(has_key(0), "LRU update: the repeated key is not in the map");
        kernel.push(r.kernel_ns);
        wall.push(r.wall_ns);
    }
    rows.push(repeat_row("lru_update_same_key", REPEAT, kernel, wall, Some(floor_name)));

    // A new key every call, as cold as the per-call new-flow rows.
    let frames = vec![frame.to_vec(); CHUNK];
    let dst_prefix: [u8; 5] = frame[..5].try_into().context("MAC prefix")?;
    per_call(insert, &frames, XDP_PASS, dst_prefix)?;
    let mut series = Series::default();
    for _ in 0..ROUNDS {
        let before = seq()?;
        let mut chunks = Chunks::default();
        for _ in 0..CALLS / CHUNK {
            let p1 = per_call(pass, &frames, XDP_PASS, dst_prefix)?;
            let n = per_call(insert, &frames, XDP_PASS, dst_prefix)?;
            let p2 = per_call(pass, &frames, XDP_PASS, dst_prefix)?;
            chunks.add(n, p1, p2);
        }
        let after = seq()?;
        let calls = ((CALLS / CHUNK) * CHUNK) as u64;
        ensure!(
            after - before == calls && has_key(before + 1) && has_key(after),
            "LRU insert per call: {} keys written for {calls} calls, or a key is missing",
            after - before
        );
        series.push(&chunks);
    }
    ensure!(has_key(first), "LRU insert: the run's first key was evicted");
    rows.push(per_call_row(
        "lru_insert_percall".to_owned(),
        "the flow table's LRU insert alone, a new key every call",
        series,
        floor_name,
    ));
    rows.extend(lru_key_size_rows(&ebpf, pass, floor_name)?);
    Ok(rows)
}

/// What the key's size costs the flow table (goal 2 of issue #20): distinct v4 flows (the
/// `new_flow` rows' SYNs), one call each, inserted into and then looked up in two empty
/// `FLOWS`-entry LRU maps, one keyed by the 40-byte `FlowKey`, one by a 16-byte v4 key. As in
/// the `flow_hit_percall` rows, round r inserts its flows and looks up round r - 1's. The two
/// maps' calls alternate per chunk (and which goes first, per chunk), so their ratio is in-run.
/// Checked by verdicts: every insert succeeded and every lookup hit.
fn lru_key_size_rows(ebpf: &Ebpf, pass: &Xdp, floor_name: &str) -> anyhow::Result<Vec<Row>> {
    let prog = |name: &str| -> anyhow::Result<&Xdp> {
        Ok(ebpf.program(name).with_context(|| format!("no program {name}"))?.try_into()?)
    };
    let [insert40, lookup40, insert4, lookup4] = LRU_FRAME_PROGRAMS;
    let (insert40, lookup40, insert4, lookup4) =
        (prog(insert40)?, prog(lookup40)?, prog(insert4)?, prog(lookup4)?);
    let mut next = 0usize;
    let mut batch = || {
        let range = next..next + CALLS;
        next += CALLS;
        range.map(|n| to_vip_v4(n, TCP_SYN)).collect::<Vec<_>>()
    };
    let mut previous = batch();
    let prefix: [u8; 5] = previous[0][..5].try_into().context("MAC prefix")?;
    for chunk in previous.chunks(CHUNK) {
        per_call(insert40, chunk, XDP_PASS, prefix)?;
        per_call(insert4, chunk, XDP_PASS, prefix)?;
    }
    let (mut ins40, mut ins4, mut look40, mut look4) =
        (Series::default(), Series::default(), Series::default(), Series::default());
    for _ in 0..ROUNDS {
        let frames = batch();
        let mut c = [Chunks::default(), Chunks::default(), Chunks::default(), Chunks::default()];
        for (i, (fresh, old)) in frames.chunks(CHUNK).zip(previous.chunks(CHUNK)).enumerate() {
            touch(fresh);
            touch(old);
            let p1 = per_call(pass, fresh, XDP_PASS, prefix)?;
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            // [insert 40, insert 16, lookup 40, lookup 16]
            let mut raw = [PerCall { wall_ns: 0.0, kernel_ns: 0.0 }; 4];
            for k in order {
                let (insert, lookup) =
                    if k == 0 { (insert40, lookup40) } else { (insert4, lookup4) };
                raw[k] = per_call(insert, fresh, XDP_PASS, prefix)?;
                raw[k + 2] = per_call(lookup, old, XDP_PASS, prefix)?;
            }
            let p2 = per_call(pass, old, XDP_PASS, prefix)?;
            for (chunks, raw) in c.iter_mut().zip(raw) {
                chunks.add(raw, p1, p2);
            }
        }
        let [a, b, l40, l4] = &c;
        ins40.push(a);
        ins4.push(b);
        look40.push(l40);
        look4.push(l4);
        previous = frames;
    }
    Ok(vec![
        per_call_row(
            "lru_insert40_percall".to_owned(),
            "a distinct v4 flow inserted into an LRU map keyed by the 40-byte FlowKey, every call",
            ins40,
            floor_name,
        ),
        per_call_row(
            "lru_insert16_percall".to_owned(),
            "as lru_insert40_percall with a 16-byte v4 key, chunks interleaved with it",
            ins4,
            floor_name,
        ),
        per_call_row(
            "lru_lookup40_percall".to_owned(),
            "the previous round's flows looked up (hits) in the 40-byte-key map, every call",
            look40,
            floor_name,
        ),
        per_call_row(
            "lru_lookup16_percall".to_owned(),
            "as lru_lookup40_percall in the 16-byte-key map, chunks interleaved with it",
            look4,
            floor_name,
        ),
    ])
}

/// Per-chunk results of a per-call row: the program's cost above the pass program, in wall clock
/// and in the kernel's own duration, for each chunk of `CHUNK` calls. The medians over chunks
/// ignore chunks in which the thread was preempted.
#[derive(Default)]
struct Chunks {
    wall: Vec<f64>,
    kernel: Vec<f64>,
    overhead: Vec<f64>,
    overhead_kernel: Vec<f64>,
    raw_wall: Vec<f64>,
}

impl Chunks {
    /// `prog` measured between two runs of the pass program (`p1`, `p2`) on frames of the same
    /// size; their mean is the per-call overhead subtracted.
    fn add(&mut self, prog: PerCall, p1: PerCall, p2: PerCall) {
        let floor_wall = (p1.wall_ns + p2.wall_ns) / 2.0;
        let floor_kernel = (p1.kernel_ns + p2.kernel_ns) / 2.0;
        self.wall.push(prog.wall_ns - floor_wall);
        self.kernel.push(prog.kernel_ns - floor_kernel);
        self.overhead.push(floor_wall);
        self.overhead_kernel.push(floor_kernel);
        self.raw_wall.push(prog.wall_ns);
    }
}

/// Per-round medians of a per-call row.
#[derive(Default)]
struct Series(Chunks);

impl Series {
    fn push(&mut self, c: &Chunks) {
        self.0.wall.push(median(&c.wall));
        self.0.kernel.push(median(&c.kernel));
        self.0.overhead.push(median(&c.overhead));
        self.0.overhead_kernel.push(median(&c.overhead_kernel));
        self.0.raw_wall.push(median(&c.raw_wall));
    }
}

fn per_call_row(name: String, what: &str, series: Series, floor: &str) -> Row {
    let Series(c) = series;
    let rounded = |v: &[f64]| v.iter().map(|&x| round1(x)).collect::<Vec<_>>();
    let extra = vec![
        ("wall_ns_per_call", json!(round1(median(&c.raw_wall)))),
        ("per_call_overhead_ns", json!(round1(median(&c.overhead)))),
        ("kernel_duration_minus_pass_ns", json!(round1(median(&c.kernel)))),
        ("kernel_duration_minus_pass_samples", json!(rounded(&c.kernel))),
        ("pass_kernel_duration_ns", json!(round1(median(&c.overhead_kernel)))),
    ];
    Row {
        name,
        value: median(&c.wall),
        unit: "ns",
        method: format!(
            "per-call: {what}; repeat=1, wall clock per call in chunks of {CHUNK} calls, minus \
             the pass program's per-call wall clock on the same frames (chunks before and \
             after); median over chunks, then over rounds"
        ),
        samples: c.wall,
        extra,
        floor: Some(floor.to_owned()),
    }
}

/// A row measured with one `repeat`-long call per round (`repeat` repetitions each).
fn repeat_row(
    name: &str,
    repeat: u32,
    kernel: Vec<f64>,
    wall: Vec<f64>,
    floor: Option<&str>,
) -> Row {
    Row {
        name: name.to_owned(),
        value: median(&kernel),
        unit: "ns",
        method: format!(
            "repeat={repeat}: kernel per-repetition average (whole ns), every repetition \
             checked by counters"
        ),
        samples: kernel,
        extra: vec![("wall_ns_per_repetition", json!(round1(median(&wall))))],
        floor: floor.map(str::to_owned),
    }
}

// ---- memory ------------------------------------------------------------------------------------

/// Bytes the latency probe chases through: far beyond any last-level cache, like the flow table
/// (1 Mi entries: about 120 MiB of buckets and elements, as bpftool reports its memlock).
const LATENCY_BYTES: usize = 256 << 20;
/// Dependent loads timed per round.
const LATENCY_LOADS: usize = 2_000_000;

/// What one random read from memory costs on this machine: a chain of dependent loads through a
/// random cyclic permutation of a large buffer on 4 KiB pages (as the kernel's vmalloc'ed map
/// memory), so every load waits for the previous one. A flow table sized for a million flows
/// cannot keep a new flow's bucket in cache, so this bounds a new flow from below.
fn memory_latency_row() -> anyhow::Result<Row> {
    let n = LATENCY_BYTES / size_of::<usize>();
    let mut next: Vec<usize> = (0..n).collect();
    // SAFETY: advice on memory this Vec owns; failure only means huge pages may be used.
    unsafe {
        libc::madvise(next.as_mut_ptr().cast(), LATENCY_BYTES, libc::MADV_NOHUGEPAGE);
    }
    // Sattolo's algorithm: one cycle through all slots, in a random order (xorshift, fixed seed).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = (x % i as u64) as usize;
        next.swap(i, j);
    }
    let mut samples = Vec::new();
    let mut at = 0usize;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..LATENCY_LOADS {
            at = next[at];
        }
        samples.push(start.elapsed().as_nanos() as f64 / LATENCY_LOADS as f64);
    }
    std::hint::black_box(at);
    Ok(Row {
        name: "memory_random_read".to_owned(),
        value: round1(median(&samples)),
        unit: "ns",
        method: format!(
            "in-process: {LATENCY_LOADS} dependent loads at random through {} MiB on 4 KiB \
             pages, wall clock per load",
            LATENCY_BYTES >> 20
        ),
        samples,
        extra: Vec::new(),
        floor: None,
    })
}

// ---- Maglev -----------------------------------------------------------------------------------

fn maglev_rows() -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for n in [10u32, 100, 1000] {
        let names: Vec<String> =
            (0..n).map(|i| format!("10.1.{}.{}:80", i / 256, i % 256)).collect();
        let backends: Vec<maglev::Backend<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, name)| maglev::Backend { name, weight: 1, id: i as u32 + 1 })
            .collect();
        let seed = u64::from(lb_common::DEFAULT_HASH_SEED);
        let table = maglev::build(&backends, TABLE_SIZE, seed);
        ensure!(
            table.len() == TABLE_SIZE as usize && table.iter().all(|&id| id >= 1 && id <= n),
            "Maglev table for {n} backends is incomplete"
        );
        let (mut samples, mut wall) = (Vec::new(), Vec::new());
        for _ in 0..MAGLEV_RUNS {
            let (cpu0, start) = (thread_cpu_ns()?, Instant::now());
            let t = maglev::build(std::hint::black_box(&backends), TABLE_SIZE, seed);
            let (cpu1, elapsed) = (thread_cpu_ns()?, start.elapsed());
            std::hint::black_box(t);
            samples.push((cpu1 - cpu0) as f64 / 1000.0);
            wall.push(elapsed.as_nanos() as f64 / 1000.0);
        }
        rows.push(Row {
            name: format!("maglev_build_{n}"),
            value: median(&samples),
            unit: "µs",
            method: format!(
                "lb::maglev::build, {n} reals of weight 1, M = {TABLE_SIZE}: CPU time of the \
                 building thread (time other processes run on its CPU does not count), one \
                 warm-up then median of {MAGLEV_RUNS} runs"
            ),
            samples,
            extra: vec![("wall_us", json!(round1(median(&wall))))],
            floor: None,
        });
    }
    Ok(rows)
}

// ---- health checks and reconciliation ---------------------------------------------------------

/// A config with one service of `n` reals on `lo`, each with a TCP check (port 7 on 127.x.y.z).
fn health_config(n: u32, delay_loop: f64) -> anyhow::Result<lb::config::Config> {
    struct AnyHost;
    impl lb::config::HostView for AnyHost {
        fn interface_exists(&self, _: &str) -> bool {
            true
        }
    }
    // Validation refuses loopback VIPs and reals (no director forwards to them), so the file
    // says 10.1.x.y and the model is moved onto 127/8 after: the checks need local targets.
    let mut text = format!(
        "[dataplane]\nmax_reals = {}\n[[virtual_server]]\nvip = \"10.0.0.100\"\nport = 7\ninterface = \"lo\"\ndelay_loop = {delay_loop}\n",
        n + 16
    );
    for i in 0..n {
        text.push_str(&format!(
            "[[virtual_server.real_server]]\naddress = \"10.1.{}.{}\"\n[virtual_server.real_server.tcp_check]\nconnect_timeout = 1\nretry = 0\n",
            i / 250,
            i % 250 + 1
        ));
    }
    let mut config = lb::config::parse_toml(&text, std::path::Path::new("bench.toml"), &AnyHost)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let loopback = |address: std::net::IpAddr| match address {
        std::net::IpAddr::V4(v4) => {
            let [_, b, c, d] = v4.octets();
            std::net::IpAddr::from([127, b, c, d])
        }
        v6 => v6,
    };
    for vs in &mut config.virtual_servers {
        vs.vip = loopback(vs.vip);
        for rs in &mut vs.real_servers {
            rs.address = loopback(rs.address);
        }
    }
    Ok(config)
}

/// How long a real's health transition takes to reach the maps: `desired_state` (including the
/// Maglev rebuild) plus `Dataplane::apply`, on a service with 10 reals and M = 65537.
fn reconcile_rows() -> anyhow::Result<Vec<Row>> {
    use lb::{
        desired::{HostFacts, Inputs, desired_state},
        health::state::{HealthSnapshot, RealHealth},
        net::neigh::Neighbours,
        overrides::Overrides,
    };
    isolate_thread()?;
    let config = health_config(10, 1.0)?;
    let lo = lb::net::iface::lookup("lo").context("lo")?;
    let mut host = HostFacts::default();
    host.interfaces.insert("lo".into(), lo.clone());
    let mut neigh = Neighbours::default();
    for rs in &config.virtual_servers[0].real_servers {
        neigh.0.insert((lo.ifindex, rs.address), Mac([0x52, 0x54, 0, 0, 0, 1]));
    }
    host.neighbours = neigh;
    let mut dp = XdpDataplane::load(XdpModeSetting::Generic, XdpLimits::default())
        .context("loading the dataplane")?;
    let overrides = Overrides::default();
    let vs = &config.virtual_servers[0];
    let id = (vs.key(), vs.real_servers[0].address, vs.real_servers[0].port);
    let mut samples = Vec::new();
    for round in 0..41 {
        let mut health = HealthSnapshot::default();
        health.reals.insert(
            id,
            RealHealth { up: round % 2 == 0, weight: None, latency: None, message: String::new() },
        );
        let start = Instant::now();
        let vrrp = lb::desired::VrrpStates::default();
        let plan = lb::dataplane::select::Plan::default();
        let desired = desired_state(&Inputs {
            config: &config,
            host: &host,
            health: &health,
            overrides: &overrides,
            vrrp: &vrrp,
            plan: &plan,
        });
        dp.apply(&desired).context("apply")?;
        if round > 0 {
            samples.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(vec![Row {
        name: "health_change_to_maps".into(),
        value: median(&samples),
        unit: "ms",
        method: "a real's check result flips up/down: desired_state (Maglev rebuild, M = 65537, \
                 10 reals) + XdpDataplane::apply (the changed half of the table, the service \
                 swap); median of 40 flips"
            .into(),
        samples,
        extra: vec![],
        floor: None,
    }])
}

/// The agent-scale rows' size (issue 20's goal: 1,000 services x 10 reals).
const SCALE_SERVICES: u32 = 1000;
const SCALE_REALS: u32 = 10;
/// Reloads of one changed real measured (alternating its weight 1 and 2).
const SCALE_RELOADS: usize = 6;

/// Resident set of this process, in MiB (VmRSS of /proc/self/status).
fn rss_mib() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kb / 1024.0)
}

/// What the agent does at start-up and on a reload, at scale, without the process around it:
/// parse the config, `desired_state` (what decides every service's Maglev table), the first
/// `XdpDataplane::apply` into empty maps, then reloads that change one real's weight
/// (`desired_state` + `apply`). Also the resident memory these leave held. Services on the
/// private namespace's `lo`, reals with known MACs, default table size (M = 65537).
fn scale_rows() -> anyhow::Result<Vec<Row>> {
    use lb::{
        desired::{HostFacts, Inputs, desired_state},
        health::state::HealthSnapshot,
        net::neigh::Neighbours,
        overrides::Overrides,
    };
    struct AnyHost;
    impl lb::config::HostView for AnyHost {
        fn interface_exists(&self, _: &str) -> bool {
            true
        }
    }
    isolate_thread()?;
    let rss0 = rss_mib()?;
    let (n, r) = (SCALE_SERVICES, SCALE_REALS);
    let mut text = format!("[dataplane]\nmax_services = {}\nmax_reals = {}\n", n + 24, n * r + 16);
    for s in 0..n {
        text.push_str(&format!(
            "[[virtual_server]]\nvip = \"10.0.{}.{}\"\nport = 80\ninterface = \"lo\"\n",
            s / 250,
            s % 250 + 1
        ));
        for i in 0..r {
            let k = s * r + i;
            text.push_str(&format!(
                "[[virtual_server.real_server]]\naddress = \"10.{}.{}.{}\"\n",
                k / 62500 + 1,
                k / 250 % 250,
                k % 250 + 1
            ));
        }
    }
    let t = Instant::now();
    let mut config = lb::config::parse_toml(&text, std::path::Path::new("scale.toml"), &AnyHost)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let parse_ms = t.elapsed().as_secs_f64() * 1000.0;
    drop(text);
    let lo = lb::net::iface::lookup("lo").context("lo")?;
    let mut host = HostFacts::default();
    host.interfaces.insert("lo".into(), lo.clone());
    let mut neigh = Neighbours::default();
    for vs in &config.virtual_servers {
        for rs in &vs.real_servers {
            neigh.0.insert((lo.ifindex, rs.address), lb::net::Mac([0x52, 0x54, 0, 0, 0, 1]));
        }
    }
    host.neighbours = neigh;
    // Three ring areas per service (the active table, a window's anchor, one to write into).
    let tables: u32 = config.virtual_servers.iter().map(|v| 3 * v.table_size).sum();
    let limits = XdpLimits {
        max_services: n + 24,
        max_reals: n * r + 17,
        ring_entries: tables,
        flows: 1 << 16,
    };
    let mut dp =
        XdpDataplane::load(XdpModeSetting::Generic, limits).context("loading the dataplane")?;
    let (health, overrides) = (HealthSnapshot::default(), Overrides::default());
    let (vrrp, plan) = (lb::desired::VrrpStates::default(), lb::dataplane::select::Plan::default());
    let desire = |config: &lb::config::Config| {
        desired_state(&Inputs {
            config,
            host: &host,
            health: &health,
            overrides: &overrides,
            vrrp: &vrrp,
            plan: &plan,
        })
    };
    let t = Instant::now();
    let desired = desire(&config);
    let desired_ms = t.elapsed().as_secs_f64() * 1000.0;
    ensure!(
        desired.services.len() == n as usize
            && desired.services.iter().all(|s| !s.ring.is_empty() && s.reals.len() == r as usize),
        "the scale config did not give {n} services with a table each"
    );
    let t = Instant::now();
    dp.apply(&desired).context("first apply")?;
    let apply_ms = t.elapsed().as_secs_f64() * 1000.0;
    let first_writes = dp.ring_writes();
    let rss = rss_mib()? - rss0;
    let mut desired = Some(desired);
    let (mut reload, mut reload_writes) = (Vec::new(), Vec::new());
    for round in 0..SCALE_RELOADS {
        config.virtual_servers[n as usize / 2].real_servers[3].weight = 2 + round as u32;
        let writes = dp.ring_writes();
        let t = Instant::now();
        let next = desire(&config);
        dp.apply(&next).context("reload apply")?;
        // The agent keeps the applied state; the previous one goes (as in a reload's switch).
        drop(desired.replace(next));
        reload.push(t.elapsed().as_secs_f64() * 1000.0);
        reload_writes.push((dp.ring_writes() - writes) as f64);
    }
    let method = |what: &str| {
        format!(
            "{n} services x {r} reals (M = {}), in-process, private netns `lo`: {what}",
            maglev::DEFAULT_SIZE
        )
    };
    let row = |name: &str, value: f64, unit: &'static str, what: &str, extra| Row {
        name: name.into(),
        value: round1(value),
        unit,
        method: method(what),
        samples: vec![value],
        extra,
        floor: None,
    };
    Ok(vec![
        row("agent_scale_parse_ms", parse_ms, "ms", "config::parse_toml of the file", vec![]),
        row(
            "agent_scale_desired_ms",
            desired_ms,
            "ms",
            "desired_state (what decides each Maglev table; tables are built by the apply), \
             wall clock",
            vec![],
        ),
        row(
            "agent_scale_first_apply_ms",
            apply_ms,
            "ms",
            "the first XdpDataplane::apply into empty maps (building every table), wall clock",
            vec![("ring_writes", json!(first_writes))],
        ),
        row(
            "agent_scale_start_ms",
            parse_ms + desired_ms + apply_ms,
            "ms",
            "parse + desired_state + first apply: start-up's share before serving",
            vec![],
        ),
        Row {
            name: "agent_scale_reload_one_real_ms".into(),
            value: round1(median(&reload)),
            unit: "ms",
            method: method(&format!(
                "one real's weight changes (2, 3, 4, ...): desired_state + apply, median of \
                 {SCALE_RELOADS}; ring_writes = Maglev entries written by each reload"
            )),
            samples: reload,
            extra: vec![("ring_writes", json!(reload_writes))],
            floor: None,
        },
        row(
            "agent_scale_state_rss_mib",
            rss,
            "MiB",
            "growth of this process's VmRSS from before the config to after the first apply \
             (config, desired state, dataplane bookkeeping held)",
            vec![],
        ),
    ])
}

/// TCP_CHECK throughput: `REALS` reals checked every `DELAY` s (each check rescheduled `DELAY`
/// after it ends, as keepalived does, so somewhat under REALS / DELAY checks/s) by a health
/// monitor on a single-threaded runtime; reports that thread's CPU use. Listeners on another
/// thread. Rows `{name}_per_s` (`health_tcp_checks_per_s` for the first) and `{name}_cpu`.
fn health_rows(reals: u32, delay: f64, name: &str) -> anyhow::Result<Vec<Row>> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const SECONDS: u64 = 5;
    let listener = std::net::TcpListener::bind("0.0.0.0:7").context("binding the check target")?;
    // (0.0.0.0 of the benchmark's private network namespace.)
    let accepted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (acc, st) = (accepted.clone(), stop.clone());
    listener.set_nonblocking(true)?;
    let acceptor = std::thread::spawn(move || {
        while !st.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok(_) => {
                    acc.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    });
    let config = health_config(reals, delay)?;
    let result = std::thread::spawn(move || -> anyhow::Result<(f64, f64)> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let monitor = lb::health::HealthMonitor::start(
                lb::health::monitored_reals(&config),
                lb::health::DEFAULT_CONCURRENCY,
            )?;
            tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
            let (cpu0, a0, t0) =
                (thread_cpu_ns()?, accepted.load(Ordering::Relaxed), Instant::now());
            tokio::time::sleep(Duration::from_secs(SECONDS)).await;
            let (cpu1, a1, wall) =
                (thread_cpu_ns()?, accepted.load(Ordering::Relaxed), t0.elapsed());
            monitor.stop().await;
            let rate = (a1 - a0) as f64 / wall.as_secs_f64();
            let cpu = (cpu1 - cpu0) as f64 / wall.as_nanos() as f64 * 100.0;
            Ok::<_, anyhow::Error>((rate, cpu))
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("health benchmark panicked"))?;
    stop.store(true, Ordering::Relaxed);
    let _ = acceptor.join();
    let (rate, cpu) = result?;
    ensure!(rate > 0.0, "no health check reached the listener");
    let method = format!(
        "{reals} reals with TCP_CHECK every {delay} s against local listeners, one tokio \
         current-thread runtime; checks counted at the listener over {SECONDS} s"
    );
    Ok(vec![
        Row {
            name: format!("{name}_per_s"),
            value: rate.round(),
            unit: "checks/s",
            method: method.clone(),
            samples: vec![rate],
            extra: vec![],
            floor: None,
        },
        Row {
            name: format!("{name}_cpu"),
            value: (cpu * 10.0).round() / 10.0,
            unit: "% of one core",
            method,
            samples: vec![cpu],
            extra: vec![],
            floor: None,
        },
    ])
}

/// CPU time the calling thread has used, in ns.
fn thread_cpu_ns() -> anyhow::Result<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ensure!(rc == 0, "clock_gettime: {}", std::io::Error::last_os_error());
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

// ---- output -----------------------------------------------------------------------------------

fn ratio(rows: &[Row], row: &Row) -> Option<f64> {
    let floor = rows.iter().find(|r| Some(&r.name) == row.floor.as_ref())?;
    (floor.value > 0.0).then(|| row.value / floor.value)
}

fn to_json(rows: &[Row]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                let mut o = serde_json::Map::new();
                o.insert("name".into(), json!(r.name));
                o.insert("value".into(), json!(round1(r.value)));
                o.insert("unit".into(), json!(r.unit));
                o.insert("method".into(), json!(r.method));
                if let Some(x) = ratio(rows, r) {
                    o.insert("ratio_to_floor".into(), json!((x * 100.0).round() / 100.0));
                }
                o.insert("rounds".into(), json!(r.samples.len()));
                let samples: Vec<f64> = r.samples.iter().map(|&s| round1(s)).collect();
                o.insert("samples".into(), json!(samples));
                for (k, v) in &r.extra {
                    o.insert((*k).into(), v.clone());
                }
                Value::Object(o)
            })
            .collect(),
    )
}

fn print_table(rows: &[Row]) {
    println!("| row | value | unit | × floor | method |");
    println!("|---|---:|---|---:|---|");
    for r in rows {
        let x = ratio(rows, r).map_or_else(|| "—".to_owned(), |x| format!("{x:.1}"));
        let method = if r.method.starts_with("repeat") {
            r.method.split(':').next().unwrap_or_default().to_owned()
        } else if r.method.starts_with("per-call") {
            "per-call − pass per-call".to_owned()
        } else if r.name.starts_with("maglev") {
            "thread CPU time".to_owned()
        } else {
            "in-process, see method".to_owned()
        };
        println!("| `{}` | {:.1} | {} | {x} | {method} |", r.name, r.value, r.unit);
    }
    let v4 = rows.iter().find(|r| r.name == "v4_new_flow");
    if let Some(v4) = v4 {
        let met = if v4.value <= 50.0 { "met" } else { "NOT met" };
        println!("\ngoal v4_new_flow ≤ 50 ns (with CAP_PERFMON): {met} ({:.1} ns)", v4.value);
        // What no program on this flow table can go below here (BENCHMARKS.md, "Goal").
        let value = |name: &str| rows.iter().find(|r| r.name == name).map(|r| r.value);
        if let (Some(write), Some(read)) =
            (value("lru_update_same_key"), value("memory_random_read"))
        {
            println!(
                "  for reference: the flow table's LRU map write alone {write:.1} ns (same key, \
                 hot); one random memory read {read:.1} ns"
            );
        }
    }
}
