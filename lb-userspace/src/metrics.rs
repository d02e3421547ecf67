//! Prometheus text endpoint (`lb run --metrics ADDR`). Every scrape renders the same views the
//! control socket serves, so metrics and `lb backends` never disagree.

use std::{net::SocketAddr, sync::Arc};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet, text::encode},
    metrics::{MetricType, counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::net::{TcpListener, TcpStream};

use crate::{
    control::proto::{BackendsView, StatusView},
    listen::{self, ListenerLimit},
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

/// A verdict reason: `reason`, as the other reason-keyed series; `name` stays (it came first, and
/// queries and dashboards already select on it).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    name: String,
    reason: String,
}

/// Which listener: `control` or `metrics`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

/// No program id here: it changes whenever the program is replaced, and a label that changes
/// starts a new series each time (`lb_xdp_program_id` has it as a value).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttachLabels {
    interface: String,
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InterfaceLabel {
    interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabel {
    map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: String,
    dataplane: String,
}

const STATES: [&str; 4] = ["up", "drain", "down", "unresolved"];

/// The VRRP states an instance reports (`lb status`).
const VRRP_STATES: [&str; 5] = ["INIT", "BACKUP", "MASTER", "FAULT", "STOP"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabel {
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceStateLabels {
    instance: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceReasonLabels {
    instance: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckOutcomeLabels {
    check: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HashLabel {
    hash: String,
}

/// A histogram whose buckets were counted elsewhere (the health monitor), encoded as is.
#[derive(Debug)]
struct CountedHistogram {
    sum: f64,
    count: u64,
    /// (upper bound, count in this bucket), not cumulative; the last bound is +Inf.
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for CountedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// VRRP instances' state, priority, transitions and adverts (from `lb status`'s `vrrp`).
fn register_vrrp(reg: &mut Registry, vrrp: Option<&serde_json::Value>) {
    let state = Family::<InstanceStateLabels, Gauge>::default();
    let priority = Family::<InstanceLabel, Gauge>::default();
    let transitions = Family::<InstanceLabel, Counter>::default();
    let sent = Family::<InstanceLabel, Counter>::default();
    let received = Family::<InstanceLabel, Counter>::default();
    let rejected = Family::<InstanceReasonLabels, Counter>::default();
    let instances = vrrp.and_then(|v| v["instances"].as_array()).map(Vec::as_slice).unwrap_or(&[]);
    for i in instances {
        let name = i["name"].as_str().unwrap_or_default().to_owned();
        let l = InstanceLabel { instance: name.clone() };
        for st in VRRP_STATES {
            let labels = InstanceStateLabels { instance: name.clone(), state: st.to_owned() };
            state.get_or_create(&labels).set(i64::from(i["state"] == st));
        }
        let prio = i["effective_priority"].as_i64().unwrap_or_default();
        priority.get_or_create(&l).set(prio);
        let c = &i["counters"];
        let n = |k: &str| c[k].as_u64().unwrap_or_default();
        transitions.get_or_create(&l).inc_by(n("transitions"));
        sent.get_or_create(&l).inc_by(n("adverts_sent"));
        received.get_or_create(&l).inc_by(n("adverts_received"));
        for (reason, v) in c["rejected"].as_object().into_iter().flatten() {
            let labels = InstanceReasonLabels { instance: name.clone(), reason: reason.clone() };
            rejected.get_or_create(&labels).inc_by(v.as_u64().unwrap_or_default());
        }
    }
    reg.register("vrrp_state", "1 for the instance's current VRRP state", state);
    reg.register("vrrp_priority", "The instance's effective priority (with tracking)", priority);
    reg.register("vrrp_transitions", "VRRP state changes of the instance", transitions);
    reg.register("vrrp_adverts_sent", "VRRP adverts sent", sent);
    reg.register("vrrp_adverts_received", "VRRP adverts accepted", received);
    reg.register("vrrp_adverts_rejected", "VRRP adverts discarded, by reason", rejected);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NeighborLabel {
    neighbor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VipLabel {
    vip: String,
}

/// `[bgp]`: each session up or not, each VIP announced or not.
fn register_bgp(reg: &mut Registry, bgp: Option<&crate::bgp::agent::BgpView>) {
    let Some(bgp) = bgp else { return };
    let up = Family::<NeighborLabel, Gauge>::default();
    for s in &bgp.speaker.sessions {
        up.get_or_create(&NeighborLabel { neighbor: s.neighbor.clone() }).set(i64::from(s.up));
    }
    let announced = Family::<VipLabel, Gauge>::default();
    for v in &bgp.vips {
        announced.get_or_create(&VipLabel { vip: v.vip.clone() }).set(i64::from(v.announced));
    }
    reg.register("bgp_session_up", "1 while the BGP session to the neighbor is established", up);
    reg.register(
        "bgp_vip_announced",
        "1 while this director announces the VIP over BGP",
        announced,
    );
}

/// A counter without labels that stands at `n`.
fn register_counter(reg: &mut Registry, name: &str, help: &str, n: u64) {
    let counter = Counter::<u64>::default();
    counter.inc_by(n);
    reg.register(name, help, counter);
}

/// Flow sync's counters (`lb_flow_sync_*`), when it runs.
fn register_flow_sync(reg: &mut Registry, status: &StatusView) {
    let Some(f) = &status.flow_sync else { return };
    let rows = [
        ("flow_sync_messages_sent", "Sync messages sent to peer directors", f.messages_sent),
        ("flow_sync_flows_sent", "Flows sent to peer directors", f.flows_sent),
        ("flow_sync_messages_received", "Sync datagrams received", f.messages_received),
        ("flow_sync_flows_received", "Flows received in accepted messages", f.flows_received),
        (
            "flow_sync_flows_installed",
            "Received flows installed in the flow table",
            f.flows_installed,
        ),
    ];
    for (name, help, n) in rows {
        register_counter(reg, name, help, n);
    }
    let dropped = Family::<ReasonLabel, Counter>::default();
    for (reason, n) in &f.dropped {
        dropped.get_or_create(&ReasonLabel { reason: reason.clone() }).inc_by(*n);
    }
    reg.register("flow_sync_dropped", "Sync datagrams and entries dropped, by reason", dropped);
}

/// Health-check attempts by check and outcome, their latency, and the reloads.
fn register_checks_and_reloads(reg: &mut Registry, status: &StatusView) {
    let hc = &status.health_checks;
    let attempts = Family::<CheckOutcomeLabels, Counter>::default();
    for (check, outcomes) in &hc.attempts {
        for (outcome, n) in outcomes {
            let l = CheckOutcomeLabels { check: check.clone(), outcome: outcome.clone() };
            attempts.get_or_create(&l).inc_by(*n);
        }
    }
    reg.register("health_checks", "Health-check attempts, by check and outcome", attempts);
    let bounds = crate::control::proto::CHECK_LATENCY_BUCKETS_US
        .iter()
        .map(|us| *us as f64 / 1e6)
        .chain([f64::INFINITY]);
    let counts = hc.latency_buckets.iter().copied().chain(std::iter::repeat(0));
    let buckets: Vec<(f64, u64)> = bounds.zip(counts).collect();
    let latency = CountedHistogram {
        sum: hc.latency_sum_us as f64 / 1e6,
        count: hc.latency_buckets.iter().sum(),
        buckets,
    };
    reg.register("health_check_latency_seconds", "How long health-check attempts took", latency);

    let r = &status.reloads;
    register_counter(reg, "reload_success", "Reloads applied", r.succeeded);
    register_counter(
        reg,
        "reload_failure",
        "Reloads refused (the running config was kept)",
        r.failed,
    );
    let last = Gauge::<i64>::default();
    last.set(r.last_success.and_then(|t| i64::try_from(t).ok()).unwrap_or_default());
    reg.register(
        "reload_last_success_timestamp_seconds",
        "Unix time of the last successful reload (or of the start)",
        last,
    );
    let hash = Family::<HashLabel, Gauge>::default();
    hash.get_or_create(&HashLabel { hash: r.config_hash.clone() }).set(1);
    reg.register("reload_config_hash", "Hash of the running configuration, as a label", hash);
}

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
    let program = Family::<InterfaceLabel, Gauge>::default();
    for a in &status.dataplane.attachments {
        let labels = AttachLabels { interface: a.interface.clone(), mode: a.mode.clone() };
        attached.get_or_create(&labels).set(1);
        let labels = InterfaceLabel { interface: a.interface.clone() };
        program.get_or_create(&labels).set(i64::from(a.program_id));
    }
    reg.register("xdp_attached", "Interfaces the XDP program is attached to", attached);
    reg.register("xdp_program_id", "Id of the XDP program attached to the interface", program);
    let used = Family::<MapLabel, Gauge>::default();
    let capacity = Family::<MapLabel, Gauge>::default();
    for m in &status.dataplane.maps {
        let labels = MapLabel { map: m.name.clone() };
        if let Some(n) = m.used {
            used.get_or_create(&labels).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        capacity.get_or_create(&labels).set(i64::try_from(m.max).unwrap_or(i64::MAX));
    }
    reg.register(
        "map_entries",
        "Entries in use in the dataplane table (not counted for flows)",
        used,
    );
    reg.register("map_capacity", "Entries the dataplane table holds at most", capacity);

    let reasons_p = Family::<VerdictLabels, Counter>::default();
    let reasons_b = Family::<VerdictLabels, Counter>::default();
    for (name, c) in &status.counters {
        let l = VerdictLabels { name: name.clone(), reason: name.clone() };
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
    register_counter(
        &mut reg,
        "health_checks_not_run",
        "Check attempts not run for lack of a resource here (fd, buffer); state kept",
        status.checks_not_run,
    );
    register_vrrp(&mut reg, status.vrrp.as_ref());
    register_bgp(&mut reg, status.bgp.as_ref());
    register_checks_and_reloads(&mut reg, status);
    register_flow_sync(&mut reg, status);

    let sp = Family::<ServiceLabels, Counter>::default();
    let sb = Family::<ServiceLabels, Counter>::default();
    let sf = Family::<ServiceLabels, Counter>::default();
    let rp = Family::<RealLabels, Counter>::default();
    let rb = Family::<RealLabels, Counter>::default();
    let rf = Family::<RealLabels, Counter>::default();
    let rw = Family::<RealLabels, Gauge>::default();
    let rl = Family::<RealLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let rs = Family::<StateLabels, Gauge>::default();
    let active = Family::<RealLabels, Gauge>::default();
    let inactive = Family::<RealLabels, Gauge>::default();
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
            // IPVS counts connections per real; XDP does not (no series rather than a false 0).
            if let Some(n) = b.active_conns {
                active.get_or_create(&l).set(i64::from(n));
            }
            if let Some(n) = b.inactive_conns {
                inactive.get_or_create(&l).set(i64::from(n));
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
    reg.register("real_active_connections", "IPVS ActiveConn of the real", active);
    reg.register("real_inactive_connections", "IPVS InActConn of the real", inactive);
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

/// The exposition a scraper gets: OpenMetrics when its `Accept` asks for it, else Prometheus
/// text 0.0.4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Prometheus,
    OpenMetrics,
}

impl Format {
    /// From the request head's `Accept` header.
    fn from_head(head: &[u8]) -> Format {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let _ = req.parse(head);
        // Prometheus asks `application/openmetrics-text;version=1.0.0,...,text/plain;q=0.5`.
        let open = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("accept")).any(|h| {
            String::from_utf8_lossy(h.value).split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or_default();
                media.eq_ignore_ascii_case("application/openmetrics-text")
                    && !parts.any(|p| {
                        matches!(
                            p.replace(' ', "").as_str(),
                            "q=0" | "q=0.0" | "q=0.00" | "q=0.000"
                        )
                    })
            })
        });
        if open { Format::OpenMetrics } else { Format::Prometheus }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The OpenMetrics exposition [`render`] makes, as Prometheus text 0.0.4: a counter family is
/// named with its `_total` in HELP and TYPE, `unknown` is `untyped`, no UNIT lines, no `# EOF`.
/// Samples are the same lines.
pub fn to_prometheus_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        open.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta =
            ["# HELP ", "# TYPE "].into_iter().find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name =
                    if counters.contains(name) { format!("{name}_total") } else { name.to_owned() };
                let tail = if prefix == "# TYPE " && tail == "unknown" { "untyped" } else { tail };
                out.push_str(&format!("{prefix}{name} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Produces the views for one scrape.
pub trait Source: Send + Sync + 'static {
    fn views(&self) -> Result<(BackendsView, StatusView), String>;
}

/// What the listener serves at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Page {
    /// `/metrics`, and `/` as before paths were told apart.
    Metrics,
    /// `/healthz`: the agent answers.
    Health,
    /// `/readyz`: the dataplane is live and a service is serving.
    Ready,
    NotFound,
}

/// The page a request head asks for (a head that does not parse gets the 404).
fn route(head: &[u8]) -> Page {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    // A partial head is fine: only the request line matters.
    if req.parse(head).is_err() {
        return Page::NotFound;
    }
    let path = req.path.unwrap_or_default();
    match path.split(['?', '#']).next().unwrap_or_default() {
        "/metrics" | "/" => Page::Metrics,
        "/healthz" => Page::Health,
        "/readyz" => Page::Ready,
        _ => Page::NotFound,
    }
}

/// Ready when the dataplane is live and at least one service is serving (active here, with a
/// real up at a weight above 0 or a sorry server); else why not.
pub fn readiness(backends: &BackendsView, status: &StatusView) -> Result<(), String> {
    let dp = &status.dataplane;
    if dp.kind == "none" {
        return Err("no dataplane is running".to_owned());
    }
    let on_xdp = backends.services.iter().any(|s| s.dataplane == "xdp");
    if on_xdp && dp.attachments.is_empty() {
        return Err("the XDP program is not attached to any interface".to_owned());
    }
    if backends.services.is_empty() {
        return Err("no service is configured".to_owned());
    }
    let serving = |s: &crate::control::proto::ServiceView| {
        s.active
            && (s.sorry_server.is_some()
                || s.backends.iter().any(|b| b.state == "up" && b.weight > 0))
    };
    if backends.services.iter().any(serving) {
        return Ok(());
    }
    let inactive = backends.services.iter().filter(|s| !s.active).count();
    Err(format!(
        "no service is serving: {} services, {inactive} not active here (VRRP), none with a real server up",
        backends.services.len()
    ))
}

/// Serves `/metrics` (and `/`), `/healthz` and `/readyz` until the task is dropped, 404 for
/// other paths; at most `limit`'s cap of connections at once, the excess answered 503 and
/// closed.
pub async fn serve(listener: TcpListener, source: Arc<dyn Source>, limit: Arc<ListenerLimit>) {
    listen::serve_http(listener, limit, move |stream, limit| scrape(stream, source.clone(), limit))
        .await;
}

async fn scrape(mut stream: TcpStream, source: Arc<dyn Source>, limit: Arc<ListenerLimit>) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut buf = [0u8; 2048];
    let Some(n) = listen::read_head(&mut stream, &mut buf, &limit).await else {
        return;
    };
    let page = route(&buf[..n]);
    let format = Format::from_head(&buf[..n]);
    let (status, content_type, body) = match page {
        Page::Health => ("200 OK", TEXT, "ok\n".to_owned()),
        Page::NotFound => {
            ("404 Not Found", TEXT, "not found: try /metrics, /healthz or /readyz\n".to_owned())
        }
        Page::Metrics | Page::Ready => {
            let views = tokio::task::spawn_blocking(move || source.views()).await;
            match (page, views) {
                (Page::Metrics, Ok(Ok((b, s)))) => match render(&b, &s) {
                    Ok(text) if format == Format::OpenMetrics => {
                        ("200 OK", format.content_type(), text)
                    }
                    Ok(text) => ("200 OK", format.content_type(), to_prometheus_text(&text)),
                    Err(e) => ("500 Internal Server Error", TEXT, format!("{e}\n")),
                },
                (_, Ok(Ok((b, s)))) => match readiness(&b, &s) {
                    Ok(()) => ("200 OK", TEXT, "ready\n".to_owned()),
                    Err(why) => ("503 Service Unavailable", TEXT, format!("not ready: {why}\n")),
                },
                (Page::Ready, Ok(Err(e))) => {
                    ("503 Service Unavailable", TEXT, format!("not ready: {e}\n"))
                }
                (Page::Ready, Err(e)) => {
                    ("503 Service Unavailable", TEXT, format!("not ready: {e}\n"))
                }
                (_, Ok(Err(e))) => ("500 Internal Server Error", TEXT, format!("{e}\n")),
                (_, Err(e)) => ("500 Internal Server Error", TEXT, format!("{e}\n")),
            }
        }
    };
    listen::respond(&mut stream, status, content_type, "", &body, &limit).await;
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

    #[test]
    fn routes_by_path() {
        let cases: &[(&[u8], Page)] = &[
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", Page::Metrics),
            (b"GET / HTTP/1.1\r\n\r\n", Page::Metrics),
            (b"GET /metrics?x=1 HTTP/1.1\r\n\r\n", Page::Metrics),
            (b"GET /healthz HTTP/1.1\r\n\r\n", Page::Health),
            (b"GET /readyz HTTP/1.0\r\n", Page::Ready),
            (b"GET /status HTTP/1.1\r\n\r\n", Page::NotFound),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", Page::NotFound),
            (b"\x00\x01garbage", Page::NotFound),
            (b"", Page::NotFound),
        ];
        for (head, want) in cases {
            assert_eq!(route(head), *want, "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn readiness_by_scenario() {
        let backend = |state: &str, weight: u32| {
            json!({ "address": "192.0.2.11", "port": 80, "weight": weight, "state": state,
                    "packets": 0, "bytes": 0 })
        };
        let service = |dataplane: &str, active: bool, backends: Vec<serde_json::Value>| {
            json!({ "vip": "192.0.2.100", "port": 80, "protocol": "tcp", "scheduler": "mh",
                    "dataplane": dataplane, "interface": "eth0", "packets": 0, "bytes": 0,
                    "active": active, "backends": backends })
        };
        let attached =
            json!([{ "interface": "eth0", "ifindex": 2, "mode": "generic", "program_id": 7 }]);
        // (dataplane kind, attachments, services, ready, reason contains)
        let cases = vec![
            ("xdp", attached.clone(), vec![service("xdp", true, vec![backend("up", 1)])], true, ""),
            ("ipvs", json!([]), vec![service("ipvs", true, vec![backend("up", 1)])], true, ""),
            (
                "xdp",
                json!([]),
                vec![service("xdp", true, vec![backend("up", 1)])],
                false,
                "not attached",
            ),
            ("none", json!([]), vec![], false, "no dataplane"),
            ("xdp", attached.clone(), vec![], false, "no service is configured"),
            (
                "xdp",
                attached.clone(),
                vec![service("xdp", true, vec![backend("down", 1)])],
                false,
                "none with a real server up",
            ),
            (
                "xdp",
                attached.clone(),
                vec![service("xdp", true, vec![backend("up", 0)])],
                false,
                "none with",
            ),
            (
                "xdp",
                attached.clone(),
                vec![service("xdp", false, vec![backend("up", 1)])],
                false,
                "1 not active",
            ),
            (
                "xdp",
                attached,
                vec![
                    service("xdp", false, vec![backend("up", 1)]),
                    service("xdp", true, vec![backend("up", 2)]),
                ],
                true,
                "",
            ),
        ];
        for (kind, attachments, services, ready, why) in cases {
            let backends: BackendsView =
                serde_json::from_value(json!({ "services": services })).expect("backends view");
            let status: StatusView = serde_json::from_value(json!({
                "version": "0", "config": "lb.toml", "pid": 1, "uptime_secs": 1,
                "dataplane": { "kind": kind, "attachments": attachments },
                "counters": {}, "services": 0, "reals": 0
            }))
            .expect("status view");
            let got = readiness(&backends, &status);
            assert_eq!(got.is_ok(), ready, "{kind} {services:?}: {got:?}");
            if let Err(e) = got {
                assert!(e.contains(why), "{e} lacks {why}");
            }
        }
    }

    /// `[bgp]`: a gauge per session and per VIP; none without `[bgp]`.
    #[test]
    fn bgp_series() {
        let backends = BackendsView { services: vec![] };
        let base = json!({
            "version": "0", "config": "lb.toml", "pid": 1, "uptime_secs": 1,
            "dataplane": { "kind": "xdp", "attachments": [] },
            "counters": {}, "services": 0, "reals": 0
        });
        let mut with = base.clone();
        with["bgp"] = json!({
            "speaker": "bird", "announced": ["192.0.2.100"], "restarts": 0,
            "sessions": [
                { "neighbor": "198.51.100.1", "state": "Established", "up": true, "prefixes": 1 },
                { "neighbor": "198.51.100.9", "state": "Active", "up": false, "prefixes": 0 }
            ],
            "vips": [
                { "vip": "192.0.2.100", "announced": true, "reason": "ready", "reason_kind": "ready" },
                { "vip": "192.0.2.200", "announced": false, "reason": "withdrawn by operator",
                  "reason_kind": "withdrawn_by_operator" }
            ]
        });
        let status: StatusView = serde_json::from_value(with).expect("status view");
        let text = render(&backends, &status).expect("rendered");
        for line in [
            "# TYPE lb_bgp_session_up gauge",
            "# TYPE lb_bgp_vip_announced gauge",
            r#"lb_bgp_session_up{neighbor="198.51.100.1"} 1"#,
            r#"lb_bgp_session_up{neighbor="198.51.100.9"} 0"#,
            r#"lb_bgp_vip_announced{vip="192.0.2.100"} 1"#,
            r#"lb_bgp_vip_announced{vip="192.0.2.200"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        let status: StatusView = serde_json::from_value(base).expect("status view");
        let text = render(&backends, &status).expect("rendered");
        assert!(!text.contains("lb_bgp_"), "{text}");
    }

    /// Every VRRP, health-check and reload series, with its type and labels.
    #[test]
    fn vrrp_health_and_reload_series() {
        let backends = BackendsView { services: vec![] };
        let status: StatusView = serde_json::from_value(json!({
            "version": "0", "config": "lb.toml", "pid": 1, "uptime_secs": 1,
            "dataplane": { "kind": "xdp", "attachments": [] },
            "counters": {}, "services": 0, "reals": 0,
            "vrrp": { "instances": [{
                "name": "VI_1", "state": "MASTER", "effective_priority": 150,
                "counters": { "transitions": 2, "adverts_sent": 40, "adverts_received": 3,
                              "rejected": { "bad_auth": 5 } }
            }] },
            "health_checks": {
                "attempts": { "TCP_CHECK": { "success": 7, "failure": 2 } },
                "latency_buckets": [3, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1],
                "latency_sum_us": 4000000
            },
            "reloads": { "succeeded": 3, "failed": 1, "last_success": 1700000000,
                         "config_hash": "0123456789abcdef" }
        }))
        .expect("status view");
        let text = render(&backends, &status).expect("rendered");
        let types = [
            ("lb_vrrp_state", "gauge"),
            ("lb_vrrp_priority", "gauge"),
            ("lb_vrrp_transitions", "counter"),
            ("lb_vrrp_adverts_sent", "counter"),
            ("lb_vrrp_adverts_received", "counter"),
            ("lb_vrrp_adverts_rejected", "counter"),
            ("lb_health_checks", "counter"),
            ("lb_health_check_latency_seconds", "histogram"),
            ("lb_reload_success", "counter"),
            ("lb_reload_failure", "counter"),
            ("lb_reload_last_success_timestamp_seconds", "gauge"),
            ("lb_reload_config_hash", "gauge"),
        ];
        for (name, kind) in types {
            let line = format!("# TYPE {name} {kind}");
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        for line in [
            r#"lb_vrrp_state{instance="VI_1",state="MASTER"} 1"#,
            r#"lb_vrrp_state{instance="VI_1",state="BACKUP"} 0"#,
            r#"lb_vrrp_priority{instance="VI_1"} 150"#,
            r#"lb_vrrp_transitions_total{instance="VI_1"} 2"#,
            r#"lb_vrrp_adverts_sent_total{instance="VI_1"} 40"#,
            r#"lb_vrrp_adverts_received_total{instance="VI_1"} 3"#,
            r#"lb_vrrp_adverts_rejected_total{instance="VI_1",reason="bad_auth"} 5"#,
            r#"lb_health_checks_total{check="TCP_CHECK",outcome="success"} 7"#,
            r#"lb_health_checks_total{check="TCP_CHECK",outcome="failure"} 2"#,
            r#"lb_health_check_latency_seconds_bucket{le="0.001"} 3"#,
            r#"lb_health_check_latency_seconds_bucket{le="5.0"} 8"#,
            r#"lb_health_check_latency_seconds_bucket{le="+Inf"} 9"#,
            "lb_health_check_latency_seconds_count 9",
            "lb_health_check_latency_seconds_sum 4.0",
            "lb_reload_success_total 3",
            "lb_reload_failure_total 1",
            "lb_reload_last_success_timestamp_seconds 1700000000",
            r#"lb_reload_config_hash{hash="0123456789abcdef"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }

    #[test]
    fn check_latency_buckets_count_each_attempt_once() {
        use crate::control::proto::HealthChecksView;
        let mut hc = HealthChecksView::default();
        for ms in [0, 1, 2, 30, 6000] {
            hc.record("TCP_CHECK", ms < 1000, std::time::Duration::from_millis(ms));
        }
        assert_eq!(hc.latency_buckets, [2, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
        assert_eq!(hc.attempts["TCP_CHECK"]["success"], 4);
        assert_eq!(hc.attempts["TCP_CHECK"]["failure"], 1);
        assert_eq!(hc.latency_sum_us, 6_033_000);
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

    /// A status and backends view with every kind of series the agent exports.
    fn full_views() -> (BackendsView, StatusView) {
        let real = |conns: bool| {
            let mut r = json!({ "address": "192.0.2.11", "port": 80, "weight": 1, "state": "up",
                "packets": 5, "bytes": 500, "new_flows": 1, "check_latency": 0.002 });
            if conns {
                r["active_conns"] = json!(3);
                r["inactive_conns"] = json!(4);
            }
            r
        };
        let backends: BackendsView = serde_json::from_value(json!({ "services": [
            { "vip": "192.0.2.100", "port": 80, "protocol": "tcp", "scheduler": "mh",
              "dataplane": "xdp", "interface": "eth0", "packets": 5, "bytes": 500, "new_flows": 1,
              "backends": [real(false)] },
            { "vip": "192.0.2.101", "port": 443, "protocol": "tcp", "scheduler": "wlc",
              "dataplane": "ipvs", "interface": "eth0", "packets": 5, "bytes": 500,
              "backends": [real(true)] }
        ]}))
        .expect("backends view");
        let status: StatusView = serde_json::from_value(json!({
            "version": "0", "config": "lb.toml", "pid": 1, "uptime_secs": 1,
            "dataplane": { "kind": "xdp",
                "attachments": [{ "interface": "eth0", "ifindex": 2, "mode": "generic", "program_id": 77 }],
                "maps": [{ "name": "reals", "used": 3, "max": 1024 }, { "name": "flows", "max": 65536 }] },
            "counters": { "tx": { "packets": 9, "bytes": 900 }, "drop_no_real": { "packets": 1, "bytes": 60 } },
            "events": { "flow_new": 4, "flow_hit": 5 },
            "services": 2, "reals": 2, "checks_not_run": 0,
            "listeners": { "metrics": { "limit": 256, "open": 1, "accepted": 1, "refused": 0, "timed_out": 0 } },
            "vrrp": { "instances": [{ "name": "VI_1", "state": "MASTER", "effective_priority": 150,
                "counters": { "transitions": 1, "adverts_sent": 2, "adverts_received": 0, "rejected": { "bad_auth": 1 } } }] },
            "health_checks": { "attempts": { "TCP_CHECK": { "success": 1 } },
                "latency_buckets": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "latency_sum_us": 900 },
            "reloads": { "succeeded": 0, "failed": 0, "last_success": 1700000000, "config_hash": "00ff" }
        }))
        .expect("status view");
        (backends, status)
    }

    /// Map usage, IPVS connections and the program id (a value, not a label).
    #[test]
    fn map_usage_ipvs_connections_and_program_id() {
        let (backends, status) = full_views();
        let text = render(&backends, &status).expect("rendered");
        let ipvs_real =
            r#"{vip="192.0.2.101",port="443",protocol="tcp",real="192.0.2.11",real_port="80"}"#;
        for line in [
            r#"lb_map_entries{map="reals"} 3"#.to_owned(),
            r#"lb_map_capacity{map="reals"} 1024"#.to_owned(),
            r#"lb_map_capacity{map="flows"} 65536"#.to_owned(),
            format!("lb_real_active_connections{ipvs_real} 3"),
            format!("lb_real_inactive_connections{ipvs_real} 4"),
            r#"lb_xdp_attached{interface="eth0",mode="generic"} 1"#.to_owned(),
            r#"lb_xdp_program_id{interface="eth0"} 77"#.to_owned(),
            r#"lb_dataplane_packets_total{name="tx",reason="tx"} 9"#.to_owned(),
            r#"lb_dataplane_bytes_total{name="drop_no_real",reason="drop_no_real"} 60"#.to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        assert!(!text.contains("lb_map_entries{map=\"flows\"}"), "flows are not counted");
        assert!(
            !text.contains(r#"lb_real_active_connections{vip="192.0.2.100""#),
            "no count on XDP"
        );
        assert!(!text.contains("program_id="), "no label changes with the program");
    }

    #[test]
    fn openmetrics_only_when_asked() {
        let cases: &[(&[u8], Format)] = &[
            (b"GET /metrics HTTP/1.1\r\n\r\n", Format::Prometheus),
            (b"GET /metrics HTTP/1.1\r\nAccept: text/plain\r\n\r\n", Format::Prometheus),
            (
                b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n\r\n",
                Format::OpenMetrics,
            ),
            (b"GET /metrics HTTP/1.1\r\naccept: application/openmetrics-text\r\n\r\n", Format::OpenMetrics),
            (b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; q=0, text/plain\r\n\r\n", Format::Prometheus),
        ];
        for (head, want) in cases {
            assert_eq!(Format::from_head(head), *want, "{}", String::from_utf8_lossy(head));
        }
    }

    /// The Prometheus text has the same samples; counters are named with `_total` in HELP and
    /// TYPE; no `# EOF`. The OpenMetrics one ends with `# EOF`.
    #[test]
    fn prometheus_text_from_openmetrics() {
        let (backends, status) = full_views();
        let open = render(&backends, &status).expect("rendered");
        assert_eq!(open.lines().last(), Some("# EOF"));
        assert!(open.lines().any(|l| l == "# TYPE lb_vrrp_transitions counter"), "{open}");
        let prom = to_prometheus_text(&open);
        assert!(!prom.contains("# EOF"), "{prom}");
        assert!(prom.lines().any(|l| l == "# TYPE lb_vrrp_transitions_total counter"), "{prom}");
        assert!(prom.lines().any(|l| l.starts_with("# HELP lb_vrrp_transitions_total ")), "{prom}");
        assert!(prom.lines().any(|l| l == "# TYPE lb_vrrp_priority gauge"), "{prom}");
        assert!(prom.lines().any(|l| l == "# TYPE lb_health_check_latency_seconds histogram"));
        let samples = |t: &str| -> Vec<String> {
            t.lines().filter(|l| !l.starts_with('#')).map(str::to_owned).collect()
        };
        assert_eq!(samples(&open), samples(&prom));
    }

    /// Every expression of contrib/grafana-dashboard.json names only series the agent exports.
    #[test]
    fn grafana_dashboard_names_only_exported_series() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../contrib/grafana-dashboard.json");
        let text = std::fs::read_to_string(&path).expect("contrib/grafana-dashboard.json");
        let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let (backends, status) = full_views();
        let exposition = render(&backends, &status).expect("rendered");
        let exported: std::collections::BTreeSet<&str> = exposition
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let mut exprs = Vec::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            for t in panel["targets"].as_array().into_iter().flatten() {
                exprs.push(t["expr"].as_str().expect("expr").to_owned());
            }
        }
        let templating = dashboard["templating"]["list"].as_array().into_iter().flatten();
        exprs.extend(
            templating
                .filter_map(|v| v["query"].as_str())
                .filter(|q| q.contains("lb_"))
                .map(str::to_owned),
        );
        assert!(exprs.len() >= 20, "{} expressions", exprs.len());
        let mut named = std::collections::BTreeSet::new();
        for expr in &exprs {
            // Every identifier that starts with `lb_` is a series name.
            let mut rest = expr.as_str();
            let mut found = false;
            while let Some(i) = rest.find("lb_") {
                let starts_word = rest[..i]
                    .chars()
                    .last()
                    .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                if starts_word {
                    let name = &tail[..end];
                    assert!(
                        exported.contains(name),
                        "{expr}: {name} is not exported:\n{exported:?}"
                    );
                    named.insert(name.to_owned());
                    found = true;
                }
                rest = &tail[end..];
            }
            assert!(found, "{expr} names no lb series");
        }
        // The dashboard covers the areas operators watch.
        for area in [
            "lb_real_state",
            "lb_vrrp_state",
            "lb_health_checks_total",
            "lb_reload_failure_total",
            "lb_map_entries",
            "lb_real_active_connections",
            "lb_dataplane_events_total",
        ] {
            assert!(named.contains(area), "no panel on {area}");
        }
    }
}
