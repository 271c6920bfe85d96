//! Named network namespaces, made natively the way `ip netns add` makes them: a helper
//! thread unshares a new netns and bind-mounts its `/proc/thread-self/ns/net` onto a file,
//! which keeps the namespace alive with no process in it until the file is unmounted.
//! Work inside a namespace runs on a dedicated thread that has `setns`'d into it, because
//! netlink sockets stay bound to the namespace of the thread that created them.

use std::fs::File;
use std::future::Future;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Result, RuntimeError};

fn io_err(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.to_path_buf();
    move |source| RuntimeError::Io { step, path, source }
}

fn ns_err(step: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> RuntimeError {
    let path = path.to_path_buf();
    move |source| RuntimeError::Netns { step, path, source }
}

/// Whether `path` is itself a mount point, per /proc/self/mountinfo.
pub fn is_mount_point(path: &Path) -> Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("read", Path::new("/proc/self/mountinfo")))?;
    let want = path.to_string_lossy();
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_mountinfo(mp) == want))
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Creates `dir` and makes it a shared bind mount of itself (as iproute2 does for
/// /run/netns), so unmounting a namespace file also removes the copies that mount
/// namespaces created later hold, and the namespace really goes away.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err("create netns dir", dir))?;
    if !is_mount_point(dir)? {
        mount(
            Some(dir),
            dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(ns_err("bind-mount netns dir", dir))?;
    }
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(ns_err("make netns dir shared", dir))?;
    Ok(())
}

/// Unmounts the netns dir made by [`ensure_dir`] (for teardown).
pub(crate) fn remove_dir(dir: &Path) -> Result<()> {
    if dir.exists() && is_mount_point(dir)? {
        umount2(dir, MntFlags::MNT_DETACH).map_err(ns_err("unmount netns dir", dir))?;
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove netns dir", dir)(e)),
    }
}

/// Creates a new network namespace pinned at `path` (a new empty file).
pub(crate) fn create(path: &Path) -> Result<()> {
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err("create netns file", path))?;
    let target = path.to_path_buf();
    let made = std::thread::spawn(move || -> Result<()> {
        // Only this short-lived thread changes namespace; it exits right after.
        unshare(CloneFlags::CLONE_NEWNET).map_err(ns_err("unshare", &target))?;
        let me = Path::new("/proc/thread-self/ns/net");
        mount(
            Some(me),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(ns_err("bind-mount", &target))
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p));
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Removes a namespace made by [`create`]; absent is fine (idempotent).
pub(crate) fn remove(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(ns_err("unmount", path)(e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove netns file", path)(e)),
    }
}

/// Opens a namespace file (to pass its fd to netlink or `setns`).
pub(crate) fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(io_err("open netns", path))
}

/// Moves the calling thread into the network namespace at `path`. The container init
/// calls this (before unsharing its other namespaces) to join the namespace that
/// [`super::NetworkManager::prepare`] made; single-threaded processes move entirely.
pub fn join_netns(path: &Path) -> Result<()> {
    let f = open(path)?;
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET).map_err(ns_err("setns", path))
}

/// Runs `work` with a netlink handle whose socket lives in the namespace at `path`, on a
/// thread of its own (setns'd, with its own single-threaded runtime).
pub(crate) async fn run_in<F, Fut, T>(path: &Path, work: F) -> Result<T>
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
    T: Send + 'static,
{
    let path: PathBuf = path.to_path_buf();
    let shown = path.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            join_netns(&path)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io_err("start netns runtime", &path))?;
            rt.block_on(async {
                let handle = super::link::connect(&path)?;
                work(handle).await
            })
        })();
        let _ = tx.send(result);
    });
    rx.await
        .unwrap_or_else(|_| panic!("netns worker thread for {shown:?} died"))
}

#[cfg(test)]
mod tests {
    use super::unescape_mountinfo;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/x\\134y"), "/x\\y");
    }
}
