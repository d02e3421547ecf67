//! The sync edge: new flows the XDP program reports go out as IPVS sync messages, and received
//! messages become flow entries of this director, translated to its own real slots.
//!
//! The translation and the checks are pure ([`report_to_conn`], [`conn_to_entry`], [`Receiver`]);
//! [`run`] adds the socket (one UDP socket that sends to the group and receives from it) and the
//! maps.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use lb_common::{
    BINDING_F_SYNC, Binding, FlowKey, FlowReport, IPPROTO_TCP, IPPROTO_UDP, PersistKey,
};
use nix::sys::socket::{setsockopt, sockopt};
use serde::{Deserialize, Serialize};

use super::codec::{self, ConnFlags, SyncConn, SyncMessage};
use crate::{
    config::flow_sync::FlowSyncConfig,
    dataplane::xdp::{
        addr_words,
        flows::{TCP_ESTABLISHED_TIMEOUT, addr_of, ports_of, stamp_recent},
    },
};

/// Forwarding method bits of the entries lb sends: direct routing.
const FWD_DR: u32 = 3;

/// A real of a service as this director has it in its maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    pub id: u32,
    pub generation: u32,
    /// It may keep established flows (up, drained, or down with `inhibit_on_failure`); its slot
    /// is usable once its service is live here.
    pub usable: bool,
}

/// One XDP service: its id (persistence keys) and its reals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceSlots {
    pub id: u32,
    /// Persistence timeout in seconds; 0: not persistent.
    pub persistence: u32,
    /// The persistence netmask as the program applies it to client addresses (raw words).
    pub persist_mask: lb_common::Addr,
    pub reals: HashMap<SocketAddr, SlotInfo>,
}

/// This director's slots, as of one read: what a received entry is translated with, and what
/// a reported slot is named by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slots {
    /// (VIP, port, IP protocol) → service; port 0 for an all-ports service.
    pub services: HashMap<(IpAddr, u16, u8), ServiceSlots>,
    /// Slot id → (real, generation).
    pub by_id: HashMap<u32, (SocketAddr, u32)>,
    pub udp_timeout: u32,
}

impl Slots {
    fn service(&self, vip: IpAddr, port: u16, proto: u8) -> Option<&ServiceSlots> {
        self.services.get(&(vip, port, proto)).or_else(|| self.services.get(&(vip, 0, proto)))
    }
}

/// A new flow reported by the program, as a sync entry; `None` when its slot changed since.
pub fn report_to_conn(r: &FlowReport, slots: &Slots) -> Option<SyncConn> {
    let (real, generation) = *slots.by_id.get(&r.real)?;
    if generation != r.generation {
        return None;
    }
    let k = &r.key;
    let (state, timeout_s) = match k.proto {
        IPPROTO_TCP => (codec::tcp_state::ESTABLISHED, TCP_ESTABLISHED_TIMEOUT),
        IPPROTO_UDP => (codec::tcp_state::NONE, slots.udp_timeout),
        _ => return None,
    };
    let (cport, vport) = ports_of(k.ports);
    Some(SyncConn {
        protocol: k.proto,
        caddr: addr_of(&k.src, k.family),
        vaddr: addr_of(&k.dst, k.family),
        daddr: real.ip(),
        cport,
        vport,
        dport: real.port(),
        fwmark: 0,
        flags: ConnFlags(FWD_DR),
        state,
        timeout_s,
        template: false,
        seq: None,
        pe: None,
    })
}

/// The entries reported flows go out as: each connection, followed (for a persistent service)
/// by its client's persistence template as the kernel sends it, once per client and batch.
pub fn reports_to_conns(reports: &[FlowReport], slots: &Slots) -> Vec<SyncConn> {
    let mut out = Vec::with_capacity(reports.len());
    let mut templates = std::collections::HashSet::new();
    for c in reports.iter().filter_map(|r| report_to_conn(r, slots)) {
        let template = slots
            .service(c.vaddr, c.vport, c.protocol)
            .and_then(|svc| template_of(&c, svc))
            .filter(|t| templates.insert((t.caddr, t.vaddr, t.vport, t.protocol)));
        out.push(c);
        out.extend(template);
    }
    out
}

