//! BIRD 2's configuration for `speaker = "bird"`, in two files so that announcing or withdrawing
//! a VIP rewrites only the small one and `birdc configure` restarts no session:
//!
//! - the main file ([`render_main`]): router id, `protocol device`, BFD when a neighbor wants it,
//!   one `protocol bgp` per neighbor (graceful restart off, so that a dead speaker is dropped by
//!   the routers at once), and an `include` of the VIP file;
//! - the VIP file ([`render_vips`]): one `protocol static` per family holding the announced VIPs
//!   as blackhole host routes. There is no `protocol kernel`, so they never reach this host's
//!   routing tables; XDP forwards the VIPs' traffic before the kernel routes it.
//!
//! Neighbors are directly connected (iBGP too: `direct`), as ECMP next hops must be. Each
//! neighbor's channel is of its address family: an IPv4 session carries the IPv4 VIPs, an
//! IPv6 session the IPv6 ones.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use crate::config::bgp::{BgpConfig, BgpNeighbor};

/// Name of the static protocol of each family, which the BGP export filters select.
pub const STATIC_V4: &str = "lb_vips4";
pub const STATIC_V6: &str = "lb_vips6";

/// BFD timers: 300 ms × 3 detects a dead director within a second (the issue's goal).
pub const BFD_INTERVAL_MS: u32 = 300;
pub const BFD_MULTIPLIER: u32 = 3;

/// A value BIRD's configuration language cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// BIRD strings have no escapes; config validation keeps such passwords out.
    #[error("the password of neighbor {0} cannot be written into BIRD's configuration")]
    Password(IpAddr),
    #[error("the VIP file path {0:?} cannot be written into BIRD's configuration")]
    Path(String),
}

/// The name of the `protocol bgp` of the neighbor at `index` in `[[bgp.neighbor]]` (0-based), as
/// `birdc show protocols` lists it.
pub fn protocol_name(index: usize) -> String {
    format!("lb_neighbor{}", index + 1)
}

/// The main BIRD configuration; `vips_file` is where [`render_vips`]'s text is written.
///
/// # Errors
/// A password or path BIRD cannot read back (never for a validated configuration).
pub fn render_main(
    bgp: &BgpConfig,
    router_id: Ipv4Addr,
    vips_file: &Path,
) -> Result<String, RenderError> {
    let vips_file = vips_file
        .to_str()
        .filter(|p| bird_string(p))
        .ok_or_else(|| RenderError::Path(vips_file.display().to_string()))?;
    let mut out = String::new();
    out.push_str("# Written by lb from its [bgp] section: changes here are overwritten.\n");
    out.push_str("log stderr all;\n");
    // Unix seconds: `lb status` computes each session's uptime from them.
    out.push_str("timeformat protocol \"%s\";\n");
    let _ = writeln!(out, "router id {router_id};");
    out.push_str("\nprotocol device {\n}\n");
    let _ = writeln!(out, "\ninclude \"{vips_file}\";");
    if bgp.neighbors.iter().any(|n| n.bfd) {
        let _ = write!(
            out,
            "\nprotocol bfd lb_bfd {{\n    interface \"*\" {{\n        interval {BFD_INTERVAL_MS} \
             ms;\n        multiplier {BFD_MULTIPLIER};\n    }};\n}}\n"
        );
    }
    for (index, neighbor) in bgp.neighbors.iter().enumerate() {
        neighbor_protocol(&mut out, bgp, index, neighbor)?;
    }
    Ok(out)
}

