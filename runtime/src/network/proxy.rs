//! The userland port proxy: makes a published port answer on the host itself (127.0.0.1
//! never passes the nat PREROUTING chain, so DNAT cannot serve it), like Docker's
//! docker-proxy. Binding it first also reserves the host port, so a busy port is refused
//! before the container starts, with an error naming the port.
//!
//! With [`ProxyProcesses`] (the daemon's choice) each port is served by a process of its
//! own, `skiff __port-proxy OWNER PROTO HOST_ADDR TARGET`, handed the bound socket as fd 3:
//! like docker-proxy it outlives a daemon restart, so the port keeps answering and its
//! connections keep flowing (live restore, docs/live-restore.md). A pid file under
//! [`ProxyProcesses::pid_dir`] lets the next daemon adopt it ([`PortProxy::adopt`]).
//! Without, the proxy is a task of the calling process.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::ports::Protocol;
use crate::error::{Result, RuntimeError};

/// How long a UDP flow without replies is kept (Docker uses 90 s as well).
const UDP_IDLE: Duration = Duration::from_secs(90);
/// Upper bound on concurrent UDP flows per port, so a flood cannot exhaust descriptors.
const UDP_MAX_FLOWS: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// argv[1] of a proxy process.
pub const PROXY_ARG: &str = "__port-proxy";
/// The bound socket in a proxy process.
const PROXY_FD: RawFd = 3;
/// How long a stopped proxy process gets to exit before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Run proxies as processes of `exe` (our binary, whose `main` calls
/// [`crate::entry::run_if_internal`]), with pid files in `pid_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProcesses {
    pub exe: PathBuf,
    pub pid_dir: PathBuf,
}

#[derive(Debug)]
enum Runner {
    Task(JoinHandle<()>),
    Process {
        pid: u32,
        pidfd: OwnedFd,
        /// Ours to reap (`None` for a proxy adopted from an earlier daemon).
        child: Option<Child>,
        pid_file: PathBuf,
    },
}

/// A running proxy for one published port. [`stop`](Self::stop) closes the port and
/// every forwarded connection and returns once the port is free again. Dropping an
/// in-process proxy stops it too (the port is freed a moment later, by the runtime);
/// dropping a proxy process leaves it running (a daemon exiting for live restore).
#[derive(Debug)]
pub struct PortProxy {
    local: SocketAddr,
    protocol: Protocol,
    runner: Option<Runner>,
}

impl PortProxy {
    /// Binds `host_ip:host_port` (port 0 picks a free one) and forwards to `target`, as a
    /// task of this process. Must be called inside a tokio runtime.
    pub fn start(
        protocol: Protocol,
        host_ip: Ipv4Addr,
        host_port: u16,
        target: SocketAddr,
    ) -> Result<Self> {
        Self::start_with(protocol, host_ip, host_port, target, None, "")
    }

    /// As [`PortProxy::start`]; with `procs`, the proxy is a process of its own for
    /// `owner` (a container id), which survives this process.
    pub fn start_with(
        protocol: Protocol,
        host_ip: Ipv4Addr,
        host_port: u16,
        target: SocketAddr,
        procs: Option<&ProxyProcesses>,
        owner: &str,
    ) -> Result<Self> {
        let in_use = |source| RuntimeError::PortInUse {
            host_ip: IpAddr::V4(host_ip),
            port: host_port,
            protocol: protocol.as_str(),
            source,
        };
        let bind = SocketAddr::from((host_ip, host_port));
        let (local, sock): (SocketAddr, OwnedFd) = match protocol {
            Protocol::Tcp => {
                let std = std::net::TcpListener::bind(bind).map_err(in_use)?;
                (std.local_addr().map_err(in_use)?, std.into())
            }
            Protocol::Udp => {
                let std = std::net::UdpSocket::bind(bind).map_err(in_use)?;
                (std.local_addr().map_err(in_use)?, std.into())
            }
        };
        let runner = match procs {
            Some(procs) => spawn_process(procs, owner, protocol, local, target, sock)?,
            None => Runner::Task(spawn_task(protocol, sock, target).map_err(in_use)?),
        };
        Ok(Self {
            local,
            protocol,
            runner: Some(runner),
        })
    }

