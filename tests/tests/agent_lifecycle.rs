//! The agent never starts half-configured: a bad config, or a second agent on the same socket,
//! fails before anything is attached.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use lb_tests::{LbAgent, Netns, Process, lb_bin, require_root, scratch_dir, unique_prefix};
use tempfile::TempDir;

fn temp(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("write");
    p
}

/// `lb run` on `cfg` exits 1 with the located error `{cfg}:{located}` on stderr, before it makes
/// its control socket.
fn assert_run_refused(cfg: &Path, located: &str) {
    let socket = cfg.with_extension("sock");
    let out = Command::new(lb_bin())
        .args(["run", "--no-pin", "-c"])
        .arg(cfg)
        .arg("--socket")
        .arg(&socket)
        .output()
        .expect("run lb");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{}:{located}", cfg.display())), "{stderr}");
    assert!(!socket.exists(), "no control socket for an agent that did not start");
}

#[test]
fn bad_config_stops_the_agent_before_it_starts() {
    let tmp = scratch_dir("lb-life-").expect("temp dir");
    let cfg = temp(
        &tmp,
        "bad.toml",
        "[[virtual_server]]\nvip = \"192.0.2.1000\"\nport = 80\ninterface = \"lo\"\n",
    );
    assert_run_refused(&cfg, "2:7: `vip` must be an IP address");
}

#[test]
fn second_agent_on_the_same_socket_is_refused_and_first_keeps_running() {
    let tmp = scratch_dir("lb-life-").expect("temp dir");
    if !require_root("second_agent_on_the_same_socket") {
        return;
    }
    let ns = Netns::create(&format!("{}-life", unique_prefix())).expect("netns");
    let cfg = temp(
        &tmp,
        "lo.toml",
        "[[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\ninterface = \"lo\"\n\
         [[virtual_server.real_server]]\naddress = \"192.0.2.11\"\n",
    );
    let first =
        LbAgent::start(&ns, &lb_bin(), &cfg, &["--xdp-mode", "generic"]).expect("first agent");
    let socket = first.socket().to_string_lossy().into_owned();
    let bin = lb_bin().to_string_lossy().into_owned();
    let cfg_s = cfg.to_string_lossy().into_owned();
    let second = ns
        .command(&[&bin, "run", "--no-pin", "-c", &cfg_s, "--socket", &socket])
        .output()
        .expect("second agent");
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another lb agent is already listening"), "{stderr}");
    // The first one is unaffected.
    let v = first.backends().expect("first agent still answers");
    assert_eq!(v["services"][0]["vip"], "192.0.2.100");
    assert!(first.stop().is_ok());
}

/// A real server that is an address of the director is refused by `lb check` and `lb run` alike,
/// at its value, before anything is attached.
#[test]
fn a_real_that_is_an_address_of_this_host_is_refused() {
    let tmp = scratch_dir("lb-life-").expect("temp dir");
    if !require_root("a_real_that_is_an_address_of_this_host") {
        return;
    }
    let ns = Netns::create(&format!("{}-own", unique_prefix())).expect("netns");
    ns.ip(&["addr", "add", "192.0.2.1/32", "dev", "lo"]).expect("address on lo");
    let cfg = temp(
        &tmp,
        "own.toml",
        "[[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\ninterface = \"lo\"\n\
         [[virtual_server.real_server]]\naddress = \"192.0.2.1\"\n",
    );
    let expected = format!(
        "{}:6:11: real server 192.0.2.1 is an address of this host: lb forwards to other hosts \
         only",
        cfg.display()
    );
    let lb = lb_bin();
    let lb = lb.to_str().expect("utf-8 path");
    let cfg_s = cfg.to_str().expect("utf-8 path");

    let check = ns.command(&[lb, "check", "-c", cfg_s]).output().expect("lb check");
    assert_eq!(check.status.code(), Some(1), "lb check: {check:?}");
    // Errors are on stderr.
    assert!(String::from_utf8_lossy(&check.stderr).contains(&expected), "lb check: {check:?}");

    let socket = cfg.with_extension("sock");
    let socket_s = socket.to_str().expect("utf-8 path");
    // `timeout`: were the real accepted, the agent would run; it must not hang the test.
    let run = ns
        .command(&["timeout", "20", lb, "run", "--no-pin", "-c", cfg_s, "--socket", socket_s])
        .args(["--xdp-mode", "generic"])
        .output()
        .expect("lb run");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "lb run: {stderr}");
    assert!(stderr.contains(&expected), "lb run: {stderr}");
    assert!(!socket.exists(), "no control socket for an agent that did not start");
    let link = ns.ip(&["link", "show", "lo"]).expect("ip link");
    assert!(!link.contains("xdp"), "nothing attached to lo: {link}");
}

