//! Registries over TLS with a private CA, as Docker reaches them: a docker-registry with
//! token auth serving HTTPS inside a network namespace this test makes (a non-loopback
//! address, so no plain-HTTP shortcut applies). Trust comes from `certs.d/<host:port>/
//! *.crt`; client certificates from `*.cert` + `*.key`; `--insecure-registry` skips
//! verification. Failures name the host and the reason.

mod common;
mod registry_support;

use std::path::Path;

use common::{rt, QUIET};
use registry_support::*;
use skiff_store::{Store, StoreOptions};
use skiff_tests::netns::{netns_unavailable, NetNs};
use skiff_tests::registry::registry_unavailable;
use skiff_tests::test_ca::TestCa;
use skiff_tests::{fixtures, require, Registry, TokenServer};

fn store(root: &Path, config: &Path, certs: Option<&Path>, insecure: &[String]) -> Store {
    Store::open(
        root,
        StoreOptions {
            docker_config: Some(config.to_path_buf()),
            certs_dir: certs.map(Path::to_path_buf),
            insecure_registries: insecure.to_vec(),
            ..Default::default()
        },
    )
    .unwrap()
}

/// A docker-registry serving HTTPS on port 5000 inside a network namespace of the test's
/// own, its certificate issued for the namespace's address by a new CA; requiring client
/// certificates signed by that CA when `client_certs`. Bind `ns` first (locals drop in
/// reverse): the registry stops before its namespace goes.
struct TlsInNetns {
    reg: Registry,
    ca: TestCa,
    ns: NetNs,
}

fn tls_registry_in_netns(dir: &Path, ca_name: &str, client_certs: bool) -> TlsInNetns {
    let ns = NetNs::create().unwrap();
    let ca = TestCa::new(ca_name).unwrap();
    let pair = ca
        .issue(&[&ns.ns_ip], false, &dir.join("server"), "server", "crt")
        .unwrap();
    let ca_file = dir.join("ca.pem");
    ca.write_cert(&ca_file).unwrap();
    let client_ca = client_certs.then_some(ca_file.as_path());
    let reg = Registry::start_tls_in(&ns, 5000, &pair.cert, &pair.key, client_ca, None).unwrap();
    TlsInNetns { reg, ca, ns }
}

