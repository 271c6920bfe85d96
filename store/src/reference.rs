//! Docker image references, normalised the way `docker pull` does, so that `busybox`,
//! `docker.io/library/busybox` and `index.docker.io/library/busybox:latest` are one image.

use std::fmt;

use crate::{Result, StoreError};

/// The registry that references without a domain point at.
pub const DEFAULT_REGISTRY: &str = "docker.io";
pub(crate) const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A fully normalised reference: `registry/repository[:tag][@digest]`.
///
/// A reference without tag or digest gets the tag `latest`; a digest-only reference keeps
/// no tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    /// `host[:port]`, e.g. `docker.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Lowercase path, e.g. `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

fn invalid(reference: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidReference {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

impl ImageReference {
    /// Parses and normalises `s` (Docker's rules: domain detection, `library/` for
    /// single-component Docker Hub names, lowercase repositories, `latest` by default).
    pub fn parse(s: &str) -> Result<ImageReference> {
        if s.is_empty() {
            return Err(invalid(s, "empty reference"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(s, "contains whitespace or control characters"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(parse_digest(s, d)?)),
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a ':' before that is a
        // registry port).
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let (n, t) = rest.split_at(last_slash + i);
                (n, Some(parse_tag(s, &t[1..])?))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(invalid(s, "missing repository name"));
        }
        let (registry, path) = split_domain(name);
        let registry = match registry {
            Some(r) => {
                validate_domain(s, r)?;
                if r == "index.docker.io" || r == "registry-1.docker.io" {
                    DEFAULT_REGISTRY.to_string()
                } else {
                    r.to_string()
                }
            }
            None => DEFAULT_REGISTRY.to_string(),
        };
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid(s, "repository name must be lowercase"));
        }
        validate_path(s, path)?;
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(invalid(
                s,
                format!("repository name longer than {MAX_NAME_LEN} characters"),
            ));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (t, _) => t,
        };
        Ok(ImageReference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag` when the reference has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// The short form Docker shows (`busybox:latest` for Docker Hub's library images).
    pub fn familiar(&self) -> String {
        let mut out = if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        };
        if let Some(t) = &self.tag {
            out.push(':');
            out.push_str(t);
        }
        if let Some(d) = &self.digest {
            out.push('@');
            out.push_str(d);
        }
        out
    }

    /// The same repository at `digest` (keeping the tag for display).
    pub fn with_digest(&self, digest: &str) -> ImageReference {
        ImageReference {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// The host part of the registry without port.
    pub fn host(&self) -> &str {
        split_host_port(&self.registry).0
    }

    /// `host:port`, with the scheme's default port filled in when the reference has none.
    pub fn host_port(&self, plain_http: bool) -> String {
        let (host, port) = split_host_port(&self.registry);
        let port = port.unwrap_or(if plain_http { "80" } else { "443" });
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    /// Whether the registry is on a loopback address (insecure, as in dockerd: HTTPS without
    /// verification, then plain HTTP).
    pub fn is_loopback(&self) -> bool {
        let host = self.host().trim_start_matches('[').trim_end_matches(']');
        if host == "localhost" {
            return true;
        }
        host.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
    }

    /// The host requests for this registry go to: Docker Hub's API host
    /// (`index.docker.io`) for `docker.io`, else the registry as written.
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            "index.docker.io"
        } else {
            &self.registry
        }
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageReference {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        ImageReference::parse(s)
    }
}

/// Splits `host:port` (IPv6 hosts in brackets); the port is `None` when absent.
fn split_host_port(registry: &str) -> (&str, Option<&str>) {
    if let Some(rest) = registry.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let port = rest[end + 1..].strip_prefix(':');
            return (&registry[..end + 2], port);
        }
    }
    match registry.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (registry, None),
    }
}

/// Docker's rule: the first component is a domain when it contains `.` or `:`, is
/// `localhost`, or contains uppercase letters; otherwise the name is a Docker Hub path.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn validate_domain(reference: &str, domain: &str) -> Result<()> {
    let (host, port) = split_host_port(domain);
    if let Some(p) = port {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return Err(invalid(reference, format!("invalid registry port {p:?}")));
        }
    }
    if let Some(v6) = host.strip_prefix('[') {
        let inner = v6.trim_end_matches(']');
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid(
                reference,
                format!("invalid IPv6 registry {host:?}"),
            ));
        }
        return Ok(());
    }
    let ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            reference,
            format!("invalid registry host {host:?}"),
        ))
    }
}

/// Each path component matches `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn validate_path(reference: &str, path: &str) -> Result<()> {
    for comp in path.split('/') {
        if comp.is_empty() {
            return Err(invalid(
                reference,
                "empty path component in repository name",
            ));
        }
        let b = comp.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return Err(invalid(
                reference,
                format!("repository component {comp:?} must start and end with [a-z0-9]"),
            ));
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &comp[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
            if !ok {
                return Err(invalid(
                    reference,
                    format!("invalid separator {sep:?} in repository component {comp:?}"),
                ));
            }
        }
    }
    Ok(())
}

fn parse_tag(reference: &str, tag: &str) -> Result<String> {
    if tag.is_empty() {
        return Err(invalid(reference, "empty tag"));
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(invalid(
            reference,
            format!("tag longer than {MAX_TAG_LEN} characters"),
        ));
    }
    let b = tag.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    if !word(b[0]) || !b.iter().all(|&c| word(c) || c == b'.' || c == b'-') {
        return Err(invalid(
            reference,
            format!("invalid tag {tag:?} (allowed: [A-Za-z0-9_][A-Za-z0-9_.-]*)"),
        ));
    }
    Ok(tag.to_string())
}

/// Only `sha256:` digests are accepted: everything skiff verifies is sha256.
pub fn parse_digest(reference: &str, digest: &str) -> Result<String> {
    let Some((algo, hex)) = digest.split_once(':') else {
        return Err(invalid(
            reference,
            format!("invalid digest {digest:?} (expected sha256:<64 hex>)"),
        ));
    };
    if algo != "sha256" {
        return Err(invalid(
            reference,
            format!("unsupported digest algorithm {algo:?} (only sha256)"),
        ));
    }
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return Err(invalid(
            reference,
            format!("invalid sha256 digest {digest:?} (expected 64 lowercase hex digits)"),
        ));
    }
    Ok(digest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn norm(s: &str) -> String {
        ImageReference::parse(s).unwrap().to_string()
    }

    fn reason(s: &str) -> String {
        match ImageReference::parse(s) {
            Err(StoreError::InvalidReference { reference, reason }) => {
                assert_eq!(reference, s);
                reason
            }
            other => panic!("{s:?} should be invalid, got {other:?}"),
        }
    }

    #[test]
    fn docker_hub_names_are_normalised() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("user/app:v1"), "docker.io/user/app:v1");
        assert_eq!(
            norm("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn registries_with_ports_and_localhost() {
        let r = ImageReference::parse("127.0.0.1:5000/a/b:t").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert!(r.is_loopback());
        assert_eq!(r.host_port(true), "127.0.0.1:5000");
        let r = ImageReference::parse("localhost/x").unwrap();
        assert_eq!(r.registry, "localhost");
        assert!(r.is_loopback());
        assert_eq!(r.host_port(true), "localhost:80");
        let r = ImageReference::parse("[::1]:5000/x:y").unwrap();
        assert_eq!(r.registry, "[::1]:5000");
        assert!(r.is_loopback());
        assert_eq!(r.host_port(false), "[::1]:5000");
        let r = ImageReference::parse("quay.io/org/img").unwrap();
        assert!(!r.is_loopback());
        assert_eq!(r.host_port(false), "quay.io:443");
        // A port-looking suffix without a domain marker is a tag.
        assert_eq!(norm("foo:5000"), "docker.io/library/foo:5000");
    }

    #[test]
    fn digests_with_and_without_tags() {
        let r = ImageReference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        let r = ImageReference::parse(&format!("127.0.0.1:5000/x:v1@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.familiar(), format!("127.0.0.1:5000/x:v1@{D}"));
    }

    #[test]
    fn familiar_form() {
        assert_eq!(
            ImageReference::parse("busybox").unwrap().familiar(),
            "busybox:latest"
        );
        assert_eq!(
            ImageReference::parse("u/app:1").unwrap().familiar(),
            "u/app:1"
        );
    }

    #[test]
    fn invalid_references_say_why() {
        assert!(reason("").contains("empty"));
        assert!(reason("BusyBox").contains("lowercase"));
        assert!(reason("docker.io/Library/busybox").contains("lowercase"));
        assert!(reason("busybox:").contains("empty tag"));
        assert!(reason("busybox:-x").contains("invalid tag"));
        assert!(reason(&format!("busybox:{}", "a".repeat(129))).contains("tag longer"));
        assert!(reason("busybox@sha256:abc").contains("64"));
        assert!(reason("busybox@md5:0123").contains("algorithm"));
        assert!(reason("busybox@sha256").contains("invalid digest"));
        assert!(reason("a//b").contains("empty path"));
        assert!(reason("a/-b").contains("start and end"));
        assert!(reason("a/b..c").contains("separator"));
        assert!(reason("host:99999/x").contains("port"));
        assert!(reason("bad_host.com:5000/x").contains("registry host"));
        assert!(reason("bu sybox").contains("whitespace"));
        assert!(reason(":tag").contains("missing repository"));
        let long = format!("x/{}", "a".repeat(300));
        assert!(reason(&long).contains("longer than 255"));
    }

    #[test]
    fn separators_allowed_by_docker() {
        for ok in ["a_b", "a__b", "a.b", "a-b", "a---b", "a0/b1.c_d"] {
            ImageReference::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }
}
