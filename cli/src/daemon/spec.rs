//! Docker's create body (Engine API `Config` + `HostConfig`) to skiff's [`ContainerSpec`],
//! and back to Docker's shapes for `inspect`.

use std::collections::HashMap;

use bollard::container::Config;
use bollard::models::{HostConfig, PortBinding, RestartPolicyNameEnum};

use super::error::DaemonError;
use super::record::{ContainerSpec, HostSpec, PortBindingSpec, RestartPolicy};
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
        host: host_spec(&host)?,
    })
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
    Ok(HostSpec {
        memory: positive(host.memory),
        nano_cpus: positive(host.nano_cpus),
        pids_limit: positive(host.pids_limit),
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
        ..Default::default()
    })
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
        pids_limit: h.pids_limit,
        auto_remove: Some(h.auto_remove),
        network_mode: Some(h.network_mode.clone()),
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
        console_size: h.console_size.map(|(r, c)| vec![r as i32, c as i32]),
        ..Default::default()
    }
}
