//! `lb realserver up|down`: what every LVS-DR guide's `realserver.sh` does to a real server, done
//! so that it can be run again and undone.
//!
//! `up` puts each VIP on `lo` (or `--dev`) as a host address (/32, /128; IPv6 without duplicate
//! address detection) so that the real accepts the packets the director forwards to it unchanged,
//! and makes sure it never answers ARP for an IPv4 VIP: otherwise it would pull the VIP's traffic
//! away from the director. For that, the kernel takes, for each interface an ARP request arrives
//! on, the larger of `net.ipv4.conf.all.X` and `net.ipv4.conf.IFACE.X` (for `arp_ignore` and
//! `arp_announce` alike), so:
//!
//! - `all.arp_ignore = 1` (answer only for addresses of the interface the request came in on) is
//!   enough for every interface, present and future, unless an interface has a larger value that
//!   answers again (3 and the reserved 4-7): that interface's own value is then set too. Values
//!   1, 2 and 8 (never answer) are left as they are. Setting it on `lo`, as many guides do, does
//!   nothing: ARP requests never arrive on `lo`.
//! - `all.arp_announce = 2` (never use a VIP as the source of our own ARP requests), the largest
//!   value, is enough everywhere.
//!
//! IPv6 needs no setting: Linux answers a neighbour solicitation only for an address of the
//! interface it arrives on, so a VIP on `lo` is never advertised on the NIC (the integration test
//! checks both).
//!
//! Each sysctl is read first and written only if it must change; the first `up` saves the values
//! it changes in a state file (`/run/lb/realserver.json`), before changing them. `down` removes the
//! VIPs and, once no VIP of `up` is left, restores those values and removes the state file.
//! Everything is checked before anything changes: a bad VIP or a missing interface changes nothing.
//!
//! With `--tunnel` the real also decapsulates what a director tunnels to it (LVS-TUN, see
//! docs/tunnels.md), with the kernel's own fallback devices, which take packets from any remote
//! once up: `tunl0` (IPv4 in IPv4) or `ip6tnl0` (IPv6 in IPv6) for `ipip`, `gre0` / `ip6gre0` for
//! `gre`, and for `gue` a FOU receive port (`ip fou add port N ipproto 4`, or `ipproto 41 -6`)
//! that hands the inner packet to `tunl0` / `ip6tnl0`. The outer family is the VIP's unless
//! `--outer 4|6` says otherwise (the family of the real's address in the director's configuration,
//! a mixed-family service): IPv6 in IPv4 arrives on `sit0` (module `sit`), IPv4 in IPv6 on
//! `ip6tnl0`, whose mode `up` changes to `any` (the fallback device takes only IPv6 in IPv6
//! otherwise), GRE on the outer family's device (`gre0` / `ip6gre0` take either inner family),
//! and a GUE port is opened on the outer family with the inner family's protocol (`ipproto 41`
//! over IPv4, `ipproto 4 -6`). `rp_filter` is turned off (0) on `all` and on each device that
//! receives inner IPv4 packets, where it is not already: the inner source is the client, whose
//! route is not through the tunnel, so strict reverse-path filtering would drop every packet.
//! `up` brings the devices up and adds the FOU ports it needs; `down` (with the last VIP) takes
//! down and removes exactly those it added, restores `ip6tnl0`'s mode and the sysctls.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use futures::TryStreamExt as _;
use rtnetlink::AddressMessageBuilder;
use rtnetlink::LinkUnspec;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use serde::{Deserialize, Serialize};

/// Where `up` saves what it changed, for `down`.
pub const DEFAULT_STATE: &str = "/run/lb/realserver.json";
/// The interface that holds the VIPs.
pub const DEFAULT_DEV: &str = "lo";
/// Where the kernel shows its sysctls.
const PROC_SYS: &str = "/proc/sys";

/// `arp_ignore` values that never answer for an address on another interface: 1 (only for the
/// interface's own addresses), 2 (and only from its subnet), 8 (never).
const QUIET_ARP_IGNORE: &[u32] = &[1, 2, 8];
const ARP_IGNORE: u32 = 1;
/// `arp_announce`: always use the outgoing interface's own address in ARP requests.
const ARP_ANNOUNCE: u32 = 2;

/// What `lb realserver` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// Add the VIPs and the ARP settings (saving the previous values).
    Up,
    /// Remove the VIPs and restore the ARP settings.
    Down,
}

/// `--tunnel`: the encapsulation a director sends this real (its `tun_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TunnelKind {
    /// IPv4 in IPv4 (`tunl0`), IPv6 in IPv6 (`ip6tnl0`).
    Ipip,
    /// Direct IP encapsulation over UDP (a FOU port, `--gue-port`).
    Gue,
    /// GRE (`gre0`, `ip6gre0`).
    Gre,
}

/// `--outer`: the family of the outer header, when it is not the VIP's (the family of the real's
/// address in the director's configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Outer {
    /// IPv4 (the real is reached at an IPv4 address).
    #[value(name = "4")]
    V4,
    /// IPv6 (the real is reached at an IPv6 address).
    #[value(name = "6")]
    V6,
}

impl Outer {
    fn is_ipv6(self) -> bool {
        self == Outer::V6
    }
}

/// The decapsulation `up` sets up besides the VIPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    Ipip,
    Gue { port: u16 },
    Gre,
}

impl Tunnel {
    /// `--tunnel` and `--gue-port` together: a port only with GUE, and GUE only with a port.
    ///
    /// # Errors
    /// A port without GUE, GUE without a port, or port 0.
    pub fn from_options(kind: Option<TunnelKind>, gue_port: Option<u16>) -> Result<Option<Tunnel>> {
        match (kind, gue_port) {
            (None, None) => Ok(None),
            (Some(TunnelKind::Ipip), None) => Ok(Some(Tunnel::Ipip)),
            (Some(TunnelKind::Gre), None) => Ok(Some(Tunnel::Gre)),
            (Some(TunnelKind::Gue), Some(0)) => bail!("--gue-port 0: the port must be 1 to 65535"),
            (Some(TunnelKind::Gue), Some(port)) => Ok(Some(Tunnel::Gue { port })),
            (Some(TunnelKind::Gue), None) => {
                bail!("--tunnel gue needs --gue-port N (the virtual server's tun_port)")
            }
            (_, Some(port)) => bail!("--gue-port {port} goes only with --tunnel gue"),
        }
    }
}

/// A FOU receive port: UDP `port` whose payload is an IP packet of protocol `ipproto` (4, 41),
/// over IPv6 when `ipv6`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct FouPort {
    port: u16,
    ipproto: u8,
    ipv6: bool,
}

impl fmt::Display for FouPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FOU port {} ipproto {}", self.port, self.ipproto)?;
        if self.ipv6 { write!(f, " (IPv6)") } else { Ok(()) }
    }
}

/// `ip6tnl0`'s modes (`ip -6 tunnel ... mode`): the inner protocol it takes, 0 for both.
const IP6TNL_ANY: u8 = 0;
const IP6TNL_IP6IP6: u8 = 41;

/// What a tunnel needs for the VIPs' families: devices (with the module that makes them), FOU
/// ports, in order, without repeats; the devices that receive inner IPv4 packets (`rp_filter`);
/// whether `ip6tnl0` must take IPv4 in IPv6 (`mode any`).
#[derive(Debug, Default, PartialEq, Eq)]
struct TunnelPlan {
    devices: Vec<(&'static str, &'static str)>,
    fou: Vec<FouPort>,
    ipv4_inner: Vec<&'static str>,
    ip6tnl_any: bool,
}

