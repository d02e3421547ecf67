//! Test support for the in-guest IPVS tests (`cargo xtask vm test`): a director/real-server
//! topology in the guest's namespaces, TCP servers that answer with their real's name, a client
//! that counts the answers, and guards that undo what a test set up, also when it panics.
//!
//! The guest's root namespace is the director (IPVS lives there). A bridge [`BRIDGE`] connects it
//! (`10.77.0.1/24`, `fd77::1/64`, and the VIPs as host routes) to a client namespace (a new
//! address per lab, see [`Lab::client`]) and N real-server namespaces (`10.77.0.11`, `fd77::11`,
//! `.12`, ...), each through a veth whose inner end is `eth0`. How a real is set up depends on the forwarding method
//! ([`RealMode`]): the VIPs on `lo` with the ARP sysctls of `lb realserver` for direct routing
//! (IPv6 neighbour discovery answers only for addresses of the asking interface), plus `tunl0` up
//! for IP-in-IP, or routes back to the client through the director for NAT.
//!
//! Names are fixed (`lbvc`, `lbvr1`...): tests run one at a time in a fresh guest, and a name that
//! is already taken means an earlier test leaked, which [`Lab::new`] reports. The namespaces are
//! the host labs' guards (`lb_test_support::netns::Netns`), the links lab's commands in batches.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, RawFd},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use lb_test_support::{lab, netns::Netns};

use super::{Destination, Ipvs, Service, ServiceKey};

/// The bridge in the guest's root namespace.
pub const BRIDGE: &str = "lbvbr";
/// The director's address on the bridge.
pub const DIRECTOR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The VIP, a /32 on the director's bridge (so the director answers ARP for it).
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
pub const DIRECTOR6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
/// The IPv6 VIP, a /128 on the director's bridge.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x100);
/// The client's namespace.
pub const CLIENT_NS: &str = "lbvc";
/// How long one client connection may take (TCG is slow, but not this slow).
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Failed requests after which [`Lab::requests`] gives up.
const MAX_ERRORS: usize = 5;
/// How long a UDP request waits for its answer.
const UDP_TIMEOUT: Duration = Duration::from_secs(2);

/// How a real server receives the director's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealMode {
    /// Direct routing: the VIP on `lo`, `arp_ignore=1`, `arp_announce=2`; replies go straight to
    /// the client.
    Direct,
    /// Like [`RealMode::Direct`], plus `tunl0` up (with `rp_filter` off) to decapsulate IP-in-IP.
    Tunnel,
    /// NAT: no VIP; replies to the client go back through the director, which un-NATs them.
    Nat,
    /// Addresses only: the test sets the real up itself (`lb realserver up`).
    Plain,
}

/// One real server of a [`Lab`].
#[derive(Clone, Debug)]
pub struct Real {
    /// `r1`, `r2`...: what its server answers.
    pub name: String,
    /// Its namespace (`lbvr1`...).
    pub ns: String,
    pub addr: Ipv4Addr,
    /// `fd77::11` for `10.77.0.11`.
    pub addr6: Ipv6Addr,
}

impl Real {
    /// Its address of the family of `like`.
    pub fn addr_like(&self, like: IpAddr) -> IpAddr {
        if like.is_ipv4() { self.addr.into() } else { self.addr6.into() }
    }
}

/// Labs made so far in this guest: each gets a client address of its own.
static LABS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The topology, its servers and the director sysctls it changed; [`Drop`] undoes all of it.
pub struct Lab {
    pub reals: Vec<Real>,
    pub mode: RealMode,
    /// The client's addresses: `10.77.0.150` and up, `fd77::1:150` and up, new in every lab.
    /// IPVS keeps connection entries for minutes after a service is gone; a later lab's client
    /// reusing an earlier one's address and port would be sent where that entry says.
    pub client: Ipv4Addr,
    pub client6: Ipv6Addr,
    servers: Vec<Server>,
    /// Director sysctls with the values to restore.
    saved_sysctls: Vec<(String, String)>,
    /// The client's and the reals' namespaces, deleted when dropped.
    netns: Vec<Netns>,
}

