//! `docker commit`: a container's changes (its overlay upper directory) as a new layer on
//! its image, with the container's config and `--change` instructions applied.

use serde_json::{json, Map, Value};

use super::BuildService;
use crate::daemon::error::DaemonError;

/// `POST /commit`'s parameters.
#[derive(Debug, Default)]
pub struct CommitOptions {
    pub container: String,
    /// `repo[:tag]` to tag the image with (none: untagged).
    pub reference: Option<String>,
    pub comment: Option<String>,
    pub author: Option<String>,
    /// Dockerfile instructions (`CMD ["x"]`, `ENV A=b` ...).
    pub changes: Vec<String>,
    /// Freeze a running container while its files are read (Docker's default).
    pub pause: bool,
}

fn merge_env(config: &mut Map<String, Value>, entries: &[String]) {
    let mut env: Vec<String> = config
        .get("Env")
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default();
    for e in entries {
        let key = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    config.insert("Env".into(), json!(env));
}

fn merge_set(config: &mut Map<String, Value>, key: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let obj = config.entry(key).or_insert_with(|| json!({}));
    if !obj.is_object() {
        *obj = json!({});
    }
    for i in items {
        obj[i] = json!({});
    }
}

impl BuildService {
    /// Commits the container; returns the new image's id.
    pub async fn commit(&self, o: CommitOptions) -> Result<String, DaemonError> {
        let changes = crate::daemon::changes::parse(&o.changes).map_err(DaemonError::Invalid)?;
        let r = self.containers.find(&o.container)?;
        let image = self.store().image(&r.image_id)?;
        let raw: Value = serde_json::from_slice(&image.config_bytes).unwrap_or(Value::Null);
        let mut config: Map<String, Value> = raw
            .get("config")
            .and_then(|c| c.as_object())
            .cloned()
            .unwrap_or_default();
        // The container's own settings, as Docker commits its config.
        let s = &r.spec;
        if let Some(c) = &s.cmd {
            config.insert("Cmd".into(), json!(c));
        }
        if let Some(e) = &s.entrypoint {
            config.insert("Entrypoint".into(), json!(e));
        }
        merge_env(&mut config, &s.env);
        if !s.working_dir.is_empty() {
            config.insert("WorkingDir".into(), json!(s.working_dir));
        }
        if !s.user.is_empty() {
            config.insert("User".into(), json!(s.user));
        }
        if !s.labels.is_empty() {
            let l = config.entry("Labels").or_insert_with(|| json!({}));
            if !l.is_object() {
                *l = json!({});
            }
            for (k, v) in &s.labels {
                l[k] = json!(v);
            }
        }
        merge_set(&mut config, "ExposedPorts", &s.exposed_ports);
        // Then `--change`.
        if let Some(c) = &changes.cmd {
            config.insert("Cmd".into(), json!(c));
        }
        if let Some(e) = &changes.entrypoint {
            config.insert("Entrypoint".into(), json!(e));
        }
        merge_env(&mut config, &changes.env);
        if let Some(w) = &changes.working_dir {
            config.insert("WorkingDir".into(), json!(w));
        }
        if let Some(u) = &changes.user {
            config.insert("User".into(), json!(u));
        }
        let ports: Vec<String> = changes
            .exposed_ports
            .iter()
            .map(|p| {
                if p.contains('/') {
                    p.clone()
                } else {
                    format!("{p}/tcp")
                }
            })
            .collect();
        merge_set(&mut config, "ExposedPorts", &ports);
        merge_set(&mut config, "Volumes", &changes.volumes);
        if !changes.labels.is_empty() {
            let l = config.entry("Labels").or_insert_with(|| json!({}));
            if !l.is_object() {
                *l = json!({});
            }
            for (k, v) in &changes.labels {
                l[k] = json!(v);
            }
        }
        let argv = std::iter::once(r.path.clone())
            .chain(r.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let upper = self.containers.dir(&r.id).join("upper");
        let st = self.containers.state(&r.id)?;
        let freeze = o.pause
            && st.status == skiff_runtime::state::Status::Running
            && !self.containers.is_paused(&r.id, &st);
        if freeze {
            self.containers.set_paused(&r, true).await?;
        }
        let img = self
            .store()
            .commit(skiff_store::CommitRequest {
                parent: Some(r.image_id.clone()),
                layer: Some(skiff_store::LayerDir::Overlay {
                    dir: upper,
                    skip: super::run_step::MOUNT_POINTS
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                }),
                config: Value::Object(config),
                created_by: argv,
                comment: o.comment.filter(|c| !c.is_empty()),
                author: o.author.filter(|a| !a.is_empty()),
                tags: o.reference.into_iter().collect(),
            })
            .await;
        if freeze {
            if let Err(e) = self.containers.set_paused(&r, false).await {
                tracing::error!(container = %&r.id[..12], "unpausing after a commit: {e}");
            }
        }
        let img = img?;
        self.containers.monitor.events.container("commit", &r, &[]);
        self.cache.set_parent(&img.id, &r.image_id)?;
        tracing::info!(container = %&r.id[..12], image = %img.id, "committed container");
        Ok(img.id)
    }
}
