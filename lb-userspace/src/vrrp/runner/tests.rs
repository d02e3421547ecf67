use super::{
    receive::{Route, route},
    *,
};
use crate::config::{
    Location,
    vrrp::{TrackInterface, TrackScript, VrrpScript},
};
use crate::testutil::vrrp_instance as instance;

fn script(name: &str, weight: i32) -> VrrpScript {
    VrrpScript {
        name: name.into(),
        script: "true".into(),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        weight,
        rise: 1,
        fall: 1,
        location: Location::default(),
    }
}

fn config(instances: Vec<VrrpInstance>) -> VrrpConfig {
    VrrpConfig { instances, scripts: vec![], sync_groups: vec![] }
}

#[test]
fn plan_derives_family_interval_auth_and_tracking() {
    let mut a = instance("A", 51, &["192.0.2.200"]);
    a.version = 2;
    a.advert_int = Duration::from_millis(1500);
    a.auth_pass = Some("secret12345".into());
    a.track_interface = vec![TrackInterface { name: "eth1".into(), weight: -20 }];
    a.track_script = vec![
        TrackScript { script: "chk".into(), weight: None },
        TrackScript { script: "chk2".into(), weight: Some(7) },
    ];
    let mut b = instance("B", 51, &["2001:db8::200"]);
    b.advert_int = Duration::from_millis(5);
    let mut cfg = config(vec![a, b]);
    cfg.scripts = vec![script("chk", -10), script("chk2", 0)];
    let plans = plan(&cfg).unwrap();
    assert_eq!(plans[0].family, Family::V4);
    assert_eq!(plans[0].version, Version::V2);
    assert_eq!(plans[0].advert_cs, 150); // the machine rounds v2 up to 200
    assert_eq!(plans[0].auth, Auth::password(b"secret12"));
    assert_eq!(
        plans[0].tracking,
        InstanceTracking {
            interfaces: vec![("eth0".into(), 0), ("eth1".into(), -20)],
            scripts: vec![(0, -10), (1, 7)],
        }
    );
    // Same VRID, other family: fine. Sub-centisecond rounds up to 1 cs.
    assert_eq!(plans[1].family, Family::V6);
    assert_eq!(plans[1].advert_cs, 1);
    assert_eq!(plans[1].auth, Auth::None);
    let s = settings(&plans[0], "192.0.2.12".parse().unwrap());
    let m = Instance::new(s).unwrap();
    assert_eq!(m.settings().advert_interval_cs, 200);
}

#[test]
fn plan_rejects_what_cannot_run() {
    let err = |cfg: VrrpConfig| plan(&cfg).unwrap_err().to_string();
    let dup = config(vec![instance("A", 51, &["192.0.2.1"]), instance("B", 51, &["192.0.2.2"])]);
    assert!(err(dup).contains("already used by A"));
    let mixed = config(vec![instance("A", 51, &["192.0.2.1", "2001:db8::1"])]);
    assert!(err(mixed).contains("mixes"));
    let mut v2v6 = instance("A", 51, &["2001:db8::1"]);
    v2v6.version = 2;
    assert!(err(config(vec![v2v6])).contains("IPv4 only"));
    let mut v4 = instance("A", 51, &["192.0.2.1"]);
    v4.version = 4;
    assert!(err(config(vec![v4])).contains("version 4"));
    let mut ts = instance("A", 51, &["192.0.2.1"]);
    ts.track_script = vec![TrackScript { script: "nope".into(), weight: None }];
    assert!(err(config(vec![ts])).contains("not a vrrp_script"));
    let mut cfg = config(vec![instance("A", 51, &["192.0.2.1"])]);
    cfg.sync_groups = vec![VrrpSyncGroup {
        name: "G".into(),
        group: vec!["A".into(), "B".into()],
        notify_master: None,
        notify_backup: None,
        notify_fault: None,
        location: Location::default(),
    }];
    assert!(err(cfg.clone()).contains("B is not a vrrp_instance"));
    cfg.sync_groups[0].group = vec!["A".into()];
    cfg.sync_groups.push(cfg.sync_groups[0].clone());
    cfg.sync_groups[1].name = "H".into();
    assert!(err(cfg).contains("two sync groups"));
}

#[test]
fn notify_commands_in_keepalived_order() {
    let mut c = instance("VI_1", 51, &["192.0.2.200"]);
    c.notify_master = Some("/etc/lb/master.sh".into());
    c.notify = Some("/etc/lb/notify.sh".into());
    let n = NotifyScripts::of(&c);
    assert_eq!(
        n.commands("VI_1", State::Master, 90),
        ["/etc/lb/master.sh", "/etc/lb/notify.sh INSTANCE VI_1 MASTER 90"]
    );
    assert_eq!(
        n.commands("VI_1", State::Backup, 90),
        ["/etc/lb/notify.sh INSTANCE VI_1 BACKUP 90"]
    );
    assert!(NotifyScripts::default().commands("x", State::Stop, 1).is_empty());
}

