//! /sys/fs/cgroup inside the container: the host's cgroup layout (v1 hierarchies, the
//! hybrid `unified` cgroup2, or a pure cgroup2), mounted read-only in the container's cgroup
//! namespace, so each hierarchy's root is the container's own cgroup and programs (JVM, Go,
//! Node) read their limits there, e.g. `memory/memory.limit_in_bytes` or `memory.max`.

use std::path::Path;

use nix::mount::{mount, MsFlags};

use crate::error::StepFailure;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// One filesystem mounted at or under /sys/fs/cgroup on the host.
#[derive(Clone)]
pub(crate) enum Entry {
    /// A cgroup v1 hierarchy at `/sys/fs/cgroup/<name>` with these controllers/`name=`.
    V1 { name: String, options: String },
    /// cgroup2 at `/sys/fs/cgroup/<name>` (hybrid) or at /sys/fs/cgroup itself (`""`).
    V2 { name: String },
    /// A symlink `name -> target` in /sys/fs/cgroup (`cpu -> cpu,cpuacct`).
    Link { name: String, target: String },
}

/// The host's layout, read before pivot_root from the mount table we inherited.
pub(crate) fn host_layout() -> Vec<Entry> {
    let mut out = Vec::new();
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in table.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut r = right.split(' ');
        let (Some(fstype), Some(_), Some(superopts)) = (r.next(), r.next(), r.next()) else {
            continue;
        };
        let name = match point.strip_prefix(CGROUP_ROOT) {
            Some("") => String::new(),
            Some(rest) if rest.starts_with('/') && !rest[1..].contains('/') => {
                rest[1..].to_string()
            }
            _ => continue,
        };
        match fstype {
            "cgroup" if !name.is_empty() => {
                let options: Vec<&str> = superopts
                    .split(',')
                    .filter(|o| *o != "rw" && *o != "ro")
                    .collect();
                out.push(Entry::V1 {
                    name,
                    options: options.join(","),
                });
            }
            "cgroup2" => out.push(Entry::V2 { name }),
            _ => {}
        }
    }
    if let Ok(dir) = std::fs::read_dir(CGROUP_ROOT) {
        for e in dir.flatten() {
            if e.file_type().is_ok_and(|t| t.is_symlink()) {
                if let Ok(t) = std::fs::read_link(e.path()) {
                    out.push(Entry::Link {
                        name: e.file_name().to_string_lossy().into_owned(),
                        target: t.to_string_lossy().into_owned(),
                    });
                }
            }
        }
    }
    out
}

fn mnt(
    step: &str,
    src: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Step {
    mount(Some(src), target, Some(fstype), flags, data)
        .map_err(|e| StepFailure::errno(step, target.display(), e))
}

type Step<T = ()> = Result<T, StepFailure>;

/// Mounts `layout` at /sys/fs/cgroup (after pivot_root, in the cgroup namespace the
/// container runs in); read-only unless `writable` (`--privileged`).
pub(crate) fn mount_all(layout: &[Entry], writable: bool) -> Step {
    let root = Path::new(CGROUP_ROOT);
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if !writable {
        flags |= MsFlags::MS_RDONLY;
    }
    if let Some(Entry::V2 { .. }) = layout
        .iter()
        .find(|e| matches!(e, Entry::V2 { name } if name.is_empty()))
    {
        return mnt("mount cgroup2", "cgroup2", root, "cgroup2", flags, None);
    }
    if layout.is_empty() {
        return Ok(());
    }
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt(
        "mount /sys/fs/cgroup",
        "tmpfs",
        root,
        "tmpfs",
        base,
        Some("mode=755"),
    )?;
    for e in layout {
        match e {
            Entry::V1 { name, options } => {
                let p = root.join(name);
                std::fs::create_dir_all(&p)
                    .map_err(|e| StepFailure::detail("mkdir", p.display(), e.to_string()))?;
                mnt("mount cgroup", "cgroup", &p, "cgroup", flags, Some(options))?;
            }
            Entry::V2 { name } => {
                let p = root.join(name);
                std::fs::create_dir_all(&p)
                    .map_err(|e| StepFailure::detail("mkdir", p.display(), e.to_string()))?;
                mnt("mount cgroup2", "cgroup2", &p, "cgroup2", flags, None)?;
            }
            Entry::Link { name, target } => {
                let p = root.join(name);
                std::os::unix::fs::symlink(target, &p)
                    .map_err(|e| StepFailure::detail("symlink", p.display(), e.to_string()))?;
            }
        }
    }
    mount(
        None::<&str>,
        root,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | base,
        None::<&str>,
    )
    .map_err(|e| StepFailure::errno("remount read-only", CGROUP_ROOT, e))
}
