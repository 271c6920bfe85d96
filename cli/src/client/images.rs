//! Image commands: `pull` (with progress bars), `push`, `images`, `rmi`, `tag`, `image
//! inspect`, `image import`.

use std::collections::HashMap;
use std::io::IsTerminal;

use anyhow::{bail, Context, Result};
use bollard::image::{CreateImageOptions, ListImagesOptions, RemoveImageOptions, TagImageOptions};
use bollard::Docker;
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::format::{ago, human_size, short_id};
use crate::args::{ImagesArgs, ImportArgs, NamesInspectArgs, PullArgs, RmiArgs, TagArgs};

/// Splits "repo:tag" (a port colon is not a tag) for Docker's `fromImage` + `tag` params.
pub fn split_tag(reference: &str) -> (String, String) {
    if reference.contains('@') {
        return (reference.to_string(), String::new());
    }
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (reference.to_string(), "latest".to_string()),
    }
}

/// Pulls `image`, drawing one bar per layer on a terminal and plain lines otherwise.
pub async fn pull_with_progress(
    docker: &Docker,
    image: &str,
    quiet: bool,
    to_stderr: bool,
) -> Result<()> {
    let (repo, tag) = split_tag(image);
    let credentials = super::login::credentials_for(image)
        .await
        .unwrap_or_else(|e| {
            eprintln!("WARNING: no registry credentials sent: {e:#}");
            None
        });
    let mut stream = docker.create_image(
        Some(CreateImageOptions {
            from_image: repo,
            tag,
            ..Default::default()
        }),
        None,
        credentials,
    );
    let fancy = !quiet
        && if to_stderr {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
    let multi = MultiProgress::new();
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let style = ProgressStyle::with_template("{prefix}: {msg} {wide_bar} {bytes}/{total_bytes}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let say = |line: String| {
        if quiet {
        } else if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| anyhow::anyhow!(super::error_message(&e)))?;
        if let Some(err) = info.error {
            bail!("{err}");
        }
        let status = info.status.unwrap_or_default();
        match info.id {
            Some(id) if fancy => {
                let bar = bars.entry(id.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(0));
                    b.set_style(style.clone());
                    b.set_prefix(id.clone());
                    b
                });
                if let Some(d) = info.progress_detail {
                    if let Some(total) = d.total {
                        bar.set_length(total.max(0) as u64);
                    }
                    if let Some(cur) = d.current {
                        bar.set_position(cur.max(0) as u64);
                    }
                }
                bar.set_message(status);
            }
            Some(id) => {
                if info.progress_detail.is_none()
                    || !status.starts_with("Downloading") && !status.starts_with("Extracting")
                {
                    say(format!("{id}: {status}"));
                }
            }
            None => say(status),
        }
    }
    for b in bars.values() {
        b.finish();
    }
    Ok(())
}

pub async fn pull(docker: &Docker, args: &PullArgs) -> Result<()> {
    pull_with_progress(docker, &args.image, args.quiet, false).await
}

pub async fn push(socket: &std::path::Path, args: &crate::args::PushArgs) -> Result<()> {
    let (repo, tag) = split_tag(&args.image);
    let credentials = super::login::credentials_for(&args.image)
        .await
        .unwrap_or_else(|e| {
            eprintln!("WARNING: no registry credentials sent: {e:#}");
            None
        });
    // Skiff's own request (bollard's push info has no layer ids): `<layer>: <status>`
    // lines, as the docker CLI prints a push without a terminal.
    super::archive::push_stream(
        socket,
        &repo,
        &tag,
        args.compression.as_deref(),
        credentials,
        args.quiet,
    )
    .await
}

pub async fn images(docker: &Docker, args: &ImagesArgs) -> Result<()> {
    let mut list = docker
        .list_images(Some(ListImagesOptions::<String> {
            all: args.all,
            filters: {
                let mut f = super::format::filter_map(&args.filters)?;
                if let Some(r) = &args.reference {
                    f.entry("reference".to_string())
                        .or_default()
                        .push(r.clone());
                }
                f
            },
            ..Default::default()
        }))
        .await?;
    list.sort_by_key(|i| std::cmp::Reverse(i.created));
    if args.quiet {
        for i in &list {
            println!(
                "{}",
                if args.no_trunc {
                    i.id.clone()
                } else {
                    short_id(&i.id)
                }
            );
        }
        return Ok(());
    }
    // Docker's default table is the `table` format's: one code path for both.
    let format = args.format.as_deref().unwrap_or("table");
    super::list_format::print(format, &image_rows(&list, args.no_trunc), &image_columns())
}

/// The docker CLI's `images --format` fields, one row per tag (an untagged image: one row
/// with `<none>`).
fn image_rows(list: &[bollard::models::ImageSummary], no_trunc: bool) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for i in list {
        let id = if no_trunc {
            i.id.clone()
        } else {
            short_id(&i.id)
        };
        let digest = i
            .repo_digests
            .first()
            .and_then(|d| d.rsplit_once('@'))
            .map_or("<none>", |(_, d)| d)
            .to_string();
        let created = chrono::DateTime::from_timestamp(i.created, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
            .unwrap_or_default();
        let tags = if i.repo_tags.is_empty() {
            vec!["<none>:<none>".to_string()]
        } else {
            i.repo_tags.clone()
        };
        for t in tags {
            let (repo, tag) = t.rsplit_once(':').unwrap_or((&t, "<none>"));
            rows.push(serde_json::json!({
                "ID": id,
                "Repository": repo,
                "Tag": tag,
                "Digest": digest,
                "CreatedSince": ago(i.created),
                "CreatedAt": created,
                "Size": human_size(i.size),
                "VirtualSize": human_size(i.size),
                "SharedSize": "N/A",
                "UniqueSize": "N/A",
                "Containers": if i.containers < 0 { "N/A".to_string() } else { i.containers.to_string() },
            }));
        }
    }
    rows
}

