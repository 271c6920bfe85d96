//! `--log-driver` and `--log-opt`: where a container's output goes and how the log rotates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::mounts::parse_size;
use crate::error::{Result, RuntimeError};

/// The log driver (Docker's `LogConfig.Type`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LogDriver {
    /// Docker's default: JSON lines; no rotation unless `max_size` is set.
    #[default]
    JsonFile,
    /// Docker's `local` driver: rotated by default (20 MiB × 5, compressed). skiff stores
    /// it in the json-file format.
    Local,
    /// Nothing is written; reading logs is refused ([`RuntimeError::LogsNotReadable`]).
    None,
}

/// Log driver and rotation. `None` fields take the driver's defaults (see
/// [`LogConfig::max_size`], ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogConfig {
    #[serde(default)]
    pub driver: LogDriver,
    /// `max-size` in bytes: the log is rotated when a write would take it past this.
    #[serde(default)]
    pub max_size: Option<u64>,
    /// `max-file`: how many files are kept, the current one included (≥ 1).
    #[serde(default)]
    pub max_file: Option<u32>,
    /// `compress`: rotated files are gzipped (`.1.gz`, `.2.gz`...).
    #[serde(default)]
    pub compress: Option<bool>,
}

impl LogConfig {
    /// From Docker's `LogConfig {Type, Config}`: `Type` is `json-file`, `local`, `none` or
    /// empty (the default, json-file); options `max-size` (`10m`, `1k`, bytes), `max-file`
    /// and `compress` (`true`/`false`). Any other driver or option is refused, naming it.
    pub fn from_docker(driver: &str, opts: &BTreeMap<String, String>) -> Result<LogConfig> {
        let driver = match driver {
            "" | "json-file" => LogDriver::JsonFile,
            "local" => LogDriver::Local,
            "none" => LogDriver::None,
            other => {
                return Err(RuntimeError::InvalidLogOption {
                    option: "log-driver".into(),
                    value: other.into(),
                    reason: "supported drivers: json-file, local, none".into(),
                })
            }
        };
        let mut c = LogConfig {
            driver,
            ..LogConfig::default()
        };
        for (k, v) in opts {
            let bad = |reason: &str| RuntimeError::InvalidLogOption {
                option: k.clone(),
                value: v.clone(),
                reason: reason.into(),
            };
            if driver == LogDriver::None {
                return Err(bad("the none log driver takes no options"));
            }
            match k.as_str() {
                "max-size" => {
                    // Docker: -1 means unlimited.
                    c.max_size = if v == "-1" {
                        None
                    } else {
                        Some(
                            parse_size(v)
                                .filter(|&n| n > 0)
                                .ok_or_else(|| bad("not a size"))?,
                        )
                    }
                }
                "max-file" => {
                    c.max_file = Some(
                        v.parse()
                            .ok()
                            .filter(|&n: &u32| n >= 1)
                            .ok_or_else(|| bad("must be a number ≥ 1"))?,
                    )
                }
                "compress" => {
                    c.compress = Some(v.parse().map_err(|_| bad("must be true or false"))?)
                }
                _ => return Err(bad("unsupported log option")),
            }
        }
        if c.driver == LogDriver::JsonFile
            && c.compress == Some(true)
            && (c.max_file() < 2 || c.max_size().is_none())
        {
            return Err(RuntimeError::InvalidLogOption {
                option: "compress".into(),
                value: "true".into(),
                reason:
                    "compress cannot be true when max-file is less than 2 or max-size is not set"
                        .into(),
            });
        }
        Ok(c)
    }

    /// Size at which the log rotates; `None` = never (json-file's default). `local`: 20 MiB.
    pub fn max_size(&self) -> Option<u64> {
        match (self.driver, self.max_size) {
            (_, Some(s)) => Some(s),
            (LogDriver::Local, None) => Some(20 << 20),
            _ => None,
        }
    }

    /// Files kept, the live one included: json-file 1, local 5.
    pub fn max_file(&self) -> u32 {
        match (self.driver, self.max_file) {
            (_, Some(n)) => n.max(1),
            (LogDriver::Local, None) => 5,
            _ => 1,
        }
    }

    /// Whether rotated files are compressed: json-file no, local yes.
    pub fn compress(&self) -> bool {
        self.compress.unwrap_or(self.driver == LogDriver::Local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_log_config_and_driver_defaults() {
        let opts = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let c = LogConfig::from_docker("", &opts(&[])).unwrap();
        assert_eq!((c.max_size(), c.max_file(), c.compress()), (None, 1, false));
        let c = LogConfig::from_docker("local", &opts(&[])).unwrap();
        assert_eq!(
            (c.max_size(), c.max_file(), c.compress()),
            (Some(20 << 20), 5, true)
        );
        let c = LogConfig::from_docker(
            "json-file",
            &opts(&[("max-size", "1k"), ("max-file", "3"), ("compress", "true")]),
        )
        .unwrap();
        assert_eq!(
            (c.max_size(), c.max_file(), c.compress()),
            (Some(1024), 3, true)
        );
        assert!(matches!(
            LogConfig::from_docker("syslog", &opts(&[])),
            Err(RuntimeError::InvalidLogOption { value, .. }) if value == "syslog"
        ));
        assert!(matches!(
            LogConfig::from_docker("json-file", &opts(&[("labels", "a")])),
            Err(RuntimeError::InvalidLogOption { option, .. }) if option == "labels"
        ));
        assert!(LogConfig::from_docker("json-file", &opts(&[("max-file", "0")])).is_err());
        assert!(LogConfig::from_docker("none", &opts(&[("max-size", "1k")])).is_err());
        assert!(LogConfig::from_docker("json-file", &opts(&[("compress", "true")])).is_err());
    }
}
