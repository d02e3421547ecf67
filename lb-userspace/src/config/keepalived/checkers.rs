//! The checkers of a real server (`TCP_CHECK`, `HTTP_GET`, `SSL_GET`, `MISC_CHECK`, `DNS_CHECK`,
//! `UDP_CHECK`, `PING_CHECK`): read into specs, then built into the model with the defaults of
//! their real and virtual servers and keepalived's own, which depend on the kind of checker.

use std::net::IpAddr;
use std::time::Duration;

use super::super::health::{
    CheckKind, DEFAULT_CONNECT_TIMEOUT, DnsCheck, HealthCheck, HttpCheck, MiscCheck, UdpCheck,
    UrlCheck,
};
use super::super::model::{Location, Spans};
use super::keywords::{Checker, Section};
use super::lvs::{Defaults, MAX_SECONDS, default_setting};
use super::tree::{Stmt, Word};
use super::values::{Cx, Seen};

/// Largest UDP payload an IPv4 datagram carries.
const MAX_UDP_PAYLOAD: usize = 65_507;

/// Query types DNS_CHECK sends.
const DNS_TYPES: &[&str] = &["A", "AAAA", "NS", "SOA", "MX", "TXT", "CNAME", "PTR"];

/// A checker block as written.
#[derive(Debug)]
pub(super) struct CheckSpec {
    checker: Checker,
    at: Location,
    connect_ip: Option<(IpAddr, Location)>,
    connect_port: Option<u16>,
    bindto: Option<(IpAddr, Location)>,
    /// Its own settings that real and virtual servers also have.
    pub own: Defaults,
    urls: Vec<UrlCheck>,
    virtualhost: Option<String>,
    sni: Sni,
    misc_path: Option<String>,
    misc_timeout: Option<u32>,
    misc_dynamic: bool,
    dns_name: Option<String>,
    dns_type: Option<String>,
    payload: Option<Vec<u8>>,
    require_reply: bool,
}

/// How SSL_GET names the server it connects to.
#[derive(Debug)]
enum Sni {
    None,
    /// `enable_sni`: send the virtualhost.
    Enable(Location),
    /// `sni_name NAME`.
    Name(String),
}

