//! `Store::push`: uploads a local image's layers, config and manifest (unchanged, so its
//! digest is kept) to the registry its reference names.

use bytes::Bytes;

use crate::reference::ImageReference;
use crate::registry::BlobPushed;
use crate::store::Store;
use crate::{Result, StoreError};

/// A push's progress for one layer, named by its `diff_id` (as Docker names layers in its
/// push output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushProgress {
    /// Before any layer is sent, once per layer.
    Preparing(String),
    /// The layer's blob is in the registry.
    Done(String, BlobPushed),
    /// The manifest is in the registry: its size in bytes (Docker's `size:` of the last
    /// push line).
    Manifest(usize),
}

pub type PushProgressFn<'a> = &'a (dyn Fn(PushProgress) + Send + Sync);

impl Store {
    /// Pushes the local image `reference` to its registry; returns the manifest digest.
    /// Lazily pulled layers are first fetched whole from where they were pulled.
    pub async fn push(&self, reference: &str) -> Result<String> {
        self.push_with_progress(reference, &|_| {}).await
    }

    /// [`push`](Self::push), telling `progress` what happens to each layer.
    pub async fn push_with_progress(
        &self,
        reference: &str,
        progress: PushProgressFn<'_>,
    ) -> Result<String> {
        let r = ImageReference::parse(reference)?;
        let id = self.resolve_id(reference)?;
        self.fetch_whole_layers(std::slice::from_ref(&id)).await?;
        let row = self
            .inner
            .db
            .image(&id)?
            .ok_or_else(|| StoreError::ImageNotFound {
                name: reference.to_string(),
            })?;
        // Repositories of the same registry the image was pulled from or pushed to hold
        // its layers: the registry is asked to mount them from there (as Docker does).
        let mount_from: Vec<String> = self
            .inner
            .db
            .repo_digests_of(&id)?
            .iter()
            .filter_map(|name| ImageReference::parse(name).ok())
            .filter(|o| o.registry == r.registry && o.repository != r.repository)
            .map(|o| o.repository)
            .collect();
        let layers = self.inner.db.image_layers(&id)?;
        for layer in &layers {
            progress(PushProgress::Preparing(layer.diff_id.clone()));
        }
        for layer in layers {
            let path = self.inner.blobs.path(&layer.digest)?;
            if !path.is_file() {
                return Err(StoreError::LayerNotLocal {
                    layer: layer.digest,
                    state: format!("{} (compressed blob missing)", layer.state),
                });
            }
            let done = self
                .inner
                .registry
                .push_layer(&r, &layer.digest, &path, &mount_from)
                .await?;
            progress(PushProgress::Done(layer.diff_id, done));
        }
        self.inner
            .registry
            .push_blob(&r, &row.id, Bytes::from(row.config.clone()))
            .await?;
        let manifest_size = row.manifest.len();
        let digest = self
            .inner
            .registry
            .push_manifest(&r, Bytes::from(row.manifest), &row.manifest_media_type)
            .await?;
        progress(PushProgress::Manifest(manifest_size));
        self.inner
            .db
            .add_repo_digest(&format!("{}@{digest}", r.name()), &id)?;
        Ok(digest)
    }
}
