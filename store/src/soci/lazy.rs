//! A SOCI-indexed gzip layer served lazily: the zTOC's file table becomes a [`LayerIndex`]
//! whose regular files are pieces of zran spans ([`Codec::Zran`]), one piece per span a
//! file touches. The chunk cache fetches a piece as its span's compressed range, checks it
//! against the zTOC's span digest before inflating it from the span's checkpoint, and keeps
//! the piece under a synthetic key ([`piece_key`]).

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::zran::SpanIndex;
use super::ztoc::{FileMetadata, Ztoc};
use crate::chunked::{BlobSource, RetryPolicy};
use crate::layer::tar_index::normalize_path;
use crate::layer_index::{ChunkLocation, ChunkRef, Codec, FileEntry, FileKind, LayerIndex};
use crate::layer_path::LayerPath;
use crate::lazy_format::{LayerDescriptor, LazyFormat, Opened};
use crate::{Result, StoreError};

/// `layers.format` of lazy SOCI layers.
pub const FORMAT_NAME: &str = "soci";

/// The cache key of the piece `inner_offset..inner_offset+len` of the span whose compressed
/// bytes hash to `span_digest`: `sha256:` over a domain-separated string, so it cannot be
/// the digest of any chunk's content (that would take a sha256 preimage).
pub fn piece_key(span_digest: &str, inner_offset: u64, len: u64) -> String {
    let key = format!("skiff-soci-piece\0{span_digest}\0{inner_offset}\0{len}");
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// What the chunk cache keeps of a lazy SOCI layer's zTOC: the checkpoints (windows) and
/// span digests, registered once per layer.
pub struct ZranLayer {
    spans: SpanIndex,
    digests: Vec<String>,
    /// The last [`RECENT_SPANS`] spans inflated, newest last: the files sharing a span
    /// (small files, a span's first and last file) are then served without fetching and
    /// inflating it once per file.
    recent: Mutex<VecDeque<(usize, Arc<Vec<u8>>)>>,
    /// The regular files the zTOC places in the tar stream: (name, data offset, size),
    /// checked against the real tar when the layer falls back to a whole download.
    files: Vec<(Vec<u8>, u64, u64)>,
    /// Per file of `files`: the zTOC's mode (permission bits), uid and gid, checked against
    /// its tar header too.
    owners: Vec<(u32, u32, u32)>,
    /// Per span: the files whose whole tar header lies in the span's output, checked as
    /// soon as the span is inflated.
    span_headers: Vec<Vec<usize>>,
    /// Per span, the file pieces in it: (offset in the span's output, length).
    span_pieces: Vec<Vec<(u64, u64)>>,
    /// (span, offset in its output) of each file piece -> the file (index into `files`).
    piece_file: std::collections::HashMap<(usize, u64), usize>,
    /// Per file of `files`: whether its tar header was found to match the zTOC.
    checked: Mutex<Vec<bool>>,
    /// The layer's whole tar stream, once a span failed twice (a zTOC that lies: a
    /// checkpoint that does not inflate, a window that does not match its neighbour, a span
    /// digest that is wrong); or why the layer cannot be served at all (the whole blob or
    /// its tar does not match the zTOC), kept so it is found once. Held while the download
    /// runs, so it happens once per layer.
    whole: Mutex<Option<std::result::Result<Arc<WholeLayer>, String>>>,
    /// When a whole download last failed (the transfer, or the registry's bytes), and why:
    /// reads within [`WHOLE_RETRY_AFTER`] fail with that at once instead of downloading the
    /// layer again.
    whole_failed: Mutex<Option<(std::time::Instant, String)>>,
}

/// How long a failed whole-layer download is not tried again.
pub const WHOLE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// A SOCI layer's uncompressed tar stream from one download of its blob, verified against
/// the layer digest: an unlinked file in the cache's tmp directory, gone with the daemon
/// (outside the cache budget: it holds at most one layer's uncompressed size per layer
/// whose zTOC failed).
struct WholeLayer {
    file: File,
    len: u64,
}

/// Why a whole download of a SOCI layer failed.
enum WholeError {
    /// The transfer failed or brought other bytes: a later read tries again.
    Fetch(String),
    /// The verified blob is not what the zTOC describes: the layer is refused.
    Content(String),
}

/// A tar name as compared across the zTOC and the tar headers: without leading `./` or
/// `/` and trailing `/`.
fn tar_name(mut name: &[u8]) -> &[u8] {
    loop {
        if let Some(rest) = name.strip_prefix(b"./") {
            name = rest;
        } else if let Some(rest) = name.strip_prefix(b"/") {
            name = rest;
        } else {
            break;
        }
    }
    while let Some(rest) = name.strip_suffix(b"/") {
        name = rest;
    }
    name
}

/// Inflated spans kept per SOCI layer (each up to the span size, 4 MiB by default).
pub const RECENT_SPANS: usize = 4;

impl ZranLayer {
    pub fn new(ztoc: Ztoc) -> ZranLayer {
        let regular: Vec<&FileMetadata> = ztoc
            .files
            .iter()
            .filter(|f| f.kind == "reg" && f.uncompressed_size > 0)
            .collect();
        let files: Vec<(Vec<u8>, u64, u64)> = regular
            .iter()
            .map(|f| (f.name.clone(), f.uncompressed_offset, f.uncompressed_size))
            .collect();
        let owners = regular
            .iter()
            .map(|f| ((f.mode & 0o7777) as u32, f.uid, f.gid))
            .collect();
        let index = ztoc.span_index();
        let mut span_headers = vec![Vec::new(); index.checkpoints.len()];
        for (file, (_, offset, _)) in files.iter().enumerate() {
            if let Some(start) = offset.checked_sub(512) {
                let span = ztoc.span_of(start);
                if span == ztoc.span_of(offset - 1) {
                    span_headers[span].push(file);
                }
            }
        }
        let mut span_pieces = vec![Vec::new(); index.checkpoints.len()];
        let mut piece_file = std::collections::HashMap::new();
        for (file, (_, lo, size)) in files.iter().enumerate() {
            let Some(hi) = lo
                .checked_add(*size)
                .filter(|&h| h <= ztoc.uncompressed_archive_size)
            else {
                continue; // refused by `layer_index`
            };
            for (span, inner, len) in file_pieces(&ztoc, &index, *lo, hi).flatten() {
                span_pieces[span].push((inner, len));
                piece_file.insert((span, inner), file);
            }
        }
        let checked = Mutex::new(vec![false; files.len()]);
        ZranLayer {
            files,
            owners,
            span_headers,
            span_pieces,
            piece_file,
            checked,
            spans: SpanIndex {
                span_size: ztoc.zinfo.span_size,
                checkpoints: ztoc.zinfo.checkpoints,
                compressed_size: ztoc.compressed_archive_size,
                uncompressed_size: ztoc.uncompressed_archive_size,
            },
            digests: ztoc.span_digests,
            recent: Mutex::new(VecDeque::new()),
            whole: Mutex::new(None),
            whole_failed: Mutex::new(None),
        }
    }

    /// Why no piece of this layer is served any more, once its whole download showed the
    /// zTOC does not describe it.
    pub fn refused(&self) -> Option<String> {
        match &*self.whole.lock().unwrap() {
            Some(Err(reason)) => Some(reason.clone()),
            _ => None,
        }
    }

    /// The piece from the whole layer when an earlier failure made it fall back to one
    /// (`key` checked as in [`ZranLayer::piece`]), or the reason the layer is refused;
    /// `None` while it serves spans.
    pub fn whole_piece(
        &self,
        span: usize,
        inner_offset: u64,
        len: u64,
        key: &str,
    ) -> Option<std::result::Result<Vec<u8>, String>> {
        let whole = match self.whole.lock().unwrap().clone()? {
            Ok(w) => w,
            Err(reason) => return Some(Err(reason)),
        };
        Some(self.cut_whole(&whole, span, inner_offset, len, key))
    }

    /// After span `span` failed twice: downloads the layer `source` serves whole (once per
    /// layer; concurrent callers wait for it), checks it against the layer digest
    /// (`source.digest()`), the zTOC's uncompressed size and the zTOC's file table (every
    /// regular file's name, data offset and size, from the real tar headers), inflates it
    /// into an unlinked file in `tmp`, and cuts the piece from it. Every later piece of the
    /// layer comes from that file. When the blob or its tar does not match, the layer is
    /// refused for good (every read fails: the mounted tree came from the zTOC); a failed
    /// download is tried again by the next read. `piece` is (span, offset in the span,
    /// length), `why` the span's failure (logged once per layer). Returns the piece and
    /// whether this call downloaded the layer. Errors are reasons, for logs; never
    /// unverified bytes.
    pub fn piece_from_whole(
        &self,
        source: &dyn BlobSource,
        tmp: &Path,
        (span, inner_offset, len): (usize, u64, u64),
        key: &str,
        why: &str,
    ) -> std::result::Result<(Vec<u8>, bool), String> {
        let (whole, downloaded) = self.whole_layer(source, tmp, span, why)?;
        Ok((
            self.cut_whole(&whole, span, inner_offset, len, key)?,
            downloaded,
        ))
    }

    /// The layer's whole download (made now if none is, as [`Self::piece_from_whole`]
    /// describes; `span` and `why` are the failure that asks for it) and whether this call
    /// made it. Every file is checked once it is in.
    pub fn ensure_whole(
        &self,
        source: &dyn BlobSource,
        tmp: &Path,
        span: usize,
        why: &str,
    ) -> std::result::Result<bool, String> {
        Ok(self.whole_layer(source, tmp, span, why)?.1)
    }

    fn whole_layer(
        &self,
        source: &dyn BlobSource,
        tmp: &Path,
        span: usize,
        why: &str,
    ) -> std::result::Result<(Arc<WholeLayer>, bool), String> {
        let mut slot = self.whole.lock().unwrap();
        match &*slot {
            Some(Ok(w)) => return Ok((w.clone(), false)),
            Some(Err(reason)) => return Err(reason.clone()),
            None => {}
        }
        if let Some((at, reason)) = &*self.whole_failed.lock().unwrap() {
            if at.elapsed() < WHOLE_RETRY_AFTER {
                return Err(reason.clone());
            }
        }
        tracing::warn!(layer = source.digest(), span, reason = why, "SOCI span failed twice (the registry's bytes, or a zTOC that lies); fetching the whole layer");
        match self.download_whole(source, tmp) {
            Ok(w) => {
                let w = Arc::new(w);
                *slot = Some(Ok(w.clone()));
                Ok((w, true))
            }
            Err(WholeError::Content(reason)) => {
                tracing::error!(layer = source.digest(), %reason, "SOCI layer refused: its zTOC does not describe it; pull the image with lazy pull off");
                *slot = Some(Err(reason.clone()));
                Err(reason)
            }
            Err(WholeError::Fetch(reason)) => {
                tracing::error!(layer = source.digest(), %reason, "fetching the whole SOCI layer failed; reads of its failing spans fail for {}s", WHOLE_RETRY_AFTER.as_secs());
                *self.whole_failed.lock().unwrap() =
                    Some((std::time::Instant::now(), reason.clone()));
                Err(reason)
            }
        }
    }

    fn download_whole(
        &self,
        source: &dyn BlobSource,
        tmp: &Path,
    ) -> std::result::Result<WholeLayer, WholeError> {
        let fetch = |e: String| WholeError::Fetch(e);
        let file =
            tempfile::tempfile_in(tmp).map_err(|e| fetch(format!("{}: {e}", tmp.display())))?;
        let mut gz = flate2::write::MultiGzDecoder::new(file);
        let mut sha = Sha256::new();
        let mut stream = source
            .open_range(0, source.size())
            .map_err(|e| fetch(e.to_string()))?;
        let mut inflate_error = None;
        while let Some(piece) = stream.next_piece().map_err(|e| fetch(e.to_string()))? {
            sha.update(&piece);
            if inflate_error.is_none() {
                inflate_error = gz.write_all(&piece).err();
            }
        }
        let actual = format!("sha256:{}", hex::encode(sha.finalize()));
        if actual != source.digest() {
            // The registry served other bytes this time: another read may get the right ones.
            return Err(fetch(format!("the whole layer's digest is {actual}")));
        }
        let content = |e: String| WholeError::Content(e);
        if let Some(e) = inflate_error {
            return Err(content(format!("the whole layer does not inflate: {e}")));
        }
        let file = gz
            .finish()
            .map_err(|e| content(format!("the whole layer does not inflate: {e}")))?;
        let len = file
            .metadata()
            .map_err(|e| fetch(format!("{}: {e}", tmp.display())))?
            .len();
        if len != self.spans.uncompressed_size {
            return Err(content(format!(
                "the layer inflates to {len} bytes, the zTOC says {}",
                self.spans.uncompressed_size
            )));
        }
        self.check_file_table(&file).map_err(content)?;
        self.checked.lock().unwrap().fill(true);
        Ok(WholeLayer { file, len })
    }

    /// Every regular file of the zTOC is a regular file of the layer's tar with the same
    /// name, data offset and size: otherwise its pieces would be other files' bytes.
    fn check_file_table(&self, tar_stream: &File) -> std::result::Result<(), String> {
        use std::io::Seek;
        let mut f = tar_stream
            .try_clone()
            .map_err(|e| format!("reading the whole layer: {e}"))?;
        f.rewind()
            .map_err(|e| format!("reading the whole layer: {e}"))?;
        let mut real: std::collections::HashMap<u64, (u64, Vec<u8>)> =
            std::collections::HashMap::new();
        let mut archive = tar::Archive::new(std::io::BufReader::new(&mut f));
        let entries = archive
            .entries()
            .map_err(|e| format!("the whole layer is not a tar: {e}"))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("the whole layer is not a tar: {e}"))?;
            if entry.header().entry_type().is_file() && entry.size() > 0 {
                real.insert(
                    entry.raw_file_position(),
                    (entry.size(), tar_name(&entry.path_bytes()).to_vec()),
                );
            }
        }
        for (name, offset, size) in &self.files {
            let same = real
                .get(offset)
                .is_some_and(|(s, n)| s == size && n.as_slice() == tar_name(name));
            if !same {
                return Err(format!(
                    "the zTOC's file {} ({size} bytes at {offset}) is not the layer's",
                    String::from_utf8_lossy(name)
                ));
            }
        }
        Ok(())
    }

    fn cut_whole(
        &self,
        whole: &WholeLayer,
        span: usize,
        inner_offset: u64,
        len: u64,
        key: &str,
    ) -> std::result::Result<Vec<u8>, String> {
        let (digest, checkpoint) = self
            .digests
            .get(span)
            .zip(self.spans.checkpoints.get(span))
            .ok_or_else(|| format!("span {span} is not in the zTOC"))?;
        if piece_key(digest, inner_offset, len) != key {
            return Err(format!("piece key {key} is not span {span}'s"));
        }
        let start = checkpoint
            .uncompressed_offset
            .checked_add(inner_offset)
            .filter(|s| s.checked_add(len).is_some_and(|e| e <= whole.len))
            .ok_or_else(|| format!("piece {inner_offset}+{len} of span {span} past the layer"))?;
        let mut out = vec![0u8; len as usize];
        whole
            .file
            .read_exact_at(&mut out, start)
            .map_err(|e| format!("reading the whole layer: {e}"))?;
        Ok(out)
    }

    /// The piece from a recently inflated span, if that span is still held (`key` checked
    /// as in [`ZranLayer::piece`]).
    pub fn recent_piece(
        &self,
        span: usize,
        inner_offset: u64,
        len: u64,
        key: &str,
    ) -> Option<Vec<u8>> {
        let digest = self.digests.get(span)?;
        if piece_key(digest, inner_offset, len) != key || self.refused().is_some() {
            return None;
        }
        let data = self.recent_span(span)?;
        let end = inner_offset
            .checked_add(len)
            .filter(|&e| e <= data.len() as u64)?;
        Some(data[inner_offset as usize..end as usize].to_vec())
    }

    /// Every file piece of span `span` (key, offset in the span, length, bytes), cut from
    /// the span if it is among the recently inflated ones; empty otherwise. A span is
    /// fetched and inflated whole for any of its pieces: the chunk cache keeps the others
    /// too, so the next file in the span costs no second fetch.
    pub fn span_siblings(&self, span: usize) -> Vec<(String, u64, u64, Vec<u8>)> {
        let (Some(digest), Some(pieces)) = (self.digests.get(span), self.span_pieces.get(span))
        else {
            return Vec::new();
        };
        if self.refused().is_some() {
            return Vec::new();
        }
        let Some(data) = self.recent_span(span) else {
            return Vec::new();
        };
        pieces
            .iter()
            .filter_map(|&(inner, len)| {
                let end = inner.checked_add(len).filter(|&e| e <= data.len() as u64)?;
                Some((
                    piece_key(digest, inner, len),
                    inner,
                    len,
                    data[inner as usize..end as usize].to_vec(),
                ))
            })
            .collect()
    }

    /// Bytes `inner_offset..inner_offset+len` of span `span`, from `frame` (exactly the
    /// span's compressed range): `key` must be the piece's [`piece_key`], the frame is
    /// checked against the span digest before it is inflated. Errors are reasons, for logs;
    /// never unverified bytes.
    pub fn piece(
        &self,
        span: usize,
        frame: &[u8],
        inner_offset: u64,
        len: u64,
        key: &str,
    ) -> std::result::Result<Vec<u8>, String> {
        let digest = self
            .digests
            .get(span)
            .ok_or_else(|| format!("span {span} is not in the zTOC"))?;
        if piece_key(digest, inner_offset, len) != key {
            return Err(format!("piece key {key} is not span {span}'s"));
        }
        let data = self.inflate_frame(span, frame)?;
        let end = inner_offset
            .checked_add(len)
            .filter(|&e| e <= data.len() as u64)
            .ok_or_else(|| format!("piece {inner_offset}+{len} past span {span}'s end"))?;
        Ok(data[inner_offset as usize..end as usize].to_vec())
    }

    /// Span `span` inflated from `frame` (exactly its compressed range, checked against the
    /// span digest first) and kept among the recent spans. Errors are reasons.
    pub fn inflate_frame(
        &self,
        span: usize,
        frame: &[u8],
    ) -> std::result::Result<Arc<Vec<u8>>, String> {
        if let Some(reason) = self.refused() {
            return Err(reason);
        }
        let digest = self
            .digests
            .get(span)
            .ok_or_else(|| format!("span {span} is not in the zTOC"))?;
        let range = self.spans.span_range(span);
        if frame.len() as u64 != range.end - range.start {
            return Err(format!(
                "span {span}: {} compressed bytes, expected {}",
                frame.len(),
                range.end - range.start
            ));
        }
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(frame)));
        if actual != *digest {
            return Err(format!(
                "span {span}: digest is {actual}, the zTOC says {digest}"
            ));
        }
        let data = Arc::new(self.spans.inflate_span(span, frame)?);
        {
            let mut recent = self.recent.lock().unwrap();
            recent.retain(|(i, _)| *i != span);
            if recent.len() == RECENT_SPANS {
                recent.pop_front();
            }
            recent.push_back((span, data.clone()));
        }
        self.check_span_headers(span, &data)?;
        Ok(data)
    }

    /// Checks the tar header of every not yet checked file whose header lies in span
    /// `span` (inflated as `data`); a mismatch refuses the layer.
    fn check_span_headers(&self, span: usize, data: &[u8]) -> std::result::Result<(), String> {
        let base = self.spans.checkpoints[span].uncompressed_offset;
        for &file in &self.span_headers[span] {
            if self.checked.lock().unwrap()[file] {
                continue;
            }
            self.check_header(file, &header_window(data, base, self.files[file].1))?;
            // A partly proven name stays unchecked: the cache settles it.
        }
        Ok(())
    }

    /// The checked tar headers lying in span `span`, if it is among the recent spans: (file,
    /// its [`HEADER_WINDOW`]), for the cache to keep (a restart then checks from disk).
    pub fn span_header_bytes(&self, span: usize) -> Vec<(usize, Vec<u8>)> {
        let Some(data) = self.recent_span(span) else {
            return Vec::new();
        };
        let base = self.spans.checkpoints[span].uncompressed_offset;
        self.span_headers[span]
            .iter()
            .filter(|&&f| self.checked.lock().unwrap()[f])
            .map(|&f| (f, header_window(&data, base, self.files[f].1)))
            .collect()
    }

    /// The inflated bytes of span `span` if it is among the recent ones.
    pub fn recent_span(&self, span: usize) -> Option<Arc<Vec<u8>>> {
        let recent = self.recent.lock().unwrap();
        recent
            .iter()
            .find(|(i, _)| *i == span)
            .map(|(_, d)| d.clone())
    }

    /// The compressed blob range of span `span`.
    pub fn span_range(&self, span: usize) -> std::ops::Range<u64> {
        self.spans.span_range(span)
    }

    /// The file (index into the zTOC's regular files) whose piece starts at `inner_offset`
    /// of span `span`, if its tar header has not been checked yet.
    pub fn unchecked_file(&self, span: usize, inner_offset: u64) -> Option<usize> {
        let file = *self.piece_file.get(&(span, inner_offset))?;
        (!self.checked.lock().unwrap()[file]).then_some(file)
    }

    /// Where file `file`'s tar header lies: its first uncompressed byte and the spans
    /// holding its 512 bytes. Errors when the file starts before byte 512 (no room for the
    /// header a tar puts before every file's data: the zTOC lies).
    pub fn header_place(&self, file: usize) -> std::result::Result<(u64, Vec<usize>), String> {
        let (name, offset, _) = &self.files[file];
        let start = offset.checked_sub(512).ok_or_else(|| {
            format!(
                "the zTOC's file {} starts at {offset}, before any tar header",
                String::from_utf8_lossy(name)
            )
        })?;
        let first = self.spans.span_of(start);
        let last = self.spans.span_of(offset - 1);
        Ok((start, (first..=last).collect()))
    }

    /// The first uncompressed byte of span `span`.
    pub fn span_start(&self, span: usize) -> u64 {
        self.spans.checkpoints[span].uncompressed_offset
    }

    /// The cache key under which file `file`'s checked tar header is kept (sealed like a
    /// piece), so a restart checks it from disk instead of fetching its span again.
    pub fn header_key(&self, layer: &str, file: usize) -> String {
        let offset = self.files[file].1;
        let key = format!("skiff-soci-header\0{layer}\0{offset}");
        format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
    }

    /// Checks that `header` (the [`HEADER_WINDOW`] before file `file`'s data in the real
    /// tar stream) holds a regular file's header with the zTOC's name, size, mode and
    /// owner; marks the file checked and returns true when the name is proven (the header
    /// or a PAX / GNU long-name record before it names it exactly). Returns false when only
    /// part of the name could be compared (a cut-short or ASCII stand-in name field with no
    /// long-name record in the window): the whole layer must settle it. A mismatch refuses
    /// the layer (every later read fails, cached pieces included): the zTOC's file table
    /// does not describe this layer, and its pieces would be other files' bytes. Errors
    /// are reasons.
    pub fn check_header(&self, file: usize, header: &[u8]) -> std::result::Result<bool, String> {
        let (name, _, size) = &self.files[file];
        match header_matches(header, name, *size, self.owners[file]) {
            Ok(NameMatch::Exact) => {
                self.checked.lock().unwrap()[file] = true;
                Ok(true)
            }
            // Left unchecked: the cache settles it with the whole layer.
            Ok(NameMatch::Partial) => Ok(false),
            Err(why) => {
                let reason = format!(
                    "the zTOC's file {} is not the layer's: {why}",
                    String::from_utf8_lossy(name)
                );
                self.refuse(&reason);
                Err(reason)
            }
        }
    }

    /// Refuses every later read of the layer with `reason` (logged once).
    fn refuse(&self, reason: &str) {
        let mut slot = self.whole.lock().unwrap();
        if !matches!(&*slot, Some(Err(_))) {
            tracing::error!(%reason, "SOCI layer refused: its zTOC does not describe it; pull the image with lazy pull off");
            *slot = Some(Err(reason.to_string()));
        }
    }
}

