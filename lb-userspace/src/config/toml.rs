//! The native front end: TOML text to [`Config`], reporting syntax, unknown-key, type and range
//! errors at the offending key or value.
//!
//! The document is parsed into `toml`'s spanned tree and walked by hand rather than through serde
//! derive: that is what lets us keep going after the first error, give every error its own exact
//! location and word messages in the operator's terms. Cross-field rules (duplicates, port
//! mismatch, host checks) are not here but in `validate`, shared with other front ends.
//!
//! Adding a key: add it to the section's `*_KEYS` list and read it in the section's function.

use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;

use ::toml::Spanned;
use ::toml::de::{DeString, DeTable, DeValue};

use super::error::{ConfigError, LineIndex, did_you_mean};
use super::model::{
    Config, DEFAULT_LB_ALGO, DEFAULT_WEIGHT, Location, MAX_WEIGHT, Protocol, RealServer,
    RealServerLocations, VirtualServer, VirtualServerLocations,
};

const TOP_LEVEL_KEYS: &[&str] = &["virtual_server"];
const VIRTUAL_SERVER_KEYS: &[&str] =
    &["vip", "port", "protocol", "interface", "lb_algo", "lvs_sched", "real_server"];
const REAL_SERVER_KEYS: &[&str] = &["address", "port", "weight"];

const VIRTUAL_SERVER: &str = "[[virtual_server]]";
const REAL_SERVER: &str = "[[virtual_server.real_server]]";

/// Parses `text` into the model. Sections with errors are left out of the returned config, so
/// that validation can still run on the rest without reporting consequences of the same mistake.
/// When the text is not valid TOML, only the syntax errors are returned.
pub(crate) fn parse(text: &str, source: &Path) -> (Config, Vec<ConfigError>) {
    let mut parser = Parser { source, lines: LineIndex::new(text), errors: Vec::new() };
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    let virtual_servers = if syntax_errors.is_empty() {
        parser.document(document.get_ref())
    } else {
        for error in syntax_errors {
            let span = error.span().unwrap_or(0..0);
            let mut message = format!("TOML syntax error: {}", error.message());
            // The parser does not say which key; the operator needs it when keys are far apart.
            if let Some(key) = text.get(span.clone()).filter(|_| error.message() == "duplicate key")
            {
                message = format!("{message} `{key}`");
            }
            parser.error(span, message);
        }
        Vec::new()
    };
    let config = Config { source: source.to_path_buf(), virtual_servers };
    (config, parser.errors)
}

type Key<'i> = Spanned<DeString<'i>>;
type Value<'i> = Spanned<DeValue<'i>>;

struct Parser<'t> {
    source: &'t Path,
    lines: LineIndex<'t>,
    errors: Vec<ConfigError>,
}

