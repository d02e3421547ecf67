//! The `lb` director agent: config model and front ends, XDP dataplane, control socket and CLI.

pub mod agent;
pub mod bgp;
pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod desired;
#[cfg(any(test, feature = "test-support"))]
pub mod fixture;
pub mod health;
pub mod listen;
pub mod logging;
pub mod maglev;
pub mod metrics;
pub mod net;
pub mod overrides;
pub mod sdnotify;
pub mod status;
pub mod sync;
#[cfg(test)]
mod testutil;
pub mod vrrp;
