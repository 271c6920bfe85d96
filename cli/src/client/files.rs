//! `diff`, `export`, `cp`: a container's filesystem from the client side.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bollard::container::{DownloadFromContainerOptions, UploadToContainerOptions};
use bollard::Docker;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::args::{CpArgs, ExportArgs};

pub async fn diff(docker: &Docker, container: &str) -> Result<()> {
    for c in docker
        .container_changes(container)
        .await?
        .unwrap_or_default()
    {
        let kind = match c.kind as u8 {
            0 => 'C',
            1 => 'A',
            _ => 'D',
        };
        println!("{kind} {}", c.path);
    }
    Ok(())
}

pub async fn export(docker: &Docker, args: &ExportArgs) -> Result<()> {
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = match &args.output {
        Some(p) => Box::new(
            tokio::fs::File::create(p)
                .await
                .with_context(|| format!("creating {}", p.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
    let mut s = docker.export_container(&args.container);
    while let Some(chunk) = s.next().await {
        out.write_all(&chunk?).await?;
    }
    out.flush().await?;
    Ok(())
}

/// `CONTAINER:PATH` → (container, path); a local path → `None`.
fn remote(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('/') || s.starts_with('.') {
        return None;
    }
    s.split_once(':')
}

pub async fn cp(docker: &Docker, args: &CpArgs) -> Result<()> {
    match (remote(&args.src), remote(&args.dst)) {
        (Some((c, path)), None) => copy_out(docker, c, path, Path::new(&args.dst)).await,
        (None, Some((c, path))) => copy_in(docker, Path::new(&args.src), c, path).await,
        _ => bail!("copying between containers or between local paths is not supported: one of SRC and DST must be CONTAINER:PATH"),
    }
}

async fn copy_out(docker: &Docker, c: &str, path: &str, dst: &Path) -> Result<()> {
    let mut tar = Vec::new();
    let mut s = docker.download_from_container(c, Some(DownloadFromContainerOptions { path }));
    while let Some(chunk) = s.next().await {
        tar.extend_from_slice(&chunk?);
    }
    let dst = dst.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let tar = relative_names(&tar)?;
        if dst.is_dir() {
            tar::Archive::new(&tar[..])
                .unpack(&dst)
                .with_context(|| format!("extracting into {}", dst.display()))?;
            return Ok(());
        }
        // A new name: extracted beside it, then the copied item renamed.
        let parent = dst
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::tempdir_in(parent)?;
        tar::Archive::new(&tar[..]).unpack(tmp.path())?;
        // `C:/` and `C:DIR/.` come as the directory's content (first entry `/` or `./`):
        // the extracted set becomes DST itself.
        let content = tar::Archive::new(&tar[..])
            .entries()?
            .next()
            .transpose()?
            .map(|e| matches!(&e.path_bytes()[..], b"/" | b"./" | b"." | b""))
            .unwrap_or(false);
        let moved = if content {
            tmp.path().to_path_buf()
        } else {
            std::fs::read_dir(tmp.path())?
                .flatten()
                .next()
                .context("the archive is empty")?
                .path()
        };
        std::fs::rename(&moved, &dst).with_context(|| format!("moving into {}", dst.display()))?;
        if content {
            // Renamed away: nothing left for the guard to delete.
            let _ = tmp.keep();
        }
        Ok(())
    })
    .await?
}

/// The archive of a container's `/` names its entries `/`, `/bin`, ... and its hard links
/// `/bin/sh` (dockerd's form, which the docker CLI rebases): the same archive with those
/// names relative, which the tar crate unpacks (it refuses hard links to absolute names).
/// Any other archive is returned as it is.
fn relative_names(tar: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>> {
    let rooted = tar::Archive::new(tar)
        .entries()?
        .next()
        .transpose()?
        .is_some_and(|e| &e.path_bytes()[..] == b"/");
    if !rooted {
        return Ok(tar.into());
    }
    let strip = |b: &[u8]| -> PathBuf {
        let b = b.strip_prefix(b"/").unwrap_or(b);
        let b = if b.is_empty() { &b"."[..] } else { b };
        PathBuf::from(std::ffi::OsStr::from_bytes(b))
    };
    let mut out = tar::Builder::new(Vec::new());
    let mut ar = tar::Archive::new(tar);
    for entry in ar.entries()? {
        let mut entry = entry?;
        let mut h = entry.header().clone();
        let name = strip(&entry.path_bytes());
        match entry.link_name_bytes() {
            Some(target) if h.entry_type() == tar::EntryType::Link => {
                let target = strip(&target);
                out.append_link(&mut h, &name, &target)?;
            }
            Some(target) => {
                // A symlink's target is the container's own path: kept as it is.
                let target = PathBuf::from(std::ffi::OsStr::from_bytes(&target));
                out.append_link(&mut h, &name, &target)?;
            }
            None => out.append_data(&mut h, &name, &mut entry)?,
        }
    }
    Ok(out.into_inner()?.into())
}

async fn copy_in(docker: &Docker, src: &Path, c: &str, path: &str) -> Result<()> {
    // An existing directory takes the source under its own name; otherwise the source
    // becomes `path`. The first tar header of `path` says which (type flag `5`: a directory).
    let first = docker
        .download_from_container(c, Some(DownloadFromContainerOptions { path }))
        .next()
        .await;
    let into_dir = matches!(&first, Some(Ok(b)) if b.len() > 156 && b[156] == b'5');
    let (dir, name) = if into_dir {
        (
            path.to_string(),
            src.file_name()
                .map(PathBuf::from)
                .context("the source has no name")?,
        )
    } else {
        let p = Path::new(path);
        (
            p.parent().map_or("/".into(), |d| d.display().to_string()),
            p.file_name()
                .map(PathBuf::from)
                .context("the destination has no name")?,
        )
    };
    let src = src.to_path_buf();
    let tar = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        if src.is_dir() {
            b.append_dir_all(&name, &src)?;
        } else {
            b.append_path_with_name(&src, &name)?;
        }
        Ok(b.into_inner()?)
    })
    .await??;
    docker
        .upload_to_container(
            c,
            Some(UploadToContainerOptions {
                path: dir,
                ..Default::default()
            }),
            tar.into(),
        )
        .await?;
    Ok(())
}
