//! Seccomp profiles in Docker's JSON format (`--security-opt seccomp=PROFILE.json`, and
//! Docker's default profile in `runtime/seccomp/default.json`), compiled with libseccomp.
//!
//! Conditional rules are resolved as Docker does (moby `profiles/seccomp`): `includes` /
//! `excludes` on `caps` (against the container's capability set), `arches` (Go names:
//! `amd64`, `arm64`...) and `minKernel`; syscall names libseccomp does not know are skipped;
//! a rule whose args compare the same argument twice becomes one rule per comparison (OR),
//! as runc does; `SCMP_CMP_MASKED_EQ` takes `value` as the mask and `valueTwo` as the datum.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use caps::Capability;
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde::Deserialize;

use crate::config::Seccomp;
use crate::error::{Result, RuntimeError};

/// Docker's default profile, from moby's `profiles/seccomp/default.json` (module
/// github.com/moby/profiles/seccomp v0.2.3, as vendored by moby master of 2026-08).
pub(crate) const DEFAULT_PROFILE: &str = include_str!("../seccomp/default.json");

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default, deserialize_with = "nullable")]
    default_errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    architectures: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    arch_map: Vec<ArchMap>,
    #[serde(default, deserialize_with = "nullable")]
    syscalls: Vec<Rule>,
    #[serde(default, deserialize_with = "nullable")]
    listener_path: String,
    #[serde(default, deserialize_with = "nullable")]
    flags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default, deserialize_with = "nullable")]
    sub_architectures: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    names: Vec<String>,
    action: String,
    #[serde(default, deserialize_with = "nullable")]
    errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    args: Vec<Arg>,
    #[serde(default, deserialize_with = "nullable")]
    includes: Filter,
    #[serde(default, deserialize_with = "nullable")]
    excludes: Filter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default, deserialize_with = "nullable")]
    arches: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    caps: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    min_kernel: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default, deserialize_with = "nullable")]
    value_two: u64,
    op: String,
}

/// Docker's profiles write `null` for empty lists (`"args": null`).
fn nullable<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn invalid(reason: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidSeccompProfile {
        reason: reason.into(),
    }
}

fn action(name: &str, errno: Option<u32>) -> Result<ScmpAction> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => ScmpAction::Allow,
        "SCMP_ACT_ERRNO" => ScmpAction::Errno(errno.unwrap_or(libc::EPERM as u32) as i32),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => ScmpAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => ScmpAction::KillProcess,
        "SCMP_ACT_TRAP" => ScmpAction::Trap,
        "SCMP_ACT_TRACE" => ScmpAction::Trace(errno.unwrap_or(libc::EPERM as u32) as u16),
        "SCMP_ACT_LOG" => ScmpAction::Log,
        other => return Err(invalid(format!("unsupported action {other:?}"))),
    })
}

