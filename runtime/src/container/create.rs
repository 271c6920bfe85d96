//! `create`: start a shim for a configured container and wait until the container is set up
//! (namespaces, cgroup, rootfs, pty) and waiting for `start`, or report the failing step.

use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::config::ContainerConfig;
use crate::error::{Result, RuntimeError};
use crate::launcher::ShimLauncher;
use crate::paths::ContainerPaths;
use crate::persist;
use crate::shim::ShimReport;
use crate::state::{StateFile, Status};

/// A created container.
#[derive(Debug, Clone)]
pub struct ContainerHandle {
    pub dir: PathBuf,
    /// Host pid of the container's init.
    pub pid: i32,
}

/// Spawns `exe __shim <dir>` (the caller's binary, which must call
/// [`crate::entry::run_if_internal`] first in `main`) and returns once the container is
/// created. On failure the shim has cleaned up and recorded the error in the state.
pub fn create(exe: &Path, cfg: &ContainerConfig) -> Result<ContainerHandle> {
    prepare(cfg)?;
    let dir = &cfg.container_dir;
    let mut child = Command::new(exe)
        .arg(crate::entry::SHIM_ARG)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| RuntimeError::io("spawn shim", exe, e))?;
    let mut out = String::new();
    let read = child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    let _ = child.wait();
    if let Some(Err(e)) = read {
        return Err(RuntimeError::io("read shim report", dir, e));
    }
    handle(cfg, &out)
}

/// As [`create`], with the shim forked by `launcher` instead of exec'd.
pub fn create_with(launcher: &ShimLauncher, cfg: &ContainerConfig) -> Result<ContainerHandle> {
    prepare(cfg)?;
    let dir = &cfg.container_dir;
    let report = launcher.launch(dir)?;
    let mut out = String::new();
    std::fs::File::from(report)
        .read_to_string(&mut out)
        .map_err(|e| RuntimeError::io("read shim report", dir, e))?;
    handle(cfg, &out)
}

/// Everything before the shim: the directory, no live previous run, the config file.
fn prepare(cfg: &ContainerConfig) -> Result<()> {
    cfg.validate()?;
    let dir = &cfg.container_dir;
    let paths = ContainerPaths::new(dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| RuntimeError::io("mkdir", dir, e))?;
    if let Ok(old) = StateFile::load(dir) {
        // A previous run's shim may still be releasing its cgroup (same path as ours) after
        // recording the exit: let it finish first.
        if let (Status::Exited, false, Some(shim)) = (old.state.status, old.init_alive(), old.shim)
        {
            shim.wait_gone(Duration::from_secs(10));
        }
        if old.shim_alive() || old.init_alive() {
            return Err(RuntimeError::InvalidState {
                dir: dir.clone(),
                op: "create",
                status: old.effective().status.to_string(),
            });
        }
    }
    // The previous run's state stays readable (exited) until the new shim atomically
    // replaces it, so `state()` never finds no state while a container is set up again.
    let _ = std::fs::remove_file(paths.socket());
    let caps = cfg.security.capabilities()?;
    match cfg.security.effective_seccomp() {
        Some(s) => {
            if let Some(code) = crate::seccomp::bpf(s, &caps)? {
                persist::write_atomic_with(
                    &paths.seccomp_bpf(),
                    &code,
                    persist::Durability::Volatile,
                )?;
            }
        }
        None => {
            let _ = std::fs::remove_file(paths.seccomp_bpf());
        }
    }
    persist::write_json(&paths.config(), cfg, persist::Durability::Volatile)
}

/// The container from the shim's one-line report.
fn handle(cfg: &ContainerConfig, out: &str) -> Result<ContainerHandle> {
    let dir = &cfg.container_dir;
    let paths = ContainerPaths::new(dir);
    let line = out.lines().next().unwrap_or("");
    match serde_json::from_str::<ShimReport>(line) {
        Ok(ShimReport::Ready { pid }) => Ok(ContainerHandle {
            dir: dir.clone(),
            pid,
        }),
        Ok(ShimReport::Failed(f)) => Err(f.into_error()),
        Err(_) => Err(RuntimeError::Protocol {
            path: paths.shim_log(),
            reason: format!("shim exited without a report (got {line:?}); see its log"),
        }),
    }
}
