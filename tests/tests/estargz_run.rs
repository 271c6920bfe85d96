//! An eStargz image end to end: a busybox root filesystem written as eStargz by skiff's own
//! writer, pushed to a real registry, pulled by a real daemon through a counting relay (only
//! the footer and TOC come with the pull), and run: file bytes come through FUSE, lazily,
//! and the writer's landmark and TOC files are not in the container's root.

mod chunked_support;

use chunked_support::{push_image_as, runtime, sha256};
use sha2::{Digest, Sha256};
use skiff_store::chunked::{BlobSource, FileBlobSource, RetryPolicy};
use skiff_store::layer::compression::OCI_LAYER_GZIP;
use skiff_store::lazy_format::{LayerDescriptor, LazyFormat, Opened};
use skiff_store::{estargz, ChunkLocation, Compression};
use skiff_tests::counting_proxy::CountingProxy;
use skiff_tests::fixtures::{self, busybox_unavailable};
use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon, Registry};

/// `(first, last)` byte of a `Range: bytes=a-b` header.
fn range(r: &str) -> (u64, u64) {
    let (a, b) = r.trim_start_matches("bytes=").split_once('-').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

#[test]
fn estargz_image_pulls_only_its_toc_and_runs_lazily() {
    require!(
        "estargz_image_pulls_only_its_toc_and_runs_lazily",
        root_unavailable(),
        registry_unavailable(),
        busybox_unavailable()
    );
    let registry = Registry::start().unwrap();
    let rt = runtime();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let big = fixtures::random_bytes(4 << 20, 18);
    std::fs::write(rootfs.path().join("data/big"), &big).unwrap();

    // The layer tar as skiff's import writes it (pushed uncompressed, read back from the
    // registry's storage), then written as eStargz.
    rt.block_on(fixtures::push_rootfs(
        rootfs.path(),
        &registry.host(),
        "estgz/src:tar",
        &fixtures::busybox_changes(),
        Compression::None,
    ))
    .unwrap();
    let client = skiff_store::RegistryClient::new(Default::default());
    let src =
        skiff_store::ImageReference::parse(&format!("{}/estgz/src:tar", registry.host())).unwrap();
    let resolved = rt.block_on(client.resolve(&src)).unwrap();
    let tar = std::fs::read(registry.blob_path(&resolved.manifest.layers[0].digest)).unwrap();
    let mut blob = Vec::new();
    let opts = estargz::WriterOptions {
        landmark: estargz::Landmark::NoPrefetch,
        ..Default::default()
    };
    let layer = estargz::write_estargz(&tar, &mut blob, &opts).unwrap();
    rt.block_on(push_image_as(
        &registry,
        "estgz/run",
        &blob,
        &layer.diff_id,
        layer.annotations.clone(),
        OCI_LAYER_GZIP,
    ))
    .unwrap();
    assert_eq!(layer.digest, sha256(&blob));
    let size = blob.len() as u64;

    // Where data/big's chunks are in the blob (read from the local copy).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blob"), &blob).unwrap();
    let local = FileBlobSource::open(dir.path().join("blob"), &layer.digest).unwrap();
    let desc = LayerDescriptor {
        digest: layer.digest.clone(),
        media_type: OCI_LAYER_GZIP.into(),
        size: local.size(),
        annotations: layer.annotations.clone(),
    };
    let Opened::Lazy(opened) = estargz::Estargz
        .open(&local, &desc, &RetryPolicy::default())
        .unwrap()
    else {
        panic!("not lazy")
    };
    let big_entry = opened
        .index
        .entries
        .iter()
        .find(|e| e.path == "data/big")
        .unwrap();
    let big_ranges: Vec<(u64, u64)> = big_entry
        .chunks
        .iter()
        .map(|c| match &c.location {
            ChunkLocation::Compressed {
                blob_offset,
                blob_len,
                ..
            } => (*blob_offset, blob_offset + blob_len - 1),
            _ => panic!("local chunk"),
        })
        .collect();
    let touches_big = |(a, b): (u64, u64)| big_ranges.iter().any(|&(lo, hi)| a <= hi && b >= lo);

    let proxy = CountingProxy::start(&registry.host()).unwrap();
    let image = format!("{}/estgz/run:latest", proxy.host());
    let d = Daemon::start().unwrap();
    d.ok(&["pull", &image]);
    let blob_ranges = || -> Vec<(u64, u64)> {
        proxy
            .requests()
            .iter()
            .filter(|r| r.path.contains(&layer.digest))
            .map(|r| range(r.range.as_deref().expect("a ranged blob request")))
            .collect()
    };
    let pulled = blob_ranges();
    // The pull read the footer and the TOC: one request from the blob's end (the TOC fits
    // in the first read of the tail, or one more request before it). Other requests are
    // the etc/passwd and etc/group chunks every create reads, fetched after the pull.
    let tail_start = size - estargz::TAIL_GUESS.min(size);
    let toc_reads: Vec<_> = pulled
        .iter()
        .filter(|&&(a, b)| b == size - 1 || (a == layer.toc_offset && b + 1 == tail_start))
        .collect();
    assert!(
        toc_reads.iter().any(|&&(_, b)| b == size - 1) && toc_reads.len() <= 2,
        "{pulled:?} (TOC at {}, blob {size})",
        layer.toc_offset
    );
    let toc_bytes: u64 = toc_reads.iter().map(|(a, b)| b - a + 1).sum();
    assert!(
        toc_bytes <= estargz::TAIL_GUESS.max(size - layer.toc_offset),
        "{toc_bytes} bytes for a TOC at {} of {size}",
        layer.toc_offset
    );
    assert!(
        !pulled.iter().any(|&r| touches_big(r)),
        "the pull fetched data/big: {pulled:?}"
    );

    let out = d.ok(&[
        "run",
        "--rm",
        &image,
        "/bin/sh",
        "-c",
        "/bin/sha256sum /data/big; /bin/ls -a /",
    ]);
    let want = hex::encode(Sha256::digest(&big));
    assert!(out.contains(&want), "{out}");
    for hidden in [
        estargz::TOC_TAR_NAME,
        estargz::PREFETCH_LANDMARK,
        estargz::NO_PREFETCH_LANDMARK,
    ] {
        assert!(!out.contains(hidden), "{hidden} in the root:\n{out}");
    }
    assert!(out.lines().any(|l| l == "data"), "{out}");
    // data/big came over the wire only now, by range.
    let after = blob_ranges();
    assert!(after.iter().any(|&r| touches_big(r)), "{after:?}");
}

#[test]
fn image_convert_to_estargz_runs_lazily_and_in_full() {
    require!(
        "image_convert_to_estargz_runs_lazily_and_in_full",
        root_unavailable(),
        registry_unavailable(),
        busybox_unavailable()
    );
    let registry = Registry::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let data = fixtures::random_bytes(2 << 20, 77);
    std::fs::write(rootfs.path().join("data/file"), &data).unwrap();
    let want = hex::encode(Sha256::digest(&data));
    let gzip = format!("{}/convert/busybox:gzip", registry.host());
    let estgz = format!("{}/convert/busybox:estargz", registry.host());
    {
        let d = Daemon::start().unwrap();
        d.ok(&["image", "import", rootfs.path().to_str().unwrap(), &gzip]);
        d.ok(&["push", &gzip]);
        let out = d.ok(&["image", "convert", "--format", "estargz", &gzip, &estgz]);
        assert!(
            out.contains("(estargz)") && out.contains("digest: sha256:"),
            "{out}"
        );
        let bad = d.run(&["image", "convert", "--format", "gzip", &gzip, &estgz]);
        assert!(!bad.status.success());
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains("zstd:chunked or estargz"),
            "{bad:?}"
        );
    }
    // A fresh daemon pulls it lazily (the eStargz layer); one with lazy pulls off pulls it
    // in full, which checks each layer against the rewritten config's diff_ids.
    for extra in [&[][..], &["--no-lazy-pull"][..]] {
        let d = Daemon::start_with(extra).unwrap();
        let out = d.ok(&["pull", &estgz]);
        assert_eq!(
            out.contains("Lazy image"),
            extra.is_empty(),
            "{extra:?}: {out}"
        );
        let out = d.ok(&[
            "run",
            "--rm",
            &estgz,
            "/bin/sh",
            "-c",
            "/bin/sha256sum /data/file; /bin/ls -a /",
        ]);
        assert!(out.contains(&want), "{extra:?}: {out}");
        assert!(!out.contains(estargz::TOC_TAR_NAME), "{extra:?}: {out}");
        assert!(
            !out.contains(estargz::NO_PREFETCH_LANDMARK),
            "{extra:?}: {out}"
        );
    }
}