/// Bytes of the tar stream kept before a file's data to check it: its header (the last 512)
/// and what precedes it, where a PAX extended header carries the exact name.
pub const HEADER_WINDOW: usize = 4096;

/// The [`HEADER_WINDOW`] bytes before uncompressed offset `data_offset`, from a span's
/// output `data` starting at uncompressed `base`; zeros where the span does not reach.
pub fn header_window(data: &[u8], base: u64, data_offset: u64) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_WINDOW];
    let end = data_offset.saturating_sub(base).min(data.len() as u64) as usize;
    let start = data_offset
        .saturating_sub(HEADER_WINDOW as u64)
        .max(base)
        .saturating_sub(base) as usize;
    let have = &data[start.min(end)..end];
    let at = HEADER_WINDOW - have.len();
    out[at..].copy_from_slice(have);
    out
}

/// Whether the 512-byte `block` carries a tar header's valid checksum (the sum of its
/// bytes with the checksum field read as spaces).
fn checksum_ok(block: &[u8]) -> bool {
    let computed: u32 = block[..148]
        .iter()
        .chain([b' '; 8].iter())
        .chain(block[156..512].iter())
        .map(|&b| u32::from(b))
        .sum();
    tar::Header::from_byte_slice(block)
        .cksum()
        .is_ok_and(|sum| sum == computed)
}

