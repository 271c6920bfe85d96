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
