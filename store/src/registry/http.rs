//! The registry's read path over one shared, keep-alive HTTP client: manifest, blob and
//! byte-range GETs (Distribution spec `GET /v2/<name>/{manifests,blobs}/<ref>`), each one
//! request on the wire once the repository's access is known ([`AuthCache`]). Pushes stay
//! on `oci-client`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use oci_client::secrets::RegistryAuth;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;

use super::auth_cache::{Access, AuthCache, Challenge, TokenResponse};
use crate::reference::ImageReference;
use crate::StoreError;

/// Lifetime given to a token configured in Docker's config (`registrytoken`): it is used
/// until the registry refuses it.
const CONFIGURED_TOKEN_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// One repository's endpoint and the credentials configured for its registry.
pub struct Target<'a> {
    /// For errors: the reference being fetched.
    pub reference: &'a ImageReference,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `host[:port]` requests go to (Docker Hub's name resolved to its API host).
    pub host: String,
    pub credentials: RegistryAuth,
}

pub struct RegistryHttp {
    client: reqwest::Client,
    auth: AuthCache,
    requests: AtomicU64,
}

impl RegistryHttp {
    pub fn new(user_agent: &str) -> RegistryHttp {
        let client = reqwest::Client::builder()
            .user_agent(user_agent)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("building the registry HTTP client");
        RegistryHttp {
            client,
            auth: AuthCache::default(),
            requests: AtomicU64::new(0),
        }
    }

    /// HTTP requests sent by this client (token requests included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `GET /v2/<repository>/<path>` with `headers`, authenticated as the repository needs.
    /// A `401` resolves access (token or basic) and is retried once; a second `401`/`403`
    /// is [`StoreError::Unauthorized`]. Other statuses are returned for the caller to judge.
    pub async fn get(
        &self,
        t: &Target<'_>,
        path: &str,
        headers: HeaderMap,
        op: &str,
    ) -> Result<reqwest::Response, StoreError> {
        let repo = &t.reference.repository;
        let url = format!("{}://{}/v2/{}/{}", t.scheme, t.host, repo, path);
        let cached = self.auth.get(&t.host, repo);
        let resp = self.send(t, &url, &headers, cached.as_ref(), op).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            if cached.is_none() {
                self.auth.put(&t.host, repo, Access::Open);
            }
            return Ok(resp);
        }
        // Refused: the token expired or was revoked, or access was never resolved.
        self.auth.invalidate(&t.host, repo);
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .and_then(Challenge::parse);
        let access = self.resolve(t, challenge, op).await?;
        let resp = self.send(t, &url, &headers, Some(&access), op).await?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(unauthorized(
                t,
                format!("{op}: refused with the resolved credentials"),
            ));
        }
        self.auth.put(&t.host, repo, access);
        Ok(resp)
    }

    async fn send(
        &self,
        t: &Target<'_>,
        url: &str,
        headers: &HeaderMap,
        access: Option<&Access>,
        op: &str,
    ) -> Result<reqwest::Response, StoreError> {
        let mut req = self.client.get(url).headers(headers.clone());
        if let Some(h) = access.and_then(Access::header) {
            req = req.header(AUTHORIZATION, h);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        req.send().await.map_err(|e| transport_error(t, op, &e))
    }

    /// Access for a `401` with `challenge`: the configured basic credentials, or a token
    /// from the challenge's realm scoped to pulling the repository.
    async fn resolve(
        &self,
        t: &Target<'_>,
        challenge: Option<Challenge>,
        op: &str,
    ) -> Result<Access, StoreError> {
        if let RegistryAuth::Bearer(token) = &t.credentials {
            return Ok(Access::Bearer {
                token: token.clone(),
                expires: Instant::now() + CONFIGURED_TOKEN_LIFETIME,
            });
        }
        match challenge {
            Some(Challenge::Basic) | None => match &t.credentials {
                RegistryAuth::Basic(u, p) => Ok(Access::Basic {
                    username: u.clone(),
                    password: p.clone(),
                }),
                _ => Err(unauthorized(
                    t,
                    format!("{op}: the registry asks for credentials and none are configured"),
                )),
            },
            Some(Challenge::Bearer { realm, service, .. }) => {
                let scope = format!("repository:{}:pull", t.reference.repository);
                let mut query: Vec<(&str, &str)> = vec![("scope", &scope)];
                if let Some(s) = &service {
                    query.push(("service", s));
                }
                let mut req = self.client.get(&realm).query(&query);
                if let RegistryAuth::Basic(u, p) = &t.credentials {
                    req = req.basic_auth(u, Some(p));
                }
                self.requests.fetch_add(1, Ordering::Relaxed);
                let resp = req
                    .send()
                    .await
                    .map_err(|e| transport_error(t, "token request", &e))?;
                if !resp.status().is_success() {
                    return Err(unauthorized(
                        t,
                        format!("token server {realm} answered {}", resp.status()),
                    ));
                }
                let received = Instant::now();
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| transport_error(t, "token request", &e))?;
                serde_json::from_slice::<TokenResponse>(&body)
                    .ok()
                    .and_then(|tr| tr.into_access(received))
                    .ok_or_else(|| unauthorized(t, format!("token server {realm} sent no token")))
            }
        }
    }
}

fn unauthorized(t: &Target<'_>, reason: String) -> StoreError {
    StoreError::Unauthorized {
        registry: t.host.clone(),
        reference: t.reference.to_string(),
        reason,
    }
}

/// A failed request: unreachable (connect, timeout) or another transport error.
pub fn transport_error(t: &Target<'_>, op: &str, e: &reqwest::Error) -> StoreError {
    let reason = chain(e);
    if e.is_connect() || e.is_timeout() {
        StoreError::Unreachable {
            host: t.host.clone(),
            reference: t.reference.to_string(),
            reason,
        }
    } else {
        StoreError::RegistryStatus {
            reference: t.reference.to_string(),
            operation: format!("{op} at {}", t.host),
            status: None,
            reason,
        }
    }
}

/// The error for a non-success `status` (404 is [`StoreError::NotFound`]).
pub fn status_error(t: &Target<'_>, op: &str, status: StatusCode, body: &[u8]) -> StoreError {
    if status == StatusCode::NOT_FOUND {
        return StoreError::NotFound {
            reference: t.reference.to_string(),
            what: op.to_string(),
        };
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return unauthorized(t, format!("{op}: {status}"));
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
    StoreError::RegistryStatus {
        reference: t.reference.to_string(),
        operation: format!("{op} at {}", t.host),
        status: Some(status.as_u16()),
        reason: text,
    }
}

/// `Accept` with every listed media type.
pub fn accept(types: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&types.join(", ")) {
        h.insert(reqwest::header::ACCEPT, v);
    }
    h
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
