//! Cold start of a large image over loopback and over a shaped link, in one run.
//!
//! `sudo target/release/shaped-link [--rounds 3] [--concurrent 20] [--rate-mbit 200]
//! [--delay-ms 10] [--out DIR] [--rootfs DIR [--cmd JSON]] [--skopeo]` (root; build with
//! `cargo build --release -p skiff -p skiff-benches`; the `skiff` binary next to this one is
//! used, or `SKIFF_BIN`).
//!
//! 1. A registry (Debian's `docker-registry`) on 127.0.0.1, and the demo image
//!    (`scripts/make-demo-rootfs.sh`: busybox + python3 + bulky data) published to it as
//!    gzip and converted by skiff to zstd:chunked (`--skopeo`: also by skopeo). `--rootfs`
//!    publishes another root filesystem instead, with `--cmd` (a JSON array) as its `CMD`
//!    (`scripts/make-jdk-rootfs.sh` makes a JDK one and prints its command).
//! 2. The shaped link ([`skiff_benches::shaped_link`]): a network namespace of its own with
//!    a second registry process serving the same storage, a veth pair to it with a tbf of
//!    `--rate-mbit` on both ends, and the delay proxy ([`skiff_benches::delay_proxy`]) on
//!    127.0.0.1 adding `--delay-ms` each way.
//! 3. `skiff bench IMAGE --full --push-profile --concurrent N` against each registry: cold
//!    (no profile), cold with the profile shared through the registry (fresh data root),
//!    warm, full pull, N cold starts at once; then the floor of each link: the bytes a cold
//!    start needs (pull metadata + compressed chunks the workload read) over the bandwidth,
//!    plus two round trips, plus the warm start. Writes `report.md` (and each link's
//!    `bench.md`, `bench.svg`, `bench.json`) to `--out`.
//!
//! `--serve` stops after step 2 and keeps both registries up until Ctrl-C (to try a daemon
//! against them by hand).
//!
//! Everything it makes (namespace, veth, registries, daemons, temporary files) is removed
//! at exit, on failure and on Ctrl-C / SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use skiff_benches::delay_proxy::DelayProxy;
use skiff_benches::shaped_link::ShapedLink;

struct Opts {
    rounds: u32,
    concurrent: u32,
    rate_mbit: u64,
    delay_ms: u64,
    out: PathBuf,
    rootfs: Option<PathBuf>,
    /// The image's `CMD`, a JSON array.
    cmd: String,
    skopeo: bool,
    links: Vec<String>,
    serve: bool,
    baseline: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: shaped-link [--rounds N] [--concurrent N] [--rate-mbit M] [--delay-ms D] \
         [--out DIR] [--rootfs DIR] [--cmd JSON] [--skopeo] [--links loopback,shaped] [--serve] [--baseline SKIFF]"
    );
    std::process::exit(125)
}

fn opts() -> Opts {
    let mut o = Opts {
        rounds: 3,
        concurrent: 20,
        rate_mbit: 200,
        delay_ms: 10,
        out: PathBuf::from("shaped-link-out"),
        rootfs: None,
        cmd: r#"["python3","-c","print('hello')"]"#.into(),
        skopeo: false,
        links: vec!["loopback".into(), "shaped".into()],
        serve: false,
        baseline: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        let num = |s: String| s.parse::<u64>().unwrap_or_else(|_| usage());
        match a.as_str() {
            "--rounds" => o.rounds = num(val()) as u32,
            "--concurrent" => o.concurrent = num(val()) as u32,
            "--rate-mbit" => o.rate_mbit = num(val()),
            "--delay-ms" => o.delay_ms = num(val()),
            "--out" => o.out = PathBuf::from(val()),
            "--rootfs" => o.rootfs = Some(PathBuf::from(val())),
            "--cmd" => o.cmd = val(),
            "--skopeo" => o.skopeo = true,
            "--serve" => o.serve = true,
            "--baseline" => o.baseline = Some(PathBuf::from(val())),
            "--links" => o.links = val().split(',').map(str::to_string).collect(),
            _ => usage(),
        }
    }
    if serde_json::from_str::<Vec<String>>(&o.cmd).is_err() {
        eprintln!("--cmd: a JSON array of strings, like [\"python3\",\"-V\"]");
        std::process::exit(125)
    }
    if o.rounds == 0
        || o.rate_mbit == 0
        || o.links.is_empty()
        || o.links.iter().any(|l| l != "loopback" && l != "shaped")
    {
        usage()
    }
    o
}

