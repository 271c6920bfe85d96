//! The files of one container directory, named in one place.

use std::path::{Path, PathBuf};

/// Paths inside a container directory.
#[derive(Debug, Clone)]
pub struct ContainerPaths {
    pub dir: PathBuf,
}

impl ContainerPaths {
    pub fn new(dir: &Path) -> Self {
        ContainerPaths {
            dir: dir.to_path_buf(),
        }
    }
    /// The [`crate::ContainerConfig`] the shim runs.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// The shim's record of status, pids and exit.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// Docker json-file log of the container's output.
    pub fn log(&self) -> PathBuf {
        self.dir.join("container.log")
    }
    /// The shim's unix socket (start, attach, resize, wait).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("shim.sock")
    }
    /// The shim's own diagnostics.
    pub fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// Mount point of the overlay (inside the container's mount namespace only).
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    /// Source files bind-mounted onto /etc/{hostname,hosts,resolv.conf}.
    pub fn etc_file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
