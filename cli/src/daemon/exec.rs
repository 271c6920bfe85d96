//! The exec service: `docker exec` sessions in running containers.
//!
//! Each session is also recorded in `<container dir>/execs/<id>.json` (atomically, at
//! create, start and exit), so `exec inspect` still answers after a daemon restart (live
//! restore): a session whose process still runs reads as running until it ends; an exit
//! the daemon did not see has no exit code. The streams of a running session end with the
//! daemon that served them, as with dockerd.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::DaemonError;
use super::events::{container_attributes, EventLog};
use super::exec_bridge::ExecIo;
use super::names;
use super::paths::Paths;
use super::record::ContainerRecord;
use super::status::Lifecycle;

/// Docker keeps this much of a healthcheck probe's output (`maxOutputLen`).
pub const PROBE_OUTPUT_MAX: usize = 4096;

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
    /// The container's event attributes, for `exec_*` events (empty for a session restored
    /// from an earlier daemon, which emits none).
    actor: Vec<(String, String)>,
}

pub struct ExecService {
    paths: Paths,
    /// Our own binary, re-executed as the exec helper.
    exe: PathBuf,
    execs: Arc<Mutex<HashMap<String, ExecEntry>>>,
    events: Arc<EventLog>,
}

/// dockerd's `exec_create: CMD ARGS` / `exec_start: CMD ARGS` action (a space after the
/// command even without arguments, as dockerd writes it).
fn exec_action(action: &str, cmd: &[String]) -> String {
    let (first, rest) = cmd
        .split_first()
        .map_or(("", &[][..]), |(f, r)| (f.as_str(), r));
    format!("{action}: {first} {}", rest.join(" "))
}

impl ExecService {
    pub fn new(paths: Paths, exe: PathBuf, events: Arc<EventLog>) -> ExecService {
        ExecService {
            paths,
            exe,
            execs: Arc::new(Mutex::new(HashMap::new())),
            events,
        }
    }

    /// Emits an `exec_*` event of session `exec_id` with `extra` attributes beside
    /// `execID`.
    fn emit(
        events: &EventLog,
        e: &ExecEntry,
        action: &str,
        exec_id: &str,
        extra: &[(&str, String)],
    ) {
        if e.actor.is_empty() {
            return;
        }
        let attrs = e
            .actor
            .iter()
            .cloned()
            .chain([("execID".to_string(), exec_id.to_string())])
            .chain(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        events.emit("container", action, &e.container_id, attrs);
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
                        actor: Vec::new(),
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
        // Never ignored silently: an exec gets the container's own capabilities only.
        if config.privileged == Some(true) {
            return Err(DaemonError::invalid(
                "exec --privileged is not supported: the process gets the container's capabilities",
            ));
        }
        let id = names::new_id();
        let entry = ExecEntry {
            container_id: r.id.clone(),
            config,
            running: false,
            exit_code: None,
            pid: None,
            pty: None,
            actor: container_attributes(r),
        };
        Self::save(&self.paths, &id, &entry);
        let action = exec_action(
            "exec_create",
            entry.config.cmd.as_deref().unwrap_or_default(),
        );
        Self::emit(&self.events, &entry, &action, &id, &[]);
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
        let ec_args = ec.args.clone();
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
                let action = exec_action("exec_start", &ec_args);
                Self::emit(&self.events, e, &action, exec_id, &[]);
            }
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let execs = self.execs.clone();
        let events = self.events.clone();
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
                Self::emit(
                    &events,
                    e,
                    "exec_die",
                    &exec_id,
                    &[("exitCode", code.to_string())],
                );
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

    /// Runs a healthcheck probe `argv` in the running container `container_id` (its user,
    /// environment and working directory), waiting at most `timeout`. Returns the exit code
    /// and the combined stdout+stderr, cut at [`PROBE_OUTPUT_MAX`] bytes; `None` for the
    /// code when the probe was killed at the timeout. Probes are not exec sessions (no
    /// `ExecIDs` entry), so they never show in `exec inspect`.
    pub async fn probe(
        &self,
        container_id: &str,
        argv: Vec<String>,
        timeout: Duration,
    ) -> Result<(Option<i32>, String), DaemonError> {
        let ec = skiff_runtime::ExecConfig {
            args: argv,
            env: Vec::new(),
            cwd: String::new(),
            user: String::new(),
            tty: false,
            open_stdin: false,
            console_size: None,
        };
        let dir = self.paths.container_dir(container_id);
        let exe = self.exe.clone();
        tokio::task::spawn_blocking(move || -> Result<_, DaemonError> {
            let mut p = skiff_runtime::exec(&exe, &dir, &ec)
                .map_err(|e| DaemonError::runtime("health probe", e))?;
            let out = Arc::new(Mutex::new(Vec::new()));
            let readers: Vec<_> = [
                p.stdout
                    .take()
                    .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
                p.stderr
                    .take()
                    .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
            ]
            .into_iter()
            .flatten()
            .map(|mut r| {
                let out = out.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = r.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let mut o = out.lock().expect("probe output lock");
                        let room = PROBE_OUTPUT_MAX.saturating_sub(o.len());
                        o.extend_from_slice(&buf[..n.min(room)]);
                    }
                })
            })
            .collect();
            let deadline = std::time::Instant::now() + timeout;
            let code = loop {
                match p.child.try_wait() {
                    Ok(Some(_)) => break p.wait().ok(),
                    Ok(None) if std::time::Instant::now() >= deadline => {
                        // The probe's process first, so the helper reports it killed.
                        if let Some(c) = exec_child(p.pid() as i32) {
                            // SAFETY: kill(2) on the helper's own child.
                            unsafe { libc::kill(c, libc::SIGKILL) };
                        }
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        break None;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    Err(_) => break None,
                }
            };
            // After a timeout a process the probe started may still hold the pipes: its
            // readers are left to end on their own.
            if code.is_some() {
                for r in readers {
                    let _ = r.join();
                }
            }
            let out = out.lock().expect("probe output lock");
            Ok((code, String::from_utf8_lossy(&out).into_owned()))
        })
        .await
        .map_err(DaemonError::join)?
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

