//! Wire tests: the keepalived 2.2.7 captures from docs/testing.md decode and re-encode byte for
//! byte, each field mutation gives its own error, and random adverts round-trip.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::vrrp::frame::{Frame, FrameError, hex, parse_ethernet_frame, parse_ip_packet};

const V2_NONE: &str = "01 00 5e 00 00 12 72 54 e1 b5 bb 43 08 00 45 c0 00 28 00 01 00 00 ff 70 18 87 c0 00 02 0b e0 00
00 12 21 33 64 01 00 01 b8 01 c0 00 02 c8 00 00 00 00 00 00 00 00";
const V2_PASS: &str = "01 00 5e 00 00 12 02 00 00 00 00 0b 08 00 45 c0 00 2c 00 01 00 00 ff 70 18 83 c0 00 02 0b e0 00
00 12 21 33 64 02 01 01 86 b8 c0 00 02 c8 c0 00 02 c9 73 65 63 72 65 74 31 32";
const V3_V4_MCAST: &str = "01 00 5e 00 00 12 72 54 e1 b5 bb 43 08 00 45 c0 00 20 00 01 00 00 ff 70 18 8f c0 00 02 0b e0 00
00 12 31 33 64 01 00 0a 05 5e c0 00 02 c8";
const V3_V4_UNICAST: &str = "86 38 1a 5d 89 27 02 00 00 00 00 0b 08 00 45 c0 00 20 00 01 00 00 ff 70 36 a0 c0 00 02 0b c0 00
02 01 31 35 64 01 00 64 23 13 c0 00 02 c8";
const V3_V6: &str = "33 33 00 00 00 12 02 00 00 00 00 0b 86 dd 6c 0b 75 19 00 18 70 ff fe 80 00 00 00 00 00 00 00 00
00 ff fe 00 00 0b ff 02 00 00 00 00 00 00 00 00 00 00 00 00 00 12 31 34 64 01 00 32 3d b6 20 01
0d b8 00 00 00 00 00 00 00 00 00 00 02 00";

const SENDER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11));
const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200));
const VIP2: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 201));
const MCAST: IpAddr = IpAddr::V4(MULTICAST_V4);

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().expect("ipv6 literal"))
}

/// The capture as (frame bytes, VRRP payload copy, IP facts).
fn capture(dump: &str) -> (Vec<u8>, Vec<u8>, IpMeta) {
    let bytes = hex(dump);
    let Frame { ip, vrrp, .. } = parse_ethernet_frame(&bytes).expect("capture parses");
    let payload = vrrp.to_vec();
    (bytes, payload, ip)
}

fn expect_v2(auth: Auth) -> Expect {
    Expect {
        version: Version::V2,
        vrid: 51,
        auth,
        advert_interval_cs: 100,
        unicast: false,
        min_unicast_ttl: VRRP_TTL,
        addresses: vec![VIP],
    }
}

fn expect_v3(vrid: u8, cs: u16, unicast: bool, addresses: Vec<IpAddr>) -> Expect {
    Expect {
        version: Version::V3,
        vrid,
        auth: Auth::None,
        advert_interval_cs: cs,
        unicast,
        min_unicast_ttl: VRRP_TTL,
        addresses,
    }
}

/// Rewrites the checksum of a (mutated) message in the given form, so that the check under test
/// is the one that fires rather than the checksum.
fn refix(msg: &mut [u8], ip: &IpMeta, form: ChecksumForm) {
    msg[6] = 0;
    msg[7] = 0;
    let sum = checksum(msg, ip.src, ip.dst, form);
    msg[6..8].copy_from_slice(&sum.to_be_bytes());
}

fn form_for(msg: &[u8]) -> ChecksumForm {
    if msg[0] >> 4 == 2 { ChecksumForm::Plain } else { ChecksumForm::PseudoHeader }
}

// ---- the captures ----

