//! Logging in as Docker does, against a token-auth registry: the stock docker CLI's `login`
//! (the daemon validates with `POST /auth` and hands back an identity token) then `pull` of
//! a private lazy image (credentials in `X-Registry-Auth`, kept by the daemon for the lazy
//! reads and token renewals after the pull), `logout`; skiff's own `login`/`logout` with a
//! credential helper; the daemon's credential helper failures. No password or token in
//! any log, inspect output or error.

mod common;
mod registry_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::rt;
use registry_support::*;
use sha2::{Digest, Sha256};
use skiff_tests::docker_cli::docker_unavailable;
use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, Daemon, Registry, TokenServer};

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Runs `cmd` with `stdin` fed in; `(success, stdout, stderr)`.
fn run_with_stdin(cmd: &mut Command, stdin: &str) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A token-auth registry with the private lazy image `private/app:chunked` on it.
fn setup() -> (TokenServer, Registry, tempfile::TempDir, String) {
    let server = TokenServer::start(&[(USER, PASSWORD)]).unwrap();
    let reg = Registry::start_with_token(&server).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = docker_config(tmp.path(), &reg.host(), USER, PASSWORD);
    let publisher = store_with(&tmp.path().join("pub"), &config);
    let chunked = publish(&rt(), &reg, &publisher);
    std::fs::remove_file(&config).unwrap();
    (server, reg, tmp, chunked)
}

