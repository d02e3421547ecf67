//! Scenario tests of the keepalived front end: a corpus of realistic files (fixtures/), every
//! error class at its exact `FILE:LINE:COL`, includes, warnings and format detection.

use std::path::{Path, PathBuf};

use super::super::{ConfigErrors, HostView};
use super::*;
use crate::config::{FormatChoice, Strictness};

/// keepalived.conf through the front door, as `--format keepalived`.
fn load(path: &Path, host: &dyn HostView, strict: bool) -> Result<Loaded, ConfigErrors> {
    crate::config::load(path, FormatChoice::Keepalived, host, strict.into())
}

/// Either format, told apart by content, as `--format auto`.
fn load_any(path: &Path, host: &dyn HostView, strict: bool) -> Result<Loaded, ConfigErrors> {
    crate::config::load(path, FormatChoice::Auto, host, strict.into())
}

fn load_any_strict(path: &Path, host: &dyn HostView) -> Result<Loaded, ConfigErrors> {
    load_any(path, host, true)
}

/// A host with the interfaces the fixtures use, whose addresses are `192.0.2.1` and `2001:db8::1`.
struct Host;

impl HostView for Host {
    fn interface_exists(&self, name: &str) -> bool {
        matches!(name, "eth0" | "eth1" | "bond0.20")
    }

    fn own_addresses(&self) -> std::io::Result<Vec<std::net::IpAddr>> {
        Ok(vec![[192, 0, 2, 1].into(), [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1].into()])
    }
}

const SOURCE: &str = "keepalived.conf";

fn run(text: &str) -> Result<Loaded, ConfigErrors> {
    parse(text, Path::new(SOURCE), &Host, false)
}

/// A document from its lines, so that line `n` is `lines[n - 1]`.
fn doc(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn shown<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

fn errors_of(text: &str) -> Vec<String> {
    match run(text) {
        Ok(loaded) => panic!("expected errors, got {:#?}", loaded.config),
        Err(errors) => shown(&errors.0),
    }
}

fn loaded(text: &str) -> Loaded {
    run(text).unwrap_or_else(|errors| panic!("{errors}\nin:\n{text}"))
}

/// One line per virtual server, real server and checker: what the model says, compactly.
fn summary(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for vs in &config.virtual_servers {
        let persistence = vs.persistence_timeout.map(|t| t.as_secs());
        let h = &vs.health;
        out.push(format!(
            "{vs} on {} {} persistence {persistence:?}/{} delay_loop {:?} alpha {} omega {} \
             quorum {}±{} up {:?} down {:?} inhibit {}",
            vs.interface,
            vs.lb_algo,
            vs.persistence_prefix,
            h.delay_loop,
            h.alpha,
            h.omega,
            h.quorum,
            h.hysteresis,
            h.quorum_up,
            h.quorum_down,
            h.inhibit_on_failure,
        ));
        for rs in &vs.real_servers {
            let h = &rs.health;
            out.push(format!(
                "  -> {rs} weight {} inhibit {} up {:?} down {:?}",
                rs.weight, h.inhibit_on_failure, h.notify_up, h.notify_down
            ));
            for check in &h.checks {
                out.push(format!(
                    "     {} {:?} timeout {:?} ip {:?} port {:?} bindto {:?} retry {} after {:?} \
                     warmup {:?}",
                    check.kind.name(),
                    check.kind,
                    check.connect_timeout,
                    check.connect_ip,
                    check.connect_port,
                    check.bindto,
                    check.retry,
                    check.delay_before_retry,
                    check.warmup,
                ));
            }
        }
        if let Some(sorry) = &vs.sorry_server {
            out.push(format!("  sorry {sorry}"));
        }
    }
    out
}

/// A scratch directory for files that include each other: its path, and the guard that removes
/// it when dropped.
struct TempDir {
    path: PathBuf,
    _guard: tempfile::TempDir,
}

impl TempDir {
    fn new(name: &str) -> TempDir {
        let guard = crate::testutil::scratch_dir(&format!("lb-kconf-{name}-"));
        TempDir { path: guard.path().to_owned(), _guard: guard }
    }

    fn write(&self, name: &str, lines: &[&str]) -> PathBuf {
        let path = self.path.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, doc(lines)).unwrap();
        path
    }

    /// `shown` with this directory's prefix cut, so expectations read `main.conf:3:1: ...`.
    fn strip(&self, lines: Vec<String>) -> Vec<String> {
        let prefix = format!("{}/", self.path.display());
        lines.into_iter().map(|l| l.replace(&prefix, "")).collect()
    }
}

fn at(line: u32, col: u32) -> Location {
    Location::new(line, col)
}

/// NAT, TUN and keepalived's implied NAT fill the model (IPVS serves them); thresholds and `ops`
/// too.
#[test]
fn ipvs_forwarding_methods_fill_the_model() {
    use super::super::model::{LbKind, Tunnel};
    let text = [
        "virtual_server 192.0.2.100 80 {",
        "    lb_interface eth0",
        "    protocol TCP",
        "    real_server 192.0.2.11 8080 {",
        "        uthreshold 100",
        "        lthreshold 10",
        "    }",
        "    real_server 192.0.2.12 80 {",
        "        lvs_method TUN type gue port 6080",
        "    }",
        "}",
        "virtual_server 192.0.2.100 53 {",
        "    lb_interface eth0",
        "    protocol UDP",
        "    lb_kind TUN type gre",
        "    ops",
        "    real_server 192.0.2.11 53 {",
        "    }",
        "}",
    ]
    .map(|l| format!("{l}\n"))
    .concat();
    let loaded = loaded(&text);
    let [tcp, udp] = &loaded.config.virtual_servers[..] else { panic!("two services") };
    assert_eq!(tcp.forwarding.lb_kind, LbKind::Nat, "keepalived's default");
    assert_eq!(tcp.real_servers[0].port, 8080, "NAT may change the port");
    let f = tcp.real_servers[0].forwarding;
    assert_eq!((f.uthreshold, f.lthreshold), (100, 10));
    assert_eq!(
        tcp.real_servers[1].forwarding.lb_kind,
        Some(LbKind::Tun(Tunnel::Gue { port: 6080 }))
    );
    assert_eq!(udp.forwarding.lb_kind, LbKind::Tun(Tunnel::Gre));
    assert!(udp.forwarding.one_packet);
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        warnings.iter().any(|w| w.contains(
            "1:1: warning: no `lb_kind` (or `lvs_method`) for this virtual_server or one of its \
             real servers: keepalived then uses NAT, and so does lb, on the IPVS dataplane"
        )),
        "{warnings:#?}"
    );
}

/// A group of marks only needs no `protocol` (IPVS tells marks apart by family alone), so no
/// warning about keepalived's UDP default.
#[test]
fn a_group_of_marks_needs_no_protocol() {
    let text = doc(&[
        "virtual_server_group MARKS {",
        "    fwmark 1",
        "    fwmark 2 inet",
        "}",
        "virtual_server group MARKS {",
        "    lb_kind DR",
        "    real_server 192.0.2.11 80 {",
        "    }",
        "}",
    ]);
    let loaded = loaded(&text);
    assert!(loaded.warnings.is_empty(), "{:?}", shown(&loaded.warnings));
    assert_eq!(shown(&loaded.config.virtual_servers), ["fwmark 1", "fwmark 2"]);
}

/// The classic two-VIP DR file, to the last location: the whole model.
#[test]
fn classic_dr_file_parses_into_the_model() {
    use super::super::health::{
        CheckKind, HealthCheck, HttpCheck, RealHealth, ServiceHealth, UrlCheck,
    };
    use super::super::model::{
        DataplaneSettings, LbKind, RealServer, ServiceForwarding, Spans, VirtualServer,
    };
    use std::time::Duration;

    let source = Path::new("/etc/keepalived/keepalived.conf");
    let loaded = parse(include_str!("fixtures/classic-dr.conf"), source, &Host, false)
        .unwrap_or_else(|e| panic!("{e}"));
    let secs = Duration::from_secs;
    let url = |path: &str, status_code, digest: Option<&str>| UrlCheck {
        path: path.to_owned(),
        status_code,
        digest: digest.map(str::to_owned),
    };
    let digest = Some("9b3a0c85a887a256d6939da88aabd8cd");
    let check = |kind, timeout, port, retry, delay_before_retry, warmup, location| HealthCheck {
        kind,
        connect_timeout: secs(timeout),
        connect_ip: None,
        connect_port: port,
        bindto: None,
        retry,
        delay_before_retry: secs(delay_before_retry),
        warmup: Some(secs(warmup)),
        rise: 1,
        through_vip: false,
        location,
    };
    let real = |address: &str, port, weight, line, checks: Vec<(HealthCheck, Location)>| {
        let (checks, retry_at): (Vec<_>, Vec<_>) = checks.into_iter().unzip();
        RealServer {
            forwarding: Default::default(),
            address: address.parse().unwrap(),
            port,
            weight,
            location: at(line, 5),
            key_locations: Spans::at_section(at(line, 5))
                .with("address", at(line, 17))
                .with("port", at(line, 28))
                .with("weight", at(line + 1, 16)),
            check_locations: checks
                .iter()
                .zip(retry_at)
                .map(|(c, retry)| Spans::at_section(c.location).with("retry", retry))
                .collect(),
            health: RealHealth { checks, ..RealHealth::default() },
        }
    };
    let http = |urls| CheckKind::Http(HttpCheck { urls, virtualhost: None, sni: None });
    let expected = vec![
        VirtualServer {
            forwarding: ServiceForwarding { lb_kind: LbKind::Dr, ..Default::default() },
            vip: "192.0.2.100".parse().unwrap(),
            port: 80,
            lb_algo: "wrr".to_owned(),
            persistence_timeout: Some(secs(50)),
            persistence_prefix: 32,
            real_servers: vec![
                real(
                    "192.0.2.11",
                    80,
                    3,
                    38,
                    vec![(
                        check(
                            http(vec![
                                url("/healthz", None, digest),
                                url("/status", Some(200), None),
                            ]),
                            3,
                            None,
                            3,
                            3,
                            6,
                            at(40, 9),
                        ),
                        at(50, 19),
                    )],
                ),
                real(
                    "192.0.2.12",
                    80,
                    1,
                    54,
                    vec![(
                        check(
                            http(vec![url("/healthz", None, digest)]),
                            3,
                            None,
                            1,
                            3,
                            6,
                            at(56, 9),
                        ),
                        at(56, 9),
                    )],
                ),
            ],
            health: ServiceHealth { delay_loop: secs(6), ..ServiceHealth::default() },
            location: at(31, 1),
            key_locations: Spans::at_section(at(31, 1))
                .with("vip", at(31, 16))
                .with("port", at(31, 28))
                .with("protocol", at(36, 14))
                // The `dev` of the VIP in VI_WEB's virtual_ipaddress.
                .with("interface", at(26, 28))
                .with("lb_algo", at(33, 13))
                .with("persistence_timeout", at(35, 25))
                .with("delay_loop", at(32, 16))
                .with("lb_kind", at(34, 13)),
            ..crate::fixture::virtual_server("192.0.2.100", 80, at(31, 1))
        },
        VirtualServer {
            forwarding: ServiceForwarding { lb_kind: LbKind::Dr, ..Default::default() },
            vip: "192.0.2.101".parse().unwrap(),
            port: 443,
            lb_algo: "rr".to_owned(),
            persistence_prefix: 32,
            real_servers: vec![
                real(
                    "192.0.2.21",
                    443,
                    1,
                    73,
                    vec![(check(CheckKind::Tcp, 2, Some(443), 1, 1, 10, at(75, 9)), at(75, 9))],
                ),
                real(
                    "192.0.2.22",
                    443,
                    1,
                    80,
                    vec![(check(CheckKind::Tcp, 2, None, 1, 1, 10, at(82, 9)), at(82, 9))],
                ),
            ],
            sorry_server: Some(RealServer {
                key_locations: Spans::at_section(at(71, 5))
                    .with("address", at(71, 18))
                    .with("port", at(71, 30)),
                ..crate::fixture::real_server("192.0.2.200", 443, at(71, 5))
            }),
            health: ServiceHealth { delay_loop: secs(10), ..ServiceHealth::default() },
            location: at(66, 1),
            key_locations: Spans::at_section(at(66, 1))
                .with("vip", at(66, 16))
                .with("port", at(66, 28))
                .with("protocol", at(70, 14))
                // VI_WEB's `interface`: this VIP has no `dev`.
                .with("interface", at(17, 15))
                .with("lb_algo", at(68, 13))
                .with("delay_loop", at(67, 16))
                .with("lb_kind", at(69, 13)),
            ..crate::fixture::virtual_server("192.0.2.101", 443, at(66, 1))
        },
    ];
    // Field by field: the model has sections a keepalived.conf does not fill.
    assert_eq!(loaded.config.virtual_servers, expected);
    assert_eq!(loaded.config.source, source);
    assert_eq!(loaded.config.dataplane, DataplaneSettings::default());
    assert_eq!(loaded.format, Format::Keepalived);
    let file = "/etc/keepalived/keepalived.conf";
    let warnings: Vec<String> = [
        "5:4: warning: `notification_email`: accepted, not acted on (lb sends no e-mail)",
        "9:4: warning: `notification_email_from`: accepted, not acted on (lb sends no e-mail)",
        "10:4: warning: `smtp_server`: accepted, not acted on (lb sends no e-mail)",
        "11:4: warning: `smtp_connect_timeout`: accepted, not acted on (lb sends no e-mail)",
        "12:4: warning: `router_id`: accepted, not acted on (it names this director only in \
         keepalived's e-mail and SNMP)",
        "26:33: warning: `label eth0:1` of virtual address 192.0.2.100/24: accepted, not acted \
         on (lb adds virtual addresses with the kernel's defaults)",
    ]
    .iter()
    .map(|w| format!("{file}:{w}"))
    .collect();
    assert_eq!(shown(&loaded.warnings), warnings);
    let notices: Vec<String> = [
        "33:13: notice: 192.0.2.100:80/tcp: scheduler `wrr` runs as weighted Maglev (`mh`) on the \
         XDP dataplane",
        "50:19: notice: 192.0.2.100:80/tcp: http_get of real server 192.0.2.11:80: retry 3 × \
         delay_before_retry 3s is not below delay_loop 6s: a down real is detected only after up \
         to 21s (4 attempts of up to 3s, 3s apart), longer than delay_loop",
        "68:13: notice: 192.0.2.101:443/tcp: scheduler `rr` runs as weighted Maglev (`mh`) on the \
         XDP dataplane",
    ]
    .iter()
    .map(|n| format!("{file}:{n}"))
    .collect();
    assert_eq!(shown(&loaded.notices), notices);
}

