//! The network's persistent state (one JSON file under the caller's state dir): which
//! containers are attached, with every name and address needed to undo them after a
//! restart, and the spare attachments kept for reuse. IPAM reads its used set from here.
//! Written atomically (tmp, rename) and *before* the resources are made, so a crash leaves
//! nothing untracked.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{BridgeNetwork, EndpointAttachment, NetworkMode, PublishedPort};
use crate::error::{Result, RuntimeError};

pub(crate) const STATE_FILE: &str = "network.json";
const LOCK_FILE: &str = "network.lock";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct State {
    pub version: u32,
    /// The last address handed out, so allocation goes round robin.
    pub last_ip: Option<Ipv4Addr>,
    pub containers: BTreeMap<String, Record>,
    /// Released bridge attachments, intact, for the next containers.
    #[serde(default)]
    pub spares: Vec<Spare>,
    /// User-defined bridge networks made on the host, by network id.
    #[serde(default)]
    pub networks: BTreeMap<String, BridgeNetwork>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            version: VERSION,
            last_ip: None,
            containers: BTreeMap::new(),
            spares: Vec::new(),
            networks: BTreeMap::new(),
        }
    }
}

/// A container's veth on a user-defined network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct EndpointRecord {
    /// Host side of the veth pair, on `bridge`.
    pub veth: String,
    pub bridge: String,
    /// The network's, kept here so the endpoint can be made without looking it up.
    pub subnet: super::Ipv4Net,
    pub internal: bool,
    pub att: EndpointAttachment,
}

/// A bridge attachment no container uses: its namespace (only loopback and eth0 with the
/// address in it; containers cannot change it without CAP_NET_ADMIN), its veth on the
/// bridge, and the address, still reserved.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Spare {
    pub netns_path: PathBuf,
    pub ip: Ipv4Addr,
    pub veth: String,
}

impl Spare {
    /// As a record, for the code that undoes attachments.
    pub fn record(&self) -> Record {
        Record {
            mode: NetworkMode::Bridge,
            hostname: String::new(),
            netns_path: Some(self.netns_path.clone()),
            ip: Some(self.ip),
            veth: Some(self.veth.clone()),
            ports: Vec::new(),
            unpublished: false,
            endpoints: Vec::new(),
            dns: Vec::new(),
        }
    }
}

/// What was (or is about to be) made for one container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    pub mode: NetworkMode,
    pub hostname: String,
    pub netns_path: Option<PathBuf>,
    pub ip: Option<Ipv4Addr>,
    pub veth: Option<String>,
    pub ports: Vec<PublishedPort>,
    /// The container is not running: its `ports` are kept but neither bound nor forwarded
    /// (Docker frees published ports on stop and binds them again on start).
    #[serde(default)]
    pub unpublished: bool,
    /// Endpoints on user-defined networks (`eth0` first when `ip` is `None`).
    #[serde(default)]
    pub endpoints: Vec<EndpointRecord>,
    /// The embedded DNS server's forwarders (`--dns`); empty: the host's.
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
}

impl Record {
    /// Where published ports go: the default bridge's address, else the first endpoint's;
    /// with the bridge whose traffic is not DNATed again.
    pub fn port_target(&self, default_bridge: &str) -> Option<(Ipv4Addr, String)> {
        match (self.ip, self.endpoints.first()) {
            (Some(ip), _) => Some((ip, default_bridge.to_string())),
            (None, Some(e)) => Some((e.att.ip, e.bridge.clone())),
            _ => None,
        }
    }
}

impl State {
    pub fn used_ips(&self) -> BTreeSet<Ipv4Addr> {
        self.containers
            .values()
            .filter_map(|r| r.ip)
            .chain(self.spares.iter().map(|s| s.ip))
            .collect()
    }
}

fn io(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.to_path_buf();
    move |source| RuntimeError::Io { step, path, source }
}

/// Takes the state dir's lock for the manager's lifetime: two daemons on one state dir
/// would hand out the same addresses.
pub(crate) fn lock(dir: &Path) -> Result<Flock<File>> {
    std::fs::create_dir_all(dir).map_err(io("create network state dir", dir))?;
    let path = dir.join(LOCK_FILE);
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("open", &path))?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock)
        .map_err(|_| RuntimeError::NetworkStateLocked { path })
}

pub(crate) fn load(dir: &Path) -> Result<State> {
    let path = dir.join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(io("read", &path)(e)),
    };
    if bytes.is_empty() {
        // Only a crash of the machine right after a save leaves it empty (it is never
        // written empty): everything it listed died with that machine.
        tracing::warn!(path = %path.display(), "network state is empty (machine crash?); starting afresh");
        return Ok(State::default());
    }
    let state: State =
        serde_json::from_slice(&bytes).map_err(|source| RuntimeError::NetworkState {
            path: path.clone(),
            source,
        })?;
    if state.version != VERSION {
        return Err(RuntimeError::NetworkStateVersion {
            path,
            found: state.version,
            expected: VERSION,
        });
    }
    Ok(state)
}

pub(crate) fn save(dir: &Path, state: &State) -> Result<()> {
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(state).map_err(|source| RuntimeError::NetworkState {
        path: path.clone(),
        source,
    })?;
    // Renamed into place, not fsynced: what this file describes (namespaces, veths, rules,
    // proxies) dies with the machine, and a restore releases whatever is gone, so it only
    // has to survive a daemon crash, which the rename gives. Two fsyncs cost ~10 ms per
    // container start and removal. (A power loss may leave it empty: see `load`.)
    let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(&json).map_err(io("write", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io("rename", &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().containers.is_empty());
        let mut s = State {
            last_ip: Some(Ipv4Addr::new(10, 0, 0, 2)),
            ..State::default()
        };
        s.containers.insert(
            "c1".into(),
            Record {
                mode: NetworkMode::Bridge,
                hostname: "c1".into(),
                netns_path: Some("/run/x".into()),
                ip: Some(Ipv4Addr::new(10, 0, 0, 2)),
                veth: Some("vethabc".into()),
                ports: vec![],
                unpublished: false,
                endpoints: vec![],
                dns: vec![],
            },
        );
        save(dir.path(), &s).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back.used_ips().len(), 1);
        assert_eq!(back.last_ip, s.last_ip);
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(RuntimeError::NetworkState { .. })
        ));
        std::fs::write(
            dir.path().join(STATE_FILE),
            br#"{"version":99,"last_ip":null,"containers":{}}"#,
        )
        .unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(RuntimeError::NetworkStateVersion { found: 99, .. })
        ));
        std::fs::write(dir.path().join(STATE_FILE), b"").unwrap();
        assert!(load(dir.path()).unwrap().containers.is_empty());
    }

    #[test]
    fn second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock(dir.path()).unwrap();
        assert!(matches!(
            lock(dir.path()),
            Err(RuntimeError::NetworkStateLocked { .. })
        ));
    }
}
