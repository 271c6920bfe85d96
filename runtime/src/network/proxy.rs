//! The userland port proxy: makes a published port answer on the host itself (127.0.0.1
//! never passes the nat PREROUTING chain, so DNAT cannot serve it), like Docker's
//! docker-proxy. Binding it first also reserves the host port, so a busy port is refused
//! before the container starts, with an error naming the port.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

/// A running proxy for one published port. [`stop`](Self::stop) closes the port and
/// every forwarded connection and returns once the port is free again; dropping it stops
/// it too, but the port is freed a moment later, by the runtime.
#[derive(Debug)]
pub struct PortProxy {
    local: SocketAddr,
    protocol: Protocol,
    task: Option<JoinHandle<()>>,
}

impl PortProxy {
    /// Binds `host_ip:host_port` (port 0 picks a free one) and forwards to `target`.
    /// Must be called inside a tokio runtime.
    pub fn start(
        protocol: Protocol,
        host_ip: Ipv4Addr,
        host_port: u16,
        target: SocketAddr,
    ) -> Result<Self> {
        let in_use = |source| RuntimeError::PortInUse {
            host_ip: IpAddr::V4(host_ip),
            port: host_port,
            protocol: protocol.as_str(),
            source,
        };
        let bind = SocketAddr::from((host_ip, host_port));
        let (local, task) = match protocol {
            Protocol::Tcp => {
                let std = std::net::TcpListener::bind(bind).map_err(in_use)?;
                std.set_nonblocking(true).map_err(in_use)?;
                let listener = TcpListener::from_std(std).map_err(in_use)?;
                let local = listener.local_addr().map_err(in_use)?;
                (local, tokio::spawn(tcp_loop(listener, target)))
            }
            Protocol::Udp => {
                let std = std::net::UdpSocket::bind(bind).map_err(in_use)?;
                std.set_nonblocking(true).map_err(in_use)?;
                let sock = UdpSocket::from_std(std).map_err(in_use)?;
                let local = sock.local_addr().map_err(in_use)?;
                (local, tokio::spawn(udp_loop(sock, target)))
            }
        };
        Ok(Self {
            local,
            protocol,
            task: Some(task),
        })
    }

    /// The address actually bound (the chosen port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Stops the proxy and waits until its socket is closed, so the host port can be
    /// bound again right away (e.g. by the next container publishing it).
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for PortProxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
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
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}/tcp")),
            "{err}"
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
