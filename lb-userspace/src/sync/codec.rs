//! The IPVS sync protocol, version 1: the messages the kernel's IPVS sync daemon multicasts from
//! a master director to its backups, encoded and decoded byte for byte as the kernel does.
//!
//! # Transport
//!
//! One message per UDP datagram, by default to the IPv4 group 224.0.0.81 ([`DEFAULT_GROUP_V4`]),
//! port 8848 ([`DEFAULT_PORT`]; with several sync threads, thread *n* uses port + *n*), TTL 1.
//! A message is at most the sync daemon's `sync_maxlen`: by default the interface MTU (1500 for
//! the master) minus the IP and UDP headers ([`max_len_for_mtu`]), and never more than 65535 (the
//! size field has 16 bits). All multi-byte fields are big-endian (network order).
//!
//! # Message header (8 bytes)
//!
//! | offset | size | field | value |
//! |---|---|---|---|
//! | 0 | 1 | reserved | 0. In the version 0 format this byte is the entry count, so a version 0 receiver sees a version 1 message as empty |
//! | 1 | 1 | sync id | the daemon's sync id; a backup with a non-zero sync id ignores other ids |
//! | 2 | 2 | size | the whole message in bytes, header included; must equal the datagram length |
//! | 4 | 1 | count | number of connection entries |
//! | 5 | 1 | version | 1 |
//! | 6 | 2 | spare | 0 |
//!
//! The kernel treats any header that is not `reserved = 0, version = 1, spare = 0` as the
//! version 0 format (4-byte header, fixed 24-byte IPv4-only entries without timeouts). Version 0
//! is only sent by a kernel set to `net.ipv4.vs.sync_version = 0`; this codec refuses it with
//! [`DecodeError::Version0`] (reserved byte set), [`DecodeError::WrongVersion`] or
//! [`DecodeError::NonZeroSpare`].
//!
//! # Connection entry
//!
//! Entries follow the header. Each starts on a 4-byte boundary: the sender puts 0 to 3 zero bytes
//! before an entry so it does (the last entry is not padded at its end, and the size field
//! counts the padding).
//!
//! | offset | size | field | value |
//! |---|---|---|---|
//! | 0 | 1 | type | bit 0 (`STYPE_F_INET6`): IPv6 entry; 0: IPv4 entry |
//! | 1 | 1 | protocol | IP protocol (6 TCP, 17 UDP, 132 SCTP; a template of a fwmark service: 0) |
//! | 2 | 2 | version and size | top 4 bits: entry version, 0; low 12 bits: entry size in bytes, options included, padding not |
//! | 4 | 4 | flags | the connection's `IP_VS_CONN_F_*` flags, see [`ConnFlags`] |
//! | 8 | 2 | state | protocol state (for TCP `IP_VS_TCP_S_*`, see [`tcp_state`]); 0 for UDP; for templates 0 or 1 (assured) |
//! | 10 | 2 | cport | client port |
//! | 12 | 2 | vport | virtual (service) port |
//! | 14 | 2 | dport | destination (real server) port |
//! | 16 | 4 | fwmark | firewall mark |
//! | 20 | 4 | timeout | seconds; 0 makes the receiver use its protocol default for the state |
//! | 24 | 4 or 16 each | caddr, vaddr, daddr | client, virtual and real server address, of the entry's family |
//!
//! So the fixed part is 36 bytes for IPv4 and 72 for IPv6. Options follow, up to the entry size:
//! one byte type, one byte length (never 0), the data. A type with bit 6 (`IPVS_OPT_F_PARAM`) set
//! is optional: unknown, it is skipped; an unknown type without it makes the receiver skip the
//! whole entry. Known types (the bit masked off):
//!
//! - 1 `IPVS_OPT_SEQ_DATA`: the TCP sequence adjustments of a NAT connection whose payload an
//!   application helper rewrote (FTP): 24 bytes, incoming then outgoing, each `init_seq`,
//!   `delta`, `previous_delta` (u32). Sent when the flags have `IN_SEQ` or `OUT_SEQ`; at most once.
//! - 2 `IPVS_OPT_PE_DATA`: persistence-engine data (e.g. a SIP Call-ID), 1 to 255 bytes, once.
//! - 3 `IPVS_OPT_PE_NAME`: the persistence engine's name (e.g. `sip`), 1 to 16 bytes, once; only
//!   sent after PE data. PE data without a name makes the receiver skip the entry; a name without
//!   data is ignored.
//!
//! # Persistence templates
//!
//! A persistent service's client-to-real affinity travels as an entry of its own with flag
//! `TEMPLATE` (0x1000): client address (masked by the persistence netmask), client port 0,
//! virtual address and port (port 0 for a port-0 service), real server address and port, the
//! persistence timeout, state 0 (or 1 once assured). [`SyncConn::template`] carries that flag.
//!
//! # Decoding, and what is dropped
//!
//! [`decode`] follows the kernel's receive path, with each drop reason its own
//! [`DecodeError`] variant (and [`DecodeError::reason`] a stable counter label):
//!
//! - a bad header ([`DecodeError::is_entry_error`] false) drops the whole message: `decode`
//!   returns the error;
//! - a malformed entry (truncated, size past the message, entry version not 0, unknown type, a
//!   malformed option) ends decoding there, as the kernel drops the rest of the message: the
//!   entries before it are kept, the error is in [`SyncMessage::rest_dropped`];
//! - an entry the kernel skips on its own (an unknown mandatory option, PE data without a usable
//!   PE name) is left out and the decoder goes on: [`SyncMessage::skipped`].
//!
//! Bytes after the counted entries are ignored, as the kernel does. What the codec does not
//! judge, the receiver does (as the kernel's `ip_vs_proc_conn` does): unknown protocol, a state
//! out of range, an unknown service, the flags a backup keeps (`ConnFlags::BACKUP_MASK`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kernel's default multicast group for sync messages.
pub const DEFAULT_GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// The kernel's default (base) UDP port for sync messages.
pub const DEFAULT_PORT: u16 = 8848;
/// The protocol version this codec speaks (the header's version byte).
pub const PROTO_VERSION: u8 = 1;
/// Length of the version 1 message header.
pub const HEADER_LEN: usize = 8;
/// Fixed part of an IPv4 entry (before options).
pub const CONN_V4_LEN: usize = 36;
/// Fixed part of an IPv6 entry (before options).
pub const CONN_V6_LEN: usize = 72;
/// The largest message: the size field has 16 bits.
pub const MAX_MESSAGE_LEN: usize = u16::MAX as usize;
/// The most entries in one message: the count field has 8 bits.
pub const MAX_CONNS_PER_MESSAGE: usize = u8::MAX as usize;
/// Longest PE name (`IP_VS_PENAME_MAXLEN`).
pub const PE_NAME_MAX_LEN: usize = 16;
/// Longest PE data (`IP_VS_PEDATA_MAXLEN`).
pub const PE_DATA_MAX_LEN: usize = 255;