/// Every VRRP setting lb acts on, with keepalived's defaults from `global_defs`: the whole VRRP
/// part of the model, and where validation would point.
#[test]
fn vrrp_file_parses_into_the_model() {
    use super::super::vrrp::{
        TrackInterface, TrackScript, VirtualAddress, VrrpConfig, VrrpInstance, VrrpScript,
        VrrpSyncGroup,
    };
    use std::time::Duration;

    let loaded = parse(include_str!("fixtures/vrrp-full.conf"), Path::new(SOURCE), &Host, false)
        .unwrap_or_else(|e| panic!("{e}"));
    let secs = Duration::from_secs;
    let vip = |text: &str, prefix| VirtualAddress { address: text.parse().unwrap(), prefix };
    let command = |text: &str| Some(text.to_owned());
    let web = VrrpInstance {
        name: "VI_WEB".to_owned(),
        initial_master: true,
        virtual_router_id: 51,
        priority: 150,
        advert_int: Duration::from_millis(500),
        // global_defs' vrrp_version.
        version: 3,
        // virtual_ipaddress_excluded's too.
        virtual_ipaddress: vec![
            vip("192.0.2.100", 24),
            vip("192.0.2.101", 32),
            vip("192.0.2.102", 24),
        ],
        preempt: false,
        preempt_delay: secs(30),
        unicast_peer: vec!["192.0.2.2".parse().unwrap()],
        unicast_src_ip: Some("192.0.2.1".parse().unwrap()),
        track_interface: vec![
            TrackInterface { name: "eth1".to_owned(), weight: -30 },
            TrackInterface { name: "bond0.20".to_owned(), weight: 0 },
        ],
        track_script: vec![
            TrackScript { script: "chk_nginx".to_owned(), weight: None },
            TrackScript { script: "chk_disk".to_owned(), weight: Some(10) },
        ],
        notify_master: command("/etc/keepalived/notify.sh master"),
        notify_backup: command("/etc/keepalived/backup.sh"),
        notify_fault: command("/etc/keepalived/fault.sh"),
        notify_stop: command("/etc/keepalived/stop.sh"),
        notify: command("/etc/keepalived/notify.sh"),
        garp_master_repeat: 10,
        garp_master_refresh_delay: secs(2),
        location: at(23, 1),
        ..crate::fixture::vrrp_instance("VI_WEB", 51, &[])
    };
    let v2 = VrrpInstance {
        name: "VI_V2".to_owned(),
        // global_defs' default_interface.
        interface: "eth1".to_owned(),
        virtual_router_id: 52,
        advert_int: secs(1),
        version: 2,
        virtual_ipaddress: vec![vip("198.51.100.10", 32)],
        unicast_peer: vec![],
        // The first 8 bytes, as keepalived.
        auth_pass: command("longpass"),
        track_interface: vec![],
        track_script: vec![],
        // global_defs' vrrp_garp_master_repeat and vrrp_garp_master_delay.
        garp_master_repeat: 3,
        garp_master_refresh_delay: secs(10),
        location: at(59, 1),
        ..crate::fixture::vrrp_instance("VI_V2", 52, &[])
    };
    let v6 = VrrpInstance {
        name: "VI_6".to_owned(),
        initial_master: true,
        interface: "eth0".to_owned(),
        virtual_router_id: 51,
        // keepalived: `state MASTER` without a priority is the address owner.
        priority: 255,
        version: 3,
        virtual_ipaddress: vec![vip("2001:db8::100", 64)],
        auth_pass: None,
        location: at(71, 1),
        ..v2.clone()
    };
    let expected = VrrpConfig {
        instances: vec![web, v2, v6],
        scripts: vec![
            VrrpScript {
                name: "chk_nginx".to_owned(),
                script: "/usr/bin/pgrep -x nginx".to_owned(),
                interval: secs(2),
                timeout: secs(1),
                weight: -20,
                rise: 2,
                fall: 3,
                location: at(10, 1),
            },
            VrrpScript {
                name: "chk_disk".to_owned(),
                script: "/usr/local/bin/chk_disk".to_owned(),
                interval: secs(1),
                timeout: secs(1),
                weight: 0,
                rise: 1,
                fall: 1,
                location: at(19, 1),
            },
        ],
        sync_groups: vec![VrrpSyncGroup {
            name: "VG".to_owned(),
            group: vec!["VI_WEB".to_owned(), "VI_6".to_owned()],
            notify_master: command("/etc/keepalived/group.sh master"),
            notify_backup: command("/etc/keepalived/group.sh backup"),
            notify_fault: command("/etc/keepalived/group.sh fault"),
            location: at(80, 1),
        }],
    };
    assert_eq!(loaded.config.vrrp, expected);

    let web = loaded.config.vrrp_spans(0);
    let located = |keys: &[&str]| keys.iter().map(|k| web.located(k)).collect::<Vec<_>>();
    assert_eq!(web.section(), at(23, 1));
    assert_eq!(
        located(&["name", "state", "interface", "virtual_router_id", "priority"]),
        [at(23, 15), at(24, 11), at(25, 15), at(26, 23), at(27, 14)]
    );
    assert_eq!(
        located(&["advert_int", "version", "unicast_src_ip"]),
        [at(28, 16), at(5, 18), at(33, 20)]
    );
    assert_eq!(web.items("virtual_ipaddress"), [at(38, 9), at(39, 9), at(42, 9)]);
    assert_eq!(web.items("unicast_peer"), [at(35, 9)]);
    assert_eq!(web.items("track_interface"), [at(45, 9), at(46, 9)]);
    let v2 = loaded.config.vrrp_spans(1);
    assert_eq!(v2.section(), at(59, 1));
    // Where the defaults were written: `default_interface`, the `authentication` block.
    assert_eq!(
        ["interface", "version", "authentication"].map(|k| v2.located(k)),
        [at(4, 23), at(61, 13), at(62, 5)]
    );
    let v6 = loaded.config.vrrp_spans(2);
    assert_eq!(v6.section(), at(71, 1));
    // IPv6 runs version 3 whatever `vrrp_version` says; the owner's priority comes from `state`.
    let v6 = (v6.located("version"), v6.located("priority"));
    assert_eq!(v6, (at(71, 1), at(72, 11)));

    assert_eq!(
        shown(&loaded.warnings),
        [
            "3:5: warning: `router_id`: accepted, not acted on (it names this director only in \
             keepalived's e-mail and SNMP)",
            "38:33: warning: `label eth0:1` of virtual address 192.0.2.100/24: accepted, not acted \
             on (lb adds virtual addresses with the kernel's defaults)",
            "41:5: warning: `virtual_ipaddress_excluded`: its addresses are held like those of \
             virtual_ipaddress, and also listed in the adverts (lb has no excluded addresses; a \
             keepalived peer may reject adverts whose address list differs from its own)",
            "64:19: warning: `auth_pass` is 12 bytes: VRRPv2 carries 8, and keepalived uses only \
             the first 8; so does lb",
            "72:11: warning: vrrp_instance `VI_6`: `state MASTER` without `priority`: priority \
             255, the address owner, as in keepalived; add `priority` for another",
        ]
        .map(|w| format!("{SOURCE}:{w}"))
    );
    assert_eq!(shown(&loaded.notices), Vec::<String>::new());
    assert_eq!(loaded.config.virtual_servers[0].interface, "eth0");
}

/// `lower_prio_no_advert` and `skip_check_adv_addr`, per instance and as `global_defs`
/// defaults (`vrrp_` prefixed), in keepalived's forms: bare (on) or with a boolean; the
/// instance's own setting wins. Off when not written.
#[test]
fn forged_advert_settings_per_instance_and_as_global_defaults() {
    struct Case {
        name: &'static str,
        global: &'static [&'static str],
        instance: &'static [&'static str],
        /// (lower_prio_no_advert, skip_check_adv_addr)
        want: (bool, bool),
    }
    let cases = [
        Case { name: "not written", global: &[], instance: &[], want: (false, false) },
        Case {
            name: "bare, per instance",
            global: &[],
            instance: &["lower_prio_no_advert", "skip_check_adv_addr"],
            want: (true, true),
        },
        Case {
            name: "booleans, per instance",
            global: &[],
            instance: &["lower_prio_no_advert on", "skip_check_adv_addr false"],
            want: (true, false),
        },
        Case {
            name: "global defaults",
            global: &["vrrp_lower_prio_no_advert", "vrrp_skip_check_adv_addr yes"],
            instance: &[],
            want: (true, true),
        },
        Case {
            name: "the instance overrides the default",
            global: &["vrrp_lower_prio_no_advert true", "vrrp_skip_check_adv_addr"],
            instance: &["lower_prio_no_advert off", "skip_check_adv_addr no"],
            want: (false, false),
        },
    ];
    for c in cases {
        let mut lines = vec!["global_defs {"];
        lines.extend(c.global.iter().copied());
        lines.extend([
            "}",
            "vrrp_instance VI_1 {",
            "    interface eth0",
            "    virtual_router_id 1",
        ]);
        lines.extend(c.instance.iter().copied());
        lines.extend(["    virtual_ipaddress {", "        192.0.2.100", "    }", "}"]);
        let text = doc(&lines);
        let loaded = loaded(&text);
        let vi = &loaded.config.vrrp.instances[0];
        assert_eq!((vi.lower_prio_no_advert, vi.skip_check_adv_addr), c.want, "{}", c.name);
        assert_eq!(shown(&loaded.warnings), Vec::<String>::new(), "{}: acted on", c.name);
    }
    let text = doc(&[
        "global_defs {",
        "    vrrp_skip_check_adv_addr maybe",
        "}",
        "vrrp_instance VI_1 {",
        "    interface eth0",
        "    virtual_router_id 1",
        "    lower_prio_no_advert 2",
        "    virtual_ipaddress {",
        "        192.0.2.100",
        "    }",
        "}",
    ]);
    assert_eq!(
        errors_of(&text),
        [
            "keepalived.conf:2:30: `vrrp_skip_check_adv_addr` must be one of on, off, true, \
             false, yes, no; found \"maybe\"",
            "keepalived.conf:7:26: `lower_prio_no_advert` must be one of on, off, true, false, \
             yes, no; found \"2\"",
        ]
    );
}

