//! The containers service: finding, listing, creating and removing containers. Starting,
//! stopping and attaching are in `containers_run.rs`; exits and restarts belong to the
//! monitor.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use bollard::container::Config;
use skiff_runtime::state::{ContainerState, Status};

use super::error::DaemonError;
use super::monitor::Monitor;
use super::mounts::ImageMounts;
use super::names;
use super::paths::Paths;
use super::record::{ContainerRecord, SCHEMA};
use super::records::Records;
use super::resolve::resolve;
use super::status::Lifecycle;
use super::volumes::VolumeService;

/// Where `--init` finds its init (Debian's `tini` package).
const INIT_BINARY: &str = "/usr/bin/tini-static";

pub struct ContainerService {
    pub(super) paths: Paths,
    pub(super) store: skiff_store::Store,
    pub(super) mounts: Arc<ImageMounts>,
    pub(super) records: Arc<Records>,
    pub(super) network: Arc<skiff_runtime::network::NetworkManager>,
    /// Network objects: resolves `--network` names and aliases into endpoints.
    pub(super) networks: Arc<super::networks::NetworkService>,
    /// Forks container shims from one exec of our binary.
    pub(super) launcher: Arc<skiff_runtime::ShimLauncher>,
    /// Finishes removals after they were answered, at low priority; tracked by the
    /// daemon's background tasks, which shutdown awaits.
    reclaimer: super::reclaim::Reclaimer,
    pub(super) monitor: Arc<Monitor>,
    pub(super) volumes: Arc<VolumeService>,
    /// The daemon's default log driver and options (daemon.json `log-driver`, `log-opts`).
    pub(super) log_defaults: (String, std::collections::BTreeMap<String, String>),
    /// Names of creates and renames in flight.
    pub(super) names: super::claims::Claims,
    /// Serializes the read-modify-write of a record by `rename` and `update`.
    pub(super) lifecycle: tokio::sync::Mutex<()>,
    /// Containers being removed (see [`Claims`](super::claims::Claims)).
    removing: super::claims::Claims,
}

/// `(total, running, stopped)` container counts, for `/info`.
pub struct Counts {
    pub total: i64,
    pub running: i64,
    pub stopped: i64,
}

