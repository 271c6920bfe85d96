//! Volumes and mounts through the stock docker CLI: named volumes outlive containers and
//! are seeded from the image, anonymous ones go with `rm -v`, binds read and write the host,
//! `:ro` and `--read-only` refuse writes, tmpfs is a tmpfs.

use skiff_tests::docker_cli::*;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon};

const IMAGE: &str = "127.0.0.1:5999/volumes:1";

fn run(d: &Daemon, extra: &[&str], cmd: &str) -> String {
    let mut a = vec!["run", "--rm", "--pull", "never"];
    a.extend_from_slice(extra);
    a.extend_from_slice(&[IMAGE, "sh", "-c", cmd]);
    docker_ok(d, &a)
}

#[test]
fn named_volume_survives_and_is_seeded_from_the_image() {
    require!(
        "named_volume_survives_and_is_seeded_from_the_image",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &["VOLUME /data"]);
    assert_eq!(
        run(
            &d,
            &["-v", "vol1:/data"],
            "cat /data/seed.txt; echo kept > /data/x"
        ),
        "seeded\n"
    );
    assert_eq!(run(&d, &["-v", "vol1:/data"], "cat /data/x"), "kept\n");
    assert!(d.data_root.join("volumes/vol1/_data/x").exists());
    // nocopy: a new volume stays empty.
    assert_eq!(
        run(&d, &["-v", "vol2:/data:nocopy"], "ls -A /data | wc -l").trim(),
        "0"
    );
    let ls = docker_ok(&d, &["volume", "ls", "-q"]);
    assert_eq!(ls.split_whitespace().collect::<Vec<_>>(), ["vol1", "vol2"]);

    // The image's VOLUME gets an anonymous volume, listed in Mounts, removed by rm -v.
    let id = docker_ok(&d, &["create", "--pull", "never", IMAGE, "true"]);
    let id = id.trim();
    let mounts = docker_ok(
        &d,
        &[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Type}} {{.Destination}} {{.Name}}{{end}}",
            id,
        ],
    );
    let anon = mounts.split_whitespace().nth(2).unwrap().to_string();
    assert!(mounts.starts_with("volume /data "), "{mounts}");
    assert!(docker_ok(&d, &["volume", "ls", "-q"]).contains(&anon));
    // In use: refused.
    let out = docker_run(&d, &["volume", "rm", &anon]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("volume is in use"));
    docker_ok(&d, &["rm", "-v", id]);
    assert!(!docker_ok(&d, &["volume", "ls", "-q"]).contains(&anon));

    // Labels, inspect, prune: only anonymous ones without -a.
    docker_ok(&d, &["volume", "create", "--label", "team=a", "labeled"]);
    let insp = docker_ok(
        &d,
        &[
            "volume",
            "inspect",
            "-f",
            "{{.Labels.team}} {{.Mountpoint}}",
            "labeled",
        ],
    );
    assert_eq!(
        insp.trim(),
        format!("a {}", d.data_root.join("volumes/labeled/_data").display())
    );
    docker_ok(
        &d,
        &["create", "--pull", "never", "--name", "anon", IMAGE, "true"],
    );
    docker_ok(&d, &["rm", "anon"]); // without -v: its anonymous volume stays
                                    // A prune filter skiff does not apply is refused, and nothing is pruned.
    let out = docker_run(&d, &["volume", "prune", "-f", "--filter", "label=team=a"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid filter 'label'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(docker_ok(&d, &["volume", "ls", "-q"]).lines().count(), 4);
    docker_ok(&d, &["volume", "prune", "-f"]);
    let left = docker_ok(&d, &["volume", "ls", "-q"]);
    assert_eq!(
        left.split_whitespace().collect::<Vec<_>>(),
        ["labeled", "vol1", "vol2"]
    );
    docker_ok(&d, &["volume", "prune", "-a", "-f"]);
    assert_eq!(docker_ok(&d, &["volume", "ls", "-q"]).trim(), "");
}

#[test]
fn binds_ro_tmpfs_and_read_only_root() {
    require!(
        "binds_ro_tmpfs_and_read_only_root",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from-host\n").unwrap();
    let h = host.path().display().to_string();
    assert_eq!(
        run(
            &d,
            &["-v", &format!("{h}:/h")],
            "cat /h/in; echo from-ctr > /h/out"
        ),
        "from-host\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "from-ctr\n"
    );
    // -v creates a missing host directory.
    let missing = host.path().join("made/by/v");
    run(&d, &["-v", &format!("{}:/m", missing.display())], "true");
    assert!(missing.is_dir());
    // --mount type=bind works on an existing source.
    assert_eq!(
        run(
            &d,
            &[
                "--mount",
                &format!("type=bind,source={h},target=/b,readonly")
            ],
            "cat /b/in"
        ),
        "from-host\n"
    );
    let out = docker_run(
        &d,
        &[
            "run",
            "--rm",
            "--pull",
            "never",
            "-v",
            &format!("{h}:/h:ro"),
            IMAGE,
            "touch",
            "/h/no",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"));
    assert!(!host.path().join("no").exists());
    let out = docker_run(
        &d,
        &[
            "run",
            "--rm",
            "--pull",
            "never",
            "--read-only",
            IMAGE,
            "touch",
            "/x",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"));
    let t = run(
        &d,
        &["--tmpfs", "/t:size=1m", "--read-only"],
        "grep ' /t ' /proc/mounts; touch /t/ok && echo wrote",
    );
    assert!(t.starts_with("tmpfs /t tmpfs "), "{t}");
    assert!(t.contains("size=1024k") && t.ends_with("wrote\n"), "{t}");
    // --volumes-from shares the other container's volumes.
    docker_ok(
        &d,
        &[
            "create",
            "--pull",
            "never",
            "--name",
            "src",
            "-v",
            "shared:/s",
            IMAGE,
            "true",
        ],
    );
    run(&d, &["-v", "shared:/s"], "echo via-volume > /s/f");
    assert_eq!(
        run(&d, &["--volumes-from", "src:ro"], "cat /s/f"),
        "via-volume\n"
    );
}

#[test]
fn python_sdk_volumes_and_mounts() {
    require!(
        "python_sdk_volumes_and_mounts",
        root_unavailable(),
        sdk_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from-host\n").unwrap();
    let (ok, out) = python_sdk(
        &d,
        &format!(
            r#"
import docker
c = docker.from_env()
v = c.volumes.create(name="sdkvol", labels={{"via": "sdk"}})
print(v.name, v.attrs["Labels"]["via"], v.attrs["Mountpoint"].endswith("/volumes/sdkvol/_data"))
out = c.containers.run("{IMAGE}", ["sh", "-c", "echo x > /v/f; cat /h/in; grep -c ' /t tmpfs' /proc/mounts"],
    volumes={{"sdkvol": {{"bind": "/v", "mode": "rw"}}, "{host}": {{"bind": "/h", "mode": "ro"}}}},
    tmpfs={{"/t": "size=1m"}}, read_only=True, remove=True)
print(out.decode(), end="")
print([x.name for x in c.volumes.list()])
try:
    c.containers.run("{IMAGE}", "true", volumes={{"bad$": {{"bind": "/x"}}}}, remove=True)
except docker.errors.APIError as e:
    print("refused", e.status_code)
c.volumes.get("sdkvol").remove()
print([x.name for x in c.volumes.list()])
"#,
            host = host.path().display()
        ),
    );
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "sdkvol sdk True", "{out}");
    assert_eq!(lines[1..3], ["from-host", "1"], "{out}");
    assert!(out.contains("['sdkvol']\nrefused 400\n[]\n"), "{out}");
    assert!(d
        .data_root
        .join("volumes")
        .read_dir()
        .unwrap()
        .next()
        .is_none());
}

/// Whether `path` is a mount point, and its filesystem type (from /proc/self/mountinfo).
fn mount_type(path: &str) -> Option<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f[4] == path).then(|| f[sep + 1].to_string())
    })
}

#[test]
fn local_driver_options_mount_tmpfs_and_binds() {
    require!(
        "local_driver_options_mount_tmpfs_and_binds",
        root_unavailable(),
        docker_unavailable()
    );
    let mut d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    docker_ok(
        &d,
        &[
            "volume",
            "create",
            "-o",
            "type=tmpfs",
            "-o",
            "device=tmpfs",
            "-o",
            "o=size=1m,uid=1234",
            "tv",
        ],
    );
    let tv = docker_ok(&d, &["volume", "inspect", "-f", "{{.Mountpoint}}", "tv"]);
    let tv = tv.trim().to_string();
    assert_eq!(mount_type(&tv).as_deref(), Some("tmpfs"));
    assert_eq!(
        docker_ok(
            &d,
            &[
                "volume",
                "inspect",
                "-f",
                "{{.Options.type}} {{.Options.o}}",
                "tv"
            ]
        ),
        "tmpfs size=1m,uid=1234\n"
    );
    assert_eq!(
        run(
            &d,
            &["-v", "tv:/vol"],
            "echo hi > /vol/f; busybox stat -c %u /vol"
        ),
        "1234\n"
    );
    assert_eq!(run(&d, &["-v", "tv:/vol"], "cat /vol/f"), "hi\n");

    // A bind of a host directory (compose's `driver_opts: {type: none, o: bind, device: DIR}`).
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("kept"), "host file\n").unwrap();
    let device = format!("device={}", host.path().display());
    docker_ok(
        &d,
        &[
            "volume",
            "create",
            "-o",
            "type=none",
            "-o",
            "o=bind",
            "-o",
            &device,
            "bv",
        ],
    );
    assert_eq!(run(&d, &["-v", "bv:/vol"], "cat /vol/kept"), "host file\n");

    // Refused as dockerd refuses them, and nothing is created.
    docker_fails(
        &d,
        &["volume", "create", "-o", "colour=red", "badv"],
        1,
        "invalid option key: \"colour\"",
    );
    docker_fails(
        &d,
        &[
            "volume",
            "create",
            "-o",
            "type=nosuchfs",
            "-o",
            "device=x",
            "badm",
        ],
        1,
        "failed to mount local volume",
    );
    assert_eq!(
        docker_run(&d, &["volume", "inspect", "badm"]).status.code(),
        Some(1)
    );

    // Gone after a reboot: the daemon mounts it again at start (empty, as a tmpfs is).
    let umount = std::process::Command::new("umount")
        .arg(&tv)
        .status()
        .unwrap();
    assert!(umount.success());
    d.restart().unwrap();
    assert_eq!(mount_type(&tv).as_deref(), Some("tmpfs"));

    // Removal unmounts first: the bind's host directory keeps its file.
    docker_ok(&d, &["volume", "rm", "tv", "bv"]);
    assert_eq!(mount_type(&tv), None);
    assert_eq!(
        std::fs::read_to_string(host.path().join("kept")).unwrap(),
        "host file\n"
    );
}