/// The Go name of this machine's architecture, as profiles' `arches` use it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// (major, minor) of the running kernel, or of a profile's `minKernel`.
fn kernel_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(['.', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn running_kernel() -> (u32, u32) {
    nix::sys::utsname::uname()
        .ok()
        .and_then(|u| kernel_version(&u.release().to_string_lossy()))
        .unwrap_or((0, 0))
}

fn cap_names(caps: &[Capability]) -> Vec<String> {
    caps.iter().map(|c| c.to_string()).collect()
}

impl Rule {
    /// Whether this rule applies to a container with `caps` on this machine.
    fn applies(&self, caps: &[String], kernel: (u32, u32)) -> Result<bool> {
        let arch = go_arch();
        let inc = &self.includes;
        if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == arch) {
            return Ok(false);
        }
        if !inc.caps.iter().all(|c| caps.contains(c)) {
            return Ok(false);
        }
        if !inc.min_kernel.is_empty() {
            let min = kernel_version(&inc.min_kernel)
                .ok_or_else(|| invalid(format!("bad minKernel {:?}", inc.min_kernel)))?;
            if kernel < min {
                return Ok(false);
            }
        }
        let exc = &self.excludes;
        if exc.arches.iter().any(|a| a == arch) || exc.caps.iter().any(|c| caps.contains(c)) {
            return Ok(false);
        }
        if !exc.min_kernel.is_empty() {
            let min = kernel_version(&exc.min_kernel)
                .ok_or_else(|| invalid(format!("bad minKernel {:?}", exc.min_kernel)))?;
            if kernel >= min {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn comparisons(&self) -> Result<Vec<ScmpArgCompare>> {
        self.args
            .iter()
            .map(|a| {
                if a.index > 5 {
                    return Err(invalid(format!("argument index {} out of range", a.index)));
                }
                let (op, datum) = match a.op.as_str() {
                    "SCMP_CMP_MASKED_EQ" => (ScmpCompareOp::MaskedEqual(a.value), a.value_two),
                    "SCMP_CMP_NE" => (ScmpCompareOp::NotEqual, a.value),
                    "SCMP_CMP_LT" => (ScmpCompareOp::Less, a.value),
                    "SCMP_CMP_LE" => (ScmpCompareOp::LessOrEqual, a.value),
                    "SCMP_CMP_EQ" => (ScmpCompareOp::Equal, a.value),
                    "SCMP_CMP_GE" => (ScmpCompareOp::GreaterEqual, a.value),
                    "SCMP_CMP_GT" => (ScmpCompareOp::Greater, a.value),
                    other => return Err(invalid(format!("unknown operator {other:?}"))),
                };
                Ok(ScmpArgCompare::new(a.index, op, datum))
            })
            .collect()
    }
}

fn scmp_err(what: &str) -> impl Fn(libseccomp::error::SeccompError) -> RuntimeError + '_ {
    move |e| invalid(format!("{what}: {e}"))
}

/// The filter for `seccomp` with the container's capabilities `caps`; `None` for
/// unconfined. A profile that does not parse or compile is
/// [`RuntimeError::InvalidSeccompProfile`].
pub(crate) fn compile(seccomp: &Seccomp, caps: &[Capability]) -> Result<Option<ScmpFilterContext>> {
    let text = match seccomp {
        Seccomp::Unconfined => return Ok(None),
        Seccomp::Default => DEFAULT_PROFILE,
        Seccomp::Profile(t) => t.as_str(),
    };
    let profile: Profile =
        serde_json::from_str(text).map_err(|e| invalid(format!("parse: {e}")))?;
    if !profile.listener_path.is_empty() {
        return Err(invalid("listenerPath (seccomp notify) is not supported"));
    }
    if let Some(flag) = profile.flags.first() {
        return Err(invalid(format!("flag {flag} is not supported")));
    }
    let default = action(&profile.default_action, profile.default_errno_ret)?;
    let mut ctx = ScmpFilterContext::new(default).map_err(scmp_err("new filter"))?;
    // A binary tree of syscall numbers rather than a linear list: fewer BPF instructions
    // run per system call with a ~400-syscall allowlist.
    ctx.set_ctl_optimize(2).map_err(scmp_err("optimize"))?;
    // Architectures: the native one plus its sub-architectures from archMap (or the
    // profile's plain list), as Docker does.
    let native = ScmpArch::native();
    let mut arches: Vec<String> = Vec::new();
    for m in &profile.arch_map {
        let a: ScmpArch = m
            .architecture
            .parse()
            .map_err(|_| invalid(format!("unknown architecture {:?}", m.architecture)))?;
        if a == native {
            arches.extend(m.sub_architectures.iter().cloned());
        }
    }
    if profile.arch_map.is_empty() {
        arches.extend(profile.architectures.iter().cloned());
    }
    for a in arches {
        let arch: ScmpArch = a
            .parse()
            .map_err(|_| invalid(format!("unknown architecture {a:?}")))?;
        if arch != native {
            ctx.add_arch(arch).map_err(scmp_err("add architecture"))?;
        }
    }
    let caps = cap_names(caps);
    let kernel = running_kernel();
    for rule in &profile.syscalls {
        let act = action(&rule.action, rule.errno_ret)?;
        let cmps = rule.comparisons()?;
        if !rule.applies(&caps, kernel)? || act == default {
            continue;
        }
        let names = rule
            .names
            .iter()
            .chain((!rule.name.is_empty()).then_some(&rule.name));
        let mut indexes: Vec<u32> = rule.args.iter().map(|a| a.index).collect();
        indexes.sort_unstable();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in names {
            // Names this libseccomp does not know (newer syscalls) are skipped, as Docker does.
            let Ok(sys) = ScmpSyscall::from_name(name) else {
                continue;
            };
            if repeated {
                for c in &cmps {
                    ctx.add_rule_conditional(act, sys, std::slice::from_ref(c))
                        .map_err(scmp_err(name))?;
                }
            } else {
                ctx.add_rule_conditional(act, sys, &cmps)
                    .map_err(scmp_err(name))?;
            }
        }
    }
    Ok(Some(ctx))
}

/// Compiled filters by (profile text, capability set): compiling Docker's profile takes
/// ~10 ms, so a long-lived caller (the daemon) does it once per distinct setting.
/// Keyed by the custom profile's text (`None` for Docker's default) and capability mask.
type Cache = HashMap<(Option<String>, u64), Arc<Vec<u8>>>;
static CACHE: Mutex<Option<Cache>> = Mutex::new(None);
/// Entries kept before the cache starts afresh (custom profiles could be many).
const CACHE_MAX: usize = 32;

/// The filter for `seccomp` and `caps` as BPF (`struct sock_filter[]`), from the cache or
/// compiled; `None` for unconfined. Errors as [`compile`].
pub(crate) fn bpf(seccomp: &Seccomp, caps: &[Capability]) -> Result<Option<Arc<Vec<u8>>>> {
    let text = match seccomp {
        Seccomp::Unconfined => return Ok(None),
        Seccomp::Default => None,
        Seccomp::Profile(t) => Some(t.clone()),
    };
    let key = (text, caps.iter().fold(0u64, |m, c| m | (1 << c.index())));
    if let Some(hit) = CACHE
        .lock()
        .ok()
        .and_then(|c| c.as_ref().and_then(|c| c.get(&key).cloned()))
    {
        return Ok(Some(hit));
    }
    let Some(ctx) = compile(seccomp, caps)? else {
        return Ok(None);
    };
    let code = Arc::new(export(&ctx)?);
    if let Ok(mut c) = CACHE.lock() {
        let c = c.get_or_insert_with(HashMap::new);
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(key, code.clone());
    }
    Ok(Some(code))
}

/// The filter's BPF, through a memfd (libseccomp 2.5 exports to a descriptor only).
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let fd = nix::sys::memfd::memfd_create(
        c"skiff-seccomp",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(|e| invalid(format!("memfd: {e}")))?;
    let mut file = std::fs::File::from(fd);
    ctx.export_bpf(&file)
        .map_err(|e| invalid(format!("export: {e}")))?;
    let mut code = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut code))
        .map_err(|e| invalid(format!("read back: {e}")))?;
    Ok(code)
}

/// Installs a filter from [`bpf`] on the calling thread (seccomp(2),
/// SECCOMP_SET_MODE_FILTER). Needs no_new_privs or CAP_SYS_ADMIN.
pub(crate) fn load_bpf(code: &[u8]) -> nix::Result<()> {
    const SOCK_FILTER_SIZE: usize = std::mem::size_of::<libc::sock_filter>();
    if code.is_empty() || !code.len().is_multiple_of(SOCK_FILTER_SIZE) {
        return Err(nix::Error::EINVAL);
    }
    let filters: Vec<libc::sock_filter> = code
        .chunks_exact(SOCK_FILTER_SIZE)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: filters.len() as u16,
        filter: filters.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: seccomp(2) with a program that points into `filters`, alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles_and_bad_profiles_are_refused() {
        let caps = crate::config::Security::default().capabilities().unwrap();
        assert!(compile(&Seccomp::Default, &caps).unwrap().is_some());
        assert!(compile(&Seccomp::Unconfined, &caps).unwrap().is_none());
        for bad in [
            "{not json",
            r#"{"defaultAction":"SCMP_ACT_FLY"}"#,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_LOG"]}"#,
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_ABOUT"}]}]}"#,
        ] {
            let e = compile(&Seccomp::Profile(bad.into()), &caps).unwrap_err();
            assert!(
                matches!(e, RuntimeError::InvalidSeccompProfile { .. }),
                "{bad}: {e}"
            );
        }
        let ok = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["keyctl","no_such_call"],"action":"SCMP_ACT_ERRNO"}]}"#;
        assert!(compile(&Seccomp::Profile(ok.into()), &caps)
            .unwrap()
            .is_some());
        assert_eq!(kernel_version("6.18.44-fc"), Some((6, 18)));
    }

    /// In a forked child: Docker's default filter for Docker's default capabilities makes
    /// keyctl and unshare fail with EPERM, while getpid still works.
    #[test]
    fn default_filter_denies_keyctl_and_unshare_with_eperm() {
        let caps = crate::config::Security::default().capabilities().unwrap();
        let code = bpf(&Seccomp::Default, &caps).unwrap().unwrap();
        // SAFETY: the child only makes system calls and _exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: prctl/syscall with integer arguments; _exit never returns.
                unsafe {
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                    if load_bpf(&code).is_err() {
                        libc::_exit(10);
                    }
                    let keyctl =
                        libc::syscall(libc::SYS_keyctl, 0 /* GET_KEYRING_ID */, -3, 0);
                    let keyctl_err = *libc::__errno_location();
                    let unshare = libc::unshare(libc::CLONE_NEWUTS);
                    let unshare_err = *libc::__errno_location();
                    let ok = keyctl == -1
                        && keyctl_err == libc::EPERM
                        && unshare == -1
                        && unshare_err == libc::EPERM
                        && libc::getpid() > 0;
                    libc::_exit(if ok { 0 } else { 11 })
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
