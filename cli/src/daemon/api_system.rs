//! System endpoints: `/_ping`, `/version`, `/info`, `/system/df`, `/build/prune`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use bollard::models::{SystemInfo, SystemVersion};

use super::error::ApiResult;
use super::services::Daemon;

/// The API version skiff speaks (Docker Engine API shapes).
pub const API_VERSION: &str = "1.43";
pub const MIN_API_VERSION: &str = "1.24";

pub async fn ping() -> impl IntoResponse {
    (
        [
            ("API-Version", API_VERSION),
            ("OSType", "linux"),
            ("Docker-Experimental", "false"),
            (
                header::CACHE_CONTROL.as_str(),
                "no-cache, no-store, must-revalidate",
            ),
        ],
        "OK",
    )
}

/// The engine's version; `SKIFF_TEST_VERSION` overrides it so tests can tell a copied
/// binary (an "upgrade") from the one it replaced without building another.
fn server_version() -> String {
    std::env::var("SKIFF_TEST_VERSION").unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_string())
}

fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `POST /auth`: validates credentials with the registry (Docker's `AuthConfig` body);
/// `{"Status": "Login Succeeded", "IdentityToken": ...}`.
pub async fn auth(
    State(d): State<Arc<Daemon>>,
    body: axum::body::Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    // Not echoed in errors: the body holds the password.
    let auth: skiff_store::registry::credentials::AuthConfig = serde_json::from_slice(&body)
        .map_err(|_| {
            super::error::DaemonError::invalid("POST /auth: the body is not a JSON AuthConfig")
        })?;
    let token = d.images.login(&auth).await?;
    Ok(Json(
        serde_json::json!({"Status": "Login Succeeded", "IdentityToken": token}),
    ))
}

pub async fn version() -> Json<SystemVersion> {
    Json(SystemVersion {
        version: Some(server_version()),
        api_version: Some(API_VERSION.to_string()),
        min_api_version: Some(MIN_API_VERSION.to_string()),
        os: Some("linux".to_string()),
        arch: Some(
            std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
        ),
        kernel_version: Some(kernel_version()),
        git_commit: Some("skiff".to_string()),
        go_version: Some("n/a (Rust)".to_string()),
        platform: Some(bollard::models::SystemVersionPlatform {
            name: "skiff".to_string(),
        }),
        ..Default::default()
    })
}

pub async fn info(State(d): State<Arc<Daemon>>) -> ApiResult<Json<SystemInfo>> {
    let counts = d.containers.counts()?;
    let mut info = SystemInfo {
        id: Some(super::host_info::engine_id(&d.paths.data_root)),
        containers: Some(counts.total),
        containers_running: Some(counts.running),
        containers_stopped: Some(counts.stopped),
        containers_paused: Some(0),
        images: Some(d.images.image_count()? as i64),
        driver: Some("overlay on skiff-fuse (lazy zstd:chunked)".to_string()),
        driver_status: Some({
            let mut status = d.images.cache_status()?;
            status.push(vec![
                "Live restore".to_string(),
                if !d.live_restore {
                    "off (containers stop with the daemon)".to_string()
                } else if d.fuse_resend() {
                    "on (FUSE requests in flight at a restart are resent)".to_string()
                } else {
                    "on, but this kernel cannot resend FUSE requests (FUSE_NOTIFY_RESEND, Linux 6.9+): reads in flight at a restart fail".to_string()
                },
            ]);
            status
        }),
        live_restore_enabled: Some(d.live_restore),
        registry_config: Some(d.images.registry_config()),
        // Where `docker login` without a server logs in (Docker Hub, as dockerd says).
        index_server_address: Some(skiff_store::registry::credentials::DOCKER_HUB_KEY.to_string()),
        docker_root_dir: Some(d.paths.data_root.display().to_string()),
        kernel_version: Some(kernel_version()),
        operating_system: Some(super::host_info::operating_system()),
        default_address_pools: Some(
            d.networks
                .pools()
                .iter()
                .map(|p| bollard::models::SystemInfoDefaultAddressPools {
                    base: Some(p.base.to_string()),
                    size: Some(i64::from(p.size)),
                })
                .collect(),
        ),
        os_type: Some("linux".to_string()),
        architecture: Some(std::env::consts::ARCH.to_string()),
        ncpu: Some(
            std::thread::available_parallelism()
                .map(|n| n.get() as i64)
                .unwrap_or(1),
        ),
        server_version: Some(server_version()),
        name: nix::unistd::gethostname()
            .ok()
            .map(|h| h.to_string_lossy().into_owned()),
        cgroup_version: Some(if d.cgroup_version() == "2" {
            bollard::models::SystemInfoCgroupVersionEnum::_2
        } else {
            bollard::models::SystemInfoCgroupVersionEnum::_1
        }),
        ..Default::default()
    };
    super::host_info::fill(&mut info, &d.containers.log_defaults.0);
    Ok(Json(info))
}

pub async fn df(State(d): State<Arc<Daemon>>) -> ApiResult<impl IntoResponse> {
    // Build steps' images are build cache (as Docker counts them), not images.
    let mut usage = d
        .images
        .disk_usage(|id| d.builds.cache.is_intermediate(id))
        .await?;
    if let Some(cache) = usage["BuildCache"].as_array_mut() {
        cache.extend(d.builds.disk_usage());
    }
    Ok(Json(usage))
}
