//! skiff-fs: the read-only FUSE filesystem presenting an image's merged layers.
//!
//! [`tree`] merges layer indexes into an inode table, [`image_fs`] answers filesystem
//! requests from it (pure, tested without mounting), [`fuse_adapter`] is the `fuser` glue,
//! [`mount`] mounts it with mount(2) (and resumes a kept mount after a restart), and
//! [`keeper`] holds a mount's `/dev/fuse` descriptor across daemon restarts.

pub mod error;
pub mod fuse_adapter;
pub mod image_fs;
pub mod keeper;
pub mod mount;
pub mod recorder;
pub mod tree;

pub use error::{FsError, Result};
pub use fuse_adapter::FsStats;
pub use image_fs::{Attr, DirEntry, ImageFs, StatFs};
pub use mount::{connection_of, mount, resume, KeptMount, MountHandle, MountOptions};
pub use recorder::{AccessRecorder, RECORD_WINDOW};
pub use tree::{NodeKind, Tree};
