//! The test registry itself works: it starts, answers the distribution API, and stops.

use skiff_tests::{registry::registry_unavailable, require, Registry};

#[test]
fn registry_starts_answers_and_stops() {
    require!("registry_starts_answers_and_stops", registry_unavailable());
    let reg = Registry::start().expect("start registry");
    assert_eq!(reg.get_status("/v2/").unwrap(), 200);
    assert_eq!(reg.get_status("/v2/nope/manifests/latest").unwrap(), 404);
    let pid = reg.pid();
    drop(reg);
    // The process we started is gone (reaped), so signal 0 fails.
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err());
}
