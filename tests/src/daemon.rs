//! A real `skiff daemon` with its own data and exec roots, stopped by PID when dropped, and
//! a way to run the real CLI against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::binary::skiff_bin;

pub struct Daemon {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    extra_args: Vec<String>,
    /// The binary to run instead of the built one, and extra environment
    /// ([`Daemon::start_again_with`]).
    bin: Option<PathBuf>,
    envs: Vec<(String, String)>,
}

impl Daemon {
    /// Starts a daemon in fresh temporary roots and waits until its socket answers.
    pub fn start() -> Result<Daemon> {
        Self::start_with(&[])
    }

    /// As [`Daemon::start`], with extra `skiff daemon` flags (e.g. `--cache-size 1m`).
    /// Background fetch of lazy layers is off, so tests count only the bytes their
    /// containers need; [`Daemon::start_with_background_fetch`] leaves it on.
    pub fn start_with(extra: &[&str]) -> Result<Daemon> {
        let mut args = vec!["--no-background-fetch"];
        args.extend_from_slice(extra);
        Self::start_exactly(&args)
    }

    /// As [`Daemon::start_with`], with the daemon's background fetch on.
    pub fn start_with_background_fetch(extra: &[&str]) -> Result<Daemon> {
        Self::start_exactly(extra)
    }

