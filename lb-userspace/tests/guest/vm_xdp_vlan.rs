//! XDP on a VLAN sub-interface (in the `cargo xtask vm test` guest, whose kernel has 8021q): a
//! VIP on `lbvbr.7`, VLAN 7 over the lab's bridge, served by `lb run --dataplane xdp` (a VLAN
//! device has no native XDP: generic mode), with the client and the real on VLAN 7 too. Another
//! service on the bridge itself puts the program on the parent as well: the VLAN's frames pass
//! it (not its service traffic) and are forwarded by the program on the VLAN device, while
//! untagged frames to the parent's VIP are forwarded by the parent's.
//!
//! What only BPF_PROG_TEST_RUN shows (fixtures.rs): a frame that reaches the program still tagged
//! is passed (`pass_vlan`). Here the tag never does: the bridge port moves it out of the frame
//! into the packet's metadata before the bridge device sees it.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use super::{
    vm_agent::{GuestAgent, wait_until},
    vm_net::{BRIDGE, CLIENT_NS, Lab, RealMode, VIP, ip, ip_batch},
};

const VLAN_ID: u16 = 7;
/// The VLAN device on the bridge.
const VLAN_DEV: &str = "lbvbr.7";
const VLAN_DIRECTOR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const VLAN_VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
const VLAN_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 150);
const PORT: u16 = 80;
const REQUESTS: usize = 20;

/// VLAN 7 on the director's bridge, the client's and the real's `eth0`. The lab deletes them
/// with the bridge and the namespaces.
fn add_vlan(lab: &Lab) {
    ip_batch(
        None,
        &format!(
            "link add link {BRIDGE} name {VLAN_DEV} type vlan id {VLAN_ID}\n\
             link set {VLAN_DEV} up\naddr add {VLAN_DIRECTOR}/24 dev {VLAN_DEV}\n\
             addr add {VLAN_VIP}/32 dev {VLAN_DEV}\n"
        ),
    );
    ip_batch(
        Some(CLIENT_NS),
        &format!(
            "link add link eth0 name eth0.{VLAN_ID} type vlan id {VLAN_ID}\n\
             link set eth0.{VLAN_ID} up\naddr add {VLAN_CLIENT}/24 dev eth0.{VLAN_ID}\n"
        ),
    );
    for (i, real) in lab.reals.iter().enumerate() {
        let addr = Ipv4Addr::new(198, 51, 100, 11 + i as u8);
        ip_batch(
            Some(&real.ns),
            &format!(
                "link add link eth0 name eth0.{VLAN_ID} type vlan id {VLAN_ID}\n\
                 link set eth0.{VLAN_ID} up\naddr add {addr}/24 dev eth0.{VLAN_ID}\n\
                 addr add {VLAN_VIP}/32 dev lo\n"
            ),
        );
    }
}

fn config(lab: &Lab) -> String {
    let mut toml = String::from("[dataplane]\nflow_table_size = 4096\nmax_services = 4\n\n");
    for (vip, interface, first) in [(VLAN_VIP, VLAN_DEV, 11u8), (VIP, BRIDGE, 0)] {
        toml.push_str(&format!(
            "[[virtual_server]]\nvip = \"{vip}\"\nport = {PORT}\nprotocol = \"tcp\"\n\
             interface = \"{interface}\"\n"
        ));
        for (i, real) in lab.reals.iter().enumerate() {
            let addr =
                if first == 0 { real.addr } else { Ipv4Addr::new(198, 51, 100, first + i as u8) };
            toml.push_str(&format!(
                "[[virtual_server.real_server]]\naddress = \"{addr}\"\nport = {PORT}\n"
            ));
        }
        toml.push('\n');
    }
    toml
}

#[test]
#[ignore = "needs the guest kernel's 8021q: run by `cargo xtask vm test`"]
fn vm_xdp_serves_a_vip_on_a_vlan_sub_interface() {
    let mut lab = Lab::new(1, RealMode::Direct);
    add_vlan(&lab);
    lab.serve(PORT);
    let agent =
        GuestAgent::start("xdp-vlan", &config(&lab), &["--dataplane", "xdp", "--xdp-mode", "auto"]);
    assert!(
        wait_until(Duration::from_secs(30), || agent.all_up(2, None)),
        "the reals did not come up; the agent's log:\n{}",
        agent.log()
    );
    for dev in [VLAN_DEV, BRIDGE] {
        let link = ip(None, &["link", "show", "dev", dev]);
        assert!(link.contains("xdpgeneric"), "no generic XDP on {dev}: {link}\n{}", agent.log());
    }

    // Without the program the director would answer itself (the VIPs are its addresses) and
    // refuse: every answer from the real is a forwarded connection.
    let tally = lab.requests(SocketAddr::new(VLAN_VIP.into(), PORT), REQUESTS);
    assert!(tally.errors.is_empty(), "requests over VLAN {VLAN_ID}: {:?}", tally.errors);
    assert_eq!(tally.per_real.get("r1"), Some(&REQUESTS), "{tally:?}");
    let on_vlan = agent.packets(Some(VLAN_VIP));
    assert!(on_vlan >= REQUESTS as u64, "the VLAN device's program forwarded {on_vlan} packets");

    let tally = lab.requests(SocketAddr::new(VIP.into(), PORT), REQUESTS);
    assert!(tally.errors.is_empty(), "untagged requests: {:?}", tally.errors);
    assert_eq!(tally.per_real.get("r1"), Some(&REQUESTS), "{tally:?}");
    assert!(agent.packets(Some(VIP)) >= REQUESTS as u64, "the bridge's program forwarded too few");
    assert_eq!(agent.packets(Some(VLAN_VIP)), on_vlan, "untagged traffic went to the VLAN's VIP");
}
