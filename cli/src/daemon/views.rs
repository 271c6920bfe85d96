//! Docker's JSON views of a container (`ps` summaries, `inspect`), built from the daemon's
//! record and the runtime's live state.

use bollard::models::{
    ContainerInspectResponse, ContainerState as ApiState, ContainerStateStatusEnum,
    ContainerSummary, ContainerSummaryHostConfig, ContainerSummaryNetworkSettings,
    EndpointIpamConfig, EndpointSettings, NetworkSettings, Port, PortTypeEnum,
};
use chrono::{DateTime, Utc};
use skiff_runtime::state::{ContainerState, Status};

use super::record::ContainerRecord as Record;
use crate::client::format::human_duration;

/// "Up 3 seconds", "Exited (0) 2 minutes ago", "Created", as `docker ps` prints STATUS.
pub fn status_text(st: &ContainerState, now: DateTime<Utc>) -> String {
    match st.status {
        Status::Created => "Created".to_string(),
        Status::Running => {
            let since = st.started_at.unwrap_or(st.created_at);
            format!("Up {}", human_duration((now - since).num_seconds()))
        }
        Status::Exited => match st.finished_at {
            Some(f) => format!(
                "Exited ({}) {} ago",
                st.exit_code.unwrap_or(-1),
                human_duration((now - f).num_seconds())
            ),
            None => format!("Exited ({})", st.exit_code.unwrap_or(-1)),
        },
    }
}

fn state_word(st: &ContainerState) -> &'static str {
    match st.status {
        Status::Created => "created",
        Status::Running => "running",
        Status::Exited => "exited",
    }
}

/// Published ports from the record, then the exposed ones none publishes (the container's
/// and its image's, merged at create; only `PrivatePort` and `Type`, as dockerd lists
/// them), as Docker's `Port` list. Only while the container runs (`live`): dockerd's ports
/// come and go with the network it sets up at start (a stopped container's bindings stay in
/// `HostConfig.PortBindings`); a container on the host's network, none, or another
/// container's has no exposed ports of its own.
pub fn ports(r: &Record, live: bool) -> Vec<Port> {
    if !live {
        return Vec::new();
    }
    let typ = |proto: &str| {
        Some(if proto == "udp" {
            PortTypeEnum::UDP
        } else {
            PortTypeEnum::TCP
        })
    };
    let published: Vec<&super::record::PublishedPort> =
        r.network.iter().flat_map(|n| n.ports.iter()).collect();
    let mut out: Vec<Port> = published
        .iter()
        .map(|b| Port {
            ip: Some(b.ip.clone()),
            private_port: b.private_port,
            public_port: b.public_port,
            typ: typ(&b.protocol),
        })
        .collect();
    let mode = super::container_filter::network_name(&r.spec.host.network_mode);
    if matches!(mode, "host" | "none") || mode.starts_with("container:") {
        return out;
    }
    for key in &r.spec.exposed_ports {
        let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        let proto = if proto.is_empty() { "tcp" } else { proto };
        let known = published
            .iter()
            .any(|b| b.private_port == port && b.protocol == proto)
            || out
                .iter()
                .any(|p| p.private_port == port && p.typ == typ(proto) && p.ip.is_none());
        if !known {
            out.push(Port {
                ip: None,
                private_port: port,
                public_port: None,
                typ: typ(proto),
            });
        }
    }
    out
}

/// Inspect's `Mounts`.
pub fn mounts(r: &Record) -> Vec<bollard::models::MountPoint> {
    use bollard::models::MountPointTypeEnum as T;
    r.mounts
        .iter()
        .map(|m| bollard::models::MountPoint {
            typ: Some(match m.kind.as_str() {
                "bind" => T::BIND,
                "tmpfs" => T::TMPFS,
                _ => T::VOLUME,
            }),
            name: (m.kind == "volume").then(|| m.name.clone()),
            source: Some(m.source.clone()),
            destination: Some(m.destination.clone()),
            driver: (m.kind == "volume").then(|| "local".to_string()),
            mode: Some(if m.kind == "tmpfs" {
                m.options.clone()
            } else if m.read_only {
                "ro".to_string()
            } else {
                String::new()
            }),
            rw: Some(!m.read_only),
            propagation: Some(if m.kind == "bind" { "rprivate" } else { "" }.to_string()),
        })
        .collect()
}

