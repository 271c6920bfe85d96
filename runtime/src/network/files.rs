//! The container's `/etc/hosts` and `/etc/resolv.conf` contents (the runtime writes them
//! into the container). Pure, so the filtering rules are unit-tested.

use std::net::{IpAddr, Ipv4Addr};

/// Nameservers used when the host only has loopback resolvers (unreachable from a
/// container's own namespace), as Docker does.
const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// `/etc/hosts` for a container with its own namespace: localhost entries plus the
/// container's address (if it has one) under its hostname.
pub fn hosts_file(hostname: &str, ip: Option<Ipv4Addr>) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    if let Some(ip) = ip {
        s.push_str(&format!("{ip}\t{hostname}\n"));
    }
    s
}

/// The host's resolv.conf made usable from a bridged container: loopback nameservers
/// (a local caching resolver the container cannot reach) and IPv6 ones (the bridge is
/// IPv4-only) are dropped; if none is left, public fallbacks are used.
pub fn resolv_conf_for_bridge(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            match words.next().and_then(|a| a.parse::<IpAddr>().ok()) {
                Some(IpAddr::V4(a)) if !a.is_loopback() => servers += 1,
                _ => continue,
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        for ns in FALLBACK_NAMESERVERS {
            out.push_str(&format!("nameserver {ns}\n"));
        }
    }
    out
}

/// resolv.conf for a container on a user-defined network, as Docker writes it: the host's
/// `search` and `options` lines kept, one `nameserver 127.0.0.11` (the embedded DNS
/// server, which forwards what it does not know), with `ndots:0` as Docker adds.
pub fn resolv_conf_for_embedded_dns(host: &str) -> String {
    let mut out = String::from("nameserver 127.0.0.11\n");
    for line in host.lines() {
        let first = line.split_whitespace().next();
        if matches!(first, Some("search") | Some("options")) {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !out.contains("\noptions") {
        out.push_str("options ndots:0\n");
    }
    out
}

/// The host's IPv4 nameservers from its resolv.conf text (loopback ones included: the
/// embedded DNS forwards from the host's namespace, where they answer).
pub fn host_nameservers(host: &str) -> Vec<Ipv4Addr> {
    host.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next()?.parse::<Ipv4Addr>().ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_dns_resolv_conf() {
        let host = "nameserver 10.0.0.1\nsearch example.org\noptions edns0\n";
        assert_eq!(
            resolv_conf_for_embedded_dns(host),
            "nameserver 127.0.0.11\nsearch example.org\noptions edns0\n"
        );
        assert_eq!(
            resolv_conf_for_embedded_dns(""),
            "nameserver 127.0.0.11\noptions ndots:0\n"
        );
        assert_eq!(
            host_nameservers("nameserver 127.0.0.53\nnameserver ::1\nnameserver 1.2.3.4\n"),
            vec![Ipv4Addr::new(127, 0, 0, 53), Ipv4Addr::new(1, 2, 3, 4)]
        );
    }

    #[test]
    fn hosts_lists_container() {
        let h = hosts_file("web", Some(Ipv4Addr::new(172, 18, 0, 2)));
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("172.18.0.2\tweb\n"));
        assert!(!hosts_file("web", None).contains("web"));
    }

    #[test]
    fn resolv_filters_loopback_and_ipv6() {
        let host = "# generated\nsearch example.org\nnameserver 127.0.0.53\nnameserver ::1\nnameserver fd00::1\nnameserver 192.0.2.53\noptions edns0\n";
        let r = resolv_conf_for_bridge(host);
        assert_eq!(
            r,
            "# generated\nsearch example.org\nnameserver 192.0.2.53\noptions edns0\n"
        );
        let only_local = resolv_conf_for_bridge("nameserver 127.0.0.1\n");
        assert_eq!(only_local, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
}
