//! VRRP drives the IPVS dataplane as it drives XDP (in the `cargo xtask vm` guest): a service
//! whose VIP belongs to a vrrp_instance is in IPVS only while the instance is MASTER here. The
//! peer is a second `lb run` in the lab's client namespace with a higher priority.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use super::{
    vm_agent::{GuestAgent, ipvs_rules, wait_until},
    vm_net::{BRIDGE, CLIENT_NS, Lab, RealMode, ip},
};

/// The VRRP-owned VIP (the lab's own VIP stays on the bridge and is not used here).
const VRRP_VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 101);

fn instance(interface: &str, priority: u8) -> String {
    format!(
        "[[vrrp_instance]]\nname = \"VI_1\"\nstate = \"BACKUP\"\ninterface = \"{interface}\"\n\
         virtual_router_id = 61\npriority = {priority}\nadvert_int = 0.1\nversion = 3\n\
         virtual_ipaddress = [\"{VRRP_VIP}/32\"]\n"
    )
}

fn service_installed() -> bool {
    ipvs_rules().iter().any(|l| l.starts_with(&format!("TCP {VRRP_VIP}:80")))
}

fn vip_here() -> bool {
    ip(None, &["-4", "addr", "show", "dev", BRIDGE]).contains(&format!("{VRRP_VIP}/32"))
}

#[test]
#[ignore = "needs kernel IPVS and the guest's lb binary: `cargo xtask vm test` runs it in a VM"]
fn vm_vrrp_state_installs_and_withdraws_ipvs_services() {
    let mut lab = Lab::new(2, RealMode::Direct);
    for real in &lab.reals {
        ip(Some(&real.ns), &["addr", "add", &format!("{VRRP_VIP}/32"), "dev", "lo"]);
    }
    lab.serve(80);
    let mut config = format!(
        "[[virtual_server]]\nvip = \"{VRRP_VIP}\"\nport = 80\ninterface = \"{BRIDGE}\"\n\
         lb_algo = \"wrr\"\n"
    );
    for real in &lab.reals {
        config.push_str(&format!("[[virtual_server.real_server]]\naddress = \"{}\"\n", real.addr));
    }
    config.push_str(&instance(BRIDGE, 100));
    let agent = GuestAgent::start("vrrp", &config, &["--dataplane", "ipvs"]);
    let fail = |what: &str| -> ! {
        panic!("{what}\nipvsadm:\n{:#?}\nlb run log:\n{}", ipvs_rules(), agent.log())
    };

    // Alone on the link: MASTER after Master_Down, then the service and the VIP are up.
    if !wait_until(Duration::from_secs(10), || service_installed() && vip_here()) {
        fail("no IPVS service or VIP as MASTER");
    }
    lab.requests(SocketAddr::new(VRRP_VIP.into(), 80), 40)
        .assert_split(&[("r1", 1), ("r2", 1)], 0.2);

    // A higher-priority peer takes over: the service leaves IPVS with the VIP.
    // A second `lb run` in the client namespace: a VRRP peer with no services.
    let mut peer = GuestAgent::start_in(
        Some(CLIENT_NS),
        "vrrp-peer",
        &instance("eth0", 200),
        &["--dataplane", "ipvs"],
    );
    if !wait_until(Duration::from_secs(10), || !service_installed() && !vip_here()) {
        panic!(
            "still in IPVS as BACKUP\nipvsadm:\n{:#?}\nlb run log:\n{}\npeer log:\n{}",
            ipvs_rules(),
            agent.log(),
            peer.log()
        );
    }
    let status = agent.backends_json();
    assert_eq!(status["services"][0]["active"], false, "{status:#}");

    // The peer dies: MASTER again, the service is back and forwards.
    peer.kill();
    if !wait_until(Duration::from_secs(10), || service_installed() && vip_here()) {
        fail("not back in IPVS after the peer died");
    }
    ip(Some(CLIENT_NS), &["addr", "flush", "dev", "eth0", "to", &format!("{VRRP_VIP}/32")]);
    lab.requests(SocketAddr::new(VRRP_VIP.into(), 80), 20)
        .assert_split(&[("r1", 1), ("r2", 1)], 0.3);
    drop(agent);
    assert!(!service_installed(), "stopping the agent removes its service");
}
