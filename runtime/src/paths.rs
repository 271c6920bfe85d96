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
    /// The container's seccomp filter as compiled BPF (`struct sock_filter[]`), written by
    /// `create` so that neither the init nor `exec` compiles the profile again.
    pub fn seccomp_bpf(&self) -> PathBuf {
        self.dir.join("seccomp.bpf")
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

/// Runs `f` with a path naming the socket `path` that fits a `sockaddr_un` (108 bytes):
/// deep data roots exceed that, so a long path goes through an `O_PATH` descriptor of its
/// directory (`/proc/self/fd/N/name`), which stays open while `f` binds or connects.
pub(crate) fn with_socket_path<T>(
    path: &Path,
    f: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    if path.as_os_str().len() < 100 {
        return f(path);
    }
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => (d, n),
        _ => return f(path),
    };
    let dirfd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dirfd.as_raw_fd())).join(name);
    let r = f(&short);
    drop(dirfd);
    r
}
