//! Operations on a running container's cgroup from outside it: its processes (`top`),
//! freezing (`pause`/`unpause`, the freezer of cgroup v1 or `cgroup.freeze` of v2), live
//! resource updates (`update`), and usage counters (`stats`).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cgroup::ContainerCgroup;
use crate::config::{ContainerConfig, Resources};
use crate::error::{Result, RuntimeError};
use crate::paths::ContainerPaths;
use crate::persist;

fn config(dir: &Path) -> Result<ContainerConfig> {
    persist::read_json(&ContainerPaths::new(dir).config())
}

fn cgroup(dir: &Path) -> Result<ContainerCgroup> {
    Ok(ContainerCgroup::load(&config(dir)?.cgroup_path()))
}

fn v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Host pids of every process in the container's cgroup, sorted.
pub fn pids(dir: &Path) -> Result<Vec<i32>> {
    Ok(cgroup(dir)?.procs())
}

/// Freezes (`true`) or thaws every process of the container; returns once the kernel
/// reports the cgroup frozen (or thawed), at most 5 s later.
pub fn set_frozen(dir: &Path, frozen: bool) -> Result<()> {
    let cg = cgroup(dir)?;
    let (file, value, done) = if v2() {
        let f = cg.file("memory", "cgroup.freeze");
        (
            f,
            if frozen { "1" } else { "0" },
            if frozen { "1" } else { "0" },
        )
    } else {
        let f = cg.file("freezer", "freezer.state");
        let v = if frozen { "FROZEN" } else { "THAWED" };
        (f, v, v)
    };
    std::fs::write(&file, value).map_err(|e| RuntimeError::io("freezer", &file, e))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if state_of(&cg) == Some(done.to_string()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(RuntimeError::io(
                "waiting for the freezer",
                &file,
                std::io::Error::from(std::io::ErrorKind::TimedOut),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `FROZEN`/`THAWED`/`FREEZING` (v1) or `1`/`0` (v2, from `cgroup.events`).
fn state_of(cg: &ContainerCgroup) -> Option<String> {
    if v2() {
        let events = std::fs::read_to_string(cg.file("memory", "cgroup.events")).ok()?;
        events
            .lines()
            .find_map(|l| l.strip_prefix("frozen ").map(|v| v.trim().to_string()))
    } else {
        std::fs::read_to_string(cg.file("freezer", "freezer.state"))
            .ok()
            .map(|s| s.trim().to_string())
    }
}

/// Whether the container's processes are frozen.
pub fn is_frozen(dir: &Path) -> bool {
    cgroup(dir)
        .ok()
        .and_then(|cg| state_of(&cg))
        .is_some_and(|s| s == "FROZEN" || s == "1")
}

/// Records new limits in the container's runtime config, so its next start applies them,
/// and with `live` (it runs) applies them to its cgroup now. `None` fields keep their value.
pub fn update_resources(dir: &Path, res: &Resources, live: bool) -> Result<()> {
    let mut cfg = config(dir)?;
    if live {
        // A new memory or memory+swap limit is applied with the other one as it stands.
        let memory = res.memory_bytes.is_some() || res.memory_swap_bytes.is_some();
        let applied = Resources {
            memory_bytes: res
                .memory_bytes
                .or(cfg.resources.memory_bytes)
                .filter(|_| memory),
            memory_swap_bytes: res.memory_swap_bytes.or(cfg.resources.memory_swap_bytes),
            ..res.clone()
        };
        let cg = ContainerCgroup::load(&cfg.cgroup_path());
        cg.apply(&applied, v2(), None)?;
    }
    let r = &mut cfg.resources;
    r.memory_bytes = res.memory_bytes.or(r.memory_bytes);
    r.memory_swap_bytes = res.memory_swap_bytes.or(r.memory_swap_bytes);
    r.nano_cpus = res.nano_cpus.or(r.nano_cpus);
    r.pids_limit = res.pids_limit.or(r.pids_limit);
    r.cpu_shares = res.cpu_shares.or(r.cpu_shares);
    r.memory_reservation_bytes = res.memory_reservation_bytes.or(r.memory_reservation_bytes);
    persist::write_json(
        &ContainerPaths::new(dir).config(),
        &cfg,
        persist::Durability::Volatile,
    )
}

/// Usage counters of the container's cgroup, in Docker's units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    /// Bytes in use and the limit (the host's memory when unlimited).
    pub memory_usage: u64,
    pub memory_limit: u64,
    /// `memory.stat` key → value.
    pub memory_stat: Vec<(String, u64)>,
    /// CPU time in nanoseconds: total, in user mode, in kernel mode.
    pub cpu_total_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub pids_current: u64,
    /// 0: no limit.
    pub pids_limit: u64,
    /// Bytes moved to and from block devices, per device and operation (Docker's
    /// `blkio_stats.io_service_bytes_recursive`).
    pub io_service_bytes: Vec<BlkioEntry>,
    /// I/O operations, per device and operation (`io_serviced_recursive`).
    pub io_serviced: Vec<BlkioEntry>,
}

/// One line of a blkio counter: device `major:minor`, the operation (`Read`, `Write`,
/// `Sync`, `Async`, `Discard`, `Total` on v1; `read`, `write` on v2, as Docker names them)
/// and the count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

/// Parses a v1 blkio counter file (`8:0 Read 4096` lines, then `Total N`, which is skipped).
fn blkio_v1(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, op, value) = (f.next()?, f.next()?, f.next()?);
            let (major, minor) = dev.split_once(':')?;
            Some(BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// Parses v2 `io.stat` (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 ...`) into (bytes, ios).
fn io_stat_v2(text: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let (mut bytes, mut ios) = (Vec::new(), Vec::new());
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let Some((major, minor)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = v.parse() else { continue };
            let (list, op) = match k {
                "rbytes" => (&mut bytes, "read"),
                "wbytes" => (&mut bytes, "write"),
                "rios" => (&mut ios, "read"),
                "wios" => (&mut ios, "write"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value,
            });
        }
    }
    (bytes, ios)
}

/// The v1 blkio counters as runc reads them: the first scheduler whose files have data
/// (BFQ, CFQ), else the throttle layer's, which counts I/O under any scheduler.
fn blkio_v1_stats(cg: &ContainerCgroup) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    const SOURCES: &[(&str, &str)] = &[
        (
            "blkio.bfq.io_service_bytes_recursive",
            "blkio.bfq.io_serviced_recursive",
        ),
        (
            "blkio.io_service_bytes_recursive",
            "blkio.io_serviced_recursive",
        ),
        (
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_serviced_recursive",
        ),
        (
            "blkio.throttle.io_service_bytes",
            "blkio.throttle.io_serviced",
        ),
    ];
    let read = |name: &str| {
        std::fs::read_to_string(cg.file("blkio", name))
            .map(|t| blkio_v1(&t))
            .unwrap_or_default()
    };
    for (bytes, ios) in SOURCES {
        let b = read(bytes);
        if !b.is_empty() {
            return (b, read(ios));
        }
    }
    (Vec::new(), Vec::new())
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn pairs(p: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Reads the container's counters (v1 or v2).
pub fn cgroup_stats(dir: &Path, host_memory: u64) -> Result<CgroupStats> {
    let cg = cgroup(dir)?;
    let mut s = CgroupStats::default();
    let unlimited = |v: Option<u64>| v.filter(|v| *v < host_memory).unwrap_or(host_memory);
    if v2() {
        s.memory_usage = read_u64(&cg.file("memory", "memory.current")).unwrap_or(0);
        s.memory_limit = unlimited(read_u64(&cg.file("memory", "memory.max")));
        s.memory_stat = pairs(&cg.file("memory", "memory.stat"));
        let cpu = pairs(&cg.file("cpu", "cpu.stat"));
        let get = |k: &str| {
            cpu.iter()
                .find(|(n, _)| n == k)
                .map_or(0, |(_, v)| *v * 1000)
        };
        s.cpu_total_ns = get("usage_usec");
        s.cpu_user_ns = get("user_usec");
        s.cpu_system_ns = get("system_usec");
        // Only where the `io` controller is enabled for the container's parent.
        (s.io_service_bytes, s.io_serviced) =
            io_stat_v2(&std::fs::read_to_string(cg.file("io", "io.stat")).unwrap_or_default());
    } else {
        s.memory_usage = read_u64(&cg.file("memory", "memory.usage_in_bytes")).unwrap_or(0);
        s.memory_limit = unlimited(read_u64(&cg.file("memory", "memory.limit_in_bytes")));
        s.memory_stat = pairs(&cg.file("memory", "memory.stat"));
        s.cpu_total_ns = read_u64(&cg.file("cpuacct", "cpuacct.usage")).unwrap_or(0);
        // cpuacct.stat counts USER_HZ ticks (100 per second).
        let ticks = pairs(&cg.file("cpuacct", "cpuacct.stat"));
        let get = |k: &str| {
            ticks
                .iter()
                .find(|(n, _)| n == k)
                .map_or(0, |(_, v)| *v * 10_000_000)
        };
        s.cpu_user_ns = get("user");
        s.cpu_system_ns = get("system");
        (s.io_service_bytes, s.io_serviced) = blkio_v1_stats(&cg);
    }
    s.pids_current = read_u64(&cg.file("pids", "pids.current")).unwrap_or(0);
    s.pids_limit = read_u64(&cg.file("pids", "pids.max")).unwrap_or(0);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkio_v1_lines_parse_and_total_is_skipped() {
        let t = "8:0 Read 4096\n8:0 Write 1048576\n8:0 Sync 1048576\n8:0 Async 4096\n\
                 8:0 Discard 0\n8:0 Total 1052672\nTotal 1052672\n";
        let e = blkio_v1(t);
        assert_eq!(e.len(), 6);
        assert_eq!(
            e[1],
            BlkioEntry {
                major: 8,
                minor: 0,
                op: "Write".into(),
                value: 1048576
            }
        );
        assert!(blkio_v1("Total 0\n").is_empty());
    }

    #[test]
    fn io_stat_v2_splits_bytes_and_ios() {
        let (b, i) = io_stat_v2("254:0 rbytes=512 wbytes=4096 rios=1 wios=2 dbytes=0 dios=0\n");
        let ops = |v: &[BlkioEntry]| {
            v.iter()
                .map(|e| (e.major, e.minor, e.op.clone(), e.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ops(&b),
            [(254, 0, "read".into(), 512), (254, 0, "write".into(), 4096)]
        );
        assert_eq!(
            ops(&i),
            [(254, 0, "read".into(), 1), (254, 0, "write".into(), 2)]
        );
    }
}
