//! Telling the segment who holds the VIPs now: gratuitous ARPs for IPv4 VIPs and unsolicited
//! neighbour advertisements for IPv6 VIPs, byte for byte what keepalived 2.2 sends (captured in
//! the tests below), on an `AF_PACKET` socket bound to the instance's interface.
//!
//! keepalived's schedule is `garp_master_repeat` messages per VIP at once on becoming master and
//! the same again `garp_master_delay` later; the state machine asks for both bursts
//! ([`super::Action::ScheduleGarp`]) and the runner times them.

use std::{
    io,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, OwnedFd},
    time::{Duration, Instant},
};

use nix::sys::socket::{self as nixsock, AddressFamily, SockFlag, SockProtocol, SockType};
use serde::Serialize;

use crate::net::checksum::{finish, sum_words};
use crate::net::{Mac, iface};

/// Length of a gratuitous ARP frame (Ethernet + ARP, no padding: keepalived sends 42 bytes).
pub const GARP_FRAME_LEN: usize = 42;
/// Length of an unsolicited NA frame (Ethernet + IPv6 + ICMPv6 NA with the target MAC option).
pub const NA_FRAME_LEN: usize = 86;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const BROADCAST: [u8; 6] = [0xff; 6];
/// ff02::1 (all nodes) as a MAC: 33:33 + the group's low 32 bits.
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const IPPROTO_ICMPV6: u8 = 58;
const ND_NEIGHBOR_ADVERT: u8 = 136;
/// NA flags: Router, Solicited, Override.
const NA_FLAG_ROUTER: u8 = 0x80;
const NA_FLAG_OVERRIDE: u8 = 0x20;
const ND_OPT_TARGET_LINKADDR: u8 = 2;

/// A gratuitous ARP as keepalived sends it: an Ethernet broadcast ARP *request* "who-has VIP tell
/// VIP" from our MAC, target hardware address all ones.
pub fn garp_frame(mac: Mac, vip: Ipv4Addr) -> [u8; GARP_FRAME_LEN] {
    let mut f = [0u8; GARP_FRAME_LEN];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, op request.
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac.0);
    f[28..32].copy_from_slice(&vip.octets());
    f[32..38].copy_from_slice(&BROADCAST);
    f[38..42].copy_from_slice(&vip.octets());
    f
}

/// An unsolicited neighbour advertisement as keepalived sends it: from the VIP to ff02::1, hop
/// limit 255, Override set (Router too when the interface forwards), with the target link-layer
/// address option.
pub fn unsolicited_na_frame(mac: Mac, vip: Ipv6Addr, router: bool) -> [u8; NA_FRAME_LEN] {
    let mut f = [0u8; NA_FRAME_LEN];
    f[0..6].copy_from_slice(&ALL_NODES_MAC);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    let ip = &mut f[14..54];
    // Version 6, traffic class 0, flow label 0; payload 32 bytes; ICMPv6; hop limit 255.
    ip[0..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 32, IPPROTO_ICMPV6, 255]);
    ip[8..24].copy_from_slice(&vip.octets());
    ip[24..40].copy_from_slice(&ALL_NODES.octets());
    let icmp = &mut f[54..86];
    icmp[0] = ND_NEIGHBOR_ADVERT;
    icmp[4] = NA_FLAG_OVERRIDE | if router { NA_FLAG_ROUTER } else { 0 };
    icmp[8..24].copy_from_slice(&vip.octets());
    icmp[24] = ND_OPT_TARGET_LINKADDR;
    icmp[25] = 1; // in units of 8 bytes
    icmp[26..32].copy_from_slice(&mac.0);
    let sum = icmpv6_checksum(vip, ALL_NODES, icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    f
}

/// ICMPv6 checksum (RFC 4443 2.3) of `msg` (checksum field zero) with the IPv6 pseudo-header.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let acc = sum_words(&src.octets(), 0);
    let acc = sum_words(&dst.octets(), acc);
    let acc = sum_words(&(msg.len() as u32).to_be_bytes(), acc);
    let acc = sum_words(&[0, 0, 0, IPPROTO_ICMPV6], acc);
    finish(sum_words(msg, acc))
}

