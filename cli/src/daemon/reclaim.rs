//! Reclaiming what a removed container leaves behind once its removal has been answered:
//! its shim finishing, its cgroup, and its renamed directory (upper dir, work dir, records).
//!
//! One thread does it at the lowest CPU priority (nice 19), so under a burst of
//! `run --rm` the work of starting containers goes first and the unlinking waits for a
//! spare moment (on two busy cores it was a few percent of a round's CPU). A nice-19 thread
//! still gets a share under load, so nothing waits forever. Jobs are tracked by the daemon's
//! [`TaskTracker`]: shutdown waits for them. A crash leaves renamed directories, which the
//! next start deletes (`skiff_runtime::purge_trash`).

use std::sync::mpsc;

use skiff_runtime::Removal;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

/// Hands removals to the reclaiming thread.
pub struct Reclaimer {
    jobs: Option<mpsc::Sender<(Removal, TaskTrackerToken)>>,
    tracker: TaskTracker,
}

impl Reclaimer {
    /// Starts the reclaiming thread. Should the thread not start, removals are finished on
    /// the blocking pool instead (the earlier behaviour).
    pub fn start(tracker: TaskTracker) -> Reclaimer {
        let (tx, rx) = mpsc::channel::<(Removal, TaskTrackerToken)>();
        let spawned = std::thread::Builder::new()
            .name("skiff-reclaim".into())
            .spawn(move || {
                // On Linux a nice value belongs to the calling thread alone.
                // SAFETY: setpriority has no memory effects.
                if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0 {
                    tracing::debug!(
                        "lowering the reclaiming thread's priority: {}",
                        std::io::Error::last_os_error()
                    );
                }
                for (removal, _token) in rx {
                    finish(removal);
                }
            });
        let jobs = match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(
                    "starting the reclaiming thread: {e}; reclaiming on the blocking pool"
                );
                None
            }
        };
        Reclaimer { jobs, tracker }
    }

    /// Queues `removal`'s remaining work.
    pub fn submit(&self, removal: Removal) {
        let job = (removal, self.tracker.token());
        let Some(jobs) = &self.jobs else {
            return self.on_pool(job.0);
        };
        if let Err(mpsc::SendError((removal, _token))) = jobs.send(job) {
            self.on_pool(removal);
        }
    }

    fn on_pool(&self, removal: Removal) {
        self.tracker.spawn_blocking(move || finish(removal));
    }
}

fn finish(removal: Removal) {
    if let Err(e) = removal.finish() {
        tracing::warn!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn removal_is_finished_before_the_tracker_is_done() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("c1");
        std::fs::create_dir_all(dir.join("upper/etc")).unwrap();
        std::fs::write(dir.join("upper/etc/file"), b"x").unwrap();
        let removal = skiff_runtime::remove_detached(&dir)
            .unwrap()
            .expect("the directory existed");
        // Renamed away at once; its files are still there for the reclaimer.
        assert!(!dir.exists());
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1);
        let tracker = TaskTracker::new();
        let reclaimer = Reclaimer::start(tracker.clone());
        reclaimer.submit(removal);
        tracker.close();
        tokio::time::timeout(std::time::Duration::from_secs(10), tracker.wait())
            .await
            .expect("the reclaimer finished within 10 s");
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }
}
