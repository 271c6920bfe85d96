//! zstd:chunked under failure: registry outages, corrupt blob bytes, corrupt cache files,
//! hostile or lying TOCs and footers, and a full disk.

mod chunked_support;

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;

use chunked_support::*;
use skiff_store::cache::{ChunkCache, ChunkCacheConfig};
use skiff_store::chunked::{self, footer, BlobSource, FileBlobSource};
use skiff_store::{ChunkLocation, ContentReader, FileEntry, LayerIndex, StoreError};
use skiff_tests::skip::root_unavailable;
use skiff_tests::{registry::registry_unavailable, require, Registry};

fn entry<'a>(index: &'a LayerIndex, path: &str) -> &'a FileEntry {
    index.entries.iter().find(|e| e.path == path).unwrap()
}

fn setup(
    rt: &tokio::runtime::Runtime,
    registry: &Registry,
    repo: &str,
) -> (Pushed, LayerIndex, Arc<dyn BlobSource>) {
    let (_tar, _blob, pushed) = converted_image(rt, registry, repo).unwrap();
    let source: Arc<dyn BlobSource> = registry_source(rt, &pushed);
    let (index, _) = chunked::open_lazy_layer(
        source.as_ref(),
        &pushed.layer_digest,
        &pushed.annotations,
        &quick_retry(),
    )
    .unwrap();
    (pushed, index, source)
}

fn cache_at(dir: &std::path::Path) -> ChunkCache {
    let mut cfg = ChunkCacheConfig::new(dir);
    cfg.retry = quick_retry();
    ChunkCache::open(cfg).unwrap()
}

#[test]
fn registry_outage_fails_reads_then_recovers() {
    require!(
        "registry_outage_fails_reads_then_recovers",
        registry_unavailable()
    );
    let rt = runtime();
    let mut registry = Registry::start().unwrap();
    let (pushed, index, source) = setup(&rt, &registry, "faults/outage");
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(dir.path());
    cache.register_layer(&pushed.layer_digest, source);
    let big = entry(&index, "usr/lib/big.bin");
    let want = data(1, 1_300_000);
    let mut buf = vec![0u8; 100_000];
    // The first part reads fine; then the registry goes away mid-file.
    assert_eq!(
        cache
            .read_at(&index.digest, &big.chunks, 0, &mut buf)
            .unwrap(),
        100_000
    );
    assert_eq!(&buf[..], &want[..100_000]);
    registry.stop().unwrap();
    let started = std::time::Instant::now();
    let err = cache
        .read_at(&index.digest, &big.chunks, 600_000, &mut buf)
        .unwrap_err();
    assert!(matches!(err, StoreError::BlobFetch { .. }), "{err}");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(100),
        "no backoff"
    );
    assert_eq!(cache.stats().fetch_errors, 1);
    // Cached bytes still read while the registry is down.
    assert_eq!(
        cache
            .read_at(&index.digest, &big.chunks, 10, &mut buf)
            .unwrap(),
        100_000
    );
    assert_eq!(&buf[..], &want[10..100_010]);
    registry.restart().unwrap();
    assert_eq!(
        cache
            .read_at(&index.digest, &big.chunks, 600_000, &mut buf)
            .unwrap(),
        100_000
    );
    assert_eq!(&buf[..], &want[600_000..700_000]);
}

#[test]
fn corrupt_blob_bytes_are_never_served() {
    require!(
        "corrupt_blob_bytes_are_never_served",
        registry_unavailable()
    );
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let (pushed, index, source) = setup(&rt, &registry, "faults/corrupt");
    let big = entry(&index, "usr/lib/big.bin");
    let ChunkLocation::Compressed {
        blob_offset,
        blob_len,
        digest,
        ..
    } = big.chunks[2].location.clone()
    else {
        unreachable!()
    };
    // Flip bytes inside chunk 2's frame, in the registry's own storage.
    let path = registry.blob_path(&pushed.layer_digest);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    for k in [blob_len / 3, blob_len / 2, 2 * blob_len / 3] {
        bytes[(blob_offset + k) as usize] ^= 0x55;
    }
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(&bytes).unwrap();
    drop(f);

    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(dir.path());
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
            assert_eq!(chunk_digest, &digest);
            assert_eq!(*offset, blob_offset);
        }
        e => panic!("expected ChunkCorrupt, got {e}"),
    }
    assert_eq!(
        cache.stats().corrupt_chunks,
        2,
        "verified, fetched again, verified"
    );
    assert_eq!(cache.stored_place(&digest).unwrap(), None, "nothing kept");
    // Reads of intact chunks still work, and are right.
    let want = data(1, 1_300_000);
    let n = cache
        .read_at(&index.digest, &big.chunks, 0, &mut buf[..500_000])
        .unwrap();
    assert_eq!(&buf[..n], &want[..n]);
    let again = cache.read_at(&index.digest, &big.chunks, 600_000, &mut buf[..10]);
    assert!(again.is_err(), "a corrupt chunk stays an error");
}

