//! The daemon's containerd remote snapshotter: containerd's Snapshots API on
//! `<exec-root>/snapshotter.sock` (or `snapshotter-socket`), its snapshots under
//! `<data-root>/snapshotter`, its lazy layers from the daemon's own store and chunk cache.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use super::services::Daemon;

/// The running snapshotter service.
pub struct Running {
    snapshotter: Arc<skiff_snapshotter::SkiffSnapshotter>,
    task: tokio::task::JoinHandle<()>,
}

/// Opens the snapshotter and serves it on `socket` until `stop` is cancelled.
pub async fn start(daemon: &Daemon, socket: &Path, stop: CancellationToken) -> Result<Running> {
    let root = daemon.paths.data_root.join("snapshotter");
    let snapshotter = Arc::new(
        skiff_snapshotter::SkiffSnapshotter::open(
            &root,
            daemon.images.store().clone(),
            Some(std::env::current_exe().context("finding our own binary")?),
        )
        .await
        .with_context(|| format!("opening the containerd snapshotter in {}", root.display()))?,
    );
    let serving = snapshotter.clone();
    let path = socket.to_path_buf();
    // Bound here so a bad path fails the daemon's start, not a background task.
    let listener = skiff_snapshotter::bind(socket)
        .with_context(|| format!("serving the containerd snapshotter on {}", socket.display()))?;
    let task = tokio::spawn(async move {
        let stopped = async move { stop.cancelled().await };
        if let Err(e) = skiff_snapshotter::serve(&path, listener, serving, stopped).await {
            tracing::error!(socket = %path.display(), error = %e, "containerd snapshotter stopped");
        }
    });
    tracing::info!(socket = %socket.display(), "containerd snapshotter listening");
    Ok(Running { snapshotter, task })
}

impl Running {
    /// Waits for the server to end; with `keep` (live restore) the lazy layers stay mounted
    /// for the next daemon, else they are unmounted.
    pub async fn stop(self, keep: bool) {
        let _ = self.task.await;
        self.snapshotter.shutdown(keep);
    }
}
