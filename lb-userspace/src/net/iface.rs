//! Interface facts through plain ioctls (no sysfs: it may show another network namespace).

use std::{ffi::CString, io, os::fd::AsRawFd};

use super::Mac;

/// What the agent needs to know about an interface it attaches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub mac: Mac,
    /// Kernel driver name (`veth`, `mlx5_core`, ...), used to pick the XDP mode.
    pub driver: String,
}

/// Looks an interface up by name.
pub fn lookup(name: &str) -> io::Result<Interface> {
    let ifindex = index(name)?;
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let mac = hwaddr(sock.as_raw_fd(), name)?;
    // Not every device answers ETHTOOL_GDRVINFO (e.g. lo); an unknown driver is not an error.
    let driver = driver(sock.as_raw_fd(), name).unwrap_or_default();
    Ok(Interface { name: name.to_owned(), ifindex, mac, driver })
}

/// Looks an interface up by index.
pub fn lookup_index(ifindex: u32) -> io::Result<Interface> {
    let name = nix::net::if_::if_indextoname(ifindex)?;
    lookup(&name.to_string_lossy())
}

/// Interface index, or NotFound.
pub fn index(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    nix::net::if_::if_nametoindex(c.as_c_str()).map_err(|_| {
        io::Error::new(io::ErrorKind::NotFound, format!("interface `{name}` does not exist"))
    })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

fn hwaddr(fd: i32, name: &str) -> io::Result<Mac> {
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIFHWADDR fills `ifr_hwaddr` of a valid ifreq.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote the sockaddr variant of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(data.iter()) {
        *dst = *src as u8;
    }
    Ok(Mac(mac))
}

/// `struct ethtool_drvinfo` (linux/ethtool.h), only the leading fields we read.
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

fn driver(fd: i32, name: &str) -> io::Result<String> {
    // SAFETY: plain old data.
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_data = (&mut info as *mut EthtoolDrvinfo).cast();
    // SAFETY: SIOCETHTOOL with GDRVINFO writes into `info`, which outlives the call.
    if unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(info.driver.len());
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Every address of every interface, as (interface name, address), in the kernel's order.
pub fn addresses() -> io::Result<Vec<(String, std::net::IpAddr)>> {
    let all = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(all
        .filter_map(|a| {
            let sa = a.address?;
            let ip = match (sa.as_sockaddr_in(), sa.as_sockaddr_in6()) {
                (Some(v4), _) => std::net::IpAddr::V4(v4.ip()),
                (_, Some(v6)) => std::net::IpAddr::V6(v6.ip()),
                _ => return None,
            };
            Some((a.interface_name, ip))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_missing_is_not() {
        let lo = lookup("lo").expect("lo exists in every namespace");
        assert_eq!(lo.ifindex, index("lo").expect("lo index"));
        assert_eq!(lo.mac, Mac([0; 6]));
        let err = lookup("lbnosuch0").expect_err("no such interface");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn addresses_name_their_interface() {
        let all = addresses().expect("getifaddrs");
        let lo = ("lo".to_owned(), std::net::IpAddr::from([127, 0, 0, 1]));
        assert!(all.contains(&lo), "{all:?}");
    }
}
