//! zstd:chunked micro-benchmarks: opening a layer (TOC fetch, verify, decompress, parse,
//! convert) and reading cached chunks, against reading the same bytes from an unpacked file
//! in the same run.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use skiff_store::cache::{ChunkCache, ChunkCacheConfig};
use skiff_store::chunked::{self, BlobSource, FileBlobSource, RetryPolicy, WriterOptions};
use skiff_store::{ContentReader, LayerIndex};

const BIG: usize = 8 << 20;
const READ: usize = 128 << 10;

fn payload(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|i| {
            if (i / 8192) % 2 == 0 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            } else {
                (i % 97) as u8
            }
        })
        .collect()
}

/// A layer of `files` small files plus one big one.
fn layer_tar(files: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..files {
        let data = format!("file {i}\n").repeat(i % 50 + 1);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(
            &mut h,
            format!("usr/share/doc/pkg{}/f{i}", i % 100),
            data.as_bytes(),
        )
        .unwrap();
    }
    let big = payload(BIG);
    let mut h = tar::Header::new_gnu();
    h.set_size(big.len() as u64);
    h.set_mode(0o755);
    b.append_data(&mut h, "usr/lib/big.so", &big[..]).unwrap();
    b.into_inner().unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    source: Arc<FileBlobSource>,
    annotations: BTreeMap<String, String>,
    digest: String,
    unpacked: std::fs::File,
}

fn fixture(files: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let tar = layer_tar(files);
    let mut blob = Vec::new();
    let layer = chunked::write_zstd_chunked(&tar, &mut blob, &WriterOptions::default()).unwrap();
    let blob_path = dir.path().join("blob");
    std::fs::write(&blob_path, &blob).unwrap();
    let unpacked_path = dir.path().join("big.so");
    std::fs::write(&unpacked_path, payload(BIG)).unwrap();
    Fixture {
        source: Arc::new(FileBlobSource::open(&blob_path, layer.digest.clone()).unwrap()),
        annotations: layer.annotations,
        digest: layer.digest,
        unpacked: std::fs::File::open(&unpacked_path).unwrap(),
        _dir: dir,
    }
}

fn open(f: &Fixture) -> LayerIndex {
    chunked::open_lazy_layer(
        f.source.as_ref(),
        &f.digest,
        &f.annotations,
        &RetryPolicy::default(),
    )
    .unwrap()
    .0
}

fn bench_open(c: &mut Criterion) {
    let mut g = c.benchmark_group("toc");
    for files in [100usize, 5000] {
        let f = fixture(files);
        g.bench_function(format!("open_lazy_layer/{files}_files"), |b| {
            b.iter(|| open(&f))
        });
        let index = open(&f);
        let path = format!("usr/share/doc/pkg{}/f{}", (files / 2) % 100, files / 2);
        g.bench_function(format!("find_entry/{files}_files"), |b| {
            b.iter(|| index.entries.iter().find(|e| e.path == path).unwrap().size)
        });
    }
    g.finish();
}

fn read_file(cache: &ChunkCache, index: &LayerIndex, chunks: &[skiff_store::ChunkRef]) -> u64 {
    let mut buf = vec![0u8; READ];
    let mut off = 0u64;
    loop {
        let n = cache.read_at(&index.digest, chunks, off, &mut buf).unwrap();
        if n == 0 {
            return off;
        }
        off += n as u64;
    }
}

fn bench_reads(c: &mut Criterion) {
    let f = fixture(100);
    let index = open(&f);
    let big = index
        .entries
        .iter()
        .find(|e| e.path == "usr/lib/big.so")
        .unwrap()
        .chunks
        .clone();
    let mut g = c.benchmark_group("read_8MiB_in_128KiB");
    g.throughput(Throughput::Bytes(BIG as u64));
    g.sample_size(20);
    for (name, memory_chunks) in [("cache_memory_hits", 64usize), ("cache_disk_hits", 1)] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ChunkCacheConfig::new(dir.path());
        cfg.memory_chunks = memory_chunks;
        let cache = ChunkCache::open(cfg).unwrap();
        cache.register_layer(&index.digest, f.source.clone() as Arc<dyn BlobSource>);
        assert_eq!(read_file(&cache, &index, &big), BIG as u64); // warm
        g.bench_function(name, |b| b.iter(|| read_file(&cache, &index, &big)));
    }
    g.bench_function("cold_from_local_blob", |b| {
        // Cache creation and teardown (which drains the background fsyncs) are not timed.
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let cache = ChunkCache::open(ChunkCacheConfig::new(dir.path())).unwrap();
                cache.register_layer(&index.digest, f.source.clone() as Arc<dyn BlobSource>);
                (dir, cache)
            },
            |(dir, cache)| {
                let n = read_file(&cache, &index, &big);
                (dir, cache, n)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("unpacked_file_pread", |b| {
        let mut buf = vec![0u8; READ];
        b.iter(|| {
            let mut off = 0u64;
            loop {
                let n = f.unpacked.read_at(&mut buf, off).unwrap();
                if n == 0 {
                    return off;
                }
                off += n as u64;
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_open, bench_reads);
criterion_main!(benches);