#[test]
fn captures_have_the_ip_facts_keepalived_sends() {
    for dump in [V2_NONE, V2_PASS, V3_V4_MCAST, V3_V4_UNICAST, V3_V6] {
        let bytes = hex(dump);
        let frame = parse_ethernet_frame(&bytes).expect("parses");
        assert_eq!(frame.ip.ttl, 255);
        assert_eq!(frame.tos, 0xc0);
    }
    let bytes = hex(V2_NONE);
    let frame = parse_ethernet_frame(&bytes).expect("parses");
    assert_eq!(frame.src_mac, [0x72, 0x54, 0xe1, 0xb5, 0xbb, 0x43]);
    assert_eq!(frame.dst_mac, [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]);
    assert_eq!(frame.ip.src, SENDER);
    assert_eq!(frame.ip.dst, MCAST);
}

#[test]
fn v2_authtype_none_capture_decodes_and_reencodes_identically() {
    let (_, payload, ip) = capture(V2_NONE);
    let (rx, notes) = expect_v2(Auth::None).decode(&payload, &ip).expect("valid");
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(rx.checksum, 0xb801);
    assert_eq!(rx.checksum_form, ChecksumForm::Plain);
    let adv = &rx.advert;
    assert_eq!(adv.version(), Version::V2);
    assert_eq!((adv.vrid, adv.priority, adv.addresses.len()), (51, 100, 1));
    assert_eq!(adv.addresses, vec![VIP]);
    assert_eq!(adv.kind, Kind::V2 { advert_int_secs: 1, auth: Auth::None });
    assert_eq!(adv.interval_cs(), 100);
    assert_eq!(adv.encode(ip.src, ip.dst).expect("encodes"), payload);
    assert_eq!(adv.wire_len(Family::V4), payload.len());
}

#[test]
fn v2_pass_capture_decodes_and_reencodes_identically() {
    let (_, payload, ip) = capture(V2_PASS);
    let mut expect = expect_v2(Auth::password(b"secret12"));
    expect.addresses = vec![VIP, VIP2];
    let (rx, notes) = expect.decode(&payload, &ip).expect("valid");
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(rx.checksum, 0x86b8);
    let adv = &rx.advert;
    assert_eq!((adv.vrid, adv.priority), (51, 100));
    assert_eq!(adv.addresses, vec![VIP, VIP2]);
    assert_eq!(adv.kind, Kind::V2 { advert_int_secs: 1, auth: Auth::password(b"secret12") });
    assert_eq!(adv.encode(ip.src, ip.dst).expect("encodes"), payload);
}

#[test]
fn v3_ipv4_multicast_capture_uses_the_pseudo_header_checksum() {
    let (_, payload, ip) = capture(V3_V4_MCAST);
    let (rx, notes) = expect_v3(51, 10, false, vec![VIP]).decode(&payload, &ip).expect("valid");
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(rx.checksum, 0x055e);
    assert_eq!(rx.checksum_form, ChecksumForm::PseudoHeader);
    let adv = &rx.advert;
    assert_eq!(adv.version(), Version::V3);
    assert_eq!((adv.vrid, adv.priority, adv.addresses.clone()), (51, 100, vec![VIP]));
    assert_eq!(adv.kind, Kind::V3 { max_advert_int_cs: 10 });
    assert_eq!(adv.encode(ip.src, ip.dst).expect("encodes"), payload);
    // The plain sum of this message is not zero: keepalived really sends the RFC 5798 form.
    assert_ne!(checksum(&payload, ip.src, ip.dst, ChecksumForm::Plain), 0);
}

