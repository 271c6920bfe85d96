//! The exec service: `docker exec` sessions in running containers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::DaemonError;
use super::exec_bridge::ExecIo;
use super::names;
use super::paths::Paths;
use super::record::ContainerRecord;
use super::status::Lifecycle;

/// One `docker exec` session.
struct ExecEntry {
    container_id: String,
    config: bollard::models::ExecConfig,
    running: bool,
    exit_code: Option<i64>,
    pid: Option<i32>,
    /// The exec's pty master, for resize.
    pty: Option<Arc<std::os::fd::OwnedFd>>,
}

pub struct ExecService {
    paths: Paths,
    /// Our own binary, re-executed as the exec helper.
    exe: PathBuf,
    execs: Arc<Mutex<HashMap<String, ExecEntry>>>,
}

impl ExecService {
    pub fn new(paths: Paths, exe: PathBuf) -> ExecService {
        ExecService {
            paths,
            exe,
            execs: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Registers an exec in a running container; returns its id.
    pub fn create(
        &self,
        r: &ContainerRecord,
        state: &skiff_runtime::ContainerState,
        config: bollard::models::ExecConfig,
    ) -> Result<String, DaemonError> {
        Lifecycle::new(r, state).can_exec()?;
        if skiff_runtime::control::is_frozen(&self.paths.container_dir(&r.id)) {
            return Err(DaemonError::ExecPaused { id: r.id.clone() });
        }
        if config.cmd.as_ref().is_none_or(|c| c.is_empty()) {
            return Err(DaemonError::invalid("No exec command specified"));
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

    /// Starts the exec; returns whether it has a tty, and its streams.
    pub async fn start(&self, exec_id: &str) -> Result<(bool, ExecIo), DaemonError> {
        let (container_id, cfg) = {
            let execs = self.execs.lock().expect("execs lock");
            let e = execs
                .get(exec_id)
                .ok_or_else(|| DaemonError::NoSuchExec(exec_id.to_string()))?;
            if e.running || e.exit_code.is_some() {
                return Err(DaemonError::ExecAlreadyRan(exec_id.to_string()));
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
            .map_err(DaemonError::join)?
            .map_err(|e| DaemonError::runtime("exec", e))?;
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
        let execs = self.execs.clone();
        let exec_id = exec_id.to_string();
        tokio::task::spawn_blocking(move || {
            use std::os::unix::process::ExitStatusExt;
            let code = match child.wait() {
                Ok(st) => st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)),
                Err(_) => -1,
            };
            if let Some(e) = execs.lock().expect("execs lock").get_mut(&exec_id) {
                e.running = false;
                e.exit_code = Some(code as i64);
                e.pty = None;
            }
            let _ = done_tx.send(());
        });
        Ok((
            tty,
            ExecIo {
                stdin,
                stdout,
                stderr,
                pty,
                done: done_rx,
            },
        ))
    }

    pub fn resize(&self, exec_id: &str, rows: u16, cols: u16) -> Result<(), DaemonError> {
        let execs = self.execs.lock().expect("execs lock");
        let e = execs
            .get(exec_id)
            .ok_or_else(|| DaemonError::NoSuchExec(exec_id.to_string()))?;
        if let Some(pty) = &e.pty {
            super::exec_bridge::set_winsize(pty, rows, cols);
        }
        Ok(())
    }

    pub async fn inspect(
        &self,
        exec_id: &str,
    ) -> Result<bollard::models::ExecInspectResponse, DaemonError> {
        let view = |e: &ExecEntry| bollard::models::ExecInspectResponse {
            id: Some(exec_id.to_string()),
            running: Some(e.running),
            exit_code: e.exit_code,
            container_id: Some(e.container_id.clone()),
            pid: e.pid.map(|p| p as i64),
            open_stdin: e.config.attach_stdin,
            ..Default::default()
        };
        // The exit code lands a moment after the stream ends: give it a short while.
        for _ in 0..200 {
            {
                let execs = self.execs.lock().expect("execs lock");
                let e = execs
                    .get(exec_id)
                    .ok_or_else(|| DaemonError::NoSuchExec(exec_id.to_string()))?;
                if !e.running || e.exit_code.is_some() {
                    return Ok(view(e));
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let execs = self.execs.lock().expect("execs lock");
        let e = execs
            .get(exec_id)
            .ok_or_else(|| DaemonError::NoSuchExec(exec_id.to_string()))?;
        Ok(view(e))
    }
}
