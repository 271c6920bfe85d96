//! Lazy layers (any [`LazyFormat`]): pulling only their TOC, registering them with the chunk cache,
//! reading their files through it, and the cache's statistics and pruning.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::{CacheStats, ChunkCache};
use crate::chunked::{BlobSource, RetryPolicy};
use crate::db::LayerRow;
use crate::layer::LocalContentReader;
use crate::layer_index::{ChunkLocation, ChunkRef, ContentReader, FileKind, LayerIndex};
use crate::lazy_format::{self, LayerDescriptor, LazyFormat, Opened};
use crate::lazy_source::StoreBlobSource;
use crate::pull::{DiffId, ProgressFn, PullProgress, PullStatus};
use crate::reference::ImageReference;
use crate::registry::Descriptor;
use crate::store::Store;
use crate::{Result, StoreError};

/// `format` of lazy zstd:chunked layers in the database.
pub const FORMAT_ZSTD_CHUNKED: &str = crate::chunked::FORMAT_NAME;
/// `format` of lazy eStargz layers in the database.
pub const FORMAT_ESTARGZ: &str = crate::estargz::FORMAT_NAME;

/// The chunk cache's state, for `skiff info` and `system df`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkCacheUsage {
    /// Bytes of decompressed chunks on disk.
    pub disk_bytes: u64,
    /// Chunks on disk.
    pub chunks: u64,
    /// Counters since the store was opened (`fetched_bytes` = compressed bytes fetched).
    pub counters: CacheStats,
}

/// Sends each file's reads to where its chunks are: `data.tar` of a local layer, or the
/// chunk cache (all chunks of one file are of one kind).
pub(crate) struct DispatchReader {
    pub(crate) local: Arc<LocalContentReader>,
    pub(crate) cache: Arc<ChunkCache>,
}

impl DispatchReader {
    fn pick(&self, chunks: &[ChunkRef]) -> &dyn ContentReader {
        match chunks.first().map(|c| &c.location) {
            Some(ChunkLocation::Compressed { .. }) => self.cache.as_ref(),
            _ => self.local.as_ref(),
        }
    }
}

impl ContentReader for DispatchReader {
    fn read_at(
        &self,
        layer_digest: &str,
        chunks: &[ChunkRef],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        self.pick(chunks).read_at(layer_digest, chunks, offset, buf)
    }

    fn backing_file(&self, layer_digest: &str, chunks: &[ChunkRef]) -> Option<std::fs::File> {
        self.pick(chunks).backing_file(layer_digest, chunks)
    }
}

