//! Shared helpers of the zstd:chunked tests: a tar built in code, conversion, pushing to the
//! real registry with oci-client, and reading the registry's access log.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use skiff_store::cache::ChunkCache;
use skiff_store::chunked::{self, RetryPolicy, WriterOptions};
use skiff_store::lazy_source::StoreBlobSource;
use skiff_store::{ContentReader, LayerIndex};
use skiff_tests::Registry;

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Deterministic, partly compressible bytes.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    for (i, b) in v.iter_mut().enumerate() {
        *b = if (i / 4096) % 2 == 0 {
            rng.gen()
        } else {
            (i % 251) as u8
        };
    }
    v
}

pub struct TarFile {
    pub path: &'static str,
    pub data: Vec<u8>,
}

/// The regular files of [`build_tar`], by path.
pub fn tar_files() -> Vec<TarFile> {
    vec![
        TarFile { path: "etc/hello.txt", data: b"hello, skiff\n".to_vec() },
        TarFile { path: "usr/lib/big.bin", data: data(1, 1_300_000) },
        TarFile { path: "usr/lib/medium.bin", data: data(2, 300_000) },
        TarFile { path: "usr/bin/exactly-one-chunk", data: data(3, 256 << 10) },
        TarFile { path: "empty", data: Vec::new() },
        TarFile {
            path: "a/very/long/path/that/needs/a/gnu/or/pax/extension/because/it/is/longer/than/one/hundred/bytes/file.txt",
            data: b"long name\n".to_vec(),
        },
    ]
}

/// A layer tar with every kind of entry the TOC has to carry.
pub fn build_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, p: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        b.append_data(&mut h, p, std::io::empty()).unwrap();
    };
    dir(&mut b, "./");
    dir(&mut b, "etc/");
    for f in tar_files() {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o640);
        h.set_uid(1000);
        h.set_gid(100);
        h.set_mtime(1_700_000_123);
        h.set_size(f.data.len() as u64);
        b.append_data(&mut h, f.path, &f.data[..]).unwrap();
    }
    // A file with an xattr, in a PAX header.
    let xdata = b"has xattr\n";
    b.append_pax_extensions([("SCHILY.xattr.user.skiff", &b"value\x00\x01"[..])])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o600);
    h.set_size(xdata.len() as u64);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, "etc/xattr-file", &xdata[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    b.append_link(&mut h, "etc/link", "hello.txt").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_mode(0o640);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    b.append_link(&mut h, "etc/hardlink", "etc/hello.txt")
        .unwrap();
    for (p, t, maj, min) in [
        ("dev/null", tar::EntryType::Char, 1, 3),
        ("dev/loop0", tar::EntryType::Block, 7, 0),
        ("run/fifo", tar::EntryType::Fifo, 0, 0),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(t);
        h.set_mode(0o660);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h.set_device_major(maj).unwrap();
        h.set_device_minor(min).unwrap();
        b.append_data(&mut h, p, std::io::empty()).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn client() -> Arc<Client> {
    Arc::new(Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    }))
}

pub struct Pushed {
    pub reference: Reference,
    pub layer_digest: String,
    pub layer_size: u64,
    pub annotations: BTreeMap<String, String>,
}

/// Pushes a one-layer zstd image (layer blob, config, manifest) to `registry` as
/// `repo:latest`.
pub async fn push_image(
    registry: &Registry,
    repo: &str,
    blob: &[u8],
    diff_id: &str,
    annotations: BTreeMap<String, String>,
) -> Result<Pushed> {
    push_image_as(
        registry,
        repo,
        blob,
        diff_id,
        annotations,
        chunked::writer::MEDIA_TYPE_LAYER_ZSTD,
    )
    .await
}

