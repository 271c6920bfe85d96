//! `__shim <container_dir>`: the per-container supervisor. Started by [`crate::create`],
//! it detaches (so it outlives the daemon), builds the container's cgroup and init, reports
//! success or the failing step on its stdout, then serves `shim.sock` (start, attach, resize,
//! wait), writes the json-file log and records the exit, and cleans up when the container ends.

mod serve;

use std::io::{IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sched::CloneFlags;
use nix::sys::socket::{
    recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::cgroup::ContainerCgroup;
use crate::config::{ContainerConfig, NetworkMode};
use crate::error::StepFailure;
use crate::init::{self, InitChannels, InitMsg};
use crate::paths::ContainerPaths;
use crate::persist;
use crate::state::{ProcIdentity, StateFile, Status};

/// The one line the shim writes to its stdout for [`crate::create`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ShimReport {
    Ready { pid: i32 },
    Failed(StepFailure),
}

fn report(r: &ShimReport) {
    let mut line = serde_json::to_vec(r).unwrap_or_default();
    line.push(b'\n');
    let _ = std::io::stdout().write_all(&line);
    let _ = std::io::stdout().flush();
    // Close the report pipe so create() sees EOF; stdout is /dev/null from now on.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

/// How the shim process came to be, which decides how it detaches from its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Exec'd by the daemon (`skiffd __shim DIR`): it forks once more, so the daemon reaps
    /// a short-lived intermediate and the shim is nobody's child.
    Exec,
    /// Forked by the shim launcher, which has the kernel reap its children: no second fork.
    Launcher,
}

pub(crate) fn main(dir: &Path, origin: Origin) -> ! {
    let paths = ContainerPaths::new(dir);
    if let Ok(log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.shim_log())
    {
        let _ = nix::unistd::dup2(log.as_raw_fd(), 2);
    }
    let cfg: ContainerConfig = match persist::read_json(&paths.config()) {
        Ok(c) => c,
        Err(e) => {
            report(&ShimReport::Failed(StepFailure::from_error(
                "read config",
                &e,
            )));
            std::process::exit(1);
        }
    };
    // Detach: the daemon reaps the intermediate process, the shim lives on in its own session.
    // SAFETY: the shim is single-threaded here.
    match (origin == Origin::Exec).then(|| unsafe { fork() }) {
        Some(Ok(ForkResult::Parent { .. })) => unsafe { libc::_exit(0) },
        None | Some(Ok(ForkResult::Child)) => {}
        Some(Err(e)) => {
            report(&ShimReport::Failed(StepFailure::errno(
                "fork shim",
                dir.display(),
                e,
            )));
            std::process::exit(1);
        }
    }
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    let mut state = StateFile::new(ProcIdentity::of(std::process::id() as i32));
    match build(&cfg, &paths) {
        Ok(built) => {
            state.init = ProcIdentity::of(built.init.as_raw());
            state.state.pid = Some(built.init.as_raw());
            if let Err(e) = state.save(dir) {
                let f = StepFailure::from_error("save state", &e);
                abort(built.init, &built.cgroup);
                fail(&mut state, dir, f);
            }
            let listener = match serve::bind(&paths.socket()) {
                Ok(l) => l,
                Err(f) => {
                    abort(built.init, &built.cgroup);
                    fail(&mut state, dir, f);
                }
            };
            // The log exists once `create` returns (unless the driver is `none`), so readers (`logs`, `logs -f`) of a
            // created container find it.
            let logged = cfg.log.driver != crate::config::LogDriver::None;
            if let Some(Err(e)) = logged.then(|| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(paths.log())
            }) {
                tracing::error!("creating {}: {e}", paths.log().display());
            }
            report(&ShimReport::Ready {
                pid: built.init.as_raw(),
            });
            serve::Shim::new(cfg, paths, state, built, listener).run()
        }
        Err(f) => fail(&mut state, dir, f),
    }
}

/// Records a setup failure and exits.
fn fail(state: &mut StateFile, dir: &Path, f: StepFailure) -> ! {
    let err = f.clone().into_error();
    tracing::error!("container setup failed: {err}");
    state.state.status = Status::Exited;
    state.state.exit_code = Some(err.exit_code());
    state.state.error = Some(err.to_string());
    state.state.finished_at = Some(chrono::Utc::now());
    state.state.pid = None;
    let _ = state.save(dir);
    let _ = std::fs::remove_file(ContainerPaths::new(dir).socket());
    report(&ShimReport::Failed(f));
    std::process::exit(1)
}

fn abort(init: Pid, cg: &ContainerCgroup) {
    let _ = nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(init, None);
    cg.destroy();
}

/// A container whose init is set up and waiting for `start`.
pub(crate) struct Built {
    pub init: Pid,
    pub cgroup: ContainerCgroup,
    pub sync: Option<OwnedFd>,
    /// Shim ends of stdio: stdin writer (if open), stdout and stderr readers, or the pty master.
    pub stdin: Option<OwnedFd>,
    pub outputs: Vec<(OwnedFd, crate::logs::LogStream)>,
    pub pty: Option<OwnedFd>,
    /// The init's mount namespace, held so that its exit does not tear the container's
    /// mounts down (an RCU wait of a few ms) before we hear of it: the exit is reported
    /// first, the mounts go when this is dropped.
    pub mount_ns: Option<std::fs::File>,
}

