//! Running the real `lb` binary in a director namespace, and reading it back through its CLI, the
//! way an operator would. Shared by the integration tests and `cargo xtask demo`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{Netns, Process, http_get, wait_until};

/// A running `lb run`; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct LbAgent {
    process: Option<Process>,
    bin: PathBuf,
    socket: PathBuf,
    /// Holds the socket; removed on drop (after the agent has stopped: fields drop last).
    dir: tempfile::TempDir,
}

impl LbAgent {
    /// Starts `lb run -c CONFIG` inside `ns` with a private control socket and waits until the
    /// agent answers on it.
    pub fn start(ns: &Netns, bin: &Path, config: &Path, extra: &[&str]) -> Result<LbAgent> {
        LbAgent::start_with_env(ns, bin, config, extra, &[])
    }

    /// [`LbAgent::start`] with `env` added to the agent's environment (e.g. `JOURNAL_STREAM`).
    pub fn start_with_env(
        ns: &Netns,
        bin: &Path,
        config: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<LbAgent> {
        if !bin.is_file() {
            bail!("lb binary {} not found (build it: cargo build -p lb-userspace)", bin.display());
        }
        let dir = crate::scratch_dir(&format!("lb-agent-{}-", ns.name()))?;
        let socket = dir.path().join("lb.sock");
        let bin_s = bin.to_string_lossy().into_owned();
        let config_s = config.to_string_lossy().into_owned();
        let socket_s = socket.to_string_lossy().into_owned();
        // `env` execs the agent: the spawned pid stays the agent's.
        let assignments: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args: Vec<&str> = Vec::new();
        if !assignments.is_empty() {
            args.push("env");
            args.extend(assignments.iter().map(String::as_str));
        }
        args.extend([bin_s.as_str(), "run", "-c", &config_s, "--socket", &socket_s]);
        // `lb run` pins to /sys/fs/bpf/lb by default: tests never leave pins there, so they opt
        // out unless they pin somewhere of their own (or say how themselves).
        let pins = ["--pin-dir", "--no-pin", "--state-file"];
        if !extra.iter().any(|a| pins.contains(a)) {
            args.push("--no-pin");
        }
        args.extend_from_slice(extra);
        let process = ns.spawn(&args)?;
        let mut agent = LbAgent { process: Some(process), bin: bin.to_owned(), socket, dir };
        let up = wait_until(Duration::from_secs(20), || {
            agent.has_exited() || agent.cli(&["backends", "--json"]).is_ok()
        });
        if !up || agent.has_exited() {
            bail!("lb run did not come up; its stderr:\n{}", agent.stderr());
        }
        Ok(agent)
    }

    fn has_exited(&mut self) -> bool {
        self.process.as_mut().is_none_or(|p| p.try_wait().is_ok_and(|s| s.is_some()))
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The agent's runtime directory (the control socket's): where its dumps go.
    pub fn runtime_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends `sig` to the agent (SIGHUP: reload its config file).
    pub fn signal(&self, sig: i32) -> Result<()> {
        match &self.process {
            Some(p) => p.signal(sig),
            None => bail!("agent already stopped"),
        }
    }

    /// The agent's pid (`ip netns exec` execs it, so the spawned pid is the agent's).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// The agent's log so far.
    pub fn stderr(&self) -> String {
        self.process.as_ref().map(Process::stderr_so_far).unwrap_or_default()
    }

    /// Runs `lb ARGS --socket SOCKET` (from the host: the socket is a file) and returns stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .with_context(|| format!("running lb {args:?}"))?;
        if !out.status.success() {
            bail!("lb {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `lb backends --json`, parsed.
    pub fn backends(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.cli(&["backends", "--json"])?)?)
    }

    /// `lb reload`: the agent re-reads its config file. Fails when the agent refuses the file.
    pub fn reload(&self) -> Result<String> {
        self.cli(&["reload"])
    }

    /// Waits until every backend of every service reports `state`.
    pub fn wait_all_backends(&self, state: &str, timeout: Duration) -> Result<()> {
        let all = || {
            self.backends().is_ok_and(|v| {
                v["services"].as_array().is_some_and(|ss| {
                    ss.iter().all(|s| {
                        s["backends"]
                            .as_array()
                            .is_some_and(|bs| bs.iter().all(|b| b["state"] == state))
                    })
                })
            })
        };
        if !wait_until(timeout, all) {
            bail!("backends did not all become {state}: {:?}", self.backends().ok());
        }
        Ok(())
    }

    /// SIGKILL: the agent dies without cleaning up (a crash).
    pub fn kill(mut self) -> Result<()> {
        if let Some(mut p) = self.process.take() {
            p.kill()?;
        }
        Ok(())
    }

    /// SIGQUIT and wait: with `--pin-dir` the agent exits 0 leaving the dataplane (and its VRRP
    /// masterships) to the next agent. Returns its log.
    pub fn quit(mut self) -> Result<String> {
        let Some(mut p) = self.process.take() else { bail!("agent already stopped") };
        p.signal(libc::SIGQUIT)?;
        let status = p.wait_timeout(Duration::from_secs(10))?;
        let log = p.stderr_so_far();
        match status {
            Some(s) if s.success() => Ok(log),
            Some(s) => bail!("lb run exited with {s} after SIGQUIT; stderr:\n{log}"),
            None => bail!("lb run did not exit within 10 s of SIGQUIT; stderr:\n{log}"),
        }
    }

    /// `lb status --json`, parsed.
    pub fn status(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.cli(&["status", "--json"])?)?)
    }

    /// The state of VRRP instance `name` ("MASTER", "BACKUP", ...), if the agent reports it.
    pub fn vrrp_state(&self, name: &str) -> Option<String> {
        let v = self.status().ok()?;
        v["vrrp"]["instances"].as_array()?.iter().find_map(|i| {
            (i["name"] == name).then(|| i["state"].as_str().unwrap_or_default().to_owned())
        })
    }

    /// SIGTERM and wait: the agent must exit 0 (it detaches XDP and removes its socket).
    pub fn stop(mut self) -> Result<String> {
        let Some(mut p) = self.process.take() else { bail!("agent already stopped") };
        p.signal(libc::SIGTERM)?;
        let status = p.wait_timeout(Duration::from_secs(10))?;
        let log = p.stderr_so_far();
        match status {
            Some(s) if s.success() => Ok(log),
            Some(s) => bail!("lb run exited with {s} after SIGTERM; stderr:\n{log}"),
            None => bail!("lb run did not exit within 10 s of SIGTERM; stderr:\n{log}"),
        }
    }
}

impl Drop for LbAgent {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.signal(libc::SIGTERM);
            if !matches!(p.wait_timeout(Duration::from_secs(5)), Ok(Some(_))) {
                let _ = p.kill();
            }
        }
    }
}

/// Sends `n` HTTP requests from `client` to `url` (one connection each) and counts the answers by
/// body (each real answers with its name). Failed requests count under "(failed)".
pub fn count_http(client: &Netns, url: &str, n: u32) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let who = match http_get(client, url) {
            Ok(body) => body.trim().to_owned(),
            Err(_) => "(failed)".to_owned(),
        };
        *counts.entry(who).or_insert(0) += 1;
    }
    counts
}