/// One checker block: `None` after an error in it.
pub(super) fn check(cx: &mut Cx<'_>, stmt: &Stmt, checker: Checker) -> Option<CheckSpec> {
    let errors = cx.errors();
    let section = Section::Checker(checker);
    if let Some(extra) = stmt.values().first() {
        cx.error(extra.at, format!("`{}` takes no value", checker.keyword()));
    }
    let block = cx.block(stmt, &format!("{} {{ ... }}", checker.keyword()));
    let mut spec = CheckSpec {
        checker,
        at: stmt.at(),
        connect_ip: None,
        connect_port: None,
        bindto: None,
        own: Defaults::default(),
        urls: Vec::new(),
        virtualhost: None,
        sni: Sni::None,
        misc_path: None,
        misc_timeout: None,
        misc_dynamic: false,
        dns_name: None,
        dns_type: None,
        payload: None,
        require_reply: false,
    };
    let mut seen = Seen::default();
    let known = section.keywords();
    let http = matches!(checker, Checker::Http | Checker::Ssl);
    for s in block.map(|b| b.stmts.as_slice()).unwrap_or_default() {
        let name = s.name();
        if !known.contains(&name) {
            cx.unknown(s, section);
            continue;
        }
        if let Some(&setting) = known.iter().find(|&&k| k == name && k != "url") {
            let setting = match setting {
                "nb_get_retry" => "retry",
                "dns_name" => "name",
                "dns_type" => "type",
                other => other,
            };
            seen.note(cx, setting, s);
        }
        match name {
            "connect_ip" => {
                if let Some(word) = cx.value(s) {
                    spec.connect_ip = cx.ip("`connect_ip`", word).map(|a| (a, word.at));
                }
            }
            "bindto" => {
                if let Some(word) = cx.value(s) {
                    spec.bindto = cx.ip("`bindto`", word).map(|a| (a, word.at));
                }
            }
            "connect_port" => {
                if let Some(word) = cx.value(s) {
                    spec.connect_port = cx
                        .uint("`connect_port`", word, 1, u16::MAX.into())
                        .and_then(|p| u16::try_from(p).ok());
                }
            }
            "retry" | "nb_get_retry" | "delay_before_retry" | "warmup" | "connect_timeout"
            | "delay_loop" | "alpha" => default_setting(cx, s, &mut spec.own, 3),
            "bind_port" | "bind_if" | "fwmark" => {
                cx.unimplemented(
                    s,
                    "lb's checkers choose their source port and interface as the kernel routes",
                );
            }
            "log_all_failures" => cx.unimplemented(s, "lb logs every state change"),
            "url" => {
                if let Some(url) = url(cx, s) {
                    spec.urls.push(url);
                }
            }
            "virtualhost" => {
                if let Some(word) = cx.value(s) {
                    spec.virtualhost = Some(word.text.clone());
                }
            }
            "enable_sni" | "sni_name" if checker == Checker::Http => {
                cx.unimplemented(s, "HTTP_GET does not use TLS; SSL_GET does");
            }
            "enable_sni" => {
                spec.sni = match cx.flag(s) {
                    Some(true) => Sni::Enable(s.at()),
                    _ => Sni::None,
                };
            }
            "sni_name" => {
                if let Some(word) = cx.value(s) {
                    spec.sni = Sni::Name(word.text.clone());
                }
            }
            "http_protocol" | "fast_recovery" | "tls_compliant" => {
                cx.unimplemented(
                    s,
                    "lb's HTTP checks send HTTP/1.0 requests with `Connection: close`",
                );
            }
            "misc_path" => spec.misc_path = cx.command(s),
            "misc_timeout" => {
                if let Some(word) = cx.value(s) {
                    spec.misc_timeout = cx
                        .uint("`misc_timeout`", word, 0, MAX_SECONDS.into())
                        .and_then(|n| u32::try_from(n).ok());
                }
            }
            "misc_dynamic" => spec.misc_dynamic = cx.flag(s).unwrap_or(spec.misc_dynamic),
            "user" => cx.unimplemented(s, "lb runs scripts as its own user"),
            "type" | "dns_type" => {
                if let Some(word) = cx.value(s) {
                    let upper = word.text.to_ascii_uppercase();
                    if DNS_TYPES.contains(&upper.as_str()) {
                        spec.dns_type = Some(upper);
                    } else {
                        let message = format!(
                            "`{name}` must be one of {}, found \"{}\"",
                            DNS_TYPES.join(", "),
                            word.text.escape_debug()
                        );
                        cx.error(word.at, message);
                    }
                }
            }
            "name" | "dns_name" => {
                if let Some(word) = cx.value(s) {
                    spec.dns_name = Some(word.text.clone());
                }
            }
            "payload" => {
                if let Some(values) = cx.values(s, 1, usize::MAX) {
                    spec.payload = hex(cx, "`payload`", values, false);
                }
            }
            "require_reply" => {
                if let Some(values) = cx.values(s, 0, usize::MAX) {
                    spec.require_reply = true;
                    if !values.is_empty() && hex(cx, "`require_reply`", values, true).is_some() {
                        cx.warning(
                            values[0].at,
                            "the reply data of `require_reply`: accepted, not acted on (lb \
                             accepts any reply)",
                        );
                    }
                }
            }
            "min_reply_length" | "max_reply_length" => {
                if let Some(word) = cx.value(s)
                    && cx.uint(&format!("`{name}`"), word, 0, u16::MAX.into()).is_some()
                {
                    cx.unimplemented(s, "lb accepts a reply of any length");
                }
            }
            _ => {}
        }
    }
    if http && spec.urls.is_empty() && cx.clean_since(errors) {
        cx.error(
            stmt.at(),
            format!("`{}` needs at least one `url {{ path / }}`", checker.keyword()),
        );
    }
    if checker == Checker::Misc && spec.misc_path.is_none() && cx.clean_since(errors) {
        cx.error(stmt.at(), "`MISC_CHECK` needs a `misc_path`");
    }
    cx.clean_since(errors).then_some(spec)
}

