//! Network-namespace harness for the director's integration tests and `cargo xtask demo`.
//!
//! Every topology gets a unique namespace prefix ([`unique_prefix`]), lives entirely inside
//! namespaces it creates (the bridge too, in a `switch` namespace), and is torn down by RAII guards
//! ([`Topology`], [`Netns`], [`Process`]) that also run during a panic unwind. See
//! docs/testing.md for the measured facts this follows.

pub mod bgp;
pub mod bpffs;
pub mod director;
pub mod gated;
pub mod keepalived;
pub mod longlived;
pub mod topology;
pub mod webdriver;

/// The namespace and child-process guards live in lb-test-support (feature `netns`), shared with
/// the guest labs; these paths stay for the tests that name them.
pub use lb_test_support::{netns, process};

pub use bpffs::BpfFs;
pub use director::{LbAgent, count_http};
pub use gated::GatedFile;
pub use lb_test_support::lb_bin;
pub use longlived::{
    ConnError, ConnErrorKind, ConnReport, LongLived, LongLivedOptions, Report as LongLivedReport,
};
pub use netns::{Netns, cleanup_orphans, cleanup_stale, list_netns, unique_prefix};
pub use process::{Process, run_command};
pub use topology::{
    BRIDGE, BridgeMode, DR_HTTP_PORT, DR_TCP_ECHO_PORT, DR_UDP_PORT, DrTopology, HOST_IFNAME, Host,
    Topology, format_mac, spawn_testpeer,
};

use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// A fresh folder `<temp>/<prefix>XXXXXX`, removed with everything in it when the guard drops
/// (also during a panic unwind).
pub fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .with_context(|| format!("creating a temporary folder {prefix}*"))
}

// One definition for every test kind (unit, lab, guest): a skip reads the same everywhere.
pub use lb_test_support::{require_program, require_root};

/// Polls `cond` every 20 ms until it is true (→ true) or `timeout` passes (→ false); checks once
/// more at the deadline.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20).min(deadline - now));
    }
}

/// `curl -sS --max-time 2 URL` inside `ns`; the body on success, an error quoting curl otherwise.
/// Proxies are disabled: test traffic must never leave the namespaces.
pub fn http_get(ns: &Netns, url: &str) -> Result<String> {
    let out = ns
        .exec(&["curl", "-sS", "--noproxy", "*", "--max-time", "2", url])
        .with_context(|| format!("[{}] GET {url}", ns.name()))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Sends one UDP datagram from `ns` (ephemeral port) to `target` and returns the first reply that
/// comes from `target`.
pub fn udp_request(
    ns: &Netns,
    target: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>> {
    let payload = payload.to_vec();
    ns.run_in(move || -> Result<Vec<u8>> {
        let bind: SocketAddr =
            if target.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
        let sock = UdpSocket::bind(bind)?;
        sock.send_to(&payload, target)?;
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no UDP reply from {target} within {timeout:?}");
            }
            sock.set_read_timeout(Some(left))?;
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == target => return Ok(buf[..n].to_vec()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    bail!("no UDP reply from {target} within {timeout:?}")
                }
                Err(e) => return Err(e.into()),
            }
        }
    })?
    .with_context(|| format!("[{}] UDP to {target}", ns.name()))
}

/// Opens a TCP connection from inside `ns`; the stream can then be used from any thread (for
/// long-lived connection tests).
pub fn tcp_connect(ns: &Netns, target: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    ns.run_in(move || TcpStream::connect_timeout(&target, timeout))?
        .with_context(|| format!("[{}] TCP connect to {target}", ns.name()))
}
