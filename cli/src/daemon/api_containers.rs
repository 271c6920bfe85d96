//! Container endpoints: create, list, inspect, start, stop, restart, kill, wait, attach,
//! resize, logs, remove, prune.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bollard::container::Config;
use bollard::models::{ContainerCreateResponse, ContainerWaitResponse};
use serde::Deserialize;

use super::containers_run::StartedBy;
use super::error::ApiResult;
use super::filters::Filters;
use super::hijack;
use super::query_bool::flag;
use super::services::Daemon;
use super::views;

#[derive(Deserialize, Default)]
pub struct CreateQuery {
    name: Option<String>,
    platform: Option<String>,
}

/// `linux` or `linux/<this machine's architecture>[/variant]`, as Docker names them.
fn platform_ok(p: &str) -> bool {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let mut parts = p.split('/');
    parts.next() == Some("linux") && parts.next().is_none_or(|a| a == arch)
}

/// A `NetworkingConfig` without `EndpointsConfig` asks for no endpoint settings, as dockerd
/// reads it (the network itself is `HostConfig.NetworkMode`). docker-py 7.1's
/// `containers.run(network=N)` sends `{"N": null}` there; other non-empty keys were refused
/// by `create_fields::check`.
fn default_endpoints_config(body: &mut serde_json::Value) {
    if let Some(n) = body
        .get_mut("NetworkingConfig")
        .and_then(serde_json::Value::as_object_mut)
    {
        if n.get("EndpointsConfig")
            .is_none_or(serde_json::Value::is_null)
        {
            n.insert("EndpointsConfig".into(), serde_json::json!({}));
        }
    }
}

pub async fn create(
    State(d): State<Arc<Daemon>>,
    Query(q): Query<CreateQuery>,
    Json(mut body): Json<serde_json::Value>,
) -> ApiResult<(StatusCode, Json<ContainerCreateResponse>)> {
    if let Some(p) = q.platform.as_deref().filter(|p| !p.is_empty()) {
        if !platform_ok(p) {
            return Err(super::error::DaemonError::Unsupported {
                field: "platform".into(),
                value: format!("{p:?} (skiff runs this machine's platform only)"),
            });
        }
    }
    super::create_fields::check(&body)?;
    default_endpoints_config(&mut body);
    // The error names the field (`HostConfig.RestartPolicy.Name: unknown variant ...`).
    let body: Config<String> = serde_path_to_error::deserialize(body).map_err(|e| {
        super::error::DaemonError::Invalid(format!(
            "invalid create body: {}: {}",
            e.path(),
            e.inner()
        ))
    })?;
    let id = d.containers.create(q.name, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(ContainerCreateResponse {
            id,
            warnings: vec![],
        }),
    ))
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    all: Option<String>,
    limit: Option<i64>,
    filters: Option<String>,
    size: Option<String>,
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let filters = Filters::parse(q.filters.as_deref(), super::container_filter::NAMES)?;
    let now = chrono::Utc::now();
    let rows = d.containers.select(filters, flag(&q.all), q.limit, |id| {
        d.builds.cache.parent_of(id)
    })?;
    Ok(Json(
        rows.iter()
            .map(|r| {
                let mut row = views::summary(&r.record, &r.state, now, r.restarting);
                if r.paused {
                    row.state = Some("paused".to_string());
                    row.status = row.status.map(|s| format!("{s} (Paused)"));
                } else if let Some(h) = r.health.and_then(|_| d.monitor.health(&r.record.id)) {
                    row.status = row.status.map(|s| format!("{s} {}", h.ps_suffix()));
                }
                if flag(&q.size) {
                    let (rw, root_fs) = sizes(&d, &r.record);
                    row.size_rw = Some(rw);
                    row.size_root_fs = Some(root_fs);
                }
                row
            })
            .collect::<Vec<_>>(),
    ))
}

/// `(SizeRw, SizeRootFs)` of `r` in bytes: its writable layer, and that plus its image.
fn sizes(d: &Daemon, r: &super::record::ContainerRecord) -> (i64, i64) {
    let rw = d.containers.disk_usage(&r.id) as i64;
    let image = d
        .images
        .store()
        .image(&r.image_id)
        .map_or(0, |i| i.size as i64);
    (rw, rw + image)
}

#[derive(Deserialize, Default)]
pub struct InspectQuery {
    size: Option<String>,
}

pub async fn inspect(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<InspectQuery>,
) -> ApiResult<impl IntoResponse> {
    let r = d.containers.find(&id)?;
    let st = d.containers.state(&r.id)?;
    let restarting = d.monitor.is_restarting(&r.id);
    let view = views::inspect(&r, &st, &d.containers.dir(&r.id), restarting);
    let mut view = serde_json::to_value(view).expect("inspect serializes");
    if let Some(h) = d.monitor.health(&r.id) {
        view["State"]["Health"] = h.to_json();
    }
    // dockerd's list of the container's sessions that have not ended: null when none (the
    // model would leave the key out).
    let execs = d.execs.ids_of(&r.id);
    view["ExecIDs"] = if execs.is_empty() {
        serde_json::Value::Null
    } else {
        execs.into()
    };
    // `inspect -s`; without it dockerd leaves both out.
    if flag(&q.size) {
        let (rw, root_fs) = sizes(&d, &r);
        view["SizeRw"] = rw.into();
        view["SizeRootFs"] = root_fs.into();
    } else if let Some(o) = view.as_object_mut() {
        o.remove("SizeRw");
        o.remove("SizeRootFs");
    }
    Ok(Json(view))
}

pub async fn start(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let r = d.containers.find(&id)?;
    if d.containers.start(&r, StartedBy::User).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Ok(StatusCode::NOT_MODIFIED)
    }
}