/// The rest of the corpus: each file's model in summary, and exactly its warnings and notices.
#[test]
fn corpus_files_parse_into_the_model() {
    type Case = (
        &'static str,
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    );
    let cases: &[Case] = &[
        (
            "misc-dynamic.conf",
            include_str!("fixtures/misc-dynamic.conf"),
            &[
                "10.20.0.10:8080/tcp on bond0.20 wlc persistence None/32 delay_loop 15s alpha true \
                 omega false quorum 2±1 up Some(\"/usr/local/bin/notify quorum up\") down \
                 Some(\"/usr/local/bin/notify quorum down\") inhibit true",
                "  -> 10.20.0.11:8080 weight 10 inhibit true up None down \
                 Some(\"/usr/local/bin/notify 10.20.0.11 down\")",
                // misc_timeout as written; keepalived's MISC_CHECK retry default is 0.
                "     MISC_CHECK Misc(MiscCheck { path: \"/usr/local/bin/check_app.sh 10.20.0.11 \
                 8080\", timeout: 5s, dynamic: true }) timeout 5s ip None port None bindto None \
                 retry 0 after 1s warmup Some(15s)",
                "  -> 10.20.0.12:8080 weight 10 inhibit true up None down None",
                // No misc_timeout: keepalived uses delay_loop.
                "     MISC_CHECK Misc(MiscCheck { path: \"/usr/local/bin/check_app.sh\", timeout: \
                 15s, dynamic: true }) timeout 5s ip None port None bindto None retry 2 after 2s \
                 warmup Some(15s)",
            ],
            &[],
            &[
                "5:15: notice: 10.20.0.10:8080/tcp: scheduler `wlc` runs on kernel IPVS where it is available (`lb run \
                 --dataplane auto`), else as weighted Maglev (`mh`) on XDP",
            ],
        ),
        (
            "nbsp.conf",
            include_str!("fixtures/nbsp.conf"),
            &[
                "192.0.2.50:53/udp on eth1 sh persistence None/32 delay_loop 60s alpha false omega \
                 false quorum 1±0 up None down None inhibit false",
                "  -> 192.0.2.51:53 weight 2 inhibit false up None down None",
                // keepalived's DNS_CHECK: 3 retries, delay_loop apart.
                "     DNS_CHECK Dns(DnsCheck { name: \"example.org\", qtype: \"A\" }) timeout 5s ip \
                 None port None bindto None retry 3 after 60s warmup Some(60s)",
            ],
            &["3:17: warning: unusual space character U+00A0 (and 3 more in this file) read as a \
               space: keepalived would read it as part of a word; retype it as a plain space"],
            &[
                "6:13: notice: 192.0.2.50:53/udp: scheduler `sh` runs as weighted Maglev (`mh`) on \
                 the XDP dataplane",
                "10:9: notice: 192.0.2.50:53/udp: dns_check of real server 192.0.2.51:53: retry 3 × \
                 delay_before_retry 60s is not below delay_loop 60s: a down real is detected only \
                 after up to 200s (4 attempts of up to 5s, 60s apart), longer than delay_loop",
            ],
        ),
        (
            "old-keywords.conf",
            include_str!("fixtures/old-keywords.conf"),
            &[
                "192.168.200.100:443/tcp on eth0 rr persistence Some(50)/32 delay_loop 6s alpha \
                 false omega false quorum 1±0 up None down None inhibit false",
                "  -> 192.168.201.100:443 weight 1 inhibit false up None down None",
                "     SSL_GET Ssl(HttpCheck { urls: [UrlCheck { path: \"/\", status_code: None, \
                 digest: Some(\"ff20ad2481f97b1754ef3e12ecd3a9cc\") }, UrlCheck { path: \
                 \"/mrtg/\", status_code: None, digest: \
                 Some(\"9b3a0c85a887a256d6939da88aabd8cd\") }], virtualhost: None, sni: None }) \
                 timeout 3s ip None port None bindto None retry 3 after 3s warmup Some(6s)",
                "10.10.10.2:1358/tcp on eth1 rr persistence Some(50)/32 delay_loop 6s alpha false \
                 omega false quorum 1±0 up None down None inhibit false",
                "  -> 192.168.200.2:1358 weight 1 inhibit false up None down None",
                "     TCP_CHECK Tcp timeout 3s ip None port Some(1358) bindto \
                 Some(192.168.200.1) retry 1 after 1s warmup Some(6s)",
                "  sorry 192.168.200.200:1358",
            ],
            &[
                "3:4: warning: `lvs_id`: accepted, not acted on (it names this director only in \
                 keepalived's e-mail and SNMP)",
                "15:5: warning: `lvs_sync_daemon_interface`: accepted, not acted on (the old form \
                 of global_defs' `lvs_sync_daemon INTERFACE INSTANCE`, which lb acts on: write \
                 that instead)",
                "28:27: warning: `dev eth1`: accepted, not acted on (lb adds every address of \
                 vrrp_instance `VI_1` on its interface `eth0` and sends its gratuitous ARPs there; \
                 write a vrrp_instance on eth1 for the addresses on eth1)",
            ],
            &[
                // keepalived's `mcast_src_ip` is lb's `unicast_src_ip`.
                "17:18: notice: vrrp_instance `VI_1`: unicast_src_ip without unicast_peer: the \
                 adverts are still multicast, only sent from this address",
                "34:13: notice: 192.168.200.100:443/tcp: scheduler `rr` runs as weighted Maglev \
                 (`mh`) on the XDP dataplane",
                "51:26: notice: 192.168.200.100:443/tcp: ssl_get of real server \
                 192.168.201.100:443: retry 3 × delay_before_retry 3s is not below delay_loop 6s: \
                 a down real is detected only after up to 21s (4 attempts of up to 3s, 3s apart), \
                 longer than delay_loop",
                "59:15: notice: 10.10.10.2:1358/tcp: scheduler `rr` runs as weighted Maglev (`mh`) \
                 on the XDP dataplane",
            ],
        ),
        (
            "vrrp-blocks.conf",
            include_str!("fixtures/vrrp-blocks.conf"),
            &[
                "198.51.100.10:80/tcp on eth0 wlc persistence None/32 delay_loop 60s alpha false \
                 omega false quorum 1±0 up None down None inhibit false",
                "  -> 198.51.100.21:80 weight 1 inhibit false up None down None",
                "     PING_CHECK Ping timeout 5s ip None port None bindto None retry 1 after 1s \
                 warmup Some(60s)",
                "[2001:db8::10]:80/tcp on eth1 wlc persistence None/128 delay_loop 60s alpha false \
                 omega false quorum 1±0 up None down None inhibit false",
                "  -> [2001:db8::21]:80 weight 1 inhibit false up None down None",
                "     TCP_CHECK Tcp timeout 5s ip None port None bindto None retry 1 after 1s \
                 warmup Some(60s)",
            ],
            &[
                // keepalived does not track weighted scripts in a sync group by default.
                "25:9: warning: tracked script `chk_haproxy` has a weight, so it is not tracked, as \
                 keepalived does not track it: vrrp_instance `VI_EXT` is in vrrp_sync_group \
                 `VG_1`, which has no `sync_group_tracking_weight`",
            ],
            // No lb_algo: keepalived's default, wlc, said once per service.
            &[
                "56:1: notice: 198.51.100.10:80/tcp: scheduler `wlc` runs on kernel IPVS where it is available (`lb run \
                 --dataplane auto`), else as weighted Maglev (`mh`) on XDP",
                "65:1: notice: [2001:db8::10]:80/tcp: scheduler `wlc` runs on kernel IPVS where it is available (`lb run \
                 --dataplane auto`), else as weighted Maglev (`mh`) on XDP",
            ],
        ),
        (
            "groups.conf",
            include_str!("fixtures/groups.conf"),
            &[
                "192.0.2.100:80/tcp on eth0 wlc persistence None/32 delay_loop 60s alpha false \
                 omega false quorum 1±0 up None down None inhibit false",
                "  -> 192.0.2.11:80 weight 1 inhibit false up None down None",
                "     TCP_CHECK Tcp timeout 2s ip None port None bindto None retry 1 after 1s \
                 warmup Some(60s)",
                "192.0.2.110:80/tcp on eth0 wlc persistence None/32 delay_loop 60s alpha false \
                 omega false quorum 1±0 up None down None inhibit false",
                "  -> 192.0.2.11:80 weight 1 inhibit false up None down None",
                "     TCP_CHECK Tcp timeout 2s ip None port None bindto None retry 1 after 1s \
                 warmup Some(60s)",
                "192.0.2.111:80/tcp on eth0 wlc persistence None/32 delay_loop 60s alpha false \
                 omega false quorum 1±0 up None down None inhibit false",
                "  -> 192.0.2.11:80 weight 1 inhibit false up None down None",
                "     TCP_CHECK Tcp timeout 2s ip None port None bindto None retry 1 after 1s \
                 warmup Some(60s)",
                "192.0.2.112:80/tcp on eth0 wlc persistence None/32 delay_loop 60s alpha false \
                 omega false quorum 1±0 up None down None inhibit false",
                "  -> 192.0.2.11:80 weight 1 inhibit false up None down None",
                "     TCP_CHECK Tcp timeout 2s ip None port None bindto None retry 1 after 1s \
                 warmup Some(60s)",
                "192.0.2.120:80/tcp on eth0 wlc persistence None/32 delay_loop 60s alpha false \
                 omega false quorum 1±0 up None down None inhibit false",
                "  -> 192.0.2.11:80 weight 1 inhibit false up None down None",
                "     TCP_CHECK Tcp timeout 2s ip None port None bindto None retry 1 after 1s \
                 warmup Some(60s)",
                "192.0.2.121:80/tcp on eth0 wlc persistence None/32 delay_loop 60s alpha false \
                 omega false quorum 1±0 up None down None inhibit false",
                "  -> 192.0.2.11:80 weight 1 inhibit false up None down None",
                "     TCP_CHECK Tcp timeout 2s ip None port None bindto None retry 1 after 1s \
                 warmup Some(60s)",
            ],
            &[],
            &[
                "8:1: notice: 192.0.2.100:80/tcp: scheduler `wlc` runs on kernel IPVS where it is available (`lb run \
                 --dataplane auto`), else as weighted Maglev (`mh`) on XDP",
                "8:1: notice: 192.0.2.110:80/tcp: scheduler `wlc` runs on kernel IPVS where it is available (`lb run \
                 --dataplane auto`), else as weighted Maglev (`mh`) on XDP",
                "8:1: notice: 192.0.2.111:80/tcp: scheduler `wlc` runs on kernel IPVS where it is available (`lb run \
                 --dataplane auto`), else as weighted Maglev (`mh`) on XDP",
                "8:1: notice: 192.0.2.112:80/tcp: scheduler `wlc` runs on kernel IPVS where it is available (`lb run \
                 --dataplane auto`), else as weighted Maglev (`mh`) on XDP",
                "8:1: notice: 192.0.2.120:80/tcp: scheduler `wlc` runs on kernel IPVS where it is available (`lb run \
                 --dataplane auto`), else as weighted Maglev (`mh`) on XDP",
                "8:1: notice: 192.0.2.121:80/tcp: scheduler `wlc` runs on kernel IPVS where it is available (`lb run \
                 --dataplane auto`), else as weighted Maglev (`mh`) on XDP",
            ],
        ),
        (
            "fwmark.conf",
            include_str!("fixtures/fwmark.conf"),
            &[
                "fwmark 1 on  wlc persistence Some(600)/32 delay_loop 10s alpha false omega false \
                 quorum 1±0 up None down None inhibit false",
                "  -> 192.0.2.11:80 weight 2 inhibit false up None down None",
                "     TCP_CHECK Tcp timeout 3s ip None port None bindto None retry 1 after 1s \
                 warmup Some(10s)",
                "  -> 192.0.2.12:80 weight 1 inhibit false up None down None",
                "     TCP_CHECK Tcp timeout 3s ip None port None bindto None retry 1 after 1s \
                 warmup Some(10s)",
                "fwmark 2/inet6 on  rr persistence None/128 delay_loop 60s alpha false omega false \
                 quorum 1±0 up None down None inhibit false",
                "  -> [2001:db8::11]:8080 weight 1 inhibit false up None down None",
                "     HTTP_GET Http(HttpCheck { urls: [UrlCheck { path: \"/health\", status_code: \
                 Some(200), digest: None }], virtualhost: None, sni: None }) timeout 5s ip None \
                 port None bindto None retry 1 after 3s warmup Some(60s)",
                "192.0.2.110:25/tcp on eth0 wlc persistence None/32 delay_loop 60s alpha false \
                 omega false quorum 1±0 up None down None inhibit false",
                "  -> 192.0.2.21:25 weight 1 inhibit false up None down None",
                "     TCP_CHECK Tcp timeout 5s ip None port None bindto None retry 1 after 1s \
                 warmup Some(60s)",
                "fwmark 3 on eth0 wlc persistence None/32 delay_loop 60s alpha false omega false \
                 quorum 1±0 up None down None inhibit false",
                "  -> 192.0.2.21:25 weight 1 inhibit false up None down None",
                "     TCP_CHECK Tcp timeout 5s ip None port None bindto None retry 1 after 1s \
                 warmup Some(60s)",
            ],
            &[],
            &[
                "4:23: notice: fwmark 1: a firewall-mark service (netfilter marks packets after \
                 XDP has run, so only IPVS can match them): runs on the kernel IPVS dataplane",
                "23:23: notice: fwmark 2/inet6: a firewall-mark service (netfilter marks packets \
                 after XDP has run, so only IPVS can match them): runs on the kernel IPVS dataplane",
                "40:12: notice: fwmark 3: a firewall-mark service (netfilter marks packets after \
                 XDP has run, so only IPVS can match them): runs on the kernel IPVS dataplane",
                "43:1: notice: 192.0.2.110:25/tcp: scheduler `wlc` runs on kernel IPVS where it is \
                 available (`lb run --dataplane auto`), else as weighted Maglev (`mh`) on XDP",
            ],
        ),
    ];
    for &(name, text, expected, warnings, notices) in cases {
        let loaded =
            parse(text, Path::new(name), &Host, false).unwrap_or_else(|e| panic!("{name}:\n{e}"));
        assert_eq!(summary(&loaded.config), expected, "{name}: model");
        let prefixed = |lines: &[&str]| -> Vec<String> {
            lines.iter().map(|l| format!("{name}:{l}")).collect()
        };
        assert_eq!(shown(&loaded.warnings), prefixed(warnings), "{name}: warnings");
        assert_eq!(shown(&loaded.notices), prefixed(notices), "{name}: notices");
    }
}

