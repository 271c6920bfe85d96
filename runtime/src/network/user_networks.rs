//! User-defined bridge networks: making and removing their bridges, and a container's
//! endpoints on them (a veth each, `eth<n>` inside), at create time or later with
//! [`NetworkManager::connect`]. The rules (isolation, NAT) follow from the state in
//! `sync_rules`; names are answered by the embedded DNS (`dns.rs`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::manager::{enable_ip_forward, Inner, NetworkManager};
use super::state::{self, EndpointRecord, Record};
use super::subnet::{format_mac, mac_for, Ipv4Net};
use super::{link, netns, BridgeNetwork, EndpointAttachment, EndpointRequest};
use crate::error::{Result, RuntimeError};

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

impl NetworkManager {
    /// The user-defined networks made on the host.
    pub async fn networks(&self) -> Vec<BridgeNetwork> {
        let inner = self.inner.lock().await;
        inner.state.networks.values().cloned().collect()
    }

    /// Checks that `subnet` collides with neither the default bridge's, another network's
    /// nor a route of the host's (other than skiff's own bridges'):
    /// [`RuntimeError::SubnetOverlap`] naming what it overlaps.
    pub async fn check_subnet(&self, subnet: Ipv4Net) -> Result<()> {
        let inner = self.inner.lock().await;
        self.check_subnet_locked(&inner, subnet).await
    }

    async fn check_subnet_locked(&self, inner: &Inner, subnet: Ipv4Net) -> Result<()> {
        let clash = |other: String| RuntimeError::SubnetOverlap {
            subnet: subnet.to_string(),
            other,
        };
        if overlaps(subnet, self.config.subnet) {
            return Err(clash(format!(
                "the default bridge's {} ({})",
                self.config.subnet, self.config.bridge
            )));
        }
        for n in inner.state.networks.values() {
            if overlaps(subnet, n.subnet) {
                return Err(clash(format!("network {} ({})", &n.id, n.subnet)));
            }
        }
        let h = link::connect(Path::new("host"))?;
        let mut own = BTreeSet::new();
        for br in std::iter::once(&self.config.bridge)
            .chain(inner.state.networks.values().map(|n| &n.bridge))
        {
            if let Some(i) = link::link_index(&h, br).await? {
                own.insert(i);
            }
        }
        for (dst, prefix, oif) in link::routes_v4(&h).await? {
            if oif.is_some_and(|i| own.contains(&i)) {
                continue;
            }
            // Any prefix length (a /32 route too), so not through `Ipv4Net`.
            let mask = |p: u8| u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
            let common = mask(prefix.min(subnet.prefix()));
            if u32::from(dst) & common == u32::from(subnet.network()) & common {
                return Err(clash(format!("the host route to {dst}/{prefix}")));
            }
        }
        Ok(())
    }

    /// Makes a user-defined network: checks its subnet ([`check_subnet`](Self::check_subnet)),
    /// records it, makes its bridge (with the gateway address, up) and its rules. On failure
    /// nothing is left. Making one that exists with the same settings is a no-op (restore).
    pub async fn create_network(&self, net: BridgeNetwork) -> Result<()> {
        validate_bridge_name(&net.bridge)?;
        if !net.subnet.contains(net.gateway) {
            return Err(RuntimeError::InvalidNetworkConfig {
                field: "gateway",
                value: net.gateway.to_string(),
                reason: "is not in the network's subnet",
            });
        }
        let mut inner = self.inner.lock().await;
        if inner.state.networks.get(&net.id) == Some(&net) {
            return Ok(());
        }
        self.check_subnet_locked(&inner, net.subnet).await?;
        inner.state.networks.insert(net.id.clone(), net.clone());
        if let Err(e) = state::save(&self.config.state_dir, &inner.state) {
            inner.state.networks.remove(&net.id);
            return Err(e);
        }
        let made = async {
            enable_ip_forward()?;
            let h = link::connect(Path::new("host"))?;
            link::ensure_bridge_with(&h, &net.bridge, net.subnet, net.gateway).await?;
            self.sync_rules(&mut inner, true).await
        }
        .await;
        if let Err(e) = made {
            if let Ok(h) = link::connect(Path::new("host")) {
                if let Err(undo) = link::delete_link(&h, &net.bridge).await {
                    tracing::error!(bridge = %net.bridge, error = %undo, "cannot undo a failed network create");
                }
            }
            inner.state.networks.remove(&net.id);
            if let Err(save) = state::save(&self.config.state_dir, &inner.state) {
                tracing::error!(error = %save, "cannot record an undone network create");
            }
            let _ = self.sync_rules(&mut inner, true).await;
            return Err(e);
        }
        Ok(())
    }

