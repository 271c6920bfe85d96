//! The container's status machine, persisted by the shim and read by anyone (also after a
//! daemon restart). Liveness of recorded pids is checked against /proc start times, so a
//! recycled pid is never mistaken for the container.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::paths::ContainerPaths;
use crate::persist;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Set up and waiting for `start`.
    Created,
    Running,
    Exited,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        })
    }
}

/// What the daemon needs to know about a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerState {
    pub status: Status,
    /// Host pid of the container's init, while it exists.
    pub pid: Option<i32>,
    /// The process's exit code (128+N for signal N); `None` while running or when the exit
    /// was lost (shim killed).
    pub exit_code: Option<i32>,
    pub oom_killed: bool,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the container failed to start or why its exit is unknown.
    pub error: Option<String>,
}

/// A process identified by pid *and* start time, immune to pid reuse.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcIdentity {
    pub pid: i32,
    /// Field 22 of /proc/<pid>/stat (clock ticks since boot).
    pub start_time: u64,
}

impl ProcIdentity {
    /// The identity of a live process, or `None` if it is gone.
    pub fn of(pid: i32) -> Option<ProcIdentity> {
        let (start_time, state) = read_stat(pid)?;
        (state != 'Z' && state != 'X').then_some(ProcIdentity { pid, start_time })
    }

    /// Waits up to `timeout` for this process to end (pidfd poll, no sleeping loop);
    /// returns whether it has ended.
    pub fn wait_gone(&self, timeout: std::time::Duration) -> bool {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: pidfd_open returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, 0) };
        if fd < 0 {
            return !self.is_alive();
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        if !self.is_alive() {
            return true;
        }
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) };
        !self.is_alive()
    }

    /// Whether this very process still runs (not a zombie, not a recycled pid).
    pub fn is_alive(&self) -> bool {
        matches!(read_stat(self.pid), Some((st, state)) if st == self.start_time && state != 'Z' && state != 'X')
    }
}

fn read_stat(pid: i32) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// (start time, state) from the text of /proc/<pid>/stat; the command name may hold spaces
/// and parentheses, so fields are counted from the last ')'.
fn parse_stat(stat: &str) -> Option<(u64, char)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); start time is field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// The shim's full record in `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct StateFile {
    pub version: u32,
    pub state: ContainerState,
    pub shim: Option<ProcIdentity>,
    pub init: Option<ProcIdentity>,
}

impl StateFile {
    pub(crate) const VERSION: u32 = 1;

    pub(crate) fn new(shim: Option<ProcIdentity>) -> Self {
        StateFile {
            version: Self::VERSION,
            state: ContainerState {
                status: Status::Created,
                pid: None,
                exit_code: None,
                oom_killed: false,
                created_at: Utc::now(),
                started_at: None,
                finished_at: None,
                error: None,
            },
            shim,
            init: None,
        }
    }

    pub(crate) fn load(dir: &Path) -> Result<StateFile> {
        persist::read_json(&ContainerPaths::new(dir).state())
    }

    /// Saves the record; only the final (exited) one is flushed to disk.
    pub(crate) fn save(&self, dir: &Path) -> Result<()> {
        let durability = if self.state.status == Status::Exited {
            persist::Durability::Durable
        } else {
            persist::Durability::Volatile
        };
        self.save_with(dir, durability)
    }

    pub(crate) fn save_with(&self, dir: &Path, durability: persist::Durability) -> Result<()> {
        persist::write_json(&ContainerPaths::new(dir).state(), self, durability)
    }

    pub(crate) fn shim_alive(&self) -> bool {
        self.shim.is_some_and(|s| s.is_alive())
    }

    pub(crate) fn init_alive(&self) -> bool {
        self.init.is_some_and(|s| s.is_alive())
    }

    /// The state as it really is: a record saying "running" whose shim and init are both
    /// gone (shim killed, machine rebooted) is reported as exited with an unknown code.
    pub(crate) fn effective(&self) -> ContainerState {
        let mut st = self.state.clone();
        if st.status != Status::Exited && !self.shim_alive() && !self.init_alive() {
            st.status = Status::Exited;
            st.pid = None;
            st.error.get_or_insert_with(|| {
                "container supervisor (shim) is gone; exit status lost".into()
            });
        }
        st
    }
}

/// The container's current state (works after a daemon restart).
pub fn state(dir: &Path) -> Result<ContainerState> {
    let file = StateFile::load(dir)?;
    let st = file.effective();
    if file.state.status != Status::Exited && st.status == Status::Exited {
        // Judged gone: nobody alive for a record that says created or running. The shim
        // records its exit, then goes; on a busy machine a record read before that write
        // is judged after it (the whole start and exit of a short command fit in
        // between), and the exit code would be reported lost. Read the record again.
        return Ok(StateFile::load(dir)?.effective());
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_hostile_command_names() {
        let s = "42 (a) b) (c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(s), Some((987654, 'S')));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_identity_is_alive_and_a_wrong_start_time_is_not() {
        let me = ProcIdentity::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        let other = ProcIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.is_alive());
    }

    #[test]
    fn lost_supervision_reads_as_exited_with_unknown_code() {
        let mut f = StateFile::new(Some(ProcIdentity {
            pid: i32::MAX - 1,
            start_time: 1,
        }));
        f.state.status = Status::Running;
        let st = f.effective();
        assert_eq!(st.status, Status::Exited);
        assert_eq!(st.exit_code, None);
        assert!(st.error.is_some());
    }
}
