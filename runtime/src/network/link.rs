//! Link, address and route configuration over rtnetlink (never by running `ip`): the
//! bridge, each container's veth pair, and the container side of it inside its netns.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;
use std::path::Path;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::subnet::Ipv4Net;
use crate::error::{Result, RuntimeError};

/// Name of the container's interface inside its namespace, as in Docker.
pub(crate) const CONTAINER_IFNAME: &str = "eth0";

fn nl(step: &'static str, name: &str) -> impl FnOnce(rtnetlink::Error) -> RuntimeError {
    let name = name.to_string();
    move |source| RuntimeError::Netlink { step, name, source }
}

/// The errno a netlink error carries (positive), if any.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Opens a netlink connection in the calling thread's namespace and drives it on the
/// current tokio runtime.
pub(crate) fn connect(ns: &Path) -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| RuntimeError::Io {
        step: "open netlink socket",
        path: ns.to_path_buf(),
        source,
    })?;
    tokio::spawn(conn);
    Ok(handle)
}

pub(crate) async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl("get link", name)(e)),
    }
}

/// Creates the bridge if missing, gives it the gateway address and brings it up.
/// Idempotent, so restore and every prepare may call it.
pub(crate) async fn ensure_bridge(h: &Handle, name: &str, subnet: Ipv4Net) -> Result<u32> {
    ensure_bridge_with(h, name, subnet, subnet.gateway()).await
}

/// [`ensure_bridge`] with a gateway address of the caller's choice (`--gateway`).
pub(crate) async fn ensure_bridge_with(
    h: &Handle,
    name: &str,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<u32> {
    let index = match link_index(h, name).await? {
        Some(i) => i,
        None => {
            match h.link().add(LinkBridge::new(name).build()).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(nl("add bridge", name)(e)),
            }
            link_index(h, name)
                .await?
                .ok_or_else(|| nl("find new bridge", name)(rtnetlink::Error::RequestFailed))?
        }
    };
    if !has_address(h, index, gateway, subnet.prefix(), name).await? {
        match h
            .address()
            .add(index, IpAddr::V4(gateway), subnet.prefix())
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(nl("add bridge address", name)(e)),
        }
    }
    set_up(h, index, name).await?;
    Ok(index)
}

async fn has_address(h: &Handle, index: u32, ip: Ipv4Addr, prefix: u8, name: &str) -> Result<bool> {
    let mut addrs = h.address().get().set_link_index_filter(index).execute();
    while let Some(msg) = addrs.try_next().await.map_err(nl("list addresses", name))? {
        let matches = msg.header.prefix_len == prefix
            && msg
                .attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Local(IpAddr::V4(a)) | AddressAttribute::Address(IpAddr::V4(a)) if *a == ip));
        if matches {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn set_up(h: &Handle, index: u32, name: &str) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl("set link up", name))
}

/// Deletes a link by name; a link that is already gone is fine.
pub(crate) async fn delete_link(h: &Handle, name: &str) -> Result<()> {
    let Some(index) = link_index(h, name).await? else {
        return Ok(());
    };
    match h.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(nl("delete link", name)(e)),
    }
}

/// Creates a veth pair: `host_name` enslaved to the bridge and up, its peer born directly
/// inside the namespace `netns_fd` as `eth0` with `mac` (no temporary name on the host).
pub(crate) async fn create_veth(
    h: &Handle,
    host_name: &str,
    bridge_index: u32,
    netns_fd: RawFd,
    mac: [u8; 6],
) -> Result<()> {
    create_veth_named(h, host_name, CONTAINER_IFNAME, bridge_index, netns_fd, mac).await
}

/// [`create_veth`] with the container side named `peer_name` (`eth1` ... for further
/// networks).
pub(crate) async fn create_veth_named(
    h: &Handle,
    host_name: &str,
    peer_name: &str,
    bridge_index: u32,
    netns_fd: RawFd,
    mac: [u8; 6],
) -> Result<()> {
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer_name)
        .address(mac.to_vec())
        .setns_by_fd(netns_fd)
        .build();
    let msg = LinkVeth::new(host_name, peer_name)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .controller(bridge_index)
        .up()
        .build();
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(nl("add veth", host_name))
}

/// Puts an existing link on the bridge and up again (after a restart found the bridge
/// recreated, which leaves former ports detached).
pub(crate) async fn enslave(h: &Handle, name: &str, bridge_index: u32) -> Result<()> {
    let Some(index) = link_index(h, name).await? else {
        return Ok(());
    };
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .controller(bridge_index)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(nl("attach to bridge", name))
}

/// Brings `lo` up in the namespace the handle belongs to.
pub(crate) async fn loopback_up(h: &Handle) -> Result<()> {
    let index = link_index(h, "lo")
        .await?
        .ok_or_else(|| nl("find", "lo")(rtnetlink::Error::RequestFailed))?;
    set_up(h, index, "lo").await
}

/// Inside the container's namespace: `lo` up, `eth0` addressed and up, default route via
/// the bridge's gateway.
pub(crate) async fn configure_container_side(
    h: &Handle,
    ip: Ipv4Addr,
    subnet: Ipv4Net,
) -> Result<()> {
    configure_interface(
        h,
        CONTAINER_IFNAME,
        ip,
        subnet.prefix(),
        Some(subnet.gateway()),
    )
    .await
}

/// Inside the container's namespace: `lo` up, `ifname` addressed and up, and a default
/// route via `gateway` if given (only the first network that may reach out gets one).
pub(crate) async fn configure_interface(
    h: &Handle,
    ifname: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
) -> Result<()> {
    loopback_up(h).await?;
    let index = link_index(h, ifname)
        .await?
        .ok_or_else(|| nl("find", ifname)(rtnetlink::Error::RequestFailed))?;
    h.address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
        .map_err(nl("add address", ifname))?;
    set_up(h, index, ifname).await?;
    let Some(gateway) = gateway else {
        return Ok(());
    };
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(index)
        .build();
    h.route()
        .add(route)
        .execute()
        .await
        .map_err(nl("add default route", ifname))
}

/// The host's IPv4 routes other than default routes, as (destination, prefix, output
/// interface index): a new network's subnet must not collide with them.
pub(crate) async fn routes_v4(h: &Handle) -> Result<Vec<(Ipv4Addr, u8, Option<u32>)>> {
    use netlink_packet_route::route::{RouteAddress, RouteAttribute};
    let mut out = Vec::new();
    let mut routes = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(msg) = routes.try_next().await.map_err(nl("list routes", "host"))? {
        let prefix = msg.header.destination_prefix_length;
        if prefix == 0 || msg.header.table != 254 {
            continue; // default routes, and local/broadcast table entries
        }
        let mut dst = None;
        let mut oif = None;
        for a in &msg.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(*d),
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        if let Some(d) = dst {
            out.push((d, prefix, oif));
        }
    }
    Ok(out)
}
