//! HTTP_GET and SSL_GET: every URL answers with the expected status (any 2xx by default) and, if
//! a `digest` is given, a body whose MD5 matches it (lower-case hex, as keepalived's `genhash`
//! prints it).
//!
//! Like keepalived, each URL gets a fresh connection and an HTTP/1.0 request, so the answer is
//! never chunked by a conforming server and ends when the server closes. The whole attempt (all
//! URLs) is bounded by `connect_timeout`: a real that accepts but never answers is down in time.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use super::{Outcome, tcp, tls};
use crate::config::health::{HttpCheck, UrlCheck};

/// Largest body read for a digest; a bigger one fails the check rather than eating memory.
pub const MAX_BODY: usize = 4 << 20;
/// Largest status line plus headers accepted.
pub const MAX_HEAD: usize = 64 << 10;
const MAX_HEADERS: usize = 100;
const USER_AGENT: &str = "lb-healthcheck";

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Connect(#[from] tcp::ConnectError),
    #[error("TLS setup: {0}")]
    TlsSetup(rustls::Error),
    #[error("TLS handshake: {0}")]
    Handshake(io::Error),
    #[error("sending the request: {0}")]
    Write(io::Error),
    #[error("reading the response: {0}")]
    Read(io::Error),
    #[error("connection closed before the response headers ended")]
    Truncated,
    #[error("connection closed after {got} of {expected} body bytes")]
    ShortBody { got: usize, expected: u64 },
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("response headers larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("body larger than {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("status {got}, expected {expected}")]
    Status { got: u16, expected: String },
    #[error("body digest {got}, expected {expected}")]
    Digest { got: String, expected: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// A response as far as the check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Only read when asked for (a digest is configured).
    pub body: Option<Vec<u8>>,
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// One HTTP_GET (`tls` false) or SSL_GET (`tls` true) attempt against `target`.
pub async fn run(
    target: SocketAddr,
    params: &HttpCheck,
    tls: bool,
    bindto: Option<IpAddr>,
    timeout: Duration,
) -> Outcome {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut answers = Vec::with_capacity(params.urls.len());
    for url in &params.urls {
        let attempt = check_url(target, params, url, tls, bindto);
        let result = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout(timeout)),
        };
        match result {
            Ok(status) => answers.push(format!("GET {}: {status}", url.path)),
            Err(e) => {
                return Outcome::from_error(&format_args!("GET {}: {e}", url.path), &e, started);
            }
        }
    }
    if answers.is_empty() {
        return Outcome::down("no url to check", started);
    }
    Outcome::up(answers.join(", "), started)
}

/// Fetches one URL on a fresh connection and checks it; the status on success.
async fn check_url(
    target: SocketAddr,
    params: &HttpCheck,
    url: &UrlCheck,
    tls: bool,
    bindto: Option<IpAddr>,
) -> Result<u16, HttpError> {
    let request = request(&url.path, &host_header(params.virtualhost.as_deref(), target, tls));
    let want_body = url.digest.is_some();
    // The outer deadline bounds everything; connect gets no shorter limit of its own.
    let stream = tcp::connect(target, bindto, Duration::MAX).await?;
    let response = if tls {
        let config = tls::client_config().map_err(HttpError::TlsSetup)?;
        let name =
            tls::server_name(params.sni.as_deref(), params.virtualhost.as_deref(), target.ip());
        let mut stream =
            TlsConnector::from(config).connect(name, stream).await.map_err(HttpError::Handshake)?;
        exchange(&mut stream, request.as_bytes(), want_body).await?
    } else {
        let mut stream = stream;
        exchange(&mut stream, request.as_bytes(), want_body).await?
    };
    verify(url, &response)?;
    Ok(response.status)
}

/// The Host header: `virtualhost`, else the real's address; with the port unless it is the
/// scheme's default.
fn host_header(virtualhost: Option<&str>, target: SocketAddr, tls: bool) -> String {
    let host = match (virtualhost, target.ip()) {
        (Some(vhost), _) => vhost.to_owned(),
        (None, IpAddr::V4(ip)) => ip.to_string(),
        (None, IpAddr::V6(ip)) => format!("[{ip}]"),
    };
    let default_port = if tls { 443 } else { 80 };
    if target.port() == default_port { host } else { format!("{host}:{}", target.port()) }
}

fn request(path: &str, host: &str) -> String {
    format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n"
    )
}

