//! The full `lb run` agent paired with Debian's keepalived (2.2.7) as the other director, with
//! client traffic through the VIP: whichever side is MASTER holds the VIP, and while `lb` is
//! MASTER the client's requests are answered by the reals through its XDP program (keepalived
//! runs with `-P` and forwards nothing: the host kernel has no IPVS).
//!
//! - keepalived MASTER + lb BACKUP, keepalived crashes (SIGKILL of both its processes): lb takes
//!   the VIP and forwards (multicast v3, unicast v2).
//! - lb MASTER + keepalived BACKUP, lb stopped (SIGTERM) or crashed (SIGKILL): keepalived holds
//!   the VIP, the client's ARP entry for it names keepalived's host, and the old lb master has
//!   no XDP attached and no VIP (after a crash the VIP is left on the interface, as keepalived
//!   leaves it, and the next `lb run` removes it as stale).
//! - `nopreempt`: lb at a higher priority stays BACKUP under a running keepalived MASTER.
//! - `track_script`: lb's failing script lowers its priority below keepalived's, which takes
//!   over; the script recovering gives the VIP and the traffic back to lb.
//!
//! Each case builds its own [`DrTopology`] (client, director `dir1` = lb, reals `rs1..3`) plus a
//! host `ka` for keepalived; everything is torn down on drop, also on panic.

