//! End-to-end warm start: `skiff run --rm IMAGE true` through the real CLI and daemon (image
//! present, FUSE-mounted), next to `crun run` of the same rootfs, in the same run.
//!
//! `sudo target/release/run_bench [iterations]` (root). The `skiff` binary next to this one
//! is used (build both with `cargo build --release -p skiff -p skiff-benches`), or
//! `SKIFF_BIN`. Prints medians and the ratio; the target is skiff within 2x of crun.
//!
//! `sudo target/release/run_bench --concurrent N [--rounds R]`: throughput instead. N
//! `skiff run --rm --network none IMAGE true` started at once against one daemon, timed to the
//! last exit, next to N `crun run` of the same rootfs started at once (distinct ids), R rounds
//! of each alternated; prints each round, the medians and the ratio (issue 15: ≤ 1.5x) and
//! fails if any run failed.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_benches::crun::{bench_crun, bench_crun_concurrent, busybox_rootfs, median};

/// What the arguments ask for: `[iterations]` or `--concurrent N [--rounds R]`.
struct Args {
    n: usize,
    concurrent: Option<usize>,
    rounds: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        n: 20,
        concurrent: None,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<usize> {
            it.next()
                .with_context(|| format!("{name} needs a number"))?
                .parse()
                .with_context(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--concurrent" => args.concurrent = Some(num("--concurrent")?),
            "--rounds" => args.rounds = num("--rounds")?.max(1),
            n => args.n = n.parse().with_context(|| format!("bad argument {n:?}"))?,
        }
    }
    Ok(args)
}

fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("run_bench needs root (it runs the daemon)");
    }
    let Args {
        n,
        concurrent,
        rounds,
    } = parse_args()?;
    let skiff = match std::env::var_os("SKIFF_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?.with_file_name("skiff"),
    };
    if !skiff.exists() {
        bail!("{} not found: build it or set SKIFF_BIN", skiff.display());
    }
    // The test support's daemon runner finds the binary through SKIFF_BIN.
    std::env::set_var("SKIFF_BIN", &skiff);
    let tmp = tempfile::Builder::new()
        .prefix("skiff-run-bench-")
        .tempdir()?;
    let rootfs = tmp.path().join("rootfs");
    busybox_rootfs(&rootfs)?;

    let daemon = skiff_tests::Daemon::start()?;
    let image = "bench/busybox:latest";
    let out = daemon.run(&[
        "image",
        "import",
        rootfs.to_str().context("utf-8 path")?,
        image,
    ]);
    if !out.status.success() {
        bail!("import: {}", String::from_utf8_lossy(&out.stderr));
    }
    let run_once = |network: &str| -> Result<Duration> {
        let t = Instant::now();
        let st = daemon
            .cli()
            .args(["run", "--rm", "--network", network, image, "true"])
            .stdin(Stdio::null())
            .status()?;
        let took = t.elapsed();
        if !st.success() {
            bail!(
                "skiff run --network {network} failed: {st}\n{}",
                daemon.log_text()
            );
        }
        Ok(took)
    };
    run_once("none")?; // mounts the image
    if let Some(c) = concurrent {
        return throughput(&daemon, image, tmp.path(), &rootfs, c, rounds);
    }
    run_once("bridge")?; // makes the bridge and its rules
                         // One mode at a time: a bridge container's veth is deleted in the background after
                         // `rm` answers, and holds the kernel's rtnl lock meanwhile, which the next container's
                         // new network namespace also needs.
    let mut skiff_times = Vec::with_capacity(n);
    for _ in 0..n {
        skiff_times.push(run_once("none")?);
    }
    let mut bridge_times = Vec::with_capacity(n);
    for _ in 0..n {
        bridge_times.push(run_once("bridge")?);
    }
    drop(daemon);
    let crun = bench_crun(tmp.path(), &rootfs, n);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("warm `run --rm IMAGE true`, {n} runs each (median ms)");
    println!(
        "  skiff (CLI + daemon + FUSE + overlay, --network none): {:8.2}",
        ms(median(&skiff_times))
    );
    println!(
        "  skiff (same, default bridge network):                  {:8.2}",
        ms(median(&bridge_times))
    );
    match &crun {
        Ok(c) => {
            println!(
                "  crun run (unpacked bundle, no network):                {:8.2}",
                ms(median(c))
            );
            println!(
                "  ratio skiff/crun: {:.2} (none), {:.2} (bridge)",
                median(&skiff_times).as_secs_f64() / median(c).as_secs_f64(),
                median(&bridge_times).as_secs_f64() / median(c).as_secs_f64()
            );
        }
        Err(e) => println!("  crun run: not measured: {e:#}"),
    }
    Ok(())
}

