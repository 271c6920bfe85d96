//! The lazily filled chunk cache: decompressed, verified chunks of lazy layers (any format:
//! each chunk carries its [`Codec`]),
//! content-addressed on disk under a byte budget (LRU eviction, never a pinned chunk), with
//! a small in-memory LRU of hot chunks in front. Missing chunks are fetched with Range
//! requests (adjacent ones coalesced, concurrent readers sharing one fetch, parallel fetches
//! bounded), verified against their digest before use, and stored atomically.

mod ahead_queue;
mod db;
mod fetch;
mod files;
mod flight;
mod packs;
mod prefetch;
mod prune;
mod readahead;

pub use prefetch::{PrefetchOutcome, PREFETCH_GAP, PREFETCH_SPAN};

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::chunked::footer::is_sha256_digest;
use crate::chunked::{BlobSource, RetryPolicy};
use crate::layer_index::{ChunkLocation, ChunkRef, Codec, ContentReader, LayerIndex};
use crate::soci::lazy::ZranLayer;
use crate::{Result, StoreError};
use db::CacheDb;
use files::ChunkFiles;
use flight::{Flights, Semaphore};
use packs::{ChunkPacks, PackPlace};

/// Chunks separated by at most this many blob bytes are fetched in one request (the gap is
/// typically a compressed tar header; containers/storage merges below 1 KiB too).
pub const MERGE_GAP: u64 = 1024;

/// Whatever its budget, the cache leaves this share of its filesystem free (1/10, at most
/// [`RESERVE_MAX`]) for the rest of the data root: image pulls and imports, containers'
/// writable layers, the databases. A cache filling a small disk made every other write fail.
pub const RESERVE_SHARE: u64 = 10;
/// The most the cache leaves free for others.
pub const RESERVE_MAX: u64 = 2 << 30;

/// Settings of a [`ChunkCache`].
#[derive(Debug, Clone)]
pub struct ChunkCacheConfig {
    /// Directory holding `cache.db`, `packs/` and `tmp/` (and the `sha256/` chunk files of
    /// a cache written before packs, still read).
    pub root: PathBuf,
    /// Bytes of decompressed chunks kept on disk; least recently used ones go beyond it, and
    /// beyond what leaves [`RESERVE_SHARE`] of the filesystem free.
    pub budget_bytes: u64,
    /// Decompressed chunks kept in memory (each at most one chunk size, 256 KiB when written
    /// by skiff).
    pub memory_chunks: usize,
    /// Registry requests in flight at once, over all readers.
    pub max_parallel_fetches: usize,
    /// Most compressed bytes a miss reads ahead beyond its chunks (adaptive below it;
    /// 0 = no read-ahead). See [`readahead`].
    pub readahead_max_bytes: u64,
    pub retry: RetryPolicy,
}

impl ChunkCacheConfig {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ChunkCacheConfig {
            root: root.into(),
            budget_bytes: 10 << 30,
            memory_chunks: 64,
            max_parallel_fetches: 8,
            readahead_max_bytes: 2 << 20,
            retry: RetryPolicy::default(),
        }
    }
}

/// Counters since the cache was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Compressed bytes received from blob sources (the registry).
    pub fetched_bytes: u64,
    /// Successful range requests to blob sources.
    pub fetch_requests: u64,
    pub memory_hits: u64,
    pub disk_hits: u64,
    /// Chunks that had to be fetched.
    pub misses: u64,
    /// Chunks whose bytes failed verification (fetched or on disk).
    pub corrupt_chunks: u64,
    /// Range reads that failed after retries.
    pub fetch_errors: u64,
    pub evicted_chunks: u64,
    /// Chunks fetched by profile prefetch.
    pub prefetched_chunks: u64,
    /// Chunks fetched in the background to make lazy layers local.
    pub background_chunks: u64,
    /// Compressed bytes (`blob_len`) of the distinct chunks reads asked for: what the
    /// workload needed from the registry, the yardstick for bytes fetched.
    pub read_chunk_bytes: u64,
}

