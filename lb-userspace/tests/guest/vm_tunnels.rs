//! Tunnelled reals decapsulating with the kernel's own devices (in the `cargo xtask vm test`
//! guest: this host's kernel has no tunnel modules). The director is `lb run --dataplane xdp`
//! (generic mode on the lab's bridge) with one TUN service per family; the reals are set up by
//! `lb realserver up --tunnel` alone: `r1` IPIP (`tunl0`, `ip6tnl0`), `r2` GUE (a FOU port, then
//! `tunl0`, `ip6tnl0`), `r3` GRE (`gre0`, `ip6gre0`). TCP through each VIP reaches every real,
//! which sees the VIP and the client; their decapsulating devices count the packets; `down`
//! leaves each real as it was before `up`. The mixed-family services reach the reals at their
//! address of the other family (`lb realserver up --outer`): an IPv4 VIP over IPv6 (`ip6tnl0` in
//! mode `any`, `ip6gre0`) and an IPv6 VIP over IPv4 (`sit0`, `gre0`). The reals of every
//! service are checked through the VIP (`through_vip`, `alpha`: up only once a check reached the
//! VIP through the real's tunnel and the kernel's decapsulation; for the mixed-family services
//! the check translated into the VIP's family); a real taken `down` while it still serves its
//! own address is marked down, and up again after `up`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::Command,
    time::Duration,
};

use lb_test_support::lb_bin;

use super::vm_agent::{GuestAgent, wait_until};
use super::vm_net::{
    BRIDGE, Lab, Real, RealMode, VIP, VIP6, in_netns, ip, read_sysctl, write_sysctl,
};

const PORT: u16 = 80;
/// Connections per family: enough for each of three reals to get a good share.
const REQUESTS: usize = 60;

/// Per real: `--tunnel` arguments and its `tun_*` keys.
const REALS: [(&[&str], &str); 3] = [
    (&["--tunnel", "ipip"], "tun_type = \"ipip\""),
    (&["--tunnel", "gue", "--gue-port", "6080"], "tun_type = \"gue\"\ntun_port = 6080"),
    (&["--tunnel", "gre"], "tun_type = \"gre\""),
];

/// The device that decapsulates for a real of `tunnel` (its `--tunnel` arguments): GRE's by the
/// outer family, the others' by both.
fn decap_device(tunnel: &[&str], inner_v6: bool, outer_v6: bool) -> &'static str {
    match (tunnel.contains(&"gre"), inner_v6, outer_v6) {
        (true, _, false) => "gre0",
        (true, _, true) => "ip6gre0",
        (false, false, false) => "tunl0",
        (false, true, false) => "sit0",
        (false, _, true) => "ip6tnl0",
    }
}

/// Any address of the family the tunnel's outer header has.
fn outer_like(outer_v6: bool) -> IpAddr {
    if outer_v6 { Ipv6Addr::LOCALHOST.into() } else { Ipv4Addr::LOCALHOST.into() }
}

fn config(lab: &Lab, vip: IpAddr, outer_v6: bool) -> String {
    let mut toml = String::new();
    {
        toml.push_str(&format!(
            "[[virtual_server]]\nvip = \"{vip}\"\nport = {PORT}\nprotocol = \"tcp\"\n\
             interface = \"{BRIDGE}\"\nlb_kind = \"TUN\"\ndelay_loop = 1\nalpha = true\n"
        ));
        for (real, (_, keys)) in lab.reals.iter().zip(REALS) {
            toml.push_str(&format!(
                "\n[[virtual_server.real_server]]\naddress = \"{}\"\nport = {PORT}\n\
                 lb_kind = \"TUN\"\n{keys}\n\
                 [virtual_server.real_server.tcp_check]\nconnect_timeout = 1\nretry = 0\n\
                 through_vip = true\n",
                real.addr_like(outer_like(outer_v6))
            ));
        }
        toml.push('\n');
    }
    toml
}

/// `lb realserver ACTION --vip VIP TUNNEL... [--outer 4|6]` in `real`'s namespace (`--outer`
/// when the outer family is not the VIP's): its output.
fn realserver(real: &Real, vip: IpAddr, outer_v6: bool, action: &str, tunnel: &[&str]) -> String {
    let state = format!("/run/lb-realserver-{}.json", real.ns);
    let out = in_netns(&real.ns, || {
        Command::new(lb_bin())
            .args(["realserver", action, "--vip", &vip.to_string()])
            .args(tunnel)
            .args(if outer_v6 == vip.is_ipv6() {
                &[][..]
            } else if outer_v6 {
                &["--outer", "6"][..]
            } else {
                &["--outer", "4"][..]
            })
            .args(["--state", &state])
            .output()
            .expect("running lb realserver")
    });
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}: lb realserver {action} {tunnel:?}:\n{text}", real.name);
    text
}