/// The full name a long-name record directly before the last 512 bytes of `window` (the
/// file's own header) gives: a PAX extended header's `path` record, or a GNU `L` entry's
/// data; `None` when the window holds neither whole.
fn long_name(window: &[u8]) -> Option<Vec<u8>> {
    let header_at = window.len().checked_sub(512)?;
    // The PAX header, then its records padded to 512-byte blocks, then the file's header.
    for blocks in 1..=(header_at / 512).saturating_sub(1) {
        let at = header_at - 512 * (blocks + 1);
        let block = &window[at..at + 512];
        if !matches!(block[156], b'x' | b'L') {
            continue;
        }
        let h = tar::Header::from_byte_slice(block);
        let size = h.entry_size().ok()? as usize;
        if !checksum_ok(block) || size.div_ceil(512) != blocks {
            continue;
        }
        let mut records = &window[at + 512..at + 512 + size];
        if block[156] == b'L' {
            let end = records
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(records.len());
            return Some(records[..end].to_vec());
        }
        // Records are "<len> <key>=<value>\n", <len> counting the whole record.
        while let Some(space) = records.iter().position(|&b| b == b' ') {
            let len: usize = std::str::from_utf8(&records[..space]).ok()?.parse().ok()?;
            let record = records.get(space + 1..len)?;
            if let Some(value) = record.strip_prefix(b"path=") {
                return Some(value.strip_suffix(b"\n").unwrap_or(value).to_vec());
            }
            records = &records[len..];
        }
        return None;
    }
    None
}

