//! The daemon's settings: `/etc/skiff/daemon.json` (or `--config-file`), with dockerd's key
//! names, overridden by command-line flags. Unknown keys are refused (as dockerd refuses
//! them); a missing default file is fine, a missing `--config-file` is not. Keys dockerd
//! knows that skiff does not implement yet are accepted only at their default value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::args::DaemonArgs;

pub const DEFAULT_CONFIG_FILE: &str = "/etc/skiff/daemon.json";
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/skiff";
pub const DEFAULT_EXEC_ROOT: &str = "/run/skiff";
pub const DEFAULT_BRIDGE: &str = "skiff0";
pub const DEFAULT_SUBNET: &str = "172.18.0.0/16";
pub const DEFAULT_CACHE_SIZE: &str = "10g";
pub const DEFAULT_BACKGROUND_FETCH_RATE: &str = "20m";
pub const DEFAULT_CERTS_DIR: &str = "/etc/skiff/certs.d";

/// The file's shape; every key optional (see docs/daemon-config.md).
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DaemonFile {
    pub data_root: Option<PathBuf>,
    pub exec_root: Option<PathBuf>,
    pub insecure_registries: Option<Vec<String>>,
    pub registry_mirrors: Option<Vec<String>>,
    /// skiff's own: the certs.d directory (`/etc/skiff/certs.d`).
    pub certs_dir: Option<PathBuf>,
    pub live_restore: Option<bool>,
    pub log_driver: Option<String>,
    pub log_opts: Option<BTreeMap<String, String>>,
    pub default_address_pools: Option<Vec<serde_json::Value>>,
    pub bip: Option<String>,
    pub bridge: Option<String>,
    /// Sockets to listen on (`unix:///path`); `-H` flags replace them.
    pub hosts: Option<Vec<String>>,
    /// skiff's own: the chunk cache's byte budget (`10g`).
    pub cache_size: Option<String>,
    /// skiff's own: pull zstd:chunked layers lazily (`true`).
    pub lazy_pull: Option<bool>,
    /// skiff's own: record access profiles of lazy mounts (`true`; docs/profiles.md).
    pub profile_record: Option<bool>,
    /// skiff's own: fetch shared profiles and prefetch what they name (`true`).
    pub profile_prefetch: Option<bool>,
    /// skiff's own: with a lazy pull, fetch the image's default program and the files it
    /// loads (`true`; docs/zstd-chunked.md).
    pub program_prefetch: Option<bool>,
    /// skiff's own: fetch the rest of lazy layers in the background (`true`).
    pub background_fetch: Option<bool>,
    /// skiff's own: the background fetch's bandwidth, bytes per second (`20m`; `0` =
    /// unbounded).
    pub background_fetch_rate: Option<String>,
    pub debug: Option<bool>,
    /// skiff's own: where containerd's Snapshots API is served (`""` = not at all).
    pub snapshotter_socket: Option<PathBuf>,
}

/// Every daemon setting, resolved: flag, else file, else default.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    pub cache_size: String,
    pub insecure_registries: Vec<String>,
    /// Per-registry CAs and client certificates (Docker's certs.d layout).
    pub certs_dir: PathBuf,
    /// Docker Hub mirrors, file's then flags' (`http[s]://host[:port]`).
    pub registry_mirrors: Vec<String>,
    /// Test-only: where docker.io is reached.
    pub docker_hub_origin: Option<String>,
    pub bridge: String,
    /// The bridge's subnet (`bip`).
    pub subnet: String,
    /// Where user-defined networks get their subnets (`default-address-pools`).
    pub address_pools: Vec<super::networks::AddressPool>,
    /// The file's `hosts` (the `-H` flags, given to `daemon::run`, replace them).
    pub hosts: Vec<String>,
    pub debug: bool,
    pub lazy_pull: bool,
    pub profile_record: bool,
    pub profile_prefetch: bool,
    pub program_prefetch: bool,
    pub background_fetch: bool,
    pub background_fetch_rate: String,
    /// Containers' default log driver (`json-file`) and its options.
    pub log_driver: String,
    pub log_opts: BTreeMap<String, String>,
    /// Keep containers and image mounts running across daemon restarts (`true`).
    pub live_restore: bool,
    /// Where containerd's Snapshots API is served (`None`: off; docs/kubernetes.md).
    pub snapshotter_socket: Option<PathBuf>,
    /// Where the settings came from (`None`: no file).
    pub file: Option<PathBuf>,
}