#[derive(Default)]
struct Counters {
    fetched_bytes: AtomicU64,
    fetch_requests: AtomicU64,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
    corrupt_chunks: AtomicU64,
    fetch_errors: AtomicU64,
    evicted_chunks: AtomicU64,
    prefetched_chunks: AtomicU64,
    background_chunks: AtomicU64,
    read_chunk_bytes: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

struct DiskState {
    db: CacheDb,
    usage: u64,
}

/// How far a miss reads beyond its chunks: a read of the filesystem reads ahead into the
/// directory's next files and behind over its earlier ones; the program prefetch asks for
/// one file only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Directory,
    File,
}

/// One chunk a read needs: where it is in the blob and what it must hash to.
#[derive(Clone)]
struct Want<'a> {
    blob_offset: u64,
    blob_len: u64,
    len: u64,
    digest: &'a str,
    codec: Codec,
    inner_offset: u64,
}

/// A shared handle on the cache (cheap to clone; every reader and background fetch holds
/// one). Its methods are [`CacheCore`]'s.
#[derive(Clone)]
pub struct ChunkCache {
    core: Arc<CacheCore>,
}

impl std::ops::Deref for ChunkCache {
    type Target = CacheCore;
    fn deref(&self) -> &CacheCore {
        &self.core
    }
}

/// The cache's state; reached through [`ChunkCache`].
pub struct CacheCore {
    budget: u64,
    retry: RetryPolicy,
    /// Chunk files of a cache written before packs (read, never written), and `tmp/`.
    files: ChunkFiles,
    packs: ChunkPacks,
    disk: Mutex<DiskState>,
    /// Read-only `cache.db` connection for lookups, beside the writer's in `disk`.
    reader: Mutex<CacheDb>,
    mem: Mutex<LruCache<String, Arc<[u8]>>>,
    /// Verified read-ahead chunks handed to their readers but not yet written to disk
    /// (written in batches): found here meanwhile, so no one fetches them again.
    unstored: Mutex<HashMap<String, Arc<[u8]>>>,
    /// Hits not yet written to the LRU order in SQLite (flushed before evicting), so a hit
    /// costs no database write; `Some(size)` for chunks whose file was seen on disk.
    touched: Mutex<HashMap<String, Option<u64>>>,
    /// Background fsync of packs just appended to, off the reader's path.
    syncer: Option<Syncer>,
    layers: RwLock<HashMap<String, Arc<dyn BlobSource>>>,
    /// The zran checkpoints and span digests of lazy SOCI layers ([`Codec::Zran`] chunks).
    zran: RwLock<HashMap<String, Arc<ZranLayer>>>,
    /// Each layer's chunks in blob order, for read-ahead.
    maps: RwLock<HashMap<String, Arc<readahead::LayerMap>>>,
    readahead: readahead::Adaptive,
    /// The queued parts of long read-aheads.
    ahead: ahead_queue::AheadQueue,
    flights: Arc<Flights>,
    pins: Mutex<HashMap<String, usize>>,
    permits: Semaphore,
    counters: Counters,
    /// Chunks reads have asked for (for [`CacheStats::read_chunk_bytes`]).
    read_seen: Mutex<std::collections::HashSet<String>>,
}

/// fsyncs packs in the background. A reader never waits for the disk: its chunk is verified
/// and in memory already, and bytes a crash leaves torn fail verification on their next
/// read and are fetched again. The thread drains its queue (each pack once per drain) and
/// stops when the cache is dropped.
struct Syncer {
    tx: Option<std::sync::mpsc::Sender<PathBuf>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start() -> Syncer {
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        let thread = std::thread::Builder::new()
            .name("skiff-chunk-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut paths = std::collections::BTreeSet::from([first]);
                    paths.extend(rx.try_iter());
                    for path in paths {
                        // Removed meanwhile: nothing to sync.
                        if let Ok(f) = std::fs::File::open(&path) {
                            if let Err(e) = f.sync_all() {
                                tracing::warn!(path = %path.display(), error = %e, "fsync of a chunk pack failed");
                            }
                        }
                    }
                }
            })
            .expect("spawning the chunk sync thread");
        Syncer {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn sync(&self, path: PathBuf) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(path);
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Unpins chunks when a read is done with them.
struct Pins<'a> {
    cache: &'a CacheCore,
    digests: Vec<String>,
}

