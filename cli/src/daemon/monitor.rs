//! The monitor owns container exits: it watches every started container, records exit codes
//! for late waiters, auto-removes `--rm` containers, and restarts containers by their restart
//! policy with Docker's back-off (100 ms, doubling, capped at 1 minute, back to 100 ms once
//! a run lasted 10 s). A waiting restart sleeps; nothing polls faster than every 2 s.
//! While a container with a healthcheck runs, its watcher also runs its probes
//! (`health.rs`), through the exec service, and keeps its `State.Health`.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use skiff_runtime::state::Status;
use tokio::sync::mpsc;

use super::containers::ContainerService;
use super::containers_run::StartedBy;
use super::exec::ExecService;
use super::health::{self, Health, Probe, ProbeResult};
use super::paths::Paths;
use super::record::ContainerRecord;
use super::status::Lifecycle;

/// How many auto-removed containers' exit codes are kept for late `wait`s.
const RECENT_EXITS: NonZeroUsize = NonZeroUsize::new(4096).expect("non-zero");

/// How long an exited auto-remove container that nobody waits on with `condition=removed`
/// stays before it is removed. Clients that do not wait for the removal (the Python SDK's
/// foreground `run(..., auto_remove=True)`) still inspect the container right after asking
/// for its logs; dockerd's slower removal leaves them that window, and so does skiff.
const AUTO_REMOVE_GRACE: Duration = Duration::from_millis(500);

/// How long a `stop` waits for the monitor's `die` of its container before its own `stop`
/// event (the monitor is at it as soon as the exit is recorded).
const DIE_WAIT: Duration = Duration::from_secs(2);

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long resets the back-off.
const RESET_AFTER: Duration = Duration::from_secs(10);

/// Exit bookkeeping shared by the containers service and the watcher tasks.
pub struct Monitor {
    paths: Paths,
    tx: mpsc::UnboundedSender<String>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// Containers a watcher task is on.
    watched: Mutex<HashSet<String>>,
    /// Containers waiting out a restart back-off (inspect's `Restarting`).
    restarting: Mutex<HashSet<String>>,
    /// Containers a user is restarting (`docker restart`): their exit meanwhile does not
    /// auto-remove them, as in dockerd.
    user_restarts: Mutex<HashSet<String>>,
    /// Exit codes of the last [`RECENT_EXITS`] auto-removed containers, for waiters that
    /// come late.
    last_exit: Mutex<lru::LruCache<String, i32>>,
    /// Woken whenever a container is removed, or its auto-removal failed.
    removed: tokio::sync::Notify,
    /// Containers whose auto-removal failed: their `removed` waiters stop waiting.
    removal_failed: Mutex<HashSet<String>>,
    /// How many `wait?condition=removed` requests each container has in flight.
    removal_waiters: Mutex<HashMap<String, usize>>,
    /// The daemon's event log (`/events`), fed by every service through the monitor.
    pub events: Arc<super::events::EventLog>,
    /// Health of containers with a healthcheck (kept after they stop, as dockerd shows it).
    health: Mutex<HashMap<String, Health>>,
    /// The probe task of each running container with a healthcheck.
    probes: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// The exec service probes run through (set once the daemon has built it).
    execs: OnceLock<Arc<ExecService>>,
    /// Held while a signal is sent and its `kill` event emitted, and while a `die` is
    /// emitted: the `die` a signal causes comes after its `kill`, as in dockerd.
    exit_order: Mutex<()>,
    /// Per container, the start time of the run whose `die` was emitted last: a `stop`
    /// emits its `stop` after that `die` (dockerd's order).
    died: Mutex<HashMap<String, Option<DateTime<Utc>>>>,
    /// Woken when `died` changes, or a container is removed.
    died_changed: tokio::sync::Notify,
}

impl Monitor {
    /// Marks (or unmarks) `id` as being restarted by a user: an exit of it meanwhile does
    /// not auto-remove it (dockerd clears `AutoRemove` for the restart).
    pub fn set_user_restart(&self, id: &str, on: bool) {
        let mut set = self.user_restarts.lock().expect("monitor lock");
        if on {
            set.insert(id.to_string());
        } else {
            set.remove(id);
        }
    }

    fn user_restarting(&self, id: &str) -> bool {
        self.user_restarts
            .lock()
            .expect("monitor lock")
            .contains(id)
    }

