//! The daemon's settings file: dockerd's key names, flags over the file, unknown keys refused.

use std::process::{Command, Stdio};

use skiff_tests::binary::skiff_bin;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon};

#[test]
fn unknown_key_in_daemon_json_is_refused_by_name() {
    require!(
        "unknown_key_in_daemon_json_is_refused_by_name",
        root_unavailable()
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("daemon.json");
    std::fs::write(&cfg, r#"{"data-root": "/x", "no-such-option": true}"#).unwrap();
    let out = Command::new(skiff_bin())
        .arg("--exec-root")
        .arg(dir.path().join("run"))
        .args(["daemon", "--config-file"])
        .arg(&cfg)
        .arg("--data-root")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "daemon started: {err}");
    assert!(err.contains("no-such-option"), "{err}");
    assert!(err.contains(cfg.to_str().unwrap()), "{err}");
    assert!(
        !dir.path().join("data").exists(),
        "created state before refusing"
    );

    // A named file that does not exist is an error too.
    let out = Command::new(skiff_bin())
        .args(["daemon", "--config-file"])
        .arg(dir.path().join("missing.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.json"));
}

#[test]
fn daemon_json_applies_and_flags_override_it() {
    require!(
        "daemon_json_applies_and_flags_override_it",
        root_unavailable()
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("daemon.json");
    // data-root is also given as a flag by the harness: the flag wins. debug comes only from
    // the file and shows in the log.
    std::fs::write(
        &cfg,
        r#"{"data-root": "/nonexistent/skiff-file-root", "debug": true, "cache-size": "64m",
            "live-restore": false, "log-driver": "json-file"}"#,
    )
    .unwrap();
    let d = Daemon::start_with(&["--config-file", cfg.to_str().unwrap()]).unwrap();
    let info = d.ok(&["info"]);
    assert!(
        info.contains(d.data_root.to_str().unwrap()),
        "info does not show the flag's data root:\n{info}"
    );
    assert!(!std::path::Path::new("/nonexistent/skiff-file-root").exists());
    assert!(info.contains("Live Restore Enabled: false"), "{info}");
    let log = d.log_text();
    assert!(log.contains("read daemon settings"), "{log}");
    assert!(
        log.contains("DEBUG"),
        "debug from the file not applied:\n{log}"
    );
}
