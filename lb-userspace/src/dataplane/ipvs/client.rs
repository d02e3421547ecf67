//! The blocking client: one generic netlink socket, one request at a time. IPVS changes are rare
//! and quick, and the `Dataplane` trait is synchronous, so there is no async machinery here.

use std::{net::SocketAddr, time::Duration};

use netlink_packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::{
    GenlMessage,
    ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs},
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_GENERIC};

use super::{
    IpvsError,
    codec::{self, Reply, Request},
    model::{
        Destination, DestinationEntry, Info, Service, ServiceEntry, ServiceKey, SyncDaemon,
        SyncRole,
    },
    uapi::{self, cmd, cmd_attr},
};

/// How long one reply may take before we call the kernel unresponsive.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the kernel's IPVS over generic netlink.
pub struct Ipvs {
    socket: Socket,
    family_id: u16,
    seq: u32,
}

impl Ipvs {
    /// Opens a socket and resolves the `IPVS` family. [`IpvsError::NotAvailable`] when the kernel
    /// has no IPVS (not built, module not loaded and not auto-loadable).
    pub fn open() -> Result<Self, IpvsError> {
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(IpvsError::Socket)?;
        socket.bind_auto().map_err(IpvsError::Socket)?;
        socket.connect(&NlAddr::new(0, 0)).map_err(IpvsError::Socket)?;
        // Extended ACKs carry the kernel's reason; capped ACKs keep error replies small.
        // Both are best effort: old kernels refuse them and we only lose detail.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        socket2::SockRef::from(&socket)
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(IpvsError::Socket)?;
        let mut ipvs = Ipvs { socket, family_id: 0, seq: 0 };
        ipvs.family_id = ipvs.resolve_family()?;
        Ok(ipvs)
    }

