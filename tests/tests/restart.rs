//! A daemon killed with SIGKILL comes back with every container's true state and leaks
//! nothing once the containers are removed.

use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, Daemon, Registry};

fn mounts_under(root: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(root.to_str().unwrap()))
        .map(|l| l.to_string())
        .collect()
}

#[test]
fn daemon_kill9_restart_keeps_true_state() {
    require!(
        "daemon_kill9_restart_keeps_true_state",
        root_unavailable(),
        registry_unavailable()
    );
    let reg = Registry::start().unwrap();
    let mut d = Daemon::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let image = format!("{}/restart:latest", reg.host());
    d.ok(&["image", "import", rootfs.path().to_str().unwrap(), &image]);

    let done = d.ok(&[
        "run",
        "-d",
        "--name",
        "done",
        &image,
        "sh",
        "-c",
        "echo bye; exit 4",
    ]);
    let running = d.ok(&["run", "-d", "--name", "running", &image, "sleep", "300"]);
    assert_eq!(d.ok(&["wait", "done"]).trim(), "4");

    d.stop(true);
    d.restart().unwrap();

    let ps = d.ok(&["ps", "-a", "--no-trunc"]);
    assert!(
        ps.contains(done.trim()) && ps.contains("Exited (4)"),
        "{ps}"
    );
    assert!(ps.contains(running.trim()), "{ps}");
    assert_eq!(d.ok(&["logs", "done"]), "bye\n");
    // Kill the survivor through the new daemon; its exit is observed.
    d.ok(&["kill", "running"]);
    assert_eq!(d.ok(&["wait", "running"]).trim(), "137");
    d.ok(&["rm", "done", "running"]);
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
    d.stop(false);
    let left = mounts_under(d.dir());
    assert!(left.is_empty(), "mounts left behind: {left:#?}");
    let cg = std::path::Path::new("/sys/fs/cgroup/memory/skiff");
    if cg.exists() {
        for id in [done.trim(), running.trim()] {
            assert!(!cg.join(id).exists(), "cgroup of {id} left behind");
        }
    }
}
