//! IPv4 subnets and address allocation (IPAM) for the bridge network: pure logic, so the
//! collision rules are unit-tested without a kernel.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// An IPv4 network such as `172.18.0.0/16` (host bits must be zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// Builds a subnet; `prefix` must leave room for a gateway and one container (≤ 30).
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self> {
        let text = format!("{network}/{prefix}");
        if !(8..=30).contains(&prefix) {
            return Err(RuntimeError::InvalidSubnet {
                subnet: text,
                reason: "prefix length must be between 8 and 30",
            });
        }
        let net = Self { network, prefix };
        if u32::from(network) & !net.mask() != 0 {
            return Err(RuntimeError::InvalidSubnet {
                subnet: text,
                reason: "address has host bits set (use the network address)",
            });
        }
        Ok(net)
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// The bridge's own address: the first host address, by Docker's convention.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// Picks a free container address: the next one after `last` (round robin, so a just
    /// released address is not handed out again at once), skipping network, gateway,
    /// broadcast and everything in `used`.
    pub fn allocate(
        &self,
        used: &BTreeSet<Ipv4Addr>,
        last: Option<Ipv4Addr>,
        bridge: &str,
    ) -> Result<Ipv4Addr> {
        let first = u32::from(self.gateway()) + 1;
        let end = u32::from(self.broadcast()); // exclusive
        let count = end - first;
        let start = match last {
            Some(ip) if self.contains(ip) && u32::from(ip) >= first && u32::from(ip) < end => {
                u32::from(ip) + 1 - first
            }
            _ => 0,
        };
        for i in 0..count {
            let candidate = Ipv4Addr::from(first + (start + i) % count);
            if !used.contains(&candidate) {
                return Ok(candidate);
            }
        }
        Err(RuntimeError::SubnetExhausted {
            subnet: self.to_string(),
            bridge: bridge.to_string(),
        })
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason| RuntimeError::InvalidSubnet {
            subnet: s.to_string(),
            reason,
        };
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS/PREFIX, e.g. 172.18.0.0/16"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| bad("prefix length is not a number"))?;
        Self::new(addr, prefix)
    }
}

impl Ipv4Net {
    /// dockerd's `--bip`: the bridge's address with the subnet's prefix
    /// (`172.18.0.1/16`), or the subnet itself (`172.18.0.0/16`). skiff's bridge address
    /// is the subnet's first host address ([`Ipv4Net::gateway`]), so any other host address
    /// is refused ([`RuntimeError::InvalidSubnet`]) rather than silently moved.
    pub fn from_bip(s: &str) -> Result<Self> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        if let (Ok(addr), Ok(prefix)) = (addr.parse::<Ipv4Addr>(), prefix.parse::<u8>()) {
            if (8..=30).contains(&prefix) {
                let mask = u32::MAX << (32 - u32::from(prefix));
                let network = Ipv4Addr::from(u32::from(addr) & mask);
                if addr != network {
                    let net = Self::new(network, prefix)?;
                    if addr != net.gateway() {
                        return Err(RuntimeError::InvalidSubnet {
                            subnet: s.to_string(),
                            reason: "the bridge's address must be the subnet's first host address",
                        });
                    }
                    return Ok(net);
                }
            }
        }
        s.parse()
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = RuntimeError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(n: Ipv4Net) -> String {
        n.to_string()
    }
}

/// Docker's convention: a locally administered MAC made from the IPv4 address, so the
/// address and MAC never disagree and nothing random needs persisting.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {

    #[test]
    fn bip_takes_the_bridge_address_or_the_subnet() {
        let net: Ipv4Net = "10.226.0.0/24".parse().unwrap();
        assert_eq!(Ipv4Net::from_bip("10.226.0.1/24").unwrap(), net);
        assert_eq!(Ipv4Net::from_bip("10.226.0.0/24").unwrap(), net);
        let e = Ipv4Net::from_bip("10.226.0.5/24").unwrap_err().to_string();
        assert!(e.contains("first host address"), "{e}");
        assert!(Ipv4Net::from_bip("10.226.0.1").is_err());
        assert!(Ipv4Net::from_bip("10.226.0.1/31").is_err());
    }

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_rejects() {
        let n = net("172.18.0.0/16");
        assert_eq!(n.gateway(), Ipv4Addr::new(172, 18, 0, 1));
        assert_eq!(n.broadcast(), Ipv4Addr::new(172, 18, 255, 255));
        assert!(n.contains(Ipv4Addr::new(172, 18, 3, 4)));
        assert!(!n.contains(Ipv4Addr::new(172, 19, 0, 4)));
        for bad in [
            "172.18.0.1/16",
            "172.18.0.0",
            "172.18.0.0/31",
            "172.18.0.0/7",
            "x/16",
            "1.2.3.0/x",
        ] {
            let err = bad.parse::<Ipv4Net>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn allocates_without_collisions_round_robin() {
        let n = net("10.9.0.0/29"); // hosts .1 (gateway) .. .6, broadcast .7
        let mut used = BTreeSet::new();
        let mut last = None;
        for expect in 2..=6 {
            let ip = n.allocate(&used, last, "br").unwrap();
            assert_eq!(ip, Ipv4Addr::new(10, 9, 0, expect));
            used.insert(ip);
            last = Some(ip);
        }
        let err = n.allocate(&used, last, "br").unwrap_err();
        assert!(matches!(err, RuntimeError::SubnetExhausted { .. }));
        assert!(err.to_string().contains("10.9.0.0/29"));
        // Releasing .3 makes exactly .3 available, found by wrapping around.
        used.remove(&Ipv4Addr::new(10, 9, 0, 3));
        assert_eq!(
            n.allocate(&used, last, "br").unwrap(),
            Ipv4Addr::new(10, 9, 0, 3)
        );
    }

    #[test]
    fn round_robin_does_not_reuse_just_released() {
        let n = net("10.9.0.0/24");
        let mut used = BTreeSet::new();
        let a = n.allocate(&used, None, "br").unwrap();
        used.insert(a);
        used.remove(&a);
        let b = n.allocate(&used, Some(a), "br").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn mac_from_ip() {
        assert_eq!(
            format_mac(&mac_for(Ipv4Addr::new(172, 18, 0, 2))),
            "02:42:ac:12:00:02"
        );
    }
}
