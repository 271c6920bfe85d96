//! Bearer-token registries (Distribution's token authentication, as Docker Hub, GHCR, Quay,
//! Harbor use it): a real docker-registry that trusts a test token server's signing
//! certificate. Push, full pull, lazy pull, and lazy reads after the token expired, both
//! renewed ahead of expiry and after the registry refused it; token server faults; no
//! secret in any error.

mod common;
mod registry_support;

use std::path::Path;
use std::time::Duration;

use common::{rt, QUIET};
use registry_support::*;
use skiff_store::Compression;
use skiff_tests::registry::registry_unavailable;
use skiff_tests::token_server::Mode;
use skiff_tests::{fixtures, require, Registry, TokenServer};

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

    // Push and convert, asking the token server for push access.
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

    // The token server is down: unreachable, named as the token server.
    let realm = server.realm();
    drop(server);
    let s = store_with(&tmp.path().join("down"), &config);
    let started = std::time::Instant::now();
    let e = rt
        .block_on(s.pull(&reference, QUIET))
        .unwrap_err()
        .to_string();
    eprintln!("down ({:?}): {e}", started.elapsed());
    assert!(e.contains(&format!("token server {realm}")), "{e}");
    assert!(e.contains("unreachable"), "{e}");
}
