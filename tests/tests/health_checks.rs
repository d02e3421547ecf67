//! Health checks against real servers in network namespaces: a real whose server stops is taken
//! out within its detection time and comes back when it returns; HTTP checks with a wrong status
//! or digest mark a real down; a real's new MAC reaches the dataplane.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use lb_tests::{DrTopology, LbAgent, count_http, require_root, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

fn state_of(agent: &LbAgent, last: u8) -> String {
    agent
        .backends()
        .ok()
        .and_then(|v| {
            v["services"][0]["backends"].as_array()?.iter().find_map(|b| {
                (b["address"] == format!("192.0.2.{last}"))
                    .then(|| b["state"].as_str().unwrap_or_default().to_owned())
            })
        })
        .unwrap_or_default()
}

fn start(dr: &DrTopology, body: &str) -> (LbAgent, tempfile::TempDir) {
    dr.start_agent(body, &[]).expect("lb run")
}

#[test]
fn tcp_check_takes_a_dead_real_out_and_puts_it_back() {
    if !require_root("tcp health check") {
        return;
    }
    let mut dr = DrTopology::build("hc", 3, VIP, testpeer()).expect("topology");
    let mut conf = format!(
        "[[virtual_server]]\nvip = \"{VIP}\"\nport = 80\ninterface = \"eth0\"\ndelay_loop = 0.5\n"
    );
    for i in 0..3 {
        conf.push_str(&format!(
            "[[virtual_server.real_server]]\naddress = \"192.0.2.{}\"\n\
             [virtual_server.real_server.tcp_check]\nconnect_timeout = 0.5\nretry = 1\ndelay_before_retry = 0.2\n",
            11 + i
        ));
    }
    let (agent, _dir) = start(&dr, &conf);
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("all up");

    // delay_loop + retry × delay_before_retry + connect_timeouts, plus slack for scheduling.
    let detection = Duration::from_secs_f64(0.5 + 0.2 + 2.0 * 0.5);
    dr.stop_peer(0).expect("stop rs1's server");
    let stopped = Instant::now();
    assert!(
        wait_until(detection + Duration::from_secs(2), || state_of(&agent, 11) == "down"),
        "rs1 not down within {detection:?} + 2 s: {}",
        state_of(&agent, 11)
    );
    eprintln!("rs1 down after {:?}", stopped.elapsed());
    let counts = count_http(&dr.client.ns, &format!("http://{VIP}/"), 30);
    assert_eq!(counts.get("(failed)"), None, "no request may fail while rs1 is down: {counts:?}");
    assert_eq!(counts.get("rs1"), None, "{counts:?}");

    dr.start_peer(0).expect("restart rs1's server");
    let restarted = Instant::now();
    assert!(
        wait_until(Duration::from_secs(3), || state_of(&agent, 11) == "up"),
        "rs1 not back up: {}",
        state_of(&agent, 11)
    );
    eprintln!("rs1 up after {:?}", restarted.elapsed());
    let counts = count_http(&dr.client.ns, &format!("http://{VIP}/"), 60);
    assert!(counts.get("rs1").copied().unwrap_or(0) > 0, "rs1 serves again: {counts:?}");
    // The agent measured how long each change took to reach the maps.
    let log = agent.stderr();
    let applies: Vec<&str> =
        log.lines().filter(|l| l.contains("health change in the dataplane")).collect();
    assert!(applies.len() >= 2, "down and up applied: {log}");
    eprintln!("{}", applies.join("\n"));
}