impl Lab {
    /// Builds the bridge, the client and `reals` real servers set up for `mode`.
    pub fn new(reals: usize, mode: RealMode) -> Lab {
        assert!((1..=50).contains(&reals), "1 to 50 reals");
        let reals: Vec<Real> = (1..=reals)
            .map(|i| Real {
                name: format!("r{i}"),
                ns: format!("lbvr{i}"),
                addr: Ipv4Addr::new(10, 77, 0, 10 + i as u8),
                // Written like the IPv4 one: fd77::11 is 10.77.0.11.
                addr6: Ipv6Addr::new(
                    0xfd77,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    u16::from_str_radix(&(10 + i).to_string(), 16).expect("decimal digits"),
                ),
            })
            .collect();
        for ns in std::iter::once(CLIENT_NS).chain(reals.iter().map(|r| r.ns.as_str())) {
            assert!(
                !std::path::Path::new("/run/netns").join(ns).exists(),
                "netns {ns} exists: an earlier test did not clean up"
            );
        }
        // From here on, Drop cleans up whatever of this got made.
        let n = LABS.fetch_add(1, Ordering::SeqCst) % 100;
        let client = Ipv4Addr::new(10, 77, 0, 150 + n);
        let client6 = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 1, 0x150 + u16::from(n));
        let mut lab = Lab {
            reals,
            mode,
            client,
            client6,
            servers: Vec::new(),
            saved_sysctls: Vec::new(),
            netns: Vec::new(),
        };
        for ns in lab.namespaces() {
            let netns = Netns::create(&ns).unwrap_or_else(|e| panic!("{e:#}"));
            lab.netns.push(netns);
        }
        // No multicast snooping: IPv6 neighbour solicitations must reach every port at once.
        ip_batch(None, &lab::batch_line(&lab::bridge(BRIDGE, None)));
        // Nor duplicate address detection on its link-local address: the director solicits the
        // reals' IPv6 addresses for forwarded packets from that address, and sends nothing while
        // it is tentative (the first IPv6 connection stalled for a second or two).
        write_sysctl(&format!("net/ipv6/conf/{BRIDGE}/accept_dad"), "0");
        let mut root = format!("link set {BRIDGE} up\n");
        for cidr in [
            format!("{DIRECTOR}/24"),
            format!("{VIP}/32"),
            format!("{DIRECTOR6}/64"),
            format!("{VIP6}/128"),
        ] {
            root.push_str(&lab::batch_line(&lab::addr_add(BRIDGE, &cidr)));
        }
        for ns in lab.namespaces() {
            // The root end is named after the namespace: unique, and deleted by name on drop.
            root.push_str(&lab::batch_line(&lab::veth_into(&ns, &ns, "eth0", None)));
            root.push_str(&lab::batch_line(&lab::attach(&ns, BRIDGE)));
        }
        ip_batch(None, &root);
        if mode == RealMode::Nat {
            // The director routes the reals' replies back to the client on the same bridge:
            // no redirects, or the reals would learn to bypass it (IPv6 cannot stop sending
            // them: the reals ignore them instead).
            for (key, value) in [
                ("net/ipv4/ip_forward".to_owned(), "1"),
                ("net/ipv4/conf/all/send_redirects".to_owned(), "0"),
                (format!("net/ipv4/conf/{BRIDGE}/send_redirects"), "0"),
                ("net/ipv6/conf/all/forwarding".to_owned(), "1"),
            ] {
                let old = read_sysctl(&key);
                write_sysctl(&key, value);
                lab.saved_sysctls.push((key, old));
            }
        }

        // The director is the guest's own namespace: kernel IPVS keeps the connection entries of
        // earlier labs (same client address, reals since deleted) for minutes, and drops a SYN
        // whose reused client port matches one while its real is gone. Expiring such an entry on
        // its first packet (what operators set) lets the SYN's retransmission through.
        let nodest = "net/ipv4/vs/expire_nodest_conn";
        if std::path::Path::new("/proc/sys").join(nodest).exists() {
            let old = read_sysctl(nodest);
            write_sysctl(nodest, "1");
            lab.saved_sysctls.push((nodest.to_owned(), old));
        }

