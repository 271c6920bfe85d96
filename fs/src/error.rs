//! The one error type of skiff-fs. Variants name the inode, path or layer that failed; the
//! FUSE adapter is the only place that turns them into errno values.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("mounting {path}: {step}: {source}")]
    Mount {
        path: PathBuf,
        /// What failed: opening /dev/fuse, mount(2), the FUSE handshake...
        step: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("unmounting {path}: {source}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("no inode {ino}")]
    NoInode { ino: u64 },

    #[error("no entry {name:?} in directory inode {parent}")]
    NotFound { parent: u64, name: String },

    #[error("inode {ino} is not a directory")]
    NotADirectory { ino: u64 },

    #[error("inode {ino} is a directory")]
    IsADirectory { ino: u64 },

    #[error("inode {ino} is not a symlink")]
    NotASymlink { ino: u64 },

    #[error("inode {ino} has no extended attribute {name:?}")]
    NoXattr { ino: u64, name: String },

    #[error("reading {path:?} (inode {ino}) of layer {layer} at offset {offset}: {source}")]
    Read {
        ino: u64,
        path: skiff_store::LayerPath,
        layer: String,
        offset: u64,
        #[source]
        source: Box<skiff_store::StoreError>,
    },
}

pub type Result<T, E = FsError> = std::result::Result<T, E>;
