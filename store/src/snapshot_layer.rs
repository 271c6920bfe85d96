//! One layer, on its own, for a containerd remote snapshotter: containerd asks for layers
//! one at a time (by image reference and layer digest) and stacks them itself.

use oci_spec::image::ImageConfiguration;

use crate::layer_index::LayerIndex;
use crate::lazy_format::{self, LayerDescriptor};
use crate::reference::ImageReference;
use crate::store::Store;
use crate::{Result, StoreError};

impl Store {
    /// The file index of layer `digest` of image `reference`, served from the chunk cache.
    ///
    /// A layer this store already holds (lazy or pulled in full) is used as it is. Else
    /// the manifest is resolved (with the daemon's credentials, mirrors and TLS settings)
    /// and a zstd:chunked layer whose TOC the manifest pins is stored lazily: only its TOC
    /// is fetched. `Ok(None)`: the layer is in no format skiff reads lazily (or lazy pulls
    /// are off), so the caller unpacks it. Errors: the registry's (unreachable, 401, 404),
    /// [`StoreError::InvalidManifest`] when the manifest does not list `digest`. Call it
    /// inside the tokio runtime FUSE reads will block on (the layer is registered there).
    pub async fn snapshot_layer(
        &self,
        reference: &str,
        digest: &str,
    ) -> Result<Option<LayerIndex>> {
        if let Some(row) = self.inner.db.layer(digest)? {
            let usable = match row.state.as_str() {
                "lazy" => self.inner.db.layer_source(digest)?.is_some(),
                "local" => self.layer_dir(digest)?.join("data.tar").is_file(),
                _ => false,
            };
            if usable {
                if row.state == "lazy" {
                    self.register_lazy_layer(digest)?;
                }
                if let Some(index) = self.inner.db.layer_index(digest)? {
                    if row.state == "lazy" {
                        self.inner.cache.set_layer_map(&index);
                    }
                    return Ok(Some(index));
                }
            }
        }
        if !self.inner.opts.lazy_pull {
            return Ok(None);
        }
        let r = ImageReference::parse(reference)?;
        let resolved = self.inner.registry.resolve(&r).await?;
        let not_listed = || StoreError::InvalidManifest {
            reference: r.to_string(),
            reason: format!("the manifest lists no layer {digest}"),
        };
        let pos = resolved
            .manifest
            .layers
            .iter()
            .position(|l| l.digest == digest)
            .ok_or_else(not_listed)?;
        let layer = &resolved.manifest.layers[pos];
        let Some(format) = lazy_format::detect(&LayerDescriptor::from(layer)) else {
            return Ok(None);
        };
        let config: ImageConfiguration =
            serde_json::from_slice(&resolved.config_bytes).map_err(|e| {
                StoreError::InvalidManifest {
                    reference: r.to_string(),
                    reason: format!("bad image config: {e}"),
                }
            })?;
        let diff_id = config
            .rootfs()
            .diff_ids()
            .get(pos)
            .cloned()
            .ok_or_else(|| StoreError::InvalidManifest {
                reference: r.to_string(),
                reason: format!("no diff_id for layer {pos}"),
            })?;
        let Some((_, index)) = self
            .pull_lazy_layer(
                &resolved.reference,
                layer,
                format,
                &crate::pull::DiffId::known(&resolved.reference, diff_id),
                &|_| {},
            )
            .await?
        else {
            return Ok(None);
        };
        match index {
            Some(index) => Ok(Some(index)),
            None => Ok(self.inner.db.layer_index(digest)?),
        }
    }
}

impl Store {
    /// Keeps layer `digest` for `holder` (e.g. `containerd-snapshot:<id>`): removing images
    /// that list it no longer deletes it. Errors: the database's.
    pub fn hold_layer(&self, digest: &str, holder: &str) -> Result<()> {
        self.inner.db.hold_layer(digest, holder)
    }

    /// Releases `holder`'s hold; a layer then neither held nor listed by an image is
    /// deleted (rows, blob, unpacked files; its cached chunks age out of the LRU).
    /// Returns whether it was. Errors name the layer directory that could not be removed.
    pub fn release_layer(&self, digest: &str, holder: &str) -> Result<bool> {
        if !self.inner.db.release_layer(digest, holder)? {
            return Ok(false);
        }
        self.inner.reader.forget(digest);
        self.inner.cache.unregister_layer(digest);
        self.inner.blobs.remove(digest)?;
        let dir = self.layer_dir(digest)?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(StoreError::io(&dir, e)),
        }
    }
}
