//! zstd:chunked: reading a layer's TOC lazily (one Range request), turning it into a
//! [`LayerIndex`], and writing zstd:chunked blobs from tar streams.

pub mod footer;
mod format;
pub mod raw_names;
pub mod source;
pub mod tarsplit;
pub mod toc;
pub mod writer;

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

pub use footer::{ChunkedFormat, TocLocation};
pub use format::{ZstdChunked, FORMAT_NAME};
pub use source::{BlobSource, FileBlobSource, RangeStream, RetryPolicy};
pub use toc::{Toc, TocEntry};
pub use writer::{
    convert_tar_file, layer_annotations, write_zstd_chunked, ChunkedLayer, WriterOptions,
    CHUNK_SIZE, MEDIA_TYPE_LAYER_ZSTD,
};

use crate::{LayerIndex, Result, StoreError};

/// Largest TOC accepted, compressed or not (containers/storage caps it at 50 MB too).
pub const MAX_TOC_SIZE: u64 = 64 << 20;

/// What was learned about a layer's TOC besides its entries.
#[derive(Debug, Clone)]
pub struct TocInfo {
    pub location: TocLocation,
    /// `sha256:<hex>` of the compressed TOC as fetched.
    pub toc_digest: String,
    /// Whether `toc_digest` was checked against the manifest's checksum annotation. When the
    /// annotations are absent (the footer was used), nothing pins the TOC: the caller must
    /// verify the whole blob before trusting chunk digests.
    pub verified: bool,
    /// The TOC's `tarSplitDigest` (current format), empty if none.
    pub tar_split_digest: String,
    /// Whether every name and link target of the index is exact. `false` when the TOC holds
    /// names it cannot carry (not UTF-8, shown as U+FFFD) that no tar-split could restore
    /// (see [`raw_names`]): the caller must then pull the layer in full, never serve it.
    pub exact_names: bool,
    /// The TOC as fetched (zstd-compressed JSON, without its skippable-frame header).
    pub compressed_toc: bytes::Bytes,
    /// Whether the index is exactly the TOC's conversion (no names restored from the
    /// tar-split), so [`StoredToc`] can stand in for it.
    pub index_is_toc: bool,
}

/// A zstd:chunked layer's index kept as the TOC it was converted from: the compressed TOC
/// as fetched (1.1 MB for an 11,000-file layer whose index is 5.9 MB of JSON) and what the
/// conversion needs besides. Storing it costs a write; encoding the index cost tens of ms
/// on the pull's path. [`StoredToc::index`] converts it again.
#[derive(Debug, Clone)]
pub struct StoredToc {
    /// zstd-compressed TOC JSON.
    pub compressed: bytes::Bytes,
    /// Bytes the TOC decompresses to.
    pub uncompressed_len: u64,
    /// Where the layer's file data ends in the blob (the TOC's frame starts there).
    pub data_end: u64,
}

impl StoredToc {
    /// The stored form of an index opened by [`open_lazy_layer`], when the TOC alone
    /// gives it back.
    pub fn of(info: &TocInfo) -> Option<StoredToc> {
        info.index_is_toc.then(|| StoredToc {
            compressed: info.compressed_toc.clone(),
            uncompressed_len: info.location.uncompressed_len,
            data_end: info.location.offset - footer::SKIPPABLE_FRAME_HEADER,
        })
    }

    /// The index of layer `layer`, converted again. Errors: [`StoreError::InvalidToc`] when
    /// the bytes do not decompress to `uncompressed_len` or do not convert.
    pub fn index(&self, layer: &str) -> Result<LayerIndex> {
        let toc = parse_toc(layer, &self.compressed, self.uncompressed_len)?;
        toc::toc_to_layer_index(layer, &toc, self.data_end)
    }
}

fn toc_err(layer: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidToc {
        layer: layer.to_string(),
        entry: "TOC".to_string(),
        reason: reason.into(),
    }
}

/// Whether a layer descriptor's annotations mark it as zstd:chunked (either generation).
pub fn is_zstd_chunked(annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key(footer::MANIFEST_POSITION_KEY)
        || annotations.contains_key(footer::LEGACY_MANIFEST_POSITION_KEY)
}

/// Finds, fetches (one Range request, two without annotations), verifies and parses the TOC
/// of a zstd:chunked layer and converts it to a [`LayerIndex`] whose regular files point at
/// compressed chunks of `source`. The layer's root entry (`./`) is not in the index: the
/// image root's attributes are the filesystem's to choose. Blocking (see
/// [`open_lazy_layer_async`]).
pub fn open_lazy_layer(
    source: &dyn BlobSource,
    layer_digest: &str,
    annotations: &BTreeMap<String, String>,
    retry: &RetryPolicy,
) -> Result<(LayerIndex, TocInfo)> {
    let size = source.size();
    let location = match footer::location_from_annotations(layer_digest, annotations)? {
        Some(l) => l,
        None => {
            let tail_len = footer::FOOTER_TAIL_LEN.min(size);
            let tail = source.read_range_retry(size - tail_len, tail_len, retry)?;
            footer::location_from_footer(layer_digest, &tail)?
        }
    };
    let (toc, toc_digest, compressed_toc) = fetch_toc(source, layer_digest, &location, retry)?;
    let verified = location.checksum.is_some();
    let data_end = location.offset - footer::SKIPPABLE_FRAME_HEADER;
    let mut index = toc::toc_to_layer_index(layer_digest, &toc, data_end)?;
    let index_is_toc = !raw_names::has_lossy_names(&toc);
    let exact_names =
        index_is_toc || restore_raw_names(source, layer_digest, &location, &toc, &mut index, retry);
    let info = TocInfo {
        location,
        toc_digest,
        verified,
        tar_split_digest: toc.tar_split_digest.clone(),
        exact_names,
        compressed_toc,
        index_is_toc,
    };
    Ok((index, info))
}

