//! Locating the real `skiff` binary that cargo built next to the test executables.

use std::path::PathBuf;

/// `SKIFF_BIN`, or `target/<profile>/skiff` found from the running test executable.
pub fn skiff_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SKIFF_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("skiff");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p skiff` before the tests (scripts/test.sh does)",
        bin.display()
    );
    bin
}
