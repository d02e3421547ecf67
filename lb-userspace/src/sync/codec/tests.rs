//! Codec tests: byte-exact fixtures computed field by field from the kernel's layout (see the
//! module documentation), round trips over generated entries, every drop reason, and splitting.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::vrrp::frame::hex;

/// A kernel master's default message limit on a 1500-byte MTU (IPv4 multicast).
const MTU_MAX: usize = 1472;

// One IPv4 TCP connection, sync id 7. 44 bytes.
const V4_TCP: &str = concat!(
    // header: reserved 0, sync id 7, size 0x002c = 44, count 1, version 1, spare 0
    "00 07 00 2c  01 01 00 00",
    // type 0 (IPv4), protocol 6 (TCP), entry version 0 | size 0x024 = 36
    "00 06 00 24",
    // flags 0x00000003: direct routing
    "00 00 00 03",
    // state 1 (ESTABLISHED), cport 0x9c40 = 40000
    "00 01 9c 40",
    // vport 80, dport 80
    "00 50 00 50",
    // fwmark 0
    "00 00 00 00",
    // timeout 0x384 = 900 s (the TCP established default)
    "00 00 03 84",
    // caddr 203.0.113.7, vaddr 192.0.2.100, daddr 198.51.100.10
    "cb 00 71 07  c0 00 02 64  c6 33 64 0a",
);

// One IPv6 UDP connection, sync id 0. 80 bytes.
const V6_UDP: &str = concat!(
    // header: reserved 0, sync id 0, size 0x0050 = 80, count 1, version 1, spare 0
    "00 00 00 50  01 01 00 00",
    // type 1 (STYPE_F_INET6), protocol 17 (UDP), entry version 0 | size 0x048 = 72
    "01 11 00 48",
    // flags 0: NAT (masquerading)
    "00 00 00 00",
    // state 0 (UDP has one state), cport 0xcf08 = 53000
    "00 00 cf 08",
    // vport 53, dport 53
    "00 35 00 35",
    // fwmark 0x2a = 42
    "00 00 00 2a",
    // timeout 0x12c = 300 s (the UDP default)
    "00 00 01 2c",
    // caddr 2001:db8::7
    "20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 07",
    // vaddr 2001:db8::100
    "20 01 0d b8 00 00 00 00 00 00 00 00 00 00 01 00",
    // daddr 2001:db8:2::10
    "20 01 0d b8 00 02 00 00 00 00 00 00 00 00 00 10",
);

// A persistence template of a persistent TCP service on port 80 (persistence timeout 300 s,
// netmask /32) with a direct-routing real server, sync id 7. 44 bytes.
const TEMPLATE: &str = concat!(
    // header: reserved 0, sync id 7, size 44, count 1, version 1, spare 0
    "00 07 00 2c  01 01 00 00",
    // type 0 (IPv4), protocol 6, entry version 0 | size 36
    "00 06 00 24",
    // flags 0x00001003: TEMPLATE | direct routing
    "00 00 10 03",
    // state 0 (template not yet assured), cport 0: a template matches any client port
    "00 00 00 00",
    // vport 80, dport 80
    "00 50 00 50",
    // fwmark 0
    "00 00 00 00",
    // timeout 0x12c = 300 s: the persistence timeout
    "00 00 01 2c",
    // caddr 203.0.113.7 (masked by /32), vaddr 192.0.2.100, daddr 198.51.100.10
    "cb 00 71 07  c0 00 02 64  c6 33 64 0a",
);

// The entry of a NAT'ed FTP control connection whose sequence numbers an application helper
// adjusts: the entry carries the sequence option. 62 bytes, not a multiple of 4.
const SEQ_ENTRY: &str = concat!(
    // type 0 (IPv4), protocol 6, entry version 0 | size 0x03e = 62 (36 + 2 + 24)
    "00 06 00 3e",
    // flags 0x00000600: NAT | OUT_SEQ | IN_SEQ
    "00 00 06 00",
    // state 1 (ESTABLISHED), cport 0x9c41 = 40001
    "00 01 9c 41",
    // vport 21, dport 21
    "00 15 00 15",
    // fwmark 0, timeout 900 s
    "00 00 00 00  00 00 03 84",
    // caddr 203.0.113.7, vaddr 192.0.2.100, daddr 198.51.100.10
    "cb 00 71 07  c0 00 02 64  c6 33 64 0a",
    // option 1 (IPVS_OPT_SEQ_DATA), length 0x18 = 24
    "01 18",
    // in_seq: init_seq 0x11223344, delta 4, previous_delta 0
    "11 22 33 44  00 00 00 04  00 00 00 00",
    // out_seq: init_seq 0x55667788, delta 0xfffffffc (-4), previous_delta 0
    "55 66 77 88  ff ff ff fc  00 00 00 00",
);

