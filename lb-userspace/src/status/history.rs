//! What the status page remembers between views: rates over the last minutes and recent events.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::control::proto::{BackendsView, ServiceView, StatusView};

/// Samples kept: at one every [`super::server::SAMPLE_EVERY`] (2 s), the last 5 minutes.
pub const MAX_SAMPLES: usize = 150;
/// Events kept (the newest).
pub const MAX_EVENTS: usize = 100;

/// Rates of one service between two views.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    pub packets_per_sec: f64,
    pub bytes_per_sec: f64,
    pub new_flows_per_sec: f64,
}

/// One point of the charts: each service's rates since the previous view.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Unix time in milliseconds.
    pub t_ms: u64,
    /// By service key (`192.0.2.100:80/tcp`, `fwmark:7/tcp`).
    pub services: BTreeMap<String, Rates>,
}

/// Something an operator cares about, as one line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Unix time in milliseconds.
    pub t_ms: u64,
    /// `real`, `service`, `vrrp`, `reload` or `agent`.
    pub kind: &'static str,
    pub text: String,
}

/// The counters and states one view left, to diff the next one against.
#[derive(Clone, Debug, Default)]
struct Seen {
    t_ms: u64,
    /// By service key: packets, bytes, new flows.
    counters: BTreeMap<String, (u64, u64, u64)>,
    /// By `service real`: state and health reason.
    reals: BTreeMap<String, (String, Option<String>)>,
    /// By VRRP instance: state.
    vrrp: BTreeMap<String, String>,
    reloads: (u64, u64),
}

/// The bounded rings the agent keeps for the page.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
    events: VecDeque<Event>,
    last: Option<Seen>,
}

/// The key a service is known by on the page and in the samples.
pub fn service_key(s: &ServiceView) -> String {
    match s.fwmark {
        Some(m) => format!("fwmark:{m}/{}", s.protocol),
        None if s.vip.contains(':') => format!("[{}]:{}/{}", s.vip, s.port, s.protocol),
        None => format!("{}:{}/{}", s.vip, s.port, s.protocol),
    }
}

fn seen(t_ms: u64, backends: &BackendsView, status: &StatusView) -> Seen {
    let mut s = Seen {
        t_ms,
        reloads: (status.reloads.succeeded, status.reloads.failed),
        ..Seen::default()
    };
    for svc in &backends.services {
        let key = service_key(svc);
        s.counters.insert(key.clone(), (svc.packets, svc.bytes, svc.new_flows));
        for b in svc.backends.iter().chain(&svc.sorry_server) {
            let real = if b.address.contains(':') {
                format!("[{}]:{}", b.address, b.port)
            } else {
                format!("{}:{}", b.address, b.port)
            };
            s.reals.insert(format!("{key} {real}"), (b.state.clone(), b.health.clone()));
        }
    }
    let instances = status.vrrp.as_ref().and_then(|v| v["instances"].as_array());
    for i in instances.into_iter().flatten() {
        if let (Some(name), Some(state)) = (i["name"].as_str(), i["state"].as_str()) {
            s.vrrp.insert(name.to_owned(), state.to_owned());
        }
    }
    s
}

/// Per second of `now - then` over `dt_ms`; a counter that went back (a reload rebuilt the
/// tables) counts from zero.
fn rate(now: u64, then: u64, dt_ms: u64) -> f64 {
    let delta = if now >= then { now - then } else { now };
    delta as f64 * 1000.0 / dt_ms as f64
}

