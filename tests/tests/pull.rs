//! Pulling from a real registry: formats, index contents, read-back, errors, atomicity.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use skiff_store::{
    ChunkLocation, Compression, FileEntry, FileKind, LayerIndex, PullProgress, PullStatus, Removed,
    Store, StoreError, StoreOptions,
};
use skiff_tests::fixtures::{self, busybox_unavailable};
use skiff_tests::registry::registry_unavailable;
use skiff_tests::{require, Registry};

fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::Builder::new()
        .prefix("skiff-store-")
        .tempdir()
        .unwrap();
    let store = Store::open(&dir.path().join("root"), StoreOptions::default()).unwrap();
    (dir, store)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn quiet(_: PullProgress) {}

const QUIET: &(dyn Fn(PullProgress) + Send + Sync) = &quiet;

fn by_path(idx: &[LayerIndex]) -> HashMap<String, FileEntry> {
    idx.iter()
        .flat_map(|l| l.entries.iter())
        .map(|e| (e.path.clone(), e.clone()))
        .collect()
}

fn read_all(store: &Store, layer: &str, e: &FileEntry) -> Vec<u8> {
    let reader = store.content_reader();
    let mut out = vec![0u8; e.size as usize];
    let mut off = 0;
    // Odd-sized reads cross internal boundaries.
    while off < out.len() {
        let end = (off + 65_537).min(out.len());
        let n = reader
            .read_at(layer, &e.chunks, off as u64, &mut out[off..end])
            .unwrap();
        assert!(n > 0, "short read at {off} of {}", e.path);
        off += n;
    }
    let mut extra = [0u8; 4];
    assert_eq!(
        reader
            .read_at(layer, &e.chunks, e.size, &mut extra)
            .unwrap(),
        0
    );
    out
}

/// Checks what the busybox fixture must contain after a pull.
fn check_busybox(store: &Store, reference: &str) {
    let img = store.image(reference).unwrap();
    assert_eq!(img.layers.len(), 1);
    assert_eq!(img.diff_ids.len(), 1);
    assert_eq!(img.layers[0].state, "local");
    let cfg = img.config.config().as_ref().unwrap();
    assert_eq!(cfg.cmd().as_ref().unwrap(), &vec!["sh".to_string()]);
    let idx = store.layer_indexes(&img.id).unwrap();
    assert_eq!(idx.len(), 1);
    let layer = &idx[0].digest;
    assert_eq!(layer, &img.layers[0].digest);
    let files = by_path(&idx);

    let bb = &files["bin/busybox"];
    assert_eq!(bb.kind, FileKind::Regular);
    assert_eq!(bb.mode, 0o755);
    assert_eq!(bb.mtime, fixtures::MTIME);
    assert_eq!(
        read_all(store, layer, bb),
        std::fs::read(fixtures::busybox_bin()).unwrap()
    );
    let sh = &files["bin/sh"];
    assert_eq!(sh.kind, FileKind::Symlink);
    assert_eq!(sh.link_target, "busybox");
    assert_eq!(files["tmp"].kind, FileKind::Directory);
    assert_eq!(files["tmp"].mode, 0o1777);
    assert_eq!(files["root"].mode, 0o700);
    assert_eq!(files[fixtures::SETUID_FILE].mode, 0o4755);
    let hl = &files[fixtures::HARDLINK];
    assert_eq!(hl.kind, FileKind::Hardlink);
    assert_eq!(hl.link_target, fixtures::HARDLINK_TARGET);
    let x = &files[fixtures::XATTR_FILE];
    assert_eq!(
        x.xattrs.get(fixtures::XATTR_NAME).map(Vec::as_slice),
        Some(fixtures::XATTR_VALUE)
    );
    assert_eq!(files[fixtures::FIFO].kind, FileKind::Fifo);
    let rnd = &files[fixtures::RANDOM_FILE];
    assert_eq!(rnd.size, 1 << 20);
    assert!(matches!(
        rnd.chunks[0].location,
        ChunkLocation::Local { .. }
    ));
    assert_eq!(
        read_all(store, layer, rnd),
        fixtures::random_bytes(1 << 20, 42)
    );
    assert_eq!(
        read_all(store, layer, &files[fixtures::HELLO_FILE]),
        fixtures::HELLO
    );
    // A read in the middle of a file.
    let mut buf = [0u8; 5];
    let n = store
        .content_reader()
        .read_at(layer, &files[fixtures::HELLO_FILE].chunks, 6, &mut buf)
        .unwrap();
    assert_eq!(&buf[..n], b"from ");
    if nix::unistd::geteuid().is_root() {
        let dev = &files[fixtures::CHAR_DEVICE];
        assert_eq!(dev.kind, FileKind::CharDevice);
        assert_eq!((dev.dev_major, dev.dev_minor), (1, 3));
        let nb = &files[fixtures::NOBODY_FILE];
        assert_eq!((nb.uid, nb.gid, nb.mode), (65534, 65534, 0o640));
    }
}

