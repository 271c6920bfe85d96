//! skiff's own persisted container record (schema [`SCHEMA`]): what was asked at create time
//! in skiff's types, so a bollard upgrade never changes what is on disk. Live state (running,
//! exit code) is not here: it comes from the runtime's state files.
//!
//! Schema 1 (before this module) stored bollard's `ContainerConfig`/`HostConfig` as
//! Docker-named JSON; [`from_v1`] reads those by Docker's key names (the Engine API's, which
//! do not change), without bollard.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The version written by this daemon.
pub const SCHEMA: u32 = 2;

/// What the daemon keeps per container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    /// [`SCHEMA`] when written by this daemon.
    pub schema: u32,
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    /// Unix seconds.
    pub created: i64,
    /// As the user wrote it.
    pub image: String,
    /// The image's id (`sha256:...`).
    pub image_id: String,
    pub spec: ContainerSpec,
    /// The resolved command line (entrypoint + cmd).
    pub path: String,
    pub args: Vec<String>,
    /// Network details once attached.
    #[serde(default)]
    pub network: Option<NetworkSummary>,
    /// Volumes, binds and tmpfs mounts as set up at create time (inspect's `Mounts`).
    #[serde(default)]
    pub mounts: Vec<MountPoint>,
    /// Restarts done by the restart policy since the last `start` by a user.
    #[serde(default)]
    pub restart_count: i64,
    /// Stopped by `stop`/`kill` from a user: the restart policy leaves it stopped until the
    /// next `start` (and `unless-stopped` leaves it stopped across daemon restarts).
    #[serde(default)]
    pub stopped_by_user: bool,
    /// Why the last start failed before the runtime was asked (a host port taken), shown
    /// as `State.Error` with exit code 128, as dockerd records it; cleared by a start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_error: Option<String>,
}

/// The container's configuration after merging the request with the image.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ContainerSpec {
    /// As requested (`None`: the image's).
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// Resolved environment (`KEY=value`), image's then request's.
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// The hostname the container sees (the short id by default).
    pub hostname: String,
    pub domainname: String,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    /// Seconds.
    pub stop_timeout: Option<i64>,
    /// `80/tcp` keys.
    pub exposed_ports: Vec<String>,
    /// `Config.Volumes`: anonymous volume targets asked for in the request.
    pub volumes: Vec<String>,
    /// `Config.Healthcheck`, merged with the image's (durations in ns; `health.rs`).
    pub healthcheck: Option<bollard::models::HealthConfig>,
    pub host: HostSpec,
}

/// The applied part of Docker's `HostConfig`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HostSpec {
    /// Bytes.
    pub memory: Option<i64>,
    /// Docker's `MemorySwap`: memory plus swap in bytes, `-1` unlimited (twice `memory`
    /// when only that is given).
    pub memory_swap: Option<i64>,
    /// CPUs × 10⁹.
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    /// Docker's `CpuShares` (relative weight; unset or 0: the default, 1024).
    pub cpu_shares: Option<i64>,
    /// Docker's `MemoryReservation` (bytes; a soft limit).
    #[serde(default)]
    pub memory_reservation: Option<i64>,
    pub auto_remove: bool,
    /// `default`, `bridge`, `host` or `none`.
    pub network_mode: String,
    pub port_bindings: Vec<PortBindingSpec>,
    pub publish_all_ports: bool,
    pub restart_policy: RestartPolicy,
    /// `-v` strings as sent (`SRC:DST[:OPTS]`).
    pub binds: Vec<String>,
    /// `--mount`s.
    pub mounts: Vec<MountSpec>,
    /// `--tmpfs`: target -> options.
    pub tmpfs: BTreeMap<String, String>,
    pub readonly_rootfs: bool,
    pub init: bool,
    /// `host:ip` entries for /etc/hosts.
    pub extra_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// `CONTAINER[:ro|rw]`.
    pub volumes_from: Vec<String>,
    /// Initial pty size (rows, cols).
    pub console_size: Option<(u16, u16)>,
    /// `--log-driver` (`json-file` when empty) and `--log-opt`s.
    pub log_driver: String,
    pub log_opts: BTreeMap<String, String>,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `--security-opt` entries as given.
    pub security_opt: Vec<String>,
    pub devices: Vec<DeviceSpec>,
    pub ulimits: Vec<UlimitSpec>,
    /// Bytes of /dev/shm.
    pub shm_size: Option<i64>,
    pub sysctls: BTreeMap<String, String>,
    /// `private` (default) or `host`.
    pub cgroupns: String,
}