/// Entry type bit for IPv6 (`STYPE_F_INET6`).
const TYPE_F_INET6: u8 = 1;
/// Entry version (top 4 bits) and size (low 12 bits) in the version-and-size field.
const SVER_SHIFT: u16 = 12;
const SVER_MASK: u16 = 0x0fff;
/// Option types.
const OPT_SEQ_DATA: u8 = 1;
const OPT_PE_DATA: u8 = 2;
const OPT_PE_NAME: u8 = 3;
/// Option type bit: the option may be ignored when unknown.
const OPT_F_PARAM: u8 = 1 << 6;
/// Length of the sequence option's data: two `Seq` of three u32.
const SEQ_DATA_LEN: usize = 24;

/// IP protocol numbers the kernel's IPVS handles.
pub mod protocol {
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// The kernel's TCP connection states (`IP_VS_TCP_S_*`), the entry's state for TCP.
pub mod tcp_state {
    /// No state yet.
    pub const NONE: u16 = 0;
    /// Established.
    pub const ESTABLISHED: u16 = 1;
    /// SYN sent.
    pub const SYN_SENT: u16 = 2;
    /// SYN received.
    pub const SYN_RECV: u16 = 3;
    /// FIN wait.
    pub const FIN_WAIT: u16 = 4;
    /// TIME_WAIT.
    pub const TIME_WAIT: u16 = 5;
    /// Closed.
    pub const CLOSE: u16 = 6;
    /// CLOSE_WAIT.
    pub const CLOSE_WAIT: u16 = 7;
    /// LAST_ACK.
    pub const LAST_ACK: u16 = 8;
    /// Listen.
    pub const LISTEN: u16 = 9;
    /// SYN+ACK.
    pub const SYNACK: u16 = 10;
    /// Number of states: a received TCP state must be below it.
    pub const COUNT: u16 = 11;
}

/// A connection's `IP_VS_CONN_F_*` flags as on the wire (32 bits; the kernel sends the low 16).
/// [`ConnFlags::TEMPLATE`] is not kept here: it is [`SyncConn::template`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnFlags(pub u32);

impl ConnFlags {
    /// Forwarding method bits, see [`FwdMethod`].
    pub const FWD_MASK: u32 = 0x0007;
    /// Entry created by sync (set by the receiver, not sent).
    pub const SYNC: u32 = 0x0020;
    /// Hashed entry (the kernel clears it before sending).
    pub const HASHED: u32 = 0x0040;
    /// No output packets.
    pub const NO_OUTPUT: u32 = 0x0080;
    /// Not established.
    pub const INACTIVE: u32 = 0x0100;
    /// Outgoing TCP sequence numbers are adjusted.
    pub const OUT_SEQ: u32 = 0x0200;
    /// Incoming TCP sequence numbers are adjusted.
    pub const IN_SEQ: u32 = 0x0400;
    /// Either sequence adjustment: the sender then adds the sequence option.
    pub const SEQ_MASK: u32 = 0x0600;
    /// No client port set yet.
    pub const NO_CPORT: u32 = 0x0800;
    /// Persistence template, not a connection.
    pub const TEMPLATE: u32 = 0x1000;
    /// Forward one packet only (never synced by the kernel).
    pub const ONE_PACKET: u32 = 0x2000;
    /// The bits a backup takes from a received entry (`IP_VS_CONN_F_BACKUP_MASK`).
    pub const BACKUP_MASK: u32 = Self::FWD_MASK
        | Self::NO_OUTPUT
        | Self::INACTIVE
        | Self::SEQ_MASK
        | Self::NO_CPORT
        | Self::TEMPLATE;

