//! Text renderings of control-socket views. `lb backends` reads like `ipvsadm -Ln` so operators
//! find what they expect where they expect it; the counters columns replace ActiveConn/InActConn.

use std::fmt::Write as _;

use crate::control::proto::{BackendView, BackendsView, ServiceView, StatusView, endpoint};

pub fn backends(v: &BackendsView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Prot LocalAddress:Port Scheduler Flags");
    let _ = writeln!(
        out,
        "  -> RemoteAddress:Port           Forward Weight State      Flows      Packets    Bytes      \
         ActiveConn InActConn"
    );
    for s in &v.services {
        let standby = match (&s.vrrp_instance, s.active) {
            (Some(i), false) => format!(", standby: {i} is not MASTER"),
            _ => String::new(),
        };
        let on =
            if s.interface.is_empty() { String::new() } else { format!(" on {}", s.interface) };
        let _ = writeln!(
            out,
            "{:<4} {} {} ({}{on}{standby})",
            protocol_column(s),
            local_address(s),
            s.scheduler,
            s.dataplane,
        );
        for b in &s.backends {
            let state =
                if b.override_.is_some() { format!("{}*", b.state) } else { b.state.clone() };
            backend_line(&mut out, b, &state);
        }
        if let Some(b) = &s.sorry_server {
            backend_line(&mut out, b, &format!("sorry/{}", b.state));
        }
    }
    let changed = v.services.iter().flat_map(|s| &s.backends).any(|b| b.override_.is_some());
    if changed {
        let _ =
            writeln!(out, "* changed at runtime (lb drain/undrain/weight) until the next reload");
    }
    out
}

/// ipvsadm's `Prot` column: `TCP`, `UDP`, or `FWM` for a firewall-mark service.
fn protocol_column(s: &ServiceView) -> String {
    if s.fwmark.is_some() { "FWM".to_owned() } else { s.protocol.to_uppercase() }
}

/// ipvsadm's `LocalAddress:Port` column: the endpoint, or the mark (`1`, `1 IPv6`).
fn local_address(s: &ServiceView) -> String {
    match s.fwmark {
        Some(mark) if s.vip.contains(':') => format!("{mark} IPv6"),
        Some(mark) => mark.to_string(),
        None => endpoint(&s.vip, s.port),
    }
}

/// `lb backends --stats`: ipvsadm's `-Ln --stats` layout. Conns are new flows; in direct routing
/// replies bypass the director, so the outgoing columns are always 0 (as ipvsadm shows for DR).
pub fn backends_stats(v: &BackendsView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes"
    );
    let _ = writeln!(out, "  -> RemoteAddress:Port");
    for s in &v.services {
        let _ = writeln!(
            out,
            "{:<4} {:<28} {:>8} {:>8} {:>8} {:>8} {:>8}",
            protocol_column(s),
            local_address(s),
            s.new_flows,
            s.packets,
            0,
            s.bytes,
            0
        );
        for b in s.backends.iter().chain(&s.sorry_server) {
            let _ = writeln!(
                out,
                "  -> {:<28} {:>8} {:>8} {:>8} {:>8} {:>8}",
                endpoint(&b.address, b.port),
                b.new_flows,
                b.packets,
                0,
                b.bytes,
                0
            );
        }
    }
    out
}

fn backend_line(out: &mut String, b: &BackendView, state: &str) {
    // XDP keeps no connection counts per real: "-", as the table must keep its columns.
    let conns = |n: Option<u32>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let _ = writeln!(
        out,
        "  -> {:<28} {:<7} {:<6} {:<10} {:<10} {:<10} {:<10} {:<10} {}",
        endpoint(&b.address, b.port),
        b.forward,
        b.weight,
        state,
        b.new_flows,
        b.packets,
        b.bytes,
        conns(b.active_conns),
        conns(b.inactive_conns)
    );
}

