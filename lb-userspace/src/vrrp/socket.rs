//! Raw IP sockets for VRRP (protocol 112), one per interface and address family, shared by the
//! instances on it: the receive loop routes adverts by VRID, the instances send through it.
//!
//! Sending sets what keepalived sets: TTL / hop limit 255 (RFC: receivers drop anything else),
//! TOS / traffic class 0xc0 (network control), no multicast loopback, the interface bound with
//! `SO_BINDTODEVICE`. The source address is given per packet (`IP_PKTINFO` / `IPV6_PKTINFO`)
//! because the VRRPv3 checksum covers it, so it must be known before the kernel builds the
//! header; `IP_FREEBIND` lets a not-yet-ready (IPv6 tentative) source be used anyway.
//!
//! Receiving: raw IPv4 sockets deliver the IP header (source, destination, TTL); IPv6 ones do
//! not, so `IPV6_RECVPKTINFO` and `IPV6_RECVHOPLIMIT` bring the destination and hop limit as
//! control messages. The multicast group is joined on the interface only when an instance on
//! it uses multicast.

use std::{
    io::{self, IoSlice, IoSliceMut},
    net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6},
    ops::Range,
    os::fd::AsRawFd,
};

use nix::sys::socket::{
    self as nixsock, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn6, SockaddrStorage,
    sockopt,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::{Interest, unix::AsyncFd};

use super::{
    frame::{self, FrameError},
    packet::{Family, IPPROTO_VRRP, IpMeta, MULTICAST_V4, MULTICAST_V6, VRRP_TTL},
};

/// keepalived's IP TOS for adverts: precedence 6 (internetwork control).
pub const VRRP_TOS: u8 = 0xc0;
/// Big enough for any advert (255 IPv6 addresses = 4 088 bytes of VRRP) plus the IP header.
pub const RECV_BUFFER: usize = 4096 + 64;

/// A received packet: the IP facts and where the VRRP message is in the buffer, or why the IP
/// layer around it was unusable.
pub type Recv = Result<(IpMeta, Range<usize>), FrameError>;

/// One raw VRRP socket on one interface.
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    family: Family,
    ifindex: u32,
    ifname: String,
}

impl VrrpSocket {
    /// Opens the socket on `ifname`; joins the VRRP group there when `multicast`.
    pub fn open(ifname: &str, ifindex: u32, family: Family, multicast: bool) -> io::Result<Self> {
        let proto = Some(Protocol::from(i32::from(IPPROTO_VRRP)));
        let sock = match family {
            Family::V4 => {
                let s = Socket::new(Domain::IPV4, Type::RAW, proto)?;
                s.set_header_included_v4(false)?;
                s.set_ttl_v4(u32::from(VRRP_TTL))?;
                s.set_multicast_ttl_v4(u32::from(VRRP_TTL))?;
                s.set_tos_v4(u32::from(VRRP_TOS))?;
                s.set_multicast_loop_v4(false)?;
                s.set_multicast_all_v4(false)?;
                s.set_freebind_v4(true)?;
                s
            }
            Family::V6 => {
                let s = Socket::new(Domain::IPV6, Type::RAW, proto)?;
                s.set_unicast_hops_v6(u32::from(VRRP_TTL))?;
                s.set_multicast_hops_v6(u32::from(VRRP_TTL))?;
                s.set_tclass_v6(u32::from(VRRP_TOS))?;
                s.set_multicast_loop_v6(false)?;
                s.set_multicast_all_v6(false)?;
                s.set_multicast_if_v6(ifindex)?;
                s.set_freebind_v6(true)?;
                s.set_recv_hoplimit_v6(true)?;
                nixsock::setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true)?;
                s
            }
        };
        sock.bind_device(Some(ifname.as_bytes()))?;
        if multicast {
            match family {
                Family::V4 => sock
                    .join_multicast_v4_n(&MULTICAST_V4, &InterfaceIndexOrAddress::Index(ifindex))?,
                Family::V6 => sock.join_multicast_v6(&MULTICAST_V6, ifindex)?,
            }
        }
        sock.set_nonblocking(true)?;
        // SAFETY: the socket owns its descriptor and is never replaced or closed while the
        // AsyncFd holds it.
        let fd = unsafe {
            AsyncFd::register_with_interest(sock, Interest::READABLE | Interest::WRITABLE)?
        };
        Ok(VrrpSocket { fd, family, ifindex, ifname: ifname.to_string() })
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Sends one VRRP message from `src` to `dst` (the multicast group or a unicast peer).
    pub async fn send(&self, src: IpAddr, dst: IpAddr, msg: &[u8]) -> io::Result<()> {
        self.fd.async_io(Interest::WRITABLE, |s| send_pktinfo(s, self.ifindex, src, dst, msg)).await
    }

