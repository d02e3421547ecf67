//! Semantic checks on the model: rules that span several values or need the host. Independent of
//! the front end, so a keepalived.conf file gets exactly the same checks as a TOML one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::error::{ConfigError, closest};
use super::host::HostView;
use super::model::{Config, Location, SCHEDULERS, VirtualServer, VirtualServerKey};

/// Every semantic error in `config`, in file order.
pub fn validate(config: &Config, host: &dyn HostView) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut error = |at: Location, message: String| {
        errors.push(ConfigError::new(&config.source, at, message));
    };

    let mut first_definition: HashMap<VirtualServerKey, Location> = HashMap::new();
    for vs in &config.virtual_servers {
        if let Some(message) = dataplane_unsupported(vs) {
            error(vs.key_locations.vip, message);
        }
        if let Some(first) = first_definition.get(&vs.key()) {
            error(
                vs.location,
                format!("duplicate virtual server {vs}: already defined at line {}", first.line),
            );
        } else {
            first_definition.insert(vs.key(), vs.location);
        }
        if !SCHEDULERS.contains(&vs.lb_algo.as_str()) {
            error(vs.key_locations.lb_algo, unknown_scheduler(&vs.lb_algo));
        }
        if !host.interface_exists(&vs.interface) {
            error(
                vs.key_locations.interface,
                format!("interface `{}` does not exist on this host", vs.interface),
            );
        }
        real_servers(vs, &mut error);
    }

    errors.sort_by_key(ConfigError::location);
    errors
}

/// What the XDP dataplane cannot do yet although the model can express it. The one place to
/// lift such limits.
fn dataplane_unsupported(vs: &VirtualServer) -> Option<String> {
    match vs.vip {
        IpAddr::V4(_) => None,
        IpAddr::V6(_) => Some("IPv6 virtual servers are not supported yet".to_owned()),
    }
}

fn unknown_scheduler(name: &str) -> String {
    let hint = match closest(name, SCHEDULERS) {
        Some(close) => format!("did you mean `{close}`? "),
        None => String::new(),
    };
    format!("unknown scheduler `{name}`: {hint}expected one of {}", SCHEDULERS.join(", "))
}

fn real_servers(vs: &VirtualServer, error: &mut impl FnMut(Location, String)) {
    let mut first_definition: HashMap<SocketAddr, Location> = HashMap::new();
    for rs in &vs.real_servers {
        if rs.address.is_ipv4() != vs.vip.is_ipv4() {
            error(
                rs.key_locations.address,
                format!(
                    "real server {} is {} but virtual server {vs} is {}: direct routing needs both in the same address family",
                    rs.address,
                    family(rs.address),
                    family(vs.vip)
                ),
            );
        }
        if rs.port != vs.port {
            error(
                rs.key_locations.port,
                format!(
                    "real server port {} differs from virtual server port {}: direct routing \
                     forwards packets unchanged, so the port cannot be changed",
                    rs.port, vs.port
                ),
            );
        }
        if let Some(first) = first_definition.get(&rs.socket_addr()) {
            error(
                rs.location,
                format!(
                    "duplicate real server {rs} in virtual server {vs}: already defined at line {}",
                    first.line
                ),
            );
        } else {
            first_definition.insert(rs.socket_addr(), rs.location);
        }
    }
}

fn family(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{Protocol, VirtualServerLocations};
    use super::super::parse_toml;
    use super::super::test_support::{FakeHost, assert_single_error, doc};
    use super::*;

    /// Base lines 1-4: a valid IPv4 virtual server on eth0.
    const VS: &[&str] =
        &["[[virtual_server]]", "vip = '192.0.2.100'", "port = 80", "interface = 'eth0'"];

    /// (name, lines after the base virtual server, expected message part, expected line:col)
    const SCENARIOS: &[(&str, &[&str], &str, &str)] = &[
        (
            "duplicate virtual server",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "protocol = 'TCP'",
                "interface = 'eth0'",
            ],
            "duplicate virtual server 192.0.2.100:80/tcp: already defined at line 1",
            "5:1",
        ),
        (
            "duplicate real server",
            &[
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "port = 80",
            ],
            "duplicate real server 192.0.2.11:80 in virtual server 192.0.2.100:80/tcp: already defined at line 5",
            "7:1",
        ),
        (
            "real server in another address family",
            &["[[virtual_server.real_server]]", "address = '2001:db8::11'"],
            "real server 2001:db8::11 is IPv6 but virtual server 192.0.2.100:80/tcp is IPv4",
            "6:11",
        ),
        (
            "real port differs in DR mode",
            &["[[virtual_server.real_server]]", "address = '192.0.2.11'", "port = 8080"],
            "real server port 8080 differs from virtual server port 80: direct routing forwards packets unchanged, so the port cannot be changed",
            "7:8",
        ),
        (
            "unknown scheduler with suggestion",
            &["lb_algo = 'wrrr'"],
            "unknown scheduler `wrrr`: did you mean `wrr`? expected one of rr, wrr,",
            "5:11",
        ),
        (
            "unknown scheduler via lvs_sched",
            &["lvs_sched = 'fastest'"],
            "unknown scheduler `fastest`: expected one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos",
            "5:13",
        ),
        (
            "interface missing on the host",
            &["[[virtual_server]]", "vip = '192.0.2.101'", "port = 80", "interface = 'eth9'"],
            "interface `eth9` does not exist on this host",
            "8:13",
        ),
        (
            "IPv6 virtual server",
            &["[[virtual_server]]", "vip = '2001:db8::100'", "port = 80", "interface = 'eth0'"],
            "IPv6 virtual servers are not supported yet",
            "6:7",
        ),
    ];

    #[test]
    fn scenarios() {
        for &(name, extra, expected, at) in SCENARIOS {
            let text = doc(&[VS, extra].concat());
            let result = parse_toml(&text, "test.toml".as_ref(), &FakeHost);
            assert_single_error(name, result, expected, at);
        }
    }

    /// Validation works on any front end's model: errors go where its key locations say.
    #[test]
    fn uses_the_models_locations_whatever_the_front_end() {
        let at = |line| Location::new(line, 3);
        let config = Config {
            source: "/etc/keepalived/keepalived.conf".into(),
            virtual_servers: vec![VirtualServer {
                vip: "2001:db8::100".parse().unwrap(),
                port: 80,
                protocol: Protocol::Tcp,
                interface: "eth9".to_owned(),
                lb_algo: "mh".to_owned(),
                real_servers: Vec::new(),
                location: at(1),
                key_locations: VirtualServerLocations {
                    interface: at(4),
                    ..VirtualServerLocations::all_at(at(1))
                },
            }],
        };
        let shown: Vec<String> =
            validate(&config, &FakeHost).iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "/etc/keepalived/keepalived.conf:1:3: IPv6 virtual servers are not supported yet",
                "/etc/keepalived/keepalived.conf:4:3: interface `eth9` does not exist on this host",
            ]
        );
    }

    #[test]
    fn same_address_on_another_port_or_protocol_is_not_a_duplicate() {
        let text = doc(&[
            VS,
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "protocol = 'udp'",
                "interface = 'eth0'",
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 443",
                "interface = 'eth0'",
            ],
        ]
        .concat());
        let config = parse_toml(&text, "test.toml".as_ref(), &FakeHost).unwrap();
        assert_eq!(config.virtual_servers.len(), 3);
    }
}