impl Parser<'_> {
    fn at(&self, span: Range<usize>) -> Location {
        self.lines.location(span.start)
    }

    fn error_at(&mut self, offset: usize, message: impl Into<String>) {
        let location = self.lines.location(offset);
        self.errors.push(ConfigError::new(self.source, location, message));
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.error_at(span.start, message);
    }

    fn document(&mut self, root: &DeTable<'_>) -> Vec<VirtualServer> {
        self.unknown_keys(root, TOP_LEVEL_KEYS, "at top level");
        let Some((key, value)) = root.get_key_value("virtual_server") else {
            return Vec::new();
        };
        self.tables(key, value, VIRTUAL_SERVER)
            .into_iter()
            .filter_map(|(table, span)| self.virtual_server(table, span))
            .collect()
    }

    fn virtual_server(&mut self, table: &DeTable<'_>, span: Range<usize>) -> Option<VirtualServer> {
        let location = self.at(span);
        let mut at = VirtualServerLocations::all_at(location);
        self.unknown_keys(table, VIRTUAL_SERVER_KEYS, &format!("in {VIRTUAL_SERVER}"));

        let vip = self.required(table, "vip", location, VIRTUAL_SERVER).and_then(|(key, value)| {
            at.vip = self.at(value.span());
            self.ip_address(key, value)
        });
        let port =
            self.required(table, "port", location, VIRTUAL_SERVER).and_then(|(key, value)| {
                at.port = self.at(value.span());
                self.port(key, value)
            });
        let protocol = match table.get_key_value("protocol") {
            None => Some(Protocol::Tcp),
            Some((key, value)) => {
                at.protocol = self.at(value.span());
                self.string(key, value).and_then(|name| match name.parse::<Protocol>() {
                    Ok(protocol) => Some(protocol),
                    Err(error) => {
                        self.error(value.span(), error.to_string());
                        None
                    }
                })
            }
        };
        let interface =
            self.required(table, "interface", location, VIRTUAL_SERVER).and_then(|(key, value)| {
                at.interface = self.at(value.span());
                self.string(key, value).map(str::to_owned)
            });
        let lb_algo = self.lb_algo(table, &mut at);

        let real_servers = match table.get_key_value("real_server") {
            None => Vec::new(),
            Some((key, value)) => self
                .tables(key, value, REAL_SERVER)
                .into_iter()
                .filter_map(|(table, span)| self.real_server(table, span, port))
                .collect(),
        };

        Some(VirtualServer {
            vip: vip?,
            port: port?,
            protocol: protocol?,
            interface: interface?,
            lb_algo: lb_algo?,
            real_servers,
            location,
            key_locations: at,
        })
    }

    /// `lb_algo`, or keepalived's other spelling `lvs_sched`; giving both is ambiguous.
    fn lb_algo(&mut self, table: &DeTable<'_>, at: &mut VirtualServerLocations) -> Option<String> {
        let given = match (table.get_key_value("lb_algo"), table.get_key_value("lvs_sched")) {
            (None, None) => return Some(DEFAULT_LB_ALGO.to_owned()),
            (Some(one), None) | (None, Some(one)) => one,
            (Some(a), Some(b)) => {
                let (first, second) =
                    if a.0.span().start < b.0.span().start { (a, b) } else { (b, a) };
                let message = format!(
                    "`{}` and `{}` are the same setting (keepalived spells it both ways); keep only one",
                    second.0.get_ref(),
                    first.0.get_ref()
                );
                self.error(second.0.span(), message);
                return None;
            }
        };
        at.lb_algo = self.at(given.1.span());
        self.string(given.0, given.1).map(str::to_owned)
    }

    /// `virtual_port` is the virtual server's port, used as the default; `None` when it was
    /// itself invalid, in which case this server is still checked but not built.
    fn real_server(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
        virtual_port: Option<u16>,
    ) -> Option<RealServer> {
        let location = self.at(span);
        let mut at = RealServerLocations::all_at(location);
        self.unknown_keys(table, REAL_SERVER_KEYS, &format!("in {REAL_SERVER}"));

        let address =
            self.required(table, "address", location, REAL_SERVER).and_then(|(key, value)| {
                at.address = self.at(value.span());
                self.ip_address(key, value)
            });
        let port = match table.get_key_value("port") {
            None => virtual_port,
            Some((key, value)) => {
                at.port = self.at(value.span());
                self.port(key, value)
            }
        };
        let weight = match table.get_key_value("weight") {
            None => Some(DEFAULT_WEIGHT),
            Some((key, value)) => {
                at.weight = self.at(value.span());
                self.integer(key, value, 0, MAX_WEIGHT.into()).and_then(|w| u32::try_from(w).ok())
            }
        };

        Some(RealServer {
            address: address?,
            port: port?,
            weight: weight?,
            location,
            key_locations: at,
        })
    }

    /// Reports every key of `table` not in `known`, suggesting the closest known one.
    fn unknown_keys(&mut self, table: &DeTable<'_>, known: &[&str], context: &str) {
        for key in table.keys() {
            let name = key.get_ref();
            if !known.contains(&name.as_ref()) {
                let hint = did_you_mean(name, known);
                self.error(key.span(), format!("unknown key `{name}` {context}{hint}"));
            }
        }
    }

    fn required<'a, 'i>(
        &mut self,
        table: &'a DeTable<'i>,
        name: &str,
        section_at: Location,
        section: &str,
    ) -> Option<(&'a Key<'i>, &'a Value<'i>)> {
        let found = table.get_key_value(name);
        if found.is_none() {
            self.errors.push(ConfigError::new(
                self.source,
                section_at,
                format!("missing required key `{name}` in {section}"),
            ));
        }
        found
    }

    /// The tables of an array of tables (`[[name]]`, or an inline array of inline tables), with
    /// the span each starts at.
    fn tables<'a, 'i>(
        &mut self,
        key: &Key<'_>,
        value: &'a Value<'i>,
        header: &str,
    ) -> Vec<(&'a DeTable<'i>, Range<usize>)> {
        let DeValue::Array(items) = value.get_ref() else {
            self.error(
                value.span(),
                format!(
                    "`{}` must be an array of tables: write {header} once per entry",
                    key.get_ref()
                ),
            );
            return Vec::new();
        };
        let mut tables = Vec::with_capacity(items.len());
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(table) => tables.push((table, item.span())),
                other => self.error(
                    item.span(),
                    format!(
                        "each `{}` entry must be a table, found {}",
                        key.get_ref(),
                        describe(other)
                    ),
                ),
            }
        }
        tables
    }

    fn string<'a>(&mut self, key: &Key<'_>, value: &'a Value<'_>) -> Option<&'a str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            other => {
                let message =
                    format!("`{}` must be a string, found {}", key.get_ref(), describe(other));
                self.error(value.span(), message);
                None
            }
        }
    }

    fn ip_address(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<IpAddr> {
        let text = self.string(key, value)?;
        match text.parse() {
            Ok(address) => Some(address),
            Err(_) => {
                let message = format!(
                    "`{}` must be an IP address, found \"{}\"",
                    key.get_ref(),
                    text.escape_debug()
                );
                self.error(value.span(), message);
                None
            }
        }
    }

    fn port(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<u16> {
        self.integer(key, value, 1, u16::MAX.into()).and_then(|p| u16::try_from(p).ok())
    }

    /// An integer within `min..=max`.
    fn integer(&mut self, key: &Key<'_>, value: &Value<'_>, min: i64, max: i64) -> Option<i64> {
        let DeValue::Integer(integer) = value.get_ref() else {
            let message = format!(
                "`{}` must be an integer, found {}",
                key.get_ref(),
                describe(value.get_ref())
            );
            self.error(value.span(), message);
            return None;
        };
        match i64::from_str_radix(integer.as_str(), integer.radix()) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let message =
                    format!("`{}` must be between {min} and {max}, found {integer}", key.get_ref());
                self.error(value.span(), message);
                None
            }
        }
    }
}

