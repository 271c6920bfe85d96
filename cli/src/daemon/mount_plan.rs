//! A container's mounts from its spec: `-v` binds and volumes, `--mount`, `--tmpfs`,
//! `--volumes-from`, and anonymous volumes for `Config.Volumes` and the image's `VOLUME`s.
//! [`plan`] checks everything and creates nothing (bad input is a 400 with nothing left
//! behind); [`apply`] then creates host directories and volumes, seeding new volumes from
//! the image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use skiff_runtime::config::{Mount, MountKind, Propagation, TmpfsOptions};

use super::error::DaemonError;
use super::record::{ContainerRecord, ContainerSpec, MountPoint};
use super::volumes::{seed, valid_name, VolumeService};

/// One mount, checked, not yet created.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    Bind {
        source: PathBuf,
        target: String,
        read_only: bool,
        /// `-v` creates a missing source directory; `--mount` refuses it (checked in plan).
        create: bool,
    },
    Volume {
        /// `None`: a new anonymous volume.
        name: Option<String>,
        target: String,
        read_only: bool,
        no_copy: bool,
        labels: BTreeMap<String, String>,
    },
    Tmpfs {
        target: String,
        options: TmpfsOptions,
        raw: String,
        read_only: bool,
    },
    /// From `--volumes-from`: an existing volume or bind, as the other container has it.
    Shared(MountPoint),
}

impl Planned {
    fn target(&self) -> &str {
        match self {
            Planned::Bind { target, .. }
            | Planned::Volume { target, .. }
            | Planned::Tmpfs { target, .. } => target,
            Planned::Shared(m) => &m.destination,
        }
    }
}

fn invalid(msg: String) -> DaemonError {
    DaemonError::Invalid(msg)
}

fn check_target(t: &str) -> Result<String, DaemonError> {
    if !t.starts_with('/') {
        return Err(invalid(format!(
            "invalid mount config: mount path must be absolute: {t:?}"
        )));
    }
    let clean = t.trim_end_matches('/');
    if clean.is_empty() {
        return Err(invalid(format!(
            "invalid mount config: the root filesystem cannot be a mount target: {t:?}"
        )));
    }
    if clean.split('/').any(|c| c == "..") {
        return Err(invalid(format!(
            "invalid mount config: mount path may not contain '..': {t:?}"
        )));
    }
    Ok(clean.to_string())
}

