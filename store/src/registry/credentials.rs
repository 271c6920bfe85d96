//! Registry credentials and where they come from, as Docker keeps them.
//!
//! A [`Credential`] pairs a secret with its *source* (`"X-Registry-Auth of the request"`,
//! `"config.json auths (/root/.docker/config.json)"`, `"credential helper
//! docker-credential-pass"`): errors and logs name the source, never the secret.
//!
//! Docker's `config.json` (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`) is read
//! as the docker CLI reads it: `credHelpers.<registry>` first, then `credsStore`, then
//! `auths.<registry>` (`auth` = base64 `user:password`, or `username`/`password`,
//! `identitytoken`, `registrytoken`). Helpers speak the docker-credential-helpers protocol
//! (`docker-credential-<name> get|store|erase`, JSON on stdin/stdout), each run as a child
//! process with a [`HELPER_TIMEOUT`].

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;

use crate::StoreError;

/// How long a credential helper may take before it is killed and the lookup fails.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// The key Docker uses for Docker Hub in `config.json` and with helpers.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// What a request to a registry may authenticate with.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Secret {
    #[default]
    Anonymous,
    /// A user name and password (or personal access token), sent to the token server or
    /// as HTTP basic auth.
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (Docker's `identitytoken`), exchanged at the token server
    /// with `grant_type=refresh_token`.
    IdentityToken { username: String, token: String },
    /// A bearer token used as is (Docker's `registrytoken`).
    RegistryToken(String),
}

impl Secret {
    /// `anonymous`, `user alice`, `identity token of alice`, `registry token`: what an
    /// error may say about the secret.
    pub fn describe(&self) -> String {
        match self {
            Secret::Anonymous => "anonymous".to_string(),
            Secret::Basic { username, .. } => format!("user {username}"),
            Secret::IdentityToken { username, .. } if !username.is_empty() => {
                format!("identity token of {username}")
            }
            Secret::IdentityToken { .. } => "identity token".to_string(),
            Secret::RegistryToken(_) => "registry token".to_string(),
        }
    }

    /// The secret's fingerprint (sha256 of its parts): tells credentials apart without
    /// keeping them in a second place.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        match self {
            Secret::Anonymous => h.update(b"anon"),
            Secret::Basic { username, password } => {
                h.update(b"basic\0");
                h.update(username.as_bytes());
                h.update(b"\0");
                h.update(password.as_bytes());
            }
            Secret::IdentityToken { username, token } => {
                h.update(b"identity\0");
                h.update(username.as_bytes());
                h.update(b"\0");
                h.update(token.as_bytes());
            }
            Secret::RegistryToken(t) => {
                h.update(b"token\0");
                h.update(t.as_bytes());
            }
        }
        hex::encode(&h.finalize()[..8])
    }
}

impl std::fmt::Debug for Secret {
    // Never print secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A secret and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Credential {
    pub secret: Secret,
    /// Where the secret was found, for errors: never the secret itself.
    pub source: String,
}

impl Credential {
    pub fn anonymous(source: impl Into<String>) -> Credential {
        Credential {
            secret: Secret::Anonymous,
            source: source.into(),
        }
    }

    /// `user alice from config.json auths (/x/config.json)`: for errors.
    pub fn describe(&self) -> String {
        format!("{} from {}", self.secret.describe(), self.source)
    }

    /// Docker's `X-Registry-Auth` header: base64url (padded or not) JSON
    /// `{"username","password","identitytoken","registrytoken","serveraddress"}`.
    /// An empty object or empty header is anonymous.
    pub fn from_registry_auth_header(value: &str) -> Result<Credential, StoreError> {
        let bad = |reason: &str| StoreError::InvalidCredentials {
            source_name: "X-Registry-Auth header".to_string(),
            reason: reason.to_string(),
        };
        let value = value.trim();
        let source = "the request's X-Registry-Auth header";
        if value.is_empty() {
            return Ok(Credential::anonymous(source));
        }
        let raw = decode_base64_any(value).ok_or_else(|| bad("not base64"))?;
        let v: AuthConfig = serde_json::from_slice(&raw).map_err(|_| bad("not a JSON object"))?;
        Ok(Credential {
            secret: v.secret(),
            source: source.to_string(),
        })
    }
}

