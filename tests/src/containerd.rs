//! A private containerd 1.6 (Debian's) for the remote-snapshotter tests: its own config,
//! root, state and socket in a temporary directory, skiff's snapshotter as the proxy plugin
//! `skiff`, the CRI plugin pulling through it with snapshot annotations on. Stopped by PID
//! when dropped; mounts left under its directory are detached.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Why containerd tests cannot run here, if they cannot.
pub fn containerd_unavailable() -> Option<String> {
    for bin in ["containerd", "ctr", "containerd-shim-runc-v2", "runc"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!(
                "{bin} is not installed (apt-get install containerd)"
            ));
        }
    }
    None
}

pub struct Containerd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Containerd {
    /// Starts containerd with `snapshotter_socket` as proxy plugin `skiff`, the CRI plugin
    /// using it, and `registry` (`127.0.0.1:port`) reached over plain HTTP.
    pub fn start(snapshotter_socket: &Path, registry: &str) -> Result<Containerd> {
        let dir = tempfile::Builder::new().prefix("skiff-ctrd-").tempdir()?;
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let config = d.join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[proxy_plugins]
  [proxy_plugins.skiff]
    type = "snapshot"
    address = "{snap}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{registry}/pause:none"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Sandboxes ask for oom_score_adj -998; without CAP_SYS_RESOURCE (test VMs) runc cannot
  # lower it, so clamp it to containerd's own, as a rootless or nested node does.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "skiff"
    disable_snapshot_annotations = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni-bin"
    conf_dir = "{d}/cni-conf"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
"#,
                root = d.join("root").display(),
                state = d.join("state").display(),
                sock = socket.display(),
                snap = snapshotter_socket.display(),
                d = d.display(),
            ),
        )?;
        let log = d.join("containerd.log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(&log)?.try_clone()?)
            .spawn()
            .context("starting containerd")?;
        let mut c = Containerd {
            child: Some(child),
            dir,
            socket,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if c.socket.exists() && c.ctr(&["version"]).status.success() {
                return Ok(c);
            }
            if let Some(child) = c.child.as_mut() {
                if let Some(st) = child.try_wait()? {
                    bail!("containerd exited ({st}): {}", c.log_text());
                }
            }
            if Instant::now() > deadline {
                bail!("containerd did not answer in 30 s: {}", c.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `ctr --address <socket> args...`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running ctr")
    }

    /// [`Containerd::ctr`], panicking with its output unless it succeeds; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed: {}{}\ncontainerd log tail:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log_text(), 40)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills the tasks a failed test left running (their shims outlive containerd), stops
    /// containerd (SIGTERM, then SIGKILL after 20 s) and detaches mounts it left.
    pub fn stop(&mut self) {
        if self.child.is_some() {
            for ns in ["default", "k8s.io"] {
                let tasks = self.ctr(&["-n", ns, "task", "ls", "-q"]);
                for id in String::from_utf8_lossy(&tasks.stdout).split_whitespace() {
                    let _ = self.ctr(&["-n", ns, "task", "kill", "-s", "SIGKILL", id]);
                    let _ = self.ctr(&["-n", ns, "task", "rm", "-f", id]);
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for m in mounts_under(self.dir.path()).into_iter().rev() {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Mount points under `dir`, outermost first (from /proc/self/mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect()
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}
