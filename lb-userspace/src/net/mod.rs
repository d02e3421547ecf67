//! Host networking the agent reads: interfaces (index, MAC, driver) and the neighbour table.

pub mod checksum;
pub mod iface;
pub mod neigh;
pub mod realserver;
pub mod route;

/// A MAC address; formatted the way `ip link` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}