/// Docker's `AuthConfig` (the `POST /auth` body and the `X-Registry-Auth` JSON).
#[derive(serde::Deserialize, Default)]
pub struct AuthConfig {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default, alias = "serveraddress")]
    pub serveraddress: Option<String>,
    #[serde(default)]
    pub identitytoken: Option<String>,
    #[serde(default)]
    pub registrytoken: Option<String>,
}

impl AuthConfig {
    /// The secret it carries (tokens first, as Docker prefers them).
    pub fn secret(&self) -> Secret {
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        if let Some(t) = nonempty(&self.registrytoken) {
            return Secret::RegistryToken(t);
        }
        if let Some(t) = nonempty(&self.identitytoken) {
            return Secret::IdentityToken {
                username: self.username.clone().unwrap_or_default(),
                token: t,
            };
        }
        if let (Some(u), Some(p)) = (nonempty(&self.username), nonempty(&self.password)) {
            return Secret::Basic {
                username: u,
                password: p,
            };
        }
        if let Some((u, p)) = nonempty(&self.auth)
            .and_then(|a| decode_base64_any(&a))
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            })
        {
            return Secret::Basic {
                username: u,
                password: p,
            };
        }
        Secret::Anonymous
    }
}

fn decode_base64_any(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    let s = s.trim();
    URL_SAFE
        .decode(s)
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .or_else(|_| STANDARD.decode(s))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
        .ok()
}

