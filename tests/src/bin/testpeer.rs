//! `lb-testpeer`: a tiny server for real-server namespaces that says who it is.
//!
//! ```text
//! lb-testpeer --name NAME [--http ADDR:PORT]... [--https ADDR:PORT]... [--udp ADDR:PORT]...
//!             [--dns ADDR:PORT]... [--tcp-echo ADDR:PORT]...
//! ```
//! - `--http`: HTTP/1.1, any GET/HEAD → `200 OK`, body `NAME\n`, `Connection: close`.
//! - `--https`: the same over TLS (rustls, the self-signed test certificate of the SSL_GET
//!   tests, `lb-userspace/src/health/check/testdata`).
//! - `--udp`: each datagram is answered with `NAME <payload>` from the bound socket (so a DR real
//!   replies from the VIP).
//! - `--dns`: a DNS responder for any name (see [`dns_answer`]), answering from the bound socket.
//! - `--tcp-echo`: every line is echoed back as `NAME <line>`; the connection stays open.
//!
//! Prints `ready` on stdout once every socket is bound, then serves until killed. Std and rustls
//! only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Longest request head we read before answering anyway.
const MAX_HEAD: usize = 64 * 1024;
/// A client that stalls mid-request must not pin a thread forever.
const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Args {
    name: String,
    http: Vec<SocketAddr>,
    https: Vec<SocketAddr>,
    udp: Vec<SocketAddr>,
    dns: Vec<SocketAddr>,
    tcp_echo: Vec<SocketAddr>,
}

const USAGE: &str = "usage: lb-testpeer --name NAME [--http ADDR:PORT]... [--https ADDR:PORT]... \
                     [--udp ADDR:PORT]... [--dns ADDR:PORT]... [--tcp-echo ADDR:PORT]...";

fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = argv.into_iter();
    let mut name = None;
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_string());
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?,
        };
        match flag.as_str() {
            "--name" => name = Some(value),
            "--http" => args.http.push(parse_addr(&value)?),
            "--https" => args.https.push(parse_addr(&value)?),
            "--udp" => args.udp.push(parse_addr(&value)?),
            "--dns" => args.dns.push(parse_addr(&value)?),
            "--tcp-echo" => args.tcp_echo.push(parse_addr(&value)?),
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}")),
        }
    }
    args.name = name.ok_or_else(|| format!("--name is required\n{USAGE}"))?;
    Ok(args)
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    // Literal addresses only: never resolve names (no traffic outside the test namespaces).
    s.parse().map_err(|e| format!("bad address {s:?}: {e}"))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let name: Arc<str> = Arc::from(args.name.as_str());

    // Bind everything first so `ready` means every socket accepts traffic.
    let mut http = Vec::new();
    let mut https = Vec::new();
    let mut udp = Vec::new();
    let mut dns = Vec::new();
    let mut echo = Vec::new();
    let mut tls = None;
    let bound = (|| -> Result<(), String> {
        for a in &args.http {
            http.push(TcpListener::bind(a).map_err(|e| format!("bind http {a}: {e}"))?);
        }
        if !args.https.is_empty() {
            tls = Some(tls_config().map_err(|e| format!("TLS configuration: {e}"))?);
        }
        for a in &args.https {
            https.push(TcpListener::bind(a).map_err(|e| format!("bind https {a}: {e}"))?);
        }
        for a in &args.udp {
            udp.push(UdpSocket::bind(a).map_err(|e| format!("bind udp {a}: {e}"))?);
        }
        for a in &args.dns {
            dns.push(UdpSocket::bind(a).map_err(|e| format!("bind dns {a}: {e}"))?);
        }
        for a in &args.tcp_echo {
            echo.push(TcpListener::bind(a).map_err(|e| format!("bind tcp-echo {a}: {e}"))?);
        }
        Ok(())
    })();
    if let Err(msg) = bound {
        eprintln!("lb-testpeer {name}: {msg}");
        return ExitCode::from(1);
    }

    for listener in http {
        let name = Arc::clone(&name);
        std::thread::spawn(move || accept_loop(listener, move |s| serve_http(s, &name)));
    }
    if let Some(tls) = tls {
        for listener in https {
            let (name, tls) = (Arc::clone(&name), Arc::clone(&tls));
            std::thread::spawn(move || {
                accept_loop(listener, move |s| serve_https(s, Arc::clone(&tls), &name))
            });
        }
    }
    for listener in echo {
        let name = Arc::clone(&name);
        std::thread::spawn(move || accept_loop(listener, move |s| serve_echo(s, &name)));
    }
    for sock in udp {
        let name = Arc::clone(&name);
        std::thread::spawn(move || serve_udp(sock, &name));
    }
    for sock in dns {
        let name = Arc::clone(&name);
        std::thread::spawn(move || serve_dns(sock, &name));
    }

    {
        // Never panic on a closed stdout: the harness may stop reading.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
    loop {
        std::thread::park();
    }
}