/// Lines 1-4 of most scenarios: a virtual server's header, lines 5- its rest.
const HEAD: &[&str] = &[
    "virtual_server 192.0.2.100 80 {",
    "    lb_interface eth0",
    "    lb_kind DR",
    "    protocol TCP",
];

/// The rest of a valid virtual server from line 5.
const TAIL: &[&str] = &["    real_server 192.0.2.11 80 {", "        weight 1", "    }", "}"];

/// (name, whole document, every error expected, as `LINE:COL: message`).
type ErrorScenario = (&'static str, Vec<&'static str>, &'static [&'static str]);

fn with_head(rest: &[&'static str]) -> Vec<&'static str> {
    [HEAD, rest].concat()
}

#[test]
fn every_error_class_at_its_place() {
    let scenarios: Vec<ErrorScenario> = vec![
        // Braces and strings.
        (
            "a `}` too many",
            with_head(&[TAIL, &["}"]].concat()),
            &["9:1: unbalanced `}`: there is no open block to close"],
        ),
        (
            "a block never closed",
            with_head(&["    real_server 192.0.2.11 80 {", "        weight 1", "}"]),
            &["1:31: unbalanced `{`: this block is never closed (a `}` is missing)"],
        ),
        (
            "a block without keyword",
            vec!["{", "}"],
            &[
                "1:1: `{` without a keyword: a block follows the keyword it belongs to, on its line \
               or the next",
            ],
        ),
        (
            "an unterminated quoted string",
            with_head(&[&["    quorum_up \"/usr/local/bin/up.sh"], TAIL].concat()),
            &["5:15: unterminated quoted string: the closing `\"` is missing on this line"],
        ),
        // Keywords in the wrong place, misspelled.
        (
            "real_server at the top level",
            vec!["real_server 192.0.2.11 80 {", "}"],
            &["1:1: `real_server` belongs in virtual_server, not at the top level"],
        ),
        (
            "virtual_server inside a real_server: a `}` missing",
            with_head(&[
                "    real_server 192.0.2.11 80 {",
                "        weight 1",
                "    virtual_server 192.0.2.101 80 {",
                "    }",
                "    }",
                "}",
            ]),
            &["7:5: `virtual_server` belongs at the top level, not in real_server (is a `}` \
               missing above?)"],
        ),
        (
            "a checker in the virtual server",
            with_head(&[&["    TCP_CHECK {", "    }"], TAIL].concat()),
            &["5:5: `TCP_CHECK` belongs in real_server, not in virtual_server"],
        ),
        (
            "url in TCP_CHECK",
            with_head(&[
                "    real_server 192.0.2.11 80 {",
                "        TCP_CHECK {",
                "            url {",
                "                path /",
                "            }",
                "        }",
                "    }",
                "}",
            ]),
            &["7:13: `url` belongs in HTTP_GET or SSL_GET, not in TCP_CHECK"],
        ),
        (
            "a VRRP keyword in a virtual server",
            with_head(&[&["    priority 100"], TAIL].concat()),
            &["5:5: `priority` belongs in vrrp_instance, not in virtual_server"],
        ),
        (
            "misspelled keywords, all of them",
            with_head(&[
                "    delay_lop 10",
                "    lb_algoo rr",
                "    real_server 192.0.2.11 80 {",
                "        weigth 2",
                "        TCP_CHEK {",
                "        }",
                "    }",
                "}",
            ]),
            &[
                "5:5: unknown keyword `delay_lop` in virtual_server; did you mean `delay_loop`?",
                "6:5: unknown keyword `lb_algoo` in virtual_server; did you mean `lb_algo`?",
                "8:9: unknown keyword `weigth` in real_server; did you mean `weight`?",
                "9:9: unknown keyword `TCP_CHEK` in real_server; did you mean `TCP_CHECK`?",
            ],
        ),
        (
            "misspelled top-level block",
            vec!["virtual_servr 192.0.2.100 80 {", "}"],
            &["1:1: unknown keyword `virtual_servr` at the top level; did you mean \
               `virtual_server`?"],
        ),
        (
            "misspelled keyword without a close one",
            with_head(&[&["    frobnicate yes"], TAIL].concat()),
            &["5:5: unknown keyword `frobnicate` in virtual_server"],
        ),
        // Values of the wrong type or out of range.
        (
            "priority 300",
            vec![
                "vrrp_instance VI_1 {",
                "    interface eth0",
                "    virtual_router_id 51",
                "    priority 300",
                "}",
            ],
            &["4:14: `priority` must be between 1 and 255, found 300"],
        ),
        (
            "bad virtual IP",
            vec!["virtual_server 192.0.2.300 80 {", "    lb_kind DR", "}"],
            &["1:16: the virtual_server address must be an IP address, found \"192.0.2.300\""],
        ),
        (
            "virtual port out of range",
            vec!["virtual_server 192.0.2.100 70000 {", "    lb_kind DR", "}"],
            &["1:28: the port must be between 0 and 65535, found 70000"],
        ),
        (
            "real server address and port",
            with_head(&["    real_server 192.0.2.1111 -80 {", "    }", "}"]),
            &[
                "5:17: the real_server address must be an IP address, found \"192.0.2.1111\"",
                "5:30: the real_server port must be between 0 and 65535, found -80",
            ],
        ),
        (
            "fractional weight",
            with_head(&["    real_server 192.0.2.11 80 {", "        weight 1.5", "    }", "}"]),
            &["6:16: `weight` must be an integer, found \"1.5\""],
        ),
        (
            "weight too large",
            with_head(&["    real_server 192.0.2.11 80 {", "        weight 65536", "    }", "}"]),
            &["6:16: `weight` must be between 0 and 65535, found 65536"],
        ),
        (
            "delay_loop with a unit, delay_loop 0",
            with_head(&[&["    delay_loop 6s", "    delay_loop 0"], TAIL].concat()),
            &[
                "5:16: `delay_loop` must be a number of seconds, found \"6s\"",
                "6:16: `delay_loop` must be more than 0 and at most 86400 seconds, found 0",
            ],
        ),
        (
            "not a boolean",
            with_head(&[
                "    real_server 192.0.2.11 80 {",
                "        inhibit_on_failure maybe",
                "    }",
                "}",
            ]),
            &["6:28: `inhibit_on_failure` must be one of on, off, true, false, yes, no; found \
               \"maybe\""],
        ),
        (
            "unknown scheduler",
            with_head(&[&["    lb_algo wrrr"], TAIL].concat()),
            &["5:13: unknown scheduler `wrrr`: did you mean `wrr`? expected one of rr, wrr, lc, \
               wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos"],
        ),
        (
            "unknown protocol, SCTP",
            vec![
                "virtual_server 192.0.2.100 80 {",
                "    protocol ICMP",
                "}",
                "virtual_server 192.0.2.100 81 {",
                "    protocol SCTP",
                "}",
            ],
            &[
                "2:14: unknown protocol `ICMP`: expected TCP, UDP or SCTP",
                "5:14: `protocol SCTP` is not supported by lb yet: TCP or UDP",
            ],
        ),
        (
            "bad digest, several status codes",
            with_head(&[
                "    real_server 192.0.2.11 80 {",
                "        HTTP_GET {",
                "            url {",
                "                path /",
                "                digest 12345",
                "                status_code 200 301",
                "            }",
                "        }",
                "    }",
                "}",
            ]),
            &[
                "9:24: `digest` must be an MD5 digest, 32 hex digits as genhash prints it, found \
                 \"12345\"",
                "10:33: several status codes are not supported yet: give one code, or 200-299 (the \
                 default)",
            ],
        ),
        (
            "HTTP_GET without url, MISC_CHECK without misc_path",
            with_head(&[
                "    real_server 192.0.2.11 80 {",
                "        HTTP_GET {",
                "        }",
                "        MISC_CHECK {",
                "            connect_port 80",
                "        }",
                "    }",
                "}",
            ]),
            &[
                "6:9: `HTTP_GET` needs at least one `url { path / }`",
                "9:13: `connect_port` does not apply to MISC_CHECK: it runs a script and connects \
                 to nothing",
            ],
        ),
        (
            "a value missing, one too many",
            with_head(&[
                "    real_server 192.0.2.11 80 {",
                "        weight",
                "        notify_up /bin/up.sh root wheel extra",
                "    }",
                "}",
            ]),
            &[
                "6:9: `weight` needs one value",
                "7:41: `notify_up` takes at most 3 values, found 4: `extra` is one too many",
            ],
        ),
        (
            "a block where none belongs, none where one must be",
            with_head(&["    real_server 192.0.2.11 80", "    weight 1 {", "    }", "}"]),
            &[
                "5:28: `real_server` needs a block: real_server ADDRESS PORT { ... }",
                "6:14: `weight` takes no block",
            ],
        ),
        (
            "TUN options",
            with_head(&[
                "    real_server 192.0.2.11 80 {",
                "        lvs_method TUN type gue",
                "    }",
                "    real_server 192.0.2.12 80 {",
                "        lvs_method TUN type vxlan",
                "    }",
                "    real_server 192.0.2.13 80 {",
                "        lvs_method TUN type ipip port 5",
                "    }",
                "    real_server 192.0.2.14 80 {",
                "        lvs_method NAT fast",
                "    }",
                "}",
            ]),
            &[
                "6:29: `TUN type gue` needs `port PORT`",
                "9:29: unknown tunnel type `vxlan`: expected ipip, gue or gre",
                "12:39: a tunnel port is for `type gue`, not `ipip`",
                "15:24: `lvs_method NAT` takes no options, found `fast`",
            ],
        ),
        (
            "fwmark virtual servers",
            vec![
                "virtual_server fwmark 0 {",
                "    lb_kind DR",
                "}",
                "virtual_server fwmark 1 2 {",
                "    lb_kind DR",
                "}",
                "virtual_server fwmark 3 {",
                "    ip_family inet7",
                "}",
            ],
            &[
                "1:23: the fwmark must be between 1 and 4294967295, found 0",
                "4:25: unexpected `2`: virtual_server fwmark N { ... }",
                "8:15: the address family is `inet` or `inet6`, found `inet7`",
            ],
        ),
        (
            "ip_family against the address",
            with_head(&["    ip_family inet6", "}"]),
            &["5:15: `ip_family inet6` does not match virtual server address 192.0.2.100"],
        ),
        (
            "unknown group, group with a bad fwmark",
            vec![
                "virtual_server_group WEB {",
                "    192.0.2.100 80",
                "    fwmark 7 ipv6",
                "}",
                "virtual_server group WEBB {",
                "    lb_kind DR",
                "}",
            ],
            &[
                "3:14: the address family is `inet` or `inet6`, found `ipv6`",
                "5:22: no virtual_server_group `WEBB`; did you mean `WEB`?",
            ],
        ),
        (
            "bad group entries",
            vec![
                "virtual_server_group WEB {",
                "    192.0.2.10-5 80",
                "    192.0.2.1/24 80",
                "    10.0.0.0/8 80",
                "    192.0.2.20 80 extra",
                "}",
            ],
            &[
                "2:5: \"192.0.2.10-5\" is not an address or address range: the range must end after \
                 it starts",
                "3:5: \"192.0.2.1/24\" is not an address or address range: the address has bits set \
                 after the prefix",
                "4:5: 10.0.0.0/8 has 16777216 addresses, more than 65536 virtual servers can use",
                "5:19: unexpected `extra`: a group entry is ADDRESS [PORT]",
            ],
        ),
        (
            "keepalived's advanced parser features",
            vec!["@lb1 global_defs {", "}", "$IF=eth0"],
            &[
                "1:1: keepalived's conditional configuration (`@ID` lines) is not supported yet: \
                 write the lines out in full",
                "3:1: keepalived's parameter substitution (`$NAME=value` definitions) is not \
                 supported yet: write the lines out in full",
            ],
        ),
        // The interface of a virtual IP.
        (
            "no interface for the VIP",
            vec![
                "virtual_server 192.0.2.100 80 {",
                "    lb_kind DR",
                "    protocol TCP",
                "    real_server 192.0.2.11 80 {",
                "    }",
                "}",
            ],
            &[
                "1:16: no interface for virtual IP 192.0.2.100: keepalived's virtual_server does not \
               name one; add `lb_interface IFNAME` to this virtual_server, or list 192.0.2.100 in \
               the virtual_ipaddress of a vrrp_instance (its `interface` is used)",
            ],
        ),
        (
            "the VIP on two interfaces",
            vec![
                "vrrp_instance A {",
                "    interface eth0",
                "    virtual_router_id 1",
                "    virtual_ipaddress {",
                "        192.0.2.100/24",
                "    }",
                "}",
                "vrrp_instance B {",
                "    interface eth0",
                "    virtual_router_id 2",
                "    virtual_ipaddress {",
                "        192.0.2.100/24 dev eth1",
                "    }",
                "}",
                "virtual_server 192.0.2.100 80 {",
                "    lb_kind DR",
                "    protocol TCP",
                "    real_server 192.0.2.11 80 {",
                "    }",
                "}",
            ],
            &[
                "12:9: 192.0.2.100 is already in the virtual_ipaddress of vrrp_instance `A` at line \
                 1: an address can belong to one instance only",
                "15:16: virtual IP 192.0.2.100 is on several interfaces (`eth0` in vrrp_instance \
                 `A`, `eth1` in vrrp_instance `B`): add `lb_interface IFNAME` to this \
                 virtual_server to say which one its traffic arrives on",
            ],
        ),
        (
            "the VRRP interface is not on this host",
            vec![
                "vrrp_instance A {",
                "    interface eth7",
                "    virtual_router_id 1",
                "    virtual_ipaddress {",
                "        192.0.2.100/24",
                "    }",
                "}",
                "virtual_server 192.0.2.100 80 {",
                "    lb_kind DR",
                "    protocol TCP",
                "    real_server 192.0.2.11 80 {",
                "    }",
                "}",
            ],
            &["2:15: interface `eth7` does not exist on this host"],
        ),
        // VRRP blocks.
        (
            "VRRP syntax",
            vec![
                "vrrp_instance VI_1 {",
                "    state MASTR",
                "    interface eth0",
                "    virtual_ipaddress {",
                "        192.0.2.300/24",
                "        192.0.2.10/24 dve eth1",
                "    }",
                "    track_script {",
                "        chk_nginx",
                "    }",
                "}",
                "vrrp_sync_group G {",
                "    group {",
                "        VI_1 VI_2",
                "    }",
                "}",
            ],
            &[
                "2:11: `state` must be MASTER or BACKUP, found \"MASTR\"",
                "5:9: a virtual address must be an IP address with an optional /PREFIX, found \
                 \"192.0.2.300/24\"",
                "6:23: unknown option `dve` of a virtual address; did you mean `dev`?",
                "9:9: no vrrp_script `chk_nginx`",
                "14:14: no vrrp_instance `VI_2`; did you mean `VI_1`?",
            ],
        ),
        (
            "what VRRP blocks need",
            vec![
                "vrrp_instance VI_1 {",
                "    interface eth0",
                "}",
                "vrrp_script chk {",
                "    interval 2",
                "}",
                "vrrp_sync_group G {",
                "}",
                "vrrp_instance {",
                "}",
            ],
            &[
                "1:15: vrrp_instance `VI_1` needs a `virtual_router_id` (1 to 255)",
                "4:13: vrrp_script `chk` needs a `script`",
                "7:17: vrrp_sync_group `G` needs a `group { INSTANCE ... }`",
                "9:1: `vrrp_instance` needs a name: vrrp_instance NAME { ... }",
            ],
        ),
        (
            "a weight in reverse",
            vec![
                "vrrp_script chk {",
                "    script /bin/true",
                "    weight 10 reverse",
                "}",
                "vrrp_instance VI_1 {",
                "    interface eth0",
                "    virtual_router_id 1",
                "    virtual_ipaddress {",
                "        192.0.2.100",
                "    }",
                "    track_interface {",
                "        eth1 weight -10 reverse",
                "        eth0 weight -10 noreverse",
                "    }",
                "}",
            ],
            &[
                "3:15: `reverse` is not supported: lb adds a positive weight while the tracked \
                 object is up and a negative one while it is down, as keepalived does without \
                 `reverse`; change the weights and priorities to say the same without it",
                "12:25: `reverse` is not supported: lb adds a positive weight while the tracked \
                 object is up and a negative one while it is down, as keepalived does without \
                 `reverse`; change the weights and priorities to say the same without it",
            ],
        ),
        (
            "authentication lb cannot do",
            vec![
                "vrrp_instance VI_1 {",
                "    interface eth0",
                "    virtual_router_id 1",
                "    virtual_ipaddress {",
                "        192.0.2.100",
                "    }",
                "    authentication {",
                "        auth_type AH",
                "        auth_pass secret",
                "    }",
                "}",
                "vrrp_instance VI_2 {",
                "    interface eth0",
                "    virtual_router_id 2",
                "    virtual_ipaddress {",
                "        192.0.2.101",
                "    }",
                "    authentication {",
                "        auth_pass secret",
                "    }",
                "}",
            ],
            &[
                "8:19: `auth_type AH` (IPsec authentication header) is not supported: use PASS, \
                 or no `authentication`",
                "18:5: `authentication` needs both `auth_type PASS` and `auth_pass SECRET`",
            ],
        ),
        (
            "what an instance needs: an interface, an address",
            vec![
                "vrrp_instance VI_1 {",
                "    virtual_router_id 1",
                "    virtual_ipaddress {",
                "        192.0.2.100",
                "    }",
                "}",
                "vrrp_instance VI_2 {",
                "    interface eth0",
                "    virtual_router_id 2",
                "    no_virtual_ipaddress",
                "}",
            ],
            &[
                "1:15: vrrp_instance `VI_1` has no `interface`, and global_defs no \
                 `default_interface`: add `interface IFNAME`",
                "7:15: vrrp_instance `VI_2` has no `virtual_ipaddress`: lb needs at least one \
                 address per instance (the addresses it holds while MASTER)",
            ],
        ),
        (
            "empty names",
            vec![
                "vrrp_instance \"\" {",
                "}",
                "vrrp_instance VI_1 {",
                "    interface \"\"",
                "    virtual_router_id 1",
                "    virtual_ipaddress {",
                "        192.0.2.100",
                "    }",
                "}",
            ],
            &[
                "1:15: the name of a `vrrp_instance` must not be empty",
                "4:15: \"\" is not an interface name: 1 to 15 characters, no `/` or space",
            ],
        ),
        (
            "an instance in a sync group once",
            vec![
                "vrrp_instance VI_1 {",
                "    interface eth0",
                "    virtual_router_id 1",
                "    virtual_ipaddress {",
                "        192.0.2.100",
                "    }",
                "}",
                "vrrp_sync_group G1 {",
                "    group {",
                "        VI_1 VI_1",
                "    }",
                "}",
                "vrrp_sync_group G2 {",
                "    group {",
                "        VI_1",
                "    }",
                "}",
                "vrrp_sync_group G1 {",
                "    group {",
                "    }",
                "}",
            ],
            &[
                "10:14: vrrp_instance `VI_1` is listed twice in this group",
                "15:9: vrrp_instance `VI_1` is already in vrrp_sync_group `G1` at line 8: an \
                 instance can be in one sync group only",
                "18:17: vrrp_sync_group `G1` is already defined at line 8",
                "18:17: vrrp_sync_group `G1` lists no instance in its `group`",
            ],
        ),
        (
            "VRRP values out of range",
            vec![
                "global_defs {",
                "    vrrp_version 4",
                "    vrrp_garp_master_repeat 0",
                "}",
                "vrrp_instance VI_1 {",
                "    interface eth0",
                "    virtual_router_id 1",
                "    preempt_delay 2000",
                "    garp_master_delay 100000",
                "    garp_master_repeat 101",
                "    advert_int 256",
                "    virtual_ipaddress {",
                "        192.0.2.100/33",
                "    }",
                "}",
            ],
            &[
                "2:18: `vrrp_version` must be between 2 and 3, found 4",
                "3:29: `vrrp_garp_master_repeat` must be between 1 and 100, found 0",
                "8:19: `preempt_delay` must be between 0 and 1000 seconds, found 2000",
                "9:23: `garp_master_delay` must be between 0 and 86400, found 100000",
                "10:24: `garp_master_repeat` must be between 1 and 100, found 101",
                "11:16: `advert_int` must be more than 0 and at most 255 seconds, found 256",
                "13:9: the prefix length of 192.0.2.100 must be 0 to 32, found \"33\"",
            ],
        ),
        (
            "one family per instance, an interval the version carries (validation)",
            vec![
                "vrrp_instance VI_1 {",
                "    interface eth0",
                "    virtual_router_id 1",
                "    version 2",
                "    advert_int 1.5",
                "    virtual_ipaddress {",
                "        192.0.2.100",
                "        2001:db8::100",
                "    }",
                "}",
            ],
            &[
                "5:16: `advert_int` 1.5 is not whole seconds, which VRRPv2 adverts carry: \
                 keepalived would round it to 2; write whole seconds, or use version 3 for \
                 fractions",
                "8:9: 2001:db8::100 is IPv6 but 192.0.2.100 before it is IPv4: the addresses of \
                 one instance are all in one family; put the IPv6 ones in another vrrp_instance",
            ],
        ),
        // The rules shared with the native format.
        (
            "real port differs (validation)",
            with_head(&["    real_server 192.0.2.11 8080 {", "    }", "}"]),
            &["5:28: real server port 8080 differs from virtual server port 80: direct routing \
               forwards packets unchanged, so the port cannot be changed (only NAT can)"],
        ),
        (
            "duplicate virtual server (validation)",
            [HEAD, TAIL, HEAD, TAIL].concat(),
            &["9:1: duplicate virtual server 192.0.2.100:80/tcp: already defined at line 1"],
        ),
        // Addresses no host has, and the director's own.
        (
            "multicast VIP, broadcast sorry server, loopback real",
            vec![
                "virtual_server 224.0.0.18 80 {",
                "    lb_interface eth0",
                "    lb_kind DR",
                "    protocol TCP",
                "    sorry_server 255.255.255.255 80",
                "    real_server 127.0.0.1 80 {",
                "    }",
                "}",
            ],
            &[
                "1:16: virtual IP 224.0.0.18 is a multicast address: clients can only reach a \
                 unicast address",
                "5:18: sorry server 255.255.255.255 is the broadcast address: lb forwards only to \
                 the unicast address of another host",
                "6:17: real server 127.0.0.1 is a loopback address: lb forwards only to the \
                 unicast address of another host",
            ],
        ),
        (
            "unspecified VIP without an interface: what is wrong, not the interface",
            vec![
                "virtual_server 0.0.0.0 80 {",
                "    lb_kind DR",
                "    protocol TCP",
                "    real_server 127.0.0.1 80 {",
                "    }",
                "}",
            ],
            &[
                "1:16: virtual IP 0.0.0.0 is the unspecified address: clients can only reach a \
                 unicast address",
                "4:17: real server 127.0.0.1 is a loopback address: lb forwards only to the \
                 unicast address of another host",
            ],
        ),
        (
            "group of multicast VIPs, reals that are the director's addresses",
            vec![
                "virtual_server_group WEB {",
                "    192.0.2.100 80",
                "    224.0.0.1-3 80",
                "}",
                "virtual_server group WEB {",
                "    lb_interface eth0",
                "    lb_kind DR",
                "    protocol TCP",
                "    real_server 192.0.2.1 80 {",
                "    }",
                "    real_server 192.0.2.100 80 {",
                "    }",
                "}",
            ],
            &[
                "3:5: virtual IP 224.0.0.1 is a multicast address: clients can only reach a \
                 unicast address",
                "9:17: real server 192.0.2.1 is an address of this host: lb forwards to other \
                 hosts only (not to the director itself)",
                "11:17: real server 192.0.2.100 is the virtual IP of virtual server \
                 192.0.2.100:80/tcp: the director holds that address, so lb would forward the \
                 packets to itself",
            ],
        ),
        (
            "IPv4-mapped VIP, IPv6 real of this host, sorry server in a VRRP instance",
            vec![
                "vrrp_instance VI_6 {",
                "    interface eth0",
                "    virtual_router_id 51",
                "    virtual_ipaddress {",
                "        2001:db8::200/64",
                "    }",
                "}",
                "virtual_server ::ffff:192.0.2.100 80 {",
                "    lb_interface eth0",
                "    lb_kind DR",
                "    protocol TCP",
                "    sorry_server 2001:db8::200 80",
                "    real_server 2001:db8::1 80 {",
                "    }",
                "}",
            ],
            &[
                "8:16: virtual IP ::ffff:192.0.2.100 is an IPv4-mapped IPv6 address, which no \
                 packet carries: clients can only reach a unicast address (write 192.0.2.100)",
                "12:18: sorry server 2001:db8::200 is in the virtual_ipaddress of vrrp_instance \
                 `VI_6`: the director holds that address, so lb would forward the packets to \
                 itself",
                "13:17: real server 2001:db8::1 is an address of this host: lb forwards to other \
                 hosts only (not to the director itself)",
            ],
        ),
    ];
    for (name, lines, expected) in scenarios {
        let text = doc(&lines);
        let expected: Vec<String> = expected.iter().map(|e| format!("{SOURCE}:{e}")).collect();
        assert_eq!(errors_of(&text), expected, "{name}:\n{text}");
    }
}

/// (name, document, every warning expected as `LINE:COL: message`).
#[test]
fn warnings_for_what_is_accepted_but_not_acted_on() {
    let scenarios: Vec<(&str, Vec<&str>, &[&str])> = vec![
        ("a valid service: none", [HEAD, TAIL].concat(), &[]),
        (
            "keepalived's defaults lb follows: UDP, port 0 persistent",
            vec![
                "virtual_server 192.0.2.100 0 {",
                "    lb_interface eth0",
                "    lb_kind DR",
                "    real_server 192.0.2.11 0 {",
                "    }",
                "}",
            ],
            &[
                "1:1: no `protocol`: keepalived uses UDP, and so does lb; add `protocol TCP` for a \
                 TCP service",
                "1:28: port 0 without `persistence_timeout`: keepalived makes the service \
                 persistent (360 seconds), and so does lb",
            ],
        ),
        (
            "no real server",
            [HEAD, &["}"]].concat(),
            &["1:1: this virtual_server has no real_server: keepalived ignores it, and so does lb"],
        ),
        (
            "IPVS and e-mail knobs",
            with_head(&[
                "    ha_suspend",
                "    smtp_alert",
                "    real_server 192.0.2.11 80 {",
                "        uthreshold 100",
                "        SMTP_CHECK {",
                "            helo_name lb.example.com",
                "        }",
                "    }",
                "}",
            ]),
            &[
                "5:5: `ha_suspend`: accepted, not acted on (it tunes IPVS, which the XDP dataplane \
                 replaces)",
                "6:5: `smtp_alert`: accepted, not acted on (lb sends no e-mail)",
                "9:9: `SMTP_CHECK`: accepted, not acted on (lb has no such checker): this real \
                 server is not checked by it",
            ],
        ),
        (
            "a setting given twice",
            with_head(
                &[
                    &[
                        "    delay_loop 5",
                        "    delay_loop 10",
                        "    lvs_sched rr",
                        "    lb_algo wrr",
                    ],
                    TAIL,
                ]
                .concat(),
            ),
            &[
                "6:5: `delay_loop` sets delay_loop again (first set at line 5): the last one \
                 counts, as in keepalived",
                "8:5: `lb_algo` sets the scheduler again (first set at line 7): the last one \
                 counts, as in keepalived",
            ],
        ),
        (
            "per-real settings lb has per service",
            with_head(&[
                "    delay_loop 10",
                "    real_server 192.0.2.11 80 {",
                "        delay_loop 10",
                "        alpha",
                "        TCP_CHECK {",
                "            delay_loop 3",
                "        }",
                "    }",
                "}",
            ]),
            &[
                "8:9: `alpha` here: accepted, not acted on (lb sets alpha per virtual_server, where \
                 it is off)",
                "10:24: `delay_loop` 3s here: accepted, not acted on (lb checks all the real \
                 servers of a virtual server every delay_loop of the virtual_server, here 10s)",
            ],
        ),
        (
            "a script's user, reply data",
            with_head(&[
                "    real_server 192.0.2.11 80 {",
                "        notify_up /usr/local/bin/up.sh nobody",
                "        UDP_CHECK {",
                "            payload 0a 0b",
                "            require_reply 0a",
                "        }",
                "    }",
                "}",
            ]),
            &[
                "6:40: `notify_up` runs as `nobody`: accepted, not acted on (lb runs scripts as \
                 its own user); quote a command that has arguments",
                "9:27: the reply data of `require_reply`: accepted, not acted on (lb accepts any \
                 reply)",
            ],
        ),
        (
            "a command with unquoted arguments",
            with_head(&[
                "    real_server 192.0.2.11 80 {",
                "        MISC_CHECK {",
                "            misc_path /usr/local/bin/check.sh 192.0.2.11",
                "        }",
                "    }",
                "}",
            ]),
            &["7:47: `misc_path` runs `/usr/local/bin/check.sh` alone: the words after it are \
               accepted, not acted on (as in keepalived); quote a command that has arguments"],
        ),
        (
            "blocks lb does not implement",
            vec!["static_ipaddress {", "    192.0.2.1/24 dev eth0", "}", "use_pid_dir"],
            &[
                "1:1: `static_ipaddress`: accepted, not acted on (lb does not implement it)",
                "4:1: `use_pid_dir`: accepted, not acted on (lb does not implement it)",
            ],
        ),
        (
            "VRRP keywords lb does not act on",
            vec![
                "global_defs {",
                "    vrrp_strict",
                "    vrrp_mcast_group4 224.0.0.19",
                "    vrrp_garp_master_refresh 60",
                "}",
                "vrrp_instance VI_1 {",
                "    interface eth0",
                "    virtual_router_id 1",
                "    use_vmac",
                "    smtp_alert",
                "    garp_master_refresh 60",
                "    track_file {",
                "        /run/lb-weight",
                "    }",
                "    virtual_routes {",
                "        192.0.2.0/24 via 192.0.2.254",
                "    }",
                "    unicast_peer {",
                "        192.0.2.2 min_ttl 1",
                "    }",
                "    virtual_ipaddress {",
                "        192.0.2.100/24 dev eth0 brd 192.0.2.255 scope global",
                "    }",
                "}",
                "vrrp_sync_group G {",
                "    group {",
                "        VI_1",
                "    }",
                "    notify /usr/local/bin/notify.sh",
                "    track_script {",
                "        chk",
                "    }",
                "}",
            ],
            &[
                "2:5: `vrrp_strict`: accepted, not acted on (lb's VRRP does not implement it)",
                "3:5: `vrrp_mcast_group4`: accepted, not acted on (lb sends its multicast adverts to \
                 224.0.0.18 and ff02::12, VRRP's groups)",
                "4:5: `vrrp_garp_master_refresh`: accepted, not acted on (lb sends \
                 `garp_master_repeat` gratuitous ARPs on becoming MASTER, and again after \
                 `garp_master_delay`)",
                "9:5: `use_vmac`: accepted, not acted on (lb adds the addresses on the instance's \
                 `interface`, with its own MAC address)",
                "10:5: `smtp_alert`: accepted, not acted on (lb sends no e-mail)",
                "11:5: `garp_master_refresh`: accepted, not acted on (lb sends \
                 `garp_master_repeat` gratuitous ARPs on becoming MASTER, and again after \
                 `garp_master_delay`)",
                "12:5: `track_file`: accepted, not acted on (lb tracks interfaces \
                 (`track_interface`) and scripts (`track_script`) only)",
                "15:5: `virtual_routes`: accepted, not acted on (lb adds no routes or rules on \
                 becoming MASTER)",
                "19:19: `min_ttl` after unicast peer 192.0.2.2: accepted, not acted on (lb checks \
                 neither the TTL nor the source of the adverts per peer)",
                "22:33: `brd 192.0.2.255` of virtual address 192.0.2.100/24: accepted, not acted \
                 on (lb adds virtual addresses with the kernel's defaults)",
                "22:49: `scope global` of virtual address 192.0.2.100/24: accepted, not acted on \
                 (lb adds virtual addresses with the kernel's defaults)",
                "29:5: `notify`: accepted, not acted on (lb runs a sync group's notify_master, \
                 notify_backup and notify_fault only; its instances' own notify scripts run as \
                 usual)",
                "30:5: `track_script`: accepted, not acted on (lb tracks interfaces and scripts \
                 per vrrp_instance: track them in each instance of the group)",
            ],
        ),
        (
            "tracking weights in a sync group: ignored, as keepalived",
            vec![
                "vrrp_script chk {",
                "    script /bin/true",
                "    weight -20",
                "}",
                "vrrp_instance VI_1 {",
                "    interface eth0",
                "    virtual_router_id 1",
                "    virtual_ipaddress {",
                "        192.0.2.100",
                "    }",
                "    track_interface {",
                "        eth1 weight -10",
                "    }",
                "    track_script {",
                "        chk",
                "        chk weight 0",
                "    }",
                "}",
                "vrrp_sync_group G {",
                "    group {",
                "        VI_1",
                "    }",
                "}",
            ],
            &[
                "12:9: the weight of tracked interface `eth1` is ignored, as keepalived ignores \
                 it: vrrp_instance `VI_1` is in vrrp_sync_group `G`, which has no \
                 `sync_group_tracking_weight`; the instance goes to FAULT while the link is down",
                "15:9: tracked script `chk` has a weight, so it is not tracked, as keepalived does \
                 not track it: vrrp_instance `VI_1` is in vrrp_sync_group `G`, which has no \
                 `sync_group_tracking_weight`",
            ],
        ),
        (
            "an include matching no file",
            vec!["include /nonexistent-lb-test/*.conf"],
            &["1:9: `include /nonexistent-lb-test/*.conf` matches no file"],
        ),
    ];
    for (name, lines, expected) in scenarios {
        let text = doc(&lines);
        let warnings: Vec<String> = loaded(&text)
            .warnings
            .iter()
            .map(|w| format!("{}:{}: {}", w.line, w.col, w.message))
            .collect();
        assert_eq!(warnings, *expected, "{name}:\n{text}");
    }
}

#[test]
fn strict_makes_warnings_errors() {
    let text = doc(&[&["global_defs {", "    router_id lb1", "}"], HEAD, TAIL].concat());
    assert_eq!(loaded(&text).warnings.len(), 1);
    let errors = parse(&text, Path::new(SOURCE), &Host, true).unwrap_err();
    assert_eq!(
        shown(&errors.0),
        ["keepalived.conf:2:5: warning: `router_id`: accepted, not acted on (it names this \
          director only in keepalived's e-mail and SNMP) (an error with --strict)"]
    );
    // With errors too, all of them, in file order.
    let text =
        doc(&[&["global_defs {", "    router_id lb1", "    bogus", "}"], HEAD, TAIL].concat());
    let errors = parse(&text, Path::new(SOURCE), &Host, true).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors}");
    assert!(errors.0[1].message.starts_with("unknown keyword `bogus`"), "{errors}");
}

/// keepalived's lexical rules, and what lb adds for messy files.
#[test]
fn lexical_rules() {
    let cases: Vec<(&str, String)> = vec![
        (
            "comments anywhere, `\\#` and quoted `#` kept",
            doc(&[
                "! a comment",
                "# another",
                "virtual_server 192.0.2.100 80 { # trailing",
                "    lb_interface eth0 ! trailing too",
                "    lb_kind DR",
                "    protocol TCP",
                "    quorum_up \"/bin/echo up # not a comment\"",
                "    quorum_down /bin/echo\\#down",
                "    real_server 192.0.2.11 80 {",
                "    }",
                "}",
            ]),
        ),
        (
            "braces without spaces, blocks on one line, `{` on the next line",
            doc(&[
                "virtual_server 192.0.2.100 80",
                "{",
                "    lb_interface eth0",
                "    lb_kind DR",
                "    protocol TCP",
                "    quorum_up \"/bin/echo up\"",
                "    quorum_down /bin/echo#down",
                "    real_server 192.0.2.11 80{weight 1}",
                "}",
            ]),
        ),
        (
            "line continuation, tabs, CRLF, byte order mark",
            "\u{feff}virtual_server 192.0.2.100 \\\r\n\t80 {\r\n\tlb_interface eth0\r\n\tlb_kind DR\r\n\tprotocol TCP\r\n\tquorum_up \"/bin/echo up\"\r\n\tquorum_down /bin/echo\r\n\treal_server 192.0.2.11 80 { }\r\n}\r\n"
                .to_owned(),
        ),
    ];
    for (name, text) in cases {
        let loaded = loaded(&text);
        assert!(loaded.warnings.is_empty(), "{name}: {:?}", shown(&loaded.warnings));
        let vs = &loaded.config.virtual_servers;
        assert_eq!(vs.len(), 1, "{name}");
        assert_eq!(vs[0].to_string(), "192.0.2.100:80/tcp", "{name}");
        assert_eq!(vs[0].real_servers.len(), 1, "{name}");
        let up = vs[0].health.quorum_up.as_deref().unwrap();
        assert!(up == "/bin/echo up # not a comment" || up == "/bin/echo up", "{name}: {up}");
        let down = vs[0].health.quorum_down.as_deref().unwrap();
        assert!(down == "/bin/echo#down" || down == "/bin/echo", "{name}: {down}");
    }
    // After the continuation, the port is on line 2, column 2 (after the tab).
    let text = "virtual_server 192.0.2.100 \\\n\t70000 {\n}\n";
    assert_eq!(
        errors_of(text),
        ["keepalived.conf:2:2: the port must be between 0 and 65535, found 70000"]
    );
}

/// Invalid UTF-8 in a comment is harmless; in a value, an error.
#[test]
fn invalid_utf8_only_matters_in_values() {
    let dir = TempDir::new("utf8");
    let path = dir.path.join("latin1.conf");
    let mut bytes = doc(&[HEAD, TAIL].concat()).into_bytes();
    bytes.extend(b"! caf\xe9 au lait\n");
    std::fs::write(&path, &bytes).unwrap();
    assert!(load(&path, &Host, false).is_ok());
    bytes.extend(b"global_defs {\n    router_id caf\xe9\n}\n");
    std::fs::write(&path, &bytes).unwrap();
    let errors = dir.strip(shown(&load(&path, &Host, false).unwrap_err().0));
    assert_eq!(
        errors,
        ["latin1.conf:11:15: this value is not valid UTF-8 text (the file may use another \
          encoding, like Latin-1): retype it"]
    );
}

/// Includes: globs and alternatives relative to the including file, an include inside a
/// block, warnings and locations in the file that has them.
#[test]
fn includes_are_read_where_they_stand() {
    let dir = TempDir::new("includes");
    let main = dir.write(
        "keepalived.conf",
        &[
            "global_defs {",
            "    router_id lb1",
            "}",
            "include vrrp/*.conf",
            "include services/{web,dns}.conf",
        ],
    );
    dir.write(
        "vrrp/10-vi.conf",
        &[
            "vrrp_instance VI_1 {",
            "    interface eth1",
            "    virtual_router_id 10",
            "    virtual_ipaddress {",
            "        192.0.2.100/24",
            "        192.0.2.53/24",
            "    }",
            "}",
        ],
    );
    dir.write("vrrp/README", &["not a .conf: not included"]);
    dir.write(
        "services/web.conf",
        &[
            "virtual_server 192.0.2.100 80 {",
            "    lb_kind DR",
            "    protocol TCP",
            "    lb_algo mh",
            "    include reals/web-*.conf",
            "}",
        ],
    );
    dir.write("services/reals/web-1.conf", &["real_server 192.0.2.11 80 {", "    weight 2", "}"]);
    dir.write(
        "services/reals/web-2.conf",
        &["real_server 192.0.2.12 80 {", "    weight 1", "    snmp_name web2", "}"],
    );
    dir.write(
        "services/dns.conf",
        &[
            "virtual_server 192.0.2.53 53 {",
            "    lb_kind DR",
            "    protocol UDP",
            "    lb_algo mh",
            "    real_server 192.0.2.21 53 {",
            "        DNS_CHECK {",
            "            name example.org",
            "        }",
            "    }",
            "}",
        ],
    );
    let loaded = load(&main, &Host, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        summary(&loaded.config),
        [
            "192.0.2.100:80/tcp on eth1 mh persistence None/32 delay_loop 60s alpha false omega \
             false quorum 1±0 up None down None inhibit false",
            "  -> 192.0.2.11:80 weight 2 inhibit false up None down None",
            "  -> 192.0.2.12:80 weight 1 inhibit false up None down None",
            "192.0.2.53:53/udp on eth1 mh persistence None/32 delay_loop 60s alpha false omega \
             false quorum 1±0 up None down None inhibit false",
            "  -> 192.0.2.21:53 weight 1 inhibit false up None down None",
            "     DNS_CHECK Dns(DnsCheck { name: \"example.org\", qtype: \"SOA\" }) timeout 5s ip \
             None port None bindto None retry 3 after 60s warmup Some(60s)",
        ]
    );
    assert_eq!(
        dir.strip(shown(&loaded.warnings)),
        [
            "keepalived.conf:2:5: warning: `router_id`: accepted, not acted on (it names this \
             director only in keepalived's e-mail and SNMP)",
            "services/reals/web-2.conf:3:5: warning: `snmp_name`: accepted, not acted on (lb has \
             no SNMP agent; see `lb backends` and its metrics)",
        ]
    );
    assert_eq!(
        dir.strip(shown(&loaded.notices)),
        ["services/dns.conf:6:9: notice: 192.0.2.53:53/udp: dns_check of real server \
          192.0.2.21:53: retry 3 × delay_before_retry 60s is not below delay_loop 60s: a down real \
          is detected only after up to 200s (4 attempts of up to 5s, 60s apart), longer than \
          delay_loop"]
    );
    // The model's locations are lines of the files that define them.
    let web = &loaded.config.virtual_servers[0];
    assert_eq!(web.location, at(1, 1));
    assert_eq!(web.interface_at(), at(2, 15));
    assert_eq!(web.real_servers[1].location, at(1, 1));
    assert_eq!(web.real_servers[1].weight_at(), at(2, 12));
    assert_eq!(loaded.config.source, main);
}

#[test]
fn include_errors_name_the_file_that_has_them() {
    // (name, files (the first is read), every error expected)
    type Files = &'static [(&'static str, &'static [&'static str])];
    let cases: &[(&str, Files, &[&str])] = &[
        (
            "missing file",
            &[("main.conf", &["global_defs {", "}", "include missing.conf"])],
            &["main.conf:3:9: cannot read included file `missing.conf`: No such file or \
               directory (os error 2)"],
        ),
        (
            "cycle",
            &[("a.conf", &["include b.conf"]), ("b.conf", &["! b includes a", "include a.conf"])],
            &["b.conf:2:9: include cycle: `a.conf` includes `b.conf` includes `a.conf`"],
        ),
        (
            "including itself",
            &[("a.conf", &["include ./a.conf"])],
            &["a.conf:1:9: include cycle: `a.conf` includes `./a.conf`"],
        ),
        (
            "errors inside included files, and in the includer, in file order",
            &[
                ("main.conf", &["include lvs.conf", "include vrrp.conf", "bogus_block {", "}"]),
                (
                    "lvs.conf",
                    &[
                        "virtual_server 192.0.2.100 80 {",
                        "    lb_kind DR",
                        "    protocol TCP",
                        "    real_server 192.0.2.11 80 {",
                        "        weigth 1",
                        "    }",
                        "}",
                        "virtual_server 192.0.2.100 80 {",
                        "    lb_kind DR",
                        "    protocol TCP",
                        "    real_server 192.0.2.12 80 {",
                        "    }",
                        "}",
                    ],
                ),
                (
                    "vrrp.conf",
                    &[
                        "vrrp_instance VI_1 {",
                        "    interface eth9",
                        "    virtual_router_id 300",
                        "    virtual_ipaddress {",
                        "        192.0.2.100",
                        "    }",
                        "}",
                    ],
                ),
            ],
            &[
                "main.conf:3:1: unknown keyword `bogus_block` at the top level",
                "lvs.conf:5:9: unknown keyword `weigth` in real_server; did you mean `weight`?",
                "lvs.conf:8:1: duplicate virtual server 192.0.2.100:80/tcp: already defined at \
                 line 1",
                "vrrp.conf:2:15: interface `eth9` does not exist on this host",
                "vrrp.conf:3:23: `virtual_router_id` must be between 1 and 255, found 300",
            ],
        ),
        (
            "a duplicate in another file",
            &[
                ("main.conf", &["include web.conf", "include web-again.conf"]),
                (
                    "web.conf",
                    &[
                        "virtual_server 192.0.2.100 80 {",
                        "    lb_interface eth0",
                        "    lb_kind DR",
                        "    protocol TCP",
                        "    real_server 192.0.2.11 80 {",
                        "    }",
                        "}",
                    ],
                ),
                (
                    "web-again.conf",
                    &[
                        "",
                        "virtual_server 192.0.2.100 80 {",
                        "    lb_interface eth0",
                        "    lb_kind DR",
                        "    protocol TCP",
                        "    real_server 192.0.2.11 80 {",
                        "    }",
                        "}",
                    ],
                ),
            ],
            &[
                "web-again.conf:2:1: duplicate virtual server 192.0.2.100:80/tcp: already defined at \
               line 1 of {DIR}/web.conf",
            ],
        ),
        (
            "include syntax",
            &[(
                "main.conf",
                &["include", "include a.conf b.conf", "global_defs { include x.conf }"],
            )],
            &[
                "main.conf:1:1: `include` needs a file name or pattern: include FILE",
                // keepalived takes the rest of the line as the name.
                "main.conf:2:9: cannot read included file `a.conf b.conf`: No such file or \
                 directory (os error 2)",
                "main.conf:3:15: `include` must be the first word of its line",
            ],
        ),
    ];
    for (name, files, expected) in cases {
        let dir = TempDir::new("include-errors");
        let paths: Vec<PathBuf> =
            files.iter().map(|(file, lines)| dir.write(file, lines)).collect();
        let errors = load(&paths[0], &Host, false).unwrap_err();
        let expected: Vec<String> =
            expected.iter().map(|e| e.replace("{DIR}", &dir.path.display().to_string())).collect();
        let expected = dir.strip(expected);
        assert_eq!(dir.strip(shown(&errors.0)), expected, "{name}");
    }
}

