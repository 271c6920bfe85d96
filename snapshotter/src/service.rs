//! [`SkiffSnapshotter`]: containerd's `Snapshotter` over a directory of per-snapshot
//! directories (as containerd's overlay snapshotter lays them out) and SQLite metadata,
//! with layers in a lazy format served from skiff's store through per-layer FUSE views.

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use containerd_snapshots::{api::types::Mount, Info, Kind as ApiKind, Snapshotter, Usage};

use crate::error::{Result, SnapshotError};
use crate::filter::Filters;
use crate::meta::{Kind, MetaStore, RemoteLayer, Snapshot};
use crate::mounts::{fs_dir, mounts_for, work_dir};
use crate::overlay_view::overlay_view;
use crate::remote::{remote_request, RemoteRequest};
use crate::usage::disk_usage;

/// The snapshotter: `root` holds `metadata.db` and `snapshots/<id>/{fs,work}`.
pub struct SkiffSnapshotter {
    root: PathBuf,
    meta: MetaStore,
    store: skiff_store::Store,
    /// FUSE mounts of lazily served layers, by snapshot id.
    lazy: Mutex<HashMap<i64, skiff_fs::MountHandle>>,
    /// One re-mount of a lazy layer at a time.
    remounting: tokio::sync::Mutex<()>,
    mount_options: skiff_fs::MountOptions,
}

fn api_kind(k: Kind) -> ApiKind {
    match k {
        Kind::Active => ApiKind::Active,
        Kind::View => ApiKind::View,
        Kind::Committed => ApiKind::Committed,
    }
}

fn info(s: Snapshot) -> Info {
    Info {
        kind: api_kind(s.kind),
        name: s.key,
        parent: s.parent,
        labels: s.labels,
        created_at: s.created,
        updated_at: s.updated,
    }
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| SnapshotError::io(path, e))
}

/// Detaches whatever is mounted at `path` (a lazy layer's FUSE mount, possibly stale).
fn detach(path: &Path) {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "detaching a lazy layer"),
    }
}

impl SkiffSnapshotter {
    /// Opens (creating) the snapshotter under `root` and serves again the lazy layers of
    /// committed snapshots: a mount a previous process left with its descriptor keeper is
    /// resumed (containers reading it keep working), any other is mounted afresh. With
    /// `keeper_exe` (our binary) lazy mounts get a keeper, so they can outlive this process
    /// ([`SkiffSnapshotter::shutdown`]). Call it inside the tokio runtime that FUSE reads
    /// will block on.
    pub async fn open(
        root: &Path,
        store: skiff_store::Store,
        keeper_exe: Option<PathBuf>,
    ) -> Result<SkiffSnapshotter> {
        mkdir(root, 0o700)?;
        mkdir(&root.join("snapshots"), 0o700)?;
        let meta = MetaStore::open(&root.join("metadata.db"))?;
        let s = SkiffSnapshotter {
            root: root.to_path_buf(),
            meta,
            store,
            lazy: Mutex::new(HashMap::new()),
            remounting: tokio::sync::Mutex::new(()),
            mount_options: skiff_fs::MountOptions {
                fuse_threads: 1,
                read_threads: 4,
                keeper_exe,
                ..Default::default()
            },
        };
        for snap in s.meta.read(|tx| tx.all())? {
            let Some(remote) = &snap.remote else { continue };
            let dir = fs_dir(&s.root, snap.id);
            if let Some(kept) = s.meta.read(|tx| tx.kept(snap.id))? {
                match s.resume_lazy(snap.id, remote, &kept).await {
                    Ok(()) => {
                        tracing::info!(snapshot = %snap.key, "resumed a lazy layer's mount");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(snapshot = %snap.key, error = %e, "cannot resume a lazy layer's mount: mounting it afresh");
                        if let Err(e) = skiff_fs::keeper::stop_keeper(kept.keeper_pid, &dir) {
                            tracing::debug!(error = %e, "stopping a descriptor keeper");
                        }
                        s.meta.write(|tx| tx.clear_kept(snap.id))?;
                    }
                }
            }
            detach(&dir);
            if let Err(e) = s.mount_lazy(snap.id, remote).await {
                // Retried when a snapshot on top of it is prepared or mounted; until then
                // those calls fail (Unavailable) rather than show an empty layer.
                tracing::error!(snapshot = %snap.key, error = %e, "serving a lazy layer again");
            }
        }
        Ok(s)
    }

    /// The snapshotter's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Ids whose layer is served lazily right now (for tests and `skiff info`).
    pub fn lazy_snapshots(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self.lazy.lock().unwrap().keys().copied().collect();
        v.sort();
        v
    }