#[test]
fn private_ca_token_registry_push_pull_lazy_and_tls_failures() {
    require!(
        "private_ca_token_registry_push_pull_lazy_and_tls_failures",
        netns_unavailable(),
        registry_unavailable(),
        fixtures::busybox_unavailable()
    );
    let tmp = tempfile::tempdir().unwrap();
    let ns = NetNs::create().unwrap();
    let ca = TestCa::new("skiff test CA").unwrap();
    let server_pair = ca
        .issue(
            &[&ns.ns_ip],
            false,
            &tmp.path().join("server"),
            "server",
            "crt",
        )
        .unwrap();
    let tokens = TokenServer::start(&[(USER, PASSWORD)]).unwrap();
    let reg = Registry::start_tls_in(
        &ns,
        5000,
        &server_pair.cert,
        &server_pair.key,
        None,
        Some(&tokens),
    )
    .unwrap();
    let host = reg.host();
    let config = docker_config(tmp.path(), &host, USER, PASSWORD);
    let certs = tmp.path().join("certs.d");
    ca.write_cert(&certs.join(&host).join("ca.crt")).unwrap();
    let rt = rt();

    // Push and convert over verified TLS, then a lazy pull and reads.
    let publisher = store(&tmp.path().join("pub"), &config, Some(&certs), &[]);
    let chunked = publish(&rt, &reg, &publisher);
    // The push asked the token server (over the registry's TLS) for push access.
    let issued = tokens.issued();
    assert!(
        issued.iter().any(|i| i.status == 200
            && i.user.as_deref() == Some(USER)
            && i.scopes == ["repository:private/app:pull,push"]),
        "no push-scoped token was issued: {issued:?}"
    );
    // A push with a wrong password: refused, naming the registry, the repository and the
    // credentials' source, with no secret in the message; nothing of it stored.
    {
        let wrong_dir = tmp.path().join("wrong");
        std::fs::create_dir_all(&wrong_dir).unwrap();
        let wrong_cfg = docker_config(&wrong_dir, &host, USER, "not-the-password");
        let wrong = store(&wrong_dir.join("store"), &wrong_cfg, Some(&certs), &[]);
        let rootfs = wrong_dir.join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        fixtures::build_busybox_rootfs(&rootfs).unwrap();
        let denied = format!("{host}/private/denied:v1");
        rt.block_on(wrong.import(
            &rootfs,
            &denied,
            &fixtures::busybox_changes(),
            skiff_store::Compression::Gzip,
        ))
        .unwrap();
        let e = rt.block_on(wrong.push(&denied)).unwrap_err().to_string();
        eprintln!("wrong password: {e}");
        assert!(
            e.contains(&format!(
                "registry {host} refused access to {host}/private/denied"
            )) && e.contains("config.json"),
            "{e}"
        );
        assert!(!e.contains("not-the-password"), "{e}");
        assert_no_secret(&e, &tokens);
        let repo = reg
            .storage_dir()
            .join("docker/registry/v2/repositories/private/denied");
        assert!(!repo.exists(), "the refused push stored something");
    }
    tokens.set_lifetime(3, None);
    let lazy = store(&tmp.path().join("lazy"), &config, Some(&certs), &[]);
    rt.block_on(lazy.pull(&chunked, QUIET)).unwrap();
    assert_eq!(lazy.image(&chunked).unwrap().layers[0].state, "lazy");
    assert_eq!(
        read_file(&lazy, &chunked, "data/one"),
        fixtures::random_bytes(300 << 10, 1)
    );
    std::thread::sleep(std::time::Duration::from_millis(3500));
    assert_eq!(
        read_file(&lazy, &chunked, "data/two"),
        fixtures::random_bytes(300 << 10, 2)
    );

    // The daemon with --certs-dir: a lazy pull and reads through its FUSE mount.
    {
        let daemon_cfg = tmp.path().join("daemon-docker");
        std::fs::create_dir_all(&daemon_cfg).unwrap();
        docker_config(&daemon_cfg, &host, USER, PASSWORD);
        let d = skiff_tests::Daemon::start_with_env(
            &["--certs-dir", certs.to_str().unwrap()],
            &[("DOCKER_CONFIG", daemon_cfg.to_str().unwrap())],
        )
        .unwrap();
        d.ok(&["pull", &chunked]);
        let out = d.ok(&["run", "--rm", &chunked, "sha256sum", "/later/four"]);
        use sha2::Digest as _;
        let want = hex::encode(sha2::Sha256::digest(fixtures::random_bytes(300 << 10, 4)));
        assert!(out.contains(&want), "{out}");
        assert_no_secret(&d.log_text(), &tokens);
    }

    // No CA configured: refused, naming the host and the reason.
    let untrusting = store(
        &tmp.path().join("no-ca"),
        &config,
        Some(&tmp.path().join("empty")),
        &[],
    );
    let e = rt
        .block_on(untrusting.pull(&chunked, QUIET))
        .unwrap_err()
        .to_string();
    eprintln!("no CA: {e}");
    assert!(e.contains(&host) && e.contains("unknown authority"), "{e}");

    // Listed as insecure: HTTPS without verification works.
    let insecure = store(
        &tmp.path().join("insecure"),
        &config,
        None,
        std::slice::from_ref(&host),
    );
    rt.block_on(insecure.pull(&chunked, QUIET)).unwrap();
    assert_eq!(
        read_file(&insecure, &chunked, "data/three"),
        fixtures::random_bytes(300 << 10, 3)
    );

    // A CA file that does not parse: named.
    let bad = tmp.path().join("bad-certs");
    std::fs::create_dir_all(bad.join(&host)).unwrap();
    std::fs::write(bad.join(&host).join("ca.crt"), "garbage").unwrap();
    let broken = store(&tmp.path().join("bad"), &config, Some(&bad), &[]);
    let e = rt
        .block_on(broken.pull(&chunked, QUIET))
        .unwrap_err()
        .to_string();
    eprintln!("bad CA: {e}");
    assert!(e.contains("ca.crt") && e.contains(&host), "{e}");

    // A certificate issued for another name.
    let other_pair = ca
        .issue(
            &["10.255.255.1"],
            false,
            &tmp.path().join("other"),
            "server",
            "crt",
        )
        .unwrap();
    let wrong_name =
        Registry::start_tls_in(&ns, 5001, &other_pair.cert, &other_pair.key, None, None).unwrap();
    ca.write_cert(&certs.join(wrong_name.host()).join("ca.crt"))
        .unwrap();
    let e = rt
        .block_on(lazy.pull(&format!("{}/x:y", wrong_name.host()), QUIET))
        .unwrap_err()
        .to_string();
    eprintln!("wrong name: {e}");
    assert!(
        e.contains(&wrong_name.host()) && e.contains("not valid for the name"),
        "{e}"
    );

    // A registry that wants client certificates: refused without, served with.
    let mtls = Registry::start_tls_in(
        &ns,
        5002,
        &server_pair.cert,
        &server_pair.key,
        Some(&certs.join(&host).join("ca.crt")),
        None,
    )
    .unwrap();
    let mtls_certs = tmp.path().join("mtls-certs");
    ca.write_cert(&mtls_certs.join(mtls.host()).join("ca.crt"))
        .unwrap();
    let target = format!("{}/x:y", mtls.host());
    let e = rt
        .block_on(
            store(&tmp.path().join("m1"), &config, Some(&mtls_certs), &[]).pull(&target, QUIET),
        )
        .unwrap_err()
        .to_string();
    eprintln!("no client cert: {e}");
    // TLS 1.3: the server checks the client certificate after the client has finished its
    // handshake, so its alert can race the request and the failure reads as a dropped
    // connection; either way the error names the registry and the connection step.
    assert!(
        e.contains(&mtls.host())
            && (e.contains("refused the client certificate") || e.contains("connection")),
        "{e}"
    );
    ca.issue(
        &["skiff-client"],
        true,
        &mtls_certs.join(mtls.host()),
        "client",
        "cert",
    )
    .unwrap();
    let e = rt
        .block_on(
            store(&tmp.path().join("m2"), &config, Some(&mtls_certs), &[]).pull(&target, QUIET),
        )
        .unwrap_err()
        .to_string();
    // Through TLS now: the registry answers that the image does not exist.
    assert!(e.contains("not found"), "{e}");
    assert_no_secret(&e, &tokens);

    // A plain-HTTP registry off loopback: refused unless insecure, where HTTPS fails over
    // to HTTP (Docker's order).
    let plain = Registry::start_plain_in(&ns, 5003).unwrap();
    let target = format!("{}/x:y", plain.host());
    let e = rt
        .block_on(store(&tmp.path().join("p1"), &config, None, &[]).pull(&target, QUIET))
        .unwrap_err()
        .to_string();
    eprintln!("plain, not insecure: {e}");
    assert!(e.contains(&plain.host()), "{e}");
    assert!(e.contains("does not answer in TLS"), "{e}");
    let e = rt
        .block_on(
            store(&tmp.path().join("p2"), &config, None, &[plain.host()]).pull(&target, QUIET),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("not found"), "{e}");
    // A push as the first contact finds plain HTTP too, and the image pulls back.
    let pusher = store(
        &tmp.path().join("p3"),
        &config,
        None,
        std::slice::from_ref(&plain.host()),
    );
    let rootfs = tmp.path().join("rootfs-plain");
    std::fs::create_dir(&rootfs).unwrap();
    fixtures::build_busybox_rootfs(&rootfs).unwrap();
    let pushed = format!("{}/plain/app:v1", plain.host());
    rt.block_on(pusher.import(
        &rootfs,
        &pushed,
        &fixtures::busybox_changes(),
        skiff_store::Compression::Gzip,
    ))
    .unwrap();
    rt.block_on(pusher.push(&pushed)).unwrap();
    let puller = store(&tmp.path().join("p4"), &config, None, &[plain.host()]);
    rt.block_on(puller.pull(&pushed, QUIET)).unwrap();
}

