//! Fetching missing chunks: runs of blob-adjacent chunks in one Range request, shared
//! through single-flight claims, with adaptive read-ahead streamed behind the demanded
//! bytes (see [`super::readahead`]).

use std::collections::HashMap;
use std::sync::Arc;

use super::flight::{Claim, Owned, ABANDONED};
use super::readahead::LayerMap;
use super::*;

impl CacheCore {
    pub(super) fn source(&self, layer: &str) -> Result<Arc<dyn BlobSource>> {
        self.layers
            .read()
            .unwrap()
            .get(layer)
            .cloned()
            .ok_or_else(|| StoreError::LayerNotRegistered {
                layer: layer.to_string(),
            })
    }

    /// Fetches the blob-contiguous chunks `run` with one range request, verifies each
    /// (fetching a bad one once more alone) and stores them. One result per chunk.
    fn fetch_run(
        &self,
        layer: &str,
        source: &dyn BlobSource,
        run: &[Want],
    ) -> Vec<Result<Arc<[u8]>>> {
        let start = run[0].blob_offset;
        let last = run.last().unwrap();
        let len = last.blob_offset + last.blob_len - start;
        let t0 = std::time::Instant::now();
        let fetched = {
            let _permit = self.permits.acquire();
            source.read_range_retry(start, len, &self.retry)
        };
        let bytes = match fetched {
            Ok(b) => {
                tracing::debug!(
                    layer,
                    offset = start,
                    len,
                    chunks = run.len(),
                    ms = t0.elapsed().as_secs_f64() * 1e3,
                    "fetched chunks"
                );
                bump(&self.counters.fetch_requests, 1);
                bump(&self.counters.fetched_bytes, len);
                b
            }
            Err(e) => {
                bump(&self.counters.fetch_errors, 1);
                tracing::error!(layer, offset = start, len, error = %e, "fetching chunks failed");
                let reason = e.to_string();
                return run
                    .iter()
                    .map(|w| {
                        Err(StoreError::BlobFetch {
                            digest: layer.to_string(),
                            offset: w.blob_offset,
                            len: w.blob_len,
                            reason: reason.clone(),
                        })
                    })
                    .collect();
            }
        };
        self.finish_run(layer, source, run, &bytes)
    }

    /// Verifies and stores the chunks of `run` from `bytes` (which start at the run's
    /// first chunk); a bad chunk is fetched once more alone.
    fn finish_run(
        &self,
        layer: &str,
        source: &dyn BlobSource,
        run: &[Want],
        bytes: &[u8],
    ) -> Vec<Result<Arc<[u8]>>> {
        let start = run[0].blob_offset;
        run.iter()
            .map(|w| {
                let lo = (w.blob_offset - start) as usize;
                let slice = &bytes[lo..lo + w.blob_len as usize];
                let data = match self.decode_verify_want(layer, slice, w.codec, w.inner_offset, w.len, w.digest) {
                    Ok(d) => d,
                    Err(first) => {
                        bump(&self.counters.corrupt_chunks, 1);
                        tracing::warn!(layer, digest = w.digest, offset = w.blob_offset, reason = %first, "chunk failed verification, fetching it again");
                        self.refetch(layer, source, w)?
                    }
                };
                self.store(w, &data)?;
                Ok(data)
            })
            .collect()
    }

    fn refetch(&self, layer: &str, source: &dyn BlobSource, w: &Want) -> Result<Arc<[u8]>> {
        let bytes = {
            let _permit = self.permits.acquire();
            source.read_range_retry(w.blob_offset, w.blob_len, &self.retry)?
        };
        bump(&self.counters.fetch_requests, 1);
        bump(&self.counters.fetched_bytes, w.blob_len);
        let decoded =
            self.decode_verify_want(layer, &bytes, w.codec, w.inner_offset, w.len, w.digest);
        let decoded = match (decoded, w.codec) {
            (Err(reason), Codec::Zran { span }) => {
                self.zran_fallback(layer, source, w, span as usize, reason)
            }
            (decoded, _) => decoded,
        };
        decoded.map_err(|reason| {
            bump(&self.counters.corrupt_chunks, 1);
            tracing::error!(layer, digest = w.digest, offset = w.blob_offset, %reason, "chunk corrupt twice");
            StoreError::ChunkCorrupt {
                layer: layer.to_string(),
                chunk_digest: w.digest.to_string(),
                offset: w.blob_offset,
                len: w.blob_len,
                reason,
            }
        })
    }

    /// A SOCI span that failed twice means its zTOC lies (the span's bytes matched
    /// nothing, or did not inflate from its checkpoint): the layer falls back to a whole
    /// download, verified against the layer digest, and the piece is cut from that
    /// (`reason` is why the span failed, logged once per layer).
    fn zran_fallback(
        &self,
        layer: &str,
        source: &dyn BlobSource,
        w: &Want,
        span: usize,
        reason: String,
    ) -> std::result::Result<Arc<[u8]>, String> {
        let zran = self
            .zran_layer(layer)
            .ok_or_else(|| format!("no zTOC registered for layer {layer}: {reason}"))?;
        if let Some(piece) = zran.whole_piece(span, w.inner_offset, w.len, w.digest) {
            return piece.map(Into::into);
        }
        let _permit = self.permits.acquire();
        let piece = zran
            .piece_from_whole(
                source,
                &self.files.tmp_dir(),
                (span, w.inner_offset, w.len),
                w.digest,
                &reason,
            )
            .map_err(|e| format!("{reason}; the whole layer: {e}"))?;
        if piece.1 {
            bump(&self.counters.fetch_requests, 1);
            bump(&self.counters.fetched_bytes, source.size());
        }
        Ok(piece.0.into())
    }