use std::{
    io::Write as _,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use lb_tests::keepalived::{Keepalived, KeepalivedConfig, require_keepalived};
use lb_tests::{DrTopology, Host, LbAgent, count_http, http_get, lb_bin, require_root, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const LB_IP: Ipv4Addr = DrTopology::DIRECTOR_IP;
const KA_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);

/// The VRRP settings both sides share.
#[derive(Clone, Copy, Debug)]
struct Vrrp {
    version: u8,
    /// advert_int as both configs write it.
    advert: &'static str,
    unicast: bool,
}

const V3_MULTICAST: Vrrp = Vrrp { version: 3, advert: "0.2", unicast: false };
const V3_UNICAST: Vrrp = Vrrp { version: 3, advert: "0.2", unicast: true };
const V2_UNICAST: Vrrp = Vrrp { version: 2, advert: "1", unicast: true };

impl Vrrp {
    fn advert(&self) -> Duration {
        Duration::from_secs_f64(self.advert.parse().expect("advert_int"))
    }

    /// An upper bound of Master_Down_Interval (3 adverts + skew < 4 adverts).
    fn master_down(&self) -> Duration {
        self.advert() * 4
    }
}

fn log(line: &str) {
    // Straight to fd 2: stays visible without --nocapture.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

/// The DR topology, a keepalived host and a folder for the configs.
struct Lab {
    dr: DrTopology,
    ka: Host,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(label: &str) -> Lab {
        let mut dr = DrTopology::build(label, 3, VIP, testpeer()).expect("topology");
        let ka = dr.topo.add_host("ka", &[&format!("{KA_IP}/24")]).expect("keepalived host");
        let dir = lb_tests::scratch_dir(&format!("{}-cfg-", dr.topo.prefix())).expect("temp dir");
        Lab { dr, ka, dir }
    }

    /// `lb run` on dir1 with `vrrp` at `priority`; `extra` goes into the instance (keys) and
    /// after it (tables).
    fn start_lb(&self, name: &str, vrrp: Vrrp, priority: u8, keys: &str, tables: &str) -> LbAgent {
        let mut text = format!(
            "[[vrrp_instance]]\nname = \"VI_1\"\nstate = \"BACKUP\"\ninterface = \"eth0\"\n\
             virtual_router_id = 51\npriority = {priority}\nadvert_int = {}\nversion = {}\n\
             virtual_ipaddress = [\"{VIP}/32\"]\n",
            vrrp.advert, vrrp.version
        );
        if vrrp.unicast {
            text.push_str(&format!("unicast_src_ip = \"{LB_IP}\"\nunicast_peer = [\"{KA_IP}\"]\n"));
        }
        text.push_str(keys);
        text.push_str(tables);
        text.push_str(&format!(
            "\n[[virtual_server]]\nvip = \"{VIP}\"\nport = 80\ninterface = \"eth0\"\n"
        ));
        for i in 0..3 {
            let real = DrTopology::real_ip(i);
            text.push_str(&format!("[[virtual_server.real_server]]\naddress = \"{real}\"\n"));
        }
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).expect("lb config");
        LbAgent::start(&self.dr.director.ns, &lb_bin(), &path, &["--xdp-mode", "generic"])
            .expect("lb run")
    }

    fn start_keepalived(&self, vrrp: Vrrp, priority: u8, nopreempt: bool) -> Keepalived {
        let mut cfg = KeepalivedConfig::new(51, priority, &format!("{VIP}/32"));
        cfg.version = vrrp.version;
        cfg.advert_int = vrrp.advert.into();
        cfg.nopreempt = nopreempt;
        if vrrp.unicast {
            cfg.unicast_src_ip = Some(KA_IP.to_string());
            cfg.unicast_peer = vec![LB_IP.to_string()];
        }
        Keepalived::start(&self.ka.ns, self.dir.path(), &cfg).expect("keepalived")
    }

    fn url(&self) -> String {
        format!("http://{VIP}/")
    }

    /// One request through the VIP answered by a real.
    fn served_by_reals(&self) -> bool {
        http_get(&self.dr.client.ns, &self.url()).is_ok_and(|b| b.starts_with("rs"))
    }

    /// 20 requests, all answered by the reals, by more than one of them.
    fn assert_forwarding(&self, what: &str) {
        let counts = count_http(&self.dr.client.ns, &self.url(), 20);
        assert_eq!(counts.get("(failed)"), None, "{what}: {counts:?}");
        assert!(counts.len() > 1, "{what}: one real took everything: {counts:?}");
    }

    /// The client's ARP entry for the VIP names `host`'s MAC.
    fn client_arp_names(&self, host: &Host) -> bool {
        // Asking makes the client resolve the VIP if it has no entry yet.
        let _ = http_get(&self.dr.client.ns, &self.url());
        let out = self.dr.client.ns.ip(&["neigh", "show", &VIP.to_string()]).unwrap_or_default();
        out.contains(&host.mac_string())
    }
}

fn wait_lb_state(lb: &LbAgent, state: &str, timeout: Duration) {
    let ok = wait_until(timeout, || lb.vrrp_state("VI_1").as_deref() == Some(state));
    assert!(ok, "lb not {state} within {timeout:?}: {:?}\n{}", lb.vrrp_state("VI_1"), lb.stderr());
}

fn service_active(lb: &LbAgent) -> bool {
    lb.backends().is_ok_and(|b| b["services"][0]["active"] == true)
}

fn skip(name: &str) -> bool {
    !require_root(name) || !require_keepalived(name)
}

/// keepalived is MASTER, lb BACKUP (serving nothing); keepalived crashes and lb takes the VIP
/// and forwards.
#[test]
fn lb_backup_takes_over_from_a_crashed_keepalived_master() {
    if skip("lb backup takes over from keepalived") {
        return;
    }
    for (case, vrrp) in [("v3 multicast", V3_MULTICAST), ("v2 unicast", V2_UNICAST)] {
        let lab = Lab::new("kalb");
        let mut ka = lab.start_keepalived(vrrp, 150, false);
        ka.wait_state("MASTER", ka.started, Duration::from_secs(6)).expect("keepalived MASTER");
        let lb = lab.start_lb("lb", vrrp, 100, "", "");
        wait_lb_state(&lb, "BACKUP", Duration::from_secs(5));
        lb.wait_all_backends("up", Duration::from_secs(10)).expect("reals up");
        // Several Master_Down intervals: lb hears keepalived and stays BACKUP.
        std::thread::sleep(vrrp.master_down() * 2);
        assert_eq!(lb.vrrp_state("VI_1").as_deref(), Some("BACKUP"), "{case}");
        assert!(
            lab.ka.has_addr(VIP.into()) && !lab.dr.director.has_addr(VIP.into()),
            "{case}: VIP on keepalived"
        );
        assert!(!service_active(&lb), "{case}: the backup forwards nothing");
        assert!(!lab.served_by_reals(), "{case}: keepalived forwards nothing");

        let crashed = Instant::now();
        ka.crash().expect("crash keepalived");
        let back =
            wait_until(vrrp.master_down() + Duration::from_secs(5), || lab.served_by_reals());
        let took = crashed.elapsed();
        assert!(
            back,
            "{case}: no request answered through lb after keepalived died\n{}",
            lb.stderr()
        );
        log(&format!("MEASURED {case}: keepalived SIGKILL -> first request through lb {took:?}"));
        assert_eq!(lb.vrrp_state("VI_1").as_deref(), Some("MASTER"), "{case}");
        assert!(lab.dr.director.has_addr(VIP.into()) && lab.dr.director.xdp_attached(), "{case}");
        assert!(service_active(&lb), "{case}");
        lab.assert_forwarding(case);
        assert!(
            lab.client_arp_names(&lab.dr.director),
            "{case}: client ARP still names keepalived"
        );
    }
}

/// How the lb master goes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    Term,
    Kill,
}

