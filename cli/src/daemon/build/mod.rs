//! The builds service: Dockerfile builds behind `POST /build` (Docker's classic builder:
//! a tar context in, JSON progress lines out). Every step makes an image on top of the
//! previous one, as the classic builder does: metadata steps commit a config, `COPY`/`ADD`
//! commit a layer staged from the context, `RUN` runs a container of the previous step's
//! image in skiff's own runtime and commits its overlay upper directory. Those step images
//! are the build cache (see [`cache`]). docs/build.md.

pub mod cache;
pub mod commit;
pub mod context;
pub mod copy;
pub mod dockerfile;
pub mod dockerignore;
pub mod expand;
mod instructions;
mod run_step;
mod stage;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::mpsc::Sender;

use super::containers::ContainerService;
use super::error::DaemonError;

/// Why a build failed; the message is what the client shows (`errorDetail`).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("dockerfile parse error on line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("Dockerfile line {line}: {message}")]
    Instruction { line: usize, message: String },
    #[error("COPY failed: {message}")]
    Copy { message: String },
    #[error("The command '{command}' returned a non-zero code: {code}")]
    RunFailed { command: String, code: i32 },
    #[error("{0}")]
    Context(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Daemon(#[from] DaemonError),
    #[error("{0}")]
    Store(#[from] skiff_store::StoreError),
    #[error("the client went away; build cancelled")]
    Cancelled,
}

/// `POST /build`'s options (Docker's query parameters).
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The Dockerfile's path inside the context (`Dockerfile`).
    pub dockerfile: String,
    pub tags: Vec<String>,
    /// `--build-arg`: a `None` value takes the variable from the daemon's environment
    /// (Docker's rule for `--build-arg NAME`).
    pub build_args: HashMap<String, Option<String>>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub pull: bool,
    pub quiet: bool,
    pub labels: BTreeMap<String, String>,
    /// Remove step containers after a successful step (`rm`, default true) and after a
    /// failed one too (`forcerm`).
    pub remove: bool,
    pub force_remove: bool,
    /// The network RUN steps join (`bridge` by default, `host`, `none`).
    pub network_mode: String,
    /// Credentials per registry (`X-Registry-Config`), for the images `FROM` pulls.
    pub registry_auth: HashMap<String, skiff_store::registry::Secret>,
}

/// Where a build writes its progress: Docker's JSON lines.
#[derive(Clone)]
pub struct Progress {
    tx: Sender<Value>,
    quiet: bool,
}

impl Progress {
    /// A `{"stream": ...}` line (suppressed with `quiet`).
    pub async fn say(&self, text: impl Into<String>) {
        if !self.quiet {
            let _ = self.tx.send(json!({"stream": text.into()})).await;
        }
    }

    pub async fn send(&self, v: Value) {
        let _ = self.tx.send(v).await;
    }

    /// Whether the client has gone (then the build stops).
    pub fn gone(&self) -> bool {
        self.tx.is_closed()
    }

    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

pub struct BuildService {
    pub(super) containers: Arc<ContainerService>,
    pub cache: cache::BuildCache,
}

/// The short id Docker prints (`3f57d9401f8d`).
pub fn short(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

impl BuildService {
    pub fn new(containers: Arc<ContainerService>) -> BuildService {
        let path = containers.paths.data_root.join("build-cache.json");
        BuildService {
            containers,
            cache: cache::BuildCache::open(path),
        }
    }

    fn store(&self) -> &skiff_store::Store {
        &self.containers.store
    }

    /// Where the unpacked directory of a layer a build made is kept (a `RUN` stacks it
    /// over the base image's mount): `<data-root>/build-layers/<hex>`.
    pub fn layer_dir(&self, digest: &str) -> PathBuf {
        self.containers
            .paths
            .data_root
            .join("build-layers")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// Keeps `dir` (a RUN's upper directory, a COPY's staged tree) as the directory of
    /// layer `digest`; an existing one wins (same content).
    pub fn adopt_layer_dir(&self, dir: PathBuf, digest: &str) {
        let target = self.layer_dir(digest);
        let res = if target.exists() {
            std::fs::remove_dir_all(&dir)
        } else {
            std::fs::create_dir_all(target.parent().expect("under data root"))
                .and_then(|()| std::fs::rename(&dir, &target))
        };
        if let Err(e) = res {
            tracing::warn!(dir = %dir.display(), "keeping a build layer's directory: {e}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// Deletes kept layer directories no image uses any more.
    fn prune_layer_dirs(&self) {
        let root = self.containers.paths.data_root.join("build-layers");
        let Ok(rd) = std::fs::read_dir(&root) else {
            return;
        };
        let mut used = std::collections::HashSet::new();
        for i in self.store().images().unwrap_or_default() {
            if let Ok(img) = self.store().image(&i.id) {
                for l in img.layers {
                    used.insert(l.digest.trim_start_matches("sha256:").to_string());
                }
            }
        }
        for e in rd.flatten() {
            if !used.contains(&*e.file_name().to_string_lossy()) {
                if let Err(err) = std::fs::remove_dir_all(e.path()) {
                    tracing::warn!(dir = %e.path().display(), "pruning a build layer's directory: {err}");
                }
            }
        }
    }

    /// Runs a build of the context tar `body`, streaming progress into `tx`; the last
    /// line is the image (`aux.ID` + `Successfully built`) or the error.
    pub async fn build_stream(
        &self,
        body: axum::body::Body,
        opts: BuildOptions,
        tx: Sender<Value>,
    ) {
        let progress = Progress {
            tx,
            quiet: opts.quiet,
        };
        match self.build(body, &opts, &progress).await {
            Ok(id) => {
                progress.send(json!({"aux": {"ID": id}})).await;
                if opts.quiet {
                    progress.send(json!({"stream": format!("{id}\n")})).await;
                } else {
                    progress
                        .say(format!("Successfully built {}\n", short(&id)))
                        .await;
                    for t in &opts.tags {
                        progress
                            .say(format!("Successfully tagged {}\n", familiar(t)))
                            .await;
                    }
                }
            }
            Err(e) => {
                tracing::info!("build failed: {e}");
                let msg = e.to_string();
                // As dockerd: a failed RUN carries its exit code, which the docker CLI
                // exits with.
                let detail = match &e {
                    BuildError::RunFailed { code, .. } => json!({"message": msg, "code": code}),
                    _ => json!({"message": msg}),
                };
                progress
                    .send(json!({"errorDetail": detail, "error": msg}))
                    .await;
            }
        }
    }

    async fn build(
        &self,
        body: axum::body::Body,
        opts: &BuildOptions,
        progress: &Progress,
    ) -> Result<String, BuildError> {
        for t in &opts.tags {
            skiff_store::ImageReference::parse(t)
                .ok()
                .and_then(|r| r.tagged())
                .ok_or_else(|| {
                    BuildError::Context(format!(
                        "invalid reference format: {t:?} is not a valid repository/tag"
                    ))
                })?;
        }
        let ctx = context::Context::receive(&self.containers.paths, body).await?;
        let (dockerfile_text, ignore) = ctx.prepare(&opts.dockerfile)?;
        let df = dockerfile::parse(&dockerfile_text)?;
        let id = stage::Build::new(self, opts, progress, &ctx.root, &df)
            .run()
            .await?;
        for t in &opts.tags {
            self.store().tag(&id, t)?;
            self.containers.monitor.events.emit(
                "image",
                "tag",
                &id,
                [("name".to_string(), familiar(t))],
            );
        }
        self.cache.mark_final(&id)?;
        drop(ignore);
        Ok(id)
    }

    /// `builder prune`: removes the step images only the cache names (not tagged, not a
    /// build's result, not used by a container); returns (image ids, bytes freed).
    pub async fn prune(&self) -> Result<(Vec<String>, u64), DaemonError> {
        let used: std::collections::HashSet<String> = self
            .containers
            .images_in_use()?
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        let mut gone = std::collections::BTreeSet::new();
        let mut freed = 0;
        for id in self.cache.images() {
            let Ok(img) = self.store().image(&id) else {
                gone.insert(id);
                continue;
            };
            if !img.repo_tags.is_empty() || used.contains(&id) || !self.cache.is_intermediate(&id) {
                continue;
            }
            self.containers.mounts.unmount_unused(&id);
            match self.store().remove_image(&id, true) {
                Ok(_) => {
                    freed += img.layers.last().map_or(0, |l| l.size);
                    gone.insert(id);
                }
                Err(e) => tracing::warn!(image = %id, "builder prune: {e}"),
            }
        }
        self.cache.drop_images(&gone)?;
        self.prune_layer_dirs();
        Ok((gone.into_iter().collect(), freed))
    }

    /// `system df`'s `BuildCache` rows: one per step image the cache keeps, and one for
    /// the layer directories `RUN` steps stack.
    pub fn disk_usage(&self) -> Vec<Value> {
        let dirs = self.containers.paths.data_root.join("build-layers");
        let mut rows: Vec<Value> = Vec::new();
        if dirs.is_dir() {
            let now = chrono::Utc::now().to_rfc3339();
            rows.push(json!({
                "ID": "build-layers", "Type": "regular", "Description": "unpacked layers of build steps",
                "InUse": false, "Shared": true, "Size": super::containers::dir_size(&dirs),
                "CreatedAt": now, "LastUsedAt": now, "UsageCount": 0,
            }));
        }
        rows.extend(
            self.cache
                .images()
                .into_iter()
                .filter(|id| self.cache.is_intermediate(id))
                .filter_map(|id| {
                    let img = self.store().image(&id).ok()?;
                    let size = img.layers.last().map_or(0, |l| l.tar_size);
                    let created_by = img
                        .config
                        .history()
                        .as_ref()
                        .and_then(|h| h.last().and_then(|e| e.created_by().clone()))
                        .unwrap_or_default();
                    Some(json!({
                        "ID": short(&id), "Type": "regular", "Description": created_by,
                        "InUse": false, "Shared": false, "Size": size,
                        "CreatedAt": img.created.clone().unwrap_or_default(),
                        "LastUsedAt": img.created.unwrap_or_default(), "UsageCount": 1,
                    }))
                }),
        );
        rows
    }
}

/// `busybox:latest` for `docker.io/library/busybox:latest`.
fn familiar(name: &str) -> String {
    skiff_store::ImageReference::parse(name)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| name.to_string())
}
