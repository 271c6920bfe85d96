//! The images service: list, inspect, pull, import, tag, push, remove and prune, over the
//! store and the image mounts.

use std::sync::Arc;

use bollard::models::{ImageDeleteResponseItem, ImageInspect, ImageSummary};
use serde_json::json;
use tokio::sync::mpsc::Sender;

use super::containers::ContainerService;
use super::error::DaemonError;
use super::mounts::ImageMounts;
use super::paths::Paths;

type ApiResult<T> = Result<T, DaemonError>;

pub struct ImageService {
    paths: Paths,
    store: skiff_store::Store,
    mounts: Arc<ImageMounts>,
    /// To know which images containers use.
    containers: Arc<ContainerService>,
}

fn delete_item(r: skiff_store::Removed) -> ImageDeleteResponseItem {
    match r {
        // Docker answers familiar names (`bb1:extra`, not `docker.io/library/bb1:extra`).
        skiff_store::Removed::Untagged(t) => ImageDeleteResponseItem {
            untagged: Some(familiar(&t)),
            deleted: None,
        },
        skiff_store::Removed::Deleted(d) => ImageDeleteResponseItem {
            untagged: None,
            deleted: Some(d),
        },
    }
}

/// `busybox:latest` for `docker.io/library/busybox:latest`, as Docker shows names.
fn familiar(name: &str) -> String {
    skiff_store::ImageReference::parse(name)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| name.to_string())
}

/// `docker.io`, `host[:port]`: the registry a login's `serveraddress` names
/// (`https://index.docker.io/v1/`, `https://host:5000`, `host:5000/v2/`, or empty).
pub fn registry_of_server_address(addr: &str) -> String {
    let rest = addr
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = rest.split('/').next().unwrap_or("");
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

/// Streams a request body into a new file (imports can be gigabytes: never buffered).
async fn write_body(body: axum::body::Body, path: &std::path::Path) -> std::io::Result<()> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::File::create(path).await?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        f.write_all(&chunk.map_err(std::io::Error::other)?).await?;
    }
    f.flush().await
}

/// Answered once by a pull: `Ok` when its progress stream begins, or the error it failed
/// with before that.
pub type PullBegun = tokio::sync::oneshot::Sender<ApiResult<()>>;

/// A failed pull in dockerd's terms: a tag, digest or repository the registry does not
/// know is its `manifest unknown`; the rest are the pull's failure as the store says it.
fn pull_error(reference: &str, e: skiff_store::StoreError) -> DaemonError {
    match e {
        skiff_store::StoreError::NotFound { ref what, .. } if what.contains("manifest") => {
            DaemonError::ManifestUnknown(familiar(reference))
        }
        e => DaemonError::PullFailed(Box::new(e)),
    }
}

/// A failure inside a progress stream, in Docker's shape (the status code is already sent).
fn stream_error(e: &dyn std::fmt::Display) -> serde_json::Value {
    json!({"error": e.to_string(), "errorDetail": {"message": e.to_string()}})
}

/// Docker's first push line, `The push refers to repository [...]`; returns the parsed
/// reference.
async fn push_first_line(
    reference: &str,
    tx: &Sender<serde_json::Value>,
) -> Option<skiff_store::ImageReference> {
    let parsed = skiff_store::ImageReference::parse(reference).ok()?;
    let _ = tx
        .send(json!({"status": format!("The push refers to repository [{}]", parsed.name())}))
        .await;
    Some(parsed)
}