/// The plan for `tunnel` to the VIPs over `outer` (each VIP's own family when `None`).
///
/// # Errors
/// GUE with VIPs of both families over one outer family: one FOU port (one UDP socket per
/// family) hands its packets to one inner protocol.
fn tunnel_plan(tunnel: Tunnel, vips: &[IpAddr], outer: Option<Outer>) -> Result<TunnelPlan> {
    let mut plan = TunnelPlan::default();
    for inner6 in [false, true] {
        if !vips.iter().any(|v| v.is_ipv6() == inner6) {
            continue;
        }
        let outer6 = outer.map_or(inner6, Outer::is_ipv6);
        let device = match (tunnel, inner6, outer6) {
            (Tunnel::Ipip | Tunnel::Gue { .. }, false, false) => ("tunl0", "ipip"),
            (Tunnel::Ipip | Tunnel::Gue { .. }, true, false) => ("sit0", "sit"),
            (Tunnel::Ipip | Tunnel::Gue { .. }, _, true) => ("ip6tnl0", "ip6_tunnel"),
            (Tunnel::Gre, _, false) => ("gre0", "ip_gre"),
            (Tunnel::Gre, _, true) => ("ip6gre0", "ip6_gre"),
        };
        if !plan.devices.contains(&device) {
            plan.devices.push(device);
        }
        if !inner6 {
            // One device per inner family: no repeats here.
            plan.ipv4_inner.push(device.0);
            plan.ip6tnl_any |= device.0 == "ip6tnl0";
        }
        if let Tunnel::Gue { port } = tunnel {
            let want = FouPort { port, ipproto: if inner6 { 41 } else { 4 }, ipv6: outer6 };
            if let Some(other) = plan.fou.iter().find(|f| f.port == port && f.ipv6 == outer6) {
                bail!(
                    "--tunnel gue --outer {}: {other} cannot also take ipproto {} (one port, one \
                     inner family); nothing was changed (set up the other family's VIPs with \
                     another --gue-port, the service's tun_port)",
                    if outer6 { 6 } else { 4 },
                    want.ipproto
                );
            }
            plan.fou.push(want);
        }
    }
    Ok(plan)
}

/// What to do it to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub vips: Vec<IpAddr>,
    /// `--tunnel`: also decapsulate this (none for direct routing).
    pub tunnel: Option<Tunnel>,
    /// `--outer`: the tunnel's outer family when it is not the VIP's.
    pub outer: Option<Outer>,
    /// The interface that holds the VIPs ([`DEFAULT_DEV`]).
    pub dev: String,
    /// The state file ([`DEFAULT_STATE`]).
    pub state: PathBuf,
}

/// Runs `action` on this host (its network namespace): rtnetlink for the addresses, `/proc/sys`
/// for the sysctls. Needs a tokio runtime. Returns what was done, a line each.
///
/// # Errors
/// A bad VIP or interface (before anything changed), or a failed change (the state file then
/// holds what `down` needs to undo the rest).
pub async fn run(action: Action, options: &Options) -> Result<Vec<String>> {
    let (connection, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    let connection = tokio::spawn(connection);
    let links = Netlink { handle };
    let sysctls = Sysctls { root: PathBuf::from(PROC_SYS) };
    let result = match action {
        Action::Up => up(&links, &sysctls, options).await,
        Action::Down => down(&links, &sysctls, options).await,
    };
    connection.abort();
    result
}

/// An address on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Present {
    ifindex: u32,
    address: IpAddr,
    prefix: u8,
}

/// An interface: index, name, and whether it is up.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Link {
    index: u32,
    name: String,
    up: bool,
}

/// The host's interfaces, addresses and FOU ports: rtnetlink and `ip fou`, or a fake in tests.
trait Links {
    /// Every interface.
    async fn links(&self) -> Result<Vec<Link>>;
    async fn set_up(&self, index: u32, up: bool) -> Result<()>;
    /// The FOU receive ports of both families: port and inner protocol (`None`: GUE headers).
    async fn fou_ports(&self) -> Result<Vec<(u16, Option<u8>)>>;
    async fn fou_add(&self, fou: &FouPort) -> Result<()>;
    async fn fou_del(&self, fou: &FouPort) -> Result<()>;
    /// `ip6tnl0`'s mode: the inner protocol it takes (4, 41; 0 for both).
    async fn ip6tnl_mode(&self) -> Result<u8>;
    async fn set_ip6tnl_mode(&self, ipproto: u8) -> Result<()>;
    /// Every address of every interface.
    async fn addresses(&self) -> Result<Vec<Present>>;
    async fn add(&self, address: &Present) -> Result<()>;
    async fn remove(&self, address: &Present) -> Result<()>;
}

/// [`Links`] over rtnetlink.
struct Netlink {
    handle: rtnetlink::Handle,
}

impl Links for Netlink {
    async fn links(&self) -> Result<Vec<Link>> {
        let mut out = Vec::new();
        let mut stream = self.handle.link().get().execute();
        while let Some(msg) = stream.try_next().await.context("listing interfaces")? {
            let name = msg.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name.clone()),
                _ => None,
            });
            if let Some(name) = name {
                let up = msg.header.flags.contains(LinkFlags::Up);
                out.push(Link { index: msg.header.index, name, up });
            }
        }
        Ok(out)
    }

    async fn set_up(&self, index: u32, up: bool) -> Result<()> {
        let builder = LinkUnspec::new_with_index(index);
        let message = if up { builder.up() } else { builder.down() }.build();
        let what = if up { "up" } else { "down" };
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .with_context(|| format!("setting interface {index} {what}"))
    }

    // FOU is configured over generic netlink; iproute2's `ip fou` is its documented client.
    async fn fou_ports(&self) -> Result<Vec<(u16, Option<u8>)>> {
        Ok(parse_fou(&run_ip(&["fou", "show"])?))
    }

    async fn fou_add(&self, fou: &FouPort) -> Result<()> {
        let (port, ipproto) = (fou.port.to_string(), fou.ipproto.to_string());
        let family = if fou.ipv6 { "-6" } else { "-4" };
        run_ip(&[family, "fou", "add", "port", &port, "ipproto", &ipproto]).map(drop)
    }

    async fn fou_del(&self, fou: &FouPort) -> Result<()> {
        let family = if fou.ipv6 { "-6" } else { "-4" };
        run_ip(&[family, "fou", "del", "port", &fou.port.to_string()]).map(drop)
    }

    // The fallback device's mode changes only by the tunnel ioctl, `ip -6 tunnel change`'s.
    async fn ip6tnl_mode(&self) -> Result<u8> {
        let shown = run_ip(&["-6", "tunnel", "show", "ip6tnl0"])?;
        parse_ip6tnl_mode(&shown)
            .with_context(|| format!("no mode in `ip -6 tunnel show ip6tnl0`: {}", shown.trim()))
    }

    async fn set_ip6tnl_mode(&self, ipproto: u8) -> Result<()> {
        let mode = match ipproto {
            IP6TNL_ANY => "any",
            4 => "ipip6",
            _ => "ip6ip6",
        };
        run_ip(&["-6", "tunnel", "change", "ip6tnl0", "mode", mode]).map(drop)
    }

    async fn addresses(&self) -> Result<Vec<Present>> {
        let mut out = Vec::new();
        let mut stream = self.handle.address().get().execute();
        while let Some(msg) = stream.try_next().await.context("listing addresses")? {
            // IPv4 point-to-point links have the peer in IFA_ADDRESS: IFA_LOCAL is ours.
            let local = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = local.or_else(|| {
                msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(address) = address {
                out.push(Present {
                    ifindex: msg.header.index,
                    address,
                    prefix: msg.header.prefix_len,
                });
            }
        }
        Ok(out)
    }

    async fn add(&self, a: &Present) -> Result<()> {
        let mut request = self.handle.address().add(a.ifindex, a.address, a.prefix);
        if a.address.is_ipv6() {
            // Usable at once: nothing else may hold the VIP on this link anyway.
            request.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        }
        request.execute().await.with_context(|| format!("adding {}/{}", a.address, a.prefix))
    }

    async fn remove(&self, a: &Present) -> Result<()> {
        let message = match a.address {
            IpAddr::V4(v4) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(a.ifindex)
                .address(v4, a.prefix)
                .build(),
            IpAddr::V6(v6) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(a.ifindex)
                .address(v6, a.prefix)
                .build(),
        };
        let removing = || format!("removing {}/{}", a.address, a.prefix);
        self.handle.address().del(message).execute().await.with_context(removing)
    }
}

/// `ip ARGS`' standard output.
fn run_ip(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {} (iproute2)", args.join(" ")))?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip fou show`: `port 6080 ipproto 4`, `port 5555 gue`, ... (both families; iproute2 does
/// not print which): the port and the inner protocol, `None` for GUE headers.
fn parse_fou(listing: &str) -> Vec<(u16, Option<u8>)> {
    let mut out = Vec::new();
    for line in listing.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1));
        let Some(port) = after("port").and_then(|p| p.parse::<u16>().ok()) else { continue };
        out.push((port, after("ipproto").and_then(|p| p.parse::<u8>().ok())));
    }
    out
}

