//! skiff-fs: the read-only FUSE filesystem presenting an image's merged layers.
//!
//! [`tree`] merges layer indexes into an inode table, [`image_fs`] answers filesystem
//! requests from it (pure, tested without mounting), [`fuse_adapter`] is the `fuser` glue,
//! and [`mount`] mounts it with mount(2).

pub mod error;
pub mod fuse_adapter;
pub mod image_fs;
pub mod mount;
pub mod recorder;
pub mod tree;

pub use error::{FsError, Result};
pub use fuse_adapter::FsStats;
pub use image_fs::{Attr, DirEntry, ImageFs, StatFs};
pub use mount::{mount, MountHandle, MountOptions};
pub use recorder::{AccessRecorder, RECORD_WINDOW};
pub use tree::{NodeKind, Tree};
