//! Security settings: capabilities (`--cap-add/--cap-drop`), seccomp
//! (`--security-opt seccomp=`), no_new_privs, `--privileged`, `--device`.

use std::path::PathBuf;
use std::str::FromStr;

use caps::Capability;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// What a container may do beyond a plain process.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Security {
    /// `--privileged`: every capability, no seccomp filter, no masked or read-only /proc
    /// paths, /sys read-write, the host's devices in /dev and no device cgroup rules.
    #[serde(default)]
    pub privileged: bool,
    /// `--cap-add`: names with or without `CAP_`, any case, or `ALL`.
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// `--cap-drop`: as `cap_add`; `ALL` drops all but the added ones.
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `--security-opt no-new-privileges`: set PR_SET_NO_NEW_PRIVS before exec, so setuid
    /// binaries gain nothing. Off by default, as on Docker.
    #[serde(default)]
    pub no_new_privileges: bool,
    /// The seccomp filter; Docker's default profile unless unconfined or privileged.
    #[serde(default)]
    pub seccomp: Seccomp,
    /// `--device HOST:CONTAINER:PERMS`.
    #[serde(default)]
    pub devices: Vec<Device>,
}

/// Which seccomp filter the container's processes get.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub enum Seccomp {
    /// Docker's default profile (`runtime/seccomp/default.json`).
    #[default]
    Default,
    /// `seccomp=unconfined`: no filter.
    Unconfined,
    /// `seccomp=PROFILE.json`: the profile's JSON text, in Docker's profile format.
    Profile(String),
}

/// A host device node made available in the container (`--device`, Docker's
/// `{PathOnHost, PathInContainer, CgroupPermissions}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Device {
    /// A character or block device on the host (`/dev/fuse`).
    pub host_path: PathBuf,
    /// Where it appears in the container; the host path when empty.
    #[serde(default)]
    pub container_path: String,
    /// Device cgroup access: a combination of `r`, `w`, `m`; `rwm` when empty.
    #[serde(default)]
    pub permissions: String,
}

impl Device {
    /// Parses the CLI form `HOST[:CONTAINER][:PERMS]` (`/dev/fuse`, `/dev/sda:/dev/xvda:rw`),
    /// as `docker run --device`; checked as [`Device::validate`] does.
    pub fn parse(spec: &str) -> Result<Device> {
        let parts: Vec<&str> = spec.split(':').collect();
        let (host, container, perms) = match parts.as_slice() {
            [h] => (*h, "", ""),
            [h, p] if !p.starts_with('/') => (*h, "", *p),
            [h, c] => (*h, *c, ""),
            [h, c, p] => (*h, *c, *p),
            _ => {
                return Err(RuntimeError::InvalidDevice {
                    path: PathBuf::from(spec),
                    reason: "expected HOST[:CONTAINER][:PERMS]".into(),
                })
            }
        };
        let d = Device {
            host_path: PathBuf::from(host),
            container_path: container.to_string(),
            permissions: perms.to_string(),
        };
        d.validate()?;
        Ok(d)
    }

    /// Absolute paths, permissions of `r`, `w`, `m` only, and a host path that is a
    /// character or block device.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: &str| {
            Err(RuntimeError::InvalidDevice {
                path: self.host_path.clone(),
                reason: reason.to_string(),
            })
        };
        if !self.host_path.is_absolute() {
            return bad("host path must be absolute");
        }
        if !self.container_path.is_empty() && !self.container_path.starts_with('/') {
            return bad("container path must be absolute");
        }
        if !self.permissions.chars().all(|c| "rwm".contains(c)) {
            return bad("permissions must be a combination of r, w and m");
        }
        use std::os::unix::fs::FileTypeExt;
        match std::fs::metadata(&self.host_path) {
            Ok(m) if m.file_type().is_char_device() || m.file_type().is_block_device() => {}
            Ok(_) => return bad("not a character or block device"),
            Err(e) => return bad(&e.to_string()),
        }
        Ok(())
    }

    /// The path inside the container.
    pub(crate) fn target(&self) -> PathBuf {
        if self.container_path.is_empty() {
            self.host_path.clone()
        } else {
            PathBuf::from(&self.container_path)
        }
    }
}

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub(crate) const DEFAULT_CAPS: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// A capability name as Docker accepts it: `net_admin`, `CAP_NET_ADMIN`; `None` for `ALL`.
pub fn parse_capability(name: &str) -> Result<Option<Capability>> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(None);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    Capability::from_str(&full)
        .map(Some)
        .map_err(|_| RuntimeError::UnknownCapability {
            name: name.to_string(),
        })
}

/// Capabilities this kernel has (up to /proc/sys/kernel/cap_last_cap) and we may give.
pub(crate) fn kernel_caps() -> Vec<Capability> {
    // Read once per process: a container's create asks three times (validate, the seccomp
    // filter, the init), each a file read and 41 prctl calls; neither the kernel's last
    // capability nor our bounding set grows while we run (a forked init inherits the value
    // computed before it narrows its own set).
    static KERNEL: std::sync::OnceLock<Vec<Capability>> = std::sync::OnceLock::new();
    KERNEL
        .get_or_init(|| {
            let last: u8 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(40);
            // Only those we hold ourselves (our bounding set): a process cannot grant more.
            let bounding = caps::read(None, caps::CapSet::Bounding).unwrap_or_else(|_| caps::all());
            let mut all: Vec<Capability> = caps::all()
                .into_iter()
                .filter(|c| c.index() <= last && bounding.contains(c))
                .collect();
            all.sort_by_key(|c| c.index());
            all
        })
        .clone()
}

