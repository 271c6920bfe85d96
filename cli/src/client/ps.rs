//! `ps`: Docker's container table.

use anyhow::Result;
use bollard::container::ListContainersOptions;
use bollard::models::ContainerSummary;
use bollard::Docker;

use super::format::{ago, ellipsis, print_table, short_id};
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
