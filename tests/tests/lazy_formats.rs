//! The lazy formats' conformance suite: the same tar written as zstd:chunked and as eStargz,
//! pushed to a real registry, pulled lazily and in full, must serve the same tree (bytes and
//! metadata); a corrupt chunk is an error (EIO at the filesystem), never a wrong byte; a TOC
//! that does not verify makes the pull fall back to a full, verified pull.

mod chunked_support;
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use chunked_support::*;
use common::{read_all, QUIET};
use skiff_store::cache::{ChunkCache, ChunkCacheConfig};
use skiff_store::chunked::{self, BlobSource};
use skiff_store::layer::compression::OCI_LAYER_GZIP;
use skiff_store::lazy_format::{self, LayerDescriptor, Opened};
use skiff_store::{
    estargz, ChunkLocation, ContentReader, FileKind, Store, StoreError, StoreOptions,
};
use skiff_tests::{registry::registry_unavailable, require, Registry};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    ZstdChunked,
    Estargz,
}

const FORMATS: [Format; 2] = [Format::ZstdChunked, Format::Estargz];

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::ZstdChunked => skiff_store::FORMAT_ZSTD_CHUNKED,
            Format::Estargz => skiff_store::FORMAT_ESTARGZ,
        }
    }
}

/// A written layer: blob, diff_id, annotations, media type.
struct Written {
    blob: Vec<u8>,
    diff_id: String,
    annotations: BTreeMap<String, String>,
    media_type: &'static str,
}

fn write(format: Format, tar: &[u8]) -> Written {
    let mut blob = Vec::new();
    match format {
        Format::ZstdChunked => {
            let l = chunked::write_zstd_chunked(tar, &mut blob, &Default::default()).unwrap();
            Written {
                blob,
                diff_id: l.diff_id,
                annotations: l.annotations,
                media_type: chunked::MEDIA_TYPE_LAYER_ZSTD,
            }
        }
        Format::Estargz => {
            // Small chunks, so the big files have several; the first entries form the
            // prefetch region.
            let opts = estargz::WriterOptions {
                chunk_size: 256 << 10,
                landmark: estargz::Landmark::PrefetchAfter(3),
                ..Default::default()
            };
            let l = estargz::write_estargz(tar, &mut blob, &opts).unwrap();
            Written {
                blob,
                diff_id: l.diff_id,
                annotations: l.annotations,
                media_type: OCI_LAYER_GZIP,
            }
        }
    }
}

fn push(rt: &tokio::runtime::Runtime, registry: &Registry, repo: &str, w: &Written) -> Pushed {
    rt.block_on(push_image_as(
        registry,
        repo,
        &w.blob,
        &w.diff_id,
        w.annotations.clone(),
        w.media_type,
    ))
    .unwrap()
}

/// Opens `pushed`'s layer through the format that claims it (the pull's own path).
fn open_lazily(
    rt: &tokio::runtime::Runtime,
    pushed: &Pushed,
    w: &Written,
) -> skiff_store::LayerIndex {
    let desc = LayerDescriptor {
        digest: pushed.layer_digest.clone(),
        media_type: w.media_type.to_string(),
        size: pushed.layer_size,
        annotations: pushed.annotations.clone(),
    };
    let format = lazy_format::detect(&desc).expect("a lazy format claims the layer");
    let source = registry_source(rt, pushed);
    match format.open(source.as_ref(), &desc, &quick_retry()).unwrap() {
        Opened::Lazy(l) => l.index,
        Opened::Full(reason) => panic!("not lazy: {reason}"),
    }
}

/// Everything the filesystem shows of a file but its chunk locations.
type Shown = (
    FileKind,
    u32,
    u32,
    u32,
    u64,
    i64,
    String,
    u32,
    u32,
    BTreeMap<String, Vec<u8>>,
    Vec<u8>,
);

/// The tree `store` serves for `reference`, by path.
fn served_tree(store: &Store, reference: &str) -> BTreeMap<String, Shown> {
    let img = store.image(reference).unwrap();
    let indexes = store.layer_indexes(&img.id).unwrap();
    let mut out = BTreeMap::new();
    for l in &indexes {
        for e in &l.entries {
            let bytes = if e.kind == FileKind::Regular && e.size > 0 {
                read_all(store, &l.digest, e)
            } else {
                Vec::new()
            };
            out.insert(
                e.path.display().into_owned(),
                (
                    e.kind,
                    e.mode,
                    e.uid,
                    e.gid,
                    e.size,
                    e.mtime,
                    e.link_target.display().into_owned(),
                    e.dev_major,
                    e.dev_minor,
                    e.xattrs.clone(),
                    bytes,
                ),
            );
        }
    }
    out
}

