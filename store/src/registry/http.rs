//! skiff's registry HTTP client (Distribution spec `/v2/`): manifest, blob and byte-range
//! GETs, and the push requests (blob `HEAD`, upload `POST`/`PATCH`/`PUT`, cross-repository
//! mounts, manifest `PUT`), over keep-alive clients per registry with its `certs.d` CAs and
//! client certificate. Each request is one on the wire once the repository's access for
//! its scope (pull, or pull and push) is known ([`AuthCache`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};

use super::auth_cache::{Access, AuthCache, Challenge, TokenResponse};
use super::credentials::{Credential, Secret};
use super::insecure::host_of;
use super::keychain::Keychain;
use crate::reference::ImageReference;
use crate::StoreError;

/// Lifetime given to a token configured in Docker's config (`registrytoken`): it is used
/// until the registry refuses it.
const CONFIGURED_TOKEN_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The OAuth2 `client_id` skiff names itself with at token servers.
const CLIENT_ID: &str = "skiff";

/// How a registry is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain HTTP only (a mirror or origin given as `http://`).
    PlainHttp,
    /// HTTPS without certificate verification, then plain HTTP (`--insecure-registry`).
    Insecure,
    /// HTTPS, verified against the system roots and the registry's `certs.d` CAs.
    Verified,
}

/// One repository's endpoint and where its credentials come from.
pub struct Target<'a> {
    /// For errors: the reference being fetched.
    pub reference: &'a ImageReference,
    /// `host[:port]` requests go to (Docker Hub's name resolved to its API host).
    pub host: String,
    pub security: Security,
    pub keychain: &'a Keychain,
    /// Docker's `certs.d` layout, for per-registry CAs and client certificates.
    pub certs_dir: Option<&'a std::path::Path>,
}

pub struct RegistryHttp {
    user_agent: String,
    /// One keep-alive client per `(host, skip verification)`: each registry may have its
    /// own CAs and client certificate. Kept while its `certs.d` files are unchanged.
    clients: Mutex<HashMap<(String, bool), CachedClient>>,
    /// The scheme that worked for each insecure (or loopback) registry, so it is found
    /// once per daemon.
    schemes: Mutex<HashMap<String, &'static str>>,
    auth: AuthCache,
    requests: AtomicU64,
    token_requests: AtomicU64,
}

/// How often a registry's `certs.d` directory is looked at for changes.
const CERTS_RECHECK: Duration = Duration::from_secs(1);

/// A client and the `certs.d` state it was built from.
struct CachedClient {
    client: reqwest::Client,
    stamp: Vec<(std::path::PathBuf, u64, i64, i64)>,
    checked: Instant,
}

/// What a request needs of its repository; bearer tokens are asked for and cached per
/// scope (a pull token does not serve a push).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// `repository:<name>:pull`.
    Pull,
    /// `repository:<name>:pull,push`.
    Push,
    /// Push, and pull of the repository named, for a cross-repository blob mount.
    PushMountFrom(&'a str),
}

impl Scope<'_> {
    /// The [`AuthCache`] key of `repository`'s access for this scope (`:` cannot occur in
    /// repository names, so keys do not collide).
    fn key(&self, repository: &str) -> String {
        match self {
            Scope::Pull => repository.to_string(),
            Scope::Push => format!("{repository}:push"),
            Scope::PushMountFrom(from) => format!("{repository}:push:{from}"),
        }
    }

    /// The token scopes asked for (Distribution token spec `scope` parameters).
    fn token_scopes(&self, repository: &str) -> Vec<String> {
        match self {
            Scope::Pull => vec![format!("repository:{repository}:pull")],
            Scope::Push => vec![format!("repository:{repository}:pull,push")],
            Scope::PushMountFrom(from) => vec![
                format!("repository:{repository}:pull,push"),
                format!("repository:{from}:pull"),
            ],
        }
    }
}

/// Makes a request body, again for each time the request is sent (a `401` answered with
/// a fresh token, an insecure registry tried over HTTP after HTTPS).
pub type BodyFn = dyn Fn() -> Result<reqwest::Body, StoreError> + Send + Sync;

