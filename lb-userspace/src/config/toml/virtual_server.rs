//! `[[virtual_server]]` in the native front end. Keys depend on each other (`fwmark` instead of
//! `vip` and `port`, `ip_family` only with it, `persistence_granularity`'s form by the VIP's
//! family): each reader reads its own value, knowing which other keys were written (their
//! locations are recorded first); the rules between keys, the keys still read by hand (forwarding,
//! health) and the real and sorry servers are `finish`'s.

use ::toml::de::DeTable;

use super::super::emit::{address, granularity, integer, seconds, string};
use super::super::model::{
    DEFAULT_LB_ALGO, MAX_PERSISTENCE_TIMEOUT_SECS, Protocol, Spans, VirtualServer, host_prefix_len,
    unspecified,
};
use super::real_server::{REAL_SERVER, SORRY_SERVER};
use super::schema::{Doc, Elsewhere, Located, Section, Setting, read_settings, unless};
use super::{Backend, Key, Parser, Value, forwarding, health};
use crate::maglev;

pub(in crate::config) const VIRTUAL_SERVER: &str = "[[virtual_server]]";

impl Located for VirtualServer {
    fn spans_mut(&mut self) -> &mut Spans {
        &mut self.key_locations
    }
}

/// Whether the service is a firewall-mark one: `fwmark` was written (valid or not).
fn has_fwmark(vs: &VirtualServer) -> bool {
    vs.key_locations.get("fwmark").is_some()
}

