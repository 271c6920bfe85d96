//! `kill` and `stop`: signals to the container's init, addressed through a pidfd that is
//! verified against the recorded start time, so a recycled pid is never signalled.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::container::wait::wait_timeout;
use crate::error::{Result, RuntimeError};
use crate::state::{ContainerState, ProcIdentity, StateFile, Status};

fn not_running(dir: &Path, status: Status) -> RuntimeError {
    RuntimeError::InvalidState {
        dir: dir.to_path_buf(),
        op: "kill",
        status: status.to_string(),
    }
}

/// Sends `sig` to the init of `ident` if, and only if, it is still that process.
pub(crate) fn signal_identity(ident: &ProcIdentity, sig: Signal) -> std::io::Result<()> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, ident.pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if !ident.is_alive() {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: pidfd_send_signal on our pidfd with no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as i32,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `sig` to the container's main process (running containers only, as Docker).
/// Note that the main process is PID 1 of its namespace: signals it has no handler for
/// (other than SIGKILL) are ignored by the kernel, exactly as under Docker.
pub fn kill(dir: &Path, sig: Signal) -> Result<()> {
    let file = StateFile::load(dir)?;
    let st = file.effective();
    let ident = match (st.status, file.init) {
        (Status::Running, Some(i)) => i,
        (status, _) => return Err(not_running(dir, status)),
    };
    signal_identity(&ident, sig).map_err(|e| {
        if e.raw_os_error() == Some(libc::ESRCH) {
            not_running(dir, Status::Exited)
        } else {
            RuntimeError::io("signal", format!("/proc/{}", ident.pid), e)
        }
    })
}

/// Sends `stop_signal`, waits up to `timeout` for the exit, then SIGKILLs; returns the final
/// state. Stopping a container that is not running is not an error.
pub fn stop(dir: &Path, timeout: Duration, stop_signal: Signal) -> Result<ContainerState> {
    let file = StateFile::load(dir)?;
    if file.effective().status != Status::Running {
        return crate::state::state(dir);
    }
    let _ = kill(dir, stop_signal);
    if let Some(st) = wait_timeout(dir, timeout)? {
        return Ok(st);
    }
    if let Some(ident) = file.init {
        let _ = signal_identity(&ident, Signal::SIGKILL);
    }
    loop {
        if let Some(st) = wait_timeout(dir, Duration::from_secs(10))? {
            return Ok(st);
        }
        tracing::warn!(dir = %dir.display(), "container did not exit after SIGKILL; still waiting");
    }
}
