//! A [`BlobSource`] over the store's own [`RegistryClient`], so lazy chunk fetches use the
//! same credentials, insecure-registry settings and download counter as pulls.

use bytes::Bytes;

use crate::chunked::BlobSource;
use crate::reference::ImageReference;
use crate::registry::RegistryClient;
use crate::Result;

pub struct StoreBlobSource {
    registry: RegistryClient,
    reference: ImageReference,
    digest: String,
    size: u64,
    handle: tokio::runtime::Handle,
}

impl StoreBlobSource {
    /// `reference` names the repository holding the blob; `digest` and `size` come from the
    /// verified manifest. `handle` is the runtime FUSE threads block on.
    pub fn new(
        registry: RegistryClient,
        reference: ImageReference,
        digest: impl Into<String>,
        size: u64,
        handle: tokio::runtime::Handle,
    ) -> Self {
        StoreBlobSource {
            registry,
            reference,
            digest: digest.into(),
            size,
            handle,
        }
    }
}

impl BlobSource for StoreBlobSource {
    fn digest(&self) -> &str {
        &self.digest
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_range(&self, offset: u64, len: u64) -> Result<Bytes> {
        let fetch = self
            .registry
            .fetch_range(&self.reference, &self.digest, offset, len);
        // Plain threads (FUSE workers) block on the runtime; a multi-threaded runtime's
        // worker moves off itself first.
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(|| self.handle.block_on(fetch)),
            Err(_) => self.handle.block_on(fetch),
        }
    }
}
