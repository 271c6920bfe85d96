//! `Store::commit`: a new image made of a parent image (or nothing: `scratch`) plus at most
//! one new layer written from a directory, with a given config. This is what `docker
//! commit` and every step of a Dockerfile build store: the layer is kept locally (unpacked
//! and indexed like a pulled one, so the image starts from the local store) and its
//! zstd:chunked blob (with its TOC annotations in the manifest) is pushed as it is, so a
//! built image starts lazily wherever skiff pulls it.

use std::path::{Path, PathBuf};

use crate::chunked::writer::{write_chunked_file, WriterOptions, MEDIA_TYPE_LAYER_ZSTD};
use crate::db::ImageRow;
use crate::layer::tar_builder::{append_overlay_upper, append_tree};
use crate::layer::Compression;
use crate::pull::now;
use crate::reference::ImageReference;
use crate::registry::manifest::{Descriptor, ImageManifest, OCI_CONFIG, OCI_MANIFEST};
use crate::store::{ImageRecord, Store};
use crate::{Result, StoreError};

/// Where a new layer's files come from.
#[derive(Debug, Clone)]
pub enum LayerDir {
    /// A container's overlayfs upper directory: whiteouts become OCI `.wh.` files; the
    /// relative paths in `skip` (mount points the runtime created) are left out.
    Overlay { dir: PathBuf, skip: Vec<String> },
    /// A plain tree, added as it is (a `COPY`).
    Tree(PathBuf),
}

/// What a commit adds on top of its parent.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// The parent image (id or name); `None` starts from nothing.
    pub parent: Option<String>,
    pub layer: Option<LayerDir>,
    /// The image config's `config` object (`Env`, `Cmd`, `Labels`, ... in Docker's names;
    /// keys oci-spec does not model, like `Healthcheck` and `OnBuild`, are kept).
    pub config: serde_json::Value,
    /// The history entry of this commit (`created_by`, `comment`).
    pub created_by: String,
    pub comment: Option<String>,
    pub author: Option<String>,
    /// Normalised or familiar references to tag the image with.
    pub tags: Vec<String>,
}

/// A layer a commit wrote: its zstd:chunked blob's descriptor and its diff_id.
struct Written {
    descriptor: Descriptor,
    diff_id: String,
}

/// Writes `layer` as a zstd:chunked blob into the store (so a built image pushed as it is
/// starts lazily elsewhere, and stays a plain tar+zstd image for other engines).
fn write_layer(store: &Store, layer: &LayerDir) -> Result<Written> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let root: &Path = match layer {
        LayerDir::Overlay { dir, skip } => {
            let skip: Vec<&str> = skip.iter().map(String::as_str).collect();
            append_overlay_upper(&mut b, dir, &skip)?;
            dir
        }
        LayerDir::Tree(dir) => {
            append_tree(&mut b, dir)?;
            dir
        }
    };
    let tar = b.into_inner().map_err(|e| StoreError::io(root, e))?;
    let tmp = tempfile::tempdir_in(store.inner.blobs.tmp_dir())
        .map_err(|e| StoreError::io(store.inner.blobs.tmp_dir(), e))?;
    let out = tmp.path().join("layer.zst");
    let c = write_chunked_file(&tar, &out, &WriterOptions::default())?;
    drop(tar);
    let mut w = store.inner.blobs.writer(&c.digest)?;
    let mut f = std::fs::File::open(&out).map_err(|e| StoreError::io(&out, e))?;
    std::io::copy(&mut f, &mut w).map_err(|e| StoreError::io(&out, e))?;
    w.commit()?;
    Ok(Written {
        descriptor: Descriptor {
            media_type: MEDIA_TYPE_LAYER_ZSTD.to_string(),
            digest: c.digest,
            size: c.size,
            annotations: Some(c.annotations.into_iter().collect()),
            platform: None,
            urls: None,
        },
        diff_id: c.diff_id,
    })
}

