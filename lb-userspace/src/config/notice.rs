//! Notices: things in a valid configuration that work, but not as the words suggest. `lb check`
//! prints them; they never make a configuration invalid. Independent of the front end, like
//! validation, and located the same way.

use super::error::Diagnostic;
use super::model::{Config, Location, VirtualServer};
use super::vrrp::OWNER_PRIORITY;

/// Maglev keeps every real's share within 1 % of its weight while the table has at least this many
/// slots per real server.
const SLOTS_PER_REAL_FOR_1_PERCENT: u64 = 100;

/// A notice about `config`, located at `at` in its main file.
fn notice_in(config: &Config, at: Location, message: String) -> Diagnostic {
    Diagnostic::notice(&config.source, at, message)
}

/// Every notice about `config`, in file order.
pub fn notices(config: &Config) -> Vec<Diagnostic> {
    let mut notices = Vec::new();
    for vs in &config.virtual_servers {
        let key = vs.key();
        let mut notice = |at: Location, message: String| {
            notices.push(notice_in(config, at, format!("{key}: {message}")));
        };
        if let Some(reason) = super::needs_ipvs(vs) {
            let at = match vs.fwmark {
                Some(_) => vs.vip_at(),
                None => vs.lb_kind_at(),
            };
            notice(at, format!("{reason}: runs on the kernel IPVS dataplane"));
        } else if super::prefers_ipvs(vs).is_some() {
            notice(
                vs.lb_algo_at(),
                format!(
                    "scheduler `{}` runs on kernel IPVS where it is available (`lb run \
                     --dataplane auto`), else as weighted Maglev (`mh`) on XDP",
                    vs.lb_algo
                ),
            );
        } else if vs.lb_algo != "mh" {
            notice(
                vs.lb_algo_at(),
                format!(
                    "scheduler `{}` runs as weighted Maglev (`mh`) on the XDP dataplane",
                    vs.lb_algo
                ),
            );
        }
        if let Some(at) = vs.persistence_granularity_at()
            && vs.persistence_timeout.is_none()
        {
            notice(at, "persistence_granularity has no effect without persistence_timeout".into());
        }
        if let Some(message) = small_table(vs) {
            notice(vs.table_size_at(), message);
        }
        slow_retries(vs, &mut notice);
        alpha_without_checks(vs, &mut notice);
        if let Some(mark) = vs.fwmark.filter(|_| !config.vrrp.instances.is_empty()) {
            notice(
                vs.vip_at(),
                format!(
                    "a firewall-mark service has no VIP for VRRP to follow: it is installed \
                     whatever the VRRP state (as keepalived does); what reaches it is whatever \
                     netfilter marks {mark} on this director"
                ),
            );
        } else if !config.vrrp.instances.is_empty() && config.vrrp.instance_for(vs.vip).is_none() {
            notice(
                vs.vip_at(),
                "its VIP is in no vrrp_instance's virtual_ipaddress, so it forwards always, \
                 whatever the VRRP state"
                    .into(),
            );
        }
    }
    vrrp(config, &mut notices);
    bgp(config, &mut notices);
    // Stable: notices at the same place keep the order above.
    notices.sort_by_key(Diagnostic::location);
    notices
}

/// VIPs `[bgp]` cannot announce: BIRD carries each family on sessions of that family only, and a
/// firewall-mark service has no VIP. Once per family, at its first VIP.
fn bgp(config: &Config, notices: &mut Vec<Diagnostic>) {
    let Some(bgp) = config.bgp.as_ref().filter(|b| b.speaker == super::bgp::Speaker::Bird) else {
        return;
    };
    for v6 in [false, true] {
        let has_session = bgp.neighbors.iter().any(|n| n.address.is_ipv6() == v6);
        let first =
            config.virtual_servers.iter().find(|vs| vs.fwmark.is_none() && vs.vip.is_ipv6() == v6);
        if let Some(vs) = first.filter(|_| !has_session) {
            let family = if v6 { "IPv6" } else { "IPv4" };
            let message = format!(
                "{}: {family} VIPs are not announced over BGP: no [[bgp.neighbor]] has an \
                 {family} address",
                vs.key()
            );
            notices.push(notice_in(config, vs.vip_at(), message));
        }
    }
    for vs in config.virtual_servers.iter().filter(|vs| vs.fwmark.is_some()) {
        let message =
            format!("{}: a firewall-mark service has no VIP to announce over BGP", vs.key());
        notices.push(notice_in(config, vs.vip_at(), message));
    }
}

