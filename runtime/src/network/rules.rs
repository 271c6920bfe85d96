//! Which iptables rules the bridge network needs, as data, and the iptables-restore scripts
//! that bring the host's tables there: pure, so the exact rules are unit-tested.

use std::net::Ipv4Addr;

use super::iptables::{Rule, Snapshot};
use super::{BridgeNetwork, NetworkConfig, PublishedPort};

/// skiff's own chains, named from the configured prefix.
#[derive(Clone, Debug)]
pub(crate) struct Chains {
    /// nat: outbound masquerade for the subnet.
    pub postrouting: String,
    /// nat: one DNAT rule per published port.
    pub dnat: String,
    /// filter: lets bridge traffic and published ports through FORWARD.
    pub forward: String,
}

impl Chains {
    pub fn new(prefix: &str) -> Self {
        Self {
            postrouting: format!("{prefix}-POSTROUTING"),
            dnat: format!("{prefix}-DNAT"),
            forward: format!("{prefix}-FORWARD"),
        }
    }

    /// Every (table, chain) pair, for creating and deleting them.
    pub fn all(&self) -> [(&'static str, &str); 3] {
        [
            ("nat", &self.postrouting),
            ("nat", &self.dnat),
            ("filter", &self.forward),
        ]
    }
}

/// The rules inside skiff's chains that exist while any container is on the bridge.
pub(crate) fn chain_rules(cfg: &NetworkConfig, chains: &Chains) -> Vec<Rule> {
    let br = cfg.bridge.as_str();
    let subnet = cfg.subnet.to_string();
    vec![
        Rule::new(
            "nat",
            &chains.postrouting,
            &["-s", &subnet, "!", "-o", br, "-j", "MASQUERADE"],
        ),
        Rule::new("filter", &chains.forward, &["-i", br, "-j", "ACCEPT"]),
        Rule::new(
            "filter",
            &chains.forward,
            &[
                "-o",
                br,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ],
        ),
    ]
}

/// The jumps from the built-in chains into skiff's, inserted first.
pub(crate) fn jump_rules(chains: &Chains) -> Vec<Rule> {
    vec![
        Rule::new("nat", "POSTROUTING", &["-j", &chains.postrouting]),
        Rule::new(
            "nat",
            "PREROUTING",
            &["-m", "addrtype", "--dst-type", "LOCAL", "-j", &chains.dnat],
        ),
        // Loopback is left to the userland proxy (DNAT of 127.0.0.1 would need route_localnet).
        Rule::new(
            "nat",
            "OUTPUT",
            &[
                "!",
                "-d",
                "127.0.0.0/8",
                "-m",
                "addrtype",
                "--dst-type",
                "LOCAL",
                "-j",
                &chains.dnat,
            ],
        ),
        Rule::new("filter", "FORWARD", &["-j", &chains.forward]),
    ]
}

/// A published port's rules: DNAT of traffic from elsewhere to the container, and its
/// acceptance in FORWARD; tagged with the container's id.
#[cfg(test)]
pub(crate) fn port_rules(
    cfg: &NetworkConfig,
    chains: &Chains,
    id: &str,
    ip: Ipv4Addr,
    port: &PublishedPort,
) -> Vec<Rule> {
    port_rules_on(&cfg.bridge, chains, id, ip, port)
}

/// [`port_rules`] for a container whose published address is on bridge `br`.
pub(crate) fn port_rules_on(
    br: &str,
    chains: &Chains,
    id: &str,
    ip: Ipv4Addr,
    port: &PublishedPort,
) -> Vec<Rule> {
    let proto = port.protocol.as_str();
    let host_port = port.host_port.to_string();
    let container_port = port.container_port.to_string();
    let to = format!("{ip}:{container_port}");
    let mut dnat: Vec<String> = vec!["-p".into(), proto.into()];
    if !port.host_ip.is_unspecified() {
        dnat.extend(["-d".into(), format!("{}/32", port.host_ip)]);
    }
    dnat.extend(
        [
            "--dport",
            &host_port,
            "!",
            "-i",
            br,
            "-j",
            "DNAT",
            "--to-destination",
            &to,
        ]
        .map(String::from),
    );
    let dnat_refs: Vec<&str> = dnat.iter().map(String::as_str).collect();
    let dest = format!("{ip}/32");
    vec![
        Rule::new("nat", &chains.dnat, &dnat_refs).tagged(id),
        Rule::new(
            "filter",
            &chains.forward,
            &[
                "-d",
                &dest,
                "!",
                "-i",
                br,
                "-o",
                br,
                "-p",
                proto,
                "--dport",
                &container_port,
                "-j",
                "ACCEPT",
            ],
        )
        .tagged(id),
    ]
}

/// User-defined networks' rules, as Docker's: `(first, rest)`. `first` goes before every
/// other rule of the forward chain: isolation (no traffic from one bridge to another,
/// the default bridge included) and, for `--internal` networks, nothing in or out but
/// within the bridge. `rest`: what lets each non-internal network out (accept, NAT).
pub(crate) fn user_rules(
    cfg: &NetworkConfig,
    chains: &Chains,
    nets: &[&BridgeNetwork],
) -> (Vec<Rule>, Vec<Rule>) {
    let mut first = Vec::new();
    let mut rest = Vec::new();
    let bridges: Vec<&str> = std::iter::once(cfg.bridge.as_str())
        .chain(nets.iter().map(|n| n.bridge.as_str()))
        .collect();
    for n in nets {
        let br = n.bridge.as_str();
        for other in bridges.iter().filter(|b| **b != br) {
            first.push(Rule::new(
                "filter",
                &chains.forward,
                &["-i", br, "-o", other, "-j", "DROP"],
            ));
            first.push(Rule::new(
                "filter",
                &chains.forward,
                &["-i", other, "-o", br, "-j", "DROP"],
            ));
        }
        if n.internal {
            first.push(Rule::new(
                "filter",
                &chains.forward,
                &["-i", br, "!", "-o", br, "-j", "DROP"],
            ));
            first.push(Rule::new(
                "filter",
                &chains.forward,
                &["!", "-i", br, "-o", br, "-j", "DROP"],
            ));
            rest.push(Rule::new(
                "filter",
                &chains.forward,
                &["-i", br, "-o", br, "-j", "ACCEPT"],
            ));
            continue;
        }
        let subnet = n.subnet.to_string();
        rest.push(Rule::new(
            "nat",
            &chains.postrouting,
            &["-s", &subnet, "!", "-o", br, "-j", "MASQUERADE"],
        ));
        rest.push(Rule::new(
            "filter",
            &chains.forward,
            &["-i", br, "-j", "ACCEPT"],
        ));
        rest.push(Rule::new(
            "filter",
            &chains.forward,
            &[
                "-o",
                br,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ],
        ));
    }
    // Pairs of user bridges were listed from both sides: keep each rule once.
    let mut seen = std::collections::HashSet::new();
    first.retain(|r| seen.insert(r.line("-A")));
    (first, rest)
}

const TABLES: [&str; 2] = ["nat", "filter"];

fn block(table: &str, lines: Vec<String>) -> String {
    if lines.is_empty() {
        return String::new();
    }
    format!("*{table}\n{}\nCOMMIT\n", lines.join("\n"))
}

fn jump_target(jump: &Rule) -> &str {
    jump.args.last().map(String::as_str).unwrap_or_default()
}

/// The script that makes skiff's chains hold exactly the base rules plus `port_rules`
/// (declaring a chain with `--noflush` creates or flushes it), and makes each jump into
/// them exist exactly once.
#[cfg(test)]
pub(crate) fn sync_script(
    cfg: &NetworkConfig,
    chains: &Chains,
    snapshot: &Snapshot,
    port_rules: &[Rule],
) -> String {
    sync_script_with(cfg, chains, snapshot, &[], port_rules)
}

/// [`sync_script`] with `first` rules before the base rules (isolation drops).
pub(crate) fn sync_script_with(
    cfg: &NetworkConfig,
    chains: &Chains,
    snapshot: &Snapshot,
    first: &[Rule],
    port_rules: &[Rule],
) -> String {
    let mut script = String::new();
    let base: Vec<Rule> = first
        .iter()
        .cloned()
        .chain(chain_rules(cfg, chains))
        .collect();
    for table in TABLES {
        let mut lines: Vec<String> = chains
            .all()
            .iter()
            .filter(|(t, _)| *t == table)
            .map(|(_, c)| format!(":{c} - [0:0]"))
            .collect();
        for rule in base.iter().chain(port_rules).filter(|r| r.table == table) {
            lines.push(rule.line("-A"));
        }
        for jump in jump_rules(chains).iter().filter(|r| r.table == table) {
            let existing = snapshot.jumps(table, &jump.chain, jump_target(jump));
            match existing.split_first() {
                None => lines.push(jump.line("-I").replacen(
                    &format!("-I {} ", jump.chain),
                    &format!("-I {} 1 ", jump.chain),
                    1,
                )),
                Some((_, extra)) => {
                    lines.extend(extra.iter().map(|l| l.replacen("-A ", "-D ", 1)));
                }
            }
        }
        script.push_str(&block(table, lines));
    }
    script
}

/// The script that removes every jump into skiff's chains and the chains themselves.
pub(crate) fn removal_script(chains: &Chains, snapshot: &Snapshot) -> String {
    let mut script = String::new();
    for table in TABLES {
        let mut lines = Vec::new();
        for jump in jump_rules(chains).iter().filter(|r| r.table == table) {
            for l in snapshot.jumps(table, &jump.chain, jump_target(jump)) {
                lines.push(l.replacen("-A ", "-D ", 1));
            }
        }
        for (_, chain) in chains.all().iter().filter(|(t, _)| *t == table) {
            if snapshot.has_chain(table, chain) {
                lines.push(format!("-F {chain}"));
                lines.push(format!("-X {chain}"));
            }
        }
        script.push_str(&block(table, lines));
    }
    script
}

#[cfg(test)]
mod tests {
    use super::super::Protocol;
    use super::*;