/// The container's network attachments as Docker's `NetworkSettings.Networks`: its own
/// mode's entry (`bridge`, `host` or `none`; always present, as dockerd answers, unless the
/// container is only on user-defined networks), then one per user-defined network. While
/// it does not run (`live` false) each entry keeps only its network, as dockerd's: no
/// endpoint, address, gateway or MAC.
pub fn networks(r: &Record, live: bool) -> std::collections::HashMap<String, EndpointSettings> {
    let mut out = attached_networks(r);
    if !live {
        for e in out.values_mut() {
            *e = EndpointSettings {
                network_id: e.network_id.take(),
                aliases: e.aliases.take(),
                ipam_config: e.ipam_config.take(),
                endpoint_id: Some(String::new()),
                gateway: Some(String::new()),
                ip_address: Some(String::new()),
                ip_prefix_len: Some(0),
                ipv6_gateway: Some(String::new()),
                global_ipv6_address: Some(String::new()),
                global_ipv6_prefix_len: Some(0),
                mac_address: Some(String::new()),
                ..Default::default()
            };
        }
    }
    out
}

fn attached_networks(r: &Record) -> std::collections::HashMap<String, EndpointSettings> {
    let name = super::container_filter::network_name(&r.spec.host.network_mode).to_string();
    let n = r.network.clone().unwrap_or_default();
    let mut out = std::collections::HashMap::new();
    for ep in &n.endpoints {
        let mut names = vec![r.name.clone(), r.id[..12].to_string()];
        names.extend(ep.aliases.iter().cloned());
        out.insert(
            ep.network_name.clone(),
            EndpointSettings {
                network_id: Some(ep.network_id.clone()),
                endpoint_id: Some(super::network::endpoint_id(&r.id, &ep.network_name)),
                gateway: Some(ep.gateway.clone()),
                ip_address: Some(ep.ip_address.clone()),
                ip_prefix_len: Some(i64::from(ep.prefix_len)),
                ipv6_gateway: Some(String::new()),
                global_ipv6_address: Some(String::new()),
                global_ipv6_prefix_len: Some(0),
                mac_address: Some(ep.mac_address.clone()),
                aliases: (!ep.aliases.is_empty()).then(|| ep.aliases.clone()),
                ipam_config: (!ep.ip_requested.is_empty()).then(|| EndpointIpamConfig {
                    ipv4_address: Some(ep.ip_requested.clone()),
                    ..Default::default()
                }),
                dns_names: Some(names),
                ..Default::default()
            },
        );
    }
    let builtin = matches!(name.as_str(), "bridge" | "host" | "none");
    if !builtin || (name == "none" && !n.endpoints.is_empty()) {
        return out;
    }
    let bridged = name == "bridge" && !n.ip_address.is_empty();
    let prefix = match n.prefix_len {
        0 if bridged => 16,
        0 => 0,
        p => p as i64,
    };
    let endpoint = EndpointSettings {
        network_id: Some(super::network::network_id(&name)),
        endpoint_id: Some(super::network::endpoint_id(&r.id, &name)),
        gateway: Some(n.gateway.clone()),
        ip_address: Some(n.ip_address.clone()),
        ip_prefix_len: Some(prefix),
        ipv6_gateway: Some(String::new()),
        global_ipv6_address: Some(String::new()),
        global_ipv6_prefix_len: Some(0),
        mac_address: Some(n.mac_address.clone()),
        dns_names: bridged.then(|| vec![r.name.clone(), r.id[..12].to_string()]),
        ..Default::default()
    };
    out.insert(name, endpoint);
    out
}

