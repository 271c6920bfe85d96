//! Atomic persistent writes: a reader sees the old file or the new one, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, RuntimeError};

/// How long a write must last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Must survive a host crash: fsync the file before and the directory after the rename.
    Durable,
    /// Regenerated on every create and meaningless after a reboot (the /etc files, the
    /// config copy, the `created`/`running` records): atomic rename only, no fsync, which
    /// keeps several disk flushes out of container start.
    Volatile,
}

/// A file written with [`Durability::Volatile`] and its directory, opened now to be flushed later through the descriptors: the
/// directory may be renamed meanwhile (a removal does that while the shim finishes).
pub(crate) struct PendingSync {
    path: PathBuf,
    file: std::fs::File,
    dir: std::fs::File,
}

impl PendingSync {
    pub(crate) fn open(path: &Path) -> Result<PendingSync> {
        let dir = path.parent().unwrap_or(Path::new("."));
        Ok(PendingSync {
            path: path.to_path_buf(),
            file: std::fs::File::open(path).map_err(|e| RuntimeError::io("open", path, e))?,
            dir: std::fs::File::open(dir).map_err(|e| RuntimeError::io("open", dir, e))?,
        })
    }

    pub(crate) fn sync(self) -> Result<()> {
        self.file
            .sync_all()
            .and_then(|()| self.dir.sync_all())
            .map_err(|e| RuntimeError::io("fsync", &self.path, e))
    }
}

/// Writes `data` to `path` atomically (tmp + rename), with the given durability.
pub(crate) fn write_atomic_with(path: &Path, data: &[u8], durability: Durability) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        match durability {
            Durability::Durable => {
                f.sync_all()?;
                std::fs::rename(&tmp, path)?;
                std::fs::File::open(dir)?.sync_all()
            }
            Durability::Volatile => replace_unflushed(&tmp, path),
        }
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        RuntimeError::io("write", path, e)
    })
}

/// Moves `tmp` to `path` atomically without making ext4 write the new data out.
///
/// A plain `rename` over an existing file makes ext4 (`auto_da_alloc`, on by default) start
/// writeback of the new file at once, so each record update of a container cost a disk
/// write, and its blocks a discard when the container was removed. Exchanging the two names
/// (`RENAME_EXCHANGE`) is just as atomic for readers and skips that flush; the old contents
/// are then unlinked under the temporary name.
fn replace_unflushed(tmp: &Path, path: &Path) -> std::io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(None, tmp, None, path, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => std::fs::remove_file(tmp),
        // Nothing to replace yet (ENOENT), or a filesystem without exchange (EINVAL).
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL) => std::fs::rename(tmp, path),
        Err(e) => Err(e.into()),
    }
}

/// Serializes `value` as JSON and writes it atomically.
pub(crate) fn write_json<T: serde::Serialize>(
    path: &Path,
    value: &T,
    durability: Durability,
) -> Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(|e| RuntimeError::Json {
        path: path.to_path_buf(),
        source: e,
    })?;
    write_atomic_with(path, &data, durability)
}

/// Reads a JSON file written by [`write_json`].
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let data = std::fs::read(path).map_err(|e| RuntimeError::io("read", path, e))?;
    serde_json::from_slice(&data).map_err(|e| RuntimeError::Json {
        path: path.to_path_buf(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_json(&p, &vec![1, 2, 3], Durability::Durable).unwrap();
        write_json(&p, &vec![4], Durability::Volatile).unwrap();
        let v: Vec<i32> = read_json(&p).unwrap();
        assert_eq!(v, vec![4]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn volatile_writes_create_then_exchange() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_json(&p, &vec![1], Durability::Volatile).unwrap();
        write_json(&p, &vec![2, 3], Durability::Volatile).unwrap();
        write_json(&p, &vec![4, 5, 6], Durability::Volatile).unwrap();
        let v: Vec<i32> = read_json(&p).unwrap();
        assert_eq!(v, vec![4, 5, 6]);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }
}
