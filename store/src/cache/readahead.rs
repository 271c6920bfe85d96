//! Read-ahead on a miss. zstd:chunked lays files out in tar order, so the blob bytes after
//! a missing chunk are the rest of its file and then its directory's other files: the ones
//! a starting program is likely to open next. A miss therefore also fetches the chunks that
//! follow it in the blob, within the same directory subtree, up to a span of compressed
//! bytes that adapts to how much of what was read ahead was then used (doubling while at
//! least half is used, halving below a quarter, between [`MIN_SPAN`] and the configured
//! maximum). Whatever the span, a miss reads ahead to the end of its own file when that is
//! at most [`FILE_AHEAD_MAX`] compressed bytes away: a program that reads the start of a
//! file reads most of it (an executable or a library is mapped and faulted in at scattered
//! offsets, one round trip each if fetched chunk by chunk; a module is read whole).
//!
//! A miss that starts where an earlier fetch of the same layer ended is a sequential
//! stream (a reader scanning a large file: an archive's index, a class image, a database):
//! its read-ahead is at least a window that starts at [`SEQ_START`] and doubles with each
//! further sequential miss, up to the configured maximum, as the kernel's own read-ahead
//! does. Without it, once the adaptive span has shrunk below a chunk (after a program's
//! scattered reads), every chunk of such a scan would cost its own round trip.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::layer_index::{ChunkLocation, LayerIndex};

/// Smallest read-ahead span (compressed bytes).
pub const MIN_SPAN: u64 = 64 << 10;
/// Span a cache starts with.
pub const INITIAL_SPAN: u64 = 1 << 20;
/// A miss reads ahead to the end of its file when that is at most this many compressed
/// bytes further (beyond the adaptive span; bounded by the configured maximum being
/// non-zero).
pub const FILE_AHEAD_MAX: u64 = 8 << 20;

/// First read-ahead window of a sequential stream (compressed bytes).
pub const SEQ_START: u64 = 512 << 10;
/// Sequential streams followed at once; the least recently extended is forgotten.
const MAX_STREAMS: usize = 16;

/// One compressed chunk of a layer blob, with the directory of the file it belongs to.
pub struct MapChunk {
    pub blob_offset: u64,
    pub blob_len: u64,
    /// Decompressed length.
    pub len: u64,
    pub digest: Arc<str>,
    pub codec: crate::layer_index::Codec,
    /// Decoded bytes before the chunk (eStargz `innerOffset`).
    pub inner_offset: u64,
    /// Parent directory of the file, with a trailing `/` (`""` at the root).
    pub dir: Arc<[u8]>,
    /// Blob offset of the file's first chunk.
    pub file_start: u64,
    /// Blob offset just past the file's last chunk.
    pub file_end: u64,
}

impl MapChunk {
    /// This chunk as a fetch wants it.
    pub(super) fn want(&self) -> super::Want<'_> {
        super::Want {
            blob_offset: self.blob_offset,
            blob_len: self.blob_len,
            len: self.len,
            digest: &self.digest,
            codec: self.codec,
            inner_offset: self.inner_offset,
        }
    }
}

/// Every compressed chunk of a layer, in blob order (one entry per blob offset).
pub struct LayerMap {
    pub chunks: Vec<MapChunk>,
}

impl LayerMap {
    pub fn from_index(index: &LayerIndex) -> LayerMap {
        let mut dirs: HashMap<&[u8], Arc<[u8]>> = HashMap::new();
        let mut chunks = Vec::new();
        for e in &index.entries {
            let path = e.path.as_bytes();
            let dir: &[u8] = match path.iter().rposition(|&b| b == b'/') {
                Some(i) => &path[..=i],
                None => b"",
            };
            let dir = dirs.entry(dir).or_insert_with(|| Arc::from(dir)).clone();
            let spans = e.chunks.iter().filter_map(|c| match &c.location {
                ChunkLocation::Compressed {
                    blob_offset,
                    blob_len,
                    ..
                } => Some((*blob_offset, blob_offset + blob_len)),
                _ => None,
            });
            let (file_start, file_end) = spans
                .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
                .unwrap_or((0, 0));
            for c in &e.chunks {
                if let ChunkLocation::Compressed {
                    blob_offset,
                    blob_len,
                    digest,
                    codec,
                    inner_offset,
                } = &c.location
                {
                    chunks.push(MapChunk {
                        blob_offset: *blob_offset,
                        blob_len: *blob_len,
                        len: c.len,
                        digest: Arc::from(digest.as_str()),
                        codec: *codec,
                        inner_offset: *inner_offset,
                        dir: dir.clone(),
                        file_start,
                        file_end,
                    });
                }
            }
        }
        chunks.sort_by_key(|c| c.blob_offset);
        chunks.dedup_by_key(|c| c.blob_offset);
        LayerMap { chunks }
    }

