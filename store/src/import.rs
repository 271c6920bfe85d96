//! `Store::import`: a one-layer image from a root filesystem directory or a tar, stored
//! locally (like `docker import`), so it runs and can be pushed without a registry.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::content::BlobWriter;
use crate::db::ImageRow;
use crate::layer::tar_builder::append_tree;
use crate::layer::Compression;
use crate::pull::now;
use crate::reference::ImageReference;
use crate::registry::manifest::{Descriptor, ImageManifest, OCI_CONFIG, OCI_MANIFEST};
use crate::store::{ImageRecord, Store};
use crate::{Result, StoreError};

/// Config settings of an imported image (`docker import --change`).
#[derive(Debug, Clone, Default)]
pub struct ImageChanges {
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `80/tcp`, `53/udp`, ...
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// `VOLUME` paths.
    pub volumes: Vec<String>,
    /// Config `created`; now when `None` (fixed values make reproducible images).
    pub created: Option<String>,
    /// The history entry's `comment` (`docker import -m`); dockerd's `Imported from -`
    /// when `None`.
    pub comment: Option<String>,
}

/// Hashes the uncompressed tar (the diff_id) on its way into the compressor.
pub(crate) struct DiffIdWriter<W> {
    pub(crate) inner: W,
    pub(crate) hasher: Sha256,
    pub(crate) size: u64,
}

impl<W: Write> Write for DiffIdWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) enum Encoder {
    Plain(BlobWriter),
    Gzip(flate2::write::GzEncoder<BlobWriter>),
    Zstd(zstd::stream::write::Encoder<'static, BlobWriter>),
}

impl Encoder {
    pub(crate) fn finish(self) -> std::io::Result<BlobWriter> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// Writes the layer tar for `source` (directory or tar file, the latter possibly gzip or
/// zstd compressed) into `out`.
pub(crate) fn write_layer_tar<W: Write>(source: &Path, out: W) -> Result<W> {
    let md = std::fs::metadata(source).map_err(|e| StoreError::io(source, e))?;
    if md.is_dir() {
        let mut b = tar::Builder::new(out);
        append_tree(&mut b, source)?;
        return b.into_inner().map_err(|e| StoreError::io(source, e));
    }
    let mut f = BufReader::new(File::open(source).map_err(|e| StoreError::io(source, e))?);
    let magic = {
        use std::io::BufRead;
        f.fill_buf()
            .map_err(|e| StoreError::io(source, e))?
            .to_vec()
    };
    let compression = if magic.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    };
    let mut r: Box<dyn Read + Send> = compression
        .decoder(f)
        .map_err(|e| StoreError::io(source, e))?;
    let mut out = out;
    std::io::copy(&mut r, &mut out).map_err(|e| StoreError::io(source, e))?;
    Ok(out)
}

impl Store {
    /// Builds a one-layer image from `source` (a rootfs directory or a tar), tags it
    /// `reference` and stores it locally, layer unpacked and indexed like a pulled one.
    pub async fn import(
        &self,
        source: &Path,
        reference: &str,
        changes: &ImageChanges,
        compression: Compression,
    ) -> Result<ImageRecord> {
        let r = ImageReference::parse(reference)?;
        let tag = r.tagged().ok_or_else(|| StoreError::InvalidReference {
            reference: reference.to_string(),
            reason: "import needs a tag, not a digest".to_string(),
        })?;
        let this = self.clone();
        let source: PathBuf = source.to_path_buf();
        // 1. The compressed layer blob, hashed both ways while written.
        let (layer_digest, layer_size, diff_id) =
            tokio::task::spawn_blocking(move || -> Result<(String, u64, String)> {
                let blob = this.inner.blobs.writer_unknown()?;
                let enc = match compression {
                    Compression::None => Encoder::Plain(blob),
                    Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                        blob,
                        flate2::Compression::default(),
                    )),
                    Compression::Zstd => Encoder::Zstd(
                        zstd::stream::write::Encoder::new(blob, 3)
                            .map_err(|e| StoreError::io(&source, e))?,
                    ),
                };
                let w = write_layer_tar(
                    &source,
                    DiffIdWriter {
                        inner: enc,
                        hasher: Sha256::new(),
                        size: 0,
                    },
                )?;
                let diff_id = format!("sha256:{}", hex::encode(w.hasher.finalize()));
                let blob = w.inner.finish().map_err(|e| StoreError::io(&source, e))?;
                let (digest, size) = blob.commit()?;
                Ok((digest, size, diff_id))
            })
            .await
            .expect("import task panicked")?;
        let media_type = compression.oci_media_type();
        let (row, index) = self
            .store_local_layer(&layer_digest, media_type, compression, Some(&diff_id), None)
            .await?;
        // The rule pull applies: a hard link must name an earlier entry (one layer here).
        crate::layer::check_hardlinks([&index])?;
        drop(index);
        // 2. Config and manifest.
        let created = changes.created.clone().unwrap_or_else(|| {
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        });
        let config = config_json(changes, &created, &diff_id);
        let config_bytes = serde_json::to_vec(&config).expect("config serializes");
        let config_digest = self.inner.blobs.put(&config_bytes)?;
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
            layers: vec![Descriptor {
                media_type: media_type.to_string(),
                digest: layer_digest.clone(),
                size: layer_size,
                annotations: None,
                platform: None,
                urls: None,
            }],
            annotations: None,
        };
        let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serializes");
        let image = ImageRow {
            id: config_digest.clone(),
            manifest_digest: crate::content::sha256_digest(&manifest_bytes),
            manifest: manifest_bytes,
            manifest_media_type: OCI_MANIFEST.to_string(),
            config: config_bytes,
            created: Some(created),
            size: row.tar_size,
            added: now(),
        };
        self.inner
            .db
            .commit_image(&image, &[layer_digest], Some(&tag))?;
        self.inner.db.set_last_tag_time(&config_digest)?;
        self.record(&config_digest)
    }
}

