//! Network endpoints: list, inspect, create, remove, connect, disconnect, prune.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::error::{ApiResult, DaemonError};
use super::filters::Filters;
use super::networks::{CreateRequest, Network};
use super::services::Daemon;

pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

fn event(d: &Daemon, action: &str, n: &Network, container: Option<&str>) {
    let mut attrs = vec![
        ("name".to_string(), n.name.clone()),
        ("type".to_string(), n.driver.clone()),
    ];
    if let Some(c) = container {
        attrs.push(("container".to_string(), c.to_string()));
    }
    d.containers
        .monitor
        .events
        .emit("network", action, &n.id, attrs);
}

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
        &[
            "dangling", "driver", "id", "label", "label!", "name", "scope", "type",
        ],
    )?;
    let mut out = Vec::new();
    for n in d.networks.select(&filters).await? {
        out.push(d.networks.view(&n, false)?);
    }
    Ok(Json(out))
}

pub async fn inspect(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let n = d.networks.get(&id).await?;
    Ok(Json(d.networks.view(&n, true)?))
}

pub async fn create(
    State(d): State<Arc<Daemon>>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let req: CreateRequest = serde_path_to_error::deserialize(body).map_err(|e| {
        DaemonError::Invalid(format!(
            "invalid network create body: {}: {}",
            e.path(),
            e.inner()
        ))
    })?;
    let n = d.networks.create(req).await?;
    event(&d, "create", &n, None);
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"Id": n.id, "Warning": ""})),
    ))
}

pub async fn remove(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    // As dockerd, where a container holds an endpoint only while it runs: stopped and
    // created containers let go of theirs (and later fail to start, the network gone);
    // running ones keep the network in use.
    let n = d.networks.get(&id).await?;
    if !n.builtin() {
        for (r, _) in d.networks.containers_on(&n.id)? {
            if d.containers.state(&r.id)?.status != skiff_runtime::Status::Running {
                d.networks.disconnect(&n.id, &r).await?;
                event(&d, "disconnect", &n, Some(&r.id));
            }
        }
    }
    let n = d.networks.remove(&id).await?;
    event(&d, "destroy", &n, None);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ConnectBody {
    container: String,
    endpoint_config: Option<EndpointConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointConfig {
    aliases: Option<Vec<String>>,
    #[serde(rename = "IPAMConfig")]
    ipam_config: Option<IpamConfig>,
    links: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct IpamConfig {
    #[serde(rename = "IPv4Address")]
    ipv4_address: Option<String>,
    #[serde(rename = "IPv6Address")]
    ipv6_address: Option<String>,
}

pub async fn connect(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Json(body): Json<ConnectBody>,
) -> ApiResult<StatusCode> {
    let r = d.containers.find(&body.container)?;
    let ep = body.endpoint_config.unwrap_or_default();
    let ipam = ep.ipam_config.unwrap_or_default();
    if ipam.ipv6_address.as_ref().is_some_and(|a| !a.is_empty()) {
        return Err(DaemonError::Unsupported {
            field: "EndpointConfig.IPAMConfig.IPv6Address".into(),
            value: format!("{:?}", ipam.ipv6_address),
        });
    }
    d.networks
        .connect(
            &id,
            &r,
            ep.aliases.unwrap_or_default(),
            ipam.ipv4_address,
            &ep.links.unwrap_or_default(),
        )
        .await?;
    let n = d.networks.get(&id).await?;
    event(&d, "connect", &n, Some(&r.id));
    Ok(StatusCode::OK)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct DisconnectBody {
    container: String,
    force: bool,
}

pub async fn disconnect(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Json(body): Json<DisconnectBody>,
) -> ApiResult<StatusCode> {
    let _ = body.force; // nothing is left half-made that force would have to clean up
    let r = d.containers.find(&body.container)?;
    d.networks.disconnect(&id, &r).await?;
    let n = d.networks.get(&id).await?;
    event(&d, "disconnect", &n, Some(&r.id));
    Ok(StatusCode::OK)
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
    let removed = d.networks.prune(&filters).await?;
    Ok(Json(serde_json::json!({ "NetworksDeleted": removed })))
}