impl ContainerService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        paths: Paths,
        store: skiff_store::Store,
        mounts: Arc<ImageMounts>,
        records: Arc<Records>,
        network: Arc<skiff_runtime::network::NetworkManager>,
        networks: Arc<super::networks::NetworkService>,
        launcher: Arc<skiff_runtime::ShimLauncher>,
        background: tokio_util::task::TaskTracker,
        monitor: Arc<Monitor>,
        volumes: Arc<VolumeService>,
        log_defaults: (String, std::collections::BTreeMap<String, String>),
    ) -> ContainerService {
        ContainerService {
            paths,
            store,
            mounts,
            records,
            network,
            networks,
            launcher,
            reclaimer: super::reclaim::Reclaimer::start(background),
            monitor,
            volumes,
            log_defaults,
            names: Default::default(),
            lifecycle: tokio::sync::Mutex::new(()),
            removing: Default::default(),
        }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.paths.container_dir(id)
    }

    /// A container by full id, name, or unique id prefix (a leading `/` is ignored).
    pub fn find(&self, name_or_id: &str) -> Result<ContainerRecord, DaemonError> {
        let key = name_or_id.trim_start_matches('/');
        self.records.lookup(key).map_err(|e| match e {
            DaemonError::NoSuchContainer(_) => DaemonError::NoSuchContainer(name_or_id.into()),
            DaemonError::AmbiguousId(_) => DaemonError::AmbiguousId(name_or_id.into()),
            e => e,
        })
    }

    /// The runtime's live state of a container; [`DaemonError::NoSuchContainer`] once a
    /// removal took its directory away (a request racing an auto-removal gets a 404, not a
    /// 500).
    pub fn state(&self, id: &str) -> Result<ContainerState, DaemonError> {
        skiff_runtime::state::state(&self.dir(id)).map_err(|e| match &e {
            skiff_runtime::RuntimeError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound && !self.dir(id).exists() =>
            {
                DaemonError::NoSuchContainer(id.to_string())
            }
            _ => DaemonError::runtime(format!("state of {id}"), e),
        })
    }

    /// Every container with a readable state, newest first.
    pub fn list(&self) -> Result<Vec<(ContainerRecord, ContainerState)>, DaemonError> {
        let mut out = Vec::new();
        for r in self.records.all()? {
            if let Ok(st) = self.state(&r.id) {
                out.push((r, st));
            }
        }
        Ok(out)
    }

    /// `GET /containers/json`: the containers `all`, `limit` and `filters` select, newest
    /// first. Refuses unknown or malformed filters (400) and unknown `before`/`since`
    /// containers (404). `parent_of` gives the image an image was built or committed from
    /// (the `ancestor` filter also matches descendants).
    pub fn select(
        &self,
        filters: super::filters::Filters,
        all: bool,
        limit: Option<i64>,
        parent_of: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<super::container_filter::Row>, DaemonError> {
        let query = super::container_filter::ContainerQuery::new(
            filters,
            all,
            limit,
            |n| self.find(n),
            |i| self.image_and_descendants(i, &parent_of),
        )?;
        let rows = self
            .list()?
            .into_iter()
            .map(|(record, state)| super::container_filter::Row {
                restarting: self.monitor.is_restarting(&record.id),
                paused: self.is_paused(&record.id, &state),
                health: (state.status == Status::Running)
                    .then(|| self.monitor.health(&record.id).map(|h| h.status))
                    .flatten(),
                record,
                state,
            })
            .collect();
        Ok(query.select(rows))
    }

    /// The id of image `name` and of every local image descending from it (dockerd's
    /// `ancestor`): images whose parent chain (`parent_of`) leads to it, and images whose
    /// layers extend its layers. Empty for an unknown image.
    fn image_and_descendants(
        &self,
        name: &str,
        parent_of: &impl Fn(&str) -> Option<String>,
    ) -> Vec<String> {
        let Ok(base) = self.store.image(name) else {
            return Vec::new();
        };
        let mut out = vec![base.id.clone()];
        for img in self.store.images().unwrap_or_default() {
            if img.id == base.id {
                continue;
            }
            let mut seen = HashSet::new();
            let mut next = parent_of(&img.id);
            let mut by_parent = false;
            while let Some(p) = next {
                if p == base.id {
                    by_parent = true;
                    break;
                }
                if !seen.insert(p.clone()) {
                    break;
                }
                next = parent_of(&p);
            }
            let by_layers = !base.diff_ids.is_empty()
                && self.store.image(&img.id).is_ok_and(|r| {
                    r.diff_ids.len() > base.diff_ids.len() && r.diff_ids.starts_with(&base.diff_ids)
                });
            if by_parent || by_layers {
                out.push(img.id);
            }
        }
        out
    }

    pub fn counts(&self) -> Result<Counts, DaemonError> {
        let all = self.list()?;
        let running = all
            .iter()
            .filter(|(_, s)| s.status == Status::Running)
            .count() as i64;
        Ok(Counts {
            total: all.len() as i64,
            running,
            stopped: all.len() as i64 - running,
        })
    }

    /// Image ids in use by any container.
    pub fn images_in_use(&self) -> Result<Vec<(String, String)>, DaemonError> {
        Ok(self
            .records
            .all()?
            .into_iter()
            .map(|r| (r.image_id, r.id))
            .collect())
    }

    /// Claims the requested name (checked against Docker's rules) or a generated one for
    /// container `id`; see [`Claims`](super::claims::Claims).
    fn claim_name(
        &self,
        name: Option<String>,
        id: &str,
    ) -> Result<super::claims::Claim, DaemonError> {
        match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                let n = n.trim_start_matches('/');
                if !names::valid_name(n) {
                    return Err(DaemonError::Invalid(format!(
                        "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                self.names.claim_name(&self.records, n, id)
            }
            None => self.names.claim_generated_name(&self.records, id),
        }
    }

    /// Creates a container from Docker's create body; returns its id.
    pub async fn create(
        &self,
        name: Option<String>,
        body: Config<String>,
    ) -> Result<String, DaemonError> {
        self.create_stacked(name, body, Vec::new()).await
    }

    /// As [`create`](Self::create), with read-only directories `above` (topmost first)
    /// stacked over the image's mount in the container's overlay: a build's `RUN` sees the
    /// layers earlier steps made without a mount of their own (docs/build.md).
    pub async fn create_stacked(
        &self,
        name: Option<String>,
        body: Config<String>,
        above: Vec<PathBuf>,
    ) -> Result<String, DaemonError> {
        let image_ref = body
            .image
            .clone()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| DaemonError::invalid("Config.Image is required"))?;
        let image = self
            .store
            .image(&image_ref)
            .map_err(|_| DaemonError::NoSuchImage(image_ref.clone()))?;
        let resolved = resolve(&body, &image.config).map_err(DaemonError::Invalid)?;
        let id = names::new_id();
        // Held until the record is written: the name is ours, and other creates go on.
        let claim = self.claim_name(name, &id)?;
        let name = claim.key().to_string();
        let hostname = body
            .hostname
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| id[..12].to_string());
        let image_cmd = image.config.config().as_ref().and_then(|c| c.cmd().clone());
        let mut spec = super::spec::from_request(&body, &resolved, &hostname, image_cmd)?;
        // Docker's image JSON key oci-spec does not model (a build's HEALTHCHECK).
        let image_health = serde_json::from_slice::<serde_json::Value>(&image.config_bytes)
            .ok()
            .and_then(|raw| serde_json::from_value(raw["config"]["Healthcheck"].clone()).ok());
        if let Some(h) = &body.healthcheck {
            super::health::validate(h).map_err(DaemonError::Invalid)?;
        }
        spec.healthcheck = super::health::merge(body.healthcheck.clone(), image_health);
        // As dockerd: no driver means the daemon's, whose options fill the ones not given.
        let (default_driver, default_opts) = &self.log_defaults;
        if spec.host.log_driver.is_empty() {
            spec.host.log_driver = default_driver.clone();
        }
        if spec.host.log_driver == *default_driver {
            for (k, v) in default_opts {
                spec.host
                    .log_opts
                    .entry(k.clone())
                    .or_insert_with(|| v.clone());
            }
        }
        let exposed: Vec<String> = spec
            .exposed_ports
            .iter()
            .cloned()
            .chain(
                image
                    .config
                    .config()
                    .as_ref()
                    .and_then(|c| c.exposed_ports().clone())
                    .unwrap_or_default(),
            )
            .collect();
        // Docker merges the image's exposed ports into the container's (`Config`, `Ports`).
        for p in &exposed {
            if !spec.exposed_ports.contains(p) {
                spec.exposed_ports.push(p.clone());
            }
        }
        let mut links: Vec<String> = body
            .host_config
            .as_ref()
            .and_then(|h| h.links.clone())
            .unwrap_or_default();
        for ep in body
            .networking_config
            .iter()
            .flat_map(|n| n.endpoints_config.values())
        {
            for l in ep.links.iter().flatten() {
                if !links.contains(l) {
                    links.push(l.clone());
                }
            }
        }
        let asked: Vec<(String, Vec<String>, Option<String>)> = body
            .networking_config
            .iter()
            .flat_map(|n| n.endpoints_config.iter())
            .map(|(net, ep)| {
                (
                    net.clone(),
                    ep.aliases.clone().unwrap_or_default(),
                    ep.ipam_config.as_ref().and_then(|i| i.ipv4_address.clone()),
                )
            })
            .collect();
        let (net_mode, endpoints, mut endpoint_views) = self
            .networks
            .plan(&spec.host.network_mode, &asked, &links, &name, &id)
            .await?;
        // On user-defined networks `--dns` is where the embedded DNS forwards; the
        // container's resolv.conf names 127.0.0.11 (as Docker does).
        let dns_forwarders = if endpoints.is_empty() {
            Vec::new()
        } else {
            super::network::dns_forwarders(&spec.host)?
        };
        let on_user_network = !endpoints.is_empty();
        // Legacy links on the default bridge: hosts entries and variables (links.rs).
        let mut link_hosts = spec.host.extra_hosts.clone();
        if !on_user_network && !links.is_empty() {
            let legacy = super::links::legacy(
                &super::networks::parse_links(&links)?,
                &name,
                |n| self.find(n),
                |id| self.state(id).is_ok_and(|s| s.status == Status::Running),
            )?;
            link_hosts.extend(legacy.hosts);
            spec.env.splice(0..0, legacy.env);
        }
        let net_request = skiff_runtime::network::NetworkRequest {
            container_id: id.clone(),
            hostname: hostname.clone(),
            mode: net_mode,
            ports: super::network::ports(&spec.host, &exposed)?,
            endpoints,
            dns_forwarders,
        };
        if spec.host.auto_remove && spec.host.restart_policy != Default::default() {
            return Err(DaemonError::invalid(
                "can't create 'AutoRemove' container with restart policy",
            ));
        }
        let image_volumes: Vec<String> = image
            .config
            .config()
            .as_ref()
            .and_then(|c| c.volumes().clone())
            .unwrap_or_default();
        let planned = super::mount_plan::plan(&spec, &image_volumes, &|n| self.find(n))?;
        // Checked now, applied once the network gives the base files.
        super::etc_files::hosts("", &hostname, &spec.host.extra_hosts, Some("0.0.0.0"))?;
        super::etc_files::resolv_conf("", &spec.host)?;
        let dir = self.dir(&id);
        let mut rc = skiff_runtime::ContainerConfig::new(
            &id,
            dir.clone(),
            vec![self.paths.image_mount(&image.id)],
            resolved.argv.clone(),
        );
        rc.hostname = body.hostname.clone().filter(|h| !h.is_empty());
        super::runtime_config::apply(&spec, &mut rc, std::path::Path::new(INIT_BINARY))?;
        rc.validate()
            .map_err(|e| DaemonError::Invalid(e.to_string()))?;
        // A program other than the image's default (which the pull fetched already): fetch
        // it and its libraries while the container is set up.
        let default = skiff_store::default_program(&image.config);
        let path_var = spec
            .env
            .iter()
            .rev()
            .find_map(|v| v.strip_prefix("PATH="))
            .map(str::to_string)
            .or_else(|| default.as_ref().map(|(_, p)| p.clone()))
            .unwrap_or_default();
        let program = resolved
            .argv
            .first()
            .filter(|a| default.as_ref().map(|(d, _)| d) != Some(*a))
            .map(|a| (a.as_str(), path_var.as_str()));
        let lower = self.mounts.acquire_for(&self.store, &image.id, program)?;
        let mut created = Vec::new();
        let applied = super::mount_plan::apply(planned, &self.volumes, &lower, &mut created);
        // As dockerd: every volume a container's creation makes has its `create` event.
        for name in &created {
            self.monitor.events.emit(
                "volume",
                "create",
                name,
                [("driver".to_string(), "local".to_string())],
            );
        }
        let (mount_points, runtime_mounts) = match applied {
            Ok(m) => m,
            Err(e) => {
                self.mounts.release(&image.id);
                return Err(e);
            }
        };
        rc.mounts = runtime_mounts;
        let attachment = match self.network.prepare(net_request).await {
            Ok(a) => a,
            Err(e) => {
                self.mounts.release(&image.id);
                self.drop_anonymous(&mount_points);
                return Err(match e {
                    skiff_runtime::RuntimeError::PortInUse { .. } => {
                        DaemonError::PortInUse(Box::new(e))
                    }
                    skiff_runtime::RuntimeError::AddressUnavailable { .. }
                    | skiff_runtime::RuntimeError::SubnetExhausted { .. }
                    | skiff_runtime::RuntimeError::UnknownNetwork { .. }
                    | skiff_runtime::RuntimeError::AlreadyConnected { .. } => {
                        DaemonError::Network(Box::new(e))
                    }
                    _ => DaemonError::runtime("setting up the network", e),
                });
            }
        };
        // Docker's init layer (mount points for /dev, /proc, /sys, /etc files) tops the stack.
        rc.lower_dirs = std::iter::once(self.paths.init_layer())
            .chain(above)
            .chain([lower])
            .collect();
        rc.network = match (&attachment.netns_path, attachment.mode) {
            (Some(p), _) => skiff_runtime::NetworkMode::Join(p.clone()),
            // The init makes a namespace of its own with only loopback up.
            (None, skiff_runtime::network::NetworkMode::None) => skiff_runtime::NetworkMode::None,
            (None, _) => skiff_runtime::NetworkMode::Host,
        };
        let gateway = attachment.gateway.map(|g| g.to_string());
        rc.hosts = Some(super::etc_files::hosts(
            &attachment.hosts,
            &hostname,
            &link_hosts,
            gateway.as_deref(),
        )?);
        rc.resolv_conf = Some(if on_user_network {
            super::etc_files::resolv_conf(
                &attachment.resolv_conf,
                &super::network::without_dns_servers(&spec.host),
            )?
        } else {
            super::etc_files::resolv_conf(&attachment.resolv_conf, &spec.host)?
        });
        for (view, att) in endpoint_views.iter_mut().zip(&attachment.endpoints) {
            super::networks::fill(view, att);
        }
        let mut net_summary = super::network::summary(&attachment);
        net_summary.endpoints = endpoint_views;
        spec.exposed_ports.sort();
        let record = ContainerRecord {
            schema: SCHEMA,
            id: id.clone(),
            name: name.clone(),
            created: chrono::Utc::now().timestamp(),
            image: image_ref,
            image_id: image.id.clone(),
            spec,
            path: resolved.argv[0].clone(),
            args: resolved.argv[1..].to_vec(),
            network: Some(net_summary),
            mounts: mount_points,
            restart_count: 0,
            stopped_by_user: false,
            start_error: None,
        };
        let launcher = self.launcher.clone();
        let created =
            tokio::task::spawn_blocking(move || skiff_runtime::create_with(&launcher, &rc)).await;
        let failed = match created {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(DaemonError::runtime("creating container", e)),
            Err(e) => Some(DaemonError::join(e)),
        };
        if let Some(err) = failed {
            let _ = std::fs::remove_dir_all(&dir);
            if let Err(e) = self.network.release(&id).await {
                tracing::warn!(id = %&id[..12], "releasing network after a failed create: {e}");
            }
            self.mounts.release(&image.id);
            self.drop_anonymous(&record.mounts);
            return Err(err);
        }
        self.records.insert(&record)?;
        drop(claim);
        self.monitor.events.container("create", &record, &[]);
        tracing::info!(id = %&id[..12], name = %name, image = %record.image, "created container");
        Ok(id)
    }

    /// Removes the anonymous volumes among `mounts` (a failed create's, or `rm -v`).
    fn drop_anonymous(&self, mounts: &[super::record::MountPoint]) {
        for m in mounts.iter().filter(|m| m.anonymous && m.kind == "volume") {
            if let Err(e) = self.volumes.remove(&m.name, false) {
                tracing::warn!(volume = %m.name, "removing an anonymous volume: {e}");
            }
        }
    }

    /// Removes a container (killing it first with `force`), and its anonymous volumes with
    /// `volumes` (`rm -v`, `run --rm`).
    pub async fn remove(
        &self,
        r: &ContainerRecord,
        force: bool,
        volumes: bool,
    ) -> Result<(), DaemonError> {
        let _removing = self.removing.claim_removal(&r.id)?;
        // Removed meanwhile by a removal that just ended: nothing left to release.
        if !self.records.exists(&r.id)? {
            return Err(DaemonError::NoSuchContainer(r.id.clone()));
        }
        let st = self.state(&r.id)?;
        let lifecycle = Lifecycle::new(r, &st);
        lifecycle.can_remove(force)?;
        self.thaw_if_paused(r).await;
        if lifecycle.is_running() {
            self.kill_for_removal(r).await?;
        }
        let dir = self.dir(&r.id);
        let removal = tokio::task::spawn_blocking(move || skiff_runtime::remove_detached(&dir))
            .await
            .map_err(DaemonError::join)?
            .map_err(|e| DaemonError::runtime(format!("removing {}", r.name), e))?;
        // The container is gone once renamed; its shim finishing and its files being
        // unlinked need not hold up the answer.
        if let Some(removal) = removal {
            self.reclaimer.submit(removal);
        }
        // Cheap in the common case: a bridge attachment becomes a spare, not deleted links.
        let released = if reusable_network(r, &st) {
            self.network.release(&r.id).await
        } else {
            self.network.release_unused(&r.id).await
        };
        if let Err(e) = released {
            tracing::warn!(id = %&r.id[..12], "releasing network: {e}");
        }
        self.records.remove(&r.id)?;
        if volumes {
            self.drop_anonymous(&r.mounts);
        }
        self.monitor.note_removed(&r.id);
        self.monitor.events.container("destroy", r, &[]);
        self.mounts.release(&r.image_id);
        tracing::info!(id = %&r.id[..12], "removed container");
        Ok(())
    }

    /// Removes every exited container `filters` select (dockerd's prune filters: `label`
    /// must all match, `label!` must not, `until`: created before); returns the ids removed
    /// and the bytes reclaimed.
    pub async fn prune(
        &self,
        filters: &super::filters::Filters,
    ) -> Result<(Vec<String>, u64), DaemonError> {
        let until = match filters.get("until").last() {
            Some(v) => Some(super::time_arg::parse(v).ok_or_else(|| {
                DaemonError::Invalid(format!("invalid filter 'until={v}': not a timestamp"))
            })?),
            None => None,
        };
        let mut deleted = Vec::new();
        let mut reclaimed: u64 = 0;
        for (r, st) in self.list()? {
            let label = |k: &str| r.spec.labels.get(k).map(String::as_str);
            let excluded = !filters.get("label!").is_empty()
                && filters
                    .get("label!")
                    .iter()
                    .any(|v| match v.split_once('=') {
                        Some((k, want)) => label(k) == Some(want),
                        None => label(v).is_some(),
                    });
            if st.status == Status::Exited
                && filters.matches_labels("label", label)
                && !excluded
                && until.is_none_or(|u| r.created < u)
            {
                let size = self.disk_usage(&r.id);
                match self.remove(&r, false, false).await {
                    Ok(()) => {
                        reclaimed += size;
                        deleted.push(r.id.clone());
                    }
                    Err(e) => tracing::warn!(id = %r.id, "prune: {e}"),
                }
            }
        }
        Ok((deleted, reclaimed))
    }

    /// Bytes in the container's writable layer.
    pub fn disk_usage(&self, id: &str) -> u64 {
        dir_size(&self.dir(id).join("upper"))
    }
}

/// Bytes under `dir` (not following symlinks).
pub fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if let Ok(md) = e.path().symlink_metadata() {
                if md.is_dir() {
                    stack.push(e.path());
                } else {
                    total += md.len();
                }
            }
        }
    }
    total
}

/// Whether a removed container's network namespace may serve the next container: it ran
/// (a container that failed to start leaves nothing), and could not reconfigure it.
fn reusable_network(r: &ContainerRecord, st: &skiff_runtime::ContainerState) -> bool {
    let ran = st.started_at.is_some() && st.error.is_none();
    let net_admin = r.spec.host.privileged
        || r.spec.host.cap_add.iter().any(|c| {
            let c = c.to_ascii_uppercase();
            matches!(c.trim_start_matches("CAP_"), "NET_ADMIN" | "ALL")
        });
    ran && !net_admin
}