// A template carrying SIP persistence-engine data (options 2 and 3), sync id 7. 58 bytes.
const PE: &str = concat!(
    // header: reserved 0, sync id 7, size 0x003a = 58, count 1, version 1, spare 0
    "00 07 00 3a  01 01 00 00",
    // type 0, protocol 17 (UDP), entry version 0 | size 0x032 = 50 (36 + 2 + 7 + 2 + 3)
    "00 11 00 32",
    // flags 0x00001003: TEMPLATE | direct routing
    "00 00 10 03",
    // state 0, cport 0, vport 5060, dport 5060
    "00 00 00 00  13 c4 13 c4",
    // fwmark 0, timeout 300 s
    "00 00 00 00  00 00 01 2c",
    // caddr 203.0.113.7, vaddr 192.0.2.100, daddr 198.51.100.10
    "cb 00 71 07  c0 00 02 64  c6 33 64 0a",
    // option 2 (IPVS_OPT_PE_DATA), length 7, "abc-123" (the Call-ID)
    "02 07  61 62 63 2d 31 32 33",
    // option 3 (IPVS_OPT_PE_NAME), length 3, "sip"; the entry ends here, unpadded
    "03 03  73 69 70",
);

fn seq_message() -> Vec<u8> {
    // header: reserved 0, sync id 7, size 0x0046 = 70 (8 + 62), count 1, version 1, spare 0
    let mut m = hex("00 07 00 46  01 01 00 00");
    m.extend(hex(SEQ_ENTRY));
    m
}

