//! A small token server for Distribution's token authentication (the spec docker-registry
//! implements with `auth: token: realm/service/issuer/rootcertbundle`), on a free loopback
//! port, for tests of bearer-token registries.
//!
//! It issues ES256 JWTs signed by a fresh key whose self-signed certificate is written to
//! [`TokenServer::cert_bundle`] (the registry's `rootcertbundle`) and carried in each
//! token's `x5c` header; claims `iss` = [`ISSUER`], `aud` = [`SERVICE`], an `access` list
//! for the requested scopes. `GET /token` (basic auth or anonymous; `offline_token=true`
//! adds a `refresh_token`) and `POST /token` (OAuth2 `grant_type=refresh_token|password`)
//! as Docker's clients use them. Tests change its behaviour while it runs (lifetimes,
//! faults) and read its counters.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

/// The registry's `service` (the tokens' audience).
pub const SERVICE: &str = "skiff-test-registry";
/// The tokens' issuer.
pub const ISSUER: &str = "skiff-test-token-server";
/// Distribution accepts a token this long after its `exp` (clock skew leeway).
const REGISTRY_LEEWAY_SECS: i64 = 60;

/// How the server answers token requests, for fault tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// `500` to every token request.
    Error,
    /// `200` with a body that is not JSON.
    Garbage,
    /// Tokens granting access to another repository than the one asked for.
    WrongScope,
}

/// What one request asked for and got, for assertions.
#[derive(Debug, Clone)]
pub struct Issued {
    /// `password`, `refresh_token` or `anonymous`.
    pub grant: String,
    pub user: Option<String>,
    pub scopes: Vec<String>,
    pub status: u16,
}

struct Shared {
    key: jsonwebtoken::EncodingKey,
    cert_b64: String,
    users: Mutex<HashMap<String, String>>,
    /// Anonymous requests get `pull` on every repository.
    anonymous_pull: Mutex<bool>,
    /// How long the registry accepts a token (seconds).
    valid_secs: AtomicU64,
    /// The `expires_in` told to clients; `0` = the same as `valid_secs`.
    reported_secs: AtomicU64,
    mode: Mutex<Mode>,
    refresh_tokens: Mutex<HashMap<String, String>>,
    issued: Mutex<Vec<Issued>>,
    /// Every token (and refresh token) issued, to check no secret leaks into logs.
    secrets: Mutex<Vec<String>>,
}

