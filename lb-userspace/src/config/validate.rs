//! Semantic checks on the model: rules that span several values or need the host. Independent of
//! the front end, so a keepalived.conf file gets exactly the same checks as a TOML one.

// Keys come from the file being checked; a per-process seed is enough, and SipHash was a tenth
// of checking a 1,000-service file.
use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::error::{Diagnostic, closest};
use super::host::HostView;
use super::model::{
    Config, LbKind, Location, Protocol, RealServer, SCHEDULERS, Spans, VirtualServer,
    VirtualServerKey, host_prefix_len, not_a_host_address,
};
use super::vrrp::{MAX_ADVERT_INT_V2, MAX_ADVERT_INT_V3, VrrpInstance};

/// Every semantic error in `config`, in file order.
pub fn validate(config: &Config, host: &dyn HostView) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    let mut error = |at: Location, message: String| {
        errors.push(Diagnostic::error(&config.source, at, message));
    };

    let addresses = Addresses {
        held: held_addresses(config),
        own: own_addresses(config, host, &mut error),
        unrouted: unrouted_tunnel_reals(config, host),
    };
    // A group's address range is one value: its bad addresses are reported once.
    let mut bad_vips_at = HashSet::new();
    let mut first_definition: HashMap<VirtualServerKey, Location> = HashMap::new();
    // Asked once per name: services share a few interfaces, and each question is syscalls.
    let mut interfaces: HashMap<&str, bool> = HashMap::new();
    for vs in &config.virtual_servers {
        if vs.fwmark.is_none()
            && let Some(message) = address_class_error(Role::Vip, vs.vip)
            && bad_vips_at.insert(vs.vip_at())
        {
            error(vs.vip_at(), message);
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
            error(vs.lb_algo_at(), unknown_scheduler(&vs.lb_algo));
        }
        // A firewall-mark service may name no interface (IPVS needs none).
        let no_interface = vs.fwmark.is_some() && vs.interface.is_empty();
        if !no_interface
            && !*interfaces
                .entry(vs.interface.as_str())
                .or_insert_with(|| host.interface_exists(&vs.interface))
        {
            error(
                vs.interface_at(),
                format!("interface `{}` does not exist on this host", vs.interface),
            );
        }
        persistence_granularity(vs, &mut error);
        if vs.forwarding.one_packet && vs.protocol != Protocol::Udp {
            error(
                vs.one_packet_at(),
                format!(
                    "`ops` (one-packet scheduling) is for UDP services; {vs} is {}",
                    vs.protocol
                ),
            );
        }
        real_servers(vs, &addresses, &mut error);
        if let Some(sorry) = &vs.sorry_server {
            backend(vs, sorry, Role::Sorry, &addresses, &mut error);
        }
    }
    dataplane_limits(config, &mut error);
    vrrp(config, host, &mut error);
    if let Some(bgp) = &config.bgp {
        super::bgp::validate(bgp, host, &mut error);
    }

    errors.sort_by_key(Diagnostic::location);
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
        let written = settings.key_locations.get("max_services");
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
        let written = settings.key_locations.get("max_reals");
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
            vs.persistence_granularity_at().unwrap_or(vs.location),
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

fn real_servers(
    vs: &VirtualServer,
    addresses: &Addresses,
    error: &mut impl FnMut(Location, String),
) {
    let mut first_definition: HashMap<SocketAddr, Location> = HashMap::new();
    for rs in &vs.real_servers {
        backend(vs, rs, Role::Real, addresses, error);
        checks(vs, rs, error);
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

/// What a configured address is to the director: it says what an address may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Vip,
    Real,
    Sorry,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Vip => "virtual IP",
            Role::Real => "real server",
            Role::Sorry => "sorry server",
        }
    }
}

/// The error for an `address` no `role` can have (see [`not_a_host_address`]). It does not name
/// the virtual server, so the copies a keepalived group makes of one value read the same.
pub(super) fn address_class_error(role: Role, address: IpAddr) -> Option<String> {
    let why = not_a_host_address(address)?;
    let purpose = match role {
        Role::Vip => "clients can only reach a unicast address",
        Role::Real | Role::Sorry => "lb forwards only to the unicast address of another host",
    };
    let hint = match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(|v4| format!(" (write {v4})")),
        IpAddr::V4(_) => None,
    };
    Some(format!("{} {address} is {why}: {purpose}{}", role.name(), hint.unwrap_or_default()))
}

/// The addresses no backend may have.
struct Addresses {
    /// Virtual IPs, with what they belong to: this director holds them (on the VRRP master),
    /// so packets forwarded to one would come back.
    held: HashMap<IpAddr, String>,
    /// The host's own, read when the configuration is checked or loaded.
    own: HashSet<IpAddr>,
    /// Tunnelled reals of the other family than their VIP's that the host has no route to.
    unrouted: HashSet<IpAddr>,
}

