//! The daemon's entry point to networking: prepare / release / restore, serialized by one
//! lock, with the state file written ahead of every change so any step can be undone.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;
use tokio::sync::Mutex;

use super::dns::Dns;
use super::iptables;
use super::link;
use super::netns;
use super::proxy::PortProxy;
use super::rules::{self, Chains};
use super::state::{self, Record, Spare, State};
use super::subnet::{format_mac, mac_for};
use super::{
    files, NetworkAttachment, NetworkConfig, NetworkMode, NetworkRequest, PortSpec, Protocol,
    PublishedPort,
};
use crate::error::{Result, RuntimeError};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Owns the bridge network of one daemon. Cheap to share (`Arc`); every method is safe to
/// call concurrently (they are serialized inside).
pub struct NetworkManager {
    pub(super) config: NetworkConfig,
    pub(super) chains: Chains,
    pub(super) inner: Mutex<Inner>,
    pub(super) dns: Dns,
    _lock: Flock<std::fs::File>,
}

pub(super) struct Inner {
    pub(super) state: State,
    pub(super) proxies: HashMap<String, Vec<PortProxy>>,
    /// What skiff's chains were last brought to; `None` until the first sync. A container
    /// without published ports changes nothing, so it costs no iptables call.
    applied: Option<RuleSet>,
}

/// The content of skiff's chains.
#[derive(Clone, Debug, PartialEq)]
enum RuleSet {
    /// No chain and no jump of skiff's.
    Absent,
    /// The base rules plus these port rules.
    Present(Vec<iptables::Rule>),
}

