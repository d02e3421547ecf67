//! The wire layer: requests to bytes, reply bytes to the typed model. Pure functions, so the whole
//! message layout is pinned by byte fixtures without a kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_packet_core::{
    DecodeError, Emitable, NLA_HEADER_SIZE, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP,
    NLM_F_REQUEST, NLMSG_ALIGNTO, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    Nla, NlaBuffer, NlasIterator, ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};

use super::{
    IpvsError,
    model::{
        Destination, DestinationEntry, Family, Forward, Info, Protocol, Service, ServiceEntry,
        ServiceFlags, ServiceKey, Stats, SyncDaemon, SyncRole, TunnelEncap,
    },
    uapi::{self, cmd, cmd_attr, dest, info, stats, svc},
};

/// One attribute we send. IPVS wants ports in network order inside plain `u16` attributes and
/// addresses as 16-byte `nf_inet_addr` unions, hence the dedicated variants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Attr {
    U8(u16, u8),
    U16(u16, u16),
    U32(u16, u32),
    Be16(u16, u16),
    Bytes(u16, Vec<u8>),
    /// NUL-terminated (`NLA_NUL_STRING`).
    Str(u16, String),
    Nested(u16, Vec<Attr>),
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Attr::U8(..) => 1,
            Attr::U16(..) | Attr::Be16(..) => 2,
            Attr::U32(..) => 4,
            Attr::Bytes(_, v) => v.len(),
            Attr::Str(_, s) => s.len() + 1,
            Attr::Nested(_, inner) => inner.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Attr::U8(k, _)
            | Attr::U16(k, _)
            | Attr::U32(k, _)
            | Attr::Be16(k, _)
            | Attr::Bytes(k, _)
            | Attr::Str(k, _) => *k,
            Attr::Nested(k, _) => *k | netlink_packet_core::NLA_F_NESTED,
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Attr::U8(_, v) => buf[0] = *v,
            Attr::U16(_, v) => buf[..2].copy_from_slice(&v.to_ne_bytes()),
            Attr::Be16(_, v) => buf[..2].copy_from_slice(&v.to_be_bytes()),
            Attr::U32(_, v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            Attr::Bytes(_, v) => buf[..v.len()].copy_from_slice(v),
            Attr::Str(_, s) => {
                buf[..s.len()].copy_from_slice(s.as_bytes());
                buf[s.len()] = 0;
            }
            Attr::Nested(_, inner) => inner.as_slice().emit(buf),
        }
    }
}

/// The generic netlink payload of a request: a command and its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IpvsRequest {
    pub cmd: u8,
    pub attrs: Vec<Attr>,
}

impl GenlFamily for IpvsRequest {
    fn family_name() -> &'static str {
        uapi::FAMILY_NAME
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        uapi::FAMILY_VERSION
    }
}

impl Emitable for IpvsRequest {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

/// The generic netlink payload of a reply, attributes left as bytes for the typed decoders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IpvsReply {
    pub cmd: u8,
    pub attrs: Vec<u8>,
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsReply {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        Ok(IpvsReply { cmd: header.cmd, attrs: buf.to_vec() })
    }
}