#[test]
fn includes_nested_too_deep_are_not_followed() {
    let dir = TempDir::new("deep");
    let depth = reader::MAX_INCLUDE_DEPTH + 2;
    for i in 0..depth {
        let include = format!("include f{}.conf", i + 1);
        dir.write(&format!("f{i}.conf"), &[&include]);
    }
    dir.write(&format!("f{depth}.conf"), &["global_defs {", "}"]);
    let errors = load(&dir.path.join("f0.conf"), &Host, false).unwrap_err();
    let deepest = reader::MAX_INCLUDE_DEPTH;
    assert_eq!(
        dir.strip(shown(&errors.0)),
        [format!(
            "f{deepest}.conf:1:9: includes are nested more than {deepest} deep here: `f{}.conf` is \
             not read",
            deepest + 1
        )]
    );
}

#[test]
fn format_is_told_by_content_then_name() {
    let cases = [
        ("lb.toml", "[[virtual_server]]\nvip = '192.0.2.1'\n", Format::Toml),
        ("lb.conf", "# native, whatever the name\nvip = '192.0.2.1'\n", Format::Toml),
        ("lb.conf", "dataplane.icmp_echo = false\n", Format::Toml),
        ("keepalived.conf", "! Configuration File for keepalived\n", Format::Keepalived),
        ("lb.toml", "global_defs {\n}\n", Format::Keepalived),
        ("lb", "\n# a comment\nvirtual_server 192.0.2.1 80 {\n", Format::Keepalived),
        ("lb", "virtual_server 192.0.2.1 80\n{\n", Format::Keepalived),
        ("lb", "include /etc/keepalived/conf.d/*.conf\n", Format::Keepalived),
        ("keepalived.conf", "", Format::Keepalived),
        ("keepalived.conf", "# only comments\n", Format::Keepalived),
        ("lb.toml", "", Format::Toml),
        ("lb", "", Format::Toml),
    ];
    for (name, text, expected) in cases {
        assert_eq!(detect(Path::new(name), text), expected, "{name}: {text:?}");
    }
}

