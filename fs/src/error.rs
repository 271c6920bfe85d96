//! The one error type of skiff-fs.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("mounting {path}: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Store(#[from] skiff_store::StoreError),
}

pub type Result<T, E = FsError> = std::result::Result<T, E>;