/// N `run --rm --network none IMAGE true` at once, to the last exit, against N `crun run` at
/// once, rounds alternated so both see the same machine load.
fn throughput(
    daemon: &skiff_tests::Daemon,
    image: &str,
    tmp: &std::path::Path,
    rootfs: &std::path::Path,
    c: usize,
    rounds: usize,
) -> Result<()> {
    let daemon_pid = daemon.pid().context("the daemon's pid")?;
    let skiff_round = || -> Result<Duration> {
        let t = Instant::now();
        let children = (0..c)
            .map(|_| {
                daemon
                    .cli()
                    .args(["run", "--rm", "--network", "none", image, "true"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut failed = Vec::new();
        for child in children {
            let out = child.wait_with_output()?;
            if !out.status.success() {
                failed.push(format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        let took = t.elapsed();
        if !failed.is_empty() {
            bail!(
                "{} of {c} skiff runs failed, first: {}\n{}",
                failed.len(),
                failed[0],
                daemon.log_text()
            );
        }
        Ok(took)
    };
    let mut skiff_times = Vec::new();
    let mut crun_times = Vec::new();
    let (mut skiff_cpu, mut crun_cpu) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let (cli0, daemon0, busy0) = (children_cpu(), tree_cpu(daemon_pid), busy_cpu());
        let s = skiff_round()?;
        // The daemon's side settles after the last CLI exits (rm's cleanup): let it.
        std::thread::sleep(Duration::from_millis(500));
        let (cli1, daemon1, busy1) = (children_cpu(), tree_cpu(daemon_pid), busy_cpu());
        let k = bench_crun_concurrent(tmp, rootfs, c, r)?;
        let busy2 = busy_cpu();
        let (cli, dmn) = (cli1 - cli0, daemon1 - daemon0);
        let (sb, kb) = (busy1 - busy0, busy2 - busy1);
        eprintln!(
            "round {}: skiff {:.3} s (machine CPU {sb:.2} s; CLIs {cli:.2} s, daemon+launcher {dmn:.2} s), crun {:.3} s (machine CPU {kb:.2} s, its probe run and deletes included)",
            r + 1,
            s.as_secs_f64(),
            k.as_secs_f64()
        );
        skiff_times.push(s);
        crun_times.push(k);
        skiff_cpu.push(Duration::from_secs_f64(sb));
        crun_cpu.push(Duration::from_secs_f64(kb));
    }
    let (s, k) = (median(&skiff_times), median(&crun_times));
    let (sc, kc) = (median(&skiff_cpu), median(&crun_cpu));
    println!("{c} concurrent `run --rm --network none IMAGE true`, median of {rounds} rounds (s)");
    println!(
        "  skiff (CLI + daemon + FUSE + overlay): {:8.3} wall, {:6.2} machine CPU",
        s.as_secs_f64(),
        sc.as_secs_f64()
    );
    println!(
        "  crun run (unpacked bundle):            {:8.3} wall, {:6.2} machine CPU",
        k.as_secs_f64(),
        kc.as_secs_f64()
    );
    println!(
        "  ratio skiff/crun: {:.2} wall, {:.2} CPU",
        s.as_secs_f64() / k.as_secs_f64(),
        sc.as_secs_f64() / kc.as_secs_f64()
    );
    Ok(())
}

/// CPU seconds the whole machine spent busy so far (/proc/stat: every state but idle and
/// iowait, all CPUs): shims detach from the daemon, and the kernel's workers (namespace,
/// mount and cgroup teardown) run as no process of either side, so only this counts all.
fn busy_cpu() -> f64 {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: f64 = v
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    busy / ticks
}

/// CPU seconds (user + system) of this process's waited-for children so far.
fn children_cpu() -> f64 {
    let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    tv(ru.user_time()) + tv(ru.system_time())
}

/// CPU seconds of `pid` and its children (their own and what they reaped: the shim
/// launcher's exited shims), from /proc stat's utime, stime, cutime, cstime.
fn tree_cpu(pid: u32) -> f64 {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let stat = |p: u32| -> f64 {
        let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            return 0.0;
        };
        // After the parenthesised command come state (field 3) ...; utime..cstime are
        // fields 14..17.
        let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
        rest.split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|v| v.parse::<f64>().ok())
            .sum::<f64>()
            / ticks
    };
    let mut total = stat(pid);
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    for t in tasks.flatten() {
        let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            total += stat(child);
        }
    }
    total
}