#[derive(Deserialize, Default)]
pub struct StopQuery {
    t: Option<i64>,
    signal: Option<String>,
}

pub async fn stop(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> ApiResult<StatusCode> {
    let r = d.containers.find(&id)?;
    if d.containers.stop(&r, q.t, q.signal.as_deref()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Ok(StatusCode::NOT_MODIFIED)
    }
}

pub async fn restart(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> ApiResult<StatusCode> {
    let r = d.containers.find(&id)?;
    d.containers.restart(&r, q.t, q.signal.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
pub struct KillQuery {
    signal: Option<String>,
}

pub async fn kill(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<KillQuery>,
) -> ApiResult<StatusCode> {
    let r = d.containers.find(&id)?;
    d.containers
        .kill(&r, q.signal.as_deref().unwrap_or("KILL"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
pub struct WaitQuery {
    condition: Option<String>,
}

pub async fn wait(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Response> {
    let condition = match q.condition.as_deref() {
        None | Some("") => "not-running".to_string(),
        Some(c @ ("not-running" | "next-exit" | "removed")) => c.to_string(),
        Some(c) => {
            return Err(super::error::DaemonError::Invalid(format!(
                "invalid condition: {c:?}"
            )))
        }
    };
    let r = match d.containers.find(&id) {
        Ok(r) => r,
        // A client that asks before its start (Docker's CLI, `run --rm`) can be overtaken
        // by the whole run and the auto-removal: it gets the exit code, not a 404.
        Err(e) => match d.monitor.recent_exit(&id) {
            Some(code) => return Ok(wait_response(futures::future::ready(code))),
            None => return Err(e),
        },
    };
    // The waiting happens in the body, so a client may start the container right after the
    // response headers arrive (Docker's CLI does, for `run --rm`).
    let waiter = d
        .monitor
        .clone()
        .waiter(d.records.clone(), r.id.clone(), condition);
    Ok(wait_response(waiter))
}

/// `/containers/{id}/wait`'s answer: headers now, the body once `code` resolves.
fn wait_response(code: impl std::future::Future<Output = i32> + Send + 'static) -> Response {
    let body = Body::from_stream(futures::stream::once(async move {
        let resp = ContainerWaitResponse {
            status_code: code.await as i64,
            error: None,
        };
        Ok::<_, std::convert::Infallible>(serde_json::to_vec(&resp).unwrap_or_default())
    }));
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .body(body)
        .expect("valid response")
}

#[derive(Deserialize, Default)]
pub struct AttachQuery {
    stdin: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    logs: Option<String>,
}

pub async fn attach(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<AttachQuery>,
    req: Request,
) -> ApiResult<Response> {
    let r = d.containers.find(&id)?;
    let tty = r.spec.tty;
    let streams = skiff_runtime::protocol::AttachStreams {
        stdin: flag(&q.stdin),
        stdout: flag(&q.stdout),
        stderr: flag(&q.stderr),
    };
    // `logs=1` replays nothing yet: the shim streams from now on.
    let _ = flag(&q.logs);
    let shim = d.containers.attach(&r, streams).await?;
    Ok(hijack::upgrade(req, tty, move |conn| async move {
        super::attach_bridge::bridge(conn, shim, tty, streams.stdin).await;
    }))
}

#[derive(Deserialize, Default)]
/// `?h=ROWS&w=COLS` of the container and exec resize endpoints.
pub struct ResizeQuery {
    pub h: Option<u16>,
    pub w: Option<u16>,
}

pub async fn resize(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<ResizeQuery>,
) -> ApiResult<StatusCode> {
    let r = d.containers.find(&id)?;
    d.containers
        .resize(&r, q.h.unwrap_or(24), q.w.unwrap_or(80))?;
    Ok(StatusCode::OK)
}

#[derive(Deserialize, Default)]
pub struct LogsQuery {
    follow: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    since: Option<String>,
    until: Option<String>,
    timestamps: Option<String>,
    tail: Option<String>,
}

/// A `since`/`until` of logs (0 or absent: unbounded); malformed ones are refused.
fn log_time(
    name: &str,
    v: Option<&str>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, super::error::DaemonError> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let nanos = super::time_arg::parse_nanos(v).ok_or_else(|| {
        super::error::DaemonError::Invalid(format!("invalid {name} {v:?}: not a timestamp"))
    })?;
    Ok((nanos > 0).then(|| chrono::DateTime::from_timestamp_nanos(nanos as i64)))
}

pub async fn logs(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let r = d.containers.find(&id)?;
    let tty = r.spec.tty;
    let opts = super::logs_stream::LogsRequest {
        follow: flag(&q.follow),
        stdout: flag(&q.stdout),
        stderr: flag(&q.stderr),
        timestamps: flag(&q.timestamps),
        tail: q.tail.as_deref().and_then(|t| t.parse().ok()),
        since: log_time("since", q.since.as_deref())?,
        until: log_time("until", q.until.as_deref())?,
    };
    let body = super::logs_stream::stream(d.containers.dir(&r.id), opts, tty)?;
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", content_type)
        .body(body)
        .expect("valid response"))
}

#[derive(Deserialize, Default)]
pub struct RemoveQuery {
    force: Option<String>,
    v: Option<String>,
}

pub async fn remove(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<StatusCode> {
    let r = d.containers.find(&id)?;
    d.containers.remove(&r, flag(&q.force), flag(&q.v)).await?;
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
    let filters = Filters::parse(q.filters.as_deref(), &["label", "label!", "until"])?;
    let (deleted, reclaimed) = d.containers.prune(&filters).await?;
    Ok(Json(serde_json::json!({
        "ContainersDeleted": deleted,
        "SpaceReclaimed": reclaimed,
    })))
}
