//! Bind and tmpfs mounts (`-v`, `--mount`, `--tmpfs`), as Docker's HostConfig `Mounts`,
//! `Binds` and `Tmpfs` describe them once the daemon has resolved volumes to host paths.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// One mount applied inside the container's root, after /proc, /dev and /sys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Mount {
    pub kind: MountKind,
    /// Absolute path inside the container (`/data`); created if missing. `/` is refused.
    pub destination: String,
    /// Mounted read-only (`:ro`, `readonly`); a bind's sub-mounts are made read-only too.
    #[serde(default)]
    pub read_only: bool,
}

/// What is mounted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum MountKind {
    /// A host file or directory, which must exist (the daemon creates `-v` sources).
    Bind {
        /// Absolute host path.
        source: PathBuf,
        /// Mount propagation; Docker's default is `rprivate`.
        #[serde(default)]
        propagation: Propagation,
        /// Also bind the mounts below `source` (Docker's default; `bind-recursive=disabled`
        /// turns it off).
        #[serde(default = "yes")]
        recursive: bool,
    },
    /// A fresh tmpfs.
    Tmpfs(TmpfsOptions),
}

fn yes() -> bool {
    true
}

/// Mount propagation of a bind mount (`bind-propagation=`), as mount(2)'s MS_SHARED,
/// MS_SLAVE, MS_PRIVATE, with `r` for recursive.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    Private,
    #[default]
    Rprivate,
    Shared,
    Rshared,
    Slave,
    Rslave,
}

impl std::str::FromStr for Propagation {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Propagation> {
        Ok(match s {
            "private" => Propagation::Private,
            "rprivate" | "" => Propagation::Rprivate,
            "shared" => Propagation::Shared,
            "rshared" => Propagation::Rshared,
            "slave" => Propagation::Slave,
            "rslave" => Propagation::Rslave,
            other => {
                return Err(RuntimeError::InvalidMountOption {
                    option: format!("bind-propagation={other}"),
                    reason: "expected private, rprivate, shared, rshared, slave or rslave".into(),
                })
            }
        })
    }
}

/// tmpfs options. Like Docker, a tmpfs is `noexec,nosuid,nodev` unless `exec`, `suid` or
/// `dev` is given.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TmpfsOptions {
    /// `size=` in bytes; the kernel's default (half of RAM) when `None`.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// `mode=` permission bits (octal in the option string), `1777` when `None`.
    #[serde(default)]
    pub mode: Option<u32>,
    #[serde(default)]
    pub exec: bool,
    #[serde(default)]
    pub suid: bool,
    #[serde(default)]
    pub dev: bool,
    /// Further tmpfs(5) options passed to the kernel as given: `uid=N`, `gid=N`,
    /// `nr_inodes=N` (numbers only; others are refused by [`TmpfsOptions::parse`]).
    #[serde(default)]
    pub extra: Vec<String>,
}

impl TmpfsOptions {
    /// Parses Docker's `--tmpfs /path:OPTIONS` option list (`rw,noexec,size=64m,mode=1770`).
    /// Returns the options and whether `ro` was asked. Sizes take `k`, `m`, `g` suffixes
    /// (powers of 1024) or a plain byte count. Unknown options are refused.
    pub fn parse(list: &str) -> Result<(TmpfsOptions, bool)> {
        let mut o = TmpfsOptions::default();
        let mut ro = false;
        for opt in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = |reason: &str| RuntimeError::InvalidMountOption {
                option: opt.to_string(),
                reason: reason.to_string(),
            };
            match opt.split_once('=') {
                Some(("size", v)) => {
                    o.size_bytes = Some(parse_size(v).ok_or_else(|| bad("not a size"))?)
                }
                Some(("mode", v)) => {
                    o.mode = Some(
                        u32::from_str_radix(v, 8)
                            .ok()
                            .filter(|m| *m <= 0o7777)
                            .ok_or_else(|| bad("not an octal mode"))?,
                    )
                }
                Some(("uid" | "gid" | "nr_inodes", v)) => {
                    v.parse::<u64>().map_err(|_| bad("not a number"))?;
                    o.extra.push(opt.to_string());
                }
                Some(_) => return Err(bad("unsupported tmpfs option")),
                None => match opt {
                    "ro" => ro = true,
                    "rw" => ro = false,
                    "exec" => o.exec = true,
                    "noexec" => o.exec = false,
                    "suid" => o.suid = true,
                    "nosuid" => o.suid = false,
                    "dev" => o.dev = true,
                    "nodev" => o.dev = false,
                    _ => return Err(bad("unsupported tmpfs option")),
                },
            }
        }
        Ok((o, ro))
    }

    /// The mount(2) data string (`mode=1777,size=65536`).
    pub(crate) fn data(&self) -> String {
        let mut d = format!("mode={:o}", self.mode.unwrap_or(0o1777));
        if let Some(s) = self.size_bytes {
            d.push_str(&format!(",size={s}"));
        }
        for e in &self.extra {
            d.push(',');
            d.push_str(e);
        }
        d
    }
}

