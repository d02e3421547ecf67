//! Named network namespaces (`ip netns`), deleted when their last handle drops.

use crate::process::{DEFAULT_COMMAND_TIMEOUT, Process, describe, run_command};
use anyhow::{Context, Result, bail};
use lb_test_support::lab;
pub use lb_test_support::lab::unique_prefix;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where iproute2 keeps the bind mounts of named namespaces.
const NETNS_RUN_DIR: &str = "/run/netns";

/// A named network namespace. Clones share it; it is deleted (`ip netns del`) when the last clone
/// drops or on an explicit [`Netns::delete`]. Processes spawned inside are not tracked here: their
/// [`Process`] guards kill them.
#[derive(Clone)]
pub struct Netns {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    deleted: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.deleted.swap(true, Ordering::SeqCst)
            && let Err(e) = delete_netns(&self.name)
        {
            eprintln!("lb-tests: could not delete netns {}: {e:#}", self.name);
        }
    }
}

impl std::fmt::Debug for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Netns({})", self.inner.name)
    }
}

impl Netns {
    /// Creates the namespace `name` (fails if it exists) and brings its `lo` up.
    pub fn create(name: &str) -> Result<Netns> {
        validate_name(name)?;
        // No locking needed: iproute2 itself flocks /run/netns around the first-time mount setup
        // (taking that lock here too would deadlock).
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "add", name]);
        run_command(cmd, DEFAULT_COMMAND_TIMEOUT)?;
        let ns = Netns {
            inner: Arc::new(Inner { name: name.to_string(), deleted: AtomicBool::new(false) }),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A `Command` for `ip netns exec NAME args...`, for callers that need env vars etc.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.name()]).args(args);
        cmd
    }

    /// A `Command` for `program` started directly inside the namespace (`setns` between fork
    /// and exec, no `ip` in between): its pid is the program's from the first instant, so a
    /// signal sent right after spawning reaches the program itself.
    pub fn command_direct(&self, program: &Path) -> Result<Command> {
        use std::os::unix::process::CommandExt as _;
        self.check_alive()?;
        let path = format!("{NETNS_RUN_DIR}/{}", self.name());
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        let mut cmd = Command::new(program);
        // SAFETY: only async-signal-safe calls (setns) between fork and exec; the fd is
        // close-on-exec and stays open in the parent while the closure lives.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Runs `args` inside the namespace; errors (quoting stderr) unless it exits 0.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        self.exec_timeout(args, DEFAULT_COMMAND_TIMEOUT)
    }

    /// [`Netns::exec`] with an explicit time limit (the command is killed after it).
    pub fn exec_timeout(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        self.check_alive()?;
        run_command(self.command(args), timeout)
    }

    /// Runs `args` inside the namespace and returns its stdout (lossy UTF-8).
    pub fn run_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.exec(args)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `ip -n NAME args...` (cheaper than `exec`: no mount namespace) and returns stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        self.check_alive()?;
        let mut cmd = Command::new("ip");
        cmd.args(["-n", self.name()]).args(args);
        let out = run_command(cmd, DEFAULT_COMMAND_TIMEOUT)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `args` inside the namespace; the returned guard kills its process group on drop.
    pub fn spawn(&self, args: &[&str]) -> Result<Process> {
        self.check_alive()?;
        let cmd = self.command(args);
        let label = format!("[{}] {}", self.name(), describe(&cmd));
        Process::spawn(cmd, &label)
    }

    /// Sets a sysctl of this namespace, e.g. `sysctl("net.ipv4.conf.all.arp_ignore", "1")`.
    /// Only `net.*` keys are per-namespace; others would change the host and are refused.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key)?;
        let value = value.to_string();
        self.run_in(move || std::fs::write(&path, value.as_bytes()))?
            .with_context(|| format!("[{}] sysctl {key}", self.name()))
    }

    /// Reads a sysctl of this namespace (trimmed).
    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        let path = sysctl_path(key)?;
        let v = self
            .run_in(move || std::fs::read_to_string(&path))?
            .with_context(|| format!("[{}] reading sysctl {key}", self.name()))?;
        Ok(v.trim().to_string())
    }

    /// Runs `f` on a scoped thread that has joined this namespace (`setns`), so sockets it creates
    /// live there. Sockets returned from `f` stay in this namespace and can be used from any thread.
    /// A panic inside `f` is propagated.
    pub fn run_in<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        self.check_alive()?;
        lb_test_support::in_netns(self.name(), f)
            .with_context(|| format!("joining namespace {}", self.name()))
    }

    /// Sends ICMP echo requests to `addr` (raw socket, no `ping` binary needed) until one is answered
    /// or `timeout` passes; returns the round-trip time.
    pub fn ping(&self, addr: IpAddr, timeout: Duration) -> Result<Duration> {
        self.run_in(move || crate::icmp::ping(addr, timeout))?
            .with_context(|| format!("[{}] ping {addr}", self.name()))
    }

    /// Deletes the namespace now (idempotent); later commands on clones fail.
    pub fn delete(&self) -> Result<()> {
        if self.inner.deleted.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        delete_netns(self.name())
    }

    fn check_alive(&self) -> Result<()> {
        if self.inner.deleted.load(Ordering::SeqCst) {
            bail!("netns {} was already deleted", self.name());
        }
        Ok(())
    }
}