#[test]
fn tampered_cache_file_is_detected_and_refetched() {
    require!(
        "tampered_cache_file_is_detected_and_refetched",
        registry_unavailable()
    );
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let (pushed, index, source) = setup(&rt, &registry, "faults/tamper");
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(dir.path());
    cache.register_layer(&pushed.layer_digest, source);
    let med = entry(&index, "usr/lib/medium.bin");
    let mut buf = vec![0u8; 300_000];
    cache
        .read_at(&index.digest, &med.chunks, 0, &mut buf)
        .unwrap();
    let ChunkLocation::Compressed { digest, .. } = &med.chunks[0].location else {
        unreachable!()
    };
    let (file, offset, len) = cache.stored_place(digest).unwrap().expect("stored");
    assert!(
        file.starts_with(dir.path().join("packs")),
        "{}",
        file.display()
    );
    let stored = |file: &std::path::Path, offset: u64, len: u64| {
        let bytes = std::fs::read(file).unwrap();
        bytes[offset as usize..(offset + len) as usize].to_vec()
    };
    let good = stored(&file, offset, len);
    // Flip one byte of the chunk inside its pack.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(&[good[100] ^ 1], offset + 100).unwrap();
    }
    cache.clear_memory();
    buf.fill(0);
    cache
        .read_at(&index.digest, &med.chunks, 0, &mut buf)
        .unwrap();
    assert!(buf == data(2, 300_000));
    assert_eq!(cache.stats().corrupt_chunks, 1);
    let (file, offset, len) = cache.stored_place(digest).unwrap().expect("stored again");
    assert_eq!(stored(&file, offset, len), good, "repaired on disk");
}

/// A blob with `toc_json` as its TOC (current format), and annotations pinning it.
fn blob_with_toc(toc_json: &[u8]) -> (Vec<u8>, BTreeMap<String, String>) {
    let mut blob = zstd::bulk::compress(&[0u8; 1024], 3).unwrap();
    let file_frame = zstd::bulk::compress(b"payload", 3).unwrap();
    blob.extend_from_slice(&file_frame);
    let toc_z = zstd::bulk::compress(toc_json, 3).unwrap();
    let offset = blob.len() as u64 + 8;
    blob.extend_from_slice(&footer::SKIPPABLE_FRAME_MAGIC);
    blob.extend_from_slice(&(toc_z.len() as u32).to_le_bytes());
    blob.extend_from_slice(&toc_z);
    let loc = footer::TocLocation {
        format: chunked::ChunkedFormat::Current,
        offset,
        compressed_len: toc_z.len() as u64,
        uncompressed_len: toc_json.len() as u64,
        checksum: None,
        tarsplit: None,
    };
    blob.extend_from_slice(&footer::encode_footer(&loc));
    let ann = chunked::writer::layer_annotations(&loc, &sha256(&toc_z));
    (blob, ann)
}

