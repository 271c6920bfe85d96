//! `skiff network create|ls|inspect|rm|connect|disconnect|prune`.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{bail, Result};
use bollard::models::{EndpointIpamConfig, EndpointSettings, Ipam, IpamConfig};
use bollard::network::{
    ConnectNetworkOptions, CreateNetworkOptions, DisconnectNetworkOptions, InspectNetworkOptions,
    ListNetworksOptions, PruneNetworksOptions,
};
use bollard::Docker;

use super::template::Inspector;
use crate::args::{
    NamesInspectArgs, NetworkConnectArgs, NetworkCreateArgs, NetworkDisconnectArgs, NetworkLsArgs,
    NetworkNamesArgs, NetworkPruneArgs,
};
use crate::exit::Exit;

fn key_values(list: &[String], what: &str) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for l in list {
        match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.insert(k.to_string(), v.to_string()),
            None if !l.is_empty() => out.insert(l.clone(), String::new()),
            _ => bail!("invalid {what} {l:?}: expected KEY=VALUE"),
        };
    }
    Ok(out)
}

/// `name=value` filters into Docker's map.
fn filters(list: &[String]) -> Result<HashMap<String, Vec<String>>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for f in list {
        let Some((k, v)) = f.split_once('=') else {
            bail!("invalid filter {f:?}: expected NAME=VALUE");
        };
        out.entry(k.to_string()).or_default().push(v.to_string());
    }
    Ok(out)
}

pub async fn create(docker: &Docker, args: &NetworkCreateArgs) -> Result<()> {
    let ipam = Ipam {
        driver: Some("default".into()),
        config: args.subnet.as_ref().map(|s| {
            vec![IpamConfig {
                subnet: Some(s.clone()),
                gateway: args.gateway.clone(),
                ..Default::default()
            }]
        }),
        options: None,
    };
    if args.gateway.is_some() && args.subnet.is_none() {
        bail!("--gateway needs --subnet");
    }
    let r = docker
        .create_network(CreateNetworkOptions {
            name: args.name.clone(),
            check_duplicate: true,
            driver: args.driver.clone(),
            internal: args.internal,
            attachable: args.attachable,
            ingress: false,
            ipam,
            enable_ipv6: false,
            options: key_values(&args.opts, "--opt")?,
            labels: key_values(&args.labels, "--label")?,
        })
        .await?;
    println!("{}", r.id);
    Ok(())
}

pub async fn ls(docker: &Docker, args: &NetworkLsArgs) -> Result<()> {
    let list = docker
        .list_networks(Some(ListNetworksOptions {
            filters: filters(&args.filters)?,
        }))
        .await?;
    let id = |n: &bollard::models::Network| {
        let id = n.id.clone().unwrap_or_default();
        if args.no_trunc {
            id
        } else {
            id.chars().take(12).collect()
        }
    };
    if args.quiet {
        for n in &list {
            println!("{}", id(n));
        }
        return Ok(());
    }
    if let Some(format) = &args.format {
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|n| {
                let labels = n.labels.clone().unwrap_or_default();
                serde_json::json!({
                    "ID": id(n),
                    "Name": n.name.clone().unwrap_or_default(),
                    "Driver": n.driver.clone().unwrap_or_default(),
                    "Scope": n.scope.clone().unwrap_or_default(),
                    "IPv6": n.enable_ipv6.unwrap_or(false).to_string(),
                    "Internal": n.internal.unwrap_or(false).to_string(),
                    "Labels": super::list_format::joined_labels(&labels),
                    "Label": labels,
                    "CreatedAt": n.created.clone().unwrap_or_default(),
                })
            })
            .collect();
        let columns = super::list_format::Columns {
            header: serde_json::json!({
                "ID": "NETWORK ID",
                "Name": "NAME",
                "Driver": "DRIVER",
                "Scope": "SCOPE",
                "IPv6": "IPV6",
                "Internal": "INTERNAL",
                "Labels": "LABELS",
                "Label": {},
                "CreatedAt": "CREATED AT",
            }),
            default_table: "{{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
        };
        return super::list_format::print(format, &rows, &columns);
    }
    let mut rows = Vec::new();
    for n in &list {
        rows.push(vec![
            id(n),
            n.name.clone().unwrap_or_default(),
            n.driver.clone().unwrap_or_default(),
            n.scope.clone().unwrap_or_default(),
        ]);
    }
    super::format::print_table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows);
    Ok(())
}

pub async fn inspect(docker: &Docker, args: &NamesInspectArgs) -> Result<()> {
    let mut out = Inspector::new(args.format.as_deref())?;
    for n in &args.names {
        out.add_answer(
            docker
                .inspect_network(n, None::<InspectNetworkOptions<String>>)
                .await,
        )?;
    }
    out.finish()
}

pub async fn rm(docker: &Docker, args: &NetworkNamesArgs) -> Result<()> {
    let mut failed = false;
    for n in &args.names {
        match docker.remove_network(n).await {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("Error response from daemon: {}", super::error_message(&e));
                failed = true;
            }
        }
    }
    if failed {
        return Err(Exit(1).into());
    }
    Ok(())
}

pub async fn connect(docker: &Docker, args: &NetworkConnectArgs) -> Result<()> {
    docker
        .connect_network(
            &args.network,
            ConnectNetworkOptions {
                container: args.container.clone(),
                endpoint_config: EndpointSettings {
                    aliases: (!args.alias.is_empty()).then(|| args.alias.clone()),
                    ipam_config: args.ip.clone().map(|ip| EndpointIpamConfig {
                        ipv4_address: Some(ip),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            },
        )
        .await?;
    Ok(())
}

pub async fn disconnect(docker: &Docker, args: &NetworkDisconnectArgs) -> Result<()> {
    docker
        .disconnect_network(
            &args.network,
            DisconnectNetworkOptions {
                container: args.container.clone(),
                force: args.force,
            },
        )
        .await?;
    Ok(())
}

pub async fn prune(docker: &Docker, args: &NetworkPruneArgs) -> Result<()> {
    if !args.force {
        print!("WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    let r = docker
        .prune_networks(Some(PruneNetworksOptions {
            filters: filters(&args.filters)?,
        }))
        .await?;
    let deleted = r.networks_deleted.unwrap_or_default();
    if !deleted.is_empty() {
        println!("Deleted Networks:");
        for n in deleted {
            println!("{n}");
        }
    }
    Ok(())
}