        for ns in lab.namespaces() {
            // No duplicate address detection on the link-local address either: a real solicits
            // the client from it when it answers from the VIP on `lo` (as the director does).
            in_netns(&ns, || write_sysctl("net/ipv6/conf/eth0/accept_dad", "0"));
        }
        ip_batch(
            Some(CLIENT_NS),
            &format!(
                "link set eth0 up\n{}{}",
                lab::batch_line(&lab::addr_add("eth0", &format!("{client}/24"))),
                lab::batch_line(&lab::addr_add("eth0", &format!("{client6}/64")))
            ),
        );
        for real in &lab.reals {
            let mut batch = format!(
                "link set eth0 up\n{}{}",
                lab::batch_line(&lab::addr_add("eth0", &format!("{}/24", real.addr))),
                lab::batch_line(&lab::addr_add("eth0", &format!("{}/64", real.addr6)))
            );
            match mode {
                RealMode::Direct | RealMode::Tunnel => {
                    // Before the VIP exists, so no ARP answer ever leaks.
                    in_netns(&real.ns, || {
                        for (key, value) in lab::realserver_arp_sysctls("eth0") {
                            write_sysctl(&key, value);
                        }
                        if mode == RealMode::Tunnel {
                            for scope in ["all", "tunl0"] {
                                write_sysctl(&format!("net/ipv4/conf/{scope}/rp_filter"), "0");
                            }
                        }
                    });
                    batch.push_str(&lab::batch_line(&lab::addr_add("lo", &format!("{VIP}/32"))));
                    batch.push_str(&lab::batch_line(&lab::addr_add("lo", &format!("{VIP6}/128"))));
                    if mode == RealMode::Tunnel {
                        batch.push_str("link set tunl0 up\n");
                    }
                }
                RealMode::Nat => {
                    in_netns(&real.ns, || {
                        for scope in ["all", "default", "eth0"] {
                            write_sysctl(&format!("net/ipv6/conf/{scope}/accept_redirects"), "0");
                        }
                    });
                    batch.push_str(&format!(
                        "route add {client}/32 via {DIRECTOR}\nroute add {client6}/128 via {DIRECTOR6}\n"
                    ));
                }
                RealMode::Plain => {}
            }
            ip_batch(Some(&real.ns), &batch);
        }
        lab
    }

    fn namespaces(&self) -> Vec<String> {
        std::iter::once(CLIENT_NS.to_owned())
            .chain(self.reals.iter().map(|r| r.ns.clone()))
            .collect()
    }

    /// The client's address of the family of `like`.
    pub fn client_like(&self, like: IpAddr) -> IpAddr {
        if like.is_ipv4() { self.client.into() } else { self.client6.into() }
    }

    /// Starts a TCP server on `port` in every real (all addresses, so the VIP too).
    pub fn serve(&mut self, port: u16) {
        for real in &self.reals {
            self.servers.push(Server::start(real, port));
        }
    }

    /// Stops `real`'s servers: connections to it are refused, so its health checks fail.
    pub fn stop_serving(&mut self, real: &str) {
        let mut found = false;
        for server in self.servers.iter_mut().filter(|s| s.real == real) {
            server.stop();
            found = true;
        }
        assert!(found, "{real} serves nothing");
        self.servers.retain(|s| s.real != real);
    }

    /// Starts a UDP server on `port` in every real, answering each datagram. It binds the
    /// addresses the director's packets arrive for (the VIPs, or for NAT the real's own), so its
    /// answers leave from the right address.
    pub fn serve_udp(&mut self, port: u16) {
        for real in &self.reals {
            let addrs: Vec<SocketAddr> = match self.mode {
                RealMode::Direct | RealMode::Tunnel | RealMode::Plain => {
                    vec![VIP.into(), VIP6.into()]
                }
                RealMode::Nat => vec![real.addr.into(), real.addr6.into()],
            }
            .into_iter()
            .map(|ip: IpAddr| SocketAddr::new(ip, port))
            .collect();
            self.servers.push(Server::start_udp(real, &addrs));
        }
    }

    /// Starts a UDP server on `port` in every real bound to the real's own addresses: what a
    /// client reaches without a director.
    pub fn serve_udp_own(&mut self, port: u16) {
        for real in &self.reals {
            let addrs =
                [SocketAddr::new(real.addr.into(), port), SocketAddr::new(real.addr6.into(), port)];
            self.servers.push(Server::start_udp(real, &addrs));
        }
    }

    /// Starts a server on `port` in `real` alone (again, after [`Lab::stop_serving`]).
    pub fn serve_on(&mut self, real: &str, port: u16) {
        let real = self.reals.iter().find(|r| r.name == real).expect("no such real");
        self.servers.push(Server::start(real, port));
    }

    /// `count` short connections from the client to `vip`, one after the other; every answer is
    /// counted by the real that gave it.
    pub fn requests(&self, vip: SocketAddr, count: usize) -> Tally {
        tally(count, || request(vip))
    }

    /// `count` datagrams from the client to `vip`, each from a socket (and port) of its own, so
    /// IPVS schedules each; every answer is counted by the real that gave it. The sockets are
    /// connected to `vip`: an answer from any other address does not count.
    pub fn udp_requests(&self, vip: SocketAddr, count: usize) -> Tally {
        tally(count, || udp_request(vip))
    }

    /// Packets `ifname` in `real`'s namespace has received (`ip -s link`).
    pub fn rx_packets(&self, real: &Real, ifname: &str) -> u64 {
        let out = ip(Some(&real.ns), &["-j", "-s", "link", "show", "dev", ifname]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
        v[0]["stats64"]["rx"]["packets"].as_u64().expect("rx packets in ip -j -s link")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for server in &mut self.servers {
            server.stop();
        }
        for (key, value) in self.saved_sysctls.drain(..).rev() {
            write_sysctl(&key, &value);
        }
        // Veths by their root end (synchronous, unlike a namespace's teardown) and the bridge;
        // the namespaces go with their guards, after.
        let mut batch = String::new();
        for ns in self.namespaces() {
            batch.push_str(&format!("link del {ns}\n"));
        }
        batch.push_str(&format!("link del {BRIDGE}\n"));
        // -force: go on past what was never made (a test that failed half-way).
        let _ = Command::new("ip")
            .args(["-force", "-batch", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().expect("stdin").write_all(batch.as_bytes())?;
                child.wait()
            });
        self.netns.clear();
    }
}