    /// The raw bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `mask` is set.
    pub fn contains(self, mask: u32) -> bool {
        self.0 & mask == mask
    }

    /// The forwarding method, `None` for the unused codes 5 to 7.
    pub fn fwd_method(self) -> Option<FwdMethod> {
        match self.0 & Self::FWD_MASK {
            0 => Some(FwdMethod::Masq),
            1 => Some(FwdMethod::LocalNode),
            2 => Some(FwdMethod::Tunnel),
            3 => Some(FwdMethod::DirectRoute),
            4 => Some(FwdMethod::Bypass),
            _ => None,
        }
    }
}

/// How the director forwards a connection's packets to its real server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FwdMethod {
    /// NAT (0).
    Masq,
    /// The director itself serves (1).
    LocalNode,
    /// IP-in-IP or another tunnel (2).
    Tunnel,
    /// Direct routing: only the MAC is rewritten (3).
    DirectRoute,
    /// Cache bypass (4).
    Bypass,
}

/// One direction's TCP sequence adjustment (`struct ip_vs_seq`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Seq {
    /// Sequence number from which `delta` applies.
    pub init_seq: u32,
    /// Delta to add.
    pub delta: u32,
    /// Delta before the last resized packet.
    pub previous_delta: u32,
}

/// The sequence option: incoming and outgoing adjustments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SeqOptions {
    /// Client-to-server direction.
    pub in_seq: Seq,
    /// Server-to-client direction.
    pub out_seq: Seq,
}

/// Persistence-engine data and the engine's name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeData {
    /// Engine name, 1 to 16 bytes (e.g. `sip`).
    pub name: String,
    /// Engine data, 1 to 255 bytes (e.g. a SIP Call-ID).
    pub data: Vec<u8>,
}

/// One connection (or persistence template) entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SyncConn {
    /// IP protocol ([`protocol`]).
    pub protocol: u8,
    /// Client address; the three addresses are of one family, the entry's.
    pub caddr: IpAddr,
    /// Virtual (service) address.
    pub vaddr: IpAddr,
    /// Destination (real server) address.
    pub daddr: IpAddr,
    /// Client port.
    pub cport: u16,
    /// Virtual port.
    pub vport: u16,
    /// Destination port.
    pub dport: u16,
    /// Firewall mark.
    pub fwmark: u32,
    /// Flags other than `TEMPLATE`.
    pub flags: ConnFlags,
    /// Protocol state ([`tcp_state`] for TCP).
    pub state: u16,
    /// Remaining lifetime in seconds (0: the receiver's default for the state).
    pub timeout_s: u32,
    /// A persistence template (flag `TEMPLATE`) rather than a connection.
    pub template: bool,
    /// TCP sequence adjustments (option 1).
    pub seq: Option<SeqOptions>,
    /// Persistence-engine data and name (options 2 and 3).
    pub pe: Option<PeData>,
}