/// VRRP settings that do not do what they say.
fn vrrp(config: &Config, notices: &mut Vec<Diagnostic>) {
    for (i, instance) in config.vrrp.instances.iter().enumerate() {
        let at = config.vrrp_spans(i);
        let mut notice = |at: Location, message: &str| {
            let message = format!("vrrp_instance `{}`: {message}", instance.name);
            notices.push(notice_in(config, at, message));
        };
        if instance.unicast_src_ip.is_some() && instance.unicast_peer.is_empty() {
            notice(
                at.located("unicast_src_ip"),
                "unicast_src_ip without unicast_peer: the adverts are still multicast, only sent \
                 from this address",
            );
        }
        if instance.priority == OWNER_PRIORITY && !instance.initial_master {
            notice(
                at.located("priority"),
                "priority 255 makes it the address owner, which always starts as MASTER: state \
                 BACKUP has no effect",
            );
        }
    }
}

/// A Maglev table too small for an even spread over the real servers.
fn small_table(vs: &VirtualServer) -> Option<String> {
    let reals = vs.real_servers.len();
    let needed = SLOTS_PER_REAL_FOR_1_PERCENT.saturating_mul(u64::try_from(reals).ok()?);
    (u64::from(vs.table_size) < needed).then(|| {
        format!(
            "table_size {} is below 100 × {reals} real servers: shares may deviate from weights by \
             more than 1%",
            vs.table_size
        )
    })
}

/// Checkers whose retries outlast `delay_loop`: a failure is noticed later than the words say.
fn slow_retries(vs: &VirtualServer, notice: &mut impl FnMut(Location, String)) {
    let delay_loop = vs.health.delay_loop;
    for rs in &vs.real_servers {
        for (i, check) in rs.health.checks.iter().enumerate() {
            let retries = check.delay_before_retry.saturating_mul(check.retry);
            if check.retry == 0 || retries < delay_loop {
                continue;
            }
            let at = rs.check_locations.get(i).map_or(check.location, |at| at.located("retry"));
            notice(
                at,
                format!(
                    "{} of real server {rs}: retry {} × delay_before_retry {:?} is not below \
                     delay_loop {delay_loop:?}: a down real is detected only after up to {:?} ({} \
                     attempts of up to {:?}, {:?} apart), longer than delay_loop",
                    check.kind.native_key(),
                    check.retry,
                    check.delay_before_retry,
                    check.time_to_down(),
                    u64::from(check.retry) + 1,
                    check.attempt_timeout(),
                    check.delay_before_retry,
                ),
            );
        }
    }
}

