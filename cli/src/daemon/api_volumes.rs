//! Volume endpoints: list, create, inspect, remove, prune.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiResult, DaemonError};
use super::filters::Filters;
use super::services::Daemon;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    filters: Option<String>,
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let filters = Filters::parse(
        q.filters.as_deref(),
        &["dangling", "driver", "label", "name"],
    )?;
    let vols: Vec<serde_json::Value> = d
        .volumes
        .select(&filters)?
        .iter()
        .map(|v| d.volumes.view(v))
        .collect();
    Ok(Json(serde_json::json!({ "Volumes": vols, "Warnings": [] })))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateBody {
    name: Option<String>,
    driver: Option<String>,
    driver_opts: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

pub async fn create(
    State(d): State<Arc<Daemon>>,
    Json(body): Json<CreateBody>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    if let Some(driver) = body.driver.filter(|x| !x.is_empty() && x != "local") {
        return Err(DaemonError::Unsupported {
            field: "Driver".into(),
            value: format!("{driver:?} (only the local driver)"),
        });
    }
    let (v, _) = d.volumes.create_with(
        body.name.as_deref(),
        body.labels.unwrap_or_default(),
        body.driver_opts.unwrap_or_default(),
    )?;
    d.containers.monitor.events.emit(
        "volume",
        "create",
        &v.name,
        [("driver".to_string(), "local".to_string())],
    );
    Ok((StatusCode::CREATED, Json(d.volumes.view(&v))))
}

pub async fn inspect(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let v = d.volumes.get(&name)?;
    Ok(Json(d.volumes.view(&v)))
}

#[derive(Deserialize, Default)]
pub struct RemoveQuery {
    force: Option<String>,
}

pub async fn remove(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<StatusCode> {
    let force = matches!(q.force.as_deref(), Some("1") | Some("true"));
    d.volumes.remove(&name, force)?;
    d.containers.monitor.events.emit(
        "volume",
        "destroy",
        &name,
        [("driver".to_string(), "local".to_string())],
    );
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
pub struct PruneQuery {
    filters: Option<String>,
}

pub async fn prune(
    State(d): State<Arc<Daemon>>,
    Query(q): Query<PruneQuery>,
) -> ApiResult<impl IntoResponse> {
    // Docker 23+: `{"all":["true"]}` prunes named volumes too.
    let filters = Filters::parse(q.filters.as_deref(), &["all"])?;
    let all = filters.bool("all")?.unwrap_or(false);
    let (deleted, reclaimed) = d.volumes.prune(all)?;
    Ok(Json(serde_json::json!({
        "VolumesDeleted": deleted,
        "SpaceReclaimed": reclaimed,
    })))
}
