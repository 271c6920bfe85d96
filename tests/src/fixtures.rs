//! Fixture images built in code: a busybox root filesystem (Debian's static
//! `/bin/busybox`) with the awkward file kinds images carry, imported with skiff's own
//! store and pushed to a test registry.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use skiff_store::{Compression, ImageChanges, Store, StoreOptions};

/// The static busybox the rootfs is made from; `SKIFF_TEST_BUSYBOX` overrides it.
pub fn busybox_bin() -> PathBuf {
    std::env::var_os("SKIFF_TEST_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"))
}

/// Why busybox fixtures cannot be built here, if they cannot.
pub fn busybox_unavailable() -> Option<String> {
    let b = busybox_bin();
    if b.is_file() {
        None
    } else {
        Some(format!(
            "{} not found (apt-get install busybox-static)",
            b.display()
        ))
    }
}

/// Applets linked in `/bin` (all point at `busybox`).
pub const APPLETS: &[&str] = &[
    "sh",
    "ash",
    "ls",
    "cat",
    "echo",
    "sleep",
    "true",
    "false",
    "ps",
    "id",
    "hostname",
    "mount",
    "umount",
    "env",
    "wc",
    "sha256sum",
    "md5sum",
    "httpd",
    "ping",
    "ip",
    "ifconfig",
    "mkdir",
    "rm",
    "cp",
    "mv",
    "ln",
    "grep",
    "head",
    "tail",
    "touch",
    "chmod",
    "chown",
    "stat",
    "uname",
    "sed",
    "awk",
    "kill",
    "top",
    "nc",
    "wget",
    "find",
    "readlink",
    "dd",
    "whoami",
    "pwd",
    "test",
    "printf",
    "seq",
    "sort",
    "uniq",
    "tr",
    "cut",
    "date",
    "df",
    "du",
    "free",
    "xargs",
    "yes",
    "vi",
    "less",
    "more",
    "tee",
    "basename",
    "dirname",
    "nslookup",
    "getty",
    "init",
    "halt",
    "ulimit",
    "mknod",
    "mkfifo",
    "od",
    "hexdump",
    "xxd",
    "timeout",
    "watch",
    "which",
    "tar",
    "gzip",
    "gunzip",
    "zcat",
    "su",
    "login",
    "passwd",
    "cmp",
    "diff",
    "expr",
    "nproc",
    "setsid",
];

/// Paths (relative to the rootfs) of the special entries, for tests to check.
pub const SETUID_FILE: &str = "bin/suid-marker";
pub const HARDLINK_TARGET: &str = "etc/motd";
pub const HARDLINK: &str = "etc/motd.hardlink";
pub const XATTR_FILE: &str = "etc/xattr-file";
pub const XATTR_NAME: &str = "user.skiff";
pub const XATTR_VALUE: &[u8] = b"test";
pub const FIFO: &str = "var/fifo";
/// A char device (1:3, like /dev/null), made only when running as root.
pub const CHAR_DEVICE: &str = "dev/null";
/// 1 MiB of deterministic pseudo-random bytes, for byte-exact read-back checks.
pub const RANDOM_FILE: &str = "data/random.bin";
pub const HELLO_FILE: &str = "data/hello.txt";
pub const HELLO: &[u8] = b"hello from skiff\n";
/// A file owned by nobody (65534:65534) with mode 0640.
pub const NOBODY_FILE: &str = "data/nobody.txt";
/// Fixed mtime of every entry, so the same busybox always gives the same image digest.
pub const MTIME: i64 = 1_700_000_000;

/// Deterministic pseudo-random bytes (xorshift), the content of [`RANDOM_FILE`].
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write(root: &Path, rel: &str, data: &[u8], mode: u32) -> Result<()> {
    let p = root.join(rel);
    std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    let p = CString::new(path.as_os_str().as_bytes())?;
    let n = CString::new(name)?;
    // SAFETY: valid NUL-terminated strings and a buffer of value.len() bytes.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        bail!(
            "setxattr {name} on {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn set_mtime_tree(root: &Path) -> Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(MTIME, 0);
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            }
            all.push(e.path());
        }
    }
    // Children before parents: touching a child changes its directory's mtime.
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in all {
        utimensat(None, &p, &t, &t, UtimensatFlags::NoFollowSymlink)
            .with_context(|| format!("utimensat {}", p.display()))?;
    }
    Ok(())
}