    /// The proxy process an earlier daemon started for `owner` on `host_ip:host_port`
    /// towards `target`, if it still runs (checked by its pid file and command line).
    pub fn adopt(
        protocol: Protocol,
        host_ip: Ipv4Addr,
        host_port: u16,
        target: SocketAddr,
        procs: &ProxyProcesses,
        owner: &str,
    ) -> Option<Self> {
        let local = SocketAddr::from((host_ip, host_port));
        let pid_file = pid_file(procs, owner, protocol, local);
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let args = proxy_args(owner, protocol, local, target);
        let pidfd = open_checked(pid, &args)?;
        Some(Self {
            local,
            protocol,
            runner: Some(Runner::Process {
                pid,
                pidfd,
                child: None,
                pid_file,
            }),
        })
    }

    /// The address actually bound (the chosen port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The pid file of a proxy process.
    pub(crate) fn pid_file(&self) -> Option<&Path> {
        match &self.runner {
            Some(Runner::Process { pid_file, .. }) => Some(pid_file),
            _ => None,
        }
    }

    /// Stops the proxy and waits until its socket is closed, so the host port can be
    /// bound again right away (e.g. by the next container publishing it).
    pub async fn stop(mut self) {
        match self.runner.take() {
            Some(Runner::Task(task)) => {
                task.abort();
                let _ = task.await;
            }
            Some(Runner::Process {
                pid,
                pidfd,
                child,
                pid_file,
            }) => {
                let _ = std::fs::remove_file(&pid_file);
                let _ = tokio::task::spawn_blocking(move || stop_process(pid, pidfd, child)).await;
            }
            None => {}
        }
    }
}

impl Drop for PortProxy {
    fn drop(&mut self) {
        if let Some(Runner::Task(task)) = &self.runner {
            task.abort();
        }
    }
}

fn spawn_task(
    protocol: Protocol,
    sock: OwnedFd,
    target: SocketAddr,
) -> std::io::Result<JoinHandle<()>> {
    Ok(match protocol {
        Protocol::Tcp => {
            let std = std::net::TcpListener::from(sock);
            std.set_nonblocking(true)?;
            tokio::spawn(tcp_loop(TcpListener::from_std(std)?, target))
        }
        Protocol::Udp => {
            let std = std::net::UdpSocket::from(sock);
            std.set_nonblocking(true)?;
            tokio::spawn(udp_loop(UdpSocket::from_std(std)?, target))
        }
    })
}

fn proxy_args(
    owner: &str,
    protocol: Protocol,
    local: SocketAddr,
    target: SocketAddr,
) -> Vec<String> {
    vec![
        PROXY_ARG.to_string(),
        owner.to_string(),
        protocol.as_str().to_string(),
        local.to_string(),
        target.to_string(),
    ]
}

fn pid_file(procs: &ProxyProcesses, owner: &str, protocol: Protocol, local: SocketAddr) -> PathBuf {
    procs.pid_dir.join(format!(
        "{owner}-{}-{}-{}",
        protocol.as_str(),
        local.ip(),
        local.port()
    ))
}

