//! Registry-to-registry conversion of an image to a lazy format: every layer is downloaded
//! (verified), decompressed, rewritten and pushed with its TOC annotations. zstd:chunked
//! keeps the very same tar (the config, diff_ids included, is reused byte for byte);
//! eStargz appends its TOC entry to the tar, so the config gets the new diff_ids.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use oci_spec::image::ImageConfiguration;
use serde_json::json;

use std::io::Write;

use sha2::{Digest, Sha256};

use crate::chunked::writer::{write_chunked_file, WriterOptions, MEDIA_TYPE_LAYER_ZSTD};
use crate::estargz;
use crate::layer::compression::is_zstd_chunked;
use crate::layer::compression::OCI_LAYER_GZIP;
use crate::layer::tar_index::index_tar;
use crate::layer::{Compression, HardlinkCheck};
use crate::reference::ImageReference;
use crate::registry::{Descriptor, RegistryClient};
use crate::{Result, StoreError};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// One converted layer.
#[derive(Debug, Clone)]
pub struct ConvertedLayer {
    pub source_digest: String,
    pub source_size: u64,
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
}

/// What [`convert_image`] pushed.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    pub layers: Vec<ConvertedLayer>,
    pub config_digest: String,
    /// Digest of the pushed OCI manifest.
    pub manifest_digest: String,
}

/// The format [`convert_image_to`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvertFormat {
    #[default]
    ZstdChunked,
    /// eStargz with a `.no.prefetch.landmark` (no workload was recorded to order files by),
    /// as `ctr-remote image optimize --no-optimize` writes it.
    Estargz,
}

impl ConvertFormat {
    /// The format's name, as `--format` takes it and `layers.format` records it.
    pub fn name(self) -> &'static str {
        match self {
            ConvertFormat::ZstdChunked => crate::chunked::FORMAT_NAME,
            ConvertFormat::Estargz => crate::estargz::FORMAT_NAME,
        }
    }
}

impl std::str::FromStr for ConvertFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "zstd:chunked" => Ok(ConvertFormat::ZstdChunked),
            "estargz" => Ok(ConvertFormat::Estargz),
            other => Err(format!("unknown format {other:?}: zstd:chunked or estargz")),
        }
    }
}

/// Converts `src` (an index resolves to the registry client's platform) to zstd:chunked and
/// pushes it as `dst`. Temporary files go to `tmp_dir` and are removed as soon as each
/// layer is pushed. `on_layer` is told about each layer when it is done.
pub async fn convert_image(
    registry: &RegistryClient,
    src: &ImageReference,
    dst: &ImageReference,
    tmp_dir: &Path,
    on_layer: &(dyn Fn(&ConvertedLayer) + Send + Sync),
) -> Result<ConvertReport> {
    convert_image_to(
        registry,
        src,
        dst,
        ConvertFormat::ZstdChunked,
        tmp_dir,
        on_layer,
    )
    .await
}

/// [`convert_image`] to `format`.
pub async fn convert_image_to(
    registry: &RegistryClient,
    src: &ImageReference,
    dst: &ImageReference,
    format: ConvertFormat,
    tmp_dir: &Path,
    on_layer: &(dyn Fn(&ConvertedLayer) + Send + Sync),
) -> Result<ConvertReport> {
    std::fs::create_dir_all(tmp_dir).map_err(|e| StoreError::io(tmp_dir, e))?;
    let resolved = registry.resolve(src).await?;
    let config: ImageConfiguration =
        serde_json::from_slice(&resolved.config_bytes).map_err(|e| {
            StoreError::InvalidManifest {
                reference: src.to_string(),
                reason: format!("bad image config: {e}"),
            }
        })?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != resolved.manifest.layers.len() {
        return Err(StoreError::InvalidManifest {
            reference: src.to_string(),
            reason: format!(
                "{} layers but {} diff_ids in the config",
                resolved.manifest.layers.len(),
                diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::new();
    let mut descriptors = Vec::new();
    // The hard-link rule pull applies, so convert never writes an image pull refuses.
    let links = std::sync::Arc::new(std::sync::Mutex::new(HardlinkCheck::default()));
    for (layer, diff_id) in resolved.manifest.layers.iter().zip(diff_ids) {
        let (done, desc) = convert_layer(
            registry,
            &resolved.reference,
            (dst, format),
            layer,
            diff_id,
            tmp_dir,
            links.clone(),
        )
        .await?;
        on_layer(&done);
        layers.push(done);
        descriptors.push(desc);
    }
    let new_diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config_bytes = if new_diff_ids.iter().zip(diff_ids).all(|(n, o)| n == o) {
        resolved.config_bytes.clone()
    } else {
        // The tars changed (eStargz's TOC entry): the config names the new ones.
        config_with_diff_ids(&resolved.config_bytes, &new_diff_ids, &src.to_string())?
    };
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config_bytes)));
    registry
        .push_blob(dst, &config_digest, config_bytes.clone())
        .await?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": descriptors,
    });
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| StoreError::InvalidManifest {
        reference: dst.to_string(),
        reason: e.to_string(),
    })?;
    let manifest_digest = registry
        .push_manifest(dst, Bytes::from(body), OCI_MANIFEST)
        .await?;
    Ok(ConvertReport {
        layers,
        config_digest,
        manifest_digest,
    })
}

