//! The shim launcher: one process, exec'd once from our binary, that forks a container's
//! shim on request. Exec'ing and loading the (large) binary for every container costs ~3 ms
//! of a ~25 ms `run`; a fork of this small, single-threaded process costs a fraction of one.
//!
//! The daemon (multi-threaded) still never forks to run Rust code: the launcher is a fresh
//! process, and what it forks runs the same `shim::main` an exec'd shim runs, with the
//! report pipe as its stdout. Requests travel on a private socketpair: the container
//! directory as the payload, the report pipe's write end as SCM_RIGHTS. The launcher exits
//! when the daemon closes its end (or dies); shims it forked are detached (their own
//! session; SIGCHLD ignored here, so the kernel reaps them) and live on.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::unistd::{fork, ForkResult};

use crate::error::{Result, RuntimeError};

/// argv[1] of the launcher.
pub const LAUNCHER_ARG: &str = "__shim-launcher";
/// The launcher's end of the request socket.
pub(crate) const LAUNCHER_FD: RawFd = 3;

/// The daemon's handle on its launcher, started on first use and again if it died.
pub struct ShimLauncher {
    exe: PathBuf,
    running: Mutex<Option<Running>>,
}

struct Running {
    sock: OwnedFd,
    child: Child,
}

impl ShimLauncher {
    /// A launcher that runs `exe __shim-launcher` (the caller's binary, whose `main` calls
    /// [`crate::entry::run_if_internal`] first). Nothing starts until the first container.
    pub fn new(exe: &Path) -> ShimLauncher {
        ShimLauncher {
            exe: exe.to_path_buf(),
            running: Mutex::new(None),
        }
    }

    /// The launcher process, while one runs.
    pub fn pid(&self) -> Option<u32> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.as_ref().map(|r| r.child.id())
    }

    /// Has a shim forked for `dir`; returns the read end of its report pipe (see
    /// `shim::report`), which reaches EOF once the shim has reported.
    pub(crate) fn launch(&self, dir: &Path) -> Result<OwnedFd> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| RuntimeError::io("pipe", dir, e.into()))?;
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        // A launcher that died (killed, or out of memory) is replaced once.
        for _ in 0..2 {
            let r = match &mut *running {
                Some(r) => r,
                slot @ None => slot.insert(self.spawn()?),
            };
            let iov = [IoSlice::new(dir.as_os_str().as_bytes())];
            let fds = [write.as_raw_fd()];
            let sent = sendmsg::<()>(
                r.sock.as_raw_fd(),
                &iov,
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            );
            match sent {
                Ok(_) => return Ok(read),
                Err(e) => {
                    tracing::warn!("shim launcher gone ({e}); starting another");
                    if let Some(mut dead) = running.take() {
                        let _ = dead.child.kill();
                        let _ = dead.child.wait();
                    }
                }
            }
        }
        Err(RuntimeError::io(
            "reach shim launcher",
            &self.exe,
            std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        ))
    }

    fn spawn(&self) -> Result<Running> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| RuntimeError::io("socketpair", &self.exe, e.into()))?;
        let theirs_raw = theirs.as_raw_fd();
        let mut cmd = Command::new(&self.exe);
        cmd.arg(LAUNCHER_ARG)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: only dup2 (async-signal-safe) between fork and exec; dup2 leaves the new
        // descriptor without close-on-exec, so the launcher finds its socket at fd 3.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(theirs_raw, LAUNCHER_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| RuntimeError::io("spawn shim launcher", &self.exe, e))?;
        drop(theirs);
        Ok(Running { sock: ours, child })
    }
}

impl Drop for ShimLauncher {
    fn drop(&mut self) {
        let running = self.running.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(Running { sock, mut child }) = running.take() {
            drop(sock); // EOF: the launcher exits
            let _ = child.wait();
        }
    }
}

