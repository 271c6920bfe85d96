//! The daemon's state: the image store, the image mounts, the container records and the
//! execs, and the operations the API handlers call.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::Config;
use skiff_runtime::state::{ContainerState, Status};

use super::error::{ApiError, ApiResult};
use super::mounts::ImageMounts;
use super::names;
use super::paths::Paths;
use super::records::{Record, Records};
use super::resolve::resolve;
use crate::args::DaemonArgs;

/// One `docker exec` session.
pub struct ExecEntry {
    pub container_id: String,
    pub config: bollard::models::ExecConfig,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub pid: Option<i32>,
    /// The exec's pty master, for resize.
    pub pty: Option<Arc<std::os::fd::OwnedFd>>,
}

pub struct Daemon {
    pub paths: Paths,
    pub store: skiff_store::Store,
    pub mounts: ImageMounts,
    pub records: Records,
    pub execs: Mutex<HashMap<String, ExecEntry>>,
    /// Exit codes of auto-removed containers, for waiters that come late.
    pub last_exit: Mutex<HashMap<String, i32>>,
    pub network: skiff_runtime::network::NetworkManager,
    /// Cleanup that goes on after a removal has been answered; awaited at shutdown.
    background: tokio_util::task::TaskTracker,
    /// Our own binary, re-executed as the container shim and exec helper.
    pub exe: PathBuf,
    /// Forks container shims from one exec of our binary.
    launcher: Arc<skiff_runtime::ShimLauncher>,
    /// Woken whenever a container is removed, or its auto-removal failed (for `wait
    /// --condition removed`).
    removed: tokio::sync::Notify,
    /// Containers whose auto-removal failed: their `removed` waiters stop waiting.
    removal_failed: Mutex<std::collections::HashSet<String>>,
    /// Serializes create/remove so names and mounts stay consistent.
    lifecycle: tokio::sync::Mutex<()>,
}

impl Daemon {
    pub async fn open(paths: Paths, args: &DaemonArgs) -> anyhow::Result<Daemon> {
        let exe = std::env::current_exe()?;
        let cache_bytes = crate::client::format::parse_bytes(&args.cache_size)
            .filter(|b| *b > 0)
            .ok_or_else(|| anyhow::anyhow!("invalid --cache-size {:?}", args.cache_size))?;
        let store = skiff_store::Store::open(
            &paths.store(),
            skiff_store::StoreOptions {
                insecure_registries: args.insecure_registries.clone(),
                cache_bytes: cache_bytes as u64,
                lazy_pull: !args.no_lazy_pull,
                fetch_profiles: !args.no_profile_prefetch,
                ..Default::default()
            },
        )?;
        let records = Records::open(&paths.daemon_db())?;
        let mut net_config =
            skiff_runtime::network::NetworkConfig::new(paths.network_state(), &paths.exec_root);
        net_config.subnet = args
            .subnet
            .parse()
            .map_err(|e| anyhow::anyhow!("--bip {}: {e}", args.subnet))?;
        if args.bridge != net_config.bridge {
            // A second daemon on its own bridge keeps its own iptables chains.
            net_config.chain_prefix = args.bridge.to_ascii_uppercase().chars().take(10).collect();
            net_config.bridge = args.bridge.clone();
        }
        let network = skiff_runtime::network::NetworkManager::restore(net_config)
            .await
            .map_err(|e| anyhow::anyhow!("setting up container networking: {e}"))?;
        let mounts = ImageMounts::new(
            paths.clone(),
            super::profiles::ProfileSettings::from_args(args)?,
        );
        mounts.clean_stale();
        let d = Daemon {
            paths,
            store,
            mounts,
            records,
            execs: Mutex::new(HashMap::new()),
            last_exit: Mutex::new(HashMap::new()),
            network,
            background: tokio_util::task::TaskTracker::new(),
            launcher: Arc::new(skiff_runtime::ShimLauncher::new(&exe)),
            removed: tokio::sync::Notify::new(),
            removal_failed: Mutex::new(Default::default()),
            exe,
            lifecycle: tokio::sync::Mutex::new(()),
        };
        d.restore().await;
        Ok(d)
    }

