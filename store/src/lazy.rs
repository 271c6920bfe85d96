//! Lazy layers (any [`LazyFormat`]): pulling only their TOC, registering them with the chunk cache,
//! reading their files through it, and the cache's statistics and pruning.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::{CacheStats, ChunkCache};
use crate::chunked::{BlobSource, RetryPolicy};
use crate::content::write_atomic;
use crate::db::{IndexBlob, LayerRow};
use crate::layer::Compression;
use crate::layer::LocalContentReader;
use crate::layer_index::{ChunkLocation, ChunkRef, ContentReader, FileKind, LayerIndex};
use crate::lazy_format::{self, LayerDescriptor, LazyFormat, LazyLayer, Opened};
use crate::lazy_source::StoreBlobSource;
use crate::pull::{DiffId, ProgressFn, PullProgress, PullStatus};
use crate::reference::ImageReference;
use crate::registry::Descriptor;
use crate::registry::ResolvedImage;
use crate::soci::index::{fetch_ztoc, find_index};
use crate::soci::lazy::{self as soci_lazy, ZranLayer};
use crate::soci::Ztoc;
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

/// A lazy SOCI layer's zTOC, in its layer directory (read again when the store reopens).
pub const ZTOC_FILE: &str = "soci.ztoc";

fn progress_event(progress: ProgressFn<'_>, layer: &Descriptor, status: PullStatus, current: u64) {
    progress(PullProgress {
        layer: layer.digest.clone(),
        status,
        current,
        total: layer.size,
    })
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
        if let Some(row) = self.reuse_lazy_layer(layer, progress)? {
            return Ok(Some((row, None)));
        }
        let source = self.blob_source(r, layer);
        let desc = LayerDescriptor::from(layer);
        progress_event(progress, layer, PullStatus::Downloading, 0);
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
        tracing::debug!(layer = %layer.digest, entries = lazy.index.entries.len(), ms = t0.elapsed().as_secs_f64() * 1e3, "lazy pull: TOC fetched and parsed");
        let pulled = self
            .store_lazy_layer(r, layer, format.name(), lazy, source, diff_id)
            .await?;
        progress_event(progress, layer, PullStatus::Complete, layer.size);
        Ok(Some(pulled))
    }

    /// Stores a gzip layer lazily through its SOCI zTOC (fetched and checked by the pull,
    /// see [`Store::find_soci_ztocs`]): the zTOC is kept in the layer's directory, its
    /// checkpoints registered with the chunk cache. `None` when the zTOC's file table
    /// cannot be served (logged here, once): the layer is then pulled in full.
    pub(crate) async fn pull_soci_layer(
        &self,
        r: &ImageReference,
        layer: &Descriptor,
        ztoc: Arc<Ztoc>,
        diff_id: &DiffId<'_>,
        progress: ProgressFn<'_>,
    ) -> Result<Option<(LayerRow, Option<LayerIndex>)>> {
        if let Some(row) = self.reuse_lazy_layer(layer, progress)? {
            return Ok(Some((row, None)));
        }
        progress_event(progress, layer, PullStatus::Downloading, 0);
        let index = match soci_lazy::layer_index(&layer.digest, &ztoc) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(layer = %layer.digest, error = %e, "refusing the layer's zTOC: pulling the layer in full");
                return Ok(None);
            }
        };
        let dir = self.layer_dir(&layer.digest)?;
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        write_atomic(
            self.inner.blobs.tmp_dir(),
            &dir.join(ZTOC_FILE),
            &ztoc.to_bytes(),
        )?;
        self.inner.cache.register_zran(
            &layer.digest,
            Arc::new(ZranLayer::new(Arc::unwrap_or_clone(ztoc))),
        );
        let lazy = LazyLayer {
            index,
            prefetch: Vec::new(),
            toc_digest: String::new(),
            stored_toc: None,
        };
        let source = self.blob_source(r, layer);
        let pulled = self
            .store_lazy_layer(r, layer, soci_lazy::FORMAT_NAME, lazy, source, diff_id)
            .await?;
        progress_event(progress, layer, PullStatus::Complete, layer.size);
        Ok(Some(pulled))
    }

    /// The checked zTOCs of `resolved`'s gzip layers, from a SOCI index v1 referring to its
    /// manifest, when lazy pull is on: only layers no other lazy format claims and not
    /// stored yet. Nothing found (no index, registry errors) leaves every layer to its
    /// usual pull; a zTOC that fails its checks is logged once, naming the layer and the
    /// reason, and that layer is pulled in full. Never fails the pull.
    pub(crate) async fn find_soci_ztocs(
        &self,
        resolved: &ResolvedImage,
    ) -> HashMap<String, Arc<Ztoc>> {
        let mut out = HashMap::new();
        if !self.inner.opts.lazy_pull {
            return out;
        }
        let mut candidates = Vec::new();
        for l in &resolved.manifest.layers {
            let desc = LayerDescriptor::from(l);
            let stored = matches!(self.inner.db.layer(&l.digest), Ok(Some(_)));
            if !stored
                && lazy_format::detect(&desc).is_none()
                && Compression::from_media_type(&l.media_type) == Some(Compression::Gzip)
            {
                candidates.push(l);
            }
        }
        if candidates.is_empty() {
            return out;
        }
        let r = &resolved.reference;
        let registry = &self.inner.registry;
        let index = match find_index(registry, r, &resolved.manifest_digest).await {
            Ok(Some(i)) => i,
            Ok(None) => return out,
            Err(e) => {
                tracing::info!(reference = %r, error = %e, "looking for a SOCI index failed: pulling in full");
                return out;
            }
        };
        for l in candidates {
            let Some(desc) = index.ztocs.get(&l.digest) else {
                continue;
            };
            match fetch_ztoc(registry, r, &l.digest, l.size, desc).await {
                Ok(z) => {
                    out.insert(l.digest.clone(), Arc::new(z));
                }
                Err(e) => {
                    tracing::warn!(layer = %l.digest, index = %index.digest, error = %e, "refusing the layer's zTOC: pulling the layer in full");
                }
            }
        }
        tracing::debug!(reference = %r, index = %index.digest, layers = out.len(), "SOCI index found");
        out
    }

    /// A layer stored lazily already, registered again with the cache (`None` otherwise).
    pub(crate) fn reuse_lazy_layer(
        &self,
        layer: &Descriptor,
        progress: ProgressFn<'_>,
    ) -> Result<Option<LayerRow>> {
        if let Some(row) = self.inner.db.layer(&layer.digest)? {
            if row.state == "lazy" && self.inner.db.layer_source(&row.digest)?.is_some() {
                self.register_lazy_layer(&row.digest)?;
                progress_event(progress, layer, PullStatus::AlreadyExists, layer.size);
                return Ok(Some(row));
            }
        }
        Ok(None)
    }

    fn blob_source(&self, r: &ImageReference, layer: &Descriptor) -> Arc<dyn BlobSource> {
        Arc::new(StoreBlobSource::new(
            self.inner.registry.clone(),
            r.clone(),
            layer.digest.clone(),
            layer.size,
            tokio::runtime::Handle::current(),
        ))
    }

    /// Records an opened lazy layer (row and index) and registers it with the cache.
    async fn store_lazy_layer(
        &self,
        r: &ImageReference,
        layer: &Descriptor,
        format: &str,
        lazy: LazyLayer,
        source: Arc<dyn BlobSource>,
        diff_id: &DiffId<'_>,
    ) -> Result<(LayerRow, Option<LayerIndex>)> {
        let t0 = std::time::Instant::now();
        let index = lazy.index;
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
            format: format.to_string(),
            state: "lazy".to_string(),
            tar_size,
        };
        // Readable at once, so the fetches every start needs go out while the index is
        // written (a failed write fails the pull; the registration is then unused).
        self.inner.cache.set_layer_map(&index);
        self.inner.cache.register_layer(&layer.digest, source);
        self.prefetch_user_files(&index);
        diff_id.index_known(&index);
        if !lazy.prefetch.is_empty() {
            self.prefetch_in_background(&layer.digest, lazy.prefetch);
        }
        // The TOC as fetched is the index's compact stored form: no encoding on the pull's
        // path (tens of ms for a large layer).
        let blob = match &lazy.stored_toc {
            Some(toc) => IndexBlob::of_toc(toc),
            None => IndexBlob::of_index(&index)?,
        };
        self.inner.db.put_lazy_layer(&row, &blob, &r.to_string())?;
        tracing::debug!(layer = %layer.digest, ms = t0.elapsed().as_secs_f64() * 1e3, "lazy pull: index stored");
        Ok((row, Some(index)))
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
        if self
            .inner
            .db
            .layer(digest)?
            .is_some_and(|row| row.format == soci_lazy::FORMAT_NAME)
        {
            let path = self.layer_dir(digest)?.join(ZTOC_FILE);
            let bytes = std::fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
            let ztoc = Ztoc::parse(digest, &bytes)?;
            self.inner
                .cache
                .register_zran(digest, Arc::new(ZranLayer::new(ztoc)));
        }
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
