//! The native TOML text of a model: what `lb convert` prints. Every setting that differs from its
//! default is written, with the native key names (docs/config.md), in the reference's order:
//! `[dataplane]`, the virtual servers with their real servers and checkers, then the VRRP
//! instances, scripts and sync groups, and `[bgp]` with its neighbors. Nothing else is written (no comments), and the same model
//! always gives the same text; reading the text back gives the same model (but for where things
//! were written).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use super::bgp::{BgpConfig, BgpNeighbor};
use super::health::HealthCheck;
use super::model::{Config, DEFAULT_WEIGHT, DataplaneSettings, RealServer, VirtualServer};
use super::toml::bgp::{BGP_SECTION, NEIGHBOR_SECTION};
use super::toml::dataplane::DATAPLANE;
use super::toml::flow_sync::{FLOW_SYNC, FLOW_SYNC_SECTION, FlowSync};
use super::toml::health::{Checker, REAL_HEALTH, SERVICE_HEALTH, checker_section};
use super::toml::real_server::{REAL_SERVER, REAL_SERVER_SECTION, SORRY_SERVER_SECTION};
use super::toml::schema::emit_settings;
use super::toml::virtual_server::{VIRTUAL_SERVER, VIRTUAL_SERVER_SECTION};
use super::toml::vrrp::{instance_emit, script_emit, sync_group_emit};
use super::vrrp::{VrrpInstance, VrrpScript, VrrpSyncGroup};

/// The native configuration text of `config`; empty for a director with nothing to do.
pub fn emit(config: &Config) -> String {
    let mut out = Out::default();
    // A top-level key: before the first table, or TOML would put it inside that table.
    if let Some(s) = &config.script_user {
        let value = match &s.group {
            Some(g) => format!("{}:{g}", s.user),
            None => s.user.clone(),
        };
        out.key("script_user", string(&value));
    }
    dataplane(&mut out, &config.dataplane);
    for vs in &config.virtual_servers {
        virtual_server(&mut out, vs);
    }
    for instance in &config.vrrp.instances {
        vrrp_instance(&mut out, instance);
    }
    for script in &config.vrrp.scripts {
        vrrp_script(&mut out, script);
    }
    for group in &config.vrrp.sync_groups {
        vrrp_sync_group(&mut out, group);
    }
    if let Some(settings) = &config.bgp {
        bgp(&mut out, settings);
    }
    if let Some(settings) = &config.flow_sync {
        flow_sync(&mut out, settings);
    }
    out.text
}

/// `[flow_sync]` (keepalived's `lvs_sync_daemon`; its VRRP instance has no TOML key).
fn flow_sync(out: &mut Out, s: &super::flow_sync::FlowSyncConfig) {
    out.section(FLOW_SYNC);
    out.text.push_str(&FLOW_SYNC_SECTION.emit(&FlowSync::of(s), &FlowSync::defaults(s)));
}

/// The text being written: sections separated by a blank line, `key = value` lines.
#[derive(Default)]
struct Out {
    text: String,
}

impl Out {
    /// Starts a section (`[dataplane]`, `[[virtual_server]]`).
    fn section(&mut self, header: &str) {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(header);
        self.text.push('\n');
    }

    fn key(&mut self, name: &str, value: impl AsRef<str>) {
        let _ = writeln!(self.text, "{name} = {}", value.as_ref());
    }
}

fn bgp(out: &mut Out, settings: &BgpConfig) {
    out.section("[bgp]");
    let default = BgpConfig::new(settings.local_as, settings.location);
    out.text.push_str(&BGP_SECTION.emit(settings, &default));
    for neighbor in &settings.neighbors {
        out.section("[[bgp.neighbor]]");
        let default = BgpNeighbor::at(neighbor.location);
        out.text.push_str(&NEIGHBOR_SECTION.emit(neighbor, &default));
    }
}

/// A TOML basic string (double quotes, `"`, `\\` and control characters escaped), as `toml`'s
/// writer escapes it.
pub(super) fn string(text: &str) -> String {
    use toml_writer::{TomlStringBuilder, WriteTomlValue as _};
    let mut out = String::with_capacity(text.len() + 2);
    // Writing into a String cannot fail.
    let _ = TomlStringBuilder::new(text).as_basic().write_toml_value(&mut out);
    out
}

