//! `skiff volume create|ls|inspect|rm|prune`.

use std::collections::HashMap;

use anyhow::{bail, Result};
use bollard::volume::{
    CreateVolumeOptions, ListVolumesOptions, PruneVolumesOptions, RemoveVolumeOptions,
};
use bollard::Docker;

use super::format::human_size;
use super::template::Inspector;
use crate::args::{NamesInspectArgs, PruneArgs, VolumeCreateArgs, VolumeLsArgs, VolumeRmArgs};
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

pub async fn create(docker: &Docker, args: &VolumeCreateArgs) -> Result<()> {
    let v = docker
        .create_volume(CreateVolumeOptions {
            name: args.name.clone().unwrap_or_default(),
            driver: args.driver.clone(),
            driver_opts: key_values(&args.opts, "--opt")?,
            labels: key_values(&args.labels, "--label")?,
        })
        .await?;
    println!("{}", v.name);
    Ok(())
}

pub async fn ls(docker: &Docker, args: &VolumeLsArgs) -> Result<()> {
    let list = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: super::format::filter_map(&args.filters)?,
        }))
        .await?;
    let vols = list.volumes.unwrap_or_default();
    if args.quiet {
        for v in vols {
            println!("{}", v.name);
        }
        return Ok(());
    }
    if let Some(format) = &args.format {
        let rows: Vec<serde_json::Value> = vols
            .iter()
            .map(|v| {
                serde_json::json!({
                    "Name": v.name,
                    "Driver": v.driver,
                    "Scope": v.scope.map(|s| s.to_string()).unwrap_or_else(|| "local".into()),
                    "Mountpoint": v.mountpoint,
                    "Labels": super::list_format::joined_labels(&v.labels),
                    "Label": v.labels,
                    "Links": "N/A",
                    "Size": "N/A",
                })
            })
            .collect();
        let columns = super::list_format::Columns {
            header: serde_json::json!({
                "Name": "VOLUME NAME",
                "Driver": "DRIVER",
                "Scope": "SCOPE",
                "Mountpoint": "MOUNTPOINT",
                "Labels": "LABELS",
                "Label": {},
                "Links": "LINKS",
                "Size": "SIZE",
            }),
            default_table: "{{.Driver}}\t{{.Name}}",
        };
        return super::list_format::print(format, &rows, &columns);
    }
    println!("DRIVER    VOLUME NAME");
    for v in vols {
        println!("{:<10}{}", v.driver, v.name);
    }
    Ok(())
}

pub async fn inspect(docker: &Docker, args: &NamesInspectArgs) -> Result<()> {
    let mut out = Inspector::new(args.format.as_deref())?;
    for n in &args.names {
        out.add_answer(docker.inspect_volume(n).await)?;
    }
    out.finish()
}

pub async fn rm(docker: &Docker, args: &VolumeRmArgs) -> Result<()> {
    let mut failed = false;
    for n in &args.names {
        match docker
            .remove_volume(n, Some(RemoveVolumeOptions { force: args.force }))
            .await
        {
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

pub async fn prune(docker: &Docker, args: &PruneArgs) -> Result<()> {
    let mut filters = HashMap::new();
    if args.all {
        filters.insert("all".to_string(), vec!["true".to_string()]);
    }
    let r = docker
        .prune_volumes(Some(PruneVolumesOptions { filters }))
        .await?;
    let deleted = r.volumes_deleted.unwrap_or_default();
    if !deleted.is_empty() {
        println!("Deleted Volumes:");
        for v in deleted {
            println!("{v}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        human_size(r.space_reclaimed.unwrap_or(0))
    );
    Ok(())
}
