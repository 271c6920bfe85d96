//! The content-addressed blob store, `<root>/blobs/sha256/<hex>`.
//!
//! Every write goes to a temporary file in `<root>/tmp` (same filesystem), is hashed while
//! it is written, and is renamed into place only when the digest matches, after fsync. A
//! mismatch or an interrupted write leaves nothing behind (the temporary file is removed
//! when the writer is dropped).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::reference::parse_digest;
use crate::{Result, StoreError};

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The hex part of a validated `sha256:<hex>` digest.
pub fn digest_hex(digest: &str) -> Result<&str> {
    parse_digest(digest, digest)?;
    Ok(&digest["sha256:".len()..])
}

/// A file written under a temporary name and moved into place atomically by [`commit`].
///
/// [`commit`]: AtomicFile::commit
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
}

impl AtomicFile {
    /// Creates the temporary file in `tmp_dir`, which must be on the destination's filesystem.
    pub fn new(tmp_dir: &Path) -> Result<AtomicFile> {
        let tmp = tempfile::Builder::new()
            .prefix("skiff-")
            .tempfile_in(tmp_dir)
            .map_err(|e| StoreError::io(tmp_dir, e))?;
        Ok(AtomicFile { tmp })
    }

    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// fsyncs the data, renames it to `dest` and fsyncs `dest`'s directory.
    pub fn commit(self, dest: &Path) -> Result<()> {
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| StoreError::io(self.tmp.path(), e))?;
        self.tmp
            .persist(dest)
            .map_err(|e| StoreError::io(dest, e.error))?;
        if let Some(dir) = dest.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::io(dir, e))?;
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

/// Writes `data` to `dest` atomically (tmp in `tmp_dir`, fsync, rename).
pub fn write_atomic(tmp_dir: &Path, dest: &Path, data: &[u8]) -> Result<()> {
    let mut f = AtomicFile::new(tmp_dir)?;
    f.write_all(data).map_err(|e| StoreError::io(f.path(), e))?;
    f.commit(dest)
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the blob store under `root`.
    pub fn open(root: &Path) -> Result<BlobStore> {
        let blobs = root.join("blobs").join("sha256");
        let tmp = root.join("tmp");
        for d in [&blobs, &tmp] {
            std::fs::create_dir_all(d).map_err(|e| StoreError::io(d, e))?;
        }
        Ok(BlobStore { blobs, tmp })
    }

    /// The temporary directory (same filesystem as the blobs).
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Where the blob `digest` lives (whether or not it exists).
    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.blobs.join(digest_hex(digest)?))
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// The size of a stored blob.
    pub fn size(&self, digest: &str) -> Result<u64> {
        let p = self.path(digest)?;
        Ok(std::fs::metadata(&p)
            .map_err(|e| StoreError::io(&p, e))?
            .len())
    }

    /// A writer for a blob that must hash to `expected`.
    pub fn writer(&self, expected: &str) -> Result<BlobWriter> {
        digest_hex(expected)?;
        Ok(BlobWriter {
            file: AtomicFile::new(&self.tmp)?,
            hasher: Sha256::new(),
            expected: Some(expected.to_string()),
            dest_dir: self.blobs.clone(),
            size: 0,
        })
    }

    /// A writer for a blob whose digest is computed while writing.
    pub fn writer_unknown(&self) -> Result<BlobWriter> {
        Ok(BlobWriter {
            file: AtomicFile::new(&self.tmp)?,
            hasher: Sha256::new(),
            expected: None,
            dest_dir: self.blobs.clone(),
            size: 0,
        })
    }

    /// Stores `data` and returns its digest.
    pub fn put(&self, data: &[u8]) -> Result<String> {
        let mut w = self.writer_unknown()?;
        w.write_all(data)
            .map_err(|e| StoreError::io(&self.tmp, e))?;
        Ok(w.commit()?.0)
    }

    /// Reads a whole blob, verifying it (blobs read this way are small: configs, manifests).
    pub fn read(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self.path(digest)?;
        let mut data = Vec::new();
        File::open(&p)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| StoreError::io(&p, e))?;
        let actual = sha256_digest(&data);
        if actual != digest {
            return Err(StoreError::DigestMismatch {
                what: p.display().to_string(),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(data)
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, digest: &str) -> Result<File> {
        let p = self.path(digest)?;
        File::open(&p).map_err(|e| StoreError::io(&p, e))
    }

    /// Removes a blob (missing is fine).
    pub fn remove(&self, digest: &str) -> Result<()> {
        let p = self.path(digest)?;
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&p, e)),
        }
    }
}

/// Hashes while writing; [`commit`](BlobWriter::commit) publishes only a verified blob.
pub struct BlobWriter {
    file: AtomicFile,
    hasher: Sha256,
    expected: Option<String>,
    dest_dir: PathBuf,
    size: u64,
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.size
    }

    /// Where the bytes written so far are, until [`commit`](BlobWriter::commit).
    pub fn temp_path(&self) -> &Path {
        self.file.path()
    }

    /// Verifies the digest and moves the blob into place; returns `(digest, size)`.
    pub fn commit(self) -> Result<(String, u64)> {
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        if let Some(expected) = self.expected {
            if expected != actual {
                return Err(StoreError::DigestMismatch {
                    what: format!("blob {expected}"),
                    expected,
                    actual,
                });
            }
        }
        let dest = self.dest_dir.join(&actual["sha256:".len()..]);
        self.file.commit(&dest)?;
        Ok((actual, self.size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn verified_blob_is_stored_and_mismatch_stores_nothing() {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::open(root.path()).unwrap();
        let d = sha256_digest(b"hello");
        let mut w = store.writer(&d).unwrap();
        w.write_all(b"hello").unwrap();
        assert_eq!(w.commit().unwrap(), (d.clone(), 5));
        assert!(store.contains(&d));
        assert_eq!(store.read(&d).unwrap(), b"hello");

        let other = sha256_digest(b"other");
        let mut w = store.writer(&other).unwrap();
        w.write_all(b"tampered").unwrap();
        match w.commit() {
            Err(StoreError::DigestMismatch { expected, .. }) => assert_eq!(expected, other),
            r => panic!("expected mismatch, got {r:?}"),
        }
        assert!(!store.contains(&other));
        assert_eq!(count(&root.path().join("blobs/sha256")), 1);
        assert_eq!(count(&root.path().join("tmp")), 0);
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::open(root.path()).unwrap();
        let mut w = store.writer(&sha256_digest(b"x")).unwrap();
        w.write_all(b"x").unwrap();
        drop(w);
        assert_eq!(count(&root.path().join("tmp")), 0);
        assert_eq!(count(&root.path().join("blobs/sha256")), 0);
    }

    #[test]
    fn corrupt_blob_is_detected_on_read_and_bad_digests_refused() {
        let root = tempfile::tempdir().unwrap();
        let store = BlobStore::open(root.path()).unwrap();
        let d = store.put(b"data").unwrap();
        std::fs::write(store.path(&d).unwrap(), b"DATA").unwrap();
        assert!(matches!(
            store.read(&d),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert!(matches!(
            store.path("sha256:../../etc"),
            Err(StoreError::InvalidReference { .. })
        ));
    }
}
