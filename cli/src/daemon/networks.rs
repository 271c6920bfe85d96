//! The networks service: Docker's network objects. `bridge` (the default bridge, skiff0),
//! `host` and `none` are built in; user-defined `bridge` networks are kept in
//! `<data-root>/networks.json` (written atomically) and made on the host by the runtime's
//! [`NetworkManager`] (a bridge `br-<12 hex of id>` each, its subnet from `--subnet` or the
//! `default-address-pools`). A container's endpoints live in the runtime's state (the truth
//! for addresses) and in its record (for views).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use skiff_runtime::network::{
    BridgeNetwork, EndpointAttachment, EndpointRequest, Ipv4Net, NetworkManager, NetworkMode,
};

use super::error::DaemonError;
use super::filters::Filters;
use super::record::{ContainerRecord, EndpointSummary};
use super::records::Records;

/// A network as `network inspect` shows it; the create options are kept as given so they
/// are echoed exactly (docker-compose compares them).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Network {
    pub id: String,
    pub name: String,
    /// RFC 3339.
    pub created: String,
    pub driver: String,
    pub internal: bool,
    pub attachable: bool,
    pub enable_ipv6: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    pub ipam_driver: String,
    pub ipam_options: BTreeMap<String, String>,
    /// The subnet and gateway in use (given or picked): inspect's `IPAM.Config`.
    pub subnet: String,
    pub gateway: String,
    pub ip_range: Option<String>,
    /// Linux bridge (`br-<12 hex>`; the default bridge's name for `bridge`).
    pub bridge: String,
}

impl Network {
    /// `bridge`, `host` or `none`.
    pub fn builtin(&self) -> bool {
        matches!(self.name.as_str(), "bridge" | "host" | "none")
    }

    fn runtime(&self) -> Result<BridgeNetwork, DaemonError> {
        let invalid = |e: skiff_runtime::RuntimeError| DaemonError::Invalid(e.to_string());
        Ok(BridgeNetwork {
            id: self.id.clone(),
            bridge: self.bridge.clone(),
            subnet: self.subnet.parse().map_err(invalid)?,
            gateway: self
                .gateway
                .parse()
                .map_err(|_| DaemonError::Invalid(format!("invalid gateway {}", self.gateway)))?,
            internal: self.internal,
        })
    }
}

