//! An embedded VRRP engine, wire-compatible with keepalived, so a pair of directors can fail over
//! without running keepalived next to `lb`.
//!
//! This is the pure core: [`packet`] encodes and validates adverts, [`machine`] is the RFC 5798
//! state machine driven by events and a caller-supplied clock, and [`frame`] unwraps captured
//! frames. Sockets, timers and address/netlink changes live in the layer that wraps these.

pub mod frame;
pub mod machine;
pub mod packet;

pub use machine::{
    Action, Event, Garp, IgnoreReason, Instance, MasterInfo, OWNER_PRIORITY, Settings,
    SettingsError, State,
};
pub use packet::{
    Advert, Auth, ChecksumForm, EncodeError, Expect, Family, IpMeta, Kind, Note, PacketError,
    Received, Version,
};
