//! One read-only FUSE mount per image, shared by all of that image's containers and
//! unmounted when the last one goes (or at shutdown).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use super::error::DaemonError;
use super::paths::Paths;
use super::profiles::{MountProfiles, MountWork, ProfileSettings};

struct Mounted {
    handle: skiff_fs::MountHandle,
    users: usize,
    work: MountWork,
}

pub struct ImageMounts {
    paths: Paths,
    mounted: Mutex<HashMap<String, Mounted>>,
    profiles: MountProfiles,
}

impl ImageMounts {
    pub fn new(paths: Paths, profiles: ProfileSettings) -> ImageMounts {
        ImageMounts {
            paths,
            mounted: Mutex::new(HashMap::new()),
            profiles: MountProfiles::new(profiles),
        }
    }

    /// Detaches mounts a previous daemon left behind (their FUSE server is gone).
    pub fn clean_stale(&self) {
        let dir = self.paths.exec_root.join("images");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH).is_ok() {
                tracing::info!(path = %p.display(), "detached a stale image mount");
            }
            let _ = std::fs::remove_dir(&p);
        }
    }

    /// Mounts the image if needed and returns its mount point; counts one more user.
    pub fn acquire(
        &self,
        store: &skiff_store::Store,
        image_id: &str,
    ) -> Result<PathBuf, DaemonError> {
        let mut m = self.mounted.lock().expect("mounts lock");
        if let Some(e) = m.get_mut(image_id) {
            e.users += 1;
            return Ok(e.handle.path().to_path_buf());
        }
        let target = self.paths.image_mount(image_id);
        std::fs::create_dir_all(&target).map_err(|e| DaemonError::io("creating", &target, e))?;
        let layers = store.layer_indexes(image_id)?;
        let work = self.profiles.on_mount(store, image_id, &layers);
        let mut fs = skiff_fs::ImageFs::new(layers, store.content_reader())
            .map_err(|e| DaemonError::Internal(format!("image {image_id}: {e}")))?;
        if let Some(r) = &work.recorder {
            fs.set_recorder(r.clone());
        }
        let handle = skiff_fs::mount(fs, &target, &skiff_fs::MountOptions::default())
            .map_err(|e| DaemonError::Internal(format!("mounting image {image_id}: {e}")))?;
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

    pub fn unmount_all(&self) {
        let mut m = self.mounted.lock().expect("mounts lock");
        for (_, e) in m.drain() {
            self.profiles.unmounted(e.work);
            let path = e.handle.path().to_path_buf();
            if let Err(err) = e.handle.unmount() {
                tracing::warn!(path = %path.display(), "unmounting image: {err}");
            }
            let _ = std::fs::remove_dir(&path);
        }
        self.profiles.shutdown();
    }
}