impl Store {
    /// Stores `req` as a new image and tags it; returns its record. The image id is the
    /// digest of its config, so committing the same thing twice gives the same image.
    pub async fn commit(&self, req: CommitRequest) -> Result<ImageRecord> {
        let tags = req
            .tags
            .iter()
            .map(|t| {
                ImageReference::parse(t)?
                    .tagged()
                    .ok_or_else(|| StoreError::InvalidReference {
                        reference: t.clone(),
                        reason: "a tag is needed, not a digest".to_string(),
                    })
            })
            .collect::<Result<Vec<String>>>()?;
        let parent = match &req.parent {
            Some(p) => Some(self.image(p)?),
            None => None,
        };
        let mut layers: Vec<String> = parent
            .as_ref()
            .map(|p| p.layers.iter().map(|l| l.digest.clone()).collect())
            .unwrap_or_default();
        let mut diff_ids: Vec<String> = parent
            .as_ref()
            .map(|p| p.diff_ids.clone())
            .unwrap_or_default();
        let parent_config: serde_json::Value = parent
            .as_ref()
            .and_then(|p| serde_json::from_slice(&p.config_bytes).ok())
            .unwrap_or_else(|| serde_json::json!({}));
        let mut size = parent.as_ref().map_or(0, |p| p.size);
        let mut new_layer = None;
        if let Some(layer) = &req.layer {
            let this = self.clone();
            let layer = layer.clone();
            let written = tokio::task::spawn_blocking(move || write_layer(&this, &layer))
                .await
                .expect("commit layer task panicked")?;
            let (row, _index) = self
                .store_local_layer(
                    &written.descriptor.digest,
                    MEDIA_TYPE_LAYER_ZSTD,
                    Compression::Zstd,
                    Some(&written.diff_id),
                    None,
                )
                .await?;
            size += row.tar_size;
            layers.push(written.descriptor.digest.clone());
            diff_ids.push(written.diff_id);
            new_layer = Some(written.descriptor);
        }
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut history: Vec<serde_json::Value> = parent_config
            .get("history")
            .and_then(|h| h.as_array())
            .cloned()
            .unwrap_or_default();
        let mut entry = serde_json::json!({"created": created, "created_by": req.created_by});
        if let Some(c) = &req.comment {
            entry["comment"] = serde_json::json!(c);
        }
        if let Some(a) = &req.author {
            entry["author"] = serde_json::json!(a);
        }
        if new_layer.is_none() {
            entry["empty_layer"] = serde_json::json!(true);
        }
        history.push(entry);
        let arch = crate::registry::manifest::host_platform().architecture;
        let mut config = serde_json::json!({
            "created": created,
            "architecture": parent_config.get("architecture").cloned().unwrap_or(serde_json::json!(arch)),
            "os": "linux",
            "config": req.config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        if let Some(a) = &req.author {
            config["author"] = serde_json::json!(a);
        }
        // Docker's image JSON also keeps the commit message at the top (image inspect's
        // `Comment`).
        if let Some(c) = &req.comment {
            config["comment"] = serde_json::json!(c);
        }
        let config_bytes = serde_json::to_vec(&config).expect("config serializes");
        // The parent's layer descriptors as its manifest has them (zstd:chunked annotations
        // included), so they are pushed as they are.
        let from_manifest = parent.as_ref().and_then(|p| {
            let row = self.inner.db.image(&p.id).ok()??;
            let m: ImageManifest = serde_json::from_slice(&row.manifest).ok()?;
            let same = m.layers.len() == p.layers.len()
                && m.layers
                    .iter()
                    .zip(&p.layers)
                    .all(|(d, l)| d.digest == l.digest);
            same.then_some(m.layers)
        });
        let mut descriptors: Vec<Descriptor> = from_manifest
            .or_else(|| {
                parent.as_ref().map(|p| {
                    p.layers
                        .iter()
                        .map(|l| Descriptor {
                            media_type: l.media_type.clone(),
                            digest: l.digest.clone(),
                            size: l.size,
                            annotations: None,
                            platform: None,
                            urls: None,
                        })
                        .collect()
                })
            })
            .unwrap_or_default();
        if let Some(d) = new_layer {
            descriptors.push(d);
        }
        self.store_image(config_bytes, descriptors, size, &tags)
    }

    /// Records an image made of `config_bytes` (its id is their digest) and layers already
    /// in the store, with an OCI manifest, tagged with the normalised `tags`.
    pub(crate) fn store_image(
        &self,
        config_bytes: Vec<u8>,
        layers: Vec<Descriptor>,
        size: u64,
        tags: &[String],
    ) -> Result<ImageRecord> {
        let config_digest = self.inner.blobs.put(&config_bytes)?;
        let created = serde_json::from_slice::<serde_json::Value>(&config_bytes)
            .ok()
            .and_then(|c| {
                c.get("created")
                    .and_then(|c| c.as_str())
                    .map(str::to_string)
            });
        let digests: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_string()),
            config: Descriptor {
                media_type: OCI_CONFIG.to_string(),
                digest: config_digest.clone(),
                size: config_bytes.len() as u64,
                annotations: None,
                platform: None,
                urls: None,
            },
            layers,
            annotations: None,
        };
        let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serializes");
        let image = ImageRow {
            id: config_digest.clone(),
            manifest_digest: crate::content::sha256_digest(&manifest_bytes),
            manifest: manifest_bytes,
            manifest_media_type: OCI_MANIFEST.to_string(),
            config: config_bytes,
            created,
            size,
            added: now(),
        };
        self.inner
            .db
            .commit_image(&image, &digests, tags.first().map(String::as_str))?;
        if !tags.is_empty() {
            self.inner.db.set_last_tag_time(&config_digest)?;
        }
        for t in tags.iter().skip(1) {
            self.tag(&config_digest, t)?;
        }
        self.record(&config_digest)
    }
}
