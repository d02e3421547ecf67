//! `cargo xtask demo`: the director on a throw-away DR topology. Client, two directors (a VRRP
//! pair) and three real servers (each serving a page that names itself) on one bridge, in network
//! namespaces; the reals hold the VIP on `lo` with arp_ignore/arp_announce, exactly as LVS-DR real
//! servers do. After the requests, the master is stopped and the backup takes over.
//! Everything is torn down at the end, on failure and on Ctrl-C.

use std::{
    net::Ipv4Addr,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};
use lb_tests::{DrTopology, LbAgent, count_http, http_get, wait_until};

use crate::{run, workspace_root};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const REALS: usize = 3;

pub fn demo(requests: u32) -> anyhow::Result<()> {
    let root = workspace_root()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and attaches XDP: run it as root");
    }
    run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--quiet",
        "-p",
        "lb-userspace",
        "-p",
        "lb-tests",
        "--bins",
    ]))?;
    let target = crate::target_dir(&root).join("debug");
    let (lb, testpeer) = (target.join("lb"), target.join("lb-testpeer"));
    let config = root.join("examples").join("demo.toml");
    let backup_config = root.join("examples").join("demo-backup.toml");

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    println!("== building the topology: client, two directors, {REALS} real servers on one bridge");
    let mut dr = DrTopology::build("demo", REALS, VIP, &testpeer)?;
    let dir2 = dr.topo.add_host("dir2", &["192.0.2.3/24"])?;
    println!("   namespaces: {}", dr.topo.namespaces().join(" "));
    for (i, r) in dr.reals.iter().enumerate() {
        println!(
            "   {} {} (VIP {VIP} on lo), page: {}",
            r.name,
            DrTopology::real_ip(i),
            http_get(&dr.client.ns, &format!("http://{}/", DrTopology::real_ip(i)))?.trim()
        );
    }
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted");
    }

    println!("== lb run -c {} (in {})", config.display(), dr.director.ns.name());
    let agent = LbAgent::start(&dr.director.ns, &lb, &config, &[])?;
    println!("== lb run -c {} (in {})", backup_config.display(), dir2.ns.name());
    let backup = LbAgent::start(&dir2.ns, &lb, &backup_config, &[])?;
    let elected = wait_until(Duration::from_secs(10), || {
        agent.vrrp_state("VI_DEMO").as_deref() == Some("MASTER")
            && backup.vrrp_state("VI_DEMO").as_deref() == Some("BACKUP")
    });
    if !elected {
        bail!(
            "VRRP did not elect dir1: {:?} / {:?}",
            agent.vrrp_state("VI_DEMO"),
            backup.vrrp_state("VI_DEMO")
        );
    }
    println!("   VRRP: dir1 MASTER (priority 150), dir2 BACKUP (priority 100)");
    agent.wait_all_backends("up", Duration::from_secs(10))?;

    println!("== {requests} HTTP requests from the client to http://{VIP}/");
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..requests {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        for (who, n) in count_http(&dr.client.ns, &format!("http://{VIP}/"), 1) {
            *counts.entry(who).or_insert(0u32) += n;
        }
    }
    for (who, n) in &counts {
        println!("   {who:<10} {n:>4} requests");
    }

    println!("== lb backends");
    print!("{}", agent.cli(&["backends"])?);
    println!("== lb status");
    print!("{}", agent.cli(&["status"])?);

    let answered: Vec<&String> = counts.keys().filter(|k| k.starts_with("rs")).collect();
    let failed = counts.get("(failed)").copied().unwrap_or(0);
    if answered.len() != REALS || failed > 0 {
        bail!("expected all {REALS} reals to answer and no failures, got {counts:?}");
    }

    println!("== failover: stopping dir1's agent (SIGTERM: priority-0 advert, VIP released)");
    let stopped = std::time::Instant::now();
    agent.stop()?;
    let url = format!("http://{VIP}/");
    if !wait_until(Duration::from_secs(10), || http_get(&dr.client.ns, &url).is_ok()) {
        bail!("the backup did not take over");
    }
    println!(
        "   dir2 is {} and answering after {:.0} ms",
        backup.vrrp_state("VI_DEMO").unwrap_or_default(),
        stopped.elapsed().as_secs_f64() * 1000.0
    );
    let counts = count_http(&dr.client.ns, &url, 10);
    for (who, n) in &counts {
        println!("   {who:<10} {n:>4} requests through dir2");
    }
    println!("== lb status (dir2)");
    print!("{}", backup.cli(&["status"])?);
    backup.stop()?;
    println!("== tearing down (agents stopped cleanly; namespaces removed on exit)");
    if counts.contains_key("(failed)") {
        bail!("requests failed after the failover: {counts:?}");
    }
    println!(
        "== demo ok: all {REALS} real servers answered through the VIP, before and after the failover"
    );
    Ok(())
}