/// Tunnelled reals in the other family than their VIP (IPv4 in IPv6 or back) the host cannot
/// route to: the outer header is of the real's family, which the director may not speak.
fn unrouted_tunnel_reals(config: &Config, host: &dyn HostView) -> HashSet<IpAddr> {
    config
        .virtual_servers
        .iter()
        .flat_map(|vs| {
            vs.all_reals()
                .filter(move |rs| {
                    matches!(vs.lb_kind_of(rs), LbKind::Tun(_))
                        && rs.address.is_ipv4() != vs.vip.is_ipv4()
                })
                .map(|rs| rs.address)
        })
        .filter(|a| !host.has_route(*a))
        .collect()
}

/// Every virtual IP of the configuration, with the first thing it belongs to.
fn held_addresses(config: &Config) -> HashMap<IpAddr, String> {
    let mut held = HashMap::new();
    for vs in config.virtual_servers.iter().filter(|vs| vs.fwmark.is_none()) {
        held.entry(vs.vip).or_insert_with(|| format!("the virtual IP of virtual server {vs}"));
    }
    for instance in &config.vrrp.instances {
        for vip in &instance.virtual_ipaddress {
            held.entry(vip.address).or_insert_with(|| {
                format!("in the virtual_ipaddress of vrrp_instance `{}`", instance.name)
            });
        }
    }
    held
}

/// The host's addresses; when they cannot be read, one error at the first service with a
/// backend (a config without backends does not need them).
fn own_addresses(
    config: &Config,
    host: &dyn HostView,
    error: &mut impl FnMut(Location, String),
) -> HashSet<IpAddr> {
    match host.own_addresses() {
        Ok(addresses) => addresses.into_iter().collect(),
        Err(e) => {
            let first = config
                .virtual_servers
                .iter()
                .find(|vs| !vs.real_servers.is_empty() || vs.sorry_server.is_some());
            if let Some(vs) = first {
                error(
                    vs.location,
                    format!(
                        "cannot list the addresses of this host, which no real server may have: \
                         {e}"
                    ),
                );
            }
            HashSet::new()
        }
    }
}

/// A backend's address must be another host's: not a special address, not a virtual IP, not
/// one of ours.
fn backend_address(
    rs: &RealServer,
    role: Role,
    addresses: &Addresses,
    error: &mut impl FnMut(Location, String),
) {
    let at = rs.address_at();
    let address = rs.address;
    if let Some(message) = address_class_error(role, address) {
        error(at, message);
        return;
    }
    let role = role.name();
    if let Some(holder) = addresses.held.get(&address) {
        error(
            at,
            format!(
                "{role} {address} is {holder}: the director holds that address, so lb would \
                 forward the packets to itself"
            ),
        );
    } else if addresses.own.contains(&address) {
        error(
            at,
            format!(
                "{role} {address} is an address of this host: lb forwards to other hosts only \
                 (not to the director itself)"
            ),
        );
    }
}

/// The forwarding rules any backend of `vs` (`role`: real or sorry server) must follow.
fn backend(
    vs: &VirtualServer,
    rs: &RealServer,
    role: Role,
    addresses: &Addresses,
    error: &mut impl FnMut(Location, String),
) {
    backend_address(rs, role, addresses, error);
    let role = role.name();
    let kind = vs.lb_kind_of(rs);
    let method = match kind {
        LbKind::Dr => "direct routing",
        LbKind::Nat => "NAT",
        LbKind::Tun(_) => "tunnelling",
    };
    let mixed = rs.address.is_ipv4() != vs.vip.is_ipv4();
    if mixed && matches!(kind, LbKind::Tun(_)) {
        // A tunnel may carry either family (IPv4 in IPv6 and back), if the host can reach the
        // real in its own family.
        if addresses.unrouted.contains(&rs.address) {
            error(
                rs.address_at(),
                format!(
                    "{role} {} is {} but virtual server {vs} is {}: this host has no {} route \
                     to it, which a tunnel between the two families needs",
                    rs.address,
                    family(rs.address),
                    family(vs.vip),
                    family(rs.address)
                ),
            );
        }
    } else if mixed {
        error(
            rs.address_at(),
            format!(
                "{role} {} is {} but virtual server {vs} is {}: {method} needs both in the same address family",
                rs.address,
                family(rs.address),
                family(vs.vip)
            ),
        );
    }
    // NAT rewrites the destination port; the other methods deliver the packet as sent. A
    // firewall-mark service has no port of its own: its reals' ports are for health checks (and,
    // with NAT, the port to rewrite to; 0 keeps the packet's).
    if vs.fwmark.is_none() && rs.port != vs.port && (kind != LbKind::Nat || vs.port == 0) {
        let why = if vs.port == 0 {
            format!(
                "an all-ports virtual server forwards every port unchanged, so give its {role}s \
                 port 0 or no port"
            )
        } else {
            format!(
                "{method} forwards packets unchanged, so the port cannot be changed (only NAT \
                 can)"
            )
        };
        error(
            rs.port_at(),
            format!("{role} port {} differs from virtual server port {}: {why}", rs.port, vs.port),
        );
    }
    let f = &rs.forwarding;
    if f.uthreshold != 0 && f.lthreshold > f.uthreshold {
        error(
            rs.thresholds_at(),
            format!(
                "`lthreshold` {} of {role} {rs} is above its `uthreshold` {}: new connections \
                 resume below lthreshold after stopping at uthreshold",
                f.lthreshold, f.uthreshold
            ),
        );
    }
}

