//! The isolated network each test gets, and helpers to act from inside namespaces.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use skiff_runtime::network::{
    join_netns, NetworkAttachment, NetworkConfig, NetworkManager, NetworkMode, NetworkRequest,
    PortSpec,
};

pub fn unavailable() -> Option<String> {
    if let Some(r) = skiff_tests::skip::root_unavailable() {
        return Some(r);
    }
    for tool in [
        "iptables",
        "iptables-save",
        "iptables-restore",
        "ip",
        "nsenter",
        "busybox",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

pub fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A process we started; killed and reaped by PID when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn in_ns(ns: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.display())).args(args);
    c
}

/// Runs `f` on a thread that has joined the namespace at `ns` (with the same call the
/// container init uses).
pub fn on_thread_in<T: Send + 'static>(ns: PathBuf, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        join_netns(&ns).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// One test's isolated network: names derived from `n`, cleaned up by name on drop.
pub struct Fixture {
    pub n: u8,
    pub config: NetworkConfig,
    procs: Vec<Proc>,
    test_host: Option<String>,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new(n: u8, prefix_len: u8) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NetworkConfig::new(dir.path().join("state"), dir.path().join("run"));
        config.bridge = format!("sktbr{n}");
        config.subnet = format!("172.31.{n}.0/{prefix_len}").parse().unwrap();
        config.chain_prefix = format!("SKT{n}");
        // Released attachments are deleted, so tests see exactly what a container made; the
        // spare pool has its own test.
        config.spares = 0;
        let fx = Self {
            n,
            config,
            procs: Vec::new(),
            test_host: None,
            dir,
        };
        fx.scrub(); // leftovers of an earlier crashed run
        fx
    }

    pub async fn manager(&self) -> NetworkManager {
        NetworkManager::restore(self.config.clone()).await.unwrap()
    }

    pub fn id(&self, name: &str) -> String {
        format!("t{}-{name}", self.n)
    }

    pub fn request(&self, name: &str, mode: NetworkMode, ports: Vec<PortSpec>) -> NetworkRequest {
        NetworkRequest {
            container_id: self.id(name),
            hostname: name.to_string(),
            mode,
            ports,
            endpoints: Vec::new(),
            dns_forwarders: Vec::new(),
        }
    }

    pub fn spawn_in(&mut self, ns: &Path, args: &[&str]) {
        let child = in_ns(ns, args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.procs.push(Proc(child));
    }

    /// busybox httpd on port 80 of the container's namespace, serving `root`.
    pub fn start_httpd(&mut self, ns: &Path, root: &Path) {
        let root = root.to_str().unwrap();
        self.spawn_in(ns, &["busybox", "httpd", "-f", "-p", "80", "-h", root]);
    }

    pub fn stop_procs(&mut self) {
        self.procs.clear();
    }

    /// A "test host": its own namespace, reached from the host over a veth pair with
    /// 10.250.N.1/30 (host side) and 10.250.N.2/30 (inside). Returns (netns path, address).
    pub fn add_test_host(&mut self) -> (PathBuf, Ipv4Addr) {
        let name = format!("skt-th{}", self.n);
        let host_if = format!("sktth{}h", self.n);
        ok(&["ip", "netns", "add", &name]);
        self.test_host = Some(name.clone());
        ok(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        ok(&[
            "ip",
            "addr",
            "add",
            &format!("10.250.{}.1/30", self.n),
            "dev",
            &host_if,
        ]);
        ok(&["ip", "link", "set", &host_if, "up"]);
        let exec = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &name];
            v.extend_from_slice(args);
            ok(&v);
        };
        exec(&[
            "ip",
            "addr",
            "add",
            &format!("10.250.{}.2/30", self.n),
            "dev",
            "eth0",
        ]);
        exec(&["ip", "link", "set", "eth0", "up"]);
        exec(&["ip", "link", "set", "lo", "up"]);
        (
            PathBuf::from(format!("/run/netns/{name}")),
            Ipv4Addr::new(10, 250, self.n, 2),
        )
    }

    pub fn host_gateway_on_test_link(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.n, 1)
    }

    /// Lines of `iptables-save` that belong to this test (its chains or its ids).
    pub fn our_rules(&self) -> Vec<String> {
        let chains = format!("SKT{}-", self.n);
        let tag = format!("skiff:t{}-", self.n);
        ok(&["iptables-save"])
            .lines()
            .filter(|l| l.contains(&chains) || l.contains(&tag))
            .map(str::to_string)
            .collect()
    }

    /// Packets that hit this test's DNAT rule for a host port (new connections only: NAT
    /// rules see the first packet of each).
    pub fn dnat_packets(&self, host_port: u16) -> u64 {
        let chain = format!("SKT{}-DNAT", self.n);
        let listing = ok(&[
            "iptables", "-w", "-t", "nat", "-L", &chain, "-n", "-v", "-x",
        ]);
        let needle = format!("dpt:{host_port} ");
        listing
            .lines()
            .filter(|l| l.contains(&needle) || l.ends_with(&format!("dpt:{host_port}")))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    pub fn veths_on_bridge(&self) -> String {
        let out = run(&["ip", "-o", "link", "show", "master", &self.config.bridge]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn bridge_exists(&self) -> bool {
        run(&["ip", "link", "show", &self.config.bridge])
            .status
            .success()
    }

    pub fn netns_files(&self) -> Vec<String> {
        match std::fs::read_dir(self.config.exec_root.join("netns")) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// After every container is released: nothing left but the bridge.
    /// After every container is released: the bridge and skiff's base rules stay (as
    /// Docker's do, so the next container needs no iptables call), nothing of any container.
    pub fn assert_only_bridge_left(&self) {
        let tagged: Vec<String> = self
            .our_rules()
            .into_iter()
            .filter(|l| l.contains("skiff:") || l.contains("--to-destination"))
            .collect();
        assert_eq!(tagged, Vec::<String>::new(), "container rules left");
        assert_eq!(
            self.veths_on_bridge().trim(),
            "",
            "veths left on the bridge"
        );
        assert_eq!(self.netns_files(), Vec::<String>::new(), "namespaces left");
        assert!(self.bridge_exists(), "bridge should stay");
    }

    /// Removes by name whatever this test may have made (idempotent, never fails).
    pub fn scrub(&self) {
        let netns_dir = self.config.exec_root.join("netns");
        for f in self.netns_files() {
            let _ = nix::mount::umount2(&netns_dir.join(f), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = nix::mount::umount2(&netns_dir, nix::mount::MntFlags::MNT_DETACH);
        let chains = format!("SKT{}-", self.n);
        let mut table = String::new();
        for line in String::from_utf8_lossy(&run(&["iptables-save"]).stdout).lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.to_string();
            } else if line.starts_with("-A ") && line.contains(&format!("-j {chains}")) {
                let del = line.replacen("-A ", "-D ", 1);
                let mut args = vec!["iptables", "-w", "-t", &table];
                args.extend(del.split_whitespace());
                let _ = run(&args);
            }
        }
        for (t, c) in [
            ("nat", "POSTROUTING"),
            ("nat", "DNAT"),
            ("filter", "FORWARD"),
        ] {
            let chain = format!("{chains}{c}");
            let _ = run(&["iptables", "-w", "-t", t, "-F", &chain]);
            let _ = run(&["iptables", "-w", "-t", t, "-X", &chain]);
        }
        for line in self.veths_on_bridge().lines() {
            if let Some(name) = line.split(':').nth(1) {
                let name = name.trim().split('@').next().unwrap_or("");
                let _ = run(&["ip", "link", "del", name]);
            }
        }
        let _ = run(&["ip", "link", "del", &self.config.bridge]);
        let _ = run(&["ip", "link", "del", &format!("sktth{}h", self.n)]);
        let _ = run(&["ip", "netns", "del", &format!("skt-th{}", self.n)]);
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop_procs();
        self.scrub();
    }
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// A web root whose CGI prints the peer address the container sees.
pub fn web_root(dir: &Path) -> PathBuf {
    let root = dir.join("www");
    std::fs::create_dir_all(root.join("cgi-bin")).unwrap();
    std::fs::write(root.join("index.html"), "hello from the container\n").unwrap();
    let cgi = root.join("cgi-bin/peer");
    std::fs::write(
        &cgi,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"peer=$REMOTE_ADDR\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cgi, std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP server inside a container's namespace answering `count` datagrams with the
/// sender's address.
pub fn udp_echo_in(ns: PathBuf, port: u16, count: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        on_thread_in(ns, move || {
            let s = UdpSocket::bind(("0.0.0.0", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            for _ in 0..count {
                let mut b = [0u8; 64];
                let (_, from) = s.recv_from(&mut b).unwrap();
                s.send_to(format!("echo from {}", from.ip()).as_bytes(), from)
                    .unwrap();
            }
        })
    })
}

/// Sends one datagram and returns the reply (retrying: the server may still be starting).
pub fn udp_ask(to: SocketAddr) -> String {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    for _ in 0..20 {
        s.send_to(b"hi", to).unwrap();
        let mut b = [0u8; 64];
        if let Ok((n, _)) = s.recv_from(&mut b) {
            return String::from_utf8_lossy(&b[..n]).into_owned();
        }
    }
    panic!("no UDP reply from {to}");
}

pub fn ns_of(a: &NetworkAttachment) -> &Path {
    a.netns_path.as_deref().expect("attachment has a netns")
}