    /// Receives one packet into `buf` (at least [`RECV_BUFFER`] bytes).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Recv> {
        match self.family {
            Family::V4 => {
                let n = self.fd.async_io(Interest::READABLE, |s| recv_plain(s, buf)).await?;
                let base = buf.as_ptr() as usize;
                Ok(frame::parse_ip_packet(&buf[..n]).map(|(ip, _tos, vrrp)| {
                    let start = vrrp.as_ptr() as usize - base;
                    (ip, start..start + vrrp.len())
                }))
            }
            Family::V6 => {
                let (n, ip) = self.fd.async_io(Interest::READABLE, |s| recv_v6(s, buf)).await?;
                Ok(Ok((ip, 0..n)))
            }
        }
    }
}

fn recv_plain(s: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    Ok(nixsock::recv(s.as_raw_fd(), buf, MsgFlags::empty())?)
}

/// recvmsg on the IPv6 socket: the payload, the source from the address, the destination and
/// hop limit from the control messages.
fn recv_v6(s: &Socket, buf: &mut [u8]) -> io::Result<(usize, IpMeta)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut control = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
    let msg = nixsock::recvmsg::<SockaddrIn6>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::empty(),
    )?;
    let src = IpAddr::V6(msg.address.map_or(Ipv6Addr::UNSPECIFIED, |a| a.ip()));
    let mut dst = None;
    let mut hops = 0u8;
    // Truncated control messages (cannot happen: the buffer fits both) read as none.
    for cmsg in msg.cmsgs().into_iter().flatten() {
        match cmsg {
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                dst = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
            }
            ControlMessageOwned::Ipv6HopLimit(h) => hops = u8::try_from(h).unwrap_or(0),
            _ => {}
        }
    }
    // Without PKTINFO (cannot happen with the option set) the advert fails the checks as
    // unicast to `::`.
    let dst = dst.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    Ok((msg.bytes, IpMeta { src, dst, ttl: hops }))
}