    /// After a restart: every recorded container gets its true state from the runtime (a
    /// container whose shim is gone reads as exited), and running ones get their image
    /// mounted again.
    async fn restore(&self) {
        let purged = skiff_runtime::purge_trash(&self.paths.containers_dir());
        if purged > 0 {
            tracing::info!("deleted {purged} container directories a removal left behind");
        }
        let records = match self.records.all() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("reading container records: {e:#}");
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
        for r in records {
            match self.container_state(&r.id) {
                Ok(st) => {
                    tracing::info!(id = %&r.id[..12], name = %r.name, status = %st.status, "restored container");
                    if st.status != Status::Exited {
                        if let Err(e) = self.mounts.acquire(&self.store, &r.image_id) {
                            tracing::error!(id = %&r.id[..12], "remounting image {}: {}", r.image_id, e.message);
                        }
                    }
                }
                Err(e) => tracing::warn!(id = %&r.id[..12], "state unreadable: {}", e.message),
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

    // ---------- containers ----------

    /// A container by full id, unique id prefix, or name.
    pub fn find_container(&self, name_or_id: &str) -> ApiResult<Record> {
        let key = name_or_id.trim_start_matches('/');
        let all = self.records.all()?;
        if let Some(r) = all.iter().find(|r| r.id == key || r.name == key) {
            return Ok(r.clone());
        }
        let matches: Vec<&Record> = all.iter().filter(|r| r.id.starts_with(key)).collect();
        match matches.len() {
            1 if !key.is_empty() => Ok(matches[0].clone()),
            0 | 1 => Err(ApiError::no_such_container(name_or_id)),
            _ => Err(ApiError::bad_request(format!(
                "multiple IDs found with provided prefix: {name_or_id}"
            ))),
        }
    }

    pub fn container_state(&self, id: &str) -> ApiResult<ContainerState> {
        skiff_runtime::state::state(&self.paths.container_dir(id))
            .map_err(|e| ApiError::internal(format!("state of {id}: {e}")))
    }

    pub async fn containers_with_state(&self) -> ApiResult<Vec<(Record, ContainerState)>> {
        let mut out = Vec::new();
        for r in self.records.all()? {
            if let Ok(st) = self.container_state(&r.id) {
                out.push((r, st));
            }
        }
        Ok(out)
    }

    pub async fn container_counts(&self) -> ApiResult<(i64, i64, i64)> {
        let all = self.containers_with_state().await?;
        let running = all
            .iter()
            .filter(|(_, s)| s.status == Status::Running)
            .count() as i64;
        Ok((all.len() as i64, running, all.len() as i64 - running))
    }

    pub async fn create_container(
        &self,
        name: Option<String>,
        body: Config<String>,
    ) -> ApiResult<String> {
        let _guard = self.lifecycle.lock().await;
        let image_ref = body
            .image
            .clone()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| ApiError::bad_request("Config.Image is required"))?;
        let image = self
            .store
            .image(&image_ref)
            .map_err(|_| ApiError::not_found(format!("No such image: {image_ref}")))?;
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                let n = n.trim_start_matches('/').to_string();
                if !names::valid_name(&n) {
                    return Err(ApiError::bad_request(format!(
                        "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                if let Some(other) = self.records.name_taken(&n)? {
                    return Err(ApiError::conflict(format!(
                        "Conflict. The container name \"/{n}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
                    )));
                }
                n
            }
            None => {
                let mut attempt = 0;
                loop {
                    let n = names::generate_name(attempt);
                    if self.records.name_taken(&n)?.is_none() {
                        break n;
                    }
                    attempt += 1;
                }
            }
        };
        let resolved = resolve(&body, &image.config).map_err(ApiError::bad_request)?;
        let id = names::new_id();
        let dir = self.paths.container_dir(&id);
        let lower = self.mounts.acquire(&self.store, &image.id)?;
        let host = body.host_config.clone().unwrap_or_default();
        let mut rc = skiff_runtime::ContainerConfig::new(
            &id,
            dir.clone(),
            vec![lower],
            resolved.argv.clone(),
        );
        rc.env = resolved.env.clone();
        rc.cwd = resolved.cwd.clone();
        rc.user = resolved.user.clone();
        rc.hostname = body.hostname.clone().filter(|h| !h.is_empty());
        rc.tty = body.tty.unwrap_or(false);
        rc.open_stdin = body.open_stdin.unwrap_or(false);
        rc.resources = skiff_runtime::Resources {
            memory_bytes: host.memory.filter(|m| *m > 0),
            nano_cpus: host.nano_cpus.filter(|c| *c > 0),
            pids_limit: host.pids_limit.filter(|p| *p > 0),
        };
        let exposed: Vec<String> = body
            .exposed_ports
            .iter()
            .flat_map(|m| m.keys().cloned())
            .chain(
                image
                    .config
                    .config()
                    .as_ref()
                    .and_then(|c| c.exposed_ports().clone())
                    .unwrap_or_default(),
            )
            .collect();
        let net_request = skiff_runtime::network::NetworkRequest {
            container_id: id.clone(),
            hostname: rc.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
            mode: super::network::mode(&host)?,
            ports: super::network::ports(&host, &exposed)?,
        };
        let attachment = match self.network.prepare(net_request).await {
            Ok(a) => a,
            Err(e) => {
                self.mounts.release(&image.id);
                return Err(match e {
                    skiff_runtime::RuntimeError::PortInUse { .. } => ApiError::conflict(format!(
                        "driver failed programming external connectivity: {e}"
                    )),
                    _ => ApiError::internal(format!("setting up the network: {e}")),
                });
            }
        };
        rc.network = match (&attachment.netns_path, attachment.mode) {
            (Some(p), _) => skiff_runtime::NetworkMode::Join(p.clone()),
            // The init makes a namespace of its own with only loopback up.
            (None, skiff_runtime::network::NetworkMode::None) => skiff_runtime::NetworkMode::None,
            (None, _) => skiff_runtime::NetworkMode::Host,
        };
        rc.hosts = Some(attachment.hosts.clone());
        rc.resolv_conf = Some(attachment.resolv_conf.clone());
        let mut config = bollard::models::ContainerConfig {
            image: Some(image_ref.clone()),
            cmd: body.cmd.clone(),
            entrypoint: body.entrypoint.clone(),
            env: Some(resolved.env.clone()),
            working_dir: Some(resolved.cwd.clone()),
            user: Some(resolved.user.clone()),
            hostname: Some(rc.hostname.clone().unwrap_or_else(|| id[..12].to_string())),
            tty: body.tty,
            open_stdin: body.open_stdin,
            stdin_once: body.stdin_once,
            attach_stdin: body.attach_stdin,
            attach_stdout: body.attach_stdout,
            attach_stderr: body.attach_stderr,
            labels: body.labels.clone(),
            stop_signal: resolved.stop_signal.clone(),
            stop_timeout: body.stop_timeout,
            exposed_ports: body.exposed_ports.clone(),
            ..Default::default()
        };
        if config.cmd.is_none() {
            config.cmd = image.config.config().as_ref().and_then(|c| c.cmd().clone());
        }
        let record = Record {
            id: id.clone(),
            name: name.clone(),
            created: chrono::Utc::now().timestamp(),
            image: image_ref,
            image_id: image.id.clone(),
            config,
            host_config: host,
            path: resolved.argv[0].clone(),
            args: resolved.argv[1..].to_vec(),
            network: Some(super::network::summary(&attachment)),
            restart_count: 0,
        };
        let launcher = self.launcher.clone();
        let created =
            tokio::task::spawn_blocking(move || skiff_runtime::create_with(&launcher, &rc)).await;
        let failed = match created {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("creating container: {e}")),
            Err(e) => Some(format!("creating container: {e}")),
        };
        if let Some(msg) = failed {
            let _ = std::fs::remove_dir_all(&dir);
            if let Err(e) = self.network.release(&id).await {
                tracing::warn!(id = %&id[..12], "releasing network after a failed create: {e}");
            }
            self.mounts.release(&image.id);
            return Err(ApiError::internal(msg));
        }
        self.records.insert(&record)?;
        tracing::info!(id = %&id[..12], name = %name, image = %record.image, "created container");
        Ok(id)
    }

    /// Starts a created container; `false` when it was already running.
    pub async fn start_container(self: &Arc<Self>, r: &Record) -> ApiResult<bool> {
        let st = self.container_state(&r.id)?;
        match st.status {
            Status::Running => return Ok(false),
            // Docker starts an exited container again: same filesystem (upper dir), same
            // network, same log, a fresh process.
            Status::Exited => self.recreate(r).await?,
            Status::Created => {}
        }
        let dir = self.paths.container_dir(&r.id);
        let res = tokio::task::spawn_blocking(move || skiff_runtime::start(&dir))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if let Err(e) = res {
            let msg = match e.exit_code() {
                127 => format!(
                    "failed to create task for container: exec: \"{}\": executable file not found in $PATH: {e}",
                    r.path
                ),
                126 => format!("failed to create task for container: exec: \"{}\": permission denied: {e}", r.path),
                _ => format!("failed to start container: {e}"),
            };
            tracing::info!(id = %&r.id[..12], "start failed: {msg}");
            return Err(ApiError::bad_request(msg));
        }
        tracing::info!(id = %&r.id[..12], "started container");
        if r.host_config.auto_remove.unwrap_or(false) {
            let d = self.clone();
            let r = r.clone();
            tokio::spawn(async move {
                let code = d.wait_exit(&r.id).await;
                d.last_exit
                    .lock()
                    .expect("last_exit lock")
                    .insert(r.id.clone(), code);
                if let Err(e) = d.remove_container(&r, true).await {
                    tracing::warn!(id = %&r.id[..12], "auto-remove: {}", e.message);
                    d.removal_failed
                        .lock()
                        .expect("removal_failed lock")
                        .insert(r.id.clone());
                    d.removed.notify_waiters();
                }
            });
        }
        Ok(true)
    }

    /// `restart`: the handler has stopped it; start it again.
    pub async fn restart_container(self: &Arc<Self>, r: &Record) -> ApiResult<()> {
        self.start_container(r).await?;
        Ok(())
    }

    /// Sets an exited container up again from the runtime config it ran with.
    async fn recreate(&self, r: &Record) -> ApiResult<()> {
        let dir = self.paths.container_dir(&r.id);
        let path = skiff_runtime::paths::ContainerPaths::new(&dir).config();
        let bytes = std::fs::read(&path)
            .map_err(|e| ApiError::internal(format!("reading {}: {e}", path.display())))?;
        let cfg: skiff_runtime::ContainerConfig = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::internal(format!("parsing {}: {e}", path.display())))?;
        let launcher = self.launcher.clone();
        tokio::task::spawn_blocking(move || skiff_runtime::create_with(&launcher, &cfg))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::internal(format!("setting up {} again: {e}", r.name)))?;
        Ok(())
    }