/// Reads the file: `explicit` must exist; the default path may be absent.
pub fn read_file(explicit: Option<&Path>) -> Result<(DaemonFile, Option<PathBuf>)> {
    let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_FILE));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            return Ok((DaemonFile::default(), None));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let file = parse(&text).with_context(|| format!("invalid daemon config {}", path.display()))?;
    Ok((file, Some(path.to_path_buf())))
}

/// Parses and checks the file's text.
pub fn parse(text: &str) -> Result<DaemonFile> {
    let f: DaemonFile = serde_json::from_str(text)?;
    for m in f.registry_mirrors.iter().flatten() {
        skiff_store::registry::parse_endpoint_url(m)
            .map_err(|e| anyhow::anyhow!("registry-mirrors: {e}"))?;
    }
    skiff_store::registry::insecure::validate(&f.insecure_registries.clone().unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("insecure-registries: {e}"))?;
    for p in f.default_address_pools.iter().flatten() {
        super::networks::AddressPool::parse(p).map_err(|e| anyhow::anyhow!(e))?;
    }
    // The runtime's parser refuses other drivers and options by name.
    skiff_runtime::config::LogConfig::from_docker(
        f.log_driver.as_deref().unwrap_or(""),
        &f.log_opts.clone().unwrap_or_default(),
    )
    .map_err(|e| anyhow::anyhow!("log-driver/log-opts: {e}"))?;
    Ok(f)
}

