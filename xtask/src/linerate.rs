//! `cargo xtask bench --line-rate`: frames per second forwarded by a director whose interface is
//! a veth in native XDP mode, for six loads (UDP: one flow, many established flows, only new
//! flows; TCP: ACKs of many established connections and SYNs of new ones; all to services whose
//! table-change window has ended; and UDP new flows inside a window, every one inserted), by
//! three dataplanes measured side by side in one run:
//!
//! - `ceiling`: a program that only swaps the MACs and returns `XDP_TX` (what this machine can
//!   forward through XDP on veth at all);
//! - `lb`: the release `lb run` (`--xdp-mode native`), a UDP all-ports service and a TCP service,
//!   each with three reals;
//! - `stack`: no XDP program, the kernel's IPv4 forwarding (the VIP routed to a real).
//!
//! Lab: namespaces `PREFIX-lrg` (the generator, `gen0`) and `PREFIX-lrd` (the director, `eth0`),
//! one veth between them. The generator is a thread in `PREFIX-lrg` sending 64-byte UDP frames
//! in batches of 64 with `sendmmsg(2)` on an `AF_PACKET` socket that bypasses the qdisc,
//! rewriting the ports of each frame for the flow loads. Whatever the director forwards comes
//! back to `gen0` (the reals' MAC is the generator's), where an XDP program that drops
//! everything counts it (the veth's `rx_queue_N_xdp_packets`). Offered frames are `gen0`'s
//! `tx_packets`. Everything shares this machine's CPUs: the generator, the director's softirq
//! and the counter, so the numbers are this machine's, compared within one run.
//!
//! The XDP programs (ceiling, counter) are a few BPF instructions written here and loaded with
//! bpf(2), so nothing but the kernel is needed. (Debian's xdp-tools 1.3.1 `xdp-trafficgen` and
//! `xdp-bench` fail to load on this kernel, which lacks the `xdp_redirect_map_err` tracepoint
//! they attach to, and BPF_PROG_RUN's live-frames mode answers EPERM here.)

use std::{
    fmt::Write as _,
    fs,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use lb_tests::{LbAgent, Netns, unique_prefix};

use crate::{run, workspace_root};

const GEN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
const DIR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x02];
const GEN_IP: [u8; 4] = [10, 99, 0, 1];
const VIP: [u8; 4] = [10, 99, 0, 100];
const REALS: [&str; 3] = ["10.99.0.11", "10.99.0.12", "10.99.0.13"];
/// Seconds of warm-up (flow tables fill, caches settle) before each measured window.
const WARMUP: Duration = Duration::from_secs(1);
const WINDOW: Duration = Duration::from_secs(3);
/// The TCP service of the TCP loads.
const TCP_PORT: u16 = 80;
/// After the agent is up: its services' first window (`tcp_flow_timeout` 1 s, + 1 s for the
/// program's coarse clock) is over.
const WINDOW_END: Duration = Duration::from_millis(2500);
/// `tcp_flow_timeout` of the in-window load: the window its start opens outlasts the
/// measurement.
const LONG_WINDOW_SECS: u32 = 60;

/// What the generator sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Load {
    /// One UDP 5-tuple.
    OneFlow,
    /// 65,536 flows (random source port, fixed destination port), outside a window: after the
    /// warm-up every one has been seen (a program that inserts UDP flows has them all in its
    /// flow table; one on the fast path of docs/fast-path.md has none).
    Established,
    /// Random source and destination port on every frame (2^32 tuples): practically every frame
    /// starts a new flow.
    NewFlows,
    /// `NewFlows` inside the service's table-change window: every flow gets an entry (the
    /// insert path a UDP service takes after a change, and every UDP flow before the fast path).
    WindowNewFlows,
    /// TCP ACKs of 65,536 connections (random source port) to a TCP service whose table-change
    /// window has ended (docs/fast-path.md): what a director forwards most of the time.
    TcpEstablished,
    /// TCP SYNs from random source ports to that service: new connections outside a window.
    TcpNewFlows,
}

impl Load {
    const ALL: [Load; 6] = [
        Load::OneFlow,
        Load::Established,
        Load::NewFlows,
        Load::WindowNewFlows,
        Load::TcpEstablished,
        Load::TcpNewFlows,
    ];