/// What the client got back.
#[derive(Debug, Default)]
pub struct Tally {
    /// Answers per real name.
    pub per_real: BTreeMap<String, usize>,
    /// Per real: the addresses its server saw as (local, peer).
    pub seen: BTreeMap<String, std::collections::BTreeSet<(SocketAddr, IpAddr)>>,
    pub errors: Vec<String>,
    /// The longest a request took.
    pub slowest: Duration,
}

impl Tally {
    fn add(&mut self, answer: &str) {
        let mut words = answer.split_whitespace();
        let (Some(name), Some(local), Some(peer)) = (words.next(), words.next(), words.next())
        else {
            self.errors.push(format!("garbled answer {answer:?}"));
            return;
        };
        let (Ok(local), Ok(peer)) = (local.parse(), peer.parse::<SocketAddr>()) else {
            self.errors.push(format!("garbled answer {answer:?}"));
            return;
        };
        *self.per_real.entry(name.to_owned()).or_default() += 1;
        self.seen.entry(name.to_owned()).or_default().insert((local, peer.ip()));
    }

    pub fn total(&self) -> usize {
        self.per_real.values().sum()
    }

    /// Panics unless every real's share of the answers is within `tolerance` (relative, 0.1 is
    /// ±10 %) of its share of the weights, and nothing failed.
    pub fn assert_split(&self, weights: &[(&str, u32)], tolerance: f64) {
        assert!(self.errors.is_empty(), "failed requests: {:?}", self.errors);
        let total = self.total() as f64;
        let weight_sum: u32 = weights.iter().map(|(_, w)| w).sum();
        for (name, weight) in weights {
            let want = f64::from(*weight) / f64::from(weight_sum);
            let got = self.per_real.get(*name).copied().unwrap_or(0) as f64 / total;
            assert!(
                (got - want).abs() <= want * tolerance,
                "{name}: {:.1} % of the answers, weight share {:.1} % (±{:.0} %): {:?}",
                got * 100.0,
                want * 100.0,
                tolerance * 100.0,
                self.per_real
            );
        }
        let unknown: Vec<_> =
            self.per_real.keys().filter(|n| !weights.iter().any(|(w, _)| w == n)).collect();
        assert!(unknown.is_empty(), "answers from reals without weight: {unknown:?}");
    }
}

