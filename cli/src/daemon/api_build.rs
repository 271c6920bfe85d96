//! `POST /build` (Docker's classic builder endpoint: a tar context in, JSON progress lines
//! out) and `POST /build/prune`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::api_images::url_pairs;
use super::build::BuildOptions;
use super::error::{ApiResult, DaemonError};
use super::query_bool::truthy;
use super::services::Daemon;

/// Reads Docker's `/build` query parameters; what skiff cannot do is refused, not ignored.
pub fn options(raw: &str) -> ApiResult<BuildOptions> {
    let mut o = BuildOptions {
        dockerfile: "Dockerfile".to_string(),
        remove: true,
        ..Default::default()
    };
    for (k, v) in url_pairs(raw) {
        match k.as_str() {
            "dockerfile" if !v.is_empty() => o.dockerfile = v,
            "t" if !v.is_empty() => o.tags.push(v),
            "buildargs" if !v.is_empty() => {
                o.build_args = serde_json::from_str(&v)
                    .map_err(|e| DaemonError::Invalid(format!("buildargs: {e}")))?
            }
            "labels" if !v.is_empty() => {
                o.labels = serde_json::from_str(&v)
                    .map_err(|e| DaemonError::Invalid(format!("labels: {e}")))?
            }
            "target" if !v.is_empty() => o.target = Some(v),
            "nocache" => o.no_cache = truthy(&v),
            "pull" => o.pull = truthy(&v),
            "q" => o.quiet = truthy(&v),
            "rm" => o.remove = truthy(&v),
            "forcerm" => o.force_remove = truthy(&v),
            "networkmode" => {
                o.network_mode = match v.as_str() {
                    "" | "default" | "bridge" => "bridge".to_string(),
                    "host" | "none" => v,
                    other => {
                        return Err(DaemonError::Invalid(format!(
                        "network mode {other:?} is not supported for builds (bridge, host, none)"
                    )))
                    }
                }
            }
            "remote" if !v.is_empty() => {
                return Err(DaemonError::Invalid(format!(
                "remote build contexts ({v}) are not supported by skiff: send the context as a tar"
            )))
            }
            "platform" if !v.is_empty() => {
                let host = format!(
                    "linux/{}",
                    skiff_store::registry::manifest::host_platform().architecture
                );
                if v != host && v != "linux" && !host.starts_with(&format!("{v}/")) {
                    return Err(DaemonError::Invalid(format!(
                        "platform {v} is not supported: skiff builds for the host's platform ({host}) only"
                    )));
                }
            }
            "version" if v == "2" => {
                return Err(DaemonError::Invalid(
                    "BuildKit is not supported by skiff: build with DOCKER_BUILDKIT=0".into(),
                ))
            }
            "squash" if truthy(&v) => {
                return Err(DaemonError::Invalid(
                    "--squash is not supported by skiff".into(),
                ))
            }
            "outputs" if !v.is_empty() && v != "[]" => {
                return Err(DaemonError::Invalid(
                    "build outputs are not supported by skiff".into(),
                ))
            }
            _ => {}
        }
    }
    Ok(o)
}

/// `X-Registry-Config`: base64url JSON `{"registry": AuthConfig, ...}` (the docker CLI
/// sends every credential it has); keyed by `host[:port]`.
fn registry_config(
    headers: &axum::http::HeaderMap,
) -> ApiResult<std::collections::HashMap<String, skiff_store::registry::Secret>> {
    use base64::Engine as _;
    let Some(v) = headers.get("x-registry-config") else {
        return Ok(Default::default());
    };
    let bad = |why: &str| DaemonError::Invalid(format!("X-Registry-Config header: {why}"));
    let text = v.to_str().map_err(|_| bad("not ASCII"))?.trim();
    if text.is_empty() {
        return Ok(Default::default());
    }
    let raw = [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD,
    ]
    .iter()
    .find_map(|e| e.decode(text).ok())
    .ok_or_else(|| bad("not base64"))?;
    let map: std::collections::HashMap<String, skiff_store::registry::credentials::AuthConfig> =
        serde_json::from_slice(&raw).map_err(|_| bad("not a JSON object of auth configs"))?;
    Ok(map
        .into_iter()
        .map(|(k, a)| (super::images::registry_of_server_address(&k), a.secret()))
        .collect())
}

