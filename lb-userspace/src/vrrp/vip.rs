//! Adding and removing an instance's virtual addresses on its interface (rtnetlink), the way
//! keepalived does: IPv6 VIPs without duplicate address detection (`nodad`), so they answer at
//! once; "already there" on add and "not there" on remove are success.
//!
//! Before an instance can have been MASTER, any of its VIPs found on the interface is stale (left
//! by a crashed run, or added by hand) and is removed: a BACKUP holding the VIP would answer ARP for
//! it and split the traffic. [`remove_present`] does that at start and on every MASTER exit.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use anyhow::{Context, Result};
use futures::TryStreamExt as _;
use rtnetlink::{
    AddressMessageBuilder,
    packet_route::address::{AddressAttribute, AddressHeaderFlags},
};

use crate::config::vrrp::VirtualAddress;

/// The address operations the VRRP runner needs; [`Netlink`] on a real host, a fake in tests.
pub trait AddressOps: Send + Sync {
    /// Addresses on the interface, with their prefix lengths, in the kernel's order (IPv4: the
    /// primary address of each subnet first).
    fn list(&self, ifindex: u32) -> impl Future<Output = Result<Vec<VirtualAddress>>> + Send;
    /// Adds an address; success if it is already there.
    fn add(&self, ifindex: u32, addr: VirtualAddress) -> impl Future<Output = Result<()>> + Send;
    /// Removes an address (prefix as on the interface); success if it is gone already.
    fn remove(&self, ifindex: u32, addr: VirtualAddress)
    -> impl Future<Output = Result<()>> + Send;
}

/// The addresses in `present` that are one of `vips` (same address, whatever the prefix), with the
/// prefix they have on the interface — the one needed to remove them.
pub fn present_vips(present: &[VirtualAddress], vips: &[VirtualAddress]) -> Vec<VirtualAddress> {
    present.iter().filter(|p| vips.iter().any(|v| v.address == p.address)).copied().collect()
}

