//! Capabilities, no_new_privs, seccomp (Docker's default profile, unconfined, custom) and
//! `--privileged`, on a real kernel.

mod common;

use common::{unavailable, Fixture};
use skiff_runtime::config::Seccomp;
use skiff_runtime::RuntimeError;

/// Runs `script` with `tweak` applied to the config; (exit code, stdout).
fn run(name: &str, script: &str, tweak: impl FnOnce(&mut Fixture)) -> (i32, String) {
    let mut f = Fixture::new(name, &["sh", "-c", script]);
    tweak(&mut f);
    let st = f.run();
    (st.exit_code.unwrap_or(-1), f.stdout())
}

const PROBE: &str = "unshare -U true 2>/dev/null && echo unshare:ok || echo unshare:denied; \
    grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status";

#[test]
fn default_seccomp_blocks_unshare_and_keyctl_and_unconfined_or_privileged_lift_it() {
    skiff_tests::require!(
        "default_seccomp_blocks_unshare_and_keyctl_and_unconfined_or_privileged_lift_it",
        unavailable()
    );
    let (code, out) = run("seccomp-default", PROBE, |_| {});
    assert_eq!(code, 0);
    assert!(out.contains("unshare:denied\n"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    let (_, unconfined) = run("seccomp-off", PROBE, |f| {
        f.cfg.security.seccomp = Seccomp::Unconfined;
        f.cfg.security.cap_add = vec!["SYS_ADMIN".into()];
    });
    assert!(unconfined.contains("unshare:ok\n"), "{unconfined}");
    assert!(unconfined.contains("Seccomp:\t0"), "{unconfined}");
    let privileged_probe = format!(
        "{PROBE}; grep ' /sys sysfs ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; \
         grep -c -E ' /proc/(sys|kcore) ' /proc/mounts; \
         [ -c /dev/fuse ] && echo host-devices || echo no-host-devices"
    );
    let (_, privileged) = run("privileged", &privileged_probe, |f| {
        f.cfg.security.privileged = true
    });
    // /sys writable, nothing masked or made read-only under /proc, the host's devices.
    let tail: Vec<&str> = privileged.lines().rev().take(3).collect();
    let fuse = std::path::Path::new("/dev/fuse").exists();
    assert_eq!(tail[2], "rw", "{privileged}");
    assert_eq!(tail[1], "0", "{privileged}");
    assert_eq!(tail[0] == "host-devices", fuse, "{privileged}");
    assert!(privileged.contains("unshare:ok\n"), "{privileged}");
    assert!(privileged.contains("Seccomp:\t0"), "{privileged}");
    // Every capability we hold ourselves.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let ours = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    let eff = ours.replace("CapBnd:", "CapEff:");
    assert!(privileged.contains(&eff), "{privileged} vs {ours}");
}

#[test]
fn custom_seccomp_profiles_apply_and_bad_ones_are_refused() {
    skiff_tests::require!(
        "custom_seccomp_profiles_apply_and_bad_ones_are_refused",
        unavailable()
    );
    // A custom profile (Docker's format) that denies mkdir, which the default allows.
    let custom = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1,"args":null}]}"#;
    let script = "mkdir /tmp/x 2>/dev/null && echo mkdir:ok || echo mkdir:denied; \
        grep ^Seccomp: /proc/self/status";
    let (code, out) = run("seccomp-custom", script, |f| {
        f.cfg.security.seccomp = Seccomp::Profile(custom.into())
    });
    assert_eq!(code, 0);
    assert_eq!(out, "mkdir:denied\nSeccomp:\t2\n");
    // A profile that does not parse is refused before anything runs.
    let mut f = Fixture::new("seccomp-bad", &["true"]);
    f.cfg.security.seccomp = Seccomp::Profile("{\"defaultAction\": 42".into());
    assert!(matches!(
        f.create(),
        Err(RuntimeError::InvalidSeccompProfile { .. })
    ));
    assert!(!f.dir.exists());
}