#[test]
fn hostile_tocs_are_refused_over_the_registry() {
    require!(
        "hostile_tocs_are_refused_over_the_registry",
        registry_unavailable()
    );
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let d = sha256(b"payload");
    let cases: Vec<(&str, String)> = vec![
        (
            "dotdot",
            format!(
                r#"{{"version":1,"entries":[{{"type":"reg","name":"../../etc/passwd","size":7,"offset":9,"endOffset":25,"digest":"{d}"}}]}}"#
            ),
        ),
        // (A repeated name is not hostile: tar allows it and the later entry wins; see
        // docs/layers.md. The TOC keeps it as the tar reader does.)
        (
            "past-end",
            format!(
                r#"{{"version":1,"entries":[{{"type":"reg","name":"f","size":7,"offset":9,"endOffset":999999,"digest":"{d}"}}]}}"#
            ),
        ),
        (
            "overflow",
            format!(
                r#"{{"version":1,"entries":[{{"type":"reg","name":"f","size":7,"offset":9223372036854775807,"endOffset":9,"digest":"{d}"}}]}}"#
            ),
        ),
        (
            "gap",
            format!(
                r#"{{"version":1,"entries":[{{"type":"reg","name":"f","size":7,"offset":9,"endOffset":25,"chunkSize":3,"digest":"{d}","chunkDigest":"{d}"}},{{"type":"chunk","name":"f","chunkOffset":4,"chunkSize":3,"offset":15,"chunkDigest":"{d}"}}]}}"#
            ),
        ),
        ("not-json", "{\"version\":1,\"entries\":[".to_string()),
        (
            "unknown-type",
            r#"{"version":1,"entries":[{"type":"socket","name":"s"}]}"#.to_string(),
        ),
    ];
    for (name, toc) in cases {
        let (blob, ann) = blob_with_toc(toc.as_bytes());
        let pushed = rt
            .block_on(push_image(
                &registry,
                &format!("hostile/{name}"),
                &blob,
                &sha256(b""),
                ann,
            ))
            .unwrap();
        let source = registry_source(&rt, &pushed);
        let err = chunked::open_lazy_layer(
            source.as_ref(),
            &pushed.layer_digest,
            &pushed.annotations,
            &quick_retry(),
        )
        .unwrap_err();
        match &err {
            StoreError::InvalidToc { layer, .. } => {
                assert_eq!(layer, &pushed.layer_digest, "{name}")
            }
            e => panic!("{name}: expected InvalidToc, got {e}"),
        }
    }
}

#[test]
fn toc_checksum_and_footer_are_checked() {
    require!(
        "toc_checksum_and_footer_are_checked",
        registry_unavailable()
    );
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let (_tar, blob, pushed) = converted_image(&rt, &registry, "faults/pin").unwrap();
    let source = registry_source(&rt, &pushed);
    // A manifest pinning another TOC.
    let mut ann = pushed.annotations.clone();
    ann.insert(footer::MANIFEST_CHECKSUM_KEY.into(), sha256(b"other"));
    let err = chunked::open_lazy_layer(source.as_ref(), &pushed.layer_digest, &ann, &quick_retry())
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    // No annotations: the footer locates the TOC, which is then not pinned.
    let (index, info) = chunked::open_lazy_layer(
        source.as_ref(),
        &pushed.layer_digest,
        &BTreeMap::new(),
        &quick_retry(),
    )
    .unwrap();
    assert!(!info.verified);
    assert!(index.entries.iter().any(|e| e.path == "usr/lib/big.bin"));
    // A footer that lies about the TOC's position or size.
    let dir = tempfile::tempdir().unwrap();
    let n = blob.len();
    for (field, value) in [(0usize, n as u64 * 2), (1, 1 << 40), (2, 1 << 40), (1, 3)] {
        let mut bad = blob.clone();
        let at = n - 64 + field * 8;
        bad[at..at + 8].copy_from_slice(&value.to_le_bytes());
        let p = dir.path().join(format!("bad{field}-{value}"));
        std::fs::write(&p, &bad).unwrap();
        let src = FileBlobSource::open(&p, sha256(&bad)).unwrap();
        let err = chunked::open_lazy_layer(&src, src.digest(), &BTreeMap::new(), &quick_retry())
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidToc { .. }),
            "field {field}: {err}"
        );
    }
    // A footer stating one byte more or less than the TOC decompresses to.
    let at = n - 64 + 2 * 8;
    let stated = u64::from_le_bytes(blob[at..at + 8].try_into().unwrap());
    for value in [stated - 1, stated + 1] {
        let mut bad = blob.clone();
        bad[at..at + 8].copy_from_slice(&value.to_le_bytes());
        let p = dir.path().join(format!("len-{value}"));
        std::fs::write(&p, &bad).unwrap();
        let src = FileBlobSource::open(&p, sha256(&bad)).unwrap();
        let err = chunked::open_lazy_layer(&src, src.digest(), &BTreeMap::new(), &quick_retry())
            .unwrap_err();
        match &err {
            StoreError::InvalidToc { reason, .. } => {
                assert!(reason.contains("TOC decompress"), "{value}: {reason}")
            }
            e => panic!("stated {value} of {stated}: {e}"),
        }
    }
}

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .unwrap();
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // No panic here: this may run while a failed test unwinds.
        if let Err(e) = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("unmounting {}: {e}", self.0.path().display());
        }
    }
}

