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
    // The skippable frame header is fetched too, to check that the TOC really is one.
    let (start, len) = (
        loc.offset - footer::SKIPPABLE_FRAME_HEADER,
        loc.compressed_len + footer::SKIPPABLE_FRAME_HEADER,
    );
    match stream_toc(source, layer, loc, start, len) {
        Streamed::Done(r) => {
            if r.is_ok() {
                tracing::debug!(%layer, ms = t0.elapsed().as_secs_f64() * 1e3, "TOC fetched (decompressed as it arrived) and parsed");
            }
            return r;
        }
        Streamed::Broke(e) => {
            tracing::debug!(%layer, error = %e, "TOC stream broke off; fetching the TOC again")
        }
    }
    let frame = source.read_range_retry(start, len, retry)?;
    check_frame_header(
        layer,
        &frame[..footer::SKIPPABLE_FRAME_HEADER as usize],
        loc,
    )?;
    let compressed = frame.slice(footer::SKIPPABLE_FRAME_HEADER as usize..);
    // Check the pin before decompressing or parsing anything.
    let digest = check_pin(layer, loc, &compressed)?;
    let toc = parse_toc(layer, &compressed, loc.uncompressed_len)?;
    Ok((toc, digest, compressed))
}

/// The outcome of [`stream_toc`].
enum Streamed {
    /// The TOC, or why its bytes are refused.
    Done(Result<(Toc, String, bytes::Bytes)>),
    /// The request failed: the caller fetches the TOC again, with retries.
    Broke(StoreError),
}

/// Fetches the TOC's frame (`len` bytes at `start`) in one request and decompresses it as
/// it arrives (on a slow link that is done when its last byte comes in, ~10 ms sooner for
/// skopeo's 1.1 MB TOC); then checks the frame header, the stated length and the pinned
/// digest before it parses anything.
fn stream_toc(
    source: &dyn BlobSource,
    layer: &str,
    loc: &TocLocation,
    start: u64,
    len: u64,
) -> Streamed {
    use std::io::Read;
    let stream = match source.open_range(start, len) {
        Ok(s) => s,
        Err(e) => return Streamed::Broke(e),
    };
    let mut r = Arriving {
        stream,
        cur: bytes::Bytes::new(),
        kept: bytes::BytesMut::with_capacity(len as usize),
        failure: None,
        ended: false,
    };
    let mut header = [0u8; footer::SKIPPABLE_FRAME_HEADER as usize];
    let header_read = r.read_exact(&mut header);
    if let Some(e) = r.failure.take() {
        return Streamed::Broke(e);
    }
    let checked = header_read
        .map_err(|e| toc_err(layer, format!("TOC frame: {e}")))
        .and_then(|()| check_frame_header(layer, &header, loc));
    if let Err(e) = checked {
        return Streamed::Done(Err(e));
    }
    // Decompressed as the bytes arrive; parsed once it is whole (serde_json over a stream
    // reader parses at half the speed, which costs more than it hides on a fast link).
    let decompressed = (|| -> std::result::Result<Vec<u8>, String> {
        let decoder = zstd::stream::read::Decoder::new(&mut r)
            .map_err(|e| format!("TOC decompression: {e}"))?;
        let mut json = Vec::with_capacity(loc.uncompressed_len as usize);
        decoder
            .take(loc.uncompressed_len + 1)
            .read_to_end(&mut json)
            .map_err(|e| format!("TOC decompression: {e}"))?;
        Ok(json)
    })();
    // Whatever the frame holds past the TOC's end counts in its digest.
    let drained = std::io::copy(&mut r, &mut std::io::sink());
    if let Some(e) = r.failure.take() {
        return Streamed::Broke(e);
    }
    if let Err(e) = drained {
        return Streamed::Done(Err(toc_err(layer, format!("TOC frame: {e}"))));
    }
    let compressed = r
        .kept
        .freeze()
        .slice(footer::SKIPPABLE_FRAME_HEADER as usize..);
    Streamed::Done((|| {
        let digest = check_pin(layer, loc, &compressed)?;
        let json = decompressed.map_err(|reason| toc_err(layer, reason))?;
        if json.len() as u64 != loc.uncompressed_len {
            return Err(toc_err(
                layer,
                format!(
                    "TOC decompresses to {} bytes, {} stated",
                    json.len(),
                    loc.uncompressed_len
                ),
            ));
        }
        let toc =
            serde_json::from_slice(&json).map_err(|e| toc_err(layer, format!("TOC JSON: {e}")))?;
        Ok((toc, digest, compressed))
    })())
}

/// The bytes of a range stream as they arrive, kept; a failure of the stream is kept
/// aside (the reader sees an I/O error) so it is told from bad content.
struct Arriving {
    stream: Box<dyn RangeStream>,
    cur: bytes::Bytes,
    kept: bytes::BytesMut,
    failure: Option<StoreError>,
    /// The stream gave its last piece (it must not be asked again).
    ended: bool,
}

