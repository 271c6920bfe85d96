//! Which credentials a request to a registry uses: those a client handed the daemon for the
//! repository (Docker's `X-Registry-Auth`, remembered so lazily pulled images can fetch
//! chunks and renew tokens hours later), else those of the Docker config file
//! ([`credentials::from_docker_config`]).
//!
//! Remembered credentials are kept in memory and, when a file is configured, in that file
//! (JSON, mode 0600, written atomically) so they survive a daemon restart. Lookups happen
//! only when a registry asks for credentials (a `401`), never on the hot path of a read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::credentials::{self, Credential, Secret};
use crate::StoreError;

/// Remembered credentials: `registry` → `repository` → what the client sent.
#[derive(Default)]
pub struct Keychain {
    docker_config: Option<PathBuf>,
    /// Where remembered credentials persist; `None` keeps them in memory only.
    file: Option<PathBuf>,
    remembered: Mutex<HashMap<String, HashMap<String, Secret>>>,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Persisted {
    /// `registry` → `repository` → secret.
    registries: HashMap<String, HashMap<String, PersistedSecret>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum PersistedSecret {
    Basic { username: String, password: String },
    IdentityToken { username: String, token: String },
    RegistryToken { token: String },
}

impl Keychain {
    /// A keychain over the Docker config at `docker_config`, persisting remembered
    /// credentials in `file` (read now; an unreadable file is logged and ignored).
    pub fn new(docker_config: Option<PathBuf>, file: Option<PathBuf>) -> Keychain {
        let remembered = file.as_deref().map(load).unwrap_or_default();
        Keychain {
            docker_config,
            file,
            remembered: Mutex::new(remembered),
        }
    }

    /// Keeps `secret` for `registry`/`repository` (replacing what was kept); anonymous
    /// secrets are not kept. Persisted when a file is configured.
    pub fn remember(&self, registry: &str, repository: &str, secret: Secret) {
        if secret == Secret::Anonymous {
            return;
        }
        let mut map = self.remembered.lock().expect("keychain");
        let slot = map.entry(registry.to_string()).or_default();
        if slot.get(repository) == Some(&secret) {
            return;
        }
        slot.insert(repository.to_string(), secret);
        if let Some(file) = &self.file {
            if let Err(e) = save(file, &map) {
                tracing::warn!(path = %file.display(), "cannot persist registry credentials: {e}");
            }
        }
    }

    /// Drops what was kept for `registry`/`repository` if it is `secret` (credentials the
    /// registry refused must not stand in for later anonymous pulls).
    pub fn forget(&self, registry: &str, repository: &str, secret: &Secret) {
        let mut map = self.remembered.lock().expect("keychain");
        let Some(repos) = map.get_mut(registry) else {
            return;
        };
        if repos.get(repository) != Some(secret) {
            return;
        }
        repos.remove(repository);
        if repos.is_empty() {
            map.remove(registry);
        }
        if let Some(file) = &self.file {
            if let Err(e) = save(file, &map) {
                tracing::warn!(path = %file.display(), "cannot persist registry credentials: {e}");
            }
        }
    }

    /// The credentials for `registry`/`repository`: remembered ones for the repository,
    /// then for any repository of the registry, then the Docker config's.
    ///
    /// Inside a client's request ([`super::request_auth::with_request_secret`]) only what
    /// that client sent counts, else the Docker config's: credentials kept from other
    /// requests never stand in for a client (as with Docker, `logout` then `pull` fails).
    pub async fn lookup(&self, registry: &str, repository: &str) -> Result<Credential, StoreError> {
        if let Some(secret) = super::request_auth::request_secret() {
            if secret != Secret::Anonymous {
                return Ok(Credential {
                    secret,
                    source: "the credentials sent with this request".to_string(),
                });
            }
            return match &self.docker_config {
                Some(path) => credentials::from_docker_config(path, registry).await,
                None => Ok(Credential::anonymous("no Docker config")),
            };
        }
        {
            let map = self.remembered.lock().expect("keychain");
            if let Some(repos) = map.get(registry) {
                if let Some(s) = repos.get(repository) {
                    return Ok(Credential {
                        secret: s.clone(),
                        source: format!("the credentials sent with the pull of {repository}"),
                    });
                }
                if let Some((repo, s)) = repos.iter().next() {
                    return Ok(Credential {
                        secret: s.clone(),
                        source: format!("the credentials sent with the pull of {repo}"),
                    });
                }
            }
        }
        match &self.docker_config {
            Some(path) => credentials::from_docker_config(path, registry).await,
            None => Ok(Credential::anonymous("no Docker config")),
        }
    }
}

fn load(file: &Path) -> HashMap<String, HashMap<String, Secret>> {
    let data = match std::fs::read(file) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::warn!(path = %file.display(), "cannot read remembered credentials: {e}");
            return HashMap::new();
        }
    };
    let p: Persisted = match serde_json::from_slice(&data) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(path = %file.display(), "remembered credentials are not valid JSON ({e}); ignoring them");
            return HashMap::new();
        }
    };
    p.registries
        .into_iter()
        .map(|(reg, repos)| {
            let repos = repos
                .into_iter()
                .map(|(repo, s)| {
                    let s = match s {
                        PersistedSecret::Basic { username, password } => {
                            Secret::Basic { username, password }
                        }
                        PersistedSecret::IdentityToken { username, token } => {
                            Secret::IdentityToken { username, token }
                        }
                        PersistedSecret::RegistryToken { token } => Secret::RegistryToken(token),
                    };
                    (repo, s)
                })
                .collect();
            (reg, repos)
        })
        .collect()
}

