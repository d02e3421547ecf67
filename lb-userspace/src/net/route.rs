//! Which interface a real server is reachable on, from the kernel's routing table.
//!
//! Thousands of reals are resolved from one dump of the routes and the policy rules
//! ([`RouteTable`]: longest prefix, lowest metric, tables in rule order), not one `ip route get`
//! round trip each. The dump answers only what it describes fully: a family whose rules select
//! on anything but the destination's table order (source, mark, interface, VRF, ...), and a
//! route the dump shows without one plain next hop (multipath, nexthop objects, a dead or
//! link-down next hop) are asked of the kernel per address ([`egress`]), as before.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use futures::TryStreamExt as _;
use rtnetlink::{
    IpVersion, RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        route::{RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteType},
        rule::{RuleAction, RuleAttribute, RuleMessage},
    },
};

/// How the kernel would reach an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Egress {
    pub ifindex: u32,
    /// True when the route has a gateway: the address is not on the link, so DR cannot reach it.
    pub via_gateway: bool,
}

/// Asks the kernel for the route to `addr` (like `ip route get`). `None` when there is no route.
pub async fn egress(
    handle: &rtnetlink::Handle,
    addr: IpAddr,
) -> Result<Option<Egress>, rtnetlink::Error> {
    let prefix = if addr.is_ipv4() { 32 } else { 128 };
    let Ok(builder) = RouteMessageBuilder::<IpAddr>::new().destination_prefix(addr, prefix) else {
        return Ok(None);
    };
    let mut stream = handle.route().get(builder.build()).execute();
    let msg = match stream.try_next().await {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(None),
        // Unreachable destinations come back as an error from the kernel.
        Err(rtnetlink::Error::NetlinkError(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Egress { ifindex: 0, via_gateway: false };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Oif(i) => out.ifindex = *i,
            RouteAttribute::Gateway(_) => out.via_gateway = true,
            _ => {}
        }
    }
    Ok((out.ifindex != 0).then_some(out))
}

/// The loopback device's index in every network namespace: `ip route get` of a local address
/// answers `dev lo`.
const LOOPBACK_IFINDEX: u32 = 1;

/// What a route does with a matching destination, as far as [`RouteTable::lookup`] follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Out of `ifindex`, on the link or through a gateway.
    Forward(Egress),
    /// An address of this host (`ip route get` answers `dev lo`).
    Local,
    /// Blackhole, unreachable, prohibit: no route.
    Drop,
    /// Not in this table: the lookup goes on with the next one.
    Throw,
    /// The dump does not say enough (multipath, a nexthop object, a dead or link-down next hop,
    /// a route type the lookup does not model): the kernel answers.
    Ask,
}

/// One route of a dump, reduced to what the lookup needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub table: u32,
    pub destination: IpAddr,
    pub prefix: u8,
    /// The metric: the lowest wins among routes of the same prefix in a table.
    pub priority: u32,
    pub action: Action,
}

/// The answer for one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(Option<Egress>),
    /// Only the kernel can answer (see [`Action::Ask`], and rules with selectors).
    Ask,
}

/// One table's routes: by prefix length (longest first), then by masked destination.
type ByPrefix = BTreeMap<std::cmp::Reverse<u8>, HashMap<u128, Vec<Route>>>;

/// Routes of both families by table, prefix length and masked destination, and the order in
/// which each family's rules look tables up (`None`: a rule selects on more than the
/// destination, so only the kernel knows which table an address uses).
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    /// (is IPv6, table) → its routes.
    routes: HashMap<(bool, u32), ByPrefix>,
    v4_tables: Option<Vec<u32>>,
    v6_tables: Option<Vec<u32>>,
}

