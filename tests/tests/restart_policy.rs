//! Restart policies in the monitor: `always` restarts within a couple of seconds with
//! RestartCount counting, `stop` disables it, and a daemon restart starts `always`
//! containers again (even stopped by hand) but not `unless-stopped` ones stopped by hand.

use std::time::{Duration, Instant};

use skiff_tests::docker_cli::*;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon};

const IMAGE: &str = "127.0.0.1:5999/restart:1";

fn inspect(d: &Daemon, name: &str, fmt: &str) -> String {
    docker_ok(d, &["inspect", "-f", fmt, name])
        .trim()
        .to_string()
}

fn wait_for(d: &Daemon, name: &str, fmt: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = inspect(d, name, fmt);
        if want(&v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn restart_always_comes_back_and_stop_disables_it() {
    require!(
        "restart_always_comes_back_and_stop_disables_it",
        root_unavailable(),
        docker_unavailable()
    );
    let mut d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    // Runs 1.5 s then exits 3: restarted after 100 ms, then 200 ms...
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--pull",
            "never",
            "--name",
            "rs",
            "--restart",
            "always",
            IMAGE,
            "sh",
            "-c",
            "sleep 1.5; exit 3",
        ],
    );
    let started = Instant::now();
    let count = wait_for(&d, "rs", "{{.RestartCount}}", |c| c == "1");
    assert_eq!(count, "1");
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
    let st = wait_for(&d, "rs", "{{.State.Status}}", |s| s == "running");
    assert_eq!(st, "running");
    let count = wait_for(&d, "rs", "{{.RestartCount}}", |c| c == "2");
    assert_eq!(count, "2");
    assert_eq!(
        inspect(&d, "rs", "{{.HostConfig.RestartPolicy.Name}}"),
        "always"
    );

    // on-failure:1 restarts once, then stays exited.
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--pull",
            "never",
            "--name",
            "of",
            "--restart",
            "on-failure:1",
            IMAGE,
            "sh",
            "-c",
            "exit 2",
        ],
    );
    let c = wait_for(&d, "of", "{{.RestartCount}}", |c| c == "1");
    assert_eq!(c, "1");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        inspect(&d, "of", "{{.State.Status}} {{.RestartCount}}"),
        "exited 1"
    );

    // An unless-stopped container stopped by hand, and an always one stopped by hand.
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--pull",
            "never",
            "--name",
            "us",
            "--restart",
            "unless-stopped",
            IMAGE,
            "sleep",
            "300",
        ],
    );
    docker_ok(&d, &["stop", "-t", "1", "us"]);
    docker_ok(&d, &["stop", "-t", "1", "rs"]);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        inspect(&d, "rs", "{{.State.Status}}"),
        "exited",
        "stop must disable restarting"
    );

    d.restart().unwrap();
    assert_eq!(
        wait_for(&d, "rs", "{{.State.Status}}", |s| s == "running"),
        "running",
        "an always container starts with the daemon:\n{}",
        d.log_text()
    );
    // Started at boot, it is watched as if never stopped by hand: its next exit (it exits
    // after 1.5 s) restarts it again, as dockerd does.
    let before: u32 = inspect(&d, "rs", "{{.RestartCount}}").parse().unwrap();
    let want = (before + 1).to_string();
    assert_eq!(
        wait_for(&d, "rs", "{{.RestartCount}}", |c| c == want),
        want,
        "an always container started at boot keeps restarting:\n{}",
        d.log_text()
    );
    assert_eq!(inspect(&d, "us", "{{.State.Status}}"), "exited");
    docker_ok(&d, &["rm", "-f", "rs", "us", "of"]);
}

#[test]
fn a_crashing_container_backs_off() {
    require!(
        "a_crashing_container_backs_off",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--pull",
            "never",
            "--name",
            "crash",
            "--restart",
            "always",
            IMAGE,
            "false",
        ],
    );
    // 100 + 200 + 400 + 800 + 1600 ms: about 5 restarts in 3.2 s, not hundreds.
    std::thread::sleep(Duration::from_millis(3200));
    let n: u32 = inspect(&d, "crash", "{{.RestartCount}}").parse().unwrap();
    assert!(
        (3..=7).contains(&n),
        "RestartCount {n} after 3.2 s: no back-off?"
    );
    // Waiting out the back-off, it shows as restarting, in inspect and ps.
    let st = wait_for(&d, "crash", "{{.State.Restarting}}", |r| r == "true");
    assert_eq!(st, "true");
    // A stop during the back-off ends it at once: exited, not restarting, and it stays so.
    docker_ok(&d, &["stop", "crash"]);
    assert_eq!(
        inspect(&d, "crash", "{{.State.Status}} {{.State.Restarting}}"),
        "exited false"
    );
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(inspect(&d, "crash", "{{.State.Status}}"), "exited");
    docker_ok(&d, &["rm", "-f", "crash"]);
}
