//! Atomic persistent writes: a reader sees the old file or the new one, never half of one.

use std::io::Write;
use std::path::Path;

use crate::error::{Result, RuntimeError};

/// Writes `data` to `path` via a temporary file in the same directory, fsync and rename.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
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
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        RuntimeError::io("write", path, e)
    })
}

/// Serializes `value` as JSON and writes it atomically.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(|e| RuntimeError::Json {
        path: path.to_path_buf(),
        source: e,
    })?;
    write_atomic(path, &data)
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
        write_json(&p, &vec![1, 2, 3]).unwrap();
        write_json(&p, &vec![4]).unwrap();
        let v: Vec<i32> = read_json(&p).unwrap();
        assert_eq!(v, vec![4]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
