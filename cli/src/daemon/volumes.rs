//! The volumes service: named and anonymous volumes with the `local` driver. A volume is a
//! directory `<data-root>/volumes/NAME/_data` with its metadata beside it in
//! `NAME/volume.json` (written atomically). Which containers use a volume is read from the
//! container records, so it is never out of step.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::containers::dir_size;
use super::error::DaemonError;
use super::records::Records;
use super::volume_mount;

/// A volume's metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Volume {
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
    /// Made for one container (`-v /path`, an image's `VOLUME`): removed by `rm -v` and
    /// by `volume prune` without `-a`.
    pub anonymous: bool,
    /// The local driver's options (`type`, `device`, `o`): `_data` is that mount
    /// (`volume_mount`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

pub struct VolumeService {
    root: PathBuf,
    records: Arc<Records>,
    /// Serializes create/remove.
    lock: Mutex<()>,
}

/// Docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    super::names::valid_name(name)
}

impl VolumeService {
    pub fn new(root: PathBuf, records: Arc<Records>) -> VolumeService {
        VolumeService {
            root,
            records,
            lock: Mutex::new(()),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The directory containers mount.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir(name).join("_data")
    }

    pub fn get(&self, name: &str) -> Result<Volume, DaemonError> {
        if !valid_name(name) {
            return Err(DaemonError::NoSuchVolume(name.to_string()));
        }
        let path = self.dir(name).join("volume.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DaemonError::NoSuchVolume(name.to_string()))
            }
            Err(e) => return Err(DaemonError::io("reading", &path, e)),
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| DaemonError::Internal(format!("{}: {e}", path.display())))
    }

    /// Creates a volume (an anonymous one with a random name when `name` is `None`);
    /// returns it and whether it is new. Creating an existing name returns it, as Docker
    /// does.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<(Volume, bool), DaemonError> {
        self.create_with(name, labels, BTreeMap::new())
    }

    /// [`create`](Self::create) with the local driver's options (`type`, `device`, `o`):
    /// the device is mounted on the new volume's `_data`; a mount that fails leaves no
    /// volume.
    pub fn create_with(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
    ) -> Result<(Volume, bool), DaemonError> {
        volume_mount::validate(&options)?;
        let _guard = self.lock.lock().expect("volumes lock");
        let (name, anonymous) = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                if !valid_name(n) {
                    return Err(DaemonError::Invalid(format!(
                        "create {n}: \"{n}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
                    )));
                }
                (n.to_string(), false)
            }
            None => (super::names::new_id(), true),
        };
        if let Ok(v) = self.get(&name) {
            return Ok((v, false));
        }
        let dir = self.dir(&name);
        let data = self.data_dir(&name);
        std::fs::create_dir_all(&data).map_err(|e| DaemonError::io("creating", &data, e))?;
        let v = Volume {
            name: name.clone(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            labels,
            anonymous,
            options,
        };
        let undo = || {
            let _ = volume_mount::unmount(&data);
            let _ = std::fs::remove_dir_all(&dir);
        };
        if volume_mount::wants_mount(&v.options) {
            if let Err(e) = volume_mount::mount(&name, &v.options, &data) {
                undo();
                return Err(e);
            }
        }
        // Written last: a volume.json names a volume whose mount is in place.
        if let Err(e) = write_atomic(
            &dir.join("volume.json"),
            &serde_json::to_vec_pretty(&v).unwrap_or_default(),
        ) {
            undo();
            return Err(e);
        }
        tracing::info!(volume = %name, anonymous, "created volume");
        Ok((v, true))
    }

    pub fn list(&self) -> Result<Vec<Volume>, DaemonError> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(DaemonError::io("listing", &self.root, e)),
        };
        for e in rd.flatten() {
            if let Some(name) = e.file_name().to_str() {
                if let Ok(v) = self.get(name) {
                    out.push(v);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Ids of the containers whose mounts use the volume.
    /// `GET /volumes` with Docker's filters: `name` (exact or regular expression), `label`
    /// (every one must match), `dangling` (used by no container), `driver` (`local`).
    pub fn select(&self, filters: &super::filters::Filters) -> Result<Vec<Volume>, DaemonError> {
        let dangling = filters.bool("dangling")?;
        let mut out = Vec::new();
        for v in self.list()? {
            if !filters.matches("name", &v.name)
                || !filters.matches("driver", "local")
                || !filters.matches_labels("label", |k| v.labels.get(k).map(String::as_str))
            {
                continue;
            }
            if let Some(d) = dangling {
                if self.users(&v.name)?.is_empty() != d {
                    continue;
                }
            }
            out.push(v);
        }
        Ok(out)
    }

    pub fn users(&self, name: &str) -> Result<Vec<String>, DaemonError> {
        Ok(self
            .records
            .all()?
            .into_iter()
            .filter(|r| {
                r.mounts
                    .iter()
                    .any(|m| m.kind == "volume" && m.name == name)
            })
            .map(|r| r.id)
            .collect())
    }

    /// Removes a volume; one in use is refused (409), even with `force` (as Docker does:
    /// force only ignores a missing volume).
    pub fn remove(&self, name: &str, force: bool) -> Result<(), DaemonError> {
        let v = match self.get(name) {
            Ok(v) => v,
            Err(DaemonError::NoSuchVolume(_)) if force => return Ok(()),
            Err(e) => return Err(e),
        };
        let users = self.users(&v.name)?;
        if !users.is_empty() {
            return Err(DaemonError::VolumeInUse {
                name: v.name,
                containers: users.join(", "),
            });
        }
        let _guard = self.lock.lock().expect("volumes lock");
        let dir = self.dir(&v.name);
        // Its device first: removing the directory must never delete what a mount shows.
        volume_mount::unmount(&self.data_dir(&v.name))?;
        // Renamed first, so a half-deleted volume is never seen under its name.
        let trash = self.root.join(format!(".rm-{}", v.name));
        std::fs::rename(&dir, &trash).map_err(|e| DaemonError::io("removing", &dir, e))?;
        std::fs::remove_dir_all(&trash).map_err(|e| DaemonError::io("removing", &trash, e))?;
        tracing::info!(volume = %v.name, "removed volume");
        Ok(())
    }

    /// Removes unused volumes: anonymous ones only, or all with `all` (Docker 23+).
    /// Returns the names removed and the bytes reclaimed.
    pub fn prune(&self, all: bool) -> Result<(Vec<String>, u64), DaemonError> {
        let mut removed = Vec::new();
        let mut bytes = 0;
        for v in self.list()? {
            if (!all && !v.anonymous) || !self.users(&v.name)?.is_empty() {
                continue;
            }
            let size = dir_size(&self.data_dir(&v.name));
            match self.remove(&v.name, false) {
                Ok(()) => {
                    bytes += size;
                    removed.push(v.name);
                }
                Err(e) => tracing::warn!(volume = %v.name, "prune: {e}"),
            }
        }
        Ok((removed, bytes))
    }

    /// Docker's JSON view of a volume.
    pub fn view(&self, v: &Volume) -> serde_json::Value {
        serde_json::json!({
            "Name": v.name,
            "Driver": "local",
            "Mountpoint": self.data_dir(&v.name).display().to_string(),
            "CreatedAt": v.created_at,
            "Labels": v.labels,
            "Scope": "local",
            "Options": v.options,
        })
    }

    /// At daemon start: mounts again the device of each volume with options whose mount
    /// is gone (a reboot). A failure is logged and leaves that volume's directory as is.
    pub fn remount(&self) {
        for v in self.list().unwrap_or_default() {
            let data = self.data_dir(&v.name);
            if volume_mount::wants_mount(&v.options) && !volume_mount::is_mount_point(&data) {
                match volume_mount::mount(&v.name, &v.options, &data) {
                    Ok(()) => tracing::info!(volume = %v.name, "mounted the volume's device again"),
                    Err(e) => tracing::error!(volume = %v.name, "{e}"),
                }
            }
        }
    }
}

/// Writes `data` to `path` via a temporary file, fsync and rename.
pub(super) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), DaemonError> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| DaemonError::io("writing", &tmp, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| DaemonError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| DaemonError::io("renaming", &tmp, e))
}

