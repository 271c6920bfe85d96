//! eStargz written by stargz-snapshotter's own tool (Debian's `ctr-remote image optimize`,
//! over a private containerd this test starts and stops), pulled lazily by skiff: the tree
//! served must be the one the plain gzip image gives when pulled in full.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{read_all, which, QUIET};
use skiff_store::{Compression, FileKind, Store, StoreOptions};
use skiff_tests::fixtures::{self, busybox_unavailable};
use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Registry};

/// A containerd of the test's own (root, state and socket in a temporary directory),
/// killed by PID when dropped.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("skiff-ctd-")
            .tempdir()
            .unwrap();
        let d = dir.path().display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"#
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let c = Containerd { child, dir };
        let t0 = Instant::now();
        while c.ctr(&["version"]).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "containerd did not start: {}",
                std::fs::read_to_string(c.dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// Runs `ctr-remote` against this containerd; stdout, or stderr as the error.
    fn ctr(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ctr-remote")
            .arg("--address")
            .arg(self.socket())
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "ctr-remote {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Mounts of its snapshotter, if any were made, go with the directory.
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.path().join("root"))
            .stderr(std::process::Stdio::null())
            .status();
    }
}

type Shown = (FileKind, u32, u32, u32, u64, String, Vec<u8>);

fn served_tree(store: &Store, reference: &str) -> std::collections::BTreeMap<String, Shown> {
    let img = store.image(reference).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for l in store.layer_indexes(&img.id).unwrap() {
        for e in &l.entries {
            let bytes = if e.kind == FileKind::Regular && e.size > 0 {
                read_all(store, &l.digest, e)
            } else {
                Vec::new()
            };
            out.insert(
                e.path.display().into_owned(),
                (
                    e.kind,
                    e.mode,
                    e.uid,
                    e.gid,
                    e.size,
                    e.link_target.display().into_owned(),
                    bytes,
                ),
            );
        }
    }
    out
}

