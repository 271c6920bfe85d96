//! Turning `run`/`create` flags into Docker's container-create body, and creating the
//! container (pulling the image first when it is missing, as `--pull` says).

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use bollard::container::{Config, CreateContainerOptions};
use bollard::models::{HostConfig, PortBinding};
use bollard::Docker;

use super::format::parse_bytes;
use super::images::pull_with_progress;
use crate::args::ContainerOpts;

/// The create body for `opts`. `attach` is whether the CLI will attach to the streams.
pub fn container_config(
    opts: &ContainerOpts,
    attach: bool,
    auto_remove: bool,
) -> Result<Config<String>> {
    let memory = match &opts.memory {
        Some(m) => Some(parse_bytes(m).with_context(|| format!("invalid memory limit {m:?}"))?),
        None => None,
    };
    let memory_reservation = match &opts.memory_reservation {
        Some(m) => {
            Some(parse_bytes(m).with_context(|| format!("invalid --memory-reservation {m:?}"))?)
        }
        None => None,
    };
    let nano_cpus = match opts.cpus {
        Some(c) if c <= 0.0 || !c.is_finite() => {
            bail!("invalid --cpus {c}: must be a positive number")
        }
        Some(c) => Some((c * 1e9) as i64),
        None => None,
    };
    let mut exposed: HashMap<String, HashMap<(), ()>> = HashMap::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for spec in &opts.publish {
        let (host_ip, host_port, container_port) = parse_publish(spec)?;
        exposed.insert(container_port.clone(), HashMap::new());
        bindings
            .entry(container_port)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(host_ip),
                host_port: Some(host_port),
            });
    }
    let labels: HashMap<String, String> = opts
        .labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect();
    let mut host = HostConfig {
        memory,
        nano_cpus,
        cpu_shares: opts.cpu_shares,
        memory_reservation,
        pids_limit: opts.pids_limit,
        auto_remove: Some(auto_remove),
        network_mode: opts.network.clone(),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        publish_all_ports: Some(opts.publish_all),
        ..Default::default()
    };
    super::create_host::apply(opts, auto_remove, &mut host)?;
    Ok(Config {
        image: Some(opts.image.clone()),
        cmd: (!opts.command.is_empty()).then(|| opts.command.clone()),
        entrypoint: opts.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                vec![String::new()]
            } else {
                vec![e.clone()]
            }
        }),
        env: (!opts.env.is_empty()).then(|| opts.env.clone()),
        working_dir: opts.workdir.clone(),
        user: opts.user.clone(),
        hostname: opts.hostname.clone(),
        tty: Some(opts.tty),
        open_stdin: Some(opts.interactive),
        stdin_once: Some(opts.interactive && attach),
        attach_stdin: Some(opts.interactive && attach),
        attach_stdout: Some(attach),
        attach_stderr: Some(attach),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        labels: (!labels.is_empty()).then_some(labels),
        stop_signal: opts.stop_signal.clone(),
        stop_timeout: opts.stop_timeout,
        networking_config: networking(opts)?,
        host_config: Some(host),
        ..Default::default()
    })
}

/// `--network-alias` and `--ip` as the endpoint settings of `--network`.
fn networking(
    opts: &ContainerOpts,
) -> Result<Option<bollard::container::NetworkingConfig<String>>> {
    if opts.network_alias.is_empty() && opts.ip.is_none() {
        return Ok(None);
    }
    let Some(net) = opts.network.clone() else {
        anyhow::bail!("--network-alias and --ip need a user-defined --network");
    };
    let settings = bollard::models::EndpointSettings {
        aliases: (!opts.network_alias.is_empty()).then(|| opts.network_alias.clone()),
        ipam_config: opts
            .ip
            .clone()
            .map(|ip| bollard::models::EndpointIpamConfig {
                ipv4_address: Some(ip),
                ..Default::default()
            }),
        ..Default::default()
    };
    Ok(Some(bollard::container::NetworkingConfig {
        endpoints_config: HashMap::from([(net, settings)]),
    }))
}

/// `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]` or `CONTAINER_PORT[/PROTO]`
/// -> (host ip, host port, "port/proto").
pub fn parse_publish(spec: &str) -> Result<(String, String, String)> {
    let bad = |why: &str| anyhow::anyhow!("invalid publish spec {spec:?}: {why}");
    let (addr, proto) = match spec.rsplit_once('/') {
        Some((a, p)) => (a, p),
        None => (spec, "tcp"),
    };
    if proto != "tcp" && proto != "udp" {
        return Err(bad("protocol must be tcp or udp"));
    }
    let parts: Vec<&str> = addr.rsplitn(3, ':').collect();
    let (ip, host_port, container_port) = match parts.as_slice() {
        [c] => ("", "", *c),
        [c, h] => ("", *h, *c),
        [c, h, ip] => (*ip, *h, *c),
        _ => return Err(bad("too many parts")),
    };
    let port_ok = |p: &str| p.parse::<u16>().map(|n| n > 0).unwrap_or(false);
    if !port_ok(container_port) {
        return Err(bad("container port must be 1-65535"));
    }
    if !host_port.is_empty() && !port_ok(host_port) {
        return Err(bad("host port must be 1-65535"));
    }
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad("host IP is not an IP address"));
    }
    Ok((
        ip.to_string(),
        host_port.to_string(),
        format!("{container_port}/{proto}"),
    ))
}

/// Creates the container, pulling its image first per `--pull` (always|missing|never).
/// Returns the container id.
pub async fn create_container(
    docker: &Docker,
    opts: &ContainerOpts,
    config: Config<String>,
) -> Result<String> {
    let options = opts.name.as_ref().map(|n| CreateContainerOptions {
        name: n.clone(),
        platform: None,
    });
    match opts.pull.as_str() {
        "always" => pull_with_progress(docker, &opts.image, false, true).await?,
        "missing" | "never" => {}
        other => bail!("invalid --pull {other:?}: must be always, missing or never"),
    }
    match docker
        .create_container(options.clone(), config.clone())
        .await
    {
        Ok(r) => {
            for w in r.warnings {
                eprintln!("WARNING: {w}");
            }
            Ok(r.id)
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message,
        }) if message.starts_with("No such image") && opts.pull == "missing" => {
            eprintln!("Unable to find image '{}' locally", opts.image);
            pull_with_progress(docker, &opts.image, false, true).await?;
            let r = docker.create_container(options, config).await?;
            Ok(r.id)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_publish;

    #[test]
    fn publish_specs() {
        assert_eq!(
            parse_publish("8080:80").unwrap(),
            ("".into(), "8080".into(), "80/tcp".into())
        );
        assert_eq!(
            parse_publish("127.0.0.1:53:53/udp").unwrap(),
            ("127.0.0.1".into(), "53".into(), "53/udp".into())
        );
        assert_eq!(
            parse_publish("80").unwrap(),
            ("".into(), "".into(), "80/tcp".into())
        );
        assert!(parse_publish("70000:80").is_err());
        assert!(parse_publish("80/sctp").is_err());
        assert!(parse_publish("x:80:80").is_err());
        assert!(parse_publish("a:b").is_err());
    }
}
