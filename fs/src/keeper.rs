//! The descriptor keeper: a tiny process per image mount that holds the mount's `/dev/fuse`
//! descriptor so the FUSE connection outlives the daemon (live restore).
//!
//! The kernel keeps a FUSE connection, and every request a server has read but not answered,
//! while any process holds the descriptor the requests were read from. The keeper holds the
//! very open file description the daemon reads from (the daemon never reads from a
//! `FUSE_DEV_IOC_CLONE`d descriptor, whose unanswered requests the kernel fails when it
//! closes). A new daemon takes the descriptor over with `pidfd_getfd(2)` (Linux 5.6), keyed
//! by the keeper's pid and checked by its command line (`skiff __fuse-keeper MOUNTPOINT`).
//!
//! The keeper sleeps in `poll(2)` asking for no event: only the connection's end
//! (`POLLERR`, after the last unmount or an abort) wakes it, and then it exits, so a keeper
//! never outlives its mount. It is exec'd fresh (never a fork of the multi-threaded daemon),
//! double-forks so it is nobody's zombie, and runs in a session of its own so signals aimed
//! at the daemon's process group do not reach it.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::{FsError, Result};

/// argv[1] of the keeper.
pub const KEEPER_ARG: &str = "__fuse-keeper";
/// The kept `/dev/fuse` descriptor in the keeper.
const KEEPER_FD: RawFd = 3;

fn keeper_err(path: &Path, step: &'static str, source: std::io::Error) -> FsError {
    FsError::Keeper {
        path: path.to_path_buf(),
        step,
        source,
    }
}

/// Call first thing in `main`: if argv[1] is [`KEEPER_ARG`], runs the keeper and never
/// returns; otherwise returns at once.
pub fn run_if_keeper() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() != Some(std::ffi::OsStr::new(KEEPER_ARG)) {
        return;
    }
    // SAFETY: close_range on descriptors this fresh process does not use (all but stdio and
    // the kept one).
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            (KEEPER_FD + 1) as u32,
            u32::MAX,
            0u32,
        );
    }
    // SAFETY: still single-threaded (nothing has started a thread yet): the child only
    // makes system calls and exits.
    match unsafe { libc::fork() } {
        -1 => std::process::exit(1),
        0 => keep(),
        child => {
            // The spawner reads the keeper's pid, then reaps this intermediate process.
            let _ = writeln!(std::io::stdout(), "{child}");
            std::process::exit(0)
        }
    }
}

