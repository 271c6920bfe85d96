//! skiff's own endpoints for access profiles (Docker has none), under `/skiff/profiles`:
//! `GET /skiff/profiles` lists them, `GET /skiff/profiles/{key or image}` returns one
//! document, `DELETE /skiff/profiles/{key or image}` removes it. An image name resolves
//! to the profile keyed by its layers.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use super::error::ApiResult;
use super::state::Daemon;
use super::state_images::store_error;

pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/skiff/profiles", get(list))
        .route("/skiff/profiles/{*name}", get(inspect).delete(remove))
}

async fn list(State(d): State<Arc<Daemon>>) -> ApiResult<impl IntoResponse> {
    Ok(Json(d.store.profiles().map_err(store_error)?))
}

async fn inspect(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(d.store.profile(&name).map_err(store_error)?))
}

async fn remove(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let key = d.store.remove_profile(&name).map_err(store_error)?;
    Ok(Json(serde_json::json!({ "Deleted": key })))
}
