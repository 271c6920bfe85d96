//! The `run`/`create` flags beyond the basics, into Docker's `HostConfig` fields, parsed as
//! the docker CLI parses them (`--mount`, `--restart`, `--ulimit`, `--device` ...). A
//! malformed value is an error before anything is sent.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use bollard::models::{
    DeviceMapping, HostConfig, HostConfigCgroupnsModeEnum, HostConfigLogConfig, Mount,
    MountBindOptions, MountTmpfsOptions, MountTypeEnum, MountVolumeOptions, ResourcesUlimits,
    RestartPolicy, RestartPolicyNameEnum,
};

use super::format::parse_bytes;
use crate::args::ContainerOpts;

fn kv(s: &str, what: &str) -> Result<(String, String)> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| anyhow!("invalid {what} {s:?}: expected KEY=VALUE"))
}

fn list(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

/// `no`, `always`, `unless-stopped`, `on-failure[:N]`.
pub fn restart_policy(s: &str) -> Result<RestartPolicy> {
    let (name, max) = match s.split_once(':') {
        Some((n, m)) => (
            n,
            Some(m.parse::<i64>().ok().filter(|m| *m >= 0).ok_or_else(|| {
                anyhow!("invalid restart policy {s:?}: maximum retry count must be a number >= 0")
            })?),
        ),
        None => (s, None),
    };
    let name = match name {
        "no" | "" => RestartPolicyNameEnum::NO,
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        other => bail!("invalid restart policy {other:?}: use no, always, unless-stopped or on-failure[:max-retries]"),
    };
    if max.is_some() && name != RestartPolicyNameEnum::ON_FAILURE {
        bail!(
            "invalid restart policy {s:?}: maximum retry count can only be used with 'on-failure'"
        );
    }
    Ok(RestartPolicy {
        name: Some(name),
        maximum_retry_count: max,
    })
}

/// `type=bind|volume|tmpfs,source=..,target=..[,readonly][,volume-nocopy][,volume-label=k=v]
/// [,tmpfs-size=..][,tmpfs-mode=..][,bind-propagation=..]`.
pub fn mount(s: &str) -> Result<Mount> {
    let mut m = Mount::default();
    let mut bind = MountBindOptions::default();
    let mut vol = MountVolumeOptions::default();
    let mut tmp = MountTmpfsOptions::default();
    let bad = |why: &str| anyhow!("invalid argument {s:?} for \"--mount\" flag: {why}");
    let boolean = |v: Option<&str>| -> Result<bool> {
        match v {
            None | Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(o) => Err(bad(&format!("invalid boolean {o:?}"))),
        }
    };
    for field in s.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        let val = || {
            v.map(str::to_string)
                .ok_or_else(|| bad(&format!("{k} needs a value")))
        };
        match k {
            "type" => {
                m.typ = Some(match v {
                    Some("bind") => MountTypeEnum::BIND,
                    Some("volume") => MountTypeEnum::VOLUME,
                    Some("tmpfs") => MountTypeEnum::TMPFS,
                    other => return Err(bad(&format!("unsupported mount type {other:?}"))),
                })
            }
            "source" | "src" => m.source = Some(val()?),
            "target" | "destination" | "dst" => m.target = Some(val()?),
            "readonly" | "ro" => m.read_only = Some(boolean(v)?),
            "volume-nocopy" => vol.no_copy = Some(boolean(v)?),
            "volume-label" => {
                let (lk, lv) = kv(&val()?, "volume-label")?;
                vol.labels.get_or_insert_with(HashMap::new).insert(lk, lv);
            }
            "tmpfs-size" => {
                tmp.size_bytes =
                    Some(parse_bytes(&val()?).ok_or_else(|| bad("invalid tmpfs-size"))?)
            }
            "tmpfs-mode" => {
                tmp.mode =
                    Some(i64::from_str_radix(&val()?, 8).map_err(|_| bad("invalid tmpfs-mode"))?)
            }
            "bind-propagation" => {
                bind.propagation = Some(
                    serde_json::from_value(serde_json::Value::String(val()?))
                        .map_err(|_| bad("invalid bind-propagation"))?,
                )
            }
            other => return Err(bad(&format!("unknown key {other:?}"))),
        }
    }
    match m.typ {
        Some(MountTypeEnum::BIND) => m.bind_options = (bind != Default::default()).then_some(bind),
        Some(MountTypeEnum::VOLUME) => {
            m.volume_options = (vol != Default::default()).then_some(vol)
        }
        Some(MountTypeEnum::TMPFS) => m.tmpfs_options = (tmp != Default::default()).then_some(tmp),
        _ => m.typ = Some(MountTypeEnum::VOLUME),
    }
    if m.target.as_deref().unwrap_or("").is_empty() {
        return Err(bad("target is required"));
    }
    Ok(m)
}

/// `NAME=SOFT[:HARD]`.
pub fn ulimit(s: &str) -> Result<ResourcesUlimits> {
    let (name, limits) = kv(s, "--ulimit")?;
    let num = |x: &str| {
        x.parse::<i64>()
            .map_err(|_| anyhow!("invalid --ulimit {s:?}: {x:?} is not a number"))
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(&limits)?, num(&limits)?),
    };
    Ok(ResourcesUlimits {
        name: Some(name),
        soft: Some(soft),
        hard: Some(hard),
    })
}

