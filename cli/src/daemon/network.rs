//! Container networking for the daemon: turning a container's [`HostSpec`] (network mode,
//! port bindings, publish-all) into a network request, and the attachment into what the
//! runtime and Docker's views need.

use std::net::Ipv4Addr;

use skiff_runtime::network::{
    parse_exposed, publish_all, NetworkAttachment, NetworkMode, PortSpec, Protocol,
};

use super::error::DaemonError;
use super::record::{HostSpec, NetworkSummary, PublishedPort};

/// `--dns` as the embedded DNS server's forwarders (IPv4 only: it forwards over IPv4).
pub fn dns_forwarders(host: &HostSpec) -> Result<Vec<Ipv4Addr>, DaemonError> {
    host.dns
        .iter()
        .map(|d| {
            d.parse::<Ipv4Addr>().map_err(|_| {
                DaemonError::Invalid(format!(
                    "invalid --dns {d:?}: the embedded DNS of user-defined networks forwards to IPv4 servers only"
                ))
            })
        })
        .collect()
}

/// The host spec with `--dns` taken out: on a user-defined network the servers go to the
/// embedded DNS, and resolv.conf keeps `nameserver 127.0.0.11`.
pub fn without_dns_servers(host: &HostSpec) -> HostSpec {
    HostSpec {
        dns: Vec::new(),
        ..host.clone()
    }
}

/// `bridge` (also `default` or unset), `none` or `host` (user-defined networks are resolved
/// by the networks service).
#[allow(dead_code)]
pub fn mode(host: &HostSpec) -> Result<NetworkMode, DaemonError> {
    match host.network_mode.as_str() {
        "" | "default" | "bridge" => Ok(NetworkMode::Bridge),
        "none" => Ok(NetworkMode::None),
        "host" => Ok(NetworkMode::Host),
        other => Err(DaemonError::NoSuchNetwork(other.to_string())),
    }
}

/// The ports to publish: explicit bindings, plus every exposed port with `-P`.
pub fn ports(host: &HostSpec, exposed: &[String]) -> Result<Vec<PortSpec>, DaemonError> {
    let invalid = |e: skiff_runtime::RuntimeError| DaemonError::Invalid(e.to_string());
    let mut out = Vec::new();
    for b in &host.port_bindings {
        let (container_port, protocol) = parse_exposed(&b.port).map_err(invalid)?;
        let host_ip = match b.host_ip.as_str() {
            "" => None,
            ip => Some(ip.parse::<Ipv4Addr>().map_err(|_| {
                DaemonError::Invalid(format!("invalid host IP {ip:?} for port {}", b.port))
            })?),
        };
        let host_port = match b.host_port.as_str() {
            "" => None,
            p => Some(p.parse::<u16>().map_err(|_| {
                DaemonError::Invalid(format!("invalid host port {p:?} for port {}", b.port))
            })?),
        };
        out.push(PortSpec {
            host_ip,
            host_port,
            container_port,
            protocol,
        });
    }
    if host.publish_all_ports {
        let mut parsed = Vec::new();
        for e in exposed {
            parsed.push(parse_exposed(e).map_err(invalid)?);
        }
        for spec in publish_all(&parsed) {
            if !out
                .iter()
                .any(|p| p.container_port == spec.container_port && p.protocol == spec.protocol)
            {
                out.push(spec);
            }
        }
    }
    Ok(out)
}

/// What `ps` and `inspect` show of an attachment (kept in the container's record).
pub fn summary(att: &NetworkAttachment) -> NetworkSummary {
    NetworkSummary {
        mode: att.mode.to_string(),
        ip_address: att.ip.map(|i| i.to_string()).unwrap_or_default(),
        gateway: att.gateway.map(|i| i.to_string()).unwrap_or_default(),
        mac_address: att.mac.clone().unwrap_or_default(),
        prefix_len: att.prefix_len.unwrap_or(0),
        ports: att
            .ports
            .iter()
            .map(|p| PublishedPort {
                ip: p.host_ip.to_string(),
                private_port: p.container_port,
                public_port: Some(p.host_port),
                protocol: if p.protocol == Protocol::Udp {
                    "udp"
                } else {
                    "tcp"
                }
                .to_string(),
            })
            .collect(),
        endpoints: Vec::new(),
    }
}

/// A stable 64-hex id for a network name (Docker's `NetworkID`): skiff's networks are fixed
/// (`bridge`, `host`, `none`), so the id is derived, not stored.
pub fn network_id(name: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("skiff-network:{name}")))
}

/// A container's endpoint id on a network (Docker's `EndpointID`), derived like
/// [`network_id`].
pub fn endpoint_id(container_id: &str, network: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!(
        "skiff-endpoint:{container_id}:{network}"
    )))
}
