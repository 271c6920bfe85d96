//! Mounts a container asks for, on a real kernel: bind (rw, ro), tmpfs with options,
//! `--read-only` root, /dev/shm size, and the typed errors for bad ones.

mod common;

use common::{unavailable, Fixture};
use skiff_runtime::config::{Mount, MountKind, Propagation, TmpfsOptions};
use skiff_runtime::RuntimeError;

fn bind(source: &std::path::Path, dest: &str, read_only: bool) -> Mount {
    Mount {
        kind: MountKind::Bind {
            source: source.to_path_buf(),
            propagation: Propagation::Rprivate,
            recursive: true,
        },
        destination: dest.into(),
        read_only,
    }
}

#[test]
fn bind_mounts_read_and_write_the_host_and_ro_refuses_writes() {
    skiff_tests::require!(
        "bind_mounts_read_and_write_the_host_and_ro_refuses_writes",
        unavailable()
    );
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from host\n").unwrap();
    let ro = tempfile::tempdir().unwrap();
    std::fs::write(ro.path().join("f"), "ro\n").unwrap();
    let mut f = Fixture::new(
        "bind",
        &[
            "sh",
            "-c",
            "cat /data/in && echo written > /data/out && cat /ro/f && \
             (echo x > /ro/f 2>/dev/null && echo ro-writable || echo ro-refused) && \
             cat /deep/file/in",
        ],
    );
    f.cfg.mounts = vec![
        bind(host.path(), "/data", false),
        bind(ro.path(), "/ro", true),
        // A file source onto a path that does not exist in the image.
        bind(&host.path().join("in"), "/deep/file/in", true),
    ];
    let st = f.run();
    assert_eq!(st.exit_code, Some(0), "{st:?} {}", f.stdout());
    assert_eq!(f.stdout(), "from host\nro\nro-refused\nfrom host\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "written\n"
    );
    assert_eq!(
        std::fs::read_to_string(ro.path().join("f")).unwrap(),
        "ro\n"
    );
}

#[test]
fn tmpfs_mounts_take_size_mode_and_dockers_default_flags() {
    skiff_tests::require!(
        "tmpfs_mounts_take_size_mode_and_dockers_default_flags",
        unavailable()
    );
    let (opts, ro) = TmpfsOptions::parse("size=1m,mode=1770,uid=1000").unwrap();
    assert!(!ro);
    let mut f = Fixture::new(
        "tmpfs",
        &[
            "sh",
            "-c",
            "grep ' /scratch ' /proc/mounts; stat -c %a:%u /scratch; grep ' /dev/shm ' /proc/mounts",
        ],
    );
    f.cfg.mounts = vec![Mount {
        kind: MountKind::Tmpfs(opts),
        destination: "/scratch".into(),
        read_only: false,
    }];
    f.cfg.shm_size = Some(8 << 20);
    let st = f.run();
    assert_eq!(st.exit_code, Some(0), "{st:?}");
    let out = f.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("tmpfs /scratch tmpfs rw,nosuid,nodev,noexec"),
        "{out}"
    );
    assert!(lines[0].contains("size=1024k"), "{out}");
    assert_eq!(lines[1], "1770:1000");
    assert!(lines[2].contains("size=8192k"), "{out}");
}

#[test]
fn read_only_root_refuses_writes_but_tmpfs_shm_and_etc_stay_writable() {
    skiff_tests::require!(
        "read_only_root_refuses_writes_but_tmpfs_shm_and_etc_stay_writable",
        unavailable()
    );
    let mut f = Fixture::new(
        "rootro",
        &[
            "sh",
            "-c",
            "for p in /file /tmp/file /run/file /dev/shm/file /etc/hosts; do \
               (echo x >> $p) 2>/dev/null && echo $p:rw || echo $p:ro; done",
        ],
    );
    f.cfg.readonly_rootfs = true;
    f.cfg.mounts = vec![Mount {
        kind: MountKind::Tmpfs(TmpfsOptions::default()),
        destination: "/run".into(),
        read_only: false,
    }];
    let st = f.run();
    assert_eq!(st.exit_code, Some(0), "{st:?}");
    assert_eq!(
        f.stdout(),
        "/file:ro\n/tmp/file:ro\n/run/file:rw\n/dev/shm/file:rw\n/etc/hosts:rw\n"
    );
}

#[test]
fn bad_mounts_are_typed_errors_and_nothing_is_created() {
    skiff_tests::require!(
        "bad_mounts_are_typed_errors_and_nothing_is_created",
        unavailable()
    );
    let tmpfs = |d: &str| Mount {
        kind: MountKind::Tmpfs(TmpfsOptions::default()),
        destination: d.into(),
        read_only: false,
    };
    for m in [tmpfs("relative/path"), tmpfs("/")] {
        let mut f = Fixture::new("badmount", &["true"]);
        f.cfg.mounts = vec![m.clone()];
        match f.create() {
            Err(RuntimeError::InvalidMount { destination, .. }) => {
                assert_eq!(destination, m.destination)
            }
            other => panic!("{m:?}: {other:?}"),
        }
        assert!(!f.dir.exists(), "nothing created for {m:?}");
    }
    // A bind source that does not exist is refused up front, naming it.
    let mut f = Fixture::new("nosource", &["true"]);
    f.cfg.mounts = vec![bind(
        std::path::Path::new("/nonexistent/skiff-src"),
        "/x",
        false,
    )];
    let e = f.create().unwrap_err();
    assert!(
        matches!(e, RuntimeError::InvalidMount { ref destination, ref reason }
            if destination == "/x" && reason.contains("/nonexistent/skiff-src")),
        "{e}"
    );
    assert!(!f.dir.exists());
}
