//! A container's [`ContainerSpec`] to the runtime's [`ContainerConfig`]: process, resources,
//! root filesystem, process options and security. Mounts and the network's files are set
//! by the create path once they exist.

use std::path::Path;

use skiff_runtime::config::{CgroupNs, Device, LogConfig, Seccomp, Ulimit};
use skiff_runtime::ContainerConfig;

use super::error::DaemonError;
use super::record::ContainerSpec;

fn invalid(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Invalid(e.to_string())
}

/// Fills `rc` from `spec`; `init` is the host's init binary for `--init`.
pub fn apply(
    spec: &ContainerSpec,
    rc: &mut ContainerConfig,
    init: &Path,
) -> Result<(), DaemonError> {
    let h = &spec.host;
    rc.env = spec.env.clone();
    rc.cwd = spec.working_dir.clone();
    rc.user = spec.user.clone();
    rc.tty = spec.tty;
    rc.open_stdin = spec.open_stdin;
    rc.console_size = h
        .console_size
        .map(|(rows, cols)| skiff_runtime::WinSize { rows, cols });
    rc.resources = skiff_runtime::Resources {
        memory_bytes: h.memory,
        memory_swap_bytes: h.memory_swap,
        nano_cpus: h.nano_cpus,
        pids_limit: h.pids_limit,
        cpu_shares: h.cpu_shares.and_then(|s| u64::try_from(s).ok()),
        memory_reservation_bytes: h.memory_reservation,
    };
    // Provisional (the sysctl check depends on it); the attachment sets the real one.
    rc.network = if h.network_mode == "host" {
        skiff_runtime::NetworkMode::Host
    } else {
        skiff_runtime::NetworkMode::None
    };
    rc.readonly_rootfs = h.readonly_rootfs;
    // Nobody keeps the writable layer of an auto-removed container: no disk syncs for it.
    rc.ephemeral = h.auto_remove;
    rc.init = if h.init {
        if !init.exists() {
            return Err(DaemonError::Invalid(format!(
                "--init needs {} (Debian package tini), which is not installed",
                init.display()
            )));
        }
        Some(init.to_path_buf())
    } else {
        None
    };
    rc.ulimits = h
        .ulimits
        .iter()
        .map(|u| Ulimit {
            name: u.name.clone(),
            soft: u.soft,
            hard: u.hard,
        })
        .collect();
    rc.shm_size = h.shm_size.map(|s| s as u64);
    rc.sysctls = h.sysctls.clone();
    rc.cgroupns = match h.cgroupns.as_str() {
        "" | "private" => CgroupNs::Private,
        "host" => CgroupNs::Host,
        other => {
            return Err(DaemonError::Invalid(format!(
                "invalid cgroup namespace mode {other:?}: use private or host"
            )))
        }
    };
    rc.log = LogConfig::from_docker(&h.log_driver, &h.log_opts).map_err(invalid)?;
    let sec = &mut rc.security;
    sec.privileged = h.privileged;
    sec.cap_add = h.cap_add.clone();
    sec.cap_drop = h.cap_drop.clone();
    sec.devices = h
        .devices
        .iter()
        .map(|d| Device {
            host_path: d.path_on_host.clone().into(),
            container_path: d.path_in_container.clone(),
            permissions: d.permissions.clone(),
        })
        .collect();
    for opt in &h.security_opt {
        // Docker accepts both `key=value` and the older `key:value`.
        let (key, value) = opt
            .split_once('=')
            .or_else(|| opt.split_once(':'))
            .unwrap_or((opt.as_str(), ""));
        match key {
            "no-new-privileges" => {
                sec.no_new_privileges = match value {
                    "" | "true" => true,
                    "false" => false,
                    v => {
                        return Err(invalid(format!(
                            "invalid --security-opt no-new-privileges={v:?}: use true or false"
                        )))
                    }
                }
            }
            "seccomp" => {
                sec.seccomp = match value {
                    "unconfined" => Seccomp::Unconfined,
                    "" | "builtin" => Seccomp::Default,
                    // The docker CLI sends the profile's content; a path is read here.
                    v if v.trim_start().starts_with('{') => Seccomp::Profile(v.to_string()),
                    path => Seccomp::Profile(std::fs::read_to_string(path).map_err(|e| {
                        invalid(format!("opening seccomp profile ({path}) failed: {e}"))
                    })?),
                }
            }
            _ => {
                return Err(DaemonError::Unsupported {
                    field: "HostConfig.SecurityOpt".into(),
                    value: format!("{opt:?}"),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc() -> ContainerConfig {
        ContainerConfig::new(
            "abc",
            "/tmp/x".into(),
            vec!["/tmp/l".into()],
            vec!["sh".into()],
        )
    }

    #[test]
    fn security_options_map_or_are_refused() {
        let mut s = ContainerSpec::default();
        s.host.security_opt = vec!["no-new-privileges".into(), "seccomp=unconfined".into()];
        let mut c = rc();
        apply(&s, &mut c, Path::new("/nonexistent")).unwrap();
        assert!(c.security.no_new_privileges);
        assert_eq!(c.security.seccomp, Seccomp::Unconfined);
        s.host.security_opt = vec!["apparmor=unconfined".into()];
        let e = apply(&s, &mut rc(), Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HostConfig.SecurityOpt"), "{e}");
        let mut s = ContainerSpec::default();
        s.host.log_driver = "syslog".into();
        assert!(apply(&s, &mut rc(), Path::new("/x")).is_err());
        let mut s = ContainerSpec::default();
        s.host.init = true;
        let e = apply(&s, &mut rc(), Path::new("/nonexistent/tini"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--init"), "{e}");
    }
}
