//! Forwarding settings in the native front end, with keepalived's keywords: `lb_kind` (or
//! `lvs_method`) `"DR"`, `"NAT"` or `"TUN"`, `tun_type` and `tun_port` for tunnels, `tun_source`
//! and `ops` (one-packet scheduling) on a virtual server, `uthreshold`/`lthreshold` on a real
//! server. Anything but DR needs the IPVS dataplane; which dataplane serves a service is decided
//! later (`dataplane::select`), since it depends on the host.
//!
//! Each key is a [`Setting`] of its section's description. `lb_kind` and the tunnel keys depend on
//! one another (the tunnel keys only with TUN, GUE only with a port): their settings write what
//! was written into the section's [`ForwardingDraft`] (held by the parser while the section is
//! read), which the section's `finish` turns into the model's method ([`ForwardingDraft::finish`]).

use std::ops::Range;

use super::super::emit::{address, boolean, integer, string};
use super::super::model::{LbKind, RealServer, Tunnel, TunnelError, VirtualServer};
use super::schema::{Doc, Located, Setting, unless};
use super::{Key, Parser, Value};

const METHODS: &str = "\"DR\", \"NAT\" or \"TUN\"";

/// `tun_type`'s value as written back: none for IPIP, the default.
fn tun_type(kind: Option<LbKind>) -> Option<String> {
    match kind? {
        LbKind::Tun(Tunnel::Gre) => Some(string("gre")),
        LbKind::Tun(Tunnel::Gue { .. }) => Some(string("gue")),
        _ => None,
    }
}

fn tun_port(kind: Option<LbKind>) -> Option<String> {
    match kind? {
        LbKind::Tun(Tunnel::Gue { port }) => Some(port.to_string()),
        _ => None,
    }
}

/// The forwarding keys of one section as written, read by their settings (each its own value,
/// reporting what is wrong with it) and turned into the model's method by
/// [`ForwardingDraft::finish`], the one place that knows them all. Taken from the parser by the
/// section's `finish` before any section nested in it is read.
#[derive(Debug, Default)]
pub(super) struct ForwardingDraft {
    /// `lb_kind` and `lvs_method` if written; a value is `None` when it had an error or
    /// was not read (both spellings written).
    methods: Vec<Written<(String, Method)>>,
    /// Read only with a valid `TUN`: otherwise their being written is the error.
    tun_type: Option<Written<String>>,
    tun_port: Option<Written<u16>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Dr,
    Nat,
    Tun,
}

/// A key as written: its name, where its key and its value are, and its value if read.
#[derive(Debug)]
struct Written<T> {
    key: &'static str,
    key_span: Range<usize>,
    value_span: Range<usize>,
    value: Option<T>,
}

impl<T> Written<T> {
    fn new(key: &'static str, k: &Key<'_>, v: &Value<'_>, value: Option<T>) -> Self {
        Written { key, key_span: k.span(), value_span: v.span(), value }
    }
}

impl ForwardingDraft {
    /// Whether `lb_kind` (or `lvs_method`) was read as `TUN`, so that the tunnel keys are read.
    fn tunnel(&self) -> bool {
        matches!(self.methods.as_slice(), [Written { value: Some((_, Method::Tun)), .. }])
    }

    /// The method written, with its tunnel: `Some(None)` when none was; `None` after an error
    /// (reported here or by a key's setting), when the section is to be left out.
    pub(super) fn finish(self, p: &mut Parser<'_>) -> Option<Option<LbKind>> {
        let tunnel_keys = [
            self.tun_type.as_ref().map(|w| (w.key, w.value_span.clone())),
            self.tun_port.as_ref().map(|w| (w.key, w.value_span.clone())),
        ];
        let (name, method) = match self.methods.as_slice() {
            [] => {
                for (key, span) in tunnel_keys.iter().flatten() {
                    p.error(span.clone(), format!("`{key}` needs `lb_kind = \"TUN\"`"));
                }
                return if tunnel_keys.iter().any(Option::is_some) { None } else { Some(None) };
            }
            [one] => one.value.clone()?,
            [a, b, ..] => {
                let (first, second) =
                    if a.key_span.start < b.key_span.start { (a, b) } else { (b, a) };
                let message = format!(
                    "`{}` and `{}` are the same setting (keepalived spells it both ways); keep \
                     only one",
                    second.key, first.key
                );
                p.error(second.key_span.clone(), message);
                return None;
            }
        };
        let kind = match method {
            Method::Dr => LbKind::Dr,
            Method::Nat => LbKind::Nat,
            Method::Tun => LbKind::Tun(self.tunnel_of(p)?),
        };
        if method != Method::Tun
            && let Some((key, span)) = tunnel_keys.into_iter().flatten().next()
        {
            p.error(span, format!("`{key}` needs `lb_kind = \"TUN\"`, not \"{name}\""));
            return None;
        }
        Some(Some(kind))
    }

