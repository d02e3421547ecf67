//! Which dataplane a service can run on, as its settings say: what the config's notices tell the
//! operator and what `dataplane::select` decides from, with what the host can do.
//!
//! XDP serves direct routing with Maglev (`mh`), source hashing (`sh`), and the stateless
//! weighted schedulers `rr`/`wrr`. IPVS is *needed* for NAT, tunnels, firewall marks, one-packet
//! scheduling and connection thresholds, and *preferred* for the schedulers that count
//! connections or keep per-destination state.

use super::model::{LbKind, VirtualServer};

/// Schedulers the XDP path runs as they are (or, for `rr`/`wrr`, with the same shares).
const XDP_SCHEDULERS: &[&str] = &["mh", "sh", "rr", "wrr"];

/// Why `vs` can only run on IPVS, if it can only.
pub fn needs_ipvs(vs: &VirtualServer) -> Option<String> {
    if vs.fwmark.is_some() {
        return Some(
            "a firewall-mark service (netfilter marks packets after XDP has run, so only IPVS can \
             match them)"
                .to_owned(),
        );
    }
    if vs.forwarding.lb_kind != LbKind::Dr {
        return Some(format!(
            "`lb_kind {}` (only direct routing runs on XDP)",
            vs.forwarding.lb_kind
        ));
    }
    if let Some(rs) = vs.all_reals().find(|rs| vs.lb_kind_of(rs) != LbKind::Dr) {
        return Some(format!(
            "real server {rs} uses `lb_kind {}` (only direct routing runs on XDP)",
            vs.lb_kind_of(rs)
        ));
    }
    if vs.forwarding.one_packet {
        return Some("`ops` (one-packet scheduling) is an IPVS feature".to_owned());
    }
    if let Some(rs) =
        vs.real_servers.iter().find(|rs| rs.forwarding.uthreshold + rs.forwarding.lthreshold > 0)
    {
        return Some(format!(
            "real server {rs} has connection thresholds (uthreshold/lthreshold), which IPVS keeps"
        ));
    }
    None
}

/// Why `vs` would rather run on IPVS: a scheduler XDP only approximates.
pub fn prefers_ipvs(vs: &VirtualServer) -> Option<String> {
    (!XDP_SCHEDULERS.contains(&vs.lb_algo.as_str())).then(|| format!("scheduler `{}`", vs.lb_algo))
}
