//! Legacy links on the default bridge (`--link NAME[:ALIAS]`, compose's `links:` with
//! `network_mode: bridge`), as Docker makes them: an `/etc/hosts` line for the alias, the
//! target's name and short id, and the environment variables Docker documents
//! (`<ALIAS>_NAME`, `<ALIAS>_PORT`, `<ALIAS>_PORT_<port>_<proto>[_ADDR|_PORT|_PROTO]`,
//! `<ALIAS>_ENV_<var>`). Written once, at create (Docker rewrites them at each start).
//! On user-defined networks a link is a name of the embedded DNS instead (networks.rs).

use super::error::DaemonError;
use super::record::ContainerRecord;

/// What links add to a new container.
#[derive(Debug, Default, PartialEq)]
pub struct Legacy {
    /// `NAME:IP` entries, in `--add-host` form.
    pub hosts: Vec<String>,
    /// `KEY=value` entries, before the container's own.
    pub env: Vec<String>,
}

/// Docker's variable prefix for an alias: upper case, `-` and `.` as `_`.
fn prefix(alias: &str) -> String {
    alias
        .chars()
        .map(|c| match c {
            '-' | '.' | '/' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// The hosts entries and variables for `links` (`(alias, target)` pairs) of container
/// `me`. A target must exist, be running and be on the default bridge: Docker's 400
/// `Cannot link to a non running container`.
pub fn legacy(
    links: &[(String, String)],
    me: &str,
    find: impl Fn(&str) -> Result<ContainerRecord, DaemonError>,
    running: impl Fn(&str) -> bool,
) -> Result<Legacy, DaemonError> {
    let mut out = Legacy::default();
    for (alias, target) in links {
        let t = find(target).map_err(|_| {
            DaemonError::Invalid(format!(
                "could not get container for {target}: No such container: {target}"
            ))
        })?;
        let ip = t
            .network
            .as_ref()
            .map(|n| n.ip_address.clone())
            .filter(|ip| !ip.is_empty() && running(&t.id))
            .ok_or_else(|| {
                DaemonError::Invalid(format!(
                    "Cannot link to a non running container: /{} AS /{me}/{alias}",
                    t.name
                ))
            })?;
        for name in [alias.as_str(), t.name.as_str(), &t.id[..12]] {
            let entry = format!("{name}:{ip}");
            if !out.hosts.contains(&entry) {
                out.hosts.push(entry);
            }
        }
        let p = prefix(alias);
        out.env.push(format!("{p}_NAME=/{me}/{alias}"));
        let mut ports: Vec<(u16, String)> = t
            .spec
            .exposed_ports
            .iter()
            .filter_map(|e| {
                let (port, proto) = e.split_once('/').unwrap_or((e, "tcp"));
                Some((port.parse().ok()?, proto.to_string()))
            })
            .collect();
        for bound in t.network.iter().flat_map(|n| n.ports.iter()) {
            ports.push((bound.private_port, bound.protocol.clone()));
        }
        ports.sort();
        ports.dedup();
        if let Some((port, proto)) = ports.first() {
            out.env.push(format!("{p}_PORT={proto}://{ip}:{port}"));
        }
        for (port, proto) in &ports {
            let key = format!("{p}_PORT_{port}_{}", proto.to_ascii_uppercase());
            out.env.push(format!("{key}={proto}://{ip}:{port}"));
            out.env.push(format!("{key}_ADDR={ip}"));
            out.env.push(format!("{key}_PORT={port}"));
            out.env.push(format!("{key}_PROTO={proto}"));
        }
        for e in &t.spec.env {
            let Some((k, v)) = e.split_once('=') else {
                continue;
            };
            if !matches!(k, "HOME" | "HOSTNAME" | "PATH") {
                out.env.push(format!("{p}_ENV_{k}={v}"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::record::{ContainerRecord, NetworkSummary};
    use super::*;

    #[test]
    fn hosts_and_variables_as_docker() {
        let mut t: ContainerRecord = serde_json::from_value(serde_json::json!({
            "schema": 1, "id": "0123456789abcdef", "name": "db", "created": 0,
            "image": "x", "image_id": "sha256:x", "spec": {}, "path": "sh", "args": []
        }))
        .unwrap();
        t.spec.exposed_ports = vec!["5432/tcp".into()];
        t.spec.env = vec!["PATH=/bin".into(), "PGUSER=app".into()];
        t.network = Some(NetworkSummary {
            ip_address: "172.18.0.5".into(),
            ..Default::default()
        });
        let find = |n: &str| {
            if n == "db" {
                Ok(t.clone())
            } else {
                Err(DaemonError::NoSuchContainer(n.into()))
            }
        };
        let l = legacy(&[("my-db".into(), "db".into())], "web", find, |_| true).unwrap();
        assert_eq!(
            l.hosts,
            [
                "my-db:172.18.0.5",
                "db:172.18.0.5",
                "0123456789ab:172.18.0.5"
            ]
        );
        assert_eq!(
            l.env,
            [
                "MY_DB_NAME=/web/my-db",
                "MY_DB_PORT=tcp://172.18.0.5:5432",
                "MY_DB_PORT_5432_TCP=tcp://172.18.0.5:5432",
                "MY_DB_PORT_5432_TCP_ADDR=172.18.0.5",
                "MY_DB_PORT_5432_TCP_PORT=5432",
                "MY_DB_PORT_5432_TCP_PROTO=tcp",
                "MY_DB_ENV_PGUSER=app",
            ]
        );
        let e = legacy(&[("x".into(), "db".into())], "web", find, |_| false).unwrap_err();
        assert!(e.to_string().contains("non running"), "{e}");
        assert!(legacy(&[("x".into(), "nope".into())], "web", find, |_| true).is_err());
    }
}