/// The launcher process: forks a shim per request until the daemon's end closes. Never
/// returns.
pub(crate) fn serve() -> ! {
    // The shims are this process's children: with SIGCHLD ignored the kernel reaps each one
    // as it exits, so none lingers as a zombie and no second fork is needed to detach them.
    // SAFETY: setting the disposition to SIG_IGN installs no handler.
    if let Err(e) = unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) } {
        eprintln!("shim launcher: ignoring SIGCHLD: {e}");
        std::process::exit(1);
    }
    let mut buf = vec![0u8; 8192];
    loop {
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (n, report) = match recvmsg::<()>(
            LAUNCHER_FD,
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut report = None;
                for c in msg.cmsgs().into_iter().flatten() {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        for f in fds {
                            // SAFETY: the kernel installed this descriptor for us.
                            let owned = unsafe { OwnedFd::from_raw_fd(f) };
                            report.get_or_insert(owned);
                        }
                    }
                }
                (msg.bytes, report)
            }
            Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => continue,
            Err(_) => std::process::exit(1),
        };
        if n == 0 {
            std::process::exit(0); // the daemon closed its end
        }
        let Some(report) = report else { continue };
        let dir = PathBuf::from(std::ffi::OsStr::from_bytes(&buf[..n]));
        // Parsed here at most once a second instead of in every shim and init.
        crate::mount_table::warm();
        // SAFETY: this process is single-threaded; the child runs the shim and never returns.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // The shim waits for its init: children must be reapable again.
                // SAFETY: restoring the default disposition installs no handler.
                if unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) }.is_err() {
                    // SAFETY: leaving the forked child.
                    unsafe { libc::_exit(1) }
                }
                let _ = nix::unistd::close(LAUNCHER_FD);
                if nix::unistd::dup2(report.as_raw_fd(), 1).is_err() {
                    // SAFETY: leaving the forked child.
                    unsafe { libc::_exit(1) }
                }
                drop(report);
                // Shown by ps/top as the shim it is, not as a second launcher.
                // SAFETY: PR_SET_NAME with a NUL-terminated name of at most 16 bytes.
                unsafe { libc::prctl(libc::PR_SET_NAME, c"skiff-shim".as_ptr(), 0, 0, 0) };
                set_command_line(&dir);
                crate::shim::main(&dir, crate::shim::Origin::Launcher)
            }
            // The report pipe's write end closes here: create() sees EOF without a report
            // and says so.
            Ok(ForkResult::Parent { .. }) | Err(_) => drop(report),
        }
    }
}

/// Rewrites this forked shim's command line (what `ps` shows) from the launcher's
/// `skiff __shim-launcher` to `skiff __shim ID` (the container id, cut to 12 characters,
/// when it fits; else `__shim` alone), in place: the kernel shows the bytes between the
/// process's `arg_start` and `arg_end`, and the new text is never longer than the old.
fn set_command_line(dir: &Path) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may hold spaces) start at field 3; arg_start
    // and arg_end are fields 48 and 49.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (Some(start), Some(end)) = (
        fields.get(45).and_then(|f| f.parse::<usize>().ok()),
        fields.get(46).and_then(|f| f.parse::<usize>().ok()),
    ) else {
        return;
    };
    let Some(len) = end.checked_sub(start).filter(|l| *l > 0) else {
        return;
    };
    // SAFETY: [arg_start, arg_end) is this process's own argument area on its initial
    // stack, readable and writable; nothing in this process reads it after startup.
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
    let Some(argv0_len) = area.iter().position(|&b| b == 0) else {
        return;
    };
    let id: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(12).collect())
        .unwrap_or_default();
    let with_id = format!("skiff\0__shim\0{id}\0");
    let text: Vec<u8> = if with_id.len() <= len {
        with_id.into_bytes()
    } else {
        // Keep argv[0]; replace argv[1] only (`__shim` is shorter than the launcher's).
        let mut t = area[..=argv0_len].to_vec();
        t.extend_from_slice(b"__shim\0");
        t
    };
    if text.len() > len {
        return;
    }
    area[..text.len()].copy_from_slice(&text);
    area[text.len()..].fill(0);
}