    /// Keeps every other file piece of the SOCI spans just fetched (`(span, blob offset,
    /// blob length)`): visible at once (the `unstored` map), written to disk on a thread of
    /// their own, so the read that fetched the span does not wait for them.
    fn keep_span_siblings(self: &Arc<Self>, layer: &str, mut spans: Vec<(u32, u64, u64)>) {
        let Some(zran) = self.zran_layer(layer) else {
            return;
        };
        spans.sort_unstable();
        spans.dedup();
        let mut keys: Vec<(String, u64, u64, u32, u64, u64)> = Vec::new();
        let mut data: Vec<Arc<[u8]>> = Vec::new();
        for (span, blob_offset, blob_len) in spans {
            // The checked tar headers in the span too (a restart checks them from disk).
            let headers = zran
                .span_header_bytes(span as usize)
                .into_iter()
                .map(|(file, bytes)| {
                    let len = crate::soci::lazy::HEADER_WINDOW as u64;
                    (zran.header_key(layer, file), 0, len, bytes)
                });
            for (key, inner, len, bytes) in
                zran.span_siblings(span as usize).into_iter().chain(headers)
            {
                if self.is_cached(&key) {
                    continue;
                }
                let bytes: Arc<[u8]> = bytes.into();
                self.unstored
                    .lock()
                    .unwrap()
                    .insert(key.clone(), bytes.clone());
                keys.push((key, inner, len, span, blob_offset, blob_len));
                data.push(bytes);
            }
        }
        if keys.is_empty() {
            return;
        }
        let core = self.clone();
        std::thread::spawn(move || {
            let batch: Vec<(Want, Arc<[u8]>)> = keys
                .iter()
                .zip(data)
                .map(|((key, inner, len, span, blob_offset, blob_len), bytes)| {
                    (
                        Want {
                            blob_offset: *blob_offset,
                            blob_len: *blob_len,
                            len: *len,
                            digest: key,
                            codec: Codec::Zran { span: *span },
                            inner_offset: *inner,
                        },
                        bytes,
                    )
                })
                .collect();
            core.store_many(&batch);
        });
    }

    /// Fails a piece of a SOCI layer whose whole download showed its zTOC does not describe
    /// it: even pieces cached before then may be other files' bytes.
    fn zran_refused(&self, layer: &str, w: &Want) -> Result<()> {
        if !matches!(w.codec, Codec::Zran { .. }) {
            return Ok(());
        }
        let Some(zran) = self.zran_layer(layer) else {
            return Ok(());
        };
        match zran.refused() {
            None => Ok(()),
            Some(reason) => Err(StoreError::ChunkCorrupt {
                layer: layer.to_string(),
                chunk_digest: w.digest.to_string(),
                offset: w.blob_offset,
                len: w.blob_len,
                reason,
            }),
        }
    }

    /// A zran piece cut from a span its layer inflated recently (stored like a fetched
    /// one), or `None`.
    fn recent_zran_piece(&self, layer: &str, w: &Want) -> Result<Option<Arc<[u8]>>> {
        let Codec::Zran { span } = w.codec else {
            return Ok(None);
        };
        let Some(zran) = self.zran_layer(layer) else {
            return Ok(None);
        };
        let data = match zran.whole_piece(span as usize, w.inner_offset, w.len, w.digest) {
            Some(Ok(data)) => data,
            Some(Err(reason)) => {
                return Err(StoreError::ChunkCorrupt {
                    layer: layer.to_string(),
                    chunk_digest: w.digest.to_string(),
                    offset: w.blob_offset,
                    len: w.blob_len,
                    reason,
                })
            }
            None => match zran.recent_piece(span as usize, w.inner_offset, w.len, w.digest) {
                Some(data) => data,
                None => return Ok(None),
            },
        };
        bump(&self.counters.memory_hits, 1);
        let data: Arc<[u8]> = data.into();
        self.store(w, &data)?;
        Ok(Some(data))
    }

    /// The bytes of every chunk in `wants`, from memory, disk, or the blob source. A SOCI
    /// piece is handed out only once its file's tar header in the real stream matches the
    /// zTOC ([`Self::check_zran_files`]).
    pub(super) fn get_chunks(
        self: &Arc<Self>,
        layer: &str,
        wants: &[Want],
        reach: Reach,
    ) -> Result<Vec<Arc<[u8]>>> {
        let out = self.get_chunks_unchecked(layer, wants, reach)?;
        self.check_zran_files(layer, wants)?;
        Ok(out)
    }

