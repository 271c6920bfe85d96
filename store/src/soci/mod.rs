//! SOCI (seekable OCI) for unmodified gzip layers: soci-snapshotter's zTOC (a flatbuffers
//! file table plus zran checkpoints per layer), read and written byte-compatibly, and the
//! zran core that inflates one span alone. See docs/formats.md for what is served.

pub mod index;
pub mod lazy;
pub mod zinfo;
pub mod zran;
pub mod ztoc;
pub mod ztoc_fbs;

pub use ztoc::{build as build_ztoc, FileMetadata, Ztoc, DEFAULT_SPAN_SIZE};