/// The persistence template of connection `c` of `svc`: the client address masked by the
/// persistence netmask, client port 0, the persistence timeout; `None` when not persistent.
fn template_of(c: &SyncConn, svc: &ServiceSlots) -> Option<SyncConn> {
    if svc.persistence == 0 {
        return None;
    }
    let (words, family) = addr_words(c.caddr);
    Some(SyncConn {
        caddr: addr_of(&masked(&words, &svc.persist_mask), family),
        cport: 0,
        state: codec::tcp_state::NONE,
        timeout_s: svc.persistence,
        template: true,
        ..c.clone()
    })
}

fn masked(a: &lb_common::Addr, mask: &lb_common::Addr) -> lb_common::Addr {
    [a[0] & mask[0], a[1] & mask[1], a[2] & mask[2], a[3] & mask[3]]
}

/// What a received entry becomes in this director's maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Flow(FlowKey, Binding),
    /// A persistence template of a persistent service.
    Persist(PersistKey, Binding),
}

/// A received entry translated to this director's slots, or why it is not installed (a
/// counter name).
pub fn conn_to_entry(c: &SyncConn, slots: &Slots, now: u32) -> Result<Entry, &'static str> {
    if c.protocol != IPPROTO_TCP && c.protocol != IPPROTO_UDP {
        return Err("protocol");
    }
    if c.fwmark != 0 {
        return Err("unknown_service");
    }
    let svc = slots.service(c.vaddr, c.vport, c.protocol).ok_or("unknown_service")?;
    let real = svc.reals.get(&SocketAddr::new(c.daddr, c.dport)).ok_or("unknown_real")?;
    if !real.usable {
        return Err("real_down");
    }
    let binding =
        Binding { real: real.id, generation: real.generation, atime: now, flags: BINDING_F_SYNC };
    let (src, family) = addr_words(c.caddr);
    if c.template {
        if svc.persistence == 0 {
            return Err("not_persistent");
        }
        // Keyed as the program looks it up: masked by this director's netmask.
        let src = masked(&src, &svc.persist_mask);
        let key = PersistKey { service: svc.id, family, _pad1: 0, _pad2: 0, src };
        return Ok(Entry::Persist(key, binding));
    }
    let (dst, _) = addr_words(c.vaddr);
    let ports = lb_common::ports_word(c.cport, c.vport);
    let key = FlowKey { src, dst, ports, proto: c.protocol, family, _pad: 0 };
    Ok(Entry::Flow(key, binding))
}

/// Sync counters, shared with `lb status` and the metrics.
#[derive(Debug, Default)]
pub struct SyncStats {
    pub messages_sent: AtomicU64,
    pub flows_sent: AtomicU64,
    pub messages_received: AtomicU64,
    pub flows_received: AtomicU64,
    pub flows_installed: AtomicU64,
    /// Messages and entries dropped, by reason.
    pub dropped: Mutex<BTreeMap<String, u64>>,
}

/// `lb status --json`'s `flow_sync`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatsView {
    pub messages_sent: u64,
    pub flows_sent: u64,
    pub messages_received: u64,
    pub flows_received: u64,
    pub flows_installed: u64,
    pub dropped: BTreeMap<String, u64>,
}

impl SyncStats {
    pub fn drop_one(&self, reason: &str) {
        let mut d = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        *d.entry(reason.to_owned()).or_default() += 1;
    }