/// One `--device`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DeviceSpec {
    pub path_on_host: String,
    pub path_in_container: String,
    pub permissions: String,
}

/// One `--ulimit`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct UlimitSpec {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// One `-p` binding.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PortBindingSpec {
    /// `80/tcp`.
    pub port: String,
    /// Empty for every address.
    pub host_ip: String,
    /// Empty for an ephemeral port.
    pub host_port: String,
}

/// Docker's restart policies.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", tag = "name")]
pub enum RestartPolicy {
    #[default]
    No,
    Always,
    UnlessStopped,
    /// At most `max_retries` restarts (0: no bound).
    OnFailure {
        max_retries: u32,
    },
}

impl RestartPolicy {
    /// Docker's `RestartPolicy.Name`.
    pub fn docker_name(&self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::OnFailure { .. } => "on-failure",
        }
    }

    /// Parses Docker's `{Name, MaximumRetryCount}`.
    pub fn parse(name: &str, max: i64) -> Result<RestartPolicy, String> {
        let p = match name {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure {
                max_retries: u32::try_from(max)
                    .map_err(|_| format!("invalid MaximumRetryCount {max}: must be >= 0"))?,
            },
            other => return Err(format!("invalid restart policy: unknown policy {other:?}; use one of 'no', 'always', 'on-failure' or 'unless-stopped'")),
        };
        if max != 0 && !matches!(p, RestartPolicy::OnFailure { .. }) {
            return Err(format!(
                "invalid restart policy: maximum retry count can only be used with 'on-failure' (got {name:?} with {max})"
            ));
        }
        Ok(p)
    }

    pub fn max_retries(&self) -> i64 {
        match self {
            RestartPolicy::OnFailure { max_retries } => *max_retries as i64,
            _ => 0,
        }
    }
}

/// A `--mount` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MountSpec {
    /// `bind`, `volume` or `tmpfs`.
    pub kind: String,
    /// Host path (bind), volume name (volume; empty for anonymous), empty (tmpfs).
    pub source: String,
    pub target: String,
    pub read_only: bool,
    /// Volume: do not seed a new volume from the image.
    pub no_copy: bool,
    pub labels: BTreeMap<String, String>,
    /// Tmpfs size in bytes.
    pub tmpfs_size: Option<i64>,
    pub tmpfs_mode: Option<u32>,
}

/// A mount as set up (inspect's `Mounts` entry).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MountPoint {
    /// `volume`, `bind` or `tmpfs`.
    pub kind: String,
    /// Volume name (volumes only).
    pub name: String,
    /// Host path (volume `_data` dir or bind source).
    pub source: String,
    pub destination: String,
    pub read_only: bool,
    /// For tmpfs: its mount options (`size=...,mode=...`).
    pub options: String,
    /// An anonymous volume, removed with the container by `rm -v`.
    pub anonymous: bool,
}

/// What `ps` and `inspect` show of a network attachment. The JSON names are those schema 1
/// stored, so old records read as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NetworkSummary {
    #[serde(rename = "Mode")]
    pub mode: String,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "Gateway")]
    pub gateway: String,
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
    /// Bits of the bridge subnet's prefix (0 in records made before it was kept).
    #[serde(rename = "IPPrefixLen")]
    pub prefix_len: u8,
    #[serde(rename = "Ports")]
    pub ports: Vec<PublishedPort>,
    /// Endpoints on user-defined networks, in the order joined.
    #[serde(rename = "Endpoints", skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointSummary>,
}

/// A container's endpoint on a user-defined network, for inspect and `network inspect`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct EndpointSummary {
    #[serde(rename = "NetworkName")]
    pub network_name: String,
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "IPPrefixLen")]
    pub prefix_len: u8,
    #[serde(rename = "Gateway")]
    pub gateway: String,
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
    /// As asked (`--network-alias`, compose's service name); the DNS also answers the
    /// container's name and short id.
    #[serde(rename = "Aliases")]
    pub aliases: Vec<String>,
    /// `--ip` as asked (empty: allocated).
    #[serde(rename = "IPv4Requested")]
    pub ip_requested: String,
}

