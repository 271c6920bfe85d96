//! SOCI index v1: an OCI image manifest whose config media type (and `artifactType`) is
//! [`SOCI_INDEX_V1`], whose layers are the zTOCs of the image's large gzip layers (media
//! type `application/octet-stream`, annotated with the layer they index) and whose `subject`
//! is the image's platform manifest. It is found through the Referrers API or its fallback
//! tag (see [`crate::registry::referrers`]), as soci-snapshotter's v1 indexes are.
//! soci-snapshotter's v2 indexes (bound through the image index instead) are neither
//! written nor read: a v2 index listed as a referrer is passed over.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{json, Value};

use super::ztoc::{self, Ztoc, BUILD_TOOL, MAX_ZTOC_SIZE};
use crate::content::sha256_digest;
use crate::layer::Compression;
use crate::reference::ImageReference;
use crate::registry::manifest::{Descriptor, OCI_MANIFEST};
use crate::registry::RegistryClient;
use crate::{Result, StoreError};

/// Config media type and `artifactType` of a SOCI index v1.
pub const SOCI_INDEX_V1: &str = "application/vnd.amazon.soci.index.v1+json";
/// The same for v2 (recognized, not read).
pub const SOCI_INDEX_V2: &str = "application/vnd.amazon.soci.index.v2+json";
/// Media type of a zTOC layer of the index.
pub const ZTOC_MEDIA_TYPE: &str = "application/octet-stream";
/// zTOC annotation: digest of the image layer it indexes.
pub const ANNOTATION_LAYER_DIGEST: &str = "com.amazon.soci.image-layer-digest";
/// zTOC annotation: media type of that layer.
pub const ANNOTATION_LAYER_MEDIA_TYPE: &str = "com.amazon.soci.image-layer-mediaType";
/// zTOC annotation: the span size it was built with (decimal bytes).
pub const ANNOTATION_SPAN_SIZE: &str = "com.amazon.soci.span-size";
/// Index annotation: the tool that built it.
pub const ANNOTATION_BUILD_TOOL: &str = "com.amazon.soci.build-tool-identifier";
/// Layers smaller than this are not indexed (soci-snapshotter's default): they are pulled
/// in full.
pub const DEFAULT_MIN_LAYER_SIZE: u64 = 10 << 20;

/// The empty JSON object, the config blob of every SOCI index.
const EMPTY_JSON: &[u8] = b"{}";

/// How `skiff image index` builds an index.
#[derive(Debug, Clone, Copy)]
pub struct IndexOptions {
    /// Layers with fewer compressed bytes are skipped.
    pub min_layer_size: u64,
    /// Least uncompressed bytes between checkpoints.
    pub span_size: u64,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            min_layer_size: DEFAULT_MIN_LAYER_SIZE,
            span_size: ztoc::DEFAULT_SPAN_SIZE,
        }
    }
}

/// What became of one layer.
#[derive(Debug, Clone)]
pub enum LayerOutcome {
    Indexed {
        layer: String,
        /// The zTOC blob's digest and size.
        ztoc: String,
        ztoc_size: u64,
        spans: usize,
        files: usize,
    },
    Skipped {
        layer: String,
        reason: String,
    },
}

/// The result of [`index_image`].
#[derive(Debug, Clone)]
pub struct IndexReport {
    /// The platform manifest indexed (the index's subject).
    pub image_manifest: String,
    /// The SOCI index manifest pushed.
    pub index_digest: String,
    pub layers: Vec<LayerOutcome>,
}