pub(super) fn integer<T: ToString>(n: &T) -> String {
    n.to_string()
}

pub(super) fn boolean(b: &bool) -> String {
    b.to_string()
}

pub(super) fn address(a: &IpAddr) -> String {
    string(&a.to_string())
}

/// Seconds: an integer when whole, else a float with as many decimals as needed (nanoseconds at
/// most), which reads back to the same duration.
pub(super) fn seconds(d: &Duration) -> String {
    match d.subsec_nanos() {
        0 => d.as_secs().to_string(),
        nanos => {
            let fraction = format!("{nanos:09}");
            format!("{}.{}", d.as_secs(), fraction.trim_end_matches('0'))
        }
    }
}

/// `[a, b]`.
pub(super) fn array<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    let items: Vec<String> = items.iter().map(show).collect();
    format!("[{}]", items.join(", "))
}

/// `{ a = 1, b = "x" }`.
pub(super) fn inline_table(pairs: &[(&str, String)]) -> String {
    let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    format!("{{ {} }}", pairs.join(", "))
}

fn dataplane(out: &mut Out, settings: &DataplaneSettings) {
    let table = DATAPLANE.emit(settings, &DataplaneSettings::default());
    if !table.is_empty() {
        out.section("[dataplane]");
        out.text.push_str(&table);
    }
}

fn virtual_server(out: &mut Out, vs: &VirtualServer) {
    out.section(VIRTUAL_SERVER);
    out.text.push_str(&VIRTUAL_SERVER_SECTION.emit(vs, vs));
    out.text.push_str(&emit_settings(SERVICE_HEALTH, vs, vs));
    if let Some(sorry) = &vs.sorry_server {
        let pairs = SORRY_SERVER_SECTION.emit_pairs(sorry, &server_defaults(vs, sorry));
        out.key("sorry_server", inline_table(&pairs));
    }
    for rs in &vs.real_servers {
        real_server(out, vs, rs);
    }
}

/// A persistence granularity as keepalived writes it: a netmask for IPv4, a prefix length for
/// IPv6.
pub(super) fn granularity(vip: IpAddr, prefix: u8) -> String {
    match vip {
        IpAddr::V4(_) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            string(&std::net::Ipv4Addr::from(mask).to_string())
        }
        IpAddr::V6(_) => prefix.to_string(),
    }
}

fn real_server(out: &mut Out, vs: &VirtualServer, rs: &RealServer) {
    out.section(REAL_SERVER);
    out.text.push_str(&REAL_SERVER_SECTION.emit(rs, &server_defaults(vs, rs)));
    // The virtual server's `inhibit_on_failure` is the default.
    let mut default = server_defaults(vs, rs);
    default.health.inhibit_on_failure = vs.health.inhibit_on_failure;
    out.text.push_str(&emit_settings(REAL_HEALTH, rs, &default));
    for check in &rs.health.checks {
        checker(out, check);
    }
}

/// What a real or sorry server of `vs` has unless written: the service's port, the default weight.
fn server_defaults(vs: &VirtualServer, rs: &RealServer) -> RealServer {
    RealServer { port: vs.port, weight: DEFAULT_WEIGHT, ..rs.clone() }
}

fn checker(out: &mut Out, check: &HealthCheck) {
    let kind = check.kind.native_key();
    out.section(&format!("[[virtual_server.real_server.{kind}]]"));
    if let Some(section) = checker_section(kind) {
        let checker = Checker::of(check);
        out.text.push_str(&section.emit(&checker, &checker));
    }
}

fn vrrp_instance(out: &mut Out, instance: &VrrpInstance) {
    out.section("[[vrrp_instance]]");
    out.text.push_str(&instance_emit(instance));
}

fn vrrp_script(out: &mut Out, script: &VrrpScript) {
    out.section("[[vrrp_script]]");
    out.text.push_str(&script_emit(script));
}