/// Whether `header` is a tar header of a regular file named `name` of `size` bytes with
/// `(mode, uid, gid)`: a valid checksum, type `0` (or the old `\0`, or `7`), the size, the
/// permission bits, the owner (when it fits the header's field), and the name. The name
/// field holds what fits in it: a name over 100 bytes (GNU long names, PAX) is cut short,
/// and PAX writers put an ASCII copy there for a name with other characters (Go drops
/// them, Python writes `?`); such names are compared on their ASCII characters.
/// How much of a file's name its tar header proved.
#[derive(Debug, PartialEq, Eq)]
enum NameMatch {
    /// Named exactly (the name field, or a long-name record).
    Exact,
    /// Only the name field's part of it (cut short, or an ASCII stand-in).
    Partial,
}

fn header_matches(
    header: &[u8],
    name: &[u8],
    size: u64,
    (mode, uid, gid): (u32, u32, u32),
) -> std::result::Result<NameMatch, String> {
    let window = header;
    let header = window
        .len()
        .checked_sub(512)
        .map(|at| &window[at..])
        .ok_or("short header")?;
    let h = tar::Header::from_byte_slice(header);
    if !checksum_ok(header) {
        return Err("no tar header there (bad checksum)".into());
    }
    if !matches!(header[156], b'0' | b'\0' | b'7') {
        return Err(format!(
            "the tar header is of type {:?}",
            header[156] as char
        ));
    }
    let declared = h
        .entry_size()
        .map_err(|e| format!("tar header size: {e}"))?;
    if declared != size {
        return Err(format!(
            "the tar header says {declared} bytes, the zTOC {size}"
        ));
    }
    if let Ok(m) = h.mode() {
        if m & 0o7777 != mode {
            return Err(format!(
                "the tar header says mode {:o}, the zTOC {mode:o}",
                m & 0o7777
            ));
        }
    }
    // Owners past the octal field's reach are carried by PAX records only.
    const FIELD_MAX: u64 = 0o7777777;
    for (what, field, want) in [("uid", h.uid(), uid), ("gid", h.gid(), gid)] {
        if let Ok(got) = field {
            if u64::from(want) <= FIELD_MAX && got != u64::from(want) {
                return Err(format!("the tar header says {what} {got}, the zTOC {want}"));
            }
        }
    }
    let in_header = h.path_bytes();
    // A long-name record, when the window holds it, names the file exactly.
    if let Some(path) = long_name(window) {
        if tar_name(&path) != tar_name(name) {
            return Err(format!(
                "the tar header's PAX path is {}",
                String::from_utf8_lossy(&path)
            ));
        }
        return Ok(NameMatch::Exact);
    }
    if tar_name(name) == tar_name(&in_header) {
        return Ok(NameMatch::Exact);
    }
    if !names_agree(name, &in_header) {
        return Err(format!(
            "the tar header names {}",
            String::from_utf8_lossy(&in_header)
        ));
    }
    Ok(NameMatch::Partial)
}

