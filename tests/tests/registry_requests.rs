//! What goes over the wire on the lazy path, counted at a relay in front of the real
//! registry: one GET per fetch, no `GET /v2/` probes, connections kept alive and reused.

mod chunked_support;

use std::sync::Arc;

use chunked_support::*;
use skiff_store::{FileKind, Store, StoreOptions};
use skiff_tests::{registry::registry_unavailable, require, CountingProxy, Registry};

#[test]
fn lazy_pull_and_reads_send_one_get_per_fetch_and_no_probes() {
    require!(
        "lazy_pull_and_reads_send_one_get_per_fetch_and_no_probes",
        registry_unavailable()
    );
    let registry = Registry::start().unwrap();
    let rt = runtime();
    let (_tar, _blob, pushed) = converted_image(&rt, &registry, "wire/count").unwrap();
    let proxy = CountingProxy::start(&registry.host()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
    let reference = format!("{}/wire/count:latest", proxy.host());
    let img = rt
        .block_on(store.pull(&reference, &|_| {}))
        .expect("lazy pull through the proxy");
    assert_eq!(img.layers[0].format, "zstd:chunked");

    // Pull: the manifest, then the config and the TOC's range at once; beside them, the
    // shared-profile lookup (Referrers API and its fallback tag, asked at once); nothing
    // else.
    let all = proxy.requests();
    let is_profile_lookup = |p: &str| p.contains("/referrers/") || p.contains("/manifests/sha256-");
    let lookups: Vec<&str> = all
        .iter()
        .map(|r| r.path.as_str())
        .filter(|p| is_profile_lookup(p))
        .collect();
    assert_eq!(lookups.len(), 2, "{all:#?}");
    let seen: Vec<_> = all
        .iter()
        .filter(|r| !is_profile_lookup(&r.path))
        .cloned()
        .collect();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert_eq!(seen[0].path, "/v2/wire/count/manifests/latest");
    let config = seen
        .iter()
        .find(|r| r.range.is_none() && r.path != seen[0].path);
    assert!(
        config.is_some_and(|r| r.path.starts_with("/v2/wire/count/blobs/sha256:")
            && r.path != format!("/v2/wire/count/blobs/{}", pushed.layer_digest)),
        "{seen:#?}"
    );
    let toc = seen.iter().find(|r| r.range.is_some());
    assert_eq!(
        toc.map(|r| r.path.clone()),
        Some(format!("/v2/wire/count/blobs/{}", pushed.layer_digest)),
        "{seen:#?}"
    );
    // A loopback registry is tried over HTTPS first (dockerd's order), once: the scheme
    // that worked (plain HTTP here) is kept for every later request.
    assert_eq!(proxy.tls_connections(), 1);
    proxy.clear();

    // Every file read at once from several threads, as FUSE workers would.
    let indexes = store.layer_indexes(&img.id).unwrap();
    let reader = store.content_reader();
    let layer = indexes[0].digest.clone();
    let files: Vec<_> = indexes[0]
        .entries
        .iter()
        .filter(|e| e.kind == FileKind::Regular && e.size > 0)
        .cloned()
        .collect();
    assert!(files.len() >= 4);
    let before = store.cache_stats().unwrap().counters.fetch_requests;
    std::thread::scope(|s| {
        for f in &files {
            let (reader, layer) = (reader.clone(), layer.clone());
            s.spawn(move || {
                let mut buf = vec![0u8; f.size as usize];
                let n = reader.read_at(&layer, &f.chunks, 0, &mut buf).unwrap();
                assert_eq!(n as u64, f.size, "{}", f.path);
            });
        }
    });
    let fetches = store.cache_stats().unwrap().counters.fetch_requests - before;
    let seen = proxy.requests();
    assert!(fetches > 0);
    // Exactly one request per fetch, each a Range GET of the layer blob.
    assert_eq!(seen.len() as u64, fetches, "{seen:#?}");
    for r in &seen {
        assert_eq!(r.method, "GET");
        assert_eq!(
            r.path,
            format!("/v2/wire/count/blobs/{}", pushed.layer_digest)
        );
        assert!(r.range.as_deref().is_some_and(|v| v.starts_with("bytes=")));
    }
    // No auth probe at any point, and no second HTTPS attempt.
    assert!(!seen.iter().any(|r| r.path == "/v2/" || r.path == "/v2"));
    assert_eq!(proxy.tls_connections(), 1);
    // Kept alive: connections are reused, at most one per parallel fetch (8) plus the pull's.
    let total = all.len() + seen.len();
    assert!(
        proxy.connections() <= 9 && proxy.connections() < total,
        "{} connections for {total} requests",
        proxy.connections()
    );
}

#[test]
fn a_missing_blob_is_not_retried() {
    require!("a_missing_blob_is_not_retried", registry_unavailable());
    use skiff_store::chunked::BlobSource;
    let registry = Registry::start().unwrap();
    let rt = runtime();
    let (_tar, _blob, _pushed) = converted_image(&rt, &registry, "wire/missing").unwrap();
    let proxy = CountingProxy::start(&registry.host()).unwrap();
    let reference: oci_client::Reference = format!("{}/wire/missing:latest", proxy.host())
        .parse()
        .unwrap();
    let missing = format!("sha256:{}", "0".repeat(64));
    let source = store_source(&rt, &reference, &missing, 1 << 20);
    let policy = skiff_store::chunked::RetryPolicy {
        attempts: 4,
        initial_backoff: std::time::Duration::from_secs(2),
        max_backoff: std::time::Duration::from_secs(2),
    };
    let started = std::time::Instant::now();
    let err = source.read_range_retry(0, 100, &policy).unwrap_err();
    assert!(
        matches!(err, skiff_store::StoreError::NotFound { .. }),
        "{err}"
    );
    assert!(err.is_permanent());
    // One request, no backoff sleeps.
    assert_eq!(proxy.requests().len(), 1, "{:#?}", proxy.requests());
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn a_miss_reads_ahead_within_its_directory() {
    require!(
        "a_miss_reads_ahead_within_its_directory",
        registry_unavailable()
    );
    let lazy = LazyThroughRelay::pull("wire/ahead");
    let (proxy, file, read) = (
        &lazy.proxy,
        |p: &str| lazy.file(p),
        |p: &str, o, l| lazy.read(p, o, l),
    );
    proxy.clear();
    // etc/hello.txt: its directory ends there, so nothing of usr/lib/ comes along.
    assert_eq!(read("etc/hello.txt", 0, 100), expect("etc/hello.txt"));
    assert_eq!(proxy.requests().len(), 1);
    let big = expect("usr/lib/big.bin");
    assert_eq!(read("usr/lib/big.bin", 0, 4096), &big[..4096]);
    assert_eq!(proxy.requests().len(), 2, "{:#?}", proxy.requests());
    // The next chunk of big.bin came with the first (read ahead in the same request).
    let second = 256 << 10;
    assert_eq!(
        read("usr/lib/big.bin", second, 4096),
        &big[second as usize..second as usize + 4096]
    );
    assert_eq!(proxy.requests().len(), 2, "{:#?}", proxy.requests());
    let ahead = proxy.requests()[1].range.clone().unwrap();
    let first_chunk = &file("usr/lib/big.bin").chunks[0];
    let skiff_store::ChunkLocation::Compressed {
        blob_offset,
        blob_len,
        ..
    } = &first_chunk.location
    else {
        panic!("lazy chunk expected")
    };
    // The request went past the demanded chunk.
    let (_, end) = ahead.trim_start_matches("bytes=").split_once('-').unwrap();
    assert!(
        end.parse::<u64>().unwrap() + 1 > blob_offset + blob_len,
        "{ahead}"
    );
}

#[test]
fn a_miss_reads_behind_over_its_directory_and_ahead_to_its_file_end() {
    require!(
        "a_miss_reads_behind_over_its_directory_and_ahead_to_its_file_end",
        registry_unavailable()
    );
    let lazy = LazyThroughRelay::pull("wire/behind");
    let (proxy, file, read) = (
        &lazy.proxy,
        |p: &str| lazy.file(p),
        |p: &str, o, l| lazy.read(p, o, l),
    );
    let blob_offset = |c: &skiff_store::ChunkRef| match &c.location {
        skiff_store::ChunkLocation::Compressed { blob_offset, .. } => *blob_offset,
        _ => panic!("lazy chunk expected"),
    };
    proxy.clear();
    // medium.bin follows big.bin in usr/lib/. Its first chunk: one request reading ahead to
    // medium.bin's end, and one more, beside it, reading back over big.bin's last chunks.
    let medium = expect("usr/lib/medium.bin");
    assert_eq!(read("usr/lib/medium.bin", 0, 4096), &medium[..4096]);
    let medium_start = blob_offset(&file("usr/lib/medium.bin").chunks[0]);
    let second = 256 << 10;
    assert_eq!(
        read("usr/lib/medium.bin", second, 4096),
        &medium[second as usize..second as usize + 4096]
    );
    let big = expect("usr/lib/big.bin");
    let last = file("usr/lib/big.bin").chunks.last().unwrap().clone();
    let off = last.file_offset as usize;
    assert_eq!(
        read("usr/lib/big.bin", last.file_offset, 4096),
        &big[off..off + 4096]
    );
    let seen = proxy.requests();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let ranges: Vec<(u64, u64)> = seen
        .iter()
        .map(|r| {
            let v = r.range.as_deref().unwrap().trim_start_matches("bytes=");
            let (lo, hi) = v.split_once('-').unwrap();
            (lo.parse().unwrap(), hi.parse().unwrap())
        })
        .collect();
    assert!(
        ranges.iter().any(|&(lo, _)| lo == medium_start),
        "{ranges:?}"
    );
    let behind = ranges.iter().find(|&&(lo, _)| lo < medium_start).unwrap();
    assert!(behind.1 < medium_start, "{ranges:?}");
    assert!(behind.0 <= blob_offset(&last), "{ranges:?}");
}

/// The converted test image pushed to a real registry and pulled lazily through a counting
/// relay into a fresh store: what the read-ahead tests read from.
struct LazyThroughRelay {
    _registry: Registry,
    proxy: CountingProxy,
    _dir: tempfile::TempDir,
    indexes: Vec<skiff_store::LayerIndex>,
    reader: Arc<dyn skiff_store::ContentReader>,
    /// The store's fetches run on it: dropped last.
    _rt: tokio::runtime::Runtime,
}

impl LazyThroughRelay {
    fn pull(repo: &str) -> LazyThroughRelay {
        let registry = Registry::start().unwrap();
        let rt = runtime();
        converted_image(&rt, &registry, repo).unwrap();
        let proxy = CountingProxy::start(&registry.host()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let img = rt
            .block_on(store.pull(&format!("{}/{repo}:latest", proxy.host()), &|_| {}))
            .unwrap();
        LazyThroughRelay {
            indexes: store.layer_indexes(&img.id).unwrap(),
            reader: store.content_reader(),
            _registry: registry,
            proxy,
            _dir: dir,
            _rt: rt,
        }
    }

    fn file(&self, path: &str) -> skiff_store::FileEntry {
        self.indexes[0]
            .entries
            .iter()
            .find(|e| e.path == path)
            .unwrap()
            .clone()
    }

    /// Up to `len` bytes of `path` at `off`, through the chunk cache.
    fn read(&self, path: &str, off: u64, len: usize) -> Vec<u8> {
        let f = self.file(path);
        let mut buf = vec![0u8; len];
        let n = self
            .reader
            .read_at(&self.indexes[0].digest, &f.chunks, off, &mut buf)
            .unwrap();
        buf.truncate(n);
        buf
    }
}

fn expect(path: &str) -> Vec<u8> {
    tar_files()
        .into_iter()
        .find(|f| f.path == path)
        .unwrap()
        .data
}