impl NetworkManager {
    /// Opens the network state under `config.state_dir` (taking its lock) and rebuilds
    /// what a daemon restart lost: proxies are re-bound and rules re-checked (never
    /// doubled); attachments whose namespace is gone (e.g. after a reboot) are released,
    /// and rules tagged for containers the state does not know are removed. Must be called
    /// inside a tokio runtime. The daemon then calls [`release`](Self::release) for every
    /// id in [`attached`](Self::attached) whose container no longer exists.
    pub async fn restore(config: NetworkConfig) -> Result<Self> {
        validate_config(&config)?;
        let lock = state::lock(&config.state_dir)?;
        let loaded = state::load(&config.state_dir)?;
        let manager = Self {
            chains: Chains::new(&config.chain_prefix),
            dns: Dns::new(
                config.host_resolv_conf.clone(),
                config
                    .proxy_processes
                    .as_ref()
                    .map(|p| super::dns_holder::Holders {
                        exe: p.exe.clone(),
                        dir: p.pid_dir.with_file_name("dns"),
                    }),
            ),
            config,
            inner: Mutex::new(Inner {
                state: loaded,
                proxies: HashMap::new(),
                applied: None,
            }),
            _lock: lock,
        };
        manager.rebuild().await?;
        Ok(manager)
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The ids of the containers that currently have an attachment.
    pub async fn attached(&self) -> Vec<String> {
        self.inner
            .lock()
            .await
            .state
            .containers
            .keys()
            .cloned()
            .collect()
    }

    /// The attachment of a container (e.g. for inspect after a daemon restart).
    pub async fn attachment_of(&self, container_id: &str) -> Option<NetworkAttachment> {
        let inner = self.inner.lock().await;
        let record = inner.state.containers.get(container_id)?;
        Some(self.attachment(container_id, record))
    }

    /// Makes the container's network when it is created: the namespace, veth, address,
    /// routes and rules, and the plan of its published ports (host ports chosen, none
    /// bound: [`publish`](Self::publish) binds them at its start, where a busy port fails,
    /// as with dockerd). On any failure everything made is undone.
    pub async fn prepare(&self, req: NetworkRequest) -> Result<NetworkAttachment> {
        validate_id(&req.container_id)?;
        validate_hostname(&req.hostname)?;
        let mut inner = self.inner.lock().await;
        if inner.state.containers.contains_key(&req.container_id) {
            return Err(RuntimeError::NetworkAttachmentExists {
                id: req.container_id,
            });
        }
        let id = req.container_id.clone();
        if req.mode == NetworkMode::Host && !req.endpoints.is_empty() {
            return Err(RuntimeError::InvalidNetworkConfig {
                field: "networks",
                value: id,
                reason: "a container on the host's network cannot join other networks",
            });
        }
        if req.mode == NetworkMode::None && req.endpoints.is_empty() {
            // The container's init makes its own namespace with only loopback: nothing to
            // make, record or undo here.
            if !req.ports.is_empty() {
                tracing::warn!(container = %id, mode = %req.mode, "published ports are discarded");
            }
            let record = Record {
                mode: req.mode,
                hostname: req.hostname.clone(),
                netns_path: None,
                ip: None,
                veth: None,
                ports: Vec::new(),
                unpublished: false,
                endpoints: Vec::new(),
                dns: Vec::new(),
            };
            return Ok(self.attachment(&id, &record));
        }
        if req.mode == NetworkMode::Bridge && req.endpoints.is_empty() {
            if let Some(spare) = self.take_spare(&mut inner).await {
                return self.prepare_on_spare(&mut inner, req, spare).await;
            }
        }
        let netns_path = (req.mode != NetworkMode::Host).then(|| self.netns_path(&id));
        let first_if = usize::from(req.mode == NetworkMode::Bridge);
        let endpoints = self
            .plan_endpoints(&inner, &id, &req.endpoints, first_if, &[])
            .await?;
        let (ip, veth, ports) = match req.mode {
            NetworkMode::Bridge => {
                let ip = self.config.subnet.allocate(
                    &inner.state.used_ips(),
                    inner.state.last_ip,
                    &self.config.bridge,
                )?;
                let ports = plan_ports(&req.ports, &inner.state)?;
                (Some(ip), Some(self.free_veth_name(&id).await?), ports)
            }
            NetworkMode::None if !endpoints.is_empty() => {
                (None, None, plan_ports(&req.ports, &inner.state)?)
            }
            NetworkMode::None | NetworkMode::Host => {
                if !req.ports.is_empty() {
                    tracing::warn!(container = %id, mode = %req.mode, "published ports are discarded");
                }
                (None, None, Vec::new())
            }
        };
        // Not running yet: no port bound and no name served until `publish` at its start.
        let unpublished = !ports.is_empty() || !endpoints.is_empty();
        let record = Record {
            mode: req.mode,
            hostname: req.hostname.clone(),
            netns_path: netns_path.clone(),
            ip,
            veth,
            ports,
            unpublished,
            endpoints,
            dns: req.dns_forwarders.clone(),
        };
        // Write ahead: a crash from here on leaves a record that restore can undo.
        inner.state.containers.insert(id.clone(), record.clone());
        if ip.is_some() {
            inner.state.last_ip = ip;
        }
        if let Err(e) = state::save(&self.config.state_dir, &inner.state) {
            inner.state.containers.remove(&id);
            return Err(e);
        }
        let attached = match self.attach(&record).await {
            Ok(()) => self.sync_rules(&mut inner, true).await,
            Err(e) => Err(e),
        };
        let attached = match attached {
            Ok(()) => self.start_dns(&inner, &id, &record).await,
            Err(e) => Err(e),
        };
        if let Err(e) = attached {
            self.dns.stop(&id);
            if let Err(undo) = self.detach(&record).await {
                tracing::error!(container = %id, error = %undo, "cannot undo failed network setup");
                return Err(e);
            }
            inner.state.containers.remove(&id);
            if let Err(save) = self.save_and_sync(&mut inner, true).await {
                tracing::error!(container = %id, error = %save, "cannot record undone network setup");
            }
            return Err(e);
        }
        Ok(self.attachment(&id, &record))
    }

    /// Removes everything [`prepare`](Self::prepare) made for the container: proxies,
    /// rules, veth (and with it the address), namespace, and its address reservation.
    /// Unknown ids are fine (idempotent). On failure the record is kept so a retry (or the
    /// next restore) finishes the job. A default-bridge attachment may be kept whole as a
    /// spare for the next container instead (see [`release_unused`](Self::release_unused)).
    pub async fn release(&self, container_id: &str) -> Result<()> {
        self.release_as(container_id, true).await
    }

    /// As [`release`](Self::release), never keeping the attachment as a spare: for a
    /// container that never ran (a failed `run --rm` leaves no namespace or veth behind) or
    /// one that could have changed its namespace (`--privileged`, `NET_ADMIN`), which the
    /// next container must not inherit.
    pub async fn release_unused(&self, container_id: &str) -> Result<()> {
        self.release_as(container_id, false).await
    }

    async fn release_as(&self, container_id: &str, may_keep: bool) -> Result<()> {
        let record = {
            let mut inner = self.inner.lock().await;
            stop_all(inner.proxies.remove(container_id).unwrap_or_default()).await;
            self.dns.stop(container_id);
            match inner.state.containers.get(container_id) {
                Some(r) => r.clone(),
                None => return Ok(()),
            }
        };
        // With endpoints on user networks the namespace holds more than a spare may.
        if let (Some(netns_path), Some(ip), Some(veth), true) = (
            &record.netns_path,
            record.ip,
            &record.veth,
            may_keep && record.endpoints.is_empty(),
        ) {
            // Its processes are gone (the container was removed first): the attachment is
            // kept whole for the next container, if there is room.
            let mut inner = self.inner.lock().await;
            if inner.state.spares.len() < self.config.spares
                && inner.state.containers.remove(container_id).is_some()
            {
                inner.state.spares.push(Spare {
                    netns_path: netns_path.clone(),
                    ip,
                    veth: veth.clone(),
                });
                return self.save_and_sync(&mut inner, true).await;
            }
        }
        // Deleting a veth waits out RCU grace periods in the kernel (~15 ms): done outside
        // the lock so other containers' setups go on meanwhile. The record, and with it the
        // address, stays until the links are gone.
        self.detach(&record).await?;
        let mut inner = self.inner.lock().await;
        if inner.state.containers.remove(container_id).is_none() {
            return Ok(()); // a concurrent release of the same id finished first
        }
        self.save_and_sync(&mut inner, true).await
    }

    /// Closes the container's published ports (proxies and forwarding rules) and takes
    /// its names out of the embedded DNS while it is not running, keeping its bindings for
    /// [`publish`](Self::publish). Unknown ids and containers without ports are fine.
    pub async fn unpublish(&self, container_id: &str) -> Result<()> {
        let mut inner = self.inner.lock().await;
        // Also a container off its networks' DNS: only running containers have names.
        match inner.state.containers.get_mut(container_id) {
            Some(r) if !r.unpublished && (!r.ports.is_empty() || !r.endpoints.is_empty()) => {
                r.unpublished = true
            }
            _ => return Ok(()),
        }
        stop_all(inner.proxies.remove(container_id).unwrap_or_default()).await;
        self.save_and_sync(&mut inner, true).await
    }

    /// Binds the container's published ports again, on the same host ports, before it
    /// starts; [`RuntimeError::PortAllocated`] when another container publishes one,
    /// [`RuntimeError::PortInUse`] when another process holds it.
    pub async fn publish(&self, container_id: &str) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let (ip, specs) = match inner.state.containers.get(container_id) {
            Some(r) if r.unpublished => match r.port_target(&self.config.bridge) {
                Some((ip, _)) => (
                    ip,
                    r.ports
                        .iter()
                        .map(|p| PortSpec {
                            host_ip: Some(p.host_ip),
                            host_port: Some(p.host_port),
                            container_port: p.container_port,
                            protocol: p.protocol,
                        })
                        .collect::<Vec<_>>(),
                ),
                // On no network any more (all disconnected): nothing to bind.
                None => (std::net::Ipv4Addr::UNSPECIFIED, Vec::new()),
            },
            _ => return Ok(()),
        };
        // A port another container of this daemon publishes is dockerd's "already
        // allocated"; one held by any other process fails the bind below.
        for s in &specs {
            let (want_ip, want_port) = (s.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), s.host_port);
            let taken = inner.state.containers.iter().any(|(id, r)| {
                id != container_id
                    && !r.unpublished
                    && r.ports.iter().any(|p| {
                        p.protocol == s.protocol
                            && Some(p.host_port) == want_port
                            && (p.host_ip == want_ip
                                || p.host_ip.is_unspecified()
                                || want_ip.is_unspecified())
                    })
            });
            if taken {
                return Err(RuntimeError::PortAllocated {
                    host_ip: std::net::IpAddr::V4(want_ip),
                    port: want_port.unwrap_or(0),
                    protocol: s.protocol.as_str(),
                });
            }
        }
        let proxies = start_proxies(
            &specs,
            ip,
            self.config.proxy_processes.as_ref(),
            container_id,
        )
        .await?;
        if let Some(r) = inner.state.containers.get_mut(container_id) {
            r.unpublished = false;
        }
        inner.proxies.insert(
            container_id.to_string(),
            proxies.into_iter().map(|(_, p)| p).collect(),
        );
        self.save_and_sync(&mut inner, true).await
    }

    /// Releases every attachment and removes the bridge, skiff's chains and the netns dir:
    /// the host as before skiff (for tests and uninstall).
    pub async fn teardown(self) -> Result<()> {
        let ids = self.attached().await;
        for id in ids {
            self.release(&id).await?;
        }
        self.drop_spares().await?;
        let snapshot = iptables::snapshot().await?;
        iptables::apply(&rules::removal_script(&self.chains, &snapshot)).await?;
        let h = link::connect(Path::new("host"))?;
        link::delete_link(&h, &self.config.bridge).await?;
        let nets: Vec<String> = {
            let inner = self.inner.lock().await;
            inner
                .state
                .networks
                .values()
                .map(|n| n.bridge.clone())
                .collect()
        };
        for bridge in nets {
            link::delete_link(&h, &bridge).await?;
        }
        netns::remove_dir(&self.netns_dir())
    }

    /// For a daemon that stops: deletes the spare attachments (only a cache) and, when no
    /// container is left on the bridge, skiff's chains and jumps (they come back with the
    /// next bridged container). Containers still attached keep everything.
    pub async fn shutdown(&self) -> Result<()> {
        self.drop_spares().await?;
        let mut inner = self.inner.lock().await;
        self.sync_rules(&mut inner, false).await
    }

    /// Deletes the spare attachments (they are only a cache).
    pub async fn drop_spares(&self) -> Result<()> {
        let mut inner = self.inner.lock().await;
        while let Some(spare) = inner.state.spares.last().cloned() {
            self.detach(&spare.record()).await?;
            inner.state.spares.pop();
            state::save(&self.config.state_dir, &inner.state)?;
        }
        Ok(())
    }

    /// A spare attachment that is still whole (its namespace pinned, its veth on the
    /// bridge); broken ones found on the way are deleted.
    async fn take_spare(&self, inner: &mut Inner) -> Option<Spare> {
        while let Some(spare) = inner.state.spares.pop() {
            match self.check_spare(&spare).await {
                Ok(true) => return Some(spare),
                Ok(false) => {
                    tracing::info!(veth = %spare.veth, "dropping a broken spare attachment")
                }
                Err(e) => tracing::warn!(veth = %spare.veth, "dropping a spare attachment: {e}"),
            }
            if let Err(e) = self.detach(&spare.record()).await {
                tracing::warn!(veth = %spare.veth, "cannot delete a broken spare attachment: {e}");
            }
        }
        None
    }

    async fn check_spare(&self, spare: &Spare) -> Result<bool> {
        if !netns::is_mount_point(&spare.netns_path)? {
            return Ok(false);
        }
        let h = link::connect(Path::new("host"))?;
        if link::link_index(&h, &spare.veth).await?.is_none() {
            return Ok(false);
        }
        let bridge = link::ensure_bridge(&h, &self.config.bridge, self.config.subnet).await?;
        link::enslave(&h, &spare.veth, bridge).await?;
        Ok(true)
    }

    /// [`prepare`](Self::prepare) on a spare attachment: no link to make, so no rtnl work.
    async fn prepare_on_spare(
        &self,
        inner: &mut Inner,
        req: NetworkRequest,
        spare: Spare,
    ) -> Result<NetworkAttachment> {
        let id = req.container_id.clone();
        let ports = match plan_ports(&req.ports, &inner.state) {
            Ok(p) => p,
            Err(e) => {
                inner.state.spares.push(spare);
                return Err(e);
            }
        };
        let record = Record {
            mode: NetworkMode::Bridge,
            hostname: req.hostname.clone(),
            netns_path: Some(spare.netns_path.clone()),
            ip: Some(spare.ip),
            veth: Some(spare.veth.clone()),
            unpublished: !ports.is_empty(),
            ports,
            endpoints: Vec::new(),
            dns: Vec::new(),
        };
        inner.state.containers.insert(id.clone(), record.clone());
        if let Err(e) = self.save_and_sync(inner, true).await {
            inner.state.containers.remove(&id);
            inner.state.spares.push(spare);
            if let Err(save) = self.save_and_sync(inner, true).await {
                tracing::error!(container = %id, error = %save, "cannot record undone network setup");
            }
            return Err(e);
        }
        Ok(self.attachment(&id, &record))
    }

    fn netns_dir(&self) -> PathBuf {
        self.config.exec_root.join("netns")
    }

    fn netns_path(&self, id: &str) -> PathBuf {
        self.netns_dir().join(id)
    }

    /// A host-side veth name derived from (bridge, id) and not taken by any link: undoing
    /// a failed setup deletes the veth by name, so it must never be someone else's.
    async fn free_veth_name(&self, id: &str) -> Result<String> {
        self.free_veth_name_on(&self.config.bridge, id).await
    }

    /// [`free_veth_name`](Self::free_veth_name) for a veth on `bridge`.
    pub(super) async fn free_veth_name_on(&self, bridge: &str, id: &str) -> Result<String> {
        let h = link::connect(Path::new("host"))?;
        for salt in 0u8..16 {
            let name = veth_name(bridge, id, salt);
            if link::link_index(&h, &name).await?.is_none() {
                return Ok(name);
            }
        }
        Err(RuntimeError::NoFreeLinkName { id: id.to_string() })
    }

    pub(super) fn attachment(&self, id: &str, r: &Record) -> NetworkAttachment {
        let resolv = std::fs::read_to_string(&self.config.host_resolv_conf).unwrap_or_default();
        let first_ep = r.endpoints.first().map(|e| e.att.ip);
        let (hosts, resolv_conf) = match r.mode {
            NetworkMode::None if r.ip.is_none() && first_ep.is_some() => (
                files::hosts_file(&r.hostname, first_ep),
                files::resolv_conf_for_embedded_dns(&resolv),
            ),
            NetworkMode::Host => (
                std::fs::read_to_string(&self.config.host_hosts)
                    .unwrap_or_else(|_| files::hosts_file(&r.hostname, None)),
                resolv,
            ),
            NetworkMode::None => (files::hosts_file(&r.hostname, None), resolv),
            NetworkMode::Bridge => (
                files::hosts_file(&r.hostname, r.ip),
                files::resolv_conf_for_bridge(&resolv),
            ),
        };
        let bridged = r.ip.is_some();
        NetworkAttachment {
            container_id: id.to_string(),
            mode: r.mode,
            netns_path: r.netns_path.clone(),
            ip: r.ip,
            prefix_len: bridged.then(|| self.config.subnet.prefix()),
            gateway: bridged.then(|| self.config.subnet.gateway()),
            mac: r.ip.map(|ip| format_mac(&mac_for(ip))),
            ports: r.ports.clone(),
            hosts,
            resolv_conf,
            endpoints: r.endpoints.iter().map(|e| e.att.clone()).collect(),
        }
    }

    /// Makes the namespace, and for bridge mode the veth pair and its configuration.
    async fn attach(&self, r: &Record) -> Result<()> {
        let Some(ns) = &r.netns_path else {
            return Ok(());
        };
        netns::ensure_dir(&self.netns_dir())?;
        netns::create(ns)?;
        let (Some(ip), Some(veth)) = (r.ip, &r.veth) else {
            netns::run_in(ns, |h| async move { link::loopback_up(&h).await }).await?;
            return self.attach_endpoints(ns, &r.endpoints, false).await;
        };
        enable_ip_forward()?;
        let h = link::connect(Path::new("host"))?;
        let bridge = link::ensure_bridge(&h, &self.config.bridge, self.config.subnet).await?;
        let ns_file = netns::open(ns)?;
        link::create_veth(&h, veth, bridge, ns_file.as_raw_fd(), mac_for(ip)).await?;
        drop(ns_file);
        let subnet = self.config.subnet;
        netns::run_in(ns, move |h| async move {
            link::configure_container_side(&h, ip, subnet).await
        })
        .await?;
        self.attach_endpoints(ns, &r.endpoints, true).await
    }

    /// Undoes [`attach`](Self::attach); every step tolerates "already gone".
    /// (Its rules go with the next [`sync_rules`](Self::sync_rules).)
    async fn detach(&self, r: &Record) -> Result<()> {
        let mut first_err = None;
        let mut note = |res: Result<()>| {
            if let Err(e) = res {
                first_err.get_or_insert(e);
            }
        };
        let veths = r.veth.iter().chain(r.endpoints.iter().map(|e| &e.veth));
        for veth in veths {
            match link::connect(Path::new("host")) {
                Ok(h) => note(link::delete_link(&h, veth).await),
                Err(e) => note(Err(e)),
            }
        }
        if let Some(ns) = &r.netns_path {
            note(netns::remove(ns));
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Brings the host's tables to what the state needs: skiff's chains with the base rules
    /// and every published port once a container is on the bridge. With `keep`, the base
    /// rules stay when the last container leaves (as Docker's do), so containers without
    /// published ports come and go without an iptables call; without it (a daemon start,
    /// teardown) no chain and no jump of skiff's is left when no container is bridged.
    pub(super) async fn sync_rules(&self, inner: &mut Inner, keep: bool) -> Result<()> {
        self.dns.refresh(&inner.state);
        let nets: Vec<&super::BridgeNetwork> = inner.state.networks.values().collect();
        let (first, mut port_rules) = rules::user_rules(&self.config, &self.chains, &nets);
        for (id, r) in &inner.state.containers {
            if let Some((ip, br)) = r.port_target(&self.config.bridge) {
                for p in r.ports.iter().filter(|_| !r.unpublished) {
                    port_rules.extend(rules::port_rules_on(&br, &self.chains, id, ip, p));
                }
            }
        }
        // The isolation rules ride in the same set, ahead of the rest (see below).
        let split = first.len();
        let mut all = first;
        all.extend(port_rules);
        let port_rules = all;
        let bridged = !inner.state.networks.is_empty()
            || inner
                .state
                .containers
                .values()
                .any(|r| r.ip.is_some() || !r.endpoints.is_empty());
        let kept = keep && matches!(inner.applied, Some(RuleSet::Present(_)));
        let desired = if bridged || kept {
            RuleSet::Present(port_rules)
        } else {
            RuleSet::Absent
        };
        if inner.applied.as_ref() == Some(&desired) {
            return Ok(());
        }
        // Unknown until the script has run: a failure leaves the next call to retry.
        inner.applied = None;
        let snapshot = iptables::snapshot().await?;
        let script = match &desired {
            RuleSet::Present(rules) => {
                let (first, rest) = rules.split_at(split);
                rules::sync_script_with(&self.config, &self.chains, &snapshot, first, rest)
            }
            RuleSet::Absent => rules::removal_script(&self.chains, &snapshot),
        };
        iptables::apply(&script).await?;
        inner.applied = Some(desired);
        Ok(())
    }

    async fn save_and_sync(&self, inner: &mut Inner, keep: bool) -> Result<()> {
        state::save(&self.config.state_dir, &inner.state)?;
        self.sync_rules(inner, keep).await
    }

    async fn rebuild(&self) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let records: Vec<(String, Record)> = inner
            .state
            .containers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Before any DNS socket is served again: queries held while no daemon ran are
        // answered as soon as it is.
        self.dns.refresh(&inner.state);
        let host = link::connect(Path::new("host"))?;
        for net in inner.state.networks.values() {
            enable_ip_forward()?;
            link::ensure_bridge_with(&host, &net.bridge, net.subnet, net.gateway).await?;
        }
        for (id, r) in records {
            let ns_alive = match &r.netns_path {
                Some(ns) => ns.exists() && netns::is_mount_point(ns)?,
                None => true,
            };
            let veth_alive = match &r.veth {
                Some(v) => link::link_index(&host, v).await?.is_some(),
                None => true,
            };
            if !(ns_alive && veth_alive) {
                tracing::info!(container = %id, "network attachment lost its namespace; releasing it");
                if let (Some(procs), Some((ip, _))) = (
                    &self.config.proxy_processes,
                    r.port_target(&self.config.bridge),
                ) {
                    for p in &r.ports {
                        let target = SocketAddr::from((ip, p.container_port));
                        if let Some(proxy) =
                            PortProxy::adopt(p.protocol, p.host_ip, p.host_port, target, procs, &id)
                        {
                            proxy.stop().await;
                        }
                    }
                }
                self.detach(&r).await?;
                inner.state.containers.remove(&id);
                continue;
            }
            for e in &r.endpoints {
                if let Some(net) = inner.state.networks.get(&e.att.network_id) {
                    let bridge =
                        link::ensure_bridge_with(&host, &net.bridge, net.subnet, net.gateway)
                            .await?;
                    link::enslave(&host, &e.veth, bridge).await?;
                }
            }
            if let (Some(ns), false) = (&r.netns_path, r.endpoints.is_empty()) {
                if let Err(e) = self.dns.serve(&id, ns).await {
                    tracing::error!(container = %id, error = %e, "cannot reopen the embedded DNS server");
                }
            }
            let Some((ip, _)) = r.port_target(&self.config.bridge) else {
                continue;
            };
            enable_ip_forward()?;
            if let Some(veth) = &r.veth {
                let bridge =
                    link::ensure_bridge(&host, &self.config.bridge, self.config.subnet).await?;
                link::enslave(&host, veth, bridge).await?;
            }
            let mut proxies = Vec::new();
            for p in r.ports.iter().filter(|_| !r.unpublished) {
                let target = SocketAddr::from((ip, p.container_port));
                // A proxy process of the previous daemon still serves the port (and its
                // connections): adopt it; else bind the port again.
                let procs = self.config.proxy_processes.as_ref();
                if let Some(proxy) = procs.and_then(|procs| {
                    PortProxy::adopt(p.protocol, p.host_ip, p.host_port, target, procs, &id)
                }) {
                    proxies.push(proxy);
                    continue;
                }
                match PortProxy::start_with(p.protocol, p.host_ip, p.host_port, target, procs, &id)
                {
                    Ok(proxy) => proxies.push(proxy),
                    Err(e) => {
                        tracing::error!(container = %id, error = %e, "cannot re-bind published port after restart")
                    }
                }
            }
            inner.proxies.insert(id, proxies);
        }
        if let Some(procs) = self.config.proxy_processes.clone() {
            let keep: Vec<PathBuf> = inner
                .proxies
                .values()
                .flatten()
                .filter_map(|p| p.pid_file().map(Path::to_path_buf))
                .collect();
            let _ = tokio::task::spawn_blocking(move || {
                let keep: Vec<&Path> = keep.iter().map(PathBuf::as_path).collect();
                super::proxy::stop_strays(&procs, &keep)
            })
            .await;
        }
        let served: Vec<String> = inner
            .state
            .containers
            .iter()
            .filter(|(_, r)| !r.endpoints.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        self.dns.stop_other_holders(&served);
        let spares = std::mem::take(&mut inner.state.spares);
        for spare in spares {
            match self.check_spare(&spare).await {
                Ok(true) => inner.state.spares.push(spare),
                _ => {
                    tracing::info!(veth = %spare.veth, "spare attachment lost; deleting it");
                    self.detach(&spare.record()).await?;
                }
            }
        }
        // Rewriting skiff's chains from the state also drops rules of containers the state
        // does not know (a crash between a rule change and the state write).
        self.save_and_sync(&mut inner, false).await
    }
}

/// `veth` + 8 hex digits of an FNV-1a hash: 12 bytes, within the 15 a link name may have.
fn veth_name(bridge: &str, id: &str, salt: u8) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bridge.bytes().chain([0]).chain(id.bytes()).chain([0, salt]) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("veth{:08x}", h as u32)
}

