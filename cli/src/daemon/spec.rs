//! Docker's create body (Engine API `Config` + `HostConfig`) to skiff's [`ContainerSpec`],
//! and back to Docker's shapes for `inspect`.

use std::collections::HashMap;

use bollard::container::Config;
use bollard::models::{HostConfig, PortBinding, RestartPolicyNameEnum};

use super::error::DaemonError;
use super::record::{
    ContainerSpec, DeviceSpec, HostSpec, MountSpec, PortBindingSpec, RestartPolicy, UlimitSpec,
};
use super::resolve::Resolved;

/// The spec of a new container: the request merged with the image (`resolved`); `hostname`
/// is the one the container will see.
pub fn from_request(
    body: &Config<String>,
    resolved: &Resolved,
    hostname: &str,
    image_cmd: Option<Vec<String>>,
) -> Result<ContainerSpec, DaemonError> {
    let host = body.host_config.clone().unwrap_or_default();
    Ok(ContainerSpec {
        cmd: body.cmd.clone().or(if body.entrypoint.is_none() {
            image_cmd
        } else {
            None
        }),
        entrypoint: body.entrypoint.clone(),
        env: resolved.env.clone(),
        working_dir: resolved.cwd.clone(),
        user: resolved.user.clone(),
        hostname: hostname.to_string(),
        domainname: body.domainname.clone().unwrap_or_default(),
        tty: body.tty.unwrap_or(false),
        open_stdin: body.open_stdin.unwrap_or(false),
        stdin_once: body.stdin_once.unwrap_or(false),
        attach_stdin: body.attach_stdin.unwrap_or(false),
        attach_stdout: body.attach_stdout.unwrap_or(false),
        attach_stderr: body.attach_stderr.unwrap_or(false),
        labels: body
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        stop_signal: resolved.stop_signal.clone(),
        stop_timeout: body.stop_timeout,
        exposed_ports: body
            .exposed_ports
            .iter()
            .flat_map(|m| m.keys().cloned())
            .collect(),
        volumes: body
            .volumes
            .iter()
            .flat_map(|m| m.keys().cloned())
            .collect(),
        // Merged with the image's by the caller.
        healthcheck: None,
        host: host_spec(&host)?,
    })
}

/// The smallest memory limit dockerd allows (`linuxMinMemory`).
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// dockerd's checks of `Memory` and `MemorySwap` (0: not given) on create and `update`.
pub fn check_memory(memory: i64, swap: i64, update: bool) -> Result<(), DaemonError> {
    if memory != 0 && memory < MIN_MEMORY {
        return Err(DaemonError::invalid("Minimum memory limit allowed is 6MB"));
    }
    if memory == 0 && swap > 0 && !update {
        return Err(DaemonError::invalid(
            "You should always set the Memory limit when using Memoryswap limit, see usage",
        ));
    }
    if memory > 0 && swap > 0 && swap < memory {
        return Err(DaemonError::invalid(
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ));
    }
    Ok(())
}

/// dockerd's checks of `MemoryReservation` (0: not given) against its minimum and the
/// memory limit (0: none), on create and `update`.
pub fn check_reservation(memory: i64, reservation: i64) -> Result<(), DaemonError> {
    if reservation != 0 && reservation < MIN_MEMORY {
        return Err(DaemonError::invalid(
            "Minimum memory reservation allowed is 6MB",
        ));
    }
    if memory > 0 && reservation > 0 && memory < reservation {
        return Err(DaemonError::invalid(
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        ));
    }
    Ok(())
}

