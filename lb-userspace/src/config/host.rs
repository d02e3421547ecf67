//! What validation needs to know about the machine, behind a trait so tests do not depend on
//! the interfaces of whatever host runs them.

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Facts about the host a configuration is validated against.
pub trait HostView {
    fn interface_exists(&self, name: &str) -> bool;

    /// The addresses of this host's interfaces, which no real server may have (lb forwards to
    /// other hosts). A host that does not know them (a config converted for another machine)
    /// has none.
    ///
    /// # Errors
    /// When the kernel cannot list them.
    fn own_addresses(&self) -> io::Result<Vec<IpAddr>> {
        Ok(Vec::new())
    }

    /// Whether `address` is assigned to one of this host's interfaces (a host that cannot list
    /// them says no).
    fn has_address(&self, address: IpAddr) -> bool {
        self.own_addresses().is_ok_and(|a| a.contains(&address))
    }

    /// Whether an executable `name` is on PATH. Hosts that do not know say yes.
    fn has_program(&self, _name: &str) -> bool {
        true
    }

    /// Whether the host has a route to `address` (tunnels to reals of the other family than
    /// their VIP need one). Hosts that do not know say yes.
    fn has_route(&self, _address: IpAddr) -> bool {
        true
    }
}

/// The real host, queried through the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemHost;

impl HostView for SystemHost {
    fn interface_exists(&self, name: &str) -> bool {
        // A name with an interior NUL cannot be an interface name.
        let Ok(name) = CString::new(name) else {
            return false;
        };
        // SAFETY: `name` is a valid NUL-terminated string that outlives the call; the function
        // only reads it.
        unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
    }

    fn has_route(&self, address: IpAddr) -> bool {
        // Connecting a UDP socket is a route lookup and sends nothing; ENETUNREACH means none.
        let local: IpAddr = if address.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        std::net::UdpSocket::bind((local, 0)).and_then(|s| s.connect((address, 9))).is_ok()
    }

    fn has_program(&self, name: &str) -> bool {
        let Some(path) = std::env::var_os("PATH") else {
            return false;
        };
        std::env::split_paths(&path).any(|dir| is_executable(&dir.join(name)))
    }

    fn own_addresses(&self) -> io::Result<Vec<IpAddr>> {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: on success `list` is a linked list the C library allocated; it is read below
        // and freed exactly once with freeifaddrs.
        if unsafe { libc::getifaddrs(&raw mut list) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut addresses = Vec::new();
        let mut node = list;
        while !node.is_null() {
            // SAFETY: `node` is a live entry of the list, not freed yet.
            let entry = unsafe { &*node };
            // SAFETY: `ifa_addr` is null or points to a sockaddr whose family says which
            // sockaddr_* it really is.
            if let Some(address) = unsafe { ip_of(entry.ifa_addr) } {
                addresses.push(address);
            }
            node = entry.ifa_next;
        }
        // SAFETY: `list` came from getifaddrs and nothing refers to it any more.
        unsafe { libc::freeifaddrs(list) };
        Ok(addresses)
    }
}

fn is_executable(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The IP address in `sockaddr`, when it holds one.
///
/// # Safety
/// `sockaddr` is null or points to a valid socket address of the size its family implies.
unsafe fn ip_of(sockaddr: *const libc::sockaddr) -> Option<IpAddr> {
    if sockaddr.is_null() {
        return None;
    }
    // SAFETY: the caller's promise; the family decides the cast.
    unsafe {
        match i32::from((*sockaddr).sa_family) {
            libc::AF_INET => {
                let v4 = &*sockaddr.cast::<libc::sockaddr_in>();
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                let v6 = &*sockaddr.cast::<libc::sockaddr_in6>();
                Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_host_sees_loopback_only() {
        let cases = [
            ("lo", true),
            ("lb-no-such-if0", false),
            ("", false),
            ("lo\0", false),
            ("a-name-longer-than-ifnamsiz", false),
        ];
        for (name, exists) in cases {
            assert_eq!(SystemHost.interface_exists(name), exists, "{name:?}");
        }
    }

    /// The loopback address is on every host, and nothing is listed that is not an address.
    #[test]
    fn system_host_lists_its_own_addresses() {
        let addresses = SystemHost.own_addresses().unwrap();
        assert!(addresses.contains(&Ipv4Addr::LOCALHOST.into()), "{addresses:?}");
        assert!(!addresses.iter().any(IpAddr::is_unspecified), "{addresses:?}");
    }

    #[test]
    fn system_host_addresses_and_programs() {
        assert!(SystemHost.has_address(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        // Documentation range: never assigned outside test namespaces.
        assert!(!SystemHost.has_address("203.0.113.254".parse().unwrap()));
        assert!(SystemHost.has_program("sh"));
        assert!(!SystemHost.has_program("lb-no-such-program"));
    }
}
