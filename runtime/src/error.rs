//! The one error type of skiff-runtime. Variants name the step that failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    #[error("host port {host_ip}:{port}/{protocol} is not available: {source}")]
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
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
