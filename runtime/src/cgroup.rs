//! The container's cgroup, through cgroups-rs, on v1, v2 or the hybrid layout (v1 controllers
//! plus a cgroup2 mount at /sys/fs/cgroup/unified), detected at run time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::{Cgroup, CgroupPid, MaxValue};

use crate::config::Resources;
use crate::error::{Result, RuntimeError};

/// v1 controllers a container is placed in (others, e.g. `name=systemd`, are left alone).
/// (`blkio` only counts: `stats` reads its I/O counters.)
const V1_CONTROLLERS: &[&str] = &[
    "memory", "pids", "cpu", "cpuacct", "devices", "freezer", "blkio",
];
/// v2 controllers enabled for containers.
const V2_CONTROLLERS: &[&str] = &["memory", "pids", "cpu"];
/// CFS period used for `--cpus`, as Docker's.
const CFS_PERIOD_US: u64 = 100_000;
/// Devices a container may use (v1 devices controller): null, zero, full, random, urandom,
/// tty, console, ptmx, the pty slaves; everything else, notably host disks, is denied.
const ALLOWED_DEVICES: &[&str] = &[
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

/// The cgroup2 mount of the hybrid layout (v1 controllers plus a controller-less cgroup2).
const UNIFIED_MOUNT: &str = "/sys/fs/cgroup/unified";

/// On the hybrid layout, the container's directory in the `unified` cgroup2 hierarchy
/// (`/sys/fs/cgroup/unified/<path>`); `None` elsewhere. Processes are placed there at fork
/// ([`crate::forkinto::fork_into`]), so the container's cgroup namespace and its
/// /sys/fs/cgroup/unified show its own cgroup, as with runc.
pub(crate) fn unified_dir(path: &str) -> Option<PathBuf> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let fs = nix::sys::statfs::statfs(UNIFIED_MOUNT).ok()?;
    (fs.filesystem_type().0 as i64 == CGROUP2_SUPER_MAGIC)
        .then(|| Path::new(UNIFIED_MOUNT).join(path))
}

/// Makes (if needed) and opens the container's `unified` directory, for
/// [`crate::forkinto::fork_into`]; `None` when the host has no hybrid layout.
pub(crate) fn open_unified(path: &str) -> Result<Option<std::os::fd::OwnedFd>> {
    let Some(dir) = unified_dir(path) else {
        return Ok(None);
    };
    std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("mkdir", &dir, e))?;
    let f = std::fs::File::open(&dir).map_err(|e| RuntimeError::io("open", &dir, e))?;
    Ok(Some(f.into()))
}

pub(crate) struct ContainerCgroup {
    cg: Cgroup,
    path: String,
}

fn hierarchy() -> Box<dyn cgroups_rs::Hierarchy> {
    crate::mount_table::cgroup_hierarchy()
}

fn controllers(v2: bool) -> Vec<String> {
    let list = if v2 { V2_CONTROLLERS } else { V1_CONTROLLERS };
    list.iter().map(|s| s.to_string()).collect()
}

fn cg_err<'a>(
    step: &'static str,
    path: &'a str,
) -> impl FnOnce(cgroups_rs::error::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Cgroup {
        step,
        path: path.to_string(),
        source,
    }
}

impl ContainerCgroup {
    /// Creates the cgroup `path` (e.g. `skiff/<id>`) and applies the limits. `devices`:
    /// extra v1 device rules (`c 10:229 rwm`) on top of the default ones, or `None` to
    /// allow every device (`--privileged`).
    pub(crate) fn create(
        path: &str,
        res: &Resources,
        devices: Option<&[String]>,
    ) -> Result<ContainerCgroup> {
        let hier = hierarchy();
        let v2 = hier.v2();
        let cg = Cgroup::new_with_specified_controllers(hier, path, Some(controllers(v2)))
            .map_err(cg_err("create", path))?;
        let me = ContainerCgroup {
            cg,
            path: path.to_string(),
        };
        if let Err(e) = me.apply(res, v2, devices) {
            me.destroy();
            return Err(e);
        }
        Ok(me)
    }