    /// Waits until the container has exited (blocking on its shim's socket, which answers
    /// at the exit); returns its exit code.
    pub async fn wait_exit(&self, id: &str) -> i32 {
        loop {
            match self.container_state(id) {
                Ok(st) if st.status == Status::Exited => return st.exit_code.unwrap_or(-1),
                Ok(_) => {
                    // Bounded, so the thread of a waiter whose client went away is freed soon.
                    let dir = self.paths.container_dir(id);
                    let waited = tokio::task::spawn_blocking(move || {
                        skiff_runtime::wait_timeout(&dir, Duration::from_secs(2))
                    })
                    .await;
                    if !matches!(waited, Ok(Ok(_))) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                // Gone: an auto-removed container's code is kept for late waiters.
                Err(_) => {
                    let last = self.last_exit.lock().expect("last_exit lock");
                    return last.get(id).copied().unwrap_or(-1);
                }
            }
        }
    }

    /// Resolves to the exit code once `condition` holds (`not-running`, `next-exit`,
    /// `removed`). A created container is waited for through its run.
    pub async fn waiter(self: Arc<Self>, id: String, condition: String) -> i32 {
        let code = self.wait_exit(&id).await;
        if condition == "removed" {
            loop {
                // Registered before the check, so a removal in between is not missed.
                let removed = self.removed.notified();
                tokio::pin!(removed);
                removed.as_mut().enable();
                let failed = || {
                    let failed = self.removal_failed.lock().expect("removal_failed lock");
                    failed.contains(&id)
                };
                if !self.records.exists(&id).unwrap_or(false) || failed() {
                    break;
                }
                removed.await;
            }
        }
        code
    }

    pub async fn stop_container(
        &self,
        r: &Record,
        t: Option<i64>,
        signal: Option<&str>,
    ) -> ApiResult<bool> {
        if self.container_state(&r.id)?.status != Status::Running {
            return Ok(false);
        }
        let sig = super::api_containers::parse_signal(
            signal
                .or(r.config.stop_signal.as_deref())
                .unwrap_or("SIGTERM"),
        )?;
        let grace = super::api_containers::stop_timeout(t, r.config.stop_timeout);
        let dir = self.paths.container_dir(&r.id);
        tokio::task::spawn_blocking(move || skiff_runtime::stop(&dir, grace, sig))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::internal(format!("stopping {}: {e}", r.name)))?;
        tracing::info!(id = %&r.id[..12], "stopped container");
        Ok(true)
    }

