//! skiff-snapshotter: containerd's Snapshots API (`containerd.services.snapshots.v1`), served
//! as a proxy plugin on a Unix socket, over skiff's lazy store.
//!
//! Snapshots are laid out like containerd's overlay snapshotter (`snapshots/<id>/fs` as the
//! layer's directory, overlay mounts stacking parents) with their metadata in SQLite
//! ([`meta`]). A Prepare carrying the CRI (or stargz) remote-snapshot labels for a layer skiff
//! reads lazily is answered by mounting that one layer through FUSE in overlay format
//! ([`overlay_view`]), committing it under the requested name and returning AlreadyExists, so
//! containerd skips the download. Every other layer is unpacked by containerd into an active
//! snapshot, as with the overlay snapshotter. See docs/kubernetes.md.

pub mod error;
pub mod filter;
pub mod meta;
pub mod mounts;
pub mod overlay_view;
pub mod remote;
pub mod serve;
pub mod service;
pub mod usage;

pub use error::{Result, SnapshotError};
pub use serve::{bind, serve};
pub use service::SkiffSnapshotter;