fn accept_loop<F>(listener: TcpListener, handler: F)
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let handler = Arc::clone(&handler);
                std::thread::spawn(move || handler(stream));
            }
            // E.g. EMFILE or an aborted handshake: keep serving.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn serve_http(mut stream: TcpStream, name: &str) {
    let _ = stream.set_read_timeout(Some(HTTP_READ_TIMEOUT));
    if answer_http(&mut stream, name) {
        let _ = stream.shutdown(std::net::Shutdown::Write);
        drain(&mut stream);
    }
}

/// The test certificate of the SSL_GET tests: the checker verifies no certificate, only the
/// handshake's signatures.
fn tls_config() -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let cert = include_bytes!("../../../lb-userspace/src/health/check/testdata/cert.der");
    let key = include_bytes!("../../../lb-userspace/src/health/check/testdata/key.der");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())),
        )?;
    Ok(Arc::new(config))
}

fn serve_https(stream: TcpStream, config: Arc<rustls::ServerConfig>, name: &str) {
    let _ = stream.set_read_timeout(Some(HTTP_READ_TIMEOUT));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    // The first read drives the handshake.
    let mut tls = rustls::StreamOwned::new(conn, stream);
    if answer_http(&mut tls, name) {
        tls.conn.send_close_notify();
        let _ = tls.flush();
        let _ = tls.sock.shutdown(std::net::Shutdown::Write);
        drain(&mut tls.sock);
    }
}

/// Reads a request head and answers it; false when nothing came.
fn answer_http(stream: &mut (impl Read + Write), name: &str) -> bool {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    if head.is_empty() {
        return false;
    }
    let method = head
        .split(|&b| b == b' ')
        .next()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_default();
    let body = format!("{name}\n");
    let response = match method.as_str() {
        "GET" | "HEAD" => {
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 X-Served-By: {name}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if method == "GET" {
                r.push_str(&body);
            }
            r
        }
        _ => "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\n\
              Connection: close\r\n\r\n"
            .to_string(),
    };
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
    true
}

/// Reads what the client still sends so closing does not turn into a RST that could eat the
/// response.
fn drain(stream: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
    }
}

fn serve_echo(stream: TcpStream, name: &str) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let mut reply = Vec::with_capacity(name.len() + 1 + line.len() + 1);
                reply.extend_from_slice(name.as_bytes());
                reply.push(b' ');
                reply.extend_from_slice(&line);
                if !line.ends_with(b"\n") {
                    reply.push(b'\n');
                }
                if writer.write_all(&reply).is_err() {
                    return;
                }
            }
        }
    }
}

fn serve_udp(sock: UdpSocket, name: &str) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let mut reply = Vec::with_capacity(name.len() + 1 + n);
        reply.extend_from_slice(name.as_bytes());
        reply.push(b' ');
        reply.extend_from_slice(&buf[..n]);
        let _ = sock.send_to(&reply, from);
    }
}

fn serve_dns(sock: UdpSocket, name: &str) {
    let local = match sock.local_addr() {
        Ok(a) => a.ip(),
        Err(_) => return,
    };
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if let Some(reply) = dns_answer(&buf[..n], local, name) {
            let _ = sock.send_to(&reply, from);
        }
    }
}

