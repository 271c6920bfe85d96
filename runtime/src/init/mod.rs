//! The container's init: runs in the shim's forked child, already in the new pid namespace,
//! single-threaded. It builds the container (namespaces, rootfs, pty), reports `Ready` to the
//! shim, waits for `start`, then becomes the user's process via execve.

pub(crate) mod caps;
pub(crate) mod cgroupfs;
mod loopback;
pub(crate) mod mounts;
pub(crate) mod process;
pub(crate) mod rootfs;
pub(crate) mod user;

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sched::CloneFlags;
use nix::sys::socket::{recv, recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

use crate::cgroup::SelfJoin;
use crate::config::{CgroupNs, ContainerConfig, NetworkMode, WinSize};
use crate::error::StepFailure;
use crate::paths::ContainerPaths;

/// Init → shim messages on the seqpacket socket (one datagram each).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum InitMsg {
    /// Set up and waiting for `start`; a pty master travels alongside as SCM_RIGHTS.
    Ready,
    Failed(StepFailure),
}

/// Shim → init: the cgroup is ready (see [`send_go`]); join it and report.
pub(crate) const GO: u8 = b'G';
/// Shim → init: execute the command.
pub(crate) const START: u8 = b'S';

/// What init gets from the shim: its end of the sync socket and its stdio (for no-tty).
pub(crate) struct InitChannels {
    pub sync: OwnedFd,
    /// stdin, stdout, stderr for a container without tty.
    pub stdio: Option<[OwnedFd; 3]>,
}

pub(crate) fn send(sync: RawFd, msg: &InitMsg, fd: Option<RawFd>) {
    let data = serde_json::to_vec(msg).unwrap_or_default();
    let iov = [IoSlice::new(&data)];
    let fds;
    let cmsgs: Vec<ControlMessage> = match fd {
        Some(f) => {
            fds = [f];
            vec![ControlMessage::ScmRights(&fds)]
        }
        None => vec![],
    };
    let _ = sendmsg::<()>(sync, &iov, &cmsgs, MsgFlags::empty(), None);
}

/// Shim → init: `GO`, then the paths of the cgroup `tasks` files whose descriptors ride
/// along, one per line (none on cgroup v2, where the shim has moved init itself).
pub(crate) fn send_go(sync: RawFd, joins: Option<&SelfJoin>) -> nix::Result<()> {
    let files = joins.map(|j| j.files.as_slice()).unwrap_or_default();
    let mut data = vec![GO];
    let paths: Vec<String> = files
        .iter()
        .map(|(p, _)| p.to_string_lossy().into_owned())
        .collect();
    data.extend_from_slice(paths.join("\n").as_bytes());
    let fds: Vec<RawFd> = files.iter().map(|(_, f)| f.as_raw_fd()).collect();
    let iov = [IoSlice::new(&data)];
    let cmsgs: Vec<ControlMessage> = if fds.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(&fds)]
    };
    sendmsg::<()>(sync, &iov, &cmsgs, MsgFlags::empty(), None).map(|_| ())
}

/// Waits for `GO` and moves into the cgroup through the descriptors that came with it.
/// `Ok(false)` when the shim went away instead.
fn go_and_join_cgroup(sync: RawFd) -> Result<bool, StepFailure> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_CGROUP_FILES]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let Ok(msg) = recvmsg::<()>(sync, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) else {
        return Ok(false);
    };
    let mut fds = Vec::new();
    for c in msg.cmsgs().into_iter().flatten() {
        if let ControlMessageOwned::ScmRights(received) = c {
            // SAFETY: the kernel installed these descriptors for us.
            fds.extend(
                received
                    .into_iter()
                    .map(|f| unsafe { OwnedFd::from_raw_fd(f) }),
            );
        }
    }
    let n = msg.bytes;
    if n == 0 || buf[0] != GO {
        return Ok(false);
    }
    let paths = String::from_utf8_lossy(&buf[1..n]).into_owned();
    let mut names = paths.split('\n');
    for fd in fds {
        let name = names.next().unwrap_or("cgroup tasks");
        nix::unistd::write(&fd, b"0").map_err(|e| StepFailure::errno("join cgroup", name, e))?;
    }
    Ok(true)
}

/// More than the v1 hierarchies a container joins.
const MAX_CGROUP_FILES: usize = 16;

fn wait_byte(sync: RawFd, want: u8) -> bool {
    let mut b = [0u8; 1];
    matches!(recv(sync, &mut b, MsgFlags::empty()), Ok(1) if b[0] == want)
}

/// Runs the init; never returns.
pub(crate) fn run(cfg: &ContainerConfig, ch: InitChannels) -> ! {
    // Keep our end of the sync socket open until the very end: failures are sent on it.
    let sync_fd = ch.sync;
    let sync = sync_fd.as_raw_fd();
    let code = match setup(cfg, sync, ch.stdio) {
        Ok(Some(f)) | Err(f) => {
            let code = f.clone().into_error().exit_code();
            send(sync, &InitMsg::Failed(f), None);
            code
        }
        Ok(None) => 0,
    };
    drop(sync_fd);
    // SAFETY: leaving the forked child without running the shim's destructors.
    unsafe { libc::_exit(code) }
}

