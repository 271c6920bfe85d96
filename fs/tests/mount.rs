//! Root tests with real FUSE mounts of merged layers whose bytes live in a real data file.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use skiff_fs::{mount, FsError, ImageFs, MountHandle, MountOptions};
use skiff_store::{FileKind, LayerIndex};
use skiff_tests::require;

fn fuse_unavailable() -> Option<String> {
    if Path::new("/dev/fuse").exists() {
        None
    } else {
        Some("no /dev/fuse".into())
    }
}

/// A valid `security.capability` value (the kernel checks its format): VFS_CAP_REVISION_2,
/// effective, permitted = CAP_NET_RAW.
const CAP_NET_RAW_V2: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// Three layers exercising every merge rule and file kind; returns the layers and the
/// expected contents of the regular files.
fn image_layers(data: &mut DataFile) -> (Vec<LayerIndex>, Vec<(&'static str, Vec<u8>)>) {
    let big = noise(3 * CHUNK as usize + 12345, 7);
    let mut suid = file(data, "usr/bin/su", b"#!suid\n");
    suid.mode = 0o4755;
    suid.uid = 0;
    suid.gid = 0;
    let mut owned = file(data, "home/user/notes", b"hello notes\n");
    owned.uid = 1000;
    owned.gid = 1001;
    owned.mode = 0o640;
    owned.mtime = 1_234_567_890;
    owned.mtime_nsec = 123_456_789;
    owned
        .xattrs
        .insert("user.skiff.test".into(), b"value-1".to_vec());
    owned
        .xattrs
        .insert("security.capability".into(), CAP_NET_RAW_V2.to_vec());
    let mut null = entry("dev/null", FileKind::CharDevice, 0o666);
    null.dev_major = 1;
    null.dev_minor = 3;
    let mut sda = entry("dev/sda1", FileKind::BlockDevice, 0o660);
    sda.dev_major = 8;
    sda.dev_minor = 1;
    sda.gid = 6;
    let mut tmp = dir("tmp");
    tmp.mode = 0o1777;
    let l0 = layer(
        "sha256:layer0",
        vec![
            dir("usr"),
            dir("usr/bin"),
            file(data, "usr/bin/busybox", b"BUSYBOX-BINARY"),
            hardlink("usr/bin/sh", "usr/bin/busybox"),
            hardlink("usr/bin/ls", "usr/bin/busybox"),
            suid,
            symlink("bin", "usr/bin"),
            dir("etc"),
            file(data, "etc/passwd", b"root:x:0:0\n"),
            file(data, "etc/removed", b"gone"),
            dir("opaque"),
            file(data, "opaque/lower", b"hidden by opaque"),
            dir("replaced"),
            file(data, "replaced/child", b"child of a dir later replaced"),
            owned,
            null,
            sda,
            entry("run/fifo", FileKind::Fifo, 0o600),
            tmp,
            file(data, "big.bin", &big),
            file(data, "empty", b""),
        ],
    );
    let l1 = layer(
        "sha256:layer1",
        vec![
            dir("etc"),
            whiteout("etc/.wh.removed"),
            file(data, "etc/passwd", b"root:x:0:0\nuser:x:1000:1000\n"),
            whiteout("opaque/.wh..wh..opq"),
            dir("opaque"),
            file(data, "opaque/upper", b"new in opaque"),
            file(data, "replaced", b"now a file"),
            file(data, "etc/later", b"to be whited out"),
        ],
    );
    let l2 = layer(
        "sha256:layer2",
        vec![
            whiteout("etc/.wh.later"),
            whiteout("usr/bin/.wh.ls"),
            file(data, "etc/hostname", b"skiff\n"),
        ],
    );
    let files = vec![
        ("usr/bin/busybox", b"BUSYBOX-BINARY".to_vec()),
        ("usr/bin/sh", b"BUSYBOX-BINARY".to_vec()),
        ("bin/su", b"#!suid\n".to_vec()),
        ("etc/passwd", b"root:x:0:0\nuser:x:1000:1000\n".to_vec()),
        ("etc/hostname", b"skiff\n".to_vec()),
        ("opaque/upper", b"new in opaque".to_vec()),
        ("replaced", b"now a file".to_vec()),
        ("home/user/notes", b"hello notes\n".to_vec()),
        ("big.bin", big),
        ("empty", Vec::new()),
    ];
    (vec![l0, l1, l2], files)
}

struct Mounted {
    _dir: tempfile::TempDir,
    mnt: std::path::PathBuf,
    handle: Option<MountHandle>,
    reader: Arc<FileReader>,
    _guard: UnmountGuard,
}

fn mount_image(
    build: impl FnOnce(&mut DataFile) -> Vec<LayerIndex>,
    options: &MountOptions,
) -> Mounted {
    mount_image_with(false, build, options)
}

fn mount_image_with(
    backing: bool,
    build: impl FnOnce(&mut DataFile) -> Vec<LayerIndex>,
    options: &MountOptions,
) -> Mounted {
    let dir = tempfile::tempdir().unwrap();
    let mut data = DataFile::create(dir.path());
    data.backing = backing;
    let layers = build(&mut data);
    let reader = data.reader();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let fs_ = ImageFs::new(layers, reader.clone()).unwrap();
    let handle = mount(fs_, &mnt, options).unwrap();
    Mounted {
        _guard: UnmountGuard(mnt.clone()),
        mnt,
        handle: Some(handle),
        reader,
        _dir: dir,
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[test]
fn merged_layers_are_served_exactly() {
    require!(
        "merged_layers_are_served_exactly",
        skiff_tests::skip::root_unavailable(),
        fuse_unavailable()
    );
    let mut expected = Vec::new();
    let m = mount_image(
        |d| {
            let (layers, files) = image_layers(d);
            expected = files;
            layers
        },
        &MountOptions::default(),
    );
    let mnt = &m.mnt;
    let line = mountinfo_line(mnt).expect("mounted");
    assert!(line.contains(" ro,nosuid,nodev"), "{line}");
    assert!(line.contains("fuse.skiff"), "{line}");

    // Contents, byte for byte.
    for (path, want) in &expected {
        assert_eq!(&fs::read(mnt.join(path)).unwrap(), want, "{path}");
    }
    // Metadata reads never reach the content reader: listing and stat alone made no reads
    // (contents above did); check a fresh stat of every path does not add any.
    let before = m.reader.calls.load(std::sync::atomic::Ordering::SeqCst);
    for p in [
        "etc",
        "usr/bin/busybox",
        "dev/null",
        "run/fifo",
        "bin",
        "home/user/notes",
    ] {
        fs::symlink_metadata(mnt.join(p)).unwrap();
    }
    names(mnt);
    assert_eq!(
        m.reader.calls.load(std::sync::atomic::Ordering::SeqCst),
        before
    );

    // Whiteouts, opaque dirs, replacements.
    assert_eq!(
        names(&mnt.join("etc")),
        ["hostname", "passwd"].map(String::from).into()
    );
    assert_eq!(names(&mnt.join("opaque")), ["upper".to_string()].into());
    assert!(fs::metadata(mnt.join("replaced")).unwrap().is_file());
    assert_eq!(
        names(mnt),
        [
            "big.bin", "bin", "dev", "empty", "etc", "home", "opaque", "replaced", "run", "tmp",
            "usr"
        ]
        .map(String::from)
        .into()
    );
    assert!(names(mnt).iter().all(|n| !n.starts_with(".wh.")));

    // Modes, owners, times.
    let su = fs::metadata(mnt.join("usr/bin/su")).unwrap();
    assert_eq!(su.mode(), libc::S_IFREG | 0o4755);
    let notes = fs::metadata(mnt.join("home/user/notes")).unwrap();
    assert_eq!(
        (notes.mode(), notes.uid(), notes.gid()),
        (libc::S_IFREG | 0o640, 1000, 1001)
    );
    assert_eq!(
        (notes.mtime(), notes.mtime_nsec()),
        (1_234_567_890, 123_456_789)
    );
    assert_eq!(notes.size(), 12);
    let tmp = fs::metadata(mnt.join("tmp")).unwrap();
    assert_eq!(tmp.mode(), libc::S_IFDIR | 0o1777);
    let home = fs::metadata(mnt.join("home")).unwrap();
    assert_eq!(
        home.permissions().mode() & 0o7777,
        0o755,
        "implicit parent dir"
    );
    let big = fs::metadata(mnt.join("big.bin")).unwrap();
    assert_eq!(big.blocks(), big.size().div_ceil(512));

    // Symlinks.
    assert_eq!(
        fs::read_link(mnt.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert_eq!(
        fs::symlink_metadata(mnt.join("bin")).unwrap().mode(),
        libc::S_IFLNK | 0o777
    );

    // Hard links: one inode, nlink counts the names left after the whiteout of `ls`.
    let bb = fs::metadata(mnt.join("usr/bin/busybox")).unwrap();
    let sh = fs::metadata(mnt.join("usr/bin/sh")).unwrap();
    assert_eq!(bb.ino(), sh.ino());
    assert_eq!(bb.nlink(), 2);
    assert!(!mnt.join("usr/bin/ls").exists());
    // Directory link counts: 2 + subdirectories.
    assert_eq!(fs::metadata(mnt.join("usr")).unwrap().nlink(), 3);

    // Devices and fifos.
    let null = fs::symlink_metadata(mnt.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
    let sda = fs::symlink_metadata(mnt.join("dev/sda1")).unwrap();
    assert!(sda.file_type().is_block_device());
    assert_eq!(
        (libc::major(sda.rdev()), libc::minor(sda.rdev()), sda.gid()),
        (8, 1, 6)
    );
    assert!(fs::symlink_metadata(mnt.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());

    // Extended attributes, including the size query and a too-small buffer.
    let notes_path = mnt.join("home/user/notes");
    assert_eq!(
        getxattr(&notes_path, "user.skiff.test", 64).unwrap(),
        b"value-1"
    );
    assert_eq!(getxattr(&notes_path, "user.skiff.test", 0), Ok(Vec::new()));
    assert_eq!(
        getxattr(&notes_path, "user.skiff.test", 3),
        Err(libc::ERANGE)
    );
    assert_eq!(
        getxattr(&notes_path, "user.missing", 64),
        Err(libc::ENODATA)
    );
    assert_eq!(
        getxattr(&notes_path, "security.capability", 64).unwrap(),
        CAP_NET_RAW_V2
    );
    assert_eq!(
        listxattr(&notes_path),
        b"security.capability\0user.skiff.test\0"
    );

    // Missing names and non-directories.
    let err = fs::metadata(mnt.join("etc/removed")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    let err = fs::metadata(mnt.join("etc/passwd/x")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));

    // Writes are refused.
    let err = fs::File::create(mnt.join("new")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let err = fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("etc/passwd"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));

    // statfs reports the image.
    let st = nix::sys::statvfs::statvfs(mnt.as_path()).unwrap();
    assert!(st.files() >= 20, "{}", st.files());

    let mut m = m;
    m.handle.take().unwrap().unmount().unwrap();
    assert!(!is_mounted(&m.mnt), "nothing left in mountinfo");
}

#[test]
fn overlay_on_top_accepts_writes() {
    require!(
        "overlay_on_top_accepts_writes",
        skiff_tests::skip::root_unavailable(),
        fuse_unavailable()
    );
    let _lock = serial();
    let m = mount_image(|d| image_layers(d).0, &MountOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let overlay = overlay_over(&m.mnt, dir.path());
    let (upper, merged) = (dir.path().join("u"), overlay.0.clone());

    // Read through, modify, create, delete.
    assert_eq!(fs::read(merged.join("etc/hostname")).unwrap(), b"skiff\n");
    fs::write(merged.join("etc/hostname"), b"changed\n").unwrap();
    assert_eq!(fs::read(merged.join("etc/hostname")).unwrap(), b"changed\n");
    fs::write(merged.join("new-file"), b"new").unwrap();
    fs::create_dir(merged.join("opaque/newdir")).unwrap();
    fs::remove_file(merged.join("etc/passwd")).unwrap();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(merged.join("big.bin"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"tail").unwrap();
    drop(f);
    assert_eq!(
        fs::metadata(merged.join("big.bin")).unwrap().len(),
        3 * CHUNK + 12345 + 4
    );
    // Hard links survive copy-up of metadata reads; setuid is visible.
    assert_eq!(
        fs::metadata(merged.join("usr/bin/su")).unwrap().mode(),
        libc::S_IFREG | 0o4755
    );
    assert!(!merged.join("etc/passwd").exists());
    assert_eq!(fs::read(upper.join("new-file")).unwrap(), b"new");
    // The image below is untouched.
    assert_eq!(fs::read(m.mnt.join("etc/hostname")).unwrap(), b"skiff\n");
    assert!(m.mnt.join("etc/passwd").exists());

    unmount_overlay(&merged);
    drop(overlay);
    let mut m = m;
    m.handle.take().unwrap().unmount().unwrap();
    assert!(!is_mounted(&m.mnt));
}

/// Unmounts the overlay at `merged`. The kernel may still hold it for a moment after the
/// last file on it was closed (EBUSY, seen once in CI); retried for up to a second, then
/// detached so nothing stays mounted, and the test fails.
fn unmount_overlay(merged: &Path) {
    for _ in 0..50 {
        match nix::mount::umount2(merged, nix::mount::MntFlags::empty()) {
            Ok(()) => return,
            Err(nix::errno::Errno::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("unmounting the overlay at {}: {e}", merged.display()),
        }
    }
    let _ = nix::mount::umount2(merged, nix::mount::MntFlags::MNT_DETACH);
    panic!(
        "the overlay at {} stayed busy for a second",
        merged.display()
    );
}

#[test]
fn read_failure_is_eio_and_mount_stays_usable() {
    require!(
        "read_failure_is_eio_and_mount_stays_usable",
        skiff_tests::skip::root_unavailable(),
        fuse_unavailable()
    );
    let m = mount_image(
        |d| {
            let good = file(d, "good", b"good bytes");
            let mut bad = file(d, "bad", b"0123456789");
            // Point the chunk past the end of the data file: the reader fails.
            bad.chunks[0].location = skiff_store::ChunkLocation::Local { offset: 1 << 40 };
            vec![layer("sha256:broken", vec![good, bad])]
        },
        &MountOptions::default(),
    );
    let err = fs::read(m.mnt.join("bad")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(
        fs::metadata(m.mnt.join("bad")).unwrap().len(),
        10,
        "metadata still fine"
    );
    assert_eq!(fs::read(m.mnt.join("good")).unwrap(), b"good bytes");
    let err = fs::read(m.mnt.join("bad")).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EIO),
        "no zeros cached after a failure"
    );
    let stats = m.handle.as_ref().unwrap().stats();
    assert!(stats.read_errors() >= 2, "{}", stats.read_errors());
    assert!(stats.bytes_read() >= 10);
}

#[test]
fn a_blocked_read_does_not_stall_metadata_or_other_reads() {
    require!(
        "a_blocked_read_does_not_stall_metadata_or_other_reads",
        skiff_tests::skip::root_unavailable(),
        fuse_unavailable()
    );
    let m = mount_image(
        |d| {
            vec![
                layer("sha256:slow", vec![file(d, "slow", b"slow bytes")]),
                layer(
                    "sha256:fast",
                    vec![file(d, "fast", b"fast bytes"), dir("d")],
                ),
            ]
        },
        &MountOptions {
            fuse_threads: 1,
            read_threads: 4,
            ..Default::default()
        },
    );
    m.reader.gate.close_for("sha256:slow");
    let slow_path = m.mnt.join("slow");
    let slow = std::thread::spawn(move || fs::read(slow_path));
    // Wait until the slow read is inside the reader.
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.reader.calls.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "slow read never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    // With a single session thread, these only succeed because the read runs elsewhere.
    let mnt = m.mnt.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ok = fs::metadata(mnt.join("d")).unwrap().is_dir()
            && names(&mnt).len() == 3
            && fs::read(mnt.join("fast")).unwrap() == b"fast bytes";
        let _ = tx.send(ok);
    });
    let result = rx.recv_timeout(Duration::from_secs(5));
    let still_blocked = !slow.is_finished();
    m.reader.gate.open(); // unblock everything before asserting
    assert_eq!(
        result,
        Ok(true),
        "metadata and other reads stalled behind a slow read"
    );
    assert!(still_blocked);
    m.reader.gate.open();
    assert_eq!(slow.join().unwrap().unwrap(), b"slow bytes");
}

#[test]
fn many_parallel_readers_get_identical_bytes() {
    require!(
        "many_parallel_readers_get_identical_bytes",
        skiff_tests::skip::root_unavailable(),
        fuse_unavailable()
    );
    let mut want = Vec::new();
    let m = mount_image(
        |d| {
            want = (0..8)
                .map(|i| noise(200_000 + i * 777, i as u64 + 1))
                .collect();
            let entries = want
                .iter()
                .enumerate()
                .map(|(i, w)| file(d, &format!("f{i}"), w))
                .collect();
            vec![layer("sha256:par", entries)]
        },
        &MountOptions::default(),
    );
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let p = m.mnt.join(format!("f{i}"));
            std::thread::spawn(move || fs::read(p).unwrap())
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), want[i], "f{i}");
    }
}

#[test]
fn mount_errors_name_the_path_and_step() {
    require!(
        "mount_errors_name_the_path_and_step",
        skiff_tests::skip::root_unavailable(),
        fuse_unavailable()
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist");
    let reader = DataFile::create(dir.path()).reader();
    let fs_ = ImageFs::new(vec![], reader).unwrap();
    let err = mount(fs_, &missing, &MountOptions::default()).unwrap_err();
    match &err {
        FsError::Mount { path, step, source } => {
            assert_eq!(path, &missing);
            assert_eq!(*step, "mount(2)");
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("does-not-exist"), "{err}");
}

#[test]
fn drop_unmounts() {
    require!(
        "drop_unmounts",
        skiff_tests::skip::root_unavailable(),
        fuse_unavailable()
    );
    let m = mount_image(
        |d| vec![layer("sha256:x", vec![file(d, "a", b"a")])],
        &MountOptions::default(),
    );
    let mnt = m.mnt.clone();
    assert!(is_mounted(&mnt));
    let Mounted { handle, _dir, .. } = m;
    drop(handle);
    assert!(!is_mounted(&mnt));
}

#[test]
fn unmount_returns_while_a_file_is_still_open() {
    require!(
        "unmount_returns_while_a_file_is_still_open",
        skiff_tests::skip::root_unavailable(),
        fuse_unavailable()
    );
    let mut m = mount_image(
        |d| vec![layer("sha256:x", vec![file(d, "a", b"still readable")])],
        &MountOptions {
            release_timeout: Duration::from_millis(200),
            ..Default::default()
        },
    );
    let open = fs::File::open(m.mnt.join("a")).unwrap();
    let t = Instant::now();
    m.handle.take().unwrap().unmount().unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(!is_mounted(&m.mnt));
    // The detached mount keeps serving the open file until it is closed.
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut &open, &mut buf).unwrap();
    assert_eq!(buf, b"still readable");
    drop(open);
}

/// Tests stacking overlayfs run one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Mounts overlayfs at `dir/m` with `lower` as its lower layer.
fn overlay_over(lower: &Path, dir: &Path) -> UnmountGuard {
    let (upper, work, merged) = (dir.join("u"), dir.join("w"), dir.join("m"));
    for d in [&upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .unwrap();
    UnmountGuard(merged)
}

#[test]
fn passthrough_serves_cached_files_without_the_daemon() {
    require!(
        "passthrough_serves_cached_files_without_the_daemon",
        skiff_tests::skip::root_unavailable(),
        fuse_unavailable()
    );
    let _lock = serial();
    let big = noise(3 * CHUNK as usize + 99, 3);
    let mut want = big.clone();
    let mut m = mount_image_with(
        true,
        |d| {
            let entries = vec![file(d, "big", &big), file(d, "small", b"small file\n")];
            vec![layer("sha256:pt", entries)]
        },
        &MountOptions::default(),
    );
    let stats = m.handle.as_ref().unwrap().stats();
    require!(
        "passthrough_serves_cached_files_without_the_daemon",
        (!stats.passthrough_enabled()).then(|| "kernel offers no FUSE passthrough".to_string())
    );
    // Two handles open at once share the inode's backing file.
    let a = fs::File::open(m.mnt.join("big")).unwrap();
    assert_eq!(fs::read(m.mnt.join("big")).unwrap(), want);
    drop(a);
    assert_eq!(fs::read(m.mnt.join("small")).unwrap(), b"small file\n");
    let stats = m.handle.as_ref().unwrap().stats();
    assert!(
        stats.passthrough_opens() >= 3,
        "{}",
        stats.passthrough_opens()
    );
    assert_eq!(stats.reads(), 0, "no read reached the daemon");

    // overlayfs still stacks on a passthrough mount, and reads through it.
    let dir = tempfile::tempdir().unwrap();
    let overlay = overlay_over(&m.mnt, dir.path());
    assert_eq!(fs::read(overlay.0.join("big")).unwrap(), want);
    want.extend_from_slice(b"more");
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(overlay.0.join("big"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"more").unwrap();
    drop(f);
    assert_eq!(fs::read(overlay.0.join("big")).unwrap(), want);
    unmount_overlay(&overlay.0);
    drop(overlay);
    m.handle.take().unwrap().unmount().unwrap();
}

#[test]
fn large_directories_list_completely_across_readdir_calls() {
    require!(
        "large_directories_list_completely_across_readdir_calls",
        skiff_tests::skip::root_unavailable(),
        fuse_unavailable()
    );
    let names_in: BTreeSet<String> = (0..3000)
        .map(|i| format!("a-rather-long-file-name-to-fill-readdir-buffers-{i:05}"))
        .collect();
    let m = mount_image(
        |d| {
            let entries = names_in
                .iter()
                .map(|n| file(d, &format!("big/{n}"), b""))
                .collect();
            vec![layer("sha256:dir", entries)]
        },
        &MountOptions::default(),
    );
    assert_eq!(names(&m.mnt.join("big")), names_in);
    // Listed entries carry their attributes (readdirplus) and types.
    for e in fs::read_dir(m.mnt.join("big")).unwrap().take(10) {
        let e = e.unwrap();
        assert!(e.file_type().unwrap().is_file());
        assert_eq!(e.metadata().unwrap().len(), 0);
    }
    assert_eq!(fs::metadata(m.mnt.join("big")).unwrap().nlink(), 2);
}

#[test]
fn other_users_read_with_kernel_permission_checks() {
    require!(
        "other_users_read_with_kernel_permission_checks",
        skiff_tests::skip::root_unavailable(),
        fuse_unavailable()
    );
    use std::os::unix::process::CommandExt;
    let m = mount_image(|d| image_layers(d).0, &MountOptions::default());
    // Let uid 65534 reach the mount point.
    fs::set_permissions(m._dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let cat_as_nobody = |path: &str| {
        std::process::Command::new("cat")
            .arg(m.mnt.join(path))
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let ok = cat_as_nobody("etc/hostname");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(ok.stdout, b"skiff\n");
    // home/user/notes is 0640 1000:1001: default_permissions makes the kernel refuse.
    let denied = cat_as_nobody("home/user/notes");
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
}
