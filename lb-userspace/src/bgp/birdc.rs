//! Reading BIRD's state back: pure parsers of `birdc show protocols all` and `birdc show bfd
//! sessions`, so `lb status` and the metrics can show each session without a router in the tests.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One `protocol bgp` as `show protocols all` lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpProtocol {
    /// `lb_neighbor1`, ...
    pub name: String,
    /// `up`, `start`, `down`, ... (BIRD's protocol state).
    pub state: String,
    /// When the protocol entered its state, as BIRD prints it (our config: Unix seconds).
    pub since: String,
    /// `Established`, `Active`, `Connect`, ... (the `BGP state:` line).
    pub bgp_state: String,
    pub neighbor: Option<IpAddr>,
    /// Routes exported to the neighbor (the VIPs it has from us), summed over channels.
    pub exported: u64,
}

impl BgpProtocol {
    pub fn established(&self) -> bool {
        self.bgp_state == "Established"
    }
}

/// The `protocol bgp` entries of `birdc show protocols all` output, in output order. Lines that
/// do not fit are skipped: BIRD's output is for humans and gains fields between versions.
pub fn parse_protocols(text: &str) -> Vec<BgpProtocol> {
    let mut out: Vec<BgpProtocol> = Vec::new();
    let mut current: Option<BgpProtocol> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            // A protocol's header: `NAME PROTO TABLE STATE SINCE [INFO]`.
            out.extend(current.take());
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() >= 5 && fields[1] == "BGP" {
                current = Some(BgpProtocol {
                    name: fields[0].to_owned(),
                    state: fields[3].to_owned(),
                    since: fields[4].to_owned(),
                    ..BgpProtocol::default()
                });
            }
            continue;
        }
        let Some(p) = current.as_mut() else { continue };
        let Some((key, value)) = line.trim().split_once(':') else { continue };
        let value = value.trim();
        match key {
            "BGP state" => p.bgp_state = value.to_owned(),
            "Neighbor address" => p.neighbor = value.split('%').next().and_then(|v| v.parse().ok()),
            "Routes" => {
                // `1 imported, 2 exported, 1 preferred`
                let exported = value
                    .split(',')
                    .find_map(|part| part.trim().strip_suffix(" exported"))
                    .and_then(|n| n.trim().parse::<u64>().ok());
                p.exported += exported.unwrap_or(0);
            }
            _ => {}
        }
    }
    out.extend(current);
    out
}

/// `birdc show bfd sessions`: (neighbor address, state) of each session.
pub fn parse_bfd(text: &str) -> Vec<(IpAddr, String)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.next()?.parse().ok()?;
            let _interface = fields.next()?;
            Some((address, fields.next()?.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BIRD 2.0.12's output (recorded), one session starting, one established.
    const PROTOCOLS: &str = "BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     1796595422

lb_vips4   Static     master4    up     1796595422
  Channel ipv4
    State:          UP
    Table:          master4
    Routes:         1 imported, 0 exported, 1 preferred

lb_bfd     BFD        ---        up     1796595422

lb_neighbor1 BGP        ---        start  1796595422  Active
  BGP state:          Active
    Neighbor address: 198.51.100.1
    Neighbor AS:      65000
    Local AS:         65010
    Connect delay:    2.570/5
  Channel ipv4
    State:          DOWN
    Table:          master4
    Input filter:   REJECT
    Output filter:  (unnamed)

lb_neighbor2 BGP        ---        up     1796595430  Established
  BGP state:          Established
    Neighbor address: fe80::1%eth0
    Neighbor AS:      65000
    Hold timer:       6.1/9
  Channel ipv4
    State:          UP
    Routes:         0 imported, 2 exported, 0 preferred
    Route change stats:     received   rejected   filtered    ignored   accepted
      Import updates:              0          0          0          0          0
";

    #[test]
    fn protocols() {
        let got = parse_protocols(PROTOCOLS);
        assert_eq!(
            got,
            vec![
                BgpProtocol {
                    name: "lb_neighbor1".into(),
                    state: "start".into(),
                    since: "1796595422".into(),
                    bgp_state: "Active".into(),
                    neighbor: Some("198.51.100.1".parse().unwrap()),
                    exported: 0,
                },
                BgpProtocol {
                    name: "lb_neighbor2".into(),
                    state: "up".into(),
                    since: "1796595430".into(),
                    bgp_state: "Established".into(),
                    neighbor: Some("fe80::1".parse().unwrap()),
                    exported: 2,
                },
            ]
        );
        assert!(!got[0].established() && got[1].established());
        for junk in ["", "BIRD 2.0.12 ready.\n", "Unable to connect to server control socket\n"] {
            assert!(parse_protocols(junk).is_empty(), "{junk:?}");
        }
    }

    #[test]
    fn bfd_sessions() {
        let text = "BIRD 2.0.12 ready.
lb_bfd:
IP address                Interface  State      Since         Interval  Timeout
198.51.100.1              d0         Up         1796595422    0.300    0.900
2001:db8::1               d0         Down       1796595422    1.000    0.000
";
        assert_eq!(
            parse_bfd(text),
            vec![
                ("198.51.100.1".parse().unwrap(), "Up".to_owned()),
                ("2001:db8::1".parse().unwrap(), "Down".to_owned()),
            ]
        );
    }
}
