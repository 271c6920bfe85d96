//! `skiff build` and `skiff builder prune`: the context directory sent as a tar (what
//! `.dockerignore` excludes left out, as the docker CLI does) to `POST /build`, the
//! progress printed as it comes.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use bollard::image::BuildImageOptions;
use bollard::Docker;
use futures::StreamExt;

use crate::args::{BuildArgs, PruneArgs};
use crate::daemon::build::dockerignore::Ignore;

/// The name a Dockerfile from outside the context (or stdin) gets inside it.
const OUTSIDE_DOCKERFILE: &str = ".skiff-dockerfile";

fn add_dir(
    b: &mut tar::Builder<Vec<u8>>,
    root: &Path,
    rel: &Path,
    ignore: &Ignore,
    keep: &[String],
) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<Vec<_>>>()?;
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let r = rel.join(e.file_name());
        let rs = r.to_string_lossy().into_owned();
        let ft = e.file_type()?;
        let excluded = ignore.excluded(&rs) && !keep.contains(&rs);
        if ft.is_dir() {
            if !excluded {
                b.append_path_with_name(e.path(), &r)
                    .with_context(|| format!("adding {}", e.path().display()))?;
            }
            // Something below an excluded directory may be re-included (`!`).
            add_dir(b, root, &r, ignore, keep)?;
        } else if !excluded {
            b.append_path_with_name(e.path(), &r)
                .with_context(|| format!("adding {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// The context tar; returns it and the Dockerfile's name inside it.
fn context_tar(args: &BuildArgs) -> Result<(Vec<u8>, String)> {
    let root = &args.context;
    if !root.is_dir() {
        bail!(
            "unable to prepare context: path {:?} not found",
            root.display()
        );
    }
    let ignore = match std::fs::read_to_string(root.join(".dockerignore")) {
        Ok(t) => Ignore::parse(&t).map_err(|e| anyhow::anyhow!(".dockerignore: {e}"))?,
        Err(_) => Ignore::default(),
    };
    let mut outside: Option<Vec<u8>> = None;
    let name = match &args.file {
        None => "Dockerfile".to_string(),
        Some(f) if f.as_os_str() == "-" => {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
            outside = Some(v);
            OUTSIDE_DOCKERFILE.to_string()
        }
        Some(f) => {
            let abs_root = root.canonicalize()?;
            let abs = f
                .canonicalize()
                .with_context(|| format!("unable to prepare context: {}", f.display()))?;
            match abs.strip_prefix(&abs_root) {
                Ok(rel) => rel.to_string_lossy().into_owned(),
                Err(_) => {
                    outside = Some(std::fs::read(&abs)?);
                    OUTSIDE_DOCKERFILE.to_string()
                }
            }
        }
    };
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Deterministic);
    let keep = vec![name.clone(), ".dockerignore".to_string()];
    add_dir(&mut b, root, Path::new(""), &ignore, &keep)?;
    if let Some(data) = outside {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, OUTSIDE_DOCKERFILE, &data[..])?;
    }
    Ok((b.into_inner()?, name))
}

fn pairs(items: &[String], what: &str, env_fallback: bool) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for i in items {
        match i.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None if env_fallback => {
                // `--build-arg NAME`: the client's environment value, if any (docker CLI).
                if let Ok(v) = std::env::var(i) {
                    out.insert(i.clone(), v);
                }
            }
            None => bail!("invalid {what} {i:?}: expected key=value"),
        }
    }
    Ok(out)
}

