//! Lazy zstd:chunked layers: pulling only their TOC, registering them with the chunk cache,
//! reading their files through it, and the cache's statistics and pruning.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::{CacheStats, ChunkCache};
use crate::chunked::{self, BlobSource, RetryPolicy};
use crate::db::LayerRow;
use crate::layer::LocalContentReader;
use crate::layer_index::{ChunkLocation, ChunkRef, ContentReader, FileKind, LayerIndex};
use crate::lazy_source::StoreBlobSource;
use crate::pull::{DiffId, ProgressFn, PullProgress, PullStatus};
use crate::reference::ImageReference;
use crate::registry::Descriptor;
use crate::store::Store;
use crate::{Result, StoreError};

/// `format` of lazy layers in the database.
pub const FORMAT_ZSTD_CHUNKED: &str = "zstd:chunked";

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
    /// Stores a zstd:chunked layer lazily: only its TOC is fetched. `None` when the TOC is
    /// not pinned by the manifest's annotation (the caller then pulls the blob in full,
    /// which verifies it).
    pub(crate) async fn pull_lazy_layer(
        &self,
        r: &ImageReference,
        layer: &Descriptor,
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
        let annotations: std::collections::BTreeMap<String, String> = layer
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        event(PullStatus::Downloading, 0);
        let t0 = std::time::Instant::now();
        let (index, info) = chunked::open_lazy_layer_async(
            source.clone(),
            layer.digest.clone(),
            annotations,
            RetryPolicy::default(),
        )
        .await?;
        tracing::debug!(layer = %layer.digest, entries = index.entries.len(), ms = t0.elapsed().as_secs_f64() * 1e3, "lazy pull: TOC fetched and parsed");
        if !info.verified {
            tracing::info!(layer = %layer.digest, "TOC not pinned by the manifest: pulling the layer in full");
            return Ok(None);
        }
        if !info.exact_names {
            tracing::info!(layer = %layer.digest, "names the TOC cannot carry: pulling the layer in full");
            return Ok(None);
        }
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
            format: FORMAT_ZSTD_CHUNKED.to_string(),
            state: "lazy".to_string(),
            tar_size,
        };
        self.inner.db.put_lazy_layer(&row, &index, &r.to_string())?;
        tracing::debug!(layer = %layer.digest, ms = t0.elapsed().as_secs_f64() * 1e3, "lazy pull: index stored");
        self.inner.cache.set_layer_map(&index);
        self.inner.cache.register_layer(&layer.digest, source);
        event(PullStatus::Complete, layer.size);
        Ok(Some((row, Some(index))))
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
