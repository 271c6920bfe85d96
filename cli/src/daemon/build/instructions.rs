//! One instruction of a stage: what it does to the config, and what it changes on disk
//! (`COPY`/`ADD` staging, `WORKDIR` creation, `RUN`'s command and environment), before
//! [`Build::commit_step`] takes the step's image from the cache or makes it.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::dockerfile::{Command, Instr, Source, Step};
use super::expand::{self, Vars};
use super::stage::{instr_err, Build, Change, StageState, PREDEFINED_ARGS};
use super::BuildError;

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

impl Build<'_> {
    /// Runs one instruction: updates the config, works out what it changes, then takes
    /// the image from the cache or makes it.
    pub(super) async fn step(
        &mut self,
        st: &mut StageState,
        step: &Step,
    ) -> Result<(), BuildError> {
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
