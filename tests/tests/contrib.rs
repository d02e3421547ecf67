//! The shipped systemd unit: valid (systemd-analyze verify, where systemd is installed) and
//! granting exactly the capabilities the agent needs.

use std::{path::Path, process::Command};

use lb_tests::lb_bin;

fn unit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/lb.service");
    std::fs::read_to_string(path).expect("contrib/lb.service")
}

#[test]
fn unit_runs_lb_as_non_root_with_only_the_needed_capabilities() {
    let text = unit();
    let value = |key: &str| -> Vec<String> {
        text.lines().filter_map(|l| l.strip_prefix(&format!("{key}="))).map(str::to_owned).collect()
    };
    assert_eq!(value("User"), ["lb"], "runs as a dedicated user");
    let caps = "CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_NET_RAW";
    assert_eq!(value("AmbientCapabilities"), [caps]);
    assert_eq!(value("CapabilityBoundingSet"), [caps]);
    assert_eq!(value("NoNewPrivileges"), ["yes"]);
    let exec = value("ExecStart");
    assert!(exec.len() == 1 && exec[0].contains(" run -c "), "{exec:?}");
    assert_eq!(value("ExecReload"), ["/bin/kill -HUP $MAINPID"], "reload is SIGHUP");
    // The agent speaks sd_notify (READY=1 once forwarding, WATCHDOG=1): systemd must listen.
    assert_eq!(value("Type"), ["notify"]);
    assert_eq!(value("NotifyAccess"), ["main"]);
    assert_eq!(value("WatchdogSec").len(), 1, "a watchdog");
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("SKIP: systemd-analyze is not installed");
        return;
    }
    let bin = lb_bin();
    if !bin.is_file() {
        panic!("lb binary {} not built", bin.display());
    }
    // Verify needs ExecStart to exist: point it at the built binary.
    let dir = lb_tests::scratch_dir("lb-unit-").expect("temp dir");
    let path = dir.path().join("lb.service");
    std::fs::write(&path, unit().replace("/usr/local/bin/lb", &bin.to_string_lossy()))
        .expect("write unit");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed: {stderr}");
}

/// The example config the package installs as /etc/lb/lb.toml passes `lb check` as shipped.
#[test]
fn example_config_passes_lb_check() {
    let bin = lb_bin();
    if !bin.is_file() {
        panic!("lb binary {} not built", bin.display());
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/lb.toml");
    let out = Command::new(&bin).args(["check", "-c"]).arg(&path).output().expect("lb check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "lb check failed: {stdout}");
    assert!(stdout.contains(": ok (TOML, 0 virtual servers"), "{stdout}");
}
