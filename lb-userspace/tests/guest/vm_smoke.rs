//! The first test against a real kernel IPVS. It needs `ip_vs` loaded and root, so it is ignored
//! by `cargo test`; `cargo xtask vm test` boots a VM and runs it there, next to `ipvsadm`, the
//! reference client whose listing must agree with ours.

use std::{net::SocketAddr, process::Command, time::Instant};

use super::{Destination, DestinationEntry, Forward, Ipvs, Service, ServiceEntry, ServiceKey};

fn vip() -> ServiceKey {
    ServiceKey::tcp("192.0.2.100:80".parse().unwrap())
}

fn real(last: u8) -> SocketAddr {
    format!("192.0.2.{last}:80").parse().unwrap()
}

/// `ipvsadm -Ln` as whitespace-split lines, minus its two header lines and the version line.
fn ipvsadm_listing() -> Vec<Vec<String>> {
    let out = Command::new("ipvsadm").arg("-Ln").output().expect("running ipvsadm -Ln");
    assert!(out.status.success(), "ipvsadm -Ln: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    println!("ipvsadm -Ln:\n{text}");
    text.lines()
        .filter(|l| {
            !l.starts_with("IP Virtual Server")
                && !l.starts_with("Prot ")
                && !l.trim_start().starts_with("-> RemoteAddress")
        })
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .filter(|l: &Vec<String>| !l.is_empty())
        .collect()
}

/// What `ipvsadm -Ln` should print for what our client read back.
fn expected_listing(services: &[(ServiceEntry, Vec<DestinationEntry>)]) -> Vec<Vec<String>> {
    let mut lines = Vec::new();
    for (svc, dests) in services {
        let mut head: Vec<String> =
            svc.service.key.to_string().split_whitespace().map(str::to_owned).collect();
        head.push(svc.service.scheduler.clone());
        lines.push(head);
        for d in dests {
            lines.push(vec![
                "->".into(),
                d.destination.socket_addr().to_string(),
                d.destination.forward.ipvsadm_name().into(),
                d.destination.weight.to_string(),
                d.active_conns.to_string(),
                d.inactive_conns.to_string(),
            ]);
        }
    }
    lines
}

fn read_back(ipvs: &mut Ipvs) -> Vec<(ServiceEntry, Vec<DestinationEntry>)> {
    let mut out = Vec::new();
    for svc in ipvs.services().expect("listing services") {
        let mut dests = ipvs.destinations(&svc.service.key).expect("listing destinations");
        // ipvsadm lists in the kernel's order, which is ours too; sort both sides anyway.
        dests.sort_by_key(|d| d.destination.socket_addr());
        out.push((svc, dests));
    }
    out
}

fn sorted_ipvsadm() -> Vec<Vec<String>> {
    // Keep each service's destinations under it but sort within the block, like read_back.
    let mut blocks: Vec<Vec<Vec<String>>> = Vec::new();
    for line in ipvsadm_listing() {
        match (line.first().map(String::as_str), blocks.last_mut()) {
            (Some("->"), Some(block)) => block.push(line),
            _ => blocks.push(vec![line]),
        }
    }
    blocks
        .into_iter()
        .flat_map(|mut b| {
            b[1..].sort_by_key(|l| l[1].parse::<SocketAddr>().ok());
            b
        })
        .collect()
}

#[test]
#[ignore = "needs kernel IPVS and root: `cargo xtask vm test` runs it in a VM"]
fn vm_dr_service_matches_ipvsadm() {
    let start = Instant::now();
    let mut ipvs = Ipvs::open().expect("opening IPVS");
    let info = ipvs.info().expect("GET_INFO");
    println!(
        "IPVS {} (family id {}, {} connection buckets)",
        info.version_string(),
        ipvs.family_id(),
        info.conn_table_size
    );
    assert!(ipvs.service(&vip()).unwrap().is_none(), "fresh kernel has our VIP already");

    let service = Service::new(vip(), "wrr");
    ipvs.add_service(&service).expect("adding the service");
    let again = ipvs.add_service(&service).expect_err("adding it twice");
    assert!(again.is_exists(), "{again}");
    ipvs.add_destination(&vip(), &Destination::route(real(11), 1)).expect("adding .11");
    ipvs.add_destination(&vip(), &Destination::route(real(12), 2)).expect("adding .12");

    // Our own read-back.
    let got = ipvs.service(&vip()).unwrap().expect("the service we added");
    assert_eq!(got.service, service);
    let listing = read_back(&mut ipvs);
    assert_eq!(listing.len(), 1, "{listing:?}");
    let dests: Vec<_> = listing[0].1.iter().map(|d| d.destination).collect();
    assert_eq!(dests, vec![Destination::route(real(11), 1), Destination::route(real(12), 2)]);
    assert!(dests.iter().all(|d| d.forward == Forward::Route));

    // The reference client agrees.
    assert_eq!(sorted_ipvsadm(), expected_listing(&listing));
    assert_eq!(
        expected_listing(&listing),
        vec![
            vec!["TCP", "192.0.2.100:80", "wrr"],
            vec!["->", "192.0.2.11:80", "Route", "1", "0", "0"],
            vec!["->", "192.0.2.12:80", "Route", "2", "0", "0"],
        ]
        .into_iter()
        .map(|l| l.into_iter().map(String::from).collect::<Vec<_>>())
        .collect::<Vec<_>>()
    );

    // Edits show through both clients.
    ipvs.update_destination(&vip(), &Destination::route(real(12), 3)).expect("reweighting .12");
    let mut svc = service.clone();
    svc.scheduler = "mh".into();
    ipvs.update_service(&svc).expect("switching to mh");
    let listing = read_back(&mut ipvs);
    assert_eq!(listing[0].0.service.scheduler, "mh");
    assert_eq!(listing[0].1[1].destination.weight, 3);
    assert_eq!(sorted_ipvsadm(), expected_listing(&listing));

    // Errors the agent will rely on.
    let missing = ServiceKey::tcp("192.0.2.101:80".parse().unwrap());
    let err = ipvs.add_destination(&missing, &Destination::route(real(11), 1)).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let err = ipvs.delete_destination(&vip(), real(99)).unwrap_err();
    assert!(err.is_not_found(), "{err}");

    // And it all goes away again, leaving nothing behind.
    ipvs.delete_destination(&vip(), real(11)).expect("deleting .11");
    assert_eq!(ipvs.destinations(&vip()).unwrap().len(), 1);
    ipvs.delete_service(&vip()).expect("deleting the service");
    assert!(ipvs.service(&vip()).unwrap().is_none());
    assert!(ipvs.services().unwrap().is_empty());
    assert!(sorted_ipvsadm().is_empty());
    println!("IPVS smoke test took {:?}", start.elapsed());
}
