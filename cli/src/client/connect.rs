//! Connecting the CLI to the daemon over its Unix socket, with Docker's API shapes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use bollard::Docker;

/// The socket path from `-H/--host` / `SKIFF_HOST` (`unix:///path` or a bare path), else
/// `<exec-root>/skiff.sock`.
pub fn socket_path(host: Option<&str>, exec_root: &Path) -> Result<PathBuf> {
    match host {
        Some(h) => {
            if let Some(p) = h.strip_prefix("unix://") {
                Ok(PathBuf::from(p))
            } else if h.contains("://") {
                bail!("unsupported host {h:?}: skiff listens on a Unix socket (unix:///path)")
            } else {
                Ok(PathBuf::from(h))
            }
        }
        None => Ok(exec_root.join("skiff.sock")),
    }
}

/// A client for the daemon; fails with a message saying how to start one when none answers.
pub async fn connect(socket: &Path) -> Result<Docker> {
    let hint = || {
        format!(
            "Cannot connect to the skiff daemon at unix://{}. Is the daemon running?\n\
             Start it as root with:  skiff daemon &   (its log goes to standard error)",
            socket.display()
        )
    };
    // A bare connect tells whether a daemon listens, without an HTTP round trip (a
    // `_ping` costs ~1 ms of every command); an answer that is not the API's shows up as
    // the first request's error.
    if std::os::unix::net::UnixStream::connect(socket).is_err() {
        bail!(hint());
    }
    Ok(Docker::connect_with_unix(
        &socket.to_string_lossy(),
        600,
        bollard::API_DEFAULT_VERSION,
    )?)
}
