//! Mounting an [`ImageFs`] with mount(2) on a `/dev/fuse` fd of our own (no fusermount),
//! the handle that unmounts it, and resuming a mount a previous daemon served (live
//! restore, docs/live-restore.md).
//!
//! The mount is read-only, `nosuid,nodev` and `allow_other` (container processes of any uid
//! read it) with `default_permissions` (the kernel checks modes, so the core need not).
//!
//! Every session thread reads from the one open file description a descriptor keeper (see
//! [`crate::keeper`]) also holds, never from a `FUSE_DEV_IOC_CLONE`d one: when the daemon
//! dies, the requests it had read stay with the kernel, and the next daemon asks for them
//! again with `FUSE_NOTIFY_RESEND`.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, InitFlags, Session, SessionACL};
use nix::mount::{MntFlags, MsFlags};

use crate::fuse_adapter::{FsStats, FuseAdapter};
use crate::image_fs::ImageFs;
use crate::{FsError, Result};

/// Tuning of a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Session threads answering requests (all reading the same `/dev/fuse` description).
    pub fuse_threads: usize,
    /// Threads running reads, which may block on the network.
    pub read_threads: usize,
    /// How long unmounting waits for the session to end after the lazy unmount. A mount
    /// still in use (open files, a stacked overlay) keeps being served until the kernel
    /// releases it; unmounting does not wait for that.
    pub release_timeout: Duration,
    /// Our binary, to run a descriptor keeper (`skiff __fuse-keeper`) so the mount survives
    /// the process; `None`: the mount ends with the process.
    pub keeper_exe: Option<PathBuf>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            fuse_threads: 2,
            read_threads: 8,
            release_timeout: Duration::from_millis(500),
            keeper_exe: None,
        }
    }
}

/// What a later process needs to serve a kept mount again; the daemon records it (atomically)
/// next to the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptMount {
    /// The descriptor keeper's pid.
    pub keeper_pid: u32,
    /// The connection's number (the mount's device minor; `/sys/fs/fuse/connections/N`).
    pub connection: u32,
    /// [`crate::Tree::fingerprint`] of the tree the kernel's inode numbers came from.
    pub fingerprint: u64,
}

/// A mounted image. Unmounts (lazily) when dropped.
#[derive(Debug)]
pub struct MountHandle {
    path: PathBuf,
    session: Option<BackgroundSession>,
    stats: Arc<FsStats>,
    /// The connection's number under /sys/fs/fuse/connections.
    connection: Option<u32>,
    release_timeout: Duration,
    keeper_pid: Option<u32>,
    fingerprint: u64,
}

fn mount_err(path: &Path, step: &'static str, source: std::io::Error) -> FsError {
    FsError::Mount {
        path: path.to_path_buf(),
        step,
        source,
    }
}

fn session_config(options: &MountOptions) -> Config {
    let mut config = Config::default();
    config.acl = SessionACL::All;
    config.n_threads = Some(options.fuse_threads.max(1));
    // Cloned descriptors would take their unanswered requests with them when the daemon
    // dies (the kernel fails them): every thread reads the kept description instead.
    config.clone_fd = false;
    config
}