    /// keepalived's `tun_type ipip|gue|gre` (default ipip) and `tun_port` (GUE's, required).
    fn tunnel_of(&self, p: &mut Parser<'_>) -> Option<Tunnel> {
        let kind = match &self.tun_type {
            None => None,
            Some(written) => Some(written.value.as_deref()?),
        };
        let port = match &self.tun_port {
            None => None,
            Some(written) => Some(written.value?),
        };
        let error = match Tunnel::from_parts(kind, port) {
            Ok(tunnel) => return Some(tunnel),
            Err(error) => error,
        };
        // Each error names a key that was given: `from_parts` only fails on what was written.
        let (key, span) = match error {
            TunnelError::ZeroPort | TunnelError::PortWithoutGue => {
                self.tun_port.as_ref().map(|w| (w.key, w.value_span.clone()))?
            }
            TunnelError::GueWithoutPort | TunnelError::UnknownType => {
                self.tun_type.as_ref().map(|w| (w.key, w.value_span.clone()))?
            }
        };
        let kind = kind.unwrap_or_default();
        let message = match error {
            TunnelError::ZeroPort => format!("`{key}` must be 1 to 65535"),
            TunnelError::GueWithoutPort => "`tun_type = \"gue\"` needs `tun_port`".to_owned(),
            TunnelError::PortWithoutGue => format!(
                "`{key}` is for `tun_type = \"gue\"`, not \"{}\"",
                if kind.is_empty() { "ipip" } else { kind }
            ),
            TunnelError::UnknownType => {
                format!(
                    "`{key}` must be \"ipip\", \"gue\" or \"gre\", found \"{}\"",
                    kind.escape_debug()
                )
            }
        };
        p.error(span, message);
        None
    }
}

/// Reads `lb_kind` or `lvs_method` (`key`) into the draft, unless the `other` spelling was
/// written too (`finish` says so).
fn read_method<T: Located>(
    p: &mut Parser<'_>,
    k: &Key<'_>,
    v: &Value<'_>,
    model: &mut T,
    key: &'static str,
    other: &str,
) {
    let value = if model.spans_mut().get(other).is_some() {
        None
    } else {
        p.string(k, v).and_then(|name| {
            let method = match name.to_ascii_uppercase().as_str() {
                "DR" => Method::Dr,
                "NAT" => Method::Nat,
                "TUN" => Method::Tun,
                _ => {
                    let message =
                        format!("`{key}` must be {METHODS}, found \"{}\"", name.escape_debug());
                    p.error(v.span(), message);
                    return None;
                }
            };
            Some((name.to_owned(), method))
        })
    };
    p.forwarding.methods.push(Written::new(key, k, v, value));
}

fn read_lb_kind<T: Located>(p: &mut Parser<'_>, k: &Key<'_>, v: &Value<'_>, model: &mut T) {
    read_method(p, k, v, model, "lb_kind", "lvs_method");
}

fn read_lvs_method<T: Located>(p: &mut Parser<'_>, k: &Key<'_>, v: &Value<'_>, model: &mut T) {
    read_method(p, k, v, model, "lvs_method", "lb_kind");
}

/// `tun_type`, read (lower-cased) only under a valid `TUN`.
fn read_tun_type<T>(p: &mut Parser<'_>, k: &Key<'_>, v: &Value<'_>, _: &mut T) {
    let value =
        if p.forwarding.tunnel() { p.string(k, v).map(str::to_ascii_lowercase) } else { None };
    p.forwarding.tun_type = Some(Written::new("tun_type", k, v, value));
}