/// `ip -6 tunnel show ip6tnl0`: `ip6tnl0: ipv6/ipv6 remote :: ...`, the inner protocol before
/// the slash (`ip`, `ipv6`, `any`).
fn parse_ip6tnl_mode(shown: &str) -> Option<u8> {
    let words = shown.split_whitespace().nth(1)?;
    match words.strip_suffix("/ipv6")? {
        "ip" => Some(4),
        "ipv6" => Some(IP6TNL_IP6IP6),
        "any" => Some(IP6TNL_ANY),
        _ => None,
    }
}

/// The sysctls under `root` (`/proc/sys`), by path relative to it (`net/ipv4/conf/all/arp_ignore`).
struct Sysctls {
    root: PathBuf,
}

impl Sysctls {
    fn read(&self, key: &str) -> Result<String> {
        let path = self.root.join(key);
        let value = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(value.trim().to_owned())
    }

    fn read_number(&self, key: &str) -> Result<u32> {
        let value = self.read(key)?;
        value.parse().with_context(|| format!("{} is \"{value}\", not a number", show_key(key)))
    }

    fn write(&self, key: &str, value: &str) -> Result<()> {
        let path = self.root.join(key);
        std::fs::write(&path, value)
            .with_context(|| format!("writing {value} to {}", path.display()))
    }

    /// The interfaces with IPv4 settings, but `all`, `default` and `lo`, in name order.
    fn ipv4_interfaces(&self) -> Result<Vec<String>> {
        let dir = self.root.join("net/ipv4/conf");
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !matches!(name.as_str(), "all" | "default" | "lo") {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

/// `net/ipv4/conf/all/arp_ignore` as sysctl(8) writes it, `net.ipv4.conf.all.arp_ignore` (with
/// slashes when an interface name has a dot, as sysctl(8) then does).
fn show_key(key: &str) -> String {
    if key.split('/').any(|part| part.contains('.')) {
        key.to_owned()
    } else {
        key.replace('/', ".")
    }
}

fn conf_key(interface: &str, setting: &str) -> String {
    format!("net/ipv4/conf/{interface}/{setting}")
}

/// The state file: what `up` did that `down` undoes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// The VIPs of `up`, on their interfaces.
    vips: Vec<StateVip>,
    /// The sysctls `up` changed (path under /proc/sys) and their values before.
    sysctls: BTreeMap<String, String>,
    /// The tunnel devices `up` brought up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    links_up: Vec<String>,
    /// The FOU ports `up` added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    fou: Vec<FouPort>,
    /// `ip6tnl0`'s mode before `up` set it to `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip6tnl_mode: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StateVip {
    address: IpAddr,
    dev: String,
}

impl State {
    /// The state file's content; `None` when there is none.
    fn load(path: &Path) -> Result<Option<State>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
                format!("{} is not a state file of lb realserver (remove it?)", path.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the state file whole (a temporary file renamed over it).
    fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut text = serde_json::to_string_pretty(self).context("encoding the state")?;
        text.push('\n');
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".new");
        let temporary = PathBuf::from(temporary);
        std::fs::write(&temporary, text)
            .with_context(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))
    }
}

/// A VIP as it goes on the interface: a host address.
fn host_address(address: IpAddr) -> u8 {
    if address.is_ipv4() { 32 } else { 128 }
}

/// Why `address` cannot be a VIP, if it cannot: the rule the director's configuration follows.
fn not_a_vip(address: IpAddr) -> Option<&'static str> {
    crate::config::not_a_host_address(address)
}

/// The interface's index; the VIPs, checked and without repeats.
async fn checked(links: &impl Links, options: &Options) -> Result<(u32, Vec<IpAddr>)> {
    let mut vips: Vec<IpAddr> = Vec::new();
    for &vip in &options.vips {
        if let Some(why) = not_a_vip(vip) {
            bail!("--vip {vip}: a virtual IP cannot be {why}; nothing was changed");
        }
        if !vips.contains(&vip) {
            vips.push(vip);
        }
    }
    if vips.is_empty() {
        bail!("no --vip given; nothing was changed");
    }
    if let (Some(outer), None) = (options.outer, options.tunnel) {
        let family = if outer.is_ipv6() { 6 } else { 4 };
        bail!("--outer {family} goes only with --tunnel; nothing was changed");
    }
    let all = links.links().await?;
    let Some(link) = all.iter().find(|l| l.name == options.dev) else {
        bail!(
            "--dev {}: interface `{}` does not exist; nothing was changed",
            options.dev,
            options.dev
        );
    };
    Ok((link.index, vips))
}

/// A sysctl change: the key, its value now and the value it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    key: String,
    from: String,
    to: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "set {} = {} (was {})", show_key(&self.key), self.to, self.from)
    }
}

/// The sysctl changes that keep this host from answering ARP for addresses on other interfaces
/// (see the module's documentation); what is fine already is reported in `report`.
fn arp_changes(sysctls: &Sysctls, report: &mut Vec<String>) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    let ignore_key = conf_key("all", "arp_ignore");
    let current = sysctls.read_number(&ignore_key)?;
    let ignore = if QUIET_ARP_IGNORE.contains(&current) {
        report.push(format!("{} is already {current}", show_key(&ignore_key)));
        current
    } else {
        changes.push(Change {
            key: ignore_key,
            from: current.to_string(),
            to: ARP_IGNORE.to_string(),
        });
        ARP_IGNORE
    };
    // The kernel uses the larger of `all` and the interface's own value.
    for interface in sysctls.ipv4_interfaces()? {
        let key = conf_key(&interface, "arp_ignore");
        let own = sysctls.read_number(&key)?;
        if !QUIET_ARP_IGNORE.contains(&own.max(ignore)) {
            changes.push(Change { key, from: own.to_string(), to: ignore.to_string() });
        }
    }
    let announce_key = conf_key("all", "arp_announce");
    let current = sysctls.read_number(&announce_key)?;
    if current == ARP_ANNOUNCE {
        report.push(format!("{} is already {current}", show_key(&announce_key)));
    } else {
        let to = ARP_ANNOUNCE.to_string();
        changes.push(Change { key: announce_key, from: current.to_string(), to });
    }
    Ok(changes)
}

/// `rp_filter` off on `all` and on each device that receives inner IPv4 packets, where it is on
/// (the kernel filters by the larger of the two).
fn rp_filter_changes(sysctls: &Sysctls, ipv4_inner: &[&str]) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    if ipv4_inner.is_empty() {
        return Ok(changes);
    }
    for scope in std::iter::once("all").chain(ipv4_inner.iter().copied()) {
        let key = conf_key(scope, "rp_filter");
        let from = sysctls.read_number(&key)?;
        if from != 0 {
            changes.push(Change { key, from: from.to_string(), to: "0".to_owned() });
        }
    }
    Ok(changes)
}