    fn name(self) -> &'static str {
        match self {
            Load::OneFlow => "one_flow",
            Load::Established => "established_flows",
            Load::NewFlows => "new_flows",
            Load::WindowNewFlows => "window_new_flows",
            Load::TcpEstablished => "tcp_established_flows",
            Load::TcpNewFlows => "tcp_new_flows",
        }
    }

    fn is_tcp(self) -> bool {
        matches!(self, Load::TcpEstablished | Load::TcpNewFlows)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forwarder {
    Ceiling,
    Lb,
    Stack,
}

impl Forwarder {
    const ALL: [Forwarder; 3] = [Forwarder::Ceiling, Forwarder::Lb, Forwarder::Stack];

    fn name(self) -> &'static str {
        match self {
            Forwarder::Ceiling => "ceiling",
            Forwarder::Lb => "lb",
            Forwarder::Stack => "stack",
        }
    }
}

pub fn line_rate() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask bench --line-rate needs root (network namespaces, XDP, bpf(2))");
    }
    let root = workspace_root()?;
    let target = crate::target_dir(&root);
    // LB_BIN: an `lb` already built (the XDP program is the same in every profile).
    let lb = match std::env::var_os("LB_BIN") {
        Some(p) => p.into(),
        None => {
            run(Command::new("cargo").current_dir(&root).args([
                "build",
                "--release",
                "-p",
                "lb-userspace",
                "--bin",
                "lb",
            ]))?;
            target.join("release").join("lb")
        }
    };
    let rounds: usize =
        std::env::var("LB_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let lab = Lab::build()?;
    let machine = machine();
    println!("{machine}");
    // (load, forwarder) -> Mpps per round; rounds interleave the forwarders.
    let mut results: Vec<(Load, Forwarder, Vec<Sample>)> = Vec::new();
    for load in Load::ALL {
        for f in Forwarder::ALL {
            results.push((load, f, Vec::new()));
        }
        for round in 0..rounds {
            for f in Forwarder::ALL {
                let sample = lab.measure(load, f, &lb)?;
                eprintln!(
                    "{} {} round {round}: {:.3} Mpps forwarded of {:.3} Mpps offered",
                    load.name(),
                    f.name(),
                    sample.forwarded,
                    sample.offered
                );
                if let Some(r) = results.iter_mut().find(|r| r.0 == load && r.1 == f) {
                    r.2.push(sample);
                }
            }
        }
    }
    let mut table = String::from(
        "| load | forwarder | Mpps forwarded (median) | min | max | offered (median) | × ceiling |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    let mut rows = Vec::new();
    for load in Load::ALL {
        let median_of = |f: Forwarder| {
            results
                .iter()
                .find(|r| r.0 == load && r.1 == f)
                .map_or(0.0, |r| median(r.2.iter().map(|s| s.forwarded).collect()))
        };
        let ceiling = median_of(Forwarder::Ceiling);
        for (_, f, samples) in results.iter().filter(|r| r.0 == load) {
            let fwd: Vec<f64> = samples.iter().map(|s| s.forwarded).collect();
            let value = median(fwd.clone());
            let offered = median(samples.iter().map(|s| s.offered).collect());
            let min = fwd.iter().copied().fold(f64::INFINITY, f64::min);
            let max = fwd.iter().copied().fold(0.0, f64::max);
            let ratio = if ceiling > 0.0 { value / ceiling } else { 0.0 };
            let _ = writeln!(
                table,
                "| {} | {} | {value:.3} | {min:.3} | {max:.3} | {offered:.3} | {ratio:.2} |",
                load.name(),
                f.name()
            );
            rows.push(format!(
                "{{\"name\":\"line_rate_{}_{}\",\"value\":{value:.4},\"unit\":\"Mpps\",\
                 \"ratio_to_ceiling\":{ratio:.3},\"offered_mpps\":{offered:.4},\
                 \"samples\":[{}],\"machine\":{:?}}}",
                load.name(),
                f.name(),
                fwd.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(","),
                machine
            ));
        }
    }
    println!("\n{table}");
    let json = target.join("bench-line-rate.json");
    fs::write(&json, format!("[\n{}\n]\n", rows.join(",\n")))
        .with_context(|| format!("writing {}", json.display()))?;
    println!("rows written to {}", json.display());
    Ok(())
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Mpps that came back to the generator's interface.
    forwarded: f64,
    /// Mpps the generator put on the wire.
    offered: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// CPU, kernel, Spectre v2 mitigation and load: numbers are comparable only within one run.
fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split_once(':').map_or(String::new(), |(_, v)| v.trim().to_owned()))
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let v2 = fs::read_to_string("/sys/devices/system/cpu/vulnerabilities/spectre_v2")
        .unwrap_or_default();
    // Other work on the machine takes CPU from the generator and the director alike.
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "CPU: {cpu} ({cpus} CPUs); kernel {}; spectre_v2: {}; load average at start: {}",
        kernel.trim(),
        v2.trim(),
        load.join(" ")
    )
}

