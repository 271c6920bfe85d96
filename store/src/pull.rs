//! `Store::pull`: resolve, download layers in parallel (verified while streaming),
//! unpack each into `data.tar` + file index, then make the image visible in one
//! transaction.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_spec::image::ImageConfiguration;

use crate::db::{ImageRow, LayerRow};
use crate::layer::compression::is_zstd_chunked;
use crate::layer::{check_hardlinks, links_within, unpack_layer, Compression};
use crate::layer_index::{ChunkLocation, ChunkRef, Codec, LayerIndex};
use crate::lazy_format::{self, LayerDescriptor, LazyFormat};
use crate::program_prefetch::ProgramGate;
use crate::reference::ImageReference;
use crate::registry::{Descriptor, ResolvedImage};
use crate::store::{ImageRecord, Store};
use crate::{Result, StoreError};

/// Where one layer of a pull is; maps onto Docker's progress messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullStatus {
    Waiting,
    AlreadyExists,
    Downloading,
    Verifying,
    Extracting,
    Complete,
}

impl PullStatus {
    /// The `status` string of Docker's JSON progress stream.
    pub fn docker_status(self) -> &'static str {
        match self {
            PullStatus::Waiting => "Waiting",
            PullStatus::AlreadyExists => "Already exists",
            PullStatus::Downloading => "Downloading",
            PullStatus::Verifying => "Verifying Checksum",
            PullStatus::Extracting => "Extracting",
            PullStatus::Complete => "Pull complete",
        }
    }
}

/// A progress event for one layer: `current` of `total` bytes (compressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    /// Layer digest, `sha256:<hex>` (Docker shows its first 12 hex digits as the id).
    pub layer: String,
    pub status: PullStatus,
    pub current: u64,
    pub total: u64,
}

impl PullProgress {
    /// Docker's short layer id.
    pub fn short_id(&self) -> &str {
        let hex = self.layer.strip_prefix("sha256:").unwrap_or(&self.layer);
        &hex[..hex.len().min(12)]
    }
}

pub type ProgressFn<'a> = &'a (dyn Fn(PullProgress) + Send + Sync);

/// Drops a pull's zTOCs from the store when the pull ends (done, failed or cancelled).
struct ForgetZtocs<'a> {
    store: &'a Store,
    layers: Vec<String>,
}

impl Drop for ForgetZtocs<'_> {
    fn drop(&mut self) {
        let mut z = self.store.inner.soci_ztocs.lock().unwrap();
        for l in &self.layers {
            z.remove(l);
        }
    }
}

