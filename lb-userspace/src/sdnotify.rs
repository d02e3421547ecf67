//! systemd's notify protocol (`Type=notify`): READY=1 once the dataplane is live, STATUS= lines,
//! RELOADING=1 (with MONOTONIC_USEC) around a reload, WATCHDOG=1 at half of WATCHDOG_USEC,
//! STOPPING=1. Datagrams to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace);
//! without it (not under systemd) every call does nothing.

use std::{os::unix::net::UnixDatagram, path::PathBuf, sync::OnceLock, time::Duration};

/// Where the notifications go.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    target: Target,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// A notifier for a `NOTIFY_SOCKET` value; None for an empty or unusable one.
    pub fn new(notify_socket: &str) -> Option<Notifier> {
        let target = match notify_socket.strip_prefix('@') {
            Some(name) if !name.is_empty() => Target::Abstract(name.as_bytes().to_vec()),
            None if notify_socket.starts_with('/') => Target::Path(PathBuf::from(notify_socket)),
            _ => return None,
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, target })
    }

    /// Sends one notification (`KEY=VALUE` lines); a failure is logged, never fatal: the agent
    /// must serve whether or not systemd listens.
    pub fn send(&self, message: &str) {
        let sent = match &self.target {
            Target::Path(p) => self.socket.send_to(message.as_bytes(), p),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|a| self.socket.send_to_addr(message.as_bytes(), &a))
            }
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "sd_notify: not sent");
        }
    }
}

/// The watchdog ping interval: half of `WATCHDOG_USEC`, when it is meant for this process
/// (`WATCHDOG_PID` absent or ours).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(own_pid)) {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();

/// Reads `NOTIFY_SOCKET` once; later calls use it.
pub fn init() {
    NOTIFIER.get_or_init(|| std::env::var("NOTIFY_SOCKET").ok().and_then(|s| Notifier::new(&s)));
}

fn send(message: &str) {
    if let Some(Some(n)) = NOTIFIER.get() {
        n.send(message);
    }
}

/// The dataplane is live: systemd considers the unit started.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={status}"));
}

/// A status line (`systemctl status` shows it).
pub fn status(status: &str) {
    send(&format!("STATUS={status}"));
}

/// A reload begins; [`ready`] ends it.
pub fn reloading() {
    send(&format!("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading", monotonic_usec()));
}

pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping");
}

pub fn watchdog() {
    send("WATCHDOG=1");
}

/// The watchdog interval systemd asked of this process, if any.
pub fn watchdog_from_env() -> Option<Duration> {
    watchdog_interval(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// CLOCK_MONOTONIC in µs, as systemd wants with RELOADING=1.
fn monotonic_usec() -> u64 {
    // SAFETY: clock_gettime fills the timespec we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_values() {
        let cases: &[(&str, Option<Target>)] = &[
            ("/run/systemd/notify", Some(Target::Path("/run/systemd/notify".into()))),
            (
                "@/org/freedesktop/systemd1/notify/1",
                Some(Target::Abstract(b"/org/freedesktop/systemd1/notify/1".to_vec())),
            ),
            ("", None),
            ("@", None),
            ("relative/path", None),
        ];
        for (value, want) in cases {
            assert_eq!(Notifier::new(value).map(|n| n.target), *want, "{value:?}");
        }
    }

    #[test]
    fn watchdog_every_half_of_watchdog_usec_when_meant_for_us() {
        let cases: &[(Option<&str>, Option<&str>, Option<Duration>)] = &[
            (Some("10000000"), None, Some(Duration::from_secs(5))),
            (Some("10000000"), Some("42"), Some(Duration::from_secs(5))),
            (Some("10000000"), Some("43"), None),
            (Some("0"), None, None),
            (Some("x"), None, None),
            (None, None, None),
        ];
        for (usec, pid, want) in cases {
            assert_eq!(watchdog_interval(*usec, *pid, 42), *want, "{usec:?} {pid:?}");
        }
    }

    /// Datagrams reach a fake NOTIFY_SOCKET, on a path and in the abstract namespace.
    #[test]
    fn sends_to_a_fake_notify_socket() {
        let dir = crate::testutil::scratch_dir("lb-sdnotify-");
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).expect("bind");
        server.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let n = Notifier::new(path.to_str().expect("utf-8")).expect("notifier");
        n.send("READY=1\nSTATUS=ok");
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).expect("a datagram");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ok");

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("lb-sdnotify-test-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let server = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        server.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        Notifier::new(&format!("@{name}")).expect("notifier").send("WATCHDOG=1");
        let len = server.recv(&mut buf).expect("a datagram");
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        assert!(monotonic_usec() > 0);
    }
}
