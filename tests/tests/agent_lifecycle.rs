//! The agent never starts half-configured: a bad config, or a second agent on the same socket,
//! fails before anything is attached.

use std::{path::PathBuf, process::Command};

use lb_tests::{LbAgent, Netns, lb_bin, require_root, scratch_dir, unique_prefix};
use tempfile::TempDir;

fn temp(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn bad_config_stops_the_agent_before_it_starts() {
    let tmp = scratch_dir("lb-life-").expect("temp dir");
    let cfg = temp(
        &tmp,
        "bad.toml",
        "[[virtual_server]]\nvip = \"192.0.2.1000\"\nport = 80\ninterface = \"lo\"\n",
    );
    let socket = cfg.with_extension("sock");
    let out = Command::new(lb_bin())
        .args(["run", "-c"])
        .arg(&cfg)
        .arg("--socket")
        .arg(&socket)
        .output()
        .expect("run lb");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:2:7: `vip` must be an IP address", cfg.display())),
        "{stderr}"
    );
    assert!(!socket.exists(), "no control socket for an agent that did not start");
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
        .command(&[&bin, "run", "-c", &cfg_s, "--socket", &socket])
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
    assert!(String::from_utf8_lossy(&check.stdout).contains(&expected), "lb check: {check:?}");

    let socket = cfg.with_extension("sock");
    let socket_s = socket.to_str().expect("utf-8 path");
    // `timeout`: were the real accepted, the agent would run; it must not hang the test.
    let run = ns
        .command(&["timeout", "20", lb, "run", "-c", cfg_s, "--socket", socket_s])
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
            ":1:1: virtual server 192.0.2.100:80/tcp: `lb_kind NAT` (only direct routing runs on \
             XDP) needs the IPVS dataplane, which is not usable here",
        ),
        (&nat, &["--dataplane", "ipvs"], "--dataplane ipvs: IPVS"),
        (
            &nat,
            &["--dataplane", "xdp"],
            "`lb_kind NAT` (only direct routing runs on XDP): it cannot run with --dataplane xdp",
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
            .command(&["timeout", "20", lb.to_str().expect("utf-8 path"), "run", "-c"])
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
    let socket = cfg.with_extension("sock");
    let out = Command::new(lb_bin())
        .args(["run", "-c"])
        .arg(&cfg)
        .arg("--socket")
        .arg(&socket)
        .output()
        .expect("run lb");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:1:77: blocks are nested more than 32 deep", cfg.display())),
        "{stderr}"
    );
    assert!(!socket.exists(), "no control socket for an agent that did not start");
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
                [[virtual_server.real_server]]\naddress = \"127.0.0.2\"\n";
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
