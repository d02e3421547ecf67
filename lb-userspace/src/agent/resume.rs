//! Which VRRP instances an agent that adopted a pinned dataplane resumes as MASTER.
//!
//! Without this, a restarted agent (`--pin-dir`, after a SIGKILL or a SIGQUIT hand-over) would
//! start every instance in BACKUP: its first apply would take the VRRP-owned services out of the
//! adopted dataplane and the engine would remove the VIPs, so forwarding would stop until the
//! election (Master_Down_Interval) made it MASTER again — or the peer took over. Instead, like a
//! router's non-stop forwarding across a control-plane restart, the agent resumes the state the
//! previous process left: an instance was MASTER there when the adopted dataplane was forwarding
//! one of its services (the previous agent kept VRRP-owned services in the maps only while
//! MASTER) and all of its VIPs are still on its interface (the previous engine added them as
//! MASTER and a killed process removes nothing). Those instances keep their services in the
//! first apply and start with [`crate::vrrp::Event::Resume`]: MASTER at once, quiet for one
//! advert interval (plus skew) to hear whether someone else took over meanwhile, then
//! advertising.
//!
//! Split brain: resuming is a claim made without an election. It is safe because the previous
//! process held the mastership until a moment ago, and the resume listens before advertising:
//! a master that took over while the agent was down (the restart outlasted the peer's
//! Master_Down_Interval) is heard within its advert interval and the resumed instance steps down
//! to BACKUP at once, sending no gratuitous ARP, then behaves as a fresh start (it preempts only
//! where the config says so). Until then both directors forward the VIP's flows — with the same
//! Maglev tables, to the same reals — and the kernel of each may answer an ARP request for the
//! VIP for that one interval. An instance with no service on its VIPs, or with a VIP missing,
//! starts in BACKUP as usual. Members of a `vrrp_sync_group` move together: all of them resume,
//! or none.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::{
    config::{Config, VirtualServerKey},
    net::iface,
    vrrp::vip::{self, AddressOps as _},
};

/// The instances to resume, in config order: pure, from the adopted (forwarding) services and
/// the addresses on each instance's interface (`None`: they could not be read).
pub fn choose(
    config: &Config,
    adopted: &[VirtualServerKey],
    addresses: &BTreeMap<String, Option<Vec<IpAddr>>>,
) -> Vec<String> {
    let vrrp = &config.vrrp;
    let vips_here = |name: &str| {
        vrrp.instances.iter().find(|i| i.name == name).is_some_and(|i| {
            let present = addresses.get(&i.interface).and_then(Option::as_ref);
            present.is_some_and(|p| i.virtual_ipaddress.iter().all(|v| p.contains(&v.address)))
        })
    };
    let mut chosen: BTreeSet<&str> = adopted
        .iter()
        .filter_map(|k| vrrp.instance_for(k.vip))
        .map(|i| i.name.as_str())
        .filter(|n| vips_here(n))
        .collect();
    for group in &vrrp.sync_groups {
        if group.group.iter().any(|m| chosen.contains(m.as_str())) {
            let all = group.group.iter().all(|m| vips_here(m));
            for m in &group.group {
                if all {
                    chosen.insert(m.as_str());
                } else {
                    chosen.remove(m.as_str());
                }
            }
        }
    }
    vrrp.instances.iter().map(|i| i.name.clone()).filter(|n| chosen.contains(n.as_str())).collect()
}