/// Seeds a new volume with the image's content at the mount target, as Docker does
/// (owners, modes and symlinks kept). `src` may not exist: nothing to copy.
pub fn seed(src: &Path, dst: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(md) = std::fs::symlink_metadata(src) else {
        return Ok(());
    };
    if !md.is_dir() {
        return Ok(());
    }
    // The volume's root takes the owner and mode of the image's directory.
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(|e| DaemonError::io("seeding", dst, e))?;
    let _ = nix::unistd::chown(
        dst,
        Some(nix::unistd::Uid::from_raw(md.uid())),
        Some(nix::unistd::Gid::from_raw(md.gid())),
    );
    let mut stack = vec![(src.to_path_buf(), dst.to_path_buf())];
    while let Some((from, to)) = stack.pop() {
        let rd = std::fs::read_dir(&from).map_err(|e| DaemonError::io("seeding from", &from, e))?;
        for e in rd.flatten() {
            let s = e.path();
            let d = to.join(e.file_name());
            let md =
                std::fs::symlink_metadata(&s).map_err(|e| DaemonError::io("seeding", &s, e))?;
            let ft = md.file_type();
            if ft.is_dir() {
                std::fs::create_dir(&d).map_err(|e| DaemonError::io("seeding", &d, e))?;
                stack.push((s, d.clone()));
            } else if ft.is_symlink() {
                let target =
                    std::fs::read_link(&s).map_err(|e| DaemonError::io("seeding", &s, e))?;
                std::os::unix::fs::symlink(target, &d)
                    .map_err(|e| DaemonError::io("seeding", &d, e))?;
            } else if ft.is_file() {
                std::fs::copy(&s, &d).map_err(|e| DaemonError::io("seeding", &d, e))?;
            } else {
                continue; // device nodes, fifos, sockets: not data
            }
            let _ = nix::unistd::fchownat(
                None,
                &d,
                Some(nix::unistd::Uid::from_raw(md.uid())),
                Some(nix::unistd::Gid::from_raw(md.gid())),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            if !ft.is_symlink() {
                let _ = std::fs::set_permissions(
                    &d,
                    std::fs::Permissions::from_mode(md.mode() & 0o7777),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_seed_copies_a_tree() {
        assert!(valid_name("data_1.x"));
        assert!(!valid_name("../etc"));
        assert!(!valid_name("a/b"));
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("sub")).unwrap();
        std::fs::write(src.path().join("sub/f"), b"hello").unwrap();
        std::os::unix::fs::symlink("sub/f", src.path().join("link")).unwrap();
        let dst = tempfile::tempdir().unwrap();
        seed(src.path(), dst.path()).unwrap();
        assert_eq!(std::fs::read(dst.path().join("sub/f")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_link(dst.path().join("link")).unwrap(),
            PathBuf::from("sub/f")
        );
        seed(&src.path().join("missing"), dst.path()).unwrap();
    }
}
