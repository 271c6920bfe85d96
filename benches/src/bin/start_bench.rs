//! Start latency: create → start → exit of `true` on a ready busybox rootfs, through
//! skiff-runtime and through `crun run` on the same rootfs, in the same run.
//!
//! `sudo start_bench [iterations]` (root). Prints per-engine medians and the ratio.
//! `SKIFF_RUNTIME_EXE=<path>` runs the shim/init from another (e.g. release) binary.
//! crun 1.8 refuses the hybrid cgroup layout while cgroup2 owns the `hugetlb` controller
//! (design.md §9); if it fails so, the bench mounts hugetlb as its own v1 hierarchy for the
//! crun runs and unmounts it afterwards. skiff itself needs no such change.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use skiff_benches::crun::{bench_crun, busybox_rootfs, median};

fn main() -> Result<()> {
    skiff_runtime::entry::run_if_internal();
    if !nix::unistd::geteuid().is_root() {
        bail!("start_bench needs root (namespaces, cgroups, mounts)");
    }
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20);
    let tmp = tempfile::Builder::new()
        .prefix("skiff-start-bench-")
        .tempdir()?;
    let rootfs = tmp.path().join("rootfs");
    busybox_rootfs(&rootfs)?;
    // SKIFF_RUNTIME_EXE: another binary for the shim/init side (e.g. a release build of
    // skiff-runtime-entry or skiff); this bench binary itself by default.
    let exe = match std::env::var_os("SKIFF_RUNTIME_EXE") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?,
    };
    println!("runtime executable: {}", exe.display());

    let skiff = bench_skiff(&exe, tmp.path(), &rootfs, n)?;
    let crun = bench_crun(tmp.path(), &rootfs, n);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("start-to-exit of `true`, {n} runs each (median, min, max in ms)");
    println!(
        "  skiff-runtime create+start+wait: {:8.2} {:8.2} {:8.2}   (remove: median {:.2})",
        ms(median(&skiff.run)),
        ms(*skiff.run.iter().min().unwrap()),
        ms(*skiff.run.iter().max().unwrap()),
        ms(median(&skiff.remove))
    );
    let with_rm: Vec<Duration> = skiff
        .run
        .iter()
        .zip(&skiff.remove)
        .map(|(a, b)| *a + *b)
        .collect();
    println!(
        "  skiff-runtime incl. remove (run --rm): {:8.2}",
        ms(median(&with_rm))
    );
    let phase = |i: usize| {
        ms(median(
            &skiff.phases.iter().map(|p| p[i]).collect::<Vec<_>>(),
        ))
    };
    println!(
        "    skiff phases (median elapsed ms): created {:.2}, started {:.2}, exited {:.2}",
        phase(0),
        phase(1),
        phase(2)
    );
    match &crun {
        Ok(c) => {
            println!(
                "  crun run:                        {:8.2} {:8.2} {:8.2}",
                ms(median(c)),
                ms(*c.iter().min().unwrap()),
                ms(*c.iter().max().unwrap())
            );
            println!(
                "  ratio skiff/crun (medians): {:.2}",
                median(&skiff.run).as_secs_f64() / median(c).as_secs_f64()
            );
        }
        Err(e) => println!("  crun run: not measured: {e:#}"),
    }
    let json = serde_json::json!({
        "iterations": n,
        "skiff_median_ms": ms(median(&skiff.run)),
        "skiff_remove_median_ms": ms(median(&skiff.remove)),
        "crun_median_ms": crun.as_ref().ok().map(|c| ms(median(c))),
    });
    println!("{json}");
    Ok(())
}

struct SkiffTimes {
    run: Vec<Duration>,
    remove: Vec<Duration>,
    /// Elapsed at: created, started, exited.
    phases: Vec<[Duration; 3]>,
}

fn bench_skiff(exe: &Path, tmp: &Path, rootfs: &Path, n: usize) -> Result<SkiffTimes> {
    let mut times = SkiffTimes {
        run: Vec::new(),
        remove: Vec::new(),
        phases: Vec::new(),
    };
    for i in 0..n + 1 {
        let dir = tmp.join(format!("c{i}"));
        let mut cfg = skiff_runtime::ContainerConfig::new(
            &format!("bench{}-{i}", std::process::id()),
            dir.clone(),
            vec![rootfs.to_path_buf()],
            vec!["true".into()],
        );
        cfg.cgroup_parent = "skiff-bench".into();
        let t = Instant::now();
        let mut phases = [Duration::ZERO; 3];
        let res = skiff_runtime::create(exe, &cfg)
            .and_then(|_| {
                phases[0] = t.elapsed();
                skiff_runtime::start(&dir)
            })
            .and_then(|_| {
                phases[1] = t.elapsed();
                skiff_runtime::wait(&dir)
            });
        let took = t.elapsed();
        phases[2] = took;
        let t = Instant::now();
        skiff_runtime::remove(&dir)?;
        let rm = t.elapsed();
        let st = res?;
        if st.exit_code != Some(0) {
            bail!("container exited with {:?}: {:?}", st.exit_code, st.error);
        }
        if i > 0 {
            // The first run warms caches (binary, dentries) and is not counted.
            times.run.push(took);
            times.remove.push(rm);
            times.phases.push(phases);
        }
    }
    // The (now empty) parent cgroup, in every hierarchy.
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        for mp in info
            .lines()
            .filter(|l| l.contains(" - cgroup"))
            .filter_map(|l| l.split(' ').nth(4))
        {
            let _ = std::fs::remove_dir(Path::new(mp).join("skiff-bench"));
        }
    }
    Ok(times)
}
