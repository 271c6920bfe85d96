//! What the container asked to have mounted (`-v`, `--mount`, `--tmpfs`, `--init`,
//! `--device`, `--read-only`, `--sysctl`). Host-side sources are opened before pivot_root
//! ([`open_sources`]); everything is mounted after it ([`apply`]), so destinations, even
//! symlinks in a hostile image, resolve inside the container's root.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{mknod, Mode, SFlag};

use crate::config::{ContainerConfig, MountKind};
use crate::error::StepFailure;

type Step<T = ()> = Result<T, StepFailure>;

/// Where `--init`'s binary appears, as on Docker.
pub(crate) const INIT_PATH: &str = "/sbin/docker-init";

/// A device node to create: target path, S_IFCHR/S_IFBLK, rdev, permission bits, owner.
pub(crate) struct DeviceNode {
    pub target: PathBuf,
    pub kind: SFlag,
    pub rdev: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Host-side things opened or looked at before pivot_root.
pub(crate) struct Sources {
    /// One per `cfg.mounts` entry: the opened bind source and whether it is a directory.
    binds: Vec<Option<(OwnedFd, bool)>>,
    init: Option<OwnedFd>,
    devices: Vec<DeviceNode>,
}

fn io_fail(step: &str, path: &Path, e: std::io::Error) -> StepFailure {
    match e.raw_os_error() {
        Some(n) => StepFailure::errno(step, path.display(), nix::Error::from_raw(n)),
        None => StepFailure::detail(step, path.display(), e.to_string()),
    }
}

/// The device node `host` stands for, to be made at `target`.
pub(crate) fn device_node(host: &Path, target: PathBuf) -> Step<DeviceNode> {
    let m = std::fs::metadata(host).map_err(|e| io_fail("stat device", host, e))?;
    let kind = if m.file_type().is_char_device() {
        SFlag::S_IFCHR
    } else if m.file_type().is_block_device() {
        SFlag::S_IFBLK
    } else {
        return Err(StepFailure::detail(
            "device",
            host.display(),
            "not a character or block device".into(),
        ));
    };
    Ok(DeviceNode {
        target,
        kind,
        rdev: m.rdev(),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
    })
}

/// Every device node under the host's /dev (`--privileged`), but the pty, shm, mqueue
/// and fd trees the container has its own of.
fn host_devices(dir: &Path, out: &mut Vec<DeviceNode>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            let name = e.file_name();
            if !["pts", "shm", "mqueue", "fd"].iter().any(|n| name == *n) {
                host_devices(&p, out);
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            if p == Path::new("/dev/console") || p == Path::new("/dev/ptmx") {
                continue;
            }
            if let Ok(d) = device_node(&p, p.clone()) {
                out.push(d);
            }
        }
    }
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// A detached copy of the mount tree at `source` (open_tree(2) with OPEN_TREE_CLONE), which
/// stays valid after pivot_root has let go of the host's mounts; a plain bind from an fd
/// into the old root would be refused then (EINVAL: not in our namespace).
fn clone_tree(source: &Path, recursive: bool) -> Step<OwnedFd> {
    let path = std::ffi::CString::new(source.as_os_str().as_encoded_bytes())
        .map_err(|_| StepFailure::detail("bind source", source.display(), "NUL in path".into()))?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: open_tree with a valid path; returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(StepFailure::errno(
            "open_tree",
            source.display(),
            nix::Error::last(),
        ));
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// Attaches a tree from [`clone_tree`] at `dest` (move_mount(2)).
fn attach_tree(tree: &OwnedFd, dest: &str) -> Step {
    let empty = c"";
    let to = std::ffi::CString::new(dest).unwrap_or_default();
    // SAFETY: move_mount from our detached tree fd to a path; integers and C strings only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(StepFailure::errno("bind mount", dest, nix::Error::last()));
    }
    Ok(())
}

/// Opens bind sources and the init binary, and stats devices, on the host's side.
pub(crate) fn open_sources(cfg: &ContainerConfig) -> Step<Sources> {
    let mut binds = Vec::new();
    for m in &cfg.mounts {
        binds.push(match &m.kind {
            MountKind::Bind {
                source, recursive, ..
            } => {
                let meta = std::fs::metadata(source)
                    .map_err(|e| io_fail("bind mount source", source, e))?;
                Some((clone_tree(source, *recursive)?, meta.is_dir()))
            }
            MountKind::Tmpfs(_) => None,
        });
    }
    let init = match &cfg.init {
        Some(p) => {
            let meta = std::fs::metadata(p).map_err(|e| io_fail("init binary", p, e))?;
            if !meta.is_file() {
                return Err(StepFailure::detail(
                    "init binary",
                    p.display(),
                    "not a regular file".into(),
                ));
            }
            Some(clone_tree(p, false)?)
        }
        None => None,
    };
    let mut devices = Vec::new();
    if cfg.security.privileged {
        host_devices(Path::new("/dev"), &mut devices);
    }
    for d in &cfg.security.devices {
        devices.push(device_node(&d.host_path, d.target())?);
    }
    Ok(Sources {
        binds,
        init,
        devices,
    })
}

fn mnt(
    step: &str,
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Step {
    mount(src, target, fstype, flags, data).map_err(|e| StepFailure::errno(step, target, e))
}

/// Creates the mount point: a directory, or (for a file source) an empty file.
fn mount_point(dest: &str, dir: bool) -> Step {
    let p = Path::new(dest);
    if dir {
        return std::fs::create_dir_all(p).map_err(|e| io_fail("mkdir", p, e));
    }
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_fail("mkdir", parent, e))?;
    }
    if std::fs::symlink_metadata(p).is_err() {
        std::fs::File::create(p).map_err(|e| io_fail("create", p, e))?;
    }
    Ok(())
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// Makes the mount at `dest` read-only, with its sub-mounts when `recursive` (Docker 25+
/// makes read-only binds recursively read-only where the kernel can: mount_setattr, 5.12).
fn make_read_only(dest: &str, recursive: bool) -> Step {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let path = std::ffi::CString::new(dest).unwrap_or_default();
    let flags = if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr with a valid path and a mount_attr of the size we pass.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Older kernels: remount the top mount read-only.
    mnt(
        "remount read-only",
        None,
        dest,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None,
    )
}

/// Writes the `--sysctl` values into /proc/sys (inside the container's namespaces, before
/// /proc/sys becomes read-only).
pub(crate) fn write_sysctls(cfg: &ContainerConfig) -> Step {
    for (key, value) in &cfg.sysctls {
        let rel = if key.contains('/') {
            key.clone()
        } else {
            key.replace('.', "/")
        };
        let p = Path::new("/proc/sys").join(rel.trim_start_matches('/'));
        std::fs::write(&p, value).map_err(|e| io_fail("sysctl", &p, e))?;
    }
    Ok(())
}

/// Mounts binds and tmpfs, the init binary and device nodes (after pivot_root).
pub(crate) fn apply(cfg: &ContainerConfig, src: Sources) -> Step {
    for (m, bind) in cfg.mounts.iter().zip(src.binds) {
        let dest = m.destination.as_str();
        match (&m.kind, bind) {
            (MountKind::Bind { recursive, .. }, Some((fd, is_dir))) => {
                mount_point(dest, is_dir)?;
                attach_tree(&fd, dest)?;
                if m.read_only {
                    make_read_only(dest, *recursive)?;
                }
            }
            (MountKind::Tmpfs(o), _) => {
                mount_point(dest, true)?;
                let mut flags = MsFlags::empty();
                if !o.exec {
                    flags |= MsFlags::MS_NOEXEC;
                }
                if !o.suid {
                    flags |= MsFlags::MS_NOSUID;
                }
                if !o.dev {
                    flags |= MsFlags::MS_NODEV;
                }
                if m.read_only {
                    flags |= MsFlags::MS_RDONLY;
                }
                mnt(
                    "mount tmpfs",
                    Some("tmpfs"),
                    dest,
                    Some("tmpfs"),
                    flags,
                    Some(&o.data()),
                )?;
            }
            (MountKind::Bind { .. }, None) => {}
        }
    }
    if let Some(fd) = src.init {
        mount_point(INIT_PATH, false)?;
        attach_tree(&fd, INIT_PATH)?;
        make_read_only(INIT_PATH, false)?;
    }
    for d in &src.devices {
        if let Some(parent) = d.target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_fail("mkdir", parent, e))?;
        }
        let _ = std::fs::remove_file(&d.target);
        mknod(&d.target, d.kind, Mode::from_bits_truncate(d.mode), d.rdev)
            .map_err(|e| StepFailure::errno("mknod", d.target.display(), e))?;
        // mknod applies the umask; set the host's bits and owner exactly.
        nix::sys::stat::fchmodat(
            None,
            &d.target,
            Mode::from_bits_truncate(d.mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| StepFailure::errno("chmod", d.target.display(), e))?;
        nix::unistd::chown(
            &d.target,
            Some(nix::unistd::Uid::from_raw(d.uid)),
            Some(nix::unistd::Gid::from_raw(d.gid)),
        )
        .map_err(|e| StepFailure::errno("chown", d.target.display(), e))?;
    }
    Ok(())
}

/// `--read-only`: the root mount becomes read-only; the other mounts keep their modes.
pub(crate) fn read_only_root() -> Step {
    mnt(
        "remount root read-only",
        None,
        "/",
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None,
    )
}