/// Binds every requested port (all or nothing: on error the ones bound are closed), each
/// served by a process of its own with `procs`.
/// The host ports a container will publish, as dockerd plans them at create without
/// binding them: an explicit port as asked, an ephemeral one (`-p 80`, `-P`) picked now by
/// the kernel (bound and let go at once, and not one another container already has), so
/// inspect and `port` know it. [`NetworkManager::publish`] binds them when the container
/// starts; a port taken by then fails that start, not the create.
fn plan_ports(specs: &[PortSpec], state: &super::state::State) -> Result<Vec<PublishedPort>> {
    let taken: HashSet<(Protocol, u16)> = state
        .containers
        .values()
        .flat_map(|r| r.ports.iter().map(|p| (p.protocol, p.host_port)))
        .collect();
    let mut planned: Vec<PublishedPort> = Vec::with_capacity(specs.len());
    for s in specs {
        let host_ip = s.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let host_port = match s.host_port {
            Some(p) if p != 0 => p,
            _ => {
                let mut tries = 0;
                loop {
                    let p = ephemeral_port(s.protocol, host_ip)?;
                    let used = taken.contains(&(s.protocol, p))
                        || planned
                            .iter()
                            .any(|q| q.protocol == s.protocol && q.host_port == p);
                    tries += 1;
                    if !used || tries >= 16 {
                        break p;
                    }
                }
            }
        };
        planned.push(PublishedPort {
            protocol: s.protocol,
            host_ip,
            host_port,
            container_port: s.container_port,
        });
    }
    Ok(planned)
}

