//! zstd:chunked end to end against a real registry: convert a tar, push it, open it lazily,
//! read every file through the chunk cache, and check what went over the wire.

mod chunked_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use chunked_support::*;
use skiff_store::cache::{ChunkCache, ChunkCacheConfig};
use skiff_store::chunked::{self, BlobSource};
use skiff_store::{ChunkLocation, ContentReader, FileKind, LayerIndex};
use skiff_tests::{registry::registry_unavailable, require, Registry};

fn open(
    rt: &tokio::runtime::Runtime,
    registry: &Registry,
    repo: &str,
) -> (Vec<u8>, Vec<u8>, Pushed, LayerIndex, Arc<dyn BlobSource>) {
    let (tar, blob, pushed) = converted_image(rt, registry, repo).unwrap();
    let source: Arc<dyn BlobSource> = registry_source(rt, &pushed);
    let (index, info) = chunked::open_lazy_layer(
        source.as_ref(),
        &pushed.layer_digest,
        &pushed.annotations,
        &quick_retry(),
    )
    .unwrap();
    assert!(info.verified);
    assert_eq!(info.location.format, chunked::ChunkedFormat::Current);
    (tar, blob, pushed, index, source)
}

#[test]
fn converted_blob_decompresses_to_the_tar_with_real_zstd() {
    require!(
        "converted_blob_decompresses_to_the_tar_with_real_zstd",
        which("zstd")
    );
    let tar = build_tar();
    let mut blob = Vec::new();
    let layer =
        chunked::write_zstd_chunked(&tar, &mut blob, &chunked::WriterOptions::default()).unwrap();
    assert_eq!(layer.diff_id, sha256(&tar));
    assert_eq!(layer.digest, sha256(&blob));
    assert_eq!(layer.size, blob.len() as u64);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("layer.tar.zst");
    std::fs::write(&p, &blob).unwrap();
    let out = std::process::Command::new("zstd")
        .args(["-d", "-c", "-q"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == tar, "zstd -d does not reproduce the tar");
    // The tar-split frame rebuilds the same archive: its segments and file entries, in order,
    // must concatenate to the tar.
    let (off, len, ulen) = {
        let v: Vec<u64> = layer.annotations[chunked::footer::TARSPLIT_POSITION_KEY]
            .split(':')
            .map(|s| s.parse().unwrap())
            .collect();
        (v[0] as usize, v[1] as usize, v[2] as usize)
    };
    let split = zstd::decode_all(&blob[off..off + len]).unwrap();
    assert_eq!(split.len(), ulen);
    let mut rebuilt = Vec::new();
    for line in split.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        if v["type"] == 2 {
            use base64_decode::decode;
            rebuilt.extend(decode(v["payload"].as_str().unwrap()));
        } else {
            let size = v["size"].as_u64().unwrap_or(0) as usize;
            rebuilt.extend_from_slice(&tar[rebuilt.len()..rebuilt.len() + size]);
        }
    }
    assert!(rebuilt == tar, "tar-split does not rebuild the tar");
}

/// Tiny base64 decoder so the test checks the tar-split payloads independently of the
/// writer's encoder.
mod base64_decode {
    pub fn decode(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64"),
        };
        let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
        let mut out = Vec::new();
        for chunk in bytes.chunks(4) {
            let mut n = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                n |= (val(*c) as u32) << (18 - 6 * i);
            }
            for i in 0..chunk.len() - 1 {
                out.push((n >> (16 - 8 * i)) as u8);
            }
        }
        out
    }
}

fn which(bin: &str) -> Option<String> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).exists()))
        .unwrap_or(false);
    (!found).then(|| format!("{bin} not installed"))
}

