//! Parsing of published ports: `-p [[HOST_IP:][HOST_PORT]:]CONTAINER_PORT[/tcp|/udp]` (with
//! equal-sized `A-B` ranges, as Docker accepts) and `-P` (every exposed port of the image on
//! a free host port). Pure, so every accepted and rejected form is unit-tested.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One requested port publication, before a host port is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortSpec {
    /// Host address to listen on; `None` means every address (0.0.0.0).
    pub host_ip: Option<Ipv4Addr>,
    /// Host port; `None` means any free port, chosen when bound.
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub protocol: Protocol,
}

/// Parses one `-p` value; a range yields one spec per port.
pub fn parse_publish(spec: &str) -> Result<Vec<PortSpec>> {
    let bad = |reason| RuntimeError::InvalidPortSpec {
        spec: spec.to_string(),
        reason,
    };
    let (rest, protocol) = split_protocol(spec).map_err(bad)?;
    if rest.starts_with('[') {
        return Err(bad("IPv6 host addresses are not supported"));
    }
    let parts: Vec<&str> = rest.split(':').collect();
    let (host_ip, host_ports, container_ports) = match parts.as_slice() {
        [c] => (None, "", *c),
        [h, c] => (None, *h, *c),
        [ip, h, c] => {
            let ip: Ipv4Addr = ip
                .parse()
                .map_err(|_| bad("host address is not an IPv4 address"))?;
            (Some(ip), *h, *c)
        }
        _ => {
            return Err(bad(
                "expected [[HOST_IP:][HOST_PORT]:]CONTAINER_PORT[/PROTOCOL]",
            ))
        }
    };
    if container_ports.is_empty() {
        return Err(bad("container port is missing"));
    }
    let (c_lo, c_hi) = parse_range(container_ports).map_err(bad)?;
    let host_range = if host_ports.is_empty() {
        None
    } else {
        let (h_lo, h_hi) = parse_range(host_ports).map_err(bad)?;
        if h_hi - h_lo != c_hi - c_lo {
            return Err(bad("host and container port ranges differ in size"));
        }
        Some(h_lo)
    };
    Ok((c_lo..=c_hi)
        .map(|c| PortSpec {
            host_ip,
            host_port: host_range.map(|h_lo| h_lo + (c - c_lo)),
            container_port: c,
            protocol,
        })
        .collect())
}

/// Parses an image's exposed port (`80`, `80/tcp`, `53/udp`), as found in its config.
pub fn parse_exposed(spec: &str) -> Result<(u16, Protocol)> {
    let bad = |reason| RuntimeError::InvalidPortSpec {
        spec: spec.to_string(),
        reason,
    };
    let (port, protocol) = split_protocol(spec).map_err(bad)?;
    Ok((parse_port(port).map_err(bad)?, protocol))
}

/// `-P`: every exposed port published on a free host port of every address.
pub fn publish_all(exposed: &[(u16, Protocol)]) -> Vec<PortSpec> {
    exposed
        .iter()
        .map(|&(container_port, protocol)| PortSpec {
            host_ip: None,
            host_port: None,
            container_port,
            protocol,
        })
        .collect()
}

/// Splits `REST[/PROTOCOL]`; tcp when no protocol is given.
fn split_protocol(spec: &str) -> std::result::Result<(&str, Protocol), &'static str> {
    let Some((rest, proto)) = spec.rsplit_once('/') else {
        return Ok((spec, Protocol::Tcp));
    };
    match proto.to_ascii_lowercase().as_str() {
        "tcp" => Ok((rest, Protocol::Tcp)),
        "udp" => Ok((rest, Protocol::Udp)),
        _ => Err("protocol must be tcp or udp"),
    }
}

fn parse_port(s: &str) -> std::result::Result<u16, &'static str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("port is not a number");
    }
    match s.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err("port must be between 1 and 65535"),
    }
}

fn parse_range(s: &str) -> std::result::Result<(u16, u16), &'static str> {
    match s.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (parse_port(lo)?, parse_port(hi)?);
            if lo > hi {
                return Err("port range is reversed");
            }
            Ok((lo, hi))
        }
        None => parse_port(s).map(|p| (p, p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> PortSpec {
        let v = parse_publish(s).unwrap();
        assert_eq!(v.len(), 1, "{s}");
        v[0]
    }

    #[test]
    fn accepts_docker_forms() {
        assert_eq!(
            one("8080:80"),
            PortSpec {
                host_ip: None,
                host_port: Some(8080),
                container_port: 80,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(
            one("127.0.0.1:53:5353/udp"),
            PortSpec {
                host_ip: Some(Ipv4Addr::LOCALHOST),
                host_port: Some(53),
                container_port: 5353,
                protocol: Protocol::Udp
            }
        );
        assert_eq!(one("80").host_port, None);
        assert_eq!(one("80/TCP").protocol, Protocol::Tcp);
        let s = one("127.0.0.2::80");
        assert_eq!(
            (s.host_ip, s.host_port),
            (Some(Ipv4Addr::new(127, 0, 0, 2)), None)
        );
        let r = parse_publish("9000-9002:80-82/udp").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!((r[2].host_port, r[2].container_port), (Some(9002), 82));
        assert_eq!(parse_publish("80-81").unwrap()[1].container_port, 81);
    }

    #[test]
    fn rejects_bad_specs_with_reason() {
        let cases = [
            ("", "container port is missing"),
            ("8080:", "container port is missing"),
            ("8080:80/sctp", "protocol must be tcp or udp"),
            ("70000:80", "between 1 and 65535"),
            ("0:80", "between 1 and 65535"),
            ("abc:80", "not a number"),
            ("8080:-80", "not a number"),
            ("+80", "not a number"),
            ("1.2.3:80:80", "not an IPv4 address"),
            ("[::1]:80:80", "IPv6"),
            ("1:2:3:4", "expected"),
            ("9000-9001:80", "differ in size"),
            ("90-80", "reversed"),
        ];
        for (spec, reason) in cases {
            let err = parse_publish(spec).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, RuntimeError::InvalidPortSpec { .. }),
                "{spec}"
            );
            assert!(msg.contains(reason), "{spec}: {msg}");
            assert!(msg.contains(&format!("{spec:?}")), "{spec}: {msg}");
        }
    }

    #[test]
    fn exposed_and_publish_all() {
        assert_eq!(parse_exposed("80/tcp").unwrap(), (80, Protocol::Tcp));
        assert_eq!(parse_exposed("53/udp").unwrap(), (53, Protocol::Udp));
        assert_eq!(parse_exposed("8080").unwrap(), (8080, Protocol::Tcp));
        assert!(parse_exposed("80/icmp").is_err());
        assert!(parse_exposed("0").is_err());
        let all = publish_all(&[(80, Protocol::Tcp), (53, Protocol::Udp)]);
        assert_eq!(all.len(), 2);
        assert!(all
            .iter()
            .all(|p| p.host_port.is_none() && p.host_ip.is_none()));
    }
}
