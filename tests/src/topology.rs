//! L2 topologies between network namespaces: one `switch` namespace holding a Linux bridge, and one
//! namespace per host with a veth (`eth0`) into it. The host root namespace is never touched beyond
//! creating and deleting namespaces.

use crate::netns::{Netns, cleanup_orphans, unique_prefix};
use crate::process::Process;
use anyhow::{Context, Result, bail};
use lb_test_support::lab;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

/// Interface name of every host's link to the bridge.
pub const HOST_IFNAME: &str = "eth0";
/// Name of the bridge inside the switch namespace.
pub const BRIDGE: &str = "br0";

/// How the bridge forwards unicast.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BridgeMode {
    /// Normal MAC learning: right for throughput tests.
    #[default]
    Learning,
    /// `ageing_time 0`: every frame is flooded, so an observer host sees all unicast (e.g. VRRP
    /// unicast adverts).
    Hub,
}

/// One host namespace attached to the bridge.
#[derive(Clone, Debug)]
pub struct Host {
    /// Short name given to [`Topology::add_host`] ("client", "rs1", ...).
    pub name: String,
    /// The host's namespace (a shared handle; the [`Topology`] deletes it).
    pub ns: Netns,
    /// Its interface towards the bridge: always [`HOST_IFNAME`].
    pub ifname: String,
    /// MAC of `ifname`: `02:00:00:00:HH:LL`, HHLL = 1-based host index (locally administered, so
    /// stable and easy to recognise in captures).
    pub mac: [u8; 6],
    /// Addresses (CIDR) configured on `ifname` at creation.
    pub addrs: Vec<String>,
    /// Name of the peer veth on the bridge, inside the switch namespace.
    pub bridge_port: String,
}

impl Host {
    /// The first IPv4 address configured on `eth0`, if any.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.addrs.iter().filter_map(|cidr| cidr.split('/').next()?.parse::<Ipv4Addr>().ok()).next()
    }

    /// `mac` as `aa:bb:cc:dd:ee:ff`.
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }

    /// Adds another address (CIDR) to `eth0` (IPv6 without DAD). Not reflected in `addrs`.
    pub fn add_addr(&self, cidr: &str) -> Result<()> {
        add_addr(&self.ns, &self.ifname, cidr)
    }

    /// Whether `addr` is configured on `eth0` (any prefix length): a VIP held by VRRP.
    pub fn has_addr(&self, addr: IpAddr) -> bool {
        let needle = format!(" {addr}/");
        self.ns.ip(&["-o", "addr", "show", "dev", &self.ifname]).is_ok_and(|o| o.contains(&needle))
    }

    /// Whether an XDP program is attached to `eth0`.
    pub fn xdp_attached(&self) -> bool {
        self.ns.ip(&["link", "show", "dev", &self.ifname]).is_ok_and(|o| o.contains("xdp"))
    }

    /// Puts `vip` on `lo` as a host route (/32 or /128), as a DR real server needs.
    pub fn add_vip_on_lo(&self, vip: IpAddr) -> Result<()> {
        let cidr = match vip {
            IpAddr::V4(a) => format!("{a}/32"),
            IpAddr::V6(a) => format!("{a}/128"),
        };
        add_addr(&self.ns, "lo", &cidr)
    }

    /// DR real-server ARP behaviour: never answer ARP for the VIP on `lo` (`arp_ignore=1`) and never
    /// use it as ARP source (`arp_announce=2`), on `all` and `eth0`.
    pub fn realserver_arp_sysctls(&self) -> Result<()> {
        for (key, value) in lab::realserver_arp_sysctls(&self.ifname) {
            self.ns.sysctl(&key, value)?;
        }
        Ok(())
    }
}

