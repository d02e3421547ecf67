//! keepalived against keepalived in network namespaces: the harness in `lb_tests::keepalived`
//! works, and keepalived's own failover times on this machine — the bar the director's VRRP
//! engine is held to (its tests against keepalived live in `lb-userspace/src/vrrp/tests.rs`
//! and measure the same three cases).
//!
//! VRRPv3 at advert_int 0.1 s keeps it short (about 3 s): crash failover (SIGKILL of both
//! processes), preempt-back after a restart, and graceful hand-over (SIGTERM → priority 0).

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use lb_tests::keepalived::{Keepalived, KeepalivedConfig, require_keepalived};
use lb_tests::{BridgeMode, Topology, require_root, wait_until};

const VIP: &str = "192.0.2.200";

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn since(a: SystemTime, b: SystemTime) -> Duration {
    b.duration_since(a).unwrap_or_default()
}

fn has_vip(host: &lb_tests::Host) -> bool {
    host.has_addr(VIP.parse().expect("VIP"))
}

#[test]
fn keepalived_pair_failover_times() {
    let name = "keepalived pair failover times";
    if !require_root(name) || !require_keepalived(name) {
        return;
    }
    let mut topo = Topology::with_mode("vrrpka", BridgeMode::Hub).expect("topology");
    let h1 = topo.add_host("ka1", &["192.0.2.11/24"]).expect("ka1");
    let h2 = topo.add_host("ka2", &["192.0.2.12/24"]).expect("ka2");
    let tmp = lb_tests::scratch_dir(&format!("{}-ka-", topo.prefix())).expect("temp dir");
    let dir = tmp.path();
    let cfg = |prio| KeepalivedConfig {
        advert_int: "0.1".into(),
        ..KeepalivedConfig::new(51, prio, &format!("{VIP}/32"))
    };
    // Master_Down_Interval at 0.1 s: 0.3 s + (256 - prio) / 256 × 0.1 s.
    let mdi = |prio: u32| Duration::from_micros(300_000 + (256 - prio) as u64 * 100_000 / 256);

    let mut ka1 = Keepalived::start(&h1.ns, dir, &cfg(100)).expect("start ka1");
    ka1.wait_state("MASTER", ka1.started, Duration::from_secs(3)).expect("ka1 MASTER");
    let ka2 = Keepalived::start(&h2.ns, dir, &cfg(90)).expect("start ka2");
    ka2.wait_state("BACKUP", ka2.started, Duration::from_secs(2)).expect("ka2 BACKUP");
    std::thread::sleep(mdi(90) * 2);
    assert_eq!(ka2.states(), ["BACKUP"], "ka2 must stay BACKUP:\n{}", ka2.log());
    assert!(has_vip(&h1) && !has_vip(&h2));

    // Crash: both keepalived processes of ka1 SIGKILLed at once.
    let crashed = SystemTime::now();
    ka1.crash().expect("crash ka1");
    let master = ka2.wait_state("MASTER", crashed, Duration::from_secs(2)).expect("ka2 MASTER");
    let failover = since(crashed, master);
    // The kill lands anywhere in an advert interval; the notify script adds its fork/exec time.
    assert!(failover <= mdi(90) + Duration::from_millis(300), "crash failover {failover:?}");
    assert!(wait_until(Duration::from_secs(1), || has_vip(&h2)), "ka2 did not add the VIP");

    // ka1 back with its higher priority preempts.
    let mut ka1 = Keepalived::start(&h1.ns, dir, &cfg(100)).expect("restart ka1");
    let back = ka2.wait_state("BACKUP", ka1.started, Duration::from_secs(3)).expect("preempted");
    let preempt = since(ka1.started, back);
    assert!(wait_until(Duration::from_secs(1), || has_vip(&h1) && !has_vip(&h2)));

    // Graceful stop: priority 0, ka2 takes over after its Skew_Time.
    let stopping = SystemTime::now();
    ka1.stop(Duration::from_secs(5)).expect("SIGTERM ka1");
    let took = ka2.wait_state("MASTER", stopping, Duration::from_secs(2)).expect("ka2 MASTER");
    let graceful = since(stopping, took);
    assert!(graceful < Duration::from_millis(400), "graceful hand-over {graceful:?}");
    let _ = writeln!(
        std::io::stderr().lock(),
        "MEASURED keepalived pair v3 advert 100 ms (notify-script times): SIGKILL -> backup \
         MASTER {} (Master_Down_Interval {}); restart -> preempted back {}; SIGTERM -> backup \
         MASTER {}",
        ms(failover),
        ms(mdi(90)),
        ms(preempt),
        ms(graceful)
    );
    drop(ka2);
    drop(topo);
}
