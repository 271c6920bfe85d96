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

mod containerd_support;
use containerd_support as support;

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
    // ctr's own snapshot commands: an active child's mounts stack the layer under an
    // overlay; its parent cannot go while it exists (containerd checks first, as skiff
    // does); rm removes its directory.
    let layer = snaps
        .lines()
        .find(|l| l.contains("Committed"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let mounts = c.ctr_ok(&[
        "snapshots",
        "--snapshotter",
        "skiff",
        "prepare",
        "--mounts",
        "child",
        &layer,
    ]);
    assert!(
        mounts.contains("\"overlay\"") && mounts.contains("lowerdir="),
        "{mounts}"
    );
    assert_eq!(snapshot_dirs(&d).len(), 2);
    let rm_parent = c.ctr(&["snapshots", "--snapshotter", "skiff", "rm", &layer]);
    assert!(
        !rm_parent.status.success(),
        "a parent with a child was removed"
    );
    c.ctr_ok(&["snapshots", "--snapshotter", "skiff", "rm", "child"]);
    // containerd removes from the backend in its garbage collection, just after.
    eventually("the child's directory to go", || {
        snapshot_dirs(&d).len() == 1
    });
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

/// Bytes the registry sent for blob GETs in its access log after byte `from` of the log.
fn blob_bytes_served(reg: &Registry, from: usize) -> u64 {
    let log = std::fs::read_to_string(reg.log_path()).unwrap();
    log[from..]
        .lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/"))
        .filter_map(|l| {
            let rest = &l[l.find("HTTP/1.1\" ")? + 10..];
            let mut it = rest.split_whitespace();
            let _status = it.next()?;
            it.next()?.parse::<u64>().ok()
        })
        .sum()
}

fn log_len(reg: &Registry) -> usize {
    std::fs::metadata(reg.log_path()).unwrap().len() as usize
}

#[test]
fn zstd_chunked_image_pulled_through_cri_is_served_lazily_and_runs() {
    let name = "zstd_chunked_image_pulled_through_cri_is_served_lazily_and_runs";
    require!(
        name,
        root_unavailable(),
        registry_unavailable(),
        fixtures::busybox_unavailable(),
        containerd_unavailable()
    );
    let reg = Registry::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let big = fixtures::random_bytes(24 << 20, 5);
    std::fs::write(rootfs.path().join("data/big"), &big).unwrap();
    std::fs::write(rootfs.path().join("data/note.txt"), b"served lazily\n").unwrap();
    let gzip = format!("{}/ctrd/lazy:gzip", reg.host());
    let chunked = format!("{}/ctrd/lazy:chunked", reg.host());
    {
        // Published by another daemon, so the snapshotter's store starts empty.
        let publisher = Daemon::start().unwrap();
        publisher.ok(&["image", "import", rootfs.path().to_str().unwrap(), &gzip]);
        publisher.ok(&["push", &gzip]);
        publisher.ok(&["image", "convert", &gzip, &chunked]);
    }
    let mut d = Daemon::start().unwrap();
    let mut c = Containerd::start(&d.exec_root.join("snapshotter.sock"), &reg.host()).unwrap();

    let from = log_len(&reg);
    let started = Instant::now();
    let image_ref = support::cri_pull(&c, &chunked);
    let pull_time = started.elapsed();
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    let pulled = blob_bytes_served(&reg, from);
    let lazy_mounts: Vec<_> = mounts_under(&d.data_root.join("snapshotter"));
    assert_eq!(
        lazy_mounts.len(),
        1,
        "one lazily served layer: {lazy_mounts:?}"
    );
    assert!(
        pulled < 2 << 20,
        "the pull fetched {pulled} blob bytes: more than config and TOC"
    );

    let started = Instant::now();
    let out = c.ctr_ok(&[
        "-n",
        "k8s.io",
        "run",
        "--rm",
        "--snapshotter",
        "skiff",
        &chunked,
        "lazy1",
        "/bin/sh",
        "-c",
        "cat /data/note.txt; ls -ln /data/big",
    ]);
    let run_time = started.elapsed();
    assert!(out.contains("served lazily"), "{out}");
    assert!(out.contains(&big.len().to_string()), "{out}");
    let fetched = blob_bytes_served(&reg, from);
    assert!(
        fetched < (big.len() as u64) / 4,
        "pull + run fetched {fetched} bytes of a {} byte image",
        big.len()
    );
    // For scale (not asserted): containerd's own overlayfs snapshotter on the same image.
    let started = Instant::now();
    c.ctr_ok(&[
        "image",
        "pull",
        "--plain-http",
        "--snapshotter",
        "overlayfs",
        &chunked,
    ]);
    let overlay_pull = started.elapsed();
    eprintln!(
        "containerd + skiff: CRI pull {pull_time:?} ({pulled} blob bytes), first run {run_time:?} \
         ({fetched} bytes in all); image > {} bytes; ctr pull with overlayfs {overlay_pull:?}",
        big.len()
    );

    // A container running on the lazy layer keeps reading it across a daemon restart (the
    // mount's descriptor keeper holds the FUSE connection; the new daemon resumes it), and
    // new containers start again once containerd's connection to the proxy plugin, which
    // backs off while skiff is down, is back.
    c.ctr_ok(&[
        "-n",
        "k8s.io",
        "run",
        "-d",
        "--snapshotter",
        "skiff",
        &chunked,
        "running",
        "/bin/sleep",
        "600",
    ]);
    d.restart().unwrap();
    let exec = c.ctr_ok(&[
        "-n",
        "k8s.io",
        "task",
        "exec",
        "--exec-id",
        "e1",
        "running",
        "/bin/sh",
        "-c",
        "cat /data/note.txt; head -c 1000 /data/big | wc -c",
    ]);
    assert_eq!(
        exec, "served lazily\n1000\n",
        "a file first read after the restart"
    );
    c.ctr_ok(&["-n", "k8s.io", "task", "kill", "-s", "SIGKILL", "running"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c
        .ctr(&["-n", "k8s.io", "task", "rm", "running"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "the killed task did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.ctr_ok(&["-n", "k8s.io", "container", "rm", "running"]);
    let run = |id: &str| {
        c.ctr(&[
            "-n",
            "k8s.io",
            "run",
            "--rm",
            "--snapshotter",
            "skiff",
            &chunked,
            id,
            "/bin/cat",
            "/data/note.txt",
        ])
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut attempt = 0;
    let out = loop {
        attempt += 1;
        let o = run(&format!("lazy2-{attempt}"));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        if o.status.success() || !err.contains("unavailable") || Instant::now() > deadline {
            assert!(o.status.success(), "ctr run after the restart: {err}");
            break String::from_utf8_lossy(&o.stdout).into_owned();
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(out, "served lazily\n");
    assert_eq!(mounts_under(&d.data_root.join("snapshotter")).len(), 1);

    // skiff's own image of the same layer shares the store; removing it keeps the layer
    // containerd holds (a region never read before still reads).
    d.ok(&["pull", &chunked]);
    d.ok(&["rmi", &chunked]);
    let tail = c.ctr_ok(&[
        "-n",
        "k8s.io",
        "run",
        "--rm",
        "--snapshotter",
        "skiff",
        &chunked,
        "lazy3",
        "/bin/sh",
        "-c",
        "tail -c 1000 /data/big | wc -c",
    ]);
    assert_eq!(tail, "1000\n");

    // Removing the image (CRI records it under its tag, its repo digest and its id) lets
    // containerd's GC remove the snapshot; the FUSE mount goes with it.
    let refs = c.ctr_ok(&["-n", "k8s.io", "image", "ls", "-q"]);
    let mut rm = vec!["-n", "k8s.io", "image", "rm", "--sync"];
    rm.extend(refs.lines().filter(|l| !l.is_empty()));
    assert!(rm.len() >= 6, "the tag, repo digest and id refs: {refs}");
    c.ctr_ok(&rm);
    let unmounted = || mounts_under(&d.data_root.join("snapshotter")).is_empty();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !unmounted() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        unmounted(),
        "the lazy layer is still mounted; snapshots:\n{}\nskiff log:\n{}",
        c.ctr_ok(&["-n", "k8s.io", "snapshots", "--snapshotter", "skiff", "ls"]),
        d.log_text()
    );
    eventually("snapshot directories to be removed", || {
        snapshot_dirs(&d).is_empty()
    });
    eventually("the lazy mount's descriptor keeper to exit", || {
        d.helpers("__fuse-keeper").is_empty()
    });
    let layers = std::process::Command::new("sqlite3")
        .arg(d.data_root.join("skiff.db"))
        .arg("SELECT count(*) FROM layers")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&layers.stdout),
        "0\n",
        "the released layer left the store"
    );
    c.stop();
}

#[test]
fn snapshotter_socket_moves_with_the_flag_and_an_empty_path_turns_it_off() {
    let name = "snapshotter_socket_moves_with_the_flag_and_an_empty_path_turns_it_off";
    require!(name, root_unavailable());
    let dir = tempfile::tempdir().unwrap();
    let moved = dir.path().join("k8s/skiff-snap.sock");
    let d = Daemon::start_with(&["--snapshotter-socket", moved.to_str().unwrap()]).unwrap();
    assert!(moved.exists(), "no socket at {}", moved.display());
    assert!(!d.exec_root.join("snapshotter.sock").exists());
    drop(d);
    assert!(!moved.exists(), "the socket is removed at shutdown");
    let off = Daemon::start_with(&["--snapshotter-socket", ""]).unwrap();
    assert!(!off.exec_root.join("snapshotter.sock").exists());
    assert!(
        off.log_text().contains("skiff daemon listening")
            && !off.log_text().contains("snapshotter listening"),
        "{}",
        off.log_text()
    );
}