fn host_spec(host: &HostConfig) -> Result<HostSpec, DaemonError> {
    let mut port_bindings = Vec::new();
    for (port, list) in host.port_bindings.clone().unwrap_or_default() {
        for b in list.unwrap_or_default() {
            port_bindings.push(PortBindingSpec {
                port: port.clone(),
                host_ip: b.host_ip.unwrap_or_default(),
                host_port: b.host_port.unwrap_or_default(),
            });
        }
    }
    port_bindings.sort_by(|a, b| (&a.port, &a.host_port).cmp(&(&b.port, &b.host_port)));
    let restart_policy = match &host.restart_policy {
        Some(p) => {
            let name = p.name.map(|n| n.to_string()).unwrap_or_default();
            RestartPolicy::parse(&name, p.maximum_retry_count.unwrap_or(0))
                .map_err(DaemonError::Invalid)?
        }
        None => RestartPolicy::No,
    };
    let positive = |v: Option<i64>| v.filter(|n| *n > 0);
    let memory = positive(host.memory);
    let swap = host.memory_swap.unwrap_or(0);
    // The value as sent: dockerd refuses a negative limit as below its minimum.
    check_memory(host.memory.unwrap_or(0), swap, false)?;
    check_reservation(
        host.memory.unwrap_or(0),
        host.memory_reservation.unwrap_or(0),
    )?;
    Ok(HostSpec {
        memory,
        // As dockerd: a memory limit alone allows as much swap again.
        memory_swap: match (memory, swap) {
            (Some(m), 0) => Some(m.saturating_mul(2)),
            (_, 0) => None,
            (_, s) => Some(s),
        },
        nano_cpus: positive(host.nano_cpus),
        pids_limit: positive(host.pids_limit),
        cpu_shares: positive(host.cpu_shares),
        memory_reservation: positive(host.memory_reservation),
        auto_remove: host.auto_remove.unwrap_or(false),
        network_mode: host
            .network_mode
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "default".to_string()),
        port_bindings,
        publish_all_ports: host.publish_all_ports.unwrap_or(false),
        restart_policy,
        console_size: host
            .console_size
            .as_ref()
            .filter(|s| s.len() == 2 && s[0] > 0 && s[1] > 0)
            .map(|s| (s[0] as u16, s[1] as u16)),
        binds: host.binds.clone().unwrap_or_default(),
        mounts: mounts(host)?,
        tmpfs: host.tmpfs.clone().unwrap_or_default().into_iter().collect(),
        readonly_rootfs: host.readonly_rootfs.unwrap_or(false),
        init: host.init.unwrap_or(false),
        extra_hosts: host.extra_hosts.clone().unwrap_or_default(),
        dns: host.dns.clone().unwrap_or_default(),
        dns_search: host.dns_search.clone().unwrap_or_default(),
        dns_options: host.dns_options.clone().unwrap_or_default(),
        volumes_from: host.volumes_from.clone().unwrap_or_default(),
        log_driver: host
            .log_config
            .as_ref()
            .and_then(|l| l.typ.clone())
            .unwrap_or_default(),
        log_opts: host
            .log_config
            .as_ref()
            .and_then(|l| l.config.clone())
            .unwrap_or_default()
            .into_iter()
            .collect(),
        privileged: host.privileged.unwrap_or(false),
        cap_add: host.cap_add.clone().unwrap_or_default(),
        cap_drop: host.cap_drop.clone().unwrap_or_default(),
        security_opt: host.security_opt.clone().unwrap_or_default(),
        devices: host
            .devices
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|d| DeviceSpec {
                path_on_host: d.path_on_host.unwrap_or_default(),
                path_in_container: d.path_in_container.unwrap_or_default(),
                permissions: d.cgroup_permissions.unwrap_or_default(),
            })
            .collect(),
        ulimits: host
            .ulimits
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|u| UlimitSpec {
                name: u.name.unwrap_or_default(),
                soft: u.soft.unwrap_or(0),
                hard: u.hard.unwrap_or(0),
            })
            .collect(),
        shm_size: positive(host.shm_size),
        sysctls: host
            .sysctls
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        cgroupns: host
            .cgroupns_mode
            .map(|m| m.to_string())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "private".to_string()),
    })
}

