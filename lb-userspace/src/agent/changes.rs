//! What a reload changed, counted for its log line.

use std::{collections::HashMap, fmt, net::SocketAddr};

use crate::config::{Config, RealServer, VirtualServer, VirtualServerKey};

/// Services and reals added, removed and changed by a reload (moved lines are no change).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    pub services_added: usize,
    pub services_removed: usize,
    pub services_changed: usize,
    pub reals_added: usize,
    pub reals_removed: usize,
    pub reals_changed: usize,
}

impl Changes {
    /// One pass over both configs, comparing in place: a reload of 1,000 services must not
    /// copy them to learn that one real changed.
    pub fn between(old: &Config, new: &Config) -> Changes {
        let (old, new) = (services(old), services(new));
        let mut c = Changes::default();
        for (key, n) in &new {
            let Some(o) = old.get(key) else {
                c.services_added += 1;
                c.reals_added += n.real_servers.len();
                continue;
            };
            if !same_service(o, n) {
                c.services_changed += 1;
            }
            // The usual case: the same reals in the same order, unchanged.
            let (or, nr) = (&o.real_servers, &n.real_servers);
            if or.len() == nr.len()
                && or
                    .iter()
                    .zip(nr)
                    .all(|(a, b)| a.socket_addr() == b.socket_addr() && same_real(a, b))
            {
                continue;
            }
            let (or, nr) = (reals(o), reals(n));
            for (addr, r) in &nr {
                match or.get(addr) {
                    None => c.reals_added += 1,
                    Some(before) if !same_real(before, r) => c.reals_changed += 1,
                    Some(_) => {}
                }
            }
            c.reals_removed += or.keys().filter(|a| !nr.contains_key(a)).count();
        }
        for (key, o) in &old {
            if !new.contains_key(key) {
                c.services_removed += 1;
                c.reals_removed += o.real_servers.len();
            }
        }
        c
    }

    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing");
        }
        write!(
            f,
            "services +{} -{} ~{}, reals +{} -{} ~{}",
            self.services_added,
            self.services_removed,
            self.services_changed,
            self.reals_added,
            self.reals_removed,
            self.reals_changed
        )
    }
}

fn services(c: &Config) -> HashMap<VirtualServerKey, &VirtualServer> {
    c.virtual_servers.iter().map(|v| (v.key(), v)).collect()
}

fn reals(v: &VirtualServer) -> HashMap<SocketAddr, &RealServer> {
    v.real_servers.iter().map(|r| (r.socket_addr(), r)).collect()
}

/// Equal but for where it was written. Every field is named: a new one must be compared.
fn same_real(a: &RealServer, b: &RealServer) -> bool {
    let RealServer {
        address,
        port,
        weight,
        health,
        forwarding,
        location: _,
        key_locations: _,
        check_locations: _,
    } = a;
    (address, port, weight, health, forwarding)
        == (&b.address, &b.port, &b.weight, &b.health, &b.forwarding)
}

