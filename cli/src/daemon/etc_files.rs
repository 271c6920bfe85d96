//! The container's /etc/hosts and /etc/resolv.conf as Docker writes them, from the files
//! the network gives (runtime/src/network/files.rs) and the create options: `-h` with a
//! domain (`IP fqdn short`), `--add-host`, `--dns`, `--dns-search`, `--dns-option`.

use super::error::DaemonError;
use super::record::HostSpec;

/// /etc/hosts: the network's file with the container's line given the short name too when
/// the hostname has a domain, and `--add-host` entries (`NAME:IP`, `host-gateway` for the
/// bridge's gateway) before it, as Docker orders them.
pub fn hosts(
    base: &str,
    hostname: &str,
    extra: &[String],
    gateway: Option<&str>,
) -> Result<String, DaemonError> {
    let mut extra_lines = String::new();
    for e in extra {
        // NAME:IP, where IP may itself hold colons (IPv6); Docker also accepts NAME=IP.
        let (name, ip) = e
            .split_once('=')
            .or_else(|| e.split_once(':'))
            .ok_or_else(|| {
                DaemonError::Invalid(format!("invalid --add-host {e:?}: expected NAME:IP"))
            })?;
        let ip = match ip {
            "host-gateway" => gateway
                .filter(|g| !g.is_empty())
                .ok_or_else(|| {
                    DaemonError::Invalid(format!(
                        "invalid --add-host {e:?}: host-gateway needs the bridge network"
                    ))
                })?
                .to_string(),
            ip => ip
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .map_err(|_| {
                    DaemonError::Invalid(format!(
                        "invalid --add-host {e:?}: invalid IP address {ip:?}"
                    ))
                })?
                .to_string(),
        };
        if name.is_empty() {
            return Err(DaemonError::Invalid(format!(
                "invalid --add-host {e:?}: no name"
            )));
        }
        extra_lines.push_str(&format!("{ip}\t{name}\n"));
    }
    let short = hostname.split('.').next().unwrap_or(hostname);
    let mut out = String::new();
    let mut placed = false;
    for line in base.lines() {
        let mut words = line.split_whitespace();
        let ip = words.next().unwrap_or("");
        let names: Vec<&str> = words.collect();
        if !placed && names.first() == Some(&hostname) && !ip.starts_with('#') {
            out.push_str(&extra_lines);
            placed = true;
            if short != hostname && !names.contains(&short) {
                out.push_str(&format!("{line}\t{short}\n"));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    if !placed {
        out.push_str(&extra_lines);
    }
    Ok(out)
}

/// /etc/resolv.conf: `--dns` replaces the nameservers, `--dns-search` the search domains,
/// `--dns-option` the options; what is not given stays as the network wrote it.
pub fn resolv_conf(base: &str, h: &HostSpec) -> Result<String, DaemonError> {
    for d in &h.dns {
        d.parse::<std::net::IpAddr>()
            .map_err(|_| DaemonError::Invalid(format!("invalid --dns {d:?}: not an IP address")))?;
    }
    if h.dns.is_empty() && h.dns_search.is_empty() && h.dns_options.is_empty() {
        return Ok(base.to_string());
    }
    let mut out = String::new();
    for line in base.lines() {
        let key = line.split_whitespace().next().unwrap_or("");
        let replaced = (key == "nameserver" && !h.dns.is_empty())
            || ((key == "search" || key == "domain") && !h.dns_search.is_empty())
            || (key == "options" && !h.dns_options.is_empty());
        if !replaced {
            out.push_str(line);
            out.push('\n');
        }
    }
    for d in &h.dns {
        out.push_str(&format!("nameserver {d}\n"));
    }
    // `--dns-search .` means no search domains.
    let search: Vec<&str> = h
        .dns_search
        .iter()
        .map(String::as_str)
        .filter(|s| *s != ".")
        .collect();
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !h.dns_options.is_empty() {
        out.push_str(&format!("options {}\n", h.dns_options.join(" ")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n172.18.0.2\tweb.example.com\n";

    #[test]
    fn fqdn_gets_its_short_name_and_extra_hosts_come_first() {
        let h = hosts(
            BASE,
            "web.example.com",
            &["db:10.0.0.5".into(), "gw:host-gateway".into()],
            Some("172.18.0.1"),
        )
        .unwrap();
        assert!(
            h.ends_with("10.0.0.5\tdb\n172.18.0.1\tgw\n172.18.0.2\tweb.example.com\tweb\n"),
            "{h}"
        );
        assert!(hosts(BASE, "x", &["nocolon".into()], None).is_err());
        assert!(hosts(BASE, "x", &["a:notanip".into()], None).is_err());
        // No container line (none network): extra hosts appended.
        let h = hosts("127.0.0.1\tlocalhost\n", "x", &["a:1.2.3.4".into()], None).unwrap();
        assert!(h.ends_with("1.2.3.4\ta\n"));
    }

    #[test]
    fn dns_options_replace_the_networks() {
        let base = "nameserver 10.0.0.1\nsearch lan\noptions ndots:1\n";
        let h = HostSpec {
            dns: vec!["9.9.9.9".into()],
            dns_search: vec!["example.com".into()],
            ..Default::default()
        };
        assert_eq!(
            resolv_conf(base, &h).unwrap(),
            "options ndots:1\nnameserver 9.9.9.9\nsearch example.com\n"
        );
        let bad = HostSpec {
            dns: vec!["x".into()],
            ..Default::default()
        };
        assert!(resolv_conf(base, &bad).is_err());
    }
}
