//! The daemon's side of the lifecycle, one file per verb. Every verb reads the container's
//! recorded state first and refuses what does not apply; all work on a container directory,
//! so they behave the same after a daemon restart.

mod attach;
mod client;
pub mod control;
mod create;
mod exec;
mod exec_pty;
mod kill;
mod remove;
mod start;
mod wait;

pub use attach::{attach, resize};
pub use create::{create, create_with, ContainerHandle};
pub use exec::{exec, ExecProcess};
pub use kill::{kill, stop};
pub use remove::{purge_trash, remove, remove_detached, Removal};
pub use start::start;
pub use wait::{wait, wait_timeout};