    pub fn new(paths: Paths) -> Monitor {
        let (tx, rx) = mpsc::unbounded_channel();
        Monitor {
            paths,
            tx,
            rx: Mutex::new(Some(rx)),
            watched: Mutex::new(HashSet::new()),
            restarting: Mutex::new(HashSet::new()),
            user_restarts: Mutex::new(HashSet::new()),
            last_exit: Mutex::new(lru::LruCache::new(RECENT_EXITS)),
            removed: tokio::sync::Notify::new(),
            removal_failed: Mutex::new(HashSet::new()),
            removal_waiters: Mutex::new(HashMap::new()),
            events: Default::default(),
            health: Mutex::new(HashMap::new()),
            probes: Mutex::new(HashMap::new()),
            execs: OnceLock::new(),
            exit_order: Mutex::new(()),
            died: Mutex::new(HashMap::new()),
            died_changed: tokio::sync::Notify::new(),
        }
    }

    /// Gives the monitor the exec service its health probes run through.
    pub fn set_execs(&self, execs: Arc<ExecService>) {
        let _ = self.execs.set(execs);
    }

    /// `id`'s health, if it has a healthcheck and has been started since the daemon came up.
    pub fn health(&self, id: &str) -> Option<Health> {
        self.health.lock().expect("monitor lock").get(id).cloned()
    }

    /// Starts the probes of the running container `r`, from `starting` (replacing any
    /// earlier probe task); nothing when it has no healthcheck.
    fn start_probes(self: &Arc<Self>, r: &ContainerRecord) {
        self.stop_probes(&r.id);
        let (Some(probe), Some(execs)) = (
            health::plan(r.spec.healthcheck.as_ref()),
            self.execs.get().cloned(),
        ) else {
            return;
        };
        self.health
            .lock()
            .expect("monitor lock")
            .insert(r.id.clone(), Health::starting());
        let task = tokio::spawn(run_probes(self.clone(), execs, r.clone(), probe));
        self.probes
            .lock()
            .expect("monitor lock")
            .insert(r.id.clone(), task.abort_handle());
    }

    /// Ends `id`'s probes (it stopped); its last health stays for `inspect`.
    fn stop_probes(&self, id: &str) {
        if let Some(task) = self.probes.lock().expect("monitor lock").remove(id) {
            task.abort();
        }
    }

    /// Ends `id`'s probes and drops its health (it was removed).
    pub fn forget_health(&self, id: &str) {
        self.stop_probes(id);
        self.health.lock().expect("monitor lock").remove(id);
    }

    /// Starts the watcher loop (once), giving it the service it restarts and removes with.
    pub fn run(containers: Arc<ContainerService>) {
        let monitor = containers.monitor.clone();
        let Some(mut rx) = monitor.rx.lock().expect("monitor lock").take() else {
            return;
        };
        tokio::spawn(async move {
            while let Some(id) = rx.recv().await {
                if monitor
                    .watched
                    .lock()
                    .expect("monitor lock")
                    .insert(id.clone())
                {
                    tokio::spawn(watch_one(containers.clone(), id));
                }
            }
        });
    }

    /// Watches a container that was just started (or found running at daemon start).
    pub fn watch(&self, id: &str) {
        let _ = self.tx.send(id.to_string());
    }

    /// A stop or kill during the back-off: the container shows `exited` at once (the
    /// pending restart sees "stopped by user" when it wakes and gives up).
    pub fn cancel_restart(&self, id: &str) {
        self.restarting.lock().expect("monitor lock").remove(id);
    }

    pub fn is_restarting(&self, id: &str) -> bool {
        self.restarting.lock().expect("monitor lock").contains(id)
    }

    pub fn note_removed(&self, id: &str) {
        self.forget_health(id);
        self.removal_failed.lock().expect("monitor lock").remove(id);
        self.died.lock().expect("monitor lock").remove(id);
        self.removed.notify_waiters();
        self.died_changed.notify_waiters();
    }

    /// Sends `sig` to `r`'s process and emits dockerd's `kill` event (`signal`: its number),
    /// ordered before the `die` it may cause.
    pub fn kill(
        &self,
        r: &ContainerRecord,
        sig: skiff_runtime::Signal,
    ) -> skiff_runtime::Result<()> {
        let _order = self.exit_order.lock().expect("monitor lock");
        skiff_runtime::kill(&self.paths.container_dir(&r.id), sig)?;
        self.events
            .container("kill", r, &[("signal", (sig as i32).to_string())]);
        Ok(())
    }

