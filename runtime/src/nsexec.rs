//! `__exec <dir> <pid> <start_time> <exec-config-json>`: joins a running container (its
//! namespaces via /proc/<pid>/ns/*, its cgroup, its root) and runs a process there. This
//! process stays outside as the exec'd process's parent and exits with its exit code
//! (128+N for signal N); setup failures print a message and exit 125, 126 or 127.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;

use crate::cgroup::ContainerCgroup;
use crate::config::{ContainerConfig, ExecConfig};
use crate::error::StepFailure;
use crate::init::process;
use crate::paths::ContainerPaths;
use crate::persist;
use crate::state::ProcIdentity;

fn report(f: StepFailure) -> i32 {
    let err = f.into_error();
    eprintln!("skiff exec: {err}");
    err.exit_code()
}

pub(crate) fn main(dir: &str, pid: &str, start: &str, exec_json: &str) -> i32 {
    match run(Path::new(dir), pid, start, exec_json) {
        Ok(code) => code,
        Err(f) => report(f),
    }
}

fn run(dir: &Path, pid: &str, start: &str, exec_json: &str) -> Result<i32, StepFailure> {
    let bad = |what: &str| StepFailure::detail("exec arguments", what, "malformed".into());
    let ident = ProcIdentity {
        pid: pid.parse().map_err(|_| bad("pid"))?,
        start_time: start.parse().map_err(|_| bad("start time"))?,
    };
    let exec: ExecConfig = serde_json::from_str(exec_json).map_err(|_| bad("exec config"))?;
    if exec.args.is_empty() {
        return Err(StepFailure::detail("exec", "", "no command given".into()));
    }
    let cfg: ContainerConfig = persist::read_json(&ContainerPaths::new(dir).config())
        .map_err(|e| StepFailure::from_error("read config", &e))?;
    let mut ns = Vec::new();
    for (name, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let p = format!("/proc/{}/ns/{name}", ident.pid);
        let f =
            File::open(&p).map_err(|e| StepFailure::detail("open namespace", &p, e.to_string()))?;
        ns.push((f, flag, p));
    }
    // The namespace files were opened while the container's init was alive and the same
    // process, so they are the container's.
    if !ident.is_alive() {
        return Err(StepFailure::errno(
            "exec",
            format!("container pid {}", ident.pid),
            nix::Error::ESRCH,
        ));
    }
    let mut late = Vec::new();
    for (f, flag, p) in ns {
        if flag == CloneFlags::CLONE_NEWCGROUP || flag == CloneFlags::CLONE_NEWNS {
            late.push((f, flag, p));
            continue;
        }
        nix::sched::setns(f, flag).map_err(|e| StepFailure::errno("join namespace", &p, e))?;
    }
    // A container started by an older skiff may lack a hierarchy added since (blkio).
    let cgroup_dirs: Vec<_> = ContainerCgroup::load(&cfg.cgroup_path())
        .dirs()
        .into_iter()
        .filter(|d| d.is_dir())
        .collect();
    let confinement = process::Confinement::of(&cfg, dir)?;
    // On the hybrid layout the child starts in the container's `unified` cgroup.
    let unified = crate::cgroup::unified_dir(&cfg.cgroup_path()).and_then(|d| File::open(d).ok());
    // SAFETY: this process is single-threaded; the child only sets up and execs, and does
    // not abort or use pthreads (see `fork_into`).
    let forked = unsafe { crate::forkinto::fork_into(unified.as_ref().map(|f| f.as_raw_fd())) };
    drop(unified);
    match forked {
        Err(e) => Err(StepFailure::errno("fork", "exec", e)),
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) => continue,
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(StepFailure::errno("wait", "exec", e)),
            }
        },
        Ok(ForkResult::Child) => {
            let f = child(&cfg, &exec, cgroup_dirs, late, confinement);
            let code = report(f);
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(code) }
        }
    }
}

/// In the container's pid namespace: join the cgroup, cgroup and mount namespaces, then exec.
fn child(
    cfg: &ContainerConfig,
    exec: &ExecConfig,
    cgroup_dirs: Vec<std::path::PathBuf>,
    late: Vec<(File, CloneFlags, String)>,
    confinement: process::Confinement,
) -> StepFailure {
    for d in cgroup_dirs {
        // "0" is the writing process itself; our pid here is the container's view of it.
        // On v1, `tasks` moves just this (only) thread and so skips the kernel's global
        // threadgroup lock and its RCU wait (see `ContainerCgroup::self_join`).
        let tasks = d.join("tasks");
        let procs = if tasks.exists() {
            tasks
        } else {
            d.join("cgroup.procs")
        };
        if let Err(e) = std::fs::write(&procs, "0") {
            return StepFailure::detail("join cgroup", procs.display(), e.to_string());
        }
    }
    for (f, flag, p) in late {
        if let Err(e) = nix::sched::setns(f, flag) {
            return StepFailure::errno("join namespace", &p, e);
        }
    }
    if let Err(e) = nix::unistd::setsid() {
        return StepFailure::errno("setsid", "", e);
    }
    if exec.tty {
        // SAFETY: TIOCSCTTY on our stdin, a pty slave handed to us by the caller.
        unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    }
    let spec_user = if exec.user.is_empty() {
        &cfg.user
    } else {
        &exec.user
    };
    let user = match process::resolve_user(spec_user) {
        Ok(u) => u,
        Err(f) => return f,
    };
    let env = process::build_env(
        &cfg.env,
        &exec.env,
        &cfg.effective_hostname(),
        &user.home,
        exec.tty,
    );
    let cwd = if exec.cwd.is_empty() {
        cfg.cwd.clone()
    } else {
        exec.cwd.clone()
    };
    process::exec(&mut process::ProcessSpec {
        args: exec.args.clone(),
        env,
        cwd,
        user,
        confinement,
    })
}
