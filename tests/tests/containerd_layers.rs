//! containerd stacks skiff's per-layer snapshots itself: a three-layer image whose first and
//! last layers are zstd:chunked (served lazily, in overlay format) and whose middle layer is
//! gzip (unpacked by containerd onto the lazy layer below) keeps the OCI meaning of
//! whiteouts, opaque directories and hard links when a container reads it.

use std::io::Write;

use anyhow::{Context, Result};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use skiff_store::chunked::{self, WriterOptions};
use skiff_tests::containerd::{containerd_unavailable, mounts_under, Containerd};
use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, Daemon, Registry};

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A tar of `(path, contents)` regular files, `(path, None)` directories and
/// `(path, Some(b"->target"))` hard links.
fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match data {
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
            Some(d) if d.starts_with(b"->") => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                let target = std::str::from_utf8(&d[2..]).unwrap();
                b.append_link(&mut h, path, target).unwrap();
            }
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, path, *d).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// The busybox fixture rootfs as a tar (symlinks kept as symlinks).
fn busybox_tar() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(dir.path()).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir.path()).unwrap();
    b.into_inner().unwrap()
}

struct Layer {
    media_type: &'static str,
    blob: Vec<u8>,
    diff_id: String,
    annotations: std::collections::BTreeMap<String, String>,
}

fn chunked_layer(tar: &[u8]) -> Layer {
    let mut blob = Vec::new();
    let l = chunked::write_zstd_chunked(tar, &mut blob, &WriterOptions::default()).unwrap();
    Layer {
        media_type: chunked::writer::MEDIA_TYPE_LAYER_ZSTD,
        blob,
        diff_id: l.diff_id,
        annotations: l.annotations,
    }
}

fn gzip_layer(tar: &[u8]) -> Layer {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    Layer {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
        blob: gz.finish().unwrap(),
        diff_id: sha256(tar),
        annotations: Default::default(),
    }
}

async fn push(registry: &Registry, repo_tag: &str, layers: &[Layer]) -> Result<()> {
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let reference: Reference = format!("{}/{repo_tag}", registry.host()).parse()?;
    let _ = client
        .auth(
            &reference,
            &RegistryAuth::Anonymous,
            oci_client::RegistryOperation::Push,
        )
        .await;
    let mut descriptors = Vec::new();
    for l in layers {
        let digest = sha256(&l.blob);
        client
            .push_blob(&reference, l.blob.clone(), &digest)
            .await
            .context("pushing a layer")?;
        descriptors.push(OciDescriptor {
            media_type: l.media_type.into(),
            digest,
            size: l.blob.len() as i64,
            annotations: (!l.annotations.is_empty())
                .then(|| l.annotations.clone().into_iter().collect()),
            ..Default::default()
        });
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin:/sbin:/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()},
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = sha256(&config_bytes);
    client
        .push_blob(&reference, config_bytes.clone(), &config_digest)
        .await
        .context("pushing the config")?;
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
        config: OciDescriptor {
            media_type: "application/vnd.oci.image.config.v1+json".into(),
            digest: config_digest,
            size: config_bytes.len() as i64,
            ..Default::default()
        },
        layers: descriptors,
        ..Default::default()
    };
    client
        .push_manifest(&reference, &OciManifest::Image(manifest))
        .await
        .context("pushing the manifest")?;
    Ok(())
}

mod containerd_support;
use containerd_support as support;

