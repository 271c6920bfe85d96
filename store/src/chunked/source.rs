//! Where the bytes of a layer blob come from: a small blocking range-read trait, so the
//! chunk cache and the TOC reader work the same over a registry, a local file, or anything
//! else that can serve byte ranges.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use oci_client::client::BlobResponse;
use oci_client::manifest::OciDescriptor;
use oci_client::{Client, Reference};

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

/// A blob that can be read by byte range. Blocking: FUSE worker threads call it.
pub trait BlobSource: Send + Sync {
    /// The blob's digest (`sha256:<hex>`), used in errors and logs.
    fn digest(&self) -> &str;
    /// The blob's size in bytes.
    fn size(&self) -> u64;
    /// Reads exactly `len` bytes at `offset`; a short answer is an error.
    fn read_range(&self, offset: u64, len: u64) -> Result<Bytes>;

    /// [`read_range`](Self::read_range) with retry and exponential backoff. Ranges outside
    /// the blob are refused at once: retrying cannot help them.
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
                Err(e) if attempt < attempts => {
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

/// A blob in an OCI registry, read with HTTP Range requests through `oci-client`.
///
/// `read_range` blocks on the given tokio runtime handle: call it from plain threads (FUSE
/// workers) or `spawn_blocking`; from a multi-threaded runtime's worker it uses
/// `block_in_place`, and from a current-thread runtime it would panic.
pub struct RegistryBlobSource {
    client: Arc<Client>,
    reference: Reference,
    descriptor: OciDescriptor,
    handle: tokio::runtime::Handle,
}

impl RegistryBlobSource {
    /// `reference` names the repository the blob lives in; `digest` and `size` come from the
    /// (verified) manifest's layer descriptor.
    pub fn new(
        client: Arc<Client>,
        reference: Reference,
        digest: impl Into<String>,
        size: u64,
        handle: tokio::runtime::Handle,
    ) -> Self {
        let descriptor = OciDescriptor {
            digest: digest.into(),
            size: size as i64,
            ..Default::default()
        };
        RegistryBlobSource {
            client,
            reference,
            descriptor,
            handle,
        }
    }

    fn fetch_error(&self, offset: u64, len: u64, reason: String) -> StoreError {
        StoreError::BlobFetch {
            digest: self.descriptor.digest.clone(),
            offset,
            len,
            reason,
        }
    }

    async fn fetch(&self, offset: u64, len: u64) -> Result<Bytes> {
        let resp = self
            .client
            .pull_blob_stream_partial(&self.reference, &self.descriptor, offset, Some(len))
            .await
            .map_err(|e| self.fetch_error(offset, len, e.to_string()))?;
        // A registry that ignores Range answers 200 with the whole blob: skip to the range.
        let (mut stream, mut skip) = match resp {
            BlobResponse::Partial(s) => (s, 0u64),
            BlobResponse::Full(s) => (s, offset),
        };
        let mut out = BytesMut::with_capacity(len as usize);
        while let Some(piece) = stream.next().await {
            let mut piece = piece.map_err(|e| self.fetch_error(offset, len, e.to_string()))?;
            if skip > 0 {
                let n = skip.min(piece.len() as u64) as usize;
                let _ = piece.split_to(n);
                skip -= n as u64;
            }
            let want = len as usize - out.len();
            if piece.len() > want {
                return Err(self.fetch_error(
                    offset,
                    len,
                    "registry sent more bytes than asked for".into(),
                ));
            }
            out.extend_from_slice(&piece);
            if out.len() == len as usize && skip == 0 {
                break;
            }
        }
        if out.len() != len as usize {
            return Err(self.fetch_error(
                offset,
                len,
                format!("short read: got {} bytes", out.len()),
            ));
        }
        Ok(out.freeze())
    }
}

impl BlobSource for RegistryBlobSource {
    fn digest(&self) -> &str {
        &self.descriptor.digest
    }
    fn size(&self) -> u64 {
        self.descriptor.size as u64
    }
    fn read_range(&self, offset: u64, len: u64) -> Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        // From a plain thread, block on the runtime; from inside a multi-threaded runtime
        // (an async caller that forgot spawn_blocking), move off the worker first.
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(|| self.handle.block_on(self.fetch(offset, len))),
            Err(_) => self.handle.block_on(self.fetch(offset, len)),
        }
    }
}
