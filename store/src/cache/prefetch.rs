//! Profile prefetch: the chunks a profile names, fetched at once in a few large requests
//! while the container starts, behind on-demand reads (background permits only, chunks
//! handed to waiting readers as they stream in) and never past the cache budget.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::flight::{Claim, Owned};
use super::readahead::LayerMap;
use super::{bump, CacheCore, ChunkCache};
use crate::chunked::BlobSource;
use crate::profile::PrefetchChunk;

/// Chunks at most this far apart in the blob are fetched in one request (the bytes between
/// come along and are dropped: cheaper than another round trip).
pub const PREFETCH_GAP: u64 = 64 << 10;
/// Largest single prefetch request, so the first chunks of a span reach readers early.
pub const PREFETCH_SPAN: u64 = 4 << 20;

/// What one profile prefetch of a layer did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrefetchOutcome {
    /// Range requests sent.
    pub requests: u64,
    /// Chunks fetched and stored.
    pub chunks: u64,
    /// Chunks skipped: cached already, or being fetched by a reader.
    pub skipped: u64,
    /// Whether it stopped early: the cache budget was near, or the registry failed.
    pub stopped: bool,
}

impl ChunkCache {
    /// Fetches `chunks` of `layer` (blob offsets from a profile plan): grouped into spans
    /// of nearby chunks ([`PREFETCH_GAP`], at most [`PREFETCH_SPAN`] bytes each), spans
    /// ordered by when the profile first read them, `workers` spans at a time. Chunks not
    /// in the layer are ignored. Stops at the first failure (prefetch gives way; readers
    /// retry on their own) or when the cache nears its budget. Blocking.
    pub fn prefetch_profile(
        &self,
        layer: &str,
        chunks: &[PrefetchChunk],
        workers: usize,
    ) -> PrefetchOutcome {
        let core = &self.core;
        let Some(map) = core.maps.read().unwrap().get(layer).cloned() else {
            return PrefetchOutcome::default();
        };
        let Ok(source) = core.source(layer) else {
            return PrefetchOutcome::default();
        };
        let mut items: Vec<(usize, usize)> = chunks
            .iter()
            .filter_map(|c| map.position(c.blob_offset).map(|p| (p, c.order)))
            .collect();
        items.sort_unstable();
        items.dedup_by_key(|(p, _)| *p);
        let mut spans: Vec<(usize, Vec<usize>)> = Vec::new();
        for (pos, order) in items {
            let c = &map.chunks[pos];
            if let Some((first, span)) = spans.last_mut() {
                let head = &map.chunks[span[0]];
                let tail = &map.chunks[*span.last().unwrap()];
                if c.blob_offset <= tail.blob_offset + tail.blob_len + PREFETCH_GAP
                    && c.blob_offset + c.blob_len - head.blob_offset <= PREFETCH_SPAN
                {
                    span.push(pos);
                    *first = (*first).min(order);
                    continue;
                }
            }
            spans.push((order, vec![pos]));
        }
        spans.sort_by_key(|(first, _)| *first);
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let totals = std::sync::Mutex::new(PrefetchOutcome::default());
        std::thread::scope(|s| {
            for _ in 0..workers.clamp(1, spans.len().max(1)) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= spans.len() || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = core.prefetch_span(layer, &map, &source, &spans[i].1);
                    let mut t = totals.lock().unwrap();
                    t.requests += r.requests;
                    t.chunks += r.chunks;
                    t.skipped += r.skipped;
                    if r.stopped {
                        t.stopped = true;
                        stop.store(true, Ordering::Relaxed);
                    }
                });
            }
        });
        let t = totals.into_inner().unwrap();
        bump(&core.counters.prefetched_chunks, t.chunks);
        t
    }
}

