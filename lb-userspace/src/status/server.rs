//! The status page's HTTP listener and the sampler that feeds its history.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};

use super::{Event, History, PAGE, Sample};
use crate::{
    control::proto::{BackendsView, StatusView},
    listen::{self, ListenerLimit},
    metrics::Source,
};

/// The JSON the page polls.
pub const API_PATH: &str = "/api/v1/status";
/// Connections served at once (the rest are answered 503): a page polls one at a time.
pub const MAX_CONNECTIONS: usize = 64;
/// How often the sampler takes a view (the charts' resolution).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// `/api/v1/status`: `status` is `lb status --json`, `backends` is `lb backends --json`.
#[derive(Serialize)]
struct Api<'a> {
    status: &'a StatusView,
    backends: &'a BackendsView,
    history: HistoryView<'a>,
    /// Newest last.
    events: Vec<&'a Event>,
    /// Each VIP's BGP announcement (`vip`, `announced`, `reason`, `reason_kind`), from
    /// `status.bgp`; empty without `[bgp]`.
    announcements: Vec<&'a crate::bgp::agent::VipView>,
}

#[derive(Serialize)]
struct HistoryView<'a> {
    sample_every_secs: u64,
    samples: Vec<&'a Sample>,
}

fn lock(h: &Mutex<History>) -> std::sync::MutexGuard<'_, History> {
    // The rings stay consistent between pushes: keep serving after a panic elsewhere.
    h.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The API document for the current views and history.
pub fn api_json(
    backends: &BackendsView,
    status: &StatusView,
    history: &History,
) -> serde_json::Result<String> {
    serde_json::to_string(&Api {
        status,
        backends,
        history: HistoryView {
            sample_every_secs: SAMPLE_EVERY.as_secs(),
            samples: history.samples().collect(),
        },
        events: history.events().collect(),
        announcements: status.bgp.iter().flat_map(|b| &b.vips).collect(),
    })
}

/// Takes a view every [`SAMPLE_EVERY`] into `history` until the task is dropped.
pub fn spawn_sampler(
    source: Arc<dyn Source>,
    history: Arc<Mutex<History>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (source, history) = (source.clone(), history.clone());
            let _ = tokio::task::spawn_blocking(move || match source.views() {
                Ok((b, s)) => lock(&history).observe(unix_ms(), &b, &s),
                Err(e) => tracing::debug!(error = %e, "status page: no view to sample"),
            })
            .await;
        }
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Page {
    Html,
    Api,
    NotFound,
}

fn route(head: &[u8]) -> Page {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    if req.parse(head).is_err() || req.method.is_some_and(|m| m != "GET") {
        return Page::NotFound;
    }
    match req.path.unwrap_or_default().split(['?', '#']).next().unwrap_or_default() {
        "/" | "/index.html" => Page::Html,
        API_PATH => Page::Api,
        _ => Page::NotFound,
    }
}

/// Serves the page and its API until the task is dropped; at most `limit`'s cap of connections
/// at once, the excess answered 503 and closed.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn Source>,
    history: Arc<Mutex<History>>,
    limit: Arc<ListenerLimit>,
) {
    listen::serve_http(listener, limit, move |stream, limit| {
        answer(stream, source.clone(), history.clone(), limit)
    })
    .await;
}

