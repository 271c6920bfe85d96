//! Serving the Snapshots gRPC service on a Unix socket (containerd's `proxy_plugins`).

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use containerd_snapshots::tonic::transport::Server;

use crate::error::{Result, SnapshotError};
use crate::service::SkiffSnapshotter;

/// Binds `socket` (mode 0660; a stale socket file is replaced; its directory created).
/// Call inside a tokio runtime. Errors name the socket.
pub fn bind(socket: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| SnapshotError::io(dir, e))?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SnapshotError::io(socket, e)),
    }
    let listener =
        tokio::net::UnixListener::bind(socket).map_err(|e| SnapshotError::io(socket, e))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| SnapshotError::io(socket, e))?;
    Ok(listener)
}

/// Serves `snapshotter` on `listener` (bound at `socket`, removed at the end) until
/// `shutdown` completes.
pub async fn serve(
    socket: &Path,
    listener: tokio::net::UnixListener,
    snapshotter: Arc<SkiffSnapshotter>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let result = Server::builder()
        .add_service(containerd_snapshots::server(snapshotter))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    let _ = std::fs::remove_file(socket);
    result.map_err(|e| SnapshotError::io(socket, std::io::Error::other(e)))
}
