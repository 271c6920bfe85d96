//! `crun run` of a rootfs as the baseline of skiff's start benches, and the busybox rootfs
//! both engines run. crun 1.8 refuses this machine's hybrid cgroup layout while cgroup2 owns
//! the `hugetlb` controller (design.md §9): only for the crun runs, hugetlb is mounted as its
//! own v1 hierarchy, and unmounted afterwards. skiff itself needs no such change.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub fn crun_bundle(tmp: &Path, rootfs: &Path) -> Result<PathBuf> {
    let bundle = tmp.join("bundle");
    std::fs::create_dir_all(&bundle)?;
    // `crun spec` refuses to overwrite: a later call makes the same bundle again.
    let _ = std::fs::remove_file(bundle.join("config.json"));
    let st = Command::new("crun")
        .arg("spec")
        .current_dir(&bundle)
        .status()
        .context("crun spec")?;
    if !st.success() {
        bail!("crun spec failed");
    }
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["args"] = serde_json::json!(["true"]);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["root"]["path"] = serde_json::json!(rootfs);
    spec["root"]["readonly"] = serde_json::json!(true);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(bundle)
}

pub fn crun_once(bundle: &Path, id: &str) -> Result<Duration> {
    let t = Instant::now();
    let out = Command::new("crun")
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .output()?;
    let took = t.elapsed();
    let _ = Command::new("crun").args(["delete", "-f", id]).output();
    if !out.status.success() {
        bail!("crun run: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(took)
}

/// Mounts hugetlb as its own v1 hierarchy while alive (only when crun needs it).
pub struct HugetlbV1(PathBuf);

impl HugetlbV1 {
    pub fn mount() -> Result<HugetlbV1> {
        let p = PathBuf::from("/sys/fs/cgroup/hugetlb");
        std::fs::create_dir_all(&p)?;
        nix::mount::mount(
            Some("cgroup"),
            &p,
            Some("cgroup"),
            nix::mount::MsFlags::empty(),
            Some("hugetlb"),
        )
        .context("mount hugetlb v1 hierarchy")?;
        Ok(HugetlbV1(p))
    }
}

impl Drop for HugetlbV1 {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount(&self.0) {
            eprintln!("cannot unmount {}: {e}", self.0.display());
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

pub fn bench_crun(tmp: &Path, rootfs: &Path, n: usize) -> Result<Vec<Duration>> {
    let bundle = crun_bundle(tmp, rootfs)?;
    let prefix = format!("skiffbench{}", std::process::id());
    let mut guard = None;
    if let Err(e) = crun_once(&bundle, &format!("{prefix}-probe")) {
        eprintln!("crun failed ({e:#}); retrying with hugetlb as its own v1 hierarchy");
        guard = Some(HugetlbV1::mount()?);
        crun_once(&bundle, &format!("{prefix}-probe"))?;
    }
    let mut times = Vec::new();
    for i in 0..n {
        times.push(crun_once(&bundle, &format!("{prefix}-{i}"))?);
    }
    drop(guard);
    Ok(times)
}

/// `c` `crun run` of the same bundle started at once (ids `skiffbench<pid>-r<round>-<i>`),
/// timed to the last exit; any failure fails the round, naming crun's error.
pub fn bench_crun_concurrent(
    tmp: &Path,
    rootfs: &Path,
    c: usize,
    round: usize,
) -> Result<Duration> {
    let bundle = crun_bundle(tmp, rootfs)?;
    let prefix = format!("skiffbench{}", std::process::id());
    // A probe outside the timing: crun's own first-run costs, and the hugetlb workaround
    // (mounted for this round only) when crun refuses the cgroup layout.
    let guard = match crun_once(&bundle, &format!("{prefix}-r{round}-probe")) {
        Ok(_) => None,
        Err(_) => {
            let g = HugetlbV1::mount()?;
            crun_once(&bundle, &format!("{prefix}-r{round}-probe"))?;
            Some(g)
        }
    };
    let t = Instant::now();
    let children = (0..c)
        .map(|i| {
            Command::new("crun")
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg(format!("{prefix}-r{round}-{i}"))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let outs = children
        .into_iter()
        .map(|ch| ch.wait_with_output())
        .collect::<std::io::Result<Vec<_>>>()?;
    let took = t.elapsed();
    for i in 0..c {
        let _ = Command::new("crun")
            .args(["delete", "-f", &format!("{prefix}-r{round}-{i}")])
            .output();
    }
    drop(guard);
    if let Some(bad) = outs.iter().find(|o| !o.status.success()) {
        bail!(
            "crun run failed: {}",
            String::from_utf8_lossy(&bad.stderr).trim()
        );
    }
    Ok(took)
}

pub fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

pub fn busybox_rootfs(root: &Path) -> Result<()> {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).context("copy /bin/busybox")?;
    let out = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8(out.stdout)?
        .lines()
        .filter(|a| *a != "busybox")
    {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n")?;
    Ok(())
}