#[test]
fn toc_matches_tar_and_every_file_reads_back() {
    require!(
        "toc_matches_tar_and_every_file_reads_back",
        registry_unavailable()
    );
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let (tar, _blob, pushed, index, source) = open(&rt, &registry, "lazy/toc");

    // Entries: the tar's, normalized, root dropped.
    let mut archive = tar::Archive::new(&tar[..]);
    let mut expected = Vec::new();
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let p = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let p = p.trim_start_matches("./").trim_end_matches('/').to_string();
        if !p.is_empty() {
            expected.push(p);
        }
    }
    let got: Vec<&str> = index
        .entries
        .iter()
        .map(|e| e.path.to_str().unwrap())
        .collect();
    assert_eq!(got, expected);
    let by = |p: &str| index.entries.iter().find(|e| e.path == p).unwrap();
    assert_eq!(by("etc").kind, FileKind::Directory);
    assert_eq!(by("etc").mode, 0o755);
    let hello = by("etc/hello.txt");
    assert_eq!(
        (hello.kind, hello.mode, hello.uid, hello.gid),
        (FileKind::Regular, 0o640, 1000, 100)
    );
    assert_eq!(hello.mtime, 1_700_000_123);
    assert_eq!(by("etc/link").kind, FileKind::Symlink);
    assert_eq!(by("etc/link").link_target, "hello.txt");
    assert_eq!(by("etc/hardlink").kind, FileKind::Hardlink);
    assert_eq!(by("etc/hardlink").link_target, "etc/hello.txt");
    let null = by("dev/null");
    assert_eq!(
        (null.kind, null.dev_major, null.dev_minor),
        (FileKind::CharDevice, 1, 3)
    );
    let lp = by("dev/loop0");
    assert_eq!(
        (lp.kind, lp.dev_major, lp.dev_minor),
        (FileKind::BlockDevice, 7, 0)
    );
    assert_eq!(by("run/fifo").kind, FileKind::Fifo);
    let mut x = BTreeMap::new();
    x.insert("user.skiff".to_string(), b"value\x00\x01".to_vec());
    assert_eq!(by("etc/xattr-file").xattrs, x);
    assert_eq!(by("usr/lib/big.bin").chunks.len(), 5); // 1_300_000 / 256 KiB
    assert_eq!(by("usr/bin/exactly-one-chunk").chunks.len(), 1);
    assert!(by("empty").chunks.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let cache = ChunkCache::open(ChunkCacheConfig::new(dir.path())).unwrap();
    cache.register_layer(&pushed.layer_digest, source);
    let mut files = tar_files();
    files.push(TarFile {
        path: "etc/xattr-file",
        data: b"has xattr\n".to_vec(),
    });
    for f in &files {
        for step in [4096usize, 100_000, 1 << 20] {
            let got = read_all(&cache, &index, f.path.trim_start_matches("./"), step);
            assert!(got == f.data, "{} read with step {step} differs", f.path);
        }
    }
    // Odd reads: across a chunk boundary, past the end.
    let big = by("usr/lib/big.bin");
    let want = &files[1].data;
    let mut buf = vec![0u8; 10];
    let at = (256 << 10) - 5;
    assert_eq!(
        cache
            .read_at(&index.digest, &big.chunks, at, &mut buf)
            .unwrap(),
        10
    );
    assert_eq!(&buf[..], &want[at as usize..at as usize + 10]);
    assert_eq!(
        cache
            .read_at(&index.digest, &big.chunks, 1_300_000, &mut buf)
            .unwrap(),
        0
    );
    assert_eq!(
        cache
            .read_at(&index.digest, &big.chunks, 1_299_995, &mut buf)
            .unwrap(),
        5
    );
}