    /// The chunk starting at `blob_offset`, by position.
    pub fn position(&self, blob_offset: u64) -> Option<usize> {
        self.chunks
            .binary_search_by_key(&blob_offset, |c| c.blob_offset)
            .ok()
    }
}

struct State {
    span: u64,
    /// Read-ahead bytes fetched and then used since the span was last adjusted.
    fetched: u64,
    used: u64,
    /// Read-ahead chunks not used yet: digest → compressed length.
    pending: HashMap<Arc<str>, u64>,
}

/// Where a layer's fetch ended, and the read-ahead window a miss there gets.
struct Stream {
    layer: Arc<str>,
    /// Blob offset just past the fetch's last byte.
    next: u64,
    window: u64,
}

/// The adaptive span, shared by all layers of a cache, and the sequential streams.
pub struct Adaptive {
    max: u64,
    state: Mutex<State>,
    /// Most recently extended last.
    streams: Mutex<Vec<Stream>>,
}

/// Pending chunks remembered at most; older evidence is dropped past it.
const MAX_PENDING: usize = 4096;

impl Adaptive {
    /// `max` = 0 turns read-ahead off.
    pub fn new(max: u64) -> Adaptive {
        Adaptive {
            max,
            state: Mutex::new(State {
                span: INITIAL_SPAN.min(max),
                fetched: 0,
                used: 0,
                pending: HashMap::new(),
            }),
            streams: Mutex::new(Vec::new()),
        }
    }

    /// The sequential window for a miss at `blob_offset` of `layer`: non-zero when it
    /// starts within `gap` bytes after where an earlier fetch of the layer ended (doubled
    /// from the stream's last window, [`SEQ_START`] at first, capped at the maximum). The
    /// stream is taken off until [`fetched_to`](Self::fetched_to) records the new end.
    pub fn sequential(&self, layer: &str, blob_offset: u64, gap: u64) -> u64 {
        if self.max == 0 {
            return 0;
        }
        let mut streams = self.streams.lock().unwrap();
        let found = streams.iter().position(|s| {
            &*s.layer == layer && blob_offset >= s.next && blob_offset - s.next <= gap
        });
        match found {
            // Taken off: the fetch puts it back with its new end (`fetched_to`).
            Some(i) => (streams.remove(i).window * 2).clamp(SEQ_START.min(self.max), self.max),
            None => 0,
        }
    }

    /// A fetch of `layer` ends at blob offset `end`, with read-ahead window `window` (0
    /// for a miss that was not sequential): a miss there continues the stream.
    pub fn fetched_to(&self, layer: &str, end: u64, window: u64) {
        if self.max == 0 {
            return;
        }
        let mut streams = self.streams.lock().unwrap();
        if streams.len() >= MAX_STREAMS {
            streams.remove(0);
        }
        streams.push(Stream {
            layer: Arc::from(layer),
            next: end,
            window,
        });
    }

    /// The span for the next read-ahead, adjusted by the use of the previous ones.
    pub fn span(&self) -> u64 {
        if self.max == 0 {
            return 0;
        }
        let mut s = self.state.lock().unwrap();
        if s.fetched >= s.span {
            let used = s.used.min(s.fetched);
            if used * 2 >= s.fetched {
                s.span = (s.span * 2).min(self.max);
            } else if used * 4 < s.fetched {
                s.span = (s.span / 2).max(MIN_SPAN.min(self.max));
            }
            s.fetched = 0;
            s.used = 0;
        }
        s.span
    }

    /// The span now, without adjusting it (for logs).
    pub fn current(&self) -> u64 {
        self.state.lock().unwrap().span
    }

