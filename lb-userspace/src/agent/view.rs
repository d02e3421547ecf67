//! What operators see: views built from the desired state plus counters, so `lb backends` shows
//! exactly what the dataplane was told to do.

use crate::{
    control::proto::{BackendView, BackendsView, ServiceDataplaneView, ServiceView},
    dataplane::{Counters, ipvs::dataplane::forward},
    desired::{Desired, RealDesired},
};

pub fn backends(desired: &Desired, counters: &Counters) -> BackendsView {
    BackendsView {
        services: desired
            .services
            .iter()
            .map(|s| {
                let svc = counters.services.get(&s.key).copied().unwrap_or_default();
                let backend = |r: &RealDesired| {
                    let id = (s.key, r.address, r.port);
                    let c = counters.reals.get(&id).copied().unwrap_or_default();
                    let conns = counters.connections.get(&id);
                    BackendView {
                        address: r.address.to_string(),
                        port: r.port,
                        weight: r.weight,
                        state: r.state.as_str().to_owned(),
                        mac: r.mac.map(|m| m.to_string()),
                        packets: c.packets,
                        bytes: c.bytes,
                        new_flows: c.new_flows,
                        config_weight: r.config_weight,
                        override_: r.override_.map(|o| o.to_string()),
                        health: r.health_message.clone(),
                        check_latency: r.check_latency.map(|d| d.as_secs_f64()),
                        forward: forward(r.lb_kind).ipvsadm_name().to_owned(),
                        active_conns: conns.map(|c| c.active),
                        inactive_conns: conns.map(|c| c.inactive),
                    }
                };
                ServiceView {
                    vip: s.key.vip.to_string(),
                    port: s.key.port,
                    protocol: s.key.protocol.as_str().to_owned(),
                    fwmark: s.key.fwmark,
                    scheduler: s.scheduler.clone(),
                    dataplane: s.backend.as_str().to_owned(),
                    dataplane_reason: Some(s.backend_reason.clone()).filter(|r| !r.is_empty()),
                    interface: s.interface.clone(),
                    packets: svc.packets,
                    bytes: svc.bytes,
                    new_flows: svc.new_flows,
                    backends: s.reals.iter().map(backend).collect(),
                    sorry_server: s.sorry.as_ref().map(backend),
                    active: s.active,
                    vrrp_instance: s.vrrp_instance.clone(),
                }
            })
            .collect(),
    }
}

/// Which dataplane serves each service, for `lb status`.
pub fn service_dataplanes(desired: &Desired) -> Vec<ServiceDataplaneView> {
    desired
        .services
        .iter()
        .map(|s| ServiceDataplaneView {
            service: s.key.to_string(),
            dataplane: s.backend.as_str().to_owned(),
            reason: Some(s.backend_reason.clone()).filter(|r| !r.is_empty()),
        })
        .collect()
}
