//! Joins a hijacked API connection to a container's shim socket: the shim's frames become
//! Docker's multiplexed stream (or raw bytes with a TTY), the client's bytes become stdin.

use skiff_runtime::protocol::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::hijack::{frame, Conn, StreamKind};

/// Pumps both ways until the container's output ends (its `Exit` frame or EOF). Client
/// bytes go to the container only when `stdin` was asked for: Docker's CLI half-closes the
/// connection at once when it attaches without stdin, which must not close the container's.
pub async fn bridge(conn: Conn, shim: std::os::unix::net::UnixStream, tty: bool, stdin: bool) {
    if shim.set_nonblocking(true).is_err() {
        return;
    }
    let shim = match tokio::net::UnixStream::from_std(shim) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("attach: {e}");
            return;
        }
    };
    let (mut shim_r, mut shim_w) = shim.into_split();
    let (mut conn_r, mut conn_w) = tokio::io::split(conn);

    // The task owns the shim's write half until the bridge ends: dropping it would shut the
    // socket's write side, which the shim reads as the client leaving.
    let input = tokio::spawn(async move {
        if stdin {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match conn_r.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = shim_w.write_all(&Frame::CloseStdin.encode()).await;
                        break;
                    }
                    Ok(n) => {
                        if shim_w
                            .write_all(&Frame::Stdin(buf[..n].to_vec()).encode())
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        }
        std::future::pending::<()>().await;
        drop(shim_w);
    });

    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    'outer: loop {
        let n = match shim_r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        loop {
            match Frame::parse(&pending) {
                Ok(Some((f, used))) => {
                    pending.drain(..used);
                    let out = match f {
                        Frame::Stdout(b) if tty => b,
                        Frame::Stdout(b) => frame(StreamKind::Stdout, &b),
                        Frame::Stderr(b) if tty => b,
                        Frame::Stderr(b) => frame(StreamKind::Stderr, &b),
                        Frame::Exit(_) => break 'outer,
                        Frame::Error(e) => {
                            tracing::warn!("attach: shim error: {e:?}");
                            break 'outer;
                        }
                        _ => continue,
                    };
                    if conn_w.write_all(&out).await.is_err() {
                        break 'outer;
                    }
                    let _ = conn_w.flush().await;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("attach: bad frame from shim: {e}");
                    break 'outer;
                }
            }
        }
    }
    let _ = conn_w.shutdown().await;
    input.abort();
}
