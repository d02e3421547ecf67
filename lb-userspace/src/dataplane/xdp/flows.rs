//! `lb flows`: the XDP flow table read through its own handle on the map, so a listing of a
//! million entries runs without the agent lock, and stops at a limit and a time budget.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsFd as _,
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData};
use lb_common::{
    Addr, BINDING_F_SYNC, Binding, FAMILY_V4, FlowKey, FlowRecent, IPPROTO_TCP, IPPROTO_UDP,
};

use super::super::DataplaneError;
use crate::control::proto::{FlowView, FlowsView};

/// IPVS's default timeout of an established TCP connection: what a sync peer is told, and the
/// least TCP entry timeout of the program (`tcp_entry_timeout`). `lb flows` shows the time left
/// until the program stops following an entry, counted from its last packet, never below 0.
pub const TCP_ESTABLISHED_TIMEOUT: u32 = 900;

/// The real a slot names, and the generation that makes a binding to it current.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotReal {
    pub addr: SocketAddr,
    pub generation: u32,
}

/// What `lb flows` needs, taken under the agent lock (a map handle and the slot names: small);
/// `read` then walks the table without it.
pub struct FlowSource {
    flows: BpfHashMap<MapData, FlowKey, Binding>,
    pub(super) reals: HashMap<u32, SlotReal>,
    pub(super) udp_timeout: u32,
    /// The program's TCP entry timeout.
    pub(super) tcp_timeout: u32,
    /// The map's size: a walk never takes more steps than twice this (an LRU that evicts the
    /// key a walk stands on sends it back to the first key).
    pub(super) max_entries: u32,
}

/// A second handle (a dup of the file descriptor) on a map of the loaded program.
pub(super) fn dup_map(map: &Map, name: &'static str) -> Result<MapData, DataplaneError> {
    let data = match map {
        Map::LruHashMap(d) | Map::HashMap(d) | Map::Array(d) => d,
        _ => return Err(DataplaneError::MissingMap(name)),
    };
    let fd = data.fd().as_fd().try_clone_to_owned().map_err(|e| DataplaneError::Map {
        map: name,
        source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "dup",
            io_error: e,
        }),
    })?;
    MapData::from_fd(fd).map_err(|source| DataplaneError::Map { map: name, source })
}

impl FlowSource {
    pub(super) fn new(
        map: MapData,
        reals: HashMap<u32, SlotReal>,
        (tcp_timeout, udp_timeout): (u32, u32),
        max_entries: u32,
    ) -> Result<Self, DataplaneError> {
        let flows = BpfHashMap::try_from(Map::LruHashMap(map))
            .map_err(|source| DataplaneError::Map { map: lb_common::map_names::FLOWS, source })?;
        Ok(Self { flows, reals, udp_timeout, tcp_timeout, max_entries })
    }

    /// Up to `limit` current flows (to `vip` only, when given), stopping after `budget`.
    /// `truncated` says that more entries may exist than were listed.
    pub fn read(&self, vip: Option<SocketAddr>, limit: usize, budget: Duration) -> FlowsView {
        let start = Instant::now();
        let now = monotonic_secs();
        let max_steps = u64::from(self.max_entries).saturating_mul(2).max(1);
        let mut out = FlowsView::default();
        for (steps, item) in self.flows.iter().enumerate() {
            if out.flows.len() >= limit
                || steps as u64 >= max_steps
                || (steps % 256 == 0 && start.elapsed() > budget)
            {
                out.truncated = true;
                break;
            }
            // An entry evicted between the key walk and its lookup: skip it.
            let Ok((key, binding)) = item else { continue };
            let Some(view) =
                flow_view(&key, &binding, &self.reals, now, (self.tcp_timeout, self.udp_timeout))
            else {
                continue;
            };
            if vip.is_some_and(|v| view.vip != v.to_string()) {
                continue;
            }
            out.flows.push(view);
        }
        out
    }
}

