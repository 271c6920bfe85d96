//! What a registry repository was found to need, resolved once and reused: no
//! authentication, HTTP basic, or a bearer token until it expires (Distribution's token
//! authentication spec, `WWW-Authenticate: Bearer realm=..,service=..,scope=..`).
//!
//! Nothing is probed ahead: a request goes out with whatever is cached for its
//! `(registry, repository)`; only a `401` with a challenge makes the caller resolve access
//! (one token request for `Bearer`, the configured credentials for `Basic`) and send the
//! request once more. A registry that answers without a challenge is remembered as open, so
//! the hot path stays one request per fetch.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tokens are dropped this long before the expiry the token server stated, so a request
/// never leaves with one that expires on the way.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Lifetime assumed when a token response states none (the spec's default is 60 s).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// How requests to one repository are authenticated.
#[derive(Clone, PartialEq, Eq)]
pub enum Access {
    /// The registry answered without asking for credentials.
    Open,
    /// HTTP basic credentials, sent with every request.
    Basic { username: String, password: String },
    /// A bearer token from the registry's token server, valid until `expires`; with the
    /// OAuth2 refresh token the server issued alongside, if any.
    Bearer {
        token: String,
        expires: Instant,
        refresh_token: Option<String>,
    },
}

impl std::fmt::Debug for Access {
    // Never print secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Open => f.write_str("Open"),
            Access::Basic { username, .. } => write!(f, "Basic({username})"),
            Access::Bearer { expires, .. } => write!(f, "Bearer(expires {expires:?})"),
        }
    }
}

impl Access {
    /// The `Authorization` header value, if any.
    pub fn header(&self) -> Option<String> {
        use base64::Engine as _;
        match self {
            Access::Open => None,
            Access::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Access::Bearer { token, .. } => Some(format!("Bearer {token}")),
        }
    }

    /// The refresh token that renews this access, if the token server issued one.
    pub fn refresh_token(&self) -> Option<&str> {
        match self {
            Access::Bearer { refresh_token, .. } => refresh_token.as_deref(),
            _ => None,
        }
    }

    /// Whether a request may still carry it (a bearer token not yet expired).
    pub fn usable(&self, now: Instant) -> bool {
        match self {
            Access::Bearer { expires, .. } => *expires > now,
            _ => true,
        }
    }
}

/// Held while one task renews a repository's access.
pub type RenewalLock = std::sync::Arc<tokio::sync::Mutex<()>>;

/// `(registry host, repository)` → what its requests carry, plus each host's last bearer
/// challenge (so an expiring token is renewed before a request, not after a `401`). Shared
/// by every request of a [`RegistryClient`](super::RegistryClient).
#[derive(Default)]
pub struct AuthCache {
    map: Mutex<HashMap<(String, String), Access>>,
    challenges: Mutex<HashMap<String, Challenge>>,
    /// One renewal at a time per `(host, repository)`: concurrent readers that all found
    /// the token expired share one token request.
    renewals: Mutex<HashMap<(String, String), RenewalLock>>,
}

impl AuthCache {
    /// The cached access for `registry`/`repository`; `None` when unknown or expired.
    pub fn get(&self, registry: &str, repository: &str) -> Option<Access> {
        self.get_any(registry, repository)
            .filter(|a| a.usable(Instant::now()))
    }

    /// The cached access, expired or not (an expired one still holds its refresh token).
    pub fn get_any(&self, registry: &str, repository: &str) -> Option<Access> {
        let map = self.map.lock().unwrap();
        map.get(&(registry.to_string(), repository.to_string()))
            .cloned()
    }

    /// The last bearer challenge `registry` sent.
    pub fn challenge(&self, registry: &str) -> Option<Challenge> {
        self.challenges.lock().unwrap().get(registry).cloned()
    }

    pub fn set_challenge(&self, registry: &str, c: Challenge) {
        self.challenges
            .lock()
            .unwrap()
            .insert(registry.to_string(), c);
    }

    /// The lock serialising renewals of `registry`/`repository`'s access.
    pub fn renewal_lock(&self, registry: &str, repository: &str) -> RenewalLock {
        self.renewals
            .lock()
            .unwrap()
            .entry((registry.to_string(), repository.to_string()))
            .or_default()
            .clone()
    }

