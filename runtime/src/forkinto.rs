//! fork(2) that can place the child straight into a cgroup2 directory (clone3 with
//! CLONE_INTO_CGROUP, Linux 5.7). Used for the hybrid layout's `unified` hierarchy, where
//! moving a process afterwards (`cgroup.procs`) would wait out an RCU grace period (~10 ms)
//! and v1's per-thread `tasks` trick does not exist.

use std::os::fd::RawFd;

use nix::unistd::{ForkResult, Pid};

/// `struct clone_args` of clone3(2), up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks like fork(2); with `cgroup` (an open cgroup2 directory) the child starts in it.
///
/// # Safety
/// As for fork: the caller is single-threaded, and the child only runs code that is safe
/// after fork, then execs or exits. With `cgroup` the child is made by the raw system call,
/// so glibc's fork bookkeeping (atfork handlers, its cached thread id) is skipped: the child
/// must not rely on them (no abort(), raise() or pthread calls before execve).
pub(crate) unsafe fn fork_into(cgroup: Option<RawFd>) -> nix::Result<ForkResult> {
    let Some(fd) = cgroup else {
        // SAFETY: forwarded to the caller.
        return unsafe { nix::unistd::fork() };
    };
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: fd as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 with a clone_args of the size passed and no new stack: returns twice
    // like fork.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        -1 => Err(nix::Error::last()),
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent {
            child: Pid::from_raw(pid as i32),
        }),
    }
}
