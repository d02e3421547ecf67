//! An embedded VRRP engine, wire-compatible with keepalived, so a pair of directors can fail over
//! without running keepalived next to `lb`.
//!
//! The pure core: [`packet`] encodes and validates adverts, [`machine`] is the RFC 5798 state
//! machine driven by events and a caller-supplied clock, and [`frame`] unwraps captured frames.
//!
//! The I/O layer around it: [`runner::VrrpEngine`] runs one task per instance, with raw VRRP
//! sockets ([`socket`]), VIPs on the interface ([`vip`]), gratuitous ARPs / unsolicited NAs
//! ([`announce`]), tracked interfaces and scripts ([`track`]) and notify scripts ([`notify`]),
//! publishing a [`status::VrrpStatus`] watch.

pub mod announce;
pub mod frame;
pub mod machine;
pub mod notify;
pub mod packet;
pub mod runner;
pub mod socket;
pub mod status;
#[cfg(test)]
mod tests;
pub mod track;
#[cfg(test)]
mod tshark_oracle;
pub mod vip;

pub use machine::{
    Action, Event, Garp, IgnoreReason, Instance, MasterInfo, OWNER_PRIORITY, Settings,
    SettingsError, State,
};
pub use packet::{
    Advert, Auth, ChecksumForm, EncodeError, Expect, Family, IpMeta, Kind, Note, PacketError,
    Received, Version,
};
pub use runner::{Hooks, MasterRequest, OnState, StateChange, VrrpEngine};
pub use status::{Counters, InstanceStatus, VrrpStatus};