fn two_message() -> Vec<u8> {
    // header: size 0x006c = 108 (8 + 62 + 2 + 36), count 2
    let mut m = hex("00 07 00 6c  02 01 00 00");
    m.extend(hex(SEQ_ENTRY));
    // 2 bytes of padding: the second entry starts at offset 72, a multiple of 4
    m.extend(hex("00 00"));
    // the V4_TCP entry, after its header
    m.extend(&hex(V4_TCP)[HEADER_LEN..]);
    m
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

fn v4_tcp() -> SyncConn {
    SyncConn {
        protocol: protocol::TCP,
        caddr: ip("203.0.113.7"),
        vaddr: ip("192.0.2.100"),
        daddr: ip("198.51.100.10"),
        cport: 40000,
        vport: 80,
        dport: 80,
        fwmark: 0,
        flags: ConnFlags(3),
        state: tcp_state::ESTABLISHED,
        timeout_s: 900,
        template: false,
        seq: None,
        pe: None,
    }
}

fn v6_udp() -> SyncConn {
    SyncConn {
        protocol: protocol::UDP,
        caddr: ip("2001:db8::7"),
        vaddr: ip("2001:db8::100"),
        daddr: ip("2001:db8:2::10"),
        cport: 53000,
        vport: 53,
        dport: 53,
        fwmark: 42,
        flags: ConnFlags(0),
        state: 0,
        timeout_s: 300,
        ..v4_tcp()
    }
}

fn template() -> SyncConn {
    SyncConn { cport: 0, state: 0, timeout_s: 300, template: true, ..v4_tcp() }
}

fn seq_conn() -> SyncConn {
    SyncConn {
        cport: 40001,
        vport: 21,
        dport: 21,
        flags: ConnFlags(ConnFlags::SEQ_MASK),
        seq: Some(SeqOptions {
            in_seq: Seq { init_seq: 0x1122_3344, delta: 4, previous_delta: 0 },
            out_seq: Seq { init_seq: 0x5566_7788, delta: (-4i32) as u32, previous_delta: 0 },
        }),
        ..v4_tcp()
    }
}

fn pe_template() -> SyncConn {
    SyncConn {
        protocol: protocol::UDP,
        vport: 5060,
        dport: 5060,
        pe: Some(PeData { name: "sip".into(), data: b"abc-123".to_vec() }),
        ..template()
    }
}

/// Each fixture decodes to its entries, and encoding them gives the fixture back.
#[test]
fn fixtures_decode_and_encode_byte_exact() {
    let cases: Vec<(&str, Vec<u8>, u8, Vec<SyncConn>)> = vec![
        ("v4 tcp", hex(V4_TCP), 7, vec![v4_tcp()]),
        ("v6 udp", hex(V6_UDP), 0, vec![v6_udp()]),
        ("template", hex(TEMPLATE), 7, vec![template()]),
        ("seq option", seq_message(), 7, vec![seq_conn()]),
        ("two entries", two_message(), 7, vec![seq_conn(), v4_tcp()]),
        ("pe data", hex(PE), 7, vec![pe_template()]),
    ];
    for (name, bytes, sync_id, conns) in cases {
        let want =
            SyncMessage { sync_id, conns: conns.clone(), skipped: vec![], rest_dropped: None };
        assert_eq!(decode(&bytes), Ok(want), "{name}: decode");
        let encoded = encode_batch(sync_id, &conns, MTU_MAX).expect("encodes");
        assert_eq!(encoded, vec![bytes], "{name}: encode");
    }
}

/// The kernel reads the type's IPv6 bit alone: other bits beside it still mean IPv6.
#[test]
fn ipv6_type_bit_alone_decides() {
    let mut bytes = hex(V6_UDP);
    bytes[HEADER_LEN] = 0x03;
    assert_eq!(decode(&bytes).map(|m| m.conns), Ok(vec![v6_udp()]));
}

#[test]
fn flags_helpers() {
    assert_eq!(v4_tcp().flags.fwd_method(), Some(FwdMethod::DirectRoute));
    assert_eq!(v6_udp().flags.fwd_method(), Some(FwdMethod::Masq));
    assert_eq!(ConnFlags(7).fwd_method(), None);
    assert!(seq_conn().flags.contains(ConnFlags::IN_SEQ | ConnFlags::OUT_SEQ));
    assert_eq!(ConnFlags::BACKUP_MASK, 0x1f87);
    assert_eq!(max_len_for_mtu(1500, false), MTU_MAX);
    assert_eq!(max_len_for_mtu(1500, true), 1452);
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
    fn seq(&mut self) -> Seq {
        Seq {
            init_seq: self.next() as u32,
            delta: self.next() as u32,
            previous_delta: self.next() as u32,
        }
    }
    fn conn(&mut self) -> SyncConn {
        let v6 = self.bool();
        let mut addr = || {
            if v6 {
                IpAddr::V6(Ipv6Addr::from(u128::from(self.next()) << 64 | u128::from(self.next())))
            } else {
                IpAddr::V4(Ipv4Addr::from(self.next() as u32))
            }
        };
        let (caddr, vaddr, daddr) = (addr(), addr(), addr());
        let name_len = 1 + self.below(PE_NAME_MAX_LEN as u64) as usize;
        let data_len = 1 + self.below(PE_DATA_MAX_LEN as u64) as usize;
        SyncConn {
            protocol: self.next() as u8,
            caddr,
            vaddr,
            daddr,
            cport: self.next() as u16,
            vport: self.next() as u16,
            dport: self.next() as u16,
            fwmark: self.next() as u32,
            flags: ConnFlags(self.next() as u32 & !ConnFlags::TEMPLATE),
            state: self.next() as u16,
            timeout_s: self.next() as u32,
            template: self.bool(),
            seq: if self.bool() {
                Some(SeqOptions { in_seq: self.seq(), out_seq: self.seq() })
            } else {
                None
            },
            pe: if self.below(4) == 0 {
                let name = (0..name_len).map(|_| char::from(b'a' + self.below(26) as u8)).collect();
                Some(PeData { name, data: self.bytes(data_len) })
            } else {
                None
            },
        }
    }
}

/// Generated batches of every kind of entry survive encode then decode unchanged, split into
/// messages within the limit, each full enough that the next entry would not have fitted.
#[test]
fn round_trips_generated_batches() {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    for round in 0..200 {
        let n = g.below(120) as usize;
        let conns: Vec<SyncConn> = (0..n).map(|_| g.conn()).collect();
        // From just above the largest entry (72 + 26 + 257 + 18 + header) to the size limit.
        let max_len = match round % 3 {
            0 => MTU_MAX,
            1 => 400 + g.below(2000) as usize,
            _ => MAX_MESSAGE_LEN - g.below(100) as usize,
        };
        let sync_id = g.next() as u8;
        let messages = encode_batch(sync_id, &conns, max_len).expect("encodes");
        let mut decoded = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            assert!(m.len() <= max_len, "round {round}: message {i} of {} > {max_len}", m.len());
            let msg = decode(m).expect("decodes");
            assert!(msg.is_clean(), "round {round}: message {i}: {msg:?}");
            assert_eq!(msg.sync_id, sync_id);
            assert!(!msg.conns.is_empty());
            // Full: the next batch's first entry would not have fitted (or 255 entries).
            if let Some(next) = conns.get(decoded.len() + msg.conns.len())
                && msg.conns.len() < MAX_CONNS_PER_MESSAGE
            {
                let pad = m.len().wrapping_neg() & 3;
                assert!(m.len() + pad + next.wire_len() > max_len, "round {round}: {i} not full");
            }
            decoded.extend(msg.conns);
        }
        assert_eq!(decoded, conns, "round {round}");
    }
}

