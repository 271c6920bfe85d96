//! Live restore: containers on a lazily served image and on a fully pulled one keep reading
//! files they never read before while the daemon is killed (SIGKILL) and restarted three
//! times, then stopped with SIGTERM and started from a copy of the binary; exec, logs, stop,
//! wait and rm work against each new daemon; nothing leaks (real registry, daemon, FUSE).

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, Daemon, Registry};

const FILES: usize = 60;

fn mounts_under(root: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(root.to_str().unwrap()))
        .map(|l| l.to_string())
        .collect()
}

/// A shell loop reading `/data/fN` one after another, printing each file's sha256 (or
/// `FAIL`), then `DONE`.
fn reader_script() -> String {
    format!(
        "i=0; while [ $i -lt {FILES} ]; do \
           sha256sum /data/f$i || echo FAIL f$i; sleep 0.25; i=$((i+1)); \
         done; echo DONE"
    )
}

/// Checks a reader's log: every file once with the right digest, no failure, done.
fn check_reader_log(name: &str, log: &str, digests: &[String]) {
    assert!(!log.contains("FAIL"), "{name}: a read failed:\n{log}");
    assert!(log.trim_end().ends_with("DONE"), "{name}: not done:\n{log}");
    for (i, want) in digests.iter().enumerate() {
        let line = format!("{want}  /data/f{i}");
        assert!(log.contains(&line), "{name}: no `{line}` in:\n{log}");
    }
}

