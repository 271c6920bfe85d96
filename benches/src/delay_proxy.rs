//! A userspace TCP delay line: listens on 127.0.0.1 and forwards every connection to a
//! target, holding each piece of data `delay` before passing it on, in both directions.
//! This kernel has no `netem`, so a round trip through the proxy costs `2 × delay` more
//! than the path behind it; bandwidth is not limited here (the tbf qdisc does that).
//!
//! Data read is queued with its due time and written when due, so a stream of data flows at
//! full rate, only shifted by `delay` (a delay line, not a stop-and-wait relay). What this
//! does not model: TCP's own slow start and loss recovery over a long path (the sender's
//! congestion window sees the short loopback and veth paths on either side).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A running proxy; dropping it stops accepting (connections under way end with their
/// peers or when the runtime stops).
pub struct DelayProxy {
    addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    connections: Arc<AtomicU64>,
}

impl DelayProxy {
    /// Starts listening on `127.0.0.1:0` (any free port) in the current tokio runtime.
    pub async fn start(target: SocketAddr, delay: Duration) -> std::io::Result<DelayProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicU64::new(0));
        let counted = connections.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return; // the client sees its connection closed
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(delay_line(cr, sw, delay));
                    let down = tokio::spawn(delay_line(sr, cw, delay));
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Ok(DelayProxy {
            addr,
            accept,
            connections,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to`, each read delivered `delay` after it arrived; the end of `from`
/// is passed on (write shutdown) after the same delay.
async fn delay_line(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if data.is_empty() {
                break;
            }
            if to.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        let due = Instant::now() + delay;
        if tx.send((due, buf[..n].to_vec())).is_err() || n == 0 {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the proxy: each round trip takes at least two delays, the
    /// bytes come back unchanged, and a bulk transfer is not slowed to one delay per read.
    #[tokio::test]
    async fn adds_the_delay_each_way_and_keeps_the_bytes() {
        let echo = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = echo.accept().await.unwrap();
            let (mut r, mut w) = s.into_split();
            tokio::io::copy(&mut r, &mut w).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let delay = Duration::from_millis(25);
        let proxy = DelayProxy::start(target, delay).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.set_nodelay(true).unwrap();

        let t0 = std::time::Instant::now();
        c.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).await.unwrap();
        let rtt = t0.elapsed();
        assert_eq!(&got, b"ping");
        assert!(rtt >= 2 * delay, "round trip {rtt:?} < 2 x {delay:?}");
        assert!(
            rtt < 2 * delay + Duration::from_millis(200),
            "round trip {rtt:?}"
        );

        // 8 MiB through in far fewer delays than reads: a delay line, not stop-and-wait.
        let data: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = c.into_split();
        let sent = data.clone();
        let t0 = std::time::Instant::now();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        let took = t0.elapsed();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "bytes changed on the way");
        assert!(took < Duration::from_secs(2), "bulk transfer took {took:?}");
        assert_eq!(proxy.connections(), 1);
    }
}