/// `64m` → 67108864; `k`, `m`, `g`, `t` (either case, optional `b`) are powers of 1024.
pub(crate) fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let (num, mult) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1u64 << 10),
        'm' => (&v[..v.len() - 1], 1 << 20),
        'g' => (&v[..v.len() - 1], 1 << 30),
        't' => (&v[..v.len() - 1], 1 << 40),
        _ => (v, 1),
    };
    let n: f64 = num.parse().ok().filter(|n: &f64| *n >= 0.0)?;
    Some((n * mult as f64) as u64)
}

impl Mount {
    /// Checks the destination (absolute, not `/`, no `..`) and, for binds, that the source
    /// is absolute and exists (Docker's "bind source path does not exist").
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: &str| {
            Err(RuntimeError::InvalidMount {
                destination: self.destination.clone(),
                reason: reason.to_string(),
            })
        };
        let d = &self.destination;
        if !d.starts_with('/') {
            return bad("mount destination must be an absolute path");
        }
        if d.split('/').any(|c| c == "..") {
            return bad("mount destination must not contain '..'");
        }
        if d.trim_end_matches('/').is_empty() {
            return bad("cannot mount over the container's root '/'");
        }
        if let MountKind::Bind {
            source,
            propagation,
            ..
        } = &self.kind
        {
            if !matches!(propagation, Propagation::Private | Propagation::Rprivate) {
                // The container's mounts are made private from the host's at setup, so
                // shared/slave propagation could not work: refused rather than ignored.
                return Err(RuntimeError::InvalidMountOption {
                    option: format!("bind-propagation={propagation:?}").to_lowercase(),
                    reason: "only private and rprivate propagation are supported".into(),
                });
            }
            if !source.is_absolute() {
                return bad(&format!(
                    "bind source {} must be an absolute path",
                    source.display()
                ));
            }
            if std::fs::symlink_metadata(source).is_err() {
                return bad(&format!(
                    "bind source path does not exist: {}",
                    source.display()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_options_parse_like_docker() {
        let (o, ro) = TmpfsOptions::parse("rw,size=64m,mode=1770,exec,uid=1000").unwrap();
        assert_eq!(o.size_bytes, Some(64 << 20));
        assert_eq!(o.mode, Some(0o1770));
        assert!(o.exec && !o.suid && !ro);
        assert_eq!(o.data(), "mode=1770,size=67108864,uid=1000");
        assert!(TmpfsOptions::parse("uid=abc").is_err());
        assert!(TmpfsOptions::parse("uid=1,mpol=x").is_err());
        assert!(TmpfsOptions::parse("ro").unwrap().1);
        let e = TmpfsOptions::parse("size=lots").unwrap_err();
        assert!(
            matches!(e, RuntimeError::InvalidMountOption { ref option, .. } if option == "size=lots")
        );
        assert!(TmpfsOptions::parse("mode=99").is_err());
        assert!(TmpfsOptions::parse("bogus").is_err());
        assert_eq!(parse_size("1k"), Some(1024));
        assert_eq!(parse_size("100"), Some(100));
    }

    #[test]
    fn destinations_must_be_absolute_and_not_root() {
        let m = |d: &str| Mount {
            kind: MountKind::Tmpfs(TmpfsOptions::default()),
            destination: d.into(),
            read_only: false,
        };
        assert!(m("/data").validate().is_ok());
        for d in ["data", "/", "//", "/a/../b"] {
            let e = m(d).validate().unwrap_err();
            assert!(
                matches!(e, RuntimeError::InvalidMount { ref destination, .. } if destination == d)
            );
        }
    }
}