pub async fn build(docker: &Docker, args: &BuildArgs) -> Result<()> {
    let a = clone_args(args);
    let (tar, dockerfile) = tokio::task::spawn_blocking(move || context_tar(&a)).await??;
    let opts = BuildImageOptions::<String> {
        dockerfile,
        t: args.tags.first().cloned().unwrap_or_default(),
        q: args.quiet,
        nocache: args.no_cache,
        pull: args.pull,
        rm: true,
        forcerm: args.force_rm,
        buildargs: pairs(&args.build_args, "build-arg", true)?,
        labels: pairs(&args.labels, "label", false)?,
        networkmode: args.network.clone(),
        platform: args.platform.clone().unwrap_or_default(),
        target: args.target.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut stream = docker.build_image(opts, None, Some(tar.into()));
    let mut id = None;
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                eprintln!("{error}");
                return Err(crate::exit::Exit(run_exit_code(&error)).into());
            }
            Err(e) => anyhow::bail!(super::error_message(&e)),
        };
        if let Some(err) = info.error {
            eprintln!("{err}");
            // As the docker CLI: a failed RUN's exit code (errorDetail.code), else 1.
            let code = info
                .error_detail
                .and_then(|d| d.code)
                .filter(|c| *c > 0 && *c < 256)
                .unwrap_or(1);
            return Err(crate::exit::Exit(code as i32).into());
        }
        if let Some(aux) = info.aux {
            id = aux.id;
        }
        if !args.quiet {
            if let Some(s) = info.stream {
                print!("{s}");
            }
        }
    }
    let id = id.ok_or_else(|| anyhow::anyhow!("the daemon ended the build without an image ID"))?;
    for t in args.tags.iter().skip(1) {
        let (repo, tag) = super::images::split_tag(t);
        docker
            .tag_image(&id, Some(bollard::image::TagImageOptions { repo, tag }))
            .await
            .map_err(|e| anyhow::anyhow!(super::error_message(&e)))?;
        if !args.quiet {
            println!("Successfully tagged {t}");
        }
    }
    if args.quiet {
        println!("{id}");
    }
    if let Some(f) = &args.iidfile {
        std::fs::write(f, &id).with_context(|| format!("writing {}", f.display()))?;
    }
    Ok(())
}

fn clone_args(a: &BuildArgs) -> BuildArgs {
    BuildArgs {
        tags: a.tags.clone(),
        file: a.file.clone(),
        build_args: a.build_args.clone(),
        target: a.target.clone(),
        no_cache: a.no_cache,
        pull: a.pull,
        quiet: a.quiet,
        labels: a.labels.clone(),
        iidfile: a.iidfile.clone(),
        network: a.network.clone(),
        platform: a.platform.clone(),
        force_rm: a.force_rm,
        context: a.context.clone(),
    }
}

pub async fn prune(socket: &Path, _args: &PruneArgs) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Pruned {
        #[serde(rename = "CachesDeleted", default)]
        caches: Option<Vec<String>>,
        #[serde(rename = "SpaceReclaimed", default)]
        reclaimed: i64,
    }
    let (status, body) = super::profiles::call(socket, "POST", "/build/prune").await?;
    if status != 200 {
        bail!("{}", String::from_utf8_lossy(&body));
    }
    let p: Pruned = serde_json::from_slice(&body)?;
    for c in p.caches.unwrap_or_default() {
        println!("Deleted build cache object: {c}");
    }
    println!(
        "Total reclaimed space: {}",
        super::format::human_size(p.reclaimed)
    );
    Ok(())
}

/// The exit code a failed build ends the CLI with, as the docker CLI: a failed RUN's own
/// code, else 1. bollard keeps only the stream error's message, so the code is read back
/// from dockerd's wording, which skiff's daemon writes too.
fn run_exit_code(message: &str) -> i32 {
    message
        .rsplit_once("returned a non-zero code: ")
        .and_then(|(_, c)| c.trim().parse::<i32>().ok())
        .filter(|c| (1..256).contains(c))
        .unwrap_or(1)
}

#[cfg(test)]
mod exit_code_tests {
    use super::run_exit_code;

    #[test]
    fn a_failed_runs_code_else_one() {
        assert_eq!(
            run_exit_code("The command '/bin/sh -c exit 3' returned a non-zero code: 3"),
            3
        );
        assert_eq!(run_exit_code("COPY failed: file not found"), 1);
        assert_eq!(run_exit_code("x returned a non-zero code: 300"), 1);
    }
}
