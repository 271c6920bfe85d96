//! skiff's registry client: manifests (OCI, Docker v2s2, indexes resolved to the host
//! platform), verified blob streams, byte ranges of blobs, and pushes, all over
//! [`http::RegistryHttp`] (Distribution spec `/v2/`).
//!
//! Loopback registries and those listed as insecure (by `host[:port]` or CIDR,
//! [`insecure`]) get HTTPS without verification, then plain HTTP if that fails (the
//! scheme that worked kept per registry); others verified HTTPS with the system roots and
//! the registry's `certs.d` CAs and client certificate. Credentials come from what clients
//! sent with a pull or push (remembered per repository) or from Docker's `config.json`
//! and its credential helpers ([`keychain`]). Access is resolved once per repository and
//! scope and cached until its token expires ([`auth_cache`]), so a range fetch is one
//! request.

pub mod auth_cache;
pub mod credentials;
mod endpoints;
mod http;
pub mod insecure;
pub mod keychain;
pub mod manifest;
mod push;
pub use push::BlobPushed;
pub mod referrers;
pub mod request_auth;
pub mod tls;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest as _, Sha256};

use crate::content::sha256_digest;
use crate::reference::ImageReference;
use crate::{Result, StoreError};
pub use credentials::{Credential, Secret};
pub use endpoints::parse_endpoint_url;
use endpoints::{endpoint_of, Endpoint, MIRROR_RETRY_AFTER};
pub use manifest::{Descriptor, ImageIndex, ImageManifest, Platform};

#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries spoken to without TLS verification, then over plain HTTP, even though
    /// not on loopback: `host[:port]` entries and CIDRs (`10.0.0.0/8`) of their
    /// addresses ([`insecure`]).
    pub insecure_registries: Vec<String>,
    /// Docker config file for credentials; `None` = `$DOCKER_CONFIG` or `~/.docker`.
    pub docker_config: Option<PathBuf>,
    /// Mirrors of Docker Hub (`http[s]://host[:port]`), tried in order before it for
    /// reads of `docker.io` images.
    pub registry_mirrors: Vec<String>,
    /// Where `docker.io` itself is reached (`http[s]://host[:port]`); `None` = Docker
    /// Hub. For tests, which cannot reach Docker Hub.
    pub docker_hub_origin: Option<String>,
    /// Docker's `certs.d` layout: `<dir>/<host[:port]>/*.crt` CAs and `*.cert`/`*.key`
    /// client pairs per registry; `None` = system roots only.
    pub certs_dir: Option<PathBuf>,
    /// Where credentials clients sent with pulls are kept across restarts (mode 0600);
    /// `None` keeps them in memory only.
    pub credentials_file: Option<PathBuf>,
    /// The platform picked from multi-arch indexes; `None` = this host's.
    pub platform: Option<Platform>,
}

/// A manifest resolved to one platform, with its config.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The reference pinned to the platform manifest's digest.
    pub reference: ImageReference,
    pub manifest: ImageManifest,
    pub manifest_bytes: Bytes,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    /// The digest of the index the manifest was picked from, if any.
    pub index_digest: Option<String>,
    pub config_bytes: Bytes,
}

/// Cheap to clone (shared state behind an `Arc`); safe to use from many tasks.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    opts: RegistryOptions,
    keychain: keychain::Keychain,
    insecure: insecure::InsecureRegistries,
    mirrors: Vec<Endpoint>,
    hub_origin: Option<Endpoint>,
    mirror_down: Mutex<HashMap<String, std::time::Instant>>,
    platform: Platform,
    http: http::RegistryHttp,
    downloaded: AtomicU64,
}

impl RegistryClient {
    /// A client for `opts`; mirror and origin URLs and insecure-registry entries that do
    /// not parse are an error naming them.
    pub fn try_new(opts: RegistryOptions) -> Result<RegistryClient> {
        let insecure = insecure::InsecureRegistries::parse(&opts.insecure_registries)?;
        let mirrors = opts
            .registry_mirrors
            .iter()
            .map(|m| endpoint_of(m, &insecure, true))
            .collect::<Result<Vec<_>>>()?;
        let hub_origin = opts
            .docker_hub_origin
            .as_deref()
            .map(|o| endpoint_of(o, &insecure, false))
            .transpose()?;
        let mut c = RegistryClient::new(opts);
        let inner = Arc::get_mut(&mut c.inner).expect("just made");
        inner.insecure = insecure;
        inner.mirrors = mirrors;
        inner.hub_origin = hub_origin;
        Ok(c)
    }

