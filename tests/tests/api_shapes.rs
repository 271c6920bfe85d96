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
    // A UUID kept in the data root, the host's OS name, the network pools.
    let id = docker_ok(&d, &["info", "-f", "{{.ID}}"]);
    let id = id.trim();
    assert_eq!(id.len(), 36, "{id}");
    let kept = std::fs::read_to_string(d.data_root.join("engine-id")).unwrap();
    assert_eq!(kept.trim(), id);
    assert_eq!(docker_ok(&d, &["info", "-f", "{{.ID}}"]).trim(), id);
    if let Ok(os) = std::fs::read_to_string("/etc/os-release") {
        let pretty = os
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap();
        assert_eq!(
            docker_ok(&d, &["info", "-f", "{{.OperatingSystem}}"]).trim(),
            pretty
        );
    }
    let pools = docker_ok(&d, &["info", "-f", "{{json .DefaultAddressPools}}"]);
    assert!(
        pools.contains(r#"{"Base":"172.19.0.0/16","Size":16}"#),
        "{pools}"
    );
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

/// `docker inspect`'s raw JSON (the docker CLI prints the daemon's answer as is).
fn inspect_json(d: &Daemon, name: &str) -> serde_json::Value {
    let out = docker_ok(d, &["inspect", name]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

/// Container inspect carries every key dockerd (API 1.43) sends, null or empty when unset,
/// the real overlay paths and masked/read-only paths; exposed but unpublished ports (the
/// container's and its image's) are listed with no binding.
#[test]
fn container_inspect_keys_and_exposed_ports() {
    require!(
        "container_inspect_keys_and_exposed_ports",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &["EXPOSE 8080"]);
    let run = |args: &[&str]| {
        let mut all = vec!["run", "-d", "--pull", "never"];
        all.extend_from_slice(args);
        docker_ok(&d, &all)
    };
    run(&["--name", "ex", "--expose", "5000", IMAGE, "sleep", "100"]);
    let v = inspect_json(&d, "ex");
    let null = serde_json::Value::Null;
    let empty = serde_json::json!([]);

    assert_eq!(v["GraphDriver"]["Name"], "overlay", "{v}");
    let data = v["GraphDriver"]["Data"].as_object().unwrap();
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["LowerDir", "MergedDir", "UpperDir", "WorkDir"]);
    let id = v["Id"].as_str().unwrap();
    let dir = |k: &str| data[k].as_str().unwrap().to_string();
    assert!(
        dir("UpperDir").ends_with(&format!("{id}/upper")),
        "{data:?}"
    );
    assert!(dir("WorkDir").ends_with(&format!("{id}/work")), "{data:?}");
    assert!(
        dir("MergedDir").ends_with(&format!("{id}/rootfs")),
        "{data:?}"
    );
    let lower = dir("LowerDir");
    assert!(!lower.is_empty(), "{data:?}");
    for l in lower.split(':') {
        assert!(std::path::Path::new(l).is_dir(), "lower {l} of {data:?}");
    }
    for k in ["MountLabel", "ProcessLabel", "AppArmorProfile"] {
        assert_eq!(v[k], "", "{k}");
    }

    let h = &v["HostConfig"];
    for k in [
        "Binds",
        "VolumesFrom",
        "CapAdd",
        "CapDrop",
        "ExtraHosts",
        "GroupAdd",
        "Links",
        "SecurityOpt",
        "DeviceCgroupRules",
        "DeviceRequests",
        "MemorySwappiness",
        "PidsLimit",
    ] {
        assert_eq!(h.get(k), Some(&null), "HostConfig.{k} in {h}");
    }
    for k in [
        "BlkioWeightDevice",
        "BlkioDeviceReadBps",
        "BlkioDeviceWriteBps",
        "BlkioDeviceReadIOps",
        "BlkioDeviceWriteIOps",
    ] {
        assert_eq!(h.get(k), Some(&empty), "HostConfig.{k} in {h}");
    }
    assert_eq!(h["OomKillDisable"], false);
    let list = |x: &serde_json::Value| -> Vec<String> {
        serde_json::from_value(x.clone()).unwrap_or_else(|_| panic!("{x}"))
    };
    let masked = list(&h["MaskedPaths"]);
    assert!(masked.contains(&"/proc/kcore".to_string()), "{masked:?}");
    assert!(masked.contains(&"/sys/firmware".to_string()), "{masked:?}");
    let ro = list(&h["ReadonlyPaths"]);
    assert!(ro.contains(&"/proc/sys".to_string()), "{ro:?}");
    assert!(ro.contains(&"/proc/sysrq-trigger".to_string()), "{ro:?}");

    let c = &v["Config"];
    for k in ["Volumes", "Entrypoint", "OnBuild"] {
        assert_eq!(c.get(k), Some(&null), "Config.{k} in {c}");
    }
    let mut exposed: Vec<&String> = c["ExposedPorts"].as_object().unwrap().keys().collect();
    exposed.sort();
    assert_eq!(exposed, ["5000/tcp", "8080/tcp"]);

    let n = &v["NetworkSettings"];
    for k in ["SecondaryIPAddresses", "SecondaryIPv6Addresses"] {
        assert_eq!(n.get(k), Some(&null), "NetworkSettings.{k}");
    }
    let bridge = &n["Networks"]["bridge"];
    assert!(n["IPPrefixLen"].as_i64().unwrap() > 0, "{n}");
    assert_eq!(n["IPPrefixLen"], bridge["IPPrefixLen"]);
    for k in ["IPAMConfig", "Links", "Aliases", "DriverOpts"] {
        assert_eq!(
            bridge.get(k),
            Some(&null),
            "Networks.bridge.{k} in {bridge}"
        );
    }
    assert_eq!(
        n["Ports"],
        serde_json::json!({"5000/tcp": null, "8080/tcp": null})
    );
    let ps = |name: &str| {
        let out = docker_ok(&d, &["ps", "--format", "{{.Names}}|{{.Ports}}"]);
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}|")).map(str::to_string))
            .unwrap_or_else(|| panic!("{name} not in {out}"))
    };
    assert_eq!(ps("ex").trim(), "5000/tcp, 8080/tcp");

    // Published and exposed-only together.
    run(&[
        "--name", "pub", "-p", "80", "--expose", "9090", IMAGE, "sleep", "100",
    ]);
    let ports = &inspect_json(&d, "pub")["NetworkSettings"]["Ports"];
    let mut keys: Vec<&String> = ports.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["80/tcp", "8080/tcp", "9090/tcp"], "{ports}");
    assert_eq!(ports["9090/tcp"], null);
    assert_eq!(ports["8080/tcp"], null);
    let bound = ports["80/tcp"].as_array().unwrap();
    assert!(!bound.is_empty(), "{ports}");
    assert!(
        bound[0]["HostPort"]
            .as_str()
            .unwrap()
            .parse::<u16>()
            .unwrap()
            > 0
    );
    let row = ps("pub");
    assert!(
        row.contains("->80/tcp") && row.contains("8080/tcp") && row.contains("9090/tcp"),
        "{row}"
    );

    // A user-defined network: its entry has the aliases; the top-level fields (the default
    // bridge's) are empty.
    docker_ok(&d, &["network", "create", "shapesnet"]);
    run(&[
        "--name",
        "onnet",
        "--network",
        "shapesnet",
        "--network-alias",
        "al",
        IMAGE,
        "sleep",
        "100",
    ]);
    let n = inspect_json(&d, "onnet")["NetworkSettings"].clone();
    assert_eq!(n["IPAddress"], "");
    assert_eq!(n["IPPrefixLen"], 0);
    let ep = &n["Networks"]["shapesnet"];
    assert!(ep["IPPrefixLen"].as_i64().unwrap() > 0, "{ep}");
    assert!(list(&ep["Aliases"]).contains(&"al".to_string()), "{ep}");
    for k in ["IPAMConfig", "Links", "DriverOpts"] {
        assert_eq!(ep.get(k), Some(&null), "Networks.shapesnet.{k} in {ep}");
    }

    // Privileged: nothing masked or read-only, as dockerd answers.
    docker_ok(
        &d,
        &[
            "create",
            "--pull",
            "never",
            "--name",
            "priv",
            "--privileged",
            IMAGE,
            "true",
        ],
    );
    let h = inspect_json(&d, "priv")["HostConfig"].clone();
    assert_eq!(h.get("MaskedPaths"), Some(&null));
    assert_eq!(h.get("ReadonlyPaths"), Some(&null));

    docker_ok(&d, &["rm", "-f", "ex", "pub", "onnet", "priv"]);
    docker_ok(&d, &["network", "rm", "shapesnet"]);
}

