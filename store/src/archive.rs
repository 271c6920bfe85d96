//! `docker save` / `docker load` archives. [`Store::save`] writes what Docker 25+ writes:
//! an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>` with uncompressed
//! layer tars, configs and manifests) that is also a docker-archive (`manifest.json` whose
//! `Config` and `Layers` name those blobs, `RepoTags` the tags). [`Store::load`] reads
//! either form (several images per archive; layer tars plain, gzip or zstd), verifies every
//! layer against its config's `diff_ids`, and stores the images locally with their ids
//! (config digests) kept.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::import::{write_layer_tar, DiffIdWriter, Encoder};
use crate::layer::unpack::DATA_TAR;
use crate::layer::Compression;
use crate::reference::ImageReference;
use crate::registry::manifest::{Descriptor, ImageManifest, OCI_CONFIG, OCI_MANIFEST};
use crate::store::Store;
use crate::{Result, StoreError};

const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// One image a load stored: its id and the tags it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub id: String,
    pub tags: Vec<String>,
}

fn append_bytes<W: Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append_data(&mut h, name, data)
        .map_err(|e| StoreError::io(Path::new(name), e))
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

impl Store {
    /// The uncompressed tar of a local layer (`data.tar`), or its compressed blob
    /// decompressed; a lazy layer whose data is not here is refused.
    pub(crate) fn layer_tar(
        &self,
        layer: &crate::store::LayerInfo,
    ) -> Result<Box<dyn Read + Send>> {
        let data = self.layer_dir(&layer.digest)?.join(DATA_TAR);
        if let Ok(f) = std::fs::File::open(&data) {
            return Ok(Box::new(f));
        }
        let blob = self.inner.blobs.path(&layer.digest)?;
        let compression =
            Compression::from_media_type(&layer.media_type).unwrap_or(Compression::Gzip);
        match std::fs::File::open(&blob) {
            Ok(f) => compression
                .decoder(std::io::BufReader::new(f))
                .map_err(|e| StoreError::io(&blob, e)),
            Err(_) => Err(StoreError::LayerNotLocal {
                layer: layer.digest.clone(),
                state: format!(
                    "{} (lazily pulled: Store::fetch_whole_layers fetches it)",
                    layer.state
                ),
            }),
        }
    }

