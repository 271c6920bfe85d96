//! The API server: Docker Engine API routes on a Unix socket, accepting unversioned paths
//! and any `/v1.xx/` prefix.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::extract::Request;
use axum::http::Uri;
use axum::routing::{delete, get, head, post};
use axum::{Router, ServiceExt};
use tower::Layer;

use super::services::Daemon;
use super::{
    api_containers as c, api_containers_fs as f, api_containers_ops as o, api_exec as x,
    api_images as i, api_system as s, api_volumes as v,
};

/// Strips a leading `/v1.NN` so one route table serves every API version.
fn strip_version(mut req: Request) -> Request {
    tracing::debug!(method = %req.method(), uri = %req.uri(), "request");
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some(slash) = rest.find('/') {
            let ver = &rest[..slash];
            if !ver.is_empty() && ver.chars().all(|ch| ch.is_ascii_digit() || ch == '.') {
                let new_path = rest[slash..].to_string();
                let pq = match req.uri().query() {
                    Some(q) => format!("{new_path}?{q}"),
                    None => new_path,
                };
                if let Ok(uri) = pq.parse::<Uri>() {
                    *req.uri_mut() = uri;
                }
            }
        }
    }
    req
}

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/_ping", get(s::ping).head(s::ping))
        .route("/version", get(s::version))
        .route("/info", get(s::info))
        .route("/auth", post(s::auth))
        .route("/system/df", get(s::df))
        .route("/events", get(super::api_events::events))
        .route("/build", post(super::api_build::build))
        .route("/commit", post(super::api_build::commit))
        .route("/build/prune", post(super::api_build::prune))
        .route("/images/json", get(i::list))
        .route("/images/create", post(i::create))
        .route("/images/prune", post(i::prune))
        .route("/images/get", get(super::api_archive::save))
        .route("/images/load", post(super::api_archive::load))
        .route(
            "/images/{*rest}",
            get(i::get_by_name).post(i::post_by_name).delete(i::delete),
        )
        .route("/containers/json", get(c::list))
        .route("/containers/create", post(c::create))
        .route("/containers/prune", post(c::prune))
        .route("/containers/{id}/json", get(c::inspect))
        .route("/containers/{id}/start", post(c::start))
        .route("/containers/{id}/stop", post(c::stop))
        .route("/containers/{id}/restart", post(c::restart))
        .route("/containers/{id}/kill", post(c::kill))
        .route("/containers/{id}/wait", post(c::wait))
        .route("/containers/{id}/attach", post(c::attach))
        .route("/containers/{id}/resize", post(c::resize))
        .route("/containers/{id}/logs", get(c::logs))
        .route("/containers/{id}/exec", post(x::create))
        .route("/containers/{id}/rename", post(o::rename))
        .route("/containers/{id}/pause", post(o::pause))
        .route("/containers/{id}/unpause", post(o::unpause))
        .route("/containers/{id}/update", post(o::update))
        .route("/containers/{id}/top", get(o::top))
        .route("/containers/{id}/stats", get(o::stats))
        .route("/containers/{id}/changes", get(f::changes))
        .route("/containers/{id}/export", get(f::export))
        .route(
            "/containers/{id}/archive",
            get(f::archive_get)
                .head(f::archive_head)
                .put(f::archive_put),
        )
        .route("/containers/{id}", delete(c::remove))
        .route("/exec/{id}/start", post(x::start))
        .route("/exec/{id}/resize", post(x::resize))
        .route("/exec/{id}/json", get(x::inspect))
        .route("/volumes", get(v::list))
        .route("/volumes/create", post(v::create))
        .route("/volumes/prune", post(v::prune))
        .route("/volumes/{name}", get(v::inspect).delete(v::remove))
        .route("/session", head(s::ping))
        .merge(super::api_profiles::routes())
        .merge(super::api_networks::routes())
        .with_state(daemon)
}

/// Binds the socket (mode 0660), refusing to steal one another daemon answers on.
pub async fn bind(socket: &Path) -> Result<tokio::net::UnixListener> {
    if socket.exists() {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            bail!(
                "another daemon is already listening on {}",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing stale socket {}", socket.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// How long requests still open at shutdown (log followers, waiters, attached streams)
/// may go on before they are cut: a shutdown must not wait on a client.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Serves until `shutdown` resolves, then stops accepting and lets open requests finish for
/// at most [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: tokio::net::UnixListener,
    daemon: Arc<Daemon>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = tower::util::MapRequestLayer::new(strip_version).layer(router(daemon));
    let stopping = Arc::new(tokio::sync::Notify::new());
    let signal = stopping.clone();
    let server = axum::serve(listener, ServiceExt::<Request>::into_make_service(app))
        .with_graceful_shutdown(async move {
            shutdown.await;
            signal.notify_one();
        });
    tokio::select! {
        served = std::future::IntoFuture::into_future(server) => served?,
        _ = async {
            stopping.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::info!("closing requests still open after {SHUTDOWN_GRACE:?}");
        }
    }
    Ok(())
}
