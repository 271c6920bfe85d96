//! eStargz (stargz-snapshotter's seekable tar+gzip), read lazily: the footer locates the
//! TOC member, the layer annotation `containerd.io/snapshot/stargz/toc.digest` pins the
//! TOC JSON, and every chunk is a gzip stream checked against its `chunkDigest` before a
//! byte of it is served. The blob stays a valid tar+gzip stream (its last tar entry is the
//! TOC), so any runtime can pull it in full. Specification: stargz-snapshotter's
//! `docs/estargz.md` and its `estargz` package, which this follows.

pub mod footer;
pub mod toc;
pub mod writer;

use crate::chunked::footer::is_sha256_digest;
use crate::chunked::raw_names::has_lossy_names;
use crate::chunked::{BlobSource, RetryPolicy, Toc, MAX_TOC_SIZE};
use crate::layer::Compression;
use crate::lazy_format::{LayerDescriptor, LazyFormat, LazyLayer, Opened};
use crate::{Result, StoreError};

pub use footer::{footer_bytes, parse_footer, FooterKind, FOOTER_SIZE};
pub use toc::{NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_TAR_NAME};
pub use writer::{write_estargz, EstargzLayer, Landmark, WriterOptions};

/// `layers.format` of lazy eStargz layers.
pub const FORMAT_NAME: &str = "estargz";
/// The layer annotation pinning the TOC: `sha256:<hex>` of the uncompressed TOC JSON.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The layer annotation giving the uncompressed size (containers/storage reads it).
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";

/// Bytes read from the blob's end first: the footer and, for most layers, the whole TOC
/// member, in one request. A TOC beyond it costs one more request for the rest.
pub const TAIL_GUESS: u64 = 8 << 10;

/// The eStargz format.
pub struct Estargz;

impl LazyFormat for Estargz {
    fn name(&self) -> &'static str {
        FORMAT_NAME
    }

    /// A gzip layer with the TOC digest annotation. A blob that merely ends with an
    /// eStargz footer is not claimed: nothing would pin its TOC, so it could only be pulled
    /// in full anyway (probing would cost every plain gzip layer a round trip).
    fn claims(&self, layer: &LayerDescriptor) -> bool {
        layer.annotations.contains_key(TOC_DIGEST_ANNOTATION)
            && Compression::from_media_type(&layer.media_type) == Some(Compression::Gzip)
    }

    fn open(
        &self,
        source: &dyn BlobSource,
        layer: &LayerDescriptor,
        retry: &RetryPolicy,
    ) -> Result<Opened> {
        let digest = layer.digest.as_str();
        let Some(pin) = layer.annotations.get(TOC_DIGEST_ANNOTATION) else {
            return Ok(Opened::Full(format!(
                "no {TOC_DIGEST_ANNOTATION} annotation pins the TOC"
            )));
        };
        if !is_sha256_digest(pin) {
            return Err(StoreError::InvalidToc {
                layer: digest.to_string(),
                entry: TOC_DIGEST_ANNOTATION.to_string(),
                reason: format!("annotation {pin:?} is not a sha256 digest"),
            });
        }
        let (json, toc_offset) = fetch_toc_json(source, digest, retry)?;
        let actual = toc::sha256(&json);
        if actual != *pin {
            return Err(StoreError::DigestMismatch {
                what: format!("TOC of layer {digest} (annotation {TOC_DIGEST_ANNOTATION})"),
                expected: pin.clone(),
                actual,
            });
        }
        let parsed: Toc = serde_json::from_slice(&json).map_err(|e| StoreError::InvalidToc {
            layer: digest.to_string(),
            entry: TOC_TAR_NAME.to_string(),
            reason: format!("TOC JSON: {e}"),
        })?;
        if has_lossy_names(&parsed) {
            return Ok(Opened::Full(
                "names the TOC cannot carry (not UTF-8)".to_string(),
            ));
        }
        let parsed = toc::parse_toc(digest, parsed, toc_offset)?;
        Ok(Opened::Lazy(LazyLayer {
            index: parsed.index,
            prefetch: parsed.prefetch,
            toc_digest: actual,
            stored_toc: None,
        }))
    }

    fn hidden_paths(&self) -> &'static [&'static str] {
        &[TOC_TAR_NAME, PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK]
    }
}

/// Reads the footer and the TOC member (one request when the TOC fits in [`TAIL_GUESS`],
/// two otherwise) and returns the TOC JSON and the member's offset.
pub fn fetch_toc_json(
    source: &dyn BlobSource,
    layer: &str,
    retry: &RetryPolicy,
) -> Result<(Vec<u8>, u64)> {
    let size = source.size();
    let tail_len = TAIL_GUESS.min(size);
    let tail_start = size - tail_len;
    let tail = source.read_range_retry(tail_start, tail_len, retry)?;
    let (kind, toc_offset) = parse_footer(layer, &tail, size)?;
    let member_end = size - kind.size();
    if member_end - toc_offset > MAX_TOC_SIZE {
        return Err(StoreError::InvalidToc {
            layer: layer.to_string(),
            entry: TOC_TAR_NAME.to_string(),
            reason: format!(
                "TOC member of {} bytes over the cap",
                member_end - toc_offset
            ),
        });
    }
    let in_tail = &tail[..(member_end - tail_start) as usize];
    let json = if toc_offset >= tail_start {
        toc::toc_json_from_member(layer, &in_tail[(toc_offset - tail_start) as usize..])?
    } else {
        let head = source.read_range_retry(toc_offset, tail_start - toc_offset, retry)?;
        let mut member = Vec::with_capacity((member_end - toc_offset) as usize);
        member.extend_from_slice(&head);
        member.extend_from_slice(in_tail);
        toc::toc_json_from_member(layer, &member)?
    };
    Ok((json, toc_offset))
}