    /// A client for `opts` without mirrors (see [`RegistryClient::try_new`], which also
    /// refuses insecure-registry entries that do not parse; here they are logged and left
    /// out).
    pub fn new(opts: RegistryOptions) -> RegistryClient {
        let insecure = insecure::InsecureRegistries::parse(&opts.insecure_registries)
            .unwrap_or_else(|e| {
                tracing::error!("insecure registries left out: {e}");
                Default::default()
            });
        let docker_config = opts
            .docker_config
            .clone()
            .or_else(credentials::default_docker_config);
        let keychain = keychain::Keychain::new(docker_config, opts.credentials_file.clone());
        let platform = opts
            .platform
            .clone()
            .unwrap_or_else(manifest::host_platform);
        RegistryClient {
            inner: Arc::new(Inner {
                opts,
                keychain,
                insecure,
                mirrors: Vec::new(),
                hub_origin: None,
                mirror_down: Mutex::new(HashMap::new()),
                platform,
                http: http::RegistryHttp::new(concat!("skiff/", env!("CARGO_PKG_VERSION"))),
                downloaded: AtomicU64::new(0),
            }),
        }
    }

    /// How `r`'s registry is spoken to: HTTPS without verification then plain HTTP for
    /// loopback registries and those listed as insecure, by name or by a CIDR holding
    /// its address (dockerd counts 127.0.0.0/8 and `localhost` as insecure: moby's
    /// `registry.isSecureIndex`), verified HTTPS otherwise.
    fn security(&self, r: &ImageReference) -> http::Security {
        if r.is_loopback() || self.inner.insecure.covers(&r.registry) {
            http::Security::Insecure
        } else {
            http::Security::Verified
        }
    }

    /// Total bytes received from registries (blobs, ranges, manifests) by this client.
    pub fn bytes_downloaded(&self) -> u64 {
        self.inner.downloaded.load(Ordering::Relaxed)
    }

    /// HTTP requests sent on the read path (manifests, blobs, ranges, token requests).
    pub fn read_requests(&self) -> u64 {
        self.inner.http.requests()
    }

    /// Requests sent to token servers by the read path.
    pub fn token_requests(&self) -> u64 {
        self.inner.http.token_requests()
    }

    /// Keeps `secret` (as a client sent it with a pull or push of `r`) for later requests
    /// to `r`'s repository: lazy reads, prefetch and token renewals hours later.
    pub fn remember_credentials(&self, r: &ImageReference, secret: Secret) {
        self.inner
            .keychain
            .remember(&r.registry, &r.repository, secret);
    }

    /// Forgets `secret` for `r`'s repository if it is what was kept (the registry refused
    /// it).
    pub fn forget_credentials(&self, r: &ImageReference, secret: &Secret) {
        self.inner
            .keychain
            .forget(&r.registry, &r.repository, secret);
    }

    /// Checks `cred` against `registry` (`host[:port]`, or `docker.io`) as `docker login`
    /// does; returns the identity (refresh) token the registry issued, if any.
    pub async fn login(&self, registry: &str, cred: &Credential) -> Result<Option<String>> {
        let r = ImageReference::parse(&format!("{registry}/skiff-login"))?;
        let t = self.target(&r);
        self.inner.http.login(&t, cred).await
    }

    fn count(&self, n: u64) {
        self.inner.downloaded.fetch_add(n, Ordering::Relaxed);
    }

    /// `r`'s registry itself (pushes and logins go there), with its credentials.
    fn target<'a>(&'a self, r: &'a ImageReference) -> http::Target<'a> {
        let ep = self.origin(r);
        self.target_at(r, &ep)
    }