#[test]
fn load_any_reads_either_format() {
    let dir = TempDir::new("load-any");
    let toml = dir.write(
        "lb.conf",
        &[
            "[[virtual_server]]",
            "vip = '192.0.2.1'",
            "port = 80",
            "interface = 'eth0'",
            "lb_algo = 'rr'",
        ],
    );
    let keepalived = dir.write(
        "keepalived.conf",
        &[&["global_defs {", "    router_id x", "}"], HEAD, TAIL].concat(),
    );
    let broken = dir.write("broken.conf", &["virtual_server 192.0.2.1 80 {"]);

    let loaded = load_any(&toml, &Host, false).unwrap();
    assert_eq!(loaded.format, Format::Toml);
    assert_eq!(loaded.config.virtual_servers.len(), 1);
    assert!(loaded.warnings.is_empty());
    assert_eq!(loaded.notices.len(), 1, "the scheduler notice");

    let loaded = load_any(&keepalived, &Host, false).unwrap();
    assert_eq!(loaded.format, Format::Keepalived);
    assert_eq!(loaded.config.virtual_servers.len(), 1);
    assert_eq!(
        dir.strip(shown(&loaded.warnings)),
        [
            "keepalived.conf:2:5: warning: `router_id`: accepted, not acted on (it names this director only in keepalived's e-mail and SNMP)"
        ]
    );
    assert_eq!(load_any_strict(&keepalived, &Host).unwrap_err().len(), 1);
    assert_eq!(load_any_strict(&toml, &Host).unwrap().format, Format::Toml);

    assert_eq!(
        dir.strip(shown(&load_any(&broken, &Host, false).unwrap_err().0)),
        ["broken.conf:1:29: unbalanced `{`: this block is never closed (a `}` is missing)"]
    );
    let missing = dir.path.join("missing.conf");
    let errors = load_any(&missing, &Host, false).unwrap_err();
    assert!(
        dir.strip(shown(&errors.0))[0]
            .starts_with("missing.conf:1:1: cannot read configuration file: ")
    );
}

