//! VRRP advertisements on the wire: VRRPv2 (RFC 3768, IPv4) and VRRPv3 (RFC 5798, IPv4 and IPv6),
//! byte-compatible with keepalived 2.2.
//!
//! Receiving is split in two steps because one socket carries every VRID of an interface:
//! [`parse`] checks what holds for any advert (length, version, type, checksum, count) so the
//! caller can find the instance by VRID, then [`Expect::check`] applies that instance's rules
//! (TTL, version, VRID, authentication, advert interval, virtual addresses). [`Expect::decode`]
//! does both.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::net::checksum::{finish, sum_words};

/// IP protocol number of VRRP (both versions).
pub const IPPROTO_VRRP: u8 = 112;
/// IP protocol number of IPsec AH, which VRRPv2 auth type 2 puts in front of the advert.
pub const IPPROTO_AH: u8 = 51;
/// The TTL / hop limit every advert is sent with; RFC 3768/5798 make receivers check it, so an
/// advert cannot have crossed a router.
pub const VRRP_TTL: u8 = 255;
/// The IPv4 multicast group adverts are sent to.
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 multicast group adverts are sent to.
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Length of the VRRPv2 authentication data (and so the longest `auth_pass` keepalived uses).
pub const AUTH_DATA_LEN: usize = 8;
/// The largest VRRPv3 Max Advert Interval: the field has 12 bits.
pub const MAX_V3_INTERVAL_CS: u16 = 0x0fff;

/// Fixed header length shared by both versions (before the addresses).
const HEADER_LEN: usize = 8;
/// The only VRRP packet type.
const TYPE_ADVERTISEMENT: u8 = 1;
/// VRRPv2 auth type codes (RFC 3768 5.3.6).
const AUTH_NONE: u8 = 0;
const AUTH_PASS: u8 = 1;
const AUTH_AH: u8 = 2;

/// The VRRP protocol version an instance speaks; peers must agree on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 3768: IPv4 only, interval in whole seconds, optional simple password.
    V2,
    /// RFC 5798: IPv4 and IPv6, interval in centiseconds, no authentication.
    V3,
}

impl Version {
    /// The number in the advert's version nibble.
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VRRPv{}", self.number())
    }
}

/// The address family of a virtual router: a VRRP instance carries one family only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Bytes one address of this family takes in an advert.
    pub fn addr_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }

    /// The standard VRRP multicast group of this family.
    pub fn multicast_group(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(MULTICAST_V4),
            Family::V6 => IpAddr::V6(MULTICAST_V6),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// VRRPv2 authentication. Only "none" and keepalived's `auth_type PASS` exist here: IPsec AH
/// (type 2) was removed by RFC 3768 and is rejected.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// Type 0: the auth data is sent as zeros and ignored on reception.
    None,
    /// Type 1: a clear-text password, zero padded to 8 bytes.
    Password([u8; AUTH_DATA_LEN]),
}

impl Auth {
    /// A simple-password auth the way keepalived builds it from `auth_pass`: longer passwords are
    /// cut to 8 bytes (keepalived warns and truncates), shorter ones are zero padded.
    pub fn password(pass: &[u8]) -> Auth {
        let mut data = [0u8; AUTH_DATA_LEN];
        let n = pass.len().min(AUTH_DATA_LEN);
        data[..n].copy_from_slice(&pass[..n]);
        Auth::Password(data)
    }

    /// The auth type code on the wire.
    pub fn type_code(&self) -> u8 {
        match self {
            Auth::None => AUTH_NONE,
            Auth::Password(_) => AUTH_PASS,
        }
    }

    /// The 8 bytes of auth data on the wire.
    fn data(&self) -> [u8; AUTH_DATA_LEN] {
        match self {
            Auth::None => [0; AUTH_DATA_LEN],
            Auth::Password(p) => *p,
        }
    }
}

/// Never prints the password: adverts end up in logs.
impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Password(_) => f.write_str("Password(<redacted>)"),
        }
    }
}

