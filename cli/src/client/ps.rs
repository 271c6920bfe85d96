//! `ps`: Docker's container table.

use anyhow::Result;
use bollard::container::ListContainersOptions;
use bollard::models::ContainerSummary;
use bollard::Docker;

use super::format::{ago, ellipsis, print_table, short_id};
use super::list_format::{self, Columns};
use crate::args::PsArgs;

pub async fn ps(docker: &Docker, args: &PsArgs) -> Result<()> {
    let mut list = docker
        .list_containers(Some(ListContainersOptions::<String> {
            all: args.all || args.latest,
            limit: args.latest.then_some(1),
            filters: super::format::filter_map(&args.filters)?,
            ..Default::default()
        }))
        .await?;
    list.sort_by_key(|c| std::cmp::Reverse(c.created.unwrap_or(0)));
    if let (Some(format), false) = (&args.format, args.quiet) {
        let rows: Vec<serde_json::Value> = list.iter().map(|c| fields(c, args.no_trunc)).collect();
        let columns = Columns {
            header: header(),
            default_table: DEFAULT_TABLE,
        };
        return list_format::print(format, &rows, &columns);
    }
    if args.quiet {
        for c in &list {
            let id = c.id.clone().unwrap_or_default();
            println!("{}", if args.no_trunc { id } else { short_id(&id) });
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list.iter().map(|c| row(c, args.no_trunc)).collect();
    print_table(
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ],
        &rows,
    );
    Ok(())
}

fn row(c: &ContainerSummary, no_trunc: bool) -> Vec<String> {
    let id = c.id.clone().unwrap_or_default();
    let command = c.command.clone().unwrap_or_default();
    let command = if no_trunc {
        command
    } else {
        ellipsis(&command, 20)
    };
    let names = c
        .names
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|n| n.trim_start_matches('/').to_string())
        .collect::<Vec<_>>()
        .join(",");
    vec![
        if no_trunc { id } else { short_id(&id) },
        c.image.clone().unwrap_or_default(),
        format!("\"{command}\""),
        ago(c.created.unwrap_or(0)),
        c.status.clone().unwrap_or_default(),
        ports(c),
        names,
    ]
}

const DEFAULT_TABLE: &str =
    "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

/// The docker CLI's `ps` formatting fields for one container (all strings, as it prints
/// them), and `Label`, the labels as a map for `{{index .Label "k"}}` (docker's
/// `{{.Label "k"}}` is a Go method call, which a template over JSON has no way to make).
fn fields(c: &ContainerSummary, no_trunc: bool) -> serde_json::Value {
    let cells = row(c, no_trunc);
    let labels = c.labels.clone().unwrap_or_default();
    let mounts: Vec<String> = c
        .mounts
        .iter()
        .flatten()
        .filter_map(|m| m.name.clone().or_else(|| m.source.clone()))
        .collect();
    let networks: Vec<String> = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|n| n.keys().cloned().collect())
        .unwrap_or_default();
    let created = chrono::DateTime::from_timestamp(c.created.unwrap_or(0), 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
        .unwrap_or_default();
    serde_json::json!({
        "ID": cells[0],
        "Image": cells[1],
        "Command": cells[2],
        "CreatedAt": created,
        "RunningFor": cells[3],
        "Status": cells[4],
        "Ports": cells[5],
        "Names": cells[6],
        "State": c.state.clone().unwrap_or_default(),
        "Labels": list_format::joined_labels(&labels),
        "Label": labels,
        "Mounts": mounts.join(","),
        "Networks": networks.join(","),
        "Size": "",
    })
}

/// The header row of `table`: each field's column name, as the docker CLI prints it.
fn header() -> serde_json::Value {
    serde_json::json!({
        "ID": "CONTAINER ID",
        "Image": "IMAGE",
        "Command": "COMMAND",
        "CreatedAt": "CREATED AT",
        "RunningFor": "CREATED",
        "Status": "STATUS",
        "Ports": "PORTS",
        "Names": "NAMES",
        "State": "STATE",
        "Labels": "LABELS",
        "Label": {},
        "Mounts": "MOUNTS",
        "Networks": "NETWORKS",
        "Size": "SIZE",
    })
}

/// "0.0.0.0:8080->80/tcp, 443/tcp", like Docker's PORTS column.
pub fn ports(c: &ContainerSummary) -> String {
    let mut out: Vec<String> = Vec::new();
    for p in c.ports.clone().unwrap_or_default() {
        let proto = p
            .typ
            .map(|t| t.to_string())
            .unwrap_or_else(|| "tcp".to_string());
        match (p.ip, p.public_port) {
            (Some(ip), Some(public)) => {
                out.push(format!("{ip}:{public}->{}/{proto}", p.private_port))
            }
            _ => out.push(format!("{}/{proto}", p.private_port)),
        }
    }
    out.join(", ")
}
