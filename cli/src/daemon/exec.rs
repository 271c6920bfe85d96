//! The exec service: `docker exec` sessions in running containers.
//!
//! Each session is also recorded in `<container dir>/execs/<id>.json` (atomically, at
//! create, start and exit), so `exec inspect` still answers after a daemon restart (live
//! restore): a session whose process still runs reads as running until it ends; an exit
//! the daemon did not see has no exit code. The streams of a running session end with the
//! daemon that served them, as with dockerd.

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

/// What a daemon restart keeps of an exec session.
#[derive(serde::Serialize, serde::Deserialize)]
struct ExecRecord {
    container_id: String,
    config: bollard::models::ExecConfig,
    pid: Option<i32>,
    exit_code: Option<i64>,
}

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

    /// Loads the sessions recorded by earlier daemons (after a restart). Must run inside
    /// the tokio runtime: sessions still running are watched until they end.
    pub fn restore(&self) {
        let Ok(containers) = std::fs::read_dir(self.paths.containers_dir()) else {
            return;
        };
        for c in containers.flatten() {
            let Ok(files) = std::fs::read_dir(c.path().join("execs")) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                let Some(id) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_string)
                else {
                    continue;
                };
                let Some(r) = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<ExecRecord>(&b).ok())
                else {
                    tracing::warn!(path = %path.display(), "unreadable exec record; ignored");
                    continue;
                };
                let pidfd = match (r.pid, r.exit_code) {
                    (Some(pid), None) => exec_process(pid),
                    _ => None,
                };
                let running = pidfd.is_some();
                tracing::debug!(exec = %id, running, "restored exec session");
                self.execs.lock().expect("execs lock").insert(
                    id.clone(),
                    ExecEntry {
                        container_id: r.container_id,
                        config: r.config,
                        running,
                        exit_code: r.exit_code,
                        pid: r.pid,
                        pty: None,
                    },
                );
                if let Some(pidfd) = pidfd {
                    let execs = self.execs.clone();
                    tokio::task::spawn_blocking(move || {
                        wait_readable(&pidfd);
                        if let Some(e) = execs.lock().expect("execs lock").get_mut(&id) {
                            e.running = false;
                        }
                    });
                }
            }
        }
    }

    /// Records `e` for the next daemon; a failure only costs `exec inspect` after a
    /// restart, so it is logged, not returned.
    fn save(paths: &Paths, id: &str, e: &ExecEntry) {
        let dir = paths.container_dir(&e.container_id).join("execs");
        let record = ExecRecord {
            container_id: e.container_id.clone(),
            config: e.config.clone(),
            pid: e.pid,
            exit_code: e.exit_code,
        };
        let saved = std::fs::create_dir_all(&dir)
            .map_err(|err| DaemonError::io("creating", &dir, err))
            .and_then(|_| {
                let bytes = serde_json::to_vec(&record).expect("exec record serializes");
                super::volumes::write_atomic(&dir.join(format!("{id}.json")), &bytes)
            });
        if let Err(err) = saved {
            tracing::warn!(exec = %id, "recording exec session: {err}");
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
        let entry = ExecEntry {
            container_id: r.id.clone(),
            config,
            running: false,
            exit_code: None,
            pid: None,
            pty: None,
        };
        Self::save(&self.paths, &id, &entry);
        self.execs
            .lock()
            .expect("execs lock")
            .insert(id.clone(), entry);
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
                Self::save(&self.paths, exec_id, e);
            }
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let execs = self.execs.clone();
        let exec_id = exec_id.to_string();
        let paths = self.paths.clone();
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
                Self::save(&paths, &exec_id, e);
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

/// A pidfd of `pid` if it is still an exec helper (`skiff __exec ...`).
fn exec_process(pid: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open(2), no flags; a returned descriptor is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if fd < 0 {
        return None;
    }
    // SAFETY: just returned by the kernel.
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    (cmdline.split(|&b| b == 0).nth(1) == Some(skiff_runtime::entry::EXEC_ARG.as_bytes()))
        .then_some(pidfd)
}

/// Blocks until the process of `pidfd` has exited.
fn wait_readable(pidfd: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    loop {
        let mut p = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r > 0 || (r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            return;
        }
    }
}
