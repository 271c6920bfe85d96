//! Long read-aheads in segments, demanded chunks first. A miss that reads ahead far (the
//! rest of a large executable or library) would otherwise stream it in blob order in one
//! request, and a read faulting further on (a loader relocating the data segment at the
//! file's end) would wait for everything before it. So beyond its first segment (which
//! comes in the miss's own request), such a read-ahead is queued and fetched one request
//! per segment of at most [`SEGMENT`] compressed bytes by [`WORKERS`] workers: the first
//! goes backward from the end of the file that missed (a program that read a large file's
//! start reads its end next: an ELF loader relocates the data segment and `.dynamic` at
//! the end, a zip reader starts from its central directory), others forward from the
//! front. A read that needs a queued chunk takes the segment starting at that chunk off the
//! queue and fetches it at once. Every chunk is still fetched once, and the bytes in
//! flight stay bounded, so a miss elsewhere does not queue behind megabytes of read-ahead
//! at the link's bottleneck.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use super::flight::Owned;
use super::readahead::LayerMap;
use super::*;

/// Read-aheads of more compressed bytes than this are split into segments.
pub const SPLIT_OVER: u64 = 1 << 20;
/// Compressed bytes per segment request (at least one chunk).
pub const SEGMENT: u64 = 512 << 10;
/// Segment requests of one read-ahead in flight at once (beside its first request and
/// segments taken by reads): enough to keep a 20 ms, 200 Mbit/s link busy across each
/// request's round trip (a worker idles for a round trip between segments; with two, a
/// JDK's 8 MB libjvm.so came at 15 of the link's 25 MB/s), few enough that other misses
/// do not queue behind megabytes.
pub const WORKERS: usize = 3;

/// The queued part of one read-ahead: chunks claimed (single-flight) but not requested.
pub(super) struct AheadJob {
    layer: String,
    map: Arc<LayerMap>,
    source: Arc<dyn BlobSource>,
    /// Positions in `map` not requested yet, ascending.
    left: Mutex<VecDeque<usize>>,
    workers: AtomicUsize,
    /// The last position of the file that missed: the backward worker starts there.
    file_last: usize,
}

/// Where the next segment of a job starts.
#[derive(Clone, Copy)]
enum Start {
    /// The first queued chunk, forward.
    Front,
    /// This chunk, forward (a read needs it).
    At(usize),
    /// Backward from the last queued chunk at or before this position (forward from the
    /// front once there is none).
    Backward(usize),
}

/// Queued chunks by digest, so a read can find the read-ahead holding its chunk.
#[derive(Default)]
pub(super) struct AheadQueue {
    by_digest: Mutex<HashMap<Arc<str>, Arc<AheadJob>>>,
}