#[test]
fn v3_ipv4_unicast_capture_uses_the_real_destination_in_the_pseudo_header() {
    let (_, payload, ip) = capture(V3_V4_UNICAST);
    assert_eq!(ip.dst, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let (rx, _) = expect_v3(53, 100, true, vec![VIP]).decode(&payload, &ip).expect("valid");
    assert_eq!(rx.checksum, 0x2313);
    assert_eq!(rx.checksum_form, ChecksumForm::PseudoHeader);
    assert_eq!((rx.advert.vrid, rx.advert.priority), (53, 100));
    assert_eq!(rx.advert.kind, Kind::V3 { max_advert_int_cs: 100 });
    assert_eq!(rx.advert.encode(ip.src, ip.dst).expect("encodes"), payload);
}

#[test]
fn v3_ipv6_capture_decodes_and_reencodes_identically() {
    let (_, payload, ip) = capture(V3_V6);
    assert_eq!(ip.src, v6("fe80::ff:fe00:b"));
    assert_eq!(ip.dst, IpAddr::V6(MULTICAST_V6));
    let vip6 = v6("2001:db8::200");
    let (rx, notes) = expect_v3(52, 50, false, vec![vip6]).decode(&payload, &ip).expect("valid");
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(rx.checksum, 0x3db6);
    assert_eq!(rx.checksum_form, ChecksumForm::PseudoHeader);
    assert_eq!((rx.advert.vrid, rx.advert.priority), (52, 100));
    assert_eq!(rx.advert.addresses, vec![vip6]);
    assert_eq!(rx.advert.kind, Kind::V3 { max_advert_int_cs: 50 });
    assert_eq!(rx.advert.encode(ip.src, ip.dst).expect("encodes"), payload);
}

// ---- one mutation, one error ----

/// Mutates a capture's VRRP message, fixes its checksum, and decodes it with `expect`.
fn mutated(
    dump: &str,
    expect: &Expect,
    mutate: impl FnOnce(&mut Vec<u8>, &mut IpMeta),
) -> Result<(Received, Vec<Note>), PacketError> {
    let (_, mut payload, mut ip) = capture(dump);
    mutate(&mut payload, &mut ip);
    if payload.len() >= 8 {
        let form = form_for(&payload);
        refix(&mut payload, &ip, form);
    }
    expect.decode(&payload, &ip)
}

#[test]
fn each_mutated_field_gives_its_own_error() {
    let none = expect_v2(Auth::None);
    let pass = {
        let mut e = expect_v2(Auth::password(b"secret12"));
        e.addresses = vec![VIP, VIP2];
        e
    };
    let v3 = expect_v3(51, 10, false, vec![VIP]);
    type Mutation = Box<dyn FnOnce(&mut Vec<u8>, &mut IpMeta)>;
    let cases: Vec<(&str, &str, &Expect, Mutation, PacketError)> = vec![
        (
            "ttl",
            V2_NONE,
            &none,
            Box::new(|_, ip| ip.ttl = 254),
            PacketError::BadTtl { ttl: 254, min: 255 },
        ),
        (
            "v3 ttl",
            V3_V4_MCAST,
            &v3,
            Box::new(|_, ip| ip.ttl = 1),
            PacketError::BadTtl { ttl: 1, min: 255 },
        ),
        (
            "unknown version",
            V2_NONE,
            &none,
            Box::new(|m, _| m[0] = 0x41),
            PacketError::UnknownVersion(4),
        ),
        ("version 1", V2_NONE, &none, Box::new(|m, _| m[0] = 0x11), PacketError::UnknownVersion(1)),
        ("type", V2_NONE, &none, Box::new(|m, _| m[0] = 0x22), PacketError::NotAdvertisement(2)),
        (
            "v3 type",
            V3_V4_MCAST,
            &v3,
            Box::new(|m, _| m[0] = 0x30),
            PacketError::NotAdvertisement(0),
        ),
        (
            "count too high",
            V2_NONE,
            &none,
            Box::new(|m, _| m[3] = 2),
            PacketError::LengthMismatch { count: 2, expected: 24, actual: 20 },
        ),
        (
            "count zero",
            V3_V4_MCAST,
            &v3,
            Box::new(|m, _| m[3] = 0),
            PacketError::LengthMismatch { count: 0, expected: 8, actual: 12 },
        ),
        (
            "short by one byte",
            V2_NONE,
            &none,
            Box::new(|m, _| {
                m.pop();
            }),
            PacketError::LengthMismatch { count: 1, expected: 20, actual: 19 },
        ),
        (
            "trailing byte",
            V3_V4_MCAST,
            &v3,
            Box::new(|m, _| m.push(0)),
            PacketError::LengthMismatch { count: 1, expected: 12, actual: 13 },
        ),
        (
            "header cut",
            V2_NONE,
            &none,
            Box::new(|m, _| m.truncate(7)),
            PacketError::Truncated { len: 7 },
        ),
        ("auth AH", V2_NONE, &none, Box::new(|m, _| m[4] = 2), PacketError::AuthAhUnsupported),
        ("auth type 3", V2_NONE, &none, Box::new(|m, _| m[4] = 3), PacketError::UnknownAuthType(3)),
        (
            "auth PASS vs none",
            V2_NONE,
            &none,
            Box::new(|m, _| m[4] = 1),
            PacketError::AuthTypeMismatch { got: 1, want: 0 },
        ),
        (
            "auth none vs PASS",
            V2_PASS,
            &pass,
            Box::new(|m, _| m[4] = 0),
            PacketError::AuthTypeMismatch { got: 0, want: 1 },
        ),
        (
            "wrong password",
            V2_PASS,
            &pass,
            Box::new(|m, _| {
                let last = m.len() - 1;
                m[last] = b'3';
            }),
            PacketError::AuthFailed,
        ),
        (
            "v2 interval",
            V2_NONE,
            &none,
            Box::new(|m, _| m[5] = 2),
            PacketError::IntervalMismatch { got: 2, want: 1 },
        ),
        ("v2 interval zero", V2_NONE, &none, Box::new(|m, _| m[5] = 0), PacketError::ZeroInterval),
        (
            "v3 interval zero",
            V3_V4_MCAST,
            &v3,
            Box::new(|m, _| {
                m[4] = 0;
                m[5] = 0;
            }),
            PacketError::ZeroInterval,
        ),
        (
            "vrid",
            V2_NONE,
            &none,
            Box::new(|m, _| m[1] = 52),
            PacketError::VridMismatch { got: 52, want: 51 },
        ),
        (
            "v3 vrid",
            V3_V4_MCAST,
            &v3,
            Box::new(|m, _| m[1] = 1),
            PacketError::VridMismatch { got: 1, want: 51 },
        ),
        (
            "unicast to a multicast instance",
            V2_NONE,
            &none,
            Box::new(|_, ip| ip.dst = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            PacketError::ExpectedMulticast { dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)) },
        ),
        (
            "family mismatch",
            V2_NONE,
            &none,
            Box::new(|_, ip| ip.dst = IpAddr::V6(MULTICAST_V6)),
            PacketError::FamilyMismatch { src: SENDER, dst: IpAddr::V6(MULTICAST_V6) },
        ),
    ];
    for (name, dump, expect, mutate, want) in cases {
        let got = mutated(dump, expect, mutate);
        assert_eq!(got.map(|_| ()), Err(want), "{name}");
    }
}

