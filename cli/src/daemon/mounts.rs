//! One read-only FUSE mount per image, shared by all of that image's containers and
//! unmounted when the image is removed.
//!
//! Live restore (docs/live-restore.md): each mount's `/dev/fuse` descriptor is also held by
//! a descriptor keeper process, and `<exec-root>/images/<id>.json` records what a new daemon
//! needs to serve the mount again (keeper pid, connection, inode-table fingerprint). At
//! start, [`ImageMounts::restore`] resumes every recorded mount it can and detaches the rest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::error::DaemonError;
use super::paths::Paths;
use super::profiles::{MountProfiles, MountWork, ProfileSettings};

struct Mounted {
    handle: skiff_fs::MountHandle,
    users: usize,
    work: MountWork,
}

/// `<exec-root>/images/<hex>.json`: a kept mount, for the next daemon.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct KeptRecord {
    image_id: String,
    keeper_pid: u32,
    connection: u32,
    fingerprint: u64,
}

pub struct ImageMounts {
    paths: Paths,
    mounted: Mutex<HashMap<String, Mounted>>,
    profiles: MountProfiles,
    options: skiff_fs::MountOptions,
    /// Whether the kernel accepted FUSE_NOTIFY_RESEND on every resumed mount (`None`
    /// until a mount was resumed).
    resend: Mutex<Option<bool>>,
    shut: AtomicBool,
}

/// What [`ImageMounts::restore`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Image ids whose mounts are served again.
    pub resumed: Vec<String>,
    /// Mounts that could not be resumed and were detached.
    pub detached: usize,
}

impl ImageMounts {
    /// `keeper_exe`: our binary, run as each mount's descriptor keeper.
    pub fn new(paths: Paths, profiles: ProfileSettings, keeper_exe: PathBuf) -> ImageMounts {
        ImageMounts {
            paths,
            mounted: Mutex::new(HashMap::new()),
            profiles: MountProfiles::new(profiles),
            options: skiff_fs::MountOptions {
                keeper_exe: Some(keeper_exe),
                ..Default::default()
            },
            resend: Mutex::new(None),
            shut: AtomicBool::new(false),
        }
    }

    fn record_path(&self, image_id: &str) -> PathBuf {
        self.paths.image_mount(image_id).with_extension("json")
    }

