//! skiff's daemon as containerd's remote snapshotter, driven by a private, real containerd
//! 1.6 (Debian's) and its stock `ctr`: a gzip image is unpacked by containerd into skiff's
//! snapshots and runs under runc; a zstd:chunked image pulled through the CRI plugin (the
//! kubelet's path, with snapshot annotations) is served lazily and runs fetching a small
//! part of it; removal and containerd's garbage collection leave nothing behind.

use std::time::{Duration, Instant};

use skiff_store::Compression;
use skiff_tests::containerd::{containerd_unavailable, mounts_under, Containerd};
use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, Daemon, Registry};

/// Snapshot directories of skiff's snapshotter (`<data-root>/snapshotter/snapshots/<id>`).
fn snapshot_dirs(d: &Daemon) -> Vec<String> {
    let dir = d.data_root.join("snapshotter/snapshots");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Waits until `cond` holds (containerd's GC runs in the background).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn gzip_image_is_unpacked_into_skiff_snapshots_and_runs_under_ctr() {
    let name = "gzip_image_is_unpacked_into_skiff_snapshots_and_runs_under_ctr";
    require!(
        name,
        root_unavailable(),
        registry_unavailable(),
        fixtures::busybox_unavailable(),
        containerd_unavailable()
    );
    let reg = Registry::start().unwrap();
    let image = format!("{}/ctrd/busybox:gzip", reg.host());
    fixtures::push_busybox_blocking(&reg.host(), "ctrd/busybox:gzip", Compression::Gzip).unwrap();
    let d = Daemon::start().unwrap();
    let snap_sock = d.exec_root.join("snapshotter.sock");
    assert!(
        snap_sock.exists(),
        "no snapshotter socket at {}",
        snap_sock.display()
    );
    let mut c = Containerd::start(&snap_sock, &reg.host()).unwrap();

    c.ctr_ok(&[
        "image",
        "pull",
        "--plain-http",
        "--snapshotter",
        "skiff",
        &image,
    ]);
    let snaps = c.ctr_ok(&["snapshots", "--snapshotter", "skiff", "ls"]);
    assert!(
        snaps.contains("Committed"),
        "no committed snapshot:\n{snaps}"
    );
    assert_eq!(
        snapshot_dirs(&d).len(),
        1,
        "one layer, one snapshot directory"
    );

    let out = c.ctr_ok(&[
        "run",
        "--rm",
        "--snapshotter",
        "skiff",
        &image,
        "gz1",
        "/bin/sh",
        "-c",
        "echo hello from $(cat /etc/hostname 2>/dev/null || echo skiff); ls /bin/busybox",
    ]);
    assert!(out.contains("hello from"), "{out}");
    assert!(out.contains("/bin/busybox"), "{out}");

    // The container's snapshot went with it; removing the image lets GC take the layer.
    c.ctr_ok(&["image", "rm", "--sync", &image]);
    eventually("skiff's snapshots to be garbage-collected", || {
        c.ctr_ok(&["snapshots", "--snapshotter", "skiff", "ls"])
            .lines()
            .count()
            <= 1
    });
    eventually("snapshot directories to be removed", || {
        snapshot_dirs(&d).is_empty()
    });
    assert!(
        mounts_under(&d.data_root).is_empty(),
        "mounts left: {:?}",
        mounts_under(&d.data_root)
    );
    c.stop();
}