/// [`push_image`] with the layer's media type.
pub async fn push_image_as(
    registry: &Registry,
    repo: &str,
    blob: &[u8],
    diff_id: &str,
    annotations: BTreeMap<String, String>,
    media_type: &str,
) -> Result<Pushed> {
    let client = client();
    let reference: Reference = format!("{}/{repo}:latest", registry.host()).parse()?;
    client
        .auth(
            &reference,
            &RegistryAuth::Anonymous,
            oci_client::RegistryOperation::Push,
        )
        .await
        .ok();
    let layer_digest = sha256(blob);
    client
        .push_blob(&reference, blob.to_vec(), &layer_digest)
        .await
        .context("pushing layer")?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = sha256(&config_bytes);
    client
        .push_blob(&reference, config_bytes.clone(), &config_digest)
        .await
        .context("pushing config")?;
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
        config: OciDescriptor {
            media_type: "application/vnd.oci.image.config.v1+json".into(),
            digest: config_digest,
            size: config_bytes.len() as i64,
            ..Default::default()
        },
        layers: vec![OciDescriptor {
            media_type: media_type.into(),
            digest: layer_digest.clone(),
            size: blob.len() as i64,
            annotations: Some(annotations.clone().into_iter().collect()),
            ..Default::default()
        }],
        ..Default::default()
    };
    client
        .push_manifest(&reference, &OciManifest::Image(manifest))
        .await
        .context("pushing manifest")?;
    Ok(Pushed {
        reference,
        layer_digest,
        layer_size: blob.len() as u64,
        annotations,
    })
}

/// Converts [`build_tar`] and pushes it; returns the tar, the blob and what was pushed.
pub fn converted_image(
    rt: &tokio::runtime::Runtime,
    registry: &Registry,
    repo: &str,
) -> Result<(Vec<u8>, Vec<u8>, Pushed)> {
    let tar = build_tar();
    let mut blob = Vec::new();
    let layer = chunked::write_zstd_chunked(&tar, &mut blob, &WriterOptions::default())?;
    let pushed = rt.block_on(push_image(
        registry,
        repo,
        &blob,
        &layer.diff_id,
        layer.annotations.clone(),
    ))?;
    assert_eq!(pushed.layer_digest, layer.digest);
    Ok((tar, blob, pushed))
}

/// The production range path (the store's registry client) over `pushed`'s layer.
pub fn registry_source(rt: &tokio::runtime::Runtime, pushed: &Pushed) -> Arc<StoreBlobSource> {
    store_source(
        rt,
        &pushed.reference,
        &pushed.layer_digest,
        pushed.layer_size,
    )
}

/// [`StoreBlobSource`] over blob `digest` of `reference`'s repository, through a fresh
/// [`skiff_store::RegistryClient`].
pub fn store_source(
    rt: &tokio::runtime::Runtime,
    reference: &Reference,
    digest: &str,
    size: u64,
) -> Arc<StoreBlobSource> {
    let r = skiff_store::ImageReference::parse(&reference.whole()).expect("a pushed reference");
    Arc::new(StoreBlobSource::new(
        skiff_store::RegistryClient::new(Default::default()),
        r,
        digest,
        size,
        rt.handle().clone(),
    ))
}

pub fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        initial_backoff: std::time::Duration::from_millis(50),
        max_backoff: std::time::Duration::from_millis(200),
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `(requests, bytes)` of GETs of blob `digest` the registry logged (status 200/206).
pub fn logged_blob_gets(registry: &Registry, digest: &str) -> (u64, u64) {
    let log = std::fs::read_to_string(registry.log_path()).unwrap_or_default();
    let needle = format!("/blobs/{digest} ");
    let mut n = 0;
    let mut bytes = 0;
    for line in log.lines() {
        let Some(i) = line.find("\"GET ") else {
            continue;
        };
        if !line[i..].contains(&needle) {
            continue;
        }
        // ... "GET /v2/x/blobs/sha256:... HTTP/1.1" 206 1234 "" "ua"
        let after = &line[i + 1..];
        let Some(q) = after.find('"') else { continue };
        let mut f = after[q + 1..].split_whitespace();
        let status: u16 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let size: u64 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if status == 200 || status == 206 {
            n += 1;
            bytes += size;
        }
    }
    (n, bytes)
}

/// Waits (bounded) until the registry log shows at least `min_requests` GETs of `digest`.
pub fn wait_logged(registry: &Registry, digest: &str, min_requests: u64) -> (u64, u64) {
    for _ in 0..100 {
        let r = logged_blob_gets(registry, digest);
        if r.0 >= min_requests {
            return r;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    logged_blob_gets(registry, digest)
}

/// Reads all of `path` through the cache, `step` bytes per read.
pub fn read_all(cache: &ChunkCache, index: &LayerIndex, path: &str, step: usize) -> Vec<u8> {
    let e = index.entries.iter().find(|e| e.path == path).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; step];
    loop {
        let n = cache
            .read_at(&index.digest, &e.chunks, out.len() as u64, &mut buf)
            .unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}