impl History {
    /// Takes one view: appends a sample (from the second view on) and the events since the
    /// previous view.
    pub fn observe(&mut self, t_ms: u64, backends: &BackendsView, status: &StatusView) {
        let now = seen(t_ms, backends, status);
        let Some(prev) = self.last.take() else {
            self.push_event(
                t_ms,
                "agent",
                format!(
                    "status page started: {} services, {} reals, dataplane {}",
                    status.services, status.reals, status.dataplane.kind
                ),
            );
            self.last = Some(now);
            return;
        };
        let dt = t_ms.saturating_sub(prev.t_ms).max(1);
        let services = now
            .counters
            .iter()
            .map(|(k, (p, b, f))| {
                let (pp, pb, pf) = prev.counters.get(k).copied().unwrap_or_default();
                let r = Rates {
                    packets_per_sec: rate(*p, pp, dt),
                    bytes_per_sec: rate(*b, pb, dt),
                    new_flows_per_sec: rate(*f, pf, dt),
                };
                (k.clone(), r)
            })
            .collect();
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample { t_ms, services });
        self.diff_events(&prev, &now);
        self.last = Some(now);
    }

    fn diff_events(&mut self, prev: &Seen, now: &Seen) {
        let t = now.t_ms;
        for k in now.counters.keys().filter(|k| !prev.counters.contains_key(*k)) {
            self.push_event(t, "service", format!("service {k} added"));
        }
        for k in prev.counters.keys().filter(|k| !now.counters.contains_key(*k)) {
            self.push_event(t, "service", format!("service {k} removed"));
        }
        for (k, (state, why)) in &now.reals {
            match prev.reals.get(k) {
                Some((was, _)) if was == state => {}
                Some((was, _)) => {
                    let why = why.as_deref().map(|w| format!(" ({w})")).unwrap_or_default();
                    self.push_event(t, "real", format!("{k}: {was} → {state}{why}"));
                }
                None if prev.counters.contains_key(k.split(' ').next().unwrap_or_default()) => {
                    self.push_event(t, "real", format!("{k}: added ({state})"));
                }
                None => {}
            }
        }
        for (name, state) in &now.vrrp {
            match prev.vrrp.get(name) {
                Some(was) if was == state => {}
                Some(was) => self.push_event(t, "vrrp", format!("VRRP {name}: {was} → {state}")),
                None => self.push_event(t, "vrrp", format!("VRRP {name}: {state}")),
            }
        }
        if now.reloads.0 > prev.reloads.0 {
            self.push_event(t, "reload", "configuration reloaded".to_owned());
        }
        if now.reloads.1 > prev.reloads.1 {
            self.push_event(t, "reload", "reload refused: previous configuration kept".to_owned());
        }
    }

    fn push_event(&mut self, t_ms: u64, kind: &'static str, text: String) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(Event { t_ms, kind, text });
    }

    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn views(
        packets: u64,
        state: &str,
        health: &str,
        vrrp: &str,
        reloads: u64,
    ) -> (BackendsView, StatusView) {
        let backends: BackendsView = serde_json::from_value(json!({ "services": [{
            "vip": "192.0.2.100", "port": 80, "protocol": "tcp", "scheduler": "mh",
            "dataplane": "xdp", "interface": "eth0", "packets": packets, "bytes": packets * 100,
            "new_flows": packets / 10,
            "backends": [{ "address": "192.0.2.11", "port": 80, "weight": 1, "state": state,
                           "packets": 0, "bytes": 0, "health": health }]
        }]}))
        .expect("backends");
        let status: StatusView = serde_json::from_value(json!({
            "version": "0", "config": "lb.toml", "pid": 1, "uptime_secs": 1,
            "dataplane": { "kind": "xdp", "attachments": [] }, "counters": {},
            "services": 1, "reals": 1,
            "vrrp": { "instances": [{ "name": "VI_1", "state": vrrp }] },
            "reloads": { "succeeded": reloads, "failed": 0 }
        }))
        .expect("status");
        (backends, status)
    }

    #[test]
    fn rates_and_events_from_successive_views() {
        let mut h = History::default();
        let (b, s) = views(1000, "up", "ok", "BACKUP", 0);
        h.observe(10_000, &b, &s);
        assert_eq!(h.samples().count(), 0, "one view has no rate");
        let (b, s) = views(3000, "down", "connection refused", "MASTER", 1);
        h.observe(12_000, &b, &s);
        let sample = h.samples().last().expect("a sample");
        let r = &sample.services["192.0.2.100:80/tcp"];
        assert_eq!(
            (r.packets_per_sec, r.bytes_per_sec, r.new_flows_per_sec),
            (1000.0, 100_000.0, 100.0)
        );
        let texts: Vec<&str> = h.events().map(|e| e.text.as_str()).collect();
        for want in [
            "192.0.2.100:80/tcp 192.0.2.11:80: up → down (connection refused)",
            "VRRP VI_1: BACKUP → MASTER",
            "configuration reloaded",
        ] {
            assert!(texts.contains(&want), "no {want:?} in {texts:?}");
        }
        // Nothing changed: no new event.
        let n = h.events().count();
        h.observe(14_000, &b, &s);
        assert_eq!(h.events().count(), n);
        // A counter that went back (tables rebuilt) counts from zero, never negative.
        let (b, s) = views(10, "down", "connection refused", "MASTER", 1);
        h.observe(16_000, &b, &s);
        assert_eq!(
            h.samples().last().expect("sample").services["192.0.2.100:80/tcp"].packets_per_sec,
            5.0
        );
    }

    #[test]
    fn rings_are_bounded() {
        let mut h = History::default();
        for i in 0..(MAX_SAMPLES as u64 + 50) {
            let state = if i % 2 == 0 { "up" } else { "down" };
            let (b, s) = views(i, state, "x", "MASTER", 0);
            h.observe(i * 2000, &b, &s);
        }
        assert_eq!(h.samples().count(), MAX_SAMPLES);
        assert_eq!(h.events().count(), MAX_EVENTS);
        let newest = h.events().last().expect("event").t_ms;
        assert_eq!(newest, (MAX_SAMPLES as u64 + 49) * 2000, "the newest are kept");
    }
}