/// The frame announcing `vip` from `mac`.
pub fn frame_for(mac: Mac, vip: IpAddr, router: bool) -> Vec<u8> {
    match vip {
        IpAddr::V4(a) => garp_frame(mac, a).to_vec(),
        IpAddr::V6(a) => unsolicited_na_frame(mac, a, router).to_vec(),
    }
}

/// What one burst did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BurstReport {
    /// Frames handed to the kernel.
    pub sent: u32,
    /// Frames the kernel refused (the last error is logged).
    pub failed: u32,
    /// From the start of the burst (socket setup included) to the last frame sent.
    #[serde(serialize_with = "super::status::micros")]
    pub took: Duration,
}

/// Sends `count` announcements for every VIP out of `ifname`, reading the interface's MAC and
/// index afresh (the interface may have been recreated since the last burst).
pub fn send_burst(ifname: &str, vips: &[IpAddr], count: u32) -> io::Result<BurstReport> {
    let started = Instant::now();
    let mut report = BurstReport { sent: 0, failed: 0, took: Duration::ZERO };
    if count == 0 || vips.is_empty() {
        return Ok(report);
    }
    let info = iface::lookup(ifname)?;
    let router = vips.iter().any(IpAddr::is_ipv6) && forwarding_v6(ifname);
    let sock = PacketSocket::bind(info.ifindex)?;
    let mut last_err = None;
    for &vip in vips {
        let frame = frame_for(info.mac, vip, router);
        for _ in 0..count {
            match sock.send(&frame) {
                Ok(()) => report.sent += 1,
                Err(e) => {
                    report.failed += 1;
                    last_err = Some(e);
                }
            }
        }
    }
    report.took = started.elapsed();
    close_later(sock);
    if let Some(e) = last_err {
        if report.sent == 0 {
            return Err(e);
        }
        tracing::warn!(
            interface = ifname,
            failed = report.failed,
            "announcement frames refused: {e}"
        );
    }
    Ok(report)
}

/// Closing an AF_PACKET socket waits for an RCU grace period (`synchronize_net` in the kernel's
/// `packet_release`), ~15 ms on a busy host: that happens on a blocking thread, so the instance's
/// next steps after a GARP burst (adverts, notify scripts) are not held up by it.
fn close_later(sock: PacketSocket) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(move || drop(sock))),
        Err(_) => drop(sock),
    }
}

/// keepalived sets the NA Router flag when the interface forwards IPv6.
fn forwarding_v6(ifname: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{ifname}/forwarding"))
        .is_ok_and(|v| v.trim() == "1")
}

/// An `AF_PACKET`/`SOCK_RAW` socket bound to one interface with protocol 0, so it receives
/// nothing: it only sends whole Ethernet frames.
pub(super) struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSocket {
    pub(super) fn bind(ifindex: u32) -> io::Result<PacketSocket> {
        // Protocol 0 (None): receives nothing.
        let fd = packet_socket(None)?;
        let sll = sockaddr_ll(ifindex, 0, &[0; 6]);
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex })
    }

    pub(super) fn send(&self, frame: &[u8]) -> io::Result<()> {
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&frame[0..6]);
        let proto = u16::from_be_bytes([frame[12], frame[13]]);
        let sll = sockaddr_ll(self.ifindex, proto, &dst);
        // SAFETY: the buffer and the address are valid for the lengths passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A close-on-exec `AF_PACKET`/`SOCK_RAW` socket for `protocol`.
fn packet_socket(protocol: Option<SockProtocol>) -> io::Result<OwnedFd> {
    Ok(nixsock::socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, protocol)?)
}

