//! The containers service, running part: start, stop, kill, attach, resize.

use std::time::Duration;

use super::containers::ContainerService;
use super::error::DaemonError;
use super::record::ContainerRecord;
use super::status::{Lifecycle, StartPlan};

/// Who asks for a start: a user (clears "stopped by user" and the restart count), the
/// restart policy after an exit, or the policy at daemon start (clears "stopped by user":
/// dockerd keeps restarting an `always` container it started at boot, even one stopped by
/// hand before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartedBy {
    User,
    RestartPolicy,
    DaemonStart,
}

impl ContainerService {
    /// Starts a container; `false` when it was already running.
    pub async fn start(&self, r: &ContainerRecord, by: StartedBy) -> Result<bool, DaemonError> {
        let st = self.state(&r.id)?;
        let plan = Lifecycle::new(r, &st).can_start();
        if plan != StartPlan::AlreadyRunning {
            self.check_network_exists(r).await?;
        }
        match plan {
            StartPlan::AlreadyRunning => return Ok(false),
            // Docker starts an exited container again: same filesystem (upper dir), same
            // network, same log, a fresh process.
            StartPlan::Again => self.recreate(r).await?,
            StartPlan::Fresh => {}
        }
        if by == StartedBy::User && (r.stopped_by_user || r.restart_count != 0) {
            let mut updated = r.clone();
            updated.stopped_by_user = false;
            updated.restart_count = 0;
            self.records.update(&updated)?;
        } else if by == StartedBy::DaemonStart && r.stopped_by_user {
            let mut updated = r.clone();
            updated.stopped_by_user = false;
            self.records.update(&updated)?;
        }
        // Ports are bound when a container starts and freed when it stops (see the
        // monitor), as dockerd's: a port taken meanwhile fails this start, not the create.
        if let Err(e) = self.network.publish(&r.id).await {
            let err = match e {
                skiff_runtime::RuntimeError::PortInUse { .. }
                | skiff_runtime::RuntimeError::PortAllocated { .. } => {
                    DaemonError::PortInUse(Box::new(e))
                }
                e => DaemonError::runtime("publishing ports", e),
            };
            // As for any failed start: a `--rm` container goes, so `run --rm` ends.
            if r.spec.host.auto_remove {
                if let Err(e) = self.remove(r, true, true).await {
                    tracing::warn!(id = %&r.id[..12], "auto-remove after a failed start: {e}");
                    self.monitor.note_removal_failed(&r.id);
                }
            } else {
                self.note_start_error(&r.id, Some(err.to_string()));
            }
            return Err(err);
        }
        let dir = self.dir(&r.id);
        let res = tokio::task::spawn_blocking(move || skiff_runtime::start(&dir))
            .await
            .map_err(DaemonError::join)?;
        if let Err(e) = res {
            let msg = start_failure(&r.path, e.exit_code(), &e.to_string());
            tracing::info!(id = %&r.id[..12], "start failed: {msg}");
            // As dockerd: a `--rm` container goes when its start fails, so `wait
            // ?condition=removed` (what `run --rm` waits on) ends.
            // The shim records the exit (127, 126) as it goes: answer once it has, so an
            // inspect right after shows it.
            let code = tokio::time::timeout(Duration::from_secs(2), self.monitor.wait_exit(&r.id))
                .await
                .unwrap_or(e.exit_code());
            if r.spec.host.auto_remove {
                self.monitor.note_exit(&r.id, code);
                if let Err(e) = self.remove(r, true, true).await {
                    tracing::warn!(id = %&r.id[..12], "auto-remove after a failed start: {e}");
                    self.monitor.note_removal_failed(&r.id);
                }
            } else if let Err(e) = self.network.unpublish(&r.id).await {
                tracing::warn!(id = %&r.id[..12], "freeing published ports: {e}");
            }
            return Err(DaemonError::StartFailed(msg));
        }
        self.note_start_error(&r.id, None);
        tracing::info!(id = %&r.id[..12], "started container");
        self.monitor.events.volumes("mount", r);
        self.monitor.events.network("connect", r);
        self.monitor.events.container("start", r, &[]);
        self.monitor.watch(&r.id);
        Ok(true)
    }

    /// Records (or clears) why a start failed before the runtime ran it; a failure to
    /// record only costs `State.Error`, so it is logged.
    fn note_start_error(&self, id: &str, error: Option<String>) {
        let Ok(Some(mut rec)) = self.records.get(id) else {
            return;
        };
        if rec.start_error != error {
            rec.start_error = error;
            if let Err(e) = self.records.update(&rec) {
                tracing::warn!(id = %&id[..12], "recording a failed start: {e}");
            }
        }
    }

    /// A container whose user-defined network was removed while it was stopped does not
    /// start (dockerd: `network NAME not found`, 404).
    async fn check_network_exists(&self, r: &ContainerRecord) -> Result<(), DaemonError> {
        match r.spec.host.network_mode.as_str() {
            "" | "default" | "bridge" | "none" | "host" => Ok(()),
            m if m.starts_with("container:") => Ok(()),
            m => self.networks.get(m).await.map(drop),
        }
    }

