//! Log drivers through the stock docker CLI: `none` keeps nothing and `logs` is refused as
//! Docker refuses it; `--log-opt max-size/max-file` rotate; daemon.json's `log-opts` are
//! every container's default.

use skiff_tests::docker_cli::*;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon};

const IMAGE: &str = "127.0.0.1:5999/logging:1";

fn log_files(d: &Daemon, name: &str) -> Vec<String> {
    let path = docker_ok(d, &["inspect", "-f", "{{.LogPath}}", name]);
    let path = std::path::PathBuf::from(path.trim());
    let dir = path.parent().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("container.log"))
        .collect();
    names.sort();
    names
}

#[test]
fn log_drivers_and_rotation() {
    require!(
        "log_drivers_and_rotation",
        root_unavailable(),
        docker_unavailable()
    );
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("daemon.json");
    std::fs::write(&cfg, r#"{"log-opts": {"max-size": "2k", "max-file": "2"}}"#).unwrap();
    let d = Daemon::start_with(&["--config-file", cfg.to_str().unwrap()]).unwrap();
    import_busybox(&d, IMAGE, &[]);
    // Paced, so each burst is a separate write (the runtime rotates between writes).
    let write = "i=0; while [ $i -lt 400 ]; do echo line-$i-padding-padding-padding; i=$((i+1)); [ $((i % 20)) -eq 0 ] && sleep 0.02; done; true";

    docker_ok(
        &d,
        &[
            "run",
            "--pull",
            "never",
            "--name",
            "quiet",
            "--log-driver",
            "none",
            IMAGE,
            "sh",
            "-c",
            write,
        ],
    );
    let out = docker_run(&d, &["logs", "quiet"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("configured logging driver does not support reading"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Explicit options: at most 3 files (the live one and two rotated), the newest lines kept.
    docker_ok(
        &d,
        &[
            "run",
            "--pull",
            "never",
            "--name",
            "rot",
            "--log-opt",
            "max-size=1k",
            "--log-opt",
            "max-file=3",
            IMAGE,
            "sh",
            "-c",
            write,
        ],
    );
    let files = log_files(&d, "rot");
    assert!(files.len() <= 3 && files.len() >= 2, "{files:?}");
    let logs = docker_ok(&d, &["logs", "rot"]);
    assert!(
        logs.ends_with("line-399-padding-padding-padding\n"),
        "{logs}"
    );
    assert!(
        !logs.contains("line-0-padding"),
        "oldest lines should be rotated away"
    );
    assert_eq!(
        docker_ok(&d, &["inspect", "-f", "{{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config \"max-size\"}}", "rot"]).trim(),
        "json-file 1k"
    );

    // No options: the daemon's log-opts apply (2 files at most).
    docker_ok(
        &d,
        &[
            "run", "--pull", "never", "--name", "dflt", IMAGE, "sh", "-c", write,
        ],
    );
    let files = log_files(&d, "dflt");
    assert!(files.len() <= 2, "{files:?}");
    assert_eq!(
        docker_ok(
            &d,
            &[
                "inspect",
                "-f",
                "{{index .HostConfig.LogConfig.Config \"max-file\"}}",
                "dflt"
            ]
        )
        .trim(),
        "2"
    );
    docker_ok(&d, &["rm", "quiet", "rot", "dflt"]);
}