/// lb is MASTER and forwards, keepalived BACKUP; lb is stopped or crashes: keepalived takes the
/// VIP, and the old master keeps no XDP and (after a crash: once restarted) no VIP.
#[test]
fn keepalived_backup_takes_over_from_a_stopped_or_crashed_lb_master() {
    if skip("keepalived takes over from lb") {
        return;
    }
    let cases = [
        ("SIGTERM v3 multicast", Kill::Term, V3_MULTICAST),
        ("SIGKILL v3 multicast", Kill::Kill, V3_MULTICAST),
        ("SIGTERM v3 unicast", Kill::Term, V3_UNICAST),
        ("SIGKILL v2 unicast", Kill::Kill, V2_UNICAST),
    ];
    for (case, kill, vrrp) in cases {
        let lab = Lab::new("lbka");
        let lb = lab.start_lb("lb", vrrp, 150, "", "");
        wait_lb_state(&lb, "MASTER", vrrp.master_down() + Duration::from_secs(5));
        lb.wait_all_backends("up", Duration::from_secs(10)).expect("reals up");
        lab.assert_forwarding(case);
        let ka = lab.start_keepalived(vrrp, 100, false);
        ka.wait_state("BACKUP", ka.started, Duration::from_secs(5)).expect("keepalived BACKUP");
        std::thread::sleep(vrrp.master_down() * 2);
        assert_eq!(ka.states(), ["BACKUP"], "{case}: keepalived must stay BACKUP:\n{}", ka.log());
        assert_eq!(lb.vrrp_state("VI_1").as_deref(), Some("MASTER"), "{case}");

        let gone = SystemTime::now();
        match kill {
            Kill::Term => drop(lb.stop().expect("lb exits 0 on SIGTERM")),
            Kill::Kill => lb.kill().expect("SIGKILL lb"),
        }
        let master = ka
            .wait_state("MASTER", gone, vrrp.master_down() + Duration::from_secs(3))
            .expect("keepalived MASTER");
        let took = master.duration_since(gone).unwrap_or_default();
        log(&format!("MEASURED {case}: lb gone -> keepalived MASTER {took:?}"));
        assert!(wait_until(Duration::from_secs(2), || lab.ka.has_addr(VIP.into())), "{case}: VIP");
        assert!(
            wait_until(Duration::from_secs(2), || lab.client_arp_names(&lab.ka)),
            "{case}: the client's ARP entry for the VIP does not name keepalived's host"
        );
        assert!(!lab.dr.director.xdp_attached(), "{case}: XDP left attached on the old master");
        match kill {
            Kill::Term => assert!(!lab.dr.director.has_addr(VIP.into()), "{case}: VIP left behind"),
            Kill::Kill => {
                // Nobody removed it (keepalived leaves it too); the next start does, and a
                // lower priority keeps the restarted lb BACKUP.
                let again = lab.start_lb("again", vrrp, 50, "", "");
                let removed =
                    wait_until(Duration::from_secs(2), || !lab.dr.director.has_addr(VIP.into()));
                assert!(removed, "{case}: stale VIP kept by the new lb");
                wait_lb_state(&again, "BACKUP", Duration::from_secs(5));
                std::thread::sleep(vrrp.master_down());
                assert!(!lab.dr.director.has_addr(VIP.into()) && !service_active(&again), "{case}");
                assert_eq!(ka.state().as_deref(), Some("MASTER"), "{case}");
            }
        }
    }
}

