//! Shared pieces of skiff's benchmarks.

pub mod crun;
pub mod delay_proxy;
pub mod shaped_link;
pub mod tbf;