/// `alpha` makes reals start down until their checks pass: a real without checks is always up.
fn alpha_without_checks(vs: &VirtualServer, notice: &mut impl FnMut(Location, String)) {
    if !vs.health.alpha {
        return;
    }
    let unchecked: Vec<_> =
        vs.real_servers.iter().filter(|rs| rs.health.checks.is_empty()).collect();
    if unchecked.len() == vs.real_servers.len() {
        notice(
            vs.alpha_at(),
            "alpha has no effect without checks: no real server of this service has one".into(),
        );
        return;
    }
    for rs in unchecked {
        notice(
            rs.location,
            format!(
                "alpha has no effect without checks: real server {rs} has none, so it is up from \
                 the start"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::parse_toml;
    use super::super::test_support::{FakeHost, doc};
    use super::*;

    /// Base lines 1-4: a valid IPv4 virtual server on eth0.
    const VS: &[&str] =
        &["[[virtual_server]]", "vip = '192.0.2.100'", "port = 80", "interface = 'eth0'"];

    /// `n` real servers 192.0.2.1.. as inline tables on one line.
    fn reals(n: usize) -> String {
        let reals: Vec<String> =
            (1..=n).map(|i| format!("{{ address = '192.0.2.{i}' }}")).collect();
        format!("real_server = [{}]", reals.join(", "))
    }

    #[test]
    fn scenarios() {
        let three = reals(3);
        // (name, lines after the base virtual server, expected notices)
        let cases: &[(&str, Vec<&str>, &[&str])] = &[
            ("defaults: nothing to say", vec![], &[]),
            (
                "scheduler other than mh",
                vec!["lb_algo = 'wrr'"],
                &["t.toml:5:11: notice: 192.0.2.100:80/tcp: scheduler `wrr` runs as weighted \
                     Maglev (`mh`) on the XDP dataplane"],
            ),
            (
                "sh is not mapped specially",
                vec!["lvs_sched = 'sh'"],
                &["t.toml:5:13: notice: 192.0.2.100:80/tcp: scheduler `sh` runs as weighted \
                     Maglev (`mh`) on the XDP dataplane"],
            ),
            (
                "granularity without timeout",
                vec!["persistence_granularity = '255.255.255.0'"],
                &["t.toml:5:27: notice: 192.0.2.100:80/tcp: persistence_granularity has no \
                     effect without persistence_timeout"],
            ),
            (
                "granularity with a timeout of 0 (no persistence)",
                vec!["persistence_timeout = 0", "persistence_granularity = 24"],
                &["t.toml:6:27: notice: 192.0.2.100:80/tcp: persistence_granularity has no \
                     effect without persistence_timeout"],
            ),
            (
                "granularity with a timeout",
                vec!["persistence_timeout = 300", "persistence_granularity = 24"],
                &[],
            ),
            (
                "small table",
                vec!["table_size = 251", three.as_str()],
                &["t.toml:5:14: notice: 192.0.2.100:80/tcp: table_size 251 is below 100 × 3 \
                     real servers: shares may deviate from weights by more than 1%"],
            ),
            ("table just large enough", vec!["table_size = 509", three.as_str()], &[]),
            (
                "in file order",
                vec!["table_size = 251", "lb_algo = 'rr'", three.as_str()],
                &[
                    "t.toml:5:14: notice: 192.0.2.100:80/tcp: table_size 251 is below 100 × 3 \
                     real servers: shares may deviate from weights by more than 1%",
                    "t.toml:6:11: notice: 192.0.2.100:80/tcp: scheduler `rr` runs as weighted \
                     Maglev (`mh`) on the XDP dataplane",
                ],
            ),
            (
                "retries as long as delay_loop",
                vec![
                    "delay_loop = 60",
                    "[[virtual_server.real_server]]",
                    "address = '192.0.2.11'",
                    "[virtual_server.real_server.tcp_check]",
                    "retry = 3",
                    "delay_before_retry = 20",
                ],
                &["t.toml:9:9: notice: 192.0.2.100:80/tcp: tcp_check of real server \
                     192.0.2.11:80: retry 3 × delay_before_retry 20s is not below delay_loop 60s: \
                     a down real is detected only after up to 80s (4 attempts of up to 5s, 20s \
                     apart), longer than delay_loop"],
            ),
            (
                "retries within delay_loop",
                vec![
                    "[[virtual_server.real_server]]",
                    "address = '192.0.2.11'",
                    "tcp_check = { retry = 3, delay_before_retry = 19.5 }",
                ],
                &[],
            ),
            (
                "no retries",
                vec![
                    "delay_loop = 1",
                    "[[virtual_server.real_server]]",
                    "address = '192.0.2.11'",
                    "tcp_check = { retry = 0, delay_before_retry = 100 }",
                ],
                &[],
            ),
            (
                "defaults with a short delay_loop: at the checker",
                vec![
                    "delay_loop = 1",
                    "[[virtual_server.real_server]]",
                    "address = '192.0.2.11'",
                    "ping_check = {}",
                ],
                &["t.toml:8:14: notice: 192.0.2.100:80/tcp: ping_check of real server \
                     192.0.2.11:80: retry 1 × delay_before_retry 1s is not below delay_loop 1s: a \
                     down real is detected only after up to 11s (2 attempts of up to 5s, 1s \
                     apart), longer than delay_loop"],
            ),
            (
                "script retries, by the old name",
                vec![
                    "[[virtual_server.real_server]]",
                    "address = '192.0.2.11'",
                    "[virtual_server.real_server.misc_check]",
                    "misc_path = '/bin/true'",
                    "misc_timeout = 2",
                    "nb_get_retry = 2",
                    "delay_before_retry = 30",
                ],
                &["t.toml:10:16: notice: 192.0.2.100:80/tcp: misc_check of real server \
                     192.0.2.11:80: retry 2 × delay_before_retry 30s is not below delay_loop 60s: \
                     a down real is detected only after up to 66s (3 attempts of up to 2s, 30s \
                     apart), longer than delay_loop"],
            ),
            (
                "alpha without any checks",
                vec!["alpha = true", "[[virtual_server.real_server]]", "address = '192.0.2.11'"],
                &[
                    "t.toml:5:9: notice: 192.0.2.100:80/tcp: alpha has no effect without checks: no \
                     real server of this service has one",
                ],
            ),
            (
                "alpha without real servers",
                vec!["alpha = true"],
                &[
                    "t.toml:5:9: notice: 192.0.2.100:80/tcp: alpha has no effect without checks: no \
                     real server of this service has one",
                ],
            ),
            (
                "alpha with a real server unchecked",
                vec![
                    "alpha = true",
                    "[[virtual_server.real_server]]",
                    "address = '192.0.2.11'",
                    "tcp_check = {}",
                    "[[virtual_server.real_server]]",
                    "address = '192.0.2.12'",
                ],
                &["t.toml:9:1: notice: 192.0.2.100:80/tcp: alpha has no effect without checks: \
                     real server 192.0.2.12:80 has none, so it is up from the start"],
            ),
            (
                "alpha with every real server checked",
                vec!["alpha = true", "real_server = [{ address = '192.0.2.11', tcp_check = {} }]"],
                &[],
            ),
            (
                "no alpha, no checks",
                vec!["alpha = false", "real_server = [{ address = '192.0.2.11' }]"],
                &[],
            ),
        ];
        for (name, extra, expected) in cases {
            let text = doc(&[VS, extra].concat());
            let config = match parse_toml(&text, Path::new("t.toml"), &FakeHost) {
                Ok(config) => config,
                Err(errors) => panic!("{name}: {errors}"),
            };
            let shown: Vec<String> = notices(&config).iter().map(ToString::to_string).collect();
            assert_eq!(shown, *expected, "{name}");
        }
    }

    #[test]
    fn vrrp_scenarios() {
        /// Lines 5-9 after the base virtual server: an instance holding its VIP.
        const HOLDER: &[&str] = &[
            "[[vrrp_instance]]",
            "name = 'VI_1'",
            "interface = 'eth0'",
            "virtual_router_id = 51",
            "virtual_ipaddress = ['192.0.2.100/24']",
        ];
        /// Lines 5-9 after the base virtual server: an instance holding another address.
        const OTHER: &[&str] = &[
            "[[vrrp_instance]]",
            "name = 'VI_2'",
            "interface = 'eth0'",
            "virtual_router_id = 52",
            "virtual_ipaddress = ['192.0.2.200/24']",
        ];
        /// (name, blocks of lines after the base virtual server, expected notices)
        type Case = (&'static str, &'static [&'static [&'static str]], &'static [&'static str]);
        let cases: &[Case] = &[
            ("no instance: forwards always, nothing to say", &[], &[]),
            ("the VIP in an instance", &[HOLDER], &[]),
            (
                "the VIP in no instance",
                &[OTHER],
                &["t.toml:2:7: notice: 192.0.2.100:80/tcp: its VIP is in no vrrp_instance's \
                   virtual_ipaddress, so it forwards always, whatever the VRRP state"],
            ),
            (
                "source address without peers",
                &[HOLDER, &["unicast_src_ip = '192.0.2.1'"]],
                &["t.toml:10:18: notice: vrrp_instance `VI_1`: unicast_src_ip without \
                   unicast_peer: the adverts are still multicast, only sent from this address"],
            ),
            (
                "source address with peers",
                &[HOLDER, &["unicast_src_ip = '192.0.2.1'", "unicast_peer = ['192.0.2.2']"]],
                &[],
            ),
            (
                "address owner in state BACKUP",
                &[HOLDER, &["state = 'BACKUP'", "priority = 255"]],
                &["t.toml:11:12: notice: vrrp_instance `VI_1`: priority 255 makes it the address \
                   owner, which always starts as MASTER: state BACKUP has no effect"],
            ),
            (
                "address owner without a state (BACKUP)",
                &[HOLDER, &["priority = 255"]],
                &["t.toml:10:12: notice: vrrp_instance `VI_1`: priority 255 makes it the address \
                   owner, which always starts as MASTER: state BACKUP has no effect"],
            ),
            (
                "address owner in state MASTER",
                &[HOLDER, &["state = 'MASTER'", "priority = 255"]],
                &[],
            ),
            (
                "in file order",
                &[OTHER, &["unicast_src_ip = '192.0.2.1'", "priority = 255"]],
                &[
                    "t.toml:2:7: notice: 192.0.2.100:80/tcp: its VIP is in no vrrp_instance's \
                     virtual_ipaddress, so it forwards always, whatever the VRRP state",
                    "t.toml:10:18: notice: vrrp_instance `VI_2`: unicast_src_ip without \
                     unicast_peer: the adverts are still multicast, only sent from this address",
                    "t.toml:11:12: notice: vrrp_instance `VI_2`: priority 255 makes it the \
                     address owner, which always starts as MASTER: state BACKUP has no effect",
                ],
            ),
        ];
        for (name, extra, expected) in cases {
            let text = doc(&[&[VS], *extra].concat().concat());
            let config = match parse_toml(&text, Path::new("t.toml"), &FakeHost) {
                Ok(config) => config,
                Err(errors) => panic!("{name}: {errors}"),
            };
            let shown: Vec<String> = notices(&config).iter().map(ToString::to_string).collect();
            assert_eq!(shown, *expected, "{name}");
        }
    }

    /// The example of the issue that asked for health checks checks every second, as often as
    /// its checkers retry.
    #[test]
    fn health_check_example_gets_retry_notices() {
        let text = doc(&[
            "[[virtual_server]]",
            "vip = '192.0.2.100'",
            "port = 80",
            "protocol = 'tcp'",
            "interface = 'eth0'",
            "delay_loop = 1",
            "",
            "[[virtual_server.real_server]]",
            "address = '192.0.2.11'",
            "port = 80",
            "[virtual_server.real_server.tcp_check]",
            "connect_timeout = 1",
            "retry = 1",
            "delay_before_retry = 1",
            "",
            "[[virtual_server.real_server]]",
            "address = '192.0.2.12'",
            "port = 80",
            "[virtual_server.real_server.http_get]",
            "connect_timeout = 1",
            "url = [{ path = '/', status_code = 200 }]",
        ]);
        let config = parse_toml(&text, Path::new("t.toml"), &FakeHost).unwrap();
        let shown: Vec<String> = notices(&config).iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "t.toml:13:9: notice: 192.0.2.100:80/tcp: tcp_check of real server 192.0.2.11:80: \
                 retry 1 × delay_before_retry 1s is not below delay_loop 1s: a down real is \
                 detected only after up to 3s (2 attempts of up to 1s, 1s apart), longer than \
                 delay_loop",
                "t.toml:19:1: notice: 192.0.2.100:80/tcp: http_get of real server 192.0.2.12:80: \
                 retry 1 × delay_before_retry 1s is not below delay_loop 1s: a down real is \
                 detected only after up to 3s (2 attempts of up to 1s, 1s apart), longer than \
                 delay_loop",
            ]
        );
    }

    #[test]
    fn default_table_needs_656_reals_for_a_notice() {
        let mut config =
            parse_toml(&doc(&[VS, &[reals(1).as_str()]].concat()), Path::new("t.toml"), &FakeHost)
                .unwrap();
        let vs = &mut config.virtual_servers[0];
        let real = vs.real_servers[0].clone();
        vs.real_servers = vec![real.clone(); 655];
        assert!(notices(&config).is_empty());
        config.virtual_servers[0].real_servers.push(real);
        let shown: Vec<String> = notices(&config).iter().map(ToString::to_string).collect();
        // Omitted: located at the section, where the operator would add `table_size`.
        assert_eq!(
            shown,
            ["t.toml:1:1: notice: 192.0.2.100:80/tcp: table_size 65537 is below 100 × 656 real \
              servers: shares may deviate from weights by more than 1%"]
        );
    }
}

