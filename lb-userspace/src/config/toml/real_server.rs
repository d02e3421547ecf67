//! `[[virtual_server.real_server]]` and `[virtual_server.sorry_server]` in the native front end.
//! The model read into holds the defaults its virtual server gives (its port, its
//! `inhibit_on_failure`); a server with any error is left out. `lb_kind` with the tunnel keys
//! (`Parser::lb_kind`), the health settings and the checkers (`health.rs`) are read in `finish`.

use super::super::emit::{address, integer};
use super::super::model::{DEFAULT_WEIGHT, MAX_WEIGHT, RealServer, Spans};
use super::schema::{Doc, Elsewhere, Located, Section, Setting, read_settings, unless};
use super::{forwarding, health};

pub(in crate::config) const REAL_SERVER: &str = "[[virtual_server.real_server]]";
pub(in crate::config) const SORRY_SERVER: &str = "[virtual_server.sorry_server]";

impl Located for RealServer {
    fn spans_mut(&mut self) -> &mut Spans {
        &mut self.key_locations
    }
}

/// `address`, the same for both kinds of server but for its meaning.
const fn address_setting(meaning: &'static str) -> Setting<RealServer> {
    Setting {
        name: "address",
        doc: Doc { ty: "IP address string", default: "required", meaning },
        read: |p, k, v, rs| {
            if let Some(address) = p.ip_address(k, v) {
                rs.address = address;
            }
        },
        emit: |rs, _| Some(address(&rs.address)),
    }
}

/// `port`, whose default is the virtual server's.
const fn port_setting(meaning: &'static str) -> Setting<RealServer> {
    Setting {
        name: "port",
        doc: Doc { ty: "integer", default: "the service's port", meaning },
        read: |p, k, v, rs| {
            if let Some(port) = p.port(k, v) {
                rs.port = port;
            }
        },
        emit: |rs, d| unless(&rs.port, &d.port, integer),
    }
}

pub(in crate::config) const REAL_SERVER_SECTION: Section<RealServer> = Section {
    header: REAL_SERVER,
    misplaced: health::misplaced_in_real_server,
    required: &["address"],
    drop_on_error: &["address", "port", "weight", "uthreshold", "lthreshold"],
    nested: &[],
    settings: &[
        address_setting(
            r#"The real server. Same address family as the VIP, except for a tunnelled real (`lb_kind = "TUN"`), which may be of the other family when the director has a route to it in that family (else a located error)."#,
        ),
        port_setting(
            r#"Direct routing and tunnels forward packets unchanged, so a different port is an error, except with `lb_kind = "NAT"`, which rewrites it."#,
        ),
        Setting {
            name: "weight",
            doc: Doc {
                ty: "integer 0–65535",
                default: "`1`",
                meaning: "Share of new flows relative to the other reals. `0` drains the real \
                     (state `drain`: no new flows).",
            },
            read: |p, k, v, rs| {
                if let Some(weight) = p.integer_in(k, v, 0..=MAX_WEIGHT) {
                    rs.weight = weight;
                }
            },
            emit: |rs, _| unless(&rs.weight, &DEFAULT_WEIGHT, integer),
        },
        forwarding::server_lb_kind(
            "This real's own forwarding method. NAT puts the service on IPVS; DR and TUN reals \
             share the XDP path.",
        ),
        forwarding::SERVER_LVS_METHOD,
        forwarding::SERVER_TUN_TYPE,
        forwarding::SERVER_TUN_PORT,
        forwarding::UTHRESHOLD,
        forwarding::LTHRESHOLD,
    ],
    elsewhere: &[Elsewhere {
        label: "`inhibit_on_failure`, `notify_up`, `notify_down`, checker tables \
                    (`tcp_check`, `http_get`, `ssl_get`, `misc_check`, `dns_check`, \
                    `udp_check`, `ping_check`)",
        keys: &[
            "inhibit_on_failure",
            "notify_up",
            "notify_down",
            "tcp_check",
            "http_get",
            "ssl_get",
            "misc_check",
            "dns_check",
            "udp_check",
            "ping_check",
        ],
        doc: Doc {
            ty: "",
            default: "",
            meaning: "How the real is checked; see [Health checks](#health-checks).",
        },
    }],
    finish: Some(|p, table, rs, _| {
        // The virtual server's `inhibit_on_failure` is the default, already in the model.
        let health_ok = read_settings(p, table, health::REAL_HEALTH, rs).is_empty();
        let checkers = p.checkers(table, REAL_SERVER);
        let forwarding = p.lb_kind(table);
        match (checkers, forwarding) {
            (Some((checks, locations)), Some(lb_kind)) if health_ok => {
                rs.health.checks = checks;
                rs.check_locations = locations;
                rs.forwarding.lb_kind = lb_kind;
                true
            }
            _ => false,
        }
    }),
};

/// A sorry server has no weight: it only ever takes the traffic alone. Nor is it checked
/// (keepalived does not check it): its health is the default, and health keys are misplaced.
pub(in crate::config) const SORRY_SERVER_SECTION: Section<RealServer> = Section {
    header: SORRY_SERVER,
    misplaced: health::misplaced_in_sorry_server,
    required: &["address"],
    drop_on_error: &["address", "port"],
    nested: &[],
    settings: &[
        address_setting("The sorry server. Same address family as the VIP."),
        port_setting("As for a real server, a different port is an error (except with NAT)."),
        forwarding::server_lb_kind("keepalived's `sorry_server_lvs_method`."),
        forwarding::SERVER_LVS_METHOD,
        forwarding::SERVER_TUN_TYPE,
        forwarding::SERVER_TUN_PORT,
    ],
    elsewhere: &[],
    finish: Some(|p, table, rs, _| match p.lb_kind(table) {
        Some(lb_kind) => {
            rs.forwarding.lb_kind = lb_kind;
            true
        }
        None => false,
    }),
};