    /// Records chunks fetched ahead.
    pub fn issued<'a>(&self, chunks: impl Iterator<Item = &'a MapChunk>) {
        let mut s = self.state.lock().unwrap();
        if s.pending.len() > MAX_PENDING {
            s.pending.clear();
        }
        for c in chunks {
            s.fetched += c.blob_len;
            s.pending.insert(c.digest.clone(), c.blob_len);
        }
    }

    /// A chunk was read: if it had been read ahead, that read-ahead paid off.
    pub fn used(&self, digest: &str) {
        let mut s = self.state.lock().unwrap();
        if s.pending.is_empty() {
            return;
        }
        if let Some(n) = s.pending.remove(digest) {
            s.used += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(off: u64, len: u64, d: &str) -> MapChunk {
        MapChunk {
            blob_offset: off,
            blob_len: len,
            len,
            digest: Arc::from(d),
            codec: Default::default(),
            inner_offset: 0,
            dir: Arc::from(&b""[..]),
            file_start: off,
            file_end: off + len,
        }
    }

    #[test]
    fn span_grows_when_used_and_shrinks_when_wasted() {
        let a = Adaptive::new(4 * INITIAL_SPAN);
        assert_eq!(a.span(), INITIAL_SPAN);
        // All of a span's worth used: doubled.
        let c = chunk(0, INITIAL_SPAN, "a");
        a.issued([&c].into_iter());
        a.used("a");
        assert_eq!(a.span(), 2 * INITIAL_SPAN);
        // Twice more: capped at the maximum.
        for d in ["b", "c"] {
            let c = chunk(0, 4 * INITIAL_SPAN, d);
            a.issued([&c].into_iter());
            a.used(d);
            a.span();
        }
        assert_eq!(a.span(), 4 * INITIAL_SPAN);
        // Nothing used: halved, down to the floor.
        for i in 0..10 {
            let d = format!("w{i}");
            let c = chunk(0, 4 * INITIAL_SPAN, &d);
            a.issued([&c].into_iter());
            a.span();
        }
        assert_eq!(a.span(), MIN_SPAN);
        assert_eq!(Adaptive::new(0).span(), 0);
    }

    #[test]
    fn sequential_misses_double_their_window() {
        let a = Adaptive::new(4 << 20);
        // A first miss is not sequential.
        assert_eq!(a.sequential("l", 0, 0), 0);
        a.fetched_to("l", 100, 0);
        // Elsewhere, or in another layer: still not.
        assert_eq!(a.sequential("l", 500, 0), 0);
        assert_eq!(a.sequential("m", 100, 0), 0);
        // Where the fetch ended (within the gap): SEQ_START, then doubled, then capped.
        assert_eq!(a.sequential("l", 110, 16), SEQ_START);
        a.fetched_to("l", 1000, SEQ_START);
        assert_eq!(a.sequential("l", 1000, 0), 2 * SEQ_START);
        a.fetched_to("l", 2000, 2 * SEQ_START);
        for end in [3000, 4000, 5000, 6000] {
            let w = a.sequential("l", end - 1000, 0);
            assert!(w >= 4 * SEQ_START, "{w}");
            a.fetched_to("l", end, w);
        }
        assert_eq!(a.sequential("l", 6000, 0), 4 << 20);
        // A miss that breaks the stream starts over.
        a.fetched_to("l", 7000, 4 << 20);
        assert_eq!(a.sequential("l", 9000, 0), 0);
        // Off: never.
        let off = Adaptive::new(0);
        off.fetched_to("l", 100, 0);
        assert_eq!(off.sequential("l", 100, 0), 0);
    }

    #[test]
    fn map_is_in_blob_order_with_directories() {
        use crate::layer_index::{ChunkRef, FileEntry, FileKind};
        let file = |path: &str, off: u64| FileEntry {
            path: path.into(),
            kind: FileKind::Regular,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 10,
            mtime: 0,
            mtime_nsec: 0,
            link_target: Default::default(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Default::default(),
            chunks: vec![ChunkRef {
                file_offset: 0,
                len: 10,
                location: ChunkLocation::Compressed {
                    blob_offset: off,
                    blob_len: 5,
                    digest: format!("sha256:{off}"),
                    codec: Default::default(),
                    inner_offset: 0,
                },
            }],
        };
        let index = LayerIndex {
            digest: "sha256:l".into(),
            entries: vec![
                file("usr/lib/b", 100),
                file("a", 50),
                file("usr/lib/c", 100),
            ],
        };
        let m = LayerMap::from_index(&index);
        assert_eq!(m.chunks.len(), 2);
        assert_eq!(&*m.chunks[0].dir, b"");
        assert_eq!(&*m.chunks[1].dir, b"usr/lib/");
        assert_eq!(m.position(100), Some(1));
        assert_eq!(m.position(7), None);
    }
}