/// `tun_port`, read only under a valid `TUN`.
fn read_tun_port<T>(p: &mut Parser<'_>, k: &Key<'_>, v: &Value<'_>, _: &mut T) {
    let value = if p.forwarding.tunnel() { p.port(k, v) } else { None };
    p.forwarding.tun_port = Some(Written::new("tun_port", k, v, value));
}

const LVS_METHOD_DOC: Doc = Doc {
    ty: r#"`"DR"` \| `"NAT"` \| `"TUN"`"#,
    default: "",
    meaning: "keepalived's spelling of `lb_kind`. Giving both spellings is an error.",
};

/// The forwarding keys of a `[[virtual_server]]`, in the reference's order.
pub(super) const SERVICE_LB_KIND: Setting<VirtualServer> = Setting {
    name: "lb_kind",
    doc: Doc {
        ty: r##"`"DR"` \| `"NAT"` \| `"TUN"`"##,
        default: r##"`"DR"`"##,
        meaning: r##"How packets reach the reals (case-insensitive). DR (direct routing) and TUN (IPIP, GUE or GRE tunnels, any address-family pair: [tunnels.md](tunnels.md)) run on the XDP fast path; NAT runs on kernel IPVS (see [Dataplanes](#dataplanes)). A real server or the sorry server can give its own, so one service may mix DR and tunnelled reals."##,
    },
    read: read_lb_kind,
    emit: |vs, _| unless(&vs.forwarding.lb_kind, &LbKind::Dr, |kind| string(kind.name())),
};

pub(super) const SERVICE_LVS_METHOD: Setting<VirtualServer> =
    Setting { name: "lvs_method", doc: LVS_METHOD_DOC, read: read_lvs_method, emit: |_, _| None };

pub(super) const SERVICE_TUN_TYPE: Setting<VirtualServer> = Setting {
    name: "tun_type",
    doc: Doc {
        ty: r##"`"ipip"` \| `"gue"` \| `"gre"`"##,
        default: r##"`"ipip"`"##,
        meaning: r##"The tunnel of `lb_kind = "TUN"` (keepalived's `lvs_method TUN type ...`). Only with TUN."##,
    },
    read: read_tun_type,
    emit: |vs, _| tun_type(Some(vs.forwarding.lb_kind)),
};

pub(super) const SERVICE_TUN_PORT: Setting<VirtualServer> = Setting {
    name: "tun_port",
    doc: Doc {
        ty: r##"integer 1–65535"##,
        default: r##"required for GUE"##,
        meaning: r##"The GUE destination port. Only with `tun_type = "gue"`."##,
    },
    read: read_tun_port,
    emit: |vs, _| tun_port(Some(vs.forwarding.lb_kind)),
};

pub(super) const TUN_SOURCE: Setting<VirtualServer> = Setting {
    name: "tun_source",
    doc: Doc {
        ty: r##"IP address string"##,
        default: r##"the director's preferred source toward each real (looked up per packet)"##,
        meaning: r##"Outer source address of tunnelled packets to the service's reals of this address family (reals of the other family keep the default). See [tunnels.md](tunnels.md)."##,
    },
    read: |p, k, v, vs| {
        if let Some(source) = p.ip_address(k, v) {
            vs.forwarding.tun_source = Some(source);
        }
    },
    emit: |vs, _| vs.forwarding.tun_source.as_ref().map(address),
};

pub(super) const OPS: Setting<VirtualServer> = Setting {
    name: "ops",
    doc: Doc {
        ty: r##"boolean"##,
        default: r##"`false`"##,
        meaning: r##"One-packet scheduling (keepalived's `ops`, `ipvsadm -o`): every UDP datagram is scheduled on its own. UDP services only; runs on IPVS."##,
    },
    read: |p, k, v, vs| {
        if let Some(ops) = p.boolean(k, v) {
            vs.forwarding.one_packet = ops;
        }
    },
    emit: |vs, _| unless(&vs.forwarding.one_packet, &false, boolean),
};

/// A real or sorry server's own `lb_kind` (`meaning` says whose); the tunnel keys follow.
pub(super) const fn server_lb_kind(meaning: &'static str) -> Setting<RealServer> {
    Setting {
        name: "lb_kind",
        doc: Doc { ty: "as for the virtual server", default: "the virtual server's", meaning },
        read: read_lb_kind,
        emit: |rs, _| rs.forwarding.lb_kind.map(|kind| string(kind.name())),
    }
}

