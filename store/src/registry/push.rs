//! Pushes over skiff's own registry client ([`http::RegistryHttp`]), as Docker pushes
//! (Distribution spec "Pushing blobs", "Pushing manifests"): `HEAD` of each blob first,
//! then a cross-repository mount when the blob is known to be in another repository of
//! the same registry, else an upload (`POST` to open it; a file streamed in one `PATCH`
//! and closed by `PUT ?digest=`; a small in-memory blob in one monolithic `PUT`), and
//! the manifest `PUT` under its tag or digest. The same per-registry TLS (certs.d CAs
//! and client certificates), token cache and request-scoped credentials as pulls.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};

use super::http::{self, BodyFn, Request, Scope};
use super::RegistryClient;
use crate::content::sha256_digest;
use crate::reference::ImageReference;
use crate::{Result, StoreError};

/// What a blob upload sends.
enum Blob {
    File { path: PathBuf, size: u64 },
    Memory(Bytes),
}

/// What a blob push did: Docker's per-layer push statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobPushed {
    /// The registry had it (`Layer already exists`).
    Existed,
    /// Mounted from another repository of the registry (`Mounted from <repository>`).
    Mounted(String),
    /// Uploaded (`Pushed`).
    Uploaded,
}

impl BlobPushed {
    /// The `status` of Docker's push progress line for the layer.
    pub fn docker_status(&self) -> String {
        match self {
            BlobPushed::Existed => "Layer already exists".to_string(),
            BlobPushed::Mounted(from) => format!("Mounted from {from}"),
            BlobPushed::Uploaded => "Pushed".to_string(),
        }
    }
}

impl RegistryClient {
    /// Whether `r`'s repository has blob `digest` (`HEAD /v2/<name>/blobs/<digest>`,
    /// with push access, so one token serves the whole push).
    pub async fn blob_exists(&self, r: &ImageReference, digest: &str) -> Result<bool> {
        let blob_ref = r.with_digest(digest);
        let t = self.target(&blob_ref);
        let op = "check blob";
        let url = format!("/v2/{}/blobs/{digest}", r.repository);
        let req = Request::new(Method::HEAD, url, Scope::Push, op);
        let resp = self.inner.http.request(&t, &req).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(http::status_error(&t, op, s, b"")),
        }
    }

    /// Uploads a local file as blob `digest` unless the registry already has it.
    pub async fn push_blob_file(
        &self,
        r: &ImageReference,
        digest: &str,
        path: &Path,
    ) -> Result<BlobPushed> {
        self.push_layer(r, digest, path, &[]).await
    }

    /// [`push_blob_file`](Self::push_blob_file), mounting the blob from the first of
    /// `mount_from` (repositories of the same registry known to hold it) that the registry
    /// mounts it from, as Docker does; an upload when none does.
    pub async fn push_layer(
        &self,
        r: &ImageReference,
        digest: &str,
        path: &Path,
        mount_from: &[String],
    ) -> Result<BlobPushed> {
        let size = std::fs::metadata(path)
            .map_err(|e| StoreError::io(path, e))?
            .len();
        let blob = Blob::File {
            path: path.to_path_buf(),
            size,
        };
        self.upload(r, digest, blob, mount_from).await
    }

    /// Uploads an in-memory blob (configs) unless the registry already has it.
    pub async fn push_blob(
        &self,
        r: &ImageReference,
        digest: &str,
        data: Bytes,
    ) -> Result<BlobPushed> {
        self.upload(r, digest, Blob::Memory(data), &[]).await
    }

    async fn upload(
        &self,
        r: &ImageReference,
        digest: &str,
        blob: Blob,
        mount_from: &[String],
    ) -> Result<BlobPushed> {
        if self.blob_exists(r, digest).await? {
            return Ok(BlobPushed::Existed);
        }
        let blob_ref = r.with_digest(digest);
        let t = self.target(&blob_ref);
        let h = &self.inner.http;
        let uploads = format!("/v2/{}/blobs/uploads/", r.repository);
        let mut session = None;
        for from in mount_from.iter().filter(|f| **f != r.repository) {
            let op = "mount blob";
            let url = format!("{uploads}?mount={digest}&from={from}");
            let req = Request::new(Method::POST, url, Scope::PushMountFrom(from), op);
            // A mount the registry refuses (no access to `from`, blob gone) is no error:
            // the blob is uploaded instead.
            match h.request(&t, &req).await {
                Ok(resp) if resp.status() == StatusCode::CREATED => {
                    tracing::debug!(reference = %blob_ref, from = %from, "blob mounted");
                    return Ok(BlobPushed::Mounted(from.clone()));
                }
                // Not mounted, but an upload was opened (the spec's fallback).
                Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                    session = Some(location(&t, &resp, op)?);
                    break;
                }
                Ok(resp) => {
                    tracing::debug!(reference = %blob_ref, from = %from, status = %resp.status(), "mount refused")
                }
                Err(e) => tracing::debug!(reference = %blob_ref, from = %from, "mount failed: {e}"),
            }
        }
        let session = match session {
            Some(s) => s,
            None => {
                let op = "open blob upload";
                let req = Request::new(Method::POST, uploads, Scope::Push, op);
                let resp = expect(&t, h.request(&t, &req).await?, op).await?;
                location(&t, &resp, op)?
            }
        };
        let op = "push blob";
        match blob {
            Blob::File { path, size } => {
                // Docker's way: the whole blob in one streamed PATCH, closed by a PUT.
                let body = move || -> Result<reqwest::Body> {
                    let f = std::fs::File::open(&path).map_err(|e| StoreError::io(&path, e))?;
                    let stream = tokio_util::io::ReaderStream::with_capacity(
                        tokio::fs::File::from_std(f),
                        1 << 20,
                    );
                    Ok(reqwest::Body::wrap_stream(stream))
                };
                let mut req = Request::new(Method::PATCH, session, Scope::Push, op);
                req.headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
                req.headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                req.body = Some(&body as &BodyFn);
                let resp = expect(&t, h.request(&t, &req).await?, op).await?;
                let next = location(&t, &resp, op)?;
                let mut req =
                    Request::new(Method::PUT, with_digest(&next, digest), Scope::Push, op);
                req.headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
                expect(&t, h.request(&t, &req).await?, op).await?;
            }
            Blob::Memory(data) => {
                let len = data.len() as u64;
                let body = move || -> Result<reqwest::Body> { Ok(data.clone().into()) };
                let mut req =
                    Request::new(Method::PUT, with_digest(&session, digest), Scope::Push, op);
                req.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
                req.headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                req.body = Some(&body as &BodyFn);
                expect(&t, h.request(&t, &req).await?, op).await?;
            }
        }
        Ok(BlobPushed::Uploaded)
    }

    /// Uploads a manifest (or index) document under `r`'s tag (or digest) unchanged, so
    /// its digest is preserved (`PUT /v2/<name>/manifests/<reference>`). Returns the
    /// manifest's digest.
    pub async fn push_manifest(
        &self,
        r: &ImageReference,
        body: Bytes,
        media_type: &str,
    ) -> Result<String> {
        let digest = sha256_digest(&body);
        let ct = HeaderValue::from_str(media_type).map_err(|_| StoreError::InvalidManifest {
            reference: r.to_string(),
            reason: format!("media type {media_type:?} is not a valid header value"),
        })?;
        // By tag when the reference has one (that is the tagging), else by digest.
        let target = r
            .tag
            .clone()
            .or_else(|| r.digest.clone())
            .unwrap_or_else(|| crate::reference::DEFAULT_TAG.to_string());
        let t = self.target(r);
        let op = "push manifest";
        let len = body.len() as u64;
        let make = move || -> Result<reqwest::Body> { Ok(body.clone().into()) };
        let url = format!("/v2/{}/manifests/{target}", r.repository);
        let mut req = Request::new(Method::PUT, url, Scope::Push, op);
        req.headers.insert(CONTENT_TYPE, ct);
        req.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        req.body = Some(&make as &BodyFn);
        expect(&t, self.inner.http.request(&t, &req).await?, op).await?;
        Ok(digest)
    }
}

