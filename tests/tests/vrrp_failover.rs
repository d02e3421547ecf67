//! Two `lb` directors form an active/backup pair with the embedded VRRP engine: the master
//! forwards, the backup does not; when the master dies the backup takes the VIP and forwards
//! (adverts by multicast, and by unicast between `unicast_src_ip` and `unicast_peer`).

use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use lb_tests::{DrTopology, LbAgent, count_http, http_get, lb_bin, require_root, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const ADVERT: f64 = 0.2;

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

/// A director's config; `unicast` = (its own address, the peer's); `head` goes first (a
/// `[dataplane]` table).
fn config(priority: u8, unicast: Option<(&str, &str)>, head: &str) -> String {
    let unicast = unicast.map_or(String::new(), |(src, peer)| {
        format!("unicast_src_ip = \"{src}\"\nunicast_peer = [\"{peer}\"]\n")
    });
    let mut text = format!(
        "{head}[[vrrp_instance]]\nname = \"VI_1\"\nstate = \"BACKUP\"\ninterface = \"eth0\"\n\
         virtual_router_id = 51\npriority = {priority}\nadvert_int = {ADVERT}\nversion = 3\n\
         virtual_ipaddress = [\"{VIP}/24\"]\n{unicast}\n\
         [[virtual_server]]\nvip = \"{VIP}\"\nport = 80\ninterface = \"eth0\"\n"
    );
    for i in 0..3 {
        text.push_str(&format!(
            "[[virtual_server.real_server]]\naddress = \"192.0.2.{}\"\n",
            11 + i
        ));
    }
    text
}

/// The DR topology with two directors running `lb` as a VRRP pair (dir1 priority 150, dir2 100),
/// and the folder holding their configs. Multicast adverts unless `unicast`.
fn pair(label: &str, unicast: bool) -> (DrTopology, LbAgent, LbAgent, tempfile::TempDir) {
    pair_with(label, unicast, "")
}

/// [`pair`] with `head` written first in both configs.
fn pair_with(
    label: &str,
    unicast: bool,
    head: &str,
) -> (DrTopology, LbAgent, LbAgent, tempfile::TempDir) {
    let mut dr = DrTopology::build(label, 3, VIP, testpeer()).expect("topology");
    let dir2 = dr.topo.add_host("dir2", &["192.0.2.3/24"]).expect("second director");
    let dir = lb_tests::scratch_dir(&format!("{}-cfg-", dr.topo.prefix())).expect("dir");
    let (c1, c2) = (dir.path().join("dir1.toml"), dir.path().join("dir2.toml"));
    let (ip1, ip2) = ("192.0.2.2", "192.0.2.3");
    let (u1, u2) = if unicast { (Some((ip1, ip2)), Some((ip2, ip1))) } else { (None, None) };
    std::fs::write(&c1, config(150, u1, head)).expect("config");
    std::fs::write(&c2, config(100, u2, head)).expect("config");
    let a1 =
        LbAgent::start(&dr.director.ns, &lb_bin(), &c1, &["--xdp-mode", "generic"]).expect("dir1");
    let a2 = LbAgent::start(&dir2.ns, &lb_bin(), &c2, &["--xdp-mode", "generic"]).expect("dir2");
    (dr, a1, a2, dir)
}

#[test]
fn backup_director_takes_over_when_the_master_dies() {
    if !require_root("vrrp failover") {
        return;
    }
    for (case, unicast) in [("multicast", false), ("unicast", true)] {
        let (dr, a1, a2, _dir) = pair("vf", unicast);
        let settled = wait_until(Duration::from_secs(10), || {
            a1.vrrp_state("VI_1").as_deref() == Some("MASTER")
                && a2.vrrp_state("VI_1").as_deref() == Some("BACKUP")
        });
        assert!(
            settled,
            "{case}: dir1 MASTER, dir2 BACKUP: {:?} / {:?}",
            a1.vrrp_state("VI_1"),
            a2.vrrp_state("VI_1")
        );
        a1.wait_all_backends("up", Duration::from_secs(10)).expect("reals up on dir1");
        let counts = count_http(&dr.client.ns, &format!("http://{VIP}/"), 20);
        assert_eq!(counts.get("(failed)"), None, "{case}: master forwards: {counts:?}");
        let b2 = a2.backends().expect("dir2 backends");
        assert_eq!(b2["services"][0]["active"], false, "{case}: the backup forwards: {b2}");

        // The master crashes: the backup must take the VIP and forward.
        a1.kill().expect("SIGKILL dir1");
        let killed = Instant::now();
        let url = format!("http://{VIP}/");
        let back = wait_until(Duration::from_secs(10), || {
            http_get(&dr.client.ns, &url).is_ok_and(|b| b.starts_with("rs"))
        });
        let failover = killed.elapsed();
        assert!(back, "{case}: no traffic through dir2 after the master died");
        assert_eq!(a2.vrrp_state("VI_1").as_deref(), Some("MASTER"), "{case}");
        // Master_Down_Interval = 3 × advert + skew (< 4 × advert) plus the GARP and the first
        // request.
        eprintln!("{case} failover: {failover:?} (advert {ADVERT} s)");
        let limit = Duration::from_secs_f64(4.0 * ADVERT + 2.0);
        assert!(failover < limit, "{case}: failover took {failover:?}");
        let counts = count_http(&dr.client.ns, &url, 20);
        assert_eq!(counts.get("(failed)"), None, "{case}: dir2 forwards: {counts:?}");
        let log = a2.stderr();
        // Brought up by the state-change hook (before the VIPs) or by the status update.
        let up = log.contains("dataplane up before the VIPs")
            || log.contains("VRRP state change in the dataplane");
        assert!(up, "{log}");
    }
}

#[test]
fn graceful_stop_hands_over_and_leaves_no_vip_or_xdp_behind() {
    if !require_root("vrrp graceful stop") {
        return;
    }
    let (dr, a1, a2, _dir) = pair("vg", false);
    assert!(
        wait_until(Duration::from_secs(10), || a1.vrrp_state("VI_1").as_deref() == Some("MASTER"))
    );
    a1.wait_all_backends("up", Duration::from_secs(10)).expect("up");
    let url = format!("http://{VIP}/");
    assert!(http_get(&dr.client.ns, &url).is_ok_and(|b| b.starts_with("rs")), "master forwards");

    // SIGTERM: priority-0 advert, VIP removed, XDP detached; the backup takes over at once.
    let stopped = Instant::now();
    a1.stop().expect("clean stop");
    assert!(
        wait_until(Duration::from_secs(5), || a2.vrrp_state("VI_1").as_deref() == Some("MASTER"))
    );
    let takeover = stopped.elapsed();
    let back = wait_until(Duration::from_secs(5), || {
        http_get(&dr.client.ns, &url).is_ok_and(|b| b.starts_with("rs"))
    });
    assert!(back, "no traffic through dir2 after the hand-over");
    eprintln!("graceful hand-over: dir2 MASTER after {takeover:?} (advert {ADVERT} s)");
    // Skew_Time at priority 100 is (256 - 100) / 256 × advert ≈ 0.12 s; allow scheduling slack.
    assert!(takeover < Duration::from_secs_f64(ADVERT + 1.0), "hand-over took {takeover:?}");
    let addrs = dr.director.ns.run_ok(&["ip", "addr", "show", "eth0"]).expect("ip addr");
    assert!(!addrs.contains(&VIP.to_string()), "old master still holds the VIP: {addrs}");
    let link = dr.director.ns.run_ok(&["ip", "link", "show", "eth0"]).expect("ip link");
    assert!(!link.contains("xdp"), "old master still has XDP attached: {link}");
}

/// The master's interface is deleted and created again (same name, MAC and address, new
/// ifindex): the backup takes over meanwhile; the old master comes back through FAULT and
/// BACKUP, preempts with its higher priority and forwards again on the new interface.
#[test]
fn master_interface_recreated_forwards_again() {
    if !require_root("vrrp interface recreated") {
        return;
    }
    let (dr, a1, a2, _dir) = pair("vr", false);
    assert!(
        wait_until(Duration::from_secs(10), || a1.vrrp_state("VI_1").as_deref() == Some("MASTER"))
    );
    a1.wait_all_backends("up", Duration::from_secs(10)).expect("up");
    let url = format!("http://{VIP}/");
    assert!(http_get(&dr.client.ns, &url).is_ok_and(|b| b.starts_with("rs")), "master forwards");

    let (d1, sw) = (&dr.director, dr.topo.switch());
    d1.ns.ip(&["link", "del", "eth0"]).expect("delete eth0");
    let fault = wait_until(Duration::from_secs(5), || {
        a1.vrrp_state("VI_1").as_deref() == Some("FAULT")
            && a2.vrrp_state("VI_1").as_deref() == Some("MASTER")
    });
    assert!(
        fault,
        "dir1 FAULT, dir2 MASTER: {:?} / {:?}",
        a1.vrrp_state("VI_1"),
        a2.vrrp_state("VI_1")
    );
    let through_dir2 = wait_until(Duration::from_secs(5), || {
        http_get(&dr.client.ns, &url).is_ok_and(|b| b.starts_with("rs"))
    });
    assert!(through_dir2, "no traffic through dir2 while dir1's interface is missing");

    let mac = d1.mac_string();
    let port = d1.bridge_port.as_str();
    sw.ip(&[
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "address",
        &mac,
        "netns",
        d1.ns.name(),
    ])
    .expect("recreate the veth");
    sw.ip(&["link", "set", port, "master", "br0", "up"]).expect("bridge port");
    d1.ns.ip(&["addr", "add", &d1.addrs[0], "dev", "eth0"]).expect("address");
    d1.ns.ip(&["link", "set", "eth0", "up"]).expect("up");
    let back = wait_until(Duration::from_secs(10), || {
        a1.vrrp_state("VI_1").as_deref() == Some("MASTER")
            && a2.vrrp_state("VI_1").as_deref() == Some("BACKUP")
    });
    assert!(
        back,
        "dir1 did not preempt back: {:?} / {:?}\n{}",
        a1.vrrp_state("VI_1"),
        a2.vrrp_state("VI_1"),
        a1.stderr()
    );
    let up = Instant::now();
    let xdp = wait_until(Duration::from_secs(3), || d1.xdp_attached());
    assert!(xdp, "no XDP on the recreated interface\n{}", a1.stderr());
    eprintln!("recreated interface: dir1 MASTER again, XDP attached {:?} later", up.elapsed());
    let counts = count_http(&dr.client.ns, &url, 20);
    assert_eq!(
        counts.get("(failed)"),
        None,
        "dir1 forwards on the new interface: {counts:?}\n{}",
        a1.stderr()
    );
}

/// The id of the XDP program on `host`'s `eth0`, if one is attached.
fn xdp_prog_id(host: &lb_tests::Host) -> Option<u64> {
    let out = host.ns.ip(&["-j", "link", "show", "dev", "eth0"]).ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    let xdp = &v[0]["xdp"];
    xdp["prog"]["id"].as_u64().or_else(|| xdp["attached"][0]["prog"]["id"].as_u64())
}

/// A global XDP counter of an agent (`lb status --json`).
fn counter(agent: &LbAgent, name: &str) -> u64 {
    let text = agent.cli(&["status", "--json"]).expect("lb status");
    let status: serde_json::Value = serde_json::from_str(&text).expect("status json");
    status["counters"][name]["packets"].as_u64().unwrap_or(0)
}

/// `backup_xdp = "standby"`: the BACKUP keeps its program attached with the service staged (a
/// frame for the VIP sent to it passes to its kernel, nothing is forwarded); it takes over
/// when the master dies and hands back when the master returns, with the same program
/// attached throughout (no attach or detach on either change).
#[test]
fn standby_backup_keeps_its_program_through_failover_both_ways() {
    if !require_root("vrrp standby failover") {
        return;
    }
    let head = "[dataplane]\nbackup_xdp = \"standby\"\n";
    let (dr, a1, a2, dir) = pair_with("vs", false, head);
    let dir2 = dr.topo.host("dir2").expect("dir2").clone();
    let roles = |m: &LbAgent, b: &LbAgent| {
        m.vrrp_state("VI_1").as_deref() == Some("MASTER")
            && b.vrrp_state("VI_1").as_deref() == Some("BACKUP")
    };
    assert!(wait_until(Duration::from_secs(10), || roles(&a1, &a2)), "dir1 MASTER, dir2 BACKUP");
    a1.wait_all_backends("up", Duration::from_secs(10)).expect("reals up on dir1");
    a2.wait_all_backends("up", Duration::from_secs(10)).expect("reals up on dir2");
    let url = format!("http://{VIP}/");
    let counts = count_http(&dr.client.ns, &url, 10);
    assert_eq!(counts.get("(failed)"), None, "master forwards: {counts:?}");

    // The backup: attached, the service staged (not active), nothing forwarded.
    let id = xdp_prog_id(&dir2).expect("standby backup has its XDP program attached");
    let b2 = a2.backends().expect("dir2 backends");
    assert_eq!(b2["services"][0]["active"], false, "{b2}");
    // Frames for the VIP sent to the backup's MAC (as a client with a stale ARP entry would)
    // pass to its kernel: counted as not a service, never sent out.
    let (tx0, pass0) = (counter(&a2, "tx"), counter(&a2, "pass_not_service"));
    let client = &dr.client.ns;
    let vip = VIP.to_string();
    let neigh = ["neigh", "replace", &vip, "lladdr", &dir2.mac_string(), "dev", "eth0"];
    client.ip(&neigh).expect("point the VIP at dir2");
    let target = std::net::SocketAddr::from((VIP, 80));
    client
        .run_in(move || {
            for _ in 0..3 {
                let t = Duration::from_millis(200);
                assert!(std::net::TcpStream::connect_timeout(&target, t).is_err(), "answered");
            }
        })
        .expect("client");
    client.ip(&["neigh", "del", &vip, "dev", "eth0"]).expect("forget the VIP's MAC");
    let (tx1, pass1) = (counter(&a2, "tx"), counter(&a2, "pass_not_service"));
    assert_eq!(tx1, tx0, "the standby backup forwarded a frame");
    assert!(pass1 >= pass0 + 3, "VIP frames not passed to the stack: {pass0} -> {pass1}");

    // The master dies: dir2 serves with the program it already had.
    a1.kill().expect("SIGKILL dir1");
    let through = || http_get(&dr.client.ns, &url).is_ok_and(|b| b.starts_with("rs"));
    assert!(wait_until(Duration::from_secs(10), through), "no traffic through dir2");
    assert_eq!(a2.vrrp_state("VI_1").as_deref(), Some("MASTER"));
    assert_eq!(xdp_prog_id(&dir2), Some(id), "dir2's program changed on becoming MASTER");
    assert!(counter(&a2, "tx") > tx1, "dir2 MASTER forwards through XDP");

    // dir1 returns and preempts: dir2 goes back to BACKUP, still attached, and stops forwarding.
    let a1 = LbAgent::start(
        &dr.director.ns,
        &lb_bin(),
        &dir.path().join("dir1.toml"),
        &["--xdp-mode", "generic"],
    )
    .expect("dir1 again");
    assert!(wait_until(Duration::from_secs(10), || roles(&a1, &a2)), "dir1 preempts");
    a1.wait_all_backends("up", Duration::from_secs(10)).expect("reals up on dir1");
    assert_eq!(xdp_prog_id(&dir2), Some(id), "dir2's program changed on becoming BACKUP");
    let counts = count_http(&dr.client.ns, &url, 10);
    assert_eq!(counts.get("(failed)"), None, "dir1 forwards again: {counts:?}");
    let tx2 = counter(&a2, "tx");
    let counts = count_http(&dr.client.ns, &url, 10);
    assert_eq!(counts.get("(failed)"), None, "{counts:?}");
    assert_eq!(counter(&a2, "tx"), tx2, "dir2 still forwards as BACKUP");

    // And once more to MASTER.
    a1.kill().expect("SIGKILL dir1");
    assert!(wait_until(Duration::from_secs(10), through), "no traffic through dir2 (second)");
    assert_eq!(xdp_prog_id(&dir2), Some(id), "dir2's program changed");
    let log = a2.stderr();
    assert_eq!(log.matches("XDP attached").count(), 1, "one attach, at start-up:\n{log}");
    assert!(!log.contains("XDP detached"), "{log}");
}
