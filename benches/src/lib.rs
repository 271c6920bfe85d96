//! Shared pieces of skiff's benchmarks.