    pub fn put(&self, registry: &str, repository: &str, access: Access) {
        self.map
            .lock()
            .unwrap()
            .insert((registry.to_string(), repository.to_string()), access);
    }

    /// Forgets `registry`/`repository` (its token was refused).
    pub fn invalidate(&self, registry: &str, repository: &str) {
        self.map
            .lock()
            .unwrap()
            .remove(&(registry.to_string(), repository.to_string()));
    }
}

/// A parsed `WWW-Authenticate` challenge (RFC 7235 auth-params).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses `Basic realm="x"` or `Bearer realm="https://..",service="..",scope=".."`;
    /// `None` for other schemes or a bearer challenge without a realm.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => {
                let params = auth_params(rest);
                let get = |k: &str| {
                    params
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v.clone())
                };
                Some(Challenge::Bearer {
                    realm: get("realm")?,
                    service: get("service"),
                    scope: get("scope"),
                })
            }
            _ => None,
        }
    }
}

/// `name=value` pairs, values quoted (with `\` escapes) or bare tokens, comma separated.
fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_string();
        if name.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        out.push((name, value));
    }
}

/// A token server's answer (`token` or OAuth's `access_token`, `expires_in` seconds,
/// `refresh_token` when the server issues offline tokens).
#[derive(serde::Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl TokenResponse {
    /// The bearer access it grants, counted from `received`; `None` without a token.
    pub fn into_access(self, received: Instant) -> Option<Access> {
        let token = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        let lifetime = self
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        // Renew early: a tenth of the lifetime, at most EXPIRY_MARGIN, before it ends.
        let margin = EXPIRY_MARGIN.min(lifetime / 10);
        Some(Access::Bearer {
            token,
            expires: received + lifetime.saturating_sub(margin).max(Duration::from_secs(1)),
            refresh_token: self.refresh_token.filter(|t| !t.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="skiff-test""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(r#"bearer realm=https://t.example/x, service = s"#),
            Some(Challenge::Bearer {
                realm: "https://t.example/x".into(),
                service: Some("s".into()),
                scope: None
            })
        );
        assert_eq!(Challenge::parse(r#"Bearer service="s""#), None);
        assert_eq!(Challenge::parse("Negotiate abc"), None);
    }

    #[test]
    fn tokens_expire_before_their_stated_lifetime_and_open_is_kept() {
        let cache = AuthCache::default();
        let t0 = Instant::now();
        let tr: TokenResponse =
            serde_json::from_str(r#"{"access_token":"abc","expires_in":300,"refresh_token":"rt"}"#)
                .unwrap();
        let access = tr.into_access(t0).unwrap();
        assert_eq!(access.header().as_deref(), Some("Bearer abc"));
        let Access::Bearer { expires, .. } = &access else {
            panic!()
        };
        assert_eq!(*expires, t0 + Duration::from_secs(290));
        assert_eq!(access.refresh_token(), Some("rt"));
        let short: TokenResponse = serde_json::from_str(r#"{"token":"s","expires_in":5}"#).unwrap();
        let Access::Bearer { expires, .. } = short.into_access(t0).unwrap() else {
            panic!()
        };
        assert_eq!(expires, t0 + Duration::from_millis(4500));
        cache.put("r", "a/b", access);
        assert!(cache.get("r", "a/b").is_some());
        assert!(cache.get("r", "other").is_none());
        // An expired token is not handed out.
        cache.put(
            "r",
            "a/b",
            Access::Bearer {
                token: "old".into(),
                expires: Instant::now() - Duration::from_secs(1),
                refresh_token: Some("r".into()),
            },
        );
        assert!(cache.get("r", "a/b").is_none());
        assert_eq!(
            cache.get_any("r", "a/b").unwrap().refresh_token(),
            Some("r")
        );
        cache.put("r", "a/b", Access::Open);
        assert_eq!(cache.get("r", "a/b"), Some(Access::Open));
        cache.invalidate("r", "a/b");
        assert!(cache.get("r", "a/b").is_none());
        let empty: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert!(empty.into_access(t0).is_none());
    }
}