/// `-v SRC:DST[:OPTS]` or `-v DST`.
fn parse_bind(b: &str) -> Result<Planned, DaemonError> {
    let parts: Vec<&str> = b.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [dst] => ("", *dst, ""),
        [src, dst] => (*src, *dst, ""),
        [src, dst, opts] => (*src, *dst, *opts),
        _ => return Err(invalid(format!("invalid volume specification: {b:?}"))),
    };
    let target = check_target(dst)?;
    let mut read_only = false;
    let mut no_copy = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "nocopy" => no_copy = true,
            "rprivate" => {}
            other => {
                return Err(DaemonError::Unsupported {
                    field: "HostConfig.Binds".into(),
                    value: format!("{b:?} (option {other:?})"),
                })
            }
        }
    }
    if src.is_empty() {
        return Ok(Planned::Volume {
            name: None,
            target,
            read_only,
            no_copy,
            labels: BTreeMap::new(),
        });
    }
    if src.starts_with('/') {
        if no_copy {
            return Err(invalid(format!(
                "invalid volume specification: {b:?}: nocopy is for volumes"
            )));
        }
        return Ok(Planned::Bind {
            source: PathBuf::from(src),
            target,
            read_only,
            create: true,
        });
    }
    if !valid_name(src) {
        return Err(invalid(format!(
            "create {src}: \"{src}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        )));
    }
    Ok(Planned::Volume {
        name: Some(src.to_string()),
        target,
        read_only,
        no_copy,
        labels: BTreeMap::new(),
    })
}

/// Checks every mount the spec asks for; creates nothing. `image_volumes` are the image's
/// `VOLUME` paths; `find` looks up `--volumes-from` containers.
pub fn plan(
    spec: &ContainerSpec,
    image_volumes: &[String],
    find: &dyn Fn(&str) -> Result<ContainerRecord, DaemonError>,
) -> Result<Vec<Planned>, DaemonError> {
    let mut out: Vec<Planned> = Vec::new();
    for b in &spec.host.binds {
        out.push(parse_bind(b)?);
    }
    for m in &spec.host.mounts {
        let target = check_target(&m.target)?;
        out.push(match m.kind.as_str() {
            "bind" => {
                if !m.source.starts_with('/') {
                    return Err(invalid(format!(
                        "invalid mount config for type \"bind\": invalid mount path: {:?} mount path must be absolute",
                        m.source
                    )));
                }
                if !Path::new(&m.source).exists() {
                    return Err(invalid(format!(
                        "invalid mount config for type \"bind\": bind source path does not exist: {}",
                        m.source
                    )));
                }
                Planned::Bind {
                    source: PathBuf::from(&m.source),
                    target,
                    read_only: m.read_only,
                    create: false,
                }
            }
            "volume" => {
                if !m.source.is_empty() && !valid_name(&m.source) {
                    return Err(invalid(format!(
                        "invalid mount config for type \"volume\": invalid volume name {:?}",
                        m.source
                    )));
                }
                Planned::Volume {
                    name: (!m.source.is_empty()).then(|| m.source.clone()),
                    target,
                    read_only: m.read_only,
                    no_copy: m.no_copy,
                    labels: m.labels.clone(),
                }
            }
            _ => {
                if !m.source.is_empty() {
                    return Err(invalid(
                        "invalid mount config for type \"tmpfs\": source must not be specified"
                            .to_string(),
                    ));
                }
                let options = TmpfsOptions {
                    size_bytes: m.tmpfs_size.map(|s| s as u64),
                    mode: m.tmpfs_mode,
                    ..Default::default()
                };
                Planned::Tmpfs {
                    target,
                    raw: String::new(),
                    options,
                    read_only: m.read_only,
                }
            }
        });
    }
    for (t, opts) in &spec.host.tmpfs {
        let target = check_target(t)?;
        let (options, read_only) = TmpfsOptions::parse(opts)
            .map_err(|e| invalid(format!("invalid --tmpfs {t}:{opts}: {e}")))?;
        out.push(Planned::Tmpfs {
            target,
            options,
            raw: opts.clone(),
            read_only,
        });
    }
    for from in &spec.host.volumes_from {
        let (name, mode) = match from.rsplit_once(':') {
            Some((n, m)) if m == "ro" || m == "rw" => (n, Some(m)),
            _ => (from.as_str(), None),
        };
        let other = find(name)?;
        for m in other.mounts.iter().filter(|m| m.kind != "tmpfs") {
            if out.iter().any(|p| p.target() == m.destination) {
                continue; // the container's own mounts win
            }
            let mut m = m.clone();
            if let Some(mode) = mode {
                m.read_only = mode == "ro";
            }
            m.anonymous = false; // not this container's to remove
            out.push(Planned::Shared(m));
        }
    }
    for t in spec.volumes.iter().chain(image_volumes) {
        let target = check_target(t)?;
        if !out.iter().any(|p| p.target() == target) {
            out.push(Planned::Volume {
                name: None,
                target,
                read_only: false,
                no_copy: false,
                labels: BTreeMap::new(),
            });
        }
    }
    let mut seen = std::collections::HashSet::new();
    for p in &out {
        if !seen.insert(p.target().to_string()) {
            return Err(invalid(format!("Duplicate mount point: {}", p.target())));
        }
    }
    Ok(out)
}

/// Creates what the plan needs (bind sources for `-v`, volumes; empty volumes seeded from
/// `image_root` unless `nocopy`) and returns inspect's mount points and the runtime's mounts.
/// The names of the volumes it created go to `created` (for their `create` events).
pub fn apply(
    planned: Vec<Planned>,
    volumes: &VolumeService,
    image_root: &Path,
    created: &mut Vec<String>,
) -> Result<(Vec<MountPoint>, Vec<Mount>), DaemonError> {
    let mut points = Vec::new();
    let mut mounts = Vec::new();
    let bind = |source: PathBuf, destination: &str, read_only: bool| Mount {
        kind: MountKind::Bind {
            source,
            propagation: Propagation::Rprivate,
            recursive: true,
        },
        destination: destination.to_string(),
        read_only,
    };
    for p in planned {
        match p {
            Planned::Bind {
                source,
                target,
                read_only,
                create,
            } => {
                if create && !source.exists() {
                    std::fs::create_dir_all(&source)
                        .map_err(|e| DaemonError::io("creating bind source", &source, e))?;
                }
                mounts.push(bind(source.clone(), &target, read_only));
                points.push(MountPoint {
                    kind: "bind".into(),
                    source: source.display().to_string(),
                    destination: target,
                    read_only,
                    ..Default::default()
                });
            }
            Planned::Volume {
                name,
                target,
                read_only,
                no_copy,
                labels,
            } => {
                let (v, new) = volumes.create(name.as_deref(), labels)?;
                if new {
                    created.push(v.name.clone());
                }
                let data = volumes.data_dir(&v.name);
                // As Docker: an empty volume takes the image's content at the target.
                let empty = std::fs::read_dir(&data)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
                if empty && !no_copy {
                    seed(&image_root.join(target.trim_start_matches('/')), &data)?;
                }
                mounts.push(bind(data.clone(), &target, read_only));
                points.push(MountPoint {
                    kind: "volume".into(),
                    name: v.name.clone(),
                    source: data.display().to_string(),
                    destination: target,
                    read_only,
                    anonymous: v.anonymous,
                    ..Default::default()
                });
            }
            Planned::Tmpfs {
                target,
                options,
                raw,
                read_only,
            } => {
                mounts.push(Mount {
                    kind: MountKind::Tmpfs(options),
                    destination: target.clone(),
                    read_only,
                });
                points.push(MountPoint {
                    kind: "tmpfs".into(),
                    destination: target,
                    read_only,
                    options: raw,
                    ..Default::default()
                });
            }
            Planned::Shared(m) => {
                mounts.push(bind(PathBuf::from(&m.source), &m.destination, m.read_only));
                points.push(m);
            }
        }
    }
    Ok((points, mounts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(binds: &[&str], tmpfs: &[(&str, &str)]) -> ContainerSpec {
        let mut s = ContainerSpec::default();
        s.host.binds = binds.iter().map(|b| b.to_string()).collect();
        s.host.tmpfs = tmpfs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        s
    }
    fn none(n: &str) -> Result<ContainerRecord, DaemonError> {
        Err(DaemonError::NoSuchContainer(n.into()))
    }

    #[test]
    fn binds_and_volumes_parse_like_docker() {
        let p = plan(
            &spec_with(&["/host/d:/data:ro", "vol1:/v", "/anon"], &[]),
            &["/img".into(), "/v".into()],
            &none,
        )
        .unwrap();
        assert_eq!(
            p[0],
            Planned::Bind {
                source: "/host/d".into(),
                target: "/data".into(),
                read_only: true,
                create: true
            }
        );
        assert!(matches!(&p[1], Planned::Volume { name: Some(n), .. } if n == "vol1"));
        assert!(matches!(&p[2], Planned::Volume { name: None, target, .. } if target == "/anon"));
        // The image's /v is covered by vol1; /img gets an anonymous volume.
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn bad_input_is_refused() {
        let err = |s: ContainerSpec| plan(&s, &[], &none).unwrap_err().to_string();
        assert!(err(spec_with(&["bad$name:/x"], &[])).contains("invalid characters"));
        assert!(err(spec_with(&["/h:relative"], &[])).contains("absolute"));
        assert!(err(spec_with(&[], &[("/", "")])).contains("root filesystem"));
        assert!(err(spec_with(&["/a:/x", "/b:/x"], &[])).contains("Duplicate mount point"));
        assert!(err(spec_with(&["/a:/x:z"], &[])).contains("HostConfig.Binds"));
        let mut s = ContainerSpec::default();
        s.host.mounts.push(super::super::record::MountSpec {
            kind: "bind".into(),
            source: "/nonexistent/skiff-src".into(),
            target: "/x".into(),
            ..Default::default()
        });
        assert!(err(s).contains("bind source path does not exist"));
    }
}