/// Runs `count` requests from the client namespace, one after the other, and counts the
/// answers by the real that gave them.
fn tally(count: usize, request: impl Fn() -> Result<String, String> + Send + Sync) -> Tally {
    in_netns(CLIENT_NS, || {
        let mut tally = Tally::default();
        for _ in 0..count {
            let started = std::time::Instant::now();
            let result = request();
            tally.slowest = tally.slowest.max(started.elapsed());
            match result {
                Ok(answer) => tally.add(&answer),
                Err(e) => tally.errors.push(e),
            }
            // Broken beyond counting: fail now rather than after `count` time-outs.
            if tally.errors.len() >= MAX_ERRORS {
                tally.errors.push(format!("stopped after {MAX_ERRORS} failures"));
                break;
            }
        }
        tally
    })
}

fn request(vip: SocketAddr) -> Result<String, String> {
    let mut stream =
        TcpStream::connect_timeout(&vip, IO_TIMEOUT).map_err(|e| format!("connect {vip}: {e}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|e| format!("reading from {vip}: {e}"))?;
    Ok(answer.trim().to_owned())
}

fn udp_request(vip: SocketAddr) -> Result<String, String> {
    let any: SocketAddr = match vip {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).map_err(|e| format!("binding: {e}"))?;
    socket.connect(vip).map_err(|e| format!("connect {vip}: {e}"))?;
    socket.set_read_timeout(Some(UDP_TIMEOUT)).map_err(|e| e.to_string())?;
    socket.send(b"?").map_err(|e| format!("sending to {vip}: {e}"))?;
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).map_err(|e| format!("no answer from {vip}: {e}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
}

/// Threads in a real's namespace answering each TCP connection or UDP datagram with
/// `NAME LOCAL PEER` (and closing the connection).
struct Server {
    real: String,
    threads: Vec<JoinHandle<()>>,
    fds: Vec<RawFd>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start_udp(real: &Real, addrs: &[SocketAddr]) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let mut server =
            Server { real: real.name.clone(), threads: Vec::new(), fds: Vec::new(), stop };
        for &addr in addrs {
            let (tx, rx) = std::sync::mpsc::channel();
            let (ns, name, stopped) = (real.ns.clone(), real.name.clone(), server.stop.clone());
            server.threads.push(std::thread::spawn(move || {
                enter_netns(&ns);
                let socket =
                    UdpSocket::bind(addr).unwrap_or_else(|e| panic!("{ns}: binding {addr}: {e}"));
                tx.send(socket.as_raw_fd()).expect("handing over the socket");
                let mut buf = [0u8; 512];
                loop {
                    let received = socket.recv_from(&mut buf);
                    // A shut-down socket returns at once (with 0 bytes).
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok((_, peer)) = received else { continue };
                    let _ = socket.send_to(format!("{name} {addr} {peer}\n").as_bytes(), peer);
                }
            }));
            server.fds.push(rx.recv_timeout(IO_TIMEOUT).expect("server thread did not start"));
        }
        server
    }

    fn start(real: &Real, port: u16) -> Server {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, name, stopped) = (real.ns.clone(), real.name.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            enter_netns(&ns);
            // Dual-stack: IPv4 connections arrive as v4-mapped, answered canonically below.
            let listener = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
                .unwrap_or_else(|e| panic!("{ns}: binding port {port}: {e}"));
            tx.send(listener.as_raw_fd()).expect("handing over the listener");
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let (Ok(local), Ok(peer)) = (conn.local_addr(), conn.peer_addr()) else {
                    continue;
                };
                let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
                let (local, peer) = (canonical(local), canonical(peer));
                let _ = conn.write_all(format!("{name} {local} {peer}\n").as_bytes());
                let _ = conn.shutdown(Shutdown::Both);
            }
        });
        let fd = rx.recv_timeout(IO_TIMEOUT).expect("server thread did not start");
        Server { real: real.name.clone(), threads: vec![thread], fds: vec![fd], stop }
    }

    fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.stop.store(true, Ordering::SeqCst);
        for &fd in &self.fds {
            // Wakes the blocked accept or receive (Linux returns EINVAL from accept on a shut-down
            // listener, 0 bytes from a shut-down UDP socket).
            // SAFETY: the sockets stay open until their threads end, which we wait for below.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Moves the calling thread into the named network namespace (`/run/netns/NAME`).
pub fn enter_netns(ns: &str) {
    lb_test_support::enter_netns(ns).unwrap_or_else(|e| panic!("setns {ns}: {e}"));
}

/// Runs `f` on a thread inside namespace `ns` and returns its result (a panic propagates).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    lb_test_support::in_netns(ns, f).unwrap_or_else(|e| panic!("netns {ns}: {e}"))
}