    pub fn view(&self) -> SyncStatsView {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SyncStatsView {
            messages_sent: n(&self.messages_sent),
            flows_sent: n(&self.flows_sent),
            messages_received: n(&self.messages_received),
            flows_received: n(&self.flows_received),
            flows_installed: n(&self.flows_installed),
            dropped: self.dropped.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// The receiving side's checks of one datagram, before its entries are translated.
pub struct Receiver {
    pub sync_id: u8,
    /// This host's addresses: a message from one of them is our own (or forged).
    pub own: Vec<IpAddr>,
    /// The TTL (hop limit) our peers send with, the `ttl` setting: a message that arrives with
    /// another one crossed a router or was not sent by a director of this group.
    pub ttl: u8,
}

impl Receiver {
    /// The message's entries, or why the whole datagram is dropped. Entries the codec skipped
    /// or dropped are counted by their reason.
    pub fn accept(
        &self,
        from: IpAddr,
        ttl: Option<u8>,
        datagram: &[u8],
        stats: &SyncStats,
    ) -> Result<Vec<SyncConn>, &'static str> {
        if self.own.contains(&from) {
            return Err("own_source");
        }
        // Without the control message (the kernel always gives it once asked) there is no check.
        if ttl.is_some_and(|t| t != self.ttl) {
            return Err("ttl");
        }
        let msg: SyncMessage = codec::decode(datagram).map_err(|e| e.reason())?;
        // As the kernel: a backup with a sync id takes only messages of that id.
        if self.sync_id != 0 && msg.sync_id != self.sync_id {
            return Err("sync_id");
        }
        for (_, e) in &msg.skipped {
            stats.drop_one(e.reason());
        }
        if let Some((_, e)) = &msg.rest_dropped {
            stats.drop_one(e.reason());
        }
        Ok(msg.conns)
    }
}

/// Seconds of the monotonic clock (the program's `atime` clock).
fn monotonic_secs() -> u32 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u32
}

/// The maps the edge writes and reads, opened by the dataplane.
pub struct SyncMaps {
    pub reports: aya::maps::RingBuf<aya::maps::MapData>,
    pub flows: aya::maps::HashMap<aya::maps::MapData, FlowKey, Binding>,
    pub persist: aya::maps::HashMap<aya::maps::MapData, PersistKey, Binding>,
    /// The flow table's "recent entry" filter: stamped for every flow entry installed.
    pub recent: aya::maps::Array<aya::maps::MapData, lb_common::FlowRecent>,
}

/// Writes a received entry into the maps. A flow entry's "recent entry" filter slot is stamped
/// first: outside a window the program follows a TCP or UDP entry only when its slot is recent
/// (docs/fast-path.md).
pub fn install(maps: &mut SyncMaps, entry: Entry) -> Result<(), aya::maps::MapError> {
    match entry {
        Entry::Flow(k, b) => {
            stamp_recent(&mut maps.recent, &k, b.atime)?;
            maps.flows.insert(k, b, 0)
        }
        Entry::Persist(k, b) => maps.persist.insert(k, b, 0),
    }
}

/// The multicast socket: bound to the group's port on `interface`, joined there, sending with
/// the TTL, without loopback.
fn socket(cfg: &FlowSyncConfig) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
    let ifindex = crate::net::iface::index(&cfg.interface)?;
    let domain = if cfg.group.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.bind_device(Some(cfg.interface.as_bytes()))?;
    match cfg.group {
        IpAddr::V4(g) => {
            s.bind(&SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, cfg.port)).into())?;
            s.join_multicast_v4_n(&g, &InterfaceIndexOrAddress::Index(ifindex))?;
            s.set_multicast_ttl_v4(u32::from(cfg.ttl))?;
            s.set_multicast_loop_v4(false)?;
        }
        IpAddr::V6(g) => {
            s.set_only_v6(true)?;
            s.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, cfg.port)).into())?;
            s.join_multicast_v6(&g, ifindex)?;
            s.set_multicast_if_v6(ifindex)?;
            s.set_multicast_hops_v6(u32::from(cfg.ttl))?;
            s.set_multicast_loop_v6(false)?;
        }
    }
    // Each datagram's TTL (hop limit) comes with it, for the receiver's check.
    match cfg.group {
        IpAddr::V4(_) => setsockopt(&s, sockopt::Ipv4RecvTtl, &true)?,
        IpAddr::V6(_) => setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true)?,
    }
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s.into())
}

