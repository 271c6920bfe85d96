//! Response shapes real clients read: inspect carries Docker's defaults for what the client
//! left unset, `NetworkSettings.Networks` is always there, `Mounts` is never null, image
//! inspect's `Config` is whole, `/info` reports memory and kernel features.

use skiff_tests::docker_cli::*;
use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon, Registry};

const IMAGE: &str = "127.0.0.1:5999/shapes:1";

#[test]
fn python_sdk_foreground_run_and_shapes() {
    require!(
        "python_sdk_foreground_run_and_shapes",
        root_unavailable(),
        sdk_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &["ENV A=1", "EXPOSE 8080", "VOLUME /data"]);
    let (ok, out) = python_sdk(
        &d,
        &format!(
            r#"
import docker
c = docker.from_env()
print(c.containers.run("{IMAGE}", ["echo", "hello"]).decode(), end="")
print(c.containers.run("{IMAGE}", "echo gone", remove=True).decode(), end="")
# docker-py 7.1 sends NetworkingConfig with the network mapped to null; dockerd accepts it.
net = c.networks.create("sdknet")
print(c.containers.run("{IMAGE}", "echo onnet", network="sdknet", remove=True).decode(), end="")
net.remove()
ct = c.containers.list(all=True)[0]
a = ct.attrs
print(a["HostConfig"]["LogConfig"]["Type"], a["HostConfig"]["RestartPolicy"]["Name"], a["HostConfig"]["NetworkMode"])
print(sorted(a["NetworkSettings"]["Networks"]), a["NetworkSettings"]["Ports"])
print(type(a["Mounts"]).__name__, [m["Destination"] for m in a["Mounts"]])
ct.remove(v=True)
print(len(c.containers.list(all=True)))
try:
    c.containers.run("{IMAGE}", "sh -c 'exit 7'")
except docker.errors.ContainerError as e:
    print("exit", e.exit_status)
c.containers.prune()
img = c.images.get("{IMAGE}")
cfg = img.attrs["Config"]
print(cfg["Env"], sorted(cfg["ExposedPorts"]), sorted(cfg["Volumes"]), cfg["WorkingDir"] == "", cfg["Tty"])
info = c.info()
print(info["MemTotal"] > 0, info["MemoryLimit"], info["PidsLimit"], info["Swarm"]["LocalNodeState"])
"#
        ),
    );
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "hello",
            "gone",
            "onnet",
            "json-file no bridge",
            "['bridge'] {}",
            "list ['/data']",
            "0",
            "exit 7",
            "['A=1'] ['8080/tcp'] ['/data'] True False",
            "True True True inactive",
        ],
        "{out}"
    );
}

