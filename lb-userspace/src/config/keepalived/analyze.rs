//! The top level of keepalived.conf: each block to its reader, then the model built from the LVS
//! blocks once the whole file (and what it includes) is known.

use std::path::Path;

use super::super::model::Config;
use super::Diags;
use super::keywords::{Section, TOP_UNIMPLEMENTED, TOP_UNIMPLEMENTED_BLOCKS};
use super::tree::Stmt;
use super::values::Cx;
use super::vrrp::Vrrp;
use super::{lvs, vrrp};

/// The model of the top-level `statements`; sections with errors are left out of it, so that
/// validation does not report consequences of the same mistakes.
pub(super) fn analyze(statements: &[Stmt], source: &Path, diags: &mut Diags) -> Config {
    let mut cx = Cx { diags };
    let mut vrrp_data = Vrrp::default();
    let mut groups = Vec::new();
    let mut specs = Vec::new();
    for stmt in statements {
        let name = stmt.name();
        match name {
            "global_defs" => vrrp::global_defs(&mut cx, stmt, &mut vrrp_data),
            "vrrp_instance" => vrrp::instance(&mut cx, stmt, &mut vrrp_data),
            "vrrp_script" => vrrp::script(&mut cx, stmt, &mut vrrp_data),
            "vrrp_sync_group" => vrrp::sync_group(&mut cx, stmt, &mut vrrp_data),
            "virtual_server_group" => lvs::group(&mut cx, stmt, &mut groups),
            "virtual_server" => specs.extend(lvs::virtual_server(&mut cx, stmt)),
            _ if TOP_UNIMPLEMENTED_BLOCKS.contains(&name) => {
                let what = if name == "SSL" {
                    "SSL_GET checks do not present a client certificate"
                } else {
                    "lb does not implement it"
                };
                cx.unimplemented(stmt, what);
            }
            _ if TOP_UNIMPLEMENTED.contains(&name) => {
                cx.unimplemented(stmt, "lb does not implement it");
            }
            _ => cx.unknown(stmt, Section::Top),
        }
    }
    vrrp::check_references(&mut cx, &vrrp_data);
    let (vrrp_config, vrrp_locations) = vrrp::model(&mut cx, &vrrp_data);
    let virtual_servers = lvs::build(&mut cx, &specs, &groups, &vrrp_data);
    // Every other section of the model at its default, whatever sections the model has: what
    // the native front end makes of an empty file.
    let (mut config, _) = super::super::toml::parse("", source);
    config.virtual_servers = virtual_servers;
    config.vrrp = vrrp_config;
    config.vrrp_locations = vrrp_locations;
    if let Some(sync) = &vrrp_data.flow_sync
        && let Some(name) = &sync.vrrp_instance
        && !vrrp_data.instances.iter().any(|i| &i.name == name)
    {
        cx.error(sync.location, format!("`lvs_sync_daemon` names no vrrp_instance `{name}`"));
    }
    config.flow_sync = vrrp_data.flow_sync;
    config.script_user = vrrp_data.script_user.clone();
    config
}
