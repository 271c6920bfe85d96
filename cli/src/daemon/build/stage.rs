//! Running a parsed Dockerfile: stages in order, each instruction one step that makes an
//! image on top of the previous step's (or takes it from the cache).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::dockerfile::{Dockerfile, Instr, Step};
use super::expand::{self, Vars};
use super::{short, BuildError, BuildOptions, BuildService, Progress};

/// Docker's predefined build args: usable without an `ARG`, kept out of history.
pub(super) const PREDEFINED_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// One stage's state between steps.
pub(super) struct StageState {
    pub name: Option<String>,
    /// The image the last step made (`None`: `FROM scratch`, nothing yet).
    pub image: Option<String>,
    /// The image config's `config` object, in Docker's key names.
    pub config: Map<String, Value>,
    /// `ARG`s declared in this stage with their values.
    pub args: Vec<(String, Option<String>)>,
    /// `CMD` set in this stage (an `ENTRYPOINT` then keeps it).
    pub cmd_set: bool,
    /// The image `FROM` named (`None`: scratch) and its `Volumes`.
    pub base: Option<String>,
    pub base_volumes: Value,
    /// The directories of the layers made since `FROM`, oldest first, for `RUN` to stack
    /// over the base image's mount; `None` once one is missing (then `RUN` uses the
    /// previous step's image mount).
    pub stacked: Option<Vec<PathBuf>>,
}

impl StageState {
    /// Variables for substitution: args, then env (env wins).
    pub fn vars(&self) -> Vars {
        let mut v: Vars = self
            .args
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        for (k, val) in self.env() {
            v.insert(k, val);
        }
        v
    }

    pub fn env(&self) -> Vec<(String, String)> {
        self.config
            .get("Env")
            .and_then(|e| e.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str())
                    .map(|e| match e.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (e.to_string(), String::new()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn set_env(&mut self, key: &str, value: &str) {
        let mut env: Vec<Value> = self
            .config
            .get("Env")
            .and_then(|e| e.as_array())
            .cloned()
            .unwrap_or_default();
        let entry = json!(format!("{key}={value}"));
        match env.iter().position(|e| {
            e.as_str()
                .is_some_and(|s| s.split_once('=').map_or(s, |(k, _)| k) == key)
        }) {
            Some(i) => env[i] = entry,
            None => env.push(entry),
        }
        self.config.insert("Env".into(), Value::Array(env));
    }

    pub fn shell(&self) -> Vec<String> {
        self.config
            .get("Shell")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()])
    }

    pub fn workdir(&self) -> String {
        self.config
            .get("WorkingDir")
            .and_then(|w| w.as_str())
            .filter(|w| !w.is_empty())
            .unwrap_or("/")
            .to_string()
    }

    pub fn user(&self) -> String {
        self.config
            .get("User")
            .and_then(|w| w.as_str())
            .unwrap_or("")
            .to_string()
    }
}

/// What a step changes on disk, if anything.
pub(super) enum Change {
    /// Metadata only: the new image has no new layer.
    None,
    /// A staged tree (COPY/ADD), with its content checksum for the cache key.
    Tree {
        dir: tempfile::TempDir,
        digest: String,
    },
    /// A RUN (run on a cache miss only).
    Run { argv: Vec<String>, env: Vec<String> },
}

pub(super) struct Build<'a> {
    pub svc: &'a BuildService,
    pub opts: &'a BuildOptions,
    pub progress: &'a Progress,
    pub context: &'a Path,
    pub(super) df: &'a Dockerfile,
    /// ARGs before the first FROM, with build-arg values applied.
    pub(super) meta_args: Vars,
    /// Stage name or index → its last image.
    pub(super) stages: HashMap<String, Option<String>>,
    /// Build args some `ARG` consumed.
    pub(super) used_args: std::collections::HashSet<String>,
    pub(super) step_no: usize,
    pub(super) step_total: usize,
}

pub(super) fn instr_err(step: &Step, message: impl std::fmt::Display) -> BuildError {
    BuildError::Instruction {
        line: step.line,
        message: format!("{}: {message}", step.text),
    }
}