async fn answer(
    mut stream: TcpStream,
    source: Arc<dyn Source>,
    history: Arc<Mutex<History>>,
    limit: Arc<ListenerLimit>,
) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut buf = [0u8; 4096];
    let Some(n) = listen::read_head(&mut stream, &mut buf, &limit).await else {
        return;
    };
    let (status, content_type, body) = match route(&buf[..n]) {
        Page::Html => ("200 OK", "text/html; charset=utf-8", PAGE.to_owned()),
        Page::NotFound => (
            "404 Not Found",
            TEXT,
            format!("not found: the status page is / and its data {API_PATH}\n"),
        ),
        Page::Api => {
            let doc = tokio::task::spawn_blocking(move || {
                let (b, s) = source.views()?;
                api_json(&b, &s, &lock(&history)).map_err(|e| e.to_string())
            })
            .await;
            match doc {
                Ok(Ok(json)) => ("200 OK", "application/json", json),
                Ok(Err(e)) => ("503 Service Unavailable", TEXT, format!("{e}\n")),
                Err(e) => ("500 Internal Server Error", TEXT, format!("{e}\n")),
            }
        }
    };
    let extra = "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n";
    listen::respond(&mut stream, status, content_type, extra, &body, &limit).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_path_and_method() {
        let cases: &[(&[u8], Page)] = &[
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Page::Html),
            (b"GET /index.html HTTP/1.1\r\n\r\n", Page::Html),
            (b"GET /api/v1/status HTTP/1.1\r\n\r\n", Page::Api),
            (b"GET /api/v1/status?t=1 HTTP/1.1\r\n\r\n", Page::Api),
            (b"POST /api/v1/status HTTP/1.1\r\n\r\n", Page::NotFound),
            (b"GET /metrics HTTP/1.1\r\n\r\n", Page::NotFound),
            (b"GET /api/v1/statusx HTTP/1.1\r\n\r\n", Page::NotFound),
            (b"\x00garbage", Page::NotFound),
        ];
        for (head, want) in cases {
            assert_eq!(route(head), *want, "{}", String::from_utf8_lossy(head));
        }
    }

    /// The page works offline: nothing it loads comes from elsewhere.
    #[test]
    fn page_is_self_contained() {
        // The one URL in it is the SVG namespace, a name that is never fetched.
        let page = PAGE.replace("http://www.w3.org/2000/svg", "");
        for outside in
            ["http:", "https:", "\"//", "'//", "`//", "<link", "src=", "href=", "@import", "url("]
        {
            assert!(!page.contains(outside), "the page refers to {outside}");
        }
        assert!(PAGE.contains(API_PATH), "the page polls the API");
        assert!(PAGE.contains("name=\"viewport\""), "phone-sized screens");
    }

    /// The API embeds `lb status --json` and `lb backends --json` as they are.
    #[test]
    fn api_embeds_the_cli_views() {
        let backends = BackendsView { services: vec![] };
        let status: StatusView = serde_json::from_value(serde_json::json!({
            "version": "0", "config": "lb.toml", "pid": 1, "uptime_secs": 1,
            "dataplane": { "kind": "xdp", "attachments": [] }, "counters": {},
            "services": 0, "reals": 0
        }))
        .expect("status");
        let doc: serde_json::Value =
            serde_json::from_str(&api_json(&backends, &status, &History::default()).expect("json"))
                .expect("parses");
        assert_eq!(doc["status"], serde_json::to_value(&status).expect("status"));
        assert_eq!(doc["backends"], serde_json::to_value(&backends).expect("backends"));
        assert_eq!(doc["history"]["sample_every_secs"], 2);
        assert!(doc["events"].is_array() && doc["announcements"].is_array());
    }

    /// The announcements are the BGP view's VIPs, as `lb status` has them.
    #[test]
    fn announcements_come_from_the_bgp_view() {
        let status: StatusView = serde_json::from_value(serde_json::json!({
            "version": "0", "config": "lb.toml", "pid": 1, "uptime_secs": 1,
            "dataplane": { "kind": "xdp", "attachments": [] }, "counters": {},
            "services": 0, "reals": 0,
            "bgp": { "speaker": "bird", "sessions": [], "announced": ["192.0.2.100"], "restarts": 0,
                     "vips": [
                        { "vip": "192.0.2.100", "announced": true, "reason": "ready", "reason_kind": "ready" },
                        { "vip": "192.0.2.101", "announced": false, "reason": "VRRP BACKUP (VI_1)", "reason_kind": "vrrp_backup" }
                     ] }
        }))
        .expect("status");
        let backends = BackendsView { services: vec![] };
        let json = api_json(&backends, &status, &History::default()).expect("json");
        let doc: serde_json::Value = serde_json::from_str(&json).expect("parses");
        assert_eq!(
            doc["announcements"],
            status.bgp.map(|b| serde_json::json!(b.vips)).unwrap_or_default()
        );
        assert_eq!(doc["announcements"][1]["reason"], "VRRP BACKUP (VI_1)");
    }
}
