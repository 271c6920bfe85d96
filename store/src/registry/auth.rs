//! Credentials from Docker's `config.json` (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`): `auths.<host>.auth` = base64(`user:password`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;

#[derive(serde::Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "registrytoken")]
    registry_token: Option<String>,
}

/// The default location of Docker's config file.
pub fn default_docker_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// The keys under which Docker may have stored credentials for `registry`.
fn candidate_keys(registry: &str) -> Vec<String> {
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/v1/"),
        format!("https://{registry}/v2/"),
    ];
    if registry == "docker.io" {
        keys.push("https://index.docker.io/v1/".to_string());
        keys.push("index.docker.io".to_string());
        keys.push("registry-1.docker.io".to_string());
    }
    keys
}

/// Credentials for `registry` from the config file at `path`; anonymous when the file or
/// the entry is missing or unreadable (logged, since a typo there is a common mistake).
pub fn auth_for(path: Option<&Path>, registry: &str) -> RegistryAuth {
    let Some(path) = path else {
        return RegistryAuth::Anonymous;
    };
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return RegistryAuth::Anonymous,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read docker config; pulling anonymously");
            return RegistryAuth::Anonymous;
        }
    };
    let config: DockerConfig = match serde_json::from_slice(&data) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot parse docker config; pulling anonymously");
            return RegistryAuth::Anonymous;
        }
    };
    parse_entry(&config, registry, path)
}

fn parse_entry(config: &DockerConfig, registry: &str, path: &Path) -> RegistryAuth {
    let Some(entry) = candidate_keys(registry)
        .iter()
        .find_map(|k| config.auths.get(k))
    else {
        return RegistryAuth::Anonymous;
    };
    if let Some(token) = &entry.registry_token {
        return RegistryAuth::Bearer(token.clone());
    }
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return RegistryAuth::Basic(u.clone(), p.clone());
    }
    if let Some(auth) = &entry.auth {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        match decoded.as_deref().and_then(|s| s.split_once(':')) {
            Some((u, p)) => return RegistryAuth::Basic(u.to_string(), p.to_string()),
            None => {
                tracing::warn!(path = %path.display(), registry, "auth entry is not base64 user:password; ignoring")
            }
        }
    }
    RegistryAuth::Anonymous
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_base64_auth_and_hub_alias() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let enc = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        std::fs::write(
            &p,
            format!(
                r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{enc}"}},"https://index.docker.io/v1/":{{"auth":"{enc}"}}}}}}"#
            ),
        )
        .unwrap();
        let a = auth_for(Some(&p), "127.0.0.1:5000");
        assert!(matches!(a, RegistryAuth::Basic(ref u, ref pw) if u == "alice" && pw == "s3cr:et"));
        assert!(matches!(
            auth_for(Some(&p), "docker.io"),
            RegistryAuth::Basic(..)
        ));
        assert!(matches!(
            auth_for(Some(&p), "quay.io"),
            RegistryAuth::Anonymous
        ));
        assert!(matches!(
            auth_for(Some(&dir.path().join("missing.json")), "quay.io"),
            RegistryAuth::Anonymous
        ));
    }
}