impl SyncConn {
    /// Whether the entry is IPv6 (by its client address; [`encode_batch`] checks the others).
    pub fn is_ipv6(&self) -> bool {
        self.caddr.is_ipv6()
    }

    /// Bytes this entry takes on the wire, options included, padding not.
    pub fn wire_len(&self) -> usize {
        let fixed = if self.is_ipv6() { CONN_V6_LEN } else { CONN_V4_LEN };
        let seq = if self.seq.is_some() { 2 + SEQ_DATA_LEN } else { 0 };
        let pe = self.pe.as_ref().map_or(0, |pe| 2 + pe.data.len() + 2 + pe.name.len());
        fixed + seq + pe
    }
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncMessage {
    /// The sender's sync id.
    pub sync_id: u8,
    /// The entries decoded, in order.
    pub conns: Vec<SyncConn>,
    /// Entries left out while the rest was decoded (the kernel skips them too), with their
    /// 0-based position in the message.
    pub skipped: Vec<(usize, DecodeError)>,
    /// The malformed entry that ended decoding, when one did: it and every entry after it are
    /// dropped (the kernel drops the rest of the message), the ones before are in `conns`.
    pub rest_dropped: Option<(usize, DecodeError)>,
}

impl SyncMessage {
    /// Nothing was dropped.
    pub fn is_clean(&self) -> bool {
        self.skipped.is_empty() && self.rest_dropped.is_none()
    }
}

/// Why a message, or an entry of one, was dropped. One variant per counter reason.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than a header.
    #[error("message of {len} bytes is shorter than its header")]
    Truncated {
        /// Datagram length.
        len: usize,
    },
    /// Longer than any message can be.
    #[error("message of {len} bytes is longer than the {MAX_MESSAGE_LEN} a message can have")]
    Oversized {
        /// Datagram length.
        len: usize,
    },
    /// The size field disagrees with the datagram length.
    #[error("size field {size} but the datagram has {len} bytes")]
    BadSize {
        /// The size field.
        size: u16,
        /// Datagram length.
        len: usize,
    },
    /// A version 0 message (its first byte is the entry count), sent by a kernel with
    /// `sync_version = 0`.
    #[error("version 0 message ({count} entries): only version 1 is supported")]
    Version0 {
        /// The version 0 entry count.
        count: u8,
    },
    /// The version byte is not 1.
    #[error("protocol version {version}, expected {PROTO_VERSION}")]
    WrongVersion {
        /// The version byte.
        version: u8,
    },
    /// The spare field is not 0 (the kernel then reads the message as version 0).
    #[error("spare field {spare:#06x}, expected 0")]
    NonZeroSpare {
        /// The spare field.
        spare: u16,
    },
    /// The message ends within an entry's fixed part.
    #[error("entry truncated: {left} bytes left, an entry needs at least {CONN_V4_LEN}")]
    EntryTruncated {
        /// Bytes left in the message.
        left: usize,
    },
    /// The entry's size field is smaller than its fixed part or runs past the message.
    #[error("entry size {size} does not fit (fixed part {fixed}, {left} bytes left)")]
    BadEntrySize {
        /// The entry's size field.
        size: u16,
        /// The entry type's fixed part.
        fixed: usize,
        /// Bytes left in the message.
        left: usize,
    },
    /// The entry's version nibble is not 0.
    #[error("entry version {version}, expected 0")]
    BadEntryVersion {
        /// The version nibble.
        version: u8,
    },
    /// The entry's type is neither IPv4 nor IPv6.
    #[error("entry type {ty:#04x} unknown")]
    UnknownType {
        /// The type byte.
        ty: u8,
    },
    /// An option header does not fit in the entry.
    #[error("option header truncated at the end of the entry")]
    OptionTruncated,
    /// An option's length is 0 or runs past the entry.
    #[error("option {ty} of length {len} does not fit ({left} bytes left)")]
    BadOptionLength {
        /// The option type.
        ty: u8,
        /// The option length.
        len: u8,
        /// Bytes left in the entry after the option header.
        left: usize,
    },
    /// The sequence option has the wrong length or comes twice.
    #[error("sequence option of length {len} (expected {SEQ_DATA_LEN}) or repeated")]
    BadSeqOption {
        /// The option length.
        len: u8,
    },
    /// The PE data option comes twice.
    #[error("PE data option repeated")]
    BadPeData,
    /// The PE name option is longer than 16 bytes or comes twice.
    #[error("PE name option of length {len} (at most {PE_NAME_MAX_LEN}) or repeated")]
    BadPeName {
        /// The option length.
        len: u8,
    },
    /// A mandatory option of unknown type: the entry is skipped.
    #[error("unknown mandatory option {ty}")]
    UnknownOption {
        /// The option type.
        ty: u8,
    },
    /// PE data without a PE name, or with a name that is not UTF-8: the entry is skipped.
    #[error("PE data without a usable PE name")]
    BadPeParams,
}