fn spawn_process(
    procs: &ProxyProcesses,
    owner: &str,
    protocol: Protocol,
    local: SocketAddr,
    target: SocketAddr,
    sock: OwnedFd,
) -> Result<Runner> {
    let io = |step: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| RuntimeError::Io { step, path, source }
    };
    let raw = sock.as_raw_fd();
    let mut cmd = Command::new(&procs.exe);
    cmd.args(proxy_args(owner, protocol, local, target))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec: setsid (signals aimed at
    // the daemon's process group must not reach the proxy), chdir (pin no directory of the
    // daemon's) and dup2 (which leaves fd 3
    // without close-on-exec; if the socket already is 3, clear the flag by hand).
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            libc::chdir(c"/".as_ptr());
            let r = if raw == PROXY_FD {
                libc::fcntl(raw, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, PROXY_FD)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(io("spawn port proxy", &procs.exe))?;
    drop(sock);
    let pid = child.id();
    // SAFETY: pidfd_open(2) on our own child, no flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
    if fd < 0 {
        return Err(io("pidfd_open port proxy", &procs.exe)(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: just returned by the kernel.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    std::fs::create_dir_all(&procs.pid_dir).map_err(io("create", &procs.pid_dir))?;
    let pid_file = pid_file(procs, owner, protocol, local);
    let tmp = pid_file.with_extension("tmp");
    std::fs::write(&tmp, format!("{pid}\n"))
        .and_then(|_| std::fs::rename(&tmp, &pid_file))
        .map_err(io("write", &pid_file))?;
    Ok(Runner::Process {
        pid,
        pidfd,
        child: Some(child),
        pid_file,
    })
}

/// A pidfd of `pid` if its command line (after argv[0]) is `args`.
fn open_checked(pid: u32, args: &[String]) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2), no flags; a returned descriptor is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
    if fd < 0 {
        return None;
    }
    // SAFETY: just returned by the kernel.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let found: Vec<&[u8]> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .skip(1)
        .collect();
    let want: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    (found == want).then_some(pidfd)
}

/// Stops the proxy processes with a pid file in `procs.pid_dir` other than `keep` (left by
/// a daemon that crashed before recording their container's network). Blocking.
pub(crate) fn stop_strays(procs: &ProxyProcesses, keep: &[&Path]) {
    let Ok(rd) = std::fs::read_dir(&procs.pid_dir) else {
        return;
    };
    for e in rd.flatten() {
        let path = e.path();
        if keep.contains(&path.as_path()) {
            continue;
        }
        let pid = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        let _ = std::fs::remove_file(&path);
        let Some(pid) = pid else { continue };
        // SAFETY: pidfd_open(2), no flags; a returned descriptor is ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
        if fd < 0 {
            continue;
        }
        // SAFETY: just returned by the kernel.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let is_proxy = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| c.split(|&b| b == 0).nth(1) == Some(PROXY_ARG.as_bytes()))
            .unwrap_or(false);
        if is_proxy {
            tracing::info!(pid, "stopping a port proxy no container owns");
            stop_process(pid, pidfd, None);
        }
    }
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`]; returns once the process is gone.
fn stop_process(pid: u32, pidfd: OwnedFd, child: Option<Child>) {
    let signal = |sig: libc::c_int| {
        // SAFETY: pidfd_send_signal(2) on a pidfd we own, no siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        }
    };
    let exited = |timeout: Duration| {
        let mut p = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a pidfd is readable once the process exited.
        unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) > 0 }
    };
    signal(libc::SIGTERM);
    if !exited(STOP_GRACE) {
        tracing::warn!(pid, "port proxy did not exit on SIGTERM; killing it");
        signal(libc::SIGKILL);
        exited(STOP_GRACE);
    }
    if let Some(mut child) = child {
        let _ = child.wait();
    }
}

/// A proxy process: serves the socket at fd 3 until killed. Never returns.
pub(crate) fn serve_process(args: &[String]) -> ! {
    let fail = |what: &str| -> ! {
        eprintln!("skiff {PROXY_ARG}: {what}");
        std::process::exit(125)
    };
    let [_owner, protocol, _local, target] = args else {
        fail("wrong arguments")
    };
    let Ok(target) = target.parse::<SocketAddr>() else {
        fail("bad target address")
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&format!("starting the async runtime: {e}")),
    };
    // SAFETY: fd 3 was handed to us as the bound socket and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(PROXY_FD) };
    let protocol = match protocol.as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => fail("bad protocol"),
    };
    rt.block_on(async move {
        match spawn_task(protocol, sock, target) {
            Ok(task) => {
                let _ = task.await;
            }
            Err(e) => fail(&format!("serving the socket: {e}")),
        }
    });
    std::process::exit(0)
}

async fn tcp_loop(listener: TcpListener, target: SocketAddr) {
    // Dropping the set (when this task is aborted) aborts every forwarded connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    conns.spawn(forward_tcp(client, target));
                }
                Err(e) => {
                    tracing::warn!(%target, error = %e, "port proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn forward_tcp(mut client: TcpStream, target: SocketAddr) {
    let upstream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await;
    match upstream {
        Ok(Ok(mut up)) => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
        }
        Ok(Err(e)) => tracing::debug!(%target, error = %e, "port proxy cannot reach container"),
        Err(_) => tracing::debug!(%target, "port proxy connect timed out"),
    }
}

/// Only this task owns the listening socket (replies come back over a channel), so
/// cancelling it closes the port at once.
async fn udp_loop(sock: UdpSocket, target: SocketAddr) {
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut replies = JoinSet::new();
    let (reply_tx, mut reply_rx) = mpsc::channel::<(SocketAddr, Vec<u8>)>(256);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<SocketAddr>();
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            got = sock.recv_from(&mut buf) => {
                let Ok((n, client)) = got else { continue };
                let up = match flows.get(&client) {
                    Some(up) => up.clone(),
                    None => {
                        if flows.len() >= UDP_MAX_FLOWS {
                            continue;
                        }
                        let Ok(up) = new_flow(target).await else { continue };
                        let up = Arc::new(up);
                        flows.insert(client, up.clone());
                        replies.spawn(udp_replies(up.clone(), client, reply_tx.clone(), done_tx.clone()));
                        up
                    }
                };
                let _ = up.send(&buf[..n]).await;
            }
            Some((client, data)) = reply_rx.recv() => {
                let _ = sock.send_to(&data, client).await;
            }
            Some(client) = done_rx.recv() => {
                flows.remove(&client);
            }
            Some(_) = replies.join_next(), if !replies.is_empty() => {}
        }
    }
}

async fn new_flow(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let up = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).await?;
    up.connect(target).await?;
    Ok(up)
}

async fn udp_replies(
    up: Arc<UdpSocket>,
    client: SocketAddr,
    reply: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    done: mpsc::UnboundedSender<SocketAddr>,
) {
    let mut buf = vec![0u8; 65536];
    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, up.recv(&mut buf)).await {
        if reply.send((client, buf[..n].to_vec())).await.is_err() {
            break;
        }
    }
    let _ = done.send(client);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn tcp_forwards_and_stops_on_drop() {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = backend.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
        });
        let proxy = PortProxy::start(Protocol::Tcp, Ipv4Addr::LOCALHOST, 0, target).unwrap();
        let addr = proxy.local_addr();
        assert_ne!(addr.port(), 0);
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        server.await.unwrap();
        drop(proxy);
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "port still open after drop"
        );
    }

    #[tokio::test]
    async fn busy_port_is_refused_naming_it() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
        let err = PortProxy::start(Protocol::Tcp, Ipv4Addr::LOCALHOST, port, target).unwrap_err();
        assert!(matches!(err, RuntimeError::PortInUse { port: p, .. } if p == port));
        assert_eq!(
            err.to_string(),
            format!("failed to bind host port for 127.0.0.1:{port}/tcp: address already in use")
        );
    }

    #[tokio::test]
    async fn udp_forwards_replies() {
        let backend = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = backend.local_addr().unwrap();
        let echo = tokio::spawn(async move {
            let mut b = [0u8; 16];
            let (n, from) = backend.recv_from(&mut b).await.unwrap();
            backend.send_to(&b[..n], from).await.unwrap();
        });
        let proxy = PortProxy::start(Protocol::Udp, Ipv4Addr::LOCALHOST, 0, target).unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(b"hello", proxy.local_addr()).await.unwrap();
        let mut b = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), c.recv(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&b[..n], b"hello");
        echo.await.unwrap();
        let addr = proxy.local_addr();
        proxy.stop().await;
        std::net::UdpSocket::bind(addr).expect("port not free right after stop");
    }
}
