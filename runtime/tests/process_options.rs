//! `--init`, `--cgroupns` with /sys/fs/cgroup, `--ulimit` and `--sysctl` on a real kernel.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{unavailable, Fixture};
use skiff_runtime::config::{CgroupNs, Ulimit};
use skiff_runtime::{RuntimeError, Signal};

const TINI: &str = "/usr/bin/tini-static";

fn tini_unavailable() -> Option<String> {
    unavailable().or_else(|| {
        (!Path::new(TINI).exists()).then(|| format!("{TINI} (Debian package tini) not installed"))
    })
}

#[test]
fn init_is_pid_1_reaps_zombies_and_forwards_signals() {
    skiff_tests::require!(
        "init_is_pid_1_reaps_zombies_and_forwards_signals",
        tini_unavailable()
    );
    // An orphan (the backgrounded sleep's parent exits at once) is reparented to PID 1,
    // which must reap it.
    let mut f = Fixture::new(
        "init",
        &[
            "sh",
            "-c",
            "tr '\\0' ' ' < /proc/1/cmdline; echo; sh -c 'sleep 0.2 &'; sleep 1; \
             cat /proc/[0-9]*/stat | cut -d' ' -f3 | grep -c Z",
        ],
    );
    f.cfg.init = Some(PathBuf::from(TINI));
    let st = f.run();
    let out = f.stdout();
    assert_eq!(
        out,
        "/sbin/docker-init -- sh -c tr '\\0' ' ' < /proc/1/cmdline; echo; sh -c 'sleep 0.2 &'; sleep 1; cat /proc/[0-9]*/stat | cut -d' ' -f3 | grep -c Z \n0\n"
    );
    // grep -c exits 1 when it counts nothing.
    assert_eq!(st.exit_code, Some(1), "{st:?}");

    // SIGTERM to the container reaches the child (a PID 1 `sleep` would ignore it).
    let mut g = Fixture::new("init-sig", &["sleep", "1000"]);
    g.cfg.init = Some(PathBuf::from(TINI));
    g.create().unwrap();
    skiff_runtime::start(&g.dir).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    skiff_runtime::kill(&g.dir, Signal::SIGTERM).unwrap();
    let st = g.wait(Duration::from_secs(5));
    assert_eq!(st.exit_code, Some(143), "{st:?}");
}

#[test]
fn private_cgroupns_shows_the_containers_own_limits_read_only() {
    skiff_tests::require!(
        "private_cgroupns_shows_the_containers_own_limits_read_only",
        unavailable()
    );
    let v2_only = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (file, expect) = if v2_only {
        ("/sys/fs/cgroup/memory.max", "104857600")
    } else {
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "104857600")
    };
    let script = format!(
        "cat {file}; grep -E '^[0-9]+:(memory)?:' /proc/self/cgroup | head -1 | cut -d: -f3; \
         (echo 1 > {file}) 2>/dev/null && echo writable || echo read-only"
    );
    let mut f = Fixture::new("cgns", &["sh", "-c", &script]);
    f.cfg.resources.memory_bytes = Some(100 << 20);
    let st = f.run();
    assert_eq!(st.exit_code, Some(0), "{st:?}");
    assert_eq!(f.stdout(), format!("{expect}\n/\nread-only\n"));

    // Hybrid layout: the container is in its own `unified` cgroup2 directory too, which is
    // the root of /sys/fs/cgroup/unified inside; the host's directory goes with the container.
    let hybrid = Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists();
    if hybrid {
        let h = Fixture::new(
            "cgns-unified",
            &[
                "sh",
                "-c",
                "grep '^0::' /proc/self/cgroup; head -1 /sys/fs/cgroup/unified/cgroup.procs",
            ],
        );
        h.create().unwrap();
        let host_dir = Path::new("/sys/fs/cgroup/unified/skiff-test").join(&h.cfg.id);
        let procs = std::fs::read_to_string(host_dir.join("cgroup.procs")).unwrap();
        let init_pid = skiff_runtime::state(&h.dir).unwrap().pid.unwrap();
        assert_eq!(procs.trim(), init_pid.to_string());
        skiff_runtime::start(&h.dir).unwrap();
        h.wait(Duration::from_secs(10));
        assert_eq!(h.stdout(), "0::/\n1\n");
        skiff_runtime::remove(&h.dir).unwrap();
        assert!(!host_dir.exists(), "{} left behind", host_dir.display());

        // `exec`'d processes start there as well.
        let e = Fixture::new("cgns-exec", &["sleep", "1000"]);
        e.create().unwrap();
        skiff_runtime::start(&e.dir).unwrap();
        let exec = skiff_runtime::ExecConfig {
            args: vec!["grep".into(), "^0::".into(), "/proc/self/cgroup".into()],
            ..Default::default()
        };
        let mut p = skiff_runtime::exec(Path::new(common::EXE), &e.dir, &exec).unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut p.stdout.take().unwrap(), &mut out).unwrap();
        assert_eq!(p.wait().unwrap(), 0);
        assert_eq!(out, "0::/\n");
    }

    // Host cgroupns: the host's view of the container's cgroup path.
    let mut g = Fixture::new(
        "cgns-host",
        &[
            "sh",
            "-c",
            "grep -E '^[0-9]+:(memory)?:' /proc/self/cgroup | head -1 | cut -d: -f3",
        ],
    );
    g.cfg.cgroupns = CgroupNs::Host;
    g.run();
    assert_eq!(g.stdout(), format!("/skiff-test/{}\n", g.cfg.id));
}

#[test]
fn ulimits_and_sysctls_are_applied_and_bad_ones_refused() {
    skiff_tests::require!(
        "ulimits_and_sysctls_are_applied_and_bad_ones_refused",
        unavailable()
    );
    let mut f = Fixture::new(
        "limits",
        &[
            "sh",
            "-c",
            "ulimit -n; ulimit -Hn; cat /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_forward",
        ],
    );
    f.cfg.ulimits = vec![Ulimit {
        name: "nofile".into(),
        soft: 1234,
        hard: 2048,
    }];
    f.cfg.sysctls = [
        ("kernel.shmmax".to_string(), "123456789".to_string()),
        ("net.ipv4.ip_forward".to_string(), "1".to_string()),
    ]
    .into();
    let st = f.run();
    assert_eq!(st.exit_code, Some(0), "{st:?}");
    assert_eq!(f.stdout(), "1234\n2048\n123456789\n1\n");

    let mut g = Fixture::new("badsysctl", &["true"]);
    g.cfg.sysctls = [("kernel.hostname".to_string(), "x".to_string())].into();
    assert!(
        matches!(g.create(), Err(RuntimeError::InvalidSysctl { key, .. }) if key == "kernel.hostname")
    );
    let mut h = Fixture::new("badulimit", &["true"]);
    h.cfg.ulimits = vec![Ulimit {
        name: "files".into(),
        soft: 1,
        hard: 1,
    }];
    assert!(matches!(h.create(), Err(RuntimeError::InvalidUlimit { name, .. }) if name == "files"));
    assert!(!g.dir.exists() && !h.dir.exists());
}