/// Whether the header's name field `field` can stand for `name` (see [`header_matches`]).
fn names_agree(name: &[u8], field: &[u8]) -> bool {
    if tar_name(name) == tar_name(field) {
        return true;
    }
    let ascii = name.is_ascii();
    if ascii && name.len() <= 100 {
        return false;
    }
    // Compare what both keep: ASCII characters other than the `?` stand-ins.
    let kept = |b: &[u8]| -> Vec<u8> {
        tar_name(b)
            .iter()
            .copied()
            .filter(|c| c.is_ascii() && *c != b'?')
            .collect()
    };
    let (n, f) = (kept(name), kept(field));
    // A cut-short field (it filled its 100 bytes) only has the name's start.
    if field.len() >= 99 {
        n.starts_with(&f)
    } else {
        n == f
    }
}

/// The SOCI format, as recorded in the database. It claims no layer from its descriptor:
/// a layer is SOCI only through an index found for its image (see `Store::pull`).
pub struct Soci;

impl LazyFormat for Soci {
    fn name(&self) -> &'static str {
        FORMAT_NAME
    }

    fn claims(&self, _layer: &LayerDescriptor) -> bool {
        false
    }

    fn open(
        &self,
        _source: &dyn BlobSource,
        _layer: &LayerDescriptor,
        _retry: &RetryPolicy,
    ) -> Result<Opened> {
        Ok(Opened::Full(
            "a SOCI layer opens through its image's index".to_string(),
        ))
    }
}

