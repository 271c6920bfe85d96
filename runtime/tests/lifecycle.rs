//! Lifecycle on a real kernel: create/start, exit codes, kill, stop, state, cleanup.

mod common;

use std::time::{Duration, Instant};

use common::{alive, mounts_containing, unavailable, Fixture};
use skiff_runtime::{Signal, Status};

#[test]
fn exit_codes_follow_docker() {
    skiff_tests::require!("exit_codes_follow_docker", unavailable());
    let ok = Fixture::new("exit0", &["true"]);
    let st = ok.run();
    assert_eq!(
        (st.status, st.exit_code, st.oom_killed),
        (Status::Exited, Some(0), false)
    );
    assert!(st.started_at.is_some() && st.finished_at >= st.started_at);

    let three = Fixture::new("exit3", &["sh", "-c", "exit 3"]);
    assert_eq!(three.run().exit_code, Some(3));
}

#[test]
fn missing_command_is_127_and_unexecutable_is_126() {
    skiff_tests::require!(
        "missing_command_is_127_and_unexecutable_is_126",
        unavailable()
    );
    for (name, cmd, code) in [
        ("nf", "/bin/nosuch", 127),
        ("nfpath", "nosuch", 127),
        ("noexec", "/bin/notexec", 126),
        ("dir", "/etc", 126),
    ] {
        let f = Fixture::new(name, &[cmd]);
        f.create().expect("create");
        let err = skiff_runtime::start(&f.dir).expect_err("start must fail");
        assert_eq!(err.exit_code(), code, "{cmd}: {err}");
        assert!(err.to_string().contains("exec"), "{err}");
        let st = f.wait(Duration::from_secs(10));
        assert_eq!(st.exit_code, Some(code), "{cmd}");
        assert!(st.error.is_some());
    }
}

#[test]
fn created_container_waits_for_start() {
    skiff_tests::require!("created_container_waits_for_start", unavailable());
    let f = Fixture::new("created", &["sh", "-c", "echo started"]);
    let h = f.create().unwrap();
    assert!(alive(h.pid));
    std::thread::sleep(Duration::from_millis(200));
    let st = skiff_runtime::state(&f.dir).unwrap();
    assert_eq!(st.status, Status::Created);
    assert_eq!(f.stdout(), "");
    skiff_runtime::start(&f.dir).unwrap();
    let st = f.wait(Duration::from_secs(10));
    assert_eq!(st.exit_code, Some(0));
    assert_eq!(f.stdout(), "started\n");
    assert!(
        skiff_runtime::start(&f.dir).is_err(),
        "exited container cannot start"
    );
}

#[test]
fn kill_delivers_signals_and_sigkill_is_137() {
    skiff_tests::require!("kill_delivers_signals_and_sigkill_is_137", unavailable());
    let f = Fixture::new(
        "kill",
        &[
            "sh",
            "-c",
            "trap 'echo got-usr1' USR1; echo ready; while true; do sleep 0.05; done",
        ],
    );
    f.create().unwrap();
    skiff_runtime::start(&f.dir).unwrap();
    wait_for_output(&f, "ready");
    skiff_runtime::kill(&f.dir, Signal::SIGUSR1).unwrap();
    wait_for_output(&f, "got-usr1");
    assert_eq!(
        skiff_runtime::state(&f.dir).unwrap().status,
        Status::Running
    );
    skiff_runtime::kill(&f.dir, Signal::SIGKILL).unwrap();
    let st = f.wait(Duration::from_secs(10));
    assert_eq!(st.exit_code, Some(128 + 9));
    assert!(!st.oom_killed);
    assert!(
        skiff_runtime::kill(&f.dir, Signal::SIGTERM).is_err(),
        "exited container cannot be killed"
    );
}

#[test]
fn stop_kills_a_process_ignoring_sigterm_after_the_grace_period() {
    skiff_tests::require!(
        "stop_kills_a_process_ignoring_sigterm_after_the_grace_period",
        unavailable()
    );
    let f = Fixture::new(
        "stop",
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while true; do sleep 0.05; done",
        ],
    );
    f.create().unwrap();
    skiff_runtime::start(&f.dir).unwrap();
    wait_for_output(&f, "ready");
    let t = Instant::now();
    let st = skiff_runtime::stop(&f.dir, Duration::from_secs(1), Signal::SIGTERM).unwrap();
    let took = t.elapsed();
    assert_eq!(st.exit_code, Some(137));
    assert!(
        took >= Duration::from_millis(900),
        "SIGKILL came before the grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "stop took {took:?}");

    let g = Fixture::new(
        "stopterm",
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done",
        ],
    );
    g.create().unwrap();
    skiff_runtime::start(&g.dir).unwrap();
    wait_for_output(&g, "ready");
    let t = Instant::now();
    let st = skiff_runtime::stop(&g.dir, Duration::from_secs(10), Signal::SIGTERM).unwrap();
    assert_eq!(st.exit_code, Some(0));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn remove_releases_processes_cgroups_and_mounts_in_every_state() {
    skiff_tests::require!(
        "remove_releases_processes_cgroups_and_mounts_in_every_state",
        unavailable()
    );
    // Created (never started), running, exited and failed-to-start containers.
    let created = Fixture::new("rm-created", &["true"]);
    let running = Fixture::new("rm-running", &["sleep", "1000"]);
    let exited = Fixture::new("rm-exited", &["true"]);
    let failed = Fixture::new("rm-failed", &["/nonexistent"]);
    let mut pids = vec![created.create().unwrap().pid, running.create().unwrap().pid];
    skiff_runtime::start(&running.dir).unwrap();
    exited.run();
    pids.push(failed.create().unwrap().pid);
    assert!(skiff_runtime::start(&failed.dir).is_err());
    let shims: Vec<i32> = [&created, &running]
        .iter()
        .map(|f| shim_pid(&f.dir))
        .collect();
    for f in [&created, &running, &exited, &failed] {
        let cgroups = f.cgroup_dirs();
        skiff_runtime::remove(&f.dir).unwrap();
        assert!(!f.dir.exists());
        for d in cgroups {
            assert!(!d.exists(), "cgroup {} left behind", d.display());
        }
        assert!(
            mounts_containing(&f.dir).is_empty(),
            "mounts left: {:?}",
            mounts_containing(&f.dir)
        );
    }
    for p in pids.into_iter().chain(shims) {
        assert!(!alive(p), "process {p} left behind");
    }
}