/// `POST /networks/create`'s body (Docker's `NetworkCreateRequest`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateRequest {
    pub name: String,
    pub driver: Option<String>,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: Option<bool>,
    #[serde(rename = "IPAM")]
    pub ipam: Option<IpamRequest>,
    pub options: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub check_duplicate: Option<bool>,
    pub scope: Option<String>,
    pub config_only: bool,
    pub config_from: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamRequest {
    pub driver: Option<String>,
    pub config: Option<Vec<IpamPool>>,
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamPool {
    pub subnet: Option<String>,
    #[serde(rename = "IPRange")]
    pub ip_range: Option<String>,
    pub gateway: Option<String>,
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

/// One `default-address-pools` entry: subnets of `/size` carved from `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool {
    pub base: Ipv4Net,
    pub size: u8,
}

impl AddressPool {
    /// Parses `{"base": "10.10.0.0/16", "size": 24}` (daemon.json).
    pub fn parse(v: &serde_json::Value) -> Result<AddressPool, String> {
        let base = v
            .get("base")
            .and_then(|b| b.as_str())
            .ok_or("default-address-pools: each pool needs \"base\" (a CIDR)")?;
        let size = v
            .get("size")
            .and_then(|s| s.as_u64())
            .ok_or("default-address-pools: each pool needs \"size\" (a prefix length)")?;
        let base: Ipv4Net = base
            .parse()
            .map_err(|e| format!("default-address-pools: {e}"))?;
        if size < u64::from(base.prefix()) || size > 30 {
            return Err(format!(
                "default-address-pools: size {size} must be between {} and 30",
                base.prefix()
            ));
        }
        Ok(AddressPool {
            base,
            size: size as u8,
        })
    }

    /// Docker's defaults less the default bridge's 172.17/16 and skiff0's 172.18/16.
    pub fn defaults() -> Vec<AddressPool> {
        let mut out: Vec<AddressPool> = (19..=31)
            .map(|b| AddressPool {
                base: Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("valid pool"),
                size: 16,
            })
            .collect();
        out.push(AddressPool {
            base: Ipv4Net::new(Ipv4Addr::new(192, 168, 0, 0), 16).expect("valid pool"),
            size: 20,
        });
        out
    }

    fn subnets(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        let step = 1u64 << (32 - u32::from(self.size));
        let count = 1u64 << (u32::from(self.size) - u32::from(self.base.prefix()));
        let start = u64::from(u32::from(self.base.network()));
        (0..count).filter_map(move |i| {
            Ipv4Net::new(Ipv4Addr::from((start + i * step) as u32), self.size).ok()
        })
    }
}

pub struct NetworkService {
    file: PathBuf,
    pools: Vec<AddressPool>,
    manager: Arc<NetworkManager>,
    records: Arc<Records>,
    /// The user-defined networks; the lock serializes changes.
    user: tokio::sync::Mutex<Vec<Network>>,
    builtin: Vec<Network>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn rt(e: skiff_runtime::RuntimeError) -> DaemonError {
    DaemonError::Network(Box::new(e))
}

impl NetworkService {
    /// Loads the networks and makes sure the host has exactly them: each is made again if
    /// missing (idempotent), and networks the runtime has but the file does not (a crash
    /// between the two writes) are removed.
    pub async fn open(
        file: PathBuf,
        pools: Vec<AddressPool>,
        manager: Arc<NetworkManager>,
        records: Arc<Records>,
    ) -> Result<NetworkService, DaemonError> {
        let user: Vec<Network> = match std::fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                DaemonError::Internal(format!("network list {}: {e}", file.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(DaemonError::io("reading", &file, e)),
        };
        for n in &user {
            if let Err(e) = manager.create_network(n.runtime()?).await {
                tracing::error!(network = %n.name, "cannot make network again: {e}");
            }
        }
        for made in manager.networks().await {
            if !user.iter().any(|n| n.id == made.id) {
                if let Err(e) = manager.remove_network(&made.id).await {
                    tracing::warn!(bridge = %made.bridge, "removing an unrecorded network: {e}");
                }
            }
        }
        let cfg = manager.config();
        let created = now();
        let mk = |name: &str, driver: &str, bridge: &str| Network {
            id: super::network::network_id(name),
            name: name.into(),
            created: created.clone(),
            driver: driver.into(),
            internal: false,
            attachable: false,
            enable_ipv6: false,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            ipam_driver: "default".into(),
            ipam_options: BTreeMap::new(),
            subnet: String::new(),
            gateway: String::new(),
            ip_range: None,
            bridge: bridge.into(),
        };
        let mut bridge = mk("bridge", "bridge", &cfg.bridge);
        bridge.subnet = cfg.subnet.to_string();
        bridge.gateway = cfg.subnet.gateway().to_string();
        bridge.options = BTreeMap::from([
            (
                "com.docker.network.bridge.default_bridge".into(),
                "true".into(),
            ),
            ("com.docker.network.bridge.name".into(), cfg.bridge.clone()),
        ]);
        let builtin = vec![bridge, mk("host", "host", ""), mk("none", "null", "")];
        Ok(NetworkService {
            file,
            pools,
            manager,
            records,
            user: tokio::sync::Mutex::new(user),
            builtin,
        })
    }

    pub async fn all(&self) -> Vec<Network> {
        let user = self.user.lock().await;
        self.builtin.iter().chain(user.iter()).cloned().collect()
    }

    /// By exact name, exact id, or unique id prefix (Docker's order).
    pub async fn get(&self, key: &str) -> Result<Network, DaemonError> {
        let all = self.all().await;
        if let Some(n) = all.iter().find(|n| n.name == key || n.id == key) {
            return Ok(n.clone());
        }
        let found: Vec<&Network> = all
            .iter()
            .filter(|n| !key.is_empty() && n.id.starts_with(key))
            .collect();
        match found.len() {
            1 => Ok(found[0].clone()),
            0 => Err(DaemonError::NoSuchNetwork(key.to_string())),
            _ => Err(DaemonError::AmbiguousId(key.to_string())),
        }
    }

    fn save(&self, user: &[Network]) -> Result<(), DaemonError> {
        let tmp = self.file.with_extension("json.tmp");
        let json =
            serde_json::to_vec_pretty(user).map_err(|e| DaemonError::Internal(e.to_string()))?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.file)
        };
        write().map_err(|e| DaemonError::io("writing", &self.file, e))
    }

    /// Creates a user-defined bridge network (Docker's checks and messages).
    pub async fn create(&self, req: CreateRequest) -> Result<Network, DaemonError> {
        if !super::names::valid_name(&req.name) {
            return Err(DaemonError::Invalid(format!(
                "invalid network name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                req.name
            )));
        }
        let driver = req
            .driver
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "bridge".into());
        if driver != "bridge" {
            return Err(DaemonError::Unsupported {
                field: "Driver".into(),
                value: format!("{driver:?} (only bridge networks can be created)"),
            });
        }
        let unsupported = |field: &str, value: String| DaemonError::Unsupported {
            field: field.into(),
            value,
        };
        if req.enable_ipv6 == Some(true) {
            return Err(unsupported("EnableIPv6", "true (IPv4 only)".into()));
        }
        if req.ingress || req.config_only || req.config_from.as_ref().is_some_and(|v| !v.is_null())
        {
            return Err(unsupported("Ingress/ConfigOnly/ConfigFrom", "set".into()));
        }
        if let Some(s) = req
            .scope
            .as_deref()
            .filter(|s| !s.is_empty() && *s != "local")
        {
            return Err(unsupported("Scope", format!("{s:?}")));
        }
        let options = req.options.clone().unwrap_or_default();
        if let Some((k, v)) = options.iter().next() {
            // Bridge driver options (MTU, bridge name, ICC ...) are not implemented.
            return Err(unsupported(&format!("Options.{k}"), format!("{v:?}")));
        }
        let ipam = req.ipam.unwrap_or_default();
        let ipam_driver = ipam
            .driver
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "default".into());
        if ipam_driver != "default" {
            return Err(unsupported("IPAM.Driver", format!("{ipam_driver:?}")));
        }
        if let Some((k, v)) = ipam.options.iter().flatten().next() {
            return Err(unsupported(&format!("IPAM.Options.{k}"), format!("{v:?}")));
        }
        let pools = ipam.config.unwrap_or_default();
        if pools.len() > 1 {
            return Err(unsupported("IPAM.Config", "more than one pool".into()));
        }
        let pool = pools.into_iter().next().unwrap_or_default();
        if pool.aux_addresses.as_ref().is_some_and(|a| !a.is_empty()) {
            return Err(unsupported("IPAM.Config.AuxiliaryAddresses", "set".into()));
        }
        let mut user = self.user.lock().await;
        if self
            .builtin
            .iter()
            .chain(user.iter())
            .any(|n| n.name == req.name)
        {
            return Err(DaemonError::NetworkNameInUse(req.name));
        }
        if let Some(r) = pool.ip_range.as_deref().filter(|s| !s.is_empty()) {
            return Err(unsupported("IPAM.Config.IPRange", format!("{r:?}")));
        }
        let asked: Option<Ipv4Net> = match pool.subnet.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(
                s.parse()
                    .map_err(|e| DaemonError::Invalid(format!("invalid subnet {s}: {e}")))?,
            ),
            None => {
                if pool.gateway.as_deref().is_some_and(|g| !g.is_empty()) {
                    return Err(DaemonError::invalid("a gateway needs a subnet (--subnet)"));
                }
                None
            }
        };
        let id = super::names::new_id();
        // A subnet picked from the pools can be taken between the pick and the create (by
        // another daemon's network, or a route that appeared): then the next one is picked.
        let mut picks_left = 8;
        let net = loop {
            let subnet = match asked {
                Some(s) => s,
                None => self.pick_subnet().await?,
            };
            let gateway: Ipv4Addr = match pool.gateway.as_deref().filter(|s| !s.is_empty()) {
                Some(g) => g
                    .parse()
                    .map_err(|_| DaemonError::Invalid(format!("invalid gateway {g:?}")))?,
                None => subnet.gateway(),
            };
            if !subnet.contains(gateway)
                || gateway == subnet.network()
                || gateway == subnet.broadcast()
            {
                return Err(DaemonError::Invalid(format!(
                    "no matching subnet for gateway {gateway} (subnet {subnet})"
                )));
            }
            let net = Network {
                bridge: format!("br-{}", &id[..12]),
                id: id.clone(),
                name: req.name.clone(),
                created: now(),
                driver: driver.clone(),
                internal: req.internal,
                attachable: req.attachable,
                enable_ipv6: false,
                labels: req.labels.clone().unwrap_or_default(),
                options: options.clone(),
                ipam_driver: ipam_driver.clone(),
                ipam_options: ipam.options.clone().unwrap_or_default(),
                subnet: subnet.to_string(),
                gateway: gateway.to_string(),
                ip_range: None,
            };
            match self.manager.create_network(net.runtime()?).await {
                Ok(()) => break net,
                Err(skiff_runtime::RuntimeError::SubnetOverlap { .. })
                    if asked.is_none() && picks_left > 0 =>
                {
                    picks_left -= 1;
                }
                Err(e @ skiff_runtime::RuntimeError::SubnetOverlap { .. }) => {
                    return Err(DaemonError::NetworkForbidden(format!(
                        "Pool overlaps with other one on this address space: {e}"
                    )))
                }
                Err(e) => return Err(rt(e)),
            }
        };
        user.push(net.clone());
        if let Err(e) = self.save(&user) {
            user.pop();
            if let Err(undo) = self.manager.remove_network(&net.id).await {
                tracing::error!(network = %net.name, "undoing a network create: {undo}");
            }
            return Err(e);
        }
        Ok(net)
    }

    /// The pools user-defined networks take their subnets from (`/info`'s
    /// `DefaultAddressPools`).
    pub fn pools(&self) -> &[AddressPool] {
        &self.pools
    }

    /// The first pool subnet that overlaps nothing (the runtime checks routes and networks).
    async fn pick_subnet(&self) -> Result<Ipv4Net, DaemonError> {
        for pool in &self.pools {
            for candidate in pool.subnets() {
                if self.manager.check_subnet(candidate).await.is_ok() {
                    return Ok(candidate);
                }
            }
        }
        Err(DaemonError::NetworkForbidden(
            "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network".into(),
        ))
    }

    /// Removes a user-defined network; 403 for built-in ones or while containers use it.
    pub async fn remove(&self, key: &str) -> Result<Network, DaemonError> {
        let net = self.get(key).await?;
        if net.builtin() {
            return Err(DaemonError::NetworkForbidden(format!(
                "{} is a pre-defined network and cannot be removed",
                net.name
            )));
        }
        let mut user = self.user.lock().await;
        let users = self.containers_on(&net.id)?;
        if !users.is_empty() {
            let names: Vec<String> = users.iter().map(|(r, _)| r.name.clone()).collect();
            return Err(DaemonError::NetworkForbidden(format!(
                "error while removing network: network {} id {} has active endpoints ({})",
                net.name,
                net.id,
                names.join(", ")
            )));
        }
        self.manager
            .remove_network(&net.id)
            .await
            .map_err(|e| match e {
                skiff_runtime::RuntimeError::NetworkInUse { .. } => {
                    DaemonError::NetworkForbidden(format!("error while removing network: {e}"))
                }
                e => rt(e),
            })?;
        user.retain(|n| n.id != net.id);
        self.save(&user)?;
        Ok(net)
    }

    /// Removes the user-defined networks no container uses (and that `filters` select:
    /// `label`, `label!`, `until`); returns their names.
    pub async fn prune(&self, filters: &Filters) -> Result<Vec<String>, DaemonError> {
        let until = match filters.get("until").last() {
            Some(v) => Some(super::time_arg::parse(v).ok_or_else(|| {
                DaemonError::Invalid(format!("invalid filter 'until={v}': not a timestamp"))
            })?),
            None => None,
        };
        let candidates: Vec<Network> = self.user.lock().await.clone();
        let mut removed = Vec::new();
        for n in candidates {
            if !label_filters_match(filters, &n.labels) {
                continue;
            }
            if let Some(until) = until {
                let created = chrono::DateTime::parse_from_rfc3339(&n.created)
                    .map(|t| t.timestamp())
                    .unwrap_or(0);
                if created >= until {
                    continue;
                }
            }
            if !self.containers_on(&n.id)?.is_empty() {
                continue;
            }
            match self.remove(&n.id).await {
                Ok(_) => removed.push(n.name),
                Err(e) => tracing::warn!(network = %n.name, "prune: {e}"),
            }
        }
        Ok(removed)
    }

    /// The containers with an endpoint on network `id`, with that endpoint.
    pub fn containers_on(
        &self,
        id: &str,
    ) -> Result<Vec<(ContainerRecord, EndpointSummary)>, DaemonError> {
        let mut out = Vec::new();
        for r in self.records.all()? {
            let ep = r
                .network
                .as_ref()
                .and_then(|n| n.endpoints.iter().find(|e| e.network_id == id).cloned());
            if let Some(ep) = ep {
                out.push((r, ep));
            }
        }
        Ok(out)
    }

    /// The networks a new container joins: its `NetworkMode` (a built-in mode, or a
    /// user-defined network that becomes its first endpoint) and every user-defined network
    /// in `EndpointsConfig`, with aliases and `--ip`. Returns the runtime's mode, the
    /// endpoint requests, and their summaries (addresses filled in once made).
    pub async fn plan(
        &self,
        network_mode: &str,
        endpoints: &[(String, Vec<String>, Option<String>)],
        links: &[String],
        container_name: &str,
        container_id: &str,
    ) -> Result<(NetworkMode, Vec<EndpointRequest>, Vec<EndpointSummary>), DaemonError> {
        let mode = match network_mode {
            "" | "default" | "bridge" => Some(NetworkMode::Bridge),
            "none" => Some(NetworkMode::None),
            "host" => Some(NetworkMode::Host),
            m if m.starts_with("container:") => {
                return Err(DaemonError::Unsupported {
                    field: "HostConfig.NetworkMode".into(),
                    value: format!("{m:?} (sharing another container's network)"),
                })
            }
            _ => None,
        };
        // A 404 from create means "no such image" to the docker CLI, which then tries to
        // pull it: a missing network is refused as a bad request instead (same message and
        // exit code as dockerd's failing start; nothing is left created).
        let get = |key: &str| {
            let key = key.to_string();
            async move {
                self.get(&key).await.map_err(|e| match e {
                    DaemonError::NoSuchNetwork(k) => {
                        DaemonError::Invalid(format!("network {k} not found"))
                    }
                    other => other,
                })
            }
        };
        let mut wanted: Vec<(Network, Vec<String>, Option<String>)> = Vec::new();
        if mode.is_none() {
            let net = get(network_mode).await?;
            let (aliases, ip) = endpoints
                .iter()
                .find(|(n, _, _)| *n == net.name || *n == net.id || *n == network_mode)
                .map(|(_, a, ip)| (a.clone(), ip.clone()))
                .unwrap_or_default();
            wanted.push((net, aliases, ip));
        }
        let mut others: Vec<&(String, Vec<String>, Option<String>)> = endpoints.iter().collect();
        others.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, aliases, ip) in others {
            if matches!(name.as_str(), "default" | "bridge" | "host" | "none") {
                continue;
            }
            let net = get(name).await?;
            if wanted.iter().any(|(w, _, _)| w.id == net.id) {
                continue;
            }
            if mode == Some(NetworkMode::Host) || mode == Some(NetworkMode::None) {
                return Err(DaemonError::Invalid(format!(
                    "container cannot be disconnected from host network or connected to host network ({network_mode} and {name})"
                )));
            }
            wanted.push((net, aliases.clone(), ip.clone()));
        }
        if !links.is_empty() && wanted.is_empty() && mode != Some(NetworkMode::Bridge) {
            return Err(DaemonError::Invalid(format!(
                "conflicting options: host type networking can't be used with links ({network_mode})"
            )));
        }
        let mut reqs = Vec::new();
        let mut sums = Vec::new();
        for (net, aliases, ip) in wanted {
            let (mut req, sum) = self.endpoint(&net, aliases, ip, container_name, container_id)?;
            req.links = parse_links(links)?;
            reqs.push(req);
            sums.push(sum);
        }
        Ok((mode.unwrap_or(NetworkMode::None), reqs, sums))
    }

    /// One endpoint request on a user-defined network, checked: aliases may not be another
    /// container's name on it.
    fn endpoint(
        &self,
        net: &Network,
        aliases: Vec<String>,
        ip: Option<String>,
        container_name: &str,
        container_id: &str,
    ) -> Result<(EndpointRequest, EndpointSummary), DaemonError> {
        if net.builtin() {
            return Err(DaemonError::Invalid(format!(
                "network-scoped alias and --ip are supported only for user-defined networks ({})",
                net.name
            )));
        }
        let ip_req = match ip.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(
                s.parse::<Ipv4Addr>()
                    .map_err(|_| DaemonError::Invalid(format!("invalid IPv4 address {s:?}")))?,
            ),
            None => None,
        };
        for (other, _) in self.containers_on(&net.id)? {
            if other.id != container_id && aliases.contains(&other.name) {
                return Err(DaemonError::Invalid(format!(
                    "alias {:?} is the name of container {} on network {}",
                    other.name,
                    &other.id[..12],
                    net.name
                )));
            }
        }
        let mut names = vec![container_name.to_string(), container_id[..12].to_string()];
        names.extend(aliases.iter().cloned());
        Ok((
            EndpointRequest {
                network_id: net.id.clone(),
                ip: ip_req,
                names,
                links: Vec::new(),
            },
            EndpointSummary {
                network_name: net.name.clone(),
                network_id: net.id.clone(),
                aliases,
                ip_requested: ip_req.map(|i| i.to_string()).unwrap_or_default(),
                ..Default::default()
            },
        ))
    }

    /// Connects a container (any state: its namespace lives from create to remove).
    pub async fn connect(
        &self,
        key: &str,
        r: &ContainerRecord,
        aliases: Vec<String>,
        ip: Option<String>,
        links: &[String],
    ) -> Result<(), DaemonError> {
        let net = self.get(key).await?;
        let on = |r: &ContainerRecord| {
            r.network
                .as_ref()
                .is_some_and(|n| n.endpoints.iter().any(|e| e.network_id == net.id))
        };
        if on(r) {
            return Err(DaemonError::NetworkForbidden(format!(
                "endpoint with name {} already exists in network {}",
                r.name, net.name
            )));
        }
        if net.builtin() {
            return Err(DaemonError::Unsupported {
                field: "network connect".into(),
                value: format!("{} (connecting to a built-in network)", net.name),
            });
        }
        let (mut req, mut sum) = self.endpoint(&net, aliases, ip, &r.name, &r.id)?;
        req.links = parse_links(links)?;
        let att = self
            .manager
            .connect(&r.id, req)
            .await
            .map_err(|e| match e {
                skiff_runtime::RuntimeError::NoNetnsToConnect { .. } => {
                    DaemonError::Invalid(format!(
                "container {} is on the host network or on none: it cannot be connected to other networks",
                r.name
            ))
                }
                e => rt(e),
            })?;
        fill(&mut sum, &att);
        let mut updated = self.records.get(&r.id)?.unwrap_or_else(|| r.clone());
        updated
            .network
            .get_or_insert_with(Default::default)
            .endpoints
            .push(sum);
        self.records.update(&updated)
    }

    pub async fn disconnect(&self, key: &str, r: &ContainerRecord) -> Result<(), DaemonError> {
        let net = self.get(key).await?;
        if net.builtin() {
            return Err(DaemonError::Unsupported {
                field: "network disconnect".into(),
                value: format!("{} (a built-in network)", net.name),
            });
        }
        self.manager.disconnect(&r.id, &net.id).await.map_err(rt)?;
        let mut updated = self.records.get(&r.id)?.unwrap_or_else(|| r.clone());
        if let Some(n) = updated.network.as_mut() {
            n.endpoints.retain(|e| e.network_id != net.id);
        }
        self.records.update(&updated)
    }

    /// `GET /networks/{id}`'s body (and each `GET /networks` entry).
    pub fn view(
        &self,
        n: &Network,
        with_containers: bool,
    ) -> Result<serde_json::Value, DaemonError> {
        let mut containers = serde_json::Map::new();
        if with_containers && n.name == "bridge" {
            for r in self.records.all()? {
                let Some(net) = r.network.as_ref().filter(|x| !x.ip_address.is_empty()) else {
                    continue;
                };
                containers.insert(
                    r.id.clone(),
                    serde_json::json!({
                        "Name": r.name,
                        "EndpointID": super::network::endpoint_id(&r.id, "bridge"),
                        "MacAddress": net.mac_address,
                        "IPv4Address": format!("{}/{}", net.ip_address, net.prefix_len),
                        "IPv6Address": "",
                    }),
                );
            }
        }
        if with_containers && !n.builtin() {
            for (r, ep) in self.containers_on(&n.id)? {
                containers.insert(
                    r.id.clone(),
                    serde_json::json!({
                        "Name": r.name,
                        "EndpointID": super::network::endpoint_id(&r.id, &n.name),
                        "MacAddress": ep.mac_address,
                        "IPv4Address": format!("{}/{}", ep.ip_address, ep.prefix_len),
                        "IPv6Address": "",
                    }),
                );
            }
        }
        let mut config = Vec::new();
        if !n.subnet.is_empty() {
            let mut c = serde_json::json!({"Subnet": n.subnet, "Gateway": n.gateway});
            if let Some(r) = &n.ip_range {
                c["IPRange"] = r.clone().into();
            }
            config.push(c);
        }
        let scope = "local";
        Ok(serde_json::json!({
            "Name": n.name,
            "Id": n.id,
            "Created": n.created,
            "Scope": scope,
            "Driver": n.driver,
            "EnableIPv4": true,
            "EnableIPv6": n.enable_ipv6,
            "IPAM": {
                "Driver": n.ipam_driver,
                "Options": if n.ipam_options.is_empty() { serde_json::Value::Null } else { serde_json::json!(n.ipam_options) },
                "Config": config,
            },
            "Internal": n.internal,
            "Attachable": n.attachable,
            "Ingress": false,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": false,
            "Containers": containers,
            "Options": n.options,
            "Labels": n.labels,
        }))
    }

    /// `GET /networks` with Docker's filters (`driver`, `id`, `label`, `name`, `scope`,
    /// `type` = custom|builtin, `dangling`).
    pub async fn select(&self, f: &Filters) -> Result<Vec<Network>, DaemonError> {
        let dangling = f.bool("dangling")?;
        let mut out = Vec::new();
        for n in self.all().await {
            if f.contains("driver") && !f.get("driver").contains(&n.driver) {
                continue;
            }
            if f.contains("id") && !f.get("id").iter().any(|i| n.id.starts_with(i.as_str())) {
                continue;
            }
            if f.contains("name") && !f.get("name").iter().any(|x| n.name.contains(x.as_str())) {
                continue;
            }
            if f.contains("scope") && !f.get("scope").iter().any(|s| s == "local") {
                continue;
            }
            if f.contains("type") {
                let t = if n.builtin() { "builtin" } else { "custom" };
                if !f.get("type").iter().any(|x| x == t) {
                    continue;
                }
            }
            if !label_filters_match(f, &n.labels) {
                continue;
            }
            if let Some(d) = dangling {
                let unused = !n.builtin() && self.containers_on(&n.id)?.is_empty();
                if d != unused {
                    continue;
                }
            }
            out.push(n);
        }
        Ok(out)
    }
}

