//! The one error type of skiff-runtime. Variants name the step that failed and the path or
//! object it failed on, so the daemon can show it and map it to Docker's exit codes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file operation of the runtime itself failed.
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A step of container setup (in the shim or the container's init) failed.
    #[error("{step} {path}: {source}")]
    Setup {
        step: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The container's command could not be executed (`exec: no such file: /bin/foo`).
    #[error("exec {path}: {source}")]
    Exec {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The configured user or group does not exist in the image's /etc/passwd or /etc/group.
    #[error("user {spec}: {reason}")]
    User { spec: String, reason: String },
    /// A cgroup operation failed.
    #[error("cgroup {step} {path}: {source}")]
    Cgroup {
        step: &'static str,
        path: String,
        #[source]
        source: cgroups_rs::error::Error,
    },
    /// A state or config file could not be parsed.
    #[error("parse {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The operation does not apply in the container's current status.
    #[error("container {dir}: cannot {op} while {status}")]
    InvalidState {
        dir: PathBuf,
        op: &'static str,
        status: String,
    },
    /// The configuration is unusable.
    #[error("invalid config {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    /// A mount (`-v`, `--mount`, `--tmpfs`) that cannot be made as asked.
    #[error("invalid mount {destination:?}: {reason}")]
    InvalidMount { destination: String, reason: String },
    /// A mount option (tmpfs option, bind propagation) that is unknown or malformed.
    #[error("invalid mount option {option:?}: {reason}")]
    InvalidMountOption { option: String, reason: String },
    /// `--cap-add`/`--cap-drop` of a name that is no Linux capability.
    #[error("unknown capability: {name:?}")]
    UnknownCapability { name: String },
    /// A seccomp profile that does not parse or cannot be compiled.
    #[error("invalid seccomp profile: {reason}")]
    InvalidSeccompProfile { reason: String },
    /// `--ulimit` with an unknown name or soft > hard.
    #[error("invalid ulimit {name:?}: {reason}")]
    InvalidUlimit { name: String, reason: String },
    /// `--sysctl` of a key that is not namespaced (or `net.*` with the host network).
    #[error("sysctl {key:?} is not allowed: {reason}")]
    InvalidSysctl { key: String, reason: String },
    /// `--device` that is not a device node or has bad permissions.
    #[error("invalid device {path}: {reason}")]
    InvalidDevice { path: PathBuf, reason: String },
    /// `--log-driver`/`--log-opt` that skiff does not support or cannot parse.
    #[error("invalid log option {option}={value:?}: {reason}")]
    InvalidLogOption {
        option: String,
        value: String,
        reason: String,
    },
    /// Reading the logs of a container whose log driver keeps none (`none`).
    #[error("configured logging driver does not support reading")]
    LogsNotReadable { dir: PathBuf },
    /// The shim's socket spoke something we did not expect.
    #[error("shim protocol {path}: {reason}")]
    Protocol { path: PathBuf, reason: String },
    // --- networking (runtime/src/network) ---
    #[error("netlink {step} {name}: {source}")]
    Netlink {
        step: &'static str,
        name: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("network namespace {step} {path}: {source}")]
    Netns {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("iptables {args} failed ({status}): {stderr}")]
    Iptables {
        args: String,
        status: String,
        stderr: String,
    },
    /// Another container publishes the port (dockerd's wording).
    #[error("Bind for {host_ip}:{port} failed: port is already allocated")]
    PortAllocated {
        host_ip: std::net::IpAddr,
        port: u16,
        protocol: &'static str,
    },
    /// The port cannot be bound: another process has it, or the address is not the host's
    /// (dockerd's wording).
    #[error("{}", port_unavailable(host_ip, *port, protocol, source))]
    PortInUse {
        host_ip: std::net::IpAddr,
        port: u16,
        protocol: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid port specification {spec:?}: {reason}")]
    InvalidPortSpec { spec: String, reason: &'static str },
    #[error("invalid subnet {subnet:?}: {reason}")]
    InvalidSubnet {
        subnet: String,
        reason: &'static str,
    },
    #[error("no free address left in subnet {subnet} of bridge {bridge}")]
    SubnetExhausted { subnet: String, bridge: String },
    #[error("unknown network mode {mode:?} (expected bridge, none or host)")]
    InvalidNetworkMode { mode: String },
    #[error("invalid container id {id:?} for networking: {reason}")]
    InvalidNetworkId { id: String, reason: &'static str },
    #[error("invalid network setting {field} = {value:?}: {reason}")]
    InvalidNetworkConfig {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("container {id} already has a network attachment")]
    NetworkAttachmentExists { id: String },
    #[error("no free host interface name for the veth of container {id}")]
    NoFreeLinkName { id: String },
    #[error("network state {path}: {source}")]
    NetworkState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("network state {path} has version {found}, this skiff understands {expected}")]
    NetworkStateVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("network state dir {path} is locked by another process")]
    NetworkStateLocked { path: PathBuf },
    /// A user-defined network's subnet overlaps another network's or a host route (409).
    #[error("subnet {subnet} overlaps {other}")]
    SubnetOverlap { subnet: String, other: String },
    #[error("no such network {id}")]
    UnknownNetwork { id: String },
    /// Removing a network with endpoints (Docker answers 403).
    #[error("network {id} has active endpoints ({containers})")]
    NetworkInUse { id: String, containers: String },
    /// Connecting a container twice to a network (Docker answers 403).
    #[error("container {container} is already attached to network {network}")]
    AlreadyConnected { container: String, network: String },
    #[error("container {container} is not connected to network {network}")]
    NotConnected { container: String, network: String },
    #[error("address {ip} is not free in network {network} ({reason})")]
    AddressUnavailable {
        ip: std::net::Ipv4Addr,
        network: String,
        reason: &'static str,
    },
    #[error("container {id} has no network namespace of its own to connect")]
    NoNetnsToConnect { id: String },
    #[error("embedded DNS server for {id}: {source}")]
    Dns {
        id: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

impl RuntimeError {
    /// The exit code Docker reports for a container that failed this way: 127 when the
    /// command does not exist, 126 when it cannot be run, 125 for every other failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            RuntimeError::Exec { source, .. } => {
                if source.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                }
            }
            _ => 125,
        }
    }

    pub(crate) fn io(step: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            step,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sys(step: &'static str, path: impl Into<PathBuf>, errno: nix::Error) -> Self {
        RuntimeError::Io {
            step,
            path: path.into(),
            source: std::io::Error::from_raw_os_error(errno as i32),
        }
    }
}

/// A failure in another process of ours (init, shim), sent across a pipe as JSON and turned
/// back into a [`RuntimeError`] on the caller's side.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepFailure {
    pub step: String,
    pub path: String,
    /// errno, when the step failed in a system call.
    pub errno: Option<i32>,
    /// Extra text when there is no errno (e.g. unknown user).
    pub detail: Option<String>,
}

impl StepFailure {
    pub(crate) fn errno(step: &str, path: impl std::fmt::Display, errno: nix::Error) -> Self {
        StepFailure {
            step: step.to_string(),
            path: path.to_string(),
            errno: Some(errno as i32),
            detail: None,
        }
    }

    pub(crate) fn detail(step: &str, path: impl std::fmt::Display, detail: String) -> Self {
        StepFailure {
            step: step.to_string(),
            path: path.to_string(),
            errno: None,
            detail: Some(detail),
        }
    }

    pub(crate) fn from_error(step: &str, e: &RuntimeError) -> Self {
        match e {
            RuntimeError::Io { step, path, source } => StepFailure {
                step: step.to_string(),
                path: path.display().to_string(),
                errno: source.raw_os_error(),
                detail: source.raw_os_error().is_none().then(|| source.to_string()),
            },
            RuntimeError::User { spec, reason } => {
                StepFailure::detail("user", spec, reason.clone())
            }
            other => StepFailure::detail(step, "", other.to_string()),
        }
    }

    /// The error this failure stands for.
    pub fn into_error(self) -> RuntimeError {
        let source = match (self.errno, &self.detail) {
            (Some(e), _) => std::io::Error::from_raw_os_error(e),
            (None, Some(d)) => std::io::Error::other(d.clone()),
            (None, None) => std::io::Error::other("failed"),
        };
        match self.step.as_str() {
            "exec" => RuntimeError::Exec {
                path: self.path,
                source,
            },
            "user" => RuntimeError::User {
                spec: self.path,
                reason: self.detail.unwrap_or_else(|| source.to_string()),
            },
            _ => RuntimeError::Setup {
                step: self.step,
                path: self.path,
                source,
            },
        }
    }
}

/// The message of [`RuntimeError::PortInUse`], as dockerd words a port another process
/// holds and a failed bind of its proxy.
fn port_unavailable(
    host_ip: &std::net::IpAddr,
    port: u16,
    protocol: &str,
    source: &std::io::Error,
) -> String {
    if source.kind() == std::io::ErrorKind::AddrInUse {
        format!("failed to bind host port for {host_ip}:{port}/{protocol}: address already in use")
    } else {
        format!(
            "Error starting userland proxy: listen {protocol}4 {host_ip}:{port}: bind: {source}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_failures_map_to_docker_exit_codes() {
        let nf = StepFailure::errno("exec", "/bin/foo", nix::Error::ENOENT).into_error();
        assert_eq!(nf.exit_code(), 127);
        assert_eq!(
            nf.to_string(),
            "exec /bin/foo: No such file or directory (os error 2)"
        );
        let perm = StepFailure::errno("exec", "/etc", nix::Error::EACCES).into_error();
        assert_eq!(perm.exit_code(), 126);
        let mount = StepFailure::errno("mount overlay", "/x", nix::Error::EINVAL).into_error();
        assert_eq!(mount.exit_code(), 125);
        assert!(mount.to_string().starts_with("mount overlay /x"));
    }
}
