//! VRRP frames as captured: `lb::vrrp::frame::parse_ethernet_frame` (Ethernet, one optional 802.1Q
//! tag, IPv4 or IPv6) and `parse_ip_packet`, then the advert decoder on the message they find
//! (`lb_fuzz::exercise_vrrp`).
//!
//! Properties: never panics; the VRRP message found lies inside the frame, is cut to the IP length
//! fields and comes with the header's addresses and TTL; a frame whose IPv4 header checksum is
//! right is never refused for it. Mutated frames also get a copy with the IPv4 header checksum
//! made right, so they reach the advert decoder.
#![no_main]

use lb::vrrp::frame::{FrameError, parse_ethernet_frame, parse_ip_packet};
use lb_fuzz::exercise_vrrp;
use lb_test_support::packet::checksum;
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8]) -> Result<(), FrameError> {
    let frame = parse_ethernet_frame(data)?;
    assert_eq!(frame.dst_mac, data[0..6], "destination MAC");
    assert_eq!(frame.src_mac, data[6..12], "source MAC");
    let range = data.as_ptr_range();
    let vrrp = frame.vrrp.as_ptr_range();
    assert!(range.start <= vrrp.start && vrrp.end <= range.end, "VRRP message outside the frame");
    // The same packet without the link layer gives the same answer.
    let ip_start = if data[12..14] == [0x81, 0x00] { 18 } else { 14 };
    let (ip, tos, msg) = parse_ip_packet(&data[ip_start..]).expect("IP packet of a parsed frame");
    assert_eq!((ip, tos, msg), (frame.ip, frame.tos, frame.vrrp), "frame vs IP packet parse");
    exercise_vrrp(frame.vrrp, &frame.ip);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
    // The IPv4 header checksum made right (after an optional VLAN tag).
    let ip_start = if data.get(12..14) == Some(&[0x81, 0x00]) { 18 } else { 14 };
    let Some(&first) = data.get(ip_start) else { return };
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || data.len() < ip_start + ihl {
        return;
    }
    let mut fixed = data.to_vec();
    fixed[ip_start + 10] = 0;
    fixed[ip_start + 11] = 0;
    let sum = checksum(&fixed[ip_start..ip_start + ihl]);
    fixed[ip_start + 10..ip_start + 12].copy_from_slice(&sum.to_be_bytes());
    if let Err(FrameError::BadIpChecksum) = run(&fixed) {
        panic!("a frame with a correct IPv4 header checksum was refused for its checksum");
    }
});
