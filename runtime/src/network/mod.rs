//! Container networking: `bridge` (default; a veth pair per container on the `skiff0`
//! bridge, an address from the bridge's subnet, outbound NAT, published ports), `none` (a
//! namespace with only `lo`) and `host` (no namespace of its own).
//!
//! The daemon calls [`NetworkManager::prepare`] before starting a container: it gets back a
//! [`NetworkAttachment`] whose `netns_path` the container init joins with [`join_netns`]
//! (a namespace pinned by a bind mount, like `ip netns add` makes, so it exists before the
//! container's process and outlives nothing but the attachment). [`NetworkManager::release`]
//! undoes everything once the container is gone; [`NetworkManager::restore`] re-opens the
//! state after a daemon restart without doubling anything.
//!
//! The runtime's part: join `netns_path` (if any) in the container init before unsharing
//! the other namespaces, and write `hosts` / `resolv_conf` into the container's `/etc`.
//! Needs root, a tokio runtime with IO and time enabled (the manager's futures are `Send`),
//! and the system's `iptables`, `iptables-save` and `iptables-restore` for bridge mode.

mod dns;
pub mod dns_holder;
mod files;
mod iptables;
mod link;
mod manager;
mod netns;
mod ports;
pub mod proxy;
mod rules;
mod state;
mod subnet;
mod user_networks;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use files::{hosts_file, resolv_conf_for_bridge, resolv_conf_for_embedded_dns};
pub use manager::NetworkManager;
pub use netns::{is_mount_point, join_netns};
pub use ports::{parse_exposed, parse_publish, publish_all, PortSpec, Protocol};
pub use proxy::{PortProxy, ProxyProcesses};
pub use subnet::Ipv4Net;

use crate::error::RuntimeError;

/// How a container is networked (`--network`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    #[default]
    Bridge,
    None,
    Host,
}

impl FromStr for NetworkMode {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self, RuntimeError> {
        match s {
            "bridge" | "default" | "" => Ok(Self::Bridge),
            "none" => Ok(Self::None),
            "host" => Ok(Self::Host),
            _ => Err(RuntimeError::InvalidNetworkMode {
                mode: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bridge => "bridge",
            Self::None => "none",
            Self::Host => "host",
        })
    }
}

/// Where and how the bridge network lives. Every name is configurable so test daemons
/// (and tests of this module) run side by side without touching each other.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// Bridge interface name (≤ 15 bytes).
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// Prefix of skiff's iptables chains: `<prefix>-POSTROUTING`, `<prefix>-DNAT`,
    /// `<prefix>-FORWARD` (≤ 16 bytes).
    pub chain_prefix: String,
    /// Persistent state (IPAM, attachments): e.g. `/var/lib/skiff/network`.
    pub state_dir: PathBuf,
    /// Volatile root; namespaces are pinned under `<exec_root>/netns/<id>`.
    pub exec_root: PathBuf,
    /// The host's resolver config and hosts file, copied (filtered) into containers.
    pub host_resolv_conf: PathBuf,
    pub host_hosts: PathBuf,
    /// How many released bridge attachments (namespace + veth + address) are kept for the
    /// next containers instead of being deleted: making a veth and deleting one each cost
    /// milliseconds under the kernel's rtnl lock, which every new namespace also takes.
    pub spares: usize,
    /// Run each published port's proxy as a process of its own that survives a daemon
    /// restart (`None`: tasks of this process).
    pub proxy_processes: Option<ProxyProcesses>,
}

impl NetworkConfig {
    /// skiff's defaults: bridge `skiff0` on 172.18.0.0/16, chains `SKIFF-*`.
    pub fn new(state_dir: impl Into<PathBuf>, exec_root: impl Into<PathBuf>) -> Self {
        Self {
            bridge: "skiff0".into(),
            subnet: Ipv4Net::new(Ipv4Addr::new(172, 18, 0, 0), 16).expect("valid default subnet"),
            chain_prefix: "SKIFF".into(),
            state_dir: state_dir.into(),
            exec_root: exec_root.into(),
            host_resolv_conf: "/etc/resolv.conf".into(),
            host_hosts: "/etc/hosts".into(),
            spares: 2,
            proxy_processes: None,
        }
    }
}

/// What the daemon asks for one container.
#[derive(Clone, Debug)]
pub struct NetworkRequest {
    /// The container's id; names its namespace file and tags its iptables rules.
    pub container_id: String,
    /// Written into its `/etc/hosts` next to its address.
    pub hostname: String,
    pub mode: NetworkMode,
    /// Published ports (`-p`, and `-P` via [`publish_all`]); ignored, with a warning, for
    /// `host` and `none`, as Docker does. With `endpoints` and mode `none` they go to the
    /// first endpoint's address.
    pub ports: Vec<PortSpec>,
    /// User-defined networks to join, one veth (`eth<n>`) each. With mode `none` the
    /// container gets a namespace of its own and the first endpoint is its `eth0` and
    /// default route; with mode `bridge` they follow the default bridge's `eth0`.
    pub endpoints: Vec<EndpointRequest>,
    /// Where the embedded DNS server forwards names it does not know (`--dns`); empty:
    /// the host's resolvers.
    pub dns_forwarders: Vec<Ipv4Addr>,
}

/// A user-defined bridge network as made on the host: a Linux bridge holding `gateway`,
/// NAT for `subnet` unless `internal`, and isolation from every other bridge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeNetwork {
    /// The network's id (64 hex), as Docker shows it.
    pub id: String,
    /// Linux bridge name, `br-<first 12 hex of id>`.
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// No route out: no NAT, no forwarding to other interfaces, no DNS forwarding.
    pub internal: bool,
}

/// One endpoint a container asks for on a user-defined network.
#[derive(Clone, Debug)]
pub struct EndpointRequest {
    pub network_id: String,
    /// `--ip`; `None`: the next free address.
    pub ip: Option<Ipv4Addr>,
    /// What the embedded DNS answers with this endpoint's address: container name,
    /// aliases (compose service names), short id. Lower-cased on lookup.
    pub names: Vec<String>,
    /// Links (`--link target:alias`, compose's `links`): `(alias, target name)`; on user
    /// networks a link is a name only this container resolves, as Docker's.
    pub links: Vec<(String, String)>,
}

/// An endpoint as made: the container's address on one user-defined network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointAttachment {
    pub network_id: String,
    /// Interface name inside the container (`eth0`, `eth1` ...).
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub names: Vec<String>,
    /// `(alias, target name)` pairs only this container resolves.
    #[serde(default)]
    pub links: Vec<(String, String)>,
}

/// A published port as bound: the host side is concrete (a requested port 0 is resolved).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublishedPort {
    pub protocol: Protocol,
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
}

/// The result of [`NetworkManager::prepare`]: what the runtime needs to put the container
/// on its network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkAttachment {
    pub container_id: String,
    pub mode: NetworkMode,
    /// The namespace to join (`None` for `host`: stay in the host's namespace).
    pub netns_path: Option<PathBuf>,
    /// The container's address on the bridge (bridge mode only), with its prefix length.
    pub ip: Option<Ipv4Addr>,
    pub prefix_len: Option<u8>,
    pub gateway: Option<Ipv4Addr>,
    /// `eth0`'s MAC, e.g. `02:42:ac:12:00:02`.
    pub mac: Option<String>,
    pub ports: Vec<PublishedPort>,
    /// Contents for the container's `/etc/hosts` and `/etc/resolv.conf`.
    pub hosts: String,
    pub resolv_conf: String,
    /// Its endpoints on user-defined networks, in the order they were joined.
    pub endpoints: Vec<EndpointAttachment>,
}