#[test]
fn whiteouts_opaque_dirs_and_hard_links_hold_across_lazy_and_unpacked_layers() {
    let name = "whiteouts_opaque_dirs_and_hard_links_hold_across_lazy_and_unpacked_layers";
    require!(
        name,
        root_unavailable(),
        registry_unavailable(),
        fixtures::busybox_unavailable(),
        containerd_unavailable()
    );
    let reg = Registry::start().unwrap();
    let mut base = busybox_tar();
    // The busybox tar's end-of-archive blocks go; the extra entries follow it.
    base.truncate(base.len() - 1024);
    base.extend(tar_of(&[
        ("keep", None),
        ("keep/a", Some(b"a\n")),
        ("keep/b", Some(b"b\n")),
        ("keep/c", Some(b"c\n")),
        ("opq", None),
        ("opq/old", Some(b"old\n")),
    ]));
    let middle = tar_of(&[("keep/.wh.b", Some(b"")), ("gz.txt", Some(b"from gzip\n"))]);
    let top = tar_of(&[
        ("keep/.wh.a", Some(b"")),
        ("opq", None),
        ("opq/.wh..wh..opq", Some(b"")),
        ("opq/new", Some(b"new\n")),
        ("hl", None),
        ("hl/x", Some(b"linked\n")),
        ("hl/y", Some(b"->hl/x")),
    ]);
    let layers = [
        chunked_layer(&base),
        gzip_layer(&middle),
        chunked_layer(&top),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(push(&reg, "ctrd/layers:mixed", &layers))
        .unwrap();
    let image = format!("{}/ctrd/layers:mixed", reg.host());

    let d = Daemon::start().unwrap();
    let mut c = Containerd::start(&d.exec_root.join("snapshotter.sock"), &reg.host()).unwrap();
    support::cri_pull(&c, &image);
    let lazy = mounts_under(&d.data_root.join("snapshotter"));
    assert_eq!(
        lazy.len(),
        2,
        "the two zstd:chunked layers are served lazily: {lazy:?}"
    );

    let out = c.ctr_ok(&[
        "-n", "k8s.io", "run", "--rm", "--snapshotter", "skiff", &image, "layers1", "/bin/sh", "-c",
        "echo keep: $(ls /keep); echo opq: $(ls /opq); cat /gz.txt; cat /hl/y; \
         echo links: $(ls -l /hl/x | awk '{print $2}') $(ls -i /hl/x | awk '{print $1}') $(ls -i /hl/y | awk '{print $1}')",
    ]);
    assert!(
        out.contains("keep: c\n"),
        "whiteouts of both kinds of layers:\n{out}"
    );
    assert!(
        out.contains("opq: new\n"),
        "the opaque directory hides the lower one:\n{out}"
    );
    assert!(out.contains("from gzip\n"), "{out}");
    assert!(out.contains("linked\n"), "{out}");
    let links: Vec<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("links: "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(links[0], "2", "two names for hl/x:\n{out}");
    assert_eq!(links[1], links[2], "hl/x and hl/y share an inode:\n{out}");

    // A hard link to a file of a lower layer: no per-layer view can hold it, so that layer
    // is not served lazily but unpacked, and containerd's applier then refuses it exactly
    // as it does on its own overlayfs snapshotter (it links inside the upper directory).
    let cross = tar_of(&[("hl2", None), ("hl2/z", Some(b"->keep/c"))]);
    rt.block_on(push(
        &reg,
        "ctrd/layers:crosslink",
        &[chunked_layer(&base), chunked_layer(&cross)],
    ))
    .unwrap();
    let crosslink = format!("{}/ctrd/layers:crosslink", reg.host());
    let skiff_err = support::try_cri_pull(&c, &crosslink).unwrap_err();
    let overlay = c.ctr(&[
        "image",
        "pull",
        "--plain-http",
        "--snapshotter",
        "overlayfs",
        &crosslink,
    ]);
    let overlay_err = String::from_utf8_lossy(&overlay.stderr);
    assert!(!overlay.status.success());
    for err in [skiff_err.as_str(), &*overlay_err] {
        assert!(
            err.contains("failed to extract layer")
                && err.contains("hl2/z: no such file or directory"),
            "{err}"
        );
    }
    assert_eq!(
        mounts_under(&d.data_root.join("snapshotter")).len(),
        2,
        "the cross-linked layer is not served lazily"
    );
    c.stop();
}
