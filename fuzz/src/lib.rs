//! Helpers shared by the fuzz targets in `fuzz_targets/`.

use std::net::IpAddr;

use lb::config::{Diagnostic, HostView};
use lb::vrrp::packet::{ChecksumForm, checksum};

/// A host on which every interface a configuration names exists, so validation goes past the
/// interface check into everything after it.
pub struct AnyInterface;

impl HostView for AnyInterface {
    fn interface_exists(&self, _name: &str) -> bool {
        true
    }
}

/// Asserts that an error (or warning/notice) location points into `text`: line and column are
/// 1-based, the line exists (or is the one just past a final newline) and the column is at most
/// one past the line's last character.
pub fn assert_located(what: &str, line: u32, col: u32, text: &str) {
    assert!(line >= 1, "{what}: line {line} is not 1-based");
    assert!(col >= 1, "{what}: column {col} is not 1-based");
    // `split('\n')` yields the empty line after a final newline, where end-of-file errors point.
    let lines: Vec<&str> = text.split('\n').collect();
    let Some(l) = lines.get(line as usize - 1) else {
        panic!("{what}: line {line} is past the end of the {}-line text", lines.len());
    };
    let len = l.chars().count() as u32;
    assert!(
        col <= len + 1,
        "{what}: column {col} is past the end of line {line} ({len} characters)"
    );
}

/// Every error of a failed parse is located inside the text.
pub fn assert_errors_located(errors: &[Diagnostic], text: &str) {
    assert!(!errors.is_empty(), "a failed parse must report at least one error");
    for e in errors {
        assert_located(&e.to_string(), e.line, e.col, text);
    }
}

/// Writes the checksum a VRRP message would carry in `form` into its bytes 6..8 (a no-op for a
/// message shorter than the fixed header). Lets mutated inputs get past the checksum check.
pub fn fix_vrrp_checksum(msg: &mut [u8], src: IpAddr, dst: IpAddr, form: ChecksumForm) {
    if msg.len() < 8 {
        return;
    }
    msg[6] = 0;
    msg[7] = 0;
    let sum = checksum(msg, src, dst, form);
    msg[6..8].copy_from_slice(&sum.to_be_bytes());
}

/// Everything the VRRP receive path does with one message that arrived with `ip`: [`parse`], then
/// [`Expect::check`] / [`Expect::decode`] for several instances, including one that matches the
/// advert exactly. Runs on the message as received and on a copy whose checksum was made right,
/// so that mutated messages reach the checks after the checksum.
///
/// Properties: never panics; `decode` is `parse` then `check`; a parsed advert has the Count
/// field's number of addresses, all of the packet's family, and encodes back to a message of the
/// same length that parses to the same advert; a message with a correct checksum is never
/// refused for its checksum; the matching instance accepts the advert without notes unless the
/// TTL is too low for a multicast advert.
///
/// [`parse`]: lb::vrrp::packet::parse
/// [`Expect::check`]: lb::vrrp::packet::Expect::check
/// [`Expect::decode`]: lb::vrrp::packet::Expect::decode
pub fn exercise_vrrp(msg: &[u8], ip: &lb::vrrp::packet::IpMeta) {
    use lb::vrrp::packet::{PacketError, parse};

    check_vrrp(msg, ip);
    let form = match msg.first().map(|b| b >> 4) {
        Some(2) => ChecksumForm::Plain,
        Some(3) => ChecksumForm::PseudoHeader,
        _ => return,
    };
    let mut fixed = msg.to_vec();
    fix_vrrp_checksum(&mut fixed, ip.src, ip.dst, form);
    if let Err(e @ PacketError::BadChecksum { .. }) = parse(&fixed, ip) {
        panic!("a message with a correct {form:?} checksum was refused: {e}");
    }
    check_vrrp(&fixed, ip);
}

fn check_vrrp(msg: &[u8], ip: &lb::vrrp::packet::IpMeta) {
    use lb::vrrp::packet::{Auth, Expect, Family, Kind, PacketError, VRRP_TTL, Version, parse};

    let parsed = parse(msg, ip);
    let mut expects = vec![
        Expect {
            version: Version::V2,
            vrid: 51,
            auth: Auth::password(b"secret12"),
            advert_interval_cs: 100,
            unicast: false,
            min_unicast_ttl: VRRP_TTL,
            addresses: vec!["192.0.2.200".parse().unwrap()],
        },
        Expect {
            version: Version::V3,
            vrid: 53,
            auth: Auth::None,
            advert_interval_cs: 100,
            unicast: true,
            min_unicast_ttl: 1,
            addresses: vec!["192.0.2.200".parse().unwrap(), "192.0.2.201".parse().unwrap()],
        },
        Expect {
            version: Version::V2,
            vrid: 51,
            auth: Auth::None,
            advert_interval_cs: 150,
            unicast: false,
            min_unicast_ttl: VRRP_TTL,
            addresses: vec![],
        },
    ];
    if let Ok(rx) = &parsed {
        let adv = &rx.advert;
        let family = Family::of(ip.src);
        assert_eq!(adv.addresses.len(), usize::from(msg[3]), "Count field vs addresses");
        assert!(adv.addresses.iter().all(|a| Family::of(*a) == family), "address family");
        assert_eq!(adv.wire_len(family), msg.len(), "wire_len of a parsed advert");
        let encoded = adv
            .encode(ip.src, ip.dst)
            .unwrap_or_else(|e| panic!("a parsed advert does not encode: {e}: {adv:?}"));
        assert_eq!(encoded.len(), msg.len(), "re-encoded length");
        match parse(&encoded, ip) {
            Ok(again) => assert_eq!(&again.advert, adv, "parse(encode(advert)) != advert"),
            Err(e) => panic!("a re-encoded advert does not parse: {e}: {adv:?}"),
        }
        let (auth, interval_cs) = match &adv.kind {
            Kind::V2 { advert_int_secs, auth } => (auth.clone(), u16::from(*advert_int_secs) * 100),
            Kind::V3 { max_advert_int_cs } => (Auth::None, *max_advert_int_cs),
        };
        let matching = Expect {
            version: adv.version(),
            vrid: adv.vrid,
            auth,
            advert_interval_cs: interval_cs,
            unicast: !ip.dst.is_multicast(),
            min_unicast_ttl: 0,
            addresses: adv.addresses.clone(),
        };
        match matching.check(rx, ip) {
            Ok(notes) => assert!(notes.is_empty(), "notes from a matching instance: {notes:?}"),
            Err(PacketError::BadTtl { .. }) if ip.dst.is_multicast() && ip.ttl < VRRP_TTL => {}
            Err(e) => panic!("the matching instance refused the advert: {e}; {matching:?} {rx:?}"),
        }
        expects.push(matching);
    }
    for expect in &expects {
        let decoded = expect.decode(msg, ip);
        let stepwise = parsed.clone().and_then(|rx| expect.check(&rx, ip).map(|notes| (rx, notes)));
        assert_eq!(decoded, stepwise, "decode differs from parse + check");
        if let Err(e) = &decoded {
            let _ = (e.to_string(), e.reason());
        }
    }
}