    /// Checks the tar header of each SOCI file `wants` has pieces of, once per file: the
    /// zTOC's span digests only prove the compressed bytes are the layer's, not that its
    /// file table places files where the tar does (a zTOC made for another layer with the
    /// same spans would serve one file's bytes as another's). The header comes from a
    /// span inflated recently, a checked header kept in the cache, or a fetch of its span;
    /// a mismatch refuses the layer.
    fn check_zran_files(self: &Arc<Self>, layer: &str, wants: &[Want]) -> Result<()> {
        let mut zran = None;
        for w in wants {
            let Codec::Zran { span } = w.codec else {
                continue;
            };
            let z = match &zran {
                Some(z) => z,
                None => match self.zran_layer(layer) {
                    Some(z) => zran.insert(z),
                    None => return Ok(()),
                },
            };
            let Some(file) = z.unchecked_file(span as usize, w.inner_offset) else {
                continue;
            };
            let corrupt = |reason: String| StoreError::ChunkCorrupt {
                layer: layer.to_string(),
                chunk_digest: w.digest.to_string(),
                offset: w.blob_offset,
                len: w.blob_len,
                reason,
            };
            let key = z.header_key(layer, file);
            let marker = Want {
                blob_offset: w.blob_offset,
                blob_len: w.blob_len,
                len: crate::soci::lazy::HEADER_WINDOW as u64,
                digest: &key,
                codec: w.codec,
                inner_offset: 0,
            };
            if let Some(header) = self.lookup(&marker)? {
                if !z.check_header(file, &header).map_err(corrupt)? {
                    self.settle_with_whole_layer(layer, z, span as usize, file)
                        .map_err(corrupt)?;
                }
                continue;
            }
            let (start, spans) = z.header_place(file).map_err(corrupt)?;
            let mut header = Vec::with_capacity(512);
            for s in spans {
                let data = match z.recent_span(s) {
                    Some(d) => d,
                    None => {
                        let range = z.span_range(s);
                        let source = self.source(layer)?;
                        let frame = {
                            let _permit = self.permits.acquire();
                            source.read_range_retry(
                                range.start,
                                range.end - range.start,
                                &self.retry,
                            )?
                        };
                        bump(&self.counters.fetch_requests, 1);
                        bump(&self.counters.fetched_bytes, range.end - range.start);
                        match z.inflate_frame(s, &frame) {
                            Ok(d) => d,
                            Err(reason) if z.refused().is_some() => return Err(corrupt(reason)),
                            // The header's span does not verify: the whole layer, which
                            // checks every file against the real tar, as a piece's would.
                            Err(reason) => {
                                self.whole_layer_for(layer, z, s, &reason)
                                    .map_err(corrupt)?;
                                header.clear();
                                break;
                            }
                        }
                    }
                };
                let base = z.span_start(s);
                let lo = start.max(base) - base;
                let hi = ((start + 512).min(base + data.len() as u64) - base).max(lo);
                header.extend_from_slice(&data[lo as usize..hi as usize]);
            }
            if header.is_empty() {
                continue; // checked with the whole layer
            }
            // Only the header itself was gathered here: no PAX record to read.
            let mut window = vec![0u8; crate::soci::lazy::HEADER_WINDOW - header.len()];
            window.extend_from_slice(&header);
            if !z.check_header(file, &window).map_err(corrupt)? {
                self.settle_with_whole_layer(layer, z, span as usize, file)
                    .map_err(corrupt)?;
            }
            let header: Arc<[u8]> = window.into();
            if let Err(e) = self.store(&marker, &header) {
                tracing::debug!(layer, error = %e, "keeping a checked SOCI tar header failed");
            }
        }
        Ok(())
    }

    /// File `file`'s tar header proved only part of its name: the whole layer, whose tar
    /// headers name every file in full, settles it (a rare case: a long-name record larger
    /// than the window, or split from the header by a span's end).
    fn settle_with_whole_layer(
        &self,
        layer: &str,
        z: &ZranLayer,
        span: usize,
        file: usize,
    ) -> std::result::Result<(), String> {
        let why = format!("file {file}'s tar header names it only in part");
        self.whole_layer_for(layer, z, span, &why)
    }

    /// Makes SOCI layer `layer` fall back to its whole download (checking every file), if
    /// it has not; counts the download.
    fn whole_layer_for(
        &self,
        layer: &str,
        z: &ZranLayer,
        span: usize,
        why: &str,
    ) -> std::result::Result<(), String> {
        let source = self.source(layer).map_err(|e| e.to_string())?;
        if z.ensure_whole(source.as_ref(), &self.files.tmp_dir(), span, why)? {
            bump(&self.counters.fetch_requests, 1);
            bump(&self.counters.fetched_bytes, source.size());
        }
        Ok(())
    }

