//! Lifecycle details real clients depend on: `run --rm` of a missing command exits 127 and
//! leaves nothing behind, published ports are released on stop and bound again on start,
//! `logs --until`, `version` without a daemon.

use std::time::{Duration, Instant};

use skiff_tests::docker_cli::*;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon};

const IMAGE: &str = "127.0.0.1:5999/life:1";

/// Interfaces enslaved to the test daemon's bridge, and its pinned namespaces.
fn attachments(d: &Daemon) -> (usize, usize) {
    let bridge = d.bridge().expect("the test daemon has its own bridge");
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .unwrap();
    let veths = String::from_utf8_lossy(&out.stdout).lines().count();
    let netns = std::fs::read_dir(d.exec_root.join("netns"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    (veths, netns)
}

#[test]
fn run_rm_of_a_missing_command_exits_127_and_leaves_nothing() {
    require!(
        "run_rm_of_a_missing_command_exits_127_and_leaves_nothing",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    for _ in 0..3 {
        let t = Instant::now();
        let out = docker(&d)
            .args(["run", "--rm", "--pull", "never", IMAGE, "/no/such"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(127), "{err}");
        // As dockerd (runc): a path is stat'ed, a bare name is looked for in $PATH.
        assert!(
            err.contains("exec: \"/no/such\": stat /no/such: no such file or directory"),
            "{err}"
        );
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        // Not even a spare attachment is kept from a container that never ran.
        assert_eq!(attachments(&d), (0, 0));
    }
    // A run that did run leaves a spare attachment (a bounded cache), a privileged one
    // (which could have reconfigured its namespace) does not.
    docker_ok(&d, &["run", "--rm", "--pull", "never", IMAGE, "true"]);
    let baseline = attachments(&d);
    assert_eq!(baseline, (1, 1));
    docker_ok(
        &d,
        &[
            "run",
            "--rm",
            "--pull",
            "never",
            "--privileged",
            IMAGE,
            "true",
        ],
    );
    assert_eq!(
        attachments(&d),
        (0, 0),
        "the spare went to the privileged run"
    );
    docker_ok(&d, &["run", "--rm", "--pull", "never", IMAGE, "true"]);
    assert_eq!(attachments(&d), baseline);
    let out = docker(&d)
        .args(["run", "--rm", "--pull", "never", IMAGE, "nosuchcmd"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "{err}");
    assert!(
        err.contains("exec: \"nosuchcmd\": executable file not found in $PATH"),
        "{err}"
    );
    assert_eq!(docker_ok(&d, &["ps", "-aq"]).trim(), "");
    // It took the spare and, never having run, gave nothing back.
    assert_eq!(attachments(&d), (0, 0));

    // Without --rm the failed container stays: `Created` (it never ran, as dockerd shows
    // it), with the exit code 127 and the start's error; starting it again fails alike.
    let out = docker_run(
        &d,
        &[
            "run", "--pull", "never", "--name", "kept", IMAGE, "/no/such",
        ],
    );
    assert_eq!(out.status.code(), Some(127));
    docker_ok(
        &d,
        &[
            "create", "--pull", "never", "--name", "made", IMAGE, "/no/such",
        ],
    );
    let out = docker_run(&d, &["start", "made"]);
    assert_eq!(out.status.code(), Some(1));
    let first = String::from_utf8_lossy(&out.stderr).into_owned();
    let message = first
        .lines()
        .next()
        .unwrap()
        .strip_prefix("Error response from daemon: ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    assert!(
        message.starts_with(
            "failed to create task for container: exec: \"/no/such\": stat /no/such: no such file or directory"
        ),
        "{message}"
    );
    for name in ["kept", "made"] {
        assert_eq!(
            docker_ok(
                &d,
                &[
                    "inspect",
                    "-f",
                    "{{.State.Status}} {{.State.Running}} {{.State.ExitCode}} {{.State.StartedAt}} {{.State.FinishedAt}}",
                    name
                ]
            )
            .trim(),
            "created false 127 0001-01-01T00:00:00Z 0001-01-01T00:00:00Z"
        );
        assert_eq!(
            docker_ok(&d, &["inspect", "-f", "{{.State.Error}}", name]).trim(),
            message
        );
        assert_eq!(
            docker_ok(
                &d,
                &[
                    "ps",
                    "-a",
                    "--filter",
                    &format!("name={name}"),
                    "--format",
                    "{{.Status}} {{.State}}"
                ]
            )
            .trim(),
            "Created created"
        );
    }
    assert_eq!(
        docker_ok(
            &d,
            &[
                "ps",
                "-a",
                "--filter",
                "status=created",
                "--format",
                "{{.Names}}"
            ]
        ),
        "made\nkept\n"
    );
    assert_eq!(
        docker_ok(&d, &["ps", "-a", "--filter", "status=exited", "-q"]),
        ""
    );
    let out = docker_run(&d, &["start", "made"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), first);
    assert_eq!(
        docker_ok(
            &d,
            &[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.ExitCode}}",
                "made"
            ]
        )
        .trim(),
        "created 127"
    );
    docker_ok(&d, &["rm", "kept", "made"]);
}

#[test]
fn published_ports_are_freed_on_stop_and_bound_again_on_start() {
    require!(
        "published_ports_are_freed_on_stop_and_bound_again_on_start",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    // A free port, chosen by the kernel.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let publish = format!("127.0.0.1:{port}:80");
    docker_ok(
        &d,
        &[
            "run", "-d", "--pull", "never", "--name", "web", "-p", &publish, IMAGE, "sleep", "300",
        ],
    );
    let bind = || std::net::TcpListener::bind(("127.0.0.1", port));
    assert!(bind().is_err(), "the running container holds its port");
    docker_ok(&d, &["stop", "-t", "0", "web"]);
    drop(bind().expect("a stopped container frees its port"));
    // Nor does it show an address, as dockerd's (its endpoint goes with its run).
    let addr = "{{.NetworkSettings.IPAddress}}|{{range .NetworkSettings.Networks}}{{.IPAddress}}{{.EndpointID}}{{end}}|{{json .NetworkSettings.Ports}}";
    assert_eq!(
        docker_ok(&d, &["inspect", "-f", addr, "web"]).trim(),
        "||{}"
    );
    docker_ok(&d, &["start", "web"]);
    assert!(bind().is_err(), "start binds the port again");
    let shown = docker_ok(&d, &["inspect", "-f", addr, "web"]);
    assert!(shown.starts_with("172."), "{shown}");
    assert_eq!(
        docker_ok(&d, &["port", "web", "80"]).trim(),
        format!("127.0.0.1:{port}")
    );
    // Taken meanwhile: start is refused, naming the port.
    docker_ok(&d, &["stop", "-t", "0", "web"]);
    let holder = bind().unwrap();
    let out = docker_run(&d, &["start", "web"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&port.to_string()), "{err}");
    drop(holder);
    docker_ok(&d, &["start", "web"]);
    // An exit nobody asked for frees the port too.
    docker_ok(&d, &["kill", "web"]);
    docker_ok(&d, &["wait", "web"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while bind().is_err() {
        assert!(
            Instant::now() < deadline,
            "the port was not freed after the exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    docker_ok(&d, &["rm", "-f", "web"]);
}

#[test]
fn logs_until_bounds_the_output() {
    require!(
        "logs_until_bounds_the_output",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    docker_ok(
        &d,
        &[
            "run",
            "--pull",
            "never",
            "--name",
            "talk",
            IMAGE,
            "sh",
            "-c",
            "echo early; sleep 1.5; echo late",
        ],
    );
    let ts = docker_ok(&d, &["logs", "-t", "talk"]);
    let late = ts
        .lines()
        .find(|l| l.ends_with(" late"))
        .unwrap_or_else(|| panic!("{ts}"))
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let late = chrono::DateTime::parse_from_rfc3339(&late).unwrap();
    let before_late = (late - chrono::Duration::milliseconds(500)).to_rfc3339();
    assert_eq!(
        docker_ok(&d, &["logs", "--until", &before_late, "talk"]),
        "early\n"
    );
    assert_eq!(
        docker_ok(&d, &["logs", "--since", &before_late, "talk"]),
        "late\n"
    );
    assert_eq!(d.ok(&["logs", "--until", &before_late, "talk"]), "early\n");
    docker_ok(&d, &["rm", "talk"]);
}

#[test]
fn version_without_a_daemon_fails_and_daemon_listens_where_h_says() {
    require!(
        "version_without_a_daemon_fails_and_daemon_listens_where_h_says",
        root_unavailable()
    );
    let bin = skiff_tests::binary::skiff_bin();
    let dir = tempfile::tempdir().unwrap();
    let nowhere = format!("unix://{}", dir.path().join("none.sock").display());
    let out = std::process::Command::new(&bin)
        .args(["-H", &nowhere, "version"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Client:"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Cannot connect"));
    // As the docker CLI: 125 for `run`, 1 for the rest.
    for (args, code) in [(&["ps"][..], 1), (&["run", "img"][..], 125)] {
        let out = std::process::Command::new(&bin)
            .args(["-H", &nowhere])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("Cannot connect"));
    }

    // Two sockets from -H; SKIFF_HOST (a client setting) is not where the daemon listens.
    let cfg = dir.path().join("daemon.json");
    std::fs::write(&cfg, "{}").unwrap();
    let a = dir.path().join("a.sock");
    let b = dir.path().join("b.sock");
    let mut child = std::process::Command::new(&bin)
        .env("SKIFF_HOST", &nowhere)
        .arg("--exec-root")
        .arg(dir.path().join("run"))
        .args(["daemon", "--data-root"])
        .arg(dir.path().join("data"))
        .arg("--config-file")
        .arg(&cfg)
        .args(["--bridge", "skh15", "--bip", "172.29.250.0/24"])
        .arg("-H")
        .arg(format!("unix://{}", a.display()))
        .arg("-H")
        .arg(&b)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(a.exists() && b.exists()) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not listen on both sockets"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for s in [&a, &b] {
        let out = std::process::Command::new(&bin)
            .arg("-H")
            .arg(s)
            .arg("version")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("Server: skiff"));
    }
    assert!(!dir.path().join("none.sock").exists());
    assert!(!dir.path().join("run/skiff.sock").exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    assert!(!a.exists() && !b.exists(), "sockets are removed at exit");

    // daemon.json's `hosts`, when no -H is given.
    let c = dir.path().join("c.sock");
    std::fs::write(&cfg, format!(r#"{{"hosts": ["unix://{}"]}}"#, c.display())).unwrap();
    let mut child = std::process::Command::new(&bin)
        .arg("--exec-root")
        .arg(dir.path().join("run"))
        .args(["daemon", "--data-root"])
        .arg(dir.path().join("data"))
        .arg("--config-file")
        .arg(&cfg)
        .args(["--bridge", "skh15", "--bip", "172.29.250.0/24"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c.exists() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not listen on the file's host"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.path().join("run/skiff.sock").exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
}

/// An auto-removed container's overlay is `volatile` (`fsync=volatile` in /proc/mounts) (its unmount syncs nothing: the layer
/// is thrown away), a kept container's is not; `restart` keeps a `--rm` container.
#[test]
fn rm_containers_get_a_volatile_overlay() {
    require!(
        "rm_containers_get_a_volatile_overlay",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let root_opts = |args: &[&str]| {
        let mut a = vec!["run", "--pull", "never", "--network", "none"];
        a.extend_from_slice(args);
        a.extend_from_slice(&[IMAGE, "sh", "-c", "grep '^overlay / ' /proc/mounts"]);
        docker_ok(&d, &a)
    };
    let rm = root_opts(&["--rm"]);
    assert!(rm.contains("volatile"), "{rm}");
    let kept = root_opts(&["--name", "kept"]);
    assert!(!kept.contains("volatile"), "{kept}");
    // `restart` of a running --rm container keeps it (dockerd's), on a volatile layer again.
    docker_ok(
        &d,
        &[
            "run", "-d", "--rm", "--pull", "never", "--name", "again", IMAGE, "sleep", "300",
        ],
    );
    docker_ok(&d, &["restart", "-t", "0", "again"]);
    let again = docker_ok(
        &d,
        &["exec", "again", "grep", "^overlay / ", "/proc/mounts"],
    );
    assert!(again.contains("volatile"), "{again}");
    // Its next stop removes it as usual.
    docker_ok(&d, &["stop", "-t", "0", "again"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while docker_run(&d, &["inspect", "again"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "--rm container not removed after stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    docker_ok(&d, &["rm", "-f", "kept"]);

    // skiff's own CLI: an attached `run --rm` is the daemon's AutoRemove too (volatile), ends
    // with the container's exit code, and leaves nothing behind.
    let out = d.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--name",
        "attached",
        IMAGE,
        "sh",
        "-c",
        "grep '^overlay / ' /proc/mounts; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("volatile"),
        "{out:?}"
    );
    let gone = d.run(&["inspect", "attached"]);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("No such"),
        "{gone:?}"
    );

    // The mount points the init needs come from the shared init layer, not the container's
    // writable layer: a container that wrote nothing has an empty upper, and its /etc
    // files are the daemon's even where the image has a symlink (or a directory) there.
    let rootfs = tempfile::tempdir().unwrap();
    skiff_tests::fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let etc = rootfs.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let _ = std::fs::remove_file(etc.join("resolv.conf"));
    std::os::unix::fs::symlink("/run/elsewhere/resolv.conf", etc.join("resolv.conf")).unwrap();
    let _ = std::fs::remove_file(etc.join("hostname"));
    std::fs::create_dir_all(etc.join("hostname")).unwrap();
    let odd = "skiff-test/odd-etc:1";
    d.ok(&["image", "import", rootfs.path().to_str().unwrap(), odd]);
    let out = d.ok(&[
        "run",
        "--name",
        "quiet",
        "--hostname",
        "quietbox",
        "--network",
        "none",
        "--dns",
        "192.0.2.53",
        odd,
        "sh",
        "-c",
        "cat /etc/hostname /etc/resolv.conf",
    ]);
    assert!(
        out.contains("quietbox") && out.contains("nameserver 192.0.2.53"),
        "{out}"
    );
    let id = d.ok(&["inspect", "-f", "{{.Id}}", "quiet"]);
    let upper = d.data_root.join("containers").join(id.trim()).join("upper");
    let left: Vec<_> = std::fs::read_dir(&upper)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "the writable layer has {left:?}");
    assert_eq!(d.ok(&["diff", "quiet"]), "");
    d.ok(&["rm", "quiet"]);

    // A `wait` that comes after the auto-removal (a client overtaken by the whole run) gets
    // the exit code; an ID that never existed is still a 404.
    let id = d.ok(&[
        "run",
        "-d",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "exit 9",
    ]);
    let id = id.trim();
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.run(&["inspect", id]).status.success() {
        assert!(Instant::now() < deadline, "--rm container not removed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.ok(&["wait", id]).trim(), "9");
    let never = d.run(&["wait", &"0".repeat(64)]);
    assert_eq!(never.status.code(), Some(1), "{never:?}");
    assert!(
        String::from_utf8_lossy(&never.stderr).contains("No such container"),
        "{never:?}"
    );
}

#[test]
fn a_missing_network_is_refused_without_pulling_the_image() {
    require!(
        "a_missing_network_is_refused_without_pulling_the_image",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    for cmd in ["run", "create"] {
        let mut args = vec![cmd];
        if cmd == "run" {
            args.push("--rm");
        }
        args.extend(["--network", "nosuchnet", IMAGE, "true"]);
        let out = docker_run(&d, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        // The docker CLI's own codes for a daemon's refusal: 125 for run, 1 for create.
        let code = if cmd == "run" { 125 } else { 1 };
        assert_eq!(out.status.code(), Some(code), "{cmd}: {err}");
        assert!(err.contains("network nosuchnet not found"), "{cmd}: {err}");
        // A 404 from create would have sent the docker CLI off to pull the image.
        assert!(
            !err.contains("Unable to find image") && !err.contains("Pulling"),
            "{cmd}: {err}"
        );
    }
    assert_eq!(docker_ok(&d, &["ps", "-aq"]).trim(), "");
}