/// A value as an operator would recognise it in a "found ..." message.
fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("string \"{}\"", s.escape_debug()),
        DeValue::Integer(i) => format!("integer {i}"),
        DeValue::Float(f) => format!("float {f}"),
        DeValue::Boolean(b) => format!("boolean {b}"),
        DeValue::Datetime(d) => format!("datetime {d}"),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_toml;
    use super::super::test_support::{FakeHost, assert_single_error, doc};
    use super::*;

    /// (name, document, expected message part, expected line:col). Each must be the only error.
    const SCENARIOS: &[(&str, &[&str], &str, &str)] = &[
        (
            "unquoted string (keepalived.conf habit)",
            &["[[virtual_server]]", "vip = '192.0.2.100'", "port = 80", "interface = eth0"],
            "TOML syntax error: string values must be quoted",
            "4:13",
        ),
        (
            "unclosed header",
            &["[[virtual_server]", "vip = '192.0.2.100'"],
            "TOML syntax error: unclosed array table, expected `]`",
            "1:18",
        ),
        (
            "duplicate key",
            &["[[virtual_server]]", "vip = '192.0.2.100'", "port = 80", "port = 81"],
            "TOML syntax error: duplicate key `port`",
            "4:1",
        ),
        (
            "unknown top-level key",
            &["virtual_servers = []"],
            "unknown key `virtual_servers` at top level; did you mean `virtual_server`?",
            "1:1",
        ),
        (
            "unknown virtual server key without a close match",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "  persistence_timeout = 300",
            ],
            "unknown key `persistence_timeout` in [[virtual_server]]",
            "5:3",
        ),
        (
            "misspelled virtual server key",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "protcol = 'udp'",
                "interface = 'eth0'",
            ],
            "unknown key `protcol` in [[virtual_server]]; did you mean `protocol`?",
            "4:1",
        ),
        (
            "misspelled real server key",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "weigth = 1",
            ],
            "unknown key `weigth` in [[virtual_server.real_server]]; did you mean `weight`?",
            "7:1",
        ),
        (
            "misspelled section",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "[[virtual_server.realserver]]",
            ],
            "unknown key `realserver` in [[virtual_server]]; did you mean `real_server`?",
            "5:18",
        ),
        (
            "quoted port",
            &["[[virtual_server]]", "vip = '192.0.2.100'", "port = \"80\"", "interface = 'eth0'"],
            "`port` must be an integer, found string \"80\"",
            "3:8",
        ),
        (
            "port 0",
            &["[[virtual_server]]", "vip = '192.0.2.100'", "port = 0", "interface = 'eth0'"],
            "`port` must be between 1 and 65535, found 0",
            "3:8",
        ),
        (
            "port too large",
            &["[[virtual_server]]", "vip = '192.0.2.100'", "port = 70000", "interface = 'eth0'"],
            "`port` must be between 1 and 65535, found 70000",
            "3:8",
        ),
        (
            "negative weight",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "weight = -1",
            ],
            "`weight` must be between 0 and 65535, found -1",
            "7:10",
        ),
        (
            "weight too large",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "weight = 70000",
            ],
            "`weight` must be between 0 and 65535, found 70000",
            "7:10",
        ),
        (
            "fractional weight",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "[[virtual_server.real_server]]",
                "address = '192.0.2.11'",
                "weight = 1.5",
            ],
            "`weight` must be an integer, found float 1.5",
            "7:10",
        ),
        (
            "missing vip",
            &["", "[[virtual_server]]", "port = 80", "interface = 'eth0'"],
            "missing required key `vip` in [[virtual_server]]",
            "2:1",
        ),
        (
            "missing port",
            &["[[virtual_server]]", "vip = '192.0.2.100'", "interface = 'eth0'"],
            "missing required key `port` in [[virtual_server]]",
            "1:1",
        ),
        (
            "missing interface",
            &["[[virtual_server]]", "vip = '192.0.2.100'", "port = 80"],
            "missing required key `interface` in [[virtual_server]]",
            "1:1",
        ),
        (
            "missing real server address",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "  [[virtual_server.real_server]]",
                "  weight = 3",
            ],
            "missing required key `address` in [[virtual_server.real_server]]",
            "5:3",
        ),
        (
            "vip out of range",
            &["[[virtual_server]]", "vip = '192.0.2.300'", "port = 80", "interface = 'eth0'"],
            "`vip` must be an IP address, found \"192.0.2.300\"",
            "2:7",
        ),
        (
            "vip is a host name",
            &["[[virtual_server]]", "vip = 'example.com'", "port = 80", "interface = 'eth0'"],
            "`vip` must be an IP address, found \"example.com\"",
            "2:7",
        ),
        (
            "real server address is a host name",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "[[virtual_server.real_server]]",
                "address = 'web1.example.com'",
            ],
            "`address` must be an IP address, found \"web1.example.com\"",
            "6:11",
        ),
        (
            "unknown protocol",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "protocol = 'sctp'",
                "interface = 'eth0'",
            ],
            "unknown protocol \"sctp\", expected \"tcp\" or \"udp\"",
            "4:12",
        ),
        (
            "protocol number",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "protocol = 6",
                "interface = 'eth0'",
            ],
            "`protocol` must be a string, found integer 6",
            "4:12",
        ),
        (
            "both scheduler spellings",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "lvs_sched = 'rr'",
                "interface = 'eth0'",
                "lb_algo = 'rr'",
            ],
            "`lb_algo` and `lvs_sched` are the same setting (keepalived spells it both ways); keep only one",
            "6:1",
        ),
        (
            "virtual_server as a plain table",
            &["[virtual_server]", "vip = '192.0.2.100'"],
            "`virtual_server` must be an array of tables: write [[virtual_server]] once per entry",
            "1:1",
        ),
        (
            "real_server as a plain table",
            &[
                "[[virtual_server]]",
                "vip = '192.0.2.100'",
                "port = 80",
                "interface = 'eth0'",
                "[virtual_server.real_server]",
                "address = '192.0.2.11'",
            ],
            "`real_server` must be an array of tables: write [[virtual_server.real_server]] once per entry",
            "5:1",
        ),
        (
            "array element not a table",
            &["virtual_server = [1]"],
            "each `virtual_server` entry must be a table, found integer 1",
            "1:19",
        ),
    ];

    #[test]
    fn scenarios() {
        for &(name, lines, expected, at) in SCENARIOS {
            let result = parse_toml(&doc(lines), Path::new("test.toml"), &FakeHost);
            assert_single_error(name, result, expected, at);
        }
    }

    fn parse_ok(text: &str) -> Config {
        let (config, errors) = parse(text, Path::new("test.toml"));
        assert!(errors.is_empty(), "unexpected errors: {errors:#?}");
        config
    }

    /// The contract file from the design: must keep parsing as-is, into exactly this model.
    #[test]
    fn contract_file_parses_into_the_model() {
        let text = r#"[[virtual_server]]
vip = "192.0.2.100"
port = 80
protocol = "tcp"
interface = "eth0"

[[virtual_server.real_server]]
address = "192.0.2.11"
port = 80
weight = 1

[[virtual_server.real_server]]
address = "192.0.2.12"
port = 80
weight = 2
"#;
        let real = |address: &str, line: u32, weight: u32| RealServer {
            address: address.parse().unwrap(),
            port: 80,
            weight,
            location: Location::new(line, 1),
            key_locations: RealServerLocations {
                address: Location::new(line + 1, 11),
                port: Location::new(line + 2, 8),
                weight: Location::new(line + 3, 10),
            },
        };
        let expected = Config {
            source: "test.toml".into(),
            virtual_servers: vec![VirtualServer {
                vip: "192.0.2.100".parse().unwrap(),
                port: 80,
                protocol: Protocol::Tcp,
                interface: "eth0".to_owned(),
                lb_algo: "mh".to_owned(),
                real_servers: vec![real("192.0.2.11", 7, 1), real("192.0.2.12", 12, 2)],
                location: Location::new(1, 1),
                key_locations: VirtualServerLocations {
                    vip: Location::new(2, 7),
                    port: Location::new(3, 8),
                    protocol: Location::new(4, 12),
                    interface: Location::new(5, 13),
                    lb_algo: Location::new(1, 1),
                },
            }],
        };
        assert_eq!(parse_ok(text), expected);
    }

    #[test]
    fn defaults_and_spellings() {
        // (name, document, check on the single virtual server)
        type Check = fn(&VirtualServer);
        let cases: &[(&str, &[&str], Check)] = &[
            (
                "defaults",
                &[
                    "[[virtual_server]]",
                    "vip = '192.0.2.100'",
                    "port = 443",
                    "interface = 'eth0'",
                    "[[virtual_server.real_server]]",
                    "address = '192.0.2.11'",
                ],
                |vs| {
                    assert_eq!(vs.protocol, Protocol::Tcp);
                    assert_eq!(vs.lb_algo, "mh");
                    assert_eq!(vs.real_servers[0].port, 443);
                    assert_eq!(vs.real_servers[0].weight, 1);
                    assert_eq!(vs.real_servers[0].key_locations.port, Location::new(5, 1));
                },
            ),
            (
                "keepalived spellings",
                &[
                    "[[virtual_server]]",
                    "vip = '192.0.2.100'",
                    "port = 53",
                    "protocol = 'UDP'",
                    "lvs_sched = 'wrr'",
                    "interface = 'eth0'",
                ],
                |vs| {
                    assert_eq!(vs.protocol, Protocol::Udp);
                    assert_eq!(vs.lb_algo, "wrr");
                    assert_eq!(vs.key_locations.lb_algo, Location::new(5, 13));
                },
            ),
            (
                "weight 0 drains, hex integers are integers",
                &[
                    "[[virtual_server]]",
                    "vip = '192.0.2.100'",
                    "port = 0x50",
                    "lb_algo = 'rr'",
                    "interface = 'eth0'",
                    "[[virtual_server.real_server]]",
                    "address = '192.0.2.11'",
                    "weight = 0",
                ],
                |vs| {
                    assert_eq!(vs.port, 80);
                    assert_eq!(vs.lb_algo, "rr");
                    assert_eq!(vs.real_servers[0].weight, 0);
                },
            ),
            (
                "inline tables",
                &[
                    "virtual_server = [{ vip = '192.0.2.100', port = 80, interface = 'eth0',",
                    "  real_server = [{ address = '192.0.2.11' }] }]",
                ],
                |vs| {
                    assert_eq!(vs.location, Location::new(1, 19));
                    assert_eq!(vs.real_servers[0].location, Location::new(2, 18));
                },
            ),
            (
                "IPv6 is a model matter (the dataplane limit is validation's)",
                &[
                    "[[virtual_server]]",
                    "vip = '2001:db8::100'",
                    "port = 80",
                    "interface = 'eth0'",
                    "[[virtual_server.real_server]]",
                    "address = '2001:db8::11'",
                ],
                |vs| {
                    assert_eq!(vs.to_string(), "[2001:db8::100]:80/tcp");
                    assert_eq!(vs.real_servers[0].to_string(), "[2001:db8::11]:80");
                },
            ),
        ];
        for (name, lines, check) in cases {
            let config = parse_ok(&doc(lines));
            assert_eq!(config.virtual_servers.len(), 1, "{name}");
            check(&config.virtual_servers[0]);
        }
    }

    #[test]
    fn nothing_to_do_is_valid() {
        for text in ["", "# just a comment\n", "\n\n", "virtual_server = []\n"] {
            assert_eq!(parse_ok(text).virtual_servers, Vec::new(), "{text:?}");
        }
    }

    #[test]
    fn virtual_servers_keep_file_order() {
        let text = doc(&[
            "[[virtual_server]]",
            "vip = '192.0.2.2'",
            "port = 80",
            "interface = 'eth0'",
            "[[virtual_server]]",
            "vip = '192.0.2.1'",
            "port = 80",
            "interface = 'eth0'",
        ]);
        let vips: Vec<String> =
            parse_ok(&text).virtual_servers.iter().map(|vs| vs.vip.to_string()).collect();
        assert_eq!(vips, ["192.0.2.2", "192.0.2.1"]);
    }

    #[test]
    fn sections_with_errors_are_left_out_of_the_model() {
        let text = doc(&[
            "[[virtual_server]]",
            "vip = '192.0.2.1'",
            "port = 80",
            "interface = 'eth0'",
            "[[virtual_server.real_server]]",
            "address = '192.0.2.11'",
            "[[virtual_server.real_server]]",
            "address = 'nope'",
            "[[virtual_server]]",
            "vip = '192.0.2.2'",
            "port = 'http'",
            "interface = 'eth0'",
        ]);
        let (config, errors) = parse(&text, Path::new("test.toml"));
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert_eq!(config.virtual_servers.len(), 1);
        assert_eq!(config.virtual_servers[0].real_servers.len(), 1);
    }
}
