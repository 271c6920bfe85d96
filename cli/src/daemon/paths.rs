//! Every path the daemon uses, derived from the data root and the exec root so tests can run
//! isolated daemons side by side.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Paths {
    /// Persistent state (`--data-root`, default `/var/lib/skiff`).
    pub data_root: PathBuf,
    /// Volatile state (`--exec-root`, default `/run/skiff`).
    pub exec_root: PathBuf,
}

impl Paths {
    pub fn new(data_root: PathBuf, exec_root: PathBuf) -> Paths {
        Paths {
            data_root,
            exec_root,
        }
    }

    /// The image store's root (blobs, layers, skiff.db).
    pub fn store(&self) -> PathBuf {
        self.data_root.clone()
    }

    /// The daemon's container records.
    pub fn daemon_db(&self) -> PathBuf {
        self.data_root.join("containers.db")
    }

    /// Where the containers' directories are.
    pub fn containers_dir(&self) -> PathBuf {
        self.data_root.join("containers")
    }

    /// A container's persistent directory (upper, work, log, state files).
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    /// Where an image's FUSE filesystem is mounted.
    pub fn image_mount(&self, image_id: &str) -> PathBuf {
        let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
        self.exec_root.join("images").join(hex)
    }

    /// The read-only layer above every container's image (`skiff_runtime::init_layer`).
    pub fn init_layer(&self) -> PathBuf {
        self.data_root.join("init-layer")
    }

    /// Volumes: `<data-root>/volumes/NAME/_data`.
    pub fn volumes_dir(&self) -> PathBuf {
        self.data_root.join("volumes")
    }

    /// Network state (address allocations).
    pub fn network_state(&self) -> PathBuf {
        self.data_root.join("network")
    }

    /// Volatile network namespaces.
    pub fn netns_dir(&self) -> PathBuf {
        self.exec_root.join("netns")
    }

    pub fn all_dirs(&self) -> Vec<PathBuf> {
        vec![
            self.data_root.clone(),
            self.exec_root.clone(),
            self.data_root.join("containers"),
            self.data_root.join("volumes"),
            self.exec_root.join("images"),
            self.data_root.join("tmp"),
        ]
    }
}

/// Creates `dir` (and parents) root-only (0700), as dockerd does for its roots.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