/// What a real's checkers connect to and from must make sense for the real.
fn checks(vs: &VirtualServer, rs: &RealServer, error: &mut impl FnMut(Location, String)) {
    for (i, check) in rs.health.checks.iter().enumerate() {
        // Another front end may not locate each value: then they are at the checker.
        let at = rs.check_locations.get(i).cloned();
        let at = at.unwrap_or_else(|| Spans::at_section(check.location));
        let kind = check.kind.native_key();
        if let Some(ip) = check.connect_ip
            && ip.is_ipv4() != rs.address.is_ipv4()
        {
            error(
                at.located("connect_ip"),
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
                at.located("bindto"),
                format!(
                    "`bindto` {source} is {} but the {kind} of real server {rs} connects to \
                     {target} ({}): the source address must be in the same family",
                    family(source),
                    family(target)
                ),
            );
        }
        if check.kind.uses_port() && rs.port == 0 && check.connect_port.is_none() {
            let why = if vs.fwmark.is_some() {
                "give the real server a port, or the check `connect_port`"
            } else {
                "the reals of an all-ports virtual server have port 0, so give `connect_port`"
            };
            error(
                check.location,
                format!("the {kind} of real server {rs} has no port to connect to: {why}"),
            );
        }
    }
}

/// The VRRP rules between values: what each instance's version carries, one address family per
/// instance, the host's interfaces, and instances that would fight over a router id or an address.
/// Names and the references between sections are the front ends' to check (they also know the
/// sections left out for their errors).
fn vrrp(config: &Config, host: &dyn HostView, error: &mut impl FnMut(Location, String)) {
    // (interface, virtual_router_id, IPv6) → the instance using it.
    let mut routers: HashMap<(&str, u8, bool), &VrrpInstance> = HashMap::new();
    // Address → the instance holding it.
    let mut holders: HashMap<IpAddr, &VrrpInstance> = HashMap::new();
    for (i, instance) in config.vrrp.instances.iter().enumerate() {
        let at = config.vrrp_spans(i);
        let name = &instance.name;
        if !host.interface_exists(&instance.interface) {
            error(
                at.located("interface"),
                format!("interface `{}` does not exist on this host", instance.interface),
            );
        }
        for (j, track) in instance.track_interface.iter().enumerate() {
            if !host.interface_exists(&track.name) {
                error(
                    at.item("track_interface", j),
                    format!("tracked interface `{}` does not exist on this host", track.name),
                );
            }
        }
        vrrp_version(instance, &at, error);
        vrrp_families(instance, &at, error);

        let router = (instance.interface.as_str(), instance.virtual_router_id, instance.is_ipv6());
        if let Some(first) = routers.get(&router) {
            error(
                at.located("virtual_router_id"),
                format!(
                    "virtual_router_id {} on {} is already used by vrrp_instance `{}` at line {} \
                     ({}): the instances of one family on one interface need different \
                     virtual_router_ids",
                    instance.virtual_router_id,
                    instance.interface,
                    first.name,
                    first.location.line,
                    if instance.is_ipv6() { "IPv6" } else { "IPv4" },
                ),
            );
        } else {
            routers.insert(router, instance);
        }

        for (j, vip) in instance.virtual_ipaddress.iter().enumerate() {
            match holders.get(&vip.address) {
                Some(holder) if std::ptr::eq(*holder, instance) => error(
                    at.item("virtual_ipaddress", j),
                    format!(
                        "{} is listed twice in the virtual_ipaddress of vrrp_instance `{name}`",
                        vip.address
                    ),
                ),
                Some(holder) => error(
                    at.item("virtual_ipaddress", j),
                    format!(
                        "{} is already in the virtual_ipaddress of vrrp_instance `{}` at line {}: \
                         an address can belong to one instance only",
                        vip.address, holder.name, holder.location.line
                    ),
                ),
                None => {
                    holders.insert(vip.address, instance);
                }
            }
        }
    }
}

