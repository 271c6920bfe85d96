//! Interoperability with containers/image: skopeo copies what skiff converts, and skiff reads
//! what skopeo 1.9 writes (the older zstd:chunked form: 40-byte footer, `io.containers.`
//! annotation keys, no tar-split) lazily.

mod chunked_support;

use std::path::Path;
use std::process::Command;

use chunked_support::*;
use oci_client::manifest::OciManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use skiff_store::cache::{ChunkCache, ChunkCacheConfig};
use skiff_store::chunked::{self, BlobSource};
use skiff_store::{ContentReader, FileKind};
use skiff_tests::{registry::registry_unavailable, require, Registry};

fn skopeo_unavailable() -> Option<String> {
    (!Path::new("/usr/bin/skopeo").exists()).then(|| "skopeo not installed".to_string())
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn skopeo_copies_a_converted_image() {
    require!(
        "skopeo_copies_a_converted_image",
        registry_unavailable(),
        skopeo_unavailable()
    );
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let (_tar, blob, pushed) = converted_image(&rt, &registry, "interop/converted").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("copy");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/interop/converted:latest", registry.host()),
        &format!("dir:{}", dest.display()),
    ]);
    let hex = pushed.layer_digest.trim_start_matches("sha256:");
    assert!(std::fs::read(dest.join(hex)).unwrap() == blob);
}

/// Writes a one-layer OCI layout with `tar` as an uncompressed layer.
fn write_oci_layout(dir: &Path, tar: &[u8]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let d = sha256(data);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), data).unwrap();
        d
    };
    let layer = put(tar);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    }))
    .unwrap();
    let config_d = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": tar.len()}],
    }))
    .unwrap();
    let manifest_d = put(&manifest);
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_d,
                "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[test]
fn skopeo_written_zstd_chunked_opens_lazily() {
    require!(
        "skopeo_written_zstd_chunked_opens_lazily",
        registry_unavailable(),
        skopeo_unavailable()
    );
    let rt = runtime();
    let registry = Registry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let out = dir.path().join("out");
    write_oci_layout(&src, &build_tar());
    // Via a local layout first: pushing straight to a registry may reuse other blobs.
    skopeo(&[
        "copy",
        "--dest-compress-format",
        "zstd:chunked",
        &format!("oci:{}:latest", src.display()),
        &format!("oci:{}:latest", out.display()),
    ]);
    let target = format!("{}/interop/skopeo:latest", registry.host());
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", out.display()),
        &format!("docker://{target}"),
    ]);

    let client = client();
    let reference: Reference = target.parse().unwrap();
    let (manifest, _) = rt
        .block_on(client.pull_manifest(&reference, &RegistryAuth::Anonymous))
        .unwrap();
    let OciManifest::Image(manifest) = manifest else {
        panic!("not an image manifest")
    };
    let layer = &manifest.layers[0];
    let annotations = layer
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    assert!(chunked::is_zstd_chunked(&annotations), "{annotations:?}");
    let source = store_source(&rt, &reference, &layer.digest, layer.size as u64);
    let (index, info) =
        chunked::open_lazy_layer(source.as_ref(), &layer.digest, &annotations, &quick_retry())
            .unwrap();
    assert!(info.verified);
    let legacy = annotations.contains_key(chunked::footer::LEGACY_MANIFEST_POSITION_KEY);
    let version = Command::new("skopeo")
        .arg("--version")
        .output()
        .unwrap()
        .stdout;
    if String::from_utf8_lossy(&version).contains(" 1.9.") {
        assert!(legacy, "skopeo 1.9 writes the older form");
    }
    assert_eq!(
        info.location.format,
        if legacy {
            chunked::ChunkedFormat::Legacy
        } else {
            chunked::ChunkedFormat::Current
        }
    );
    let by = |p: &str| {
        index
            .entries
            .iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{p}"))
    };
    assert_eq!(by("etc/link").kind, FileKind::Symlink);
    assert_eq!(by("etc/hardlink").kind, FileKind::Hardlink);
    assert_eq!(by("etc/hardlink").link_target, "etc/hello.txt");
    assert_eq!(by("dev/null").dev_major, 1);
    assert_eq!(by("etc/xattr-file").xattrs["user.skiff"], b"value\x00\x01");
    assert!(
        by("usr/lib/big.bin").chunks.len() > 1,
        "skopeo chunks big files"
    );

    let cdir = tempfile::tempdir().unwrap();
    let cache = ChunkCache::open(ChunkCacheConfig::new(cdir.path())).unwrap();
    cache.register_layer(
        &layer.digest,
        source.clone() as std::sync::Arc<dyn BlobSource>,
    );
    for f in tar_files() {
        let e = by(f.path);
        let mut buf = vec![0u8; f.data.len() + 10];
        let n = cache
            .read_at(&index.digest, &e.chunks, 0, &mut buf)
            .unwrap();
        assert_eq!(n, f.data.len(), "{}", f.path);
        assert!(buf[..n] == f.data[..], "{} differs", f.path);
    }
}
