//! `lb realserver up|down` on a real server namespace, with a client namespace on the same
//! bridge that asks for the VIP's link-layer address the way a router (or the director) would.
//!
//! What this shows about the kernel, not only about lb: with the VIP on `lo` and the default
//! sysctls a Linux host answers ARP for it on its NIC (so the VIP's traffic would go around the
//! director); `net.ipv4.conf.all.arp_ignore = 1` alone stops that, with the NIC's own value left at
//! 0 (the kernel uses the larger of `all` and the interface's); an IPv6 VIP on `lo` is never
//! advertised on the NIC, with no setting at all.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Output;
use std::time::Duration;

use lb_tests::{Host, Netns, Topology, lb_bin, require_root, wait_until};

const VIP4: &str = "192.0.2.100";
const VIP6: &str = "2001:db8::100";
const REAL4: &str = "192.0.2.11";
const REAL6: &str = "2001:db8::11";

/// The sysctls `up` may change and `down` restores, as `ip netns exec ... sysctl` names them.
const SYSCTLS: &[&str] = &[
    "net.ipv4.conf.all.arp_ignore",
    "net.ipv4.conf.all.arp_announce",
    "net.ipv4.conf.eth0.arp_ignore",
    "net.ipv4.conf.eth0.arp_announce",
    "net.ipv4.conf.lo.arp_ignore",
];

