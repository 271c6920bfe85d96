//! The one authority on what a container's state allows. Every service asks here before
//! acting, so `start`, `rm`, `exec`, `kill` and the restart monitor agree.

use skiff_runtime::state::{ContainerState, Status};

use super::error::DaemonError;
use super::record::{ContainerRecord, RestartPolicy};

/// How a `start` proceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPlan {
    /// Already running: nothing to do (HTTP 304).
    AlreadyRunning,
    /// Created and never run: start it.
    Fresh,
    /// Exited: set it up again (same upper dir, network, log), then start.
    Again,
}

/// A container's record and live state, judged together.
pub struct Lifecycle<'a> {
    pub record: &'a ContainerRecord,
    pub state: &'a ContainerState,
}

impl<'a> Lifecycle<'a> {
    pub fn new(record: &'a ContainerRecord, state: &'a ContainerState) -> Lifecycle<'a> {
        Lifecycle { record, state }
    }

    pub fn is_running(&self) -> bool {
        self.state.status == Status::Running
    }

    /// Whether the last start failed before the container's process ran: the runtime
    /// records that as an exit (with the exit code and its error) of a run never started.
    pub fn start_failed(&self) -> bool {
        self.state.status == Status::Exited && self.state.started_at.is_none()
    }

    /// The state clients see (`ps`, `inspect`, the list filters). A container whose start
    /// failed is `created`, as dockerd shows a container that never started, keeping the
    /// exit code and, as its error, what the start answered; it has no finish time. The
    /// decisions above go by the runtime's state (such a container is set up again to
    /// start).
    pub fn shown(&self) -> ContainerState {
        let mut st = self.state.clone();
        if self.start_failed() {
            st.status = Status::Created;
            st.finished_at = None;
            st.error = Some(super::containers_run::start_failure(
                &self.record.path,
                st.exit_code.unwrap_or(0),
                st.error.as_deref().unwrap_or_default(),
            ));
        }
        // A start refused before the runtime ran it (a host port taken): dockerd's
        // `State.Error`, and exit code 128 unless the last run left one.
        if let (Some(e), false) = (&self.record.start_error, self.is_running()) {
            st.error = Some(e.clone());
            if st.exit_code.unwrap_or(0) == 0 {
                st.exit_code = Some(128);
            }
        }
        st
    }

    pub fn can_start(&self) -> StartPlan {
        match self.state.status {
            Status::Running => StartPlan::AlreadyRunning,
            Status::Created => StartPlan::Fresh,
            Status::Exited => StartPlan::Again,
        }
    }

    /// `stop` acts only on a running container (else 304).
    pub fn can_stop(&self) -> bool {
        self.is_running()
    }

    pub fn can_kill(&self) -> Result<(), DaemonError> {
        if self.is_running() {
            Ok(())
        } else {
            Err(DaemonError::KillNotRunning {
                name: self.record.name.clone(),
                id: self.record.id.clone(),
            })
        }
    }

    /// A running container is removed only with `force`.
    pub fn can_remove(&self, force: bool) -> Result<(), DaemonError> {
        if self.is_running() && !force {
            return Err(DaemonError::RemoveRunning {
                id: self.record.id.clone(),
            });
        }
        Ok(())
    }

    /// `pause` needs a running container not yet paused.
    pub fn can_pause(&self, paused: bool) -> Result<(), DaemonError> {
        let id = self.record.id.clone();
        match (self.is_running(), paused) {
            (false, _) => Err(DaemonError::NotRunning { id }),
            (true, true) => Err(DaemonError::AlreadyPaused { id }),
            (true, false) => Ok(()),
        }
    }

    /// `unpause` needs a paused container.
    pub fn can_unpause(&self, paused: bool) -> Result<(), DaemonError> {
        if self.is_running() && paused {
            Ok(())
        } else {
            Err(DaemonError::NotPaused {
                id: self.record.id.clone(),
            })
        }
    }

    pub fn can_exec(&self) -> Result<(), DaemonError> {
        if self.is_running() {
            Ok(())
        } else {
            Err(DaemonError::NotRunning {
                id: self.record.id.clone(),
            })
        }
    }

    /// Attaching to an exited container (`start -a`) sets it up again first, so the next
    /// run's output reaches the client.
    pub fn attach_needs_setup(&self) -> bool {
        self.state.status == Status::Exited
    }

    /// Whether the restart policy restarts this container now that it has exited with
    /// `exit_code` (Docker's rules: `always`/`unless-stopped` unless stopped by a user;
    /// `on-failure` on a non-zero code, up to its retry count).
    pub fn can_restart(&self, exit_code: i32) -> bool {
        if self.record.stopped_by_user || self.record.spec.host.auto_remove {
            return false;
        }
        match self.record.spec.host.restart_policy {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max_retries } => {
                exit_code != 0
                    && (max_retries == 0 || self.record.restart_count < max_retries as i64)
            }
        }
    }

    /// Whether a starting daemon starts this (not running) container: `always` ones
    /// whatever stopped them, `unless-stopped` ones unless a user did.
    pub fn start_at_boot(&self) -> bool {
        if self.is_running() || self.state.status == Status::Created {
            return false;
        }
        match self.record.spec.host.restart_policy {
            RestartPolicy::Always => true,
            RestartPolicy::UnlessStopped => !self.record.stopped_by_user,
            // Docker restarts on-failure containers at boot only if they were running
            // when it stopped; a shim that died with the host reads as exited non-zero.
            RestartPolicy::OnFailure { .. } => {
                !self.record.stopped_by_user
                    && self.state.exit_code.unwrap_or(0) != 0
                    && self.can_restart(self.state.exit_code.unwrap_or(0))
            }
            RestartPolicy::No => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(policy: RestartPolicy) -> ContainerRecord {
        let mut r = ContainerRecord::for_test("abc", "n");
        r.spec.host.restart_policy = policy;
        r
    }

    fn state(status: Status, exit_code: Option<i32>) -> ContainerState {
        ContainerState {
            status,
            pid: None,
            exit_code,
            oom_killed: false,
            created_at: chrono::Utc::now(),
            started_at: None,
            finished_at: None,
            error: None,
        }
    }

    #[test]
    fn removal_needs_force_while_running() {
        let r = record(RestartPolicy::No);
        let run = state(Status::Running, None);
        assert!(matches!(
            Lifecycle::new(&r, &run).can_remove(false),
            Err(DaemonError::RemoveRunning { .. })
        ));
        assert!(Lifecycle::new(&r, &run).can_remove(true).is_ok());
        let done = state(Status::Exited, Some(0));
        assert!(Lifecycle::new(&r, &done).can_remove(false).is_ok());
        assert_eq!(Lifecycle::new(&r, &done).can_start(), StartPlan::Again);
        assert!(Lifecycle::new(&r, &done).can_exec().is_err());
    }

    #[test]
    fn a_failed_start_shows_created_with_its_error() {
        let mut r = record(RestartPolicy::No);
        r.path = "/no/such".into();
        let mut failed = state(Status::Exited, Some(127));
        failed.finished_at = Some(chrono::Utc::now());
        failed.error = Some("exec /no/such: No such file or directory (os error 2)".into());
        let l = Lifecycle::new(&r, &failed);
        assert!(l.start_failed());
        assert_eq!(l.can_start(), StartPlan::Again);
        let shown = l.shown();
        assert_eq!(shown.status, Status::Created);
        assert_eq!(shown.exit_code, Some(127));
        assert_eq!(shown.finished_at, None);
        assert_eq!(
            shown.error.as_deref(),
            Some("failed to create task for container: exec: \"/no/such\": stat /no/such: no such file or directory: exec /no/such: No such file or directory (os error 2)")
        );
        // A run that started and exited stays exited.
        let mut ran = state(Status::Exited, Some(127));
        ran.started_at = Some(chrono::Utc::now());
        assert!(!Lifecycle::new(&r, &ran).start_failed());
        assert_eq!(Lifecycle::new(&r, &ran).shown().status, Status::Exited);
    }

    #[test]
    fn a_start_refused_for_its_ports_shows_the_error_and_128() {
        let mut r = record(RestartPolicy::No);
        r.start_error = Some("Bind for 0.0.0.0:80 failed: port is already allocated".into());
        let created = state(Status::Created, None);
        let shown = Lifecycle::new(&r, &created).shown();
        assert_eq!(shown.status, Status::Created);
        assert_eq!(shown.exit_code, Some(128));
        assert_eq!(shown.error, r.start_error);
        // A run that left an exit code keeps it.
        let exited = state(Status::Exited, Some(3));
        assert_eq!(Lifecycle::new(&r, &exited).shown().exit_code, Some(3));
        // Running (a start succeeded since): no error shown.
        let running = state(Status::Running, None);
        assert_eq!(Lifecycle::new(&r, &running).shown().error, None);
    }

    #[test]
    fn restart_rules() {
        let done = state(Status::Exited, Some(1));
        assert!(!Lifecycle::new(&record(RestartPolicy::No), &done).can_restart(1));
        let mut always = record(RestartPolicy::Always);
        assert!(Lifecycle::new(&always, &done).can_restart(0));
        always.stopped_by_user = true;
        assert!(!Lifecycle::new(&always, &done).can_restart(0));
        assert!(Lifecycle::new(&always, &done).start_at_boot());
        let mut unless = record(RestartPolicy::UnlessStopped);
        assert!(Lifecycle::new(&unless, &done).start_at_boot());
        unless.stopped_by_user = true;
        assert!(!Lifecycle::new(&unless, &done).start_at_boot());
        let mut of = record(RestartPolicy::OnFailure { max_retries: 2 });
        assert!(!Lifecycle::new(&of, &done).can_restart(0));
        assert!(Lifecycle::new(&of, &done).can_restart(3));
        of.restart_count = 2;
        assert!(!Lifecycle::new(&of, &done).can_restart(3));
    }
}
