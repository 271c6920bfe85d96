//! Lazy layer formats behind one trait. A lazy format turns a few range reads of a layer
//! blob (its footer, its TOC or index) into a [`LayerIndex`] whose regular files point at
//! compressed chunks of the blob, each with the [`Codec`](crate::Codec) that decodes it. The
//! chunk cache, the filesystem, prefetch and profiles then treat every format alike, so a
//! new format is one new implementation of [`LazyFormat`] added to [`FORMATS`].
//!
//! The chain of trust is the same for all: manifest digest → layer descriptor annotation
//! pinning the TOC → TOC → per-chunk digest. A format that cannot pin its TOC answers
//! [`Opened::Full`]: the layer is then pulled in full and verified against its digest.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::chunked::{BlobSource, RetryPolicy};
use crate::layer_index::{ChunkRef, LayerIndex};
use crate::{Result, StoreError};

/// What a lazy pull knows of a layer before reading any of its bytes: the manifest's
/// descriptor.
#[derive(Debug, Clone)]
pub struct LayerDescriptor {
    /// `sha256:<hex>` of the blob.
    pub digest: String,
    pub media_type: String,
    /// Blob size in bytes.
    pub size: u64,
    pub annotations: BTreeMap<String, String>,
}

impl From<&crate::registry::Descriptor> for LayerDescriptor {
    fn from(d: &crate::registry::Descriptor) -> Self {
        LayerDescriptor {
            digest: d.digest.clone(),
            media_type: d.media_type.clone(),
            size: d.size,
            annotations: d
                .annotations
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }
    }
}

/// A layer opened lazily.
#[derive(Debug, Clone)]
pub struct LazyLayer {
    /// The files, regular ones pointing at verified-on-read compressed chunks.
    pub index: LayerIndex,
    /// Chunks the format asks to fetch right after the pull, in blob order (eStargz: the
    /// region before `.prefetch.landmark`). Empty for most layers.
    pub prefetch: Vec<ChunkRef>,
    /// `sha256:<hex>` of the TOC as pinned by the descriptor, for logs.
    pub toc_digest: String,
    /// zstd:chunked: the TOC to store in place of the encoded index (which it gives back
    /// exactly); `None` for other formats, and when names were restored from a tar-split.
    pub stored_toc: Option<crate::chunked::StoredToc>,
}

/// The outcome of [`LazyFormat::open`].
#[derive(Debug)]
pub enum Opened {
    Lazy(LazyLayer),
    /// The layer is valid but cannot be served lazily (TOC not pinned by the manifest,
    /// names the TOC cannot carry ...): pull it in full. The reason is for the log.
    Full(String),
}

/// One lazy layer format.
pub trait LazyFormat: Send + Sync {
    /// The format's name, as recorded in the database (`layers.format`) and shown by
    /// `image inspect`: `zstd:chunked`, `estargz`.
    fn name(&self) -> &'static str;

    /// Whether the descriptor marks the layer as this format (media type and annotations
    /// only; no I/O).
    fn claims(&self, layer: &LayerDescriptor) -> bool;

    /// Reads the layer's TOC from `source` (range reads; blocking) and returns its index.
    /// A TOC that does not verify or lies about the blob is an error
    /// ([`StoreError::InvalidToc`], [`StoreError::DigestMismatch`]); a registry failure
    /// is the registry's error.
    fn open(
        &self,
        source: &dyn BlobSource,
        layer: &LayerDescriptor,
        retry: &RetryPolicy,
    ) -> Result<Opened>;

    /// Top-level paths the format adds to the layer's tar that are not files of the image
    /// (eStargz's `stargz.index.json` and landmarks): never shown, lazily or pulled in full.
    fn hidden_paths(&self) -> &'static [&'static str] {
        &[]
    }
}

/// Every lazy format skiff reads, in the order they are tried.
pub static FORMATS: &[&dyn LazyFormat] = &[
    &crate::chunked::ZstdChunked,
    &crate::estargz::Estargz,
    &crate::soci::lazy::Soci,
];

/// The format that claims `layer`, if any.
pub fn detect(layer: &LayerDescriptor) -> Option<&'static dyn LazyFormat> {
    FORMATS.iter().copied().find(|f| f.claims(layer))
}

/// The format named `name` (as stored in the database).
pub fn by_name(name: &str) -> Option<&'static dyn LazyFormat> {
    FORMATS.iter().copied().find(|f| f.name() == name)
}

/// Whether an error opening a TOC comes from the layer's own bytes (a TOC that lies, does
/// not verify, does not parse): the layer is then pulled in full instead, which its digest
/// verifies. Registry and local failures are not (retrying in full would not help).
pub fn is_content_error(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::InvalidToc { .. }
            | StoreError::InvalidZtoc { .. }
            | StoreError::DigestMismatch { .. }
            | StoreError::InvalidIndex { .. }
            | StoreError::ChunkCorrupt { .. }
    )
}

/// [`LazyFormat::open`] on the blocking pool, for the async pull path.
pub async fn open_async(
    format: &'static dyn LazyFormat,
    source: Arc<dyn BlobSource>,
    layer: LayerDescriptor,
    retry: RetryPolicy,
) -> Result<Opened> {
    tokio::task::spawn_blocking(move || format.open(source.as_ref(), &layer, &retry))
        .await
        .expect("opening a lazy layer does not panic")
}

/// Removes the entries a format hides (see [`LazyFormat::hidden_paths`]) from `index`.
pub fn hide_paths(format: &dyn LazyFormat, index: &mut LayerIndex) {
    let hidden = format.hidden_paths();
    if !hidden.is_empty() {
        index
            .entries
            .retain(|e| !hidden.iter().any(|h| e.path.as_bytes() == h.as_bytes()));
    }
}