fn lb(ns: &Netns, args: &[&str]) -> Output {
    let bin = lb_bin();
    assert!(bin.is_file(), "{} not found: cargo build -p lb-userspace --bins", bin.display());
    let bin = bin.to_string_lossy().into_owned();
    let mut argv = vec![bin.as_str()];
    argv.extend_from_slice(args);
    ns.command(&argv).output().expect("running lb")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sysctls(ns: &Netns) -> Vec<(String, String)> {
    SYSCTLS.iter().map(|k| (k.to_string(), ns.sysctl_get(k).expect("sysctl"))).collect()
}

fn lo_addresses(ns: &Netns) -> String {
    ns.ip(&["-br", "addr", "show", "dev", "lo"]).expect("ip addr")
}

/// Whether `client` learns a link-layer address for `target` on its `eth0` within `wait`: its
/// neighbour entry is dropped, a datagram to `target` makes the kernel ask (ARP or neighbour
/// solicitation), and the entry shows whether anyone answered.
fn resolves(client: &Host, target: &str, wait: Duration) -> bool {
    let _ = client.ns.ip(&["neigh", "del", target, "dev", "eth0"]);
    let addr: IpAddr = target.parse().expect("address");
    client
        .ns
        .run_in(move || {
            let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let socket = UdpSocket::bind(bind).expect("bind");
            // Nothing listens on the discard port: only the resolution matters.
            let _ = socket.send_to(b"who has it?", SocketAddr::new(addr, 9));
        })
        .expect("sending from the client");
    wait_until(wait, || {
        client
            .ns
            .ip(&["neigh", "show", "to", target, "dev", "eth0"])
            .is_ok_and(|entry| entry.contains("lladdr"))
    })
}

/// Long enough for the kernel's three probes, a second apart, to go unanswered.
const UNANSWERED: Duration = Duration::from_millis(3500);
const ANSWERED: Duration = Duration::from_secs(3);

#[test]
fn up_keeps_the_vip_from_being_answered_for_and_down_restores_everything() {
    if !require_root("up_keeps_the_vip_from_being_answered_for_and_down_restores_everything") {
        return;
    }
    let mut topo = Topology::new("realsrv").expect("topology");
    let real = topo.add_host("real", &["192.0.2.11/24", "2001:db8::11/64"]).expect("real");
    let client = topo.add_host("client", &["192.0.2.1/24", "2001:db8::1/64"]).expect("client");
    let dir = lb_tests::scratch_dir("lb-realserver-test-").expect("temp dir");
    let state = dir.path().join("run/realserver.json");
    let state_arg = state.to_string_lossy().into_owned();
    let before = sysctls(&real.ns);
    assert!(before.iter().all(|(_, v)| v == "0"), "fresh namespace: {before:?}");

    // Why it is needed: a VIP on lo with the default settings is answered for on eth0.
    assert!(resolves(&client, REAL4, ANSWERED), "the client cannot resolve the real itself");
    real.ns.ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"]).expect("adding the VIP");
    assert!(resolves(&client, VIP4, ANSWERED), "the default answers ARP for a VIP on lo");
    real.ns.ip(&["addr", "del", &format!("{VIP4}/32"), "dev", "lo"]).expect("removing it");

    // Bad input changes nothing.
    let cases: &[(&[&str], i32, &str)] = &[
        (&["--vip", "nonsense"], 2, "invalid value 'nonsense' for '--vip <ADDR>'"),
        (&["--vip", VIP4, "--vip", "127.0.0.1"], 1, "a virtual IP cannot be a loopback address"),
        (&["--vip", VIP4, "--dev", "nosuch0"], 1, "interface `nosuch0` does not exist"),
    ];
    for (args, code, message) in cases {
        let mut argv = vec!["realserver", "up", "--state", &state_arg];
        argv.extend_from_slice(args);
        let out = lb(&real.ns, &argv);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(stderr.contains("nothing was changed") || *code == 2, "{args:?}: {stderr}");
        assert!(!state.exists(), "{args:?}: a state file was written");
        assert_eq!(sysctls(&real.ns), before, "{args:?}");
        assert!(!lo_addresses(&real.ns).contains(VIP4), "{args:?}");
    }

    let up = ["realserver", "up", "--vip", VIP4, "--vip", VIP6, "--state", &state_arg];
    let out = lb(&real.ns, &up);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for line in [
        "set net.ipv4.conf.all.arp_ignore = 1 (was 0)",
        "set net.ipv4.conf.all.arp_announce = 2 (was 0)",
        "added 192.0.2.100/32 to lo",
        "added 2001:db8::100/128 to lo",
    ] {
        assert!(stdout.lines().any(|l| l == line), "no `{line}` in:\n{stdout}");
    }
    let lo = lo_addresses(&real.ns);
    assert!(lo.contains("192.0.2.100/32") && lo.contains("2001:db8::100/128"), "{lo}");
    let after_up = sysctls(&real.ns);
    let value = |key: &str| after_up.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert_eq!(value("net.ipv4.conf.all.arp_ignore"), Some("1"));
    assert_eq!(value("net.ipv4.conf.all.arp_announce"), Some("2"));
    // `all` is enough: eth0's own value stays, and lo's would change nothing.
    assert_eq!(value("net.ipv4.conf.eth0.arp_ignore"), Some("0"));
    assert_eq!(value("net.ipv4.conf.lo.arp_ignore"), Some("0"));
    let saved = std::fs::read(&state).expect("the state file");

    // Again: nothing changes.
    let out = lb(&real.ns, &up);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(stdout.lines().last(), Some("nothing to change"), "{stdout}");
    assert_eq!(lo_addresses(&real.ns), lo);
    assert_eq!(sysctls(&real.ns), after_up);
    assert_eq!(std::fs::read(&state).expect("the state file"), saved);

    // Nobody on the link learns the VIPs' addresses from the real; its own still resolve.
    assert!(!resolves(&client, VIP4, UNANSWERED), "ARP for the IPv4 VIP was answered");
    assert!(!resolves(&client, VIP6, UNANSWERED), "neighbour solicitation for the VIP answered");
    assert!(resolves(&client, REAL4, ANSWERED), "the real's own IPv4 address does not resolve");
    assert!(resolves(&client, REAL6, ANSWERED), "the real's own IPv6 address does not resolve");

    // What the director does: frames for the VIP sent to the real's MAC are taken and answered.
    client
        .ns
        .ip(&["neigh", "replace", VIP4, "lladdr", &real.mac_string(), "dev", "eth0"])
        .expect("static neighbour");
    client.ns.ping(VIP4.parse().expect("VIP"), Duration::from_secs(3)).expect("the real answers");

    // A bad VIP with the state in place: still nothing changes.
    let out = lb(&real.ns, &["realserver", "down", "--vip", "224.0.0.1", "--state", &state_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("a virtual IP cannot be a multicast address"));
    assert_eq!(std::fs::read(&state).expect("the state file"), saved);
    assert_eq!(sysctls(&real.ns), after_up);
    assert_eq!(lo_addresses(&real.ns), lo);

    let down = ["realserver", "down", "--vip", VIP4, "--vip", VIP6, "--state", &state_arg];
    let out = lb(&real.ns, &down);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("removed 192.0.2.100/32 from lo"), "{stdout}");
    let lo = lo_addresses(&real.ns);
    assert!(!lo.contains(VIP4) && !lo.contains(VIP6), "{lo}");
    assert_eq!(sysctls(&real.ns), before);
    assert!(!state.exists());

    // And again: nothing to do, no error.
    let out = lb(&real.ns, &down);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().last(), Some("nothing to change"));
}
