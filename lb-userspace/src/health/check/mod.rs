//! keepalived's checkers, one attempt each. Every checker bounds itself in time and turns every
//! failure into a down [`Outcome`] with a message an operator can act on; none panics or returns
//! an error to the caller.

pub mod dns;
pub mod http;
pub mod misc;
pub mod ping;
pub mod tcp;
mod tls;
pub mod udp;

use std::{
    error::Error,
    fmt,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use super::probe::Probe;
use crate::config::health::{CheckKind, HealthCheck};

/// The result of one check attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// A weight the check asks for (MISC_CHECK with `misc_dynamic`); `None` leaves it unchanged.
    pub weight: Option<u32>,
    /// What happened, for `lb backends` and logs. Stable across identical attempts (no timings),
    /// so that an unchanged real does not look changed.
    pub message: String,
    /// How long the attempt took.
    pub latency: Duration,
    /// The agent lacked a resource (file descriptor, buffer, memory) to try: the attempt says
    /// nothing about the real, whose state stays as it was.
    pub not_run: bool,
}

impl Outcome {
    pub fn up(message: impl Into<String>, started: Instant) -> Self {
        Outcome {
            ok: true,
            weight: None,
            message: message.into(),
            latency: started.elapsed(),
            not_run: false,
        }
    }

    pub fn down(message: impl Into<String>, started: Instant) -> Self {
        Outcome { ok: false, ..Outcome::up(message, started) }
    }

    /// An attempt the agent could not make for lack of a resource of its own.
    pub fn not_run(message: impl fmt::Display, started: Instant) -> Self {
        Outcome {
            not_run: true,
            ..Outcome::down(format!("internal error: check not run: {message}"), started)
        }
    }

    /// Up with the success message, or down with the error's (not run if the error is the
    /// agent's own shortage).
    pub fn from_result<E: Error + 'static>(result: Result<String, E>, started: Instant) -> Self {
        match result {
            Ok(message) => Outcome::up(message, started),
            Err(e) => Outcome::from_error(&e, &e, started),
        }
    }

    /// Down with `message`, or not run when `error` (or its cause) is a local shortage.
    pub fn from_error(
        message: &dyn fmt::Display,
        error: &(dyn Error + 'static),
        started: Instant,
    ) -> Self {
        if local_shortage(error) {
            Outcome::not_run(message, started)
        } else {
            Outcome::down(message.to_string(), started)
        }
    }
}

/// Whether `error` or one of its causes says this host ran out of something (file descriptors,
/// socket buffers, memory) rather than anything about the real.
pub fn local_shortage(error: &(dyn Error + 'static)) -> bool {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.raw_os_error(),
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
            )
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Port used by DNS_CHECK when neither the check nor the real names one.
pub const DNS_PORT: u16 = 53;

/// Extra time given to a checker beyond its own timeout before the runner gives up on it: the
/// checkers bound themselves, this only guards against a bug hanging a check forever.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(1);

/// A check that cannot say where to go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "no port to check: the real has port 0 (all-ports service) and the check has no connect_port"
    )]
    NoPort,
}

/// Where a check connects: `connect_ip` / `connect_port` when set, else the real's address and
/// port. DNS_CHECK falls back to port 53 for a real without one; PING_CHECK and MISC_CHECK ignore
/// the port.
pub fn target(
    check: &HealthCheck,
    real: IpAddr,
    real_port: u16,
) -> Result<SocketAddr, TargetError> {
    let ip = check.connect_ip.unwrap_or(real);
    let port = match (check.connect_port, &check.kind) {
        (Some(port), _) if port != 0 => port,
        (_, CheckKind::Ping | CheckKind::Misc(_)) => real_port,
        (_, CheckKind::Dns(_)) if real_port == 0 => DNS_PORT,
        (_, _) if real_port == 0 => return Err(TargetError::NoPort),
        (_, _) => real_port,
    };
    Ok(SocketAddr::new(ip, port))
}

/// How long one attempt of `check` may take.
pub fn attempt_timeout(check: &HealthCheck) -> Duration {
    match &check.kind {
        CheckKind::Misc(misc) => misc.timeout,
        _ => check.connect_timeout,
    }
}

/// Runs one attempt of `check` against the real `real`:`real_port`; a check `through_vip`
/// goes by `probe`, the real's (see [`super::probe`]).
pub async fn run(
    check: &HealthCheck,
    real: IpAddr,
    real_port: u16,
    probe: Option<&Probe>,
) -> Outcome {
    let started = Instant::now();
    let addr = match target(check, real, real_port) {
        Ok(addr) => addr,
        Err(e) => return Outcome::down(e.to_string(), started),
    };
    if !check.through_vip {
        return attempt(check, addr).await;
    }
    let through = |why: &str| Outcome::down(format!("through_vip: {why}"), started);
    match probe {
        None => through("no probe target for this real"),
        Some(Probe::Unsupported(why)) => through(why),
        // ICMP errors about a translated check are not translated back: without a reply to
        // wait for, such a check would pass whatever the real does.
        Some(Probe::Path { target, .. })
            if target.family != target.real_family
                && matches!(&check.kind, CheckKind::Udp(u) if !u.require_reply) =>
        {
            through(
                "a UDP check without require_reply to a real of the other address family than \
                 the VIP cannot see ICMP errors (not translated): set require_reply = true",
            )
        }
        Some(Probe::Path { mark, .. }) => match super::probe::path_error(*mark) {
            Some(why) => through(&why),
            None => {
                let outcome = super::probe::with_mark(*mark, attempt(check, addr)).await;
                // The address in the checker's words is the real's; say which path failed.
                match outcome.ok {
                    true => outcome,
                    false => Outcome {
                        message: format!("through the VIP: {}", outcome.message),
                        ..outcome
                    },
                }
            }
        },
    }
}