/// Builds the busybox root filesystem in `root` (an empty directory).
pub fn build_busybox_rootfs(root: &Path) -> Result<()> {
    let is_root = nix::unistd::geteuid().is_root();
    for (d, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("var", 0o755),
        ("data", 0o755),
        ("home", 0o755),
    ] {
        let p = root.join(d);
        std::fs::create_dir_all(&p)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    }
    let busybox = std::fs::read(busybox_bin())
        .with_context(|| format!("reading {}", busybox_bin().display()))?;
    write(root, "bin/busybox", &busybox, 0o755)?;
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a))?;
    }
    write(
        root,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
        0o644,
    )?;
    write(root, "etc/group", b"root:x:0:\nnobody:x:65534:\n", 0o644)?;
    write(root, "etc/hostname", b"skiff-fixture\n", 0o644)?;
    write(root, SETUID_FILE, b"#!/bin/sh\necho suid\n", 0o4755)?;
    write(
        root,
        HARDLINK_TARGET,
        b"welcome to the skiff busybox fixture\n",
        0o644,
    )?;
    std::fs::hard_link(root.join(HARDLINK_TARGET), root.join(HARDLINK))?;
    write(root, XATTR_FILE, b"has an xattr\n", 0o644)?;
    set_xattr(&root.join(XATTR_FILE), XATTR_NAME, XATTR_VALUE)?;
    nix::unistd::mkfifo(
        &root.join(FIFO),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )?;
    write(root, RANDOM_FILE, &random_bytes(1 << 20, 42), 0o644)?;
    write(root, HELLO_FILE, HELLO, 0o644)?;
    write(root, NOBODY_FILE, b"owned by nobody\n", 0o640)?;
    if is_root {
        nix::unistd::chown(
            &root.join(NOBODY_FILE),
            Some(nix::unistd::Uid::from_raw(65534)),
            Some(nix::unistd::Gid::from_raw(65534)),
        )?;
        nix::sys::stat::mknod(
            &root.join(CHAR_DEVICE),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )?;
    }
    set_mtime_tree(root)?;
    Ok(())
}

/// The config of the busybox fixture image.
pub fn busybox_changes() -> ImageChanges {
    ImageChanges {
        cmd: Some(vec!["sh".to_string()]),
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()],
        created: Some("2023-11-14T22:13:20Z".to_string()),
        ..Default::default()
    }
}

/// Builds the busybox image and pushes it as `<registry_host>/<repo_tag>` with layer
/// compression `compression`; returns the manifest digest.
pub async fn push_busybox(
    registry_host: &str,
    repo_tag: &str,
    compression: Compression,
) -> Result<String> {
    let tmp = tempfile::Builder::new()
        .prefix("skiff-fixture-")
        .tempdir()?;
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir(&rootfs)?;
    build_busybox_rootfs(&rootfs)?;
    push_rootfs(
        &rootfs,
        registry_host,
        repo_tag,
        &busybox_changes(),
        compression,
    )
    .await
}

/// Imports `rootfs` into a scratch store and pushes it as `<registry_host>/<repo_tag>`.
pub async fn push_rootfs(
    rootfs: &Path,
    registry_host: &str,
    repo_tag: &str,
    changes: &ImageChanges,
    compression: Compression,
) -> Result<String> {
    let tmp = tempfile::Builder::new()
        .prefix("skiff-fixture-store-")
        .tempdir()?;
    let store = Store::open(tmp.path(), StoreOptions::default())?;
    let reference = format!("{registry_host}/{repo_tag}");
    store
        .import(rootfs, &reference, changes, compression)
        .await
        .with_context(|| format!("importing {}", rootfs.display()))?;
    let digest = store
        .push(&reference)
        .await
        .with_context(|| format!("pushing {reference}"))?;
    Ok(digest)
}

/// [`push_busybox`] for synchronous tests (runs its own small runtime).
pub fn push_busybox_blocking(
    registry_host: &str,
    repo_tag: &str,
    compression: Compression,
) -> Result<String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(push_busybox(registry_host, repo_tag, compression))
}
