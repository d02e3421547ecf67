//! The control socket: a Unix stream socket (mode 0600) speaking one JSON request and one JSON
//! response per connection, newline-terminated. `lb backends`/`lb status` are its clients; so can
//! scripts be (`echo '{"command":"backends"}' | socat - UNIX:/run/lb/lb.sock`).

pub mod client;
pub mod proto;
pub mod server;

/// Where the agent listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/lb/lb.sock";

/// Longest request line accepted; anything longer is refused without being buffered.
pub const MAX_REQUEST: usize = 64 * 1024;