/// What differs between the versions, so that an advert cannot mix them (e.g. auth on v3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// VRRPv2: advert interval in whole seconds, plus authentication.
    V2 {
        /// Advertisement interval, seconds.
        advert_int_secs: u8,
        /// Authentication type and data.
        auth: Auth,
    },
    /// VRRPv3: the sender's advert interval in centiseconds (12 bits).
    V3 {
        /// Max Advert Interval, centiseconds (1..=4095).
        max_advert_int_cs: u16,
    },
}

/// One VRRP advertisement, without the checksum (computed on encode, verified on parse).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// Virtual router id (1..=255 in practice; 0 is carried as is).
    pub vrid: u8,
    /// Sender's priority: 0 = master is leaving, 255 = address owner.
    pub priority: u8,
    /// The virtual addresses; all of the packet's family. Their number is the Count field.
    pub addresses: Vec<IpAddr>,
    /// Version-specific fields.
    pub kind: Kind,
}

impl Advert {
    /// The protocol version of this advert.
    pub fn version(&self) -> Version {
        match self.kind {
            Kind::V2 { .. } => Version::V2,
            Kind::V3 { .. } => Version::V3,
        }
    }

    /// The advertised interval in centiseconds, whatever the version (v2 seconds × 100).
    pub fn interval_cs(&self) -> u32 {
        match self.kind {
            Kind::V2 { advert_int_secs, .. } => u32::from(advert_int_secs) * 100,
            Kind::V3 { max_advert_int_cs } => u32::from(max_advert_int_cs),
        }
    }

    /// Length of the VRRP message for this advert in the given family.
    pub fn wire_len(&self, family: Family) -> usize {
        let auth = match self.kind {
            Kind::V2 { .. } => AUTH_DATA_LEN,
            Kind::V3 { .. } => 0,
        };
        HEADER_LEN + self.addresses.len() * family.addr_len() + auth
    }

    /// Encodes the VRRP message (the IP payload) sent from `src` to `dst`. The addresses are
    /// needed because the v3 checksum covers the IP pseudo-header (keepalived validates that
    /// form, so it is the one sent).
    pub fn encode(&self, src: IpAddr, dst: IpAddr) -> Result<Vec<u8>, EncodeError> {
        let family = Family::of(src);
        if Family::of(dst) != family {
            return Err(EncodeError::FamilyMismatch { src, dst });
        }
        if let Some(&addr) = self.addresses.iter().find(|a| Family::of(**a) != family) {
            return Err(EncodeError::AddressFamily { addr, family });
        }
        let count = u8::try_from(self.addresses.len())
            .map_err(|_| EncodeError::TooManyAddresses(self.addresses.len()))?;
        let (byte0, interval) = match &self.kind {
            Kind::V2 { advert_int_secs, .. } => {
                if family == Family::V6 {
                    return Err(EncodeError::V2OverIpv6);
                }
                if *advert_int_secs == 0 {
                    return Err(EncodeError::IntervalOutOfRange(0));
                }
                (0x20 | TYPE_ADVERTISEMENT, [0, *advert_int_secs])
            }
            Kind::V3 { max_advert_int_cs } => {
                if *max_advert_int_cs == 0 || *max_advert_int_cs > MAX_V3_INTERVAL_CS {
                    return Err(EncodeError::IntervalOutOfRange(u32::from(*max_advert_int_cs)));
                }
                (0x30 | TYPE_ADVERTISEMENT, max_advert_int_cs.to_be_bytes())
            }
        };
        let mut out = Vec::with_capacity(self.wire_len(family));
        out.extend_from_slice(&[byte0, self.vrid, self.priority, count]);
        match &self.kind {
            Kind::V2 { auth, .. } => out.extend_from_slice(&[auth.type_code(), interval[1]]),
            Kind::V3 { .. } => out.extend_from_slice(&interval),
        }
        out.extend_from_slice(&[0, 0]);
        for addr in &self.addresses {
            match addr {
                IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
            }
        }
        let form = match &self.kind {
            Kind::V2 { auth, .. } => {
                out.extend_from_slice(&auth.data());
                ChecksumForm::Plain
            }
            Kind::V3 { .. } => ChecksumForm::PseudoHeader,
        };
        let sum = checksum(&out, src, dst, form);
        out[6..8].copy_from_slice(&sum.to_be_bytes());
        Ok(out)
    }
}