/// What `lb realserver` may change on a real: sysctls, the tunnel devices' state and
/// `ip6tnl0`'s mode, FOU ports and the addresses on `lo`.
fn snapshot(real: &Real) -> Vec<String> {
    let mut out: Vec<String> = in_netns(&real.ns, || {
        [
            "all/rp_filter",
            "tunl0/rp_filter",
            "gre0/rp_filter",
            "ip6tnl0/rp_filter",
            "ip6gre0/rp_filter",
            "all/arp_ignore",
            "all/arp_announce",
        ]
        .iter()
        .map(|key| format!("{key}={}", read_sysctl(&format!("net/ipv4/conf/{key}"))))
        .collect()
    });
    for dev in ["tunl0", "ip6tnl0", "gre0", "ip6gre0", "sit0"] {
        let link = ip(Some(&real.ns), &["-o", "link", "show", "dev", dev]);
        out.push(format!("{dev} up={}", link.contains(",UP")));
    }
    out.push(ip(Some(&real.ns), &["-6", "tunnel", "show", "ip6tnl0"]).trim().to_owned());
    for family in ["-4", "-6"] {
        out.push(format!("fou{family}: {}", ip(Some(&real.ns), &[family, "fou", "show"]).trim()));
    }
    out.push(format!("lo: {}", ip(Some(&real.ns), &["-o", "addr", "show", "dev", "lo"]).trim()));
    out
}

#[test]
#[ignore = "needs the guest kernel's tunnel modules: run by `cargo xtask vm test`"]
fn vm_xdp_tunnels_ipv4_to_reals_set_up_by_lb_realserver() {
    tunnels(VIP.into(), false);
}

#[test]
#[ignore = "needs the guest kernel's tunnel modules: run by `cargo xtask vm test`"]
fn vm_xdp_tunnels_ipv6_to_reals_set_up_by_lb_realserver() {
    tunnels(VIP6.into(), true);
}

#[test]
#[ignore = "needs the guest kernel's tunnel modules: run by `cargo xtask vm test`"]
fn vm_xdp_tunnels_ipv4_vip_over_ipv6_to_reals_set_up_by_lb_realserver() {
    tunnels(VIP.into(), true);
}

#[test]
#[ignore = "needs the guest kernel's tunnel modules: run by `cargo xtask vm test`"]
fn vm_xdp_tunnels_ipv6_vip_over_ipv4_to_reals_set_up_by_lb_realserver() {
    tunnels(VIP6.into(), false);
}

/// Whether the director reaches `addr`:[`PORT`] (what its health check does); prints what it
/// finds otherwise.
fn director_reaches(lab: &Lab, addr: IpAddr) -> bool {
    let target = SocketAddr::new(addr, PORT);
    match std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3)) {
        Ok(_) => true,
        Err(e) => {
            let family = if addr.is_ipv4() { "-4" } else { "-6" };
            println!(
                "director to {target}: {e}\nneigh:\n{}addr:\n{}r1 addr:\n{}",
                ip(None, &[family, "neigh"]),
                ip(None, &[family, "addr", "show", "dev", BRIDGE]),
                ip(Some(&lab.reals[0].ns), &[family, "addr"]),
            );
            false
        }
    }
}