/// A rewritten layer blob, before it is pushed.
struct Written {
    digest: String,
    size: u64,
    diff_id: String,
    annotations: std::collections::BTreeMap<String, String>,
    media_type: &'static str,
}

/// `config` (an image config's JSON, of image `reference`) naming `diff_ids` as its layers,
/// the rest kept as it was: for layers whose tars were rewritten (eStargz appends its TOC
/// entry). Errors: [`StoreError::InvalidManifest`] for a config that does not parse.
pub(crate) fn config_with_diff_ids(
    config: &[u8],
    diff_ids: &[impl AsRef<str>],
    reference: &str,
) -> Result<Bytes> {
    let mut v: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| StoreError::InvalidManifest {
            reference: reference.to_string(),
            reason: format!("bad image config: {e}"),
        })?;
    let ids: Vec<&str> = diff_ids.iter().map(AsRef::as_ref).collect();
    v["rootfs"]["diff_ids"] = json!(ids);
    Ok(Bytes::from(
        serde_json::to_vec(&v).expect("a parsed config serializes"),
    ))
}

/// Downloads, decompresses, rewrites and pushes one layer; returns its new descriptor.
async fn convert_layer(
    registry: &RegistryClient,
    src: &ImageReference,
    (dst, format): (&ImageReference, ConvertFormat),
    layer: &Descriptor,
    diff_id: &str,
    tmp_dir: &Path,
    links: std::sync::Arc<std::sync::Mutex<HardlinkCheck>>,
) -> Result<(ConvertedLayer, Descriptor)> {
    let compression = if is_zstd_chunked(layer.annotations.as_ref()) {
        Compression::Zstd
    } else {
        Compression::from_media_type(&layer.media_type).ok_or_else(|| StoreError::Unsupported {
            reference: src.to_string(),
            reason: format!("layer {} has media type {}", layer.digest, layer.media_type),
        })?
    };
    let tmp = tempfile::Builder::new()
        .prefix("convert-")
        .tempdir_in(tmp_dir)
        .map_err(|e| StoreError::io(tmp_dir, e))?;
    let blob_path = tmp.path().join("blob");
    let tar_path = tmp.path().join("layer.tar");
    let out_path = tmp.path().join("chunked");
    {
        let mut f = std::fs::File::create(&blob_path).map_err(|e| StoreError::io(&blob_path, e))?;
        // blob_stream verifies the digest: an error at the end means a bad blob.
        registry
            .pull_blob(src, &layer.digest, &mut f, &|_| {})
            .await?;
    }
    let (bp, tp, op) = (blob_path.clone(), tar_path.clone(), out_path.clone());
    let digest = layer.digest.clone();
    let want_diff_id = diff_id.to_string();
    let src_name = src.to_string();
    let written = tokio::task::spawn_blocking(move || -> Result<Written> {
        let blob = std::fs::File::open(&bp).map_err(|e| StoreError::io(&bp, e))?;
        let mut dec = compression
            .decoder(std::io::BufReader::new(blob))
            .map_err(|e| StoreError::io(&bp, e))?;
        let mut tar = std::fs::File::create(&tp).map_err(|e| StoreError::io(&tp, e))?;
        std::io::copy(&mut dec, &mut tar).map_err(|e| StoreError::io(&tp, e))?;
        drop(tar);
        let bytes = std::fs::read(&tp).map_err(|e| StoreError::io(&tp, e))?;
        // The config's diff_id must describe the tar read.
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if actual != want_diff_id {
            return Err(StoreError::DigestMismatch {
                what: format!("uncompressed layer {digest} of {src_name}"),
                expected: want_diff_id,
                actual,
            });
        }
        let (index, _) = index_tar(&digest, &bytes[..])?;
        links.lock().expect("hard-link check").apply(&index)?;
        match format {
            ConvertFormat::ZstdChunked => {
                let l = write_chunked_file(&bytes, &op, &WriterOptions::default())?;
                Ok(Written {
                    digest: l.digest,
                    size: l.size,
                    diff_id: l.diff_id,
                    annotations: l.annotations,
                    media_type: MEDIA_TYPE_LAYER_ZSTD,
                })
            }
            ConvertFormat::Estargz => {
                let file = std::fs::File::create(&op).map_err(|e| StoreError::io(&op, e))?;
                let mut w = std::io::BufWriter::new(file);
                let opts = estargz::WriterOptions {
                    landmark: estargz::Landmark::NoPrefetch,
                    ..Default::default()
                };
                let l = estargz::write_estargz(&bytes, &mut w, &opts)?;
                w.flush().map_err(|e| StoreError::io(&op, e))?;
                Ok(Written {
                    digest: l.digest,
                    size: l.size,
                    diff_id: l.diff_id,
                    annotations: l.annotations,
                    media_type: OCI_LAYER_GZIP,
                })
            }
        }
    })
    .await
    .expect("layer conversion task panicked")?;
    registry
        .push_blob_file(dst, &written.digest, &out_path)
        .await?;
    let desc = Descriptor {
        media_type: written.media_type.to_string(),
        digest: written.digest.clone(),
        size: written.size,
        annotations: Some(written.annotations.into_iter().collect::<HashMap<_, _>>()),
        platform: None,
        urls: None,
    };
    Ok((
        ConvertedLayer {
            source_digest: layer.digest.clone(),
            source_size: layer.size,
            digest: written.digest,
            size: written.size,
            diff_id: written.diff_id,
        },
        desc,
    ))
}