/// `HostConfig.Mounts` (`--mount`), with the options skiff applies; others refused by name.
fn mounts(host: &HostConfig) -> Result<Vec<MountSpec>, DaemonError> {
    use bollard::models::MountTypeEnum as T;
    let mut out = Vec::new();
    for (i, m) in host
        .mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let unsupported = |what: &str, v: String| DaemonError::Unsupported {
            field: format!("HostConfig.Mounts[{i}].{what}"),
            value: v,
        };
        let kind = match m.typ {
            Some(T::BIND) => "bind",
            Some(T::VOLUME) => "volume",
            Some(T::TMPFS) => "tmpfs",
            other => {
                return Err(unsupported(
                    "Type",
                    other.map(|t| t.to_string()).unwrap_or_default(),
                ))
            }
        };
        if let Some(c) = m.consistency.filter(|c| !c.is_empty() && c != "default") {
            return Err(unsupported("Consistency", c));
        }
        let mut spec = MountSpec {
            kind: kind.to_string(),
            source: m.source.clone().unwrap_or_default(),
            target: m.target.clone().unwrap_or_default(),
            read_only: m.read_only.unwrap_or(false),
            ..Default::default()
        };
        if let Some(b) = &m.bind_options {
            if let Some(p) = b
                .propagation
                .filter(|p| !matches!(p.to_string().as_str(), "" | "rprivate"))
            {
                return Err(unsupported("BindOptions.Propagation", p.to_string()));
            }
            if b.non_recursive == Some(true) || b.create_mountpoint == Some(true) {
                return Err(unsupported("BindOptions", json_text(b)));
            }
        }
        if let Some(v) = &m.volume_options {
            spec.no_copy = v.no_copy.unwrap_or(false);
            spec.labels = v.labels.clone().unwrap_or_default().into_iter().collect();
            if let Some(d) = &v.driver_config {
                if d.name
                    .as_deref()
                    .is_some_and(|n| !n.is_empty() && n != "local")
                    || d.options.as_ref().is_some_and(|o| !o.is_empty())
                {
                    return Err(unsupported("VolumeOptions.DriverConfig", json_text(d)));
                }
            }
        }
        if let Some(t) = &m.tmpfs_options {
            spec.tmpfs_size = t.size_bytes.filter(|s| *s > 0);
            spec.tmpfs_mode = t.mode.filter(|m| *m > 0).map(|m| m as u32);
        }
        out.push(spec);
    }
    Ok(out)
}

/// Docker's `Config` view of a spec (`inspect`'s `Config`).
pub fn docker_config(spec: &ContainerSpec, image: &str) -> bollard::models::ContainerConfig {
    let set = |keys: &[String]| -> Option<HashMap<String, HashMap<(), ()>>> {
        (!keys.is_empty()).then(|| keys.iter().map(|k| (k.clone(), HashMap::new())).collect())
    };
    bollard::models::ContainerConfig {
        hostname: Some(spec.hostname.clone()),
        domainname: Some(spec.domainname.clone()),
        user: Some(spec.user.clone()),
        attach_stdin: Some(spec.attach_stdin),
        attach_stdout: Some(spec.attach_stdout),
        attach_stderr: Some(spec.attach_stderr),
        exposed_ports: set(&spec.exposed_ports),
        tty: Some(spec.tty),
        open_stdin: Some(spec.open_stdin),
        stdin_once: Some(spec.stdin_once),
        env: Some(spec.env.clone()),
        cmd: spec.cmd.clone(),
        image: Some(image.to_string()),
        volumes: set(&spec.volumes),
        working_dir: Some(spec.working_dir.clone()),
        entrypoint: spec.entrypoint.clone(),
        labels: Some(spec.labels.clone().into_iter().collect()),
        stop_signal: spec.stop_signal.clone(),
        stop_timeout: spec.stop_timeout,
        healthcheck: spec.healthcheck.clone(),
        ..Default::default()
    }
}

