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
            return Err(std::io::Error::other(format!(
                "the build context is larger than skiff's limit of {} GiB",
                MAX_CONTEXT_BYTES >> 30
            )));
        }
        Ok(n)
    }
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
    // `unpack` refuses entries that would land outside `root` (`../`, absolute links).
    a.unpack(root)
        .map_err(|e| BuildError::Context(format!("unpacking the build context: {e}")))
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