/// The default location of Docker's config file.
pub fn default_docker_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// The key Docker files `registry`'s credentials under (`https://index.docker.io/v1/` for
/// Docker Hub, `host[:port]` otherwise).
pub fn config_key(registry: &str) -> String {
    if matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// The keys under which Docker may have stored `registry`'s credentials in `auths`.
fn candidate_keys(registry: &str) -> Vec<String> {
    let key = config_key(registry);
    let mut keys = vec![
        key.clone(),
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/v1/"),
        format!("https://{registry}/v2/"),
    ];
    if key == DOCKER_HUB_KEY {
        keys.push("index.docker.io".to_string());
        keys.push("registry-1.docker.io".to_string());
    }
    keys
}

/// `config.json` as the docker CLI writes it; unknown keys are kept on rewrite.
#[derive(serde::Deserialize, serde::Serialize, Default)]
pub struct DockerConfigFile {
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub auths: HashMap<String, serde_json::Map<String, serde_json::Value>>,
    #[serde(
        default,
        rename = "credsStore",
        skip_serializing_if = "Option::is_none"
    )]
    pub creds_store: Option<String>,
    #[serde(
        default,
        rename = "credHelpers",
        skip_serializing_if = "HashMap::is_empty"
    )]
    pub cred_helpers: HashMap<String, String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl DockerConfigFile {
    /// Reads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<DockerConfigFile, StoreError> {
        match std::fs::read(path) {
            Ok(d) if d.iter().all(|b| b.is_ascii_whitespace()) => Ok(DockerConfigFile::default()),
            Ok(d) => serde_json::from_slice(&d).map_err(|e| StoreError::InvalidCredentials {
                source_name: path.display().to_string(),
                reason: format!("not a Docker config file: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerConfigFile::default()),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// Writes the file atomically (temp file + rename), mode 0600, creating its directory.
    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| StoreError::io(dir, e))?;
        let body = serde_json::to_vec_pretty(self).expect("config serializes");
        tmp.write_all(&body)
            .and_then(|_| tmp.write_all(b"\n"))
            .and_then(|_| {
                tmp.as_file()
                    .set_permissions(std::fs::Permissions::from_mode(0o600))
            })
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| StoreError::io(tmp.path(), e))?;
        tmp.persist(path)
            .map_err(|e| StoreError::io(path, e.error))?;
        Ok(())
    }

    /// The helper that holds `registry`'s credentials, if any (`credHelpers` first).
    pub fn helper_for(&self, registry: &str) -> Option<String> {
        let key = config_key(registry);
        self.cred_helpers
            .get(&key)
            .or_else(|| self.cred_helpers.get(registry))
            .or(self.creds_store.as_ref())
            .filter(|h| !h.is_empty())
            .cloned()
    }

    /// The `auths` entry for `registry`, decoded.
    fn auths_secret(&self, registry: &str) -> Option<Secret> {
        let entry = candidate_keys(registry)
            .iter()
            .find_map(|k| self.auths.get(k))?;
        let cfg: AuthConfig =
            serde_json::from_value(serde_json::Value::Object(entry.clone())).unwrap_or_default();
        Some(cfg.secret())
    }

    /// Records `secret` for `registry` in `auths` (Docker's `auth` + `identitytoken`).
    pub fn set_auths(&mut self, registry: &str, secret: &Secret) {
        let b64 =
            |u: &str, p: &str| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        let mut entry = serde_json::Map::new();
        match secret {
            Secret::Basic { username, password } => {
                entry.insert("auth".into(), b64(username, password).into());
            }
            Secret::IdentityToken { username, token } => {
                entry.insert("auth".into(), b64(username, "").into());
                entry.insert("identitytoken".into(), token.clone().into());
            }
            Secret::RegistryToken(t) => {
                entry.insert("registrytoken".into(), t.clone().into());
            }
            Secret::Anonymous => {}
        }
        self.remove_auths(registry);
        self.auths.insert(config_key(registry), entry);
    }

    /// Drops every `auths` entry for `registry`; whether there was one.
    pub fn remove_auths(&mut self, registry: &str) -> bool {
        let mut any = false;
        for k in candidate_keys(registry) {
            any |= self.auths.remove(&k).is_some();
        }
        any
    }
}

/// `registry`'s credentials from the Docker config at `path` (helpers run, with their
/// timeout). Anonymous when the file or the entry is missing.
pub async fn from_docker_config(path: &Path, registry: &str) -> Result<Credential, StoreError> {
    let file = DockerConfigFile::load(path)?;
    if let Some(helper) = file.helper_for(registry) {
        let secret = helper_get(&helper, &config_key(registry)).await?;
        return Ok(Credential {
            secret,
            source: format!("credential helper docker-credential-{helper}"),
        });
    }
    let source = format!("config.json auths ({})", path.display());
    Ok(Credential {
        secret: file.auths_secret(registry).unwrap_or_default(),
        source,
    })
}

/// The helper's answer to `get` (docker-credential-helpers' `Credentials`).
#[derive(serde::Deserialize)]
struct HelperCredentials {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// What helpers print when they hold nothing for the server.
const NOT_FOUND: &str = "credentials not found in native keychain";

/// Runs `docker-credential-<helper> <action>` with `input` on stdin, killing it after
/// [`HELPER_TIMEOUT`]. Returns stdout; a non-zero exit is an error carrying the helper's
/// message (its first line of stdout or stderr: helpers print errors there, not secrets).
async fn run_helper(helper: &str, action: &str, input: &[u8]) -> Result<Vec<u8>, StoreError> {
    use tokio::io::AsyncWriteExt as _;
    let program = format!("docker-credential-{helper}");
    let fail = |reason: String| StoreError::CredentialHelper {
        helper: program.clone(),
        action: action.to_string(),
        reason,
    };
    let mut child = tokio::process::Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let write = async move {
        let _ = stdin.write_all(&input).await;
        drop(stdin);
    };
    let out = tokio::time::timeout(HELPER_TIMEOUT, async {
        write.await;
        child.wait_with_output().await
    })
    .await
    .map_err(|_| fail(format!("no answer within {}s", HELPER_TIMEOUT.as_secs())))?
    .map_err(|e| fail(format!("waiting for it: {e}")))?;
    if !out.status.success() {
        let msg = [&out.stdout, &out.stderr]
            .iter()
            .filter_map(|b| {
                String::from_utf8_lossy(b)
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(|l| l.chars().take(200).collect::<String>())
            })
            .next()
            .unwrap_or_default();
        return Err(fail(format!("exited with {}: {msg}", out.status)));
    }
    Ok(out.stdout)
}

/// `get`: the helper's credentials for `server` (anonymous when it has none).
pub async fn helper_get(helper: &str, server: &str) -> Result<Secret, StoreError> {
    let out = match run_helper(helper, "get", server.as_bytes()).await {
        Ok(out) => out,
        Err(StoreError::CredentialHelper { reason, .. }) if reason.contains(NOT_FOUND) => {
            return Ok(Secret::Anonymous)
        }
        Err(e) => return Err(e),
    };
    // Never echo the output: it may hold the secret.
    let c: HelperCredentials =
        serde_json::from_slice(&out).map_err(|_| StoreError::CredentialHelper {
            helper: format!("docker-credential-{helper}"),
            action: "get".to_string(),
            reason: "its answer is not the JSON {\"Username\",\"Secret\"}".to_string(),
        })?;
    Ok(if c.secret.is_empty() {
        Secret::Anonymous
    } else if c.username == "<token>" {
        Secret::IdentityToken {
            username: String::new(),
            token: c.secret,
        }
    } else {
        Secret::Basic {
            username: c.username,
            password: c.secret,
        }
    })
}

/// `store`: hands `secret` for `server` to the helper.
pub async fn helper_store(helper: &str, server: &str, secret: &Secret) -> Result<(), StoreError> {
    let (user, secret) = match secret {
        Secret::Basic { username, password } => (username.as_str(), password.as_str()),
        Secret::IdentityToken { token, .. } => ("<token>", token.as_str()),
        Secret::RegistryToken(t) => ("<token>", t.as_str()),
        Secret::Anonymous => return Ok(()),
    };
    let body = serde_json::json!({"ServerURL": server, "Username": user, "Secret": secret});
    run_helper(helper, "store", body.to_string().as_bytes())
        .await
        .map(|_| ())
}

/// `erase`: removes the helper's credentials for `server`; whether it had any.
pub async fn helper_erase(helper: &str, server: &str) -> Result<bool, StoreError> {
    match run_helper(helper, "erase", server.as_bytes()).await {
        Ok(_) => Ok(true),
        Err(StoreError::CredentialHelper { reason, .. }) if reason.contains(NOT_FOUND) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_auths_and_hub_alias() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let enc = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        std::fs::write(
            &p,
            format!(
                r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{enc}"}},"https://index.docker.io/v1/":{{"auth":"{enc}"}},"q.example":{{"auth":"","identitytoken":"rt"}}}},"other":1}}"#
            ),
        )
        .unwrap();
        let a = from_docker_config(&p, "127.0.0.1:5000").await.unwrap();
        assert_eq!(
            a.secret,
            Secret::Basic {
                username: "alice".into(),
                password: "s3cr:et".into()
            }
        );
        assert!(a.source.contains("config.json auths"), "{}", a.source);
        assert!(!format!("{a:?}").contains("s3cr"));
        assert!(matches!(
            from_docker_config(&p, "docker.io").await.unwrap().secret,
            Secret::Basic { .. }
        ));
        assert_eq!(
            from_docker_config(&p, "q.example").await.unwrap().secret,
            Secret::IdentityToken {
                username: String::new(),
                token: "rt".into()
            }
        );
        assert_eq!(
            from_docker_config(&p, "quay.io").await.unwrap().secret,
            Secret::Anonymous
        );
        assert_eq!(
            from_docker_config(&dir.path().join("missing.json"), "quay.io")
                .await
                .unwrap()
                .secret,
            Secret::Anonymous
        );
        // Rewriting keeps unknown keys.
        let mut f = DockerConfigFile::load(&p).unwrap();
        assert!(f.remove_auths("127.0.0.1:5000"));
        f.save(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"other\": 1"), "{text}");
        assert!(!text.contains("127.0.0.1:5000"), "{text}");
    }

    #[test]
    fn registry_auth_header_shapes() {
        use base64::engine::general_purpose::URL_SAFE;
        let h = URL_SAFE.encode(r#"{"username":"bob","password":"pw","serveraddress":"r"}"#);
        let c = Credential::from_registry_auth_header(&h).unwrap();
        assert_eq!(
            c.secret,
            Secret::Basic {
                username: "bob".into(),
                password: "pw".into()
            }
        );
        assert_eq!(
            c.describe(),
            "user bob from the request's X-Registry-Auth header"
        );
        let h = URL_SAFE.encode(r#"{"identitytoken":"tok"}"#);
        assert!(matches!(
            Credential::from_registry_auth_header(&h).unwrap().secret,
            Secret::IdentityToken { .. }
        ));
        let h = URL_SAFE.encode("{}");
        assert_eq!(
            Credential::from_registry_auth_header(&h).unwrap().secret,
            Secret::Anonymous
        );
        let e = Credential::from_registry_auth_header("!!!").unwrap_err();
        assert!(e.to_string().contains("X-Registry-Auth"), "{e}");
    }
}
