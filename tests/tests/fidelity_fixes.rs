//! What a fresh user of the stock docker CLI saw differ from dockerd, checked value for
//! value: `system df`'s layer accounting, volume and tag events, the pull/push/rmi lines,
//! and `--memory-swap` with dockerd's memory rules.

use std::process::Command;

use serde_json::Value;
use skiff_tests::docker_cli::*;
use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon, Registry};

/// Container `name`'s cgroup v1 `controller` file `file`, trimmed; `None` where that
/// hierarchy is not v1 (the tests then check the API side only).
fn cgroup_v1_value(d: &Daemon, name: &str, controller: &str, file: &str) -> Option<String> {
    let id = docker_ok(d, &["inspect", "-f", "{{.Id}}", name]);
    let v1 = std::path::Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("skiff")
        .join(id.trim())
        .join(file);
    v1.exists()
        .then(|| std::fs::read_to_string(&v1).unwrap().trim().to_string())
}

/// `GET path` on the daemon's socket, as JSON.
fn api(d: &Daemon, path: &str) -> Value {
    let out = Command::new("curl")
        .args(["-sf", "--unix-socket"])
        .arg(&d.socket)
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "GET {path}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `POST path` on the daemon's socket: the status and the body.
fn post(d: &Daemon, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-X", "POST", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&d.socket)
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, status) = text.trim_end().rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_string())
}