    #[test]
    fn port_rules_are_tagged_and_scoped() {
        let cfg = NetworkConfig::new("/s", "/r");
        let chains = Chains::new("SKIFF");
        let p = PublishedPort {
            protocol: Protocol::Udp,
            host_ip: Ipv4Addr::new(127, 0, 0, 1),
            host_port: 5353,
            container_port: 53,
        };
        let rules = port_rules(&cfg, &chains, "c1", Ipv4Addr::new(172, 18, 0, 2), &p);
        let dnat = rules[0].args.join(" ");
        assert_eq!(rules[0].chain, "SKIFF-DNAT");
        assert_eq!(
            dnat,
            "-p udp -d 127.0.0.1/32 --dport 5353 ! -i skiff0 -j DNAT --to-destination 172.18.0.2:53 -m comment --comment skiff:c1"
        );
        assert!(rules[1].args.join(" ").contains("-d 172.18.0.2/32"));
        let any = PublishedPort {
            host_ip: Ipv4Addr::UNSPECIFIED,
            ..p
        };
        assert!(
            !port_rules(&cfg, &chains, "c1", Ipv4Addr::new(172, 18, 0, 2), &any)[0]
                .args
                .contains(&"-d".to_string())
        );
    }

    const SAVED: &str = "*filter\n:FORWARD ACCEPT [0:0]\n:SKIFF-FORWARD - [0:0]\n\
        -A FORWARD -j SKIFF-FORWARD\n-A FORWARD -j SKIFF-FORWARD\nCOMMIT\n\
        *nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";