#[test]
fn encode_batch_splits_by_length_and_count() {
    let lens = |conns: &[SyncConn], max_len| -> Vec<(usize, usize)> {
        encode_batch(1, conns, max_len)
            .expect("encodes")
            .iter()
            .map(|m| (m.len(), decode(m).expect("decodes").conns.len()))
            .collect()
    };
    // (1472 - 8) / 36 = 40 entries per message.
    let v4 = vec![v4_tcp(); 100];
    assert_eq!(lens(&v4, MTU_MAX), vec![(1448, 40), (1448, 40), (728, 20)]);
    // The count byte caps a message at 255 entries whatever the length.
    let many = vec![v4_tcp(); 300];
    assert_eq!(lens(&many, MAX_MESSAGE_LEN), vec![(8 + 255 * 36, 255), (8 + 45 * 36, 45)]);
    // 62-byte entries are padded to 64 before the next: 8 + 64 + 62 = 134 holds two.
    let seq = vec![seq_conn(); 4];
    assert_eq!(lens(&seq, 134), vec![(134, 2), (134, 2)]);
    assert_eq!(lens(&seq, 133), vec![(70, 1); 4]);
    assert_eq!(encode_batch(1, &[], MTU_MAX), Ok(vec![]));
}

#[test]
fn encode_errors() {
    let mixed = SyncConn { daddr: ip("2001:db8::1"), ..v4_tcp() };
    let pe = |name: &str, len: usize| SyncConn {
        pe: Some(PeData { name: name.into(), data: vec![1; len] }),
        ..v4_tcp()
    };
    let cases: Vec<(&str, Vec<SyncConn>, usize, EncodeError)> = vec![
        (
            "mixed family",
            vec![v4_tcp(), mixed],
            MTU_MAX,
            EncodeError::MixedFamily {
                index: 1,
                caddr: ip("203.0.113.7"),
                vaddr: ip("192.0.2.100"),
                daddr: ip("2001:db8::1"),
            },
        ),
        ("empty pe name", vec![pe("", 1)], MTU_MAX, EncodeError::BadPeName { index: 0, len: 0 }),
        (
            "long pe name",
            vec![pe("seventeen-bytes!!", 1)],
            MTU_MAX,
            EncodeError::BadPeName { index: 0, len: 17 },
        ),
        ("empty pe data", vec![pe("sip", 0)], MTU_MAX, EncodeError::BadPeData { index: 0, len: 0 }),
        (
            "long pe data",
            vec![pe("sip", 256)],
            MTU_MAX,
            EncodeError::BadPeData { index: 0, len: 256 },
        ),
        (
            "max len over 65535",
            vec![v4_tcp()],
            65536,
            EncodeError::MaxLenTooLarge { max_len: 65536 },
        ),
        (
            "entry alone too large",
            vec![v4_tcp()],
            43,
            EncodeError::EntryTooLarge { index: 0, needed: 44, max_len: 43 },
        ),
    ];
    for (name, conns, max_len, want) in cases {
        assert_eq!(encode_batch(0, &conns, max_len), Err(want), "{name}");
    }
}

