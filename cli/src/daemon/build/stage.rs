//! Running a parsed Dockerfile: stages in order, each instruction one step that makes an
//! image on top of the previous step's (or takes it from the cache).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::dockerfile::{Command, Dockerfile, Instr, Source, Step};
use super::expand::{self, Vars};
use super::{short, BuildError, BuildOptions, BuildService, Progress};

/// Docker's predefined build args: usable without an `ARG`, kept out of history.
const PREDEFINED_ARGS: &[&str] = &[
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
    cmd_set: bool,
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

    fn set_env(&mut self, key: &str, value: &str) {
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
    df: &'a Dockerfile,
    /// ARGs before the first FROM, with build-arg values applied.
    meta_args: Vars,
    /// Stage name or index → its last image.
    stages: HashMap<String, Option<String>>,
    /// Build args some `ARG` consumed.
    used_args: std::collections::HashSet<String>,
    step_no: usize,
    step_total: usize,
}

fn instr_err(step: &Step, message: impl std::fmt::Display) -> BuildError {
    BuildError::Instruction {
        line: step.line,
        message: format!("{}: {message}", step.text),
    }
}

/// Go-style durations of `HEALTHCHECK` flags (`30s`, `1m30s`, `500ms`) in nanoseconds.
fn duration_ns(s: &str) -> Option<i64> {
    let re = regex::Regex::new(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)").ok()?;
    let mut total = 0f64;
    let mut matched = 0;
    for c in re.captures_iter(s) {
        let n: f64 = c[1].parse().ok()?;
        let unit = match &c[2] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            _ => 3600e9,
        };
        total += n * unit;
        matched += c[0].len();
    }
    (matched == s.len() && matched > 0).then_some(total as i64)
}

