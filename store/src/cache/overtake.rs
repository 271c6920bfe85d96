//! Reads that overtake a read-ahead stream. A read whose chunk a stream in flight will
//! bring waits for it, unless the stream is so far from the chunk that a request of its own
//! comes sooner (one round trip and the chunk). On a 200 Mbit/s link shared by a dozen
//! streams each gets a sliver, and a program's loader waited 50-70 ms for chunks near the
//! end of a stream's segment. The stream still brings the chunk; storing it again is a
//! no-op, so overtaking costs the chunk's bytes once more and nothing else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{BlobSource, CacheCore, Want};

/// With nothing received yet (its rate unknown), a stream is overtaken only for a chunk
/// at least this far into it.
const FAR: u64 = 256 << 10;
/// Slack over two round trips before a request of one's own is worth it.
const MARGIN_MS: f64 = 5.0;
/// Latencies kept for the estimate (the smallest of them is taken).
const LATENCY_SAMPLES: usize = 16;
/// The latency assumed before any request was timed.
const DEFAULT_LATENCY_MS: f64 = 50.0;
/// Overtaking reads fetch at most this share of all bytes fetched (1/8): where each
/// connection is throttled on its own, every overtaking request looks quicker than the
/// stream, and a reader of one large file fetched half of it twice.
const OVERTAKE_SHARE: u64 = 8;

/// How far one read-ahead stream has got: bytes of the blob received up to `received_to`.
pub(super) struct StreamProgress {
    /// Where the stream stood when it was first tracked.
    from: u64,
    received_to: AtomicU64,
    since: Instant,
}

impl StreamProgress {
    /// A stream that has received the blob up to `received_to`.
    pub(super) fn new(received_to: u64) -> Arc<StreamProgress> {
        Arc::new(StreamProgress {
            from: received_to,
            received_to: AtomicU64::new(received_to),
            since: Instant::now(),
        })
    }

    pub(super) fn advance(&self, received_to: u64) {
        self.received_to.store(received_to, Ordering::Relaxed);
    }
}

/// Whether a read should fetch its chunk itself rather than wait for a stream that still
/// has `remaining` bytes to go before the chunk's end, having received `received` in
/// `elapsed`, when a request takes about `latency_ms`.
pub(super) fn worth_overtaking(
    remaining: u64,
    received: u64,
    elapsed: Duration,
    latency_ms: f64,
) -> bool {
    if received == 0 {
        return remaining >= FAR;
    }
    let rate = received as f64 / elapsed.as_secs_f64().max(1e-4);
    let eta_ms = remaining as f64 / rate * 1e3;
    eta_ms > 2.0 * latency_ms + MARGIN_MS
}

impl CacheCore {
    /// Tracks `progress` as the stream bringing `chunks` (digest, end offset in the blob).
    pub(super) fn track_stream<'c>(
        &self,
        progress: &Arc<StreamProgress>,
        chunks: impl Iterator<Item = (&'c str, u64)>,
    ) {
        let mut s = self.streams.lock().unwrap();
        for (digest, end) in chunks {
            s.insert(digest.to_string(), (progress.clone(), end));
        }
    }

    /// Stops tracking `progress` as the stream of `digest` (delivered, or the stream ended).
    pub(super) fn untrack(&self, digest: &str, progress: &Arc<StreamProgress>) {
        let mut s = self.streams.lock().unwrap();
        if s.get(digest).is_some_and(|(p, _)| Arc::ptr_eq(p, progress)) {
            s.remove(digest);
        }
    }

    /// Records how long an on-demand request took until its bytes were in.
    pub(super) fn note_latency(&self, elapsed: Duration) {
        let mut l = self.latency.lock().unwrap();
        if l.len() == LATENCY_SAMPLES {
            l.pop_front();
        }
        l.push_back(elapsed.as_secs_f64() * 1e3);
    }

    fn latency_ms(&self) -> f64 {
        let l = self.latency.lock().unwrap();
        l.iter()
            .copied()
            .reduce(f64::min)
            .unwrap_or(DEFAULT_LATENCY_MS)
    }

