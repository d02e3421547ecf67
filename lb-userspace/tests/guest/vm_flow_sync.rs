//! Flow sync between `lb` and a kernel IPVS director (issue #17), in the guest whose kernel has
//! IPVS: the kernel director lives in namespace [`KERNEL_NS`] on the lab's bridge and runs
//! `ipvsadm --start-daemon master` and `backup` (as keepalived's `lvs_sync_daemon` does), `lb
//! run --dataplane xdp` with `[flow_sync]` serves the same VIP in the root namespace.
//!
//! The client reaches the VIP through whichever director its neighbour entry for the VIP names:
//! moving that entry is the failover (what a VRRP takeover's gratuitous ARP does).

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, RawFd},
    process::{Command, Stdio},
    time::Duration,
};

use super::{
    vm_agent::{GuestAgent, wait_until},
    vm_net::{BRIDGE, CLIENT_NS, Lab, RealMode, VIP, enter_netns, in_netns, ip, ip_batch},
};

/// The kernel IPVS director's namespace (`lbv` like every name the lab makes).
const KERNEL_NS: &str = "lbvk";
const KERNEL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The line-echo service: each line is answered with the real's name.
const PORT: u16 = 7000;
/// The same, persistent (`persistence_timeout`): its flows go out with their templates.
const PERSISTENT_PORT: u16 = 7001;
const SYNC_ID: u8 = 5;
/// Connections of each direction.
const CONNECTIONS: usize = 24;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A line server on [`PORT`] and [`PERSISTENT_PORT`] in every real: every line read is answered with `NAME\n`, on a
/// connection that stays open until the client closes it.
struct LineServers {
    listeners: Vec<RawFd>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl LineServers {
    fn start(lab: &Lab) -> LineServers {
        let mut servers = LineServers { listeners: Vec::new(), threads: Vec::new() };
        for (real, port) in lab.reals.iter().flat_map(|r| [(r, PORT), (r, PERSISTENT_PORT)]) {
            let (tx, rx) = std::sync::mpsc::channel();
            let (ns, name) = (real.ns.clone(), real.name.clone());
            servers.threads.push(std::thread::spawn(move || {
                enter_netns(&ns);
                let listener = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
                    .unwrap_or_else(|e| panic!("{ns}: binding {port}: {e}"));
                tx.send(listener.as_raw_fd()).expect("handing over the listener");
                // Ends when the listener is shut down (accept fails).
                while let Ok((conn, _)) = listener.accept() {
                    let name = name.clone();
                    std::thread::spawn(move || {
                        let mut writer = conn.try_clone().expect("clone");
                        for line in BufReader::new(conn).lines() {
                            if line.is_err()
                                || writer.write_all(format!("{name}\n").as_bytes()).is_err()
                            {
                                break;
                            }
                        }
                    });
                }
            }));
            servers.listeners.push(rx.recv_timeout(IO_TIMEOUT).expect("server did not start"));
        }
        servers
    }
}

impl Drop for LineServers {
    fn drop(&mut self) {
        for &fd in &self.listeners {
            // SAFETY: the listeners stay open until their threads end, which we wait for below.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One client connection and the real that answered it first.
struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    real: String,
}

impl Conn {
    /// Sends a line and reads the real's name back.
    fn ask(&mut self) -> Result<String, String> {
        self.stream.write_all(b"?\n").map_err(|e| format!("write: {e}"))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("closed".to_owned()),
            Ok(_) => Ok(line.trim().to_owned()),
            Err(e) => Err(format!("read: {e}")),
        }
    }

    fn client_port(&self) -> u16 {
        self.stream.local_addr().map(|a| a.port()).unwrap_or(0)
    }
}

/// `count` connections from the client to the VIP, each asked `asks` times (so the kernel
/// director sees enough packets to sync it: its `sync_threshold` is 3).
fn connect(count: usize, asks: usize) -> Vec<Conn> {
    connect_to(PORT, count, asks)
}

fn connect_to(port: u16, count: usize, asks: usize) -> Vec<Conn> {
    let vip = SocketAddr::new(VIP.into(), port);
    in_netns(CLIENT_NS, || {
        (0..count)
            .map(|i| {
                let stream = TcpStream::connect_timeout(&vip, IO_TIMEOUT)
                    .unwrap_or_else(|e| panic!("connection {i} to {vip}: {e}"));
                stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                let reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut c = Conn { stream, reader, real: String::new() };
                for _ in 0..asks {
                    c.real = c.ask().unwrap_or_else(|e| panic!("connection {i}: {e}"));
                }
                c
            })
            .collect()
    })
}

/// The kernel IPVS director: a namespace on the bridge with the VIP on `lo` (not answering ARP
/// for it), the service over the lab's reals, and both sync daemons. Drop deletes it (the
/// kernel stops its daemons with the namespace).
struct KernelDirector {
    mac: String,
}

impl KernelDirector {
    fn start(lab: &Lab) -> KernelDirector {
        ip_batch(
            None,
            &format!(
                "netns add {KERNEL_NS}\nlink add {KERNEL_NS} type veth peer name eth0 netns \
                 {KERNEL_NS}\nlink set {KERNEL_NS} master {BRIDGE}\nlink set {KERNEL_NS} up\n"
            ),
        );
        let mut director = KernelDirector { mac: String::new() };
        in_netns(KERNEL_NS, || {
            for (key, value) in lb_test_support::lab::realserver_arp_sysctls("eth0") {
                super::vm_net::write_sysctl(&key, value);
            }
        });
        ip_batch(
            Some(KERNEL_NS),
            &format!(
                "link set lo up\nlink set eth0 up\naddr add {KERNEL_ADDR}/24 dev eth0\n\
                 addr add {VIP}/32 dev lo\n"
            ),
        );
        for (port, persistent) in [(PORT, &[][..]), (PERSISTENT_PORT, &["-p", "300"][..])] {
            let vip = format!("{VIP}:{port}");
            kernel_ipvsadm(&[&["-A", "-t", &vip, "-s", "rr"], persistent].concat());
            for real in &lab.reals {
                let real = format!("{}:{port}", real.addr);
                kernel_ipvsadm(&["-a", "-t", &vip, "-r", &real, "-g"]);
            }
        }
        for state in ["master", "backup"] {
            kernel_ipvsadm(&[
                "--start-daemon",
                state,
                "--mcast-interface",
                "eth0",
                "--syncid",
                &SYNC_ID.to_string(),
            ]);
        }
        let link = ip(Some(KERNEL_NS), &["-j", "link", "show", "dev", "eth0"]);
        let link: serde_json::Value = serde_json::from_str(&link).expect("ip -j link");
        director.mac = link[0]["address"].as_str().expect("eth0's MAC").to_owned();
        director
    }