    pub async fn kill_container(&self, r: &Record, signal: &str) -> ApiResult<()> {
        let sig = super::api_containers::parse_signal(signal)?;
        if self.container_state(&r.id)?.status != Status::Running {
            return Err(ApiError::conflict(format!(
                "Cannot kill container: {}: Container {} is not running",
                r.name, r.id
            )));
        }
        skiff_runtime::kill(&self.paths.container_dir(&r.id), sig)
            .map_err(|e| ApiError::internal(format!("killing {}: {e}", r.name)))?;
        Ok(())
    }

    pub async fn attach_container(
        &self,
        r: &Record,
        streams: skiff_runtime::protocol::AttachStreams,
        _logs: bool,
    ) -> ApiResult<std::os::unix::net::UnixStream> {
        // `start -a` of an exited container attaches before it starts: set it up again now
        // so the new process's output reaches this client.
        if self.container_state(&r.id)?.status == Status::Exited {
            self.recreate(r).await?;
        }
        skiff_runtime::attach(&self.paths.container_dir(&r.id), streams)
            .map_err(|e| ApiError::conflict(format!("attaching to {}: {e}", r.name)))
    }

    pub async fn resize_container(&self, r: &Record, rows: u16, cols: u16) -> ApiResult<()> {
        skiff_runtime::resize(&self.paths.container_dir(&r.id), rows, cols)
            .map_err(|e| ApiError::conflict(format!("resizing {}: {e}", r.name)))
    }

