//! The last steps before the user's program runs, shared by a container's init and `exec`:
//! environment, executable lookup, identity, capabilities, no_new_privs, execve.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;

use ::caps::Capability;
use nix::sys::resource::Resource;

use crate::config::ContainerConfig;
use crate::error::StepFailure;
use crate::init::caps;
use crate::init::user::{self, ResolvedUser};

pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Resolves a user spec inside the current root (the container's).
pub(crate) fn resolve_user(spec: &str) -> Result<ResolvedUser, StepFailure> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    user::resolve(spec, &passwd, &group).map_err(|reason| StepFailure::detail("user", spec, reason))
}

/// `base` overridden by `extra` (by key), plus Docker's defaults for PATH, HOSTNAME, HOME
/// and (with a tty) TERM.
pub(crate) fn build_env(
    base: &[String],
    extra: &[String],
    hostname: &str,
    home: &str,
    tty: bool,
) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |kv: &String| {
        let key = kv.split('=').next().unwrap_or("");
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    };
    set(&format!("HOSTNAME={hostname}"));
    base.iter().chain(extra).for_each(&mut set);
    let has = |env: &Vec<String>, k: &str| env.iter().any(|e| e.split('=').next() == Some(k));
    if !has(&env, "PATH") {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={home}"));
    }
    if tty && !has(&env, "TERM") {
        env.push("TERM=xterm".to_string());
    }
    env
}

/// Finds `cmd` as the kernel would need it: as given if it has a slash, else in `PATH`.
/// Errors carry errno ENOENT (→ 127) or EACCES (→ 126).
pub(crate) fn lookup(cmd: &str, env: &[String]) -> Result<String, StepFailure> {
    if cmd.is_empty() {
        return Err(StepFailure::errno("exec", "\"\"", nix::Error::ENOENT));
    }
    if cmd.contains('/') {
        return Ok(cmd.to_string());
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let mut denied = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = format!("{dir}/{cmd}");
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
            denied.get_or_insert(candidate);
        }
    }
    Err(match denied {
        Some(c) => StepFailure::errno("exec", c, nix::Error::EACCES),
        None => StepFailure {
            step: "exec".into(),
            path: cmd.to_string(),
            errno: Some(libc::ENOENT),
            detail: Some("executable file not found in $PATH".into()),
        },
    })
}

/// What to execute, fully resolved.
pub(crate) struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: ResolvedUser,
    pub confinement: Confinement,
}

/// Limits a container's processes (its init's and `exec`'d ones alike) run under.
pub(crate) struct Confinement {
    /// Bounding set, and effective = permitted set for uid 0 (other uids get none).
    pub caps: Vec<Capability>,
    pub no_new_privs: bool,
    /// The BPF `create` compiled; loaded before the uid switch (while CAP_SYS_ADMIN is
    /// held, as runc does) or, with no_new_privs, just before execve.
    pub seccomp: Option<Vec<u8>>,
    pub rlimits: Vec<(Resource, u64, u64)>,
    /// [`Confinement::apply_early`] has run.
    pub early_done: bool,
}

impl Confinement {
    /// `dir` is the container directory, read for the compiled seccomp filter; call
    /// before pivot_root or joining the mount namespace.
    pub(crate) fn of(
        cfg: &ContainerConfig,
        dir: &std::path::Path,
    ) -> Result<Confinement, StepFailure> {
        let fail = |e: crate::error::RuntimeError| StepFailure::from_error("security", &e);
        let caps = cfg.security.capabilities().map_err(fail)?;
        let seccomp = match cfg.security.effective_seccomp() {
            // A filter asked for is never skipped: a container created before skiff wrote
            // seccomp.bpf (an upgrade) has it compiled here.
            Some(s) => {
                let p = crate::paths::ContainerPaths::new(dir).seccomp_bpf();
                match std::fs::read(&p) {
                    Ok(code) => Some(code),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        crate::seccomp::bpf(s, &caps)
                            .map_err(fail)?
                            .map(|code| code.to_vec())
                    }
                    Err(e) => {
                        return Err(StepFailure::detail(
                            "read seccomp filter",
                            p.display(),
                            e.to_string(),
                        ))
                    }
                }
            }
            None => None,
        };
        let rlimits = cfg
            .ulimits
            .iter()
            .map(|u| u.resolve())
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        Ok(Confinement {
            caps,
            no_new_privs: cfg.security.no_new_privileges,
            seccomp,
            rlimits,
            early_done: false,
        })
    }

    /// The ulimits and, without no_new_privs, the seccomp filter (needs CAP_SYS_ADMIN, as
    /// runc loads it). The container's init runs this before it waits for `start`, as runc
    /// does, so the filter's load (~1 ms of kernel verification) is off the start path;
    /// [`exec`] runs it otherwise. Nothing the filter may refuse is called after it but
    /// the steps of [`exec`].
    pub(crate) fn apply_early(&mut self) -> Result<(), StepFailure> {
        if self.early_done {
            return Ok(());
        }
        for &(res, soft, hard) in &self.rlimits {
            nix::sys::resource::setrlimit(res, soft, hard)
                .map_err(|e| StepFailure::errno("setrlimit", format!("{res:?}"), e))?;
        }
        if !self.no_new_privs {
            if let Some(code) = &self.seccomp {
                load_seccomp(code)?;
            }
        }
        self.early_done = true;
        Ok(())
    }
}