impl DecodeError {
    /// A short stable label for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::BadSize { .. } => "bad_size",
            DecodeError::Version0 { .. } => "version0",
            DecodeError::WrongVersion { .. } => "wrong_version",
            DecodeError::NonZeroSpare { .. } => "bad_spare",
            DecodeError::EntryTruncated { .. } => "entry_truncated",
            DecodeError::BadEntrySize { .. } => "bad_entry_size",
            DecodeError::BadEntryVersion { .. } => "bad_entry_version",
            DecodeError::UnknownType { .. } => "unknown_type",
            DecodeError::OptionTruncated => "option_truncated",
            DecodeError::BadOptionLength { .. } => "bad_option_length",
            DecodeError::BadSeqOption { .. } => "bad_seq_option",
            DecodeError::BadPeData => "bad_pe_data",
            DecodeError::BadPeName { .. } => "bad_pe_name",
            DecodeError::UnknownOption { .. } => "unknown_option",
            DecodeError::BadPeParams => "bad_pe_params",
        }
    }

    /// Whether the error is about one entry (the message's other entries may be kept) rather
    /// than the message header.
    pub fn is_entry_error(&self) -> bool {
        !matches!(
            self,
            DecodeError::Truncated { .. }
                | DecodeError::Oversized { .. }
                | DecodeError::BadSize { .. }
                | DecodeError::Version0 { .. }
                | DecodeError::WrongVersion { .. }
                | DecodeError::NonZeroSpare { .. }
        )
    }
}

/// Why entries cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The entry's addresses are not of one family.
    #[error(
        "entry {index}: client {caddr}, virtual {vaddr} and real {daddr} are not of one family"
    )]
    MixedFamily {
        /// Position in the input.
        index: usize,
        /// Client address.
        caddr: IpAddr,
        /// Virtual address.
        vaddr: IpAddr,
        /// Real server address.
        daddr: IpAddr,
    },
    /// PE name empty or longer than 16 bytes.
    #[error("entry {index}: PE name of {len} bytes, must be 1 to {PE_NAME_MAX_LEN}")]
    BadPeName {
        /// Position in the input.
        index: usize,
        /// Name length.
        len: usize,
    },
    /// PE data empty or longer than 255 bytes.
    #[error("entry {index}: PE data of {len} bytes, must be 1 to {PE_DATA_MAX_LEN}")]
    BadPeData {
        /// Position in the input.
        index: usize,
        /// Data length.
        len: usize,
    },
    /// The maximum message length is beyond what the size field can say.
    #[error("maximum message length {max_len} is over {MAX_MESSAGE_LEN}")]
    MaxLenTooLarge {
        /// The requested maximum.
        max_len: usize,
    },
    /// One entry alone does not fit in a message of the maximum length.
    #[error("entry {index} needs a message of {needed} bytes, the maximum is {max_len}")]
    EntryTooLarge {
        /// Position in the input.
        index: usize,
        /// Header plus entry.
        needed: usize,
        /// The requested maximum.
        max_len: usize,
    },
}