#[test]
fn docker_cli_inspect_templates() {
    require!(
        "docker_cli_inspect_templates",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    docker_ok(
        &d,
        &[
            "run", "-d", "--pull", "never", "--name", "web", IMAGE, "sleep", "60",
        ],
    );
    let ip = docker_ok(
        &d,
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            "web",
        ],
    );
    let ip: std::net::Ipv4Addr = ip.trim().parse().expect("an IPv4 address");
    assert!(!ip.is_unspecified());
    let top = docker_ok(
        &d,
        &["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"],
    );
    assert_eq!(top.trim(), ip.to_string());
    assert_eq!(
        docker_ok(
            &d,
            &[
                "inspect",
                "-f",
                "{{json .Mounts}} {{.HostConfig.LogConfig.Type}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.NetworkMode}}",
                "web",
            ],
        )
        .trim(),
        "[] json-file no bridge"
    );
    let none = docker_ok(
        &d,
        &[
            "create",
            "--pull",
            "never",
            "--network",
            "none",
            IMAGE,
            "true",
        ],
    );
    assert_eq!(
        docker_ok(
            &d,
            &[
                "inspect",
                "-f",
                "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}}{{end}}",
                none.trim(),
            ],
        )
        .trim(),
        "none="
    );
    // `docker info` finds what it checks and prints no warnings about it.
    let out = docker(&d).args(["info"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("WARNING: No"), "{err}");
    let mem = docker_ok(&d, &["info", "-f", "{{.MemTotal}}"]);
    assert!(mem.trim().parse::<u64>().unwrap() > 1 << 20, "{mem}");
    docker_ok(
        &d,
        &[
            "exec",
            "web",
            "sh",
            "-c",
            "head -c 100000 /bin/busybox > /big",
        ],
    );
    let sized = docker_ok(
        &d,
        &["ps", "-s", "--format", "{{.Size}}", "--filter", "name=web"],
    );
    assert!(
        sized.trim().starts_with("10") && sized.contains("(virtual "),
        "{sized}"
    );
    let df = docker_ok(&d, &["system", "df", "-v"]);
    assert!(!df.contains("years ago"), "{df}");
    let web_row = df
        .lines()
        .find(|l| l.trim_end().ends_with(" web"))
        .unwrap_or_else(|| panic!("{df}"));
    assert!(
        web_row.contains("\"sleep 60\"") && web_row.contains("Up "),
        "{web_row}"
    );
    docker_ok(&d, &["rm", "-f", "web", none.trim()]);
}

#[test]
fn push_pull_lines_repo_digests_and_rmi_untag() {
    require!(
        "push_pull_lines_repo_digests_and_rmi_untag",
        root_unavailable(),
        registry_unavailable(),
        docker_unavailable()
    );
    let reg = Registry::start().unwrap();
    let d = Daemon::start().unwrap();
    let image = format!("{}/shapes:v2", reg.host());
    import_busybox(&d, &image, &[]);
    let repo_digests = |r: &str| docker_ok(&d, &["inspect", "-f", "{{json .RepoDigests}}", r]);
    assert_eq!(
        repo_digests(&image).trim(),
        "[]",
        "an import has no registry digest"
    );

    let out = docker_ok(&d, &["push", &image]);
    assert!(
        out.contains(&format!(
            "The push refers to repository [{}/shapes]",
            reg.host()
        )),
        "{out}"
    );
    // One line per layer, named by its diff_id's short form, as dockerd's push prints it.
    let layer_line = |out: &str, status: &str| {
        out.lines().any(|l| {
            l.strip_suffix(status)
                .and_then(|id| id.strip_suffix(": "))
                .is_some_and(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        })
    };
    assert!(layer_line(&out, "Pushed"), "{out}");
    let again = docker_ok(&d, &["push", &image]);
    assert!(layer_line(&again, "Layer already exists"), "{again}");
    let again = d.ok(&["push", &image]);
    assert!(
        layer_line(&again, "Layer already exists"),
        "skiff push:\n{again}"
    );
    let digest = out
        .split("v2: digest: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no `v2: digest:` line in {out}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(digest.starts_with("sha256:"), "{out}");
    let expected = format!("[\"{}/shapes@{digest}\"]", reg.host());
    assert_eq!(repo_digests(&image).trim(), expected);

    let out = docker_ok(&d, &["pull", &image]);
    assert!(
        out.contains(&format!("Status: Image is up to date for {image}")),
        "{out}"
    );
    docker_ok(&d, &["rmi", &image]);
    let out = docker_ok(&d, &["pull", &image]);
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {image}")),
        "{out}"
    );
    assert_eq!(repo_digests(&image).trim(), expected);
    let listed = docker_ok(
        &d,
        &["images", "--digests", "--format", "{{.Digest}}", &image],
    );
    assert_eq!(listed.trim(), digest);

    // rmi of one of several tags only untags, even while a container uses the image.
    let extra = format!("{}/shapes:extra", reg.host());
    docker_ok(&d, &["tag", &image, &extra]);
    docker_ok(
        &d,
        &[
            "create", "--pull", "never", "--name", "user", &image, "true",
        ],
    );
    let out = docker_ok(&d, &["rmi", &extra]);
    assert_eq!(out.trim(), format!("Untagged: {extra}"));
    // The last tag of an image in use is refused.
    let out = docker_run(&d, &["rmi", &image]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is using its referenced image"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    docker_ok(&d, &["rm", "user"]);
}

/// `skiff inspect -f` (and `image|volume|network inspect -f`) runs Docker's Go templates:
/// the same output as the docker CLI on the same objects, `json` as one line, exit 64 for
/// a template that does not parse, exit 1 for a missing object with the others printed.
#[test]
fn skiff_inspect_format_matches_docker_cli() {
    require!(
        "skiff_inspect_format_matches_docker_cli",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &["ENV A=1"]);
    docker_ok(
        &d,
        &[
            "run", "-d", "--pull", "never", "--name", "tpl", "-l", "k=v", "-l", "a.b=c", IMAGE,
            "sleep", "60",
        ],
    );
    docker_ok(&d, &["volume", "create", "tplvol"]);
    docker_ok(&d, &["network", "create", "tplnet"]);
    let same = |args: &[&str]| {
        let ours = d.ok(args);
        assert_eq!(ours, docker_ok(&d, args), "skiff {args:?}");
        ours
    };
    assert_eq!(
        same(&["inspect", "-f", "{{.State.Status}}", "tpl"]),
        "running\n"
    );
    assert_eq!(
        same(&[
            "inspect",
            "-f",
            "{{.Name}} {{.Config.Cmd}} {{.State.Running}}",
            "tpl"
        ]),
        "/tpl [sleep 60] true\n"
    );
    assert_eq!(
        same(&[
            "inspect",
            "-f",
            r#"{{index .Config.Labels "k"}} {{json .Config.Labels}}"#,
            "tpl"
        ]),
        "v {\"a.b\":\"c\",\"k\":\"v\"}\n"
    );
    let ip = same(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        "tpl",
    ]);
    ip.trim().parse::<std::net::Ipv4Addr>().expect("an address");
    for t in [
        "{{.State.Pid}} {{.HostConfig.Memory}} {{.Config.Env}} {{.Mounts}} {{.NetworkSettings.Ports}}",
        "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}} {{len .Config.Cmd}}",
        "{{.Id}} {{.Created}} {{upper .State.Status}}",
        "{{.Created}} {{join .Config.Env \",\"}} {{title .Name}}",
    ] {
        same(&["inspect", "-f", t, "tpl"]);
    }
    // `{{json .Config}}`: the same object (docker prints Go's field order, skiff sorted keys).
    let ours: serde_json::Value =
        serde_json::from_str(&d.ok(&["inspect", "-f", "{{json .Config}}", "tpl"])).unwrap();
    assert_eq!(ours["Cmd"], serde_json::json!(["sleep", "60"]));
    assert_eq!(ours["Labels"]["k"], "v");
    // `--format json`: one line, a JSON array of the objects.
    let json = d.ok(&["inspect", "--format", "json", "tpl"]);
    assert_eq!(json.lines().count(), 1, "{json}");
    let arr: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(arr[0]["Name"], "/tpl");
    // Images, volumes, networks.
    same(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}} {{.Os}}/{{.Architecture}} {{.Config.Env}}",
        IMAGE,
    ]);
    same(&["inspect", "--type", "image", "-f", "{{.RepoTags}}", IMAGE]);
    assert_eq!(
        same(&["volume", "inspect", "-f", "{{.Name}} {{.Driver}}", "tplvol"]),
        "tplvol local\n"
    );
    same(&[
        "network",
        "inspect",
        "-f",
        "{{.Name}} {{.Driver}} {{range .IPAM.Config}}{{.Subnet}}{{end}}",
        "tplnet",
    ]);
    // A template that does not parse: exit 64 before anything is printed, as docker.
    for args in [
        &["inspect", "-f", "{{.State", "tpl"][..],
        &["volume", "inspect", "-f", "{{range}}", "tplvol"][..],
    ] {
        let ours = d.run(args);
        let theirs = docker_run(&d, args);
        assert_eq!(ours.status.code(), Some(64), "skiff {args:?}");
        assert_eq!(theirs.status.code(), Some(64), "docker {args:?}");
        let err = String::from_utf8_lossy(&ours.stderr);
        assert!(err.starts_with("template parsing error: "), "{err}");
        assert!(ours.stdout.is_empty());
    }
    // A missing object: reported, the others still printed, exit 1.
    let out = d.run(&["inspect", "-f", "{{.Name}}", "tpl", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/tpl\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such object: nosuch"));
    docker_ok(&d, &["rm", "-f", "tpl"]);
    docker_ok(&d, &["network", "rm", "tplnet"]);
    docker_ok(&d, &["volume", "rm", "tplvol"]);
}
