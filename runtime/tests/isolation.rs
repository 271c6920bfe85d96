//! Isolation on a real kernel: namespaces, capabilities, masked/read-only paths, devices,
//! users.

mod common;

use common::{unavailable, Fixture};
use skiff_runtime::Status;

/// Runs a shell script in a fresh container and returns (exit code, stdout, stderr).
fn sh(name: &str, script: &str) -> (i32, String, String) {
    let f = Fixture::new(name, &["sh", "-c", script]);
    let st = f.run();
    assert_eq!(st.status, Status::Exited);
    (
        st.exit_code.unwrap(),
        f.stdout(),
        f.output(skiff_runtime::LogStream::Stderr),
    )
}

#[test]
fn pid_1_sees_only_its_own_processes() {
    skiff_tests::require!("pid_1_sees_only_its_own_processes", unavailable());
    let (code, out, err) = sh(
        "pidns",
        "echo pid=$$; sleep 30 & ls /proc | grep -c '^[0-9]'",
    );
    assert_eq!(code, 0, "{err}");
    // sh (1), sleep, ls (and grep) only: the host's hundreds of processes are invisible.
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("pid=1"));
    let n: usize = lines.next().unwrap().trim().parse().unwrap();
    assert!(n <= 4, "container sees {n} processes");
}

#[test]
fn hostname_is_its_own_and_host_hostname_cannot_be_set() {
    skiff_tests::require!(
        "hostname_is_its_own_and_host_hostname_cannot_be_set",
        unavailable()
    );
    let host_before = nix::unistd::gethostname().unwrap();
    let mut f = Fixture::new(
        "uts",
        &[
            "sh",
            "-c",
            "hostname; cat /etc/hostname; hostname evil 2>&1; echo rc=$?",
        ],
    );
    f.cfg.hostname = Some("boxy".into());
    let st = f.run();
    assert_eq!(st.exit_code, Some(0));
    let out = f.stdout();
    assert!(out.starts_with("boxy\nboxy\n"), "{out}");
    assert!(
        out.contains("rc=1"),
        "sethostname must fail without CAP_SYS_ADMIN: {out}"
    );
    assert_eq!(nix::unistd::gethostname().unwrap(), host_before);

    let g = Fixture::new("0123456789abcdef", &["hostname"]);
    g.run();
    assert_eq!(
        g.stdout().trim(),
        &g.cfg.id[..12],
        "default hostname is the short id"
    );
}

#[test]
fn privileged_operations_are_denied() {
    skiff_tests::require!("privileged_operations_are_denied", unavailable());
    let script = r#"
        mkdir -p /mnt/x
        mount -t tmpfs none /mnt/x 2>/dev/null && echo MOUNTED
        echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo PROCSYS
        echo h > /proc/sysrq-trigger 2>/dev/null && echo SYSRQ
        insmod /nonexistent.ko 2>/dev/null; modprobe dummy 2>/dev/null && echo MODULE
        grep -E '^Cap(Eff|Bnd)' /proc/self/status
        grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status
        echo done
    "#;
    let (code, out, _) = sh("priv", script);
    assert_eq!(code, 0);
    for bad in ["MOUNTED", "PROCSYS", "SYSRQ", "MODULE"] {
        assert!(!out.contains(bad), "{bad} succeeded: {out}");
    }
    // Docker's default set: 0x00000000a80425fb.
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    // As on Docker: no no_new_privs unless asked (setuid programs work), but Docker's
    // default seccomp filter.
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.ends_with("done\n"));
}