fn sockaddr_ll(ifindex: u32, proto: u16, mac: &[u8; 6]) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto.to_be();
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(mac);
    sll
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vrrp::frame::hex;

    const MAC: Mac = Mac([0xc6, 0xdf, 0xcb, 0x3c, 0x88, 0x90]);

    /// keepalived 2.2.7 becoming master for 192.0.2.200 (tcpdump -xx on the bridge).
    const KEEPALIVED_GARP: &str = "ffff ffff ffff c6df cb3c 8890 0806 0001
        0800 0604 0001 c6df cb3c 8890 c000 02c8 ffff ffff ffff c000 02c8";

    /// keepalived 2.2.7 becoming master for 2001:db8::200 (forwarding off: Override only).
    const KEEPALIVED_NA: &str = "3333 0000 0001 c6df cb3c 8890 86dd 6000
        0000 0020 3aff 2001 0db8 0000 0000 0000 0000 0000 0200 ff02 0000 0000 0000 0000
        0000 0000 0001 8800 dc80 2000 0000 2001 0db8 0000 0000 0000 0000 0000 0200 0201
        c6df cb3c 8890";

    #[test]
    fn garp_is_byte_identical_to_keepalived() {
        let f = garp_frame(MAC, Ipv4Addr::new(192, 0, 2, 200));
        assert_eq!(f.to_vec(), hex(KEEPALIVED_GARP));
    }

    #[test]
    fn unsolicited_na_is_byte_identical_to_keepalived() {
        let vip: Ipv6Addr = "2001:db8::200".parse().unwrap();
        let f = unsolicited_na_frame(MAC, vip, false);
        assert_eq!(f.to_vec(), hex(KEEPALIVED_NA));
    }

    #[test]
    fn na_router_flag_keeps_the_checksum_valid() {
        let vip: Ipv6Addr = "2001:db8::1:2".parse().unwrap();
        let f = unsolicited_na_frame(MAC, vip, true);
        assert_eq!(f[54 + 4], 0xa0, "Router + Override");
        // A message that includes its checksum sums to zero.
        assert_eq!(icmpv6_checksum(vip, ALL_NODES, &f[54..]), 0);
        let plain = unsolicited_na_frame(MAC, vip, false);
        assert_eq!(icmpv6_checksum(vip, ALL_NODES, &plain[54..]), 0);
    }

    #[test]
    fn frame_for_picks_the_family() {
        assert_eq!(frame_for(MAC, "192.0.2.1".parse().unwrap(), true).len(), GARP_FRAME_LEN);
        assert_eq!(frame_for(MAC, "2001:db8::1".parse().unwrap(), true).len(), NA_FRAME_LEN);
    }

    #[test]
    fn empty_bursts_touch_nothing() {
        let r = send_burst("lbnosuch0", &[], 5).unwrap();
        assert_eq!((r.sent, r.failed), (0, 0));
        assert!(send_burst("lbnosuch0", &["192.0.2.1".parse().unwrap()], 5).is_err());
    }

    /// On the loopback of a private namespace, a burst goes out and is seen by a packet socket.
    #[test]
    fn burst_reaches_the_wire() {
        if !crate::testutil::require_root("GARP burst") {
            return;
        }
        std::thread::spawn(|| {
            crate::testutil::private_netns();
            // lo is down in a fresh namespace; bring it up (flags through an ioctl-free path).
            let st = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status();
            assert!(st.is_ok_and(|s| s.success()));
            let lo = iface::index("lo").unwrap();
            // A listener for every protocol on lo.
            let rx = packet_socket(Some(SockProtocol::EthAll)).unwrap();
            let sll = sockaddr_ll(lo, libc::ETH_P_ALL as u16, &[0; 6]);
            // SAFETY: valid sockaddr_ll.
            let rc = unsafe {
                libc::bind(
                    rx.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0);
            let vips: Vec<IpAddr> =
                vec!["192.0.2.200".parse().unwrap(), "2001:db8::200".parse().unwrap()];
            let r = send_burst("lo", &vips, 3).unwrap();
            assert_eq!((r.sent, r.failed), (6, 0));
            assert!(r.took < Duration::from_millis(100), "burst took {:?}", r.took);
            let (mut arps, mut nas) = (0, 0);
            let mut buf = [0u8; 2048];
            loop {
                // SAFETY: plain old data.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: buffer and address valid for the lengths passed.
                let n = unsafe {
                    libc::recvfrom(
                        rx.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                        (&mut from as *mut libc::sockaddr_ll).cast(),
                        &mut len,
                    )
                };
                if n <= 0 {
                    break;
                }
                // lo hands every frame back as incoming too: count what was sent once.
                if from.sll_pkttype != libc::PACKET_OUTGOING {
                    continue;
                }
                let f = &buf[..n as usize];
                if f.len() == GARP_FRAME_LEN && f[12..14] == ETH_P_ARP.to_be_bytes() {
                    arps += 1;
                }
                if f.len() == NA_FRAME_LEN && f[54] == ND_NEIGHBOR_ADVERT {
                    nas += 1;
                }
            }
            assert_eq!((arps, nas), (3, 3));
        })
        .join()
        .unwrap();
    }
}
