//! Pull failures from a real registry: unknown tags, unreachable hosts, corrupt blobs,
//! interrupted pulls, hostile layers; and `rmi`. Nothing half-done may remain.

use std::sync::Arc;

use skiff_store::{
    Compression, PullProgress, PullStatus, Removed, Store, StoreError, StoreOptions,
};
use skiff_tests::fixtures::busybox_unavailable;
use skiff_tests::registry::registry_unavailable;
use skiff_tests::{require, Registry};

mod common;
use common::*;

#[test]
fn unknown_tag_is_not_found_naming_the_reference() {
    require!(
        "unknown_tag_is_not_found_naming_the_reference",
        registry_unavailable(),
        busybox_unavailable()
    );
    let (reg, rt, _) = registry_with_busybox("gzip", Compression::Gzip);
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

#[test]
fn corrupt_blob_in_registry_fails_and_stores_nothing() {
    require!(
        "corrupt_blob_in_registry_fails_and_stores_nothing",
        registry_unavailable(),
        busybox_unavailable()
    );
    let (reg, rt, reference) = registry_with_busybox("gzip", Compression::Gzip);
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
    let (_reg, rt, reference) = registry_with_busybox("zstd", Compression::Zstd);
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
    let (_reg, rt, reference) = registry_with_busybox("gzip", Compression::Gzip);
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
    let paths: Vec<&str> = idx[0]
        .entries
        .iter()
        .map(|e| e.path.to_str().unwrap())
        .collect();
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
