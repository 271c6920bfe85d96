//! Shared pieces of skiff's benchmarks.

pub mod crun;