fn neighbor_protocol(
    out: &mut String,
    bgp: &BgpConfig,
    index: usize,
    neighbor: &BgpNeighbor,
) -> Result<(), RenderError> {
    let (channel, source) = match neighbor.address {
        IpAddr::V4(_) => ("ipv4", STATIC_V4),
        IpAddr::V6(_) => ("ipv6", STATIC_V6),
    };
    let _ = writeln!(out, "\nprotocol bgp {} {{", protocol_name(index));
    let _ = writeln!(out, "    local as {};", bgp.local_as);
    let _ = writeln!(out, "    neighbor {} as {};", neighbor.address, neighbor.remote_as);
    if neighbor.remote_as == bgp.local_as {
        // BIRD takes iBGP as multihop unless told; the routers' ECMP next hops are directly
        // connected directors anyway, and single-hop BFD needs no source address.
        out.push_str("    direct;\n");
    }
    let _ = writeln!(out, "    hold time {};", bgp.hold_time);
    if neighbor.bfd {
        out.push_str("    bfd on;\n");
    }
    if let Some(password) = &neighbor.password {
        if !bird_string(password) {
            return Err(RenderError::Password(neighbor.address));
        }
        let _ = writeln!(out, "    password \"{password}\";");
    }
    // No graceful restart (RFC 4724): a BIRD that dies must make the routers drop us at once
    // (fate sharing). Hitless agent restarts keep BIRD running instead (see `speaker`).
    out.push_str("    graceful restart off;\n");
    let _ = writeln!(out, "    {channel} {{");
    out.push_str("        import none;\n");
    out.push_str("        export filter {\n");
    let _ = writeln!(out, "            if proto != \"{source}\" then reject;");
    let _ = writeln!(out, "            bgp_med = {};", bgp.med);
    for community in &bgp.communities {
        let _ = writeln!(out, "            bgp_community.add(({}, {}));", community.0, community.1);
    }
    out.push_str("            accept;\n        };\n        next hop self;\n    };\n}\n");
    Ok(())
}

/// The VIP file: the announced VIPs, as host routes of each family's static protocol (both
/// protocols always exist, maybe empty, so that the main file's filters always name them).
pub fn render_vips(vips: &[IpAddr]) -> String {
    let mut sorted = vips.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut out = String::from("# Written by lb: the VIPs it announces now.\n");
    for (name, channel, v6) in [(STATIC_V4, "ipv4", false), (STATIC_V6, "ipv6", true)] {
        let _ = writeln!(out, "protocol static {name} {{\n    {channel};");
        for vip in sorted.iter().filter(|v| v.is_ipv6() == v6) {
            let prefix = if v6 { 128 } else { 32 };
            let _ = writeln!(out, "    route {vip}/{prefix} blackhole;");
        }
        out.push_str("}\n");
    }
    out
}

