//! The real `lb` binary in the guest (`cargo xtask vm test` puts a static build at `$LB_BIN`):
//! start `lb run` on a config, talk to it through its control socket, kill it the hard way and
//! start it again on the same files, the way the kill/reconcile tests need.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use super::{
    Destination, Forward, Ipvs, Service, ServiceKey,
    vm_net::{Lab, ServiceGuard, VIP, ipvsadm},
};
// The guest's `lb` binary: `cargo xtask vm test` sets `$LB_BIN`.
use lb_test_support::lb_bin;

/// How long `lb run` may take to answer on its socket (a debug build under TCG).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Polls `done` every 50 ms until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `lb run` in the guest's root namespace (the director), or another one, with its config,
/// control socket and log in a folder of its own. Drop stops it (SIGTERM, then SIGKILL) and
/// removes the folder.
pub struct GuestAgent {
    child: Option<Child>,
    dir: PathBuf,
    args: Vec<String>,
    /// Runs there (`ip netns exec`) instead of the root namespace.
    netns: Option<String>,
}

impl GuestAgent {
    /// Writes `config` (TOML) to a fresh folder named after `name` and starts
    /// `lb run -c CONFIG --socket SOCKET EXTRA...`, waiting until it answers.
    pub fn start(name: &str, config: &str, extra: &[&str]) -> GuestAgent {
        Self::start_in(None, name, config, extra)
    }

