//! A slow link to a registry, built natively over rtnetlink: a new network namespace (held
//! by a file descriptor, never bind-mounted, so it vanishes with its last user), a veth pair
//! joining it to the host with a /30 on each side, and a tbf qdisc ([`crate::tbf`]) as the
//! root qdisc of both ends, so requests and responses are both rate limited. A registry
//! process is started inside the namespace, and [`crate::delay_proxy`] in front of it adds
//! the latency.
//!
//! Cleanup: dropping [`ShapedLink`] kills the registry (by PID) and deletes the veth pair
//! (deleting one end deletes its peer); the namespace goes with the last descriptor. If the
//! harness dies without dropping it, the registry gets SIGKILL from the kernel
//! (`PR_SET_PDEATHSIG`), and with its last user gone the namespace and the veth end inside
//! it go too, which removes the host end.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoVeth};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
use netlink_packet_route::RouteNetlinkMessage;
use nix::sched::{setns, unshare, CloneFlags};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::tbf::Tbf;

/// Port the registry listens on inside the namespace.
pub const REGISTRY_PORT: u16 = 5000;

/// The namespace, the veth pair and the registry inside.
pub struct ShapedLink {
    netns: File,
    host_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
    registry: Option<Child>,
}

impl ShapedLink {
    /// Makes the namespace and the veth pair (`skl<tag>h` on the host, `skl<tag>n` inside),
    /// addresses `10.213.<a>.<b>/30`, and a tbf of `rate_bits` bits/s on both ends.
    pub fn create(tag: u32, rate_bits: u64) -> Result<ShapedLink> {
        let netns = new_netns()?;
        let host_if = format!("skl{}h", tag % 100_000);
        let ns_if = format!("skl{}n", tag % 100_000);
        let slot = tag % 16_000;
        let base = Ipv4Addr::new(10, 213, (slot / 64) as u8, ((slot % 64) * 4) as u8);
        let host_ip = Ipv4Addr::from(u32::from(base) + 1);
        let ns_ip = Ipv4Addr::from(u32::from(base) + 2);
        let link = ShapedLink {
            netns,
            host_if: host_if.clone(),
            host_ip,
            ns_ip,
            registry: None,
        };
        let tbf = Tbf::for_rate(rate_bits);
        let ns_fd = link.netns.as_raw_fd();
        let (hi, ni) = (host_if.clone(), ns_if.clone());
        on_thread(None, move |h| async move {
            let peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name(&ni)
                .setns_by_fd(ns_fd)
                .build();
            let msg = LinkVeth::new(&hi, &ni)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .up()
                .build();
            h.link()
                .add(msg)
                .execute()
                .await
                .with_context(|| format!("adding veth {hi}"))?;
            configure(&h, &hi, host_ip, tbf).await
        })?;
        let ns = link.netns.try_clone()?;
        on_thread(Some(ns), move |h| async move {
            let lo = index(&h, "lo").await?;
            h.link()
                .set(LinkUnspec::new_with_index(lo).up().build())
                .execute()
                .await
                .context("setting lo up")?;
            configure(&h, &ns_if, ns_ip, tbf).await
        })?;
        Ok(link)
    }

    /// The host's end (for logs).
    pub fn host_if(&self) -> &str {
        &self.host_if
    }