    /// As [`Daemon::start_with`], with extra environment variables for the daemon (e.g.
    /// `DOCKER_CONFIG`, `PATH` for credential helpers).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Result<Daemon> {
        let mut args = vec!["--no-background-fetch"];
        args.extend_from_slice(extra);
        Self::start_env(&args, env)
    }

    fn start_exactly(extra: &[&str]) -> Result<Daemon> {
        Self::start_env(extra, &[])
    }

    fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Result<Daemon> {
        let dir = tempfile::Builder::new().prefix("skiff-e2e-").tempdir()?;
        let data_root = dir.path().join("data");
        let exec_root = dir.path().join("run");
        let socket = exec_root.join("skiff.sock");
        let log = dir.path().join("daemon.log");
        let mut extra_args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        // Isolated from the host's /etc/skiff/daemon.json, unless the test brings its own.
        if !extra_args.iter().any(|a| a == "--config-file") {
            let cfg = dir.path().join("daemon.json");
            std::fs::write(&cfg, "{}\n")?;
            extra_args.push("--config-file".to_string());
            extra_args.push(cfg.display().to_string());
        }
        let mut d = Daemon {
            child: None,
            dir,
            data_root,
            exec_root,
            socket,
            log,
            extra_args: isolated_network_args()
                .into_iter()
                .chain(extra_args)
                .collect(),
            bin: None,
            envs: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.spawn()?;
        Ok(d)
    }

    fn spawn(&mut self) -> Result<()> {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let bin = self.bin.clone().unwrap_or_else(skiff_bin);
        let child = Command::new(bin)
            .arg("--exec-root")
            .arg(&self.exec_root)
            .arg("daemon")
            .arg("--data-root")
            .arg(&self.data_root)
            .args(&self.extra_args)
            // `SKIFF_TEST_LOG=info,skiff_store=debug cargo test ...` to take a test's
            // daemon apart (its log is printed when an assertion fails).
            .env(
                "RUST_LOG",
                std::env::var("SKIFF_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            // Inherited by the daemon's helper processes (shim launcher, descriptor
            // keepers), so a test finds the ones its daemon started.
            .env(TAG_VAR, self.dir.path())
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .context("starting skiff daemon")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().expect("spawned").try_wait()? {
                bail!("daemon exited with {status}:\n{}", self.log_text());
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("daemon did not listen within 30s:\n{}", self.log_text())
    }

    /// The bridge this test daemon attaches containers to.
    pub fn bridge(&self) -> Option<&str> {
        let pos = self.extra_args.iter().position(|a| a == "--bridge")?;
        self.extra_args.get(pos + 1).map(|s| s.as_str())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `skiff` CLI command aimed at this daemon.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(skiff_bin());
        c.env("SKIFF_HOST", format!("unix://{}", self.socket.display()))
            .env_remove("SKIFF_EXEC_ROOT");
        c
    }

    /// `(bytes, chunks)` of the daemon's chunk cache, from `skiff info`.
    pub fn chunk_cache(&self) -> (u64, u64) {
        let info = self.ok(&["info"]);
        let line = info
            .lines()
            .find(|l| l.trim_start().starts_with("Chunk cache:"))
            .unwrap_or_else(|| panic!("no chunk cache line in:\n{info}"));
        let n: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (n[0], n[1])
    }

    /// [`chunk_cache`](Self::chunk_cache) once it has stayed the same for a second
    /// (background fetches done or stopped); fails the test after 30 s.
    pub fn settled_chunk_cache(&self) -> (u64, u64) {
        let mut last = self.chunk_cache();
        for _ in 0..60 {
            std::thread::sleep(Duration::from_millis(500));
            let now = self.chunk_cache();
            if now == last {
                std::thread::sleep(Duration::from_millis(500));
                if self.chunk_cache() == now {
                    return now;
                }
            }
            last = now;
        }
        panic!("the chunk cache never settled: {last:?}");
    }

    /// Runs the CLI with `args` and returns its output (no stdin).
    pub fn run(&self, args: &[&str]) -> Output {
        self.cli()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running skiff")
    }

    /// Runs the CLI and returns stdout, failing the test (with stderr and the daemon log)
    /// when it exits non-zero.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "skiff {args:?} failed with {}:\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops the daemon with SIGTERM (or SIGKILL when `kill9`) and waits for it.
    pub fn stop(&mut self, kill9: bool) {
        if let Some(mut child) = self.child.take() {
            let sig = if kill9 {
                nix::sys::signal::Signal::SIGKILL
            } else {
                nix::sys::signal::Signal::SIGTERM
            };
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again on the same roots.
    pub fn restart(&mut self) -> Result<()> {
        self.stop(false);
        self.spawn()
    }

    /// Starts the daemon again after [`Daemon::stop`].
    pub fn start_again(&mut self) -> Result<()> {
        assert!(self.child.is_none(), "the daemon is still running");
        self.spawn()
    }

    /// Like [`Daemon::start_again`], running `bin` (e.g. a copy of the binary) instead, with
    /// `envs` added to its environment (e.g. `SKIFF_TEST_VERSION`).
    pub fn start_again_with(&mut self, bin: &Path, envs: &[(&str, &str)]) -> Result<()> {
        self.bin = Some(bin.to_path_buf());
        self.envs
            .extend(envs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.start_again()
    }

    /// Live processes started by this daemon (or an earlier one on the same roots) whose
    /// argv[1] is `arg` (e.g. `__shim-launcher`, `__shim`, `__fuse-keeper`), as (pid, argv).
    pub fn helpers(&self, arg: &str) -> Vec<(u32, Vec<String>)> {
        let tag = format!("{TAG_VAR}={}", self.dir.path().display());
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return out;
        };
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if !environ.split(|&b| b == 0).any(|v| v == tag.as_bytes()) {
                continue;
            }
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let argv: Vec<String> = cmdline
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if argv.get(1).map(String::as_str) == Some(arg) {
                out.push((pid, argv));
            }
        }
        out
    }
}

/// The environment variable that tags a test daemon's processes with its directory.
const TAG_VAR: &str = "SKIFF_TEST_DAEMON";

/// Each test daemon gets its own bridge and /24 so daemons running side by side never share
/// addresses or iptables chains.
fn isolated_network_args() -> Vec<String> {
    let n = (std::process::id() as u64 * 31
        + NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
        % 200
        + 20;
    vec![
        "--bridge".to_string(),
        format!("sktest{n}"),
        "--bip".to_string(),
        format!("172.29.{n}.0/24"),
    ]
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Drop for Daemon {
    fn drop(&mut self) {
        // Remove whatever containers are left so no mount, cgroup or process outlives the test.
        if self.child.is_some() {
            let ids = self.run(&["ps", "-aq", "--no-trunc"]);
            let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
            for id in ids.split_whitespace() {
                let _ = self.run(&["rm", "-f", id]);
            }
            // User-defined networks (their bridges and rules) go with the daemon's state.
            let _ = self.run(&["network", "prune", "-f"]);
            // Volumes too: one with driver options is a mount (volume_mount.rs).
            let _ = self.run(&["volume", "prune", "-a", "-f"]);
        }
        self.stop(false);
        // The bridge is the one thing a daemon leaves by design; a test's own goes too.
        if let Some(pos) = self.extra_args.iter().position(|a| a == "--bridge") {
            if let Some(bridge) = self.extra_args.get(pos + 1) {
                let _ = Command::new("ip")
                    .args(["link", "delete", bridge])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}