    /// Emits the `die` of `r`'s run that started at `started_at`.
    /// dockerd's attributes: `exitCode`, and `execDuration` (whole seconds the run took).
    fn emit_die(
        &self,
        r: &ContainerRecord,
        code: i32,
        started_at: Option<DateTime<Utc>>,
        finished_at: Option<DateTime<Utc>>,
    ) {
        let ran = match (started_at, finished_at) {
            (Some(s), Some(f)) => (f - s).num_seconds().max(0),
            _ => 0,
        };
        {
            let _order = self.exit_order.lock().expect("monitor lock");
            self.events.container(
                "die",
                r,
                &[
                    ("exitCode", code.to_string()),
                    ("execDuration", ran.to_string()),
                ],
            );
        }
        self.died
            .lock()
            .expect("monitor lock")
            .insert(r.id.clone(), started_at);
        self.died_changed.notify_waiters();
    }

    /// Waits until the `die` of `id`'s run that started at `started_at` was emitted, or
    /// `gone()` (removed), for at most [`DIE_WAIT`].
    pub async fn died(&self, id: &str, started_at: Option<DateTime<Utc>>, gone: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + DIE_WAIT;
        loop {
            // Registered before the check, so a change in between is not missed.
            let changed = self.died_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let seen = self.died.lock().expect("monitor lock").get(id) == Some(&started_at);
            if seen || gone() {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                tracing::debug!(id = %&id[..12.min(id.len())], "no die event seen for the stopped run");
                return;
            }
        }
    }

    /// Keeps the exit code of a container about to be auto-removed, for late waiters.
    pub fn note_exit(&self, id: &str, code: i32) {
        self.last_exit
            .lock()
            .expect("monitor lock")
            .put(id.to_string(), code);
    }

    /// The exit code of `id` (a full container ID) if it was auto-removed recently.
    pub fn recent_exit(&self, id: &str) -> Option<i32> {
        self.last_exit
            .lock()
            .expect("monitor lock")
            .peek(id)
            .copied()
    }

    /// Ends the `removed` waits of a container whose auto-removal failed.
    pub fn note_removal_failed(&self, id: &str) {
        self.removal_failed
            .lock()
            .expect("monitor lock")
            .insert(id.to_string());
        self.removed.notify_waiters();
    }

    /// Waits until the container has exited (blocking on its shim's socket, which answers
    /// at the exit); returns its exit code.
    pub async fn wait_exit(&self, id: &str) -> i32 {
        loop {
            match skiff_runtime::state::state(&self.paths.container_dir(id)) {
                Ok(st) if st.status == Status::Exited => {
                    return st.exit_code.unwrap_or_else(|| {
                        tracing::warn!(id = %&id[..12.min(id.len())], error = ?st.error, "exit status lost");
                        -1
                    })
                }
                Ok(_) => {
                    // Bounded, so the thread of a waiter whose client went away is freed soon.
                    let dir = self.paths.container_dir(id);
                    let waited = tokio::task::spawn_blocking(move || {
                        skiff_runtime::wait_timeout(&dir, Duration::from_secs(2))
                    })
                    .await;
                    if !matches!(waited, Ok(Ok(_))) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                // Gone: an auto-removed container's code is kept for late waiters.
                Err(e) => {
                    // Usual for the monitor's own watch of a container just removed.
                    return self.recent_exit(id).unwrap_or_else(|| {
                        tracing::debug!(id = %&id[..12.min(id.len())], "exit status unknown: {e}");
                        -1
                    });
                }
            }
        }
    }

    /// The exit code of `id`'s first run to die after the one that started at `previous`
    /// (removed meanwhile: its kept code, else -1).
    async fn next_die(
        &self,
        records: &super::records::Records,
        id: &str,
        previous: Option<DateTime<Utc>>,
    ) -> i32 {
        loop {
            // Registered before the check, so a die in between is not missed.
            let changed = self.died_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let died = self.died.lock().expect("monitor lock").get(id).copied();
            if matches!(died, Some(started) if started != previous) {
                let st = skiff_runtime::state::state(&self.paths.container_dir(id));
                return match st.ok().and_then(|s| s.exit_code) {
                    Some(code) => code,
                    None => self.recent_exit(id).unwrap_or(-1),
                };
            }
            if !records.exists(id).unwrap_or(false) {
                return self.recent_exit(id).unwrap_or(-1);
            }
            changed.await;
        }
    }

    /// Resolves to the exit code once `condition` holds (`not-running`, `next-exit`,
    /// `removed`). A created container is waited for through its run.
    pub async fn waiter(
        self: Arc<Self>,
        records: Arc<super::records::Records>,
        id: String,
        condition: String,
    ) -> i32 {
        let _counted = (condition == "removed").then(|| RemovalWaiter::new(&self, &id));
        // `next-exit` of a container that has exited is its next run's exit, not the last.
        if condition == "next-exit" {
            if let Ok(st) = skiff_runtime::state::state(&self.paths.container_dir(&id)) {
                if st.status == Status::Exited {
                    return self.next_die(&records, &id, st.started_at).await;
                }
            }
        }
        let code = self.wait_exit(&id).await;
        if condition == "removed" {
            loop {
                // Registered before the check, so a removal in between is not missed.
                let removed = self.removed.notified();
                tokio::pin!(removed);
                removed.as_mut().enable();
                let failed = || {
                    let failed = self.removal_failed.lock().expect("monitor lock");
                    failed.contains(&id)
                };
                if !records.exists(&id).unwrap_or(false) || failed() {
                    break;
                }
                removed.await;
            }
        }
        code
    }
}

/// Counts one `wait?condition=removed` of a container while alive (also when its client
/// goes away and the wait is dropped).
struct RemovalWaiter<'a> {
    monitor: &'a Monitor,
    id: String,
}