/// `/containers/json` lists exposed-only ports as `{PrivatePort, Type}`; `/images/json` has
/// `VirtualSize`; image inspect has `Container`, `Metadata.LastTagTime` and `Config`'s
/// unset keys as null.
#[test]
fn python_sdk_list_and_image_inspect_keys() {
    require!(
        "python_sdk_list_and_image_inspect_keys",
        root_unavailable(),
        sdk_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, IMAGE, &[]);
    let (ok, out) = python_sdk(
        &d,
        &format!(
            r#"
import docker, json, time
c = docker.from_env()
cid = c.api.create_container("{IMAGE}", "sleep 100", name="lister", ports=[5000])["Id"]
c.api.start(cid)
ct = c.containers.get(cid)
row = c.api.containers(filters={{"name": "lister"}})[0]
print(json.dumps(row["Ports"], sort_keys=True))
print(ct.attrs["GraphDriver"]["Name"], sorted(ct.attrs["GraphDriver"]["Data"]))
img = [i for i in c.api.images() if "{IMAGE}" in (i["RepoTags"] or [])][0]
print(img["VirtualSize"] == img["Size"] > 0)
a = c.api.inspect_image("{IMAGE}")
print(repr(a["Container"]), json.dumps({{k: a["Config"][k] for k in ["Env", "Cmd", "Volumes", "Entrypoint", "OnBuild", "Labels"]}}, sort_keys=True))
first = a["Metadata"]["LastTagTime"]
print(first.startswith("20"), first.endswith("Z"))
time.sleep(1.1)
c.images.get("{IMAGE}").tag("shapes-again", "v1")
again = c.api.inspect_image("{IMAGE}")["Metadata"]["LastTagTime"]
print(again > first)
ct.remove(force=True)
"#
        ),
    );
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            r#"[{"PrivatePort": 5000, "Type": "tcp"}]"#,
            "overlay ['LowerDir', 'MergedDir', 'UpperDir', 'WorkDir']",
            "True",
            r#"'' {"Cmd": null, "Entrypoint": null, "Env": null, "Labels": null, "OnBuild": null, "Volumes": null}"#,
            "True True",
            "True",
        ],
        "{out}"
    );
}
