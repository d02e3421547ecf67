//! What the runner derives from the config before touching the host: each instance's plan and
//! its state machine's settings.

use super::*;

/// Everything the runner derives from one `vrrp_instance` before touching the host.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    pub(super) cfg: VrrpInstance,
    pub(super) family: Family,
    pub(super) version: Version,
    pub(super) advert_cs: u16,
    pub(super) auth: Auth,
    pub(super) tracking: InstanceTracking,
    /// (group index, position in the group).
    pub(super) group: Option<(usize, usize)>,
}

/// Checks the VRRP config and derives each instance's plan (no host access).
pub(super) fn plan(vrrp: &VrrpConfig) -> Result<Vec<Plan>> {
    let mut plans = Vec::new();
    let mut seen = HashMap::new();
    for (i, inst) in vrrp.instances.iter().enumerate() {
        let name = &inst.name;
        let version = match inst.version {
            2 => Version::V2,
            3 => Version::V3,
            v => bail!("vrrp_instance {name}: version {v} (must be 2 or 3)"),
        };
        let mut families = inst.virtual_ipaddress.iter().map(|v| Family::of(v.address));
        let family = match families.next() {
            Some(f) => {
                if families.any(|g| g != f) {
                    bail!("vrrp_instance {name}: virtual_ipaddress mixes IPv4 and IPv6");
                }
                f
            }
            None => inst
                .unicast_src_ip
                .or(inst.unicast_peer.first().copied())
                .map_or(Family::V4, Family::of),
        };
        if version == Version::V2 && family == Family::V6 {
            bail!("vrrp_instance {name}: VRRPv2 is IPv4 only; use version 3 for IPv6");
        }
        if let Some(prev) = seen.insert((inst.interface.clone(), family, inst.virtual_router_id), i)
        {
            bail!(
                "vrrp_instance {name}: virtual_router_id {} on {} ({family}) is already used by {}",
                inst.virtual_router_id,
                inst.interface,
                vrrp.instances[prev].name
            );
        }
        let advert_cs =
            u16::try_from(inst.advert_int.as_millis().div_ceil(10)).unwrap_or(u16::MAX).max(1);
        let auth = match (&inst.auth_pass, version) {
            (Some(p), Version::V2) => Auth::password(p.as_bytes()),
            _ => Auth::None,
        };
        // keepalived tracks the instance's own interface (weight 0) unless told otherwise.
        let mut interfaces = vec![(inst.interface.clone(), 0)];
        interfaces.extend(inst.track_interface.iter().map(|t| (t.name.clone(), t.weight)));
        let mut scripts = Vec::new();
        for ts in &inst.track_script {
            let idx = vrrp.scripts.iter().position(|s| s.name == ts.script).ok_or_else(|| {
                anyhow!("vrrp_instance {name}: track_script {} is not a vrrp_script", ts.script)
            })?;
            scripts.push((idx, ts.weight.unwrap_or(vrrp.scripts[idx].weight)));
        }
        plans.push(Plan {
            cfg: inst.clone(),
            family,
            version,
            advert_cs,
            auth,
            tracking: InstanceTracking { interfaces, scripts },
            group: None,
        });
    }
    for (g, group) in vrrp.sync_groups.iter().enumerate() {
        for (pos, member) in group.group.iter().enumerate() {
            let plan = plans.iter_mut().find(|p| &p.cfg.name == member).ok_or_else(|| {
                anyhow!("vrrp_sync_group {}: {member} is not a vrrp_instance", group.name)
            })?;
            if let Some((other, _)) = plan.group {
                bail!(
                    "vrrp_instance {member} is in two sync groups ({} and {})",
                    vrrp.sync_groups[other].name,
                    group.name
                );
            }
            plan.group = Some((g, pos));
        }
    }
    Ok(plans)
}

/// The machine's settings for a plan once the primary address is known.
pub(super) fn settings(p: &Plan, primary: IpAddr) -> Settings {
    let c = &p.cfg;
    let mut s = Settings::new(c.virtual_router_id, p.version, c.priority, primary);
    s.family = p.family;
    s.advert_interval_cs = p.advert_cs;
    s.preempt = c.preempt;
    s.preempt_delay = c.preempt_delay;
    s.unicast_peers = c.unicast_peer.clone();
    s.garp = Garp { repeat: c.garp_master_repeat, delay: c.garp_master_refresh_delay };
    s.lower_prio_no_advert = c.lower_prio_no_advert;
    s.skip_check_adv_addr = c.skip_check_adv_addr;
    s
}

pub(super) fn initial_status(p: &Plan, machine: &Instance, primary: IpAddr) -> InstanceStatus {
    InstanceStatus {
        name: p.cfg.name.clone(),
        interface: p.cfg.interface.clone(),
        vrid: p.cfg.virtual_router_id,
        version: p.version.number(),
        vips: p.cfg.virtual_ipaddress.iter().map(|v| v.address).collect(),
        primary_address: primary,
        state: State::Initialize,
        base_priority: p.cfg.priority,
        effective_priority: machine.effective_priority(),
        master: None,
        master_priority: None,
        advert_int: Duration::from_millis(u64::from(machine.settings().advert_interval_cs) * 10),
        master_down_interval: machine.master_down_interval(),
        track_fault: false,
        priority_delta: 0,
        vips_held: false,
        last_transition: None,
        last_garp: None,
        counters: Counters::default(),
    }
}