/// TCP to `vip` through the reals' tunnels, whose outer header is IPv6 when `outer_v6`.
fn tunnels(vip: IpAddr, outer_v6: bool) {
    let mut lab = Lab::new(REALS.len(), RealMode::Plain);
    // The FIB helper answers only with forwarding on the ingress interface (docs/tunnels.md);
    // the setting goes with the lab's bridge.
    for v6 in [vip.is_ipv6(), outer_v6] {
        let family = if v6 { "ipv6" } else { "ipv4" };
        write_sysctl(&format!("net/{family}/conf/{BRIDGE}/forwarding"), "1");
    }
    if vip.is_ipv6() {
        // Linux prefers, of the bridge's addresses, the one sharing the longest prefix with the
        // destination, counted up to the address's own prefix length: the VIP/128 wins over
        // fd77::1/64 for a real's address, and the real delivers its answer to its own VIP.
        // Deprecated, the VIP is never chosen as a source (and still accepts packets).
        ip(None, &["addr", "change", &format!("{VIP6}/128"), "dev", BRIDGE, "preferred_lft", "0"]);
    }
    let before: Vec<Vec<String>> = lab.reals.iter().map(snapshot).collect();
    for (real, (tunnel, _)) in lab.reals.iter().zip(REALS) {
        // Strict reverse-path filtering, which `up` must relax for tunnelled packets.
        in_netns(&real.ns, || write_sysctl("net/ipv4/conf/all/rp_filter", "1"));
        let up = realserver(real, vip, outer_v6, "up", tunnel);
        println!("{} up:\n{up}", real.name);
        let again = realserver(real, vip, outer_v6, "up", tunnel);
        assert!(again.ends_with("nothing to change\n"), "{}: up again:\n{again}", real.name);
    }
    lab.serve(PORT);
    for real in &lab.reals {
        assert!(director_reaches(&lab, real.addr_like(outer_like(outer_v6))), "{}", real.name);
    }

    let agent = GuestAgent::start(
        "tunnels",
        &config(&lab, vip, outer_v6),
        &["--dataplane", "xdp", "--xdp-mode", "auto"],
    );
    assert!(
        wait_until(Duration::from_secs(60), || agent.all_up(1, Some(REALS.len()))),
        "the reals did not come up; the agent's log:\n{}",
        agent.log()
    );
    let backends = agent.cli(&["backends"]).expect("lb backends");
    assert!(backends.contains("Tunnel"), "{backends}");

    let devices: Vec<&str> =
        REALS.iter().map(|(tunnel, _)| decap_device(tunnel, vip.is_ipv6(), outer_v6)).collect();
    let rx = |lab: &Lab| -> Vec<u64> {
        lab.reals.iter().zip(&devices).map(|(r, dev)| lab.rx_packets(r, dev)).collect()
    };
    let rx_before = rx(&lab);
    let tally = lab.requests(SocketAddr::new(vip, PORT), REQUESTS);
    println!("{vip}: {:?} (slowest {:.2?})", tally.per_real, tally.slowest);
    assert!(tally.errors.is_empty(), "{vip}: {:?}\n{}", tally.errors, agent.log());
    assert_eq!(tally.total(), REQUESTS, "{vip}: {tally:?}");
    let rx_after = rx(&lab);
    for (i, real) in lab.reals.iter().enumerate() {
        let n = tally.per_real.get(&real.name).copied().unwrap_or(0);
        assert!(n > 0, "{vip}: {} answered nothing: {:?}", real.name, tally.per_real);
        // The real saw the VIP and the client: the packets arrived tunnelled and unchanged.
        let want = std::iter::once((SocketAddr::new(vip, PORT), lab.client_like(vip))).collect();
        assert_eq!(tally.seen[&real.name], want, "{vip}: {} saw", real.name);
        // SYN, ACK, FIN and the last ACK of each connection came through its device.
        let got = rx_after[i] - rx_before[i];
        assert!(got >= 3 * n as u64, "{vip}: {} {}: {got} packets", real.name, devices[i]);
    }

    // Checks through the VIP: r1 taken down (no decapsulation, no VIP) while it still serves its
    // own address is marked down; the others stay up; `up` again brings it back.
    through_vip_tells_a_real_taken_down(&lab, &agent, vip, outer_v6);
    drop(agent);

    for ((real, (tunnel, _)), before) in lab.reals.iter().zip(REALS).zip(&before) {
        let down = realserver(real, vip, outer_v6, "down", tunnel);
        println!("{} down:\n{down}", real.name);
        assert_eq!(
            in_netns(&real.ns, || read_sysctl("net/ipv4/conf/all/rp_filter")),
            "1",
            "{}",
            real.name
        );
        in_netns(&real.ns, || write_sysctl("net/ipv4/conf/all/rp_filter", "0"));
        assert_eq!(snapshot(real), *before, "{}: down left it otherwise", real.name);
    }
}

/// A real taken `down` (no decapsulation, no VIP) while it still serves its own address (of the
/// outer family) is marked down by its check through the VIP; the others stay up; `up` brings it
/// back.
fn through_vip_tells_a_real_taken_down(lab: &Lab, agent: &GuestAgent, vip: IpAddr, outer_v6: bool) {
    let state = |addr: IpAddr| -> String {
        agent.backends_json()["services"][0]["backends"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["address"] == addr.to_string()))
            .and_then(|b| b["state"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let (r1, tunnel) = (&lab.reals[0], REALS[0].0);
    let own = |real: &Real| real.addr_like(outer_like(outer_v6));
    realserver(r1, vip, outer_v6, "down", tunnel);
    assert!(director_reaches(lab, own(r1)), "r1 still serves its own address");
    assert!(
        wait_until(Duration::from_secs(10), || state(own(r1)) == "down"),
        "r1 without its tunnel not down: {}\n{}",
        agent.backends_json(),
        agent.log()
    );
    for real in &lab.reals[1..] {
        assert_eq!(state(own(real)), "up", "{}", real.name);
    }
    realserver(r1, vip, outer_v6, "up", tunnel);
    assert!(
        wait_until(Duration::from_secs(10), || agent.all_up(1, Some(REALS.len()))),
        "r1 not back up: {}",
        agent.backends_json()
    );
}