    fn get_chunks_unchecked(
        self: &Arc<Self>,
        layer: &str,
        wants: &[Want],
        reach: Reach,
    ) -> Result<Vec<Arc<[u8]>>> {
        let mut out: Vec<Option<Arc<[u8]>>> = Vec::with_capacity(wants.len());
        for w in wants {
            self.zran_refused(layer, w)?;
            let hit = match self.lookup(w)? {
                Some(b) => Some(b),
                None => self.recent_zran_piece(layer, w)?,
            };
            out.push(hit);
        }
        if out.iter().all(Option::is_some) {
            return Ok(out.into_iter().map(Option::unwrap).collect());
        }
        let source = self.source(layer)?;
        let mut owned: Vec<usize> = Vec::new();
        let mut waits = Vec::new();
        let mut dups = Vec::new();
        let mut claimed: HashMap<&str, usize> = HashMap::new();
        let mut mine = Owned::new(&self.flights);
        for i in 0..wants.len() {
            if out[i].is_some() {
                continue;
            }
            let d = wants[i].digest;
            if let Some(&first) = claimed.get(d) {
                dups.push((i, first));
                continue;
            }
            claimed.insert(d, i);
            match self.flights.claim(d) {
                Claim::Owner => {
                    mine.own(d);
                    match self.lookup(&wants[i]) {
                        // It landed between our lookup and our claim.
                        Ok(Some(b)) => {
                            mine.finish(d, Ok(b.clone()));
                            out[i] = Some(b);
                        }
                        Ok(None) => owned.push(i),
                        Err(e) => {
                            mine.finish(d, Err(e.to_string()));
                            return Err(e);
                        }
                    }
                }
                Claim::Waiter(f) => {
                    // Queued behind a long read-ahead: fetched now instead.
                    self.take_queued(layer, d, wants[i].blob_offset);
                    waits.push((i, f))
                }
            }
        }
        // Runs: consecutive chunks that follow each other in the blob, at most 64, with
        // gaps (other files' tar headers) of at most MERGE_GAP bytes fetched along.
        let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
        let mut k = 0;
        while k < owned.len() {
            let mut end = k + 1;
            while end < owned.len() && end - k < 64 && owned[end] == owned[end - 1] + 1 {
                let prev = &wants[owned[end - 1]];
                let next = &wants[owned[end]];
                // Pieces of one zran span (SOCI) share its blob range: one request for all.
                let same_span =
                    next.blob_offset == prev.blob_offset && next.blob_len == prev.blob_len;
                let gap = next
                    .blob_offset
                    .checked_sub(prev.blob_offset + prev.blob_len);
                if !same_span && gap.is_none_or(|g| g > MERGE_GAP) {
                    break;
                }
                end += 1;
            }
            runs.push(k..end);
            k = end;
        }
        let fetch = |r: &std::ops::Range<usize>| {
            let run: Vec<Want> = owned[r.clone()].iter().map(|&i| wants[i].clone()).collect();
            bump(&self.counters.misses, run.len() as u64);
            self.fetch_with_readahead(layer, &source, &run, reach)
        };
        // Independent runs go out at once (bounded by the fetch permits).
        let results: Vec<Vec<Result<Arc<[u8]>>>> = if runs.len() == 1 {
            vec![fetch(&runs[0])]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = runs.iter().map(|r| s.spawn(|| fetch(r))).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a chunk fetch panicked"))
                    .collect()
            })
        };
        let mut first_err: Option<StoreError> = None;
        for (r, results) in runs.iter().zip(results) {
            for (&i, res) in owned[r.clone()].iter().zip(results) {
                match res {
                    Ok(b) => {
                        mine.finish(wants[i].digest, Ok(b.clone()));
                        out[i] = Some(b);
                    }
                    Err(e) => {
                        mine.finish(wants[i].digest, Err(e.to_string()));
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        let spans: Vec<(u32, u64, u64)> = owned
            .iter()
            .filter(|&&i| out[i].is_some())
            .filter_map(|&i| match wants[i].codec {
                Codec::Zran { span } => Some((span, wants[i].blob_offset, wants[i].blob_len)),
                _ => None,
            })
            .collect();
        if !spans.is_empty() {
            self.keep_span_siblings(layer, spans);
        }
        for (i, f) in waits {
            let t0 = std::time::Instant::now();
            let waited = f.wait();
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            if ms >= 2.0 {
                tracing::debug!(
                    layer,
                    offset = wants[i].blob_offset,
                    ms,
                    "a read waited for a chunk another fetch brings"
                );
            }
            match waited {
                Ok(b) => {
                    self.readahead.used(wants[i].digest);
                    out[i] = Some(b)
                }
                // Its fetcher let it go (a read-ahead that broke off): fetch it here.
                Err(reason) if reason == ABANDONED => {
                    match self.get_chunks_unchecked(layer, std::slice::from_ref(&wants[i]), reach) {
                        Ok(mut b) => out[i] = b.pop(),
                        Err(e) => {
                            first_err.get_or_insert(e);
                        }
                    }
                }
                Err(reason) => {
                    first_err.get_or_insert(StoreError::BlobFetch {
                        digest: layer.to_string(),
                        offset: wants[i].blob_offset,
                        len: wants[i].blob_len,
                        reason,
                    });
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        for (i, first) in dups {
            out[i] = out[first].clone();
        }
        Ok(out
            .into_iter()
            .map(|b| b.expect("every chunk filled"))
            .collect())
    }

    /// Fetches `run`, and with it the chunks that follow in the blob (read-ahead), in one
    /// request; returns as soon as the run's own bytes are in, leaving the rest to a
    /// background thread. Without read-ahead (off, nothing to add, cache under pressure,
    /// a failure before the run's bytes arrived) it is [`fetch_run`](Self::fetch_run).
    fn fetch_with_readahead(
        self: &Arc<Self>,
        layer: &str,
        source: &Arc<dyn BlobSource>,
        run: &[Want],
        reach: Reach,
    ) -> Vec<Result<Arc<[u8]>>> {
        if reach == Reach::Directory {
            self.read_behind(layer, source, run);
        }
        let last = run.last().expect("a run is not empty");
        let demand_end = last.blob_offset + last.blob_len;
        let seq = self
            .readahead
            .sequential(layer, run[0].blob_offset, MERGE_GAP);
        let Some((map, ahead)) = self.plan_readahead(layer, run, reach, seq) else {
            self.readahead.fetched_to(layer, demand_end, seq);
            return self.fetch_run(layer, source.as_ref(), run);
        };
        let digests =
            |r: &[usize]| -> Vec<&str> { r.iter().map(|&p| &*map.chunks[p].digest).collect() };
        let start = run[0].blob_offset;
        let end_of = |p: usize| map.chunks[p].blob_offset + map.chunks[p].blob_len;
        // A long read-ahead: its first segment comes in this request, the rest is queued
        // (fetched in segments, any a read needs first).
        let (ahead, queued) = if end_of(ahead.end - 1) - demand_end > ahead_queue::SPLIT_OVER {
            let cut = ahead
                .clone()
                .find(|&p| end_of(p) - demand_end > ahead_queue::SEGMENT)
                .unwrap_or(ahead.end)
                .max(ahead.start + 1);
            // Chunks already here ride along in one request, not in the queue: a later miss
            // near the end of a large file (a 98 MB `node`) plans to the file's end again,
            // over segments earlier read-aheads brought, which would cross the link again.
            let queued = (cut..ahead.end)
                .filter(|&p| !self.is_cached(&map.chunks[p].digest))
                .collect::<Vec<usize>>();
            (ahead.start..cut, queued)
        } else {
            (ahead, Vec::new())
        };
        let ahead: Vec<usize> = ahead.collect();
        let ahead_owned = Owned::of(&self.flights, digests(&ahead));
        let queued_owned = Owned::of(&self.flights, digests(&queued));
        let end = end_of(*ahead.last().expect("read-ahead is not empty"));
        let planned_end = queued.last().map_or(end, |&p| end_of(p));
        self.readahead.fetched_to(layer, planned_end, seq);
        let need = (demand_end - start) as usize;
        let t0 = std::time::Instant::now();
        let received = {
            let _permit = self.permits.acquire();
            source
                .open_range(start, end - start)
                .and_then(|mut stream| {
                    let mut buf = bytes::BytesMut::with_capacity((end - start) as usize);
                    while buf.len() < need {
                        match stream.next_piece()? {
                            Some(p) => buf.extend_from_slice(&p),
                            None => break,
                        }
                    }
                    Ok((stream, buf))
                })
        };
        let (stream, mut buf) = match received {
            Ok((s, b)) if b.len() >= need => (s, b),
            other => {
                if let Err(e) = other {
                    tracing::debug!(layer, offset = start, error = %e, "read-ahead request failed; fetching the demanded chunks alone");
                }
                // Abandoned: whoever waits fetches for itself.
                drop((ahead_owned, queued_owned));
                return self.fetch_run(layer, source.as_ref(), run);
            }
        };
        tracing::debug!(
            layer,
            offset = start,
            len = need,
            ahead = end - start - need as u64,
            span = self.readahead.current(),
            chunks = run.len(),
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "fetched chunks with read-ahead"
        );
        bump(&self.counters.fetch_requests, 1);
        bump(&self.counters.fetched_bytes, end - start);
        let rest = buf.split_off(need);
        self.queue_ahead(layer, map.clone(), source.clone(), queued, queued_owned);
        let results = self.finish_run(layer, source.as_ref(), run, &buf);
        let core = self.clone();
        let layer = layer.to_string();
        let spawned = std::thread::Builder::new()
            .name("skiff-readahead".into())
            .spawn(move || {
                core.receive_chunks(&layer, &map, &ahead, ahead_owned, demand_end, rest, stream)
            });
        if let Err(e) = spawned {
            // The guard was moved into the closure and dropped with it: abandoned.
            tracing::warn!(error = %e, "cannot start a read-ahead thread");
        }
        results
    }

    /// Fetches, on a thread of its own and in one request beside the run's, the uncached
    /// chunks just before `run` in the blob that belong to files of the run's own directory
    /// (gaps up to [`MERGE_GAP`], within the adaptive span): a program opening one file of a
    /// directory opens its neighbours in its own order, not the blob's (a dynamic loader
    /// takes libraries in `DT_NEEDED` order; `etc/passwd` comes after `etc/group`).
    fn read_behind(self: &Arc<Self>, layer: &str, source: &Arc<dyn BlobSource>, run: &[Want]) {
        let span = self.readahead.span();
        if span == 0 || self.disk_usage().saturating_add(span * 4) > self.budget {
            return;
        }
        let Some(map) = self.maps.read().unwrap().get(layer).cloned() else {
            return;
        };
        let Some(pos) = map.position(run[0].blob_offset) else {
            return;
        };
        let dir = map.chunks[pos].dir.clone();
        let lower = run[0].blob_offset.saturating_sub(span);
        let mut next_start = run[0].blob_offset;
        let mut i = pos;
        while i > 0 {
            let c = &map.chunks[i - 1];
            let gap = next_start.checked_sub(c.blob_offset + c.blob_len);
            if gap.is_none_or(|g| g > MERGE_GAP)
                || c.blob_offset < lower
                || c.dir != dir
                || self.is_cached(&c.digest)
            {
                break;
            }
            match self.flights.claim(&c.digest) {
                Claim::Owner => {}
                Claim::Waiter(_) => break,
            }
            next_start = c.blob_offset;
            i -= 1;
        }
        if i == pos {
            return;
        }
        self.readahead.issued(map.chunks[i..pos].iter());
        let start = map.chunks[i].blob_offset;
        let end = map.chunks[pos - 1].blob_offset + map.chunks[pos - 1].blob_len;
        let owned = Owned::of(&self.flights, map.chunks[i..pos].iter().map(|c| &*c.digest));
        let core = self.clone();
        let source = source.clone();
        let layer = layer.to_string();
        let spawned = std::thread::Builder::new()
            .name("skiff-readbehind".into())
            .spawn(move || {
                let wanted: Vec<usize> = (i..pos).collect();
                match source.open_range(start, end - start) {
                    Ok(stream) => {
                        tracing::debug!(layer, offset = start, len = end - start, chunks = wanted.len(), "reading behind");
                        bump(&core.counters.fetch_requests, 1);
                        bump(&core.counters.fetched_bytes, end - start);
                        core.receive_chunks(
                            &layer,
                            &map,
                            &wanted,
                            owned,
                            start,
                            bytes::BytesMut::new(),
                            stream,
                        );
                    }
                    Err(e) => {
                        // Dropping `owned` abandons them: their waiters fetch for themselves.
                        tracing::debug!(layer, offset = start, error = %e, "read-behind request failed");
                    }
                }
            });
        if let Err(e) = spawned {
            // The guard was moved into the closure and dropped with it: abandoned.
            tracing::warn!(error = %e, "cannot start a read-behind thread");
        }
    }

    /// Claims the chunks after `run` worth reading ahead: blob-adjacent (gaps up to
    /// [`MERGE_GAP`]), in the run's directory subtree, not cached, not being fetched, within
    /// the adaptive span or the sequential window `seq` (compressed bytes), whichever is
    /// larger. `None` when there are none.
    fn plan_readahead(
        &self,
        layer: &str,
        run: &[Want],
        reach: Reach,
        seq: u64,
    ) -> Option<(Arc<LayerMap>, std::ops::Range<usize>)> {
        let span = self.readahead.span().max(seq);
        if span == 0 || self.disk_usage().saturating_add(span * 4) > self.budget {
            return None;
        }
        let map = self.maps.read().unwrap().get(layer).cloned()?;
        let last = run.last()?;
        let pos = map.position(last.blob_offset)?;
        let dir = map.chunks[pos].dir.clone();
        let mut prev_end = last.blob_offset + last.blob_len;
        let file_end = map.chunks[pos].file_end;
        // The rest of the file, then the span into its directory's next files.
        let limit = if reach == Reach::File {
            prev_end.max(file_end.min(prev_end + super::readahead::FILE_AHEAD_MAX))
        } else if file_end - map.chunks[pos].file_start <= super::readahead::FILE_AHEAD_MAX {
            // The whole file is small enough to be read whole. A miss near the end of a
            // larger one (a 98 MB `node`'s data) says nothing of the megabytes before it.
            prev_end.max(file_end) + span
        } else {
            prev_end + span
        };
        let first = pos + 1;
        let mut i = first;
        // Digests this read-ahead claimed: content-defined chunking (skopeo's zstd:chunked)
        // repeats chunks within a file (runs of zeros, repeated tables), and a repeat is no
        // reason to stop reading the file.
        let mut claimed: std::collections::HashSet<&str> = run.iter().map(|w| w.digest).collect();
        while let Some(c) = map.chunks.get(i) {
            let gap = c.blob_offset.checked_sub(prev_end);
            if gap.is_none_or(|g| g > MERGE_GAP)
                || c.blob_offset + c.blob_len > limit
                || !c.dir.starts_with(&dir)
            {
                break;
            }
            let have = claimed.contains(&*c.digest) || self.is_cached(&c.digest);
            if have {
                // Within the missed file a chunk already here (or coming with this very
                // read-ahead) rides along: stopping would leave the rest of the file to
                // one round trip per fault. Beyond the file, what is here ends it.
                if c.blob_offset >= file_end {
                    break;
                }
            } else {
                match self.flights.claim(&c.digest) {
                    Claim::Owner => {
                        claimed.insert(&c.digest);
                    }
                    Claim::Waiter(_) => break,
                }
            }
            prev_end = c.blob_offset + c.blob_len;
            i += 1;
        }
        if i == first {
            return None;
        }
        // The adaptive span answers for what goes beyond the file only: the rest of a file
        // is used later than the span is next adjusted (a loader faults it in over time).
        self.readahead.issued(
            map.chunks[first..i]
                .iter()
                .filter(|c| c.blob_offset >= file_end),
        );
        Some((map, first..i))
    }

    /// Verified read-ahead bytes held in memory before they are written to disk together.
    const STORE_BATCH: usize = 4 << 20;

    /// Receives the chunks `wanted` (positions in `map`, ascending, their flights in
    /// `owned`) from `stream`, whose next byte is at blob offset `base` (`buf` holding what
    /// already came); verifies and stores each as it arrives and finishes its flight. A
    /// failure abandons the rest: their waiters fetch for themselves. Returns how many were
    /// stored.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn receive_chunks(
        &self,
        layer: &str,
        map: &LayerMap,
        wanted: &[usize],
        owned: Owned,
        base: u64,
        buf: bytes::BytesMut,
        stream: Box<dyn crate::chunked::RangeStream>,
    ) -> usize {
        self.receive_chunks_as(layer, map, wanted, owned, base, buf, stream, false)
    }

    /// [`receive_chunks`](Self::receive_chunks) on an on-demand permit when `urgent` (a
    /// read waits for the first chunk), else on a background one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn receive_chunks_as(
        &self,
        layer: &str,
        map: &LayerMap,
        wanted: &[usize],
        mut owned: Owned,
        mut base: u64,
        mut buf: bytes::BytesMut,
        mut stream: Box<dyn crate::chunked::RangeStream>,
        urgent: bool,
    ) -> usize {
        let t0 = std::time::Instant::now();
        let _permit = if urgent {
            self.permits.acquire()
        } else {
            self.permits.acquire_low()
        };
        let permit_ms = t0.elapsed().as_secs_f64() * 1e3;
        let first = wanted.first().map(|&i| map.chunks[i].blob_offset);
        // Each chunk goes to its waiters as soon as it is verified; the disk writes wait for
        // the end of the stream (one index transaction), so a read needing the last chunk
        // of a long read-ahead does not wait for every earlier chunk's file and row.
        let mut verified: Vec<(Want<'_>, Arc<[u8]>)> = Vec::with_capacity(wanted.len());
        let (mut verified_bytes, mut handed, mut stored) = (0usize, 0usize, 0usize);
        for c in wanted.iter().map(|&i| &map.chunks[i]) {
            let end = c.blob_offset + c.blob_len;
            let arrived = loop {
                if base + (buf.len() as u64) >= end {
                    break true;
                }
                match stream.next_piece() {
                    Ok(Some(p)) => buf.extend_from_slice(&p),
                    Ok(None) => break false,
                    Err(e) => {
                        tracing::debug!(layer, offset = base, error = %e, "read-ahead broke off");
                        break false;
                    }
                }
            };
            if !arrived {
                break;
            }
            let _ = buf.split_to((c.blob_offset - base) as usize);
            let frame = buf.split_to(c.blob_len as usize);
            base = end;
            match self.decode_verify_want(layer, &frame, c.codec, c.inner_offset, c.len, &c.digest)
            {
                Ok(data) => {
                    self.unstored
                        .lock()
                        .unwrap()
                        .insert(c.digest.to_string(), data.clone());
                    owned.finish(&c.digest, Ok(data.clone()));
                    verified_bytes += data.len();
                    verified.push((c.want(), data));
                    if verified_bytes >= Self::STORE_BATCH {
                        stored += self.store_many(&verified);
                        handed += verified.len();
                        verified.clear();
                        verified_bytes = 0;
                    }
                }
                Err(reason) => {
                    bump(&self.counters.corrupt_chunks, 1);
                    tracing::warn!(layer, digest = &*c.digest, offset = c.blob_offset, %reason, "read-ahead chunk failed verification");
                }
            }
        }
        // Whatever did not arrive is abandoned: its readers fetch it themselves.
        drop(owned);
        handed += verified.len();
        stored += self.store_many(&verified);
        tracing::debug!(
            layer,
            offset = first,
            chunks = handed,
            stored,
            permit_ms,
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "received read-ahead chunks"
        );
        if self.disk_usage() > self.budget {
            if let Err(e) = self.evict_to(self.budget) {
                tracing::warn!(error = %e, "evicting after read-ahead failed");
            }
        }
        stored
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer_index::{ChunkLocation, ChunkRef, FileEntry, FileKind, LayerIndex};

    /// A file of 1 KiB chunks at blob offsets 1000, 2000, ... with these digests (a
    /// digest repeated where content-defined chunking repeats a chunk).
    fn file(path: &str, first_offset: u64, digests: &[&str]) -> FileEntry {
        FileEntry {
            path: path.into(),
            kind: FileKind::Regular,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 1024 * digests.len() as u64,
            mtime: 0,
            mtime_nsec: 0,
            link_target: Default::default(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Default::default(),
            chunks: digests
                .iter()
                .enumerate()
                .map(|(k, d)| ChunkRef {
                    file_offset: 1024 * k as u64,
                    len: 1024,
                    location: ChunkLocation::Compressed {
                        blob_offset: first_offset + 1000 * k as u64,
                        blob_len: 1000,
                        digest: format!("sha256:{}", d.repeat(64)),
                        codec: Default::default(),
                        inner_offset: 0,
                    },
                })
                .collect(),
        }
    }

    /// `data/big`: 10 000 distinct chunks of 1000 compressed bytes from blob offset 1000
    /// (10 MB, more than FILE_AHEAD_MAX).
    fn big_file() -> FileEntry {
        let mut big = file("data/big", 1000, &["a"]);
        big.chunks = (0..10_000u64)
            .map(|k| ChunkRef {
                file_offset: 1024 * k,
                len: 1024,
                location: ChunkLocation::Compressed {
                    blob_offset: 1000 + 1000 * k,
                    blob_len: 1000,
                    digest: format!("sha256:{k:064x}"),
                    codec: Default::default(),
                    inner_offset: 0,
                },
            })
            .collect();
        big.size = 1024 * 10_000;
        big
    }

    fn want(map: &LayerMap, pos: usize) -> Want<'_> {
        map.chunks[pos].want()
    }

    /// A cache with one layer (`sha256:l`) of these files, and its map.
    fn cache_of(entries: Vec<FileEntry>) -> (tempfile::TempDir, ChunkCache, Arc<LayerMap>) {
        let dir = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(ChunkCacheConfig::new(dir.path())).unwrap();
        cache.set_layer_map(&LayerIndex {
            digest: "sha256:l".into(),
            entries,
        });
        let map = cache.maps.read().unwrap().get("sha256:l").cloned().unwrap();
        (dir, cache, map)
    }

    #[test]
    fn repeated_chunks_do_not_cut_a_files_read_ahead_short() {
        // `bin/big` repeats its first chunk (a run of zeros) and its second; `bin/next`
        // follows in the same directory and starts with a chunk `bin/big` has.
        let (_dir, cache, map) = cache_of(vec![
            file("bin/big", 1000, &["0", "b", "c", "0", "b", "e"]),
            file("bin/next", 7000, &["0", "9"]),
        ]);
        // The miss on the first chunk claims it, as get_chunks does.
        assert!(matches!(
            cache.flights.claim(&map.chunks[0].digest),
            Claim::Owner
        ));
        let run = [want(&map, 0)];
        let (_, ahead) = cache
            .plan_readahead("sha256:l", &run, Reach::Directory, 0)
            .unwrap();
        // The rest of the file, repeats included (they ride along, owned once), and on
        // into the directory's next file until a chunk already coming stops it.
        assert_eq!(ahead, 1..6);
        // Each digest was claimed once: the repeats were not claimed a second time.
        for d in ["b", "c", "e"] {
            let d = format!("sha256:{}", d.repeat(64));
            assert!(matches!(cache.flights.claim(&d), Claim::Waiter(_)), "{d}");
        }
    }

    #[test]
    fn a_sequential_window_reads_further_into_a_large_file() {
        // 10 000 chunks of 1000 compressed bytes: more than FILE_AHEAD_MAX left, so a miss
        // at its start reads ahead by the span only.
        let big = big_file();
        let (_dir, cache, map) = cache_of(vec![big]);
        let (_, plain) = cache
            .plan_readahead("sha256:l", &[want(&map, 0)], Reach::Directory, 0)
            .unwrap();
        let span = super::super::readahead::INITIAL_SPAN;
        assert_eq!(plain.end as u64, 1 + span / 1000);
        // A sequential miss further on gets its window (here 2 MiB) instead.
        let from = plain.end;
        let (_, seq) = cache
            .plan_readahead("sha256:l", &[want(&map, from)], Reach::Directory, 2 << 20)
            .unwrap();
        assert_eq!(seq, from + 1..from + 1 + (2 << 20) / 1000);
    }

    #[test]
    fn a_miss_near_the_end_of_a_large_file_reads_the_span_not_the_rest() {
        // 10 000 chunks of 1000 compressed bytes (10 MB, more than FILE_AHEAD_MAX).
        let big = big_file();
        let (_dir, cache, map) = cache_of(vec![big, file("data/small", 20_000_000, &["s"])]);
        assert_eq!(map.chunks[9_000].file_start, 1000);
        // 7 MB from its end: the span (1 MiB), not the 7 MB to the end.
        let (_, ahead) = cache
            .plan_readahead("sha256:l", &[want(&map, 3_000)], Reach::Directory, 0)
            .unwrap();
        let span = super::super::readahead::INITIAL_SPAN;
        assert_eq!(ahead, 3_001..3_001 + (span / 1000) as usize);
    }

    #[test]
    fn a_chunk_already_cached_ends_the_read_ahead_only_past_the_file() {
        let (_dir, cache, map) = cache_of(vec![
            file("bin/big", 1000, &["a", "1", "c"]),
            file("bin/next", 4000, &["d", "2", "f"]),
        ]);
        let bytes: Arc<[u8]> = Arc::from(vec![0u8; 1024]);
        for d in ["1", "2"] {
            let d = format!("sha256:{}", d.repeat(64));
            cache.mem.lock().unwrap().put(d, bytes.clone());
        }
        assert!(matches!(
            cache.flights.claim(&format!("sha256:{}", "a".repeat(64))),
            Claim::Owner
        ));
        let (_, ahead) = cache
            .plan_readahead("sha256:l", &[want(&map, 0)], Reach::Directory, 0)
            .unwrap();
        // Inside bin/big the cached chunk 1 rides along; in bin/next the cached 2 ends it.
        assert_eq!(ahead, 1..4);
    }
}