#[cfg(test)]
mod bgp_tests {
    use std::path::Path;

    use super::super::parse_toml;
    use super::super::test_support::{FakeHost, doc};
    use super::*;

    /// VIPs of a family without a session of that family, and firewall-mark services, are named.
    #[test]
    fn vips_bgp_cannot_announce() {
        let services = [
            "[[virtual_server]]",
            "vip = '192.0.2.100'",
            "port = 80",
            "interface = 'eth0'",
            "[[virtual_server]]",
            "vip = '2001:db8::100'",
            "port = 80",
            "interface = 'eth0'",
            "[[virtual_server]]",
            "fwmark = 3",
            "[bgp]",
            "local_as = 65010",
            "router_id = '192.0.2.1'",
            "[[bgp.neighbor]]",
        ];
        let v6_notice = "t.toml:6:7: notice: [2001:db8::100]:80/tcp: IPv6 VIPs are not announced \
                         over BGP: no [[bgp.neighbor]] has an IPv6 address";
        let fwmark_notice = "t.toml:10:10: notice: fwmark 3: a firewall-mark service has no VIP to announce over BGP";
        let v4_notice = "t.toml:2:7: notice: 192.0.2.100:80/tcp: IPv4 VIPs are not announced \
                         over BGP: no [[bgp.neighbor]] has an IPv4 address";
        let cases: &[(&str, &str, &[&str])] = &[
            ("IPv4 session", "198.51.100.1", &[v6_notice, fwmark_notice]),
            ("IPv6 session", "2001:db8::1", &[v4_notice, fwmark_notice]),
        ];
        for (name, neighbor, expected) in cases {
            let address = format!("address = '{neighbor}'");
            let text = doc(&[&services[..], &[address.as_str(), "remote_as = 65000"]].concat());
            let config = parse_toml(&text, Path::new("t.toml"), &FakeHost).unwrap();
            // The other notices (a firewall-mark service runs on IPVS) are not this test's.
            let shown: Vec<String> = notices(&config)
                .iter()
                .map(ToString::to_string)
                .filter(|n| n.contains("BGP"))
                .collect();
            assert_eq!(shown, *expected, "{name}");
        }
    }
}