/// `addr` as a 128-bit number (IPv4 in the low 32 bits) and its width.
fn bits(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

fn masked(value: u128, width: u8, prefix: u8) -> u128 {
    let prefix = prefix.min(width);
    if prefix == 0 {
        return 0;
    }
    let host_bits = u32::from(width - prefix);
    value >> host_bits << host_bits
}

impl RouteTable {
    /// `v4_tables`/`v6_tables`: the tables each family's rules look up, in rule order; `None`
    /// when some rule selects on more than the destination.
    pub fn new(
        routes: impl IntoIterator<Item = Route>,
        v4_tables: Option<Vec<u32>>,
        v6_tables: Option<Vec<u32>>,
    ) -> Self {
        let mut out = Self { v4_tables, v6_tables, ..Default::default() };
        for r in routes {
            let (value, width) = bits(r.destination);
            out.routes
                .entry((width == 128, r.table))
                .or_default()
                .entry(std::cmp::Reverse(r.prefix.min(width)))
                .or_default()
                .entry(masked(value, width, r.prefix))
                .or_default()
                .push(r);
        }
        out
    }

    /// The route the kernel would take to `addr` with no source, mark or input interface given
    /// (`ip route get ADDR`), or [`Lookup::Ask`] when the dump cannot tell.
    pub fn lookup(&self, addr: IpAddr) -> Lookup {
        let (value, width) = bits(addr);
        let v6 = width == 128;
        // Scoped and group addresses depend on more than the tables.
        let special = match addr {
            IpAddr::V4(a) => a.is_multicast() || a.is_broadcast() || a.is_unspecified(),
            IpAddr::V6(a) => a.is_multicast() || a.is_unicast_link_local() || a.is_unspecified(),
        };
        let tables = if v6 { &self.v6_tables } else { &self.v4_tables };
        let Some(tables) = tables.as_ref().filter(|_| !special) else { return Lookup::Ask };
        for table in tables {
            let Some(by_len) = self.routes.get(&(v6, *table)) else { continue };
            let best = by_len.iter().find_map(|(std::cmp::Reverse(len), dests)| {
                dests.get(&masked(value, width, *len))?.iter().min_by_key(|r| r.priority)
            });
            match best.map(|r| r.action) {
                None | Some(Action::Throw) => continue,
                Some(Action::Forward(e)) => return Lookup::Found(Some(e)),
                Some(Action::Local) => {
                    return Lookup::Found(Some(Egress {
                        ifindex: LOOPBACK_IFINDEX,
                        via_gateway: false,
                    }));
                }
                Some(Action::Drop) => return Lookup::Found(None),
                Some(Action::Ask) => return Lookup::Ask,
            }
        }
        Lookup::Found(None)
    }

    /// Dumps the routes and rules of both families.
    pub async fn read(handle: &rtnetlink::Handle) -> Result<Self, rtnetlink::Error> {
        let mut routes = Vec::new();
        for v6 in [false, true] {
            let mut msg = if v6 {
                RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
            } else {
                RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
            };
            // Every table, not only main.
            msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
            let mut stream = handle.route().get(msg).execute();
            while let Some(m) = stream.try_next().await? {
                routes.extend(route_of(&m));
            }
        }
        let v4 = rule_tables(handle.rule().get(IpVersion::V4).execute().try_collect().await?);
        let v6 = rule_tables(handle.rule().get(IpVersion::V6).execute().try_collect().await?);
        Ok(Self::new(routes, v4, v6))
    }
}

/// A dumped route as the lookup sees it; `None` for what a destination lookup never uses
/// (cached clones, other families).
pub fn route_of(m: &RouteMessage) -> Option<Route> {
    let h = &m.header;
    if h.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let mut table = u32::from(h.table);
    let (mut destination, mut oif, mut gateway, mut priority, mut plain) =
        (None, 0, false, 0, true);
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                destination = Some(IpAddr::V4(*a))
            }
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => {
                destination = Some(IpAddr::V6(*a));
            }
            RouteAttribute::Oif(i) => oif = *i,
            RouteAttribute::Gateway(_) | RouteAttribute::Via(_) => gateway = true,
            RouteAttribute::Priority(p) => priority = *p,
            RouteAttribute::MultiPath(_) | RouteAttribute::NhId(_) => plain = false,
            _ => {}
        }
    }
    let destination = match (destination, h.address_family) {
        (Some(d), _) => d,
        // A default route has no destination attribute.
        (None, AddressFamily::Inet) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        (None, _) => return None,
    };
    let unusable = h.flags.intersects(RouteFlags::Dead | RouteFlags::Linkdown);
    let action = match h.kind {
        RouteType::Unicast if plain && !unusable && oif != 0 => {
            Action::Forward(Egress { ifindex: oif, via_gateway: gateway })
        }
        RouteType::Local => Action::Local,
        RouteType::BlackHole | RouteType::Unreachable | RouteType::Prohibit => Action::Drop,
        RouteType::Throw => Action::Throw,
        _ => Action::Ask,
    };
    Some(Route { table, destination, prefix: h.destination_prefix_length, priority, action })
}

