//! Forwarding settings in the native front end, with keepalived's keywords: `lb_kind` (or
//! `lvs_method`) `"DR"`, `"NAT"` or `"TUN"`, `tun_type` and `tun_port` for tunnels, `tun_source`
//! and `ops` (one-packet scheduling) on a virtual server, `uthreshold`/`lthreshold` on a real
//! server. Anything but DR needs the IPVS dataplane; which dataplane serves a service is decided
//! later (`dataplane::select`), since it depends on the host.
//!
//! Each key is a [`Setting`] of its section's description. `lb_kind` and the tunnel keys depend on
//! one another (the tunnel keys only with TUN, GUE only with a port): they are read together by
//! [`Parser::lb_kind`], from the section's `finish`.

use ::toml::de::DeTable;

use super::super::emit::{address, boolean, integer, string};
use super::super::model::{LbKind, RealServer, Tunnel, TunnelError, VirtualServer};
use super::schema::{Doc, Setting, unless};
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

/// A key of the `lb_kind` group, read by [`Parser::lb_kind`] in the section's `finish`.
const fn group_key<T>(
    name: &'static str,
    doc: Doc,
    emit: fn(value: &T, default: &T) -> Option<String>,
) -> Setting<T> {
    Setting { name, doc, read: |_, _, _, _| {}, emit }
}

const LVS_METHOD_DOC: Doc = Doc {
    ty: r#"`"DR"` \| `"NAT"` \| `"TUN"`"#,
    default: "",
    meaning: "keepalived's spelling of `lb_kind`. Giving both spellings is an error.",
};

/// The forwarding keys of a `[[virtual_server]]`, in the reference's order.
pub(super) const SERVICE_LB_KIND: Setting<VirtualServer> = group_key(
    "lb_kind",
    Doc {
        ty: r##"`"DR"` \| `"NAT"` \| `"TUN"`"##,
        default: r##"`"DR"`"##,
        meaning: r##"How packets reach the reals (case-insensitive). DR (direct routing) and TUN (IPIP, GUE or GRE tunnels, any address-family pair: [tunnels.md](tunnels.md)) run on the XDP fast path; NAT runs on kernel IPVS (see [Dataplanes](#dataplanes)). A real server or the sorry server can give its own, so one service may mix DR and tunnelled reals."##,
    },
    |vs, _| unless(&vs.forwarding.lb_kind, &LbKind::Dr, |kind| string(kind.name())),
);

pub(super) const SERVICE_LVS_METHOD: Setting<VirtualServer> =
    group_key("lvs_method", LVS_METHOD_DOC, |_, _| None);

pub(super) const SERVICE_TUN_TYPE: Setting<VirtualServer> = group_key(
    "tun_type",
    Doc {
        ty: r##"`"ipip"` \| `"gue"` \| `"gre"`"##,
        default: r##"`"ipip"`"##,
        meaning: r##"The tunnel of `lb_kind = "TUN"` (keepalived's `lvs_method TUN type ...`). Only with TUN."##,
    },
    |vs, _| tun_type(Some(vs.forwarding.lb_kind)),
);

pub(super) const SERVICE_TUN_PORT: Setting<VirtualServer> = group_key(
    "tun_port",
    Doc {
        ty: r##"integer 1–65535"##,
        default: r##"required for GUE"##,
        meaning: r##"The GUE destination port. Only with `tun_type = "gue"`."##,
    },
    |vs, _| tun_port(Some(vs.forwarding.lb_kind)),
);

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
    group_key(
        "lb_kind",
        Doc { ty: "as for the virtual server", default: "the virtual server's", meaning },
        |rs, _| rs.forwarding.lb_kind.map(|kind| string(kind.name())),
    )
}

pub(super) const SERVER_LVS_METHOD: Setting<RealServer> =
    group_key("lvs_method", LVS_METHOD_DOC, |_, _| None);

pub(super) const SERVER_TUN_TYPE: Setting<RealServer> = group_key(
    "tun_type",
    Doc {
        ty: "as for the virtual server",
        default: r##"`"ipip"`"##,
        meaning: "The tunnel of this server's own `lb_kind = \"TUN\"`.",
    },
    |rs, _| tun_type(rs.forwarding.lb_kind),
);