/// What a signal handler must undo: the link (namespace, veth, registry inside) and the
/// PIDs of the processes this harness started and has not reaped yet.
static LINK: Mutex<Option<ShapedLink>> = Mutex::new(None);
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static WORK: Mutex<Option<PathBuf>> = Mutex::new(None);
static REGISTRY: Mutex<Option<skiff_tests::registry::Registry>> = Mutex::new(None);

fn cleanup() {
    for pid in CHILDREN
        .lock()
        .map(|mut c| std::mem::take(&mut *c))
        .unwrap_or_default()
    {
        // SIGTERM: `skiff bench` and daemons stop cleanly (unmount, remove data roots).
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..300 {
            match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => break,
            }
        }
    }
    if let Some(mut l) = LINK.lock().ok().and_then(|mut l| l.take()) {
        if let Err(e) = l.teardown() {
            eprintln!("cleanup: {e:#}");
        }
    }
    // Stopped by PID, its storage removed (dropping it).
    drop(REGISTRY.lock().ok().and_then(|mut r| r.take()));
    if let Some(w) = WORK.lock().ok().and_then(|mut w| w.take()) {
        let _ = std::fs::remove_dir_all(w);
    }
}

fn main() {
    let o = opts();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        eprintln!("shaped-link: interrupted, cleaning up");
        cleanup();
        std::process::exit(130);
    });
    let code = match run(&o, &rt) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shaped-link: {e:#}");
            1
        }
    };
    cleanup();
    std::process::exit(code);
}

/// Runs `cmd` to completion as a tracked child (killed by the signal handler if need be).
fn tracked(cmd: &mut Command) -> Result<std::process::ExitStatus> {
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    CHILDREN.lock().unwrap().push(child.id());
    let st = child.wait();
    CHILDREN.lock().unwrap().retain(|p| *p != child.id());
    Ok(st?)
}

