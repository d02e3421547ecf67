//! Health-check settings in the model: keepalived's checkers and their parameters. Front ends fill
//! these; the `health` module runs them.

use std::{net::IpAddr, time::Duration};

use serde::Serialize;

use super::model::Location;

/// keepalived's default `delay_loop`: how often each real is checked.
pub const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
/// keepalived's default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// keepalived's default `retry` (extra attempts before a real is declared down).
pub const DEFAULT_RETRY: u32 = 1;
/// keepalived's default `delay_before_retry`.
pub const DEFAULT_DELAY_BEFORE_RETRY: Duration = Duration::from_secs(1);
/// keepalived's default `misc_timeout`.
pub const DEFAULT_MISC_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-virtual-server health settings (keepalived's names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceHealth {
    /// Interval between checks of each real.
    pub delay_loop: Duration,
    /// `alpha`: reals start down and must pass their checks first (keepalived's meaning).
    pub alpha: bool,
    /// `omega`: run `quorum_down` when the director stops while the quorum was up.
    pub omega: bool,
    /// Sum of the weights of up reals below which the service is down (traffic goes to the sorry
    /// server, or is dropped).
    pub quorum: u32,
    /// Extra weight needed above `quorum` to come back up, and below to go down.
    pub hysteresis: u32,
    pub quorum_up: Option<String>,
    pub quorum_down: Option<String>,
    /// Default for the reals: keep a failed real with weight 0 instead of removing it.
    pub inhibit_on_failure: bool,
}

impl Default for ServiceHealth {
    fn default() -> Self {
        Self {
            delay_loop: DEFAULT_DELAY_LOOP,
            alpha: false,
            omega: false,
            quorum: 1,
            hysteresis: 0,
            quorum_up: None,
            quorum_down: None,
            inhibit_on_failure: false,
        }
    }
}

/// Per-real health settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct RealHealth {
    /// All must pass for the real to be up; none = always up (as keepalived).
    pub checks: Vec<HealthCheck>,
    /// Keep the failed real in the dataplane with weight 0 (established flows continue) instead
    /// of removing it. Defaults to the virtual server's setting.
    pub inhibit_on_failure: bool,
    /// Scripts run on transitions (keepalived's `notify_up` / `notify_down`).
    pub notify_up: Option<String>,
    pub notify_down: Option<String>,
}

/// One checker of one real.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// Time allowed to connect (and, for HTTP, to get the answer).
    pub connect_timeout: Duration,
    /// Check this address instead of the real's (`connect_ip`).
    pub connect_ip: Option<IpAddr>,
    /// Check this port instead of the real's (`connect_port`).
    pub connect_port: Option<u16>,
    /// Source address of the check (`bindto`).
    pub bindto: Option<IpAddr>,
    /// Failed attempts after the first before the real is declared down (`retry`, old
    /// `nb_get_retry`).
    pub retry: u32,
    pub delay_before_retry: Duration,
    /// Random initial delay up to this long, so checks do not all start at once.
    pub warmup: Option<Duration>,
    /// Consecutive successes needed to come back up (default 1, as keepalived).
    pub rise: u32,
    /// Check the VIP on the real (VIP:port sent along the client traffic's path: the real's MAC
    /// for DR, its tunnel for TUN) instead of the real's own address; lb only, default false.
    pub through_vip: bool,
    /// Where the checker's table starts.
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// TCP_CHECK: a TCP connection succeeds.
    Tcp,
    /// HTTP_GET.
    Http(HttpCheck),
    /// SSL_GET: HTTP over TLS.
    Ssl(HttpCheck),
    /// MISC_CHECK: a script's exit code.
    Misc(MiscCheck),
    /// DNS_CHECK: a query gets an answer.
    Dns(DnsCheck),
    /// UDP_CHECK: a datagram gets a reply (or, without `require_reply`, no ICMP error).
    Udp(UdpCheck),
    /// PING_CHECK: ICMP/ICMPv6 echo.
    Ping,
}

impl CheckKind {
    /// keepalived's name for the checker.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "TCP_CHECK",
            CheckKind::Http(_) => "HTTP_GET",
            CheckKind::Ssl(_) => "SSL_GET",
            CheckKind::Misc(_) => "MISC_CHECK",
            CheckKind::Dns(_) => "DNS_CHECK",
            CheckKind::Udp(_) => "UDP_CHECK",
            CheckKind::Ping => "PING_CHECK",
        }
    }

    /// The checker's table in the native config (`tcp_check`).
    pub fn native_key(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp_check",
            CheckKind::Http(_) => "http_get",
            CheckKind::Ssl(_) => "ssl_get",
            CheckKind::Misc(_) => "misc_check",
            CheckKind::Dns(_) => "dns_check",
            CheckKind::Udp(_) => "udp_check",
            CheckKind::Ping => "ping_check",
        }
    }

    /// Whether the checker connects to a port: all but the script and ping.
    pub fn uses_port(&self) -> bool {
        !matches!(self, CheckKind::Misc(_) | CheckKind::Ping)
    }
}

impl HealthCheck {
    /// The address checked: `connect_ip`, else the real's.
    pub fn target(&self, real: IpAddr) -> IpAddr {
        self.connect_ip.unwrap_or(real)
    }

    /// How long one attempt may take: `misc_timeout` for a script, else `connect_timeout`.
    pub fn attempt_timeout(&self) -> Duration {
        match &self.kind {
            CheckKind::Misc(misc) => misc.timeout,
            _ => self.connect_timeout,
        }
    }

    /// Longest time from the first failed attempt until the real is declared down: every attempt
    /// timing out, `delay_before_retry` apart.
    pub fn time_to_down(&self) -> Duration {
        let attempts = self.retry.saturating_add(1);
        self.attempt_timeout()
            .saturating_mul(attempts)
            .saturating_add(self.delay_before_retry.saturating_mul(self.retry))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpCheck {
    /// At least one; every URL must pass.
    pub urls: Vec<UrlCheck>,
    /// Host header (keepalived's `virtualhost`); default the real's address.
    pub virtualhost: Option<String>,
    /// TLS server name to send (SSL_GET `enable_sni` uses virtualhost; this sets it explicitly).
    pub sni: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UrlCheck {
    pub path: String,
    /// Expected status; `None` = any 2xx (keepalived's default when no status_code is given
    /// is 200-299).
    pub status_code: Option<u16>,
    /// Lower-case hex MD5 of the body, as keepalived's genhash prints it.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MiscCheck {
    /// Command line, run by `/bin/sh -c` (keepalived's `misc_path`).
    pub path: String,
    pub timeout: Duration,
    /// Exit 0 up, 1 down, 2–255 up with weight = code − 2 (keepalived's `misc_dynamic`).
    pub dynamic: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsCheck {
    /// Query name (`dns_name`), default ".".
    pub name: String,
    /// Query type (`dns_type`): A, AAAA, NS, SOA (default), MX, TXT, CNAME, PTR.
    pub qtype: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UdpCheck {
    /// Bytes to send (`payload`, hex in keepalived; here a string or hex), default empty.
    pub payload: Vec<u8>,
    /// Up only when a reply arrives (`require_reply`); else up unless an ICMP error comes back.
    pub require_reply: bool,
}