pub(super) const SERVER_TUN_PORT: Setting<RealServer> = group_key(
    "tun_port",
    Doc {
        ty: "integer 1–65535",
        default: "required for GUE",
        meaning: "The GUE destination port of this server's own tunnel.",
    },
    |rs, _| tun_port(rs.forwarding.lb_kind),
);

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

impl Parser<'_> {
    /// `lb_kind` or its other spelling `lvs_method`, with `tun_type`/`tun_port` for `TUN`:
    /// `Some(None)` when not given. Where it was written is in the section's spans.
    pub(super) fn lb_kind(&mut self, table: &DeTable<'_>) -> Option<Option<LbKind>> {
        let given = self.either(
            table,
            ["lb_kind", "lvs_method"],
            "are the same setting (keepalived spells it both ways); keep only one",
        )?;
        let tunnel_keys = ["tun_type", "tun_port"].map(|k| table.get_key_value(k));
        let Some((key, value)) = given else {
            for (key, value) in tunnel_keys.into_iter().flatten() {
                let message = format!("`{}` needs `lb_kind = \"TUN\"`", key.get_ref());
                self.error(value.span(), message);
            }
            return if tunnel_keys.iter().any(Option::is_some) { None } else { Some(None) };
        };
        let name = self.string(key, value)?;
        let kind = match name.to_ascii_uppercase().as_str() {
            "DR" => LbKind::Dr,
            "NAT" => LbKind::Nat,
            "TUN" => LbKind::Tun(self.tunnel(tunnel_keys)?),
            _ => {
                let message = format!(
                    "`{}` must be {METHODS}, found \"{}\"",
                    key.get_ref(),
                    name.escape_debug()
                );
                self.error(value.span(), message);
                return None;
            }
        };
        if !matches!(kind, LbKind::Tun(_))
            && let Some((tkey, tvalue)) = tunnel_keys.into_iter().flatten().next()
        {
            let message = format!("`{}` needs `lb_kind = \"TUN\"`, not \"{name}\"", tkey.get_ref());
            self.error(tvalue.span(), message);
            return None;
        }
        Some(Some(kind))
    }

    /// keepalived's `tun_type ipip|gue|gre` (default ipip) and `tun_port` (GUE's, required).
    fn tunnel(
        &mut self,
        [tun_type, tun_port]: [Option<(&Key<'_>, &Value<'_>)>; 2],
    ) -> Option<Tunnel> {
        let kind = match tun_type {
            None => None,
            Some((key, value)) => Some(self.string(key, value)?.to_ascii_lowercase()),
        };
        let port = match tun_port {
            None => None,
            Some((key, value)) => Some(self.port(key, value)?),
        };
        let error = match Tunnel::from_parts(kind.as_deref(), port) {
            Ok(tunnel) => return Some(tunnel),
            Err(error) => error,
        };
        // Each error names a key that was given: `from_parts` only fails on what was written.
        let (key, value) = match error {
            TunnelError::ZeroPort | TunnelError::PortWithoutGue => tun_port?,
            TunnelError::GueWithoutPort | TunnelError::UnknownType => tun_type?,
        };
        let kind = kind.unwrap_or_default();
        let message = match error {
            TunnelError::ZeroPort => format!("`{}` must be 1 to 65535", key.get_ref()),
            TunnelError::GueWithoutPort => "`tun_type = \"gue\"` needs `tun_port`".to_owned(),
            TunnelError::PortWithoutGue => format!(
                "`{}` is for `tun_type = \"gue\"`, not \"{}\"",
                key.get_ref(),
                if kind.is_empty() { "ipip" } else { kind.as_str() }
            ),
            TunnelError::UnknownType => format!(
                "`{}` must be \"ipip\", \"gue\" or \"gre\", found \"{}\"",
                key.get_ref(),
                kind.escape_debug()
            ),
        };
        self.error(value.span(), message);
        None
    }
}

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
            ("ops = 'yes'", "", "5:7: `ops` must be true or false"),
            ("", "uthreshold = -1", "8:14: `uthreshold` must be"),
        ];
        for (vs, rs, want) in cases {
            let err = parse(vs, rs).expect_err(vs);
            assert!(err.contains(&format!("t.toml:{want}")), "{vs:?} {rs:?}: got {err}");
        }
    }
}
