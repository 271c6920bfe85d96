//! The `local` volume driver's options (`docker volume create -o type=tmpfs -o
//! device=tmpfs -o o=size=10m`, compose's `driver_opts`): the volume's `_data` directory
//! is a mount of `device` with filesystem `type` and the comma-separated options `o`
//! (flags such as `ro`, `nosuid`, `bind`; the rest, `size=10m`, `uid=1000`, ... is the
//! filesystem's data), as dockerd's local driver makes it. dockerd mounts it while a
//! container uses the volume; skiff mounts it when the volume is created (again at daemon
//! start if it is gone, e.g. after a reboot) and unmounts it when the volume is removed,
//! so a tmpfs volume keeps its content between containers.

use std::collections::BTreeMap;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

use super::error::DaemonError;

/// The options the local driver takes (dockerd's `validOpts`, without quota `size`).
const KEYS: [&str; 3] = ["type", "device", "o"];

/// Checks `opts` as dockerd's local driver does: only `type`, `device` and `o`, and a
/// `device` whenever a `type` is given (and the other way round).
pub fn validate(opts: &BTreeMap<String, String>) -> Result<(), DaemonError> {
    if let Some(k) = opts.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(DaemonError::Invalid(format!("invalid option key: {k:?}")));
    }
    let typ = opts.get("type").is_some_and(|v| !v.is_empty());
    let device = opts.get("device").is_some_and(|v| !v.is_empty());
    if typ && !device {
        return Err(DaemonError::Invalid(
            "missing required option: \"device\"".into(),
        ));
    }
    if device && !typ {
        return Err(DaemonError::Invalid(
            "missing required option: \"type\"".into(),
        ));
    }
    if !typ && opts.get("o").is_some_and(|v| !v.is_empty()) {
        return Err(DaemonError::Invalid(
            "missing required option: \"type\"".into(),
        ));
    }
    Ok(())
}

/// Whether `opts` ask for a mount at all (options with only empty values do not).
pub fn wants_mount(opts: &BTreeMap<String, String>) -> bool {
    opts.get("type").is_some_and(|v| !v.is_empty())
}

/// `o` split into mount flags and the filesystem's data string (moby/sys/mount's rules).
fn parse_o(o: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in o.split(',').filter(|s| !s.is_empty()) {
        let (set, clear) = match opt {
            "defaults" | "rw" | "suid" | "dev" | "exec" | "async" | "atime" | "diratime"
            | "nostrictatime" | "norelatime" => (MsFlags::empty(), flag_cleared(opt)),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            _ => {
                data.push(opt);
                continue;
            }
        };
        flags = (flags | set) - clear;
    }
    (flags, data.join(","))
}

/// The flag a `rw`-style option clears.
fn flag_cleared(opt: &str) -> MsFlags {
    match opt {
        "rw" => MsFlags::MS_RDONLY,
        "suid" => MsFlags::MS_NOSUID,
        "dev" => MsFlags::MS_NODEV,
        "exec" => MsFlags::MS_NOEXEC,
        "async" => MsFlags::MS_SYNCHRONOUS,
        "atime" => MsFlags::MS_NOATIME,
        "diratime" => MsFlags::MS_NODIRATIME,
        "nostrictatime" => MsFlags::MS_STRICTATIME,
        "norelatime" => MsFlags::MS_RELATIME,
        _ => MsFlags::empty(),
    }
}

/// Mounts `opts`' device on `target` (the volume's `_data`); the error is dockerd's
/// `failed to mount local volume: mount DEVICE:TARGET, flags: 0x..., data: ...: ERR`.
pub fn mount(
    name: &str,
    opts: &BTreeMap<String, String>,
    target: &Path,
) -> Result<(), DaemonError> {
    let typ = opts.get("type").map(String::as_str).unwrap_or_default();
    let device = opts.get("device").map(String::as_str).unwrap_or_default();
    let (mut flags, data) = parse_o(opts.get("o").map(String::as_str).unwrap_or_default());
    // A read-only bind needs a remount after the bind (the kernel ignores MS_RDONLY on it).
    let readonly_bind = flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY);
    if readonly_bind {
        flags.remove(MsFlags::MS_RDONLY);
    }
    let fstype = (!flags.contains(MsFlags::MS_BIND)).then_some(typ);
    let data_arg = (!data.is_empty()).then_some(data.as_str());
    let failed = |e: nix::Error| {
        DaemonError::Invalid(format!(
            "error while mounting volume '{name}': failed to mount local volume: mount {device}:{}, flags: {:#x}, data: {data}: {}",
            target.display(),
            flags.bits(),
            std::io::Error::from(e)
        ))
    };
    nix::mount::mount(Some(device), target, fstype, flags, data_arg).map_err(failed)?;
    if readonly_bind {
        let re = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, re, None::<&str>) {
            let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
            return Err(failed(e));
        }
    }
    Ok(())
}

/// Unmounts the volume's `_data` (lazily if busy); a target that is no mount point is
/// fine.
pub fn unmount(target: &Path) -> Result<(), DaemonError> {
    if !is_mount_point(target) {
        return Ok(());
    }
    nix::mount::umount2(target, MntFlags::empty())
        .or_else(|_| nix::mount::umount2(target, MntFlags::MNT_DETACH))
        .map_err(|e| DaemonError::io("unmounting", target, std::io::Error::from(e)))
}

/// Whether `target` is a mount point (the host's mount table; unreadable: no).
pub fn is_mount_point(target: &Path) -> bool {
    skiff_runtime::network::is_mount_point(target).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_are_checked_as_dockerd_does() {
        assert!(validate(&opts(&[("type", "tmpfs"), ("device", "tmpfs")])).is_ok());
        let e = validate(&opts(&[("colour", "red")])).unwrap_err();
        assert_eq!(e.to_string(), "invalid option key: \"colour\"");
        let e = validate(&opts(&[("type", "tmpfs")])).unwrap_err();
        assert_eq!(e.to_string(), "missing required option: \"device\"");
        assert!(validate(&opts(&[("device", "/x")])).is_err());
    }

    #[test]
    fn o_splits_into_flags_and_data() {
        let (f, d) = parse_o("size=10m,uid=1000,ro,nosuid");
        assert_eq!(f, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(d, "size=10m,uid=1000");
        let (f, d) = parse_o("bind,ro,rw");
        assert_eq!(f, MsFlags::MS_BIND);
        assert_eq!(d, "");
        let (f, _) = parse_o("rbind");
        assert_eq!(f, MsFlags::MS_BIND | MsFlags::MS_REC);
    }
}