/// The V4_TCP entry (without header) with `opts` appended and its size field fixed.
fn entry_with(opts: &str) -> Vec<u8> {
    let mut e = hex(V4_TCP)[HEADER_LEN..].to_vec();
    e.extend(hex(opts));
    let size = u16::try_from(e.len()).expect("small") | (u16::from(e[2]) >> 4 << 12);
    e[2..4].copy_from_slice(&size.to_be_bytes());
    e
}

/// A message of sync id 7 with these entries, padded to 4-byte boundaries between them.
fn message(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut m = hex("00 07 00 00  00 01 00 00");
    m[4] = entries.len() as u8;
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            m.resize(m.len().next_multiple_of(4), 0);
        }
        m.extend(e);
    }
    let size = u16::try_from(m.len()).expect("small");
    m[2..4].copy_from_slice(&size.to_be_bytes());
    m
}

fn set(mut bytes: Vec<u8>, at: usize, vals: &[u8]) -> Vec<u8> {
    bytes[at..at + vals.len()].copy_from_slice(vals);
    bytes
}

/// What decoding a malformed input gives.
#[derive(Debug)]
enum Want {
    /// The whole message is dropped.
    Message(DecodeError),
    /// `n` entries kept, then the rest dropped at entry `at`.
    Rest(usize, usize, DecodeError),
    /// Entry `at` skipped, `n` entries kept.
    Skip(usize, usize, DecodeError),
}