    /// At daemon shutdown: with `keep`, lazy mounts that an overlay mount (a container's
    /// root filesystem) stacks on stay mounted with their keepers for the next daemon to
    /// resume, so those containers keep running; every other lazy mount is unmounted.
    pub fn shutdown(&self, keep: bool) {
        let mounts: Vec<_> = self.lazy.lock().unwrap().drain().collect();
        let lowers = if keep { overlay_lowers() } else { Vec::new() };
        for (id, m) in mounts {
            if keep && m.kept().is_some() && lowers.iter().any(|l| l == m.path()) {
                m.leave();
                continue;
            }
            if let Err(e) = m.unmount() {
                tracing::warn!(snapshot_id = id, error = %e, "unmounting a lazy layer");
            }
            if let Err(e) = self.meta.write(|tx| tx.clear_kept(id)) {
                tracing::warn!(snapshot_id = id, error = %e, "forgetting a lazy layer's keeper");
            }
        }
    }

    /// Serves again the mount of snapshot `id` that a previous process left to `kept`.
    async fn resume_lazy(
        &self,
        id: i64,
        remote: &RemoteLayer,
        kept: &skiff_fs::KeptMount,
    ) -> Result<()> {
        let dir = fs_dir(&self.root, id);
        let lazy_err = |source| SnapshotError::LazyMount {
            layer: remote.digest.clone(),
            path: dir.clone(),
            source: Box::new(source),
        };
        let connection = skiff_fs::connection_of(&dir).map_err(lazy_err)?;
        if connection != kept.connection {
            return Err(SnapshotError::Corrupt {
                path: self.root.join("metadata.db"),
                reason: format!(
                    "{} is FUSE connection {connection}, not the recorded {}",
                    dir.display(),
                    kept.connection
                ),
            });
        }
        let view = self.view_of(remote).await?;
        let dev = skiff_fs::keeper::take_from_keeper(kept.keeper_pid, &dir).map_err(lazy_err)?;
        let fs =
            skiff_fs::ImageFs::new(vec![view], self.store.content_reader()).map_err(lazy_err)?;
        let (handle, _resent) =
            skiff_fs::resume(fs, &dir, dev, kept, &self.mount_options).map_err(lazy_err)?;
        self.lazy.lock().unwrap().insert(id, handle);
        Ok(())
    }

    /// The file index of a stored remote layer, as the store serves it lazily. Errors:
    /// Remote when the store cannot resolve it, Corrupt when it is no longer lazy.
    async fn lazy_index(&self, remote: &RemoteLayer) -> Result<skiff_store::LayerIndex> {
        self.store
            .snapshot_layer(&remote.image, &remote.digest)
            .await
            .map_err(|source| SnapshotError::Remote {
                image: remote.image.clone(),
                layer: remote.digest.clone(),
                source: Box::new(source),
            })?
            .ok_or_else(|| SnapshotError::Corrupt {
                path: self.root.join("metadata.db"),
                reason: format!("layer {} is no longer in a lazy format", remote.digest),
            })
    }

    /// The overlay-format view of a stored remote layer.
    async fn view_of(&self, remote: &RemoteLayer) -> Result<skiff_store::LayerIndex> {
        let index = self.lazy_index(remote).await?;
        overlay_view(&index).map_err(|e| SnapshotError::Corrupt {
            path: self.root.join("metadata.db"),
            reason: format!("layer {}: {e}", remote.digest),
        })
    }

    async fn mount_lazy(&self, id: i64, remote: &RemoteLayer) -> Result<()> {
        let index = self.lazy_index(remote).await?;
        self.mount_index(id, &remote.digest, &index)
    }

    fn mount_index(&self, id: i64, digest: &str, index: &skiff_store::LayerIndex) -> Result<()> {
        let view = overlay_view(index).map_err(|e| SnapshotError::Corrupt {
            path: self.root.join("metadata.db"),
            reason: format!("layer {digest}: {e}"),
        })?;
        let dir = fs_dir(&self.root, id);
        let lazy_err = |source| SnapshotError::LazyMount {
            layer: digest.to_string(),
            path: dir.clone(),
            source: Box::new(source),
        };
        let fs =
            skiff_fs::ImageFs::new(vec![view], self.store.content_reader()).map_err(lazy_err)?;
        let handle = skiff_fs::mount(fs, &dir, &self.mount_options).map_err(lazy_err)?;
        if let Some(kept) = handle.kept() {
            self.meta.write(|tx| tx.set_kept(id, &kept))?;
        }
        self.lazy.lock().unwrap().insert(id, handle);
        Ok(())
    }