/// Mounts `fs` read-only at `target` (an existing directory). Needs root (CAP_SYS_ADMIN).
/// With [`MountOptions::keeper_exe`] a descriptor keeper holds the connection (see
/// [`MountHandle::kept`]).
pub fn mount(fs: ImageFs, target: &Path, options: &MountOptions) -> Result<MountHandle> {
    let dev: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")
        .map_err(|e| mount_err(target, "opening /dev/fuse", e))?
        .into();
    let data = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions",
        dev.as_raw_fd()
    );
    nix::mount::mount(
        Some("skiff"),
        target,
        Some("fuse.skiff"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|e| mount_err(target, "mount(2)", e.into()))?;
    let fingerprint = fs.tree().fingerprint();

    let stats = Arc::new(FsStats::default());
    let keeper = match &options.keeper_exe {
        Some(exe) => crate::keeper::spawn_keeper(exe, dev.as_fd(), target).map(Some),
        None => Ok(None),
    };
    let started = keeper.and_then(|keeper| {
        let session = FuseAdapter::new(Arc::new(fs), stats.clone(), options.read_threads)
            .map_err(|e| mount_err(target, "starting read threads", e))
            .and_then(|adapter| {
                Session::from_fd(adapter, dev, SessionACL::All, session_config(options))
                    .map_err(|e| mount_err(target, "FUSE handshake", e))
            })
            .and_then(|session| {
                session
                    .spawn()
                    .map_err(|e| mount_err(target, "starting the session", e))
            });
        match session {
            Ok(s) => Ok((s, keeper)),
            Err(e) => {
                if let Some(pid) = keeper {
                    let _ = crate::keeper::stop_keeper(pid, target);
                }
                Err(e)
            }
        }
    });
    let (session, keeper_pid) = match started {
        Ok(s) => s,
        Err(e) => {
            let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
            return Err(e);
        }
    };
    let mut handle = MountHandle {
        path: target.to_path_buf(),
        session: Some(session),
        stats,
        connection: None,
        release_timeout: options.release_timeout,
        keeper_pid,
        fingerprint,
    };
    handle.connection = Some(connection_of(target)?);
    tracing::debug!(path = %target.display(), "image mounted");
    Ok(handle)
}

