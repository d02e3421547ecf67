//! The guest tests: `#[ignore]`d tests that need kernel features the host lacks (IPVS, 8021q,
//! tunnel modules). `cargo xtask vm test` builds this target statically and runs it in a qemu
//! guest (skipping `vm_bench::`, which `cargo xtask vm bench` runs); on the host they are only
//! compiled. `vm_net` builds the guest's namespace labs, `vm_agent` drives the real `lb` there.

mod vm_agent;
mod vm_bench;
mod vm_dataplane;
mod vm_flow_sync;
mod vm_forwarding;
mod vm_net;
mod vm_smoke;
mod vm_tunnels;
mod vm_vrrp;
mod vm_xdp_vlan;

// What the test modules take from the dataplane (as `super::...`).
use lb::dataplane::ipvs::{
    Destination, DestinationEntry, Forward, Ipvs, IpvsDataplane, Protocol, Service, ServiceEntry,
    ServiceFlags, ServiceKey, TunnelEncap,
};
