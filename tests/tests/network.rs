//! Container networking through the real daemon: bridge by default (containers reach each
//! other), none and host modes, published ports from the host, and nothing left behind.
//! Traffic goes only to 127.0.0.1 and to the containers' own addresses.

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use skiff_tests::registry::free_port;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, Daemon};

fn ip_of(d: &Daemon, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", name])).unwrap();
    v[0]["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string()
}

/// GET `path` from 127.0.0.1:port, retrying while the server starts (bounded).
fn http_get(port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match attempt {
            Ok(body) if body.contains("200") => return body,
            _ if Instant::now() > deadline => panic!("no answer on 127.0.0.1:{port}{path}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn host(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bridge_none_host_and_published_ports() {
    require!("bridge_none_host_and_published_ports", root_unavailable());
    let mut d = Daemon::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let img = "net/busybox:latest";
    d.ok(&["image", "import", rootfs.path().to_str().unwrap(), img]);

    // none: only lo, up.
    let links = d.ok(&["run", "--rm", "--network", "none", img, "ip", "-o", "link"]);
    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim())
        .collect();
    assert_eq!(names, ["lo"], "{links}");
    // host: the host's interfaces.
    let host_links = host("ip", &["-o", "link"]);
    let seen = d.ok(&["run", "--rm", "--network", "host", img, "ip", "-o", "link"]);
    assert_eq!(seen.lines().count(), host_links.lines().count(), "{seen}");

    // bridge: two containers reach each other by address.
    d.ok(&["run", "-d", "--name", "peer-a", img, "sleep", "300"]);
    let ip_a = ip_of(&d, "peer-a");
    assert!(ip_a.starts_with("172.29."), "{ip_a}");
    let ping = d.run(&["run", "--rm", img, "ping", "-c", "1", "-W", "3", &ip_a]);
    assert!(
        ping.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );

    // A published port answers from the host at 127.0.0.1.
    let port = free_port().unwrap();
    let spec = format!("{port}:80");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &spec,
        img,
        "sh",
        "-c",
        "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    assert!(http_get(port, "/index.html").contains("hello-from-web"));
    let ps = d.ok(&["ps"]);
    assert!(ps.contains(&format!(":{port}->80/tcp")), "{ps}");

    // The same host port again: the start is refused, naming the port, and the container
    // is left created, not running (dockerd's).
    let dup = d.run(&["run", "-d", "--name", "dup", "-p", &spec, img, "sleep", "5"]);
    assert_eq!(dup.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains(&port.to_string()),
        "{}",
        String::from_utf8_lossy(&dup.stderr)
    );
    assert_eq!(d.ok(&["ps", "-q"]).lines().count(), 2);
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.Status}}", "dup"]),
        "created\n"
    );

    // Bad -p specs are refused before anything is created.
    let bad = d.run(&["run", "--rm", "-p", "99999:80", img, "true"]);
    assert_ne!(bad.status.code(), Some(0));

    // rm everything, restart: no veth on the bridge, no rule of this daemon's chains.
    d.ok(&["rm", "-f", "peer-a", "web", "dup"]);
    d.restart().unwrap();
    let bridge = d.bridge().unwrap().to_string();
    assert_eq!(
        host("ip", &["-o", "link", "show", "master", &bridge]).trim(),
        ""
    );
    // This daemon's chains are named for its bridge (another daemon's rules on the host,
    // with their `skiff:` comments, are not this test's business).
    let prefix = bridge.to_ascii_uppercase();
    let rules = host("iptables-save", &[]);
    assert!(
        !rules.lines().any(|l| l.contains(&prefix)),
        "rules left:\n{rules}"
    );
}
