//! The walk-through Docker's own tutorials use, against the real daemon, CLI and registry.

use std::time::{Duration, Instant};

use skiff_tests::pty::PtySession;
use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, Daemon, Registry};

/// Imports the busybox fixture as `<registry>/busybox:latest` with a greeting as CMD, pushes
/// it, and removes the local copy so the first `run` pulls it.
fn publish_busybox(d: &Daemon, reg: &Registry) -> String {
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let image = format!("{}/busybox:latest", reg.host());
    d.ok(&[
        "image",
        "import",
        "--change",
        r#"CMD ["echo", "Hello from skiff!"]"#,
        rootfs.path().to_str().unwrap(),
        &image,
    ]);
    d.ok(&["push", &image]);
    d.ok(&["rmi", &image]);
    image
}

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn docker_tutorial_walkthrough() {
    require!(
        "docker_tutorial_walkthrough",
        root_unavailable(),
        registry_unavailable()
    );
    let reg = Registry::start().unwrap();
    let d = Daemon::start().unwrap();
    let image = publish_busybox(&d, &reg);

    // 1. run an image that prints a greeting (pulled because it is missing).
    let out = d.run(&["run", "--rm", &image]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Hello from skiff!"));
    assert!(d
        .ok(&["images"])
        .contains(&format!("{}/busybox", reg.host())));

    // 2. command overrides.
    assert_eq!(
        d.ok(&["run", "--rm", &image, "echo", "hi", "there"]),
        "hi there\n"
    );
    let ls = d.ok(&["run", "--rm", &image, "ls", "/"]);
    for dir in ["bin", "etc", "proc", "dev"] {
        assert!(ls.lines().any(|l| l == dir), "ls / lacks {dir}: {ls}");
    }

    // 3. ps while running, ps -a after.
    let id = d.ok(&["run", "-d", "--name", "sleeper", &image, "sleep", "300"]);
    let id = id.trim();
    assert_eq!(id.len(), 64);
    let ps = d.ok(&["ps"]);
    assert!(ps.contains("sleeper") && ps.contains("Up "), "{ps}");
    assert!(ps.contains(&id[..12]));

    // 4. stop of a process that ignores SIGTERM: grace period, then SIGKILL.
    let stubborn = d.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        &image,
        "sh",
        "-c",
        "trap '' TERM; sleep 300",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    d.ok(&["stop", "-t", "1", "stubborn"]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "stop returned after {took:?}"
    );
    assert_eq!(d.ok(&["wait", stubborn.trim()]).trim(), "137");
    d.ok(&["kill", "sleeper"]);
    assert_eq!(d.ok(&["wait", "sleeper"]).trim(), "137");
    let ps_a = d.ok(&["ps", "-a"]);
    assert!(ps_a.contains("Exited (137)"), "{ps_a}");
    assert!(!d.ok(&["ps"]).contains("sleeper"));

    // 5. create then start -a; logs of the finished container (no rerun).
    let cid = d.ok(&[
        "create",
        "--name",
        "once",
        &image,
        "sh",
        "-c",
        "echo ran-once; echo to-stderr >&2",
    ]);
    assert!(d.ok(&["ps", "-a"]).contains("Created"));
    let out = d.run(&["start", "-a", cid.trim()]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(code(&out), 0, "stdout {stdout:?} stderr {stderr:?}");
    assert_eq!(stdout, "ran-once\n", "stderr {stderr:?}");
    assert_eq!(stderr, "to-stderr\n", "stdout {stdout:?}");
    let logs = d.run(&["logs", "once"]);
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "ran-once\n");
    assert_eq!(String::from_utf8_lossy(&logs.stderr), "to-stderr\n");
    // --tail counts entries of both streams: the last one is the stderr line.
    let logs_t = d.run(&["logs", "-t", "--tail", "1", "once"]);
    let (tail_out, tail_err) = (
        String::from_utf8_lossy(&logs_t.stdout),
        String::from_utf8_lossy(&logs_t.stderr),
    );
    assert_eq!(tail_out, "");
    assert!(
        tail_err.ends_with("Z to-stderr\n") && tail_err.contains('T'),
        "{tail_err}"
    );

    // 6. exit codes as Docker's.
    assert_eq!(
        code(&d.run(&["run", "--rm", &image, "sh", "-c", "exit 3"])),
        3
    );
    assert_eq!(
        code(&d.run(&["run", "--rm", &image, "/no/such/binary"])),
        127
    );
    assert_eq!(
        code(&d.run(&["run", "--rm", "--pull", "never", "127.0.0.1:1/nope:latest"])),
        125
    );
    let dup = d.run(&["create", "--name", "once", &image]);
    assert_eq!(code(&dup), 125);
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already in use"));

    // 7. exec -it and run -it through a pty, Ctrl-D ends the shell.
    let bg = d.ok(&["run", "-d", "--name", "shellhost", &image, "sleep", "300"]);
    let mut cmd = d.cli();
    cmd.args(["exec", "-it", bg.trim(), "sh"]);
    let mut s = PtySession::spawn(cmd).unwrap();
    s.send(b"echo $((6*7)) && ps | grep -c sleep\n").unwrap();
    s.expect("42", Duration::from_secs(20)).unwrap();
    s.send(b"\x04").unwrap();
    assert!(s.wait(Duration::from_secs(20)).unwrap().success());

    let mut cmd = d.cli();
    cmd.args(["run", "-it", "--rm", &image, "sh"]);
    let mut s = PtySession::spawn(cmd).unwrap();
    s.send(b"tty && echo pid=$$\n").unwrap();
    s.expect("pid=1", Duration::from_secs(20)).unwrap();
    s.send(b"\x04").unwrap();
    assert!(s.wait(Duration::from_secs(20)).unwrap().success());

    // 8. rm of a running container needs -f; system prune removes stopped ones.
    let rm = d.run(&["rm", "shellhost"]);
    assert_ne!(code(&rm), 0);
    assert!(String::from_utf8_lossy(&rm.stderr).contains("running"));
    d.ok(&["rm", "-f", "shellhost"]);
    let pruned = d.ok(&["system", "prune", "-f"]);
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    assert!(pruned.contains(stubborn.trim()), "{pruned}");
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
}