    #[test]
    fn sync_rewrites_chains_adds_missing_jumps_and_drops_duplicates() {
        let cfg = NetworkConfig::new("/s", "/r");
        let chains = Chains::new("SKIFF");
        let snap = Snapshot::parse(SAVED.to_string());
        let script = sync_script(&cfg, &chains, &snap, &[]);
        let expected = "*nat\n\
            :SKIFF-POSTROUTING - [0:0]\n\
            :SKIFF-DNAT - [0:0]\n\
            -A SKIFF-POSTROUTING -s 172.18.0.0/16 ! -o skiff0 -j MASQUERADE\n\
            -I POSTROUTING 1 -j SKIFF-POSTROUTING\n\
            -I PREROUTING 1 -m addrtype --dst-type LOCAL -j SKIFF-DNAT\n\
            -I OUTPUT 1 ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j SKIFF-DNAT\n\
            COMMIT\n\
            *filter\n\
            :SKIFF-FORWARD - [0:0]\n\
            -A SKIFF-FORWARD -i skiff0 -j ACCEPT\n\
            -A SKIFF-FORWARD -o skiff0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
            -D FORWARD -j SKIFF-FORWARD\n\
            COMMIT\n";
        assert_eq!(script, expected);
    }

    #[test]
    fn removal_deletes_jumps_then_chains() {
        let chains = Chains::new("SKIFF");
        let snap = Snapshot::parse(SAVED.to_string());
        assert_eq!(
            removal_script(&chains, &snap),
            "*filter\n-D FORWARD -j SKIFF-FORWARD\n-D FORWARD -j SKIFF-FORWARD\n\
             -F SKIFF-FORWARD\n-X SKIFF-FORWARD\nCOMMIT\n"
        );
        assert_eq!(removal_script(&chains, &Snapshot::parse(String::new())), "");
    }

