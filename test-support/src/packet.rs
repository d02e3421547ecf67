//! Frames for the XDP program's tests and benchmarks: Ethernet, IPv4 (with a correct header
//! checksum), IPv6, TCP and UDP, byte by byte. Transport checksums are left 0: the program never
//! reads them.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The Internet checksum (RFC 1071) of `bytes`, an odd last byte padded with 0.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut s: u64 = bytes
        .chunks(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An Ethernet header.
pub fn eth(dst: [u8; 6], src: [u8; 6], ether_type: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

/// The IPv4 header fields a test varies.
#[derive(Clone, Copy, Debug)]
pub struct V4Opts {
    /// Header length in words: above 5, the options are NOPs.
    pub ihl: u8,
    /// Flags and fragment offset, as on the wire.
    pub frag: u16,
    pub id: u16,
}

/// No options, not fragmented, id 1.
pub const PLAIN: V4Opts = V4Opts { ihl: 5, frag: 0, id: 1 };

/// An IPv4 packet (TTL 64) carrying `payload`.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, o: V4Opts, payload: &[u8]) -> Vec<u8> {
    let hlen = usize::from(o.ihl) * 4;
    let total = (hlen + payload.len()) as u16;
    let mut ip = vec![0x40 | o.ihl, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&o.id.to_be_bytes());
    ip.extend_from_slice(&o.frag.to_be_bytes());
    ip.extend_from_slice(&[64, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.resize(hlen, 1); // options: NOPs
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(payload);
    ip
}

/// An IPv6 packet (hop limit 64) whose next header is `next`.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[next, 64]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(payload);
    ip
}

/// A TCP segment (20-byte header, sequence 1, window 0xffff) with `flags`.
pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(20 + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    h.extend_from_slice(payload);
    h
}

/// A UDP datagram.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(8 + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_header_checks_out_and_has_its_lengths() {
        let p = ipv4([192, 0, 2, 1].into(), [192, 0, 2, 2].into(), 17, PLAIN, &udp(1, 2, b"abc"));
        assert_eq!(checksum(&p[..20]), 0, "header checksum");
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 31, "total length");
        assert_eq!(u16::from_be_bytes([p[24], p[25]]), 11, "UDP length");
        let opts =
            ipv4([192, 0, 2, 1].into(), [192, 0, 2, 2].into(), 6, V4Opts { ihl: 6, ..PLAIN }, &[]);
        assert_eq!((opts.len(), opts[20..24].to_vec()), (24, vec![1; 4]), "NOP options");
        assert_eq!(checksum(&opts), 0);
    }

    #[test]
    fn checksum_pads_an_odd_byte() {
        // RFC 1071's example words 0x0001 0xf203 0xf4f5 0xf6f7 sum to 0xddf2 (folded).
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
        assert_eq!(checksum(&[0xff]), !0xff00);
    }
}