fn pull_format(compression: Compression, tag: &str) {
    let reg = Registry::start().unwrap();
    let rt = rt();
    let reference = format!("{}/busybox:{tag}", reg.host());
    rt.block_on(fixtures::push_busybox(
        &reg.host(),
        &format!("busybox:{tag}"),
        compression,
    ))
    .unwrap();
    let (_d, store) = new_store();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let img = rt
        .block_on(store.pull(&reference, &move |p| ev.lock().unwrap().push(p)))
        .unwrap();
    assert_eq!(img.repo_tags, vec![reference.clone()]);
    let want_media = match compression {
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
    };
    assert_eq!(img.layers[0].media_type, want_media);
    let ev = events.lock().unwrap();
    assert!(ev.iter().any(|p| p.status == PullStatus::Downloading));
    assert_eq!(ev.last().unwrap().status, PullStatus::Complete);
    drop(ev);
    assert!(store.bytes_downloaded() >= img.layers[0].size);
    check_busybox(&store, &reference);
    // Pulling again reuses the layer.
    let before = store.bytes_downloaded();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    rt.block_on(store.pull(&reference, &move |p| ev.lock().unwrap().push(p)))
        .unwrap();
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .any(|p| p.status == PullStatus::AlreadyExists));
    assert!(store.bytes_downloaded() - before < img.layers[0].size);
}

#[test]
fn pull_gzip_image() {
    require!(
        "pull_gzip_image",
        registry_unavailable(),
        busybox_unavailable()
    );
    pull_format(Compression::Gzip, "gzip");
}

#[test]
fn pull_zstd_image() {
    require!(
        "pull_zstd_image",
        registry_unavailable(),
        busybox_unavailable()
    );
    pull_format(Compression::Zstd, "zstd");
}

/// Everything the store keeps on disk besides the database, as a list of files.
fn stored_files(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    for d in ["blobs/sha256", "layers", "tmp"] {
        let dir = store.root().join(d);
        for e in walk(&dir) {
            out.push(e);
        }
    }
    out
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

#[test]
fn pull_docker_v2s2_image() {
    require!(
        "pull_docker_v2s2_image",
        registry_unavailable(),
        busybox_unavailable(),
        which("skopeo")
    );
    let reg = Registry::start().unwrap();
    let rt = rt();
    rt.block_on(fixtures::push_busybox(
        &reg.host(),
        "busybox:gzip",
        Compression::Gzip,
    ))
    .unwrap();
    // Convert with skopeo (test code checks skiff from outside with external tools).
    let st = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--format",
            "v2s2",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{}/busybox:gzip", reg.host()))
        .arg(format!("docker://{}/busybox:v2s2", reg.host()))
        .status()
        .unwrap();
    assert!(st.success());
    let (_d, store) = new_store();
    let reference = format!("{}/busybox:v2s2", reg.host());
    let img = rt.block_on(store.pull(&reference, QUIET)).unwrap();
    assert_eq!(
        img.manifest_media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        img.layers[0].media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    check_busybox(&store, &reference);
}

fn which(tool: &str) -> Option<String> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        None
    } else {
        Some(format!("{tool} not installed"))
    }
}

