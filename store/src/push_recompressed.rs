//! `skiff push --compression zstd:chunked|estargz|gzip|zstd`: a local image pushed with
//! every layer recompressed from its uncompressed tar. zstd:chunked, gzip and zstd keep the
//! same tar, so the config and its diff_ids are pushed byte for byte (the image id is kept)
//! and the manifest's digest is recorded as the image's repo digest. zstd:chunked layers
//! carry their TOC annotations, so the pushed image starts lazily on any skiff, and stays
//! a valid tar+zstd image for other engines. eStargz appends its TOC entry (and a
//! `.no.prefetch.landmark`) to each tar, as `image convert --format estargz` does: the
//! config pushed names the new diff_ids, so the pushed image is another image (its id
//! differs from the local one, and it is not recorded as a repo digest of it).

use std::collections::HashMap;
use std::io::{Read, Write};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::chunked::writer::{write_chunked_file, WriterOptions, MEDIA_TYPE_LAYER_ZSTD};
use crate::layer::Compression;
use crate::reference::ImageReference;
use crate::registry::manifest::{OCI_CONFIG, OCI_MANIFEST};
use crate::registry::Descriptor;
use crate::store::Store;
use crate::{Result, StoreError};

/// How `push` writes layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushCompression {
    ZstdChunked,
    Estargz,
    Gzip,
    Zstd,
}

impl PushCompression {
    /// `zstd:chunked`, `estargz`, `gzip`, `zstd` (the words `image convert --format` uses).
    pub fn parse(s: &str) -> Option<PushCompression> {
        match s {
            "zstd:chunked" => Some(PushCompression::ZstdChunked),
            "estargz" => Some(PushCompression::Estargz),
            "gzip" => Some(PushCompression::Gzip),
            "zstd" => Some(PushCompression::Zstd),
            _ => None,
        }
    }
}

/// Hashes what passes to a file.
struct HashingFile {
    f: std::fs::File,
    h: Sha256,
    n: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.f.write(buf)?;
        self.h.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.f.flush()
    }
}