/// What the instance's VRRP version carries: the interval of its adverts, authentication, IPv6.
fn vrrp_version(instance: &VrrpInstance, at: &Spans, error: &mut impl FnMut(Location, String)) {
    let name = &instance.name;
    let interval = instance.advert_int;
    let secs = interval.as_secs_f64();
    let nanos = interval.as_nanos();
    match instance.version {
        2 => {
            if instance.is_ipv6() {
                error(
                    at.located("version"),
                    format!(
                        "version 2 cannot carry the IPv6 addresses of vrrp_instance `{name}`: \
                         VRRPv2 is IPv4 only; use version 3 (the default for IPv6 addresses)"
                    ),
                );
            }
            if interval.is_zero() || interval > MAX_ADVERT_INT_V2 {
                error(
                    at.located("advert_int"),
                    format!(
                        "`advert_int` must be 1 to {} seconds with version 2, found {secs}",
                        MAX_ADVERT_INT_V2.as_secs()
                    ),
                );
            } else if !nanos.is_multiple_of(1_000_000_000) {
                // keepalived rounds to the nearest second, at least 1.
                let rounded = ((nanos + 500_000_000) / 1_000_000_000).max(1);
                error(
                    at.located("advert_int"),
                    format!(
                        "`advert_int` {secs} is not whole seconds, which VRRPv2 adverts carry: \
                         keepalived would round it to {rounded}; write whole seconds, or use \
                         version 3 for fractions"
                    ),
                );
            }
        }
        3 => {
            if instance.auth_pass.is_some() {
                error(
                    at.located("authentication"),
                    format!(
                        "`authentication` is VRRPv2's, and vrrp_instance `{name}` runs version 3, \
                         which has none (keepalived ignores it): remove it, or use version 2"
                    ),
                );
            }
            let centi = 10_000_000;
            if interval.is_zero() || interval > MAX_ADVERT_INT_V3 {
                error(
                    at.located("advert_int"),
                    format!(
                        "`advert_int` must be 0.01 to {} seconds with version 3 (its adverts carry \
                         hundredths of a second in 12 bits), found {secs}",
                        MAX_ADVERT_INT_V3.as_secs_f64()
                    ),
                );
            } else if !nanos.is_multiple_of(centi) {
                // keepalived rounds to the nearest hundredth, within 0.01..=40.95.
                let rounded = ((nanos + centi / 2) / centi).max(1) * centi;
                let rounded = Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
                    .min(MAX_ADVERT_INT_V3);
                error(
                    at.located("advert_int"),
                    format!(
                        "`advert_int` {secs} is not in hundredths of a second, which VRRPv3 adverts \
                         carry: keepalived would round it to {}",
                        rounded.as_secs_f64()
                    ),
                );
            }
        }
        // Front ends accept only 2 and 3.
        _ => {}
    }
}