/// Checks status and digest against what the URL expects.
fn verify(url: &UrlCheck, response: &Response) -> Result<(), HttpError> {
    let status_ok = match url.status_code {
        Some(code) => response.status == code,
        None => (200..300).contains(&response.status),
    };
    if !status_ok {
        let expected = url.status_code.map_or_else(|| "2xx".to_owned(), |c| c.to_string());
        return Err(HttpError::Status { got: response.status, expected });
    }
    if let Some(expected) = &url.digest {
        let got = digest(response.body.as_deref().unwrap_or_default());
        if !got.eq_ignore_ascii_case(expected.trim()) {
            return Err(HttpError::Digest { got, expected: expected.clone() });
        }
    }
    Ok(())
}

/// Lower-case hex MD5, as keepalived's `genhash` prints it.
pub fn digest(body: &[u8]) -> String {
    format!("{:x}", Md5::digest(body))
}

/// Reads into `chunk`; a TLS peer that closes without close_notify counts as a clean end, as it
/// does for every HTTP client (the body's length is checked separately).
async fn read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    chunk: &mut [u8],
) -> Result<usize, HttpError> {
    match stream.read(chunk).await {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => Err(HttpError::Read(e)),
    }
}

/// Sends `request` and reads the response: status line and headers, then, if `want_body`, the
/// body as framed by the headers.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
    want_body: bool,
) -> Result<Response, HttpError> {
    stream.write_all(request).await.map_err(HttpError::Write)?;
    stream.flush().await.map_err(HttpError::Write)?;

    let mut buf = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16 << 10];
    let (status, head_len, framing) = loop {
        let n = read_some(stream, &mut chunk).await?;
        if n == 0 {
            return Err(HttpError::Truncated);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = parse_head(&buf)? {
            break head;
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError::HeadTooLarge);
        }
    };
    if !want_body {
        return Ok(Response { status, body: None });
    }
    let mut body = buf.split_off(head_len);
    let body = match framing {
        Framing::None => Vec::new(),
        Framing::Length(expected) => {
            let len = usize::try_from(expected).ok().filter(|&l| l <= MAX_BODY);
            let len = len.ok_or(HttpError::BodyTooLarge)?;
            while body.len() < len {
                let n = read_some(stream, &mut chunk).await?;
                if n == 0 {
                    return Err(HttpError::ShortBody { got: body.len(), expected });
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
            body
        }
        Framing::UntilClose | Framing::Chunked => {
            // Chunk headers add a little on top of the body.
            let cap = if framing == Framing::Chunked { MAX_BODY + (64 << 10) } else { MAX_BODY };
            loop {
                if body.len() > cap {
                    return Err(HttpError::BodyTooLarge);
                }
                let n = read_some(stream, &mut chunk).await?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            if framing == Framing::Chunked { dechunk(&body)? } else { body }
        }
    };
    Ok(Response { status, body: Some(body) })
}

/// Parses the status line and headers once they are complete: (status, head length, framing).
fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize, Framing)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    let status = response.code.ok_or_else(|| HttpError::Malformed("no status code".into()))?;
    let mut length = None;
    let mut chunked = false;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked |= String::from_utf8_lossy(h.value).to_ascii_lowercase().contains("chunked");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(h.value).ok().map(str::trim);
            let parsed = value.and_then(|v| v.parse::<u64>().ok());
            length = Some(parsed.ok_or_else(|| HttpError::Malformed("bad Content-Length".into()))?);
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(len) = length {
        Framing::Length(len)
    } else {
        Framing::UntilClose
    };
    Ok(Some((status, head_len, framing)))
}

