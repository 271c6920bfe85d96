//! A network namespace of the test's own, joined to the host by a veth pair (`/30`), so a
//! server inside it has a non-loopback address (registries there are not "loopback
//! registries"). Made and removed with `ip` (tests may use external tools); removed by name
//! when dropped.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct NetNs {
    pub name: String,
    host_if: String,
    /// The host side's address.
    pub host_ip: String,
    /// The namespace side's address (where servers inside listen).
    pub ns_ip: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl NetNs {
    /// Creates `sk<pid><n>` with addresses `10.213.<a>.<b+1>` (host) and `.<b+2>` (inside).
    pub fn create() -> Result<NetNs> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let name = format!("sk{}x{n}", pid % 1_000_000);
        let host_if = format!("sh{}x{n}", pid % 1_000_000);
        let ns_if = format!("sn{}x{n}", pid % 1_000_000);
        let a = (pid / 64 + n) % 250;
        let b = (pid % 64) * 4;
        let host_ip = format!("10.213.{a}.{}", b + 1);
        let ns_ip = format!("10.213.{a}.{}", b + 2);
        ip(&["netns", "add", &name])?;
        let ns = NetNs {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: host_ip.clone(),
            ns_ip: ns_ip.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&[
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns_if,
        ])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `program` to be run inside the namespace (`ip netns exec` execs it: the child's PID
    /// is the program's).
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Why namespaces cannot be made here, if they cannot.
pub fn netns_unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root for network namespaces".to_string());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("the ip tool (iproute2) is missing".to_string()),
    }
}
