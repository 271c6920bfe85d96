//! `system prune`, `system df`, `info`, `version`, `image prune`.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Result;
use bollard::container::PruneContainersOptions;
use bollard::image::PruneImagesOptions;
use bollard::Docker;

use super::format::{human_size, print_table};
use crate::args::PruneArgs;

fn confirm(what: &str) -> Result<bool> {
    print!("WARNING! This will remove:\n{what}\nAre you sure you want to continue? [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// Removes stopped containers, unused images (dangling, or all unused with `-a`) and the
/// cache chunks no image references; prints what was reclaimed.
pub async fn prune(docker: &Docker, args: &PruneArgs) -> Result<()> {
    let images = if args.all {
        "  - all images without at least one container associated to them"
    } else {
        "  - all dangling images"
    };
    if !args.force
        && !confirm(&format!(
            "  - all stopped containers\n  - all networks not used by at least one container\n{images}\n  - unreferenced cache chunks"
        ))?
    {
        return Ok(());
    }
    let c = docker
        .prune_containers(None::<PruneContainersOptions<String>>)
        .await?;
    let n = docker
        .prune_networks(None::<bollard::network::PruneNetworksOptions<String>>)
        .await?;
    let mut filters = HashMap::new();
    if args.all {
        filters.insert("dangling".to_string(), vec!["false".to_string()]);
    }
    let i = docker
        .prune_images(Some(PruneImagesOptions { filters }))
        .await?;
    let networks = n.networks_deleted.unwrap_or_default();
    if !networks.is_empty() {
        println!("Deleted Networks:");
        for name in networks {
            println!("{name}");
        }
        println!();
    }
    let reclaimed = c.space_reclaimed.unwrap_or(0) + i.space_reclaimed.unwrap_or(0);
    let deleted = c.containers_deleted.unwrap_or_default();
    if !deleted.is_empty() {
        println!("Deleted Containers:");
        for id in deleted {
            println!("{id}");
        }
        println!();
    }
    let images = i.images_deleted.unwrap_or_default();
    if !images.is_empty() {
        println!("Deleted Images:");
        for it in images {
            if let Some(u) = it.untagged {
                println!("untagged: {u}");
            }
            if let Some(d) = it.deleted {
                println!("deleted: {d}");
            }
        }
        println!();
    }
    // The daemon's image prune also drops cache chunks no image references.
    println!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(())
}

pub async fn image_prune(docker: &Docker, args: &PruneArgs) -> Result<()> {
    let mut filters = HashMap::new();
    if args.all {
        filters.insert("dangling".to_string(), vec!["false".to_string()]);
    }
    let i = docker
        .prune_images(Some(PruneImagesOptions { filters }))
        .await?;
    for it in i.images_deleted.unwrap_or_default() {
        if let Some(u) = it.untagged {
            println!("untagged: {u}");
        }
        if let Some(d) = it.deleted {
            println!("deleted: {d}");
        }
    }
    println!(
        "Total reclaimed space: {}",
        human_size(i.space_reclaimed.unwrap_or(0))
    );
    Ok(())
}

pub async fn df(docker: &Docker) -> Result<()> {
    let d = docker.df().await?;
    let images = d.images.unwrap_or_default();
    let containers = d.containers.unwrap_or_default();
    // Distinct layers once (the daemon's `LayersSize`); reclaimable: all but the bytes
    // only images in use have (docker's arithmetic).
    let image_size: i64 = d
        .layers_size
        .unwrap_or_else(|| images.iter().map(|i| i.size).sum());
    let image_used: i64 = images
        .iter()
        .filter(|i| i.containers > 0 && i.size >= 0 && i.shared_size >= 0)
        .map(|i| i.size - i.shared_size)
        .sum();
    let active_images = images.iter().filter(|i| i.containers > 0).count();
    let running = containers
        .iter()
        .filter(|c| c.state.as_deref() == Some("running"))
        .count();
    let container_size: i64 = containers.iter().map(|c| c.size_rw.unwrap_or(0)).sum();
    let cache = d.build_cache.unwrap_or_default();
    let cache_size: i64 = cache.iter().map(|c| c.size.unwrap_or(0)).sum();
    print_table(
        &["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
        &[
            vec![
                "Images".into(),
                images.len().to_string(),
                active_images.to_string(),
                human_size(image_size),
                human_size((image_size - image_used).max(0)),
            ],
            vec![
                "Containers".into(),
                containers.len().to_string(),
                running.to_string(),
                human_size(container_size),
                human_size(container_size),
            ],
            vec![
                "Chunk Cache".into(),
                cache.len().to_string(),
                "0".into(),
                human_size(cache_size),
                human_size(cache_size),
            ],
        ],
    );
    Ok(())
}

pub async fn info(docker: &Docker) -> Result<()> {
    let i = docker.info().await?;
    println!("Server:");
    println!(" Containers: {}", i.containers.unwrap_or(0));
    println!("  Running: {}", i.containers_running.unwrap_or(0));
    println!("  Stopped: {}", i.containers_stopped.unwrap_or(0));
    println!(" Images: {}", i.images.unwrap_or(0));
    println!(" Server Version: {}", i.server_version.unwrap_or_default());
    println!(" Storage Driver: {}", i.driver.unwrap_or_default());
    for line in i.driver_status.unwrap_or_default() {
        if let [k, v] = line.as_slice() {
            println!("  {k}: {v}");
        }
    }
    println!(
        " Cgroup Version: {}",
        i.cgroup_version.map(|v| v.to_string()).unwrap_or_default()
    );
    println!(" Kernel Version: {}", i.kernel_version.unwrap_or_default());
    println!(
        " Live Restore Enabled: {}",
        i.live_restore_enabled.unwrap_or(false)
    );
    println!(
        " Docker Root Dir: {}",
        i.docker_root_dir.unwrap_or_default()
    );
    if let Some(rc) = i.registry_config {
        let mut insecure: Vec<String> = rc
            .index_configs
            .unwrap_or_default()
            .into_values()
            .filter(|c| c.secure == Some(false))
            .filter_map(|c| c.name)
            .collect();
        insecure.sort();
        insecure.extend(rc.insecure_registry_cidrs.unwrap_or_default());
        println!(" Insecure Registries:");
        for r in insecure {
            println!("  {r}");
        }
        let mirrors = rc.mirrors.unwrap_or_default();
        if !mirrors.is_empty() {
            println!(" Registry Mirrors:");
            for m in mirrors {
                println!("  {m}");
            }
        }
    }
    Ok(())
}

pub async fn version(docker: Result<Docker>) -> Result<()> {
    println!("Client:");
    println!(" Version:     {}", env!("CARGO_PKG_VERSION"));
    println!(" API version: 1.43");
    let d = match docker {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e:#}");
            return Err(crate::exit::Exit(1).into());
        }
    };
    {
        let v = d.version().await?;
        println!("\nServer: skiff");
        println!(" Engine:");
        println!("  Version:     {}", v.version.unwrap_or_default());
        println!("  API version: {}", v.api_version.unwrap_or_default());
        println!(
            "  OS/Arch:     {}/{}",
            v.os.unwrap_or_default(),
            v.arch.unwrap_or_default()
        );
    }
    Ok(())
}