    /// Creates an active or view snapshot and its directories.
    fn create(
        &self,
        key: &str,
        kind: Kind,
        parent: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(Snapshot, Vec<i64>)> {
        self.meta.write(|tx| {
            let snap = tx.create(key, kind, parent, labels)?;
            let parents = tx.chain(parent)?;
            let fs = fs_dir(&self.root, snap.id);
            mkdir(&fs, 0o755)?;
            if kind == Kind::Active {
                mkdir(&work_dir(&self.root, snap.id), 0o711)?;
            }
            // The new layer's root starts owned like its parent's (containerd does this).
            if let Some(&p) = parents.first() {
                let pdir = fs_dir(&self.root, p);
                let md = std::fs::metadata(&pdir).map_err(|e| SnapshotError::io(&pdir, e))?;
                std::os::unix::fs::chown(&fs, Some(md.uid()), Some(md.gid()))
                    .map_err(|e| SnapshotError::io(&fs, e))?;
            }
            Ok((snap, parents))
        })
    }

    /// Tries to serve `req`'s layer lazily as active snapshot `snap`, committing it under
    /// the target. `Ok(false)`: not a lazy layer, unpack it instead.
    async fn try_remote(&self, snap: &Snapshot, req: &RemoteRequest) -> Result<bool> {
        let index = self
            .store
            .snapshot_layer(&req.image, &req.digest)
            .await
            .map_err(|source| SnapshotError::Remote {
                image: req.image.clone(),
                layer: req.digest.clone(),
                source: Box::new(source),
            })?;
        let Some(index) = index else {
            return Ok(false);
        };
        if let Err(e) = overlay_view(&index) {
            tracing::info!(layer = %req.digest, reason = %e, "layer unpacked, not served lazily");
            return Ok(false);
        }
        self.mount_index(snap.id, &req.digest, &index)?;
        // Held, so `skiff rmi` of an image sharing the layer keeps it for containerd.
        if let Err(e) = self.store.hold_layer(&req.digest, &holder(snap.id)) {
            if let Some(m) = self.lazy.lock().unwrap().remove(&snap.id) {
                let _ = m.unmount();
            }
            return Err(SnapshotError::Remote {
                image: req.image.clone(),
                layer: req.digest.clone(),
                source: Box::new(e),
            });
        }
        let remote = RemoteLayer {
            image: req.image.clone(),
            digest: req.digest.clone(),
        };
        let committed = self
            .meta
            .write(|tx| tx.commit(&snap.key, &req.target, &snap.labels, (0, 0), Some(&remote)));
        if let Err(e) = committed {
            // Back to an ordinary, empty active snapshot for containerd to unpack into.
            if let Some(m) = self.lazy.lock().unwrap().remove(&snap.id) {
                let _ = m.unmount();
            }
            let _ = self.meta.write(|tx| tx.clear_kept(snap.id));
            if let Err(e) = self.store.release_layer(&req.digest, &holder(snap.id)) {
                tracing::warn!(layer = %req.digest, error = %e, "releasing a lazy layer");
            }
            return Err(e);
        }
        let _ = std::fs::remove_dir(work_dir(&self.root, snap.id));
        tracing::info!(layer = %req.digest, image = %req.image, snapshot = %req.target, "serving layer lazily");
        Ok(true)
    }

    /// [`Self::ensure_parents_served`] for a snapshot just made; on failure the snapshot is
    /// removed again, so it is not left half-made (containerd may retry the same key).
    async fn serve_parents_or_undo(&self, snap: &Snapshot, parents: &[i64]) -> Result<()> {
        if let Err(e) = self.ensure_parents_served(parents).await {
            let _ = self.meta.write(|tx| tx.remove(&snap.key));
            let _ = self.remove_dir(snap.id);
            return Err(e);
        }
        Ok(())
    }

    /// Makes sure every lazily served layer among `parents` is mounted (one that could not
    /// be served again at start is retried now): an overlay over an empty directory would
    /// show a layer without its files. Errors: Unavailable when the layer cannot be served.
    async fn ensure_parents_served(&self, parents: &[i64]) -> Result<()> {
        let missing = {
            let lazy = self.lazy.lock().unwrap();
            parents.iter().any(|id| !lazy.contains_key(id))
        };
        if !missing {
            return Ok(());
        }
        let _one = self.remounting.lock().await;
        for &id in parents {
            if self.lazy.lock().unwrap().contains_key(&id) {
                continue;
            }
            let Some(remote) = self.meta.read(|tx| tx.remote_of(id))? else {
                continue;
            };
            detach(&fs_dir(&self.root, id));
            self.mount_lazy(id, &remote).await?;
        }
        Ok(())
    }

    /// Deletes a removed snapshot's directory (after its lazy mount, if any).
    fn remove_dir(&self, id: i64) -> Result<()> {
        if let Some(m) = self.lazy.lock().unwrap().remove(&id) {
            if let Err(e) = m.unmount() {
                tracing::warn!(snapshot_id = id, error = %e, "unmounting a lazy layer");
            }
        }
        let dir = self.root.join("snapshots").join(id.to_string());
        let fs = dir.join("fs");
        detach(&fs);
        // Never recurse into a mount that is still there: leave it to Cleanup.
        if is_mountpoint(&fs) {
            return Ok(());
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SnapshotError::io(&dir, e)),
        }
    }
}