/// The FUSE connection number of the mount at `target`: its device minor, from
/// /proc/self/mountinfo (a stat(2) of the root would ask the FUSE server, which may be
/// us or nobody yet).
pub fn connection_of(target: &Path) -> Result<u32> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| mount_err(target, "reading /proc/self/mountinfo", e))?;
    let want = target.as_os_str().to_string_lossy();
    // Fields: id parent major:minor root mountpoint ... - fstype source options. The last
    // mount on a path is the visible one.
    info.lines()
        .rev()
        .find_map(|l| {
            let mut f = l.split(' ');
            let dev = f.nth(2)?;
            let point = f.nth(1)?;
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?;
            (unescape_mountinfo(point) == want && fstype == "fuse.skiff")
                .then(|| dev.split(':').nth(1)?.parse::<u32>().ok())
                .flatten()
        })
        .ok_or_else(|| {
            mount_err(
                target,
                "finding the FUSE mount",
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Capabilities offered to the filesystem in the replayed FUSE_INIT of a resumed session:
/// the ones [`FuseAdapter`] asks for, but not passthrough (its backing ids died with the
/// previous process, and opens must not mix modes with the kernel's open files).
fn resumed_capabilities() -> u32 {
    let flags = InitFlags::FUSE_DO_READDIRPLUS
        | InitFlags::FUSE_READDIRPLUS_AUTO
        | InitFlags::FUSE_CACHE_SYMLINKS
        | InitFlags::FUSE_PARALLEL_DIROPS;
    flags.bits() as u32
}

/// The bytes of a FUSE_INIT request (`fuse_in_header` + `fuse_init_in`, protocol 7.40).
fn init_request(flags: u32) -> Vec<u8> {
    const FUSE_INIT: u32 = 26;
    let mut b = Vec::with_capacity(104);
    b.extend_from_slice(&104u32.to_le_bytes()); // len
    b.extend_from_slice(&FUSE_INIT.to_le_bytes()); // opcode
    b.extend_from_slice(&1u64.to_le_bytes()); // unique
    b.extend_from_slice(&0u64.to_le_bytes()); // nodeid
    b.extend_from_slice(&[0u8; 16]); // uid, gid, pid, total_extlen + padding
    b.extend_from_slice(&7u32.to_le_bytes()); // major
    b.extend_from_slice(&40u32.to_le_bytes()); // minor
    b.extend_from_slice(&(128u32 * 1024).to_le_bytes()); // max_readahead
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&[0u8; 4 + 44]); // flags2, unused
    b
}

/// `FUSE_NOTIFY_RESEND` (Linux 6.9): the kernel queues again every request that was read
/// from this connection and not answered.
fn notify_resend(dev: &OwnedFd) -> std::io::Result<()> {
    const FUSE_NOTIFY_RESEND: i32 = 7;
    let mut msg = Vec::with_capacity(16);
    msg.extend_from_slice(&16u32.to_le_bytes());
    msg.extend_from_slice(&FUSE_NOTIFY_RESEND.to_le_bytes());
    msg.extend_from_slice(&0u64.to_le_bytes());
    nix::unistd::write(dev, &msg)?;
    Ok(())
}

/// Serves again a mount a previous process served: `dev` is the kept `/dev/fuse`
/// descriptor ([`crate::keeper::take_from_keeper`]), `fs` the image rebuilt from the store.
///
/// The connection was initialized by the first process, so no FUSE_INIT will come: the
/// filesystem gets its `init` from a replayed request over a socket (fuser 0.18 cannot adopt
/// an initialized connection), then the session's descriptor is swapped for the kept one
/// before its threads start. Then `FUSE_NOTIFY_RESEND` brings back the requests the dead
/// process had read. Returns the handle and whether the kernel accepted the resend (older
/// kernels: requests in flight at the crash never complete).
///
/// Errors: [`FsError::TreeChanged`] when `fs` numbers inodes differently from the tree the
/// kernel knows; [`FsError::Mount`] when the session cannot start.
pub fn resume(
    fs: ImageFs,
    target: &Path,
    dev: OwnedFd,
    kept: &KeptMount,
    options: &MountOptions,
) -> Result<(MountHandle, bool)> {
    let found = fs.tree().fingerprint();
    if found != kept.fingerprint {
        return Err(FsError::TreeChanged {
            path: target.to_path_buf(),
            expected: kept.fingerprint,
            found,
        });
    }
    let stats = Arc::new(FsStats::default());
    let adapter = FuseAdapter::new(Arc::new(fs), stats.clone(), options.read_threads)
        .map_err(|e| mount_err(target, "starting read threads", e))?;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| mount_err(target, "replaying FUSE_INIT", e))?;
    std::io::Write::write_all(&mut &theirs, &init_request(resumed_capabilities()))
        .map_err(|e| mount_err(target, "replaying FUSE_INIT", e))?;
    let session = Session::from_fd(
        adapter,
        ours.into(),
        SessionACL::All,
        session_config(options),
    )
    .map_err(|e| mount_err(target, "replaying FUSE_INIT", e))?;
    drop(theirs);
    // The session owns descriptor N (the socket); make N the kept /dev/fuse description.
    // Nothing reads N until spawn() below.
    nix::unistd::dup3(
        dev.as_raw_fd(),
        session.as_fd().as_raw_fd(),
        nix::fcntl::OFlag::O_CLOEXEC,
    )
    .map_err(|e| mount_err(target, "adopting the kept FUSE descriptor", e.into()))?;
    let session = session
        .spawn()
        .map_err(|e| mount_err(target, "starting the session", e))?;
    let resent = match notify_resend(&dev) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = %target.display(), error = %e, "the kernel cannot resend FUSE requests (FUSE_NOTIFY_RESEND, Linux 6.9+): reads in flight when the previous daemon stopped will not complete");
            false
        }
    };
    drop(dev);
    let handle = MountHandle {
        path: target.to_path_buf(),
        session: Some(session),
        stats,
        connection: Some(kept.connection),
        release_timeout: options.release_timeout,
        keeper_pid: Some(kept.keeper_pid),
        fingerprint: kept.fingerprint,
    };
    tracing::debug!(path = %target.display(), resent, "image mount resumed");
    Ok((handle, resent))
}

