//! The init layer: a read-only directory that every container's overlay gets right above
//! its image (Docker's per-container `-init` layer; one shared directory here, since its
//! content never changes). It holds the mount points the init mounts over: `/dev`,
//! `/proc`, `/sys` and the empty files `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`.
//! A start then creates nothing in the container's writable layer (fewer inodes to make
//! and delete per container; `diff` and `commit` never see them), and the image's own
//! entries at those paths (a `resolv.conf` symlink, say) are hidden before the init looks.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, RuntimeError};

/// The layer's directories (mode 0755).
const DIRS: &[&str] = &["dev", "proc", "sys", "etc"];
/// The layer's empty regular files (mode 0644).
const FILES: &[&str] = &["etc/hosts", "etc/hostname", "etc/resolv.conf"];

/// Makes `dir` hold the init layer unless it already does, and returns it. The layer is
/// built in a sibling directory and renamed into place, so a crash never leaves half of
/// one; once in place it is never modified (running containers' overlays use it).
///
/// Errors: [`RuntimeError::Io`] with the path that could not be made.
pub fn ensure(dir: &Path) -> Result<PathBuf> {
    if is_complete(dir) {
        return Ok(dir.to_path_buf());
    }
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.with_file_name(format!(
        ".{}.tmp.{}",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    build(&tmp)?;
    // Not complete, so no container uses it: an older or damaged copy goes.
    if std::fs::symlink_metadata(dir).is_ok() {
        std::fs::remove_dir_all(dir).map_err(|e| RuntimeError::io("remove", dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| RuntimeError::io("rename", &tmp, e))?;
    Ok(dir.to_path_buf())
}

fn build(root: &Path) -> Result<()> {
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m))
            .map_err(|e| RuntimeError::io("chmod", p, e))
    };
    std::fs::create_dir_all(root).map_err(|e| RuntimeError::io("mkdir", root, e))?;
    mode(root, 0o755)?;
    for d in DIRS {
        let p = root.join(d);
        std::fs::create_dir(&p).map_err(|e| RuntimeError::io("mkdir", &p, e))?;
        mode(&p, 0o755)?;
    }
    for f in FILES {
        let p = root.join(f);
        std::fs::File::create(&p).map_err(|e| RuntimeError::io("create", &p, e))?;
        mode(&p, 0o644)?;
    }
    Ok(())
}

fn is_complete(dir: &Path) -> bool {
    let is = |rel: &str, want_dir: bool| {
        std::fs::symlink_metadata(dir.join(rel)).is_ok_and(|m| {
            if want_dir {
                m.is_dir()
            } else {
                m.is_file() && m.len() == 0
            }
        })
    };
    std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir())
        && DIRS.iter().all(|d| is(d, true))
        && FILES.iter().all(|f| is(f, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_once_and_replaces_a_damaged_layer() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("init-layer");
        assert_eq!(ensure(&dir).unwrap(), dir);
        for f in FILES {
            let m = std::fs::metadata(dir.join(f)).unwrap();
            assert!(m.is_file() && m.len() == 0, "{f}");
            assert_eq!(m.permissions().mode() & 0o777, 0o644, "{f}");
        }
        for d in DIRS {
            let m = std::fs::metadata(dir.join(d)).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o755, "{d}");
        }
        // A complete layer is left as it is (same inode).
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(dir.join("etc/hosts")).unwrap().ino();
        ensure(&dir).unwrap();
        assert_eq!(std::fs::metadata(dir.join("etc/hosts")).unwrap().ino(), ino);
        // A damaged one (a file with content, a symlink for a directory) is rebuilt.
        std::fs::write(dir.join("etc/hosts"), "x").unwrap();
        std::fs::remove_dir(dir.join("proc")).unwrap();
        std::os::unix::fs::symlink("/", dir.join("proc")).unwrap();
        ensure(&dir).unwrap();
        assert_eq!(std::fs::metadata(dir.join("etc/hosts")).unwrap().len(), 0);
        assert!(std::fs::symlink_metadata(dir.join("proc"))
            .unwrap()
            .is_dir());
        // No temporary directory is left beside it.
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("init-layer")]);
    }
}