    /// The host side's address (the registry sees connections from it).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// Where the registry inside listens.
    pub fn registry_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ns_ip), REGISTRY_PORT)
    }

    /// Starts `docker-registry serve` inside the namespace serving `storage` (a registry's
    /// filesystem storage, which may be shared with a registry outside: the distribution
    /// server keeps no state of its own beside it), and waits until it answers.
    pub fn start_registry(&mut self, bin: &Path, storage: &Path, dir: &Path) -> Result<()> {
        let config = dir.join("shaped-registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {}\n",
                storage.display(),
                self.registry_addr()
            ),
        )?;
        let log = File::create(dir.join("shaped-registry.log"))?;
        let ns = self.netns.try_clone()?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: between fork and exec only async-signal-safe calls: setns and prctl.
        unsafe {
            cmd.pre_exec(move || {
                setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} in the namespace", bin.display()))?;
        self.registry = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self
                .registry
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "registry in the namespace exited with {st}; log in {}",
                    dir.join("shaped-registry.log").display()
                );
            }
            if std::net::TcpStream::connect_timeout(
                &self.registry_addr(),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "registry at {} did not answer within 20 s",
                    self.registry_addr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The registry's PID, if running.
    pub fn registry_pid(&self) -> Option<u32> {
        self.registry.as_ref().map(|c| c.id())
    }

    /// Stops the registry and deletes the veth pair (idempotent).
    pub fn teardown(&mut self) -> Result<()> {
        if let Some(mut c) = self.registry.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let name = self.host_if.clone();
        on_thread(None, move |h| async move {
            match index(&h, &name).await {
                Ok(i) => match h.link().del(i).execute().await {
                    Ok(()) => Ok(()),
                    Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
                    Err(e) => Err(anyhow!("deleting {name}: {e}")),
                },
                Err(_) => Ok(()), // already gone
            }
        })
    }
}

impl Drop for ShapedLink {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("shaped link cleanup: {e:#}");
        }
    }
}

/// A new network namespace, held only by the returned descriptor. A short-lived thread
/// unshares (a process's other threads stay where they are) and opens its own namespace.
fn new_netns() -> Result<File> {
    std::thread::spawn(|| -> Result<File> {
        unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        File::open("/proc/thread-self/ns/net").context("opening the new namespace")
    })
    .join()
    .map_err(|_| anyhow!("netns thread panicked"))?
}

/// Runs `work` with a netlink handle on a thread of its own, in namespace `ns` when given
/// (`setns` applies to the calling thread only), on a single-threaded runtime.
fn on_thread<F, Fut>(ns: Option<File>, work: F) -> Result<()>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<()>>,
{
    std::thread::spawn(move || -> Result<()> {
        if let Some(ns) = &ns {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).context("setns into the link's netns")?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
            tokio::spawn(conn);
            work(handle).await
        })
    })
    .join()
    .map_err(|_| anyhow!("netlink thread panicked"))?
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

async fn index(h: &Handle, name: &str) -> Result<u32> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(m)) => Ok(m.header.index),
        Ok(None) => bail!("no link {name}"),
        Err(e) => Err(anyhow!("looking up link {name}: {e}")),
    }
}

/// One end: address `/30`, up, tbf as the root qdisc.
async fn configure(h: &Handle, name: &str, ip: Ipv4Addr, tbf: Tbf) -> Result<()> {
    let i = index(h, name).await?;
    h.address()
        .add(i, IpAddr::V4(ip), 30)
        .execute()
        .await
        .with_context(|| format!("adding {ip}/30 to {name}"))?;
    h.link()
        .set(LinkUnspec::new_with_index(i).up().build())
        .execute()
        .await
        .with_context(|| format!("setting {name} up"))?;
    add_tbf(h, i, tbf)
        .await
        .with_context(|| format!("adding a tbf qdisc to {name}"))
}

/// `RTM_NEWQDISC` for a root tbf on link `index` (rtnetlink's request builder cannot
/// carry qdisc options, so the message is sent as is).
async fn add_tbf(h: &Handle, index: u32, tbf: Tbf) -> Result<()> {
    let mut msg = TcMessage::with_index(index as i32);
    msg.header.parent = TcHandle::ROOT;
    msg.header.handle = TcHandle { major: 1, minor: 0 };
    msg.attributes.push(TcAttribute::Kind("tbf".into()));
    msg.attributes.push(TcAttribute::Options(tbf.options()));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    let mut h = h.clone();
    let mut resp = h.request(req)?;
    use futures::StreamExt;
    while let Some(m) = resp.next().await {
        if let NetlinkPayload::Error(e) = m.payload {
            if let Some(code) = e.code {
                bail!(
                    "RTM_NEWQDISC tbf: {}",
                    std::io::Error::from_raw_os_error(-code.get())
                );
            }
        }
    }
    Ok(())
}
