//! The `lb` director agent: config model and front ends, XDP dataplane, control socket and CLI.

pub mod agent;
pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod desired;
pub mod maglev;
pub mod net;
#[cfg(test)]
mod testutil;
