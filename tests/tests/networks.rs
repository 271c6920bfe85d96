//! User-defined networks through the stock docker CLI and docker-compose 1.29: names and
//! aliases through the embedded DNS, isolation between networks, a container on two
//! networks, `--internal`, `--dns` as the forwarder, Docker's errors for bad input, and
//! nothing left of a removed network (bridge, addresses, rules), also after a restart.
//! Traffic goes only to 127.0.0.0/8 and inside the networks the tests make; each test's
//! daemon takes subnets from its own `default-address-pools`.

use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_tests::docker_cli::{
    compose_unavailable, docker_ok, docker_run, docker_unavailable, import_busybox,
};
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon};

const IMAGE: &str = "nets/busybox:latest";

/// A daemon whose user networks come from `pool` (e.g. `10.216.0.0/16` in /24s).
fn daemon(pool: &str) -> (tempfile::TempDir, Daemon) {
    let cfg = tempfile::tempdir().unwrap();
    let file = cfg.path().join("daemon.json");
    std::fs::write(
        &file,
        format!(r#"{{"default-address-pools": [{{"base": "{pool}", "size": 24}}]}}"#),
    )
    .unwrap();
    let d = Daemon::start_with(&["--config-file", file.to_str().unwrap()]).unwrap();
    import_busybox(&d, IMAGE, &[]);
    (cfg, d)
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn inspect(d: &Daemon, what: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&docker_ok(d, &["inspect", what])).unwrap();
    v[0].clone()
}

fn host(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the host holds of a bridge: its link, and every iptables rule naming it.
fn traces_of(bridge: &str) -> (bool, Vec<String>) {
    let link = Command::new("ip")
        .args(["link", "show", bridge])
        .output()
        .unwrap()
        .status
        .success();
    let rules = host("iptables-save", &[])
        .lines()
        .filter(|l| l.contains(bridge))
        .map(str::to_string)
        .collect();
    (link, rules)
}

/// A resolver on 127.0.0.x:53 that answers every query NXDOMAIN and counts them: the
/// `--dns` forwarder of the tests (traffic stays on loopback).
fn test_resolver() -> (String, Arc<AtomicUsize>) {
    let n = 100 + std::process::id() % 150;
    let addr = format!("127.0.{n}.53");
    let sock = UdpSocket::bind((addr.as_str(), 53)).unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((len, peer)) = sock.recv_from(&mut buf) {
            if len < 12 {
                continue;
            }
            seen.fetch_add(1, Ordering::SeqCst);
            // RFC 1035 4.1.1: QR=1, RA=1, RCODE=3 (NXDOMAIN); the question is echoed.
            buf[2] |= 0x80;
            buf[3] = 0x80 | 3;
            let _ = sock.send_to(&buf[..len], peer);
        }
    });
    (addr, count)
}