#[test]
fn sensitive_paths_are_masked_and_read_only() {
    skiff_tests::require!("sensitive_paths_are_masked_and_read_only", unavailable());
    // Only paths this kernel has can be checked (e.g. no /proc/kcore without CONFIG_PROC_KCORE).
    let masked: Vec<&str> = [
        "/proc/keys",
        "/proc/timer_list",
        "/proc/kcore",
        "/proc/acpi",
        "/sys/firmware",
        "/proc/sched_debug",
    ]
    .into_iter()
    .filter(|p| std::path::Path::new(p).exists())
    .collect();
    let ro: Vec<&str> = [
        "/proc/sys",
        "/proc/irq",
        "/proc/bus",
        "/proc/fs",
        "/proc/sysrq-trigger",
    ]
    .into_iter()
    .filter(|p| std::path::Path::new(p).exists())
    .collect();
    assert!(
        masked.len() >= 2 && ro.len() >= 2,
        "too little to check on this kernel"
    );
    let mut script = String::new();
    for p in &masked {
        script += &format!("if [ -d {p} ]; then echo {p}=$(ls -A {p} | wc -l); else echo {p}=$(cat {p} | wc -c); fi\n");
    }
    for p in &ro {
        script += &format!("grep -q ' {p} ro,' /proc/self/mountinfo && echo {p}=ro\n");
    }
    script += "echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo PROCSYS\n";
    script += "echo h > /proc/sysrq-trigger 2>/dev/null && echo SYSRQ\n";
    script += "touch /sys/x 2>/dev/null && echo SYSWRITE\n";
    script += "grep -q ' /sys ro,' /proc/self/mountinfo && echo /sys=ro\n";
    let (_, out, _) = sh("masked", &script);
    for p in &masked {
        assert!(out.contains(&format!("{p}=0\n")), "{p} not masked: {out}");
    }
    for p in ro.iter().chain(&["/sys"]) {
        assert!(
            out.contains(&format!("{p}=ro\n")),
            "{p} not read-only: {out}"
        );
    }
    for bad in ["PROCSYS", "SYSRQ", "SYSWRITE"] {
        assert!(!out.contains(bad), "{bad}: {out}");
    }
}

#[test]
fn dev_has_only_the_minimal_devices() {
    skiff_tests::require!("dev_has_only_the_minimal_devices", unavailable());
    // The block device holding the host's root filesystem: CAP_MKNOD lets root in the
    // container create a node for it, the devices cgroup must still deny reading it.
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").unwrap().dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let script = format!(
        r#"
        ls /dev | sort | tr '\n' ' '; echo
        echo x > /dev/null && head -c 4 /dev/zero | wc -c && head -c 4 /dev/urandom | wc -c
        mknod /tmp/disk b {major} {minor} && echo mknod-ok
        head -c 1 /tmp/disk > /dev/null && echo READ_HOST_DISK
        ls /dev/pts
        df /dev/shm > /dev/null && echo shm-ok
    "#
    );
    let (_, out, err) = sh("dev", &script);
    let listing = out.lines().next().unwrap();
    assert_eq!(
        listing.split_whitespace().collect::<Vec<_>>(),
        vec![
            "console", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr",
            "stdin", "stdout", "tty", "urandom", "zero"
        ],
        "{err}"
    );
    assert!(out.contains("4\n4\n"), "{out}");
    // The devices cgroup denies creating the node (or else reading it).
    assert!(!out.contains("READ_HOST_DISK"), "host disk readable: {out}");
    assert!(out.contains("ptmx"), "own devpts instance: {out}");
    assert!(out.contains("shm-ok"));
}

#[test]
fn network_none_has_only_loopback_up() {
    skiff_tests::require!("network_none_has_only_loopback_up", unavailable());
    let (_, out, _) = sh("netns", "ls /sys/class/net | tr '\\n' ' '; cat /sys/class/net/lo/operstate; ping -c1 -W1 127.0.0.1 >/dev/null 2>&1 && echo ping-ok");
    assert!(out.starts_with("lo \n") || out.starts_with("lo "), "{out}");
    assert!(out.contains("ping-ok"), "{out}");
}

#[test]
fn user_env_and_cwd_come_from_config_and_image() {
    skiff_tests::require!("user_env_and_cwd_come_from_config_and_image", unavailable());
    let mut f = Fixture::new(
        "user",
        &[
            "sh",
            "-c",
            "id; echo home=$HOME path=$PATH foo=$FOO; pwd; grep CapEff /proc/self/status",
        ],
    );
    f.cfg.user = "user".into();
    f.cfg.env = vec!["FOO=bar".into()];
    f.cfg.cwd = "/work/dir".into();
    let st = f.run();
    assert_eq!(
        st.exit_code,
        Some(0),
        "{}",
        f.output(skiff_runtime::LogStream::Stderr)
    );
    let out = f.stdout();
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with("uid=1000(user) gid=1000(user) groups="),
        "{out}"
    );
    assert!(
        first.contains("10(wheel)") && first.contains("1000(user)"),
        "supplementary groups: {out}"
    );
    assert!(out.contains("home=/home/user path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin foo=bar\n"), "{out}");
    assert!(out.contains("/work/dir\n"));
    assert!(
        out.contains("CapEff:\t0000000000000000"),
        "non-root user has no effective caps: {out}"
    );

    let mut g = Fixture::new("nouser", &["true"]);
    g.cfg.user = "mallory".into();
    // As dockerd: the create succeeds, the start fails naming the user.
    g.create().expect("create with an unknown user");
    let err = skiff_runtime::start(&g.dir).expect_err("unknown user");
    assert!(
        err.to_string()
            .contains("unable to find user mallory: no matching entries in passwd file"),
        "{err}"
    );
    // The shim records the failed start as an exit (a moment after start answers).
    let st = g.wait(std::time::Duration::from_secs(10));
    assert_eq!(st.status, Status::Exited);
}

