//! A container's filesystem seen from the host, for `cp` (archive), `export` and `diff`:
//! a running container through `/proc/<pid>/root` (its real view, volumes included), a
//! stopped one as its overlay would show it (the writable `upper` dir over the image,
//! whiteouts and opaque dirs honoured). Paths are resolved one component at a time with
//! symlinks followed *inside* the view (as Docker's FollowSymlinkInScope), so no link leads
//! to the host.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use super::error::DaemonError;

/// Files with several links already archived, by (device, inode): the first name.
pub type HardLinks = HashMap<(u64, u64), PathBuf>;

/// Appends an entry named `name` (and, for links, pointing to `link`) byte for byte: the
/// tar crate would drop a leading `./` and refuse a leading `/`, which dockerd's archives
/// of `/` and `DIR/.` have. Names or link targets over 100 bytes go first in a GNU
/// `././@LongLink` entry (type `L` or `K`), as GNU tar writes them.
fn append_named<W: std::io::Write, R: std::io::Read>(
    tar: &mut tar::Builder<W>,
    h: &mut tar::Header,
    name: &[u8],
    link: Option<&[u8]>,
    data: R,
) -> std::io::Result<()> {
    let long = |tar: &mut tar::Builder<W>, kind: tar::EntryType, value: &[u8]| {
        let mut l = tar::Header::new_gnu();
        l.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        l.set_mode(0o644);
        l.set_uid(0);
        l.set_gid(0);
        l.set_mtime(0);
        l.set_size(value.len() as u64 + 1);
        l.set_entry_type(kind);
        l.set_cksum();
        let mut body = value.to_vec();
        body.push(0);
        tar.append(&l, &body[..])
    };
    if name.len() > 100 {
        long(tar, tar::EntryType::GNULongName, name)?;
    }
    if let Some(target) = link {
        if target.len() > 100 {
            long(tar, tar::EntryType::GNULongLink, target)?;
        }
        let field = &mut h.as_old_mut().linkname;
        field.fill(0);
        let n = target.len().min(100);
        field[..n].copy_from_slice(&target[..n]);
    }
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    let n = name.len().min(100);
    field[..n].copy_from_slice(&name[..n]);
    h.set_cksum();
    tar.append(h, data)
}

/// The components of a container path, reversed (a stack: the first on top), without
/// empty ones and `.`.
fn components(path: &[u8]) -> Vec<OsString> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .rev()
        .map(|c| OsString::from_vec(c.to_vec()))
        .collect()
}

/// Links followed in one lookup before giving up (the kernel's limit).
const MAX_LINKS: usize = 40;

/// The layers of a view, top first: `[root]` for a running container, `[upper, lower]` for
/// a stopped one.
pub struct RootView {
    layers: Vec<PathBuf>,
}

/// A resolved entry: its path in the container, and the host directories that make it
/// (top first; one for a non-directory).
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub host: Vec<PathBuf>,
}

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Whether `dir` is the root of a kernel-made filesystem (procfs, sysfs, cgroupfs, devpts).
fn is_kernel_fs(dir: &Path) -> bool {
    use nix::sys::statfs::{
        statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC, DEVPTS_SUPER_MAGIC, PROC_SUPER_MAGIC,
        SYSFS_MAGIC,
    };
    statfs(dir).is_ok_and(|s| {
        [
            PROC_SUPER_MAGIC,
            SYSFS_MAGIC,
            CGROUP_SUPER_MAGIC,
            CGROUP2_SUPER_MAGIC,
            DEVPTS_SUPER_MAGIC,
        ]
        .contains(&s.filesystem_type())
    })
}

fn is_opaque(dir: &Path) -> bool {
    xattr_opaque(dir, "trusted.overlay.opaque") || xattr_opaque(dir, "user.overlay.opaque")
}