/// Whether `text` can stand between double quotes in BIRD's configuration, which has no escapes.
fn bird_string(text: &str) -> bool {
    text.bytes().all(|b| (b.is_ascii_graphic() || b == b' ') && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{self, test_support::AnyHost};
    use crate::testutil::require_program;

    fn bgp(text: &str) -> BgpConfig {
        let config = config::parse_toml(text, Path::new("bgp.toml"), &AnyHost)
            .unwrap_or_else(|e| panic!("{e}"));
        config.bgp.unwrap()
    }

    /// The issue's contract, with a second, IPv6, iBGP neighbor without BFD.
    const REPRESENTATIVE: &str = r#"
[bgp]
local_as = 65010
router_id = "198.51.100.2"
hold_time = 9
med = 10
communities = ["65010:100", "65010:200"]
[[bgp.neighbor]]
address = "198.51.100.1"
remote_as = 65000
password = "secret"
[[bgp.neighbor]]
address = "2001:db8::1"
remote_as = 65010
bfd = false
"#;

    #[test]
    fn golden_main_file() {
        let text = render_main(
            &bgp(REPRESENTATIVE),
            Ipv4Addr::new(198, 51, 100, 2),
            Path::new("/run/lb/bird-vips.conf"),
        )
        .unwrap();
        let expected = r#"# Written by lb from its [bgp] section: changes here are overwritten.
log stderr all;
timeformat protocol "%s";
router id 198.51.100.2;

protocol device {
}

include "/run/lb/bird-vips.conf";

protocol bfd lb_bfd {
    interface "*" {
        interval 300 ms;
        multiplier 3;
    };
}

protocol bgp lb_neighbor1 {
    local as 65010;
    neighbor 198.51.100.1 as 65000;
    hold time 9;
    bfd on;
    password "secret";
    graceful restart off;
    ipv4 {
        import none;
        export filter {
            if proto != "lb_vips4" then reject;
            bgp_med = 10;
            bgp_community.add((65010, 100));
            bgp_community.add((65010, 200));
            accept;
        };
        next hop self;
    };
}

protocol bgp lb_neighbor2 {
    local as 65010;
    neighbor 2001:db8::1 as 65010;
    direct;
    hold time 9;
    graceful restart off;
    ipv6 {
        import none;
        export filter {
            if proto != "lb_vips6" then reject;
            bgp_med = 10;
            bgp_community.add((65010, 100));
            bgp_community.add((65010, 200));
            accept;
        };
        next hop self;
    };
}
"#;
        assert_eq!(text, expected, "got:\n{text}");
    }

    #[test]
    fn golden_vip_file() {
        let vips: Vec<IpAddr> = ["2001:db8::10", "192.0.2.20", "192.0.2.10", "192.0.2.20"]
            .iter()
            .map(|v| v.parse().unwrap())
            .collect();
        let expected = "# Written by lb: the VIPs it announces now.
protocol static lb_vips4 {
    ipv4;
    route 192.0.2.10/32 blackhole;
    route 192.0.2.20/32 blackhole;
}
protocol static lb_vips6 {
    ipv6;
    route 2001:db8::10/128 blackhole;
}
";
        assert_eq!(render_vips(&vips), expected);
        let empty = render_vips(&[]);
        assert!(!empty.contains("route"), "{empty}");
    }

    /// What validation keeps out is refused here too, never written half-quoted.
    #[test]
    fn unwritable_values_are_errors() {
        let mut settings = bgp(REPRESENTATIVE);
        let id = Ipv4Addr::new(192, 0, 2, 1);
        settings.neighbors[0].password = Some("a\"b".to_owned());
        assert_eq!(
            render_main(&settings, id, Path::new("/run/lb/v.conf")),
            Err(RenderError::Password("198.51.100.1".parse().unwrap()))
        );
        let settings = bgp(REPRESENTATIVE);
        assert!(matches!(
            render_main(&settings, id, Path::new("/run/lb/\"v.conf")),
            Err(RenderError::Path(_))
        ));
    }

    /// BIRD itself parses what is rendered (`bird -p`), for each kind of setting.
    #[test]
    fn bird_parses_rendered_configs() {
        if !require_program("bird_parses_rendered_configs", "bird") {
            return;
        }
        let neighbor4 = "[[bgp.neighbor]]\naddress = '198.51.100.1'\nremote_as = 65000\n";
        let neighbor6 = "[[bgp.neighbor]]\naddress = '2001:db8::1'\nremote_as = 65010\n";
        let variants: &[(&str, String, &[&str])] = &[
            ("v4, bfd", format!("[bgp]\nlocal_as = 65010\n{neighbor4}"), &["192.0.2.10"]),
            (
                "v6, bfd",
                format!("[bgp]\nlocal_as = 65010\nrouter_id = '192.0.2.1'\n{neighbor6}"),
                &["2001:db8::10"],
            ),
            (
                "no bfd, password, communities, 4-byte AS, no keepalives, high MED",
                format!(
                    "[bgp]\nlocal_as = 4200000000\nhold_time = 0\nmed = 4294967295\n\
                     communities = ['65010:100', '0:65535']\n{neighbor4}bfd = false\n\
                     password = 'a secret, with: punctuation!'\n"
                ),
                &["192.0.2.10", "192.0.2.11"],
            ),
            (
                "both families, nothing announced",
                format!("[bgp]\nlocal_as = 65010\nhold_time = 3\n{neighbor4}{neighbor6}"),
                &[],
            ),
            ("representative", REPRESENTATIVE.to_owned(), &["192.0.2.10", "2001:db8::10"]),
        ];
        let scratch = crate::testutil::scratch_dir("lb-bird-parse-");
        let dir = scratch.path();
        for (name, text, vips) in variants {
            let vips: Vec<IpAddr> = vips.iter().map(|v| v.parse().unwrap()).collect();
            let vips_file = dir.join("vips.conf");
            let main_file = dir.join("bird.conf");
            std::fs::write(&vips_file, render_vips(&vips)).unwrap();
            let main = render_main(&bgp(text), Ipv4Addr::new(198, 51, 100, 2), &vips_file).unwrap();
            std::fs::write(&main_file, &main).unwrap();
            let output = std::process::Command::new("bird")
                .arg("-p")
                .arg("-c")
                .arg(&main_file)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{name}: bird -p failed: {}\n{main}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // The check can fail: a hold time BGP forbids, which BIRD refuses.
        let bad = render_main(
            &bgp(&format!("[bgp]\nlocal_as = 65010\n{neighbor4}")),
            Ipv4Addr::new(198, 51, 100, 2),
            &dir.join("vips.conf"),
        )
        .unwrap()
        .replace("hold time 9", "hold time 2");
        std::fs::write(dir.join("bad.conf"), bad).unwrap();
        let status = std::process::Command::new("bird")
            .arg("-p")
            .arg("-c")
            .arg(dir.join("bad.conf"))
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "bird -p accepted hold time 2");
    }
}