struct Lab {
    prefix: String,
    gen_ns: Netns,
    dir_ns: Netns,
    gen_ifindex: u32,
    /// The drop-and-count program on `gen0` (its link, held open).
    _counter: OwnedFd,
    cfg: tempfile::TempDir,
}

impl Lab {
    fn build() -> anyhow::Result<Lab> {
        let prefix = unique_prefix();
        let gen_ns = Netns::create(&format!("{prefix}-lrg"))?;
        let dir_ns = Netns::create(&format!("{prefix}-lrd"))?;
        let (g, d) = (format!("{prefix}g"), format!("{prefix}d"));
        let ip = |args: &[&str]| run(Command::new("ip").args(args));
        ip(&["link", "add", &g, "type", "veth", "peer", "name", &d])?;
        ip(&["link", "set", &g, "netns", gen_ns.name(), "name", "gen0"])?;
        ip(&["link", "set", &d, "netns", dir_ns.name(), "name", "eth0"])?;
        let mac = |m: [u8; 6]| m.map(|b| format!("{b:02x}")).join(":");
        gen_ns.ip(&["link", "set", "gen0", "address", &mac(GEN_MAC), "up"])?;
        gen_ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "gen0"])?;
        dir_ns.ip(&["link", "set", "eth0", "address", &mac(DIR_MAC), "up"])?;
        dir_ns.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"])?;
        for ns in [&gen_ns, &dir_ns] {
            ns.ip(&["link", "set", "lo", "up"])?;
        }
        // The reals answer at the generator's MAC: what the director forwards comes back there.
        for real in REALS {
            let gm = mac(GEN_MAC);
            dir_ns.ip(&[
                "neigh",
                "replace",
                real,
                "lladdr",
                &gm,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])?;
        }
        // The stack baseline: the VIP routed to a real; no redirects, no reverse-path filter.
        dir_ns.ip(&["route", "add", "10.99.0.100/32", "via", REALS[0], "dev", "eth0"])?;
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.eth0.send_redirects", "0"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.eth0.rp_filter", "0"),
        ] {
            dir_ns.sysctl(k, v)?;
        }
        // veth takes XDP frames from its peer only with NAPI on: GRO turns it on for the stack
        // baseline (an attached program does for the other two).
        dir_ns.run_ok(&["ethtool", "-K", "eth0", "gro", "on"])?;
        let gen_ifindex = ifindex(&gen_ns, "gen0")?;
        let drop = load_xdp(&[mov_imm(0, XDP_DROP), exit()], "lb_lr_count")?;
        let counter = gen_ns
            .run_in(move || attach(&drop, gen_ifindex))
            .map_err(|e| anyhow::anyhow!("{e}"))??;
        let cfg = lb_tests::scratch_dir(&format!("{prefix}-lr"))?;
        Ok(Lab { prefix, gen_ns, dir_ns, gen_ifindex, _counter: counter, cfg })
    }

    /// One measured window of `load` through `f`.
    fn measure(&self, load: Load, f: Forwarder, lb: &Path) -> anyhow::Result<Sample> {
        let dir_ifindex = ifindex(&self.dir_ns, "eth0")?;
        // Held until the window ends: the swap program's link, or the agent.
        let mut _link = None;
        let mut _agent = None;
        match f {
            Forwarder::Ceiling => {
                let prog = load_xdp(&swap_macs(), "lb_lr_ceiling")?;
                let link = self
                    .dir_ns
                    .run_in(move || attach(&prog, dir_ifindex))
                    .map_err(|e| anyhow::anyhow!("{e}"))??;
                _link = Some(link);
            }
            Forwarder::Lb => {
                let path = self.cfg.path().join("lb.toml");
                let in_window = load == Load::WindowNewFlows;
                fs::write(&path, lb_config(if in_window { LONG_WINDOW_SECS } else { 1 }))?;
                let agent = LbAgent::start(&self.dir_ns, lb, &path, &["--xdp-mode", "native"])?;
                agent.wait_all_backends("up", Duration::from_secs(10))?;
                if !in_window {
                    // The window the services' start opened ends after tcp_flow_timeout + 1 s.
                    std::thread::sleep(WINDOW_END);
                }
                _agent = Some(agent);
            }
            Forwarder::Stack => {}
        }
        let generator = Generator::start(&self.gen_ns, self.gen_ifindex, load)?;
        std::thread::sleep(WARMUP);
        let before = (self.counter("rx_queue_", "_xdp_packets")?, self.offered()?);
        let t0 = Instant::now();
        std::thread::sleep(WINDOW);
        let after = (self.counter("rx_queue_", "_xdp_packets")?, self.offered()?);
        let secs = t0.elapsed().as_secs_f64();
        generator.stop()?;
        if let Some(agent) = _agent.take() {
            agent.stop()?;
        }
        drop(_link);
        let mpps = |n: u64| n as f64 / secs / 1e6;
        Ok(Sample { forwarded: mpps(after.0 - before.0), offered: mpps(after.1 - before.1) })
    }

    /// Frames `gen0` sent (to the director's interface).
    fn offered(&self) -> anyhow::Result<u64> {
        let text = self.gen_ns.run_ok(&["cat", "/sys/class/net/gen0/statistics/tx_packets"])?;
        text.trim().parse().with_context(|| format!("tx_packets: {text:?}"))
    }

    /// The sum over `gen0`'s queues of the ethtool statistic `PREFIXnSUFFIX`.
    fn counter(&self, prefix: &str, suffix: &str) -> anyhow::Result<u64> {
        let text = self.gen_ns.run_ok(&["ethtool", "-S", "gen0"])?;
        Ok(text
            .lines()
            .filter_map(|l| l.trim().split_once(": "))
            .filter(|(k, _)| {
                k.strip_prefix(prefix)
                    .and_then(|r| r.strip_suffix(suffix))
                    .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
            })
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The namespaces go with their handles; the veth with them. Named for the log only.
        eprintln!("line-rate lab {} removed", self.prefix);
    }
}