/// Loopback registries are insecure as in dockerd: HTTPS first (without verification:
/// this registry's CA is trusted nowhere), then plain HTTP; both work with no
/// configuration, for push, pull and lazy reads.
#[test]
fn loopback_registry_over_https_first_then_http() {
    require!(
        "loopback_registry_over_https_first_then_http",
        registry_unavailable(),
        fixtures::busybox_unavailable()
    );
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new("skiff untrusted CA").unwrap();
    let pair = ca
        .issue(
            &["127.0.0.1"],
            false,
            &tmp.path().join("server"),
            "server",
            "crt",
        )
        .unwrap();
    let tls = Registry::start_tls_loopback(&pair.cert, &pair.key).unwrap();
    let plain = Registry::start().unwrap();
    let config = tmp.path().join("config.json");
    std::fs::write(&config, "{}").unwrap();
    let rt = rt();
    for (reg, how) in [(&tls, "https"), (&plain, "http")] {
        let root = tmp.path().join(how);
        let publisher = store(&root.join("pub"), &config, None, &[]);
        let chunked = publish(&rt, reg, &publisher);
        let lazy = store(&root.join("lazy"), &config, None, &[]);
        rt.block_on(lazy.pull(&chunked, QUIET))
            .unwrap_or_else(|e| panic!("{how}: {e}"));
        assert_eq!(lazy.image(&chunked).unwrap().layers[0].state, "lazy");
        assert_eq!(
            read_file(&lazy, &chunked, "data/one"),
            fixtures::random_bytes(300 << 10, 1),
            "{how}"
        );
    }
    // The TLS registry really serves only TLS (Go answers plain HTTP with 400 or drops
    // it), and it logged the pull's requests.
    assert_ne!(tls.get_status("/v2/").ok(), Some(200));
    let log = std::fs::read_to_string(tls.log_path()).unwrap();
    assert!(log.contains("/manifests/"), "{log}");
}