    /// [`GuestAgent::start`] in network namespace `netns` (its control socket is a file, so the
    /// CLI reaches it from anywhere).
    pub fn start_in(netns: Option<&str>, name: &str, config: &str, extra: &[&str]) -> GuestAgent {
        let dir = std::env::temp_dir().join(format!("lb-agent-{name}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("agent folder");
        fs::write(dir.join("lb.toml"), config).expect("writing the agent's config");
        let mut agent = GuestAgent {
            child: None,
            dir,
            args: extra.iter().map(|s| s.to_string()).collect(),
            netns: netns.map(str::to_owned),
        };
        agent.restart();
        agent
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("lb.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("lb.sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// Everything every `lb run` of this agent wrote to stdout and stderr.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts `lb run` again on the same config and socket with other extra arguments.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.args = extra.iter().map(|s| s.to_string()).collect();
        self.restart();
    }

    /// Starts `lb run` (again) on the same config and socket; the old one must be gone.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the agent is still running");
        let _ = fs::remove_file(self.socket());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("agent log");
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(lb_bin());
                c
            }
            None => Command::new(lb_bin()),
        };
        let child = command
            .arg("run")
            .arg("-c")
            .arg(self.config_path())
            .arg("--socket")
            .arg(self.socket())
            // Unpinned (pinning is the default) unless the test pins itself.
            .args(
                ["--no-pin"]
                    .into_iter()
                    .filter(|_| !self.args.iter().any(|a| a == "--pin-dir" || a == "--no-pin")),
            )
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("agent log"))
            .stderr(log)
            .spawn()
            .expect("starting lb run");
        self.child = Some(child);
        let up = wait_until(START_TIMEOUT, || !self.running() || self.cli(&["backends"]).is_ok());
        assert!(self.running(), "lb run exited at start; its log:\n{}", self.log());
        assert!(up, "lb run did not answer within {START_TIMEOUT:?}; its log:\n{}", self.log());
    }

    /// The process id of `lb run`, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether `lb run` is still alive (reaps it if not).
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }

    /// `lb ARGS --socket SOCKET`: stdout, or stderr as the error.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(lb_bin())
            .args(args)
            .arg("--socket")
            .arg(self.socket())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `lb backends --json`, parsed.
    pub fn backends_json(&self) -> serde_json::Value {
        let out = self.cli(&["backends", "--json"]).expect("lb backends");
        serde_json::from_str(&out).expect("lb backends --json")
    }

    /// Packets forwarded to the reals (`lb backends --json`): of the service on
    /// `vip`, or of all services.
    pub fn packets(&self, vip: Option<Ipv4Addr>) -> u64 {
        let vip = vip.map(|v| v.to_string());
        self.backends_json()["services"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| vip.as_deref().is_none_or(|v| s["vip"].as_str() == Some(v)))
            .flat_map(|s| s["backends"].as_array().into_iter().flatten())
            .map(|b| b["packets"].as_u64().unwrap_or(0))
            .sum()
    }

    /// Whether the agent has `services` services and all their reals are up (and, if given,
    /// `reals` reals in each); false while it does not answer.
    pub fn all_up(&self, services: usize, reals: Option<usize>) -> bool {
        let Ok(out) = self.cli(&["backends", "--json"]) else { return false };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) else { return false };
        v["services"].as_array().is_some_and(|ss| {
            ss.len() == services
                && ss.iter().all(|s| {
                    s["backends"].as_array().is_some_and(|bs| {
                        reals.is_none_or(|n| bs.len() == n) && bs.iter().all(|b| b["state"] == "up")
                    })
                })
        })
    }

    /// SIGKILL: the agent dies without cleaning up, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit (SIGKILL after `timeout`); `None` if it was not running.
    pub fn stop(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GuestAgent {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
        if std::thread::panicking() {
            eprintln!("lb run log ({}):\n{}", self.dir.display(), self.log());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One service of a [`lab_config`].
#[derive(Clone, Copy)]
pub struct LabService<'a> {
    pub port: u16,
    /// Reals `r1`, `r2`... get these weights (the first `weights.len()` reals).
    pub weights: &'a [u32],
    pub forward: Forward,
    /// More keys of the `[[virtual_server]]` table (`delay_loop = 1`...).
    pub service_toml: &'a str,
    /// Appended to each `[[virtual_server.real_server]]` table (may open a checker table).
    pub real_toml: &'a str,
}

impl<'a> LabService<'a> {
    /// A plain DR service: wrr, no health checks.
    pub const fn dr(port: u16, weights: &'a [u32]) -> Self {
        LabService { port, weights, forward: Forward::Route, service_toml: "", real_toml: "" }
    }
}

/// A TOML config with the given TCP services on the [`Lab`]'s VIP, wrr, reals on the service's
/// port.
pub fn lab_config(lab: &Lab, services: &[LabService<'_>]) -> String {
    let mut toml = String::new();
    for s in services {
        assert!(s.weights.len() <= lab.reals.len(), "more weights than reals");
        toml.push_str(&format!(
            "[[virtual_server]]\nvip = \"{VIP}\"\nport = {}\nprotocol = \"tcp\"\n\
             interface = \"{}\"\nlb_algo = \"wrr\"\n",
            s.port,
            super::vm_net::BRIDGE
        ));
        // DR is the default.
        match s.forward {
            Forward::Route => {}
            Forward::Masquerade => toml.push_str("lb_kind = \"NAT\"\n"),
            Forward::Tunnel { .. } => toml.push_str("lb_kind = \"TUN\"\n"),
            Forward::Local => panic!("no lb_kind for local destinations"),
        }
        toml.push_str(s.service_toml);
        for (real, weight) in lab.reals.iter().zip(s.weights) {
            toml.push_str(&format!(
                "\n[[virtual_server.real_server]]\naddress = \"{}\"\nport = {}\n\
                 weight = {weight}\n{}\n",
                real.addr, s.port, s.real_toml
            ));
        }
        toml.push('\n');
    }
    toml
}

/// `lb run` arguments for kernel IPVS only.
const IPVS: &[&str] = &["--dataplane", "ipvs"];

/// A TCP check that fails at the first refused connection.
const TCP_CHECK: &str = "[virtual_server.real_server.tcp_check]\nconnect_timeout = 1\nretry = 0";

/// `lb check -c FILE` on `config`: the binary runs in the guest and reads what we write.
fn check(config: &str) -> Result<String, String> {
    let dir = std::env::temp_dir().join("lb-check");
    fs::create_dir_all(&dir).expect("check folder");
    let path: &Path = &dir.join("lb.toml");
    fs::write(path, config).expect("writing the config");
    let out = Command::new(lb_bin()).arg("check").arg("-c").arg(path).output().expect("lb check");
    let _ = fs::remove_dir_all(&dir);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() { Ok(text) } else { Err(text) }
}

#[test]
#[ignore = "needs the guest's lb binary: `cargo xtask vm test` runs it in a VM"]
fn vm_lb_binary_checks_a_lab_config() {
    let lab = Lab::new(2, super::vm_net::RealMode::Direct);
    let checked = LabService {
        service_toml: "delay_loop = 1\n",
        real_toml: TCP_CHECK,
        ..LabService::dr(8080, &[1])
    };
    let config = lab_config(&lab, &[LabService::dr(80, &[1, 2]), checked]);
    let out = check(&config).unwrap_or_else(|e| panic!("lb check refused\n{config}\n{e}"));
    println!("lb check: {}", out.trim());
}

/// `ipvsadm -Ln` as rules without its headers and connection counters: `TCP VIP:PORT SCHED
/// [FLAGS]` per service, `-> ADDR:PORT METHOD WEIGHT` per destination; services sorted, and
/// destinations within theirs.
pub fn ipvs_rules() -> Vec<String> {
    let mut blocks: Vec<Vec<String>> = Vec::new();
    for line in ipvsadm(&["-Ln"]).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first() {
            None | Some(&"IP") | Some(&"Prot") => {}
            Some(&"->") if words.get(1) == Some(&"RemoteAddress:Port") => {}
            Some(&"->") => blocks
                .last_mut()
                .expect("a destination before any service")
                .push(words[..4.min(words.len())].join(" ")),
            Some(_) => blocks.push(vec![words.join(" ")]),
        }
    }
    for block in &mut blocks {
        block[1..].sort();
    }
    blocks.sort();
    blocks.concat()
}

/// The rules `lab_config(lab, services)` should make, next to `others`.
fn expected_rules(lab: &Lab, services: &[LabService<'_>], others: &[&str]) -> Vec<String> {
    let mut blocks: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            let port = s.port;
            let mut block = vec![format!("TCP {VIP}:{port} wrr")];
            let method = s.forward.ipvsadm_name();
            let mut dests: Vec<String> = lab
                .reals
                .iter()
                .zip(s.weights)
                .map(|(r, w)| format!("-> {}:{port} {method} {w}", r.addr))
                .collect();
            dests.sort();
            block.extend(dests);
            block
        })
        .collect();
    let mut other = Vec::new();
    for line in others {
        if line.starts_with("->") {
            other.push(line.to_string());
        } else {
            if !other.is_empty() {
                blocks.push(std::mem::take(&mut other));
            }
            other.push(line.to_string());
        }
    }
    if !other.is_empty() {
        blocks.push(other);
    }
    blocks.sort();
    blocks.concat()
}

/// Waits until `ipvsadm -Ln` shows `want`; panics with both and the agent's log otherwise.
fn wait_for_rules(agent: &GuestAgent, want: &[String], what: &str) {
    if !wait_until(Duration::from_secs(20), || ipvs_rules() == want) {
        panic!(
            "{what}: ipvsadm -Ln shows\n{:#?}\nwanted\n{want:#?}\nlb run log:\n{}",
            ipvs_rules(),
            agent.log()
        );
    }
}

#[test]
#[ignore = "needs kernel IPVS and the guest's lb binary: `cargo xtask vm test` runs it in a VM"]
fn vm_agent_reconciles_ipvs_after_sigkill() {
    let mut lab = Lab::new(3, super::vm_net::RealMode::Direct);
    lab.serve(80);
    let vip = SocketAddr::new(VIP.into(), 80);
    let mut ipvs = Ipvs::open().expect("opening IPVS");
    // Somebody else's service, which the agent must never touch.
    let foreign_key = ServiceKey::tcp(SocketAddr::new(VIP.into(), 9999));
    let _foreign = ServiceGuard::add(
        &mut ipvs,
        &Service::new(foreign_key, "rr"),
        &[Destination::route(SocketAddr::new(lab.reals[0].addr.into(), 9999), 1)],
    );
    let foreign = [format!("TCP {VIP}:9999 rr"), format!("-> {}:9999 Route 1", lab.reals[0].addr)];
    let foreign: Vec<&str> = foreign.iter().map(String::as_str).collect();

    let first = &[LabService::dr(80, &[1, 2, 3]), LabService::dr(8080, &[1, 1])];
    let started = Instant::now();
    let mut agent = GuestAgent::start("reconcile", &lab_config(&lab, first), IPVS);
    wait_for_rules(&agent, &expected_rules(&lab, first, &foreign), "after the first start");
    println!("rules in place {:.2?} after lb run started", started.elapsed());
    lab.requests(vip, 60).assert_split(&[("r1", 1), ("r2", 2), ("r3", 3)], 0.1);

    // SIGKILL: the kernel keeps the rules and keeps forwarding without the agent.
    agent.kill();
    assert_eq!(ipvs_rules(), expected_rules(&lab, first, &foreign), "right after SIGKILL");
    let tally = lab.requests(vip, 30);
    assert!(tally.errors.is_empty() && tally.total() == 30, "without the agent: {tally:?}");

    // Restarted on a changed config: r3 gone, r1 reweighted, the 8080 service dropped. Its own
    // leftovers go, the foreign service stays.
    let second = &[LabService::dr(80, &[2, 2])];
    fs::write(agent.config_path(), lab_config(&lab, second)).expect("new config");
    let restarted = Instant::now();
    agent.restart_with(&[IPVS, &["--keep-ipvs-on-stop"]].concat());
    wait_for_rules(&agent, &expected_rules(&lab, second, &foreign), "after the restart");
    println!("reconciled {:.2?} after the restart", restarted.elapsed());
    lab.requests(vip, 60).assert_split(&[("r1", 1), ("r2", 1)], 0.1);

    // --keep-ipvs-on-stop: a clean stop leaves the rules, and the next agent adopts them.
    let status = agent.stop(Duration::from_secs(20)).expect("the agent was running");
    assert!(status.success(), "lb run exited with {status}; log:\n{}", agent.log());
    assert_eq!(ipvs_rules(), expected_rules(&lab, second, &foreign), "kept on stop");
    agent.restart_with(IPVS);
    wait_for_rules(&agent, &expected_rules(&lab, second, &foreign), "adopted");
    let tally = lab.requests(vip, 30);
    assert!(tally.errors.is_empty() && tally.total() == 30, "after adoption: {tally:?}");

    // A clean stop without it removes what the agent made, and only that.
    let status = agent.stop(Duration::from_secs(20)).expect("the agent was running");
    assert!(status.success(), "lb run exited with {status}; log:\n{}", agent.log());
    wait_for_rules(&agent, &expected_rules(&lab, &[], &foreign), "after SIGTERM");
}

/// How a real whose health check fails shows in IPVS.
struct HealthScenario {
    name: &'static str,
    service_toml: &'static str,
    /// The weights while `r2` is down: without it, or with weight 0.
    down: &'static [u32],
}

const HEALTH: &[HealthScenario] = &[
    HealthScenario { name: "removed", service_toml: "delay_loop = 0.25\n", down: &[1] },
    HealthScenario {
        name: "inhibit_on_failure: weight 0",
        service_toml: "delay_loop = 0.25\ninhibit_on_failure = true\n",
        down: &[1, 0],
    },
];

#[test]
#[ignore = "needs kernel IPVS and the guest's lb binary: `cargo xtask vm test` runs it in a VM"]
fn vm_agent_health_checks_change_ipvs_destinations() {
    for s in HEALTH {
        println!("--- {}", s.name);
        let mut lab = Lab::new(2, super::vm_net::RealMode::Direct);
        lab.serve(80);
        let vip = SocketAddr::new(VIP.into(), 80);
        let up = LabService {
            service_toml: s.service_toml,
            real_toml: TCP_CHECK,
            ..LabService::dr(80, &[1, 1])
        };
        let down = LabService { weights: s.down, ..up };
        let started = Instant::now();
        let mut agent = GuestAgent::start("health", &lab_config(&lab, &[up]), IPVS);
        wait_for_rules(&agent, &expected_rules(&lab, &[up], &[]), s.name);
        let running = started.elapsed();

        lab.stop_serving("r2");
        let failed = Instant::now();
        wait_for_rules(&agent, &expected_rules(&lab, &[down], &[]), s.name);
        let failed = failed.elapsed();
        let tally = lab.requests(vip, 20);
        assert_eq!(tally.per_real.get("r1"), Some(&20), "{}: {tally:?}", s.name);

        lab.serve_on("r2", 80);
        let back = Instant::now();
        wait_for_rules(&agent, &expected_rules(&lab, &[up], &[]), s.name);
        let back = back.elapsed();
        lab.requests(vip, 20).assert_split(&[("r1", 1), ("r2", 1)], 0.1);
        let stopping = Instant::now();
        agent.stop(Duration::from_secs(20));
        println!(
            "{}: rules {running:.2?} after the start, r2 out {failed:.2?} after its server \
             stopped, back {back:.2?} after it restarted; stop took {:.2?}",
            s.name,
            stopping.elapsed()
        );
    }
}

/// `lb run` serving each `lb_kind` through kernel IPVS.
struct KindScenario {
    name: &'static str,
    mode: super::vm_net::RealMode,
    forward: Forward,
    args: &'static [&'static str],
}