#[tokio::test]
async fn no_instances_no_engine_work() {
    let engine = VrrpEngine::start(&VrrpConfig::default(), Hooks::default()).await.unwrap();
    assert!(engine.snapshot().instances.is_empty());
    engine.stop().await;
}

/// Becoming MASTER, the engine adds the VIPs only once the embedding program has answered its
/// `MasterRequest` (the agent makes the services live in between), and at once when the answer
/// is dropped. An engine that did not wait would show the VIP during the held answer.
#[test]
fn becoming_master_adds_the_vips_only_after_the_dataplane_answers() {
    if !crate::testutil::require_root(
        "becoming_master_adds_the_vips_only_after_the_dataplane_answers",
    ) {
        return;
    }
    std::thread::spawn(|| {
        crate::testutil::private_netns();
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        ip(&["link", "add", "mrq0", "type", "veth", "peer", "name", "mrq1"]);
        ip(&["link", "set", "mrq0", "up"]);
        ip(&["link", "set", "mrq1", "up"]);
        ip(&["addr", "add", "192.0.2.12/24", "dev", "mrq0"]);
        let has_vip = || ip(&["-4", "addr", "show", "dev", "mrq0"]).contains("192.0.2.200/32");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            // Answered after a hold, then dropped unanswered.
            for answer in [true, false] {
                let mut inst = instance("VI_1", 51, &["192.0.2.200"]);
                inst.interface = "mrq0".into();
                inst.advert_int = Duration::from_millis(100);
                let (tx, mut rx) = mpsc::unbounded_channel();
                let hooks = Hooks { before_vips: Some(tx), ..Hooks::default() };
                let engine = VrrpEngine::start(&config(vec![inst]), hooks).await.unwrap();
                let request = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                    .await
                    .expect("a MasterRequest within 5 s")
                    .expect("the engine keeps its sender");
                assert_eq!(
                    (request.change.instance.as_str(), request.change.to),
                    ("VI_1", State::Master)
                );
                let asked = Instant::now();
                if answer {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    assert!(!has_vip(), "the VIP was added before the dataplane answered");
                    request.done.send(()).unwrap();
                } else {
                    drop(request);
                }
                let mut added = false;
                while !added && asked.elapsed() < Duration::from_secs(2) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    added = has_vip();
                }
                assert!(added, "answered {answer}: the VIP was not added within 2 s");
                engine.stop().await;
                assert!(!has_vip(), "stopping removes the VIP");
            }
        });
    })
    .join()
    .unwrap();
}

/// Only a message long enough to carry a VRID is an advert, ours or another router's.
#[test]
fn messages_are_routed_by_vrid() {
    let ours = |vrid: u8| vrid == 51;
    let cases: [(&str, &[u8], Route); 5] = [
        ("empty", &[], Route::Malformed),
        ("version byte only", &[0x31], Route::Malformed),
        ("truncated, our VRID: the instance rejects it", &[0x31, 51], Route::Instance(51)),
        ("another VRID", &[0x31, 52, 100, 1, 0, 100, 0, 0], Route::Foreign),
        ("our VRID", &[0x31, 51, 100, 1, 0, 100, 0, 0], Route::Instance(51)),
    ];
    for (name, payload, want) in cases {
        assert_eq!(route(payload, ours), want, "{name}");
    }
}

#[test]
fn rebind_follows_the_interface() {
    use Rebind::{Close, Keep, Open};
    let (a, b, c) = (
        LinkId { index: 4, generation: 0 },
        LinkId { index: 9, generation: 1 },
        LinkId { index: 4, generation: 1 },
    );
    // (bound to, interface now, what to do)
    let cases = [
        (Some(a), Some(a), Keep),    // unchanged
        (Some(a), None, Close),      // deleted
        (None, None, Keep),          // still missing
        (None, Some(b), Open(b)),    // created again (or a failed open retried)
        (Some(a), Some(b), Open(b)), // deleted and created again between two dumps
        (Some(a), Some(c), Open(c)), // ... and given the same index again
    ];
    for (bound, now, want) in cases {
        assert_eq!(rebind(bound, now), want, "bound {bound:?}, now {now:?}");
    }
}

#[test]
fn rate_limit_once_per_period_per_reason() {
    let mut rl = RateLimit::new(Duration::from_secs(10));
    let t0 = Instant::now();
    assert_eq!(rl.allow("bad_ttl", t0), Some(0));
    assert_eq!(rl.allow("bad_ttl", t0 + Duration::from_secs(1)), None);
    assert_eq!(rl.allow("bad_ttl", t0 + Duration::from_secs(9)), None);
    assert_eq!(rl.allow("auth_failed", t0 + Duration::from_secs(9)), Some(0));
    assert_eq!(rl.allow("bad_ttl", t0 + Duration::from_secs(10)), Some(2));
    assert_eq!(rl.allow("bad_ttl", t0 + Duration::from_secs(11)), None);
}