fn md5_of(text: &str) -> String {
    let out = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().expect("stdin").write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .expect("md5sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_owned()
}

#[test]
fn http_get_with_wrong_status_or_digest_marks_down() {
    if !require_root("http health check") {
        return;
    }
    let dr = DrTopology::build("hg", 3, VIP, testpeer()).expect("topology");
    let good = md5_of("rs1\n");
    let conf = format!(
        "[[virtual_server]]\nvip = \"{VIP}\"\nport = 80\ninterface = \"eth0\"\ndelay_loop = 0.5\n\
         [[virtual_server.real_server]]\naddress = \"192.0.2.11\"\n\
         [virtual_server.real_server.http_get]\nconnect_timeout = 1\nretry = 0\nurl = [{{ path = \"/\", status_code = 200, digest = \"{good}\" }}]\n\
         [[virtual_server.real_server]]\naddress = \"192.0.2.12\"\n\
         [virtual_server.real_server.http_get]\nconnect_timeout = 1\nretry = 0\nurl = [{{ path = \"/\", status_code = 404 }}]\n\
         [[virtual_server.real_server]]\naddress = \"192.0.2.13\"\n\
         [virtual_server.real_server.http_get]\nconnect_timeout = 1\nretry = 0\nurl = [{{ path = \"/\", digest = \"{good}\" }}]\n"
    );
    let (agent, _dir) = start(&dr, &conf);
    let settled = wait_until(Duration::from_secs(10), || {
        state_of(&agent, 11) == "up"
            && state_of(&agent, 12) == "down"
            && state_of(&agent, 13) == "down"
    });
    let v = agent.backends().expect("backends");
    assert!(settled, "expected up/down/down: {v}\nagent log:\n{}", agent.stderr());
    let health = |i: usize| {
        v["services"][0]["backends"][i]["health"].as_str().unwrap_or_default().to_owned()
    };
    assert!(health(1).contains("status 200, expected 404"), "{}", health(1));
    assert!(health(2).contains("digest"), "{}", health(2));
    let counts = count_http(&dr.client.ns, &format!("http://{VIP}/"), 20);
    assert_eq!(counts.get("rs1"), Some(&20), "only the healthy real serves: {counts:?}");
}

#[test]
fn a_real_that_changes_nic_gets_its_new_mac() {
    if !require_root("neighbour change") {
        return;
    }
    let dr = DrTopology::build("nb", 2, VIP, testpeer()).expect("topology");
    let conf = format!(
        "[[virtual_server]]\nvip = \"{VIP}\"\nport = 80\ninterface = \"eth0\"\n\
         [[virtual_server.real_server]]\naddress = \"192.0.2.11\"\n\
         [[virtual_server.real_server]]\naddress = \"192.0.2.12\"\n"
    );
    let (agent, _dir) = start(&dr, &conf);
    agent.wait_all_backends("up", Duration::from_secs(10)).expect("up");
    let mac_of = |agent: &LbAgent| {
        agent
            .backends()
            .ok()
            .and_then(|v| v["services"][0]["backends"][0]["mac"].as_str().map(str::to_owned))
    };
    assert_eq!(mac_of(&agent).as_deref(), Some(dr.reals[0].mac_string().as_str()));
    // rs1 "moves to another NIC": new MAC; the director's neighbour entry is refreshed (in real
    // life by the real's gratuitous ARP or the entry expiring).
    let new_mac = "02:00:00:00:aa:01";
    dr.reals[0].ns.run_ok(&["ip", "link", "set", "eth0", "address", new_mac]).expect("new MAC");
    dr.director
        .ns
        .run_ok(&["ip", "neigh", "flush", "to", "192.0.2.11", "dev", "eth0"])
        .expect("flush");
    assert!(
        wait_until(Duration::from_secs(10), || mac_of(&agent).as_deref() == Some(new_mac)),
        "new MAC not in the dataplane: {:?}",
        mac_of(&agent)
    );
    agent.wait_all_backends("up", Duration::from_secs(5)).expect("up again");
    let counts = count_http(&dr.client.ns, &format!("http://{VIP}/"), 40);
    assert_eq!(counts.get("(failed)"), None, "{counts:?}");
    assert!(
        counts.get("rs1").copied().unwrap_or(0) > 0,
        "rs1 reachable at its new MAC: {counts:?}"
    );
}
