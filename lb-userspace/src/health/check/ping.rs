//! PING_CHECK: an ICMP (IPv4) or ICMPv6 echo request gets its reply in time.
//!
//! Uses an unprivileged ICMP datagram socket ("ping socket", allowed by
//! `net.ipv4.ping_group_range`) and falls back to a raw socket (needs CAP_NET_RAW) when the kernel
//! refuses it. A datagram socket's replies are already matched to it by the kernel; on a raw
//! socket every ICMP packet arrives, so replies are matched by identifier, sequence and payload.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket;

use super::{BindError, Outcome, bind_addr};
use crate::health::random::random_u64;

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("cannot open an ICMP socket (datagram: {dgram}; raw: {raw})")]
    Socket {
        #[source]
        dgram: io::Error,
        raw: io::Error,
    },
    #[error(transparent)]
    Family(#[from] BindError),
    #[error("socket setup: {0}")]
    Setup(#[source] io::Error),
    #[error("send: {0}")]
    Send(#[source] io::Error),
    #[error("receive: {0}")]
    Recv(io::Error),
    #[error("no echo reply within {0:?}")]
    Timeout(Duration),
}

/// Which kind of socket carries the echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Kernel-matched ping socket: replies arrive without IP header, identifier rewritten.
    Dgram,
    /// Raw socket: IPv4 replies arrive with their IP header, ICMPv6 ones without.
    Raw,
}

/// RFC 1071 Internet checksum.
pub fn checksum(data: &[u8]) -> u16 {
    crate::net::checksum::internet_checksum(data)
}

/// An echo request. The ICMPv4 checksum is filled in; the kernel computes ICMPv6's (it covers a
/// pseudo-header only the kernel knows for sure).
pub fn echo_request(v6: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let kind = if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 };
    let mut packet = vec![kind, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(payload);
    if !v6 {
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

/// The echo reply in `packet`, if it is one: (identifier, sequence, payload).
fn parse_reply(packet: &[u8], v6: bool, kind: Kind) -> Option<(u16, u16, &[u8])> {
    let icmp = if !v6 && kind == Kind::Raw {
        let first = *packet.first()?;
        if first >> 4 != 4 {
            return None;
        }
        packet.get(usize::from(first & 0x0f) * 4..)?
    } else {
        packet
    };
    let reply = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    if icmp.len() < 8 || icmp[0] != reply || icmp[1] != 0 {
        return None;
    }
    let id = u16::from_be_bytes([icmp[4], icmp[5]]);
    let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
    Some((id, seq, &icmp[8..]))
}

fn open(target: IpAddr, bindto: Option<IpAddr>) -> Result<(UdpSocket, Kind), PingError> {
    let (domain, protocol) = match target {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    let (socket, kind) = match Socket::new(domain, Type::DGRAM, Some(protocol)) {
        Ok(s) => (s, Kind::Dgram),
        Err(dgram) => match Socket::new(domain, Type::RAW, Some(protocol)) {
            Ok(s) => (s, Kind::Raw),
            Err(raw) => return Err(PingError::Socket { dgram, raw }),
        },
    };
    if bindto.is_some() {
        let addr = bind_addr(target, bindto)?;
        socket.bind(&SockAddr::from(addr)).map_err(PingError::Setup)?;
    }
    socket.connect(&SockAddr::from(SocketAddr::new(target, 0))).map_err(PingError::Setup)?;
    socket.set_nonblocking(true).map_err(PingError::Setup)?;
    // tokio's UdpSocket only sends and receives datagrams on the descriptor: any datagram
    // socket fits.
    let socket = UdpSocket::from_std(socket.into()).map_err(PingError::Setup)?;
    Ok((socket, kind))
}

/// One PING_CHECK attempt.
pub async fn run(target: IpAddr, bindto: Option<IpAddr>, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, echo(target, bindto))
        .await
        .unwrap_or(Err(PingError::Timeout(timeout)));
    Outcome::from_result(result, started)
}

async fn echo(target: IpAddr, bindto: Option<IpAddr>) -> Result<String, PingError> {
    let v6 = target.is_ipv6();
    let (socket, kind) = open(target, bindto)?;
    let random = random_u64();
    let (id, seq) = ((random >> 16) as u16, random as u16);
    let payload = random.to_be_bytes();
    socket.send(&echo_request(v6, id, seq, &payload)).await.map_err(PingError::Send)?;
    let mut buf = vec![0u8; 2048];
    loop {
        let n = socket.recv(&mut buf).await.map_err(PingError::Recv)?;
        if let Some((got_id, got_seq, got_payload)) = parse_reply(&buf[..n], v6, kind) {
            // A ping socket's identifier is the kernel's, not ours.
            let id_ok = kind == Kind::Dgram || got_id == id;
            if id_ok && got_seq == seq && got_payload == payload {
                return Ok("echo reply".to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_checksum() {
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0x220d);
        assert_eq!(checksum(&[0xff]), 0x00ff);
        let packet = echo_request(false, 0x1234, 7, b"abc");
        assert_eq!(checksum(&packet), 0, "a packet with its checksum sums to zero");
    }

    #[test]
    fn packets() {
        assert_eq!(echo_request(true, 0x0102, 0x0304, b"x"), b"\x80\x00\x00\x00\x01\x02\x03\x04x");
        let v4 = echo_request(false, 0x0102, 0x0304, b"x");
        assert_eq!(&v4[..2], &[8, 0]);
        assert_eq!(&v4[4..], b"\x01\x02\x03\x04x");

        let reply = b"\x00\x00\xaa\xbb\x01\x02\x03\x04data";
        assert_eq!(parse_reply(reply, false, Kind::Dgram), Some((0x0102, 0x0304, &b"data"[..])));
        let mut with_ip = vec![0x45u8];
        with_ip.extend_from_slice(&[0; 19]);
        with_ip.extend_from_slice(reply);
        assert_eq!(parse_reply(&with_ip, false, Kind::Raw), Some((0x0102, 0x0304, &b"data"[..])));
        // Our own request, seen on a raw socket, is not a reply.
        let mut request = with_ip.clone();
        request[20] = ECHO_REQUEST_V4;
        assert_eq!(parse_reply(&request, false, Kind::Raw), None);
        let v6_reply = b"\x81\x00\x00\x00\x00\x09\x00\x0a";
        assert_eq!(parse_reply(v6_reply, true, Kind::Raw), Some((9, 10, &b""[..])));
        assert_eq!(parse_reply(&v6_reply[..7], true, Kind::Raw), None);
        assert_eq!(parse_reply(b"\x60", false, Kind::Raw), None);
    }

    #[tokio::test]
    async fn loopback_answers() {
        for host in ["127.0.0.1", "::1"] {
            let ip: IpAddr = host.parse().unwrap();
            // Ping sockets may be allowed to anyone; raw ones need root.
            if open(ip, None).is_err() && !crate::testutil::require_root("PING_CHECK") {
                return;
            }
            let out = run(ip, None, Duration::from_secs(2)).await;
            assert!(out.ok, "{host}: {}", out.message);
            let out = run(ip, Some(ip), Duration::from_secs(2)).await;
            assert!(out.ok, "{host} bindto: {}", out.message);
        }
    }

    /// The ping-socket path, as on hosts whose `ping_group_range` admits the agent (systemd's
    /// default admits everyone): in a private network namespace, where the setting is ours.
    #[test]
    fn ping_sockets_when_allowed() {
        if !crate::testutil::require_root("PING_CHECK over ping sockets") {
            return;
        }
        // Namespaces are per thread: do it all on a thread of our own.
        let result = std::thread::spawn(|| {
            crate::testutil::private_netns();
            std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647").unwrap();
            let up = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status();
            assert!(up.is_ok_and(|s| s.success()), "ip link set lo up");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                for host in ["127.0.0.1", "::1"] {
                    let ip: IpAddr = host.parse().unwrap();
                    let (_, kind) = open(ip, None).unwrap();
                    assert_eq!(kind, Kind::Dgram, "{host}");
                    let out = run(ip, None, Duration::from_secs(2)).await;
                    assert!(out.ok, "{host}: {}", out.message);
                }
            });
        })
        .join();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }

    #[tokio::test]
    async fn silence_is_down() {
        // The IPv6 discard-only prefix (RFC 6666): either no route (send fails) or no reply.
        let started = Instant::now();
        let out = run("100::1".parse().unwrap(), None, Duration::from_millis(300)).await;
        assert!(!out.ok);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
