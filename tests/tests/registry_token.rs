//! Bearer-token registries (Distribution's token authentication, as Docker Hub, GHCR, Quay,
//! Harbor use it): a real docker-registry that trusts a test token server's signing
//! certificate. Push, full pull, lazy pull, and lazy reads after the token expired, both
//! renewed ahead of expiry and after the registry refused it; token server faults; no
//! secret in any error.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use common::{by_path, read_all, rt, QUIET};
use skiff_store::{Compression, ImageReference, Store, StoreOptions};
use skiff_tests::registry::registry_unavailable;
use skiff_tests::token_server::Mode;
use skiff_tests::{fixtures, require, Registry, TokenServer};

const USER: &str = "alice";
const PASSWORD: &str = "pa55-w0rd-secret";

fn docker_config(dir: &Path, registry: &str, user: &str, password: &str) -> std::path::PathBuf {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let p = dir.join("config.json");
    std::fs::write(
        &p,
        format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    p
}

fn store_with(root: &Path, config: &Path) -> Store {
    Store::open(
        root,
        StoreOptions {
            docker_config: Some(config.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Registry access-log lines after byte `from` with `needle` and status `status`.
fn logged(reg: &Registry, from: usize, needle: &str, status: u16) -> usize {
    let log = std::fs::read_to_string(reg.log_path()).unwrap();
    log[from..]
        .lines()
        .filter(|l| l.contains(needle) && l.contains(&format!("HTTP/1.1\" {status} ")))
        .count()
}

fn log_len(reg: &Registry) -> usize {
    std::fs::metadata(reg.log_path()).unwrap().len() as usize
}

fn assert_no_secret(text: &str, server: &TokenServer) {
    assert!(!text.contains(PASSWORD), "password leaked: {text}");
    for s in server.secrets() {
        assert!(!text.contains(&s), "token leaked: {text}");
    }
}

/// Pushes a busybox image with three extra files (gzip), converts it to zstd:chunked with
/// `store`'s credentials; returns the chunked reference.
fn publish(rt: &tokio::runtime::Runtime, reg: &Registry, store: &Store) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    fixtures::build_busybox_rootfs(&rootfs).unwrap();
    for (name, seed) in [("one", 1), ("two", 2), ("three", 3)] {
        std::fs::write(
            rootfs.join("data").join(name),
            fixtures::random_bytes(300 << 10, seed),
        )
        .unwrap();
    }
    let gzip = format!("{}/private/app:gzip", reg.host());
    let chunked = format!("{}/private/app:chunked", reg.host());
    rt.block_on(store.import(
        &rootfs,
        &gzip,
        &fixtures::busybox_changes(),
        Compression::Gzip,
    ))
    .unwrap();
    rt.block_on(store.push(&gzip)).unwrap();
    rt.block_on(skiff_store::convert::convert_image(
        store.registry(),
        &ImageReference::parse(&gzip).unwrap(),
        &ImageReference::parse(&chunked).unwrap(),
        &tmp.path().join("convert"),
        &|_| {},
    ))
    .unwrap();
    chunked
}

fn read_file(store: &Store, reference: &str, path: &str) -> Vec<u8> {
    let img = store.image(reference).unwrap();
    let idx = store.layer_indexes(&img.id).unwrap();
    let files = by_path(&idx);
    let e = files
        .get(path)
        .unwrap_or_else(|| panic!("{path} not in image"));
    let layer = idx
        .iter()
        .find(|l| l.entries.iter().any(|x| x.path == e.path))
        .unwrap();
    read_all(store, &layer.digest, e)
}

#[test]
fn token_auth_push_pull_lazy_and_reads_after_expiry() {
    require!(
        "token_auth_push_pull_lazy_and_reads_after_expiry",
        registry_unavailable(),
        fixtures::busybox_unavailable()
    );
    let server = TokenServer::start(&[(USER, PASSWORD)]).unwrap();
    let reg = Registry::start_with_token(&server).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = docker_config(tmp.path(), &reg.host(), USER, PASSWORD);
    let rt = rt();

    // Push (oci-client's token exchange) and convert (our reads + oci-client's pushes).
    let publisher = store_with(&tmp.path().join("pub"), &config);
    let chunked = publish(&rt, &reg, &publisher);
    let issued = server.issued();
    assert!(
        issued.iter().any(|i| i.user.as_deref() == Some(USER)
            && i.scopes.iter().any(|s| s.ends_with(":pull,push"))),
        "no push-scoped token was asked for: {issued:?}"
    );

    // Anonymous: refused, naming the registry and what was tried, no secret.
    let anon = store_with(&tmp.path().join("anon"), &tmp.path().join("none.json"));
    let err = rt
        .block_on(anon.pull(&chunked, QUIET))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&reg.host()), "{err}");
    assert!(err.contains("anonymous"), "{err}");
    eprintln!("anonymous: {err}");
    assert_no_secret(&err, &server);

    // Full pull of the gzip image.
    let full = store_with(&tmp.path().join("full"), &config);
    let gzip = chunked.replace(":chunked", ":gzip");
    rt.block_on(full.pull(&gzip, QUIET)).unwrap();
    assert_eq!(
        read_file(&full, &gzip, "data/one"),
        fixtures::random_bytes(300 << 10, 1)
    );

    // Lazy pull with tokens the registry accepts for 3 s and that say so.
    server.set_lifetime(3, None);
    let lazy = store_with(&tmp.path().join("lazy"), &config);
    rt.block_on(lazy.pull(&chunked, QUIET)).unwrap();
    assert_eq!(lazy.image(&chunked).unwrap().layers[0].state, "lazy");
    assert_eq!(
        read_file(&lazy, &chunked, "data/one"),
        fixtures::random_bytes(300 << 10, 1)
    );
    // Hours later, simulated: the token is past its expires_in. It is renewed before the
    // read goes out, so the registry sees no refused request.
    std::thread::sleep(Duration::from_millis(3500));
    let before_tokens = server.issued().len();
    let from = log_len(&reg);
    assert_eq!(
        read_file(&lazy, &chunked, "data/two"),
        fixtures::random_bytes(300 << 10, 2)
    );
    assert!(
        server.issued().len() > before_tokens,
        "no new token after expiry"
    );
    assert_eq!(
        logged(&reg, from, "/blobs/", 401),
        0,
        "renewal was not ahead of expiry"
    );
    assert!(logged(&reg, from, "/blobs/", 206) >= 1);

    // A token the registry stops accepting before the client expected: refused (401),
    // renewed, and the read succeeds.
    server.set_lifetime(3, Some(3600));
    std::thread::sleep(Duration::from_millis(3500)); // the current token lapses
    let lazy2 = store_with(&tmp.path().join("lazy2"), &config);
    rt.block_on(lazy2.pull(&chunked, QUIET)).unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    let from = log_len(&reg);
    let before_tokens = server.issued().len();
    assert_eq!(
        read_file(&lazy2, &chunked, "data/three"),
        fixtures::random_bytes(300 << 10, 3)
    );
    assert!(
        logged(&reg, from, "/blobs/", 401) >= 1,
        "the stale token was not sent"
    );
    assert!(server.issued().len() > before_tokens);

    // Nothing the registry or token server logged or we printed holds a secret.
    assert_no_secret(&format!("{:?}", server.issued()), &server);
}

#[test]
fn token_server_faults_are_clear_errors() {
    require!(
        "token_server_faults_are_clear_errors",
        registry_unavailable(),
        fixtures::busybox_unavailable()
    );
    let server = TokenServer::start(&[(USER, PASSWORD)]).unwrap();
    let reg = Registry::start_with_token(&server).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = docker_config(tmp.path(), &reg.host(), USER, PASSWORD);
    let rt = rt();
    let reference = format!("{}/faults/app:v1", reg.host());
    {
        let store = store_with(&tmp.path().join("pub"), &config);
        let rootfs = tmp.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        fixtures::build_busybox_rootfs(&rootfs).unwrap();
        rt.block_on(store.import(
            &rootfs,
            &reference,
            &fixtures::busybox_changes(),
            Compression::Gzip,
        ))
        .unwrap();
        rt.block_on(store.push(&reference)).unwrap();
    }
    let pull_err = |name: &str, config: &Path| -> String {
        let s = store_with(&tmp.path().join(name), config);
        let e = rt
            .block_on(s.pull(&reference, QUIET))
            .unwrap_err()
            .to_string();
        eprintln!("{name}: {e}");
        assert!(s.images().unwrap().is_empty());
        assert_no_secret(&e, &server);
        e
    };

    // Wrong password: the token server refuses, the error names it and the user.
    let d = tmp.path().join("wrong");
    std::fs::create_dir_all(&d).unwrap();
    let wrong = docker_config(&d, &reg.host(), USER, "not-it");
    let e = pull_err("wrong", &wrong);
    assert!(e.contains(&server.realm()), "{e}");
    assert!(e.contains("user alice"), "{e}");
    assert!(!e.contains("not-it"), "{e}");

    server.set_mode(Mode::Error);
    let e = pull_err("e500", &config);
    assert!(e.contains(&server.realm()) && e.contains("500"), "{e}");

    server.set_mode(Mode::Garbage);
    let e = pull_err("garbage", &config);
    assert!(
        e.contains(&server.realm()) && e.contains("not a token response"),
        "{e}"
    );

    server.set_mode(Mode::WrongScope);
    let e = pull_err("scope", &config);
    assert!(e.contains(&reg.host()) && e.contains("401"), "{e}");
    assert!(
        e.contains("credentials tried: user alice from config.json auths"),
        "{e}"
    );

    // Back to normal: the same pull works.
    server.set_mode(Mode::Normal);
    let ok = store_with(&tmp.path().join("ok"), &config);
    rt.block_on(ok.pull(&reference, QUIET)).unwrap();
    assert_eq!(ok.images().unwrap().len(), 1);
}
