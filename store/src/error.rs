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

    /// The registry answered that the manifest or blob does not exist.
    #[error("{reference}: not found in registry ({what})")]
    NotFound { reference: String, what: String },

    /// The registry could not be reached at all (connection refused, DNS, TLS handshake).
    #[error("registry {host} unreachable while fetching {reference}: {reason}")]
    Unreachable {
        host: String,
        reference: String,
        reason: String,
    },

    #[error("{reference}: unsupported manifest or layer: {reason}")]
    Unsupported { reference: String, reason: String },

    #[error("invalid manifest or config for {reference}: {reason}")]
    InvalidManifest { reference: String, reason: String },

    /// A layer tar entry is unsafe (escapes the root) or malformed.
    #[error("layer {layer}: refusing entry {path:?}: {reason}")]
    BadLayerEntry {
        layer: String,
        path: String,
        reason: String,
    },

    /// A hard link whose target does not exist (as a non-directory) when its layer is
    /// applied over the layers below it: plain unpack would fail on it too.
    #[error("layer {layer}: hard link {path:?} to {target:?}: {reason}")]
    DanglingHardlink {
        layer: String,
        path: crate::LayerPath,
        target: crate::LayerPath,
        reason: &'static str,
    },

    #[error("no such image: {name}")]
    ImageNotFound { name: String },

    #[error("image {name} is ambiguous: matches {count} images")]
    AmbiguousImage { name: String, count: usize },

    #[error("conflict removing {name}: {reason}")]
    Conflict { name: String, reason: String },

    #[error("layer {layer} has no local data (state {state})")]
    LayerNotLocal { layer: String, state: String },

    #[error("content for layer {layer} is not local: {reason}")]
    UnsupportedLocation { layer: String, reason: String },

    #[error("invalid stored data for {what}: {reason}")]
    Corrupt { what: String, reason: String },

    /// A SOCI zTOC (or its SOCI index) that skiff refuses to use: the layer is then pulled
    /// in full.
    #[error("invalid SOCI zTOC of layer {layer}: {reason}")]
    InvalidZtoc { layer: String, reason: String },

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

    /// The registry refused the request with the credentials it asked for (or none were
    /// configured): a `401`/`403` after access was resolved afresh.
    #[error("registry {registry} refused access to {reference}: {reason}")]
    Unauthorized {
        registry: String,
        reference: String,
        reason: String,
    },

    /// The registry answered an unexpected status (`status`), or the transfer broke off
    /// (`None`).
    #[error("registry error for {reference} ({operation}): {}{reason}", status.map(|s| format!("HTTP {s}: ")).unwrap_or_default())]
    RegistryStatus {
        reference: String,
        operation: String,
        status: Option<u16>,
        reason: String,
    },

    /// Credentials that cannot be used as given (`source_name`: the header or file).
    #[error("invalid registry credentials in {source_name}: {reason}")]
    InvalidCredentials { source_name: String, reason: String },

    /// A credential helper (`docker-credential-<name>`) failed, hung or answered garbage.
    #[error("{helper} {action} failed: {reason}")]
    CredentialHelper {
        helper: String,
        action: String,
        reason: String,
    },

    /// A TLS handshake with a registry failed: unknown CA, name mismatch, expired ...
    #[error("registry {host} refused the TLS connection for {reference}: {reason}")]
    Tls {
        host: String,
        reference: String,
        reason: String,
    },

    /// A registry's TLS files (`certs.d/<host>/`) cannot be used.
    #[error("TLS configuration {path}: {reason}")]
    TlsConfig { path: PathBuf, reason: String },

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

impl StoreError {
    /// Whether trying the same request again cannot help: the thing is missing, access is
    /// refused, the bytes are wrong, or the request itself is malformed (4xx). Connection
    /// failures, 5xx, 429 and broken transfers are worth retrying.
    pub fn is_permanent(&self) -> bool {
        match self {
            StoreError::NotFound { .. }
            | StoreError::Unauthorized { .. }
            | StoreError::InvalidCredentials { .. }
            | StoreError::CredentialHelper { .. }
            | StoreError::Tls { .. }
            | StoreError::TlsConfig { .. }
            | StoreError::DigestMismatch { .. }
            | StoreError::InvalidReference { .. }
            | StoreError::LayerNotRegistered { .. } => true,
            StoreError::RegistryStatus {
                status: Some(s), ..
            } => (400..500).contains(s) && *s != 408 && *s != 429,
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
