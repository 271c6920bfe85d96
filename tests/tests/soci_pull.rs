//! A lazy pull of an unmodified gzip image through its SOCI index, against the real
//! registry: after `skiff image index`, a pull from a fresh store keeps the indexed layer
//! lazy (the small one, which has no zTOC, is pulled in full), fetches a small fraction of
//! the image, and reads the files' exact bytes span by span, also after the store reopens.
//! An index whose zTOC lies makes that layer a full pull, with the same bytes.

mod common;

use std::process::Command;

use skiff_store::content::sha256_digest;
use skiff_store::registry::RegistryClient;
use skiff_store::soci::index::{
    fetch_ztoc, find_index, ANNOTATION_LAYER_DIGEST, ANNOTATION_LAYER_MEDIA_TYPE, SOCI_INDEX_V1,
    ZTOC_MEDIA_TYPE,
};
use skiff_store::{ImageReference, Store, StoreOptions};
use skiff_tests::binary::skiff_bin;
use skiff_tests::fixtures::random_bytes;
use skiff_tests::registry::registry_unavailable;
use skiff_tests::{require, Registry};

use common::{by_path, read_all, QUIET};

fn store_at(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        StoreOptions {
            lazy_pull: true,
            fetch_profiles: false,
            // These tests count what the pull and each read fetch.
            prefetch_program: false,
            ..Default::default()
        },
    )
    .unwrap()
}