/// Every drop reason, reached by a malformed input (and nothing else dropped with it).
#[test]
fn malformed_inputs() {
    use DecodeError as E;
    let v4 = hex(V4_TCP);
    let good = entry_with("");
    let mut one_more = v4.clone();
    one_more.push(0);
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        ("empty", vec![], Want::Message(E::Truncated { len: 0 })),
        ("3 bytes", hex("00 07 00"), Want::Message(E::Truncated { len: 3 })),
        ("v1 header cut", hex("00 07 00 06 01 01"), Want::Message(E::Truncated { len: 6 })),
        ("over 65535", vec![0; 65536], Want::Message(E::Oversized { len: 65536 })),
        ("trailing byte", one_more, Want::Message(E::BadSize { size: 44, len: 45 })),
        (
            "size too small",
            set(v4.clone(), 2, &[0, 8]),
            Want::Message(E::BadSize { size: 8, len: 44 }),
        ),
        ("version 0 format", set(v4.clone(), 0, &[1]), Want::Message(E::Version0 { count: 1 })),
        ("version 2", set(v4.clone(), 5, &[2]), Want::Message(E::WrongVersion { version: 2 })),
        ("version 0 byte", set(v4.clone(), 5, &[0]), Want::Message(E::WrongVersion { version: 0 })),
        ("spare", set(v4.clone(), 6, &[0, 1]), Want::Message(E::NonZeroSpare { spare: 1 })),
        (
            "count past the end",
            set(v4.clone(), 4, &[2]),
            Want::Rest(1, 1, E::EntryTruncated { left: 0 }),
        ),
        (
            "header only",
            set(message(&[]), 4, &[1]),
            Want::Rest(0, 0, E::EntryTruncated { left: 0 }),
        ),
        (
            "entry size past the end",
            set(v4.clone(), 10, &[0x00, 0x25]),
            Want::Rest(0, 0, E::BadEntrySize { size: 37, fixed: 36, left: 36 }),
        ),
        (
            "entry size below v4 fixed part",
            set(v4.clone(), 10, &[0x00, 0x10]),
            Want::Rest(0, 0, E::BadEntrySize { size: 16, fixed: 36, left: 36 }),
        ),
        (
            "entry size below v6 fixed part",
            set(hex(V6_UDP), 10, &[0x00, 0x24]),
            Want::Rest(0, 0, E::BadEntrySize { size: 36, fixed: 72, left: 72 }),
        ),
        (
            "entry version 1",
            set(v4.clone(), 10, &[0x10, 0x24]),
            Want::Rest(0, 0, E::BadEntryVersion { version: 1 }),
        ),
        ("type 2", set(v4.clone(), 8, &[2]), Want::Rest(0, 0, E::UnknownType { ty: 2 })),
        (
            "bad type after a good entry",
            message(&[good.clone(), set(good.clone(), 0, &[0x80])]),
            Want::Rest(1, 1, E::UnknownType { ty: 0x80 }),
        ),
        (
            "bad entry before a good one",
            message(&[set(good.clone(), 0, &[0x80]), good.clone()]),
            Want::Rest(0, 0, E::UnknownType { ty: 0x80 }),
        ),
        ("option header cut", message(&[entry_with("01")]), Want::Rest(0, 0, E::OptionTruncated)),
        (
            "option length 0",
            message(&[entry_with("01 00")]),
            Want::Rest(0, 0, E::BadOptionLength { ty: 1, len: 0, left: 0 }),
        ),
        (
            "option past the entry",
            set(seq_message(), HEADER_LEN + 37, &[25]),
            Want::Rest(0, 0, E::BadOptionLength { ty: 1, len: 25, left: 24 }),
        ),
        (
            "seq option too short",
            message(&[entry_with("01 04 00 00 00 00")]),
            Want::Rest(0, 0, E::BadSeqOption { len: 4 }),
        ),
        (
            "seq option twice",
            message(&[entry_with(&format!(
                "{seq} {seq}",
                seq = format!("01 18 {}", "00 ".repeat(24))
            ))]),
            Want::Rest(0, 0, E::BadSeqOption { len: 24 }),
        ),
        (
            "pe data twice",
            message(&[entry_with("02 01 aa  02 01 bb  03 03 73 69 70")]),
            Want::Rest(0, 0, E::BadPeData),
        ),
        (
            "pe name too long",
            message(&[entry_with(&format!("02 01 aa  03 11 {}", "61 ".repeat(17)))]),
            Want::Rest(0, 0, E::BadPeName { len: 17 }),
        ),
        (
            "pe name twice",
            message(&[entry_with("02 01 aa  03 01 61  03 01 62")]),
            Want::Rest(0, 0, E::BadPeName { len: 1 }),
        ),
        (
            "unknown mandatory option",
            message(&[entry_with("05 02 00 00"), good.clone()]),
            Want::Skip(0, 1, E::UnknownOption { ty: 5 }),
        ),
        (
            "pe data without name",
            message(&[good.clone(), entry_with("02 03 61 62 63")]),
            Want::Skip(1, 1, E::BadPeParams),
        ),
        (
            "pe name not utf-8",
            message(&[entry_with("02 01 aa  03 01 ff")]),
            Want::Skip(0, 0, E::BadPeParams),
        ),
    ];
    let mut reached = BTreeSet::new();
    for (name, bytes, want) in cases {
        let got = decode(&bytes);
        match (&got, &want) {
            (Err(e), Want::Message(w)) => {
                assert_eq!(e, w, "{name}");
                assert!(!e.is_entry_error(), "{name}");
            }
            (Ok(m), Want::Rest(n, at, w)) => {
                assert_eq!((m.conns.len(), m.skipped.len()), (*n, 0), "{name}: {m:?}");
                assert_eq!(m.rest_dropped, Some((*at, w.clone())), "{name}");
                assert!(w.is_entry_error(), "{name}");
            }
            (Ok(m), Want::Skip(at, n, w)) => {
                assert_eq!(m.conns.len(), *n, "{name}: {m:?}");
                assert_eq!(m.skipped, vec![(*at, w.clone())], "{name}");
                assert_eq!(m.rest_dropped, None, "{name}");
            }
            _ => panic!("{name}: got {got:?}, want {want:?}"),
        }
        let (Want::Message(e) | Want::Rest(_, _, e) | Want::Skip(_, _, e)) = &want;
        reached.insert(e.reason());
    }
    assert_eq!(reached, every_reason(), "every drop reason is reached");
}

