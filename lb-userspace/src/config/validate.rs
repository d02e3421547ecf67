//! Semantic checks on the model: rules that span several values or need the host. Independent of
//! the front end, so a keepalived.conf file gets exactly the same checks as a TOML one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::error::{ConfigError, closest};
use super::host::HostView;
use super::model::{
    CheckLocations, Config, Location, RealServer, SCHEDULERS, VirtualServer, VirtualServerKey,
    host_prefix_len,
};

/// Every semantic error in `config`, in file order.
pub fn validate(config: &Config, host: &dyn HostView) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut error = |at: Location, message: String| {
        errors.push(ConfigError::new(&config.source, at, message));
    };

    let mut first_definition: HashMap<VirtualServerKey, Location> = HashMap::new();
    for vs in &config.virtual_servers {
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
        persistence_granularity(vs, &mut error);
        real_servers(vs, &mut error);
        if let Some(sorry) = &vs.sorry_server {
            backend(vs, sorry, "sorry server", &mut error);
        }
    }
    dataplane_limits(config, &mut error);

    errors.sort_by_key(ConfigError::location);
    errors
}

/// The dataplane's maps are sized by `max_services` and `max_reals`: what does not fit could not
/// be forwarded. Reported once per limit, at the limit when it was written, else at the first
/// virtual server that does not fit (where the operator sees the list outgrow the default).
fn dataplane_limits(config: &Config, error: &mut impl FnMut(Location, String)) {
    let settings = &config.dataplane;
    let default = |written: Option<Location>| if written.is_some() { "" } else { " (the default)" };
    let limit = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);

    let services = config.virtual_servers.len();
    if services > limit(settings.max_services) {
        let first_over = config.virtual_servers.get(limit(settings.max_services));
        let written = settings.key_locations.max_services;
        error(
            written.or(first_over.map(|vs| vs.location)).unwrap_or_default(),
            format!(
                "{services} virtual servers exceed `max_services` = {}{}: set `max_services` in \
                 [dataplane] to at least {services}",
                settings.max_services,
                default(written)
            ),
        );
    }

    let mut reals = 0usize;
    let mut first_over = None;
    for vs in &config.virtual_servers {
        reals += vs.real_servers.len() + usize::from(vs.sorry_server.is_some());
        if reals > limit(settings.max_reals) && first_over.is_none() {
            first_over = Some(vs.location);
        }
    }
    if let Some(first_over) = first_over {
        let written = settings.key_locations.max_reals;
        error(
            written.unwrap_or(first_over),
            format!(
                "{reals} real servers (sorry servers included) exceed `max_reals` = {}{}: set \
                 `max_reals` in [dataplane] to at least {reals}",
                settings.max_reals,
                default(written)
            ),
        );
    }
}