/// `certs.d` is read again when it changes (looked at at most once a second), so a CA
/// put there applies to the next pull and push without restarting: before it the registry
/// is refused as signed by an unknown authority; after it push, pull and lazy reads work,
/// with the same client.
#[test]
fn certs_d_changes_apply_without_restart() {
    require!(
        "certs_d_changes_apply_without_restart",
        netns_unavailable(),
        registry_unavailable(),
        fixtures::busybox_unavailable()
    );
    let tmp = tempfile::tempdir().unwrap();
    let TlsInNetns { ns: _ns, ca, reg } = tls_registry_in_netns(tmp.path(), "skiff test CA", false);
    let config = tmp.path().join("config.json");
    std::fs::write(&config, "{}").unwrap();
    let certs = tmp.path().join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    let rt = rt();
    let s = store(&tmp.path().join("s"), &config, Some(&certs), &[]);
    let e = rt
        .block_on(s.pull(&format!("{}/x:y", reg.host()), QUIET))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&reg.host()) && e.contains("unknown authority"),
        "{e}"
    );
    ca.write_cert(&certs.join(reg.host()).join("ca.crt"))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let chunked = publish(&rt, &reg, &s);
    let lazy = store(&tmp.path().join("lazy"), &config, Some(&certs), &[]);
    rt.block_on(lazy.pull(&chunked, QUIET)).unwrap();
    assert_eq!(
        read_file(&lazy, &chunked, "data/one"),
        fixtures::random_bytes(300 << 10, 1)
    );
    // The first store, which was refused, pulls too now.
    rt.block_on(s.pull(&chunked, QUIET)).unwrap();
}

