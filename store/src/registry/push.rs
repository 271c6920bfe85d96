//! Pushes (blobs, manifests) through `oci-client`, which performs the token exchange the
//! registry asks for itself, with the credentials and TLS settings of [`RegistryClient`].

use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use super::{http, tls, RegistryClient, Secret};
use crate::content::sha256_digest;
use crate::reference::ImageReference;
use crate::{Result, StoreError};

impl RegistryClient {
    /// The `oci-client` for `r`'s registry, with its current credentials registered (an
    /// identity token is exchanged for a push-scoped bearer token first, which
    /// `oci-client` cannot do).
    async fn client(
        &self,
        r: &ImageReference,
    ) -> Result<(oci_client::Client, oci_client::Reference)> {
        let oci = r.to_oci();
        let cred = self
            .inner
            .keychain
            .lookup(&r.registry, &r.repository)
            .await?;
        let security = self.security(r);
        if security == http::Security::Insecure {
            // oci-client takes one scheme: find the one that works first (cached).
            let t = self.target(r);
            self.inner.http.probe_scheme(&t).await?;
        }
        let plain = self.plain_http(r);
        let host = r.to_oci().resolve_registry().to_string();
        let mut cas = Vec::new();
        if let Some(dir) = &self.inner.opts.certs_dir {
            let certs = tls::load(dir, &host)?;
            if certs.identity.is_some() {
                // oci-client has no client-certificate option.
                return Err(StoreError::TlsConfig {
                    path: tls::host_dir(dir, &host),
                    reason: "pushing to a registry that wants a client certificate is not supported yet (pulls are)".to_string(),
                });
            }
            for f in certs
                .files
                .iter()
                .filter(|f| f.extension().is_some_and(|e| e == "crt"))
            {
                let data = std::fs::read(f).map_err(|e| StoreError::io(f, e))?;
                cas.push(oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data,
                });
            }
        }
        let new_client = || {
            oci_client::Client::new(ClientConfig {
                protocol: if plain {
                    ClientProtocol::Http
                } else {
                    ClientProtocol::Https
                },
                accept_invalid_certificates: security == http::Security::Insecure,
                extra_root_certificates: cas.clone(),
                platform_resolver: None,
                connect_timeout: Some(std::time::Duration::from_secs(10)),
                read_timeout: Some(std::time::Duration::from_secs(60)),
                user_agent: concat!("skiff/", env!("CARGO_PKG_VERSION")),
                ..Default::default()
            })
        };
        let auth = match &cred.secret {
            Secret::Anonymous => RegistryAuth::Anonymous,
            Secret::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Secret::RegistryToken(t) => RegistryAuth::Bearer(t.clone()),
            Secret::IdentityToken { .. } => {
                // A short-lived token: a client of its own, not kept.
                let t = self.target(r);
                let auth = match self.inner.http.token_for(&t, &cred, "pull,push").await? {
                    Some(token) => RegistryAuth::Bearer(token),
                    None => RegistryAuth::Anonymous,
                };
                let client = new_client();
                client
                    .store_auth_if_needed(oci.resolve_registry(), &auth)
                    .await;
                return Ok((client, oci));
            }
        };
        // One client per registry, credential and certs.d state: oci-client keeps the
        // first credentials it was given (a new login must not reuse the old ones), and a
        // changed CA must reach new connections.
        let certs_stamp = self
            .inner
            .opts
            .certs_dir
            .as_deref()
            .map(|d| format!("{:?}", tls::stamp(d, &host)))
            .unwrap_or_default();
        let client = {
            let mut clients = self.inner.clients.lock().expect("client map");
            clients
                .entry(format!(
                    "{} {} {plain} {certs_stamp}",
                    r.registry,
                    cred.secret.fingerprint()
                ))
                .or_insert_with(new_client)
                .clone()
        };
        client
            .store_auth_if_needed(oci.resolve_registry(), &auth)
            .await;
        Ok((client, oci))
    }

    pub async fn blob_exists(&self, r: &ImageReference, digest: &str) -> Result<bool> {
        let (client, oci) = self.client(r).await?;
        client
            .blob_exists(&oci, digest)
            .await
            .map_err(|e| self.err(&r.with_digest(digest), "check blob", e))
    }

    /// Uploads a local file as blob `digest` unless the registry already has it.
    pub async fn push_blob_file(
        &self,
        r: &ImageReference,
        digest: &str,
        path: &Path,
    ) -> Result<()> {
        if self.blob_exists(r, digest).await? {
            return Ok(());
        }
        let (client, oci) = self.client(r).await?;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| StoreError::io(path, e))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| StoreError::io(path, e))?
            .len();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
            .map(|r| r.map_err(oci_client::errors::OciDistributionError::IoError));
        client
            .push_blob_stream(&oci, stream, digest, Some(size))
            .await
            .map_err(|e| self.err(&r.with_digest(digest), "push blob", e))?;
        Ok(())
    }

    /// Uploads an in-memory blob (configs) unless the registry already has it.
    pub async fn push_blob(&self, r: &ImageReference, digest: &str, data: Bytes) -> Result<()> {
        if self.blob_exists(r, digest).await? {
            return Ok(());
        }
        let (client, oci) = self.client(r).await?;
        client
            .push_blob(&oci, data, digest)
            .await
            .map_err(|e| self.err(&r.with_digest(digest), "push blob", e))?;
        Ok(())
    }

    /// Uploads a manifest (or index) document under `r`'s tag (or digest) unchanged, so
    /// its digest is preserved. Returns the manifest's digest.
    pub async fn push_manifest(
        &self,
        r: &ImageReference,
        body: Bytes,
        media_type: &str,
    ) -> Result<String> {
        let (client, oci) = self.client(r).await?;
        let digest = sha256_digest(&body);
        let ct = media_type
            .parse()
            .map_err(|_| StoreError::InvalidManifest {
                reference: r.to_string(),
                reason: format!("media type {media_type:?} is not a valid header value"),
            })?;
        // Pushing by digest-pinned reference uses the digest; by tag, the tag.
        let target = if r.tag.is_some() {
            oci_client::Reference::with_tag(
                r.registry.clone(),
                r.repository.clone(),
                r.tag.clone().unwrap_or_default(),
            )
        } else {
            oci
        };
        client
            .push_manifest_raw(&target, body, ct)
            .await
            .map_err(|e| self.err(r, "push manifest", e))?;
        Ok(digest)
    }
}
