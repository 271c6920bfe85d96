//! Every field of Docker's container-create body, and what skiff does with it: applied, left
//! to the client, or refused with 400 naming the field when set to anything but what the
//! docker CLI (28, 20.10), docker-compose 1.29 and the Python SDK 7.1 send by default
//! (`null`, `""`, `0`, `false`, `[]`, `{}`, objects of those, and the per-field defaults
//! below). Fields not in the table are refused the same way. docs/create-fields.md is this
//! table in prose; a test keeps the two in step.

use serde_json::Value;

use super::error::DaemonError;

/// What skiff does with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Applied to the container (checked and turned into its spec).
    Applied,
    /// Acted on by the client (e.g. the CLI writes `--cidfile` itself); the daemon has
    /// nothing to do.
    Client,
    /// Not implemented: refused unless empty or one of these JSON defaults.
    Refused(&'static [&'static str]),
}

use Handling::{Applied, Client, Refused};

/// `Section.Field` -> handling. Sections: `Config` (top level), `HostConfig`.
pub const FIELDS: &[(&str, Handling)] = &[
    ("Config.Hostname", Applied),
    ("Config.Domainname", Refused(&[])),
    ("Config.User", Applied),
    ("Config.AttachStdin", Applied),
    ("Config.AttachStdout", Applied),
    ("Config.AttachStderr", Applied),
    ("Config.ExposedPorts", Applied),
    ("Config.Tty", Applied),
    ("Config.OpenStdin", Applied),
    ("Config.StdinOnce", Applied),
    ("Config.Env", Applied),
    ("Config.Cmd", Applied),
    ("Config.Healthcheck", Applied),
    ("Config.ArgsEscaped", Refused(&[])),
    ("Config.Image", Applied),
    ("Config.Volumes", Applied),
    ("Config.WorkingDir", Applied),
    ("Config.Entrypoint", Applied),
    ("Config.NetworkDisabled", Refused(&[])),
    ("Config.MacAddress", Refused(&[])),
    ("Config.OnBuild", Refused(&[])),
    ("Config.Labels", Applied),
    ("Config.StopSignal", Applied),
    ("Config.StopTimeout", Applied),
    ("Config.Shell", Refused(&[])),
    ("Config.HostConfig", Applied),
    ("Config.NetworkingConfig", Applied),
    ("HostConfig.Binds", Applied),
    ("HostConfig.ContainerIDFile", Client),
    ("HostConfig.LogConfig", Applied),
    ("HostConfig.NetworkMode", Applied),
    ("HostConfig.PortBindings", Applied),
    ("HostConfig.RestartPolicy", Applied),
    ("HostConfig.AutoRemove", Applied),
    ("HostConfig.VolumeDriver", Refused(&["\"local\""])),
    ("HostConfig.VolumesFrom", Applied),
    ("HostConfig.ConsoleSize", Applied),
    ("HostConfig.Annotations", Refused(&[])),
    ("HostConfig.CapAdd", Applied),
    ("HostConfig.CapDrop", Applied),
    ("HostConfig.CgroupnsMode", Applied),
    ("HostConfig.Dns", Applied),
    ("HostConfig.DnsOptions", Applied),
    ("HostConfig.DnsSearch", Applied),
    ("HostConfig.ExtraHosts", Applied),
    ("HostConfig.GroupAdd", Refused(&[])),
    ("HostConfig.IpcMode", Refused(&["\"private\""])),
    ("HostConfig.Cgroup", Refused(&[])),
    ("HostConfig.Links", Applied),
    ("HostConfig.OomScoreAdj", Refused(&[])),
    ("HostConfig.PidMode", Refused(&["\"private\""])),
    ("HostConfig.Privileged", Applied),
    ("HostConfig.PublishAllPorts", Applied),
    ("HostConfig.ReadonlyRootfs", Applied),
    ("HostConfig.SecurityOpt", Applied),
    ("HostConfig.StorageOpt", Refused(&[])),
    ("HostConfig.Tmpfs", Applied),
    ("HostConfig.UTSMode", Refused(&["\"private\""])),
    ("HostConfig.UsernsMode", Refused(&[])),
    ("HostConfig.ShmSize", Applied),
    ("HostConfig.Sysctls", Applied),
    ("HostConfig.Runtime", Refused(&["\"runc\""])),
    ("HostConfig.Isolation", Refused(&["\"default\""])),
    ("HostConfig.CpuShares", Applied),
    ("HostConfig.Memory", Applied),
    ("HostConfig.NanoCpus", Applied),
    ("HostConfig.CgroupParent", Refused(&[])),
    ("HostConfig.BlkioWeight", Refused(&[])),
    ("HostConfig.BlkioWeightDevice", Refused(&[])),
    ("HostConfig.BlkioDeviceReadBps", Refused(&[])),
    ("HostConfig.BlkioDeviceWriteBps", Refused(&[])),
    ("HostConfig.BlkioDeviceReadIOps", Refused(&[])),
    ("HostConfig.BlkioDeviceWriteIOps", Refused(&[])),
    ("HostConfig.CpuPeriod", Refused(&[])),
    ("HostConfig.CpuQuota", Refused(&[])),
    ("HostConfig.CpuRealtimePeriod", Refused(&[])),
    ("HostConfig.CpuRealtimeRuntime", Refused(&[])),
    ("HostConfig.CpusetCpus", Refused(&[])),
    ("HostConfig.CpusetMems", Refused(&[])),
    ("HostConfig.Devices", Applied),
    ("HostConfig.DeviceCgroupRules", Refused(&[])),
    ("HostConfig.DeviceRequests", Refused(&[])),
    ("HostConfig.KernelMemory", Refused(&[])),
    ("HostConfig.KernelMemoryTCP", Refused(&[])),
    ("HostConfig.MemoryReservation", Applied),
    ("HostConfig.MemorySwap", Applied),
    ("HostConfig.MemorySwappiness", Refused(&["-1"])),
    ("HostConfig.OomKillDisable", Refused(&[])),
    ("HostConfig.Init", Applied),
    ("HostConfig.PidsLimit", Applied),
    ("HostConfig.Ulimits", Applied),
    ("HostConfig.CpuCount", Refused(&[])),
    ("HostConfig.CpuPercent", Refused(&[])),
    ("HostConfig.IOMaximumIOps", Refused(&[])),
    ("HostConfig.IOMaximumBandwidth", Refused(&[])),
    ("HostConfig.MaskedPaths", Refused(&[])),
    ("HostConfig.ReadonlyPaths", Refused(&[])),
    ("HostConfig.Mounts", Applied),
];