impl CacheCore {
    /// Queues `positions` of `map` (ascending, their flights in `owned`, which the queue
    /// takes over) and starts the workers fetching them.
    pub(super) fn queue_ahead(
        self: &Arc<Self>,
        layer: &str,
        map: Arc<LayerMap>,
        source: Arc<dyn BlobSource>,
        positions: Vec<usize>,
        owned: Owned,
    ) {
        let Some(&first) = positions.first() else {
            return;
        };
        let file_end = map.chunks[first].file_end;
        let file_last = positions
            .iter()
            .copied()
            .take_while(|&p| map.chunks[p].blob_offset < file_end)
            .last()
            .unwrap_or(first);
        let job = Arc::new(AheadJob {
            layer: layer.to_string(),
            map,
            source,
            left: Mutex::new(positions.iter().copied().collect()),
            workers: AtomicUsize::new(0),
            file_last,
        });
        {
            let mut q = self.ahead.by_digest.lock().unwrap();
            for &p in &positions {
                q.insert(job.map.chunks[p].digest.clone(), job.clone());
            }
        }
        // From here the queue answers for them: each segment taken off it is guarded by
        // its taker, and the last worker to stop abandons what is left.
        owned.hand_over();
        for w in 0..WORKERS {
            let from = if w == 0 {
                Start::Backward(job.file_last)
            } else {
                Start::Front
            };
            job.workers.fetch_add(1, Ordering::SeqCst);
            let core = self.clone();
            let j = job.clone();
            let spawned = std::thread::Builder::new()
                .name("skiff-ahead".into())
                .spawn(move || {
                    let _last = WorkerGuard {
                        core: &core,
                        job: &j,
                    };
                    loop {
                        let (seg, owned) = core.take_segment(&j, from);
                        if seg.is_empty() {
                            break;
                        }
                        core.fetch_segment(&j, &seg, owned, false);
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a read-ahead worker");
                if job.workers.fetch_sub(1, Ordering::SeqCst) == 1 {
                    self.abandon_queued(&job);
                }
            }
        }
    }

    /// When `digest` waits in a queued read-ahead of `layer`, takes the segment starting
    /// at it off the queue and fetches it now, on a thread of its own (the caller waits
    /// for the chunk's flight). `false` when it is not queued (already being fetched).
    pub(super) fn take_queued(
        self: &Arc<Self>,
        layer: &str,
        digest: &str,
        blob_offset: u64,
    ) -> bool {
        let Some(job) = self.ahead.by_digest.lock().unwrap().get(digest).cloned() else {
            return false;
        };
        if job.layer != layer {
            return false;
        }
        let Some(pos) = job.map.position(blob_offset) else {
            return false;
        };
        let (mut seg, mut owned) = self.take_segment(&job, Start::At(pos));
        if seg.is_empty() {
            // The same chunk elsewhere in the blob (a repeated chunk) may still be queued.
            let copy = {
                let left = job.left.lock().unwrap();
                left.iter()
                    .copied()
                    .find(|&p| &*job.map.chunks[p].digest == digest)
            };
            if let Some(p) = copy {
                (seg, owned) = self.take_segment(&job, Start::At(p));
            }
        }
        if seg.is_empty() {
            return false;
        }
        tracing::debug!(
            layer,
            offset = blob_offset,
            chunks = seg.len(),
            "a read takes its chunk off the read-ahead queue"
        );
        let core = self.clone();
        let j = job.clone();
        let spawned = std::thread::Builder::new()
            .name("skiff-demand".into())
            .spawn(move || core.fetch_segment(&j, &seg, owned, true));
        if let Err(e) = spawned {
            // The guard was moved into the closure and dropped with it: abandoned, so the
            // waiting read fetches for itself.
            tracing::warn!(error = %e, "cannot start a fetch thread");
        }
        true
    }

    /// Takes the next segment of `job` off the queue, starting where `from` says:
    /// blob-contiguous queued chunks up to [`SEGMENT`] bytes (at least one), ascending,
    /// with the guard of their flights. Empty when nothing is queued there.
    fn take_segment(&self, job: &AheadJob, from: Start) -> (Vec<usize>, Owned) {
        let seg = self.take_positions(job, from);
        let owned = Owned::of(
            &self.flights,
            seg.iter().map(|&p| &*job.map.chunks[p].digest),
        );
        (seg, owned)
    }

    fn take_positions(&self, job: &AheadJob, from: Start) -> Vec<usize> {
        let mut q = self.ahead.by_digest.lock().unwrap();
        let mut left = job.left.lock().unwrap();
        let chunks = &job.map.chunks;
        // Whether queued positions i and i + 1 follow each other in the blob.
        let joined = |left: &VecDeque<usize>, i: usize| {
            let (a, b) = (left[i], left[i + 1]);
            b == a + 1
                && chunks[b]
                    .blob_offset
                    .saturating_sub(chunks[a].blob_offset + chunks[a].blob_len)
                    <= MERGE_GAP
        };
        let size = |left: &VecDeque<usize>, lo: usize, hi: usize| {
            chunks[left[hi]].blob_offset + chunks[left[hi]].blob_len - chunks[left[lo]].blob_offset
        };
        let (lo, hi) = match from {
            Start::Backward(last) if left.front().is_some_and(|&p| p <= last) => {
                let hi = left.partition_point(|&p| p <= last) - 1;
                let mut lo = hi;
                while lo > 0 && joined(&left, lo - 1) && size(&left, lo - 1, hi) <= SEGMENT {
                    lo -= 1;
                }
                (lo, hi)
            }
            _ => {
                let lo = match from {
                    Start::At(p) => match left.binary_search(&p) {
                        Ok(i) => i,
                        Err(_) => return Vec::new(),
                    },
                    _ if left.is_empty() => return Vec::new(),
                    _ => 0,
                };
                let mut hi = lo;
                while hi + 1 < left.len() && joined(&left, hi) && size(&left, lo, hi + 1) <= SEGMENT
                {
                    hi += 1;
                }
                (lo, hi)
            }
        };
        let seg: Vec<usize> = left.drain(lo..=hi).collect();
        for &p in &seg {
            // A repeated chunk still queued elsewhere keeps the job findable.
            if !left.iter().any(|&o| chunks[o].digest == chunks[p].digest) {
                q.remove(&chunks[p].digest);
            }
        }
        seg
    }

    /// Fetches one segment of `job` in one request, each chunk handed over as it arrives;
    /// a failure abandons the segment's chunks (their readers fetch for themselves).
    fn fetch_segment(&self, job: &AheadJob, seg: &[usize], owned: Owned, urgent: bool) {
        let map = &job.map;
        let start = map.chunks[seg[0]].blob_offset;
        let last = &map.chunks[*seg.last().unwrap()];
        let end = last.blob_offset + last.blob_len;
        match job.source.open_range(start, end - start) {
            Ok(stream) => {
                tracing::debug!(
                    layer = job.layer,
                    offset = start,
                    len = end - start,
                    chunks = seg.len(),
                    urgent,
                    "reading ahead, queued segment"
                );
                bump(&self.counters.fetch_requests, 1);
                bump(&self.counters.fetched_bytes, end - start);
                self.receive_chunks_as(
                    &job.layer,
                    map,
                    seg,
                    owned,
                    start,
                    bytes::BytesMut::new(),
                    stream,
                    urgent,
                );
            }
            Err(e) => {
                // Dropping `owned` abandons them: their readers fetch for themselves.
                tracing::debug!(layer = job.layer, offset = start, error = %e, "read-ahead segment request failed");
            }
        }
    }

    /// Gives up every chunk still queued in `job`: their readers fetch for themselves.
    fn abandon_queued(&self, job: &AheadJob) {
        // Each segment's guard abandons its flights as it is dropped.
        while !self.take_segment(job, Start::Front).0.is_empty() {}
    }
}

/// The last worker of a job to stop (normally with nothing left, or unwinding) gives up
/// whatever is still queued, so no reader waits forever.
struct WorkerGuard<'a> {
    core: &'a Arc<CacheCore>,
    job: &'a Arc<AheadJob>,
}

impl Drop for WorkerGuard<'_> {
    fn drop(&mut self) {
        if self.job.workers.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.core.abandon_queued(self.job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::flight::{Claim, ABANDONED};
    use crate::cache::readahead::MapChunk;

    struct NoSource;
    impl BlobSource for NoSource {
        fn digest(&self) -> &str {
            "sha256:none"
        }
        fn size(&self) -> u64 {
            0
        }
        fn read_range(&self, offset: u64, len: u64) -> Result<bytes::Bytes> {
            Err(StoreError::BlobFetch {
                digest: "sha256:none".into(),
                offset,
                len,
                reason: "no source in this test".into(),
            })
        }
    }

    /// Ten blob-adjacent chunks of 200 KiB; the first eight are one file.
    fn job(left: Vec<usize>) -> AheadJob {
        let chunks = (0..10u64)
            .map(|i| MapChunk {
                blob_offset: i * (200 << 10),
                blob_len: 200 << 10,
                len: 200 << 10,
                digest: Arc::from(format!("sha256:{i}").as_str()),
                codec: Default::default(),
                inner_offset: 0,
                dir: Arc::from(&b""[..]),
                file_start: if i < 8 { 0 } else { 8 * (200 << 10) },
                file_end: if i < 8 {
                    8 * (200 << 10)
                } else {
                    10 * (200 << 10)
                },
            })
            .collect();
        AheadJob {
            layer: "sha256:l".into(),
            map: Arc::new(LayerMap { chunks }),
            source: Arc::new(NoSource),
            left: Mutex::new(left.into_iter().collect()),
            workers: AtomicUsize::new(0),
            file_last: 7,
        }
    }

    /// A source whose requests panic, as a runtime shut down under a request does.
    struct PanicSource;
    impl BlobSource for PanicSource {
        fn digest(&self) -> &str {
            "sha256:panics"
        }
        fn size(&self) -> u64 {
            10 * (200 << 10)
        }
        fn read_range(&self, _offset: u64, _len: u64) -> Result<bytes::Bytes> {
            panic!("the runtime is being shut down")
        }
    }

    #[test]
    fn a_worker_dying_mid_request_abandons_its_segment_and_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(ChunkCacheConfig::new(dir.path())).unwrap();
        let j = job(Vec::new());
        let positions: Vec<usize> = (1..10).collect();
        for &p in &positions {
            assert!(matches!(
                cache.flights.claim(&j.map.chunks[p].digest),
                Claim::Owner
            ));
        }
        let owned = Owned::of(
            &cache.flights,
            positions.iter().map(|&p| &*j.map.chunks[p].digest),
        );
        // Readers wait on one chunk the workers take first and one left in the queue.
        let waits: Vec<_> = [7usize, 4]
            .iter()
            .map(|&p| match cache.flights.claim(&j.map.chunks[p].digest) {
                Claim::Waiter(f) => f,
                Claim::Owner => panic!("chunk {p} must be in flight"),
            })
            .collect();
        cache.core.queue_ahead(
            "sha256:l",
            j.map.clone(),
            Arc::new(PanicSource),
            positions,
            owned,
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for f in waits {
                tx.send(f.wait()).unwrap();
            }
        });
        for _ in 0..2 {
            let outcome = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("a waiter was left blocked");
            assert_eq!(outcome.unwrap_err(), ABANDONED);
        }
    }

