//! `skiff daemon`: one long-lived process owning the image store, the FUSE mounts and the
//! containers, serving the Docker Engine API on a Unix socket.

pub mod api_containers;
pub mod api_exec;
pub mod api_images;
pub mod api_profiles;
pub mod api_system;
pub mod attach_bridge;
pub mod changes;
pub mod convert;
pub mod error;
pub mod exec_bridge;
pub mod hijack;
pub mod logs_stream;
pub mod mounts;
pub mod names;
pub mod network;
pub mod paths;
pub mod profiles;
pub mod records;
pub mod resolve;
pub mod server;
pub mod state;
pub mod state_images;
pub mod views;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::args::DaemonArgs;
use paths::{create_private_dir, Paths};

pub async fn run(args: DaemonArgs, exec_root: PathBuf, socket: PathBuf) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if !nix::unistd::geteuid().is_root() {
        bail!("skiff daemon must run as root (it mounts FUSE and overlay filesystems and creates namespaces and cgroups)");
    }
    let paths = Paths::new(args.data_root.clone(), exec_root);
    for d in paths.all_dirs() {
        create_private_dir(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    let daemon = Arc::new(state::Daemon::open(paths, &args).await?);
    let listener = server::bind(&socket).await?;
    tracing::info!(socket = %socket.display(), data_root = %args.data_root.display(), "skiff daemon listening");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutting down");
    };
    server::serve(listener, daemon.clone(), shutdown).await?;
    daemon.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