/// One datagram: its length, source and the TTL (hop limit) it arrived with.
fn recv_with_ttl(
    sock: &tokio::net::UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, IpAddr, Option<u8>)> {
    use std::{io::IoSliceMut, os::fd::AsRawFd as _};

    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrLike as _, SockaddrStorage};
    let mut iov = [IoSliceMut::new(buf)];
    let mut control = nix::cmsg_space!(libc::c_int);
    let msg = nix::sys::socket::recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::empty(),
    )?;
    let from = msg.address.and_then(|a| match a.family() {
        Some(nix::sys::socket::AddressFamily::Inet) => {
            a.as_sockaddr_in().map(|a| IpAddr::V4(a.ip()))
        }
        Some(nix::sys::socket::AddressFamily::Inet6) => {
            a.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip()))
        }
        _ => None,
    });
    let mut ttl = None;
    for cmsg in msg.cmsgs().into_iter().flatten() {
        match cmsg {
            ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                ttl = u8::try_from(t).ok();
            }
            _ => {}
        }
    }
    let from = from.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    Ok((msg.bytes, from, ttl))
}

/// How often reported flows are gathered into messages.
const SEND_TICK: Duration = Duration::from_millis(50);

/// The socket and checks of one `[flow_sync]` setting.
struct Bound {
    cfg: FlowSyncConfig,
    sock: tokio::net::UdpSocket,
    receiver: Receiver,
}

/// Binds `[flow_sync]`'s socket; `None` without the table, or when binding fails (logged: the
/// next reload that changes the table tries again). `own` reads this host's addresses (now: a
/// reload sees addresses added since the start).
fn bind(cfg: Option<FlowSyncConfig>, own: &dyn Fn() -> Vec<IpAddr>) -> Option<Bound> {
    let cfg = cfg?;
    match socket(&cfg) {
        Ok(sock) => {
            let receiver = Receiver { sync_id: cfg.sync_id, own: own(), ttl: cfg.ttl };
            tracing::info!(
                interface = %cfg.interface, group = %SocketAddr::new(cfg.group, cfg.port),
                sync_id = cfg.sync_id, "flow sync started"
            );
            Some(Bound { cfg, sock, receiver })
        }
        Err(e) => {
            tracing::error!(
                interface = %cfg.interface, group = %cfg.group, error = %e,
                "flow sync socket: flow sync is off"
            );
            None
        }
    }
}

/// The next datagram on `bound`'s socket; never, without one.
async fn next_datagram(
    bound: Option<&Bound>,
    buf: &mut [u8],
) -> std::io::Result<(usize, IpAddr, Option<u8>)> {
    match bound {
        Some(b) => {
            b.sock.async_io(tokio::io::Interest::READABLE, || recv_with_ttl(&b.sock, buf)).await
        }
        None => std::future::pending().await,
    }
}