fn save(file: &Path, map: &HashMap<String, HashMap<String, Secret>>) -> Result<(), StoreError> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let p = Persisted {
        registries: map
            .iter()
            .map(|(reg, repos)| {
                let repos = repos
                    .iter()
                    .filter_map(|(repo, s)| {
                        let s = match s.clone() {
                            Secret::Basic { username, password } => {
                                PersistedSecret::Basic { username, password }
                            }
                            Secret::IdentityToken { username, token } => {
                                PersistedSecret::IdentityToken { username, token }
                            }
                            Secret::RegistryToken(token) => {
                                PersistedSecret::RegistryToken { token }
                            }
                            Secret::Anonymous => return None,
                        };
                        Some((repo.clone(), s))
                    })
                    .collect();
                (reg.clone(), repos)
            })
            .collect(),
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| StoreError::io(dir, e))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|_| tmp.write_all(&serde_json::to_vec(&p).expect("serializes")))
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| StoreError::io(tmp.path(), e))?;
    tmp.persist(file)
        .map_err(|e| StoreError::io(file, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remembered_credentials_win_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creds.json");
        let k = Keychain::new(Some(dir.path().join("none.json")), Some(file.clone()));
        assert_eq!(
            k.lookup("r:5000", "a/b").await.unwrap().secret,
            Secret::Anonymous
        );
        let s = Secret::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        k.remember("r:5000", "a/b", s.clone());
        k.remember("r:5000", "x", Secret::Anonymous);
        let c = k.lookup("r:5000", "a/b").await.unwrap();
        assert_eq!(c.secret, s);
        assert!(c.source.contains("pull of a/b"), "{}", c.source);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Forgetting other credentials does nothing; these, removes them.
        k.forget("r:5000", "a/b", &Secret::RegistryToken("x".into()));
        assert_eq!(k.lookup("r:5000", "a/b").await.unwrap().secret, s);
        k.forget("r:5000", "a/b", &s);
        assert_eq!(
            k.lookup("r:5000", "a/b").await.unwrap().secret,
            Secret::Anonymous
        );
        k.remember("r:5000", "a/b", s.clone());
        // A new keychain (a restarted daemon) reads them back.
        let k2 = Keychain::new(None, Some(file));
        assert_eq!(k2.lookup("r:5000", "a/b").await.unwrap().secret, s);
        assert_eq!(k2.lookup("r:5000", "other").await.unwrap().secret, s);
        assert_eq!(
            k2.lookup("q:1", "a/b").await.unwrap().secret,
            Secret::Anonymous
        );
    }
}
