//! What `/info` reports about the host beyond the daemon's own counts: memory, the kernel
//! features Docker's CLI checks (it warns for each one reported `false`), and dockerd's
//! constant fields (no swarm, the plugins skiff has, runc-named runtime).

use std::path::Path;

use bollard::models::{LocalNodeState, PluginsInfo, SwarmInfo, SystemInfo};

/// Fills the host fields of `info` that are still unset.
pub fn fill(info: &mut SystemInfo, logging_driver: &str) {
    let cg = Path::new("/sys/fs/cgroup");
    // cgroup v2 lists its controllers in one file; v1 mounts one hierarchy per controller.
    let v2 = std::fs::read_to_string(cg.join("cgroup.controllers")).ok();
    let has = |c: &str, v1_file: &str| match &v2 {
        Some(list) => list.split_whitespace().any(|x| x == c),
        None => cg.join(c).join(v1_file).exists(),
    };
    let proc_on = |p: &str| {
        std::fs::read_to_string(p)
            .map(|v| v.trim() == "1")
            .unwrap_or(false)
    };
    let swap = match &v2 {
        // Swap accounting shows as memory.swap.max in the cgroups below the root.
        Some(_) => {
            has("memory", "")
                && std::fs::read_dir(cg).is_ok_and(|rd| {
                    rd.flatten()
                        .any(|e| e.path().join("memory.swap.max").exists())
                })
        }
        None => has("memory", "memory.memsw.limit_in_bytes"),
    };
    let oom_kill_disable = v2.is_none() && has("memory", "memory.oom_control");
    let kernel_tcp = v2.is_none() && has("memory", "memory.kmem.tcp.limit_in_bytes");
    info.mem_total.get_or_insert(mem_total());
    info.memory_limit
        .get_or_insert(has("memory", "memory.limit_in_bytes"));
    info.swap_limit.get_or_insert(swap);
    info.kernel_memory_tcp.get_or_insert(kernel_tcp);
    info.cpu_cfs_period
        .get_or_insert(has("cpu", "cpu.cfs_period_us"));
    info.cpu_cfs_quota
        .get_or_insert(has("cpu", "cpu.cfs_quota_us"));
    info.cpu_shares.get_or_insert(has("cpu", "cpu.shares"));
    info.cpu_set.get_or_insert(has("cpuset", "cpuset.cpus"));
    info.pids_limit.get_or_insert(has("pids", "cgroup.procs"));
    info.oom_kill_disable.get_or_insert(oom_kill_disable);
    info.ipv4_forwarding
        .get_or_insert(proc_on("/proc/sys/net/ipv4/ip_forward"));
    info.bridge_nf_iptables
        .get_or_insert(proc_on("/proc/sys/net/bridge/bridge-nf-call-iptables"));
    info.bridge_nf_ip6tables
        .get_or_insert(proc_on("/proc/sys/net/bridge/bridge-nf-call-ip6tables"));
    info.debug.get_or_insert(false);
    info.nfd.get_or_insert(
        std::fs::read_dir("/proc/self/fd")
            .map(|rd| rd.count() as i64)
            .unwrap_or(0),
    );
    info.n_goroutines.get_or_insert(0);
    info.n_events_listener.get_or_insert(0);
    info.system_time
        .get_or_insert(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    info.logging_driver
        .get_or_insert(logging_driver.to_string());
    info.cgroup_driver
        .get_or_insert(bollard::models::SystemInfoCgroupDriverEnum::CGROUPFS);
    info.os_version.get_or_insert_with(os_version);
    info.index_server_address
        .get_or_insert("https://index.docker.io/v1/".to_string());
    info.http_proxy.get_or_insert(String::new());
    info.https_proxy.get_or_insert(String::new());
    info.no_proxy.get_or_insert(String::new());
    info.labels.get_or_insert(Vec::new());
    info.experimental_build.get_or_insert(false);
    info.default_runtime.get_or_insert("runc".to_string());
    info.runtimes.get_or_insert_with(|| {
        std::collections::HashMap::from([(
            "runc".to_string(),
            bollard::models::Runtime {
                path: Some("skiff-shim".to_string()),
                ..Default::default()
            },
        )])
    });
    info.swarm.get_or_insert(SwarmInfo {
        node_id: Some(String::new()),
        node_addr: Some(String::new()),
        local_node_state: Some(LocalNodeState::INACTIVE),
        control_available: Some(false),
        error: Some(String::new()),
        remote_managers: None,
        ..Default::default()
    });
    info.plugins.get_or_insert(PluginsInfo {
        volume: Some(vec!["local".to_string()]),
        network: Some(vec!["bridge".into(), "host".into(), "null".into()]),
        authorization: None,
        log: Some(vec!["json-file".to_string(), "local".to_string()]),
    });
    info.live_restore_enabled.get_or_insert(false);
    info.isolation
        .get_or_insert(bollard::models::SystemInfoIsolationEnum::EMPTY);
    info.init_binary.get_or_insert("tini".to_string());
    let commit = || bollard::models::Commit {
        id: Some(String::new()),
        expected: Some(String::new()),
    };
    info.containerd_commit.get_or_insert_with(commit);
    info.runc_commit.get_or_insert_with(commit);
    info.init_commit.get_or_insert_with(commit);
    info.security_options.get_or_insert_with(|| {
        vec![
            "name=seccomp,profile=builtin".to_string(),
            "name=cgroupns".to_string(),
        ]
    });
    info.warnings.get_or_insert(Vec::new());
}

/// Bytes of RAM (`MemTotal` of /proc/meminfo).
fn mem_total() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// `VERSION_ID` of /etc/os-release.
fn os_version() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VERSION_ID="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default()
}

/// The engine's ID (`/info` `ID`): a random UUID made once per data root and kept in
/// `<data-root>/engine-id`, as dockerd does. Unreadable and unwritable roots get a fresh
/// one per call (logged), never an error for `/info`.
pub fn engine_id(data_root: &Path) -> String {
    let path = data_root.join("engine-id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim();
        if s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return s.to_string();
        }
    }
    let mut b: [u8; 16] = rand::random();
    // A version 4 (random), variant 1 UUID (RFC 9562).
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = hex::encode(b);
    let id = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    let tmp = data_root.join(".engine-id.tmp");
    let written =
        std::fs::write(&tmp, format!("{id}\n")).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), "recording the engine id: {e}");
    }
    id
}

/// The host's operating system as `/etc/os-release` names it (`PRETTY_NAME`), as dockerd
/// reports it; `linux` when there is none.
pub fn operating_system() -> String {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| pretty_name(&text))
        .unwrap_or_else(|| "linux".to_string())
}

fn pretty_name(os_release: &str) -> Option<String> {
    let v = os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))?
        .trim();
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v);
    (!v.is_empty()).then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_id_is_a_uuid_kept_per_data_root() {
        let root = tempfile::tempdir().unwrap();
        let a = engine_id(root.path());
        assert_eq!(a.len(), 36);
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{a}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{a}");
        assert_eq!(engine_id(root.path()), a);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(engine_id(other.path()), a);
    }

    #[test]
    fn pretty_name_from_os_release() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            pretty_name(text).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(pretty_name("PRETTY_NAME=Plain\n").as_deref(), Some("Plain"));
        assert_eq!(pretty_name("ID=x\n"), None);
    }
}