/// The lower directories of every overlay mount this process can see (its mount
/// namespace: containerd's, on a node).
fn overlay_lowers() -> Vec<PathBuf> {
    parse_overlay_lowers(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// The lower directories of the overlay mounts in `mountinfo` (proc(5) format: `... -
/// overlay SOURCE OPTIONS`, with `lowerdir=a:b` among the options; space, tab, newline
/// and backslash escaped as octal).
fn parse_overlay_lowers(mountinfo: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((_, fs)) = line.split_once(" - ") else {
            continue;
        };
        let mut f = fs.split(' ');
        if f.next() != Some("overlay") {
            continue;
        }
        let options = f.nth(1).unwrap_or("");
        for opt in options.split(',') {
            if let Some(lower) = opt.strip_prefix("lowerdir=") {
                let unescaped = lower
                    .replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\");
                out.extend(unescaped.split(':').map(PathBuf::from));
            }
        }
    }
    out
}

/// The name under which a snapshot holds its layer in skiff's store.
fn holder(id: i64) -> String {
    format!("containerd-snapshot:{id}")
}

/// Whether `path` is a mount point (its device differs from its parent's).
fn is_mountpoint(path: &Path) -> bool {
    let (Ok(me), Some(Ok(up))) = (
        std::fs::symlink_metadata(path),
        path.parent().map(std::fs::symlink_metadata),
    ) else {
        return false;
    };
    me.dev() != up.dev()
}

#[containerd_snapshots::tonic::async_trait]
impl Snapshotter for SkiffSnapshotter {
    type Error = SnapshotError;

    async fn stat(&self, key: String) -> Result<Info> {
        Ok(info(self.meta.read(|tx| tx.require(&key))?))
    }

    async fn update(&self, upd: Info, fieldpaths: Option<Vec<String>>) -> Result<Info> {
        let key = upd.name.clone();
        let snap = self.meta.write(|tx| {
            let cur = tx.require(&key)?;
            let mut labels = cur.labels.clone();
            let paths = fieldpaths.unwrap_or_default();
            if paths.is_empty() {
                labels = upd.labels.clone();
            }
            for p in &paths {
                if p == "labels" {
                    labels = upd.labels.clone();
                } else if let Some(k) = p.strip_prefix("labels.") {
                    match upd.labels.get(k) {
                        Some(v) if !v.is_empty() => {
                            labels.insert(k.to_string(), v.clone());
                        }
                        _ => {
                            labels.remove(k);
                        }
                    }
                } else {
                    return Err(SnapshotError::ImmutableField {
                        key: key.clone(),
                        field: p.clone(),
                    });
                }
            }
            tx.set_labels(&key, &labels)
        })?;
        Ok(info(snap))
    }

    async fn usage(&self, key: String) -> Result<Usage> {
        let snap = self.meta.read(|tx| tx.require(&key))?;
        let (size, inodes) = if snap.kind == Kind::Committed || snap.remote.is_some() {
            (snap.size, snap.inodes)
        } else {
            let dir = fs_dir(&self.root, snap.id);
            tokio::task::spawn_blocking(move || disk_usage(&dir))
                .await
                .expect("disk usage walk does not panic")?
        };
        Ok(Usage { inodes, size })
    }

    async fn mounts(&self, key: String) -> Result<Vec<Mount>> {
        let (snap, parents) = self.meta.read(|tx| {
            let s = tx.require(&key)?;
            let p = tx.chain(&s.parent)?;
            Ok((s, p))
        })?;
        if snap.kind == Kind::Committed {
            return Err(SnapshotError::NotActive {
                key,
                kind: snap.kind.as_str(),
            });
        }
        self.ensure_parents_served(&parents).await?;
        Ok(mounts_for(&self.root, snap.id, snap.kind, &parents))
    }

    async fn prepare(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        let remote = remote_request(&labels);
        if let Some(req) = &remote {
            // Served already (another namespace, or a pull that was repeated).
            let done = self.meta.read(|tx| tx.get(&req.target))?;
            if done.is_some_and(|t| t.kind == Kind::Committed && t.parent == parent) {
                return Err(SnapshotError::AlreadyExists {
                    key: req.target.clone(),
                });
            }
        }
        let (snap, parents) = self.create(&key, Kind::Active, &parent, &labels)?;
        if let Some(req) = remote {
            match self.try_remote(&snap, &req).await {
                Ok(true) => {
                    return Err(SnapshotError::AlreadyExists { key: req.target });
                }
                Ok(false) => {}
                Err(e) => {
                    // containerd then downloads and unpacks the layer itself.
                    tracing::warn!(layer = %req.digest, image = %req.image, error = %e, "lazy layer unavailable: unpacking it instead");
                }
            }
        }
        self.serve_parents_or_undo(&snap, &parents).await?;
        Ok(mounts_for(&self.root, snap.id, Kind::Active, &parents))
    }

    async fn view(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        let (snap, parents) = self.create(&key, Kind::View, &parent, &labels)?;
        self.serve_parents_or_undo(&snap, &parents).await?;
        Ok(mounts_for(&self.root, snap.id, Kind::View, &parents))
    }

    async fn commit(
        &self,
        name: String,
        key: String,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let snap = self.meta.read(|tx| tx.require(&key))?;
        if snap.kind != Kind::Active {
            return Err(SnapshotError::NotActive {
                key,
                kind: snap.kind.as_str(),
            });
        }
        let dir = fs_dir(&self.root, snap.id);
        let usage = tokio::task::spawn_blocking(move || disk_usage(&dir))
            .await
            .expect("disk usage walk does not panic")?;
        self.meta
            .write(|tx| tx.commit(&key, &name, &labels, usage, None))?;
        let work = work_dir(&self.root, snap.id);
        if let Err(e) = std::fs::remove_dir_all(&work) {
            tracing::debug!(path = %work.display(), error = %e, "removing a committed snapshot's work dir");
        }
        Ok(())
    }

    async fn remove(&self, key: String) -> Result<()> {
        let snap = self.meta.write(|tx| tx.remove(&key))?;
        if let Err(e) = self.remove_dir(snap.id) {
            // The row is gone; Cleanup deletes what is left.
            tracing::warn!(snapshot = %key, error = %e, "removing a snapshot's directory");
        }
        if let Some(remote) = &snap.remote {
            match self.store.release_layer(&remote.digest, &holder(snap.id)) {
                Ok(deleted) => {
                    tracing::debug!(layer = %remote.digest, deleted, "released a lazy layer")
                }
                Err(e) => {
                    tracing::warn!(layer = %remote.digest, error = %e, "releasing a lazy layer")
                }
            }
        }
        Ok(())
    }

    async fn clear(&self) -> Result<()> {
        let known: Vec<i64> = self
            .meta
            .read(|tx| tx.all())?
            .iter()
            .map(|s| s.id)
            .collect();
        let dir = self.root.join("snapshots");
        let rd = std::fs::read_dir(&dir).map_err(|e| SnapshotError::io(&dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| SnapshotError::io(&dir, e))?;
            let id = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i64>().ok());
            match id {
                Some(id) if !known.contains(&id) => self.remove_dir(id)?,
                _ => {}
            }
        }
        Ok(())
    }

    type InfoStream = futures::stream::Iter<std::vec::IntoIter<Result<Info>>>;

    async fn list(&self, _snapshotter: String, filters: Vec<String>) -> Result<Self::InfoStream> {
        let filters = Filters::parse(&filters)?;
        let all = self.meta.read(|tx| tx.all())?;
        let out: Vec<Result<Info>> = all
            .into_iter()
            .filter(|s| filters.matches(s))
            .map(|s| Ok(info(s)))
            .collect();
        Ok(futures::stream::iter(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_lower_directories_come_from_mountinfo() {
        let info = "36 35 98:0 / /mnt rw,noatime master:1 - ext3 /dev/root rw\n\
            612 30 0:77 / /run/c/rootfs rw,relatime - overlay overlay rw,lowerdir=/s/5/fs:/s/my\\040dir/fs,upperdir=/s/9/fs,workdir=/s/9/work,index=off\n\
            700 30 0:80 / /s/5/fs ro - fuse /dev/fuse ro,user_id=0\n";
        assert_eq!(
            parse_overlay_lowers(info),
            vec![PathBuf::from("/s/5/fs"), PathBuf::from("/s/my dir/fs")]
        );
    }
}