/// A port the kernel would give a socket of `protocol` bound to `host_ip:0` now.
fn ephemeral_port(protocol: Protocol, host_ip: Ipv4Addr) -> Result<u16> {
    let in_use = |source| RuntimeError::PortInUse {
        host_ip: std::net::IpAddr::V4(host_ip),
        port: 0,
        protocol: protocol.as_str(),
        source,
    };
    let bind = SocketAddr::from((host_ip, 0));
    let local = match protocol {
        Protocol::Tcp => std::net::TcpListener::bind(bind).and_then(|l| l.local_addr()),
        Protocol::Udp => std::net::UdpSocket::bind(bind).and_then(|u| u.local_addr()),
    }
    .map_err(in_use)?;
    Ok(local.port())
}

async fn start_proxies(
    specs: &[PortSpec],
    ip: Ipv4Addr,
    procs: Option<&super::ProxyProcesses>,
    owner: &str,
) -> Result<Vec<(PublishedPort, PortProxy)>> {
    let mut out: Vec<(PublishedPort, PortProxy)> = Vec::with_capacity(specs.len());
    for s in specs {
        let host_ip = s.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let target = SocketAddr::from((ip, s.container_port));
        let proxy = match PortProxy::start_with(
            s.protocol,
            host_ip,
            s.host_port.unwrap_or(0),
            target,
            procs,
            owner,
        ) {
            Ok(p) => p,
            Err(e) => {
                stop_all(out.into_iter().map(|(_, p)| p)).await;
                return Err(e);
            }
        };
        let published = PublishedPort {
            protocol: s.protocol,
            host_ip,
            host_port: proxy.local_addr().port(),
            container_port: s.container_port,
        };
        out.push((published, proxy));
    }
    Ok(out)
}