/// [`choose`] with the addresses read from the host. Nothing adopted: nothing to resume (and
/// nothing read).
pub async fn instances(
    config: &Config,
    adopted: &[VirtualServerKey],
    netlink: &rtnetlink::Handle,
) -> Vec<String> {
    if adopted.is_empty() || config.vrrp.instances.is_empty() {
        return Vec::new();
    }
    let ops = vip::Netlink::new(netlink.clone());
    let mut addresses = BTreeMap::new();
    for i in &config.vrrp.instances {
        if addresses.contains_key(&i.interface) {
            continue;
        }
        let present = match iface::index(&i.interface) {
            Ok(idx) => ops.list(idx).await.ok().map(|l| l.iter().map(|a| a.address).collect()),
            Err(_) => None,
        };
        addresses.insert(i.interface.clone(), present);
    }
    let chosen = choose(config, adopted, &addresses);
    for i in &config.vrrp.instances {
        if chosen.contains(&i.name) {
            tracing::info!(instance = %i.name, interface = %i.interface,
                "resuming VRRP mastership: the adopted dataplane forwards its services and its VIPs are still here");
        } else if adopted
            .iter()
            .any(|k| config.vrrp.instance_for(k.vip).is_some_and(|j| j.name == i.name))
        {
            tracing::warn!(instance = %i.name, interface = %i.interface,
                "not resuming VRRP mastership (a VIP is gone, or a sync-group member cannot resume): starting in BACKUP");
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{self, test_support::AnyHost};

    fn instance(name: &str, interface: &str, vrid: u8, vips: &[&str]) -> String {
        let vips: Vec<String> = vips.iter().map(|v| format!("\"{v}/24\"")).collect();
        format!(
            "[[vrrp_instance]]\nname = \"{name}\"\ninterface = \"{interface}\"\n\
             virtual_router_id = {vrid}\nvirtual_ipaddress = [{}]\n\n",
            vips.join(", ")
        )
    }

    fn service(vip: &str, interface: &str) -> String {
        format!(
            "[[virtual_server]]\nvip = \"{vip}\"\nport = 80\nprotocol = \"tcp\"\n\
             interface = \"{interface}\"\n[[virtual_server.real_server]]\naddress = \"192.0.2.11\"\n\
             port = 80\n\n"
        )
    }

    fn config() -> Config {
        let mut text = String::new();
        text.push_str(&instance("VI_1", "eth0", 1, &["192.0.2.100", "192.0.2.101"]));
        text.push_str(&instance("VI_2", "eth1", 2, &["198.51.100.1"]));
        text.push_str(&instance("VI_A", "eth0", 3, &["203.0.113.1"]));
        text.push_str(&instance("VI_B", "eth0", 4, &["203.0.113.2"]));
        text.push_str("[[vrrp_sync_group]]\nname = \"G\"\ngroup = [\"VI_A\", \"VI_B\"]\n\n");
        for (vip, interface) in [
            ("192.0.2.100", "eth0"),
            ("198.51.100.1", "eth1"),
            ("203.0.113.1", "eth0"),
            ("192.0.2.200", "eth0"),
        ] {
            text.push_str(&service(vip, interface));
        }
        config::parse_toml(&text, Path::new("t.toml"), &AnyHost).expect("test config")
    }

    fn key(c: &Config, vip: &str) -> VirtualServerKey {
        let vip: IpAddr = vip.parse().expect("vip");
        c.virtual_servers.iter().find(|v| v.vip == vip).expect("service").key()
    }

    type Addresses = BTreeMap<String, Option<Vec<IpAddr>>>;

    fn here(list: &[(&str, &[&str])]) -> Addresses {
        list.iter()
            .map(|(i, a)| (i.to_string(), Some(a.iter().map(|x| x.parse().expect("ip")).collect())))
            .collect()
    }

    #[test]
    fn resumes_instances_whose_services_were_forwarding_and_whose_vips_are_here() {
        let c = config();
        let all = here(&[
            ("eth0", &["192.0.2.1", "192.0.2.100", "192.0.2.101", "203.0.113.1", "203.0.113.2"]),
            ("eth1", &["198.51.100.1"]),
        ]);
        let unreadable: Addresses = [("eth0".to_owned(), None), ("eth1".to_owned(), None)].into();
        let one_vip_gone = here(&[("eth0", &["192.0.2.100"]), ("eth1", &["198.51.100.1"])]);
        let member_gone = here(&[("eth0", &["203.0.113.1"]), ("eth1", &[])]);
        let cases: Vec<(&str, Vec<&str>, &Addresses, Vec<&str>)> = vec![
            ("nothing adopted", vec![], &all, vec![]),
            ("one instance's service", vec!["192.0.2.100"], &all, vec!["VI_1"]),
            (
                "two, in config order",
                vec!["198.51.100.1", "192.0.2.100"],
                &all,
                vec!["VI_1", "VI_2"],
            ),
            ("a service on no instance's VIP", vec!["192.0.2.200"], &all, vec![]),
            ("one of the instance's VIPs is gone", vec!["192.0.2.100"], &one_vip_gone, vec![]),
            ("addresses unreadable", vec!["198.51.100.1"], &unreadable, vec![]),
            ("a sync group resumes whole", vec!["203.0.113.1"], &all, vec!["VI_A", "VI_B"]),
            ("or not at all", vec!["203.0.113.1"], &member_gone, vec![]),
        ];
        for (name, adopted, addrs, want) in cases {
            let adopted: Vec<VirtualServerKey> = adopted.iter().map(|v| key(&c, v)).collect();
            assert_eq!(choose(&c, &adopted, addrs), want, "{name}");
        }
    }
}