/// A UDP all-ports service and a TCP service on port [`TCP_PORT`] on the VIP, each with the three
/// reals, otherwise lb's defaults but `tcp_flow_timeout` `window` seconds: 1 so the services'
/// window ends before the loads are measured, or longer for the in-window load.
fn lb_config(window: u32) -> String {
    let mut text = format!("[dataplane]\ntcp_flow_timeout = {window}\n");
    for (port, protocol) in [(0, "udp"), (TCP_PORT, "tcp")] {
        let _ = write!(
            text,
            "[[virtual_server]]\nvip = \"10.99.0.100\"\nport = {port}\nprotocol = \"{protocol}\"\n\
             interface = \"eth0\"\n"
        );
        for real in REALS {
            let _ = write!(text, "[[virtual_server.real_server]]\naddress = \"{real}\"\n");
        }
    }
    text
}

fn ifindex(ns: &Netns, name: &str) -> anyhow::Result<u32> {
    let out = ns.run_ok(&["cat", &format!("/sys/class/net/{name}/ifindex")])?;
    out.trim().parse().with_context(|| format!("ifindex of {name}: {out:?}"))
}

/// A 64-byte UDP frame (60 on the wire without the FCS) from the generator to the VIP, UDP
/// checksum 0 (none), so rewriting the ports needs no checksum update. For the TCP loads a TCP
/// segment to [`TCP_PORT`] (ACK or SYN) of the same size; its checksum is not filled in (no
/// forwarder here checks it).
fn frame(load: Load) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&DIR_MAC);
    f.extend_from_slice(&GEN_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    if load.is_tcp() {
        f.extend_from_slice(&ipv4_header(6, 20));
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&TCP_PORT.to_be_bytes());
        f.extend_from_slice(&1u32.to_be_bytes());
        f.extend_from_slice(&1u32.to_be_bytes());
        let flags = if load == Load::TcpNewFlows { 0x02 } else { 0x10 };
        // Data offset 5 words, the flags, a window of 64240, checksum and urgent pointer 0.
        f.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
        f.resize(60, 0);
        return f;
    }
    let payload = 18u16;
    f.extend_from_slice(&ipv4_header(17, 8 + payload));
    f.extend_from_slice(&1000u16.to_be_bytes());
    f.extend_from_slice(&9u16.to_be_bytes());
    f.extend_from_slice(&(8 + payload).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(60, 0);
    f
}