impl<'a> RemovalWaiter<'a> {
    fn new(monitor: &'a Monitor, id: &str) -> Self {
        *monitor
            .removal_waiters
            .lock()
            .expect("monitor lock")
            .entry(id.to_string())
            .or_default() += 1;
        RemovalWaiter {
            monitor,
            id: id.to_string(),
        }
    }
}

impl Drop for RemovalWaiter<'_> {
    fn drop(&mut self) {
        let mut waiters = self.monitor.removal_waiters.lock().expect("monitor lock");
        if let Some(n) = waiters.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                waiters.remove(&self.id);
            }
        }
    }
}

impl Monitor {
    /// Whether a client waits for `id`'s removal (`docker run --rm` does, from before the
    /// start): then an auto-removal need not leave it a grace period.
    fn has_removal_waiter(&self, id: &str) -> bool {
        self.removal_waiters
            .lock()
            .expect("monitor lock")
            .contains_key(id)
    }
}

/// Docker's back-off after a run of `ran` that ended a restart waiting `delay`.
pub fn next_delay(previous: Option<Duration>, ran: Duration) -> Duration {
    match previous {
        _ if ran >= RESET_AFTER => FIRST_DELAY,
        None => FIRST_DELAY,
        Some(d) => (d * 2).min(MAX_DELAY),
    }
}

