//! DNS_CHECK: a query over UDP gets an answer. As in keepalived, the real is up only when a
//! response with our id, RCODE NOERROR and at least one answer record arrives in time; an ICMP
//! error (nothing listening) is down at once.
//!
//! The query is a header and one question, built by hand: a resolver library would be far more
//! than the check needs.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use tokio::net::UdpSocket;

use super::{BindError, Outcome, bind_addr};
use crate::{config::health::DnsCheck, health::random::random_u64};

const HEADER_LEN: usize = 12;
/// Recursion desired: a recursive resolver as real answers names it is not authoritative for.
const FLAG_RD: u16 = 0x0100;
const FLAG_QR: u16 = 0x8000;
const CLASS_IN: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("unknown dns_type \"{0}\"")]
    UnknownType(String),
    #[error("invalid dns_name \"{0}\"")]
    BadName(String),
    #[error(transparent)]
    Family(#[from] BindError),
    #[error("socket: {0}")]
    Socket(#[source] io::Error),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Malformed(&'static str),
    #[error("response code {0} ({1})")]
    Rcode(u8, &'static str),
    #[error("response has no answer records")]
    NoAnswer,
}

/// The header fields the check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub response: bool,
    pub rcode: u8,
    pub qdcount: u16,
    pub ancount: u16,
}

/// keepalived's `dns_type` names.
pub fn qtype(name: &str) -> Option<u16> {
    Some(match name.to_ascii_uppercase().as_str() {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "SOA" => 6,
        "PTR" => 12,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        _ => return None,
    })
}

/// A standard query for `name` (dotted, "." or "" for the root) of type `qtype`, class IN.
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
    let bad = || DnsError::BadName(name.to_owned());
    let mut q = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&FLAG_RD.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // QDCOUNT 1, AN/NS/AR 0
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            let len = u8::try_from(label.len()).ok().filter(|&l| (1..=63).contains(&l));
            q.push(len.ok_or_else(bad)?);
            q.extend_from_slice(label.as_bytes());
        }
    }
    q.push(0);
    if q.len() - HEADER_LEN > 255 {
        return Err(bad());
    }
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(q)
}

/// Reads the header and walks over the question section, so that a truncated or garbled message
/// is rejected rather than half-trusted.
pub fn decode_response(msg: &[u8]) -> Result<Header, DnsError> {
    let header =
        msg.get(..HEADER_LEN).ok_or(DnsError::Malformed("response shorter than a header"))?;
    let word = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let flags = word(2);
    let h = Header {
        id: word(0),
        response: flags & FLAG_QR != 0,
        rcode: (flags & 0x000f) as u8,
        qdcount: word(4),
        ancount: word(6),
    };
    let mut pos = HEADER_LEN;
    for _ in 0..h.qdcount {
        pos = skip_name(msg, pos)?;
        pos += 4; // QTYPE, QCLASS
        if pos > msg.len() {
            return Err(DnsError::Malformed("truncated question"));
        }
    }
    Ok(h)
}

/// The position just after the (possibly compressed) name at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Result<usize, DnsError> {
    loop {
        let len = *msg.get(pos).ok_or(DnsError::Malformed("truncated name"))?;
        match len & 0xc0 {
            0x00 if len == 0 => return Ok(pos + 1),
            0x00 => pos += 1 + usize::from(len),
            // A pointer ends the name where it stands.
            0xc0 if pos + 2 <= msg.len() => return Ok(pos + 2),
            0xc0 => return Err(DnsError::Malformed("truncated name")),
            _ => return Err(DnsError::Malformed("invalid label type")),
        }
    }
}

fn rcode_name(rcode: u8) -> &'static str {
    match rcode {
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "error",
    }
}

/// Up when `header` answers query `id` with records.
fn judge(header: &Header) -> Result<String, DnsError> {
    if header.rcode != 0 {
        return Err(DnsError::Rcode(header.rcode, rcode_name(header.rcode)));
    }
    if header.ancount == 0 {
        return Err(DnsError::NoAnswer);
    }
    Ok(format!("{} answer record(s)", header.ancount))
}

/// One DNS_CHECK attempt.
pub async fn run(
    target: SocketAddr,
    params: &DnsCheck,
    bindto: Option<IpAddr>,
    timeout: Duration,
) -> Outcome {
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, query(target, params, bindto))
        .await
        .unwrap_or(Err(DnsError::Timeout(timeout)));
    Outcome::from_result(result, started)
}