impl Security {
    /// The capability set the container's processes get, computed as Docker's
    /// Compiles the filter of this setting into the process-wide cache, so the first
    /// container that asks for it does not wait (compiling Docker's profile takes 10-20
    /// ms). Errors as [`capabilities`](Self::capabilities) and the compile.
    pub fn warm_seccomp(&self) -> Result<()> {
        let caps = self.capabilities()?;
        if let Some(s) = self.effective_seccomp() {
            crate::seccomp::bpf(s, &caps)?;
        }
        Ok(())
    }

    /// `TweakCapabilities`: privileged → all; `cap_add` ALL → all minus `cap_drop`;
    /// `cap_drop` ALL → just `cap_add`; else the default set minus `cap_drop` plus `cap_add`.
    /// Unknown names are [`RuntimeError::UnknownCapability`].
    pub fn capabilities(&self) -> Result<Vec<Capability>> {
        let parse = |names: &[String]| -> Result<(bool, Vec<Capability>)> {
            let mut all = false;
            let mut v = Vec::new();
            for n in names {
                match parse_capability(n)? {
                    None => all = true,
                    Some(c) => v.push(c),
                }
            }
            Ok((all, v))
        };
        let (add_all, add) = parse(&self.cap_add)?;
        let (drop_all, drop) = parse(&self.cap_drop)?;
        let kernel = kernel_caps();
        let mut caps: Vec<Capability> = if self.privileged {
            kernel.clone()
        } else if add_all {
            kernel
                .iter()
                .filter(|c| !drop.contains(c))
                .copied()
                .collect()
        } else if drop_all {
            add
        } else {
            DEFAULT_CAPS
                .iter()
                .filter(|c| !drop.contains(c))
                .chain(add.iter())
                .copied()
                .collect()
        };
        caps.retain(|c| kernel.contains(c));
        caps.sort_by_key(|c| c.index());
        caps.dedup();
        Ok(caps)
    }

    /// Whether a seccomp filter applies, and which.
    pub(crate) fn effective_seccomp(&self) -> Option<&Seccomp> {
        match (&self.seccomp, self.privileged) {
            (Seccomp::Unconfined, _) => None,
            // Docker: a privileged container gets no default filter, but an explicit profile.
            (Seccomp::Default, true) => None,
            (s, _) => Some(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warming_compiles_the_filter_or_names_the_bad_capability() {
        Security::default().warm_seccomp().unwrap();
        let code = crate::seccomp::bpf(
            &Seccomp::Default,
            &Security::default().capabilities().unwrap(),
        )
        .unwrap()
        .expect("Docker's profile compiles to a filter");
        // A classic BPF program: whole 8-byte instructions, more than a handful.
        assert!(
            code.len().is_multiple_of(8) && code.len() > 8 * 50,
            "{}",
            code.len()
        );
        match sec(&["CAP_NOPE"], &[]).warm_seccomp() {
            Err(RuntimeError::UnknownCapability { name }) => assert!(name.contains("NOPE")),
            other => panic!("{other:?}"),
        }
        let unconfined = Security {
            seccomp: Seccomp::Unconfined,
            ..Security::default()
        };
        unconfined.warm_seccomp().unwrap();
    }

    fn sec(add: &[&str], drop: &[&str]) -> Security {
        Security {
            cap_add: add.iter().map(|s| s.to_string()).collect(),
            cap_drop: drop.iter().map(|s| s.to_string()).collect(),
            ..Security::default()
        }
    }

    #[test]
    fn capabilities_as_docker_computes_them() {
        let d = sec(&[], &[]).capabilities().unwrap();
        assert_eq!(d.len(), DEFAULT_CAPS.len());
        let c = sec(&["net_admin", "CAP_SYS_PTRACE"], &["chown"])
            .capabilities()
            .unwrap();
        assert!(c.contains(&Capability::CAP_NET_ADMIN));
        assert!(c.contains(&Capability::CAP_SYS_PTRACE));
        assert!(!c.contains(&Capability::CAP_CHOWN));
        let c = sec(&["kill"], &["ALL"]).capabilities().unwrap();
        assert_eq!(c, vec![Capability::CAP_KILL]);
        let c = sec(&["all"], &["sys_admin"]).capabilities().unwrap();
        assert!(c.contains(&Capability::CAP_NET_ADMIN) && !c.contains(&Capability::CAP_SYS_ADMIN));
        assert!(matches!(
            sec(&["CAP_FLY"], &[]).capabilities(),
            Err(RuntimeError::UnknownCapability { name }) if name == "CAP_FLY"
        ));
        let p = Security {
            privileged: true,
            ..Security::default()
        };
        assert!(p
            .capabilities()
            .unwrap()
            .contains(&Capability::CAP_SYS_ADMIN));
        assert!(p.effective_seccomp().is_none());
    }

    #[test]
    fn device_specs_parse_like_docker() {
        let d = Device::parse("/dev/null:/dev/mynull:rw").unwrap();
        assert_eq!(
            (
                d.host_path.to_str(),
                d.container_path.as_str(),
                d.permissions.as_str()
            ),
            (Some("/dev/null"), "/dev/mynull", "rw")
        );
        let d = Device::parse("/dev/null:r").unwrap();
        assert_eq!(
            (d.container_path.as_str(), d.permissions.as_str()),
            ("", "r")
        );
        assert_eq!(d.target(), PathBuf::from("/dev/null"));
        assert!(Device::parse("/dev/null:/x:rwx").is_err());
        assert!(Device::parse("/etc/hostname").is_err());
        assert!(Device::parse("a:b:c:d").is_err());
    }
}