#[test]
fn reading_one_file_fetches_its_chunks_and_nothing_else() {
    require!(
        "reading_one_file_fetches_its_chunks_and_nothing_else",
        registry_unavailable()
    );
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let (_tar, _blob, pushed, index, source) = open(&rt, &registry, "lazy/one");
    let (toc_requests, toc_bytes) = wait_logged(&registry, &pushed.layer_digest, 1);
    assert_eq!(toc_requests, 1, "the TOC is fetched with one request");

    let dir = tempfile::tempdir().unwrap();
    let cache = ChunkCache::open(ChunkCacheConfig::new(dir.path())).unwrap();
    cache.register_layer(&pushed.layer_digest, source.clone());
    let big = index
        .entries
        .iter()
        .find(|e| e.path == "usr/lib/big.bin")
        .unwrap();
    let chunk_bytes: u64 = big
        .chunks
        .iter()
        .map(|c| match &c.location {
            ChunkLocation::Compressed { blob_len, .. } => *blob_len,
            _ => unreachable!(),
        })
        .sum();
    // One read of the whole file: its adjacent chunks coalesce into one request.
    let mut buf = vec![0u8; 2 << 20];
    let n = cache
        .read_at(&index.digest, &big.chunks, 0, &mut buf)
        .unwrap();
    assert_eq!(n, 1_300_000);
    assert_eq!(&buf[..n], &data(1, 1_300_000)[..]);
    let s = cache.stats();
    assert_eq!(s.fetched_bytes, chunk_bytes);
    assert_eq!(s.fetch_requests, 1);
    assert_eq!(s.misses, 5);
    // The registry agrees: one more blob GET, of exactly those bytes.
    let (requests, bytes) = wait_logged(&registry, &pushed.layer_digest, 2);
    assert_eq!(requests, 2);
    assert_eq!(bytes - toc_bytes, chunk_bytes);

    // Again: memory hits, nothing fetched.
    cache
        .read_at(&index.digest, &big.chunks, 0, &mut buf)
        .unwrap();
    assert_eq!(cache.stats().fetched_bytes, chunk_bytes);
    assert_eq!(cache.stats().memory_hits, 5);
    // From disk after memory is dropped, and after reopening the cache.
    cache.clear_memory();
    cache
        .read_at(&index.digest, &big.chunks, 0, &mut buf)
        .unwrap();
    assert_eq!(cache.stats().disk_hits, 5);
    drop(cache);
    let cache = ChunkCache::open(ChunkCacheConfig::new(dir.path())).unwrap();
    assert_eq!(cache.disk_usage(), 1_300_000);
    cache.register_layer(&pushed.layer_digest, source);
    let n = cache
        .read_at(&index.digest, &big.chunks, 1000, &mut buf[..100])
        .unwrap();
    assert_eq!(n, 100);
    assert_eq!(cache.stats().fetched_bytes, 0);
    assert_eq!(wait_logged(&registry, &pushed.layer_digest, 3).0, 2);

    // A read inside one chunk fetches only that chunk.
    let med = index
        .entries
        .iter()
        .find(|e| e.path == "usr/lib/medium.bin")
        .unwrap();
    let ChunkLocation::Compressed { blob_len, .. } = &med.chunks[1].location else {
        unreachable!()
    };
    let n = cache
        .read_at(&index.digest, &med.chunks, 270_000, &mut buf[..1000])
        .unwrap();
    assert_eq!(n, 1000);
    assert_eq!(&buf[..1000], &data(2, 300_000)[270_000..271_000]);
    assert_eq!(cache.stats().fetched_bytes, *blob_len);
}

#[test]
fn concurrent_readers_share_one_fetch() {
    require!("concurrent_readers_share_one_fetch", registry_unavailable());
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let (_tar, _blob, pushed, index, source) = open(&rt, &registry, "lazy/flight");
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(ChunkCache::open(ChunkCacheConfig::new(dir.path())).unwrap());
    cache.register_layer(&pushed.layer_digest, source);
    let big = index
        .entries
        .iter()
        .find(|e| e.path == "usr/lib/big.bin")
        .unwrap()
        .clone();
    let want = data(1, 1_300_000);
    let barrier = Arc::new(std::sync::Barrier::new(6));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (cache, big, barrier, layer) = (
                cache.clone(),
                big.clone(),
                barrier.clone(),
                index.digest.clone(),
            );
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1_300_000];
                barrier.wait();
                let n = cache.read_at(&layer, &big.chunks, 0, &mut buf).unwrap();
                assert_eq!(n, buf.len());
                buf
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap() == want);
    }
    // Every chunk was fetched exactly once: how the five misses were grouped into requests
    // depends on how the readers interleaved, but no byte came twice.
    let chunk_bytes: u64 = big
        .chunks
        .iter()
        .map(|c| match c.location {
            skiff_store::ChunkLocation::Compressed { blob_len, .. } => blob_len,
            skiff_store::ChunkLocation::Local { .. } => 0,
        })
        .sum();
    let stats = cache.stats();
    assert_eq!(stats.misses, 5, "{stats:?}");
    assert!(stats.fetch_requests <= 5, "{stats:?}");
    assert!(
        stats.fetched_bytes <= chunk_bytes + 5 * 1024,
        "{stats:?} vs {chunk_bytes}"
    );
    // The registry agrees: the TOC request plus those chunk requests, nothing more.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        logged_blob_gets(&registry, &pushed.layer_digest).0,
        1 + stats.fetch_requests
    );
}