/// A push to a registry that wants a client certificate (`clientcas`): refused without
/// one, naming the registry, with nothing stored; with the `certs.d` pair (picked up by
/// the same store) pushed and pulled back. A second repository of the registry then gets
/// the layers by cross-repository mount, not by upload.
#[test]
fn push_with_client_certificate_and_cross_repository_mount() {
    require!(
        "push_with_client_certificate_and_cross_repository_mount",
        netns_unavailable(),
        registry_unavailable(),
        fixtures::busybox_unavailable()
    );
    let tmp = tempfile::tempdir().unwrap();
    let TlsInNetns { ns: _ns, ca, reg } = tls_registry_in_netns(tmp.path(), "skiff test CA", true);
    let host = reg.host();
    let certs = tmp.path().join("certs.d");
    ca.write_cert(&certs.join(&host).join("ca.crt")).unwrap();
    let config = tmp.path().join("config.json");
    std::fs::write(&config, "{}").unwrap();
    let rt = rt();
    let s = store(&tmp.path().join("s"), &config, Some(&certs), &[]);
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    fixtures::build_busybox_rootfs(&rootfs).unwrap();
    let image = format!("{host}/mtls/app:v1");
    rt.block_on(s.import(
        &rootfs,
        &image,
        &fixtures::busybox_changes(),
        skiff_store::Compression::Gzip,
    ))
    .unwrap();

    let e = rt.block_on(s.push(&image)).unwrap_err().to_string();
    eprintln!("push without client certificate: {e}");
    // As for pulls: with TLS 1.3 the server's alert can race the request (see above).
    assert!(
        e.contains(&host)
            && (e.contains("refused the client certificate") || e.contains("connection")),
        "{e}"
    );
    let repos = reg.storage_dir().join("docker/registry/v2/repositories");
    assert!(!repos.join("mtls").exists(), "something was stored");

    ca.issue(
        &["skiff-client"],
        true,
        &certs.join(&host),
        "client",
        "cert",
    )
    .unwrap();
    // certs.d is looked at again after a second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let digest = rt.block_on(s.push(&image)).unwrap();
    let puller = store(&tmp.path().join("p"), &config, Some(&certs), &[]);
    rt.block_on(puller.pull(&image, QUIET)).unwrap();
    let pulled = puller.image(&image).unwrap();
    assert_eq!(pulled.id, s.image(&image).unwrap().id);
    assert_eq!(pulled.manifest_digest, digest);

    // Another repository: the layers are mounted from mtls/app, only the config uploaded.
    let copy = format!("{host}/mtls/copy:v1");
    s.tag(&image, &copy).unwrap();
    let before = std::fs::read_to_string(reg.log_path()).unwrap().len();
    assert_eq!(rt.block_on(s.push(&copy)).unwrap(), digest);
    let log = std::fs::read_to_string(reg.log_path()).unwrap()[before..].to_string();
    for layer in &pulled.layers {
        let mounted = log.lines().any(|l| {
            l.contains("POST /v2/mtls/copy/blobs/uploads/?")
                && l.contains(&format!("mount={}", layer.digest))
                && l.contains("\" 201 ")
        });
        assert!(mounted, "layer {} not mounted:\n{log}", layer.digest);
    }
    assert!(!log.contains("PATCH /v2/mtls/copy/"), "{log}");
    let back = store(&tmp.path().join("c"), &config, Some(&certs), &[]);
    rt.block_on(back.pull(&copy, QUIET)).unwrap();
    assert_eq!(back.image(&copy).unwrap().id, pulled.id);
}

/// `insecure-registries` with a CIDR in daemon.json, as dockerd takes it: a registry whose
/// address is in the range is spoken to without verification, so an HTTPS registry whose
/// certificate nobody trusts is pushed to and pulled from; `info` lists the range.
/// Without the entry the same pull fails naming the host and the unknown authority.
#[test]
fn insecure_cidr_admits_an_untrusted_https_registry() {
    require!(
        "insecure_cidr_admits_an_untrusted_https_registry",
        netns_unavailable(),
        registry_unavailable(),
        fixtures::busybox_unavailable()
    );
    let tmp = tempfile::tempdir().unwrap();
    let TlsInNetns { ns, reg, .. } = tls_registry_in_netns(tmp.path(), "skiff untrusted CA", false);
    let host = reg.host();
    let octets: Vec<&str> = ns.ns_ip.split('.').collect();
    let cidr = format!("{}.{}.0.0/16", octets[0], octets[1]);
    let cfg = tmp.path().join("daemon.json");
    std::fs::write(&cfg, format!(r#"{{"insecure-registries": ["{cidr}"]}}"#)).unwrap();
    let image = format!("{host}/cidr/app:v1");
    {
        let d = skiff_tests::Daemon::start_with(&["--config-file", cfg.to_str().unwrap()]).unwrap();
        let info = d.ok(&["info"]);
        assert!(info.contains(&cidr), "{info}");
        skiff_tests::docker_cli::import_busybox(&d, &image, &[]);
        let out = d.ok(&["push", &image]);
        let digest = out
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .unwrap_or_else(|| panic!("no digest in push output: {out}"))
            .to_string();
        d.ok(&["rmi", &image]);
        let out = d.ok(&["pull", &image]);
        assert!(out.contains(&digest), "{out}");
    }
    // No entry: refused as signed by an unknown authority, naming the host.
    let d = skiff_tests::Daemon::start().unwrap();
    let out = d.run(&["pull", &image]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&host) && err.contains("unknown authority"),
        "{err}"
    );
}