pub struct TokenServer {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    /// Starts a server granting `users` (name, password) every action they ask for;
    /// anonymous requests get nothing until [`Self::set_anonymous_pull`].
    pub fn start(users: &[(&str, &str)]) -> Result<TokenServer> {
        let dir = tempfile::Builder::new()
            .prefix("skiff-token-server-")
            .tempdir()?;
        let ck = rcgen::generate_simple_self_signed(vec!["skiff-test-token-signer".to_string()])
            .context("making the token signing certificate")?;
        std::fs::write(dir.path().join("signer.pem"), ck.cert.pem())?;
        let key = jsonwebtoken::EncodingKey::from_ec_pem(ck.signing_key.serialize_pem().as_bytes())
            .context("loading the signing key")?;
        let shared = Arc::new(Shared {
            key,
            cert_b64: base64::engine::general_purpose::STANDARD.encode(ck.cert.der()),
            users: Mutex::new(
                users
                    .iter()
                    .map(|(u, p)| (u.to_string(), p.to_string()))
                    .collect(),
            ),
            anonymous_pull: Mutex::new(false),
            valid_secs: AtomicU64::new(300),
            reported_secs: AtomicU64::new(0),
            mode: Mutex::new(Mode::Normal),
            refresh_tokens: Mutex::new(HashMap::new()),
            issued: Mutex::new(Vec::new()),
            secrets: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .route("/token", axum::routing::get(get_token).post(post_token))
            .with_state(shared.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("token server runtime");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("token server listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        Ok(TokenServer {
            addr,
            dir,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT/token`, the registry's `realm`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The PEM certificate the registry must trust (`rootcertbundle`).
    pub fn cert_bundle(&self) -> PathBuf {
        self.dir.path().join("signer.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Lets anonymous requests pull every repository (as public images are).
    pub fn set_anonymous_pull(&self, on: bool) {
        *self.shared.anonymous_pull.lock().unwrap() = on;
    }

    /// Tokens issued from now on are accepted by the registry for `valid` seconds and
    /// announced to clients with `expires_in` = `reported` (`None`: the same).
    pub fn set_lifetime(&self, valid: u64, reported: Option<u64>) {
        self.shared.valid_secs.store(valid, Ordering::SeqCst);
        self.shared
            .reported_secs
            .store(reported.unwrap_or(0), Ordering::SeqCst);
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Every request answered so far.
    pub fn issued(&self) -> Vec<Issued> {
        self.shared.issued.lock().unwrap().clone()
    }

    /// Every token and refresh token handed out (to grep logs for them).
    pub fn secrets(&self) -> Vec<String> {
        self.shared.secrets.lock().unwrap().clone()
    }

    /// Forgets every refresh token issued (as a revoked session).
    pub fn revoke_refresh_tokens(&self) {
        self.shared.refresh_tokens.lock().unwrap().clear();
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn basic_user(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn random_token() -> String {
    use rand::Rng as _;
    let bytes: [u8; 24] = rand::thread_rng().gen();
    hex::encode_upper(bytes)
}

/// `repository:NAME:a,b` → the access claim entry, granting what the policy allows.
fn access_for(
    scope: &str,
    user: Option<&str>,
    anonymous_pull: bool,
    mode: Mode,
) -> serde_json::Value {
    let mut parts = scope.splitn(3, ':');
    let (typ, name, actions) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    // Names may hold a port (`host:5000/x` is not used here); the last field is actions.
    let granted: Vec<&str> = actions
        .split(',')
        .filter(|a| !a.is_empty())
        .filter(|a| user.is_some() || (anonymous_pull && *a == "pull"))
        .collect();
    let name = if mode == Mode::WrongScope {
        format!("{name}-other")
    } else {
        name.to_string()
    };
    serde_json::json!({"type": typ, "name": name, "actions": granted})
}

impl Shared {
    fn record(&self, grant: &str, user: Option<&str>, scopes: &[String], status: u16) {
        self.issued.lock().unwrap().push(Issued {
            grant: grant.to_string(),
            user: user.map(str::to_string),
            scopes: scopes.to_vec(),
            status,
        });
    }

    /// The token response for `user` (None: anonymous) and `scopes`.
    fn issue(&self, user: Option<&str>, scopes: &[String], offline: bool) -> Response {
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Error => {
                return (StatusCode::INTERNAL_SERVER_ERROR, "token service broken").into_response()
            }
            Mode::Garbage => return (StatusCode::OK, "<html>not a token</html>").into_response(),
            _ => {}
        }
        let anonymous_pull = *self.anonymous_pull.lock().unwrap();
        let valid = self.valid_secs.load(Ordering::SeqCst) as i64;
        let reported = match self.reported_secs.load(Ordering::SeqCst) {
            0 => valid as u64,
            r => r,
        };
        let t = now();
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": user.unwrap_or(""),
            "aud": SERVICE,
            // The registry adds a leeway to exp: take it off so `valid` is what it accepts.
            "exp": t + valid - REGISTRY_LEEWAY_SECS,
            "nbf": t - 1,
            "iat": t,
            "jti": random_token(),
            "access": scopes.iter().map(|s| access_for(s, user, anonymous_pull, mode)).collect::<Vec<_>>(),
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.x5c = Some(vec![self.cert_b64.clone()]);
        let token = jsonwebtoken::encode(&header, &claims, &self.key).expect("signing a token");
        self.secrets.lock().unwrap().push(token.clone());
        let mut body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": reported,
            "issued_at": chrono_like(t),
        });
        if let (true, Some(u)) = (offline, user) {
            let rt = random_token();
            self.refresh_tokens
                .lock()
                .unwrap()
                .insert(rt.clone(), u.to_string());
            self.secrets.lock().unwrap().push(rt.clone());
            body["refresh_token"] = rt.into();
        }
        axum::Json(body).into_response()
    }

    fn check_password(&self, user: &str, password: &str) -> bool {
        self.users.lock().unwrap().get(user).map(String::as_str) == Some(password)
    }
}

/// RFC 3339 of unix seconds `t` (UTC), without a date crate.
fn chrono_like(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

async fn get_token(
    State(s): State<Arc<Shared>>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let scopes: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string))
        .collect();
    let offline = q.iter().any(|(k, v)| k == "offline_token" && v == "true");
    match basic_user(&headers) {
        Some((u, p)) => {
            if !s.check_password(&u, &p) {
                s.record("password", Some(&u), &scopes, 401);
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(serde_json::json!({"details": "incorrect username or password"})),
                )
                    .into_response();
            }
            s.record("password", Some(&u), &scopes, 200);
            s.issue(Some(&u), &scopes, offline)
        }
        None => {
            s.record("anonymous", None, &scopes, 200);
            s.issue(None, &scopes, false)
        }
    }
}

async fn post_token(
    State(s): State<Arc<Shared>>,
    axum::Form(form): axum::Form<Vec<(String, String)>>,
) -> Response {
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let scopes: Vec<String> = get("scope")
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    match get("grant_type").as_str() {
        "refresh_token" => {
            let rt = get("refresh_token");
            let user = s.refresh_tokens.lock().unwrap().get(&rt).cloned();
            match user {
                Some(u) => {
                    s.record("refresh_token", Some(&u), &scopes, 200);
                    let resp = s.issue(Some(&u), &scopes, false);
                    // Keep the same refresh token (offline sessions last).
                    resp
                }
                None => {
                    s.record("refresh_token", None, &scopes, 401);
                    (
                        StatusCode::UNAUTHORIZED,
                        axum::Json(serde_json::json!({"error": "invalid_grant"})),
                    )
                        .into_response()
                }
            }
        }
        "password" => {
            let (u, p) = (get("username"), get("password"));
            if !s.check_password(&u, &p) {
                s.record("password", Some(&u), &scopes, 401);
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(serde_json::json!({"error": "invalid_grant"})),
                )
                    .into_response();
            }
            s.record("password", Some(&u), &scopes, 200);
            s.issue(Some(&u), &scopes, get("access_type") == "offline")
        }
        _ => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": "unsupported_grant_type"})),
        )
            .into_response(),
    }
}