/// One attempt of `check` to `addr`.
async fn attempt(check: &HealthCheck, addr: SocketAddr) -> Outcome {
    let timeout = check.connect_timeout;
    match &check.kind {
        CheckKind::Tcp => tcp::run(addr, check.bindto, timeout).await,
        CheckKind::Http(params) => http::run(addr, params, false, check.bindto, timeout).await,
        CheckKind::Ssl(params) => http::run(addr, params, true, check.bindto, timeout).await,
        CheckKind::Misc(params) => misc::run(params).await,
        CheckKind::Dns(params) => dns::run(addr, params, check.bindto, timeout).await,
        CheckKind::Udp(params) => udp::run(addr, params, check.bindto, timeout).await,
        CheckKind::Ping => ping::run(addr.ip(), check.bindto, timeout).await,
    }
}

/// The address to bind a check's socket to: `bindto`, or the unspecified address of the target's
/// family. A `bindto` of the other family cannot work; it is reported rather than ignored.
pub(crate) fn bind_addr(target: IpAddr, bindto: Option<IpAddr>) -> Result<SocketAddr, BindError> {
    match bindto {
        Some(ip) if ip.is_ipv4() != target.is_ipv4() => Err(BindError { bindto: ip, target }),
        Some(ip) => Ok(SocketAddr::new(ip, 0)),
        None if target.is_ipv4() => Ok(SocketAddr::new(IpAddr::from([0u8; 4]), 0)),
        None => Ok(SocketAddr::new(IpAddr::from([0u16; 8]), 0)),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bindto {bindto} and target {target} are of different address families")]
pub struct BindError {
    bindto: IpAddr,
    target: IpAddr,
}

#[cfg(test)]
pub(crate) mod testing {
    use std::time::Duration;

    use crate::config::{
        Location,
        health::{CheckKind, HealthCheck},
    };

    /// A check with short timings for tests.
    pub fn check(kind: CheckKind) -> HealthCheck {
        HealthCheck {
            kind,
            connect_timeout: Duration::from_secs(2),
            connect_ip: None,
            connect_port: None,
            bindto: None,
            retry: 0,
            delay_before_retry: Duration::from_millis(100),
            warmup: None,
            rise: 1,
            through_vip: false,
            location: Location::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::health::{DnsCheck, MiscCheck, UdpCheck};

    #[test]
    fn targets() {
        let real: IpAddr = "192.0.2.11".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        let dns = CheckKind::Dns(DnsCheck { name: ".".into(), qtype: "SOA".into() });
        let misc = CheckKind::Misc(MiscCheck {
            path: "true".into(),
            timeout: Duration::from_secs(1),
            dynamic: false,
        });
        let udp = CheckKind::Udp(UdpCheck { payload: vec![], require_reply: false });
        // (kind, connect_ip, connect_port, real port, expected)
        type Case =
            (CheckKind, Option<IpAddr>, Option<u16>, u16, Result<(IpAddr, u16), TargetError>);
        let table: Vec<Case> = vec![
            (CheckKind::Tcp, None, None, 80, Ok((real, 80))),
            (CheckKind::Tcp, Some(other), Some(8080), 80, Ok((other, 8080))),
            (CheckKind::Tcp, None, Some(8080), 0, Ok((real, 8080))),
            (CheckKind::Tcp, None, None, 0, Err(TargetError::NoPort)),
            (CheckKind::Tcp, None, Some(0), 0, Err(TargetError::NoPort)),
            (udp, None, None, 0, Err(TargetError::NoPort)),
            (dns.clone(), None, None, 0, Ok((real, 53))),
            (dns.clone(), None, None, 5353, Ok((real, 5353))),
            (dns, None, Some(54), 5353, Ok((real, 54))),
            (CheckKind::Ping, Some(other), None, 0, Ok((other, 0))),
            (misc, None, None, 0, Ok((real, 0))),
        ];
        for (kind, ip, port, real_port, want) in table {
            let mut c = testing::check(kind);
            c.connect_ip = ip;
            c.connect_port = port;
            let got = target(&c, real, real_port);
            assert_eq!(got, want.map(|(ip, port)| SocketAddr::new(ip, port)), "{:?}", c.kind);
        }
    }

    #[test]
    fn bind_addresses() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(bind_addr(v4, None).unwrap().to_string(), "0.0.0.0:0");
        assert_eq!(bind_addr(v6, None).unwrap().to_string(), "[::]:0");
        assert_eq!(bind_addr(v4, Some(v4)).unwrap().to_string(), "127.0.0.1:0");
        assert!(bind_addr(v4, Some(v6)).is_err());
    }

    #[tokio::test]
    async fn port_zero_fails_with_a_clear_message() {
        let out = run(&testing::check(CheckKind::Tcp), "127.0.0.1".parse().unwrap(), 0, None).await;
        assert!(!out.ok);
        assert!(out.message.contains("connect_port"), "{}", out.message);
    }

    /// A check through the VIP never falls back to the real's own address: without a usable
    /// probe it is down with the reason, although the real's own address answers.
    #[tokio::test]
    async fn through_vip_without_a_probe_path_is_down_with_the_reason() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let real: IpAddr = "127.0.0.1".parse().unwrap();
        let plain = testing::check(CheckKind::Tcp);
        assert!(run(&plain, real, port, None).await.ok, "the real's own address answers");
        let through = HealthCheck { through_vip: true, ..plain };
        let unsupported = Probe::Unsupported("a NAT real does not hold the VIP".to_owned());
        let path =
            Probe::Path { mark: lb_common::probe::MARK_BASE + 1, target: Default::default() };
        // An IPv4 VIP on an IPv6 real (translated on the way).
        let target = lb_common::probe::ProbeTarget {
            family: lb_common::FAMILY_V4,
            real_family: lb_common::FAMILY_V6,
            ..Default::default()
        };
        let mixed = Probe::Path { mark: lb_common::probe::MARK_BASE + 1, target };
        let udp = |require_reply| HealthCheck {
            kind: CheckKind::Udp(crate::config::health::UdpCheck {
                payload: Vec::new(),
                require_reply,
            }),
            ..through.clone()
        };
        for (check, probe, why) in [
            (&through, None, "no probe target"),
            (&through, Some(&unsupported), "a NAT real does not hold the VIP"),
            // No probe edge holds its target.
            (&through, Some(&path), "no target for this check"),
            (&through, Some(&mixed), "no target for this check"),
            // ICMP errors are not translated: only a reply can tell.
            (&udp(false), Some(&mixed), "set require_reply = true"),
            (&udp(true), Some(&mixed), "no target for this check"),
            (&udp(false), Some(&path), "no target for this check"),
        ] {
            let out = run(check, real, port, probe).await;
            assert!(!out.ok, "{why}");
            assert!(out.message.starts_with("through_vip: "), "{}", out.message);
            assert!(out.message.contains(why), "{}", out.message);
        }
    }

    /// The agent's own shortage is "not run", wherever the checker met it; anything else,
    /// including errors that look alike but are about the real, is down.
    #[test]
    fn local_shortages_are_not_failures() {
        use std::io;
        let target: SocketAddr = "192.0.2.11:80".parse().unwrap();
        let started = Instant::now();
        let os = io::Error::from_raw_os_error;
        let connect = |e| tcp::ConnectError::Connect { target, source: os(e) };
        let table: Vec<(Outcome, bool)> = vec![
            (Outcome::from_result::<tcp::ConnectError>(Err(connect(libc::EMFILE)), started), true),
            (Outcome::from_result::<tcp::ConnectError>(Err(connect(libc::ENFILE)), started), true),
            (Outcome::from_result::<tcp::ConnectError>(Err(connect(libc::ENOBUFS)), started), true),
            (
                Outcome::from_result::<http::HttpError>(
                    Err(http::HttpError::Connect(connect(libc::EMFILE))),
                    started,
                ),
                true,
            ),
            (
                Outcome::from_result::<udp::UdpError>(
                    Err(udp::UdpError::Socket(os(libc::EMFILE))),
                    started,
                ),
                true,
            ),
            (
                Outcome::from_result::<dns::DnsError>(
                    Err(dns::DnsError::Socket(os(libc::ENFILE))),
                    started,
                ),
                true,
            ),
            (
                Outcome::from_result::<ping::PingError>(
                    Err(ping::PingError::Socket { dgram: os(libc::EMFILE), raw: os(libc::EMFILE) }),
                    started,
                ),
                true,
            ),
            (
                Outcome::from_result::<tcp::ConnectError>(
                    Err(connect(libc::ECONNREFUSED)),
                    started,
                ),
                false,
            ),
            (
                Outcome::from_result::<tcp::ConnectError>(
                    Err(connect(libc::EHOSTUNREACH)),
                    started,
                ),
                false,
            ),
            (
                Outcome::from_result::<udp::UdpError>(
                    Err(udp::UdpError::Icmp(os(libc::ECONNREFUSED))),
                    started,
                ),
                false,
            ),
            (Outcome::from_result::<tcp::ConnectError>(Ok("connected".into()), started), false),
        ];
        for (i, (out, not_run)) in table.into_iter().enumerate() {
            assert_eq!(out.not_run, not_run, "case {i}: {}", out.message);
            if not_run {
                assert!(!out.ok, "case {i}");
                assert!(
                    out.message.starts_with("internal error: check not run: "),
                    "{}",
                    out.message
                );
            }
        }
    }
}