/// A set of namespaces on one bridge; the RAII guard for all of them.
///
/// Drop kills the processes handed to [`Topology::adopt`], then deletes every host namespace and the
/// switch namespace (which removes the veths and the bridge) — also during a panic unwind, even if
/// clones of the hosts' [`Netns`] handles are still around.
pub struct Topology {
    procs: Vec<Process>,
    hosts: Vec<Host>,
    switch: Netns,
    label: String,
    prefix: String,
    mode: BridgeMode,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("label", &self.label)
            .field("prefix", &self.prefix)
            .field("mode", &self.mode)
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl Topology {
    /// A learning-bridge topology; `label` only makes namespace names readable (`lb…-label-host`).
    pub fn new(label: &str) -> Result<Topology> {
        Topology::with_mode(label, BridgeMode::Learning)
    }

    /// Creates the switch namespace and bridge in the given mode.
    ///
    /// The first call in a process also removes leftovers of *dead* test processes
    /// ([`cleanup_orphans`]).
    pub fn with_mode(label: &str, mode: BridgeMode) -> Result<Topology> {
        static ORPHANS: Once = Once::new();
        ORPHANS.call_once(|| {
            if let Err(e) = cleanup_orphans() {
                eprintln!("lb-tests: cleanup_orphans failed: {e:#}");
            }
        });
        let prefix = unique_prefix();
        let label = sanitize_label(label);
        let switch = Netns::create(&format!("{prefix}-{label}-sw"))?;
        // Bridge ports need no IPv6: without it they stay silent (no RS/MLD noise in captures).
        switch.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        switch.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        let ageing = match mode {
            BridgeMode::Learning => 30000,
            BridgeMode::Hub => 0,
        };
        ip(&switch, &lab::bridge(BRIDGE, Some(ageing))).context("creating the bridge")?;
        switch.ip(&["link", "set", BRIDGE, "up"])?;
        Ok(Topology { procs: Vec::new(), hosts: Vec::new(), switch, label, prefix, mode })
    }

    /// The unique prefix of every namespace of this topology.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The (sanitised) label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The bridge mode chosen at creation.
    pub fn mode(&self) -> BridgeMode {
        self.mode
    }

    /// The namespace holding the bridge [`BRIDGE`].
    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// Hosts in creation order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Names of all namespaces of this topology (switch first).
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.switch.name().to_string())
            .chain(self.hosts.iter().map(|h| h.ns.name().to_string()))
            .collect()
    }

    /// Creates host `name` (lowercase letters/digits, ≤ 12 chars) with a veth `eth0` to the bridge,
    /// `lo` and `eth0` up, IPv6 DAD off, TX checksum offload off (native XDP on veth needs full
    /// checksums), and `addrs` (CIDR) on `eth0`.
    pub fn add_host(&mut self, name: &str, addrs: &[&str]) -> Result<Host> {
        let valid = !name.is_empty()
            && name.len() <= 12
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            bail!("host name {name:?}: use 1-12 lowercase letters/digits");
        }
        if name == "sw" || self.host(name).is_some() {
            bail!("host name {name:?} is already taken");
        }
        let ns = Netns::create(&format!("{}-{}-{name}", self.prefix, self.label))?;
        // Before the veth appears, so eth0 inherits "no DAD" from `default`.
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;

        let index = self.hosts.len() + 1;
        let mac = [0x02, 0, 0, 0, (index >> 8) as u8, index as u8];
        let mac_str = format_mac(&mac);
        let port = format!("p-{name}");
        ip(&self.switch, &lab::veth_into(&port, ns.name(), HOST_IFNAME, Some(&mac_str)))
            .with_context(|| format!("creating the veth of {name}"))?;
        ip(&self.switch, &lab::attach(&port, BRIDGE))?;
        ns.exec(&["ethtool", "-K", HOST_IFNAME, "tx", "off"])
            .context("ethtool (needed for native XDP on veth)")?;
        ns.ip(&["link", "set", HOST_IFNAME, "up"])?;
        for cidr in addrs {
            add_addr(&ns, HOST_IFNAME, cidr)?;
        }
        let host = Host {
            name: name.to_string(),
            ns,
            ifname: HOST_IFNAME.to_string(),
            mac,
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            bridge_port: port,
        };
        self.hosts.push(host.clone());
        Ok(host)
    }

    /// Hands a process to the topology: it is killed before the namespaces are deleted.
    pub fn adopt(&mut self, process: Process) {
        self.procs.push(process);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Processes first: a process inside a namespace keeps the namespace alive.
        self.procs.clear();
        for host in self.hosts.iter().rev() {
            if let Err(e) = host.ns.delete() {
                eprintln!("lb-tests: deleting {}: {e:#}", host.ns.name());
            }
        }
        if let Err(e) = self.switch.delete() {
            eprintln!("lb-tests: deleting {}: {e:#}", self.switch.name());
        }
    }
}

/// Port of the testpeer HTTP server on every real (VIP and own address).
pub const DR_HTTP_PORT: u16 = 80;
/// Port of the testpeer UDP echo on every real.
pub const DR_UDP_PORT: u16 = 53;
/// Port of the testpeer line-echo TCP server on every real (for long-lived connections).
pub const DR_TCP_ECHO_PORT: u16 = 7;
/// How long to wait for a testpeer to print `ready`.
const TESTPEER_READY: Duration = Duration::from_secs(10);