/// Writes `/proc/sys/KEY` in the calling thread's namespace (`/proc/sys/net` is per namespace).
pub fn write_sysctl(key: &str, value: &str) {
    std::fs::write(format!("/proc/sys/{key}"), value)
        .unwrap_or_else(|e| panic!("sysctl {key}={value}: {e}"));
}

pub fn read_sysctl(key: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{key}"))
        .unwrap_or_else(|e| panic!("sysctl {key}: {e}"))
        .trim()
        .to_owned()
}

/// `ip [-n NS] ARGS` (iproute2: busybox's `ip` has no namespaces); its stdout.
pub fn ip(ns: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip [-n NS] -batch -` with `commands`, one per line: one process for many changes (process
/// starts are slow under TCG).
pub fn ip_batch(ns: Option<&str>, commands: &str) {
    lab::ip_batch(ns, commands).unwrap_or_else(|e| panic!("{e}"));
}

/// `ipvsadm ARGS`' stdout.
pub fn ipvsadm(args: &[&str]) -> String {
    let out = Command::new("ipvsadm").args(args).output().expect("running ipvsadm");
    assert!(out.status.success(), "ipvsadm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An IPVS service with its destinations, deleted on drop (with them).
pub struct ServiceGuard {
    pub key: ServiceKey,
}

impl ServiceGuard {
    pub fn add(ipvs: &mut Ipvs, service: &Service, destinations: &[Destination]) -> ServiceGuard {
        ipvs.add_service(service).unwrap_or_else(|e| panic!("adding {}: {e}", service.key));
        let guard = ServiceGuard { key: service.key };
        for d in destinations {
            ipvs.add_destination(&service.key, d)
                .unwrap_or_else(|e| panic!("adding {} to {}: {e}", d.socket_addr(), service.key));
        }
        guard
    }
}

impl Drop for ServiceGuard {
    fn drop(&mut self) {
        if let Ok(mut ipvs) = Ipvs::open() {
            let _ = ipvs.delete_service(&self.key);
        }
    }
}

/// Our namespaces and links still in the guest (none once every [`Lab`] is dropped).
pub fn leftovers() -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()))
        .into_iter()
        .flatten()
        .filter(|n| n.starts_with("lbv"))
        .map(|n| format!("netns {n}"))
        .collect();
    let links = ip(None, &["-o", "link", "show"]);
    found.extend(
        links
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n))
            .filter(|n| n.starts_with("lbv"))
            .map(|n| format!("link {n}")),
    );
    found
}

#[test]
#[ignore = "needs root and iproute2 in the guest: `cargo xtask vm test` runs it in a VM"]
fn vm_lab_leaves_nothing_behind_even_after_a_panic() {
    let forward = read_sysctl("net/ipv4/ip_forward");
    assert!(leftovers().is_empty(), "{:?}", leftovers());
    // Quiet: the panic is the point (the guest runs one test at a time, so the hook is ours).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| {
        let mut lab = Lab::new(2, RealMode::Nat);
        lab.serve(8080);
        assert!(!leftovers().is_empty());
        assert_eq!(read_sysctl("net/ipv4/ip_forward"), "1");
        panic!("on purpose");
    });
    std::panic::set_hook(hook);
    assert!(result.is_err());
    assert!(leftovers().is_empty(), "{:?}", leftovers());
    assert_eq!(read_sysctl("net/ipv4/ip_forward"), forward);
}
