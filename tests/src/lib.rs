//! Support for skiff's end-to-end tests: a real registry, fixture images, the real binary.

pub mod binary;
pub mod containerd;
pub mod counting_proxy;
pub mod daemon;
pub mod docker_cli;
pub mod fixtures;
pub mod netns;
pub mod pty;
pub mod registry;
pub mod skip;
pub mod test_ca;
pub mod token_server;

pub use counting_proxy::CountingProxy;
pub use daemon::Daemon;
pub use registry::Registry;
pub use token_server::TokenServer;
