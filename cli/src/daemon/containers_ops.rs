//! The containers service, changes to a live container: rename, pause/unpause (the cgroup
//! freezer), update (limits and restart policy), and what it reports: top, stats.

use std::time::Duration;

use skiff_runtime::control;
use skiff_runtime::state::{ContainerState, Status};

use super::containers::ContainerService;
use super::error::DaemonError;
use super::names;
use super::record::{ContainerRecord, RestartPolicy};
use super::status::Lifecycle;

/// The parts of Docker's `update` body skiff applies (zero or absent: unchanged).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Update {
    /// Bytes.
    pub memory: Option<i64>,
    /// Memory plus swap in bytes, `-1` unlimited.
    pub memory_swap: Option<i64>,
    /// CPUs × 10⁹.
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    /// Relative CPU weight (Docker's `CpuShares`).
    pub cpu_shares: Option<i64>,
    /// Soft memory limit in bytes (Docker's `MemoryReservation`).
    pub memory_reservation: Option<i64>,
    pub restart_policy: Option<RestartPolicy>,
}

impl ContainerService {
    /// Whether a running container is frozen by `pause`.
    pub fn is_paused(&self, id: &str, st: &ContainerState) -> bool {
        st.status == Status::Running && control::is_frozen(&self.dir(id))
    }

