//! skiff-runtime: turns a read-only lower directory and a configuration into an isolated,
//! supervised process. Knows nothing of registries or images.

pub mod error;
pub mod network;

pub use error::{Result, RuntimeError};
