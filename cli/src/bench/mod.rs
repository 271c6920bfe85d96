//! `skiff bench IMAGE [-- CMD]`: HelloBench-style start-up figures for one image. Every cold
//! run gets a private daemon on a fresh data root (started and removed by the bench, so it
//! needs root): `cold` with no profile, `cold+profile` seeded with the profile the first cold
//! run recorded, `warm` on the last daemon (image mounted, chunks cached), and with `--full`
//! the same image pulled in full. Each run is `pull` then `run --rm` through the CLI, timed
//! to the container's first output and to its exit; the daemon's registry counters give the
//! bytes and requests. Medians over `--rounds` go to a table, `bench.md` and `bench.svg`.

mod report;
mod subnet;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::args::BenchArgs;
pub use report::{Mode, Sample};

/// A private daemon of the bench.
struct BenchDaemon {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

/// How long a bench daemon is left alone after its socket answers, before it is timed.
const SETTLE: Duration = Duration::from_millis(500);

impl BenchDaemon {
    fn start(exe: &Path, dir: &Path, n: u32, extra: &[&str]) -> Result<BenchDaemon> {
        std::fs::create_dir_all(dir)?;
        let exec_root = dir.join("run");
        let socket = exec_root.join("skiff.sock");
        let log = std::fs::File::create(dir.join("daemon.log"))?;
        let mut cmd = Command::new(exe);
        // SAFETY: prctl is async-signal-safe; it only marks the child to get SIGTERM (a
        // clean shutdown: unmounts, saves profiles) if the bench dies without stopping it.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // A bridge and subnet of its own, so it never meets the user's daemon.
        let (bridge, bip) = subnet::pick(n)?;
        let child = cmd
            .arg("--exec-root")
            .arg(&exec_root)
            .arg("daemon")
            .arg("--data-root")
            .arg(dir.join("data"))
            .args(["--bridge", &bridge])
            .args(["--bip", &bip])
            // Bytes counted are what the container needs.
            .arg("--no-background-fetch")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a bench daemon")?;
        let mut d = BenchDaemon {
            child,
            dir: dir.to_path_buf(),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
            if let Some(st) = d.child.try_wait()? {
                bail!("bench daemon exited with {st}; log in {}", d.dir.display());
            }
            if Instant::now() > deadline {
                bail!("bench daemon did not start; log in {}", d.dir.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // What a daemon sets up once after it starts (TLS, the default seccomp filter:
        // tens of ms, in the background) is not the image's cold start: a user's pull
        // meets a daemon that has been up for a while.
        std::thread::sleep(SETTLE);
        Ok(d)
    }

    fn cli(&self, exe: &Path) -> Command {
        let mut c = Command::new(exe);
        c.arg("-H").arg(format!("unix://{}", self.socket.display()));
        c
    }

    async fn stats(&self) -> Result<serde_json::Value> {
        let (status, body) =
            crate::client::profiles::call(&self.socket, "GET", "/skiff/stats").await?;
        if status != 200 {
            bail!("stats: HTTP {status}");
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Stops the daemon (SIGTERM: it unmounts and saves profiles) and waits for it.
    fn stop(mut self) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// One `pull` + `run --rm` (or only the run when `pull` is false), timed.
async fn measure(exe: &Path, d: &BenchDaemon, args: &BenchArgs, pull: bool) -> Result<Sample> {
    let before = d.stats().await?;
    let t0 = Instant::now();
    if pull {
        let out = d.cli(exe).args(["pull", "-q", &args.image]).output()?;
        if !out.status.success() {
            bail!(
                "pull {} failed: {}",
                args.image,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let pulled = t0.elapsed();
    let mut run = d.cli(exe);
    run.args(["run", "--rm", "--network", "none", &args.image])
        .args(&args.cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = run.spawn()?;
    let mut stdout = child.stdout.take().expect("piped");
    let first = std::thread::spawn(move || {
        use std::io::Read;
        let mut b = [0u8; 1];
        let at = match stdout.read(&mut b) {
            Ok(n) if n > 0 => Some(Instant::now()),
            _ => None,
        };
        std::io::copy(&mut stdout, &mut std::io::sink()).ok();
        at
    });
    let out = child.wait_with_output()?;
    let exited = t0.elapsed();
    let first = first.join().expect("reader thread").map(|t| t - t0);
    if !out.status.success() {
        bail!(
            "run {} failed ({}): {}",
            args.image,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let after = d.stats().await?;
    let diff = |a: &serde_json::Value, b: &serde_json::Value, k: &str| {
        a[k].as_u64().unwrap_or(0) - b[k].as_u64().unwrap_or(0)
    };
    let bytes = diff(&after, &before, "RegistryBytes");
    Ok(Sample {
        pull: pulled,
        first_output: first,
        exit: exited,
        bytes,
        requests: diff(&after, &before, "RegistryRequests"),
        metadata_bytes: bytes.saturating_sub(diff(&after, &before, "ChunkFetchedBytes")),
        read_bytes: diff(&after, &before, "ReadChunkBytes"),
    })
}

/// `n` × (`pull` + `run --rm`) at once on one daemon: the slowest run's times, the
/// daemon's totals of bytes and requests.
async fn measure_concurrent(
    exe: &Path,
    d: &BenchDaemon,
    args: &BenchArgs,
    n: u32,
) -> Result<Sample> {
    let before = d.stats().await?;
    let t0 = Instant::now();
    let mut runs = Vec::new();
    for _ in 0..n {
        let mut pull = d.cli(exe);
        pull.args(["pull", "-q", &args.image]);
        let mut run = d.cli(exe);
        run.args(["run", "--rm", "--network", "none", &args.image])
            .args(&args.cmd);
        runs.push(std::thread::spawn(
            move || -> Result<(Duration, Duration)> {
                let out = pull.stdin(Stdio::null()).output()?;
                if !out.status.success() {
                    bail!(
                        "pull failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                let pulled = t0.elapsed();
                let out = run.stdin(Stdio::null()).output()?;
                if !out.status.success() {
                    bail!(
                        "run failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                Ok((pulled, t0.elapsed()))
            },
        ));
    }
    let mut pull = Duration::ZERO;
    let mut exit = Duration::ZERO;
    for r in runs {
        let (p, e) = r.join().expect("run thread")?;
        pull = pull.max(p);
        exit = exit.max(e);
    }
    let after = d.stats().await?;
    let diff = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
    Ok(Sample {
        pull,
        first_output: None,
        exit,
        bytes: diff("RegistryBytes"),
        requests: diff("RegistryRequests"),
        metadata_bytes: 0,
        read_bytes: diff("ReadChunkBytes"),
    })
}

/// `skiff image profile push IMAGE` on daemon `d`.
fn push_profile(exe: &Path, d: &BenchDaemon, image: &str) -> Result<()> {
    let out = d
        .cli(exe)
        .args(["image", "profile", "push", image])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "pushing the profile of {image} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub async fn bench(args: &BenchArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("skiff bench starts private daemons: run it as root");
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let exe = std::env::current_exe()?;
    // Client commands are timed with the client binary users run.
    let client = crate::entry::client_exe()?;
    let base = tempfile::Builder::new().prefix("skiff-bench-").tempdir()?;
    let out_dir = args.out.clone().unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut results: Vec<(Mode, Vec<Sample>)> = Vec::new();
    let total = args.rounds * (3 + u32::from(args.full) + u32::from(args.concurrent.is_some()));
    let mut done = 0;
    let mut progress = |mode: Mode, i: u32, s: &Sample| {
        done += 1;
        eprintln!(
            "[{done}/{total}] {:<13} round {}: first output {}, exit {:.3} s, {} fetched in {} requests",
            mode.label(),
            i + 1,
            s.first_output
                .map(|d| format!("{:.3} s", d.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
            s.exit.as_secs_f64(),
            crate::client::format::human_size(s.bytes as i64),
            s.requests
        );
    };
    let mut n = 0;
    let mut next_dir = || {
        n += 1;
        (base.path().join(format!("d{n}")), n)
    };

    // Cold, no profile; the first run's recorded profile is kept for the next mode.
    let mut cold = Vec::new();
    let mut profile_dir: Option<PathBuf> = None;
    for i in 0..args.rounds {
        let (dir, k) = next_dir();
        let d = BenchDaemon::start(&exe, &dir, k, &["--no-profile-prefetch"])?;
        let s = measure(&client, &d, args, true).await;
        if s.is_ok() && i == 0 && args.push_profile {
            // The profile is saved when the container's mount is released; stopping the
            // daemon would too, but the push needs it running: wait for the file.
            wait_for_profile(&dir.join("data").join("profiles"))?;
            if let Err(e) = push_profile(&client, &d, &args.image) {
                d.stop()?;
                return Err(e);
            }
        }
        d.stop()?;
        let s = s?;
        progress(Mode::Cold, i, &s);
        cold.push(s);
        if profile_dir.is_none() {
            profile_dir = Some(dir.join("data").join("profiles"));
        }
    }
    results.push((Mode::Cold, cold));

    // Cold with the recorded profile, then warm runs on the last daemon.
    let mut with_profile = Vec::new();
    let mut last = None;
    for i in 0..args.rounds {
        let (dir, k) = next_dir();
        if let (Some(p), false) = (&profile_dir, args.push_profile) {
            copy_dir(p, &dir.join("data").join("profiles"))?;
        }
        let d = BenchDaemon::start(&exe, &dir, k, &[])?;
        let s = measure(&client, &d, args, true).await;
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                d.stop()?;
                return Err(e);
            }
        };
        progress(Mode::ColdProfile, i, &s);
        with_profile.push(s);
        if let Some(prev) = last.replace(d) {
            prev.stop()?;
        }
    }
    results.push((Mode::ColdProfile, with_profile));
    let d = last.expect("at least one round");
    let mut warm = Vec::new();
    for i in 0..args.rounds {
        let s = measure(&client, &d, args, false).await;
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                d.stop()?;
                return Err(e);
            }
        };
        progress(Mode::Warm, i, &s);
        warm.push(s);
    }
    d.stop()?;
    results.push((Mode::Warm, warm));

    if args.full {
        let mut full = Vec::new();
        for i in 0..args.rounds {
            let (dir, k) = next_dir();
            let d = BenchDaemon::start(&exe, &dir, k, &["--no-lazy-pull"])?;
            let s = measure(&client, &d, args, true).await;
            d.stop()?;
            let s = s?;
            progress(Mode::Full, i, &s);
            full.push(s);
        }
        results.push((Mode::Full, full));
    }

    if let Some(n) = args.concurrent {
        let mut many = Vec::new();
        for i in 0..args.rounds {
            let (dir, k) = next_dir();
            let d = BenchDaemon::start(&exe, &dir, k, &["--no-profile-prefetch"])?;
            let s = measure_concurrent(&client, &d, args, n).await;
            d.stop()?;
            let s = s?;
            progress(Mode::Concurrent(n), i, &s);
            many.push(s);
        }
        results.push((Mode::Concurrent(n), many));
    }

    let cmd = if args.cmd.is_empty() {
        "(image default)".to_string()
    } else {
        args.cmd.join(" ")
    };
    let table = report::table(&results);
    println!("{table}");
    let md = out_dir.join("bench.md");
    let svg = out_dir.join("bench.svg");
    report::write_markdown(&md, &args.image, &cmd, args.rounds, &table)?;
    report::write_chart(&svg, &args.image, &results)?;
    let json = out_dir.join("bench.json");
    report::write_json(&json, &args.image, &cmd, &results)?;
    eprintln!(
        "wrote {}, {} and {}",
        md.display(),
        svg.display(),
        json.display()
    );
    Ok(())
}

/// Waits (up to 30 s) until `dir` holds a saved profile.
fn wait_for_profile(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = std::fs::read_dir(dir).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "json"))
        });
        if found {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no profile was saved under {} within 30 s", dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    let Ok(rd) = std::fs::read_dir(from) else {
        return Ok(());
    };
    for e in rd.flatten() {
        if e.path().extension().is_some_and(|x| x == "json") {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}
