//! The containers service, filesystem part: `changes` (diff), `export`, and the archive
//! endpoints of `cp` (stat, read a path as a tar, extract a tar into a directory).

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use skiff_runtime::state::Status;

use super::container_fs::{self, Entry, RootView};
use super::containers::ContainerService;
use super::error::DaemonError;
use super::record::ContainerRecord;

/// A `Write` that sends what it gets to a response body.
struct BodyWriter(tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>);

impl std::io::Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(buf.to_vec()))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A tar stream made on a blocking thread by `fill`.
fn tar_body(
    fill: impl FnOnce(&mut tar::Builder<BodyWriter>) -> std::io::Result<()> + Send + 'static,
) -> Body {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        let mut tar = tar::Builder::new(BodyWriter(tx));
        tar.follow_symlinks(false);
        if let Err(e) = fill(&mut tar).and_then(|()| tar.finish()) {
            tracing::warn!("writing a container archive: {e}");
            let _ = err_tx.blocking_send(Err(e));
        }
    });
    Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

impl ContainerService {
    /// The container's filesystem as it is now (see [`RootView`]).
    fn view(&self, r: &ContainerRecord) -> Result<RootView, DaemonError> {
        let st = self.state(&r.id)?;
        if let (Status::Running, Some(pid)) = (st.status, st.pid) {
            return Ok(RootView::running(pid));
        }
        self.mounts.ensure(&self.store, &r.image_id)?;
        Ok(RootView::stopped(
            self.dir(&r.id).join("upper"),
            self.paths.image_mount(&r.image_id),
        ))
    }

    fn find_path(
        &self,
        view: &RootView,
        r: &ContainerRecord,
        path: &Path,
    ) -> Result<Entry, DaemonError> {
        // As dockerd: a trailing `/` (or `/.`) resolves a link in the last component too
        // (`cp C:/link/ DST` copies the directory it points to).
        let bytes = path.as_os_str().as_bytes();
        let follow_last = bytes.ends_with(b"/") || bytes.ends_with(b"/.");
        view.resolve(path, follow_last).ok_or_else(|| {
            DaemonError::NoSuchPath(format!(
                "Could not find the file {} in container {}",
                path.display(),
                r.name
            ))
        })
    }

    /// `changes`: (path, kind) of what the container changed over its image.
    pub fn changes(&self, r: &ContainerRecord) -> Result<Vec<(String, u8)>, DaemonError> {
        self.mounts.ensure(&self.store, &r.image_id)?;
        Ok(container_fs::changes(
            &self.dir(&r.id).join("upper"),
            &self.paths.image_mount(&r.image_id),
        ))
    }

    /// `export`: the container's root filesystem (image plus its changes, without the
    /// mounts over it: /proc, /sys, volumes) as a tar stream.
    pub fn export(&self, r: &ContainerRecord) -> Result<Body, DaemonError> {
        self.mounts.ensure(&self.store, &r.image_id)?;
        let view = RootView::stopped(
            self.dir(&r.id).join("upper"),
            self.paths.image_mount(&r.image_id),
        );
        let root = view.resolve(Path::new("/"), true).expect("the root exists");
        Ok(tar_body(move |tar| {
            let mut links = container_fs::HardLinks::new();
            for n in view.list(&root) {
                if let Some(e) = view.resolve(&Path::new("/").join(&n), false) {
                    view.archive(tar, &e, Path::new(&n), &mut links)?;
                }
            }
            Ok(())
        }))
    }

    /// `HEAD archive`: the stat of `path` (Docker's `X-Docker-Container-Path-Stat`).
    pub fn path_stat(
        &self,
        r: &ContainerRecord,
        path: &Path,
    ) -> Result<serde_json::Value, DaemonError> {
        let view = self.view(r)?;
        let e = self.find_path(&view, r, path)?;
        Ok(view.stat(&e))
    }

    /// `GET archive`: the stat of `path` and a tar of it (a directory with its content),
    /// named by its base name.
    pub fn archive(
        &self,
        r: &ContainerRecord,
        path: &Path,
    ) -> Result<(serde_json::Value, Body), DaemonError> {
        let view = self.view(r)?;
        // A trailing `/.` copies a directory's content (docker cp SRC/. DST).
        let e = self.find_path(&view, r, path)?;
        let stat = view.stat(&e);
        // dockerd's names: the base name of the path asked for, `.` for `DIR/.`, and `/`
        // for the root itself (docker cp rebases all three onto its destination).
        let name = if path.as_os_str().as_bytes().ends_with(b"/.") {
            PathBuf::from(".")
        } else {
            // The name asked for, not a followed link's target's (`link/` is `link`).
            path.file_name()
                .or_else(|| e.path.file_name())
                .map_or_else(|| PathBuf::from("/"), PathBuf::from)
        };
        Ok((
            stat,
            tar_body(move |tar| view.archive(tar, &e, &name, &mut container_fs::HardLinks::new())),
        ))
    }