/// Every operation the client performs. There is deliberately no flush: we never remove rules
/// that someone else (keepalived, an operator) put there.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    GetInfo,
    /// Dump of all services.
    GetServices,
    GetService(&'a ServiceKey),
    NewService(&'a Service),
    SetService(&'a Service),
    DelService(&'a ServiceKey),
    /// Dump of one service's destinations.
    GetDestinations(&'a ServiceKey),
    NewDestination(&'a ServiceKey, &'a Destination),
    SetDestination(&'a ServiceKey, &'a Destination),
    DelDestination(&'a ServiceKey, SocketAddr),
    /// Start the kernel's connection sync daemon (`ipvsadm --start-daemon`, keepalived's
    /// `lvs_sync_daemon`).
    NewDaemon(&'a SyncDaemon),
    /// Stop the sync daemon of a role (`ipvsadm --stop-daemon`).
    DelDaemon(SyncRole),
}

impl Request<'_> {
    pub fn command(&self) -> u8 {
        match self {
            Request::GetInfo => cmd::GET_INFO,
            Request::GetServices | Request::GetService(_) => cmd::GET_SERVICE,
            Request::NewService(_) => cmd::NEW_SERVICE,
            Request::SetService(_) => cmd::SET_SERVICE,
            Request::DelService(_) => cmd::DEL_SERVICE,
            Request::GetDestinations(_) => cmd::GET_DEST,
            Request::NewDestination(..) => cmd::NEW_DEST,
            Request::SetDestination(..) => cmd::SET_DEST,
            Request::DelDestination(..) => cmd::DEL_DEST,
            Request::NewDaemon(_) => cmd::NEW_DAEMON,
            Request::DelDaemon(_) => cmd::DEL_DAEMON,
        }
    }

    /// Dumps end with `NLMSG_DONE`; everything else asks for an ACK, which then ends the exchange.
    pub fn is_dump(&self) -> bool {
        matches!(self, Request::GetServices | Request::GetDestinations(_))
    }

    /// A short name for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::GetInfo => "IPVS get info",
            Request::GetServices => "IPVS list services",
            Request::GetService(_) => "IPVS get service",
            Request::NewService(_) => "IPVS add service",
            Request::SetService(_) => "IPVS edit service",
            Request::DelService(_) => "IPVS delete service",
            Request::GetDestinations(_) => "IPVS list destinations",
            Request::NewDestination(..) => "IPVS add destination",
            Request::SetDestination(..) => "IPVS edit destination",
            Request::DelDestination(..) => "IPVS delete destination",
            Request::NewDaemon(_) => "IPVS start sync daemon",
            Request::DelDaemon(_) => "IPVS stop sync daemon",
        }
    }

    pub(crate) fn attributes(&self) -> Result<Vec<Attr>, IpvsError> {
        Ok(match self {
            Request::GetInfo | Request::GetServices => Vec::new(),
            Request::GetService(key) | Request::DelService(key) | Request::GetDestinations(key) => {
                vec![Attr::Nested(cmd_attr::SERVICE, key_attrs(key))]
            }
            Request::NewService(s) | Request::SetService(s) => {
                vec![Attr::Nested(cmd_attr::SERVICE, service_attrs(s)?)]
            }
            Request::NewDestination(key, d) | Request::SetDestination(key, d) => vec![
                Attr::Nested(cmd_attr::SERVICE, key_attrs(key)),
                Attr::Nested(cmd_attr::DEST, destination_attrs(d)?),
            ],
            Request::DelDestination(key, real) => vec![
                Attr::Nested(cmd_attr::SERVICE, key_attrs(key)),
                Attr::Nested(cmd_attr::DEST, destination_key_attrs(real.ip(), real.port())),
            ],
            Request::NewDaemon(d) => vec![Attr::Nested(cmd_attr::DAEMON, daemon_attrs(d)?)],
            Request::DelDaemon(role) => vec![Attr::Nested(
                cmd_attr::DAEMON,
                vec![Attr::U32(uapi::daemon::STATE, role.wire())],
            )],
        })
    }

    /// The whole netlink message for the resolved family id.
    pub fn encode(&self, family_id: u16, seq: u32) -> Result<Vec<u8>, IpvsError> {
        let payload = IpvsRequest { cmd: self.command(), attrs: self.attributes()? };
        let mut genl = GenlMessage::from_payload(payload);
        genl.set_resolved_family_id(family_id);
        let mut msg = NetlinkMessage::from(genl);
        msg.header.flags = NLM_F_REQUEST | if self.is_dump() { NLM_F_DUMP } else { NLM_F_ACK };
        msg.header.sequence_number = seq;
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        Ok(buf)
    }
}

/// The daemon's settings as ipvsadm and keepalived send them: port and maximum length in host
/// order, the group as the address's own bytes.
fn daemon_attrs(d: &SyncDaemon) -> Result<Vec<Attr>, IpvsError> {
    use uapi::daemon;
    let mut attrs = vec![
        Attr::U32(daemon::STATE, d.role.wire()),
        Attr::Str(daemon::MCAST_IFN, checked_name("sync interface", &d.interface)?),
        Attr::U32(daemon::SYNC_ID, u32::from(d.sync_id)),
        Attr::U16(daemon::SYNC_MAXLEN, d.max_len),
    ];
    attrs.push(match d.group {
        IpAddr::V4(g) => Attr::Bytes(daemon::MCAST_GROUP, g.octets().to_vec()),
        IpAddr::V6(g) => Attr::Bytes(daemon::MCAST_GROUP6, g.octets().to_vec()),
    });
    attrs.push(Attr::U16(daemon::MCAST_PORT, d.port));
    attrs.push(Attr::U8(daemon::MCAST_TTL, d.ttl));
    Ok(attrs)
}

fn addr_bytes(addr: IpAddr) -> Vec<u8> {
    // `union nf_inet_addr`: IPv4 in the first four bytes, the rest zero.
    let mut b = vec![0; 16];
    match addr {
        IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b.copy_from_slice(&a.octets()),
    }
    b
}

fn key_attrs(key: &ServiceKey) -> Vec<Attr> {
    let mut out = vec![Attr::U16(svc::AF, key.family().raw())];
    match key {
        ServiceKey::Addr { protocol, addr, port } => {
            out.push(Attr::U16(svc::PROTOCOL, protocol.raw()));
            out.push(Attr::Bytes(svc::ADDR, addr_bytes(*addr)));
            out.push(Attr::Be16(svc::PORT, *port));
        }
        ServiceKey::Fwmark { mark, .. } => out.push(Attr::U32(svc::FWMARK, *mark)),
    }
    out
}

/// A scheduler or persistence-engine name: the kernel copies it into a `char[16]`.
fn checked_name(what: &'static str, name: &str) -> Result<String, IpvsError> {
    if name.is_empty() || name.len() >= uapi::NAME_MAXLEN || name.contains('\0') {
        return Err(IpvsError::Invalid {
            what,
            detail: format!("{name:?} must be 1 to {} bytes", uapi::NAME_MAXLEN - 1),
        });
    }
    Ok(name.to_owned())
}

/// The persistence netmask on the wire: a big-endian mask for IPv4, a prefix length for IPv6.
fn netmask_wire(family: Family, prefix: u8) -> Result<u32, IpvsError> {
    if prefix > family.max_prefix() || (prefix == 0 && family == Family::Inet6) {
        return Err(IpvsError::Invalid {
            what: "persistence netmask",
            detail: format!("/{prefix} for {family:?}"),
        });
    }
    Ok(match family {
        Family::Inet => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            // Stored as the mask's network-order bytes read natively, as `nla_get_be32` expects.
            u32::from_ne_bytes(mask.to_be_bytes())
        }
        Family::Inet6 => u32::from(prefix),
    })
}

fn netmask_prefix(family: Family, wire: u32) -> u8 {
    match family {
        Family::Inet => u32::from_be_bytes(wire.to_ne_bytes()).leading_ones() as u8,
        Family::Inet6 => wire.min(128) as u8,
    }
}

fn service_attrs(s: &Service) -> Result<Vec<Attr>, IpvsError> {
    let mut out = key_attrs(&s.key);
    out.push(Attr::Str(svc::SCHED_NAME, checked_name("scheduler", &s.scheduler)?));
    if let Some(pe) = &s.pe_name {
        out.push(Attr::Str(svc::PE_NAME, checked_name("persistence engine", pe)?));
    }
    // `struct ip_vs_flags { flags, mask }`: an all-ones mask makes the service's flags exactly ours.
    let mut flags = s.flags.bits().to_ne_bytes().to_vec();
    flags.extend_from_slice(&u32::MAX.to_ne_bytes());
    out.push(Attr::Bytes(svc::FLAGS, flags));
    out.push(Attr::U32(svc::TIMEOUT, s.timeout));
    out.push(Attr::U32(svc::NETMASK, netmask_wire(s.key.family(), s.netmask)?));
    Ok(out)
}

fn destination_key_attrs(addr: IpAddr, port: u16) -> Vec<Attr> {
    vec![
        Attr::Bytes(dest::ADDR, addr_bytes(addr)),
        Attr::Be16(dest::PORT, port),
        Attr::U16(dest::ADDR_FAMILY, Family::of(addr).raw()),
    ]
}

fn destination_attrs(d: &Destination) -> Result<Vec<Attr>, IpvsError> {
    let weight = i32::try_from(d.weight).map_err(|_| IpvsError::Invalid {
        what: "weight",
        detail: format!("{} is above {}", d.weight, i32::MAX),
    })?;
    let mut out = destination_key_attrs(d.addr, d.port);
    let fwd = match d.forward {
        Forward::Route => uapi::CONN_F_DROUTE,
        Forward::Masquerade => uapi::CONN_F_MASQ,
        Forward::Local => uapi::CONN_F_LOCALNODE,
        Forward::Tunnel { .. } => uapi::CONN_F_TUNNEL,
    };
    out.push(Attr::U32(dest::FWD_METHOD, fwd));
    out.push(Attr::U32(dest::WEIGHT, weight as u32));
    out.push(Attr::U32(dest::U_THRESH, d.upper_threshold));
    out.push(Attr::U32(dest::L_THRESH, d.lower_threshold));
    if let Forward::Tunnel { encap, csum, remote_csum } = d.forward {
        let (kind, port) = match encap {
            TunnelEncap::Ipip => (uapi::TUNNEL_TYPE_IPIP, 0),
            TunnelEncap::Gue { port: 0 } => {
                return Err(IpvsError::Invalid {
                    what: "tunnel",
                    detail: "GUE needs a destination UDP port".into(),
                });
            }
            TunnelEncap::Gue { port } => (uapi::TUNNEL_TYPE_GUE, port),
            TunnelEncap::Gre => (uapi::TUNNEL_TYPE_GRE, 0),
        };
        let mut flags = 0;
        if csum {
            flags |= uapi::TUNNEL_ENCAP_FLAG_CSUM;
        }
        if remote_csum {
            flags |= uapi::TUNNEL_ENCAP_FLAG_REMCSUM;
        }
        out.push(Attr::U8(dest::TUN_TYPE, kind));
        out.push(Attr::Be16(dest::TUN_PORT, port));
        out.push(Attr::U16(dest::TUN_FLAGS, flags));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Decoding

fn malformed(what: impl Into<String>) -> IpvsError {
    IpvsError::Decode(what.into())
}

/// The attributes of `buf` as (kind, value), type flags (nested, byte order) masked off.
fn attrs(buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), IpvsError>> {
    NlasIterator::new(buf).map(|nla| {
        // `new_checked` (inside the iterator) guarantees header <= length <= buffer.
        let nla: NlaBuffer<&[u8]> = nla.map_err(|e| malformed(format!("attribute: {e}")))?;
        let (kind, len) = (nla.kind(), usize::from(nla.length()));
        let raw: &[u8] = nla.into_inner();
        Ok((kind, &raw[NLA_HEADER_SIZE..len]))
    })
}

fn fixed<const N: usize>(what: &str, v: &[u8]) -> Result<[u8; N], IpvsError> {
    v.get(..N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed(format!("{what}: {} bytes, need {N}", v.len())))
}

fn get_u8(what: &str, v: &[u8]) -> Result<u8, IpvsError> {
    Ok(fixed::<1>(what, v)?[0])
}

fn get_u16(what: &str, v: &[u8]) -> Result<u16, IpvsError> {
    Ok(u16::from_ne_bytes(fixed(what, v)?))
}

fn get_be16(what: &str, v: &[u8]) -> Result<u16, IpvsError> {
    Ok(u16::from_be_bytes(fixed(what, v)?))
}

fn get_u32(what: &str, v: &[u8]) -> Result<u32, IpvsError> {
    Ok(u32::from_ne_bytes(fixed(what, v)?))
}

/// Counters are `u32` in `STATS` and `u64` in `STATS64`; take whichever width arrived.
fn get_counter(what: &str, v: &[u8]) -> Result<u64, IpvsError> {
    match v.len() {
        4 => Ok(u64::from(get_u32(what, v)?)),
        8 => Ok(u64::from_ne_bytes(fixed(what, v)?)),
        n => Err(malformed(format!("{what}: {n} bytes"))),
    }
}

fn get_string(what: &str, v: &[u8]) -> Result<String, IpvsError> {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8(v[..end].to_vec()).map_err(|_| malformed(format!("{what}: not UTF-8")))
}

fn get_addr(family: Family, v: &[u8]) -> Result<IpAddr, IpvsError> {
    Ok(match family {
        Family::Inet => IpAddr::V4(Ipv4Addr::from(fixed::<4>("address", v)?)),
        Family::Inet6 => IpAddr::V6(Ipv6Addr::from(fixed::<16>("address", v)?)),
    })
}

fn family_from(v: &[u8]) -> Result<Family, IpvsError> {
    let raw = get_u16("address family", v)?;
    Family::from_raw(raw).ok_or_else(|| malformed(format!("unknown address family {raw}")))
}

fn decode_stats(buf: &[u8]) -> Result<Stats, IpvsError> {
    let mut s = Stats::default();
    for a in attrs(buf) {
        let (kind, v) = a?;
        let field = match kind {
            stats::CONNS => &mut s.conns,
            stats::INPKTS => &mut s.inpkts,
            stats::OUTPKTS => &mut s.outpkts,
            stats::INBYTES => &mut s.inbytes,
            stats::OUTBYTES => &mut s.outbytes,
            stats::CPS => &mut s.cps,
            stats::INPPS => &mut s.inpps,
            stats::OUTPPS => &mut s.outpps,
            stats::INBPS => &mut s.inbps,
            stats::OUTBPS => &mut s.outbps,
            // IPVS_STATS_ATTR_PAD and anything newer.
            _ => continue,
        };
        *field = get_counter("counter", v)?;
    }
    Ok(s)
}

/// The attributes nested in a service (`IPVS_CMD_ATTR_SERVICE`).
pub(crate) fn decode_service(buf: &[u8]) -> Result<ServiceEntry, IpvsError> {
    let (mut family, mut protocol, mut addr, mut port, mut fwmark) = (None, None, None, None, 0);
    let (mut scheduler, mut pe_name, mut flags, mut timeout, mut netmask) =
        (None, None, 0, 0, None);
    let (mut stats32, mut stats64) = (None, None);
    for a in attrs(buf) {
        let (kind, v) = a?;
        match kind {
            svc::AF => family = Some(family_from(v)?),
            svc::PROTOCOL => protocol = Some(get_u16("protocol", v)?),
            svc::ADDR => addr = Some(v),
            svc::PORT => port = Some(get_be16("port", v)?),
            svc::FWMARK => fwmark = get_u32("fwmark", v)?,
            svc::SCHED_NAME => scheduler = Some(get_string("scheduler", v)?),
            svc::PE_NAME => pe_name = Some(get_string("persistence engine", v)?),
            svc::FLAGS => flags = get_u32("flags", v)?,
            svc::TIMEOUT => timeout = get_u32("timeout", v)?,
            svc::NETMASK => netmask = Some(get_u32("netmask", v)?),
            svc::STATS => stats32 = Some(v),
            svc::STATS64 => stats64 = Some(v),
            _ => {}
        }
    }
    let family = family.ok_or_else(|| malformed("service without address family"))?;
    let key = if fwmark != 0 {
        ServiceKey::Fwmark { family, mark: fwmark }
    } else {
        let raw = protocol.ok_or_else(|| malformed("service without protocol"))?;
        ServiceKey::Addr {
            protocol: Protocol::from_raw(raw)
                .ok_or_else(|| malformed(format!("unknown protocol {raw}")))?,
            addr: get_addr(family, addr.ok_or_else(|| malformed("service without address"))?)?,
            port: port.ok_or_else(|| malformed("service without port"))?,
        }
    };
    let stats = match stats64.or(stats32) {
        Some(b) => decode_stats(b)?,
        None => Stats::default(),
    };
    Ok(ServiceEntry {
        service: Service {
            key,
            scheduler: scheduler.unwrap_or_default(),
            flags: ServiceFlags::from_bits_truncate(flags),
            timeout,
            netmask: netmask.map_or(family.max_prefix(), |m| netmask_prefix(family, m)),
            pe_name: pe_name.filter(|p| !p.is_empty()),
        },
        stats,
    })
}

/// The attributes nested in a destination (`IPVS_CMD_ATTR_DEST`); `service_family` is used when
/// an old kernel leaves out the destination's own family.
pub(crate) fn decode_destination(
    buf: &[u8],
    service_family: Family,
) -> Result<DestinationEntry, IpvsError> {
    let (mut family, mut addr, mut port, mut fwd) = (None, None, None, None);
    let (mut weight, mut upper, mut lower) = (0, 0, 0);
    let (mut active, mut inactive, mut persist) = (0, 0, 0);
    let (mut tun_type, mut tun_port, mut tun_flags) = (uapi::TUNNEL_TYPE_IPIP, 0, 0);
    let (mut stats32, mut stats64) = (None, None);
    for a in attrs(buf) {
        let (kind, v) = a?;
        match kind {
            dest::ADDR_FAMILY => family = Some(family_from(v)?),
            dest::ADDR => addr = Some(v),
            dest::PORT => port = Some(get_be16("port", v)?),
            dest::FWD_METHOD => fwd = Some(get_u32("forwarding method", v)?),
            dest::WEIGHT => weight = get_u32("weight", v)?,
            dest::U_THRESH => upper = get_u32("upper threshold", v)?,
            dest::L_THRESH => lower = get_u32("lower threshold", v)?,
            dest::ACTIVE_CONNS => active = get_u32("active connections", v)?,
            dest::INACT_CONNS => inactive = get_u32("inactive connections", v)?,
            dest::PERSIST_CONNS => persist = get_u32("persistent connections", v)?,
            dest::STATS => stats32 = Some(v),
            dest::STATS64 => stats64 = Some(v),
            dest::TUN_TYPE => tun_type = get_u8("tunnel type", v)?,
            dest::TUN_PORT => tun_port = get_be16("tunnel port", v)?,
            dest::TUN_FLAGS => tun_flags = get_u16("tunnel flags", v)?,
            _ => {}
        }
    }
    let family = family.unwrap_or(service_family);
    let fwd = fwd.ok_or_else(|| malformed("destination without forwarding method"))?;
    let forward = match fwd & uapi::CONN_F_FWD_MASK {
        uapi::CONN_F_MASQ => Forward::Masquerade,
        uapi::CONN_F_LOCALNODE => Forward::Local,
        uapi::CONN_F_DROUTE => Forward::Route,
        uapi::CONN_F_TUNNEL => Forward::Tunnel {
            encap: match tun_type {
                uapi::TUNNEL_TYPE_IPIP => TunnelEncap::Ipip,
                uapi::TUNNEL_TYPE_GUE => TunnelEncap::Gue { port: tun_port },
                uapi::TUNNEL_TYPE_GRE => TunnelEncap::Gre,
                t => return Err(malformed(format!("unknown tunnel type {t}"))),
            },
            csum: tun_flags & uapi::TUNNEL_ENCAP_FLAG_CSUM != 0,
            remote_csum: tun_flags & uapi::TUNNEL_ENCAP_FLAG_REMCSUM != 0,
        },
        other => return Err(malformed(format!("unknown forwarding method {other}"))),
    };
    let stats = match stats64.or(stats32) {
        Some(b) => decode_stats(b)?,
        None => Stats::default(),
    };
    Ok(DestinationEntry {
        destination: Destination {
            addr: get_addr(family, addr.ok_or_else(|| malformed("destination without address"))?)?,
            port: port.ok_or_else(|| malformed("destination without port"))?,
            forward,
            weight,
            upper_threshold: upper,
            lower_threshold: lower,
        },
        active_conns: active,
        inactive_conns: inactive,
        persist_conns: persist,
        stats,
    })
}

/// The top-level attributes of a `GET_INFO` reply.
pub(crate) fn decode_info(buf: &[u8]) -> Result<Info, IpvsError> {
    let (mut version, mut size) = (None, 0);
    for a in attrs(buf) {
        let (kind, v) = a?;
        match kind {
            info::VERSION => version = Some(get_u32("version", v)?),
            info::CONN_TAB_SIZE => size = get_u32("connection table size", v)?,
            _ => {}
        }
    }
    Ok(Info {
        version: version.ok_or_else(|| malformed("info without version"))?,
        conn_table_size: size,
    })
}

/// The first attribute of `kind` among the top-level attributes of a reply.
pub(crate) fn find_attr(buf: &[u8], kind: u16) -> Result<Option<&[u8]>, IpvsError> {
    for a in attrs(buf) {
        let (k, v) = a?;
        if k == kind {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// One message of a reply datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// An IPVS message (a service, a destination, info).
    Data(IpvsReply),
    /// The end of a dump.
    Done,
    /// The ACK that ends a non-dump request.
    Ack,
    /// The kernel refused: a positive errno and, with extended ACKs, its explanation.
    Error { errno: i32, message: Option<String> },
}

/// Splits a datagram into its messages, keeping only those answering `seq`.
pub(crate) fn decode_replies(buf: &[u8], seq: u32) -> Result<Vec<Reply>, IpvsError> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < buf.len() {
        let rest = &buf[offset..];
        let len = NetlinkBuffer::new_checked(rest)
            .map_err(|e| malformed(format!("netlink header: {e}")))?
            .length() as usize;
        if len < 16 || len > rest.len() {
            return Err(malformed(format!("netlink message length {len}")));
        }
        let msg = NetlinkMessage::<GenlMessage<IpvsReply>>::deserialize(&rest[..len])
            .map_err(|e| malformed(format!("netlink message: {e}")))?;
        offset += len.next_multiple_of(usize::from(NLMSG_ALIGNTO));
        if msg.header.sequence_number != seq {
            continue;
        }
        let header = msg.header;
        out.push(match msg.payload {
            NetlinkPayload::InnerMessage(genl) => Reply::Data(genl.payload),
            NetlinkPayload::Done(done) if done.code == 0 => Reply::Done,
            NetlinkPayload::Done(done) => Reply::Error { errno: done.code.abs(), message: None },
            NetlinkPayload::Error(err) => match err.code {
                None => Reply::Ack,
                Some(code) => Reply::Error {
                    errno: code.get().abs(),
                    message: ext_ack_message(&header, &err.header),
                },
            },
            _ => continue,
        });
    }
    Ok(out)
}

/// `NLMSGERR_ATTR_MSG` from an error's trailing TLVs: the kernel's reason in words.
fn ext_ack_message(header: &NetlinkHeader, echoed: &[u8]) -> Option<String> {
    const NLMSGERR_ATTR_MSG: u16 = 1;
    if header.flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    // The echoed request: its header only when capped, else the whole message.
    let echoed_len = if header.flags & NLM_F_CAPPED != 0 {
        16
    } else {
        u32::from_ne_bytes(echoed.get(..4)?.try_into().ok()?) as usize
    };
    let tlvs = echoed.get(echoed_len.next_multiple_of(usize::from(NLMSG_ALIGNTO))..)?;
    let msg = find_attr(tlvs, NLMSGERR_ATTR_MSG).ok()??;
    get_string("ext ack", msg).ok().filter(|m| !m.is_empty())
}