#[test]
fn containers_survive_daemon_restarts() {
    require!(
        "containers_survive_daemon_restarts",
        root_unavailable(),
        registry_unavailable()
    );
    let reg = Registry::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let mut digests = Vec::new();
    for i in 0..FILES {
        let data = fixtures::random_bytes(96 << 10, 1000 + i as u64);
        digests.push(hex::encode(Sha256::digest(&data)));
        std::fs::write(rootfs.path().join(format!("data/f{i}")), &data).unwrap();
    }
    let gzip = format!("{}/live:gzip", reg.host());
    let chunked = format!("{}/live:chunked", reg.host());
    // A second image (other content, so another mount) served from a full pull.
    let full = format!("{}/live:full", reg.host());
    {
        let d = Daemon::start().unwrap();
        d.ok(&["image", "import", rootfs.path().to_str().unwrap(), &gzip]);
        d.ok(&["push", &gzip]);
        d.ok(&["image", "convert", &gzip, &chunked]);
        std::fs::write(rootfs.path().join("data/variant"), b"full\n").unwrap();
        d.ok(&["image", "import", rootfs.path().to_str().unwrap(), &full]);
        d.ok(&["push", &full]);
    }

    let mut d = Daemon::start().unwrap();
    assert!(d.ok(&["pull", &chunked]).contains("Lazy image"));
    assert!(!d.ok(&["pull", &full]).contains("Lazy image"));
    let script = reader_script();
    d.ok(&["run", "-d", "--name", "lazy", &chunked, "sh", "-c", &script]);
    d.ok(&["run", "-d", "--name", "full", &full, "sh", "-c", &script]);
    d.ok(&["run", "-d", "--name", "idle", &chunked, "sleep", "300"]);
    let copy_dir = tempfile::tempdir().unwrap();
    // The client and the engine it execs for `daemon`, both copied.
    let copy = copy_dir.path().join("skiff");
    let bin = skiff_tests::binary::skiff_bin();
    std::fs::copy(&bin, &copy).unwrap();
    std::fs::copy(bin.with_file_name("skiffd"), copy.with_file_name("skiffd")).unwrap();

    // Three crashes, one clean stop, one upgrade onto another binary: the readers go on.
    let mut term_secs = 0.0;
    for round in 0..5 {
        std::thread::sleep(Duration::from_millis(1500));
        match round {
            0..=2 => {
                d.stop(true);
                d.start_again().unwrap();
            }
            3 => {
                // Clients holding requests open (a log follower, a waiter) do not hold up
                // the shutdown; their streams end.
                let mut clients: Vec<std::process::Child> =
                    [&["logs", "-f", "idle"][..], &["wait", "idle"][..]]
                        .iter()
                        .map(|args| {
                            d.cli()
                                .args(*args)
                                .stdin(std::process::Stdio::null())
                                .stdout(std::process::Stdio::null())
                                .stderr(std::process::Stdio::null())
                                .spawn()
                                .unwrap()
                        })
                        .collect();
                std::thread::sleep(Duration::from_millis(300));
                let t = Instant::now();
                d.stop(false);
                term_secs = t.elapsed().as_secs_f64();
                for c in &mut clients {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while c.try_wait().unwrap().is_none() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let ended = c.try_wait().unwrap().is_some();
                    let _ = c.kill();
                    let _ = c.wait();
                    assert!(ended, "a client stream did not end with the daemon");
                }
                d.start_again().unwrap();
            }
            _ => {
                d.stop(false);
                d.start_again_with(&copy, &[("SKIFF_TEST_VERSION", "99.0.0-upgrade")])
                    .unwrap();
                let v = d.ok(&["version"]);
                assert!(v.contains("99.0.0-upgrade"), "not the new binary:\n{v}");
            }
        }
        let ps = d.ok(&["ps"]);
        assert!(
            ps.contains("idle") && ps.contains("Up"),
            "round {round}:\n{ps}"
        );
        // exec reads a file through the resumed mount and sees its true bytes.
        let out = d.ok(&[
            "exec",
            "idle",
            "sha256sum",
            &format!("/data/f{}", FILES - 1 - round),
        ]);
        assert!(
            out.starts_with(&digests[FILES - 1 - round]),
            "round {round}: {out}"
        );
        let so_far = d.ok(&["logs", "lazy"]);
        assert!(!so_far.contains("FAIL"), "round {round}:\n{so_far}");
        // One keeper per image mount: both images while both readers run (a reader done
        // on a slow machine leaves its image unused, and a stop unmounts it).
        let keepers = d.helpers("__fuse-keeper");
        let images = mounts_under(&d.exec_root.join("images"));
        let running = d.ok(&["ps", "-q"]).lines().count();
        assert!(
            keepers.len() == images.len() && (running < 3 || keepers.len() == 2),
            "round {round}: {} running, keepers {keepers:?}, mounts {images:#?}\n{}",
            running,
            d.log_text()
        );
        let launchers = d.helpers("__shim-launcher");
        assert!(
            launchers.len() <= 1,
            "round {round}: launchers {launchers:?}"
        );
    }
    eprintln!(
        "SIGTERM shutdown with 3 containers running and 2 clients following took {term_secs:.3}s"
    );
    assert!(term_secs < 3.0, "SIGTERM shutdown took {term_secs:.3}s");

    // `logs -f` against the last daemon follows the readers to their end.
    let follow = d
        .cli()
        .args(["logs", "-f", "lazy"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(follow.status.success());
    check_reader_log(
        "lazy (logs -f)",
        &String::from_utf8_lossy(&follow.stdout),
        &digests,
    );
    for name in ["lazy", "full"] {
        assert_eq!(d.ok(&["wait", name]).trim(), "0", "{name}");
        let log = d.ok(&["logs", name]);
        check_reader_log(name, &log, &digests);
    }
    // Five more restarts (ten in all). Only `idle` runs now: its image's mount is kept,
    // the other one (unused) was unmounted at the first stop. One keeper per kept mount,
    // one launcher at most, one network namespace per container, no dead mount.
    for round in 0..5 {
        d.stop(round % 2 == 0);
        d.start_again().unwrap();
    }
    assert_eq!(d.helpers("__fuse-keeper").len(), 1);
    assert!(d.helpers("__shim-launcher").len() <= 1);
    let images = mounts_under(&d.exec_root.join("images"));
    assert_eq!(images.len(), 1, "{images:#?}");
    let netns = mounts_under(&d.exec_root.join("netns"));
    // The directory's own bind mount, and one namespace per container.
    assert!(netns.len() <= 4, "{netns:#?}");
    let out = d.ok(&["exec", "idle", "sha256sum", "/data/f0"]);
    assert!(out.starts_with(&digests[0]), "{out}");
    d.ok(&["stop", "-t", "1", "idle"]);
    let code = d.ok(&["wait", "idle"]);
    assert!(["137", "143"].contains(&code.trim()), "idle exited {code}");
    d.ok(&["rm", "lazy", "full", "idle"]);
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
    // Removing the image unmounts its resumed mount; its keeper sees the connection end
    // and exits by itself.
    d.ok(&["rmi", &chunked]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.helpers("__fuse-keeper").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(d.helpers("__fuse-keeper"), vec![]);
    assert_eq!(
        mounts_under(&d.exec_root.join("images")),
        Vec::<String>::new()
    );

    // No container left: the next stop keeps nothing.
    d.stop(false);
    let left = mounts_under(d.dir());
    assert!(left.is_empty(), "mounts left behind: {left:#?}");
    assert_eq!(d.helpers("__fuse-keeper"), vec![]);
    assert_eq!(d.helpers("__shim-launcher"), vec![]);
    d.start_again().unwrap();
}

/// A read the daemon has taken from the kernel but not answered when it is killed (its
/// registry is down, so the fetch is retrying) completes after the restart, with the right
/// bytes: the new daemon asks the kernel to resend it (FUSE_NOTIFY_RESEND).
#[test]
fn read_in_flight_at_a_crash_completes_after_restart() {
    require!(
        "read_in_flight_at_a_crash_completes_after_restart",
        root_unavailable(),
        registry_unavailable()
    );
    let mut reg = Registry::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let data = fixtures::random_bytes(512 << 10, 77);
    let digest = hex::encode(Sha256::digest(&data));
    std::fs::write(rootfs.path().join("data/late"), &data).unwrap();
    let gzip = format!("{}/inflight:gzip", reg.host());
    let chunked = format!("{}/inflight:chunked", reg.host());
    {
        let d = Daemon::start().unwrap();
        d.ok(&["image", "import", rootfs.path().to_str().unwrap(), &gzip]);
        d.ok(&["push", &gzip]);
        d.ok(&["image", "convert", &gzip, &chunked]);
    }
    let mut d = Daemon::start().unwrap();
    assert!(d.ok(&["pull", &chunked]).contains("Lazy image"));
    let host = tempfile::tempdir().unwrap();
    // The result appears under /h/out only when the read has ended (the shell creates a
    // redirect's file before the read starts).
    let script = "while [ ! -e /h/go ]; do sleep 0.05; done; \
                  sha256sum /data/late > /h/tmp 2>&1 || echo FAIL >> /h/tmp; \
                  echo DONE >> /h/tmp; mv /h/tmp /h/out";
    d.ok(&[
        "run",
        "-d",
        "--name",
        "reader",
        "-v",
        &format!("{}:/h", host.path().display()),
        &chunked,
        "sh",
        "-c",
        script,
    ]);
    // The registry goes away: the read's fetch retries (about 1.4 s) inside the daemon.
    reg.stop().unwrap();
    std::fs::write(host.path().join("go"), b"").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !host.path().join("out").exists(),
        "the read finished before the crash:\n{}",
        d.log_text()
    );
    d.stop(true);
    reg.restart().unwrap();
    // Nobody serves the mount now: the read waits (it does not fail).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !host.path().join("out").exists(),
        "the read ended without a daemon"
    );
    d.start_again().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = std::fs::read_to_string(host.path().join("out")).unwrap_or_default();
        if out.contains("DONE") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        out,
        format!("{digest}  /data/late\nDONE\n"),
        "daemon log:\n{}",
        d.log_text()
    );
    assert_eq!(d.ok(&["wait", "reader"]).trim(), "0");
    assert!(d.log_text().contains("resumed image mount"));
}

