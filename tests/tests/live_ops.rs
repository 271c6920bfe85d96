//! Endpoints on live containers through the stock docker CLI, the Python SDK and skiff's
//! own CLI: rename, pause/unpause (cgroup freezer), top, stats, update.

use std::process::Command;

use skiff_tests::docker_cli::*;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon};

const IMAGE: &str = "127.0.0.1:5999/ops:1";

/// `State` of the process `pid` from /proc (`S`, `R`, `D`...), as the host sees it.
fn frozen_state(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn docker_cli_rename_pause_top_stats_update() {
    require!(
        "docker_cli_rename_pause_top_stats_update",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--pull",
            "never",
            "--name",
            "old",
            IMAGE,
            "sh",
            "-c",
            "while true; do echo tick >> /tmp/ticks; sleep 0.1; done",
        ],
    );
    // rename
    docker_ok(&d, &["rename", "old", "new"]);
    assert_eq!(
        docker_ok(&d, &["ps", "--format", "{{.Names}}"]).trim(),
        "new"
    );
    assert!(!docker_run(&d, &["inspect", "old"]).status.success());
    docker_ok(
        &d,
        &[
            "create", "--pull", "never", "--name", "other", IMAGE, "true",
        ],
    );
    let out = docker_run(&d, &["rename", "new", "other"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is already in use"));

    // top, with and without ps options
    let top = docker_ok(&d, &["top", "new"]);
    assert!(top.lines().next().unwrap().contains("PID"), "{top}");
    assert!(top.contains("while true"), "{top}");
    assert!(
        !top.contains("dockerd") && !top.contains("skiff daemon"),
        "{top}"
    );
    let top = docker_ok(&d, &["top", "new", "-o", "pid,comm"]);
    assert_eq!(
        top.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["PID", "COMMAND"]
    );
    assert!(top.lines().any(|l| l.trim_end().ends_with(" sh")), "{top}");

    // pause: the processes are frozen (the log stops growing), ps and inspect say so
    let pid = docker_ok(&d, &["inspect", "-f", "{{.State.Pid}}", "new"]);
    docker_ok(&d, &["pause", "new"]);
    assert_eq!(
        docker_ok(
            &d,
            &[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.Paused}}",
                "new"
            ]
        )
        .trim(),
        "paused true"
    );
    assert!(docker_ok(&d, &["ps", "--format", "{{.Status}}"]).contains("(Paused)"));
    assert_eq!(
        docker_ok(&d, &["ps", "-q", "--filter", "status=paused"])
            .lines()
            .count(),
        1
    );
    let st = frozen_state(pid.trim());
    assert!(st.starts_with('D') || st.starts_with('S'), "{st}");
    let count = || docker_ok(&d, &["exec", "new", "wc", "-l", "/tmp/ticks"]);
    let out = docker_run(&d, &["pause", "new"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is already paused"));
    let out = docker_run(&d, &["exec", "new", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unpause the container before exec"));
    docker_ok(&d, &["unpause", "new"]);
    let a = count();
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_ne!(a, count(), "ticking again after unpause");
    let out = docker_run(&d, &["unpause", "new"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not paused"));

    // stats --no-stream
    let stats = docker_ok(
        &d,
        &[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.MemUsage}} {{.PIDs}}",
            "new",
        ],
    );
    let f: Vec<&str> = stats.split_whitespace().collect();
    assert_eq!(f[0], "new", "{stats}");
    assert!(f[1].ends_with("B") || f[1].ends_with("iB"), "{stats}");
    assert!(f.last().unwrap().parse::<u32>().unwrap() >= 1, "{stats}");

    // update --memory: applied live and shown by inspect; unsupported options refused
    docker_ok(
        &d,
        &["update", "--memory", "64m", "--memory-swap", "64m", "new"],
    );
    assert_eq!(
        docker_ok(&d, &["inspect", "-f", "{{.HostConfig.Memory}}", "new"]).trim(),
        (64u64 << 20).to_string()
    );
    let stats = docker_ok(
        &d,
        &["stats", "--no-stream", "--format", "{{.MemUsage}}", "new"],
    );
    assert!(stats.trim().ends_with("/ 64MiB"), "{stats}");
    docker_ok(&d, &["update", "--restart", "always", "new"]);
    assert_eq!(
        docker_ok(
            &d,
            &["inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", "new"]
        )
        .trim(),
        "always"
    );
    // --cpu-shares is applied (cgroup v1 cpu.shares here), a field skiff lacks is refused.
    docker_ok(&d, &["update", "--cpu-shares", "512", "new"]);
    assert_eq!(
        docker_ok(&d, &["inspect", "-f", "{{.HostConfig.CpuShares}}", "new"]).trim(),
        "512"
    );
    let id = docker_ok(&d, &["inspect", "-f", "{{.Id}}", "new"]);
    let shares = std::path::Path::new("/sys/fs/cgroup/cpu/skiff")
        .join(id.trim())
        .join("cpu.shares");
    if shares.exists() {
        assert_eq!(std::fs::read_to_string(&shares).unwrap().trim(), "512");
    }
    let out = docker_run(&d, &["update", "--blkio-weight", "500", "new"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("BlkioWeight is not supported"));

    // skiff's own commands of the same names
    d.ok(&["rename", "new", "renamed"]);
    d.ok(&["pause", "renamed"]);
    d.ok(&["unpause", "renamed"]);
    assert!(d.ok(&["top", "renamed"]).contains("PID"));
    // docker stats' columns, aligned, memory in binary units.
    let stats = d.ok(&["stats", "--no-stream", "renamed"]);
    let lines: Vec<&str> = stats.lines().collect();
    assert_eq!(lines.len(), 2, "{stats}");
    for col in [
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ] {
        let at = lines[0]
            .find(col)
            .unwrap_or_else(|| panic!("{col}: {stats}"));
        assert!(
            lines[1].len() > at && !lines[1][at..].starts_with(' '),
            "{col} not aligned: {stats}"
        );
    }
    assert!(
        lines[1].contains("renamed") && lines[1].contains("iB / "),
        "{stats}"
    );
    d.ok(&["update", "--pids-limit", "50", "renamed"]);
    assert_eq!(
        docker_ok(
            &d,
            &["inspect", "-f", "{{.HostConfig.PidsLimit}}", "renamed"]
        )
        .trim(),
        "50"
    );
    docker_ok(&d, &["pause", "renamed"]);
    // A paused container still stops and goes.
    docker_ok(&d, &["rm", "-f", "renamed", "other"]);
}

#[test]
fn python_sdk_stats_and_top() {
    require!(
        "python_sdk_stats_and_top",
        root_unavailable(),
        sdk_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let (ok, out) = python_sdk(
        &d,
        &format!(
            r#"
import docker
c = docker.from_env()
ct = c.containers.run("{IMAGE}", ["sleep", "300"], detach=True, name="sdk")
s = ct.stats(stream=False)
print(s["name"], s["memory_stats"]["usage"] > 0, s["cpu_stats"]["system_cpu_usage"] > 0, s["precpu_stats"]["system_cpu_usage"] > 0, "eth0" in s["networks"], s["pids_stats"]["current"])
t = ct.top()
print(t["Titles"][:2], [p for p in t["Processes"] if "sleep 300" in p[-1]] != [])
it = ct.stats(decode=True)
print(next(it)["name"])
ct.remove(force=True)
"#
        ),
    );
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["/sdk True True True True 1", "['UID', 'PID'] True", "/sdk"],
        "{out}"
    );
}

/// The whole disk (`major:minor`) holding `path`: blk-throttle rules name disks, not
/// partitions.
fn disk_of(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).unwrap().dev();
    let node = format!(
        "{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    let sys = std::path::PathBuf::from(format!("/sys/dev/block/{node}"));
    if sys.join("partition").exists() {
        std::fs::read_to_string(sys.join("../dev"))
            .unwrap()
            .trim()
            .to_string()
    } else {
        node
    }
}

/// `stats` fills `blkio_stats` from the container's blkio cgroup (v1) in Docker's shape:
/// per device and op (`Read`, `Write`, `Sync`, `Async`, `Total`), bytes and operations.
///
/// Kernels since 5.x count v1 block I/O per cgroup only for devices with a throttle rule
/// (Docker shows empty lists there too), so the test sets a rule far above anything the
/// write reaches on the container's own cgroup, as `--device-write-bps` would, before the
/// container writes 1 MiB with O_DIRECT.
#[test]
fn stats_blkio_counts_direct_writes() {
    require!(
        "stats_blkio_counts_direct_writes",
        root_unavailable(),
        docker_unavailable(),
        sdk_unavailable(),
        (!std::path::Path::new("/sys/fs/cgroup/blkio").is_dir()).then(|| {
            "no cgroup v1 blkio hierarchy (cgroup v2 io.stat is read instead)".to_string()
        })
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    docker_ok(
        &d,
        &[
            "run", "-d", "--pull", "never", "--name", "io", IMAGE, "sleep", "300",
        ],
    );
    let pid = docker_ok(&d, &["inspect", "-f", "{{.State.Pid}}", "io"]);
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", pid.trim())).unwrap();
    let rel = cgroup
        .lines()
        .find_map(|l| l.split_once(":blkio:").map(|(_, p)| p.to_string()))
        .expect("the container is in a blkio cgroup");
    assert_ne!(rel, "/", "the container has a blkio cgroup of its own");
    let dir = std::path::Path::new("/sys/fs/cgroup/blkio").join(rel.trim_start_matches('/'));
    let disk = disk_of(&d.data_root);
    std::fs::write(
        dir.join("blkio.throttle.write_bps_device"),
        format!("{disk} 100000000000"),
    )
    .unwrap();
    docker_ok(
        &d,
        &[
            "exec",
            "io",
            "dd",
            "if=/dev/zero",
            "of=/tmp/direct",
            "bs=4096",
            "count=256",
            "oflag=direct",
        ],
    );
    let (ok, out) = python_sdk(
        &d,
        r#"
import docker
b = docker.from_env().containers.get("io").stats(stream=False)["blkio_stats"]
for key in ("io_service_bytes_recursive", "io_serviced_recursive"):
    ops = {e["op"]: e["value"] for e in b[key]}
    # (newer kernels add "Discard")
    print(key, sorted(set(ops) - {"Discard"}), ops["Write"] >= (1 << 20 if "bytes" in key else 1))
    print(all(set(e) == {"major", "minor", "op", "value"} for e in b[key]))
"#,
    );
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "io_service_bytes_recursive ['Async', 'Read', 'Sync', 'Total', 'Write'] True",
            "True",
            "io_serviced_recursive ['Async', 'Read', 'Sync', 'Total', 'Write'] True",
            "True",
        ],
        "{out}"
    );
    let block = docker_ok(
        &d,
        &["stats", "--no-stream", "--format", "{{.BlockIO}}", "io"],
    );
    assert!(block.trim().ends_with("MB"), "BLOCK I/O column: {block}");
    docker_ok(&d, &["rm", "-f", "io"]);
}

/// `docker events --since T0 --until T1 --format FORMAT EXTRA...`'s output.
fn events_between(d: &Daemon, t0: &str, t1: &str, format: &str, extra: &[&str]) -> String {
    let mut a = vec!["events", "--since", t0, "--until", t1, "--format", format];
    a.extend_from_slice(extra);
    docker_ok(d, &a)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn events_since_until_filters_and_streaming() {
    require!(
        "events_since_until_filters_and_streaming",
        root_unavailable(),
        docker_unavailable(),
        sdk_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let t0 = format!("{:.3}", unix_now());
    docker_ok(
        &d,
        &[
            "run", "--pull", "never", "--name", "ev", "--label", "team=a", IMAGE, "true",
        ],
    );
    docker_ok(&d, &["rename", "ev", "ev2"]);
    docker_ok(&d, &["rm", "ev2"]);
    // `rm -f` of a running container: kill (SIGKILL), die (137), destroy, as dockerd.
    docker_ok(
        &d,
        &[
            "run", "-d", "--pull", "never", "--name", "evf", IMAGE, "sleep", "30",
        ],
    );
    docker_ok(&d, &["rm", "-f", "evf"]);
    docker_ok(&d, &["tag", IMAGE, "127.0.0.1:5999/ops:ev"]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let t1 = format!("{:.3}", unix_now());
    let events = |extra: &[&str]| {
        events_between(
            &d,
            &t0,
            &t1,
            "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
            extra,
        )
    };
    assert_eq!(
        events(&["--filter", "type=container"]),
        "container create ev\ncontainer attach ev\ncontainer start ev\ncontainer die ev\ncontainer rename ev2\ncontainer destroy ev2\n\
         container create evf\ncontainer start evf\ncontainer kill evf\ncontainer die evf\ncontainer destroy evf\n"
    );
    assert_eq!(
        docker_ok(
            &d,
            &[
                "events",
                "--since",
                &t0,
                "--until",
                &t1,
                "--filter",
                "container=evf",
                "--filter",
                "event=kill",
                "--filter",
                "event=die",
                "--format",
                "{{.Action}} {{index .Actor.Attributes \"signal\"}}{{index .Actor.Attributes \"exitCode\"}}",
            ],
        ),
        "kill 9\ndie 137\n"
    );
    assert_eq!(
        events(&["--filter", "event=die", "--filter", "label=team=a"]),
        "container die ev\n"
    );
    assert_eq!(
        events(&["--filter", "type=image"]),
        "image tag 127.0.0.1:5999/ops:ev\n"
    );
    // The containers' network: connect at start, disconnect after it exited (dockerd's).
    assert_eq!(
        events(&["--filter", "network=bridge"]),
        "network connect bridge\nnetwork disconnect bridge\n".repeat(2)
    );
    let net = docker_ok(
        &d,
        &[
            "events",
            "--since",
            &t0,
            "--until",
            &t1,
            "--filter",
            "type=network",
            "--format",
            "{{.Actor.Attributes.type}} {{.Actor.Attributes.container}}",
        ],
    );
    assert!(
        net.lines()
            .all(|l| l.starts_with("bridge ") && l.len() == "bridge ".len() + 64),
        "{net}"
    );
    let out = docker_run(
        &d,
        &[
            "events",
            "--since",
            &t0,
            "--until",
            &t1,
            "--filter",
            "colour=red",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid filter 'colour'"));
    // skiff's own command
    let own = d.ok(&[
        "events",
        "--since",
        &t0,
        "--until",
        &t1,
        "--filter",
        "event=start",
    ]);
    assert!(
        own.contains(" container start ") && own.contains("name=ev"),
        "{own}"
    );
    let own_template = d.ok(&[
        "events",
        "--since",
        &t0,
        "--until",
        &t1,
        "--filter",
        "event=start",
        "--format",
        "{{.Status}} {{.Type}} {{.Action}} {{.From}} {{.Actor.Attributes.name}}",
    ]);
    assert_eq!(
        own_template,
        format!("start container start {IMAGE} ev\nstart container start {IMAGE} evf\n")
    );
    let own_json = d.ok(&[
        "events",
        "--since",
        &t0,
        "--until",
        &t1,
        "--filter",
        "event=rename",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(own_json.trim()).unwrap();
    assert_eq!(v["Action"], "rename", "{own_json}");
    assert_eq!(v["Actor"]["Attributes"]["oldName"], "/ev", "{own_json}");
    let bad = d.run(&["events", "--format", "{{.Type"]);
    assert_eq!(bad.status.code(), Some(64), "{bad:?}");

    // The SDK: replayed and live events, the stream ending at `until`.
    let (ok, out) = python_sdk(
        &d,
        &format!(
            r#"
import docker, threading, time
c = docker.from_env()
print([e["Action"] for e in c.events(decode=True, since={t0}, until={t1}, filters={{"container": "ev"}})])
got = []
def watch():
    for e in c.events(decode=True, until=time.time() + 2, filters={{"type": "container"}}):
        got.append(e["Action"])
t = threading.Thread(target=watch); t.start()
time.sleep(0.3)
c.containers.run("{IMAGE}", "true", name="live", remove=True)
t.join(timeout=10)
print(t.is_alive(), got)
"#
        ),
    );
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "['create', 'attach', 'start', 'die']",
            "False ['create', 'start', 'die', 'destroy']"
        ],
        "{out}"
    );
}

#[test]
fn cp_both_ways_diff_export_history() {
    require!(
        "cp_both_ways_diff_export_history",
        root_unavailable(),
        docker_unavailable(),
        sdk_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let host = tempfile::tempdir().unwrap();
    let h = |p: &str| host.path().join(p);
    std::fs::write(h("in.txt"), "from host\n").unwrap();
    std::fs::create_dir(h("tree")).unwrap();
    std::fs::write(h("tree/a"), "A\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", h("tree/link")).unwrap();
    for (name, state) in [("cprun", "running"), ("cpstop", "stopped")] {
        docker_ok(
            &d,
            &[
                "run",
                "-d",
                "--pull",
                "never",
                "--name",
                name,
                IMAGE,
                "sh",
                "-c",
                "echo made > /data/made; rm /data/seed.txt; ln -s /etc /data/etclink; sleep 300",
            ],
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
        if state == "stopped" {
            docker_ok(&d, &["stop", "-t", "0", name]);
        }
        // into the container
        docker_ok(
            &d,
            &[
                "cp",
                h("in.txt").to_str().unwrap(),
                &format!("{name}:/tmp/"),
            ],
        );
        docker_ok(
            &d,
            &[
                "cp",
                h("tree").to_str().unwrap(),
                &format!("{name}:/data/tree"),
            ],
        );
        // The container's `/` is a directory, running or not (its stat once said a link).
        docker_ok(
            &d,
            &["cp", h("in.txt").to_str().unwrap(), &format!("{name}:/")],
        );
        let cp_out = |src: &str, dst: &std::path::Path| {
            docker_ok(&d, &["cp", &format!("{name}:{src}"), dst.to_str().unwrap()]);
        };
        let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
        let whole = host.path().join(format!("root-{name}"));
        std::fs::create_dir(&whole).unwrap();
        cp_out("/in.txt", &whole);
        assert_eq!(
            read(whole.join("in.txt")),
            "from host\n",
            "{state}: cp to /"
        );
        // The whole root out, and a directory's content, to new names and to an existing
        // directory: the docker CLI rebases dockerd's `/...` and `./...` entry names.
        let rootcopy = host.path().join(format!("rootcopy-{name}"));
        cp_out("/", &rootcopy);
        assert_eq!(
            read(rootcopy.join("data/made")),
            "made\n",
            "{state}: C:/ NEW"
        );
        assert!(rootcopy.join("bin/busybox").is_file(), "{state}: C:/ NEW");
        let into = host.path().join(format!("into-{name}"));
        std::fs::create_dir(&into).unwrap();
        cp_out("/", &into);
        assert!(into.join("data/made").is_file(), "{state}: C:/ EXISTING");
        let content = host.path().join(format!("content-{name}"));
        cp_out("/data/.", &content);
        assert!(content.join("made").is_file(), "{state}: C:/data/. NEW");
        let skiff_root = host.path().join(format!("skiffroot-{name}"));
        d.ok(&["cp", &format!("{name}:/"), skiff_root.to_str().unwrap()]);
        assert!(
            skiff_root.join("data/made").is_file(),
            "{state}: skiff cp C:/"
        );
        // out of it
        let out = host.path().join(format!("out-{name}"));
        std::fs::create_dir(&out).unwrap();
        docker_ok(&d, &["cp", &format!("{name}:/data"), out.to_str().unwrap()]);
        assert_eq!(
            std::fs::read_to_string(out.join("data/made")).unwrap(),
            "made\n",
            "{state}"
        );
        assert!(
            !out.join("data/seed.txt").exists(),
            "{state}: deleted file came back"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("data/tree/a")).unwrap(),
            "A\n",
            "{state}"
        );
        assert_eq!(
            std::fs::read_link(out.join("data/tree/link"))
                .unwrap()
                .to_str()
                .unwrap(),
            "/etc/passwd"
        );
        docker_ok(
            &d,
            &["cp", &format!("{name}:/tmp/in.txt"), out.to_str().unwrap()],
        );
        assert_eq!(
            std::fs::read_to_string(out.join("in.txt")).unwrap(),
            "from host\n"
        );
        // A link in the container resolves inside it, never to the host's /etc.
        docker_ok(
            &d,
            &[
                "cp",
                &format!("{name}:/data/etclink/hostname"),
                out.to_str().unwrap(),
            ],
        );
        assert_ne!(
            std::fs::read_to_string(out.join("hostname")).unwrap(),
            std::fs::read_to_string("/etc/hostname").unwrap_or_default(),
            "{state}: read the host's /etc"
        );
        let out2 = docker_run(
            &d,
            &["cp", &format!("{name}:/no/such"), out.to_str().unwrap()],
        );
        assert!(!out2.status.success());
        assert!(String::from_utf8_lossy(&out2.stderr).contains("Could not find the file /no/such"));
        // diff: added, changed, deleted
        let diff = docker_ok(&d, &["diff", name]);
        for line in [
            "C /data",
            "A /data/made",
            "D /data/seed.txt",
            "A /tmp/in.txt",
            "A /data/tree/a",
        ] {
            assert!(
                diff.lines().any(|l| l == line),
                "{state}: {line} not in:\n{diff}"
            );
        }
        // The runtime's mount points are not changes (Docker keeps them in its init layer).
        for hidden in [
            "/dev",
            "/proc",
            "/sys",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/etc",
        ] {
            assert!(
                !diff.lines().any(|l| l.get(2..) == Some(hidden)),
                "{state}: {hidden} listed in:\n{diff}"
            );
        }
        // export: the whole merged filesystem
        let tar = docker(&d).args(["export", name]).output().unwrap();
        assert!(tar.status.success());
        let mut ar = tar::Archive::new(&tar.stdout[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        for want in ["bin/busybox", "data/made", "tmp/in.txt"] {
            assert!(
                names.iter().any(|n| n == want),
                "{state}: {want} not exported"
            );
        }
        assert!(!names.iter().any(|n| n == "data/seed.txt"), "{state}");
    }
    // The SDK's put_archive / get_archive.
    let (ok, out) = python_sdk(
        &d,
        r#"
import docker, io, tarfile
c = docker.from_env()
ct = c.containers.get("cprun")
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    data = b"sdk bytes\n"
    info = tarfile.TarInfo("sdk.txt"); info.size = len(data)
    t.addfile(info, io.BytesIO(data))
print(ct.put_archive("/tmp", buf.getvalue()))
stream, stat = ct.get_archive("/tmp/sdk.txt")
raw = b"".join(stream)
with tarfile.open(fileobj=io.BytesIO(raw)) as t:
    print(stat["name"], stat["size"], t.extractfile("sdk.txt").read().decode(), end="")
try:
    ct.put_archive("/no/such/dir", buf.getvalue())
except docker.errors.NotFound as e:
    print("404")
"#,
    );
    assert!(ok, "{out}");
    assert_eq!(out, "True\nsdk.txt 10 sdk bytes\n404\n");
    // history
    let hist = docker_ok(&d, &["history", "--format", "{{.ID}} {{.Size}}", IMAGE]);
    assert!(hist.lines().count() >= 1, "{hist}");
    assert!(
        hist.starts_with(&docker_ok(&d, &["images", "-q", IMAGE]).trim().to_string()),
        "{hist}"
    );
    // An import's history is dockerd's: no CREATED BY, `Imported from -` or `import -m`.
    assert_eq!(
        docker_ok(
            &d,
            &["history", "--format", "{{.CreatedBy}}|{{.Comment}}", IMAGE]
        ),
        "|Imported from -\n"
    );
    let t = host.path().join("imp.tar");
    let tarred = Command::new("tar")
        .args([
            "-C",
            h("tree").to_str().unwrap(),
            "-cf",
            t.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(tarred.success());
    docker_ok(
        &d,
        &[
            "import",
            "-m",
            "from a test",
            t.to_str().unwrap(),
            "ops/imp:1",
        ],
    );
    assert_eq!(
        docker_ok(
            &d,
            &[
                "history",
                "--format",
                "{{.CreatedBy}}|{{.Comment}}",
                "ops/imp:1"
            ]
        ),
        "|from a test\n"
    );
    assert_eq!(
        docker_ok(&d, &["image", "inspect", "-f", "{{.Comment}}", "ops/imp:1"]),
        "from a test\n"
    );
    // skiff's own table: every row's SIZE starts under its header, however long the
    // CREATED cell ("About a minute ago") and however empty CREATED BY (an import's).
    let own = d.ok(&["history", IMAGE]);
    let col = own.lines().next().unwrap().find("SIZE").expect("a header");
    for line in own.lines().skip(1) {
        assert_eq!(line.chars().nth(col - 1), Some(' '), "{own}");
        assert_ne!(line.chars().nth(col), Some(' '), "{own}");
    }
    // skiff's own cp, diff, export
    d.ok(&["cp", h("in.txt").to_str().unwrap(), "cprun:/tmp/own.txt"]);
    d.ok(&["cp", h("tree").to_str().unwrap(), "cprun:/tmp"]);
    let back = host.path().join("own-back");
    d.ok(&["cp", "cprun:/tmp/own.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "from host\n");
    d.ok(&[
        "cp",
        "cprun:/tmp/tree",
        host.path().join("tree-back").to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("tree-back/a")).unwrap(),
        "A\n"
    );
    let diff = d.ok(&["diff", "cprun"]);
    assert!(diff.lines().any(|l| l == "A /tmp/own.txt"), "{diff}");
    let exported = host.path().join("export.tar");
    d.ok(&["export", "-o", exported.to_str().unwrap(), "cprun"]);
    let mut ar = tar::Archive::new(std::fs::File::open(&exported).unwrap());
    assert!(ar
        .entries()
        .unwrap()
        .any(|e| e.unwrap().path().unwrap().to_str() == Some("tmp/own.txt")));
    docker_ok(&d, &["rm", "-f", "cprun", "cpstop"]);
}

/// `docker cp` and `docker export` keep names that are not UTF-8 (bytes end to end, the
/// container path in the query too) and write hard links as tar link entries.
#[test]
fn cp_export_non_utf8_names_and_hard_links() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    require!(
        "cp_export_non_utf8_names_and_hard_links",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let host = tempfile::tempdir().unwrap();
    let latin1 = OsStr::from_bytes(b"caf\xe9");
    // From the host: a directory with a non-UTF-8 name in it.
    let src = host.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join(latin1), "latin-1\n").unwrap();
    for (name, state) in [("nurun", "running"), ("nustop", "stopped")] {
        docker_ok(
            &d,
            &[
                "run",
                "-d",
                "--pull",
                "never",
                "--name",
                name,
                IMAGE,
                "sh",
                "-c",
                "mkdir /h && echo x > /h/$(printf 'caf\\351') && echo one > /h/a && ln /h/a /h/b \
                 && touch /ready && sleep 300",
            ],
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !docker_run(&d, &["exec", name, "test", "-e", "/ready"])
            .status
            .success()
        {
            assert!(std::time::Instant::now() < deadline, "{state}: not ready");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if state == "stopped" {
            docker_ok(&d, &["stop", "-t", "0", name]);
        }
        // Out: the directory, then the non-UTF-8 file by its own name.
        let out = host.path().join(format!("out-{name}"));
        std::fs::create_dir(&out).unwrap();
        docker_ok(&d, &["cp", &format!("{name}:/h"), out.to_str().unwrap()]);
        assert_eq!(
            std::fs::read_to_string(out.join("h").join(latin1)).unwrap(),
            "x\n",
            "{state}"
        );
        let (a, b) = (
            std::fs::metadata(out.join("h/a")).unwrap(),
            std::fs::metadata(out.join("h/b")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "{state}: the hard link was copied apart");
        let mut remote = format!("{name}:/h/").into_bytes();
        remote.extend_from_slice(latin1.as_bytes());
        let one = docker(&d)
            .arg("cp")
            .arg(OsStr::from_bytes(&remote))
            .arg(host.path().join(format!("one-{name}")))
            .output()
            .unwrap();
        assert!(
            one.status.success(),
            "{state}: {}",
            String::from_utf8_lossy(&one.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(host.path().join(format!("one-{name}"))).unwrap(),
            "x\n"
        );
        // In: the host directory, read back.
        docker_ok(
            &d,
            &["cp", src.to_str().unwrap(), &format!("{name}:/from-host")],
        );
        let back = host.path().join(format!("back-{name}"));
        docker_ok(
            &d,
            &["cp", &format!("{name}:/from-host"), back.to_str().unwrap()],
        );
        assert_eq!(
            std::fs::read_to_string(back.join(latin1)).unwrap(),
            "latin-1\n",
            "{state}"
        );
        // export: the name's bytes, and b a link entry to a (or a to b).
        let tar = docker(&d).args(["export", name]).output().unwrap();
        assert!(tar.status.success(), "{state}");
        let mut ar = tar::Archive::new(&tar.stdout[..]);
        let mut names = Vec::new();
        let mut links = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let p = e.path_bytes().to_vec();
            if e.header().entry_type() == tar::EntryType::Link {
                links.push((p.clone(), e.link_name_bytes().unwrap().to_vec()));
            }
            names.push(p);
        }
        assert!(
            names.iter().any(|n| n == b"h/caf\xe9"),
            "{state}: non-UTF-8 name not exported"
        );
        assert!(
            names.iter().any(|n| n == b"from-host/caf\xe9"),
            "{state}: copied-in name not exported"
        );
        // The container's own link, and the image's (the fixture's etc/motd.hardlink).
        assert_eq!(
            links,
            [
                (b"etc/motd.hardlink".to_vec(), b"etc/motd".to_vec()),
                (b"h/b".to_vec(), b"h/a".to_vec())
            ],
            "{state}: hard links"
        );
    }
    docker_ok(&d, &["rm", "-f", "nurun", "nustop"]);
}

/// The Python SDK's `exec_run` and `exec_inspect`: Docker's shape before, during and after
/// a session (`ExitCode` null until the end, `Pid` the process's host pid,
/// `ProcessConfig`), and container inspect's `ExecIDs` (sessions that have not ended).
#[test]
fn sdk_exec_inspect_shapes() {
    require!(
        "sdk_exec_inspect_shapes",
        root_unavailable(),
        docker_unavailable(),
        sdk_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let (ok, out) = python_sdk(
        &d,
        &r#"
import docker, time
c = docker.from_env()
api = c.api
ct = c.containers.run("IMAGE", "sleep 300", detach=True, name="execs")
print("ids", ct.attrs["ExecIDs"])
r = ct.exec_run(["sh", "-c", "echo out; exit 3"])
print("run", r.exit_code, r.output.decode().strip())
e = api.exec_create(ct.id, ["sleep", "30"], user="root")["Id"]
i = api.exec_inspect(e)
print("created", i["ID"] == e, i["Running"], i["ExitCode"], i["Pid"], i["ContainerID"] == ct.id,
      i["OpenStdout"], i["OpenStderr"], i["OpenStdin"], i["CanRemove"], sorted(i["ProcessConfig"].items()))
ct.reload()
print("ids", ct.attrs["ExecIDs"] == [e])
api.exec_start(e, detach=True)
deadline = time.time() + 10
while True:
    i = api.exec_inspect(e)
    if i["Pid"] and open("/proc/%d/cmdline" % i["Pid"]).read() == "sleep\x0030\x00":
        break
    assert time.time() < deadline, i
    time.sleep(0.05)
t = time.time()
i = api.exec_inspect(e)
print("running", i["Running"], i["ExitCode"], time.time() - t < 0.5)
ct.reload()
print("ids", ct.attrs["ExecIDs"] == [e])
f = api.exec_create(ct.id, ["sh", "-c", "exit 7"])["Id"]
api.exec_start(f)
i = api.exec_inspect(f)
print("ended", i["Running"], i["ExitCode"], i["Pid"] > 0)
try:
    api.exec_inspect("nosuchexec")
except docker.errors.NotFound:
    print("404")
try:
    api.exec_create(ct.id, ["true"], privileged=True)
except docker.errors.APIError as e:
    print(e.status_code, "privileged" in str(e))
ct.remove(force=True)
"#
        .replace("IMAGE", IMAGE),
    );
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "ids None",
            "run 3 out",
            "created True False None 0 True True True False False [('arguments', ['30']), ('entrypoint', 'sleep'), ('privileged', False), ('tty', False), ('user', 'root')]",
            "ids True",
            "running True None True",
            "ids True",
            "ended False 7 True",
            "404",
            "400 True",
        ],
        "{out}"
    );
}

/// Creates no longer queue behind each other (a name is claimed, not locked over the whole
/// create): of many concurrent creates asking for one name exactly one gets it, the others
/// get Docker's conflict, and every generated name is distinct.
#[test]
fn concurrent_creates_claim_names_once() {
    require!("concurrent_creates_claim_names_once", root_unavailable());
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let spawn = |name: Option<&str>| {
        let mut c = d.cli();
        c.arg("create");
        if let Some(n) = name {
            c.args(["--name", n]);
        }
        c.args([IMAGE, "true"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let same: Vec<_> = (0..8).map(|_| spawn(Some("contended"))).collect();
    let generated: Vec<_> = (0..8).map(|_| spawn(None)).collect();
    let (mut won, mut refused) = (0, 0);
    for child in same {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => won += 1,
            Some(125) if err.contains("\"/contended\" is already in use") => refused += 1,
            other => panic!("create exited {other:?}: {err}"),
        }
    }
    assert_eq!((won, refused), (1, 7));
    for child in generated {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let names = d.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    let mut names: Vec<&str> = names.lines().collect();
    assert_eq!(names.len(), 9, "{names:?}");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 9, "generated names collide: {names:?}");
    assert!(names.contains(&"contended"));
    // Containers' directories are spread over ext4's block groups (docs/benchmarks.md).
    let containers = d.dir().join("data/containers");
    let ext4 = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&containers)
        .output()
        .unwrap();
    if String::from_utf8_lossy(&ext4.stdout).trim() == "ext2/ext3" {
        let attrs = std::process::Command::new("lsattr")
            .arg("-d")
            .arg(&containers)
            .output()
            .unwrap();
        let attrs = String::from_utf8_lossy(&attrs.stdout);
        let flags = attrs.split_whitespace().next().unwrap_or_default();
        assert!(flags.contains('T'), "lsattr: {attrs}");
    }
}

/// Concurrent removals of one container: exactly one removes it, the others get Docker's
/// 409 (`removal ... is already in progress`) or 404, and the image mount it held is
/// released once (another container of the image keeps reading it).
#[test]
fn concurrent_removals_remove_once() {
    require!("concurrent_removals_remove_once", root_unavailable());
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let keeper = d.ok(&["run", "-d", IMAGE, "sleep", "300"]);
    let victim = d.ok(&["run", "-d", IMAGE, "sleep", "300"]);
    let (keeper, victim) = (keeper.trim(), victim.trim());
    let rms: Vec<_> = (0..6)
        .map(|_| {
            d.cli()
                .args(["rm", "-f", victim])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut removed = 0;
    for rm in rms {
        let out = rm.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            removed += 1;
        } else {
            assert!(
                err.contains("is already in progress") || err.contains("No such container"),
                "rm -f: {err}"
            );
        }
    }
    assert_eq!(removed, 1);
    assert!(!d.run(&["inspect", victim]).status.success());
    // The keeper's image is still mounted: its files read, and a new container starts.
    assert_eq!(d.ok(&["exec", keeper, "sh", "-c", "echo ok"]).trim(), "ok");
    assert_eq!(
        d.ok(&["run", "--rm", IMAGE, "echo", "again"]).trim(),
        "again"
    );
}

/// `--format` of the list commands, as the docker CLI reads it: templates, `table`, `json`,
/// and a template that does not parse (exit 64).
#[test]
fn list_commands_take_format() {
    require!("list_commands_take_format", root_unavailable());
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    d.ok(&[
        "create", "--name", "fmt1", "--label", "app=web", IMAGE, "true",
    ]);
    d.ok(&["volume", "create", "--label", "tier=db", "fmtvol"]);
    assert_eq!(
        d.ok(&[
            "ps",
            "-a",
            "--format",
            "{{.Names}} {{.State}} {{index .Label \"app\"}}"
        ]),
        "fmt1 created web\n"
    );
    let table = d.ok(&["ps", "-a", "--format", "table {{.Names}}\\t{{.Status}}"]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("NAMES"), "{table}");
    assert!(lines.next().unwrap().starts_with("fmt1"), "{table}");
    let repo_tag = IMAGE.rsplit_once(':').unwrap();
    assert_eq!(
        d.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .trim(),
        format!("{}:{}", repo_tag.0, repo_tag.1)
    );
    let json = d.ok(&["images", "--format", "json"]);
    let row: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(row["Tag"], repo_tag.1);
    assert_eq!(
        d.ok(&[
            "volume",
            "ls",
            "-f",
            "label=tier=db",
            "--format",
            "{{.Name}} {{.Labels}}"
        ]),
        "fmtvol tier=db\n"
    );
    let nets = d.ok(&["network", "ls", "--format", "{{.Name}}:{{.Driver}}"]);
    assert!(nets.lines().any(|l| l == "bridge:bridge"), "{nets}");
    let bad = d.run(&["images", "--format", "{{.Nope"]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("template parsing error"));
    d.ok(&["rm", "fmt1"]);
    d.ok(&["volume", "rm", "fmtvol"]);
}

#[test]
fn cp_into_keeps_owners_and_refuses_dir_swaps() {
    require!(
        "cp_into_keeps_owners_and_refuses_dir_swaps",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let host = tempfile::tempdir().unwrap();
    let own = host.path().join("own.txt");
    std::fs::write(&own, "owned\n").unwrap();
    std::os::unix::fs::lchown(&own, Some(1234), Some(2345)).unwrap();
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--pull",
            "never",
            "--name",
            "cpown",
            "--user",
            "nobody",
            IMAGE,
            "sh",
            "-c",
            "mkdir /tmp/d /tmp/f; rmdir /tmp/f; echo x > /tmp/f; echo in > /tmp/d/inner; \
             ln -s /tmp/d /tmp/dl; sleep 300",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let owner = |p: &str| docker_ok(&d, &["exec", "cpown", "busybox", "stat", "-c", "%u:%g", p]);
    // Without -a the tar's owners are kept (dockerd's, docker/cli#6870); with -a the
    // container's user (`nobody` from its /etc/passwd) owns what is copied in.
    docker_ok(&d, &["cp", own.to_str().unwrap(), "cpown:/tmp/"]);
    assert_eq!(owner("/tmp/own.txt"), "1234:2345\n");
    docker_ok(
        &d,
        &["cp", "-a", own.to_str().unwrap(), "cpown:/tmp/own-a.txt"],
    );
    assert_eq!(owner("/tmp/own-a.txt"), "65534:65534\n");
    // dockerd's `-a` into a container without a `User` keeps the tar's owners.
    docker_ok(
        &d,
        &[
            "run", "-d", "--pull", "never", "--name", "cpnouser", IMAGE, "sleep", "300",
        ],
    );
    docker_ok(&d, &["cp", "-a", own.to_str().unwrap(), "cpnouser:/tmp/"]);
    assert_eq!(
        docker_ok(
            &d,
            &[
                "exec",
                "cpnouser",
                "busybox",
                "stat",
                "-c",
                "%u:%g",
                "/tmp/own.txt"
            ]
        ),
        "1234:2345\n"
    );
    docker_ok(&d, &["rm", "-f", "cpnouser"]);
    // A copied directory keeps its modification time (set after its content is written).
    let mt = host.path().join("mt");
    std::fs::create_dir(&mt).unwrap();
    std::fs::write(mt.join("inner"), "x").unwrap();
    let touched = std::process::Command::new("touch")
        .args(["-d", "2001-01-01T00:00:00Z", mt.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(touched.success());
    docker_ok(&d, &["cp", mt.to_str().unwrap(), "cpown:/tmp/mt"]);
    assert_eq!(
        docker_ok(
            &d,
            &["exec", "cpown", "busybox", "stat", "-c", "%Y", "/tmp/mt"]
        ),
        "978307200\n"
    );
    // The docker CLI asks not to swap a directory for a file (noOverwriteDirNonDir): the
    // directory and the file are left as they were.
    let f_over_d = host.path().join("f-over-d");
    std::fs::create_dir(&f_over_d).unwrap();
    std::fs::write(f_over_d.join("d"), "file\n").unwrap();
    docker_fails(
        &d,
        &["cp", f_over_d.join("d").to_str().unwrap(), "cpown:/tmp/"],
        1,
        r#"cannot overwrite directory "/tmp/d" with non-directory "/tmp""#,
    );
    let d_over_f = host.path().join("d-over-f");
    std::fs::create_dir_all(d_over_f.join("f")).unwrap();
    docker_fails(
        &d,
        &["cp", d_over_f.join("f").to_str().unwrap(), "cpown:/tmp/"],
        1,
        r#"cannot overwrite non-directory "/tmp/f" with directory "/tmp""#,
    );
    assert_eq!(
        docker_ok(
            &d,
            &["exec", "cpown", "sh", "-c", "test -d /tmp/d && cat /tmp/f"]
        ),
        "x\n"
    );
    // A trailing `/` follows a link in the last component (dockerd's), without it the link
    // itself is copied.
    let out_dir = host.path().join("out-dl");
    docker_ok(&d, &["cp", "cpown:/tmp/dl/", out_dir.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out_dir.join("inner")).unwrap(),
        "in\n"
    );
    let out_link = host.path().join("out-link");
    docker_ok(&d, &["cp", "cpown:/tmp/dl", out_link.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_link(&out_link).unwrap(),
        std::path::Path::new("/tmp/d")
    );
    docker_ok(&d, &["rm", "-f", "cpown"]);
}

#[test]
fn exec_events_name_filter_inspect_size_and_refused_input() {
    require!(
        "exec_events_name_filter_inspect_size_and_refused_input",
        root_unavailable(),
        docker_unavailable(),
        sdk_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    docker_ok(
        &d,
        &[
            "run", "-d", "--pull", "never", "--name", "xe", IMAGE, "sleep", "300",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(20));
    let t0 = format!("{:.3}", unix_now());
    docker_ok(&d, &["exec", "xe", "echo", "x"]);
    docker_ok(
        &d,
        &[
            "exec",
            "xe",
            "sh",
            "-c",
            "head -c 5000 /dev/zero > /tmp/blob",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(50));
    let t1 = format!("{:.3}", unix_now());
    let events = |extra: &[&str]| {
        let mut a = vec!["--filter", "container=xe"];
        a.extend_from_slice(extra);
        events_between(
            &d,
            &t0,
            &t1,
            "{{.Action}}|{{index .Actor.Attributes \"exitCode\"}}",
            &a,
        )
    };
    // dockerd's exec events: `exec_create: CMD ARGS`, `exec_start: ...`, `exec_die`.
    assert_eq!(
        events(&[]),
        "exec_create: echo x|\nexec_start: echo x|\nexec_die|0\n\
         exec_create: sh -c head -c 5000 /dev/zero > /tmp/blob|\n\
         exec_start: sh -c head -c 5000 /dev/zero > /tmp/blob|\nexec_die|0\n"
    );
    // `exec_start` (like `exec_create` and `health_status`) also matches by prefix.
    assert_eq!(
        events(&["--filter", "event=exec_start"]),
        "exec_start: echo x|\nexec_start: sh -c head -c 5000 /dev/zero > /tmp/blob|\n"
    );
    // A name filter matches with or without the leading slash.
    assert_eq!(
        docker_ok(
            &d,
            &[
                "ps",
                "-a",
                "--filter",
                "name=^xe$",
                "--format",
                "{{.Names}}"
            ]
        ),
        "xe\n"
    );
    // `inspect -s` fills SizeRw and SizeRootFs (bytes); without -s they are left out (the
    // docker CLI's typed template prints a nil pointer).
    let sizes = docker_ok(
        &d,
        &["inspect", "-s", "-f", "{{.SizeRw}} {{.SizeRootFs}}", "xe"],
    );
    let n: Vec<i64> = sizes
        .split_whitespace()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{sizes}")))
        .collect();
    assert!(n[0] >= 5000 && n[1] > n[0], "{sizes}");
    let own = d.ok(&["inspect", "-s", "-f", "{{.SizeRw}}", "xe"]);
    assert!(own.trim().parse::<i64>().is_ok_and(|v| v >= 5000), "{own}");
    assert_eq!(
        docker_ok(&d, &["inspect", "-f", "{{.SizeRw}}", "xe"]),
        "<nil>\n"
    );
    // Refused as dockerd refuses them: a wait condition it does not know, a negative
    // memory limit.
    // `wait --condition next-exit` of an exited container waits for its next run.
    let nx = docker_run(
        &d,
        &[
            "run", "--pull", "never", "--name", "nx", IMAGE, "sh", "-c", "exit 3",
        ],
    );
    assert_eq!(nx.status.code(), Some(3));
    let (ok, out) = python_sdk(
        &d,
        r#"
import docker, threading, time
c = docker.from_env()
try:
    c.api.wait("nx", condition="next-exit", timeout=1)
    print("returned at once")
except Exception:
    print("waiting")
res = {}
def w():
    res["code"] = c.api.wait("nx", condition="next-exit", timeout=20)["StatusCode"]
t = threading.Thread(target=w); t.start()
time.sleep(0.5)
c.api.start("nx")
t.join(25)
print(res.get("code"))
"#,
    );
    assert!(ok, "{out}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["waiting", "3"], "{out}");
    let (ok, out) = python_sdk(
        &d,
        &format!(
            r#"
import docker
c = docker.from_env()
try:
    c.api.wait("xe", condition="bogus")
    print("accepted")
except docker.errors.APIError as e:
    print(e.status_code, e.explanation)
try:
    c.api.create_container("{IMAGE}", "true", host_config=c.api.create_host_config(mem_limit=-5))
    print("accepted")
except docker.errors.APIError as e:
    print(e.status_code, e.explanation)
"#
        ),
    );
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "400 invalid condition: \"bogus\"",
            "400 Minimum memory limit allowed is 6MB"
        ],
        "{out}"
    );
    docker_ok(&d, &["rm", "-f", "xe"]);
}
