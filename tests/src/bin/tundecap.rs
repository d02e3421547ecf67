//! `lb-tundecap`: a userspace tunnel endpoint for a test real whose kernel has no tunnel modules
//! (no ipip, ip6tnl, gre or fou on the lab host).
//!
//! ```text
//! lb-tundecap --tun NAME --gue-port PORT
//! ```
//! Creates the TUN device NAME (gone when the process exits), receives the outer packets the
//! kernel has no handler for on raw sockets (IPv4 and IPv6, protocols 4 = IPv4 inside,
//! 41 = IPv6 inside, 47 = GRE) and GUE on a UDP socket ([::]:PORT, both families), strips the
//! outer headers and writes the inner IP packet into the TUN device: the real's own stack then
//! receives it as if a kernel tunnel had decapsulated it. Prints `ready` once every socket is
//! open, then serves until killed. Std and libc only.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::Arc;

const IPPROTO_IPIP: i32 = 4;
const IPPROTO_IPV6: i32 = 41;
const IPPROTO_GRE: i32 = 47;
/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn open_tun(name: &str) -> io::Result<File> {
    let file = OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: IFF_TUN | IFF_NO_PI, _pad: [0; 22] };
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "TUN name too long"));
    }
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `IfReq` lays out.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

fn raw_socket(family: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// GUE over IPv6 comes with UDP checksum 0 (RFC 6935), which the kernel drops unless asked not
/// to (what its own FOU receiver does).
fn allow_zero_udp6_checksum(sock: &UdpSocket) -> io::Result<()> {
    /// `UDP_NO_CHECK6_RX` from linux/udp.h.
    const UDP_NO_CHECK6_RX: libc::c_int = 102;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_UDP,
            UDP_NO_CHECK6_RX,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The inner IP packet of a GRE payload: skips the optional checksum, key and sequence words.
fn strip_gre(p: &[u8]) -> Option<&[u8]> {
    let flags = u16::from_be_bytes([*p.first()?, *p.get(1)?]);
    let mut len = 4;
    for bit in [0x8000, 0x2000, 0x1000] {
        if flags & bit != 0 {
            len += 4;
        }
    }
    p.get(len..)
}

/// The inner packet of one raw-socket read: IPv4 raw sockets see the outer IPv4 header, IPv6
/// ones only the payload.
fn inner(family: i32, protocol: i32, pkt: &[u8]) -> Option<&[u8]> {
    let payload = if family == libc::AF_INET {
        let ihl = usize::from(pkt.first()? & 0x0f) * 4;
        pkt.get(ihl..)?
    } else {
        pkt
    };
    if protocol == IPPROTO_GRE { strip_gre(payload) } else { Some(payload) }
}

fn serve_raw(sock: OwnedFd, family: i32, protocol: i32, tun: Arc<File>) {
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: reads at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else {
            eprintln!("raw recv: {}", io::Error::last_os_error());
            continue;
        };
        if let Some(packet) = inner(family, protocol, &buf[..n])
            && !packet.is_empty()
            && let Err(e) = (&*tun).write(packet)
        {
            eprintln!("tun write: {e}");
        }
    }
}

fn serve_gue(sock: UdpSocket, tun: Arc<File>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf) {
            // GUE variant 1: the IP packet directly after the UDP header.
            Ok((n, _)) if n > 0 => {
                if let Err(e) = (&*tun).write(&buf[..n]) {
                    eprintln!("tun write: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("gue recv: {e}"),
        }
    }
}

fn run(tun_name: &str, gue_port: u16) -> io::Result<()> {
    let tun = Arc::new(open_tun(tun_name)?);
    let mut threads = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        for protocol in [IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_GRE] {
            let sock = raw_socket(family, protocol)?;
            let tun = Arc::clone(&tun);
            threads.push(std::thread::spawn(move || serve_raw(sock, family, protocol, tun)));
        }
    }
    let gue = UdpSocket::bind(("::", gue_port))?;
    allow_zero_udp6_checksum(&gue)?;
    let tun_gue = Arc::clone(&tun);
    threads.push(std::thread::spawn(move || serve_gue(gue, tun_gue)));
    println!("ready");
    io::stdout().flush()?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(tun), Some(port)) = (
        args.iter().position(|a| a == "--tun").and_then(|i| args.get(i + 1)),
        args.iter()
            .position(|a| a == "--gue-port")
            .and_then(|i| args.get(i + 1))
            .and_then(|p| p.parse::<u16>().ok()),
    ) else {
        eprintln!("usage: lb-tundecap --tun NAME --gue-port PORT");
        return ExitCode::from(2);
    };
    match run(tun, port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-tundecap: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_packet_of_each_encapsulation() {
        let ip4 = [0x45u8, 0, 0, 20];
        let mut outer4 = vec![0x45u8; 1];
        outer4.extend_from_slice(&[0; 19]);
        outer4.extend_from_slice(&ip4);
        let gre = [&[0u8, 0, 0x08, 0][..], &ip4].concat();
        let gre_key = [&[0x20u8, 0, 0x08, 0, 1, 2, 3, 4][..], &ip4].concat();
        let cases: [(i32, i32, &[u8]); 4] = [
            (libc::AF_INET, IPPROTO_IPIP, &outer4),
            (libc::AF_INET6, IPPROTO_IPIP, &ip4),
            (libc::AF_INET6, IPPROTO_GRE, &gre),
            (libc::AF_INET6, IPPROTO_GRE, &gre_key),
        ];
        for (family, protocol, pkt) in cases {
            assert_eq!(inner(family, protocol, pkt), Some(&ip4[..]), "{family} {protocol}");
        }
        assert_eq!(inner(libc::AF_INET6, IPPROTO_GRE, &[0x80, 0]), None, "short GRE");
    }
}