/// Every variant's reason; the match has no wildcard, so a new variant must be added here (and
/// to the table above).
fn every_reason() -> BTreeSet<&'static str> {
    let all = [
        DecodeError::Truncated { len: 0 },
        DecodeError::Oversized { len: 0 },
        DecodeError::BadSize { size: 0, len: 0 },
        DecodeError::Version0 { count: 0 },
        DecodeError::WrongVersion { version: 0 },
        DecodeError::NonZeroSpare { spare: 0 },
        DecodeError::EntryTruncated { left: 0 },
        DecodeError::BadEntrySize { size: 0, fixed: 0, left: 0 },
        DecodeError::BadEntryVersion { version: 0 },
        DecodeError::UnknownType { ty: 0 },
        DecodeError::OptionTruncated,
        DecodeError::BadOptionLength { ty: 0, len: 0, left: 0 },
        DecodeError::BadSeqOption { len: 0 },
        DecodeError::BadPeData,
        DecodeError::BadPeName { len: 0 },
        DecodeError::UnknownOption { ty: 0 },
        DecodeError::BadPeParams,
    ];
    for e in &all {
        match e {
            DecodeError::Truncated { .. }
            | DecodeError::Oversized { .. }
            | DecodeError::BadSize { .. }
            | DecodeError::Version0 { .. }
            | DecodeError::WrongVersion { .. }
            | DecodeError::NonZeroSpare { .. }
            | DecodeError::EntryTruncated { .. }
            | DecodeError::BadEntrySize { .. }
            | DecodeError::BadEntryVersion { .. }
            | DecodeError::UnknownType { .. }
            | DecodeError::OptionTruncated
            | DecodeError::BadOptionLength { .. }
            | DecodeError::BadSeqOption { .. }
            | DecodeError::BadPeData
            | DecodeError::BadPeName { .. }
            | DecodeError::UnknownOption { .. }
            | DecodeError::BadPeParams => {}
        }
    }
    let reasons: BTreeSet<_> = all.iter().map(DecodeError::reason).collect();
    assert_eq!(reasons.len(), all.len(), "reasons are distinct");
    reasons
}

/// What the kernel ignores is ignored: an unknown optional option, a PE name without data, and
/// bytes after the counted entries (here: a second entry the count leaves out).
#[test]
fn ignored_parts() {
    let good = entry_with("");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("optional unknown option", message(&[entry_with("45 02 00 00")])),
        ("pe name without data", message(&[entry_with("03 03 73 69 70")])),
        ("uncounted entry", set(message(&[good.clone(), good]), 4, &[1])),
    ];
    for (name, bytes) in cases {
        let want =
            SyncMessage { sync_id: 7, conns: vec![v4_tcp()], skipped: vec![], rest_dropped: None };
        assert_eq!(decode(&bytes), Ok(want), "{name}");
    }
}

/// Mutated fixtures never panic the decoder, and whatever decodes re-encodes to something that
/// decodes to the same entries.
#[test]
fn mutations_never_panic() {
    let seeds = [hex(V4_TCP), hex(V6_UDP), hex(TEMPLATE), seq_message(), two_message(), hex(PE)];
    let mut g = Gen(42);
    for _ in 0..20_000 {
        let mut b = seeds[g.below(seeds.len() as u64) as usize].clone();
        for _ in 0..1 + g.below(4) {
            let at = g.below(b.len() as u64) as usize;
            match g.below(3) {
                0 => b[at] ^= 1 << g.below(8),
                1 => b[at] = g.next() as u8,
                _ => b.truncate(at),
            }
            if b.is_empty() {
                break;
            }
        }
        // Keep the size field right half the time, so mutations reach the entries.
        if g.bool() && b.len() >= 4 {
            let size = b.len() as u16;
            b[2..4].copy_from_slice(&size.to_be_bytes());
        }
        let Ok(msg) = decode(&b) else { continue };
        let Ok(again) = encode_batch(msg.sync_id, &msg.conns, MAX_MESSAGE_LEN) else {
            panic!("decoded entries must encode: {msg:?}");
        };
        let redecoded: Vec<SyncConn> =
            again.iter().flat_map(|m| decode(m).expect("re-decodes").conns).collect();
        assert_eq!(redecoded, msg.conns);
    }
}
