//! Hitless by default: `lb run` without `--pin-dir` pins to /sys/fs/bpf/lb when a bpf filesystem
//! is mounted on /sys/fs/bpf, and says so and runs unpinned when it is not. Each agent runs in a
//! private mount namespace whose /sys/fs/bpf the test mounts (a fresh bpffs, or a tmpfs), so the
//! host's /sys/fs/bpf is never touched.

use std::{net::Ipv4Addr, path::Path, process::Command, time::Duration};

use lb_tests::{DrTopology, lb_bin, require_root, scratch_dir, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn testpeer() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lb-testpeer"))
}

/// What is in the agent's /sys/fs/bpf/lb, seen from its mount namespace (None: no such folder).
fn pinned_files(pid: u32) -> Option<Vec<String>> {
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "ls", "/sys/fs/bpf/lb"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect())
}

#[test]
fn pins_by_default_on_bpffs_and_runs_unpinned_without_it() {
    if !require_root("default pinning") {
        return;
    }
    let dr = DrTopology::build("pd", 1, VIP, testpeer()).expect("topology");
    dr.director.add_addr(&format!("{VIP}/32")).expect("VIP");
    let dir = scratch_dir("lb-pin-default-").expect("scratch");
    let cfg = dir.path().join("lb.toml");
    std::fs::write(&cfg, DrTopology::fast_tcp_check_config(VIP, 1)).expect("config");
    let lb = lb_bin();
    // (case, what /sys/fs/bpf is, pinned, log line)
    let cases = [
        ("bpffs", "mount -t bpf bpf /sys/fs/bpf", true, "pinning the dataplane"),
        ("no bpffs", "mount -t tmpfs tmpfs /sys/fs/bpf", false, "no bpf filesystem at /sys/fs/bpf"),
    ];
    for (case, mount, pinned, line) in cases {
        let socket = dir.path().join(format!("{}.sock", case.replace(' ', "-")));
        let script = format!(
            "{mount} && exec {} run -c {} --socket {} --xdp-mode generic",
            lb.display(),
            cfg.display(),
            socket.display()
        );
        let mut agent = dr
            .director
            .ns
            .spawn(&["unshare", "-m", "--propagation", "private", "sh", "-c", &script])
            .expect("lb run");
        let backends = || {
            Command::new(&lb)
                .args(["backends", "--json", "--socket"])
                .arg(&socket)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let up = wait_until(Duration::from_secs(20), || {
            backends() || agent.try_wait().is_ok_and(|s| s.is_some())
        });
        assert!(up && backends(), "{case}: lb run did not come up:\n{}", agent.stderr_so_far());
        let log = agent.stderr_so_far();
        assert!(log.contains(line), "{case}: no {line:?} in\n{log}");
        let files = pinned_files(agent.pid());
        if pinned {
            let files = files.unwrap_or_default();
            assert!(files.iter().any(|f| f.starts_with("link_")), "{case}: {files:?}");
        } else {
            assert_eq!(files, None, "{case}: nothing pinned");
        }
        agent.signal(libc::SIGTERM).expect("SIGTERM");
        assert!(
            agent.wait_timeout(Duration::from_secs(10)).expect("wait").is_some(),
            "{case}: the agent did not stop"
        );
    }
}
