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

fn store() -> (tempfile::TempDir, Store) {
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
    let (_d, store) = store();
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