/// A published port as bound.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PublishedPort {
    #[serde(rename = "IP")]
    pub ip: String,
    #[serde(rename = "PrivatePort")]
    pub private_port: u16,
    #[serde(rename = "PublicPort")]
    pub public_port: Option<u16>,
    /// `tcp` or `udp`.
    #[serde(rename = "Type")]
    pub protocol: String,
}

#[cfg(test)]
impl ContainerRecord {
    /// A bare record (image `i`, command `sh`) for unit tests.
    pub fn for_test(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            schema: SCHEMA,
            id: id.into(),
            name: name.into(),
            created: 0,
            image: "i".into(),
            image_id: "sha256:1".into(),
            spec: Default::default(),
            path: "sh".into(),
            args: vec![],
            network: None,
            mounts: vec![],
            restart_count: 0,
            stopped_by_user: false,
            start_error: None,
        }
    }
}

/// Reads a stored record of any known schema.
pub fn decode(json: &str) -> Result<ContainerRecord, String> {
    /// Only the schema key; the rest is skipped without building a tree (a record is
    /// decoded on every lookup by name or id).
    #[derive(Deserialize)]
    struct Schema {
        schema: Option<u64>,
    }
    let schema = serde_json::from_str::<Schema>(json)
        .map_err(|e| e.to_string())?
        .schema;
    match schema {
        None => {
            let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
            from_v1(&v)
        }
        Some(2) => serde_json::from_str(json).map_err(|e| e.to_string()),
        Some(n) => Err(format!(
            "record schema {n} is newer than this daemon's ({SCHEMA})"
        )),
    }
}