#[test]
fn docker_login_then_pull_of_a_private_lazy_image() {
    require!(
        "docker_login_then_pull_of_a_private_lazy_image",
        root_unavailable(),
        registry_unavailable(),
        docker_unavailable(),
        fixtures::busybox_unavailable()
    );
    let (server, reg, tmp, chunked) = setup();
    // The daemon has no credentials of its own.
    let daemon_config = tmp.path().join("daemon-docker-config");
    std::fs::create_dir_all(&daemon_config).unwrap();
    let mut d =
        Daemon::start_with_env(&[], &[("DOCKER_CONFIG", daemon_config.to_str().unwrap())]).unwrap();
    let client_config = tmp.path().join("client-docker-config");
    let socket = d.socket.clone();
    let docker = || {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", format!("unix://{}", socket.display()))
            .env("DOCKER_CONFIG", &client_config);
        c
    };

    // Not logged in: the pull is refused, naming the registry.
    let out = docker().args(["pull", &chunked]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        err.contains(&reg.host()) && err.contains("anonymous"),
        "{err}"
    );

    // Pulling with a wrong password (as X-Registry-Auth): refused, and not kept to spoil a
    // later anonymous pull of a public image.
    std::fs::create_dir_all(&client_config).unwrap();
    docker_config(&client_config, &reg.host(), USER, "wrong-password");
    let out = docker().args(["pull", &chunked]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        err.contains("token server") && err.contains("user alice"),
        "{err}"
    );
    assert!(!err.contains("wrong-password"), "{err}");
    std::fs::remove_file(client_config.join("config.json")).unwrap();
    server.set_anonymous_pull(true);
    // Short-lived: the daemon must not keep reading with this anonymous token below.
    server.set_lifetime(1, None);
    let out = docker().args(["pull", &chunked]).output().unwrap();
    assert!(
        out.status.success(),
        "anonymous pull of a public image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.set_anonymous_pull(false);
    server.set_lifetime(300, None);
    std::thread::sleep(Duration::from_millis(1200));

    // A wrong password: refused by the daemon's check, nothing stored.
    let (ok, _, err) = run_with_stdin(
        docker().args(["login", "-u", USER, "--password-stdin", &reg.host()]),
        "wrong-password\n",
    );
    assert!(!ok);
    assert!(
        err.contains("token server") && err.contains("user alice"),
        "{err}"
    );
    assert!(!err.contains("wrong-password"), "{err}");

    let (ok, out, err) = run_with_stdin(
        docker().args(["login", "-u", USER, "--password-stdin", &reg.host()]),
        &format!("{PASSWORD}\n"),
    );
    assert!(ok, "docker login: {out}{err}");
    assert!(out.contains("Login Succeeded"), "{out}");
    // The registry issued an identity token: the CLI keeps that, not the password.
    let stored = std::fs::read_to_string(client_config.join("config.json")).unwrap();
    assert!(stored.contains("identitytoken"), "{stored}");
    assert!(!stored.contains(PASSWORD), "{stored}");

    // Tokens the registry accepts for 3 s, so the reads after the pull must renew.
    server.set_lifetime(3, None);
    let out = docker().args(["pull", &chunked]).output().unwrap();
    assert!(
        out.status.success(),
        "docker pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_cat = |d: &Daemon, path: &str| -> String {
        let out = d
            .cli()
            .args(["run", "--rm", &chunked, "sha256sum", path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let one = run_cat(&d, "/data/one");
    assert!(
        one.contains(&sha(&fixtures::random_bytes(300 << 10, 1))),
        "{one}"
    );
    // Later: the token has expired; the daemon renews with the kept identity token.
    std::thread::sleep(Duration::from_millis(3500));
    let refreshes = |s: &TokenServer| {
        s.issued()
            .iter()
            .filter(|i| i.grant == "refresh_token" && i.status == 200)
            .count()
    };
    let before = refreshes(&server);
    let two = run_cat(&d, "/data/two");
    assert!(
        two.contains(&sha(&fixtures::random_bytes(300 << 10, 2))),
        "{two}"
    );
    assert!(refreshes(&server) > before, "{:?}", server.issued());

    // A restarted daemon still has them (kept 0600 in its data root).
    d.restart().unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    let before = refreshes(&server);
    let four = run_cat(&d, "/later/four");
    assert!(
        four.contains(&sha(&fixtures::random_bytes(300 << 10, 4))),
        "{four}"
    );
    assert!(refreshes(&server) > before, "{:?}", server.issued());
    use std::os::unix::fs::PermissionsExt as _;
    let kept = d.data_root.join("registry-credentials.json");
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Nothing holds a secret: the daemon's log, inspect, info.
    let inspect = docker()
        .args(["image", "inspect", &chunked])
        .output()
        .unwrap();
    let info = docker().args(["info"]).output().unwrap();
    for text in [
        d.log_text(),
        String::from_utf8_lossy(&inspect.stdout).into_owned(),
        String::from_utf8_lossy(&info.stdout).into_owned(),
    ] {
        assert_no_secret(&text, &server);
    }

    // Push with the identity token: exchanged for a push-scoped token.
    let pushed = format!("{}/private/pushed:v1", reg.host());
    skiff_tests::docker_cli::import_busybox(&d, &pushed, &[]);
    let out = docker().args(["push", &pushed]).output().unwrap();
    assert!(
        out.status.success(),
        "docker push: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        server.issued().iter().any(|i| i.grant == "refresh_token"
            && i.scopes == ["repository:private/pushed:pull,push"]
            && i.status == 200),
        "{:?}",
        server.issued()
    );
    assert_eq!(
        reg.get_status("/v2/private/pushed/manifests/v1").unwrap(),
        401,
        "the registry still wants a token"
    );
    let check = store_with(
        &tmp.path().join("check"),
        &docker_config(tmp.path(), &reg.host(), USER, PASSWORD),
    );
    rt().block_on(check.pull(&pushed, common::QUIET)).unwrap();

    let out = docker().args(["logout", &reg.host()]).output().unwrap();
    assert!(out.status.success());
    let stored = std::fs::read_to_string(client_config.join("config.json")).unwrap();
    assert!(!stored.contains(&reg.host()), "{stored}");

    // As with Docker, a pull after logout is refused: the credentials the daemon keeps
    // for the lazily pulled image's reads do not stand in for a client.
    let out = docker().args(["rmi", &chunked]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = docker().args(["pull", &chunked]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "pull after logout succeeded");
    assert!(err.contains("anonymous"), "{err}");
    // A wrong password is refused even though the daemon holds working access for the
    // repository, and it is not kept.
    docker_config(&client_config, &reg.host(), USER, "wrong-password");
    let out = docker().args(["pull", &chunked]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "pull with a wrong password succeeded"
    );
    assert!(err.contains("user alice"), "{err}");
    let kept_now = std::fs::read_to_string(&kept).unwrap();
    assert!(!kept_now.contains("wrong-password"), "wrong password kept");
}

/// A credential helper script keeping one secret per server in `dir`.
fn write_helper(dir: &std::path::Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn skiff_login_with_a_credential_helper_and_helper_failures() {
    require!(
        "skiff_login_with_a_credential_helper_and_helper_failures",
        root_unavailable(),
        registry_unavailable(),
        fixtures::busybox_unavailable()
    );
    let (server, reg, tmp, chunked) = setup();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let store_dir = tmp.path().join("helper-store");
    std::fs::create_dir_all(&store_dir).unwrap();
    // The docker-credential-helpers protocol, keeping secrets in files.
    write_helper(
        &bin,
        "skifftest",
        &format!(
            r#"D={dir}
case "$1" in
  store) cat > "$D/last.json"; echo stored >> "$D/calls" ;;
  get) read server; echo "get $server" >> "$D/calls"
       if [ -f "$D/last.json" ]; then cat "$D/last.json"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase) read server; echo "erase $server" >> "$D/calls"; rm -f "$D/last.json" ;;
esac
"#,
            dir = store_dir.display()
        ),
    );
    write_helper(&bin, "broken", "echo 'helper exploded' >&2; exit 3\n");
    write_helper(&bin, "garbage", "echo 'not json {'\n");
    write_helper(&bin, "hangs", "exec sleep 60\n");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let client_config = tmp.path().join("client");
    std::fs::create_dir_all(&client_config).unwrap();
    std::fs::write(
        client_config.join("config.json"),
        r#"{"credsStore": "skifftest"}"#,
    )
    .unwrap();
    let daemon_config = tmp.path().join("daemon");
    std::fs::create_dir_all(&daemon_config).unwrap();
    let d = Daemon::start_with_env(
        &[],
        &[
            ("DOCKER_CONFIG", daemon_config.to_str().unwrap()),
            ("PATH", &path),
        ],
    )
    .unwrap();
    let skiff = || {
        let mut c = d.cli();
        c.env("DOCKER_CONFIG", &client_config).env("PATH", &path);
        c
    };

    let (ok, out, err) = run_with_stdin(
        skiff().args(["login", "-u", USER, "--password-stdin", &reg.host()]),
        &format!("{PASSWORD}\n"),
    );
    assert!(ok, "skiff login: {out}{err}");
    assert!(out.contains("Login Succeeded"), "{out}");
    let kept = std::fs::read_to_string(store_dir.join("last.json")).unwrap();
    assert!(
        kept.contains("<token>") && kept.contains(&reg.host()),
        "{kept}"
    );
    let cfg = std::fs::read_to_string(client_config.join("config.json")).unwrap();
    assert!(
        !cfg.contains("auths"),
        "kept in the helper, not the file: {cfg}"
    );

    // The client asks the helper and sends the credentials along.
    let out = skiff().args(["pull", &chunked]).output().unwrap();
    assert!(
        out.status.success(),
        "pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read_to_string(store_dir.join("calls")).unwrap();
    assert!(calls.contains(&format!("get {}", reg.host())), "{calls}");

    let out = skiff().args(["logout", &reg.host()]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Removing login credentials"));
    assert!(!store_dir.join("last.json").exists());

    // A daemon whose own config names helpers that fail (and that holds no credentials a
    // client sent): clear errors naming the helper.
    assert_no_secret(&d.log_text(), &server);
    drop(d);
    let d = Daemon::start_with_env(
        &[],
        &[
            ("DOCKER_CONFIG", daemon_config.to_str().unwrap()),
            ("PATH", &path),
        ],
    )
    .unwrap();
    let other = format!("{}/other/app:v1", reg.host());
    for (helper, expect) in [
        ("broken", "helper exploded"),
        ("garbage", "not the JSON"),
        ("missing", "cannot run it"),
        ("hangs", "no answer within 10s"),
    ] {
        std::fs::write(
            daemon_config.join("config.json"),
            format!(r#"{{"credHelpers": {{"{}": "{helper}"}}}}"#, reg.host()),
        )
        .unwrap();
        let out = d.run(&["pull", &other]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success());
        assert!(
            err.contains(&format!("docker-credential-{helper} get failed")) && err.contains(expect),
            "{helper}: {err}"
        );
    }
    assert_no_secret(&d.log_text(), &server);
}
