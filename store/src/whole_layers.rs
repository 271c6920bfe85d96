//! Whole blobs of lazily pulled layers, fetched when `save` or `push` needs every byte of a
//! layer and not just the chunks its containers read.

use std::collections::HashSet;
use std::io::{Read, Write};

use futures::StreamExt;
use sha2::{Digest as _, Sha256};

use crate::db::LayerRow;
use crate::layer::unpack::DATA_TAR;
use crate::layer::Compression;
use crate::reference::ImageReference;
use crate::store::Store;
use crate::{Result, StoreError};

impl Store {
    /// Makes every layer of the images `names` (ids or references) whole on disk, so
    /// [`Store::save`] and [`Store::push`] can read it: a layer that is neither unpacked
    /// (`data.tar`) nor stored as a blob — one pulled lazily — has its compressed blob
    /// fetched in full from the repository it was pulled from, verified against its digest
    /// and, decompressed, against its diff_id; its exact uncompressed size is recorded.
    /// Returns the bytes fetched (0 when every layer was whole).
    ///
    /// Errors: `ImageNotFound`; `LayerNotLocal` for a layer with no recorded source; the
    /// registry's errors (unreachable, 404...); `DigestMismatch` for content that does not
    /// verify (nothing is kept then).
    pub async fn fetch_whole_layers(&self, names: &[String]) -> Result<u64> {
        let mut missing: Vec<LayerRow> = Vec::new();
        let mut seen = HashSet::new();
        for n in names {
            let id = self.resolve_id(n)?;
            for layer in self.inner.db.image_layers(&id)? {
                if seen.insert(layer.digest.clone())
                    && !self.layer_dir(&layer.digest)?.join(DATA_TAR).is_file()
                    && !self.inner.blobs.contains(&layer.digest)
                {
                    missing.push(layer);
                }
            }
        }
        let mut fetched = 0;
        for layer in missing {
            fetched += self.fetch_whole_layer(&layer).await?;
        }
        Ok(fetched)
    }

    async fn fetch_whole_layer(&self, layer: &LayerRow) -> Result<u64> {
        let (reference, _) = self.inner.db.layer_source(&layer.digest)?.ok_or_else(|| {
            StoreError::LayerNotLocal {
                layer: layer.digest.clone(),
                state: format!(
                    "{}, with no registry recorded to fetch it from",
                    layer.state
                ),
            }
        })?;
        let r = ImageReference::parse(&reference)?;
        let mut blob = self.inner.blobs.writer(&layer.digest)?;
        let mut stream = self.inner.registry.blob_stream(&r, &layer.digest).await?;
        while let Some(chunk) = stream.next().await {
            blob.write_all(&chunk?)
                .map_err(|e| StoreError::io(self.inner.blobs.tmp_dir(), e))?;
        }
        blob.flush()
            .map_err(|e| StoreError::io(self.inner.blobs.tmp_dir(), e))?;
        // The stream verified the blob's digest; now what it decompresses to.
        let path = blob.temp_path().to_path_buf();
        let compression =
            Compression::from_media_type(&layer.media_type).unwrap_or(Compression::Gzip);
        let (diff_id, tar_size) = tokio::task::spawn_blocking(move || -> Result<_> {
            let f = std::fs::File::open(&path).map_err(|e| StoreError::io(&path, e))?;
            let mut r = compression
                .decoder(std::io::BufReader::new(f))
                .map_err(|e| StoreError::io(&path, e))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0u64;
            loop {
                let n = r.read(&mut buf).map_err(|e| StoreError::io(&path, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
        })
        .await
        .map_err(|e| StoreError::io(self.inner.blobs.tmp_dir(), std::io::Error::other(e)))??;
        if diff_id != layer.diff_id {
            return Err(StoreError::DigestMismatch {
                what: format!("uncompressed layer {}", layer.digest),
                expected: layer.diff_id.clone(),
                actual: diff_id,
            });
        }
        // The size first: a blob in place is taken as whole, with the recorded size.
        self.inner.db.set_layer_tar_size(&layer.digest, tar_size)?;
        let (_, size) = blob.commit()?;
        tracing::info!(layer = %layer.digest, bytes = size, "fetched the whole blob of a lazily pulled layer");
        Ok(size)
    }
}