const DNS_HEADER: usize = 12;
const DNS_QR: u16 = 0x8000;
const DNS_RD: u16 = 0x0100;
const DNS_RA: u16 = 0x0080;
const DNS_NOTIMP: u16 = 4;
const TYPE_A: u16 = 1;
const TYPE_TXT: u16 = 16;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// The response to a standard query of one question, class IN, any name: type A and AAAA are
/// answered with the socket's own address when it is of that family (else no record), TXT with
/// `name`, other types NOTIMP. A message that is no such query gets no reply.
fn dns_answer(query: &[u8], local: IpAddr, name: &str) -> Option<Vec<u8>> {
    let word = |i: usize| Some(u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]));
    let flags = word(2)?;
    // A response, another opcode, or not exactly one question.
    if flags & (DNS_QR | 0x7800) != 0 || word(4)? != 1 {
        return None;
    }
    let mut pos = DNS_HEADER;
    loop {
        let len = usize::from(*query.get(pos)?);
        pos += 1;
        match len {
            0 => break,
            1..=63 => pos += len,
            // Compression has no place in a question of its own.
            _ => return None,
        }
    }
    let (qtype, qclass) = (word(pos)?, word(pos + 2)?);
    let question = query.get(DNS_HEADER..pos + 4)?;
    if qclass != CLASS_IN {
        return None;
    }
    let rdata: Option<Vec<u8>> = match (qtype, local) {
        (TYPE_A, IpAddr::V4(a)) => Some(a.octets().to_vec()),
        (TYPE_AAAA, IpAddr::V6(a)) => Some(a.octets().to_vec()),
        (TYPE_A | TYPE_AAAA, _) => None,
        (TYPE_TXT, _) => {
            let text = &name.as_bytes()[..name.len().min(255)];
            Some([&[text.len() as u8], text].concat())
        }
        _ => {
            let mut r = query.get(..DNS_HEADER)?.to_vec();
            r[2..4]
                .copy_from_slice(&(DNS_QR | (flags & DNS_RD) | DNS_RA | DNS_NOTIMP).to_be_bytes());
            r[6..12].fill(0);
            r.extend_from_slice(question);
            return Some(r);
        }
    };
    let mut r = query.get(..2)?.to_vec();
    r.extend_from_slice(&(DNS_QR | (flags & DNS_RD) | DNS_RA).to_be_bytes());
    let ancount = u16::from(rdata.is_some());
    for count in [1, ancount, 0, 0] {
        r.extend_from_slice(&u16::to_be_bytes(count));
    }
    r.extend_from_slice(question);
    if let Some(rdata) = rdata {
        // The name by a pointer to the question's, TTL 0.
        r.extend_from_slice(&[0xc0, DNS_HEADER as u8]);
        r.extend_from_slice(&qtype.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 0]);
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(&rdata);
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn args(v: &[&str]) -> Result<Args, String> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_repeated_flags() {
        let a = args(&[
            "--name",
            "rs1",
            "--http",
            "192.0.2.100:80",
            "--http=192.0.2.11:80",
            "--udp",
            "[2001:db8::1]:53",
            "--tcp-echo",
            "192.0.2.100:7",
        ])
        .unwrap();
        assert_eq!(a.name, "rs1");
        assert_eq!(a.http.len(), 2);
        assert_eq!(a.udp[0].port(), 53);
        assert_eq!(a.tcp_echo.len(), 1);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(args(&["--http", "192.0.2.1:80"]).is_err(), "name required");
        assert!(args(&["--name"]).is_err());
        assert!(args(&["--name", "x", "--bogus", "1"]).is_err());
        assert!(args(&["--name", "x", "--udp", "nonsense"]).is_err());
        assert!(args(&["--name", "x", "--dns", "192.0.2.1"]).is_err(), "port required");
    }

    /// A query: id 0x1234, RD, one question `lb.test` of `qtype`, class IN.
    fn query(qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x02lb\x04test\x00");
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[test]
    fn dns_answers() {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100));
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let question = &query(TYPE_TXT)[12..];
        let header = |flags: [u8; 2], an: u8| {
            let mut h = vec![0x12, 0x34, flags[0], flags[1], 0, 1, 0, an, 0, 0, 0, 0];
            h.extend_from_slice(question);
            h
        };
        // Name pointer, type, class IN, TTL 0, length.
        let record = |qtype: u16, rdata: &[u8]| {
            let mut r = vec![0xc0, 12];
            r.extend_from_slice(&qtype.to_be_bytes());
            r.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, rdata.len() as u8]);
            r.extend_from_slice(rdata);
            r
        };
        let with_type = |mut m: Vec<u8>, qtype: u16| {
            let at = m.len() - 4;
            m[at..at + 2].copy_from_slice(&qtype.to_be_bytes());
            m
        };
        let ok = [0x81, 0x80];
        let cases: [(&str, u16, IpAddr, Vec<u8>); 6] = [
            (
                "TXT names the peer",
                TYPE_TXT,
                v4,
                [header(ok, 1), record(TYPE_TXT, b"\x03rs1")].concat(),
            ),
            (
                "A: the socket's address",
                TYPE_A,
                v4,
                [with_type(header(ok, 1), TYPE_A), record(TYPE_A, &[192, 0, 2, 100])].concat(),
            ),
            (
                "AAAA: the socket's address",
                TYPE_AAAA,
                v6,
                [
                    with_type(header(ok, 1), TYPE_AAAA),
                    record(TYPE_AAAA, &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                ]
                .concat(),
            ),
            ("A on an IPv6 socket: no record", TYPE_A, v6, with_type(header(ok, 0), TYPE_A)),
            (
                "AAAA on an IPv4 socket: no record",
                TYPE_AAAA,
                v4,
                with_type(header(ok, 0), TYPE_AAAA),
            ),
            ("SOA: NOTIMP", 6, v4, with_type(header([0x81, 0x84], 0), 6)),
        ];
        for (what, qtype, local, want) in cases {
            assert_eq!(dns_answer(&query(qtype), local, "rs1"), Some(want), "{what}");
        }
    }

    #[test]
    fn dns_ignores_what_is_no_query() {
        let edit = |f: fn(&mut Vec<u8>)| {
            let mut q = query(TYPE_A);
            f(&mut q);
            q
        };
        let cases: [(&str, Vec<u8>); 7] = [
            ("a response", edit(|q| q[2] |= 0x80)),
            ("another opcode", edit(|q| q[2] |= 0x10)),
            ("two questions", edit(|q| q[5] = 2)),
            ("truncated question", edit(|q| q.truncate(q.len() - 1))),
            ("shorter than a header", edit(|q| q.truncate(5))),
            ("compressed name", edit(|q| q[12] = 0xc0)),
            ("class CH", edit(|q| *q.last_mut().unwrap() = 3)),
        ];
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(dns_answer(&query(TYPE_A), local, "rs1").is_some(), "the unedited query");
        for (what, q) in cases {
            assert_eq!(dns_answer(&q, local, "rs1"), None, "{what}");
        }
    }
}