#[test]
fn multi_arch_index_resolves_to_host_platform() {
    require!(
        "multi_arch_index_resolves_to_host_platform",
        registry_unavailable(),
        busybox_unavailable()
    );
    let reg = Registry::start().unwrap();
    let rt = rt();
    let amd = rt
        .block_on(fixtures::push_busybox(
            &reg.host(),
            "busybox:amd",
            Compression::Gzip,
        ))
        .unwrap();
    let other = rt
        .block_on(fixtures::push_busybox(
            &reg.host(),
            "busybox:other",
            Compression::Zstd,
        ))
        .unwrap();
    assert_ne!(amd, other);
    let client = skiff_store::RegistryClient::new(Default::default());
    let size = |tag: &str| {
        let r =
            skiff_store::ImageReference::parse(&format!("{}/busybox:{tag}", reg.host())).unwrap();
        rt.block_on(client.fetch_manifest(&r)).unwrap().0.len()
    };
    let (amd_size, other_size) = (size("amd"), size("other"));
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other,
             "size": other_size, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd,
             "size": amd_size, "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other,
             "size": other_size, "platform": {"architecture": "amd64", "os": "windows"}}
        ]
    });
    let r = skiff_store::ImageReference::parse(&format!("{}/busybox:multi", reg.host())).unwrap();
    rt.block_on(client.push_manifest(
        &r,
        serde_json::to_vec(&index).unwrap().into(),
        "application/vnd.oci.image.index.v1+json",
    ))
    .unwrap();
    let (_d, store) = new_store();
    let img = rt.block_on(store.pull(&r.to_string(), QUIET)).unwrap();
    assert_eq!(img.manifest_digest, amd);
    assert_eq!(
        img.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    check_busybox(&store, &r.to_string());
}

