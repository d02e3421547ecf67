//! Debian's keepalived (2.2.7) as a VRRP peer in a test namespace.
//!
//! Runs `keepalived -n -l -D -P -f CONF -p PIDFILE -r VRRP_PIDFILE` (foreground, log to the
//! console, VRRP only: no `virtual_server` blocks, the host kernel has no IPVS) with one
//! `vrrp_instance` and a notify script that appends `<unix time> <STATE>` to a file, which is how
//! tests read keepalived's state. See docs/testing.md for its measured behaviour.
//!
//! keepalived is installed by `cargo xtask` bootstrap; tests never install anything. Use
//! [`require_keepalived`] like [`crate::require_root`]: missing, it fails in CI and skips
//! elsewhere.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::netns::Netns;
use crate::process::Process;

/// One keepalived `vrrp_instance` (named `VI_1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeepalivedConfig {
    pub interface: String,
    pub virtual_router_id: u8,
    pub priority: u8,
    /// As keepalived reads it: "1", "0.1" (v3 only below 1 s).
    pub advert_int: String,
    /// 2 or 3.
    pub version: u8,
    /// `virtual_ipaddress` entries ("192.0.2.200/32", "2001:db8::200/64").
    pub virtual_ipaddress: Vec<String>,
    pub unicast_src_ip: Option<String>,
    pub unicast_peer: Vec<String>,
    /// v2 `authentication { auth_type PASS auth_pass ... }`.
    pub auth_pass: Option<String>,
    pub nopreempt: bool,
}

impl KeepalivedConfig {
    /// VRRPv3 on `eth0`, advert 1 s, multicast, preempting.
    pub fn new(virtual_router_id: u8, priority: u8, vip: &str) -> KeepalivedConfig {
        KeepalivedConfig {
            interface: "eth0".into(),
            virtual_router_id,
            priority,
            advert_int: "1".into(),
            version: 3,
            virtual_ipaddress: vec![vip.into()],
            unicast_src_ip: None,
            unicast_peer: Vec::new(),
            auth_pass: None,
            nopreempt: false,
        }
    }

    /// The configuration file, with `notify` pointing at `notify_script`.
    pub fn render(&self, router_id: &str, notify_script: &Path) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "global_defs {{\n  router_id {router_id}\n  script_user root\n}}");
        let _ = writeln!(c, "vrrp_instance VI_1 {{");
        // keepalived starts in BACKUP whatever this says (unless priority 255).
        let _ = writeln!(c, "  state BACKUP");
        let _ = writeln!(c, "  interface {}", self.interface);
        let _ = writeln!(c, "  virtual_router_id {}", self.virtual_router_id);
        let _ = writeln!(c, "  priority {}", self.priority);
        let _ = writeln!(c, "  advert_int {}", self.advert_int);
        let _ = writeln!(c, "  version {}", self.version);
        if self.nopreempt {
            let _ = writeln!(c, "  nopreempt");
        }
        if let Some(src) = &self.unicast_src_ip {
            let _ = writeln!(c, "  unicast_src_ip {src}");
        }
        if !self.unicast_peer.is_empty() {
            let _ =
                writeln!(c, "  unicast_peer {{\n    {}\n  }}", self.unicast_peer.join("\n    "));
        }
        if let Some(pass) = &self.auth_pass {
            let _ =
                writeln!(c, "  authentication {{\n    auth_type PASS\n    auth_pass {pass}\n  }}");
        }
        let _ = writeln!(
            c,
            "  virtual_ipaddress {{\n    {}\n  }}",
            self.virtual_ipaddress.join("\n    ")
        );
        let _ = writeln!(c, "  notify {}", notify_script.display());
        let _ = writeln!(c, "}}");
        c
    }
}