/// The standard DR layout on one bridge:
/// client 192.0.2.1/24, director (`dir1`) 192.0.2.2/24, reals `rs1..rsN` at 192.0.2.11.. /24, each
/// with the VIP/32 on `lo`, DR ARP sysctls and an `lb-testpeer` named after it serving HTTP
/// (port [`DR_HTTP_PORT`]), UDP echo ([`DR_UDP_PORT`]) and TCP line echo ([`DR_TCP_ECHO_PORT`]) on
/// both the VIP and its own address.
///
/// The VIP is configured nowhere else: the director (or whatever the test runs there) must claim
/// it, e.g. with `director.add_addr("192.0.2.100/32")` or by its VRRP instance. More hosts (a second
/// director, an observer) can be added through `topo`.
pub struct DrTopology {
    // Declared first so the servers die before the namespaces go.
    peers: Vec<Option<Process>>,
    testpeer_bin: std::path::PathBuf,
    /// The underlying topology (owns all namespaces).
    pub topo: Topology,
    /// 192.0.2.1
    pub client: Host,
    /// 192.0.2.2, namespace host name `dir1`.
    pub director: Host,
    /// `rs1..rsN`, at [`DrTopology::real_ip`].
    pub reals: Vec<Host>,
    /// The virtual service address.
    pub vip: Ipv4Addr,
}

impl std::fmt::Debug for DrTopology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrTopology").field("topo", &self.topo).field("vip", &self.vip).finish()
    }
}

impl DrTopology {
    /// Client address.
    pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    /// Director address.
    pub const DIRECTOR_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