/// One container's watcher: exit -> auto-remove, or restart after the back-off, or done.
async fn watch_one(c: Arc<ContainerService>, id: String) {
    let m = c.monitor.clone();
    let mut delay: Option<Duration> = None;
    loop {
        match (c.records.get(&id), c.state(&id)) {
            (Ok(Some(r)), Ok(st)) if st.status == Status::Running => m.start_probes(&r),
            _ => {}
        }
        let code = m.wait_exit(&id).await;
        m.stop_probes(&id);
        let Ok(Some(r)) = c.records.get(&id) else {
            m.forget_health(&id);
            break; // removed meanwhile
        };
        let Ok(st) = c.state(&id) else { break };
        if st.status != Status::Exited {
            continue; // started again by a user meanwhile
        }
        m.emit_die(&r, code, st.started_at, st.finished_at);
        m.events.network("disconnect", &r);
        m.events.volumes("unmount", &r);
        // As dockerd: a stopped container holds no host port (start binds them again).
        if let Err(e) = c.network.unpublish(&id).await {
            tracing::warn!(id = %&id[..12], "freeing published ports: {e}");
        }
        if r.spec.host.auto_remove && !m.user_restarting(&id) {
            m.note_exit(&id, code);
            if !m.has_removal_waiter(&id) {
                tokio::time::sleep(AUTO_REMOVE_GRACE).await;
                match c.state(&id) {
                    Ok(now) if now.status == Status::Exited => {}
                    Ok(_) => continue, // started again meanwhile
                    Err(_) => break,   // removed meanwhile
                }
            }
            match c.remove(&r, true, true).await {
                // `rm -f` got there first.
                Ok(())
                | Err(super::error::DaemonError::RemovalInProgress { .. })
                | Err(super::error::DaemonError::NoSuchContainer(_)) => {}
                Err(e) => {
                    tracing::warn!(id = %&id[..12], "auto-remove: {e}");
                    m.note_removal_failed(&id);
                }
            }
            break;
        }
        if !Lifecycle::new(&r, &st).can_restart(code) {
            // Decided under the watch lock, so a start racing with this exit is watched anew.
            let mut watched = m.watched.lock().expect("monitor lock");
            match c.state(&id) {
                Ok(now) if now.status != Status::Exited => continue,
                _ => {
                    watched.remove(&id);
                    return;
                }
            }
        }
        let ran = match (st.started_at, st.finished_at) {
            (Some(s), Some(f)) => (f - s).to_std().unwrap_or_default(),
            _ => Duration::ZERO,
        };
        let wait = next_delay(delay, ran);
        delay = Some(wait);
        m.restarting
            .lock()
            .expect("monitor lock")
            .insert(id.clone());
        tracing::info!(id = %&id[..12], exit_code = code, delay_ms = wait.as_millis() as u64, "restarting container by its restart policy");
        tokio::time::sleep(wait).await;
        m.restarting.lock().expect("monitor lock").remove(&id);
        // A stop, kill, start or rm during the wait wins over the policy.
        let Ok(Some(mut r)) = c.records.get(&id) else {
            break;
        };
        match c.state(&id) {
            Ok(now) if now.status == Status::Exited && !r.stopped_by_user => {}
            Ok(now) if now.status != Status::Exited => continue,
            _ => {
                m.watched.lock().expect("monitor lock").remove(&id);
                return;
            }
        }
        r.restart_count += 1;
        if let Err(e) = c.records.update(&r) {
            tracing::warn!(id = %&id[..12], "recording the restart: {e}");
        }
        if let Err(e) = c.start(&r, StartedBy::RestartPolicy).await {
            // Counted as a failed run: the next attempt waits longer.
            tracing::warn!(id = %&id[..12], "restart failed: {e}");
        }
    }
    m.watched.lock().expect("monitor lock").remove(&id);
}

/// Probes `r` every interval until aborted (its watcher does at the exit), recording each
/// result and emitting `health_status: <status>` when the status changes.
async fn run_probes(m: Arc<Monitor>, execs: Arc<ExecService>, r: ContainerRecord, p: Probe) {
    let started = tokio::time::Instant::now();
    let starting = |m: &Monitor| m.health(&r.id).is_some_and(|h| h.status == "starting");
    loop {
        let wait = if started.elapsed() < p.start_period && starting(&m) {
            p.start_interval
        } else {
            p.interval
        };
        tokio::time::sleep(wait).await;
        // A frozen container cannot run the probe: none is counted while it is paused.
        if skiff_runtime::control::is_frozen(&m.paths.container_dir(&r.id)) {
            continue;
        }
        let start = chrono::Utc::now();
        let (exit_code, output) = match execs.probe(&r.id, p.argv.clone(), p.timeout).await {
            Ok((Some(code), out)) => (code as i64, out),
            Ok((None, _)) => (
                -1,
                format!("Health check exceeded timeout ({:?})", p.timeout),
            ),
            // A probe that races the container's exit is not a result.
            Err(_) if !matches!(m.container_status(&r.id), Some(Status::Running)) => return,
            Err(e) => (-1, e.to_string()),
        };
        let result = ProbeResult {
            start,
            end: chrono::Utc::now(),
            exit_code,
            output,
        };
        let in_start_period = started.elapsed() < p.start_period;
        let changed = {
            let mut all = m.health.lock().expect("monitor lock");
            let Some(h) = all.get_mut(&r.id) else { return };
            h.record(result, in_start_period, p.retries)
        };
        if let Some(status) = changed {
            tracing::info!(id = %&r.id[..12], status, "health status changed");
            m.events
                .container(&format!("health_status: {status}"), &r, &[]);
        }
    }
}

impl Monitor {
    fn container_status(&self, id: &str) -> Option<Status> {
        skiff_runtime::state::state(&self.paths.container_dir(id))
            .ok()
            .map(|s| s.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let short = Duration::from_millis(5);
        let mut d = next_delay(None, short);
        assert_eq!(d, Duration::from_millis(100));
        d = next_delay(Some(d), short);
        assert_eq!(d, Duration::from_millis(200));
        let mut x = d;
        for _ in 0..20 {
            x = next_delay(Some(x), short);
        }
        assert_eq!(x, Duration::from_secs(60));
        assert_eq!(
            next_delay(Some(x), Duration::from_secs(11)),
            Duration::from_millis(100)
        );
    }
}