/// The kernel's default `sync_maxlen` for an interface MTU: MTU minus IP and UDP headers (the
/// master uses 1500 whatever the MTU; a backup at least 1500).
pub fn max_len_for_mtu(mtu: u16, ipv6: bool) -> usize {
    let headers = if ipv6 { 40 + 8 } else { 20 + 8 };
    usize::from(mtu).saturating_sub(headers)
}

/// Encodes `conns` into as few messages as the kernel would: in order, each message as full as
/// `max_len` bytes and 255 entries allow (the kernel does not check the count itself; with its
/// default limit a message holds at most 40 entries). No entries, no messages.
pub fn encode_batch(
    sync_id: u8,
    conns: &[SyncConn],
    max_len: usize,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    if max_len > MAX_MESSAGE_LEN {
        return Err(EncodeError::MaxLenTooLarge { max_len });
    }
    let mut messages = Vec::new();
    let mut msg: Vec<u8> = Vec::new();
    let mut count = 0usize;
    for (index, conn) in conns.iter().enumerate() {
        check(index, conn)?;
        let len = conn.wire_len();
        if HEADER_LEN + len > max_len {
            return Err(EncodeError::EntryTooLarge { index, needed: HEADER_LEN + len, max_len });
        }
        let pad = msg.len().wrapping_neg() & 3;
        if count > 0 && (msg.len() + pad + len > max_len || count == MAX_CONNS_PER_MESSAGE) {
            messages.push(finish(msg, count));
            msg = Vec::new();
            count = 0;
        }
        if count == 0 {
            msg.extend_from_slice(&[0, sync_id, 0, 0, 0, PROTO_VERSION, 0, 0]);
        } else {
            msg.resize(msg.len() + pad, 0);
        }
        put_conn(&mut msg, conn);
        count += 1;
    }
    if count > 0 {
        messages.push(finish(msg, count));
    }
    Ok(messages)
}

/// The entry's addresses are of one family and its PE fields fit their options.
fn check(index: usize, conn: &SyncConn) -> Result<(), EncodeError> {
    let v6 = conn.is_ipv6();
    if conn.vaddr.is_ipv6() != v6 || conn.daddr.is_ipv6() != v6 {
        return Err(EncodeError::MixedFamily {
            index,
            caddr: conn.caddr,
            vaddr: conn.vaddr,
            daddr: conn.daddr,
        });
    }
    if let Some(pe) = &conn.pe {
        if pe.name.is_empty() || pe.name.len() > PE_NAME_MAX_LEN {
            return Err(EncodeError::BadPeName { index, len: pe.name.len() });
        }
        if pe.data.is_empty() || pe.data.len() > PE_DATA_MAX_LEN {
            return Err(EncodeError::BadPeData { index, len: pe.data.len() });
        }
    }
    Ok(())
}

/// Fills in the header's size and count. The callers keep both in range: size ≤ `max_len` ≤
/// 65535, count ≤ 255.
fn finish(mut msg: Vec<u8>, count: usize) -> Vec<u8> {
    let size = u16::try_from(msg.len()).unwrap_or(u16::MAX).to_be_bytes();
    let count = u8::try_from(count).unwrap_or(u8::MAX);
    if let Some(header) = msg.get_mut(2..5) {
        header.copy_from_slice(&[size[0], size[1], count]);
    }
    msg
}

/// Appends one entry (checked by [`check`]; its length fits the 12-bit size field: at most
/// 72 + 26 + 257 + 18 bytes).
fn put_conn(out: &mut Vec<u8>, conn: &SyncConn) {
    let size = u16::try_from(conn.wire_len()).unwrap_or(SVER_MASK) & SVER_MASK;
    let mut flags = conn.flags.bits() & !ConnFlags::TEMPLATE;
    if conn.template {
        flags |= ConnFlags::TEMPLATE;
    }
    out.push(if conn.is_ipv6() { TYPE_F_INET6 } else { 0 });
    out.push(conn.protocol);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&conn.state.to_be_bytes());
    out.extend_from_slice(&conn.cport.to_be_bytes());
    out.extend_from_slice(&conn.vport.to_be_bytes());
    out.extend_from_slice(&conn.dport.to_be_bytes());
    out.extend_from_slice(&conn.fwmark.to_be_bytes());
    out.extend_from_slice(&conn.timeout_s.to_be_bytes());
    for addr in [conn.caddr, conn.vaddr, conn.daddr] {
        match addr {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
        }
    }
    if let Some(seq) = &conn.seq {
        out.extend_from_slice(&[OPT_SEQ_DATA, SEQ_DATA_LEN as u8]);
        for s in [seq.in_seq, seq.out_seq] {
            out.extend_from_slice(&s.init_seq.to_be_bytes());
            out.extend_from_slice(&s.delta.to_be_bytes());
            out.extend_from_slice(&s.previous_delta.to_be_bytes());
        }
    }
    if let Some(pe) = &conn.pe {
        // Lengths checked: 1..=255 and 1..=16.
        out.extend_from_slice(&[OPT_PE_DATA, pe.data.len() as u8]);
        out.extend_from_slice(&pe.data);
        out.extend_from_slice(&[OPT_PE_NAME, pe.name.len() as u8]);
        out.extend_from_slice(pe.name.as_bytes());
    }
}