/// `HOST[:CONTAINER[:PERMISSIONS]]`.
pub fn device(s: &str) -> Result<DeviceMapping> {
    let parts: Vec<&str> = s.split(':').collect();
    let (host, ctr, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, c] if c.chars().all(|ch| "rwm".contains(ch)) && !c.starts_with('/') => (*h, *h, *c),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => bail!("invalid --device {s:?}"),
    };
    Ok(DeviceMapping {
        path_on_host: Some(host.to_string()),
        path_in_container: Some(ctr.to_string()),
        cgroup_permissions: Some(perms.to_string()),
    })
}

/// Fills the `HostConfig` fields of these flags.
pub fn apply(opts: &ContainerOpts, auto_remove: bool, h: &mut HostConfig) -> Result<()> {
    if let Some(r) = &opts.restart {
        let p = restart_policy(r)?;
        if auto_remove && p.name != Some(RestartPolicyNameEnum::NO) {
            bail!("conflicting options: cannot specify both --restart and --rm");
        }
        h.restart_policy = Some(p);
    }
    h.binds = list(&opts.volumes);
    let mounts = opts
        .mounts
        .iter()
        .map(|m| mount(m))
        .collect::<Result<Vec<_>>>()?;
    h.mounts = (!mounts.is_empty()).then_some(mounts);
    let mut tmpfs = HashMap::new();
    for t in &opts.tmpfs {
        let (path, o) = t.split_once(':').unwrap_or((t.as_str(), ""));
        tmpfs.insert(path.to_string(), o.to_string());
    }
    h.tmpfs = (!tmpfs.is_empty()).then_some(tmpfs);
    h.volumes_from = list(&opts.volumes_from);
    h.readonly_rootfs = opts.read_only.then_some(true);
    h.init = opts.init.then_some(true);
    h.extra_hosts = list(&opts.add_hosts);
    h.dns = list(&opts.dns);
    h.dns_search = list(&opts.dns_search);
    h.dns_options = list(&opts.dns_options);
    let ulimits = opts
        .ulimits
        .iter()
        .map(|u| ulimit(u))
        .collect::<Result<Vec<_>>>()?;
    h.ulimits = (!ulimits.is_empty()).then_some(ulimits);
    if let Some(s) = &opts.shm_size {
        h.shm_size = Some(
            parse_bytes(s)
                .filter(|b| *b > 0)
                .ok_or_else(|| anyhow!("invalid --shm-size {s:?}"))?,
        );
    }
    let mut sysctls = HashMap::new();
    for s in &opts.sysctls {
        let (k, v) = kv(s, "--sysctl")?;
        sysctls.insert(k, v);
    }
    h.sysctls = (!sysctls.is_empty()).then_some(sysctls);
    if let Some(c) = &opts.cgroupns {
        h.cgroupns_mode = Some(match c.as_str() {
            "private" => HostConfigCgroupnsModeEnum::PRIVATE,
            "host" => HostConfigCgroupnsModeEnum::HOST,
            other => bail!("invalid --cgroupns {other:?}: use private or host"),
        });
    }
    if opts.log_driver.is_some() || !opts.log_opts.is_empty() {
        let mut config = HashMap::new();
        for o in &opts.log_opts {
            let (k, v) = kv(o, "--log-opt")?;
            config.insert(k, v);
        }
        h.log_config = Some(HostConfigLogConfig {
            typ: opts.log_driver.clone(),
            config: Some(config),
        });
    }
    let mut security = opts.security_opts.clone();
    for s in security.iter_mut() {
        // As the docker CLI does: a seccomp profile file is sent as its content.
        if let Some(path) = s.strip_prefix("seccomp=") {
            if path != "unconfined" && !path.trim_start().starts_with('{') {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow!("opening seccomp profile ({path}) failed: {e}"))?;
                *s = format!("seccomp={text}");
            }
        }
    }
    h.security_opt = list(&security);
    h.cap_add = list(&opts.cap_add);
    h.cap_drop = list(&opts.cap_drop);
    h.privileged = opts.privileged.then_some(true);
    let devices = opts
        .devices
        .iter()
        .map(|d| device(d))
        .collect::<Result<Vec<_>>>()?;
    h.devices = (!devices.is_empty()).then_some(devices);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_like_the_docker_cli() {
        assert_eq!(
            restart_policy("on-failure:3").unwrap().maximum_retry_count,
            Some(3)
        );
        assert!(restart_policy("sometimes").is_err());
        assert!(restart_policy("always:2").is_err());
        let m = mount("type=bind,src=/a,dst=/b,readonly").unwrap();
        assert_eq!(m.typ, Some(MountTypeEnum::BIND));
        assert_eq!(
            (m.source.as_deref(), m.target.as_deref()),
            (Some("/a"), Some("/b"))
        );
        assert_eq!(m.read_only, Some(true));
        let m = mount("type=volume,source=v,target=/d,volume-nocopy").unwrap();
        assert_eq!(m.volume_options.unwrap().no_copy, Some(true));
        let m = mount("type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1770").unwrap();
        let t = m.tmpfs_options.unwrap();
        assert_eq!((t.size_bytes, t.mode), (Some(1 << 20), Some(0o1770)));
        assert!(mount("type=bind,source=/a").is_err());
        assert!(mount("type=weird,target=/a").is_err());
        let u = ulimit("nofile=1024:2048").unwrap();
        assert_eq!((u.soft, u.hard), (Some(1024), Some(2048)));
        assert!(ulimit("nofile").is_err());
        let d = device("/dev/fuse").unwrap();
        assert_eq!(d.path_in_container.as_deref(), Some("/dev/fuse"));
        let d = device("/dev/a:/dev/b:r").unwrap();
        assert_eq!(d.cgroup_permissions.as_deref(), Some("r"));
    }
}
