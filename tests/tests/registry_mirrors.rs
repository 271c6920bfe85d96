//! Docker Hub mirrors (`--registry-mirror`): reads of `docker.io` images, lazy chunk reads
//! included, go to the first mirror that answers; a mirror answering 500, missing the
//! image or down falls through to the origin (here a local registry standing in for Docker
//! Hub through the test-only `--docker-hub-origin`). `info` lists the mirrors in Docker's
//! `RegistryConfig` shape.

mod common;
mod registry_support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::rt;
use registry_support::*;
use sha2::{Digest, Sha256};
use skiff_store::{Compression, Store, StoreOptions};
use skiff_tests::docker_cli::docker_unavailable;
use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, Daemon, Registry};

/// An HTTP server answering `500` to everything, counting requests.
struct Broken {
    port: u16,
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Broken {
    fn start() -> Broken {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicU64::new(0));
        let (s, h) = (stop.clone(), hits.clone());
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut c) = conn else { continue };
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                h.fetch_add(1, Ordering::SeqCst);
                let _ = c.write_all(
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 6\r\nConnection: close\r\n\r\nbroken",
                );
            }
        });
        Broken {
            port,
            stop,
            hits,
            thread: Some(thread),
        }
    }
}

impl Drop for Broken {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Access-log lines of `reg` with `needle` and `status`, after byte `from` of the log.
fn served_since(reg: &Registry, from: usize, needle: &str, status: u16) -> usize {
    std::fs::read_to_string(reg.log_path()).unwrap()[from..]
        .lines()
        .filter(|l| l.contains(needle) && l.contains(&format!("HTTP/1.1\" {status} ")))
        .count()
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[test]
fn mirrors_serve_docker_io_reads_and_the_origin_backs_them_up() {
    require!(
        "mirrors_serve_docker_io_reads_and_the_origin_backs_them_up",
        root_unavailable(),
        registry_unavailable(),
        docker_unavailable(),
        fixtures::busybox_unavailable()
    );
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    let origin = Registry::start().unwrap();
    let mut mirror = Registry::start().unwrap();
    let publisher = Store::open(&tmp.path().join("pub"), StoreOptions::default()).unwrap();
    let _ = publish(&rt, &origin, &publisher);
    // The mirror holds the same content (a pull-through cache would).
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(origin.storage_dir().join("docker"))
        .arg(mirror.storage_dir())
        .status()
        .unwrap();
    assert!(copy.success());
    // And the origin something the mirror lacks.
    rt.block_on(fixtures::push_busybox(
        &origin.host(),
        "library/onlyorigin:v1",
        Compression::Gzip,
    ))
    .unwrap();
    // Only what the daemon asks counts (publishing read manifests too).
    let origin_from = std::fs::metadata(origin.log_path()).unwrap().len() as usize;
    let served = |reg: &Registry, needle: &str, status: u16| {
        let from = if reg.port() == origin.port() {
            origin_from
        } else {
            0
        };
        served_since(reg, from, needle, status)
    };
    let broken = Broken::start();
    let d = Daemon::start_with(&[
        "--registry-mirror",
        &format!("http://127.0.0.1:{}", broken.port),
        "--registry-mirror",
        &format!("http://{}/", mirror.host()),
        "--docker-hub-origin",
        &format!("http://{}", origin.host()),
    ])
    .unwrap();

    // docker.io/private/app: from the mirror, after the broken one answered 500.
    d.ok(&["pull", "private/app:chunked"]);
    assert!(broken.hits.load(Ordering::SeqCst) >= 1);
    assert!(served(&mirror, "/v2/private/app/manifests/chunked", 200) >= 1);
    assert_eq!(served(&origin, "/v2/private/app/manifests/", 200), 0);
    let out = d.ok(&[
        "run",
        "--rm",
        "private/app:chunked",
        "sha256sum",
        "/data/one",
    ]);
    assert!(
        out.contains(&sha(&fixtures::random_bytes(300 << 10, 1))),
        "{out}"
    );
    // Lazy reads went to the mirror too.
    assert!(served(&mirror, "/v2/private/app/blobs/", 206) >= 1);
    assert_eq!(served(&origin, "/v2/private/app/blobs/", 206), 0);

    // Not on the mirror: the origin serves it.
    d.ok(&["pull", "onlyorigin:v1"]);
    assert!(served(&mirror, "/v2/library/onlyorigin/manifests/v1", 404) >= 1);
    assert!(served(&origin, "/v2/library/onlyorigin/manifests/v1", 200) >= 1);

    // The mirror goes down: lazy reads fall back to the origin.
    mirror.stop().unwrap();
    let out = d.ok(&[
        "run",
        "--rm",
        "private/app:chunked",
        "sha256sum",
        "/data/two",
    ]);
    assert!(
        out.contains(&sha(&fixtures::random_bytes(300 << 10, 2))),
        "{out}"
    );
    assert!(served(&origin, "/v2/private/app/blobs/", 206) >= 1);

    // info lists the mirrors, for skiff and for the docker CLI (RegistryConfig).
    let info = d.ok(&["info"]);
    assert!(info.contains("Registry Mirrors:"), "{info}");
    assert!(
        info.contains(&format!("http://{}/", mirror.host())),
        "{info}"
    );
    let out =
        skiff_tests::docker_cli::docker_run(&d, &["info", "--format", "{{json .RegistryConfig}}"]);
    let rc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        rc["Mirrors"],
        serde_json::json!([
            format!("http://127.0.0.1:{}", broken.port),
            format!("http://{}/", mirror.host())
        ])
    );
    assert_eq!(rc["IndexConfigs"]["docker.io"]["Official"], true);
    assert_eq!(
        rc["IndexConfigs"]["docker.io"]["Mirrors"], rc["Mirrors"],
        "{rc}"
    );
}

#[test]
fn a_bad_mirror_url_stops_the_daemon_with_its_name() {
    require!(
        "a_bad_mirror_url_stops_the_daemon_with_its_name",
        root_unavailable()
    );
    let e = match Daemon::start_with(&["--registry-mirror", "mirror.example/path"]) {
        Ok(_) => panic!("the daemon started with a bad mirror URL"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("mirror.example/path") && e.contains("http"),
        "{e}"
    );
}