/// `label=k`, `label=k=v` (all must match) and `label!=...` (none may).
fn label_filters_match(f: &Filters, labels: &BTreeMap<String, String>) -> bool {
    let m = |spec: &str| match spec.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(spec),
    };
    f.get("label").iter().all(|s| m(s)) && !f.get("label!").iter().any(|s| m(s))
}

/// `target[:alias]` links as `(alias, target)` (Docker's `HostConfig.Links` form, with the
/// target's leading `/` allowed).
pub fn parse_links(links: &[String]) -> Result<Vec<(String, String)>, DaemonError> {
    links
        .iter()
        .map(|l| {
            let (target, alias) = l.split_once(':').unwrap_or((l, l));
            let target = target.trim_start_matches('/');
            let alias = alias
                .trim_start_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(alias);
            if target.is_empty() || alias.is_empty() {
                return Err(DaemonError::Invalid(format!(
                    "invalid link {l:?}: expected NAME[:ALIAS]"
                )));
            }
            Ok((alias.to_string(), target.to_string()))
        })
        .collect()
}

/// Copies the addresses the runtime picked into an endpoint's summary.
pub fn fill(sum: &mut EndpointSummary, att: &EndpointAttachment) {
    sum.ip_address = att.ip.to_string();
    sum.prefix_len = att.prefix_len;
    sum.gateway = att.gateway.to_string();
    sum.mac_address = att.mac.clone();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_parse_and_split() {
        let p =
            AddressPool::parse(&serde_json::json!({"base": "10.20.0.0/16", "size": 24})).unwrap();
        let mut it = p.subnets();
        assert_eq!(it.next().unwrap().to_string(), "10.20.0.0/24");
        assert_eq!(it.next().unwrap().to_string(), "10.20.1.0/24");
        assert_eq!(p.subnets().count(), 256);
        assert!(
            AddressPool::parse(&serde_json::json!({"base": "10.20.0.0/16", "size": 8})).is_err()
        );
        assert!(AddressPool::parse(&serde_json::json!({"base": "10.20.0.0/16"})).is_err());
        assert!(AddressPool::defaults()
            .iter()
            .all(|p| !p.base.contains(Ipv4Addr::new(172, 18, 0, 1))));
    }

    #[test]
    fn links_parse() {
        let l = parse_links(&["p_web_1:web".into(), "/db".into(), "/x:/me/y".into()]).unwrap();
        assert_eq!(
            l,
            vec![
                ("web".to_string(), "p_web_1".to_string()),
                ("db".to_string(), "db".to_string()),
                ("y".to_string(), "x".to_string())
            ]
        );
        assert!(parse_links(&[":a".into()]).is_err());
    }

    #[test]
    fn labels_filter() {
        let labels = BTreeMap::from([("a".to_string(), "1".to_string())]);
        let f = Filters::parse(Some(r#"{"label":["a=1"]}"#), &["label", "label!"]).unwrap();
        assert!(label_filters_match(&f, &labels));
        let f = Filters::parse(Some(r#"{"label!":["a"]}"#), &["label", "label!"]).unwrap();
        assert!(!label_filters_match(&f, &labels));
    }
}
