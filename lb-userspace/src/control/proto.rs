//! Request and response shapes. Field names are a contract with scripts: extend, never rename.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dataplane::{Counter, Status};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    // Struct variants (not unit ones) so `deny_unknown_fields` refuses extra keys.
    /// Services and their reals with counters (`lb backends`).
    Backends {},
    /// Agent and dataplane status (`lb status`).
    Status {},
    /// Re-read the configuration file and apply it (`lb reload`, like SIGHUP).
    Reload {},
    /// No new flows to a real until undrained or reloaded (`lb drain`).
    Drain { service: String, real: String },
    /// Undo `drain` (`lb undrain`).
    Undrain { service: String, real: String },
    /// Set a real's weight until the next reload (`lb weight`).
    Weight { service: String, real: String, weight: u64 },
    /// `lb bgp withdraw [VIP]` / `lb bgp announce [VIP]` (`action`), until the next reload; no
    /// VIP: every VIP.
    Bgp {
        action: String,
        #[serde(default)]
        vip: Option<String>,
    },
}

/// Every response: `{"ok":true,"data":…}` or `{"ok":false,"error":"…"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Self {
        Self { ok: true, error: None, data: Some(data) }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self { ok: false, error: Some(message.into()), data: None }
    }
}

/// `lb backends --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendsView {
    pub services: Vec<ServiceView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    /// `0.0.0.0` or `::` for a firewall-mark service (its family).
    pub vip: String,
    pub port: u16,
    /// "tcp" or "udp".
    pub protocol: String,
    /// The mark of a firewall-mark service (keepalived's `virtual_server fwmark N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fwmark: Option<u32>,
    pub scheduler: String,
    /// Where the service is forwarded: "xdp" or "ipvs".
    pub dataplane: String,
    /// Why that dataplane, when there is something to say (a scheduler XDP approximates...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_reason: Option<String>,
    pub interface: String,
    /// Frames that hit the service (forwarded or dropped).
    pub packets: u64,
    pub bytes: u64,
    /// Flows started on the service.
    #[serde(default)]
    pub new_flows: u64,
    pub backends: Vec<BackendView>,
    /// Takes new flows only when no real server can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sorry_server: Option<BackendView>,
    /// False while the VRRP instance holding the VIP is not MASTER here (not forwarding).
    #[serde(default = "yes")]
    pub active: bool,
    /// The VRRP instance whose virtual_ipaddress holds the VIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp_instance: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    pub address: String,
    pub port: u16,
    pub weight: u32,
    /// "up", "drain" or "unresolved" (no MAC known).
    pub state: String,
    /// The MAC frames are sent to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    /// Flows started on this real.
    #[serde(default)]
    pub new_flows: u64,
    /// The weight in the config file (`weight` is the effective one).
    #[serde(default)]
    pub config_weight: u32,
    /// A runtime change in force until the next reload: "drain" or "weight N".
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    pub override_: Option<String>,
    /// The health checks' last word (why it is down, or the last check's outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Latency of the last successful health check, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_latency: Option<f64>,
    /// How packets reach it, in ipvsadm's words: "Route", "Masq" or "Tunnel".
    #[serde(default = "route")]
    pub forward: String,
    /// IPVS's ActiveConn and InActConn (absent on XDP, which counts no connections per real).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_conns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_conns: Option<u32>,
}

fn route() -> String {
    "Route".to_owned()
}

/// One real changed by `lb drain` / `lb undrain` / `lb weight`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedView {
    pub service: String,
    pub real: String,
    pub state: String,
    pub weight: u32,
}

