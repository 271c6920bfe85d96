//! skiff-store: image references, the registry client, the content store and its SQLite
//! index, zstd:chunked TOCs, and the lazily filled chunk cache.

pub mod cache;
pub mod chunked;
pub mod error;
pub mod layer_index;

pub use error::{Result, StoreError};
pub use layer_index::{ChunkLocation, ChunkRef, ContentReader, FileEntry, FileKind, LayerIndex};
