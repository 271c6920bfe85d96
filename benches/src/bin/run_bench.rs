//! End-to-end warm start: `skiff run --rm IMAGE true` through the real CLI and daemon (image
//! present, FUSE-mounted), next to `crun run` of the same rootfs, in the same run.
//!
//! `sudo target/release/run_bench [iterations]` (root). The `skiff` binary next to this one
//! is used (build both with `cargo build --release -p skiff -p skiff-benches`), or
//! `SKIFF_BIN`. Prints medians and the ratio; the target is skiff within 2x of crun.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_benches::crun::{bench_crun, busybox_rootfs, median};

fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("run_bench needs root (it runs the daemon)");
    }
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20);
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