/// Flags (and their environment variables) over the file over the defaults.
pub fn resolve(
    args: &DaemonArgs,
    exec_root_flag: Option<&Path>,
    file: DaemonFile,
    path: Option<PathBuf>,
) -> Result<DaemonConfig> {
    let mut insecure = file.insecure_registries.unwrap_or_default();
    skiff_store::registry::insecure::validate(&args.insecure_registries)
        .map_err(|e| anyhow::anyhow!("--insecure-registry: {e}"))?;
    insecure.extend(args.insecure_registries.iter().cloned());
    let mut mirrors = file.registry_mirrors.unwrap_or_default();
    for m in &args.registry_mirrors {
        skiff_store::registry::parse_endpoint_url(m)
            .map_err(|e| anyhow::anyhow!("--registry-mirror: {e}"))?;
        if !mirrors.contains(m) {
            mirrors.push(m.clone());
        }
    }
    let exec_root: PathBuf = exec_root_flag
        .map(Path::to_path_buf)
        .or(file.exec_root.clone())
        .unwrap_or_else(|| DEFAULT_EXEC_ROOT.into());
    // An empty path (flag or file) turns the snapshotter off.
    let snapshotter_socket = match args
        .snapshotter_socket
        .clone()
        .map(PathBuf::from)
        .or(file.snapshotter_socket)
    {
        Some(p) if p.as_os_str().is_empty() => None,
        Some(p) => Some(p),
        None => Some(exec_root.join("snapshotter.sock")),
    };
    let cfg = DaemonConfig {
        data_root: args
            .data_root
            .clone()
            .or(file.data_root)
            .unwrap_or_else(|| DEFAULT_DATA_ROOT.into()),
        exec_root,
        cache_size: args
            .cache_size
            .clone()
            .or(file.cache_size)
            .unwrap_or_else(|| DEFAULT_CACHE_SIZE.into()),
        insecure_registries: insecure,
        registry_mirrors: mirrors,
        docker_hub_origin: args.docker_hub_origin.clone(),
        certs_dir: args
            .certs_dir
            .clone()
            .or(file.certs_dir)
            .unwrap_or_else(|| DEFAULT_CERTS_DIR.into()),
        bridge: args
            .bridge
            .clone()
            .or(file.bridge)
            .unwrap_or_else(|| DEFAULT_BRIDGE.into()),
        subnet: args
            .subnet
            .clone()
            .or(file.bip)
            .unwrap_or_else(|| DEFAULT_SUBNET.into()),
        address_pools: match &file.default_address_pools {
            Some(p) if !p.is_empty() => p
                .iter()
                .map(super::networks::AddressPool::parse)
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| anyhow::anyhow!(e))?,
            _ => super::networks::AddressPool::defaults(),
        },
        hosts: file.hosts.unwrap_or_default(),
        debug: args.debug || file.debug.unwrap_or(false),
        lazy_pull: !args.no_lazy_pull && file.lazy_pull.unwrap_or(true),
        profile_record: !args.no_profile_record && file.profile_record.unwrap_or(true),
        profile_prefetch: !args.no_profile_prefetch && file.profile_prefetch.unwrap_or(true),
        program_prefetch: !args.no_program_prefetch && file.program_prefetch.unwrap_or(true),
        background_fetch: !args.no_background_fetch && file.background_fetch.unwrap_or(true),
        background_fetch_rate: args
            .background_fetch_rate
            .clone()
            .or(file.background_fetch_rate)
            .unwrap_or_else(|| DEFAULT_BACKGROUND_FETCH_RATE.into()),
        log_driver: file.log_driver.unwrap_or_else(|| "json-file".into()),
        log_opts: file.log_opts.unwrap_or_default(),
        live_restore: args.live_restore.or(file.live_restore).unwrap_or(true),
        snapshotter_socket,
        file: path,
    };
    for (key, p) in [("data-root", &cfg.data_root), ("exec-root", &cfg.exec_root)] {
        if !p.is_absolute() {
            bail!("{key} must be an absolute path, got {}", p.display());
        }
    }
    if let Some(p) = cfg.snapshotter_socket.as_ref().filter(|p| !p.is_absolute()) {
        bail!(
            "snapshotter-socket must be an absolute path (or \"\" for none), got {}",
            p.display()
        );
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> DaemonArgs {
        let cli = crate::args::Cli::try_parse_from(
            ["skiff", "daemon"].iter().chain(extra.iter()).copied(),
        )
        .unwrap();
        match cli.command {
            crate::args::Command::Daemon(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn dockerd_keys_parse_and_flags_win() {
        let f = parse(
            r#"{"data-root": "/srv/skiff", "bip": "10.9.0.0/24", "bridge": "br9",
                "insecure-registries": ["reg:5000"], "live-restore": false,
                "log-driver": "json-file", "log-opts": {}, "registry-mirrors": []}"#,
        )
        .unwrap();
        let cfg = resolve(&args(&["--bridge", "brflag"]), None, f, None).unwrap();
        assert_eq!(cfg.data_root, PathBuf::from("/srv/skiff"));
        assert_eq!(cfg.subnet, "10.9.0.0/24");
        assert_eq!(cfg.bridge, "brflag");
        assert_eq!(cfg.insecure_registries, ["reg:5000"]);
        assert_eq!(cfg.exec_root, PathBuf::from(DEFAULT_EXEC_ROOT));
        assert_eq!(cfg.cache_size, DEFAULT_CACHE_SIZE);
        assert!(cfg.registry_mirrors.is_empty());
        assert_eq!(cfg.certs_dir, PathBuf::from(DEFAULT_CERTS_DIR));
        assert!(!cfg.live_restore);
    }

    #[test]
    fn insecure_registries_take_cidrs_and_refuse_bad_entries() {
        let f = parse(r#"{"insecure-registries": ["10.0.0.0/8", "reg:5000"]}"#).unwrap();
        let cfg = resolve(&args(&["--insecure-registry", "fd00::/8"]), None, f, None).unwrap();
        assert_eq!(
            cfg.insecure_registries,
            ["10.0.0.0/8", "reg:5000", "fd00::/8"]
        );
        let e = format!(
            "{:#}",
            parse(r#"{"insecure-registries": ["10.0.0.0/40"]}"#).unwrap_err()
        );
        assert!(
            e.contains("insecure-registries") && e.contains("10.0.0.0/40"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            resolve(
                &args(&["--insecure-registry", "ftp://x"]),
                None,
                DaemonFile::default(),
                None
            )
            .unwrap_err()
        );
        assert!(
            e.contains("--insecure-registry") && e.contains("://"),
            "{e}"
        );
    }

    #[test]
    fn live_restore_is_on_unless_turned_off() {
        let on = |file: &str, flags: &[&str]| {
            resolve(&args(flags), None, parse(file).unwrap(), None)
                .unwrap()
                .live_restore
        };
        assert!(on("{}", &[]));
        assert!(on(r#"{"live-restore": true}"#, &[]));
        assert!(!on(r#"{"live-restore": false}"#, &[]));
        assert!(on(r#"{"live-restore": false}"#, &["--live-restore"]));
        assert!(!on(r#"{"live-restore": true}"#, &["--live-restore=false"]));
    }

    #[test]
    fn hosts_come_from_the_file() {
        let f = parse(r#"{"hosts": ["unix:///run/a.sock", "/run/b.sock"]}"#).unwrap();
        let cfg = resolve(&args(&[]), None, f, None).unwrap();
        assert_eq!(cfg.hosts, ["unix:///run/a.sock", "/run/b.sock"]);
    }

    #[test]
    fn mirrors_from_file_then_flags() {
        let f = parse(r#"{"registry-mirrors": ["https://m1.example"]}"#).unwrap();
        let cfg = resolve(
            &args(&["--registry-mirror", "http://127.0.0.1:5000/"]),
            None,
            f,
            None,
        )
        .unwrap();
        assert_eq!(
            cfg.registry_mirrors,
            ["https://m1.example", "http://127.0.0.1:5000/"]
        );
        let e = resolve(
            &args(&["--registry-mirror", "m2.example/path"]),
            None,
            DaemonFile::default(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--registry-mirror") && e.contains("m2.example/path"),
            "{e}"
        );
    }

    #[test]
    fn unknown_and_unsupported_keys_are_refused() {
        let e = parse(r#"{"data-rot": "/x"}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field `data-rot`"), "{e}");
        let e = parse(r#"{"log-driver": "syslog"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("syslog"), "{e}");
        assert!(parse(r#"{"log-driver": "local", "log-opts": {"max-size": "10m"}}"#).is_ok());
        let e = parse(r#"{"registry-mirrors": ["ftp://m"]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("registry-mirrors") && e.contains("ftp://m"),
            "{e}"
        );
        assert!(parse(r#"{"data-root": 3}"#).is_err());
        let e = parse(r#"{"default-address-pools": [{"base": "10.1.0.0/16", "size": 8}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("default-address-pools"), "{e}");
        let f =
            parse(r#"{"default-address-pools": [{"base": "10.1.0.0/16", "size": 24}]}"#).unwrap();
        let cfg = resolve(&args(&[]), None, f, None).unwrap();
        assert_eq!(cfg.address_pools.len(), 1);
        assert_eq!(cfg.address_pools[0].size, 24);
    }

    #[test]
    fn missing_default_file_is_fine_but_a_named_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        assert!(read_file(Some(&missing)).is_err());
        let rel = resolve(
            &args(&["--data-root", "rel"]),
            None,
            DaemonFile::default(),
            None,
        );
        assert!(rel.is_err());
    }

    #[test]
    fn lazy_store_keys_from_file_and_flags() {
        let f = parse(r#"{"background-fetch-rate": "5m", "profile-record": false}"#).unwrap();
        let cfg = resolve(&args(&["--no-background-fetch"]), None, f, None).unwrap();
        assert_eq!(cfg.background_fetch_rate, "5m");
        assert!(!cfg.profile_record);
        assert!(!cfg.background_fetch);
        assert!(cfg.lazy_pull && cfg.profile_prefetch);
        let cfg = resolve(&args(&[]), None, DaemonFile::default(), None).unwrap();
        assert_eq!(cfg.background_fetch_rate, DEFAULT_BACKGROUND_FETCH_RATE);
        assert!(cfg.background_fetch && cfg.profile_record);
        assert!(parse(r#"{"lazy-pul": false}"#)
            .unwrap_err()
            .to_string()
            .contains("lazy-pul"));
    }

    #[test]
    fn snapshotter_socket_defaults_under_exec_root_moves_and_turns_off() {
        let cfg = resolve(
            &args(&[]),
            Some(Path::new("/x")),
            DaemonFile::default(),
            None,
        )
        .unwrap();
        assert_eq!(
            cfg.snapshotter_socket,
            Some(PathBuf::from("/x/snapshotter.sock"))
        );
        let f = parse(r#"{"snapshotter-socket": "/run/k8s/skiff.sock"}"#).unwrap();
        let cfg = resolve(&args(&[]), None, f, None).unwrap();
        assert_eq!(
            cfg.snapshotter_socket,
            Some(PathBuf::from("/run/k8s/skiff.sock"))
        );
        let f = parse(r#"{"snapshotter-socket": "/run/k8s/skiff.sock"}"#).unwrap();
        let cfg = resolve(&args(&["--snapshotter-socket", ""]), None, f, None).unwrap();
        assert_eq!(
            cfg.snapshotter_socket, None,
            "the flag wins and \"\" turns it off"
        );
        let f = parse(r#"{"snapshotter-socket": "rel.sock"}"#).unwrap();
        let e = resolve(&args(&[]), None, f, None).unwrap_err().to_string();
        assert!(
            e.contains("snapshotter-socket must be an absolute path"),
            "{e}"
        );
    }
}
