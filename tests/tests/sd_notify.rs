//! systemd's notify protocol against a fake NOTIFY_SOCKET (a unix datagram socket this test
//! reads): READY=1 with a STATUS once the dataplane is live, WATCHDOG=1 at half of WATCHDOG_USEC,
//! RELOADING=1 with MONOTONIC_USEC then READY=1 on a reload (also a refused one), STOPPING=1.

use std::{
    net::Ipv4Addr,
    os::unix::net::UnixDatagram,
    path::Path,
    time::{Duration, Instant},
};

use lb_tests::{DrTopology, LbAgent, lb_bin, require_root, scratch_dir};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

/// The datagrams that arrive within `window`.
fn read_for(socket: &UnixDatagram, window: Duration) -> Vec<String> {
    let end = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        socket.set_read_timeout(Some(left)).expect("timeout");
        match socket.recv(&mut buf) {
            Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    out
}

/// Reads until a datagram containing `needle` arrives (at most `timeout`); all read so far.
fn read_until(socket: &UnixDatagram, needle: &str, timeout: Duration) -> Vec<String> {
    let end = Instant::now() + timeout;
    let mut out = Vec::new();
    while Instant::now() < end && !out.iter().any(|m: &String| m.contains(needle)) {
        out.extend(read_for(socket, Duration::from_millis(100)));
    }
    out
}

#[test]
fn notifies_ready_watchdog_reload_and_stop() {
    if !require_root("sd_notify") {
        return;
    }
    let dr = DrTopology::build("sn", 1, VIP, testpeer()).expect("topology");
    dr.director.add_addr(&format!("{VIP}/32")).expect("VIP");
    let dir = scratch_dir("lb-sdnotify-").expect("scratch");
    let cfg = dir.path().join("lb.toml");
    std::fs::write(&cfg, DrTopology::fast_tcp_check_config(VIP, 1)).expect("config");
    let notify = dir.path().join("notify");
    let socket = UnixDatagram::bind(&notify).expect("fake NOTIFY_SOCKET");
    let notify_s = notify.to_str().expect("utf-8");
    let env = [("NOTIFY_SOCKET", notify_s), ("WATCHDOG_USEC", "400000")];
    let agent =
        LbAgent::start_with_env(&dr.director.ns, &lb_bin(), &cfg, &["--xdp-mode", "generic"], &env)
            .expect("lb run");

    let got = read_until(&socket, "READY=1", Duration::from_secs(5));
    let ready = got.iter().find(|m| m.contains("READY=1")).unwrap_or_else(|| panic!("{got:?}"));
    assert!(ready.contains("STATUS=serving 1 services, 1 real servers"), "{ready}");

    // Pings every 200 ms: about 5 in a second (at least 3 allowing for a loaded machine).
    let pings =
        read_for(&socket, Duration::from_secs(1)).iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!((3..=7).contains(&pings), "{pings} watchdog pings in 1 s");

    // A reload: RELOADING=1 with the monotonic clock, then READY=1 again.
    agent.signal(libc::SIGHUP).expect("SIGHUP");
    let got = read_until(&socket, "STATUS=reloaded", Duration::from_secs(5));
    let reloading = got.iter().position(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC="));
    let reloaded =
        got.iter().position(|m| m.contains("READY=1") && m.contains("STATUS=reloaded: 1 services"));
    assert!(matches!((reloading, reloaded), (Some(a), Some(b)) if a < b), "{got:?}");
    let usec = got[reloading.unwrap_or_default()]
        .lines()
        .nth(1)
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="));
    assert!(usec.and_then(|u| u.parse::<u64>().ok()).is_some_and(|u| u > 0), "{got:?}");

    // A refused reload ends the reloading state too, saying why.
    std::fs::write(&cfg, "[[virtual_server]]\nvip = \"nonsense\"\n").expect("bad config");
    agent.signal(libc::SIGHUP).expect("SIGHUP");
    let got = read_until(&socket, "STATUS=reload refused", Duration::from_secs(5));
    assert!(
        got.iter().any(|m| m.contains("READY=1") && m.contains("STATUS=reload refused")),
        "{got:?}"
    );

    agent.stop().expect("stop");
    let got = read_until(&socket, "STOPPING=1", Duration::from_secs(2));
    assert!(got.iter().any(|m| m.contains("STOPPING=1")), "{got:?}");
}