#[test]
fn user_networks_names_isolation_errors_and_cleanup() {
    require!(
        "user_networks_names_isolation_errors_and_cleanup",
        root_unavailable(),
        docker_unavailable()
    );
    let (_cfg, mut d) = daemon("10.216.0.0/16");
    let (resolver, asked) = test_resolver();

    // Create: the pool's first free /24, or the subnet and gateway asked; inspect echoes
    // the options exactly.
    docker_ok(&d, &["network", "create", "--label", "team=a", "front"]);
    docker_ok(
        &d,
        &[
            "network",
            "create",
            "--subnet",
            "10.216.50.0/24",
            "--gateway",
            "10.216.50.254",
            "back",
        ],
    );
    docker_ok(&d, &["network", "create", "--internal", "locked"]);
    let front = inspect(&d, "front");
    let back_net: serde_json::Value =
        serde_json::from_str(&docker_ok(&d, &["network", "inspect", "back"])).unwrap();
    let back_net = &back_net[0];
    assert_eq!(front["Driver"], "bridge");
    assert_eq!(front["Labels"]["team"], "a");
    assert_eq!(front["Internal"], false);
    assert_eq!(front["EnableIPv6"], false);
    assert_eq!(front["Options"], serde_json::json!({}));
    assert_eq!(back_net["IPAM"]["Driver"], "default");
    assert_eq!(
        back_net["IPAM"]["Config"],
        serde_json::json!([{"Subnet": "10.216.50.0/24", "Gateway": "10.216.50.254"}])
    );
    let front_subnet = front["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(front_subnet.starts_with("10.216."), "{front}");
    let front_id = front["Id"].as_str().unwrap().to_string();
    let front_bridge = format!("br-{}", &front_id[..12]);
    assert!(traces_of(&front_bridge).0, "no bridge {front_bridge}");
    let ls = docker_ok(&d, &["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    for want in [
        "bridge bridge",
        "host host",
        "none null",
        "front bridge",
        "back bridge",
    ] {
        assert!(ls.lines().any(|l| l == want), "{want} not in {ls}");
    }
    let custom = docker_ok(&d, &["network", "ls", "-q", "--filter", "label=team=a"]);
    assert_eq!(custom.trim(), &front_id[..12]);

    // Names and aliases on one network; the server answers with the name's address.
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "front",
            "--network-alias",
            "www",
            IMAGE,
            "sh",
            "-c",
            "mkdir -p /w && echo front-page > /w/index.html && httpd -f -p 80 -h /w",
        ],
    );
    let web = inspect(&d, "web");
    let web_ip = web["NetworkSettings"]["Networks"]["front"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        web["NetworkSettings"]["Networks"]["front"]["Aliases"],
        serde_json::json!(["www"])
    );
    let fetch = |net: &str, url: &str| {
        docker_run(
            &d,
            &[
                "run", "--rm", "--network", net, "--dns", &resolver, IMAGE, "sh", "-c",
                &format!("cat /etc/resolv.conf; for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- {url} && exit 0; sleep 0.3; done; exit 1"),
            ],
        )
    };
    for url in ["http://web/", "http://www/"] {
        let out = fetch("front", url);
        let t = text(&out);
        assert!(
            out.status.success() && t.contains("front-page"),
            "{url}: {t}"
        );
        assert!(t.contains("nameserver 127.0.0.11"), "{t}");
    }
    // A reverse lookup of its address gives its name.
    let out = docker_ok(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "front",
            IMAGE,
            "nslookup",
            &web_ip,
        ],
    );
    assert!(out.contains("name = web"), "{out}");
    // From another network: the name is unknown there (NXDOMAIN from --dns, fast), and
    // the address is unreachable.
    let started = Instant::now();
    let out = docker_run(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "back",
            "--dns",
            &resolver,
            IMAGE,
            "sh",
            "-c",
            // (busybox 1.35's `wget -T` crashes: ping shows the address is unreachable.)
            &format!("nslookup web; ping -c 1 -W 2 {web_ip} && echo REACHED"),
        ],
    );
    let t = text(&out);
    assert!(t.contains("NXDOMAIN"), "{t}");
    assert!(!t.contains("REACHED") && !t.contains("front-page"), "{t}");
    assert!(asked.load(Ordering::SeqCst) >= 1, "--dns was not asked");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // A container on two networks (--ip on the second) reaches both.
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "db",
            "--network",
            "back",
            IMAGE,
            "sh",
            "-c",
            "mkdir -p /w && echo back-page > /w/index.html && httpd -f -p 80 -h /w",
        ],
    );
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "both",
            "--network",
            "back",
            IMAGE,
            "sleep",
            "300",
        ],
    );
    let fixed_ip = front_subnet.replace(".0/24", ".77");
    docker_ok(
        &d,
        &["network", "connect", "--ip", &fixed_ip, "front", "both"],
    );
    let both = inspect(&d, "both");
    let nets = both["NetworkSettings"]["Networks"].as_object().unwrap();
    assert_eq!(nets.len(), 2, "{nets:?}");
    assert_eq!(nets["front"]["IPAddress"], fixed_ip.as_str());
    let out = docker_run(
        &d,
        &[
            "exec",
            "both",
            "sh",
            "-c",
            "wget -qO- http://web/ && wget -qO- http://db/",
        ],
    );
    let t = text(&out);
    assert!(t.contains("front-page") && t.contains("back-page"), "{t}");
    let on_front = docker_ok(
        &d,
        &["ps", "--filter", "network=front", "--format", "{{.Names}}"],
    );
    let mut on_front: Vec<&str> = on_front.lines().collect();
    on_front.sort();
    assert_eq!(on_front, ["both", "web"]);

    // --internal: no way out, and other names get NXDOMAIN at once, never forwarded.
    let before = asked.load(Ordering::SeqCst);
    let started = Instant::now();
    let out = docker_run(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "locked",
            "--dns",
            &resolver,
            IMAGE,
            "nslookup",
            "example.com",
        ],
    );
    assert!(text(&out).contains("NXDOMAIN"), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        asked.load(Ordering::SeqCst),
        before,
        "internal network forwarded"
    );

    // Bad input, each with Docker's status (the CLI prints the daemon's message).
    let bad = |args: &[&str], needle: &str| {
        let out = docker_run(&d, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(text(&out).contains(needle), "{args:?}: {}", text(&out));
    };
    bad(
        &[
            "network",
            "create",
            "--subnet",
            "10.216.50.128/25",
            "overlap",
        ],
        "overlaps",
    );
    bad(&["network", "create", "front"], "already exists");
    bad(&["network", "rm", "front"], "has active endpoints");
    bad(&["network", "connect", "front", "both"], "already exists");
    bad(&["network", "rm", "bridge"], "pre-defined");
    bad(
        &[
            "run",
            "--rm",
            "--network",
            "front",
            "--ip",
            "10.99.0.5",
            IMAGE,
            "true",
        ],
        "not a host address",
    );
    bad(
        &[
            "run",
            "--rm",
            "--network",
            "front",
            "--network-alias",
            "web",
            IMAGE,
            "true",
        ],
        "is the name of container",
    );
    // A subnet on one of the host's own routes (not skiff's) is refused too.
    let routes = host("ip", &["-o", "-4", "route", "show", "scope", "link"]);
    let foreign = routes.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        let dev = w
            .iter()
            .position(|x| *x == "dev")
            .and_then(|i| w.get(i + 1))?;
        let ours = dev.starts_with("br-") || dev.starts_with("sk");
        (!ours && w[0].contains('/')).then(|| w[0].to_string())
    });
    if let Some(cidr) = foreign {
        bad(
            &["network", "create", "--subnet", &cidr, "hostclash"],
            "host route",
        );
    }
    assert!(!traces_of("overlap").0);
    let names = docker_ok(&d, &["network", "ls", "--format", "{{.Name}}"]);
    assert!(!names.lines().any(|l| l == "overlap"), "{names}");

    // Legacy links on the default bridge: hosts lines and Docker's variables.
    docker_ok(
        &d,
        &[
            "run", "-d", "--name", "lsrv", "--expose", "80", "-e", "ROLE=db", IMAGE, "sleep", "300",
        ],
    );
    let lsrv_ip = inspect(&d, "lsrv")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let out = docker_ok(
        &d,
        &[
            "run",
            "--rm",
            "--link",
            "lsrv:store",
            IMAGE,
            "sh",
            "-c",
            "cat /etc/hosts; env",
        ],
    );
    assert!(out.contains(&format!("{lsrv_ip}\tstore")), "{out}");
    assert!(
        out.contains(&format!("STORE_PORT_80_TCP_ADDR={lsrv_ip}")),
        "{out}"
    );
    assert!(out.contains("STORE_ENV_ROLE=db"), "{out}");
    docker_ok(&d, &["stop", "-t", "0", "lsrv"]);
    bad(
        &["run", "--rm", "--link", "lsrv:store", IMAGE, "true"],
        "non running",
    );
    docker_ok(&d, &["rm", "-f", "lsrv"]);

    // Removal leaves nothing of the network, also after a restart.
    for c in ["web", "db", "both"] {
        docker_ok(&d, &["rm", "-f", c]);
    }
    docker_ok(&d, &["network", "rm", "front", "locked"]);
    assert_eq!(traces_of(&front_bridge), (false, vec![]));
    let addrs = host("ip", &["-o", "addr"]);
    assert!(
        !addrs.contains(&front_subnet.replace(".0/24", ".1/")),
        "{addrs}"
    );
    // A container on `back` lives through the restart and resolves names all along: the
    // DNS sockets stay open in a holder while no daemon runs (queries wait, then answered).
    docker_ok(
        &d,
        &[
            "run", "-d", "--name", "keeper", "--network", "back", IMAGE, "sh", "-c",
            "while true; do if nslookup keeper >/dev/null 2>&1; then echo ok; else echo FAIL; fi; sleep 0.2; done",
        ],
    );
    let keeper_ip = inspect(&d, "keeper")["NetworkSettings"]["Networks"]["back"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_millis(500));
    // A query sent while no daemon runs (from outside, into the container's namespace)
    // waits in the held socket and is answered by the next daemon; without the holder it
    // would be refused at once.
    let keeper_id = inspect(&d, "keeper")["Id"].as_str().unwrap().to_string();
    let netns = d.exec_root.join("netns").join(&keeper_id);
    d.stop(false);
    let query = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args([
            skiff_tests::fixtures::busybox_bin().to_str().unwrap(),
            "nslookup",
            "keeper",
            "127.0.0.11",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    d.start_again().unwrap();
    let answered = query.wait_with_output().unwrap();
    let t = text(&answered);
    assert!(answered.status.success() && t.contains(&keeper_ip), "{t}");
    assert_eq!(traces_of(&front_bridge), (false, vec![]));
    let back_bridge = format!("br-{}", &back_net["Id"].as_str().unwrap()[..12]);
    assert!(
        traces_of(&back_bridge).0,
        "back's bridge did not survive the restart"
    );
    let out = docker_ok(&d, &["exec", "keeper", "nslookup", "keeper"]);
    assert!(out.contains(&keeper_ip), "{out}");
    std::thread::sleep(Duration::from_millis(500));
    let log = docker_ok(&d, &["logs", "keeper"]);
    assert!(log.lines().filter(|l| *l == "ok").count() >= 3, "{log}");
    assert!(
        !log.contains("FAIL"),
        "a query failed across the restart:\n{log}"
    );
    docker_ok(&d, &["rm", "-f", "keeper"]);
    // `system prune` prunes networks too.
    let pruned = docker_ok(&d, &["system", "prune", "-f"]);
    assert!(pruned.contains("Deleted Networks:\nback"), "{pruned}");
    assert_eq!(traces_of(&back_bridge), (false, vec![]));
}

#[test]
fn compose_project_network_service_names_scale_and_down() {
    require!(
        "compose_project_network_service_names_scale_and_down",
        root_unavailable(),
        docker_unavailable(),
        compose_unavailable()
    );
    let (_cfg, d) = daemon("10.217.0.0/16");
    let port = skiff_tests::registry::free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let compose = |args: &[&str]| {
        let out = Command::new("docker-compose")
            .args(["-p", "nets"])
            .args(args)
            .current_dir(dir.path())
            .env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
            .output()
            .unwrap();
        let t = text(&out);
        assert!(
            out.status.success(),
            "compose {args:?}: {t}\n{}",
            d.log_text()
        );
        t
    };
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        format!(
            r#"version: "3"
services:
  web:
    image: {IMAGE}
    stop_grace_period: 1s
    command: ["sh", "-c", "[ -f /data/index.html ] || hostname > /data/index.html; httpd -f -p 80 -h /data"]
    volumes:
      - site:/data
    ports:
      - "127.0.0.1:{port}:80"
  client:
    image: {IMAGE}
    stop_grace_period: 1s
    command: ["sh", "-c", "while true; do wget -qO /tmp/last http://web/; sleep 1; done"]
    depends_on:
      - web
    links:
      - "web:frontend"
  api:
    image: {IMAGE}
    stop_grace_period: 1s
    command: ["sleep", "300"]
volumes:
  site:
"#
        ),
    )
    .unwrap();
    docker_ok(&d, &["run", "-d", "--name", "plain", IMAGE, "sleep", "300"]);
    compose(&["up", "-d"]);
    let ps = compose(&["ps"]);
    assert_eq!(ps.matches("nets_web_1").count(), 1, "{ps}");
    assert_eq!(ps.matches("nets_client_1").count(), 1, "{ps}");
    assert_eq!(ps.matches("nets_api_1").count(), 1, "{ps}");
    let net = inspect(&d, "nets_default");
    assert_eq!(net["Labels"]["com.docker.compose.project"], "nets");
    assert_eq!(net["Containers"].as_object().unwrap().len(), 3, "{net}");
    // The client reaches the web service by its name (retried while httpd starts).
    let web_host = inspect(&d, "nets_web_1")["Config"]["Hostname"]
        .as_str()
        .unwrap()
        .to_string();
    let got = compose(&[
        "exec", "-T", "client", "sh", "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://web/ && exit 0; sleep 0.5; done; exit 1",
    ]);
    assert!(got.contains(&web_host), "{got}");
    // `links:` make a name of the client's own.
    let got = compose(&["exec", "-T", "client", "wget", "-qO-", "http://frontend/"]);
    assert!(got.contains(&web_host), "{got}");
    // The published port answers on the host's loopback.
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let got = (|| -> std::io::Result<String> {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(s, "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match got {
            Ok(r) if r.contains(" 200 ") => {
                break r.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
            }
            _ if Instant::now() > deadline => panic!("port {port} did not answer"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert_eq!(body.trim(), web_host);

    // --scale: the service name answers with every replica, in varying order.
    compose(&["up", "-d", "--scale", "api=3"]);
    let ips: Vec<String> = (1..=3)
        .map(|i| {
            inspect(&d, &format!("nets_api_{i}"))["NetworkSettings"]["Networks"]["nets_default"]
                ["IPAddress"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let answers = compose(&[
        "exec",
        "-T",
        "client",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do nslookup api | grep '^Address' | sed -n 2p; done",
    ]);
    let firsts: std::collections::BTreeSet<&str> = answers.lines().collect();
    assert!(firsts.len() >= 2, "no round robin: {answers}");
    let all = compose(&["exec", "-T", "client", "nslookup", "api"]);
    for ip in &ips {
        assert!(all.contains(ip.as_str()), "{ip} not in {all}");
    }

    compose(&["logs", "--no-color", "client"]);
    compose(&["down"]);
    let nets = docker_ok(&d, &["network", "ls", "--format", "{{.Name}}"]);
    assert!(!nets.lines().any(|l| l == "nets_default"), "{nets}");
    // Up again: the named volume kept its data (the hostname of the first web).
    compose(&["up", "-d"]);
    let out = docker_ok(
        &d,
        &[
            "run",
            "--rm",
            "-v",
            "nets_site:/s",
            IMAGE,
            "cat",
            "/s/index.html",
        ],
    );
    assert_eq!(out.trim(), web_host, "the volume lost its data");
    compose(&["down", "-v", "--remove-orphans"]);
    let left = docker_ok(&d, &["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(left.trim(), "plain", "{left}");
    let vols = docker_ok(&d, &["volume", "ls", "-q"]);
    assert!(!vols.contains("nets_site"), "{vols}");
    let id = net["Id"].as_str().unwrap();
    assert_eq!(traces_of(&format!("br-{}", &id[..12])), (false, vec![]));
}

#[test]
fn removing_a_network_frees_stopped_containers_endpoints() {
    require!(
        "removing_a_network_frees_stopped_containers_endpoints",
        root_unavailable(),
        docker_unavailable()
    );
    let (_cfg, d) = daemon("10.219.0.0/16");
    import_busybox(&d, IMAGE, &[]);
    docker_ok(&d, &["network", "create", "gone"]);
    docker_ok(&d, &["network", "create", "kept"]);
    docker_ok(
        &d,
        &["run", "--name", "ran", "--network", "gone", IMAGE, "true"],
    );
    docker_ok(
        &d,
        &[
            "create",
            "--name",
            "made",
            "--network",
            "gone",
            IMAGE,
            "true",
        ],
    );
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "up",
            "--network",
            "kept",
            IMAGE,
            "sleep",
            "60",
        ],
    );
    // A running container keeps its network in use.
    let out = docker_run(&d, &["network", "rm", "kept"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("has active endpoints (up)"),
        "{}",
        text(&out)
    );
    // Stopped and created ones do not, as with dockerd; their veths go with it.
    docker_ok(&d, &["network", "rm", "gone"]);
    let out = docker_run(&d, &["network", "inspect", "gone"]);
    assert!(!out.status.success());
    // And they do not start without it.
    for name in ["ran", "made"] {
        let out = docker_run(&d, &["start", name]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            text(&out).contains("network gone not found"),
            "{}",
            text(&out)
        );
    }
    docker_ok(&d, &["rm", "-f", "up", "ran", "made"]);
    docker_ok(&d, &["network", "rm", "kept"]);
}
