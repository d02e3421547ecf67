//! [`Event::Resume`] on a fake clock: a restarted agent resumes the mastership its previous
//! process held, quietly, and steps down exactly where a fresh start would not have won.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::super::*;

const OURS: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11));

fn peer(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

fn advert(from: u8, priority: u8) -> Event {
    Event::AdvertReceived {
        from: peer(from),
        priority,
        max_advert_interval: 100,
        addresses: vec![],
    }
}

/// A v3 instance at 1 s with `priority`, resumed at t0.
fn resumed(priority: u8, f: impl FnOnce(&mut Settings)) -> (Instance, Instant, Vec<Action>) {
    let mut s = Settings::new(51, Version::V3, priority, OURS);
    f(&mut s);
    let mut inst = Instance::new(s).expect("settings");
    let t0 = Instant::now();
    let actions = inst.handle(Event::Resume, t0);
    (inst, t0, actions)
}

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// One advert interval plus Skew_Time at priority 150, 1 s: 1 s + 106/256 s.
const QUIET_150: u64 = 1_000_000 + 414_062;

#[test]
fn resume_is_master_at_once_without_advert_or_gratuitous_arp() {
    let (inst, t0, actions) = resumed(150, |_| {});
    assert_eq!(
        actions,
        vec![Action::BecomeMaster, Action::Notify { state: State::Master }],
        "VIPs kept and the dataplane on, nothing on the wire yet"
    );
    assert_eq!(inst.state(), State::Master);
    assert_eq!(inst.next_deadline(), Some(t0 + us(QUIET_150)), "first advert after the quiet time");
}

#[test]
fn a_resumed_master_that_hears_nobody_advertises_and_goes_on() {
    let (mut inst, t0, _) = resumed(150, |_| {});
    let t = t0 + us(QUIET_150);
    assert_eq!(inst.handle(Event::Timer, t), vec![Action::SendAdvert { priority: 150 }]);
    assert_eq!(inst.state(), State::Master);
    assert_eq!(inst.next_deadline(), Some(t + Duration::from_secs(1)));
    // From now on an ordinary master: a lower-priority advert is answered, not obeyed.
    let later = t + us(10);
    assert_eq!(
        inst.handle(advert(12, 100), later),
        vec![
            Action::AdvertIgnored { reason: IgnoreReason::LowerPriority },
            Action::SendAdvert { priority: 150 }
        ]
    );
    assert_eq!(inst.state(), State::Master);
}

#[test]
fn a_master_that_took_over_meanwhile_and_outranks_us_keeps_the_vips() {
    let (mut inst, t0, _) = resumed(100, |_| {});
    let t = t0 + us(300_000);
    assert_eq!(
        inst.handle(advert(12, 150), t),
        vec![Action::StopSending, Action::BecomeBackup, Action::Notify { state: State::Backup }]
    );
    assert_eq!(inst.state(), State::Backup);
    assert_eq!(inst.master().map(|m| m.address), Some(peer(12)));
    let mdi = inst.master_down_interval();
    assert_eq!(inst.next_deadline(), Some(t + mdi), "listening to the new master");
}

#[test]
fn nopreempt_protects_a_lower_priority_master_that_took_over_meanwhile() {
    let (mut inst, t0, _) = resumed(150, |s| s.preempt = false);
    let t = t0 + us(500_000);
    assert_eq!(
        inst.handle(advert(12, 100), t),
        vec![Action::StopSending, Action::BecomeBackup, Action::Notify { state: State::Backup }]
    );
    assert_eq!(inst.master().map(|m| m.priority), Some(100), "it stays master");
    // Its next advert keeps us backup: no preemption, ever.
    let t2 = t + Duration::from_secs(1);
    assert_eq!(inst.handle(advert(12, 100), t2), vec![]);
    assert_eq!(inst.state(), State::Backup);
}

#[test]
fn with_preempt_a_lower_priority_master_is_preempted_as_after_a_fresh_start() {
    let (mut inst, t0, _) = resumed(150, |_| {});
    let t = t0 + us(500_000);
    assert_eq!(
        inst.handle(advert(12, 100), t),
        vec![
            Action::StopSending,
            Action::BecomeBackup,
            Action::Notify { state: State::Backup },
            Action::AdvertIgnored { reason: IgnoreReason::LowerPriority }
        ]
    );
    // Master_Down_Interval later we take over the ordinary way: advert, VIPs, GARPs.
    let down = t + inst.master_down_interval();
    assert_eq!(inst.next_deadline(), Some(down));
    let actions = inst.handle(Event::Timer, down);
    assert_eq!(inst.state(), State::Master);
    assert_eq!(actions.first(), Some(&Action::SendAdvert { priority: 150 }));
    assert!(actions.iter().any(|a| matches!(a, Action::ScheduleGarp { .. })), "{actions:?}");
}

#[test]
fn a_leaving_master_heard_while_resuming_is_answered_at_once() {
    let (mut inst, t0, _) = resumed(150, |_| {});
    let t = t0 + us(200_000);
    assert_eq!(inst.handle(advert(12, 0), t), vec![Action::SendAdvert { priority: 150 }]);
    assert_eq!(inst.state(), State::Master);
    assert_eq!(inst.next_deadline(), Some(t + Duration::from_secs(1)));
}

#[test]
fn the_owner_and_a_faulty_instance_start_as_usual() {
    let (owner, _, actions) = resumed(OWNER_PRIORITY, |_| {});
    assert_eq!(owner.state(), State::Master);
    assert_eq!(actions.first(), Some(&Action::SendAdvert { priority: OWNER_PRIORITY }));

    let mut inst = Instance::new(Settings::new(51, Version::V3, 150, OURS)).expect("settings");
    let t0 = Instant::now();
    inst.handle(Event::TrackChanged { fault: true, priority_delta: 0 }, t0);
    assert_eq!(
        inst.handle(Event::Resume, t0),
        vec![Action::BecomeFault, Action::Notify { state: State::Fault }]
    );
    assert_eq!(inst.state(), State::Fault);
}

#[test]
fn resume_is_ignored_once_running_and_a_fault_ends_it() {
    let (mut inst, t0, _) = resumed(150, |_| {});
    assert_eq!(inst.handle(Event::Resume, t0), vec![]);
    assert_eq!(inst.handle(Event::Startup, t0), vec![]);
    let t = t0 + us(100);
    assert_eq!(
        inst.handle(Event::TrackChanged { fault: true, priority_delta: 0 }, t),
        vec![
            Action::SendAdvertPriorityZero,
            Action::StopSending,
            Action::BecomeFault,
            Action::Notify { state: State::Fault }
        ]
    );
    // Back from FAULT it is a fresh start (BACKUP, Master_Down_Interval), not a resume.
    let actions = inst.handle(Event::TrackChanged { fault: false, priority_delta: 0 }, t);
    assert_eq!(actions, vec![Action::BecomeBackup, Action::Notify { state: State::Backup }]);
}