/// The tables a family's rules look up, in rule order, when every rule is a plain
/// `from all lookup TABLE` (as the kernel's defaults: local, main, default); `None` otherwise.
pub fn rule_tables(rules: Vec<RuleMessage>) -> Option<Vec<u32>> {
    let mut plain = Vec::with_capacity(rules.len());
    for r in rules {
        let h = &r.header;
        if h.action != RuleAction::ToTable
            || (h.src_len, h.dst_len, h.tos) != (0, 0, 0)
            || !h.flags.is_empty()
        {
            return None;
        }
        let (mut table, mut priority) = (u32::from(h.table), 0);
        for attr in &r.attributes {
            match attr {
                RuleAttribute::Table(t) => table = *t,
                RuleAttribute::Priority(p) => priority = *p,
                RuleAttribute::Protocol(_) => {}
                // -1 (u32::MAX) is "not set".
                RuleAttribute::SuppressPrefixLen(v) | RuleAttribute::SuppressIfGroup(v)
                    if *v == u32::MAX => {}
                _ => return None,
            }
        }
        plain.push((priority, table));
    }
    // The kernel keeps rules sorted by priority; a dump lists them in that order.
    plain.sort_by_key(|&(p, _)| p);
    Some(plain.into_iter().map(|(_, t)| t).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: u32 = 255;
    const MAIN: u32 = 254;
    const DEFAULT: u32 = 253;

    fn fwd(ifindex: u32, via_gateway: bool) -> Action {
        Action::Forward(Egress { ifindex, via_gateway })
    }

    fn route(table: u32, cidr: &str, priority: u32, action: Action) -> Route {
        let (addr, len) = cidr.split_once('/').unwrap();
        Route {
            table,
            destination: addr.parse().unwrap(),
            prefix: len.parse().unwrap(),
            priority,
            action,
        }
    }

    fn found(ifindex: u32, via_gateway: bool) -> Lookup {
        Lookup::Found(Some(Egress { ifindex, via_gateway }))
    }

    /// A host with the kernel's default rules: two links, a default route, more specific routes
    /// and an extra table no rule looks up.
    fn host() -> RouteTable {
        RouteTable::new(
            [
                route(LOCAL, "192.0.2.1/32", 0, Action::Local),
                route(MAIN, "192.0.2.0/24", 0, fwd(2, false)),
                route(MAIN, "198.51.100.0/24", 0, fwd(3, false)),
                route(MAIN, "198.51.100.128/25", 0, fwd(4, false)),
                // Same prefix, two metrics: the lower wins.
                route(MAIN, "203.0.113.0/24", 200, fwd(2, true)),
                route(MAIN, "203.0.113.0/24", 100, fwd(3, true)),
                route(MAIN, "0.0.0.0/0", 0, fwd(2, true)),
                route(MAIN, "10.9.0.0/16", 0, Action::Drop),
                route(MAIN, "10.8.0.0/16", 0, Action::Ask),
                route(100, "192.0.2.0/24", 0, fwd(9, false)),
                route(LOCAL, "2001:db8::1/128", 0, Action::Local),
                route(MAIN, "2001:db8::/64", 256, fwd(2, false)),
                route(MAIN, "2001:db8:1::/48", 1024, fwd(3, true)),
                route(MAIN, "2001:db8:1:2::/64", 256, fwd(4, false)),
            ],
            Some(vec![LOCAL, MAIN, DEFAULT]),
            Some(vec![LOCAL, MAIN]),
        )
    }

    #[test]
    fn lookups_follow_prefix_metric_and_table_order() {
        let t = host();
        // (case, address, answer)
        let cases: &[(&str, &str, Lookup)] = &[
            ("connected", "192.0.2.20", found(2, false)),
            ("local address", "192.0.2.1", found(LOOPBACK_IFINDEX, false)),
            ("longest prefix (/25 inside a /24)", "198.51.100.200", found(4, false)),
            ("the /24 outside the /25", "198.51.100.20", found(3, false)),
            ("lowest metric of one prefix", "203.0.113.7", found(3, true)),
            ("default route: behind a gateway", "8.8.8.8", found(2, true)),
            ("blackhole/unreachable", "10.9.1.1", Lookup::Found(None)),
            ("a route the dump does not describe", "10.8.1.1", Lookup::Ask),
            ("IPv6 connected", "2001:db8::5", found(2, false)),
            ("IPv6 local", "2001:db8::1", found(LOOPBACK_IFINDEX, false)),
            ("IPv6 longest prefix", "2001:db8:1:2::9", found(4, false)),
            ("IPv6 shorter prefix, gateway", "2001:db8:1:3::9", found(3, true)),
            ("IPv6 no route (no default)", "2001:db9::1", Lookup::Found(None)),
            ("IPv6 link-local needs the kernel", "fe80::1", Lookup::Ask),
            ("multicast needs the kernel", "224.0.0.5", Lookup::Ask),
        ];
        for (case, addr, want) in cases {
            assert_eq!(t.lookup(addr.parse().unwrap()), *want, "{case}");
        }
    }

    #[test]
    fn tables_are_looked_up_in_rule_order_and_throw_goes_on() {
        let routes = [
            route(MAIN, "192.0.2.0/24", 0, fwd(2, false)),
            route(100, "192.0.2.0/24", 0, fwd(9, false)),
            route(100, "192.0.2.128/25", 0, Action::Throw),
            route(DEFAULT, "0.0.0.0/0", 0, fwd(5, true)),
        ];
        // (case, v4 table order, address, answer)
        let cases: &[(&str, Option<Vec<u32>>, &str, Lookup)] = &[
            (
                "table 100 unused by the rules",
                Some(vec![LOCAL, MAIN, DEFAULT]),
                "192.0.2.9",
                found(2, false),
            ),
            (
                "a plain rule for table 100 first",
                Some(vec![LOCAL, 100, MAIN]),
                "192.0.2.9",
                found(9, false),
            ),
            (
                "throw in table 100: main answers",
                Some(vec![LOCAL, 100, MAIN]),
                "192.0.2.200",
                found(2, false),
            ),
            (
                "nothing in main: the default table",
                Some(vec![LOCAL, MAIN, DEFAULT]),
                "8.8.8.8",
                found(5, true),
            ),
            ("no table has a route", Some(vec![LOCAL, MAIN]), "8.8.8.8", Lookup::Found(None)),
            ("rules with selectors: the kernel answers", None, "192.0.2.9", Lookup::Ask),
        ];
        for (case, order, addr, want) in cases {
            let t = RouteTable::new(routes, order.clone(), Some(vec![MAIN]));
            assert_eq!(t.lookup(addr.parse().unwrap()), *want, "{case}");
        }
    }

    #[test]
    fn only_plain_rules_give_a_table_order() {
        use rtnetlink::packet_route::rule::{RuleFlags, RuleHeader};
        let rule = |priority: u32, table: u32, extra: Option<RuleAttribute>| {
            let mut m = RuleMessage::default();
            m.header = RuleHeader { action: RuleAction::ToTable, ..Default::default() };
            m.attributes = vec![RuleAttribute::Priority(priority), RuleAttribute::Table(table)];
            m.attributes.extend(extra);
            m
        };
        let defaults =
            || vec![rule(32767, DEFAULT, None), rule(0, LOCAL, None), rule(32766, MAIN, None)];
        assert_eq!(rule_tables(defaults()), Some(vec![LOCAL, MAIN, DEFAULT]), "sorted by priority");
        let unset = Some(RuleAttribute::SuppressPrefixLen(u32::MAX));
        let mut with_unset = defaults();
        with_unset.push(rule(100, 7, unset));
        assert_eq!(rule_tables(with_unset), Some(vec![LOCAL, 7, MAIN, DEFAULT]));
        // (case, the extra rule)
        let selective: Vec<(&str, RuleMessage)> = vec![
            ("fwmark", rule(100, 7, Some(RuleAttribute::FwMark(1)))),
            ("iif", rule(100, 7, Some(RuleAttribute::Iifname("eth0".into())))),
            ("suppress_prefixlength 0", rule(100, MAIN, Some(RuleAttribute::SuppressPrefixLen(0)))),
            ("from a prefix", {
                let mut r = rule(100, 7, Some(RuleAttribute::Source("192.0.2.0".parse().unwrap())));
                r.header.src_len = 24;
                r
            }),
            ("not", {
                let mut r = rule(100, 7, None);
                r.header.flags = RuleFlags::Invert;
                r
            }),
            ("blackhole action", {
                let mut r = rule(100, 0, None);
                r.header.action = RuleAction::Blackhole;
                r
            }),
        ];
        for (case, extra) in selective {
            let mut rules = defaults();
            rules.push(extra);
            assert_eq!(rule_tables(rules), None, "{case}");
        }
    }

    /// The resolver against the kernel's own answers, in a private namespace: connected and
    /// gateway routes, a default, a blackhole, a throw, a second table with a plain rule, a
    /// multipath route (asked), local addresses, IPv6.
    #[test]
    fn dump_lookups_equal_the_kernels_route_get() {
        if !crate::testutil::require_root("route dump against route get") {
            return;
        }
        std::thread::spawn(|| {
            crate::testutil::private_netns();
            let ip = |args: &str| {
                let args: Vec<&str> = args.split_whitespace().collect();
                let st = std::process::Command::new("ip").args(&args).status().unwrap();
                assert!(st.success(), "ip {args:?}");
            };
            ip("link set lo up");
            ip("link add rtt0 type veth peer name rtt1");
            ip("link add rtt2 type veth peer name rtt3");
            for l in ["rtt0", "rtt1", "rtt2", "rtt3"] {
                ip(&format!("link set {l} up"));
            }
            ip("addr add 192.0.2.1/24 dev rtt0");
            ip("addr add 198.51.100.1/24 dev rtt2");
            ip("route add 198.51.100.128/25 dev rtt0");
            ip("route add default via 192.0.2.254");
            ip("route add 203.0.113.0/24 via 198.51.100.254 metric 50");
            ip("route add 203.0.113.0/24 via 192.0.2.254 metric 10");
            ip("route add blackhole 10.9.0.0/16");
            ip("route add 10.8.0.0/16 nexthop via 192.0.2.254 nexthop via 198.51.100.254");
            ip("route add 10.7.0.0/16 dev rtt2 table 100");
            ip("route add throw 10.7.1.0/24 table 100");
            ip("route add 10.7.0.0/16 dev rtt0");
            ip("rule add pref 100 lookup 100");
            ip("-6 addr add 2001:db8::1/64 dev rtt0 nodad");
            ip("-6 route add 2001:db8:1::/48 via 2001:db8::fe");
            ip("-6 route add 2001:db8:1:2::/64 dev rtt2");
            let addrs = [
                "192.0.2.1",
                "192.0.2.9",
                "198.51.100.9",
                "198.51.100.200",
                "203.0.113.5",
                "8.8.8.8",
                "10.9.0.1",
                "10.8.0.1",
                "10.7.0.1",
                "10.7.1.1",
                "127.0.0.1",
                "2001:db8::1",
                "2001:db8::9",
                "2001:db8:1:1::9",
                "2001:db8:1:2::9",
                "2001:db9::1",
            ];
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (conn, handle, _) = rtnetlink::new_connection().unwrap();
                tokio::spawn(conn);
                let table = RouteTable::read(&handle).await.unwrap();
                let mut asked = Vec::new();
                for a in addrs {
                    let addr: IpAddr = a.parse().unwrap();
                    let kernel = egress(&handle, addr).await.unwrap();
                    match table.lookup(addr) {
                        Lookup::Found(e) => assert_eq!(e, kernel, "{a}"),
                        Lookup::Ask => asked.push(a),
                    }
                }
                assert_eq!(asked, ["10.8.0.1"], "only the multipath route is asked");
            });
            // A rule with a selector: the whole family goes to the kernel.
            ip("rule add pref 200 fwmark 1 lookup 100");
            rt.block_on(async {
                let (conn, handle, _) = rtnetlink::new_connection().unwrap();
                tokio::spawn(conn);
                let table = RouteTable::read(&handle).await.unwrap();
                assert_eq!(table.lookup("192.0.2.9".parse().unwrap()), Lookup::Ask);
                let v6: IpAddr = "2001:db8::9".parse().unwrap();
                let kernel = egress(&handle, v6).await.unwrap();
                assert!(kernel.is_some());
                assert_eq!(table.lookup(v6), Lookup::Found(kernel), "IPv6 rules unchanged");
            });
        })
        .join()
        .unwrap();
    }
}