/// Names of all named namespaces (`ip netns list`).
pub fn list_netns() -> Result<Vec<String>> {
    Ok(lab::list_namespaces()?)
}

/// Removes leftovers of crashed runs: for every namespace whose name starts with `prefix`, SIGKILLs
/// the processes inside it (`ip netns pids`) and deletes it. Returns the names removed.
///
/// Only call it with a prefix no live test is using (e.g. one from [`unique_prefix`]); to clean up
/// after dead test processes without that knowledge, use [`cleanup_orphans`].
pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>> {
    if prefix.len() < 3 {
        bail!("cleanup_stale: prefix {prefix:?} is too broad");
    }
    let stale: Vec<String> = list_netns()?.into_iter().filter(|n| n.starts_with(prefix)).collect();
    for name in &stale {
        lab::remove_with_processes(name)?;
    }
    Ok(stale)
}

/// Removes namespaces made by any lab ([`unique_prefix`] names, lb-test-support's naming) whose
/// creating process is gone, e.g. after a test binary was SIGKILLed. Namespaces of live processes
/// are never touched.
pub fn cleanup_orphans() -> Result<Vec<String>> {
    Ok(lab::remove_orphans()?)
}

fn delete_netns(name: &str) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "del", name]);
    match run_command(cmd, DEFAULT_COMMAND_TIMEOUT) {
        Ok(_) => Ok(()),
        Err(e) if format!("{e:#}").contains("No such file") => Ok(()),
        Err(e) => Err(e),
    }
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok {
        bail!("bad namespace name {name:?}");
    }
    Ok(())
}

fn sysctl_path(key: &str) -> Result<String> {
    if !key.starts_with("net.") && !key.starts_with("net/") {
        bail!("sysctl {key:?} is not per-namespace; refusing to change the host");
    }
    if key.contains("..") {
        bail!("bad sysctl key {key:?}");
    }
    // Like sysctl(8): dots separate components unless slashes are used.
    let rel = if key.contains('/') { key.to_string() } else { key.replace('.', "/") };
    Ok(format!("/proc/sys/{rel}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys_are_confined_to_net() {
        assert_eq!(
            sysctl_path("net.ipv4.conf.eth0.arp_ignore").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0/arp_ignore"
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.5/arp_ignore").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0.5/arp_ignore"
        );
        assert!(sysctl_path("kernel.panic").is_err());
        assert!(sysctl_path("net/../kernel/panic").is_err());
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("lb0000a000-sw").is_ok());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("..").is_err());
    }
}