/// Sends reported flows and installs received ones until the task is dropped. `cfg` is
/// `[flow_sync]` as the last reload left it: a change re-binds the socket (the counters go on),
/// `None` closes it. `slots` reads this director's current slots (it takes the agent lock
/// briefly).
pub async fn run(
    mut cfg: tokio::sync::watch::Receiver<Option<FlowSyncConfig>>,
    mut maps: SyncMaps,
    slots: impl Fn() -> Option<Slots> + Send + 'static,
    own: impl Fn() -> Vec<IpAddr> + Send + 'static,
    stats: Arc<SyncStats>,
) -> anyhow::Result<()> {
    let mut bound = bind(cfg.borrow_and_update().clone(), &own);
    let mut tick = tokio::time::interval(SEND_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; codec::MAX_MESSAGE_LEN + 1];
    let mut current = slots().unwrap_or_default();
    loop {
        tokio::select! {
            changed = cfg.changed() => {
                if changed.is_err() {
                    // The agent is gone.
                    return Ok(());
                }
                // The old socket closes (leaving the group) before the new one binds the port.
                drop(bound.take());
                bound = bind(cfg.borrow_and_update().clone(), &own);
                if bound.is_none() {
                    tracing::info!("flow sync stopped");
                }
            }
            _ = tick.tick() => {
                let mut reports = Vec::new();
                while let Some(item) = maps.reports.next() {
                    match crate::dataplane::xdp::flows::parse_report(&item) {
                        Some(r) => reports.push(r),
                        None => stats.drop_one("bad_report"),
                    }
                }
                let Some(b) = &bound else { continue };
                if reports.is_empty() {
                    continue;
                }
                let group = SocketAddr::new(b.cfg.group, b.cfg.port);
                current = slots().unwrap_or(current);
                let conns = reports_to_conns(&reports, &current);
                match codec::encode_batch(b.cfg.sync_id, &conns, usize::from(b.cfg.max_len)) {
                    Ok(messages) => {
                        for m in messages {
                            match b.sock.send_to(&m, group).await {
                                Ok(_) => {
                                    stats.messages_sent.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    tracing::debug!(error = %e, "flow sync send failed");
                                    stats.drop_one("send_error");
                                }
                            }
                        }
                        stats.flows_sent.fetch_add(conns.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "flow sync: encoding failed");
                        stats.drop_one("encode_error");
                    }
                }
            }
            got = next_datagram(bound.as_ref(), &mut buf) => {
                let (len, from, ttl) = match got {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "flow sync receive failed");
                        continue;
                    }
                };
                let Some(b) = &bound else { continue };
                stats.messages_received.fetch_add(1, Ordering::Relaxed);
                let conns = match b.receiver.accept(from, ttl, &buf[..len], &stats) {
                    Ok(c) => c,
                    Err(reason) => {
                        stats.drop_one(reason);
                        continue;
                    }
                };
                stats.flows_received.fetch_add(conns.len() as u64, Ordering::Relaxed);
                current = slots().unwrap_or(current);
                let now = monotonic_secs();
                for c in &conns {
                    let written = match conn_to_entry(c, &current, now) {
                        Ok(entry) => install(&mut maps, entry),
                        Err(reason) => {
                            stats.drop_one(reason);
                            continue;
                        }
                    };
                    match written {
                        Ok(()) => {
                            stats.flows_installed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => stats.drop_one("map_error"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use lb_common::{FAMILY_V4, addr_v4, ports_word};

    use super::*;

    fn slots() -> Slots {
        let real = |s: &str| s.parse::<SocketAddr>().unwrap();
        let vip: IpAddr = "198.51.100.1".parse().unwrap();
        let mut services = HashMap::new();
        services.insert(
            (vip, 80, IPPROTO_TCP),
            ServiceSlots {
                id: 2,
                persistence: 0,
                persist_mask: [0; 4],
                reals: HashMap::from([
                    (real("203.0.113.2:80"), SlotInfo { id: 7, generation: 3, usable: true }),
                    (real("203.0.113.3:80"), SlotInfo { id: 8, generation: 4, usable: false }),
                ]),
            },
        );
        services.insert(
            (vip, 443, IPPROTO_TCP),
            ServiceSlots {
                id: 3,
                persistence: 300,
                // A /24 netmask.
                persist_mask: addr_v4([255, 255, 255, 0]),
                reals: HashMap::from([(
                    real("203.0.113.2:443"),
                    SlotInfo { id: 9, generation: 5, usable: true },
                )]),
            },
        );
        Slots {
            services,
            by_id: HashMap::from([
                (7, (real("203.0.113.2:80"), 3)),
                (9, (real("203.0.113.2:443"), 5)),
            ]),
            udp_timeout: 300,
        }
    }

    fn conn(daddr: &str, dport: u16, vport: u16) -> SyncConn {
        SyncConn {
            protocol: IPPROTO_TCP,
            caddr: "192.0.2.10".parse().unwrap(),
            vaddr: "198.51.100.1".parse().unwrap(),
            daddr: daddr.parse().unwrap(),
            cport: 40000,
            vport,
            dport,
            fwmark: 0,
            flags: ConnFlags(FWD_DR),
            state: codec::tcp_state::ESTABLISHED,
            timeout_s: 900,
            template: false,
            seq: None,
            pe: None,
        }
    }

    #[test]
    fn a_report_becomes_the_entry_a_peer_installs() {
        let key = FlowKey {
            src: addr_v4([192, 0, 2, 10]),
            dst: addr_v4([198, 51, 100, 1]),
            ports: ports_word(40000, 80),
            proto: IPPROTO_TCP,
            family: FAMILY_V4,
            _pad: 0,
        };
        let s = slots();
        let c = report_to_conn(&FlowReport { key, real: 7, generation: 3 }, &s).expect("conn");
        assert_eq!(c, conn("203.0.113.2", 80, 80));
        // A slot recycled since the report: not sent.
        assert_eq!(report_to_conn(&FlowReport { key, real: 7, generation: 2 }, &s), None);
        assert_eq!(report_to_conn(&FlowReport { key, real: 1, generation: 3 }, &s), None);
        // The same entry, received: the flow key the program looks up, on the receiver's slot.
        let got = conn_to_entry(&c, &s, 1234).expect("installed");
        let b = Binding { real: 7, generation: 3, atime: 1234, flags: BINDING_F_SYNC };
        assert_eq!(got, Entry::Flow(key, b));
        // And through the wire format and back.
        let wire = codec::encode_batch(5, std::slice::from_ref(&c), 1472).expect("encode");
        let r = Receiver { sync_id: 5, own: vec![], ttl: 1 };
        let stats = SyncStats::default();
        let back =
            r.accept("192.0.2.3".parse().unwrap(), Some(1), &wire[0], &stats).expect("accepted");
        assert_eq!(back, [c]);
    }

    /// Flows of a persistent service go out with their client's template (once per client), as
    /// the kernel sends them; a peer installs both.
    #[test]
    fn flows_of_persistent_services_carry_their_template() {
        let s = slots();
        let report = |client: [u8; 4], cport: u16, vport: u16, real: u32, generation: u32| {
            let key = FlowKey {
                src: addr_v4(client),
                dst: addr_v4([198, 51, 100, 1]),
                ports: ports_word(cport, vport),
                proto: IPPROTO_TCP,
                family: FAMILY_V4,
                _pad: 0,
            };
            FlowReport { key, real, generation }
        };
        let reports = [
            report([192, 0, 2, 10], 40000, 443, 9, 5),
            // Same /24, another connection: no second template.
            report([192, 0, 2, 11], 40001, 443, 9, 5),
            // Not persistent: no template.
            report([192, 0, 2, 10], 40002, 80, 7, 3),
        ];
        let conns = reports_to_conns(&reports, &s);
        let summary: Vec<(bool, String, u16, u32)> =
            conns.iter().map(|c| (c.template, c.caddr.to_string(), c.cport, c.timeout_s)).collect();
        assert_eq!(
            summary,
            [
                (false, "192.0.2.10".to_owned(), 40000, 900),
                (true, "192.0.2.0".to_owned(), 0, 300),
                (false, "192.0.2.11".to_owned(), 40001, 900),
                (false, "192.0.2.10".to_owned(), 40002, 900),
            ]
        );
        let template = &conns[1];
        assert_eq!(
            (template.daddr.to_string(), template.dport, template.vport),
            ("203.0.113.2".to_owned(), 443, 443)
        );
        // Through the wire and back, installed as the client's persistence entry.
        let wire = codec::encode_batch(5, &conns, 1472).expect("encode");
        let stats = SyncStats::default();
        let r = Receiver { sync_id: 5, own: vec![], ttl: 1 };
        let back = r.accept("192.0.2.3".parse().unwrap(), Some(1), &wire[0], &stats).unwrap();
        assert_eq!(back, conns);
        match conn_to_entry(&back[1], &s, 7) {
            Ok(Entry::Persist(k, b)) => {
                assert_eq!(
                    (k.service, k.src, b.real, b.generation),
                    (3, addr_v4([192, 0, 2, 0]), 9, 5)
                );
            }
            other => panic!("template installed as {other:?}"),
        }
    }

    #[test]
    fn received_entries_are_translated_or_counted() {
        let s = slots();
        let mut template = conn("203.0.113.2", 443, 443);
        template.template = true;
        template.cport = 0;
        let mut not_persistent = conn("203.0.113.2", 80, 80);
        not_persistent.template = true;
        let mut udp = conn("203.0.113.2", 80, 80);
        udp.protocol = IPPROTO_UDP;
        let mut sctp = conn("203.0.113.2", 80, 80);
        sctp.protocol = 132;
        let mut marked = conn("203.0.113.2", 80, 80);
        marked.fwmark = 1;
        let mut v6 = conn("2001:db8::2", 80, 80);
        v6.caddr = "2001:db8::10".parse().unwrap();
        v6.vaddr = "2001:db8::1".parse().unwrap();
        // Scenario table: entry → installed as, or the counter it lands in.
        let cases: Vec<(SyncConn, Result<&str, &str>)> = vec![
            (conn("203.0.113.2", 80, 80), Ok("flow")),
            (template, Ok("persist")),
            (not_persistent, Err("not_persistent")),
            (conn("203.0.113.3", 80, 80), Err("real_down")),
            (conn("203.0.113.9", 80, 80), Err("unknown_real")),
            (conn("203.0.113.2", 8080, 80), Err("unknown_real")),
            (conn("203.0.113.2", 80, 81), Err("unknown_service")),
            (udp, Err("unknown_service")),
            (sctp, Err("protocol")),
            (marked, Err("unknown_service")),
            (v6, Err("unknown_service")),
        ];
        for (c, want) in cases {
            let got = conn_to_entry(&c, &s, 1).map(|e| match e {
                Entry::Flow(..) => "flow",
                Entry::Persist(k, b) => {
                    // Masked by this director's /24.
                    assert_eq!((k.service, b.real, k.src), (3, 9, addr_v4([192, 0, 2, 0])));
                    "persist"
                }
            });
            assert_eq!(got, want, "{c:?}");
        }
    }

    #[test]
    fn datagrams_are_checked_before_their_entries() {
        let c = conn("203.0.113.2", 80, 80);
        let wire = codec::encode_batch(5, &[c], 1472).expect("encode").remove(0);
        let peer: IpAddr = "192.0.2.3".parse().unwrap();
        let own: IpAddr = "192.0.2.2".parse().unwrap();
        let mut bad_version = wire.clone();
        bad_version[5] = 2;
        // Scenario table: (our sync id, source, TTL it arrived with, datagram) → entries, or the
        // drop reason. Our peers send with TTL 1 (the `ttl` setting).
        type Case = (u8, IpAddr, Option<u8>, Vec<u8>, Result<usize, &'static str>);
        let cases: Vec<Case> = vec![
            (5, peer, Some(1), wire.clone(), Ok(1)),
            // Sync id 0 takes every id, as the kernel's backup does.
            (0, peer, Some(1), wire.clone(), Ok(1)),
            (6, peer, Some(1), wire.clone(), Err("sync_id")),
            (5, own, Some(1), wire.clone(), Err("own_source")),
            // Sent with another TTL, or routed here: not from a director of this group.
            (5, peer, Some(64), wire.clone(), Err("ttl")),
            (5, peer, Some(0), wire.clone(), Err("ttl")),
            (5, peer, None, wire.clone(), Ok(1)),
            (5, peer, Some(1), wire[..3].to_vec(), Err("truncated")),
            (5, peer, Some(1), wire[..wire.len() - 1].to_vec(), Err("bad_size")),
            (5, peer, Some(1), bad_version, Err("wrong_version")),
            (5, peer, Some(1), vec![0; codec::MAX_MESSAGE_LEN + 1], Err("oversized")),
        ];
        for (sync_id, from, ttl, datagram, want) in cases {
            let r = Receiver { sync_id, own: vec![own], ttl: 1 };
            let stats = SyncStats::default();
            let got = r.accept(from, ttl, &datagram, &stats).map(|c| c.len());
            assert_eq!(got, want, "id {sync_id} from {from} ttl {ttl:?}");
        }
        let v = SyncStats::default();
        v.drop_one("sync_id");
        v.drop_one("sync_id");
        assert_eq!(v.view().dropped.get("sync_id"), Some(&2));
    }
}
