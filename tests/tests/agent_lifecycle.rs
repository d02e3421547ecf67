//! The agent never starts half-configured: a bad config, or a second agent on the same socket,
//! fails before anything is attached.

use std::{path::PathBuf, process::Command};

use lb_tests::{LbAgent, Netns, lb_bin, require_root, unique_prefix};

fn temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lb-life-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn bad_config_stops_the_agent_before_it_starts() {
    let cfg = temp(
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
    if !require_root("second_agent_on_the_same_socket") {
        return;
    }
    let ns = Netns::create(&format!("{}-life", unique_prefix())).expect("netns");
    let cfg = temp(
        "lo.toml",
        "[[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\ninterface = \"lo\"\n\
         [[virtual_server.real_server]]\naddress = \"127.0.0.2\"\n",
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
