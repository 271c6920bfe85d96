//! Exec endpoints: create, start (hijacked), resize, inspect.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bollard::models::ExecConfig;
use serde::Deserialize;

use super::error::{ApiResult, DaemonError};
use super::hijack;
use super::services::Daemon;

pub async fn create(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Json(body): Json<ExecConfig>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let r = d.containers.find(&id)?;
    let st = d.containers.state(&r.id)?;
    let exec_id = d.execs.create(&r, &st, body)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "Id": exec_id })),
    ))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct StartBody {
    #[serde(default)]
    detach: bool,
}

pub async fn start(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|e| DaemonError::Invalid(format!("reading body: {e}")))?;
    let start: StartBody = if bytes.is_empty() {
        StartBody::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| DaemonError::Invalid(format!("invalid exec start body: {e}")))?
    };
    let (tty, io) = d.execs.start(&id).await?;
    if start.detach {
        tokio::spawn(super::exec_bridge::drain(io));
        return Ok(StatusCode::OK.into_response());
    }
    let req = Request::from_parts(parts, axum::body::Body::empty());
    Ok(hijack::upgrade(req, tty, move |conn| async move {
        super::exec_bridge::bridge(conn, io, tty).await;
    }))
}

pub async fn resize(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<super::api_containers::ResizeQuery>,
) -> ApiResult<StatusCode> {
    d.execs.resize(&id, q.h.unwrap_or(24), q.w.unwrap_or(80))?;
    Ok(StatusCode::CREATED)
}

pub async fn inspect(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(d.execs.inspect(&id).await?))
}