/// Builds the zTOC of every gzip layer of image `r` of at least `opts.min_layer_size`
/// bytes (each layer is downloaded once, verified, and indexed in memory), pushes the
/// zTOCs and a SOCI index v1 referring to the image's platform manifest to `r`'s
/// repository, and records it in the referrers fallback tag when the registry has no
/// Referrers API. Errors: the registry's, [`StoreError::InvalidZtoc`] for a gzip layer that
/// cannot be indexed (not a single gzip member, not a tar), [`StoreError::Unsupported`]
/// when no layer qualifies (as soci-snapshotter, no empty index is pushed).
pub async fn index_image(
    registry: &RegistryClient,
    r: &ImageReference,
    opts: IndexOptions,
    on_layer: &(dyn Fn(&LayerOutcome) + Send + Sync),
) -> Result<IndexReport> {
    let resolved = registry.resolve_manifest(r).await?;
    let repo = &resolved.reference;
    let mut outcomes = Vec::new();
    let mut ztocs = Vec::new();
    for layer in &resolved.manifest.layers {
        let skip = if Compression::from_media_type(&layer.media_type) != Some(Compression::Gzip) {
            Some(format!("{} is not a gzip layer", layer.media_type))
        } else if layer.size < opts.min_layer_size {
            Some(format!(
                "{} bytes, under the minimum of {}",
                layer.size, opts.min_layer_size
            ))
        } else {
            None
        };
        let outcome = match skip {
            Some(reason) => LayerOutcome::Skipped {
                layer: layer.digest.clone(),
                reason,
            },
            None => {
                let mut blob = Vec::with_capacity(layer.size as usize);
                registry
                    .pull_blob(repo, &layer.digest, &mut blob, &|_| {})
                    .await?;
                let (digest, span) = (layer.digest.clone(), opts.span_size);
                let z = tokio::task::spawn_blocking(move || ztoc::build(&digest, &blob, span))
                    .await
                    .expect("building a zTOC does not panic")?;
                let bytes = Bytes::from(z.to_bytes());
                let ztoc_digest = sha256_digest(&bytes);
                registry
                    .push_blob(repo, &ztoc_digest, bytes.clone())
                    .await?;
                ztocs.push(json!({
                    "mediaType": ZTOC_MEDIA_TYPE,
                    "digest": ztoc_digest,
                    "size": bytes.len(),
                    "annotations": {
                        ANNOTATION_LAYER_MEDIA_TYPE: layer.media_type,
                        ANNOTATION_LAYER_DIGEST: layer.digest,
                        ANNOTATION_SPAN_SIZE: opts.span_size.to_string(),
                    },
                }));
                LayerOutcome::Indexed {
                    layer: layer.digest.clone(),
                    ztoc: ztoc_digest,
                    ztoc_size: bytes.len() as u64,
                    spans: z.zinfo.checkpoints.len(),
                    files: z.files.len(),
                }
            }
        };
        on_layer(&outcome);
        outcomes.push(outcome);
    }
    if ztocs.is_empty() {
        return Err(StoreError::Unsupported {
            reference: r.to_string(),
            reason: format!(
                "no gzip layer of at least {} bytes to index",
                opts.min_layer_size
            ),
        });
    }
    let empty = sha256_digest(EMPTY_JSON);
    registry
        .push_blob(repo, &empty, Bytes::from_static(EMPTY_JSON))
        .await?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SOCI_INDEX_V1,
        "config": {"mediaType": SOCI_INDEX_V1, "digest": empty, "size": EMPTY_JSON.len()},
        "layers": ztocs,
        "subject": {
            "mediaType": resolved.manifest_media_type,
            "digest": resolved.manifest_digest,
            "size": resolved.manifest_bytes.len(),
        },
        "annotations": {ANNOTATION_BUILD_TOOL: BUILD_TOOL},
    });
    let body = Bytes::from(serde_json::to_vec(&manifest).expect("JSON"));
    let index_digest = sha256_digest(&body);
    let pinned = ImageReference {
        tag: None,
        ..repo.with_digest(&index_digest)
    };
    registry
        .push_manifest(&pinned, body.clone(), OCI_MANIFEST)
        .await?;
    registry
        .attach_referrer(
            repo,
            &resolved.manifest_digest,
            &index_digest,
            body.len(),
            SOCI_INDEX_V1,
        )
        .await?;
    Ok(IndexReport {
        image_manifest: resolved.manifest_digest,
        index_digest,
        layers: outcomes,
    })
}

/// A SOCI index found for an image: the zTOC descriptor of each indexed layer.
#[derive(Debug, Clone)]
pub struct SociIndex {
    /// The index manifest's digest.
    pub digest: String,
    /// Layer digest → its zTOC's descriptor.
    pub ztocs: HashMap<String, Descriptor>,
}

/// Parses SOCI index manifest `body` (already verified against its digest `digest`),
/// checking that it is a v1 index whose subject is `subject`. Errors:
/// [`StoreError::InvalidZtoc`] (layer `*`) naming what is wrong.
pub fn parse_index(digest: &str, body: &[u8], subject: &str) -> Result<SociIndex> {
    let bad = |reason: String| StoreError::InvalidZtoc {
        layer: "*".to_string(),
        reason: format!("SOCI index {digest}: {reason}"),
    };
    let m: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    match m["config"]["mediaType"].as_str() {
        Some(SOCI_INDEX_V1) => {}
        Some(SOCI_INDEX_V2) => return Err(bad("a v2 index (only v1 is read)".into())),
        other => return Err(bad(format!("config media type {other:?}"))),
    }
    if m["subject"]["digest"] != subject {
        return Err(bad("its subject is another manifest".into()));
    }
    let mut ztocs = HashMap::new();
    for l in m["layers"].as_array().into_iter().flatten() {
        let d: Descriptor =
            serde_json::from_value(l.clone()).map_err(|e| bad(format!("zTOC descriptor: {e}")))?;
        let Some(layer) = d
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_LAYER_DIGEST))
            .cloned()
        else {
            return Err(bad(format!("zTOC {} names no layer", d.digest)));
        };
        if d.size > MAX_ZTOC_SIZE {
            return Err(bad(format!("zTOC {} of {} bytes", d.digest, d.size)));
        }
        ztocs.insert(layer, d);
    }
    Ok(SociIndex {
        digest: digest.to_string(),
        ztocs,
    })
}