fn io_step<'a>(step: &str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StepFailure + 'a {
    let step = step.to_string();
    move |e| match e.raw_os_error() {
        Some(n) => StepFailure::errno(&step, path.display(), nix::Error::from_raw(n)),
        None => StepFailure::detail(&step, path.display(), e.to_string()),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), StepFailure> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| StepFailure::errno("pipe", "", e))
}

fn build(cfg: &ContainerConfig, paths: &ContainerPaths) -> Result<Built, StepFailure> {
    for d in [paths.upper(), paths.work(), paths.rootfs()] {
        std::fs::create_dir_all(&d).map_err(io_step("mkdir", &d))?;
    }
    let hostname = cfg.effective_hostname();
    let hosts = cfg.hosts.clone().unwrap_or_else(|| {
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
        )
    });
    let resolv = cfg
        .resolv_conf
        .clone()
        .unwrap_or_else(|| std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    for (name, content) in [
        ("hostname", format!("{hostname}\n")),
        ("hosts", hosts),
        ("resolv.conf", resolv),
    ] {
        let p = paths.etc_file(name);
        persist::write_atomic_with(&p, content.as_bytes(), persist::Durability::Volatile)
            .map_err(|e| StepFailure::from_error("write", &e))?;
    }
    spawn_init(cfg).map_err(|failed| {
        let (f, cg) = *failed;
        match cg {
            Some(cg) => cg.destroy(),
            // The init (killed and reaped by now) may have been forked into its `unified`
            // directory before the other cgroups were made.
            None => {
                if let Some(d) = crate::cgroup::unified_dir(&cfg.cgroup_path()) {
                    let _ = std::fs::remove_dir(d);
                }
            }
        }
        f
    })
}

/// A failure, with the cgroup (once made) handed back for cleanup.
type SpawnErr = Box<(StepFailure, Option<ContainerCgroup>)>;

/// Forks the init, then makes the cgroup while the init builds its namespaces and rootfs,
/// and lets it go on (`GO`) once it can be in the cgroup.
fn spawn_init(cfg: &ContainerConfig) -> Result<Built, SpawnErr> {
    macro_rules! tri {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(f) => return Err(Box::new((f, None))),
            }
        };
    }
    let (sync_shim, sync_init) = tri!(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC
    )
    .map_err(|e| StepFailure::errno("socketpair", "", e)));
    let mut shim_stdin = None;
    let mut outputs = Vec::new();
    let child_stdio = if cfg.tty {
        None
    } else {
        let stdin_child = if cfg.open_stdin {
            let (r, w) = tri!(pipe());
            shim_stdin = Some(w);
            r
        } else {
            tri!(std::fs::File::open("/dev/null")
                .map(OwnedFd::from)
                .map_err(io_step("open", Path::new("/dev/null"))))
        };
        let (out_r, out_w) = tri!(pipe());
        let (err_r, err_w) = tri!(pipe());
        outputs.push((out_r, crate::logs::LogStream::Stdout));
        outputs.push((err_r, crate::logs::LogStream::Stderr));
        Some([stdin_child, out_w, err_w])
    };
    tri!(nix::sched::unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| StepFailure::errno("unshare", "pid", e)));
    let mut ns = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if cfg.network == NetworkMode::None {
        ns |= CloneFlags::CLONE_NEWNET;
    }
    // On the hybrid layout the init starts in its `unified` cgroup (see `unified_dir`).
    let unified = tri!(crate::cgroup::open_unified(&cfg.cgroup_path())
        .map_err(|e| StepFailure::from_error("create cgroup", &e)));
    // SAFETY: the shim is single-threaded; the child only runs init code and then execs or
    // exits, and does not abort or use pthreads (see `fork_into`).
    let forked = unsafe { crate::forkinto::fork_into(unified.as_ref().map(|f| f.as_raw_fd())) };
    drop(unified);
    match forked {
        Ok(ForkResult::Child) => {
            drop(sync_shim);
            drop(shim_stdin);
            drop(outputs);
            if let Err(e) = nix::sched::unshare(ns) {
                init::send(
                    sync_init.as_raw_fd(),
                    &InitMsg::Failed(StepFailure::errno("unshare", "namespaces", e)),
                    None,
                );
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(125) }
            }
            init::run(
                cfg,
                InitChannels {
                    sync: sync_init,
                    stdio: child_stdio,
                },
            )
        }
        Ok(ForkResult::Parent { child }) => {
            drop(sync_init);
            drop(child_stdio);
            let kill_child = |f: StepFailure, cg: Option<ContainerCgroup>| {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                Err(Box::new((f, cg)))
            };
            // The init's failure report, if it has failed meanwhile, says more than ours.
            let its_failure_or = |ours: StepFailure| match recv_init_nonblocking(&sync_shim) {
                Some(InitMsg::Failed(f)) => f,
                _ => ours,
            };
            let devices = match device_rules(cfg) {
                Ok(d) => d,
                Err(f) => return kill_child(f, None),
            };
            let cgroup = match ContainerCgroup::create(
                &cfg.cgroup_path(),
                &cfg.resources,
                devices.as_deref(),
            ) {
                Ok(cg) => cg,
                Err(e) => {
                    let f = its_failure_or(StepFailure::from_error("create cgroup", &e));
                    return kill_child(f, None);
                }
            };
            // On v1 the init moves itself, through the `tasks` files sent with GO (see
            // `ContainerCgroup::self_join`); on v2 we move it.
            let joins = match cgroup.self_join() {
                Ok(j) => j,
                Err(e) => {
                    return kill_child(StepFailure::from_error("join cgroup", &e), Some(cgroup))
                }
            };
            if joins.is_none() {
                if let Err(e) = cgroup.add(child.as_raw()) {
                    let f = its_failure_or(StepFailure::from_error("join cgroup", &e));
                    return kill_child(f, Some(cgroup));
                }
            }
            if let Err(e) = init::send_go(sync_shim.as_raw_fd(), joins.as_ref()) {
                let f = its_failure_or(StepFailure::errno("sync", "init", e));
                return kill_child(f, Some(cgroup));
            }
            drop(joins);
            match recv_init(sync_shim.as_raw_fd()) {
                Ok((InitMsg::Ready, fd)) => {
                    if cfg.tty && fd.is_none() {
                        return kill_child(
                            StepFailure::detail("receive pty", "init", "no pty master".into()),
                            Some(cgroup),
                        );
                    }
                    let dup = |m: &OwnedFd| m.try_clone().map_err(io_step("dup", Path::new("pty")));
                    let (stdin, pty) = match fd {
                        Some(m) => match (dup(&m), dup(&m)) {
                            (Ok(reader), Ok(writer)) => {
                                outputs.push((reader, crate::logs::LogStream::Stdout));
                                (Some(writer), Some(m))
                            }
                            (Err(f), _) | (_, Err(f)) => return kill_child(f, Some(cgroup)),
                        },
                        None => (shim_stdin, None),
                    };
                    let mount_ns = std::fs::File::open(format!("/proc/{child}/ns/mnt")).ok();
                    Ok(Built {
                        init: child,
                        cgroup,
                        sync: Some(sync_shim),
                        stdin,
                        outputs,
                        pty,
                        mount_ns,
                    })
                }
                Ok((InitMsg::Failed(f), _)) => kill_child(f, Some(cgroup)),
                Err(f) => kill_child(f, Some(cgroup)),
            }
        }
        Err(e) => Err(Box::new((StepFailure::errno("fork", "init", e), None))),
    }
}