/// What a tunnel changes.
#[derive(Debug, Default)]
struct TunnelChanges {
    /// Devices to bring up: index, name.
    devices: Vec<(u32, String)>,
    fou: Vec<FouPort>,
    /// `ip6tnl0`'s mode now, when it must become `any`.
    ip6tnl_from: Option<u8>,
}

/// What a tunnel changes. Fails, before anything changed, when a device is missing or a FOU port
/// is taken by another kind.
async fn tunnel_changes(
    links: &impl Links,
    plan: &TunnelPlan,
    report: &mut Vec<String>,
) -> Result<TunnelChanges> {
    let all = links.links().await?;
    let mut devices = Vec::new();
    for (name, module) in &plan.devices {
        let Some(link) = all.iter().find(|l| l.name == *name) else {
            bail!(
                "no {name} here: the kernel module {module} makes it (modprobe {module}); \
                 nothing was changed"
            );
        };
        if link.up {
            report.push(format!("{name} is already up"));
        } else {
            devices.push((link.index, link.name.clone()));
        }
    }
    let mut fou = Vec::new();
    if !plan.fou.is_empty() {
        let present = links.fou_ports().await?;
        for want in &plan.fou {
            let on_port: Vec<Option<u8>> =
                present.iter().filter(|(port, _)| *port == want.port).map(|(_, p)| *p).collect();
            if on_port.contains(&Some(want.ipproto)) {
                report.push(format!("{want} is already there"));
                continue;
            }
            // IPv4 in IPv4 and IPv6 in IPv6 may share a port (one socket per family); the
            // listing does not say which family a mapping is of, so anything else is in the way.
            if let Some(other) = on_port.iter().find(|p| !matches!(p, Some(4 | 41))) {
                let what = other.map_or("GUE headers".to_owned(), |p| format!("ipproto {p}"));
                bail!(
                    "{want}: the port already receives {what}; nothing was changed (remove it \
                     or choose another tun_port)"
                );
            }
            fou.push(want.clone());
        }
    }
    let mut ip6tnl_from = None;
    if plan.ip6tnl_any {
        match links.ip6tnl_mode().await? {
            IP6TNL_ANY => report.push("ip6tnl0 is already in mode any".to_owned()),
            mode => ip6tnl_from = Some(mode),
        }
    }
    Ok(TunnelChanges { devices, fou, ip6tnl_from })
}

async fn up(links: &impl Links, sysctls: &Sysctls, options: &Options) -> Result<Vec<String>> {
    let (ifindex, vips) = checked(links, options).await?;
    let dev = &options.dev;
    let mut report = Vec::new();
    let plan = match options.tunnel {
        Some(tunnel) => tunnel_plan(tunnel, &vips, options.outer)?,
        None => TunnelPlan::default(),
    };
    let TunnelChanges { devices, fou, ip6tnl_from } =
        tunnel_changes(links, &plan, &mut report).await?;
    let state_path = &options.state;
    let before = State::load(state_path)?;
    let mut state = before.clone().unwrap_or_default();

    let mut changes = if vips.iter().any(IpAddr::is_ipv4) {
        arp_changes(sysctls, &mut report)?
    } else {
        Vec::new()
    };
    changes.extend(rp_filter_changes(sysctls, &plan.ipv4_inner)?);
    let present = links.addresses().await?;
    let all_links = links.links().await?;
    let missing: Vec<Present> = vips
        .iter()
        .filter(|vip| !present.iter().any(|p| p.ifindex == ifindex && p.address == **vip))
        .map(|&address| Present { ifindex, address, prefix: host_address(address) })
        .collect();
    for vip in &vips {
        if let Some(p) = present.iter().find(|p| p.ifindex == ifindex && p.address == *vip) {
            report.push(format!("{}/{} is already on {dev}", p.address, p.prefix));
        }
        for other in present.iter().filter(|p| p.ifindex != ifindex && p.address == *vip) {
            let name = all_links.iter().find(|l| l.index == other.ifindex).map_or("?", |l| &l.name);
            report.push(format!(
                "warning: {vip} is also on {name}: this host answers ARP (or neighbour \
                 solicitations) for it there, which DR cannot have; remove it from {name}"
            ));
        }
    }

    // Saved before anything changes, so that `down` can always restore what was.
    for change in &changes {
        state.sysctls.entry(change.key.clone()).or_insert_with(|| change.from.clone());
    }
    for (_, name) in &devices {
        if !state.links_up.contains(name) {
            state.links_up.push(name.clone());
        }
    }
    for port in &fou {
        if !state.fou.contains(port) {
            state.fou.push(port.clone());
        }
    }
    if state.ip6tnl_mode.is_none() {
        state.ip6tnl_mode = ip6tnl_from;
    }
    for &address in &vips {
        let entry = StateVip { address, dev: dev.clone() };
        if !state.vips.contains(&entry) {
            state.vips.push(entry);
        }
    }
    if before.as_ref() != Some(&state) {
        state.save(state_path)?;
        report.push(format!("saved what `down` undoes in {}", state_path.display()));
    }
    // The ARP settings first: the VIP must never be answered for, not even for a moment.
    for change in &changes {
        sysctls.write(&change.key, &change.to)?;
        report.push(change.to_string());
    }
    for port in &fou {
        links.fou_add(port).await?;
        report.push(format!("added {port}"));
    }
    if ip6tnl_from.is_some() {
        links.set_ip6tnl_mode(IP6TNL_ANY).await?;
        report.push("set ip6tnl0 mode any (IPv4 and IPv6 in IPv6)".to_owned());
    }
    for (index, name) in &devices {
        links.set_up(*index, true).await?;
        report.push(format!("set {name} up"));
    }
    for address in &missing {
        links.add(address).await?;
        report.push(format!("added {}/{} to {dev}", address.address, address.prefix));
    }
    if changes.is_empty()
        && missing.is_empty()
        && devices.is_empty()
        && fou.is_empty()
        && ip6tnl_from.is_none()
    {
        report.push("nothing to change".to_owned());
    }
    Ok(report)
}

/// Undoes the tunnel part of `up`: its devices down, `ip6tnl0`'s mode restored, its FOU ports
/// removed (what is gone already is reported, not an error).
async fn undo_tunnels(links: &impl Links, state: &State, report: &mut Vec<String>) -> Result<()> {
    let all = links.links().await?;
    for name in &state.links_up {
        match all.iter().find(|l| l.name == *name) {
            Some(link) if link.up => {
                links.set_up(link.index, false).await?;
                report.push(format!("set {name} down, restored"));
            }
            Some(_) => report.push(format!("{name} is already down")),
            None => report.push(format!("{name} is gone")),
        }
    }
    if let Some(mode) = state.ip6tnl_mode {
        if all.iter().any(|l| l.name == "ip6tnl0") {
            links.set_ip6tnl_mode(mode).await?;
            let name = if mode == 4 { "ipip6" } else { "ip6ip6" };
            report.push(format!("set ip6tnl0 mode {name}, restored"));
        } else {
            report.push("ip6tnl0 is gone".to_owned());
        }
    }
    if !state.fou.is_empty() {
        let present = links.fou_ports().await?;
        for port in &state.fou {
            if present.contains(&(port.port, Some(port.ipproto))) {
                links.fou_del(port).await?;
                report.push(format!("removed {port}"));
            } else {
                report.push(format!("{port} is gone"));
            }
        }
    }
    Ok(())
}