/// A `ps` row; `restarting` while the restart policy waits out its back-off.
pub fn summary(
    r: &Record,
    st: &ContainerState,
    now: DateTime<Utc>,
    restarting: bool,
) -> ContainerSummary {
    let st = &super::status::Lifecycle::new(r, st).shown();
    let command = std::iter::once(r.path.clone())
        .chain(r.args.iter().map(|a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        }))
        .collect::<Vec<_>>()
        .join(" ");
    ContainerSummary {
        id: Some(r.id.clone()),
        names: Some(vec![format!("/{}", r.name)]),
        image: Some(r.image.clone()),
        image_id: Some(r.image_id.clone()),
        command: Some(command),
        created: Some(r.created),
        state: Some(
            if restarting {
                "restarting"
            } else {
                state_word(st)
            }
            .to_string(),
        ),
        status: Some(if restarting {
            status_text(st, now).replacen("Exited", "Restarting", 1)
        } else {
            status_text(st, now)
        }),
        ports: Some(ports(r, st.status == Status::Running)),
        labels: Some(r.spec.labels.clone().into_iter().collect()),
        host_config: Some(ContainerSummaryHostConfig {
            network_mode: Some(
                super::container_filter::network_name(&r.spec.host.network_mode).to_string(),
            ),
            ..Default::default()
        }),
        network_settings: Some(ContainerSummaryNetworkSettings {
            networks: Some(networks(r, st.status == Status::Running)),
        }),
        mounts: Some(mounts(r)),
        ..Default::default()
    }
}

fn rfc3339(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string())
}

/// Keys dockerd always sends, null when unset, that bollard's models leave out when `None`:
/// (JSON pointer of the object, its keys). Every `NetworkSettings.Networks` entry gets
/// [`ENDPOINT_NULLS`].
const INSPECT_NULLS: &[(&str, &[&str])] = &[
    (
        "/HostConfig",
        &[
            "Binds",
            "VolumesFrom",
            "CapAdd",
            "CapDrop",
            "ExtraHosts",
            "GroupAdd",
            "Links",
            "SecurityOpt",
            "DeviceCgroupRules",
            "DeviceRequests",
            "MemorySwappiness",
            "PidsLimit",
            "MaskedPaths",
            "ReadonlyPaths",
        ],
    ),
    ("/Config", &["Cmd", "Volumes", "Entrypoint", "OnBuild"]),
    (
        "/NetworkSettings",
        &["SecondaryIPAddresses", "SecondaryIPv6Addresses"],
    ),
];

const ENDPOINT_NULLS: &[&str] = &["IPAMConfig", "Links", "Aliases", "DriverOpts", "DNSNames"];

/// Image inspect's keys dockerd always sends, null when unset (as [`INSPECT_NULLS`]).
const IMAGE_NULLS: &[(&str, &[&str])] = &[(
    "/Config",
    &["Env", "Cmd", "Volumes", "Entrypoint", "OnBuild", "Labels"],
)];

/// Sets each listed key the model left out to null.
fn add_nulls(v: &mut serde_json::Value, table: &[(&str, &[&str])]) {
    for (pointer, keys) in table {
        if let Some(o) = v.pointer_mut(pointer).and_then(|o| o.as_object_mut()) {
            for k in *keys {
                o.entry(*k).or_insert(serde_json::Value::Null);
            }
        }
    }
}

/// The container's overlay as Docker's `GraphDriver` (`LowerDir` topmost first, as
/// mounted; `MergedDir` is the mount point inside the container's own mount namespace).
fn graph_driver(dir: &std::path::Path) -> bollard::models::DriverData {
    let paths = skiff_runtime::paths::ContainerPaths::new(dir);
    let lower = std::fs::read(paths.config())
        .ok()
        .and_then(|b| serde_json::from_slice::<skiff_runtime::ContainerConfig>(&b).ok())
        .map(|c| {
            c.lower_dirs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        })
        .unwrap_or_default();
    let path = |p: std::path::PathBuf| p.display().to_string();
    bollard::models::DriverData {
        name: "overlay".to_string(),
        data: [
            ("LowerDir".to_string(), lower),
            ("MergedDir".to_string(), path(paths.rootfs())),
            ("UpperDir".to_string(), path(paths.upper())),
            ("WorkDir".to_string(), path(paths.work())),
        ]
        .into(),
    }
}

