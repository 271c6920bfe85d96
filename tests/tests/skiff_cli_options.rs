//! skiff's own CLI: the container options (-v, --mount, --tmpfs, --read-only, --restart,
//! --init, --add-host ...) and `skiff volume`, with refusals exiting 125.

use skiff_tests::docker_cli::import_busybox;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon};

const IMAGE: &str = "127.0.0.1:5999/cliopts:1";

fn refused(d: &Daemon, args: &[&str], needle: &str) {
    let out = d.run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "skiff {args:?}: {err}");
    assert!(
        err.contains(needle),
        "skiff {args:?}: {needle:?} not in {err}"
    );
}

#[test]
fn skiff_cli_container_options_and_volumes() {
    require!(
        "skiff_cli_container_options_and_volumes",
        root_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &["VOLUME /data"]);
    let run = |extra: &[&str], cmd: &str| {
        let mut a = vec!["run", "--rm", "--pull", "never"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&[IMAGE, "sh", "-c", cmd]);
        d.ok(&a)
    };

    assert_eq!(
        d.ok(&["volume", "create", "--label", "k=v", "cli-vol"])
            .trim(),
        "cli-vol"
    );
    assert_eq!(
        run(
            &["-v", "cli-vol:/data"],
            "cat /data/seed.txt; echo 1 > /data/n"
        ),
        "seeded\n"
    );
    assert_eq!(
        run(
            &["--mount", "type=volume,source=cli-vol,target=/m,readonly"],
            "cat /m/n"
        ),
        "1\n"
    );
    let insp = d.ok(&["volume", "inspect", "cli-vol"]);
    assert!(
        insp.contains("\"k\": \"v\"") && insp.contains("volumes/cli-vol/_data"),
        "{insp}"
    );
    assert!(d.ok(&["volume", "ls"]).contains("local     cli-vol"));
    assert_eq!(
        run(
            &["--read-only", "--tmpfs", "/scratch:size=64k"],
            "touch /scratch/a && echo ok; touch /nope 2>&1 | grep -c Read-only"
        ),
        "ok\n1\n"
    );
    let hosts = run(
        &[
            "-h",
            "api.example.org",
            "--add-host",
            "cache:10.0.0.9",
            "--init",
        ],
        "cat /etc/hosts; cat /proc/1/comm",
    );
    assert!(hosts.contains("10.0.0.9\tcache\n"), "{hosts}");
    assert!(hosts.contains("\tapi.example.org\tapi\n"), "{hosts}");
    assert!(hosts.ends_with("docker-init\n"), "{hosts}");
    assert_eq!(
        run(
            &["--ulimit", "nofile=512:1024", "--shm-size", "8m"],
            "ulimit -n; df -k /dev/shm | tail -1 | awk '{print $2}'"
        ),
        "512\n8192\n"
    );

    refused(
        &d,
        &["run", "--rm", "--restart", "always", IMAGE, "true"],
        "--restart and --rm",
    );
    refused(
        &d,
        &["run", "--restart", "sometimes", IMAGE, "true"],
        "invalid restart policy",
    );
    refused(
        &d,
        &[
            "run",
            "--mount",
            "type=bind,source=/nonexistent/skiff-x,target=/x",
            IMAGE,
            "true",
        ],
        "bind source path does not exist",
    );
    refused(&d, &["run", "--cap-add", "NOPE", IMAGE, "true"], "NOPE");
    refused(
        &d,
        &["create", "-v", "bad*name:/x", IMAGE, "true"],
        "invalid characters",
    );
    refused(
        &d,
        &["create", "--tmpfs", "/", IMAGE, "true"],
        "root filesystem",
    );

    // In use: refused; rm -v takes the anonymous /data volume along.
    let id = d.ok(&[
        "create",
        "--pull",
        "never",
        "-v",
        "cli-vol:/v",
        IMAGE,
        "true",
    ]);
    let out = d.run(&["volume", "rm", "cli-vol"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("volume is in use"));
    let before = d.ok(&["volume", "ls", "-q"]).lines().count();
    d.ok(&["rm", "-v", id.trim()]);
    assert_eq!(d.ok(&["volume", "ls", "-q"]).lines().count(), before - 1);
    d.ok(&["volume", "prune", "-f"]);
    assert_eq!(d.ok(&["volume", "ls", "-q"]).trim(), "cli-vol");
    d.ok(&["volume", "rm", "cli-vol"]);
    assert_eq!(d.ok(&["volume", "ls", "-q"]).trim(), "");
}

/// `skiff history IMG | head`: a reader that goes away ends the CLI quietly with 141 (the
/// SIGPIPE status docker's CLI gets), never a panic.
#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    require!("a_closed_stdout_ends_the_cli_quietly", root_unavailable());
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let mut child = d
        .cli()
        .args(["history", "--no-trunc", IMAGE])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
