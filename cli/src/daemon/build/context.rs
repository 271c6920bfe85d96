//! The build context: the request body (a tar, plain or gzip/zstd compressed) unpacked into
//! a private directory under `<data-root>/tmp`, removed when the build ends. A context
//! larger than [`MAX_CONTEXT_BYTES`] is refused.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::dockerignore::Ignore;
use super::BuildError;
use crate::daemon::paths::Paths;

/// The largest context accepted (bytes received, and bytes unpacked).
pub const MAX_CONTEXT_BYTES: u64 = 8 << 30;

pub struct Context {
    dir: PathBuf,
    /// The unpacked context.
    pub root: PathBuf,
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), "removing a build context: {e}");
            }
        }
    }
}

/// Counts what passes and fails past [`MAX_CONTEXT_BYTES`].
struct Limited<R> {
    inner: R,
    seen: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        if self.seen > MAX_CONTEXT_BYTES {
            return Err(too_large());
        }
        Ok(n)
    }
}

fn too_large() -> std::io::Error {
    std::io::Error::other(format!(
        "the build context is larger than skiff's limit of {} GiB",
        MAX_CONTEXT_BYTES >> 30
    ))
}

/// Whether `e` or one of its sources is [`too_large`]'s error.
fn limit_exceeded(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.to_string().contains("larger than skiff's limit") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Reads a request body on a blocking thread.
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
    cur: bytes::Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

/// A tar header (`ustar` magic), or nothing but zeros (an empty archive, or no body).
fn is_tar(head: &[u8]) -> bool {
    let ustar = head.len() >= 262 && &head[257..262] == b"ustar";
    ustar || head.iter().all(|b| *b == 0)
}

fn unpack(reader: impl Read, root: &Path) -> Result<(), BuildError> {
    let mut r = std::io::BufReader::new(Limited {
        inner: reader,
        seen: 0,
    });
    let head = std::io::BufRead::fill_buf(&mut r)
        .map_err(|e| BuildError::Context(format!("reading the build context: {e}")))?
        .to_vec();
    let decoded: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::new(r)
                .map_err(|e| BuildError::Context(format!("reading the build context: {e}")))?,
        )
    } else if head.starts_with(b"BZh") || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z']) {
        return Err(BuildError::Context(
            "the build context is bzip2 or xz compressed: send it plain, gzip or zstd".into(),
        ));
    } else if !is_tar(&head) {
        // Not an archive: the body is the Dockerfile itself (`docker build - < Dockerfile`).
        let path = root.join("Dockerfile");
        let mut f = std::fs::File::create(&path).map_err(|e| BuildError::Io {
            path: path.clone(),
            source: e,
        })?;
        std::io::copy(&mut r, &mut f)
            .map_err(|e| BuildError::Context(format!("reading the Dockerfile sent: {e}")))?;
        return Ok(());
    } else {
        Box::new(r)
    };
    let mut a = tar::Archive::new(Limited {
        inner: decoded,
        seen: 0,
    });
    a.set_preserve_permissions(true);
    a.set_preserve_mtime(true);
    a.set_overwrite(true);
    unpack_entries(&mut a, root)
        .map_err(|e| BuildError::Context(format!("unpacking the build context: {e}")))
}