fn ok(cmd: &mut Command) -> Result<()> {
    let st = tracked(cmd)?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

fn run(o: &Opts, rt: &tokio::runtime::Runtime) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root (network namespaces, the daemon)");
    }
    if let Some(why) = skiff_tests::registry::registry_unavailable() {
        bail!("{why}");
    }
    let skiff = match std::env::var_os("SKIFF_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?.with_file_name("skiff"),
    };
    if !skiff.exists() {
        bail!("{} not found: build it or set SKIFF_BIN", skiff.display());
    }
    std::env::set_var("SKIFF_BIN", &skiff);
    let work = tempfile::Builder::new()
        .prefix("skiff-shaped-")
        .tempdir()?
        .keep();
    *WORK.lock().unwrap() = Some(work.clone());
    std::fs::create_dir_all(&o.out)?;
    let out = std::fs::canonicalize(&o.out)?;

    let registry = skiff_tests::registry::Registry::start()?;
    let lo = registry.host();
    let storage = registry.storage_dir();
    *REGISTRY.lock().unwrap() = Some(registry);
    eprintln!("== registry on {lo}; publishing the demo image");
    let rootfs = match &o.rootfs {
        Some(r) => r.clone(),
        None => {
            let r = work.join("rootfs");
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-demo-rootfs.sh");
            ok(Command::new("bash")
                .arg(script)
                .arg(&r)
                .stdout(Stdio::null()))?;
            r
        }
    };
    let mut images = vec!["demo:chunked".to_string()];
    {
        let mut d = skiff_tests::Daemon::start()?;
        let pid = d.pid();
        CHILDREN.lock().unwrap().extend(pid);
        d.ok(&[
            "image",
            "import",
            "--change",
            &format!("CMD {}", o.cmd),
            rootfs.to_str().context("rootfs path")?,
            &format!("{lo}/demo:gzip"),
        ]);
        d.ok(&["push", "-q", &format!("{lo}/demo:gzip")]);
        d.ok(&[
            "image",
            "convert",
            &format!("{lo}/demo:gzip"),
            &format!("{lo}/demo:chunked"),
        ]);
        d.stop(false);
        CHILDREN.lock().unwrap().retain(|p| Some(*p) != pid);
    }
    if o.skopeo {
        // skopeo 1.9 pushing zstd:chunked straight to a registry may reuse gzip blobs it
        // knows: go through an oci: layout and push that with --preserve-digests.
        let layout = format!("oci:{}:skopeo", work.join("oci").display());
        ok(Command::new("skopeo").args([
            "copy",
            "-q",
            "--src-tls-verify=false",
            "--dest-compress-format",
            "zstd:chunked",
            &format!("docker://{lo}/demo:gzip"),
            &layout,
        ]))?;
        ok(Command::new("skopeo").args([
            "copy",
            "-q",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &layout,
            &format!("docker://{lo}/demo:skopeo-chunked"),
        ]))?;
        images.push("demo:skopeo-chunked".into());
    }
    if o.rootfs.is_none() {
        let _ = std::fs::remove_dir_all(&rootfs);
    }

    // Publishing wrote gigabytes (rootfs, blobs, conversions): write them back now, or
    // their writeback runs under the first measurements (seen: 100% iowait, cold starts
    // 0.45 s rising to 0.78 s on loopback, then 0.28 s once it was done).
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let mut link = ShapedLink::create(std::process::id(), o.rate_mbit * 1_000_000)?;
    link.start_registry(Path::new("/usr/bin/docker-registry"), &storage, &work)?;
    let ns_registry = link.registry_addr();
    let host_if = link.host_if().to_string();
    if let Some(pid) = link.registry_pid() {
        eprintln!("== shaped link: {host_if} <-> registry {ns_registry} (pid {pid})");
    }
    *LINK.lock().unwrap() = Some(link);
    let delay = Duration::from_millis(o.delay_ms);
    let proxy = rt.block_on(DelayProxy::start(ns_registry, delay))?;
    let shaped = proxy.addr().to_string();
    eprintln!(
        "== delay proxy {shaped} -> {ns_registry}: +{} ms each way, tbf {} Mbit/s both ends",
        o.delay_ms, o.rate_mbit
    );
    if o.serve {
        println!("loopback: {lo}/demo:chunked\nshaped:   {shaped}/demo:chunked");
        eprintln!("== serving until Ctrl-C");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    let mut report = format!(
        "# Cold start over loopback and a shaped link\n\n\
         Image: {}, converted to zstd:chunked; command (`CMD`): `{}`. Shaped link: veth + \
         tbf {} Mbit/s both ends, +{} ms each way (delay proxy), RTT {} ms. {} round(s) per \
         mode, medians; background fetch off.\n\n",
        match &o.rootfs {
            Some(r) => format!("the root filesystem `{}`", r.display()),
            None => "the demo rootfs (`scripts/make-demo-rootfs.sh`)".into(),
        },
        o.cmd,
        o.rate_mbit,
        o.delay_ms,
        2 * o.delay_ms,
        o.rounds
    );
    for image in &images {
        for link_name in &o.links {
            let (host, rtt, bw) = if link_name == "loopback" {
                (lo.clone(), 0.0, f64::INFINITY)
            } else {
                (
                    shaped.clone(),
                    2.0 * o.delay_ms as f64 / 1000.0,
                    o.rate_mbit as f64 * 1e6 / 8.0,
                )
            };
            let reference = format!("{host}/{image}");
            let dir = out.join(format!("{link_name}-{}", image.replace(':', "-")));
            eprintln!("== {link_name}: skiff bench {reference}");
            // A failed bench is reported and the others still run.
            if let Err(e) = ok(Command::new(&skiff)
                .args(["bench", "--full", "--push-profile"])
                .args(["--rounds", &o.rounds.to_string()])
                .args(["--concurrent", &o.concurrent.to_string()])
                .arg("--out")
                .arg(&dir)
                .arg(&reference))
            {
                report.push_str(&format!(
                    "## {link_name}: `{reference}`\n\nfailed: {e:#}\n\n"
                ));
                continue;
            }
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("bench.json"))?)?;
            report.push_str(&link_section(link_name, &reference, &json, rtt, bw)?);
            if let Some(before) = &o.baseline {
                // Another skiff build (e.g. the previous commit) on the same registry, right
                // after: its cold start is the "before" figure.
                let bdir = out.join(format!("{link_name}-{}-baseline", image.replace(':', "-")));
                eprintln!(
                    "== {link_name}: baseline {} bench {reference}",
                    before.display()
                );
                if let Err(e) = ok(Command::new(before)
                    .args(["bench", "--rounds", &o.rounds.to_string()])
                    .arg("--out")
                    .arg(&bdir)
                    .arg(&reference))
                {
                    report.push_str(&format!("- baseline failed: {e:#}\n\n"));
                    continue;
                }
                let b: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(bdir.join("bench.json"))?)?;
                let g = |j: &serde_json::Value, mode: &str| {
                    med(j, mode)
                        .and_then(|m| m["exit_s"].as_f64())
                        .unwrap_or(f64::NAN)
                };
                report.push_str(&format!(
                    "- baseline `{}`: cold {:.3} s, cold+profile (local copy) {:.3} s, warm {:.3} s, cold fetched {:.2} MB in {:.0} requests; cold now / baseline cold = {:.2}\n",
                    before.display(),
                    g(&b, "cold"),
                    g(&b, "cold+profile"),
                    g(&b, "warm"),
                    med(&b, "cold").and_then(|m| m["bytes"].as_f64()).unwrap_or(0.0) / 1e6,
                    med(&b, "cold").and_then(|m| m["requests"].as_f64()).unwrap_or(0.0),
                    g(&json, "cold") / g(&b, "cold"),
                ));
            }
            report.push_str(&format!(
                "\nTable and chart: `{}/bench.md`, `bench.svg`.\n\n",
                dir.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    drop(proxy);
    std::fs::write(out.join("report.md"), &report)?;
    println!("{report}");
    eprintln!("wrote {}", out.join("report.md").display());
    Ok(())
}

fn med<'a>(json: &'a serde_json::Value, mode: &str) -> Option<&'a serde_json::Value> {
    json["modes"]
        .as_array()?
        .iter()
        .find(|m| m["mode"] == mode)
        .map(|m| &m["median"])
}