    /// Serves again the mounts a previous daemon kept; detaches (and stops the keepers of)
    /// those it cannot: no record, the mount or keeper gone, or an inode table that changed.
    pub fn restore(&self, store: &skiff_store::Store) -> Restored {
        let mut out = Restored::default();
        let dir = self.paths.exec_root.join("images");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return out;
        };
        for e in rd.flatten() {
            let p = e.path();
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let record_path = p.with_extension("json");
            let record = std::fs::read(&record_path)
                .ok()
                .and_then(|b| serde_json::from_slice::<KeptRecord>(&b).ok());
            let resumed = match &record {
                Some(r) => self.resume_one(store, &p, r),
                None => Err(anyhow::anyhow!("no record of its keeper")),
            };
            match resumed {
                Ok(()) => {
                    let id = record.map(|r| r.image_id).unwrap_or_default();
                    tracing::info!(image = %id, path = %p.display(), "resumed image mount");
                    out.resumed.push(id);
                }
                Err(err) => {
                    out.detached += 1;
                    if nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH).is_ok() {
                        tracing::warn!(path = %p.display(), "detached an image mount that cannot be resumed: {err:#}");
                    }
                    if let Some(r) = &record {
                        if let Err(e) = skiff_fs::keeper::stop_keeper(r.keeper_pid, &p) {
                            tracing::debug!("{e}");
                        }
                    }
                    let _ = std::fs::remove_file(&record_path);
                    let _ = std::fs::remove_dir(&p);
                }
            }
        }
        out
    }

    fn resume_one(
        &self,
        store: &skiff_store::Store,
        target: &Path,
        r: &KeptRecord,
    ) -> anyhow::Result<()> {
        if self.paths.image_mount(&r.image_id) != target {
            anyhow::bail!("record names image {}", r.image_id);
        }
        let connection = skiff_fs::connection_of(target)?;
        if connection != r.connection {
            anyhow::bail!(
                "mounted connection {connection} is not the recorded {}",
                r.connection
            );
        }
        let dev = skiff_fs::keeper::take_from_keeper(r.keeper_pid, target)?;
        let layers = store.layer_indexes(&r.image_id)?;
        let work = self.profiles.on_mount(store, &r.image_id, &layers);
        let fs = skiff_fs::ImageFs::new(layers, store.content_reader())?;
        let kept = skiff_fs::KeptMount {
            keeper_pid: r.keeper_pid,
            connection: r.connection,
            fingerprint: r.fingerprint,
        };
        let (handle, resent) = skiff_fs::resume(fs, target, dev, &kept, &self.options)?;
        {
            let mut resend = self.resend.lock().expect("resend lock");
            *resend = Some(resend.unwrap_or(true) && resent);
        }
        self.mounted.lock().expect("mounts lock").insert(
            r.image_id.clone(),
            Mounted {
                handle,
                users: 0,
                work,
            },
        );
        Ok(())
    }

    /// Waits for the access-profile saves under way (blocking).
    pub fn wait_profile_saves(&self) {
        self.profiles.shutdown();
    }

    /// Whether the kernel resent the requests in flight at the last restart (`None`: no
    /// mount was resumed).
    pub fn resend_supported(&self) -> Option<bool> {
        *self.resend.lock().expect("resend lock")
    }

    /// Mounts the image if needed and returns its mount point; counts one more user.
    pub fn acquire(
        &self,
        store: &skiff_store::Store,
        image_id: &str,
    ) -> Result<PathBuf, DaemonError> {
        self.acquire_for(store, image_id, None)
    }

    /// [`acquire`](Self::acquire) for a container that will run `program` (`(argv0,
    /// PATH)`): when this mounts the image, that program and what it loads are fetched in
    /// the background (`Store::prefetch_program`).
    pub fn acquire_for(
        &self,
        store: &skiff_store::Store,
        image_id: &str,
        program: Option<(&str, &str)>,
    ) -> Result<PathBuf, DaemonError> {
        let mut m = self.mounted.lock().expect("mounts lock");
        if let Some(e) = m.get_mut(image_id) {
            e.users += 1;
            return Ok(e.handle.path().to_path_buf());
        }
        if self.shut.load(Ordering::Relaxed) {
            return Err(DaemonError::Internal(format!(
                "mounting image {image_id}: the daemon is shutting down"
            )));
        }
        let target = self.paths.image_mount(image_id);
        std::fs::create_dir_all(&target).map_err(|e| DaemonError::io("creating", &target, e))?;
        let t0 = std::time::Instant::now();
        let ms = || t0.elapsed().as_secs_f64() * 1e3;
        let layers = store.layer_indexes(image_id)?;
        tracing::debug!(image = %image_id, ms = ms(), "mount: layer indexes loaded");
        if let Some((argv0, path)) = program {
            store.prefetch_program(&layers, argv0, path);
        }
        let work = self.profiles.on_mount(store, image_id, &layers);
        let mut fs = skiff_fs::ImageFs::new(layers, store.content_reader())
            .map_err(|e| DaemonError::Internal(format!("image {image_id}: {e}")))?;
        tracing::debug!(image = %image_id, ms = ms(), "mount: tree built");
        if let Some(r) = &work.recorder {
            fs.set_recorder(r.clone());
        }
        let handle = skiff_fs::mount(fs, &target, &self.options)
            .map_err(|e| DaemonError::Internal(format!("mounting image {image_id}: {e}")))?;
        if let Some(kept) = handle.kept() {
            let record = KeptRecord {
                image_id: image_id.to_string(),
                keeper_pid: kept.keeper_pid,
                connection: kept.connection,
                fingerprint: kept.fingerprint,
            };
            let bytes = serde_json::to_vec(&record).expect("record serializes");
            // Without the record a restart cannot resume the mount; still usable now.
            if let Err(e) = super::volumes::write_atomic(&self.record_path(image_id), &bytes) {
                tracing::error!(image = %image_id, "recording the image mount's keeper: {e}");
            }
        }
        tracing::info!(image = %image_id, path = %target.display(), "mounted image");
        let path = handle.path().to_path_buf();
        let mounted = Mounted {
            handle,
            users: 1,
            work,
        };
        m.insert(image_id.to_string(), mounted);
        Ok(path)
    }

    /// Mounts the image if it is not mounted (an exited container restored by a new daemon
    /// being started again), counting that container as its user; no-op otherwise.
    pub fn ensure(&self, store: &skiff_store::Store, image_id: &str) -> Result<(), DaemonError> {
        if self
            .mounted
            .lock()
            .expect("mounts lock")
            .contains_key(image_id)
        {
            return Ok(());
        }
        self.acquire(store, image_id).map(|_| ())
    }

    /// The images mounted now.
    pub fn mounted_images(&self) -> std::collections::HashSet<String> {
        self.mounted
            .lock()
            .expect("mounts lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Whether the image is mounted now.
    pub fn is_mounted(&self, image_id: &str) -> bool {
        self.mounted
            .lock()
            .expect("mounts lock")
            .contains_key(image_id)
    }

    /// One user fewer. The mount stays while the image exists (the next container of
    /// the image starts without mounting and building the tree again); removing the image
    /// unmounts it ([`ImageMounts::unmount_unused`]).
    pub fn release(&self, image_id: &str) {
        let mut m = self.mounted.lock().expect("mounts lock");
        if let Some(e) = m.get_mut(image_id) {
            e.users = e.users.saturating_sub(1);
            if e.users == 0 {
                self.profiles.released(&mut e.work);
            }
        }
    }

    /// Unmounts the image if no container uses it; `false` if one does.
    pub fn unmount_unused(&self, image_id: &str) -> bool {
        let mut m = self.mounted.lock().expect("mounts lock");
        match m.get(image_id) {
            Some(e) if e.users > 0 => false,
            Some(_) => {
                if let Some(e) = m.remove(image_id) {
                    self.profiles.unmounted(e.work);
                    let path = e.handle.path().to_path_buf();
                    let _ = std::fs::remove_file(self.record_path(image_id));
                    if let Err(err) = e.handle.unmount() {
                        tracing::warn!(path = %path.display(), "unmounting image: {err}");
                    }
                    let _ = std::fs::remove_dir(&path);
                }
                true
            }
            None => true,
        }
    }

    /// At daemon shutdown. Mounts of the images in `keep` (those of live containers, with
    /// live restore) are left to their keepers for the next daemon; the others are detached
    /// and their keepers stopped (whatever still uses one gets ENOTCONN once this process
    /// exits). Never waits on a busy mount.
    pub fn shutdown(&self, keep: &std::collections::HashSet<String>) {
        self.shut.store(true, Ordering::Relaxed);
        let mut m = self.mounted.lock().expect("mounts lock");
        for (image_id, e) in m.drain() {
            self.profiles.unmounted(e.work);
            if keep.contains(&image_id) {
                tracing::info!(image = %image_id, "image mount kept for the next daemon");
                e.handle.leave();
                continue;
            }
            let path = e.handle.path().to_path_buf();
            let _ = std::fs::remove_file(self.record_path(&image_id));
            e.handle.abandon();
            let _ = std::fs::remove_dir(&path);
        }
        drop(m);
        self.profiles.shutdown();
    }
}