pub async fn build(
    State(d): State<Arc<Daemon>>,
    RawQuery(raw): RawQuery,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let mut opts = options(raw.as_deref().unwrap_or(""))?;
    opts.registry_auth = registry_config(&headers)?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let builds = d.builds.clone();
    tokio::spawn(async move {
        builds.build_stream(body, opts, tx).await;
    });
    Ok(super::api_images::streaming(
        super::api_images::json_lines_body(rx),
    ))
}

/// `POST /commit?container=&repo=&tag=&comment=&author=&changes=`: 201 `{"Id": ...}`.
/// The body (a container config to merge) is refused when it sets anything.
pub async fn commit(
    State(d): State<Arc<Daemon>>,
    RawQuery(raw): RawQuery,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    // dockerd pauses unless told not to.
    let mut o = super::build::commit::CommitOptions {
        pause: true,
        ..Default::default()
    };
    let (mut repo, mut tag) = (String::new(), String::new());
    for (k, v) in url_pairs(raw.as_deref().unwrap_or("")) {
        match k.as_str() {
            "container" => o.container = v,
            "repo" => repo = v,
            "tag" => tag = v,
            "comment" => o.comment = Some(v),
            "author" => o.author = Some(v),
            "changes" if !v.is_empty() => o.changes.push(v),
            "pause" => o.pause = truthy(&v),
            _ => {}
        }
    }
    if o.container.is_empty() {
        return Err(DaemonError::invalid("container is required"));
    }
    let config: serde_json::Value = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| DaemonError::Invalid(format!("commit config: {e}")))?
    };
    let set = config.as_object().is_some_and(|m| {
        m.values().any(|v| {
            !v.is_null()
                && v != &serde_json::json!({})
                && v != &serde_json::json!([])
                && v != &serde_json::json!("")
                && v != &serde_json::json!(false)
                && v != &serde_json::json!(0)
        })
    });
    if set {
        return Err(DaemonError::Invalid(
            "a config in the commit body is not supported by skiff: use --change".into(),
        ));
    }
    if !repo.is_empty() {
        o.reference = Some(if tag.is_empty() {
            repo
        } else {
            format!("{repo}:{tag}")
        });
    }
    let id = d.builds.commit(o).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({"Id": id}))).into_response())
}

/// `builder prune`: the step images the build cache keeps, then unreferenced chunks.
pub async fn prune(State(d): State<Arc<Daemon>>) -> ApiResult<impl IntoResponse> {
    let (ids, mut reclaimed) = d.builds.prune().await?;
    reclaimed += d.images.prune_cache().await?;
    Ok((
        StatusCode::OK,
        Json(serde_json::json!({
            "CachesDeleted": ids,
            "SpaceReclaimed": reclaimed,
        })),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_options() {
        let o = options("t=a%3A1&t=b&dockerfile=sub%2FDf&buildargs=%7B%22A%22%3A%221%22%2C%22B%22%3Anull%7D&nocache=1&q=1&rm=0&target=build&labels=%7B%22l%22%3A%22v%22%7D").unwrap();
        assert_eq!(o.tags, vec!["a:1", "b"]);
        assert_eq!(o.dockerfile, "sub/Df");
        assert_eq!(o.build_args.get("A"), Some(&Some("1".to_string())));
        assert_eq!(o.build_args.get("B"), Some(&None));
        assert!(o.no_cache && o.quiet && !o.remove);
        assert_eq!(o.target.as_deref(), Some("build"));
        assert_eq!(o.labels.get("l").map(String::as_str), Some("v"));
        assert!(options("remote=https://x/y.git").is_err());
        assert!(options("version=2").is_err());
        let o = options("pull=False&rm=True&forcerm=0").unwrap();
        assert!(!o.pull && o.remove && !o.force_remove);
    }
}
