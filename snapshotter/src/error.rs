//! The snapshotter's one error type, and its mapping to the gRPC codes containerd turns
//! back into its `errdefs` (NotFound, AlreadyExists, FailedPrecondition, InvalidArgument,
//! Unavailable).

use std::path::PathBuf;

use containerd_snapshots::tonic::{Code, Status};

/// Everything a snapshot operation can fail with; fields name the key, path or layer.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {key:?} does not exist")]
    NotFound { key: String },
    #[error("snapshot {key:?} already exists")]
    AlreadyExists { key: String },
    #[error("parent snapshot {parent:?} does not exist")]
    ParentNotFound { parent: String },
    #[error("parent {parent:?} is not a committed snapshot")]
    ParentNotCommitted { parent: String },
    #[error("snapshot {key:?} is {kind}, not active")]
    NotActive { key: String, kind: &'static str },
    #[error("cannot remove snapshot {key:?}: it has children")]
    HasChildren { key: String },
    #[error("cannot update field {field:?} of snapshot {key:?}: only labels are mutable")]
    ImmutableField { key: String, field: String },
    #[error("invalid filter {filter:?}: {reason}")]
    BadFilter {
        filter: String,
        reason: &'static str,
    },
    #[error("snapshot database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("snapshot database {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lazy layer {layer} of {image}: {source}")]
    Remote {
        image: String,
        layer: String,
        #[source]
        source: Box<skiff_store::StoreError>,
    },
    #[error("lazy layer {layer}: mounting at {path}: {source}")]
    LazyMount {
        layer: String,
        path: PathBuf,
        #[source]
        source: Box<skiff_fs::FsError>,
    },
}

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

impl SnapshotError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> SnapshotError {
        SnapshotError::Io {
            path: path.into(),
            source,
        }
    }

    /// The gRPC code containerd maps back to its error kind.
    pub fn code(&self) -> Code {
        match self {
            SnapshotError::NotFound { .. } | SnapshotError::ParentNotFound { .. } => Code::NotFound,
            SnapshotError::AlreadyExists { .. } => Code::AlreadyExists,
            SnapshotError::NotActive { .. } | SnapshotError::HasChildren { .. } => {
                Code::FailedPrecondition
            }
            SnapshotError::ParentNotCommitted { .. }
            | SnapshotError::ImmutableField { .. }
            | SnapshotError::BadFilter { .. } => Code::InvalidArgument,
            SnapshotError::Remote { .. } => Code::Unavailable,
            SnapshotError::Db { .. }
            | SnapshotError::Corrupt { .. }
            | SnapshotError::Io { .. }
            | SnapshotError::LazyMount { .. } => Code::Internal,
        }
    }
}

impl From<SnapshotError> for Status {
    fn from(e: SnapshotError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}
