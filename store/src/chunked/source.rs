//! Where the bytes of a layer blob come from: a small blocking range-read trait, so the
//! chunk cache and the TOC reader work the same over a registry, a local file, or anything
//! else that can serve byte ranges. The registry's is
//! [`StoreBlobSource`](crate::lazy_source::StoreBlobSource), the one range path of
//! production and tests.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use crate::{Result, StoreError};

/// How often and how patiently a failing range read is retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total attempts, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubled after each failure up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Four attempts over about 1.4 s: long enough to ride out a registry restart or a
    /// dropped connection, short enough that a FUSE read fails with EIO in human time.
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// A range being received, in order, piece by piece. Blocking.
pub trait RangeStream: Send {
    /// The next piece; `None` once exactly the range's bytes were given (a short answer is
    /// an error, never an early `None`).
    fn next_piece(&mut self) -> Result<Option<Bytes>>;
}

struct OnePiece(Option<Bytes>);

impl RangeStream for OnePiece {
    fn next_piece(&mut self) -> Result<Option<Bytes>> {
        Ok(self.0.take())
    }
}

/// A blob that can be read by byte range. Blocking: FUSE worker threads call it.
pub trait BlobSource: Send + Sync {
    /// The blob's digest (`sha256:<hex>`), used in errors and logs.
    fn digest(&self) -> &str;
    /// The blob's size in bytes.
    fn size(&self) -> u64;
    /// Reads exactly `len` bytes at `offset`; a short answer is an error.
    fn read_range(&self, offset: u64, len: u64) -> Result<Bytes>;

    /// Starts reading `len` bytes at `offset` and gives them as they arrive, so a caller
    /// can use the front of a long range before its end is in (one request, no retry).
    /// By default the whole range as one piece.
    fn open_range(&self, offset: u64, len: u64) -> Result<Box<dyn RangeStream>> {
        Ok(Box::new(OnePiece(Some(self.read_range(offset, len)?))))
    }

    /// [`read_range`](Self::read_range) with retry and exponential backoff. Ranges outside
    /// the blob and permanent errors ([`StoreError::is_permanent`]: not found, access
    /// refused after a token refresh) fail at once: retrying cannot help them.
    fn read_range_retry(&self, offset: u64, len: u64, policy: &RetryPolicy) -> Result<Bytes> {
        let in_bounds = offset
            .checked_add(len)
            .is_some_and(|end| end <= self.size());
        if !in_bounds {
            return Err(StoreError::BlobFetch {
                digest: self.digest().to_string(),
                offset,
                len,
                reason: format!("range outside the blob of {} bytes", self.size()),
            });
        }
        let mut backoff = policy.initial_backoff;
        let attempts = policy.attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.read_range(offset, len) {
                Ok(b) => return Ok(b),
                Err(e) if attempt < attempts && !e.is_permanent() => {
                    tracing::debug!(digest = self.digest(), offset, len, attempt, error = %e, "range read failed, retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(policy.max_backoff);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A blob in a local file (a downloaded or freshly converted layer).
pub struct FileBlobSource {
    path: PathBuf,
    file: File,
    digest: String,
    size: u64,
}

impl FileBlobSource {
    pub fn open(path: impl AsRef<Path>, digest: impl Into<String>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| StoreError::io(&path, e))?;
        let size = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
        Ok(FileBlobSource {
            path,
            file,
            digest: digest.into(),
            size,
        })
    }
}

impl BlobSource for FileBlobSource {
    fn digest(&self) -> &str {
        &self.digest
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read_range(&self, offset: u64, len: u64) -> Result<Bytes> {
        let len_usize = usize::try_from(len).map_err(|_| StoreError::BlobFetch {
            digest: self.digest.clone(),
            offset,
            len,
            reason: "range too large".into(),
        })?;
        let mut buf = vec![0u8; len_usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| StoreError::io(&self.path, e))?;
        Ok(Bytes::from(buf))
    }
}
