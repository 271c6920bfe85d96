//! Where reads of an image go: Docker Hub's mirrors (tried in order for `docker.io`
//! images, dockerd's `registry-mirrors`), then the registry itself.

use super::http;
use crate::{Result, StoreError};

/// How long a mirror that failed (transport error, server error) is left out of reads.
pub(super) const MIRROR_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// A place reads of an image are sent: a mirror or the registry itself.
#[derive(Clone, Debug)]
pub(super) struct Endpoint {
    /// `host[:port]`.
    pub(super) host: String,
    pub(super) security: http::Security,
    pub(super) mirror: bool,
}

/// Parses a mirror or origin URL, `http[s]://host[:port]` with an optional trailing `/`:
/// `(host[:port], plain HTTP)`. Errors name the URL.
pub fn parse_endpoint_url(url: &str) -> Result<(String, bool)> {
    let bad = |reason: &str| StoreError::InvalidReference {
        reference: url.to_string(),
        reason: format!("not a registry mirror URL: {reason}"),
    };
    let (plain, rest) = if let Some(r) = url.strip_prefix("https://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (true, r)
    } else {
        return Err(bad("it must start with http:// or https://"));
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || host.contains('@') || host.contains('?') {
        return Err(bad("only scheme://host[:port] is supported"));
    }
    Ok((host.to_string(), plain))
}

pub(super) fn endpoint_of(
    url: &str,
    insecure: &super::insecure::InsecureRegistries,
    mirror: bool,
) -> Result<Endpoint> {
    let (host, plain) = parse_endpoint_url(url)?;
    let security = if plain {
        http::Security::PlainHttp
    } else if insecure.covers(&host) {
        http::Security::Insecure
    } else {
        http::Security::Verified
    };
    Ok(Endpoint {
        host,
        security,
        mirror,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_urls() {
        assert_eq!(
            parse_endpoint_url("https://m.example/").unwrap(),
            ("m.example".to_string(), false)
        );
        assert_eq!(
            parse_endpoint_url("http://127.0.0.1:5000").unwrap(),
            ("127.0.0.1:5000".to_string(), true)
        );
        for bad in [
            "m.example",
            "ftp://m",
            "https://m/path",
            "https://",
            "https://u@m",
        ] {
            let e = parse_endpoint_url(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        let insecure =
            crate::registry::insecure::InsecureRegistries::parse(&["m:443".to_string()]).unwrap();
        let ep = endpoint_of("https://m:443", &insecure, true).unwrap();
        assert_eq!(ep.security, http::Security::Insecure);
        assert!(ep.mirror);
    }
}
