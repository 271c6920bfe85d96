//! What the daemon tells the runtime about one container or one exec. Serialized into the
//! container directory, so the shim (a separate process) reads exactly what was asked.

mod logging;
mod mounts;
mod process;
mod security;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

pub use logging::{LogConfig, LogDriver};
pub use mounts::{Mount, MountKind, Propagation, TmpfsOptions};
pub use process::{CgroupNs, Ulimit};
pub use security::{parse_capability, Device, Seccomp, Security};

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
    // --- Docker HostConfig fields (issue 11). Each defaults to what Docker does when the
    // field is absent, so configs written before they existed still load.
    /// Bind and tmpfs mounts (`-v`, `--mount`, `--tmpfs`), applied in order after the
    /// system mounts, so a later mount may sit inside an earlier one. Volumes are bind
    /// mounts of host directories the daemon made.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// `--read-only`: the overlay root is remounted read-only; /dev, /dev/shm, /proc, /sys
    /// (as always), the /etc files and tmpfs/rw mounts keep their own modes.
    #[serde(default)]
    pub readonly_rootfs: bool,
    /// `--init`: host path of a static init (Debian's `/usr/bin/tini-static`), bind-mounted
    /// read-only at `/sbin/docker-init` and run as PID 1 as `/sbin/docker-init -- <args>`.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// `--ulimit name=soft[:hard]`: resource limits set before the process executes.
    #[serde(default)]
    pub ulimits: Vec<Ulimit>,
    /// `--shm-size` in bytes: size of the container's /dev/shm tmpfs; Docker's 64 MiB when
    /// `None`.
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// `--sysctl key=value`, written inside the container's namespaces. Only namespaced
    /// keys: `kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`, and `net.*` unless
    /// the network is the host's; others are refused.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// `--cgroupns`: private (default) gives the container its own cgroup namespace and a
    /// read-only /sys/fs/cgroup showing its own cgroup; host keeps the host's.
    #[serde(default)]
    pub cgroupns: CgroupNs,
    /// `--log-driver`, `--log-opt max-size/max-file/compress`.
    #[serde(default)]
    pub log: LogConfig,
    /// Capabilities, seccomp, no_new_privs, `--privileged`, `--device`.
    #[serde(default)]
    pub security: Security,
    /// The container is removed when it exits (`--rm`), so nothing of it has to survive a
    /// host crash: the overlay is mounted `volatile` (Linux 5.10+; without it when the
    /// kernel refuses the option), so its unmount does not sync the whole host filesystem
    /// the upper dir lives on, and the exit record is not flushed to disk.
    #[serde(default)]
    pub ephemeral: bool,
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
            mounts: Vec::new(),
            readonly_rootfs: false,
            init: None,
            ulimits: Vec::new(),
            shm_size: None,
            sysctls: BTreeMap::new(),
            cgroupns: CgroupNs::default(),
            log: LogConfig::default(),
            security: Security::default(),
            ephemeral: false,
        }
    }

    /// Checks everything that can be checked before the container is built: id, args,
    /// paths, mounts, capability names, ulimits, sysctls, the seccomp profile, devices.
    /// Errors name the field or value at fault (for the daemon's 400).
    pub fn validate(&self) -> Result<()> {
        let cfg = self;
        let invalid = |field, reason: &str| {
            Err(RuntimeError::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        };
        if cfg.id.is_empty()
            || !cfg
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return invalid("id", "must be non-empty [A-Za-z0-9_.-]");
        }
        if cfg.args.is_empty() {
            return invalid("args", "no command given");
        }
        if cfg.lower_dirs.is_empty() {
            return invalid("lower_dirs", "at least one lower directory is needed");
        }
        for p in cfg.lower_dirs.iter().chain([&cfg.container_dir]) {
            let s = p.to_string_lossy();
            if !p.is_absolute() || s.contains([':', ',', '\n']) {
                return invalid(
                    "lower_dirs",
                    &format!("{s}: must be absolute and free of ':' and ','"),
                );
            }
        }
        if cfg.cgroup_parent.is_empty() || cfg.cgroup_parent.contains("..") {
            return invalid("cgroup_parent", "must be a relative cgroup name");
        }
        for m in &cfg.mounts {
            m.validate()?;
        }
        if let Some(init) = &cfg.init {
            if !init.is_absolute() {
                return invalid("init", "the init binary's host path must be absolute");
            }
        }
        for u in &cfg.ulimits {
            u.resolve()?;
        }
        for key in cfg.sysctls.keys() {
            process::validate_sysctl(key, cfg.network == NetworkMode::Host)?;
        }
        if cfg.shm_size == Some(0) {
            return invalid("shm_size", "must be greater than 0");
        }
        // Compiles (and caches) the filter: a profile that does not compile fails here.
        cfg.security.warm_seccomp()?;
        for d in &cfg.security.devices {
            d.validate()?;
        }
        Ok(())
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

/// Resource limits (`--memory`, `--memory-swap`, `--cpus`, `--pids-limit`); `None` means
/// unlimited.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Resources {
    pub memory_bytes: Option<i64>,
    /// Memory plus swap, as Docker's `MemorySwap` (`-1`: unlimited swap); applied with a
    /// memory limit only. `None` with a memory limit: no swap (the limit itself).
    #[serde(default)]
    pub memory_swap_bytes: Option<i64>,
    /// CPUs × 10⁹, as in Docker's API (`--cpus 0.5` = 500_000_000).
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    /// Relative CPU weight, as Docker's `CpuShares` (cgroup v1 `cpu.shares`, 2..=262144;
    /// v2 `cpu.weight` by runc's mapping).
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// Docker's `MemoryReservation` in bytes: a soft limit the kernel reclaims down to under
    /// memory pressure (cgroup v1 `memory.soft_limit_in_bytes`, v2 `memory.low`).
    #[serde(default)]
    pub memory_reservation_bytes: Option<i64>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_written_before_the_host_config_fields_still_load() {
        let mut cfg =
            ContainerConfig::new("abc", "/c".into(), vec!["/l".into()], vec!["sh".into()]);
        let mut v = serde_json::to_value(&cfg).unwrap();
        let obj = v.as_object_mut().unwrap();
        for k in [
            "mounts",
            "readonly_rootfs",
            "init",
            "ulimits",
            "shm_size",
            "sysctls",
            "cgroupns",
            "log",
            "security",
        ] {
            assert!(obj.remove(k).is_some(), "{k}");
        }
        let old: ContainerConfig = serde_json::from_value(v).unwrap();
        assert_eq!(old, cfg);
        cfg.security.cap_add = vec!["CAP_NOPE".into()];
        assert!(matches!(
            cfg.validate(),
            Err(RuntimeError::UnknownCapability { .. })
        ));
    }
}