    /// `ipvsadm -Lnc` there: (client, real) of each TCP connection to the VIP's [`PORT`].
    fn connections(&self) -> BTreeMap<SocketAddr, SocketAddr> {
        self.entries(PORT)
    }

    /// `ipvsadm -Lnc` there: (client, real) of each TCP entry of the VIP's `port` (a
    /// persistence template's client has port 0).
    fn entries(&self, port: u16) -> BTreeMap<SocketAddr, SocketAddr> {
        let vip = format!("{VIP}:{port}");
        kernel_ipvsadm(&["-Lnc"])
            .lines()
            .filter_map(|l| {
                // pro expire state source virtual destination
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() == 6 && w[0] == "TCP" && w[4] == vip)
                    .then(|| Some((w[3].parse().ok()?, w[5].parse().ok()?)))
                    .flatten()
            })
            .collect()
    }
}

impl Drop for KernelDirector {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-force", "-batch", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut child| {
                let batch = format!("link del {KERNEL_NS}\nnetns del {KERNEL_NS}\n");
                child.stdin.take().expect("stdin").write_all(batch.as_bytes())?;
                child.wait()
            });
    }
}

/// `ipvsadm ARGS` in the kernel director's namespace; its stdout.
fn kernel_ipvsadm(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", KERNEL_NS, "ipvsadm"])
        .args(args)
        .output()
        .expect("running ipvsadm");
    assert!(out.status.success(), "ipvsadm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The client's neighbour entry for the VIP: its traffic goes to the director with `mac`.
fn route_client_to(mac: &str) {
    ip_batch(
        Some(CLIENT_NS),
        &format!("neigh replace {VIP} lladdr {mac} dev eth0 nud permanent\n"),
    );
}

fn bridge_mac() -> String {
    let link: serde_json::Value =
        serde_json::from_str(&ip(None, &["-j", "link", "show", "dev", BRIDGE])).expect("ip -j");
    link[0]["address"].as_str().expect("the bridge's MAC").to_owned()
}

/// The XDP services on the VIP over the lab's reals, with `[flow_sync]` on the bridge.
fn config(lab: &Lab) -> String {
    config_with(lab, Some(SYNC_ID))
}

/// [`config`] with `[flow_sync]`'s sync id `sync_id`, or without the table.
fn config_with(lab: &Lab, sync_id: Option<u8>) -> String {
    let mut toml = String::from("[dataplane]\nflow_table_size = 4096\nmax_services = 4\n\n");
    for (port, persistent) in [(PORT, ""), (PERSISTENT_PORT, "persistence_timeout = 300\n")] {
        toml.push_str(&format!(
            "[[virtual_server]]\nvip = \"{VIP}\"\nport = {port}\nprotocol = \"tcp\"\n\
             interface = \"{BRIDGE}\"\n{persistent}"
        ));
        for real in &lab.reals {
            toml.push_str(&format!(
                "[[virtual_server.real_server]]\naddress = \"{}\"\nport = {port}\n",
                real.addr
            ));
        }
        toml.push('\n');
    }
    if let Some(id) = sync_id {
        toml.push_str(&format!("\n[flow_sync]\ninterface = \"{BRIDGE}\"\nsync_id = {id}\n"));
    }
    toml
}

/// `lb flows --json` of the service: client → (real, origin).
fn lb_flows(agent: &GuestAgent) -> BTreeMap<SocketAddr, (SocketAddr, String)> {
    let out = agent.cli(&["flows", "--json", "--vip", &format!("{VIP}:{PORT}")]).expect("lb flows");
    let json: serde_json::Value = serde_json::from_str(&out).expect("lb flows --json");
    json["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            Some((
                f["client"].as_str()?.parse().ok()?,
                (f["real"].as_str()?.parse().ok()?, f["origin"].as_str()?.to_owned()),
            ))
        })
        .collect()
}