fn build(d: &Daemon, tag: &str, dockerfile: &str) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    d.ok(&["build", "-t", tag, ctx.path().to_str().unwrap()]);
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The events from `since` until now, as JSON objects.
fn events(d: &Daemon, since: u64) -> Vec<Value> {
    let until = (now() + 1).to_string();
    docker_ok(
        d,
        &[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until,
            "--format",
            "{{json .}}",
        ],
    )
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

#[test]
fn system_df_counts_each_layer_once_and_shared_sizes() {
    require!(
        "system_df_counts_each_layer_once_and_shared_sizes",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "dfbase:1", &[]);
    build(&d, "dfchild:1", "FROM dfbase:1\nRUN echo hi > /hi\n");
    build(&d, "dfother:1", "FROM dfbase:1\nRUN echo other > /other\n");
    let size = |name: &str| -> i64 {
        docker_ok(&d, &["image", "inspect", "-f", "{{.Size}}", name])
            .trim()
            .parse()
            .unwrap()
    };
    let (base, child, other) = (size("dfbase:1"), size("dfchild:1"), size("dfother:1"));
    assert!(child > base && other > base, "{base} {child} {other}");

    let df = api(&d, "/system/df");
    // The base layer once, plus each child's own layer.
    assert_eq!(
        df["LayersSize"].as_i64().unwrap(),
        base + (child - base) + (other - base),
        "{df:#}"
    );
    let images = df["Images"].as_array().unwrap();
    assert_eq!(images.len(), 3, "{df:#}");
    for i in images {
        let tag = i["RepoTags"][0].as_str().unwrap();
        // Every image shares exactly the base layer with the others.
        assert_eq!(i["SharedSize"].as_i64(), Some(base), "{tag}: {i}");
    }
    // Unrelated images share nothing.
    import_busybox(&d, "dfalone:1", &["LABEL alone=yes"]);
    let df = api(&d, "/system/df");
    let alone = df["Images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["RepoTags"][0] == "dfalone:1")
        .unwrap()
        .clone();
    // Imports of the same rootfs have the same layer: it is shared with the base.
    let alone_shared = alone["SharedSize"].as_i64().unwrap();
    assert!(alone_shared == 0 || alone_shared == base, "{alone}");
    assert_eq!(
        df["LayersSize"].as_i64().unwrap(),
        base + (child - base) + (other - base) + (size("dfalone:1") - alone_shared),
        "{df:#}"
    );
}

#[test]
fn volume_and_tag_events_as_dockerd() {
    require!(
        "volume_and_tag_events_as_dockerd",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "evimg:1", &[]);
    let since = now();
    docker_ok(
        &d,
        &[
            "run", "--rm", "--pull", "never", "--name", "evc", "-v", "anonv:/x", "evimg:1", "true",
        ],
    );
    docker_ok(&d, &["tag", "evimg:1", "bb:evtag"]);
    docker_ok(&d, &["rmi", "bb:evtag"]);
    let id = docker_ok(&d, &["image", "inspect", "-f", "{{.Id}}", "evimg:1"]);
    let id = id.trim();
    let all = events(&d, since);
    let find = |kind: &str, action: &str| -> Vec<&Value> {
        all.iter()
            .filter(|e| e["Type"] == kind && e["Action"] == action)
            .collect()
    };
    let container = find("container", "create")
        .into_iter()
        .find(|e| e["Actor"]["Attributes"]["name"] == "evc")
        .expect("container create event")["Actor"]["ID"]
        .as_str()
        .unwrap()
        .to_string();

    let create = find("volume", "create");
    assert_eq!(create.len(), 1, "{all:#?}");
    assert_eq!(create[0]["Actor"]["ID"], "anonv");
    assert_eq!(create[0]["Actor"]["Attributes"]["driver"], "local");
    let mount = find("volume", "mount");
    assert_eq!(mount.len(), 1, "{all:#?}");
    let attrs = &mount[0]["Actor"]["Attributes"];
    assert_eq!(mount[0]["Actor"]["ID"], "anonv");
    assert_eq!(attrs["container"], container.as_str());
    assert_eq!(attrs["destination"], "/x");
    assert_eq!(attrs["read/write"], "true");
    assert_eq!(attrs["driver"], "local");
    let unmount = find("volume", "unmount");
    assert_eq!(unmount.len(), 1, "{all:#?}");
    assert_eq!(unmount[0]["Actor"]["ID"], "anonv");
    assert_eq!(
        unmount[0]["Actor"]["Attributes"]["container"],
        container.as_str()
    );
    // The volume was made before the container was, and mounted before it started.
    let pos = |e: &Value| all.iter().position(|x| x == e).unwrap();
    let created = find("container", "create")[0];
    let started = find("container", "start")[0];
    assert!(pos(create[0]) < pos(created));
    assert!(pos(mount[0]) < pos(started));

    let tag = find("image", "tag");
    assert_eq!(tag.len(), 1, "{all:#?}");
    assert_eq!(tag[0]["Actor"]["ID"], id);
    assert_eq!(tag[0]["Actor"]["Attributes"]["name"], "bb:evtag");
    let untag = find("image", "untag");
    assert_eq!(untag.len(), 1, "{all:#?}");
    assert_eq!(untag[0]["Actor"]["ID"], id);
    assert_eq!(untag[0]["Actor"]["Attributes"]["name"], "bb:evtag");
}

#[test]
fn kill_stop_restart_and_attach_events_as_dockerd() {
    require!(
        "kill_stop_restart_and_attach_events_as_dockerd",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "evbb:1", &[]);
    let since = now();
    // A process that ends on SIGTERM once it says so; `sleep` as PID 1 ignores it.
    let obeys = "trap 'exit 0' TERM; echo ready; while :; do sleep 0.1; done";
    let ready = |name: &str| {
        for _ in 0..100 {
            if docker_ok(&d, &["logs", name]).contains("ready") {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("{name} never got ready");
    };
    // Foreground: the CLI attaches before it starts.
    docker_ok(&d, &["run", "--name", "ev1", "evbb:1", "true"]);
    docker_ok(&d, &["start", "-a", "ev1"]);
    docker_ok(
        &d,
        &["run", "-d", "--name", "ev2", "evbb:1", "sh", "-c", obeys],
    );
    ready("ev2");
    docker_ok(&d, &["stop", "ev2"]);
    docker_ok(
        &d,
        &["run", "-d", "--name", "ev3", "evbb:1", "sleep", "100"],
    );
    docker_ok(&d, &["stop", "-t", "1", "ev3"]);
    docker_ok(
        &d,
        &["run", "-d", "--name", "ev4", "evbb:1", "sh", "-c", obeys],
    );
    ready("ev4");
    docker_ok(&d, &["restart", "ev4"]);
    docker_ok(&d, &["kill", "ev4"]);
    // Restarting a stopped container only starts it.
    docker_ok(&d, &["restart", "ev3"]);
    docker_ok(&d, &["kill", "-s", "KILL", "ev3"]);
    // The kill's `die` comes from the exit, after the answer.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let all = events(&d, since);
    let of = |name: &str| -> Vec<String> {
        all.iter()
            .filter(|e| e["Type"] == "container" && e["Actor"]["Attributes"]["name"] == name)
            .map(|e| {
                let a = &e["Actor"]["Attributes"];
                let action = e["Action"].as_str().unwrap();
                match (a["signal"].as_str(), a["exitCode"].as_str()) {
                    (Some(s), _) => format!("{action} {s}"),
                    (_, Some(c)) => format!("{action} {c}"),
                    _ => action.to_string(),
                }
            })
            .collect()
    };
    assert_eq!(
        of("ev1"),
        ["create", "attach", "start", "die 0", "attach", "start", "die 0"]
    );
    assert_eq!(of("ev2"), ["create", "start", "kill 15", "die 0", "stop"]);
    assert_eq!(
        of("ev3"),
        [
            "create", "start", "kill 15", "kill 9", "die 137", "stop", "start", "restart",
            "kill 9", "die 137"
        ]
    );
    assert_eq!(
        of("ev4"),
        ["create", "start", "kill 15", "die 0", "stop", "start", "restart", "kill 9", "die 137"]
    );
}

#[test]
fn pull_push_and_rmi_lines_as_dockerd() {
    require!(
        "pull_push_and_rmi_lines_as_dockerd",
        root_unavailable(),
        registry_unavailable(),
        docker_unavailable()
    );
    let reg = Registry::start().unwrap();
    let d = Daemon::start().unwrap();
    let host = reg.host();
    let repo = format!("{host}/h15/bb2");
    import_busybox(&d, &format!("{repo}:v2"), &[]);

    // push: the last line has the manifest's size.
    let out = docker_ok(&d, &["push", &format!("{repo}:v2")]);
    let last = out.lines().last().unwrap();
    let manifest = Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
            &format!("http://{host}/v2/h15/bb2/manifests/v2"),
        ])
        .output()
        .unwrap();
    assert!(manifest.status.success());
    let digest = format!("sha256:{}", sha256_hex(&manifest.stdout));
    assert_eq!(
        last,
        format!("v2: digest: {digest} size: {}", manifest.stdout.len()),
        "{out}"
    );
    // skiff's own push prints the same line.
    let own = d.ok(&["push", &format!("{repo}:v2")]);
    assert_eq!(
        own.lines().last().unwrap(),
        format!("v2: digest: {digest} size: {}", manifest.stdout.len()),
        "{own}"
    );

    // pull by digest: the digest names the pull.
    docker_ok(&d, &["rmi", &format!("{repo}:v2")]);
    let by_digest = format!("{repo}@{digest}");
    let out = docker_ok(&d, &["pull", &by_digest]);
    assert_eq!(
        out.lines().next().unwrap(),
        format!("{digest}: Pulling from h15/bb2"),
        "{out}"
    );

    // A missing tag or repository: dockerd's error status and message, before any
    // progress line (dockerd resolves the manifest before its 200).
    for missing in [format!("{repo}:nosuchtag"), format!("{host}/h15/nosuch:v1")] {
        let want = format!("manifest for {missing} not found: manifest unknown: manifest unknown");
        let out = docker_run(&d, &["pull", &missing]);
        assert_eq!(out.status.code(), Some(1));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stdout, "", "{stdout}");
        assert_eq!(
            stderr.trim(),
            format!("Error response from daemon: {want}"),
            "{stderr}"
        );
        let (name, tag) = missing.rsplit_once(':').unwrap();
        let (status, body) = post(&d, &format!("/images/create?fromImage={name}&tag={tag}"));
        assert_eq!(status, 404, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            serde_json::json!({ "message": want })
        );
        let own = d.run(&["pull", &missing]);
        assert_eq!(own.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&own.stdout), "");
        assert!(
            String::from_utf8_lossy(&own.stderr).contains(&want),
            "{}",
            String::from_utf8_lossy(&own.stderr)
        );
        // `run` pulls the missing image first: the same error, exit 125.
        let out = docker_run(&d, &["run", "--rm", &missing, "true"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{stderr}");
        assert!(
            stderr.contains(&format!("docker: Error response from daemon: {want}")),
            "{stderr}"
        );
    }
    // Any other failure before the stream began is a 500 with the pull's error.
    let (status, body) = post(&d, "/images/create?fromImage=127.0.0.1:1/h15/x&tag=v1");
    assert_eq!(status, 500, "{body}");
    let message = serde_json::from_str::<Value>(&body).unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    // A pull that streams still answers 200 with its lines.
    let (status, body) = post(&d, &format!("/images/create?fromImage={repo}&tag=v2"));
    assert_eq!(status, 200, "{body}");
    let first: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(first["status"], "Pulling from h15/bb2", "{body}");
    assert!(body.contains(&format!("Digest: {digest}")), "{body}");

    // rmi: familiar names (a third tag keeps the image, so only the untagging shows).
    docker_ok(&d, &["tag", &by_digest, "bb1:keep"]);
    docker_ok(&d, &["tag", &by_digest, "bb1:extra"]);
    docker_ok(&d, &["tag", &by_digest, "bb1:extra2"]);
    let out = docker_ok(&d, &["rmi", "bb1:extra"]);
    assert_eq!(out.trim(), "Untagged: bb1:extra");
    let out = d.ok(&["rmi", "bb1:extra2"]);
    assert_eq!(out.trim(), "Untagged: bb1:extra2");
}

fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn memory_swap_and_minimum_memory_as_dockerd() {
    require!(
        "memory_swap_and_minimum_memory_as_dockerd",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "memimg:1", &[]);
    let inspect = |field: &str| -> String {
        docker_ok(&d, &["inspect", "-f", field, "m1"])
            .trim()
            .to_string()
    };
    // The container's own cgroup file (v1 memory+swap, v2 swap alone).
    let cg = |v1: &str, v2: &str| -> String {
        docker_ok(
            &d,
            &[
                "exec",
                "m1",
                "sh",
                "-c",
                &format!("cat /sys/fs/cgroup/{v2} 2>/dev/null || cat /sys/fs/cgroup/memory/{v1}"),
            ],
        )
        .trim()
        .to_string()
    };
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    docker_ok(
        &d,
        &[
            "run", "-d", "--pull", "never", "--name", "m1", "-m", "32m", "memimg:1", "sleep", "300",
        ],
    );
    assert_eq!(inspect("{{.HostConfig.Memory}}"), "33554432");
    assert_eq!(inspect("{{.HostConfig.MemorySwap}}"), "67108864");
    let swap_file = ("memory.memsw.limit_in_bytes", "memory.swap.max");
    if !v2 {
        assert_eq!(cg(swap_file.0, swap_file.1), "67108864");
    }

    docker_ok(
        &d,
        &["update", "--memory", "64m", "--memory-swap", "128m", "m1"],
    );
    assert_eq!(inspect("{{.HostConfig.Memory}}"), "67108864");
    assert_eq!(inspect("{{.HostConfig.MemorySwap}}"), "134217728");
    assert_eq!(cg("memory.limit_in_bytes", "memory.max"), "67108864");
    assert_eq!(
        cg(swap_file.0, swap_file.1),
        if v2 { "67108864" } else { "134217728" }
    );
    // Lowering both at once.
    docker_ok(
        &d,
        &["update", "--memory", "16m", "--memory-swap", "24m", "m1"],
    );
    assert_eq!(cg("memory.limit_in_bytes", "memory.max"), "16777216");
    assert_eq!(
        cg(swap_file.0, swap_file.1),
        if v2 { "8388608" } else { "25165824" }
    );
    // -1: unlimited swap.
    docker_ok(&d, &["update", "--memory-swap", "-1", "m1"]);
    assert_eq!(inspect("{{.HostConfig.MemorySwap}}"), "-1");
    let unlimited = cg(swap_file.0, swap_file.1);
    assert!(
        unlimited == "max" || unlimited.parse::<u64>().unwrap() > 1 << 60,
        "{unlimited}"
    );

    // dockerd's refusals, with its words.
    let refused = |args: &[&str], needle: &str| {
        let out = docker_run(&d, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    refused(
        &["update", "--memory", "64m", "--memory-swap", "32m", "m1"],
        "Minimum memoryswap limit should be larger than memory limit, see usage",
    );
    refused(
        &["update", "--memory", "1k", "m1"],
        "Minimum memory limit allowed is 6MB",
    );
    docker_refused(
        &d,
        &["run", "--pull", "never", "-m", "1k", "memimg:1", "true"],
        "Minimum memory limit allowed is 6MB",
    );
    docker_refused(
        &d,
        &[
            "run",
            "--pull",
            "never",
            "-m",
            "32m",
            "--memory-swap",
            "16m",
            "memimg:1",
            "true",
        ],
        "Minimum memoryswap limit should be larger than memory limit, see usage",
    );
    // A memory limit above the memory+swap limit needs a new one of that too.
    docker_ok(
        &d,
        &["update", "--memory", "32m", "--memory-swap", "64m", "m1"],
    );
    refused(
        &["update", "--memory", "128m", "m1"],
        "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time",
    );
    assert_eq!(inspect("{{.HostConfig.Memory}}"), "33554432");
    // The limits survive a restart.
    docker_ok(&d, &["restart", "-t", "0", "m1"]);
    assert_eq!(cg("memory.limit_in_bytes", "memory.max"), "33554432");
    if !v2 {
        assert_eq!(cg(swap_file.0, swap_file.1), "67108864");
    }
    // This host's cgroups limit swap: /info says so.
    if !v2 && std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
        let info = api(&d, "/info");
        assert_eq!(info["SwapLimit"], true, "{info}");
    }
    docker_ok(&d, &["rm", "-f", "m1"]);
}

/// The Python SDK's foreground `run(..., auto_remove=True)` inspects the container after
/// asking for its logs, and does not wait for the removal. A container nobody waits on with
/// `condition=removed` is left that moment (as dockerd's slower removal does), then goes;
/// and a request that still comes late gets a 404, never a 500 from a half-removed one.
#[test]
fn sdk_foreground_auto_remove_runs_and_leaves_nothing() {
    require!(
        "sdk_foreground_auto_remove_runs_and_leaves_nothing",
        root_unavailable(),
        sdk_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "fid/race:1", &[]);
    let (ok, out) = python_sdk(
        &d,
        r#"
import docker, time
c = docker.from_env()
for i in range(20):
    assert c.containers.run("fid/race:1", "sh -c 'echo ar'", auto_remove=True) == b"ar\n"
# The raw list: `containers.list` inspects each one, which races the removals it waits for.
deadline = time.time() + 10
while c.api.containers(all=True) and time.time() < deadline:
    time.sleep(0.1)
print("left", len(c.api.containers(all=True)))
"#,
    );
    assert!(ok, "{out}");
    assert!(out.contains("left 0"), "{out}");
    // `docker run --rm` waits for the removal: no grace, gone when the CLI returns.
    docker_ok(
        &d,
        &["run", "--rm", "--name", "quick", "fid/race:1", "true"],
    );
    let out = docker_run(&d, &["inspect", "quick"]);
    assert_eq!(out.status.code(), Some(1));
}

/// `rmi` of an image by id is refused in dockerd's words: a running container's image
/// cannot be forced, a stopped one's must be, and so must an image with several tags.
#[test]
fn rmi_by_id_conflicts_as_dockerd() {
    require!(
        "rmi_by_id_conflicts_as_dockerd",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "fid/rmi:1", &[]);
    docker_ok(&d, &["tag", "fid/rmi:1", "fid/rmi:2"]);
    let id = docker_ok(&d, &["image", "inspect", "-f", "{{.Id}}", "fid/rmi:1"]);
    let short = id.trim().trim_start_matches("sha256:")[..12].to_string();
    let refused = |args: &[&str]| {
        let out = docker_run(&d, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(&["rmi", &short]);
    assert!(
        err.contains(&format!("conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories")),
        "{err}"
    );
    let running = docker_ok(&d, &["run", "-d", "fid/rmi:1", "sleep", "60"]);
    let running = &running.trim()[..12];
    let err = refused(&["rmi", "-f", &short]);
    assert!(
        err.contains(&format!("conflict: unable to delete {short} (cannot be forced) - image is being used by running container {running}")),
        "{err}"
    );
    docker_ok(&d, &["rm", "-f", running]);
    let stopped = docker_ok(&d, &["create", "fid/rmi:1", "true"]);
    let stopped = &stopped.trim()[..12];
    let err = refused(&["rmi", &short]);
    assert!(
        err.contains(&format!("conflict: unable to delete {short} (must be forced) - image is being used by stopped container {stopped}")),
        "{err}"
    );
    // Forced: both tags go, and the image.
    let out = docker_ok(&d, &["rmi", "-f", &short]);
    assert!(
        out.contains("Untagged: fid/rmi:1") && out.contains("Untagged: fid/rmi:2"),
        "{out}"
    );
    assert!(out.contains(&format!("Deleted: {}", id.trim())), "{out}");
    docker_ok(&d, &["rm", "-f", stopped]);
}

/// `--cpu-shares` (compose's `cpu_shares`) is applied: cgroup v1 `cpu.shares`, inspect's
/// `HostConfig.CpuShares`, and the skiff CLI's `-c`.
#[test]
fn cpu_shares_are_applied() {
    require!(
        "cpu_shares_are_applied",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "fid/cpu:1", &[]);
    let shares_of = |name: &str| cgroup_v1_value(&d, name, "cpu", "cpu.shares");
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "cw",
            "--cpu-shares",
            "300",
            "fid/cpu:1",
            "sleep",
            "60",
        ],
    );
    assert_eq!(
        docker_ok(&d, &["inspect", "-f", "{{.HostConfig.CpuShares}}", "cw"]).trim(),
        "300"
    );
    if let Some(v) = shares_of("cw") {
        assert_eq!(v, "300");
    }
    let out = d.run(&[
        "run",
        "-d",
        "--name",
        "cs",
        "-c",
        "700",
        "fid/cpu:1",
        "sleep",
        "60",
    ]);
    assert!(out.status.success(), "{out:?}");
    if let Some(v) = shares_of("cs") {
        assert_eq!(v, "700");
    }
    d.ok(&["update", "--cpu-shares", "900", "cs"]);
    if let Some(v) = shares_of("cs") {
        assert_eq!(v, "900");
    }
    docker_ok(&d, &["rm", "-f", "cw", "cs"]);
}

/// Published host ports are bound at start, not at create, as dockerd's: two containers
/// may be created with the same port, the second start fails in dockerd's words and leaves
/// the container `created`, and a `run --rm` that cannot bind leaves nothing.
#[test]
fn busy_host_port_fails_the_start_not_the_create() {
    require!(
        "busy_host_port_fails_the_start_not_the_create",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "fid/port:1", &[]);
    let port = skiff_tests::registry::free_port().unwrap();
    let publish = format!("127.0.0.1:{port}:80");
    for name in ["pa", "pb"] {
        docker_ok(
            &d,
            &[
                "create",
                "--name",
                name,
                "-p",
                &publish,
                "fid/port:1",
                "sleep",
                "300",
            ],
        );
    }
    // Created, not started: the port is not held.
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("a created container holds its port");
    docker_ok(&d, &["start", "pa"]);
    docker_fails(
        &d,
        &["start", "pb"],
        1,
        &format!("Bind for 127.0.0.1:{port} failed: port is already allocated"),
    );
    assert_eq!(
        docker_ok(
            &d,
            &[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.ExitCode}} {{.State.Error}}",
                "pb"
            ]
        ),
        format!(
            "created 128 driver failed programming external connectivity: \
             Bind for 127.0.0.1:{port} failed: port is already allocated\n"
        )
    );
    let out = docker_run(
        &d,
        &[
            "run",
            "--rm",
            "--name",
            "pc",
            "-p",
            &publish,
            "fid/port:1",
            "true",
        ],
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert_eq!(docker_run(&d, &["inspect", "pc"]).status.code(), Some(1));
    // A port another process holds is dockerd's "address already in use", not "allocated".
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = holder.local_addr().unwrap().port();
    docker_refused(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "pd",
            "-p",
            &format!("127.0.0.1:{held}:80"),
            "fid/port:1",
            "true",
        ],
        &format!("failed to bind host port for 127.0.0.1:{held}/tcp: address already in use"),
    );
    docker_ok(&d, &["rm", "pd"]);
    // Freed by the first, the port is the second's.
    docker_ok(&d, &["rm", "-f", "pa"]);
    docker_ok(&d, &["start", "pb"]);
    assert_eq!(
        docker_ok(&d, &["inspect", "-f", "{{.State.Error}}", "pb"]),
        "\n"
    );
    assert_eq!(
        docker_ok(&d, &["port", "pb", "80"]),
        format!("127.0.0.1:{port}\n")
    );
    docker_ok(&d, &["rm", "-f", "pb"]);
}

/// An unknown user fails the start, not the create, as dockerd resolves it at start.
#[test]
fn unknown_user_fails_the_start_not_the_create() {
    require!(
        "unknown_user_fails_the_start_not_the_create",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "fid/user:1", &[]);
    docker_ok(
        &d,
        &[
            "create",
            "--name",
            "nu",
            "-u",
            "nosuchuser",
            "fid/user:1",
            "id",
        ],
    );
    docker_fails(
        &d,
        &["start", "nu"],
        1,
        "unable to find user nosuchuser: no matching entries in passwd file",
    );
    assert_eq!(
        docker_ok(&d, &["inspect", "-f", "{{.State.Status}}", "nu"]),
        "created\n"
    );
    let out = docker_run(
        &d,
        &[
            "run",
            "--rm",
            "--name",
            "nu2",
            "-u",
            "nosuchuser",
            "fid/user:1",
            "id",
        ],
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert_eq!(docker_run(&d, &["inspect", "nu2"]).status.code(), Some(1));
    // A known one runs.
    assert_eq!(
        docker_ok(
            &d,
            &["run", "--rm", "-u", "nobody", "fid/user:1", "id", "-u"]
        ),
        "65534\n"
    );
    docker_ok(&d, &["rm", "nu"]);
}

/// `--memory-reservation` (compose's `mem_reservation`) is applied as the cgroup's soft
/// limit, updated by `update`, and checked as dockerd checks it.
#[test]
fn memory_reservation_is_applied() {
    require!(
        "memory_reservation_is_applied",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "fid/mr:1", &[]);
    let soft_limit = |name: &str| cgroup_v1_value(&d, name, "memory", "memory.soft_limit_in_bytes");
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "mr",
            "--memory-reservation",
            "32m",
            "fid/mr:1",
            "sleep",
            "60",
        ],
    );
    assert_eq!(
        docker_ok(
            &d,
            &["inspect", "-f", "{{.HostConfig.MemoryReservation}}", "mr"]
        ),
        "33554432\n"
    );
    if let Some(v) = soft_limit("mr") {
        assert_eq!(v, "33554432");
    }
    d.ok(&["update", "--memory-reservation", "48m", "mr"]);
    assert_eq!(
        docker_ok(
            &d,
            &["inspect", "-f", "{{.HostConfig.MemoryReservation}}", "mr"]
        ),
        "50331648\n"
    );
    if let Some(v) = soft_limit("mr") {
        assert_eq!(v, "50331648");
    }
    docker_refused(
        &d,
        &[
            "run",
            "--rm",
            "--memory-reservation",
            "1m",
            "fid/mr:1",
            "true",
        ],
        "Minimum memory reservation allowed is 6MB",
    );
    docker_refused(
        &d,
        &[
            "run",
            "--rm",
            "-m",
            "16m",
            "--memory-reservation",
            "32m",
            "fid/mr:1",
            "true",
        ],
        "Minimum memory limit can not be less than memory reservation limit, see usage",
    );
    docker_ok(&d, &["rm", "-f", "mr"]);
}