impl NetworkManager {
    /// After a connect or disconnect moved the container's published address from `old`:
    /// its running proxies are bound again to forward to the new one (same host ports).
    pub(super) async fn retarget_ports(
        &self,
        inner: &mut Inner,
        id: &str,
        old: Option<(std::net::Ipv4Addr, String)>,
    ) -> Result<()> {
        let Some(r) = inner.state.containers.get(id) else {
            return Ok(());
        };
        let new = r.port_target(&self.config.bridge);
        if new == old || r.unpublished || r.ports.is_empty() {
            return Ok(());
        }
        let specs: Vec<PortSpec> = r
            .ports
            .iter()
            .map(|p| PortSpec {
                host_ip: Some(p.host_ip),
                host_port: Some(p.host_port),
                container_port: p.container_port,
                protocol: p.protocol,
            })
            .collect();
        stop_all(inner.proxies.remove(id).unwrap_or_default()).await;
        let Some((ip, _)) = new else {
            return Ok(());
        };
        let proxies = start_proxies(&specs, ip, self.config.proxy_processes.as_ref(), id).await?;
        inner.proxies.insert(
            id.to_string(),
            proxies.into_iter().map(|(_, p)| p).collect(),
        );
        Ok(())
    }
}

/// Stops proxies and waits until their ports are free.
async fn stop_all(proxies: impl IntoIterator<Item = PortProxy>) {
    for p in proxies {
        p.stop().await;
    }
}