/// Unpacks every entry of `a` into `root`, as `tar::Archive::unpack` does (`unpack_in`
/// refuses entries that would land outside `root`; directories last, so a read-only
/// directory does not block its files). Unlike it, an archive that ends right after an
/// entry's data, without padding or end-of-archive blocks, ends there: docker CLI 28 sends
/// such a context for `build -f - DIR`, and dockerd's Go reader accepts it. An entry cut
/// short inside its data is still an error.
fn unpack_entries<R: Read>(a: &mut tar::Archive<R>, root: &Path) -> std::io::Result<()> {
    let mut dirs = Vec::new();
    let mut entries = a.entries()?;
    // The sizes the headers declare, refused before their data is written.
    let mut declared: u64 = 0;
    loop {
        let mut entry = match entries.next() {
            None => break,
            Some(Ok(e)) => e,
            // The tar crate reports EOF in the padding after a fully read entry as an
            // `Other` error with this text (the unit tests below pin it); every entry's data
            // was read in full by `unpack_in`, so only padding is skipped here.
            Some(Err(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof
                    || e.to_string().contains("unexpected EOF during skip") =>
            {
                break
            }
            Some(Err(e)) => return Err(e),
        };
        declared = declared.saturating_add(entry.size());
        if declared > MAX_CONTEXT_BYTES {
            return Err(too_large());
        }
        if entry.header().entry_type().is_dir() {
            dirs.push(entry);
            continue;
        }
        entry.unpack_in(root).map_err(|e| {
            // The tar crate wraps a read error in "failed to unpack <path>": the limit's
            // message is the one that says why.
            if limit_exceeded(&e) {
                too_large()
            } else {
                e
            }
        })?;
    }
    // Deepest first, so a parent's mode is set after its children exist.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.path_bytes().len()));
    for mut d in dirs {
        d.unpack_in(root)?;
    }
    Ok(())
}

impl Context {
    /// Receives and unpacks `body`.
    pub async fn receive(paths: &Paths, body: axum::body::Body) -> Result<Context, BuildError> {
        let dir = paths
            .data_root
            .join("tmp")
            .join(format!("build-{}", crate::daemon::names::new_id()));
        let root = dir.join("context");
        std::fs::create_dir_all(&root).map_err(|e| BuildError::Io {
            path: root.clone(),
            source: e,
        })?;
        let ctx = Context { dir, root };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let feeder = tokio::spawn(async move {
            use futures::StreamExt;
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                let item = chunk.map_err(std::io::Error::other);
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    break;
                }
            }
        });
        let root = ctx.root.clone();
        let res = tokio::task::spawn_blocking(move || {
            unpack(
                BodyReader {
                    rx,
                    cur: bytes::Bytes::new(),
                },
                &root,
            )
        })
        .await
        .map_err(|e| BuildError::Context(format!("unpacking the build context: {e}")))?;
        feeder.abort();
        res?;
        Ok(ctx)
    }

    /// Reads the Dockerfile (`name`, relative to the context) and `.dockerignore`, then
    /// deletes what `.dockerignore` excludes from the context.
    pub fn prepare(&self, name: &str) -> Result<(String, Ignore), BuildError> {
        let name = if name.is_empty() { "Dockerfile" } else { name };
        let rel = super::dockerignore::clean(name);
        let path = super::copy::resolve_in_root(&self.root, Path::new(&rel));
        let text = match std::fs::read(&path) {
            Ok(b) => String::from_utf8(b).map_err(|_| {
                BuildError::Context(format!("the Dockerfile {name} is not UTF-8 text"))
            })?,
            Err(_) if rel == "Dockerfile" => {
                // Docker also looks for `dockerfile`.
                std::fs::read_to_string(self.root.join("dockerfile")).map_err(|_| {
                    BuildError::Context(format!("Cannot locate specified Dockerfile: {name}"))
                })?
            }
            Err(_) => {
                return Err(BuildError::Context(format!(
                    "Cannot locate specified Dockerfile: {name}"
                )))
            }
        };
        let ignore = match std::fs::read_to_string(self.root.join(".dockerignore")) {
            Ok(t) => Ignore::parse(&t).map_err(BuildError::Context)?,
            Err(_) => Ignore::default(),
        };
        ignore.apply(&self.root).map_err(|e| BuildError::Io {
            path: self.root.clone(),
            source: e,
        })?;
        Ok((text, ignore))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_context_declaring_more_than_the_limit_is_refused_before_its_data() {
        let mut h = tar::Header::new_gnu();
        h.set_path("big.bin").unwrap();
        h.set_size(MAX_CONTEXT_BYTES + 1);
        h.set_mode(0o644);
        h.set_cksum();
        let mut body = h.as_bytes().to_vec();
        body.extend_from_slice(&[7u8; 4096]);
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(&body[..], dir.path()).unwrap_err().to_string();
        assert!(err.contains("larger than skiff's limit of 8 GiB"), "{err}");
        assert!(!dir.path().join("big.bin").exists());
    }

    #[test]
    fn a_context_cut_after_its_last_entrys_data_ends_there() {
        let full = tar_of(&[("Dockerfile", b"FROM scratch\n"), (".dockerignore", b"x\n")]);
        // Header (512) + padded data (512) + header (512) + 2 data bytes, no padding and no
        // end-of-archive blocks: what docker CLI 28 sends for `build -f - DIR`.
        let cut = &full[..512 * 3 + 2];
        let dir = tempfile::tempdir().unwrap();
        unpack(cut, dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("Dockerfile")).unwrap(),
            b"FROM scratch\n"
        );
        assert_eq!(
            std::fs::read(dir.path().join(".dockerignore")).unwrap(),
            b"x\n"
        );
    }

    #[test]
    fn a_context_cut_inside_an_entrys_data_is_refused() {
        let full = tar_of(&[("Dockerfile", b"FROM scratch\n")]);
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(&full[..512 + 5], dir.path()).unwrap_err();
        assert!(
            matches!(&err, BuildError::Context(m) if m.starts_with("unpacking the build context")),
            "{err:?}"
        );
    }
}