/// keepalived's hex strings: hex digits, spaces anywhere, a lone digit a byte of its own
/// (`1 ab` is 01 AB); `x` a wildcard in replies.
fn hex(cx: &mut Cx<'_>, subject: &str, words: &[Word], wildcards: bool) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    for word in words {
        let digits: Vec<char> = word.text.chars().collect();
        for pair in digits.chunks(2) {
            let digit = |c: char| {
                if wildcards && c.eq_ignore_ascii_case(&'x') { Some(0) } else { c.to_digit(16) }
            };
            let value = pair.iter().try_fold(0u32, |acc, &c| Some(acc * 16 + digit(c)?));
            match value.and_then(|v| u8::try_from(v).ok()) {
                Some(byte) => bytes.push(byte),
                None => {
                    let message = format!(
                        "{subject} must be hex digits (like `0a 0b 0c`), found \"{}\"",
                        word.text.escape_debug()
                    );
                    cx.error(word.at, message);
                    return None;
                }
            }
        }
    }
    if bytes.len() > MAX_UDP_PAYLOAD {
        cx.error(
            words[0].at,
            format!("{subject} is {} bytes, more than a UDP datagram holds", bytes.len()),
        );
        return None;
    }
    Some(bytes)
}

/// `url { path PATH [digest MD5] [status_code CODE] }`.
fn url(cx: &mut Cx<'_>, stmt: &Stmt) -> Option<UrlCheck> {
    let errors = cx.errors();
    if let Some(extra) = stmt.values().first() {
        cx.error(extra.at, "`url` takes no value: url { path /PATH }");
    }
    let block = cx.block(stmt, "url { path /PATH }")?;
    let mut path = None;
    let mut digest = None;
    let mut status_code = None;
    let mut seen = Seen::default();
    for s in &block.stmts {
        let name = s.name();
        match name {
            "path" => {
                seen.note(cx, "path", s);
                if let Some(word) = cx.value(s) {
                    if word.text.starts_with('/') {
                        path = Some(word.text.clone());
                    } else {
                        cx.error(
                            word.at,
                            format!(
                                "`path` must start with \"/\", found \"{}\"",
                                word.text.escape_debug()
                            ),
                        );
                    }
                }
            }
            "digest" => {
                seen.note(cx, "digest", s);
                if let Some(word) = cx.value(s) {
                    if word.text.len() == 32 && word.text.bytes().all(|b| b.is_ascii_hexdigit()) {
                        digest = Some(word.text.to_ascii_lowercase());
                    } else {
                        cx.error(
                            word.at,
                            format!(
                                "`digest` must be an MD5 digest, 32 hex digits as genhash prints \
                                 it, found \"{}\"",
                                word.text.escape_debug()
                            ),
                        );
                    }
                }
            }
            "status_code" => {
                seen.note(cx, "status_code", s);
                if let Some(values) = cx.values(s, 1, usize::MAX) {
                    status_code = status(cx, values);
                }
            }
            "virtualhost" => {
                if cx.value(s).is_some() {
                    cx.unimplemented(s, "lb sends the checker's virtualhost for every url");
                }
            }
            "regex" | "regex_no_match" | "regex_options" | "regex_stack" | "regex_min_offset"
            | "regex_max_offset" | "tls_compliant" => {
                cx.unimplemented(s, "lb checks the status code and the digest only");
            }
            _ => cx.unknown(s, Section::Url),
        }
    }
    let Some(path) = path else {
        if cx.clean_since(errors) {
            cx.error(stmt.at(), "`url` needs a `path`");
        }
        return None;
    };
    cx.clean_since(errors).then_some(UrlCheck { path, status_code: status_code.flatten(), digest })
}

/// `status_code`: one code, or keepalived's default range 200-299 (any 2xx, `None`).
fn status(cx: &mut Cx<'_>, values: &[Word]) -> Option<Option<u16>> {
    let code = |text: &str| text.parse::<u16>().ok().filter(|c| (100..=599).contains(c));
    match values {
        [word] if word.text == "200-299" => Some(None),
        [word] => match code(&word.text) {
            Some(code) => Some(Some(code)),
            None if word.text.contains('-') => {
                cx.error(
                    word.at,
                    format!(
                        "status code range `{}` is not supported yet: give one code, or 200-299 \
                         (the default)",
                        word.text
                    ),
                );
                None
            }
            None => {
                let message = format!(
                    "`status_code` must be 100 to 599, found \"{}\"",
                    word.text.escape_debug()
                );
                cx.error(word.at, message);
                None
            }
        },
        [_, extra, ..] => {
            cx.error(
                extra.at,
                "several status codes are not supported yet: give one code, or 200-299 (the \
                 default)",
            );
            None
        }
        [] => None,
    }
}