/// Decodes a complete chunked body (trailers are ignored).
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::with_capacity(raw.len());
    let malformed = |what: &str| HttpError::Malformed(format!("chunked body: {what}"));
    loop {
        let (header_len, size) = match httparse::parse_chunk_size(raw) {
            Ok(httparse::Status::Complete(v)) => v,
            Ok(httparse::Status::Partial) => return Err(malformed("truncated chunk size")),
            Err(_) => return Err(malformed("invalid chunk size")),
        };
        if size == 0 {
            return Ok(body);
        }
        let size = usize::try_from(size).ok().filter(|&s| s <= MAX_BODY);
        let size = size.ok_or(HttpError::BodyTooLarge)?;
        raw = &raw[header_len..];
        if raw.len() < size + 2 || &raw[size..size + 2] != b"\r\n" {
            return Err(malformed("truncated chunk"));
        }
        body.extend_from_slice(&raw[..size]);
        if body.len() > MAX_BODY {
            return Err(HttpError::BodyTooLarge);
        }
        raw = &raw[size + 2..];
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::net::TcpListener;

    use super::*;

    const HELLO_MD5: &str = "5d41402abc4b2a76b9719d911017c592";

    /// Answers every connection with `response` and records the requests' heads (and, for TLS,
    /// the SNI the client sent). `None` as response: accept and never answer.
    pub(crate) struct Server {
        pub addr: SocketAddr,
        pub requests: Arc<Mutex<Vec<String>>>,
        pub sni: Arc<Mutex<Vec<Option<String>>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// The request head; what came within 500 ms if it never ends (a TLS client hello).
    async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
        let mut head = Vec::new();
        let read = async {
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut byte).await {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), read).await;
        String::from_utf8_lossy(&head).into_owned()
    }

    fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let cert = CertificateDer::from(include_bytes!("testdata/cert.der").to_vec());
        let key = PrivatePkcs8KeyDer::from(include_bytes!("testdata/key.der").to_vec());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], PrivateKeyDer::Pkcs8(key))
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    pub(crate) async fn serve(host: &str, response: Option<Vec<u8>>, tls: bool) -> Server {
        let listener = TcpListener::bind((host, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sni = Arc::new(Mutex::new(Vec::new()));
        let (req, names) = (requests.clone(), sni.clone());
        let acceptor = tls.then(tls_acceptor);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (req, names, response) = (req.clone(), names.clone(), response.clone());
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Some(response) = response else {
                        // Hold the connection open, never answering.
                        let _keep = stream;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    };
                    if let Some(acceptor) = acceptor {
                        let Ok(mut s) = acceptor.accept(stream).await else { return };
                        names.lock().unwrap().push(s.get_ref().1.server_name().map(str::to_owned));
                        let head = read_head(&mut s).await;
                        req.lock().unwrap().push(head);
                        let _ = s.write_all(&response).await;
                        let _ = s.shutdown().await;
                    } else {
                        let mut s = stream;
                        let head = read_head(&mut s).await;
                        req.lock().unwrap().push(head);
                        let _ = s.write_all(&response).await;
                        let _ = s.shutdown().await;
                    }
                });
            }
        });
        Server { addr, requests, sni, task }
    }

    fn url(path: &str, status_code: Option<u16>, digest: Option<&str>) -> UrlCheck {
        UrlCheck { path: path.into(), status_code, digest: digest.map(str::to_owned) }
    }

    fn params(urls: Vec<UrlCheck>, virtualhost: Option<&str>) -> HttpCheck {
        HttpCheck { urls, virtualhost: virtualhost.map(str::to_owned), sni: None }
    }

    const T: Duration = Duration::from_secs(2);

    #[test]
    fn md5_as_genhash() {
        assert_eq!(digest(b"hello"), HELLO_MD5);
        assert_eq!(digest(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn host_headers() {
        let v4: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:8443".parse().unwrap();
        assert_eq!(host_header(None, v4, false), "192.0.2.1");
        assert_eq!(host_header(None, v4, true), "192.0.2.1:80");
        assert_eq!(host_header(Some("www.example"), v4, false), "www.example");
        assert_eq!(host_header(None, v6, true), "[2001:db8::1]:8443");
        assert_eq!(
            request("/h", "x"),
            "GET /h HTTP/1.0\r\nHost: x\r\nUser-Agent: lb-healthcheck\r\nAccept: */*\r\n\
             Connection: close\r\n\r\n"
        );
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n").unwrap(),
            b"hello world"
        );
        assert_eq!(dechunk(b"0\r\n\r\n").unwrap(), b"");
        for bad in [&b"5\r\nhel"[..], b"zz\r\n", b"5\r\nhelloXX0\r\n\r\n", b""] {
            assert!(dechunk(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// Feeds `raw` as the server's answer to [`exchange`].
    async fn exchange_with(raw: &[u8], want_body: bool) -> Result<Response, HttpError> {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        server.write_all(raw).await.unwrap();
        // End the server's side of the stream but keep it, so the request can still be written.
        server.shutdown().await.unwrap();
        let result = exchange(&mut client, b"GET / HTTP/1.0\r\n\r\n", want_body).await;
        drop(server);
        result
    }

    #[tokio::test]
    async fn response_framing() {
        // (raw response, Some((status, body)) or None for an error)
        type Case = (&'static [u8], Option<(u16, Option<&'static [u8]>)>);
        let table: Vec<Case> = vec![
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA", Some((200, Some(b"hello")))),
            (b"HTTP/1.0 200 OK\r\n\r\nuntil close", Some((200, Some(b"until close")))),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
                Some((200, Some(b"hello"))),
            ),
            (b"HTTP/1.1 204 No Content\r\n\r\n", Some((204, Some(b"")))),
            (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", Some((404, Some(b"")))),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", None),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", None),
            (b"HTTP/1.1 200 OK\r\nContent-Le", None),
            (b"garbage\r\n\r\n", None),
            (b"", None),
        ];
        for (raw, want) in table {
            let got = exchange_with(raw, true).await;
            let got = got.map(|r| (r.status, r.body)).ok();
            let want = want.map(|(s, b)| (s, b.map(<[u8]>::to_vec)));
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(raw));
        }
        // Without a digest the body is not read at all.
        let r = exchange_with(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", false).await;
        assert_eq!(r.unwrap(), Response { status: 200, body: None });
    }

    #[tokio::test]
    async fn body_cap() {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        let err = exchange_with(head.as_bytes(), true).await.unwrap_err();
        assert!(matches!(err, HttpError::BodyTooLarge), "{err}");
    }

    #[tokio::test]
    async fn status_digest_and_host() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        for host in ["127.0.0.1", "::1"] {
            let server = serve(host, Some(ok.clone()), false).await;
            let table = [
                (url("/", None, None), true, "GET /: 200"),
                (url("/", Some(200), Some(HELLO_MD5)), true, "GET /: 200"),
                (url("/", Some(200), Some(&HELLO_MD5.to_uppercase())), true, "GET /: 200"),
                (url("/", Some(201), None), false, "GET /: status 200, expected 201"),
                (
                    url("/x", None, Some("00")),
                    false,
                    "GET /x: body digest 5d41402abc4b2a76b9719d911017c592, expected 00",
                ),
            ];
            for (u, ok, message) in table {
                let out = run(server.addr, &params(vec![u], None), false, None, T).await;
                assert_eq!((out.ok, out.message.as_str()), (ok, message), "{host}");
            }
            let head = server.requests.lock().unwrap()[0].clone();
            let expected_host = match server.addr.ip() {
                IpAddr::V4(ip) => format!("Host: {ip}:{}\r\n", server.addr.port()),
                IpAddr::V6(ip) => format!("Host: [{ip}]:{}\r\n", server.addr.port()),
            };
            assert!(head.starts_with("GET / HTTP/1.0\r\n"), "{head}");
            assert!(head.contains(&expected_host), "{head}");
        }
    }

    #[tokio::test]
    async fn every_url_must_pass() {
        let server = serve("127.0.0.1", Some(b"HTTP/1.0 500 Oops\r\n\r\n".to_vec()), false).await;
        let p = params(vec![url("/a", Some(500), None), url("/b", None, None)], Some("vh.example"));
        let out = run(server.addr, &p, false, None, T).await;
        assert!(!out.ok);
        assert_eq!(out.message, "GET /b: status 500, expected 2xx");
        let requests = server.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 2, "one connection per URL");
        assert!(requests[1].contains(&format!("Host: vh.example:{}\r\n", server.addr.port())));
    }

    #[tokio::test]
    async fn closed_port_and_hung_server() {
        let server = serve("127.0.0.1", Some(Vec::new()), false).await;
        let addr = server.addr;
        drop(server);
        tokio::task::yield_now().await;
        let out = run(addr, &params(vec![url("/", None, None)], None), false, None, T).await;
        assert!(!out.ok);
        assert!(out.message.contains("refused"), "{}", out.message);

        let hung = serve("127.0.0.1", None, false).await;
        let started = Instant::now();
        let timeout = Duration::from_millis(300);
        let out =
            run(hung.addr, &params(vec![url("/", None, None)], None), false, None, timeout).await;
        assert!(!out.ok);
        assert_eq!(out.message, "GET /: timed out after 300ms");
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn ssl_get() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        let server = serve("127.0.0.1", Some(ok.clone()), true).await;
        let u = || vec![url("/", Some(200), Some(HELLO_MD5))];
        let out = run(server.addr, &params(u(), None), true, None, T).await;
        assert!(out.ok, "{}", out.message);
        let out = run(server.addr, &params(u(), Some("vh.example")), true, None, T).await;
        assert!(out.ok, "{}", out.message);
        let mut with_sni = params(u(), Some("vh.example"));
        with_sni.sni = Some("sni.example".into());
        let out = run(server.addr, &with_sni, true, None, T).await;
        assert!(out.ok, "{}", out.message);
        assert_eq!(
            server.sni.lock().unwrap().clone(),
            vec![None, None, Some("sni.example".to_owned())],
            "no SNI unless sni (or enable_sni) is set, as keepalived"
        );

        // TLS to a plain HTTP server fails the handshake.
        let plain = serve("::1", Some(ok), false).await;
        let out = run(plain.addr, &params(u(), None), true, None, T).await;
        assert!(!out.ok);
        assert!(out.message.starts_with("GET /: TLS handshake"), "{}", out.message);
    }
}
