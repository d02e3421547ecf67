//! Flow-state sync between directors (issue #17), wire-compatible with the kernel's IPVS sync
//! daemon. So far only the message codec ([`codec`]): pure, no sockets; the rest of the feature
//! (sockets, agent wiring, applying entries to the flow table) builds on it. The wire format as
//! implemented is described in docs/flow-sync.md.

pub mod codec;
pub mod edge;

pub use codec::{
    ConnFlags, DecodeError, EncodeError, FwdMethod, PeData, Seq, SeqOptions, SyncConn, SyncMessage,
    decode, encode_batch,
};
