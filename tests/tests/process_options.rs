//! Process, hosts and security options through the stock docker CLI: `--init` reaps,
//! /etc/hosts as Docker writes it, the memory limit in the cgroup files, Docker's seccomp
//! profile and `--privileged`.

use skiff_tests::docker_cli::*;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon};

const IMAGE: &str = "127.0.0.1:5999/procopts:1";

fn run(d: &Daemon, extra: &[&str], cmd: &[&str]) -> std::process::Output {
    let mut a = vec!["run", "--rm", "--pull", "never"];
    a.extend_from_slice(extra);
    a.push(IMAGE);
    a.extend_from_slice(cmd);
    docker_run(d, &a)
}

fn stdout(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn init_hosts_memory_and_seccomp() {
    require!(
        "init_hosts_memory_and_seccomp",
        root_unavailable(),
        docker_unavailable()
    );
    if !std::path::Path::new("/usr/bin/tini-static").exists() {
        skiff_tests::skip::skip(
            "init_hosts_memory_and_seccomp",
            "tini-static is not installed",
        );
        return;
    }
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);

    // --init: docker-init is PID 1 and reaps the orphan (no zombie left).
    let ps = stdout(&run(
        &d,
        &["--init"],
        &["sh", "-c", "(sleep 0.2 &); sleep 0.8; ps -o pid,stat,comm"],
    ));
    let pid1 = ps.lines().nth(1).unwrap_or_default().to_string();
    assert!(
        pid1.split_whitespace().last() == Some("docker-init"),
        "{ps}"
    );
    assert!(
        !ps.lines().any(|l| l
            .split_whitespace()
            .nth(1)
            .is_some_and(|s| s.starts_with('Z'))),
        "zombie left:\n{ps}"
    );

    // /etc/hosts for -h with a domain and --add-host.
    let hosts = stdout(&run(
        &d,
        &["-h", "web.example.com", "--add-host", "db.lan:10.1.2.3"],
        &["cat", "/etc/hosts"],
    ));
    assert!(hosts.contains("10.1.2.3\tdb.lan\n"), "{hosts}");
    let own = hosts.lines().last().unwrap();
    assert!(own.ends_with("\tweb.example.com\tweb"), "{hosts}");
    let dns = stdout(&run(
        &d,
        &["--dns", "10.9.9.9", "--dns-search", "corp.example"],
        &["cat", "/etc/resolv.conf"],
    ));
    assert!(
        dns.contains("nameserver 10.9.9.9\n") && dns.contains("search corp.example\n"),
        "{dns}"
    );

    // -m 100m reads 104857600 from the container's own cgroup files.
    let mem = stdout(&run(
        &d,
        &["-m", "100m"],
        &["sh", "-c", "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"],
    ));
    assert_eq!(mem.trim(), "104857600");

    // Docker's default seccomp profile blocks unshare; --privileged lifts it.
    let blocked = run(&d, &[], &["busybox", "unshare", "-U", "true"]);
    assert!(!blocked.status.success());
    assert!(String::from_utf8_lossy(&blocked.stderr).contains("Operation not permitted"));
    stdout(&run(
        &d,
        &["--privileged"],
        &["busybox", "unshare", "-U", "true"],
    ));
    stdout(&run(
        &d,
        &[
            "--security-opt",
            "seccomp=unconfined",
            "--cap-add",
            "SYS_ADMIN",
        ],
        &["busybox", "unshare", "-U", "true"],
    ));
}
