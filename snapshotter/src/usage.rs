//! Disk usage of a snapshot's own directory, as containerd's `fs.DiskUsage`: allocated
//! bytes (`st_blocks * 512`) and distinct inodes, not crossing into other filesystems.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Result, SnapshotError};

/// `(bytes, inodes)` under `dir` (the directory itself included).
pub fn disk_usage(dir: &Path) -> Result<(i64, i64)> {
    let root = std::fs::symlink_metadata(dir).map_err(|e| SnapshotError::io(dir, e))?;
    let dev = root.dev();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut bytes: i64 = 0;
    let mut stack = vec![(dir.to_path_buf(), root)];
    while let Some((path, md)) = stack.pop() {
        if !seen.insert(md.ino()) {
            continue;
        }
        bytes = bytes.saturating_add((md.blocks() as i64).saturating_mul(512));
        if md.is_dir() && md.dev() == dev {
            let rd = std::fs::read_dir(&path).map_err(|e| SnapshotError::io(&path, e))?;
            for entry in rd {
                let entry = entry.map_err(|e| SnapshotError::io(&path, e))?;
                let p = entry.path();
                let m = std::fs::symlink_metadata(&p).map_err(|e| SnapshotError::io(&p, e))?;
                if m.dev() == dev {
                    stack.push((p, m));
                }
            }
        }
    }
    Ok((bytes, seen.len() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_and_hard_links_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), vec![1u8; 10_000]).unwrap();
        std::fs::hard_link(d.path().join("a"), d.path().join("b")).unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        let (bytes, inodes) = disk_usage(d.path()).unwrap();
        assert_eq!(inodes, 3, "the directory, a (= b) and sub");
        assert!(bytes >= 10_000, "{bytes}");
    }
}
