//! The one error type of skiff-store. Every variant names what failed (a path, a digest,
//! a reference) so the caller can log it once, where it is handled.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),

    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("invalid layer index for {layer}: {reason}")]
    InvalidIndex { layer: String, reason: String },

    /// A zstd:chunked TOC (or its footer/annotations) that skiff refuses to use.
    #[error("invalid zstd:chunked TOC of layer {layer} at entry {entry:?}: {reason}")]
    InvalidToc {
        layer: String,
        entry: String,
        reason: String,
    },

    /// A range of a blob could not be read (after retries, where the source retries).
    #[error("fetching {digest} bytes {offset}+{len} failed: {reason}")]
    BlobFetch {
        digest: String,
        offset: u64,
        len: u64,
        reason: String,
    },

    /// A chunk's bytes did not match its TOC digest, even after fetching it once more.
    #[error(
        "chunk {chunk_digest} of layer {layer} (blob bytes {offset}+{len}) is corrupt: {reason}"
    )]
    ChunkCorrupt {
        layer: String,
        chunk_digest: String,
        offset: u64,
        len: u64,
        reason: String,
    },

    /// A read asked for a layer no blob source was registered for.
    #[error("layer {layer} is not registered with the chunk cache")]
    LayerNotRegistered { layer: String },
}

impl StoreError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