#[test]
fn version_mismatch_with_the_instance_is_rejected() {
    let (_, payload, ip) = capture(V2_NONE);
    let err = expect_v3(51, 100, false, vec![VIP]).decode(&payload, &ip).map(|_| ());
    assert_eq!(err, Err(PacketError::WrongVersion { got: 2, want: 3 }));
    let (_, payload, ip) = capture(V3_V4_MCAST);
    let mut e = expect_v2(Auth::None);
    e.advert_interval_cs = 10;
    assert_eq!(
        e.decode(&payload, &ip).map(|_| ()),
        Err(PacketError::WrongVersion { got: 3, want: 2 })
    );
}

#[test]
fn a_corrupted_checksum_is_rejected_in_every_capture() {
    for (dump, expect) in [
        (V2_NONE, expect_v2(Auth::None)),
        (V3_V4_MCAST, expect_v3(51, 10, false, vec![VIP])),
        (V3_V4_UNICAST, expect_v3(53, 100, true, vec![VIP])),
        (V3_V6, expect_v3(52, 50, false, vec![v6("2001:db8::200")])),
    ] {
        let (_, mut payload, ip) = capture(dump);
        let received = u16::from_be_bytes([payload[6], payload[7]]) ^ 0x0100;
        payload[6] ^= 0x01;
        assert_eq!(
            expect.decode(&payload, &ip).map(|_| ()),
            Err(PacketError::BadChecksum { received })
        );
    }
    // A changed byte elsewhere, checksum left alone.
    let (_, mut payload, ip) = capture(V3_V6);
    payload[2] = 99;
    assert!(matches!(parse(&payload, &ip), Err(PacketError::BadChecksum { .. })));
}

#[test]
fn v2_over_ipv6_is_rejected() {
    let (_, mut payload, mut ip) = capture(V3_V6);
    ip.ttl = 255;
    // A v2 header with 16-byte address: invalid whatever the rest.
    payload[0] = 0x21;
    assert_eq!(parse(&payload, &ip).map(|_| ()), Err(PacketError::V2OverIpv6));
}

