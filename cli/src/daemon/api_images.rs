//! Image endpoints: list, pull/import (`/images/create`), inspect, tag, push, remove, prune.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::{ApiResult, DaemonError};
use super::filters::Filters;
use super::services::Daemon;

pub(super) fn json_lines_body(rx: tokio::sync::mpsc::Receiver<serde_json::Value>) -> Body {
    let mut rx = rx;
    Body::from_stream(futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|o| {
            o.map(|v| {
                let mut line = serde_json::to_vec(&v).unwrap_or_default();
                line.push(b'\n');
                Ok::<_, std::io::Error>(line)
            })
        })
    }))
}

pub(super) fn streaming(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .body(body)
        .expect("valid response")
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    filters: Option<String>,
    /// Before API 1.25: a reference pattern.
    filter: Option<String>,
    all: Option<String>,
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let mut filters = Filters::parse(q.filters.as_deref(), super::image_filter::NAMES)?;
    if let Some(r) = q.filter.filter(|r| !r.is_empty()) {
        filters.add("reference", r);
    }
    let mut list = d.images.list_images(filters).await?;
    // Build steps' images show with `all`, as Docker's intermediate images do.
    if !q.all.as_deref().is_some_and(|a| a == "1" || a == "true") {
        list.retain(|i| !d.builds.cache.is_intermediate(&i.id));
    }
    Ok(Json(list))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CreateQuery {
    from_image: Option<String>,
    from_src: Option<String>,
    repo: Option<String>,
    tag: Option<String>,
    #[serde(default)]
    changes: Vec<String>,
    /// `docker import -m`: the history entry's comment.
    message: Option<String>,
}

/// Joins Docker's `fromImage` + `tag` (a digest or an explicit tag in the name wins).
fn full_ref(name: &str, tag: Option<&str>) -> String {
    match tag.filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with("sha256:") => format!("{name}@{t}"),
        Some(t) => {
            let last = name.rsplit('/').next().unwrap_or(name);
            if name.contains('@') || last.contains(':') {
                name.to_string()
            } else {
                format!("{name}:{t}")
            }
        }
        None => name.to_string(),
    }
}

/// The credentials of Docker's `X-Registry-Auth` header (anonymous without one).
fn registry_auth(headers: &axum::http::HeaderMap) -> ApiResult<skiff_store::registry::Secret> {
    match headers.get("x-registry-auth") {
        None => Ok(skiff_store::registry::Secret::Anonymous),
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| DaemonError::invalid("X-Registry-Auth header: not ASCII base64"))?;
            Ok(skiff_store::registry::Credential::from_registry_auth_header(v)?.secret)
        }
    }
}

pub async fn create(
    State(d): State<Arc<Daemon>>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    // `changes` repeats, which serde_urlencoded's struct form cannot collect: parse by hand.
    let mut q = CreateQuery::default();
    for (k, v) in url_pairs(raw.as_deref().unwrap_or("")) {
        // Clients (bollard among them) send unset parameters as empty strings.
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "fromImage" => q.from_image = Some(v),
            "fromSrc" => q.from_src = Some(v),
            "repo" => q.repo = Some(v),
            "tag" => q.tag = Some(v),
            "changes" => q.changes.push(v),
            "message" => q.message = Some(v),
            _ => {}
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    if let Some(src) = q.from_src {
        if src != "-" {
            return Err(DaemonError::invalid(
                "only fromSrc=- (a tarball in the body) is supported",
            ));
        }
        let reference = match q.repo {
            Some(r) => full_ref(&r, q.tag.as_deref()),
            None => return Err(DaemonError::invalid("import needs repo")),
        };
        let id = d
            .images
            .import_image(body, &reference, &q.changes, q.message)
            .await?;
        let _ = tx.send(serde_json::json!({ "status": id })).await;
        drop(tx);
        return Ok(streaming(json_lines_body(rx)));
    }
    let name = q
        .from_image
        .ok_or_else(|| DaemonError::invalid("fromImage or fromSrc is required"))?;
    let reference = full_ref(&name, q.tag.as_deref());
    // Fail before streaming when the reference is malformed, so the status code says so.
    d.images.check_reference(&reference)?;
    let secret = registry_auth(&headers)?;
    let (begun_tx, begun) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        d.images
            .pull_image_stream(reference, secret, tx, begun_tx)
            .await;
    });
    // As dockerd, which resolves the manifest before its 200: a pull that fails before
    // its first progress line is an error status, not a 200 with the error in the body.
    if let Ok(Err(e)) = begun.await {
        return Err(e);
    }
    Ok(streaming(json_lines_body(rx)))
}