/// Keeps the "recent entry" filter's invariant (docs/fast-path.md) for an entry (TCP or UDP)
/// the agent is about to write with `atime` `now`: stamps its slot, before the entry exists. The whole
/// cache line is raised to `now` (never lowered), so a slot the program stamped between this
/// read and the write keeps a stamp at least as recent (the agent's clock is not behind the
/// program's coarse one).
pub fn stamp_recent(
    map: &mut Array<MapData, FlowRecent>,
    key: &FlowKey,
    now: u32,
) -> Result<(), aya::maps::MapError> {
    let (index, _) = lb_common::flow_recent_slot(key);
    let mut line = map.get(&index, 0)?;
    for s in &mut line.stamps {
        if (now.wrapping_sub(*s) as i32) > 0 {
            *s = now;
        }
    }
    map.set(index, line, 0)
}

/// How far before now a new filter's slots are dated: far older than any entry timeout, and far
/// from the 2^31 s at which the signed comparison of `flow_recent_clear` would wrap.
const FILTER_AGE: u32 = 1 << 30;

/// Dates every slot of a newly created "recent entry" filter `FILTER_AGE` seconds before `now`.
/// A new flow table holds no entry, so every slot may prove that at once; left at 0, a slot
/// proves nothing until the monotonic clock passes the entry timeout (at least 902 s after
/// boot), and every TCP packet of a host started less than 15 minutes ago would look the flow
/// table up. Never for adopted maps: their stamps cover the entries they hold. The map is
/// mapped (it is `BPF_F_MMAPABLE`) and written in one pass.
pub fn age_new_filter(map: &MapData, now: u32) -> Result<(), DataplaneError> {
    let name = lb_common::map_names::FLOW_RECENT;
    let len = lb_common::sizes::FLOW_RECENT as usize * size_of::<FlowRecent>();
    let stamp = now.wrapping_sub(FILTER_AGE);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&map.fd().as_fd());
    // SAFETY: a fresh shared mapping of the whole map (its size is `len`: the layout is checked
    // at load); nothing else in this process aliases it, and it is unmapped below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(DataplaneError::Map {
            map: name,
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "mmap",
                io_error: std::io::Error::last_os_error(),
            }),
        });
    }
    let words = base.cast::<u32>();
    for i in 0..len / size_of::<u32>() {
        // SAFETY: inside the mapping, 4-aligned (page-aligned base). Volatile: memory shared
        // with the program, which may already run.
        unsafe { words.add(i).write_volatile(stamp) };
    }
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { libc::munmap(base, len) };
    Ok(())
}

/// A record of the new-flows ring buffer; `None` for one of another size (another build).
pub fn parse_report(bytes: &[u8]) -> Option<lb_common::FlowReport> {
    if bytes.len() != size_of::<lb_common::FlowReport>() {
        return None;
    }
    // SAFETY: the length matches and `FlowReport` is plain old data (any bytes are a value).
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

/// Seconds of the monotonic clock, the one the program stamps `atime` with.
pub(super) fn monotonic_secs() -> u32 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u32
}

/// The address raw words stand for.
pub fn addr_of(words: &Addr, family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        return IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()));
    }
    let mut o = [0u8; 16];
    for (chunk, w) in o.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    IpAddr::V6(Ipv6Addr::from(o))
}

/// (client port, VIP port) of a raw ports word.
pub fn ports_of(word: u32) -> (u16, u16) {
    let b = word.to_ne_bytes();
    (u16::from_be_bytes([b[0], b[1]]), u16::from_be_bytes([b[2], b[3]]))
}

