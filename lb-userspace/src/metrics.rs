//! Prometheus text endpoint (`lb run --metrics ADDR`). Every scrape renders the same views the
//! control socket serves, so metrics and `lb backends` never disagree.

use std::{io::Write as _, net::SocketAddr, sync::Arc, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::{
    control::proto::{BackendsView, StatusView},
    listen::{ListenerLimit, READ_TIMEOUT, WRITE_TIMEOUT},
};

/// The `fwmark` label: present only on firewall-mark services, so the series of the other
/// services keep exactly the labels they always had.
type MarkLabel = Vec<(&'static str, u32)>;

fn mark_label(fwmark: Option<u32>) -> MarkLabel {
    fwmark.map(|m| ("fwmark", m)).into_iter().collect()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    vip: String,
    port: u16,
    protocol: String,
    /// `fwmark="N"` on firewall-mark services; no label at all on the others.
    #[prometheus(flatten)]
    fwmark: MarkLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RealLabels {
    vip: String,
    port: u16,
    protocol: String,
    #[prometheus(flatten)]
    fwmark: MarkLabel,
    real: String,
    real_port: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    vip: String,
    port: u16,
    protocol: String,
    #[prometheus(flatten)]
    fwmark: MarkLabel,
    real: String,
    real_port: u16,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

/// Which listener: `control` or `metrics`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttachLabels {
    interface: String,
    mode: String,
    program_id: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: String,
    dataplane: String,
}

const STATES: [&str; 4] = ["up", "drain", "down", "unresolved"];

/// Renders the Prometheus text exposition of the agent's state.
pub fn render(backends: &BackendsView, status: &StatusView) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("lb");
    let info = Family::<InfoLabels, Gauge>::default();
    info.get_or_create(&InfoLabels {
        version: status.version.clone(),
        dataplane: status.dataplane.kind.clone(),
    })
    .set(1);
    reg.register("info", "Agent version and dataplane", info);
    let uptime = Gauge::<i64>::default();
    uptime.set(i64::try_from(status.uptime_secs).unwrap_or(i64::MAX));
    reg.register("uptime_seconds", "Seconds since the agent started", uptime);
    let attached = Family::<AttachLabels, Gauge>::default();
    for a in &status.dataplane.attachments {
        attached
            .get_or_create(&AttachLabels {
                interface: a.interface.clone(),
                mode: a.mode.clone(),
                program_id: a.program_id,
            })
            .set(1);
    }
    reg.register("xdp_attached", "Interfaces the XDP program is attached to", attached);

    let reasons_p = Family::<NameLabel, Counter>::default();
    let reasons_b = Family::<NameLabel, Counter>::default();
    for (name, c) in &status.counters {
        let l = NameLabel { name: name.clone() };
        reasons_p.get_or_create(&l).inc_by(c.packets);
        reasons_b.get_or_create(&l).inc_by(c.bytes);
    }
    reg.register("dataplane_packets", "Frames by verdict reason", reasons_p);
    reg.register("dataplane_bytes", "Bytes by verdict reason", reasons_b);
    let events = Family::<NameLabel, Counter>::default();
    for (name, n) in &status.events {
        events.get_or_create(&NameLabel { name: name.clone() }).inc_by(*n);
    }
    reg.register("dataplane_events", "Flow-table and other events", events);
    let open = Family::<ListenerLabel, Gauge>::default();
    let cap = Family::<ListenerLabel, Gauge>::default();
    let accepted = Family::<ListenerLabel, Counter>::default();
    let refused = Family::<ListenerLabel, Counter>::default();
    let timed_out = Family::<ListenerLabel, Counter>::default();
    for (name, l) in &status.listeners {
        let label = ListenerLabel { listener: name.clone() };
        open.get_or_create(&label).set(i64::try_from(l.open).unwrap_or(i64::MAX));
        cap.get_or_create(&label).set(i64::try_from(l.limit).unwrap_or(i64::MAX));
        accepted.get_or_create(&label).inc_by(l.accepted);
        refused.get_or_create(&label).inc_by(l.refused);
        timed_out.get_or_create(&label).inc_by(l.timed_out);
    }
    reg.register("listener_connections", "Connections the listener serves now", open);
    reg.register("listener_connection_limit", "Connections the listener serves at most", cap);
    reg.register("listener_accepted", "Connections served", accepted);
    reg.register("listener_refused", "Connections closed at once: the limit was reached", refused);
    reg.register(
        "listener_timeouts",
        "Connections closed: the client was idle too long",
        timed_out,
    );
    let not_run = Counter::<u64>::default();
    not_run.inc_by(status.checks_not_run);
    reg.register(
        "health_checks_not_run",
        "Check attempts not run for lack of a resource here (fd, buffer); state kept",
        not_run,
    );

    let sp = Family::<ServiceLabels, Counter>::default();
    let sb = Family::<ServiceLabels, Counter>::default();
    let sf = Family::<ServiceLabels, Counter>::default();
    let rp = Family::<RealLabels, Counter>::default();
    let rb = Family::<RealLabels, Counter>::default();
    let rf = Family::<RealLabels, Counter>::default();
    let rw = Family::<RealLabels, Gauge>::default();
    let rl = Family::<RealLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let rs = Family::<StateLabels, Gauge>::default();
    for s in &backends.services {
        let sl = ServiceLabels {
            vip: s.vip.clone(),
            port: s.port,
            protocol: s.protocol.clone(),
            fwmark: mark_label(s.fwmark),
        };
        sp.get_or_create(&sl).inc_by(s.packets);
        sb.get_or_create(&sl).inc_by(s.bytes);
        sf.get_or_create(&sl).inc_by(s.new_flows);
        for b in s.backends.iter().chain(&s.sorry_server) {
            let l = RealLabels {
                vip: s.vip.clone(),
                port: s.port,
                protocol: s.protocol.clone(),
                fwmark: mark_label(s.fwmark),
                real: b.address.clone(),
                real_port: b.port,
            };
            rp.get_or_create(&l).inc_by(b.packets);
            rb.get_or_create(&l).inc_by(b.bytes);
            rf.get_or_create(&l).inc_by(b.new_flows);
            rw.get_or_create(&l).set(i64::from(b.weight));
            if let Some(lat) = b.check_latency {
                rl.get_or_create(&l).set(lat);
            }
            for st in STATES {
                let labels = StateLabels {
                    vip: l.vip.clone(),
                    port: l.port,
                    protocol: l.protocol.clone(),
                    fwmark: l.fwmark.clone(),
                    real: l.real.clone(),
                    real_port: l.real_port,
                    state: st.to_owned(),
                };
                rs.get_or_create(&labels).set(i64::from(b.state == st));
            }
        }
    }
    reg.register("service_packets", "Frames that hit the service", sp);
    reg.register("service_bytes", "Bytes that hit the service", sb);
    reg.register("service_new_flows", "Flows started on the service", sf);
    reg.register("real_packets", "Frames forwarded to the real", rp);
    reg.register("real_bytes", "Bytes forwarded to the real", rb);
    reg.register("real_new_flows", "Flows started on the real", rf);
    reg.register("real_weight", "Effective weight of the real", rw);
    reg.register("real_check_latency_seconds", "Latency of the last successful health check", rl);
    reg.register("real_state", "1 for the real's current state (up, drain, down, unresolved)", rs);
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

/// Produces the views for one scrape.
pub trait Source: Send + Sync + 'static {
    fn views(&self) -> Result<(BackendsView, StatusView), String>;
}

/// Serves `GET /metrics` (any path, really) until the task is dropped; at most `limit`'s cap of
/// connections at once, the excess answered 503 and closed.
pub async fn serve(listener: TcpListener, source: Arc<dyn Source>, limit: Arc<ListenerLimit>) {
    const BUSY: &[u8] =
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Some(permit) = limit.admit() else {
            if let Ok(mut s) = stream.into_std() {
                let _ = s.write(BUSY);
            }
            continue;
        };
        let source = source.clone();
        let limit = limit.clone();
        tokio::spawn(async move {
            scrape(stream, source, &limit).await;
            drop(permit);
        });
    }
}

async fn scrape(mut stream: TcpStream, source: Arc<dyn Source>, limit: &ListenerLimit) {
    let mut buf = [0u8; 2048];
    // Read the request head (we answer every request the same way).
    if tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf)).await.is_err() {
        limit.timed_out();
        return;
    }
    let views = tokio::task::spawn_blocking(move || source.views()).await;
    let (status, body) = match views {
        Ok(Ok((b, s))) => match render(&b, &s) {
            Ok(text) => ("200 OK", text),
            Err(e) => ("500 Internal Server Error", format!("{e}\n")),
        },
        Ok(Err(e)) => ("500 Internal Server Error", format!("{e}\n")),
        Err(e) => ("500 Internal Server Error", format!("{e}\n")),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    if written.is_err() {
        limit.timed_out();
    }
}