    #[test]
    fn user_networks_are_isolated_and_internal_ones_closed() {
        let cfg = NetworkConfig::new("/s", "/r");
        let chains = Chains::new("SKIFF");
        let net = |id: &str, subnet: &str, internal| BridgeNetwork {
            id: id.into(),
            bridge: format!("br-{id}"),
            subnet: subnet.parse().unwrap(),
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            internal,
        };
        let a = net("a", "10.10.0.0/24", false);
        let b = net("b", "10.11.0.0/24", true);
        let (first, rest) = user_rules(&cfg, &chains, &[&a, &b]);
        let lines: Vec<String> = first.iter().map(|r| r.line("-A")).collect();
        assert!(lines.contains(&"-A SKIFF-FORWARD -i br-a -o skiff0 -j DROP".to_string()));
        assert!(lines.contains(&"-A SKIFF-FORWARD -i br-a -o br-b -j DROP".to_string()));
        assert!(lines.contains(&"-A SKIFF-FORWARD -i br-b -o br-a -j DROP".to_string()));
        assert!(lines.contains(&"-A SKIFF-FORWARD -i br-b ! -o br-b -j DROP".to_string()));
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("-i br-a -o br-b"))
                .count(),
            1
        );
        let rest: Vec<String> = rest.iter().map(|r| r.line("-A")).collect();
        assert!(rest
            .contains(&"-A SKIFF-POSTROUTING -s 10.10.0.0/24 ! -o br-a -j MASQUERADE".to_string()));
        assert!(!rest.iter().any(|l| l.contains("10.11.0.0")), "{rest:?}");
    }

    #[test]
    fn base_rules_name_bridge_and_subnet() {
        let cfg = NetworkConfig::new("/s", "/r");
        let chains = Chains::new("SKIFF");
        let masq = &chain_rules(&cfg, &chains)[0];
        assert_eq!(
            masq.args.join(" "),
            "-s 172.18.0.0/16 ! -o skiff0 -j MASQUERADE"
        );
        assert!(jump_rules(&chains)
            .iter()
            .all(|r| r.args.last().unwrap().starts_with("SKIFF-")));
    }
}