impl Store {
    /// Pulls `reference` (normalised like Docker) and returns the stored image (with the
    /// digest of the manifest pulled, see `pulled_record`). Cancelling
    /// the future leaves no image behind (fully stored layers are kept for a retry).
    pub async fn pull(&self, reference: &str, progress: ProgressFn<'_>) -> Result<ImageRecord> {
        let r = ImageReference::parse(reference)?;
        let t0 = std::time::Instant::now();
        let ms = move || t0.elapsed().as_secs_f64() * 1e3;
        let resolved = self.inner.registry.resolve_manifest(&r).await?;
        tracing::debug!(reference = %r, ms = ms(), "pull: manifest resolved");
        for l in &resolved.manifest.layers {
            progress(PullProgress {
                layer: l.digest.clone(),
                status: PullStatus::Waiting,
                current: 0,
                total: l.size,
            });
        }
        // The config is fetched alongside the layers (a lazy layer's TOC needs no diff_id
        // until it is recorded): one round trip for both, not two in a row.
        let (diff_tx, diff_rx) = tokio::sync::watch::channel(None);
        // The default program is fetched as soon as the config and every layer's index
        // are in, before the indexes are written and the image committed.
        let program = self.inner.opts.prefetch_program.then(|| {
            Arc::new(ProgramGate::new(
                resolved.manifest.layers.len(),
                self.inner.cache.clone(),
            ))
        });
        let config = async {
            let config = self.fetch_pulled_config(&r, &resolved).await;
            tracing::debug!(reference = %r, ms = ms(), "pull: config fetched");
            if let (Some(g), Ok((_, c))) = (&program, &config) {
                g.config(c);
            }
            let ids = match &config {
                Ok((_, c)) => Ok(Arc::new(c.rootfs().diff_ids().clone())),
                Err(_) => Err(()),
            };
            let _ = diff_tx.send(Some(ids));
            config
        };
        // Gzip layers indexed by a SOCI index are pulled lazily through their zTOCs.
        let ztocs = self.find_soci_ztocs(&resolved).await;
        let soci_layers: Vec<String> = ztocs.keys().cloned().collect();
        self.inner.soci_ztocs.lock().unwrap().extend(ztocs);
        let _forget = ForgetZtocs {
            store: self,
            layers: soci_layers,
        };
        let limit = self.inner.opts.max_concurrent_downloads.max(1);
        // Futures built eagerly: a lazy `.map(|(layer, diff_id)| ..)` closure over borrowed
        // pairs makes the whole pull future non-Send-general (rustc's HRTB limitation), so
        // it could not be spawned on tokio.
        let pulls: Vec<_> = resolved
            .manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let diff_id = DiffId {
                    rx: diff_rx.clone(),
                    index: i,
                    reference: &r,
                    program: program.clone(),
                };
                self.pull_layer(&resolved.reference, layer, diff_id, progress)
            })
            .collect();
        let layers = futures::stream::iter(pulls)
            .buffered(limit)
            .try_collect::<Vec<(LayerRow, Option<LayerIndex>)>>();
        // A shared access profile comes along with the layers, never failing the pull.
        let (config, pulled, ()) =
            futures::join!(config, layers, self.fetch_shared_profile(&resolved));
        // The config's own error explains the layers' (which only say it is missing).
        let (config_bytes, config) = config?;
        let pulled = pulled?;
        tracing::debug!(reference = %r, ms = ms(), "pull: config and layers in");
        let resolved = ResolvedImage {
            config_bytes,
            ..resolved
        };
        // Every layer was stored already and the image too, with the same layers: it was
        // checked (hard links across the stack) and its program prefetched when it was
        // first pulled. Parsing its indexes again is tens of ms per layer for nothing:
        // 20 concurrent `pull`s of one image spent most of their CPU on it.
        if pulled.iter().all(|(_, index)| index.is_none())
            && self.same_image_stored(&resolved.manifest.config.digest, &pulled)?
        {
            let rows: Vec<LayerRow> = pulled.into_iter().map(|(row, _)| row).collect();
            let id = self.commit_pulled(&r, &resolved, &config, &rows)?;
            tracing::debug!(reference = %r, ms = ms(), "pull: image up to date");
            return self.pulled_record(&id, &resolved);
        }
        let mut rows = Vec::with_capacity(pulled.len());
        let mut indexes = Vec::with_capacity(pulled.len());
        for (row, index) in pulled {
            let index = match index {
                Some(i) => i,
                None => self.inner.db.layer_index(&row.digest)?.ok_or_else(|| {
                    StoreError::InvalidIndex {
                        layer: row.digest.clone(),
                        reason: "no file index stored".to_string(),
                    }
                })?,
            };
            rows.push(row);
            indexes.push(index);
        }
        // Hard links may name files of lower layers: check them across the whole stack
        // (the rule convert applies too) before the image becomes visible.
        if !indexes.iter().all(links_within) {
            check_hardlinks(&indexes)?;
        }
        if let Some(g) = &program {
            g.all_layers(&indexes);
        }
        let id = self.commit_pulled(&r, &resolved, &config, &rows)?;
        self.inner.fresh_indexes.keep(indexes);
        tracing::debug!(reference = %r, ms = ms(), "pull: committed");
        self.pulled_record(&id, &resolved)
    }

    /// The stored image `id`, with the digest of the manifest this pull resolved: the same
    /// image (config) may be stored already from another manifest (another compression of
    /// its layers, another platform list), and the pull reports what it pulled, as Docker.
    fn pulled_record(&self, id: &str, resolved: &ResolvedImage) -> Result<ImageRecord> {
        let mut record = self.record(id)?;
        record.manifest_digest = resolved.manifest_digest.clone();
        Ok(record)
    }

    /// Whether image `id` is stored with exactly the layers `pulled`, in that order (an
    /// image of no layers counts as stored: there is nothing to check either way).
    fn same_image_stored(
        &self,
        id: &str,
        pulled: &[(LayerRow, Option<LayerIndex>)],
    ) -> Result<bool> {
        let have = self.inner.db.image_layers(id)?;
        Ok(have.len() == pulled.len()
            && have
                .iter()
                .zip(pulled)
                .all(|(h, (p, _))| h.digest == p.digest && h.state == p.state))
    }

    /// Fetches and parses the config of a resolved manifest and checks it has one diff_id
    /// per layer.
    async fn fetch_pulled_config(
        &self,
        r: &ImageReference,
        resolved: &ResolvedImage,
    ) -> Result<(Bytes, ImageConfiguration)> {
        let bytes = self.inner.registry.fetch_config(resolved).await?;
        let config: ImageConfiguration =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::InvalidManifest {
                reference: r.to_string(),
                reason: format!("bad image config: {e}"),
            })?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != resolved.manifest.layers.len() {
            return Err(StoreError::InvalidManifest {
                reference: r.to_string(),
                reason: format!(
                    "{} layers but {} diff_ids in the config",
                    resolved.manifest.layers.len(),
                    diff_ids.len()
                ),
            });
        }
        Ok((bytes, config))
    }

    /// Every container create reads the image's `etc/passwd` and `etc/group` (user and
    /// group lookup, as Docker does) before the container starts: when a lazy layer holds
    /// them, their chunks are fetched as soon as the layer is registered, in the
    /// background, so that read is local instead of a round trip on the cold start's
    /// path. (Each layer's copy: they are small, and which one the merged image shows is
    /// known only once every layer is in.) Failures are left to the read.
    pub(crate) fn prefetch_user_files(&self, index: &LayerIndex) {
        // Both in one prefetch: one request when they lie close in the blob.
        let wanted: Vec<ChunkRef> = ["etc/group", "etc/passwd"]
            .iter()
            .filter_map(|path| {
                index
                    .entries
                    .iter()
                    .find(|e| e.path.as_bytes() == path.as_bytes())
            })
            .flat_map(|e| e.chunks.iter().cloned())
            .collect();
        // A SOCI piece costs its whole span (megabytes): the pull would fetch more than
        // its zTOCs. A create that needs the files reads them then.
        let zran = wanted.iter().any(|c| {
            matches!(
                c.location,
                ChunkLocation::Compressed {
                    codec: Codec::Zran { .. },
                    ..
                }
            )
        });
        if wanted.is_empty() || zran || !self.inner.cache.is_registered(&index.digest) {
            return;
        }
        let cache = self.inner.cache.clone();
        let layer = index.digest.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = cache.prefetch(&layer, &wanted) {
                tracing::debug!(%layer, error = %e, "prefetching etc/passwd or etc/group failed");
            }
        });
    }

    /// Saves the profile artifact referring to `resolved`'s manifest, when the image has
    /// lazy layers, profile fetching is on and no profile is stored for it yet.
    async fn fetch_shared_profile(&self, resolved: &ResolvedImage) {
        let lazy = resolved
            .manifest
            .layers
            .iter()
            .any(|l| lazy_format::detect(&LayerDescriptor::from(l)).is_some());
        if !lazy || !self.inner.opts.fetch_profiles || !self.inner.opts.lazy_pull {
            return;
        }
        let layers: Vec<String> = resolved
            .manifest
            .layers
            .iter()
            .map(|l| l.digest.clone())
            .collect();
        if self.has_profile(&layers) {
            return;
        }
        match self
            .fetch_profile_artifact(&resolved.reference, &resolved.manifest_digest)
            .await
        {
            Ok(Some(p)) if p.layers == layers => match self.save_profile(p) {
                Ok(key) => {
                    tracing::info!(reference = %resolved.reference, %key, "fetched a shared access profile")
                }
                Err(e) => tracing::warn!(error = %e, "saving a shared access profile failed"),
            },
            Ok(Some(_)) => {
                tracing::warn!(reference = %resolved.reference, "ignoring a shared access profile recorded for other layers")
            }
            Ok(None) => {}
            Err(e) => {
                tracing::info!(reference = %resolved.reference, error = %e, "no shared access profile")
            }
        }
    }

    /// Stores config and manifest and makes the image visible (one transaction).
    fn commit_pulled(
        &self,
        r: &ImageReference,
        resolved: &ResolvedImage,
        config: &ImageConfiguration,
        layers: &[LayerRow],
    ) -> Result<String> {
        // Stored only now: a pull that fails leaves nothing behind.
        let id = self.inner.blobs.put(&resolved.config_bytes)?;
        if id != resolved.manifest.config.digest {
            return Err(StoreError::DigestMismatch {
                what: format!("config of {r}"),
                expected: resolved.manifest.config.digest.clone(),
                actual: id,
            });
        }
        let row = ImageRow {
            id: id.clone(),
            manifest_digest: resolved.manifest_digest.clone(),
            manifest: resolved.manifest_bytes.to_vec(),
            manifest_media_type: resolved.manifest_media_type.clone(),
            config: resolved.config_bytes.to_vec(),
            created: config.created().clone(),
            size: layers.iter().map(|l| l.tar_size).sum(),
            added: now(),
        };
        // The same image (same config, so the same diff_ids) already stored with its data
        // local, e.g. the source of an `image convert`: keep it as it is and only tag it,
        // rather than swap its local layers for lazy ones it could no longer be saved or
        // pushed from.
        let stored_local = self.inner.db.image(&id)?.is_some() && {
            let have = self.inner.db.image_layers(&id)?;
            !have.is_empty()
                && have.iter().all(|l| l.state == "local")
                && layers.iter().any(|l| l.state != "local")
        };
        if stored_local {
            if let Some(tag) = r.tagged() {
                self.inner.db.set_tag(&tag, &id)?;
            }
        } else {
            let digests: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
            self.inner
                .db
                .commit_image(&row, &digests, r.tagged().as_deref())?;
        }
        self.inner
            .db
            .add_repo_digest(&format!("{}@{}", r.name(), resolved.manifest_digest), &id)?;
        Ok(id)
    }

    /// Pulls one layer: reuse it if stored, else download (verified) and unpack. This is
    /// the single place where a layer's format decides how it is stored. The index comes
    /// back when the layer was indexed now (`None` when a stored layer was reused).
    pub(crate) async fn pull_layer(
        &self,
        r: &ImageReference,
        layer: &Descriptor,
        diff_id: DiffId<'_>,
        progress: ProgressFn<'_>,
    ) -> Result<(LayerRow, Option<LayerIndex>)> {
        // Pulls of the same layer one at a time: the later ones find it stored.
        let lock = self
            .inner
            .layer_pulls
            .lock()
            .unwrap()
            .entry(layer.digest.clone())
            .or_default()
            .clone();
        let _pulling = lock.lock().await;
        let result = self.pull_layer_locked(r, layer, diff_id, progress).await;
        drop(_pulling);
        {
            let mut pulls = self.inner.layer_pulls.lock().unwrap();
            // Only this map and the holders keep the lock: drop it once nobody waits.
            if Arc::strong_count(&lock) == 2 {
                pulls.remove(&layer.digest);
            }
        }
        result
    }

    async fn pull_layer_locked(
        &self,
        r: &ImageReference,
        layer: &Descriptor,
        diff_id: DiffId<'_>,
        progress: ProgressFn<'_>,
    ) -> Result<(LayerRow, Option<LayerIndex>)> {
        let event = |status, current| {
            progress(PullProgress {
                layer: layer.digest.clone(),
                status,
                current,
                total: layer.size,
            })
        };
        if let Some(row) = self.inner.db.layer(&layer.digest)? {
            if row.state == "local" && self.layer_dir(&row.digest)?.join("data.tar").is_file() {
                event(PullStatus::AlreadyExists, layer.size);
                return Ok((row, None));
            }
        }
        // Layers of a lazy format (zstd:chunked, eStargz) are stored lazily (TOC only) when
        // the manifest pins the TOC; otherwise they are valid tar+zstd or tar+gzip streams,
        // pulled and verified in full.
        let format = lazy_format::detect(&LayerDescriptor::from(layer));
        if let Some(format) = format.filter(|_| self.inner.opts.lazy_pull) {
            if let Some(pulled) = self
                .pull_lazy_layer(r, layer, format, &diff_id, progress)
                .await?
            {
                return Ok(pulled);
            }
        }
        if format.is_none() && self.inner.opts.lazy_pull {
            // Stored lazily through a SOCI index by an earlier pull.
            if let Some(row) = self.reuse_lazy_layer(layer, progress)? {
                return Ok((row, None));
            }
        }
        let ztoc = self
            .inner
            .soci_ztocs
            .lock()
            .unwrap()
            .get(&layer.digest)
            .cloned();
        if let Some(ztoc) = ztoc.filter(|_| format.is_none()) {
            if let Some(pulled) = self
                .pull_soci_layer(r, layer, ztoc, &diff_id, progress)
                .await?
            {
                return Ok(pulled);
            }
        }
        let compression = if is_zstd_chunked(layer.annotations.as_ref()) {
            Compression::Zstd
        } else {
            Compression::from_media_type(&layer.media_type).ok_or_else(|| {
                StoreError::Unsupported {
                    reference: r.to_string(),
                    reason: format!("layer {} has media type {}", layer.digest, layer.media_type),
                }
            })?
        };
        let diff_id = diff_id.get().await?;
        let diff_id = diff_id.as_str();
        if self.inner.blobs.contains(&layer.digest) {
            event(PullStatus::Extracting, layer.size);
            let (row, index) = self
                .store_local_layer(
                    &layer.digest,
                    &layer.media_type,
                    compression,
                    Some(diff_id),
                    format,
                )
                .await?;
            event(PullStatus::Complete, layer.size);
            return Ok((row, Some(index)));
        }
        // Download and unpack at once: the blob goes to the blob store while the same
        // bytes feed the decompressor and tar indexer on a blocking thread.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let inner = Arc::clone(&self.inner);
        let dir = self.layer_dir(&layer.digest)?;
        let (digest, did) = (layer.digest.clone(), diff_id.to_string());
        let unpack = tokio::task::spawn_blocking(move || {
            let src = ChannelReader {
                rx,
                cur: Bytes::new(),
            };
            unpack_layer(
                src,
                compression,
                &digest,
                Some(&did),
                inner.blobs.tmp_dir(),
                &dir,
            )
        });
        let mut blob = self.inner.blobs.writer(&layer.digest)?;
        let downloaded: Result<()> = async {
            let mut stream = self.inner.registry.blob_stream(r, &layer.digest).await?;
            let mut total = 0u64;
            let mut feeding = true;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                total += chunk.len() as u64;
                blob.write_all(&chunk)
                    .map_err(|e| StoreError::io(self.inner.blobs.tmp_dir(), e))?;
                // A closed channel means the unpacker failed; its error is reported below.
                if feeding && tx.send(chunk).await.is_err() {
                    feeding = false;
                }
                event(PullStatus::Downloading, total);
            }
            Ok(())
        }
        .await;
        drop(tx);
        event(PullStatus::Verifying, layer.size);
        let unpacked = unpack.await.expect("layer unpack task panicked");
        let committed = downloaded.and_then(|()| {
            blob.flush()
                .map_err(|e| StoreError::io(self.inner.blobs.tmp_dir(), e))?;
            blob.commit()
        });
        let (mut unpacked, (_, size)) = match (unpacked, committed) {
            (Ok(u), Ok(c)) => (u, c),
            (u, c) => {
                // The download's error comes first: it explains the unpacker's.
                if u.is_ok() {
                    let _ = std::fs::remove_dir_all(self.layer_dir(&layer.digest)?);
                }
                return Err(c.err().or(u.err()).expect("one side failed"));
            }
        };
        event(PullStatus::Extracting, layer.size);
        let row = LayerRow {
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
            size,
            diff_id: unpacked.diff_id,
            format: compression.as_str().to_string(),
            state: "local".to_string(),
            tar_size: unpacked.tar_size,
        };
        if let Some(f) = format {
            lazy_format::hide_paths(f, &mut unpacked.index);
        }
        self.inner.db.put_layer(&row, &unpacked.index)?;
        event(PullStatus::Complete, layer.size);
        Ok((row, Some(unpacked.index)))
    }

    /// Unpacks a stored blob into `layers/<hex>/data.tar`, indexes it and records it;
    /// returns the row and the index. The paths a lazy `format` hides (eStargz's TOC and
    /// landmarks) are left out of the index, so the layer shows the same files either way.
    pub(crate) async fn store_local_layer(
        &self,
        digest: &str,
        media_type: &str,
        compression: Compression,
        diff_id: Option<&str>,
        format: Option<&'static dyn LazyFormat>,
    ) -> Result<(LayerRow, LayerIndex)> {
        let this = self.clone();
        let digest = digest.to_string();
        let media_type = media_type.to_string();
        let diff_id = diff_id.map(str::to_string);
        let inner = Arc::clone(&this.inner);
        tokio::task::spawn_blocking(move || {
            let blob = inner.blobs.open_blob(&digest)?;
            let size = blob
                .metadata()
                .map_err(|e| StoreError::io(inner.blobs.path(&digest).unwrap_or_default(), e))?
                .len();
            let dir = this.layer_dir(&digest)?;
            let mut unpacked = unpack_layer(
                blob,
                compression,
                &digest,
                diff_id.as_deref(),
                inner.blobs.tmp_dir(),
                &dir,
            )?;
            if let Some(f) = format {
                lazy_format::hide_paths(f, &mut unpacked.index);
            }
            let row = LayerRow {
                digest: digest.clone(),
                media_type,
                size,
                diff_id: unpacked.diff_id,
                format: compression.as_str().to_string(),
                state: "local".to_string(),
                tar_size: unpacked.tar_size,
            };
            inner.db.put_layer(&row, &unpacked.index)?;
            Ok((row, unpacked.index))
        })
        .await
        .expect("layer unpack task panicked")
    }
}