#[test]
fn unknown_tag_is_not_found_naming_the_reference() {
    require!(
        "unknown_tag_is_not_found_naming_the_reference",
        registry_unavailable(),
        busybox_unavailable()
    );
    let reg = Registry::start().unwrap();
    let rt = rt();
    rt.block_on(fixtures::push_busybox(
        &reg.host(),
        "busybox:gzip",
        Compression::Gzip,
    ))
    .unwrap();
    let (_d, store) = new_store();
    for reference in [
        format!("{}/busybox:nope", reg.host()),
        format!("{}/nothere:latest", reg.host()),
    ] {
        let err = rt.block_on(store.pull(&reference, QUIET)).unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound { reference: r, .. } if *r == reference),
            "{err:?}"
        );
        assert!(err.to_string().contains(&reference), "{err}");
    }
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn unreachable_registry_error_names_host_and_port() {
    let port = skiff_tests::registry::free_port().unwrap();
    let (_d, store) = new_store();
    let rt = rt();
    let reference = format!("127.0.0.1:{port}/busybox:latest");
    let err = rt.block_on(store.pull(&reference, QUIET)).unwrap_err();
    match &err {
        StoreError::Unreachable { host, .. } => assert_eq!(host, &format!("127.0.0.1:{port}")),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

/// The registry's file for blob `digest`.
fn registry_blob(reg: &Registry, digest: &str) -> std::path::PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    reg.storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

#[test]
fn corrupt_blob_in_registry_fails_and_stores_nothing() {
    require!(
        "corrupt_blob_in_registry_fails_and_stores_nothing",
        registry_unavailable(),
        busybox_unavailable()
    );
    let reg = Registry::start().unwrap();
    let rt = rt();
    rt.block_on(fixtures::push_busybox(
        &reg.host(),
        "busybox:gzip",
        Compression::Gzip,
    ))
    .unwrap();
    let reference = format!("{}/busybox:gzip", reg.host());
    let client = skiff_store::RegistryClient::new(Default::default());
    let resolved = rt
        .block_on(client.resolve(&skiff_store::ImageReference::parse(&reference).unwrap()))
        .unwrap();
    let layer = &resolved.manifest.layers[0].digest;
    let path = registry_blob(&reg, layer);
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&path, &data).unwrap();

    let (_d, store) = new_store();
    let err = rt.block_on(store.pull(&reference, QUIET)).unwrap_err();
    assert!(
        matches!(&err, StoreError::DigestMismatch { expected, .. } if expected == layer),
        "{err:?}"
    );
    assert!(store.images().unwrap().is_empty());
    assert!(
        stored_files(&store).is_empty(),
        "{:?}",
        stored_files(&store)
    );
    assert!(matches!(
        store.image(&reference),
        Err(StoreError::ImageNotFound { .. })
    ));
}

#[test]
fn interrupted_pull_leaves_no_image_and_repull_succeeds() {
    require!(
        "interrupted_pull_leaves_no_image_and_repull_succeeds",
        registry_unavailable(),
        busybox_unavailable()
    );
    let reg = Registry::start().unwrap();
    let rt = rt();
    rt.block_on(fixtures::push_busybox(
        &reg.host(),
        "busybox:zstd",
        Compression::Zstd,
    ))
    .unwrap();
    let reference = format!("{}/busybox:zstd", reg.host());
    let (_d, store) = new_store();
    let started = Arc::new(tokio::sync::Notify::new());
    let s2 = started.clone();
    let progress = move |p: PullProgress| {
        if p.status == PullStatus::Downloading {
            s2.notify_one();
        }
    };
    let cancelled = rt.block_on(async {
        tokio::select! {
            r = store.pull(&reference, &progress) => { r.unwrap(); false }
            _ = started.notified() => true,
        }
    });
    assert!(cancelled, "the pull finished before it could be cancelled");
    assert!(store.images().unwrap().is_empty());
    assert!(matches!(
        store.image(&reference),
        Err(StoreError::ImageNotFound { .. })
    ));
    // The unpacker thread notices the cancelled download and removes its temporary file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !walk(&store.root().join("tmp")).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "temporary files left behind"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A store reopened after the interruption pulls fine.
    let root = store.root().to_path_buf();
    drop(store);
    let store = Store::open(&root, StoreOptions::default()).unwrap();
    rt.block_on(store.pull(&reference, QUIET)).unwrap();
    check_busybox(&store, &reference);
}

#[test]
fn rmi_untags_then_deletes() {
    require!(
        "rmi_untags_then_deletes",
        registry_unavailable(),
        busybox_unavailable()
    );
    let reg = Registry::start().unwrap();
    let rt = rt();
    rt.block_on(fixtures::push_busybox(
        &reg.host(),
        "busybox:gzip",
        Compression::Gzip,
    ))
    .unwrap();
    let reference = format!("{}/busybox:gzip", reg.host());
    let (_d, store) = new_store();
    let img = rt.block_on(store.pull(&reference, QUIET)).unwrap();
    store.tag(&reference, "mine:v1").unwrap();
    let list = store.images().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0].repo_tags,
        vec![reference.clone(), "docker.io/library/mine:v1".to_string()]
    );
    // By short id prefix, with two tags: refused without force.
    let short = &img.id["sha256:".len().."sha256:".len() + 12];
    assert_eq!(store.image(short).unwrap().id, img.id);
    assert!(matches!(
        store.remove_image(short, false),
        Err(StoreError::Conflict { .. })
    ));
    // By tag: only untagged.
    assert_eq!(
        store.remove_image("mine:v1", false).unwrap(),
        vec![Removed::Untagged("docker.io/library/mine:v1".to_string())]
    );
    assert!(store.image("mine:v1").is_err());
    let layer_dir = store.layer_dir(&img.layers[0].digest).unwrap();
    assert!(layer_dir.join("data.tar").is_file());
    // The last tag: untag and delete image and layer data.
    let removed = store.remove_image(&reference, false).unwrap();
    assert_eq!(
        removed,
        vec![
            Removed::Untagged(reference.clone()),
            Removed::Deleted(img.id.clone()),
            Removed::Deleted(img.layers[0].digest.clone()),
        ]
    );
    assert!(store.images().unwrap().is_empty());
    assert!(!layer_dir.exists());
    assert!(
        stored_files(&store).is_empty(),
        "{:?}",
        stored_files(&store)
    );
    assert!(matches!(
        store.remove_image(&reference, false),
        Err(StoreError::ImageNotFound { .. })
    ));
}

