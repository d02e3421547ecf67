//! Pinned dataplane state, so an agent that exits or is killed leaves forwarding running and the
//! next agent adopts it without dropping flows: maps and XDP links are pinned in a bpffs folder,
//! and the agent's bookkeeping (which slot is which real) lives in a JSON state file next to its
//! socket. A layout change between versions is detected and refused, never mixed.

use std::{
    io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::maps::MapData;
use lb_common::{
    Binding, Counter, FlowKey, FlowRecent, FragKey, GlobalConfig, LocalMacKey, PersistKey,
    RealValue, RingSlot, ServiceKey, ServiceValue, SynGuard, VipKey, VipValue, event, map_names,
    reason,
};
use serde::{Deserialize, Serialize};

use super::{DataplaneError, XdpLimits};

/// Bumped whenever a map's key or value layout changes: pinned state of another layout is
/// refused.
/// 8: ring entries are 16 bits wide when every real id fits (`lb_common::ring_entry_bytes`), and
/// UDP entries stamp their recent-entry filter slots (docs/fast-path.md, "Restart").
pub const LAYOUT: u32 = 8;

/// Where pinned state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pinning {
    /// A folder on a bpf filesystem (e.g. /sys/fs/bpf/lb).
    pub dir: PathBuf,
    /// The agent's bookkeeping (a regular file, e.g. /run/lb/dataplane.json).
    pub state_file: PathBuf,
}

impl Pinning {
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn link_path(&self, ifname: &str) -> PathBuf {
        self.dir.join(format!("link_{ifname}"))
    }
}

/// (name, key size, value size, max entries) of every map, as this build creates them.
pub fn expected_maps(l: &XdpLimits) -> Vec<(&'static str, usize, usize, u32)> {
    use core::mem::size_of;
    use lb_common::sizes;
    vec![
        (map_names::SERVICES, size_of::<ServiceKey>(), size_of::<ServiceValue>(), l.max_services),
        (map_names::VIPS, size_of::<VipKey>(), size_of::<VipValue>(), l.max_services),
        (map_names::RINGS, 4, size_of::<RingSlot>(), l.ring_slots()),
        (map_names::REALS, 4, size_of::<RealValue>(), l.max_reals),
        // struct bpf_devmap_val: ifindex and a program fd.
        (map_names::TX_PORTS, 4, 8, sizes::MAX_IFACES),
        (map_names::FLOWS, size_of::<FlowKey>(), size_of::<Binding>(), l.flows),
        (map_names::PERSIST, size_of::<PersistKey>(), size_of::<Binding>(), sizes::PERSIST),
        (map_names::FRAGS, size_of::<FragKey>(), size_of::<Binding>(), sizes::FRAGS),
        (map_names::CONFIG, 4, size_of::<GlobalConfig>(), 1),
        (map_names::SYN_GUARD, 4, size_of::<SynGuard>(), 1),
        (map_names::GLOBAL_STATS, 4, size_of::<Counter>(), reason::COUNT),
        (map_names::EVENTS, 4, 8, event::COUNT),
        (map_names::REAL_STATS, 4, size_of::<Counter>(), l.max_reals),
        (map_names::SERVICE_STATS, 4, size_of::<Counter>(), l.max_services),
        (map_names::LOCAL_MACS, size_of::<LocalMacKey>(), 4, sizes::LOCAL_MACS),
        (map_names::NEW_FLOWS, 0, 0, sizes::NEW_FLOWS_RING),
        (map_names::FLOW_RECENT, 4, size_of::<FlowRecent>(), sizes::FLOW_RECENT),
    ]
}

/// Checks maps already pinned in the folder against this build; returns whether any exist.
pub fn check_pinned(p: &Pinning, l: &XdpLimits) -> Result<bool, DataplaneError> {
    let mut any = false;
    for (name, key, value, max) in expected_maps(l) {
        let path = p.map_path(name);
        if !path.exists() {
            continue;
        }
        any = true;
        let refuse = |what: String| DataplaneError::PinnedLayout {
            dir: p.dir.clone(),
            detail: format!("map {name}: {what}"),
        };
        let info = MapData::from_pin(&path)
            .and_then(|m| m.info())
            .map_err(|e| refuse(format!("cannot open the pinned map: {e}")))?;
        let got = (info.key_size() as usize, info.value_size() as usize, info.max_entries());
        // Per-CPU arrays report the per-CPU value size.
        if got != (key, value, max) {
            return Err(refuse(format!(
                "pinned with key/value/entries {got:?}, this build needs {:?}",
                (key, value, max)
            )));
        }
    }
    Ok(any)
}

/// Removes the pinned maps and the state file (a clean stop: the next start is fresh).
pub fn remove_all(p: &Pinning, l: &XdpLimits) {
    for (name, ..) in expected_maps(l) {
        let _ = std::fs::remove_file(p.map_path(name));
    }
    let _ = std::fs::remove_file(&p.state_file);
    let _ = std::fs::remove_dir(&p.dir);
}

