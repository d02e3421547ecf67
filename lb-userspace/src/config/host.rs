//! What validation needs to know about the machine, behind a trait so tests do not depend on
//! the interfaces of whatever host runs them.

use std::ffi::CString;

/// Facts about the host a configuration is validated against.
pub trait HostView {
    fn interface_exists(&self, name: &str) -> bool;
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
}