impl CacheCore {
    fn prefetch_span(
        &self,
        layer: &str,
        map: &Arc<LayerMap>,
        source: &Arc<dyn BlobSource>,
        span: &[usize],
    ) -> PrefetchOutcome {
        let mut out = PrefetchOutcome::default();
        let head = &map.chunks[span[0]];
        let tail = &map.chunks[*span.last().unwrap()];
        let bytes = tail.blob_offset + tail.blob_len - head.blob_offset;
        // Prefetch is the first thing given up when space runs short.
        if self.disk_usage().saturating_add(bytes.saturating_mul(4)) > self.budget {
            out.stopped = true;
            return out;
        }
        let mut claimed = Vec::with_capacity(span.len());
        for &p in span {
            let c = &map.chunks[p];
            if self.is_cached(&c.digest) {
                out.skipped += 1;
                continue;
            }
            match self.flights.claim(&c.digest) {
                Claim::Owner => claimed.push(p),
                Claim::Waiter(_) => out.skipped += 1,
            }
        }
        let (Some(&first), Some(&last)) = (claimed.first(), claimed.last()) else {
            return out;
        };
        let owned = Owned::of(
            &self.flights,
            claimed.iter().map(|&p| &*map.chunks[p].digest),
        );
        let start = map.chunks[first].blob_offset;
        let end = map.chunks[last].blob_offset + map.chunks[last].blob_len;
        let opened = {
            let _permit = self.permits.acquire_low();
            source.open_range(start, end - start)
        };
        let stream = match opened {
            Ok(s) => s,
            Err(e) => {
                // Dropping `owned` abandons them: their readers fetch for themselves.
                tracing::info!(layer, offset = start, error = %e, "prefetch stopped: the registry failed");
                out.stopped = true;
                return out;
            }
        };
        out.requests = 1;
        bump(&self.counters.fetch_requests, 1);
        bump(&self.counters.fetched_bytes, end - start);
        let stored = self.receive_chunks(
            layer,
            map,
            &claimed,
            owned,
            start,
            bytes::BytesMut::new(),
            stream,
        );
        out.chunks = stored as u64;
        if stored < claimed.len() {
            out.stopped = true;
        }
        out
    }
}

impl ChunkCache {
    /// Fetches every chunk of `layer` not cached yet, in blob order, in spans of up to
    /// [`PREFETCH_SPAN`] bytes on background permits, at most `rate` bytes per second, so
    /// the layer becomes local. Stops when `cancel` is set, when the cache nears its budget
    /// (never evicting for it), or at the first registry failure. Blocking.
    pub fn fetch_rest(&self, layer: &str, rate: u64, cancel: &AtomicBool) -> PrefetchOutcome {
        let core = &self.core;
        let mut out = PrefetchOutcome::default();
        let Some(map) = core.maps.read().unwrap().get(layer).cloned() else {
            return out;
        };
        let Ok(source) = core.source(layer) else {
            return out;
        };
        let started = std::time::Instant::now();
        let mut sent = 0u64;
        let mut i = 0;
        while i < map.chunks.len() {
            if cancel.load(Ordering::Relaxed) {
                break;
            }
            // The next run of uncached chunks, nearby in the blob, within one span.
            let mut span: Vec<usize> = Vec::new();
            while i < map.chunks.len() {
                let c = &map.chunks[i];
                let cached = core.is_cached(&c.digest);
                if let Some(&head) = span.first() {
                    let h = &map.chunks[head];
                    let t = &map.chunks[*span.last().unwrap()];
                    if cached
                        || c.blob_offset > t.blob_offset + t.blob_len + PREFETCH_GAP
                        || c.blob_offset + c.blob_len - h.blob_offset > PREFETCH_SPAN
                    {
                        break;
                    }
                }
                i += 1;
                if !cached {
                    span.push(i - 1);
                }
            }
            if span.is_empty() {
                continue;
            }
            let r = core.prefetch_span(layer, &map, &source, &span);
            out.requests += r.requests;
            out.chunks += r.chunks;
            out.skipped += r.skipped;
            if r.stopped {
                out.stopped = true;
                break;
            }
            if r.requests > 0 {
                let h = &map.chunks[span[0]];
                let t = &map.chunks[*span.last().unwrap()];
                sent += t.blob_offset + t.blob_len - h.blob_offset;
            }
            if rate > 0 {
                let due = std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        bump(&core.counters.background_chunks, out.chunks);
        out
    }
}
