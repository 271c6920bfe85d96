//! Joins a hijacked API connection to an exec's stdio: pipes become Docker's multiplexed
//! stream, a pty is passed through raw.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{ChildStderr, ChildStdin, ChildStdout};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::hijack::{frame, Conn, StreamKind};

/// An exec's stdio as the runtime handed it over.
pub struct ExecIo {
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
    pub pty: Option<Arc<OwnedFd>>,
    /// Fires when the exec'd process has exited.
    pub done: tokio::sync::oneshot::Receiver<()>,
}

/// Sets a pty's window size.
pub fn set_winsize(pty: &OwnedFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a struct we own, on an fd we hold.
    unsafe {
        libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws);
    }
}

async fn pump_out<R: AsyncRead + Unpin>(
    mut r: R,
    kind: StreamKind,
    tx: mpsc::Sender<(StreamKind, Vec<u8>)>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send((kind, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn pump_in<W: AsyncWrite + Unpin>(mut conn_r: tokio::io::ReadHalf<Conn>, mut w: W) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match conn_r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if w.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                let _ = w.flush().await;
            }
        }
    }
    let _ = w.shutdown().await;
}

fn pty_file(pty: &OwnedFd) -> Option<tokio::fs::File> {
    pty.try_clone()
        .ok()
        .map(|fd| tokio::fs::File::from_std(std::fs::File::from(fd)))
}

/// Pumps until the exec's output ends; then closes the connection.
pub async fn bridge(conn: Conn, io: ExecIo, tty: bool) {
    let (conn_r, mut conn_w) = tokio::io::split(conn);
    let (tx, mut rx) = mpsc::channel::<(StreamKind, Vec<u8>)>(64);
    let mut tasks = Vec::new();
    match (&io.pty, io.stdout, io.stderr) {
        (Some(pty), _, _) => {
            if let Some(r) = pty_file(pty) {
                tasks.push(tokio::spawn(pump_out(r, StreamKind::Stdout, tx.clone())));
            }
            if let Some(w) = pty_file(pty) {
                tasks.push(tokio::spawn(pump_in(conn_r, w)));
            }
        }
        (None, out, err) => {
            if let Some(o) = out.and_then(|o| tokio::process::ChildStdout::from_std(o).ok()) {
                tasks.push(tokio::spawn(pump_out(o, StreamKind::Stdout, tx.clone())));
            }
            if let Some(e) = err.and_then(|e| tokio::process::ChildStderr::from_std(e).ok()) {
                tasks.push(tokio::spawn(pump_out(e, StreamKind::Stderr, tx.clone())));
            }
            if let Some(i) = io
                .stdin
                .and_then(|i| tokio::process::ChildStdin::from_std(i).ok())
            {
                tasks.push(tokio::spawn(pump_in(conn_r, i)));
            }
        }
    }
    drop(tx);
    let mut done = io.done;
    let mut exited = false;
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some((kind, bytes)) => {
                    let out = if tty { bytes } else { frame(kind, &bytes) };
                    if conn_w.write_all(&out).await.is_err() {
                        break;
                    }
                    let _ = conn_w.flush().await;
                }
                None => break,
            },
            _ = &mut done, if !exited => {
                exited = true;
                if tty {
                    // A pty's reader may outlive the process (other holders of the slave):
                    // drain what is buffered briefly, then end.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    while let Ok((_, bytes)) = rx.try_recv() {
                        let _ = conn_w.write_all(&bytes).await;
                    }
                    break;
                }
            }
        }
    }
    let _ = conn_w.shutdown().await;
    for t in tasks {
        t.abort();
    }
}

/// A detached exec: its output is read and dropped so it never blocks on a full pipe.
pub async fn drain(io: ExecIo) {
    let (tx, mut rx) = mpsc::channel::<(StreamKind, Vec<u8>)>(8);
    if let Some(o) = io
        .stdout
        .and_then(|o| tokio::process::ChildStdout::from_std(o).ok())
    {
        tokio::spawn(pump_out(o, StreamKind::Stdout, tx.clone()));
    }
    if let Some(e) = io
        .stderr
        .and_then(|e| tokio::process::ChildStderr::from_std(e).ok())
    {
        tokio::spawn(pump_out(e, StreamKind::Stderr, tx.clone()));
    }
    if let Some(pty) = &io.pty {
        if let Some(r) = pty_file(pty) {
            tokio::spawn(pump_out(r, StreamKind::Stdout, tx.clone()));
        }
    }
    drop(tx);
    while rx.recv().await.is_some() {}
}
