//! Container networking for the daemon: turning Docker's create body (NetworkMode,
//! PortBindings, PublishAllPorts) into a network request, and the attachment into what the
//! runtime and Docker's views need.

use std::net::Ipv4Addr;

use bollard::models::HostConfig;
use skiff_runtime::network::{
    parse_exposed, publish_all, NetworkAttachment, NetworkMode, PortSpec, Protocol,
};

use super::error::{ApiError, ApiResult};

/// `bridge` (also `default` or unset), `none` or `host`.
pub fn mode(host: &HostConfig) -> ApiResult<NetworkMode> {
    match host.network_mode.as_deref() {
        None | Some("") | Some("default") | Some("bridge") => Ok(NetworkMode::Bridge),
        Some("none") => Ok(NetworkMode::None),
        Some("host") => Ok(NetworkMode::Host),
        Some(other) => Err(ApiError::not_found(format!("network {other} not found"))),
    }
}

/// The ports to publish: explicit bindings, plus every exposed port with `-P`.
pub fn ports(host: &HostConfig, exposed: &[String]) -> ApiResult<Vec<PortSpec>> {
    let mut out = Vec::new();
    for (key, bindings) in host.port_bindings.clone().unwrap_or_default() {
        let (container_port, protocol) =
            parse_exposed(&key).map_err(|e| ApiError::bad_request(e.to_string()))?;
        for b in bindings.unwrap_or_default() {
            let host_ip = match b.host_ip.as_deref() {
                None | Some("") => None,
                Some(ip) => Some(ip.parse::<Ipv4Addr>().map_err(|_| {
                    ApiError::bad_request(format!("invalid host IP {ip:?} for port {key}"))
                })?),
            };
            let host_port = match b.host_port.as_deref() {
                None | Some("") => None,
                Some(p) => Some(p.parse::<u16>().map_err(|_| {
                    ApiError::bad_request(format!("invalid host port {p:?} for port {key}"))
                })?),
            };
            out.push(PortSpec {
                host_ip,
                host_port,
                container_port,
                protocol,
            });
        }
    }
    if host.publish_all_ports.unwrap_or(false) {
        let mut parsed = Vec::new();
        for e in exposed {
            parsed.push(parse_exposed(e).map_err(|err| ApiError::bad_request(err.to_string()))?);
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
pub fn summary(att: &NetworkAttachment) -> serde_json::Value {
    let ports: Vec<serde_json::Value> = att
        .ports
        .iter()
        .map(|p| {
            serde_json::json!({
                "IP": p.host_ip.to_string(),
                "PrivatePort": p.container_port,
                "PublicPort": p.host_port,
                "Type": if p.protocol == Protocol::Udp { "udp" } else { "tcp" },
            })
        })
        .collect();
    serde_json::json!({
        "Mode": att.mode.to_string(),
        "IPAddress": att.ip.map(|i| i.to_string()).unwrap_or_default(),
        "Gateway": att.gateway.map(|i| i.to_string()).unwrap_or_default(),
        "MacAddress": att.mac.clone().unwrap_or_default(),
        "Ports": ports,
    })
}