fn store_at(dir: &std::path::Path, lazy_pull: bool) -> Store {
    Store::open(
        dir,
        StoreOptions {
            lazy_pull,
            fetch_profiles: false,
            // These tests measure what the pull itself fetches.
            prefetch_program: false,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn both_formats_serve_the_same_tree_lazily_and_in_full() {
    require!(
        "both_formats_serve_the_same_tree_lazily_and_in_full",
        registry_unavailable()
    );
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let tar = build_tar();
    let mut trees = Vec::new();
    for format in FORMATS {
        let w = write(format, &tar);
        let repo = format!("conform/{}", format.name().replace(':', "-"));
        let pushed = push(&rt, &registry, &repo, &w);
        let reference = pushed.reference.whole();
        for lazy in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let store = store_at(dir.path(), lazy);
            let before = store.bytes_downloaded();
            let img = rt.block_on(store.pull(&reference, QUIET)).unwrap();
            let pulled = store.bytes_downloaded() - before;
            let layer = &img.layers[0];
            if lazy {
                assert_eq!(
                    (layer.state.as_str(), layer.format.as_str()),
                    ("lazy", format.name())
                );
                // Only the TOC (and the footer, config, manifest) came with the pull.
                assert!(
                    pulled < pushed.layer_size / 4,
                    "{format:?}: lazy pull fetched {pulled} of {}",
                    pushed.layer_size
                );
            } else {
                assert_eq!(layer.state, "local", "{format:?}");
            }
            let tree = served_tree(&store, &reference);
            for hidden in [
                estargz::TOC_TAR_NAME,
                estargz::PREFETCH_LANDMARK,
                estargz::NO_PREFETCH_LANDMARK,
            ] {
                assert!(
                    !tree.contains_key(hidden),
                    "{format:?} lazy={lazy} shows {hidden}"
                );
            }
            for f in tar_files() {
                let shown = tree
                    .get(f.path)
                    .unwrap_or_else(|| panic!("{format:?} lazy={lazy}: no {}", f.path));
                assert!(
                    shown.10 == f.data,
                    "{format:?} lazy={lazy}: bytes of {}",
                    f.path
                );
                assert_eq!(
                    (shown.1, shown.2, shown.3),
                    (0o640, 1000, 100),
                    "{}",
                    f.path
                );
            }
            assert_eq!(tree["etc/xattr-file"].9["user.skiff"], b"value\x00\x01");
            assert_eq!(tree["etc/link"].6, "hello.txt");
            assert_eq!(tree["etc/hardlink"].0, FileKind::Hardlink);
            assert_eq!((tree["dev/loop0"].7, tree["dev/loop0"].8), (7, 0));
            trees.push(((format, lazy), tree));
        }
    }
    let (first, reference) = &trees[0];
    for (which, tree) in &trees[1..] {
        let paths: Vec<_> = tree.keys().collect();
        let want: Vec<_> = reference.keys().collect();
        assert_eq!(paths, want, "{which:?} vs {first:?}: paths");
        for (p, shown) in tree {
            assert!(
                shown == &reference[p],
                "{which:?} vs {first:?}: {p} differs"
            );
        }
    }
}

#[test]
fn corrupt_chunk_fails_the_read_in_every_format() {
    require!(
        "corrupt_chunk_fails_the_read_in_every_format",
        registry_unavailable()
    );
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let tar = build_tar();
    let want = data(1, 1_300_000);
    for format in FORMATS {
        let w = write(format, &tar);
        let repo = format!("corrupt/{}", format.name().replace(':', "-"));
        let pushed = push(&rt, &registry, &repo, &w);
        let index = open_lazily(&rt, &pushed, &w);
        let big = index
            .entries
            .iter()
            .find(|e| e.path == "usr/lib/big.bin")
            .unwrap();
        assert!(
            big.chunks.len() >= 3,
            "{format:?}: {} chunks",
            big.chunks.len()
        );
        let ChunkLocation::Compressed {
            blob_offset,
            blob_len,
            digest,
            ..
        } = big.chunks[2].location.clone()
        else {
            unreachable!()
        };
        // Flip bytes inside chunk 2's compressed bytes, in the registry's own storage.
        let path = registry.blob_path(&pushed.layer_digest);
        let mut bytes = std::fs::read(&path).unwrap();
        for k in [blob_len / 3, blob_len / 2, 2 * blob_len / 3] {
            bytes[(blob_offset + k) as usize] ^= 0x55;
        }
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ChunkCacheConfig::new(dir.path());
        cfg.retry = quick_retry();
        let cache = ChunkCache::open(cfg).unwrap();
        let source: Arc<dyn BlobSource> = registry_source(&rt, &pushed);
        cache.register_layer(&pushed.layer_digest, source);
        let mut buf = vec![0u8; 1_300_000];
        let err = cache
            .read_at(&index.digest, &big.chunks, 0, &mut buf)
            .unwrap_err();
        match &err {
            StoreError::ChunkCorrupt {
                chunk_digest,
                offset,
                ..
            } => {
                assert_eq!(chunk_digest, &digest, "{format:?}");
                assert_eq!(*offset, blob_offset, "{format:?}");
            }
            e => panic!("{format:?}: expected ChunkCorrupt, got {e}"),
        }
        // Nothing of the bad chunk was kept; the intact chunks before it read right.
        assert_eq!(cache.stored_place(&digest).unwrap(), None, "{format:?}");
        let start = big.chunks[2].file_offset as usize;
        let n = cache
            .read_at(&index.digest, &big.chunks, 0, &mut buf[..start])
            .unwrap();
        assert_eq!(n, start);
        assert!(
            buf[..n] == want[..n],
            "{format:?}: intact chunks read wrong"
        );
    }
}

#[test]
fn toc_that_does_not_verify_falls_back_to_a_full_pull_in_every_format() {
    require!(
        "toc_that_does_not_verify_falls_back_to_a_full_pull_in_every_format",
        registry_unavailable()
    );
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let tar = build_tar();
    for format in FORMATS {
        let mut w = write(format, &tar);
        // The manifest pins another TOC than the blob carries.
        let key = match format {
            Format::ZstdChunked => chunked::footer::MANIFEST_CHECKSUM_KEY,
            Format::Estargz => estargz::TOC_DIGEST_ANNOTATION,
        };
        w.annotations.insert(key.into(), sha256(b"another TOC"));
        let repo = format!("lying/{}", format.name().replace(':', "-"));
        let pushed = push(&rt, &registry, &repo, &w);
        let desc = LayerDescriptor {
            digest: pushed.layer_digest.clone(),
            media_type: w.media_type.into(),
            size: pushed.layer_size,
            annotations: pushed.annotations.clone(),
        };
        let claimed = lazy_format::detect(&desc).expect("claimed");
        assert_eq!(claimed.name(), format.name());
        let err = claimed
            .open(
                registry_source(&rt, &pushed).as_ref(),
                &desc,
                &quick_retry(),
            )
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::DigestMismatch { what, .. } if what.contains(&pushed.layer_digest)),
            "{format:?}: {err}"
        );
        assert!(lazy_format::is_content_error(&err));
        // The pull refuses the TOC, logs it, and pulls the layer in full (verified by its
        // digest): the same files, nothing of the format's own.
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path(), true);
        let reference = pushed.reference.whole();
        let img = rt.block_on(store.pull(&reference, QUIET)).unwrap();
        assert_eq!(img.layers[0].state, "local", "{format:?}");
        let tree = served_tree(&store, &reference);
        assert!(
            tree["usr/lib/big.bin"].10 == data(1, 1_300_000),
            "{format:?}"
        );
        assert!(!tree.contains_key(estargz::TOC_TAR_NAME), "{format:?}");
        assert!(!tree.contains_key(estargz::PREFETCH_LANDMARK), "{format:?}");
    }
}