/// The model of a checker: its own settings, else its real server's, else its virtual server's
/// (`levels`), else keepalived's default for the kind of checker.
pub(super) fn check_model(
    cx: &mut Cx<'_>,
    spec: &CheckSpec,
    levels: [&Defaults; 2],
    delay_loop: Duration,
) -> (HealthCheck, Spans) {
    let levels = [&spec.own, levels[0], levels[1]];
    let mut at = Spans::at_section(spec.at);
    let retry = match levels.iter().find_map(|d| d.retry) {
        Some((retry, written)) => {
            at.set("retry", written);
            retry
        }
        // keepalived's per-checker defaults.
        None => match spec.checker {
            Checker::Misc => 0,
            Checker::Dns => 3,
            _ => 1,
        },
    };
    let delay_before_retry =
        levels.iter().find_map(|d| d.delay_before_retry).unwrap_or(match spec.checker {
            Checker::Http | Checker::Ssl => Duration::from_secs(3),
            Checker::Dns => delay_loop,
            _ => Duration::from_secs(1),
        });
    // keepalived spreads the first checks over delay_loop unless told otherwise.
    let warmup = levels.iter().find_map(|d| d.warmup).unwrap_or(delay_loop);
    // MISC_CHECK connects to nothing: its time limit is `misc_timeout`.
    let connect_timeout = match spec.checker {
        Checker::Misc => DEFAULT_CONNECT_TIMEOUT,
        _ => levels.iter().find_map(|d| d.connect_timeout).unwrap_or(DEFAULT_CONNECT_TIMEOUT),
    };
    let virtualhost =
        spec.virtualhost.clone().or_else(|| levels.iter().find_map(|d| d.virtualhost.clone()));
    if let Some((_, written)) = spec.connect_ip {
        at.set("connect_ip", written);
    }
    if let Some((_, written)) = spec.bindto {
        at.set("bindto", written);
    }
    let kind = match spec.checker {
        Checker::Tcp => CheckKind::Tcp,
        Checker::Ping => CheckKind::Ping,
        Checker::Http | Checker::Ssl => {
            let sni = match &spec.sni {
                Sni::None => None,
                Sni::Name(name) => Some(name.clone()),
                Sni::Enable(enabled_at) => {
                    if virtualhost.is_none() {
                        cx.warning(
                            *enabled_at,
                            "`enable_sni` without a `virtualhost` or `sni_name`: accepted, not \
                             acted on (there is no server name to send)",
                        );
                    }
                    virtualhost.clone()
                }
            };
            let http = HttpCheck { urls: spec.urls.clone(), virtualhost, sni };
            if spec.checker == Checker::Http { CheckKind::Http(http) } else { CheckKind::Ssl(http) }
        }
        Checker::Misc => CheckKind::Misc(MiscCheck {
            path: spec.misc_path.clone().unwrap_or_default(),
            // keepalived: no (or 0) misc_timeout is delay_loop.
            timeout: spec
                .misc_timeout
                .filter(|&t| t > 0)
                .map_or(delay_loop, |t| Duration::from_secs(t.into())),
            dynamic: spec.misc_dynamic,
        }),
        Checker::Dns => CheckKind::Dns(DnsCheck {
            name: spec.dns_name.clone().unwrap_or_else(|| ".".to_owned()),
            qtype: spec.dns_type.clone().unwrap_or_else(|| "SOA".to_owned()),
        }),
        Checker::Udp => CheckKind::Udp(UdpCheck {
            payload: spec.payload.clone().unwrap_or_default(),
            require_reply: spec.require_reply,
        }),
    };
    let check = HealthCheck {
        kind,
        connect_timeout,
        connect_ip: spec.connect_ip.map(|c| c.0),
        connect_port: spec.connect_port,
        bindto: spec.bindto.map(|b| b.0),
        retry,
        delay_before_retry,
        warmup: Some(warmup).filter(|w| !w.is_zero()),
        rise: 1,
        // lb only: keepalived.conf has no such key.
        through_vip: false,
        location: spec.at,
    };
    (check, at)
}
