//! skiff-runtime: turns read-only lower directories and a configuration into an isolated,
//! supervised process. Knows nothing of registries or images.
//!
//! Process model: the daemon (multi-threaded) never forks to run Rust code. [`create`] starts
//! `exe __shim <dir>` — the caller's own binary, whose `main` calls
//! [`entry::run_if_internal`] first — or [`create_with`] has a [`ShimLauncher`] (the same
//! binary, exec'd once) fork that shim, which saves loading the binary per container. The shim detaches, survives daemon restarts, builds the
//! container's init in fresh namespaces and supervises it; everything else talks to the shim
//! over `<dir>/shim.sock` ([`protocol`]) or reads `<dir>/state.json` and `<dir>/container.log`.

mod cgroup;
pub mod config;
mod container;
pub mod entry;
pub mod error;
mod forkinto;
mod init;
pub mod init_layer;
mod launcher;
pub mod logs;
mod mount_table;
pub mod network;
mod nsexec;
pub mod paths;
mod persist;
pub mod protocol;
mod seccomp;
mod shim;
pub mod state;

pub use config::{ContainerConfig, ExecConfig, NetworkMode, Resources, WinSize};
pub use container::control;
pub use container::{
    attach, create, create_with, exec, kill, purge_trash, remove, remove_detached, resize, start,
    stop, wait, wait_timeout, ContainerHandle, ExecProcess, Removal,
};
pub use error::{Result, RuntimeError, StepFailure};
/// The paths a container that is not privileged sees masked and read-only (Docker's).
pub use init::rootfs::{MASKED_PATHS, READONLY_PATHS};
pub use launcher::ShimLauncher;

/// `spec` (`user[:group]`, names or numeric ids; empty is root) resolved as a container's
/// process would be, against the text of its root's `/etc/passwd` and `/etc/group` (empty
/// when missing): `(uid, gid)`. The error is a human-readable reason (Docker's wording).
pub fn resolve_user_ids(
    spec: &str,
    passwd: &str,
    group: &str,
) -> std::result::Result<(u32, u32), String> {
    init::user::resolve(spec, passwd, group).map(|u| (u.uid, u.gid))
}
pub use logs::{LogEntry, LogOptions, LogReader, LogStream};
pub use nix::sys::signal::Signal;
pub use protocol::{AttachStreams, Frame};
pub use state::{state, ContainerState, Status};
