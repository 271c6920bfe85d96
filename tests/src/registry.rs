//! A real OCI registry (Debian's `docker-registry`, the CNCF distribution server) on a free
//! loopback port with its own storage directory, stopped by PID when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The registry binary; `SKIFF_TEST_REGISTRY_BIN` overrides it.
fn registry_bin() -> PathBuf {
    std::env::var_os("SKIFF_TEST_REGISTRY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"))
}

/// Whether the registry binary is installed; tests that need it skip with this reason.
pub fn registry_unavailable() -> Option<String> {
    let bin = registry_bin();
    if bin.exists() {
        None
    } else {
        Some(format!(
            "{} not found (apt-get install docker-registry)",
            bin.display()
        ))
    }
}

pub struct Registry {
    child: Child,
    /// The address it listens on (127.0.0.1, or inside a test's network namespace).
    ip: String,
    /// The network namespace it runs in, if any.
    netns: Option<String>,
    port: u16,
    _dir: tempfile::TempDir,
    log: PathBuf,
    config: PathBuf,
    stopped: bool,
}

impl Registry {
    /// Starts a registry on 127.0.0.1 at a free port and waits until `/v2/` answers.
    pub fn start() -> Result<Registry> {
        Self::start_with_auth(None)
    }

    /// Like [`Registry::start`], requiring HTTP basic auth checked against `htpasswd`
    /// (bcrypt entries) when given.
    pub fn start_with_htpasswd(htpasswd: &Path) -> Result<Registry> {
        Self::start_with_auth(Some(htpasswd))
    }

    /// Like [`Registry::start`], with Distribution's token authentication: the registry
    /// answers `401 Bearer realm=<server's realm>` and accepts the server's JWTs.
    pub fn start_with_token(server: &crate::token_server::TokenServer) -> Result<Registry> {
        Self::start_with_config(&format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            server.realm(),
            crate::token_server::SERVICE,
            crate::token_server::ISSUER,
            server.cert_bundle().display()
        ))
    }

    fn start_with_auth(htpasswd: Option<&Path>) -> Result<Registry> {
        Self::start_with_config(
            &htpasswd
                .map(|p| {
                    format!(
                        "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                        p.display()
                    )
                })
                .unwrap_or_default(),
        )
    }

    /// Starts a registry serving HTTPS with `cert`/`key` inside `ns` (port 5000), with
    /// token auth by `token` if given, and requiring client certificates signed by
    /// `client_ca` if given.
    pub fn start_tls_in(
        ns: &crate::netns::NetNs,
        port: u16,
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        token: Option<&crate::token_server::TokenServer>,
    ) -> Result<Registry> {
        let mut tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
        if let Some(ca) = client_ca {
            tls.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
        }
        let auth = token
            .map(|server| {
                format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    server.realm(),
                    crate::token_server::SERVICE,
                    crate::token_server::ISSUER,
                    server.cert_bundle().display()
                )
            })
            .unwrap_or_default();
        Self::start_at(&ns.ns_ip, Some(&ns.name), port, &tls, &auth)
    }

    /// Starts a registry serving HTTPS with `cert`/`key` on 127.0.0.1 at a free port (no
    /// auth): a loopback registry with TLS, which clients reach over HTTPS first.
    pub fn start_tls_loopback(cert: &Path, key: &Path) -> Result<Registry> {
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
        Self::start_at("127.0.0.1", None, free_port()?, &tls, "")
    }

    /// Starts a plain-HTTP registry inside `ns` on `port`.
    pub fn start_plain_in(ns: &crate::netns::NetNs, port: u16) -> Result<Registry> {
        Self::start_at(&ns.ns_ip, Some(&ns.name), port, "", "")
    }

    /// Starts a registry whose config ends with `extra` (YAML top-level sections).
    fn start_with_config(extra: &str) -> Result<Registry> {
        Self::start_at("127.0.0.1", None, free_port()?, "", extra)
    }

    /// A registry listening on `ip:port` (in namespace `netns`), with `http_extra` in its
    /// `http:` section and `extra` top-level sections.
    fn start_at(
        ip: &str,
        netns: Option<&str>,
        port: u16,
        http_extra: &str,
        extra: &str,
    ) -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("skiff-registry-")
            .tempdir()?;
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage)?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {ip}:{port}\n{http_extra}{extra}",
                storage.display(),
            ),
        )?;
        let log = dir.path().join("registry.log");
        let child = spawn_registry(&config, &log, netns)?;
        let mut reg = Registry {
            child,
            ip: ip.to_string(),
            netns: netns.map(str::to_string),
            port,
            _dir: dir,
            log,
            config,
            stopped: false,
        };
        reg.wait_ready()?;
        Ok(reg)
    }

    /// Stops the registry process (by PID); storage and port are kept for [`Self::restart`].
    pub fn stop(&mut self) -> Result<()> {
        if !self.stopped {
            self.child.kill()?;
            self.child.wait()?;
            self.stopped = true;
        }
        Ok(())
    }

    /// Starts the registry again on the same port with the same storage.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.child = spawn_registry(&self.config, &self.log, self.netns.as_deref())?;
        self.stopped = false;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "registry exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if self.http_extra_tls() {
                if TcpStream::connect((self.ip.as_str(), self.port)).is_ok() {
                    return Ok(());
                }
            } else if let Ok(status) = self.get_status("/v2/") {
                // 401: up, and asking for the credentials it was configured with.
                if status == 200 || status == 401 {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("registry on port {} did not answer within 20s", self.port)
    }

    /// Whether it serves HTTPS (its config has a `tls:` section).
    fn http_extra_tls(&self) -> bool {
        std::fs::read_to_string(&self.config).is_ok_and(|c| c.contains("\n  tls:\n"))
    }

    /// `IP:PORT` (`127.0.0.1:PORT` unless in a namespace), the registry part of image
    /// references pushed here.
    pub fn host(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn storage_dir(&self) -> PathBuf {
        self._dir.path().join("storage")
    }

    /// Where the registry keeps the bytes of blob `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The registry's log (it includes an access log line for every request).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The HTTP status of a GET of `path` (a tiny HTTP/1.0 client, enough for health checks).
    pub fn get_status(&self, path: &str) -> Result<u16> {
        let mut s = TcpStream::connect((self.ip.as_str(), self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.host())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        let head = String::from_utf8_lossy(&buf);
        let status = head
            .split_whitespace()
            .nth(1)
            .context("empty HTTP response")?
            .parse()?;
        Ok(status)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Stop exactly the process we started.
        let _ = self.stop();
    }
}

fn spawn_registry(config: &Path, log: &Path, netns: Option<&str>) -> Result<Child> {
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut cmd = match netns {
        // `ip netns exec` execs the registry: the child's PID is the registry's.
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(registry_bin());
            c
        }
        None => Command::new(registry_bin()),
    };
    cmd.arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()
        .with_context(|| format!("starting {}", registry_bin().display()))
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