    fn target_at<'a>(&'a self, r: &'a ImageReference, ep: &Endpoint) -> http::Target<'a> {
        http::Target {
            reference: r,
            host: ep.host.clone(),
            security: ep.security,
            keychain: &self.inner.keychain,
            certs_dir: self.inner.opts.certs_dir.as_deref(),
        }
    }

    /// `r`'s registry as an endpoint (Docker Hub's API host, or the configured origin).
    fn origin(&self, r: &ImageReference) -> Endpoint {
        if r.registry == crate::reference::DEFAULT_REGISTRY {
            if let Some(o) = &self.inner.hub_origin {
                return o.clone();
            }
        }
        Endpoint {
            host: r.api_host().to_string(),
            security: self.security(r),
            mirror: false,
        }
    }

    /// Where reads of `r` are tried, in order: Docker Hub's mirrors (those not found
    /// failing lately) for `docker.io` images, then the registry itself.
    fn endpoints(&self, r: &ImageReference) -> Vec<Endpoint> {
        let mut out = Vec::new();
        if r.registry == crate::reference::DEFAULT_REGISTRY {
            let down = self.inner.mirror_down.lock().expect("mirror_down");
            let now = std::time::Instant::now();
            out.extend(
                self.inner
                    .mirrors
                    .iter()
                    .filter(|m| down.get(&m.host).is_none_or(|until| *until <= now))
                    .cloned(),
            );
        }
        out.push(self.origin(r));
        out
    }