/// One address family per instance: its addresses, unicast peers and source address.
fn vrrp_families(instance: &VrrpInstance, at: &Spans, error: &mut impl FnMut(Location, String)) {
    let name = &instance.name;
    let Some(first) = instance.virtual_ipaddress.first() else {
        return;
    };
    let family_of_first = family(first.address);
    for (j, vip) in instance.virtual_ipaddress.iter().enumerate().skip(1) {
        if vip.address.is_ipv4() != first.address.is_ipv4() {
            error(
                at.item("virtual_ipaddress", j),
                format!(
                    "{} is {} but {} before it is {family_of_first}: the addresses of one \
                     instance are all in one family; put the {} ones in another vrrp_instance",
                    vip.address,
                    family(vip.address),
                    first.address,
                    family(vip.address)
                ),
            );
        }
    }
    let mismatch = |what: &str, address: IpAddr| {
        format!(
            "{what} {address} is {} but the virtual_ipaddress of vrrp_instance `{name}` is \
             {family_of_first}: VRRP adverts are exchanged in the family of the addresses",
            family(address)
        )
    };
    if let Some(source) = instance.unicast_src_ip
        && source.is_ipv4() != first.address.is_ipv4()
    {
        error(at.located("unicast_src_ip"), mismatch("unicast_src_ip", source));
    }
    for (j, &peer) in instance.unicast_peer.iter().enumerate() {
        if peer.is_ipv4() != first.address.is_ipv4() {
            error(at.item("unicast_peer", j), mismatch("unicast_peer", peer));
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
    };
    use super::super::parse_toml;
    use super::super::test_support::{FakeHost, assert_single_error, doc};
    use super::super::vrrp::TrackInterface;
    use super::*;

    /// Base lines 1-4: a valid IPv4 virtual server on eth0.
    const VS: &[&str] =
        &["[[virtual_server]]", "vip = '192.0.2.100'", "port = 80", "interface = 'eth0'"];

    /// (name, lines after the base virtual server, expected message part, expected line:col)
    const SCENARIOS: &[(&str, &[&str], &str, &str)] = &[
        (
            "ops on a TCP service",
            &["ops = true"],
            "`ops` (one-packet scheduling) is for UDP services; 192.0.2.100:80/tcp is tcp",
            "5:7",
        ),
        (
            "lthreshold above uthreshold",
            &[
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "uthreshold = 10",
                "lthreshold = 20",
            ],
            "`lthreshold` 20 of real server 192.0.2.11:80 is above its `uthreshold` 10",
            "7:14",
        ),
        (
            "real port differs with TUN",
            &[
                "lb_kind = 'TUN'",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "port = 8080",
            ],
            "real server port 8080 differs from virtual server port 80: tunnelling forwards \
             packets unchanged, so the port cannot be changed (only NAT can)",
            "8:8",
        ),
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
            "real server port 8080 differs from virtual server port 80: direct routing forwards packets unchanged, so the port cannot be changed (only NAT can",
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
             packets unchanged, so the port cannot be changed (only NAT can",
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
            "tunnel to a real of the other family without a route",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.101'",
                "port = 80",
                "interface = 'eth0'",
                "lb_kind = 'TUN'",
                "[[virtual_server.real_server]]",
                "address = '2001:db8:dead::11'",
            ],
            "real server 2001:db8:dead::11 is IPv6 but virtual server 192.0.2.101:80/tcp is \
             IPv4: this host has no IPv6 route to it, which a tunnel between the two families \
             needs",
            "11:11",
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
        (
            "VIP unspecified",
            &["[[virtual_server]]", "vip = '0.0.0.0'", "port = 80", "interface = 'eth0'"],
            "virtual IP 0.0.0.0 is the unspecified address: clients can only reach a unicast \
             address",
            "6:7",
        ),
        (
            "VIP in 0.0.0.0/8",
            &["[[virtual_server]]", "vip = '0.1.2.3'", "port = 80", "interface = 'eth0'"],
            "virtual IP 0.1.2.3 is an address of \"this network\" (0.0.0.0/8), which is a source \
             only",
            "6:7",
        ),
        (
            "VIP broadcast",
            &["[[virtual_server]]", "vip = '255.255.255.255'", "port = 80", "interface = 'eth0'"],
            "virtual IP 255.255.255.255 is the broadcast address",
            "6:7",
        ),
        (
            "VIP multicast",
            &["[[virtual_server]]", "vip = '224.0.0.18'", "port = 80", "interface = 'eth0'"],
            "virtual IP 224.0.0.18 is a multicast address",
            "6:7",
        ),
        (
            "VIP loopback",
            &["[[virtual_server]]", "vip = '127.0.0.1'", "port = 80", "interface = 'eth0'"],
            "virtual IP 127.0.0.1 is a loopback address",
            "6:7",
        ),
        (
            "IPv6 VIP unspecified",
            &["[[virtual_server]]", "vip = '::'", "port = 80", "interface = 'eth0'"],
            "virtual IP :: is the unspecified address",
            "6:7",
        ),
        (
            "IPv6 VIP loopback",
            &["[[virtual_server]]", "vip = '::1'", "port = 80", "interface = 'eth0'"],
            "virtual IP ::1 is a loopback address",
            "6:7",
        ),
        (
            "IPv6 VIP multicast",
            &["[[virtual_server]]", "vip = 'ff02::12'", "port = 80", "interface = 'eth0'"],
            "virtual IP ff02::12 is a multicast address",
            "6:7",
        ),
        (
            "IPv4-mapped VIP",
            &[
                "[[virtual_server]]",
                "vip = '::ffff:192.0.2.101'",
                "port = 80",
                "interface = 'eth0'",
            ],
            "virtual IP ::ffff:192.0.2.101 is an IPv4-mapped IPv6 address, which no packet \
             carries: clients can only reach a unicast address (write 192.0.2.101)",
            "6:7",
        ),
        (
            "real loopback",
            &["[[virtual_server.real_server]]", "address = '127.0.0.1'"],
            "real server 127.0.0.1 is a loopback address: lb forwards only to the unicast address \
             of another host",
            "6:11",
        ),
        (
            "real broadcast",
            &["[[virtual_server.real_server]]", "address = '255.255.255.255'"],
            "real server 255.255.255.255 is the broadcast address",
            "6:11",
        ),
        (
            "real unspecified",
            &["[[virtual_server.real_server]]", "address = '0.0.0.0'"],
            "real server 0.0.0.0 is the unspecified address",
            "6:11",
        ),
        (
            "real multicast",
            &["[[virtual_server.real_server]]", "address = '239.1.2.3'"],
            "real server 239.1.2.3 is a multicast address",
            "6:11",
        ),
        (
            "real equal to the VIP",
            &["[[virtual_server.real_server]]", "address = '192.0.2.100'"],
            "real server 192.0.2.100 is the virtual IP of virtual server 192.0.2.100:80/tcp: the \
             director holds that address, so lb would forward the packets to itself",
            "6:11",
        ),
        (
            "real equal to another virtual server's VIP",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.101'",
                "port = 80",
                "interface = 'eth0'",
                "real_server = [{ address = '192.0.2.100' }]",
            ],
            "real server 192.0.2.100 is the virtual IP of virtual server 192.0.2.100:80/tcp",
            "9:28",
        ),
        (
            "real equal to an address of a VRRP instance",
            &[
                "real_server = [{ address = '192.0.2.150' }]",
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['192.0.2.150/24']",
            ],
            "real server 192.0.2.150 is in the virtual_ipaddress of vrrp_instance `VI_1`: the \
             director holds that address",
            "5:28",
        ),
        (
            "real equal to an address of this host",
            &["[[virtual_server.real_server]]", "address = '198.51.100.2'"],
            "real server 198.51.100.2 is an address of this host: lb forwards to other hosts only",
            "6:11",
        ),
        (
            "IPv6 real loopback",
            &[
                "[[virtual_server]]",
                "vip = '2001:db8::100'",
                "port = 80",
                "interface = 'eth0'",
                "real_server = [{ address = '::1' }]",
            ],
            "real server ::1 is a loopback address",
            "9:28",
        ),
        (
            "IPv6 real multicast",
            &[
                "[[virtual_server]]",
                "vip = '2001:db8::100'",
                "port = 80",
                "interface = 'eth0'",
                "real_server = [{ address = 'ff05::2' }]",
            ],
            "real server ff05::2 is a multicast address",
            "9:28",
        ),
        (
            "IPv4-mapped loopback real",
            &[
                "[[virtual_server]]",
                "vip = '2001:db8::100'",
                "port = 80",
                "interface = 'eth0'",
                "real_server = [{ address = '::ffff:127.0.0.1' }]",
            ],
            "real server ::ffff:127.0.0.1 is an IPv4-mapped IPv6 address, which no packet \
             carries: lb forwards only to the unicast address of another host (write 127.0.0.1)",
            "9:28",
        ),
        (
            "IPv6 real equal to an address of this host",
            &[
                "[[virtual_server]]",
                "vip = '2001:db8::100'",
                "port = 80",
                "interface = 'eth0'",
                "real_server = [{ address = '2001:db8:ffff::1' }]",
            ],
            "real server 2001:db8:ffff::1 is an address of this host",
            "9:28",
        ),
        (
            "sorry server equal to the VIP",
            &["sorry_server = { address = '192.0.2.100' }"],
            "sorry server 192.0.2.100 is the virtual IP of virtual server 192.0.2.100:80/tcp",
            "5:28",
        ),
        (
            "sorry server loopback",
            &["sorry_server = { address = '127.0.0.1' }"],
            "sorry server 127.0.0.1 is a loopback address: lb forwards only to the unicast \
             address of another host",
            "5:28",
        ),
        (
            "sorry server equal to an address of this host",
            &["sorry_server = { address = '198.51.100.2' }"],
            "sorry server 198.51.100.2 is an address of this host",
            "5:28",
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

    /// The example: a multicast VIP with a loopback real, both reported, each at its
    /// value; and what the address rules let through.
    #[test]
    fn addresses_no_host_has_are_refused_together_and_link_local_passes() {
        let text = doc(&[
            "[[virtual_server]]",
            "vip = '224.0.0.18'",
            "port = 80",
            "interface = 'eth0'",
            "real_server = [{ address = '127.0.0.1' }, { address = '198.51.100.2' }]",
        ]);
        let errors = parse_toml(&text, "lb.toml".as_ref(), &FakeHost).unwrap_err();
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "lb.toml:2:7: virtual IP 224.0.0.18 is a multicast address: clients can only \
                 reach a unicast address",
                "lb.toml:5:28: real server 127.0.0.1 is a loopback address: lb forwards only to \
                 the unicast address of another host",
                "lb.toml:5:55: real server 198.51.100.2 is an address of this host: lb forwards \
                 to other hosts only (not to the director itself)",
            ]
        );

        // A VIP that is an address of this host (the VRRP master holds it), link-local reals
        // (direct routing reaches reals on the VIP's link), and a real that is the VRRP peer.
        let text = doc(&[
            "[[virtual_server]]",
            "vip = '198.51.100.2'",
            "port = 80",
            "interface = 'eth0'",
            "real_server = [{ address = '169.254.0.11' }, { address = '198.51.100.1' }]",
            "[[virtual_server]]",
            "vip = '2001:db8:ffff::1'",
            "port = 80",
            "interface = 'eth0'",
            "real_server = [{ address = 'fe80::11' }]",
            "[[virtual_server]]",
            "fwmark = 1",
            "real_server = [{ address = '192.0.2.11', port = 80 }]",
            "[[vrrp_instance]]",
            "name = 'VI_1'",
            "interface = 'eth0'",
            "virtual_router_id = 51",
            "virtual_ipaddress = ['198.51.100.2/24']",
            "unicast_peer = ['198.51.100.1']",
        ]);
        let config =
            parse_toml(&text, "lb.toml".as_ref(), &FakeHost).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.virtual_servers.len(), 3);
    }

    /// A virtual server as another front end might build it, at line `line`, column 3.
    fn hand_built(vip: &str, port: u16, line: u32) -> VirtualServer {
        crate::fixture::virtual_server(vip, port, Location::new(line, 3))
    }

    fn hand_built_real(address: &str, port: u16, line: u32) -> RealServer {
        crate::fixture::real_server(address, port, Location::new(line, 3))
    }

    fn shown(config: &Config) -> Vec<String> {
        validate(config, &FakeHost).iter().map(ToString::to_string).collect()
    }

    /// Validation works on any front end's model: errors go where its key locations say.
    #[test]
    fn uses_the_models_locations_whatever_the_front_end() {
        let mut vs = hand_built("2001:db8::100", 80, 1);
        vs.interface = "eth9".to_owned();
        vs.key_locations.set("interface", Location::new(4, 3));
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
            through_vip: false,
            location: Location::new(7, 5),
        };
        vs.real_servers[0].health.checks.push(check);
        vs.sorry_server = Some(hand_built_real("192.0.2.200", 80, 9));
        let config = crate::fixture::config("/etc/keepalived/keepalived.conf", vec![vs]);
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
        let mut config = crate::fixture::config("lb.toml", services(1024));
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

    /// What only IPVS can do is valid in the model; which dataplane runs it is decided later.
    #[test]
    fn nat_port_mapping_and_udp_ops_are_valid() {
        let text = doc(&[
            VS,
            &[
                "lb_kind = 'NAT'",
                "real_server = [{ address = '192.0.2.11', port = 8080, uthreshold = 5 }]",
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 53",
                "protocol = 'udp'",
                "ops = true",
                "interface = 'eth0'",
                "real_server = [{ address = '192.0.2.11' }]",
            ],
        ]
        .concat());
        let config = parse_toml(&text, "test.toml".as_ref(), &FakeHost).unwrap();
        assert_eq!(config.virtual_servers[0].real_servers[0].port, 8080);
        assert!(config.virtual_servers[1].forwarding.one_packet);
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

    /// Base lines 1-5: a valid IPv4 VRRP instance on eth0.
    const VI: &[&str] = &[
        "[[vrrp_instance]]",
        "name = 'VI_1'",
        "interface = 'eth0'",
        "virtual_router_id = 51",
        "virtual_ipaddress = ['192.0.2.100/24']",
    ];

    /// Base lines 1-5: a valid IPv6 VRRP instance on eth0.
    const VI6: &[&str] = &[
        "[[vrrp_instance]]",
        "name = 'VI_6'",
        "interface = 'eth0'",
        "virtual_router_id = 51",
        "virtual_ipaddress = ['2001:db8::100/64']",
    ];

    /// (name, base document, lines after it, expected message part, expected line:col).
    type VrrpScenario = (
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
        &'static str,
        &'static str,
    );

    /// The VRRP rules, each the only error of its document.
    const VRRP_SCENARIOS: &[VrrpScenario] = &[
        (
            "instance interface missing on the host",
            &[],
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth9'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['192.0.2.100/24']",
            ],
            "interface `eth9` does not exist on this host",
            "3:13",
        ),
        (
            "tracked interface missing on the host",
            VI,
            &["track_interface = ['eth1', { name = 'eth9', weight = -10 }]"],
            "tracked interface `eth9` does not exist on this host",
            "6:37",
        ),
        (
            "VRRPv2 advert interval in fractions",
            VI,
            &["advert_int = 1.5"],
            "`advert_int` 1.5 is not whole seconds, which VRRPv2 adverts carry: keepalived would \
             round it to 2; write whole seconds, or use version 3 for fractions",
            "6:14",
        ),
        (
            "VRRPv2 advert interval below a second",
            VI,
            &["version = 2", "advert_int = 0.3"],
            "`advert_int` 0.3 is not whole seconds, which VRRPv2 adverts carry: keepalived would \
             round it to 1;",
            "7:14",
        ),
        (
            "VRRPv3 advert interval too long",
            VI,
            &["version = 3", "advert_int = 41"],
            "`advert_int` must be 0.01 to 40.95 seconds with version 3 (its adverts carry \
             hundredths of a second in 12 bits), found 41",
            "7:14",
        ),
        (
            "VRRPv3 advert interval finer than hundredths",
            VI,
            &["version = 3", "advert_int = 0.015"],
            "`advert_int` 0.015 is not in hundredths of a second, which VRRPv3 adverts carry: \
             keepalived would round it to 0.02",
            "7:14",
        ),
        (
            "VRRPv3 advert interval rounded to the longest",
            VI6,
            &["advert_int = 40.949"],
            "`advert_int` 40.949 is not in hundredths of a second, which VRRPv3 adverts carry: \
             keepalived would round it to 40.95",
            "6:14",
        ),
        (
            "IPv6 with version 2",
            VI6,
            &["version = 2"],
            "version 2 cannot carry the IPv6 addresses of vrrp_instance `VI_6`: VRRPv2 is IPv4 \
             only; use version 3 (the default for IPv6 addresses)",
            "6:11",
        ),
        (
            "authentication with version 3",
            VI,
            &["version = 3", "authentication = { auth_type = 'PASS', auth_pass = 'secret' }"],
            "`authentication` is VRRPv2's, and vrrp_instance `VI_1` runs version 3, which has none \
             (keepalived ignores it): remove it, or use version 2",
            "7:18",
        ),
        (
            "authentication of an IPv6 instance",
            VI6,
            &["[vrrp_instance.authentication]", "auth_type = 'PASS'", "auth_pass = 'secret'"],
            "`authentication` is VRRPv2's, and vrrp_instance `VI_6` runs version 3",
            "6:1",
        ),
        (
            "addresses of two families",
            &[],
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['192.0.2.100', '2001:db8::100']",
            ],
            "2001:db8::100 is IPv6 but 192.0.2.100 before it is IPv4: the addresses of one \
             instance are all in one family; put the IPv6 ones in another vrrp_instance",
            "5:37",
        ),
        (
            "unicast peer of another family",
            VI,
            &["unicast_peer = ['192.0.2.2', '2001:db8::2']"],
            "unicast_peer 2001:db8::2 is IPv6 but the virtual_ipaddress of vrrp_instance `VI_1` is \
             IPv4: VRRP adverts are exchanged in the family of the addresses",
            "6:30",
        ),
        (
            "unicast source of another family",
            VI6,
            &["unicast_src_ip = '192.0.2.1'", "unicast_peer = ['2001:db8::2']"],
            "unicast_src_ip 192.0.2.1 is IPv4 but the virtual_ipaddress of vrrp_instance `VI_6` is \
             IPv6",
            "6:18",
        ),
        (
            "router id used twice on one interface",
            VI,
            &[
                "[[vrrp_instance]]",
                "name = 'VI_2'",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['192.0.2.101/24']",
            ],
            "virtual_router_id 51 on eth0 is already used by vrrp_instance `VI_1` at line 1 \
             (IPv4): the instances of one family on one interface need different \
             virtual_router_ids",
            "9:21",
        ),
        (
            "address in two instances",
            VI,
            &[
                "[[vrrp_instance]]",
                "name = 'VI_2'",
                "interface = 'eth1'",
                "virtual_router_id = 52",
                "virtual_ipaddress = ['192.0.2.200/24', '192.0.2.100/32']",
            ],
            "192.0.2.100 is already in the virtual_ipaddress of vrrp_instance `VI_1` at line 1: \
             an address can belong to one instance only",
            "10:40",
        ),
        (
            "address twice in one instance",
            &[],
            &[
                "[[vrrp_instance]]",
                "name = 'VI_1'",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['192.0.2.100/24', '192.0.2.100/32']",
            ],
            "192.0.2.100 is listed twice in the virtual_ipaddress of vrrp_instance `VI_1`",
            "5:40",
        ),
    ];

    #[test]
    fn vrrp_scenarios() {
        for &(name, base, extra, expected, at) in VRRP_SCENARIOS {
            let text = doc(&[base, extra].concat());
            let result = parse_toml(&text, "test.toml".as_ref(), &FakeHost);
            assert_single_error(name, result, expected, at);
        }
    }

    /// What the VRRP rules let through.
    #[test]
    fn vrrp_instances_that_do_not_collide() {
        let text = doc(&[
            VI,
            &["advert_int = 255"],
            // The same router id on another interface, and in the other family on the same one.
            &[
                "[[vrrp_instance]]",
                "name = 'VI_2'",
                "interface = 'eth1'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['192.0.2.200/24']",
                "[[vrrp_instance]]",
                "name = 'VI_6'",
                "interface = 'eth0'",
                "virtual_router_id = 51",
                "virtual_ipaddress = ['2001:db8::100/64', '2001:db8::101/64']",
                "advert_int = 0.01",
                "unicast_src_ip = '2001:db8::1'",
                "unicast_peer = ['2001:db8::2']",
            ],
            // VRRPv3 over IPv4, with the longest interval.
            &[
                "[[vrrp_instance]]",
                "name = 'VI_3'",
                "interface = 'eth0'",
                "virtual_router_id = 53",
                "version = 3",
                "advert_int = 40.95",
                "virtual_ipaddress = ['192.0.2.150']",
            ],
        ]
        .concat());
        let config = parse_toml(&text, "test.toml".as_ref(), &FakeHost).unwrap();
        assert_eq!(config.vrrp.instances.len(), 4);
    }

    /// A VRRP model without value locations (another front end's): errors at each section.
    #[test]
    fn vrrp_errors_without_value_locations_are_at_the_section() {
        let config = parse_toml(
            &doc(&[
                VI,
                &[
                    "[[vrrp_instance]]",
                    "name = 'VI_2'",
                    "interface = 'eth1'",
                    "virtual_router_id = 52",
                    "virtual_ipaddress = ['192.0.2.200']",
                ],
            ]
            .concat()),
            "test.toml".as_ref(),
            &FakeHost,
        )
        .unwrap();
        let mut config = Config { vrrp_locations: Default::default(), ..config };
        config.source = "keepalived.conf".into();
        let held = config.vrrp.instances[0].virtual_ipaddress[0];
        let second = &mut config.vrrp.instances[1];
        second.location = Location::new(20, 1);
        second.interface = "eth9".to_owned();
        second.advert_int = Duration::from_millis(1500);
        second.virtual_ipaddress.push(held);
        second.track_interface.push(TrackInterface { name: "eth8".to_owned(), weight: 0 });
        assert_eq!(
            shown(&config),
            [
                "keepalived.conf:20:1: interface `eth9` does not exist on this host",
                "keepalived.conf:20:1: tracked interface `eth8` does not exist on this host",
                "keepalived.conf:20:1: `advert_int` 1.5 is not whole seconds, which VRRPv2 adverts \
                 carry: keepalived would round it to 2; write whole seconds, or use version 3 for \
                 fractions",
                "keepalived.conf:20:1: 192.0.2.100 is already in the virtual_ipaddress of \
                 vrrp_instance `VI_1` at line 1: an address can belong to one instance only",
            ]
        );
    }
}