/// Decodes one datagram. See the module documentation for what is dropped and how.
pub fn decode(buf: &[u8]) -> Result<SyncMessage, DecodeError> {
    let len = buf.len();
    if len > MAX_MESSAGE_LEN {
        return Err(DecodeError::Oversized { len });
    }
    let mut r = Reader::new(buf);
    let (Some(reserved), Some(sync_id), Some(size)) = (r.u8(), r.u8(), r.u16()) else {
        return Err(DecodeError::Truncated { len });
    };
    if usize::from(size) != len {
        return Err(DecodeError::BadSize { size, len });
    }
    if reserved != 0 {
        return Err(DecodeError::Version0 { count: reserved });
    }
    let (Some(count), Some(version), Some(spare)) = (r.u8(), r.u8(), r.u16()) else {
        return Err(DecodeError::Truncated { len });
    };
    if version != PROTO_VERSION {
        return Err(DecodeError::WrongVersion { version });
    }
    if spare != 0 {
        return Err(DecodeError::NonZeroSpare { spare });
    }
    let mut msg =
        SyncMessage { sync_id, conns: Vec::new(), skipped: Vec::new(), rest_dropped: None };
    let mut at = HEADER_LEN;
    for index in 0..usize::from(count) {
        let rest = buf.get(at..).unwrap_or_default();
        match decode_conn(rest) {
            Ok(Entry { conn, size }) => {
                match conn {
                    Ok(conn) => msg.conns.push(conn),
                    Err(skip) => msg.skipped.push((index, skip)),
                }
                // The next entry starts on the next 4-byte boundary.
                at += (size + 3) & !3;
            }
            Err(e) => {
                msg.rest_dropped = Some((index, e));
                break;
            }
        }
    }
    Ok(msg)
}

/// One well-formed entry.
struct Entry {
    /// The connection, or why the entry is skipped.
    conn: Result<SyncConn, DecodeError>,
    /// The entry's size field.
    size: usize,
}