const KINDS: &[KindScenario] = &[
    KindScenario {
        name: "DR, --dataplane ipvs",
        mode: super::vm_net::RealMode::Direct,
        forward: Forward::Route,
        args: IPVS,
    },
    KindScenario {
        name: "NAT, --dataplane auto",
        mode: super::vm_net::RealMode::Nat,
        forward: Forward::Masquerade,
        args: &["--dataplane", "auto"],
    },
    KindScenario {
        // `--dataplane auto` serves tunnels in XDP now; `ipvs` keeps the kernel's tunnels.
        name: "TUN (ipip), --dataplane ipvs",
        mode: super::vm_net::RealMode::Tunnel,
        forward: Forward::Tunnel {
            encap: super::TunnelEncap::Ipip,
            csum: false,
            remote_csum: false,
        },
        args: IPVS,
    },
];

#[test]
#[ignore = "needs kernel IPVS and the guest's lb binary: `cargo xtask vm test` runs it in a VM"]
fn vm_agent_forwards_each_lb_kind_through_ipvs() {
    for k in KINDS {
        println!("--- {}", k.name);
        let mut lab = Lab::new(2, k.mode);
        lab.serve(80);
        let service = LabService { forward: k.forward, ..LabService::dr(80, &[1, 2]) };
        let agent = GuestAgent::start("kinds", &lab_config(&lab, &[service]), k.args);
        wait_for_rules(&agent, &expected_rules(&lab, &[service], &[]), k.name);
        let backends = agent.backends_json();
        assert_eq!(backends["services"][0]["dataplane"], "ipvs", "{}: {backends:#}", k.name);
        lab.requests(SocketAddr::new(VIP.into(), 80), 60)
            .assert_split(&[("r1", 1), ("r2", 2)], 0.1);
    }
}