impl Store {
    /// Stores a layer of a lazy `format` lazily: only its TOC is fetched, and the chunks
    /// the format asks to prefetch are fetched in the background. `None` when the layer
    /// must be pulled in full instead (TOC not pinned by the manifest, or a TOC that does
    /// not verify or lies about the blob: logged here, once; the full pull verifies the
    /// blob against its digest, so a wrong byte is never served).
    pub(crate) async fn pull_lazy_layer(
        &self,
        r: &ImageReference,
        layer: &Descriptor,
        format: &'static dyn LazyFormat,
        diff_id: &DiffId<'_>,
        progress: ProgressFn<'_>,
    ) -> Result<Option<(LayerRow, Option<LayerIndex>)>> {
        let event = |status, current| {
            progress(PullProgress {
                layer: layer.digest.clone(),
                status,
                current,
                total: layer.size,
            })
        };
        if let Some(row) = self.inner.db.layer(&layer.digest)? {
            if row.state == "lazy" && self.inner.db.layer_source(&row.digest)?.is_some() {
                self.register_lazy_layer(&row.digest)?;
                event(PullStatus::AlreadyExists, layer.size);
                return Ok(Some((row, None)));
            }
        }
        let source: Arc<dyn BlobSource> = Arc::new(StoreBlobSource::new(
            self.inner.registry.clone(),
            r.clone(),
            layer.digest.clone(),
            layer.size,
            tokio::runtime::Handle::current(),
        ));
        let desc = LayerDescriptor::from(layer);
        event(PullStatus::Downloading, 0);
        let t0 = std::time::Instant::now();
        let opened =
            lazy_format::open_async(format, source.clone(), desc, RetryPolicy::default()).await;
        let lazy = match opened {
            Ok(Opened::Lazy(l)) => l,
            Ok(Opened::Full(reason)) => {
                tracing::info!(layer = %layer.digest, format = format.name(), %reason, "pulling the layer in full");
                return Ok(None);
            }
            Err(e) if lazy_format::is_content_error(&e) => {
                tracing::warn!(layer = %layer.digest, format = format.name(), error = %e, "refusing the layer's TOC: pulling the layer in full");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let index = lazy.index;
        tracing::debug!(layer = %layer.digest, entries = index.entries.len(), ms = t0.elapsed().as_secs_f64() * 1e3, "lazy pull: TOC fetched and parsed");
        let tar_size = index
            .entries
            .iter()
            .filter(|e| e.kind == FileKind::Regular)
            .map(|e| e.size)
            .sum();
        let row = LayerRow {
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
            size: layer.size,
            diff_id: diff_id.get().await?,
            format: format.name().to_string(),
            state: "lazy".to_string(),
            tar_size,
        };
        self.inner.db.put_lazy_layer(&row, &index, &r.to_string())?;
        tracing::debug!(layer = %layer.digest, ms = t0.elapsed().as_secs_f64() * 1e3, "lazy pull: index stored");
        self.inner.cache.set_layer_map(&index);
        self.inner.cache.register_layer(&layer.digest, source);
        if !lazy.prefetch.is_empty() {
            self.prefetch_in_background(&layer.digest, lazy.prefetch);
        }
        event(PullStatus::Complete, layer.size);
        Ok(Some((row, Some(index))))
    }

    /// Fetches `chunks` of a registered lazy layer on the blocking pool; failures are left
    /// to the reads that need them.
    fn prefetch_in_background(&self, layer: &str, chunks: Vec<ChunkRef>) {
        let cache = self.inner.cache.clone();
        let layer = layer.to_string();
        tokio::task::spawn_blocking(move || {
            let t0 = std::time::Instant::now();
            match cache.prefetch(&layer, &chunks) {
                Ok(()) => {
                    tracing::debug!(%layer, chunks = chunks.len(), ms = t0.elapsed().as_millis() as u64, "prefetched the layer's landmark region")
                }
                Err(e) => {
                    tracing::debug!(%layer, error = %e, "prefetching the layer's landmark region failed")
                }
            }
        });
    }

    /// Makes a stored lazy layer readable through the chunk cache (a no-op when it is
    /// already). Needs a tokio runtime: FUSE threads block on it for range requests.
    pub(crate) fn register_lazy_layer(&self, digest: &str) -> Result<()> {
        if self.inner.cache.is_registered(digest) {
            return Ok(());
        }
        let (reference, size) =
            self.inner
                .db
                .layer_source(digest)?
                .ok_or_else(|| StoreError::LayerNotRegistered {
                    layer: digest.to_string(),
                })?;
        let r = ImageReference::parse(&reference)?;
        let handle =
            tokio::runtime::Handle::try_current().map_err(|_| StoreError::LayerNotRegistered {
                layer: digest.to_string(),
            })?;
        let source = StoreBlobSource::new(self.inner.registry.clone(), r, digest, size, handle);
        self.inner.cache.register_layer(digest, Arc::new(source));
        Ok(())
    }

    /// The chunk cache's usage and counters.
    pub fn cache_stats(&self) -> Result<ChunkCacheUsage> {
        Ok(ChunkCacheUsage {
            disk_bytes: self.inner.cache.disk_usage(),
            chunks: self.inner.cache.chunk_count()?,
            counters: self.inner.cache.stats(),
        })
    }

    /// Drops cached chunks no stored layer index references (never one being read);
    /// returns the bytes freed.
    pub fn prune_cache(&self) -> Result<u64> {
        let keep = self.inner.db.referenced_chunks()?;
        self.inner.cache.prune_unreferenced(&keep)
    }

    /// Compressed sizes of the lazy layers of stored images, by digest.
    pub fn lazy_layers(&self) -> Result<HashMap<String, u64>> {
        let mut out = HashMap::new();
        for img in self.inner.db.all_images()? {
            for l in self.inner.db.image_layers(&img.id)? {
                if l.state == "lazy" {
                    out.insert(l.digest, l.size);
                }
            }
        }
        Ok(out)
    }
}
