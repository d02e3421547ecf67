//! Unwrapping captured frames down to the VRRP message: Ethernet (optionally one 802.1Q tag),
//! then IPv4 or IPv6. Tests feed it the keepalived captures; a raw-socket receiver can use
//! [`parse_ip_packet`] on what the kernel hands it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::packet::{IPPROTO_AH, IPPROTO_VRRP, IpMeta};
use crate::net::checksum::internet_checksum;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETH_HLEN: usize = 14;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;

/// Why a frame or IP packet does not hold a VRRP message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than the headers it announces.
    #[error("truncated {0} header")]
    Truncated(&'static str),
    /// Neither IPv4 nor IPv6.
    #[error("ethertype {0:#06x} is not IP")]
    NotIp(u16),
    /// The IP version nibble is not 4 or 6 (or disagrees with the ethertype).
    #[error("bad IP version {0}")]
    BadIpVersion(u8),
    /// IPv4 header checksum wrong.
    #[error("bad IPv4 header checksum")]
    BadIpChecksum,
    /// The IP length fields claim more than was captured.
    #[error("IP length {claimed} exceeds the {available} bytes captured")]
    BadIpLength {
        /// Length the header claims.
        claimed: usize,
        /// Bytes available.
        available: usize,
    },
    /// Adverts are never fragmented.
    #[error("fragmented IPv4 packet")]
    Fragmented,
    /// VRRPv2 with IPsec AH, which is not supported.
    #[error("IPsec AH-authenticated VRRP is not supported")]
    AhUnsupported,
    /// Another protocol (or an IPv6 extension header in front of VRRP).
    #[error("IP protocol {0} is not VRRP")]
    NotVrrp(u8),
}

/// A captured VRRP frame, split into the parts the decoder needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// IP-level facts for the VRRP checks.
    pub ip: IpMeta,
    /// IPv4 TOS / IPv6 traffic class (keepalived sends 0xc0, network control).
    pub tos: u8,
    /// The VRRP message, without link padding.
    pub vrrp: &'a [u8],
}

/// Splits an Ethernet frame (FCS removed) into its VRRP message and the facts around it.
pub fn parse_ethernet_frame(frame: &[u8]) -> Result<Frame<'_>, FrameError> {
    if frame.len() < ETH_HLEN {
        return Err(FrameError::Truncated("Ethernet"));
    }
    let mut dst_mac = [0u8; 6];
    let mut src_mac = [0u8; 6];
    dst_mac.copy_from_slice(&frame[0..6]);
    src_mac.copy_from_slice(&frame[6..12]);
    let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let mut rest = &frame[ETH_HLEN..];
    if ethertype == ETHERTYPE_VLAN {
        let [_, _, t0, t1, ..] = *rest else {
            return Err(FrameError::Truncated("802.1Q"));
        };
        ethertype = u16::from_be_bytes([t0, t1]);
        rest = &rest[4..];
    }
    let want_version = match ethertype {
        ETHERTYPE_IPV4 => 4,
        ETHERTYPE_IPV6 => 6,
        other => return Err(FrameError::NotIp(other)),
    };
    let version = rest.first().map_or(0, |b| b >> 4);
    if version != want_version {
        return Err(FrameError::BadIpVersion(version));
    }
    let (ip, tos, vrrp) = parse_ip_packet(rest)?;
    Ok(Frame { dst_mac, src_mac, ip, tos, vrrp })
}

/// Splits an IPv4 or IPv6 packet into the IP facts, the TOS / traffic class and the VRRP message
/// (cut to the IP length fields, so link padding is dropped).
pub fn parse_ip_packet(packet: &[u8]) -> Result<(IpMeta, u8, &[u8]), FrameError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => parse_ipv4(packet),
        Some(6) => parse_ipv6(packet),
        Some(v) => Err(FrameError::BadIpVersion(v)),
        None => Err(FrameError::Truncated("IP")),
    }
}

fn parse_ipv4(p: &[u8]) -> Result<(IpMeta, u8, &[u8]), FrameError> {
    if p.len() < IPV4_MIN_HLEN {
        return Err(FrameError::Truncated("IPv4"));
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if ihl < IPV4_MIN_HLEN || p.len() < ihl {
        return Err(FrameError::Truncated("IPv4"));
    }
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if total < ihl || total > p.len() {
        return Err(FrameError::BadIpLength { claimed: total, available: p.len() });
    }
    if internet_checksum(&p[..ihl]) != 0 {
        return Err(FrameError::BadIpChecksum);
    }
    let frag = u16::from_be_bytes([p[6], p[7]]);
    if frag & 0x3fff != 0 {
        return Err(FrameError::Fragmented);
    }
    match p[9] {
        IPPROTO_VRRP => {}
        IPPROTO_AH => return Err(FrameError::AhUnsupported),
        other => return Err(FrameError::NotVrrp(other)),
    }
    let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
    Ok((IpMeta { src, dst, ttl: p[8] }, p[1], &p[ihl..total]))
}

fn parse_ipv6(p: &[u8]) -> Result<(IpMeta, u8, &[u8]), FrameError> {
    if p.len() < IPV6_HLEN {
        return Err(FrameError::Truncated("IPv6"));
    }
    let payload_len = usize::from(u16::from_be_bytes([p[4], p[5]]));
    if IPV6_HLEN + payload_len > p.len() {
        return Err(FrameError::BadIpLength {
            claimed: IPV6_HLEN + payload_len,
            available: p.len(),
        });
    }
    match p[6] {
        IPPROTO_VRRP => {}
        IPPROTO_AH => return Err(FrameError::AhUnsupported),
        other => return Err(FrameError::NotVrrp(other)),
    }
    let traffic_class = ((p[0] & 0x0f) << 4) | (p[1] >> 4);
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&p[8..24]);
    dst.copy_from_slice(&p[24..40]);
    let ip = IpMeta {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        ttl: p[7],
    };
    Ok((ip, traffic_class, &p[IPV6_HLEN..IPV6_HLEN + payload_len]))
}

/// Bytes from a hex dump like the captures in the docs ("01 00 5e ..."); whitespace is ignored.
/// Test helper: panics on malformed input.
#[cfg(test)]
pub fn hex(dump: &str) -> Vec<u8> {
    let digits: Vec<u8> = dump.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(s, 16).expect("hex digit")
        })
        .collect()
}