pub(super) const SERVER_LVS_METHOD: Setting<RealServer> =
    Setting { name: "lvs_method", doc: LVS_METHOD_DOC, read: read_lvs_method, emit: |_, _| None };

pub(super) const SERVER_TUN_TYPE: Setting<RealServer> = Setting {
    name: "tun_type",
    doc: Doc {
        ty: "as for the virtual server",
        default: r##"`"ipip"`"##,
        meaning: "The tunnel of this server's own `lb_kind = \"TUN\"`.",
    },
    read: read_tun_type,
    emit: |rs, _| tun_type(rs.forwarding.lb_kind),
};

pub(super) const SERVER_TUN_PORT: Setting<RealServer> = Setting {
    name: "tun_port",
    doc: Doc {
        ty: "integer 1–65535",
        default: "required for GUE",
        meaning: "The GUE destination port of this server's own tunnel.",
    },
    read: read_tun_port,
    emit: |rs, _| tun_port(rs.forwarding.lb_kind),
};

/// A real server's IPVS connection threshold; `uthreshold`, if written, locates both
/// ([`RealServer::thresholds_at`]).
const fn threshold(
    name: &'static str,
    meaning: &'static str,
    emit: fn(&RealServer, &RealServer) -> Option<String>,
) -> Setting<RealServer> {
    Setting {
        name,
        doc: Doc { ty: "integer ≥ 0", default: "`0` (none)", meaning },
        read: |p, k, v, rs| {
            let value = p.integer(k, v, 0, i64::from(u32::MAX)).and_then(|n| u32::try_from(n).ok());
            match (value, k.get_ref().as_ref()) {
                (Some(n), "uthreshold") => rs.forwarding.uthreshold = n,
                (Some(n), _) => rs.forwarding.lthreshold = n,
                (None, _) => {}
            }
        },
        emit,
    }
}

pub(super) const UTHRESHOLD: Setting<RealServer> = threshold(
    "uthreshold",
    "IPVS connection thresholds: above `uthreshold` connections the real gets no new ones until \
     it is below `lthreshold`. It puts the service on IPVS.",
    |rs, _| unless(&rs.forwarding.uthreshold, &0, integer),
);