fn config_json(c: &ImageChanges, created: &str, diff_id: &str) -> serde_json::Value {
    let mut cfg = serde_json::Map::new();
    if let Some(v) = &c.cmd {
        cfg.insert("Cmd".into(), serde_json::json!(v));
    }
    if let Some(v) = &c.entrypoint {
        cfg.insert("Entrypoint".into(), serde_json::json!(v));
    }
    if !c.env.is_empty() {
        cfg.insert("Env".into(), serde_json::json!(c.env));
    }
    if let Some(v) = &c.working_dir {
        cfg.insert("WorkingDir".into(), serde_json::json!(v));
    }
    if let Some(v) = &c.user {
        cfg.insert("User".into(), serde_json::json!(v));
    }
    if !c.exposed_ports.is_empty() {
        let ports: serde_json::Map<String, serde_json::Value> = c
            .exposed_ports
            .iter()
            .map(|p| {
                let p = if p.contains('/') {
                    p.clone()
                } else {
                    format!("{p}/tcp")
                };
                (p, serde_json::json!({}))
            })
            .collect();
        cfg.insert("ExposedPorts".into(), serde_json::Value::Object(ports));
    }
    if !c.volumes.is_empty() {
        let vols: serde_json::Map<String, serde_json::Value> = c
            .volumes
            .iter()
            .map(|v| (v.clone(), serde_json::json!({})))
            .collect();
        cfg.insert("Volumes".into(), serde_json::Value::Object(vols));
    }
    if !c.labels.is_empty() {
        cfg.insert("Labels".into(), serde_json::json!(c.labels));
    }
    let arch = crate::registry::manifest::host_platform().architecture;
    let comment = c.comment.as_deref().unwrap_or("Imported from -");
    serde_json::json!({
        "created": created,
        // dockerd's import sets the image's comment as well as its history entry's.
        "comment": comment,
        "architecture": arch,
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        // dockerd's import history: no `created_by`, the message as `comment`.
        "history": [{
            "created": created,
            "comment": comment,
        }],
    })
}