/// Which bytes a received checksum turned out to cover. keepalived and other routers differ for
/// VRRPv3 over IPv4, so several forms are accepted; the one found is reported for diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChecksumForm {
    /// The VRRP message only: VRRPv2, and some old VRRPv3/IPv4 implementations.
    Plain,
    /// RFC 5798: with the IPv4/IPv6 pseudo-header of the real source and destination.
    PseudoHeader,
    /// VRRPv3/IPv4 unicast with the multicast group in the pseudo-header instead of the real
    /// destination: what keepalived before 2.0.11 sent (its `unicast_chksum_compat`).
    PseudoHeaderMulticastDst,
}

/// The IP-level facts of a received advert that VRRP validation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpMeta {
    /// Source address: the sender's primary address, compared on equal priority.
    pub src: IpAddr,
    /// Destination: the multicast group or our unicast address.
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
}

/// A parsed advert and how its checksum was formed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The advert.
    pub advert: Advert,
    /// The checksum as received.
    pub checksum: u16,
    /// Which form of checksum matched.
    pub checksum_form: ChecksumForm,
}

/// Why a received advert was rejected. One variant per reason so the caller can count them by
/// [`PacketError::reason`] and rate-limit the log lines.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The IP source and destination are of different families.
    #[error("source {src} and destination {dst} are of different address families")]
    FamilyMismatch {
        /// Source address.
        src: IpAddr,
        /// Destination address.
        dst: IpAddr,
    },
    /// Shorter than the fixed header.
    #[error("truncated advert: {len} bytes, the header alone is {HEADER_LEN}")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// The version nibble is neither 2 nor 3.
    #[error("unknown VRRP version {0}")]
    UnknownVersion(u8),
    /// The type nibble is not 1 (advertisement), the only type defined.
    #[error("VRRP packet type {0} is not an advertisement")]
    NotAdvertisement(u8),
    /// VRRPv2 is IPv4-only.
    #[error("VRRPv2 advert over IPv6")]
    V2OverIpv6,
    /// The Count field disagrees with the bytes received.
    #[error("{count} addresses need a {expected}-byte advert, got {actual} bytes")]
    LengthMismatch {
        /// Count field.
        count: u8,
        /// Length the count implies.
        expected: usize,
        /// Length received.
        actual: usize,
    },
    /// No accepted checksum form matches.
    #[error("bad checksum {received:#06x}")]
    BadChecksum {
        /// The checksum field as received.
        received: u16,
    },
    /// VRRPv2 auth type 2 (IPsec AH) is not supported.
    #[error("VRRPv2 IPsec AH authentication is not supported")]
    AuthAhUnsupported,
    /// A VRRPv2 auth type that does not exist.
    #[error("unknown VRRPv2 auth type {0}")]
    UnknownAuthType(u8),
    /// An advert interval of zero would make every backup time out at once.
    #[error("advert interval is zero")]
    ZeroInterval,
    /// Multicast adverts must arrive with TTL/hop limit 255 (RFC 3768 7.1, RFC 5798 7.1).
    #[error("TTL/hop limit {ttl}, must be at least {min}")]
    BadTtl {
        /// TTL received.
        ttl: u8,
        /// Lowest TTL accepted.
        min: u8,
    },
    /// The instance speaks another version.
    #[error("VRRP version {got}, this instance runs version {want}")]
    WrongVersion {
        /// Version received.
        got: u8,
        /// Our version.
        want: u8,
    },
    /// The advert is for another virtual router.
    #[error("VRID {got}, this instance is VRID {want}")]
    VridMismatch {
        /// VRID received.
        got: u8,
        /// Our VRID.
        want: u8,
    },
    /// VRRPv2 auth types differ.
    #[error("VRRPv2 auth type {got}, this instance uses {want}")]
    AuthTypeMismatch {
        /// Auth type received.
        got: u8,
        /// Our auth type.
        want: u8,
    },
    /// VRRPv2 simple password differs.
    #[error("VRRPv2 password mismatch")]
    AuthFailed,
    /// VRRPv2 interval differs from ours: RFC 3768 7.1 says discard (keepalived drops and logs,
    /// to keep two routers with different timers from both being master).
    #[error("VRRPv2 advert interval {got} s, this instance uses {want} s")]
    IntervalMismatch {
        /// Interval received, seconds.
        got: u32,
        /// Our interval, seconds.
        want: u32,
    },
    /// Multicast advert received by a unicast-peer instance.
    #[error("multicast advert to {dst}, this instance uses unicast peers")]
    ExpectedUnicast {
        /// Destination received.
        dst: IpAddr,
    },
    /// Unicast advert received by a multicast instance.
    #[error("unicast advert to {dst}, this instance uses multicast")]
    ExpectedMulticast {
        /// Destination received.
        dst: IpAddr,
    },
    /// The advert carries another number of virtual addresses than we have: another virtual
    /// router reusing our VRID (keepalived discards it and counts an address list error).
    #[error("the advert carries {got} virtual addresses, this instance has {want}")]
    AddressCountMismatch {
        /// Count received.
        got: usize,
        /// Our count.
        want: usize,
    },
    /// Same count, but one of our virtual addresses is not in the advert (keepalived: "ip
    /// address associated with VRID not present in advert").
    #[error("virtual address {missing} of this instance is not in the advert")]
    AddressListMismatch {
        /// The first of ours missing.
        missing: IpAddr,
    },
}

