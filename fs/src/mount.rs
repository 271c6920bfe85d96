//! Mounting an [`ImageFs`] with mount(2) on a `/dev/fuse` fd of our own (no fusermount),
//! and the handle that unmounts it.
//!
//! The mount is read-only, `nosuid,nodev` and `allow_other` (container processes of any uid
//! read it) with `default_permissions` (the kernel checks modes, so the core need not).

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, Session, SessionACL};
use nix::mount::{MntFlags, MsFlags};

use crate::fuse_adapter::{FsStats, FuseAdapter};
use crate::image_fs::ImageFs;
use crate::{FsError, Result};

/// Tuning of a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Session threads answering requests (each with its own cloned `/dev/fuse` fd).
    pub fuse_threads: usize,
    /// Threads running reads, which may block on the network.
    pub read_threads: usize,
    /// How long unmounting waits for the kernel to release the connection (open files or a
    /// stacked overlay keep it alive after a lazy unmount) before aborting it, and again after.
    pub release_timeout: Duration,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            fuse_threads: 2,
            read_threads: 8,
            release_timeout: Duration::from_secs(5),
        }
    }
}

/// A mounted image. Unmounts (lazily) when dropped.
#[derive(Debug)]
pub struct MountHandle {
    path: PathBuf,
    session: Option<BackgroundSession>,
    stats: Arc<FsStats>,
    /// The connection's number under /sys/fs/fuse/connections, to abort it if needed.
    connection: Option<u32>,
    release_timeout: Duration,
}

fn mount_err(path: &Path, step: &'static str, source: std::io::Error) -> FsError {
    FsError::Mount {
        path: path.to_path_buf(),
        step,
        source,
    }
}

/// Mounts `fs` read-only at `target` (an existing directory). Needs root (CAP_SYS_ADMIN).
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

    let stats = Arc::new(FsStats::default());
    let started = FuseAdapter::new(Arc::new(fs), stats.clone(), options.read_threads)
        .map_err(|e| mount_err(target, "starting read threads", e))
        .and_then(|adapter| {
            let mut config = Config::default();
            config.acl = SessionACL::All;
            config.n_threads = Some(options.fuse_threads.max(1));
            config.clone_fd = options.fuse_threads > 1;
            Session::from_fd(adapter, dev, SessionACL::All, config)
                .map_err(|e| mount_err(target, "FUSE handshake", e))
        })
        .and_then(|session| {
            session
                .spawn()
                .map_err(|e| mount_err(target, "starting the session", e))
        });
    let session = match started {
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
    };
    match std::fs::metadata(target) {
        Ok(m) if libc::major(m.dev()) == 0 => handle.connection = Some(libc::minor(m.dev())),
        Ok(_) => {}
        Err(e) => return Err(mount_err(target, "checking the new mount", e)),
    }
    tracing::debug!(path = %target.display(), "image mounted");
    Ok(handle)
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

    /// Detaches the mount and waits for the session to end. Files still open on the mount
    /// (or a stacked overlay still mounted) keep it alive; after a few seconds the FUSE
    /// connection is aborted (if fusectl is mounted) and the call returns regardless.
    pub fn unmount(mut self) -> Result<()> {
        self.unmount_inner()
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
            self.abort_connection();
            if !wait_finished(&session, self.release_timeout) {
                // Still in use and not abortable (no fusectl): leave the session thread to end
                // when the kernel releases the mount rather than hang the caller.
                tracing::error!(path = %self.path.display(), "FUSE mount still busy after unmount; leaving its session running");
                return unmounted;
            }
        }
        if let Err(e) = session.join() {
            tracing::warn!(path = %self.path.display(), error = %e, "FUSE session ended with an error");
        }
        unmounted
    }

    /// Aborts the FUSE connection through fusectl, failing all its pending and future requests.
    fn abort_connection(&self) {
        let Some(conn) = self.connection else {
            return;
        };
        let abort = format!("/sys/fs/fuse/connections/{conn}/abort");
        tracing::warn!(path = %self.path.display(), "FUSE mount still busy after unmount; aborting it");
        if let Err(e) = std::fs::write(&abort, b"1") {
            tracing::error!(path = %self.path.display(), %abort, error = %e, "cannot abort FUSE connection");
        }
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
    /// The daemon keeps mounts in shared maps and moves them between threads.
    #[test]
    fn handles_and_filesystems_are_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<super::MountHandle>();
        shareable::<super::ImageFs>();
    }
}
