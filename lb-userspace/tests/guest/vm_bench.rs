//! XDP against kernel IPVS forwarding the same traffic in the guest (`cargo xtask vm bench`, never
//! part of `cargo xtask vm test`): one [`Lab`] in direct-routing mode, the same three services
//! on the VIP served either by IPVS (programmed through our client, `mh` hashing the ports too,
//! like the XDP program's Maglev) or by `lb run --dataplane xdp --xdp-mode generic` on the lab's
//! bridge, in rounds that alternate which one goes first. The workloads, each timed in every phase:
//!
//! - `tcp`: sequential short TCP connections from the client to the VIP (connect, the real's
//!   one-line answer, close): the director sees about five packets per connection;
//! - `udp`: sequential UDP requests, each from a new socket (a new flow for both dataplanes),
//!   answered by the real straight to the client;
//! - `blast`: one UDP flow sent as fast as the client can to a sink in the real that never reads;
//!   the time runs until the frames arrived at the real's veth. Per datagram this is the
//!   forwarding path with the least around it.
//!
//! In an XDP phase the agent is started, waited for until its reals are up and it is idle (it
//! writes the Maglev tables first), and then stopped with SIGSTOP while the traffic runs: the
//! program and its link live in the kernel, and the agent (a debug build under TCG) competes
//! with nothing. IPVS needs no process at all.
//!
//! A `direct` phase (XDP detached) sends the same traffic to a real's own address, past the
//! director: what the client, the bridge and the real cost without any director, so the
//! director's own share is the difference.
//!
//! Prints one `@@BENCH {json}` line per result row (median over the rounds, the samples beside
//! it); `cargo xtask vm bench` collects them. Environment: `LB_BIN` (an `lb` built with its XDP
//! program), `LB_BENCH_ROUNDS`, `LB_BENCH_TCP`, `LB_BENCH_UDP`, `LB_BENCH_BLAST` (counts per
//! phase).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use super::{
    Destination, Ipvs, Protocol, Service, ServiceFlags, ServiceKey,
    vm_agent::{GuestAgent, wait_until},
    vm_net::{BRIDGE, CLIENT_NS, Lab, RealMode, ServiceGuard, VIP, in_netns, ip},
};

const TCP_PORT: u16 = 80;
const UDP_PORT: u16 = 53;
const BLAST_PORT: u16 = 9999;
const REALS: usize = 2;
/// Payload of a blast datagram (a small packet: per-packet costs, not copying).
const BLAST_PAYLOAD: usize = 64;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(default)
}

/// The XDP agent's config: the services IPVS gets too, small maps (the guest has 512 MiB) and
/// Maglev tables (the agent writes them entry by entry; a lookup costs the same at any size).
fn xdp_config(lab: &Lab) -> String {
    let mut toml =
        String::from("[dataplane]\nflow_table_size = 65536\nmax_services = 16\nmax_reals = 64\n\n");
    for (protocol, port) in [("tcp", TCP_PORT), ("udp", UDP_PORT), ("udp", BLAST_PORT)] {
        toml.push_str(&format!(
            "[[virtual_server]]\nvip = \"{VIP}\"\nport = {port}\nprotocol = \"{protocol}\"\n\
             interface = \"{BRIDGE}\"\ntable_size = 1021\n"
        ));
        for real in &lab.reals {
            toml.push_str(&format!(
                "[[virtual_server.real_server]]\naddress = \"{}\"\nport = {port}\n",
                real.addr
            ));
        }
        toml.push('\n');
    }
    toml
}

/// The same services in IPVS (DR, `mh` with `mh-port`).
fn ipvs_services(ipvs: &mut Ipvs, lab: &Lab) -> Vec<ServiceGuard> {
    [(Protocol::Tcp, TCP_PORT), (Protocol::Udp, UDP_PORT), (Protocol::Udp, BLAST_PORT)]
        .into_iter()
        .map(|(protocol, port)| {
            let key = ServiceKey::Addr { protocol, addr: VIP.into(), port };
            let dests: Vec<Destination> = lab
                .reals
                .iter()
                .map(|r| Destination::route(SocketAddr::new(r.addr.into(), port), 1))
                .collect();
            // mh-port: the source port counts too, as in the XDP program's flow hash.
            let service = Service { flags: ServiceFlags::SCHED2, ..Service::new(key, "mh") };
            ServiceGuard::add(ipvs, &service, &dests)
        })
        .collect()
}