/// The keeper proper: detached, quiet, waiting for the connection to end.
fn keep() -> ! {
    // SAFETY: plain system calls in a single-threaded child.
    unsafe {
        libc::setsid();
        // Pin no directory of the daemon's.
        libc::chdir(c"/".as_ptr());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    loop {
        let mut pfd = libc::pollfd {
            fd: KEEPER_FD,
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if r < 0 || pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            // SAFETY: leaving the process.
            unsafe { libc::_exit(0) }
        }
    }
}

/// Starts a keeper of `dev` (an open, mounted `/dev/fuse` descriptor) for `mountpoint`,
/// running `exe` (our binary, whose `main` calls [`run_if_keeper`]). Returns its pid.
///
/// Start it after mount(2): before that the descriptor has no connection and the keeper
/// would see its end at once.
pub fn spawn_keeper(exe: &Path, dev: BorrowedFd<'_>, mountpoint: &Path) -> Result<u32> {
    let raw = dev.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg(KEEPER_ARG)
        .arg(mountpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: only dup2 (async-signal-safe) between fork and exec. dup2 onto another number
    // clears close-on-exec; when `raw` already is 3, clear it by hand.
    unsafe {
        cmd.pre_exec(move || {
            if raw == KEEPER_FD {
                if libc::fcntl(raw, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw, KEEPER_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| keeper_err(mountpoint, "starting the descriptor keeper", e))?;
    let mut out = String::new();
    let read = child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    let status = child
        .wait()
        .map_err(|e| keeper_err(mountpoint, "waiting for the descriptor keeper", e))?;
    let pid = out.trim().parse::<u32>().ok();
    match (read, status.success(), pid) {
        (Some(Ok(_)), true, Some(pid)) => Ok(pid),
        _ => Err(keeper_err(
            mountpoint,
            "starting the descriptor keeper",
            std::io::Error::other(format!("it exited with {status} and said {out:?}")),
        )),
    }
}

/// A pidfd of the keeper `pid` of `mountpoint`, checked by its command line (a recycled pid
/// is refused).
fn open_keeper(pid: u32, mountpoint: &Path) -> Result<OwnedFd> {
    // SAFETY: pidfd_open(2) with no flags; a returned descriptor is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
    if fd < 0 {
        return Err(keeper_err(
            mountpoint,
            "finding the descriptor keeper",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: just returned by the kernel.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map_err(|e| keeper_err(mountpoint, "reading the keeper's command line", e))?;
    if cmdline.is_empty() && is_zombie(pid) {
        // Exited and not yet reaped (a keeper that saw its mount go at shutdown): no
        // keeper is there. (A process in the middle of an exec also reads empty.)
        return Err(keeper_err(
            mountpoint,
            "finding the descriptor keeper",
            std::io::Error::from_raw_os_error(libc::ESRCH),
        ));
    }
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    use std::os::unix::ffi::OsStrExt;
    if args.get(1) != Some(&KEEPER_ARG.as_bytes())
        || args.get(2) != Some(&mountpoint.as_os_str().as_bytes())
    {
        return Err(keeper_err(
            mountpoint,
            "finding the descriptor keeper",
            std::io::Error::other(format!("pid {pid} is not the keeper of this mount")),
        ));
    }
    Ok(pidfd)
}

/// Whether `pid` has exited and waits to be reaped (state `Z` in `/proc/<pid>/stat`).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// Takes a duplicate of the `/dev/fuse` descriptor the keeper `pid` holds for `mountpoint`
/// (the same open file description, so requests read from it and left unanswered can be
/// resent). Needs `PTRACE_MODE_ATTACH` over the keeper (root has it).
pub fn take_from_keeper(pid: u32, mountpoint: &Path) -> Result<OwnedFd> {
    let pidfd = open_keeper(pid, mountpoint)?;
    // SAFETY: pidfd_getfd(2) on a pidfd we own; a returned descriptor is ours (and
    // close-on-exec, as the call always sets it).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), KEEPER_FD, 0u32) };
    if fd < 0 {
        return Err(keeper_err(
            mountpoint,
            "taking the FUSE descriptor from its keeper",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: just returned by the kernel.
    let dev = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let is_fuse = nix::sys::stat::fstat(dev.as_raw_fd())
        .map(|st| {
            (st.st_mode & libc::S_IFMT) == libc::S_IFCHR && st.st_rdev == libc::makedev(10, 229)
        })
        .unwrap_or(false);
    if !is_fuse {
        return Err(keeper_err(
            mountpoint,
            "taking the FUSE descriptor from its keeper",
            std::io::Error::other(format!(
                "descriptor {KEEPER_FD} of pid {pid} is not /dev/fuse"
            )),
        ));
    }
    Ok(dev)
}

/// Ends the keeper `pid` of `mountpoint` (SIGTERM through its pidfd), so its connection ends
/// with the daemon's last descriptor. A keeper already gone is fine.
pub fn stop_keeper(pid: u32, mountpoint: &Path) -> Result<()> {
    let pidfd = match open_keeper(pid, mountpoint) {
        Ok(p) => p,
        Err(FsError::Keeper { source, .. }) if source.raw_os_error() == Some(libc::ESRCH) => {
            return Ok(())
        }
        Err(FsError::Keeper { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    // SAFETY: pidfd_send_signal(2) on a pidfd we own, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGTERM,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(keeper_err(mountpoint, "stopping the descriptor keeper", e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits until `ready(pid)` holds (bounded: 5 s).
    fn await_until(pid: u32, what: &str, ready: impl Fn(u32) -> bool) {
        for _ in 0..500 {
            if ready(pid) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("pid {pid} did not become {what}");
    }

    #[test]
    fn an_exited_keeper_counts_as_stopped_and_another_process_is_refused() {
        let mount = Path::new("/run/skiff/images/none");
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        // Past its exec (its command line is `sleep 30`).
        await_until(other.id(), "sleep", |pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep"))
        });
        match stop_keeper(other.id(), mount) {
            Err(FsError::Keeper { source, .. }) => {
                assert!(source.to_string().contains("is not the keeper"), "{source}")
            }
            r => panic!("{r:?}"),
        }
        // Not signalled: still running.
        assert!(other.try_wait().unwrap().is_none());
        other.kill().unwrap();
        await_until(other.id(), "a zombie", is_zombie);
        // Its command line is empty now; stopping it is done, not an error.
        stop_keeper(other.id(), mount).unwrap();
        other.wait().unwrap();
    }
}