fn bad(layer: &str, name: &[u8], reason: impl std::fmt::Display) -> StoreError {
    StoreError::InvalidZtoc {
        layer: layer.to_string(),
        reason: format!("{}: {reason}", String::from_utf8_lossy(name)),
    }
}

/// The files of `ztoc` (of blob `layer`) as a layer index. Errors: [`StoreError::InvalidZtoc`]
/// (a name escaping the root, a bad time, a hard link to itself or the root) and
/// [`StoreError::BadLayerEntry`] from name normalization.
pub fn layer_index(layer: &str, ztoc: &Ztoc) -> Result<LayerIndex> {
    let spans = ztoc.span_index();
    let mut entries = Vec::with_capacity(ztoc.files.len());
    for f in &ztoc.files {
        let Some(path) = normalize_path(layer, &f.name)? else {
            continue; // the root: its metadata is the mount's
        };
        let kind = FileKind::from_toc_type(&f.kind)
            .ok_or_else(|| bad(layer, &f.name, format!("unknown type {:?}", f.kind)))?;
        let link_target = match kind {
            FileKind::Symlink => LayerPath::new(f.linkname.clone()),
            FileKind::Hardlink => {
                let t = normalize_path(layer, &f.linkname)?
                    .ok_or_else(|| bad(layer, &f.name, "hard link to the root"))?;
                if t == path {
                    return Err(bad(layer, &f.name, "hard link to itself"));
                }
                t
            }
            _ => LayerPath::default(),
        };
        let (mtime, mtime_nsec) = mtime(layer, f)?;
        let mut xattrs = BTreeMap::new();
        for (k, v) in &f.pax_records {
            if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                xattrs.insert(String::from_utf8_lossy(name).into_owned(), v.clone());
            }
        }
        let size = if kind == FileKind::Regular {
            f.uncompressed_size
        } else {
            0
        };
        let mut chunks = Vec::new();
        if size > 0 {
            let lo = f.uncompressed_offset;
            let hi = lo
                .checked_add(size)
                .filter(|&h| h <= ztoc.uncompressed_archive_size)
                .ok_or_else(|| bad(layer, &f.name, "data past the archive's end"))?;
            for piece in file_pieces(ztoc, &spans, lo, hi) {
                let (i, inner, len) =
                    piece.map_err(|i| bad(layer, &f.name, format!("span {i} holds none of it")))?;
                let range = spans.span_range(i);
                chunks.push(ChunkRef {
                    file_offset: spans.checkpoints[i].uncompressed_offset + inner - lo,
                    len,
                    location: ChunkLocation::Compressed {
                        blob_offset: range.start,
                        blob_len: range.end - range.start,
                        digest: piece_key(&ztoc.span_digests[i], inner, len),
                        codec: Codec::Zran { span: i as u32 },
                        inner_offset: inner,
                    },
                });
            }
            let covered: u64 = chunks.iter().map(|c| c.len).sum();
            if covered != size {
                return Err(bad(layer, &f.name, "its spans do not cover it"));
            }
        }
        let is_dev = matches!(kind, FileKind::CharDevice | FileKind::BlockDevice);
        entries.push(FileEntry {
            path,
            kind,
            mode: (f.mode & 0o7777) as u32,
            uid: f.uid,
            gid: f.gid,
            size,
            mtime,
            mtime_nsec,
            link_target,
            dev_major: if is_dev { f.dev_major as u32 } else { 0 },
            dev_minor: if is_dev { f.dev_minor as u32 } else { 0 },
            xattrs,
            chunks,
        });
    }
    Ok(LayerIndex {
        digest: layer.to_string(),
        entries,
    })
}