/// A layer's diff_id, from the image config being fetched beside the layers.
pub(crate) struct DiffId<'a> {
    rx: tokio::sync::watch::Receiver<Option<std::result::Result<Arc<Vec<String>>, ()>>>,
    index: usize,
    reference: &'a ImageReference,
    /// The pull's program prefetch, told of this layer's index as soon as it is known.
    pub(crate) program: Option<Arc<ProgramGate>>,
}

impl DiffId<'_> {
    /// Hands this layer's file index to the pull's program prefetch.
    pub(crate) fn index_known(&self, index: &LayerIndex) {
        if let Some(g) = &self.program {
            g.layer(self.index, index);
        }
    }
}

impl<'a> DiffId<'a> {
    /// A diff_id already known (the config was read before), e.g. for a single layer.
    pub(crate) fn known(reference: &'a ImageReference, diff_id: String) -> DiffId<'a> {
        let (_tx, rx) = tokio::sync::watch::channel(Some(Ok(Arc::new(vec![diff_id]))));
        DiffId {
            rx,
            index: 0,
            reference,
            program: None,
        }
    }

    /// Waits for the config; an error when it could not be fetched or parsed (the pull
    /// reports the config's own error instead).
    pub(crate) async fn get(&self) -> Result<String> {
        let missing = || StoreError::InvalidManifest {
            reference: self.reference.to_string(),
            reason: "the image config could not be read".to_string(),
        };
        let mut rx = self.rx.clone();
        let ids = rx.wait_for(Option::is_some).await.map_err(|_| missing())?;
        match ids.as_ref() {
            Some(Ok(ids)) => ids.get(self.index).cloned().ok_or_else(missing),
            _ => Err(missing()),
        }
    }
}

/// Reads the chunks a download sends; end of file when the sender is gone (which, after
/// an interrupted download, makes the unpacker fail on a truncated stream).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
