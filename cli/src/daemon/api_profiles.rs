//! skiff's own endpoints for access profiles (Docker has none), under `/skiff/profiles`:
//! `GET /skiff/profiles` lists them, `POST /skiff/profiles/{image}` publishes one to the
//! image's registry, `GET /skiff/profiles/{key or image}` returns one
//! document, `DELETE /skiff/profiles/{key or image}` removes it. An image name resolves
//! to the profile keyed by its layers. `GET /skiff/stats`: registry and cache counters.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::get;

use axum::{Json, Router};

use super::error::ApiResult;
use super::services::Daemon;

pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/skiff/profiles", get(list))
        .route(
            "/skiff/profiles/{*name}",
            get(inspect).delete(remove).post(push),
        )
        .route("/skiff/stats", get(stats))
}

/// Registry and chunk-cache counters since the daemon started (`skiff bench` reads them).
async fn stats(State(d): State<Arc<Daemon>>) -> ApiResult<impl IntoResponse> {
    let u = d.images.store().cache_stats()?;
    let r = d.images.store().registry();
    Ok(Json(serde_json::json!({
        "RegistryBytes": r.bytes_downloaded(),
        "RegistryRequests": r.read_requests(),
        "ChunkFetchRequests": u.counters.fetch_requests,
        "ChunkFetchedBytes": u.counters.fetched_bytes,
        "PrefetchedChunks": u.counters.prefetched_chunks,
        "ReadChunkBytes": u.counters.read_chunk_bytes,
        "CacheBytes": u.disk_bytes,
    })))
}

async fn list(State(d): State<Arc<Daemon>>) -> ApiResult<impl IntoResponse> {
    Ok(Json(d.images.store().profiles()?))
}

async fn inspect(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(d.images.store().profile(&name)?))
}

/// Publishes the profile of image `name` to the image's repository (an OCI artifact whose
/// subject is the image's manifest).
async fn push(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let digest = d.images.store().push_profile(&name).await?;
    Ok(Json(serde_json::json!({ "Digest": digest })))
}

async fn remove(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    // A recording saved just after this removal would bring the profile back.
    let waiting = d.clone();
    tokio::task::spawn_blocking(move || waiting.wait_profile_saves())
        .await
        .map_err(super::error::DaemonError::join)?;
    let key = d.images.store().remove_profile(&name)?;
    Ok(Json(serde_json::json!({ "Deleted": key })))
}
