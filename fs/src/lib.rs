//! skiff-fs: the read-only FUSE filesystem presenting an image's merged layers.

pub mod error;
pub mod image_fs;
pub mod tree;

pub use error::{FsError, Result};
