//! skiff-store: image references, the registry client, the content store and its SQLite
//! index, the lazy layer formats (zstd:chunked, eStargz), and the lazily filled chunk cache.

pub mod cache;
mod chunk_codec;
pub mod chunked;
pub mod content;
pub mod db;
pub mod error;
pub mod estargz;
pub mod layer;
pub mod layer_index;
pub mod layer_path;
pub mod profile;
pub mod reference;
pub mod registry;
pub mod soci;

pub use error::{Result, StoreError};
pub use layer_index::{
    ChunkLocation, ChunkRef, Codec, ContentReader, FileEntry, FileKind, LayerIndex,
};
pub use layer_path::LayerPath;
pub use reference::ImageReference;
pub use registry::{RegistryClient, RegistryOptions};

mod archive;
mod commit;
pub mod convert;
mod fresh_indexes;
mod import;
mod lazy;
pub mod lazy_format;
mod lazy_profile;
pub mod lazy_source;
pub mod profile_registry;
mod program_prefetch;
pub use program_prefetch::default_program;
mod pull;
mod push;
mod push_recompressed;
mod snapshot_layer;
mod store;
mod whole_layers;

pub use archive::Loaded;
pub use commit::{CommitRequest, LayerDir};
pub use import::ImageChanges;
pub use layer::Compression;
pub use lazy::{ChunkCacheUsage, FORMAT_ESTARGZ, FORMAT_ZSTD_CHUNKED};
pub use lazy_profile::ImagePrefetch;
pub use pull::{PullProgress, PullStatus};
pub use push::{PushProgress, PushProgressFn};
pub use push_recompressed::PushCompression;
pub use store::{ImageRecord, ImageSummary, LayerInfo, Removed, Store, StoreOptions};