pub(in crate::config) const VIRTUAL_SERVER_SECTION: Section<VirtualServer> = Section {
    header: VIRTUAL_SERVER,
    misplaced: health::misplaced_in_virtual_server,
    // `vip`, `port` and `interface` are required unless `fwmark` is written: `finish` says so.
    required: &[],
    drop_on_error: &[
        "vip",
        "port",
        "fwmark",
        "ip_family",
        "protocol",
        "interface",
        "lb_algo",
        "lvs_sched",
        "table_size",
        "persistence_timeout",
        "persistence_granularity",
        "tun_source",
        "ops",
    ],
    nested: &[],
    settings: &[
        Setting {
            name: "vip",
            doc: DOC_VIP,
            // Beside `fwmark`, an error (`finish`'s), not read.
            read: |p, k, v, vs| {
                if !has_fwmark(vs)
                    && let Some(vip) = p.ip_address(k, v)
                {
                    vs.vip = vip;
                }
            },
            emit: |vs, _| vs.fwmark.is_none().then(|| address(&vs.vip)),
        },
        Setting {
            name: "port",
            doc: DOC_PORT,
            read: |p, k, v, vs| {
                if !has_fwmark(vs)
                    && let Some(port) = p.port(k, v)
                {
                    vs.port = port;
                }
            },
            emit: |vs, _| vs.fwmark.is_none().then(|| integer(&vs.port)),
        },
        Setting {
            name: "fwmark",
            doc: DOC_FWMARK,
            read: |p, k, v, vs| vs.fwmark = p.integer_in(k, v, 1..=u32::MAX),
            emit: |vs, _| vs.fwmark.as_ref().map(integer),
        },
        Setting {
            name: "ip_family",
            doc: DOC_IP_FAMILY,
            // The default (the first real's family) is in the model already; without `fwmark`,
            // an error (`finish`'s), not read.
            read: |p, k, v, vs| {
                if !has_fwmark(vs) {
                    return;
                }
                // After an error, IPv4's: the form of `persistence_granularity` is then judged
                // as for a service of unknown family.
                vs.vip = unspecified(false);
                let Some(family) = p.string(k, v) else { return };
                match family {
                    "inet" => {}
                    "inet6" => vs.vip = unspecified(true),
                    other => p.error(
                        v.span(),
                        format!("`ip_family` is \"inet\" or \"inet6\", found \"{other}\""),
                    ),
                }
            },
            // Written when the first real server would not tell the family.
            emit: |vs, _| {
                vs.fwmark?;
                let inferred = vs.real_servers.first().is_some_and(|r| r.address.is_ipv6());
                (vs.vip.is_ipv6() != inferred)
                    .then(|| string(if vs.vip.is_ipv6() { "inet6" } else { "inet" }))
            },
        },
        Setting {
            name: "protocol",
            doc: DOC_PROTOCOL,
            read: |p, k, v, vs| {
                if let Some(name) = p.string(k, v) {
                    match name.parse::<Protocol>() {
                        Ok(protocol) => vs.protocol = protocol,
                        Err(error) => p.error(v.span(), error.to_string()),
                    }
                }
            },
            emit: |vs, _| unless(&vs.protocol, &Protocol::Tcp, |p| string(p.as_str())),
        },
        Setting {
            name: "interface",
            doc: DOC_INTERFACE,
            read: |p, k, v, vs| {
                if let Some(name) = p.string(k, v) {
                    name.clone_into(&mut vs.interface);
                }
            },
            // IPVS, which alone serves firewall-mark services, needs none.
            emit: |vs, _| {
                (!(vs.fwmark.is_some() && vs.interface.is_empty())).then(|| string(&vs.interface))
            },
        },
        Setting {
            name: "lb_algo",
            doc: DOC_LB_ALGO,
            read: |p, k, v, vs| scheduler(p, k, v, vs, "lvs_sched"),
            emit: |vs, _| unless(&vs.lb_algo.as_str(), &DEFAULT_LB_ALGO, |a| string(a)),
        },
        Setting {
            name: "lvs_sched",
            doc: Doc {
                ty: "IPVS scheduler name",
                default: "",
                meaning: "keepalived's spelling of `lb_algo`. Giving both spellings is an error.",
            },
            read: |p, k, v, vs| scheduler(p, k, v, vs, "lb_algo"),
            // Written as `lb_algo`.
            emit: |_, _| None,
        },
        Setting {
            name: "table_size",
            doc: DOC_TABLE_SIZE,
            read: |p, k, v, vs| {
                if let Some(size) = p.table_size(k, v) {
                    vs.table_size = size;
                }
            },
            emit: |vs, _| unless(&vs.table_size, &maglev::DEFAULT_SIZE, integer),
        },
        Setting {
            name: "persistence_timeout",
            doc: DOC_PERSISTENCE_TIMEOUT,
            read: |p, k, v, vs| {
                if let Some(timeout) = p.seconds(k, v, 0..=MAX_PERSISTENCE_TIMEOUT_SECS) {
                    vs.persistence_timeout = Some(timeout).filter(|t| !t.is_zero());
                }
            },
            emit: |vs, _| vs.persistence_timeout.as_ref().map(seconds),
        },
        Setting {
            name: "persistence_granularity",
            doc: DOC_PERSISTENCE_GRANULARITY,
            // Read after the VIP (or `ip_family`), whose family decides the forms allowed.
            read: |p, k, v, vs| {
                if let Some(prefix) = p.persistence_granularity(k, v, Some(vs.vip)) {
                    vs.persistence_prefix = prefix;
                }
            },
            emit: |vs, _| {
                (vs.persistence_prefix != host_prefix_len(vs.vip))
                    .then(|| granularity(vs.vip, vs.persistence_prefix))
            },
        },
        forwarding::SERVICE_LB_KIND,
        forwarding::SERVICE_LVS_METHOD,
        forwarding::SERVICE_TUN_TYPE,
        forwarding::SERVICE_TUN_PORT,
        forwarding::TUN_SOURCE,
        forwarding::OPS,
    ],
    elsewhere: &[
        Elsewhere {
            label: r##"`real_server`"##,
            keys: &["real_server"],
            doc: Doc {
                ty: r##"array of tables"##,
                default: r##"empty"##,
                meaning: r##"The backends. With none, the service's traffic is dropped (`drop_no_real`), unless there is a sorry server."##,
            },
        },
        Elsewhere {
            label: r##"`sorry_server`"##,
            keys: &["sorry_server"],
            doc: Doc {
                ty: r##"table"##,
                default: r##"none"##,
                meaning: r##"A backend that receives the service's traffic only when no real server can take it. Written `[virtual_server.sorry_server]` or inline, `sorry_server = { address = "192.0.2.200" }`; see below."##,
            },
        },
        Elsewhere {
            label: "`delay_loop`, `alpha`, `omega`, `quorum`, `hysteresis`, `quorum_up`, \
                    `quorum_down`, `inhibit_on_failure`",
            keys: &[
                "delay_loop",
                "alpha",
                "omega",
                "quorum",
                "hysteresis",
                "quorum_up",
                "quorum_down",
                "inhibit_on_failure",
            ],
            doc: Doc {
                ty: "",
                default: "",
                meaning: "How the real servers are checked; see [Health checks](#health-checks).",
            },
        },
    ],
    finish: Some(finish),
};

