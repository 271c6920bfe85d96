//! `remove`: whatever state the container is in, release everything it holds (processes,
//! cgroup, mounts) and delete its directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::cgroup::ContainerCgroup;
use crate::config::ContainerConfig;
use crate::container::kill::signal_identity;
use crate::error::{Result, RuntimeError};
use crate::paths::ContainerPaths;
use crate::persist;
use crate::state::{ProcIdentity, StateFile, Status};

/// Kills the container if it still runs, waits for its shim, removes its cgroup and any
/// mount left under its directory, and deletes the directory.
pub fn remove(dir: &Path) -> Result<()> {
    match remove_detached(dir)? {
        Some(removal) => removal.finish(),
        None => Ok(()),
    }
}

/// As [`remove`], but once the container is gone (its directory renamed out of the way,
/// atomically) the rest is handed back as a [`Removal`], so a caller can answer before the
/// shim has finished and the upper dir's files are unlinked. `None` when there was no
/// directory. [`purge_trash`] deletes what a crash left renamed.
pub fn remove_detached(dir: &Path) -> Result<Option<Removal>> {
    let paths = ContainerPaths::new(dir);
    let cfg: Option<ContainerConfig> = persist::read_json(&paths.config()).ok();
    let mut finishing = None;
    if let Ok(file) = StateFile::load(dir) {
        if let Some(init) = file.init {
            let _ = signal_identity(&init, Signal::SIGKILL);
        }
        if let Some(shim) = file.shim {
            if file.state.status == Status::Exited {
                // The exit is recorded; the shim only lets go of what it holds now, through
                // descriptors, so the directory can move under it.
                finishing = Some(shim);
            } else {
                wait_shim(&shim, dir);
            }
        }
    }
    unmount_under(dir);
    let trash = trash_path(dir);
    match std::fs::rename(dir, &trash) {
        Ok(()) => Ok(Some(Removal {
            trash,
            shim: finishing,
            cgroup: cfg.map(|c| c.cgroup_path()),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::io("rename for removal", dir, e)),
    }
}

/// What is left of a container [`remove_detached`] took away.
#[derive(Debug)]
pub struct Removal {
    trash: PathBuf,
    /// A shim still letting go of the container after recording its exit.
    shim: Option<ProcIdentity>,
    cgroup: Option<String>,
}

impl Removal {
    /// Waits for the shim, removes the cgroup and deletes the renamed directory.
    pub fn finish(self) -> Result<()> {
        if let Some(shim) = &self.shim {
            wait_shim(shim, &self.trash);
        }
        if let Some(cg) = &self.cgroup {
            ContainerCgroup::load(cg).destroy();
        }
        delete_trash(&self.trash)
    }
}

/// The shim exits once it has recorded the exit and released the cgroup.
fn wait_shim(shim: &ProcIdentity, dir: &Path) {
    if !shim.wait_gone(Duration::from_secs(10)) {
        tracing::warn!(dir = %dir.display(), "shim did not exit; killing it");
        let _ = signal_identity(shim, Signal::SIGKILL);
    }
}

fn delete_trash(trash: &Path) -> Result<()> {
    match std::fs::remove_dir_all(trash) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::io("remove", trash, e)),
    }
}

/// Deletes every directory under `parent` that [`remove_detached`] renamed and nobody
/// deleted (the process died first); returns how many.
pub fn purge_trash(parent: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TRASH_PREFIX) {
            match delete_trash(&e.path()) {
                Ok(()) => n += 1,
                Err(err) => tracing::warn!("{err}"),
            }
        }
    }
    n
}

const TRASH_PREFIX: &str = ".removing-";

fn trash_path(dir: &Path) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!("{TRASH_PREFIX}{}", name.unwrap_or_default()))
}

/// Detaches any mount at or below `dir` in our namespace (normally there is none: container
/// mounts live in the container's own mount namespace).
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(unescape))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        if let Err(e) = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!("cannot unmount {p}: {e}");
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn trash_is_a_hidden_sibling() {
        let t = super::trash_path(std::path::Path::new("/d/containers/abc"));
        assert_eq!(t, std::path::Path::new("/d/containers/.removing-abc"));
    }

    #[test]
    fn detached_removal_renames_and_purge_deletes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c1");
        std::fs::create_dir_all(dir.join("upper/a/b")).unwrap();
        std::fs::write(dir.join("upper/a/b/f"), b"x").unwrap();
        let removal = super::remove_detached(&dir).unwrap().unwrap();
        assert!(!dir.exists());
        let trash = removal.trash.clone();
        assert!(trash.join("upper/a/b/f").exists());
        assert!(super::remove_detached(&dir).unwrap().is_none());
        // A crash before `finish`: the next start's purge deletes it.
        drop(removal);
        assert_eq!(super::purge_trash(tmp.path()), 1);
        assert!(!trash.exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(super::unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(super::unescape("/plain"), "/plain");
    }
}