/// Decodes `a=b&c=d` with percent- and plus-decoding.
pub fn url_pairs(q: &str) -> Vec<(String, String)> {
    fn dec(s: &str) -> String {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

/// The image `id` was built or committed from, while that image is still here (Docker's
/// `Parent`; empty for pulled and imported images).
fn parent_image(d: &Daemon, id: &str) -> Option<String> {
    d.builds
        .cache
        .parent_of(id)
        .filter(|p| d.images.store().image(p).is_ok())
}

pub async fn get_by_name(
    State(d): State<Arc<Daemon>>,
    Path(rest): Path<String>,
) -> ApiResult<Response> {
    if let Some(name) = rest.strip_suffix("/json") {
        let mut v = serde_json::to_value(d.images.inspect_image(name).await?)
            .map_err(|e| DaemonError::Internal(e.to_string()))?;
        // Deprecated in API 1.45, but docker-compose 1.29 reads it when it recreates a
        // container (`ContainerConfig.Volumes`).
        v["ContainerConfig"] = v["Config"].clone();
        if let Some(id) = v["Id"].as_str() {
            v["Parent"] = serde_json::json!(parent_image(&d, id).unwrap_or_default());
        }
        return Ok(Json(v).into_response());
    }
    if let Some(name) = rest.strip_suffix("/get") {
        return super::api_archive::save_names(&d, vec![name.to_string()]).await;
    }
    if let Some(name) = rest.strip_suffix("/history") {
        let h = super::image_history::history(d.images.store(), name, |id| parent_image(&d, id))?;
        return Ok(Json(h).into_response());
    }
    Err(DaemonError::NoSuchEndpoint(format!("/images/{rest}")))
}

#[derive(Deserialize, Default)]
pub struct TagQuery {
    repo: Option<String>,
    tag: Option<String>,
    /// skiff's push extension: recompress layers (`zstd:chunked`, `gzip`, `zstd`).
    compression: Option<String>,
}

pub async fn post_by_name(
    State(d): State<Arc<Daemon>>,
    Path(rest): Path<String>,
    Query(q): Query<TagQuery>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    if let Some(name) = rest.strip_suffix("/tag") {
        let repo = q
            .repo
            .ok_or_else(|| DaemonError::invalid("repo is required"))?;
        d.images
            .tag_image(name, &full_ref(&repo, q.tag.as_deref().or(Some("latest"))))
            .await?;
        return Ok(StatusCode::CREATED.into_response());
    }
    if let Some(name) = rest.strip_suffix("/push") {
        let reference = full_ref(name, q.tag.as_deref());
        let secret = registry_auth(&headers)?;
        let compression = match q.compression.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(skiff_store::PushCompression::parse(c).ok_or_else(|| {
                DaemonError::Invalid(format!(
                    "unknown compression {c:?}: zstd:chunked, estargz, gzip or zstd"
                ))
            })?),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            d.images
                .push_image_stream(reference, secret, compression, tx)
                .await;
        });
        return Ok(streaming(json_lines_body(rx)));
    }
    Err(DaemonError::NoSuchEndpoint(format!("/images/{rest}")))
}

#[derive(Deserialize, Default)]
pub struct DeleteQuery {
    force: Option<String>,
}

pub async fn delete(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<impl IntoResponse> {
    let force = matches!(q.force.as_deref(), Some("1") | Some("true"));
    Ok(Json(d.images.remove_image(&name, force).await?))
}

#[derive(Deserialize, Default)]
pub struct PruneQuery {
    filters: Option<String>,
}

pub async fn prune(
    State(d): State<Arc<Daemon>>,
    Query(q): Query<PruneQuery>,
) -> ApiResult<impl IntoResponse> {
    // {"dangling":["false"]} (prune -a) removes every image no container uses.
    let filters = Filters::parse(q.filters.as_deref(), &["dangling"])?;
    let all = filters.bool("dangling")? == Some(false);
    Ok(Json(d.images.prune_images(all).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_join_like_docker() {
        assert_eq!(full_ref("busybox", Some("latest")), "busybox:latest");
        assert_eq!(
            full_ref("127.0.0.1:5000/a", Some("v1")),
            "127.0.0.1:5000/a:v1"
        );
        assert_eq!(full_ref("a:v2", Some("latest")), "a:v2");
        assert_eq!(full_ref("a", Some("sha256:abc")), "a@sha256:abc");
        assert_eq!(full_ref("a", None), "a");
    }

    #[test]
    fn query_pairs_decode() {
        let p = url_pairs("fromSrc=-&changes=CMD+%5B%22sh%22%5D&changes=ENV+A%3D1");
        assert_eq!(p[1], ("changes".into(), "CMD [\"sh\"]".into()));
        assert_eq!(p[2], ("changes".into(), "ENV A=1".into()));
    }
}