/// Takes the exact bytes of lossy TOC names from the layer's tar-split; `false` (logged)
/// when that is impossible.
fn restore_raw_names(
    source: &dyn BlobSource,
    layer: &str,
    location: &TocLocation,
    toc: &Toc,
    index: &mut LayerIndex,
    retry: &RetryPolicy,
) -> bool {
    if location.tarsplit.is_none() || toc.tar_split_digest.is_empty() {
        tracing::info!(%layer, "TOC has names that are not UTF-8 and no tar-split to restore them");
        return false;
    }
    let restored = raw_names::fetch_tarsplit(source, layer, location, &toc.tar_split_digest, retry)
        .and_then(|split| raw_names::restore_names(layer, index, &split));
    match restored {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(%layer, error = %e, "cannot restore the TOC's non-UTF-8 names from the tar-split");
            false
        }
    }
}

/// [`open_lazy_layer`] for async callers (the pull path): runs it on the blocking pool.
pub async fn open_lazy_layer_async(
    source: std::sync::Arc<dyn BlobSource>,
    layer_digest: String,
    annotations: BTreeMap<String, String>,
    retry: RetryPolicy,
) -> Result<(LayerIndex, TocInfo)> {
    tokio::task::spawn_blocking(move || {
        open_lazy_layer(source.as_ref(), &layer_digest, &annotations, &retry)
    })
    .await
    .expect("open_lazy_layer does not panic")
}

/// Fetches and decompresses the TOC, with size caps, and returns it with its digest and
/// its compressed bytes.
fn fetch_toc(
    source: &dyn BlobSource,
    layer: &str,
    loc: &TocLocation,
    retry: &RetryPolicy,
) -> Result<(Toc, String, bytes::Bytes)> {
    let size = source.size();
    if loc.compressed_len == 0 || loc.compressed_len > MAX_TOC_SIZE {
        return Err(toc_err(
            layer,
            format!("compressed TOC size {} refused", loc.compressed_len),
        ));
    }
    if loc.uncompressed_len > MAX_TOC_SIZE {
        return Err(toc_err(
            layer,
            format!("TOC size {} over the cap", loc.uncompressed_len),
        ));
    }
    let end = loc.offset.checked_add(loc.compressed_len);
    if loc.offset < footer::SKIPPABLE_FRAME_HEADER || end.is_none_or(|e| e > size) {
        return Err(toc_err(
            layer,
            format!(
                "TOC at {}+{} lies outside the blob of {size} bytes",
                loc.offset, loc.compressed_len
            ),
        ));
    }
    let t0 = std::time::Instant::now();
    // Fetch the skippable frame header too, to check that the TOC really is one.
    let frame = source.read_range_retry(
        loc.offset - footer::SKIPPABLE_FRAME_HEADER,
        loc.compressed_len + footer::SKIPPABLE_FRAME_HEADER,
        retry,
    )?;
    let compressed = frame.slice(footer::SKIPPABLE_FRAME_HEADER as usize..);
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&compressed)));
    if frame[..4] != footer::SKIPPABLE_FRAME_MAGIC
        || u64::from(u32::from_le_bytes(frame[4..8].try_into().unwrap())) != loc.compressed_len
    {
        return Err(toc_err(
            layer,
            "TOC is not a skippable frame of the stated length",
        ));
    }
    // Check the pin before decompressing or parsing anything.
    if let Some(expected) = &loc.checksum {
        if *expected != digest {
            return Err(StoreError::DigestMismatch {
                what: format!("TOC of layer {layer}"),
                expected: expected.clone(),
                actual: digest,
            });
        }
    }
    let t1 = std::time::Instant::now();
    let toc = parse_toc(layer, &compressed, loc.uncompressed_len)?;
    tracing::debug!(%layer, fetch_ms = (t1 - t0).as_secs_f64() * 1e3, parse_ms = t1.elapsed().as_secs_f64() * 1e3, "TOC fetched");
    Ok((toc, digest, compressed))
}

/// Decompresses (into a buffer of the stated size) and parses a TOC.
fn parse_toc(layer: &str, compressed: &[u8], uncompressed_len: u64) -> Result<Toc> {
    if uncompressed_len > MAX_TOC_SIZE {
        return Err(toc_err(
            layer,
            format!("TOC size {uncompressed_len} over the cap"),
        ));
    }
    // Into a buffer of the stated size, at once (a stream decoder growing its output took
    // twice as long for a 5.7 MB TOC); more than stated is an error.
    let json = zstd::bulk::decompress(compressed, uncompressed_len as usize).map_err(|e| {
        toc_err(
            layer,
            format!("TOC decompression (to at most the stated {uncompressed_len} bytes): {e}"),
        )
    })?;
    if json.len() as u64 != uncompressed_len {
        return Err(toc_err(
            layer,
            format!(
                "TOC decompresses to {} bytes, {uncompressed_len} stated",
                json.len()
            ),
        ));
    }
    serde_json::from_slice(&json).map_err(|e| toc_err(layer, format!("TOC JSON: {e}")))
}
