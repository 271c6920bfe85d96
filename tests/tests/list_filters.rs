//! `docker ps --filter` and `docker images --filter` (and the Python SDK's `filters=`) select
//! as dockerd does; an unknown filter is refused, never ignored (compose's
//! `down --remove-orphans` relies on label filters to spare other projects).

use skiff_tests::docker_cli::*;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon};

const IMAGE: &str = "127.0.0.1:5999/filt:1";
const OTHER: &str = "127.0.0.1:5999/other:2";

/// Names `docker ps -a ARGS` lists, sorted.
fn ps(d: &Daemon, args: &[&str]) -> Vec<String> {
    let mut a = vec!["ps", "--format", "{{.Names}}"];
    a.extend_from_slice(args);
    let mut v: Vec<String> = docker_ok(d, &a).lines().map(str::to_string).collect();
    v.sort();
    v
}

fn images(d: &Daemon, args: &[&str]) -> Vec<String> {
    let mut a = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
    a.extend_from_slice(args);
    let mut v: Vec<String> = docker_ok(d, &a).lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn ps_and_images_filters_select_as_dockerd() {
    require!(
        "ps_and_images_filters_select_as_dockerd",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &["LABEL tier=base"]);
    // Image `before`/`since` compare creation seconds.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    import_busybox(&d, OTHER, &[]);
    docker_ok(&d, &["tag", IMAGE, "127.0.0.1:5999/filt:extra"]);

    docker_ok(
        &d,
        &[
            "create",
            "--pull",
            "never",
            "--name",
            "fa",
            "--label",
            "app=shop",
            "--label",
            "tier=web",
            "-p",
            "127.0.0.1::80",
            "--expose",
            "5000",
            IMAGE,
            "true",
        ],
    );
    docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--pull",
            "never",
            "--name",
            "fb",
            "--label",
            "app=other",
            "-v",
            "fvol:/data",
            OTHER,
            "sleep",
            "300",
        ],
    );
    let out = docker_run(
        &d,
        &[
            "run",
            "--pull",
            "never",
            "--name",
            "fc",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3));

    let all = ["fa", "fb", "fc"];
    assert_eq!(ps(&d, &["-a"]), all);
    assert_eq!(ps(&d, &[]), ["fb"]);
    assert_eq!(ps(&d, &["-a", "--filter", "label=app"]), ["fa", "fb"]);
    assert_eq!(ps(&d, &["-a", "--filter", "label=app=shop"]), ["fa"]);
    assert!(ps(&d, &["-a", "--filter", "label=app=nomatch"]).is_empty());
    // Every label must match.
    assert_eq!(
        ps(
            &d,
            &["-a", "--filter", "label=app", "--filter", "label=tier=web"]
        ),
        ["fa"]
    );
    // A status filter lists stopped containers without -a; values are alternatives.
    assert_eq!(ps(&d, &["--filter", "status=exited"]), ["fc"]);
    assert_eq!(
        ps(
            &d,
            &["--filter", "status=created", "--filter", "status=running"]
        ),
        ["fa", "fb"]
    );
    assert_eq!(ps(&d, &["-a", "--filter", "exited=3"]), ["fc"]);
    assert!(ps(&d, &["-a", "--filter", "exited=0"]).is_empty());
    assert_eq!(ps(&d, &["-a", "--filter", "name=fb"]), ["fb"]);
    assert_eq!(ps(&d, &["-a", "--filter", "name=^/f[ac]$"]), ["fa", "fc"]);
    let fb_id = docker_ok(&d, &["inspect", "-f", "{{.Id}}", "fb"]);
    assert_eq!(
        ps(&d, &["-a", "--filter", &format!("id={}", &fb_id[..12])]),
        ["fb"]
    );
    assert_eq!(ps(&d, &["-a", "--filter", "before=fc"]), ["fa", "fb"]);
    assert_eq!(ps(&d, &["-a", "--filter", "since=fa"]), ["fb", "fc"]);
    assert_eq!(
        ps(&d, &["-a", "--filter", &format!("ancestor={OTHER}")]),
        ["fb"]
    );
    assert_eq!(
        ps(&d, &["-a", "--filter", &format!("ancestor={IMAGE}")]),
        ["fa", "fc"]
    );
    assert_eq!(ps(&d, &["-a", "--filter", "network=none"]), ["fc"]);
    assert_eq!(ps(&d, &["-a", "--filter", "network=bridge"]), ["fa", "fb"]);
    assert_eq!(ps(&d, &["-a", "--filter", "volume=fvol"]), ["fb"]);
    assert_eq!(ps(&d, &["-a", "--filter", "volume=/data"]), ["fb"]);
    assert_eq!(ps(&d, &["-a", "--filter", "publish=80"]), ["fa"]);
    assert_eq!(ps(&d, &["-a", "--filter", "publish=70-90/tcp"]), ["fa"]);
    assert!(ps(&d, &["-a", "--filter", "publish=80/udp"]).is_empty());
    assert_eq!(ps(&d, &["-a", "--filter", "expose=5000"]), ["fa"]);
    assert_eq!(ps(&d, &["-a", "--filter", "health=none"]), all);
    assert!(ps(&d, &["-a", "--filter", "health=healthy"]).is_empty());
    assert!(ps(&d, &["-a", "--filter", "is-task=true"]).is_empty());
    assert_eq!(ps(&d, &["-a", "--filter", "is-task=false"]), all);

    // skiff's own ps and images take the same filters.
    assert_eq!(
        d.ok(&["ps", "-aq", "--filter", "label=app=shop"])
            .lines()
            .count(),
        1
    );
    assert_eq!(
        d.ok(&["ps", "-q", "--filter", "status=exited"])
            .lines()
            .count(),
        1
    );
    assert_eq!(
        d.ok(&["images", "-q", "--filter", "label=tier=base"])
            .lines()
            .count(),
        1
    );
    assert!(d.ok(&["images", OTHER]).contains("other"));
    assert!(!d.ok(&["images", OTHER]).contains("filt"));

    // Refused, not ignored.
    for (filter, needle) in [
        ("colour=red", "invalid filter 'colour'"),
        ("status=sleeping", "invalid filter 'status=sleeping'"),
        ("exited=x", "invalid filter 'exited=x'"),
        ("before=ghost", "No such container: ghost"),
    ] {
        let out = docker_run(&d, &["ps", "-a", "--filter", filter]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{filter} was accepted");
        assert!(err.contains(needle), "{filter}: {err}");
    }

    // Images.
    let filt = ["127.0.0.1:5999/filt:1", "127.0.0.1:5999/filt:extra"];
    assert_eq!(images(&d, &[]).len(), 3);
    assert_eq!(images(&d, &["127.0.0.1:5999/filt"]), filt);
    assert_eq!(
        images(&d, &["--filter", "reference=127.0.0.1:5999/filt:1"]),
        [filt[0]]
    );
    assert_eq!(images(&d, &["--filter", "reference=*/other:*"]), [OTHER]);
    assert_eq!(images(&d, &["--filter", "label=tier=base"]), filt);
    assert_eq!(images(&d, &["--filter", "label=tier"]), filt);
    assert!(images(&d, &["--filter", "dangling=true"]).is_empty());
    assert_eq!(images(&d, &["--filter", "dangling=false"]).len(), 3);
    assert_eq!(images(&d, &["--filter", &format!("before={OTHER}")]), filt);
    assert_eq!(
        images(&d, &["--filter", &format!("since={IMAGE}")]),
        [OTHER]
    );
    let out = docker_run(&d, &["images", "--filter", "colour=red"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid filter 'colour'"));

    // Volumes.
    docker_ok(&d, &["volume", "create", "--label", "keep=yes", "spare"]);
    let vols = |args: &[&str]| {
        let mut a = vec!["volume", "ls", "-q"];
        a.extend_from_slice(args);
        let mut v: Vec<String> = docker_ok(&d, &a).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(vols(&[]), ["fvol", "spare"]);
    assert_eq!(vols(&["--filter", "dangling=true"]), ["spare"]);
    assert_eq!(vols(&["--filter", "dangling=false"]), ["fvol"]);
    assert_eq!(vols(&["--filter", "label=keep=yes"]), ["spare"]);
    assert_eq!(vols(&["--filter", "name=^fv"]), ["fvol"]);
    assert_eq!(vols(&["--filter", "driver=local"]).len(), 2);
    let out = docker_run(&d, &["volume", "ls", "--filter", "colour=red"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid filter 'colour'"));

    // Container prune applies its filters (label, label!, until) or refuses them.
    docker_ok(
        &d,
        &[
            "run", "--pull", "never", "--name", "fd", "--label", "keep=yes", IMAGE, "true",
        ],
    );
    let out = docker_run(&d, &["container", "prune", "-f", "--filter", "colour=red"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid filter 'colour'"));
    docker_ok(
        &d,
        &[
            "container",
            "prune",
            "-f",
            "--filter",
            "until=2000-01-01T00:00:00Z",
        ],
    );
    assert_eq!(ps(&d, &["-a", "--filter", "status=exited"]), ["fc", "fd"]);
    docker_ok(&d, &["container", "prune", "-f", "--filter", "label!=keep"]);
    assert_eq!(ps(&d, &["-a", "--filter", "status=exited"]), ["fd"]);
    docker_ok(
        &d,
        &["container", "prune", "-f", "--filter", "label=keep=yes"],
    );
    assert!(ps(&d, &["-a", "--filter", "status=exited"]).is_empty());

    docker_ok(&d, &["rm", "-f", "fa", "fb"]);
}

#[test]
fn python_sdk_list_filters() {
    require!(
        "python_sdk_list_filters",
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
a = c.containers.create("{IMAGE}", "true", name="p1", labels={{"com.docker.compose.project": "one"}})
b = c.containers.create("{IMAGE}", "true", name="p2", labels={{"com.docker.compose.project": "two"}})
n = lambda f: sorted(x.name for x in c.containers.list(all=True, filters=f))
print(n({{"label": "com.docker.compose.project=one"}}))
print(n({{"label": ["com.docker.compose.project"]}}))
print(n({{"status": "created", "name": "p2"}}))
print(sorted(t for i in c.images.list(filters={{"dangling": False}}) for t in i.tags))
try:
    c.containers.list(filters={{"colour": "red"}})
except docker.errors.APIError as e:
    print("refused", e.status_code, e.explanation)
a.remove(); b.remove()
"#
        ),
    );
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "['p1']",
            "['p1', 'p2']",
            "['p2']",
            &format!("['{IMAGE}']"),
            "refused 400 invalid filter 'colour'",
        ],
        "{out}"
    );
}

#[test]
fn compose_down_remove_orphans_spares_other_projects() {
    require!(
        "compose_down_remove_orphans_spares_other_projects",
        root_unavailable(),
        docker_unavailable(),
        compose_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let compose = |dir: &std::path::Path, project: &str, args: &[&str]| {
        let out = std::process::Command::new("docker-compose")
            .args(["-p", project])
            .args(args)
            .current_dir(dir)
            .env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "compose {args:?}: {text}\n{}",
            d.log_text()
        );
        text
    };
    let file = |services: &[&str]| {
        let mut y = String::from("version: \"2.4\"\nservices:\n");
        for s in services {
            y.push_str(&format!(
                "  {s}:\n    image: {IMAGE}\n    command: [\"sleep\", \"300\"]\n    network_mode: bridge\n"
            ));
        }
        y
    };
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    std::fs::write(a.path().join("docker-compose.yml"), file(&["web", "old"])).unwrap();
    std::fs::write(b.path().join("docker-compose.yml"), file(&["web"])).unwrap();
    compose(a.path(), "alpha", &["up", "-d"]);
    compose(b.path(), "beta", &["up", "-d"]);
    docker_ok(
        &d,
        &[
            "run", "-d", "--pull", "never", "--name", "plain", IMAGE, "sleep", "300",
        ],
    );
    // `ps` of one project lists its containers only.
    let ps = compose(a.path(), "alpha", &["ps"]);
    assert!(
        ps.contains("alpha_web_1") && ps.contains("alpha_old_1"),
        "{ps}"
    );
    assert!(!ps.contains("beta_") && !ps.contains("plain"), "{ps}");
    // `old` leaves alpha's file: an orphan of alpha only.
    std::fs::write(a.path().join("docker-compose.yml"), file(&["web"])).unwrap();
    compose(a.path(), "alpha", &["down", "--remove-orphans", "-t", "0"]);
    let left = docker_ok(&d, &["ps", "-a", "--format", "{{.Names}}"]);
    let mut left: Vec<&str> = left.lines().collect();
    left.sort();
    assert_eq!(left, ["beta_web_1", "plain"]);
    compose(b.path(), "beta", &["down", "-t", "0"]);
    docker_ok(&d, &["rm", "-f", "plain"]);
}

/// `ancestor` matches the image and its descendants (built FROM it, directly or further
/// down); `network` matches a network's name, full id and id prefix.
#[test]
fn ancestor_takes_descendants_and_network_takes_id_prefixes() {
    require!(
        "ancestor_takes_descendants_and_network_takes_id_prefixes",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "anc/base:1", &[]);
    // Layers of its own (an import of the busybox rootfs would share the base's layer).
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("only"), "unrelated\n").unwrap();
    d.ok(&[
        "image",
        "import",
        other.path().to_str().unwrap(),
        "anc/unrelated:1",
    ]);
    let build = |tag: &str, dockerfile: &str| {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        d.ok(&["build", "-t", tag, ctx.path().to_str().unwrap()]);
    };
    // A child with a layer of its own, and a grandchild with the same layers (LABEL only).
    build("anc/child:1", "FROM anc/base:1\nRUN echo hi > /hi\n");
    build("anc/grand:1", "FROM anc/child:1\nLABEL grand=yes\n");
    for (name, image) in [
        ("ca", "anc/base:1"),
        ("cb", "anc/child:1"),
        ("cc", "anc/grand:1"),
        ("cu", "anc/unrelated:1"),
    ] {
        docker_ok(
            &d,
            &["create", "--pull", "never", "--name", name, image, "true"],
        );
    }
    let anc = |image: &str| ps(&d, &["-a", "--filter", &format!("ancestor={image}")]);
    assert_eq!(anc("anc/base:1"), ["ca", "cb", "cc"]);
    assert_eq!(anc("anc/child:1"), ["cb", "cc"]);
    assert_eq!(anc("anc/grand:1"), ["cc"]);
    assert_eq!(anc("anc/unrelated:1"), ["cu"]);
    let child_id = docker_ok(&d, &["image", "inspect", "-f", "{{.Id}}", "anc/child:1"]);
    assert_eq!(anc(child_id.trim()), ["cb", "cc"]);

    docker_ok(&d, &["network", "create", "anet"]);
    docker_ok(
        &d,
        &[
            "create",
            "--pull",
            "never",
            "--name",
            "cn",
            "--network",
            "anet",
            "anc/base:1",
            "true",
        ],
    );
    let net = docker_ok(&d, &["network", "inspect", "-f", "{{.Id}}", "anet"]);
    let net = net.trim();
    let by = |v: &str| ps(&d, &["-a", "--filter", &format!("network={v}")]);
    assert_eq!(by("anet"), ["cn"]);
    assert_eq!(by(net), ["cn"]);
    assert_eq!(by(&net[..12]), ["cn"]);
    let bridge = docker_ok(&d, &["network", "inspect", "-f", "{{.Id}}", "bridge"]);
    assert_eq!(by(&bridge.trim()[..12]), ["ca", "cb", "cc", "cu"]);
    docker_ok(&d, &["rm", "cn"]);
    docker_ok(&d, &["network", "rm", "anet"]);
}