pub fn status(v: &StatusView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "lb {} (pid {}, up {}s)", v.version, v.pid, v.uptime_secs);
    let _ = writeln!(out, "config:    {}", v.config);
    let _ = writeln!(out, "services:  {} ({} real servers)", v.services, v.reals);
    let _ = writeln!(out, "dataplane: {}", v.dataplane.kind);
    for d in &v.service_dataplanes {
        let reason = d.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default();
        let _ = writeln!(out, "  {} on {}{reason}", d.service, d.dataplane);
    }
    for a in &v.dataplane.attachments {
        let _ = writeln!(
            out,
            "  {} (ifindex {}): {} mode, program id {}",
            a.interface, a.ifindex, a.mode, a.program_id
        );
    }
    if let Some(vrrp) = &v.vrrp {
        let _ = writeln!(out, "vrrp:");
        for i in vrrp["instances"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  {} (vrid {}, v{}, {}): {} prio {} (base {}), master {} (prio {}), advert {}s, down {}s, sent {} received {} rejected {}",
                i["name"].as_str().unwrap_or("?"),
                i["vrid"],
                i["version"],
                i["interface"].as_str().unwrap_or("?"),
                i["state"].as_str().unwrap_or("?"),
                i["effective_priority"],
                i["base_priority"],
                i["master"].as_str().unwrap_or("-"),
                i["master_priority"],
                i["advert_int"],
                i["master_down_interval"],
                i["counters"]["adverts_sent"],
                i["counters"]["adverts_received"],
                i["counters"]["rejected"]
                    .as_object()
                    .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum::<u64>()),
            );
        }
    }
    if let Some(bgp) = &v.bgp {
        let error = bgp.speaker.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default();
        let _ = writeln!(out, "bgp: speaker {}{error}", bgp.speaker.speaker);
        for s in &bgp.speaker.sessions {
            let uptime = s.uptime_secs.map(|u| format!(" for {u}s")).unwrap_or_default();
            let bfd = s.bfd.as_ref().map(|b| format!(", bfd {b}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  neighbor {}: {}{uptime}{bfd}, {} prefixes announced",
                s.neighbor, s.state, s.prefixes
            );
        }
        for vip in &bgp.vips {
            let state = if vip.announced { "announced" } else { "withdrawn" };
            let _ = writeln!(out, "  vip {}: {state} ({})", vip.vip, vip.reason);
        }
    }
    if !v.pick_fingerprints.is_empty() {
        let _ = writeln!(out, "pick fingerprints:");
        for f in &v.pick_fingerprints {
            let _ = writeln!(out, "  {} {}", f.service, f.fingerprint);
        }
    }
    let _ = writeln!(out, "maps:");
    for m in &v.dataplane.maps {
        let used = m.used.map(|u| u.to_string()).unwrap_or_else(|| "-".into());
        let _ = writeln!(out, "  {:<18} {:>12} used of {}", m.name, used, m.max);
    }
    let _ = writeln!(out, "counters:");
    for (name, c) in &v.counters {
        let _ = writeln!(out, "  {:<18} {:>12} pkts {:>14} bytes", name, c.packets, c.bytes);
    }
    let _ = writeln!(out, "events:");
    for (name, n) in &v.events {
        let _ = writeln!(out, "  {name:<18} {n:>12}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[bgp]` in `lb status`: each session, each VIP with its reason, the fingerprints.
    #[test]
    fn status_shows_bgp() {
        let v: StatusView = serde_json::from_value(serde_json::json!({
            "version": "0", "config": "lb.toml", "pid": 1, "uptime_secs": 1,
            "dataplane": { "kind": "xdp", "attachments": [] },
            "counters": {}, "services": 1, "reals": 2,
            "bgp": {
                "speaker": "bird", "announced": [], "restarts": 0,
                "sessions": [{ "neighbor": "198.51.100.1", "state": "Established", "up": true,
                               "uptime_secs": 42, "bfd": "Up", "prefixes": 0 }],
                "vips": [{ "vip": "192.0.2.100", "announced": false,
                           "reason": "withdrawn by operator",
                           "reason_kind": "withdrawn_by_operator" }]
            },
            "pick_fingerprints": [{ "service": "192.0.2.100:80/tcp", "fingerprint": "0123" }]
        }))
        .expect("status view");
        let text = status(&v);
        for line in [
            "bgp: speaker bird",
            "  neighbor 198.51.100.1: Established for 42s, bfd Up, 0 prefixes announced",
            "  vip 192.0.2.100: withdrawn (withdrawn by operator)",
            "  192.0.2.100:80/tcp 0123",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn backends_table_reads_like_ipvsadm() {
        let v = BackendsView {
            services: vec![ServiceView {
                vip: "192.0.2.100".into(),
                port: 80,
                protocol: "tcp".into(),
                fwmark: None,
                scheduler: "mh".into(),
                dataplane: "xdp".into(),
                dataplane_reason: None,
                interface: "eth0".into(),
                packets: 3,
                bytes: 300,
                new_flows: 2,
                sorry_server: None,
                active: true,
                vrrp_instance: None,
                backends: vec![BackendView {
                    address: "2001:db8::11".into(),
                    port: 80,
                    weight: 2,
                    state: "drain".into(),
                    mac: None,
                    packets: 7,
                    bytes: 700,
                    new_flows: 2,
                    config_weight: 2,
                    override_: None,
                    health: None,
                    check_latency: None,
                    forward: "Route".into(),
                    active_conns: None,
                    inactive_conns: None,
                }],
            }],
        };
        let text = backends(&v);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Prot LocalAddress:Port Scheduler Flags");
        assert_eq!(lines[2], "TCP  192.0.2.100:80 mh (xdp on eth0)");
        assert!(lines[3].starts_with("  -> [2001:db8::11]:80"), "{}", lines[3]);
        let cols: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(cols[2..], ["Route", "2", "drain", "2", "7", "700", "-", "-"]);
        let stats = backends_stats(&v);
        let lines: Vec<&str> = stats.lines().collect();
        assert!(lines[0].starts_with("Prot LocalAddress:Port") && lines[0].ends_with("OutBytes"));
        let svc: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(svc, ["TCP", "192.0.2.100:80", "2", "3", "0", "300", "0"]);
        let real: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(real, ["->", "[2001:db8::11]:80", "2", "7", "0", "700", "0"]);

        // Firewall-mark services read as ipvsadm prints them: `FWM  1`, `FWM  2 IPv6`.
        let mut v = v;
        let plain = v.services[0].clone();
        v.services = [("0.0.0.0", 1), ("::", 2)]
            .map(|(vip, mark)| ServiceView {
                vip: vip.into(),
                port: 0,
                fwmark: Some(mark),
                dataplane: "ipvs".into(),
                interface: String::new(),
                ..plain.clone()
            })
            .into();
        let text = backends(&v);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2], "FWM  1 mh (ipvs)");
        assert_eq!(lines[4], "FWM  2 IPv6 mh (ipvs)");
        let stats = backends_stats(&v);
        let svc: Vec<&str> = stats.lines().nth(2).unwrap_or_default().split_whitespace().collect();
        assert_eq!(svc[..2], ["FWM", "1"]);
    }
}
