//! The program prefetch (store/src/program_prefetch.rs): a lazy pull fetches the image's
//! default program, its ELF interpreter and the libraries it needs before anything runs.
//! With the registry gone right after the pull, the program still starts; a container
//! running another program gets it fetched from its create on; with
//! `--no-program-prefetch` the same start cannot read its binary.

use std::path::Path;
use std::process::Command;

use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon, Registry};

/// The host's dynamically linked `dash`, its interpreter and libraries (as `ldd` names
/// them), and the files a create reads, at the same paths in `root`.
fn dynamic_rootfs(root: &Path) {
    for d in ["bin", "etc", "dev", "proc", "sys", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let ldd = Command::new("ldd").arg("/bin/dash").output().unwrap();
    assert!(ldd.status.success(), "ldd /bin/dash failed");
    let mut files = vec!["/bin/dash".to_string()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux... (0x...)`
        if let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(path.to_string());
        }
    }
    assert!(files.len() >= 3, "dash links no libraries? {files:?}");
    for f in &files {
        let dst = root.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(f, &dst).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/dash\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
}

#[test]
fn a_lazy_pull_fetches_the_default_program_and_its_libraries() {
    require!(
        "a_lazy_pull_fetches_the_default_program_and_its_libraries",
        root_unavailable(),
        registry_unavailable()
    );
    let mut reg = Registry::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    dynamic_rootfs(rootfs.path());
    let gzip = format!("{}/prog:gzip", reg.host());
    let chunked = format!("{}/prog:chunked", reg.host());
    let other_gzip = format!("{}/other:gzip", reg.host());
    let other = format!("{}/other:chunked", reg.host());
    {
        let d = Daemon::start().unwrap();
        d.ok(&[
            "image",
            "import",
            "--change",
            r#"CMD ["dash", "-c", "echo started from the cache"]"#,
            "--change",
            "ENV PATH=/usr/local/bin:/bin",
            rootfs.path().to_str().unwrap(),
            &gzip,
        ]);
        d.ok(&["push", &gzip]);
        d.ok(&["image", "convert", &gzip, &chunked]);
        // The same files, but a default program the image does not have.
        d.ok(&[
            "image",
            "import",
            "--change",
            r#"CMD ["not-in-this-image"]"#,
            rootfs.path().to_str().unwrap(),
            &other_gzip,
        ]);
        d.ok(&["push", &other_gzip]);
        d.ok(&["image", "convert", &other_gzip, &other]);
    }
    let dash_size = std::fs::metadata(rootfs.path().join("bin/dash"))
        .unwrap()
        .len();

    let d = Daemon::start().unwrap();
    d.ok(&["pull", &chunked]);
    let (bytes, chunks) = d.settled_chunk_cache();
    // dash, the loader and libc: well over the binary alone.
    assert!(bytes > 4 * dash_size, "{bytes} bytes in {chunks} chunks");
    reg.stop().unwrap();
    let out = d.ok(&["run", "--rm", &chunked]);
    assert_eq!(out.trim(), "started from the cache");
    assert!(
        d.log_text().contains("program prefetch"),
        "{}",
        d.log_text()
    );
    drop(d);

    // A container running another program than the image's default: fetched from the
    // create on, as the image is mounted.
    reg.restart().unwrap();
    let d = Daemon::start().unwrap();
    d.ok(&["pull", &other]);
    let (bytes, _) = d.settled_chunk_cache();
    assert!(
        bytes < dash_size,
        "{bytes} bytes cached for a program not in the image"
    );
    d.ok(&[
        "create",
        "--name",
        "other-program",
        &other,
        "dash",
        "-c",
        "echo another program",
    ]);
    let (bytes, _) = d.settled_chunk_cache();
    assert!(bytes > 4 * dash_size, "{bytes} bytes after the create");
    reg.stop().unwrap();
    let out = d.ok(&["start", "-a", "other-program"]);
    assert_eq!(out.trim(), "another program");
    d.ok(&["rm", "other-program"]);
    drop(d);

    // Without the prefetch the binary is not there when the registry is gone.
    reg.restart().unwrap();
    let d = Daemon::start_with(&["--no-program-prefetch"]).unwrap();
    d.ok(&["pull", &chunked]);
    let (bytes, _) = d.settled_chunk_cache();
    assert!(
        bytes < dash_size,
        "{bytes} bytes cached without the prefetch"
    );
    reg.stop().unwrap();
    let out = d.run(&["run", "--rm", &chunked]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("started from the cache"),
        "{out:?}"
    );
}