#[test]
fn multicast_advert_to_a_unicast_instance_is_rejected() {
    let (_, payload, ip) = capture(V3_V4_MCAST);
    let err = expect_v3(51, 10, true, vec![VIP]).decode(&payload, &ip).map(|_| ());
    assert_eq!(err, Err(PacketError::ExpectedUnicast { dst: MCAST }));
}

#[test]
fn unicast_ttl_is_255_unless_relaxed_like_keepalived() {
    let (_, payload, mut ip) = capture(V3_V4_UNICAST);
    ip.ttl = 62;
    let mut expect = expect_v3(53, 100, true, vec![VIP]);
    assert_eq!(
        expect.decode(&payload, &ip).map(|_| ()),
        Err(PacketError::BadTtl { ttl: 62, min: 255 })
    );
    expect.min_unicast_ttl = 1;
    assert!(expect.decode(&payload, &ip).is_ok());
    // The relaxation never applies to multicast.
    let (_, payload, mut ip) = capture(V3_V4_MCAST);
    ip.ttl = 62;
    let mut expect = expect_v3(51, 10, false, vec![VIP]);
    expect.min_unicast_ttl = 1;
    assert_eq!(
        expect.decode(&payload, &ip).map(|_| ()),
        Err(PacketError::BadTtl { ttl: 62, min: 255 })
    );
}

#[test]
fn oddities_keepalived_only_logs_are_notes() {
    // v3 interval differs: backups adopt the master's, so it is only noted.
    let got = mutated(V3_V4_MCAST, &expect_v3(51, 100, false, vec![VIP]), |_, _| {});
    let (_, notes) = got.expect("accepted");
    assert_eq!(notes, vec![Note::IntervalMismatch { got_cs: 10, want_cs: 100 }]);
}

/// An advert whose virtual addresses differ from ours comes from another virtual router reusing
/// our VRID: keepalived discards it ("ip address associated with VRID not present in advert",
/// an address list error). Only `AddressCheck::Skip` (its `skip_check_adv_addr`, for the master
/// a backup follows) lets it through, with a note.
#[test]
fn foreign_address_lists_are_rejected_unless_skipped() {
    let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
    let v4 = |i: u8| IpAddr::V4(Ipv4Addr::new(198, 51, 100, i));
    let full: Vec<IpAddr> = (0..=254).map(v4).collect();
    struct Case {
        name: &'static str,
        ours: Vec<IpAddr>,
        theirs: Vec<IpAddr>,
        enforced: Result<(), PacketError>,
        skipped: Vec<Note>,
    }
    let case =
        |name, ours, theirs, enforced, skipped| Case { name, ours, theirs, enforced, skipped };
    let count = |got, want| {
        (
            Err(PacketError::AddressCountMismatch { got, want }),
            vec![Note::AddressCountMismatch { got, want }],
        )
    };
    let cases = [
        case("same list", vec![VIP], vec![VIP], Ok(()), vec![]),
        case("same list, other order", vec![VIP, VIP2], vec![VIP2, VIP], Ok(()), vec![]),
        case("no addresses on either side", vec![], vec![], Ok(()), vec![]),
        case(
            "another VIP",
            vec![VIP],
            vec![other],
            Err(PacketError::AddressListMismatch { missing: VIP }),
            vec![Note::AddressListMismatch],
        ),
        case(
            "one of two replaced",
            vec![VIP, VIP2],
            vec![VIP, other],
            Err(PacketError::AddressListMismatch { missing: VIP2 }),
            vec![Note::AddressListMismatch],
        ),
        {
            let (e, n) = count(0, 1);
            case("count 0", vec![VIP], vec![], e, n)
        },
        {
            let (e, n) = count(255, 1);
            case("255 addresses", vec![VIP], full.clone(), e, n)
        },
        {
            // As many as ours, one address differs.
            let mut ours = full.clone();
            ours[254] = other;
            case(
                "255 addresses, one differs",
                ours,
                full.clone(),
                Err(PacketError::AddressListMismatch { missing: other }),
                vec![Note::AddressListMismatch],
            )
        },
        {
            let (e, n) = count(2, 1);
            case("one more", vec![VIP], vec![VIP, VIP2], e, n)
        },
        {
            let (e, n) = count(1, 2);
            case("one fewer", vec![VIP, VIP2], vec![VIP], e, n)
        },
    ];
    for c in cases {
        let advert = Advert {
            vrid: 51,
            priority: 200,
            addresses: c.theirs,
            kind: Kind::V3 { max_advert_int_cs: 100 },
        };
        let payload = advert.encode(SENDER, MCAST).expect("encodes");
        let ip = IpMeta { src: SENDER, dst: MCAST, ttl: VRRP_TTL };
        let expect = expect_v3(51, 100, false, c.ours);
        let rx = parse(&payload, &ip).expect("parses");
        let enforced = expect.check(&rx, &ip).map(|notes| assert!(notes.is_empty(), "{notes:?}"));
        assert_eq!(enforced, c.enforced, "{}: enforced", c.name);
        assert_eq!(expect.decode(&payload, &ip).map(|_| ()), c.enforced, "{}: decode", c.name);
        let skipped = expect.check_with(&rx, &ip, AddressCheck::Skip);
        assert_eq!(skipped, Ok(c.skipped), "{}: skipped", c.name);
        if let Err(e) = enforced {
            assert!(e.reason().starts_with("address_"), "{}: {}", c.name, e.reason());
        }
    }
}