/// The v1 device cgroup rules `--device` adds (`c 10:229 rwm`); `None` (all devices) for
/// `--privileged`.
fn device_rules(cfg: &ContainerConfig) -> Result<Option<Vec<String>>, StepFailure> {
    if cfg.security.privileged {
        return Ok(None);
    }
    let mut rules = Vec::new();
    for d in &cfg.security.devices {
        let node = init::mounts::device_node(&d.host_path, d.target())?;
        let kind = if node.kind == nix::sys::stat::SFlag::S_IFBLK {
            'b'
        } else {
            'c'
        };
        let perms = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        rules.push(format!(
            "{kind} {}:{} {perms}",
            nix::sys::stat::major(node.rdev),
            nix::sys::stat::minor(node.rdev)
        ));
    }
    Ok(Some(rules))
}

/// A message init has already sent, if any (without waiting).
fn recv_init_nonblocking(sync: &OwnedFd) -> Option<InitMsg> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = nix::sys::socket::recv(sync.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).ok()?;
    serde_json::from_slice(&buf[..n]).ok()
}

/// Receives one message (and possibly one fd) from init; EOF means init died.
pub(crate) fn recv_init(sync: RawFd) -> Result<(InitMsg, Option<OwnedFd>), StepFailure> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let (n, fd) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut msg = recvmsg::<()>(sync, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC);
        if matches!(msg, Err(nix::Error::ECONNRESET)) {
            // An init that failed before reading `GO` closed its end with that unread: the
            // kernel reports ECONNRESET once, then hands over the failure it had sent.
            msg = recvmsg::<()>(sync, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC);
        }
        let msg = msg.map_err(|e| StepFailure::errno("receive from init", "", e))?;
        let mut fd = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for f in fds {
                        // SAFETY: the kernel installed this descriptor for us.
                        let owned = unsafe { OwnedFd::from_raw_fd(f) };
                        if fd.is_none() {
                            fd = Some(owned);
                        }
                    }
                }
            }
        }
        (msg.bytes, fd)
    };
    if n == 0 {
        return Err(StepFailure::detail(
            "init",
            "",
            "container init exited during setup".into(),
        ));
    }
    let msg = serde_json::from_slice(&buf[..n])
        .map_err(|e| StepFailure::detail("receive from init", "", e.to_string()))?;
    Ok((msg, fd))
}
