//! A client for the kernel's IPVS over generic netlink (family `IPVS`, `linux/ip_vs.h`): create,
//! change, list and delete services and their destinations, read their counters.
//!
//! It is the IPVS dataplane's only way into the kernel, and it never flushes: rules that others
//! (keepalived, an operator with `ipvsadm`) put there are left alone. [`probe`] tells whether the
//! kernel has IPVS at all; the agent falls back to XDP-only when it says
//! [`IpvsError::NotAvailable`].
//!
//! Layers: [`model`] is the typed data, [`codec`] maps it to and from netlink bytes (pure,
//! pinned by byte fixtures), [`client`] owns the socket.

pub mod client;
pub mod codec;
pub mod dataplane;
pub mod model;
mod uapi;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use client::Ipvs;
pub use codec::Request;
pub use dataplane::IpvsDataplane;
pub use model::{
    Destination, DestinationEntry, Family, Forward, Info, Protocol, Service, ServiceEntry,
    ServiceFlags, ServiceKey, Stats, TunnelEncap,
};

/// What can go wrong talking to IPVS.
#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The kernel has no IPVS: this is the answer of the fallback probe.
    #[error("IPVS not available: generic netlink family IPVS not found")]
    NotAvailable,
    #[error("generic netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("no reply from the kernel within {0:?}")]
    Timeout(Duration),
    /// The kernel refused a request; `errno` is positive, `message` its extended-ACK text.
    #[error("{op}: {}{}", std::io::Error::from_raw_os_error(*errno),
        message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel { op: &'static str, errno: i32, message: Option<String> },
    #[error("malformed IPVS reply: {0}")]
    Decode(String),
    /// Refused before sending: the kernel would reject or truncate it.
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

impl IpvsError {
    /// The kernel's errno, for callers that react to specific refusals.
    pub fn errno(&self) -> Option<i32> {
        match self {
            IpvsError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The service or destination being added is already there (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// No such service (`ESRCH`) or destination (`ENOENT`; also an unknown scheduler on add).
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno(), Some(libc::ESRCH | libc::ENOENT))
    }
}

/// Whether this kernel can do IPVS: its version if so, [`IpvsError::NotAvailable`] if the
/// generic netlink family is missing. Needs `CAP_NET_ADMIN` for the version (else `EPERM`).
pub fn probe() -> Result<Info, IpvsError> {
    Ipvs::open()?.info()
}