async fn down(links: &impl Links, sysctls: &Sysctls, options: &Options) -> Result<Vec<String>> {
    let (ifindex, vips) = checked(links, options).await?;
    let dev = &options.dev;
    let state_path = &options.state;
    let before = State::load(state_path)?;
    let mut report = Vec::new();
    let present = links.addresses().await?;
    let mut changed = false;
    for vip in &vips {
        match present.iter().find(|p| p.ifindex == ifindex && p.address == *vip) {
            Some(address) => {
                links.remove(address).await?;
                report.push(format!("removed {}/{} from {dev}", address.address, address.prefix));
                changed = true;
            }
            None => report.push(format!("{vip} is not on {dev}")),
        }
    }
    match before {
        None => report.push(format!(
            "no state file {}: the sysctls are left as they are",
            state_path.display()
        )),
        Some(mut state) => {
            state.vips.retain(|v| !(v.dev == *dev && vips.contains(&v.address)));
            if state.vips.is_empty() {
                undo_tunnels(links, &state, &mut report).await?;
                for (key, value) in &state.sysctls {
                    let now = sysctls.read(key)?;
                    if now == *value {
                        report.push(format!("{} is already {value}", show_key(key)));
                    } else {
                        sysctls.write(key, value)?;
                        let change = Change { key: key.clone(), from: now, to: value.clone() };
                        report.push(format!("{change}, restored"));
                    }
                }
                std::fs::remove_file(state_path)
                    .with_context(|| format!("removing {}", state_path.display()))?;
                report.push(format!("removed {}", state_path.display()));
            } else {
                state.save(state_path)?;
                let left: Vec<String> =
                    state.vips.iter().map(|v| format!("{} on {}", v.address, v.dev)).collect();
                report.push(format!(
                    "the ARP settings stay for the other VIPs of lb realserver up ({}); updated {}",
                    left.join(", "),
                    state_path.display()
                ));
            }
            changed = true;
        }
    }
    if !changed {
        report.push("nothing to change".to_owned());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// An in-memory host: `lo` (1), `eth0` (2) and the tunnel modules' devices `tunl0` (3),
    /// `ip6tnl0` (4), `gre0` (5), `sit0` (6), down; `ip6gre0` is missing (no module).
    #[derive(Default)]
    struct FakeLinks {
        addresses: RefCell<Vec<Present>>,
        /// The indexes of the links that are up (besides `lo` and `eth0`).
        up: RefCell<Vec<u32>>,
        fou: RefCell<Vec<(u16, Option<u8>)>>,
        /// `ip6tnl0`'s mode when changed from the kernel's `ip6ip6`.
        ip6tnl_mode: RefCell<Option<u8>>,
        calls: RefCell<Vec<String>>,
    }

    impl Links for FakeLinks {
        async fn links(&self) -> Result<Vec<Link>> {
            let names =
                [(1, "lo"), (2, "eth0"), (3, "tunl0"), (4, "ip6tnl0"), (5, "gre0"), (6, "sit0")];
            Ok(names
                .into_iter()
                .map(|(index, name)| Link {
                    index,
                    name: name.to_owned(),
                    up: index <= 2 || self.up.borrow().contains(&index),
                })
                .collect())
        }

        async fn set_up(&self, index: u32, up: bool) -> Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("link {index} {}", if up { "up" } else { "down" }));
            self.up.borrow_mut().retain(|i| *i != index);
            if up {
                self.up.borrow_mut().push(index);
            }
            Ok(())
        }

        async fn fou_ports(&self) -> Result<Vec<(u16, Option<u8>)>> {
            Ok(self.fou.borrow().clone())
        }

        async fn fou_add(&self, fou: &FouPort) -> Result<()> {
            self.calls.borrow_mut().push(format!("fou add {fou}"));
            self.fou.borrow_mut().push((fou.port, Some(fou.ipproto)));
            Ok(())
        }

        async fn fou_del(&self, fou: &FouPort) -> Result<()> {
            self.calls.borrow_mut().push(format!("fou del {fou}"));
            self.fou.borrow_mut().retain(|have| *have != (fou.port, Some(fou.ipproto)));
            Ok(())
        }

        async fn ip6tnl_mode(&self) -> Result<u8> {
            Ok(self.ip6tnl_mode.borrow().unwrap_or(IP6TNL_IP6IP6))
        }

        async fn set_ip6tnl_mode(&self, ipproto: u8) -> Result<()> {
            self.calls.borrow_mut().push(format!("ip6tnl0 mode {ipproto}"));
            *self.ip6tnl_mode.borrow_mut() = (ipproto != IP6TNL_IP6IP6).then_some(ipproto);
            Ok(())
        }

        async fn addresses(&self) -> Result<Vec<Present>> {
            Ok(self.addresses.borrow().clone())
        }

        async fn add(&self, a: &Present) -> Result<()> {
            self.calls.borrow_mut().push(format!("add {}/{} {}", a.address, a.prefix, a.ifindex));
            self.addresses.borrow_mut().push(a.clone());
            Ok(())
        }

        async fn remove(&self, a: &Present) -> Result<()> {
            self.calls.borrow_mut().push(format!("del {}/{} {}", a.address, a.prefix, a.ifindex));
            self.addresses.borrow_mut().retain(|p| p != a);
            Ok(())
        }
    }

    /// A `/proc/sys` of `all`, `default`, `lo`, `eth0` and `eth1` in a scratch directory, and a
    /// state file next to it; removed when dropped.
    struct Scratch {
        dir: tempfile::TempDir,
        sysctls: Sysctls,
    }

    impl Scratch {
        fn new(name: &str, eth1_arp_ignore: u32) -> Scratch {
            let dir = crate::testutil::scratch_dir(&format!("lb-realserver-{name}-"));
            let root = dir.path().join("sys");
            for interface in ["all", "default", "lo", "eth0", "eth1"] {
                let conf = root.join("net/ipv4/conf").join(interface);
                std::fs::create_dir_all(&conf).unwrap();
                let ignore = if interface == "eth1" { eth1_arp_ignore } else { 0 };
                std::fs::write(conf.join("arp_ignore"), format!("{ignore}\n")).unwrap();
                std::fs::write(conf.join("arp_announce"), "0\n").unwrap();
            }
            Scratch { dir, sysctls: Sysctls { root } }
        }

        fn options(&self, vips: &[&str]) -> Options {
            Options {
                vips: vips.iter().map(|v| v.parse().unwrap()).collect(),
                tunnel: None,
                outer: None,
                dev: "lo".to_owned(),
                state: self.dir.path().join("run/realserver.json"),
            }
        }

        /// `interface.setting=value` for every sysctl, in order.
        fn values(&self) -> Vec<String> {
            let mut out = Vec::new();
            for interface in ["all", "default", "lo", "eth0", "eth1"] {
                for setting in ["arp_ignore", "arp_announce"] {
                    let value = self.sysctls.read(&conf_key(interface, setting)).unwrap();
                    out.push(format!("{interface}.{setting}={value}"));
                }
            }
            out
        }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    const UNTOUCHED: [&str; 10] = [
        "all.arp_ignore=0",
        "all.arp_announce=0",
        "default.arp_ignore=0",
        "default.arp_announce=0",
        "lo.arp_ignore=0",
        "lo.arp_announce=0",
        "eth0.arp_ignore=0",
        "eth0.arp_announce=0",
        "eth1.arp_ignore=3",
        "eth1.arp_announce=0",
    ];

    #[test]
    fn up_twice_then_down_restores_everything() {
        let scratch = Scratch::new("cycle", 3);
        let links = FakeLinks::default();
        let options = scratch.options(&["192.0.2.100", "2001:db8::100", "192.0.2.100"]);
        let state = options.state.display().to_string();

        let report = block_on(up(&links, &scratch.sysctls, &options)).unwrap();
        assert_eq!(
            report,
            [
                format!("saved what `down` undoes in {state}"),
                "set net.ipv4.conf.all.arp_ignore = 1 (was 0)".to_owned(),
                // 3 answers for addresses on other interfaces, and it is larger than `all`'s.
                "set net.ipv4.conf.eth1.arp_ignore = 1 (was 3)".to_owned(),
                "set net.ipv4.conf.all.arp_announce = 2 (was 0)".to_owned(),
                "added 192.0.2.100/32 to lo".to_owned(),
                "added 2001:db8::100/128 to lo".to_owned(),
            ]
        );
        let mut after_up = UNTOUCHED.map(str::to_owned).to_vec();
        after_up[0] = "all.arp_ignore=1".to_owned();
        after_up[1] = "all.arp_announce=2".to_owned();
        after_up[8] = "eth1.arp_ignore=1".to_owned();
        assert_eq!(scratch.values(), after_up);
        let saved = std::fs::read_to_string(&options.state).unwrap();

        // Again: nothing changes, not even the state file.
        let report = block_on(up(&links, &scratch.sysctls, &options)).unwrap();
        assert_eq!(
            report,
            [
                "net.ipv4.conf.all.arp_ignore is already 1",
                "net.ipv4.conf.all.arp_announce is already 2",
                "192.0.2.100/32 is already on lo",
                "2001:db8::100/128 is already on lo",
                "nothing to change",
            ]
        );
        assert_eq!(scratch.values(), after_up);
        assert_eq!(std::fs::read_to_string(&options.state).unwrap(), saved);
        assert_eq!(links.calls.borrow().len(), 2);

        let report = block_on(down(&links, &scratch.sysctls, &options)).unwrap();
        assert_eq!(
            report,
            [
                "removed 192.0.2.100/32 from lo".to_owned(),
                "removed 2001:db8::100/128 from lo".to_owned(),
                "set net.ipv4.conf.all.arp_announce = 0 (was 2), restored".to_owned(),
                "set net.ipv4.conf.all.arp_ignore = 0 (was 1), restored".to_owned(),
                "set net.ipv4.conf.eth1.arp_ignore = 3 (was 1), restored".to_owned(),
                format!("removed {state}"),
            ]
        );
        assert_eq!(scratch.values(), UNTOUCHED);
        assert!(links.addresses.borrow().is_empty());
        assert!(!options.state.exists());

        // And down again: nothing left to do.
        let report = block_on(down(&links, &scratch.sysctls, &options)).unwrap();
        assert_eq!(
            report,
            [
                "192.0.2.100 is not on lo".to_owned(),
                "2001:db8::100 is not on lo".to_owned(),
                format!("no state file {state}: the sysctls are left as they are"),
                "nothing to change".to_owned(),
            ]
        );
    }

    #[test]
    fn the_arp_settings_stay_while_a_vip_of_up_is_left() {
        let scratch = Scratch::new("partial", 0);
        let links = FakeLinks::default();
        let both = scratch.options(&["192.0.2.100", "192.0.2.101"]);
        block_on(up(&links, &scratch.sysctls, &both)).unwrap();
        let one = scratch.options(&["192.0.2.100"]);
        let report = block_on(down(&links, &scratch.sysctls, &one)).unwrap();
        assert_eq!(report[0], "removed 192.0.2.100/32 from lo");
        assert!(
            report[1].starts_with(
                "the ARP settings stay for the other VIPs of lb realserver up (192.0.2.101 on lo)"
            ),
            "{report:?}"
        );
        assert_eq!(scratch.sysctls.read("net/ipv4/conf/all/arp_ignore").unwrap(), "1");
        let other = scratch.options(&["192.0.2.101"]);
        block_on(down(&links, &scratch.sysctls, &other)).unwrap();
        assert_eq!(scratch.sysctls.read("net/ipv4/conf/all/arp_ignore").unwrap(), "0");
        assert!(!other.state.exists());
    }

    #[test]
    fn what_is_right_already_is_left_alone() {
        let scratch = Scratch::new("quiet", 8);
        scratch.sysctls.write("net/ipv4/conf/all/arp_ignore", "2").unwrap();
        let links = FakeLinks::default();
        // An IPv6 VIP alone needs no ARP settings.
        let report =
            block_on(up(&links, &scratch.sysctls, &scratch.options(&["2001:db8::1"]))).unwrap();
        assert_eq!(report[1], "added 2001:db8::1/128 to lo");
        let report =
            block_on(up(&links, &scratch.sysctls, &scratch.options(&["192.0.2.1"]))).unwrap();
        assert_eq!(report[0], "net.ipv4.conf.all.arp_ignore is already 2");
        assert_eq!(report[2], "set net.ipv4.conf.all.arp_announce = 2 (was 0)");
        assert_eq!(scratch.sysctls.read("net/ipv4/conf/eth1/arp_ignore").unwrap(), "8");
    }

    #[test]
    fn bad_input_changes_nothing() {
        let scratch = Scratch::new("bad", 0);
        let links = FakeLinks::default();
        let cases: &[(Options, &str)] = &[
            (
                scratch.options(&["192.0.2.100", "127.0.0.1"]),
                "--vip 127.0.0.1: a virtual IP cannot be a loopback address; nothing was changed",
            ),
            (
                scratch.options(&["0.0.0.0"]),
                "--vip 0.0.0.0: a virtual IP cannot be the unspecified address; nothing was changed",
            ),
            (
                scratch.options(&["ff02::1"]),
                "--vip ff02::1: a virtual IP cannot be a multicast address; nothing was changed",
            ),
            (
                Options { dev: "eth9".to_owned(), ..scratch.options(&["192.0.2.100"]) },
                "--dev eth9: interface `eth9` does not exist; nothing was changed",
            ),
        ];
        for (options, message) in cases {
            for result in [
                block_on(up(&links, &scratch.sysctls, options)),
                block_on(down(&links, &scratch.sysctls, options)),
            ] {
                assert_eq!(result.unwrap_err().to_string(), *message);
            }
            assert!(!options.state.exists());
        }
        assert_eq!(scratch.values()[0], "all.arp_ignore=0");
        assert!(links.calls.borrow().is_empty());

        let options = scratch.options(&["192.0.2.100"]);
        std::fs::create_dir_all(options.state.parent().unwrap()).unwrap();
        std::fs::write(&options.state, "not json").unwrap();
        let error = block_on(up(&links, &scratch.sysctls, &options)).unwrap_err();
        assert!(format!("{error:#}").contains("is not a state file of lb realserver"), "{error:#}");
        assert!(links.calls.borrow().is_empty());
    }

    #[test]
    fn tunnel_plans_per_family() {
        let v4: IpAddr = "192.0.2.100".parse().unwrap();
        let v6: IpAddr = "2001:db8::100".parse().unwrap();
        let fou = |port, ipproto, ipv6| FouPort { port, ipproto, ipv6 };
        let plan =
            |devices: &[(&'static str, &'static str)], fou: Vec<FouPort>, ipv4_inner: &[_]| {
                let ip6tnl_any = ipv4_inner.contains(&"ip6tnl0");
                TunnelPlan {
                    devices: devices.to_vec(),
                    fou,
                    ipv4_inner: ipv4_inner.to_vec(),
                    ip6tnl_any,
                }
            };
        let (tunl0, ip6tnl0, sit0) =
            (("tunl0", "ipip"), ("ip6tnl0", "ip6_tunnel"), ("sit0", "sit"));
        let (v4o, v6o) = (Some(Outer::V4), Some(Outer::V6));
        let gue = Tunnel::Gue { port: 6080 };
        let cases: &[(Tunnel, &[IpAddr], Option<Outer>, TunnelPlan)] = &[
            (Tunnel::Ipip, &[v4, v6], None, plan(&[tunl0, ip6tnl0], vec![], &["tunl0"])),
            (Tunnel::Gre, &[v4], None, plan(&[("gre0", "ip_gre")], vec![], &["gre0"])),
            (Tunnel::Gre, &[v6], None, plan(&[("ip6gre0", "ip6_gre")], vec![], &[])),
            (
                gue,
                &[v6, v4, v4],
                None,
                plan(&[tunl0, ip6tnl0], vec![fou(6080, 4, false), fou(6080, 41, true)], &["tunl0"]),
            ),
            // The outer family the VIP's own: as without --outer.
            (Tunnel::Ipip, &[v4], v4o, plan(&[tunl0], vec![], &["tunl0"])),
            // Mixed: IPv6 in IPv4 on sit0, IPv4 in IPv6 on ip6tnl0 in mode any.
            (Tunnel::Ipip, &[v6], v4o, plan(&[sit0], vec![], &[])),
            (Tunnel::Ipip, &[v4], v6o, plan(&[ip6tnl0], vec![], &["ip6tnl0"])),
            (Tunnel::Ipip, &[v4, v6], v6o, plan(&[ip6tnl0], vec![], &["ip6tnl0"])),
            (Tunnel::Ipip, &[v4, v6], v4o, plan(&[tunl0, sit0], vec![], &["tunl0"])),
            (gue, &[v6], v4o, plan(&[sit0], vec![fou(6080, 41, false)], &[])),
            (gue, &[v4], v6o, plan(&[ip6tnl0], vec![fou(6080, 4, true)], &["ip6tnl0"])),
            // GRE devices take either inner family.
            (Tunnel::Gre, &[v4], v6o, plan(&[("ip6gre0", "ip6_gre")], vec![], &["ip6gre0"])),
            (Tunnel::Gre, &[v6, v4], v4o, plan(&[("gre0", "ip_gre")], vec![], &["gre0"])),
        ];
        for (tunnel, vips, outer, want) in cases {
            let got = tunnel_plan(*tunnel, vips, *outer).unwrap();
            assert_eq!(got, *want, "{tunnel:?} {vips:?} {outer:?}");
        }
        // One GUE port of one family cannot hand packets to both inner families.
        let error = tunnel_plan(gue, &[v4, v6], v6o).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--tunnel gue --outer 6: FOU port 6080 ipproto 4 (IPv6) cannot also take ipproto 41 \
             (one port, one inner family); nothing was changed (set up the other family's VIPs \
             with another --gue-port, the service's tun_port)"
        );
    }

    #[test]
    fn mixed_families_up_and_down() {
        let scratch = Scratch::new("mixed", 0);
        add_tunnel_sysctls(&scratch);
        let links = FakeLinks::default();
        // An IPv4 VIP over IPv6 (ip6tnl0 in mode any), an IPv6 VIP over IPv4 (sit0), GUE.
        let v4_in_v6 = Options {
            tunnel: Some(Tunnel::Gue { port: 6080 }),
            outer: Some(Outer::V6),
            ..scratch.options(&["192.0.2.100"])
        };
        let v6_in_v4 = Options {
            tunnel: Some(Tunnel::Gue { port: 6081 }),
            outer: Some(Outer::V4),
            ..scratch.options(&["2001:db8::100"])
        };
        let state = v4_in_v6.state.display().to_string();
        let report = block_on(up(&links, &scratch.sysctls, &v4_in_v6)).unwrap();
        assert_eq!(
            report,
            [
                format!("saved what `down` undoes in {state}"),
                "set net.ipv4.conf.all.arp_ignore = 1 (was 0)".to_owned(),
                "set net.ipv4.conf.all.arp_announce = 2 (was 0)".to_owned(),
                "set net.ipv4.conf.all.rp_filter = 0 (was 1)".to_owned(),
                // The inner IPv4 packet arrives on ip6tnl0: its rp_filter, not tunl0's.
                "set net.ipv4.conf.ip6tnl0.rp_filter = 0 (was 1)".to_owned(),
                "added FOU port 6080 ipproto 4 (IPv6)".to_owned(),
                "set ip6tnl0 mode any (IPv4 and IPv6 in IPv6)".to_owned(),
                "set ip6tnl0 up".to_owned(),
                "added 192.0.2.100/32 to lo".to_owned(),
            ]
        );
        assert_eq!(scratch.sysctls.read("net/ipv4/conf/tunl0/rp_filter").unwrap(), "1");
        let report = block_on(up(&links, &scratch.sysctls, &v6_in_v4)).unwrap();
        assert_eq!(
            report,
            [
                format!("saved what `down` undoes in {state}"),
                "added FOU port 6081 ipproto 41".to_owned(),
                "set sit0 up".to_owned(),
                "added 2001:db8::100/128 to lo".to_owned(),
            ]
        );
        // Again: nothing changes.
        for options in [&v4_in_v6, &v6_in_v4] {
            let report = block_on(up(&links, &scratch.sysctls, options)).unwrap();
            assert_eq!(report.last().unwrap(), "nothing to change", "{report:?}");
        }
        let report = block_on(up(&links, &scratch.sysctls, &v4_in_v6)).unwrap();
        assert!(report.contains(&"ip6tnl0 is already in mode any".to_owned()), "{report:?}");
        assert_eq!(*links.ip6tnl_mode.borrow(), Some(IP6TNL_ANY));

        block_on(down(&links, &scratch.sysctls, &v4_in_v6)).unwrap();
        // The IPv6 VIP is still there: so is its tunnel (and ip6tnl0's mode, restored with the last).
        assert_eq!(*links.ip6tnl_mode.borrow(), Some(IP6TNL_ANY));
        let report = block_on(down(&links, &scratch.sysctls, &v6_in_v4)).unwrap();
        assert_eq!(
            report,
            [
                "removed 2001:db8::100/128 from lo".to_owned(),
                "set ip6tnl0 down, restored".to_owned(),
                "set sit0 down, restored".to_owned(),
                "set ip6tnl0 mode ip6ip6, restored".to_owned(),
                "removed FOU port 6080 ipproto 4 (IPv6)".to_owned(),
                "removed FOU port 6081 ipproto 41".to_owned(),
                "set net.ipv4.conf.all.arp_announce = 0 (was 2), restored".to_owned(),
                "set net.ipv4.conf.all.arp_ignore = 0 (was 1), restored".to_owned(),
                "set net.ipv4.conf.all.rp_filter = 1 (was 0), restored".to_owned(),
                "set net.ipv4.conf.ip6tnl0.rp_filter = 1 (was 0), restored".to_owned(),
                format!("removed {state}"),
            ]
        );
        assert!(links.up.borrow().is_empty());
        assert!(links.fou.borrow().is_empty());
        assert_eq!(*links.ip6tnl_mode.borrow(), None);
    }

    #[test]
    fn outer_goes_only_with_a_tunnel() {
        let scratch = Scratch::new("outer", 0);
        let links = FakeLinks::default();
        let options = Options { outer: Some(Outer::V6), ..scratch.options(&["192.0.2.100"]) };
        for result in [
            block_on(up(&links, &scratch.sysctls, &options)),
            block_on(down(&links, &scratch.sysctls, &options)),
        ] {
            assert_eq!(
                result.unwrap_err().to_string(),
                "--outer 6 goes only with --tunnel; nothing was changed"
            );
        }
        assert!(links.calls.borrow().is_empty());
    }

    #[test]
    fn ip6tnl_modes_parse() {
        let cases = [
            ("ip6tnl0: ipv6/ipv6 remote :: local :: encaplimit 0 hoplimit 0", Some(41)),
            ("ip6tnl0: ip/ipv6 remote :: local ::", Some(4)),
            ("ip6tnl0: any/ipv6 remote :: local ::", Some(0)),
            ("ip6tnl0: gre/ipv6", None),
            ("", None),
        ];
        for (shown, want) in cases {
            assert_eq!(parse_ip6tnl_mode(shown), want, "{shown}");
        }
    }

    #[test]
    fn tunnel_options_go_together() {
        type Case = (Option<TunnelKind>, Option<u16>, Result<Option<Tunnel>, &'static str>);
        let cases: &[Case] = &[
            (None, None, Ok(None)),
            (Some(TunnelKind::Ipip), None, Ok(Some(Tunnel::Ipip))),
            (Some(TunnelKind::Gre), None, Ok(Some(Tunnel::Gre))),
            (Some(TunnelKind::Gue), Some(6080), Ok(Some(Tunnel::Gue { port: 6080 }))),
            (
                Some(TunnelKind::Gue),
                None,
                Err("--tunnel gue needs --gue-port N (the virtual server's tun_port)"),
            ),
            (Some(TunnelKind::Gue), Some(0), Err("--gue-port 0: the port must be 1 to 65535")),
            (
                Some(TunnelKind::Ipip),
                Some(6080),
                Err("--gue-port 6080 goes only with --tunnel gue"),
            ),
            (None, Some(6080), Err("--gue-port 6080 goes only with --tunnel gue")),
        ];
        for (kind, port, want) in cases {
            let got = Tunnel::from_options(*kind, *port).map_err(|e| e.to_string());
            assert_eq!(got, (*want).map_err(str::to_owned), "{kind:?} {port:?}");
        }
    }

    /// `tunl0`, `gre0`, `ip6tnl0` and `sit0` in the scratch `/proc/sys`, `rp_filter` strict there
    /// and on `all`.
    fn add_tunnel_sysctls(scratch: &Scratch) {
        for interface in ["tunl0", "gre0", "ip6tnl0", "sit0"] {
            let conf = scratch.sysctls.root.join("net/ipv4/conf").join(interface);
            std::fs::create_dir_all(&conf).unwrap();
            std::fs::write(conf.join("arp_ignore"), "0\n").unwrap();
            std::fs::write(conf.join("arp_announce"), "0\n").unwrap();
        }
        for interface in ["all", "default", "tunl0", "gre0", "ip6tnl0", "sit0"] {
            scratch.sysctls.write(&conf_key(interface, "rp_filter"), "1").unwrap();
        }
    }

    #[test]
    fn up_and_down_with_a_gue_tunnel() {
        let scratch = Scratch::new("gue", 0);
        add_tunnel_sysctls(&scratch);
        let links = FakeLinks::default();
        let options = Options {
            tunnel: Some(Tunnel::Gue { port: 6080 }),
            ..scratch.options(&["192.0.2.100", "2001:db8::100"])
        };
        let state = options.state.display().to_string();
        let report = block_on(up(&links, &scratch.sysctls, &options)).unwrap();
        assert_eq!(
            report,
            [
                format!("saved what `down` undoes in {state}"),
                "set net.ipv4.conf.all.arp_ignore = 1 (was 0)".to_owned(),
                "set net.ipv4.conf.all.arp_announce = 2 (was 0)".to_owned(),
                "set net.ipv4.conf.all.rp_filter = 0 (was 1)".to_owned(),
                "set net.ipv4.conf.tunl0.rp_filter = 0 (was 1)".to_owned(),
                "added FOU port 6080 ipproto 4".to_owned(),
                "added FOU port 6080 ipproto 41 (IPv6)".to_owned(),
                "set tunl0 up".to_owned(),
                "set ip6tnl0 up".to_owned(),
                "added 192.0.2.100/32 to lo".to_owned(),
                "added 2001:db8::100/128 to lo".to_owned(),
            ]
        );
        // gre0 is not the GUE real's business.
        assert_eq!(scratch.sysctls.read("net/ipv4/conf/gre0/rp_filter").unwrap(), "1");

        let report = block_on(up(&links, &scratch.sysctls, &options)).unwrap();
        assert_eq!(report.last().unwrap(), "nothing to change", "{report:?}");
        assert!(report.contains(&"tunl0 is already up".to_owned()), "{report:?}");
        assert!(
            report.contains(&"FOU port 6080 ipproto 4 is already there".to_owned()),
            "{report:?}"
        );

        let report = block_on(down(&links, &scratch.sysctls, &options)).unwrap();
        assert_eq!(
            report,
            [
                "removed 192.0.2.100/32 from lo".to_owned(),
                "removed 2001:db8::100/128 from lo".to_owned(),
                "set tunl0 down, restored".to_owned(),
                "set ip6tnl0 down, restored".to_owned(),
                "removed FOU port 6080 ipproto 4".to_owned(),
                "removed FOU port 6080 ipproto 41 (IPv6)".to_owned(),
                "set net.ipv4.conf.all.arp_announce = 0 (was 2), restored".to_owned(),
                "set net.ipv4.conf.all.arp_ignore = 0 (was 1), restored".to_owned(),
                "set net.ipv4.conf.all.rp_filter = 1 (was 0), restored".to_owned(),
                "set net.ipv4.conf.tunl0.rp_filter = 1 (was 0), restored".to_owned(),
                format!("removed {state}"),
            ]
        );
        assert!(links.up.borrow().is_empty());
        assert!(links.fou.borrow().is_empty());
    }

    #[test]
    fn what_a_tunnel_finds_up_already_stays_up() {
        let scratch = Scratch::new("gre", 0);
        add_tunnel_sysctls(&scratch);
        scratch.sysctls.write("net/ipv4/conf/all/rp_filter", "0").unwrap();
        let links = FakeLinks::default();
        links.up.borrow_mut().push(5);
        let options = Options { tunnel: Some(Tunnel::Gre), ..scratch.options(&["192.0.2.100"]) };
        let report = block_on(up(&links, &scratch.sysctls, &options)).unwrap();
        assert!(report.contains(&"gre0 is already up".to_owned()), "{report:?}");
        assert!(
            report.contains(&"set net.ipv4.conf.gre0.rp_filter = 0 (was 1)".to_owned()),
            "{report:?}"
        );
        let report = block_on(down(&links, &scratch.sysctls, &options)).unwrap();
        assert!(!report.iter().any(|l| l.contains("gre0 down")), "{report:?}");
        assert_eq!(*links.up.borrow(), [5]);
        assert_eq!(scratch.sysctls.read("net/ipv4/conf/gre0/rp_filter").unwrap(), "1");
    }

    #[test]
    fn a_missing_tunnel_device_or_a_taken_fou_port_changes_nothing() {
        let scratch = Scratch::new("tunbad", 0);
        add_tunnel_sysctls(&scratch);
        let links = FakeLinks::default();
        links.fou.borrow_mut().push((6080, None));
        let cases: &[(Options, &str)] = &[
            (
                Options { tunnel: Some(Tunnel::Gre), ..scratch.options(&["2001:db8::1"]) },
                "no ip6gre0 here: the kernel module ip6_gre makes it (modprobe ip6_gre); \
                 nothing was changed",
            ),
            (
                Options {
                    tunnel: Some(Tunnel::Gue { port: 6080 }),
                    ..scratch.options(&["192.0.2.1"])
                },
                "FOU port 6080 ipproto 4: the port already receives GUE headers; nothing was \
                 changed (remove it or choose another tun_port)",
            ),
        ];
        for (options, message) in cases {
            let error = block_on(up(&links, &scratch.sysctls, options)).unwrap_err();
            assert_eq!(error.to_string(), *message);
            assert!(!options.state.exists());
        }
        assert!(links.calls.borrow().is_empty());
        assert_eq!(scratch.sysctls.read("net/ipv4/conf/all/rp_filter").unwrap(), "1");
    }

    #[test]
    fn fou_listings_parse() {
        let listing = "port 6080 ipproto 4\nport 6080 ipproto 41\nport 5555 gue\nnonsense\n";
        assert_eq!(parse_fou(listing), [(6080, Some(4)), (6080, Some(41)), (5555, None)]);
    }

    #[test]
    fn keys_read_like_sysctl() {
        assert_eq!(show_key("net/ipv4/conf/all/arp_ignore"), "net.ipv4.conf.all.arp_ignore");
        assert_eq!(show_key("net/ipv4/conf/eth0.5/arp_ignore"), "net/ipv4/conf/eth0.5/arp_ignore");
    }
}
