//! Health checks: keepalived's checkers, their policies and the runner that feeds the dataplane.
//!
//! The decisions (when to run a check, when a real or a quorum flips) are pure functions in
//! [`policy`] and [`quorum`], tested with a fake clock; the checkers in [`check`] do the I/O of one
//! attempt each; [`monitor`] runs them on tokio and publishes a [`state::HealthSnapshot`].

pub mod check;
pub mod monitor;
pub mod policy;
pub mod probe;
pub mod quorum;
mod random;
pub mod script;
pub mod state;

pub use monitor::{
    DEFAULT_CONCURRENCY, HealthMonitor, MonitorError, MonitoredReal, monitored_reals,
};