    /// Removes a user-defined network: its bridge, rules and record;
    /// [`RuntimeError::NetworkInUse`] while a container has an endpoint on it. Unknown ids
    /// are fine.
    pub async fn remove_network(&self, id: &str) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let Some(net) = inner.state.networks.get(id).cloned() else {
            return Ok(());
        };
        let users: Vec<&str> = inner
            .state
            .containers
            .iter()
            .filter(|(_, r)| r.endpoints.iter().any(|e| e.att.network_id == id))
            .map(|(c, _)| c.as_str())
            .collect();
        if !users.is_empty() {
            return Err(RuntimeError::NetworkInUse {
                id: id.to_string(),
                containers: users.join(", "),
            });
        }
        inner.state.networks.remove(id);
        // Rules first (they name the bridge), then the bridge, then the record.
        self.sync_rules(&mut inner, true).await?;
        let h = link::connect(Path::new("host"))?;
        link::delete_link(&h, &net.bridge).await?;
        state::save(&self.config.state_dir, &inner.state)
    }

    /// Puts a container that has a namespace of its own on one more network (a new
    /// `eth<n>`); [`RuntimeError::AlreadyConnected`] if it is on it already.
    pub async fn connect(
        &self,
        container_id: &str,
        req: EndpointRequest,
    ) -> Result<EndpointAttachment> {
        let mut inner = self.inner.lock().await;
        let Some(record) = inner.state.containers.get(container_id).cloned() else {
            return Err(RuntimeError::NoNetnsToConnect {
                id: container_id.to_string(),
            });
        };
        let Some(ns) = record.netns_path.clone() else {
            return Err(RuntimeError::NoNetnsToConnect {
                id: container_id.to_string(),
            });
        };
        let taken: Vec<String> = (0..record.endpoints.len() + 1)
            .map(|i| format!("eth{i}"))
            .collect();
        let mut planned = self
            .plan_endpoints(
                &inner,
                container_id,
                std::slice::from_ref(&req),
                0,
                &record.endpoints,
            )
            .await?;
        let mut ep = planned.remove(0);
        // The next free interface name (an earlier disconnect may have left a gap).
        let used: Vec<&str> = record
            .endpoints
            .iter()
            .map(|e| e.att.ifname.as_str())
            .collect();
        let first = usize::from(record.veth.is_some());
        ep.att.ifname = (first..)
            .map(|i| format!("eth{i}"))
            .find(|n| !used.contains(&n.as_str()))
            .unwrap_or_else(|| taken[0].clone());
        let has_route = record.ip.is_some()
            || record.endpoints.iter().any(|e| {
                inner
                    .state
                    .networks
                    .get(&e.att.network_id)
                    .is_some_and(|n| !n.internal)
            });
        let mut updated = record.clone();
        updated.endpoints.push(ep.clone());
        inner
            .state
            .containers
            .insert(container_id.to_string(), updated.clone());
        state::save(&self.config.state_dir, &inner.state)?;
        let old_target = record.port_target(&self.config.bridge);
        let made = match self
            .attach_endpoints(&ns, std::slice::from_ref(&ep), has_route)
            .await
        {
            Ok(()) => {
                self.retarget_ports(&mut inner, container_id, old_target)
                    .await
            }
            Err(e) => Err(e),
        };
        let made = match made {
            Ok(()) => self.sync_rules(&mut inner, true).await,
            Err(e) => Err(e),
        };
        let made = match made {
            Ok(()) => self.start_dns(&inner, container_id, &updated).await,
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            if let Ok(h) = link::connect(Path::new("host")) {
                let _ = link::delete_link(&h, &ep.veth).await;
            }
            inner
                .state
                .containers
                .insert(container_id.to_string(), record);
            let _ = state::save(&self.config.state_dir, &inner.state);
            let _ = self.sync_rules(&mut inner, true).await;
            return Err(e);
        }
        Ok(ep.att)
    }

    /// Takes a container off a network (deletes that veth);
    /// [`RuntimeError::NotConnected`] if it is not on it.
    pub async fn disconnect(&self, container_id: &str, network_id: &str) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let not = || RuntimeError::NotConnected {
            container: container_id.to_string(),
            network: network_id.to_string(),
        };
        let Some(r) = inner.state.containers.get_mut(container_id) else {
            return Err(not());
        };
        let Some(pos) = r
            .endpoints
            .iter()
            .position(|e| e.att.network_id == network_id)
        else {
            return Err(not());
        };
        let old_target = r.port_target(&self.config.bridge);
        let ep = r.endpoints.remove(pos);
        if r.endpoints.is_empty() {
            self.dns.stop(container_id);
        }
        let h = link::connect(Path::new("host"))?;
        link::delete_link(&h, &ep.veth).await?;
        state::save(&self.config.state_dir, &inner.state)?;
        self.retarget_ports(&mut inner, container_id, old_target)
            .await?;
        self.sync_rules(&mut inner, true).await
    }

    /// Picks each endpoint's address (`--ip` checked), veth name, interface name
    /// (`eth<first_if + i>`) and MAC. Nothing is made.
    pub(super) async fn plan_endpoints(
        &self,
        inner: &Inner,
        id: &str,
        reqs: &[EndpointRequest],
        first_if: usize,
        existing: &[EndpointRecord],
    ) -> Result<Vec<EndpointRecord>> {
        let mut out: Vec<EndpointRecord> = Vec::new();
        for (i, req) in reqs.iter().enumerate() {
            let net = inner.state.networks.get(&req.network_id).ok_or_else(|| {
                RuntimeError::UnknownNetwork {
                    id: req.network_id.clone(),
                }
            })?;
            if existing
                .iter()
                .chain(&out)
                .any(|e| e.att.network_id == net.id)
            {
                return Err(RuntimeError::AlreadyConnected {
                    container: id.to_string(),
                    network: net.id.clone(),
                });
            }
            let mut used: BTreeSet<Ipv4Addr> = inner
                .state
                .containers
                .values()
                .flat_map(|r| r.endpoints.iter())
                .filter(|e| e.att.network_id == net.id)
                .map(|e| e.att.ip)
                .collect();
            used.insert(net.gateway);
            let ip = match req.ip {
                Some(ip) => {
                    let bad = |reason| RuntimeError::AddressUnavailable {
                        ip,
                        network: net.id.clone(),
                        reason,
                    };
                    if !net.subnet.contains(ip)
                        || ip == net.subnet.network()
                        || ip == net.subnet.broadcast()
                    {
                        return Err(bad("not a host address of the network's subnet"));
                    }
                    if used.contains(&ip) {
                        return Err(bad("in use"));
                    }
                    ip
                }
                None => net.subnet.allocate(&used, None, &net.bridge)?,
            };
            let veth = self.free_veth_name_on(&net.bridge, id).await?;
            out.push(EndpointRecord {
                veth,
                bridge: net.bridge.clone(),
                subnet: net.subnet,
                internal: net.internal,
                att: EndpointAttachment {
                    network_id: net.id.clone(),
                    ifname: format!("eth{}", first_if + i),
                    ip,
                    prefix_len: net.subnet.prefix(),
                    gateway: net.gateway,
                    mac: format_mac(&mac_for(ip)),
                    names: req.names.clone(),
                    links: req.links.clone(),
                },
            });
        }
        Ok(out)
    }

    /// Makes each endpoint's veth into the namespace and configures it; the first
    /// non-internal one gets the default route unless `has_route`.
    pub(super) async fn attach_endpoints(
        &self,
        ns: &Path,
        eps: &[EndpointRecord],
        mut has_route: bool,
    ) -> Result<()> {
        if eps.is_empty() {
            return Ok(());
        }
        enable_ip_forward()?;
        let h = link::connect(Path::new("host"))?;
        for e in eps {
            let internal = e.internal;
            let bridge = link::ensure_bridge_with(&h, &e.bridge, e.subnet, e.att.gateway).await?;
            let ns_file = netns::open(ns)?;
            let mac = mac_for(e.att.ip);
            link::create_veth_named(&h, &e.veth, &e.att.ifname, bridge, ns_file.as_raw_fd(), mac)
                .await?;
            drop(ns_file);
            let route = (!has_route && !internal).then_some(e.att.gateway);
            has_route |= route.is_some();
            let (ifname, ip, prefix) = (e.att.ifname.clone(), e.att.ip, e.att.prefix_len);
            netns::run_in(ns, move |h| async move {
                link::configure_interface(&h, &ifname, ip, prefix, route).await
            })
            .await?;
        }
        Ok(())
    }

    /// Serves the embedded DNS in the container's namespace if it is on a user network.
    pub(super) async fn start_dns(&self, _inner: &Inner, id: &str, r: &Record) -> Result<()> {
        match (&r.netns_path, r.endpoints.is_empty()) {
            (Some(ns), false) => self.dns.serve(id, ns).await,
            _ => Ok(()),
        }
    }
}

fn validate_bridge_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 15
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
    {
        return Err(RuntimeError::InvalidNetworkConfig {
            field: "bridge",
            value: name.to_string(),
            reason: "must be 1 to 15 letters, digits, '_' or '-'",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_symmetric() {
        let a: Ipv4Net = "10.0.0.0/16".parse().unwrap();
        let b: Ipv4Net = "10.0.5.0/24".parse().unwrap();
        let c: Ipv4Net = "10.1.0.0/16".parse().unwrap();
        assert!(overlaps(a, b) && overlaps(b, a));
        assert!(!overlaps(a, c));
        assert!(validate_bridge_name("br-0123456789ab").is_ok());
        assert!(validate_bridge_name("br-0123456789abc").is_err());
    }
}