fn real_addr(lab: &Lab, name: &str) -> SocketAddr {
    let real = lab.reals.iter().find(|r| r.name == name).expect("a real of the lab");
    SocketAddr::new(real.addr.into(), PORT)
}

/// Both directions in one guest boot and one `lb run`:
/// (b) connections `lb` forwards are listed by the kernel's backup daemon (`ipvsadm -Lnc`) on
///     the reals `lb` chose;
/// (a) connections the kernel director forwards are installed by `lb` (`lb flows`: origin
///     `sync`, same reals); after `lb`'s table changed (two reals drained, so Maglev sends every
///     new flow to the third) the client fails over to `lb` and each connection still reaches
///     its real.
#[test]
#[ignore = "needs kernel IPVS, XDP and the guest's lb binary: `cargo xtask vm test` runs it in a VM"]
fn vm_flow_sync_interoperates_with_kernel_ipvs() {
    let lab = Lab::new(3, RealMode::Direct);
    let _servers = LineServers::start(&lab);
    let kernel = KernelDirector::start(&lab);
    let agent = GuestAgent::start(
        "flow-sync",
        &config(&lab),
        &["--dataplane", "xdp", "--xdp-mode", "generic"],
    );
    assert!(
        wait_until(Duration::from_secs(30), || agent.all_up(2, Some(3))),
        "reals up; log:\n{}",
        agent.log()
    );
    let status = |agent: &GuestAgent| -> serde_json::Value {
        let out = agent.cli(&["status", "--json"]).expect("lb status");
        serde_json::from_str::<serde_json::Value>(&out).expect("json")["flow_sync"].clone()
    };

    // (b) lb → kernel backup.
    route_client_to(&bridge_mac());
    let via_lb = connect(CONNECTIONS, 1);
    let client = |c: &Conn| SocketAddr::new(lab.client.into(), c.client_port());
    let want: BTreeMap<SocketAddr, SocketAddr> =
        via_lb.iter().map(|c| (client(c), real_addr(&lab, &c.real))).collect();
    let listed = wait_until(Duration::from_secs(20), || {
        let have = kernel.connections();
        want.iter().all(|(c, r)| have.get(c) == Some(r))
    });
    assert!(
        listed,
        "ipvsadm -Lnc of the kernel backup:\n{}\nwanted (client → real) {want:#?}\nlb: {}\n{}",
        kernel_ipvsadm(&["-Lnc"]),
        status(&agent),
        agent.log()
    );
    println!("(b) the kernel backup lists lb's {} connections", want.len());
    // A persistent service's flow goes with its client's template (client port 0).
    let persistent = connect_to(PERSISTENT_PORT, 1, 1);
    let real = SocketAddr::new(real_addr(&lab, &persistent[0].real).ip(), PERSISTENT_PORT);
    let want_persistent = BTreeMap::from([
        (client(&persistent[0]), real),
        (SocketAddr::new(lab.client.into(), 0), real),
    ]);
    let listed =
        wait_until(Duration::from_secs(20), || kernel.entries(PERSISTENT_PORT) == want_persistent);
    assert!(
        listed,
        "ipvsadm -Lnc of the kernel backup:\n{}\nwanted {want_persistent:#?}\nlb: {}",
        kernel_ipvsadm(&["-Lnc"]),
        status(&agent)
    );
    println!("(b) and the template of a persistent service's client");
    drop(via_lb);
    drop(persistent);

    // (a) kernel master → lb.
    route_client_to(&kernel.mac);
    let mut via_kernel = connect(CONNECTIONS, 3);
    let want: BTreeMap<SocketAddr, SocketAddr> =
        via_kernel.iter().map(|c| (client(c), real_addr(&lab, &c.real))).collect();
    let learnt = wait_until(Duration::from_secs(20), || {
        let have = lb_flows(&agent);
        want.iter().all(|(c, r)| have.get(c) == Some(&(*r, "sync".to_owned())))
    });
    assert!(
        learnt,
        "lb flows:\n{:#?}\nwanted (client → real, sync) {want:#?}\nipvsadm -Lnc:\n{}\nlb: {}\n{}",
        lb_flows(&agent),
        kernel_ipvsadm(&["-Lnc"]),
        status(&agent),
        agent.log()
    );
    // rr over three reals: two thirds of them are on r1 and r2.
    let svc = format!("{VIP}:{PORT}");
    for r in ["r1", "r2"] {
        agent.cli(&["drain", &svc, &real_addr(&lab, r).to_string()]).expect("lb drain");
    }
    route_client_to(&bridge_mac());
    let packets = agent.packets(Some(VIP));
    let broken: Vec<String> = in_netns(CLIENT_NS, || {
        via_kernel
            .iter_mut()
            .filter_map(|c| match c.ask() {
                Ok(real) if real == c.real => None,
                Ok(real) => Some(format!("{}: {} → {real}", c.client_port(), c.real)),
                Err(e) => Some(format!("{}: {e}", c.client_port())),
            })
            .collect()
    });
    let moved = via_kernel.iter().filter(|c| c.real != "r3").count();
    assert!(moved > 0, "no connection on a drained real");
    assert!(
        broken.is_empty(),
        "after the failover to lb: {broken:?}\nlb flows {:#?}\nlb: {}\n{}",
        lb_flows(&agent),
        status(&agent),
        agent.log()
    );
    assert!(
        agent.packets(Some(VIP)) >= packets + CONNECTIONS as u64,
        "lb did not forward the connections"
    );
    // New connections go to r3 only: without the synced entries the others would have too.
    let fresh = connect(6, 1);
    assert!(fresh.iter().all(|c| c.real == "r3"), "drained reals got new connections");
    println!(
        "(a) lb installed the kernel's {} connections; {moved} on drained reals kept them; {}",
        want.len(),
        status(&agent)
    );
    for c in via_kernel.iter().chain(&fresh) {
        let _ = c.stream.shutdown(Shutdown::Both);
    }

    // (c) Reloads: another sync id re-binds the socket (the kernel's messages are now of a
    // foreign id: dropped); without [flow_sync] the counters leave `lb status`; back, they
    // continue where they were and the kernel's connections are installed again.
    let count = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let reload = |sync_id: Option<u8>| {
        std::fs::write(agent.config_path(), config_with(&lab, sync_id)).expect("config");
        agent.cli(&["reload"]).expect("lb reload");
    };
    let before = status(&agent);
    reload(Some(SYNC_ID + 1));
    route_client_to(&kernel.mac);
    let foreign = connect(3, 3);
    let dropped = wait_until(Duration::from_secs(20), || {
        status(&agent)["dropped"]["sync_id"].as_u64().unwrap_or(0) > 0
    });
    assert!(
        dropped,
        "sync id {} after the reload: {}\n{}",
        SYNC_ID + 1,
        status(&agent),
        agent.log()
    );
    assert_eq!(count(&status(&agent), "flows_installed"), count(&before, "flows_installed"));
    reload(None);
    assert!(status(&agent).is_null(), "without [flow_sync]: {}", status(&agent));
    reload(Some(SYNC_ID));
    let again = connect(3, 3);
    let installed = wait_until(Duration::from_secs(20), || {
        count(&status(&agent), "flows_installed") >= count(&before, "flows_installed") + 3
    });
    assert!(installed, "after [flow_sync] came back: {}\n{}", status(&agent), agent.log());
    println!("(c) reloads: {}", status(&agent));
    drop((foreign, again));
}