fn store_at(dir: &Path, lazy_pull: bool) -> Store {
    Store::open(
        dir,
        StoreOptions {
            lazy_pull,
            fetch_profiles: false,
            // These tests measure what the pull itself fetches.
            prefetch_program: false,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn estargz_from_ctr_remote_is_served_lazily_as_the_gzip_image_in_full() {
    require!(
        "estargz_from_ctr_remote_is_served_lazily_as_the_gzip_image_in_full",
        root_unavailable(),
        registry_unavailable(),
        busybox_unavailable(),
        which("ctr-remote"),
        which("containerd")
    );
    let registry = Registry::start().unwrap();
    let src = format!("{}/interop/busybox:gzip", registry.host());
    let dst = format!("{}/interop/busybox:estargz", registry.host());
    fixtures::push_busybox_blocking(&registry.host(), "interop/busybox:gzip", Compression::Gzip)
        .unwrap();
    let ctd = Containerd::start();
    ctd.ctr(&["content", "fetch", "--plain-http", &src])
        .unwrap();
    ctd.ctr(&["image", "optimize", "--no-optimize", "--oci", &src, &dst])
        .unwrap();
    ctd.ctr(&["images", "push", "--plain-http", &dst, &dst])
        .unwrap();
    drop(ctd);

    let rt = common::rt();
    let full_dir = tempfile::tempdir().unwrap();
    let full = store_at(full_dir.path(), false);
    rt.block_on(full.pull(&src, QUIET)).unwrap();
    let lazy_dir = tempfile::tempdir().unwrap();
    let lazy = store_at(lazy_dir.path(), true);
    let before = lazy.bytes_downloaded();
    let img = rt.block_on(lazy.pull(&dst, QUIET)).unwrap();
    let pulled = lazy.bytes_downloaded() - before;
    assert_eq!(img.layers.len(), 1);
    let layer = &img.layers[0];
    assert_eq!(
        (layer.state.as_str(), layer.format.as_str()),
        ("lazy", skiff_store::FORMAT_ESTARGZ)
    );
    assert!(
        pulled < layer.size / 4,
        "lazy pull fetched {pulled} of {}",
        layer.size
    );
    let want = served_tree(&full, &src);
    let got = served_tree(&lazy, &dst);
    assert!(
        want.len() > 20 && want.contains_key("bin/busybox"),
        "{want:?}"
    );
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "paths differ"
    );
    for (p, w) in &want {
        assert!(&got[p] == w, "{p} differs");
    }
    assert!(!got.contains_key(skiff_store::estargz::NO_PREFETCH_LANDMARK));
}

#[test]
fn ctr_remote_accepts_skiffs_estargz_layers_as_they_are() {
    require!(
        "ctr_remote_accepts_skiffs_estargz_layers_as_they_are",
        root_unavailable(),
        registry_unavailable(),
        busybox_unavailable(),
        which("ctr-remote"),
        which("containerd")
    );
    use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
    let registry = Registry::start().unwrap();
    fixtures::push_busybox_blocking(&registry.host(), "interop2/base:gzip", Compression::Gzip)
        .unwrap();
    let rt = common::rt();
    let client = skiff_store::RegistryClient::new(Default::default());
    let parse = |r: &str| skiff_store::ImageReference::parse(r).unwrap();
    let base = rt
        .block_on(client.resolve(&parse(&format!("{}/interop2/base:gzip", registry.host()))))
        .unwrap();
    // Image = busybox (gzip) + a layer skiff writes as eStargz holding files the image's
    // command never opens. stargz-snapshotter 0.12 reuses a layer its analyzer did not see
    // accessed when its own reader opens it and verifies its TOC against the annotation
    // (`isReusableESGZLayer`: estargz.Open + VerifyTOC); otherwise it rewrites it.
    let mut b = tar::Builder::new(Vec::new());
    for (path, len) in [("data/a", 300_000usize), ("data/b", 5usize)] {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(len as u64);
        let data = fixtures::random_bytes(len, len as u64);
        b.append_data(&mut h, path, &data[..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut esgz = Vec::new();
    let opts = skiff_store::estargz::WriterOptions {
        chunk_size: 100_000,
        ..Default::default()
    };
    let written = skiff_store::estargz::write_estargz(&tar, &mut esgz, &opts).unwrap();
    let base_layer = &base.manifest.layers[0];
    let base_blob = std::fs::read(registry.blob_path(&base_layer.digest)).unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(&base.config_bytes).unwrap();
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(written.diff_id.clone().into());
    let config = serde_json::to_vec(&config).unwrap();
    let ours = format!("{}/interop2/two:estargz", registry.host());
    let theirs = format!("{}/interop2/two:reused", registry.host());
    let oci = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    });
    let reference: oci_client::Reference = ours.parse().unwrap();
    let digest = |b: &[u8]| format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)));
    use sha2::Digest;
    rt.block_on(async {
        oci.auth(
            &reference,
            &oci_client::secrets::RegistryAuth::Anonymous,
            oci_client::RegistryOperation::Push,
        )
        .await
        .ok();
        for blob in [&base_blob, &esgz, &config] {
            oci.push_blob(&reference, blob.to_vec(), &digest(blob))
                .await
                .unwrap();
        }
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            config: OciDescriptor {
                media_type: "application/vnd.oci.image.config.v1+json".into(),
                digest: digest(&config),
                size: config.len() as i64,
                ..Default::default()
            },
            layers: vec![
                OciDescriptor {
                    media_type: skiff_store::layer::compression::OCI_LAYER_GZIP.into(),
                    digest: base_layer.digest.clone(),
                    size: base_blob.len() as i64,
                    ..Default::default()
                },
                OciDescriptor {
                    media_type: skiff_store::layer::compression::OCI_LAYER_GZIP.into(),
                    digest: written.digest.clone(),
                    size: esgz.len() as i64,
                    annotations: Some(written.annotations.clone().into_iter().collect()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        oci.push_manifest(&reference, &OciManifest::Image(manifest))
            .await
            .unwrap();
    });
    let ctd = Containerd::start();
    ctd.ctr(&["images", "pull", "--plain-http", &ours]).unwrap();
    ctd.ctr(&[
        "image", "optimize", "--reuse", "--oci", "--period", "1", &ours, &theirs,
    ])
    .unwrap();
    ctd.ctr(&["images", "push", "--plain-http", &theirs, &theirs])
        .unwrap();
    drop(ctd);
    let layers = |r: &str| -> Vec<String> {
        rt.block_on(client.resolve(&parse(r)))
            .unwrap()
            .manifest
            .layers
            .iter()
            .map(|l| l.digest.clone())
            .collect()
    };
    let out = layers(&theirs);
    assert_eq!(out.len(), 2);
    assert_ne!(
        out[0], base_layer.digest,
        "the accessed gzip layer is converted"
    );
    assert_eq!(
        out[1], written.digest,
        "ctr-remote rewrote skiff's eStargz layer"
    );
}