#[test]
fn v3_reserved_bits_are_ignored() {
    let (rx, _) = mutated(V3_V4_MCAST, &expect_v3(51, 10, false, vec![VIP]), |m, _| m[4] |= 0xf0)
        .expect("accepted");
    assert_eq!(rx.advert.kind, Kind::V3 { max_advert_int_cs: 10 });
}

#[test]
fn v3_ipv4_accepts_the_other_checksum_forms_in_use() {
    let (_, mut payload, ip) = capture(V3_V4_MCAST);
    refix(&mut payload, &ip, ChecksumForm::Plain);
    let rx = parse(&payload, &ip).expect("plain v3 checksum accepted");
    assert_eq!(rx.checksum_form, ChecksumForm::Plain);

    // Old keepalived unicast: the multicast group in the pseudo-header.
    let (_, mut payload, ip) = capture(V3_V4_UNICAST);
    refix(&mut payload, &ip, ChecksumForm::PseudoHeaderMulticastDst);
    let rx = parse(&payload, &ip).expect("compat checksum accepted");
    assert_eq!(rx.checksum_form, ChecksumForm::PseudoHeaderMulticastDst);

    // IPv6 has only the RFC form.
    let (_, mut payload, ip) = capture(V3_V6);
    refix(&mut payload, &ip, ChecksumForm::Plain);
    assert!(matches!(parse(&payload, &ip), Err(PacketError::BadChecksum { .. })));
}

#[test]
fn v2_auth_none_ignores_the_auth_data() {
    let (rx, _) = mutated(V2_NONE, &expect_v2(Auth::None), |m, _| {
        let n = m.len();
        m[n - 1] = 0x55;
    })
    .expect("auth data ignored for type 0");
    assert_eq!(rx.advert.kind, Kind::V2 { advert_int_secs: 1, auth: Auth::None });
}

#[test]
fn passwords_are_cut_to_8_bytes_padded_and_never_printed() {
    assert_eq!(Auth::password(b"secret12345"), Auth::password(b"secret12"));
    assert_eq!(Auth::password(b"ab"), Auth::Password(*b"ab\0\0\0\0\0\0"));
    assert_eq!(format!("{:?}", Auth::password(b"secret12")), "Password(<redacted>)");
    let (_, payload, ip) = capture(V2_PASS);
    let mut e = expect_v2(Auth::password(b"secret12-and-more"));
    e.addresses = vec![VIP, VIP2];
    assert!(e.decode(&payload, &ip).is_ok(), "keepalived truncates auth_pass to 8 characters");
}

