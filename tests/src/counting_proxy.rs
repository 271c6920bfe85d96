//! A small HTTP/1.1 relay in front of a real registry that records every request it
//! forwards (method, path, `Range` header) and every connection it accepts, so tests can
//! count what a client sent on the wire. Bytes are relayed unchanged; request bodies are
//! forwarded by `Content-Length` (chunked request bodies are not supported: reads only).
//! Listens on 127.0.0.1 at a free port; stops accepting when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::Result;

/// One request seen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    /// The `Range` header's value, if any.
    pub range: Option<String>,
    /// Which accepted connection (0-based) carried it.
    pub connection: usize,
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<SeenRequest>>,
    connections: AtomicUsize,
    tls_connections: AtomicUsize,
    stop: AtomicBool,
}

pub struct CountingProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl CountingProxy {
    /// Starts relaying to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Result<CountingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let upstream = upstream.to_string();
        let s = shared.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let id = s.connections.fetch_add(1, Ordering::Relaxed);
                let (s, upstream) = (s.clone(), upstream.clone());
                thread::spawn(move || {
                    let _ = relay(client, &upstream, id, &s);
                });
            }
        });
        Ok(CountingProxy { addr, shared })
    }

    /// `127.0.0.1:<port>`, to put in image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The requests seen so far, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Connections that began with a TLS handshake (counted in `connections` too).
    pub fn tls_connections(&self) -> usize {
        self.shared.tls_connections.load(Ordering::Relaxed)
    }

    /// Forgets the requests seen so far (connections keep counting).
    pub fn clear(&self) {
        self.shared.requests.lock().unwrap().clear();
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies responses back verbatim on a second thread; parses requests on this one.
fn relay(client: TcpStream, upstream: &str, id: usize, shared: &Shared) -> Result<()> {
    client.set_nodelay(true)?;
    let server = TcpStream::connect(upstream)?;
    server.set_nodelay(true)?;
    let (mut from_server, mut to_client) = (server.try_clone()?, client.try_clone()?);
    let back = thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Write);
    });
    let mut reader = BufReader::new(client);
    let mut to_server = server;
    // A TLS handshake (a client trying HTTPS first, as Docker does with loopback
    // registries): relayed as bytes, no request recorded; the registry refuses it.
    if reader.fill_buf()?.first() == Some(&0x16) {
        shared.tls_connections.fetch_add(1, Ordering::Relaxed);
        std::io::copy(&mut reader, &mut to_server)?;
        let _ = to_server.shutdown(Shutdown::Write);
        let _ = back.join();
        return Ok(());
    }
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line)? == 0 {
                let _ = to_server.shutdown(Shutdown::Write);
                let _ = back.join();
                return Ok(());
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" || line == b"\n" {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.lines();
        let mut first = lines.next().unwrap_or_default().split(' ');
        let method = first.next().unwrap_or_default().to_string();
        let path = first.next().unwrap_or_default().to_string();
        let mut range = None;
        let mut body_len = 0u64;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("range") {
                    range = Some(v.to_string());
                } else if k.eq_ignore_ascii_case("content-length") {
                    body_len = v.parse().unwrap_or(0);
                }
            }
        }
        shared.requests.lock().unwrap().push(SeenRequest {
            method,
            path,
            range,
            connection: id,
        });
        to_server.write_all(&head)?;
        std::io::copy(&mut (&mut reader).take(body_len), &mut to_server)?;
    }
}
