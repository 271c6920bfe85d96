//! What the daemon tells the runtime about one container or one exec. Serialized into the
//! container directory, so the shim (a separate process) reads exactly what was asked.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One container: read-only lower directories plus everything needed to run a process on them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerConfig {
    /// Container id (hex); its first 12 characters are the default hostname.
    pub id: String,
    /// Where the runtime keeps this container's upper/work dirs, rootfs mount point, log,
    /// state and socket. Created if missing.
    pub container_dir: PathBuf,
    /// Read-only lower directories of the overlay, topmost first (usually one FUSE mount).
    pub lower_dirs: Vec<PathBuf>,
    /// argv; `args[0]` is looked up in the container's `PATH` when it has no slash.
    pub args: Vec<String>,
    /// `KEY=value` entries. `PATH`, `HOSTNAME` and `HOME` get Docker's defaults when absent.
    pub env: Vec<String>,
    /// Working directory inside the container (created if missing); `/` when empty.
    pub cwd: String,
    /// `user`, `uid`, `user:group` or `uid:gid`, resolved in the image's /etc/passwd and
    /// /etc/group; root when empty.
    pub user: String,
    /// Hostname; the short id when `None`.
    pub hostname: Option<String>,
    /// Allocate a pty for the process (`-t`).
    pub tty: bool,
    /// Keep stdin open for attach clients (`-i`).
    pub open_stdin: bool,
    /// Initial pty size.
    pub console_size: Option<WinSize>,
    pub resources: Resources,
    pub network: NetworkMode,
    /// Contents of the container's /etc/hosts; Docker's minimal file when `None`.
    pub hosts: Option<String>,
    /// Contents of the container's /etc/resolv.conf; the host's when `None`.
    pub resolv_conf: Option<String>,
    /// Name of the parent cgroup every container cgroup goes under (`skiff`).
    pub cgroup_parent: String,
}

impl ContainerConfig {
    /// A config with Docker's defaults for everything but the essentials.
    pub fn new(
        id: &str,
        container_dir: PathBuf,
        lower_dirs: Vec<PathBuf>,
        args: Vec<String>,
    ) -> Self {
        ContainerConfig {
            id: id.to_string(),
            container_dir,
            lower_dirs,
            args,
            env: Vec::new(),
            cwd: "/".to_string(),
            user: String::new(),
            hostname: None,
            tty: false,
            open_stdin: false,
            console_size: None,
            resources: Resources::default(),
            network: NetworkMode::None,
            hosts: None,
            resolv_conf: None,
            cgroup_parent: "skiff".to_string(),
        }
    }

    pub(crate) fn effective_hostname(&self) -> String {
        match &self.hostname {
            Some(h) if !h.is_empty() => h.clone(),
            _ => self.id.chars().take(12).collect(),
        }
    }

    /// Relative cgroup path of this container (`skiff/<id>`).
    pub fn cgroup_path(&self) -> String {
        format!("{}/{}", self.cgroup_parent, self.id)
    }
}

/// Resource limits (`--memory`, `--cpus`, `--pids-limit`); `None` means unlimited.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Resources {
    pub memory_bytes: Option<i64>,
    /// CPUs × 10⁹, as in Docker's API (`--cpus 0.5` = 500_000_000).
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
}

/// Which network namespace the container gets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum NetworkMode {
    /// The host's network namespace.
    Host,
    /// A fresh network namespace with only `lo`, up.
    None,
    /// An already prepared network namespace, e.g. a bind mount under /run/skiff/netns.
    Join(PathBuf),
}

/// Terminal size in character cells.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// A process to start inside a running container (`docker exec`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExecConfig {
    pub args: Vec<String>,
    /// Added to (and overriding) the container's environment.
    pub env: Vec<String>,
    /// Working directory; the container's when empty.
    pub cwd: String,
    /// As in [`ContainerConfig::user`]; the container's user when empty.
    pub user: String,
    pub tty: bool,
    pub open_stdin: bool,
    pub console_size: Option<WinSize>,
}