/// `skiff image index --span-size 1m REF`, which must succeed.
fn index_image(reference: &str) {
    let out = Command::new(skiff_bin())
        .args(["image", "index", "--span-size", "1m", reference])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn indexed_gzip_image_is_pulled_lazily_and_reads_exact_bytes() {
    require!(
        "indexed_gzip_image_is_pulled_lazily_and_reads_exact_bytes",
        registry_unavailable()
    );
    let registry = Registry::start().unwrap();
    let rt = common::rt();
    let img = common::push_soci_image(&rt, &registry.host(), "soci/lazy");
    index_image(&img.reference);

    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let before = store.bytes_downloaded();
    let pulled = rt.block_on(store.pull(&img.reference, QUIET)).unwrap();
    let pull_bytes = store.bytes_downloaded() - before;
    let states: Vec<(&str, &str)> = pulled
        .layers
        .iter()
        .map(|l| (l.state.as_str(), l.format.as_str()))
        .collect();
    assert_eq!(states, [("local", "tar+gzip"), ("lazy", "soci")]);
    let image_bytes: u64 = pulled.layers.iter().map(|l| l.size).sum();
    eprintln!("pull fetched {pull_bytes} of the image's {image_bytes} layer bytes");
    // The zTOC (14 spans of 32 KiB windows) and the small layer: under 5% of the image.
    assert!(
        pull_bytes * 20 < image_bytes,
        "{pull_bytes} of {image_bytes}"
    );

    let files = by_path(&store.layer_indexes(&pulled.id).unwrap());
    let read_before = store.cache_stats().unwrap().counters.fetched_bytes;
    let wanted = &files["data/wanted.bin"];
    assert!(read_all(&store, &img.layers[1], wanted) == img.wanted);
    let read = store.cache_stats().unwrap().counters.fetched_bytes - read_before;
    eprintln!("reading a 300 KiB file fetched {read} bytes");
    // Exactly its spans, each once: its tar header is checked from the span its first
    // piece came in, not fetched again.
    let mut spans: Vec<(u64, u64)> = wanted
        .chunks
        .iter()
        .map(|c| match c.location {
            skiff_store::layer_index::ChunkLocation::Compressed {
                blob_offset,
                blob_len,
                ..
            } => (blob_offset, blob_len),
            _ => panic!("not a zran piece"),
        })
        .collect();
    spans.dedup();
    assert_eq!(read, spans.iter().map(|s| s.1).sum::<u64>(), "{spans:?}");
    assert!(
        read > 0 && read * 4 < image_bytes,
        "{read} of {image_bytes}"
    );
    // The span fetched for wanted.bin also holds big.bin's end: kept when the span was
    // inflated, it costs no second fetch, even after other spans pushed it out of memory.
    let big = &files["data/big.bin"];
    let last = big.chunks.last().unwrap();
    let span_of = |c: &skiff_store::layer_index::ChunkRef| match c.location {
        skiff_store::layer_index::ChunkLocation::Compressed { blob_offset, .. } => blob_offset,
        _ => panic!("not a zran piece"),
    };
    assert_eq!(
        span_of(last),
        span_of(&wanted.chunks[0]),
        "laid out in one span"
    );
    let reader = store.content_reader();
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..6u64 {
        reader
            .read_at(&img.layers[1], &big.chunks, i << 20, &mut buf)
            .unwrap();
    }
    let before = store.cache_stats().unwrap().counters.fetched_bytes;
    let mut end = vec![0u8; last.len as usize];
    reader
        .read_at(&img.layers[1], &big.chunks, last.file_offset, &mut end)
        .unwrap();
    assert!(end == img.big[last.file_offset as usize..]);
    assert_eq!(store.cache_stats().unwrap().counters.fetched_bytes, before);
    assert!(read_all(&store, &img.layers[1], &files["data/big.bin"]) == img.big);
    assert!(read_all(&store, &img.layers[1], &files["data/tail.bin"]) == img.big[..2 << 20]);
    assert_eq!(
        read_all(&store, &img.layers[0], &files["etc/hello"]),
        b"hello\n"
    );
    let s = store.cache_stats().unwrap().counters;
    assert_eq!(s.corrupt_chunks, 0, "{s:?}");

    // Reopened (the zTOC comes from the layer's directory) with the memory cache gone:
    // pieces come from disk, sealed by their own sha256.
    drop(store);
    let store = store_at(dir.path());
    let again = rt.block_on(store.pull(&img.reference, QUIET)).unwrap();
    assert_eq!(again.layers[1].state, "lazy");
    let before = store.cache_stats().unwrap().counters;
    assert!(read_all(&store, &img.layers[1], wanted) == img.wanted);
    let after = store.cache_stats().unwrap().counters;
    assert_eq!(after.fetched_bytes, before.fetched_bytes, "{after:?}");
    assert!(after.disk_hits > before.disk_hits, "{after:?}");
    assert_eq!(after.corrupt_chunks, 0, "{after:?}");
}

/// Pushes `img`'s genuine index, then one whose zTOC for the big layer is the genuine one
/// changed by `lie`, as the newest index (the one a pull finds).
fn push_lying_index(
    rt: &tokio::runtime::Runtime,
    img: &common::SociImage,
    lie: impl FnOnce(&mut skiff_store::soci::ztoc::Ztoc),
) {
    let client = RegistryClient::new(Default::default());
    let r = ImageReference::parse(&img.reference).unwrap();
    index_image(&img.reference);
    let resolved = rt.block_on(client.resolve_manifest(&r)).unwrap();
    let repo = &resolved.reference;
    let index = rt
        .block_on(find_index(&client, repo, &resolved.manifest_digest))
        .unwrap()
        .unwrap();
    let layer = &resolved.manifest.layers[1];
    let mut ztoc = rt
        .block_on(fetch_ztoc(
            &client,
            repo,
            &layer.digest,
            layer.size,
            &index.ztocs[&layer.digest],
        ))
        .unwrap();
    lie(&mut ztoc);
    let bytes = ztoc.to_bytes();
    let ztoc_digest = sha256_digest(&bytes);
    rt.block_on(client.push_blob(repo, &ztoc_digest, bytes.clone().into()))
        .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": SOCI_INDEX_V1,
        "config": {"mediaType": SOCI_INDEX_V1, "digest": sha256_digest(b"{}"), "size": 2},
        "layers": [{
            "mediaType": ZTOC_MEDIA_TYPE, "digest": ztoc_digest, "size": bytes.len(),
            "annotations": {
                ANNOTATION_LAYER_DIGEST: layer.digest,
                ANNOTATION_LAYER_MEDIA_TYPE: layer.media_type,
            },
        }],
        "subject": {
            "mediaType": resolved.manifest_media_type,
            "digest": resolved.manifest_digest,
            "size": resolved.manifest_bytes.len(),
        },
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    let digest = sha256_digest(&body);
    let pinned = ImageReference {
        tag: None,
        ..repo.with_digest(&digest)
    };
    rt.block_on(client.push_manifest(
        &pinned,
        body.clone().into(),
        "application/vnd.oci.image.manifest.v1+json",
    ))
    .unwrap();
    rt.block_on(client.attach_referrer(
        repo,
        &resolved.manifest_digest,
        &digest,
        body.len(),
        SOCI_INDEX_V1,
    ))
    .unwrap();
    let found = rt
        .block_on(find_index(&client, repo, &resolved.manifest_digest))
        .unwrap()
        .unwrap();
    assert_eq!(found.digest, digest, "the lying index is the newest");
}

#[test]
fn a_lying_ztoc_makes_the_layer_a_full_pull() {
    require!(
        "a_lying_ztoc_makes_the_layer_a_full_pull",
        registry_unavailable()
    );
    let registry = Registry::start().unwrap();
    let rt = common::rt();
    let img = common::push_soci_image(&rt, &registry.host(), "soci/lying");
    // Claims another blob size: refused at pull.
    push_lying_index(&rt, &img, |z| z.compressed_archive_size += 1);

    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let pulled = rt.block_on(store.pull(&img.reference, QUIET)).unwrap();
    assert_eq!(pulled.layers[1].state, "local");
    let files = by_path(&store.layer_indexes(&pulled.id).unwrap());
    assert!(read_all(&store, &img.layers[1], &files["data/wanted.bin"]) == img.wanted);
    assert!(read_all(&store, &img.layers[1], &files["data/big.bin"]) == img.big);
}

/// A checkpoint whose window is not the output before it passes every pull-time check
/// (only inflating the span before it shows the lie): the first read that meets it makes
/// the layer fall back to one whole download, verified against the layer digest, and every
/// byte read is the file's.
#[test]
fn a_checkpoint_that_lies_falls_back_to_the_whole_layer_at_read() {
    require!(
        "a_checkpoint_that_lies_falls_back_to_the_whole_layer_at_read",
        registry_unavailable()
    );
    let registry = Registry::start().unwrap();
    let rt = common::rt();
    let img = common::push_soci_image(&rt, &registry.host(), "soci/badwindow");
    push_lying_index(&rt, &img, |z| {
        let c = &mut z.zinfo.checkpoints[3];
        for b in c.window.iter_mut().rev().take(100) {
            *b ^= 0x5a;
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let pulled = rt.block_on(store.pull(&img.reference, QUIET)).unwrap();
    assert_eq!(
        pulled.layers[1].state, "lazy",
        "the lie is not visible at pull"
    );
    let files = by_path(&store.layer_indexes(&pulled.id).unwrap());
    let before = store.cache_stats().unwrap().counters;
    assert!(read_all(&store, &img.layers[1], &files["data/big.bin"]) == img.big);
    assert!(read_all(&store, &img.layers[1], &files["data/wanted.bin"]) == img.wanted);
    assert!(read_all(&store, &img.layers[1], &files["data/tail.bin"]) == img.big[..2 << 20]);
    let after = store.cache_stats().unwrap().counters;
    let layer_size = pulled.layers[1].size;
    assert!(
        after.corrupt_chunks > before.corrupt_chunks,
        "the lying span was seen: {after:?}"
    );
    assert!(
        after.fetched_bytes - before.fetched_bytes >= layer_size,
        "the whole layer ({layer_size} bytes) was fetched: {after:?}"
    );
}

/// A zTOC whose file table lies (two files' names swapped) and whose checkpoint lies: the
/// whole-layer fallback checks the table against the real tar headers and refuses the
/// layer, so no read of it serves another file's bytes.
#[test]
fn a_file_table_that_lies_refuses_the_layer_at_fallback() {
    require!(
        "a_file_table_that_lies_refuses_the_layer_at_fallback",
        registry_unavailable()
    );
    let registry = Registry::start().unwrap();
    let rt = common::rt();
    let img = common::push_soci_image(&rt, &registry.host(), "soci/badtable");
    push_lying_index(&rt, &img, |z| {
        for b in z.zinfo.checkpoints[3].window.iter_mut().rev().take(100) {
            *b ^= 0x5a;
        }
        let pos = |n: &[u8]| z.files.iter().position(|f| f.name.ends_with(n)).unwrap();
        let (a, b) = (pos(b"data/wanted.bin"), pos(b"data/tail.bin"));
        let name_a = z.files[a].name.clone();
        z.files[a].name = z.files[b].name.clone();
        z.files[b].name = name_a;
    });

    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let pulled = rt.block_on(store.pull(&img.reference, QUIET)).unwrap();
    assert_eq!(
        pulled.layers[1].state, "lazy",
        "the lie is not visible at pull"
    );
    let files = by_path(&store.layer_indexes(&pulled.id).unwrap());
    let reader = store.content_reader();
    let read = |path: &str| {
        let e = &files[path];
        let mut buf = vec![0u8; e.size as usize];
        let mut off = 0;
        while off < buf.len() {
            let end = (off + (1 << 20)).min(buf.len());
            match reader.read_at(&img.layers[1], &e.chunks, off as u64, &mut buf[off..end]) {
                Ok(n) => off += n,
                Err(err) => return Err(err.to_string()),
            }
        }
        Ok(buf)
    };
    let err = read("data/big.bin").unwrap_err();
    assert!(err.contains("is not the layer's"), "{err}");
    // Named wanted.bin by the lie, it is tail.bin's bytes: refused, not served.
    let err = read("data/wanted.bin").unwrap_err();
    assert!(err.contains("is not the layer's"), "{err}");
}

/// A zTOC whose spans are all the layer's but whose file table swaps two names: every span
/// verifies, so only the tar header before each file shows the lie. The first read of
/// either file refuses the layer; no read returns the other file's bytes.
#[test]
fn a_file_table_that_lies_with_true_spans_is_refused_at_first_read() {
    require!(
        "a_file_table_that_lies_with_true_spans_is_refused_at_first_read",
        registry_unavailable()
    );
    let registry = Registry::start().unwrap();
    let rt = common::rt();
    let img = common::push_soci_image(&rt, &registry.host(), "soci/swapped");
    push_lying_index(&rt, &img, |z| {
        let pos = |n: &[u8]| z.files.iter().position(|f| f.name.ends_with(n)).unwrap();
        let (a, b) = (pos(b"data/wanted.bin"), pos(b"data/tail.bin"));
        let name_a = z.files[a].name.clone();
        z.files[a].name = z.files[b].name.clone();
        z.files[b].name = name_a;
    });

    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let pulled = rt.block_on(store.pull(&img.reference, QUIET)).unwrap();
    assert_eq!(pulled.layers[1].state, "lazy");
    let files = by_path(&store.layer_indexes(&pulled.id).unwrap());
    let reader = store.content_reader();
    // Named tail.bin by the lie, it holds wanted.bin's bytes.
    let e = &files["data/tail.bin"];
    let mut buf = vec![0u8; 4096];
    let err = reader
        .read_at(&img.layers[1], &e.chunks, 0, &mut buf)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not the layer's"), "{err}");
    assert!(
        err.contains("the tar header names data/wanted.bin"),
        "{err}"
    );
    // The layer stays refused, big.bin (told truly) included.
    let big = &files["data/big.bin"];
    let err = reader
        .read_at(&img.layers[1], &big.chunks, 0, &mut buf)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not the layer's"), "{err}");
}

#[test]
fn daemon_runs_an_indexed_gzip_image_lazily() {
    require!(
        "daemon_runs_an_indexed_gzip_image_lazily",
        skiff_tests::skip::root_unavailable(),
        registry_unavailable()
    );
    use sha2::Digest;
    let registry = Registry::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    skiff_tests::fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let big = random_bytes(12 << 20, 41);
    std::fs::write(rootfs.path().join("data/big"), &big).unwrap();
    let image = format!("{}/soci/run:gzip", registry.host());
    {
        let d = skiff_tests::Daemon::start().unwrap();
        d.ok(&["image", "import", rootfs.path().to_str().unwrap(), &image]);
        d.ok(&["push", &image]);
    }
    index_image(&image);
    let layer_size = {
        let client = RegistryClient::new(Default::default());
        let resolved = common::rt()
            .block_on(client.resolve_manifest(&ImageReference::parse(&image).unwrap()))
            .unwrap();
        assert_eq!(resolved.manifest.layers.len(), 1);
        resolved.manifest.layers[0].clone()
    };

    let proxy = skiff_tests::CountingProxy::start(&registry.host()).unwrap();
    let via_proxy = format!("{}/soci/run:gzip", proxy.host());
    let d = skiff_tests::Daemon::start().unwrap();
    d.ok(&["pull", &via_proxy]);
    // Bytes of the layer read so far, by range only (never a whole-blob GET).
    let ranged = || -> u64 {
        let gets: Vec<_> = proxy
            .requests()
            .into_iter()
            .filter(|q| q.method == "GET" && q.path.ends_with(&layer_size.digest))
            .collect();
        assert!(
            gets.iter().all(|q| q.range.is_some()),
            "a whole-blob GET: {gets:?}"
        );
        gets.iter()
            .filter_map(|q| q.range.as_deref())
            .map(|range| {
                let (a, b) = range.trim_start_matches("bytes=").split_once('-').unwrap();
                b.parse::<u64>().unwrap() + 1 - a.parse::<u64>().unwrap()
            })
            .sum()
    };
    let out = d.ok(&["run", "--rm", &via_proxy, "cat", "/etc/passwd"]);
    assert!(out.contains("root:"), "{out}");
    let small = ranged();
    eprintln!(
        "pull + run cat /etc/passwd read {small} of the layer's {} bytes",
        layer_size.size
    );
    assert!(small > 0 && small * 4 < layer_size.size, "{small}");
    let out = d.ok(&["run", "--rm", &via_proxy, "sha256sum", "/data/big"]);
    assert_eq!(
        out.split_whitespace().next(),
        Some(hex::encode(sha2::Sha256::digest(&big)).as_str())
    );
    // Spans shared by several files are fetched once.
    let all = ranged();
    eprintln!("then sha256sum /data/big: {all} bytes in all");
    assert!(
        all <= layer_size.size,
        "{all} of {}: {}",
        layer_size.size,
        d.log_text()
    );
    assert!(
        !d.log_text().contains("pulling the layer in full"),
        "{}",
        d.log_text()
    );
}
