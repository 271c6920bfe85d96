//! Container filesystem endpoints: changes (`diff`), export, archive (`cp` both ways).

use std::sync::Arc;

use axum::body::Body;
use std::path::PathBuf;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;

use super::containers_fs::ExtractOptions;
use super::error::{ApiResult, DaemonError};
use super::services::Daemon;

pub async fn changes(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let r = d.containers.find(&id)?;
    let list: Vec<serde_json::Value> = d
        .containers
        .changes(&r)?
        .into_iter()
        .map(|(path, kind)| serde_json::json!({"Path": path, "Kind": kind}))
        .collect();
    Ok(Json(list))
}

fn tar_response(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/x-tar")
        .body(body)
        .expect("valid response")
}

pub async fn export(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> ApiResult<Response> {
    let r = d.containers.find(&id)?;
    Ok(tar_response(d.containers.export(&r)?))
}

/// The `path` parameter as bytes: Go's `url.Values` encoding (`+` for space, `%XX` for
/// any other byte), so a name that is not UTF-8 arrives intact.
fn path_of(q: &RawQuery) -> Result<PathBuf, DaemonError> {
    use std::os::unix::ffi::OsStringExt;
    let raw = q.0.as_deref().unwrap_or("");
    raw.split('&')
        .filter_map(|kv| kv.strip_prefix("path="))
        .next()
        .map(|v| {
            let v = v.replace('+', " ");
            let bytes: Vec<u8> = percent_encoding::percent_decode(v.as_bytes()).collect();
            PathBuf::from(std::ffi::OsString::from_vec(bytes))
        })
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| DaemonError::invalid("path is required"))
}

fn stat_header(stat: &serde_json::Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(stat.to_string())
}

pub async fn archive_head(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    q: RawQuery,
) -> ApiResult<Response> {
    let r = d.containers.find(&id)?;
    let stat = d.containers.path_stat(&r, &path_of(&q)?)?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("X-Docker-Container-Path-Stat", stat_header(&stat))
        .body(Body::empty())
        .expect("valid response"))
}

pub async fn archive_get(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    q: RawQuery,
) -> ApiResult<Response> {
    let r = d.containers.find(&id)?;
    let (stat, body) = d.containers.archive(&r, &path_of(&q)?)?;
    let mut resp = tar_response(body);
    resp.headers_mut().insert(
        "X-Docker-Container-Path-Stat",
        stat_header(&stat)
            .parse()
            .expect("base64 is a valid header"),
    );
    Ok(resp)
}

pub async fn archive_put(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    q: RawQuery,
    body: Body,
) -> ApiResult<StatusCode> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let r = d.containers.find(&id)?;
    let path = path_of(&q)?;
    // Spooled to disk first: the tar is read by a blocking extractor, never held in memory.
    let tmp = tempfile::NamedTempFile::new_in(d.containers.dir(&r.id))
        .map_err(|e| DaemonError::io("temporary file", &d.containers.dir(&r.id), e))?;
    let mut f = tokio::fs::File::create(tmp.path())
        .await
        .map_err(|e| DaemonError::io("temporary file", tmp.path(), e))?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| DaemonError::Invalid(format!("reading the archive: {e}")))?;
        f.write_all(&chunk)
            .await
            .map_err(|e| DaemonError::io("writing", tmp.path(), e))?;
    }
    f.flush()
        .await
        .map_err(|e| DaemonError::io("writing", tmp.path(), e))?;
    let param = |k: &str| {
        q.0.as_deref()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .next_back()
            .is_some_and(super::query_bool::truthy)
    };
    let opts = ExtractOptions {
        no_overwrite_dir_non_dir: param("noOverwriteDirNonDir"),
        copy_uid_gid: param("copyUIDGID"),
    };
    d.containers
        .extract(&r, &path, tmp.path().to_path_buf(), opts)
        .await?;
    Ok(StatusCode::OK)
}
