//! Forwarding settings in the native front end, with keepalived's keywords: `lb_kind` (or
//! `lvs_method`) `"DR"`, `"NAT"` or `"TUN"`, `tun_type` and `tun_port` for tunnels, `ops`
//! (one-packet scheduling) on a virtual server, `uthreshold`/`lthreshold` on a real server.
//! Anything but DR needs the IPVS dataplane; which dataplane serves a service is decided later
//! (`dataplane::select`), since it depends on the host.

use ::toml::de::DeTable;

use super::super::model::{LbKind, RealForwarding, ServiceForwarding, Tunnel, TunnelError};
use super::{Backend, Key, Parser, Value};

const METHODS: &str = "\"DR\", \"NAT\" or \"TUN\"";

impl Parser<'_> {
    /// A virtual server's `lb_kind`, tunnel settings and `ops`.
    pub(super) fn service_forwarding(&mut self, table: &DeTable<'_>) -> Option<ServiceForwarding> {
        let (lb_kind, lb_kind_at) = self.lb_kind(table)?;
        let (one_packet, one_packet_at) = match table.get_key_value("ops") {
            None => (false, None),
            Some((key, value)) => (self.boolean(key, value)?, Some(self.at(value.span()))),
        };
        let tun_source = match table.get_key_value("tun_source") {
            None => None,
            Some((key, value)) => Some(self.ip_address(key, value)?),
        };
        Some(ServiceForwarding {
            lb_kind: lb_kind.unwrap_or_default(),
            one_packet,
            tun_source,
            lb_kind_at,
            one_packet_at,
        })
    }

    /// A real (or sorry) server's own `lb_kind` and, for reals, IPVS connection thresholds.
    pub(super) fn real_forwarding(
        &mut self,
        table: &DeTable<'_>,
        backend: Backend,
    ) -> Option<RealForwarding> {
        let kind = self.lb_kind(table);
        let mut thresholds_at = None;
        let mut threshold = |parser: &mut Self, name: &str| match table.get_key_value(name) {
            Some((key, value)) if matches!(backend, Backend::Real { .. }) => {
                thresholds_at.get_or_insert(parser.at(value.span()));
                parser
                    .integer(key, value, 0, i64::from(u32::MAX))
                    .and_then(|n| u32::try_from(n).ok())
            }
            _ => Some(0),
        };
        let uthreshold = threshold(self, "uthreshold");
        let lthreshold = threshold(self, "lthreshold");
        let (lb_kind, lb_kind_at) = kind?;
        Some(RealForwarding {
            lb_kind,
            uthreshold: uthreshold?,
            lthreshold: lthreshold?,
            lb_kind_at,
            thresholds_at,
        })
    }

    /// `lb_kind` or its other spelling `lvs_method`, with `tun_type`/`tun_port` for `TUN`:
    /// `Some((None, None))` when not given.
    #[allow(clippy::type_complexity)]
    fn lb_kind(
        &mut self,
        table: &DeTable<'_>,
    ) -> Option<(Option<LbKind>, Option<super::super::model::Location>)> {
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
            return if tunnel_keys.iter().any(Option::is_some) { None } else { Some((None, None)) };
        };
        let at = self.at(value.span());
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
        Some((Some(kind), Some(at)))
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
        let f = cfg.virtual_servers[0].real_servers[0].forwarding;
        assert_eq!((f.uthreshold, f.lthreshold), (100, 10));
        assert!(f.thresholds_at.is_some());
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