fn xattr_opaque(dir: &Path, name: &str) -> bool {
    use std::ffi::CString;
    let (Ok(p), Ok(n)) = (CString::new(dir.as_os_str().as_bytes()), CString::new(name)) else {
        return false;
    };
    let mut buf = [0u8; 4];
    // SAFETY: valid NUL-terminated strings and a buffer of the size given.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    len == 1 && buf[0] == b'y'
}

impl RootView {
    pub fn running(pid: i32) -> RootView {
        // The trailing slash makes `lstat` of the root itself follow `/proc/<pid>/root`,
        // a magic link: without it the container's `/` looked like a link to itself.
        RootView {
            layers: vec![PathBuf::from(format!("/proc/{pid}/root/"))],
        }
    }

    pub fn stopped(upper: PathBuf, lower: PathBuf) -> RootView {
        RootView {
            layers: vec![upper, lower],
        }
    }

    /// The topmost (writable) layer.
    pub fn top(&self) -> &Path {
        &self.layers[0]
    }

    /// Looks `rel` (no `..`, no links) up through the layers, as overlayfs does.
    fn lookup(&self, rel: &Path) -> Option<Entry> {
        let mut dirs: Vec<PathBuf> = self.layers.clone();
        let comps: Vec<&std::ffi::OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        for (i, name) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let mut next = Vec::new();
            for d in &dirs {
                let p = d.join(name);
                let Ok(m) = p.symlink_metadata() else {
                    continue;
                };
                let overlay = self.layers.len() > 1;
                if overlay && is_whiteout(&m) {
                    break; // hides everything below
                }
                if !m.is_dir() {
                    // A non-directory hides what the layers below have there.
                    if next.is_empty() && last {
                        next.push(p);
                    }
                    break;
                }
                let opaque = overlay && is_opaque(&p);
                next.push(p);
                if opaque {
                    break;
                }
            }
            if next.is_empty() {
                return None;
            }
            if !last && !next[0].is_dir() {
                return None;
            }
            dirs = next;
        }
        Some(Entry {
            path: Path::new("/").join(rel),
            host: dirs,
        })
    }

    /// Resolves a container path (bytes: names need not be UTF-8), following links inside
    /// the view (the last one too with `follow_last`). `None`: no such file.
    pub fn resolve(&self, path: &Path, follow_last: bool) -> Option<Entry> {
        let mut todo: Vec<OsString> = components(path.as_os_str().as_bytes());
        let mut cur = PathBuf::new();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            if c.as_bytes() == b".." {
                cur.pop();
                continue;
            }
            let cand = cur.join(&c);
            let e = self.lookup(&cand)?;
            let m = e.host[0].symlink_metadata().ok()?;
            if m.file_type().is_symlink() && (follow_last || !todo.is_empty()) {
                links += 1;
                if links > MAX_LINKS {
                    return None;
                }
                let target = std::fs::read_link(&e.host[0]).ok()?;
                let t = target.as_os_str().as_bytes();
                if t.starts_with(b"/") {
                    cur = PathBuf::new();
                }
                todo.extend(components(t));
                continue;
            }
            cur = cand;
        }
        if cur.as_os_str().is_empty() {
            return Some(Entry {
                path: PathBuf::from("/"),
                host: self.layers.clone(),
            });
        }
        self.lookup(&cur)
    }

    /// The names in a directory entry, merged through its layers, sorted.
    pub fn list(&self, e: &Entry) -> Vec<OsString> {
        let mut names = std::collections::BTreeSet::new();
        let mut hidden = std::collections::BTreeSet::new();
        for d in &e.host {
            let Ok(rd) = std::fs::read_dir(d) else {
                continue;
            };
            for x in rd.flatten() {
                let n = x.file_name();
                if hidden.contains(&n) {
                    continue;
                }
                match x.path().symlink_metadata() {
                    Ok(m) if e.host.len() > 1 && is_whiteout(&m) => {
                        hidden.insert(n);
                    }
                    Ok(m) => {
                        if !m.is_dir() {
                            hidden.insert(n.clone());
                        }
                        names.insert(n);
                    }
                    Err(_) => {}
                }
            }
        }
        names.into_iter().collect()
    }

    /// Appends `e` (named `name` in the archive) and, for a directory, everything under
    /// it, to `tar`. Names are written as given, byte for byte (GNU long names past 100),
    /// directories with a trailing `/`: dockerd's rebased names, which the docker CLI
    /// rebases again (`/`, `/bin/sh` for the root; `./`, `./a` for `DIR/.`). A file with
    /// more than one link already in `links` (by device and inode) becomes a hard link
    /// entry to the name it was first archived under, as `tar` and dockerd write them.
    pub fn archive<W: std::io::Write>(
        &self,
        tar: &mut tar::Builder<W>,
        e: &Entry,
        name: &Path,
        links: &mut HardLinks,
    ) -> std::io::Result<()> {
        let host = &e.host[0];
        let m = host.symlink_metadata()?;
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&m, tar::HeaderMode::Complete);
        let ft = m.file_type();
        let raw = name.as_os_str().as_bytes();
        if ft.is_dir() {
            h.set_size(0);
            let mut dir_name = if raw.is_empty() {
                b".".to_vec()
            } else {
                raw.to_vec()
            };
            if !dir_name.ends_with(b"/") {
                dir_name.push(b'/');
            }
            append_named(tar, &mut h, &dir_name, None, std::io::empty())?;
            if self.layers.len() == 1 && is_kernel_fs(host) {
                // A running container's /proc, /sys and the like: the mount point only, as
                // dockerd archives them (their files are not the container's content, and
                // some cannot be read whole).
                return Ok(());
            }
            for n in self.list(e) {
                let child = e.path.join(&n);
                let rel = child.strip_prefix("/").unwrap_or(&child).to_path_buf();
                if let Some(ce) = self.lookup(&rel) {
                    self.archive(tar, &ce, &name.join(&n), links)?;
                }
            }
        } else if ft.is_symlink() {
            h.set_size(0);
            let target = std::fs::read_link(host)?;
            append_named(
                tar,
                &mut h,
                raw,
                Some(target.as_os_str().as_bytes()),
                std::io::empty(),
            )?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                match links.entry((m.dev(), m.ino())) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        h.set_entry_type(tar::EntryType::Link);
                        h.set_size(0);
                        let target = first.get().as_os_str().as_bytes().to_vec();
                        return append_named(tar, &mut h, raw, Some(&target), std::io::empty());
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        // Exactly as its header holds it, so the link names a real entry.
                        v.insert(name.to_path_buf());
                    }
                }
            }
            let f = std::fs::File::open(host)?;
            append_named(tar, &mut h, raw, None, f)?;
        } else {
            h.set_size(0);
            append_named(tar, &mut h, raw, None, std::io::empty())?;
        }
        Ok(())
    }

    /// Docker's `X-Docker-Container-Path-Stat` of `e` (Go `os.FileMode` bits).
    pub fn stat(&self, e: &Entry) -> serde_json::Value {
        let m = e.host[0].symlink_metadata().ok();
        let mode = m.as_ref().map_or(0, |m| {
            let ft = m.file_type();
            let mut mode = m.mode() & 0o777;
            if ft.is_dir() {
                mode |= 1 << 31;
            }
            if ft.is_symlink() {
                mode |= 1 << 27;
            }
            if ft.is_block_device() {
                mode |= 1 << 26;
            }
            if ft.is_char_device() {
                mode |= (1 << 26) | (1 << 21);
            }
            if ft.is_fifo() {
                mode |= 1 << 25;
            }
            if ft.is_socket() {
                mode |= 1 << 24;
            }
            mode
        });
        let mtime = m
            .as_ref()
            .and_then(|m| chrono::DateTime::from_timestamp(m.mtime(), m.mtime_nsec() as u32))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
            .unwrap_or_default();
        let link = std::fs::read_link(&e.host[0])
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        serde_json::json!({
            "name": e.path.file_name().map_or("/".into(), |n| n.to_string_lossy().to_string()),
            "size": m.as_ref().map_or(0, |m| m.len()),
            "mode": mode,
            "mtime": mtime,
            "linkTarget": link,
        })
    }

    /// The host directory to write `dir` (a container directory) into: the topmost layer,
    /// making the directories an image layer has there (copy-up of their modes).
    pub fn writable_dir(&self, dir: &Entry) -> Result<PathBuf, DaemonError> {
        let rel = dir
            .path
            .strip_prefix("/")
            .unwrap_or(&dir.path)
            .to_path_buf();
        let mut host = self.top().to_path_buf();
        let mut cur = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            host.push(c);
            if host.symlink_metadata().is_err() {
                let from = self.lookup(&cur).ok_or_else(|| {
                    DaemonError::Invalid(format!("no such directory: /{}", cur.display()))
                })?;
                let m = from.host[0]
                    .symlink_metadata()
                    .map_err(|e| DaemonError::io("stat", &from.host[0], e))?;
                std::fs::create_dir(&host).map_err(|e| DaemonError::io("mkdir", &host, e))?;
                std::fs::set_permissions(&host, m.permissions())
                    .map_err(|e| DaemonError::io("chmod", &host, e))?;
                let _ = std::os::unix::fs::lchown(&host, Some(m.uid()), Some(m.gid()));
            }
        }
        Ok(host)
    }
}