    /// A handle on an existing container cgroup (for exec, kill and cleanup).
    pub(crate) fn load(path: &str) -> ContainerCgroup {
        let hier = hierarchy();
        let v2 = hier.v2();
        let cg = Cgroup::load_with_specified_controllers(hier, path, controllers(v2));
        ContainerCgroup {
            cg,
            path: path.to_string(),
        }
    }

    pub(crate) fn apply(
        &self,
        res: &Resources,
        v2: bool,
        devices: Option<&[String]>,
    ) -> Result<()> {
        use cgroups_rs::cpu::CpuController;
        use cgroups_rs::memory::MemController;
        use cgroups_rs::pid::PidController;
        let p = self.path.as_str();
        if let Some(bytes) = res.memory_bytes {
            let mem: &MemController = self
                .cg
                .controller_of()
                .ok_or_else(|| missing("memory", p))?;
            // Memory plus swap (Docker's `MemorySwap`; -1: unlimited). Without one, no swap
            // on top of the limit, so an over-limit process is OOM-killed, not swapped.
            let swap = res.memory_swap_bytes.filter(|s| *s != 0).unwrap_or(bytes);
            let memsw = self.file("memory", "memory.memsw.limit_in_bytes");
            if !v2 && memsw.exists() {
                // v1 keeps memory <= memory+swap at every step: raising the limit above the
                // current memory+swap needs that raised first, lowering it the other way.
                let current = std::fs::read_to_string(&memsw)
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .unwrap_or(i64::MAX);
                if bytes > current {
                    mem.set_memswap_limit(swap)
                        .map_err(cg_err("memory+swap limit", p))?;
                    mem.set_limit(bytes).map_err(cg_err("memory limit", p))?;
                } else {
                    mem.set_limit(bytes).map_err(cg_err("memory limit", p))?;
                    mem.set_memswap_limit(swap)
                        .map_err(cg_err("memory+swap limit", p))?;
                }
            } else {
                mem.set_limit(bytes).map_err(cg_err("memory limit", p))?;
                if v2 {
                    // cgroup v2 limits swap alone: memory+swap minus memory.
                    let max = if swap < 0 {
                        "max".to_string()
                    } else {
                        (swap - bytes).max(0).to_string()
                    };
                    let _ = std::fs::write(self.file("memory", "memory.swap.max"), max);
                }
            }
        }
        if let Some(bytes) = res.memory_reservation_bytes.filter(|&b| b > 0) {
            if v2 {
                let f = self.file("memory", "memory.low");
                std::fs::write(&f, bytes.to_string())
                    .map_err(|e| RuntimeError::io("memory reservation", f, e))?;
            } else {
                let mem: &MemController = self
                    .cg
                    .controller_of()
                    .ok_or_else(|| missing("memory", p))?;
                mem.set_soft_limit(bytes)
                    .map_err(cg_err("memory reservation", p))?;
            }
        }
        if let Some(nano) = res.nano_cpus {
            let cpu: &CpuController = self.cg.controller_of().ok_or_else(|| missing("cpu", p))?;
            let quota = (nano as i128 * CFS_PERIOD_US as i128 / 1_000_000_000) as i64;
            cpu.set_cfs_quota_and_period(Some(quota.max(1000)), Some(CFS_PERIOD_US))
                .map_err(cg_err("cpu quota", p))?;
        }
        if let Some(shares) = res.cpu_shares.filter(|&s| s > 0) {
            let shares = shares.clamp(2, 262_144);
            if v2 {
                // runc's mapping of shares [2, 262144] onto cpu.weight [1, 10000].
                let weight = 1 + ((shares - 2) * 9999) / 262_142;
                let f = self.file("cpu", "cpu.weight");
                std::fs::write(&f, weight.to_string())
                    .map_err(|e| RuntimeError::io("cpu weight", f, e))?;
            } else {
                let cpu: &CpuController =
                    self.cg.controller_of().ok_or_else(|| missing("cpu", p))?;
                cpu.set_shares(shares).map_err(cg_err("cpu shares", p))?;
            }
        }
        if let Some(max) = res.pids_limit.filter(|&m| m > 0) {
            let pids: &PidController = self.cg.controller_of().ok_or_else(|| missing("pids", p))?;
            pids.set_pid_max(MaxValue::Value(max))
                .map_err(cg_err("pids limit", p))?;
        }
        if let (false, Some(extra)) = (v2, devices) {
            let deny = self.file("devices", "devices.deny");
            if deny.exists() {
                let write = |f: PathBuf, v: &str| {
                    std::fs::write(&f, v).map_err(|e| RuntimeError::io("devices cgroup", f, e))
                };
                write(deny, "a")?;
                for d in ALLOWED_DEVICES
                    .iter()
                    .copied()
                    .chain(extra.iter().map(String::as_str))
                {
                    write(self.file("devices", "devices.allow"), d)?;
                }
            }
        }
        Ok(())
    }