/// `lb status --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub config: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub dataplane: DataplaneView,
    /// Global counters by reason (`pass_not_ip`, `tx`, `drop_no_real`, ...).
    pub counters: BTreeMap<String, Counter>,
    /// Flow-table and other events (`flow_hit`, `flow_new`, `flow_repick`, ...).
    #[serde(default)]
    pub events: BTreeMap<String, u64>,
    pub services: usize,
    pub reals: usize,
    /// Which dataplane serves each service, and why when not obvious.
    #[serde(default)]
    pub service_dataplanes: Vec<ServiceDataplaneView>,
    /// VRRP instances: state, priorities, master, timers, counters (absent without instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp: Option<serde_json::Value>,
    /// The agent's own listeners ("control", "metrics"): caps and what they refused.
    #[serde(default)]
    pub listeners: BTreeMap<String, ListenerView>,
    /// Check attempts not run because the agent lacked a resource (no file descriptor, no
    /// buffer): they leave the real's state as it was.
    #[serde(default)]
    pub checks_not_run: u64,
    /// Health-check attempts by check and outcome, and their latencies.
    #[serde(default)]
    pub health_checks: HealthChecksView,
    /// Reloads (SIGHUP, `lb reload`) since the agent started.
    #[serde(default)]
    pub reloads: ReloadsView,
    /// `[bgp]`: sessions and each VIP's announcement state (absent without `[bgp]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<crate::bgp::agent::BgpView>,
    /// Per service, a fingerprint of what decides the pick of a real (hash seed, table size,
    /// reals and weights in order): directors sharing a VIP must show the same.
    #[serde(default)]
    pub pick_fingerprints: Vec<crate::bgp::FingerprintView>,
}

/// Upper bounds (µs) of the check latency buckets; one more bucket takes the rest.
pub const CHECK_LATENCY_BUCKETS_US: [u64; 10] =
    [1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 5_000_000];

/// Health-check attempts since the agent started (attempts not run are `checks_not_run`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthChecksView {
    /// Attempts by check (`TCP_CHECK`, `HTTP_GET`, ...) and outcome (`success`, `failure`).
    pub attempts: BTreeMap<String, BTreeMap<String, u64>>,
    /// Attempts per latency bucket ([`CHECK_LATENCY_BUCKETS_US`], then the rest); not cumulative.
    pub latency_buckets: Vec<u64>,
    pub latency_sum_us: u64,
}

impl HealthChecksView {
    /// Counts one attempt.
    pub fn record(&mut self, check: &str, ok: bool, latency: std::time::Duration) {
        let outcome = if ok { "success" } else { "failure" };
        *self
            .attempts
            .entry(check.to_owned())
            .or_default()
            .entry(outcome.to_owned())
            .or_default() += 1;
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if self.latency_buckets.len() != CHECK_LATENCY_BUCKETS_US.len() + 1 {
            self.latency_buckets = vec![0; CHECK_LATENCY_BUCKETS_US.len() + 1];
        }
        let i = CHECK_LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(CHECK_LATENCY_BUCKETS_US.len());
        self.latency_buckets[i] += 1;
        self.latency_sum_us = self.latency_sum_us.saturating_add(us);
    }
}

/// Reloads since the agent started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadsView {
    pub succeeded: u64,
    pub failed: u64,
    /// Unix time of the last successful reload (or of the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<u64>,
    /// Hash of the running configuration (16 hex digits): tells directors' configs apart.
    #[serde(default)]
    pub config_hash: String,
}

/// One listener in `lb status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerView {
    /// Connections served at once, at most.
    pub limit: usize,
    /// Connections being served now.
    pub open: usize,
    pub accepted: u64,
    /// Closed at once because `limit` were open.
    pub refused: u64,
    /// Closed because the client sent or read nothing in time.
    pub timed_out: u64,
}