    /// Writes `names` (ids or references; each reference's tag is recorded) as one
    /// archive into `out` (blocking). Lazily pulled layers must have been fetched whole
    /// first ([`Store::fetch_whole_layers`]); otherwise `LayerNotLocal`.
    pub fn save<W: Write>(&self, names: &[String], out: W) -> Result<W> {
        let mut b = tar::Builder::new(out);
        let mut written: HashSet<String> = HashSet::new();
        let mut docker_manifest = Vec::new();
        let mut index_manifests = Vec::new();
        // Which tags each image gets (an id alone: none).
        let mut images: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut order = Vec::new();
        for n in names {
            let id = self.resolve_id(n)?;
            let tag = ImageReference::parse(n)
                .ok()
                .filter(|_| !n.starts_with("sha256:") && !id.contains(n.as_str()))
                .and_then(|r| r.tagged());
            if !images.contains_key(&id) {
                order.push(id.clone());
            }
            let tags = images.entry(id).or_default();
            if let Some(t) = tag {
                if !tags.contains(&t) {
                    tags.push(t);
                }
            }
        }
        for id in order {
            let tags = &images[&id];
            let img = self.image(&id)?;
            let mut layer_paths = Vec::new();
            let mut descriptors = Vec::new();
            for (layer, diff_id) in img.layers.iter().zip(&img.diff_ids) {
                let name = format!("blobs/sha256/{}", hex_of(diff_id));
                if written.insert(name.clone()) {
                    let path = self.layer_dir(&layer.digest)?.join(DATA_TAR);
                    let mut r = self.layer_tar(layer)?;
                    let mut h = tar::Header::new_gnu();
                    h.set_size(layer.tar_size);
                    h.set_mode(0o644);
                    h.set_mtime(0);
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_cksum();
                    // `take` and the size check keep the archive consistent.
                    let mut limited = (&mut r).take(layer.tar_size);
                    b.append_data(&mut h, &name, &mut limited)
                        .map_err(|e| StoreError::io(&path, e))?;
                }
                layer_paths.push(name);
                descriptors.push(Descriptor {
                    media_type: OCI_LAYER_TAR.to_string(),
                    digest: diff_id.clone(),
                    size: layer.tar_size,
                    annotations: None,
                    platform: None,
                    urls: None,
                });
            }
            let config_name = format!("blobs/sha256/{}", hex_of(&id));
            if written.insert(config_name.clone()) {
                append_bytes(&mut b, &config_name, &img.config_bytes)?;
            }
            let manifest = ImageManifest {
                schema_version: 2,
                media_type: Some(OCI_MANIFEST.to_string()),
                config: Descriptor {
                    media_type: OCI_CONFIG.to_string(),
                    digest: id.clone(),
                    size: img.config_bytes.len() as u64,
                    annotations: None,
                    platform: None,
                    urls: None,
                },
                layers: descriptors,
                annotations: None,
            };
            let mbytes = serde_json::to_vec(&manifest).expect("manifest serializes");
            let mdigest = crate::content::sha256_digest(&mbytes);
            let mname = format!("blobs/sha256/{}", hex_of(&mdigest));
            if written.insert(mname.clone()) {
                append_bytes(&mut b, &mname, &mbytes)?;
            }
            let familiar: Vec<String> = tags
                .iter()
                .map(|t| {
                    ImageReference::parse(t)
                        .map(|r| r.familiar())
                        .unwrap_or_else(|_| t.clone())
                })
                .collect();
            docker_manifest.push(serde_json::json!({
                "Config": config_name,
                "RepoTags": familiar,
                "Layers": layer_paths,
            }));
            let mut annotations = serde_json::Map::new();
            if let Some(t) = tags.first() {
                annotations.insert("io.containerd.image.name".into(), serde_json::json!(t));
                if let Some(tag) = t.rsplit_once(':').map(|(_, t)| t) {
                    annotations.insert(
                        "org.opencontainers.image.ref.name".into(),
                        serde_json::json!(tag),
                    );
                }
            }
            index_manifests.push(serde_json::json!({
                "mediaType": OCI_MANIFEST, "digest": mdigest, "size": mbytes.len(),
                "annotations": annotations,
            }));
        }
        append_bytes(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": index_manifests,
        });
        append_bytes(
            &mut b,
            "index.json",
            &serde_json::to_vec(&index).expect("json"),
        )?;
        append_bytes(
            &mut b,
            "manifest.json",
            &serde_json::to_vec(&docker_manifest).expect("json"),
        )?;
        b.into_inner()
            .map_err(|e| StoreError::io(Path::new("archive"), e))
    }

    /// Loads the archive file `archive` (unpacked under the store's tmp directory,
    /// removed after).
    pub async fn load(&self, archive: &Path) -> Result<Vec<Loaded>> {
        let dir = tempfile::tempdir_in(self.inner.blobs.tmp_dir())
            .map_err(|e| StoreError::io(self.inner.blobs.tmp_dir(), e))?;
        {
            let archive = archive.to_path_buf();
            let target = dir.path().to_path_buf();
            tokio::task::spawn_blocking(move || {
                let f = std::fs::File::open(&archive).map_err(|e| StoreError::io(&archive, e))?;
                tar::Archive::new(std::io::BufReader::new(f))
                    .unpack(&target)
                    .map_err(|e| StoreError::Corrupt {
                        what: format!("image archive {}", archive.display()),
                        reason: e.to_string(),
                    })
            })
            .await
            .expect("archive unpack task panicked")?;
        }
        let root = dir.path();
        let bad = |reason: String| StoreError::Corrupt {
            what: "image archive".into(),
            reason,
        };
        // (config path, layer paths, tags) per image.
        let mut wanted: Vec<(PathBuf, Vec<PathBuf>, Vec<String>)> = Vec::new();
        if let Ok(text) = std::fs::read(root.join("manifest.json")) {
            let m: Vec<serde_json::Value> =
                serde_json::from_slice(&text).map_err(|e| bad(format!("manifest.json: {e}")))?;
            for e in m {
                let config = e["Config"]
                    .as_str()
                    .ok_or_else(|| bad("manifest.json: no Config".into()))?;
                let layers = e["Layers"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .filter_map(|p| p.as_str())
                            .map(|p| root.join(p))
                            .collect()
                    })
                    .unwrap_or_default();
                let tags = e["RepoTags"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .filter_map(|p| p.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                wanted.push((root.join(config), layers, tags));
            }
        } else if let Ok(text) = std::fs::read(root.join("index.json")) {
            let index: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| bad(format!("index.json: {e}")))?;
            let blob = |d: &str| root.join("blobs/sha256").join(hex_of(d));
            for m in index["manifests"].as_array().cloned().unwrap_or_default() {
                let d = m["digest"]
                    .as_str()
                    .ok_or_else(|| bad("index.json: no digest".into()))?;
                let mb = std::fs::read(blob(d)).map_err(|e| bad(format!("manifest {d}: {e}")))?;
                let man: ImageManifest =
                    serde_json::from_slice(&mb).map_err(|e| bad(format!("manifest {d}: {e}")))?;
                let tags = m["annotations"]["io.containerd.image.name"]
                    .as_str()
                    .map(|t| vec![t.to_string()])
                    .unwrap_or_default();
                wanted.push((
                    blob(&man.config.digest),
                    man.layers.iter().map(|l| blob(&l.digest)).collect(),
                    tags,
                ));
            }
        } else {
            return Err(bad(
                "neither manifest.json nor index.json in the archive".into()
            ));
        }
        let mut out = Vec::new();
        for (config_path, layer_paths, tags) in wanted {
            let config_bytes = std::fs::read(&config_path)
                .map_err(|e| bad(format!("{}: {e}", config_path.display())))?;
            let config: serde_json::Value = serde_json::from_slice(&config_bytes)
                .map_err(|e| bad(format!("config {}: {e}", config_path.display())))?;
            let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if diff_ids.len() != layer_paths.len() {
                return Err(bad(format!(
                    "config {} names {} layers, the archive {}",
                    config_path.display(),
                    diff_ids.len(),
                    layer_paths.len()
                )));
            }
            let mut descriptors = Vec::new();
            let mut size = 0;
            for (path, diff_id) in layer_paths.iter().zip(&diff_ids) {
                let (digest, blob_size, got) = {
                    let this = self.clone();
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || this.write_gzip_blob(&path))
                        .await
                        .expect("layer compress task panicked")?
                };
                if &got != diff_id {
                    let _ = self.inner.blobs.remove(&digest);
                    return Err(StoreError::DigestMismatch {
                        what: format!("layer {} of the archive", path.display()),
                        expected: diff_id.clone(),
                        actual: got,
                    });
                }
                let (row, _) = self
                    .store_local_layer(
                        &digest,
                        Compression::Gzip.oci_media_type(),
                        Compression::Gzip,
                        Some(diff_id),
                        None,
                    )
                    .await?;
                size += row.tar_size;
                descriptors.push(Descriptor {
                    media_type: Compression::Gzip.oci_media_type().to_string(),
                    digest,
                    size: blob_size,
                    annotations: None,
                    platform: None,
                    urls: None,
                });
            }
            let tags: Vec<String> = tags
                .iter()
                .map(|t| {
                    ImageReference::parse(t)?
                        .tagged()
                        .ok_or_else(|| StoreError::InvalidReference {
                            reference: t.clone(),
                            reason: "a tag is needed".into(),
                        })
                })
                .collect::<Result<_>>()?;
            let img = self.store_image(config_bytes, descriptors, size, &tags)?;
            out.push(Loaded { id: img.id, tags });
        }
        Ok(out)
    }

    /// Compresses a layer tar file (plain, gzip or zstd) into a gzip blob; returns
    /// (digest, size, diff_id).
    fn write_gzip_blob(&self, source: &Path) -> Result<(String, u64, String)> {
        let blob = self.inner.blobs.writer_unknown()?;
        let enc = Encoder::Gzip(flate2::write::GzEncoder::new(
            blob,
            flate2::Compression::fast(),
        ));
        let w = write_layer_tar(
            source,
            DiffIdWriter {
                inner: enc,
                hasher: Sha256::new(),
                size: 0,
            },
        )?;
        let diff_id = format!("sha256:{}", hex::encode(w.hasher.finalize()));
        let blob = w.inner.finish().map_err(|e| StoreError::io(source, e))?;
        let (digest, size) = blob.commit()?;
        Ok((digest, size, diff_id))
    }
}