fn s(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}
fn b(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}
fn i(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64).filter(|n| *n != 0)
}
fn strings(v: &Value, key: &str) -> Option<Vec<String>> {
    v.get(key).and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    })
}
fn keys(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Schema 1: `{id, name, created, image, image_id, config, host_config, path, args,
/// network, restart_count}` where `config`/`host_config` are Docker-named JSON objects.
pub fn from_v1(v: &Value) -> Result<ContainerRecord, String> {
    let need = |key: &str| {
        v.get(key)
            .ok_or_else(|| format!("schema 1 record without {key:?}"))
    };
    let config = need("config")?;
    let host = v.get("host_config").cloned().unwrap_or(Value::Null);
    let mut port_bindings = Vec::new();
    if let Some(map) = host.get("PortBindings").and_then(Value::as_object) {
        for (port, list) in map {
            for bnd in list.as_array().into_iter().flatten() {
                port_bindings.push(PortBindingSpec {
                    port: port.clone(),
                    host_ip: s(bnd, "HostIp"),
                    host_port: s(bnd, "HostPort"),
                });
            }
        }
    }
    let restart = host.get("RestartPolicy").cloned().unwrap_or(Value::Null);
    let spec = ContainerSpec {
        // Refused at create before schemas had it.
        healthcheck: None,
        cmd: strings(config, "Cmd"),
        entrypoint: strings(config, "Entrypoint"),
        env: strings(config, "Env").unwrap_or_default(),
        working_dir: s(config, "WorkingDir"),
        user: s(config, "User"),
        hostname: s(config, "Hostname"),
        domainname: s(config, "Domainname"),
        tty: b(config, "Tty"),
        open_stdin: b(config, "OpenStdin"),
        stdin_once: b(config, "StdinOnce"),
        attach_stdin: b(config, "AttachStdin"),
        attach_stdout: b(config, "AttachStdout"),
        attach_stderr: b(config, "AttachStderr"),
        labels: config
            .get("Labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, x)| (k.clone(), x.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        stop_signal: config
            .get("StopSignal")
            .and_then(Value::as_str)
            .map(str::to_string),
        stop_timeout: config.get("StopTimeout").and_then(Value::as_i64),
        exposed_ports: keys(config, "ExposedPorts"),
        volumes: keys(config, "Volumes"),
        host: HostSpec {
            memory: i(&host, "Memory"),
            memory_swap: i(&host, "MemorySwap"),
            nano_cpus: i(&host, "NanoCpus"),
            pids_limit: i(&host, "PidsLimit"),
            cpu_shares: i(&host, "CpuShares"),
            memory_reservation: i(&host, "MemoryReservation"),
            auto_remove: b(&host, "AutoRemove"),
            network_mode: s(&host, "NetworkMode"),
            port_bindings,
            publish_all_ports: b(&host, "PublishAllPorts"),
            restart_policy: RestartPolicy::parse(
                &s(&restart, "Name"),
                restart
                    .get("MaximumRetryCount")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
            )
            .unwrap_or_default(),
            ..Default::default()
        },
    };
    let network = match v.get("network") {
        Some(n) if !n.is_null() => {
            Some(serde_json::from_value(n.clone()).map_err(|e| format!("network: {e}"))?)
        }
        _ => None,
    };
    Ok(ContainerRecord {
        schema: SCHEMA,
        id: s(v, "id"),
        name: s(v, "name"),
        created: v.get("created").and_then(Value::as_i64).unwrap_or(0),
        image: s(v, "image"),
        image_id: s(v, "image_id"),
        spec,
        path: s(v, "path"),
        args: strings(v, "args").unwrap_or_default(),
        network,
        mounts: Vec::new(),
        restart_count: v.get("restart_count").and_then(Value::as_i64).unwrap_or(0),
        stopped_by_user: false,
        start_error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as schema 1 wrote it (bollard's serialization of the create body).
    const V1: &str = r#"{"id":"4f1c","name":"web","created":1700000000,"image":"reg/app:1",
        "image_id":"sha256:ab","config":{"Hostname":"web","User":"","Tty":true,"OpenStdin":true,
        "Env":["PATH=/bin","A=1"],"Cmd":["httpd","-f"],"Image":"reg/app:1","WorkingDir":"/srv",
        "Labels":{"k":"v"},"StopSignal":"SIGQUIT","StopTimeout":3,"ExposedPorts":{"80/tcp":{}}},
        "host_config":{"Memory":67108864,"NanoCpus":0,"AutoRemove":false,"NetworkMode":"bridge",
        "PortBindings":{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"8080"}]},
        "RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3}},
        "path":"httpd","args":["-f"],"network":{"Mode":"bridge","IPAddress":"172.18.0.2",
        "Gateway":"172.18.0.1","MacAddress":"02:42:ac:12:00:02","Ports":[{"IP":"127.0.0.1",
        "PrivatePort":80,"PublicPort":8080,"Type":"tcp"}]},"restart_count":2}"#;

    #[test]
    fn schema1_records_migrate() {
        let r = decode(V1).unwrap();
        assert_eq!(r.schema, SCHEMA);
        assert_eq!((r.id.as_str(), r.name.as_str()), ("4f1c", "web"));
        assert_eq!(
            r.spec.cmd.as_deref(),
            Some(&["httpd".to_string(), "-f".into()][..])
        );
        assert_eq!(r.spec.env, ["PATH=/bin", "A=1"]);
        assert!(r.spec.tty && r.spec.open_stdin);
        assert_eq!(r.spec.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(r.spec.stop_timeout, Some(3));
        assert_eq!(r.spec.exposed_ports, ["80/tcp"]);
        assert_eq!(r.spec.host.memory, Some(67108864));
        assert_eq!(r.spec.host.nano_cpus, None);
        assert_eq!(
            r.spec.host.restart_policy,
            RestartPolicy::OnFailure { max_retries: 3 }
        );
        assert_eq!(r.spec.host.port_bindings[0].host_port, "8080");
        let net = r.network.as_ref().unwrap();
        assert_eq!(net.ip_address, "172.18.0.2");
        assert_eq!(net.ports[0].public_port, Some(8080));
        assert_eq!(r.restart_count, 2);
        // Written back, it reads the same as schema 2.
        let again = decode(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn newer_schema_is_refused() {
        let e = decode(r#"{"schema":99}"#).unwrap_err();
        assert!(e.contains("newer"), "{e}");
    }

    #[test]
    fn restart_policies_parse_like_docker() {
        assert_eq!(RestartPolicy::parse("", 0), Ok(RestartPolicy::No));
        assert_eq!(
            RestartPolicy::parse("unless-stopped", 0),
            Ok(RestartPolicy::UnlessStopped)
        );
        assert!(RestartPolicy::parse("sometimes", 0).is_err());
        assert!(RestartPolicy::parse("always", 3).is_err());
        assert!(RestartPolicy::parse("on-failure", -1).is_err());
    }
}