/// The section of one link: the bench's table plus the floor and the issue's ratios.
fn link_section(
    link: &str,
    reference: &str,
    json: &serde_json::Value,
    rtt: f64,
    bytes_per_s: f64,
) -> Result<String> {
    let f = |mode: &str, k: &str| med(json, mode).and_then(|m| m[k].as_f64());
    let cold = f("cold", "exit_s").context("no cold figures")?;
    let warm = f("warm", "exit_s").context("no warm figures")?;
    let profile = f("cold+profile", "exit_s");
    let full = f("full pull", "exit_s");
    let concurrent = json["modes"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|m| m["mode"].as_str().is_some_and(|s| s.starts_with("cold x")))
        })
        .map(|m| {
            (
                m["mode"].as_str().unwrap_or("").to_string(),
                m["median"]["exit_s"].as_f64(),
            )
        });
    let cold_bytes = f("cold", "bytes").unwrap_or(0.0);
    let metadata_bytes = f("cold", "metadata_bytes").unwrap_or(0.0);
    let read_bytes = f("cold", "read_bytes").unwrap_or(0.0);
    let needed = metadata_bytes + read_bytes;
    let floor = needed / bytes_per_s + 2.0 * rtt + warm;
    let mut s = format!("## {link}: `{reference}`\n\n| mode | exit (s) | fetched (MB) | by the pull (MB) | chunks read (MB) | requests |\n|---|---:|---:|---:|---:|---:|\n");
    for m in json["modes"].as_array().into_iter().flatten() {
        let g = |k: &str| m["median"][k].as_f64().unwrap_or(f64::NAN);
        s.push_str(&format!(
            "| {} | {:.3} | {:.2} | {:.2} | {:.2} | {:.0} |\n",
            m["mode"].as_str().unwrap_or("?"),
            g("exit_s"),
            g("bytes") / 1e6,
            g("metadata_bytes") / 1e6,
            g("read_bytes") / 1e6,
            g("requests"),
        ));
    }
    s.push_str(&format!(
        "| floor | {floor:.3} | {:.2} | | | |\n\n",
        needed / 1e6
    ));
    s.push_str(&format!(
        "- floor = ({:.2} MB pull metadata + {:.2} MB compressed chunks read) / bandwidth + 2 × {:.0} ms RTT + warm {:.3} s = {floor:.3} s\n",
        metadata_bytes / 1e6,
        read_bytes / 1e6,
        rtt * 1000.0,
        warm
    ));
    if let Some(p) = profile {
        s.push_str(&format!(
            "- cold with the shared profile / floor = {:.2} (goal ≤ 2 on the shaped link)\n",
            p / floor
        ));
    }
    if let Some(full) = full {
        s.push_str(&format!("- full pull / cold = {:.1}x\n", full / cold));
    }
    if read_bytes > 0.0 {
        s.push_str(&format!(
            "- bytes fetched by a cold start (no profile, no background fetch) / compressed bytes read = {:.2} ({:.2} counting the chunks only; goal ≤ 1.5)\n",
            cold_bytes / read_bytes,
            (cold_bytes - metadata_bytes) / read_bytes
        ));
    }
    if let Some((label, Some(c))) = concurrent {
        s.push_str(&format!(
            "- {label} (all {}) / one cold = {:.2} (goal ≤ 2 on the shaped link)\n",
            "to the last exit",
            c / cold
        ));
    }
    Ok(s)
}