fn check_cache_files(root: &std::path::Path) {
    assert_eq!(
        std::fs::read_dir(root.join("tmp")).unwrap().count(),
        0,
        "tmp files left"
    );
    assert!(!root.join("sha256").exists(), "no per-chunk files");
}

/// Every chunk `cache` has on record reads back from its pack with its own digest.
fn check_stored_chunks(cache: &ChunkCache, index: &LayerIndex) {
    let mut checked = 0;
    for c in index.entries.iter().flat_map(|e| &e.chunks) {
        let ChunkLocation::Compressed { digest, .. } = &c.location else {
            continue;
        };
        if let Some((file, offset, len)) = cache.stored_place(digest).unwrap() {
            let bytes = std::fs::read(&file).unwrap();
            let stored = &bytes[offset as usize..(offset + len) as usize];
            assert_eq!(&sha256(stored), digest, "torn or wrong chunk in a pack");
            checked += 1;
        }
    }
    assert!(checked > 0, "some chunks are stored");
}

#[test]
fn the_cache_leaves_room_on_a_small_filesystem() {
    require!(
        "the_cache_leaves_room_on_a_small_filesystem",
        registry_unavailable(),
        root_unavailable()
    );
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let (pushed, index, source) = setup(&rt, &registry, "faults/room");
    // 2 MiB: the layer's files (1.9 MB) fit in it, but not with a tenth of it left free.
    let fs = Tmpfs::mount("2m");
    let root = fs.0.path().to_path_buf();
    let avail = || {
        let st = nix::sys::statvfs::statvfs(&root).unwrap();
        st.blocks_available() as u64 * st.fragment_size() as u64
    };
    {
        let mut cfg = ChunkCacheConfig::new(&root);
        cfg.memory_chunks = 1;
        cfg.budget_bytes = 1 << 30; // only the filesystem limits it
        let cache = ChunkCache::open(cfg).unwrap();
        cache.register_layer(&pushed.layer_digest, source);
        let reserve = (2u64 << 20) / skiff_store::cache::RESERVE_SHARE;
        for round in 0..2 {
            for f in tar_files() {
                let got = read_all(&cache, &index, f.path, 64 << 10);
                assert!(got == f.data, "round {round}: {} differs", f.path);
                // Room for others: what the cache took beyond the reserve it gave back
                // (half of it, for cache.db's own pages and block rounding).
                assert!(
                    avail() >= reserve / 2,
                    "{} bytes free after reading {} (cache {})",
                    avail(),
                    f.path,
                    cache.disk_usage()
                );
            }
        }
        assert!(cache.stats().evicted_chunks > 0, "it evicted to leave room");
        check_stored_chunks(&cache, &index);
    }
    drop(fs);
}

#[test]
fn full_disk_evicts_then_fails_cleanly() {
    require!(
        "full_disk_evicts_then_fails_cleanly",
        registry_unavailable(),
        root_unavailable()
    );
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let (pushed, index, source) = setup(&rt, &registry, "faults/enospc");
    let fs = Tmpfs::mount("1m");
    let root = fs.0.path().to_path_buf();
    {
        let mut cfg = ChunkCacheConfig::new(&root);
        cfg.memory_chunks = 1;
        cfg.budget_bytes = 1 << 30; // only the full disk limits it
        let cache = ChunkCache::open(cfg).unwrap();
        cache.register_layer(&pushed.layer_digest, source);
        for f in tar_files() {
            let got = read_all(&cache, &index, f.path, 64 << 10);
            assert!(got == f.data, "{} differs", f.path);
        }
        assert!(
            cache.stats().evicted_chunks > 0,
            "the full disk forced evictions"
        );
        check_cache_files(&root);
        check_stored_chunks(&cache, &index);
        // One read that needs more than the whole disk holds: an error, nothing torn.
        cache.clear_memory();
        let big = entry(&index, "usr/lib/big.bin");
        let mut buf = vec![0u8; 1_300_000];
        let err = cache
            .read_at(&index.digest, &big.chunks, 0, &mut buf)
            .unwrap_err();
        match &err {
            StoreError::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::ENOSPC)),
            e => panic!("expected ENOSPC, got {e}"),
        }
        check_cache_files(&root);
        // Smaller reads work again.
        let n = cache
            .read_at(&index.digest, &big.chunks, 1_000_000, &mut buf[..1000])
            .unwrap();
        assert_eq!(&buf[..n], &data(1, 1_300_000)[1_000_000..1_001_000]);
    }
    drop(fs);
}