/// Returns `Ok(None)` when the shim went away before `start` (nothing to report).
fn setup(
    cfg: &ContainerConfig,
    sync: RawFd,
    stdio: Option<[OwnedFd; 3]>,
) -> Result<Option<StepFailure>, StepFailure> {
    let paths = ContainerPaths::new(&cfg.container_dir);
    nix::unistd::setsid().map_err(|e| StepFailure::errno("setsid", "", e))?;
    if let Some(stdio) = &stdio {
        for (i, fd) in stdio.iter().enumerate() {
            nix::unistd::dup2(fd.as_raw_fd(), i as RawFd)
                .map_err(|e| StepFailure::errno("dup2", i, e))?;
        }
    }
    drop(stdio);
    if let NetworkMode::Join(ns) = &cfg.network {
        let f = std::fs::File::open(ns)
            .map_err(|e| StepFailure::detail("open netns", ns.display(), e.to_string()))?;
        nix::sched::setns(f, CloneFlags::CLONE_NEWNET)
            .map_err(|e| StepFailure::errno("join netns", ns.display(), e))?;
    }
    let hostname = cfg.effective_hostname();
    nix::unistd::sethostname(&hostname)
        .map_err(|e| StepFailure::errno("sethostname", &hostname, e))?;
    if cfg.network == NetworkMode::None {
        loopback::up()?;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));

    let root = paths.rootfs();
    rootfs::make_private()?;
    rootfs::mount_overlay(
        &root,
        &cfg.lower_dirs,
        &paths.upper(),
        &paths.work(),
        cfg.ephemeral,
    )?;
    let mut etc = Vec::new();
    for name in ["hostname", "hosts", "resolv.conf"] {
        etc.push((name, rootfs::open_source(&paths.etc_file(name))?));
    }
    let privileged = cfg.security.privileged;
    let sources = mounts::open_sources(cfg)?;
    let confinement = process::Confinement::of(cfg, &cfg.container_dir)?;
    let cgroup_layout = crate::mount_table::cgroup_layout();
    rootfs::mount_system(&root, &etc, cfg.shm_size, privileged)?;
    drop(etc);
    rootfs::pivot(&root)?;
    mounts::write_sysctls(cfg)?;
    if !privileged {
        rootfs::protect_paths()?;
    }
    mounts::apply(cfg, sources)?;
    rootfs::ensure_cwd(&cfg.cwd)?;
    if cfg.readonly_rootfs {
        mounts::read_only_root()?;
    }
    // The shim makes the cgroup meanwhile, and on v2 moves us in (a write that waits for an
    // RCU grace period, 10-20 ms); on v1 we move ourselves now, which skips that wait. Our
    // cgroup namespace is rooted there, and nothing runs the user's code before.
    if !go_and_join_cgroup(sync)? {
        return Ok(None);
    }
    if cfg.cgroupns == CgroupNs::Private {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| StepFailure::errno("unshare", "cgroup", e))?;
    }

    let master = if cfg.tty {
        Some(open_console(cfg.console_size)?)
    } else {
        None
    };
    // An unknown user fails the start, not the create, as with dockerd (which resolves it
    // when it starts the container).
    let user = process::resolve_user(&cfg.user);
    let home = user.as_ref().map_or("/", |u| u.home.as_str()).to_string();
    let env = process::build_env(&cfg.env, &[], &hostname, &home, cfg.tty);
    send(
        sync,
        &InitMsg::Ready,
        master.as_ref().map(|m| m.as_raw_fd()),
    );
    drop(master);

    // /sys/fs/cgroup is mounted and the seccomp filter loaded while `create` returns and
    // `start` is on its way (nothing runs in the container before); a failure is reported
    // to `start`.
    let mut confinement = confinement;
    let early =
        cgroupfs::mount_all(&cgroup_layout, privileged).and_then(|()| confinement.apply_early());
    if !wait_byte(sync, START) {
        return Ok(None);
    }
    early?;
    let user = user?;
    let args = match &cfg.init {
        // As Docker: `/sbin/docker-init -- <args>`.
        Some(_) => [mounts::INIT_PATH.to_string(), "--".to_string()]
            .into_iter()
            .chain(cfg.args.iter().cloned())
            .collect(),
        None => cfg.args.clone(),
    };
    let mut spec = process::ProcessSpec {
        args,
        env,
        cwd: cfg.cwd.clone(),
        user,
        confinement,
    };
    Ok(Some(process::exec(&mut spec)))
}

/// Opens a pty in the container's own devpts, makes its slave the controlling terminal and
/// stdio (and /dev/console), and returns the master for the shim.
fn open_console(size: Option<WinSize>) -> Result<OwnedFd, StepFailure> {
    use nix::fcntl::OFlag;
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| StepFailure::errno("open", "/dev/ptmx", e))?;
    grantpt(&master).map_err(|e| StepFailure::errno("grantpt", "/dev/ptmx", e))?;
    unlockpt(&master).map_err(|e| StepFailure::errno("unlockpt", "/dev/ptmx", e))?;
    let name = ptsname_r(&master).map_err(|e| StepFailure::errno("ptsname", "/dev/ptmx", e))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| StepFailure::errno("open", &name, e))?;
    if let Some(ws) = size {
        set_winsize(slave, ws);
    }
    // SAFETY: TIOCSCTTY on a terminal fd we own, in a fresh session.
    if unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) } != 0 {
        return Err(StepFailure::errno(
            "set controlling terminal",
            &name,
            nix::Error::last(),
        ));
    }
    for i in 0..3 {
        nix::unistd::dup2(slave, i).map_err(|e| StepFailure::errno("dup2", i, e))?;
    }
    nix::mount::mount(
        Some(name.as_str()),
        "/dev/console",
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| StepFailure::errno("bind console", &name, e))?;
    let _ = nix::unistd::close(slave);
    // SAFETY: posix_openpt returned a descriptor we own.
    Ok(unsafe {
        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(
            master,
        ))
    })
}

/// Sets a terminal's size (TIOCSWINSZ).
pub(crate) fn set_winsize(fd: RawFd, ws: WinSize) {
    let w = libc::winsize {
        ws_row: ws.rows,
        ws_col: ws.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a valid winsize.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &w) };
}
