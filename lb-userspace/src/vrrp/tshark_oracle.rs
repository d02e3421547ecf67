//! tshark as an independent oracle: the adverts this engine sends, wrapped in Ethernet/IP frames,
//! decode in Wireshark's VRRP dissector with a correct checksum (v2, v3 over IPv4 with the
//! pseudo-header, v3 over IPv6).

use std::{net::IpAddr, process::Command};

use super::packet::{Advert, Auth, Kind};
use crate::net::checksum::internet_checksum;

/// An Ethernet frame carrying `payload` as protocol 112 from `src` to `dst`, TTL 255.
pub(super) fn frame(src: IpAddr, dst: IpAddr, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x01, 0x00, 0x5e, 0x00, 0x00, 0x12, 0x02, 0, 0, 0, 0, 0x0b];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0x45, 0xc0];
            ip.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 1, 0, 0, 255, 112, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = internet_checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 0x12]);
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            f.extend_from_slice(&[112, 255]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed families"),
    }
    f.extend_from_slice(payload);
    f
}

/// A pcap file (classic format, Ethernet link type) of `frames`.
fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&4u16.to_le_bytes());
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(&65535u32.to_le_bytes());
    p.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        p.extend_from_slice(&(i as u32).to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&(f.len() as u32).to_le_bytes());
        p.extend_from_slice(&(f.len() as u32).to_le_bytes());
        p.extend_from_slice(f);
    }
    p
}

#[test]
fn tshark_decodes_our_adverts_with_correct_checksums() {
    if Command::new("tshark").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "tshark missing in CI (cargo xtask bootstrap installs it)"
        );
        eprintln!("SKIP: tshark is not installed");
        return;
    }
    let v4s: IpAddr = "192.0.2.11".parse().expect("ip");
    let v4d: IpAddr = "224.0.0.18".parse().expect("ip");
    let v6s: IpAddr = "fe80::ff:fe00:b".parse().expect("ip");
    let v6d: IpAddr = "ff02::12".parse().expect("ip");
    let vip4: IpAddr = "192.0.2.200".parse().expect("ip");
    let vip6: IpAddr = "2001:db8::200".parse().expect("ip");
    let adverts = [
        (
            v4s,
            v4d,
            Advert {
                vrid: 51,
                priority: 100,
                addresses: vec![vip4],
                kind: Kind::V2 { advert_int_secs: 1, auth: Auth::None },
            },
        ),
        (
            v4s,
            v4d,
            Advert {
                vrid: 51,
                priority: 100,
                addresses: vec![vip4],
                kind: Kind::V2 { advert_int_secs: 1, auth: Auth::password(b"secret12") },
            },
        ),
        (
            v4s,
            v4d,
            Advert {
                vrid: 52,
                priority: 90,
                addresses: vec![vip4, "192.0.2.201".parse().expect("ip")],
                kind: Kind::V3 { max_advert_int_cs: 10 },
            },
        ),
        (
            v6s,
            v6d,
            Advert {
                vrid: 53,
                priority: 200,
                addresses: vec![vip6],
                kind: Kind::V3 { max_advert_int_cs: 100 },
            },
        ),
    ];
    let frames: Vec<Vec<u8>> =
        adverts.iter().map(|(s, d, a)| frame(*s, *d, &a.encode(*s, *d).expect("encode"))).collect();
    let tmp = crate::testutil::scratch_dir("lb-vrrp-pcap-");
    let path = tmp.path().join("adverts.pcap");
    std::fs::write(&path, pcap(&frames)).expect("write pcap");
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&path)
        .args([
            "-T",
            "fields",
            "-e",
            "vrrp.version",
            "-e",
            "vrrp.virt_rtr_id",
            "-e",
            "vrrp.checksum.status",
        ])
        .output()
        .expect("tshark");
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 4, "tshark output: {text} {}", String::from_utf8_lossy(&out.stderr));
    for (row, (_, _, a)) in rows.iter().zip(&adverts) {
        assert_eq!(row[1], a.vrid.to_string(), "{text}");
        // Wireshark's checksum status: 1 = good.
        assert_eq!(row[2], "1", "tshark says the checksum of vrid {} is not good: {text}", a.vrid);
    }
}
