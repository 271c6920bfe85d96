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

    #[error("{path}: {step}: {source}")]
    Keeper {
        /// The mount point whose descriptor keeper failed.
        path: PathBuf,
        /// What failed: starting the keeper, taking its descriptor...
        step: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("resuming the FUSE connection of {path}: the image's inode table is not the one the kernel knows (fingerprint {found:016x}, expected {expected:016x})")]
    TreeChanged {
        path: PathBuf,
        expected: u64,
        found: u64,
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