    /// The generic netlink id the kernel gave `IPVS` (differs between boots).
    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn resolve_family(&mut self) -> Result<u16, IpvsError> {
        let seq = self.next_seq();
        let mut genl = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(uapi::FAMILY_NAME.to_owned())],
        });
        genl.finalize();
        let mut msg = NetlinkMessage::from(genl);
        msg.header.flags = NLM_F_REQUEST;
        msg.header.sequence_number = seq;
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(IpvsError::Socket)?;
        loop {
            let rx = self.recv()?;
            let reply = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(&rx)
                .map_err(|e| IpvsError::Decode(format!("nlctrl reply: {e}")))?;
            if reply.header.sequence_number != seq {
                continue;
            }
            return match reply.payload {
                NetlinkPayload::InnerMessage(genl) => genl
                    .payload
                    .nlas
                    .iter()
                    .find_map(|a| match a {
                        GenlCtrlAttrs::FamilyId(id) => Some(*id),
                        _ => None,
                    })
                    .ok_or_else(|| IpvsError::Decode("nlctrl reply without family id".into())),
                NetlinkPayload::Error(e) if e.raw_code().abs() == libc::ENOENT => {
                    Err(IpvsError::NotAvailable)
                }
                NetlinkPayload::Error(e) => Err(IpvsError::Kernel {
                    op: "resolving generic netlink family IPVS",
                    errno: e.raw_code().abs(),
                    message: None,
                }),
                other => Err(IpvsError::Decode(format!("unexpected nlctrl reply {other:?}"))),
            };
        }
    }

    /// One datagram; a read timeout becomes [`IpvsError::Timeout`] rather than a bare EAGAIN.
    fn recv(&self) -> Result<Vec<u8>, IpvsError> {
        match self.socket.recv_from_full() {
            Ok((buf, _)) => Ok(buf),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                Err(IpvsError::Timeout(REPLY_TIMEOUT))
            }
            Err(e) => Err(IpvsError::Socket(e)),
        }
    }

    /// Sends `req` and collects the IPVS messages of its reply until the ACK or end of dump.
    fn exchange(&mut self, req: Request<'_>) -> Result<Vec<codec::IpvsReply>, IpvsError> {
        let seq = self.next_seq();
        let buf = req.encode(self.family_id, seq)?;
        self.socket.send(&buf, 0).map_err(IpvsError::Socket)?;
        let mut out = Vec::new();
        loop {
            let rx = self.recv()?;
            for reply in codec::decode_replies(&rx, seq)? {
                match reply {
                    Reply::Data(d) => out.push(d),
                    Reply::Done | Reply::Ack => return Ok(out),
                    Reply::Error { errno, message } => {
                        return Err(IpvsError::Kernel { op: req.name(), errno, message });
                    }
                }
            }
        }
    }

    /// The IPVS version and connection table size (`ipvsadm`'s first line).
    pub fn info(&mut self) -> Result<Info, IpvsError> {
        let replies = self.exchange(Request::GetInfo)?;
        let reply = replies
            .iter()
            .find(|r| r.cmd == cmd::SET_INFO)
            .ok_or_else(|| IpvsError::Decode("GET_INFO without a reply".into()))?;
        codec::decode_info(&reply.attrs)
    }

    /// Every service in this network namespace, ours or not.
    pub fn services(&mut self) -> Result<Vec<ServiceEntry>, IpvsError> {
        self.exchange(Request::GetServices)?
            .iter()
            .filter(|r| r.cmd == cmd::NEW_SERVICE)
            .map(|r| service_of(&r.attrs))
            .collect()
    }

    /// One service, `None` if the kernel has no such service.
    pub fn service(&mut self, key: &ServiceKey) -> Result<Option<ServiceEntry>, IpvsError> {
        match self.exchange(Request::GetService(key)) {
            Ok(replies) => replies
                .iter()
                .find(|r| r.cmd == cmd::NEW_SERVICE)
                .map(|r| service_of(&r.attrs))
                .transpose(),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Starts the kernel's connection sync daemon of `daemon.role` (as keepalived does for
    /// `lvs_sync_daemon`); [`IpvsError::is_exists`] if one of that role runs already.
    pub fn start_sync_daemon(&mut self, daemon: &SyncDaemon) -> Result<(), IpvsError> {
        self.exchange(Request::NewDaemon(daemon)).map(drop)
    }

    /// Stops the sync daemon of `role`.
    pub fn stop_sync_daemon(&mut self, role: SyncRole) -> Result<(), IpvsError> {
        self.exchange(Request::DelDaemon(role)).map(drop)
    }

    /// Creates a service; [`IpvsError::is_exists`] if it is already there.
    pub fn add_service(&mut self, service: &Service) -> Result<(), IpvsError> {
        self.exchange(Request::NewService(service)).map(drop)
    }

    /// Changes an existing service's scheduler, flags and persistence.
    pub fn update_service(&mut self, service: &Service) -> Result<(), IpvsError> {
        self.exchange(Request::SetService(service)).map(drop)
    }

    /// Removes a service and its destinations.
    pub fn delete_service(&mut self, key: &ServiceKey) -> Result<(), IpvsError> {
        self.exchange(Request::DelService(key)).map(drop)
    }

    /// The destinations of one service with their connection counts and counters.
    pub fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationEntry>, IpvsError> {
        self.exchange(Request::GetDestinations(key))?
            .iter()
            .filter(|r| r.cmd == cmd::NEW_DEST)
            .map(|r| {
                let nested = codec::find_attr(&r.attrs, cmd_attr::DEST)?
                    .ok_or_else(|| IpvsError::Decode("destination reply without DEST".into()))?;
                codec::decode_destination(nested, key.family())
            })
            .collect()
    }

    pub fn add_destination(&mut self, key: &ServiceKey, d: &Destination) -> Result<(), IpvsError> {
        self.exchange(Request::NewDestination(key, d)).map(drop)
    }

    /// Changes weight, forwarding or thresholds of an existing destination.
    pub fn update_destination(
        &mut self,
        key: &ServiceKey,
        d: &Destination,
    ) -> Result<(), IpvsError> {
        self.exchange(Request::SetDestination(key, d)).map(drop)
    }

    pub fn delete_destination(
        &mut self,
        key: &ServiceKey,
        real: SocketAddr,
    ) -> Result<(), IpvsError> {
        self.exchange(Request::DelDestination(key, real)).map(drop)
    }
}

fn service_of(attrs: &[u8]) -> Result<ServiceEntry, IpvsError> {
    let nested = codec::find_attr(attrs, cmd_attr::SERVICE)?
        .ok_or_else(|| IpvsError::Decode("service reply without SERVICE".into()))?;
    codec::decode_service(nested)
}