/// Removes every VIP of `vips` found on the interface; returns those removed. Every VIP is tried
/// even if one fails; the first error is returned after that.
pub async fn remove_present<O: AddressOps>(
    ops: &O,
    ifindex: u32,
    vips: &[VirtualAddress],
) -> Result<Vec<VirtualAddress>> {
    let present = ops.list(ifindex).await?;
    let stale = present_vips(&present, vips);
    let mut first_err = None;
    let mut removed = Vec::new();
    for addr in stale {
        match ops.remove(ifindex, addr).await {
            Ok(()) => removed.push(addr),
            Err(e) => {
                first_err
                    .get_or_insert(e.context(format!("removing {}/{}", addr.address, addr.prefix)));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

/// Adds every VIP; every one is tried even if one fails, the first error is returned.
pub async fn add_all<O: AddressOps>(ops: &O, ifindex: u32, vips: &[VirtualAddress]) -> Result<()> {
    let mut first_err = None;
    for &addr in vips {
        if let Err(e) = ops.add(ifindex, addr).await {
            first_err.get_or_insert(e.context(format!("adding {}/{}", addr.address, addr.prefix)));
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// The first address of `family_v6`'s family on the interface that is not a VIP: the adverts'
/// source, as keepalived picks it (IPv4: the interface's primary address; IPv6: its link-local
/// address).
pub fn primary_address(
    present: &[VirtualAddress],
    all_vips: &[IpAddr],
    family_v6: bool,
) -> Option<IpAddr> {
    present.iter().map(|p| p.address).filter(|a| !all_vips.contains(a)).find(|a| match a {
        IpAddr::V4(_) => !family_v6,
        IpAddr::V6(v6) => family_v6 && (v6.segments()[0] & 0xffc0) == 0xfe80,
    })
}

/// [`AddressOps`] over rtnetlink. Clones share the connection and serialise their dumps: the
/// kernel runs one dump at a time per netlink socket and answers a second with EBUSY.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    dump: Arc<tokio::sync::Mutex<()>>,
}

impl Netlink {
    pub fn new(handle: rtnetlink::Handle) -> Netlink {
        Netlink { handle, dump: Arc::new(tokio::sync::Mutex::new(())) }
    }
}

/// Whether a netlink error carries `errno`.
fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

impl AddressOps for Netlink {
    fn list(&self, ifindex: u32) -> impl Future<Output = Result<Vec<VirtualAddress>>> + Send {
        let (handle, dump) = (self.handle.clone(), self.dump.clone());
        async move {
            let _one_at_a_time = dump.lock().await;
            let mut out = Vec::new();
            let mut stream = handle.address().get().set_link_index_filter(ifindex).execute();
            while let Some(msg) = stream.try_next().await.context("listing addresses")? {
                // IPv4 point-to-point links have a peer in IFA_ADDRESS: IFA_LOCAL is ours.
                let local = msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let addr = local.or_else(|| {
                    msg.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                });
                if let Some(address) = addr {
                    out.push(VirtualAddress { address, prefix: msg.header.prefix_len });
                }
            }
            Ok(out)
        }
    }

    fn add(&self, ifindex: u32, addr: VirtualAddress) -> impl Future<Output = Result<()>> + Send {
        let handle = self.handle.clone();
        async move {
            let mut req = handle.address().add(ifindex, addr.address, addr.prefix);
            if addr.address.is_ipv6() {
                // Usable at once: a VIP that moves must not wait for (or fail) DAD.
                req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
            }
            match req.execute().await {
                Ok(()) => Ok(()),
                Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }

    fn remove(
        &self,
        ifindex: u32,
        addr: VirtualAddress,
    ) -> impl Future<Output = Result<()>> + Send {
        let handle = self.handle.clone();
        async move {
            let msg = match addr.address {
                IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
                    .index(ifindex)
                    .address(a, addr.prefix)
                    .build(),
                IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
                    .index(ifindex)
                    .address(a, addr.prefix)
                    .build(),
            };
            match handle.address().del(msg).execute().await {
                Ok(()) => Ok(()),
                Err(e)
                    if is_errno(&e, libc::EADDRNOTAVAIL)
                        || is_errno(&e, libc::ENOENT)
                        || is_errno(&e, libc::ENODEV) =>
                {
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex},
    };

    use super::*;

    /// An in-memory interface table that records every call.
    #[derive(Clone, Default)]
    pub struct FakeAddrs {
        pub addrs: Arc<Mutex<HashMap<u32, Vec<VirtualAddress>>>>,
        pub calls: Arc<Mutex<Vec<String>>>,
        /// Addresses whose removal fails.
        pub fail_remove: Arc<Mutex<Vec<IpAddr>>>,
    }

    impl FakeAddrs {
        pub fn with(ifindex: u32, addrs: &[&str]) -> FakeAddrs {
            let f = FakeAddrs::default();
            f.addrs.lock().unwrap().insert(ifindex, addrs.iter().map(|a| va(a)).collect());
            f
        }

        pub fn on(&self, ifindex: u32) -> Vec<String> {
            let addrs = self.addrs.lock().unwrap();
            addrs
                .get(&ifindex)
                .map(|v| v.iter().map(|a| format!("{}/{}", a.address, a.prefix)).collect())
                .unwrap_or_default()
        }
    }

    /// "192.0.2.1/24" → VirtualAddress.
    pub fn va(s: &str) -> VirtualAddress {
        let (a, p) = s.split_once('/').unwrap();
        VirtualAddress { address: a.parse().unwrap(), prefix: p.parse().unwrap() }
    }

    impl AddressOps for FakeAddrs {
        fn list(&self, ifindex: u32) -> impl Future<Output = Result<Vec<VirtualAddress>>> + Send {
            let out = self.addrs.lock().unwrap().get(&ifindex).cloned().unwrap_or_default();
            self.calls.lock().unwrap().push(format!("list {ifindex}"));
            async move { Ok(out) }
        }

        fn add(&self, ifindex: u32, a: VirtualAddress) -> impl Future<Output = Result<()>> + Send {
            self.calls.lock().unwrap().push(format!("add {}/{}", a.address, a.prefix));
            let mut addrs = self.addrs.lock().unwrap();
            let list = addrs.entry(ifindex).or_default();
            if !list.iter().any(|p| p.address == a.address && p.prefix == a.prefix) {
                list.push(a);
            }
            async { Ok(()) }
        }

        fn remove(
            &self,
            ifindex: u32,
            a: VirtualAddress,
        ) -> impl Future<Output = Result<()>> + Send {
            self.calls.lock().unwrap().push(format!("del {}/{}", a.address, a.prefix));
            let fail = self.fail_remove.lock().unwrap().contains(&a.address);
            if !fail {
                let mut addrs = self.addrs.lock().unwrap();
                if let Some(list) = addrs.get_mut(&ifindex) {
                    list.retain(|p| !(p.address == a.address && p.prefix == a.prefix));
                }
            }
            async move { if fail { Err(anyhow::anyhow!("EPERM")) } else { Ok(()) } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{FakeAddrs, va};
    use super::*;

    #[tokio::test]
    async fn stale_vips_are_removed_with_the_prefix_they_have() {
        // The VIP was left as /24 by hand; the config says /32. The primary stays.
        let f = FakeAddrs::with(2, &["192.0.2.12/24", "192.0.2.200/24", "2001:db8::200/64"]);
        let vips = [va("192.0.2.200/32"), va("192.0.2.201/32")];
        let removed = remove_present(&f, 2, &vips).await.unwrap();
        assert_eq!(removed, [va("192.0.2.200/24")]);
        assert_eq!(f.on(2), ["192.0.2.12/24", "2001:db8::200/64"]);
        // Nothing left: a second pass only lists.
        f.calls.lock().unwrap().clear();
        assert!(remove_present(&f, 2, &vips).await.unwrap().is_empty());
        assert_eq!(*f.calls.lock().unwrap(), ["list 2"]);
    }

    #[tokio::test]
    async fn a_failed_removal_does_not_stop_the_others() {
        let f = FakeAddrs::with(2, &["192.0.2.200/32", "192.0.2.201/32"]);
        f.fail_remove.lock().unwrap().push("192.0.2.200".parse().unwrap());
        let err =
            remove_present(&f, 2, &[va("192.0.2.200/32"), va("192.0.2.201/32")]).await.unwrap_err();
        assert!(format!("{err:#}").contains("removing 192.0.2.200/32"), "{err:#}");
        assert_eq!(f.on(2), ["192.0.2.200/32"]);
    }

    #[tokio::test]
    async fn add_then_remove_round_trips_and_is_idempotent() {
        let f = FakeAddrs::with(3, &["fe80::1/64"]);
        let vips = [va("2001:db8::200/64"), va("2001:db8::201/128")];
        add_all(&f, 3, &vips).await.unwrap();
        add_all(&f, 3, &vips).await.unwrap();
        assert_eq!(f.on(3), ["fe80::1/64", "2001:db8::200/64", "2001:db8::201/128"]);
        remove_present(&f, 3, &vips).await.unwrap();
        assert_eq!(f.on(3), ["fe80::1/64"]);
    }

    #[test]
    fn primary_address_skips_vips_and_picks_link_local_for_v6() {
        let present = [
            va("192.0.2.200/32"),
            va("192.0.2.12/24"),
            va("2001:db8::12/64"),
            va("fe80::ff:fe00:c/64"),
        ];
        let vips: Vec<IpAddr> = vec!["192.0.2.200".parse().unwrap()];
        assert_eq!(primary_address(&present, &vips, false), Some("192.0.2.12".parse().unwrap()));
        assert_eq!(
            primary_address(&present, &vips, true),
            Some("fe80::ff:fe00:c".parse().unwrap())
        );
        assert_eq!(primary_address(&[va("192.0.2.200/32")], &vips, false), None);
    }

    /// The real thing, in a private namespace: add/remove on a veth (no dummy module here).
    #[test]
    fn netlink_add_remove_on_a_real_interface() {
        if !crate::testutil::require_root("VIP add/remove") {
            return;
        }
        std::thread::spawn(|| {
            crate::testutil::private_netns();
            let ip = |args: &[&str]| {
                let st = std::process::Command::new("ip").args(args).status().unwrap();
                assert!(st.success(), "ip {args:?}");
            };
            ip(&["link", "add", "vipt0", "type", "veth", "peer", "name", "vipt1"]);
            ip(&["link", "set", "vipt0", "up"]);
            ip(&["addr", "add", "192.0.2.12/24", "dev", "vipt0"]);
            ip(&["addr", "add", "192.0.2.200/24", "dev", "vipt0"]); // stale, wrong prefix
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (conn, handle, _) = rtnetlink::new_connection().unwrap();
                tokio::spawn(conn);
                let nl = Netlink::new(handle);
                let idx = crate::net::iface::index("vipt0").unwrap();
                let vips = [va("192.0.2.200/32"), va("2001:db8::200/64")];
                let removed = remove_present(&nl, idx, &vips).await.unwrap();
                assert_eq!(removed, [va("192.0.2.200/24")]);
                add_all(&nl, idx, &vips).await.unwrap();
                add_all(&nl, idx, &vips).await.unwrap(); // EEXIST is fine
                let now = nl.list(idx).await.unwrap();
                assert!(now.contains(&va("192.0.2.200/32")), "{now:?}");
                assert!(now.contains(&va("2001:db8::200/64")), "{now:?}");
                // nodad: not tentative (ip shows "tentative" otherwise).
                let out = std::process::Command::new("ip")
                    .args(["-6", "addr", "show", "dev", "vipt0"])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                let line = text.lines().find(|l| l.contains("2001:db8::200")).unwrap();
                assert!(!line.contains("tentative"), "{line}");
                remove_present(&nl, idx, &vips).await.unwrap();
                nl.remove(idx, va("192.0.2.200/32")).await.unwrap(); // gone already: fine
                let after = nl.list(idx).await.unwrap();
                assert!(!after.iter().any(|a| vips.iter().any(|v| v.address == a.address)));
                assert!(after.contains(&va("192.0.2.12/24")));
            });
        })
        .join()
        .unwrap();
    }
}