/// Docker's `changes` kinds.
pub const MODIFIED: u8 = 0;
pub const ADDED: u8 = 1;
pub const DELETED: u8 = 2;

/// Paths the runtime mounts over (relative to the root), which overlayfs shows in the upper
/// directory as mount points. Docker keeps them in a separate init layer, so neither
/// `diff` nor a committed layer shows them.
pub const RUNTIME_MOUNT_POINTS: &[&str] = &[
    "dev",
    "proc",
    "sys",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
    ".dockerenv",
];

/// What the writable layer `upper` changed over the image `lower`: (path, kind), sorted.
/// The runtime's mount points are left out, and so is a directory copied up only for them
/// (same mode and owner as in `lower`, nothing else changed below it).
pub fn changes(upper: &Path, lower: &Path) -> Vec<(String, u8)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(upper.join(&rel)) else {
            continue;
        };
        for x in rd.flatten() {
            let r = rel.join(x.file_name());
            if RUNTIME_MOUNT_POINTS.iter().any(|p| Path::new(p) == r) {
                continue;
            }
            let Ok(m) = x.path().symlink_metadata() else {
                continue;
            };
            let in_lower = lower.join(&r).symlink_metadata().is_ok();
            let kind = if is_whiteout(&m) {
                DELETED
            } else if in_lower {
                MODIFIED
            } else {
                ADDED
            };
            out.push((format!("/{}", r.display()), kind));
            if m.is_dir() {
                stack.push(r);
            }
        }
    }
    out.sort();
    // A directory is listed as modified when something below it changed or its own mode
    // or owner did; one that only holds runtime mount points is not.
    let listed: Vec<String> = out.iter().map(|(p, _)| p.clone()).collect();
    out.retain(|(p, kind)| {
        if *kind != MODIFIED {
            return true;
        }
        let rel = p.trim_start_matches('/');
        let (Ok(u), Ok(l)) = (
            upper.join(rel).symlink_metadata(),
            lower.join(rel).symlink_metadata(),
        ) else {
            return true;
        };
        if !u.is_dir() {
            return true;
        }
        let prefix = format!("{p}/");
        let has_child = listed.iter().any(|q| q.starts_with(&prefix));
        has_child || u.mode() != l.mode() || u.uid() != l.uid() || u.gid() != l.gid()
    });
    out
}