/// The service's own settings equal (reals compared one by one, locations ignored). Every field
/// is named: a new one must be compared.
fn same_service(a: &VirtualServer, b: &VirtualServer) -> bool {
    let VirtualServer {
        vip,
        port,
        protocol,
        fwmark,
        interface,
        lb_algo,
        table_size,
        persistence_timeout,
        persistence_prefix,
        real_servers: _,
        sorry_server,
        health,
        forwarding,
        location: _,
        key_locations: _,
    } = a;
    let sorry = match (sorry_server, &b.sorry_server) {
        (Some(x), Some(y)) => same_real(x, y),
        (x, y) => x.is_none() && y.is_none(),
    };
    sorry
        && (vip, port, protocol, fwmark, interface, lb_algo, table_size)
            == (&b.vip, &b.port, &b.protocol, &b.fwmark, &b.interface, &b.lb_algo, &b.table_size)
        && (persistence_timeout, persistence_prefix, health, forwarding)
            == (&b.persistence_timeout, &b.persistence_prefix, &b.health, &b.forwarding)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{parse_toml, test_support::AnyHost};

    /// (VIP, [(real, weight)]) per service.
    type Services<'a> = Vec<(&'a str, &'a [(&'a str, u32)])>;

    fn cfg(services: &[(&str, &[(&str, u32)])]) -> Config {
        let mut text = String::new();
        for (vip, reals) in services {
            text.push_str(&format!(
                "\n\n[[virtual_server]]\nvip = \"{vip}\"\nport = 80\nprotocol = \"tcp\"\ninterface = \"eth0\"\n"
            ));
            for (addr, w) in *reals {
                text.push_str(&format!(
                    "[[virtual_server.real_server]]\naddress = \"{addr}\"\nweight = {w}\n"
                ));
            }
        }
        parse_toml(&text, Path::new("t.toml"), &AnyHost).expect("valid")
    }

    #[test]
    fn counts_by_scenario() {
        let a = "192.0.2.100";
        let b = "192.0.2.101";
        let base: &[(&str, &[(&str, u32)])] = &[(a, &[("192.0.2.11", 1), ("192.0.2.12", 1)])];
        // (new config, expected (s+, s-, s~, r+, r-, r~))
        let cases: Vec<(Services, [usize; 6])> = vec![
            (base.to_vec(), [0, 0, 0, 0, 0, 0]),
            (vec![(a, &[("192.0.2.11", 1), ("192.0.2.12", 5)])], [0, 0, 0, 0, 0, 1]),
            (vec![(a, &[("192.0.2.11", 7), ("192.0.2.12", 1)])], [0, 0, 0, 0, 0, 1]),
            // Reordered reals are no change (compared by address, not by place).
            (vec![(a, &[("192.0.2.12", 1), ("192.0.2.11", 1)])], [0, 0, 0, 0, 0, 0]),
            (vec![(a, &[("192.0.2.12", 1), ("192.0.2.13", 1)])], [0, 0, 0, 1, 1, 0]),
            (vec![(a, &[("192.0.2.11", 1)])], [0, 0, 0, 0, 1, 0]),
            (
                vec![(a, &[("192.0.2.11", 1), ("192.0.2.12", 1), ("192.0.2.13", 1)])],
                [0, 0, 0, 1, 0, 0],
            ),
            (
                vec![(a, &[("192.0.2.11", 1), ("192.0.2.12", 1)]), (b, &[("192.0.2.21", 1)])],
                [1, 0, 0, 1, 0, 0],
            ),
            (vec![(b, &[("192.0.2.21", 1)])], [1, 1, 0, 1, 2, 0]),
        ];
        let old = cfg(base);
        for (new, want) in cases {
            let c = Changes::between(&old, &cfg(&new));
            let got = [
                c.services_added,
                c.services_removed,
                c.services_changed,
                c.reals_added,
                c.reals_removed,
                c.reals_changed,
            ];
            assert_eq!(got, want, "{new:?}");
        }
    }

    #[test]
    fn moved_lines_are_no_change() {
        let a: &[(&str, &[(&str, u32)])] = &[("192.0.2.100", &[("192.0.2.11", 1)])];
        let old = cfg(a);
        let mut new = cfg(a);
        new.virtual_servers[0].location.line += 5;
        new.virtual_servers[0].real_servers[0].location.line += 5;
        assert!(Changes::between(&old, &new).is_empty());
    }

    /// A checker's setting moved within its table (a comment above it) is no change either.
    #[test]
    fn moved_checker_settings_are_no_change() {
        let text = |gap: &str| {
            format!(
                "[[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\ninterface = \"eth0\"\n\
                 [[virtual_server.real_server]]\naddress = \"192.0.2.11\"\n\
                 [virtual_server.real_server.tcp_check]\n{gap}retry = 2\n"
            )
        };
        let parse = |text: String| parse_toml(&text, Path::new("t.toml"), &AnyHost).expect("valid");
        let changes = Changes::between(&parse(text("")), &parse(text("# moved\n")));
        assert!(changes.is_empty(), "{changes}");
    }
}