impl Drop for Pins<'_> {
    fn drop(&mut self) {
        let mut p = self.cache.pins.lock().unwrap();
        for d in &self.digests {
            if let Some(n) = p.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    p.remove(d);
                }
            }
        }
    }
}

/// Decodes one chunk (never more than its `len` bytes) and checks its digest.
fn decode_verify(
    compressed: &[u8],
    codec: Codec,
    inner_offset: u64,
    len: u64,
    digest: &str,
) -> std::result::Result<Arc<[u8]>, String> {
    let out = codec.decode(compressed, inner_offset, len)?;
    verify(&out, digest)?;
    Ok(out.into())
}

impl CacheCore {
    /// Decodes and verifies one fetched chunk of `layer`: a zran piece against its span
    /// digest (before inflating; its key is synthetic), any other chunk against its digest.
    fn decode_verify_want(
        &self,
        layer: &str,
        frame: &[u8],
        codec: Codec,
        inner_offset: u64,
        len: u64,
        digest: &str,
    ) -> std::result::Result<Arc<[u8]>, String> {
        match codec {
            Codec::Zran { span } => {
                let zran = self
                    .zran_layer(layer)
                    .ok_or_else(|| format!("no zTOC registered for layer {layer}"))?;
                Ok(zran
                    .piece(span as usize, frame, inner_offset, len, digest)?
                    .into())
            }
            _ => decode_verify(frame, codec, inner_offset, len, digest),
        }
    }
}

/// A zran piece on disk: its bytes then their sha256 (its key is synthetic, so the file
/// carries what a disk read checks, as a content key does for other chunks).
fn seal(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 32);
    out.extend_from_slice(data);
    out.extend_from_slice(&Sha256::digest(data));
    out
}

/// The bytes of a sealed piece of `len` bytes, `None` when torn or altered.
fn unseal(mut file: Vec<u8>, len: u64) -> Option<Vec<u8>> {
    if file.len() as u64 != len.checked_add(32)? {
        return None;
    }
    let sum = file.split_off(len as usize);
    (Sha256::digest(&file).as_slice() == sum.as_slice()).then_some(file)
}

fn is_disk_full(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DiskFull)
}

fn verify(data: &[u8], digest: &str) -> std::result::Result<(), String> {
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(data)));
    if actual != digest {
        return Err(format!("digest is {actual}"));
    }
    Ok(())
}

impl ChunkCache {
    pub fn open(config: ChunkCacheConfig) -> Result<ChunkCache> {
        Ok(ChunkCache {
            core: Arc::new(CacheCore::open(config)?),
        })
    }
}

impl CacheCore {
    fn open(config: ChunkCacheConfig) -> Result<CacheCore> {
        std::fs::create_dir_all(&config.root).map_err(|e| StoreError::io(&config.root, e))?;
        let files = ChunkFiles::open(&config.root)?;
        let packs = ChunkPacks::open(&config.root)?;
        let db = CacheDb::open(&files.db_path())?;
        let reader = CacheDb::open_reader(&files.db_path())?;
        // Packs with no chunk on record: emptied by evictions, or written by a run that
        // stopped before recording them.
        for id in packs.ids()? {
            if !db.pack_in_use(id)? {
                packs.remove(id)?;
            }
        }
        let usage = db.total_size()?;
        let cache = CacheCore {
            budget: config.budget_bytes,
            retry: config.retry,
            files,
            packs,
            disk: Mutex::new(DiskState { db, usage }),
            reader: Mutex::new(reader),
            mem: Mutex::new(LruCache::new(
                NonZeroUsize::new(config.memory_chunks.max(1)).unwrap(),
            )),
            unstored: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
            syncer: Some(Syncer::start()),
            layers: RwLock::new(HashMap::new()),
            zran: RwLock::new(HashMap::new()),
            maps: RwLock::new(HashMap::new()),
            readahead: readahead::Adaptive::new(config.readahead_max_bytes),
            ahead: ahead_queue::AheadQueue::default(),
            flights: Arc::default(),
            pins: Mutex::new(HashMap::new()),
            permits: Semaphore::new(config.max_parallel_fetches),
            counters: Counters::default(),
            read_seen: Mutex::new(std::collections::HashSet::new()),
        };
        cache.evict_to(cache.budget)?;
        Ok(cache)
    }