#[test]
fn encode_rejects_what_cannot_go_on_the_wire() {
    let v3 = |addresses: Vec<IpAddr>, cs: u16| Advert {
        vrid: 1,
        priority: 100,
        addresses,
        kind: Kind::V3 { max_advert_int_cs: cs },
    };
    assert_eq!(
        v3(vec![VIP], 100).encode(SENDER, IpAddr::V6(MULTICAST_V6)),
        Err(EncodeError::FamilyMismatch { src: SENDER, dst: IpAddr::V6(MULTICAST_V6) })
    );
    let vip6 = v6("2001:db8::1");
    assert_eq!(
        v3(vec![VIP, vip6], 100).encode(SENDER, MCAST),
        Err(EncodeError::AddressFamily { addr: vip6, family: Family::V4 })
    );
    assert_eq!(
        v3(vec![VIP; 256], 100).encode(SENDER, MCAST),
        Err(EncodeError::TooManyAddresses(256))
    );
    assert_eq!(v3(vec![VIP], 0).encode(SENDER, MCAST), Err(EncodeError::IntervalOutOfRange(0)));
    assert_eq!(
        v3(vec![VIP], 4096).encode(SENDER, MCAST),
        Err(EncodeError::IntervalOutOfRange(4096))
    );
    assert!(v3(vec![VIP], 4095).encode(SENDER, MCAST).is_ok());
    let v2 = Advert {
        vrid: 1,
        priority: 100,
        addresses: vec![vip6],
        kind: Kind::V2 { advert_int_secs: 1, auth: Auth::None },
    };
    assert_eq!(v2.encode(v6("fe80::1"), IpAddr::V6(MULTICAST_V6)), Err(EncodeError::V2OverIpv6));
}

#[test]
fn errors_have_distinct_reason_labels() {
    let errors = [
        PacketError::FamilyMismatch { src: SENDER, dst: MCAST },
        PacketError::Truncated { len: 0 },
        PacketError::UnknownVersion(0),
        PacketError::NotAdvertisement(0),
        PacketError::V2OverIpv6,
        PacketError::LengthMismatch { count: 0, expected: 0, actual: 0 },
        PacketError::BadChecksum { received: 0 },
        PacketError::AuthAhUnsupported,
        PacketError::UnknownAuthType(0),
        PacketError::ZeroInterval,
        PacketError::BadTtl { ttl: 0, min: 0 },
        PacketError::WrongVersion { got: 0, want: 0 },
        PacketError::VridMismatch { got: 0, want: 0 },
        PacketError::AuthTypeMismatch { got: 0, want: 0 },
        PacketError::AuthFailed,
        PacketError::IntervalMismatch { got: 0, want: 0 },
        PacketError::ExpectedUnicast { dst: MCAST },
        PacketError::ExpectedMulticast { dst: MCAST },
    ];
    let mut labels: Vec<_> = errors.iter().map(PacketError::reason).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), errors.len());
    assert_eq!(
        PacketError::BadTtl { ttl: 64, min: 255 }.to_string(),
        "TTL/hop limit 64, must be at least 255"
    );
}

// ---- frames ----

#[test]
fn frame_helper_handles_padding_vlan_and_bad_headers() {
    // Ethernet pads short frames to 60 bytes: the IP length decides where VRRP ends.
    let mut padded = hex(V3_V4_MCAST);
    padded.resize(60, 0);
    let frame = parse_ethernet_frame(&padded).expect("padded frame parses");
    assert_eq!(frame.vrrp.len(), 12);

    // One 802.1Q tag.
    let plain = hex(V2_NONE);
    let mut tagged = plain[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
    tagged.extend_from_slice(&plain[12..]);
    let frame = parse_ethernet_frame(&tagged).expect("tagged frame parses");
    assert_eq!(frame.vrrp, &plain[34..]);

    let mut bad = hex(V2_NONE);
    bad[24] ^= 0xff; // IPv4 header checksum
    assert_eq!(parse_ethernet_frame(&bad), Err(FrameError::BadIpChecksum));

    let mut ah = hex(V2_NONE);
    ah[23] = IPPROTO_AH;
    ah[24] = 0;
    ah[25] = 0;
    let sum = ipv4_header_checksum(&ah[14..34]);
    ah[24..26].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(parse_ethernet_frame(&ah), Err(FrameError::AhUnsupported));

    let mut arp = hex(V2_NONE);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(parse_ethernet_frame(&arp), Err(FrameError::NotIp(0x0806)));

    let short = hex(V3_V6);
    assert_eq!(
        parse_ip_packet(&short[14..short.len() - 1]),
        Err(FrameError::BadIpLength { claimed: 64, available: 63 })
    );
    assert_eq!(parse_ethernet_frame(&short[..10]), Err(FrameError::Truncated("Ethernet")));
}

fn ipv4_header_checksum(h: &[u8]) -> u16 {
    let src = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    checksum(h, src, src, ChecksumForm::Plain)
}

// ---- round-trip property ----

/// splitmix64: a tiny deterministic generator, so failures reproduce from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn v4(&mut self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self.next() as u32))
    }
    fn v6(&mut self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from((u128::from(self.next()) << 64) | u128::from(self.next())))
    }
}