impl MountHandle {
    /// Where the image is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read counters of this mount.
    pub fn stats(&self) -> &FsStats {
        &self.stats
    }

    /// What a later process needs to serve this mount again; `None` without a keeper.
    pub fn kept(&self) -> Option<KeptMount> {
        Some(KeptMount {
            keeper_pid: self.keeper_pid?,
            connection: self.connection?,
            fingerprint: self.fingerprint,
        })
    }

    /// Detaches the mount and waits a little ([`MountOptions::release_timeout`]) for the
    /// session to end. Files still open on the mount (or a stacked overlay still mounted)
    /// keep it alive: the session then goes on serving them until the kernel releases the
    /// mount (and the keeper, if any, exits with it).
    pub fn unmount(mut self) -> Result<()> {
        self.unmount_inner()
    }

    /// Leaves the mount mounted and its keeper running, for the next process to resume
    /// (the daemon's live-restore shutdown; the process exits right after). Requests in
    /// flight are resent to the next process.
    pub fn leave(mut self) {
        if let Some(session) = self.session.take() {
            // Its threads are blocked reading the kept descriptor; they end with the process.
            std::mem::forget(session);
        }
    }

    /// Detaches the mount and stops its keeper without waiting: the connection ends (and
    /// whatever still uses the mount gets ENOTCONN) when this process exits. For a shutdown
    /// that does not keep mounts.
    pub fn abandon(mut self) {
        if let Err(e) = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH) {
            tracing::debug!(path = %self.path.display(), error = %e, "detaching image mount");
        }
        if let Some(pid) = self.keeper_pid.take() {
            if let Err(e) = crate::keeper::stop_keeper(pid, &self.path) {
                tracing::warn!(error = %e, "stopping a descriptor keeper");
            }
        }
        if let Some(session) = self.session.take() {
            std::mem::forget(session);
        }
    }

    fn unmount_inner(&mut self) -> Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let unmounted =
            nix::mount::umount2(&self.path, MntFlags::MNT_DETACH).map_err(|e| FsError::Unmount {
                path: self.path.clone(),
                source: e.into(),
            });
        if !wait_finished(&session, self.release_timeout) {
            // Still in use: serve it until the kernel lets go (its reads then fail with
            // ENODEV and the threads end); the keeper exits when the connection ends.
            tracing::info!(path = %self.path.display(), "image mount still in use after unmount; serving it until released");
            std::mem::forget(session);
            return unmounted;
        }
        if let Err(e) = session.join() {
            tracing::warn!(path = %self.path.display(), error = %e, "FUSE session ended with an error");
        }
        unmounted
    }
}

/// Whether the session thread ended within `timeout`.
fn wait_finished(session: &BackgroundSession, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !session.guard.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::error!(error = %e, "unmounting image on drop");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(
            super::unescape_mountinfo("/run/a\\040b\\134c"),
            "/run/a b\\c"
        );
        assert_eq!(super::unescape_mountinfo("/plain\\0"), "/plain\\0");
    }

    /// The replayed FUSE_INIT is what the kernel sends: header length and opcode, then
    /// version 7.40 and the capability flags.
    #[test]
    fn replayed_init_has_the_kernel_layout() {
        let b = super::init_request(0x1234);
        assert_eq!(b.len(), 104);
        assert_eq!(u32::from_le_bytes(b[0..4].try_into().unwrap()), 104);
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 26);
        assert_eq!(u32::from_le_bytes(b[40..44].try_into().unwrap()), 7);
        assert_eq!(u32::from_le_bytes(b[44..48].try_into().unwrap()), 40);
        assert_eq!(u32::from_le_bytes(b[52..56].try_into().unwrap()), 0x1234);
    }

    /// The daemon keeps mounts in shared maps and moves them between threads.
    #[test]
    fn handles_and_filesystems_are_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<super::MountHandle>();
        shareable::<super::ImageFs>();
    }
}
