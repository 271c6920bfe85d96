//! cgroup limits on a real kernel: memory (OOM kill reported), pids, cpus.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{alive, unavailable, Fixture};
use skiff_runtime::{Signal, Status};

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    skiff_tests::require!("memory_hog_is_oom_killed_and_reported", unavailable());
    // dd allocates and fills a 256 MiB buffer in a 64 MiB container.
    let mut f = Fixture::new(
        "oom",
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
    );
    f.cfg.resources.memory_bytes = Some(64 << 20);
    let st = f.run();
    assert_eq!(st.status, Status::Exited);
    assert_eq!(st.exit_code, Some(137), "{st:?}");
    assert!(st.oom_killed, "{st:?}");

    // The same within its limit is fine and not reported as OOM.
    let mut g = Fixture::new(
        "nooom",
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=8M", "count=1"],
    );
    g.cfg.resources.memory_bytes = Some(64 << 20);
    let st = g.run();
    assert_eq!((st.exit_code, st.oom_killed), (Some(0), false));
}

/// The container's cgroup directory in the hierarchy holding `file`.
fn cgroup_file(f: &Fixture, file: &str) -> PathBuf {
    f.cgroup_dirs()
        .into_iter()
        .map(|d| d.join(file))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no cgroup file {file} for {}", f.cfg.id))
}

#[test]
fn fork_bomb_is_contained_by_the_pids_limit_and_cleaned_up() {
    skiff_tests::require!(
        "fork_bomb_is_contained_by_the_pids_limit_and_cleaned_up",
        unavailable()
    );
    // The bomb goes off in a subshell: the container's own shell forks once, before it, and
    // then execs `sleep`, so a fork refused at the limit never ends the container (its
    // cgroup, read below, would go with it).
    let mut f = Fixture::new(
        "forkbomb",
        &["sh", "-c", "(b() { b | b & }; b); exec sleep 1000"],
    );
    f.cfg.resources.pids_limit = Some(32);
    f.create().unwrap();
    skiff_runtime::start(&f.dir).unwrap();
    let current = cgroup_file(&f, "pids.current");
    let events = cgroup_file(&f, "pids.events");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ev = std::fs::read_to_string(&events).unwrap();
        if ev.trim() != "max 0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fork bomb never hit the limit: {ev}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let n: i64 = std::fs::read_to_string(&current)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(n <= 32, "pids.current {n} over the limit");
    let cgroups = f.cgroup_dirs();
    let pids: Vec<i32> = std::fs::read_to_string(cgroup_file(&f, "cgroup.procs"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(!pids.is_empty());
    skiff_runtime::remove(&f.dir).unwrap();
    for d in cgroups {
        assert!(!d.exists(), "{} left", d.display());
    }
    for p in pids {
        assert!(!alive(p), "bomb process {p} survived");
    }
}

#[test]
fn cpus_become_a_cfs_quota() {
    skiff_tests::require!("cpus_become_a_cfs_quota", unavailable());
    let mut f = Fixture::new("cpus", &["sleep", "1000"]);
    f.cfg.resources.nano_cpus = Some(500_000_000);
    f.cfg.resources.memory_bytes = Some(128 << 20);
    f.create().unwrap();
    skiff_runtime::start(&f.dir).unwrap();
    let v2 = f.cgroup_dirs().iter().any(|d| d.join("cpu.max").exists());
    if v2 {
        assert_eq!(
            std::fs::read_to_string(cgroup_file(&f, "cpu.max"))
                .unwrap()
                .trim(),
            "50000 100000"
        );
    } else {
        assert_eq!(
            std::fs::read_to_string(cgroup_file(&f, "cpu.cfs_quota_us"))
                .unwrap()
                .trim(),
            "50000"
        );
        assert_eq!(
            std::fs::read_to_string(cgroup_file(&f, "cpu.cfs_period_us"))
                .unwrap()
                .trim(),
            "100000"
        );
        assert_eq!(
            std::fs::read_to_string(cgroup_file(&f, "memory.limit_in_bytes"))
                .unwrap()
                .trim(),
            (128u64 << 20).to_string()
        );
    }
    // The container's processes are in it.
    let procs = std::fs::read_to_string(cgroup_file(&f, "cgroup.procs")).unwrap();
    let pid = skiff_runtime::state(&f.dir).unwrap().pid.unwrap();
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
    let st = skiff_runtime::stop(&f.dir, Duration::from_secs(1), Signal::SIGTERM).unwrap();
    assert_eq!(st.exit_code, Some(137));
}