impl Store {
    /// Pushes `reference` with every layer recompressed as `how`; returns the digest of
    /// the manifest pushed.
    pub async fn push_recompressed(
        &self,
        reference: &str,
        how: PushCompression,
        progress: crate::push::PushProgressFn<'_>,
    ) -> Result<String> {
        let r = ImageReference::parse(reference)?;
        let img = self.image(reference)?;
        self.fetch_whole_layers(std::slice::from_ref(&img.id))
            .await?;
        let tmp = tempfile::tempdir_in(self.inner.blobs.tmp_dir())
            .map_err(|e| StoreError::io(self.inner.blobs.tmp_dir(), e))?;
        let mut descriptors = Vec::new();
        let mut pushed_diff_ids = Vec::new();
        for diff_id in &img.diff_ids {
            progress(crate::push::PushProgress::Preparing(diff_id.clone()));
        }
        for (i, (layer, diff_id)) in img.layers.iter().zip(&img.diff_ids).enumerate() {
            let out = tmp.path().join(format!("layer{i}"));
            let this = self.clone();
            let layer = layer.clone();
            let out2 = out.clone();
            // (descriptor, the local tar's digest, the pushed layer's diff_id)
            let (desc, got, pushed_diff_id) =
                tokio::task::spawn_blocking(move || -> Result<(Descriptor, String, String)> {
                    let mut tar = Vec::new();
                    this.layer_tar(&layer)?
                        .read_to_end(&mut tar)
                        .map_err(|e| StoreError::io(&out2, e))?;
                    let diff_id = crate::content::sha256_digest(&tar);
                    if how == PushCompression::Estargz {
                        let file =
                            std::fs::File::create(&out2).map_err(|e| StoreError::io(&out2, e))?;
                        let mut w = std::io::BufWriter::new(file);
                        let opts = crate::estargz::WriterOptions {
                            landmark: crate::estargz::Landmark::NoPrefetch,
                            ..Default::default()
                        };
                        let l = crate::estargz::write_estargz(&tar, &mut w, &opts)?;
                        w.flush().map_err(|e| StoreError::io(&out2, e))?;
                        return Ok((
                            Descriptor {
                                media_type: Compression::Gzip.oci_media_type().to_string(),
                                digest: l.digest,
                                size: l.size,
                                annotations: Some(
                                    l.annotations.into_iter().collect::<HashMap<_, _>>(),
                                ),
                                platform: None,
                                urls: None,
                            },
                            diff_id,
                            l.diff_id,
                        ));
                    }
                    if how == PushCompression::ZstdChunked {
                        let c = write_chunked_file(&tar, &out2, &WriterOptions::default())?;
                        return Ok((
                            Descriptor {
                                media_type: MEDIA_TYPE_LAYER_ZSTD.to_string(),
                                digest: c.digest,
                                size: c.size,
                                annotations: Some(
                                    c.annotations.into_iter().collect::<HashMap<_, _>>(),
                                ),
                                platform: None,
                                urls: None,
                            },
                            c.diff_id.clone(),
                            c.diff_id,
                        ));
                    }
                    let f = std::fs::File::create(&out2).map_err(|e| StoreError::io(&out2, e))?;
                    let mut w = HashingFile {
                        f,
                        h: Sha256::new(),
                        n: 0,
                    };
                    let compression = match how {
                        PushCompression::Gzip => {
                            let mut e = flate2::write::GzEncoder::new(
                                &mut w,
                                flate2::Compression::default(),
                            );
                            e.write_all(&tar)
                                .and_then(|()| e.finish().map(|_| ()))
                                .map_err(|e| StoreError::io(&out2, e))?;
                            Compression::Gzip
                        }
                        _ => {
                            let mut e = zstd::stream::write::Encoder::new(&mut w, 3)
                                .map_err(|e| StoreError::io(&out2, e))?;
                            e.write_all(&tar)
                                .and_then(|()| e.finish().map(|_| ()))
                                .map_err(|e| StoreError::io(&out2, e))?;
                            Compression::Zstd
                        }
                    };
                    w.flush().map_err(|e| StoreError::io(&out2, e))?;
                    Ok((
                        Descriptor {
                            media_type: compression.oci_media_type().to_string(),
                            digest: format!("sha256:{}", hex::encode(w.h.finalize())),
                            size: w.n,
                            annotations: None,
                            platform: None,
                            urls: None,
                        },
                        diff_id.clone(),
                        diff_id,
                    ))
                })
                .await
                .expect("recompress task panicked")?;
            if &got != diff_id {
                return Err(StoreError::DigestMismatch {
                    what: format!("uncompressed layer {} of {reference}", img.layers[i].digest),
                    expected: diff_id.clone(),
                    actual: got,
                });
            }
            let done = self
                .inner
                .registry
                .push_blob_file(&r, &desc.digest, &out)
                .await?;
            progress(crate::push::PushProgress::Done(diff_id.clone(), done));
            let _ = std::fs::remove_file(&out);
            descriptors.push(desc);
            pushed_diff_ids.push(pushed_diff_id);
        }
        let same_tars = pushed_diff_ids == img.diff_ids;
        let (config_digest, config_bytes) = if same_tars {
            (img.id.clone(), Bytes::from(img.config_bytes.clone()))
        } else {
            let bytes = crate::convert::config_with_diff_ids(
                &img.config_bytes,
                &pushed_diff_ids,
                reference,
            )?;
            (crate::content::sha256_digest(&bytes), bytes)
        };
        let config_len = config_bytes.len();
        self.inner
            .registry
            .push_blob(&r, &config_digest, config_bytes)
            .await?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_len},
            "layers": descriptors,
        });
        let body = serde_json::to_vec(&manifest).expect("manifest serializes");
        let manifest_size = body.len();
        let digest = self
            .inner
            .registry
            .push_manifest(&r, Bytes::from(body), OCI_MANIFEST)
            .await?;
        progress(crate::push::PushProgress::Manifest(manifest_size));
        if same_tars {
            self.inner
                .db
                .add_repo_digest(&format!("{}@{digest}", r.name()), &img.id)?;
        }
        Ok(digest)
    }
}
