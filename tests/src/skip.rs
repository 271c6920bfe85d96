//! Tests that cannot run say so loudly, with the reason, instead of passing silently.
//!
//! A skipped test prints `SKIPPED: <name>: <reason>` to stderr and returns. With
//! `SKIFF_TEST_STRICT=1` (set by CI, which has root, FUSE and the registry) a skip fails
//! the test instead, so CI can never go green on tests that did not run.

/// Why root-only tests cannot run here, if they cannot.
pub fn root_unavailable() -> Option<String> {
    if nix::unistd::geteuid().is_root() {
        None
    } else {
        Some("needs root".to_string())
    }
}

/// Reports a skip (or, under `SKIFF_TEST_STRICT=1`, fails).
pub fn skip(test: &str, reason: &str) {
    if std::env::var("SKIFF_TEST_STRICT").as_deref() == Ok("1") {
        panic!("{test} cannot run under SKIFF_TEST_STRICT=1: {reason}");
    }
    eprintln!("SKIPPED: {test}: {reason}");
}

/// Returns early from a test, reporting the skip, when any of the reasons applies.
#[macro_export]
macro_rules! require {
    ($test:expr, $($cond:expr),+ $(,)?) => {
        $(
            if let Some(reason) = $cond {
                $crate::skip::skip($test, &reason);
                return;
            }
        )+
    };
}