#[test]
fn estargz_prefetch_landmark_region_is_fetched_after_the_pull() {
    require!(
        "estargz_prefetch_landmark_region_is_fetched_after_the_pull",
        registry_unavailable()
    );
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let tar = build_tar();
    // "./", "etc/", etc/hello.txt and usr/lib/big.bin come before the landmark.
    let mut blob = Vec::new();
    let opts = estargz::WriterOptions {
        chunk_size: 256 << 10,
        landmark: estargz::Landmark::PrefetchAfter(4),
        ..Default::default()
    };
    let l = estargz::write_estargz(&tar, &mut blob, &opts).unwrap();
    let w = Written {
        blob,
        diff_id: l.diff_id,
        annotations: l.annotations,
        media_type: OCI_LAYER_GZIP,
    };
    let pushed = push(&rt, &registry, "landmark/estargz", &w);
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path(), true);
    let reference = pushed.reference.whole();
    rt.block_on(store.pull(&reference, QUIET)).unwrap();
    // hello.txt is one chunk, big.bin five (1.3 MB in 256 KiB chunks): all fetched
    // without a read.
    let t0 = std::time::Instant::now();
    while store.cache_stats().unwrap().chunks < 6 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "prefetch did not happen: {:?}",
            store.cache_stats().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let before = store.cache_stats().unwrap().counters;
    assert_eq!(before.read_chunk_bytes, 0, "no read asked for anything yet");
    let tree = served_tree(&store, &reference);
    assert!(tree["usr/lib/big.bin"].10 == data(1, 1_300_000));
    assert_eq!(tree["etc/hello.txt"].10, b"hello, skiff\n");
    let after = store.cache_stats().unwrap().counters;
    // served_tree read every file: the prefetched ones were hits. Whatever was fetched
    // now belongs to files after the landmark.
    let img = store.image(&reference).unwrap();
    let index = &store.layer_indexes(&img.id).unwrap()[0];
    let prefetched: u64 = index
        .entries
        .iter()
        .filter(|e| e.path == "etc/hello.txt" || e.path == "usr/lib/big.bin")
        .flat_map(|e| e.chunks.iter())
        .map(|c| match &c.location {
            ChunkLocation::Compressed { blob_len, .. } => *blob_len,
            _ => 0,
        })
        .sum();
    assert!(
        after.fetched_bytes - before.fetched_bytes <= pushed.layer_size - prefetched,
        "the landmark region was fetched again: {before:?} -> {after:?}"
    );
    assert!(after.memory_hits + after.disk_hits >= before.memory_hits + before.disk_hits + 6);
}