    /// Fetches `w` with a request of its own when the stream bringing it is far from it;
    /// `None` to wait for the stream (also when that request fails: the stream may still
    /// bring it).
    pub(super) fn overtake(
        &self,
        layer: &str,
        source: &dyn BlobSource,
        w: &Want,
    ) -> Option<Arc<[u8]>> {
        let (progress, end) = self.streams.lock().unwrap().get(w.digest).cloned()?;
        let fetched = self.counters.fetched_bytes.load(Ordering::Relaxed);
        let overtaken = self.counters.overtaken_bytes.load(Ordering::Relaxed);
        if (overtaken + w.blob_len) * OVERTAKE_SHARE > fetched {
            return None;
        }
        let got = progress.received_to.load(Ordering::Relaxed);
        if got >= end
            || !worth_overtaking(
                end - got,
                got - progress.from,
                progress.since.elapsed(),
                self.latency_ms(),
            )
        {
            return None;
        }
        tracing::debug!(
            layer,
            offset = w.blob_offset,
            behind = end - got,
            "a read overtakes the read-ahead bringing its chunk"
        );
        super::bump(&self.counters.overtaken_bytes, w.blob_len);
        match self
            .fetch_run(layer, source, std::slice::from_ref(w))
            .pop()?
        {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::debug!(layer, offset = w.blob_offset, error = %e, "overtaking failed; waiting for the read-ahead");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{ChunkCache, ChunkCacheConfig};
    use crate::chunked::{self, FileBlobSource, RangeStream, WriterOptions};
    use crate::layer_index::ContentReader;
    use bytes::Bytes;

    /// A blob whose ranged streams trickle (64 KiB every 40 ms) while whole-range reads are
    /// immediate: a read-ahead stream on a slow shared link, next to a fresh request.
    struct Trickle(FileBlobSource);

    struct TrickleStream(Bytes);

    impl RangeStream for TrickleStream {
        fn next_piece(&mut self) -> crate::Result<Option<Bytes>> {
            if self.0.is_empty() {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(40));
            let n = self.0.len().min(64 << 10);
            Ok(Some(self.0.split_to(n)))
        }
    }

    impl BlobSource for Trickle {
        fn digest(&self) -> &str {
            self.0.digest()
        }
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read_range(&self, offset: u64, len: u64) -> crate::Result<Bytes> {
            self.0.read_range(offset, len)
        }
        fn open_range(&self, offset: u64, len: u64) -> crate::Result<Box<dyn RangeStream>> {
            Ok(Box::new(TrickleStream(self.0.read_range(offset, len)?)))
        }
    }

    #[test]
    fn a_read_takes_its_chunk_itself_rather_than_wait_for_a_slow_stream() {
        let dir = tempfile::tempdir().unwrap();
        // One file of sixteen 64 KiB chunks that do not compress: a read of the first makes
        // the other fifteen a read-ahead of about 960 KiB, which trickles for ~600 ms.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let data: Vec<u8> = (0..1u32 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "usr/lib/f", &data[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut blob = Vec::new();
        let opts = WriterOptions {
            chunk_size: 64 << 10,
            ..WriterOptions::default()
        };
        let layer = chunked::write_zstd_chunked(&tar, &mut blob, &opts).unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, &blob).unwrap();
        let file = FileBlobSource::open(&path, &layer.digest).unwrap();
        let (index, _) = chunked::open_lazy_layer(
            &file,
            &layer.digest,
            &layer.annotations,
            &Default::default(),
        )
        .unwrap();
        let f = index
            .entries
            .iter()
            .find(|e| e.path == "usr/lib/f")
            .unwrap();
        assert_eq!(f.chunks.len(), 16);
        let cache = ChunkCache::open(ChunkCacheConfig::new(dir.path().join("cache"))).unwrap();
        cache.set_layer_map(&index);
        cache.register_layer(&index.digest, Arc::new(Trickle(file)));

        let mut buf = [0u8; 100];
        cache
            .read_at(&index.digest, &f.chunks, 0, &mut buf)
            .unwrap();
        assert_eq!(&buf[..], &data[..100]);
        // The last chunk is coming in the read-ahead, far behind: fetched directly.
        let t0 = Instant::now();
        let at = 15 << 16;
        cache
            .read_at(&index.digest, &f.chunks, at, &mut buf)
            .unwrap();
        let took = t0.elapsed();
        assert_eq!(&buf[..], &data[at as usize..at as usize + 100]);
        assert!(
            took < Duration::from_millis(300),
            "waited {took:?} for the stream"
        );
        // The stream still ends and stores what it brings; every byte reads back right.
        let mut all = vec![0u8; data.len()];
        let mut off = 0;
        while off < all.len() {
            off += cache
                .read_at(&index.digest, &f.chunks, off as u64, &mut all[off..])
                .unwrap();
        }
        assert!(all == data);
        // The chunk fetched twice is within the share overtaking may take.
        let overtaken = cache.counters.overtaken_bytes.load(Ordering::Relaxed);
        let fetched = cache.counters.fetched_bytes.load(Ordering::Relaxed);
        assert!(
            overtaken > 0 && overtaken * OVERTAKE_SHARE <= fetched,
            "{overtaken} of {fetched}"
        );
    }

    #[test]
    fn a_read_overtakes_only_a_stream_that_is_slower_than_a_request() {
        let ms = Duration::from_millis;
        // 100 kB received in 40 ms (2.5 MB/s): 256 kB more take 100 ms, over two 20 ms
        // round trips; 40 kB more take 16 ms, under them.
        assert!(worth_overtaking(256_000, 100_000, ms(40), 20.0));
        assert!(!worth_overtaking(40_000, 100_000, ms(40), 20.0));
        // Loopback: a fast stream is never overtaken.
        assert!(!worth_overtaking(2 << 20, 1 << 20, ms(2), 0.3));
        // Nothing received yet: only a chunk far into the stream.
        assert!(worth_overtaking(FAR, 0, ms(30), 20.0));
        assert!(!worth_overtaking(FAR - 1, 0, ms(30), 20.0));
    }
}