/// One entry as `lb flows` shows it; `None` for an entry the program would not use any more
/// (its slot was given to another real, or freed).
pub fn flow_view(
    key: &FlowKey,
    b: &Binding,
    reals: &HashMap<u32, SlotReal>,
    now: u32,
    (tcp_timeout, udp_timeout): (u32, u32),
) -> Option<FlowView> {
    let real = reals.get(&b.real).filter(|r| r.generation == b.generation)?;
    let (protocol, state, timeout) = match key.proto {
        IPPROTO_TCP => ("tcp", "ESTABLISHED", tcp_timeout),
        IPPROTO_UDP => ("udp", "UDP", udp_timeout),
        _ => return None,
    };
    let (cport, vport) = ports_of(key.ports);
    let idle = now.saturating_sub(b.atime);
    Some(FlowView {
        protocol: protocol.to_owned(),
        client: SocketAddr::new(addr_of(&key.src, key.family), cport).to_string(),
        vip: SocketAddr::new(addr_of(&key.dst, key.family), vport).to_string(),
        real: real.addr.to_string(),
        state: state.to_owned(),
        expires_s: u64::from(timeout.saturating_sub(idle)),
        origin: if b.flags & BINDING_F_SYNC != 0 { "sync" } else { "local" }.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use lb_common::{FAMILY_V6, addr_v4, addr_v6, ports_word};

    use super::*;

    fn key(src: Addr, dst: Addr, family: u8, proto: u8) -> FlowKey {
        FlowKey { src, dst, ports: ports_word(40000, 80), proto, family, _pad: 0 }
    }

    #[test]
    fn entries_read_as_ipvsadm_shows_them() {
        let v6 = |last: u8| {
            let mut o = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            o[15] = last;
            addr_v6(o)
        };
        let reals = HashMap::from([
            (3, SlotReal { addr: "203.0.113.2:8080".parse().unwrap(), generation: 7 }),
            (4, SlotReal { addr: "[2001:db8::2]:80".parse().unwrap(), generation: 9 }),
        ]);
        let v4_tcp = key(addr_v4([192, 0, 2, 10]), addr_v4([198, 51, 100, 1]), FAMILY_V4, 6);
        let v4_udp = key(addr_v4([192, 0, 2, 10]), addr_v4([198, 51, 100, 1]), FAMILY_V4, 17);
        let v6_tcp = key(v6(10), v6(1), FAMILY_V6, 6);
        let bind = |real, generation, atime, flags| Binding { real, generation, atime, flags };
        // Scenario table: (key, binding, now) → (client, vip, real, protocol, state, expires, origin).
        type Want = Option<(
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            u64,
            &'static str,
        )>;
        let cases: &[(FlowKey, Binding, u32, Want)] = &[
            (
                v4_tcp,
                bind(3, 7, 100, 0),
                160,
                Some((
                    "192.0.2.10:40000",
                    "198.51.100.1:80",
                    "203.0.113.2:8080",
                    "tcp",
                    "ESTABLISHED",
                    840,
                    "local",
                )),
            ),
            (
                v4_tcp,
                bind(3, 7, 100, BINDING_F_SYNC),
                100,
                Some((
                    "192.0.2.10:40000",
                    "198.51.100.1:80",
                    "203.0.113.2:8080",
                    "tcp",
                    "ESTABLISHED",
                    900,
                    "sync",
                )),
            ),
            // Idle past the timeout: 0 left, still listed (the LRU has not evicted it).
            (
                v4_tcp,
                bind(3, 7, 100, 0),
                5000,
                Some((
                    "192.0.2.10:40000",
                    "198.51.100.1:80",
                    "203.0.113.2:8080",
                    "tcp",
                    "ESTABLISHED",
                    0,
                    "local",
                )),
            ),
            (
                v4_udp,
                bind(3, 7, 100, 0),
                110,
                Some((
                    "192.0.2.10:40000",
                    "198.51.100.1:80",
                    "203.0.113.2:8080",
                    "udp",
                    "UDP",
                    290,
                    "local",
                )),
            ),
            (
                v6_tcp,
                bind(4, 9, 50, 0),
                50,
                Some((
                    "[2001:db8::a]:40000",
                    "[2001:db8::1]:80",
                    "[2001:db8::2]:80",
                    "tcp",
                    "ESTABLISHED",
                    900,
                    "local",
                )),
            ),
            // The slot went to another real since: stale, not shown.
            (v4_tcp, bind(3, 6, 100, 0), 100, None),
            // A slot no service uses.
            (v4_tcp, bind(5, 1, 100, 0), 100, None),
        ];
        for (i, (k, b, now, want)) in cases.iter().enumerate() {
            let got = flow_view(k, b, &reals, *now, (TCP_ESTABLISHED_TIMEOUT, 300));
            let got = got.as_ref().map(|v| {
                (
                    v.client.as_str(),
                    v.vip.as_str(),
                    v.real.as_str(),
                    v.protocol.as_str(),
                    v.state.as_str(),
                    v.expires_s,
                    v.origin.as_str(),
                )
            });
            assert_eq!(got, *want, "case {i}");
        }
    }
}
