//! The stock docker CLI drives skiff through the Docker Engine API.

use std::process::Command;

use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, Daemon, Registry};

fn docker_unavailable() -> Option<String> {
    match Command::new("docker").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("the docker CLI is not installed".to_string()),
    }
}

#[test]
fn stock_docker_cli_works_against_skiff() {
    require!(
        "stock_docker_cli_works_against_skiff",
        root_unavailable(),
        registry_unavailable()
    );
    // The docker CLI is not ours to install: without it this test is reported as skipped
    // (the issue allows it), even under SKIFF_TEST_STRICT.
    if let Some(reason) = docker_unavailable() {
        eprintln!("SKIPPED: stock_docker_cli_works_against_skiff: {reason}");
        return;
    }
    let reg = Registry::start().unwrap();
    let d = Daemon::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let image = format!("{}/dockercli:latest", reg.host());
    d.ok(&[
        "image",
        "import",
        "--change",
        r#"CMD ["echo", "hi from docker"]"#,
        rootfs.path().to_str().unwrap(),
        &image,
    ]);
    d.ok(&["push", &image]);
    d.ok(&["rmi", &image]);

    let docker = |args: &[&str]| {
        let out = Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
            .env("DOCKER_CONFIG", d.dir().join("docker-config"))
            .args(args)
            .output()
            .expect("docker CLI runs");
        assert!(
            out.status.success(),
            "docker {args:?}: {}\n{}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            d.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let v = docker(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(v.trim(), "1.43");
    docker(&["pull", &image]);
    assert!(docker(&["images"]).contains(&format!("{}/dockercli", reg.host())));
    assert_eq!(docker(&["run", "--rm", &image, "echo", "hi"]), "hi\n");
    let id = docker(&["run", "-d", &image, "sh", "-c", "echo started; sleep 300"]);
    let id = id.trim();
    assert!(docker(&["ps", "-a"]).contains(&id[..12]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(docker(&["logs", id]).contains("started"));
    docker(&["stop", "-t", "1", id]);
    docker(&["rm", id]);
    assert!(!docker(&["ps", "-a"]).contains(&id[..12]));
}
