//! Forged and foreign adverts against a running MASTER (no keepalived needed): a raw
//! `AF_PACKET` socket in the `k` namespace sends, on the lab's bridge, what a neighbouring
//! cluster reusing our VRID or an attacker would. The instance must stay MASTER, count each
//! advert by reason (our own adverts: not at all), and answer a flood of lower priorities at
//! most once per advert interval.
//!
//! Each case is followed by a marker, a valid lower-priority advert: the receive path keeps the
//! order, so once the marker is counted every frame before it has been handled. The IPv4
//! `InDelivers` counter of the director's namespace proves the frames reached its stack (a frame
//! the kernel dropped would make any "not counted" vacuous).

use std::collections::BTreeMap;

use super::*;
use crate::vrrp::{
    announce::PacketSocket,
    packet::{Advert, Kind, MULTICAST_V4},
    tshark_oracle,
};

const ADVERT: Duration = Duration::from_millis(100);

fn v4(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A VRRPv3 advert for VRID 51 (the instance's) to the multicast group, as an Ethernet frame.
fn advert(src: &str, priority: u8, addresses: Vec<IpAddr>) -> Vec<u8> {
    let (src, dst) = (v4(src), IpAddr::V4(MULTICAST_V4));
    let adv = Advert { vrid: 51, priority, addresses, kind: Kind::V3 { max_advert_int_cs: 10 } };
    tshark_oracle::frame(src, dst, &adv.encode(src, dst).unwrap())
}

/// Sends `frames` from the `k` namespace's eth0; returns how long that took.
fn forge(lab: &Lab, frames: Vec<Vec<u8>>) -> Duration {
    let ns = lab.name("k");
    std::thread::spawn(move || {
        enter_netns(&ns);
        let sock = PacketSocket::bind(crate::net::iface::index("eth0").unwrap()).unwrap();
        let start = Instant::now();
        for f in &frames {
            sock.send(f).unwrap();
        }
        start.elapsed()
    })
    .join()
    .unwrap()
}

/// The director namespace's IPv4 `InDelivers` (packets handed to a protocol or raw socket).
fn ip_in_delivers(lab: &Lab) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.name("l"), "cat", "/proc/net/snmp"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
    let at = names.split_whitespace().position(|n| n == "InDelivers").unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// Every counter except `adverts_sent` (which the timer moves), flattened.
fn counters(lb: &EngineHost) -> BTreeMap<String, u64> {
    let st = lb.status.borrow();
    let c = &st.instances[0].counters;
    let mut m = BTreeMap::from([
        ("adverts_received".to_owned(), c.adverts_received),
        ("priority_zero_received".to_owned(), c.priority_zero_received),
        ("queue_full".to_owned(), c.queue_full),
        ("transitions".to_owned(), c.transitions),
        ("malformed".to_owned(), st.malformed),
        ("foreign_adverts".to_owned(), st.foreign_adverts),
    ]);
    m.extend(c.rejected.iter().map(|(k, v)| (format!("rejected.{k}"), *v)));
    m.extend(c.ignored.iter().map(|(k, v)| (format!("ignored.{k}"), *v)));
    m
}

/// What changed between two snapshots.
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect()
}

#[test]
fn forged_adverts_leave_the_master_in_place() {
    if !crate::testutil::require_root("forged VRRP adverts") {
        return;
    }
    init_logs();
    let lab = Lab::new();
    // The "own address" case arrives with our source: accept it into the stack, so that it is
    // the engine that drops it.
    for conf in ["all", "eth0"] {
        let key = format!("net.ipv4.conf.{conf}.accept_local=1");
        sh(&["ip", "netns", "exec", &lab.name("l"), "sysctl", "-qw", &key]);
    }
    let mut lb = EngineHost::start(&lab, lb_instance(&lab, 3, 100, ADVERT, VIP_V4));
    lb.wait_state(State::Master, Duration::from_secs(5));
    let vip = v4(VIP_V4);
    let marker = || advert(KA_V4, 50, vec![vip]);
    let full: Vec<IpAddr> = (0..=254).map(|i| IpAddr::from([198, 51, 100, i])).collect();
    let zero_byte = tshark_oracle::frame(v4(KA_V4), IpAddr::V4(MULTICAST_V4), &[]);

    struct Case {
        name: &'static str,
        frames: Vec<Vec<u8>>,
        /// What they add to the counters, besides the marker.
        adds: &'static [(&'static str, u64)],
    }
    let other = v4("192.0.2.99");
    let cases = [
        Case {
            name: "another VIP, higher priority",
            frames: vec![advert(KA_V4, 200, vec![other])],
            adds: &[("rejected.address_list_mismatch", 1)],
        },
        Case {
            name: "count 0, higher priority",
            frames: vec![advert(KA_V4, 200, vec![])],
            adds: &[("rejected.address_count_mismatch", 1)],
        },
        Case {
            name: "255 addresses, higher priority",
            frames: vec![advert(KA_V4, 200, full)],
            adds: &[("rejected.address_count_mismatch", 1)],
        },
        Case {
            name: "our VIP and another, priority 0",
            frames: vec![advert(KA_V4, 0, vec![vip, other])],
            adds: &[("rejected.address_count_mismatch", 1)],
        },
        Case { name: "0-byte payload", frames: vec![zero_byte], adds: &[("malformed", 1)] },
        Case {
            name: "from our own address, higher priority",
            frames: vec![advert(LB_V4, 255, vec![vip])],
            adds: &[("ignored.own_address", 1)],
        },
    ];
    for Case { name, frames, adds } in cases {
        let before = counters(&lb);
        let delivered = ip_in_delivers(&lab);
        let n = frames.len() as u64;
        let mut all = frames;
        all.push(marker());
        forge(&lab, all);
        let markers = before.get("ignored.lower_priority").copied().unwrap_or(0) + 1;
        wait_for(Duration::from_secs(3), || {
            (counters(&lb).get("ignored.lower_priority") >= Some(&markers)).then_some(())
        })
        .unwrap_or_else(|| panic!("{name}: the marker was not counted: {:#?}", lb.instance()));
        let mut want: BTreeMap<String, u64> =
            adds.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        *want.entry("adverts_received".to_owned()).or_default() += 1;
        *want.entry("ignored.lower_priority".to_owned()).or_default() += 1;
        assert_eq!(delta(&before, &counters(&lb)), want, "{name}");
        assert!(ip_in_delivers(&lab) - delivered > n, "{name}: frames did not reach the stack");
        assert_eq!(lb.state(), State::Master, "{name}");
    }

    // A flood of lower priorities: answered at most once per advert interval.
    let sent_before = lb.instance().counters.adverts_sent;
    let before = counters(&lb);
    let flood = 3000;
    let start = Instant::now();
    let took = forge(&lab, (0..flood).map(|_| marker()).collect());
    let handled = || {
        let c = counters(&lb);
        let d = delta(&before, &c);
        d.get("ignored.lower_priority").copied().unwrap_or(0)
            + d.get("queue_full").copied().unwrap_or(0)
    };
    // Until nothing more arrives for 300 ms (the kernel may drop some of the flood).
    let mut last = (handled(), Instant::now());
    while last.1.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(20));
        let now = handled();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let window = start.elapsed();
    let st = lb.instance();
    let sent = st.counters.adverts_sent - sent_before;
    let handled = delta(&before, &counters(&lb)).get("ignored.lower_priority").copied();
    let handled = handled.unwrap_or(0);
    // One periodic advert and at most one answer per interval, plus the partial intervals.
    let intervals = window.as_micros().div_ceil(ADVERT.as_micros()) as u64;
    let bound = 2 * intervals + 2;
    report(&format!(
        "flood: {flood} adverts sent in {} ({:.0}/s), {handled} handled by the instance, \
         {sent} adverts sent by it in {} (bound {bound})",
        ms(took),
        flood as f64 / took.as_secs_f64(),
        ms(window),
    ));
    assert!(handled >= 4 * bound, "the flood was too thin to tell ({handled} handled)");
    assert!(sent <= bound, "{sent} adverts sent under the flood, bound {bound}: {st:#?}");
    assert_eq!(st.state, State::Master);
    assert_eq!(delta(&before, &counters(&lb)).get("transitions"), None);

    // Control: the same forger with our address list and a higher priority takes over, so the
    // frames above were well-formed adverts that the address list alone kept out.
    forge(&lab, vec![advert(KA_V4, 200, vec![vip])]);
    lb.wait_state(State::Backup, Duration::from_secs(2));
    lb.stop();
}
