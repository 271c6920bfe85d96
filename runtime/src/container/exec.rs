//! `exec`: a new process in a running container, run by a fresh `__exec` process of our
//! binary (never a fork of the daemon).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};

use crate::config::{ExecConfig, WinSize};
use crate::error::{Result, RuntimeError};
use crate::state::{StateFile, Status};

/// A running exec. Without a tty, its stdio are the pipes here; with one, `pty` is the
/// master side of its terminal (read output from it, write input to it).
pub struct ExecProcess {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
    pub pty: Option<OwnedFd>,
}

impl ExecProcess {
    /// Waits for the exec'd process: its exit code, 128+N for signal N, 126/127 when the
    /// command could not be run (with a message on its stderr), 125 for other setup errors.
    pub fn wait(&mut self) -> Result<i32> {
        let st = self
            .child
            .wait()
            .map_err(|e| RuntimeError::io("wait exec", format!("pid {}", self.child.id()), e))?;
        use std::os::unix::process::ExitStatusExt;
        Ok(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
    }

    /// Host pid of the `__exec` process (the exec'd process's parent).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sets the exec's pty size (no-op without a tty).
    pub fn resize(&self, rows: u16, cols: u16) {
        if let Some(pty) = &self.pty {
            crate::init::set_winsize(pty.as_raw_fd(), WinSize { rows, cols });
        }
    }
}

/// Starts `cfg` in the running container at `dir`, using `exe` (see [`crate::create`]).
pub fn exec(exe: &Path, dir: &Path, cfg: &ExecConfig) -> Result<ExecProcess> {
    if cfg.args.is_empty() {
        return Err(RuntimeError::InvalidConfig {
            field: "args",
            reason: "no command given".into(),
        });
    }
    let file = StateFile::load(dir)?;
    let st = file.effective();
    let init = match (st.status, file.init) {
        (Status::Running, Some(i)) if i.is_alive() => i,
        (status, _) => {
            return Err(RuntimeError::InvalidState {
                dir: dir.to_path_buf(),
                op: "exec",
                status: status.to_string(),
            })
        }
    };
    let json = serde_json::to_string(cfg).map_err(|e| RuntimeError::Json {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut cmd = Command::new(exe);
    cmd.arg(crate::entry::EXEC_ARG)
        .arg(dir)
        .arg(init.pid.to_string())
        .arg(init.start_time.to_string())
        .arg(json);
    let mut pty = None;
    if cfg.tty {
        let (master, slave) = super::exec_pty::container_pty(init.pid, cfg.console_size)?;
        let slave = |step| {
            slave
                .try_clone()
                .map(Stdio::from)
                .map_err(|e| RuntimeError::io(step, "pty", e))
        };
        cmd.stdin(slave("dup pty")?)
            .stdout(slave("dup pty")?)
            .stderr(slave("dup pty")?);
        pty = Some(master);
    } else {
        cmd.stdin(if cfg.open_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| RuntimeError::io("spawn exec", exe, e))?;
    Ok(ExecProcess {
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        child,
        pty,
    })
}
