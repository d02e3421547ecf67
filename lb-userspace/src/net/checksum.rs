//! The Internet checksum (RFC 1071), the one copy the agent uses: VRRP adverts, IPv4 headers,
//! the ICMPv6 of unsolicited neighbour adverts, the ICMP echo requests of ping checks. Sums are
//! kept in 64 bits, so pseudo-headers and messages of any size add up before the one fold.

/// `acc` plus the big-endian 16-bit words of `data`, an odd last byte padded with a zero byte.
pub fn sum_words(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let &[last] = chunks.remainder() {
        acc += u64::from(last) << 8;
    }
    acc
}

/// The checksum of a one's complement sum: carries folded back into 16 bits, complemented.
pub fn finish(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    !(sum as u16)
}

/// The checksum of `data`: with its checksum field zeroed the value to send, over data that
/// includes a correct checksum 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    finish(sum_words(data, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_and_odd_lengths() {
        // (data, checksum): RFC 1071 section 3's example sums to 0xddf2; an odd byte is the high
        // half of a word; carries wrap around.
        let cases: &[(&[u8], u16)] = &[
            (&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], !0xddf2),
            (&[0xab], !0xab00),
            (&[0xff, 0xff, 0x00, 0x01], !0x0001),
            (&[], 0xffff),
        ];
        for &(data, want) in cases {
            assert_eq!(internet_checksum(data), want, "{data:02x?}");
        }
        // Data carrying its own checksum sums to 0.
        let mut header =
            vec![0x45, 0, 0, 0x54, 0, 1, 0, 0, 255, 112, 0, 0, 192, 0, 2, 1, 224, 0, 0, 18];
        let c = internet_checksum(&header);
        header[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(internet_checksum(&header), 0);
        // Summing in parts is summing the whole (at even boundaries).
        assert_eq!(finish(sum_words(&header[4..], sum_words(&header[..4], 0))), 0);
    }
}