/// A persistence prefix longer than the VIP's addresses (`/64` on IPv4) cannot group clients.
fn persistence_granularity(vs: &VirtualServer, error: &mut impl FnMut(Location, String)) {
    let bits = host_prefix_len(vs.vip);
    if vs.persistence_prefix > bits {
        let netmask = if vs.vip.is_ipv4() { " or a netmask like \"255.255.255.0\"" } else { "" };
        error(
            vs.key_locations.persistence_granularity.unwrap_or(vs.location),
            format!(
                "`persistence_granularity` /{} does not fit {} virtual server {vs}: give a prefix \
                 length 0 to {bits}{netmask}",
                vs.persistence_prefix,
                family(vs.vip)
            ),
        );
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
        backend(vs, rs, "real server", error);
        checks(rs, error);
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

/// The direct-routing rules any backend of `vs` (`role`: real or sorry server) must follow.
fn backend(
    vs: &VirtualServer,
    rs: &RealServer,
    role: &str,
    error: &mut impl FnMut(Location, String),
) {
    if rs.address.is_ipv4() != vs.vip.is_ipv4() {
        error(
            rs.key_locations.address,
            format!(
                "{role} {} is {} but virtual server {vs} is {}: direct routing needs both in the same address family",
                rs.address,
                family(rs.address),
                family(vs.vip)
            ),
        );
    }
    if rs.port != vs.port {
        let why = if vs.port == 0 {
            format!(
                "an all-ports virtual server forwards every port unchanged, so give its {role}s \
                 port 0 or no port"
            )
        } else {
            "direct routing forwards packets unchanged, so the port cannot be changed".to_owned()
        };
        error(
            rs.key_locations.port,
            format!("{role} port {} differs from virtual server port {}: {why}", rs.port, vs.port),
        );
    }
}

/// What a real's checkers connect to and from must make sense for the real.
fn checks(rs: &RealServer, error: &mut impl FnMut(Location, String)) {
    for (i, check) in rs.health.checks.iter().enumerate() {
        // Another front end may not locate each value: then they are at the checker.
        let at = rs.key_locations.checks.get(i).copied();
        let at = at.unwrap_or_else(|| CheckLocations::all_at(check.location));
        let kind = check.kind.native_key();
        if let Some(ip) = check.connect_ip
            && ip.is_ipv4() != rs.address.is_ipv4()
        {
            error(
                at.connect_ip,
                format!(
                    "`connect_ip` {ip} of the {kind} of real server {rs} is {}, the real server \
                     {}: give an address of the real in its own family",
                    family(ip),
                    family(rs.address)
                ),
            );
        }
        let target = check.target(rs.address);
        if let Some(source) = check.bindto
            && source.is_ipv4() != target.is_ipv4()
        {
            error(
                at.bindto,
                format!(
                    "`bindto` {source} is {} but the {kind} of real server {rs} connects to \
                     {target} ({}): the source address must be in the same family",
                    family(source),
                    family(target)
                ),
            );
        }
        if check.kind.uses_port() && rs.port == 0 && check.connect_port.is_none() {
            error(
                check.location,
                format!(
                    "the {kind} of real server {rs} has no port to connect to: the reals of an \
                     all-ports virtual server have port 0, so give `connect_port`"
                ),
            );
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
    use super::super::health::{
        CheckKind, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DELAY_BEFORE_RETRY, DEFAULT_RETRY, HealthCheck,
        RealHealth, ServiceHealth,
    };
    use super::super::model::{
        DataplaneSettings, Protocol, RealServerLocations, VirtualServerLocations,
    };
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
            "IPv6 virtual server with an IPv4 real server",
            &[
                "[[virtual_server]]",
                "vip = '2001:db8::100'",
                "port = 80",
                "interface = 'eth0'",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
            ],
            "real server 192.0.2.11 is IPv4 but virtual server [2001:db8::100]:80/tcp is IPv6: \
             direct routing needs both in the same address family",
            "10:11",
        ),
        (
            "real port 0 on a single-port virtual server",
            &["[[virtual_server.real_server]]", "address = '192.0.2.11'", "port = 0"],
            "real server port 0 differs from virtual server port 80: direct routing forwards \
             packets unchanged, so the port cannot be changed",
            "7:8",
        ),
        (
            "real port on an all-ports virtual server",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 0",
                "interface = 'eth0'",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "port = 80",
            ],
            "real server port 80 differs from virtual server port 0: an all-ports virtual server \
             forwards every port unchanged, so give its real servers port 0 or no port",
            "11:8",
        ),
        (
            "duplicate all-ports virtual server",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 0",
                "interface = 'eth0'",
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 0",
                "interface = 'eth1'",
            ],
            "duplicate virtual server 192.0.2.100:0/tcp: already defined at line 5",
            "9:1",
        ),
        (
            "sorry server in another address family",
            &["sorry_server = { address = '2001:db8::200' }"],
            "sorry server 2001:db8::200 is IPv6 but virtual server 192.0.2.100:80/tcp is IPv4: \
             direct routing needs both in the same address family",
            "5:28",
        ),
        (
            "sorry port differs in DR mode",
            &["[virtual_server.sorry_server]", "address = '192.0.2.200'", "port = 8080"],
            "sorry server port 8080 differs from virtual server port 80: direct routing forwards \
             packets unchanged, so the port cannot be changed",
            "7:8",
        ),
        (
            "sorry port on an all-ports virtual server",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 0",
                "interface = 'eth0'",
                "sorry_server = { address = '192.0.2.200', port = 443 }",
            ],
            "sorry server port 443 differs from virtual server port 0: an all-ports virtual \
             server forwards every port unchanged, so give its sorry servers port 0 or no port",
            "9:50",
        ),
        (
            "IPv4 prefix length too long",
            &["persistence_timeout = 300", "persistence_granularity = 33"],
            "`persistence_granularity` /33 does not fit IPv4 virtual server 192.0.2.100:80/tcp: \
             give a prefix length 0 to 32 or a netmask like \"255.255.255.0\"",
            "6:27",
        ),
        (
            "more virtual servers than max_services",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.101'",
                "port = 80",
                "interface = 'eth0'",
                "[dataplane]",
                "max_services = 1",
            ],
            "2 virtual servers exceed `max_services` = 1: set `max_services` in [dataplane] to at \
             least 2",
            "10:16",
        ),
        (
            "more real servers than max_reals, counting the sorry server",
            &[
                "sorry_server = { address = '192.0.2.200' }",
                "real_server = [{ address = '192.0.2.11' }, { address = '192.0.2.12' }]",
                "[dataplane]",
                "max_reals = 2",
            ],
            "3 real servers (sorry servers included) exceed `max_reals` = 2: set `max_reals` in \
             [dataplane] to at least 3",
            "8:13",
        ),
        (
            "checking another address family than the real's",
            &[
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "tcp_check = { connect_ip = '2001:db8::11' }",
            ],
            "`connect_ip` 2001:db8::11 of the tcp_check of real server 192.0.2.11:80 is IPv6, the \
             real server IPv4: give an address of the real in its own family",
            "7:28",
        ),
        (
            "checking from another address family",
            &[
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "http_get = { url = [{ path = '/' }], bindto = '2001:db8::1' }",
            ],
            "`bindto` 2001:db8::1 is IPv6 but the http_get of real server 192.0.2.11:80 connects \
             to 192.0.2.11 (IPv4): the source address must be in the same family",
            "7:47",
        ),
        (
            "checking an IPv6 real from IPv4",
            &[
                "[[virtual_server]]",
                "vip = '2001:db8::100'",
                "port = 53",
                "protocol = 'udp'",
                "interface = 'eth0'",
                "[[virtual_server.real_server]]",
                "address = '2001:db8::11'",
                "[[virtual_server.real_server.udp_check]]",
                "bindto = '192.0.2.1'",
            ],
            "`bindto` 192.0.2.1 is IPv4 but the udp_check of real server [2001:db8::11]:53 \
             connects to 2001:db8::11 (IPv6): the source address must be in the same family",
            "13:10",
        ),
        (
            "checking a port-0 real without connect_port",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 0",
                "interface = 'eth0'",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "ping_check = {}",
                "[virtual_server.real_server.tcp_check]",
                "connect_timeout = 2",
            ],
            "the tcp_check of real server 192.0.2.11:0 has no port to connect to: the reals of an \
             all-ports virtual server have port 0, so give `connect_port`",
            "12:1",
        ),
        (
            "DNS check of a port-0 real without connect_port",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 0",
                "protocol = 'udp'",
                "interface = 'eth0'",
                "real_server = [{ address = '192.0.2.11', dns_check = {} }]",
            ],
            "the dns_check of real server 192.0.2.11:0 has no port to connect to",
            "10:54",
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

    /// A virtual server as another front end might build it, at line `line`, column 3.
    fn hand_built(vip: &str, port: u16, line: u32) -> VirtualServer {
        let at = Location::new(line, 3);
        VirtualServer {
            vip: vip.parse().unwrap(),
            port,
            protocol: Protocol::Tcp,
            interface: "eth0".to_owned(),
            lb_algo: "mh".to_owned(),
            table_size: crate::maglev::DEFAULT_SIZE,
            persistence_timeout: None,
            persistence_prefix: host_prefix_len(vip.parse().unwrap()),
            real_servers: Vec::new(),
            sorry_server: None,
            health: ServiceHealth::default(),
            location: at,
            key_locations: VirtualServerLocations::all_at(at),
        }
    }

    fn hand_built_real(address: &str, port: u16, line: u32) -> RealServer {
        let at = Location::new(line, 3);
        RealServer {
            address: address.parse().unwrap(),
            port,
            weight: 1,
            health: RealHealth::default(),
            location: at,
            key_locations: RealServerLocations::all_at(at),
        }
    }

    fn shown(config: &Config) -> Vec<String> {
        validate(config, &FakeHost).iter().map(ToString::to_string).collect()
    }

    /// Validation works on any front end's model: errors go where its key locations say.
    #[test]
    fn uses_the_models_locations_whatever_the_front_end() {
        let mut vs = hand_built("2001:db8::100", 80, 1);
        vs.interface = "eth9".to_owned();
        vs.key_locations.interface = Location::new(4, 3);
        vs.persistence_prefix = 129;
        vs.real_servers.push(hand_built_real("2001:db8::11", 80, 6));
        // A checker without locations of its values: its errors are located at the checker.
        let check = HealthCheck {
            kind: CheckKind::Tcp,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            connect_ip: Some("192.0.2.11".parse().unwrap()),
            connect_port: None,
            bindto: None,
            retry: DEFAULT_RETRY,
            delay_before_retry: DEFAULT_DELAY_BEFORE_RETRY,
            warmup: None,
            rise: 1,
            location: Location::new(7, 5),
        };
        vs.real_servers[0].health.checks.push(check);
        vs.sorry_server = Some(hand_built_real("192.0.2.200", 80, 9));
        let config = Config {
            source: "/etc/keepalived/keepalived.conf".into(),
            dataplane: DataplaneSettings::default(),
            virtual_servers: vec![vs],
        };
        assert_eq!(
            shown(&config),
            [
                "/etc/keepalived/keepalived.conf:1:3: `persistence_granularity` /129 does not fit \
                 IPv6 virtual server [2001:db8::100]:80/tcp: give a prefix length 0 to 128",
                "/etc/keepalived/keepalived.conf:4:3: interface `eth9` does not exist on this host",
                "/etc/keepalived/keepalived.conf:7:5: `connect_ip` 192.0.2.11 of the tcp_check of \
                 real server [2001:db8::11]:80 is IPv4, the real server IPv6: give an address of \
                 the real in its own family",
                "/etc/keepalived/keepalived.conf:9:3: sorry server 192.0.2.200 is IPv4 but virtual \
                 server [2001:db8::100]:80/tcp is IPv6: direct routing needs both in the same \
                 address family",
            ]
        );
    }

    /// Limits that were not written are reported at the first virtual server over them, once.
    #[test]
    fn default_limits_are_reported_at_the_first_virtual_server_over_them() {
        let services = |n: u16| -> Vec<VirtualServer> {
            (1..=n).map(|port| hand_built("192.0.2.100", port, u32::from(port))).collect()
        };
        let mut config = Config {
            source: "lb.toml".into(),
            dataplane: DataplaneSettings::default(),
            virtual_servers: services(1024),
        };
        assert_eq!(shown(&config), Vec::<String>::new(), "exactly at the limit");

        config.virtual_servers = services(1026);
        assert_eq!(
            shown(&config),
            ["lb.toml:1025:3: 1026 virtual servers exceed `max_services` = 1024 (the default): \
              set `max_services` in [dataplane] to at least 1026"]
        );

        // 4096 reals over two services: exactly at the limit; one sorry server more is over.
        config.virtual_servers = services(3);
        let reals = |vs_port: u16| -> Vec<RealServer> {
            (0..2048u32)
                .map(|i| hand_built_real(&format!("10.0.{}.{}", i / 256, i % 256), vs_port, 9))
                .collect()
        };
        config.virtual_servers[0].real_servers = reals(1);
        config.virtual_servers[2].real_servers = reals(3);
        assert_eq!(shown(&config), Vec::<String>::new(), "exactly at the limit");
        config.virtual_servers[2].sorry_server = Some(hand_built_real("192.0.2.200", 3, 9));
        config.virtual_servers.push(hand_built("192.0.2.100", 4, 4));
        config.virtual_servers[3].real_servers = reals(4);
        assert_eq!(
            shown(&config),
            ["lb.toml:3:3: 6145 real servers (sorry servers included) exceed `max_reals` = 4096 \
              (the default): set `max_reals` in [dataplane] to at least 6145"]
        );
    }

    #[test]
    fn checks_that_fit_their_real() {
        let text = doc(&[
            VS,
            &[
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "tcp_check = { connect_ip = '192.0.2.111', bindto = '192.0.2.1' }",
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 0",
                "interface = 'eth0'",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.12'",
                "ping_check = {}",
                "misc_check = { misc_path = '/bin/true' }",
                "tcp_check = { connect_port = 22 }",
                "[[virtual_server]]",
                "vip = '2001:db8::100'",
                "port = 443",
                "interface = 'eth0'",
                "[[virtual_server.real_server]]",
                "address = '2001:db8::11'",
                "ssl_get = { url = [{ path = '/' }], bindto = '2001:db8::1' }",
            ],
        ]
        .concat());
        let config = parse_toml(&text, "test.toml".as_ref(), &FakeHost).unwrap();
        let checks: Vec<usize> = config
            .virtual_servers
            .iter()
            .map(|vs| vs.real_servers[0].health.checks.len())
            .collect();
        assert_eq!(checks, [1, 3, 1]);
    }

    /// What the XDP dataplane once rejected and now forwards.
    #[test]
    fn all_ports_and_ipv6_are_valid() {
        let text = doc(&[
            VS,
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 0",
                "interface = 'eth0'",
                "sorry_server = { address = '192.0.2.200' }",
                "real_server = [{ address = '192.0.2.11' }, { address = '192.0.2.12', port = 0 }]",
                "[[virtual_server]]",
                "vip = '2001:db8::100'",
                "port = 443",
                "interface = 'eth0'",
                "persistence_timeout = 60",
                "persistence_granularity = 64",
                "sorry_server = { address = '2001:db8::200', port = 443 }",
                "real_server = [{ address = '2001:db8::11' }]",
                "[dataplane]",
                "max_services = 3",
                "max_reals = 5",
            ],
        ]
        .concat());
        let config = parse_toml(&text, "test.toml".as_ref(), &FakeHost).unwrap();
        assert_eq!(config.virtual_servers.len(), 3);
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