/// A random valid advert plus where it is sent from and to.
fn random_advert(rng: &mut Rng) -> (Advert, IpMeta) {
    let v2 = rng.below(2) == 0;
    let ipv6 = !v2 && rng.below(2) == 0;
    let n = 1 + rng.below(20) as usize;
    let addresses = (0..n).map(|_| if ipv6 { rng.v6() } else { rng.v4() }).collect();
    let kind = if v2 {
        let auth = if rng.below(2) == 0 {
            Auth::None
        } else {
            let len = rng.below(9) as usize;
            let pass: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            Auth::password(&pass)
        };
        Kind::V2 { advert_int_secs: 1 + rng.below(255) as u8, auth }
    } else {
        Kind::V3 { max_advert_int_cs: 1 + rng.below(4095) as u16 }
    };
    let src = if ipv6 { rng.v6() } else { rng.v4() };
    let dst = match (ipv6, rng.below(2)) {
        (false, 0) => MCAST,
        (true, 0) => IpAddr::V6(MULTICAST_V6),
        (false, _) => IpAddr::V4(Ipv4Addr::from(rng.next() as u32 & 0x7fff_ffff)),
        (true, _) => v6("2001:db8::1"),
    };
    let advert = Advert { vrid: rng.byte(), priority: rng.byte(), addresses, kind };
    (advert, IpMeta { src, dst, ttl: VRRP_TTL })
}

#[test]
fn random_valid_adverts_round_trip() {
    let mut rng = Rng(0x005e_ed0f_7a11);
    for i in 0..2000 {
        let (advert, ip) = random_advert(&mut rng);
        let bytes = advert.encode(ip.src, ip.dst).expect("valid advert encodes");
        assert_eq!(bytes.len(), advert.wire_len(Family::of(ip.src)), "case {i}");
        let rx = parse(&bytes, &ip).unwrap_or_else(|e| panic!("case {i}: {e}: {advert:?}"));
        assert_eq!(rx.advert, advert, "case {i}");
        let want_form = match advert.kind {
            Kind::V2 { .. } => ChecksumForm::Plain,
            Kind::V3 { .. } => ChecksumForm::PseudoHeader,
        };
        assert_eq!(rx.checksum_form, want_form, "case {i}");
        // The instance that sent it accepts it.
        let auth = match &advert.kind {
            Kind::V2 { auth, .. } => auth.clone(),
            Kind::V3 { .. } => Auth::None,
        };
        let expect = Expect {
            version: advert.version(),
            vrid: advert.vrid,
            auth,
            advert_interval_cs: advert.interval_cs() as u16,
            unicast: !ip.dst.is_multicast(),
            min_unicast_ttl: VRRP_TTL,
            addresses: advert.addresses.clone(),
        };
        assert_eq!(expect.check(&rx, &ip), Ok(vec![]), "case {i}");
        // Re-encoding what was parsed gives the same bytes.
        assert_eq!(rx.advert.encode(ip.src, ip.dst).expect("re-encodes"), bytes, "case {i}");
    }
}

#[test]
fn any_single_bit_flip_is_detected() {
    let mut rng = Rng(42);
    for i in 0..300 {
        let (advert, ip) = random_advert(&mut rng);
        let bytes = advert.encode(ip.src, ip.dst).expect("valid advert encodes");
        let bit = rng.below(bytes.len() as u64 * 8) as usize;
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        match parse(&flipped, &ip) {
            Err(_) => {}
            // VRRPv3/IPv4 also accepts the other checksum forms, which a flip can hit by chance;
            // it can never pass as the form that was sent.
            Ok(rx) => assert!(
                advert.version() == Version::V3
                    && ip.src.is_ipv4()
                    && rx.checksum_form != ChecksumForm::PseudoHeader,
                "case {i}: flipped bit {bit} went unnoticed"
            ),
        }
    }
}
