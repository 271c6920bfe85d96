//! The docker CLI 20.10 (a second client version, from Debian's docker.io): it checks the
//! kernel features `/info` reports (warning for each missing), and drives filters, inspect
//! templates, cp, stats and the `run --rm` failure path through its own code.

use skiff_tests::docker_cli::*;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon};

const IMAGE: &str = "127.0.0.1:5999/cli2010:1";

fn ok(d: &Daemon, args: &[&str]) -> String {
    let out = docker_20_10(d).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker 20.10 {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log_text()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn docker_cli_20_10_against_skiff() {
    require!(
        "docker_cli_20_10_against_skiff",
        root_unavailable(),
        docker_20_10_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let info = docker_20_10(&d).arg("info").output().unwrap();
    let err = String::from_utf8_lossy(&info.stderr);
    assert!(info.status.success(), "{err}");
    // Only the host's own settings may warn (the kernel features are all reported).
    let host_on = |f: &str| std::fs::read_to_string(f).is_ok_and(|v| v.trim() == "1");
    // A warning about a host setting that is really off is the truth, not a gap.
    let host_off = [
        (
            "bridge-nf-call-iptables",
            "/proc/sys/net/bridge/bridge-nf-call-iptables",
        ),
        (
            "bridge-nf-call-ip6tables",
            "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
        ),
        ("IPv4 forwarding", "/proc/sys/net/ipv4/ip_forward"),
    ];
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("WARNING"))
        .filter(|l| {
            !host_off
                .iter()
                .any(|(what, file)| l.contains(what) && !host_on(file))
        })
        .collect();
    assert!(warnings.is_empty(), "docker 20.10 info warns:\n{err}");

    ok(
        &d,
        &[
            "run", "-d", "--name", "web", "--label", "app=shop", IMAGE, "sleep", "300",
        ],
    );
    ok(&d, &["create", "--name", "idle", IMAGE, "true"]);
    assert_eq!(
        ok(
            &d,
            &[
                "ps",
                "-a",
                "--filter",
                "label=app=shop",
                "--format",
                "{{.Names}}"
            ]
        ),
        "web\n"
    );
    assert_eq!(
        ok(
            &d,
            &["ps", "--filter", "status=created", "--format", "{{.Names}}"]
        ),
        "idle\n"
    );
    let ip = ok(
        &d,
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            "web",
        ],
    );
    assert!(ip.trim().parse::<std::net::Ipv4Addr>().is_ok(), "{ip}");

    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "x\n").unwrap();
    ok(
        &d,
        &["cp", host.path().join("f").to_str().unwrap(), "web:/tmp/f"],
    );
    ok(
        &d,
        &[
            "cp",
            "web:/tmp/f",
            host.path().join("back").to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(host.path().join("back")).unwrap(),
        "x\n"
    );
    let stats = ok(
        &d,
        &[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.PIDs}}",
            "web",
        ],
    );
    assert_eq!(stats.trim(), "web 1");

    let out = docker_20_10(&d)
        .args(["run", "--rm", IMAGE, "/no/such"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(127),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&d, &["rm", "-f", "web", "idle"]);
    assert_eq!(ok(&d, &["ps", "-aq"]), "");
}
