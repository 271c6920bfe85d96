//! The container's filesystem view, built inside its fresh mount namespace: overlay root,
//! /proc, a minimal /dev, read-only /sys, the /etc files, pivot_root, masked and read-only
//! paths. Every mount lives only in that namespace, so the kernel releases all of them when
//! the container's last process exits.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use crate::error::StepFailure;

/// Paths Docker hides behind /dev/null or an empty read-only tmpfs.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Character devices created in the container's /dev: (name, major, minor).
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

type Step<T = ()> = Result<T, StepFailure>;

fn mnt(
    step: &str,
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Step {
    mount(src, target, fstype, flags, data)
        .map_err(|e| StepFailure::errno(step, target.display(), e))
}

fn mkdir_p(path: &Path) -> Step {
    std::fs::create_dir_all(path).map_err(|e| io_fail("mkdir", path, e))
}

fn io_fail(step: &str, path: &Path, e: std::io::Error) -> StepFailure {
    match e.raw_os_error() {
        Some(n) => StepFailure::errno(step, path.display(), nix::Error::from_raw(n)),
        None => StepFailure::detail(step, path.display(), e.to_string()),
    }
}

/// Makes every mount private, so nothing mounted here propagates back to the host.
pub(crate) fn make_private() -> Step {
    mnt(
        "make mounts private",
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
}

/// Mounts the overlay of `lower` (topmost first) with upper/work at `root`; `volatile`
/// adds overlayfs' `volatile` option (no sync of the upper's filesystem, ever), and falls
/// back to a normal mount on a kernel that does not know it (before 5.10).
pub(crate) fn mount_overlay(
    root: &Path,
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    volatile: bool,
) -> Step {
    let lowers: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    let mount = |data: &str| {
        mnt(
            "mount overlay",
            Some("overlay"),
            root,
            Some("overlay"),
            MsFlags::empty(),
            Some(data),
        )
    };
    if volatile {
        // A volatile mount leaves this marker and overlayfs refuses the workdir while it
        // exists (the upper may be torn after a crash). This layer is discarded anyway, so
        // a second start of the container (restart) may reuse it.
        // (`work/incompat/volatile/dirty` inside).
        let _ = std::fs::remove_dir_all(work.join("work/incompat/volatile"));
        if mount(&format!("{data},volatile")).is_ok() {
            return Ok(());
        }
    }
    mount(&data)
}

/// /proc, /dev, /sys and the /etc files under `root` (before pivot_root). `etc` are
/// (name, opened source file) pairs bind-mounted over `root/etc/<name>`; `shm_size` is the
/// /dev/shm size in bytes (Docker's 64 MiB when `None`); `privileged` leaves /sys writable.
pub(crate) fn mount_system(
    root: &Path,
    etc: &[(&str, OwnedFd)],
    shm_size: Option<u64>,
    privileged: bool,
) -> Step {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = root.join("proc");
    ensure_dir(&proc_dir)?;
    mnt(
        "mount /proc",
        Some("proc"),
        &proc_dir,
        Some("proc"),
        nosuid_nodev_noexec,
        None,
    )?;

    let dev = root.join("dev");
    ensure_dir(&dev)?;
    mnt(
        "mount /dev",
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for (name, major, minor) in DEVICES {
        let p = dev.join(name);
        mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(*major, *minor),
        )
        .map_err(|e| StepFailure::errno("mknod", p.display(), e))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| io_fail("chmod", &p, e))?;
    }
    let pts = dev.join("pts");
    mkdir_p(&pts)?;
    mnt(
        "mount /dev/pts",
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = dev.join("shm");
    mkdir_p(&shm)?;
    mnt(
        "mount /dev/shm",
        Some("shm"),
        &shm,
        Some("tmpfs"),
        nosuid_nodev_noexec,
        Some(&format!("mode=1777,size={}", shm_size.unwrap_or(64 << 20))),
    )?;
    let mqueue = dev.join("mqueue");
    mkdir_p(&mqueue)?;
    mnt(
        "mount /dev/mqueue",
        Some("mqueue"),
        &mqueue,
        Some("mqueue"),
        nosuid_nodev_noexec,
        None,
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let p = dev.join(link);
        std::os::unix::fs::symlink(target, &p).map_err(|e| io_fail("symlink", &p, e))?;
    }
    std::fs::File::create(dev.join("console"))
        .map_err(|e| io_fail("create", &dev.join("console"), e))?;

    let sys = root.join("sys");
    ensure_dir(&sys)?;
    mnt(
        "mount /sys",
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        if privileged {
            nosuid_nodev_noexec
        } else {
            nosuid_nodev_noexec | MsFlags::MS_RDONLY
        },
        None,
    )?;

    let etc_dir = root.join("etc");
    ensure_dir(&etc_dir)?;
    for (name, src) in etc {
        let target = etc_dir.join(name);
        ensure_regular_file(&target)?;
        let src_path = format!("/proc/self/fd/{}", src.as_raw_fd());
        mnt(
            "bind /etc file",
            Some(&src_path),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
        )?;
    }
    Ok(())
}

/// Creates `dir` unless it exists as a real directory. A symlink there (from a hostile
/// image) would redirect a mount outside the container's root, so it is refused.
fn ensure_dir(dir: &Path) -> Step {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StepFailure::errno(
            "prepare",
            dir.display(),
            nix::Error::ENOTDIR,
        )),
        Err(_) => mkdir_p(dir),
    }
}