/// A tar with one regular file per `(raw name, content)`, names written into the header
/// verbatim (so hostile names survive).
fn raw_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Pushes an image whose layers are the given uncompressed tars (gzip-compressed).
fn push_tars(rt: &tokio::runtime::Runtime, reference: &str, tars: &[Vec<u8>]) -> Vec<String> {
    use std::io::Write;
    let client = skiff_store::RegistryClient::new(Default::default());
    let r = skiff_store::ImageReference::parse(reference).unwrap();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for t in tars {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(t).unwrap();
        let blob = gz.finish().unwrap();
        let digest = skiff_store::content::sha256_digest(&blob);
        rt.block_on(client.push_blob(&r, &digest, blob.clone().into()))
            .unwrap();
        diff_ids.push(skiff_store::content::sha256_digest(t));
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest, "size": blob.len()}));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}}))
    .unwrap();
    let config_digest = skiff_store::content::sha256_digest(&config);
    rt.block_on(client.push_blob(&r, &config_digest, config.clone().into()))
        .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": layers});
    rt.block_on(client.push_manifest(
        &r,
        serde_json::to_vec(&manifest).unwrap().into(),
        "application/vnd.oci.image.manifest.v1+json",
    ))
    .unwrap();
    layers
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn hostile_layer_paths_are_normalised_or_refused() {
    require!(
        "hostile_layer_paths_are_normalised_or_refused",
        registry_unavailable()
    );
    let reg = Registry::start().unwrap();
    let rt = rt();
    let (_d, store) = new_store();

    // Absolute paths and `..` that stays inside the root are normalised like Docker does.
    let ok = format!("{}/odd:paths", reg.host());
    push_tars(
        &rt,
        &ok,
        &[raw_tar(&[
            ("/etc/abs", b"abs"),
            ("a/../b", b"b"),
            ("/../../c", b"c"),
            ("./d/.wh.e", b""),
        ])],
    );
    let img = rt.block_on(store.pull(&ok, QUIET)).unwrap();
    let idx = store.layer_indexes(&img.id).unwrap();
    let paths: Vec<&str> = idx[0].entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["etc/abs", "b", "c", "d/.wh.e"]);
    let files = by_path(&idx);
    assert_eq!(read_all(&store, &idx[0].digest, &files["c"]), b"c");

    // A relative path climbing out of the root: the layer is refused, naming layer and path.
    let bad = format!("{}/evil:latest", reg.host());
    let layers = push_tars(
        &rt,
        &bad,
        &[
            raw_tar(&[("fine", b"x")]),
            raw_tar(&[("ok", b"1"), ("x/../../evil.sh", b"#!/bin/sh\n")]),
        ],
    );
    let err = rt.block_on(store.pull(&bad, QUIET)).unwrap_err();
    match &err {
        StoreError::BadLayerEntry { layer, path, .. } => {
            assert_eq!(layer, &layers[1]);
            assert_eq!(path, "x/../../evil.sh");
        }
        other => panic!("expected BadLayerEntry, got {other:?}"),
    }
    assert!(err.to_string().contains("x/../../evil.sh"), "{err}");
    assert!(store.image(&bad).is_err());
    assert_eq!(store.images().unwrap().len(), 1);
    assert!(!store.layer_dir(&layers[1]).unwrap().exists());
}