/// A service only kernel IPVS can serve (NAT) starts on IPVS where the kernel has it, and is
/// refused at start, by name and place, where it has not (this machine's kernel has no IP_VS;
/// the in-VM tests cover the other side). `--dataplane ipvs` without IPVS is refused too.
#[test]
fn services_needing_ipvs_are_refused_by_name_without_it() {
    let tmp = scratch_dir("lb-life-").expect("temp dir");
    if !require_root("services_needing_ipvs") {
        return;
    }
    let ns = Netns::create(&format!("{}-ipvs", unique_prefix())).expect("netns");
    let nat = temp(
        &tmp,
        "nat.toml",
        "[[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\ninterface = \"lo\"\n\
         lb_kind = \"NAT\"\nreal_server = [{ address = \"10.0.0.11\", port = 8080 }]\n",
    );
    let fwmark = temp(
        &tmp,
        "fwmark.toml",
        "[[virtual_server]]\nfwmark = 1\nreal_server = [{ address = \"10.0.0.11\", port = 80 }]\n",
    );
    let cases: &[(&std::path::Path, &[&str], &str)] = &[
        (
            &nat,
            &[],
            ":1:1: virtual server 192.0.2.100:80/tcp: `lb_kind NAT` (only direct routing and \
             tunnels run on XDP) needs the IPVS dataplane, which is not usable here",
        ),
        (&nat, &["--dataplane", "ipvs"], "--dataplane ipvs: IPVS"),
        (
            &nat,
            &["--dataplane", "xdp"],
            "`lb_kind NAT` (only direct routing and tunnels run on XDP): it cannot run with \
             --dataplane xdp",
        ),
        (
            &fwmark,
            &[],
            ":1:1: virtual server fwmark 1: a firewall-mark service (netfilter marks packets after \
             XDP has run, so only IPVS can match them) needs the IPVS dataplane, which is not \
             usable here",
        ),
    ];
    for (i, (cfg, extra, expected)) in cases.iter().enumerate() {
        let socket = cfg.with_extension(format!("{i}.sock"));
        // `timeout`: were IPVS there after all, the agent would run; it must not hang the test.
        let lb = lb_bin();
        let out = ns
            .command(&["timeout", "20", lb.to_str().expect("utf-8 path"), "run", "--no-pin", "-c"])
            .arg(cfg)
            .arg("--socket")
            .arg(&socket)
            .args(["--xdp-mode", "generic"])
            .args(*extra)
            .output()
            .expect("run lb");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || stderr.contains("director running") {
            panic!("{extra:?}: lb started although this host has no IPVS?\n{stderr}");
        }
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(!socket.exists(), "{extra:?}: no control socket for an agent that did not start");
    }
}

/// A keepalived.conf nesting blocks thousands deep overflowed the reader's stack: `lb run` aborted
/// (exit 134). It is a located error like any other.
#[test]
fn deeply_nested_config_is_refused_with_a_located_error() {
    let tmp = scratch_dir("lb-life-").expect("temp dir");
    let cfg = temp(
        &tmp,
        "deep.conf",
        &format!("global_defs {}{}\n", "{ ".repeat(7_000), "} ".repeat(7_000)),
    );
    assert_run_refused(&cfg, "1:77: blocks are nested more than 32 deep");
}

/// `lb reload` of a hostile file (blocks nested thousands deep, TOML arrays as deep, a FIFO in
/// place of the file) is refused with a located error; the agent keeps its old config, keeps
/// answering, and reloads a good file afterwards.
#[test]
fn reload_of_a_hostile_file_keeps_the_agent_and_its_config() {
    let tmp = scratch_dir("lb-life-").expect("temp dir");
    if !require_root("reload_of_a_hostile_file") {
        return;
    }
    let ns = Netns::create(&format!("{}-hostile", unique_prefix())).expect("netns");
    let good = "[[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\ninterface = \"lo\"\n\
                [[virtual_server.real_server]]\naddress = \"192.0.2.11\"\n";
    let cfg = temp(&tmp, "hostile.conf", good);
    let agent = LbAgent::start(&ns, &lb_bin(), &cfg, &["--xdp-mode", "generic"]).expect("agent");
    let deep_keepalived = format!("global_defs {}{}\n", "{ ".repeat(7_000), "} ".repeat(7_000));
    let deep_toml = format!("a = {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    // (case, file content (None: a FIFO), expected error part)
    let cases: &[(&str, Option<&str>, String)] = &[
        (
            "keepalived blocks 7,000 deep",
            Some(&deep_keepalived),
            format!("{}:1:77: blocks are nested more than 32 deep", cfg.display()),
        ),
        ("TOML arrays 100,000 deep", Some(&deep_toml), format!("{}:1:", cfg.display())),
        (
            "a FIFO",
            None,
            format!(
                "{}:1:1: cannot read configuration file: it is a named pipe (FIFO)",
                cfg.display()
            ),
        ),
    ];
    for (name, content, expected) in cases {
        let _ = std::fs::remove_file(&cfg);
        match content {
            Some(text) => std::fs::write(&cfg, text).expect("write"),
            None => {
                let path = std::ffi::CString::new(cfg.to_str().expect("utf-8")).expect("path");
                // SAFETY: a valid NUL-terminated path.
                assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
            }
        }
        let err = agent.reload().expect_err(name).to_string();
        assert!(err.contains(expected.as_str()), "{name}: {err}");
        let v = agent.backends().unwrap_or_else(|e| panic!("{name}: agent answers: {e}"));
        assert_eq!(v["services"][0]["vip"], "192.0.2.100", "{name}: old config kept");
    }
    let _ = std::fs::remove_file(&cfg);
    std::fs::write(&cfg, good.replace("192.0.2.100", "192.0.2.101")).expect("write");
    agent.reload().expect("a good file reloads");
    assert_eq!(agent.backends().expect("backends")["services"][0]["vip"], "192.0.2.101");
    assert!(agent.stop().is_ok());
}

/// `--socket` naming a file that is not a socket (a typo naming the config, say) is refused with
/// a clear error, and the file is left as it was.
#[test]
fn socket_path_that_is_not_a_socket_is_left_alone() {
    // In a namespace of its own: an agent that wrongly started would attach to its `lo` only.
    if !require_root("socket_path_that_is_not_a_socket") {
        return;
    }
    let ns = Netns::create(&format!("{}-typo", unique_prefix())).expect("netns");
    let tmp = scratch_dir("lb-life-").expect("temp dir");
    let cfg = temp(
        &tmp,
        "typo.toml",
        "[[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\ninterface = \"lo\"\n",
    );
    let before = std::fs::read(&cfg).expect("read");
    let lb = lb_bin();
    let out = ns
        .command(&["timeout", "20", lb.to_str().expect("utf-8 path"), "run", "--no-pin", "-c"])
        .arg(&cfg)
        .arg("--socket")
        .arg(&cfg)
        .args(["--xdp-mode", "generic"])
        .output()
        .expect("run lb");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "control socket {}: refusing to replace it, it is not a socket but a regular file",
            cfg.display()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&cfg).expect("the config is still there"), before);
}