    /// Makes `layer_digest`'s chunks readable, fetched from `source`.
    pub fn register_layer(&self, layer_digest: &str, source: Arc<dyn BlobSource>) {
        self.layers
            .write()
            .unwrap()
            .insert(layer_digest.to_string(), source);
    }

    /// The zTOC state of SOCI layer `layer`, if it is one.
    fn zran_layer(&self, layer: &str) -> Option<Arc<ZranLayer>> {
        self.zran.read().unwrap().get(layer).cloned()
    }

    /// Makes the [`Codec::Zran`] chunks of SOCI layer `layer_digest` decodable: its zTOC's
    /// checkpoints and span digests.
    pub fn register_zran(&self, layer_digest: &str, zran: Arc<ZranLayer>) {
        self.zran
            .write()
            .unwrap()
            .insert(layer_digest.to_string(), zran);
    }

    /// Gives read-ahead the layout of `index`'s layer (which chunks follow which in the
    /// blob); without it, misses of that layer fetch only what they need. SOCI layers get
    /// none: several files' pieces share one span's blob range, which read-ahead's
    /// one-chunk-after-another stream cannot hold (a miss fetches exactly its spans).
    pub fn set_layer_map(&self, index: &LayerIndex) {
        if self.maps.read().unwrap().contains_key(&index.digest) {
            return;
        }
        let zran = index.entries.iter().flat_map(|e| &e.chunks).any(|c| {
            matches!(
                c.location,
                ChunkLocation::Compressed {
                    codec: Codec::Zran { .. },
                    ..
                }
            )
        });
        if zran {
            return;
        }
        let map = Arc::new(readahead::LayerMap::from_index(index));
        self.maps.write().unwrap().insert(index.digest.clone(), map);
    }

    /// Whether `layer_digest` has a blob source.
    pub fn is_registered(&self, layer_digest: &str) -> bool {
        self.layers.read().unwrap().contains_key(layer_digest)
    }