/// One request to a registry.
pub struct Request<'a> {
    pub method: Method,
    /// A path on the registry (`/v2/...`), or an absolute URL (an upload's `Location`).
    pub url: String,
    pub headers: HeaderMap,
    pub body: Option<&'a BodyFn>,
    pub scope: Scope<'a>,
    /// What is being done, for errors (`push blob`).
    pub op: &'a str,
}

impl<'a> Request<'a> {
    /// A request without body.
    pub fn new(method: Method, url: String, scope: Scope<'a>, op: &'a str) -> Request<'a> {
        Request {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            scope,
            op,
        }
    }
}

/// A token request's parameters (Distribution token spec; OAuth2 for refresh tokens).
struct TokenRequest<'a> {
    realm: &'a str,
    service: Option<&'a str>,
    /// `scope` parameters (none for a login).
    scopes: &'a [String],
    /// Ask for a refresh token too (`offline_token=true`), as `docker login` does.
    offline: bool,
}

impl RegistryHttp {
    pub fn new(user_agent: &str) -> RegistryHttp {
        RegistryHttp {
            user_agent: user_agent.to_string(),
            clients: Mutex::new(HashMap::new()),
            schemes: Mutex::new(HashMap::new()),
            auth: AuthCache::default(),
            requests: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
        }
    }

    /// The client for `host` (`host[:port]`), with its `certs.d` CAs and client
    /// certificate; `skip_verify` for insecure registries. The directory is looked at
    /// again at most every [`CERTS_RECHECK`]: a CA or client certificate added, changed
    /// or removed applies to the next connections without a restart (dockerd reads
    /// certs.d per pull).
    fn client(
        &self,
        t: &Target<'_>,
        host: &str,
        skip_verify: bool,
    ) -> Result<reqwest::Client, StoreError> {
        let key = (host.to_string(), skip_verify);
        let now = Instant::now();
        let mut stamp = None;
        if let Some(c) = self.clients.lock().expect("clients").get_mut(&key) {
            if now.duration_since(c.checked) < CERTS_RECHECK {
                return Ok(c.client.clone());
            }
            let current = t
                .certs_dir
                .map(|d| super::tls::stamp(d, host))
                .unwrap_or_default();
            if current == c.stamp {
                c.checked = now;
                return Ok(c.client.clone());
            }
            tracing::info!(registry = %host, "certs.d changed: new connections use its files");
            stamp = Some(current);
        }
        let stamp = stamp.unwrap_or_else(|| {
            t.certs_dir
                .map(|d| super::tls::stamp(d, host))
                .unwrap_or_default()
        });
        let mut b = reqwest::Client::builder()
            .user_agent(&self.user_agent)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(dir) = t.certs_dir {
            let certs = super::tls::load(dir, host)?;
            b = b.tls_certs_merge(certs.cas);
            if let Some(id) = certs.identity {
                b = b.identity(id);
            }
        }
        if skip_verify {
            b = b.tls_danger_accept_invalid_certs(true);
        }
        let client = b.build().map_err(|e| StoreError::TlsConfig {
            path: t
                .certs_dir
                .map(|d| super::tls::host_dir(d, host))
                .unwrap_or_default(),
            reason: chain(&e),
        })?;
        self.clients.lock().expect("clients").insert(
            key,
            CachedClient {
                client: client.clone(),
                stamp,
                checked: now,
            },
        );
        Ok(client)
    }