/// Whether `pid` blocks or catches SIGTERM (its code runs: the dynamic loader is done).
fn sigterm_held(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    (mask("SigBlk:") | mask("SigCgt:")) & (1 << (libc::SIGTERM - 1)) != 0
}

/// SIGTERM at any point of start-up ends it like a SIGTERM later on: exit 0, nothing left
/// attached, no socket file left behind. Times count from the program's first instructions
/// (before them the dynamic loader runs, and no program can handle a signal), with a real whose
/// MAC never resolves (start-up waits for it) and with none (start-up attaches XDP at once).
#[test]
fn sigterm_during_start_up_stops_cleanly() {
    if !require_root("sigterm_during_start_up") {
        return;
    }
    let ns = Netns::create(&format!("{}-early", unique_prefix())).expect("netns");
    ns.ip(&["link", "set", "lo", "up"]).expect("lo up");
    // A segment where nobody answers ARP: the real's MAC never resolves.
    ns.ip(&["link", "add", "e0", "type", "veth", "peer", "name", "e1"]).expect("veth");
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "e0"]).expect("address");
    for dev in ["e0", "e1"] {
        ns.ip(&["link", "set", dev, "up"]).expect("link up");
    }
    let service = "[[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\ninterface = \"lo\"\n";
    let tmp = scratch_dir("lb-life-").expect("temp dir");
    let unresolved = temp(
        &tmp,
        "early-unresolved.toml",
        &(service.replace("\"lo\"", "\"e0\"")
            + "[[virtual_server.real_server]]\naddress = \"192.0.2.11\"\n"),
    );
    let attach_at_once = temp(&tmp, "early-attach.toml", service);
    let mut failures = Vec::new();
    for cfg in [&unresolved, &attach_at_once] {
        for delay_ms in [0u64, 20, 50, 100, 200, 300, 500] {
            let socket = cfg.with_extension(format!("{delay_ms}.sock"));
            let mut cmd = ns.command_direct(&lb_bin()).expect("command");
            cmd.args(["run", "--no-pin", "-c"]).arg(cfg).arg("--socket").arg(&socket);
            cmd.args(["--xdp-mode", "generic"]);
            let mut agent = Process::spawn(cmd, &format!("lb run (SIGTERM at {delay_ms} ms)"))
                .expect("spawn lb run");
            // An agent that never holds SIGTERM still gets it, 100 ms late.
            lb_tests::wait_until(std::time::Duration::from_millis(100), || {
                sigterm_held(agent.pid())
            });
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            agent.signal(libc::SIGTERM).expect("SIGTERM");
            let status = agent.wait_timeout(std::time::Duration::from_secs(10)).expect("wait");
            let log = agent.stderr_so_far();
            let link = ns.ip(&["link", "show", "lo"]).expect("ip link");
            let wrong = match status {
                None => Some("no exit within 10 s".to_owned()),
                Some(s) if !s.success() => Some(format!("exited with {s}")),
                Some(_) if socket.exists() => Some("socket file left behind".to_owned()),
                Some(_) if link.contains("xdp") => Some(format!("XDP still attached: {link}")),
                Some(_) => None,
            };
            let what = format!("{}, SIGTERM at {delay_ms} ms", cfg.display());
            let last = log.lines().last().unwrap_or_default().to_owned();
            eprintln!("{what}: {}", wrong.as_deref().unwrap_or(&last));
            if let Some(w) = wrong {
                failures.push(format!("{what}: {w}; stderr:\n{log}"));
            }
            let _ = std::fs::remove_file(&socket);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