    pub fn unregister_layer(&self, layer_digest: &str) {
        self.layers.write().unwrap().remove(layer_digest);
        self.zran.write().unwrap().remove(layer_digest);
        self.maps.write().unwrap().remove(layer_digest);
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            fetched_bytes: g(&c.fetched_bytes),
            fetch_requests: g(&c.fetch_requests),
            memory_hits: g(&c.memory_hits),
            disk_hits: g(&c.disk_hits),
            misses: g(&c.misses),
            corrupt_chunks: g(&c.corrupt_chunks),
            fetch_errors: g(&c.fetch_errors),
            evicted_chunks: g(&c.evicted_chunks),
            prefetched_chunks: g(&c.prefetched_chunks),
            background_chunks: g(&c.background_chunks),
            read_chunk_bytes: g(&c.read_chunk_bytes),
        }
    }

    /// Bytes of chunks on disk, as recorded in `cache.db`.
    pub fn disk_usage(&self) -> u64 {
        self.disk.lock().unwrap().usage
    }

    /// Drops the in-memory chunks (the disk cache stays); for tests and memory pressure.
    pub fn clear_memory(&self) {
        self.mem.lock().unwrap().clear();
    }

    fn pin(&self, digests: &[&str]) -> Pins<'_> {
        let mut p = self.pins.lock().unwrap();
        for d in digests {
            *p.entry(d.to_string()).or_insert(0) += 1;
        }
        Pins {
            cache: self,
            digests: digests.iter().map(|d| d.to_string()).collect(),
        }
    }

    /// A chunk from memory or disk (verified), or `None`.
    fn lookup(&self, want: &Want) -> Result<Option<Arc<[u8]>>> {
        let hit = self.mem.lock().unwrap().get(want.digest).cloned();
        let hit = hit.or_else(|| self.unstored.lock().unwrap().get(want.digest).cloned());
        if let Some(b) = hit {
            bump(&self.counters.memory_hits, 1);
            self.readahead.used(want.digest);
            self.touched
                .lock()
                .unwrap()
                .entry(want.digest.to_string())
                .or_insert(None);
            return Ok(Some(b.clone()));
        }
        let Some(data) = self.read_stored(want.digest)? else {
            return Ok(None);
        };
        let data = match want.codec {
            Codec::Zran { .. } => unseal(data, want.len),
            _ => {
                Some(data).filter(|d| d.len() as u64 == want.len && verify(d, want.digest).is_ok())
            }
        };
        let Some(data) = data else {
            bump(&self.counters.corrupt_chunks, 1);
            tracing::warn!(
                digest = want.digest,
                "cached chunk failed verification, dropping it"
            );
            let mut disk = self.disk.lock().unwrap();
            self.forget(&mut disk, want.digest)?;
            return Ok(None);
        };
        self.touched
            .lock()
            .unwrap()
            .insert(want.digest.to_string(), Some(want.len));
        bump(&self.counters.disk_hits, 1);
        self.readahead.used(want.digest);
        let data: Arc<[u8]> = data.into();
        self.mem
            .lock()
            .unwrap()
            .put(want.digest.to_string(), data.clone());
        Ok(Some(data))
    }

    /// The stored bytes of a chunk: from its pack, else from a chunk file of an older
    /// cache; `None` when it has neither.
    fn read_stored(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let place = self.reader.lock().unwrap().place(digest)?;
        match place {
            Some((_, Some(at))) => self.packs.read(at),
            _ => self.files.read(digest),
        }
    }

    /// Whether a chunk's bytes are on disk: recorded in a pack, or an older cache's file.
    fn is_stored(&self, digest: &str) -> Result<bool> {
        match self.reader.lock().unwrap().place(digest)? {
            Some((_, Some(_))) => Ok(true),
            _ => Ok(self.files.path(digest).exists()),
        }
    }

    /// Frees the disk space of a chunk's bytes (the caller drops its row).
    fn discard(&self, digest: &str, at: Option<PackPlace>) -> Result<()> {
        match at {
            Some(at) => self.packs.discard(at),
            None => self.files.remove(digest),
        }
    }

    /// Drops a chunk from disk and from the record.
    fn forget(&self, disk: &mut DiskState, digest: &str) -> Result<()> {
        match disk.db.place(digest)? {
            Some((size, at)) => {
                self.discard(digest, at)?;
                disk.db.remove(digest)?;
                disk.usage = disk.usage.saturating_sub(size);
                if let Some(at) = at {
                    self.remove_pack_if_unused(disk, at.pack)?;
                }
                Ok(())
            }
            None => self.files.remove(digest),
        }
    }

    /// Removes pack `pack` when no chunk is recorded in it any more.
    fn remove_pack_if_unused(&self, disk: &DiskState, pack: u64) -> Result<()> {
        if disk.db.pack_in_use(pack)? {
            return Ok(());
        }
        self.packs.remove(pack)
    }

    /// Where a chunk's stored bytes are: `(file, offset, length)`, `None` when it is not on
    /// disk. For diagnostics and fault tests; the bytes are the decompressed chunk (a SOCI
    /// piece with its SHA-256 appended).
    pub fn stored_place(&self, digest: &str) -> Result<Option<(PathBuf, u64, u64)>> {
        match self.reader.lock().unwrap().place(digest)? {
            Some((_, Some(at))) => Ok(Some((self.packs.path(at.pack), at.offset, at.len))),
            _ => {
                let path = self.files.path(digest);
                Ok(std::fs::metadata(&path).ok().map(|m| (path, 0, m.len())))
            }
        }
    }

    /// Stores a verified chunk: its bytes appended to a pack, then its index row. A full
    /// disk (for the pack or for cache.db) evicts and retries once, then fails with
    /// ENOSPC; bytes that did not get a row are punched out again.
    fn store(&self, want: &Want, data: &Arc<[u8]>) -> Result<()> {
        let at = self.write_chunk(want, data)?;
        if let Err(e) = self.record_stored(&[(want.digest, want.len, at)]) {
            if let Some(at) = at {
                self.packs.discard(at)?;
            }
            return Err(e);
        }
        if at.is_some() {
            self.keep_room();
        }
        self.mem
            .lock()
            .unwrap()
            .put(want.digest.to_string(), data.clone());
        Ok(())
    }

    /// [`store`](Self::store) for a batch of verified chunks (a read-ahead's), with one
    /// index transaction for all of them. Returns how many are stored; a chunk that cannot
    /// be written is skipped (logged at debug: it is fetched again when read).
    fn store_many(&self, chunks: &[(Want<'_>, Arc<[u8]>)]) -> usize {
        let mut written: Vec<(&str, u64, Option<PackPlace>)> = Vec::with_capacity(chunks.len());
        for (want, data) in chunks {
            match self.write_chunk(want, data) {
                Ok(at) => written.push((want.digest, want.len, at)),
                Err(e) => {
                    tracing::debug!(digest = want.digest, error = %e, "storing a read-ahead chunk failed")
                }
            }
        }
        let recorded = self.record_stored(&written);
        {
            let mut mem = self.mem.lock().unwrap();
            let mut unstored = self.unstored.lock().unwrap();
            for (want, data) in chunks {
                mem.put(want.digest.to_string(), data.clone());
                unstored.remove(want.digest);
            }
        }
        if let Err(e) = recorded {
            tracing::debug!(chunks = written.len(), error = %e, "recording read-ahead chunks failed");
            for at in written.iter().filter_map(|w| w.2) {
                let _ = self.packs.discard(at);
            }
            return 0;
        }
        self.keep_room();
        written.len()
    }

    /// Whether the chunk is here: in memory, handed over and about to be written, or on
    /// disk.
    fn is_cached(&self, digest: &str) -> bool {
        self.mem.lock().unwrap().contains(digest)
            || self.unstored.lock().unwrap().contains_key(digest)
            || self.is_stored(digest).unwrap_or(false)
    }

    /// Evicts until the cache's filesystem has [`RESERVE_SHARE`] of it free again (at most
    /// [`RESERVE_MAX`]), as far as unpinned chunks allow.
    fn keep_room(&self) {
        let Ok(st) = nix::sys::statvfs::statvfs(self.files.root()) else {
            return;
        };
        let block = st.fragment_size();
        let size = st.blocks().saturating_mul(block);
        let avail = st.blocks_available().saturating_mul(block);
        let reserve = (size / RESERVE_SHARE).min(RESERVE_MAX);
        if avail >= reserve {
            return;
        }
        let target = self.disk_usage().saturating_sub(reserve - avail);
        tracing::debug!(
            avail,
            reserve,
            target,
            "the cache's filesystem is nearly full: evicting"
        );
        if let Err(e) = self.evict_to(target) {
            tracing::warn!(error = %e, "evicting to leave room on the cache's filesystem failed");
        }
    }

    /// Makes room for `bytes` more by evicting, once per `attempt` counter.
    fn make_room(&self, bytes: u64, attempt: &mut u32) -> Result<bool> {
        if *attempt > 0 {
            return Ok(false);
        }
        *attempt += 1;
        let target = self.disk_usage().saturating_sub(bytes.saturating_mul(4));
        self.evict_to(target)?;
        Ok(true)
    }

    /// Appends the chunk's bytes to a pack and returns their place; `None` when the chunk
    /// is on disk already.
    fn write_chunk(&self, want: &Want, data: &Arc<[u8]>) -> Result<Option<PackPlace>> {
        if self.is_stored(want.digest)? {
            return Ok(None);
        }
        let sealed;
        let bytes: &[u8] = match want.codec {
            Codec::Zran { .. } => {
                sealed = seal(data);
                &sealed
            }
            _ => data,
        };
        let mut attempt = 0;
        loop {
            match self.packs.append(bytes) {
                Ok(at) => {
                    if let Some(s) = &self.syncer {
                        s.sync(self.packs.path(at.pack));
                    }
                    return Ok(Some(at));
                }
                Err((_, e))
                    if e.raw_os_error() == Some(libc::ENOSPC)
                        && self.make_room(want.len, &mut attempt)? => {}
                Err((path, e)) => return Err(StoreError::io(path, e)),
            }
        }
    }

    /// The index rows of chunks just written (or, with no place, on disk already), in one
    /// transaction; a full cache.db evicts and retries once, then fails with ENOSPC. The
    /// bytes of a chunk someone else recorded meanwhile are punched out again.
    fn record_stored(&self, chunks: &[(&str, u64, Option<PackPlace>)]) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let bytes: u64 = chunks.iter().map(|c| c.1).sum();
        let mut attempt = 0;
        loop {
            let recorded = {
                let mut disk = self.disk.lock().unwrap();
                disk.db.insert_many(chunks).map(|(added, unused)| {
                    disk.usage += added;
                    unused
                })
            };
            match recorded {
                Ok(unused) => {
                    for at in unused {
                        self.packs.discard(at)?;
                    }
                    return Ok(());
                }
                Err(e) if is_disk_full(&e) && self.make_room(bytes, &mut attempt)? => {}
                Err(e) if is_disk_full(&e) => {
                    return Err(StoreError::io(
                        self.files.db_path(),
                        std::io::Error::from_raw_os_error(libc::ENOSPC),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Records the hits gathered since the last call in the index (LRU order). Files the
    /// index had lost track of (a crash between rename and insert) count again. On a full
    /// disk the LRU order just stays a little stale.
    fn record_touched(&self, disk: &mut DiskState) -> Result<()> {
        let touched: Vec<(String, Option<u64>)> = self.touched.lock().unwrap().drain().collect();
        if touched.is_empty() {
            return Ok(());
        }
        let refs: Vec<(&str, Option<u64>)> =
            touched.iter().map(|(d, s)| (d.as_str(), *s)).collect();
        match disk.db.touch(&refs) {
            Ok(added) => disk.usage += added,
            Err(e) if is_disk_full(&e) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Evicts least recently used, unpinned chunks until disk usage is at most `target`.
    fn evict_to(&self, target: u64) -> Result<()> {
        let mut disk = self.disk.lock().unwrap();
        self.record_touched(&mut disk)?;
        let mut offset_pinned = 0usize;
        let mut packs = std::collections::BTreeSet::new();
        while disk.usage > target {
            let batch = disk.db.lru(offset_pinned + 64)?;
            if batch.len() <= offset_pinned {
                break; // everything left is pinned
            }
            // The batch's bytes are freed first, its rows then go in one transaction: on a
            // full disk, deleting rows needs room in cache.db's WAL.
            let mut victims: Vec<(String, u64)> = Vec::new();
            {
                let pins = self.pins.lock().unwrap();
                let mut left = disk.usage;
                for (digest, size, at) in batch.into_iter().skip(offset_pinned) {
                    if left <= target {
                        break;
                    }
                    if pins.contains_key(&digest) {
                        offset_pinned += 1;
                        continue;
                    }
                    self.discard(&digest, at)?;
                    packs.extend(at.map(|a| a.pack));
                    left = left.saturating_sub(size);
                    victims.push((digest, size));
                }
            }
            disk.db
                .remove_many(victims.iter().map(|(d, _)| d.as_str()))?;
            for (_, size) in &victims {
                disk.usage = disk.usage.saturating_sub(*size);
            }
            bump(&self.counters.evicted_chunks, victims.len() as u64);
        }
        for pack in packs {
            self.remove_pack_if_unused(&disk, pack)?;
        }
        Ok(())
    }
}

impl ChunkCache {
    /// Fetches (coalesced, verified, stored) whichever of `chunks` are not cached yet, e.g.
    /// from a recorded start-up profile. Local chunks are ignored.
    pub fn prefetch(&self, layer_digest: &str, chunks: &[ChunkRef]) -> Result<()> {
        self.prefetch_reaching(layer_digest, chunks, Reach::Directory)
    }

    /// Fetches the file whose chunks are `chunks` by asking for its first one: its
    /// read-ahead brings the rest of the file (up to `FILE_AHEAD_MAX` compressed bytes) and
    /// nothing beyond it, no read-behind either. For the program prefetch, which knows which
    /// files it wants and nothing about their neighbours.
    pub fn prefetch_file(&self, layer_digest: &str, chunks: &[ChunkRef]) -> Result<()> {
        self.prefetch_reaching(layer_digest, &chunks[..chunks.len().min(1)], Reach::File)
    }

    fn prefetch_reaching(
        &self,
        layer_digest: &str,
        chunks: &[ChunkRef],
        reach: Reach,
    ) -> Result<()> {
        let wants: Vec<Want> = chunks
            .iter()
            .filter_map(|c| match &c.location {
                ChunkLocation::Compressed {
                    blob_offset,
                    blob_len,
                    digest,
                    codec,
                    inner_offset,
                } if is_sha256_digest(digest) => Some(Want {
                    blob_offset: *blob_offset,
                    blob_len: *blob_len,
                    len: c.len,
                    digest,
                    codec: *codec,
                    inner_offset: *inner_offset,
                }),
                _ => None,
            })
            .collect();
        for group in wants.chunks(64) {
            let digests: Vec<&str> = group.iter().map(|w| w.digest).collect();
            let pins = self.pin(&digests);
            CacheCore::get_chunks(&self.core, layer_digest, group, reach)?;
            drop(pins);
            if self.disk_usage() > self.budget {
                self.evict_to(self.budget)?;
            }
        }
        Ok(())
    }
}

impl ChunkCache {
    /// [`ContentReader::read_at`] for the daemon's own look into a file (the program
    /// prefetch reading an ELF header): fetched and verified the same way, but not counted
    /// as bytes a workload read (`ReadChunkBytes`).
    pub fn read_unrecorded(
        &self,
        layer_digest: &str,
        chunks: &[ChunkRef],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        self.read_chunks_at(layer_digest, chunks, offset, buf, false)
    }

    fn read_chunks_at(
        &self,
        layer_digest: &str,
        chunks: &[ChunkRef],
        offset: u64,
        buf: &mut [u8],
        workload: bool,
    ) -> Result<usize> {
        let size = chunks.last().map(|c| c.file_offset + c.len).unwrap_or(0);
        if buf.is_empty() || offset >= size {
            return Ok(0);
        }
        let end = offset.saturating_add(buf.len() as u64).min(size);
        let first = chunks.partition_point(|c| c.file_offset + c.len <= offset);
        let last = chunks.partition_point(|c| c.file_offset < end);
        let needed = &chunks[first..last];
        let mut wants = Vec::with_capacity(needed.len());
        for c in needed {
            match &c.location {
                ChunkLocation::Compressed {
                    blob_offset,
                    blob_len,
                    digest,
                    codec,
                    inner_offset,
                } if is_sha256_digest(digest) => wants.push(Want {
                    blob_offset: *blob_offset,
                    blob_len: *blob_len,
                    len: c.len,
                    digest,
                    codec: *codec,
                    inner_offset: *inner_offset,
                }),
                ChunkLocation::Compressed { digest, .. } => {
                    return Err(StoreError::InvalidIndex {
                        layer: layer_digest.to_string(),
                        reason: format!("chunk digest {digest:?} is not sha256"),
                    })
                }
                ChunkLocation::Local { .. } => {
                    return Err(StoreError::InvalidIndex {
                        layer: layer_digest.to_string(),
                        reason: "a local chunk was passed to the chunk cache".into(),
                    })
                }
            }
        }
        if workload {
            let mut seen = self.read_seen.lock().unwrap();
            for w in &wants {
                if !seen.contains(w.digest) {
                    seen.insert(w.digest.to_string());
                    bump(&self.counters.read_chunk_bytes, w.blob_len);
                }
            }
        }
        let digests: Vec<&str> = wants.iter().map(|w| w.digest).collect();
        let pins = self.pin(&digests);
        let reach = if workload {
            Reach::Directory
        } else {
            Reach::File
        };
        let data = CacheCore::get_chunks(&self.core, layer_digest, &wants, reach)?;
        let mut written = 0usize;
        for (c, bytes) in needed.iter().zip(&data) {
            let lo = offset.max(c.file_offset);
            let hi = end.min(c.file_offset + c.len);
            let src = &bytes[(lo - c.file_offset) as usize..(hi - c.file_offset) as usize];
            let dst = (lo - offset) as usize;
            buf[dst..dst + src.len()].copy_from_slice(src);
            written = written.max(dst + src.len());
        }
        drop(pins);
        if self.disk_usage() > self.budget {
            self.evict_to(self.budget)?;
        }
        Ok(written)
    }
}

impl ContentReader for ChunkCache {
    fn read_at(
        &self,
        layer_digest: &str,
        chunks: &[ChunkRef],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        self.read_chunks_at(layer_digest, chunks, offset, buf, true)
    }
}