/// The agent's bookkeeping, written after every successful apply.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateFile {
    pub layout: u32,
    pub next_generation: u32,
    /// Real ids freed while a window's anchor may name them: (id, last second of the window).
    #[serde(default)]
    pub quarantined: Vec<(u32, u32)>,
    pub services: Vec<ServiceRecord>,
    /// Attached interfaces: (ifindex, name, mode).
    pub links: Vec<(u32, String, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceRecord {
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub id: u32,
    pub ring_base: u32,
    pub table_size: u32,
    /// Area (of three) the live table is in.
    pub active: Option<usize>,
    /// Ring regions (start, len) kept for a window's anchor after a table-size change.
    #[serde(default)]
    pub retired: Vec<(u32, u32)>,
    pub reals: Vec<RealRecord>,
    pub sorry: Option<RealRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RealRecord {
    pub address: IpAddr,
    pub port: u16,
    pub id: u32,
    pub mac: [u8; 6],
    pub flags: u16,
    /// Source MAC for frames to this real (layout 2).
    #[serde(default)]
    pub src_mac: [u8; 6],
    pub ifindex: u32,
    pub generation: u32,
    /// Tunnel settings (layout 4): `lb_common::TUN_*`, outer family, GUE port (network order),
    /// outer destination and source words.
    #[serde(default)]
    pub tun: u8,
    #[serde(default)]
    pub tun_family: u8,
    #[serde(default)]
    pub tun_port_be: u16,
    #[serde(default)]
    pub tun_dst: [u32; 4],
    #[serde(default)]
    pub tun_src: [u32; 4],
}

impl RealRecord {
    pub fn value(&self) -> RealValue {
        RealValue {
            mac: self.mac,
            flags: self.flags,
            src_mac: self.src_mac,
            _pad: 0,
            ifindex: self.ifindex,
            generation: self.generation,
            tun: self.tun,
            tun_family: self.tun_family,
            tun_port_be: self.tun_port_be,
            tun_dst: self.tun_dst,
            tun_src: self.tun_src,
        }
    }
}

pub fn read_state(path: &Path) -> io::Result<Option<StateFile>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the state atomically (temp file + rename), so a crash never leaves half a file.
pub fn write_state(path: &Path, state: &StateFile) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(state).map_err(io::Error::other)?)?;
    std::fs::rename(tmp, path)
}

/// Where `lb run` pins unless told otherwise (`--pin-dir`, `--no-pin`).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lb";

/// `statfs` type of a bpf filesystem (linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` is on a bpf filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: a NUL-terminated path and a zeroed statfs we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    // f_type's width differs between architectures (i64 on x86_64).
    #[allow(clippy::useless_conversion)]
    let f_type = i64::from(st.f_type);
    f_type == BPF_FS_MAGIC
}

/// How `lb run` pins: `--no-pin` never; `--pin-dir DIR` there (an error later if DIR is not on
/// a bpf filesystem: the operator asked for it); by default [`DEFAULT_PIN_DIR`] when its parent
/// is a bpf filesystem, else unpinned with the reason (to be logged).
pub fn choose_dir(
    no_pin: bool,
    pin_dir: Option<PathBuf>,
    is_bpffs: impl Fn(&Path) -> bool,
) -> Result<PathBuf, String> {
    if no_pin {
        return Err("--no-pin: the dataplane stops with the agent".to_owned());
    }
    if let Some(dir) = pin_dir {
        return Ok(dir);
    }
    let dir = PathBuf::from(DEFAULT_PIN_DIR);
    let mount = dir.parent().unwrap_or(Path::new("/"));
    if is_bpffs(mount) {
        Ok(dir)
    } else {
        Err(format!(
            "no bpf filesystem at {}: running unpinned, so the dataplane stops with the agent \
             (mount one: mount -t bpf bpf {})",
            mount.display(),
            mount.display()
        ))
    }
}

#[cfg(test)]
mod choose_tests {
    use super::*;

    #[test]
    fn pins_by_default_where_bpffs_is_mounted() {
        let dir = |s: &str| Some(PathBuf::from(s));
        // (case, --no-pin, --pin-dir, /sys/fs/bpf is bpffs, pinned to / reason contains)
        type Case = (&'static str, bool, Option<PathBuf>, bool, Result<&'static str, &'static str>);
        let cases: &[Case] = &[
            ("default", false, None, true, Ok(DEFAULT_PIN_DIR)),
            ("default, no bpffs", false, None, false, Err("no bpf filesystem at /sys/fs/bpf")),
            ("explicit dir", false, dir("/mnt/bpf/x"), false, Ok("/mnt/bpf/x")),
            ("explicit dir, bpffs", false, dir("/mnt/bpf/x"), true, Ok("/mnt/bpf/x")),
            ("opted out", true, None, true, Err("--no-pin")),
            ("opted out, no bpffs", true, None, false, Err("--no-pin")),
        ];
        for (case, no_pin, pin_dir, bpffs, want) in cases {
            let got = choose_dir(*no_pin, pin_dir.clone(), |p| {
                assert_eq!(p, Path::new("/sys/fs/bpf"), "{case}: probes the mount point");
                *bpffs
            });
            match (got, want) {
                (Ok(d), Ok(w)) => assert_eq!(d, Path::new(w), "{case}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{case}: {e}"),
                (got, want) => panic!("{case}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn bpffs_is_told_from_other_filesystems() {
        assert!(!is_bpffs(Path::new("/")), "the root is not a bpf filesystem");
        assert!(!is_bpffs(Path::new("/nonexistent/x")));
        if is_bpffs(Path::new("/sys/fs/bpf")) {
            eprintln!("/sys/fs/bpf is a bpf filesystem here");
        }
    }
}