/// The documentation's examples are what operators copy: each must be valid as written.
#[test]
fn examples_in_the_documentation_are_valid() {
    let reference = include_str!("../../../../docs/keepalived.md");
    let blocks: Vec<&str> = reference
        .split("```keepalived\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .collect();
    assert!(!blocks.is_empty(), "no keepalived examples found in docs/keepalived.md");
    for block in blocks {
        if let Err(errors) = parse(block, Path::new("docs/keepalived.md"), &Host, false) {
            panic!("{errors}\nin:\n{block}");
        }
    }
}

/// Files saved on Windows (CRLF line ends) and tab/space mixes read exactly like the original
/// (locations aside: a tab is one column).
#[test]
fn crlf_and_tab_indented_files_give_the_same_model() {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("location");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let model = |text: &str| {
        let loaded = parse(text, Path::new("/etc/keepalived/keepalived.conf"), &Host, false)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut v = serde_json::to_value(&loaded.config).expect("serialise");
        strip(&mut v);
        v
    };
    let original = include_str!("fixtures/classic-dr.conf");
    let plain = model(original);
    let crlf = parse(&original.replace('\n', "\r\n"), Path::new("k.conf"), &Host, false)
        .unwrap_or_else(|e| panic!("{e}"));
    let lf = parse(original, Path::new("k.conf"), &Host, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        crlf.config.virtual_servers, lf.config.virtual_servers,
        "CRLF: same model, same places"
    );
    for text in
        [original.replace("    ", "\t"), original.replace("    ", " \t ").replace('\n', "\r\n")]
    {
        assert_eq!(model(&text), plain);
    }
}

/// keepalived's files nest a few blocks deep; one nesting thousands (a typo or an attack) used to
/// overflow the stack and kill the agent on reload.
#[test]
fn blocks_nested_too_deep_are_an_error() {
    // `global_defs` then `{ ` and `} ` DEPTH times each; the 33rd `{` is at column 13 + 2 * 32.
    let nested = |opens: usize, closes: usize| {
        format!("global_defs {}{}\n", "{ ".repeat(opens), "} ".repeat(closes))
    };
    let too_deep = "keepalived.conf:1:77: blocks are nested more than 32 deep here: this block and \
                    what it holds are not read";
    // (opens, closes, whether the depth error is expected)
    let cases = [
        (32, 32, false),
        (33, 33, true),
        (2_000, 2_000, true),
        (100_000, 100_000, true),
        // Never closed: each open level is reported too, but nothing overflows.
        (100_000, 0, true),
    ];
    for (opens, closes, deep) in cases {
        let text = nested(opens, closes);
        let errors = errors_of(&text);
        let depth_errors = errors.iter().filter(|e| e.contains("nested more than")).count();
        assert_eq!(depth_errors, usize::from(deep), "{opens}/{closes}: {errors:?}");
        if deep {
            assert!(errors.contains(&too_deep.to_owned()), "{opens}/{closes}: {errors:?}");
        }
        if opens == closes {
            assert!(!errors.iter().any(|e| e.contains("unbalanced")), "{opens}: {errors:?}");
        }
    }
}

/// Whatever an include names, reading stays bounded: only regular files, each and all together
/// within a size, a number of files, patterns that do not explode. Each limit is a located error.
#[test]
fn includes_are_read_within_limits() {
    let dir = TempDir::new("limits");
    let fifo = dir.path.join("pipe.conf");
    let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    // Sparse: 16 MiB + 1 byte costs no disk.
    let big = std::fs::File::create(dir.path.join("big.conf")).unwrap();
    big.set_len((16 << 20) + 1).unwrap();
    for i in 0..6 {
        dir.write(&format!("many/f{i}.conf"), &["! 40 bytes of comment ................."]);
    }
    let small = reader::Limits {
        files: 4,
        total_bytes: 1000,
        glob: glob::Limits { alternatives: 8, paths: 5, ..glob::Limits::DEFAULT },
        ..reader::Limits::DEFAULT
    };
    let tight = reader::Limits { total_bytes: 100, ..reader::Limits::DEFAULT };
    let long = format!("include {}", "x/".repeat(2100));
    // (name, limits, main file, every error expected)
    let cases: &[(&str, &reader::Limits, &[&str], &[&str])] = &[
        (
            "a device",
            &reader::Limits::DEFAULT,
            &["include /dev/zero"],
            &["main.conf:1:9: cannot read included file `/dev/zero`: it is a character device, \
               not a regular file"],
        ),
        (
            "a FIFO, which must not block",
            &reader::Limits::DEFAULT,
            &["include pipe.conf"],
            &["main.conf:1:9: cannot read included file `pipe.conf`: it is a named pipe (FIFO), \
               not a regular file"],
        ),
        (
            "a file too large",
            &reader::Limits::DEFAULT,
            &["include big.conf"],
            &[
                "main.conf:1:9: cannot read included file `big.conf`: it is larger than 16 MiB, the \
               limit for one configuration file",
            ],
        ),
        (
            "too many files",
            &small,
            &["include many/f{0,1,2,3,4}.conf"],
            &["main.conf:1:9: more than 4 files are included: `many/f4.conf` and the files after \
               it are not read"],
        ),
        (
            "too many bytes together (the main file counts)",
            &tight,
            &["include many/f{0,1}.conf"],
            &["main.conf:1:9: the included files total more than 0 MiB with `many/f1.conf`: it \
               and the files after it are not read"],
        ),
        (
            "too many alternatives",
            &small,
            &["include many/f{0,1,2}{0,1,2}.conf"],
            &["main.conf:1:9: `include many/f{0,1,2}{0,1,2}.conf`: its `{...}` alternatives make \
               more than 8 patterns; nothing is read"],
        ),
        (
            "too many paths",
            &small,
            &["include many/*.conf"],
            &["main.conf:1:9: `include many/*.conf`: it matches more than 5 paths; nothing is \
               read"],
        ),
        (
            "a pattern longer than a path",
            &reader::Limits::DEFAULT,
            &[&long],
            &["main.conf:1:9: this include pattern is 4200 bytes long; a path is at most 4096 \
               (PATH_MAX)"],
        ),
    ];
    for (name, limits, lines, expected) in cases {
        let main = dir.write("main.conf", lines);
        let text = std::fs::read_to_string(&main).unwrap();
        let errors = parse_within(&text, &main, &Host, false, limits).unwrap_err();
        assert_eq!(dir.strip(shown(&errors.0)), *expected, "{name}");
    }
    // A limit reached is reported even after a thousand other errors: it explains what is missing.
    let mut lines = vec!["}"; 1200];
    lines.push("include many/f{0,1,2,3,4}.conf");
    let main = dir.write("main.conf", &lines);
    let text = std::fs::read_to_string(&main).unwrap();
    let four = reader::Limits { files: 4, ..reader::Limits::DEFAULT };
    let errors = dir.strip(shown(&parse_within(&text, &main, &Host, false, &four).unwrap_err().0));
    // The limit, 999 of the `}`, and how many more there are.
    assert_eq!(errors.len(), 1001, "{errors:?}");
    assert!(
        errors.contains(
            &"main.conf:1201:9: more than 4 files are included: `many/f4.conf` and \
                               the files after it are not read"
                .to_owned()
        ),
        "{errors:?}"
    );
}

/// The file `lb run -c` names is read under the same rules as its includes.
#[test]
fn the_main_file_must_be_a_regular_file_of_bounded_size() {
    let dir = TempDir::new("main-limits");
    let big = dir.path.join("big.conf");
    std::fs::File::create(&big).unwrap().set_len((16 << 20) + 1).unwrap();
    let cases = [
        (Path::new("/dev/zero"), "it is a character device, not a regular file"),
        (big.as_path(), "it is larger than 16 MiB, the limit for one configuration file"),
        (dir.path.as_path(), "it is a directory, not a regular file"),
    ];
    for (path, expected) in cases {
        let toml = crate::config::load(path, FormatChoice::Toml, &Host, Strictness::Lenient);
        for result in [load(path, &Host, false), load_any(path, &Host, false), toml] {
            let errors = result.unwrap_err();
            let want =
                format!("{}:1:1: cannot read configuration file: {expected}", path.display());
            assert_eq!(shown(&errors.0), [want], "{}", path.display());
        }
    }
}

/// A mistake repeated a million times is reported a thousand times, then counted.
#[test]
fn errors_are_reported_up_to_a_thousand() {
    let errors = errors_of(&"}\n".repeat(1500));
    assert_eq!(errors.len(), 1001);
    assert_eq!(
        errors[999],
        "keepalived.conf:1000:1: unbalanced `}`: there is no open block to close"
    );
    assert_eq!(
        errors[1000],
        "keepalived.conf:1001:1: 500 more errors from here on are not reported (only the first \
         1000 problems are)"
    );
}

/// `lvs_sync_daemon` becomes `[flow_sync]` (acted on, no warning); bad values are located.
#[test]
fn lvs_sync_daemon_is_flow_sync() {
    let with = |line: &str| {
        let lines = [
            "global_defs {",
            line,
            "}",
            "vrrp_instance VI_1 {",
            "    interface eth0",
            "    virtual_router_id 51",
            "    virtual_ipaddress {",
            "        192.0.2.100",
            "    }",
            "}",
        ];
        doc(&[&lines[..], HEAD, TAIL].concat())
    };
    let l = loaded(&with("    lvs_sync_daemon eth0"));
    assert!(l.warnings.is_empty(), "{:?}", shown(&l.warnings));
    let s = l.config.flow_sync.expect("flow_sync");
    let got = (s.interface.as_str(), s.sync_id, s.group.to_string(), s.port, s.ttl, s.max_len);
    assert_eq!(got, ("eth0", 0, "224.0.0.81".to_owned(), 8848, 1, 1472));
    assert_eq!(s.vrrp_instance, None);
    let line = "    lvs_sync_daemon eth0 VI_1 id 5 maxlen 1400 port 8850 ttl 2 group 239.1.2.3";
    let s = loaded(&with(line)).config.flow_sync.expect("flow_sync");
    let got = (s.sync_id, s.group.to_string(), s.port, s.ttl, s.max_len);
    assert_eq!(got, (5, "239.1.2.3".to_owned(), 8850, 2, 1400));
    assert_eq!(s.vrrp_instance.as_deref(), Some("VI_1"));
    // Scenario table: the line → the error, located.
    let cases: &[(&str, &str)] = &[
        ("    lvs_sync_daemon eth0 id 256", "keepalived.conf:2:29: the sync id must be"),
        (
            "    lvs_sync_daemon eth0 group 192.0.2.1",
            "keepalived.conf:2:32: the sync group must be a multicast",
        ),
        ("    lvs_sync_daemon eth0 maxlen 10", "keepalived.conf:2:33: `maxlen` must be"),
        (
            "    lvs_sync_daemon eth0 ttl",
            "keepalived.conf:2:26: `lvs_sync_daemon` `ttl` needs a value",
        ),
        (
            "    lvs_sync_daemon eth0 VI_1 bogus 1",
            "keepalived.conf:2:31: unknown `lvs_sync_daemon` option `bogus`",
        ),
        (
            "    lvs_sync_daemon eth0 VI_9",
            "keepalived.conf:2:5: `lvs_sync_daemon` names no vrrp_instance `VI_9`",
        ),
    ];
    for (line, want) in cases {
        let errors = errors_of(&with(line));
        assert!(errors.len() == 1 && errors[0].starts_with(want), "{line}: {errors:?}");
    }
}
