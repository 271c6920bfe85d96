//! skiff's client and engine as one library; `src/main.rs` (`skiff`, the client) and
//! `src/bin/skiffd.rs` (`skiffd`, the engine) are thin mains over it (see `entry`).

pub mod args;
pub mod bench;
pub mod client;
pub mod daemon;
pub mod entry;
pub mod exit;