/// The newest usable SOCI index v1 referring to platform manifest `subject` of `r`'s
/// repository, if any. An index that cannot be used (v2, wrong subject, unparsable) is
/// passed over with a warning.
pub async fn find_index(
    registry: &RegistryClient,
    r: &ImageReference,
    subject: &str,
) -> Result<Option<SociIndex>> {
    let mut candidates = registry
        .referrers_of_type(r, subject, SOCI_INDEX_V1)
        .await?;
    // The last listed is the newest push.
    while let Some(digest) = candidates.pop() {
        let pinned = ImageReference {
            tag: None,
            ..r.with_digest(&digest)
        };
        // fetch_manifest checks the body against the pinned digest.
        let (body, _, _) = registry.fetch_manifest(&pinned).await?;
        match parse_index(&digest, &body, subject) {
            Ok(i) => return Ok(Some(i)),
            Err(e) => tracing::warn!(index = %digest, error = %e, "ignoring a SOCI index"),
        }
    }
    Ok(None)
}

/// Downloads zTOC `ztoc` (verified against its descriptor's digest, at most
/// [`MAX_ZTOC_SIZE`] bytes) of layer `layer` (`size` bytes) and checks it. Errors: the
/// registry's, [`StoreError::DigestMismatch`], [`StoreError::InvalidZtoc`] (including a
/// zTOC made for a blob of another size).
pub async fn fetch_ztoc(
    registry: &RegistryClient,
    r: &ImageReference,
    layer: &str,
    size: u64,
    ztoc: &Descriptor,
) -> Result<Ztoc> {
    if ztoc.size > MAX_ZTOC_SIZE {
        return Err(StoreError::InvalidZtoc {
            layer: layer.to_string(),
            reason: format!("zTOC of {} bytes over the cap", ztoc.size),
        });
    }
    let mut bytes = Vec::with_capacity(ztoc.size as usize);
    registry
        .pull_blob(r, &ztoc.digest, &mut bytes, &|_| {})
        .await?;
    let z = Ztoc::parse(layer, &bytes)?;
    if z.compressed_archive_size != size {
        return Err(StoreError::InvalidZtoc {
            layer: layer.to_string(),
            reason: format!(
                "zTOC made for a blob of {} bytes, the layer has {size}",
                z.compressed_archive_size
            ),
        });
    }
    Ok(z)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBJECT: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn index(config: &str, subject: &str, layers: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config, "digest": sha256_digest(EMPTY_JSON), "size": 2},
            "layers": layers,
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 10},
        }))
        .unwrap()
    }

    fn ztoc_desc(layer: Option<&str>, size: u64) -> Value {
        let mut d = json!({"mediaType": ZTOC_MEDIA_TYPE, "digest": "sha256:ab", "size": size});
        if let Some(l) = layer {
            d["annotations"] =
                json!({ANNOTATION_LAYER_DIGEST: l, ANNOTATION_LAYER_MEDIA_TYPE: "x"});
        }
        d
    }

    #[test]
    fn v1_index_maps_layers_to_ztocs() {
        let body = index(
            SOCI_INDEX_V1,
            SUBJECT,
            json!([ztoc_desc(Some("sha256:l1"), 100)]),
        );
        let i = parse_index("sha256:idx", &body, SUBJECT).unwrap();
        assert_eq!(i.ztocs["sha256:l1"].digest, "sha256:ab");
        assert_eq!(i.ztocs["sha256:l1"].size, 100);
    }

    #[test]
    fn unusable_indexes_are_refused_with_the_reason() {
        let reason = |body: Vec<u8>| {
            parse_index("sha256:idx", &body, SUBJECT)
                .unwrap_err()
                .to_string()
        };
        let l = json!([ztoc_desc(Some("sha256:l1"), 100)]);
        assert!(reason(index(SOCI_INDEX_V2, SUBJECT, l.clone())).contains("only v1 is read"));
        assert!(reason(index("application/json", SUBJECT, l.clone())).contains("config media type"));
        assert!(reason(index(SOCI_INDEX_V1, "sha256:other", l)).contains("another manifest"));
        let none = json!([ztoc_desc(None, 100)]);
        assert!(reason(index(SOCI_INDEX_V1, SUBJECT, none)).contains("names no layer"));
        let huge = json!([ztoc_desc(Some("sha256:l1"), MAX_ZTOC_SIZE + 1)]);
        assert!(reason(index(SOCI_INDEX_V1, SUBJECT, huge)).contains("bytes"));
        assert!(reason(b"{".to_vec()).contains("SOCI index sha256:idx"));
    }
}