    /// Own address of real `i` (0-based): 192.0.2.(11 + i).
    pub fn real_ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, 11u8.wrapping_add(i as u8))
    }

    /// A config with one service on `vip`:80 (`eth0`, `delay_loop` 0.5 s) over the first
    /// `n_reals` reals, each with a TCP check of `connect_timeout` 0.5 s and no retry: a dead
    /// real is down within one check (1 s).
    pub fn fast_tcp_check_config(vip: Ipv4Addr, n_reals: usize) -> String {
        let mut conf = format!(
            "[[virtual_server]]\nvip = \"{vip}\"\nport = 80\ninterface = \"eth0\"\ndelay_loop = 0.5\n"
        );
        for i in 0..n_reals {
            conf.push_str(&format!(
                "[[virtual_server.real_server]]\naddress = \"{}\"\n\
                 [virtual_server.real_server.tcp_check]\nconnect_timeout = 0.5\nretry = 0\n",
                Self::real_ip(i)
            ));
        }
        conf
    }

    /// Puts the VIP on the director, writes `config` to `lb.toml` in a fresh scratch folder and
    /// starts `lb run` on it in the director's namespace (`--xdp-mode generic`, then `extra`).
    /// The folder lives as long as the returned guard.
    pub fn start_agent(
        &self,
        config: &str,
        extra: &[&str],
    ) -> Result<(crate::LbAgent, tempfile::TempDir)> {
        let dir = crate::scratch_dir(&format!("{}-cfg-", self.topo.prefix()))?;
        let cfg = dir.path().join("lb.toml");
        std::fs::write(&cfg, config).with_context(|| format!("writing {}", cfg.display()))?;
        Ok((self.start_agent_on(&cfg, extra)?, dir))
    }

    /// [`DrTopology::start_agent`] on a config file the caller keeps (e.g. a
    /// [`crate::GatedFile`]).
    pub fn start_agent_on(&self, cfg: &std::path::Path, extra: &[&str]) -> Result<crate::LbAgent> {
        self.director.add_addr(&format!("{}/32", self.vip)).context("VIP on the director")?;
        let mut args = vec!["--xdp-mode", "generic"];
        args.extend_from_slice(extra);
        crate::LbAgent::start(&self.director.ns, &crate::lb_bin(), cfg, &args)
    }

    /// Builds the layout on a learning bridge; `testpeer_bin` is the `lb-testpeer` executable
    /// (`env!("CARGO_BIN_EXE_lb-testpeer")` in integration tests).
    pub fn build(
        label: &str,
        n_reals: usize,
        vip: Ipv4Addr,
        testpeer_bin: &Path,
    ) -> Result<DrTopology> {
        DrTopology::build_with_mode(label, n_reals, vip, testpeer_bin, BridgeMode::Learning)
    }

    /// [`DrTopology::build`] with a chosen bridge mode.
    pub fn build_with_mode(
        label: &str,
        n_reals: usize,
        vip: Ipv4Addr,
        testpeer_bin: &Path,
        mode: BridgeMode,
    ) -> Result<DrTopology> {
        if n_reals > 88 {
            bail!("at most 88 reals (192.0.2.11-98)");
        }
        let reserved =
            [Self::CLIENT_IP, Self::DIRECTOR_IP].into_iter().chain((0..n_reals).map(Self::real_ip));
        if reserved.clone().any(|a| a == vip) {
            bail!("VIP {vip} collides with a host address");
        }
        if !testpeer_bin.is_file() {
            bail!("testpeer binary {} not found", testpeer_bin.display());
        }
        let mut topo = Topology::with_mode(label, mode)?;
        let client = topo.add_host("client", &[&format!("{}/24", Self::CLIENT_IP)])?;
        let director = topo.add_host("dir1", &[&format!("{}/24", Self::DIRECTOR_IP)])?;
        let mut reals = Vec::with_capacity(n_reals);
        for i in 0..n_reals {
            let real =
                topo.add_host(&format!("rs{}", i + 1), &[&format!("{}/24", Self::real_ip(i))])?;
            real.add_vip_on_lo(IpAddr::V4(vip))?;
            real.realserver_arp_sysctls()?;
            reals.push(real);
        }
        let mut dr = DrTopology {
            peers: Vec::new(),
            testpeer_bin: testpeer_bin.to_path_buf(),
            topo,
            client,
            director,
            reals,
            vip,
        };
        for i in 0..n_reals {
            let peer = dr.spawn_peer(i)?;
            dr.peers.push(Some(peer));
        }
        Ok(dr)
    }

    /// The testpeer of real `i`, if running.
    pub fn peer(&self, i: usize) -> Option<&Process> {
        self.peers.get(i).and_then(Option::as_ref)
    }

    /// Kills real `i`'s testpeer (e.g. to fail a health check).
    pub fn stop_peer(&mut self, i: usize) -> Result<()> {
        match self.peers.get_mut(i) {
            Some(slot) => {
                if let Some(mut p) = slot.take() {
                    p.kill()?;
                }
                Ok(())
            }
            None => bail!("no real {i}"),
        }
    }

    /// (Re)starts real `i`'s testpeer; returns once it serves.
    pub fn start_peer(&mut self, i: usize) -> Result<()> {
        self.stop_peer(i)?;
        let peer = self.spawn_peer(i)?;
        self.peers[i] = Some(peer);
        Ok(())
    }

    fn spawn_peer(&self, i: usize) -> Result<Process> {
        let real = self.reals.get(i).context("no such real")?;
        let own = Self::real_ip(i);
        let mut args = vec!["--name".to_string(), real.name.clone()];
        for addr in [self.vip, own] {
            args.push("--http".into());
            args.push(format!("{addr}:{DR_HTTP_PORT}"));
            args.push("--udp".into());
            args.push(format!("{addr}:{DR_UDP_PORT}"));
            args.push("--tcp-echo".into());
            args.push(format!("{addr}:{DR_TCP_ECHO_PORT}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_testpeer(&real.ns, &self.testpeer_bin, &args)
    }
}

/// Starts `lb-testpeer args...` in `ns` and waits for its `ready` line.
pub fn spawn_testpeer(ns: &Netns, testpeer_bin: &Path, args: &[&str]) -> Result<Process> {
    let bin = testpeer_bin.to_str().context("testpeer path is not UTF-8")?;
    let mut argv = vec![bin];
    argv.extend_from_slice(args);
    let mut p = ns.spawn(&argv)?;
    p.wait_for_line(|l| l == "ready", TESTPEER_READY)?;
    Ok(p)
}

fn add_addr(ns: &Netns, dev: &str, cidr: &str) -> Result<()> {
    ip(ns, &lab::addr_add(dev, cidr))
        .with_context(|| format!("[{}] adding {cidr} to {dev}", ns.name()))?;
    Ok(())
}

/// `ip -n NS` with one of `lb_test_support::lab`'s commands.
fn ip(ns: &Netns, args: &[String]) -> Result<String> {
    ns.ip(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Lowercase alphanumerics, at most 10, never empty: keeps namespace names readable and valid.
fn sanitize_label(label: &str) -> String {
    let s: String = label
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(10)
        .collect();
    if s.is_empty() { "t".to_string() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sanitised() {
        assert_eq!(sanitize_label("DR basic_test-1!"), "drbasictes");
        assert_eq!(sanitize_label("--"), "t");
    }

    #[test]
    fn mac_formatting() {
        assert_eq!(format_mac(&[2, 0, 0, 0, 1, 0xab]), "02:00:00:00:01:ab");
    }

    #[test]
    fn real_addresses() {
        assert_eq!(DrTopology::real_ip(0), Ipv4Addr::new(192, 0, 2, 11));
        assert_eq!(DrTopology::real_ip(2), Ipv4Addr::new(192, 0, 2, 13));
    }
}