/// sendmsg with the source address and interface in a PKTINFO control message.
fn send_pktinfo(s: &Socket, ifindex: u32, src: IpAddr, dst: IpAddr, data: &[u8]) -> io::Result<()> {
    let dst_addr = SockaddrStorage::from(match dst {
        IpAddr::V4(_) => SocketAddr::new(dst, 0),
        // Link-local and multicast destinations need the interface as scope.
        IpAddr::V6(d) => SocketAddr::V6(SocketAddrV6::new(d, 0, 0, ifindex)),
    });
    let iov = [IoSlice::new(data)];
    let v4;
    let v6;
    let cmsg = match src {
        IpAddr::V4(src) => {
            v4 = libc::in_pktinfo {
                ipi_ifindex: ifindex as i32,
                ipi_spec_dst: libc::in_addr { s_addr: u32::from(src).to_be() },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            ControlMessage::Ipv4PacketInfo(&v4)
        }
        IpAddr::V6(src) => {
            v6 = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr { s6_addr: src.octets() },
                ipi6_ifindex: ifindex,
            };
            ControlMessage::Ipv6PacketInfo(&v6)
        }
    };
    nixsock::sendmsg(s.as_raw_fd(), &iov, &[cmsg], MsgFlags::empty(), Some(&dst_addr))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::vrrp::packet::{self, Advert, Kind};

    /// Two sockets on the two ends of a veth pair in a private namespace: an advert sent from
    /// one arrives at the other with TTL 255, the right source and destination, and decodes.
    #[test]
    fn adverts_cross_a_veth_pair_v4_and_v6() {
        if !crate::testutil::require_root("VRRP raw sockets") {
            return;
        }
        std::thread::spawn(|| {
            crate::testutil::private_netns();
            let ip = |args: &[&str]| {
                let st = std::process::Command::new("ip").args(args).status().unwrap();
                assert!(st.success(), "ip {args:?}");
            };
            ip(&["link", "add", "vra", "type", "veth", "peer", "name", "vrb"]);
            ip(&["addr", "add", "192.0.2.1/24", "dev", "vra"]);
            ip(&["addr", "add", "192.0.2.2/24", "dev", "vrb"]);
            ip(&["addr", "add", "fe80::a/64", "dev", "vra", "nodad"]);
            ip(&["addr", "add", "fe80::b/64", "dev", "vrb", "nodad"]);
            ip(&["link", "set", "vra", "up"]);
            ip(&["link", "set", "vrb", "up"]);
            // The source is local to this namespace too: accept it instead of calling it martian.
            for conf in ["all", "vrb"] {
                let path = format!("/proc/sys/net/ipv4/conf/{conf}/accept_local");
                std::fs::write(path, "1").unwrap();
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let ia = crate::net::iface::index("vra").unwrap();
                let ib = crate::net::iface::index("vrb").unwrap();
                // Multicast only: both ends are in one namespace, so a unicast advert would be
                // delivered locally instead of crossing the pair (the netns tests cover unicast).
                let cases: [(Family, IpAddr, IpAddr); 2] = [
                    (Family::V4, "192.0.2.1".parse().unwrap(), IpAddr::V4(MULTICAST_V4)),
                    (Family::V6, "fe80::a".parse().unwrap(), IpAddr::V6(MULTICAST_V6)),
                ];
                for (family, src, dst) in cases {
                    let a = VrrpSocket::open("vra", ia, family, true).unwrap();
                    let b = VrrpSocket::open("vrb", ib, family, true).unwrap();
                    let vip: IpAddr = if family == Family::V4 {
                        "192.0.2.200".parse().unwrap()
                    } else {
                        "2001:db8::200".parse().unwrap()
                    };
                    let adv = Advert {
                        vrid: 51,
                        priority: 100,
                        addresses: vec![vip],
                        kind: Kind::V3 { max_advert_int_cs: 100 },
                    };
                    let msg = adv.encode(src, dst).unwrap();
                    let mut buf = vec![0u8; RECV_BUFFER];
                    // Sent again every 100 ms for 5 s: right after `ip link set up` (and on a
                    // busy machine) the first frames can be dropped before the pair carries.
                    let mut got = None;
                    for _ in 0..50 {
                        a.send(src, dst, &msg).await.unwrap();
                        let wait = Duration::from_millis(100);
                        if let Ok(r) = tokio::time::timeout(wait, b.recv(&mut buf)).await {
                            got = Some(r.unwrap());
                            break;
                        }
                    }
                    let got = got.expect("advert not received");
                    let (meta, range) = got.unwrap();
                    assert_eq!(meta.src, src, "{family}");
                    assert_eq!(meta.dst, dst, "{family}");
                    assert_eq!(meta.ttl, 255, "{family}");
                    let rx = packet::parse(&buf[range], &meta).unwrap();
                    assert_eq!(rx.advert, adv);
                    // No multicast loopback: the sender's own socket saw nothing.
                    let mut buf2 = vec![0u8; RECV_BUFFER];
                    let own =
                        tokio::time::timeout(Duration::from_millis(100), a.recv(&mut buf2)).await;
                    assert!(own.is_err(), "{family} {dst}: own advert looped back");
                }
            });
        })
        .join()
        .unwrap();
    }
}