    /// Gives a container a new name (Docker's rules: valid, not taken).
    pub async fn rename(&self, r: &ContainerRecord, new_name: &str) -> Result<(), DaemonError> {
        let _guard = self.lifecycle.lock().await;
        let n = new_name.trim_start_matches('/').to_string();
        if !names::valid_name(&n) {
            return Err(DaemonError::Invalid(format!(
                "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        if n == r.name {
            return Err(DaemonError::Invalid(format!(
                "Renaming a container with the same name as its current name ({n})"
            )));
        }
        let claim = self.names.claim_name(&self.records, &n, &r.id)?;
        let mut updated = self
            .records
            .get(&r.id)?
            .ok_or_else(|| DaemonError::NoSuchContainer(r.id.clone()))?;
        updated.name = n;
        self.records.update_renamed(&updated)?;
        drop(claim);
        self.monitor
            .events
            .container("rename", &updated, &[("oldName", format!("/{}", r.name))]);
        tracing::info!(id = %&r.id[..12], from = %r.name, to = %updated.name, "renamed container");
        Ok(())
    }

    /// Freezes (`pause`) or thaws (`unpause`) every process of a running container.
    pub async fn set_paused(&self, r: &ContainerRecord, paused: bool) -> Result<(), DaemonError> {
        let st = self.state(&r.id)?;
        let now = self.is_paused(&r.id, &st);
        let lc = Lifecycle::new(r, &st);
        if paused {
            lc.can_pause(now)?;
        } else {
            lc.can_unpause(now)?;
        }
        let dir = self.dir(&r.id);
        tokio::task::spawn_blocking(move || control::set_frozen(&dir, paused))
            .await
            .map_err(DaemonError::join)?
            .map_err(|e| DaemonError::runtime(format!("freezer of {}", r.name), e))?;
        tracing::info!(id = %&r.id[..12], paused, "container freezer");
        self.monitor
            .events
            .container(if paused { "pause" } else { "unpause" }, r, &[]);
        Ok(())
    }

    /// Thaws a paused container before a stop, kill or forced removal (frozen processes
    /// would not see the signal).
    pub async fn thaw_if_paused(&self, r: &ContainerRecord) {
        let Ok(st) = self.state(&r.id) else { return };
        if self.is_paused(&r.id, &st) {
            let dir = self.dir(&r.id);
            let thawed =
                tokio::task::spawn_blocking(move || control::set_frozen(&dir, false)).await;
            if !matches!(thawed, Ok(Ok(()))) {
                tracing::warn!(id = %&r.id[..12], "thawing before a stop failed");
            }
        }
    }

    /// `top`: `ps ARGS` (default `-ef`, as dockerd runs it) filtered to the container's
    /// processes: (titles, rows).
    pub async fn top(
        &self,
        r: &ContainerRecord,
        ps_args: Option<&str>,
    ) -> Result<(Vec<String>, Vec<Vec<String>>), DaemonError> {
        let st = self.state(&r.id)?;
        if st.status != Status::Running {
            return Err(DaemonError::NotRunning { id: r.id.clone() });
        }
        let pids = control::pids(&self.dir(&r.id))
            .map_err(|e| DaemonError::runtime("listing the container's processes", e))?;
        let args: Vec<String> = ps_args
            .filter(|a| !a.trim().is_empty())
            .unwrap_or("-ef")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let out = tokio::process::Command::new("ps")
            .args(&args)
            .output()
            .await
            .map_err(|e| DaemonError::Internal(format!("running ps: {e}")))?;
        if !out.status.success() {
            return Err(DaemonError::Invalid(format!(
                "ps: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        parse_ps(&String::from_utf8_lossy(&out.stdout), &pids)
    }

    /// `update`: new limits (applied live when running) and restart policy.
    pub async fn update(&self, r: &ContainerRecord, u: Update) -> Result<(), DaemonError> {
        let _guard = self.lifecycle.lock().await;
        let mut updated = self
            .records
            .get(&r.id)?
            .ok_or_else(|| DaemonError::NoSuchContainer(r.id.clone()))?;
        if let Some(p) = u.restart_policy {
            if updated.spec.host.auto_remove && p != RestartPolicy::No {
                return Err(DaemonError::invalid(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container",
                ));
            }
            updated.spec.host.restart_policy = p;
        }
        // dockerd's rules against the limits in place: memory+swap is never below memory,
        // and a new memory limit above the memory+swap limit needs a new one of that too.
        let h = &updated.spec.host;
        let memory = u.memory.or(h.memory);
        let swap = match (u.memory_swap, h.memory_swap) {
            (Some(s), _) => Some(s),
            (None, Some(s)) if s > 0 && u.memory.is_some_and(|m| m > s) => {
                return Err(DaemonError::Conflict(
                    "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time".into(),
                ));
            }
            // A first memory limit allows as much swap again (as at create).
            (None, None) => u.memory.map(|m| m.saturating_mul(2)),
            (None, s) => s,
        };
        if let (Some(m), Some(s)) = (memory, u.memory_swap) {
            if s > 0 && s < m {
                return Err(DaemonError::invalid(
                    "Minimum memoryswap limit should be larger than memory limit, see usage",
                ));
            }
        }
        super::spec::check_reservation(
            memory.unwrap_or(0),
            u.memory_reservation.or(h.memory_reservation).unwrap_or(0),
        )?;
        if u.memory_swap.is_some() && memory.is_none() {
            return Err(DaemonError::invalid(
                "You should always set the Memory limit when using Memoryswap limit, see usage",
            ));
        }
        let res = skiff_runtime::Resources {
            memory_bytes: u.memory,
            memory_swap_bytes: swap.filter(|_| u.memory.is_some() || u.memory_swap.is_some()),
            nano_cpus: u.nano_cpus,
            pids_limit: u.pids_limit,
            cpu_shares: u.cpu_shares.and_then(|s| u64::try_from(s).ok()),
            memory_reservation_bytes: u.memory_reservation,
        };
        let new_swap = res.memory_swap_bytes;
        if res != skiff_runtime::Resources::default() {
            let st = self.state(&r.id)?;
            let live = st.status == Status::Running;
            let dir = self.dir(&r.id);
            tokio::task::spawn_blocking(move || control::update_resources(&dir, &res, live))
                .await
                .map_err(DaemonError::join)?
                .map_err(|e| DaemonError::runtime(format!("updating {}", r.name), e))?;
            let h = &mut updated.spec.host;
            h.memory = u.memory.or(h.memory);
            h.memory_swap = new_swap.or(h.memory_swap);
            h.nano_cpus = u.nano_cpus.or(h.nano_cpus);
            h.pids_limit = u.pids_limit.or(h.pids_limit);
            h.cpu_shares = u.cpu_shares.or(h.cpu_shares);
            h.memory_reservation = u.memory_reservation.or(h.memory_reservation);
        }
        self.records.update(&updated)?;
        self.monitor.events.container("update", &updated, &[]);
        Ok(())
    }

    /// One `stats` sample of a running container (`None` fields when stopped), with
    /// `previous` as its `precpu_stats`.
    pub fn stats_sample(
        &self,
        r: &ContainerRecord,
        previous: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, DaemonError> {
        let st = self.state(&r.id)?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut v = super::stats_view::empty(&r.id, &r.name, &now, previous);
        if st.status == Status::Running {
            let host_mem = super::stats_view::host_memory();
            let cg = control::cgroup_stats(&self.dir(&r.id), host_mem)
                .map_err(|e| DaemonError::runtime("reading the container's cgroup", e))?;
            super::stats_view::fill(&mut v, &cg, st.pid);
        }
        Ok(v)
    }
}

/// Keeps the rows of `ps` output whose PID column is one of `pids`; the last column (the
/// command) keeps its spaces.
fn parse_ps(out: &str, pids: &[i32]) -> Result<(Vec<String>, Vec<Vec<String>>), DaemonError> {
    let mut lines = out.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let pid_col = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| DaemonError::invalid("Couldn't find PID field in ps output"))?;
    let mut rows = Vec::new();
    for line in lines {
        let mut fields: Vec<String> = Vec::new();
        let mut rest = line.trim_start();
        while fields.len() + 1 < titles.len() {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            fields.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
        fields.push(rest.to_string());
        let pid: Option<i32> = fields.get(pid_col).and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            rows.push(fields);
        }
    }
    Ok((titles, rows))
}

/// The interval of a streaming `stats` (as dockerd's collector).
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_rows_are_filtered_by_pid_and_keep_the_command_whole() {
        let out = "UID PID PPID C STIME TTY TIME CMD\nroot 1 0 0 10:00 ? 00:00:01 /sbin/init splash\nroot 42 1 0 10:01 ? 00:00:00 sleep 300 now\n";
        let (t, rows) = parse_ps(out, &[42]).unwrap();
        assert_eq!(t.len(), 8);
        assert_eq!(
            rows,
            vec![vec![
                "root",
                "42",
                "1",
                "0",
                "10:01",
                "?",
                "00:00:00",
                "sleep 300 now"
            ]]
        );
        assert!(parse_ps("USER COMMAND\nroot x\n", &[1]).is_err());
    }
}