#[test]
fn fetch_range_returns_exact_blob_bytes() {
    require!(
        "fetch_range_returns_exact_blob_bytes",
        registry_unavailable(),
        busybox_unavailable()
    );
    let reg = Registry::start().unwrap();
    let rt = rt();
    rt.block_on(fixtures::push_busybox(
        &reg.host(),
        "busybox:zstd",
        Compression::Zstd,
    ))
    .unwrap();
    let r = skiff_store::ImageReference::parse(&format!("{}/busybox:zstd", reg.host())).unwrap();
    let client = skiff_store::RegistryClient::new(Default::default());
    let resolved = rt.block_on(client.resolve(&r)).unwrap();
    let layer = &resolved.manifest.layers[0];
    let whole = std::fs::read(registry_blob(&reg, &layer.digest)).unwrap();
    let c2 = client.clone();
    for (off, len) in [(0u64, 1u64), (1000, 4096), (whole.len() as u64 - 7, 7)] {
        let before = c2.bytes_downloaded();
        let got = rt
            .block_on(c2.fetch_range(&r, &layer.digest, off, len))
            .unwrap();
        assert_eq!(&got[..], &whole[off as usize..(off + len) as usize]);
        // A real Range request: only the range came over the wire.
        assert_eq!(c2.bytes_downloaded() - before, len);
    }
    // Past the end: an error, not short data.
    assert!(rt
        .block_on(client.fetch_range(&r, &layer.digest, whole.len() as u64 - 2, 10))
        .is_err());
    // Unknown blob: not found, naming the digest.
    let missing = format!("sha256:{}", "0".repeat(64));
    let err = rt
        .block_on(client.fetch_range(&r, &missing, 0, 10))
        .unwrap_err();
    assert!(err.to_string().contains(&missing), "{err}");
}

#[test]
fn import_from_tar_and_push_roundtrip() {
    require!(
        "import_from_tar_and_push_roundtrip",
        registry_unavailable(),
        busybox_unavailable()
    );
    let reg = Registry::start().unwrap();
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    let tarfile = tmp.path().join("rootfs.tar");
    std::fs::write(
        &tarfile,
        raw_tar(&[("hello.txt", b"hi"), ("bin/tool", b"binary")]),
    )
    .unwrap();
    let (_d, store) = new_store();
    let changes = skiff_store::ImageChanges {
        cmd: Some(vec!["/bin/tool".into()]),
        env: vec!["A=b".into()],
        working_dir: Some("/work".into()),
        user: Some("nobody".into()),
        exposed_ports: vec!["8080".into()],
        ..Default::default()
    };
    let reference = format!("{}/imported:v1", reg.host());
    let img = rt
        .block_on(store.import(&tarfile, &reference, &changes, Compression::Zstd))
        .unwrap();
    let cfg = img.config.config().as_ref().unwrap();
    assert_eq!(cfg.working_dir().as_deref(), Some("/work"));
    assert_eq!(cfg.user().as_deref(), Some("nobody"));
    assert_eq!(cfg.env().as_ref().unwrap(), &vec!["A=b".to_string()]);
    assert_eq!(
        cfg.exposed_ports().as_ref().unwrap(),
        &vec!["8080/tcp".to_string()]
    );
    let idx = store.layer_indexes(&img.id).unwrap();
    let files = by_path(&idx);
    assert_eq!(
        read_all(&store, &idx[0].digest, &files["bin/tool"]),
        b"binary"
    );
    let digest = rt.block_on(store.push(&reference)).unwrap();
    assert_eq!(digest, img.manifest_digest);
    // A fresh store pulls the same image back.
    let (_d2, other) = new_store();
    let pulled = rt.block_on(other.pull(&reference, QUIET)).unwrap();
    assert_eq!(pulled.id, img.id);
    assert_eq!(pulled.manifest_digest, img.manifest_digest);
    assert_eq!(pulled.diff_ids, img.diff_ids);
}

