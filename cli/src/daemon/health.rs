//! Container healthchecks, as dockerd runs them (moby `daemon/health.go`): the create
//! request's `Config.Healthcheck` merged over the image's, probes exec'd in the running
//! container every interval, and `State.Health` kept by the monitor.
//!
//! Rules followed: a probe exiting 0 makes the container `healthy` and clears the failing
//! streak; any other result (non-zero exit, timeout, exec error) adds to the streak unless
//! it ends inside the start period while still `starting`; `retries` consecutive failures
//! make it `unhealthy`. The first probe runs one interval after the start (the start
//! interval while in the start period). Health lives in memory: a daemon restart starts
//! the probes of running containers again from `starting`.

use std::collections::VecDeque;
use std::time::Duration;

use bollard::models::HealthConfig;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Docker's defaults (`defaultProbeInterval`, `defaultProbeTimeout`, `defaultStartInterval`,
/// `defaultProbeRetries`).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: i64 = 3;
/// Probe results kept in `State.Health.Log` (`maxLogEntries`).
const LOG_KEEP: usize = 5;

/// The container's healthcheck: the request's fields, each unset (empty/0) one from the
/// image's; no request healthcheck means the image's (moby `daemon/commit.go` merge).
pub fn merge(container: Option<HealthConfig>, image: Option<HealthConfig>) -> Option<HealthConfig> {
    let Some(mut c) = container else {
        return image;
    };
    let Some(i) = image else { return Some(c) };
    if c.test.as_ref().is_none_or(|t| t.is_empty()) {
        c.test = i.test;
    }
    let zero = |v: Option<i64>| v.unwrap_or(0) == 0;
    if zero(c.interval) {
        c.interval = i.interval;
    }
    if zero(c.timeout) {
        c.timeout = i.timeout;
    }
    if zero(c.start_period) {
        c.start_period = i.start_period;
    }
    if zero(c.start_interval) {
        c.start_interval = i.start_interval;
    }
    if zero(c.retries) {
        c.retries = i.retries;
    }
    Some(c)
}

/// Docker's checks of a create's healthcheck (durations in ns: 0 or at least 1 ms;
/// retries not negative; `Test` starting with `CMD`, `CMD-SHELL` or `NONE`). The error
/// names the field.
pub fn validate(h: &HealthConfig) -> Result<(), String> {
    for (name, v) in [
        ("Interval", h.interval),
        ("Timeout", h.timeout),
        ("StartPeriod", h.start_period),
        ("StartInterval", h.start_interval),
    ] {
        let v = v.unwrap_or(0);
        if v != 0 && v < 1_000_000 {
            return Err(format!("{name} in Healthcheck cannot be less than 1ms"));
        }
    }
    if h.retries.unwrap_or(0) < 0 {
        return Err("Retries in Healthcheck cannot be negative".into());
    }
    match h.test.as_deref() {
        None | Some([]) => Ok(()),
        Some([kind]) if kind == "NONE" => Ok(()),
        Some([kind, _, ..]) if kind == "CMD" || kind == "CMD-SHELL" => Ok(()),
        Some(t) => Err(format!(
            "Healthcheck.Test {t:?}: expected [\"NONE\"], [\"CMD\", args...] or [\"CMD-SHELL\", command]"
        )),
    }
}

/// What the prober does: `argv` exec'd every `interval` (ns values turned into durations,
/// Docker's defaults for 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub argv: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub start_interval: Duration,
    pub retries: i64,
}

/// The probe of a container's merged healthcheck; `None` when it has none or `NONE`.
pub fn plan(h: Option<&HealthConfig>) -> Option<Probe> {
    let h = h?;
    let argv = match h.test.as_deref()? {
        [kind, rest @ ..] if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
        // As dockerd without a `Shell` in the config.
        [kind, cmd, ..] if kind == "CMD-SHELL" => {
            vec!["/bin/sh".into(), "-c".into(), cmd.clone()]
        }
        _ => return None,
    };
    let dur = |v: Option<i64>, default: Duration| match v.unwrap_or(0) {
        n if n > 0 => Duration::from_nanos(n as u64),
        _ => default,
    };
    Some(Probe {
        argv,
        interval: dur(h.interval, DEFAULT_INTERVAL),
        timeout: dur(h.timeout, DEFAULT_TIMEOUT),
        start_period: dur(h.start_period, Duration::ZERO),
        start_interval: dur(h.start_interval, DEFAULT_START_INTERVAL),
        retries: match h.retries.unwrap_or(0) {
            n if n > 0 => n,
            _ => DEFAULT_RETRIES,
        },
    })
}

/// One probe's result (`State.Health.Log` entry); `exit_code` -1 for a timeout or an exec
/// that could not run.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub exit_code: i64,
    pub output: String,
}

/// `State.Health`: `starting`, `healthy` or `unhealthy`.
#[derive(Debug, Clone)]
pub struct Health {
    pub status: &'static str,
    pub failing_streak: i64,
    log: VecDeque<ProbeResult>,
}