#[test]
fn capabilities_follow_cap_add_and_cap_drop_and_unknown_ones_are_refused() {
    skiff_tests::require!(
        "capabilities_follow_cap_add_and_cap_drop_and_unknown_ones_are_refused",
        unavailable()
    );
    let script = "grep -E '^Cap(Eff|Bnd):' /proc/self/status; \
        chown 1:1 /tmp 2>/dev/null && echo chown:ok || echo chown:denied; \
        ip link add dummy0 type dummy 2>/dev/null && echo netadmin:ok || echo netadmin:denied";
    let (code, out) = run("caps", script, |f| {
        f.cfg.security.cap_add = vec!["net_admin".into()];
        f.cfg.security.cap_drop = vec!["CAP_CHOWN".into()];
    });
    assert_eq!(code, 0);
    // Docker's default 0xa80425fb, minus CHOWN (bit 0), plus NET_ADMIN (bit 12).
    assert!(out.contains("CapEff:\t00000000a80435fa"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80435fa"), "{out}");
    assert!(out.contains("chown:denied"), "{out}");
    let mut f = Fixture::new("badcap", &["true"]);
    f.cfg.security.cap_add = vec!["CAP_TELEPORT".into()];
    match f.create() {
        Err(RuntimeError::UnknownCapability { name }) => assert_eq!(name, "CAP_TELEPORT"),
        other => panic!("{other:?}"),
    }
    assert!(!f.dir.exists());
}

#[test]
fn no_new_privileges_only_when_asked() {
    skiff_tests::require!("no_new_privileges_only_when_asked", unavailable());
    // Docker sets no_new_privs only with `--security-opt no-new-privileges`, so setuid
    // programs work; checked for a non-root process.
    let script = "su -s /bin/sh user -c 'grep NoNewPrivs /proc/self/status'";
    let (code, out) = run("nonnp", script, |_| {});
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "NoNewPrivs:\t0\n");
    let (_, out) = run("nnp", "grep NoNewPrivs /proc/self/status", |f| {
        f.cfg.security.no_new_privileges = true
    });
    assert_eq!(out, "NoNewPrivs:\t1\n");
}

#[test]
fn devices_are_created_and_allowed_only_when_asked() {
    skiff_tests::require!(
        "devices_are_created_and_allowed_only_when_asked",
        unavailable()
    );
    if !std::path::Path::new("/dev/fuse").exists() {
        skiff_tests::skip::skip(
            "devices_are_created_and_allowed_only_when_asked",
            "no /dev/fuse",
        );
        return;
    }
    let v1_devices = std::path::Path::new("/sys/fs/cgroup/devices").exists();
    let script = "stat -c '%F %t:%T' /dev/myfuse; \
        (exec 3<>/dev/myfuse) 2>/dev/null && echo open:ok || echo open:denied; \
        mknod /tmp/f c 10 229 2>/dev/null && echo mknod:ok || echo mknod:denied";
    let (code, out) = run("device", script, |f| {
        f.cfg.security.devices = vec![skiff_runtime::config::Device {
            host_path: "/dev/fuse".into(),
            container_path: "/dev/myfuse".into(),
            permissions: "rw".into(),
        }];
    });
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "character special file a:e5", "{out}");
    assert_eq!(lines[1], "open:ok");
    // The rule is `rw` without `m`: a second node of it cannot be made (v1 device cgroup).
    if v1_devices {
        assert_eq!(lines[2], "mknod:denied", "{out}");
    }
    // Without --device there is no such node, and none can be made (v1 device cgroup).
    let (_, out) = run(
        "nodevice",
        "ls /dev/fuse 2>/dev/null || echo absent; \
         mknod /tmp/f c 10 229 2>/dev/null && echo mknod:ok || echo mknod:denied",
        |_| {},
    );
    let expect = if v1_devices {
        "absent\nmknod:denied\n"
    } else {
        "absent\nmknod:ok\n"
    };
    assert_eq!(out, expect);
}

#[test]
fn exec_runs_under_the_containers_capabilities_seccomp_and_ulimits() {
    skiff_tests::require!(
        "exec_runs_under_the_containers_capabilities_seccomp_and_ulimits",
        unavailable()
    );
    use std::io::Read;
    let mut f = Fixture::new("execconf", &["sleep", "1000"]);
    f.cfg.security.cap_drop = vec!["ALL".into()];
    f.cfg.security.cap_add = vec!["KILL".into()];
    f.cfg.security.no_new_privileges = true;
    f.cfg.ulimits = vec![skiff_runtime::config::Ulimit {
        name: "nofile".into(),
        soft: 321,
        hard: 321,
    }];
    f.create().unwrap();
    skiff_runtime::start(&f.dir).unwrap();
    let exec = skiff_runtime::ExecConfig {
        args: vec![
            "sh".into(),
            "-c".into(),
            "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; ulimit -n; \
             unshare -U true 2>/dev/null && echo unshare:ok || echo unshare:denied"
                .into(),
        ],
        ..Default::default()
    };
    let mut p = skiff_runtime::exec(std::path::Path::new(common::EXE), &f.dir, &exec).unwrap();
    let mut out = String::new();
    p.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(p.wait().unwrap(), 0, "{out}");
    // CAP_KILL only (bit 5).
    assert_eq!(
        out,
        "CapEff:\t0000000000000020\nNoNewPrivs:\t1\nSeccomp:\t2\n321\nunshare:denied\n"
    );
    // A container created before skiff wrote seccomp.bpf (an upgrade) still gets its filter.
    std::fs::remove_file(f.dir.join("seccomp.bpf")).unwrap();
    let again = skiff_runtime::ExecConfig {
        args: vec![
            "grep".into(),
            "^Seccomp:".into(),
            "/proc/self/status".into(),
        ],
        ..Default::default()
    };
    let mut p = skiff_runtime::exec(std::path::Path::new(common::EXE), &f.dir, &again).unwrap();
    let mut out = String::new();
    p.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(p.wait().unwrap(), 0, "{out}");
    assert_eq!(out, "Seccomp:\t2\n");
    skiff_runtime::kill(&f.dir, skiff_runtime::Signal::SIGKILL).unwrap();
    f.wait(std::time::Duration::from_secs(5));
}

#[test]
fn a_device_that_is_no_device_is_refused() {
    skiff_tests::require!("a_device_that_is_no_device_is_refused", unavailable());
    let mut f = Fixture::new("notdevice", &["true"]);
    f.cfg.security.devices = vec![skiff_runtime::config::Device {
        host_path: "/etc/hostname".into(),
        container_path: String::new(),
        permissions: String::new(),
    }];
    match f.create() {
        Err(RuntimeError::InvalidDevice { path, .. }) => {
            assert_eq!(path, std::path::Path::new("/etc/hostname"))
        }
        other => panic!("{other:?}"),
    }
    assert!(!f.dir.exists());
}