#[test]
fn basic_auth_credentials_come_from_docker_config() {
    require!(
        "basic_auth_credentials_come_from_docker_config",
        registry_unavailable(),
        busybox_unavailable(),
        which("python3")
    );
    use base64::Engine as _;
    let tmp = tempfile::tempdir().unwrap();
    // bcrypt via the system's crypt(3), as the registry's htpasswd wants.
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import crypt; print(crypt.crypt('s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))",
        ])
        .output()
        .unwrap();
    let hash = String::from_utf8(out.stdout).unwrap();
    if !hash.starts_with("$2") {
        skiff_tests::skip::skip(
            "basic_auth_credentials_come_from_docker_config",
            "python3 crypt has no bcrypt",
        );
        return;
    }
    let htpasswd = tmp.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("alice:{}", hash.trim())).unwrap();
    let reg = Registry::start_with_htpasswd(&htpasswd).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let config = tmp.path().join("config.json");
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host()),
    )
    .unwrap();
    let with_creds = |root: &std::path::Path| {
        Store::open(
            root,
            StoreOptions {
                docker_config: Some(config.clone()),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let rt = rt();
    let reference = format!("{}/private:v1", reg.host());
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    fixtures::build_busybox_rootfs(&rootfs).unwrap();
    let pusher = with_creds(&tmp.path().join("push"));
    rt.block_on(pusher.import(
        &rootfs,
        &reference,
        &fixtures::busybox_changes(),
        Compression::Gzip,
    ))
    .unwrap();
    rt.block_on(pusher.push(&reference)).unwrap();

    // Without credentials: refused, naming the reference.
    let anon = Store::open(
        &tmp.path().join("anon"),
        StoreOptions {
            docker_config: Some(tmp.path().join("missing.json")),
            ..Default::default()
        },
    )
    .unwrap();
    let err = rt.block_on(anon.pull(&reference, QUIET)).unwrap_err();
    eprintln!("anonymous pull: {err}");
    assert!(err.to_string().contains(&reference), "{err}");
    assert!(anon.images().unwrap().is_empty());
    // With them: pulled.
    let store = with_creds(&tmp.path().join("pull"));
    rt.block_on(store.pull(&reference, QUIET)).unwrap();
    check_busybox(&store, &reference);
}

#[test]
fn zstd_chunked_image_pulls_in_full() {
    require!(
        "zstd_chunked_image_pulls_in_full",
        registry_unavailable(),
        busybox_unavailable(),
        which("skopeo")
    );
    let reg = Registry::start().unwrap();
    let rt = rt();
    rt.block_on(fixtures::push_busybox(
        &reg.host(),
        "busybox:gzip",
        Compression::Gzip,
    ))
    .unwrap();
    // skopeo writes zstd:chunked into a local layout first, then pushes it unchanged.
    let tmp = tempfile::tempdir().unwrap();
    let layout = format!("oci:{}:chunked", tmp.path().join("layout").display());
    let skopeo = |args: &[&str]| {
        let out = std::process::Command::new("skopeo")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let src = format!("docker://{}/busybox:gzip", reg.host());
    let dst = format!("docker://{}/busybox:chunked", reg.host());
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-compress-format",
        "zstd:chunked",
        "--dest-compress",
        &src,
        &layout,
    ]);
    skopeo(&[
        "copy",
        "--quiet",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &layout,
        &dst,
    ]);
    let reference = format!("{}/busybox:chunked", reg.host());
    let client = skiff_store::RegistryClient::new(Default::default());
    let resolved = rt
        .block_on(client.resolve(&skiff_store::ImageReference::parse(&reference).unwrap()))
        .unwrap();
    let layer = &resolved.manifest.layers[0];
    assert!(
        skiff_store::layer::compression::is_zstd_chunked(layer.annotations.as_ref()),
        "skopeo did not write zstd:chunked: {layer:?}"
    );
    let (_d, store) = new_store();
    let img = rt.block_on(store.pull(&reference, QUIET)).unwrap();
    assert_eq!(img.layers[0].format, "tar+zstd");
    check_busybox(&store, &reference);
}
