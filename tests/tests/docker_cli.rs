//! The stock docker CLI drives skiff through the Docker Engine API.

use std::process::Command;

use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, Daemon, Registry};

fn docker_unavailable() -> Option<String> {
    match Command::new("docker").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("the docker CLI is not installed".to_string()),
    }
}

#[test]
fn stock_docker_cli_works_against_skiff() {
    require!(
        "stock_docker_cli_works_against_skiff",
        root_unavailable(),
        registry_unavailable()
    );
    // The docker CLI is not ours to install: without it this test is reported as skipped
    // (the issue allows it), even under SKIFF_TEST_STRICT.
    if let Some(reason) = docker_unavailable() {
        eprintln!("SKIPPED: stock_docker_cli_works_against_skiff: {reason}");
        return;
    }
    let reg = Registry::start().unwrap();
    let d = Daemon::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let image = format!("{}/dockercli:latest", reg.host());
    d.ok(&[
        "image",
        "import",
        "--change",
        r#"CMD ["echo", "hi from docker"]"#,
        rootfs.path().to_str().unwrap(),
        &image,
    ]);
    d.ok(&["push", &image]);
    d.ok(&["rmi", &image]);

    let docker = |args: &[&str]| {
        let out = Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
            .env("DOCKER_CONFIG", d.dir().join("docker-config"))
            .args(args)
            .output()
            .expect("docker CLI runs");
        assert!(
            out.status.success(),
            "docker {args:?}: {}\n{}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            d.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let v = docker(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(v.trim(), "1.43");
    docker(&["pull", &image]);
    assert!(docker(&["images"]).contains(&format!("{}/dockercli", reg.host())));
    assert_eq!(docker(&["run", "--rm", &image, "echo", "hi"]), "hi\n");
    let id = docker(&["run", "-d", &image, "sh", "-c", "echo started; sleep 300"]);
    let id = id.trim();
    assert!(docker(&["ps", "-a"]).contains(&id[..12]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(docker(&["logs", id]).contains("started"));
    docker(&["stop", "-t", "1", id]);
    docker(&["rm", id]);
    assert!(!docker(&["ps", "-a"]).contains(&id[..12]));
}

/// The sha256 of `data` as `sha256:<hex>`.
fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// The layer blobs of a `docker save` archive, checked against the config's diff_ids.
fn check_saved_archive(path: &std::path::Path) {
    let mut files = std::collections::HashMap::new();
    let mut ar = tar::Archive::new(std::fs::File::open(path).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        files.insert(name, data);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let m = &manifest[0];
    let config: serde_json::Value =
        serde_json::from_slice(&files[m["Config"].as_str().unwrap()]).unwrap();
    let layers = m["Layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        config["rootfs"]["diff_ids"].as_array().unwrap().len()
    );
    for (l, diff_id) in layers
        .iter()
        .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
    {
        let tar = &files[l.as_str().unwrap()];
        assert_eq!(&sha256_digest(tar), diff_id.as_str().unwrap(), "layer {l}");
    }
}

/// `docker save` and `docker push` of a lazily pulled (zstd:chunked) image work: the
/// layers are fetched whole from the registry first. With the registry gone, `save` fails
/// before any byte (a clear error, no file left), and works once it is back.
#[test]
fn docker_save_and_push_of_a_lazily_pulled_image() {
    require!(
        "docker_save_and_push_of_a_lazily_pulled_image",
        root_unavailable(),
        registry_unavailable(),
        docker_unavailable()
    );
    let mut reg = Registry::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let gzip = format!("{}/lazysave:gzip", reg.host());
    let chunked = format!("{}/lazysave:chunked", reg.host());
    {
        let publisher = Daemon::start().unwrap();
        publisher.ok(&["image", "import", rootfs.path().to_str().unwrap(), &gzip]);
        publisher.ok(&["push", &gzip]);
        publisher.ok(&["image", "convert", &gzip, &chunked]);
    }
    let d = Daemon::start().unwrap();
    let docker = |args: &[&str]| {
        Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
            .env("DOCKER_CONFIG", d.dir().join("docker-config"))
            .args(args)
            .output()
            .expect("docker CLI runs")
    };
    let out = d.ok(&["pull", &chunked]);
    assert!(out.contains("Lazy image"), "{out}");
    let dir = tempfile::tempdir().unwrap();

    // Registry gone: the save is refused before the archive starts; no file is left.
    reg.stop().unwrap();
    let failed = dir.path().join("failed.tar");
    let out = docker(&["save", "-o", failed.to_str().unwrap(), &chunked]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    eprintln!("save with the registry gone: {err}");
    assert!(err.contains("Error response from daemon"), "{err}");
    assert!(
        err.contains("unreachable") && err.contains("lazysave"),
        "{err}"
    );
    assert!(!failed.exists(), "a failed save leaves no file");
    let out = d.run(&["save", "-o", failed.to_str().unwrap(), &chunked]);
    assert!(!out.status.success());
    assert!(!failed.exists(), "a failed skiff save leaves no file");

    // Registry back: docker save writes a whole archive whose layers match the diff_ids,
    // and `docker load` of it runs elsewhere.
    reg.restart().unwrap();
    let saved = dir.path().join("saved.tar");
    let out = docker(&["save", "-o", saved.to_str().unwrap(), &chunked]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log_text()
    );
    check_saved_archive(&saved);
    let other = Daemon::start().unwrap();
    other.ok(&["load", "-i", saved.to_str().unwrap()]);
    assert_eq!(
        other.ok(&["run", "--rm", &chunked, "/bin/echo", "loaded"]),
        "loaded\n"
    );

    // docker push of the lazily pulled image to another repository; it runs from there.
    let copy = format!("{}/lazysave-copy:1", reg.host());
    assert!(docker(&["tag", &chunked, &copy]).status.success());
    let out = docker(&["push", &copy]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = Daemon::start().unwrap();
    assert_eq!(
        fresh.ok(&["run", "--rm", &copy, "/bin/echo", "pushed"]),
        "pushed\n"
    );
}