fn load_seccomp(code: &[u8]) -> Result<(), StepFailure> {
    crate::seccomp::load_bpf(code).map_err(|e| StepFailure::errno("load seccomp filter", "", e))
}

/// Resets signal state inherited from our (Rust) process: Rust ignores SIGPIPE, and ignored
/// signals survive execve.
pub(crate) fn reset_signals() {
    use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: installing the default disposition.
            let _ = unsafe { signal(sig, SigHandler::SigDfl) };
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Switches identity, drops capabilities and executes; returns only on failure.
pub(crate) fn exec(spec: &mut ProcessSpec) -> StepFailure {
    use nix::unistd::{Gid, Uid};
    let fail = |step: &str, path: &str, e: nix::Error| StepFailure::errno(step, path, e);
    let cwd = if spec.cwd.is_empty() {
        "/"
    } else {
        spec.cwd.as_str()
    };
    let prog = match lookup(&spec.args[0], &spec.env) {
        Ok(p) => p,
        Err(f) => return f,
    };
    let conf = &mut spec.confinement;
    if let Err(f) = conf.apply_early() {
        return f;
    }
    let conf = &spec.confinement;
    if let Err(f) = caps::limit_bounding(&conf.caps) {
        return f;
    }
    // Keep the permitted set across the uid switch, so that the capability set is ours to
    // choose afterwards (runc's order): root keeps its set, other users get none, as on
    // Docker.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return fail("keep capabilities", "", nix::Error::last());
    }
    let groups: Vec<Gid> = spec.user.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        return fail("setgroups", "", e);
    }
    let gid = Gid::from_raw(spec.user.gid);
    if let Err(e) = nix::unistd::setresgid(gid, gid, gid) {
        return fail("setgid", &spec.user.gid.to_string(), e);
    }
    let uid = Uid::from_raw(spec.user.uid);
    if let Err(e) = nix::unistd::setresuid(uid, uid, uid) {
        return fail("setuid", &spec.user.uid.to_string(), e);
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) } != 0 {
        return fail("keep capabilities", "", nix::Error::last());
    }
    let effective: &[Capability] = if spec.user.uid == 0 { &conf.caps } else { &[] };
    if let Err(f) = caps::set(effective) {
        return f;
    }
    if let Err(e) = nix::unistd::chdir(cwd) {
        return fail("chdir", cwd, e);
    }
    if conf.no_new_privs {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return fail("no_new_privs", "", nix::Error::last());
        }
        if let Some(ctx) = &conf.seccomp {
            if let Err(f) = load_seccomp(ctx) {
                return f;
            }
        }
    }
    let cstr = |s: &str| CString::new(s).unwrap_or_default();
    let argv: Vec<CString> = spec.args.iter().map(|a| cstr(a)).collect();
    let envp: Vec<CString> = spec.env.iter().map(|e| cstr(e)).collect();
    reset_signals();
    let err = match nix::unistd::execve(&cstr(&prog), &argv, &envp) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    let err = if err == nix::Error::ENOEXEC {
        nix::Error::EACCES
    } else {
        err
    };
    fail("exec", &prog, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_gets_defaults_and_overrides_by_key() {
        let env = build_env(
            &["A=1".into(), "PATH=/x".into()],
            &["A=2".into()],
            "abc",
            "/root",
            true,
        );
        assert_eq!(
            env,
            vec!["HOSTNAME=abc", "PATH=/x", "A=2", "HOME=/root", "TERM=xterm"]
        );
        let env = build_env(&[], &[], "h", "/", false);
        assert_eq!(env[0], format!("PATH={DEFAULT_PATH}"));
        assert!(!env.iter().any(|e| e.starts_with("TERM=")));
    }
}
