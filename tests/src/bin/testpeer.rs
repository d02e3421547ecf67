//! `lb-testpeer`: a tiny server for real-server namespaces that says who it is.
//!
//! ```text
//! lb-testpeer --name NAME [--http ADDR:PORT]... [--udp ADDR:PORT]... [--tcp-echo ADDR:PORT]...
//! ```
//! - `--http`: HTTP/1.1, any GET/HEAD → `200 OK`, body `NAME\n`, `Connection: close`.
//! - `--udp`: each datagram is answered with `NAME <payload>` from the bound socket (so a DR real
//!   replies from the VIP).
//! - `--tcp-echo`: every line is echoed back as `NAME <line>`; the connection stays open.
//!
//! Prints `ready` on stdout once every socket is bound, then serves until killed. Std only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
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
    udp: Vec<SocketAddr>,
    tcp_echo: Vec<SocketAddr>,
}

const USAGE: &str = "usage: lb-testpeer --name NAME [--http ADDR:PORT]... [--udp ADDR:PORT]... \
                     [--tcp-echo ADDR:PORT]...";

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
            "--udp" => args.udp.push(parse_addr(&value)?),
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
    let mut udp = Vec::new();
    let mut echo = Vec::new();
    let bound = (|| -> Result<(), String> {
        for a in &args.http {
            http.push(TcpListener::bind(a).map_err(|e| format!("bind http {a}: {e}"))?);
        }
        for a in &args.udp {
            udp.push(UdpSocket::bind(a).map_err(|e| format!("bind udp {a}: {e}"))?);
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
        std::thread::spawn(move || accept_loop(listener, name, serve_http));
    }
    for listener in echo {
        let name = Arc::clone(&name);
        std::thread::spawn(move || accept_loop(listener, name, serve_echo));
    }
    for sock in udp {
        let name = Arc::clone(&name);
        std::thread::spawn(move || serve_udp(sock, &name));
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

fn accept_loop(listener: TcpListener, name: Arc<str>, handler: fn(TcpStream, &str)) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let name = Arc::clone(&name);
                std::thread::spawn(move || handler(stream, &name));
            }
            // E.g. EMFILE or an aborted handshake: keep serving.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn serve_http(mut stream: TcpStream, name: &str) {
    let _ = stream.set_read_timeout(Some(HTTP_READ_TIMEOUT));
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    if head.is_empty() {
        return;
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
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Drain what the client still sends so closing does not turn into a RST that could eat the
    // response.
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