/// `nopreempt`: lb (priority 150) joins a running keepalived MASTER (100) and stays BACKUP; it
/// takes over only when keepalived goes.
#[test]
fn nopreempt_lb_waits_for_the_keepalived_master_to_go() {
    if skip("nopreempt lb and keepalived") {
        return;
    }
    let vrrp = V3_MULTICAST;
    let lab = Lab::new("nopre");
    let mut ka = lab.start_keepalived(vrrp, 100, false);
    ka.wait_state("MASTER", ka.started, Duration::from_secs(6)).expect("keepalived MASTER");
    let lb = lab.start_lb("lb", vrrp, 150, "nopreempt = true\n", "");
    wait_lb_state(&lb, "BACKUP", Duration::from_secs(5));
    lb.wait_all_backends("up", Duration::from_secs(10)).expect("reals up");
    std::thread::sleep(vrrp.master_down() * 3);
    assert_eq!(lb.vrrp_state("VI_1").as_deref(), Some("BACKUP"), "nopreempt lb took over");
    assert_eq!(ka.states(), ["BACKUP", "MASTER"], "{}", ka.log());
    assert!(lab.ka.has_addr(VIP.into()) && !lab.dr.director.has_addr(VIP.into()));

    let stopping = Instant::now();
    ka.stop(Duration::from_secs(5)).expect("SIGTERM keepalived");
    assert!(
        wait_until(Duration::from_secs(5), || lab.served_by_reals()),
        "no request answered through lb after keepalived stopped\n{}",
        lb.stderr()
    );
    log(&format!("MEASURED nopreempt: keepalived SIGTERM -> lb forwards {:?}", stopping.elapsed()));
    wait_lb_state(&lb, "MASTER", Duration::from_secs(1));
    lab.assert_forwarding("after keepalived stopped");
}

/// lb (150) is MASTER while its `vrrp_script` succeeds; the script fails (weight -60 → 90 <
/// keepalived's 120): keepalived preempts and holds the VIP; the script recovers: lb preempts
/// back and forwards again.
#[test]
fn track_script_hands_the_vip_to_keepalived_and_back() {
    if skip("track_script lb and keepalived") {
        return;
    }
    let vrrp = V3_MULTICAST;
    let lab = Lab::new("trks");
    let flag = lab.dir.path().join("healthy");
    std::fs::write(&flag, "").expect("flag");
    let script = format!(
        "\n[[vrrp_script]]\nname = \"chk\"\nscript = \"test -f {}\"\ninterval = 0.1\n\
         weight = -60\n",
        flag.display()
    );
    let lb = lab.start_lb("lb", vrrp, 150, "track_script = [\"chk\"]\n", &script);
    wait_lb_state(&lb, "MASTER", Duration::from_secs(5));
    lb.wait_all_backends("up", Duration::from_secs(10)).expect("reals up");
    let ka = lab.start_keepalived(vrrp, 120, false);
    ka.wait_state("BACKUP", ka.started, Duration::from_secs(5)).expect("keepalived BACKUP");
    std::thread::sleep(vrrp.master_down() * 2);
    assert_eq!(ka.states(), ["BACKUP"], "{}", ka.log());
    lab.assert_forwarding("lb MASTER at 150");

    let failed = SystemTime::now();
    std::fs::remove_file(&flag).expect("remove flag");
    let master = ka
        .wait_state("MASTER", failed, Duration::from_secs(5))
        .expect("keepalived preempts the lowered lb");
    log(&format!(
        "MEASURED track_script failed -> keepalived MASTER {:?}",
        master.duration_since(failed).unwrap_or_default()
    ));
    wait_lb_state(&lb, "BACKUP", Duration::from_secs(2));
    let status = lb.status().expect("status");
    let inst = &status["vrrp"]["instances"][0];
    assert_eq!(inst["effective_priority"], 90, "{inst}");
    assert!(wait_until(Duration::from_secs(2), || lab.ka.has_addr(VIP.into())
        && !lab.dr.director.has_addr(VIP.into())));
    assert!(wait_until(Duration::from_secs(2), || !service_active(&lb)), "lb still forwards");
    assert!(wait_until(Duration::from_secs(2), || lab.client_arp_names(&lab.ka)));

    let healed = SystemTime::now();
    std::fs::write(&flag, "").expect("flag");
    ka.wait_state("BACKUP", healed, Duration::from_secs(5)).expect("lb preempts back");
    wait_lb_state(&lb, "MASTER", Duration::from_secs(2));
    assert!(wait_until(Duration::from_secs(5), || lab.served_by_reals()), "{}", lb.stderr());
    lab.assert_forwarding("lb MASTER again");
}
