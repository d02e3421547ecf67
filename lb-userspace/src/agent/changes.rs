//! What a reload changed, counted for its log line.

use std::{collections::BTreeMap, fmt};

use crate::config::{Config, RealServer, VirtualServer};

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
    pub fn between(old: &Config, new: &Config) -> Changes {
        let by_key = |c: &Config| {
            c.virtual_servers.iter().map(|v| (v.key(), v.clone())).collect::<BTreeMap<_, _>>()
        };
        let (old, new) = (by_key(old), by_key(new));
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
            let reals = |v: &VirtualServer| {
                v.real_servers
                    .iter()
                    .map(|r| (r.socket_addr(), r.clone()))
                    .collect::<BTreeMap<_, _>>()
            };
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

/// Equal but for where it was written.
fn same_real(a: &RealServer, b: &RealServer) -> bool {
    let mut b = b.clone();
    b.location = a.location;
    b.key_locations = a.key_locations.clone();
    b.check_locations = a.check_locations.clone();
    *a == b
}

/// The service's own settings equal (reals compared one by one, locations ignored).
fn same_service(a: &VirtualServer, b: &VirtualServer) -> bool {
    let mut b = b.clone();
    b.location = a.location;
    b.key_locations = a.key_locations.clone();
    b.real_servers = a.real_servers.clone();
    match (&a.sorry_server, &mut b.sorry_server) {
        (Some(x), Some(y)) if same_real(x, y) => *y = x.clone(),
        _ => {}
    }
    *a == b
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