/// The pieces of the file at uncompressed `lo..hi`, one per span it touches: (span, offset
/// in the span's output, length); `Err(span)` for a span that holds none of it (a zTOC
/// whose spans and files disagree).
fn file_pieces<'a>(
    ztoc: &Ztoc,
    spans: &'a SpanIndex,
    lo: u64,
    hi: u64,
) -> impl Iterator<Item = std::result::Result<(usize, u64, u64), usize>> + 'a {
    ztoc.spans_of(lo, hi).map(move |i| {
        let start = spans.checkpoints[i].uncompressed_offset;
        let end = start + spans.span_len(i);
        let (a, b) = (lo.max(start), hi.min(end));
        if a >= b {
            Err(i)
        } else {
            Ok((i, a - start, b - a))
        }
    })
}

fn mtime(layer: &str, f: &FileMetadata) -> Result<(i64, u32)> {
    if f.mod_time.is_empty() {
        return Ok((0, 0));
    }
    let dt = chrono::DateTime::parse_from_rfc3339(&f.mod_time)
        .map_err(|e| bad(layer, &f.name, format!("mod time {:?}: {e}", f.mod_time)))?;
    Ok((dt.timestamp(), dt.timestamp_subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn header(name: &str, size: u64, mode: u32) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    #[test]
    fn tar_headers_are_checked_against_the_ztoc() {
        let h = header("data/one.bin", 10, 0o644);
        assert_eq!(
            header_matches(&h, b"./data/one.bin", 10, (0o644, 0, 0)),
            Ok(NameMatch::Exact)
        );
        let e = header_matches(&h, b"data/two.bin", 10, (0o644, 0, 0)).unwrap_err();
        assert!(e.contains("names data/one.bin"), "{e}");
        let e = header_matches(&h, b"data/one.bin", 11, (0o644, 0, 0)).unwrap_err();
        assert!(e.contains("says 10 bytes"), "{e}");
        let e = header_matches(&h, b"data/one.bin", 10, (0o4755, 0, 0)).unwrap_err();
        assert!(e.contains("mode 644"), "{e}");
        let e = header_matches(&h, b"data/one.bin", 10, (0o644, 1000, 0)).unwrap_err();
        assert!(e.contains("uid 0"), "{e}");
        let mut bad = h.clone();
        bad[0] ^= 1;
        assert!(header_matches(&bad, b"data/one.bin", 10, (0o644, 0, 0))
            .unwrap_err()
            .contains("checksum"));
        // PAX writers' ASCII stand-ins for other characters (Go drops them, Python writes
        // `?`), and names cut short at 100 bytes.
        let name = "q/gostyle-ünï-çødé.txt".as_bytes();
        assert!(names_agree(name, b"q/gostyle-n-d.txt"));
        assert!(names_agree(name, b"q/gostyle-?n?-???d?.txt"));
        assert!(!names_agree(name, b"q/other-n-d.txt"));
        let long = format!("d/{}", "x".repeat(150));
        assert!(names_agree(long.as_bytes(), &long.as_bytes()[..100]));
        assert!(!names_agree(b"data/one.bin", b"data/on?.bin"));

        // A PAX record names the file exactly: names differing only in other characters
        // are told apart by it.
        let record = "q/\u{fc}.bin";
        let line_len = record.len() + " path=\n".len() + 2;
        let records = format!("{line_len} path={record}\n");
        assert_eq!(records.len(), line_len);
        let mut pax = tar::Header::new_ustar();
        pax.set_entry_type(tar::EntryType::XHeader);
        pax.set_size(records.len() as u64);
        pax.set_cksum();
        let mut window = vec![0u8; HEADER_WINDOW - 1536];
        window.extend_from_slice(pax.as_bytes());
        let mut data = records.into_bytes();
        data.resize(512, 0);
        window.extend_from_slice(&data);
        window.extend_from_slice(&header("q/.bin", 10, 0o644));
        assert_eq!(window.len(), HEADER_WINDOW);
        let ok = header_matches(&window, "q/\u{fc}.bin".as_bytes(), 10, (0o644, 0, 0));
        assert_eq!(ok, Ok(NameMatch::Exact));
        // Without the record (beyond the window), the stand-in proves only part of it.
        let bare = header("q/.bin", 10, 0o644);
        let partial = header_matches(&bare, "q/\u{f6}.bin".as_bytes(), 10, (0o644, 0, 0));
        assert_eq!(partial, Ok(NameMatch::Partial));
        let e = header_matches(&window, "q/\u{f6}.bin".as_bytes(), 10, (0o644, 0, 0)).unwrap_err();
        assert!(e.contains("PAX path is q/\u{fc}.bin"), "{e}");
    }

    fn tar_gz(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&tar).unwrap();
        e.finish().unwrap()
    }

    /// A zran piece's frame in `gz`, span, inner offset and key.
    fn zran_piece<'a>(gz: &'a [u8], c: &ChunkRef) -> (&'a [u8], usize, u64, String) {
        let ChunkLocation::Compressed {
            blob_offset,
            blob_len,
            codec: Codec::Zran { span },
            inner_offset,
            digest,
        } = &c.location
        else {
            panic!("not a zran piece: {c:?}")
        };
        let frame = &gz[*blob_offset as usize..(*blob_offset + *blob_len) as usize];
        (frame, *span as usize, *inner_offset, digest.clone())
    }

    #[test]
    fn files_become_span_pieces_that_rebuild_them() {
        // xorshift: incompressible, so deflate ends blocks (checkpoints) often.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let big: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let gz = tar_gz(&[("a/small", b"hello".to_vec()), ("a/big", big.clone())]);
        let z = crate::soci::build_ztoc("sha256:l", &gz, 64 << 10).unwrap();
        let idx = layer_index("sha256:l", &z).unwrap();
        let spans = z.span_index();
        let big_entry = idx
            .entries
            .iter()
            .find(|e| e.path.as_bytes() == b"a/big")
            .unwrap();
        assert!(
            big_entry.chunks.len() > 2,
            "a 300 KB file spans several 64 KiB spans"
        );
        let mut out = Vec::new();
        for c in &big_entry.chunks {
            let (frame, span, inner_offset, digest) = zran_piece(&gz, c);
            assert_eq!(
                digest,
                piece_key(&z.span_digests[span], inner_offset, c.len)
            );
            let data = z.read_span("sha256:l", &spans, span, frame).unwrap();
            out.extend_from_slice(&data[inner_offset as usize..(inner_offset + c.len) as usize]);
        }
        assert_eq!(out, big);

        // Through ZranLayer, as the cache decodes: the frame is checked before inflating.
        let c = &big_entry.chunks[1];
        let (frame, s, io, digest) = zran_piece(&gz, c);
        let (mut frame, digest) = (frame.to_vec(), digest.as_str());
        let zran = ZranLayer::new(z.clone());
        assert_eq!(zran.recent_piece(s, io, c.len, digest), None);
        let piece = zran.piece(s, &frame, io, c.len, digest).unwrap();
        assert_eq!(
            piece,
            big[c.file_offset as usize..(c.file_offset + c.len) as usize]
        );
        assert_eq!(zran.recent_piece(s, io, c.len, digest), Some(piece));
        assert!(zran
            .piece(s, &frame, io, c.len, &piece_key("sha256:x", io, c.len))
            .unwrap_err()
            .contains("piece key"));
        assert!(zran
            .piece(s, &frame[1..], io, c.len, digest)
            .unwrap_err()
            .contains("compressed bytes"));
        let last = frame.len() - 1;
        frame[last] ^= 1;
        assert!(zran
            .piece(s, &frame, io, c.len, digest)
            .unwrap_err()
            .contains("the zTOC says"));
        assert_eq!(big_entry.mtime, 1_700_000_000);
        assert_eq!(big_entry.mode, 0o644);
    }
}