/// What clients send for "not set": null, "", 0, false, and arrays/objects of only those.
pub fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_empty),
        Value::Object(o) => o.values().all(is_empty),
    }
}

fn handling(path: &str) -> Option<Handling> {
    FIELDS.iter().find(|(p, _)| *p == path).map(|(_, h)| *h)
}

fn refuse(field: &str, v: &Value) -> DaemonError {
    DaemonError::Unsupported {
        field: field.to_string(),
        value: v.to_string(),
    }
}

fn check_section(section: &str, obj: &serde_json::Map<String, Value>) -> Result<(), DaemonError> {
    for (key, v) in obj {
        let path = format!("{section}.{key}");
        match handling(&path) {
            Some(Applied) | Some(Client) => {}
            Some(Refused(defaults)) => {
                let text = v.to_string();
                if !is_empty(v) && !defaults.contains(&text.as_str()) {
                    return Err(refuse(&path, v));
                }
            }
            // Unknown to skiff (a newer API's field, or a typo): same rule.
            None => {
                if !is_empty(v) {
                    return Err(refuse(&path, v));
                }
            }
        }
    }
    Ok(())
}

/// Refuses the body if it sets a field skiff does not implement. `NetworkingConfig` may
/// only name the container's own network (`default`, `bridge`, `host`, `none`) with empty
/// settings, until user-defined networks exist.
pub fn check(body: &Value) -> Result<(), DaemonError> {
    let Some(top) = body.as_object() else {
        return Err(DaemonError::invalid(
            "the create body must be a JSON object",
        ));
    };
    check_section("Config", top)?;
    if let Some(Value::Object(host)) = top.get("HostConfig") {
        check_section("HostConfig", host)?;
    }
    let mode = top
        .get("HostConfig")
        .and_then(|h| h.get("NetworkMode"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    if let Some(eps) = top
        .get("NetworkingConfig")
        .and_then(|n| n.get("EndpointsConfig"))
        .and_then(Value::as_object)
    {
        for (net, settings) in eps {
            let builtin = matches!(net.as_str(), "default" | "bridge" | "host" | "none");
            if builtin && net != mode && !matches!(mode, "default" | "bridge" | "") {
                return Err(DaemonError::Unsupported {
                    field: format!("NetworkingConfig.EndpointsConfig.{net}"),
                    value: format!("a built-in network other than the container's own ({mode})"),
                });
            }
            if let Some(o) = settings.as_object() {
                for (k, v) in o {
                    // Applied on user-defined networks (networks.rs): aliases and --ip.
                    let applied =
                        !builtin && matches!(k.as_str(), "Aliases" | "IPAMConfig" | "Links");
                    if applied && k == "IPAMConfig" {
                        for (ik, iv) in v.as_object().into_iter().flatten() {
                            if ik != "IPv4Address" && !is_empty(iv) {
                                return Err(refuse(
                                    &format!(
                                        "NetworkingConfig.EndpointsConfig.{net}.IPAMConfig.{ik}"
                                    ),
                                    iv,
                                ));
                            }
                        }
                    }
                    if !applied && !is_empty(v) {
                        return Err(refuse(
                            &format!("NetworkingConfig.EndpointsConfig.{net}.{k}"),
                            v,
                        ));
                    }
                }
            }
        }
    }
    if let Some(n) = top.get("NetworkingConfig").and_then(Value::as_object) {
        for (k, v) in n {
            if k != "EndpointsConfig" && !is_empty(v) {
                return Err(refuse(&format!("NetworkingConfig.{k}"), v));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What `docker run busybox true` (CLI 28.2) sends, captured.
    const DOCKER_CLI_28: &str = r#"{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":true,"AttachStderr":true,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":["true"],"Image":"busybox","Volumes":{},"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{},"HostConfig":{"Binds":null,"ContainerIDFile":"","LogConfig":{"Type":"","Config":{}},"NetworkMode":"default","PortBindings":{},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":false,"VolumeDriver":"","VolumesFrom":null,"ConsoleSize":[0,0],"CapAdd":null,"CapDrop":null,"CgroupnsMode":"","Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,"GroupAdd":null,"IpcMode":"","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"","Privileged":false,"PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":null,"UTSMode":"","UsernsMode":"","ShmSize":0,"Isolation":"","CpuShares":0,"Memory":0,"NanoCpus":0,"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":[],"BlkioDeviceReadBps":[],"BlkioDeviceWriteBps":[],"BlkioDeviceReadIOps":[],"BlkioDeviceWriteIOps":[],"CpuPeriod":0,"CpuQuota":0,"CpuRealtimePeriod":0,"CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"","Devices":[],"DeviceCgroupRules":null,"DeviceRequests":null,"MemoryReservation":0,"MemorySwap":0,"MemorySwappiness":-1,"OomKillDisable":false,"PidsLimit":0,"Ulimits":[],"CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,"MaskedPaths":null,"ReadonlyPaths":null},"NetworkingConfig":{"EndpointsConfig":{"default":{"IPAMConfig":null,"Links":null,"Aliases":null,"MacAddress":"","DriverOpts":null,"GwPriority":0,"NetworkID":"","EndpointID":"","Gateway":"","IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"DNSNames":null}}}}"#;
    /// docker-compose 1.29 with `network_mode: bridge`, captured.
    const COMPOSE_129: &str = r#"{"Tty": false, "OpenStdin": false, "StdinOnce": false, "AttachStdin": false, "AttachStdout": false, "AttachStderr": false, "Cmd": ["sleep", "1"], "Image": "busybox", "Volumes": {}, "NetworkDisabled": false, "HostConfig": {"NetworkMode": "bridge", "VolumesFrom": [], "Binds": [], "PortBindings": {}, "Links": [], "LogConfig": {"Type": "", "Config": {}}}, "Labels": {"com.docker.compose.project": "proj"}}"#;
    /// Python SDK 7.1 `containers.run("busybox", "true")`, captured.
    const PYTHON_SDK_71: &str = r#"{"Tty": false, "OpenStdin": false, "StdinOnce": false, "AttachStdin": false, "AttachStdout": true, "AttachStderr": true, "Cmd": ["true"], "Image": "busybox", "NetworkDisabled": false, "HostConfig": {"NetworkMode": "default"}}"#;

    #[test]
    fn client_defaults_pass() {
        for body in [DOCKER_CLI_28, COMPOSE_129, PYTHON_SDK_71] {
            let v: Value = serde_json::from_str(body).unwrap();
            check(&v).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn unimplemented_fields_are_refused_by_name() {
        let mut v: Value = serde_json::from_str(DOCKER_CLI_28).unwrap();
        v["HostConfig"]["Runtime"] = json!("other");
        let e = check(&v).unwrap_err().to_string();
        assert!(
            e.contains("HostConfig.Runtime") && e.contains("other"),
            "{e}"
        );
        let v = json!({"Image": "x", "Shell": ["/bin/bash", "-c"]});
        assert!(check(&v).unwrap_err().to_string().contains("Config.Shell"));
        let v = json!({"Image": "x", "HostConfig": {"BlkioWeight": 500}});
        assert!(check(&v)
            .unwrap_err()
            .to_string()
            .contains("HostConfig.BlkioWeight"));
        let v = json!({"Image": "x", "HostConfig": {"CpuShares": 512}});
        assert!(check(&v).is_ok(), "CpuShares is applied");
        // Unknown fields follow the same rule.
        let v = json!({"Image": "x", "HostConfig": {"FutureThing": true}});
        assert!(check(&v)
            .unwrap_err()
            .to_string()
            .contains("HostConfig.FutureThing"));
        let v = json!({"Image": "x", "HostConfig": {"FutureThing": false}});
        assert!(check(&v).is_ok());
        // Per-field defaults.
        let v = json!({"Image": "x", "HostConfig": {"MemorySwappiness": -1, "Runtime": "runc"}});
        assert!(check(&v).is_ok());
    }

    #[test]
    fn user_defined_networks_take_aliases_and_ip_only() {
        let v = json!({"Image": "x", "HostConfig": {"NetworkMode": "proj_default"},
            "NetworkingConfig": {"EndpointsConfig": {"proj_default": {"Aliases": ["web"],
                "IPAMConfig": {"IPv4Address": "10.5.0.9"}}}}});
        check(&v).unwrap();
        let v = json!({"Image": "x", "HostConfig": {"NetworkMode": "proj_default"},
            "NetworkingConfig": {"EndpointsConfig": {"proj_default": {"MacAddress": "02:42:00:00:00:01"}}}});
        let e = check(&v).unwrap_err().to_string();
        assert!(
            e.contains("NetworkingConfig.EndpointsConfig.proj_default.MacAddress"),
            "{e}"
        );
        let v = json!({"Image": "x", "NetworkingConfig": {"EndpointsConfig": {"bridge": {"Aliases": ["a"]}}}});
        assert!(check(&v).unwrap_err().to_string().contains("Aliases"));
    }

    #[test]
    fn the_doc_lists_every_field_with_its_handling() {
        let doc = include_str!("../../../docs/create-fields.md");
        for (path, h) in FIELDS {
            let word = match h {
                Applied => "applied",
                Client => "client",
                Refused(_) => "refused",
            };
            let row = format!("| `{path}` | {word} |");
            assert!(
                doc.contains(&row),
                "docs/create-fields.md lacks the row {row}"
            );
        }
    }
}
