//! Container healthchecks through the stock docker CLI: `--health-*` flags and a built
//! image's `HEALTHCHECK` run probes in the container; `State.Health`, `docker ps` STATUS,
//! `ps --filter health=` and `health_status` events follow dockerd; `NONE` disables.

use std::time::{Duration, Instant};

use skiff_tests::docker_cli::*;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon};

const IMAGE: &str = "127.0.0.1:5999/health:1";

fn status(d: &Daemon, name: &str) -> String {
    docker_ok(d, &["inspect", "-f", "{{.State.Health.Status}}", name])
        .trim()
        .to_string()
}

/// Waits (at most 10 s) until `name`'s health is `want`.
fn wait_for(d: &Daemon, name: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = status(d, name);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: health {now:?}, never {want:?}\n{}",
            docker_ok(d, &["inspect", "-f", "{{json .State.Health}}", name])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ps_status(d: &Daemon, name: &str) -> String {
    docker_ok(
        d,
        &[
            "ps",
            "-a",
            "--filter",
            &format!("name={name}"),
            "--format",
            "{{.Status}}",
        ],
    )
    .trim()
    .to_string()
}

fn ps_health(d: &Daemon, health: &str) -> Vec<String> {
    let mut v: Vec<String> = docker_ok(
        d,
        &[
            "ps",
            "--filter",
            &format!("health={health}"),
            "--format",
            "{{.Names}}",
        ],
    )
    .lines()
    .map(str::to_string)
    .collect();
    v.sort();
    v
}

#[test]
fn healthchecks_run_as_dockerd_runs_them() {
    require!(
        "healthchecks_run_as_dockerd_runs_them",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let t0 = chrono::Utc::now().timestamp().to_string();

    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "hc",
            "--health-cmd",
            "test -f /ok",
            "--health-interval",
            "1s",
            "--health-retries",
            "2",
            IMAGE,
            "sleep",
            "300",
        ],
    );
    // The first probe runs an interval after the start.
    assert_eq!(status(&d, "hc"), "starting");
    assert!(
        ps_status(&d, "hc").ends_with("(health: starting)"),
        "{}",
        ps_status(&d, "hc")
    );
    assert_eq!(ps_health(&d, "starting"), ["hc"]);
    let cfg = docker_ok(&d, &["inspect", "-f", "{{json .Config.Healthcheck}}", "hc"]);
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["Test"], serde_json::json!(["CMD-SHELL", "test -f /ok"]));
    assert_eq!(cfg["Interval"], 1_000_000_000i64);
    assert_eq!(cfg["Retries"], 2);

    // Two failing probes (exit 1) make it unhealthy.
    wait_for(&d, "hc", "unhealthy");
    let h = docker_ok(&d, &["inspect", "-f", "{{json .State.Health}}", "hc"]);
    let h: serde_json::Value = serde_json::from_str(&h).unwrap();
    assert_eq!(h["FailingStreak"], 2, "{h}");
    let log = h["Log"].as_array().unwrap();
    assert!(
        log.iter()
            .all(|e| e["ExitCode"] == 1 && e["Start"].is_string()),
        "{h}"
    );
    assert!(ps_status(&d, "hc").ends_with("(unhealthy)"));
    assert_eq!(ps_health(&d, "unhealthy"), ["hc"]);
    assert!(ps_health(&d, "healthy").is_empty());

    // A passing probe makes it healthy and clears the streak.
    docker_ok(&d, &["exec", "hc", "touch", "/ok"]);
    wait_for(&d, "hc", "healthy");
    assert_eq!(
        docker_ok(
            &d,
            &["inspect", "-f", "{{.State.Health.FailingStreak}}", "hc"]
        )
        .trim(),
        "0"
    );
    assert!(ps_status(&d, "hc").ends_with("(healthy)"));
    assert_eq!(ps_health(&d, "healthy"), ["hc"]);
    // Probes are not exec sessions of the container.
    assert_eq!(
        docker_ok(&d, &["inspect", "-f", "{{json .ExecIDs}}", "hc"]).trim(),
        "null"
    );

    // `--no-healthcheck` (`Test: ["NONE"]`) runs none; a container without one is `none`.
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "off",
            "--no-healthcheck",
            IMAGE,
            "sleep",
            "300",
        ],
    );
    docker_ok(&d, &["run", "-d", "--name", "plain", IMAGE, "sleep", "300"]);
    for name in ["off", "plain"] {
        assert_eq!(
            docker_ok(&d, &["inspect", "-f", "{{json .State.Health}}", name]).trim(),
            "null"
        );
        assert!(
            ps_status(&d, name).starts_with("Up"),
            "{}",
            ps_status(&d, name)
        );
        assert!(!ps_status(&d, name).contains("health"));
    }
    assert_eq!(ps_health(&d, "none"), ["off", "plain"]);

    // A built image's HEALTHCHECK applies; the request's fields override it.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {IMAGE}\nHEALTHCHECK --interval=1s --retries=1 CMD [\"false\"]\n"),
    )
    .unwrap();
    let out = docker(&d)
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", "hcimage:1"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    docker_ok(
        &d,
        &["run", "-d", "--name", "img", "hcimage:1", "sleep", "300"],
    );
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "imgover",
            "--health-cmd",
            "true",
            "hcimage:1",
            "sleep",
            "300",
        ],
    );
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "imgoff",
            "--no-healthcheck",
            "hcimage:1",
            "sleep",
            "300",
        ],
    );
    wait_for(&d, "img", "unhealthy");
    wait_for(&d, "imgover", "healthy");
    assert_eq!(
        docker_ok(&d, &["inspect", "-f", "{{json .State.Health}}", "imgoff"]).trim(),
        "null"
    );

    // A probe past its timeout is killed and fails with exit -1.
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "slow",
            "--health-cmd",
            "sleep 30",
            "--health-timeout",
            "300ms",
            "--health-interval",
            "500ms",
            "--health-retries",
            "1",
            IMAGE,
            "sleep",
            "300",
        ],
    );
    let t = Instant::now();
    wait_for(&d, "slow", "unhealthy");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let h = docker_ok(&d, &["inspect", "-f", "{{json .State.Health}}", "slow"]);
    let h: serde_json::Value = serde_json::from_str(&h).unwrap();
    assert_eq!(h["Log"][0]["ExitCode"], -1, "{h}");
    assert_eq!(
        h["Log"][0]["Output"], "Health check exceeded timeout (300ms)",
        "{h}"
    );

    // health_status events, in order, for the status changes.
    let t1 = (chrono::Utc::now().timestamp() + 1).to_string();
    let events = docker_ok(
        &d,
        &[
            "events",
            "--since",
            &t0,
            "--until",
            &t1,
            "--filter",
            "container=hc",
            "--format",
            "{{.Action}}",
        ],
    );
    let health: Vec<&str> = events
        .lines()
        .filter(|l| l.starts_with("health_status"))
        .collect();
    assert_eq!(
        health,
        ["health_status: unhealthy", "health_status: healthy"],
        "{events}"
    );

    // Probes stop with the container: the status is not shown once it exited.
    docker_ok(&d, &["stop", "-t", "0", "hc"]);
    assert!(
        ps_status(&d, "hc").starts_with("Exited"),
        "{}",
        ps_status(&d, "hc")
    );
    assert!(!ps_status(&d, "hc").contains("health"));
    // Inspect keeps the last health of a stopped container; a start begins at `starting`.
    assert_eq!(status(&d, "hc"), "healthy");
    docker_ok(&d, &["start", "hc"]);
    assert_eq!(status(&d, "hc"), "starting");
    wait_for(&d, "hc", "healthy");
    for name in ["hc", "off", "plain", "img", "imgover", "imgoff", "slow"] {
        docker_ok(&d, &["rm", "-f", name]);
    }
}