#[test]
fn writes_go_to_the_upper_dir_and_lower_stays_untouched() {
    skiff_tests::require!(
        "writes_go_to_the_upper_dir_and_lower_stays_untouched",
        unavailable()
    );
    let f = Fixture::new(
        "overlay",
        &[
            "sh",
            "-c",
            "echo hi > /etc/newfile; rm /bin/notexec; cat /etc/hosts | grep -c localhost",
        ],
    );
    let st = f.run();
    assert_eq!(st.exit_code, Some(0));
    assert!(f.rootfs.join("bin/notexec").exists());
    assert!(!f.rootfs.join("etc/newfile").exists());
    assert_eq!(
        std::fs::read_to_string(f.dir.join("upper/etc/newfile")).unwrap(),
        "hi\n"
    );
}

fn netns_inode_of(script_out: &str) -> String {
    script_out
        .lines()
        .find_map(|l| l.strip_prefix("net:["))
        .map(|l| l.trim_end_matches(']').to_string())
        .unwrap_or_default()
}

#[test]
fn host_network_shares_the_host_namespace() {
    skiff_tests::require!("host_network_shares_the_host_namespace", unavailable());
    let mut f = Fixture::new("hostnet", &["readlink", "/proc/self/ns/net"]);
    f.cfg.network = skiff_runtime::NetworkMode::Host;
    assert_eq!(f.run().exit_code, Some(0));
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(f.stdout().trim(), host.to_str().unwrap());
}

/// A named network namespace made with iproute2 (test tooling), deleted on drop.
struct NetNs(String);

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

#[test]
fn joins_a_prepared_network_namespace() {
    skiff_tests::require!(
        "joins_a_prepared_network_namespace",
        unavailable(),
        (!std::path::Path::new("/usr/sbin/ip").exists()
            && !std::path::Path::new("/sbin/ip").exists())
        .then(|| "iproute2 (ip) not installed".to_string())
    );
    let ns = NetNs(format!("skiff-rt-{}", std::process::id()));
    let ok = std::process::Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap();
    assert!(ok.success());
    let path = std::path::PathBuf::from("/run/netns").join(&ns.0);
    let mut f = Fixture::new("joinnet", &["readlink", "/proc/self/ns/net"]);
    f.cfg.network = skiff_runtime::NetworkMode::Join(path.clone());
    assert_eq!(f.run().exit_code, Some(0));
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(&path).unwrap().ino();
    assert_eq!(
        netns_inode_of(&f.stdout()),
        ino.to_string(),
        "{}",
        f.stdout()
    );
}

#[test]
fn symlinked_mount_points_in_the_image_are_refused() {
    skiff_tests::require!(
        "symlinked_mount_points_in_the_image_are_refused",
        unavailable()
    );
    let f = Fixture::new("symlinkdev", &["true"]);
    std::fs::remove_dir(f.rootfs.join("dev")).unwrap();
    std::os::unix::fs::symlink("/tmp", f.rootfs.join("dev")).unwrap();
    let err = f.create().expect_err("a /dev symlink must be refused");
    assert!(err.to_string().contains("/dev"), "{err}");
    assert_eq!(err.exit_code(), 125);
}

#[test]
fn several_lower_dirs_stack_topmost_first() {
    skiff_tests::require!("several_lower_dirs_stack_topmost_first", unavailable());
    let mut f = Fixture::new("lowers", &["cat", "/etc/motd", "/only-bottom"]);
    let bottom = f.dir.parent().unwrap().join("bottom");
    std::fs::create_dir_all(bottom.join("etc")).unwrap();
    std::fs::write(bottom.join("etc/motd"), "bottom\n").unwrap();
    std::fs::write(bottom.join("only-bottom"), "bottom-only\n").unwrap();
    std::fs::write(f.rootfs.join("etc/motd"), "top\n").unwrap();
    f.cfg.lower_dirs.push(bottom);
    assert_eq!(f.run().exit_code, Some(0));
    assert_eq!(f.stdout(), "top\nbottom-only\n");
}