/// Binds the metrics listener (failing early, before the dataplane is touched).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A firewall-mark service's series carry `fwmark`; the others keep exactly their labels.
    #[test]
    fn only_firewall_mark_services_have_a_fwmark_label() {
        let backend = json!({
            "address": "192.0.2.11", "port": 80, "weight": 1, "state": "up", "mac": null,
            "packets": 5, "bytes": 500, "forward": "Route"
        });
        let service = |vip: &str, port: u16, fwmark: Option<u32>| {
            json!({
                "vip": vip, "port": port, "protocol": "tcp", "fwmark": fwmark, "scheduler": "mh",
                "dataplane": "ipvs", "interface": "", "packets": 5, "bytes": 500,
                "backends": [backend.clone()]
            })
        };
        let backends: BackendsView = serde_json::from_value(json!({
            "services": [service("192.0.2.100", 80, None), service("0.0.0.0", 0, Some(7))]
        }))
        .expect("backends view");
        let status: StatusView = serde_json::from_value(json!({
            "version": "0", "config": "lb.toml", "pid": 1, "uptime_secs": 1,
            "dataplane": { "kind": "ipvs", "attachments": [] },
            "counters": {}, "services": 2, "reals": 2
        }))
        .expect("status view");
        let text = render(&backends, &status).expect("rendered");
        let plain = r#"lb_service_packets_total{vip="192.0.2.100",port="80",protocol="tcp"} 5"#;
        let marked =
            r#"lb_service_packets_total{vip="0.0.0.0",port="0",protocol="tcp",fwmark="7"} 5"#;
        let real = r#"lb_real_packets_total{vip="0.0.0.0",port="0",protocol="tcp",fwmark="7",real="192.0.2.11",real_port="80"} 5"#;
        for line in [plain, marked, real] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        assert_eq!(text.matches("fwmark").count(), text.matches(r#"fwmark="7""#).count());
    }

    /// The listeners' caps and refusals and the checks not run are series of their own.
    #[test]
    fn listener_and_not_run_counters() {
        let backends = BackendsView { services: vec![] };
        let status: StatusView = serde_json::from_value(json!({
            "version": "0", "config": "lb.toml", "pid": 1, "uptime_secs": 1,
            "dataplane": { "kind": "xdp", "attachments": [] },
            "counters": {}, "services": 0, "reals": 0, "checks_not_run": 4,
            "listeners": { "control": { "limit": 128, "open": 3, "accepted": 10, "refused": 7, "timed_out": 2 } }
        }))
        .expect("status view");
        let text = render(&backends, &status).expect("rendered");
        for line in [
            r#"lb_listener_connections{listener="control"} 3"#,
            r#"lb_listener_connection_limit{listener="control"} 128"#,
            r#"lb_listener_accepted_total{listener="control"} 10"#,
            r#"lb_listener_refused_total{listener="control"} 7"#,
            r#"lb_listener_timeouts_total{listener="control"} 2"#,
            "lb_health_checks_not_run_total 4",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }
}