fn shim_pid(dir: &std::path::Path) -> i32 {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    v["shim"]["pid"].as_i64().unwrap() as i32
}

fn wait_for_output(f: &Fixture, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f.stdout().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in output: {:?}",
            f.stdout()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shim_is_detached_and_its_death_does_not_prevent_cleanup() {
    skiff_tests::require!(
        "shim_is_detached_and_its_death_does_not_prevent_cleanup",
        unavailable()
    );
    let f = Fixture::new("shimkill", &["sleep", "1000"]);
    let h = f.create().unwrap();
    skiff_runtime::start(&f.dir).unwrap();
    let shim = shim_pid(&f.dir);
    let stat = std::fs::read_to_string(format!("/proc/{shim}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let (ppid, sid): (i32, i32) = (fields[1].parse().unwrap(), fields[3].parse().unwrap());
    assert_ne!(
        ppid,
        std::process::id() as i32,
        "shim must not be the caller's child"
    );
    assert_eq!(sid, shim, "shim leads its own session");

    // The shim dies (e.g. OOM on the host): the container keeps running, state still works.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(shim) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(alive(h.pid));
    assert_eq!(
        skiff_runtime::state(&f.dir).unwrap().status,
        Status::Running
    );
    let cgroups = f.cgroup_dirs();
    skiff_runtime::remove(&f.dir).unwrap();
    assert!(!alive(h.pid));
    for d in cgroups {
        assert!(!d.exists(), "{} left", d.display());
    }
}

#[test]
fn an_exited_container_can_be_created_again_keeping_its_files_and_log() {
    skiff_tests::require!(
        "an_exited_container_can_be_created_again_keeping_its_files_and_log",
        unavailable()
    );
    let f = Fixture::new(
        "restart",
        &["sh", "-c", "echo run >> /count; wc -l < /count"],
    );
    assert_eq!(f.run().exit_code, Some(0));
    // While it is set up again, its state stays readable (for `inspect` during restarts).
    let dir = f.dir.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                skiff_runtime::state(&dir).expect("state readable during re-create");
                reads += 1;
            }
            reads
        })
    };
    assert_eq!(f.run().exit_code, Some(0));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(watching.join().unwrap() > 0);
    assert_eq!(f.stdout(), "1\n2\n");
}

#[test]
fn shims_forked_by_the_launcher_run_containers_and_a_dead_launcher_is_replaced() {
    skiff_tests::require!("shims_forked_by_the_launcher", unavailable());
    let launcher = skiff_runtime::ShimLauncher::new(std::path::Path::new(common::EXE));
    assert_eq!(launcher.pid(), None, "started before first use");
    let run = |name: &str, code: &str| {
        let f = Fixture::new(
            name,
            &["sh", "-c", &format!("echo from-{name}; exit {code}")],
        );
        skiff_runtime::create_with(&launcher, &f.cfg).expect("create through the launcher");
        skiff_runtime::start(&f.dir).expect("start");
        let st = f.wait(Duration::from_secs(30));
        assert_eq!(st.exit_code, Some(code.parse().unwrap()));
        assert_eq!(f.stdout(), format!("from-{name}\n"));
        f
    };
    let _a = run("launched-a", "3");
    let first = launcher.pid().expect("launcher running");
    // The same launcher serves the next container.
    let _b = run("launched-b", "0");
    assert_eq!(launcher.pid(), Some(first));
    // The shims are the launcher's own children; once they exit none is left as a zombie.
    let children = format!("/proc/{first}/task/{first}/children");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = std::fs::read_to_string(&children).unwrap();
    while !left.trim().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        left = std::fs::read_to_string(&children).unwrap();
    }
    assert_eq!(left.trim(), "", "children left under the launcher");
    // Killed: the next create starts another one.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(first as i32) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _c = run("launched-c", "5");
    let second = launcher.pid().expect("launcher running again");
    assert_ne!(second, first);
    // Dropping the handle ends the launcher (its socket closes): nothing is left behind.
    drop(launcher);
    assert!(!alive(second as i32), "launcher outlived its handle");
}
