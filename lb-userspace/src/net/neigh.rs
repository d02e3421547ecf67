//! Real-server MACs from the kernel neighbour table (rtnetlink). Operators never type MACs: the
//! agent provokes resolution (a datagram towards the real makes the kernel ARP/ND for it) and reads
//! the result back.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use foldhash::HashMap;
use futures::TryStreamExt as _;
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};

use super::Mac;

/// Usable neighbour entries: (ifindex, address) → MAC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Neighbours(pub HashMap<(u32, IpAddr), Mac>);

impl Neighbours {
    pub fn get(&self, ifindex: u32, addr: IpAddr) -> Option<Mac> {
        self.0.get(&(ifindex, addr)).copied()
    }
}

/// States whose link-layer address can be used to send to the neighbour.
fn usable(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    )
}

/// Reads the whole neighbour table (IPv4 and IPv6).
pub async fn dump(handle: &rtnetlink::Handle) -> Result<Neighbours, rtnetlink::Error> {
    let mut out = Neighbours::default();
    let mut stream = handle.neighbours().get().execute();
    while let Some(msg) = stream.try_next().await? {
        if !usable(msg.header.state) {
            continue;
        }
        let mut addr = None;
        let mut mac = None;
        for attr in &msg.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    addr = Some(IpAddr::V4(*a))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    addr = Some(IpAddr::V6(*a))
                }
                NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(l);
                    mac = Some(Mac(m));
                }
                _ => {}
            }
        }
        if let (Some(a), Some(m)) = (addr, mac) {
            out.0.insert((msg.header.ifindex, a), m);
        }
    }
    Ok(out)
}

/// Makes the kernel resolve `addr` on `ifname` by sending it one empty UDP datagram (discard port)
/// out of that interface. The real may answer with an ICMP port-unreachable; that is harmless.
pub fn provoke(ifname: &str, addr: IpAddr) -> io::Result<()> {
    let domain = match addr {
        IpAddr::V4(_) => socket2::Domain::IPV4,
        IpAddr::V6(_) => socket2::Domain::IPV6,
    };
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
    sock.bind_device(Some(ifname.as_bytes()))?;
    sock.send_to(&[], &SocketAddr::new(addr, 9).into())?;
    Ok(())
}

/// Resolves every wanted (ifindex, ifname, address), provoking resolution for those missing, until
/// all are known or `timeout` passes. Returns the table as last read; missing entries stay missing.
pub async fn resolve(
    handle: &rtnetlink::Handle,
    wanted: &[(u32, String, IpAddr)],
    timeout: Duration,
) -> Result<Neighbours, rtnetlink::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut provoked = false;
    loop {
        let table = dump(handle).await?;
        let missing: Vec<_> =
            wanted.iter().filter(|(idx, _, a)| table.get(*idx, *a).is_none()).collect();
        if missing.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(table);
        }
        if !provoked {
            for (_, ifname, addr) in &missing {
                if let Err(e) = provoke(ifname, *addr) {
                    tracing::warn!(real = %addr, interface = %ifname, error = %e, "cannot provoke neighbour resolution");
                }
            }
            provoked = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