    /// Runs `f` against each endpoint of `r` until one answers: a mirror's failure falls
    /// through to the next (logged; a mirror that failed in transport or with a server
    /// error is skipped for [`MIRROR_RETRY_AFTER`], one that refused these credentials
    /// or lacks the image is not); the origin's result is final.
    async fn over_endpoints<'a, T>(
        &'a self,
        r: &ImageReference,
        op: &str,
        f: impl Fn(Endpoint) -> futures::future::BoxFuture<'a, Result<T>>,
    ) -> Result<T> {
        let eps = self.endpoints(r);
        let last = eps.len() - 1;
        for (i, ep) in eps.into_iter().enumerate() {
            if i == last || !ep.mirror {
                return f(ep).await;
            }
            match f(ep.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let down = !matches!(
                        e,
                        StoreError::NotFound { .. }
                            | StoreError::DigestMismatch { .. }
                            | StoreError::Unauthorized { .. }
                    );
                    tracing::info!(mirror = %ep.host, reference = %r, "{op} from mirror failed, trying the next endpoint: {e}");
                    if down {
                        self.inner.mirror_down.lock().expect("mirror_down").insert(
                            ep.host.clone(),
                            std::time::Instant::now() + MIRROR_RETRY_AFTER,
                        );
                    }
                }
            }
        }
        unreachable!("the origin is always the last endpoint")
    }

    /// The configured mirrors (`scheme://host[:port]`), for `info`.
    pub fn mirrors(&self) -> Vec<String> {
        self.inner.opts.registry_mirrors.clone()
    }

    /// The registries listed as insecure by `host[:port]`, for `info`.
    pub fn insecure_registries(&self) -> Vec<String> {
        self.inner.insecure.hosts().to_vec()
    }

    /// The CIDRs listed as insecure (`10.0.0.0/8`), for `info`.
    pub fn insecure_cidrs(&self) -> Vec<String> {
        self.inner.insecure.cidrs()
    }

    /// Fetches a manifest document as is: `(bytes, digest, media type)`. The digest is
    /// verified against the reference's digest when it has one.
    pub async fn fetch_manifest(&self, r: &ImageReference) -> Result<(Bytes, String, String)> {
        self.over_endpoints(r, "fetch manifest", |ep| {
            Box::pin(self.fetch_manifest_at(r, ep))
        })
        .await
    }

    async fn fetch_manifest_at(
        &self,
        r: &ImageReference,
        ep: Endpoint,
    ) -> Result<(Bytes, String, String)> {
        let t = self.target_at(r, &ep);
        let reference = r
            .digest
            .clone()
            .or_else(|| r.tag.clone())
            .unwrap_or_else(|| "latest".to_string());
        let op = "fetch manifest";
        let resp = self
            .inner
            .http
            .get(
                &t,
                &format!("manifests/{reference}"),
                http::accept(manifest::ACCEPTED),
                op,
            )
            .await?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| http::transport_error(&t, op, &e))?;
        if !status.is_success() {
            return Err(http::status_error(&t, op, status, &body));
        }
        self.count(body.len() as u64);
        let digest = sha256_digest(&body);
        if let Some(want) = &r.digest {
            if *want != digest {
                return Err(StoreError::DigestMismatch {
                    what: format!("manifest of {r}"),
                    expected: want.clone(),
                    actual: digest,
                });
            }
        }
        let media_type =
            manifest::media_type_of(&body).ok_or_else(|| StoreError::InvalidManifest {
                reference: r.to_string(),
                reason: "not a JSON manifest".to_string(),
            })?;
        Ok((body, digest, media_type))
    }

    /// Resolves `r` to a single-platform image manifest (following an index to the
    /// configured platform) and fetches its config.
    pub async fn resolve(&self, r: &ImageReference) -> Result<ResolvedImage> {
        let mut resolved = self.resolve_manifest(r).await?;
        resolved.config_bytes = self.fetch_config(&resolved).await?;
        Ok(resolved)
    }

    /// The config blob of a resolved manifest (verified against its digest). A pull
    /// fetches it alongside the layers' TOCs: one round trip instead of two in a row.
    pub async fn fetch_config(&self, resolved: &ResolvedImage) -> Result<Bytes> {
        let mut config = Vec::new();
        self.pull_blob(
            &resolved.reference,
            &resolved.manifest.config.digest,
            &mut config,
            &|_| {},
        )
        .await?;
        Ok(Bytes::from(config))
    }

    /// [`resolve`](Self::resolve) without the config: `config_bytes` is left empty, for
    /// [`fetch_config`](Self::fetch_config).
    pub async fn resolve_manifest(&self, r: &ImageReference) -> Result<ResolvedImage> {
        let (mut body, mut digest, mut media_type) = self.fetch_manifest(r).await?;
        let mut index_digest = None;
        let mut pinned = r.with_digest(&digest);
        if manifest::is_index(&media_type) {
            let index: ImageIndex =
                serde_json::from_slice(&body).map_err(|e| StoreError::InvalidManifest {
                    reference: r.to_string(),
                    reason: format!("bad image index: {e}"),
                })?;
            let want = &self.inner.platform;
            let entry =
                manifest::select_platform(&index, want).ok_or_else(|| StoreError::Unsupported {
                    reference: r.to_string(),
                    reason: format!(
                        "no manifest for platform {}/{}{} in the index",
                        want.os,
                        want.architecture,
                        want.variant
                            .as_ref()
                            .map(|v| format!("/{v}"))
                            .unwrap_or_default()
                    ),
                })?;
            index_digest = Some(digest);
            pinned = r.with_digest(&entry.digest);
            (body, digest, media_type) = self.fetch_manifest(&pinned).await?;
            if manifest::is_index(&media_type) {
                return Err(StoreError::Unsupported {
                    reference: pinned.to_string(),
                    reason: "nested image index".to_string(),
                });
            }
        }
        if media_type != manifest::OCI_MANIFEST && media_type != manifest::DOCKER_MANIFEST {
            return Err(StoreError::Unsupported {
                reference: r.to_string(),
                reason: format!("manifest media type {media_type}"),
            });
        }
        let parsed: ImageManifest =
            serde_json::from_slice(&body).map_err(|e| StoreError::InvalidManifest {
                reference: r.to_string(),
                reason: format!("bad image manifest: {e}"),
            })?;
        Ok(ResolvedImage {
            reference: pinned,
            manifest: parsed,
            manifest_bytes: body,
            manifest_digest: digest,
            manifest_media_type: media_type,
            index_digest,
            config_bytes: Bytes::new(),
        })
    }

    /// Opens blob `digest` of `r`'s repository as a stream of chunks, verified against the
    /// digest: the stream's last item is an error if the bytes did not match, so nothing
    /// read from it may be kept before the stream has ended cleanly.
    pub async fn blob_stream(
        &self,
        r: &ImageReference,
        digest: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes>>> {
        self.over_endpoints(r, "fetch blob", |ep| {
            Box::pin(self.blob_stream_at(r, digest, ep))
        })
        .await
    }

    async fn blob_stream_at(
        &self,
        r: &ImageReference,
        digest: &str,
        ep: Endpoint,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes>>> {
        let blob_ref = r.with_digest(digest);
        let t = self.target_at(&blob_ref, &ep);
        let op = "fetch blob";
        let resp = self
            .inner
            .http
            .get(&t, &format!("blobs/{digest}"), Default::default(), op)
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            return Err(http::status_error(&t, op, status, &body));
        }
        if !digest.starts_with("sha256:") {
            return Err(StoreError::Unsupported {
                reference: blob_ref.to_string(),
                reason: format!("blob digest algorithm of {digest}"),
            });
        }
        let ctx = Arc::new((self.clone(), blob_ref.clone(), t.security, t.host.clone()));
        let want = digest.to_string();
        let body = resp.bytes_stream().boxed();
        // Verify as the bytes pass; the end of the stream carries the verdict.
        let stream = futures::stream::unfold(Some((body, Sha256::new())), move |state| {
            let ctx = ctx.clone();
            let want = want.clone();
            async move {
                let (mut body, mut hasher) = state?;
                let (this, blob_ref, security, host) = &*ctx;
                match body.next().await {
                    Some(Ok(c)) => {
                        this.count(c.len() as u64);
                        hasher.update(&c);
                        Some((Ok(c), Some((body, hasher))))
                    }
                    Some(Err(e)) => {
                        let t = http::Target {
                            reference: blob_ref,
                            security: *security,
                            host: host.clone(),
                            keychain: &this.inner.keychain,
                            certs_dir: this.inner.opts.certs_dir.as_deref(),
                        };
                        Some((Err(http::transport_error(&t, "read blob", &e)), None))
                    }
                    None => {
                        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
                        (actual != want).then(|| {
                            (
                                Err(StoreError::DigestMismatch {
                                    what: format!("blob {blob_ref}"),
                                    expected: want,
                                    actual,
                                }),
                                None,
                            )
                        })
                    }
                }
            }
        });
        Ok(stream.boxed())
    }

    /// Streams blob `digest` of `r`'s repository into `out`, verifying the digest as it
    /// goes (an error at the end means the bytes written must be discarded). `progress`
    /// gets the running byte count. Returns the blob size.
    pub async fn pull_blob(
        &self,
        r: &ImageReference,
        digest: &str,
        out: &mut (dyn Write + Send),
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64> {
        let mut stream = self.blob_stream(r, digest).await?;
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            total += chunk.len() as u64;
            out.write_all(&chunk)
                .map_err(|e| StoreError::io(format!("<blob {digest}>"), e))?;
            progress(total);
        }
        Ok(total)
    }

    /// Bytes `offset..offset+len` of blob `digest` (one HTTP Range request). The caller
    /// verifies what it asked for (e.g. a chunk digest); a short answer is an error.
    pub async fn fetch_range(
        &self,
        r: &ImageReference,
        digest: &str,
        offset: u64,
        len: u64,
    ) -> Result<Bytes> {
        let mut stream = self.range_stream(r, digest, offset, len).await?;
        let mut buf = BytesMut::with_capacity(len as usize);
        while let Some(piece) = stream.next().await {
            buf.extend_from_slice(&piece?);
        }
        Ok(buf.freeze())
    }

    /// [`fetch_range`](Self::fetch_range) as a stream of pieces as they arrive: exactly
    /// `len` bytes, or an error as the last item.
    pub async fn range_stream(
        &self,
        r: &ImageReference,
        digest: &str,
        offset: u64,
        len: u64,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes>>> {
        if len == 0 {
            return Ok(futures::stream::empty().boxed());
        }
        self.over_endpoints(r, "fetch range", |ep| {
            Box::pin(self.range_stream_at(r, digest, offset, len, ep))
        })
        .await
    }

    async fn range_stream_at(
        &self,
        r: &ImageReference,
        digest: &str,
        offset: u64,
        len: u64,
        ep: Endpoint,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes>>> {
        let blob_ref = r.with_digest(digest);
        let op = format!("fetch range {offset}+{len}");
        let t = self.target_at(&blob_ref, &ep);
        let mut headers = reqwest::header::HeaderMap::new();
        let range = format!("bytes={offset}-{}", offset + len - 1);
        headers.insert(
            reqwest::header::RANGE,
            range.parse().expect("a range header is ASCII"),
        );
        let resp = self
            .inner
            .http
            .get(&t, &format!("blobs/{digest}"), headers, &op)
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(http::status_error(&t, &op, status, &body));
        }
        // A registry that ignores Range sends the whole blob (200): skip to the range.
        let skip = if status == reqwest::StatusCode::PARTIAL_CONTENT {
            0
        } else {
            offset
        };
        struct St {
            body: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
            skip: u64,
            left: u64,
        }
        let ctx = Arc::new((
            self.clone(),
            blob_ref.clone(),
            t.security,
            t.host.clone(),
            op,
        ));
        let st = St {
            body: resp.bytes_stream().boxed(),
            skip,
            left: len,
        };
        let stream = futures::stream::unfold(Some(st), move |st| {
            let ctx = ctx.clone();
            async move {
                let mut st = st?;
                let (this, blob_ref, security, host, op) = &*ctx;
                let fail = |reason: String| StoreError::RegistryStatus {
                    reference: blob_ref.to_string(),
                    operation: op.clone(),
                    status: None,
                    reason,
                };
                loop {
                    if st.left == 0 {
                        return None;
                    }
                    match st.body.next().await {
                        Some(Ok(mut piece)) => {
                            this.count(piece.len() as u64);
                            if st.skip > 0 {
                                let n = st.skip.min(piece.len() as u64);
                                st.skip -= n;
                                let _ = piece.split_to(n as usize);
                            }
                            piece.truncate(st.left.min(piece.len() as u64) as usize);
                            if piece.is_empty() {
                                continue;
                            }
                            st.left -= piece.len() as u64;
                            return Some((Ok(piece), Some(st)));
                        }
                        Some(Err(e)) => {
                            let t = http::Target {
                                reference: blob_ref,
                                security: *security,
                                host: host.clone(),
                                keychain: &this.inner.keychain,
                                certs_dir: this.inner.opts.certs_dir.as_deref(),
                            };
                            return Some((Err(http::transport_error(&t, op, &e)), None));
                        }
                        None => {
                            return Some((
                                Err(fail(format!(
                                    "the registry's answer ended {} bytes short",
                                    st.left
                                ))),
                                None,
                            ))
                        }
                    }
                }
            }
        });
        Ok(stream.boxed())
    }

    /// The Referrers API's index of manifests referring to `digest` (OCI distribution 1.1
    /// `GET /v2/<name>/referrers/<digest>`); `None` when the registry has no such API.
    pub async fn referrers(&self, r: &ImageReference, digest: &str) -> Result<Option<Bytes>> {
        self.over_endpoints(r, "list referrers", |ep| {
            Box::pin(self.referrers_at(r, digest, ep))
        })
        .await
    }

    async fn referrers_at(
        &self,
        r: &ImageReference,
        digest: &str,
        ep: Endpoint,
    ) -> Result<Option<Bytes>> {
        let t = self.target_at(r, &ep);
        let op = "list referrers";
        let resp = self
            .inner
            .http
            .get(
                &t,
                &format!("referrers/{digest}"),
                http::accept(&[manifest::OCI_INDEX]),
                op,
            )
            .await?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| http::transport_error(&t, op, &e))?;
        self.count(body.len() as u64);
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(http::status_error(&t, op, status, &body));
        }
        // A registry answering with something other than an index has no such API.
        let is_index = serde_json::from_slice::<serde_json::Value>(&body)
            .is_ok_and(|v| v["manifests"].is_array());
        Ok(is_index.then_some(body))
    }
}