    /// The scheme requests to `t` use now: `http`, `https`, or for an insecure registry
    /// the one that worked last (HTTPS until it failed).
    pub fn scheme(&self, t: &Target<'_>) -> &'static str {
        match t.security {
            Security::PlainHttp => "http",
            Security::Verified => "https",
            Security::Insecure => self
                .schemes
                .lock()
                .expect("schemes")
                .get(&t.host)
                .copied()
                .unwrap_or("https"),
        }
    }

    /// `scheme://host<url>` for the registry itself (or `url` as is when absolute): an
    /// insecure registry that fails over HTTPS is tried over HTTP, and the scheme that
    /// worked is kept.
    async fn send_registry(
        &self,
        t: &Target<'_>,
        req: &Request<'_>,
        access: Option<&Access>,
    ) -> Result<reqwest::Response, StoreError> {
        if req.url.starts_with("https://") || req.url.starts_with("http://") {
            let skip = t.security == Security::Insecure;
            return self.send(t, &req.url, skip, req, access).await;
        }
        let scheme = self.scheme(t);
        let url = format!("{scheme}://{}{}", t.host, req.url);
        let skip = t.security == Security::Insecure;
        let unknown = skip && !self.schemes.lock().expect("schemes").contains_key(&t.host);
        let anonymous = access.and_then(Access::header).is_none() && req.body.is_none();
        if unknown && anonymous {
            return self.send_either_scheme(t, req, access).await;
        }
        match self.send(t, &url, skip, req, access).await {
            Err(e) if skip && scheme == "https" => {
                // The failed handshake was no HTTP request: not counted.
                self.requests.fetch_sub(1, Ordering::Relaxed);
                let url = format!("http://{}{}", t.host, req.url);
                let resp = self
                    .send(t, &url, false, req, access)
                    .await
                    .map_err(|_| e)?;
                tracing::info!(registry = %t.host, "insecure registry: HTTPS failed, using plain HTTP");
                self.remember_scheme(&t.host, "http");
                Ok(resp)
            }
            r => r,
        }
    }

    /// The first request to an insecure registry whose scheme is not known yet: sent over
    /// HTTPS and plain HTTP at once, so a registry that only speaks HTTP costs one round
    /// trip, not a failed handshake and then a second connection. HTTPS is preferred: the
    /// HTTP answer is used only once the handshake has failed. Only for requests without
    /// credentials or body, so no secret crosses the wire unencrypted when HTTPS works.
    async fn send_either_scheme(
        &self,
        t: &Target<'_>,
        req: &Request<'_>,
        access: Option<&Access>,
    ) -> Result<reqwest::Response, StoreError> {
        let https_url = format!("https://{}{}", t.host, req.url);
        let http_url = format!("http://{}{}", t.host, req.url);
        let https = self.send(t, &https_url, true, req, access);
        let http = self.send(t, &http_url, false, req, access);
        tokio::pin!(https, http);
        let mut plain = None;
        let secure = loop {
            tokio::select! {
                r = &mut https => break r,
                r = &mut http, if plain.is_none() => plain = Some(r),
            }
        };
        match secure {
            Ok(resp) => {
                self.remember_scheme(&t.host, "https");
                Ok(resp)
            }
            Err(e) => {
                // The failed handshake was no HTTP request: not counted.
                self.requests.fetch_sub(1, Ordering::Relaxed);
                let plain = match plain {
                    Some(r) => r,
                    None => http.await,
                };
                let resp = plain.map_err(|_| e)?;
                tracing::info!(registry = %t.host, "insecure registry: HTTPS failed, using plain HTTP");
                self.remember_scheme(&t.host, "http");
                Ok(resp)
            }
        }
    }

    /// Keeps the scheme an insecure registry answered on, for the daemon's lifetime.
    fn remember_scheme(&self, host: &str, scheme: &'static str) {
        self.schemes
            .lock()
            .expect("schemes")
            .insert(host.to_string(), scheme);
    }

    /// HTTP requests sent by this client (token requests included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests sent to token servers.
    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::Relaxed)
    }

    /// `GET /v2/<repository>/<path>` with `headers`, with pull access (see
    /// [`RegistryHttp::request`]).
    pub async fn get(
        &self,
        t: &Target<'_>,
        path: &str,
        headers: HeaderMap,
        op: &str,
    ) -> Result<reqwest::Response, StoreError> {
        let mut req = Request::new(
            Method::GET,
            format!("/v2/{}/{path}", t.reference.repository),
            Scope::Pull,
            op,
        );
        req.headers = headers;
        self.request(t, &req).await
    }

    /// Sends `req`, authenticated as `t`'s repository needs for `req.scope`.
    ///
    /// A bearer token close to expiry is renewed before the request goes out; a `401`
    /// resolves access afresh (token or basic) and the request is sent once more (its body
    /// made again); a second `401`/`403` is [`StoreError::Unauthorized`], naming the
    /// credentials' source. Other statuses are returned for the caller to judge.
    pub async fn request(
        &self,
        t: &Target<'_>,
        req: &Request<'_>,
    ) -> Result<reqwest::Response, StoreError> {
        let repo = &t.reference.repository;
        let key = req.scope.key(repo);
        let op = req.op;
        // Inside a client's request: the access resolved with its own credentials, or
        // daemon-wide access only when the registry asked for none.
        let mut access = match super::request_auth::request_access(&t.host, &key) {
            Some(own) => own.or_else(|| {
                self.auth
                    .get_any(&t.host, &key)
                    .filter(|a| *a == Access::Open)
            }),
            None => self.auth.get_any(&t.host, &key),
        };
        if let Some(stale) = access.clone().filter(|a| !a.usable(Instant::now())) {
            // Expired: renew ahead with the challenge the registry gave last time.
            access = match self.auth.challenge(&t.host) {
                Some(c) => Some(self.renew(t, req.scope, Some(&stale), Some(c), op).await?),
                None => None,
            };
        }
        let resp = self.send_registry(t, req, access.as_ref()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            if access.is_none() {
                self.auth.put(&t.host, &key, Access::Open);
            }
            return Ok(resp);
        }
        // Refused: the token expired or was revoked, or access was never resolved.
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .and_then(Challenge::parse);
        let fresh = self
            .renew(t, req.scope, access.as_ref(), challenge, op)
            .await?;
        let resp = self.send_registry(t, req, Some(&fresh)).await?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            self.auth.invalidate(&t.host, &key);
            let cred = t
                .keychain
                .lookup(&t.reference.registry, repo)
                .await
                .map(|c| c.describe())
                .unwrap_or_else(|e| e.to_string());
            return Err(unauthorized(
                t,
                format!(
                    "{op}: {} again after access was renewed (credentials tried: {cred})",
                    resp.status()
                ),
            ));
        }
        Ok(resp)
    }

    /// Sends `req` to `url`. The `Authorization` header goes only to the registry's own
    /// host (an upload `Location` elsewhere, e.g. object storage, gets none).
    async fn send(
        &self,
        t: &Target<'_>,
        url: &str,
        skip_verify: bool,
        req: &Request<'_>,
        access: Option<&Access>,
    ) -> Result<reqwest::Response, StoreError> {
        let url_host = url_host(url);
        let own_host = host_of(&url_host) == host_of(&t.host);
        // certs.d is looked up under the registry's name as written (`host:port`).
        let client_host = if own_host { t.host.clone() } else { url_host };
        let mut sent = self
            .client(t, &client_host, skip_verify)?
            .request(req.method.clone(), url)
            .headers(req.headers.clone());
        if let Some(body) = req.body {
            sent = sent.body(body()?);
        }
        if let Some(h) = access.and_then(Access::header).filter(|_| own_host) {
            sent = sent.header(AUTHORIZATION, h);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        sent.send()
            .await
            .map_err(|e| transport_error(t, req.op, &e))
    }

    /// New access for `t`'s repository and `scope` in place of `refused` (what was sent,
    /// if anything), one renewal at a time: a task that waited on another's renewal takes
    /// its result.
    async fn renew(
        &self,
        t: &Target<'_>,
        scope: Scope<'_>,
        refused: Option<&Access>,
        challenge: Option<Challenge>,
        op: &str,
    ) -> Result<Access, StoreError> {
        let key = scope.key(&t.reference.repository);
        let lock = self.auth.renewal_lock(&t.host, &key);
        let _renewing = lock.lock().await;
        let in_request = super::request_auth::request_secret().is_some();
        if !in_request {
            if let Some(current) = self.auth.get(&t.host, &key) {
                if Some(&current) != refused && current != Access::Open {
                    return Ok(current);
                }
            }
        }
        if let Some(c @ Challenge::Bearer { .. }) = &challenge {
            self.auth.set_challenge(&t.host, c.clone());
        }
        let refresh = refused.and_then(Access::refresh_token).map(str::to_string);
        match self.resolve(t, scope, challenge, refresh, op).await {
            Ok(access) => {
                super::request_auth::keep_request_access(&t.host, &key, &access);
                self.auth.put(&t.host, &key, access.clone());
                Ok(access)
            }
            Err(e) => {
                self.auth.invalidate(&t.host, &key);
                Err(e)
            }
        }
    }

    /// Access for a `401` with `challenge`: the credentials' basic auth, or a token from
    /// the challenge's realm for `scope` on the repository (by refresh token when one is
    /// known, else with the credentials, else anonymously).
    async fn resolve(
        &self,
        t: &Target<'_>,
        scope: Scope<'_>,
        challenge: Option<Challenge>,
        refresh: Option<String>,
        op: &str,
    ) -> Result<Access, StoreError> {
        let cred = t
            .keychain
            .lookup(&t.reference.registry, &t.reference.repository)
            .await?;
        if let Secret::RegistryToken(token) = &cred.secret {
            return Ok(Access::Bearer {
                token: token.clone(),
                expires: Instant::now() + CONFIGURED_TOKEN_LIFETIME,
                refresh_token: None,
            });
        }
        match challenge {
            Some(Challenge::Basic) | None => match &cred.secret {
                Secret::Basic { username, password } => Ok(Access::Basic {
                    username: username.clone(),
                    password: password.clone(),
                }),
                _ => Err(unauthorized(
                    t,
                    format!(
                        "{op}: the registry asks for a user name and password and {} has none",
                        cred.source
                    ),
                )),
            },
            Some(Challenge::Bearer { realm, service, .. }) => {
                let scopes = scope.token_scopes(&t.reference.repository);
                let req = TokenRequest {
                    realm: &realm,
                    service: service.as_deref(),
                    scopes: &scopes,
                    offline: false,
                };
                self.token(t, &req, &cred, refresh)
                    .await
                    .map(|(access, _)| access)
            }
        }
    }

    /// A token from `req.realm`: by OAuth2 refresh (`refresh`, or the credential's
    /// identity token) when there is one, falling back to the credential's password when
    /// the refresh is refused; else by GET with basic auth (or anonymously).
    async fn token(
        &self,
        t: &Target<'_>,
        req: &TokenRequest<'_>,
        cred: &Credential,
        refresh: Option<String>,
    ) -> Result<(Access, Option<String>), StoreError> {
        let refresh = refresh.or_else(|| match &cred.secret {
            Secret::IdentityToken { token, .. } => Some(token.clone()),
            _ => None,
        });
        if let Some(rt) = refresh {
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", rt.as_str()),
                ("client_id", CLIENT_ID),
            ];
            if let Some(s) = req.service {
                form.push(("service", s));
            }
            // OAuth2: one space-separated `scope`.
            let joined = req.scopes.join(" ");
            if !joined.is_empty() {
                form.push(("scope", &joined));
            }
            let sent = self
                .client(t, &url_host(req.realm), false)?
                .post(req.realm)
                .form(&form);
            match self
                .token_exchange(t, req, cred, sent, "refresh token")
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) if !matches!(cred.secret, Secret::Basic { .. }) => return Err(e),
                Err(e) => {
                    tracing::info!(registry = %t.host, "refresh token refused ({e}); asking with the password");
                }
            }
        }
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = req.service {
            query.push(("service", s));
        }
        for s in req.scopes {
            query.push(("scope", s));
        }
        let mut sent = self.client(t, &url_host(req.realm), false)?.get(req.realm);
        if let Secret::Basic { username, password } = &cred.secret {
            query.push(("account", username));
            sent = sent.basic_auth(username, Some(password));
        }
        if req.offline {
            query.push(("offline_token", "true"));
            query.push(("client_id", CLIENT_ID));
        }
        self.token_exchange(t, req, cred, sent.query(&query), "password")
            .await
    }

    /// Sends a token request and reads the answer: `(access, refresh token)`.
    async fn token_exchange(
        &self,
        t: &Target<'_>,
        req: &TokenRequest<'_>,
        cred: &Credential,
        sent: reqwest::RequestBuilder,
        how: &str,
    ) -> Result<(Access, Option<String>), StoreError> {
        let realm = req.realm;
        let scope = if req.scopes.is_empty() {
            "(none)".to_string()
        } else {
            req.scopes.join(" ")
        };
        let op = format!("token request to {realm} for {scope}");
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let resp = sent.send().await.map_err(|e| {
            let mut err = transport_error(t, &op, &e);
            if let StoreError::Unreachable { host, .. } = &mut err {
                *host = format!("token server {realm}");
            }
            err
        })?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(unauthorized(
                t,
                format!(
                    "token server {realm} refused {} ({how}) for {scope}: {status}",
                    cred.describe()
                ),
            ));
        }
        if !status.is_success() {
            // The body is not echoed: a token server may reflect what it was sent.
            return Err(StoreError::RegistryStatus {
                reference: t.reference.to_string(),
                operation: op,
                status: Some(status.as_u16()),
                reason: "the token server did not issue a token".to_string(),
            });
        }
        let received = Instant::now();
        let body = resp
            .bytes()
            .await
            .map_err(|e| transport_error(t, &op, &e))?;
        let parsed = serde_json::from_slice::<TokenResponse>(&body).ok();
        let refresh = parsed.as_ref().and_then(|p| p.refresh_token.clone());
        let access = parsed
            .and_then(|tr| tr.into_access(received))
            .ok_or_else(|| StoreError::RegistryStatus {
                reference: t.reference.to_string(),
                operation: op,
                status: None,
                reason: "the answer is not a token response (JSON with token or access_token)"
                    .to_string(),
            })?;
        Ok((access, refresh))
    }

    /// Checks `cred` against the registry at `scheme://host` as `docker login` does: `GET
    /// /v2/`, then the token server its challenge names (asking for a refresh token) or
    /// basic auth. Returns the refresh token the server issued (Docker's identity token).
    pub async fn login(
        &self,
        t: &Target<'_>,
        cred: &Credential,
    ) -> Result<Option<String>, StoreError> {
        let op = "login";
        let probe = Request::new(Method::GET, "/v2/".to_string(), Scope::Pull, op);
        let resp = self.send_registry(t, &probe, None).await?;
        if resp.status().is_success() {
            return Ok(None);
        }
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Err(status_error(t, op, resp.status(), b""));
        }
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .and_then(Challenge::parse);
        match challenge {
            Some(Challenge::Bearer { realm, service, .. }) => {
                let req = TokenRequest {
                    realm: &realm,
                    service: service.as_deref(),
                    scopes: &[],
                    offline: true,
                };
                let (_, refresh) = self.token(t, &req, cred, None).await?;
                Ok(refresh)
            }
            _ => {
                let access = match &cred.secret {
                    Secret::Basic { username, password } => Access::Basic {
                        username: username.clone(),
                        password: password.clone(),
                    },
                    _ => {
                        return Err(unauthorized(
                            t,
                            format!(
                            "login: the registry asks for a user name and password and {} has none",
                            cred.source
                        ),
                        ))
                    }
                };
                let resp = self.send_registry(t, &probe, Some(&access)).await?;
                if resp.status().is_success() {
                    Ok(None)
                } else {
                    Err(unauthorized(
                        t,
                        format!("login: {} with {}", resp.status(), cred.describe()),
                    ))
                }
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

/// `host[:port]` of `url` (as `certs.d` names registries).
fn url_host(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        },
        Err(_) => String::new(),
    }
}

/// A failed request: a TLS failure (with a reason a person can act on), unreachable
/// (connect, timeout), or another transport error.
pub fn transport_error(t: &Target<'_>, op: &str, e: &reqwest::Error) -> StoreError {
    let reason = chain(e);
    if let Some(why) = super::tls::explain(&reason, &t.host, t.certs_dir) {
        return StoreError::Tls {
            host: t.host.clone(),
            reference: t.reference.to_string(),
            reason: why,
        };
    }
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
        let why = error_envelope(body)
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return unauthorized(t, format!("{op}: {status}{why}"));
    }
    let text = error_envelope(body)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
    StoreError::RegistryStatus {
        reference: t.reference.to_string(),
        operation: format!("{op} at {}", t.host),
        status: Some(status.as_u16()),
        reason: text,
    }
}

/// The Distribution spec's error body (`{"errors":[{"code","message"}]}`) as `CODE:
/// message; ...`; `None` for another body.
fn error_envelope(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let env: Envelope = serde_json::from_slice(body).ok()?;
    let text = env
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.code, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    (!text.is_empty()).then_some(text)
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