/// `cargo xtask demo --ecmp`: three directors behind a BIRD router share one VIP over BGP + ECMP
/// (`lb_tests::bgp::EcmpLab`): the router's route, the spread of requests over the directors, a
/// maintenance withdraw and the announcement back.
pub fn demo_ecmp(requests: u32) -> anyhow::Result<()> {
    use lb_tests::bgp::{DIRECTORS, EcmpLab, VIP as ECMP_VIP, director_config, next_hops};

    let root = workspace_root()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and attaches XDP: run it as root");
    }
    if Command::new("bird").arg("--version").output().is_err() {
        bail!("the ECMP demo needs BIRD 2 (`bird`): cargo xtask bootstrap installs it");
    }
    run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--quiet",
        "-p",
        "lb-userspace",
        "-p",
        "lb-tests",
        "--bins",
    ]))?;
    let target = crate::target_dir(&root).join("debug");
    let (lb, testpeer) = (target.join("lb"), target.join("lb-testpeer"));
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    println!("== building the lab: client — BIRD router (ECMP) — three directors, three DR reals");
    let lab = EcmpLab::build("demo", &testpeer)?;
    println!("   namespaces: {}", lab.topo.namespaces().join(" "));
    let config = lab.dir.path().join("lb.toml");
    std::fs::write(&config, director_config(""))?;
    println!("== lb.toml of every director:\n{}", std::fs::read_to_string(&config)?);
    let mut agents = Vec::new();
    for d in &lab.directors {
        println!("== lb run -c lb.toml (in {}, speaker = \"bird\")", d.ns.name());
        agents.push(LbAgent::start(&d.ns, &lb, &config, &["--xdp-mode", "generic"])?);
    }
    let all: std::collections::BTreeSet<String> = DIRECTORS.iter().map(|s| s.to_string()).collect();
    if !wait_until(Duration::from_secs(30), || next_hops(&lab.router.ns) == all) {
        bail!("the router did not learn three next hops: {:?}", next_hops(&lab.router.ns));
    }
    println!("== the router's route to the VIP (ip route show {ECMP_VIP}):");
    print!("{}", lab.router.ns.ip(&["route", "show", &format!("{ECMP_VIP}/32")])?);

    let url = format!("http://{ECMP_VIP}/");
    let flows = |a: &LbAgent| -> u64 {
        a.backends().ok().and_then(|b| b["services"][0]["new_flows"].as_u64()).unwrap_or(0)
    };
    let before: Vec<u64> = agents.iter().map(flows).collect();
    println!("== {requests} HTTP requests from the client (new connection each)");
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    let counts = count_http(&lab.client.ns, &url, requests);
    for (who, n) in &counts {
        println!("   answered by {who:<10} {n:>4}");
    }
    for (i, (a, b)) in agents.iter().zip(&before).enumerate() {
        println!("   forwarded by dir{}    {:>4}", i + 1, flows(a) - b);
    }
    println!("== lb status (dir1)");
    print!("{}", agents[0].cli(&["status"])?);

    println!("== maintenance: lb bgp withdraw on dir1");
    print!("{}", agents[0].cli(&["bgp", "withdraw"])?);
    let rest: std::collections::BTreeSet<String> =
        DIRECTORS[1..].iter().map(|s| s.to_string()).collect();
    if !wait_until(Duration::from_secs(5), || next_hops(&lab.router.ns) == rest) {
        bail!("the router kept dir1: {:?}", next_hops(&lab.router.ns));
    }
    print!("{}", lab.router.ns.ip(&["route", "show", &format!("{ECMP_VIP}/32")])?);
    let after = count_http(&lab.client.ns, &url, 10);
    println!("   10 requests while dir1 is withdrawn: {after:?}");
    print!("{}", agents[0].cli(&["bgp", "announce"])?);
    if !wait_until(Duration::from_secs(5), || next_hops(&lab.router.ns) == all) {
        bail!("dir1 did not come back: {:?}", next_hops(&lab.router.ns));
    }
    println!("   dir1 announced again: three next hops");
    for a in agents {
        a.stop()?;
    }
    println!("== tearing down (agents stopped cleanly; namespaces removed on exit)");
    let answered = counts.keys().filter(|k| k.starts_with("rs")).count();
    if answered != REALS || counts.contains_key("(failed)") || after.contains_key("(failed)") {
        bail!("expected every real to answer and no failures: {counts:?} / {after:?}");
    }
    println!("== demo ok: three directors shared the VIP behind the router's ECMP");
    Ok(())
}