impl<'a> Build<'a> {
    pub fn new(
        svc: &'a BuildService,
        opts: &'a BuildOptions,
        progress: &'a Progress,
        context: &'a Path,
        df: &'a Dockerfile,
    ) -> Build<'a> {
        let extra = usize::from(!opts.labels.is_empty());
        Build {
            svc,
            opts,
            progress,
            context,
            df,
            meta_args: Vars::new(),
            stages: HashMap::new(),
            used_args: Default::default(),
            step_no: 0,
            step_total: df.steps.len() + extra,
        }
    }

    /// The value a build arg gives `name`, if any.
    pub(super) fn build_arg(&self, name: &str) -> Option<String> {
        match self.opts.build_args.get(name)? {
            Some(v) => Some(v.clone()),
            None => std::env::var(name).ok(),
        }
    }

    async fn announce(&mut self, step: &Step) {
        self.step_no += 1;
        self.progress
            .say(format!(
                "Step {}/{} : {}\n",
                self.step_no, self.step_total, step.text
            ))
            .await;
    }

    /// Runs every stage up to the target; returns the last image's id.
    pub async fn run(mut self) -> Result<String, BuildError> {
        let steps = &self.df.steps;
        let first_from = steps
            .iter()
            .position(|s| matches!(s.instr, Instr::From { .. }))
            .expect("parse checks for a FROM");
        if let Some(t) = &self.opts.target {
            let known = steps.iter().any(
                |s| matches!(&s.instr, Instr::From { name: Some(n), .. } if *n == t.to_lowercase()),
            );
            if !known {
                return Err(BuildError::Context(format!(
                    "failed to reach build target {t} in Dockerfile"
                )));
            }
        }
        for s in &steps[..first_from] {
            self.announce(s).await;
            let Instr::Arg(text) = &s.instr else {
                unreachable!("parse checks")
            };
            for (k, default) in expand::pairs(text, &self.meta_args, self.df.escape, false)
                .map_err(|m| instr_err(s, m))?
            {
                self.used_args.insert(k.clone());
                let v = self.build_arg(&k).or(default);
                self.meta_args.insert(k, v.unwrap_or_default());
            }
        }
        let mut stage_index = 0usize;
        let mut i = first_from;
        let mut last: Option<StageState> = None;
        let mut reached_target = self.opts.target.is_none();
        while i < steps.len() {
            let end = steps[i + 1..]
                .iter()
                .position(|s| matches!(s.instr, Instr::From { .. }))
                .map_or(steps.len(), |p| i + 1 + p);
            let st = self.run_stage(&steps[i..end]).await?;
            let image = st.image.clone();
            self.stages.insert(stage_index.to_string(), image.clone());
            if let Some(n) = &st.name {
                self.stages.insert(n.clone(), image);
            }
            let is_target = self
                .opts
                .target
                .as_deref()
                .is_some_and(|t| st.name.as_deref() == Some(&t.to_lowercase()));
            last = Some(st);
            stage_index += 1;
            i = end;
            if is_target {
                reached_target = true;
                break;
            }
        }
        if !reached_target {
            return Err(BuildError::Context(format!(
                "failed to reach build target {} in Dockerfile",
                self.opts.target.clone().unwrap_or_default()
            )));
        }
        let mut st = last.expect("one stage at least");
        if !self.opts.labels.is_empty() {
            let text = self
                .opts
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" ");
            let step = Step {
                line: 0,
                text: format!("LABEL {text}"),
                instr: Instr::Label(text),
            };
            self.announce(&step).await;
            self.step(&mut st, &step).await?;
        }
        let unused: Vec<&String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.used_args.contains(*k) && !PREDEFINED_ARGS.contains(&k.as_str()))
            .collect();
        if !unused.is_empty() {
            let mut names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            names.sort();
            self.progress
                .say(format!(
                    "[Warning] One or more build-args [{}] were not consumed\n",
                    names.join(" ")
                ))
                .await;
        }
        match st.image {
            Some(id) => Ok(id),
            None => {
                // `FROM scratch` and nothing else: an empty image, as Docker makes.
                let img = self
                    .svc
                    .store()
                    .commit(skiff_store::CommitRequest {
                        parent: None,
                        layer: None,
                        config: Value::Object(st.config),
                        created_by: String::new(),
                        comment: None,
                        author: None,
                        tags: vec![],
                    })
                    .await?;
                Ok(img.id)
            }
        }
    }

    /// The image `FROM name` starts from: an earlier stage, `scratch`, or an image
    /// (pulled when missing or with `--pull`).
    pub(super) async fn base(
        &self,
        image: &str,
        step: &Step,
    ) -> Result<Option<String>, BuildError> {
        if let Some(id) = self.stages.get(&image.to_lowercase()) {
            return Ok(id.clone());
        }
        if image == "scratch" {
            return Ok(None);
        }
        let store = self.svc.store();
        if !self.opts.pull {
            if let Ok(img) = store.image(image) {
                return Ok(Some(img.id));
            }
        }
        self.progress.say(format!("Pulling image {image}\n")).await;
        // As a client's pull: the build's credentials for that registry (X-Registry-Config)
        // only, kept for the image's lazy reads once they worked.
        let parsed = skiff_store::ImageReference::parse(image).ok();
        let secret = parsed
            .as_ref()
            .and_then(|r| self.opts.registry_auth.get(&r.registry).cloned())
            .unwrap_or_default();
        let noop = |_p: skiff_store::PullProgress| {};
        let img = skiff_store::registry::request_auth::with_request_secret(
            secret.clone(),
            store.pull(image, &noop),
        )
        .await
        .map_err(|e| instr_err(step, e))?;
        if let Some(r) = parsed {
            store.registry().remember_credentials(&r, secret);
        }
        Ok(Some(img.id))
    }

    async fn run_stage(&mut self, steps: &[Step]) -> Result<StageState, BuildError> {
        let from = &steps[0];
        self.announce(from).await;
        let Instr::From {
            image,
            name,
            platform,
        } = &from.instr
        else {
            unreachable!("a stage starts with FROM")
        };
        let image =
            expand::word(image, &self.meta_args, self.df.escape).map_err(|m| instr_err(from, m))?;
        if let Some(p) = platform {
            let p =
                expand::word(p, &self.meta_args, self.df.escape).map_err(|m| instr_err(from, m))?;
            let host = format!(
                "linux/{}",
                skiff_store::registry::manifest::host_platform().architecture
            );
            if !p.is_empty() && p != host && !host.starts_with(&format!("{p}/")) {
                return Err(instr_err(from, format!("platform {p} is not supported: skiff builds for the host's platform ({host}) only")));
            }
        }
        if image.is_empty() {
            return Err(instr_err(from, "base name should not be blank"));
        }
        let base = self.base(&image, from).await?;
        let mut config = Map::new();
        if let Some(id) = &base {
            let img = self.svc.store().image(id)?;
            let raw: Value = serde_json::from_slice(&img.config_bytes).unwrap_or(Value::Null);
            if let Some(c) = raw.get("config").and_then(|c| c.as_object()) {
                config = c.clone();
            }
            self.progress.say(format!(" ---> {}\n", short(id))).await;
        }
        let triggers: Vec<String> = config
            .remove("OnBuild")
            .and_then(|o| serde_json::from_value(o).ok())
            .unwrap_or_default();
        let base_volumes = config.get("Volumes").cloned().unwrap_or(Value::Null);
        let mut st = StageState {
            name: name.clone(),
            image: base.clone(),
            config,
            args: Vec::new(),
            cmd_set: false,
            base,
            base_volumes,
            stacked: Some(Vec::new()),
        };
        if !triggers.is_empty() {
            self.progress
                .say(format!(
                    "# Executing {} build trigger{}\n",
                    triggers.len(),
                    if triggers.len() == 1 { "" } else { "s" }
                ))
                .await;
            for t in &triggers {
                let step = super::dockerfile::parse_trigger(t)?;
                if matches!(step.instr, Instr::From { .. } | Instr::Onbuild(_)) {
                    return Err(instr_err(
                        &step,
                        "FROM and ONBUILD are not allowed as ONBUILD triggers",
                    ));
                }
                self.step(&mut st, &step).await?;
            }
        }
        for step in &steps[1..] {
            if self.progress.gone() {
                return Err(BuildError::Cancelled);
            }
            self.announce(step).await;
            self.step(&mut st, step).await?;
        }
        Ok(st)
    }

    /// Mounts `image` (read-only, shared) for the step; unmounted when dropped.
    pub(super) fn mount(&self, image: Option<&str>) -> Result<Option<MountUse>, BuildError> {
        let Some(id) = image else { return Ok(None) };
        let mounts = self.svc.containers.mounts.clone();
        let path = mounts.acquire(&self.svc.containers.store, id)?;
        Ok(Some(MountUse {
            mounts,
            id: id.to_string(),
            path,
        }))
    }

    /// Takes the step's image from the cache, or makes it.
    pub(super) async fn commit_step(
        &mut self,
        st: &mut StageState,
        step: &Step,
        created_by: String,
        change: Change,
    ) -> Result<(), BuildError> {
        let content = match &change {
            Change::Tree { digest, .. } => Some(digest.clone()),
            _ => None,
        };
        let mut config_for_key = st.config.clone();
        config_for_key.remove("OnBuild");
        let key = super::cache::key(
            st.image.as_deref(),
            &format!("{created_by}\n{}", Value::Object(config_for_key)),
            content.as_deref(),
        );
        if !self.opts.no_cache {
            if let Some(id) = self.svc.cache.get(&key) {
                if self.svc.store().image(&id).is_ok() {
                    self.progress.say(" ---> Using cache\n").await;
                    self.progress.say(format!(" ---> {}\n", short(&id))).await;
                    self.track_layer(st, &id);
                    st.image = Some(id);
                    return Ok(());
                }
                self.svc.cache.forget(&key)?;
            }
        }
        let layer = match change {
            Change::None => None,
            Change::Tree { dir, .. } => {
                let req = skiff_store::CommitRequest {
                    parent: st.image.clone(),
                    layer: Some(skiff_store::LayerDir::Tree(dir.path().to_path_buf())),
                    config: Value::Object(st.config.clone()),
                    created_by,
                    comment: None,
                    author: None,
                    tags: vec![],
                };
                let img = self.svc.store().commit(req).await?;
                if let Some(top) = img.layers.last() {
                    self.svc.adopt_layer_dir(dir.keep(), &top.digest);
                }
                self.track_layer(st, &img.id);
                return self.finish(st, key, img.id).await;
            }
            Change::Run { argv, env } => {
                let id = super::run_step::run(self, st, step, &argv, &env, created_by).await?;
                self.track_layer(st, &id);
                return self.finish(st, key, id).await;
            }
        };
        let img = self
            .svc
            .store()
            .commit(skiff_store::CommitRequest {
                parent: st.image.clone(),
                layer,
                config: Value::Object(st.config.clone()),
                created_by,
                comment: None,
                author: None,
                tags: vec![],
            })
            .await?;
        self.finish(st, key, img.id).await
    }

    /// Notes the directory of the layer `id` added over the stage's current image (if it
    /// added one), or that stacking is off for the rest of the stage.
    fn track_layer(&self, st: &mut StageState, id: &str) {
        let store = self.svc.store();
        let before = st
            .image
            .as_deref()
            .and_then(|i| store.image(i).ok())
            .map_or(0, |i| i.layers.len());
        let Ok(img) = store.image(id) else {
            st.stacked = None;
            return;
        };
        if img.layers.len() <= before {
            return;
        }
        let dir = img
            .layers
            .last()
            .map(|l| self.svc.layer_dir(&l.digest))
            .filter(|d| d.is_dir() && img.layers.len() == before + 1);
        match (&mut st.stacked, dir) {
            (Some(v), Some(d)) => v.push(d),
            _ => st.stacked = None,
        }
    }

    async fn finish(
        &mut self,
        st: &mut StageState,
        key: String,
        id: String,
    ) -> Result<(), BuildError> {
        self.svc.cache.put(key, id.clone(), st.image.as_deref())?;
        if let Some(prev) = st.image.replace(id.clone()) {
            // The base stays mounted: the stage's RUN steps stack over it.
            if st.base.as_deref() != Some(prev.as_str()) {
                self.svc.containers.mounts.unmount_unused(&prev);
            }
        }
        self.progress.say(format!(" ---> {}\n", short(&id))).await;
        Ok(())
    }
}

/// A use of an image mount for one step.
pub(super) struct MountUse {
    mounts: std::sync::Arc<super::super::mounts::ImageMounts>,
    id: String,
    path: PathBuf,
}

impl MountUse {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for MountUse {
    fn drop(&mut self) {
        self.mounts.release(&self.id);
        self.mounts.unmount_unused(&self.id);
    }
}
