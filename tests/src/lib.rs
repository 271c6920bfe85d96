//! Support for skiff's end-to-end tests: a real registry, fixture images, the real binary.

pub mod binary;
pub mod fixtures;
pub mod registry;
pub mod skip;

pub use registry::Registry;
