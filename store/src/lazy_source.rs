//! A [`BlobSource`] over the store's own [`RegistryClient`], so lazy chunk fetches use the
//! same credentials, insecure-registry settings and download counter as pulls.

use bytes::Bytes;

use crate::chunked::{BlobSource, RangeStream};
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
        self.block(
            self.registry
                .fetch_range(&self.reference, &self.digest, offset, len),
        )
    }

    fn open_range(&self, offset: u64, len: u64) -> Result<Box<dyn RangeStream>> {
        let stream =
            self.block(
                self.registry
                    .range_stream(&self.reference, &self.digest, offset, len),
            )?;
        Ok(Box::new(Pieces {
            stream,
            handle: self.handle.clone(),
        }))
    }
}

impl StoreBlobSource {
    /// Runs `f` to completion from a blocking caller: plain threads (FUSE workers) block
    /// on the runtime; a multi-threaded runtime's worker moves off itself first.
    fn block<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        block_on(&self.handle, f)
    }
}

fn block_on<T>(handle: &tokio::runtime::Handle, f: impl std::future::Future<Output = T>) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::block_in_place(|| handle.block_on(f)),
        Err(_) => handle.block_on(f),
    }
}

/// A registry range received piece by piece.
struct Pieces {
    stream: futures::stream::BoxStream<'static, Result<Bytes>>,
    handle: tokio::runtime::Handle,
}

impl RangeStream for Pieces {
    fn next_piece(&mut self) -> Result<Option<Bytes>> {
        use futures::StreamExt;
        block_on(&self.handle, self.stream.next()).transpose()
    }
}
