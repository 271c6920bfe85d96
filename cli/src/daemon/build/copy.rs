//! `COPY` and `ADD`: the files a step adds, staged in a directory laid out as the layer
//! will be (`<stage>/app/x`), with Docker's rules: sources relative to the context (or to
//! another stage's or image's root with `--from`) and never outside it, wildcards, a
//! directory source copies its contents, a destination ending in `/` (or several sources)
//! is a directory, owners 0:0 unless `--chown`, `--chmod` for every copied entry, and
//! `ADD` extracting local tar archives (plain, gzip, zstd).

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::BuildError;

/// What one `COPY`/`ADD` copies.
pub struct CopySpec<'a> {
    /// Where sources are read: the context, or a stage's or image's root.
    pub root: &'a Path,
    /// `true` when `root` is the build context (errors say so).
    pub from_context: bool,
    /// Source paths (already substituted), relative to `root`.
    pub srcs: Vec<String>,
    /// Inline (heredoc) sources: (file name, content).
    pub inline: Vec<(String, String)>,
    /// Absolute destination in the image (a trailing `/` kept).
    pub dest: String,
    pub owner: (u32, u32),
    pub chmod: Option<u32>,
    pub add: bool,
    /// The image's root as it is before this step (for destination directories' owners
    /// and modes, symlinks on the way, and whether the destination is a directory).
    pub lower: Option<&'a Path>,
}