/// Marks the lab's traffic with netfilter (iptables' legacy backend, in the guest) while it
/// lives; the mangle table is flushed on drop, also after a panic.
struct MarkRules;

impl MarkRules {
    /// `-d VIP -p tcp --dport PORT -j MARK --set-mark MARK` in mangle PREROUTING, per port.
    fn add(ports: &[u16], mark: u32) -> MarkRules {
        let guard = MarkRules;
        for port in ports {
            let (port, mark, vip) = (port.to_string(), mark.to_string(), VIP.to_string());
            iptables(&[
                "-t",
                "mangle",
                "-A",
                "PREROUTING",
                "-d",
                &vip,
                "-p",
                "tcp",
                "--dport",
                &port,
                "-j",
                "MARK",
                "--set-mark",
                &mark,
            ]);
        }
        guard
    }
}

impl Drop for MarkRules {
    fn drop(&mut self) {
        let _ = Command::new("iptables-legacy").args(["-t", "mangle", "-F"]).status();
    }
}

fn iptables(args: &[&str]) -> String {
    let out = Command::new("iptables-legacy").args(args).output().expect("running iptables-legacy");
    assert!(out.status.success(), "iptables {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// keepalived's `virtual_server fwmark N`: netfilter marks the VIP's ports 80 and 8080 alike, and
/// one IPVS service balances both (the way operators keep a client's HTTP and HTTPS on one real).
/// The agent installs it as `FWM 1`, forwards both ports through it by weight, shows it as
/// ipvsadm does, drains a real of it by `fwmark:1`, and removes it at stop.
#[test]
#[ignore = "needs kernel IPVS, iptables and the guest's lb binary: `cargo xtask vm test` runs it in a VM"]
fn vm_agent_serves_a_firewall_mark_service_through_ipvs() {
    let mut lab = Lab::new(2, super::vm_net::RealMode::Direct);
    lab.serve(80);
    lab.serve(8080);
    let _marks = MarkRules::add(&[80, 8080], 1);
    let mut config = String::from("[[virtual_server]]\nfwmark = 1\nlb_algo = \"wrr\"\n");
    for (real, weight) in lab.reals.iter().zip([1, 2]) {
        config.push_str(&format!(
            "[[virtual_server.real_server]]\naddress = \"{}\"\nport = 80\nweight = {weight}\n",
            real.addr
        ));
    }
    let mut agent = GuestAgent::start("fwmark", &config, &["--dataplane", "auto"]);
    let (r1, r2) = (lab.reals[0].addr, lab.reals[1].addr);
    let rules = |w1: u32| {
        vec![
            "FWM 1 wrr".to_owned(),
            format!("-> {r1}:80 Route {w1}"),
            format!("-> {r2}:80 Route 2"),
        ]
    };
    wait_for_rules(&agent, &rules(1), "fwmark service");

    for port in [80, 8080] {
        lab.requests(SocketAddr::new(VIP.into(), port), 60)
            .assert_split(&[("r1", 1), ("r2", 2)], 0.1);
    }
    let json = agent.backends_json();
    assert_eq!(json["services"][0]["fwmark"], 1, "{json:#}");
    assert_eq!(json["services"][0]["dataplane"], "ipvs", "{json:#}");
    let text = agent.cli(&["backends"]).expect("lb backends");
    assert!(text.lines().any(|l| l == "FWM  1 wrr (ipvs)"), "{text}");

    agent.cli(&["drain", "fwmark:1", &format!("{r1}:80")]).expect("lb drain fwmark:1");
    wait_for_rules(&agent, &rules(0), "r1 drained");
    lab.requests(SocketAddr::new(VIP.into(), 8080), 20).assert_split(&[("r2", 1)], 0.0);

    agent.stop(Duration::from_secs(20)).expect("lb run stops");
    assert!(ipvs_rules().is_empty(), "left behind: {:?}", ipvs_rules());
}