    #[test]
    fn segments_come_from_the_front_from_the_files_end_and_from_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(ChunkCacheConfig::new(dir.path())).unwrap();
        let j = job((1..10).collect());
        // Backward from the file's last chunk: two 200 KiB chunks fit in a segment.
        assert_eq!(cache.take_positions(&j, Start::Backward(7)), vec![6, 7]);
        // Forward from the front.
        assert_eq!(cache.take_positions(&j, Start::Front), vec![1, 2]);
        // A read needing chunk 4 takes the segment starting there; a chunk no longer
        // queued gives nothing.
        assert_eq!(cache.take_positions(&j, Start::At(4)), vec![4, 5]);
        assert!(cache.take_positions(&j, Start::At(6)).is_empty());
        // Segments never join chunks that are not neighbours in the queue.
        assert_eq!(cache.take_positions(&j, Start::Backward(7)), vec![3]);
        // Nothing of the file left: the backward worker goes on from the front.
        assert_eq!(cache.take_positions(&j, Start::Backward(7)), vec![8, 9]);
        assert!(cache.take_positions(&j, Start::Front).is_empty());
    }

    #[test]
    fn a_read_takes_the_queued_copy_of_a_repeated_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ChunkCache::open(ChunkCacheConfig::new(dir.path())).unwrap();
        let mut j = job((1..10).collect());
        // Chunk 9 repeats chunk 3 (same digest, as content-defined chunking gives).
        let map = Arc::get_mut(&mut j.map).unwrap();
        map.chunks[9].digest = map.chunks[3].digest.clone();
        let j = Arc::new(j);
        for p in 1..10 {
            let d = j.map.chunks[p].digest.clone();
            cache.ahead.by_digest.lock().unwrap().insert(d, j.clone());
        }
        // The backward segment takes the copy at 9 (and 8): the copy at 3 still queued
        // keeps the digest findable.
        assert_eq!(cache.take_positions(&j, Start::Backward(9)), vec![8, 9]);
        assert!(cache
            .ahead
            .by_digest
            .lock()
            .unwrap()
            .contains_key("sha256:3"));
        // A read at the copy at 9 (no longer queued) takes the segment at 3 instead.
        let offset_of_9 = j.map.chunks[9].blob_offset;
        assert!(cache.core.take_queued("sha256:l", "sha256:3", offset_of_9));
        assert_eq!(
            j.left.lock().unwrap().iter().copied().collect::<Vec<_>>(),
            vec![1, 2, 5, 6, 7]
        );
        assert!(!cache
            .ahead
            .by_digest
            .lock()
            .unwrap()
            .contains_key("sha256:3"));
    }
}
