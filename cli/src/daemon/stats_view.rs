//! Docker's `stats` JSON (Engine API `ContainerStatsResponse`): cgroup counters, the host's
//! CPU time for the percentage, and the container's interfaces from its network namespace.

use serde_json::{json, Value};
use skiff_runtime::control::{BlkioEntry, CgroupStats};

/// A sample with nothing measured (a stopped container), `previous` as `precpu_stats`.
pub fn empty(id: &str, name: &str, read: &str, previous: Option<&Value>) -> Value {
    let cpu = json!({
        "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "system_cpu_usage": 0,
        "online_cpus": 0,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    });
    let (preread, precpu) = match previous {
        Some(p) => (p["read"].clone(), p["cpu_stats"].clone()),
        None => (json!("0001-01-01T00:00:00Z"), cpu.clone()),
    };
    json!({
        "id": id,
        "name": format!("/{name}"),
        "read": read,
        "preread": preread,
        "num_procs": 0,
        "pids_stats": {},
        "blkio_stats": {
            "io_service_bytes_recursive": null, "io_serviced_recursive": null,
            "io_queue_recursive": null, "io_service_time_recursive": null,
            "io_wait_time_recursive": null, "io_merged_recursive": null,
            "io_time_recursive": null, "sectors_recursive": null,
        },
        "storage_stats": {},
        "cpu_stats": cpu,
        "precpu_stats": precpu,
        "memory_stats": {},
    })
}

/// Fills `v` from the cgroup counters and the init's (`pid`) network namespace.
pub fn fill(v: &mut Value, cg: &CgroupStats, pid: Option<i32>) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    v["cpu_stats"] = json!({
        "cpu_usage": {
            "total_usage": cg.cpu_total_ns,
            "usage_in_kernelmode": cg.cpu_system_ns,
            "usage_in_usermode": cg.cpu_user_ns,
        },
        "system_cpu_usage": system_cpu_ns(),
        "online_cpus": cpus,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    });
    let stat: serde_json::Map<String, Value> = cg
        .memory_stat
        .iter()
        .map(|(k, n)| (k.clone(), json!(n)))
        .collect();
    v["memory_stats"] = json!({
        "usage": cg.memory_usage,
        "limit": cg.memory_limit,
        "stats": stat,
    });
    // Docker sends null, not [], for a counter with no lines.
    let entries = |list: &[BlkioEntry]| -> Value {
        if list.is_empty() {
            return Value::Null;
        }
        list.iter()
            .map(|e| json!({"major": e.major, "minor": e.minor, "op": e.op, "value": e.value}))
            .collect()
    };
    v["blkio_stats"]["io_service_bytes_recursive"] = entries(&cg.io_service_bytes);
    v["blkio_stats"]["io_serviced_recursive"] = entries(&cg.io_serviced);
    v["pids_stats"] = if cg.pids_limit > 0 {
        json!({"current": cg.pids_current, "limit": cg.pids_limit})
    } else {
        json!({"current": cg.pids_current})
    };
    if let Some(pid) = pid {
        let nets = networks(pid);
        if !nets.is_empty() {
            v["networks"] = Value::Object(nets);
        }
    }
}

/// The host's total CPU time in nanoseconds (`cpu` line of /proc/stat, USER_HZ = 100).
fn system_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("cpu "))?.to_string();
            Some(
                line.split_whitespace()
                    .skip(1)
                    .take(7)
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum::<u64>()
                    * 10_000_000,
            )
        })
        .unwrap_or(0)
}

/// Bytes of RAM, the memory limit of an unlimited container.
pub fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kb| kb * 1024)
}

/// Counters of the container's interfaces (not `lo`), from /proc/<pid>/net/dev, which
/// shows the network namespace of that process.
fn networks(pid: i32) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let Ok(dev) = std::fs::read_to_string(format!("/proc/{pid}/net/dev")) else {
        return out;
    };
    for line in dev.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let n: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if n.len() < 16 {
            continue;
        }
        out.insert(
            name.to_string(),
            json!({
                "rx_bytes": n[0], "rx_packets": n[1], "rx_errors": n[2], "rx_dropped": n[3],
                "tx_bytes": n[8], "tx_packets": n[9], "tx_errors": n[10], "tx_dropped": n[11],
            }),
        );
    }
    out
}
