//! The terminal of `exec -t`, opened in the container's own devpts (as the init's console
//! is), so `tty` inside names a `/dev/pts/N` that exists there and the host's devpts is not
//! exposed.
//!
//! The daemon opens `<init's root>/dev/ptmx` without entering the container: resolved with
//! `openat2(RESOLVE_IN_ROOT)`, so symlinks the container planted cannot lead to host files,
//! first as `O_PATH` and checked to be the pty multiplexer (c 5:2) before it is opened for
//! real, so a device node the container made in its place is never opened. The slave comes
//! from the master (`TIOCGPTPEER`), not from a path.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, major, minor, SFlag};

use crate::config::WinSize;
use crate::error::{Result, RuntimeError};

/// The pty multiplexer's device number.
const PTMX: (u64, u64) = (5, 2);

/// A new pty of the container whose init is `init_pid`: (master, slave).
pub(crate) fn container_pty(init_pid: i32, size: Option<WinSize>) -> Result<(OwnedFd, OwnedFd)> {
    let root_path = format!("/proc/{init_pid}/root");
    let root = std::fs::File::open(&root_path)
        .map_err(|e| RuntimeError::io("open container root", &root_path, e))?;
    let shown = format!("{root_path}/dev/ptmx");
    let located = openat2(
        root.as_raw_fd(),
        "dev/ptmx",
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS),
    )
    .map_err(|e| RuntimeError::sys("find the container's /dev/ptmx", &shown, e))?;
    // SAFETY: openat2 returned a new descriptor we own.
    let located = unsafe { OwnedFd::from_raw_fd(located) };
    let st = fstat(located.as_raw_fd()).map_err(|e| RuntimeError::sys("stat", &shown, e))?;
    let is_char = st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFCHR.bits();
    if !is_char || (major(st.st_rdev), minor(st.st_rdev)) != PTMX {
        return Err(RuntimeError::InvalidConfig {
            field: "tty",
            reason: format!("{shown} is not the pty multiplexer; the container replaced it"),
        });
    }
    let reopen = format!("/proc/self/fd/{}", located.as_raw_fd());
    let master = nix::fcntl::open(
        reopen.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| RuntimeError::sys("open", &shown, e))?;
    // SAFETY: open returned a new descriptor we own.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    // SAFETY: unlockpt/TIOCGPTPEER on the master we just opened.
    let slave = unsafe {
        if libc::unlockpt(master.as_raw_fd()) != 0 {
            return Err(RuntimeError::sys("unlockpt", &shown, nix::Error::last()));
        }
        let fd = libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(RuntimeError::sys(
                "open pty slave",
                &shown,
                nix::Error::last(),
            ));
        }
        OwnedFd::from_raw_fd(fd)
    };
    if let Some(ws) = size {
        crate::init::set_winsize(slave.as_raw_fd(), ws);
    }
    Ok((master, slave))
}
