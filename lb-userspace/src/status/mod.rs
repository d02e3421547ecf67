//! The live status page (`lb run --http ADDR`): one embedded HTML page (no outside asset) that
//! polls `/api/v1/status`. The API serves the same views as `lb status --json` and
//! `lb backends --json`, plus what only the agent can remember: a bounded ring of rate samples
//! for the charts and a bounded ring of recent events, both derived here from successive views.

mod history;
mod server;

pub use history::{Event, History, Sample};
pub use server::{API_PATH, MAX_CONNECTIONS, api_json, serve, spawn_sampler};

/// The page itself: HTML, CSS and JS in one file, embedded in the binary.
pub const PAGE: &str = include_str!("page.html");
