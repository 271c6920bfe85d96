//! Chunk files on disk: `<root>/sha256/<ab>/<hex>`, written atomically (tmp in `<root>/tmp`,
//! rename; the cache fsyncs them in the background), so a full disk or a concurrent reader
//! never sees a torn chunk under its name. After a crash a not-yet-synced file can be torn:
//! every disk read re-verifies the chunk's digest, so it is dropped and fetched again.

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Result, StoreError};

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

pub struct ChunkFiles {
    root: PathBuf,
}

impl ChunkFiles {
    pub fn open(root: &Path) -> Result<ChunkFiles> {
        let tmp = root.join("tmp");
        // Leftovers of an interrupted write are garbage.
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        }
        for d in [root.join("sha256"), tmp] {
            fs::create_dir_all(&d).map_err(|e| StoreError::io(&d, e))?;
        }
        Ok(ChunkFiles {
            root: root.to_path_buf(),
        })
    }

    /// Where temporary files of the cache go (emptied at open).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn db_path(&self) -> PathBuf {
        self.root.join("cache.db")
    }

    pub fn path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join("sha256").join(&hex[..2]).join(hex)
    }

    /// The chunk's bytes, or `None` if it is not on disk.
    pub fn read(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(digest);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(|e| StoreError::io(&path, e))?;
        Ok(Some(buf))
    }

    /// Writes a chunk atomically and returns its path; on any error nothing is left under
    /// the final name.
    pub fn write(
        &self,
        digest: &str,
        data: &[u8],
    ) -> std::result::Result<PathBuf, (PathBuf, std::io::Error)> {
        let path = self.path(digest);
        let dir = path.parent().expect("chunk path has a parent");
        fs::create_dir_all(dir).map_err(|e| (dir.to_path_buf(), e))?;
        let tmp = self.root.join("tmp").join(format!(
            "{}.{}.{}",
            &digest[digest.len() - 16..],
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let res = (|| {
            let mut f = File::create_new(&tmp)?;
            f.write_all(data)?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err((path, e));
        }
        Ok(path)
    }

    pub fn remove(&self, digest: &str) -> Result<()> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }
}