#[test]
fn small_budget_keeps_the_cache_under_it() {
    require!(
        "small_budget_keeps_the_cache_under_it",
        registry_unavailable()
    );
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let (_tar, _blob, pushed, index, source) = open(&rt, &registry, "lazy/budget");
    let dir = tempfile::tempdir().unwrap();
    let budget = 600_000u64; // a little over two chunks
    let mut cfg = ChunkCacheConfig::new(dir.path());
    cfg.budget_bytes = budget;
    cfg.memory_chunks = 1;
    let cache = ChunkCache::open(cfg).unwrap();
    cache.register_layer(&pushed.layer_digest, source);
    let files = tar_files();
    let mut read_total = 0;
    for round in 0..3 {
        for f in &files {
            let got = read_all(&cache, &index, f.path, 64 << 10);
            assert!(got == f.data, "round {round}: {} differs", f.path);
            read_total += got.len();
            assert!(
                cache.disk_usage() <= budget,
                "usage {} > {budget}",
                cache.disk_usage()
            );
            // Blocks the packs hold: chunks start on a 4 KiB block, so each live
            // chunk may add up to one block of rounding.
            let on_disk: u64 = allocated(&dir.path().join("packs"));
            let slack = 4096 * (cache.chunk_count().unwrap() + 1);
            assert!(
                on_disk <= budget + slack,
                "packs hold {on_disk} > {budget} + {slack}"
            );
        }
    }
    assert!(read_total as u64 > 5 * budget);
    assert!(cache.stats().evicted_chunks > 0);
}

/// Bytes of disk blocks the files in `p` hold (punched-out chunks hold none).
fn allocated(p: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
        .sum()
}

#[test]
fn async_open_and_prefetch_then_reads_hit_the_cache() {
    require!(
        "async_open_and_prefetch_then_reads_hit_the_cache",
        registry_unavailable()
    );
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Convert from a file, atomically, as `skiff image convert` will.
    let tar_path = dir.path().join("layer.tar");
    std::fs::write(&tar_path, build_tar()).unwrap();
    let blob_path = dir.path().join("layer.tar.zst");
    let layer = chunked::convert_tar_file(&tar_path, &blob_path, &Default::default()).unwrap();
    let blob = std::fs::read(&blob_path).unwrap();
    assert_eq!(sha256(&blob), layer.digest);
    let pushed = rt
        .block_on(push_image(
            &registry,
            "lazy/prefetch",
            &blob,
            &layer.diff_id,
            layer.annotations,
        ))
        .unwrap();
    let source: Arc<dyn BlobSource> = registry_source(&rt, &pushed);
    let (index, _) = rt
        .block_on(chunked::open_lazy_layer_async(
            source.clone(),
            pushed.layer_digest.clone(),
            pushed.annotations.clone(),
            quick_retry(),
        ))
        .unwrap();
    let cache = ChunkCache::open(ChunkCacheConfig::new(dir.path().join("cache"))).unwrap();
    cache.register_layer(&pushed.layer_digest, source);
    let all: Vec<_> = index
        .entries
        .iter()
        .flat_map(|e| e.chunks.clone())
        .collect();
    cache.prefetch(&index.digest, &all).unwrap();
    let fetched = cache.stats().fetched_bytes;
    assert!(fetched > 0);
    assert!(
        cache.stats().fetch_requests <= 2,
        "whole-layer prefetch coalesces: {:?}",
        cache.stats()
    );
    for f in tar_files() {
        assert!(read_all(&cache, &index, f.path, 1 << 20) == f.data);
    }
    assert_eq!(
        cache.stats().fetched_bytes,
        fetched,
        "reads after prefetch fetch nothing"
    );
}
