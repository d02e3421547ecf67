//! The pieces both namespace-lab builders share (the host labs' `Topology` in lb-tests, the
//! guest labs' `Lab` in lb-userspace's guest tests): the `ip` commands that make a bridge, a veth
//! from it into a namespace and an address, the sysctls of a direct-routing real server, and
//! `ip -batch`. Commands are argument lists, so a builder runs them one by one (`ip -n NS ...`) or
//! as lines of one batch (one process for many changes: process starts are slow under TCG).
//!
//! Also the one naming of lab namespaces every lab uses ([`unique_prefix`]: the creating pid is
//! in the name) and the removal of those a dead test process left behind ([`remove_orphans`]).

use std::{
    io::{self, Write as _},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

/// A fresh prefix for one lab's namespaces: `lb` + 5 base-36 digits of our pid + 3 of a
/// per-process counter (10 chars). Namespaces are named `PREFIX-ROLE`: the pid part lets
/// [`remove_orphans`] recognise leftovers of dead processes.
pub fn unique_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 36u32.pow(3);
    format!("lb{}{}", base36(std::process::id(), PID_DIGITS), base36(n, 3))
}

/// pid_max is at most 2^22 = 4194304, i.e. 5 base-36 digits ("2hwcf").
const PID_DIGITS: usize = 5;

fn base36(mut v: u32, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v % 36) as usize];
        v /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The creator pid encoded in a `PREFIX-ROLE` name of a [`unique_prefix`], if it has that shape.
pub fn owner_pid(name: &str) -> Option<u32> {
    let bytes = name.as_bytes();
    let well_formed = name.starts_with("lb")
        && bytes.len() > 10
        && bytes[2..10].iter().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        && bytes[10] == b'-';
    if !well_formed {
        return None;
    }
    u32::from_str_radix(&name[2..2 + PID_DIGITS], 36).ok()
}

/// Names of all named namespaces (`ip netns list`).
pub fn list_namespaces() -> io::Result<Vec<String>> {
    let out = Command::new("ip").args(["netns", "list"]).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip netns list: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Removes the namespaces of [`unique_prefix`] labs whose creating process is gone (a test binary
/// that was SIGKILLed), with the processes still inside them. Namespaces of live processes are
/// never touched. The names removed.
pub fn remove_orphans() -> io::Result<Vec<String>> {
    let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    let orphans: Vec<String> = list_namespaces()?
        .into_iter()
        .filter(|n| matches!(owner_pid(n), Some(pid) if !alive(pid)))
        .collect();
    for name in &orphans {
        remove_with_processes(name)?;
    }
    Ok(orphans)
}

/// SIGKILLs the processes inside namespace `name` (`ip netns pids`) and deletes it; one already
/// gone is not an error.
pub fn remove_with_processes(name: &str) -> io::Result<()> {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        let pids = String::from_utf8_lossy(&out.stdout);
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            // SAFETY: plain syscall; these processes live in a namespace a lab made.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let out = Command::new("ip").args(["netns", "del", name]).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || stderr.contains("No such file") {
        return Ok(());
    }
    Err(io::Error::other(format!("ip netns del {name}: {}", stderr.trim())))
}

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
    fn prefixes_are_unique_and_encode_the_pid() {
        let a = unique_prefix();
        let b = unique_prefix();
        assert_ne!(a, b);
        assert_eq!(a.len(), 10);
        assert_eq!(owner_pid(&format!("{a}-x")), Some(std::process::id()));
        assert_eq!(owner_pid(&a), None, "needs the '-' separator");
        assert_eq!(owner_pid("lbtest-foo"), None);
        assert_eq!(owner_pid("lb2hwcf000-x"), Some(4_194_303));
    }

    #[test]
    fn base36_pads_and_wraps() {
        assert_eq!(base36(0, 3), "000");
        assert_eq!(base36(35, 2), "0z");
        assert_eq!(base36(36, 2), "10");
    }

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