impl PacketError {
    /// A short stable label for counters (e.g. a metrics label per reason).
    pub fn reason(&self) -> &'static str {
        match self {
            PacketError::FamilyMismatch { .. } => "family_mismatch",
            PacketError::Truncated { .. } => "truncated",
            PacketError::UnknownVersion(_) => "unknown_version",
            PacketError::NotAdvertisement(_) => "bad_type",
            PacketError::V2OverIpv6 => "v2_over_ipv6",
            PacketError::LengthMismatch { .. } => "length_mismatch",
            PacketError::BadChecksum { .. } => "bad_checksum",
            PacketError::AuthAhUnsupported => "auth_ah_unsupported",
            PacketError::UnknownAuthType(_) => "unknown_auth_type",
            PacketError::ZeroInterval => "zero_interval",
            PacketError::BadTtl { .. } => "bad_ttl",
            PacketError::WrongVersion { .. } => "wrong_version",
            PacketError::VridMismatch { .. } => "vrid_mismatch",
            PacketError::AuthTypeMismatch { .. } => "auth_type_mismatch",
            PacketError::AuthFailed => "auth_failed",
            PacketError::IntervalMismatch { .. } => "interval_mismatch",
            PacketError::ExpectedUnicast { .. } => "expected_unicast",
            PacketError::ExpectedMulticast { .. } => "expected_multicast",
            PacketError::AddressCountMismatch { .. } => "address_count_mismatch",
            PacketError::AddressListMismatch { .. } => "address_list_mismatch",
        }
    }
}

/// Why an advert cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Source and destination must be of one family.
    #[error("source {src} and destination {dst} are of different address families")]
    FamilyMismatch {
        /// Source address.
        src: IpAddr,
        /// Destination address.
        dst: IpAddr,
    },
    /// A virtual address of the other family.
    #[error("virtual address {addr} is not {family}")]
    AddressFamily {
        /// The offending address.
        addr: IpAddr,
        /// The packet's family.
        family: Family,
    },
    /// The Count field is one byte.
    #[error("{0} virtual addresses, an advert carries at most 255")]
    TooManyAddresses(usize),
    /// VRRPv2 is IPv4-only.
    #[error("VRRPv2 cannot be sent over IPv6")]
    V2OverIpv6,
    /// v2: 1..=255 s; v3: 1..=4095 cs.
    #[error("advert interval {0} out of range")]
    IntervalOutOfRange(u32),
}