/// One service's dataplane in `lb status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDataplaneView {
    /// `192.0.2.100:80/tcp`.
    pub service: String,
    /// "xdp" or "ipvs".
    pub dataplane: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneView {
    pub kind: String,
    pub attachments: Vec<AttachmentView>,
    /// Table use (`used` is absent for the flow table: counting it would cost too much).
    #[serde(default)]
    pub maps: Vec<crate::dataplane::MapUsage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentView {
    pub interface: String,
    pub ifindex: u32,
    pub mode: String,
    pub program_id: u32,
}

impl From<Status> for DataplaneView {
    fn from(s: Status) -> Self {
        Self {
            kind: s.kind.to_owned(),
            attachments: s
                .attachments
                .into_iter()
                .map(|a| AttachmentView {
                    interface: a.interface,
                    ifindex: a.ifindex,
                    mode: a.mode.to_owned(),
                    program_id: a.program_id,
                })
                .collect(),
            maps: s.maps,
        }
    }
}

/// `192.0.2.11:80` or `[2001:db8::11]:80`, as ipvsadm prints them: how clients show the
/// `address` and `port` of these views.
pub fn endpoint(address: &str, port: u16) -> String {
    match address.parse() {
        Ok(ip) => std::net::SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{address}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_decode_and_bad_ones_are_refused() {
        let cases: &[(&str, Option<Request>)] = &[
            (r#"{"command":"backends"}"#, Some(Request::Backends {})),
            (r#"{"command":"status"}"#, Some(Request::Status {})),
            (r#"{"command":"reload"}"#, Some(Request::Reload {})),
            (
                r#"{"command":"weight","service":"192.0.2.1:80","real":"192.0.2.11:80","weight":3}"#,
                Some(Request::Weight {
                    service: "192.0.2.1:80".into(),
                    real: "192.0.2.11:80".into(),
                    weight: 3,
                }),
            ),
            (
                r#"{"command":"bgp","action":"withdraw"}"#,
                Some(Request::Bgp { action: "withdraw".into(), vip: None }),
            ),
            (
                r#"{"command":"bgp","action":"announce","vip":"192.0.2.1"}"#,
                Some(Request::Bgp { action: "announce".into(), vip: Some("192.0.2.1".into()) }),
            ),
            (r#"{"command":"bgp"}"#, None),
            (r#"{"command":"drain","service":"192.0.2.1:80"}"#, None),
            (r#"{"command":"weight","service":"a","real":"b","weight":-1}"#, None),
            (r#"{"command":"reboot"}"#, None),
            (r#"{"command":"backends","x":1}"#, None),
            ("not json", None),
            ("", None),
        ];
        for (text, want) in cases {
            let got: Option<Request> = serde_json::from_str(text).ok();
            assert_eq!(&got, want, "{text}");
        }
    }

    #[test]
    fn backends_json_has_the_contract_fields() {
        let v = BackendsView {
            services: vec![ServiceView {
                vip: "192.0.2.100".into(),
                port: 80,
                protocol: "tcp".into(),
                fwmark: None,
                scheduler: "mh".into(),
                dataplane: "ipvs".into(),
                dataplane_reason: Some("`lb_kind NAT`".into()),
                interface: "eth0".into(),
                packets: 3,
                bytes: 300,
                new_flows: 1,
                backends: vec![BackendView {
                    address: "192.0.2.11".into(),
                    port: 80,
                    weight: 1,
                    state: "up".into(),
                    mac: None,
                    packets: 3,
                    bytes: 300,
                    new_flows: 1,
                    config_weight: 1,
                    override_: None,
                    health: None,
                    check_latency: None,
                    forward: "Masq".into(),
                    active_conns: Some(2),
                    inactive_conns: Some(0),
                }],
                sorry_server: None,
                active: true,
                vrrp_instance: None,
            }],
        };
        let j = serde_json::to_value(&v).expect("serialise");
        let s = &j["services"][0];
        for k in ["vip", "port", "protocol", "scheduler", "backends"] {
            assert!(s.get(k).is_some(), "service field {k}");
        }
        for k in ["address", "port", "weight", "state", "packets", "bytes", "forward"] {
            assert!(s["backends"][0].get(k).is_some(), "backend field {k}");
        }
        assert_eq!(s["dataplane"], "ipvs");
        assert_eq!(s["backends"][0]["active_conns"], 2);
        assert_eq!(s["backends"][0]["inactive_conns"], 0);
    }
}