    /// `PUT archive`: extracts the tar at `tar_file` into the directory `path`. Entries may
    /// not leave it (`..`, absolute names); links inside are kept as links. Owners are the
    /// tar's, or with `copy_uid_gid` the container's user (`Config.User` resolved in its
    /// `/etc/passwd` and `/etc/group`), as dockerd extracts them.
    pub async fn extract(
        &self,
        r: &ContainerRecord,
        path: &Path,
        tar_file: PathBuf,
        opts: ExtractOptions,
    ) -> Result<(), DaemonError> {
        let view = self.view(r)?;
        let e = view.resolve(path, true).ok_or_else(|| {
            DaemonError::NoSuchPath(format!(
                "Could not find the file {} in container {}",
                path.display(),
                r.name
            ))
        })?;
        if !e.host[0].is_dir() {
            return Err(DaemonError::Invalid(format!(
                "extraction point is not a directory: {}",
                path.display()
            )));
        }
        // dockerd's: `-a` of a container without a `User` keeps the tar's owners.
        let owner = if opts.copy_uid_gid && !r.spec.user.is_empty() {
            let read = |file: &str| {
                view.resolve(Path::new(file), true)
                    .and_then(|e| std::fs::read_to_string(&e.host[0]).ok())
                    .unwrap_or_default()
            };
            let spec = r.spec.user.as_str();
            let ids =
                skiff_runtime::resolve_user_ids(spec, &read("/etc/passwd"), &read("/etc/group"))
                    .map_err(DaemonError::Invalid)?;
            Some(ids)
        } else {
            None
        };
        let dst = view.writable_dir(&e)?;
        let shown = e.path.clone();
        tokio::task::spawn_blocking(move || unpack(&tar_file, &dst, &shown, opts, owner))
            .await
            .map_err(DaemonError::join)?
    }
}

/// `PUT archive` query parameters (Docker Engine API).
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractOptions {
    /// `noOverwriteDirNonDir`: refuse to replace a directory with a non-directory or the
    /// other way round (the docker CLI always sets it).
    pub no_overwrite_dir_non_dir: bool,
    /// `copyUIDGID` (`docker cp -a`): entries owned by the container's user.
    pub copy_uid_gid: bool,
}

/// Unpacks a tar into `dst` (`shown` in the container, for messages), refusing entries that
/// would leave it and never writing through a link found there; entries owned by `owner`
/// `(uid, gid)`, else by the tar's ids.
fn unpack(
    tar_file: &Path,
    dst: &Path,
    shown: &Path,
    opts: ExtractOptions,
    owner: Option<(u32, u32)>,
) -> Result<(), DaemonError> {
    let f = std::fs::File::open(tar_file).map_err(|e| DaemonError::io("open", tar_file, e))?;
    let mut ar = tar::Archive::new(f);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(owner.is_none());
    ar.set_overwrite(true);
    let bad = |what: String| DaemonError::Invalid(format!("invalid archive: {what}"));
    // Directories get their times last, once nothing is written into them any more.
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    for entry in ar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let name = entry.path().map_err(|e| bad(e.to_string()))?.to_path_buf();
        let mut rel = PathBuf::new();
        for c in name.components() {
            match c {
                Component::Normal(n) => rel.push(n),
                Component::CurDir | Component::RootDir => {}
                _ => return Err(bad(format!("{} leaves the target", name.display()))),
            }
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        // Every parent must be a real directory under dst, not a link out of it.
        let mut host = dst.to_path_buf();
        let parents: Vec<_> = rel
            .parent()
            .map(|p| p.components().collect())
            .unwrap_or_default();
        for c in parents {
            host.push(c);
            match host.symlink_metadata() {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(bad(format!("{} is not a directory", host.display()))),
                Err(_) => {
                    std::fs::create_dir(&host).map_err(|e| DaemonError::io("mkdir", &host, e))?
                }
            }
        }
        let target = dst.join(&rel);
        if let Ok(m) = target.symlink_metadata() {
            let entry_dir = entry.header().entry_type() == tar::EntryType::Directory;
            if opts.no_overwrite_dir_non_dir && m.is_dir() != entry_dir {
                let (what, with) = if m.is_dir() {
                    ("directory", "non-directory")
                } else {
                    ("non-directory", "directory")
                };
                return Err(DaemonError::Invalid(format!(
                    "cannot overwrite {what} {:?} with {with} {:?}",
                    shown.join(&rel),
                    shown
                )));
            }
            if !m.is_dir() || !entry_dir {
                if m.is_dir() {
                    std::fs::remove_dir_all(&target)
                } else {
                    std::fs::remove_file(&target)
                }
                .map_err(|e| DaemonError::io("replacing", &target, e))?;
            }
        }
        if entry.header().entry_type() == tar::EntryType::Link {
            let src = entry
                .link_name()
                .map_err(|e| bad(e.to_string()))?
                .ok_or_else(|| bad("hard link without a target".into()))?;
            let src_rel: PathBuf = src
                .components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(n),
                    _ => None,
                })
                .collect();
            std::fs::hard_link(dst.join(src_rel), &target)
                .map_err(|e| DaemonError::io("hard link", &target, e))?;
            continue;
        }
        entry
            .unpack(&target)
            .map_err(|e| DaemonError::io("extracting", &target, e))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                .map_err(|e| DaemonError::io("chown", &target, e))?;
        }
        if entry.header().entry_type() == tar::EntryType::Directory {
            if let Ok(mtime) = entry.header().mtime() {
                dir_times.push((target, mtime as i64));
            }
        }
    }
    for (dir, mtime) in dir_times.iter().rev() {
        super::build::copy::set_mtime(dir, *mtime, 0);
    }
    Ok(())
}