/// Frames the director (or the bridge) handed to the reals: the root ends of their veths.
fn frames_to_reals(lab: &Lab) -> u64 {
    lab.reals
        .iter()
        .map(|r| {
            let path = format!("/sys/class/net/{}/statistics/tx_packets", r.ns);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{path}: {e}"))
                .trim()
                .parse::<u64>()
                .expect("a packet count")
        })
        .sum()
}

/// UDP sockets on `BLAST_PORT` in every real that never read: the frames are counted on the way
/// in and dropped when the receive queue is full. Bound to any address: the VIP (DR) and the
/// real's own (the direct phase) both arrive.
fn blast_sinks(lab: &Lab) -> Vec<UdpSocket> {
    lab.reals
        .iter()
        .map(|r| {
            in_netns(&r.ns, || {
                UdpSocket::bind((Ipv4Addr::UNSPECIFIED, BLAST_PORT))
                    .unwrap_or_else(|e| panic!("{}: blast sink: {e}", r.ns))
            })
        })
        .collect()
}

/// Sends `count` datagrams of one flow to `to` from the client and waits until they reached the
/// reals' veths (or stopped arriving): the time per delivered datagram, and how many arrived.
fn blast(lab: &Lab, to: SocketAddr, count: usize) -> (Duration, u64) {
    let before = frames_to_reals(lab);
    let started = Instant::now();
    in_netns(CLIENT_NS, || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("blast socket");
        socket.connect(to).expect("blast connect");
        let payload = [0x5a_u8; BLAST_PAYLOAD];
        for _ in 0..count {
            // A full queue somewhere shows as fewer frames delivered, not as an error here.
            let _ = socket.send(&payload);
        }
    });
    // The frames travel in the sender's softirq, so most have arrived already.
    let (mut last, mut last_change) = (frames_to_reals(lab), Instant::now());
    while last - before < count as u64 && last_change.elapsed() < Duration::from_millis(100) {
        std::thread::sleep(Duration::from_millis(1));
        let now = frames_to_reals(lab);
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
    }
    let delivered = (last - before).min(count as u64);
    let took = last_change.duration_since(started).min(started.elapsed());
    (took / delivered.max(1) as u32, delivered)
}

/// The samples of one phase kind, per workload, in microseconds per unit.
type Samples = BTreeMap<&'static str, Vec<f64>>;

struct Counts {
    tcp: usize,
    udp: usize,
    blast: usize,
}

fn micros(d: Duration, per: usize) -> f64 {
    d.as_secs_f64() * 1e6 / per as f64
}

/// Each workload through the VIP (whichever dataplane forwards it now), then the same to the
/// first real's own address, past the director: two neighbouring measurements, so the
/// difference is the director's share with as little drift of the (shared, emulated) machine
/// as can be.
fn measure(lab: &Lab, counts: &Counts, label: &str, by_vip: &mut Samples, direct: &mut Samples) {
    let (vip, real): (IpAddr, IpAddr) = (VIP.into(), lab.reals[0].addr.into());
    // Warm-up: neighbour entries, IPVS's scheduler module, the sockets' first allocations.
    for to in [vip, real] {
        let warm = lab.requests(SocketAddr::new(to, TCP_PORT), 10);
        assert!(warm.errors.is_empty(), "{label}: warm-up: {:?}", warm.errors);
        let warm = lab.udp_requests(SocketAddr::new(to, UDP_PORT), 10);
        assert!(warm.errors.is_empty(), "{label}: warm-up: {:?}", warm.errors);
        blast(lab, SocketAddr::new(to, BLAST_PORT), 200);
    }
    let mut line = format!("{label}:");
    for (to, name, samples) in [(vip, "vip", &mut *by_vip), (real, "direct", &mut *direct)] {
        let started = Instant::now();
        let tally = lab.requests(SocketAddr::new(to, TCP_PORT), counts.tcp);
        let tcp = micros(started.elapsed(), counts.tcp);
        assert!(tally.errors.is_empty(), "{label} {name}: tcp: {:?}", tally.errors);
        assert_eq!(tally.total(), counts.tcp, "{label} {name}: tcp answers");
        if name == "vip" {
            assert_eq!(tally.per_real.len(), REALS, "{label}: every real: {:?}", tally.per_real);
        }
        samples.entry("tcp").or_default().push(tcp);
        line.push_str(&format!(" tcp {name} {tcp:.0} us/conn,"));
    }
    for (to, name, samples) in [(vip, "vip", &mut *by_vip), (real, "direct", &mut *direct)] {
        let started = Instant::now();
        let tally = lab.udp_requests(SocketAddr::new(to, UDP_PORT), counts.udp);
        let udp = micros(started.elapsed(), counts.udp);
        assert!(tally.errors.is_empty(), "{label} {name}: udp: {:?}", tally.errors);
        assert_eq!(tally.total(), counts.udp, "{label} {name}: udp answers");
        samples.entry("udp").or_default().push(udp);
        line.push_str(&format!(" udp {name} {udp:.0} us/request,"));
    }
    for (to, name, samples) in [(vip, "vip", &mut *by_vip), (real, "direct", &mut *direct)] {
        let (per_datagram, delivered) = blast(lab, SocketAddr::new(to, BLAST_PORT), counts.blast);
        assert!(
            delivered * 10 >= counts.blast as u64 * 9,
            "{label} {name}: blast: {delivered} of {} datagrams arrived",
            counts.blast
        );
        let us = per_datagram.as_secs_f64() * 1e6;
        samples.entry("blast").or_default().push(us);
        line.push_str(&format!(" blast {name} {us:.1} us/datagram ({delivered} arrived),"));
    }
    println!("{}", line.trim_end_matches(','));
}

