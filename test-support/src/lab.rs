//! The pieces both namespace-lab builders share (the host labs' `Topology` in lb-tests, the
//! guest labs' `Lab` in lb-userspace's guest tests): the `ip` commands that make a bridge, a veth
//! from it into a namespace and an address, the sysctls of a direct-routing real server, and
//! `ip -batch`. Commands are argument lists, so a builder runs them one by one (`ip -n NS ...`) or
//! as lines of one batch (one process for many changes: process starts are slow under TCG).

use std::{
    io::{self, Write as _},
    process::{Command, Stdio},
};

/// `link add NAME type bridge [ageing_time N] mcast_snooping 0`. No multicast snooping: VRRP
/// adverts and IPv6 neighbour solicitations must reach every port at once. `ageing_time 0`
/// floods every frame (a hub, for observers).
pub fn bridge(name: &str, ageing_time: Option<u32>) -> Vec<String> {
    let mut args = strings(&["link", "add", name, "type", "bridge"]);
    if let Some(t) = ageing_time {
        args.extend(strings(&["ageing_time", &t.to_string()]));
    }
    args.extend(strings(&["mcast_snooping", "0"]));
    args
}

/// `link add PORT type veth peer name IFNAME [address MAC] netns NS`: a veth whose end `PORT`
/// stays here (for the bridge) and whose end `IFNAME` goes into namespace `ns`.
pub fn veth_into(port: &str, ns: &str, ifname: &str, mac: Option<&str>) -> Vec<String> {
    let mut args = strings(&["link", "add", port, "type", "veth", "peer", "name", ifname]);
    if let Some(mac) = mac {
        args.extend(strings(&["address", mac]));
    }
    args.extend(strings(&["netns", ns]));
    args
}

/// `link set PORT master BRIDGE up`.
pub fn attach(port: &str, bridge: &str) -> Vec<String> {
    strings(&["link", "set", port, "master", bridge, "up"])
}

/// `addr add CIDR dev DEV`, IPv6 without duplicate address detection (usable at once).
pub fn addr_add(dev: &str, cidr: &str) -> Vec<String> {
    let mut args = strings(&["addr", "add", cidr, "dev", dev]);
    if cidr.contains(':') {
        args.push("nodad".into());
    }
    args
}

/// The sysctls (`/proc/sys` paths) of a direct-routing real server on `ifname`: never answer ARP
/// for the VIP on `lo` (`arp_ignore=1`) nor use it as ARP source (`arp_announce=2`), on `all` and
/// `ifname`.
pub fn realserver_arp_sysctls(ifname: &str) -> Vec<(String, &'static str)> {
    ["all", ifname]
        .into_iter()
        .flat_map(|scope| {
            [
                (format!("net/ipv4/conf/{scope}/arp_ignore"), "1"),
                (format!("net/ipv4/conf/{scope}/arp_announce"), "2"),
            ]
        })
        .collect()
}

/// One line of an `ip -batch` input.
pub fn batch_line(args: &[String]) -> String {
    let mut line = args.join(" ");
    line.push('\n');
    line
}

/// Runs `ip [-n NS] -batch -` with `commands`, one per line; an error carries ip's stderr and
/// the commands.
pub fn ip_batch(ns: Option<&str>, commands: &str) -> io::Result<()> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(commands.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "ip {}-batch failed: {}\ncommands:\n{commands}",
        ns.map(|n| format!("-n {n} ")).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr)
    )))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let cases: [(Vec<String>, &str); 6] = [
            (bridge("br0", Some(0)), "link add br0 type bridge ageing_time 0 mcast_snooping 0\n"),
            (bridge("lbvbr", None), "link add lbvbr type bridge mcast_snooping 0\n"),
            (
                veth_into("p-rs1", "ns1", "eth0", Some("02:00:00:00:00:01")),
                "link add p-rs1 type veth peer name eth0 address 02:00:00:00:00:01 netns ns1\n",
            ),
            (attach("p-rs1", "br0"), "link set p-rs1 master br0 up\n"),
            (addr_add("eth0", "192.0.2.1/24"), "addr add 192.0.2.1/24 dev eth0\n"),
            (addr_add("lo", "2001:db8::1/128"), "addr add 2001:db8::1/128 dev lo nodad\n"),
        ];
        for (args, want) in cases {
            assert_eq!(batch_line(&args), want);
        }
    }

    #[test]
    fn realserver_sysctls_cover_all_and_the_interface() {
        let keys: Vec<String> =
            realserver_arp_sysctls("eth0").into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            keys,
            [
                "net/ipv4/conf/all/arp_ignore=1",
                "net/ipv4/conf/all/arp_announce=2",
                "net/ipv4/conf/eth0/arp_ignore=1",
                "net/ipv4/conf/eth0/arp_announce=2",
            ]
        );
    }
}