    /// Sets an exited container up again from the runtime config it ran with.
    async fn recreate(&self, r: &ContainerRecord) -> Result<(), DaemonError> {
        self.mounts.ensure(&self.store, &r.image_id)?;
        let dir = self.dir(&r.id);
        let path = skiff_runtime::paths::ContainerPaths::new(&dir).config();
        let bytes = std::fs::read(&path).map_err(|e| DaemonError::io("reading", &path, e))?;
        let cfg: skiff_runtime::ContainerConfig = serde_json::from_slice(&bytes)
            .map_err(|e| DaemonError::Internal(format!("parsing {}: {e}", path.display())))?;
        let launcher = self.launcher.clone();
        tokio::task::spawn_blocking(move || skiff_runtime::create_with(&launcher, &cfg))
            .await
            .map_err(DaemonError::join)?
            .map_err(|e| DaemonError::runtime(format!("setting up {} again", r.name), e))?;
        Ok(())
    }

    /// Marks a container stopped by its user, so the restart policy leaves it alone.
    fn mark_stopped_by_user(&self, r: &ContainerRecord) -> Result<(), DaemonError> {
        if !r.stopped_by_user {
            let mut updated = r.clone();
            updated.stopped_by_user = true;
            self.records.update(&updated)?;
        }
        self.monitor.cancel_restart(&r.id);
        Ok(())
    }

    /// Stops a running container (`signal`, then SIGKILL after the grace time `t`);
    /// `false` when it was not running. Events in dockerd's order: `kill` for the signal,
    /// another `kill` for SIGKILL if it came to that, the monitor's `die`, then `stop`.
    pub async fn stop(
        &self,
        r: &ContainerRecord,
        t: Option<i64>,
        signal: Option<&str>,
    ) -> Result<bool, DaemonError> {
        self.mark_stopped_by_user(r)?;
        let st = self.state(&r.id)?;
        if !Lifecycle::new(r, &st).can_stop() {
            return Ok(false);
        }
        // Frozen processes would not see the signal: thawed first, as dockerd does.
        self.thaw_if_paused(r).await;
        let sig = parse_signal(
            signal
                .or(r.spec.stop_signal.as_deref())
                .unwrap_or("SIGTERM"),
        )?;
        let grace = stop_timeout(t, r.spec.stop_timeout);
        let dir = self.dir(&r.id);
        let gone = dir.clone();
        let (monitor, rec) = (self.monitor.clone(), r.clone());
        let stopped = tokio::task::spawn_blocking(move || {
            // A failed signal is a process that exited meanwhile: the wait sees the exit.
            let _ = monitor.kill(&rec, sig);
            if let Some(st) = skiff_runtime::wait_timeout(&dir, grace)? {
                return Ok(st);
            }
            let _ = monitor.kill(&rec, skiff_runtime::Signal::SIGKILL);
            loop {
                if let Some(st) = skiff_runtime::wait_timeout(&dir, Duration::from_secs(10))? {
                    return Ok(st);
                }
                tracing::warn!(id = %&rec.id[..12], "container did not exit after SIGKILL; still waiting");
            }
        })
        .await
        .map_err(DaemonError::join)?;
        match stopped {
            Ok(st) => {
                self.monitor
                    .died(&r.id, st.started_at, || {
                        !self.records.exists(&r.id).unwrap_or(false)
                    })
                    .await
            }
            // An auto-remove container may be removed (its directory renamed away) by the
            // monitor before the stop has read its final state: it stopped, as asked (and
            // its `die` came before the removal).
            Err(e) => {
                if !r.spec.host.auto_remove || gone.exists() {
                    return Err(DaemonError::runtime(format!("stopping {}", r.name), e));
                }
            }
        }
        // Freed before answering, so the client may bind the port at once (the monitor
        // does it too, for exits nobody asked for).
        if let Err(e) = self.network.unpublish(&r.id).await {
            tracing::warn!(id = %&r.id[..12], "freeing published ports: {e}");
        }
        tracing::info!(id = %&r.id[..12], "stopped container");
        self.monitor.events.container("stop", r, &[]);
        Ok(true)
    }

    /// `rm -f` of a running container: SIGKILL through the monitor and a wait for the exit,
    /// so its events read as dockerd's (`kill` with signal 9, `die` with 137, then the
    /// removal's `destroy`) and no restart policy brings it back. A container that does not
    /// exit within 10 s is left to the removal, which waits for it.
    pub(super) async fn kill_for_removal(&self, r: &ContainerRecord) -> Result<(), DaemonError> {
        self.mark_stopped_by_user(r)?;
        let dir = self.dir(&r.id);
        let (monitor, rec) = (self.monitor.clone(), r.clone());
        let exited = tokio::task::spawn_blocking(move || {
            // A failed signal is a process that exited meanwhile: the wait sees the exit.
            let _ = monitor.kill(&rec, skiff_runtime::Signal::SIGKILL);
            skiff_runtime::wait_timeout(&dir, Duration::from_secs(10))
        })
        .await
        .map_err(DaemonError::join)?;
        if let Ok(Some(st)) = exited {
            self.monitor
                .died(&r.id, st.started_at, || {
                    !self.records.exists(&r.id).unwrap_or(false)
                })
                .await;
        }
        Ok(())
    }

