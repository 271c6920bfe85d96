//! Docker's JSON views of a container (`ps` summaries, `inspect`), built from the daemon's
//! record and the runtime's live state.

use bollard::models::{
    ContainerInspectResponse, ContainerState as ApiState, ContainerStateStatusEnum,
    ContainerSummary, NetworkSettings, Port, PortTypeEnum,
};
use chrono::{DateTime, Utc};
use skiff_runtime::state::{ContainerState, Status};

use super::records::Record;
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

/// Published ports from the record, as Docker's `Port` list.
pub fn ports(r: &Record) -> Vec<Port> {
    let mut out = Vec::new();
    if let Some(bindings) = r
        .network
        .as_ref()
        .and_then(|n| n.get("Ports"))
        .and_then(|p| p.as_array())
    {
        for b in bindings {
            let private = b.get("PrivatePort").and_then(|v| v.as_u64()).unwrap_or(0) as u16;
            let public = b
                .get("PublicPort")
                .and_then(|v| v.as_u64())
                .map(|v| v as u16);
            let ip = b.get("IP").and_then(|v| v.as_str()).map(|s| s.to_string());
            let udp = b.get("Type").and_then(|v| v.as_str()) == Some("udp");
            out.push(Port {
                ip,
                private_port: private,
                public_port: public,
                typ: Some(if udp {
                    PortTypeEnum::UDP
                } else {
                    PortTypeEnum::TCP
                }),
            });
        }
    }
    out
}

pub fn summary(r: &Record, st: &ContainerState, now: DateTime<Utc>) -> ContainerSummary {
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
        state: Some(state_word(st).to_string()),
        status: Some(status_text(st, now)),
        ports: Some(ports(r)),
        labels: r.config.labels.clone(),
        ..Default::default()
    }
}

fn rfc3339(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string())
}

pub fn inspect(r: &Record, st: &ContainerState, dir: &std::path::Path) -> ContainerInspectResponse {
    let status = match st.status {
        Status::Created => ContainerStateStatusEnum::CREATED,
        Status::Running => ContainerStateStatusEnum::RUNNING,
        Status::Exited => ContainerStateStatusEnum::EXITED,
    };
    let ip = r
        .network
        .as_ref()
        .and_then(|n| n.get("IPAddress"))
        .and_then(|v| v.as_str())
        .map(|s| s.to_string());
    let gateway = r
        .network
        .as_ref()
        .and_then(|n| n.get("Gateway"))
        .and_then(|v| v.as_str())
        .map(|s| s.to_string());
    let mut port_map = std::collections::HashMap::new();
    for p in ports(r) {
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
            port_map.entry(key).or_insert_with(|| Some(Vec::new()));
        if let (Some(list), Some(public)) = (entry.as_mut(), p.public_port) {
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
            paused: Some(false),
            restarting: Some(false),
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
        platform: Some("linux".to_string()),
        log_path: Some(dir.join("container.log").display().to_string()),
        hostname_path: Some(dir.join("hostname").display().to_string()),
        hosts_path: Some(dir.join("hosts").display().to_string()),
        resolv_conf_path: Some(dir.join("resolv.conf").display().to_string()),
        config: Some(r.config.clone()),
        host_config: Some(r.host_config.clone()),
        network_settings: Some(NetworkSettings {
            ip_address: ip,
            gateway,
            ports: (!port_map.is_empty()).then_some(port_map),
            ..Default::default()
        }),
        ..Default::default()
    }
}
