//! Test support: a self-contained busybox-static rootfs used as the lower dir, and a
//! container fixture that always removes what it created.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use skiff_runtime::{ContainerConfig, ContainerState, LogOptions, LogReader, LogStream};

pub const EXE: &str = env!("CARGO_BIN_EXE_skiff-runtime-entry");
/// Parent cgroup for test containers, apart from a real daemon's `skiff`.
pub const CGROUP_PARENT: &str = "skiff-test";

/// Why these tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if let Some(r) = skiff_tests::skip::root_unavailable() {
        return Some(r);
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox (busybox-static) not installed".into());
    }
    None
}

/// A read-only-style lower dir: busybox, its applet links, /etc/passwd and /etc/group.
pub fn busybox_rootfs(root: &Path) {
    for d in [
        "bin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "home/user",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let out = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8(out.stdout).unwrap().lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nuser:x:1000:\nwheel:x:10:user\nnogroup:x:65534:\n",
    )
    .unwrap();
    // A file that exists but cannot be executed (for exit code 126).
    std::fs::write(root.join("bin/notexec"), "#!/bin/sh\necho no\n").unwrap();
}

/// One container under test; `Drop` removes it (processes, cgroup, mounts, directory).
pub struct Fixture {
    _tmp: tempfile::TempDir,
    pub rootfs: PathBuf,
    pub dir: PathBuf,
    pub cfg: ContainerConfig,
}

impl Fixture {
    pub fn new(name: &str, args: &[&str]) -> Fixture {
        let tmp = tempfile::Builder::new()
            .prefix("skiff-rt-")
            .tempdir()
            .unwrap();
        let rootfs = tmp.path().join("lower");
        busybox_rootfs(&rootfs);
        let dir = tmp.path().join("container");
        let id = format!("{name}-{}", std::process::id());
        let mut cfg = ContainerConfig::new(
            &id,
            dir.clone(),
            vec![rootfs.clone()],
            args.iter().map(|s| s.to_string()).collect(),
        );
        cfg.cgroup_parent = CGROUP_PARENT.into();
        Fixture {
            _tmp: tmp,
            rootfs,
            dir,
            cfg,
        }
    }

    pub fn create(&self) -> skiff_runtime::Result<skiff_runtime::ContainerHandle> {
        skiff_runtime::create(Path::new(EXE), &self.cfg)
    }

    /// create + start + wait (bounded), returning the final state.
    pub fn run(&self) -> ContainerState {
        self.create().expect("create");
        skiff_runtime::start(&self.dir).expect("start");
        self.wait(Duration::from_secs(30))
    }

    pub fn wait(&self, limit: Duration) -> ContainerState {
        skiff_runtime::wait_timeout(&self.dir, limit)
            .expect("wait")
            .expect("container did not exit in time")
    }

    /// Everything logged on one stream.
    pub fn output(&self, stream: LogStream) -> String {
        LogReader::open(&self.dir, LogOptions::default())
            .expect("open log")
            .map(|e| e.expect("log entry"))
            .filter(|e| e.stream == stream)
            .map(|e| e.log)
            .collect()
    }

    pub fn stdout(&self) -> String {
        self.output(LogStream::Stdout)
    }

    /// The cgroup directories this container would have, in every hierarchy.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroup_dirs_named(&format!("{}/{}", CGROUP_PARENT, self.cfg.id))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if self.dir.exists() {
            if let Err(e) = skiff_runtime::remove(&self.dir) {
                eprintln!("cleanup of {}: {e}", self.dir.display());
            }
        }
    }
}

/// `<mount point>/<rel>` for every cgroup (v1 or v2) mount of this machine.
pub fn cgroup_dirs_named(rel: &str) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter(|l| l.contains(" - cgroup ") || l.contains(" - cgroup2 "))
        .filter_map(|l| l.split(' ').nth(4))
        .map(|mp| Path::new(mp).join(rel))
        .collect()
}

/// Mount points whose path contains `needle`.
pub fn mounts_containing(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}