/// Decodes the entry at the start of `buf`; `Err`: malformed, the rest of the message is dropped.
fn decode_conn(buf: &[u8]) -> Result<Entry, DecodeError> {
    if buf.len() < CONN_V4_LEN {
        return Err(DecodeError::EntryTruncated { left: buf.len() });
    }
    let mut r = Reader::new(buf);
    let ty = r.u8().unwrap_or_default();
    let protocol = r.u8().unwrap_or_default();
    let ver_size = r.u16().unwrap_or_default();
    let size = usize::from(ver_size & SVER_MASK);
    // The kernel checks the size against the message before the version, and the type after.
    if size > buf.len() {
        return Err(DecodeError::BadEntrySize {
            size: ver_size & SVER_MASK,
            fixed: CONN_V4_LEN,
            left: buf.len(),
        });
    }
    let version = (ver_size >> SVER_SHIFT) as u8;
    if version != 0 {
        return Err(DecodeError::BadEntryVersion { version });
    }
    // The kernel tests the IPv6 bit alone, and wants 0 for IPv4.
    let v6 = ty & TYPE_F_INET6 != 0;
    if !v6 && ty != 0 {
        return Err(DecodeError::UnknownType { ty });
    }
    let fixed = if v6 { CONN_V6_LEN } else { CONN_V4_LEN };
    if size < fixed {
        return Err(DecodeError::BadEntrySize {
            size: ver_size & SVER_MASK,
            fixed,
            left: buf.len(),
        });
    }
    let entry = buf.get(..size).unwrap_or_default();
    let mut r = Reader::new(entry);
    r.skip(4);
    let truncated = DecodeError::EntryTruncated { left: buf.len() };
    let fields = (|| {
        let flags = r.u32()?;
        let state = r.u16()?;
        let cport = r.u16()?;
        let vport = r.u16()?;
        let dport = r.u16()?;
        let fwmark = r.u32()?;
        let timeout_s = r.u32()?;
        let (caddr, vaddr, daddr) =
            if v6 { (r.ipv6()?, r.ipv6()?, r.ipv6()?) } else { (r.ipv4()?, r.ipv4()?, r.ipv4()?) };
        Some(SyncConn {
            protocol,
            caddr,
            vaddr,
            daddr,
            cport,
            vport,
            dport,
            fwmark,
            flags: ConnFlags(flags & !ConnFlags::TEMPLATE),
            state,
            timeout_s,
            template: flags & ConnFlags::TEMPLATE != 0,
            seq: None,
            pe: None,
        })
    })();
    let Some(mut conn) = fields else { return Err(truncated) };

    let mut pe_data: Option<&[u8]> = None;
    let mut pe_name: Option<&[u8]> = None;
    let mut skip: Option<DecodeError> = None;
    while r.left() > 0 {
        let (Some(ty), Some(len)) = (r.u8(), r.u8()) else {
            return Err(DecodeError::OptionTruncated);
        };
        let left = r.left();
        let data = match r.take(usize::from(len)) {
            Some(d) if len != 0 => d,
            _ => return Err(DecodeError::BadOptionLength { ty, len, left }),
        };
        match ty & !OPT_F_PARAM {
            OPT_SEQ_DATA => {
                if usize::from(len) != SEQ_DATA_LEN || conn.seq.is_some() {
                    return Err(DecodeError::BadSeqOption { len });
                }
                conn.seq = seq_options(data);
            }
            OPT_PE_DATA => {
                if pe_data.is_some() {
                    return Err(DecodeError::BadPeData);
                }
                pe_data = Some(data);
            }
            OPT_PE_NAME => {
                if usize::from(len) > PE_NAME_MAX_LEN || pe_name.is_some() {
                    return Err(DecodeError::BadPeName { len });
                }
                pe_name = Some(data);
            }
            // The kernel stops looking at a skipped entry's options here.
            _ if ty & OPT_F_PARAM == 0 => {
                skip = Some(DecodeError::UnknownOption { ty });
                break;
            }
            _ => {}
        }
    }
    if let Some(e) = skip {
        return Ok(Entry { conn: Err(e), size });
    }
    // A name without data is ignored, as the kernel does.
    if let Some(data) = pe_data {
        let name = pe_name.and_then(|n| std::str::from_utf8(n).ok());
        let Some(name) = name else {
            return Ok(Entry { conn: Err(DecodeError::BadPeParams), size });
        };
        conn.pe = Some(PeData { name: name.to_owned(), data: data.to_vec() });
    }
    Ok(Entry { conn: Ok(conn), size })
}

fn seq_options(data: &[u8]) -> Option<SeqOptions> {
    let mut r = Reader::new(data);
    let mut seq = || Some(Seq { init_seq: r.u32()?, delta: r.u32()?, previous_delta: r.u32()? });
    Some(SeqOptions { in_seq: seq()?, out_seq: seq()? })
}

/// Reads big-endian fields from a byte slice; `None` past its end, never a panic.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn left(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.buf.split_at_checked(n)?;
        self.buf = tail;
        Some(head)
    }

    fn skip(&mut self, n: usize) {
        let _ = self.take(n);
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    fn ipv4(&mut self) -> Option<IpAddr> {
        self.array::<4>().map(|a| IpAddr::V4(Ipv4Addr::from(a)))
    }

    fn ipv6(&mut self) -> Option<IpAddr> {
        self.array::<16>().map(|a| IpAddr::V6(Ipv6Addr::from(a)))
    }
}

impl fmt::Display for FwdMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FwdMethod::Masq => "masq",
            FwdMethod::LocalNode => "local",
            FwdMethod::Tunnel => "tunnel",
            FwdMethod::DirectRoute => "droute",
            FwdMethod::Bypass => "bypass",
        })
    }
}

#[cfg(test)]
mod tests;
