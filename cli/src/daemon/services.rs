//! The daemon: its services wired together. Handlers reach a service through [`Daemon`]
//! (`d.containers.start(..)`, `d.images.list_images()`...) and only translate.

use std::sync::Arc;

use skiff_runtime::state::Status;

use super::config::DaemonConfig;
use super::containers::ContainerService;
use super::exec::ExecService;
use super::images::ImageService;
use super::monitor::Monitor;
use super::mounts::ImageMounts;
use super::paths::Paths;
use super::records::Records;
use super::status::Lifecycle;
use super::volumes::VolumeService;

pub struct Daemon {
    pub paths: Paths,
    pub containers: Arc<ContainerService>,
    pub execs: ExecService,
    pub images: ImageService,
    pub monitor: Arc<Monitor>,
    pub records: Arc<Records>,
    pub volumes: Arc<VolumeService>,
    mounts: Arc<ImageMounts>,
    network: Arc<skiff_runtime::network::NetworkManager>,
    background: tokio_util::task::TaskTracker,
}

impl Daemon {
    pub async fn open(paths: Paths, args: &DaemonConfig) -> anyhow::Result<Daemon> {
        let exe = std::env::current_exe()?;
        let cache_bytes = crate::client::format::parse_bytes(&args.cache_size)
            .filter(|b| *b > 0)
            .ok_or_else(|| anyhow::anyhow!("invalid cache-size {:?}", args.cache_size))?;
        let store = skiff_store::Store::open(
            &paths.store(),
            skiff_store::StoreOptions {
                insecure_registries: args.insecure_registries.clone(),
                certs_dir: Some(args.certs_dir.clone()),
                registry_mirrors: args.registry_mirrors.clone(),
                docker_hub_origin: args.docker_hub_origin.clone(),
                cache_bytes: cache_bytes as u64,
                lazy_pull: args.lazy_pull,
                fetch_profiles: args.profile_prefetch,
                ..Default::default()
            },
        )?;
        let records = Arc::new(Records::open(&paths.daemon_db())?);
        let mut net_config =
            skiff_runtime::network::NetworkConfig::new(paths.network_state(), &paths.exec_root);
        net_config.subnet = args
            .subnet
            .parse()
            .map_err(|e| anyhow::anyhow!("bip {}: {e}", args.subnet))?;
        if args.bridge != net_config.bridge {
            // A second daemon on its own bridge keeps its own iptables chains.
            net_config.chain_prefix = args.bridge.to_ascii_uppercase().chars().take(10).collect();
            net_config.bridge = args.bridge.clone();
        }
        let network = Arc::new(
            skiff_runtime::network::NetworkManager::restore(net_config)
                .await
                .map_err(|e| anyhow::anyhow!("setting up container networking: {e}"))?,
        );
        let mounts = Arc::new(ImageMounts::new(
            paths.clone(),
            super::profiles::ProfileSettings::from_config(args)?,
        ));
        mounts.clean_stale();
        let background = tokio_util::task::TaskTracker::new();
        let monitor = Arc::new(Monitor::new(paths.clone()));
        let volumes = Arc::new(VolumeService::new(paths.volumes_dir(), records.clone()));
        let containers = Arc::new(ContainerService::new(
            paths.clone(),
            store.clone(),
            mounts.clone(),
            records.clone(),
            network.clone(),
            Arc::new(skiff_runtime::ShimLauncher::new(&exe)),
            background.clone(),
            monitor.clone(),
            volumes.clone(),
            (args.log_driver.clone(), args.log_opts.clone()),
        ));
        Monitor::run(containers.clone());
        let d = Daemon {
            execs: ExecService::new(paths.clone(), exe),
            images: ImageService::new(paths.clone(), store, mounts.clone(), containers.clone()),
            paths,
            containers,
            monitor,
            records,
            volumes,
            mounts,
            network,
            background,
        };
        d.restore().await;
        Ok(d)
    }

    /// After a restart: every recorded container gets its true state from the runtime (a
    /// container whose shim is gone reads as exited); running ones get their image mounted
    /// again and are watched; restart policies start the ones they say (Docker's rules).
    async fn restore(&self) {
        let purged = skiff_runtime::purge_trash(&self.paths.containers_dir());
        if purged > 0 {
            tracing::info!("deleted {purged} container directories a removal left behind");
        }
        let records = match self.records.all() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("reading container records: {e}");
                return;
            }
        };
        let known: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        for id in self.network.attached().await {
            if !known.contains(&id) {
                if let Err(e) = self.network.release(&id).await {
                    tracing::warn!(id = %id, "releasing the network of a vanished container: {e}");
                }
            }
        }
        let mut to_start = Vec::new();
        for r in records {
            let st = match self.containers.state(&r.id) {
                Ok(st) => st,
                Err(e) => {
                    tracing::warn!(id = %&r.id[..12], "state unreadable: {e}");
                    continue;
                }
            };
            tracing::info!(id = %&r.id[..12], name = %r.name, status = %st.status, "restored container");
            // A live container holds a use of its image mount (released at removal); an
            // exited one mounts it again when started.
            if st.status != Status::Exited {
                if let Err(e) = self.mounts.acquire(&self.containers.store, &r.image_id) {
                    tracing::error!(id = %&r.id[..12], "remounting image {}: {e}", r.image_id);
                }
            }
            if st.status == Status::Running {
                self.containers.monitor.watch(&r.id);
            } else if Lifecycle::new(&r, &st).start_at_boot() {
                to_start.push(r);
            }
        }
        for r in to_start {
            match self
                .containers
                .start(&r, super::containers_run::StartedBy::RestartPolicy)
                .await
            {
                Ok(_) => {
                    tracing::info!(id = %&r.id[..12], policy = r.spec.host.restart_policy.docker_name(), "started by its restart policy at daemon start")
                }
                Err(e) => {
                    tracing::warn!(id = %&r.id[..12], "restart policy start at daemon start: {e}")
                }
            }
        }
    }

    pub async fn shutdown(&self) {
        self.background.close();
        self.background.wait().await;
        if let Err(e) = self.network.shutdown().await {
            tracing::warn!("releasing unused network resources: {e}");
        }
        self.mounts.unmount_all();
        // The namespace directory is a bind mount of itself (as `ip netns` makes it); with no
        // container left to pin a namespace in it, it goes too.
        if self.network.attached().await.is_empty() {
            let dir = self.paths.netns_dir();
            if nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH).is_ok() {
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }

    pub fn cgroup_version(&self) -> &'static str {
        if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            "2"
        } else {
            "1"
        }
    }
}