/// The kernel's sync daemons as `ipvsadm -L --daemon` lists them (one line each).
fn kernel_daemons() -> Vec<String> {
    super::vm_net::ipvsadm(&["-L", "--daemon"])
        .lines()
        .filter(|l| l.contains("sync daemon"))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Services on kernel IPVS are synced by the kernel's own daemons: `lb run` starts both (master
/// and backup, as keepalived's `lvs_sync_daemon`) with `[flow_sync]`'s settings, restarts them
/// when a reload changes those, stops them when a reload removes `[flow_sync]`, and at its stop.
#[test]
#[ignore = "needs kernel IPVS and the guest's lb binary: `cargo xtask vm test` runs it in a VM"]
fn vm_flow_sync_runs_the_kernel_sync_daemons_for_ipvs_services() {
    let lab = Lab::new(2, RealMode::Direct);
    let service =
        super::vm_agent::lab_config(&lab, &[super::vm_agent::LabService::dr(80, &[1, 1])]);
    let with_sync =
        |id: u8| format!("{service}\n[flow_sync]\ninterface = \"{BRIDGE}\"\nsync_id = {id}\n");
    assert!(kernel_daemons().is_empty(), "daemons before the test: {:?}", kernel_daemons());
    let mut agent = GuestAgent::start("kernel-sync", &with_sync(SYNC_ID), &["--dataplane", "ipvs"]);
    let running = |id: u8| {
        let d = kernel_daemons();
        d.len() == 2
            && ["master", "backup"].iter().all(|role| {
                d.iter().any(|l| {
                    l.starts_with(role)
                        && l.contains(&format!("mcast={BRIDGE}"))
                        && l.contains(&format!("syncid={id}"))
                })
            })
    };
    let wait = |what: &str, agent: &GuestAgent, done: &dyn Fn() -> bool| {
        assert!(
            wait_until(Duration::from_secs(20), done),
            "{what}: ipvsadm -L --daemon shows {:?}\n{}",
            kernel_daemons(),
            agent.log()
        );
    };
    wait("started", &agent, &|| running(SYNC_ID));
    println!("started: {:?}", kernel_daemons());

    let reload = |agent: &GuestAgent, config: &str| {
        std::fs::write(agent.config_path(), config).expect("config");
        agent.cli(&["reload"]).expect("lb reload");
    };
    reload(&agent, &with_sync(SYNC_ID + 1));
    wait("another sync id", &agent, &|| running(SYNC_ID + 1));
    reload(&agent, &service);
    wait("[flow_sync] removed", &agent, &|| kernel_daemons().is_empty());
    reload(&agent, &with_sync(SYNC_ID));
    wait("[flow_sync] back", &agent, &|| running(SYNC_ID));
    let status = agent.stop(Duration::from_secs(20)).expect("lb run was running");
    assert!(status.success(), "lb run exited with {status}; log:\n{}", agent.log());
    assert!(kernel_daemons().is_empty(), "left running: {:?}", kernel_daemons());
}