fn io(path: &Path, e: std::io::Error) -> BuildError {
    BuildError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// `src` cleaned relative to the root; `None` when it leaves it (`../x`).
fn inside(src: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(src).components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Some(out)
}

/// Resolves `rel` under `root`, following symlinks as if `root` were `/` (a link can
/// never lead out of it).
pub fn resolve_in_root(root: &Path, rel: &Path) -> PathBuf {
    let mut done = PathBuf::new();
    let mut todo: Vec<std::ffi::OsString> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .rev()
        .collect();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        let candidate = done.join(&part);
        match std::fs::symlink_metadata(root.join(&candidate)) {
            Ok(m) if m.file_type().is_symlink() && hops < 40 => {
                hops += 1;
                let target = std::fs::read_link(root.join(&candidate)).unwrap_or_default();
                if target.is_absolute() {
                    done = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => done = candidate,
        }
    }
    root.join(done)
}

/// The sources `src` names under `root`: itself, or what its wildcard matches.
fn expand_source(spec: &CopySpec<'_>, src: &str) -> Result<Vec<PathBuf>, BuildError> {
    let rel = inside(src).ok_or_else(|| BuildError::Copy {
        message: format!("forbidden path outside the build context: {src}"),
    })?;
    let not_found = || BuildError::Copy {
        message: if spec.from_context {
            format!("file not found in build context or excluded by .dockerignore: stat {src}: file does not exist")
        } else {
            format!("stat {src}: file does not exist")
        },
    };
    if !has_wildcard(src) {
        let p = resolve_in_root(spec.root, &rel);
        std::fs::symlink_metadata(&p).map_err(|_| not_found())?;
        return Ok(vec![p]);
    }
    let re = super::dockerignore::pattern_regex(&rel.to_string_lossy())
        .map_err(|message| BuildError::Copy { message })?;
    let depth = rel.components().count();
    let mut out = Vec::new();
    let mut stack = vec![(PathBuf::new(), 0usize)];
    while let Some((dir, d)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(spec.root.join(&dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let r = dir.join(e.file_name());
            if d + 1 == depth {
                if re.is_match(&r.to_string_lossy()) {
                    out.push(spec.root.join(&r));
                }
            } else if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((r, d + 1));
            }
        }
    }
    if out.is_empty() {
        return Err(not_found());
    }
    out.sort();
    Ok(out)
}

/// Copies `src` (file, symlink or directory, recursively) to `dst`, giving every entry
/// `owner` and (`chmod`) its mode; keeps modification times.
fn copy_entry(src: &Path, dst: &Path, spec: &CopySpec<'_>) -> Result<(), BuildError> {
    let md = std::fs::symlink_metadata(src).map_err(|e| io(src, e))?;
    let ft = md.file_type();
    if ft.is_dir() {
        if !dst.is_dir() {
            std::fs::create_dir(dst).map_err(|e| io(dst, e))?;
        }
        let mut names: Vec<_> = std::fs::read_dir(src)
            .map_err(|e| io(src, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for n in names {
            copy_entry(&src.join(&n), &dst.join(&n), spec)?;
        }
    } else if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(|e| io(src, e))?;
        let _ = std::fs::remove_file(dst);
        std::os::unix::fs::symlink(&target, dst).map_err(|e| io(dst, e))?;
    } else if ft.is_file() {
        std::fs::copy(src, dst).map_err(|e| io(dst, e))?;
    } else {
        // Devices, fifos and sockets in a context are not copied (Docker refuses them
        // too in most cases); say so rather than drop them silently.
        return Err(BuildError::Copy {
            message: format!(
                "{}: not a regular file, directory or symlink",
                src.display()
            ),
        });
    }
    finish_entry(dst, &md, spec)
}

fn finish_entry(dst: &Path, md: &std::fs::Metadata, spec: &CopySpec<'_>) -> Result<(), BuildError> {
    let (uid, gid) = spec.owner;
    std::os::unix::fs::lchown(dst, Some(uid), Some(gid)).map_err(|e| io(dst, e))?;
    if !md.file_type().is_symlink() {
        let mode = spec.chmod.unwrap_or(md.mode() & 0o7777);
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io(dst, e))?;
    }
    set_mtime(dst, md.mtime(), md.mtime_nsec());
    Ok(())
}

/// Sets `p`'s modification (and access) time, not following a link; best effort.
pub fn set_mtime(p: &Path, secs: i64, nsecs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, nsecs);
    // Best effort: a time that cannot be set leaves the copy's own (content is what counts).
    let _ = nix::sys::stat::utimensat(
        None,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}

/// The archive kind of a local `ADD` source, by its first bytes: `None` = not a tar.
fn archive_kind(path: &Path) -> Result<Option<&'static str>, BuildError> {
    let mut head = [0u8; 512];
    let mut f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut n = 0;
    while n < head.len() {
        let got = f.read(&mut head[n..]).map_err(|e| io(path, e))?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let h = &head[..n];
    Ok(if h.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if h.starts_with(b"BZh") {
        Some("bzip2")
    } else if h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if n >= 262 && &h[257..262] == b"ustar" {
        Some("tar")
    } else {
        None
    })
}

/// Extracts a local archive into `dest` (`ADD`), owners as the archive says (Docker).
fn extract(path: &Path, kind: &str, dest: &Path) -> Result<bool, BuildError> {
    let f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let r: Box<dyn Read> = match kind {
        "tar" => Box::new(f),
        "gzip" => Box::new(flate2::read::GzDecoder::new(f)),
        "zstd" => Box::new(zstd::stream::read::Decoder::new(f).map_err(|e| io(path, e))?),
        other => {
            return Err(BuildError::Copy {
                message: format!(
                    "ADD {}: {other} archives are not supported by skiff (plain, gzip and zstd tar archives are)",
                    path.display()
                ),
            })
        }
    };
    let mut a = tar::Archive::new(r);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.set_preserve_mtime(true);
    a.set_unpack_xattrs(true);
    match a.unpack(dest) {
        Ok(()) => Ok(true),
        // A file that only looks like a tar is copied as it is (Docker's rule).
        Err(_) if kind == "tar" => Ok(false),
        Err(e) => Err(BuildError::Copy {
            message: match std::error::Error::source(&e) {
                Some(cause) => format!("ADD: extracting {}: {e}: {cause}", path.display()),
                None => format!("ADD: extracting {}: {e}", path.display()),
            },
        }),
    }
}

/// Creates `dir` (relative to `stage`) and its parents; a parent the image already has
/// gets its owner, mode and time (the layer must not change them), a new one 0755 with
/// `owner`.
fn make_dirs(stage: &Path, dir: &Path, spec: &CopySpec<'_>) -> Result<(), BuildError> {
    let mut acc = PathBuf::new();
    for c in dir.components() {
        let Component::Normal(n) = c else { continue };
        acc.push(n);
        let target = stage.join(&acc);
        if target.is_dir() {
            continue;
        }
        std::fs::create_dir(&target).map_err(|e| io(&target, e))?;
        let existing = spec
            .lower
            .and_then(|l| std::fs::metadata(resolve_in_root(l, &acc)).ok())
            .filter(|m| m.is_dir());
        match existing {
            Some(m) => {
                let _ = std::os::unix::fs::lchown(&target, Some(m.uid()), Some(m.gid()));
                std::fs::set_permissions(
                    &target,
                    std::fs::Permissions::from_mode(m.mode() & 0o7777),
                )
                .map_err(|e| io(&target, e))?;
                set_mtime(&target, m.mtime(), m.mtime_nsec());
            }
            None => {
                let _ = std::os::unix::fs::lchown(&target, Some(spec.owner.0), Some(spec.owner.1));
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| io(&target, e))?;
            }
        }
    }
    Ok(())
}

/// The destination with symlinks the image has on its way resolved (`/bin` → `/usr/bin`),
/// relative to the image root.
fn dest_in_image(spec: &CopySpec<'_>, dest: &Path) -> PathBuf {
    let rel: PathBuf = dest
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    match spec.lower {
        Some(l) => {
            let parent = rel.parent().unwrap_or(Path::new(""));
            let resolved = resolve_in_root(l, parent);
            let mut r = resolved.strip_prefix(l).unwrap_or(parent).to_path_buf();
            if let Some(name) = rel.file_name() {
                r.push(name);
            }
            r
        }
        None => rel,
    }
}

/// Stages what `spec` copies under `stage` (an empty directory).
pub fn stage(spec: &CopySpec<'_>, stage: &Path) -> Result<(), BuildError> {
    let mut sources = Vec::new();
    for s in &spec.srcs {
        if spec.add
            && (s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git@"))
        {
            return Err(BuildError::Copy {
                message: format!("ADD {s}: remote sources are not supported by skiff (copy the file into the context)"),
            });
        }
        sources.extend(expand_source(spec, s)?);
    }
    let count = sources.len() + spec.inline.len();
    let dest = dest_in_image(spec, Path::new(&spec.dest));
    let lower_is_dir = spec
        .lower
        .is_some_and(|l| resolve_in_root(l, &dest).is_dir());
    let dest_is_dir =
        spec.dest.ends_with('/') || count > 1 || lower_is_dir || dest.as_os_str().is_empty();
    for src in &sources {
        let md = std::fs::metadata(src).map_err(|e| io(src, e))?;
        if md.is_dir() {
            make_dirs(stage, &dest, spec)?;
            let target = stage.join(&dest);
            if !lower_is_dir {
                // A new destination directory is the source directory's copy.
                let dm = std::fs::symlink_metadata(src).map_err(|e| io(src, e))?;
                finish_entry(&target, &dm, spec)?;
            }
            for e in std::fs::read_dir(src).map_err(|e| io(src, e))? {
                let e = e.map_err(|e| io(src, e))?;
                copy_entry(&e.path(), &target.join(e.file_name()), spec)?;
            }
            continue;
        }
        if spec.add {
            if let Some(kind) = archive_kind(src)? {
                make_dirs(stage, &dest, spec)?;
                if extract(src, kind, &stage.join(&dest))? {
                    continue;
                }
            }
        }
        let name = src.file_name().unwrap_or_default();
        let target_rel = if dest_is_dir {
            dest.join(name)
        } else {
            dest.clone()
        };
        make_dirs(stage, target_rel.parent().unwrap_or(Path::new("")), spec)?;
        // A top-level source that is a symlink is copied as what it points to.
        let real = if std::fs::symlink_metadata(src).is_ok_and(|m| m.file_type().is_symlink()) {
            let rel = src.strip_prefix(spec.root).unwrap_or(src);
            resolve_in_root(spec.root, rel)
        } else {
            src.clone()
        };
        copy_entry(&real, &stage.join(&target_rel), spec)?;
    }
    for (name, content) in &spec.inline {
        let target_rel = if dest_is_dir {
            dest.join(name)
        } else {
            dest.clone()
        };
        make_dirs(stage, target_rel.parent().unwrap_or(Path::new("")), spec)?;
        let target = stage.join(&target_rel);
        std::fs::write(&target, content).map_err(|e| io(&target, e))?;
        let md = std::fs::metadata(&target).map_err(|e| io(&target, e))?;
        finish_entry(&target, &md, spec)?;
    }
    Ok(())
}

/// A digest of the staged tree's names, types, modes, owners, link targets and file
/// contents (not times): the cache key of a `COPY`/`ADD`, like Docker's content checksum.
pub fn tree_digest(root: &Path) -> Result<String, BuildError> {
    let mut h = Sha256::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for n in names.into_iter().rev() {
            let r = rel.join(&n);
            let p = root.join(&r);
            let m = std::fs::symlink_metadata(&p).map_err(|e| io(&p, e))?;
            h.update(r.as_os_str().as_encoded_bytes());
            h.update(format!("\0{:o}\0{}\0{}\0", m.mode(), m.uid(), m.gid()).as_bytes());
            if m.file_type().is_symlink() {
                h.update(
                    std::fs::read_link(&p)
                        .unwrap_or_default()
                        .as_os_str()
                        .as_encoded_bytes(),
                );
            } else if m.is_file() {
                let mut f = std::fs::File::open(&p).map_err(|e| io(&p, e))?;
                std::io::copy(&mut f, &mut h).map_err(|e| io(&p, e))?;
            } else if m.is_dir() {
                stack.push(r);
            }
            h.update(b"\n");
        }
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(root: &'a Path, srcs: &[&str], dest: &str) -> CopySpec<'a> {
        CopySpec {
            root,
            from_context: true,
            srcs: srcs.iter().map(|s| s.to_string()).collect(),
            inline: vec![],
            dest: dest.to_string(),
            owner: (0, 0),
            chmod: None,
            add: false,
            lower: None,
        }
    }

    fn ctx() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("src/sub")).unwrap();
        std::fs::write(d.path().join("src/a.txt"), "a").unwrap();
        std::fs::write(d.path().join("src/sub/b.txt"), "b").unwrap();
        std::fs::write(d.path().join("one.sh"), "#!/bin/sh").unwrap();
        std::fs::write(d.path().join("two.sh"), "#!/bin/sh").unwrap();
        d
    }

    #[test]
    fn directory_contents_file_and_wildcards() {
        let c = ctx();
        let s = tempfile::tempdir().unwrap();
        stage(&spec(c.path(), &["src"], "/app"), s.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(s.path().join("app/a.txt")).unwrap(),
            "a"
        );
        assert_eq!(
            std::fs::read_to_string(s.path().join("app/sub/b.txt")).unwrap(),
            "b"
        );
        let s = tempfile::tempdir().unwrap();
        stage(&spec(c.path(), &["one.sh"], "/bin/run"), s.path()).unwrap();
        assert!(s.path().join("bin/run").is_file());
        let s = tempfile::tempdir().unwrap();
        stage(&spec(c.path(), &["*.sh"], "/scripts/"), s.path()).unwrap();
        assert!(s.path().join("scripts/one.sh").is_file());
        assert!(s.path().join("scripts/two.sh").is_file());
    }

    #[test]
    fn refusals() {
        let c = ctx();
        let s = tempfile::tempdir().unwrap();
        let e = stage(&spec(c.path(), &["../etc/passwd"], "/x"), s.path()).unwrap_err();
        assert!(e.to_string().contains("outside the build context"), "{e}");
        let e = stage(&spec(c.path(), &["missing"], "/x"), s.path()).unwrap_err();
        assert!(
            e.to_string().contains("file not found in build context"),
            "{e}"
        );
        let e = stage(&spec(c.path(), &["*.none"], "/x"), s.path()).unwrap_err();
        assert!(e.to_string().contains("file not found"), "{e}");
    }

    #[test]
    fn add_extracts_a_local_tar_and_digest_follows_content() {
        let c = ctx();
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            std::fs::File::create(c.path().join("t.tar.gz")).unwrap(),
            flate2::Compression::fast(),
        ));
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_cksum();
        b.append_data(&mut h, "inner/x.txt", &b"hi"[..]).unwrap();
        b.into_inner().unwrap().finish().unwrap();
        let s = tempfile::tempdir().unwrap();
        let mut sp = spec(c.path(), &["t.tar.gz"], "/opt/");
        sp.add = true;
        stage(&sp, s.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(s.path().join("opt/inner/x.txt")).unwrap(),
            "hi"
        );
        let d1 = tree_digest(s.path()).unwrap();
        std::fs::write(s.path().join("opt/inner/x.txt"), "ho").unwrap();
        assert_ne!(d1, tree_digest(s.path()).unwrap());
    }
}
