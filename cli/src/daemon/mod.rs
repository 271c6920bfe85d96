//! `skiff daemon`: one long-lived process owning the image store, the FUSE mounts and the
//! containers, serving the Docker Engine API on a Unix socket.

pub mod api_archive;
pub mod api_build;
pub mod api_containers;
pub mod api_containers_fs;
pub mod api_containers_ops;
pub mod api_events;
pub mod api_exec;
pub mod api_images;
pub mod api_networks;
pub mod api_profiles;
pub mod api_system;
pub mod api_volumes;
pub mod attach_bridge;
pub mod build;
pub mod changes;
pub mod claims;
pub mod config;
pub mod container_filter;
pub mod container_fs;
pub mod containers;
pub mod containers_fs;
pub mod containers_ops;
pub mod containers_run;
pub mod convert;
pub mod create_fields;
pub mod error;
pub mod etc_files;
pub mod events;
pub mod exec;
pub mod exec_bridge;
pub mod filters;
pub mod health;
pub mod hijack;
pub mod host_info;
pub mod image_filter;
pub mod image_history;
pub mod images;
pub mod inode_spread;
pub mod links;
pub mod logs_stream;
pub mod monitor;
pub mod mount_plan;
pub mod mounts;
pub mod names;
pub mod network;
pub mod networks;
pub mod paths;
pub mod profiles;
pub mod query_bool;
pub mod reclaim;
pub mod record;
pub mod records;
pub mod resolve;
pub mod runtime_config;
pub mod server;
pub mod services;
pub mod snapshotter;
pub mod soci_index;
pub mod spec;
pub mod stats_view;
pub mod status;
pub mod time_arg;
pub mod views;
pub mod volume_mount;
pub mod volumes;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::args::DaemonArgs;
use paths::{create_private_dir, Paths};

/// Runs the daemon, listening on every `hosts` socket (`unix:///path` or a path; none:
/// `<exec-root>/skiff.sock`).
pub async fn run(args: DaemonArgs, exec_root: Option<PathBuf>, hosts: Vec<String>) -> Result<()> {
    let explicit = (args.config_file != std::path::Path::new(config::DEFAULT_CONFIG_FILE))
        .then_some(args.config_file.as_path());
    let (file, file_path) = config::read_file(explicit)?;
    let cfg = config::resolve(&args, exec_root.as_deref(), file, file_path)?;
    // `debug` (flag or file) is explicit and wins over RUST_LOG.
    let filter = if cfg.debug {
        tracing_subscriber::EnvFilter::new("info,skiff=debug,skiff_runtime=debug")
    } else {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if !nix::unistd::geteuid().is_root() {
        bail!("skiff daemon must run as root (it mounts FUSE and overlay filesystems and creates namespaces and cgroups)");
    }
    // `-H` flags, else the file's `hosts`, else the default.
    let hosts = if hosts.is_empty() {
        cfg.hosts.clone()
    } else {
        hosts
    };
    let sockets = if hosts.is_empty() {
        vec![cfg.exec_root.join("skiff.sock")]
    } else {
        hosts
            .iter()
            .map(|h| crate::client::connect::socket_path(Some(h), &cfg.exec_root))
            .collect::<Result<Vec<_>>>()?
    };
    if let Some(f) = &cfg.file {
        tracing::info!(file = %f.display(), "read daemon settings");
    }
    let paths = Paths::new(cfg.data_root.clone(), cfg.exec_root.clone());
    for d in paths.all_dirs() {
        create_private_dir(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    // Containers' files are created and deleted at a high rate: one block group each.
    let containers = paths.containers_dir();
    if let Err(e) = inode_spread::spread_subdirs(&containers) {
        // Only slower container churn on ext4 without a journal: not a reason to stop.
        tracing::warn!(dir = %containers.display(), "cannot set FS_TOPDIR_FL: {e}");
    }
    let daemon = Arc::new(services::Daemon::open(paths, &cfg).await?);
    let stop = tokio_util::sync::CancellationToken::new();
    // Before the API sockets: once the daemon answers, the snapshotter's socket is there.
    let snapshotter = match &cfg.snapshotter_socket {
        Some(socket) => Some(snapshotter::start(&daemon, socket, stop.clone()).await?),
        None => None,
    };
    let mut listeners = Vec::new();
    for socket in &sockets {
        listeners.push(server::bind(socket).await?);
        tracing::info!(socket = %socket.display(), data_root = %cfg.data_root.display(), "skiff daemon listening");
    }
    let signals = stop.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutting down");
        signals.cancel();
    });
    let servers = listeners.into_iter().map(|listener| {
        let stop = stop.clone();
        server::serve(
            listener,
            daemon.clone(),
            async move { stop.cancelled().await },
        )
    });
    futures::future::try_join_all(servers).await?;
    if let Some(s) = snapshotter {
        s.stop(daemon.live_restore).await;
    }
    daemon.shutdown().await;
    for socket in &sockets {
        let _ = std::fs::remove_file(socket);
    }
    Ok(())
}