/// User and system time of process `pid` so far, in clock ticks (`/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as u64 }
}

/// Waits until process `pid` uses under 5 % of the CPU over half a second (at most a minute);
/// the share of the last half second.
fn settle(pid: u32) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ticks, since) = (cpu_ticks(pid), Instant::now());
        std::thread::sleep(Duration::from_millis(500));
        let used = (cpu_ticks(pid) - ticks) as f64 / ticks_per_second() as f64;
        let share = used / since.elapsed().as_secs_f64();
        if share < 0.05 || Instant::now() > deadline {
            return share;
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the agent we started and have not reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill {pid} {sig}: {}", std::io::Error::last_os_error());
}

fn xdp_attached() -> bool {
    ip(None, &["link", "show", "dev", BRIDGE]).contains("xdpgeneric")
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn row(name: String, value: f64, unit: &str, samples: Option<&[f64]>) {
    let mut o = serde_json::json!({ "name": name, "value": round2(value), "unit": unit });
    if let Some(s) = samples {
        o["samples"] = serde_json::json!(s.iter().map(|x| round2(*x)).collect::<Vec<_>>());
    }
    println!("@@BENCH {o}");
}

#[test]
#[ignore = "a benchmark of kernel IPVS and XDP in the guest: `cargo xtask vm bench` runs it"]
fn vm_bench_xdp_vs_ipvs() {
    let rounds = env_count("LB_BENCH_ROUNDS", 9);
    let counts = Counts {
        tcp: env_count("LB_BENCH_TCP", 1000),
        udp: env_count("LB_BENCH_UDP", 1000),
        blast: env_count("LB_BENCH_BLAST", 50_000),
    };
    // What the numbers stand on: JIT-compiled BPF (Debian sets BPF_JIT_ALWAYS_ON), one vCPU.
    let jit = std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("guest: kernel {}, {cpus} CPU(s), bpf_jit_enable {}", kernel.trim(), jit.trim());
    let mut lab = Lab::new(REALS, RealMode::Direct);
    lab.serve(TCP_PORT);
    lab.serve_udp(UDP_PORT);
    lab.serve_udp_own(UDP_PORT);
    let _sinks = blast_sinks(&lab);
    let mut ipvs = Ipvs::open().expect("opening IPVS");
    // IPVS keeps its services throughout: while XDP is attached, the VIP's packets never reach
    // the stack (each XDP phase checks that the program forwarded them).
    let _services = ipvs_services(&mut ipvs, &lab);
    let config = xdp_config(&lab);

    // Per dataplane: through the VIP, and the direct path measured next to it.
    let (mut by_ipvs, mut by_xdp) = (Samples::new(), Samples::new());
    let (mut direct_ipvs, mut direct_xdp) = (Samples::new(), Samples::new());
    let (mut starts, mut agent_cpu) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        println!("--- round {} of {rounds}", round + 1);
        for xdp_phase in [round % 2 == 1, round % 2 == 0] {
            if !xdp_phase {
                assert!(!xdp_attached(), "XDP still attached in an IPVS phase");
                measure(&lab, &counts, "ipvs", &mut by_ipvs, &mut direct_ipvs);
                continue;
            }
            let started = Instant::now();
            let mut agent = GuestAgent::start(
                "bench",
                &config,
                &["--dataplane", "xdp", "--xdp-mode", "generic"],
            );
            assert!(
                wait_until(Duration::from_secs(30), || agent.all_up(3, Some(REALS))),
                "the XDP agent's reals did not come up; its log:\n{}",
                agent.log()
            );
            assert!(xdp_attached(), "XDP (generic) not on {BRIDGE}; log:\n{}", agent.log());
            // Until the agent has written its tables (map updates from a debug build): measured
            // while it still worked, XDP came out three times slower than IPVS.
            let pid = agent.pid().expect("the agent runs");
            let idle_share = settle(pid);
            starts.push(started.elapsed().as_secs_f64());
            println!(
                "xdp: agent up and idle ({:.1} % of the CPU) {:.1} s after its start",
                idle_share * 100.0,
                started.elapsed().as_secs_f64()
            );
            agent_cpu.push(idle_share * 100.0);
            let before = agent.packets(None);
            // Stopped while measured: the program and its link live on in the kernel, and the
            // agent's own work (a debug build under TCG) does not compete with the traffic.
            signal(pid, libc::SIGSTOP);
            measure(&lab, &counts, "xdp", &mut by_xdp, &mut direct_xdp);
            signal(pid, libc::SIGCONT);
            let forwarded = agent.packets(None) - before;
            // At least SYN, ACK and FIN per connection, the request, and most of the blast.
            let least = (3 * counts.tcp + counts.udp + counts.blast * 9 / 10) as u64;
            assert!(forwarded >= least, "XDP forwarded only {forwarded} packets (>= {least})");
            let stop = agent.stop(Duration::from_secs(20)).expect("the agent was running");
            assert!(stop.success(), "lb run exited with {stop}; log:\n{}", agent.log());
            assert!(!xdp_attached(), "XDP still attached after the agent stopped");
        }
    }
    println!("--- medians over {rounds} rounds (us per unit)");
    let mut table = String::from(
        "| workload | IPVS | XDP | IPVS / XDP | no director | director share: IPVS | XDP | \
         IPVS / XDP |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (workload, unit) in [("tcp", "us/conn"), ("udp", "us/request"), ("blast", "us/datagram")] {
        let (ipvs, xdp) = (&by_ipvs[workload], &by_xdp[workload]);
        let (ipvs_m, xdp_m) = (median(ipvs), median(xdp));
        row(format!("vm_{workload}_ipvs"), ipvs_m, unit, Some(ipvs));
        row(format!("vm_{workload}_xdp"), xdp_m, unit, Some(xdp));
        row(format!("vm_{workload}_ipvs_over_xdp"), ipvs_m / xdp_m, "ratio", None);
        let floor: Vec<f64> =
            direct_ipvs[workload].iter().chain(&direct_xdp[workload]).copied().collect();
        let floor_m = median(&floor);
        row(format!("vm_{workload}_direct"), floor_m, unit, Some(&floor));
        // The director's share: each measurement minus the direct one made right after it.
        let share = |phase: &[f64], direct: &[f64]| -> Vec<f64> {
            phase.iter().zip(direct).map(|(p, d)| p - d).collect()
        };
        let ipvs_d = share(ipvs, &direct_ipvs[workload]);
        let xdp_d = share(xdp, &direct_xdp[workload]);
        let (ipvs_dm, xdp_dm) = (median(&ipvs_d), median(&xdp_d));
        row(format!("vm_{workload}_director_ipvs"), ipvs_dm, unit, Some(&ipvs_d));
        row(format!("vm_{workload}_director_xdp"), xdp_dm, unit, Some(&xdp_d));
        let ratio = if xdp_dm > 0.0 {
            row(format!("vm_{workload}_director_ipvs_over_xdp"), ipvs_dm / xdp_dm, "ratio", None);
            format!("{:.2}", ipvs_dm / xdp_dm)
        } else {
            "—".to_owned()
        };
        table.push_str(&format!(
            "| {workload} ({unit}) | {ipvs_m:.1} | {xdp_m:.1} | {:.2} | {floor_m:.1} | \
             {ipvs_dm:.1} | {xdp_dm:.1} | {ratio} |\n",
            ipvs_m / xdp_m
        ));
    }
    row("vm_xdp_agent_ready".to_owned(), median(&starts), "s", Some(&starts));
    row("vm_xdp_agent_idle_cpu".to_owned(), median(&agent_cpu), "%", Some(&agent_cpu));
    println!("\n{table}");
}
