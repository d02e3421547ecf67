//! Which interface a real server is reachable on, from the kernel's routing table.

use std::net::IpAddr;

use futures::TryStreamExt as _;
use rtnetlink::{RouteMessageBuilder, packet_route::route::RouteAttribute};

/// How the kernel would reach an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Egress {
    pub ifindex: u32,
    /// True when the route has a gateway: the address is not on the link, so DR cannot reach it.
    pub via_gateway: bool,
}

/// Asks the kernel for the route to `addr` (like `ip route get`). `None` when there is no route.
pub async fn egress(
    handle: &rtnetlink::Handle,
    addr: IpAddr,
) -> Result<Option<Egress>, rtnetlink::Error> {
    let prefix = if addr.is_ipv4() { 32 } else { 128 };
    let Ok(builder) = RouteMessageBuilder::<IpAddr>::new().destination_prefix(addr, prefix) else {
        return Ok(None);
    };
    let mut stream = handle.route().get(builder.build()).execute();
    let msg = match stream.try_next().await {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(None),
        // Unreachable destinations come back as an error from the kernel.
        Err(rtnetlink::Error::NetlinkError(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Egress { ifindex: 0, via_gateway: false };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Oif(i) => out.ifindex = *i,
            RouteAttribute::Gateway(_) => out.via_gateway = true,
            _ => {}
        }
    }
    Ok((out.ifindex != 0).then_some(out))
}