/// docker-compose 1.29's `healthcheck:` and `depends_on: condition: service_healthy`: `up`
/// starts the dependent service only once the first reports `healthy`.
#[test]
fn compose_waits_for_a_healthy_dependency() {
    require!(
        "compose_waits_for_a_healthy_dependency",
        root_unavailable(),
        docker_unavailable(),
        compose_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let t0 = chrono::Utc::now().timestamp().to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        format!(
            r#"version: "2.4"
services:
  db:
    image: {IMAGE}
    network_mode: none
    stop_grace_period: 1s
    command: ["sh", "-c", "sleep 1; touch /ready; sleep 300"]
    healthcheck:
      test: ["CMD", "test", "-f", "/ready"]
      interval: 300ms
      retries: 20
  app:
    image: {IMAGE}
    network_mode: none
    stop_grace_period: 1s
    command: ["sleep", "300"]
    depends_on:
      db:
        condition: service_healthy
"#
        ),
    )
    .unwrap();
    let compose = |args: &[&str]| {
        let out = std::process::Command::new("docker-compose")
            .args(["-p", "hc"])
            .args(args)
            .current_dir(dir.path())
            .env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "compose {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            d.log_text()
        );
    };
    compose(&["up", "-d"]);
    assert_eq!(status(&d, "hc_db_1"), "healthy");
    let cfg = docker_ok(
        &d,
        &["inspect", "-f", "{{json .Config.Healthcheck}}", "hc_db_1"],
    );
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(
        cfg["Test"],
        serde_json::json!(["CMD", "test", "-f", "/ready"])
    );
    assert_eq!(cfg["Interval"], 300_000_000i64);
    // app started after db's `health_status: healthy` event.
    let started = docker_ok(&d, &["inspect", "-f", "{{.State.StartedAt}}", "hc_app_1"]);
    let started = chrono::DateTime::parse_from_rfc3339(started.trim()).unwrap();
    let until = (chrono::Utc::now().timestamp() + 1).to_string();
    let events = docker_ok(
        &d,
        &[
            "events",
            "--since",
            &t0,
            "--until",
            &until,
            "--filter",
            "container=hc_db_1",
            "--format",
            "{{.Action}} {{.TimeNano}}",
        ],
    );
    let healthy_at: i64 = events
        .lines()
        .find_map(|l| l.strip_prefix("health_status: healthy "))
        .unwrap_or_else(|| panic!("no healthy event in {events}"))
        .parse()
        .unwrap();
    assert!(
        started.timestamp_nanos_opt().unwrap() >= healthy_at,
        "app started {started}, db healthy at {healthy_at} ns"
    );
    compose(&["down"]);
}