fn vrrp_sync_group(out: &mut Out, group: &VrrpSyncGroup) {
    out.section("[[vrrp_sync_group]]");
    out.text.push_str(&sync_group_emit(group));
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::keepalived::{self, Format};
    use super::super::test_support::AnyHost;
    use super::super::{Config, parse_toml};
    use super::*;

    /// The model as JSON without what says where it was read: `source` and every `location`
    /// (the other locations are not serialised).
    fn without_locations(config: &Config) -> serde_json::Value {
        fn strip(value: &mut serde_json::Value) {
            match value {
                serde_json::Value::Object(map) => {
                    map.remove("location");
                    map.values_mut().for_each(strip);
                }
                serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
                _ => {}
            }
        }
        let mut json = serde_json::to_value(config).unwrap();
        if let serde_json::Value::Object(map) = &mut json {
            map.remove("source");
        }
        strip(&mut json);
        json
    }

    /// `parse(emit(model))` is the model, and emitting is stable.
    fn assert_round_trip(name: &str, config: &Config) {
        let text = emit(config);
        let again = parse_toml(&text, Path::new("emitted.toml"), &AnyHost)
            .unwrap_or_else(|e| panic!("{name}: the emitted text is invalid:\n{e}\n{text}"));
        assert_eq!(
            without_locations(&again),
            without_locations(config),
            "{name}: the emitted text means something else:\n{text}"
        );
        assert_eq!(emit(&again), text, "{name}: emitting is not stable");
    }

    /// The code blocks of `lang` in a Markdown document.
    fn blocks<'d>(doc: &'d str, lang: &str) -> Vec<&'d str> {
        doc.split(&format!("```{lang}\n"))
            .skip(1)
            .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
            .collect()
    }

    #[test]
    fn keepalived_corpus_round_trips() {
        let mut files: Vec<(String, &str)> = [
            ("classic-dr.conf", include_str!("keepalived/fixtures/classic-dr.conf")),
            ("fwmark.conf", include_str!("keepalived/fixtures/fwmark.conf")),
            ("groups.conf", include_str!("keepalived/fixtures/groups.conf")),
            ("misc-dynamic.conf", include_str!("keepalived/fixtures/misc-dynamic.conf")),
            ("nbsp.conf", include_str!("keepalived/fixtures/nbsp.conf")),
            ("old-keywords.conf", include_str!("keepalived/fixtures/old-keywords.conf")),
            ("vrrp-blocks.conf", include_str!("keepalived/fixtures/vrrp-blocks.conf")),
            ("vrrp-full.conf", include_str!("keepalived/fixtures/vrrp-full.conf")),
        ]
        .into_iter()
        .map(|(name, text)| (name.to_owned(), text))
        .collect();
        let docs = blocks(include_str!("../../../docs/keepalived.md"), "keepalived");
        assert!(!docs.is_empty());
        files.extend(docs.into_iter().enumerate().map(|(i, b)| (format!("keepalived.md #{i}"), b)));
        for (name, text) in files {
            let loaded = keepalived::parse(text, Path::new(&name), &AnyHost, false)
                .unwrap_or_else(|e| panic!("{name}:\n{e}"));
            assert_eq!(loaded.format, Format::Keepalived);
            assert!(
                !loaded.config.virtual_servers.is_empty()
                    || !loaded.config.vrrp.instances.is_empty()
            );
            assert_round_trip(&name, &loaded.config);
        }
    }

    #[test]
    fn toml_examples_round_trip() {
        let mut files: Vec<(String, &str)> = vec![
            ("demo.toml".to_owned(), include_str!("../../../examples/demo.toml")),
            ("two-reals.toml".to_owned(), include_str!("../../../examples/two-reals.toml")),
        ];
        let docs = blocks(include_str!("../../../docs/config.md"), "toml");
        assert!(docs.len() > 3);
        files.extend(docs.into_iter().enumerate().map(|(i, b)| (format!("config.md #{i}"), b)));
        for (name, text) in files {
            let config = parse_toml(text, Path::new(&name), &AnyHost)
                .unwrap_or_else(|e| panic!("{name}:\n{e}"));
            assert_round_trip(&name, &config);
        }
    }

    /// `[bgp]` round-trips, the password (not in the JSON the other tests compare) included.
    #[test]
    fn bgp_round_trips() {
        let cases = [
            "[bgp]\nlocal_as = 65010\n[[bgp.neighbor]]\naddress = \"198.51.100.1\"\nremote_as = 1\n",
            "[bgp]\nlocal_as = 4200000000\nrouter_id = \"192.0.2.1\"\nhold_time = 0\nmed = 10\n\
             communities = [\"65010:100\", \"0:65535\"]\nannounce_delay = 2.5\nwithdraw_grace = 0\n\
             [[bgp.neighbor]]\naddress = \"2001:db8::1\"\nremote_as = 65000\nbfd = false\n\
             password = \"s3cret with space\"\n[[bgp.neighbor]]\naddress = \"198.51.100.1\"\n\
             remote_as = 65001\n",
            "bgp = { local_as = 1, speaker = \"external\", export_table = 100 }\n",
        ];
        let strip = |config: &Config| {
            config.bgp.clone().map(|mut bgp| {
                bgp.location = Default::default();
                bgp.key_locations = Default::default();
                for n in &mut bgp.neighbors {
                    n.location = Default::default();
                    n.key_locations = Default::default();
                }
                bgp
            })
        };
        for text in cases {
            let config = parse_toml(text, Path::new("bgp.toml"), &AnyHost).unwrap();
            assert!(config.bgp.is_some());
            let emitted = emit(&config);
            let again = parse_toml(&emitted, Path::new("emitted.toml"), &AnyHost)
                .unwrap_or_else(|e| panic!("{e}\n{emitted}"));
            assert_eq!(strip(&again), strip(&config), "{emitted}");
            assert_round_trip(text, &config);
        }
    }

    /// `[flow_sync]` round-trips, defaults left out.
    /// Every key of a virtual server's own description, written back as read.
    #[test]
    fn virtual_server_round_trips() {
        let cases = [
            "[[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\nprotocol = \"udp\"\n\
             interface = \"eth0\"\nlvs_sched = \"wrr\"\ntable_size = 251\n\
             persistence_timeout = 30\npersistence_granularity = \"255.255.255.0\"\n\
             lb_kind = \"TUN\"\ntun_type = \"gue\"\ntun_port = 6080\n\
             tun_source = \"192.0.2.1\"\nops = true\n",
            "[[virtual_server]]\nfwmark = 7\nip_family = \"inet6\"\npersistence_timeout = 1\n\
             persistence_granularity = 64\n[[virtual_server.real_server]]\n\
             address = \"2001:db8::11\"\nport = 8080\n",
            "[[virtual_server]]\nfwmark = 8\nip_family = \"inet6\"\n",
        ];
        for text in cases {
            let config = parse_toml(text, Path::new("vs.toml"), &AnyHost)
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_round_trip(text, &config);
        }
    }

    #[test]
    fn flow_sync_round_trips() {
        let cases = [
            ("[flow_sync]\ninterface = \"eth1\"\n", "[flow_sync]\ninterface = \"eth1\"\n"),
            (
                "[flow_sync]\ninterface = \"eth1\"\nsync_id = 5\ngroup = \"ff02::81\"\nport = 8849\n\
                 ttl = 2\nmax_len = 9000\n",
                "[flow_sync]\ninterface = \"eth1\"\nsync_id = 5\ngroup = \"ff02::81\"\nport = 8849\n\
                 ttl = 2\nmax_len = 9000\n",
            ),
        ];
        for (text, want) in cases {
            let config = parse_toml(text, Path::new("sync.toml"), &AnyHost).unwrap();
            assert_eq!(emit(&config), want);
        }
    }

    #[test]
    fn nothing_to_do_is_an_empty_file() {
        let config = parse_toml("", Path::new("empty.toml"), &AnyHost).unwrap();
        assert_eq!(emit(&config), "");
    }

    #[test]
    fn values_are_written_as_toml_reads_them() {
        let cases: &[(&str, String)] = &[
            ("plain", string("/usr/bin/pgrep -x nginx")),
            ("quote and backslash", string(r#"say "hi" \ bye"#)),
            ("control characters", string("a\tb\nc\u{1}")),
        ];
        let expected =
            [r#""/usr/bin/pgrep -x nginx""#, r#""say \"hi\" \\ bye""#, r#""a\tb\nc\u0001""#];
        for ((name, got), want) in cases.iter().zip(expected) {
            assert_eq!(got, want, "{name}");
        }
        let durations = [
            (Duration::from_secs(5), "5"),
            (Duration::from_millis(500), "0.5"),
            (Duration::from_micros(1), "0.000001"),
            (Duration::new(86_399, 999_999_999), "86399.999999999"),
        ];
        for (duration, text) in durations {
            assert_eq!(seconds(&duration), text);
            // As the TOML front end reads a float.
            let read = Duration::try_from_secs_f64(text.parse::<f64>().unwrap()).unwrap();
            assert_eq!(read, duration, "{text}");
        }
        assert_eq!(granularity("192.0.2.1".parse().unwrap(), 24), "\"255.255.255.0\"");
        assert_eq!(granularity("192.0.2.1".parse().unwrap(), 0), "\"0.0.0.0\"");
        assert_eq!(granularity("2001:db8::1".parse().unwrap(), 64), "64");
    }

    /// A keepalived.conf with VRRP and every kind of checker, as `lb convert` writes it.
    #[test]
    fn a_converted_file_reads_like_the_reference() {
        let text = "\
global_defs {
    vrrp_version 3
    vrrp_skip_check_adv_addr
}
vrrp_script chk_nginx {
    script \"/usr/bin/pgrep -x nginx\"
    interval 2
    weight -20
}
vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 0.5
    virtual_ipaddress {
        192.0.2.100/24
    }
    track_script {
        chk_nginx
    }
    lower_prio_no_advert
}
virtual_server 192.0.2.100 443 {
    delay_loop 10
    lb_algo wrr
    lb_kind DR
    protocol TCP
    persistence_timeout 300
    persistence_granularity 255.255.255.0
    sorry_server 192.0.2.200 443
    real_server 192.0.2.11 443 {
        weight 2
        SSL_GET {
            url {
                path /healthz
                status_code 200
            }
            virtualhost www.example.com
            enable_sni
            connect_timeout 3
        }
        MISC_CHECK {
            misc_path \"/usr/local/bin/check 192.0.2.11\"
            misc_dynamic
        }
    }
}
virtual_server 192.0.2.100 53 {
    lb_kind DR
    protocol UDP
    real_server 192.0.2.21 53 {
        DNS_CHECK {
            type A
            name example.org
        }
        UDP_CHECK {
            payload 0a0b
            require_reply
        }
    }
}
";
        let loaded = keepalived::parse(text, Path::new("keepalived.conf"), &AnyHost, false)
            .unwrap_or_else(|e| panic!("{e}"));
        let expected = r#"[[virtual_server]]
vip = "192.0.2.100"
port = 443
interface = "eth0"
lb_algo = "wrr"
persistence_timeout = 300
persistence_granularity = "255.255.255.0"
delay_loop = 10
sorry_server = { address = "192.0.2.200" }

[[virtual_server.real_server]]
address = "192.0.2.11"
weight = 2

[[virtual_server.real_server.ssl_get]]
connect_timeout = 3
delay_before_retry = 3
warmup = 10
virtualhost = "www.example.com"
sni = "www.example.com"
url = [{ path = "/healthz", status_code = 200 }]

[[virtual_server.real_server.misc_check]]
retry = 0
warmup = 10
misc_path = "/usr/local/bin/check 192.0.2.11"
misc_timeout = 10
misc_dynamic = true

[[virtual_server]]
vip = "192.0.2.100"
port = 53
protocol = "udp"
interface = "eth0"
lb_algo = "wlc"

[[virtual_server.real_server]]
address = "192.0.2.21"

[[virtual_server.real_server.dns_check]]
retry = 3
delay_before_retry = 60
warmup = 60
name = "example.org"
type = "A"

[[virtual_server.real_server.udp_check]]
warmup = 60
payload = "0x0a0b"
require_reply = true

[[vrrp_instance]]
name = "VI_1"
state = "MASTER"
interface = "eth0"
virtual_router_id = 51
priority = 150
advert_int = 0.5
version = 3
virtual_ipaddress = ["192.0.2.100/24"]
track_script = ["chk_nginx"]
lower_prio_no_advert = true
skip_check_adv_addr = true

[[vrrp_script]]
name = "chk_nginx"
script = "/usr/bin/pgrep -x nginx"
interval = 2
weight = -20
"#;
        assert_eq!(emit(&loaded.config), expected);
        assert_round_trip("converted", &loaded.config);
    }
}
