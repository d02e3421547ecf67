//! XDP and IPVS side by side: each service goes to the dataplane the plan chose for it
//! (`ServiceDesired::backend`), and each dataplane sees only its own services, so neither needs
//! to know the other exists.

use std::borrow::Cow;

use super::{
    Counters, Dataplane, DataplaneError, Status, ipvs::IpvsDataplane, select::Backend,
    xdp::XdpDataplane,
};
use crate::desired::Desired;

/// The agent's dataplane: XDP, IPVS or both.
pub struct Hybrid {
    pub xdp: Option<XdpDataplane>,
    pub ipvs: Option<IpvsDataplane>,
}

/// The part of `desired` that runs on `backend`: its services (for XDP, `desired_state` already
/// gathered only the interfaces of XDP services). Borrowed when every service runs there, the
/// usual case, so an apply copies nothing.
pub fn split(desired: &Desired, backend: Backend) -> Cow<'_, Desired> {
    if desired.services.iter().all(|s| s.backend == backend) {
        return Cow::Borrowed(desired);
    }
    Cow::Owned(Desired {
        globals: desired.globals,
        interfaces: desired.interfaces.clone(),
        tx_interfaces: desired.tx_interfaces.clone(),
        services: desired.services.iter().filter(|s| s.backend == backend).cloned().collect(),
        flow_sync: desired.flow_sync.clone(),
    })
}

impl Hybrid {
    fn check(&self, desired: &Desired) -> Result<(), DataplaneError> {
        for s in &desired.services {
            let missing = match s.backend {
                Backend::Xdp => self.xdp.is_none(),
                Backend::Ipvs => self.ipvs.is_none(),
            };
            if missing {
                return Err(DataplaneError::Unavailable(format!(
                    "virtual server {} needs the {} dataplane, which this agent did not start \
                     (restart lb to change dataplanes)",
                    s.key, s.backend
                )));
            }
        }
        Ok(())
    }
}

impl Dataplane for Hybrid {
    fn apply(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        self.check(desired)?;
        // IPVS first: a service moving from XDP to IPVS is served by IPVS before XDP lets go.
        if let Some(ipvs) = &mut self.ipvs {
            ipvs.apply(&split(desired, Backend::Ipvs))?;
        }
        if let Some(xdp) = &mut self.xdp {
            xdp.apply(&split(desired, Backend::Xdp))?;
        }
        Ok(())
    }

    fn counters(&mut self) -> Result<Counters, DataplaneError> {
        let mut counters = match &mut self.xdp {
            Some(xdp) => xdp.counters()?,
            None => Counters::default(),
        };
        if let Some(ipvs) = &mut self.ipvs {
            let c = ipvs.counters()?;
            counters.services.extend(c.services);
            counters.reals.extend(c.reals);
            counters.connections.extend(c.connections);
        }
        Ok(counters)
    }

    fn status(&self) -> Status {
        match (&self.xdp, &self.ipvs) {
            (Some(xdp), Some(_)) => Status { kind: "xdp+ipvs", ..xdp.status() },
            (Some(xdp), None) => xdp.status(),
            (None, Some(ipvs)) => ipvs.status(),
            (None, None) => Status { kind: "none", ..Status::default() },
        }
    }

    fn flow_source(&self) -> Result<Option<super::xdp::FlowSource>, DataplaneError> {
        self.xdp.as_ref().map_or(Ok(None), Dataplane::flow_source)
    }

    fn sync_slots(&self) -> Option<crate::sync::edge::Slots> {
        self.xdp.as_ref().map(XdpDataplane::sync_slots)
    }

    fn shutdown(&mut self) -> Result<(), DataplaneError> {
        let xdp = self.xdp.as_mut().map(Dataplane::shutdown).unwrap_or(Ok(()));
        let ipvs = self.ipvs.as_mut().map(Dataplane::shutdown).unwrap_or(Ok(()));
        xdp.and(ipvs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{self, test_support::FakeHost},
        dataplane::select::{self, Capabilities, Mode},
        desired::{HostFacts, Inputs, VrrpStates, desired_state},
        health::state::HealthSnapshot,
        net::{Mac, iface::Interface},
        overrides::Overrides,
    };

    /// A DR service on XDP and a NAT one on IPVS, on different interfaces: each half gets its own
    /// services, and XDP attaches only where its services are.
    #[test]
    fn split_gives_each_dataplane_its_services_and_interfaces() {
        let text = "[[virtual_server]]\nvip = '192.0.2.100'\nport = 80\ninterface = 'eth0'\n\
                    real_server = [{ address = '192.0.2.11' }]\n\
                    [[virtual_server]]\nvip = '192.0.2.101'\nport = 80\ninterface = 'eth1'\n\
                    lb_kind = 'NAT'\nreal_server = [{ address = '10.0.0.11', port = 8080 }]\n";
        let cfg = config::parse_toml(text, "t.toml".as_ref(), &FakeHost).expect("valid");
        let caps = Capabilities { xdp: Ok(()), ipvs: Ok(()) };
        let plan = select::plan(&cfg, Mode::Auto, &caps).expect("plan");
        let mut host = HostFacts::default();
        for (name, ifindex) in [("eth0", 7), ("eth1", 8)] {
            let i =
                Interface { name: name.into(), ifindex, mac: Mac([2; 6]), driver: "veth".into() };
            host.interfaces.insert(name.into(), i);
        }
        host.neighbours.0.insert((7, "192.0.2.11".parse().unwrap()), Mac([4; 6]));
        let d = desired_state(&Inputs {
            config: &cfg,
            host: &host,
            health: &HealthSnapshot::default(),
            overrides: &Overrides::default(),
            vrrp: &VrrpStates::default(),
            plan: &plan,
        });
        let xdp = split(&d, Backend::Xdp);
        let ipvs = split(&d, Backend::Ipvs);
        assert_eq!(xdp.services.len(), 1);
        assert_eq!(xdp.services[0].key.vip.to_string(), "192.0.2.100");
        let names: Vec<&str> = xdp.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0"]);
        assert_eq!(ipvs.services.len(), 1);
        assert_eq!(ipvs.services[0].reals[0].state, crate::desired::RealState::Up, "no MAC needed");
        // All on XDP (the usual case): nothing is copied.
        let xdp_only = Desired { services: xdp.services.clone(), ..d.clone() };
        assert!(matches!(split(&xdp_only, Backend::Xdp), Cow::Borrowed(_)));
        let err = Hybrid { xdp: None, ipvs: None }.check(&d).expect_err("no dataplane");
        assert!(err.to_string().contains("needs the xdp dataplane"), "{err}");
    }
}
