//! Per-process settings of a container: `--ulimit`, `--sysctl`, `--cgroupns`.

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// `--ulimit name=soft[:hard]`, as Docker's HostConfig `Ulimits` entry `{Name, Soft, Hard}`.
/// A negative value means unlimited (RLIM_INFINITY).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ulimit {
    /// Docker's name without `RLIMIT_`: core, cpu, data, fsize, locks, memlock, msgqueue,
    /// nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack.
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Docker's ulimit names (go-units) and the setrlimit(2) resource each stands for.
const ULIMITS: &[(&str, nix::sys::resource::Resource)] = {
    use nix::sys::resource::Resource as R;
    &[
        ("core", R::RLIMIT_CORE),
        ("cpu", R::RLIMIT_CPU),
        ("data", R::RLIMIT_DATA),
        ("fsize", R::RLIMIT_FSIZE),
        ("locks", R::RLIMIT_LOCKS),
        ("memlock", R::RLIMIT_MEMLOCK),
        ("msgqueue", R::RLIMIT_MSGQUEUE),
        ("nice", R::RLIMIT_NICE),
        ("nofile", R::RLIMIT_NOFILE),
        ("nproc", R::RLIMIT_NPROC),
        ("rss", R::RLIMIT_RSS),
        ("rtprio", R::RLIMIT_RTPRIO),
        ("rttime", R::RLIMIT_RTTIME),
        ("sigpending", R::RLIMIT_SIGPENDING),
        ("stack", R::RLIMIT_STACK),
    ]
};

impl Ulimit {
    /// Parses the CLI form `name=soft[:hard]` (`nofile=1024:2048`; hard = soft when
    /// omitted), as `docker run --ulimit`. Errors are [`RuntimeError::InvalidUlimit`].
    pub fn parse(spec: &str) -> Result<Ulimit> {
        let bad = |name: &str, reason: &str| RuntimeError::InvalidUlimit {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let (name, values) = spec
            .split_once('=')
            .ok_or_else(|| bad(spec, "expected name=soft[:hard]"))?;
        let (soft, hard) = values.split_once(':').unwrap_or((values, values));
        let num = |v: &str| {
            v.parse::<i64>()
                .map_err(|_| bad(name, "limits must be numbers"))
        };
        let u = Ulimit {
            name: name.to_string(),
            soft: num(soft)?,
            hard: num(hard)?,
        };
        u.resolve()?;
        Ok(u)
    }

    /// The setrlimit resource and (soft, hard) limits; an unknown name or soft > hard is
    /// [`RuntimeError::InvalidUlimit`].
    pub(crate) fn resolve(&self) -> Result<(nix::sys::resource::Resource, u64, u64)> {
        let bad = |reason: &str| RuntimeError::InvalidUlimit {
            name: self.name.clone(),
            reason: reason.to_string(),
        };
        let res = ULIMITS
            .iter()
            .find(|(n, _)| *n == self.name)
            .map(|(_, r)| *r)
            .ok_or_else(|| bad("unknown ulimit name"))?;
        let lim = |v: i64| {
            if v < 0 {
                libc::RLIM_INFINITY
            } else {
                v as u64
            }
        };
        let (soft, hard) = (lim(self.soft), lim(self.hard));
        if soft > hard {
            return Err(bad("soft limit is greater than the hard limit"));
        }
        Ok((res, soft, hard))
    }
}

/// Whether the container gets its own cgroup namespace (`--cgroupns`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CgroupNs {
    /// Own cgroup namespace rooted at the container's cgroup; /sys/fs/cgroup mounted
    /// read-only inside, showing that cgroup.
    #[default]
    Private,
    /// The host's cgroup namespace; /sys/fs/cgroup is the host's hierarchy, read-only.
    Host,
}

/// Checks that `key` is a sysctl Docker allows: one the kernel namespaces (IPC keys, and
/// `net.*` when the container has its own network namespace). `host_network` is whether it
/// shares the host's. The value is written as given.
pub(crate) fn validate_sysctl(key: &str, host_network: bool) -> Result<()> {
    let bad = |reason: &str| {
        Err(RuntimeError::InvalidSysctl {
            key: key.to_string(),
            reason: reason.to_string(),
        })
    };
    if key.is_empty() || key.contains("..") || key.contains('\0') {
        return bad("malformed sysctl name");
    }
    // `net/ipv4/conf/eth0.100/forwarding` names the same key with slashes.
    let key = if key.contains('/') {
        key.replace('/', ".")
    } else {
        key.to_string()
    };
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
        return Ok(());
    }
    if key.starts_with("net.") {
        if host_network {
            return bad("net.* sysctls are not allowed with the host's network namespace");
        }
        return Ok(());
    }
    bad("not a namespaced sysctl (allowed: kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, net.*)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimit_names_are_dockers() {
        let u = |n: &str, s, h| Ulimit {
            name: n.into(),
            soft: s,
            hard: h,
        };
        let (r, s, h) = u("nofile", 1024, 2048).resolve().unwrap();
        assert_eq!(
            (r, s, h),
            (nix::sys::resource::Resource::RLIMIT_NOFILE, 1024, 2048)
        );
        assert_eq!(u("core", -1, -1).resolve().unwrap().2, libc::RLIM_INFINITY);
        assert!(
            matches!(u("files", 1, 1).resolve(), Err(RuntimeError::InvalidUlimit { name, .. }) if name == "files")
        );
        assert!(u("nproc", 10, 5).resolve().is_err());
        assert_eq!(
            Ulimit::parse("nofile=1024:2048").unwrap(),
            u("nofile", 1024, 2048)
        );
        assert_eq!(Ulimit::parse("core=-1").unwrap(), u("core", -1, -1));
        assert!(Ulimit::parse("nofile").is_err());
        assert!(Ulimit::parse("nofile=a:b").is_err());
        assert!(Ulimit::parse("bogus=1").is_err());
    }

    #[test]
    fn only_namespaced_sysctls() {
        assert!(validate_sysctl("kernel.shmmax", false).is_ok());
        assert!(validate_sysctl("fs.mqueue.msg_max", true).is_ok());
        assert!(validate_sysctl("net.ipv4.ip_forward", false).is_ok());
        assert!(validate_sysctl("net.ipv4.ip_forward", true).is_err());
        assert!(
            matches!(validate_sysctl("kernel.hostname", false), Err(RuntimeError::InvalidSysctl { key, .. }) if key == "kernel.hostname")
        );
        assert!(validate_sysctl("vm.swappiness", false).is_err());
    }
}