/// Whether [`Expect::check_with`] compares the advert's virtual addresses with ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressCheck {
    /// A differing list rejects the advert (keepalived's default).
    Enforce,
    /// A differing list is only a [`Note`]: keepalived's `skip_check_adv_addr` for adverts from
    /// the master a backup already follows.
    Skip,
}

/// Something odd about an accepted advert that keepalived logs but does not act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// VRRPv3 interval differs from ours (RFC 5798: backups adopt the master's; keepalived logs).
    IntervalMismatch {
        /// Interval received, centiseconds.
        got_cs: u16,
        /// Our interval, centiseconds.
        want_cs: u16,
    },
    /// The advert carries another number of virtual addresses than we have (only with
    /// [`AddressCheck::Skip`]).
    AddressCountMismatch {
        /// Count received.
        got: usize,
        /// Our count.
        want: usize,
    },
    /// Same count, but some of our virtual addresses are missing from the advert (only with
    /// [`AddressCheck::Skip`]).
    AddressListMismatch,
}

/// Parses a VRRP message (the IP payload, delimited by the IP header's length fields so Ethernet
/// padding is not included) and checks what does not depend on the receiving instance.
pub fn parse(payload: &[u8], ip: &IpMeta) -> Result<Received, PacketError> {
    let family = Family::of(ip.src);
    if Family::of(ip.dst) != family {
        return Err(PacketError::FamilyMismatch { src: ip.src, dst: ip.dst });
    }
    let &[byte0, vrid, priority, count, b4, b5, c0, c1, ..] = payload else {
        return Err(PacketError::Truncated { len: payload.len() });
    };
    let version = match byte0 >> 4 {
        2 => Version::V2,
        3 => Version::V3,
        other => return Err(PacketError::UnknownVersion(other)),
    };
    if byte0 & 0x0f != TYPE_ADVERTISEMENT {
        return Err(PacketError::NotAdvertisement(byte0 & 0x0f));
    }
    if version == Version::V2 && family == Family::V6 {
        return Err(PacketError::V2OverIpv6);
    }
    let auth_len = if version == Version::V2 { AUTH_DATA_LEN } else { 0 };
    let expected = HEADER_LEN + usize::from(count) * family.addr_len() + auth_len;
    if payload.len() != expected {
        return Err(PacketError::LengthMismatch { count, expected, actual: payload.len() });
    }
    let received = u16::from_be_bytes([c0, c1]);
    let checksum_form =
        verify_checksum(payload, version, ip).ok_or(PacketError::BadChecksum { received })?;

    let addr_bytes = &payload[HEADER_LEN..expected - auth_len];
    let addresses = match family {
        Family::V4 => addr_bytes
            .chunks_exact(4)
            .map(|c| IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])))
            .collect(),
        Family::V6 => addr_bytes
            .chunks_exact(16)
            .map(|c| {
                let mut o = [0u8; 16];
                o.copy_from_slice(c);
                IpAddr::V6(Ipv6Addr::from(o))
            })
            .collect(),
    };
    let kind = match version {
        Version::V2 => {
            let auth = match b4 {
                AUTH_NONE => Auth::None,
                AUTH_PASS => {
                    let mut data = [0u8; AUTH_DATA_LEN];
                    data.copy_from_slice(&payload[expected - AUTH_DATA_LEN..]);
                    Auth::Password(data)
                }
                AUTH_AH => return Err(PacketError::AuthAhUnsupported),
                other => return Err(PacketError::UnknownAuthType(other)),
            };
            if b5 == 0 {
                return Err(PacketError::ZeroInterval);
            }
            Kind::V2 { advert_int_secs: b5, auth }
        }
        Version::V3 => {
            // The top 4 bits are reserved: sent as zero, ignored on reception (RFC 5798 5.2.7).
            let cs = u16::from_be_bytes([b4, b5]) & MAX_V3_INTERVAL_CS;
            if cs == 0 {
                return Err(PacketError::ZeroInterval);
            }
            Kind::V3 { max_advert_int_cs: cs }
        }
    };
    Ok(Received {
        advert: Advert { vrid, priority, addresses, kind },
        checksum: received,
        checksum_form,
    })
}

