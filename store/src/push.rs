//! `Store::push`: uploads a local image's layers, config and manifest (unchanged, so its
//! digest is kept) to the registry its reference names.

use bytes::Bytes;

use crate::reference::ImageReference;
use crate::store::Store;
use crate::{Result, StoreError};

impl Store {
    /// Pushes the local image `reference` to its registry; returns the manifest digest.
    /// Lazily pulled layers are first fetched whole from where they were pulled.
    pub async fn push(&self, reference: &str) -> Result<String> {
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
        for layer in self.inner.db.image_layers(&id)? {
            let path = self.inner.blobs.path(&layer.digest)?;
            if !path.is_file() {
                return Err(StoreError::LayerNotLocal {
                    layer: layer.digest,
                    state: format!("{} (compressed blob missing)", layer.state),
                });
            }
            self.inner
                .registry
                .push_layer(&r, &layer.digest, &path, &mount_from)
                .await?;
        }
        self.inner
            .registry
            .push_blob(&r, &row.id, Bytes::from(row.config.clone()))
            .await?;
        let digest = self
            .inner
            .registry
            .push_manifest(&r, Bytes::from(row.manifest), &row.manifest_media_type)
            .await?;
        self.inner
            .db
            .add_repo_digest(&format!("{}@{digest}", r.name()), &id)?;
        Ok(digest)
    }
}