pub(super) fn enable_ip_forward() -> Result<()> {
    let path = Path::new(IP_FORWARD);
    let io = |step| {
        move |source| RuntimeError::Io {
            step,
            path: path.to_path_buf(),
            source,
        }
    };
    if std::fs::read_to_string(path).map_err(io("read"))?.trim() != "1" {
        std::fs::write(path, "1").map_err(io("enable"))?;
    }
    Ok(())
}

/// Names end up in link names (≤ 15 bytes) and chain names (≤ 28 bytes with the suffix).
fn validate_config(cfg: &NetworkConfig) -> Result<()> {
    let fields = [
        ("bridge", &cfg.bridge, 15, "must be 1 to 15 characters"),
        (
            "chain_prefix",
            &cfg.chain_prefix,
            16,
            "must be 1 to 16 characters",
        ),
    ];
    for (field, value, max, length_reason) in fields {
        let bad = |reason| RuntimeError::InvalidNetworkConfig {
            field,
            value: value.to_string(),
            reason,
        };
        if value.is_empty() || value.len() > max {
            return Err(bad(length_reason));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
        {
            return Err(bad("only letters, digits, '_' and '-' are allowed"));
        }
    }
    Ok(())
}

/// The hostname is written into /etc/hosts: no whitespace or control characters.
fn validate_hostname(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 253
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(RuntimeError::InvalidNetworkConfig {
            field: "hostname",
            value: name.to_string(),
            reason: "must be 1 to 253 letters, digits, '_', '.' or '-'",
        });
    }
    Ok(())
}