/// What one instance accepts: the per-instance half of the RFC's receive checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// Our protocol version.
    pub version: Version,
    /// Our VRID.
    pub vrid: u8,
    /// Our VRRPv2 authentication (ignored for v3).
    pub auth: Auth,
    /// Our advert interval, centiseconds (v2: a multiple of 100).
    pub advert_interval_cs: u16,
    /// True when the instance uses unicast peers instead of the multicast group.
    pub unicast: bool,
    /// Lowest TTL accepted on unicast adverts. 255 is the RFC rule; keepalived skips the check
    /// for unicast so routed unicast peers work, which a lower value allows here.
    pub min_unicast_ttl: u8,
    /// Our virtual addresses: an advert must carry exactly these (in any order), unless
    /// [`AddressCheck::Skip`] makes a difference a [`Note`].
    pub addresses: Vec<IpAddr>,
}

impl Expect {
    /// [`parse`], then [`Expect::check`].
    pub fn decode(
        &self,
        payload: &[u8],
        ip: &IpMeta,
    ) -> Result<(Received, Vec<Note>), PacketError> {
        let rx = parse(payload, ip)?;
        let notes = self.check(&rx, ip)?;
        Ok((rx, notes))
    }

    /// Applies this instance's receive rules to a parsed advert, the address list included.
    /// Returns the oddities keepalived logs without discarding the advert.
    pub fn check(&self, rx: &Received, ip: &IpMeta) -> Result<Vec<Note>, PacketError> {
        self.check_with(rx, ip, AddressCheck::Enforce)
    }

    /// [`Expect::check`], with the address list compared as `addresses` says.
    pub fn check_with(
        &self,
        rx: &Received,
        ip: &IpMeta,
        addresses: AddressCheck,
    ) -> Result<Vec<Note>, PacketError> {
        let adv = &rx.advert;
        let multicast = ip.dst.is_multicast();
        let min_ttl = if multicast { VRRP_TTL } else { self.min_unicast_ttl };
        if ip.ttl < min_ttl {
            return Err(PacketError::BadTtl { ttl: ip.ttl, min: min_ttl });
        }
        if adv.version() != self.version {
            return Err(PacketError::WrongVersion {
                got: adv.version().number(),
                want: self.version.number(),
            });
        }
        if adv.vrid != self.vrid {
            return Err(PacketError::VridMismatch { got: adv.vrid, want: self.vrid });
        }
        if multicast && self.unicast {
            return Err(PacketError::ExpectedUnicast { dst: ip.dst });
        }
        if !multicast && !self.unicast {
            return Err(PacketError::ExpectedMulticast { dst: ip.dst });
        }
        let mut notes = Vec::new();
        match &adv.kind {
            Kind::V2 { advert_int_secs, auth } => {
                if auth.type_code() != self.auth.type_code() {
                    return Err(PacketError::AuthTypeMismatch {
                        got: auth.type_code(),
                        want: self.auth.type_code(),
                    });
                }
                if let (Auth::Password(got), Auth::Password(want)) = (auth, &self.auth)
                    && !constant_time_eq(got, want)
                {
                    return Err(PacketError::AuthFailed);
                }
                let want = u32::from(self.advert_interval_cs) / 100;
                if u32::from(*advert_int_secs) != want
                    || u32::from(self.advert_interval_cs) % 100 != 0
                {
                    return Err(PacketError::IntervalMismatch {
                        got: u32::from(*advert_int_secs),
                        want,
                    });
                }
            }
            Kind::V3 { max_advert_int_cs } => {
                if *max_advert_int_cs != self.advert_interval_cs {
                    notes.push(Note::IntervalMismatch {
                        got_cs: *max_advert_int_cs,
                        want_cs: self.advert_interval_cs,
                    });
                }
            }
        }
        // Our addresses are distinct, so with equal counts "all of ours are in it" means the
        // lists hold the same addresses.
        let (got, want) = (adv.addresses.len(), self.addresses.len());
        let missing = self.addresses.iter().find(|a| !adv.addresses.contains(a));
        match (addresses, got != want, missing) {
            (AddressCheck::Enforce, true, _) => {
                return Err(PacketError::AddressCountMismatch { got, want });
            }
            (AddressCheck::Enforce, false, Some(&missing)) => {
                return Err(PacketError::AddressListMismatch { missing });
            }
            (AddressCheck::Skip, true, _) => notes.push(Note::AddressCountMismatch { got, want }),
            (AddressCheck::Skip, false, Some(_)) => notes.push(Note::AddressListMismatch),
            (_, false, None) => {}
        }
        Ok(notes)
    }
}