/// Whether `keepalived` can be run.
pub fn keepalived_available() -> bool {
    Command::new("keepalived")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a keepalived test can run: with `CI=true` a missing keepalived panics (CI installs it
/// through `cargo xtask`); elsewhere it prints `SKIP: ...` and returns false. Check root first
/// ([`crate::require_root`]).
pub fn require_keepalived(test_name: &str) -> bool {
    if keepalived_available() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("!!! {test_name}: keepalived is not installed. CI=true, so this is a failure. !!!");
    }
    let _ = writeln!(std::io::stderr().lock(), "SKIP: {test_name}: keepalived is not installed");
    false
}

/// A running keepalived; killed (parent and VRRP child together) when dropped.
pub struct Keepalived {
    process: Process,
    notify_file: PathBuf,
    /// When it was started.
    pub started: SystemTime,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Keepalived {
    /// Starts keepalived in `ns` with `cfg`; its files go to `dir` (fresh names per start, so a
    /// restart after a crash never trips over stale pid files).
    pub fn start(ns: &Netns, dir: &Path, cfg: &KeepalivedConfig) -> Result<Keepalived> {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tag = format!("ka{}-{n}", std::process::id());
        let notify_file = dir.join(format!("{tag}.states"));
        let script = dir.join(format!("{tag}.notify.sh"));
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$(date +%s.%N) $3\" >> {}\n", notify_file.display()),
        )?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        let conf = dir.join(format!("{tag}.conf"));
        std::fs::write(&conf, cfg.render(&tag, &script))?;
        let path = |p: &PathBuf| p.display().to_string();
        let pid = path(&dir.join(format!("{tag}.pid")));
        let vrrp_pid = path(&dir.join(format!("{tag}.vrrp.pid")));
        let conf = path(&conf);
        let args = ["keepalived", "-n", "-l", "-D", "-P", "-f", &conf, "-p", &pid, "-r", &vrrp_pid];
        let process = ns.spawn(&args)?;
        Ok(Keepalived { process, notify_file, started: SystemTime::now() })
    }

    /// The states its notify script recorded, with their wall-clock times.
    pub fn transitions(&self) -> Vec<(SystemTime, String)> {
        let text = std::fs::read_to_string(&self.notify_file).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (t, state) = l.split_once(' ')?;
                let secs: f64 = t.parse().ok()?;
                Some((UNIX_EPOCH + Duration::from_secs_f64(secs), state.to_string()))
            })
            .collect()
    }

    /// The states recorded so far, in order.
    pub fn states(&self) -> Vec<String> {
        self.transitions().into_iter().map(|(_, s)| s).collect()
    }

    /// The last state recorded.
    pub fn state(&self) -> Option<String> {
        self.states().pop()
    }

    /// Waits until keepalived reports `state` (MASTER, BACKUP, FAULT, STOP) after `since`;
    /// returns when its notify script recorded it.
    pub fn wait_state(
        &self,
        state: &str,
        since: SystemTime,
        timeout: Duration,
    ) -> Result<SystemTime> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.transitions().into_iter().find(|(t, s)| s == state && *t >= since);
            if let Some((t, _)) = found {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                bail!(
                    "keepalived not {state} within {timeout:?} (states {:?}); log:\n{}",
                    self.states(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A crash: SIGKILL to the process group, so the parent and the VRRP child die together
    /// (killing one alone makes the other stop gracefully or respawn it).
    pub fn crash(&mut self) -> Result<()> {
        self.process.kill().map(|_| ())
    }

    /// A graceful stop (SIGTERM): a MASTER sends one priority-0 advert and removes its VIPs.
    pub fn stop(&mut self, timeout: Duration) -> Result<()> {
        self.process.signal(libc::SIGTERM)?;
        if self.process.wait_timeout(timeout)?.is_none() {
            bail!("keepalived still running {timeout:?} after SIGTERM; log:\n{}", self.log());
        }
        Ok(())
    }

    /// Everything it logged (keepalived -l logs to the console).
    pub fn log(&self) -> String {
        format!("{}{}", self.process.stdout_so_far(), self.process.stderr_so_far())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_renders_every_option() {
        let mut c = KeepalivedConfig::new(51, 100, "192.0.2.200/32");
        c.version = 2;
        c.advert_int = "1".into();
        c.unicast_src_ip = Some("192.0.2.11".into());
        c.unicast_peer = vec!["192.0.2.12".into(), "192.0.2.13".into()];
        c.auth_pass = Some("secret12".into());
        c.nopreempt = true;
        let text = c.render("ka1", Path::new("/tmp/n.sh"));
        for want in [
            "router_id ka1",
            "virtual_router_id 51",
            "priority 100",
            "version 2",
            "nopreempt",
            "unicast_src_ip 192.0.2.11",
            "unicast_peer {\n    192.0.2.12\n    192.0.2.13\n  }",
            "auth_type PASS\n    auth_pass secret12",
            "virtual_ipaddress {\n    192.0.2.200/32\n  }",
            "notify /tmp/n.sh",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }
}