/// The generator's IPv4 header to the VIP (DF, TTL 64) for `l4_len` bytes of protocol `proto`.
fn ipv4_header(proto: u8, l4_len: u16) -> Vec<u8> {
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&(20 + l4_len).to_be_bytes());
    ip.extend_from_slice(&GEN_IP);
    ip.extend_from_slice(&VIP);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The generator: a thread in the generator's namespace sending batches of frames with
/// `sendmmsg(2)` on an `AF_PACKET` socket that bypasses the qdisc, rewriting the ports of each
/// frame for the flow loads, until stopped.
struct Generator {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

/// Frames per `sendmmsg`.
const BATCH: usize = 64;

impl Generator {
    fn start(ns: &Netns, ifindex: u32, load: Load) -> anyhow::Result<Generator> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let ns_path = format!("/run/netns/{}", ns.name());
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let file = fs::File::open(&ns_path).with_context(|| ns_path.clone())?;
            // SAFETY: setns on a namespace fd; affects this thread only.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {ns_path}: {}", std::io::Error::last_os_error());
            }
            let sock = packet_socket(ifindex)?;
            let template = frame(load);
            let mut frames: Vec<Vec<u8>> = vec![template.clone(); BATCH];
            let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
            while !stop2.load(Ordering::Relaxed) {
                for f in frames.iter_mut() {
                    // xorshift64: cheap, and every frame of the new-flow load differs.
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    match load {
                        Load::OneFlow => {}
                        // Source port (offset 34): 65,536 flows.
                        Load::Established => f[34..36].copy_from_slice(&(rng as u16).to_ne_bytes()),
                        // Source and destination port: 2^32 tuples.
                        Load::NewFlows | Load::WindowNewFlows => {
                            f[34..38].copy_from_slice(&(rng as u32).to_ne_bytes());
                        }
                        // TCP source port: 65,536 connections (ACKs) or new ones (SYNs).
                        Load::TcpEstablished | Load::TcpNewFlows => {
                            f[34..36].copy_from_slice(&(rng as u16).to_ne_bytes());
                        }
                    }
                }
                send_batch(&sock, &frames)?;
            }
            Ok(())
        });
        Ok(Generator { stop, thread })
    }

    fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| anyhow::anyhow!("the generator thread panicked"))?
    }
}

/// A raw packet socket bound to `ifindex`, sending straight to the driver (no qdisc).
fn packet_socket(ifindex: u32) -> anyhow::Result<OwnedFd> {
    // SAFETY: plain socket(2), checked below.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if raw < 0 {
        bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    // SAFETY: an int option with its size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        bail!("PACKET_QDISC_BYPASS: {}", std::io::Error::last_os_error());
    }
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: a sockaddr_ll with its size.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        bail!("binding the packet socket: {}", std::io::Error::last_os_error());
    }
    Ok(sock)
}

/// One `sendmmsg` of `frames`. A full queue (ENOBUFS, EAGAIN) is not an error: the frames
/// were offered and not taken, as on a wire.
fn send_batch(sock: &OwnedFd, frames: &[Vec<u8>]) -> anyhow::Result<()> {
    let mut iov: Vec<libc::iovec> = frames
        .iter()
        .map(|f| libc::iovec { iov_base: f.as_ptr() as *mut libc::c_void, iov_len: f.len() })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: msghdr is plain data; zero is a valid start.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_iov = v;
            h.msg_iovlen = 1;
            libc::mmsghdr { msg_hdr: h, msg_len: 0 }
        })
        .collect();
    // SAFETY: `msgs` and the buffers they point at live across the call.
    let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOBUFS | libc::EAGAIN) => {}
            _ => bail!("sendmmsg: {e}"),
        }
    }
    Ok(())
}

// ---- BPF: a handful of instructions, loaded with bpf(2) ----