/// Compares passwords without an early exit, so timing does not reveal how much matched.
fn constant_time_eq(a: &[u8; AUTH_DATA_LEN], b: &[u8; AUTH_DATA_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Finds the checksum form that verifies, trying the expected one first.
fn verify_checksum(payload: &[u8], version: Version, ip: &IpMeta) -> Option<ChecksumForm> {
    let candidates: &[ChecksumForm] = match (version, ip.dst) {
        (Version::V2, _) => &[ChecksumForm::Plain],
        (Version::V3, IpAddr::V6(_)) => &[ChecksumForm::PseudoHeader],
        (Version::V3, IpAddr::V4(dst)) if dst.is_multicast() => {
            &[ChecksumForm::PseudoHeader, ChecksumForm::Plain]
        }
        (Version::V3, IpAddr::V4(_)) => &[
            ChecksumForm::PseudoHeader,
            ChecksumForm::PseudoHeaderMulticastDst,
            ChecksumForm::Plain,
        ],
    };
    // A message that includes its correct checksum sums to zero.
    candidates.iter().copied().find(|form| checksum(payload, ip.src, ip.dst, *form) == 0)
}

/// The Internet checksum (RFC 1071) of a VRRP message in the given form. With the checksum field
/// zeroed this is the value to send; over a received message it is 0 when the message is intact.
pub fn checksum(msg: &[u8], src: IpAddr, dst: IpAddr, form: ChecksumForm) -> u16 {
    let mut acc: u64 = 0;
    let len = msg.len() as u64;
    match (form, src, dst) {
        (ChecksumForm::Plain, _, _) => {}
        (ChecksumForm::PseudoHeader, IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = pseudo_v4(s, d, len);
        }
        (ChecksumForm::PseudoHeaderMulticastDst, IpAddr::V4(s), _) => {
            acc = pseudo_v4(s, MULTICAST_V4, len);
        }
        (ChecksumForm::PseudoHeader | ChecksumForm::PseudoHeaderMulticastDst, s, d) => {
            acc = sum_words(&ip_octets(s), 0);
            acc = sum_words(&ip_octets(d), acc);
            acc += (len >> 16) + (len & 0xffff) + u64::from(IPPROTO_VRRP);
        }
    }
    finish(sum_words(msg, acc))
}

/// Sum of the IPv4 pseudo-header words: src, dst, zero + protocol, VRRP length.
fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, len: u64) -> u64 {
    let acc = sum_words(&src.octets(), 0);
    let acc = sum_words(&dst.octets(), acc);
    acc + u64::from(IPPROTO_VRRP) + len
}

/// The octets of an address, for the pseudo-header.
fn ip_octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

#[cfg(test)]
mod tests;