/// Docker's `HostConfig` view of a spec (`inspect`'s `HostConfig`).
pub fn docker_host_config(h: &HostSpec) -> HostConfig {
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for b in &h.port_bindings {
        bindings
            .entry(b.port.clone())
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(b.host_ip.clone()),
                host_port: Some(b.host_port.clone()),
            });
    }
    let restart_name = match h.restart_policy {
        RestartPolicy::No => RestartPolicyNameEnum::NO,
        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
        RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
        RestartPolicy::OnFailure { .. } => RestartPolicyNameEnum::ON_FAILURE,
    };
    let list = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    HostConfig {
        memory: Some(h.memory.unwrap_or(0)),
        nano_cpus: Some(h.nano_cpus.unwrap_or(0)),
        cpu_shares: Some(h.cpu_shares.unwrap_or(0)),
        memory_reservation: Some(h.memory_reservation.unwrap_or(0)),
        pids_limit: h.pids_limit,
        auto_remove: Some(h.auto_remove),
        // Docker 25+ answers `bridge` for the default network.
        network_mode: Some(super::container_filter::network_name(&h.network_mode).to_string()),
        port_bindings: Some(bindings),
        publish_all_ports: Some(h.publish_all_ports),
        restart_policy: Some(bollard::models::RestartPolicy {
            name: Some(restart_name),
            maximum_retry_count: Some(h.restart_policy.max_retries()),
        }),
        binds: list(&h.binds),
        tmpfs: (!h.tmpfs.is_empty()).then(|| h.tmpfs.clone().into_iter().collect()),
        readonly_rootfs: Some(h.readonly_rootfs),
        init: h.init.then_some(true),
        extra_hosts: list(&h.extra_hosts),
        dns: Some(h.dns.clone()),
        dns_search: Some(h.dns_search.clone()),
        dns_options: Some(h.dns_options.clone()),
        volumes_from: list(&h.volumes_from),
        log_config: Some(bollard::models::HostConfigLogConfig {
            typ: Some(if h.log_driver.is_empty() {
                "json-file".to_string()
            } else {
                h.log_driver.clone()
            }),
            config: Some(h.log_opts.clone().into_iter().collect()),
        }),
        privileged: Some(h.privileged),
        cap_add: list(&h.cap_add),
        cap_drop: list(&h.cap_drop),
        security_opt: list(&h.security_opt),
        devices: Some(
            h.devices
                .iter()
                .map(|d| bollard::models::DeviceMapping {
                    path_on_host: Some(d.path_on_host.clone()),
                    path_in_container: Some(d.path_in_container.clone()),
                    cgroup_permissions: Some(d.permissions.clone()),
                })
                .collect(),
        ),
        ulimits: Some(
            h.ulimits
                .iter()
                .map(|u| bollard::models::ResourcesUlimits {
                    name: Some(u.name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect(),
        ),
        shm_size: Some(h.shm_size.unwrap_or(64 << 20)),
        sysctls: (!h.sysctls.is_empty()).then(|| h.sysctls.clone().into_iter().collect()),
        cgroupns_mode: Some(if h.cgroupns == "host" {
            bollard::models::HostConfigCgroupnsModeEnum::HOST
        } else {
            bollard::models::HostConfigCgroupnsModeEnum::PRIVATE
        }),
        console_size: Some(
            h.console_size
                .map(|(r, c)| vec![r as i32, c as i32])
                .unwrap_or_else(|| vec![0, 0]),
        ),
        // What dockerd answers for what the client left unset.
        container_id_file: Some(String::new()),
        volume_driver: Some(String::new()),
        ipc_mode: Some("private".to_string()),
        pid_mode: Some(String::new()),
        uts_mode: Some(String::new()),
        userns_mode: Some(String::new()),
        cgroup: Some(String::new()),
        cgroup_parent: Some(String::new()),
        runtime: Some("runc".to_string()),
        isolation: Some(bollard::models::HostConfigIsolationEnum::EMPTY),
        oom_score_adj: Some(0),
        cpu_period: Some(0),
        cpu_quota: Some(0),
        cpu_realtime_period: Some(0),
        cpu_realtime_runtime: Some(0),
        cpuset_cpus: Some(String::new()),
        cpuset_mems: Some(String::new()),
        blkio_weight: Some(0),
        memory_swap: Some(h.memory_swap.unwrap_or(0)),
        cpu_count: Some(0),
        cpu_percent: Some(0),
        io_maximum_iops: Some(0),
        io_maximum_bandwidth: Some(0),
        blkio_weight_device: Some(Vec::new()),
        blkio_device_read_bps: Some(Vec::new()),
        blkio_device_write_bps: Some(Vec::new()),
        blkio_device_read_iops: Some(Vec::new()),
        blkio_device_write_iops: Some(Vec::new()),
        oom_kill_disable: Some(false),
        // What the runtime masks and makes read-only (none of it when privileged).
        masked_paths: (!h.privileged).then(|| {
            skiff_runtime::MASKED_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect()
        }),
        readonly_paths: (!h.privileged).then(|| {
            skiff_runtime::READONLY_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect()
        }),
        // Left `None` (null in inspect, views.rs): Links, GroupAdd, DeviceCgroupRules,
        // DeviceRequests, MemorySwappiness.
        links: None,
        ..Default::default()
    }
}

/// A refused value as the client sent it (JSON), not as Rust prints it.
fn json_text(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
