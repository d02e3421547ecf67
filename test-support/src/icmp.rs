//! ICMP/ICMPv6 echo over a raw socket, so reachability checks need no `ping` binary (it is not
//! installed on these machines). Called on a thread inside the target namespace.

use anyhow::{Context, Result, bail};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// How often an unanswered echo request is repeated (the first may be lost while ARP/ND resolves).
const RESEND: Duration = Duration::from_millis(200);

/// Pings `dst` until a matching echo reply arrives or `timeout` passes; returns the RTT.
pub(crate) fn ping(dst: IpAddr, timeout: Duration) -> Result<Duration> {
    static NEXT_ID: AtomicU16 = AtomicU16::new(1);
    let ident = (std::process::id() as u16) ^ NEXT_ID.fetch_add(0x9e37, Ordering::Relaxed);
    let (domain, proto) = match dst {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
    };
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("raw ICMP socket");
    }
    // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };

    let deadline = Instant::now() + timeout;
    let mut seq: u16 = 0;
    loop {
        let now = Instant::now();
        if now >= deadline {
            bail!("no echo reply from {dst} within {timeout:?}");
        }
        seq = seq.wrapping_add(1);
        let request = echo_request(dst.is_ipv4(), ident, seq);
        let sent_at = Instant::now();
        send_to(&sock, &request, dst)?;
        let wait_until = (sent_at + RESEND).min(deadline);
        while let Some(left) = wait_until.checked_duration_since(Instant::now()) {
            if !poll_readable(&sock, left)? {
                break;
            }
            let mut buf = [0u8; 2048];
            let (n, from) = recv_from(&sock, &mut buf)?;
            if from == dst && is_echo_reply(&buf[..n], dst.is_ipv4(), ident) {
                return Ok(sent_at.elapsed());
            }
        }
    }
}

fn echo_request(v4: bool, ident: u16, seq: u16) -> Vec<u8> {
    let mut pkt = vec![if v4 { 8 } else { 128 }, 0, 0, 0];
    pkt.extend_from_slice(&ident.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"lb-tests ping..");
    if v4 {
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    // ICMPv6 raw sockets always get their checksum filled in by the kernel (RFC 3542).
    pkt
}

/// A v4 raw socket delivers the IP header too; a v6 one starts at the ICMPv6 header.
fn is_echo_reply(pkt: &[u8], v4: bool, ident: u16) -> bool {
    let icmp = if v4 {
        let Some(&first) = pkt.first() else {
            return false;
        };
        let ihl = usize::from(first & 0x0f) * 4;
        match pkt.get(ihl..) {
            Some(rest) => rest,
            None => return false,
        }
    } else {
        pkt
    };
    let want_type = if v4 { 0 } else { 129 };
    icmp.len() >= 8 && icmp[0] == want_type && icmp[1] == 0 && icmp[4..6] == ident.to_be_bytes()
}

/// RFC 1071 Internet checksum.
pub(crate) fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sockaddr(addr: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn send_to(sock: &OwnedFd, pkt: &[u8], dst: IpAddr) -> Result<()> {
    let (ss, len) = sockaddr(dst);
    // SAFETY: buffer and address are valid for the given lengths.
    let rc = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("sendto {dst}"));
    }
    Ok(())
}

fn recv_from(sock: &OwnedFd, buf: &mut [u8]) -> Result<(usize, IpAddr)> {
    // SAFETY: all-zero sockaddr_storage is valid; recvfrom writes at most `len` bytes into it.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: buffer and address storage are valid for the given lengths.
    let n = unsafe {
        libc::recvfrom(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error()).context("recvfrom");
    }
    let from = match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel filled in a sockaddr_in for AF_INET.
            let sin = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in) };
            IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes())
        }
        _ => {
            // SAFETY: the only other family on these sockets is AF_INET6.
            let sin6 = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in6) };
            IpAddr::from(sin6.sin6_addr.s6_addr)
        }
    };
    Ok((n as usize, from))
}

fn poll_readable(sock: &OwnedFd, timeout: Duration) -> Result<bool> {
    let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(err).context("poll");
    }
    Ok(rc > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3 example: sum 0xddf2, checksum is its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
        let req = echo_request(true, 0x1234, 1);
        assert_eq!(checksum(&req), 0, "a packet with its checksum sums to zero");
    }

    #[test]
    fn echo_reply_parsing() {
        let mut reply = vec![0x45u8; 20];
        reply.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 1]);
        assert!(is_echo_reply(&reply, true, 0x1234));
        assert!(!is_echo_reply(&reply, true, 0x1235));
        assert!(is_echo_reply(&[129, 0, 0, 0, 0x12, 0x34, 0, 1], false, 0x1234));
        assert!(!is_echo_reply(&[128, 0, 0, 0, 0x12, 0x34, 0, 1], false, 0x1234));
    }
}
