//! TLS to registries as Docker sets it up: the system's roots plus, per registry, the files
//! of `<certs dir>/<host[:port]>/` (Docker's `certs.d` layout): every `*.crt` is a CA
//! trusted for that registry, every `*.cert` + `*.key` pair (same stem) a client
//! certificate presented to it. Insecure registries are spoken to over HTTPS without
//! verification first, then plain HTTP (dockerd's order).

use std::path::{Path, PathBuf};

use crate::StoreError;

/// The certificates configured for one registry.
#[derive(Default)]
pub struct RegistryCerts {
    pub cas: Vec<reqwest::Certificate>,
    /// PEM of the client certificate followed by its key.
    pub identity: Option<reqwest::Identity>,
    /// The files read, for messages.
    pub files: Vec<PathBuf>,
}

/// The directory holding `host`'s files: `host:port` as written, `:` kept (as Docker).
pub fn host_dir(certs_dir: &Path, host: &str) -> PathBuf {
    certs_dir.join(host)
}

/// What `certs_dir/<host>/` holds now, cheaply: each file's name, size and change time
/// (empty when there is no such directory). Two equal stamps mean the files were not
/// changed, so a client built from them can be kept.
pub fn stamp(certs_dir: &Path, host: &str) -> Vec<(PathBuf, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(host_dir(certs_dir, host)) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .filter_map(|e| {
            let m = std::fs::metadata(e.path()).ok()?;
            Some((e.path(), m.len(), m.ctime(), m.ctime_nsec()))
        })
        .collect();
    out.sort();
    out
}

/// Reads `certs_dir/<host>/`. A missing directory is no configuration; a file that does
/// not parse, or a `.cert` without its `.key` (or the reverse), is an error naming it.
pub fn load(certs_dir: &Path, host: &str) -> Result<RegistryCerts, StoreError> {
    let dir = host_dir(certs_dir, host);
    let mut out = RegistryCerts::default();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::io(&dir, e)),
    };
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    let bad = |path: &Path, reason: String| StoreError::TlsConfig {
        path: path.to_path_buf(),
        reason,
    };
    for path in &names {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext {
            "crt" => {
                let pem = std::fs::read(path).map_err(|e| StoreError::io(path, e))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| bad(path, format!("not a PEM CA certificate: {e}")))?;
                if certs.is_empty() {
                    return Err(bad(path, "holds no PEM certificate".to_string()));
                }
                out.cas.extend(certs);
                out.files.push(path.clone());
            }
            "cert" => {
                let key = path.with_extension("key");
                if !key.exists() {
                    return Err(bad(
                        path,
                        format!("client certificate without its key {}", key.display()),
                    ));
                }
                if out.identity.is_some() {
                    return Err(bad(
                        path,
                        "a second client certificate for the same registry".to_string(),
                    ));
                }
                let mut pem = std::fs::read(path).map_err(|e| StoreError::io(path, e))?;
                pem.push(b'\n');
                pem.extend(std::fs::read(&key).map_err(|e| StoreError::io(&key, e))?);
                let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    bad(
                        path,
                        format!("client certificate or key {} unusable: {e}", key.display()),
                    )
                })?;
                out.identity = Some(id);
                out.files.push(path.clone());
                out.files.push(key);
            }
            "key" if !path.with_extension("cert").exists() => {
                return Err(bad(
                    path,
                    format!(
                        "client key without its certificate {}",
                        path.with_extension("cert").display()
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A reason a person can act on for a TLS failure in `chain` (an error's causes), if it
/// is one: unknown CA, name mismatch, expired.
pub fn explain(chain: &str, host: &str, certs_dir: Option<&Path>) -> Option<String> {
    let add_ca = || match certs_dir {
        Some(d) => format!(
            " (trust its CA by putting it in {}/ca.crt, or list the registry as insecure)",
            host_dir(d, host).display()
        ),
        None => String::new(),
    };
    if chain.contains("UnknownIssuer") || chain.contains("unknown issuer") {
        return Some(format!(
            "TLS: {host}'s certificate is signed by an unknown authority{}",
            add_ca()
        ));
    }
    if chain.contains("CaUsedAsEndEntity") {
        // rustls's word for a self-signed server certificate that is also trusted as a CA.
        return Some(format!(
            "TLS: {host}'s certificate is a CA certificate used as its own server certificate \
             (self-signed); give the registry a server certificate signed by that CA{}",
            add_ca()
        ));
    }
    if chain.contains("NotValidForName") || chain.contains("not valid for name") {
        return Some(format!(
            "TLS: {host}'s certificate is not valid for the name {host}"
        ));
    }
    if chain.contains("Expired") || chain.contains("expired") {
        return Some(format!("TLS: {host}'s certificate has expired"));
    }
    if chain.contains("CertificateRequired")
        || chain.contains("certificate required")
        || chain.contains("alert: BadCertificate")
    {
        return Some(format!(
            "TLS: {host} refused the client certificate (none, or not one it trusts){}",
            certs_dir
                .map(|d| format!(
                    " (put client.cert and client.key in {})",
                    host_dir(d, host).display()
                ))
                .unwrap_or_default()
        ));
    }
    if chain.contains("InvalidContentType") {
        return Some(format!(
            "TLS: {host} does not answer in TLS (a plain-HTTP registry? list it as insecure to allow HTTP)"
        ));
    }
    if chain.contains("invalid peer certificate") || chain.contains("InvalidCertificate") {
        return Some(format!("TLS: {host}'s certificate was refused: {chain}"));
    }
    None
}

/// Does the TLS stack's one-time set-up (the platform verifier and its roots, the crypto
/// provider: 30-40 ms on first use) now, with one HTTPS attempt to a listener on
/// 127.0.0.1 that closes each connection at once, so a daemon's first pull does not pay
/// it. Never fails; bounded by a 5 s timeout.
pub async fn warm_up() {
    let t0 = std::time::Instant::now();
    let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
        return;
    };
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let closer = tokio::spawn(async move {
        if let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    });
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build();
    if let Ok(client) = client {
        // Fails (the peer closes): what is wanted is the set-up on the way.
        let _ = client.get(format!("https://{addr}/")).send().await;
    }
    closer.abort();
    tracing::debug!(
        ms = t0.elapsed().as_secs_f64() * 1e3,
        "TLS set up ahead of the first pull"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path(), "r:5000").unwrap().cas.is_empty());
        let host = d.path().join("r:5000");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("ca.crt"), "not a cert").unwrap();
        let e = load(d.path(), "r:5000").err().unwrap().to_string();
        assert!(e.contains("ca.crt"), "{e}");
        std::fs::remove_file(host.join("ca.crt")).unwrap();
        std::fs::write(host.join("client.cert"), "x").unwrap();
        let e = load(d.path(), "r:5000").err().unwrap().to_string();
        assert!(e.contains("without its key"), "{e}");
        assert!(explain(
            "invalid peer certificate: UnknownIssuer",
            "r:5000",
            Some(d.path())
        )
        .unwrap()
        .contains("unknown authority"));
        assert!(explain(
            "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
            "r:5000",
            None
        )
        .unwrap()
        .contains("self-signed"));
        assert!(explain("connection refused", "r", None).is_none());
        // A change shows in the stamp; an unchanged directory stamps the same.
        let before = stamp(d.path(), "r:5000");
        assert_eq!(before, stamp(d.path(), "r:5000"));
        std::fs::write(host.join("client.key"), "y").unwrap();
        assert_ne!(before, stamp(d.path(), "r:5000"));
        assert!(stamp(d.path(), "none:1").is_empty());
    }
}
