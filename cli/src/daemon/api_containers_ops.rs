//! Container endpoints that change or report on a live container: rename, pause, unpause,
//! update, top, stats.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::containers_ops::{Update, STATS_INTERVAL};
use super::error::{ApiResult, DaemonError};
use super::query_bool::flag;
use super::record::RestartPolicy;
use super::services::Daemon;

#[derive(Deserialize, Default)]
pub struct RenameQuery {
    name: Option<String>,
}

pub async fn rename(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<RenameQuery>,
) -> ApiResult<StatusCode> {
    let r = d.containers.find(&id)?;
    let name = q
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| DaemonError::invalid("name is required"))?;
    d.containers.rename(&r, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn pause(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let r = d.containers.find(&id)?;
    d.containers.set_paused(&r, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unpause(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let r = d.containers.find(&id)?;
    d.containers.set_paused(&r, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
pub struct TopQuery {
    ps_args: Option<String>,
}

pub async fn top(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<TopQuery>,
) -> ApiResult<impl IntoResponse> {
    let r = d.containers.find(&id)?;
    let (titles, processes) = d.containers.top(&r, q.ps_args.as_deref()).await?;
    Ok(Json(
        serde_json::json!({"Titles": titles, "Processes": processes}),
    ))
}

/// The `update` body fields skiff applies; any other set to a non-default value is refused
/// by name rather than ignored.
const UPDATE_APPLIED: &[&str] = &[
    "Memory",
    "MemorySwap",
    "NanoCpus",
    "PidsLimit",
    "CpuShares",
    "MemoryReservation",
    "RestartPolicy",
];

fn parse_update(body: &serde_json::Value) -> Result<Update, DaemonError> {
    let obj = body
        .as_object()
        .ok_or_else(|| DaemonError::invalid("update body must be a JSON object"))?;
    for (k, v) in obj {
        let unset = match v {
            serde_json::Value::Null => true,
            serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
            serde_json::Value::String(s) => s.is_empty(),
            serde_json::Value::Array(a) => a.is_empty(),
            serde_json::Value::Object(o) => o.is_empty(),
            serde_json::Value::Bool(b) => !b,
        };
        // The CLI sends MemorySwap -1 with --memory-swap -1 and MemorySwappiness -1 unset.
        if !unset && !UPDATE_APPLIED.contains(&k.as_str()) {
            return Err(DaemonError::Unsupported {
                field: k.clone(),
                value: v.to_string(),
            });
        }
    }
    let int = |k: &str| obj.get(k).and_then(|v| v.as_i64()).filter(|n| *n > 0);
    // `--memory-swap -1` is unlimited swap; 0 leaves it as it is.
    let memory_swap = obj
        .get("MemorySwap")
        .and_then(|v| v.as_i64())
        .filter(|n| *n > 0 || *n == -1);
    super::spec::check_memory(int("Memory").unwrap_or(0), memory_swap.unwrap_or(0), true)?;
    let restart_policy = match obj.get("RestartPolicy") {
        Some(p) => {
            let name = p.get("Name").and_then(|n| n.as_str()).unwrap_or("");
            let max = p
                .get("MaximumRetryCount")
                .and_then(|n| n.as_i64())
                .unwrap_or(0);
            if name.is_empty() && max == 0 {
                None
            } else {
                Some(RestartPolicy::parse(name, max).map_err(DaemonError::Invalid)?)
            }
        }
        None => None,
    };
    Ok(Update {
        memory: int("Memory"),
        memory_swap,
        nano_cpus: int("NanoCpus"),
        pids_limit: int("PidsLimit"),
        cpu_shares: int("CpuShares"),
        memory_reservation: obj
            .get("MemoryReservation")
            .and_then(|v| v.as_i64())
            .filter(|n| *n != 0),
        restart_policy,
    })
}

pub async fn update(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<impl IntoResponse> {
    let r = d.containers.find(&id)?;
    d.containers.update(&r, parse_update(&body)?).await?;
    Ok(Json(serde_json::json!({"Warnings": []})))
}

#[derive(Deserialize, Default)]
pub struct StatsQuery {
    stream: Option<String>,
    #[serde(rename = "one-shot")]
    one_shot: Option<String>,
}

pub async fn stats(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<StatsQuery>,
) -> ApiResult<Response> {
    let r = d.containers.find(&id)?;
    // Docker streams unless `stream=false`.
    let stream = q
        .stream
        .as_deref()
        .is_none_or(|s| flag(&Some(s.to_string())));
    let first = d.containers.stats_sample(&r, None)?;
    if !stream {
        let v = if flag(&q.one_shot) {
            first
        } else {
            // A second sample, so `precpu_stats` gives a CPU percentage (as dockerd).
            tokio::time::sleep(STATS_INTERVAL).await;
            d.containers.stats_sample(&r, Some(&first))?
        };
        return Ok(Json(v).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut prev = first;
        loop {
            let mut line = serde_json::to_vec(&prev).unwrap_or_default();
            line.push(b'\n');
            if tx.send(Ok(line)).await.is_err() {
                return; // the client went away
            }
            tokio::time::sleep(STATS_INTERVAL).await;
            match d.containers.stats_sample(&r, Some(&prev)) {
                Ok(v) => prev = v,
                Err(_) => return, // removed meanwhile
            }
        }
    });
    let mut rx = rx;
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .body(body)
        .expect("valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_applies_limits_and_policy_and_refuses_the_rest() {
        let u = parse_update(&serde_json::json!({
            "Memory": 67108864, "MemorySwap": 0, "CpuShares": 0, "BlkioWeight": 0,
            "RestartPolicy": {"Name": "", "MaximumRetryCount": 0}, "CpusetCpus": "",
        }))
        .unwrap();
        assert_eq!(u.memory, Some(64 << 20));
        assert_eq!(u.restart_policy, None);
        let u = parse_update(&serde_json::json!({"RestartPolicy": {"Name": "always"}})).unwrap();
        assert_eq!(u.restart_policy, Some(RestartPolicy::Always));
        let u = parse_update(&serde_json::json!({"CpuShares": 512})).unwrap();
        assert_eq!(u.cpu_shares, Some(512));
        let u = parse_update(&serde_json::json!({"MemoryReservation": 33554432})).unwrap();
        assert_eq!(u.memory_reservation, Some(33554432));
        let e = parse_update(&serde_json::json!({"BlkioWeight": 500})).unwrap_err();
        assert!(
            e.to_string().starts_with("BlkioWeight is not supported"),
            "{e}"
        );
        assert!(
            parse_update(&serde_json::json!({"Memory": 1000000, "MemorySwap": 5000000})).is_err()
        );
    }
}