    pub async fn remove_container(&self, r: &Record, force: bool) -> ApiResult<()> {
        let st = self.container_state(&r.id)?;
        if st.status == Status::Running && !force {
            return Err(ApiError::conflict(format!(
                "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                r.id
            )));
        }
        let dir = self.paths.container_dir(&r.id);
        let removal = tokio::task::spawn_blocking(move || skiff_runtime::remove_detached(&dir))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::internal(format!("removing {}: {e}", r.name)))?;
        // The container is gone once renamed; its shim finishing and its files being
        // unlinked need not hold up the answer.
        if let Some(removal) = removal {
            self.background.spawn_blocking(move || {
                if let Err(e) = removal.finish() {
                    tracing::warn!("{e}");
                }
            });
        }
        // Cheap in the common case: a bridge attachment becomes a spare, not deleted links.
        if let Err(e) = self.network.release(&r.id).await {
            tracing::warn!(id = %&r.id[..12], "releasing network: {e}");
        }
        self.records.remove(&r.id)?;
        self.removal_failed
            .lock()
            .expect("removal_failed lock")
            .remove(&r.id);
        self.removed.notify_waiters();
        self.mounts.release(&r.image_id);
        tracing::info!(id = %&r.id[..12], "removed container");
        Ok(())
    }

    pub fn container_disk_usage(&self, id: &str) -> u64 {
        dir_size(&self.paths.container_dir(id).join("upper"))
    }

    // ---------- execs ----------

    pub fn create_exec(
        &self,
        r: &Record,
        config: bollard::models::ExecConfig,
    ) -> ApiResult<String> {
        if self.container_state(&r.id)?.status != Status::Running {
            return Err(ApiError::conflict(format!(
                "Container {} is not running",
                r.id
            )));
        }
        if config.cmd.as_ref().is_none_or(|c| c.is_empty()) {
            return Err(ApiError::bad_request("No exec command specified"));
        }
        let id = names::new_id();
        self.execs.lock().expect("execs lock").insert(
            id.clone(),
            ExecEntry {
                container_id: r.id.clone(),
                config,
                running: false,
                exit_code: None,
                pid: None,
                pty: None,
            },
        );
        Ok(id)
    }

    pub async fn start_exec(
        self: &Arc<Self>,
        exec_id: &str,
    ) -> ApiResult<(bool, super::exec_bridge::ExecIo)> {
        let (container_id, cfg) = {
            let execs = self.execs.lock().expect("execs lock");
            let e = execs
                .get(exec_id)
                .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {exec_id}")))?;
            if e.running || e.exit_code.is_some() {
                return Err(ApiError::conflict(format!(
                    "Exec {exec_id} has already run"
                )));
            }
            (e.container_id.clone(), e.config.clone())
        };
        let tty = cfg.tty.unwrap_or(false);
        let ec = skiff_runtime::ExecConfig {
            args: cfg.cmd.clone().unwrap_or_default(),
            env: cfg.env.clone().unwrap_or_default(),
            cwd: cfg.working_dir.clone().unwrap_or_default(),
            user: cfg.user.clone().unwrap_or_default(),
            tty,
            open_stdin: cfg.attach_stdin.unwrap_or(false),
            console_size: None,
        };
        let dir = self.paths.container_dir(&container_id);
        let exe = self.exe.clone();
        let process = tokio::task::spawn_blocking(move || skiff_runtime::exec(&exe, &dir, &ec))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::internal(format!("exec: {e}")))?;
        let skiff_runtime::ExecProcess {
            mut child,
            stdin,
            stdout,
            stderr,
            pty,
        } = process;
        let pty = pty.map(Arc::new);
        {
            let mut execs = self.execs.lock().expect("execs lock");
            if let Some(e) = execs.get_mut(exec_id) {
                e.running = true;
                e.pid = Some(child.id() as i32);
                e.pty = pty.clone();
            }
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let d = self.clone();
        let exec_id = exec_id.to_string();
        tokio::task::spawn_blocking(move || {
            use std::os::unix::process::ExitStatusExt;
            let code = match child.wait() {
                Ok(st) => st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)),
                Err(_) => -1,
            };
            if let Some(e) = d.execs.lock().expect("execs lock").get_mut(&exec_id) {
                e.running = false;
                e.exit_code = Some(code as i64);
                e.pty = None;
            }
            let _ = done_tx.send(());
        });
        Ok((
            tty,
            super::exec_bridge::ExecIo {
                stdin,
                stdout,
                stderr,
                pty,
                done: done_rx,
            },
        ))
    }

    pub fn resize_exec(&self, exec_id: &str, rows: u16, cols: u16) -> ApiResult<()> {
        let execs = self.execs.lock().expect("execs lock");
        let e = execs
            .get(exec_id)
            .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {exec_id}")))?;
        if let Some(pty) = &e.pty {
            super::exec_bridge::set_winsize(pty, rows, cols);
        }
        Ok(())
    }

    pub fn inspect_exec(&self, exec_id: &str) -> ApiResult<bollard::models::ExecInspectResponse> {
        // The exit code lands a moment after the stream ends: give it a short while.
        for _ in 0..200 {
            {
                let execs = self.execs.lock().expect("execs lock");
                let e = execs.get(exec_id).ok_or_else(|| {
                    ApiError::not_found(format!("No such exec instance: {exec_id}"))
                })?;
                if !e.running || e.exit_code.is_some() {
                    return Ok(bollard::models::ExecInspectResponse {
                        id: Some(exec_id.to_string()),
                        running: Some(e.running),
                        exit_code: e.exit_code,
                        container_id: Some(e.container_id.clone()),
                        pid: e.pid.map(|p| p as i64),
                        open_stdin: e.config.attach_stdin,
                        ..Default::default()
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let execs = self.execs.lock().expect("execs lock");
        let e = execs.get(exec_id).expect("checked above");
        Ok(bollard::models::ExecInspectResponse {
            id: Some(exec_id.to_string()),
            running: Some(e.running),
            exit_code: e.exit_code,
            container_id: Some(e.container_id.clone()),
            pid: e.pid.map(|p| p as i64),
            ..Default::default()
        })
    }

    pub fn cgroup_version(&self) -> String {
        if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            "2".to_string()
        } else {
            "1".to_string()
        }
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
