//! What skiff does not implement is refused with 400 naming the field (the docker CLI exits
//! 125), from the docker CLI, the Python SDK and docker-compose 1.29; nothing is created.

use std::process::Command;

use skiff_tests::docker_cli::*;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon};

const IMAGE: &str = "127.0.0.1:5999/refusals:1";

#[test]
fn unimplemented_fields_are_refused_by_name() {
    require!(
        "unimplemented_fields_are_refused_by_name",
        root_unavailable(),
        docker_unavailable(),
        sdk_unavailable(),
        compose_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let run = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["run", "--rm", "--pull", "never"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push(IMAGE.to_string());
        a.push("true".to_string());
        a
    };
    let refused = |extra: &[&str], needle: &str| {
        let a = run(extra);
        let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        docker_refused(&d, &a, needle);
    };
    // Defaults pass.
    docker_ok(&d, &["run", "--rm", "--pull", "never", IMAGE, "true"]);
    refused(&["--runtime", "other"], "HostConfig.Runtime");
    refused(&["--platform", "linux/s390x"], "platform");
    refused(&["--blkio-weight", "500"], "HostConfig.BlkioWeight");
    refused(
        &["--health-cmd", "true", "--health-interval", "10us"],
        "Interval in Healthcheck cannot be less than 1ms",
    );
    refused(&["--pid", "host"], "HostConfig.PidMode");
    refused(
        &["--security-opt", "apparmor=unconfined"],
        "HostConfig.SecurityOpt",
    );
    // Bad input: 400 with a clear message, nothing created.
    refused(&["-v", "bad$name:/x"], "invalid characters");
    refused(&["-v", "vol:relative"], "absolute");
    refused(&["--tmpfs", "/"], "root filesystem");
    refused(
        &[
            "--mount",
            "type=bind,source=/nonexistent/skiff-src,target=/x",
        ],
        "bind source path does not exist",
    );
    refused(&["--cap-add", "NOPE"], "NOPE");
    // (`docker run` refuses --restart with --rm itself; `create` exits 1 on daemon errors.)
    let out = docker_run(
        &d,
        &[
            "create",
            "--pull",
            "never",
            "--restart",
            "bogus",
            IMAGE,
            "true",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("HostConfig.RestartPolicy.Name: unknown variant `bogus`"),
        "{err}"
    );
    refused(&["--sysctl", "kernel.hostname=x"], "kernel.hostname");
    refused(&["--log-driver", "syslog"], "syslog");
    assert_eq!(docker_ok(&d, &["ps", "-aq"]).trim(), "");
    assert_eq!(docker_ok(&d, &["volume", "ls", "-q"]).trim(), "");

    // The Python SDK gets the same 400.
    let (ok, out) = python_sdk(
        &d,
        &format!(
            r#"
import docker
c = docker.from_env()
print(c.containers.run("{IMAGE}", ["echo", "sdk-ok"], remove=True).decode(), end="")
try:
    c.containers.create("{IMAGE}", "true", blkio_weight=500)
except docker.errors.APIError as e:
    print("refused", e.status_code, e.explanation)
try:
    c.containers.create("{IMAGE}", "true", auto_remove=True, restart_policy={{"Name": "always"}})
except docker.errors.APIError as e:
    print("refused", e.status_code, e.explanation)
"#
        ),
    );
    assert!(ok, "{out}");
    assert!(out.starts_with("sdk-ok\n"), "{out}");
    assert!(out.contains("refused 400 HostConfig.BlkioWeight"), "{out}");
    assert!(
        out.contains("refused 400 can't create 'AutoRemove' container with restart policy"),
        "{out}"
    );

    // docker-compose 1.29: a refused option names the field.
    let proj = tempfile::tempdir().unwrap();
    std::fs::write(
        proj.path().join("docker-compose.yml"),
        format!(
            "version: \"2.4\"\nservices:\n  web:\n    image: {IMAGE}\n    command: [\"true\"]\n    network_mode: bridge\n    blkio_config:\n      weight: 500\n"
        ),
    )
    .unwrap();
    let out = Command::new("docker-compose")
        .args(["-p", "skiffrefusals", "up", "--no-start"])
        .current_dir(proj.path())
        .env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("HostConfig.BlkioWeight"), "{text}");
    assert_eq!(docker_ok(&d, &["ps", "-aq"]).trim(), "");
}
