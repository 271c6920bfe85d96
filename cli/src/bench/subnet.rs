//! Picking a bridge and subnet for a bench daemon that nothing on the host uses yet.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Result};

/// The IPv4 routes of the host as `(destination, mask)`, from `/proc/net/route` (after a
/// header line; each address the hex value of its network-order bytes read as a native
/// `u32`).
fn parse_routes(text: &str) -> Vec<(u32, u32)> {
    let addr = |s: &str| {
        let v = u32::from_str_radix(s, 16).ok()?;
        Some(u32::from(Ipv4Addr::from(v.to_ne_bytes())))
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((addr(f.get(1)?)?, addr(f.get(7)?)?))
        })
        .collect()
}

/// Whether the /24 at `net` meets any route (a default route excepted).
fn meets_a_route(net: Ipv4Addr, routes: &[(u32, u32)]) -> bool {
    let (net, mask24) = (u32::from(net), u32::MAX << 8);
    routes
        .iter()
        .filter(|(_, mask)| *mask != 0)
        .any(|&(dst, mask)| {
            let common = mask & mask24;
            dst & common == net & common
        })
}

/// `(bridge name, subnet)` for bench daemon `n`: `skbench<k>` and `172.30.<k>.0/24` for the
/// first `k` from a per-process start whose bridge does not exist and whose subnet meets
/// no host route (another daemon's, a VPN's). Errors when all 200 are taken.
pub fn pick(n: u32) -> Result<(String, String)> {
    let routes = std::fs::read_to_string("/proc/net/route")
        .map(|t| parse_routes(&t))
        .unwrap_or_default();
    let first = (std::process::id() + n) % 200;
    for i in 0..200 {
        let k = (first + i) % 200 + 20;
        let bridge = format!("skbench{k}");
        let net = Ipv4Addr::new(172, 30, k as u8, 0);
        if Path::new("/sys/class/net").join(&bridge).exists() || meets_a_route(net, &routes) {
            continue;
        }
        return Ok((bridge, format!("{net}/24")));
    }
    bail!("no free subnet for a bench daemon: 172.30.20.0/24 to 172.30.219.0/24 all meet a host route or bridge")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        br0\t00001EAC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
        sk1\t00151EAC\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn reads_proc_net_route() {
        let r = parse_routes(ROUTES);
        assert_eq!(
            r,
            vec![
                (0, 0),
                (u32::from(Ipv4Addr::new(172, 30, 0, 0)), u32::MAX << 16),
                (u32::from(Ipv4Addr::new(172, 30, 21, 0)), u32::MAX << 8),
            ]
        );
    }

    #[test]
    fn a_subnet_meeting_a_route_is_taken() {
        let r = parse_routes(ROUTES);
        // Inside 172.30.0.0/16 (br0).
        assert!(meets_a_route(Ipv4Addr::new(172, 30, 40, 0), &r));
        let only_24 = vec![r[2]];
        assert!(meets_a_route(Ipv4Addr::new(172, 30, 21, 0), &only_24));
        assert!(!meets_a_route(Ipv4Addr::new(172, 30, 22, 0), &only_24));
        // The default route takes nothing.
        assert!(!meets_a_route(Ipv4Addr::new(172, 30, 22, 0), &r[..1]));
    }
}
