//! The stock docker CLI, the Python Docker SDK and docker-compose aimed at a test daemon,
//! and a local busybox image to run (imported, never pulled).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::{fixtures, Daemon};

/// Why the docker CLI cannot be used here, if it cannot.
pub fn docker_unavailable() -> Option<String> {
    match Command::new("docker").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("the docker CLI is not installed".to_string()),
    }
}

/// The Python interpreter with the Docker SDK (scripts/install-deps.sh makes it).
pub const SDK_PYTHON: &str = "/opt/skiff-test-venv/bin/python";

pub fn sdk_unavailable() -> Option<String> {
    (!Path::new(SDK_PYTHON).exists()).then(|| format!("{SDK_PYTHON} is missing"))
}

pub fn compose_unavailable() -> Option<String> {
    match Command::new("docker-compose").arg("version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("docker-compose is not installed".to_string()),
    }
}

/// Imports the busybox fixture as `reference` (with `changes`, e.g. `VOLUME /data`), with
/// a file `/data/seed.txt` holding `seeded`.
pub fn import_busybox(d: &Daemon, reference: &str, changes: &[&str]) {
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    std::fs::write(rootfs.path().join("data/seed.txt"), "seeded\n").unwrap();
    let mut args = vec!["image", "import"];
    for c in changes {
        args.push("--change");
        args.push(c);
    }
    let p = rootfs.path().to_str().unwrap().to_string();
    args.push(&p);
    args.push(reference);
    d.ok(&args);
}

/// The docker CLI 20.10 client (scripts/install-deps.sh extracts it from Debian's docker.io).
pub const DOCKER_20_10: &str = "/opt/docker-20.10/docker";

pub fn docker_20_10_unavailable() -> Option<String> {
    (!Path::new(DOCKER_20_10).exists()).then(|| format!("{DOCKER_20_10} is missing"))
}

/// A docker CLI 20.10 command aimed at the daemon.
pub fn docker_20_10(d: &Daemon) -> Command {
    let mut c = Command::new(DOCKER_20_10);
    c.env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
        .env("DOCKER_CONFIG", d.dir().join("docker-config"))
        .stdin(Stdio::null());
    c
}

/// A `docker` command aimed at the daemon.
pub fn docker(d: &Daemon) -> Command {
    let mut c = Command::new("docker");
    c.env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
        .env("DOCKER_CONFIG", d.dir().join("docker-config"))
        .stdin(Stdio::null());
    c
}

/// Runs `docker ARGS`.
pub fn docker_run(d: &Daemon, args: &[&str]) -> Output {
    docker(d).args(args).output().expect("docker CLI runs")
}

/// Runs `docker ARGS`, failing the test unless it succeeds; returns stdout.
pub fn docker_ok(d: &Daemon, args: &[&str]) -> String {
    let out = docker_run(d, args);
    assert!(
        out.status.success(),
        "docker {args:?} failed ({}):\n{}\n{}\ndaemon log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.log_text()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `docker ARGS` expecting exit 125 with `needle` in stderr; returns stderr.
pub fn docker_refused(d: &Daemon, args: &[&str], needle: &str) -> String {
    docker_fails(d, args, 125, needle)
}

/// Runs `docker ARGS` expecting exit `code` with `needle` in stderr; returns stderr.
pub fn docker_fails(d: &Daemon, args: &[&str], code: i32, needle: &str) -> String {
    let out = docker_run(d, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "docker {args:?} did not exit {code}: {err}"
    );
    assert!(
        err.contains(needle),
        "docker {args:?}: {needle:?} not in: {err}"
    );
    err
}

/// Runs a Python SDK script with `DOCKER_HOST` set; returns (success, stdout+stderr).
pub fn python_sdk(d: &Daemon, script: &str) -> (bool, String) {
    let out = Command::new(SDK_PYTHON)
        .arg("-c")
        .arg(script)
        .env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
        .output()
        .expect("python runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
