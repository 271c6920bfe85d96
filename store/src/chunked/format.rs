//! zstd:chunked as a [`LazyFormat`]: the TOC located by the layer annotations (or the
//! footer), pinned by the manifest-checksum annotation.

use crate::chunked::{open_lazy_layer, BlobSource, RetryPolicy, StoredToc};
use crate::layer::compression::ZSTD_CHUNKED_CHECKSUM_KEYS;
use crate::lazy_format::{LayerDescriptor, LazyFormat, LazyLayer, Opened};
use crate::Result;

/// `layers.format` of lazy zstd:chunked layers.
pub const FORMAT_NAME: &str = "zstd:chunked";

/// The zstd:chunked format of containers/storage (see [`crate::chunked`]).
pub struct ZstdChunked;

impl LazyFormat for ZstdChunked {
    fn name(&self) -> &'static str {
        FORMAT_NAME
    }

    /// A layer with a manifest-checksum annotation (either key generation).
    fn claims(&self, layer: &LayerDescriptor) -> bool {
        ZSTD_CHUNKED_CHECKSUM_KEYS
            .iter()
            .any(|k| layer.annotations.contains_key(*k))
    }

    fn open(
        &self,
        source: &dyn BlobSource,
        layer: &LayerDescriptor,
        retry: &RetryPolicy,
    ) -> Result<Opened> {
        let (index, info) = open_lazy_layer(source, &layer.digest, &layer.annotations, retry)?;
        if !info.verified {
            return Ok(Opened::Full("TOC not pinned by the manifest".into()));
        }
        if !info.exact_names {
            return Ok(Opened::Full("names the TOC cannot carry".into()));
        }
        Ok(Opened::Lazy(LazyLayer {
            index,
            prefetch: Vec::new(),
            stored_toc: StoredToc::of(&info),
            toc_digest: info.toc_digest,
        }))
    }
}
