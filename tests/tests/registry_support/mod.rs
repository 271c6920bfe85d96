//! Shared by the token-registry tests: credentials on disk, a private lazy image published
//! with them, and the check that no secret leaked.
#![allow(dead_code)]

use std::path::Path;

use base64::Engine as _;
use skiff_store::{Compression, ImageReference, Store, StoreOptions};
use skiff_tests::{fixtures, Registry, TokenServer};

use crate::common::{by_path, read_all};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "pa55-w0rd-secret";

pub fn docker_config(dir: &Path, registry: &str, user: &str, password: &str) -> std::path::PathBuf {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let p = dir.join("config.json");
    std::fs::write(
        &p,
        format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    p
}

pub fn store_with(root: &Path, config: &Path) -> Store {
    Store::open(
        root,
        StoreOptions {
            docker_config: Some(config.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap()
}

pub fn assert_no_secret(text: &str, server: &TokenServer) {
    assert!(!text.contains(PASSWORD), "password leaked: {text}");
    for s in server.secrets() {
        assert!(!text.contains(&s), "token leaked: {text}");
    }
}

/// Pushes a busybox image with extra files `/data/{one,two,three}` and `/later/four`
/// (gzip), converts it to zstd:chunked with
/// `store`'s credentials; returns the chunked reference.
pub fn publish(rt: &tokio::runtime::Runtime, reg: &Registry, store: &Store) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    fixtures::build_busybox_rootfs(&rootfs).unwrap();
    for (name, seed) in [("one", 1), ("two", 2), ("three", 3)] {
        std::fs::write(
            rootfs.join("data").join(name),
            fixtures::random_bytes(300 << 10, seed),
        )
        .unwrap();
    }
    // In a directory of its own: read-ahead of the /data files stays within /data.
    std::fs::create_dir_all(rootfs.join("later")).unwrap();
    std::fs::write(
        rootfs.join("later/four"),
        fixtures::random_bytes(300 << 10, 4),
    )
    .unwrap();
    let gzip = format!("{}/private/app:gzip", reg.host());
    let chunked = format!("{}/private/app:chunked", reg.host());
    rt.block_on(store.import(
        &rootfs,
        &gzip,
        &fixtures::busybox_changes(),
        Compression::Gzip,
    ))
    .unwrap();
    rt.block_on(store.push(&gzip)).unwrap();
    rt.block_on(skiff_store::convert::convert_image(
        store.registry(),
        &ImageReference::parse(&gzip).unwrap(),
        &ImageReference::parse(&chunked).unwrap(),
        &tmp.path().join("convert"),
        &|_| {},
    ))
    .unwrap();
    chunked
}

pub fn read_file(store: &Store, reference: &str, path: &str) -> Vec<u8> {
    let img = store.image(reference).unwrap();
    let idx = store.layer_indexes(&img.id).unwrap();
    let files = by_path(&idx);
    let e = files
        .get(path)
        .unwrap_or_else(|| panic!("{path} not in image"));
    let layer = idx
        .iter()
        .find(|l| l.entries.iter().any(|x| x.path == e.path))
        .unwrap();
    read_all(store, &layer.digest, e)
}
