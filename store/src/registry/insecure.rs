//! Which registries are insecure (`insecure-registries`, `--insecure-registry`), as
//! dockerd reads the list (moby `registry.LoadInsecureRegistries`, `isSecureIndex`): an
//! entry is a CIDR (`10.0.0.0/8`, `fd00::/8`), and a registry whose host is an address in
//! it, or a name resolving to one, is insecure; or it is a `host[:port]` matched as
//! written. A leading `http://` or `https://` is dropped (as dockerd does, with a
//! warning); another scheme, or a `/` that is no CIDR, is an error naming the entry.

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::{Result, StoreError};

/// How long a name's addresses are kept before it is resolved again.
const RESOLVE_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct InsecureRegistries {
    /// `host[:port]` entries, as written.
    hosts: Vec<String>,
    cidrs: Vec<IpNet>,
    /// Host name → its addresses when last resolved (only with CIDRs configured).
    resolved: Mutex<HashMap<String, (Instant, Vec<IpAddr>)>>,
}

/// One entry, checked: `Ok(Some(cidr))`, `Ok(None)` for a `host[:port]`; the entry with
/// any `http://`/`https://` dropped comes back in `entry`.
fn parse_entry(entry: &str) -> Result<(String, Option<IpNet>)> {
    let bad = |reason: &str| StoreError::InvalidReference {
        reference: entry.to_string(),
        reason: format!("not an insecure registry: {reason}"),
    };
    let lower = entry.to_ascii_lowercase();
    let bare = if lower.starts_with("http://") || lower.starts_with("https://") {
        tracing::warn!(
            entry,
            "insecure registry: the scheme is dropped (dockerd does too)"
        );
        &entry[entry.find("://").map_or(0, |i| i + 3)..]
    } else {
        entry
    };
    if bare.contains("://") {
        return Err(bad("it must not contain '://'"));
    }
    if bare.is_empty() {
        return Err(bad("it is empty"));
    }
    if bare.contains('/') {
        let net = bare
            .parse::<IpNet>()
            .map_err(|e| bad(&format!("a '/' makes it a CIDR, and {e}")))?;
        // Docker stores the network (10.1.2.3/8 → 10.0.0.0/8).
        return Ok((bare.to_string(), Some(net.trunc())));
    }
    if bare.contains(char::is_whitespace) {
        return Err(bad("it contains white space"));
    }
    Ok((bare.to_string(), None))
}

/// Checks `entries` as [`InsecureRegistries::parse`] does (for the daemon's config).
pub fn validate(entries: &[String]) -> Result<()> {
    entries.iter().try_for_each(|e| parse_entry(e).map(|_| ()))
}

impl InsecureRegistries {
    /// The list's entries, checked (errors name the entry).
    pub fn parse(entries: &[String]) -> Result<InsecureRegistries> {
        let mut out = InsecureRegistries::default();
        for e in entries {
            match parse_entry(e)? {
                (_, Some(net)) => out.cidrs.push(net),
                (host, None) => out.hosts.push(host),
            }
        }
        Ok(out)
    }

    /// The CIDR entries (`10.0.0.0/8`), for `info`'s `InsecureRegistryCIDRs`.
    pub fn cidrs(&self) -> Vec<String> {
        self.cidrs.iter().map(IpNet::to_string).collect()
    }

    /// The `host[:port]` entries, for `info`'s `IndexConfigs`.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// Whether the registry `host_port` (`host[:port]`, `[v6]:port`) is insecure: listed
    /// as written, or its address (a name resolved, kept [`RESOLVE_TTL`]) in a CIDR.
    pub fn covers(&self, host_port: &str) -> bool {
        if self.hosts.iter().any(|h| h == host_port) {
            return true;
        }
        if self.cidrs.is_empty() {
            return false;
        }
        let host = host_of(host_port);
        let addrs = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self.resolve(host),
        };
        addrs
            .iter()
            .any(|a| self.cidrs.iter().any(|net| net.contains(a)))
    }

    /// `host`'s addresses (none when it does not resolve), cached.
    fn resolve(&self, host: &str) -> Vec<IpAddr> {
        let now = Instant::now();
        if let Some((at, addrs)) = self.resolved.lock().expect("resolved").get(host) {
            if now.duration_since(*at) < RESOLVE_TTL {
                return addrs.clone();
            }
        }
        let addrs: Vec<IpAddr> = (host, 0)
            .to_socket_addrs()
            .map(|it| it.map(|a| a.ip()).collect())
            .unwrap_or_default();
        self.resolved
            .lock()
            .expect("resolved")
            .insert(host.to_string(), (now, addrs.clone()));
        addrs
    }
}

/// The host of `host[:port]` or `[v6]:port`.
pub(super) fn host_of(host_port: &str) -> &str {
    if let Some(rest) = host_port.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host_port.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host_port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_hosts() {
        let l = InsecureRegistries::parse(&[
            "10.0.0.0/8".to_string(),
            "reg.example:5000".to_string(),
            "http://plain.example".to_string(),
            "fd00::1/8".to_string(),
        ])
        .unwrap();
        assert_eq!(l.cidrs(), ["10.0.0.0/8", "fd00::/8"]);
        assert_eq!(l.hosts(), ["reg.example:5000", "plain.example"]);
        assert!(l.covers("10.213.4.2:5000"));
        assert!(l.covers("10.1.1.1"));
        assert!(l.covers("[fd12::3]:443"));
        assert!(!l.covers("11.0.0.1:5000"));
        assert!(l.covers("reg.example:5000"));
        assert!(!l.covers("reg.example"));
        assert!(l.covers("plain.example"));
        // A name resolving into a range (localhost → 127.0.0.1).
        let lo = InsecureRegistries::parse(&["127.0.0.0/8".to_string()]).unwrap();
        assert!(lo.covers("localhost:5000"));
        for bad in ["10.0.0.0/33", "ftp://x", "a/b", "", "a b"] {
            let e = InsecureRegistries::parse(&[bad.to_string()])
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"))
                .to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert_eq!(host_of("[::1]:5000"), "::1");
        assert_eq!(host_of("h:5000"), "h");
        assert_eq!(host_of("fd00::1"), "fd00::1");
    }
}