    pub async fn kill(&self, r: &ContainerRecord, signal: &str) -> Result<(), DaemonError> {
        let sig = parse_signal(signal)?;
        let st = self.state(&r.id)?;
        Lifecycle::new(r, &st).can_kill()?;
        self.mark_stopped_by_user(r)?;
        self.thaw_if_paused(r).await;
        self.monitor
            .kill(r, sig)
            .map_err(|e| DaemonError::runtime(format!("killing {}", r.name), e))?;
        Ok(())
    }

    /// `restart`: stop (if running), then start again; dockerd's `restart` event follows
    /// the stop's and the start's.
    pub async fn restart(
        &self,
        r: &ContainerRecord,
        t: Option<i64>,
        signal: Option<&str>,
    ) -> Result<(), DaemonError> {
        // An auto-remove container survives its restart (dockerd's restart clears
        // AutoRemove for its duration).
        self.monitor.set_user_restart(&r.id, true);
        let restarted = async {
            self.stop(r, t, signal).await?;
            let r = self
                .records
                .get(&r.id)?
                .ok_or_else(|| DaemonError::NoSuchContainer(r.id.clone()))?;
            self.start(&r, StartedBy::User).await
        }
        .await;
        self.monitor.set_user_restart(&r.id, false);
        restarted?;
        self.monitor.events.container("restart", r, &[]);
        Ok(())
    }

    /// Attaches to the container's streams through its shim.
    pub async fn attach(
        &self,
        r: &ContainerRecord,
        streams: skiff_runtime::protocol::AttachStreams,
    ) -> Result<std::os::unix::net::UnixStream, DaemonError> {
        let st = self.state(&r.id)?;
        if Lifecycle::new(r, &st).attach_needs_setup() {
            self.recreate(r).await?;
        }
        let shim = skiff_runtime::attach(&self.dir(&r.id), streams).map_err(|source| {
            DaemonError::Attach {
                name: r.name.clone(),
                source: Box::new(source),
            }
        })?;
        // dockerd's, once the client is attached (before `run`'s start).
        self.monitor.events.container("attach", r, &[]);
        Ok(shim)
    }

    pub fn resize(&self, r: &ContainerRecord, rows: u16, cols: u16) -> Result<(), DaemonError> {
        skiff_runtime::resize(&self.dir(&r.id), rows, cols).map_err(|source| DaemonError::Attach {
            name: r.name.clone(),
            source: Box::new(source),
        })
    }
}

/// The error of a start that failed before `path` ran (the runtime's `exit_code` and
/// `cause`), in dockerd's words: `start`'s answer, and inspect's `State.Error` after it.
pub fn start_failure(path: &str, exit_code: i32, cause: &str) -> String {
    match exit_code {
        // As runc: a path is looked at itself, a name is looked for in $PATH.
        127 if path.contains('/') => format!(
            "failed to create task for container: exec: \"{path}\": stat {path}: no such file or directory: {cause}"
        ),
        127 => format!(
            "failed to create task for container: exec: \"{path}\": executable file not found in $PATH: {cause}"
        ),
        126 => format!(
            "failed to create task for container: exec: \"{path}\": permission denied: {cause}"
        ),
        _ => format!("failed to start container: {cause}"),
    }
}

/// Parses a signal name or number ("KILL", "SIGTERM", "9").
pub fn parse_signal(s: &str) -> Result<skiff_runtime::Signal, DaemonError> {
    let invalid = || DaemonError::Invalid(format!("Invalid signal: {s}"));
    if let Ok(n) = s.parse::<i32>() {
        return skiff_runtime::Signal::try_from(n).map_err(|_| invalid());
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<skiff_runtime::Signal>().map_err(|_| invalid())
}

/// The grace period for stop: the request's, the container's, else Docker's 10 s.
pub fn stop_timeout(q: Option<i64>, config: Option<i64>) -> Duration {
    Duration::from_secs(q.or(config).unwrap_or(10).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(
            parse_signal("KILL").unwrap(),
            skiff_runtime::Signal::SIGKILL
        );
        assert_eq!(
            parse_signal("sigterm").unwrap(),
            skiff_runtime::Signal::SIGTERM
        );
        assert_eq!(parse_signal("9").unwrap(), skiff_runtime::Signal::SIGKILL);
        assert!(matches!(parse_signal("NOPE"), Err(DaemonError::Invalid(_))));
    }
}