/// Replaces whatever is at `p` (e.g. a symlink to ../run/resolv.conf) by an empty file, so
/// a bind mount onto it cannot be redirected outside the container.
fn ensure_regular_file(p: &Path) -> Step {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_file() => return Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).map_err(|e| io_fail("replace", p, e))?,
        Ok(_) => std::fs::remove_file(p).map_err(|e| io_fail("replace", p, e))?,
        Err(_) => {}
    }
    std::fs::File::create(p)
        .map(drop)
        .map_err(|e| io_fail("create", p, e))
}

/// Opens a source file for a later bind mount via /proc/self/fd.
pub(crate) fn open_source(p: &Path) -> Step<OwnedFd> {
    nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map(|fd| {
            // SAFETY: open returned a fresh descriptor we now own.
            unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
        })
        .map_err(|e| StepFailure::errno("open", p.display(), e))
}

/// Makes `root` the root of the mount namespace and detaches the old one.
pub(crate) fn pivot(root: &Path) -> Step {
    nix::unistd::chdir(root).map_err(|e| StepFailure::errno("chdir", root.display(), e))?;
    nix::unistd::pivot_root(".", ".")
        .map_err(|e| StepFailure::errno("pivot_root", root.display(), e))?;
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| StepFailure::errno("detach old root", "/", e))?;
    nix::unistd::chdir("/").map_err(|e| StepFailure::errno("chdir", "/", e))
}

/// Masks and write-protects Docker's sensitive /proc and /sys paths (after pivot_root).
pub(crate) fn protect_paths() -> Step {
    for p in MASKED_PATHS {
        let path = Path::new(p);
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => mnt(
                "mask",
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0"),
            )?,
            Ok(_) => mnt(
                "mask",
                Some("/dev/null"),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )?,
            Err(_) => {}
        }
    }
    for p in READONLY_PATHS {
        let path = Path::new(p);
        if std::fs::metadata(path).is_err() {
            continue;
        }
        mnt(
            "read-only bind",
            Some(p),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        mnt(
            "remount read-only",
            None,
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None,
        )?;
    }
    Ok(())
}

/// Creates the working directory if the image lacks it (as Docker does).
pub(crate) fn ensure_cwd(cwd: &str) -> Step {
    if cwd.is_empty() || cwd == "/" {
        return Ok(());
    }
    mkdir_p(Path::new(cwd))
}
