//! Helpers shared by the pull tests.
#![allow(dead_code)]

use std::collections::HashMap;

use skiff_store::{
    ChunkLocation, FileEntry, FileKind, LayerIndex, PullProgress, Store, StoreOptions,
};
use skiff_tests::fixtures;
use skiff_tests::Registry;

pub fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::Builder::new()
        .prefix("skiff-store-")
        .tempdir()
        .unwrap();
    let store = Store::open(&dir.path().join("root"), StoreOptions::default()).unwrap();
    (dir, store)
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn quiet(_: PullProgress) {}

pub const QUIET: &(dyn Fn(PullProgress) + Send + Sync) = &quiet;

pub fn by_path(idx: &[LayerIndex]) -> HashMap<String, FileEntry> {
    idx.iter()
        .flat_map(|l| l.entries.iter())
        .map(|e| (e.path.display().into_owned(), e.clone()))
        .collect()
}

pub fn read_all(store: &Store, layer: &str, e: &FileEntry) -> Vec<u8> {
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
pub fn check_busybox(store: &Store, reference: &str) {
    check_busybox_stored(store, reference, "local");
}

/// [`check_busybox`] for a layer stored as `state` (`local` or `lazy`).
pub fn check_busybox_stored(store: &Store, reference: &str, state: &str) {
    let img = store.image(reference).unwrap();
    assert_eq!(img.layers.len(), 1);
    assert_eq!(img.diff_ids.len(), 1);
    assert_eq!(img.layers[0].state, state);
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
    if state == "lazy" {
        assert!(matches!(
            rnd.chunks[0].location,
            ChunkLocation::Compressed { .. }
        ));
    } else {
        assert!(matches!(
            rnd.chunks[0].location,
            ChunkLocation::Local { .. }
        ));
    }
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

/// Everything the store keeps on disk besides the database, as a list of files.
pub fn stored_files(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    for d in ["blobs/sha256", "layers", "tmp"] {
        let dir = store.root().join(d);
        for e in walk(&dir) {
            out.push(e);
        }
    }
    out
}

pub fn walk(dir: &std::path::Path) -> Vec<String> {
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

pub fn which(tool: &str) -> Option<String> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        None
    } else {
        Some(format!("{tool} not installed"))
    }
}

/// The registry's file for blob `digest`.
pub fn registry_blob(reg: &Registry, digest: &str) -> std::path::PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    reg.storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// A tar with one regular file per `(raw name, content)`, names written into the header
/// verbatim (so hostile names survive).
pub fn raw_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
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
pub fn push_tars(rt: &tokio::runtime::Runtime, reference: &str, tars: &[Vec<u8>]) -> Vec<String> {
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

/// A fresh registry holding the busybox fixture as `busybox:<tag>`; returns the registry,
/// a runtime and the image's reference.
pub fn registry_with_busybox(
    tag: &str,
    compression: skiff_store::Compression,
) -> (Registry, tokio::runtime::Runtime, String) {
    let reg = Registry::start().unwrap();
    let rt = rt();
    rt.block_on(fixtures::push_busybox(
        &reg.host(),
        &format!("busybox:{tag}"),
        compression,
    ))
    .unwrap();
    let reference = format!("{}/busybox:{tag}", reg.host());
    (reg, rt, reference)
}

/// The SOCI tests' image, pushed as gzip: a small layer (`etc/hello`) then a 14 MiB one of
/// random data (`data/big.bin` 12 MiB, `data/wanted.bin` 300 KiB, `data/tail.bin` the
/// first 2 MiB of big), over SOCI's 10 MiB minimum since random bytes do not compress.
pub struct SociImage {
    pub reference: String,
    pub big: Vec<u8>,
    pub wanted: Vec<u8>,
    /// Layer digests, small first.
    pub layers: Vec<String>,
}

pub fn push_soci_image(rt: &tokio::runtime::Runtime, host: &str, repo: &str) -> SociImage {
    let big = fixtures::random_bytes(12 << 20, 1);
    let wanted = fixtures::random_bytes(300 << 10, 2);
    let big_layer = raw_tar(&[
        ("data/big.bin", &big[..]),
        ("data/wanted.bin", &wanted[..]),
        ("data/tail.bin", &big[..2 << 20]),
    ]);
    let small_layer = raw_tar(&[("etc/hello", b"hello\n")]);
    let reference = format!("{host}/{repo}:1");
    let layers = push_tars(rt, &reference, &[small_layer, big_layer]);
    SociImage {
        reference,
        big,
        wanted,
        layers,
    }
}