fn exec_or_shell(cmd: &Command, shell: &[String]) -> Vec<String> {
    match cmd {
        Command::Exec(v) => v.clone(),
        Command::Shell(s) => shell.iter().cloned().chain([s.clone()]).collect(),
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
    fn build_arg(&self, name: &str) -> Option<String> {
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
            let st = self.run_stage(&steps[i..end], stage_index).await?;
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
    async fn base(&self, image: &str, step: &Step) -> Result<Option<String>, BuildError> {
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
        let noop = |_p: skiff_store::PullProgress| {};
        let img = store
            .pull(image, &noop)
            .await
            .map_err(|e| instr_err(step, e))?;
        Ok(Some(img.id))
    }

    async fn run_stage(&mut self, steps: &[Step], index: usize) -> Result<StageState, BuildError> {
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
        let _ = index;
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

    /// Runs one instruction: updates the config, works out what it changes, then takes
    /// the image from the cache or makes it.
    async fn step(&mut self, st: &mut StageState, step: &Step) -> Result<(), BuildError> {
        let esc = self.df.escape;
        let vars = st.vars();
        let e = |m: String| instr_err(step, m);
        let word = |t: &str| expand::word(t, &vars, esc).map_err(e);
        let mut change = Change::None;
        // `created_by` as Docker writes it; also the cache key's instruction part.
        let nop = |s: String| format!("/bin/sh -c #(nop) {s}");
        let created_by: String = match &step.instr {
            Instr::From { .. } => unreachable!("handled per stage"),
            Instr::Arg(text) => {
                let pairs = expand::pairs(text, &vars, esc, false).map_err(e)?;
                let mut shown = Vec::new();
                for (k, default) in pairs {
                    self.used_args.insert(k.clone());
                    let v = self
                        .build_arg(&k)
                        .or(default)
                        .or_else(|| self.meta_args.get(&k).cloned());
                    shown.push(match &v {
                        Some(v) => format!("{k}={v}"),
                        None => k.clone(),
                    });
                    st.args.retain(|(n, _)| *n != k);
                    st.args.push((k, v));
                }
                nop(format!("ARG {}", shown.join(" ")))
            }
            Instr::Env(text) => {
                let pairs = expand::pairs(text, &vars, esc, true).map_err(e)?;
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let v = v.ok_or_else(|| e(format!("ENV {k}: a value is needed")))?;
                    st.set_env(&k, &v);
                    shown.push(format!("{k}={v}"));
                }
                nop(format!("ENV {}", shown.join(" ")))
            }
            Instr::Label(text) => {
                let pairs = expand::pairs(text, &vars, esc, true).map_err(e)?;
                let labels = st.config.entry("Labels").or_insert_with(|| json!({}));
                if !labels.is_object() {
                    *labels = json!({});
                }
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let v = v.unwrap_or_default();
                    labels[&k] = json!(v);
                    shown.push(format!("{k}={v}"));
                }
                nop(format!("LABEL {}", shown.join(" ")))
            }
            Instr::Workdir(text) => {
                let w = word(text)?;
                let joined = if w.starts_with('/') {
                    w.clone()
                } else {
                    format!("{}/{w}", st.workdir().trim_end_matches('/'))
                };
                let clean = format!("/{}", super::dockerignore::clean(&joined));
                st.config.insert("WorkingDir".into(), json!(clean));
                // Docker creates a missing working directory (root-owned) in the image.
                change = self.workdir_change(st, &clean).await?;
                nop(format!("WORKDIR {clean}"))
            }
            Instr::User(text) => {
                let u = word(text)?;
                st.config.insert("User".into(), json!(u));
                nop(format!("USER {u}"))
            }
            Instr::Expose(parts) => {
                let ports = st.config.entry("ExposedPorts").or_insert_with(|| json!({}));
                if !ports.is_object() {
                    *ports = json!({});
                }
                let mut shown = Vec::new();
                for p in parts {
                    for p in expand::words(p, &vars, esc).map_err(e)? {
                        let p = if p.contains('/') {
                            p
                        } else {
                            format!("{p}/tcp")
                        };
                        let (num, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                        let ok_num = num.split('-').all(|n| n.parse::<u16>().is_ok());
                        if !ok_num || !["tcp", "udp", "sctp"].contains(&proto) {
                            return Err(e(format!("invalid port {p:?}")));
                        }
                        ports[&p] = json!({});
                        shown.push(p);
                    }
                }
                nop(format!("EXPOSE {}", shown.join(" ")))
            }
            Instr::Volume(parts) => {
                let vols = st.config.entry("Volumes").or_insert_with(|| json!({}));
                if !vols.is_object() {
                    *vols = json!({});
                }
                let mut shown = Vec::new();
                for p in parts {
                    let v = word(p)?;
                    if v.is_empty() {
                        return Err(e("VOLUME specified can not be an empty string".into()));
                    }
                    vols[&v] = json!({});
                    shown.push(v);
                }
                nop(format!("VOLUME [{}]", shown.join(" ")))
            }
            Instr::Stopsignal(text) => {
                let s = word(text)?;
                super::super::containers_run::parse_signal(&s)
                    .map_err(|_| e(format!("invalid signal: {s}")))?;
                st.config.insert("StopSignal".into(), json!(s));
                nop(format!("STOPSIGNAL {s}"))
            }
            Instr::Maintainer(text) => nop(format!("MAINTAINER {text}")),
            Instr::Cmd(cmd) => {
                let argv = exec_or_shell(cmd, &st.shell());
                st.config.insert("Cmd".into(), json!(argv));
                st.cmd_set = true;
                nop(format!(
                    "CMD {}",
                    serde_json::to_string(&argv).unwrap_or_default()
                ))
            }
            Instr::Entrypoint(cmd) => {
                let argv = exec_or_shell(cmd, &st.shell());
                st.config.insert("Entrypoint".into(), json!(argv));
                // An ENTRYPOINT drops a CMD inherited from the base image (Docker).
                if !st.cmd_set {
                    st.config.insert("Cmd".into(), Value::Null);
                }
                nop(format!(
                    "ENTRYPOINT {}",
                    serde_json::to_string(&argv).unwrap_or_default()
                ))
            }
            Instr::Shell(argv) => {
                if argv.is_empty() {
                    return Err(e("SHELL requires at least one argument".into()));
                }
                st.config.insert("Shell".into(), json!(argv));
                nop(format!(
                    "SHELL {}",
                    serde_json::to_string(argv).unwrap_or_default()
                ))
            }
            Instr::Healthcheck { flags, cmd } => {
                let mut hc = Map::new();
                match cmd {
                    None => {
                        if !flags.is_empty() {
                            return Err(e("HEALTHCHECK NONE takes no options".into()));
                        }
                        hc.insert("Test".into(), json!(["NONE"]));
                    }
                    Some(c) => {
                        let test: Vec<String> = match c {
                            Command::Exec(v) => {
                                ["CMD".to_string()].into_iter().chain(v.clone()).collect()
                            }
                            Command::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                        };
                        hc.insert("Test".into(), json!(test));
                        for (k, v) in flags {
                            let v = v.clone().unwrap_or_default();
                            let key = match k.as_str() {
                                "interval" => "Interval",
                                "timeout" => "Timeout",
                                "start-period" => "StartPeriod",
                                "start-interval" => "StartInterval",
                                "retries" => {
                                    let n: i64 = v
                                        .parse()
                                        .map_err(|_| e(format!("--retries {v}: not a number")))?;
                                    hc.insert("Retries".into(), json!(n));
                                    continue;
                                }
                                other => return Err(e(format!("unknown flag: --{other}"))),
                            };
                            let ns = duration_ns(&v)
                                .ok_or_else(|| e(format!("--{k} {v}: not a duration")))?;
                            hc.insert(key.into(), json!(ns));
                        }
                    }
                }
                st.config
                    .insert("Healthcheck".into(), Value::Object(hc.clone()));
                nop(format!("HEALTHCHECK {}", Value::Object(hc)))
            }
            Instr::Onbuild(trigger) => {
                let parsed = super::dockerfile::parse_trigger(trigger)?;
                if matches!(parsed.instr, Instr::From { .. } | Instr::Onbuild(_)) {
                    return Err(e(format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        parsed.instr.keyword()
                    )));
                }
                let list = st.config.entry("OnBuild").or_insert_with(|| json!([]));
                if !list.is_array() {
                    *list = json!([]);
                }
                list.as_array_mut().expect("array").push(json!(trigger));
                nop(format!("ONBUILD {trigger}"))
            }
            Instr::Run { flags, cmd } => {
                if let Some((k, _)) = flags.first() {
                    return Err(e(format!(
                        "RUN --{k} is not supported by skiff's builder (BuildKit-only flag)"
                    )));
                }
                let argv = exec_or_shell(cmd, &st.shell());
                // Build args in scope reach the command's environment (not the image);
                // Docker writes them before the command in history (`|1 A=b /bin/sh -c`).
                let env_keys: std::collections::HashSet<String> =
                    st.env().into_iter().map(|(k, _)| k).collect();
                let mut args: Vec<(String, String)> = st
                    .args
                    .iter()
                    .filter(|(k, _)| !env_keys.contains(k))
                    .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                    .collect();
                let mut env: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
                for p in PREDEFINED_ARGS {
                    if let Some(v) = self.build_arg(p) {
                        env.push(format!("{p}={v}"));
                    }
                }
                args.sort();
                let shown = match cmd {
                    Command::Shell(_) => argv.join(" "),
                    Command::Exec(v) => serde_json::to_string(v).unwrap_or_default(),
                };
                change = Change::Run { argv, env };
                if args.is_empty() {
                    shown
                } else {
                    format!(
                        "|{} {} {shown}",
                        args.len(),
                        args.iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                }
            }
            Instr::Copy {
                add,
                flags,
                srcs,
                dest,
            } => {
                let (tree, shown) = self.copy(st, step, *add, flags, srcs, dest, &vars).await?;
                change = tree;
                shown
            }
        };
        self.commit_step(st, step, created_by, change).await
    }

    /// The change `WORKDIR dir` makes: the directory when the image lacks it.
    async fn workdir_change(&self, st: &StageState, dir: &str) -> Result<Change, BuildError> {
        let lower = self.mount(st.image.as_deref())?;
        let exists = lower.as_ref().is_some_and(|l| {
            super::copy::resolve_in_root(l.path(), Path::new(dir.trim_start_matches('/'))).is_dir()
        });
        if exists {
            return Ok(Change::None);
        }
        let tmp =
            tempfile::tempdir_in(self.svc.containers.paths.data_root.join("tmp")).map_err(|e| {
                BuildError::Io {
                    path: self.svc.containers.paths.data_root.join("tmp"),
                    source: e,
                }
            })?;
        let spec = super::copy::CopySpec {
            root: self.context,
            from_context: true,
            srcs: vec![],
            inline: vec![],
            dest: format!("{dir}/"),
            owner: (0, 0),
            chmod: None,
            add: false,
            lower: lower.as_ref().map(|l| l.path()),
        };
        super::copy::stage(&spec, tmp.path())?;
        let digest = super::copy::tree_digest(tmp.path())?;
        Ok(Change::Tree { dir: tmp, digest })
    }

    /// Resolves `--chown` (`user[:group]`, names from the image's `/etc/passwd` and
    /// `/etc/group`).
    fn owner(spec: &str, lower: Option<&Path>) -> Result<(u32, u32), String> {
        let (u, g) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let lookup = |file: &str, name: &str| -> Result<(u32, Option<u32>), String> {
            if let Ok(n) = name.parse::<u32>() {
                return Ok((n, None));
            }
            let text = lower
                .and_then(|l| {
                    std::fs::read_to_string(super::copy::resolve_in_root(l, Path::new(file))).ok()
                })
                .unwrap_or_default();
            for line in text.lines() {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() >= 3 && f[0] == name {
                    let id = f[2]
                        .parse()
                        .map_err(|_| format!("bad id for {name} in /{file}"))?;
                    let gid = f.get(3).and_then(|g| g.parse().ok());
                    return Ok((id, gid));
                }
            }
            Err(format!(
                "unable to find {} {name}: no matching entries in /{file}",
                if file == "etc/passwd" {
                    "user"
                } else {
                    "group"
                }
            ))
        };
        let (uid, primary) = lookup("etc/passwd", u)?;
        let gid = match g {
            Some(g) => lookup("etc/group", g)?.0,
            // A user alone: Docker uses the same numeric id as the group.
            None => primary.filter(|_| u.parse::<u32>().is_err()).unwrap_or(uid),
        };
        Ok((uid, gid))
    }

    #[allow(clippy::too_many_arguments)]
    async fn copy(
        &mut self,
        st: &StageState,
        step: &Step,
        add: bool,
        flags: &[(String, Option<String>)],
        srcs: &[Source],
        dest: &str,
        vars: &Vars,
    ) -> Result<(Change, String), BuildError> {
        let esc = self.df.escape;
        let e = |m: String| instr_err(step, m);
        let mut from = None;
        let mut chown = None;
        let mut chmod = None;
        for (k, v) in flags {
            let v = v.clone().unwrap_or_default();
            match k.as_str() {
                "from" if !add => from = Some(expand::word(&v, &self.meta_args, esc).map_err(e)?),
                "chown" => chown = Some(expand::word(&v, vars, esc).map_err(e)?),
                "chmod" => {
                    chmod = Some(
                        u32::from_str_radix(&v, 8)
                            .ok()
                            .filter(|m| *m <= 0o7777)
                            .ok_or_else(|| {
                                e(format!("invalid --chmod {v}: an octal mode is needed"))
                            })?,
                    )
                }
                "link" | "parents" | "exclude" | "checksum" | "keep-git-dir" => {
                    return Err(e(format!(
                        "--{k} is not supported by skiff's builder (BuildKit-only flag)"
                    )))
                }
                other => return Err(e(format!("unknown flag: --{other}"))),
            }
        }
        let lower = self.mount(st.image.as_deref())?;
        let lower_path = lower.as_ref().map(|l| l.path().to_path_buf());
        // The source root: the context, or another stage's or image's filesystem.
        let from_mount;
        let empty_root;
        let root: PathBuf = match &from {
            None => self.context.to_path_buf(),
            Some(f) => {
                let image = match self.stages.get(&f.to_lowercase()) {
                    Some(id) => id.clone(),
                    None => {
                        if f.parse::<usize>().is_ok() {
                            return Err(e(format!("invalid from flag value {f}: no such stage")));
                        }
                        Some(self.base(f, step).await.map_err(|_| e(format!("invalid from flag value {f}: no stage or image of that name")))?.unwrap_or_default())
                    }
                };
                match self.mount(image.as_deref().filter(|i| !i.is_empty()))? {
                    Some(m) => {
                        from_mount = m;
                        from_mount.path().to_path_buf()
                    }
                    None => {
                        empty_root = tempfile::tempdir().map_err(|e| BuildError::Io {
                            path: "/tmp".into(),
                            source: e,
                        })?;
                        empty_root.path().to_path_buf()
                    }
                }
            }
        };
        let mut paths = Vec::new();
        let mut inline = Vec::new();
        for s in srcs {
            match s {
                Source::Path(p) => paths.push(expand::word(p, vars, esc).map_err(e)?),
                Source::Inline { name, content } => inline.push((name.clone(), content.clone())),
            }
        }
        if paths.is_empty() && inline.is_empty() {
            return Err(e("COPY requires at least two arguments".into()));
        }
        let dest = expand::word(dest, vars, esc).map_err(e)?;
        let abs_dest = if dest.starts_with('/') {
            dest.clone()
        } else {
            let mut d = format!("{}/{dest}", st.workdir().trim_end_matches('/'));
            if dest == "." || dest.ends_with('/') || dest.ends_with("/.") {
                d = format!("{}/", d.trim_end_matches('.').trim_end_matches('/'));
            }
            d
        };
        let owner = match &chown {
            Some(c) => Self::owner(c, lower_path.as_deref()).map_err(e)?,
            None => (0, 0),
        };
        let tmp_root = self.svc.containers.paths.data_root.join("tmp");
        let tmp = tempfile::tempdir_in(&tmp_root).map_err(|e| BuildError::Io {
            path: tmp_root.clone(),
            source: e,
        })?;
        let spec = super::copy::CopySpec {
            root: &root,
            from_context: from.is_none(),
            srcs: paths.clone(),
            inline,
            dest: abs_dest.clone(),
            owner,
            chmod,
            add,
            lower: lower_path.as_deref(),
        };
        let staged = {
            let tmp_path = tmp.path().to_path_buf();
            tokio::task::block_in_place(|| {
                super::copy::stage(&spec, &tmp_path)?;
                super::copy::tree_digest(&tmp_path)
            })
        };
        let digest = staged?;
        let kw = if add { "ADD" } else { "COPY" };
        let shown = format!(
            "/bin/sh -c #(nop) {kw} {}{} in {abs_dest} ",
            from.as_ref()
                .map(|f| format!("--from={f} "))
                .unwrap_or_default(),
            digest.replacen("sha256:", "dir:", 1)
        );
        Ok((Change::Tree { dir: tmp, digest }, shown))
    }

    /// Mounts `image` (read-only, shared) for the step; unmounted when dropped.
    fn mount(&self, image: Option<&str>) -> Result<Option<MountUse>, BuildError> {
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
    async fn commit_step(
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
        self.svc.cache.put(key, id.clone())?;
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

#[allow(dead_code)]
fn labels_map(v: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(duration_ns("500ms"), Some(500_000_000));
        assert_eq!(duration_ns("5x"), None);
    }

    #[test]
    fn chown_names_and_ids() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(Build::owner("app", Some(d.path())), Ok((1000, 1001)));
        assert_eq!(Build::owner("app:staff", Some(d.path())), Ok((1000, 50)));
        assert_eq!(Build::owner("42", Some(d.path())), Ok((42, 42)));
        assert_eq!(Build::owner("42:7", None), Ok((42, 7)));
        assert!(Build::owner("nobody", Some(d.path()))
            .unwrap_err()
            .contains("unable to find user nobody"));
    }
}