fn image_columns() -> super::list_format::Columns {
    super::list_format::Columns {
        header: serde_json::json!({
            "ID": "IMAGE ID",
            "Repository": "REPOSITORY",
            "Tag": "TAG",
            "Digest": "DIGEST",
            "CreatedSince": "CREATED",
            "CreatedAt": "CREATED AT",
            "Size": "SIZE",
            "VirtualSize": "SIZE",
            "SharedSize": "SHARED SIZE",
            "UniqueSize": "UNIQUE SIZE",
            "Containers": "CONTAINERS",
        }),
        default_table: "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}",
    }
}

pub async fn rmi(docker: &Docker, args: &RmiArgs) -> Result<()> {
    let mut failed = false;
    for image in &args.images {
        match docker
            .remove_image(
                image,
                Some(RemoveImageOptions {
                    force: args.force,
                    noprune: false,
                }),
                None,
            )
            .await
        {
            Ok(items) => {
                for it in items {
                    if let Some(u) = it.untagged {
                        println!("Untagged: {u}");
                    }
                    if let Some(d) = it.deleted {
                        println!("Deleted: {d}");
                    }
                }
            }
            Err(e) => {
                eprintln!("Error response from daemon: {}", super::error_message(&e));
                failed = true;
            }
        }
    }
    if failed {
        bail!("failed to remove one or more images");
    }
    Ok(())
}

pub async fn tag(docker: &Docker, args: &TagArgs) -> Result<()> {
    let (repo, tag) = split_tag(&args.target);
    docker
        .tag_image(&args.source, Some(TagImageOptions { repo, tag }))
        .await?;
    Ok(())
}

pub async fn inspect(docker: &Docker, args: &NamesInspectArgs) -> Result<()> {
    let mut out = super::template::Inspector::new(args.format.as_deref())?;
    for n in &args.names {
        out.add_answer(docker.inspect_image(n).await)?;
    }
    out.finish()
}

/// `image import`: a directory is sent as a tar stream (written like a layer: names as
/// bytes, hard links kept), a tarball as is (Docker's `POST /images/create?fromSrc=-`).
pub async fn import(docker: &Docker, args: &ImportArgs) -> Result<()> {
    let body: Vec<u8> = if args.source.as_os_str() == "-" {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
        v
    } else if args.source.is_dir() {
        let src = args.source.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            // skiff's own tree writer: names as bytes, hard links as tar links, owners,
            // modes, xattrs and device nodes (tar's `append_dir_all` loses hard links).
            let mut b = tar::Builder::new(Vec::new());
            skiff_store::layer::tar_builder::append_tree(&mut b, &src)
                .with_context(|| format!("reading {}", src.display()))?;
            Ok(b.into_inner()?)
        })
        .await??
    } else {
        std::fs::read(&args.source).with_context(|| format!("reading {}", args.source.display()))?
    };
    let (repo, tag) = split_tag(&args.reference);
    let mut stream = docker.create_image(
        Some(CreateImageOptions {
            from_src: "-".to_string(),
            repo,
            tag,
            changes: args.changes.iter().map(|s| s.as_str()).collect(),
            ..Default::default()
        }),
        Some(body.into()),
        None,
    );
    let mut last = None;
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| anyhow::anyhow!(super::error_message(&e)))?;
        if let Some(err) = info.error {
            bail!("{err}");
        }
        last = info.status.or(last);
    }
    if let Some(id) = last {
        println!("{id}");
    }
    Ok(())
}

/// `history`: the image's layers and the steps that made them, newest first.
pub async fn history(docker: &Docker, args: &crate::args::HistoryArgs) -> Result<()> {
    let items = docker.image_history(&args.image).await?;
    if args.quiet {
        for i in &items {
            println!("{}", short_history_id(&i.id, args.no_trunc));
        }
        return Ok(());
    }
    let now = chrono::Utc::now().timestamp();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            let by = i.created_by.replace('\t', " ");
            let by = if args.no_trunc || by.chars().count() <= 45 {
                by
            } else {
                format!("{}…", by.chars().take(44).collect::<String>())
            };
            let size = if args.no_trunc {
                i.size.to_string()
            } else {
                crate::client::format::human_size(i.size)
            };
            vec![
                short_history_id(&i.id, args.no_trunc),
                format!(
                    "{} ago",
                    crate::client::format::human_duration(now - i.created)
                ),
                by,
                size,
                i.comment.clone(),
            ]
        })
        .collect();
    // Columns as wide as their widest cell, as Docker's tabwriter makes them.
    crate::client::format::print_table(
        &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        &rows,
    );
    Ok(())
}

fn short_history_id(id: &str, no_trunc: bool) -> String {
    match id.strip_prefix("sha256:") {
        Some(hex) if !no_trunc => hex[..hex.len().min(12)].to_string(),
        _ => id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::split_tag;

    #[test]
    fn tags_split_like_docker() {
        assert_eq!(split_tag("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(split_tag("busybox:1.36"), ("busybox".into(), "1.36".into()));
        assert_eq!(
            split_tag("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/a:v1"),
            ("127.0.0.1:5000/a".into(), "v1".into())
        );
    }
}