/// Unix seconds of an RFC 3339 time (0 when absent or malformed).
fn unix_time(t: Option<&str>) -> i64 {
    t.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

impl ImageService {
    pub fn new(
        paths: Paths,
        store: skiff_store::Store,
        mounts: Arc<ImageMounts>,
        containers: Arc<ContainerService>,
    ) -> ImageService {
        ImageService {
            paths,
            store,
            mounts,
            containers,
        }
    }

    /// The image store (skiff's own endpoints: profiles, stats).
    pub fn store(&self) -> &skiff_store::Store {
        &self.store
    }

    /// `/info`'s `RegistryConfig` in Docker's shape: mirrors, and one index entry per
    /// registry skiff treats specially (Docker Hub with its mirrors, insecure ones).
    pub fn registry_config(&self) -> bollard::models::RegistryServiceConfig {
        let reg = self.store.registry();
        let mirrors = reg.mirrors();
        let mut index = std::collections::HashMap::new();
        index.insert(
            "docker.io".to_string(),
            bollard::models::IndexInfo {
                name: Some("docker.io".to_string()),
                mirrors: Some(mirrors.clone()),
                secure: Some(true),
                official: Some(true),
            },
        );
        let insecure = reg.insecure_registries();
        for r in &insecure {
            index.insert(
                r.clone(),
                bollard::models::IndexInfo {
                    name: Some(r.clone()),
                    mirrors: Some(vec![]),
                    secure: Some(false),
                    official: Some(false),
                },
            );
        }
        // Loopback registries are insecure, as in Docker, and the configured ranges.
        let mut cidrs = vec!["::1/128".to_string(), "127.0.0.0/8".to_string()];
        cidrs.extend(reg.insecure_cidrs());
        bollard::models::RegistryServiceConfig {
            insecure_registry_cidrs: Some(cidrs),
            index_configs: Some(index),
            mirrors: Some(mirrors),
            ..Default::default()
        }
    }

    pub fn image_count(&self) -> ApiResult<usize> {
        Ok(self.store.images()?.len())
    }

    pub fn check_reference(&self, reference: &str) -> ApiResult<()> {
        skiff_store::ImageReference::parse(reference)
            .map(|_| ())
            .map_err(DaemonError::from)
    }

    /// Docker's `RepoDigests` (familiar `repo@sha256:...` names the image was pulled or
    /// pushed as).
    fn repo_digests(&self, id: &str) -> Vec<String> {
        match self.store.repo_digests(id) {
            Ok(d) => d.iter().map(|n| familiar(n)).collect(),
            Err(e) => {
                tracing::warn!(id, "reading repo digests: {e}");
                Vec::new()
            }
        }
    }

    /// `GET /images/json` with Docker's `filters` (see `image_filter`).
    pub async fn list_images(
        &self,
        filters: super::filters::Filters,
    ) -> ApiResult<Vec<ImageSummary>> {
        let used: Vec<String> = self
            .containers
            .images_in_use()?
            .into_iter()
            .map(|(image, _)| image)
            .collect();
        let query = super::image_filter::ImageQuery::new(filters, |r| {
            let i = self
                .store
                .image(r)
                .map_err(|_| DaemonError::NoSuchImage(r.to_string()))?;
            Ok(unix_time(i.created.as_deref()))
        })?;
        let mut out = Vec::new();
        for i in self.store.images()? {
            let labels = self
                .store
                .image(&i.id)
                .ok()
                .and_then(|r| r.config.config().as_ref().and_then(|c| c.labels().clone()))
                .unwrap_or_default();
            let row = super::image_filter::ImageRow {
                tags: i.repo_tags.iter().map(|t| familiar(t)).collect(),
                created: unix_time(i.created.as_deref()),
                labels,
            };
            let Some(repo_tags) = query.select(&row) else {
                continue;
            };
            out.push(ImageSummary {
                containers: used.iter().filter(|u| **u == i.id).count() as i64,
                id: i.id.clone(),
                parent_id: String::new(),
                repo_tags,
                repo_digests: self.repo_digests(&i.id),
                created: row.created,
                size: i.size as i64,
                // Deprecated, still sent by API 1.43: the same as `Size`.
                virtual_size: Some(i.size as i64),
                shared_size: -1,
                labels: row.labels,
                ..Default::default()
            });
        }
        Ok(out)
    }

    /// `GET /images/{name}/json` (views.rs shapes the JSON).
    pub async fn inspect_image(&self, name: &str) -> ApiResult<serde_json::Value> {
        let i = self
            .store
            .image(name)
            .map_err(|_| DaemonError::NoSuchImage(name.to_string()))?;
        let cfg = i.config.config().clone().unwrap_or_default();
        let mut config = super::views::image_config(&cfg);
        // Docker's keys oci-spec does not model (a built image's HEALTHCHECK, ONBUILD, SHELL).
        // The image config's top-level `author` and `comment` (Docker's image JSON; commit
        // -a / -m write them).
        let mut top = (String::new(), String::new());
        if let Ok(raw) = serde_json::from_slice::<serde_json::Value>(&i.config_bytes) {
            let text = |k: &str| raw[k].as_str().unwrap_or_default().to_string();
            top = (text("author"), text("comment"));
            let c = &raw["config"];
            config.healthcheck = serde_json::from_value(c["Healthcheck"].clone()).ok();
            config.on_build = serde_json::from_value(c["OnBuild"].clone()).ok();
            config.shell = serde_json::from_value(c["Shell"].clone()).ok();
        }
        let last_tag_time = self.store.last_tag_time(&i.id).unwrap_or_else(|e| {
            tracing::warn!(id = %i.id, "reading the last tag time: {e}");
            None
        });
        Ok(super::views::image_inspect(&ImageInspect {
            id: Some(i.id.clone()),
            repo_tags: Some(i.repo_tags.iter().map(|t| familiar(t)).collect()),
            repo_digests: Some(self.repo_digests(&i.id)),
            created: i.created.clone(),
            architecture: Some(i.config.architecture().to_string()),
            os: Some(i.config.os().to_string()),
            size: Some(i.size as i64),
            config: Some(config),
            parent: Some(String::new()),
            comment: Some(top.1),
            docker_version: Some(String::new()),
            author: Some(top.0),
            variant: i.config.variant().clone(),
            virtual_size: Some(i.size as i64),
            graph_driver: Some(bollard::models::DriverData {
                name: "overlay2".to_string(),
                data: Default::default(),
            }),
            // Docker's zero time for an image never tagged (pulled).
            metadata: Some(bollard::models::ImageInspectMetadata {
                last_tag_time: Some(
                    last_tag_time.unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string()),
                ),
            }),
            root_fs: Some(bollard::models::ImageInspectRootFs {
                typ: "layers".to_string(),
                layers: Some(i.diff_ids.clone()),
            }),
            ..Default::default()
        }))
    }

    /// Pulls, streaming Docker's progress JSON lines into `tx`. `secret` (the client's
    /// `X-Registry-Auth`) is kept for the repository: a lazily pulled image fetches with
    /// it, and renews its tokens with it, long after the pull. `begun` answers once: `Ok`
    /// as the first line is written, or the error of a pull that failed before it, which
    /// the caller answers with an error status (dockerd resolves the manifest before it
    /// writes its 200); later errors go into the stream.
    pub async fn pull_image_stream(
        &self,
        reference: String,
        secret: skiff_store::registry::Secret,
        tx: Sender<serde_json::Value>,
        begun: PullBegun,
    ) {
        let parsed = match skiff_store::ImageReference::parse(&reference) {
            Ok(r) => r,
            Err(e) => {
                let _ = begun.send(Err(e.into()));
                return;
            }
        };
        // As dockerd: `<tag or digest>: Pulling from <repository>` once the manifest is
        // found (a missing one is only its error), before the first layer's line.
        let pulling = json!({
            "status": format!("Pulling from {}", parsed.repository),
            "id": parsed.digest.clone().or_else(|| parsed.tag.clone()).unwrap_or_else(|| "latest".into()),
        });
        // Taken by whoever writes the first line: the first progress report, or the end.
        let begun = Arc::new(std::sync::Mutex::new(Some(begun)));
        let take_begun = {
            let begun = begun.clone();
            move || begun.lock().expect("pull begun lock").take()
        };
        let progress_tx = tx.clone();
        let (first_line, first_take) = (pulling.clone(), take_begun.clone());
        let progress: Box<dyn Fn(skiff_store::PullProgress) + Send + Sync> =
            Box::new(move |p: skiff_store::PullProgress| {
                if let Some(b) = first_take() {
                    let _ = b.send(Ok(()));
                    let _ = progress_tx.try_send(first_line.clone());
                }
                let mut v = json!({"status": p.status.docker_status(), "id": p.short_id()});
                if p.total > 0 {
                    v["progressDetail"] = json!({"current": p.current, "total": p.total});
                }
                let _ = progress_tx.try_send(v);
            });
        let before = self.store.bytes_downloaded();
        let had = self.store.image(&reference).ok().map(|i| i.id);
        // The pull authenticates with what this client sent (Docker's semantics); the
        // credentials are kept for the image's later lazy reads once they worked.
        let pulled = skiff_store::registry::request_auth::with_request_secret(
            secret.clone(),
            self.store.pull(&reference, &*progress),
        )
        .await;
        match pulled {
            Ok(img) => {
                if let Some(b) = take_begun() {
                    let _ = b.send(Ok(()));
                    let _ = tx.send(pulling).await;
                }
                self.store
                    .registry()
                    .remember_credentials(&parsed, secret.clone());
                let fetched = self.store.bytes_downloaded().saturating_sub(before);
                let fresh = had.as_deref() != Some(img.id.as_str());
                // Only a pull that brought the image lazily says so (an up-to-date one
                // fetched nothing but the manifest).
                let lazy = fresh && img.layers.iter().any(|l| l.state == "lazy");
                let _ = tx
                    .send(json!({"status": format!("Digest: {}", img.manifest_digest)}))
                    .await;
                if lazy {
                    let _ = tx
                        .send(json!({"status": format!(
                            "Lazy image: fetched {} of {} (table of contents only; file data on demand)",
                            crate::client::format::human_size(fetched as i64),
                            crate::client::format::human_size(img.size as i64)
                        )}))
                        .await;
                }
                let _ = tx
                    .send(json!({"status": if !fresh {
                        format!("Status: Image is up to date for {reference}")
                    } else {
                        format!("Status: Downloaded newer image for {reference}")
                    }}))
                    .await;
                tracing::info!(reference = %reference, id = %img.id, lazy, fetched, "pulled image");
                self.event("pull", &familiar(&reference));
            }
            Err(e) => {
                if matches!(e, skiff_store::StoreError::Unauthorized { .. }) {
                    self.store.registry().forget_credentials(&parsed, &secret);
                }
                tracing::warn!(reference = %reference, "pull failed: {e}");
                let e = pull_error(&reference, e);
                match take_begun() {
                    Some(b) => {
                        let _ = b.send(Err(e));
                    }
                    None => {
                        let _ = tx.send(stream_error(&e)).await;
                    }
                }
            }
        }
    }

    pub async fn import_image(
        &self,
        tar: axum::body::Body,
        reference: &str,
        changes: &[String],
        message: Option<String>,
    ) -> ApiResult<String> {
        let mut changes = super::changes::parse(changes).map_err(DaemonError::Invalid)?;
        changes.comment = message;
        let tmp = self
            .paths
            .data_root
            .join("tmp")
            .join(format!("import-{}.tar", super::names::new_id()));
        if let Err(e) = write_body(tar, &tmp).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(DaemonError::io("receiving the import to", &tmp, e));
        }
        let res = self
            .store
            .import(&tmp, reference, &changes, skiff_store::Compression::Gzip)
            .await;
        let _ = tokio::fs::remove_file(&tmp).await;
        let img = res?;
        tracing::info!(reference = %reference, id = %img.id, "imported image");
        self.event("import", &img.id);
        Ok(img.id)
    }

    pub async fn tag_image(&self, source: &str, target: &str) -> ApiResult<()> {
        self.store.tag(source, target)?;
        // As dockerd: the actor is the image id, `name` the new reference.
        let id = self.store.image(target).map(|i| i.id)?;
        self.named_event("tag", &id, &familiar(target));
        Ok(())
    }

    /// An image event (`name` attribute: the reference it concerns).
    fn event(&self, action: &str, id: &str) {
        self.named_event(action, id, id);
    }

    /// An image event about image `id` with `name` attribute `name`.
    fn named_event(&self, action: &str, id: &str, name: &str) {
        self.containers.monitor.events.emit(
            "image",
            action,
            id,
            [("name".to_string(), name.to_string())],
        );
    }

    /// Pushes, with `secret` (the client's `X-Registry-Auth`) kept for the repository.
    pub async fn push_image_stream(
        &self,
        reference: String,
        secret: skiff_store::registry::Secret,
        compression: Option<skiff_store::PushCompression>,
        tx: Sender<serde_json::Value>,
    ) {
        // Docker's order: the repository line first, then each layer's progress.
        let parsed = push_first_line(&reference, &tx).await;
        let progress_tx = tx.clone();
        let manifest_size = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let size_seen = manifest_size.clone();
        let progress = move |p: skiff_store::PushProgress| {
            let (id, status) = match p {
                skiff_store::PushProgress::Preparing(id) => (id, "Preparing".to_string()),
                skiff_store::PushProgress::Done(id, done) => (id, done.docker_status()),
                skiff_store::PushProgress::Manifest(size) => {
                    size_seen.store(size, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
            };
            let hex = id.strip_prefix("sha256:").unwrap_or(&id);
            let short = &hex[..hex.len().min(12)];
            let _ =
                progress_tx.try_send(json!({"status": status, "progressDetail": {}, "id": short}));
        };
        let push = async {
            match compression {
                None => self.store.push_with_progress(&reference, &progress).await,
                Some(c) => self.store.push_recompressed(&reference, c, &progress).await,
            }
        };
        // As a pull: this client's credentials only, kept once they worked.
        let pushed =
            skiff_store::registry::request_auth::with_request_secret(secret.clone(), push).await;
        if pushed.is_ok() {
            if let Ok(parsed) = skiff_store::ImageReference::parse(&reference) {
                self.store.registry().remember_credentials(&parsed, secret);
            }
        }
        match pushed {
            Ok(digest) => {
                self.event("push", &familiar(&reference));
                let tag = parsed
                    .and_then(|r| r.tag)
                    .unwrap_or_else(|| "latest".to_string());
                let size = manifest_size.load(std::sync::atomic::Ordering::SeqCst);
                let _ = tx
                    .send(json!({"status": format!("{tag}: digest: {digest} size: {size}")}))
                    .await;
                let _ = tx
                    .send(json!({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": size}}))
                    .await;
            }
            Err(e) => {
                let _ = tx.send(stream_error(&e)).await;
            }
        }
    }

    /// `POST /auth`: checks `auth` against its registry as `docker login` does. Returns
    /// the identity token the registry issued ("" when none); nothing is stored.
    pub async fn login(
        &self,
        auth: &skiff_store::registry::credentials::AuthConfig,
    ) -> ApiResult<String> {
        let registry = registry_of_server_address(auth.serveraddress.as_deref().unwrap_or(""));
        let cred = skiff_store::registry::Credential {
            secret: auth.secret(),
            source: "the login request".to_string(),
        };
        let token = self.store.registry().login(&registry, &cred).await?;
        tracing::info!(registry = %registry, user = auth.username.as_deref().unwrap_or(""), "login succeeded");
        Ok(token.unwrap_or_default())
    }

    pub async fn remove_image(
        &self,
        name: &str,
        force: bool,
    ) -> ApiResult<Vec<ImageDeleteResponseItem>> {
        let img = self
            .store
            .image(name)
            .map_err(|_| DaemonError::NoSuchImage(name.to_string()))?;
        // Removing one of several tags only untags, even while containers use the image.
        let is_tag = skiff_store::ImageReference::parse(name)
            .ok()
            .and_then(|r| r.tagged())
            .is_some_and(|t| img.repo_tags.contains(&t));
        let untag_only = img.repo_tags.len() > 1 && is_tag;
        let users = self.containers.images_in_use()?;
        // Asked for by id (or an id prefix), dockerd words it from the image's side.
        let hex = img.id.trim_start_matches("sha256:");
        let asked = name.trim_start_matches("sha256:");
        let by_id = !is_tag && !asked.is_empty() && hex.starts_with(asked);
        let short = &hex[..12.min(hex.len())];
        if by_id {
            let mut stopped_user = None;
            for (_, cid) in users.iter().filter(|(image, _)| *image == img.id) {
                if self.containers.state(cid)?.status == skiff_runtime::state::Status::Running {
                    return Err(DaemonError::Conflict(format!(
                        "conflict: unable to delete {short} (cannot be forced) - image is being used by running container {}",
                        &cid[..12]
                    )));
                }
                stopped_user.get_or_insert(cid);
            }
            if let (Some(cid), false) = (stopped_user, force) {
                return Err(DaemonError::Conflict(format!(
                    "conflict: unable to delete {short} (must be forced) - image is being used by stopped container {}",
                    &cid[..12]
                )));
            }
            if img.repo_tags.len() > 1 && !force {
                return Err(DaemonError::Conflict(format!(
                    "conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories"
                )));
            }
        }
        if let Some((_, cid)) = users
            .iter()
            .find(|(image, _)| *image == img.id && !untag_only)
        {
            if !force || self.containers.state(cid)?.status == skiff_runtime::state::Status::Running
            {
                return Err(DaemonError::ImageInUse {
                    reference: name.to_string(),
                    container: cid[..12].to_string(),
                    image: img.id.trim_start_matches("sha256:")[..12].to_string(),
                });
            }
        }
        self.mounts.unmount_unused(&img.id);
        let removed = self.store.remove_image(name, force)?;
        for r in &removed {
            match r {
                skiff_store::Removed::Untagged(t) => {
                    self.named_event("untag", &img.id, &familiar(t))
                }
                skiff_store::Removed::Deleted(d) => self.event("delete", d),
            }
        }
        Ok(removed.into_iter().map(delete_item).collect())
    }

    pub async fn prune_images(&self, all: bool) -> ApiResult<serde_json::Value> {
        let used: Vec<String> = self
            .containers
            .images_in_use()?
            .into_iter()
            .map(|(image, _)| image)
            .collect();
        let mut deleted = Vec::new();
        let mut reclaimed = 0u64;
        for i in self.store.images()? {
            if used.contains(&i.id) || (!all && !i.repo_tags.is_empty()) {
                continue;
            }
            self.mounts.unmount_unused(&i.id);
            match self.store.remove_image(&i.id, true) {
                Ok(items) => {
                    reclaimed += i.size;
                    deleted.extend(items.into_iter().map(delete_item));
                }
                Err(e) => tracing::warn!(image = %i.id, "prune: {e}"),
            }
        }
        reclaimed += self.prune_cache().await?;
        Ok(json!({"ImagesDeleted": deleted, "SpaceReclaimed": reclaimed}))
    }

    /// Drops cached chunks and layer data no image references; returns the bytes freed.
    pub async fn prune_cache(&self) -> ApiResult<u64> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.prune_cache())
            .await
            .map_err(DaemonError::join)?
            .map_err(DaemonError::from)
    }

    /// `(label, value)` lines about the chunk cache, for `/info`'s DriverStatus.
    pub fn cache_status(&self) -> ApiResult<Vec<Vec<String>>> {
        let u = self.store.cache_stats()?;
        Ok(vec![
            vec![
                "Chunk cache".to_string(),
                format!("{} bytes in {} chunks", u.disk_bytes, u.chunks),
            ],
            vec![
                "Fetched from registries".to_string(),
                format!("{} bytes", u.counters.fetched_bytes),
            ],
        ])
    }

    /// `GET /system/df`. `hidden` images (build steps' intermediates, which Docker counts
    /// as build cache) are left out. `LayersSize` counts each distinct layer once; an
    /// image's `SharedSize` is the bytes of its layers another listed image also has (as
    /// dockerd computes them).
    pub async fn disk_usage(&self, hidden: impl Fn(&str) -> bool) -> ApiResult<serde_json::Value> {
        let cache = self.store.cache_stats()?;
        let mut images = self.list_images(Default::default()).await?;
        images.retain(|i| !hidden(&i.id));
        // Each image's distinct layers (by diff id) with their uncompressed sizes.
        let layers: Vec<std::collections::HashMap<String, u64>> = images
            .iter()
            .map(|i| {
                self.store.image(&i.id).map_or_else(
                    |_| Default::default(),
                    |r| {
                        r.layers
                            .iter()
                            .map(|l| (l.diff_id.clone(), l.tar_size))
                            .collect()
                    },
                )
            })
            .collect();
        let mut users: std::collections::HashMap<&str, (u64, usize)> = Default::default();
        for own in &layers {
            for (diff_id, size) in own {
                users.entry(diff_id.as_str()).or_insert((*size, 0)).1 += 1;
            }
        }
        let layers_size: u64 = users.values().map(|(size, _)| size).sum();
        for (image, own) in images.iter_mut().zip(&layers) {
            image.shared_size = own
                .keys()
                .filter_map(|d| users.get(d.as_str()).filter(|(_, n)| *n > 1))
                .map(|(size, _)| *size as i64)
                .sum();
        }
        let volumes: Vec<serde_json::Value> = self
            .containers
            .volumes
            .list()?
            .iter()
            .map(|v| {
                let mut view = self.containers.volumes.view(v);
                let dir = self.containers.volumes.data_dir(&v.name);
                let users = self
                    .containers
                    .volumes
                    .users(&v.name)
                    .map_or(0, |u| u.len());
                view["UsageData"] = json!({
                    "Size": super::containers::dir_size(&dir),
                    "RefCount": users,
                });
                view
            })
            .collect();
        let now = chrono::Utc::now();
        let mut containers = Vec::new();
        for (r, st) in self.containers.list()? {
            let restarting = self.containers.monitor.is_restarting(&r.id);
            let mut row = serde_json::to_value(super::views::summary(&r, &st, now, restarting))
                .unwrap_or_default();
            row["SizeRw"] = json!(self.containers.disk_usage(&r.id));
            row["SizeRootFs"] = json!(
                self.containers.disk_usage(&r.id)
                    + self.store.image(&r.image_id).map_or(0, |i| i.size)
            );
            containers.push(row);
        }
        Ok(json!({
            "LayersSize": layers_size,
            "Images": images,
            "Containers": containers,
            "Volumes": volumes,
            "BuildCache": [{
                "ID": "skiff-chunk-cache", "Type": "regular", "InUse": false, "Shared": true,
                "Description": "zstd:chunked chunk cache", "Size": cache.disk_bytes,
                "UsageCount": cache.chunks,
                // The cache lives as long as the data root; it is used by every lazy read.
                "CreatedAt": std::fs::metadata(&self.paths.data_root)
                    .and_then(|m| m.created().or_else(|_| m.modified()))
                    .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339())
                    .unwrap_or_default(),
                "LastUsedAt": chrono::Utc::now().to_rfc3339(),
            }],
        }))
    }
}