async fn query(
    target: SocketAddr,
    params: &DnsCheck,
    bindto: Option<IpAddr>,
) -> Result<String, DnsError> {
    let qtype = qtype(&params.qtype).ok_or_else(|| DnsError::UnknownType(params.qtype.clone()))?;
    let id = (random_u64() & 0xffff) as u16;
    let message = encode_query(id, &params.name, qtype)?;
    let socket =
        UdpSocket::bind(bind_addr(target.ip(), bindto)?).await.map_err(DnsError::Socket)?;
    // Connected: only the real's datagrams arrive, and ICMP errors surface as recv errors.
    super::super::probe::mark_socket(&socket).map_err(DnsError::Socket)?;
    socket.connect(target).await.map_err(DnsError::Socket)?;
    socket.send(&message).await.map_err(DnsError::Socket)?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = socket.recv(&mut buf).await.map_err(DnsError::Socket)?;
        // Anything that is not a response to this query (a late answer to an earlier one, junk)
        // is ignored: the timeout decides.
        match decode_response(&buf[..n]) {
            Ok(h) if h.response && h.id == id => return judge(&h),
            _ => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_queries() {
        let q = encode_query(0xbeef, "www.example.com", qtype("A").unwrap()).unwrap();
        let want: &[u8] = b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
            \x03www\x07example\x03com\x00\x00\x01\x00\x01";
        assert_eq!(q, want);
        let root = encode_query(1, ".", qtype("soa").unwrap()).unwrap();
        assert_eq!(root, b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x06\x00\x01");
        assert_eq!(encode_query(1, "", 6).unwrap(), root);
        assert_eq!(
            encode_query(1, "example.", 28).unwrap()[12..],
            *b"\x07example\x00\x00\x1c\x00\x01"
        );
        let long_label = "x".repeat(64);
        let long_name = ["abcdefghij"; 26].join(".");
        for bad in ["a..b", ".a", long_label.as_str(), long_name.as_str()] {
            assert!(encode_query(1, bad, 1).is_err(), "{bad}");
        }
        assert_eq!(qtype("TXT"), Some(16));
        assert_eq!(qtype("HINFO"), None);
    }

    /// A response to the `www.example.com A` query above with one answer using a pointer.
    const RESPONSE: &[u8] = b"\xbe\xef\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\
        \x03www\x07example\x03com\x00\x00\x01\x00\x01\
        \xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\xc0\x00\x02\x01";

    #[test]
    fn decodes_responses() {
        let h = decode_response(RESPONSE).unwrap();
        assert_eq!(h, Header { id: 0xbeef, response: true, rcode: 0, qdcount: 1, ancount: 1 });
        assert_eq!(judge(&h).unwrap(), "1 answer record(s)");

        let mut nx = RESPONSE.to_vec();
        nx[3] = 0x83; // RCODE 3
        nx[7] = 0;
        let h = decode_response(&nx).unwrap();
        assert_eq!(judge(&h).unwrap_err().to_string(), "response code 3 (NXDOMAIN)");

        let mut empty = RESPONSE[..33].to_vec();
        empty[7] = 0;
        assert_eq!(
            judge(&decode_response(&empty).unwrap()).unwrap_err().to_string(),
            "response has no answer records"
        );

        // A question compressed with a pointer is skipped too.
        let mut ptr = RESPONSE[..12].to_vec();
        ptr.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01");
        assert_eq!(decode_response(&ptr).unwrap().qdcount, 1);

        for cut in [0, 5, 11, 14, 29, 32] {
            assert!(decode_response(&RESPONSE[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_label = RESPONSE.to_vec();
        bad_label[12] = 0x80;
        assert!(decode_response(&bad_label).is_err());
    }

    /// A UDP responder answering every query with `answers` records (echoing id and question).
    async fn responder(
        host: &str,
        answers: u16,
        rcode: u8,
    ) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let socket = UdpSocket::bind((host, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let mut r = buf[..n].to_vec();
                // A stray datagram with the wrong id first: the checker must skip it.
                let mut stray = r.clone();
                stray[0] ^= 0xff;
                stray[2] |= 0x80;
                let _ = socket.send_to(&stray, peer).await;
                r[2] |= 0x80;
                r[3] = (r[3] & 0xf0) | rcode;
                r[6..8].copy_from_slice(&answers.to_be_bytes());
                for _ in 0..answers {
                    r.extend_from_slice(
                        b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x7f\x00\x00\x01",
                    );
                }
                let _ = socket.send_to(&r, peer).await;
            }
        });
        (addr, task)
    }

    fn params(name: &str, qtype: &str) -> DnsCheck {
        DnsCheck { name: name.into(), qtype: qtype.into() }
    }

    #[tokio::test]
    async fn against_a_local_responder() {
        let t = Duration::from_secs(2);
        for host in ["127.0.0.1", "::1"] {
            let (addr, task) = responder(host, 2, 0).await;
            let out = run(addr, &params("example.com", "A"), None, t).await;
            assert!(out.ok, "{host}: {}", out.message);
            assert_eq!(out.message, "2 answer record(s)");
            let out = run(addr, &params(".", "FOO"), None, t).await;
            assert_eq!((out.ok, out.message.as_str()), (false, "unknown dns_type \"FOO\""));
            task.abort();
        }
        let (addr, task) = responder("127.0.0.1", 0, 0).await;
        let out = run(addr, &params(".", "SOA"), None, t).await;
        assert_eq!((out.ok, out.message.as_str()), (false, "response has no answer records"));
        task.abort();
        let (addr, task) = responder("127.0.0.1", 1, 5).await;
        let out = run(addr, &params(".", "SOA"), None, t).await;
        assert_eq!((out.ok, out.message.as_str()), (false, "response code 5 (REFUSED)"));
        task.abort();
    }

    #[tokio::test]
    async fn nothing_listening_or_silent() {
        // Closed port: the ICMP port unreachable fails the check at once.
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let started = Instant::now();
        let out = run(closed, &params(".", "SOA"), None, Duration::from_secs(2)).await;
        assert!(!out.ok);
        assert!(out.message.contains("refused"), "{}", out.message);
        assert!(started.elapsed() < Duration::from_secs(1));

        // Bound but silent: the timeout.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let out = run(
            silent.local_addr().unwrap(),
            &params(".", "SOA"),
            None,
            Duration::from_millis(200),
        )
        .await;
        assert_eq!((out.ok, out.message.as_str()), (false, "no response within 200ms"));
    }
}