    /// The ids of `container_id`'s exec sessions that have not ended (created or running),
    /// sorted: container inspect's `ExecIDs`, as dockerd drops a session from its
    /// container's list when the process exits.
    pub fn ids_of(&self, container_id: &str) -> Vec<String> {
        let execs = self.execs.lock().expect("execs lock");
        let mut ids: Vec<String> = execs
            .iter()
            .filter(|(_, e)| e.container_id == container_id && e.exit_code.is_none())
            .filter(|(_, e)| e.running || e.pid.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// `exec inspect` in Docker's shape (API v1.43 `ExecInspectResponse`): `ExitCode` null
    /// until the process ended, `Pid` the exec'd process's host pid (0 before start),
    /// `ProcessConfig` its command line.
    pub async fn inspect(&self, exec_id: &str) -> Result<serde_json::Value, DaemonError> {
        let view = |e: &ExecEntry| {
            let cmd = e.config.cmd.clone().unwrap_or_default();
            let mut process = serde_json::json!({
                "tty": e.config.tty.unwrap_or(false),
                "entrypoint": cmd.first().cloned().unwrap_or_default(),
                "arguments": cmd.get(1..).unwrap_or_default(),
                "privileged": e.config.privileged.unwrap_or(false),
            });
            if let Some(user) = e.config.user.as_ref().filter(|u| !u.is_empty()) {
                process["user"] = user.clone().into();
            }
            serde_json::json!({
                "ID": exec_id,
                "Running": e.running,
                "ExitCode": e.exit_code,
                "ProcessConfig": process,
                "OpenStdin": e.config.attach_stdin.unwrap_or(false),
                "OpenStderr": e.config.attach_stderr.unwrap_or(false),
                "OpenStdout": e.config.attach_stdout.unwrap_or(false),
                "CanRemove": false,
                "ContainerID": e.container_id,
                "DetachKeys": e.config.detach_keys.clone().unwrap_or_default(),
                "Pid": e.pid.map_or(0, exec_pid),
            })
        };
        // The exit code lands a moment after the streams end (the helper outlives its
        // child by a waitpid): when the exec'd process is gone, wait for it briefly. A
        // process that still runs answers at once.
        for _ in 0..200 {
            {
                let execs = self.execs.lock().expect("execs lock");
                let e = execs
                    .get(exec_id)
                    .ok_or_else(|| DaemonError::NoSuchExec(exec_id.to_string()))?;
                let finishing = e.running && e.pid.is_some_and(|h| exec_child(h).is_none());
                if !finishing {
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

/// The process the exec helper `helper` runs in the container (its only child), while it
/// runs.
fn exec_child(helper: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{helper}/task/{helper}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The host pid Docker reports for an exec: the exec'd process (the helper's child), or
/// the helper itself before it has forked and after the process ended.
fn exec_pid(helper: i32) -> i64 {
    exec_child(helper).unwrap_or(helper) as i64
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