impl std::io::Read for Arriving {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.stream.next_piece() {
                Ok(Some(p)) => {
                    self.kept.extend_from_slice(&p);
                    self.cur = p;
                }
                Ok(None) => {
                    self.ended = true;
                    return Ok(0);
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.ended = true;
                    self.failure = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// Checks that the 8 bytes before the TOC open a skippable frame of the TOC's length.
fn check_frame_header(layer: &str, header: &[u8], loc: &TocLocation) -> Result<()> {
    if header[..4] != footer::SKIPPABLE_FRAME_MAGIC
        || u64::from(u32::from_le_bytes(header[4..8].try_into().unwrap())) != loc.compressed_len
    {
        return Err(toc_err(
            layer,
            "TOC is not a skippable frame of the stated length",
        ));
    }
    Ok(())
}

/// The compressed TOC's digest, checked against the manifest's pin when there is one.
fn check_pin(layer: &str, loc: &TocLocation, compressed: &[u8]) -> Result<String> {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(compressed)));
    if let Some(expected) = &loc.checksum {
        if *expected != digest {
            return Err(StoreError::DigestMismatch {
                what: format!("TOC of layer {layer}"),
                expected: expected.clone(),
                actual: digest,
            });
        }
    }
    Ok(digest)
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A blob whose ranged streams come in 100-byte pieces and panic when asked again after
    /// their end or their failure (as a registry response stream does); with `breaks_off`
    /// they fail after their first piece. Counts the streams opened; whole-range reads work.
    struct Streams {
        file: FileBlobSource,
        breaks_off: bool,
        opened: AtomicU32,
    }

    struct Strict {
        rest: Bytes,
        given: usize,
        ended: bool,
        breaks_off: bool,
    }

    impl RangeStream for Strict {
        fn next_piece(&mut self) -> Result<Option<Bytes>> {
            assert!(!self.ended, "stream polled after its end");
            if self.breaks_off && self.given > 0 {
                self.ended = true;
                return Err(StoreError::BlobFetch {
                    digest: "sha256:x".into(),
                    offset: 0,
                    len: 0,
                    reason: "connection reset".into(),
                });
            }
            if self.rest.is_empty() {
                self.ended = true;
                return Ok(None);
            }
            self.given += 1;
            let n = self.rest.len().min(100);
            Ok(Some(self.rest.split_to(n)))
        }
    }

    impl BlobSource for Streams {
        fn digest(&self) -> &str {
            self.file.digest()
        }
        fn size(&self) -> u64 {
            self.file.size()
        }
        fn read_range(&self, offset: u64, len: u64) -> Result<Bytes> {
            self.file.read_range(offset, len)
        }
        fn open_range(&self, offset: u64, len: u64) -> Result<Box<dyn RangeStream>> {
            self.opened.fetch_add(1, Ordering::Relaxed);
            Ok(Box::new(Strict {
                rest: self.file.read_range(offset, len)?,
                given: 0,
                ended: false,
                breaks_off: self.breaks_off,
            }))
        }
    }

    fn streams(dir: &std::path::Path, digest: &str, breaks_off: bool) -> Streams {
        Streams {
            file: FileBlobSource::open(dir.join("blob"), digest).unwrap(),
            breaks_off,
            opened: AtomicU32::new(0),
        }
    }

    fn layer(dir: &std::path::Path) -> (FileBlobSource, ChunkedLayer) {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..200 {
            let mut h = tar::Header::new_gnu();
            h.set_size(5);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("etc/f{i}"), &b"hello"[..])
                .unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut blob = Vec::new();
        let layer = write_zstd_chunked(&tar, &mut blob, &WriterOptions::default()).unwrap();
        let path = dir.join("blob");
        std::fs::write(&path, &blob).unwrap();
        (FileBlobSource::open(&path, &layer.digest).unwrap(), layer)
    }

    #[test]
    fn a_toc_stream_that_breaks_off_is_fetched_again_and_a_bad_pin_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (file, layer) = layer(dir.path());
        let (want, _) = open_lazy_layer(
            &file,
            &layer.digest,
            &layer.annotations,
            &Default::default(),
        )
        .unwrap();
        let broken = streams(dir.path(), &layer.digest, true);
        let (index, info) = open_lazy_layer(
            &broken,
            &layer.digest,
            &layer.annotations,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(broken.opened.load(Ordering::Relaxed), 1, "streamed once");
        assert_eq!(index.entries.len(), 200);
        assert_eq!(
            serde_json::to_value(&index).unwrap(),
            serde_json::to_value(&want).unwrap()
        );
        assert!(info.verified);
        // Streamed in small pieces, the stream never asked again after its end.
        let pieces = streams(dir.path(), &layer.digest, false);
        let (index, _) = open_lazy_layer(
            &pieces,
            &layer.digest,
            &layer.annotations,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(index.entries.len(), 200);
        // A pin that does not match is refused on the streamed path, not retried.
        let file = FileBlobSource::open(dir.path().join("blob"), &layer.digest).unwrap();
        let mut ann = layer.annotations.clone();
        for k in [
            footer::MANIFEST_CHECKSUM_KEY,
            footer::LEGACY_MANIFEST_CHECKSUM_KEY,
        ] {
            if ann.contains_key(k) {
                ann.insert(k.into(), format!("sha256:{}", "0".repeat(64)));
            }
        }
        let err = open_lazy_layer(&file, &layer.digest, &ann, &Default::default()).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    }
}