/// `docker inspect` as dockerd sends it: [`inspect_model`] with the keys dockerd sends as
/// null when unset.
pub fn inspect(
    r: &Record,
    st: &ContainerState,
    dir: &std::path::Path,
    restarting: bool,
) -> serde_json::Value {
    let mut v =
        serde_json::to_value(inspect_model(r, st, dir, restarting)).expect("inspect serializes");
    add_nulls(&mut v, INSPECT_NULLS);
    if let Some(nets) = v
        .pointer_mut("/NetworkSettings/Networks")
        .and_then(|n| n.as_object_mut())
    {
        for ep in nets.values_mut().filter_map(|e| e.as_object_mut()) {
            for k in ENDPOINT_NULLS {
                ep.entry(*k).or_insert(serde_json::Value::Null);
            }
        }
    }
    v
}

/// `docker inspect`'s model; `restarting` while the restart policy waits out its back-off.
pub fn inspect_model(
    r: &Record,
    st: &ContainerState,
    dir: &std::path::Path,
    restarting: bool,
) -> ContainerInspectResponse {
    let st = &super::status::Lifecycle::new(r, st).shown();
    let paused = st.status == Status::Running && skiff_runtime::control::is_frozen(dir);
    let status = match st.status {
        Status::Created => ContainerStateStatusEnum::CREATED,
        Status::Running if paused => ContainerStateStatusEnum::PAUSED,
        Status::Running => ContainerStateStatusEnum::RUNNING,
        Status::Exited if restarting => ContainerStateStatusEnum::RESTARTING,
        Status::Exited => ContainerStateStatusEnum::EXITED,
    };
    // A container that does not run has no endpoint, as with dockerd: its addresses show
    // while it runs only.
    let live = st.status == Status::Running;
    let attached = r.network.as_ref().filter(|_| live);
    let ip = attached.map(|n| n.ip_address.clone());
    let gateway = attached.map(|n| n.gateway.clone());
    let mut port_map = std::collections::HashMap::new();
    for p in ports(r, st.status == Status::Running) {
        let key = format!(
            "{}/{}",
            p.private_port,
            if p.typ == Some(PortTypeEnum::UDP) {
                "udp"
            } else {
                "tcp"
            }
        );
        let entry: &mut Option<Vec<bollard::models::PortBinding>> =
            port_map.entry(key).or_insert(None);
        // Exposed only (no address): `"5000/tcp": null`, as dockerd.
        if p.ip.is_none() {
            continue;
        }
        let list = entry.get_or_insert_with(Vec::new);
        if let Some(public) = p.public_port {
            list.push(bollard::models::PortBinding {
                host_ip: p.ip.clone(),
                host_port: Some(public.to_string()),
            });
        }
    }
    ContainerInspectResponse {
        id: Some(r.id.clone()),
        created: Some(rfc3339(DateTime::from_timestamp(r.created, 0))),
        path: Some(r.path.clone()),
        args: Some(r.args.clone()),
        state: Some(ApiState {
            status: Some(status),
            running: Some(st.status == Status::Running),
            paused: Some(paused),
            restarting: Some(restarting),
            oom_killed: Some(st.oom_killed),
            dead: Some(false),
            pid: Some(if st.status == Status::Running {
                st.pid.unwrap_or(0) as i64
            } else {
                0
            }),
            exit_code: Some(st.exit_code.unwrap_or(0) as i64),
            error: Some(st.error.clone().unwrap_or_default()),
            started_at: Some(rfc3339(st.started_at)),
            finished_at: Some(rfc3339(st.finished_at)),
            health: None,
        }),
        image: Some(r.image_id.clone()),
        name: Some(format!("/{}", r.name)),
        restart_count: Some(r.restart_count),
        driver: Some("overlay".to_string()),
        graph_driver: Some(graph_driver(dir)),
        mount_label: Some(String::new()),
        process_label: Some(String::new()),
        app_armor_profile: Some(String::new()),
        platform: Some("linux".to_string()),
        log_path: Some(dir.join("container.log").display().to_string()),
        hostname_path: Some(dir.join("hostname").display().to_string()),
        hosts_path: Some(dir.join("hosts").display().to_string()),
        resolv_conf_path: Some(dir.join("resolv.conf").display().to_string()),
        config: Some(super::spec::docker_config(&r.spec, &r.image)),
        host_config: Some(super::spec::docker_host_config(&r.spec.host)),
        mounts: Some(mounts(r)),
        network_settings: Some(NetworkSettings {
            bridge: Some(String::new()),
            sandbox_id: Some(String::new()),
            sandbox_key: Some(String::new()),
            hairpin_mode: Some(false),
            link_local_ipv6_address: Some(String::new()),
            link_local_ipv6_prefix_len: Some(0),
            endpoint_id: Some(
                attached
                    .filter(|n| !n.ip_address.is_empty())
                    .map(|_| super::network::endpoint_id(&r.id, "bridge"))
                    .unwrap_or_default(),
            ),
            ip_address: Some(ip.unwrap_or_default()),
            // The top-level fields describe the default bridge only (0 on other networks).
            ip_prefix_len: Some(
                networks(r, live)
                    .get("bridge")
                    .filter(|e| e.ip_address.as_deref().is_some_and(|a| !a.is_empty()))
                    .and_then(|e| e.ip_prefix_len)
                    .unwrap_or(0),
            ),
            gateway: Some(gateway.unwrap_or_default()),
            mac_address: Some(attached.map(|n| n.mac_address.clone()).unwrap_or_default()),
            global_ipv6_address: Some(String::new()),
            global_ipv6_prefix_len: Some(0),
            ipv6_gateway: Some(String::new()),
            ports: Some(port_map),
            networks: Some(networks(r, live)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Image inspect as dockerd sends it: the model with `Container` (API < 1.45; skiff's images
/// come from no container) and `Config`'s unset keys null.
pub fn image_inspect(i: &bollard::models::ImageInspect) -> serde_json::Value {
    let mut v = serde_json::to_value(i).expect("image inspect serializes");
    v["Container"] = serde_json::Value::String(String::new());
    add_nulls(&mut v, IMAGE_NULLS);
    v
}

/// An image's OCI config as Docker's image-inspect `Config`, every field present with
/// dockerd's value when the image sets none.
pub fn image_config(cfg: &oci_spec::image::Config) -> bollard::models::ImageConfig {
    let set = |keys: &Option<Vec<String>>| -> Option<std::collections::HashMap<String, std::collections::HashMap<(), ()>>> {
        keys.as_ref()
            .map(|k| k.iter().map(|k| (k.clone(), Default::default())).collect())
    };
    bollard::models::ImageConfig {
        hostname: Some(String::new()),
        domainname: Some(String::new()),
        user: Some(cfg.user().clone().unwrap_or_default()),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        exposed_ports: set(cfg.exposed_ports()),
        tty: Some(false),
        open_stdin: Some(false),
        stdin_once: Some(false),
        env: cfg.env().clone(),
        cmd: cfg.cmd().clone(),
        image: Some(String::new()),
        volumes: set(cfg.volumes()),
        working_dir: Some(cfg.working_dir().clone().unwrap_or_default()),
        entrypoint: cfg.entrypoint().clone(),
        on_build: None,
        labels: cfg.labels().clone(),
        stop_signal: cfg.stop_signal().clone(),
        ..Default::default()
    }
}
