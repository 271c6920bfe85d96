//! Dockerfile builds (`POST /build`) driven by the stock docker CLI's classic builder and
//! by `skiff build`: multi-stage builds whose images run, the cache, `.dockerignore`,
//! `ADD` of a local tar, refusals; and `commit`. Base images are imported locally.

use std::path::Path;

use skiff_tests::docker_cli::{docker, docker_ok, docker_unavailable, import_busybox};
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon};

const PATH_ENV: &str = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A multi-stage Dockerfile with ARG (before and after FROM), ENV, WORKDIR, COPY,
/// COPY --from, RUN (with a deletion), USER and CMD.
const MULTI_STAGE: &str = r#"ARG GREETING=hello
FROM base:1 AS build
ARG GREETING
ENV OUT=/out
WORKDIR /src
COPY msg.txt ./
RUN mkdir -p $OUT \
 && echo "$GREETING from $(cat msg.txt)" > $OUT/greeting
FROM base:1
COPY --from=build /out/greeting /app/greeting
RUN rm /data/seed.txt && echo "app:x:1234:1234::/app:/bin/sh" >> /etc/passwd
USER app
WORKDIR /app
CMD ["sh", "-c", "cat greeting; id -u; pwd; ls /data/seed.txt 2>/dev/null || echo gone"]
"#;

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn docker_classic_build_multi_stage_runs_and_caches() {
    require!(
        "docker_classic_build_multi_stage_runs_and_caches",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "base:1", &[PATH_ENV]);
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "Dockerfile", MULTI_STAGE);
    write(ctx.path(), "msg.txt", "the context");
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "-t", "built:1"];
        args.extend_from_slice(extra);
        args.push(ctx.path().to_str().unwrap());
        let out = docker(&d)
            .env("DOCKER_BUILDKIT", "0")
            .args(&args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "build failed: {text}\ndaemon log:\n{}",
            d.log_text()
        );
        text
    };
    let first = build(&["--build-arg", "GREETING=hi"]);
    assert!(first.contains("Step 1/13 : ARG GREETING=hello"), "{first}");
    assert!(first.contains("Successfully tagged built:1"), "{first}");
    assert_eq!(count(&first, "Using cache"), 0, "{first}");
    let run = docker_ok(&d, &["run", "--rm", "built:1"]);
    assert_eq!(run, "hi from the context\n1234\n/app\ngone\n");
    // The image's config says what the Dockerfile said.
    let cfg = docker_ok(
        &d,
        &[
            "image",
            "inspect",
            "-f",
            "{{.Config.User}} {{.Config.WorkingDir}} {{json .Config.Cmd}}",
            "built:1",
        ],
    );
    assert_eq!(
        cfg.trim(),
        r#"app /app ["sh","-c","cat greeting; id -u; pwd; ls /data/seed.txt 2>/dev/null || echo gone"]"#
    );
    // Every layer-making step shows in history with its instruction.
    let history = docker_ok(
        &d,
        &[
            "history",
            "--no-trunc",
            "--format",
            "{{.CreatedBy}}",
            "built:1",
        ],
    );
    assert!(history.contains("rm /data/seed.txt"), "{history}");
    assert!(history.contains("#(nop) WORKDIR /app"), "{history}");
    assert!(history.contains("#(nop) COPY --from=build"), "{history}");
    // Built locally, each step's image is named, as the classic builder's are: the image's
    // Parent is the previous step's image, and history's second row is that image.
    let parent = docker_ok(&d, &["image", "inspect", "-f", "{{.Parent}}", "built:1"]);
    assert!(parent.trim().starts_with("sha256:"), "{parent}");
    let ids = docker_ok(&d, &["history", "--no-trunc", "-q", "built:1"]);
    let ids: Vec<&str> = ids.lines().collect();
    let top = docker_ok(&d, &["image", "inspect", "-f", "{{.Id}}", "built:1"]);
    assert_eq!(ids[0], top.trim(), "{ids:?}");
    assert_eq!(ids[1], parent.trim(), "{ids:?}");

    // The same build again: every step after each FROM comes from the cache.
    let second = build(&["--build-arg", "GREETING=hi"]);
    assert_eq!(count(&second, "Using cache"), 10, "{second}");
    // Changing the copied file rebuilds from that COPY on.
    write(ctx.path(), "msg.txt", "a changed context");
    let third = build(&["--build-arg", "GREETING=hi"]);
    assert_eq!(
        count(&third, "Using cache"),
        3,
        "ARG, ENV, WORKDIR cached only:\n{third}"
    );
    assert_eq!(
        docker_ok(&d, &["run", "--rm", "built:1"]),
        "hi from a changed context\n1234\n/app\ngone\n"
    );
    // Step images are hidden from `images` (but not from `images -a`), and `builder
    // prune` removes them.
    let listed = docker_ok(&d, &["images", "-q"]);
    let all = docker_ok(&d, &["images", "-a", "-q"]);
    assert!(
        count(&all, "\n") > count(&listed, "\n") + 5,
        "{listed}\n--\n{all}"
    );
    let df = docker_ok(
        &d,
        &["system", "df", "--format", "{{.Type}} {{.TotalCount}}"],
    );
    assert!(df.contains("Build Cache"), "{df}");
    docker_ok(&d, &["builder", "prune", "-f"]);
    let after = docker_ok(&d, &["images", "-a", "-q"]);
    assert_eq!(count(&after, "\n"), count(&listed, "\n"), "{after}");
    assert_eq!(
        docker_ok(&d, &["run", "--rm", "built:1"]),
        "hi from a changed context\n1234\n/app\ngone\n"
    );
    // The Dockerfile on stdin with a directory context (`build -f - DIR`): docker CLI 28
    // sends a context whose last entry ends without tar padding. A failed RUN's exit code
    // is the CLI's.
    let stdin_build = |dockerfile: &str| {
        use std::io::Write;
        let mut child = docker(&d)
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-t", "stdin:1", "-f", "-"])
            .arg(ctx.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(dockerfile.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = stdin_build("FROM base:1\nCOPY msg.txt /m\nCMD [\"cat\", \"/m\"]\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        docker_ok(&d, &["run", "--rm", "stdin:1"]),
        "a changed context"
    );
    let out = stdin_build("FROM base:1\nRUN exit 3\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("returned a non-zero code: 3"), "{err}");
}

#[test]
fn skiff_build_dockerignore_add_tar_and_refusals() {
    require!(
        "skiff_build_dockerignore_add_tar_and_refusals",
        root_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "base:1", &[PATH_ENV]);
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "keep/a.txt", "a");
    write(ctx.path(), "keep/secret.key", "no");
    write(ctx.path(), "logs/x.log", "no");
    write(ctx.path(), ".dockerignore", "logs\n**/*.key\n");
    // A gzip tar to ADD: extracted into the destination.
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(ctx.path().join("bundle.tar.gz")).unwrap(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(8);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    h.set_cksum();
    b.append_data(&mut h, "pkg/inside.txt", &b"extracted"[..8])
        .unwrap();
    b.into_inner().unwrap().finish().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "# escape=`\nFROM base:1\nCOPY . /ctx/\nADD bundle.tar.gz /opt/\nCOPY --chown=nobody:nobody --chmod=600 keep/a.txt /owned\nRUN ls -R /ctx | sort > /listing `\n && stat -c '%U %a' /owned >> /listing\nCMD [\"cat\", \"/listing\", \"/opt/pkg/inside.txt\"]\n",
    );
    let out = d.run(&[
        "build",
        "-q",
        "--iidfile",
        ctx.path().join("iid").to_str().unwrap(),
        "-t",
        "ign:1",
        "-t",
        "ign:2",
        ctx.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.log_text()
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(std::fs::read_to_string(ctx.path().join("iid")).unwrap(), id);
    let listing = d.ok(&["run", "--rm", "ign:2"]);
    assert!(listing.contains("a.txt"), "{listing}");
    assert!(listing.contains("Dockerfile"), "{listing}");
    assert!(!listing.contains("secret.key"), "{listing}");
    assert!(!listing.contains("x.log"), "{listing}");
    assert!(listing.contains("nobody 600"), "{listing}");
    assert!(listing.ends_with("extracte"), "{listing}");

    // Bad input: each a clear error, a non-zero exit, nothing tagged.
    let refused_with = |dockerfile: &str, needle: &str, code: i32| {
        write(ctx.path(), "Dockerfile", dockerfile);
        let out = d.run(&["build", "-t", "bad:1", ctx.path().to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{dockerfile}: {err}");
        assert!(
            err.contains(needle),
            "{dockerfile}: {needle:?} not in {err}"
        );
        assert!(!d.ok(&["images"]).contains("bad "), "nothing tagged");
    };
    let refused = |dockerfile: &str, needle: &str| refused_with(dockerfile, needle, 1);
    refused("FROM base:1\nFOO bar\n", "line 2");
    refused(
        "FROM base:1\nCOPY ../outside /x\n",
        "outside the build context",
    );
    refused("FROM base:1\nCOPY --from=nope /x /y\n", "nope");
    // A failed RUN's exit code is the build's, as with the docker CLI.
    refused_with(
        "FROM base:1\nRUN echo failing-output; exit 3\n",
        "returned a non-zero code: 3",
        3,
    );
    refused(
        "FROM base:1\nCOPY missing.txt /x\n",
        "file not found in build context",
    );
}

#[test]
fn commit_with_changes() {
    require!(
        "commit_with_changes",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "base:1", &[PATH_ENV]);
    docker_ok(
        &d,
        &[
            "run",
            "--name",
            "c1",
            "base:1",
            "sh",
            "-c",
            "echo committed > /note; rm /data/seed.txt",
        ],
    );
    docker_ok(
        &d,
        &[
            "commit",
            "--change",
            "CMD [\"cat\", \"/note\"]",
            "--change",
            "ENV X=1",
            "c1",
            "snap:1",
        ],
    );
    assert_eq!(docker_ok(&d, &["run", "--rm", "snap:1"]), "committed\n");
    assert_eq!(
        docker_ok(
            &d,
            &[
                "run",
                "--rm",
                "snap:1",
                "sh",
                "-c",
                "echo $X; ls /data/seed.txt 2>/dev/null || echo gone"
            ]
        ),
        "1\ngone\n"
    );
    // `skiff commit` of a running container (paused while read, running after), then
    // `skiff save` and `skiff load` into a fresh data root.
    let id = docker_ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "c2",
            "base:1",
            "sh",
            "-c",
            "echo live > /live; sleep 60",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let image = d.ok(&[
        "commit",
        "-m",
        "a message",
        "-a",
        "someone",
        "-c",
        "CMD [\"cat\", \"/live\"]",
        "c2",
        "live:1",
    ]);
    assert!(image.trim().starts_with("sha256:"), "{image}");
    assert_eq!(
        docker_ok(&d, &["inspect", "-f", "{{.State.Status}}", id.trim()]).trim(),
        "running"
    );
    let hist = docker_ok(&d, &["history", "--format", "{{.Comment}}", "live:1"]);
    assert_eq!(hist.lines().next(), Some("a message"), "{hist}");
    // A commit's Parent is the container's image.
    let parent = docker_ok(&d, &["image", "inspect", "-f", "{{.Parent}}", "live:1"]);
    let base = docker_ok(&d, &["image", "inspect", "-f", "{{.Id}}", "base:1"]);
    assert_eq!(parent.trim(), base.trim());
    let top = docker_ok(
        &d,
        &[
            "image",
            "inspect",
            "-f",
            "{{.Author}}|{{.Comment}}",
            "live:1",
        ],
    );
    assert_eq!(top.trim(), "someone|a message");
    let archive = tempfile::NamedTempFile::new().unwrap();
    d.ok(&["save", "-o", archive.path().to_str().unwrap(), "live:1"]);
    let d2 = Daemon::start().unwrap();
    let loaded = d2.ok(&["load", "-i", archive.path().to_str().unwrap()]);
    assert_eq!(loaded, "Loaded image: live:1\n");
    assert_eq!(d2.ok(&["run", "--rm", "live:1"]), "live\n");
    docker_ok(&d, &["rm", "-f", "c2"]);
}

#[test]
fn save_rmi_load_round_trip_and_into_a_fresh_daemon() {
    require!(
        "save_rmi_load_round_trip_and_into_a_fresh_daemon",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "base:1", &[PATH_ENV]);
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM base:1\nRUN echo saved > /saved.txt\nCMD [\"cat\", \"/saved.txt\"]\n",
    );
    let out = docker(&d)
        .env("DOCKER_BUILDKIT", "0")
        .args([
            "build",
            "-q",
            "-t",
            "saveme:1",
            ctx.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    docker_ok(&d, &["tag", "saveme:1", "saveme:also"]);
    let archive = ctx.path().join("images.tar");
    docker_ok(
        &d,
        &[
            "save",
            "-o",
            archive.to_str().unwrap(),
            "saveme:1",
            "saveme:also",
            "base:1",
        ],
    );
    // What Docker documents: manifest.json naming the config, tags and layers; an OCI
    // index beside it.
    let mut names = Vec::new();
    let mut manifest = String::new();
    let mut a = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        if p == "manifest.json" {
            std::io::Read::read_to_string(&mut e, &mut manifest).unwrap();
        }
        names.push(p);
    }
    assert!(names.contains(&"index.json".to_string()), "{names:?}");
    assert!(names.contains(&"oci-layout".to_string()), "{names:?}");
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let entries = m.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{manifest}");
    assert_eq!(
        entries[0]["Config"],
        format!("blobs/sha256/{}", id.trim_start_matches("sha256:"))
    );
    assert_eq!(
        entries[0]["RepoTags"],
        serde_json::json!(["saveme:1", "saveme:also"])
    );
    assert_eq!(entries[0]["Layers"].as_array().unwrap().len(), 2);

    docker_ok(&d, &["rmi", "saveme:1", "saveme:also"]);
    assert!(!docker_ok(&d, &["images"]).contains("saveme"));
    let loaded = docker_ok(&d, &["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: saveme:1"), "{loaded}");
    assert_eq!(docker_ok(&d, &["run", "--rm", "saveme:also"]), "saved\n");
    let same = docker_ok(&d, &["image", "inspect", "-f", "{{.Id}}", "saveme:1"]);
    assert_eq!(same.trim(), id, "the image id (config digest) is kept");

    // Into a daemon with a fresh data root.
    let d2 = Daemon::start().unwrap();
    let loaded = docker_ok(&d2, &["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: base:1"), "{loaded}");
    assert_eq!(docker_ok(&d2, &["run", "--rm", "saveme:1"]), "saved\n");
    // A corrupt archive is refused, nothing loaded.
    let junk = ctx.path().join("junk.tar");
    std::fs::write(&junk, b"not a tar at all").unwrap();
    let out = docker(&d2)
        .args(["load", "-i", junk.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("image archive"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compose_build_through_the_api_and_through_the_cli() {
    require!(
        "compose_build_through_the_api_and_through_the_cli",
        root_unavailable(),
        docker_unavailable(),
        skiff_tests::docker_cli::compose_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "base:1", &[PATH_ENV]);
    let proj = tempfile::tempdir().unwrap();
    write(
        proj.path(),
        "app/Dockerfile",
        "FROM base:1\nARG WHO=nobody\nRUN echo \"built by $WHO\" > /who\nCMD [\"cat\", \"/who\"]\n",
    );
    write(
        proj.path(),
        "docker-compose.yml",
        "version: \"2.4\"\nservices:\n  app:\n    build:\n      context: ./app\n      args:\n        WHO: compose\n    image: composed:1\n    network_mode: bridge\n",
    );
    for (cli_build, expect) in [("0", "built by compose\n"), ("1", "built by compose\n")] {
        let out = std::process::Command::new("docker-compose")
            .args(["-p", "skiffbuild", "build", "--no-cache"])
            .current_dir(proj.path())
            .env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
            .env("DOCKER_CONFIG", d.dir().join("docker-config"))
            .env("COMPOSE_DOCKER_CLI_BUILD", cli_build)
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "COMPOSE_DOCKER_CLI_BUILD={cli_build}: {text}\n{}",
            d.log_text()
        );
        assert_eq!(docker_ok(&d, &["run", "--rm", "composed:1"]), expect);
        // The service runs from what it built.
        let up = std::process::Command::new("docker-compose")
            .args(["-p", "skiffbuild", "up", "-d", "--no-build"])
            .current_dir(proj.path())
            .env("DOCKER_HOST", format!("unix://{}", d.socket.display()))
            .output()
            .unwrap();
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
        let wait = docker_ok(&d, &["wait", "skiffbuild_app_1"]);
        assert_eq!(wait.trim(), "0");
        assert_eq!(docker_ok(&d, &["logs", "skiffbuild_app_1"]), expect);
        docker_ok(&d, &["rm", "skiffbuild_app_1"]);
        docker_ok(&d, &["rmi", "composed:1"]);
    }
}

#[test]
fn a_build_whose_client_goes_away_leaves_no_container() {
    require!(
        "a_build_whose_client_goes_away_leaves_no_container",
        root_unavailable(),
        docker_unavailable()
    );
    use std::io::BufRead;
    let d = Daemon::start().unwrap();
    import_busybox(&d, "base:1", &[PATH_ENV]);
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM base:1\nRUN echo started; sleep 60\n",
    );
    let mut child = docker(&d)
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-t", "gone:1", ctx.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().trim() == "started" {
            break;
        }
    }
    assert_eq!(
        docker_ok(&d, &["ps", "-q"]).lines().count(),
        1,
        "the RUN container runs"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = docker_ok(&d, &["ps", "-aq"]);
        if left.trim().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "build container left: {left}\n{}",
            d.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!docker_ok(&d, &["images"]).contains("gone"));
}

#[test]
fn metadata_instructions_onbuild_shell_scratch_and_target() {
    require!(
        "metadata_instructions_onbuild_shell_scratch_and_target",
        root_unavailable(),
        docker_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "base:1", &[PATH_ENV]);
    let ctx = tempfile::tempdir().unwrap();
    let build = |dockerfile: &str, extra: &[&str]| {
        write(ctx.path(), "Dockerfile", dockerfile);
        let mut args = vec!["build", "-q"];
        args.extend_from_slice(extra);
        args.push(ctx.path().to_str().unwrap());
        let out = docker(&d)
            .env("DOCKER_BUILDKIT", "0")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{dockerfile}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log_text()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    build(
        "FROM base:1\nONBUILD RUN echo triggered > /onbuild\nLABEL kind=parent\n",
        &["-t", "parent:1"],
    );
    build(
        r#"FROM parent:1
SHELL ["/bin/sh", "-e", "-c"]
RUN ["sh", "-c", "echo exec-form > /exec"]
ENV A=1 B="two words"
LABEL "com.example.x"="y z" other=$A
EXPOSE 8080 53/udp
VOLUME /vol
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --retries=2 CMD true
USER nobody:nobody
ENTRYPOINT ["sh", "-c"]
CMD ["cat /onbuild /exec; echo $B"]
"#,
        &["-t", "child:1", "--label", "from.cli=yes"],
    );
    let f = |fmt: &str| {
        docker_ok(&d, &["image", "inspect", "-f", fmt, "child:1"])
            .trim()
            .to_string()
    };
    assert_eq!(
        f("{{json .Config.Labels}}"),
        r#"{"com.example.x":"y z","from.cli":"yes","kind":"parent","other":"1"}"#
    );
    assert_eq!(
        f("{{json .Config.ExposedPorts}}"),
        r#"{"53/udp":{},"8080/tcp":{}}"#
    );
    assert_eq!(f("{{json .Config.Volumes}}"), r#"{"/vol":{}}"#);
    assert_eq!(
        f("{{.Config.StopSignal}} {{.Config.User}}"),
        "SIGUSR1 nobody:nobody"
    );
    assert_eq!(
        f("{{json .Config.Healthcheck}} {{json .Config.Shell}}"),
        r#"{"Test":["CMD-SHELL","true"],"Interval":5000000000,"Retries":2} ["/bin/sh","-e","-c"]"#
    );
    assert_eq!(
        docker_ok(
            &d,
            &[
                "image",
                "inspect",
                "-f",
                "{{json .Config.OnBuild}}",
                "parent:1"
            ]
        )
        .trim(),
        r#"["RUN echo triggered > /onbuild"]"#
    );
    assert_eq!(
        f("{{json .Config.Entrypoint}} {{json .Config.Cmd}}"),
        r#"["sh","-c"] ["cat /onbuild /exec; echo $B"]"#
    );
    assert_eq!(
        docker_ok(&d, &["run", "--rm", "child:1"]),
        "triggered\nexec-form\ntwo words\n"
    );
    // `--target` stops at a stage; `FROM scratch` with a COPY runs what it copied.
    write(ctx.path(), "hello.txt", "from scratch\n");
    let id = build(
        "FROM base:1 AS first\nRUN echo first > /f\nFROM scratch AS second\nCOPY hello.txt /\nFROM base:1\nRUN false\n",
        &["--target", "second", "-t", "scratchy:1"],
    );
    assert!(id.starts_with("sha256:"));
    let layers = docker_ok(
        &d,
        &[
            "image",
            "inspect",
            "-f",
            "{{len .RootFS.Layers}}",
            "scratchy:1",
        ],
    );
    assert_eq!(layers.trim(), "1");
    let out = docker(&d)
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--target", "nosuch", ctx.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed to reach build target nosuch"));
}

#[test]
fn built_image_pushed_zstd_chunked_starts_lazily_from_a_fresh_data_root() {
    require!(
        "built_image_pushed_zstd_chunked_starts_lazily_from_a_fresh_data_root",
        root_unavailable(),
        skiff_tests::registry::registry_unavailable()
    );
    let reg = skiff_tests::Registry::start().unwrap();
    let d = Daemon::start().unwrap();
    import_busybox(&d, "base:1", &[PATH_ENV]);
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM base:1\nRUN echo lazy > /lazy.txt\nCMD [\"cat\", \"/lazy.txt\"]\n",
    );
    let image = format!("{}/built/lazy:1", reg.host());
    d.ok(&["build", "-q", "-t", &image, ctx.path().to_str().unwrap()]);
    let bad = d.run(&["push", "--compression", "brotli", &image]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown compression"));
    let pushed = d.ok(&["push", "--compression", "zstd:chunked", &image]);
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    // RepoDigests names the manifest actually pushed.
    let digest = pushed
        .split("digest: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    let repo_digests = d.ok(&["image", "inspect", &image]);
    assert!(repo_digests.contains(&digest), "{repo_digests} vs {digest}");

    let d2 = Daemon::start().unwrap();
    let pulled = d2.ok(&["pull", &image]);
    assert!(pulled.contains("Lazy image"), "{pulled}");
    assert_eq!(d2.ok(&["run", "--rm", &image]), "lazy\n");

    // Pushed as stored (no --compression): the built layer is zstd:chunked already, the
    // imported base layer stays gzip; the image still starts lazily.
    let as_is = format!("{}/built/asis:1", reg.host());
    d.ok(&["tag", &image, &as_is]);
    d.ok(&["push", &as_is]);
    let d3 = Daemon::start().unwrap();
    let pulled = d3.ok(&["pull", &as_is]);
    assert!(pulled.contains("Lazy image"), "{pulled}");
    assert_eq!(d3.ok(&["run", "--rm", &as_is]), "lazy\n");

    // eStargz: lazy too; its TOC entry changes the diff_ids, so the pushed image is another.
    let estargz = format!("{}/built/estargz:1", reg.host());
    d.ok(&["tag", &image, &estargz]);
    let pushed = d.ok(&["push", "--compression", "estargz", &estargz]);
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    let d4 = Daemon::start().unwrap();
    let pulled = d4.ok(&["pull", &estargz]);
    assert!(pulled.contains("Lazy image"), "{pulled}");
    assert_eq!(d4.ok(&["run", "--rm", &estargz]), "lazy\n");
    let id = |d: &Daemon| d.ok(&["image", "inspect", "-f", "{{.Id}}", &estargz]);
    assert_ne!(id(&d), id(&d4));
    let formats = d4.ok(&["image", "inspect", "-f", "{{len .RootFS.Layers}}", &estargz]);
    assert_eq!(formats.trim(), "2");
}

#[test]
fn docker_build_with_the_dockerfile_on_stdin() {
    require!(
        "docker_build_with_the_dockerfile_on_stdin",
        root_unavailable(),
        docker_unavailable()
    );
    use std::io::Write;
    let d = Daemon::start().unwrap();
    import_busybox(&d, "base:1", &[PATH_ENV]);
    let mut child = docker(&d)
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", "stdin:1", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM base:1\nRUN echo from-stdin > /s\nCMD [\"cat\", \"/s\"]\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(docker_ok(&d, &["run", "--rm", "stdin:1"]), "from-stdin\n");
}

#[test]
fn python_sdk_and_docker_20_10_build() {
    use skiff_tests::docker_cli::{
        docker_20_10, docker_20_10_unavailable, python_sdk, sdk_unavailable,
    };
    require!(
        "python_sdk_and_docker_20_10_build",
        root_unavailable(),
        docker_unavailable(),
        sdk_unavailable(),
        docker_20_10_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "base:1", &[PATH_ENV]);
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM base:1\nARG V=0\nRUN echo \"v$V\" > /v\nCMD [\"cat\", \"/v\"]\n",
    );
    // The SDK's images.build parses the stream for the image and returns it.
    let script = format!(
        r#"
import docker
c = docker.from_env()
img, logs = c.images.build(path={:?}, tag="sdk:1", buildargs={{"V": "7"}}, rm=True)
print("built", img.id == c.images.get("sdk:1").id, any("Step 1/4" in l.get("stream", "") for l in logs))
print(c.containers.run("sdk:1", remove=True).decode(), end="")
try:
    c.images.build(path={:?}, dockerfile="Missing")
except docker.errors.BuildError as e:
    print("refused", "Cannot locate specified Dockerfile" in str(e))
"#,
        ctx.path().to_str().unwrap(),
        ctx.path().to_str().unwrap()
    );
    let (ok, out) = python_sdk(&d, &script);
    assert!(ok, "{out}\n{}", d.log_text());
    assert_eq!(out, "built True True\nv7\nrefused True\n");
    // docker 20.10's CLI uses the classic builder by default.
    let out = docker_20_10(&d)
        .args([
            "build",
            "-t",
            "old:1",
            "--build-arg",
            "V=20",
            ctx.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Successfully tagged old:1"));
    assert_eq!(docker_ok(&d, &["run", "--rm", "old:1"]), "v20\n");
}

#[test]
fn run_steps_stack_earlier_layers_over_the_base_mount() {
    require!(
        "run_steps_stack_earlier_layers_over_the_base_mount",
        root_unavailable()
    );
    let d = Daemon::start().unwrap();
    import_busybox(&d, "base:1", &[PATH_ENV]);
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM base:1\nRUN echo a > /a && mkdir -p /d/sub && echo x > /d/sub/x\nRUN cat /a > /b && rm -r /d && mkdir /d && echo y > /d/y\nRUN rm /a && cat /b\nRUN test ! -e /a && test ! -e /d/sub && cat /d/y > /c\nCMD [\"cat\", \"/b\", \"/c\"]\n",
    );
    let log_before = d.log_text().matches("mounted image").count();
    d.ok(&[
        "build",
        "-q",
        "-t",
        "stacked:1",
        ctx.path().to_str().unwrap(),
    ]);
    let mounts = d.log_text().matches("mounted image").count() - log_before;
    // Only the base image is mounted: each RUN stacks the earlier steps' layer
    // directories (whiteouts and opaque directories included) over it.
    assert_eq!(mounts, 1, "{}", d.log_text());
    assert_eq!(d.ok(&["run", "--rm", "stacked:1"]), "a\ny\n");
    // The committed layers say the same (a fresh mount of the built image).
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "stacked:1",
            "sh",
            "-c",
            "ls /a /d/sub 2>&1 | wc -l; ls /d"
        ]),
        "2\ny\n"
    );
}

/// Runs `docker login` on `d` for `host` with the password on stdin.
fn docker_login(d: &Daemon, host: &str, user: &str, password: &str) {
    use std::io::Write;
    let mut child = docker(d)
        .args(["login", "-u", user, "--password-stdin", host])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn from_a_private_registry_uses_the_clients_registry_config() {
    require!(
        "from_a_private_registry_uses_the_clients_registry_config",
        root_unavailable(),
        docker_unavailable(),
        skiff_tests::registry::registry_unavailable()
    );
    let (user, password) = ("builder", "b-secret-pw");
    let server = skiff_tests::TokenServer::start(&[(user, password)]).unwrap();
    let reg = skiff_tests::Registry::start_with_token(&server).unwrap();
    let private = format!("{}/private/base:1", reg.host());
    let d = Daemon::start().unwrap();
    import_busybox(&d, &private, &[PATH_ENV]);
    docker_login(&d, &reg.host(), user, password);
    docker_ok(&d, &["push", &private]);

    // A fresh daemon knows no credentials: the build pulls FROM with the ones the docker
    // CLI sends in X-Registry-Config.
    let d2 = Daemon::start().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        &format!("FROM {private}\nRUN echo private > /p\nCMD [\"cat\", \"/p\"]\n"),
    );
    let out = docker(&d2)
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-t", "priv:1", ctx.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "pulled without credentials?");
    docker_login(&d2, &reg.host(), user, password);
    let out = docker(&d2)
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-t", "priv:1", ctx.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d2.log_text()
    );
    assert_eq!(docker_ok(&d2, &["run", "--rm", "priv:1"]), "private\n");
    assert!(!d2.log_text().contains(password));
}