pub(super) const LTHRESHOLD: Setting<RealServer> = threshold(
    "lthreshold",
    "Below this many connections a real held at `uthreshold` gets new ones again; above \
     `uthreshold` is an error. It puts the service on IPVS.",
    |rs, _| unless(&rs.forwarding.lthreshold, &0, integer),
);

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{LbKind, Tunnel, test_support::FakeHost};

    const HEAD: &str = "[[virtual_server]]\nvip = '192.0.2.100'\nport = 80\ninterface = 'eth0'\n";

    fn parse(extra_vs: &str, extra_rs: &str) -> Result<crate::config::Config, String> {
        let text = format!(
            "{HEAD}{extra_vs}\n[[virtual_server.real_server]]\naddress = '192.0.2.11'\n{extra_rs}\n"
        );
        crate::config::parse_toml(&text, Path::new("t.toml"), &FakeHost).map_err(|e| e.to_string())
    }

    #[test]
    fn methods_and_tunnels() {
        // (service lines, real lines, service kind, real's own kind, one_packet)
        let cases: &[(&str, &str, LbKind, Option<LbKind>, bool)] = &[
            ("", "", LbKind::Dr, None, false),
            ("lb_kind = 'NAT'", "", LbKind::Nat, None, false),
            ("lvs_method = 'nat'", "lb_kind = 'DR'", LbKind::Nat, Some(LbKind::Dr), false),
            ("lb_kind = 'TUN'", "", LbKind::Tun(Tunnel::Ipip), None, false),
            ("lb_kind = 'TUN'\ntun_type = 'gre'", "", LbKind::Tun(Tunnel::Gre), None, false),
            (
                "lb_kind = 'TUN'\ntun_type = 'gue'\ntun_port = 5555",
                "",
                LbKind::Tun(Tunnel::Gue { port: 5555 }),
                None,
                false,
            ),
            ("", "lb_kind = 'TUN'", LbKind::Dr, Some(LbKind::Tun(Tunnel::Ipip)), false),
            // Each section's tunnel keys are its own: the service's do not reach its real.
            (
                "lb_kind = 'TUN'\ntun_type = 'gre'",
                "lvs_method = 'dr'",
                LbKind::Tun(Tunnel::Gre),
                Some(LbKind::Dr),
                false,
            ),
            ("protocol = 'udp'\nops = true", "", LbKind::Dr, None, true),
        ];
        for (vs, rs, kind, real_kind, ops) in cases {
            let cfg = parse(vs, rs).unwrap_or_else(|e| panic!("{vs:?} {rs:?}: {e}"));
            let v = &cfg.virtual_servers[0];
            assert_eq!(v.forwarding.lb_kind, *kind, "{vs:?}");
            assert_eq!(v.real_servers[0].forwarding.lb_kind, *real_kind, "{rs:?}");
            assert_eq!(v.forwarding.one_packet, *ops, "{vs:?}");
        }
    }

    #[test]
    fn tunnel_source_is_read() {
        let cfg = parse("lb_kind = 'TUN'\ntun_source = '2001:db8::1'", "").expect("valid");
        let want = "2001:db8::1".parse().ok();
        assert_eq!(cfg.virtual_servers[0].forwarding.tun_source, want);
        let cfg = parse("lb_kind = 'TUN'", "").expect("valid");
        assert_eq!(cfg.virtual_servers[0].forwarding.tun_source, None);
    }

    #[test]
    fn thresholds_are_read() {
        let cfg = parse("", "uthreshold = 100\nlthreshold = 10").expect("valid");
        let rs = &cfg.virtual_servers[0].real_servers[0];
        let f = rs.forwarding;
        assert_eq!((f.uthreshold, f.lthreshold), (100, 10));
        assert!(rs.key_locations.get("uthreshold").is_some());
        assert_eq!(Some(rs.thresholds_at()), rs.key_locations.get("uthreshold"));
    }

    #[test]
    fn bad_values_are_located() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "lb_kind = 'MASQ'",
                "",
                "5:11: `lb_kind` must be \"DR\", \"NAT\" or \"TUN\", found \"MASQ\"",
            ),
            (
                "lb_kind = 'DR'\nlvs_method = 'NAT'",
                "",
                "6:1: `lvs_method` and `lb_kind` are the same setting (keepalived spells it both \
                 ways); keep only one",
            ),
            ("tun_type = 'gre'", "", "5:12: `tun_type` needs `lb_kind = \"TUN\"`"),
            (
                "lb_kind = 'NAT'\ntun_type = 'gre'",
                "",
                "6:12: `tun_type` needs `lb_kind = \"TUN\"`, not \"NAT\"",
            ),
            (
                "lb_kind = 'TUN'\ntun_type = 'vxlan'",
                "",
                "6:12: `tun_type` must be \"ipip\", \"gue\" or \"gre\", found \"vxlan\"",
            ),
            (
                "lb_kind = 'TUN'\ntun_type = 'gue'",
                "",
                "6:12: `tun_type = \"gue\"` needs `tun_port`",
            ),
            (
                "lb_kind = 'TUN'\ntun_port = 9",
                "",
                "6:12: `tun_port` is for `tun_type = \"gue\"`, not \"ipip\"",
            ),
            // Tunnel options on a DR real, and a tunnel source that is no address.
            (
                "",
                "lb_kind = 'DR'\ntun_type = 'gre'",
                "9:12: `tun_type` needs `lb_kind = \"TUN\"`, not \"DR\"",
            ),
            (
                "lb_kind = 'TUN'\ntun_source = '203.0.113'",
                "",
                "6:14: `tun_source` must be an IP address, found \"203.0.113\"",
            ),
            (
                "",
                "lvs_method = 'TUN'\ntun_type = 'gue'\ntun_port = 0",
                "10:12: `tun_port` must be 1 to 65535",
            ),
            (
                "",
                "lb_kind = 'TUN'\nlvs_method = 'tun'",
                "9:1: `lvs_method` and `lb_kind` are the same setting",
            ),
            ("ops = 'yes'", "", "5:7: `ops` must be true or false"),
            ("", "uthreshold = -1", "8:14: `uthreshold` must be"),
        ];
        for (vs, rs, want) in cases {
            let err = parse(vs, rs).expect_err(vs);
            assert!(err.contains(&format!("t.toml:{want}")), "{vs:?} {rs:?}: got {err}");
        }
    }
}