/// `--live-restore=false` is dockerd's default behaviour: SIGTERM stops the containers
/// (their stop signal, then the daemon exits) and leaves no mount and no keeper behind.
#[test]
fn without_live_restore_shutdown_stops_containers() {
    require!(
        "without_live_restore_shutdown_stops_containers",
        root_unavailable(),
        registry_unavailable()
    );
    let reg = Registry::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let image = format!("{}/nolive:latest", reg.host());
    let mut d = Daemon::start_with(&["--live-restore=false"]).unwrap();
    assert!(d.ok(&["info"]).contains("Live Restore Enabled: false"));
    d.ok(&["image", "import", rootfs.path().to_str().unwrap(), &image]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "trapper",
        &image,
        "sh",
        "-c",
        "trap 'echo got TERM; exit 3' TERM; echo ready; while true; do sleep 0.1; done",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.ok(&["logs", "trapper"]).contains("ready") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(d.helpers("__fuse-keeper").len(), 1);
    let t = Instant::now();
    d.stop(false);
    let secs = t.elapsed().as_secs_f64();
    assert!(secs < 5.0, "shutdown took {secs:.3}s:\n{}", d.log_text());
    assert_eq!(d.helpers("__fuse-keeper"), vec![]);
    // (The exited container keeps its network namespace until `rm`, as with any exit.)
    let left = mounts_under(&d.exec_root.join("images"));
    assert!(left.is_empty(), "image mounts left behind: {left:#?}");
    d.start_again().unwrap();
    let ps = d.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (3)"), "{ps}");
    assert_eq!(d.ok(&["logs", "trapper"]), "ready\ngot TERM\n");
}

/// GET `path` over an open connection to 127.0.0.1:port, HTTP/1.0.
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A published port is served by a proxy process (as docker-proxy): it answers while the
/// daemon is dead, a connection opened before a crash finishes after it, the next daemon
/// adopts the proxy, and removing the container frees the port and ends the proxy.
#[test]
fn published_port_answers_across_restarts() {
    use std::io::{Read, Write};
    require!("published_port_answers_across_restarts", root_unavailable());
    let mut d = Daemon::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let img = "live/web:latest";
    d.ok(&["image", "import", rootfs.path().to_str().unwrap(), img]);
    let port = skiff_tests::registry::free_port().unwrap();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("127.0.0.1:{port}:80"),
        img,
        "sh",
        "-c",
        "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !http_get(port, "/index.html").is_ok_and(|b| b.contains("hello-from-web")) {
        assert!(Instant::now() < deadline, "web never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let proxies = d.helpers("__port-proxy");
    assert_eq!(proxies.len(), 1, "{proxies:?}");
    // ps shows the container's shim as a shim, with its container's id.
    let id = d.ok(&["ps", "-q", "--no-trunc"]);
    let shims = d.helpers("__shim");
    assert_eq!(shims.len(), 1, "{shims:?}");
    assert_eq!(
        shims[0].1[1..],
        ["__shim".to_string(), id.trim()[..12].to_string()]
    );

    // A request half sent before the crash, finished after it.
    let mut open = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(open, "GET /index.html HTTP/1.0\r\n").unwrap();
    d.stop(true);
    // Nobody but the proxy process is there: the port still answers.
    let body = http_get(port, "/index.html").unwrap();
    assert!(body.contains("hello-from-web"), "{body}");
    write!(open, "Host: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    open.read_to_string(&mut out).unwrap();
    assert!(out.contains("hello-from-web"), "{out}");

    d.start_again().unwrap();
    assert_eq!(
        d.helpers("__port-proxy"),
        proxies,
        "the proxy was not adopted"
    );
    assert!(http_get(port, "/index.html")
        .unwrap()
        .contains("hello-from-web"));
    d.stop(false);
    d.start_again().unwrap();
    assert_eq!(d.helpers("__port-proxy"), proxies);

    d.ok(&["rm", "-f", "web"]);
    assert_eq!(d.helpers("__port-proxy"), vec![]);
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("port not free after rm");
}

/// When a mount cannot be resumed (here its keeper was killed while no daemon ran, so the
/// connection died), the next daemon detaches it, and a container running on it is killed
/// and reported exited, never `Up` with a dead root; its image mounts again for new
/// containers.
#[test]
fn a_container_whose_root_is_lost_is_not_reported_up() {
    require!(
        "a_container_whose_root_is_lost_is_not_reported_up",
        root_unavailable()
    );
    let mut d = Daemon::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let img = "live/lost:latest";
    d.ok(&["image", "import", rootfs.path().to_str().unwrap(), img]);
    d.ok(&["run", "-d", "--name", "orphan", img, "sleep", "300"]);
    d.stop(true);
    let keepers = d.helpers("__fuse-keeper");
    assert_eq!(keepers.len(), 1, "{keepers:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keepers[0].0 as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.helpers("__fuse-keeper").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    d.start_again().unwrap();
    // Killed by the new daemon (137), unless a page fault on its dead root got it first
    // (SIGBUS, 135).
    let code = d.ok(&["wait", "orphan"]);
    assert!(["135", "137"].contains(&code.trim()), "exit {code}");
    let ps = d.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (13") && !ps.contains("Up"), "{ps}");
    // The image serves new containers from a fresh mount.
    assert_eq!(
        d.ok(&["run", "--rm", img, "head", "-1", "/etc/passwd"]),
        "root:x:0:0:root:/root:/bin/sh\n"
    );
    d.ok(&["rm", "orphan"]);
}

/// One Engine API request over the daemon's socket: (status, body).
fn api(d: &Daemon, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: skiff\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn exec_state(d: &Daemon, id: &str) -> (bool, serde_json::Value) {
    let (status, body) = api(d, "GET", &format!("/exec/{id}/json"), "");
    assert_eq!(status, 200, "exec inspect {id}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    (v["Running"].as_bool().unwrap(), v["ExitCode"].clone())
}

/// `exec inspect` answers after a daemon crash: a finished session keeps its exit code, and
/// one still running reads as running until its process ends.
#[test]
fn exec_sessions_survive_a_restart() {
    require!("exec_sessions_survive_a_restart", root_unavailable());
    let mut d = Daemon::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let img = "live/exec:latest";
    d.ok(&["image", "import", rootfs.path().to_str().unwrap(), img]);
    d.ok(&["run", "-d", "--name", "box", img, "sleep", "300"]);
    let create = |cmd: &str| -> String {
        let (status, body) = api(
            &d,
            "POST",
            "/containers/box/exec",
            &serde_json::json!({"Cmd": ["sh", "-c", cmd]}).to_string(),
        );
        assert_eq!(status, 201, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let id = v["Id"].as_str().unwrap().to_string();
        let (status, body) = api(
            &d,
            "POST",
            &format!("/exec/{id}/start"),
            r#"{"Detach": true}"#,
        );
        assert!(status == 200 || status == 204, "{status} {body}");
        id
    };
    let done = create("exit 5");
    // (An inspect of a running session takes 2 s: it waits for a late exit code.)
    let long = create("sleep 5; exit 7");
    let deadline = Instant::now() + Duration::from_secs(10);
    while exec_state(&d, &done).0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(exec_state(&d, &done), (false, serde_json::json!(5)));
    assert!(exec_state(&d, &long).0);

    d.stop(true);
    d.start_again().unwrap();
    assert_eq!(exec_state(&d, &done), (false, serde_json::json!(5)));
    assert!(
        exec_state(&d, &long).0,
        "the running session is not running"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while exec_state(&d, &long).0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // It ended while no daemon was its parent: its code is unknown.
    assert_eq!(exec_state(&d, &long), (false, serde_json::Value::Null));
    let (status, _) = api(&d, "GET", "/exec/0123456789abcdef/json", "");
    assert_eq!(status, 404);
}