/// Checks an upload step's answer (any 2xx; the spec's are `202` and, at the end,
/// `201`); another status is an error naming the registry and the repository.
async fn expect(
    t: &http::Target<'_>,
    resp: reqwest::Response,
    op: &str,
) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.bytes().await.unwrap_or_default();
    if status == StatusCode::NOT_FOUND {
        // An upload the registry lost or refuses (or no such repository), not a missing
        // image.
        return Err(StoreError::RegistryStatus {
            reference: t.reference.to_string(),
            operation: format!("{op} at {}", t.host),
            status: Some(404),
            reason: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
        });
    }
    Err(http::status_error(t, op, status, &body))
}

/// An upload's `Location`: a path on the registry or an absolute URL.
fn location(t: &http::Target<'_>, resp: &reqwest::Response, op: &str) -> Result<String> {
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .filter(|l| !l.is_empty())
        .ok_or_else(|| StoreError::RegistryStatus {
            reference: t.reference.to_string(),
            operation: format!("{op} at {}", t.host),
            status: Some(resp.status().as_u16()),
            reason: "the registry sent no upload Location".to_string(),
        })?;
    Ok(if loc.starts_with('/') || loc.contains("://") {
        loc.to_string()
    } else {
        format!("/{loc}")
    })
}

/// `location` with `digest=<digest>` added to its query (the upload's closing `PUT`).
fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn closing_put_keeps_the_location_query() {
        assert_eq!(
            super::with_digest("/v2/a/blobs/uploads/u?_state=x", "sha256:ab"),
            "/v2/a/blobs/uploads/u?_state=x&digest=sha256:ab"
        );
        assert_eq!(
            super::with_digest("https://r/v2/a/blobs/uploads/u", "sha256:ab"),
            "https://r/v2/a/blobs/uploads/u?digest=sha256:ab"
        );
    }
}