const XDP_DROP: i32 = 1;
const XDP_TX: i32 = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | dst, off, imm }
}
fn mov_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm)
}
fn mov_reg(dst: u8, src: u8) -> Insn {
    insn(0xbf, dst, src, 0, 0)
}
fn add_imm(dst: u8, imm: i32) -> Insn {
    insn(0x07, dst, 0, 0, imm)
}
/// `dst = *(u32 *)(src + off)`.
fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x61, dst, src, off, 0)
}
fn ldx_h(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x69, dst, src, off, 0)
}
/// `*(u32 *)(dst + off) = src`.
fn stx_w(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x63, dst, src, off, 0)
}
fn stx_h(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x6b, dst, src, off, 0)
}
/// `if dst > src goto +off`.
fn jgt_reg(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x2d, dst, src, off, 0)
}
fn exit() -> Insn {
    insn(0x95, 0, 0, 0, 0)
}

/// `r6 = data`, then `if data + 42 > data_end goto` (offset patched by [`program`]): the
/// Ethernet, IPv4 and UDP headers are there.
fn headers() -> Vec<Insn> {
    vec![
        ldx_w(2, 1, 0),
        ldx_w(3, 1, 4),
        mov_reg(6, 2),
        mov_reg(4, 2),
        add_imm(4, 42),
        jgt_reg(4, 3, 0),
    ]
}

/// The header check, `body`, `return XDP_TX`; a frame too short returns `otherwise`.
fn program(body: &[Insn], otherwise: i32) -> Vec<Insn> {
    let mut p = headers();
    // The jump skips `body` and `r0 = XDP_TX; exit`.
    let skip = body.len() as i16 + 2;
    if let Some(j) = p.last_mut() {
        j.off = skip;
    }
    p.extend_from_slice(body);
    p.extend([mov_imm(0, XDP_TX), exit(), mov_imm(0, otherwise), exit()]);
    p
}

/// The ceiling: swap the Ethernet addresses and send the frame back.
fn swap_macs() -> Vec<Insn> {
    let body = [
        ldx_w(4, 6, 0),
        ldx_h(5, 6, 4),
        ldx_w(7, 6, 6),
        ldx_h(8, 6, 10),
        stx_w(6, 7, 0),
        stx_h(6, 8, 4),
        stx_w(6, 4, 6),
        stx_h(6, 5, 10),
    ];
    program(&body, 2) // XDP_PASS for what is too short
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a zero-padded union bpf_attr of 128 bytes for the command.
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(attr))
    };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r) }
}

/// Two u32 fields in one u64 slot of the attr (little-endian field order).
fn pair(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | (u64::from(hi) << 32)
}

fn load_xdp(insns: &[Insn], name: &str) -> anyhow::Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = [0u64; 16];
    attr[0] = pair(BPF_PROG_TYPE_XDP, insns.len() as u32);
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    attr[3] = pair(1, log.len() as u32); // log_level, log_size
    attr[4] = log.as_mut_ptr() as u64;
    // kern_version, prog_flags = 0; prog_name (16 bytes) at attr[6..8]
    let mut pname = [0u8; 16];
    for (d, s) in pname.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    attr[6] = u64::from_le_bytes(pname[..8].try_into().unwrap_or_default());
    attr[7] = u64::from_le_bytes(pname[8..].try_into().unwrap_or_default());
    // prog_ifindex = 0, expected_attach_type = BPF_XDP
    attr[8] = pair(0, BPF_XDP);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a new descriptor the kernel gave us.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            bail!("loading {name}: {e}\n{}", String::from_utf8_lossy(&log[..end]))
        }
    }
}

/// Attaches `prog` in native mode to `ifindex` (of the calling thread's namespace) with a BPF
/// link: detached when the returned descriptor closes.
fn attach(prog: &OwnedFd, ifindex: u32) -> anyhow::Result<OwnedFd> {
    let mut attr = [0u64; 16];
    attr[0] = pair(prog.as_raw_fd() as u32, ifindex);
    attr[1] = pair(BPF_XDP, XDP_FLAGS_DRV_MODE);
    let fd = bpf(BPF_LINK_CREATE, &mut attr).with_context(|| format!("XDP link on {ifindex}"))?;
    // SAFETY: a new descriptor the kernel gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
