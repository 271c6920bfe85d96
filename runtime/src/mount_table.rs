//! What the runtime reads from the host's mount table (`/proc/self/mountinfo`): the cgroup
//! hierarchies, for cgroups-rs and for the container's own /sys/fs/cgroup. Each is parsed
//! at most once a [`MAX_AGE`] per process and reused meanwhile: a create used to parse the
//! table three times (shim, init, and the daemon's removal), a sizeable share of a
//! container's start with many mounts. The shim launcher refreshes the values before it
//! forks ([`warm`]), so a shim and its init start with them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cgroups_rs::hierarchies::{V1, V2};

use crate::init::cgroupfs::{self, Entry};

/// How long a parsed value is trusted: cgroup hierarchies are mounted at boot, and a
/// change is seen within this time.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(1);

/// A value and when it was computed; shared by the threads of one process.
struct Recent<T>(Mutex<Option<(Instant, T)>>);

impl<T: Clone> Recent<T> {
    const fn new() -> Recent<T> {
        Recent(Mutex::new(None))
    }

    fn get(&self, make: impl FnOnce() -> T) -> T {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, v)) = &*slot {
            if at.elapsed() < MAX_AGE {
                return v.clone();
            }
        }
        let v = make();
        *slot = Some((Instant::now(), v.clone()));
        v
    }
}

#[derive(Clone)]
enum Hierarchy {
    V1(V1),
    V2(V2),
}

static HIERARCHY: Recent<Hierarchy> = Recent::new();
static LAYOUT: Recent<Vec<Entry>> = Recent::new();

/// cgroups-rs's view of the host's cgroup hierarchies (its `hierarchies::auto`).
pub(crate) fn cgroup_hierarchy() -> Box<dyn cgroups_rs::Hierarchy> {
    let h = HIERARCHY.get(|| {
        if cgroups_rs::hierarchies::is_cgroup2_unified_mode() {
            Hierarchy::V2(V2::new())
        } else {
            Hierarchy::V1(V1::new())
        }
    });
    match h {
        Hierarchy::V1(h) => Box::new(h),
        Hierarchy::V2(h) => Box::new(h),
    }
}

/// The host's cgroup mounts under /sys/fs/cgroup, as the init recreates them.
pub(crate) fn cgroup_layout() -> Vec<Entry> {
    LAYOUT.get(cgroupfs::host_layout)
}

/// Parses what is older than [`MAX_AGE`], so processes forked next inherit fresh values.
pub(crate) fn warm() {
    drop(cgroup_hierarchy());
    drop(cgroup_layout());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_reused_until_it_is_too_old() {
        let r: Recent<u32> = Recent::new();
        let mut made = 0;
        assert_eq!(
            r.get(|| {
                made += 1;
                7
            }),
            7
        );
        assert_eq!(
            r.get(|| {
                made += 1;
                8
            }),
            7
        );
        assert_eq!(made, 1);
        // Aged past MAX_AGE: made again.
        r.0.lock().unwrap().as_mut().unwrap().0 = Instant::now() - MAX_AGE;
        assert_eq!(
            r.get(|| {
                made += 1;
                9
            }),
            9
        );
        assert_eq!(made, 2);
    }
}
