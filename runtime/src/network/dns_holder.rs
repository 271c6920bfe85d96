//! Keeps a container's embedded-DNS sockets open across a daemon restart: a tiny process
//! of our own binary (`__dns-holder <container id>`, in its own session) holds a copy of
//! the UDP socket (fd 3) and the TCP listener (fd 4) and does nothing else. While no daemon
//! runs, queries wait in the sockets' queues (UDP datagrams, TCP connections in the
//! backlog) instead of being refused; the next daemon takes copies of both sockets back
//! from the holder with `pidfd_getfd(2)` (Linux ≥ 5.6) and answers them. The holder's pid
//! is in `<dir>/<container id>.pid` (written atomically); it is killed when the
//! container leaves its last user-defined network.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// argv[1] of a holder.
pub const DNS_HOLDER_ARG: &str = "__dns-holder";
const UDP_FD: RawFd = 3;
const TCP_FD: RawFd = 4;

/// Where holders are started from and recorded.
#[derive(Clone, Debug)]
pub struct Holders {
    pub exe: PathBuf,
    pub dir: PathBuf,
}

impl Holders {
    fn pid_file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.pid"))
    }

    /// The sockets of `id`'s holder, if one runs (checked by pid file and command line).
    pub fn take_back(&self, id: &str) -> Option<(OwnedFd, OwnedFd)> {
        let pid: i32 = std::fs::read_to_string(self.pid_file(id))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let pidfd = open_checked(pid, id)?;
        let get = |target: RawFd| {
            // SAFETY: pidfd_getfd(2) with a pidfd we own; a returned descriptor is ours.
            let fd =
                unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0u32) };
            // SAFETY: just returned by the kernel.
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
        };
        Some((get(UDP_FD)?, get(TCP_FD)?))
    }

    /// Starts a holder of copies of `udp` and `tcp` for `id` (replacing an old one).
    pub fn start(&self, id: &str, udp: &impl AsRawFd, tcp: &impl AsRawFd) -> std::io::Result<()> {
        self.stop(id);
        std::fs::create_dir_all(&self.dir)?;
        let (u, t) = (udp.as_raw_fd(), tcp.as_raw_fd());
        let mut cmd = Command::new(&self.exe);
        cmd.args([DNS_HOLDER_ARG, id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec: setsid (no signal of
        // the daemon's process group), chdir, and dup2 onto 3 and 4 (through a spare
        // number first, in case the sockets already are 3 or 4).
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                libc::chdir(c"/".as_ptr());
                let (u2, t2) = (libc::dup(u), libc::dup(t));
                if u2 < 0 || t2 < 0 || libc::dup2(u2, UDP_FD) < 0 || libc::dup2(t2, TCP_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let path = self.pid_file(id);
        let tmp = path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        writeln!(f, "{}", child.id())?;
        drop(f);
        std::fs::rename(&tmp, &path)
    }

    /// Kills `id`'s holder and forgets it (none running is fine).
    pub fn stop(&self, id: &str) {
        let path = self.pid_file(id);
        if let Some(pid) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            if let Some(pidfd) = open_checked(pid, id) {
                // SAFETY: pidfd_send_signal(2) on a pidfd we own: no pid reuse race.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd.as_raw_fd(),
                        libc::SIGKILL,
                        std::ptr::null::<libc::siginfo_t>(),
                        0u32,
                    );
                }
            }
        }
        let _ = std::fs::remove_file(path);
    }

    /// Kills the holders of containers not in `keep` (a daemon that crashed between a
    /// container's removal and its holder's).
    pub fn stop_others(&self, keep: &[String]) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".pid") {
                if !keep.iter().any(|k| k == id) {
                    self.stop(id);
                }
            }
        }
    }
}

/// A pidfd for `pid` if it is `id`'s holder.
fn open_checked(pid: i32, id: &str) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2), no flags; a returned descriptor is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if fd < 0 {
        return None;
    }
    // SAFETY: just returned by the kernel.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    (args.get(1) == Some(&DNS_HOLDER_ARG.as_bytes()) && args.get(2) == Some(&id.as_bytes()))
        .then_some(pidfd)
}

/// The holder's body: keep fds 3 and 4 open until killed.
pub fn serve_holder() -> ! {
    loop {
        // SAFETY: pause(2) just waits for a signal.
        unsafe { libc::pause() };
    }
}
