//! What validation needs to know about the machine, behind a trait so tests do not depend on
//! the interfaces of whatever host runs them.

use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Facts about the host a configuration is validated against.
pub trait HostView {
    fn interface_exists(&self, name: &str) -> bool;

    /// Whether `address` is assigned to one of this host's interfaces. Hosts that do not know
    /// (configs converted or fuzzed for another machine) say no.
    fn has_address(&self, _address: IpAddr) -> bool {
        false
    }

    /// Whether an executable `name` is on PATH. Hosts that do not know say yes.
    fn has_program(&self, _name: &str) -> bool {
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

    fn has_address(&self, address: IpAddr) -> bool {
        local_addresses().contains(&address)
    }

    fn has_program(&self, name: &str) -> bool {
        let Some(path) = std::env::var_os("PATH") else {
            return false;
        };
        std::env::split_paths(&path).any(|dir| is_executable(&dir.join(name)))
    }
}

fn is_executable(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The addresses of every interface, from `getifaddrs`; empty if it fails.
fn local_addresses() -> Vec<IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success the list is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut addresses = Vec::new();
    let mut entry = head;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list `getifaddrs` returned, not yet freed.
        let ifa = unsafe { &*entry };
        if let Some(address) = socket_address(ifa.ifa_addr) {
            addresses.push(address);
        }
        entry = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful `getifaddrs` and is freed once.
    unsafe { libc::freeifaddrs(head) };
    addresses
}

/// The IP address in a `sockaddr`, when it is one.
fn socket_address(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: `sa` points at a sockaddr whose family says how large it is.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*sa.cast::<libc::sockaddr_in>();
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                let sin6 = &*sa.cast::<libc::sockaddr_in6>();
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
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

    #[test]
    fn system_host_addresses_and_programs() {
        assert!(SystemHost.has_address(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        // Documentation range: never assigned outside test namespaces.
        assert!(!SystemHost.has_address("203.0.113.254".parse().unwrap()));
        assert!(SystemHost.has_program("sh"));
        assert!(!SystemHost.has_program("lb-no-such-program"));
    }
}