impl Health {
    pub fn starting() -> Health {
        Health {
            status: "starting",
            failing_streak: 0,
            log: VecDeque::new(),
        }
    }

    /// Records `r`; `in_start_period`: it ended inside the start period. Returns the new
    /// status when it changed (dockerd emits `health_status: <status>` then).
    pub fn record(
        &mut self,
        r: ProbeResult,
        in_start_period: bool,
        retries: i64,
    ) -> Option<&'static str> {
        let before = self.status;
        if r.exit_code == 0 {
            self.failing_streak = 0;
            self.status = "healthy";
        } else if !(in_start_period && self.status == "starting") {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = "unhealthy";
            }
        }
        self.log.push_back(r);
        while self.log.len() > LOG_KEEP {
            self.log.pop_front();
        }
        (self.status != before).then_some(self.status)
    }

    /// Docker's `State.Health` JSON.
    pub fn to_json(&self) -> Value {
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        json!({
            "Status": self.status,
            "FailingStreak": self.failing_streak,
            "Log": self.log.iter().map(|r| json!({
                "Start": time(&r.start),
                "End": time(&r.end),
                "ExitCode": r.exit_code,
                "Output": r.output,
            })).collect::<Vec<_>>(),
        })
    }

    /// The suffix `docker ps` adds to `Up ...`: `(healthy)`, `(health: starting)`.
    pub fn ps_suffix(&self) -> String {
        match self.status {
            "starting" => "(health: starting)".into(),
            s => format!("({s})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(test: &[&str], interval: i64, retries: i64) -> HealthConfig {
        HealthConfig {
            test: Some(test.iter().map(|s| s.to_string()).collect()),
            interval: Some(interval),
            retries: Some(retries),
            ..Default::default()
        }
    }

    fn result(code: i64) -> ProbeResult {
        ProbeResult {
            start: Utc::now(),
            end: Utc::now(),
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn merge_takes_unset_fields_from_the_image() {
        let image = hc(&["CMD-SHELL", "true"], 5_000_000_000, 7);
        let m = merge(Some(hc(&[], 0, 2)), Some(image.clone())).unwrap();
        assert_eq!(m.test, image.test);
        assert_eq!(m.interval, Some(5_000_000_000));
        assert_eq!(m.retries, Some(2));
        assert_eq!(merge(None, Some(image.clone())), Some(image.clone()));
        // NONE from the request disables the image's check.
        let none = merge(Some(hc(&["NONE"], 0, 0)), Some(image)).unwrap();
        assert_eq!(plan(Some(&none)), None);
    }

    #[test]
    fn plan_applies_docker_defaults_and_shell_form() {
        let p = plan(Some(&hc(&["CMD-SHELL", "test -f /ok"], 0, 0))).unwrap();
        assert_eq!(p.argv, ["/bin/sh", "-c", "test -f /ok"]);
        assert_eq!(p.interval, Duration::from_secs(30));
        assert_eq!(p.timeout, Duration::from_secs(30));
        assert_eq!(p.retries, 3);
        assert_eq!(p.start_period, Duration::ZERO);
        let p = plan(Some(&hc(&["CMD", "cat", "/x"], 1_000_000_000, 2))).unwrap();
        assert_eq!(p.argv, ["cat", "/x"]);
        assert_eq!(p.interval, Duration::from_secs(1));
        assert_eq!(plan(None), None);
    }

    #[test]
    fn validate_names_the_bad_field() {
        assert!(validate(&hc(&["CMD", "true"], 10, 1))
            .unwrap_err()
            .contains("Interval in Healthcheck cannot be less than 1ms"));
        assert!(validate(&hc(&["CMD", "true"], 0, -1))
            .unwrap_err()
            .contains("Retries"));
        assert!(validate(&hc(&["BOGUS", "x"], 0, 0))
            .unwrap_err()
            .contains("BOGUS"));
        assert_eq!(validate(&hc(&["NONE"], 0, 0)), Ok(()));
    }

    #[test]
    fn retries_consecutive_failures_make_unhealthy_and_start_period_forgives() {
        let mut h = Health::starting();
        assert_eq!(h.record(result(1), true, 2), None);
        assert_eq!(h.failing_streak, 0, "start-period failures do not count");
        assert_eq!(h.record(result(1), false, 2), None);
        assert_eq!(h.record(result(1), false, 2), Some("unhealthy"));
        assert_eq!(h.failing_streak, 2);
        assert_eq!(h.record(result(0), false, 2), Some("healthy"));
        assert_eq!(h.failing_streak, 0);
        for _ in 0..10 {
            h.record(result(0), false, 2);
        }
        assert_eq!(h.to_json()["Log"].as_array().unwrap().len(), 5);
        assert_eq!(h.ps_suffix(), "(healthy)");
        assert_eq!(Health::starting().ps_suffix(), "(health: starting)");
    }
}
