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
use super::networks::NetworkService;
use super::paths::Paths;
use super::records::Records;
use super::status::Lifecycle;
use super::volumes::VolumeService;

pub struct Daemon {
    pub paths: Paths,
    pub containers: Arc<ContainerService>,
    pub execs: Arc<ExecService>,
    pub images: ImageService,
    pub monitor: Arc<Monitor>,
    pub records: Arc<Records>,
    pub volumes: Arc<VolumeService>,
    pub networks: Arc<NetworkService>,
    pub builds: Arc<super::build::BuildService>,
    mounts: Arc<ImageMounts>,
    network: Arc<skiff_runtime::network::NetworkManager>,
    background: tokio_util::task::TaskTracker,
    /// Keep containers and image mounts running at shutdown (docs/live-restore.md).
    pub live_restore: bool,
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
                prefetch_program: args.program_prefetch,
                ..Default::default()
            },
        )?;
        let records = Arc::new(Records::open(&paths.daemon_db())?);
        let mut net_config =
            skiff_runtime::network::NetworkConfig::new(paths.network_state(), &paths.exec_root);
        net_config.subnet = skiff_runtime::network::Ipv4Net::from_bip(&args.subnet)
            .map_err(|e| anyhow::anyhow!("bip {}: {e}", args.subnet))?;
        // Published ports are served by proxy processes that outlive the daemon.
        net_config.proxy_processes = Some(skiff_runtime::network::ProxyProcesses {
            exe: exe.clone(),
            pid_dir: paths.exec_root.join("proxies"),
        });
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
        let networks = Arc::new(
            NetworkService::open(
                paths.data_root.join("networks.json"),
                args.address_pools.clone(),
                network.clone(),
                records.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("loading networks: {e}"))?,
        );
        let mounts = Arc::new(ImageMounts::new(
            paths.clone(),
            super::profiles::ProfileSettings::from_config(args)?,
            exe.clone(),
        ));
        let kept = mounts.restore(&store);
        if !kept.resumed.is_empty() || kept.detached > 0 {
            tracing::info!(
                resumed = kept.resumed.len(),
                detached = kept.detached,
                "image mounts of the previous daemon"
            );
        }
        skiff_runtime::init_layer::ensure(&paths.init_layer())?;
        tokio::spawn(skiff_store::registry::tls::warm_up());
        // Docker's default seccomp filter, compiled while the daemon waits for its first
        // request, not on the first create's path (a cold start's).
        tokio::task::spawn_blocking(|| {
            if let Err(e) = skiff_runtime::config::Security::default().warm_seccomp() {
                tracing::warn!("compiling the default seccomp filter: {e}");
            }
        });
        let background = tokio_util::task::TaskTracker::new();
        let monitor = Arc::new(Monitor::new(paths.clone()));
        let volumes = Arc::new(VolumeService::new(paths.volumes_dir(), records.clone()));
        volumes.remount();
        let containers = Arc::new(ContainerService::new(
            paths.clone(),
            store.clone(),
            mounts.clone(),
            records.clone(),
            network.clone(),
            networks.clone(),
            Arc::new(skiff_runtime::ShimLauncher::new(&exe)),
            background.clone(),
            monitor.clone(),
            volumes.clone(),
            (args.log_driver.clone(), args.log_opts.clone()),
        ));
        let execs = Arc::new(ExecService::new(
            paths.clone(),
            exe.clone(),
            monitor.events.clone(),
        ));
        monitor.set_execs(execs.clone());
        Monitor::run(containers.clone());
        let builds = Arc::new(super::build::BuildService::new(containers.clone()));
        let d = Daemon {
            execs,
            images: ImageService::new(paths.clone(), store, mounts.clone(), containers.clone()),
            paths,
            containers,
            monitor,
            records,
            volumes,
            networks,
            builds,
            mounts,
            network,
            background,
            live_restore: args.live_restore,
        };
        d.execs.restore();
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
            // A running container whose image mount was not kept has a dead root
            // (ENOTCONN): it cannot go on, so it is stopped rather than reported Up.
            if st.status == Status::Running && !self.mounts.is_mounted(&r.image_id) {
                tracing::error!(id = %&r.id[..12], image = %r.image_id, "the container's root filesystem could not be restored (its image mount was not kept); killing it");
                if let Err(e) =
                    skiff_runtime::kill(&self.containers.dir(&r.id), skiff_runtime::Signal::SIGKILL)
                {
                    tracing::error!(id = %&r.id[..12], "killing a container with a lost root: {e}");
                }
            }
            // A live container holds a use of its image mount (released at removal); an
            // exited one mounts it again when started.
            if st.status != Status::Exited {
                if let Err(e) = self.mounts.acquire(&self.containers.store, &r.image_id) {
                    tracing::error!(id = %&r.id[..12], "remounting image {}: {e}", r.image_id);
                }
            }
            if st.status == Status::Exited {
                if let Err(e) = self.network.unpublish(&r.id).await {
                    tracing::warn!(id = %&r.id[..12], "freeing published ports: {e}");
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
                .start(&r, super::containers_run::StartedBy::DaemonStart)
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

    /// Stops the daemon's own work. With live restore, running containers and their image
    /// mounts stay for the next daemon (the mounts' keepers hold them); without, containers
    /// are stopped first, as dockerd does.
    pub async fn shutdown(&self) {
        if !self.live_restore {
            self.stop_all().await;
        }
        self.background.close();
        self.background.wait().await;
        if let Err(e) = self.network.shutdown().await {
            tracing::warn!("releasing unused network resources: {e}");
        }
        // Only live containers need their image mount kept: an exited one's root went
        // with its mount namespace.
        let keep: std::collections::HashSet<String> = if self.live_restore {
            match self.containers.list() {
                Ok(list) => list
                    .into_iter()
                    .filter(|(_, st)| st.status != Status::Exited)
                    .map(|(r, _)| r.image_id)
                    .collect(),
                Err(e) => {
                    tracing::error!("listing containers at shutdown (keeping every mount): {e}");
                    self.mounts.mounted_images()
                }
            }
        } else {
            Default::default()
        };
        self.mounts.shutdown(&keep);
        // The namespace directory is a bind mount of itself (as `ip netns` makes it); with no
        // container left to pin a namespace in it, it goes too.
        if self.network.attached().await.is_empty() {
            let dir = self.paths.netns_dir();
            if nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH).is_ok() {
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }

    /// Stops every running container (each with its own stop signal and timeout), all at
    /// once.
    async fn stop_all(&self) {
        let list = match self.containers.list() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("listing containers to stop: {e}");
                return;
            }
        };
        let stops = list
            .into_iter()
            .filter(|(_, st)| st.status == Status::Running)
            .map(|(r, _)| async move {
                if let Err(e) = self.containers.stop(&r, None, None).await {
                    tracing::warn!(id = %&r.id[..12], "stopping at shutdown: {e}");
                }
            });
        futures::future::join_all(stops).await;
    }

    /// Waits for the access-profile saves under way (blocking).
    pub fn wait_profile_saves(&self) {
        self.mounts.wait_profile_saves();
    }

    /// Whether the kernel resends FUSE requests in flight at a restart: what resuming
    /// mounts showed, else the kernel version (`FUSE_NOTIFY_RESEND` is Linux 6.9+).
    pub fn fuse_resend(&self) -> bool {
        self.mounts.resend_supported().unwrap_or_else(|| {
            let release = nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut it = release
                .split(['.', '-'])
                .map(|p| p.parse::<u32>().unwrap_or(0));
            (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (6, 9)
        })
    }

    pub fn cgroup_version(&self) -> &'static str {
        if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            "2"
        } else {
            "1"
        }
    }
}
