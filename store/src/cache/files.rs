//! Chunk files of a cache written before packs (`<root>/sha256/<ab>/<hex>`, one per chunk):
//! still read, re-verified like every disk read, and removed when evicted, never written
//! (new chunks go to [`super::packs`]). Also `<root>/tmp`, emptied at open, for temporary
//! files of the cache, and where `cache.db` is.

use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::{Result, StoreError};

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
        fs::create_dir_all(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        Ok(ChunkFiles {
            root: root.to_path_buf(),
        })
    }

    /// The cache's directory.
    pub fn root(&self) -> &Path {
        &self.root
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

    pub fn remove(&self, digest: &str) -> Result<()> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => {
                // The last file of a shard directory (and of `sha256/`) takes it along:
                // nothing writes there any more. Not empty: it stays.
                let shard = path.parent().expect("chunk path has a parent");
                if fs::remove_dir(shard).is_ok() {
                    let _ = fs::remove_dir(self.root.join("sha256"));
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }
}
