//! The ECMP lab: a router namespace running BIRD 2 with ECMP (`merge paths`, kernel multipath,
//! `fib_multipath_hash_policy = 1`), three director namespaces and three DR reals whose replies go
//! straight back through the router. Shared by `tests/tests/bgp_ecmp.rs` and
//! `cargo xtask demo --ecmp`.
//!
//! All on one bridge: client 203.0.113.2 (default via the router) — router 203.0.113.1 and
//! 198.51.100.1 — directors 198.51.100.2-4 — reals 198.51.100.11-13 (VIP on `lo`, default via the
//! router). The router's BGP timers are short (hold 3 s, reconnect 1 s); BFD 300 ms × 3.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context as _, Result};

use crate::{DR_HTTP_PORT, DR_TCP_ECHO_PORT, Host, Netns, Topology, spawn_testpeer};

pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
pub const ROUTER: &str = "198.51.100.1";
pub const DIRECTORS: [&str; 3] = ["198.51.100.2", "198.51.100.3", "198.51.100.4"];
pub const REALS: [&str; 3] = ["198.51.100.11", "198.51.100.12", "198.51.100.13"];

/// The router's next hops toward the VIP.
pub fn next_hops(router: &Netns) -> BTreeSet<String> {
    let out = router.ip(&["route", "show", &format!("{VIP}/32")]).unwrap_or_default();
    let words: Vec<&str> = out.split_whitespace().collect();
    words.windows(2).filter(|w| w[0] == "via").map(|w| w[1].to_owned()).collect()
}

/// A director's lb.toml: `[bgp]` toward the router (hold 3 s, `withdraw_grace` 1 s, then
/// `extra_bgp` lines) and the VIP's HTTP and echo services over the three reals, fast checks.
pub fn director_config(extra_bgp: &str) -> String {
    let mut text = format!(
        "[bgp]\nlocal_as = 65010\nhold_time = 3\nwithdraw_grace = 1\n{extra_bgp}\
         [[bgp.neighbor]]\naddress = \"{ROUTER}\"\nremote_as = 65000\n"
    );
    for port in [DR_HTTP_PORT, DR_TCP_ECHO_PORT] {
        text.push_str(&format!(
            "[[virtual_server]]\nvip = \"{VIP}\"\nport = {port}\ninterface = \"eth0\"\n\
             delay_loop = 0.5\n"
        ));
        for real in REALS {
            text.push_str(&format!(
                "[[virtual_server.real_server]]\naddress = \"{real}\"\n\
                 [virtual_server.real_server.tcp_check]\nconnect_timeout = 0.5\nretry = 0\n"
            ));
        }
    }
    text
}

/// The router's BIRD configuration: one eBGP session with BFD per director, ECMP into the kernel.
pub fn router_config(neighbors: &[&str]) -> String {
    let mut text = format!(
        "log stderr all;\nrouter id {ROUTER};\nprotocol device {{}}\n\
         protocol kernel {{ ipv4 {{ export all; }}; merge paths on limit 8; }}\n\
         protocol bfd {{ interface \"*\" {{ interval 300 ms; multiplier 3; }}; }}\n"
    );
    for (i, n) in neighbors.iter().enumerate() {
        text.push_str(&format!(
            "protocol bgp d{i} {{ local as 65000; neighbor {n} as 65010; hold time 3; bfd on;\n\
             connect delay time 1; connect retry time 1; error wait time 1, 2;\n\
             ipv4 {{ import all; export none; }}; }}\n"
        ));
    }
    text
}

/// The lab; dropping it stops every process it started and removes the namespaces.
pub struct EcmpLab {
    // Declared first: dropped (namespaces removed) after the agents the caller drops earlier.
    pub topo: Topology,
    pub router: Host,
    pub client: Host,
    pub directors: Vec<Host>,
    /// Scratch folder (configs, the router's BIRD socket).
    pub dir: tempfile::TempDir,
}

impl EcmpLab {
    /// Builds the namespaces, starts the reals' servers (`testpeer_bin`) and the router's BIRD.
    pub fn build(label: &str, testpeer_bin: &Path) -> Result<EcmpLab> {
        let mut topo = Topology::new(label)?;
        let router = topo.add_host("router", &[&format!("{ROUTER}/24"), "203.0.113.1/24"])?;
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.fib_multipath_hash_policy", "1"),
            ("net.ipv4.conf.all.send_redirects", "0"),
            ("net.ipv4.conf.eth0.send_redirects", "0"),
        ] {
            router.ns.sysctl(k, v)?;
        }
        let client = topo.add_host("client", &["203.0.113.2/24"])?;
        client.ns.ip(&["route", "add", "default", "via", "203.0.113.1"])?;
        let mut directors = Vec::new();
        for (i, a) in DIRECTORS.iter().enumerate() {
            directors.push(topo.add_host(&format!("dir{}", i + 1), &[&format!("{a}/24")])?);
        }
        for (i, addr) in REALS.iter().enumerate() {
            let real = topo.add_host(&format!("rs{}", i + 1), &[&format!("{addr}/24")])?;
            real.ns.ip(&["route", "add", "default", "via", ROUTER])?;
            real.add_vip_on_lo(VIP.into())?;
            real.realserver_arp_sysctls()?;
            let mut args = vec!["--name".to_owned(), real.name.clone()];
            for a in [VIP.to_string(), (*addr).to_owned()] {
                args.extend(["--http".to_owned(), format!("{a}:{DR_HTTP_PORT}")]);
                args.extend(["--tcp-echo".to_owned(), format!("{a}:{DR_TCP_ECHO_PORT}")]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let peer = spawn_testpeer(&real.ns, testpeer_bin, &args)?;
            topo.adopt(peer);
        }
        let dir = crate::scratch_dir(&format!("{}-bgp-", topo.prefix()))?;
        let conf = dir.path().join("router.conf");
        std::fs::write(&conf, router_config(&DIRECTORS)).context("writing router.conf")?;
        let ctl = dir.path().join("router.ctl");
        let (conf_s, ctl_s) = (conf.to_string_lossy(), ctl.to_string_lossy());
        let bird = router.ns.spawn(&["bird", "-f", "-c", &conf_s, "-s", &ctl_s])?;
        topo.adopt(bird);
        Ok(EcmpLab { topo, router, client, directors, dir })
    }
}