/// Drains what a member was told so far.
fn told(rx: &mut mpsc::UnboundedReceiver<Cmd>) -> Vec<State> {
    let mut out = Vec::new();
    while let Ok(cmd) = rx.try_recv() {
        match cmd {
            Cmd::SyncGroup(s) => out.push(s),
            Cmd::Shutdown => panic!("a group never shuts members down"),
        }
    }
    out
}

#[tokio::test]
async fn sync_group_moves_members_together_without_echoes_or_deadlocks() {
    let tmp = crate::testutil::scratch_dir("lb-vrrp-group-");
    let dir = tmp.path();
    let out = dir.join("notified");
    let _ = std::fs::remove_file(&out);
    let script = |w: &str| Some(format!("echo {w} >> {}", out.display()));
    let group = VrrpSyncGroup {
        name: "G".into(),
        group: vec!["A".into(), "B".into(), "C".into()],
        notify_master: script("master"),
        notify_backup: script("backup"),
        notify_fault: script("fault"),
        location: Location::default(),
    };
    let (mut txs, mut rxs) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (tx, rx) = mpsc::unbounded_channel();
        txs.push(tx);
        rxs.push(rx);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run_group(group, txs, rx, Duration::from_secs(5)));
    let settle = || tokio::time::sleep(Duration::from_millis(50));
    let send = |pos, state, own_fault, from_sync| {
        tx.send(MemberChange { pos, state, own_fault, from_sync }).unwrap();
    };
    use State::{Backup, Fault, Master};

    // A starts with its tracked interface down; B and C start (B already told FAULT).
    send(0, Fault, true, false);
    send(1, Fault, false, false);
    send(2, Backup, false, false);
    settle().await;
    assert_eq!(told(&mut rxs[1]), [Fault]);
    assert_eq!(told(&mut rxs[2]), [Fault, Fault], "A's fault, then its own BACKUP refused");
    send(2, Fault, false, true);
    // A's link comes up: everyone is released.
    send(0, Backup, false, false);
    settle().await;
    assert_eq!(told(&mut rxs[1]), [Backup]);
    assert_eq!(told(&mut rxs[2]), [Backup]);
    assert!(told(&mut rxs[0]).is_empty());
    send(1, Backup, false, true);
    send(2, Backup, false, true);
    // B's timer fires: the others follow; their sync-caused MASTER is not echoed.
    send(1, Master, false, false);
    settle().await;
    assert_eq!(told(&mut rxs[0]), [Master]);
    assert_eq!(told(&mut rxs[2]), [Master]);
    send(0, Master, false, true);
    send(2, Master, false, true);
    settle().await;
    assert!(told(&mut rxs[1]).is_empty());
    // C's script fails while it is MASTER: all go FAULT.
    send(2, Fault, true, false);
    settle().await;
    assert_eq!(told(&mut rxs[0]), [Fault]);
    assert_eq!(told(&mut rxs[1]), [Fault]);
    send(0, Fault, false, true);
    send(1, Fault, false, true);
    // A's own tracking fails too (it was already in FAULT: only its own fault changes), then
    // C recovers: B is released, A stays down on its own and B is sent back.
    send(0, Fault, true, false);
    settle().await;
    assert_eq!(told(&mut rxs[1]), [Fault]);
    assert_eq!(told(&mut rxs[2]), [Fault]);
    send(2, Backup, false, false);
    settle().await;
    assert_eq!(told(&mut rxs[2]), [Fault], "A is still faulty");
    assert!(told(&mut rxs[1]).is_empty());
    send(2, Fault, false, true);
    send(0, Backup, false, false);
    settle().await;
    assert_eq!(told(&mut rxs[1]), [Backup]);
    assert_eq!(told(&mut rxs[2]), [Backup]);
    send(1, Backup, false, true);
    send(2, Backup, false, true);
    settle().await;
    // A shared link fails under A and B (both faulty on their own), then comes back: when
    // the last own fault clears, everyone still held in FAULT is released.
    send(0, Fault, true, false);
    settle().await;
    assert_eq!(told(&mut rxs[1]), [Fault]);
    assert_eq!(told(&mut rxs[2]), [Fault]);
    send(1, Fault, false, true);
    send(2, Fault, false, true);
    send(1, Fault, true, false);
    settle().await;
    assert_eq!(told(&mut rxs[0]), [Fault]);
    assert_eq!(told(&mut rxs[2]), [Fault]);
    send(0, Fault, false, false); // A's link is back, but B still holds the group
    settle().await;
    assert!(told(&mut rxs[0]).is_empty() && told(&mut rxs[2]).is_empty());
    send(1, Fault, false, false); // and B's: A, B and C are all released
    settle().await;
    assert_eq!(told(&mut rxs[0]), [Backup]);
    assert_eq!(told(&mut rxs[1]), [Backup]);
    assert_eq!(told(&mut rxs[2]), [Backup]);
    for pos in 0..3 {
        send(pos, Backup, false, true);
    }
    settle().await;
    drop(tx);
    task.await.unwrap();
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        ["fault", "backup", "master", "fault", "backup", "fault", "backup"]
    );
}