    /// The directory of this cgroup in each hierarchy it exists in.
    pub(crate) fn dirs(&self) -> Vec<PathBuf> {
        self.cg
            .subsystems()
            .iter()
            .map(|s| s.to_controller().path().to_path_buf())
            .collect()
    }

    pub(crate) fn file(&self, controller: &str, name: &str) -> PathBuf {
        for s in self.cg.subsystems() {
            if self.cg.v2() || s.controller_name() == controller {
                return s.to_controller().path().join(name);
            }
        }
        PathBuf::from("/nonexistent").join(name)
    }

    /// On cgroup v1, the `tasks` file of each hierarchy, opened for the single-threaded
    /// init to move itself by writing `0` to each; `None` on v2, where the parent uses
    /// [`add`](Self::add).
    ///
    /// Why: moving a thread group (`cgroup.procs`) takes the kernel's global threadgroup
    /// rwsem for writing, which waits out an RCU grace period: 10-20 ms per container. A
    /// thread moving only itself (`0` into `tasks`) skips that lock; for a single-threaded
    /// process it is the same move.
    pub(crate) fn self_join(&self) -> Result<Option<SelfJoin>> {
        if self.cg.v2() {
            return Ok(None);
        }
        let mut files = Vec::new();
        for dir in self.dirs() {
            let path = dir.join("tasks");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| RuntimeError::io("open", &path, e))?;
            files.push((path, f));
        }
        Ok(Some(SelfJoin { files }))
    }

    /// Moves a process (all its threads) into the cgroup.
    pub(crate) fn add(&self, pid: i32) -> Result<()> {
        self.cg
            .add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(cg_err("add process", &self.path))
    }

    /// Whether the kernel OOM-killed a process of this cgroup.
    pub(crate) fn oom_killed(&self) -> bool {
        let (file, key) = if self.cg.v2() {
            (self.file("memory", "memory.events"), "oom_kill")
        } else {
            (self.file("memory", "memory.oom_control"), "oom_kill")
        };
        std::fs::read_to_string(file)
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    let mut it = l.split_whitespace();
                    (it.next() == Some(key)).then(|| it.next()?.parse::<u64>().ok())?
                })
            })
            .is_some_and(|n| n > 0)
    }

    /// Pids (host view) of every process still in the cgroup.
    pub(crate) fn procs(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.cg.procs().into_iter().map(|p| p.pid as i32).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Removes the cgroup, SIGKILLing whatever is still in it and retrying while the kernel
    /// finishes tearing dying processes down. The common case (already empty) costs one
    /// rmdir per hierarchy. Best effort: a failure is logged once, here.
    pub(crate) fn destroy(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left: Vec<PathBuf> = self
                .dirs()
                .into_iter()
                .chain(unified_dir(&self.path))
                .filter(|d| match std::fs::remove_dir(d) {
                    Ok(()) => false,
                    Err(e) => e.kind() != std::io::ErrorKind::NotFound,
                })
                .collect();
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                tracing::error!(cgroup = %self.path, ?left, "cannot remove container cgroup");
                return;
            }
            for pid in self.procs() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// See [`ContainerCgroup::self_join`]: the `tasks` files, sent to the init with `GO`.
pub(crate) struct SelfJoin {
    pub files: Vec<(PathBuf, std::fs::File)>,
}

fn missing(controller: &'static str, path: &str) -> RuntimeError {
    RuntimeError::InvalidConfig {
        field: controller,
        reason: format!("cgroup controller {controller} not available for {path}"),
    }
}