/// Ids name files and iptables comments, so only a safe alphabet is accepted.
fn validate_id(id: &str) -> Result<()> {
    let bad = |reason| RuntimeError::InvalidNetworkId {
        id: id.to_string(),
        reason,
    };
    if id.is_empty() || id.len() > 128 {
        return Err(bad("must be 1 to 128 characters"));
    }
    if id.starts_with('.') {
        return Err(bad("must not start with '.'"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(bad("only letters, digits, '_', '.' and '-' are allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{validate_config, validate_hostname, validate_id, veth_name, NetworkManager};
    use crate::network::{NetworkConfig, NetworkRequest};

    /// The daemon shares the manager across tasks and spawns its futures: compile-time check.
    #[allow(dead_code)]
    fn manager_and_futures_are_send(m: &NetworkManager, req: NetworkRequest, cfg: NetworkConfig) {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        send_sync(m);
        send(&m.prepare(req));
        send(&m.release("x"));
        send(&m.attachment_of("x"));
        send(&NetworkManager::restore(cfg));
    }

    #[test]
    fn config_and_hostname_checks() {
        let mut cfg = NetworkConfig::new("/s", "/r");
        validate_config(&cfg).unwrap();
        cfg.bridge = "a-very-long-bridge".into();
        assert!(validate_config(&cfg)
            .unwrap_err()
            .to_string()
            .contains("bridge"));
        cfg.bridge = "br0".into();
        cfg.chain_prefix = "BAD PREFIX".into();
        assert!(validate_config(&cfg).is_err());
        validate_hostname("web-1.example").unwrap();
        assert!(validate_hostname("evil\n1.2.3.4 bank").is_err());
        assert!(validate_hostname("").is_err());
    }

    #[test]
    fn veth_names_fit_and_differ() {
        let a = veth_name("skiff0", "abc", 0);
        assert_eq!(a.len(), 12);
        assert_eq!(a, veth_name("skiff0", "abc", 0));
        assert_ne!(a, veth_name("skiff0", "abc", 1));
        assert_ne!(a, veth_name("skiff1", "abc", 0));
    }

    #[test]
    fn ids() {
        validate_id("0123abcdef").unwrap();
        validate_id("my_container-1.2").unwrap();
        for bad in ["", "..", "a/b", "a b", "x\"y", &"a".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }
}
