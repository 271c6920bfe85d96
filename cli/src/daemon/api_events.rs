//! `GET /events`: recorded events from `since`, then live ones until `until` (or forever),
//! as JSON lines.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::error::{ApiResult, DaemonError};
use super::events::EventLog;
use super::services::Daemon;

#[derive(Deserialize, Default)]
pub struct EventsQuery {
    since: Option<String>,
    until: Option<String>,
    filters: Option<String>,
}

fn time(name: &str, v: Option<&str>) -> Result<Option<i128>, DaemonError> {
    match v.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => super::time_arg::parse_nanos(v)
            .map(Some)
            .ok_or_else(|| DaemonError::Invalid(format!("invalid {name} {v:?}: not a timestamp"))),
    }
}

pub async fn events(
    State(d): State<Arc<Daemon>>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Response> {
    let filters = EventLog::parse_filters(q.filters.as_deref())?;
    let since = time("since", q.since.as_deref())?;
    let until = time("until", q.until.as_deref())?;
    if let (Some(s), Some(u)) = (since, until) {
        if s > u {
            return Err(DaemonError::invalid("`since` time is after `until`"));
        }
    }
    let (past, last_seq, mut rx) = d.containers.monitor.events.subscribe(&filters, since);
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    let now = || {
        chrono::Utc::now()
            .timestamp_nanos_opt()
            .map_or(0, i128::from)
    };
    let line = |e: &super::events::Event| {
        let mut l = serde_json::to_vec(&e.json()).unwrap_or_default();
        l.push(b'\n');
        Ok(l)
    };
    tokio::spawn(async move {
        for e in past
            .iter()
            .filter(|e| until.is_none_or(|u| e.time_nano <= u))
        {
            if tx.send(line(e)).await.is_err() {
                return;
            }
        }
        loop {
            let wait = match until {
                Some(u) => {
                    let left = u - now();
                    if left <= 0 {
                        return;
                    }
                    std::time::Duration::from_nanos(left as u64)
                }
                None => std::time::Duration::from_secs(3600),
            };
            let e = match tokio::time::timeout(wait, rx.recv()).await {
                Err(_) => continue, // until reached (checked above) or an idle hour
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(_)) => return,
                Ok(Ok(e)) => e,
            };
            if e.seq <= last_seq || !EventLog::wanted(&e, &filters) {
                continue;
            }
            if until.is_some_and(|u| e.time_nano > u) {
                return;
            }
            if tx.send(line(&e)).await.is_err() {
                return; // the client went away
            }
        }
    });
    let mut out = out;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .body(Body::from_stream(futures::stream::poll_fn(move |cx| {
            out.poll_recv(cx)
        })))
        .expect("valid response"))
}
