//! skiff-store: image references, the registry client, the content store and its SQLite
//! index, zstd:chunked TOCs, and the lazily filled chunk cache.

pub mod cache;
pub mod chunked;
pub mod content;
pub mod db;
pub mod error;
pub mod layer;
pub mod layer_index;
pub mod layer_path;
pub mod profile;
pub mod reference;
pub mod registry;

pub use error::{Result, StoreError};
pub use layer_index::{ChunkLocation, ChunkRef, ContentReader, FileEntry, FileKind, LayerIndex};
pub use layer_path::LayerPath;
pub use reference::ImageReference;
pub use registry::{RegistryClient, RegistryOptions};

pub mod convert;
mod fresh_indexes;
mod import;
mod lazy;
mod lazy_profile;
pub mod lazy_source;
pub mod profile_registry;
mod pull;
mod push;
mod store;

pub use import::ImageChanges;
pub use layer::Compression;
pub use lazy::{ChunkCacheUsage, FORMAT_ZSTD_CHUNKED};
pub use lazy_profile::ImagePrefetch;
pub use pull::{PullProgress, PullStatus};
pub use store::{ImageRecord, ImageSummary, LayerInfo, Removed, Store, StoreOptions};
