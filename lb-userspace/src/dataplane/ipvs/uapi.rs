//! Numbers from the kernel's `include/uapi/linux/ip_vs.h` (generic netlink part). Kept private to
//! the module: callers use the typed model, and the wire tests pin these values.

/// The generic netlink family name and the version we speak (`IPVS_GENL_NAME`, `..._VERSION`).
pub const FAMILY_NAME: &str = "IPVS";
pub const FAMILY_VERSION: u8 = 1;

/// Commands (`IPVS_CMD_*`).
pub mod cmd {
    pub const NEW_SERVICE: u8 = 1;
    pub const SET_SERVICE: u8 = 2;
    pub const DEL_SERVICE: u8 = 3;
    pub const GET_SERVICE: u8 = 4;
    pub const NEW_DEST: u8 = 5;
    pub const SET_DEST: u8 = 6;
    pub const DEL_DEST: u8 = 7;
    pub const GET_DEST: u8 = 8;
    pub const NEW_DAEMON: u8 = 9;
    pub const DEL_DAEMON: u8 = 10;
    /// The command the kernel puts on a `GET_INFO` reply.
    pub const SET_INFO: u8 = 14;
    pub const GET_INFO: u8 = 15;
}

/// First-level attributes (`IPVS_CMD_ATTR_*`).
pub mod cmd_attr {
    pub const SERVICE: u16 = 1;
    pub const DEST: u16 = 2;
    pub const DAEMON: u16 = 3;
}

/// Sync daemon attributes, nested in `cmd_attr::DAEMON` (`IPVS_DAEMON_ATTR_*`).
pub mod daemon {
    pub const STATE: u16 = 1;
    pub const MCAST_IFN: u16 = 2;
    pub const SYNC_ID: u16 = 3;
    pub const SYNC_MAXLEN: u16 = 4;
    pub const MCAST_GROUP: u16 = 5;
    pub const MCAST_GROUP6: u16 = 6;
    pub const MCAST_PORT: u16 = 7;
    pub const MCAST_TTL: u16 = 8;
    /// `IP_VS_STATE_MASTER`, `IP_VS_STATE_BACKUP`.
    pub const STATE_MASTER: u32 = 1;
    pub const STATE_BACKUP: u32 = 2;
}

/// Service attributes, nested in `cmd_attr::SERVICE` (`IPVS_SVC_ATTR_*`).
pub mod svc {
    pub const AF: u16 = 1;
    pub const PROTOCOL: u16 = 2;
    pub const ADDR: u16 = 3;
    pub const PORT: u16 = 4;
    pub const FWMARK: u16 = 5;
    pub const SCHED_NAME: u16 = 6;
    pub const FLAGS: u16 = 7;
    pub const TIMEOUT: u16 = 8;
    pub const NETMASK: u16 = 9;
    pub const STATS: u16 = 10;
    pub const PE_NAME: u16 = 11;
    pub const STATS64: u16 = 12;
}

/// Destination attributes, nested in `cmd_attr::DEST` (`IPVS_DEST_ATTR_*`).
pub mod dest {
    pub const ADDR: u16 = 1;
    pub const PORT: u16 = 2;
    pub const FWD_METHOD: u16 = 3;
    pub const WEIGHT: u16 = 4;
    pub const U_THRESH: u16 = 5;
    pub const L_THRESH: u16 = 6;
    pub const ACTIVE_CONNS: u16 = 7;
    pub const INACT_CONNS: u16 = 8;
    pub const PERSIST_CONNS: u16 = 9;
    pub const STATS: u16 = 10;
    pub const ADDR_FAMILY: u16 = 11;
    pub const STATS64: u16 = 12;
    pub const TUN_TYPE: u16 = 13;
    pub const TUN_PORT: u16 = 14;
    pub const TUN_FLAGS: u16 = 15;
}

/// Statistics attributes, nested in the `STATS`/`STATS64` attributes (`IPVS_STATS_ATTR_*`).
pub mod stats {
    pub const CONNS: u16 = 1;
    pub const INPKTS: u16 = 2;
    pub const OUTPKTS: u16 = 3;
    pub const INBYTES: u16 = 4;
    pub const OUTBYTES: u16 = 5;
    pub const CPS: u16 = 6;
    pub const INPPS: u16 = 7;
    pub const OUTPPS: u16 = 8;
    pub const INBPS: u16 = 9;
    pub const OUTBPS: u16 = 10;
}

/// `GET_INFO` reply attributes (`IPVS_INFO_ATTR_*`).
pub mod info {
    pub const VERSION: u16 = 1;
    pub const CONN_TAB_SIZE: u16 = 2;
}

/// Service flags (`IP_VS_SVC_F_*`).
pub const SVC_F_PERSISTENT: u32 = 0x0001;
pub const SVC_F_ONEPACKET: u32 = 0x0004;
pub const SVC_F_SCHED1: u32 = 0x0008;
pub const SVC_F_SCHED2: u32 = 0x0010;
pub const SVC_F_SCHED3: u32 = 0x0020;

/// Forwarding methods in a destination's connection flags (`IP_VS_CONN_F_*`).
pub const CONN_F_FWD_MASK: u32 = 0x0007;
pub const CONN_F_MASQ: u32 = 0x0000;
pub const CONN_F_LOCALNODE: u32 = 0x0001;
pub const CONN_F_TUNNEL: u32 = 0x0002;
pub const CONN_F_DROUTE: u32 = 0x0003;

/// Tunnel types (`IP_VS_CONN_F_TUNNEL_TYPE_*`).
pub const TUNNEL_TYPE_IPIP: u8 = 0;
pub const TUNNEL_TYPE_GUE: u8 = 1;
pub const TUNNEL_TYPE_GRE: u8 = 2;

/// Tunnel encapsulation flags (`IP_VS_TUNNEL_ENCAP_FLAG_*`).
pub const TUNNEL_ENCAP_FLAG_CSUM: u16 = 1 << 0;
pub const TUNNEL_ENCAP_FLAG_REMCSUM: u16 = 1 << 1;

/// Scheduler and persistence-engine names are `char[16]` in the kernel, NUL included.
pub const NAME_MAXLEN: usize = 16;