/// `lb_algo` or `lvs_sched`, read unless the `other` spelling is given too (`finish` says so).
fn scheduler(p: &mut Parser<'_>, k: &Key<'_>, v: &Value<'_>, vs: &mut VirtualServer, other: &str) {
    if vs.key_locations.get(other).is_none()
        && let Some(name) = p.string(k, v)
    {
        name.clone_into(&mut vs.lb_algo);
    }
}

/// The rules between keys, then the keys read by hand, the real servers and the sorry server.
fn finish(
    p: &mut Parser<'_>,
    table: &DeTable<'_>,
    vs: &mut VirtualServer,
    failed: &[&'static str],
) -> bool {
    let section = vs.key_locations.section();
    let mut keep = true;
    let fwmark = has_fwmark(vs);
    if fwmark {
        // A firewall-mark service: the mark picks its packets, the family its addresses.
        for name in ["vip", "port"] {
            if let Some(value) = table.get(name) {
                p.error(
                    value.span(),
                    format!(
                        "`{name}` does not go with `fwmark`: a firewall-mark service takes the \
                         packets netfilter marked, whatever their address and port"
                    ),
                );
            }
        }
    } else {
        if let Some(value) = table.get("ip_family") {
            p.error(
                value.span(),
                "`ip_family` is for firewall-mark services (`fwmark`); a virtual server with a \
                 `vip` has the vip's family",
            );
        }
        for name in ["vip", "port"] {
            if !table.contains_key(name) {
                p.missing(section, name, VIRTUAL_SERVER);
                keep = false;
            }
        }
    }
    // IPVS, which alone serves firewall-mark services, needs no interface.
    if !fwmark && !table.contains_key("interface") {
        p.missing(section, "interface", VIRTUAL_SERVER);
        keep = false;
    }
    // `lb_algo` and keepalived's other spelling `lvs_sched`: giving both is ambiguous.
    let conflict = "are the same setting (keepalived spells it both ways); keep only one";
    keep &= p.either(table, ["lb_algo", "lvs_sched"], conflict).is_some();
    if vs.key_locations.get("persistence_granularity").is_none() {
        vs.persistence_prefix = host_prefix_len(vs.vip);
    }
    let health_ok = read_settings(p, table, health::SERVICE_HEALTH, vs).is_empty();
    // `lb_kind` and the tunnel keys, which depend on one another.
    let forwarding = p.lb_kind(table);

    // The reals' default is the service's port, which must then be valid (else the service is
    // left out, and its servers only checked); when the service's health settings are invalid,
    // the reals are still read, with keepalived's default `inhibit_on_failure`.
    let port_ok = fwmark || (table.contains_key("port") && !failed.contains(&"port"));
    let port = port_ok.then_some(vs.port);
    let inhibit_on_failure = health_ok && vs.health.inhibit_on_failure;
    if let Some((key, value)) = table.get_key_value("real_server") {
        vs.real_servers = p
            .tables(key, value, REAL_SERVER)
            .into_iter()
            .filter_map(|(table, span)| {
                p.real_server(table, span, port, Backend::Real { inhibit_on_failure })
            })
            .collect();
    }
    // Like a real server with an error, a sorry server with one is left out on its own.
    vs.sorry_server = table.get_key_value("sorry_server").and_then(|(key, value)| {
        let (table, span) = p.table(key, value, SORRY_SERVER)?;
        p.real_server(table, span, port, Backend::Sorry)
    });
    match forwarding {
        Some(lb_kind) if health_ok => {
            vs.forwarding.lb_kind = lb_kind.unwrap_or_default();
            keep
        }
        _ => false,
    }
}

const DOC_VIP: Doc = Doc {
    ty: r##"IP address string"##,
    default: r##"required"##,
    meaning: r##"The virtual IP clients connect to, IPv4 or IPv6."##,
};

const DOC_PORT: Doc = Doc {
    ty: r##"integer 0–65535"##,
    default: r##"required"##,
    meaning: r##"Service port. `0` makes an all-ports service: it takes any destination port of its protocol on the VIP that no exact-port service on that VIP takes; its real servers then have port `0` or none."##,
};

const DOC_FWMARK: Doc = Doc {
    ty: r##"integer 1–4294967295"##,
    default: r##"none"##,
    meaning: r##"Instead of `vip` and `port`: a firewall-mark service (keepalived's `virtual_server fwmark N`, `ipvsadm -f N`). It takes the packets netfilter marked N on this director, e.g. several ports of one VIP, so that persistence spans them. Netfilter marks packets after XDP has run, so these services run on kernel IPVS only (see [Dataplanes](#dataplanes)). `vip` or `port` next to it is an error; its real servers keep their ports (used by their checks; with NAT, the port to rewrite to, `0` keeping the packet's)."##,
};

const DOC_IP_FAMILY: Doc = Doc {
    ty: r##"`"inet"` \| `"inet6"`"##,
    default: r##"the first real server's family, else `"inet"`"##,
    meaning: r##"The family of a firewall-mark service (keepalived's `ip_family`). Only with `fwmark`."##,
};

const DOC_PROTOCOL: Doc = Doc {
    ty: r##"`"tcp"` \| `"udp"`"##,
    default: r##"`"tcp"`"##,
    meaning: r##"Case-insensitive (keepalived writes `TCP`)."##,
};

const DOC_INTERFACE: Doc = Doc {
    ty: r##"string"##,
    default: r##"required (optional with `fwmark`)"##,
    meaning: r##"The NIC the VIP traffic arrives on; the XDP program attaches here and the reals must be reachable on it (same L2 segment). Must exist on the host."##,
};

const DOC_LB_ALGO: Doc = Doc {
    ty: r##"IPVS scheduler name"##,
    default: r##"`"mh"`"##,
    meaning: r##"One of `rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh twos`. On XDP, `mh` is weighted Maglev, `sh` hashes on the client address, `rr`/`wrr` run as weighted Maglev (same shares). The schedulers that count connections or keep per-real state (`lc wlc sed nq lblc lblcr dh fo ovf twos`) run on kernel IPVS where it is usable (`lb run --dataplane auto`), else as weighted Maglev on XDP; `lb check` prints a notice."##,
};

const DOC_TABLE_SIZE: Doc = Doc {
    ty: r##"one of `251 509 1021 2039 4093 8191 16381 32749 65537 131071`"##,
    default: r##"`65537`"##,
    meaning: r##"Size of the service's Maglev lookup table (a prime). Above 100 × the number of real servers every real's share stays within 1 % of its weight; `lb check` prints a notice below that. Another number is an error naming the nearest allowed size."##,
};

const DOC_PERSISTENCE_TIMEOUT: Doc = Doc {
    ty: r##"seconds, 0–31536000"##,
    default: r##"`0`"##,
    meaning: r##"As keepalived's: a client sticks to one real server until it has been idle this long. `0` (or absent) means no persistence: each flow is scheduled on its own."##,
};

const DOC_PERSISTENCE_GRANULARITY: Doc = Doc {
    ty: r##"netmask string or integer prefix length"##,
    default: r##"host (`/32` or `/128`)"##,
    meaning: r##"As keepalived's: clients whose addresses share this prefix count as one client for persistence. IPv4 services take a contiguous netmask (`"255.255.255.0"`) or a prefix length 0–32; IPv6 services only a prefix length 0–128. Without `persistence_timeout` it has no effect (`lb check` prints a notice)."##,
};
